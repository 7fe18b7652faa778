//! A classic consumer group (Kafka's `ClassicGroup`): its state, members, generation, selected protocol and the
//! deadlines of its timers. The group coordinator shard (`shard/`) drives it; this file holds the data and the
//! small pure rules Kafka's `ClassicGroup` states (protocol selection, the leader, what is persisted).
//!
//! Not thread-safe: one shard owns its groups.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::record::{GroupMetadataValue, MemberMetadataValue};

/// The states of a classic group (Kafka's `ClassicGroupState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members; offsets may remain.
    Empty,
    /// Members are (re)joining; JoinGroup responses are parked until everyone has rejoined or the rebalance
    /// timeout fires.
    PreparingRebalance,
    /// The join completed; waiting for the leader's assignment in SyncGroup.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted (or unloaded); never answered as a live group.
    Dead,
}

impl GroupState {
    /// The name Kafka's ListGroups / DescribeGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// Parses a state name as ListGroups' states filter carries it (case-insensitive, as Kafka).
    pub fn parse(name: &str) -> Option<GroupState> {
        [
            GroupState::Empty,
            GroupState::PreparingRebalance,
            GroupState::CompletingRebalance,
            GroupState::Stable,
            GroupState::Dead,
        ]
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

/// One member of a classic group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member id the coordinator gave it.
    pub member_id: String,
    /// Static membership id (KIP-345).
    pub group_instance_id: Option<String>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client host (`/ip`, as Kafka prints it).
    pub client_host: String,
    /// Rebalance timeout from its JoinGroup.
    pub rebalance_timeout_ms: i32,
    /// Session timeout from its JoinGroup.
    pub session_timeout_ms: i32,
    /// The protocols it supports, in preference order, with its metadata for each.
    pub protocols: Vec<(String, Bytes)>,
    /// Its assignment in the current generation (empty until the leader synced).
    pub assignment: Bytes,
    /// The version of its parked JoinGroup request, while it waits for the join to complete.
    pub awaiting_join: Option<i16>,
    /// The version of its parked SyncGroup request, while it waits for the leader's assignment.
    pub awaiting_sync: Option<i16>,
    /// When its session expires unless it heartbeats.
    pub heartbeat_deadline_ms: i64,
}

impl Member {
    /// Its metadata for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m)
    }

    /// Whether `protocols` are the same (names and metadata) as the member's.
    pub fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// Restarts its session timeout at `now_ms` (Kafka's `rescheduleClassicGroupMemberHeartbeat`).
    pub fn renew_session(&mut self, now_ms: i64) {
        self.heartbeat_deadline_ms = now_ms + i64::from(self.session_timeout_ms);
    }
}

/// The initial-delay phase of a new group's first rebalance (`group.initial.rebalance.delay.ms`, KIP-134).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialDelay {
    /// The configured delay, extended by this much while members keep arriving.
    pub delay_ms: i64,
    /// How much of the rebalance timeout is left to extend into.
    pub remaining_ms: i64,
    /// Whether a member joined since the last extension.
    pub new_member_added: bool,
}

/// A classic group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicGroup {
    /// Group id.
    pub group_id: String,
    /// Current state.
    pub state: GroupState,
    /// When the group entered its current state (persisted as currentStateTimestamp).
    pub state_timestamp_ms: i64,
    /// Protocol type; `None` for a group that only stores offsets (never joined).
    pub protocol_type: Option<String>,
    /// Generation id; bumped at every completed join.
    pub generation: i32,
    /// The protocol chosen for the current generation.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: Option<String>,
    /// Members in join order (the order Kafka's LinkedHashMap keeps, which picks the next leader).
    pub members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED (KIP-394) that have not joined yet, with their deadlines.
    pub pending_members: BTreeMap<String, i64>,
    /// Members of this generation that have not sent SyncGroup yet.
    pub pending_sync: BTreeSet<String>,
    /// When the PreparingRebalance phase completes at the latest.
    pub rebalance_deadline_ms: Option<i64>,
    /// Set during a new group's initial delayed join.
    pub initial_delay: Option<InitialDelay>,
    /// When members that have not synced yet are removed (CompletingRebalance / Stable).
    pub sync_deadline_ms: Option<i64>,
}

impl ClassicGroup {
    /// A new, empty group.
    pub fn new(group_id: &str, now_ms: i64) -> ClassicGroup {
        ClassicGroup {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            state_timestamp_ms: now_ms,
            protocol_type: None,
            generation: 0,
            protocol_name: None,
            leader: None,
            members: Vec::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            rebalance_deadline_ms: None,
            initial_delay: None,
            sync_deadline_ms: None,
        }
    }

    /// The group as GroupMetadataValue holds it (loading a partition replays these).
    pub fn from_record(group_id: &str, value: &GroupMetadataValue) -> ClassicGroup {
        let protocol = value.protocol.clone();
        let members: Vec<Member> = value
            .members
            .iter()
            .map(|m| Member {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                protocols: protocol
                    .iter()
                    .map(|p| (p.clone(), m.subscription.clone()))
                    .collect(),
                assignment: m.assignment.clone(),
                awaiting_join: None,
                awaiting_sync: None,
                heartbeat_deadline_ms: i64::MAX,
            })
            .collect();
        ClassicGroup {
            group_id: group_id.to_string(),
            state: if members.is_empty() {
                GroupState::Empty
            } else {
                GroupState::Stable
            },
            state_timestamp_ms: value.current_state_timestamp_ms,
            protocol_type: if value.protocol_type.is_empty() && members.is_empty() {
                None
            } else {
                Some(value.protocol_type.clone())
            },
            generation: value.generation,
            protocol_name: protocol,
            leader: value.leader.clone(),
            members,
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            rebalance_deadline_ms: None,
            initial_delay: None,
            sync_deadline_ms: None,
        }
    }

    /// The record that persists this group now (GroupMetadataValue v3).
    pub fn to_record(&self) -> GroupMetadataValue {
        let protocol = self.protocol_name.clone();
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .iter()
                .map(|m| MemberMetadataValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: protocol
                        .as_deref()
                        .and_then(|p| m.metadata(p).cloned())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Moves to `state`, stamping the time.
    pub fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    /// The member with this id.
    pub fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.member_id == member_id)
    }

    /// The member with this id, mutably.
    pub fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.member_id == member_id)
    }

    /// Whether `member_id` is a member.
    pub fn has_member(&self, member_id: &str) -> bool {
        self.member(member_id).is_some()
    }

    /// The member id currently registered for a static `group_instance_id`.
    pub fn static_member_id(&self, group_instance_id: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.group_instance_id.as_deref() == Some(group_instance_id))
            .map(|m| m.member_id.as_str())
    }

    /// KIP-345 fencing: a request naming `group_instance_id` with a member id other than the one registered.
    pub fn is_fenced(&self, member_id: &str, group_instance_id: Option<&str>) -> bool {
        match group_instance_id.and_then(|i| self.static_member_id(i)) {
            Some(registered) => registered != member_id,
            None => false,
        }
    }

    /// Whether `member_id` is the leader.
    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    /// Adds a member; the first member becomes the leader.
    pub fn add_member(&mut self, member: Member) {
        if self.leader.is_none() {
            self.leader = Some(member.member_id.clone());
        }
        if self.protocol_type.is_none() || self.members.is_empty() {
            // The protocol type is set by the first member (checked by supports_protocols).
        }
        self.members.push(member);
    }

    /// Removes a member; a removed leader is replaced by the first remaining member.
    pub fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let index = self.members.iter().position(|m| m.member_id == member_id)?;
        let member = self.members.remove(index);
        self.pending_sync.remove(member_id);
        if self.is_leader(member_id) {
            self.leader = self.members.first().map(|m| m.member_id.clone());
        }
        Some(member)
    }

    /// How many members have a parked JoinGroup.
    pub fn num_awaiting_join(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.awaiting_join.is_some())
            .count()
    }

    /// Every member rejoined and no KIP-394 member id is outstanding.
    pub fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.num_awaiting_join() && self.pending_members.is_empty()
    }

    /// The protocols every member supports, in the first member's preference order.
    fn candidate_protocols(&self) -> Vec<String> {
        let Some(first) = self.members.first() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| self.members.iter().all(|m| m.metadata(name).is_some()))
            .collect()
    }

    /// Kafka's `supportsProtocols`: an empty group accepts any non-empty protocol type and list; otherwise the
    /// type must match and one of the protocols must be supported by every current member.
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols.iter().any(|(name, _)| candidates.contains(name))
    }

    /// Kafka's `selectProtocol`: among the protocols all members support, each member votes for its most
    /// preferred one; the most votes win (ties go to the first member's preference).
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes = vec![0usize; candidates.len()];
        for m in &self.members {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|(name, _)| candidates.iter().position(|c| c == name))
            {
                votes[i] += 1;
            }
        }
        let mut best: Option<usize> = None;
        for (i, v) in votes.iter().enumerate() {
            if best.is_none_or(|b| *v > votes[b]) {
                best = Some(i);
            }
        }
        best.map(|i| candidates[i].clone())
    }

    /// The longest rebalance timeout among members (the PreparingRebalance limit).
    pub fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .iter()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// Topics the group's members subscribe to, when the protocol type is `consumer` and every member's
    /// subscription decodes (ConsumerProtocolSubscription); `None` when unknown.
    pub fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for m in &self.members {
            topics.extend(decode_subscription_topics(m.metadata(protocol)?)?);
        }
        Some(topics)
    }
}

/// The topics of a ConsumerProtocolSubscription (any version: version int16, then an array of strings).
fn decode_subscription_topics(bytes: &[u8]) -> Option<Vec<String>> {
    let mut b = bytes;
    let mut take = |n: usize| -> Option<&[u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        b = t;
        Some(h)
    };
    let _version = take(2)?;
    let count = take(4)?;
    let count = i32::from_be_bytes([count[0], count[1], count[2], count[3]]);
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        let len = take(2)?;
        let len = i16::from_be_bytes([len[0], len[1]]);
        let name = take(usize::try_from(len).ok()?)?;
        topics.push(String::from_utf8(name.to_vec()).ok()?);
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            member_id: id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/h".into(),
            rebalance_timeout_ms: 1000,
            session_timeout_ms: 1000,
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::new()))
                .collect(),
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            heartbeat_deadline_ms: 0,
        }
    }

    #[test]
    fn protocol_selection_votes_among_common_protocols() {
        let mut g = ClassicGroup::new("g", 0);
        g.protocol_type = Some("consumer".into());
        g.add_member(member("a", &["range", "roundrobin"]));
        g.add_member(member("b", &["roundrobin", "range"]));
        g.add_member(member("c", &["roundrobin", "sticky"]));
        // Only roundrobin is supported by all three.
        assert_eq!(g.select_protocol().as_deref(), Some("roundrobin"));
        let p = |n: &str| vec![(n.to_string(), Bytes::new())];
        assert!(g.supports_protocols("consumer", &p("roundrobin")));
        assert!(!g.supports_protocols("consumer", &p("range")));
        assert!(!g.supports_protocols("connect", &p("roundrobin")));
    }

    #[test]
    fn leader_moves_to_the_next_member_when_removed() {
        let mut g = ClassicGroup::new("g", 0);
        g.add_member(member("a", &["x"]));
        g.add_member(member("b", &["x"]));
        assert!(g.is_leader("a"));
        g.remove_member("a");
        assert!(g.is_leader("b"));
        g.remove_member("b");
        assert_eq!(g.leader, None);
    }

    #[test]
    fn subscription_topics_decode() {
        let mut sub = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        sub.extend_from_slice(&[0, 0, 0, 0]); // user data etc. may follow
        assert_eq!(
            decode_subscription_topics(&sub),
            Some(vec!["a".to_string(), "bc".to_string()])
        );
        assert_eq!(decode_subscription_topics(&[0, 1, 0]), None);
    }
}
