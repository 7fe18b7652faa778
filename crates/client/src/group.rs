//! Consumer group membership over the classic group protocol: the `consumer` embedded protocol
//! (subscription and assignment bytes), the range, round-robin and cooperative-sticky assignors, and the
//! JoinGroup / SyncGroup / Heartbeat / LeaveGroup exchanges.
//!
//! Assignors are pure functions from the members' subscriptions to assignments, tested on their own.
//! Subscription and assignment bytes come from other group members through the broker, so they are decoded
//! by a bounded reader here (every count checked against the bytes left) rather than by a decoder that
//! sizes vectors from the wire.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::client::Client;
use crate::consumer::TopicPartition;
use crate::error::{ClientError, Result};

/// A partition assignment strategy (`partition.assignment.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignor {
    /// `range`: per topic, consecutive partition ranges to members in member-id order (eager).
    #[default]
    Range,
    /// `roundrobin`: all partitions dealt to members in turn (eager).
    RoundRobin,
    /// `cooperative-sticky`: keeps partitions where they are, balances counts, and moves a partition in two
    /// rebalances (revoke, then assign) so members keep consuming the rest (KIP-429).
    CooperativeSticky,
}

impl Assignor {
    /// The protocol name members agree on in JoinGroup (Kafka's names).
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Whether members keep their retained partitions across a rebalance.
    pub fn is_cooperative(self) -> bool {
        self == Assignor::CooperativeSticky
    }

    fn from_name(name: &str) -> Option<Assignor> {
        [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }
}

impl std::str::FromStr for Assignor {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Assignor> {
        Assignor::from_name(s).ok_or_else(|| {
            ClientError::Config(format!(
                "unknown assignor {s:?} (range, roundrobin, cooperative-sticky)"
            ))
        })
    }
}

/// One member's `consumer` protocol subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Topics subscribed to.
    pub topics: Vec<String>,
    /// Partitions the member owns now (version 1+; used by cooperative-sticky).
    pub owned_partitions: Vec<TopicPartition>,
}

/// The subscription version we write: v1 carries owned partitions.
const SUBSCRIPTION_VERSION: i16 = 1;
/// The assignment version we write.
const ASSIGNMENT_VERSION: i16 = 1;

fn put_string(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    buf.put_i16(len);
    buf.put_slice(&s.as_bytes()[..len.max(0) as usize]);
}

fn put_partitions(buf: &mut BytesMut, partitions: &[TopicPartition]) {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    buf.put_i32(by_topic.len() as i32);
    for (topic, parts) in by_topic {
        put_string(buf, topic);
        buf.put_i32(parts.len() as i32);
        for p in parts {
            buf.put_i32(p);
        }
    }
}

/// Encodes a subscription (version 1: topics, null user data, owned partitions).
pub fn encode_subscription(s: &Subscription) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i16(SUBSCRIPTION_VERSION);
    buf.put_i32(s.topics.len() as i32);
    for t in &s.topics {
        put_string(&mut buf, t);
    }
    buf.put_i32(-1); // user data: null
    put_partitions(&mut buf, &s.owned_partitions);
    buf.freeze()
}

/// Encodes an assignment (version 1: partitions, null user data).
pub fn encode_assignment(partitions: &[TopicPartition]) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i16(ASSIGNMENT_VERSION);
    put_partitions(&mut buf, partitions);
    buf.put_i32(-1);
    buf.freeze()
}

/// A bounded reader over protocol bytes written by another member.
struct Reader(Bytes);

impl Reader {
    fn err(what: &str) -> ClientError {
        ClientError::Config(format!("malformed consumer protocol data ({what})"))
    }

    fn i16(&mut self) -> Result<i16> {
        if self.0.remaining() < 2 {
            return Err(Self::err("short int16"));
        }
        Ok(self.0.get_i16())
    }

    fn i32(&mut self) -> Result<i32> {
        if self.0.remaining() < 4 {
            return Err(Self::err("short int32"));
        }
        Ok(self.0.get_i32())
    }

    /// An array count, at most one element per `min_element_bytes` remaining bytes.
    fn count(&mut self, min_element_bytes: usize) -> Result<usize> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(0);
        }
        let n = n as usize;
        if n.saturating_mul(min_element_bytes) > self.0.remaining() {
            return Err(Self::err("array count exceeds the data"));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String> {
        let len = self.i16()?;
        if len < 0 {
            return Err(Self::err("null string"));
        }
        let len = len as usize;
        if self.0.remaining() < len {
            return Err(Self::err("short string"));
        }
        let bytes = self.0.split_to(len);
        String::from_utf8(bytes.to_vec()).map_err(|_| Self::err("string is not UTF-8"))
    }

    fn skip_bytes(&mut self) -> Result<()> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(());
        }
        let len = len as usize;
        if self.0.remaining() < len {
            return Err(Self::err("short bytes"));
        }
        self.0.advance(len);
        Ok(())
    }

    fn partitions(&mut self) -> Result<Vec<TopicPartition>> {
        let topics = self.count(6)?;
        let mut out = Vec::new();
        for _ in 0..topics {
            let topic = self.string()?;
            let n = self.count(4)?;
            for _ in 0..n {
                out.push((topic.clone(), self.i32()?));
            }
        }
        Ok(out)
    }
}

/// Decodes a subscription of any version (fields of versions above 1 are ignored, as Kafka does).
pub fn decode_subscription(data: Bytes) -> Result<Subscription> {
    let mut r = Reader(data);
    let version = r.i16()?;
    let n = r.count(2)?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        topics.push(r.string()?);
    }
    r.skip_bytes()?;
    let owned_partitions = if version >= 1 {
        r.partitions()?
    } else {
        Vec::new()
    };
    Ok(Subscription {
        topics,
        owned_partitions,
    })
}

/// Decodes an assignment of any version; empty bytes are an empty assignment.
pub fn decode_assignment(data: Bytes) -> Result<Vec<TopicPartition>> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader(data);
    let _version = r.i16()?;
    r.partitions()
}

/// Computes assignments for `members` (member id -> subscription) given each topic's partition count.
pub fn assign(
    assignor: Assignor,
    members: &BTreeMap<String, Subscription>,
    partition_counts: &HashMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    match assignor {
        Assignor::Range => assign_range(members, partition_counts),
        Assignor::RoundRobin => assign_round_robin(members, partition_counts),
        Assignor::CooperativeSticky => assign_cooperative_sticky(members, partition_counts),
    }
}

fn empty_assignment(
    members: &BTreeMap<String, Subscription>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    members.keys().map(|m| (m.clone(), Vec::new())).collect()
}

/// Kafka's RangeAssignor: for each topic, members subscribed to it in id order get consecutive ranges;
/// the first `partitions % members` get one extra.
fn assign_range(
    members: &BTreeMap<String, Subscription>,
    counts: &HashMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out = empty_assignment(members);
    let topics: BTreeSet<&String> = members.values().flat_map(|s| s.topics.iter()).collect();
    for topic in topics {
        let Some(&count) = counts.get(topic.as_str()) else {
            continue;
        };
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, s)| s.topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let n = subscribers.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in subscribers.into_iter().enumerate() {
            let take = per + i32::from((i as i32) < extra);
            if let Some(list) = out.get_mut(m) {
                list.extend((next..next + take).map(|p| (topic.clone(), p)));
            }
            next += take;
        }
    }
    out
}

/// Kafka's RoundRobinAssignor: all partitions in (topic, partition) order, dealt to members in id order,
/// skipping members not subscribed to the partition's topic.
fn assign_round_robin(
    members: &BTreeMap<String, Subscription>,
    counts: &HashMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out = empty_assignment(members);
    let ids: Vec<&String> = members.keys().collect();
    if ids.is_empty() {
        return out;
    }
    let topics: BTreeSet<&String> = members.values().flat_map(|s| s.topics.iter()).collect();
    let mut cursor = 0usize;
    for topic in topics {
        let Some(&count) = counts.get(topic.as_str()) else {
            continue;
        };
        for p in 0..count {
            for _ in 0..ids.len() {
                let m = ids[cursor % ids.len()];
                cursor += 1;
                if members[m].topics.contains(topic) {
                    if let Some(list) = out.get_mut(m) {
                        list.push((topic.clone(), p));
                    }
                    break;
                }
            }
        }
    }
    out
}

/// Cooperative-sticky: keep every still-valid owned partition with its owner, hand unowned partitions to
/// the least-loaded eligible member, then move partitions from members above the balanced count to members
/// below it. A partition that changes owner is left out of this round's assignment (its old owner revokes
/// it and rejoins; the next rebalance assigns it), which is the cooperative protocol of KIP-429.
fn assign_cooperative_sticky(
    members: &BTreeMap<String, Subscription>,
    counts: &HashMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut current: BTreeMap<String, BTreeSet<TopicPartition>> = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    let valid = |tp: &TopicPartition| counts.get(&tp.0).is_some_and(|&c| (0..c).contains(&tp.1));
    let mut previous_owner: HashMap<TopicPartition, String> = HashMap::new();
    for (m, s) in members {
        for tp in &s.owned_partitions {
            if valid(tp) && s.topics.contains(&tp.0) && !previous_owner.contains_key(tp) {
                previous_owner.insert(tp.clone(), m.clone());
                if let Some(set) = current.get_mut(m) {
                    set.insert(tp.clone());
                }
            }
        }
    }
    // Every subscribed partition, in order.
    let topics: BTreeSet<&String> = members.values().flat_map(|s| s.topics.iter()).collect();
    let all: Vec<TopicPartition> = topics
        .iter()
        .flat_map(|t| (0..counts.get(t.as_str()).copied().unwrap_or(0)).map(|p| ((*t).clone(), p)))
        .collect();
    let eligible = |m: &str, tp: &TopicPartition| members[m].topics.contains(&tp.0);
    for tp in &all {
        if previous_owner.contains_key(tp) {
            continue;
        }
        let target = current
            .iter()
            .filter(|(m, _)| eligible(m, tp))
            .min_by_key(|(m, set)| (set.len(), (*m).clone()))
            .map(|(m, _)| m.clone());
        if let Some(m) = target {
            if let Some(set) = current.get_mut(&m) {
                set.insert(tp.clone());
            }
        }
    }
    // Balance: move from the most loaded to the least loaded eligible member while counts differ by > 1.
    for _ in 0..all.len() {
        let Some((max_m, max_len)) = current
            .iter()
            .max_by_key(|(m, s)| (s.len(), std::cmp::Reverse((*m).clone())))
            .map(|(m, s)| (m.clone(), s.len()))
        else {
            break;
        };
        let candidate = current[&max_m].iter().rev().find_map(|tp| {
            current
                .iter()
                .filter(|(m, s)| **m != max_m && eligible(m, tp) && s.len() + 1 < max_len)
                .min_by_key(|(m, s)| (s.len(), (*m).clone()))
                .map(|(m, _)| (tp.clone(), m.clone()))
        });
        let Some((tp, to)) = candidate else {
            break;
        };
        if let Some(set) = current.get_mut(&max_m) {
            set.remove(&tp);
        }
        if let Some(set) = current.get_mut(&to) {
            set.insert(tp);
        }
    }
    current
        .into_iter()
        .map(|(m, set)| {
            let kept = set
                .into_iter()
                .filter(|tp| match previous_owner.get(tp) {
                    Some(owner) => *owner == m,
                    None => true,
                })
                .collect();
            (m, kept)
        })
        .collect()
}

/// This member's view of the group after a successful join and sync.
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    pub(crate) coordinator: i32,
    pub(crate) member_id: String,
    pub(crate) generation_id: i32,
    pub(crate) assignment: Vec<TopicPartition>,
}

/// Settings of a group member.
#[derive(Debug, Clone)]
pub(crate) struct MemberConfig {
    pub(crate) group_id: String,
    pub(crate) assignor: Assignor,
    pub(crate) session_timeout_ms: i32,
    pub(crate) rebalance_timeout_ms: i32,
}

/// Joins (or rejoins) the group and syncs; the leader computes the assignment. `member_id` is empty on
/// the first join (KIP-394's MEMBER_ID_REQUIRED round trip is handled here).
pub(crate) async fn join_and_sync(
    client: &Client,
    config: &MemberConfig,
    member_id: &str,
    subscription: &Subscription,
) -> Result<Membership> {
    let group = GroupId(StrBytes::from_string(config.group_id.clone()));
    let mut member_id = member_id.to_owned();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let coordinator = client.group_coordinator(&config.group_id).await?;
        let conn = client.connection_to(coordinator).await?;
        let request = JoinGroupRequest::default()
            .with_group_id(group.clone())
            .with_session_timeout_ms(config.session_timeout_ms)
            .with_rebalance_timeout_ms(config.rebalance_timeout_ms)
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str(config.assignor.name()))
                .with_metadata(encode_subscription(subscription))]);
        let timeout_ms = u64::try_from(config.rebalance_timeout_ms).unwrap_or(0)
            + client.config().request_timeout_ms;
        let join = conn.send_with_timeout(&request, None, timeout_ms).await?;
        match ResponseError::try_from_code(join.error_code) {
            None => {}
            Some(ResponseError::MemberIdRequired) => {
                member_id = join.member_id.as_str().to_owned();
                continue;
            }
            Some(ResponseError::UnknownMemberId) => {
                member_id.clear();
                continue;
            }
            Some(e) if e.is_retriable() && attempts < 20 => {
                tokio::time::sleep(std::time::Duration::from_millis(
                    client.config().retry_backoff_ms,
                ))
                .await;
                continue;
            }
            Some(_) => {
                return Err(ClientError::broker(
                    format!("joining group {}", config.group_id),
                    join.error_code,
                    None,
                ))
            }
        }
        member_id = join.member_id.as_str().to_owned();
        let generation_id = join.generation_id;
        let protocol = join
            .protocol_name
            .as_ref()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| config.assignor.name().to_owned());
        let assignments = if join.leader.as_str() == member_id {
            let assignor = Assignor::from_name(&protocol).unwrap_or(config.assignor);
            let mut members = BTreeMap::new();
            for m in &join.members {
                let sub = decode_subscription(m.metadata.clone())?;
                members.insert(m.member_id.as_str().to_owned(), sub);
            }
            let topics: BTreeSet<String> = members
                .values()
                .flat_map(|s| s.topics.iter().cloned())
                .collect();
            let mut counts = HashMap::new();
            for t in topics {
                if let Ok(info) = client.topic(&t, false).await {
                    counts.insert(t, info.partitions.len() as i32);
                }
            }
            assign(assignor, &members, &counts)
                .into_iter()
                .map(|(m, parts)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(m))
                        .with_assignment(encode_assignment(&parts))
                })
                .collect()
        } else {
            Vec::new()
        };
        let sync = SyncGroupRequest::default()
            .with_group_id(group.clone())
            .with_generation_id(generation_id)
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(StrBytes::from_string(protocol)))
            .with_assignments(assignments);
        let response = conn.send_with_timeout(&sync, None, timeout_ms).await?;
        match ResponseError::try_from_code(response.error_code) {
            None => {
                return Ok(Membership {
                    coordinator,
                    member_id,
                    generation_id,
                    assignment: decode_assignment(response.assignment)?,
                })
            }
            Some(ResponseError::RebalanceInProgress) if attempts < 20 => continue,
            Some(ResponseError::UnknownMemberId | ResponseError::IllegalGeneration)
                if attempts < 20 =>
            {
                member_id.clear();
                continue;
            }
            Some(e) if e.is_retriable() && attempts < 20 => continue,
            Some(_) => {
                return Err(ClientError::broker(
                    format!("syncing group {}", config.group_id),
                    response.error_code,
                    None,
                ))
            }
        }
    }
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeartbeatOutcome {
    /// Still a member of this generation.
    Ok,
    /// A rebalance started: rejoin.
    Rejoin,
    /// The member was removed: rejoin with a fresh member id.
    Reset,
}

/// Sends one heartbeat.
pub(crate) async fn heartbeat(
    client: &Client,
    group_id: &str,
    membership: &Membership,
) -> Result<HeartbeatOutcome> {
    let request = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_owned())))
        .with_generation_id(membership.generation_id)
        .with_member_id(StrBytes::from_string(membership.member_id.clone()));
    let response = client
        .send_to(membership.coordinator, &request, None)
        .await?;
    Ok(match ResponseError::try_from_code(response.error_code) {
        None => HeartbeatOutcome::Ok,
        Some(ResponseError::RebalanceInProgress) => HeartbeatOutcome::Rejoin,
        Some(
            ResponseError::UnknownMemberId
            | ResponseError::IllegalGeneration
            | ResponseError::FencedInstanceId,
        ) => HeartbeatOutcome::Reset,
        Some(ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable) => {
            HeartbeatOutcome::Rejoin
        }
        Some(_) => {
            return Err(ClientError::broker(
                format!("heartbeat to group {group_id}"),
                response.error_code,
                None,
            ))
        }
    })
}

/// Leaves the group (best effort).
pub(crate) async fn leave(client: &Client, group_id: &str, membership: &Membership) -> Result<()> {
    let conn = client.connection_to(membership.coordinator).await?;
    let version = conn.version_for::<LeaveGroupRequest>(None)?;
    let mut request = LeaveGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_owned())));
    if version >= 3 {
        request.members = vec![MemberIdentity::default()
            .with_member_id(StrBytes::from_string(membership.member_id.clone()))];
    } else {
        request.member_id = StrBytes::from_string(membership.member_id.clone());
    }
    conn.send_at(&request, version).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(topics: &[&str], owned: &[(&str, i32)]) -> Subscription {
        Subscription {
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            owned_partitions: owned.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect(),
        }
    }

    fn tps(list: &[(&str, i32)]) -> Vec<TopicPartition> {
        list.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect()
    }

    #[test]
    fn protocol_bytes_round_trip_and_garbage_is_an_error() {
        let s = sub(&["a", "b"], &[("a", 1), ("b", 0)]);
        assert_eq!(decode_subscription(encode_subscription(&s)).unwrap(), s);
        let a = tps(&[("a", 0), ("a", 2)]);
        assert_eq!(decode_assignment(encode_assignment(&a)).unwrap(), a);
        assert_eq!(decode_assignment(Bytes::new()).unwrap(), vec![]);
        // A huge array count in a few bytes is refused without allocating.
        let bomb = Bytes::from_static(&[0, 1, 0x7f, 0xff, 0xff, 0xff, 0, 0]);
        assert!(decode_subscription(bomb.clone()).is_err());
        assert!(decode_assignment(bomb).is_err());
    }

    /// Reference: Kafka's RangeAssignorTest (two consumers, two topics of three partitions).
    #[test]
    fn range_matches_kafka() {
        let members = BTreeMap::from([
            ("c1".to_owned(), sub(&["t1", "t2"], &[])),
            ("c2".to_owned(), sub(&["t1", "t2"], &[])),
        ]);
        let counts = HashMap::from([("t1".to_owned(), 3), ("t2".to_owned(), 3)]);
        let out = assign(Assignor::Range, &members, &counts);
        assert_eq!(
            out["c1"],
            tps(&[("t1", 0), ("t1", 1), ("t2", 0), ("t2", 1)])
        );
        assert_eq!(out["c2"], tps(&[("t1", 2), ("t2", 2)]));
    }

    /// Reference: Kafka's RoundRobinAssignorTest (two consumers, two topics of three partitions).
    #[test]
    fn round_robin_matches_kafka() {
        let members = BTreeMap::from([
            ("c1".to_owned(), sub(&["t1", "t2"], &[])),
            ("c2".to_owned(), sub(&["t1", "t2"], &[])),
        ]);
        let counts = HashMap::from([("t1".to_owned(), 3), ("t2".to_owned(), 3)]);
        let out = assign(Assignor::RoundRobin, &members, &counts);
        assert_eq!(out["c1"], tps(&[("t1", 0), ("t1", 2), ("t2", 1)]));
        assert_eq!(out["c2"], tps(&[("t1", 1), ("t2", 0), ("t2", 2)]));
    }

    #[test]
    fn cooperative_sticky_keeps_owners_and_moves_in_two_steps() {
        let counts = HashMap::from([("t".to_owned(), 4)]);
        // One member owns everything; a second joins.
        let members = BTreeMap::from([
            (
                "a".to_owned(),
                sub(&["t"], &[("t", 0), ("t", 1), ("t", 2), ("t", 3)]),
            ),
            ("b".to_owned(), sub(&["t"], &[])),
        ]);
        let first = assign(Assignor::CooperativeSticky, &members, &counts);
        // Round one: `a` keeps two (stays sticky), the two it must give up are assigned to nobody yet.
        assert_eq!(first["a"].len(), 2);
        assert!(first["b"].is_empty());
        // Round two, after `a` revoked: `b` gets the two free partitions, `a` keeps its two.
        let members = BTreeMap::from([
            (
                "a".to_owned(),
                Subscription {
                    topics: vec!["t".into()],
                    owned_partitions: first["a"].clone(),
                },
            ),
            ("b".to_owned(), sub(&["t"], &[])),
        ]);
        let second = assign(Assignor::CooperativeSticky, &members, &counts);
        assert_eq!(second["a"], first["a"]);
        assert_eq!(second["b"].len(), 2);
        let all: BTreeSet<_> = second.values().flatten().cloned().collect();
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn every_partition_is_assigned_exactly_once() {
        for assignor in [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ] {
            for n_members in 1..5 {
                let members: BTreeMap<String, Subscription> = (0..n_members)
                    .map(|i| (format!("m{i}"), sub(&["x", "y"], &[])))
                    .collect();
                let counts = HashMap::from([("x".to_owned(), 5), ("y".to_owned(), 2)]);
                let out = assign(assignor, &members, &counts);
                let mut all: Vec<_> = out.values().flatten().cloned().collect();
                all.sort();
                let before = all.len();
                all.dedup();
                assert_eq!(before, all.len(), "{assignor:?}");
                assert_eq!(all.len(), 7, "{assignor:?} with {n_members} members");
                let sizes: Vec<usize> = out.values().map(Vec::len).collect();
                if assignor != Assignor::Range {
                    let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                    assert!(hi - lo <= 1, "{assignor:?} unbalanced {sizes:?}");
                }
            }
        }
    }
}
