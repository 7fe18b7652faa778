//! Transactional offset commits (KIP-98, KIP-447): TxnOffsetCommit, the pending offsets of open transactions,
//! and the end-of-transaction markers that commit or drop them (Kafka's `OffsetMetadataManager`:
//! `commitTransactionalOffset`, `replay` with a producer id, `replayEndTransactionMarker`).
//!
//! A transactional producer commits its consumer's offsets with TxnOffsetCommit; the shell writes the records in
//! one transactional batch of that producer, so the partition log tracks the open transaction (the LSO of
//! `__consumer_offsets`). Until the transaction coordinator has the COMMIT or ABORT marker written to this
//! partition, the offsets are pending under the producer id: OffsetFetch never answers them (and answers
//! UNSTABLE_OFFSET_COMMIT for their partitions when asked for stable offsets), they keep their partition's
//! committed offset from expiring and their group from being deleted, and DeleteGroups/OffsetDelete tombstone
//! them too. A COMMIT moves them to the committed offsets, except where a record later in the log already
//! committed the partition; an ABORT drops them.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::offsets::metadata_length;
use super::{code, CoordinatorResult, GroupCoordinatorShard, GroupError};
use crate::group::GroupState;
use crate::record::{CoordinatorRecord, OffsetCommitValue};

impl GroupCoordinatorShard {
    /// TxnOffsetCommit (Kafka's `OffsetMetadataManager.commitTransactionalOffset` for classic groups): the
    /// OffsetCommit records of the request's partitions and the response. The broker answers
    /// UNKNOWN_TOPIC_OR_PARTITION for partitions that do not exist before it gets here, as `KafkaApis` does.
    ///
    /// The records are **not** applied: they belong to the transaction of `request.producer_id`, so the shell
    /// appends them as one transactional batch of that producer and epoch, then replays each with
    /// [`GroupCoordinatorShard::replay_transactional`]. If the append is refused (a fenced producer epoch), the
    /// shard is unchanged.
    ///
    /// Validation as Kafka's `validateTransactionalOffsetCommit` + `ClassicGroup.validateOffsetCommit(...,
    /// isTransactional = true)`: an empty group id is INVALID_GROUP_ID; an unknown group is accepted with
    /// generation -1 (the replayed record creates a simple group) and is ILLEGAL_GENERATION otherwise; a Dead
    /// group is COORDINATOR_NOT_AVAILABLE; once a generation, member id or group instance id is given (v3+), the
    /// member must be the group's (UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID for another member holding the instance
    /// id) and the generation current (ILLEGAL_GENERATION). Unlike OffsetCommit, a transactional commit is
    /// accepted without member and generation while the group has members (v0-v2 carry none), and during
    /// CompletingRebalance (Kafka does not enforce the group state for it), and it does not extend the member's
    /// session. Metadata longer than `offset.metadata.max.bytes` is OFFSET_METADATA_TOO_LARGE for its partition.
    pub fn txn_offset_commit(
        &self,
        now_ms: i64,
        request: &TxnOffsetCommitRequest,
    ) -> CoordinatorResult<TxnOffsetCommitResponse> {
        let group_id = request.group_id.0.as_str();
        let group_error = self.validate_txn_offset_commit(request);
        let mut records = Vec::new();
        let mut topics = Vec::with_capacity(request.topics.len());
        for t in &request.topics {
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let metadata = p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let error = if group_error != GroupError::None {
                    group_error
                } else if metadata_length(&metadata) > self.config.offset_metadata_max_bytes {
                    GroupError::OffsetMetadataTooLarge
                } else {
                    // A transactional commit never carries an explicit expiry (only OffsetCommit v2-v4 does).
                    records.push(CoordinatorRecord::OffsetCommit {
                        group_id: group_id.to_string(),
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        value: Some(OffsetCommitValue {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata,
                            commit_timestamp_ms: now_ms,
                            expire_timestamp_ms: -1,
                        }),
                    });
                    GroupError::None
                };
                partitions.push(
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code(error)),
                );
            }
            topics.push(
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
        CoordinatorResult {
            records,
            response: TxnOffsetCommitResponse::default().with_topics(topics),
            deliveries: Vec::new(),
        }
    }

    fn validate_txn_offset_commit(&self, request: &TxnOffsetCommitRequest) -> GroupError {
        let group_id = request.group_id.0.as_str();
        let generation = request.generation_id;
        let member_id = request.member_id.as_str();
        let instance_id = request.group_instance_id.as_deref();
        // `GroupCoordinatorService.commitTransactionalOffsets` refuses an empty group id before the shard.
        if group_id.is_empty() {
            return GroupError::InvalidGroupId;
        }
        let Some(group) = self.groups.get(group_id) else {
            // Without a generation the request comes from a producer whose consumer does not use group
            // management: Kafka accepts it and creates a simple group (here, when the record is replayed).
            return if generation < 0 {
                GroupError::None
            } else {
                GroupError::IllegalGeneration
            };
        };
        if group.state == GroupState::Dead {
            return GroupError::CoordinatorNotAvailable;
        }
        if generation < 0 && group.state == GroupState::Empty {
            return GroupError::None;
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            // `ClassicGroup.validateMember`: a static member's instance id must be registered, to this member.
            if let Some(instance_id) = instance_id {
                match group.static_member_id(instance_id) {
                    None => return GroupError::UnknownMemberId,
                    Some(registered) if registered != member_id => {
                        return GroupError::FencedInstanceId
                    }
                    Some(_) => {}
                }
            }
            if !group.has_member(member_id) {
                return GroupError::UnknownMemberId;
            }
            if generation != group.generation {
                return GroupError::IllegalGeneration;
            }
        }
        GroupError::None
    }

    /// Applies one record of a transactional batch of `producer_id` (how a TxnOffsetCommit's records are
    /// applied once appended, and how a load applies the transactional batches it reads). An offset becomes
    /// pending under the producer id, invisible to OffsetFetch, until
    /// [`GroupCoordinatorShard::replay_end_transaction`] commits or drops it; a group that does not exist is
    /// created as a simple group, as a plain commit does. Other records (tombstones, group metadata), and any
    /// record with a negative producer id, are replayed as [`GroupCoordinatorShard::replay`] does (Kafka's
    /// `replay` looks at the producer id only for offset values).
    pub fn replay_transactional(&mut self, producer_id: i64, record: &CoordinatorRecord) {
        match record {
            CoordinatorRecord::OffsetCommit {
                group_id,
                topic,
                partition,
                value: Some(v),
            } if producer_id >= 0 => {
                self.ensure_simple_group(group_id, v.commit_timestamp_ms);
                let stored = self.stored(v);
                self.pending_transactional
                    .entry(producer_id)
                    .or_default()
                    .entry(group_id.clone())
                    .or_default()
                    .insert((topic.clone(), *partition), stored);
                self.open_transactions
                    .entry(group_id.clone())
                    .or_default()
                    .insert(producer_id);
            }
            _ => self.replay(record),
        }
    }

    /// Applies the COMMIT (`commit`) or ABORT marker of `producer_id`'s transaction, read from or written to this
    /// partition (Kafka's `replayEndTransactionMarker`). On COMMIT each pending offset of the producer becomes
    /// the committed one, unless the partition's committed offset was written by a record later in the log (a
    /// plain OffsetCommit after the transactional one: Kafka keeps the most recent record, so that compacting
    /// `__consumer_offsets` cannot change which offset wins). On ABORT they are dropped. A marker of a producer
    /// without pending offsets changes nothing.
    pub fn replay_end_transaction(&mut self, producer_id: i64, commit: bool) {
        // Every group forgets the producer, including one whose pending offsets a tombstone already removed.
        self.open_transactions.retain(|_, producers| {
            producers.remove(&producer_id);
            !producers.is_empty()
        });
        let Some(pending) = self.pending_transactional.remove(&producer_id) else {
            return;
        };
        if !commit {
            return;
        }
        for (group_id, offsets) in pending {
            for (key, offset) in offsets {
                let committed = self.offsets.entry(group_id.clone()).or_default();
                let newer_committed = committed
                    .get(&key)
                    .is_some_and(|existing| existing.log_rank > offset.log_rank);
                if !newer_committed {
                    committed.insert(key, offset);
                }
            }
        }
    }

    /// Whether an open transaction wrote an offset for the group's partition that is not committed or aborted
    /// yet (Kafka's `hasPendingTransactionalOffsets`).
    pub fn has_pending_transactional_offsets(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> bool {
        self.pending_producers(group_id).any(|producer_id| {
            self.pending_offset(producer_id, group_id, topic, partition)
                .is_some()
        })
    }

    /// The pending offset `producer_id`'s open transaction wrote for the group's partition.
    pub fn pending_transactional_offset(
        &self,
        producer_id: i64,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<&OffsetCommitValue> {
        self.pending_offset(producer_id, group_id, topic, partition)
    }

    /// Whether a transaction that wrote offsets of the group is still open.
    pub fn has_open_transactions(&self, group_id: &str) -> bool {
        self.open_transactions.contains_key(group_id)
    }

    fn pending_producers<'a>(&'a self, group_id: &str) -> impl Iterator<Item = i64> + 'a {
        self.open_transactions
            .get(group_id)
            .into_iter()
            .flatten()
            .copied()
    }

    fn pending_offset(
        &self,
        producer_id: i64,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<&OffsetCommitValue> {
        self.pending_transactional
            .get(&producer_id)?
            .get(group_id)?
            .get(&(topic.to_string(), partition))
            .map(|o| &o.value)
    }

    /// The partitions of a group that open transactions wrote offsets for, each once, in order.
    pub(super) fn pending_partitions(&self, group_id: &str) -> Vec<(String, i32)> {
        let mut keys: Vec<(String, i32)> = self
            .pending_producers(group_id)
            .filter_map(|producer_id| self.pending_transactional.get(&producer_id)?.get(group_id))
            .flat_map(|offsets| offsets.keys().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// An offset tombstone also removes the partition's pending offsets from every open transaction of the group
    /// (the producers stay open until their marker).
    pub(super) fn remove_pending_offsets(&mut self, group_id: &str, topic: &str, partition: i32) {
        let producers: Vec<i64> = self.pending_producers(group_id).collect();
        let key = (topic.to_string(), partition);
        for producer_id in producers {
            let Some(by_group) = self.pending_transactional.get_mut(&producer_id) else {
                continue;
            };
            if let Some(offsets) = by_group.get_mut(group_id) {
                offsets.remove(&key);
                if offsets.is_empty() {
                    by_group.remove(group_id);
                }
            }
            if by_group.is_empty() {
                self.pending_transactional.remove(&producer_id);
            }
        }
    }
}
