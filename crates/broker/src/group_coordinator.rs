//! The group coordinator's tokio shell: owns one [`GroupCoordinatorShard`] per `__consumer_offsets` partition
//! this broker leads, creates that internal topic through the controller on first use (compacted,
//! `offsets.topic.num.partitions` partitions), appends the shards' records to the partition logs as magic-v2
//! record batches before any response of the same step is sent, replays the logs on start-up, runs the timers
//! (session and rebalance timeouts, the initial rebalance delay, offset expiry) and parks JoinGroup/SyncGroup
//! responses until their rebalance completes.
//!
//! Transactions (KIP-98): a TxnOffsetCommit's records are written as one transactional batch of the request's
//! producer id and epoch, so that the partition log tracks the open transaction (the LSO of `__consumer_offsets`),
//! and replayed as pending offsets once appended; the WriteTxnMarkers handler calls
//! [`GroupCoordinator::complete_transaction`], which appends the COMMIT or ABORT marker and replays it. Loading a
//! partition replays transactional batches and markers the same way.
//!
//! Locking: each shard sits behind a `parking_lot::Mutex` held only for synchronous work (the state machine step
//! and the local log append), never across an `.await`; holding it from a step's replay to its append keeps the
//! shard's replay order the log order. A write that fails drops the shard: it is reloaded from the log (its
//! durable state) on next use, and the waiting requests answer NOT_COORDINATOR so clients retry. A transactional
//! write or marker the log refuses for a fenced producer epoch changed nothing and answers
//! INVALID_PRODUCER_EPOCH.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    CreateTopicsRequest, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetDeleteRequest, OffsetDeleteResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use parking_lot::Mutex;
use sluice_coordinator::{
    partition_for, ClientInfo, CommittedOffset, CoordinatorRecord, CoordinatorResult, Delivery,
    GroupCoordinatorConfig, GroupCoordinatorShard, Parkable, CONSUMER_OFFSETS_TOPIC,
};
use sluice_protocol::{batch, ErrorCode};
use sluice_storage::records::ControlType;
use tokio::sync::{oneshot, Notify};

use crate::apis::now_ms;
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::replica_manager::ReplicaError;

/// How long the start-up load waits for the controller to unfence this broker.
const LOAD_WAIT_FOR_UNFENCE: std::time::Duration = std::time::Duration::from_secs(60);
/// `offsets.topic.segment.bytes` (Kafka's default, 100 MiB): small segments so compaction has work to do.
const OFFSETS_TOPIC_SEGMENT_BYTES: &str = "104857600";
/// How long creating `__consumer_offsets` (and seeing it in this node's image) may take.
const CREATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Upper bound of one read while loading a partition.
const LOAD_READ_BYTES: usize = 1 << 20;
/// The timer loop wakes at least this often.
const MAX_TIMER_SLEEP_MS: i64 = 1_000;

/// One shard and the requests parked on it.
struct ShardState {
    shard: GroupCoordinatorShard,
    joins: HashMap<(String, String), oneshot::Sender<JoinGroupResponse>>,
    syncs: HashMap<(String, String), oneshot::Sender<SyncGroupResponse>>,
}

/// The shard of one `__consumer_offsets` partition.
struct Shard {
    partition: i32,
    state: Mutex<ShardState>,
}

/// Why a group request could not reach its shard (mapped to Kafka codes at the wire edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CoordinatorError {
    /// The internal topic could not be created or its partition is not hosted here yet.
    #[error("the group coordinator is not available")]
    NotAvailable,
    /// Another broker leads the group's partition.
    #[error("this broker is not the group's coordinator")]
    NotCoordinator,
    /// The partition log refused a transactional write or marker: its producer epoch is older than the one the
    /// log knows for the producer (a fenced producer). Nothing was written.
    #[error("the producer epoch is older than the partition's")]
    InvalidProducerEpoch,
}

impl CoordinatorError {
    /// The Kafka error code.
    pub fn code(self) -> i16 {
        match self {
            CoordinatorError::NotAvailable => ErrorCode::CoordinatorNotAvailable.code(),
            CoordinatorError::NotCoordinator => ErrorCode::NotCoordinator.code(),
            CoordinatorError::InvalidProducerEpoch => ErrorCode::InvalidProducerEpoch.code(),
        }
    }
}

/// Why an append to `__consumer_offsets` failed.
#[derive(Debug)]
enum AppendFailure {
    /// The log refused a transactional batch or marker for its producer epoch; nothing was written.
    Fenced(String),
    /// Anything else (not the leader any more, storage): the shard is reloaded from the log.
    Failed(String),
}

impl std::fmt::Display for AppendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendFailure::Fenced(e) | AppendFailure::Failed(e) => f.write_str(e),
        }
    }
}

/// What a step wrote: the partition and the last offset, which its answer waits to see replicated.
type Written = Option<(Arc<crate::partition::Partition>, i64)>;

/// How long an answer waits for its records to reach every in-sync replica (Kafka's `offsets.commit.timeout.ms`).
const REPLICATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The group coordinator of this broker.
pub struct GroupCoordinator {
    config: GroupCoordinatorConfig,
    num_partitions: i32,
    replication_factor: i16,
    shards: Mutex<HashMap<i32, Arc<Shard>>>,
    /// Serializes topic creation and partition loads (held across `.await`: a tokio mutex).
    loading: tokio::sync::Mutex<()>,
    /// Wakes the timer loop after a step changed deadlines.
    wake: Arc<Notify>,
    /// True while the start-up load of an existing `__consumer_offsets` runs (ListGroups would miss groups).
    starting: std::sync::atomic::AtomicBool,
    /// Set by [`GroupCoordinator::stop`]: the timer loop fires no more timers.
    stopping: std::sync::atomic::AtomicBool,
    /// The start-up load and timer loop task, awaited by [`GroupCoordinator::stop`].
    background: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The broker, set by [`GroupCoordinator::start`], for [`GroupCoordinator::complete_transaction`] (called
    /// without one by the WriteTxnMarkers handler).
    broker: Mutex<Weak<Broker>>,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator")
            .field("num_partitions", &self.num_partitions)
            .field("loaded", &self.shards.lock().len())
            .finish_non_exhaustive()
    }
}

impl GroupCoordinator {
    /// A coordinator with the broker's group settings (`group.*`, `offsets.*` keys of [`BrokerConfig`]).
    pub fn new(config: &BrokerConfig) -> GroupCoordinator {
        // Every group key is a validated, typed BrokerConfig field (ranges checked at load time).
        let group_config = GroupCoordinatorConfig {
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: i64::try_from(config.group_initial_rebalance_delay_ms)
                .unwrap_or(i64::MAX),
            max_group_size: usize::try_from(config.group_max_size).unwrap_or(usize::MAX),
            offsets_retention_ms: i64::from(config.offsets_retention_minutes)
                .saturating_mul(60_000),
            offsets_retention_check_interval_ms: config.offsets_retention_check_interval_ms,
            offset_metadata_max_bytes: usize::try_from(config.offset_metadata_max_bytes)
                .unwrap_or(0),
        };
        GroupCoordinator {
            config: group_config,
            num_partitions: config.offsets_topic_num_partitions.max(1),
            replication_factor: config.offsets_topic_replication_factor,
            shards: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            starting: std::sync::atomic::AtomicBool::new(false),
            stopping: std::sync::atomic::AtomicBool::new(false),
            background: Mutex::new(None),
            broker: Mutex::new(Weak::new()),
        }
    }

    /// The `__consumer_offsets` partition of a group.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.num_partitions)
    }

    /// Starts the background work (once this broker is unfenced): loads every partition of an existing `__consumer_offsets` (so that groups,
    /// offsets and their timers come back after a restart) and runs the timer loop until the broker is dropped.
    pub fn start(broker: &Arc<Broker>) {
        let weak = Arc::downgrade(broker);
        *broker.groups.broker.lock() = weak.clone();
        let existing = broker
            .controller
            .image()
            .topic(CONSUMER_OFFSETS_TOPIC)
            .is_some();
        broker.groups.starting.store(existing, Ordering::Release);
        let task = tokio::spawn(async move {
            if let Some(b) = weak.upgrade() {
                if existing {
                    // A restarted broker hosts no partition until its new registration is committed (and its
                    // partitions lose their leader until the controller unfences it). Loading before that would
                    // find them not led here and skip them (ListGroups answers COORDINATOR_LOAD_IN_PROGRESS
                    // meanwhile).
                    if !b.lifecycle.wait_unfenced(LOAD_WAIT_FOR_UNFENCE).await
                        || !b.replicas.wait_active(LOAD_WAIT_FOR_UNFENCE).await
                    {
                        tracing::warn!(
                            "not unfenced and hosting partitions within {LOAD_WAIT_FOR_UNFENCE:?}; loading \
                             {CONSUMER_OFFSETS_TOPIC} anyway"
                        );
                    }
                    for p in 0..b.groups.num_partitions {
                        if let Err(e) = b.groups.load_partition(&b, p).await {
                            tracing::warn!("loading {CONSUMER_OFFSETS_TOPIC}-{p}: {e}");
                        }
                    }
                }
                b.groups.starting.store(false, Ordering::Release);
            }
            timer_loop(weak).await;
        });
        *broker.groups.background.lock() = Some(task);
    }

    /// True once [`GroupCoordinator::stop`] has run and the timer loop has ended.
    pub fn timers_stopped(&self) -> bool {
        self.stopping.load(Ordering::Acquire) && self.background.lock().is_none()
    }

    /// Stops the timer loop and waits for it, so that no timer appends to `__consumer_offsets` after the logs
    /// close at shutdown (such an append failed with a storage error and its group change was lost). Requests
    /// still in flight may append until the logs close, as any produce may.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
        let task = self.background.lock().take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!("group coordinator background task panicked: {e}");
                }
            }
        }
    }

    /// Ensures `__consumer_offsets` exists (creating it through the controller) and returns the shard of
    /// `group_id`'s partition, loading it from its log on first use.
    async fn shard(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
    ) -> Result<Arc<Shard>, CoordinatorError> {
        let partition = self.partition_for(group_id);
        if let Some(s) = self.shards.lock().get(&partition) {
            return Ok(s.clone());
        }
        self.load_partition(broker, partition).await
    }

    /// Ensures `__consumer_offsets` exists, creating it as Kafka does on first use: with
    /// `offsets.topic.num.partitions` partitions and `offsets.topic.replication.factor` replicas (capped at the live
    /// brokers), compacted. Through the local controller when this node is the active one (or the embedded single
    /// node), else with a CreateTopics to the active controller, then waiting (briefly) for the topic to reach this
    /// node's image. `Err` is retriable (COORDINATOR_NOT_AVAILABLE).
    pub(crate) async fn ensure_topic(&self, broker: &Arc<Broker>) -> Result<(), CoordinatorError> {
        let mut images = broker.controller.subscribe();
        if images
            .borrow_and_update()
            .topic(CONSUMER_OFFSETS_TOPIC)
            .is_some()
        {
            return Ok(());
        }
        let live = crate::apis::metadata::live_brokers(&broker.controller.image()).count();
        let replication_factor = self
            .replication_factor
            .clamp(1, i16::try_from(live.max(1)).unwrap_or(i16::MAX));
        let configs = [
            ("cleanup.policy", "compact"),
            ("segment.bytes", OFFSETS_TOPIC_SEGMENT_BYTES),
            ("compression.type", "producer"),
        ];
        let local = broker.controller.is_active() || !broker.controller_channel.has_voters();
        let error_code = if local {
            let topic = sluice_metadata::NewTopic {
                name: CONSUMER_OFFSETS_TOPIC.to_string(),
                num_partitions: self.num_partitions,
                replication_factor,
                assignments: Vec::new(),
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                    .collect(),
            };
            let outcomes = broker.controller.create_topics(vec![topic], false).await;
            outcomes.first().map_or(-1, |o| o.error_code)
        } else {
            let request = CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(CONSUMER_OFFSETS_TOPIC)))
                    .with_num_partitions(self.num_partitions)
                    .with_replication_factor(replication_factor)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(StrBytes::from_static_str(k))
                                    .with_value(Some(StrBytes::from_static_str(v)))
                            })
                            .collect(),
                    )])
                .with_timeout_ms(i32::try_from(CREATE_TIMEOUT.as_millis()).unwrap_or(i32::MAX));
            match broker
                .controller_channel
                .send(&request, CREATE_TIMEOUT)
                .await
            {
                Ok(response) => response.topics.first().map_or(-1, |t| t.error_code),
                Err(e) => {
                    tracing::warn!(error = %e, "creating {CONSUMER_OFFSETS_TOPIC} through the active controller failed");
                    return Err(CoordinatorError::NotAvailable);
                }
            }
        };
        if error_code == 0 {
            tracing::info!(
                partitions = self.num_partitions,
                replication_factor,
                "created {CONSUMER_OFFSETS_TOPIC}"
            );
        } else if error_code != ErrorCode::TopicAlreadyExists.code() {
            tracing::warn!(error_code, "creating {CONSUMER_OFFSETS_TOPIC} failed");
            return Err(CoordinatorError::NotAvailable);
        }
        // The controller answered once the topic was committed; this node's image may follow a moment later.
        let arrived = tokio::time::timeout(CREATE_TIMEOUT, async {
            loop {
                if images
                    .borrow_and_update()
                    .topic(CONSUMER_OFFSETS_TOPIC)
                    .is_some()
                {
                    return true;
                }
                if images.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        match arrived {
            Ok(true) => Ok(()),
            _ => Err(CoordinatorError::NotAvailable),
        }
    }

    /// Loads one partition: replays its log into a fresh shard.
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
            .partition(CONSUMER_OFFSETS_TOPIC, partition)
            .map_err(coordinator_error)?;
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        let mut shard = GroupCoordinatorShard::new(self.config.clone(), seed);
        let log = hosted.log.clone();
        let entries = tokio::task::spawn_blocking(move || read_records(&log))
            .await
            .map_err(|_| CoordinatorError::NotAvailable)?;
        let count = entries.len();
        for entry in &entries {
            match entry {
                LogEntry::Record {
                    producer_id: None,
                    record,
                } => shard.replay(record),
                LogEntry::Record {
                    producer_id: Some(producer_id),
                    record,
                } => shard.replay_transactional(*producer_id, record),
                LogEntry::EndTxn {
                    producer_id,
                    commit,
                } => shard.replay_end_transaction(*producer_id, *commit),
            }
        }
        shard.finish_loading(now_ms());
        let groups = shard.group_ids().count();
        if count > 0 {
            tracing::info!(
                "loaded {CONSUMER_OFFSETS_TOPIC}-{partition}: {count} records, {groups} groups"
            );
        } else {
            tracing::debug!("loaded {CONSUMER_OFFSETS_TOPIC}-{partition}: empty");
        }
        let s = Arc::new(Shard {
            partition,
            state: Mutex::new(ShardState {
                shard,
                joins: HashMap::new(),
                syncs: HashMap::new(),
            }),
        });
        self.shards.lock().insert(partition, s.clone());
        self.wake.notify_one();
        Ok(s)
    }

    /// Appends a step's records to the shard's partition, then completes its deliveries. On a write failure the
    /// shard is dropped (reloaded from the log on next use) and `Err` is returned.
    fn commit<T>(
        &self,
        broker: &Broker,
        shard: &Shard,
        state: &mut ShardState,
        result: &CoordinatorResult<T>,
    ) -> Result<Written, CoordinatorError> {
        let mut written = None;
        if !result.records.is_empty() {
            match append_records(broker, shard.partition, &result.records, None) {
                Ok(w) => written = Some(w),
                Err(e) => return Err(self.write_failed(shard, state, e)),
            }
        }
        for d in &result.deliveries {
            match d {
                Delivery::Join {
                    group_id,
                    member_id,
                    response,
                } => {
                    if let Some(tx) = state.joins.remove(&(group_id.clone(), member_id.clone())) {
                        let _ = tx.send(response.clone());
                    }
                }
                Delivery::Sync {
                    group_id,
                    member_id,
                    response,
                } => {
                    if let Some(tx) = state.syncs.remove(&(group_id.clone(), member_id.clone())) {
                        let _ = tx.send(response.clone());
                    }
                }
            }
        }
        self.wake.notify_one();
        Ok(written)
    }

    /// Handles a failed append: a fenced producer epoch changed nothing (INVALID_PRODUCER_EPOCH); any other
    /// failure drops the shard, whose state may be ahead of its log, so that it is reloaded on next use.
    fn write_failed(
        &self,
        shard: &Shard,
        state: &mut ShardState,
        failure: AppendFailure,
    ) -> CoordinatorError {
        match failure {
            AppendFailure::Fenced(e) => {
                tracing::debug!(
                    "{CONSUMER_OFFSETS_TOPIC}-{} refused a transactional write: {e}",
                    shard.partition
                );
                CoordinatorError::InvalidProducerEpoch
            }
            AppendFailure::Failed(e) => {
                tracing::error!(
                    "writing to {CONSUMER_OFFSETS_TOPIC}-{}: {e}; reloading the partition",
                    shard.partition
                );
                state.joins.clear();
                state.syncs.clear();
                self.shards.lock().remove(&shard.partition);
                CoordinatorError::NotCoordinator
            }
        }
    }

    /// Waits until what a step wrote is on every in-sync replica of its partition: the step's own answer goes out
    /// only then (a commit acknowledged before would be lost with its leader). Leadership lost meanwhile is
    /// NOT_COORDINATOR (the client finds the new coordinator); a timeout or too few in-sync replicas is
    /// COORDINATOR_NOT_AVAILABLE (retried).
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

    /// Unloads the shards of `__consumer_offsets` partitions this broker no longer leads (Kafka's
    /// `onResignation`): their parked members get NOT_COORDINATOR and go to the new coordinator, which loads the
    /// groups from its replica of the log.
    pub(crate) fn unload_lost(&self, broker: &Broker) {
        let lost: Vec<i32> = self
            .shards
            .lock()
            .keys()
            .copied()
            .filter(|&p| {
                broker
                    .replicas
                    .partition(CONSUMER_OFFSETS_TOPIC, p)
                    .is_err()
            })
            .collect();
        for p in lost {
            if let Some(shard) = self.shards.lock().remove(&p) {
                let mut state = shard.state.lock();
                state.joins.clear();
                state.syncs.clear();
                tracing::info!(
                    partition = p,
                    "no longer the leader of {CONSUMER_OFFSETS_TOPIC}-{p}; its groups are unloaded"
                );
            }
        }
    }

    /// JoinGroup: answers at once or parks until the join completes.
    pub(crate) async fn join_group(
        &self,
        broker: &Arc<Broker>,
        client: ClientInfo,
        request: JoinGroupRequest,
    ) -> Result<JoinGroupResponse, CoordinatorError> {
        self.answer_or_park(
            broker,
            &request.group_id.0,
            |state| state.shard.join_group(now_ms(), &client, &request),
            |state| &mut state.joins,
        )
        .await
    }

    /// SyncGroup: answers at once or parks until the leader's assignment arrives.
    pub(crate) async fn sync_group(
        &self,
        broker: &Arc<Broker>,
        client: ClientInfo,
        request: SyncGroupRequest,
    ) -> Result<SyncGroupResponse, CoordinatorError> {
        self.answer_or_park(
            broker,
            &request.group_id.0,
            |state| state.shard.sync_group(now_ms(), &client, &request),
            |state| &mut state.syncs,
        )
        .await
    }

    /// Runs a step that may park (JoinGroup, SyncGroup) and commits it. A parked member's response arrives on
    /// a channel registered in `waiters` before the commit, so a delivery the commit completes finds it; the
    /// shard lock is released before waiting.
    async fn answer_or_park<T: Clone>(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        step: impl FnOnce(&mut ShardState) -> CoordinatorResult<Parkable<T>>,
        waiters: impl FnOnce(&mut ShardState) -> &mut HashMap<(String, String), oneshot::Sender<T>>,
    ) -> Result<T, CoordinatorError> {
        let shard = self.shard(broker, group_id).await?;
        let (rx, written) = {
            let mut state = shard.state.lock();
            let result = step(&mut state);
            match &result.response {
                Parkable::Now(r) => {
                    let response = r.clone();
                    let written = self.commit(broker, &shard, &mut state, &result)?;
                    (Err(response), written)
                }
                Parkable::Parked { member_id } => {
                    let (tx, rx) = oneshot::channel();
                    waiters(&mut state).insert((group_id.to_string(), member_id.clone()), tx);
                    let written = self.commit(broker, &shard, &mut state, &result)?;
                    (Ok(rx), written)
                }
            }
        };
        self.replicated(written).await?;
        match rx {
            Err(response) => Ok(response),
            Ok(rx) => rx.await.map_err(|_| CoordinatorError::NotCoordinator),
        }
    }

    /// Heartbeat.
    pub(crate) async fn heartbeat(
        &self,
        broker: &Arc<Broker>,
        request: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, CoordinatorError> {
        let shard = self.shard(broker, &request.group_id.0).await?;
        let (result, written) = {
            let mut state = shard.state.lock();
            let result = state.shard.heartbeat(now_ms(), &request);
            let written = self.commit(broker, &shard, &mut state, &result)?;
            (result, written)
        };
        self.replicated(written).await?;
        Ok(result.response)
    }

    /// LeaveGroup.
    pub(crate) async fn leave_group(
        &self,
        broker: &Arc<Broker>,
        api_version: i16,
        request: LeaveGroupRequest,
    ) -> Result<LeaveGroupResponse, CoordinatorError> {
        let shard = self.shard(broker, &request.group_id.0).await?;
        let (result, written) = {
            let mut state = shard.state.lock();
            let result = state.shard.leave_group(now_ms(), api_version, &request);
            let written = self.commit(broker, &shard, &mut state, &result)?;
            (result, written)
        };
        self.replicated(written).await?;
        Ok(result.response)
    }

    /// OffsetCommit.
    pub(crate) async fn offset_commit(
        &self,
        broker: &Arc<Broker>,
        api_version: i16,
        request: OffsetCommitRequest,
    ) -> Result<OffsetCommitResponse, CoordinatorError> {
        let shard = self.shard(broker, &request.group_id.0).await?;
        let image = broker.controller.image();
        let known = |topic: &str, partition: i32| {
            image
                .topic(topic)
                .is_some_and(|t| usize::try_from(partition).is_ok_and(|p| p < t.partitions.len()))
        };
        let (result, written) = {
            let mut state = shard.state.lock();
            let result = state
                .shard
                .offset_commit(now_ms(), api_version, &request, &known);
            let written = self.commit(broker, &shard, &mut state, &result)?;
            (result, written)
        };
        self.replicated(written).await?;
        Ok(result.response)
    }

    /// OffsetFetch for one group (`None` topics: every committed offset). With `require_stable` (v7+, KIP-447)
    /// a partition with a pending transactional offset answers UNSTABLE_OFFSET_COMMIT.
    pub(crate) async fn offset_fetch(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
        require_stable: bool,
    ) -> Result<Vec<CommittedOffset>, CoordinatorError> {
        let shard = self.shard(broker, group_id).await?;
        let state = shard.state.lock();
        Ok(state
            .shard
            .offset_fetch(group_id, topics.as_deref(), require_stable))
    }

    /// TxnOffsetCommit (KIP-98): the offsets are written in one transactional batch of the request's producer id
    /// and epoch (Kafka's `scheduleTransactionalWriteOperation`), then replayed as pending offsets of that
    /// producer; they become committed when [`GroupCoordinator::complete_transaction`] writes the COMMIT marker.
    /// The answer waits for the batch to be replicated, as OffsetCommit's does.
    ///
    /// Kafka 4 first verifies with the transaction coordinator that the partition was added to the transaction
    /// (KIP-890 part 1); here the log's producer state only refuses an older producer epoch
    /// (INVALID_PRODUCER_EPOCH for every partition).
    pub(crate) async fn txn_offset_commit(
        &self,
        broker: &Arc<Broker>,
        request: TxnOffsetCommitRequest,
    ) -> Result<TxnOffsetCommitResponse, CoordinatorError> {
        let shard = self.shard(broker, &request.group_id.0).await?;
        let producer_id = request.producer_id.0;
        let producer = Some((producer_id, request.producer_epoch));
        let (response, written) = {
            let mut state = shard.state.lock();
            let result = state.shard.txn_offset_commit(now_ms(), &request);
            let mut written = None;
            if !result.records.is_empty() {
                match append_records(broker, shard.partition, &result.records, producer) {
                    Ok(w) => written = Some(w),
                    Err(e) => return Err(self.write_failed(&shard, &mut state, e)),
                }
                // Replayed only once appended: a refused batch leaves no pending offset behind.
                for record in &result.records {
                    state.shard.replay_transactional(producer_id, record);
                }
            }
            (result.response, written)
        };
        self.replicated(written).await?;
        Ok(response)
    }

    /// Writes the COMMIT (`commit`) or ABORT marker of `producer_id`'s transaction to `__consumer_offsets`
    /// partition `partition` and applies it to the partition's shard: the transaction's pending offsets become
    /// committed or are dropped. Called by the WriteTxnMarkers handler for each `__consumer_offsets` partition of
    /// a transaction (Kafka's `GroupCoordinator.completeTransaction`); `coordinator_epoch` is the transaction
    /// coordinator's, written into the marker. The marker is appended under the shard's lock, so it is ordered
    /// with the shard's own writes, and the call returns once it is replicated, as other writes answer. A marker
    /// for a transaction without pending offsets here is written all the same (the log's transaction ends).
    ///
    /// A partition this broker leads but has not loaded yet (no group request reached it since it became leader)
    /// is loaded first. Errors: [`CoordinatorError::NotCoordinator`] when this broker does not lead the partition
    /// (or stops leading it), [`CoordinatorError::NotAvailable`] when the marker is not replicated in time,
    /// [`CoordinatorError::InvalidProducerEpoch`] when the log refuses the marker's producer epoch.
    pub async fn complete_transaction(
        &self,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
    ) -> Result<(), CoordinatorError> {
        let broker = self
            .broker
            .lock()
            .upgrade()
            .ok_or(CoordinatorError::NotCoordinator)?;
        let loaded = self.shards.lock().get(&partition).cloned();
        let shard = match loaded {
            Some(shard) => shard,
            None => {
                // Only a partition led here is loaded (never create `__consumer_offsets` for a marker).
                broker
                    .replicas
                    .partition(CONSUMER_OFFSETS_TOPIC, partition)
                    .map_err(|e| match e {
                        ReplicaError::NotLeader | ReplicaError::UnknownTopicOrPartition => {
                            CoordinatorError::NotCoordinator
                        }
                        ReplicaError::Storage => CoordinatorError::NotAvailable,
                    })?;
                self.load_partition(&broker, partition).await?
            }
        };
        let written = {
            let mut state = shard.state.lock();
            let mut marker = sluice_storage::records::control_batch(
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
                now_ms(),
            );
            match append_batch(&broker, shard.partition, &mut marker) {
                Ok(w) => {
                    state.shard.replay_end_transaction(producer_id, commit);
                    w
                }
                Err(e) => return Err(self.write_failed(&shard, &mut state, e)),
            }
        };
        self.replicated(Some(written)).await
    }

    /// OffsetDelete.
    pub(crate) async fn offset_delete(
        &self,
        broker: &Arc<Broker>,
        request: OffsetDeleteRequest,
    ) -> Result<OffsetDeleteResponse, CoordinatorError> {
        let shard = self.shard(broker, &request.group_id.0).await?;
        let (result, written) = {
            let mut state = shard.state.lock();
            let result = state.shard.offset_delete(&request);
            let written = self.commit(broker, &shard, &mut state, &result)?;
            (result, written)
        };
        self.replicated(written).await?;
        Ok(result.response)
    }

    /// DescribeGroups for one group.
    pub(crate) async fn describe_group(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
    ) -> Result<DescribedGroup, CoordinatorError> {
        let shard = self.shard(broker, group_id).await?;
        let state = shard.state.lock();
        Ok(state.shard.describe_group(group_id))
    }

    /// DeleteGroups for one group; the Kafka error code.
    pub(crate) async fn delete_group(
        &self,
        broker: &Arc<Broker>,
        group_id: &str,
    ) -> Result<i16, CoordinatorError> {
        let shard = self.shard(broker, group_id).await?;
        let (result, written) = {
            let mut state = shard.state.lock();
            let result = state.shard.delete_group(group_id);
            let written = self.commit(broker, &shard, &mut state, &result)?;
            (result, written)
        };
        self.replicated(written).await?;
        Ok(result.response)
    }

    /// ListGroups over every loaded shard; COORDINATOR_LOAD_IN_PROGRESS while the start-up load runs.
    pub(crate) fn list_groups(
        &self,
        states: &[String],
        types: &[String],
    ) -> Result<Vec<ListedGroup>, i16> {
        if self.starting.load(Ordering::Acquire) {
            return Err(ErrorCode::CoordinatorLoadInProgress.code());
        }
        let shards: Vec<Arc<Shard>> = self.shards.lock().values().cloned().collect();
        let mut out = Vec::new();
        for s in shards {
            out.extend(s.state.lock().shard.list_groups(states, types));
        }
        out.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
        Ok(out)
    }

    /// Fires due timers on every shard; returns the next deadline.
    fn poll_timers(&self, broker: &Broker) -> Option<i64> {
        let shards: Vec<Arc<Shard>> = self.shards.lock().values().cloned().collect();
        let mut next: Option<i64> = None;
        for s in shards {
            let mut state = s.state.lock();
            let now = now_ms();
            if state.shard.next_deadline_ms().is_some_and(|d| d <= now) {
                let result = state.shard.poll(now);
                // Timer steps (expired members) have nobody to answer: nothing waits for replication.
                if self.commit(broker, &s, &mut state, &result).is_err() {
                    continue;
                }
            }
            if let Some(d) = state.shard.next_deadline_ms() {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        next
    }
}

/// Runs the shards' timers until the broker is gone.
async fn timer_loop(broker: Weak<Broker>) {
    loop {
        let Some(b) = broker.upgrade() else {
            return;
        };
        if b.groups.stopping.load(Ordering::Acquire) {
            return;
        }
        let next = b.groups.poll_timers(&b);
        let sleep_ms = next
            .map(|d| d - now_ms())
            .unwrap_or(MAX_TIMER_SLEEP_MS)
            .clamp(1, MAX_TIMER_SLEEP_MS);
        let wake = b.groups.wake.clone();
        drop(b);
        let notified = wake.notified();
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(sleep_ms as u64)) => {}
        }
    }
}

/// The coordinator error for a `__consumer_offsets` partition the replica manager cannot give.
fn coordinator_error(e: ReplicaError) -> CoordinatorError {
    match e {
        ReplicaError::NotLeader => CoordinatorError::NotCoordinator,
        ReplicaError::UnknownTopicOrPartition | ReplicaError::Storage => {
            CoordinatorError::NotAvailable
        }
    }
}

/// Encodes records as one uncompressed magic-v2 batch (transactional, of `producer` = (id, epoch), when given) and
/// appends it as leader; returns the partition and the last offset written, for [`GroupCoordinator::replicated`].
fn append_records(
    broker: &Broker,
    partition: i32,
    records: &[CoordinatorRecord],
    producer: Option<(i64, i16)>,
) -> Result<(Arc<crate::partition::Partition>, i64), AppendFailure> {
    let mut buf = encode_batch(records, now_ms(), producer).map_err(AppendFailure::Failed)?;
    append_batch(broker, partition, &mut buf)
}

/// Appends one encoded batch (records or a transaction marker) to `__consumer_offsets` partition `partition`
/// as leader; returns the partition and the last offset written.
fn append_batch(
    broker: &Broker,
    partition: i32,
    batch: &mut [u8],
) -> Result<(Arc<crate::partition::Partition>, i64), AppendFailure> {
    use crate::partition::ProduceError;
    use sluice_storage::{AppendError, ProducerError};
    let hosted = broker
        .replicas
        .partition(CONSUMER_OFFSETS_TOPIC, partition)
        .map_err(|e| AppendFailure::Failed(format!("partition unavailable: {e}")))?;
    // The append itself is acks=1 (a min.insync.replicas refusal must not drop the shard); the answer waits for
    // the high watermark (`GroupCoordinator::replicated`), as Kafka's coordinator writes with acks=all.
    match hosted.append_as_leader(broker.config.node_id, batch, 1, now_ms()) {
        Ok(info) => Ok((hosted, info.last_offset)),
        Err(ProduceError::Append(AppendError::Producer(
            e @ ProducerError::InvalidProducerEpoch { .. },
        ))) => Err(AppendFailure::Fenced(e.to_string())),
        Err(ProduceError::InvalidProducerEpoch(e)) => Err(AppendFailure::Fenced(e)),
        Err(e) => Err(AppendFailure::Failed(format!("append: {e:?}"))),
    }
}

/// Encodes records as one uncompressed magic-v2 batch (offsets from 0; the log assigns the real ones). With
/// `producer`, the batch is transactional (attribute bit 4) and carries the producer id and epoch, as Kafka's
/// coordinator runtime writes a transactional offset commit; without, producer id -1.
///
/// The base sequence is -1 (no sequence) in both cases. Kafka's runtime writes 0 for a transactional batch and
/// appends it with origin COORDINATOR, which skips the sequence checks of client batches; our log checks the
/// sequences of every batch that has one, so a batch without one is how the same append passes. The encoder keeps
/// records in one batch while `offset - sequence` stays constant and derives the base sequence from the first
/// record, so record `i` carries sequence `i - 1`.
fn encode_batch(
    records: &[CoordinatorRecord],
    now: i64,
    producer: Option<(i64, i16)>,
) -> Result<BytesMut, String> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let batch: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (key, value) = r.encode();
            let offset = i64::try_from(i).unwrap_or(i64::MAX);
            Record {
                transactional: producer.is_some(),
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset,
                sequence: (offset as i32).wrapping_sub(1),
                timestamp: now,
                key: Some(key),
                value,
                headers: Default::default(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        batch.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("encoding: {e}"))?;
    Ok(buf)
}

/// One thing a load replays, in log order.
#[derive(Debug, Clone, PartialEq)]
enum LogEntry {
    /// A record; `producer_id` is the batch's when the batch is transactional.
    Record {
        producer_id: Option<i64>,
        record: CoordinatorRecord,
    },
    /// A transaction marker (control batch) of a producer: COMMIT or ABORT.
    EndTxn { producer_id: i64, commit: bool },
}

/// Reads every record and transaction marker of a `__consumer_offsets` partition log, in offset order.
/// Unreadable batches are skipped with a warning (the log's own recovery already dropped torn or corrupt tails).
fn read_records(log: &sluice_storage::Log) -> Vec<LogEntry> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let data = match log.read(offset, LOAD_READ_BYTES, end) {
            Ok(r) => r.data,
            Err(e) => {
                tracing::warn!("reading {CONSUMER_OFFSETS_TOPIC} at {offset}: {e:?}");
                break;
            }
        };
        if data.is_empty() {
            break;
        }
        let before = offset;
        if let Some(next) = decode_chunk(&data, &mut out) {
            offset = offset.max(next);
        }
        if offset == before {
            break;
        }
    }
    out
}

/// Decodes the whole batches at the start of `data` into `out`; returns the offset after the last batch seen.
/// A control batch becomes the COMMIT or ABORT of its producer (an unknown control type is skipped, as Kafka
/// does); the records of a transactional batch carry its producer id. Batches whose record count cannot fit
/// their size (which would make the decoder allocate for it) are skipped; an unreadable record or batch is
/// skipped with a warning.
fn decode_chunk(data: &[u8], out: &mut Vec<LogEntry>) -> Option<i64> {
    let mut next_offset = None;
    let mut rest: &[u8] = data;
    while let Some(total) = batch::batch_size(rest) {
        if total > rest.len() {
            break;
        }
        let (batch, tail) = rest.split_at(total);
        rest = tail;
        let Ok(header) = batch::BatchHeader::new(batch) else {
            break;
        };
        next_offset = Some(header.next_offset());
        if header.is_control() {
            let commit = match sluice_storage::records::control_type(batch) {
                Some(ControlType::Commit) => true,
                Some(ControlType::Abort) => false,
                None => continue,
            };
            out.push(LogEntry::EndTxn {
                producer_id: header.producer_id(),
                commit,
            });
            continue;
        }
        let record_count = header.record_count();
        // Each record takes at least 7 bytes.
        let plausible = usize::try_from(record_count).is_ok_and(|c| c <= total / 7);
        if !plausible {
            continue;
        }
        let producer_id = header.is_transactional().then(|| header.producer_id());
        let mut bytes = Bytes::copy_from_slice(batch);
        match RecordBatchDecoder::decode(&mut bytes) {
            Ok(set) => {
                for r in set.records {
                    match CoordinatorRecord::decode(r.key.as_deref(), r.value.as_deref()) {
                        Ok(Some(record)) => out.push(LogEntry::Record {
                            producer_id,
                            record,
                        }),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(
                            "skipping unreadable {CONSUMER_OFFSETS_TOPIC} record at {}: {e}",
                            r.offset
                        ),
                    }
                }
            }
            Err(e) => tracing::warn!(
                "skipping unreadable {CONSUMER_OFFSETS_TOPIC} batch at {}: {e}",
                header.base_offset()
            ),
        }
    }
    next_offset
}

/// The client's host as Kafka prints it (`/ip`).
pub(crate) fn client_host(peer: &std::net::SocketAddr) -> String {
    format!("/{}", peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_coordinator::OffsetCommitValue;

    fn commit(group: &str, offset: i64) -> CoordinatorRecord {
        CoordinatorRecord::OffsetCommit {
            group_id: group.into(),
            topic: "t".into(),
            partition: 0,
            value: Some(OffsetCommitValue {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 5,
                expire_timestamp_ms: -1,
            }),
        }
    }

    fn plain(records: &[CoordinatorRecord]) -> Vec<LogEntry> {
        records
            .iter()
            .map(|r| LogEntry::Record {
                producer_id: None,
                record: r.clone(),
            })
            .collect()
    }

    #[test]
    fn records_written_as_batches_are_read_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log =
            sluice_storage::Log::open(dir.path().join("__consumer_offsets-0"), Default::default())
                .expect("open");
        let first = vec![commit("a", 1), commit("b", 2)];
        let second = vec![
            CoordinatorRecord::OffsetCommit {
                group_id: "a".into(),
                topic: "t".into(),
                partition: 0,
                value: None,
            },
            CoordinatorRecord::GroupMetadata {
                group_id: "a".into(),
                value: None,
            },
        ];
        for records in [&first, &second] {
            let mut batch = encode_batch(records, 10, None).expect("encode");
            log.append_as_leader(&mut batch, 0, 10).expect("append");
        }
        let read = read_records(&log);
        assert_eq!(read, plain(&[first, second].concat()));
        // One batch per write, as Kafka's coordinator runtime writes them.
        assert_eq!(log.log_end_offset(), 4);
        let data = log.read(0, 1 << 20, 4).expect("read").data;
        let h = batch::BatchHeader::new(&data).expect("header");
        assert_eq!((h.base_offset(), h.record_count()), (0, 2));
    }

    #[test]
    fn a_batch_claiming_too_many_records_is_skipped_not_decoded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log =
            sluice_storage::Log::open(dir.path().join("__consumer_offsets-0"), Default::default())
                .expect("open");
        let mut good = encode_batch(&[commit("a", 1)], 10, None).expect("encode");
        log.append_as_leader(&mut good, 0, 10).expect("append");
        assert_eq!(read_records(&log).len(), 1);
        // The same bytes with an absurd record count must not reach the decoder's allocation.
        let mut bad = encode_batch(&[commit("b", 2)], 10, None)
            .expect("encode")
            .to_vec();
        bad[..8].copy_from_slice(&1i64.to_be_bytes());
        bad[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let mut chunk = log.read(0, 1 << 20, 1).expect("read").data.to_vec();
        chunk.extend_from_slice(&bad);
        let mut out = Vec::new();
        assert_eq!(
            decode_chunk(&chunk, &mut out),
            Some(2),
            "the bad batch is stepped over"
        );
        assert_eq!(out, plain(&[commit("a", 1)]));
        // A torn tail (half a batch) stops the walk.
        let mut out = Vec::new();
        assert_eq!(decode_chunk(&chunk[..chunk.len() - 5], &mut out), Some(1));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn transactional_batches_and_markers_are_read_back_with_their_producer() {
        // A TxnOffsetCommit's records: one transactional batch (attribute bit 4) of the producer, no sequence.
        let records = vec![commit("a", 1), commit("a", 2)];
        let batch = encode_batch(&records, 10, Some((7, 3))).expect("encode");
        let h = batch::BatchHeader::new(&batch).expect("header");
        assert!(h.is_transactional() && !h.is_control());
        assert_eq!(
            (
                h.producer_id(),
                h.producer_epoch(),
                h.base_sequence(),
                h.record_count()
            ),
            (7, 3, -1, 2)
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let log =
            sluice_storage::Log::open(dir.path().join("__consumer_offsets-0"), Default::default())
                .expect("open");
        let mut plain_batch = encode_batch(&[commit("b", 5)], 10, None).expect("encode");
        log.append_as_leader(&mut plain_batch, 0, 10)
            .expect("append");
        let mut txn_batch = batch.clone();
        log.append_as_leader(&mut txn_batch, 0, 10).expect("append");
        let mut marker = sluice_storage::records::control_batch(7, 3, true, 0, 11);
        log.append_as_leader(&mut marker, 0, 11).expect("append");
        let mut txn_batch = encode_batch(&[commit("a", 9)], 12, Some((7, 3))).expect("encode");
        log.append_as_leader(&mut txn_batch, 0, 12).expect("append");
        let mut marker = sluice_storage::records::control_batch(7, 3, false, 0, 13);
        log.append_as_leader(&mut marker, 0, 13).expect("append");
        let tx = |record| LogEntry::Record {
            producer_id: Some(7),
            record,
        };
        assert_eq!(
            read_records(&log),
            vec![
                LogEntry::Record {
                    producer_id: None,
                    record: commit("b", 5)
                },
                tx(commit("a", 1)),
                tx(commit("a", 2)),
                LogEntry::EndTxn {
                    producer_id: 7,
                    commit: true
                },
                tx(commit("a", 9)),
                LogEntry::EndTxn {
                    producer_id: 7,
                    commit: false
                },
            ]
        );
    }
}
