//! The transaction coordinator's tokio shell: owns one [`TxnCoordinatorShard`] per `__transaction_state`
//! partition this broker leads, creates that internal topic on first use (compacted,
//! `transaction.state.log.num.partitions` partitions), appends the shards' records before it answers and replays
//! them into the shard, loads the partitions on start-up, runs the timers (aborting transactions past their
//! timeout, expiring transactional ids) and writes the COMMIT/ABORT markers of every ending transaction to the
//! leaders of its partitions (locally, or with WriteTxnMarkers to another broker), then completes the transaction.
//!
//! Locking as in `group_coordinator`: each shard sits behind a `parking_lot::Mutex` held only for the state
//! machine step and the local append, never across an `.await`. A write that fails drops the shard: it is reloaded
//! from the log on next use, and the client retries (NOT_COORDINATOR).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use sluice_client::Connection;
use sluice_coordinator::txn::{
    MarkerRequest, TxnCoordinatorConfig, TxnCoordinatorShard, TxnError, TxnLogRecord, TxnMetadata,
    TxnResult,
};
use sluice_coordinator::{partition_for, TRANSACTION_STATE_TOPIC};
use tokio::sync::Notify;

use crate::apis::now_ms;
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::group_coordinator::CoordinatorError;
use crate::internal_topic::{self, InternalTopic};
use crate::replica_manager::ReplicaError;

/// How long the start-up load waits for the controller to unfence this broker.
const LOAD_WAIT_FOR_UNFENCE: Duration = Duration::from_secs(60);
/// `transaction.state.log.segment.bytes` (Kafka's default, 100 MiB).
const SEGMENT_BYTES: &str = "104857600";
/// How long an answer waits for its records to reach every in-sync replica.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);
/// The timer loop wakes at least this often.
const MAX_TIMER_SLEEP_MS: i64 = 1_000;
/// Marker writes that failed are retried after this, doubling up to [`MARKER_BACKOFF_MAX`].
const MARKER_BACKOFF: Duration = Duration::from_millis(20);
const MARKER_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Timeout of one WriteTxnMarkers round trip to another broker (Kafka's `request.timeout.ms`).
const MARKER_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// How long a producer-id allocation may wait for a block from the controller.
const ID_WAIT: Duration = Duration::from_secs(5);

/// The shard of one `__transaction_state` partition.
struct Shard {
    partition: i32,
    state: Mutex<TxnCoordinatorShard>,
}

/// What a step wrote: the partition and the last offset, which its answer waits to see replicated.
type Written = Option<(Arc<crate::partition::Partition>, i64)>;

/// The transaction coordinator of this broker.
pub struct TxnCoordinator {
    config: TxnCoordinatorConfig,
    num_partitions: i32,
    replication_factor: i16,
    min_isr: i32,
    shards: Mutex<HashMap<i32, Arc<Shard>>>,
    /// Serializes topic creation and partition loads (held across `.await`: a tokio mutex).
    loading: tokio::sync::Mutex<()>,
    /// Wakes the timer loop after a step changed deadlines.
    wake: Arc<Notify>,
    /// Set by [`TxnCoordinator::stop`]: no more timers or marker rounds.
    stopping: AtomicBool,
    /// The start-up load and timer loop task.
    background: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Connections to other brokers for WriteTxnMarkers, by node id.
    connections: tokio::sync::Mutex<HashMap<i32, (String, Connection)>>,
}

impl std::fmt::Debug for TxnCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnCoordinator")
            .field("num_partitions", &self.num_partitions)
            .field("loaded", &self.shards.lock().len())
            .finish_non_exhaustive()
    }
}

impl TxnCoordinator {
    /// A coordinator with the broker's `transaction.*` settings.
    pub fn new(config: &BrokerConfig) -> TxnCoordinator {
        TxnCoordinator {
            config: TxnCoordinatorConfig {
                transaction_max_timeout_ms: config.transaction_max_timeout_ms,
                transactional_id_expiration_ms: config.transactional_id_expiration_ms,
                abort_timed_out_check_interval_ms: config
                    .transaction_abort_timed_out_transaction_cleanup_interval_ms,
                remove_expired_check_interval_ms: config
                    .transaction_remove_expired_transaction_cleanup_interval_ms,
                offsets_topic_num_partitions: config.offsets_topic_num_partitions.max(1),
            },
            num_partitions: config.transaction_state_log_num_partitions.max(1),
            replication_factor: config.transaction_state_log_replication_factor,
            min_isr: config.transaction_state_log_min_isr,
            shards: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            stopping: AtomicBool::new(false),
            background: Mutex::new(None),
            connections: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The `__transaction_state` partition of a transactional id (Kafka's `partitionFor`).
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.num_partitions)
    }

    /// Starts the background work: loads every partition of an existing `__transaction_state` this broker leads
    /// (so that open transactions time out and unfinished markers are written after a restart), then runs the
    /// timer loop.
    pub fn start(broker: &Arc<Broker>) {
        let weak = Arc::downgrade(broker);
        let existing = broker
            .controller
            .image()
            .topic(TRANSACTION_STATE_TOPIC)
            .is_some();
        let task = tokio::spawn(async move {
            if existing {
                if let Some(b) = weak.upgrade() {
                    if !b.lifecycle.wait_unfenced(LOAD_WAIT_FOR_UNFENCE).await
                        || !b.replicas.wait_active(LOAD_WAIT_FOR_UNFENCE).await
                    {
                        tracing::warn!(
                            "not unfenced within {LOAD_WAIT_FOR_UNFENCE:?}; loading {TRANSACTION_STATE_TOPIC} anyway"
                        );
                    }
                    b.txns.load_led(&b).await;
                }
            }
            timer_loop(weak).await;
        });
        *broker.txns.background.lock() = Some(task);
    }

    /// Loads the partitions of `__transaction_state` this broker leads and has not loaded yet.
    pub(crate) async fn load_led(&self, broker: &Arc<Broker>) {
        if self.stopping.load(Ordering::Acquire)
            || broker
                .replicas
                .image()
                .topic(TRANSACTION_STATE_TOPIC)
                .is_none()
        {
            return;
        }
        for p in 0..self.num_partitions {
            if self.shards.lock().contains_key(&p) {
                continue;
            }
            if broker
                .replicas
                .partition(TRANSACTION_STATE_TOPIC, p)
                .is_err()
            {
                continue;
            }
            if let Err(e) = self.load_partition(broker, p).await {
                tracing::warn!("loading {TRANSACTION_STATE_TOPIC}-{p}: {e}");
            }
        }
    }

    /// Stops the timer loop and waits for it (no timer appends after the logs close).
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
        let task = self.background.lock().take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!("transaction coordinator background task panicked: {e}");
                }
            }
        }
    }

    /// Ensures `__transaction_state` exists, created as Kafka does on first use (compacted,
    /// `transaction.state.log.*` settings). `Err` is retriable (COORDINATOR_NOT_AVAILABLE).
    pub(crate) async fn ensure_topic(&self, broker: &Arc<Broker>) -> Result<(), CoordinatorError> {
        let configs = [
            ("cleanup.policy", "compact".to_string()),
            ("segment.bytes", SEGMENT_BYTES.to_string()),
            ("compression.type", "uncompressed".to_string()),
            ("min.insync.replicas", self.min_isr.to_string()),
            ("unclean.leader.election.enable", "false".to_string()),
        ];
        internal_topic::ensure(
            broker,
            &InternalTopic {
                name: TRANSACTION_STATE_TOPIC,
                partitions: self.num_partitions,
                replication_factor: self.replication_factor,
                configs: &configs,
            },
        )
        .await
        .map_err(|()| CoordinatorError::NotAvailable)
    }

    /// The shard of `transactional_id`'s partition, loading it (and creating the topic) on first use.
    async fn shard(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
    ) -> Result<Arc<Shard>, CoordinatorError> {
        let partition = self.partition_for(transactional_id);
        if let Some(s) = self.shards.lock().get(&partition) {
            return Ok(s.clone());
        }
        self.load_partition(broker, partition).await
    }

    /// Loads one partition: replays its log into a fresh shard, then resends the markers of transactions it finds
    /// half-completed (PrepareCommit / PrepareAbort).
    async fn load_partition(
        &self,
        broker: &Arc<Broker>,
        partition: i32,
    ) -> Result<Arc<Shard>, CoordinatorError> {
        let _guard = self.loading.lock().await;
        if let Some(s) = self.shards.lock().get(&partition) {
            return Ok(s.clone());
        }
        self.ensure_topic(broker).await?;
        let hosted = broker
            .replicas
            .partition(TRANSACTION_STATE_TOPIC, partition)
            .map_err(|e| match e {
                ReplicaError::NotLeader => CoordinatorError::NotCoordinator,
                ReplicaError::UnknownTopicOrPartition | ReplicaError::Storage => {
                    CoordinatorError::NotAvailable
                }
            })?;
        // The partition's leader epoch is the coordinator epoch written into markers: a deposed coordinator's
        // markers carry an older one.
        let coordinator_epoch = hosted.leader_epoch();
        let log = hosted.log.clone();
        let records = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            internal_topic::read_log(
                TRANSACTION_STATE_TOPIC,
                &log,
                |header, key, value| {
                    let Some(key) = key else { return };
                    match TxnLogRecord::decode(key, value) {
                        Ok(Some(r)) => out.push(r),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(
                            "skipping unreadable {TRANSACTION_STATE_TOPIC} record in the batch at {}: {e}",
                            header.base_offset()
                        ),
                    }
                },
                |_, _| {},
            );
            out
        })
        .await
        .map_err(|_| CoordinatorError::NotAvailable)?;
        let mut shard = TxnCoordinatorShard::new(self.config.clone(), coordinator_epoch);
        for r in &records {
            shard.replay(r);
        }
        let markers = shard.finish_loading(now_ms());
        if records.is_empty() {
            tracing::debug!("loaded {TRANSACTION_STATE_TOPIC}-{partition}: empty");
        } else {
            tracing::info!(
                "loaded {TRANSACTION_STATE_TOPIC}-{partition}: {} records, {} transactions to complete",
                records.len(),
                markers.len()
            );
        }
        let s = Arc::new(Shard {
            partition,
            state: Mutex::new(shard),
        });
        self.shards.lock().insert(partition, s.clone());
        spawn_markers(broker, partition, markers);
        self.wake.notify_one();
        Ok(s)
    }

    /// Runs one step on a shard: appends its records to the partition and replays them into the shard (under the
    /// shard lock), waits until they are replicated, then starts writing its markers.
    fn commit<T>(
        &self,
        broker: &Broker,
        shard: &Shard,
        state: &mut TxnCoordinatorShard,
        result: &TxnResult<T>,
    ) -> Result<Written, CoordinatorError> {
        if result.records.is_empty() {
            return Ok(None);
        }
        match append_records(broker, shard.partition, &result.records) {
            Ok(w) => {
                for r in &result.records {
                    state.replay(r);
                }
                self.wake.notify_one();
                Ok(w)
            }
            Err(e) => {
                tracing::error!(
                    "writing to {TRANSACTION_STATE_TOPIC}-{}: {e}; reloading the partition",
                    shard.partition
                );
                self.shards.lock().remove(&shard.partition);
                Err(CoordinatorError::NotCoordinator)
            }
        }
    }

    async fn replicated(&self, written: Written) -> Result<(), CoordinatorError> {
        let Some((partition, last_offset)) = written else {
            return Ok(());
        };
        match partition
            .wait_replicated(last_offset, REPLICATION_TIMEOUT)
            .await
        {
            crate::partition::Replicated::Done => Ok(()),
            crate::partition::Replicated::NotLeader => Err(CoordinatorError::NotCoordinator),
            crate::partition::Replicated::BelowMinIsr | crate::partition::Replicated::TimedOut => {
                Err(CoordinatorError::NotAvailable)
            }
        }
    }

    /// Runs `step` on the shard of `transactional_id`, commits what it wrote and starts its markers.
    async fn run<T>(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        step: impl FnOnce(&mut TxnCoordinatorShard) -> TxnResult<T>,
    ) -> Result<T, CoordinatorError> {
        let shard = self.shard(broker, transactional_id).await?;
        let (result, written) = {
            let mut state = shard.state.lock();
            let result = step(&mut state);
            let written = self.commit(broker, &shard, &mut state, &result)?;
            (result, written)
        };
        self.replicated(written).await?;
        spawn_markers(broker, shard.partition, result.markers);
        Ok(result.response)
    }

    /// InitProducerId with a transactional id: the producer id and epoch, or why not.
    pub(crate) async fn init_producer_id(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        transaction_timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<Result<(i64, i16), TxnError>, CoordinatorError> {
        // A new producer id is needed only for a new transactional id or an exhausted epoch: try without one, and
        // allocate (async, from the controller's blocks) only when the shard asked and found none.
        let mut spare: Option<i64> = None;
        loop {
            let had_spare = spare.is_some();
            let mut asked = false;
            let outcome = self
                .run(broker, transactional_id, |s| {
                    s.init_producer_id(
                        transactional_id,
                        transaction_timeout_ms,
                        expected,
                        now_ms(),
                        &mut || {
                            asked = true;
                            spare.take()
                        },
                    )
                })
                .await?;
            if !asked || had_spare {
                return Ok(outcome);
            }
            match broker
                .producer_ids
                .generate(crate::producer_ids::ControllerBlocks::of(broker), ID_WAIT)
                .await
            {
                Ok(id) => spare = Some(id),
                Err(e) => {
                    tracing::debug!(error = %e, "no producer id for a transactional producer yet");
                    return Ok(Err(TxnError::CoordinatorLoadInProgress));
                }
            }
        }
    }

    /// AddPartitionsToTxn (v0-v3, and v4's non-verifying transactions).
    pub(crate) async fn add_partitions(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<TxnError, CoordinatorError> {
        self.run(broker, transactional_id, |s| {
            s.add_partitions(
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
                now_ms(),
            )
        })
        .await
    }

    /// KIP-890's verification: whether each partition is part of the producer's ongoing transaction.
    pub(crate) async fn verify_partitions(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<((String, i32), TxnError)>, CoordinatorError> {
        let shard = self.shard(broker, transactional_id).await?;
        let state = shard.state.lock();
        Ok(state.verify_partitions(transactional_id, producer_id, producer_epoch, partitions))
    }

    /// AddOffsetsToTxn: adds the group's `__consumer_offsets` partition to the transaction.
    pub(crate) async fn add_offsets(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
    ) -> Result<TxnError, CoordinatorError> {
        self.run(broker, transactional_id, |s| {
            s.add_offsets(
                transactional_id,
                producer_id,
                producer_epoch,
                group_id,
                now_ms(),
            )
        })
        .await
    }

    /// EndTxn: prepares the commit or abort; the markers follow in the background.
    pub(crate) async fn end_txn(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<TxnError, CoordinatorError> {
        self.run(broker, transactional_id, |s| {
            s.end_txn(
                transactional_id,
                producer_id,
                producer_epoch,
                commit,
                now_ms(),
            )
        })
        .await
    }

    /// DescribeTransactions of one id (`None`: not found).
    pub(crate) async fn describe(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
    ) -> Result<Option<TxnMetadata>, CoordinatorError> {
        let shard = self.shard(broker, transactional_id).await?;
        let state = shard.state.lock();
        Ok(state.describe(transactional_id).cloned())
    }

    /// ListTransactions over every loaded shard.
    pub(crate) fn list(
        &self,
        states: &[String],
        producer_ids: &[i64],
        duration_filter_ms: i64,
    ) -> Vec<TxnMetadata> {
        let shards: Vec<Arc<Shard>> = self.shards.lock().values().cloned().collect();
        let now = now_ms();
        let mut out: Vec<TxnMetadata> = shards
            .iter()
            .flat_map(|s| {
                s.state
                    .lock()
                    .list(states, producer_ids, duration_filter_ms, now)
                    .into_iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }

    /// Unloads the shards of partitions this broker no longer leads (their marker writers stop at their next
    /// round; the new leader resends the markers of what it loads half-completed).
    pub(crate) fn unload_lost(&self, broker: &Broker) {
        let lost: Vec<i32> = self
            .shards
            .lock()
            .keys()
            .copied()
            .filter(|&p| {
                broker
                    .replicas
                    .partition(TRANSACTION_STATE_TOPIC, p)
                    .is_err()
            })
            .collect();
        for p in lost {
            if self.shards.lock().remove(&p).is_some() {
                tracing::info!(
                    "no longer the leader of {TRANSACTION_STATE_TOPIC}-{p}; its transactions are unloaded"
                );
            }
        }
    }

    /// Whether the shard that spawned a marker writer is still the one loaded (else the writer stops).
    fn still_loaded(&self, partition: i32, shard: &Weak<Shard>) -> Option<Arc<Shard>> {
        let current = self.shards.lock().get(&partition).cloned()?;
        let theirs = shard.upgrade()?;
        Arc::ptr_eq(&current, &theirs).then_some(current)
    }

    /// Timer step of every loaded shard whose deadline passed; returns the earliest next deadline.
    async fn poll_timers(&self, broker: &Arc<Broker>) -> Option<i64> {
        let shards: Vec<Arc<Shard>> = self.shards.lock().values().cloned().collect();
        let mut next: Option<i64> = None;
        // A timed-out transaction of an exhausted epoch needs a new producer id: keep one at hand.
        let mut spare: Option<i64> = None;
        for s in shards {
            let now = now_ms();
            let due = s.state.lock().next_deadline_ms().is_some_and(|d| d <= now);
            if due {
                if spare.is_none() {
                    spare = broker
                        .producer_ids
                        .generate(crate::producer_ids::ControllerBlocks::of(broker), ID_WAIT)
                        .await
                        .ok();
                }
                let step = {
                    let mut state = s.state.lock();
                    let result = state.poll(now, &mut || spare.take());
                    self.commit(broker, &s, &mut state, &result)
                        .map(|w| (w, result.markers))
                };
                if let Ok((written, markers)) = step {
                    // Nobody waits for a timer's answer, but its markers follow the replicated abort.
                    let b = broker.clone();
                    let partition = s.partition;
                    tokio::spawn(async move {
                        if b.txns.replicated(written).await.is_ok() {
                            spawn_markers(&b, partition, markers);
                        }
                    });
                }
            }
            if let Some(d) = s.state.lock().next_deadline_ms() {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        next
    }
}

async fn timer_loop(broker: Weak<Broker>) {
    loop {
        let Some(b) = broker.upgrade() else {
            return;
        };
        if b.txns.stopping.load(Ordering::Acquire) {
            return;
        }
        let next = b.txns.poll_timers(&b).await;
        let sleep_ms = next
            .map(|d| d - now_ms())
            .unwrap_or(MAX_TIMER_SLEEP_MS)
            .clamp(1, MAX_TIMER_SLEEP_MS);
        let wake = b.txns.wake.clone();
        drop(b);
        let notified = wake.notified();
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
        }
    }
}

fn append_records(
    broker: &Broker,
    partition: i32,
    records: &[TxnLogRecord],
) -> Result<Written, String> {
    let hosted = broker
        .replicas
        .partition(TRANSACTION_STATE_TOPIC, partition)
        .map_err(|e| format!("partition unavailable: {e}"))?;
    let now = now_ms();
    let mut buf = internal_topic::encode_batch(records.iter().map(TxnLogRecord::encode), now)?;
    // acks=1 for the append itself; the answer waits for the high watermark (`replicated`).
    let info = hosted
        .append_as_leader(broker.config.node_id, &mut buf, 1, now)
        .map_err(|e| format!("append: {e:?}"))?;
    Ok(Some((hosted, info.last_offset)))
}

/// Starts writing the markers of each ending transaction (one task each).
fn spawn_markers(broker: &Arc<Broker>, partition: i32, markers: Vec<MarkerRequest>) {
    if markers.is_empty() {
        return;
    }
    let Some(shard) = broker
        .txns
        .shards
        .lock()
        .get(&partition)
        .map(Arc::downgrade)
    else {
        return;
    };
    for m in markers {
        let b = broker.clone();
        let shard = shard.clone();
        tokio::spawn(async move { write_markers(b, partition, shard, m).await });
    }
}

/// Writes one transaction's markers to every partition of it, retrying failed partitions with backoff until all
/// are written (a partition whose topic was deleted counts as written, as in Kafka), then completes the
/// transaction (CompleteCommit / CompleteAbort). Stops when the shard is unloaded: its next coordinator resends
/// them.
async fn write_markers(broker: Arc<Broker>, partition: i32, shard: Weak<Shard>, m: MarkerRequest) {
    tracing::debug!(transactional_id = %m.transactional_id, producer_id = m.producer_id,
        producer_epoch = m.producer_epoch, commit = m.commit, partitions = m.partitions.len(),
        "writing transaction markers");
    let mut pending = m.partitions.clone();
    let mut backoff = MARKER_BACKOFF;
    loop {
        if broker.txns.stopping.load(Ordering::Acquire)
            || broker.txns.still_loaded(partition, &shard).is_none()
        {
            return;
        }
        pending = write_marker_round(&broker, &m, pending).await;
        if pending.is_empty() {
            break;
        }
        tracing::debug!(
            transactional_id = %m.transactional_id,
            remaining = pending.len(),
            "retrying transaction markers"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MARKER_BACKOFF_MAX);
    }
    let Some(s) = broker.txns.still_loaded(partition, &shard) else {
        return;
    };
    tracing::debug!(transactional_id = %m.transactional_id, "transaction markers written");
    let written = {
        let mut state = s.state.lock();
        let result = state.markers_written(
            &m.transactional_id,
            m.producer_id,
            m.producer_epoch,
            now_ms(),
        );
        broker.txns.commit(&broker, &s, &mut state, &result)
    };
    if let Ok(written) = written {
        let _ = broker.txns.replicated(written).await;
    }
}

/// One round of marker writes; returns the partitions that must be retried.
async fn write_marker_round(
    broker: &Arc<Broker>,
    m: &MarkerRequest,
    partitions: Vec<(String, i32)>,
) -> Vec<(String, i32)> {
    let image = broker.replicas.image();
    let me = broker.config.node_id;
    let mut retry = Vec::new();
    let mut remote: HashMap<i32, Vec<(String, i32)>> = HashMap::new();
    for (topic, p) in partitions {
        let Some(t) = image.topic(&topic) else {
            continue; // deleted: nothing to mark
        };
        let Some(reg) = usize::try_from(p).ok().and_then(|i| t.partitions.get(i)) else {
            continue;
        };
        if reg.leader == me {
            let code = crate::apis::write_txn_markers::write_local(
                broker,
                &topic,
                p,
                m.producer_id,
                m.producer_epoch,
                m.commit,
                m.coordinator_epoch,
            )
            .await;
            if code != 0 && !marker_done(code) {
                retry.push((topic, p));
            }
        } else if reg.leader < 0 {
            retry.push((topic, p));
        } else {
            remote.entry(reg.leader).or_default().push((topic, p));
        }
    }
    for (leader, parts) in remote {
        match send_markers(broker, leader, m, &parts).await {
            Ok(failed) => retry.extend(failed),
            Err(e) => {
                tracing::debug!(leader, error = %e, "WriteTxnMarkers failed");
                retry.extend(parts);
            }
        }
    }
    retry
}

/// Error codes after which a marker is not retried: the partition is gone, or a newer coordinator or producer
/// epoch already moved past this transaction (Kafka's `TransactionMarkerRequestCompletionHandler`).
fn marker_done(code: i16) -> bool {
    use sluice_protocol::ErrorCode;
    code == ErrorCode::UnknownTopicOrPartition.code()
        || code == ErrorCode::InvalidProducerEpoch.code()
        || code == ErrorCode::TransactionCoordinatorFenced.code()
}

/// Sends one WriteTxnMarkers to `leader`; returns the partitions it did not write.
async fn send_markers(
    broker: &Arc<Broker>,
    leader: i32,
    m: &MarkerRequest,
    parts: &[(String, i32)],
) -> Result<Vec<(String, i32)>, String> {
    let image = broker.replicas.image();
    let address = image
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .map(|b| format!("{}:{}", b.host, b.port))
        .ok_or_else(|| format!("broker {leader} is not live"))?;
    let mut topics: Vec<WritableTxnMarkerTopic> = Vec::new();
    for (topic, p) in parts {
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partition_indexes.push(*p),
            None => topics.push(
                WritableTxnMarkerTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partition_indexes(vec![*p]),
            ),
        }
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(m.producer_id))
            .with_producer_epoch(m.producer_epoch)
            .with_transaction_result(m.commit)
            .with_topics(topics)
            .with_coordinator_epoch(m.coordinator_epoch)]);
    let mut conns = broker.txns.connections.lock().await;
    let fresh = match conns.get(&leader) {
        Some((a, c)) => *a != address || !c.is_alive(),
        None => true,
    };
    if fresh {
        let client_id = format!("sluice-txn-markers-{}", broker.config.node_id);
        let c = Connection::connect(&address, &client_id, 5_000, MARKER_REQUEST_TIMEOUT_MS)
            .await
            .map_err(|e| e.to_string())?;
        conns.insert(leader, (address, c));
    }
    let Some((_, conn)) = conns.get(&leader) else {
        return Err("no connection".into());
    };
    let response = match conn.send(&request, Some(1)).await {
        Ok(r) => r,
        Err(e) => {
            conns.remove(&leader);
            return Err(e.to_string());
        }
    };
    drop(conns);
    let mut failed = Vec::new();
    let mut answered = 0usize;
    for marker in &response.markers {
        for t in &marker.topics {
            for p in &t.partitions {
                answered += 1;
                if p.error_code != 0 && !marker_done(p.error_code) {
                    failed.push((t.name.0.to_string(), p.partition_index));
                }
            }
        }
    }
    if answered < parts.len() {
        return Ok(parts.to_vec());
    }
    Ok(failed)
}
