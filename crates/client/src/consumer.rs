//! The consumer: manual assignment or group subscription, poll, seek, pause/resume, `auto.offset.reset`, and
//! committed offsets (OffsetCommit/OffsetFetch; sync, async and auto-commit) when a `group.id` is set.
//!
//! With [`Consumer::subscribe`], `poll` joins the group (JoinGroup/SyncGroup, see [`crate::group`]) before
//! fetching, a background task heartbeats, and a heartbeat that sees a rebalance makes the next `poll`
//! rejoin: eagerly (commit and drop every partition first) for range and round-robin, cooperatively
//! (keep the retained partitions, revoke only what moved, then rejoin) for cooperative-sticky.
//!
//! [`Consumer::poll`] first resolves partitions without a position (the group's committed offset if there is
//! one, else ListOffsets earliest/latest per `auto.offset.reset`), then sends one Fetch (full fetch, no
//! session) to each leader of the unpaused partitions, decodes the whole batches (every codec, CRC checked)
//! and advances positions. NOT_LEADER_OR_FOLLOWER and UNKNOWN_TOPIC_OR_PARTITION refresh the metadata;
//! OFFSET_OUT_OF_RANGE resets the position per `auto.offset.reset`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FetchRequest, GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::admin::{list_offsets, OffsetSpec};
use crate::client::{Client, ClientConfig};
use crate::error::{ClientError, Result};
use crate::group::{self, Assignor, HeartbeatOutcome, MemberConfig, Membership, Subscription};
use crate::records::{decode_batches, ConsumerRecord};

/// `rejoin` flag values shared with the heartbeat task.
const REJOIN_NONE: u8 = 0;
const REJOIN_SAME_MEMBER: u8 = 1;
const REJOIN_NEW_MEMBER: u8 = 2;

/// The highest Fetch version this client sends (v13 switches to topic ids).
const FETCH_MAX_VERSION: i16 = 12;
/// The highest OffsetCommit version (v10 switches to topic ids).
pub(crate) const OFFSET_COMMIT_MAX_VERSION: i16 = 9;
/// The highest OffsetFetch version (v8 batches groups).
pub(crate) const OFFSET_FETCH_MAX_VERSION: i16 = 7;

/// `auto.offset.reset`: where to start when there is no valid position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The log start offset.
    Earliest,
    /// The log end offset (only records produced from now on).
    #[default]
    Latest,
    /// Fail with OFFSET_OUT_OF_RANGE.
    None,
}

impl std::str::FromStr for OffsetReset {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<OffsetReset> {
        match s {
            "earliest" => Ok(OffsetReset::Earliest),
            "latest" => Ok(OffsetReset::Latest),
            "none" => Ok(OffsetReset::None),
            _ => Err(ClientError::Config(format!(
                "auto.offset.reset must be earliest, latest or none, not {s:?}"
            ))),
        }
    }
}

/// `isolation.level`: which records a fetch returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Every record up to the high watermark, including those of open and aborted transactions.
    #[default]
    ReadUncommitted,
    /// Records up to the last stable offset, without those of aborted transactions (KIP-98).
    ReadCommitted,
}

impl IsolationLevel {
    /// The wire value (Fetch and ListOffsets `isolation_level`).
    pub fn code(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }
}

impl std::str::FromStr for IsolationLevel {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<IsolationLevel> {
        match s {
            "read_uncommitted" => Ok(IsolationLevel::ReadUncommitted),
            "read_committed" => Ok(IsolationLevel::ReadCommitted),
            _ => Err(ClientError::Config(format!(
                "isolation.level must be read_uncommitted or read_committed, not {s:?}"
            ))),
        }
    }
}

/// Consumer settings (Kafka's names in the docs of each field).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Connection settings.
    pub client: ClientConfig,
    /// `group.id`: where offsets are committed; `None` for a consumer that never commits.
    pub group_id: Option<String>,
    /// `auto.offset.reset`.
    pub auto_offset_reset: OffsetReset,
    /// `fetch.max.wait.ms`.
    pub fetch_max_wait_ms: i32,
    /// `fetch.min.bytes`.
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes`.
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: i32,
    /// `partition.assignment.strategy` for [`Consumer::subscribe`].
    pub assignor: Assignor,
    /// `enable.auto.commit`: commit positions every `auto.commit.interval.ms` from `poll`, before a
    /// rebalance gives partitions away, and on `close`.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval_ms: u64,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `max.poll.interval.ms` (sent as the rebalance timeout).
    pub rebalance_timeout_ms: i32,
    /// `isolation.level`: read_committed fetches up to the last stable offset and drops aborted
    /// transactions; its offset resets (ListOffsets latest) stop at the last stable offset too, and committed
    /// offsets are read with `require_stable` (KIP-447).
    pub isolation_level: IsolationLevel,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            client: ClientConfig::default(),
            group_id: None,
            auto_offset_reset: OffsetReset::Latest,
            fetch_max_wait_ms: 500,
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            assignor: Assignor::Range,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            rebalance_timeout_ms: 300_000,
            isolation_level: IsolationLevel::ReadUncommitted,
        }
    }
}

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// A consumer's group membership as a transactional producer needs it to commit offsets in a transaction
/// (Java's `ConsumerGroupMetadata`, KIP-447): the group coordinator refuses the commit of a member that is no
/// longer in the group's current generation, so a zombie cannot commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    /// `group.id`.
    pub group_id: String,
    /// The generation the member joined (-1 outside group membership).
    pub generation_id: i32,
    /// The member id ("" outside group membership).
    pub member_id: String,
    /// `group.instance.id` (static membership), if any.
    pub group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// Metadata for a group without membership (generation -1, no member id), as a consumer using `assign`
    /// commits; the coordinator then skips the generation check.
    pub fn new(group_id: impl Into<String>) -> ConsumerGroupMetadata {
        ConsumerGroupMetadata {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct PartitionState {
    /// The next offset to fetch; `None` until resolved.
    position: Option<i64>,
    paused: bool,
    /// OFFSET_OUT_OF_RANGE was seen: reset by `auto.offset.reset`, not to the committed offset.
    reset_pending: bool,
    /// The high watermark from the last fetch (-1 before one).
    high_watermark: i64,
    /// The last stable offset from the last fetch (-1 before one, or when the broker sends none).
    last_stable_offset: i64,
}

/// An async Kafka consumer: manual assignment ([`assign`](Consumer::assign)) or group membership
/// ([`subscribe`](Consumer::subscribe)).
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    /// Topics subscribed to through the group (`None` with manual assignment).
    subscription: Option<Vec<String>>,
    membership: Option<Membership>,
    rejoin: Arc<AtomicU8>,
    heartbeat_task: Option<tokio::task::JoinHandle<()>>,
    last_auto_commit: Instant,
    /// Rotates the partition order of fetch requests: a broker may cut an oversized batch of any partition
    /// but the first (KIP-74), so every partition must take its turn at the front.
    fetch_rotation: usize,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat_task.take() {
            task.abort();
        }
    }
}

impl Consumer {
    /// Connects to the cluster.
    pub async fn new(config: ConsumerConfig) -> Result<Consumer> {
        let client = Client::connect(config.client.clone()).await?;
        Ok(Consumer {
            client,
            config,
            partitions: BTreeMap::new(),
            subscription: None,
            membership: None,
            rejoin: Arc::new(AtomicU8::new(REJOIN_NONE)),
            heartbeat_task: None,
            last_auto_commit: Instant::now(),
            fetch_rotation: 0,
        })
    }

    /// Joins the consumer group (`group.id` required) with a subscription to `topics`; the group's
    /// assignor decides which partitions this member reads. Partitions start at the group's committed
    /// offsets (else `auto.offset.reset`). The join itself happens in the next [`poll`](Self::poll).
    pub fn subscribe(&mut self, topics: Vec<String>) -> Result<()> {
        self.group()?;
        if topics.is_empty() {
            return Err(ClientError::Config(
                "subscribe needs at least one topic".into(),
            ));
        }
        self.subscription = Some(topics);
        self.partitions.clear();
        self.rejoin.store(REJOIN_SAME_MEMBER, Ordering::Relaxed);
        Ok(())
    }

    /// The group metadata to pass to `Producer::send_offsets_to_transaction` (needs `group.id`): the current
    /// generation and member id while this consumer is a group member, else generation -1.
    pub fn group_metadata(&self) -> Result<ConsumerGroupMetadata> {
        let group_id = self.group()?.to_owned();
        let (generation_id, member_id) = self.commit_identity();
        Ok(ConsumerGroupMetadata {
            group_id,
            generation_id,
            member_id,
            group_instance_id: None,
        })
    }

    /// The member id and generation while this consumer is a group member.
    pub fn group_generation(&self) -> Option<(String, i32)> {
        self.membership
            .as_ref()
            .map(|m| (m.member_id.clone(), m.generation_id))
    }

    /// Joins or rejoins the group when needed: before the first fetch, after a heartbeat saw a rebalance,
    /// and (cooperative) after revoking partitions.
    async fn ensure_membership(&mut self) -> Result<()> {
        let Some(topics) = self.subscription.clone() else {
            return Ok(());
        };
        let flag = self.rejoin.swap(REJOIN_NONE, Ordering::AcqRel);
        if self.membership.is_some() && flag == REJOIN_NONE {
            return Ok(());
        }
        if let Some(task) = self.heartbeat_task.take() {
            task.abort();
        }
        let cooperative = self.config.assignor.is_cooperative();
        if !cooperative {
            // Eager protocol: give everything up (committing first) before rejoining.
            if self.config.enable_auto_commit && self.membership.is_some() {
                let _ = self.commit_sync().await;
            }
            self.partitions.clear();
        }
        let owned: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        let member_id = match (&self.membership, flag) {
            (Some(m), f) if f != REJOIN_NEW_MEMBER => m.member_id.clone(),
            _ => String::new(),
        };
        let member_config = MemberConfig {
            group_id: self.group()?.to_owned(),
            assignor: self.config.assignor,
            session_timeout_ms: self.config.session_timeout_ms,
            rebalance_timeout_ms: self.config.rebalance_timeout_ms,
        };
        let subscription = Subscription {
            topics,
            owned_partitions: owned.clone(),
        };
        let membership =
            group::join_and_sync(&self.client, &member_config, &member_id, &subscription).await?;
        let revoked: Vec<TopicPartition> = owned
            .iter()
            .filter(|tp| !membership.assignment.contains(tp))
            .cloned()
            .collect();
        self.membership = Some(membership.clone());
        if !revoked.is_empty() {
            if self.config.enable_auto_commit {
                let offsets: Vec<(TopicPartition, i64)> = revoked
                    .iter()
                    .filter_map(|tp| {
                        self.partitions
                            .get(tp)
                            .and_then(|s| s.position)
                            .map(|p| (tp.clone(), p))
                    })
                    .collect();
                let _ = self.commit_offsets(&offsets).await;
            }
            for tp in &revoked {
                self.partitions.remove(tp);
            }
            // KIP-429: having revoked, rejoin so the partitions can be assigned elsewhere.
            self.rejoin.store(REJOIN_SAME_MEMBER, Ordering::Release);
        }
        for tp in &membership.assignment {
            self.partitions.entry(tp.clone()).or_insert(PartitionState {
                high_watermark: -1,
                last_stable_offset: -1,
                ..PartitionState::default()
            });
        }
        self.partitions
            .retain(|tp, _| membership.assignment.contains(tp));
        self.heartbeat_task = Some(tokio::spawn(heartbeat_loop(
            self.client.clone(),
            member_config.group_id,
            membership,
            self.rejoin.clone(),
            self.config.heartbeat_interval_ms,
        )));
        Ok(())
    }

    /// Commits positions in the background; the handle resolves to the commit's result.
    pub fn commit_async(&self) -> Result<tokio::task::JoinHandle<Result<()>>> {
        let group = self.group()?.to_owned();
        let (generation, member) = self.commit_identity();
        let offsets = self.positions();
        let client = self.client.clone();
        Ok(tokio::spawn(async move {
            commit_offsets(&client, &group, generation, &member, &offsets).await
        }))
    }

    /// Commits (if auto-commit is on), leaves the group and stops heartbeating.
    pub async fn close(mut self) -> Result<()> {
        if let Some(task) = self.heartbeat_task.take() {
            task.abort();
        }
        if self.config.group_id.is_some() && self.config.enable_auto_commit {
            self.commit_sync().await?;
        }
        if let (Some(m), Some(group)) = (self.membership.take(), self.config.group_id.clone()) {
            let _ = group::leave(&self.client, &group, &m).await;
        }
        Ok(())
    }

    fn positions(&self) -> Vec<(TopicPartition, i64)> {
        self.partitions
            .iter()
            .filter_map(|(tp, s)| s.position.map(|p| (tp.clone(), p)))
            .collect()
    }

    fn commit_identity(&self) -> (i32, String) {
        match &self.membership {
            Some(m) => (m.generation_id, m.member_id.clone()),
            None => (-1, String::new()),
        }
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Replaces the assignment. Partitions kept keep their position; new ones start unresolved.
    pub async fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        if self.subscription.is_some() {
            return Err(ClientError::Config(
                "assign cannot be mixed with subscribe".into(),
            ));
        }
        for (topic, partition) in &partitions {
            let info = self.client.topic(topic, false).await?;
            if !info.partitions.iter().any(|p| p.partition == *partition) {
                return Err(ClientError::UnknownPartition {
                    topic: topic.clone(),
                    partition: *partition,
                });
            }
        }
        let mut next = BTreeMap::new();
        for tp in partitions {
            let state = self.partitions.remove(&tp).unwrap_or(PartitionState {
                high_watermark: -1,
                last_stable_offset: -1,
                ..PartitionState::default()
            });
            next.insert(tp, state);
        }
        self.partitions = next;
        Ok(())
    }

    /// Assigns every partition of `topic`.
    pub async fn assign_topic(&mut self, topic: &str) -> Result<()> {
        let info = self.client.topic(topic, false).await?;
        let mut all: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        all.extend(
            info.partitions
                .iter()
                .map(|p| (topic.to_owned(), p.partition)),
        );
        all.sort();
        all.dedup();
        self.assign(all).await
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    fn state(&mut self, topic: &str, partition: i32) -> Result<&mut PartitionState> {
        self.partitions
            .get_mut(&(topic.to_owned(), partition))
            .ok_or_else(|| ClientError::Config(format!("{topic}-{partition} is not assigned")))
    }

    /// Sets the next offset to fetch.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        let state = self.state(topic, partition)?;
        state.position = Some(offset);
        state.reset_pending = false;
        Ok(())
    }

    /// Moves to the log start offset of each given partition.
    pub async fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_to(partitions, OffsetSpec::Earliest).await
    }

    /// Moves to the log end offset of each given partition.
    pub async fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_to(partitions, OffsetSpec::Latest).await
    }

    async fn seek_to(&mut self, partitions: &[TopicPartition], spec: OffsetSpec) -> Result<()> {
        let queries: Vec<(String, i32, OffsetSpec)> = partitions
            .iter()
            .map(|(t, p)| (t.clone(), *p, spec))
            .collect();
        let offsets = list_offsets(&self.client, &queries, self.config.isolation_level).await?;
        for ((topic, partition), offset) in offsets {
            self.seek(&topic, partition, offset?.offset)?;
        }
        Ok(())
    }

    /// The next offset to fetch, resolving it first if needed.
    pub async fn position(&mut self, topic: &str, partition: i32) -> Result<i64> {
        self.state(topic, partition)?;
        self.resolve_positions().await?;
        self.state(topic, partition)?
            .position
            .ok_or_else(|| ClientError::Config(format!("{topic}-{partition} has no position")))
    }

    /// The last stable offset seen in the last fetch of the partition (-1 before the first): below it every
    /// transaction is decided; a read_committed consumer reads up to it.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> i64 {
        self.partitions
            .get(&(topic.to_owned(), partition))
            .map_or(-1, |s| s.last_stable_offset)
    }

    /// The high watermark seen in the last fetch of the partition (-1 before the first).
    pub fn high_watermark(&self, topic: &str, partition: i32) -> i64 {
        self.partitions
            .get(&(topic.to_owned(), partition))
            .map_or(-1, |s| s.high_watermark)
    }

    /// Stops fetching the given partitions (they stay assigned and keep their position).
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for (t, p) in partitions {
            self.state(t, *p)?.paused = true;
        }
        Ok(())
    }

    /// Fetches the given partitions again.
    pub fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for (t, p) in partitions {
            self.state(t, *p)?.paused = false;
        }
        Ok(())
    }

    /// Partitions that are paused.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(_, s)| s.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Gives positions to partitions without one: the committed offset, else `auto.offset.reset`.
    async fn resolve_positions(&mut self) -> Result<()> {
        let missing: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let (mut unresolved, missing): (Vec<_>, Vec<_>) = missing
            .into_iter()
            .partition(|tp| self.partitions.get(tp).is_some_and(|s| s.reset_pending));
        if self.config.group_id.is_none() {
            unresolved.extend(missing);
        } else if !missing.is_empty() {
            let committed = self.committed(&missing).await?;
            for tp in missing {
                match committed.get(&tp) {
                    Some(&offset) if offset >= 0 => {
                        if let Some(s) = self.partitions.get_mut(&tp) {
                            s.position = Some(offset);
                        }
                    }
                    _ => unresolved.push(tp),
                }
            }
        }
        if unresolved.is_empty() {
            return Ok(());
        }
        let spec = match self.config.auto_offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::None => {
                let (t, p) = &unresolved[0];
                return Err(ClientError::Config(format!(
                    "{t}-{p} has no committed offset and auto.offset.reset is none"
                )));
            }
        };
        self.seek_to(&unresolved, spec).await
    }

    /// Fetches records, waiting up to `timeout` for at least one. Returns an empty vector on timeout.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_membership().await?;
            if self.config.enable_auto_commit
                && self.config.group_id.is_some()
                && self.last_auto_commit.elapsed()
                    >= Duration::from_millis(self.config.auto_commit_interval_ms)
            {
                self.last_auto_commit = Instant::now();
                if let Err(e) = self.commit_sync().await {
                    tracing::warn!(error = %e, "auto-commit failed");
                }
            }
            self.resolve_positions().await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let wait_ms = i32::try_from(remaining.as_millis())
                .unwrap_or(i32::MAX)
                .min(self.config.fetch_max_wait_ms);
            let records = self.fetch_once(wait_ms).await?;
            if !records.is_empty() || Instant::now() >= deadline {
                return Ok(records);
            }
            if self.partitions.values().all(|s| s.paused) || self.partitions.is_empty() {
                tokio::time::sleep(remaining.min(Duration::from_millis(100))).await;
            }
        }
    }

    async fn fetch_once(&mut self, max_wait_ms: i32) -> Result<Vec<ConsumerRecord>> {
        let metadata = self.client.metadata();
        let mut by_leader: HashMap<i32, Vec<(TopicPartition, i64)>> = HashMap::new();
        let mut refresh: Vec<String> = Vec::new();
        for (tp, state) in &self.partitions {
            if state.paused {
                continue;
            }
            let Some(position) = state.position else {
                continue;
            };
            match metadata.leader(&tp.0, tp.1) {
                Some(leader) => by_leader
                    .entry(leader)
                    .or_default()
                    .push((tp.clone(), position)),
                None => refresh.push(tp.0.clone()),
            }
        }
        self.fetch_rotation = self.fetch_rotation.wrapping_add(1);
        let mut tasks = tokio::task::JoinSet::new();
        for (leader, mut partitions) in by_leader {
            let len = partitions.len().max(1);
            partitions.rotate_left(self.fetch_rotation % len);
            let request = self.fetch_request(&partitions, max_wait_ms);
            let client = self.client.clone();
            tasks.spawn(async move {
                let response = client
                    .send_to(leader, &request, Some(FETCH_MAX_VERSION))
                    .await;
                (partitions, response)
            });
        }
        let mut records = Vec::new();
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let Ok((partitions, response)) = joined else {
                continue;
            };
            let response = match response {
                Ok(r) => r,
                Err(e) if e.is_retriable() => {
                    refresh.extend(partitions.iter().map(|((t, _), _)| t.clone()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if response.error_code != 0 {
                first_error.get_or_insert(ClientError::broker("fetch", response.error_code, None));
                continue;
            }
            for topic in &response.responses {
                let name = topic.topic.0.as_str();
                for p in &topic.partitions {
                    let tp = (name.to_owned(), p.partition_index);
                    let Some(&(_, position)) = partitions.iter().find(|(x, _)| *x == tp) else {
                        continue;
                    };
                    if let Err(e) = self.apply_fetched(&tp, position, p, &mut records, &mut refresh)
                    {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        refresh.sort();
        refresh.dedup();
        for topic in refresh {
            let _ = self.client.topic_refreshed(&topic, false).await;
        }
        match first_error {
            Some(e) if records.is_empty() => Err(e),
            _ => Ok(records),
        }
    }

    fn fetch_request(
        &self,
        partitions: &[(TopicPartition, i64)],
        max_wait_ms: i32,
    ) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for ((topic, partition), position) in partitions {
            let fp = FetchPartition::default()
                .with_partition(*partition)
                .with_fetch_offset(*position)
                .with_current_leader_epoch(-1)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(self.config.max_partition_fetch_bytes);
            match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
                Some(t) => t.partitions.push(fp),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(vec![fp]),
                ),
            }
        }
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms.max(0))
            .with_min_bytes(self.config.fetch_min_bytes)
            .with_max_bytes(self.config.fetch_max_bytes)
            .with_isolation_level(self.config.isolation_level.code())
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics)
    }

    fn apply_fetched(
        &mut self,
        tp: &TopicPartition,
        position: i64,
        p: &kafka_protocol::messages::fetch_response::PartitionData,
        records: &mut Vec<ConsumerRecord>,
        refresh: &mut Vec<String>,
    ) -> Result<()> {
        let reset = self.config.auto_offset_reset;
        let Some(state) = self.partitions.get_mut(tp) else {
            return Ok(());
        };
        // The position may have moved (seek) while the fetch was out: drop stale data.
        if state.position != Some(position) {
            return Ok(());
        }
        match ResponseError::try_from_code(p.error_code) {
            None => {}
            Some(ResponseError::OffsetOutOfRange) if reset != OffsetReset::None => {
                state.position = None;
                state.reset_pending = true;
                return Ok(());
            }
            Some(
                ResponseError::NotLeaderOrFollower
                | ResponseError::UnknownTopicOrPartition
                | ResponseError::LeaderNotAvailable
                | ResponseError::FencedLeaderEpoch
                | ResponseError::UnknownLeaderEpoch,
            ) => {
                refresh.push(tp.0.clone());
                return Ok(());
            }
            Some(_) => {
                return Err(ClientError::broker(
                    format!("fetching {}-{} at offset {position}", tp.0, tp.1),
                    p.error_code,
                    None,
                ))
            }
        }
        state.high_watermark = p.high_watermark;
        state.last_stable_offset = p.last_stable_offset;
        let Some(data) = p.records.as_ref() else {
            return Ok(());
        };
        let aborted: Vec<(i64, i64)>;
        let read_committed = if self.config.isolation_level == IsolationLevel::ReadCommitted {
            aborted = p
                .aborted_transactions
                .iter()
                .flatten()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect();
            Some(aborted.as_slice())
        } else {
            None
        };
        let decoded = decode_batches(&tp.0, tp.1, data, position, read_committed)?;
        let mut next = decoded.next_offset.unwrap_or(position).max(position);
        if let Some(last) = decoded.records.last() {
            next = next.max(last.offset + 1);
        }
        state.position = Some(next);
        records.extend(decoded.records);
        Ok(())
    }

    /// Commits the current positions of all assigned partitions that have one.
    pub async fn commit_sync(&mut self) -> Result<()> {
        let offsets = self.positions();
        if offsets.is_empty() {
            return Ok(());
        }
        self.commit_offsets(&offsets).await
    }

    /// Commits the given offsets (the next offset to read, as Kafka commits) for the consumer's group.
    pub async fn commit_offsets(&self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        let group = self.group()?;
        let (generation, member) = self.commit_identity();
        commit_offsets(&self.client, group, generation, &member, offsets).await
    }

    /// The group's committed offsets for `partitions` (-1 where none is committed).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        let group = self.group()?;
        let require_stable = self.config.isolation_level == IsolationLevel::ReadCommitted;
        fetch_committed(&self.client, group, Some(partitions), require_stable).await
    }

    fn group(&self) -> Result<&str> {
        self.config
            .group_id
            .as_deref()
            .ok_or_else(|| ClientError::Config("group.id is not set".into()))
    }
}

/// Commits `offsets` for `group` (generation -1 and an empty member id for a consumer outside group
/// membership, as Kafka's standalone consumers commit).
pub(crate) async fn commit_offsets(
    client: &Client,
    group: &str,
    generation_id: i32,
    member_id: &str,
    offsets: &[(TopicPartition, i64)],
) -> Result<()> {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for ((topic, partition), offset) in offsets {
        let p = OffsetCommitRequestPartition::default()
            .with_partition_index(*partition)
            .with_committed_offset(*offset)
            .with_committed_leader_epoch(-1);
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_generation_id_or_member_epoch(generation_id)
        .with_member_id(StrBytes::from_string(member_id.to_owned()))
        .with_retention_time_ms(-1)
        .with_topics(topics);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let coordinator = client.group_coordinator(group).await?;
        let response = client
            .send_to(coordinator, &request, Some(OFFSET_COMMIT_MAX_VERSION))
            .await?;
        let error = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
            .find(|(_, p)| p.error_code != 0)
            .map(|(t, p)| {
                ClientError::broker(
                    format!(
                        "committing {}-{} for group {group}",
                        t.name.0.as_str(),
                        p.partition_index
                    ),
                    p.error_code,
                    None,
                )
            });
        match error {
            None => return Ok(()),
            Some(e) if e.is_retriable() && attempts < 5 => {
                tokio::time::sleep(Duration::from_millis(client.config().retry_backoff_ms)).await;
            }
            Some(e) => return Err(e),
        }
    }
}

/// The committed offsets of `group` (for `partitions`, or all when `None`).
pub(crate) async fn fetch_committed(
    client: &Client,
    group: &str,
    partitions: Option<&[TopicPartition]>,
    require_stable: bool,
) -> Result<HashMap<TopicPartition, i64>> {
    let topics = partitions.map(|partitions| {
        let mut topics: Vec<OffsetFetchRequestTopic> = Vec::new();
        for (topic, partition) in partitions {
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partition_indexes.push(*partition),
                None => topics.push(
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partition_indexes(vec![*partition]),
                ),
            }
        }
        topics
    });
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_topics(topics)
        .with_require_stable(require_stable);
    // KIP-447: with require_stable, offsets a transaction has not yet committed answer UNSTABLE_OFFSET_COMMIT
    // until it ends; the Java consumer retries until then.
    let unstable_deadline =
        std::time::Instant::now() + Duration::from_millis(client.config().request_timeout_ms);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let coordinator = client.group_coordinator(group).await?;
        let response = client
            .send_to(coordinator, &request, Some(OFFSET_FETCH_MAX_VERSION))
            .await?;
        let unstable = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .any(|p| p.error_code == ResponseError::UnstableOffsetCommit.code());
        let code = if response.error_code == 0 && unstable {
            ResponseError::UnstableOffsetCommit.code()
        } else {
            response.error_code
        };
        if code != 0 {
            let e = ClientError::broker(
                format!("fetching committed offsets of group {group}"),
                code,
                None,
            );
            let retry = if code == ResponseError::UnstableOffsetCommit.code() {
                std::time::Instant::now() < unstable_deadline
            } else {
                e.is_retriable() && attempts < 10
            };
            if retry {
                tokio::time::sleep(Duration::from_millis(client.config().retry_backoff_ms)).await;
                continue;
            }
            return Err(e);
        }
        let mut out = HashMap::new();
        for t in &response.topics {
            for p in &t.partitions {
                out.insert(
                    (t.name.0.as_str().to_owned(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
        return Ok(out);
    }
}

async fn heartbeat_loop(
    client: Client,
    group_id: String,
    membership: Membership,
    rejoin: Arc<AtomicU8>,
    interval_ms: u64,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(interval_ms.max(10))).await;
        match group::heartbeat(&client, &group_id, &membership).await {
            Ok(HeartbeatOutcome::Ok) => {}
            Ok(HeartbeatOutcome::Rejoin) => {
                rejoin.store(REJOIN_SAME_MEMBER, Ordering::Release);
                return;
            }
            Ok(HeartbeatOutcome::Reset) => {
                rejoin.store(REJOIN_NEW_MEMBER, Ordering::Release);
                return;
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed; retrying"),
        }
    }
}
