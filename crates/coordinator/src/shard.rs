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

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetDeleteRequest, OffsetDeleteResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;

use crate::group::{ClassicGroup, GroupState, InitialDelay, Member};
use crate::record::{CoordinatorRecord, OffsetCommitValue};

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
}

/// The groups and offsets of one `__consumer_offsets` partition.
#[derive(Debug, Clone)]
pub struct GroupCoordinatorShard {
    config: GroupCoordinatorConfig,
    groups: BTreeMap<String, ClassicGroup>,
    offsets: BTreeMap<String, BTreeMap<(String, i32), OffsetCommitValue>>,
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
    }

    // ------------------------------------------------------------------------------------------------------
    // Replay (loading, and the write path of offsets and deletions)
    // ------------------------------------------------------------------------------------------------------

    /// Applies one record of the partition: how a partition is loaded, and how offset commits and deletions
    /// change state. A GroupMetadataValue rebuilds the group as it was persisted (Empty without members,
    /// Stable with them); tombstones remove.
    pub fn replay(&mut self, record: &CoordinatorRecord) {
        match record {
            CoordinatorRecord::OffsetCommit {
                group_id,
                topic,
                partition,
                value,
            } => match value {
                Some(v) => {
                    // Kafka creates a simple (Empty, no protocol) group for a standalone commit.
                    self.groups
                        .entry(group_id.clone())
                        .or_insert_with(|| ClassicGroup::new(group_id, v.commit_timestamp_ms));
                    self.offsets
                        .entry(group_id.clone())
                        .or_default()
                        .insert((topic.clone(), *partition), v.clone());
                }
                None => {
                    if let Some(o) = self.offsets.get_mut(group_id) {
                        o.remove(&(topic.clone(), *partition));
                        if o.is_empty() {
                            self.offsets.remove(group_id);
                        }
                    }
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

    /// Called once a load finished replaying: every loaded member's session starts now (Kafka reschedules
    /// heartbeats of loaded classic groups), and the first offset-expiry check is scheduled.
    pub fn finish_loading(&mut self, now_ms: i64) {
        for group in self.groups.values_mut() {
            for m in &mut group.members {
                m.heartbeat_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
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

    fn store_group(&mut self, records: &mut Records, group_id: &str) {
        if let Some(g) = self.groups.get(group_id) {
            records.push(CoordinatorRecord::GroupMetadata {
                group_id: group_id.to_string(),
                value: Some(g.to_record()),
            });
        }
    }

    fn generate_member_id(&mut self, prefix: &str) -> String {
        // A UUID-shaped suffix (Kafka: `clientId-UUID`), derived from the seed and a counter (splitmix64).
        self.member_id_counter += 1;
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let a = mix(self
            .member_id_seed
            .wrapping_add(self.member_id_counter.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let b = mix(a ^ self.member_id_counter);
        format!(
            "{prefix}-{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    // ------------------------------------------------------------------------------------------------------
    // JoinGroup
    // ------------------------------------------------------------------------------------------------------

    /// JoinGroup (Kafka's `classicGroupJoin`).
    pub fn join_group(
        &mut self,
        now_ms: i64,
        client: &ClientInfo,
        request: &JoinGroupRequest,
    ) -> CoordinatorResult<Parkable<JoinGroupResponse>> {
        let mut records = Vec::new();
        let mut deliveries = Vec::new();
        let response = self.join_inner(now_ms, client, request, &mut records, &mut deliveries);
        CoordinatorResult {
            records,
            response,
            deliveries,
        }
    }

    fn join_inner(
        &mut self,
        now_ms: i64,
        client: &ClientInfo,
        request: &JoinGroupRequest,
        records: &mut Records,
        deliveries: &mut Deliveries,
    ) -> Parkable<JoinGroupResponse> {
        let v = client.api_version;
        let group_id = request.group_id.0.to_string();
        let member_id = request.member_id.to_string();
        let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
        let err = |e: GroupError, member_id: &str| Parkable::Now(join_error(v, e, member_id));
        if group_id.is_empty() {
            return err(GroupError::InvalidGroupId, &member_id);
        }
        if request.session_timeout_ms < self.config.min_session_timeout_ms
            || request.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return err(GroupError::InvalidSessionTimeout, &member_id);
        }
        let is_unknown = member_id.is_empty();
        if !self.groups.contains_key(&group_id) {
            if !is_unknown {
                return err(GroupError::UnknownMemberId, &member_id);
            }
            self.groups
                .insert(group_id.clone(), ClassicGroup::new(&group_id, now_ms));
        }
        let protocols: Vec<(String, Bytes)> = request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect();
        let protocol_type = request.protocol_type.to_string();
        let max = self.config.max_group_size;
        let group = match self.groups.get_mut(&group_id) {
            Some(g) => g,
            None => return err(GroupError::CoordinatorNotAvailable, &member_id),
        };
        // group.max.size (Kafka's acceptJoiningMember).
        let accept = match group.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                group
                    .member(&member_id)
                    .is_some_and(|m| m.awaiting_join.is_some())
                    || group.num_awaiting_join() < max
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                group.has_member(&member_id) || group.members.len() < max
            }
        };
        if !accept {
            if group.has_member(&member_id) {
                self.remove_member_and_update_group(
                    now_ms, &group_id, &member_id, records, deliveries,
                );
            }
            return err(GroupError::GroupMaxSizeReached, &member_id);
        }
        let new_member = Member {
            member_id: String::new(),
            group_instance_id: instance_id.clone(),
            client_id: client.client_id.clone(),
            client_host: client.client_host.clone(),
            rebalance_timeout_ms: if v == 0 {
                request.session_timeout_ms
            } else {
                request.rebalance_timeout_ms
            },
            session_timeout_ms: request.session_timeout_ms,
            protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(v),
            awaiting_sync: None,
            heartbeat_deadline_ms: now_ms + i64::from(request.session_timeout_ms),
        };
        if group.state == GroupState::Dead {
            return err(GroupError::CoordinatorNotAvailable, &member_id);
        }
        if !group.supports_protocols(&protocol_type, &new_member.protocols) {
            return err(GroupError::InconsistentGroupProtocol, &member_id);
        }
        if is_unknown {
            let prefix = instance_id
                .clone()
                .unwrap_or_else(|| client.client_id.clone());
            let new_id = self.generate_member_id(&prefix);
            match instance_id {
                Some(instance_id) => self.join_new_static_member(
                    now_ms,
                    &group_id,
                    &instance_id,
                    new_id,
                    new_member,
                    &protocol_type,
                    records,
                    deliveries,
                ),
                None => {
                    if v >= 4 {
                        // KIP-394: hand out the member id and make the client join again with it.
                        let deadline = now_ms + i64::from(request.session_timeout_ms);
                        if let Some(g) = self.groups.get_mut(&group_id) {
                            g.pending_members.insert(new_id.clone(), deadline);
                        }
                        return Parkable::Now(join_error(v, GroupError::MemberIdRequired, &new_id));
                    }
                    self.add_member_and_rebalance(
                        now_ms,
                        &group_id,
                        new_id,
                        new_member,
                        &protocol_type,
                        deliveries,
                    )
                }
            }
        } else {
            self.join_existing_member(
                now_ms,
                &group_id,
                member_id,
                new_member,
                &protocol_type,
                records,
                deliveries,
            )
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        now_ms: i64,
        group_id: &str,
        member_id: String,
        mut member: Member,
        protocol_type: &str,
        deliveries: &mut Deliveries,
    ) -> Parkable<JoinGroupResponse> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return Parkable::Now(join_error(
                member.awaiting_join.unwrap_or(0),
                GroupError::CoordinatorNotAvailable,
                &member_id,
            ));
        };
        member.member_id = member_id.clone();
        group.pending_members.remove(&member_id);
        if group.members.is_empty() {
            group.protocol_type = Some(protocol_type.to_string());
        }
        group.add_member(member);
        if let Some(d) = group.initial_delay.as_mut() {
            d.new_member_added = true;
        }
        self.maybe_prepare_rebalance(now_ms, group_id, deliveries);
        self.maybe_complete_join(now_ms, group_id, &mut Vec::new(), deliveries);
        Parkable::Parked { member_id }
    }

    #[allow(clippy::too_many_arguments)]
    fn join_new_static_member(
        &mut self,
        now_ms: i64,
        group_id: &str,
        instance_id: &str,
        new_id: String,
        member: Member,
        protocol_type: &str,
        records: &mut Records,
        deliveries: &mut Deliveries,
    ) -> Parkable<JoinGroupResponse> {
        let v = member.awaiting_join.unwrap_or(0);
        let Some(group) = self.groups.get_mut(group_id) else {
            return Parkable::Now(join_error(v, GroupError::CoordinatorNotAvailable, &new_id));
        };
        let Some(old_id) = group.static_member_id(instance_id).map(str::to_string) else {
            return self.add_member_and_rebalance(
                now_ms,
                group_id,
                new_id,
                member,
                protocol_type,
                deliveries,
            );
        };
        // KIP-345: a known static member rejoins with a fresh id; the old id is fenced.
        let protocols_changed = group
            .member(&old_id)
            .is_none_or(|m| !m.same_protocols(&member.protocols));
        replace_static_member(group, &old_id, &new_id, &member, deliveries);
        match group.state {
            GroupState::Stable if !protocols_changed => {
                let was_leader = group.is_leader(&new_id);
                if was_leader && v < 9 {
                    // A leader that cannot be told to skip the assignment (JoinGroup < v9) is answered with
                    // the old leader id and no members, so it does not think itself the leader and no
                    // rebalance is needed (Kafka's GroupCoordinator since KIP-345).
                    group.pending_sync.remove(&new_id);
                    let response = join_success(group, &new_id, v, false).with_leader(sb(&old_id));
                    self.store_group(records, group_id);
                    return Parkable::Now(response);
                }
                group.pending_sync.remove(&new_id);
                let response = join_success(group, &new_id, v, was_leader);
                self.store_group(records, group_id);
                Parkable::Now(response)
            }
            GroupState::PreparingRebalance => {
                if let Some(m) = group.member_mut(&new_id) {
                    m.awaiting_join = Some(v);
                }
                self.maybe_complete_join(now_ms, group_id, records, deliveries);
                Parkable::Parked { member_id: new_id }
            }
            _ => {
                if let Some(m) = group.member_mut(&new_id) {
                    m.awaiting_join = Some(v);
                }
                self.prepare_rebalance(now_ms, group_id, deliveries);
                self.maybe_complete_join(now_ms, group_id, records, deliveries);
                Parkable::Parked { member_id: new_id }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn join_existing_member(
        &mut self,
        now_ms: i64,
        group_id: &str,
        member_id: String,
        member: Member,
        protocol_type: &str,
        records: &mut Records,
        deliveries: &mut Deliveries,
    ) -> Parkable<JoinGroupResponse> {
        let v = member.awaiting_join.unwrap_or(0);
        let Some(group) = self.groups.get_mut(group_id) else {
            return Parkable::Now(join_error(v, GroupError::UnknownMemberId, &member_id));
        };
        if group.pending_members.contains_key(&member_id) {
            return self.add_member_and_rebalance(
                now_ms,
                group_id,
                member_id,
                member,
                protocol_type,
                deliveries,
            );
        }
        if group.is_fenced(&member_id, member.group_instance_id.as_deref()) {
            return Parkable::Now(join_error(v, GroupError::FencedInstanceId, &member_id));
        }
        let Some(existing) = group.member(&member_id) else {
            return Parkable::Now(join_error(v, GroupError::UnknownMemberId, &member_id));
        };
        let same = existing.same_protocols(&member.protocols);
        let is_leader = group.is_leader(&member_id);
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                Parkable::Now(join_error(v, GroupError::UnknownMemberId, &member_id))
            }
            GroupState::CompletingRebalance if same => {
                // A retried join of this generation: answer with it again (the leader with the members).
                Parkable::Now(join_success(group, &member_id, v, is_leader))
            }
            GroupState::Stable if same && !is_leader => {
                Parkable::Now(join_success(group, &member_id, v, false))
            }
            _ => {
                // Update the member's protocols and (re)join the rebalance.
                if let Some(m) = group.member_mut(&member_id) {
                    m.protocols = member.protocols;
                    m.rebalance_timeout_ms = member.rebalance_timeout_ms;
                    m.session_timeout_ms = member.session_timeout_ms;
                    m.client_id = member.client_id;
                    m.client_host = member.client_host;
                    m.awaiting_join = Some(v);
                    m.heartbeat_deadline_ms = member.heartbeat_deadline_ms;
                }
                if let Some(d) = group.initial_delay.as_mut() {
                    d.new_member_added = true;
                }
                self.maybe_prepare_rebalance(now_ms, group_id, deliveries);
                self.maybe_complete_join(now_ms, group_id, records, deliveries);
                Parkable::Parked { member_id }
            }
        }
    }

    fn maybe_prepare_rebalance(
        &mut self,
        now_ms: i64,
        group_id: &str,
        deliveries: &mut Deliveries,
    ) {
        let can = self.groups.get(group_id).is_some_and(|g| {
            matches!(
                g.state,
                GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
            )
        });
        if can {
            self.prepare_rebalance(now_ms, group_id, deliveries);
        }
    }

    /// Kafka's `prepareRebalance`: parked syncs of the aborted generation get REBALANCE_IN_PROGRESS; a group
    /// that was Empty waits `group.initial.rebalance.delay.ms` (KIP-134), any other the rebalance timeout.
    fn prepare_rebalance(&mut self, now_ms: i64, group_id: &str, deliveries: &mut Deliveries) {
        let initial_delay_ms = self.config.initial_rebalance_delay_ms;
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        if group.state == GroupState::CompletingRebalance {
            for m in &mut group.members {
                m.assignment = Bytes::new();
                if let Some(sv) = m.awaiting_sync.take() {
                    deliveries.push(Delivery::Sync {
                        group_id: group_id.to_string(),
                        member_id: m.member_id.clone(),
                        response: sync_error(sv, GroupError::RebalanceInProgress),
                    });
                }
            }
        }
        let rebalance_timeout_ms = group.rebalance_timeout_ms();
        if group.state == GroupState::Empty && initial_delay_ms > 0 {
            let delay = initial_delay_ms.min(rebalance_timeout_ms.max(0));
            group.initial_delay = Some(InitialDelay {
                delay_ms: delay,
                remaining_ms: (rebalance_timeout_ms - delay).max(0),
                new_member_added: false,
            });
            group.rebalance_deadline_ms = Some(now_ms + delay);
        } else {
            group.initial_delay = None;
            group.rebalance_deadline_ms = Some(now_ms + rebalance_timeout_ms);
        }
        group.pending_sync.clear();
        group.sync_deadline_ms = None;
        group.transition(GroupState::PreparingRebalance, now_ms);
    }

    fn maybe_complete_join(
        &mut self,
        now_ms: i64,
        group_id: &str,
        records: &mut Records,
        deliveries: &mut Deliveries,
    ) {
        let ready = self.groups.get(group_id).is_some_and(|g| {
            g.state == GroupState::PreparingRebalance
                && g.initial_delay.is_none()
                && g.has_all_members_joined()
        });
        if ready {
            self.complete_join(now_ms, group_id, records, deliveries);
        }
    }

    /// Kafka's `onCompleteJoin`: dynamic members that did not rejoin are removed, the next generation starts
    /// and every waiting member gets its JoinGroup response (the leader with everyone's metadata).
    fn complete_join(
        &mut self,
        now_ms: i64,
        group_id: &str,
        records: &mut Records,
        deliveries: &mut Deliveries,
    ) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let gone: Vec<String> = group
            .members
            .iter()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            group.remove_member(&id);
        }
        group.rebalance_deadline_ms = None;
        group.initial_delay = None;
        group.generation += 1;
        if group.members.is_empty() {
            group.protocol_name = None;
            group.leader = None;
            group.transition(GroupState::Empty, now_ms);
            self.store_group(records, group_id);
            return;
        }
        group.protocol_name = group.select_protocol();
        // The leader must be a member that rejoined (Kafka's maybeElectNewJoinedLeader).
        let leader_joined = group
            .leader
            .as_deref()
            .and_then(|l| group.member(l))
            .is_some_and(|m| m.awaiting_join.is_some());
        if !leader_joined {
            group.leader = group
                .members
                .iter()
                .find(|m| m.awaiting_join.is_some())
                .map(|m| m.member_id.clone());
        }
        group.transition(GroupState::CompletingRebalance, now_ms);
        group.pending_sync = group.members.iter().map(|m| m.member_id.clone()).collect();
        group.sync_deadline_ms = Some(now_ms + group.rebalance_timeout_ms());
        let ids: Vec<(String, i16)> = group
            .members
            .iter()
            .filter_map(|m| m.awaiting_join.map(|v| (m.member_id.clone(), v)))
            .collect();
        for (id, v) in ids {
            let is_leader = group.is_leader(&id);
            let response = join_success(group, &id, v, is_leader);
            if let Some(m) = group.member_mut(&id) {
                m.awaiting_join = None;
                m.heartbeat_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
            }
            deliveries.push(Delivery::Join {
                group_id: group_id.to_string(),
                member_id: id,
                response,
            });
        }
    }

    /// Kafka's `removeMemberAndUpdateGroup`: parked requests of the member fail with UNKNOWN_MEMBER_ID, and the
    /// group rebalances (or completes a join that only waited for this member).
    fn remove_member_and_update_group(
        &mut self,
        now_ms: i64,
        group_id: &str,
        member_id: &str,
        records: &mut Records,
        deliveries: &mut Deliveries,
    ) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        let Some(member) = group.remove_member(member_id) else {
            return;
        };
        if let Some(v) = member.awaiting_join {
            deliveries.push(Delivery::Join {
                group_id: group_id.to_string(),
                member_id: member_id.to_string(),
                response: join_error(v, GroupError::UnknownMemberId, member_id),
            });
        }
        if let Some(v) = member.awaiting_sync {
            deliveries.push(Delivery::Sync {
                group_id: group_id.to_string(),
                member_id: member_id.to_string(),
                response: sync_error(v, GroupError::UnknownMemberId),
            });
        }
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, group_id, deliveries);
                self.maybe_complete_join(now_ms, group_id, records, deliveries);
            }
            GroupState::PreparingRebalance => {
                self.maybe_complete_join(now_ms, group_id, records, deliveries)
            }
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ------------------------------------------------------------------------------------------------------
    // SyncGroup, Heartbeat, LeaveGroup
    // ------------------------------------------------------------------------------------------------------

    /// SyncGroup (Kafka's `classicGroupSync`): the leader's assignment is persisted and completes every parked
    /// sync; in Stable a member gets its assignment at once.
    pub fn sync_group(
        &mut self,
        now_ms: i64,
        client: &ClientInfo,
        request: &SyncGroupRequest,
    ) -> CoordinatorResult<Parkable<SyncGroupResponse>> {
        let v = client.api_version;
        let mut records = Vec::new();
        let mut deliveries = Vec::new();
        let group_id = request.group_id.0.to_string();
        let member_id = request.member_id.to_string();
        let now = |e: GroupError| Parkable::Now(sync_error(v, e));
        let response = (|| {
            if group_id.is_empty() {
                return now(GroupError::InvalidGroupId);
            }
            let Some(group) = self.groups.get_mut(&group_id) else {
                return now(GroupError::UnknownMemberId);
            };
            if group.state == GroupState::Dead {
                return now(GroupError::CoordinatorNotAvailable);
            }
            if group.is_fenced(&member_id, request.group_instance_id.as_deref()) {
                return now(GroupError::FencedInstanceId);
            }
            if !group.has_member(&member_id) {
                return now(GroupError::UnknownMemberId);
            }
            if request.generation_id != group.generation {
                return now(GroupError::IllegalGeneration);
            }
            let type_mismatch = request
                .protocol_type
                .as_ref()
                .is_some_and(|t| Some(t.as_str()) != group.protocol_type.as_deref());
            let name_mismatch = request
                .protocol_name
                .as_ref()
                .is_some_and(|n| Some(n.as_str()) != group.protocol_name.as_deref());
            if type_mismatch || name_mismatch {
                return now(GroupError::InconsistentGroupProtocol);
            }
            group.pending_sync.remove(&member_id);
            if group.pending_sync.is_empty() {
                group.sync_deadline_ms = None;
            }
            match group.state {
                GroupState::Empty | GroupState::Dead => now(GroupError::UnknownMemberId),
                GroupState::PreparingRebalance => now(GroupError::RebalanceInProgress),
                GroupState::Stable => {
                    let Some(m) = group.member_mut(&member_id) else {
                        return now(GroupError::UnknownMemberId);
                    };
                    m.heartbeat_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
                    let assignment = m.assignment.clone();
                    Parkable::Now(sync_success(group, v, assignment))
                }
                GroupState::CompletingRebalance => {
                    if let Some(m) = group.member_mut(&member_id) {
                        m.awaiting_sync = Some(v);
                        m.heartbeat_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
                    }
                    if group.is_leader(&member_id) {
                        let assignments: BTreeMap<&str, &Bytes> = request
                            .assignments
                            .iter()
                            .map(|a| (a.member_id.as_str(), &a.assignment))
                            .collect();
                        for m in &mut group.members {
                            m.assignment = assignments
                                .get(m.member_id.as_str())
                                .map(|b| (*b).clone())
                                .unwrap_or_default();
                        }
                        group.transition(GroupState::Stable, now_ms);
                        let parked: Vec<(String, i16, Bytes)> = group
                            .members
                            .iter_mut()
                            .filter_map(|m| {
                                m.awaiting_sync
                                    .take()
                                    .map(|sv| (m.member_id.clone(), sv, m.assignment.clone()))
                            })
                            .collect();
                        for (id, sv, assignment) in parked {
                            deliveries.push(Delivery::Sync {
                                group_id: group_id.clone(),
                                member_id: id,
                                response: sync_success(group, sv, assignment),
                            });
                        }
                        records.push(CoordinatorRecord::GroupMetadata {
                            group_id: group_id.clone(),
                            value: Some(group.to_record()),
                        });
                    }
                    Parkable::Parked {
                        member_id: member_id.clone(),
                    }
                }
            }
        })();
        CoordinatorResult {
            records,
            response,
            deliveries,
        }
    }

    /// Heartbeat (Kafka's `classicGroupHeartbeat`).
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        request: &HeartbeatRequest,
    ) -> CoordinatorResult<HeartbeatResponse> {
        let group_id = request.group_id.0.as_str();
        let member_id = request.member_id.as_str();
        let error = (|| {
            if group_id.is_empty() {
                return GroupError::InvalidGroupId;
            }
            let Some(group) = self.groups.get_mut(group_id) else {
                return GroupError::UnknownMemberId;
            };
            match group.state {
                GroupState::Dead => return GroupError::CoordinatorNotAvailable,
                GroupState::Empty => return GroupError::UnknownMemberId,
                _ => {}
            }
            if group.is_fenced(member_id, request.group_instance_id.as_deref()) {
                return GroupError::FencedInstanceId;
            }
            if !group.has_member(member_id) {
                return GroupError::UnknownMemberId;
            }
            if request.generation_id != group.generation {
                return GroupError::IllegalGeneration;
            }
            let state = group.state;
            if let Some(m) = group.member_mut(member_id) {
                m.heartbeat_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
            }
            if state == GroupState::PreparingRebalance {
                GroupError::RebalanceInProgress
            } else {
                GroupError::None
            }
        })();
        CoordinatorResult {
            records: Vec::new(),
            response: HeartbeatResponse::default().with_error_code(code(error)),
            deliveries: Vec::new(),
        }
    }

    /// LeaveGroup (Kafka's `classicGroupLeave`): v0-v2 name one member, v3+ a batch (KIP-345), each found by
    /// member id or, with an unknown member id, by group instance id.
    pub fn leave_group(
        &mut self,
        now_ms: i64,
        api_version: i16,
        request: &LeaveGroupRequest,
    ) -> CoordinatorResult<LeaveGroupResponse> {
        let mut records = Vec::new();
        let mut deliveries = Vec::new();
        let group_id = request.group_id.0.to_string();
        let identities: Vec<(String, Option<String>)> = if api_version <= 2 {
            vec![(request.member_id.to_string(), None)]
        } else {
            request
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        };
        let mut top_error = GroupError::None;
        let mut results = Vec::new();
        match self.groups.get(&group_id) {
            None => top_error = GroupError::UnknownMemberId,
            Some(g) if g.state == GroupState::Dead => {
                top_error = GroupError::CoordinatorNotAvailable
            }
            Some(_) => {
                for (member_id, instance_id) in identities {
                    let error = self.leave_one(
                        now_ms,
                        &group_id,
                        &member_id,
                        instance_id.as_deref(),
                        &mut records,
                        &mut deliveries,
                    );
                    results.push(
                        MemberResponse::default()
                            .with_member_id(sb(&member_id))
                            .with_group_instance_id(instance_id.as_deref().map(sb))
                            .with_error_code(code(error)),
                    );
                }
            }
        }
        let mut response = LeaveGroupResponse::default();
        if api_version <= 2 {
            let e = results
                .first()
                .map(|r| r.error_code)
                .unwrap_or(code(top_error));
            response.error_code = if top_error == GroupError::None {
                e
            } else {
                code(top_error)
            };
        } else {
            response.error_code = code(top_error);
            response.members = results;
        }
        CoordinatorResult {
            records,
            response,
            deliveries,
        }
    }

    fn leave_one(
        &mut self,
        now_ms: i64,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        records: &mut Records,
        deliveries: &mut Deliveries,
    ) -> GroupError {
        let Some(group) = self.groups.get_mut(group_id) else {
            return GroupError::UnknownMemberId;
        };
        let target = match instance_id {
            Some(i) => match group.static_member_id(i) {
                None => return GroupError::UnknownMemberId,
                Some(registered) if !member_id.is_empty() && registered != member_id => {
                    return GroupError::FencedInstanceId
                }
                Some(registered) => registered.to_string(),
            },
            None => member_id.to_string(),
        };
        if group.pending_members.remove(&target).is_some() {
            self.maybe_complete_join(now_ms, group_id, records, deliveries);
            return GroupError::None;
        }
        if !group.has_member(&target) {
            return GroupError::UnknownMemberId;
        }
        self.remove_member_and_update_group(now_ms, group_id, &target, records, deliveries);
        GroupError::None
    }

    // ------------------------------------------------------------------------------------------------------
    // Offsets
    // ------------------------------------------------------------------------------------------------------

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
                } else if metadata.len() > self.config.offset_metadata_max_bytes {
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
                m.heartbeat_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
            }
            GroupError::None
        } else {
            // A commit without generation for a group with members: the group uses Kafka for offsets only
            // through its members.
            GroupError::UnknownMemberId
        }
    }

    /// OffsetFetch for one group: the requested partitions (or, with `None`, every committed offset). A group
    /// without offsets answers -1 for each partition. `require_stable` (KIP-447) has nothing to wait for
    /// without transactional commits.
    pub fn offset_fetch(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<CommittedOffset> {
        let offsets = self.offsets.get(group_id);
        match topics {
            Some(topics) => topics
                .iter()
                .flat_map(|(topic, partitions)| {
                    partitions.iter().map(move |p| {
                        match offsets.and_then(|o| o.get(&(topic.clone(), *p))) {
                            Some(v) => CommittedOffset {
                                topic: topic.clone(),
                                partition: *p,
                                offset: v.offset,
                                leader_epoch: v.leader_epoch,
                                metadata: Some(v.metadata.clone()),
                            },
                            None => CommittedOffset {
                                topic: topic.clone(),
                                partition: *p,
                                offset: -1,
                                leader_epoch: -1,
                                metadata: Some(String::new()),
                            },
                        }
                    })
                })
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|((topic, partition), v)| CommittedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: v.offset,
                    leader_epoch: v.leader_epoch,
                    metadata: Some(v.metadata.clone()),
                })
                .collect(),
        }
    }

    /// OffsetDelete (KIP-496): offsets of topics the group does not subscribe to are deleted (tombstones).
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
                    {
                        let record = CoordinatorRecord::OffsetCommit {
                            group_id: group_id.clone(),
                            topic: topic.clone(),
                            partition: p.partition_index,
                            value: None,
                        };
                        self.emit(&mut records, record);
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

    // ------------------------------------------------------------------------------------------------------
    // ListGroups, DescribeGroups, DeleteGroups
    // ------------------------------------------------------------------------------------------------------

    /// ListGroups of this shard, filtered by state (v4+, KIP-518) and type (v5+, KIP-848: only `classic` here).
    pub fn list_groups(&self, states: &[String], types: &[String]) -> Vec<ListedGroup> {
        if !types.is_empty() && !types.iter().any(|t| t.eq_ignore_ascii_case("classic")) {
            return Vec::new();
        }
        let states: Vec<GroupState> = states.iter().filter_map(|s| GroupState::parse(s)).collect();
        self.groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .filter(|g| states.is_empty() || states.contains(&g.state))
            .map(|g| {
                ListedGroup::default()
                    .with_group_id(GroupId(sb(&g.group_id)))
                    .with_protocol_type(sb(g.protocol_type.as_deref().unwrap_or("")))
                    .with_group_state(sb(g.state.name()))
                    .with_group_type(sb("classic"))
            })
            .collect()
    }

    /// DescribeGroups for one group. An unknown group is described as Dead with no error (v0-v5).
    pub fn describe_group(&self, group_id: &str) -> DescribedGroup {
        let base = DescribedGroup::default().with_group_id(GroupId(sb(group_id)));
        let Some(g) = self.groups.get(group_id) else {
            return base
                .with_group_state(sb(GroupState::Dead.name()))
                .with_protocol_type(sb(""))
                .with_protocol_data(sb(""));
        };
        let stable = g.state == GroupState::Stable;
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let members = g
            .members
            .iter()
            .map(|m| {
                let (metadata, assignment) = if stable {
                    (
                        m.metadata(&protocol).cloned().unwrap_or_default(),
                        m.assignment.clone(),
                    )
                } else {
                    (Bytes::new(), Bytes::new())
                };
                DescribedGroupMember::default()
                    .with_member_id(sb(&m.member_id))
                    .with_group_instance_id(m.group_instance_id.as_deref().map(sb))
                    .with_client_id(sb(&m.client_id))
                    .with_client_host(sb(&m.client_host))
                    .with_member_metadata(metadata)
                    .with_member_assignment(assignment)
            })
            .collect();
        base.with_group_state(sb(g.state.name()))
            .with_protocol_type(sb(g.protocol_type.as_deref().unwrap_or("")))
            .with_protocol_data(sb(if stable { &protocol } else { "" }))
            .with_members(members)
    }

    /// DeleteGroups for one group: only an Empty group is deleted (offset tombstones, then the group's).
    pub fn delete_group(&mut self, group_id: &str) -> CoordinatorResult<i16> {
        let mut records = Vec::new();
        let error = match self.groups.get(group_id) {
            None => GroupError::GroupIdNotFound,
            Some(g) if g.state == GroupState::Dead => GroupError::GroupIdNotFound,
            Some(g) if g.state != GroupState::Empty => GroupError::NonEmptyGroup,
            Some(_) => {
                self.delete_group_records(group_id, &mut records);
                GroupError::None
            }
        };
        CoordinatorResult {
            records,
            response: code(error),
            deliveries: Vec::new(),
        }
    }

    fn delete_group_records(&mut self, group_id: &str, records: &mut Records) {
        let keys: Vec<(String, i32)> = self
            .offsets
            .get(group_id)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for (topic, partition) in keys {
            self.emit(
                records,
                CoordinatorRecord::OffsetCommit {
                    group_id: group_id.to_string(),
                    topic,
                    partition,
                    value: None,
                },
            );
        }
        self.emit(
            records,
            CoordinatorRecord::GroupMetadata {
                group_id: group_id.to_string(),
                value: None,
            },
        );
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

    fn poll_group(
        &mut self,
        now_ms: i64,
        group_id: &str,
        records: &mut Records,
        deliveries: &mut Deliveries,
    ) {
        // KIP-394 member ids that never came back.
        if let Some(g) = self.groups.get_mut(group_id) {
            let expired: Vec<String> = g
                .pending_members
                .iter()
                .filter(|(_, d)| **d <= now_ms)
                .map(|(id, _)| id.clone())
                .collect();
            if !expired.is_empty() {
                for id in &expired {
                    g.pending_members.remove(id);
                }
                self.maybe_complete_join(now_ms, group_id, records, deliveries);
            }
        }
        // Session timeouts: members with a parked request are kept alive (Kafka's shouldKeepAlive).
        let expired: Vec<String> = match self.groups.get_mut(group_id) {
            Some(g) => {
                let mut out = Vec::new();
                for m in &mut g.members {
                    if m.heartbeat_deadline_ms <= now_ms {
                        if m.awaiting_join.is_some() || m.awaiting_sync.is_some() {
                            m.heartbeat_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
                        } else {
                            out.push(m.member_id.clone());
                        }
                    }
                }
                out
            }
            None => return,
        };
        for id in expired {
            self.remove_member_and_update_group(now_ms, group_id, &id, records, deliveries);
        }
        // Rebalance timeout / initial delay.
        let due = self.groups.get(group_id).is_some_and(|g| {
            g.state == GroupState::PreparingRebalance
                && g.rebalance_deadline_ms.is_some_and(|d| d <= now_ms)
        });
        if due {
            let extend = self.groups.get_mut(group_id).and_then(|g| {
                let d = g.initial_delay.as_mut()?;
                if d.new_member_added && d.remaining_ms > 0 {
                    let step = d.delay_ms.min(d.remaining_ms);
                    d.remaining_ms -= step;
                    d.new_member_added = false;
                    g.rebalance_deadline_ms = Some(now_ms + step);
                    Some(())
                } else {
                    None
                }
            });
            if extend.is_none() {
                self.complete_join(now_ms, group_id, records, deliveries);
            }
        }
        // Sync timeout: members that never sent SyncGroup are removed and the group rebalances.
        let unsynced: Vec<String> = match self.groups.get_mut(group_id) {
            Some(g)
                if matches!(
                    g.state,
                    GroupState::CompletingRebalance | GroupState::Stable
                ) && g.sync_deadline_ms.is_some_and(|d| d <= now_ms) =>
            {
                g.sync_deadline_ms = None;
                std::mem::take(&mut g.pending_sync).into_iter().collect()
            }
            _ => Vec::new(),
        };
        for id in unsynced {
            self.remove_member_and_update_group(now_ms, group_id, &id, records, deliveries);
        }
    }

    /// Offset expiry (`offsets.retention.minutes`, KIP-211): a group's offsets expire `retention` after it
    /// became Empty (or after the commit, for a group that never had members or for topics a Stable consumer
    /// group no longer subscribes to); an Empty group whose offsets all expired is deleted (tombstone).
    fn expire_offsets(&mut self, now_ms: i64, records: &mut Records) {
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
                .filter(|((topic, _), v)| {
                    if subscribed.as_ref().is_some_and(|s| s.contains(topic)) {
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
                self.emit(
                    records,
                    CoordinatorRecord::OffsetCommit {
                        group_id: group_id.clone(),
                        topic,
                        partition,
                        value: None,
                    },
                );
            }
            let empty = self.groups.get(&group_id).is_some_and(|g| {
                g.state == GroupState::Empty && !self.offsets.contains_key(&group_id)
            });
            if empty {
                self.emit(
                    records,
                    CoordinatorRecord::GroupMetadata {
                        group_id: group_id.clone(),
                        value: None,
                    },
                );
            }
        }
    }
}

fn replace_static_member(
    group: &mut ClassicGroup,
    old_id: &str,
    new_id: &str,
    joining: &Member,
    deliveries: &mut Deliveries,
) {
    let group_id = group.group_id.clone();
    let Some(m) = group.member_mut(old_id) else {
        return;
    };
    // The old member's parked requests are fenced.
    if let Some(v) = m.awaiting_join.take() {
        deliveries.push(Delivery::Join {
            group_id: group_id.clone(),
            member_id: old_id.to_string(),
            response: join_error(v, GroupError::FencedInstanceId, old_id),
        });
    }
    if let Some(v) = m.awaiting_sync.take() {
        deliveries.push(Delivery::Sync {
            group_id,
            member_id: old_id.to_string(),
            response: sync_error(v, GroupError::FencedInstanceId),
        });
    }
    m.member_id = new_id.to_string();
    m.protocols = joining.protocols.clone();
    m.client_id = joining.client_id.clone();
    m.client_host = joining.client_host.clone();
    m.session_timeout_ms = joining.session_timeout_ms;
    m.rebalance_timeout_ms = joining.rebalance_timeout_ms;
    m.heartbeat_deadline_ms = joining.heartbeat_deadline_ms;
    if group.is_leader(old_id) {
        group.leader = Some(new_id.to_string());
    }
    if group.pending_sync.remove(old_id) {
        group.pending_sync.insert(new_id.to_string());
    }
}

/// A JoinGroup error response in the shape of version `v`.
fn join_error(v: i16, error: GroupError, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code(error))
        .with_generation_id(-1)
        .with_protocol_name(if v >= 7 { None } else { Some(sb("")) })
        .with_leader(sb(""))
        .with_member_id(sb(member_id))
}

/// The JoinGroup response of a completed join for `member_id` (the leader gets every member's metadata).
fn join_success(
    group: &ClassicGroup,
    member_id: &str,
    v: i16,
    include_members: bool,
) -> JoinGroupResponse {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let members = if include_members {
        group
            .members
            .iter()
            .map(|m| {
                JoinGroupResponseMember::default()
                    .with_member_id(sb(&m.member_id))
                    .with_group_instance_id(if v >= 5 {
                        m.group_instance_id.as_deref().map(sb)
                    } else {
                        None
                    })
                    .with_metadata(m.metadata(&protocol).cloned().unwrap_or_default())
            })
            .collect()
    } else {
        Vec::new()
    };
    // A static leader rejoining a Stable group is told to skip the assignment (v9, KIP-814).
    let skip_assignment = include_members && v >= 9 && group.state == GroupState::Stable;
    JoinGroupResponse::default()
        .with_generation_id(group.generation)
        .with_protocol_type(if v >= 7 {
            group.protocol_type.as_deref().map(sb)
        } else {
            None
        })
        .with_protocol_name(Some(sb(&protocol)))
        .with_leader(sb(group.leader.as_deref().unwrap_or("")))
        .with_skip_assignment(skip_assignment)
        .with_member_id(sb(member_id))
        .with_members(members)
}

fn sync_error(_v: i16, error: GroupError) -> SyncGroupResponse {
    SyncGroupResponse::default().with_error_code(code(error))
}

fn sync_success(group: &ClassicGroup, v: i16, assignment: Bytes) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_protocol_type(if v >= 5 {
            group.protocol_type.as_deref().map(sb)
        } else {
            None
        })
        .with_protocol_name(if v >= 5 {
            group.protocol_name.as_deref().map(sb)
        } else {
            None
        })
        .with_assignment(assignment)
}

/// Builds a topic name for responses.
pub fn topic_name(name: &str) -> TopicName {
    TopicName(sb(name))
}
