//! One group coordinator shard: the groups and committed offsets of one `__consumer_offsets` partition, as a
//! pure state machine (Kafka's `GroupCoordinatorShard` = `GroupMetadataManager` + `OffsetMetadataManager` for
//! classic groups). Every request and every timer firing returns a [`CoordinatorResult`]: the records to append
//! to the partition, the response, and the parked JoinGroup/SyncGroup responses that are now complete.
//!
//! State changes: committed offsets and deletions change only by replaying records ([`GroupCoordinatorShard::replay`]),
//! which is also how a partition is loaded. A group's membership (who is joining, parked requests, deadlines) is
//! transient and, as in Kafka's classic group (whose writes are not replayed), is changed in memory; its persisted
//! form is the GroupMetadataValue written at every generation change, from which a load rebuilds the group.
//!
//! Time is an argument (`now_ms`); [`GroupCoordinatorShard::next_deadline_ms`] says when to call
//! [`GroupCoordinatorShard::poll`] next. The shell must append `records` before it sends any response of the
//! same result.
//!
//! This file holds the shard itself: its result and error types, replay, and the timer entry points. The
//! request handlers are split by area, each an `impl GroupCoordinatorShard` block:
//!
//! - `membership`: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, and their response shapes;
//! - `rebalance`: the classic protocol's transitions (prepare a rebalance, complete a join, remove a member)
//!   and the group timers that drive them (session, rebalance, sync, KIP-394 pending ids);
//! - `offsets`: OffsetCommit, OffsetFetch, OffsetDelete and offset expiry;
//! - `txn_offsets`: TxnOffsetCommit and the pending offsets of open transactions, which the COMMIT or ABORT
//!   marker of their producer's transaction commits or drops (KIP-98, KIP-447);
//! - `admin`: ListGroups, DescribeGroups, DeleteGroups.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;

use crate::group::ClassicGroup;
use crate::record::{CoordinatorRecord, OffsetCommitValue};

mod admin;
mod membership;
mod offsets;
mod rebalance;
mod txn_offsets;

pub use offsets::CommittedOffset;

/// The outcomes of a group operation; Kafka error codes appear only in [`GroupError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    /// Success.
    None,
    /// Kafka's `CoordinatorNotAvailable`.
    CoordinatorNotAvailable,
    /// Kafka's `FencedInstanceId`.
    FencedInstanceId,
    /// Kafka's `GroupIdNotFound`.
    GroupIdNotFound,
    /// Kafka's `GroupMaxSizeReached`.
    GroupMaxSizeReached,
    /// Kafka's `GroupSubscribedToTopic`.
    GroupSubscribedToTopic,
    /// Kafka's `IllegalGeneration`.
    IllegalGeneration,
    /// Kafka's `InconsistentGroupProtocol`.
    InconsistentGroupProtocol,
    /// Kafka's `InvalidGroupId`.
    InvalidGroupId,
    /// Kafka's `InvalidSessionTimeout`.
    InvalidSessionTimeout,
    /// Kafka's `MemberIdRequired`.
    MemberIdRequired,
    /// Kafka's `NonEmptyGroup`.
    NonEmptyGroup,
    /// Kafka's `OffsetMetadataTooLarge`.
    OffsetMetadataTooLarge,
    /// Kafka's `RebalanceInProgress`.
    RebalanceInProgress,
    /// Kafka's `UnknownMemberId`.
    UnknownMemberId,
    /// Kafka's `UnknownTopicOrPartition`.
    UnknownTopicOrPartition,
    /// Kafka's `UnstableOffsetCommit` (KIP-447: a transactional offset of the partition is still pending).
    UnstableOffsetCommit,
}

impl GroupError {
    /// The Kafka error code.
    pub fn code(self) -> i16 {
        match self {
            GroupError::None => 0,
            GroupError::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable.code(),
            GroupError::FencedInstanceId => ErrorCode::FencedInstanceId.code(),
            GroupError::GroupIdNotFound => ErrorCode::GroupIdNotFound.code(),
            GroupError::GroupMaxSizeReached => ErrorCode::GroupMaxSizeReached.code(),
            GroupError::GroupSubscribedToTopic => ErrorCode::GroupSubscribedToTopic.code(),
            GroupError::IllegalGeneration => ErrorCode::IllegalGeneration.code(),
            GroupError::InconsistentGroupProtocol => ErrorCode::InconsistentGroupProtocol.code(),
            GroupError::InvalidGroupId => ErrorCode::InvalidGroupId.code(),
            GroupError::InvalidSessionTimeout => ErrorCode::InvalidSessionTimeout.code(),
            GroupError::MemberIdRequired => ErrorCode::MemberIdRequired.code(),
            GroupError::NonEmptyGroup => ErrorCode::NonEmptyGroup.code(),
            GroupError::OffsetMetadataTooLarge => ErrorCode::OffsetMetadataTooLarge.code(),
            GroupError::RebalanceInProgress => ErrorCode::RebalanceInProgress.code(),
            GroupError::UnknownMemberId => ErrorCode::UnknownMemberId.code(),
            GroupError::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition.code(),
            GroupError::UnstableOffsetCommit => ErrorCode::UnstableOffsetCommit.code(),
        }
    }
}

/// Broker settings the group coordinator follows (Kafka's names and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCoordinatorConfig {
    /// `group.min.session.timeout.ms` (6 s).
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms` (30 min).
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms` (3 s).
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size` (unbounded by default).
    pub max_group_size: usize,
    /// `offsets.retention.minutes` in milliseconds (7 days).
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms` (10 min).
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes` (4096).
    pub offset_metadata_max_bytes: usize,
}

impl Default for GroupCoordinatorConfig {
    fn default() -> Self {
        GroupCoordinatorConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_group_size: i32::MAX as usize,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
        }
    }
}

/// A parked response that is now complete; the shell sends it to the connection that waits for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The JoinGroup response of `member_id`.
    Join {
        /// Group id.
        group_id: String,
        /// The member whose request was parked.
        member_id: String,
        /// Its response.
        response: JoinGroupResponse,
    },
    /// The SyncGroup response of `member_id`.
    Sync {
        /// Group id.
        group_id: String,
        /// The member whose request was parked.
        member_id: String,
        /// Its response.
        response: SyncGroupResponse,
    },
}

/// What one request or timer produced.
#[derive(Debug, Clone, PartialEq)]
pub struct CoordinatorResult<T> {
    /// Records to append to the shard's `__consumer_offsets` partition, in order, before any response is sent.
    pub records: Vec<CoordinatorRecord>,
    /// The response to the request.
    pub response: T,
    /// Parked responses completed by this step.
    pub deliveries: Vec<Delivery>,
}

/// The answer to a JoinGroup or SyncGroup: immediate, or parked under a member id until a [`Delivery`].
#[derive(Debug, Clone, PartialEq)]
pub enum Parkable<T> {
    /// Send this now.
    Now(T),
    /// Wait for the delivery addressed to this member.
    Parked {
        /// The member the delivery will name.
        member_id: String,
    },
}

/// Who sent a request (from its header and connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The request's API version.
    pub api_version: i16,
    /// Client id from the request header.
    pub client_id: String,
    /// Client host, `/ip` as Kafka prints it.
    pub client_host: String,
}

/// An offset as a shard keeps it: the value, and where the record that wrote it sits in the partition's log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredOffset {
    value: OffsetCommitValue,
    /// The record's rank in log order ([`GroupCoordinatorShard::replay_rank`]): Kafka compares the records' log
    /// offsets when a transaction's offsets are committed, and ranks compare the same way.
    log_rank: u64,
}

/// Offsets by group, then by (topic, partition).
type OffsetsByGroup = BTreeMap<String, BTreeMap<(String, i32), StoredOffset>>;

/// The groups and offsets of one `__consumer_offsets` partition.
#[derive(Debug, Clone)]
pub struct GroupCoordinatorShard {
    config: GroupCoordinatorConfig,
    groups: BTreeMap<String, ClassicGroup>,
    /// Committed offsets (what OffsetFetch answers).
    offsets: OffsetsByGroup,
    /// Offsets written by transactions whose marker has not been replayed yet, by producer id (Kafka's
    /// `pendingTransactionalOffsets`).
    pending_transactional: BTreeMap<i64, OffsetsByGroup>,
    /// The producers with an open transaction that wrote offsets of a group (Kafka's `openTransactionsByGroup`).
    open_transactions: BTreeMap<String, BTreeSet<i64>>,
    /// How many offset records were replayed: the rank of the next one in log order.
    replayed_offset_records: u64,
    member_id_seed: u64,
    member_id_counter: u64,
    next_expiry_check_ms: i64,
}

type Records = Vec<CoordinatorRecord>;
type Deliveries = Vec<Delivery>;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn code(e: GroupError) -> i16 {
    e.code()
}

impl GroupCoordinatorShard {
    /// An empty shard. `member_id_seed` makes generated member ids unique across restarts (the shell passes a
    /// random number; tests a constant).
    pub fn new(config: GroupCoordinatorConfig, member_id_seed: u64) -> GroupCoordinatorShard {
        GroupCoordinatorShard {
            config,
            groups: BTreeMap::new(),
            offsets: BTreeMap::new(),
            pending_transactional: BTreeMap::new(),
            open_transactions: BTreeMap::new(),
            replayed_offset_records: 0,
            member_id_seed,
            member_id_counter: 0,
            next_expiry_check_ms: i64::MIN,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &GroupCoordinatorConfig {
        &self.config
    }

    /// A group, if it exists.
    pub fn group(&self, group_id: &str) -> Option<&ClassicGroup> {
        self.groups.get(group_id)
    }

    /// Every group id of this shard.
    pub fn group_ids(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }

    /// The committed offset of a group for a partition.
    pub fn committed_offset(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<&OffsetCommitValue> {
        self.offsets
            .get(group_id)?
            .get(&(topic.to_string(), partition))
            .map(|o| &o.value)
    }

    // ------------------------------------------------------------------------------------------------------
    // Replay (loading, and the write path of offsets and deletions)
    // ------------------------------------------------------------------------------------------------------

    /// Applies one record of the partition (of a batch that is not transactional; see
    /// [`GroupCoordinatorShard::replay_transactional`] for the others): how a partition is loaded, and how offset
    /// commits and deletions change state. A GroupMetadataValue rebuilds the group as it was persisted (Empty
    /// without members, Stable with them); tombstones remove, an offset tombstone also the partition's pending
    /// transactional offsets (as Kafka's `OffsetMetadataManager.replay`).
    ///
    /// Records must be replayed in log order (loading reads the log in order; a live step replays its records
    /// right before or after appending them, under the shard's lock): the order of commits decides which offset
    /// a transaction's COMMIT marker may overwrite.
    pub fn replay(&mut self, record: &CoordinatorRecord) {
        match record {
            CoordinatorRecord::OffsetCommit {
                group_id,
                topic,
                partition,
                value,
            } => match value {
                Some(v) => {
                    self.ensure_simple_group(group_id, v.commit_timestamp_ms);
                    let stored = self.stored(v);
                    self.offsets
                        .entry(group_id.clone())
                        .or_default()
                        .insert((topic.clone(), *partition), stored);
                }
                None => {
                    if let Some(o) = self.offsets.get_mut(group_id) {
                        o.remove(&(topic.clone(), *partition));
                        if o.is_empty() {
                            self.offsets.remove(group_id);
                        }
                    }
                    self.remove_pending_offsets(group_id, topic, *partition);
                }
            },
            CoordinatorRecord::GroupMetadata { group_id, value } => match value {
                Some(v) => {
                    self.groups
                        .insert(group_id.clone(), ClassicGroup::from_record(group_id, v));
                }
                None => {
                    self.groups.remove(group_id);
                }
            },
        }
    }

    /// Kafka creates a simple (Empty, no protocol) group for an offset commit of a group it does not know.
    fn ensure_simple_group(&mut self, group_id: &str, now_ms: i64) {
        if !self.groups.contains_key(group_id) {
            self.groups
                .insert(group_id.to_string(), ClassicGroup::new(group_id, now_ms));
        }
    }

    /// Ranks an offset record being replayed: the next position in log order.
    fn stored(&mut self, value: &OffsetCommitValue) -> StoredOffset {
        let log_rank = self.replay_rank();
        StoredOffset {
            value: value.clone(),
            log_rank,
        }
    }

    /// The rank in log order of the offset record being replayed. Kafka remembers each offset's record offset
    /// in the log; records are replayed in log order, so a counter orders them the same way (compaction removes
    /// records but never reorders the ones it keeps).
    fn replay_rank(&mut self) -> u64 {
        let rank = self.replayed_offset_records;
        self.replayed_offset_records += 1;
        rank
    }

    /// Called once a load finished replaying: every loaded member's session starts now (Kafka reschedules
    /// heartbeats of loaded classic groups), and the first offset-expiry check is scheduled.
    pub fn finish_loading(&mut self, now_ms: i64) {
        for group in self.groups.values_mut() {
            for m in &mut group.members {
                m.renew_session(now_ms);
            }
        }
        self.next_expiry_check_ms = now_ms + self.config.offsets_retention_check_interval_ms;
    }

    /// Applies a record produced by a live operation: offsets and tombstones are replayed; a GroupMetadataValue
    /// describes in-memory state that is already current (Kafka does not replay classic-group writes).
    fn emit(&mut self, records: &mut Records, record: CoordinatorRecord) {
        let replay = !matches!(
            record,
            CoordinatorRecord::GroupMetadata { value: Some(_), .. }
        );
        if replay {
            self.replay(&record);
        }
        records.push(record);
    }

    /// Emits the tombstone of one committed offset of `group_id`.
    fn emit_offset_tombstone(
        &mut self,
        records: &mut Records,
        group_id: &str,
        topic: String,
        partition: i32,
    ) {
        let record = CoordinatorRecord::OffsetCommit {
            group_id: group_id.to_string(),
            topic,
            partition,
            value: None,
        };
        self.emit(records, record);
    }

    /// Emits the tombstone of a group (its offsets are tombstoned first, by the caller).
    fn emit_group_tombstone(&mut self, records: &mut Records, group_id: &str) {
        let record = CoordinatorRecord::GroupMetadata {
            group_id: group_id.to_string(),
            value: None,
        };
        self.emit(records, record);
    }

    fn store_group(&mut self, records: &mut Records, group_id: &str) {
        if let Some(g) = self.groups.get(group_id) {
            records.push(CoordinatorRecord::GroupMetadata {
                group_id: group_id.to_string(),
                value: Some(g.to_record()),
            });
        }
    }

    // ------------------------------------------------------------------------------------------------------
    // Timers
    // ------------------------------------------------------------------------------------------------------

    /// The earliest time [`GroupCoordinatorShard::poll`] has something to do.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let mut next = if self.next_expiry_check_ms == i64::MIN {
            None
        } else {
            Some(self.next_expiry_check_ms)
        };
        let mut consider = |t: i64| next = Some(next.map_or(t, |n: i64| n.min(t)));
        for g in self.groups.values() {
            g.rebalance_deadline_ms.into_iter().for_each(&mut consider);
            g.sync_deadline_ms.into_iter().for_each(&mut consider);
            g.pending_members.values().copied().for_each(&mut consider);
            for m in &g.members {
                if m.heartbeat_deadline_ms != i64::MAX {
                    consider(m.heartbeat_deadline_ms);
                }
            }
        }
        next
    }

    /// Fires every timer due at `now_ms`: session timeouts (members removed), KIP-394 pending member ids,
    /// rebalance timeouts and the initial delay (the join completes), sync timeouts (members that never synced
    /// are removed), and the periodic offset expiry.
    pub fn poll(&mut self, now_ms: i64) -> CoordinatorResult<()> {
        let mut records = Vec::new();
        let mut deliveries = Vec::new();
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for group_id in ids {
            self.poll_group(now_ms, &group_id, &mut records, &mut deliveries);
        }
        if self.next_expiry_check_ms != i64::MIN && now_ms >= self.next_expiry_check_ms {
            self.expire_offsets(now_ms, &mut records);
            self.next_expiry_check_ms = now_ms + self.config.offsets_retention_check_interval_ms;
        }
        CoordinatorResult {
            records,
            response: (),
            deliveries,
        }
    }
}

/// Builds a topic name for responses.
pub fn topic_name(name: &str) -> TopicName {
    TopicName(sb(name))
}
