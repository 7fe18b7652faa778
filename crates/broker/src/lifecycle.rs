//! `BrokerLifecycle`: this broker's membership in the cluster, as Kafka's `BrokerLifecycleManager`. A task
//! registers the broker with the active controller (fenced, under a fresh random incarnation id per start, with
//! the advertised client listener and `broker.rack`), then
//! heartbeats every `broker.heartbeat.interval.ms` with the metadata offset it has applied; the controller
//! unfences it once that offset reaches its registration. [`BrokerLifecycle::wait_unfenced`] lets start-up wait
//! for that, and [`BrokerLifecycle::controlled_shutdown`] asks the controller to move this broker's leaderships
//! away before it stops (Kafka's controlled shutdown).
//!
//! The active controller is reached locally when it is this node (and always on the embedded single node), else
//! through the [`ControllerChannel`] with BrokerRegistration and BrokerHeartbeat requests. A heartbeat answered
//! BROKER_ID_NOT_REGISTERED or STALE_BROKER_EPOCH (the registration was replaced or lost) registers again;
//! any other failure is retried at the next beat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::broker_registration_request::Listener;
use kafka_protocol::messages::{BrokerHeartbeatRequest, BrokerId, BrokerRegistrationRequest};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::controller::{Heartbeat, HeartbeatOutcome, RegistrationOutcome};
use sluice_metadata::error::code;
use sluice_metadata::{BrokerRegistration, Uuid};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::controller_channel::ControllerChannel;

/// Beat this often while fenced (catching up) or shutting down, so that unfencing and the hand-over of
/// leaderships are noticed at once (Kafka uses 10 ms while catching up).
const FAST_BEAT: Duration = Duration::from_millis(50);
/// First pause before registering again; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// One registration or heartbeat gives up after this (retries to a new controller leader included), or after half
/// the broker session if that is shorter (Kafka's KAFKA-14392): a heartbeat stuck on a controller that went silent
/// must be retried on the new one before the session it is renewing runs out.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Kafka's security protocol id for PLAINTEXT, the only one served.
const SECURITY_PROTOCOL_PLAINTEXT: i16 = 0;

/// What the controller last said about this broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecycleStatus {
    /// The broker epoch of the current registration, or -1 while not registered.
    pub broker_epoch: i64,
    /// The controller saw this broker's metadata offset reach its registration.
    pub is_caught_up: bool,
    /// The broker is fenced: it leads nothing and clients do not see it.
    pub is_fenced: bool,
    /// The controller moved every leadership away: the broker may stop (controlled shutdown done).
    pub should_shut_down: bool,
}

impl Default for LifecycleStatus {
    fn default() -> Self {
        LifecycleStatus {
            broker_epoch: -1,
            is_caught_up: false,
            is_fenced: true,
            should_shut_down: false,
        }
    }
}

/// The broker's registration and heartbeats. Create with [`BrokerLifecycle::new`], run with
/// [`BrokerLifecycle::start`], end with [`BrokerLifecycle::stop`].
#[derive(Debug, Default)]
pub struct BrokerLifecycle {
    shared: Arc<Shared>,
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    status: watch::Sender<LifecycleStatus>,
    want_shut_down: AtomicBool,
    /// Wakes the task for an immediate heartbeat (controlled shutdown requested).
    wake: Notify,
    stop: watch::Sender<bool>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            status: watch::channel(LifecycleStatus::default()).0,
            want_shut_down: AtomicBool::new(false),
            wake: Notify::new(),
            stop: watch::channel(false).0,
        }
    }
}

impl BrokerLifecycle {
    /// A lifecycle that has not started: not registered, fenced.
    pub fn new() -> BrokerLifecycle {
        BrokerLifecycle::default()
    }

    /// Spawns the task that registers this broker and heartbeats. Host and port are the advertised client
    /// listener's. Calling it again while the task runs does nothing.
    pub fn start(&self, broker: &Arc<Broker>) {
        let mut task = self.task.lock();
        if task.is_some() {
            return;
        }
        let link = Link {
            controller: broker.controller.clone(),
            channel: broker.controller_channel.clone(),
            rpc_timeout: RPC_TIMEOUT.min(
                Duration::from_millis(broker.config.broker_session_timeout_ms / 2).max(FAST_BEAT),
            ),
            previous_broker_epoch: broker.previous_broker_epoch,
        };
        let config = broker.config.clone();
        let shared = self.shared.clone();
        *task = Some(tokio::spawn(run(link, config, shared)));
    }

    /// The controller's last word on this broker.
    pub fn status(&self) -> LifecycleStatus {
        *self.shared.status.borrow()
    }

    /// The current broker epoch, once registered.
    pub fn broker_epoch(&self) -> Option<i64> {
        let epoch = self.status().broker_epoch;
        (epoch >= 0).then_some(epoch)
    }

    /// Waits until the controller has unfenced this broker; false if `timeout` passed first.
    pub async fn wait_unfenced(&self, timeout: Duration) -> bool {
        let mut status = self.shared.status.subscribe();
        let unfenced = tokio::time::timeout(
            timeout,
            status.wait_for(|s| s.broker_epoch >= 0 && !s.is_fenced),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        unfenced
    }

    /// Waits until this broker is registered and the controller has seen its metadata reach the registration
    /// (Kafka's `initialCatchUpFuture`); false if the lifecycle stopped first.
    pub async fn wait_caught_up(&self) -> bool {
        let mut status = self.shared.status.subscribe();
        let mut stop = self.shared.stop.subscribe();
        tokio::select! {
            r = status.wait_for(|s| s.broker_epoch >= 0 && s.is_caught_up) => r.is_ok(),
            _ = stop.wait_for(|stopped| *stopped) => false,
        }
    }

    /// Kafka's controlled shutdown: heartbeats with `want_shut_down` until the controller has moved every
    /// leadership of this broker away and answers `should_shut_down`. True when it did (or the broker never
    /// registered, so there is nothing to hand over); false when `timeout` passed first.
    pub async fn controlled_shutdown(&self, timeout: Duration) -> bool {
        if self.task.lock().is_none() || self.status().broker_epoch < 0 {
            return true;
        }
        self.shared.want_shut_down.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        let mut status = self.shared.status.subscribe();
        let ok = tokio::time::timeout(timeout, status.wait_for(|s| s.should_shut_down))
            .await
            .is_ok_and(|r| r.is_ok());
        if ok {
            tracing::info!("controlled shutdown: the controller moved this broker's leaderships");
        } else {
            tracing::warn!(
                timeout_ms = timeout.as_millis(),
                "controlled shutdown did not complete in time"
            );
        }
        ok
    }

    /// Stops heartbeating and waits for the task. The controller fences the broker when its session expires
    /// (or at once after a controlled shutdown).
    pub async fn stop(&self) {
        self.shared.stop.send_replace(true);
        self.shared.wake.notify_one();
        let task = self.task.lock().take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!("broker lifecycle task panicked: {e}");
                }
            }
        }
    }
}

/// `broker.heartbeat.interval.ms`.
fn heartbeat_interval(config: &BrokerConfig) -> Duration {
    Duration::from_millis(config.broker_heartbeat_interval_ms.max(1))
}

/// How the broker reaches the active controller: locally when it is this node, else over the channel.
struct Link {
    controller: Controller,
    channel: ControllerChannel,
    /// `RPC_TIMEOUT`, or half of `broker.session.timeout.ms` if shorter.
    rpc_timeout: Duration,
    /// The broker epoch the previous incarnation wrote at its clean shutdown, -1 after a crash (KIP-966).
    previous_broker_epoch: i64,
}

impl Link {
    fn is_local(&self) -> bool {
        self.controller.is_active() || !self.channel.has_voters()
    }

    async fn register(
        &self,
        registration: &BrokerRegistration,
        listener_name: &str,
    ) -> Result<RegistrationOutcome, String> {
        if self.is_local() {
            // Bounded as a remote call is: a controller that lost its quorum would hold the operation for its
            // whole commit timeout.
            return tokio::time::timeout(
                self.rpc_timeout,
                self.controller
                    .register_broker(registration.clone(), self.previous_broker_epoch),
            )
            .await
            .map_err(|_| {
                "the local controller did not commit the registration in time".to_string()
            })?
            .map_err(|e| e.to_string());
        }
        let port = u16::try_from(registration.port).map_err(|e| e.to_string())?;
        let request = BrokerRegistrationRequest::default()
            .with_broker_id(BrokerId(registration.node_id))
            .with_cluster_id(StrBytes::from_string(
                self.controller.image().cluster_id.clone(),
            ))
            .with_incarnation_id(registration.incarnation_id)
            .with_listeners(vec![Listener::default()
                .with_name(StrBytes::from_string(listener_name.to_owned()))
                .with_host(StrBytes::from_string(registration.host.clone()))
                .with_port(port)
                .with_security_protocol(SECURITY_PROTOCOL_PLAINTEXT)])
            .with_rack(registration.rack.clone().map(StrBytes::from_string))
            .with_previous_broker_epoch(self.previous_broker_epoch);
        let response = self
            .channel
            .send(&request, self.rpc_timeout)
            .await
            .map_err(|e| e.to_string())?;
        Ok(RegistrationOutcome {
            error_code: response.error_code,
            broker_epoch: response.broker_epoch,
        })
    }

    async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<HeartbeatOutcome, String> {
        if self.is_local() {
            return tokio::time::timeout(
                self.rpc_timeout,
                self.controller.broker_heartbeat(heartbeat),
            )
            .await
            .map_err(|_| "the local controller did not commit the heartbeat in time".to_string())?
            .map_err(|e| e.to_string());
        }
        let request = BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(heartbeat.node_id))
            .with_broker_epoch(heartbeat.broker_epoch)
            .with_current_metadata_offset(heartbeat.current_metadata_offset)
            .with_want_fence(heartbeat.want_fence)
            .with_want_shut_down(heartbeat.want_shut_down);
        let response = self
            .channel
            .send(&request, self.rpc_timeout)
            .await
            .map_err(|e| e.to_string())?;
        Ok(HeartbeatOutcome {
            error_code: response.error_code,
            is_caught_up: response.is_caught_up,
            is_fenced: response.is_fenced,
            should_shut_down: response.should_shut_down,
        })
    }
}

/// Sleeps for `duration` unless woken or stopped first. False once stop was requested.
async fn pause(shared: &Shared, stop: &mut watch::Receiver<bool>, duration: Duration) -> bool {
    if *stop.borrow_and_update() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = stop.changed() => {}
        _ = shared.wake.notified() => {}
    }
    !*stop.borrow()
}

/// The task: register, then heartbeat until stopped; register again when the controller lost the registration.
async fn run(link: Link, config: Arc<BrokerConfig>, shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let interval = heartbeat_interval(&config);
    let registration = BrokerRegistration {
        node_id: config.node_id,
        host: config.advertised_host.clone(),
        port: i32::from(config.advertised_port),
        rack: config.broker_rack.clone(),
        incarnation_id: Uuid::new_v4(),
        ..Default::default()
    };
    // The endpoint registered is the advertised client listener, under the inter-broker listener's name.
    let listener_name = if config.inter_broker_listener.is_empty() {
        config
            .listeners
            .first()
            .map_or("PLAINTEXT", |l| l.name.as_str())
            .to_owned()
    } else {
        config.inter_broker_listener.clone()
    };
    'register: loop {
        let mut backoff = MIN_BACKOFF;
        let epoch = loop {
            if *stop.borrow() {
                return;
            }
            let attempt = tokio::select! {
                r = link.register(&registration, &listener_name) => r,
                _ = stop.changed() => return,
            };
            match attempt {
                Ok(outcome) if outcome.error_code == 0 => break outcome.broker_epoch,
                Ok(outcome) => tracing::warn!(
                    node_id = registration.node_id,
                    error_code = outcome.error_code,
                    "broker registration refused (DUPLICATE_BROKER_REGISTRATION: the controller still holds the \
                     session of this node.id's previous incarnation, restarted within broker.session.timeout.ms, or \
                     another live process uses this node.id); retrying until that session expires"
                ),
                Err(e) => tracing::debug!(error = %e, "broker registration failed; retrying"),
            }
            if !pause(&shared, &mut stop, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        };
        tracing::info!(
            node_id = registration.node_id,
            broker_epoch = epoch,
            incarnation = %registration.incarnation_id,
            "registered with the controller"
        );
        shared.status.send_replace(LifecycleStatus {
            broker_epoch: epoch,
            ..LifecycleStatus::default()
        });
        loop {
            if *stop.borrow() {
                return;
            }
            let want_shut_down = shared.want_shut_down.load(Ordering::Acquire);
            let heartbeat = Heartbeat {
                node_id: registration.node_id,
                broker_epoch: epoch,
                current_metadata_offset: link.controller.image().offset,
                want_fence: false,
                want_shut_down,
            };
            // Stopping never waits for an answer (a controller without a quorum may take its whole timeout).
            let attempt = tokio::select! {
                r = link.heartbeat(heartbeat) => r,
                _ = stop.changed() => return,
            };
            let next = match attempt {
                Ok(o) if o.error_code == 0 => {
                    let before = shared.status.send_replace(LifecycleStatus {
                        broker_epoch: epoch,
                        is_caught_up: o.is_caught_up,
                        is_fenced: o.is_fenced,
                        should_shut_down: o.should_shut_down,
                    });
                    if before.is_fenced && !o.is_fenced {
                        tracing::info!(broker_epoch = epoch, "the controller unfenced this broker");
                    }
                    next_beat(&o, want_shut_down, interval)
                }
                Ok(o)
                    if o.error_code == code::BROKER_ID_NOT_REGISTERED
                        || o.error_code == code::STALE_BROKER_EPOCH =>
                {
                    tracing::warn!(
                        broker_epoch = epoch,
                        error_code = o.error_code,
                        "the controller no longer knows this registration; registering again"
                    );
                    shared.status.send_replace(LifecycleStatus::default());
                    continue 'register;
                }
                Ok(o) => {
                    tracing::debug!(error_code = o.error_code, "heartbeat refused; retrying");
                    FAST_BEAT.max(MIN_BACKOFF)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat failed; retrying");
                    FAST_BEAT.max(MIN_BACKOFF)
                }
            };
            if !pause(&shared, &mut stop, next).await {
                return;
            }
        }
    }
}

/// When to beat next: soon while fenced (catching up) or handing leaderships over, else at the interval.
fn next_beat(outcome: &HeartbeatOutcome, want_shut_down: bool, interval: Duration) -> Duration {
    if outcome.should_shut_down {
        interval
    } else if outcome.is_fenced || want_shut_down {
        FAST_BEAT.min(interval)
    } else {
        interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(is_fenced: bool, should_shut_down: bool) -> HeartbeatOutcome {
        HeartbeatOutcome {
            error_code: 0,
            is_caught_up: !is_fenced,
            is_fenced,
            should_shut_down,
        }
    }

    #[test]
    fn beats_fast_only_while_catching_up_or_shutting_down() {
        let interval = Duration::from_millis(2000);
        assert_eq!(next_beat(&outcome(true, false), false, interval), FAST_BEAT);
        assert_eq!(next_beat(&outcome(false, false), false, interval), interval);
        assert_eq!(next_beat(&outcome(false, false), true, interval), FAST_BEAT);
        assert_eq!(next_beat(&outcome(true, true), true, interval), interval);
    }

    #[tokio::test]
    async fn an_unstarted_lifecycle_is_fenced_and_has_nothing_to_hand_over() {
        let lifecycle = BrokerLifecycle::new();
        assert_eq!(lifecycle.broker_epoch(), None);
        assert!(!lifecycle.wait_unfenced(Duration::from_millis(10)).await);
        assert!(
            lifecycle
                .controlled_shutdown(Duration::from_millis(10))
                .await
        );
        lifecycle.stop().await;
    }
}
