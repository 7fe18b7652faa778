//! The membership requests of a shard: JoinGroup (KIP-394 member ids, KIP-345 static members), SyncGroup,
//! Heartbeat and LeaveGroup, and the shapes of their responses per version. The rebalance they start or
//! complete is in `rebalance.rs`.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};

use super::{
    code, sb, ClientInfo, CoordinatorResult, Deliveries, Delivery, GroupCoordinatorShard,
    GroupError, Parkable, Records,
};
use crate::group::{ClassicGroup, GroupState, Member};
use crate::record::CoordinatorRecord;

impl GroupCoordinatorShard {
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
                group.pending_sync.remove(&new_id);
                let response = if was_leader && v < 9 {
                    // A leader that cannot be told to skip the assignment (JoinGroup < v9) is answered with
                    // the old leader id and no members, so it does not think itself the leader and no
                    // rebalance is needed (Kafka's GroupCoordinator since KIP-345).
                    join_success(group, &new_id, v, false).with_leader(sb(&old_id))
                } else {
                    join_success(group, &new_id, v, was_leader)
                };
                self.store_group(records, group_id);
                Parkable::Now(response)
            }
            _ => {
                if let Some(m) = group.member_mut(&new_id) {
                    m.awaiting_join = Some(v);
                }
                if group.state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(now_ms, group_id, deliveries);
                }
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
                    m.renew_session(now_ms);
                    let assignment = m.assignment.clone();
                    Parkable::Now(sync_success(group, v, assignment))
                }
                GroupState::CompletingRebalance => {
                    if let Some(m) = group.member_mut(&member_id) {
                        m.awaiting_sync = Some(v);
                        m.renew_session(now_ms);
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
                m.renew_session(now_ms);
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
}

/// Answers a member's parked JoinGroup and SyncGroup, if any, with `error`; it no longer waits for either.
pub(super) fn fail_parked(
    group_id: &str,
    member: &mut Member,
    error: GroupError,
    deliveries: &mut Deliveries,
) {
    if let Some(v) = member.awaiting_join.take() {
        deliveries.push(Delivery::Join {
            group_id: group_id.to_string(),
            member_id: member.member_id.clone(),
            response: join_error(v, error, &member.member_id),
        });
    }
    if let Some(v) = member.awaiting_sync.take() {
        deliveries.push(Delivery::Sync {
            group_id: group_id.to_string(),
            member_id: member.member_id.clone(),
            response: sync_error(v, error),
        });
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
    fail_parked(&group_id, m, GroupError::FencedInstanceId, deliveries);
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
pub(super) fn join_success(
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

pub(super) fn sync_error(_v: i16, error: GroupError) -> SyncGroupResponse {
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
