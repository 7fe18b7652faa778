//! `Broker`: the state every connection task shares (config, controller, logs, replica manager), and its
//! start-up and shutdown sequence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sluice_storage::{LogManager, StorageError};

use crate::config::BrokerConfig;
use crate::controller::{Controller, ControllerConfig, ControllerError};
use crate::replica_manager::ReplicaManager;

/// A broker-only node waiting for the metadata log at start-up says so this often.
const OBSERVER_CATCH_UP_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the embedded single node waits for its own controller to unfence it.
const SINGLE_NODE_UNFENCE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why the broker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The partition logs could not be opened or closed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The metadata log or controller failed.
    #[error("controller: {0}")]
    Controller(#[from] ControllerError),
    /// The producer id allocator could not be opened.
    #[error("producer ids: {0}")]
    ProducerIds(#[from] crate::producer_ids::ProducerIdError),
    /// The configuration asks for something not built yet.
    #[error("unsupported configuration: {0}")]
    Unsupported(String),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

/// Shared broker state; every connection task holds an `Arc<Broker>`.
pub struct Broker {
    /// The broker configuration (advertised port resolved after binding).
    pub config: Arc<BrokerConfig>,
    /// The controller: metadata log, image and admin operations.
    pub controller: Controller,
    /// Every partition log on this broker's disks.
    pub logs: Arc<LogManager>,
    /// The partitions this broker hosts, reconciled with the controller's image.
    pub replicas: ReplicaManager,
    /// Incremental fetch sessions (KIP-227); locked only for synchronous calls, never across an `.await`.
    pub fetch_sessions: parking_lot::Mutex<crate::fetch_session::FetchSessionCache>,
    /// Fetches waiting for `min_bytes` (long polling).
    pub fetch_purgatory: crate::purgatory::FetchPurgatory,
    /// The group coordinator (consumer groups and committed offsets on `__consumer_offsets`).
    pub groups: crate::group_coordinator::GroupCoordinator,
    /// The transaction coordinator (transactional ids and their transactions on `__transaction_state`).
    pub txns: crate::txn_coordinator::TxnCoordinator,
    /// Requests to the active controller (another node's CONTROLLER listener when this node is not it).
    pub controller_channel: crate::controller_channel::ControllerChannel,
    /// Registration with the controller and heartbeats (a cluster's brokers; the embedded single node registers
    /// itself inline at start-up).
    pub lifecycle: crate::lifecycle::BrokerLifecycle,
    /// Producer ids for idempotent producers (InitProducerId).
    pub producer_ids: crate::producer_ids::ProducerIdManager,
    /// Replication throttles: bytes this leader sent to, and this follower fetched for, throttled replicas.
    pub leader_quota: crate::replication_quota::ReplicationQuota,
    /// See `leader_quota`.
    pub follower_quota: crate::replication_quota::ReplicationQuota,
    /// The broker epoch the previous run wrote at its clean shutdown, -1 after a crash (KIP-966: sent with the
    /// registration, so that the controller takes a broker that may have lost records out of every ISR and ELR).
    pub previous_broker_epoch: i64,
    /// Connection tasks that ended in a panic since start-up (see [`Broker::handler_panics`]).
    handler_panics: AtomicU64,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("node_id", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens the logs (recovering them if needed) and the metadata log, registers this node with the controller
    /// and brings the hosted partitions in line with the metadata image.
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        Self::open_with(config, None).await
    }

    /// As [`Broker::open`], with the transport the controller sends Raft messages to its peers through (`None` for
    /// the embedded single node, its own only voter).
    pub async fn open_with(
        config: BrokerConfig,
        transport: Option<Arc<dyn crate::controller::Transport>>,
    ) -> Result<Arc<Broker>, BrokerError> {
        if config.quorum_voters.is_empty() && !config.quorum_bootstrap_servers.is_empty() {
            return Err(BrokerError::Unsupported(
                "controller.quorum.bootstrap.servers without controller.quorum.voters is a dynamic quorum \
                 (KIP-853), which Sluice does not run yet: list the voters in controller.quorum.voters"
                    .into(),
            ));
        }
        let config = Arc::new(config);
        let log_dirs = config.log_dirs.clone();
        let default_log_config = config.log_config(&Default::default());
        // Opening runs recovery (file reads, maybe truncation): keep it off the async workers.
        let logs =
            tokio::task::spawn_blocking(move || LogManager::open(log_dirs, default_log_config))
                .await
                .map_err(|e| BrokerError::Task(e.to_string()))??;
        let logs = Arc::new(logs);

        let controller_config = ControllerConfig {
            node_id: config.node_id,
            metadata_dir: config.metadata_log_dir.clone(),
            log_dirs: config.log_dirs.clone(),
            num_partitions: config.num_partitions,
            default_replication_factor: config.default_replication_factor,
            cluster_id: config.cluster_id.clone(),
            voters: config
                .quorum_voters
                .iter()
                .map(|v| (v.id, v.host.clone(), v.port))
                .collect(),
            election_timeout_ms: config.quorum_election_timeout_ms,
            session_timeout_ms: config.broker_session_timeout_ms,
            snapshot_after_bytes: config.metadata_log_max_record_bytes_between_snapshots,
            elections: config.election_config(),
        };
        let controller = if config.roles.controller {
            tokio::task::spawn_blocking(move || Controller::open(controller_config, transport))
                .await
                .map_err(|e| BrokerError::Task(e.to_string()))??
        } else {
            // A broker-only node follows the voters' committed log. Its partition logs are reconciled with the image
            // below: wait for the whole committed log first, or an empty image would look like "no topics".
            let controller = Controller::observe(controller_config)?;
            let mut waited = std::time::Duration::ZERO;
            while !controller.wait_caught_up(OBSERVER_CATCH_UP_LOG_EVERY).await {
                waited += OBSERVER_CATCH_UP_LOG_EVERY;
                tracing::warn!(
                    waited_s = waited.as_secs(),
                    voters = ?config.quorum_voters.iter().map(|v| format!("{}@{}:{}", v.id, v.host, v.port)).collect::<Vec<_>>(),
                    "still waiting for the controller quorum's metadata log"
                );
            }
            controller
        };
        let replicas = ReplicaManager::new(config.clone(), logs.clone(), controller.subscribe());
        let producer_ids = crate::producer_ids::ProducerIdManager::open(&config.metadata_log_dir)?;
        let previous_broker_epoch = take_clean_shutdown(&config.metadata_log_dir);
        let fetch_sessions = parking_lot::Mutex::new(
            crate::fetch_session::FetchSessionCache::from_config(&config),
        );
        let groups = crate::group_coordinator::GroupCoordinator::new(&config);
        let txns = crate::txn_coordinator::TxnCoordinator::new(&config);
        let controller_channel =
            crate::controller_channel::ControllerChannel::new(controller.clone(), config.clone());
        let now = crate::apis::now_ms();
        let leader_quota = crate::replication_quota::ReplicationQuota::new(
            crate::replication_quota::Side::Leader,
            config.node_id,
            now,
        );
        let follower_quota = crate::replication_quota::ReplicationQuota::new(
            crate::replication_quota::Side::Follower,
            config.node_id,
            now,
        );
        let broker = Arc::new(Broker {
            previous_broker_epoch,
            leader_quota,
            follower_quota,
            config,
            controller_channel,
            lifecycle: crate::lifecycle::BrokerLifecycle::new(),
            controller,
            logs,
            replicas,
            fetch_sessions,
            fetch_purgatory: crate::purgatory::FetchPurgatory::default(),
            groups,
            txns,
            producer_ids,
            handler_panics: AtomicU64::new(0),
        });
        if !broker.config.roles.broker {
            // A controller-only node: the quorum and the CONTROLLER listener, no partitions, groups or registration.
            return Ok(broker);
        }
        crate::group_coordinator::GroupCoordinator::start(&broker);
        crate::txn_coordinator::TxnCoordinator::start(&broker);
        // Registration and heartbeats: without them the controller would fence this broker after
        // `broker.session.timeout.ms`. The embedded single node is its own active controller and unfences itself at
        // once, so it is unfenced before anything is served; a cluster's node waits in `Server::start`, once its
        // listeners serve (the quorum needs them).
        broker.lifecycle.start(&broker);
        if broker.config.quorum_voters.is_empty()
            && !broker
                .lifecycle
                .wait_unfenced(SINGLE_NODE_UNFENCE_WAIT)
                .await
        {
            return Err(BrokerError::Task(
                "the embedded controller did not unfence this broker".into(),
            ));
        }
        if broker.config.quorum_voters.is_empty() {
            // Registered and caught up (its own controller): host the partitions (creates and deletes logs: off
            // the async workers) before anything is served. A cluster's node does this in the server's reconciler
            // once its registration is committed (`ReplicaManager::activate` says why).
            let b = broker.clone();
            tokio::task::spawn_blocking(move || b.replicas.activate())
                .await
                .map_err(|e| BrokerError::Task(e.to_string()))?;
        }
        Ok(broker)
    }

    /// How many connection tasks ended in a panic since start-up. Every panic is a bug (input must never panic
    /// the broker); the server logs each one with its peer and drops only that connection.
    pub fn handler_panics(&self) -> u64 {
        self.handler_panics.load(Ordering::Relaxed)
    }

    /// Counts one connection task that panicked.
    pub(crate) fn record_handler_panic(&self) {
        self.handler_panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Flushes every log and writes the clean-shutdown marker. Called once, after the last request finished.
    pub async fn shutdown(&self) -> Result<(), BrokerError> {
        let epoch = self.lifecycle.broker_epoch();
        self.lifecycle.stop().await;
        // Group timers append to `__consumer_offsets`: stop them before the logs close.
        self.groups.stop().await;
        self.txns.stop().await;
        let logs = self.logs.clone();
        tokio::task::spawn_blocking(move || logs.shutdown())
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))??;
        if let Some(epoch) = epoch {
            if let Err(e) = write_clean_shutdown(&self.config.metadata_log_dir, epoch) {
                tracing::warn!(error = %e, "cannot write the clean-shutdown file; the next start counts as unclean");
            }
        }
        Ok(())
    }
}

/// Kafka's clean-shutdown file: written last by a clean shutdown with the broker epoch, removed at start-up.
const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";

/// The broker epoch the previous run's clean shutdown recorded in `dir` (-1 when it did not end cleanly), removing
/// the file so that a crash of this run is seen as one.
fn take_clean_shutdown(dir: &std::path::Path) -> i64 {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    // `{"version":0,"brokerEpoch":N}`: one number after the key.
    let epoch = std::fs::read_to_string(&path).ok().and_then(|text| {
        let rest = text
            .split_once("\"brokerEpoch\"")?
            .1
            .trim_start()
            .strip_prefix(':')?;
        let rest = rest.trim_start();
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        rest[..end].parse::<i64>().ok()
    });
    if path.exists() {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the clean-shutdown file");
        }
    }
    epoch.unwrap_or(-1)
}

fn write_clean_shutdown(dir: &std::path::Path, epoch: i64) -> std::io::Result<()> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    let text = format!("{{\"version\":0,\"brokerEpoch\":{epoch}}}");
    let file = std::fs::File::create(&path)?;
    std::io::Write::write_all(&mut &file, text.as_bytes())?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}
