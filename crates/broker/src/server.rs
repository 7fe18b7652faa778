//! The running server: binds the listeners, opens the [`Broker`], accepts connections, runs the background tasks
//! (metadata reconciliation, retention, time-based flushes, the log cleaner threads) and shuts all of it down in
//! order.
//!
//! Shutdown order: stop accepting; let every connection finish the requests it has already read (bounded by
//! [`DRAIN_TIMEOUT`]); stop the background tasks; flush every log and write the clean-shutdown marker
//! (`LogManager::shutdown`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::apis::now_ms;
use crate::broker::{Broker, BrokerError};
use crate::config::BrokerConfig;

/// How long shutdown waits for connections to finish their in-flight requests before dropping them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long start-up waits for the controller to unfence this broker before it logs and carries on.
const UNFENCE_WAIT: Duration = Duration::from_secs(30);
/// How long a controlled shutdown waits for the controller to move this broker's leaderships.
const CONTROLLED_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// The dynamic broker config bounding log-directory moves (Kafka's `alterLogDirs` replication quota).
const LOG_DIR_MOVE_RATE: &str = "replica.alter.log.dirs.io.max.bytes.per.second";
/// How often logs are checked for a due time-based flush (`flush.ms`).
const FLUSH_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Why the server could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The error.
        source: std::io::Error,
    },
    /// The broker failed to open or close.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A running broker server.
pub struct Server {
    broker: Arc<Broker>,
    local_addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    acceptors: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds every listener, opens the broker and starts serving. A listener with port 0 binds a free port, which
    /// is also advertised unless `advertised.listeners` is set.
    pub async fn start(mut config: BrokerConfig) -> Result<Server, ServerError> {
        tune_allocator();
        let mut listeners = Vec::new();
        let mut local_addrs = Vec::new();
        let controller_names: Vec<String> = config
            .controller_listeners
            .iter()
            .map(|l| l.name.clone())
            .collect();
        for listener in config.listeners.iter().chain(&config.controller_listeners) {
            let address = listener.bind_address();
            let bound = TcpListener::bind(&address)
                .await
                .map_err(|source| ServerError::Bind {
                    address: address.clone(),
                    source,
                })?;
            let local = bound
                .local_addr()
                .map_err(|source| ServerError::Bind { address, source })?;
            local_addrs.push(local);
            listeners.push((listener.name.clone(), bound));
        }
        if !config.is_set("advertised.listeners") {
            if let Some(first) = local_addrs.first() {
                config.advertised_port = first.port();
            }
        }
        let (shutdown, _) = watch::channel(false);
        let transport: Option<Arc<dyn crate::controller::Transport>> =
            if config.quorum_voters.is_empty() || !config.roles.controller {
                None
            } else {
                let voters: Vec<(i32, String, u16)> = config
                    .quorum_voters
                    .iter()
                    .map(|v| (v.id, v.host.clone(), v.port))
                    .collect();
                Some(crate::quorum_net::NetTransport::start(
                    config.node_id,
                    &voters,
                    Duration::from_millis(config.quorum_request_timeout_ms.max(1)),
                    shutdown.subscribe(),
                ))
            };
        // The listeners accept (into the kernel's backlog) from here on, so peers' quorum connections wait for the
        // controller instead of failing while it loads.
        let broker_future = Broker::open_with(config, transport);
        let mut pending_acceptors = Vec::new();
        for (name, listener) in listeners {
            let is_controller = controller_names.contains(&name);
            pending_acceptors.push((name, listener, is_controller));
        }
        let broker = broker_future.await?;

        let mut acceptors = Vec::new();
        for (name, listener, is_controller) in pending_acceptors {
            let addr = listener.local_addr().ok();
            tracing::info!(listener = %name, address = ?addr, controller = is_controller, "listening");
            acceptors.push(tokio::spawn(accept_loop(
                broker.clone(),
                listener,
                is_controller,
                shutdown.subscribe(),
            )));
        }
        let background = if broker.config.roles.broker {
            let mut tasks = vec![
                tokio::spawn(reconcile_loop(broker.clone(), shutdown.subscribe())),
                tokio::spawn(maintenance_loop(broker.clone(), shutdown.subscribe())),
                tokio::spawn(crate::replica_fetcher::run(
                    broker.clone(),
                    shutdown.subscribe(),
                )),
                tokio::spawn(crate::isr::run(broker.clone(), shutdown.subscribe())),
            ];
            if broker.config.log_cleaner_enable {
                for thread in 0..broker.config.log_cleaner_threads {
                    tasks.push(tokio::spawn(cleaner_loop(
                        broker.clone(),
                        thread,
                        shutdown.subscribe(),
                    )));
                }
            }
            tasks
        } else {
            Vec::new()
        };
        if broker.config.roles.broker && !broker.config.quorum_voters.is_empty() {
            // Kafka's broker waits to be unfenced before it counts as started; the listeners already serve (the
            // quorum needs them), so a slow quorum only delays this line.
            if !broker.lifecycle.wait_unfenced(UNFENCE_WAIT).await {
                tracing::warn!(
                    wait_ms = UNFENCE_WAIT.as_millis(),
                    "not unfenced by the controller yet; serving while the lifecycle keeps trying"
                );
            }
        }
        tracing::info!(
            node_id = broker.config.node_id,
            cluster_id = %broker.controller.image().cluster_id,
            advertised = %format!("{}:{}", broker.config.advertised_host, broker.config.advertised_port),
            roles = %broker.config.roles,
            "sluice node started"
        );
        Ok(Server {
            broker,
            local_addrs,
            shutdown,
            acceptors,
            background,
        })
    }

    /// The address of the first listener (the actual port when it was configured as 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    /// Every bound listener address.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The shared broker state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, lets connections finish their in-flight requests, stops the background tasks, then
    /// flushes every log and writes the clean-shutdown marker.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        if self.broker.config.roles.broker
            && !self.broker.config.quorum_voters.is_empty()
            && self.broker.config.controlled_shutdown_enable
        {
            // Controlled shutdown: the controller moves this broker's leaderships away before it stops serving.
            let started = tokio::time::Instant::now();
            if self
                .broker
                .lifecycle
                .controlled_shutdown(CONTROLLED_SHUTDOWN_WAIT)
                .await
            {
                let left = CONTROLLED_SHUTDOWN_WAIT.saturating_sub(started.elapsed());
                wait_leading_nothing(&self.broker, left).await;
            }
        }
        tracing::info!("shutting down: no longer accepting connections");
        // Requests waiting on this node's controller (a peer's heartbeat, a forwarded CreateTopics) are answered
        // NOT_CONTROLLER now, so their callers go to the next controller instead of holding up the drain.
        self.broker.controller.shutdown();
        self.shutdown.send_replace(true);
        for acceptor in self.acceptors {
            if let Err(e) = acceptor.await {
                tracing::error!(error = %e, "acceptor task failed");
            }
        }
        // The background tasks return on the shutdown signal; awaiting them (rather than aborting) waits for a
        // reconciliation or retention pass already running on a blocking thread, which an abort would leave
        // deleting partition directories while the logs close.
        for task in self.background {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "background task failed");
            }
        }
        tracing::info!("flushing logs");
        self.broker.shutdown().await?;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Waits (at most `timeout`) until this broker has applied the metadata that moved its leaderships away, as a
/// Kafka broker in controlled shutdown stops only once its metadata caught up with the controller's moves. Until
/// then its partitions still act as leaders: acks=all produces parked on them would stay parked through the drain
/// (their clients' next batches for the partition wait behind them), while after it they are answered
/// NOT_LEADER_OR_FOLLOWER and the clients go to the new leaders.
async fn wait_leading_nothing(broker: &Broker, timeout: Duration) {
    let mut applied = broker.replicas.applied_receiver();
    let applied_all = tokio::time::timeout(timeout, async {
        while broker.replicas.partitions().iter().any(|p| p.is_leader()) {
            if applied.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    match applied_all {
        Ok(()) => tracing::info!("controlled shutdown: this broker leads no partition any more"),
        Err(_) => tracing::warn!(
            timeout_ms = timeout.as_millis(),
            "controlled shutdown: still leading partitions locally after the wait; stopping anyway"
        ),
    }
}

/// Allocations below this come from malloc's heaps, not from a fresh `mmap` each.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_MMAP_THRESHOLD_BYTES: i32 = 32 * 1024 * 1024;
/// Free memory a malloc heap keeps rather than returning it to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_TRIM_THRESHOLD_BYTES: i32 = 128 * 1024 * 1024;

/// Keeps glibc's malloc from returning the memory of large, short-lived buffers to the kernel after each use.
///
/// A Fetch reads each partition (up to `max.partition.fetch.bytes`, 1 MiB by default) into its own buffer and
/// hands it to the socket; a Produce frame is one buffer of up to a megabyte or more. With glibc's dynamic
/// thresholds such buffers are `mmap`ed, or freed to the top of a heap that is then trimmed, so the next request
/// page-faults its buffer in again: on a 1 KiB-record consume run, page faults and unmapping were a third of the
/// broker's CPU time. Fixed thresholds (allocations below 32 MiB from the heaps; trim beyond 128 MiB of free
/// top) make those buffers reuse memory. The price: after a burst, up to 128 MiB of freed memory per malloc arena
/// stays with the process instead of going back to the kernel. Runs before any connection is served; other
/// allocators (a `#[global_allocator]` in the binary, musl) are untouched.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only sets malloc parameters (it takes the arena lock); called with valid constants.
        #[allow(unsafe_code)]
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD_BYTES) == 1
        };
        if !ok {
            tracing::debug!("mallopt refused the malloc thresholds; keeping glibc's defaults");
        }
    }
}

/// Accepts connections until shutdown, then waits (bounded) for them to finish their in-flight requests.
async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    is_controller: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    // The peer of every running connection task, so a task that panicked can be reported with its peer.
    let mut peers: HashMap<tokio::task::Id, SocketAddr> = HashMap::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "accepted connection");
                    let broker = broker.clone();
                    let shutdown = shutdown.clone();
                    let task = connections.spawn(async move {
                        // The first bytes tell a quorum peer from a client; a peer that sends nothing must not
                        // hold up the shutdown.
                        let is_quorum = is_controller && {
                            let mut stopping = shutdown.clone();
                            tokio::select! {
                                quorum = crate::quorum_net::is_quorum_connection(&stream) => quorum,
                                _ = stopping.changed() => return,
                            }
                        };
                        if is_quorum {
                            crate::quorum_net::serve_quorum_connection(broker.controller.clone(), stream, shutdown).await;
                        } else {
                            let kind = if is_controller {
                                crate::apis::ListenerKind::Controller
                            } else {
                                crate::apis::ListenerKind::Client
                            };
                            crate::network::serve_connection(broker, stream, peer, kind, shutdown).await;
                        }
                    });
                    peers.insert(task.id(), peer);
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set stays small.
            Some(joined) = connections.join_next_with_id(), if !connections.is_empty() => {
                reap(&broker, &mut peers, joined);
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(
            connections = open,
            "waiting for connections to finish in-flight requests"
        );
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(joined) = connections.join_next_with_id().await {
            reap(&broker, &mut peers, joined);
        }
    })
    .await;
    if drained.is_err() {
        let busy: Vec<SocketAddr> = peers.values().copied().collect();
        tracing::warn!(
            connections = connections.len(),
            peers = ?busy,
            "connections still busy after the drain timeout; dropping them"
        );
        connections.shutdown().await;
    }
}

/// Accounts for one finished connection task: a panic is logged at error level with the peer and counted on
/// [`Broker::handler_panics`]; a cancellation (the drain timeout's abort) is not an error.
fn reap(
    broker: &Broker,
    peers: &mut HashMap<tokio::task::Id, SocketAddr>,
    joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
) {
    let error = match joined {
        Ok((id, ())) => {
            peers.remove(&id);
            return;
        }
        Err(error) => error,
    };
    let peer = peers.remove(&error.id());
    if error.is_panic() {
        broker.record_handler_panic();
        let panic = error.into_panic();
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        tracing::error!(peer = ?peer, panic = %message, "connection handler panicked; connection dropped");
    } else {
        tracing::debug!(peer = ?peer, "connection task cancelled");
    }
}

/// Reconciles the hosted partitions with every committed metadata change.
async fn reconcile_loop(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut images = broker.replicas.image_receiver();
    // Nothing is hosted before this broker's registration is committed and its image caught up with it.
    tokio::select! {
        caught_up = broker.lifecycle.wait_caught_up() => {
            if !caught_up {
                return;
            }
        }
        _ = shutdown.changed() => return,
    }
    let b = broker.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || b.replicas.activate()).await {
        tracing::error!(error = %e, "metadata reconciliation failed");
    }
    apply_log_dir_move_rate(&broker);
    loop {
        tokio::select! {
            changed = images.changed() => {
                if changed.is_err() {
                    return;
                }
                let image = images.borrow_and_update().clone();
                let b = broker.clone();
                // Creating and deleting logs touches the file system.
                if let Err(e) = tokio::task::spawn_blocking(move || b.replicas.reconcile(&image)).await {
                    tracing::error!(error = %e, "metadata reconciliation failed");
                }
                // Groups whose `__consumer_offsets` partition moved to another leader go with it.
                broker.groups.unload_lost(&broker);
                broker.txns.unload_lost(&broker);
                let b = broker.clone();
                tokio::spawn(async move { b.txns.load_led(&b).await });
                apply_log_dir_move_rate(&broker);
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Hands the log manager this broker's `replica.alter.log.dirs.io.max.bytes.per.second` from the image.
fn apply_log_dir_move_rate(broker: &Broker) {
    let rate = crate::replication_quota::broker_rate(
        &broker.replicas.image(),
        &broker.config.node_id.to_string(),
        LOG_DIR_MOVE_RATE,
    );
    broker.logs.set_log_dir_move_rate(rate);
}

/// Runs retention every `log.retention.check.interval.ms` and time-based flushes every [`FLUSH_CHECK_INTERVAL`].
async fn maintenance_loop(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let retention_every =
        Duration::from_millis(broker.config.log_retention_check_interval_ms.max(1));
    let mut retention = tokio::time::interval(retention_every);
    let mut flush = tokio::time::interval(FLUSH_CHECK_INTERVAL);
    // Kafka's `ReplicaManager.checkpointHighWatermarks`: after a crash, logs reopen with the last checkpoint.
    let mut hw_checkpoint = tokio::time::interval(Duration::from_millis(
        broker
            .config
            .replica_high_watermark_checkpoint_interval_ms
            .max(1),
    ));
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    hw_checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick of an interval fires at once; retention waits one period after start-up, like Kafka.
    retention.tick().await;
    loop {
        tokio::select! {
            _ = retention.tick() => {
                let logs = broker.logs.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || logs.run_retention(now_ms())).await {
                    tracing::error!(error = %e, "retention task failed");
                }
            }
            _ = flush.tick() => {
                let logs = broker.logs.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || logs.flush_due(now_ms())).await {
                    tracing::error!(error = %e, "flush task failed");
                }
            }
            _ = hw_checkpoint.tick() => {
                let logs = broker.logs.clone();
                match tokio::task::spawn_blocking(move || logs.checkpoint_high_watermarks()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "high-watermark checkpoint failed"),
                    Err(e) => tracing::error!(error = %e, "high-watermark checkpoint task failed"),
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// One log cleaner thread (Kafka's `LogCleaner.CleanerThread`): cleans the compacted log that needs it most
/// (`LogManager::clean_filthiest`, on a blocking thread), goes on at once after a pass, and sleeps
/// `log.cleaner.backoff.ms` when no log needs cleaning. Shutdown interrupts the sleep; a pass already running is
/// awaited, as `Server::shutdown` awaits every background task before the logs close.
async fn cleaner_loop(broker: Arc<Broker>, thread: usize, mut shutdown: watch::Receiver<bool>) {
    let backoff = Duration::from_millis(broker.config.log_cleaner_backoff_ms);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let logs = broker.logs.clone();
        let options = broker.config.clean_options(now_ms());
        let started = std::time::Instant::now();
        let cleaned = tokio::task::spawn_blocking(move || logs.clean_filthiest(&options)).await;
        match cleaned {
            Ok(Some(((topic, partition), stats))) => {
                tracing::info!(
                    cleaner = thread,
                    %topic,
                    partition,
                    bytes_read = stats.bytes_read,
                    bytes_written = stats.bytes_written,
                    records_read = stats.records_read,
                    records_removed = stats.records_removed,
                    segments_before = stats.segments_before,
                    segments_after = stats.segments_after,
                    end_offset = stats.end_offset,
                    aborted = stats.aborted,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "log cleaned"
                );
                continue;
            }
            Ok(None) => {}
            // A panicking pass is logged and the thread backs off, so one bad log does not spin it.
            Err(e) => tracing::error!(cleaner = thread, error = %e, "log cleaner task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_connection_task_is_counted_and_a_finished_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig::from_pairs([
            ("listeners", "PLAINTEXT://127.0.0.1:0".to_string()),
            ("log.dirs", dir.path().display().to_string()),
        ])
        .unwrap();
        let broker = Broker::open(config).await.unwrap();
        let mut connections = JoinSet::new();
        let mut peers = HashMap::new();
        let peer: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        let fine = connections.spawn(async {});
        peers.insert(fine.id(), peer);
        let boom = connections.spawn(async { panic!("handler bug") });
        peers.insert(boom.id(), peer);
        while let Some(joined) = connections.join_next_with_id().await {
            reap(&broker, &mut peers, joined);
        }
        assert_eq!(broker.handler_panics(), 1);
        assert!(peers.is_empty(), "every finished task's peer is forgotten");
        broker.shutdown().await.unwrap();
    }
}
