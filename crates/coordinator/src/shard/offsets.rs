//! Committed offsets of a shard: OffsetCommit, OffsetFetch (with KIP-447's `require_stable`), OffsetDelete
//! (KIP-496) and offset expiry (KIP-211). Offsets change only through records: each commit or deletion is
//! emitted, and so replayed. Transactional commits are in `txn_offsets`.

use std::collections::BTreeSet;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
};

use super::{code, CoordinatorResult, GroupCoordinatorShard, GroupError, Records};
use crate::group::{ClassicGroup, GroupState};
use crate::record::{CoordinatorRecord, OffsetCommitValue};

/// One committed offset, as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset, -1 when none is committed.
    pub offset: i64,
    /// Leader epoch, -1 when unknown.
    pub leader_epoch: i32,
    /// Metadata string (`None` when no offset is committed, as Kafka answers).
    pub metadata: Option<String>,
    /// The partition's error: [`GroupError::UnstableOffsetCommit`] when stable offsets were asked for and a
    /// transaction's offset for the partition is pending (offset -1 then), else [`GroupError::None`].
    pub error: GroupError,
}

impl CommittedOffset {
    fn of(topic: &str, partition: i32, v: &OffsetCommitValue) -> CommittedOffset {
        CommittedOffset {
            topic: topic.to_string(),
            partition,
            offset: v.offset,
            leader_epoch: v.leader_epoch,
            metadata: Some(v.metadata.clone()),
            error: GroupError::None,
        }
    }

    /// A partition without an offset to answer: -1 and an empty metadata string, as Kafka answers.
    fn none(topic: &str, partition: i32, error: GroupError) -> CommittedOffset {
        CommittedOffset {
            topic: topic.to_string(),
            partition,
            offset: -1,
            leader_epoch: -1,
            metadata: Some(String::new()),
            error,
        }
    }
}

/// Kafka's `offset.metadata.max.bytes` check (`OffsetMetadataManager.isMetadataInvalid`) measures the metadata
/// as a Java string: in UTF-16 code units.
pub(super) fn metadata_length(metadata: &str) -> usize {
    metadata.encode_utf16().count()
}

impl GroupCoordinatorShard {
    /// OffsetCommit (Kafka's `OffsetMetadataManager.commitOffset` for classic groups). `known_partition` says
    /// whether a topic-partition exists (UNKNOWN_TOPIC_OR_PARTITION otherwise, as KafkaApis checks).
    pub fn offset_commit(
        &mut self,
        now_ms: i64,
        api_version: i16,
        request: &OffsetCommitRequest,
        known_partition: &dyn Fn(&str, i32) -> bool,
    ) -> CoordinatorResult<OffsetCommitResponse> {
        let mut records = Vec::new();
        let group_id = request.group_id.0.to_string();
        let group_error = self.validate_offset_commit(now_ms, api_version, request);
        // OffsetCommit v2-v4 may set a retention time: the offset then expires at commit time + retention.
        let expire_timestamp_ms = if api_version <= 4 && request.retention_time_ms >= 0 {
            now_ms.saturating_add(request.retention_time_ms)
        } else {
            -1
        };
        let mut topics = Vec::new();
        for t in &request.topics {
            let mut partitions = Vec::new();
            for p in &t.partitions {
                let metadata = p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let error = if group_error != GroupError::None {
                    group_error
                } else if !known_partition(t.name.0.as_str(), p.partition_index) {
                    GroupError::UnknownTopicOrPartition
                } else if metadata_length(&metadata) > self.config.offset_metadata_max_bytes {
                    GroupError::OffsetMetadataTooLarge
                } else {
                    let record = CoordinatorRecord::OffsetCommit {
                        group_id: group_id.clone(),
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        value: Some(OffsetCommitValue {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata,
                            commit_timestamp_ms: now_ms,
                            expire_timestamp_ms,
                        }),
                    };
                    self.emit(&mut records, record);
                    GroupError::None
                };
                partitions.push(
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code(error)),
                );
            }
            topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
        CoordinatorResult {
            records,
            response: OffsetCommitResponse::default().with_topics(topics),
            deliveries: Vec::new(),
        }
    }

    fn validate_offset_commit(
        &mut self,
        now_ms: i64,
        api_version: i16,
        request: &OffsetCommitRequest,
    ) -> GroupError {
        let group_id = request.group_id.0.as_str();
        let generation = request.generation_id_or_member_epoch;
        let member_id = request.member_id.as_str();
        let instance_id = request.group_instance_id.as_deref();
        let Some(group) = self.groups.get_mut(group_id) else {
            if generation < 0 {
                // A standalone consumer (assign + commit): Kafka creates an Empty group for it.
                self.groups
                    .insert(group_id.to_string(), ClassicGroup::new(group_id, now_ms));
                return GroupError::None;
            }
            return if api_version >= 9 {
                GroupError::GroupIdNotFound
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
        if group.is_fenced(member_id, instance_id) {
            return GroupError::FencedInstanceId;
        }
        if generation >= 0 || !member_id.is_empty() {
            if !group.has_member(member_id) {
                return GroupError::UnknownMemberId;
            }
            if generation != group.generation {
                return GroupError::IllegalGeneration;
            }
            if group.state == GroupState::CompletingRebalance {
                return GroupError::RebalanceInProgress;
            }
            if let Some(m) = group.member_mut(member_id) {
                m.renew_session(now_ms);
            }
            GroupError::None
        } else {
            // A commit without generation for a group with members: the group uses Kafka for offsets only
            // through its members.
            GroupError::UnknownMemberId
        }
    }

    /// OffsetFetch for one group: the requested partitions (or, with `None`, every committed offset). A group
    /// without offsets answers -1 for each partition. Offsets of open transactions are never answered; with
    /// `require_stable` (OffsetFetch v7+, KIP-447) a partition that has one answers UNSTABLE_OFFSET_COMMIT
    /// instead of its committed offset, so that a consumer does not start from an offset its transactional
    /// producer is about to replace (Kafka's `OffsetMetadataManager.fetchOffsets`/`fetchAllOffsets`: per
    /// partition, and for "all partitions" only over the committed ones).
    pub fn offset_fetch(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
        require_stable: bool,
    ) -> Vec<CommittedOffset> {
        let offsets = self.offsets.get(group_id);
        let unstable = |topic: &str, partition: i32| {
            require_stable && self.has_pending_transactional_offsets(group_id, topic, partition)
        };
        match topics {
            Some(topics) => topics
                .iter()
                .flat_map(|(topic, partitions)| {
                    partitions.iter().map(move |&p| {
                        if unstable(topic, p) {
                            return CommittedOffset::none(
                                topic,
                                p,
                                GroupError::UnstableOffsetCommit,
                            );
                        }
                        match offsets.and_then(|o| o.get(&(topic.clone(), p))) {
                            Some(o) => CommittedOffset::of(topic, p, &o.value),
                            None => CommittedOffset::none(topic, p, GroupError::None),
                        }
                    })
                })
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|((topic, partition), o)| {
                    if unstable(topic, *partition) {
                        CommittedOffset::none(topic, *partition, GroupError::UnstableOffsetCommit)
                    } else {
                        CommittedOffset::of(topic, *partition, &o.value)
                    }
                })
                .collect(),
        }
    }

    /// OffsetDelete (KIP-496): offsets of topics the group does not subscribe to are deleted (tombstones, also
    /// for a partition that has only a pending transactional offset, as Kafka).
    pub fn offset_delete(
        &mut self,
        request: &OffsetDeleteRequest,
    ) -> CoordinatorResult<OffsetDeleteResponse> {
        let mut records = Vec::new();
        let group_id = request.group_id.0.to_string();
        let group_error = match self.groups.get(&group_id) {
            None => GroupError::GroupIdNotFound,
            Some(g) if g.state == GroupState::Dead => GroupError::GroupIdNotFound,
            Some(g)
                if g.state != GroupState::Empty
                    && g.protocol_type.as_deref() != Some("consumer") =>
            {
                GroupError::NonEmptyGroup
            }
            Some(_) => GroupError::None,
        };
        let mut response = OffsetDeleteResponse::default().with_error_code(code(group_error));
        if group_error != GroupError::None {
            return CoordinatorResult {
                records,
                response,
                deliveries: Vec::new(),
            };
        }
        let subscribed: Option<BTreeSet<String>> = self.groups.get(&group_id).and_then(|g| {
            if g.state == GroupState::Empty {
                Some(BTreeSet::new())
            } else {
                g.subscribed_topics()
            }
        });
        for t in &request.topics {
            let topic = t.name.0.to_string();
            let is_subscribed = subscribed.as_ref().is_none_or(|s| s.contains(&topic));
            let mut partitions = Vec::new();
            for p in &t.partitions {
                let error = if is_subscribed {
                    GroupError::GroupSubscribedToTopic
                } else {
                    if self
                        .committed_offset(&group_id, &topic, p.partition_index)
                        .is_some()
                        || self.has_pending_transactional_offsets(
                            &group_id,
                            &topic,
                            p.partition_index,
                        )
                    {
                        self.emit_offset_tombstone(
                            &mut records,
                            &group_id,
                            topic.clone(),
                            p.partition_index,
                        );
                    }
                    GroupError::None
                };
                partitions.push(
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code(error)),
                );
            }
            response.topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
        CoordinatorResult {
            records,
            response,
            deliveries: Vec::new(),
        }
    }

    /// Offset expiry (`offsets.retention.minutes`, KIP-211): a group's offsets expire `retention` after it
    /// became Empty (or after the commit, for a group that never had members or for topics a Stable consumer
    /// group no longer subscribes to); an Empty group whose offsets all expired is deleted (tombstone).
    ///
    /// As Kafka's `cleanupExpiredOffsets`, an offset with a pending transactional offset for its partition does
    /// not expire, and a group with an open transaction is not deleted. (Kafka still deletes a group that has no
    /// committed offset at all while a transaction is open; we keep it, so that the transaction's offsets have
    /// their group when they commit.)
    pub(super) fn expire_offsets(&mut self, now_ms: i64, records: &mut Records) {
        let retention = self.config.offsets_retention_ms;
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for group_id in ids {
            let Some(g) = self.groups.get(&group_id) else {
                continue;
            };
            // (base timestamp from the state, topics whose offsets may expire)
            let condition: Option<(Option<i64>, Option<BTreeSet<String>>)> = match g.state {
                GroupState::Empty if g.protocol_type.is_some() => {
                    Some((Some(g.state_timestamp_ms), None))
                }
                GroupState::Empty => Some((None, None)),
                GroupState::Stable => g.subscribed_topics().map(|s| (None, Some(s))),
                _ => None,
            };
            let Some((base, subscribed)) = condition else {
                continue;
            };
            let expired: Vec<(String, i32)> = self
                .offsets
                .get(&group_id)
                .into_iter()
                .flatten()
                .filter(|((topic, partition), o)| {
                    let v = &o.value;
                    if subscribed.as_ref().is_some_and(|s| s.contains(topic)) {
                        return false;
                    }
                    if self.has_pending_transactional_offsets(&group_id, topic, *partition) {
                        return false;
                    }
                    if v.expire_timestamp_ms >= 0 {
                        return now_ms >= v.expire_timestamp_ms;
                    }
                    now_ms - base.unwrap_or(v.commit_timestamp_ms) >= retention
                })
                .map(|(k, _)| k.clone())
                .collect();
            for (topic, partition) in expired {
                self.emit_offset_tombstone(records, &group_id, topic, partition);
            }
            let empty = self.groups.get(&group_id).is_some_and(|g| {
                g.state == GroupState::Empty
                    && !self.offsets.contains_key(&group_id)
                    && !self.open_transactions.contains_key(&group_id)
            });
            if empty {
                self.emit_group_tombstone(records, &group_id);
            }
        }
    }
}
