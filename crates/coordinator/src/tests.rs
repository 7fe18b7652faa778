//! Tick-by-tick tests of the group coordinator shard: explicit `now_ms`, exact records and responses, each
//! citing the KIP or Kafka behaviour it checks.

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    OffsetCommitRequest, OffsetDeleteRequest, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;

use crate::record::{CoordinatorRecord, OffsetCommitValue};
use crate::{
    partition_for, ClientInfo, Delivery, GroupCoordinatorConfig, GroupCoordinatorShard, GroupState,
    Parkable,
};

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn shard() -> GroupCoordinatorShard {
    shard_with(GroupCoordinatorConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupCoordinatorConfig::default()
    })
}

fn shard_with(config: GroupCoordinatorConfig) -> GroupCoordinatorShard {
    GroupCoordinatorShard::new(config, 7)
}

fn client(v: i16) -> ClientInfo {
    ClientInfo {
        api_version: v,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
    }
}

fn join_req(
    member_id: &str,
    instance: Option<&str>,
    protocols: &[(&str, &[u8])],
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(REBALANCE_MS)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(
            protocols
                .iter()
                .map(|(n, m)| {
                    JoinGroupRequestProtocol::default()
                        .with_name(s(n))
                        .with_metadata(Bytes::copy_from_slice(m))
                })
                .collect(),
        )
}

fn range() -> Vec<(&'static str, &'static [u8])> {
    vec![("range", b"meta")]
}

fn joined(deliveries: &[Delivery], member: &str) -> JoinGroupResponse {
    deliveries
        .iter()
        .find_map(|d| match d {
            Delivery::Join {
                member_id,
                response,
                ..
            } if member_id == member => Some(response.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no join delivery for {member}: {deliveries:?}"))
}

fn synced(deliveries: &[Delivery], member: &str) -> SyncGroupResponse {
    deliveries
        .iter()
        .find_map(|d| match d {
            Delivery::Sync {
                member_id,
                response,
                ..
            } if member_id == member => Some(response.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no sync delivery for {member}: {deliveries:?}"))
}

/// KIP-394 two-step join; returns the member id and the parked state.
fn join_new(sh: &mut GroupCoordinatorShard, now: i64) -> (String, Vec<Delivery>) {
    let r = sh.join_group(now, &client(9), &join_req("", None, &range()));
    let Parkable::Now(resp) = r.response else {
        panic!("expected MEMBER_ID_REQUIRED")
    };
    assert_eq!(resp.error_code, ErrorCode::MemberIdRequired.code());
    let id = resp.member_id.to_string();
    let r = sh.join_group(now, &client(9), &join_req(&id, None, &range()));
    assert_eq!(
        r.response,
        Parkable::Parked {
            member_id: id.clone()
        }
    );
    (id, r.deliveries)
}

fn sync_req(member: &str, generation: i32, assignments: &[(&str, &[u8])]) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        )
}

fn heartbeat(sh: &mut GroupCoordinatorShard, now: i64, member: &str, generation: i32) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(member))
        .with_generation_id(generation);
    sh.heartbeat(now, &req).response.error_code
}

fn commit_req(generation: i32, member: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(3)
                .with_committed_metadata(Some(s("meta")))])])
}

fn any_partition(_: &str, _: i32) -> bool {
    true
}

/// One member joins, syncs and becomes Stable at generation 1.
fn stable_single(sh: &mut GroupCoordinatorShard) -> String {
    let (id, deliveries) = join_new(sh, 0);
    let resp = joined(&deliveries, &id);
    assert_eq!(resp.generation_id, 1);
    assert_eq!(resp.leader.as_str(), id);
    let r = sh.sync_group(0, &client(5), &sync_req(&id, 1, &[(&id, b"a1")]));
    assert_eq!(
        synced(&r.deliveries, &id).assignment,
        Bytes::from_static(b"a1")
    );
    id
}

#[test]
fn partition_for_matches_kafkas_java_hash() {
    // "group".hashCode() == 98629247 in Java; 98629247 % 50 == 47.
    assert_eq!(crate::java_string_hash_code("group"), 98_629_247);
    assert_eq!(partition_for("group", 50), 47);
    // Negative hash codes go through Utils.abs: "polygenelubricants".hashCode() == Integer.MIN_VALUE -> 0.
    assert_eq!(crate::java_string_hash_code("polygenelubricants"), i32::MIN);
    assert_eq!(partition_for("polygenelubricants", 50), 0);
    assert_eq!(partition_for("", 50), 0);
}

#[test]
fn kip_394_first_join_without_member_id_is_member_id_required_from_v4() {
    let mut sh = shard();
    let r = sh.join_group(0, &client(4), &join_req("", None, &range()));
    let Parkable::Now(resp) = r.response else {
        panic!()
    };
    assert_eq!(resp.error_code, ErrorCode::MemberIdRequired.code());
    assert!(resp.member_id.starts_with("client-"));
    assert!(r.records.is_empty());
    // v3 clients join in one step.
    let mut sh = shard();
    let r = sh.join_group(0, &client(3), &join_req("", None, &range()));
    let Parkable::Parked { member_id } = r.response else {
        panic!()
    };
    assert_eq!(joined(&r.deliveries, &member_id).generation_id, 1);
}

#[test]
fn single_member_join_sync_persists_group_metadata() {
    let mut sh = shard();
    let (id, deliveries) = join_new(&mut sh, 0);
    let resp = joined(&deliveries, &id);
    assert_eq!(resp.error_code, 0);
    assert_eq!(resp.protocol_name.as_deref(), Some("range"));
    assert_eq!(resp.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(resp.members.len(), 1, "the leader receives member metadata");
    assert_eq!(resp.members[0].metadata, Bytes::from_static(b"meta"));
    assert_eq!(
        sh.group("g").map(|g| g.state),
        Some(GroupState::CompletingRebalance)
    );
    let r = sh.sync_group(5, &client(5), &sync_req(&id, 1, &[(&id, b"assign")]));
    assert_eq!(
        r.response,
        Parkable::Parked {
            member_id: id.clone()
        }
    );
    let sync = synced(&r.deliveries, &id);
    assert_eq!(sync.error_code, 0);
    assert_eq!(sync.protocol_name.as_deref(), Some("range"));
    assert_eq!(r.records.len(), 1);
    let CoordinatorRecord::GroupMetadata {
        group_id,
        value: Some(v),
    } = &r.records[0]
    else {
        panic!("{:?}", r.records)
    };
    assert_eq!(group_id, "g");
    assert_eq!(
        (v.generation, v.protocol.as_deref(), v.leader.as_deref()),
        (1, Some("range"), Some(id.as_str()))
    );
    assert_eq!(v.members[0].assignment, Bytes::from_static(b"assign"));
    assert_eq!(v.members[0].subscription, Bytes::from_static(b"meta"));
    assert_eq!(sh.group("g").map(|g| g.state), Some(GroupState::Stable));
    assert_eq!(heartbeat(&mut sh, 6, &id, 1), 0);
    assert_eq!(
        heartbeat(&mut sh, 6, &id, 0),
        ErrorCode::IllegalGeneration.code()
    );
    assert_eq!(
        heartbeat(&mut sh, 6, "nobody", 1),
        ErrorCode::UnknownMemberId.code()
    );
}

#[test]
fn second_member_triggers_rebalance_and_waits_for_everyone() {
    let mut sh = shard();
    let a = stable_single(&mut sh);
    let (b, deliveries) = join_new(&mut sh, 100);
    assert!(deliveries.is_empty(), "b waits until a rejoins");
    assert_eq!(
        sh.group("g").map(|g| g.state),
        Some(GroupState::PreparingRebalance)
    );
    // a learns about the rebalance through its heartbeat.
    assert_eq!(
        heartbeat(&mut sh, 200, &a, 1),
        ErrorCode::RebalanceInProgress.code()
    );
    let r = sh.join_group(300, &client(9), &join_req(&a, None, &range()));
    let ja = joined(&r.deliveries, &a);
    let jb = joined(&r.deliveries, &b);
    assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
    assert_eq!(ja.leader.as_str(), a, "the old leader stays leader");
    assert_eq!(ja.members.len(), 2);
    assert!(
        jb.members.is_empty(),
        "only the leader gets member metadata"
    );
    // A retried JoinGroup during CompletingRebalance gets the same generation again, the leader its members.
    let r = sh.join_group(350, &client(9), &join_req(&a, None, &range()));
    let Parkable::Now(again) = r.response else {
        panic!("expected an immediate answer")
    };
    assert_eq!((again.generation_id, again.members.len()), (2, 2));
    let r = sh.join_group(350, &client(9), &join_req(&b, None, &range()));
    let Parkable::Now(again) = r.response else {
        panic!("expected an immediate answer")
    };
    assert_eq!((again.generation_id, again.members.len()), (2, 0));
    // b syncs first and waits; a (leader) syncs and both complete.
    let r = sh.sync_group(400, &client(5), &sync_req(&b, 2, &[]));
    assert!(r.deliveries.is_empty());
    let r = sh.sync_group(400, &client(5), &sync_req(&a, 2, &[(&a, b"A"), (&b, b"B")]));
    assert_eq!(
        synced(&r.deliveries, &a).assignment,
        Bytes::from_static(b"A")
    );
    assert_eq!(
        synced(&r.deliveries, &b).assignment,
        Bytes::from_static(b"B")
    );
}

#[test]
fn session_timeout_removes_a_silent_member_and_rebalances() {
    let mut sh = shard();
    let a = stable_single(&mut sh);
    let (b, _) = join_new(&mut sh, 0);
    let r = sh.join_group(0, &client(9), &join_req(&a, None, &range()));
    assert_eq!(r.deliveries.len(), 2);
    let r = sh.sync_group(0, &client(5), &sync_req(&a, 2, &[(&a, b"A"), (&b, b"B")]));
    assert_eq!(r.deliveries.len(), 1);
    let r = sh.sync_group(0, &client(5), &sync_req(&b, 2, &[]));
    assert!(matches!(r.response, Parkable::Now(ref x) if x.assignment == Bytes::from_static(b"B")));
    // a heartbeats, b goes silent.
    assert_eq!(heartbeat(&mut sh, 9_000, &a, 2), 0);
    assert_eq!(sh.next_deadline_ms(), Some(i64::from(SESSION_MS)));
    let r = sh.poll(i64::from(SESSION_MS));
    assert!(r.records.is_empty());
    let g = sh.group("g").expect("group");
    assert!(!g.has_member(&b));
    assert_eq!(g.state, GroupState::PreparingRebalance);
    // a rejoins: generation 3 with a alone.
    let r = sh.join_group(10_100, &client(9), &join_req(&a, None, &range()));
    let ja = joined(&r.deliveries, &a);
    assert_eq!((ja.generation_id, ja.members.len()), (3, 1));
}

#[test]
fn rebalance_timeout_completes_the_join_without_the_laggard() {
    let mut sh = shard();
    let a = stable_single(&mut sh);
    let (b, _) = join_new(&mut sh, 1_000);
    // a keeps heartbeating but never rejoins.
    for t in (2_000..31_000).step_by(3_000) {
        assert_eq!(
            heartbeat(&mut sh, t, &a, 1),
            ErrorCode::RebalanceInProgress.code()
        );
    }
    let r = sh.poll(1_000 + i64::from(REBALANCE_MS));
    let jb = joined(&r.deliveries, &b);
    assert_eq!((jb.generation_id, jb.leader.as_str()), (2, b.as_str()));
    assert!(!sh.group("g").expect("g").has_member(&a));
    assert_eq!(
        heartbeat(&mut sh, 31_001, &a, 1),
        ErrorCode::UnknownMemberId.code()
    );
}

#[test]
fn initial_rebalance_delay_waits_and_extends_for_new_members() {
    // KIP-134: group.initial.rebalance.delay.ms delays the first rebalance of an empty group.
    let mut sh = shard_with(GroupCoordinatorConfig {
        initial_rebalance_delay_ms: 3_000,
        ..GroupCoordinatorConfig::default()
    });
    let (a, d) = join_new(&mut sh, 0);
    assert!(d.is_empty());
    assert_eq!(sh.next_deadline_ms(), Some(3_000));
    let (b, d) = join_new(&mut sh, 2_000);
    assert!(d.is_empty());
    // At 3 s a member was added during the delay: extend by another 3 s.
    assert!(sh.poll(3_000).deliveries.is_empty());
    let r = sh.poll(6_000);
    assert_eq!(joined(&r.deliveries, &a).generation_id, 1);
    assert_eq!(joined(&r.deliveries, &b).generation_id, 1);
}

#[test]
fn inconsistent_group_protocol_and_protocol_selection() {
    let mut sh = shard();
    let a = stable_single(&mut sh);
    let r = sh.join_group(0, &client(9), &join_req("x", None, &[("roundrobin", b"")]));
    // Unknown member id given: UNKNOWN_MEMBER_ID comes after the protocol check in Kafka for new members only.
    let Parkable::Now(resp) = r.response else {
        panic!()
    };
    assert_eq!(resp.error_code, ErrorCode::InconsistentGroupProtocol.code());
    let r = sh.join_group(0, &client(9), &join_req("", None, &[("roundrobin", b"")]));
    let Parkable::Now(resp) = r.response else {
        panic!()
    };
    assert_eq!(resp.error_code, ErrorCode::InconsistentGroupProtocol.code());
    // A member supporting range and cooperative-sticky joins: range is common, so it is selected.
    let r = sh.join_group(
        0,
        &client(3),
        &join_req("", None, &[("cooperative-sticky", b""), ("range", b"m2")]),
    );
    let Parkable::Parked { member_id: b } = r.response else {
        panic!()
    };
    let r = sh.join_group(0, &client(9), &join_req(&a, None, &range()));
    let ja = joined(&r.deliveries, &a);
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));
    let mb = ja
        .members
        .iter()
        .find(|m| m.member_id.as_str() == b)
        .expect("b");
    assert_eq!(
        mb.metadata,
        Bytes::from_static(b"m2"),
        "metadata of the selected protocol"
    );
}

#[test]
fn group_max_size_reached() {
    let mut sh = shard_with(GroupCoordinatorConfig {
        initial_rebalance_delay_ms: 0,
        max_group_size: 1,
        ..GroupCoordinatorConfig::default()
    });
    let _a = stable_single(&mut sh);
    let r = sh.join_group(0, &client(9), &join_req("", None, &range()));
    // KIP-394 hands out an id first; the real join is refused.
    let Parkable::Now(resp) = r.response else {
        panic!()
    };
    let id = resp.member_id.to_string();
    let r = sh.join_group(0, &client(9), &join_req(&id, None, &range()));
    let Parkable::Now(resp) = r.response else {
        panic!()
    };
    assert_eq!(resp.error_code, ErrorCode::GroupMaxSizeReached.code());
}

#[test]
fn kip_345_static_member_rejoins_without_rebalance_and_old_id_is_fenced() {
    let mut sh = shard();
    // Two static members: a (leader) and b.
    let r = sh.join_group(0, &client(5), &join_req("", Some("ia"), &range()));
    let Parkable::Parked { member_id: a } = r.response else {
        panic!()
    };
    assert!(
        a.starts_with("ia-"),
        "static member ids start with the instance id"
    );
    // No KIP-394 round trip for static members; the join completed with a alone.
    let r = sh.sync_group(0, &client(3), &sync_req(&a, 1, &[(&a, b"A")]));
    assert_eq!(r.deliveries.len(), 1);
    let r = sh.join_group(0, &client(5), &join_req("", Some("ib"), &range()));
    let Parkable::Parked { member_id: b } = r.response else {
        panic!()
    };
    let r = sh.join_group(0, &client(5), &join_req(&a, Some("ia"), &range()));
    assert_eq!(r.deliveries.len(), 2);
    sh.sync_group(0, &client(3), &sync_req(&a, 2, &[(&a, b"A"), (&b, b"B")]));
    sh.sync_group(0, &client(3), &sync_req(&b, 2, &[]));
    assert_eq!(sh.group("g").map(|g| g.state), Some(GroupState::Stable));
    // b's process restarts (no LeaveGroup for static members) and rejoins within its session timeout.
    let r = sh.join_group(5_000, &client(5), &join_req("", Some("ib"), &range()));
    let Parkable::Now(resp) = r.response else {
        panic!("expected an immediate answer")
    };
    let b2 = resp.member_id.to_string();
    assert_ne!(b2, b);
    assert_eq!(
        (resp.error_code, resp.generation_id),
        (0, 2),
        "no new generation"
    );
    assert_eq!(sh.group("g").map(|g| g.state), Some(GroupState::Stable));
    // The group is persisted with the new member id.
    let [CoordinatorRecord::GroupMetadata { value: Some(v), .. }] = &r.records[..] else {
        panic!("{:?}", r.records)
    };
    assert!(v.members.iter().any(|m| m.member_id == b2));
    // It keeps its assignment.
    let r = sh.sync_group(5_001, &client(3), &sync_req(&b2, 2, &[]));
    assert!(matches!(r.response, Parkable::Now(ref x) if x.assignment == Bytes::from_static(b"B")));
    // The old incarnation is fenced.
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(&b))
        .with_group_instance_id(Some(s("ib")))
        .with_generation_id(2);
    assert_eq!(
        sh.heartbeat(5_002, &req).response.error_code,
        ErrorCode::FencedInstanceId.code()
    );
}

#[test]
fn leave_group_batched_by_instance_id_and_empty_group_is_persisted() {
    let mut sh = shard();
    let r = sh.join_group(0, &client(5), &join_req("", Some("ia"), &range()));
    let Parkable::Parked { member_id: a } = r.response else {
        panic!()
    };
    sh.sync_group(0, &client(3), &sync_req(&a, 1, &[(&a, b"A")]));
    // KIP-345 batched leave, by instance id with an unknown member id, plus an unknown member.
    let req = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_members(vec![
            MemberIdentity::default()
                .with_member_id(s(""))
                .with_group_instance_id(Some(s("ia"))),
            MemberIdentity::default().with_member_id(s("ghost")),
        ]);
    let r = sh.leave_group(10, 3, &req);
    assert_eq!(r.response.error_code, 0);
    let errors: Vec<i16> = r.response.members.iter().map(|m| m.error_code).collect();
    assert_eq!(errors, vec![0, ErrorCode::UnknownMemberId.code()]);
    // The last member left: the group is Empty at generation 2 and that is persisted.
    let g = sh.group("g").expect("g");
    assert_eq!((g.state, g.generation), (GroupState::Empty, 2));
    let [CoordinatorRecord::GroupMetadata { value: Some(v), .. }] = &r.records[..] else {
        panic!("{:?}", r.records)
    };
    assert_eq!(
        (v.generation, v.members.len(), v.protocol.clone()),
        (2, 0, None)
    );
}

#[test]
fn offset_commit_checks_generation_member_and_rebalance() {
    let mut sh = shard();
    let a = stable_single(&mut sh);
    let err = |r: &crate::CoordinatorResult<kafka_protocol::messages::OffsetCommitResponse>| {
        r.response.topics[0].partitions[0].error_code
    };
    let r = sh.offset_commit(10, 8, &commit_req(1, &a, 42), &any_partition);
    assert_eq!(err(&r), 0);
    assert_eq!(
        r.records,
        vec![CoordinatorRecord::OffsetCommit {
            group_id: "g".into(),
            topic: "t".into(),
            partition: 0,
            value: Some(OffsetCommitValue {
                offset: 42,
                leader_epoch: 3,
                metadata: "meta".into(),
                commit_timestamp_ms: 10,
                expire_timestamp_ms: -1,
            }),
        }]
    );
    let fetched = sh.offset_fetch("g", Some(&[("t".to_string(), vec![0, 1])]));
    assert_eq!(
        (fetched[0].offset, fetched[0].metadata.as_deref()),
        (42, Some("meta"))
    );
    assert_eq!(fetched[1].offset, -1);
    assert_eq!(
        err(&sh.offset_commit(10, 8, &commit_req(0, &a, 1), &any_partition)),
        ErrorCode::IllegalGeneration.code()
    );
    assert_eq!(
        err(&sh.offset_commit(10, 8, &commit_req(1, "x", 1), &any_partition)),
        ErrorCode::UnknownMemberId.code()
    );
    // A commit without generation while the group has members.
    assert_eq!(
        err(&sh.offset_commit(10, 8, &commit_req(-1, "", 1), &any_partition)),
        ErrorCode::UnknownMemberId.code()
    );
    // Unknown topic partitions are refused.
    let r = sh.offset_commit(10, 8, &commit_req(1, &a, 1), &|_, _| false);
    assert_eq!(err(&r), ErrorCode::UnknownTopicOrPartition.code());
    // During CompletingRebalance a member's commit is REBALANCE_IN_PROGRESS.
    let (_b, _) = join_new(&mut sh, 20);
    let r = sh.join_group(20, &client(9), &join_req(&a, None, &range()));
    assert_eq!(r.deliveries.len(), 2);
    assert_eq!(
        err(&sh.offset_commit(30, 8, &commit_req(2, &a, 5), &any_partition)),
        ErrorCode::RebalanceInProgress.code()
    );
    // A group that does not exist: ILLEGAL_GENERATION before v9, GROUP_ID_NOT_FOUND from v9.
    let other = commit_req(1, "m", 1).with_group_id(GroupId(s("nope")));
    assert_eq!(
        err(&sh.offset_commit(0, 8, &other, &any_partition)),
        ErrorCode::IllegalGeneration.code()
    );
    assert_eq!(
        err(&sh.offset_commit(0, 9, &other, &any_partition)),
        ErrorCode::GroupIdNotFound.code()
    );
}

#[test]
fn standalone_commit_creates_an_empty_group_and_replay_restores_offsets() {
    let mut sh = shard();
    let r = sh.offset_commit(100, 8, &commit_req(-1, "", 7), &any_partition);
    assert_eq!(r.response.topics[0].partitions[0].error_code, 0);
    assert_eq!(
        sh.group("g").map(|g| (g.state, g.protocol_type.clone())),
        Some((GroupState::Empty, None))
    );
    let listed = sh.list_groups(&[], &[]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].group_state.as_str(), "Empty");
    // Load a fresh shard from the records (through their encoded form, as on disk).
    let mut loaded = shard();
    for rec in &r.records {
        let (k, v) = rec.encode();
        let decoded = CoordinatorRecord::decode(Some(&k), v.as_deref())
            .expect("decode")
            .expect("ours");
        loaded.replay(&decoded);
    }
    loaded.finish_loading(200);
    assert_eq!(
        loaded.committed_offset("g", "t", 0).map(|v| v.offset),
        Some(7)
    );
}

#[test]
fn loading_a_stable_group_then_its_members_expire_without_heartbeats() {
    let mut sh = shard();
    let a = stable_single(&mut sh);
    let r = sh.sync_group(0, &client(5), &sync_req(&a, 1, &[]));
    assert!(matches!(r.response, Parkable::Now(_)));
    // Rebuild from the persisted GroupMetadata record only.
    let g = sh.group("g").expect("g").to_record();
    let mut loaded = shard();
    loaded.replay(&CoordinatorRecord::GroupMetadata {
        group_id: "g".into(),
        value: Some(g),
    });
    loaded.finish_loading(1_000);
    let lg = loaded.group("g").expect("g");
    assert_eq!(
        (lg.state, lg.generation, lg.leader.clone()),
        (GroupState::Stable, 1, Some(a.clone()))
    );
    assert_eq!(heartbeat(&mut loaded, 1_500, &a, 1), 0);
    loaded.poll(1_500 + i64::from(SESSION_MS));
    let lg = loaded.group("g").expect("g");
    assert_eq!((lg.state, lg.generation), (GroupState::Empty, 2));
}

#[test]
fn delete_groups_requires_empty_and_writes_tombstones() {
    let mut sh = shard();
    let a = stable_single(&mut sh);
    sh.offset_commit(0, 8, &commit_req(1, &a, 5), &any_partition);
    assert_eq!(
        sh.delete_group("g").response,
        ErrorCode::NonEmptyGroup.code()
    );
    assert_eq!(
        sh.delete_group("nope").response,
        ErrorCode::GroupIdNotFound.code()
    );
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(&a));
    assert_eq!(sh.leave_group(1, 1, &leave).response.error_code, 0);
    let r = sh.delete_group("g");
    assert_eq!(r.response, 0);
    assert_eq!(
        r.records,
        vec![
            CoordinatorRecord::OffsetCommit {
                group_id: "g".into(),
                topic: "t".into(),
                partition: 0,
                value: None
            },
            CoordinatorRecord::GroupMetadata {
                group_id: "g".into(),
                value: None
            },
        ]
    );
    assert!(sh.group("g").is_none());
    assert_eq!(sh.describe_group("g").group_state.as_str(), "Dead");
}

#[test]
fn offsets_expire_seven_days_after_the_group_became_empty() {
    // KIP-211: offsets.retention.minutes counts from the time the group became Empty.
    let mut sh = shard();
    sh.finish_loading(0);
    let a = stable_single(&mut sh);
    sh.offset_commit(0, 8, &commit_req(1, &a, 5), &any_partition);
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(&a));
    sh.leave_group(1_000, 1, &leave);
    let week = GroupCoordinatorConfig::default().offsets_retention_ms;
    let r = sh.poll(week);
    assert!(
        r.records.is_empty(),
        "not yet: the group became empty at 1000"
    );
    let r = sh.poll(1_000 + week + 600_000);
    assert_eq!(
        r.records,
        vec![
            CoordinatorRecord::OffsetCommit {
                group_id: "g".into(),
                topic: "t".into(),
                partition: 0,
                value: None
            },
            CoordinatorRecord::GroupMetadata {
                group_id: "g".into(),
                value: None
            },
        ]
    );
    assert!(sh.group("g").is_none());
}

#[test]
fn offset_delete_refuses_subscribed_topics() {
    // KIP-496: OffsetDelete; GROUP_SUBSCRIBED_TO_TOPIC while a consumer group subscribes to the topic.
    let mut sh = shard();
    // ConsumerProtocolSubscription v0 subscribing to "t".
    let sub: &[u8] = &[0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0];
    let r = sh.join_group(0, &client(3), &join_req("", None, &[("range", sub)]));
    let Parkable::Parked { member_id: a } = r.response else {
        panic!()
    };
    sh.sync_group(0, &client(3), &sync_req(&a, 1, &[(&a, b"A")]));
    sh.offset_commit(0, 8, &commit_req(1, &a, 5), &any_partition);
    let mut c = commit_req(1, &a, 6);
    c.topics[0].name = TopicName(s("u"));
    sh.offset_commit(0, 8, &c, &any_partition);
    let del = |topic: &str| {
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])])
    };
    let r = sh.offset_delete(&del("t"));
    assert_eq!(
        r.response.topics[0].partitions[0].error_code,
        ErrorCode::GroupSubscribedToTopic.code()
    );
    let r = sh.offset_delete(&del("u"));
    assert_eq!(r.response.topics[0].partitions[0].error_code, 0);
    assert_eq!(r.records.len(), 1);
    assert!(sh.committed_offset("g", "u", 0).is_none());
    let nope = del("t").with_group_id(GroupId(s("nope")));
    assert_eq!(
        sh.offset_delete(&nope).response.error_code,
        ErrorCode::GroupIdNotFound.code()
    );
}

#[test]
fn sync_timeout_removes_members_that_never_synced() {
    let mut sh = shard();
    let a = stable_single(&mut sh);
    let (b, _) = join_new(&mut sh, 0);
    sh.join_group(0, &client(9), &join_req(&a, None, &range()));
    // Only the leader syncs; b never does.
    let r = sh.sync_group(0, &client(5), &sync_req(&a, 2, &[(&a, b"A"), (&b, b"B")]));
    assert_eq!(r.deliveries.len(), 1);
    // b does heartbeat, but the sync deadline (rebalance timeout) removes it anyway.
    for t in [9_000, 18_000, 27_000] {
        assert_eq!(heartbeat(&mut sh, t, &a, 2), 0);
        assert_eq!(heartbeat(&mut sh, t, &b, 2), 0);
    }
    sh.poll(i64::from(REBALANCE_MS));
    let g = sh.group("g").expect("g");
    assert!(!g.has_member(&b));
    assert_eq!(g.state, GroupState::PreparingRebalance);
}

#[test]
fn describe_and_list_groups_with_state_filter() {
    let mut sh = shard();
    let a = stable_single(&mut sh);
    let d = sh.describe_group("g");
    assert_eq!(
        (
            d.group_state.as_str(),
            d.protocol_type.as_str(),
            d.protocol_data.as_str()
        ),
        ("Stable", "consumer", "range")
    );
    assert_eq!(d.members[0].member_id.as_str(), a);
    assert_eq!(d.members[0].member_assignment, Bytes::from_static(b"a1"));
    assert_eq!(sh.list_groups(&["stable".into()], &[]).len(), 1);
    assert_eq!(sh.list_groups(&["Empty".into()], &[]).len(), 0);
    assert_eq!(sh.list_groups(&[], &["consumer".into()]).len(), 0);
}

#[test]
fn kip_345_static_leader_rejoin_does_not_rebalance() {
    // A static leader restarting: JoinGroup < v9 answers with the old leader id and no members (so the
    // client does not act as leader); v9 (KIP-814) names it leader with the members and skip_assignment.
    for v in [5i16, 9] {
        let mut sh = shard();
        let r = sh.join_group(0, &client(v), &join_req("", Some("ia"), &range()));
        let Parkable::Parked { member_id: a } = r.response else {
            panic!()
        };
        sh.sync_group(0, &client(3), &sync_req(&a, 1, &[(&a, b"A")]));
        let r = sh.join_group(1_000, &client(v), &join_req("", Some("ia"), &range()));
        let Parkable::Now(resp) = r.response else {
            panic!("v{v}: expected an immediate answer")
        };
        let a2 = resp.member_id.to_string();
        assert_eq!((resp.error_code, resp.generation_id), (0, 1), "v{v}");
        if v >= 9 {
            assert_eq!(resp.leader.as_str(), a2);
            assert!(resp.skip_assignment);
            assert_eq!(resp.members.len(), 1);
        } else {
            assert_eq!(resp.leader.as_str(), a, "the old leader id");
            assert!(resp.members.is_empty());
        }
        let g = sh.group("g").expect("g");
        assert_eq!(
            (g.state, g.leader.clone()),
            (GroupState::Stable, Some(a2.clone()))
        );
        let r = sh.sync_group(1_001, &client(3), &sync_req(&a2, 1, &[]));
        assert!(
            matches!(r.response, Parkable::Now(ref x) if x.assignment == Bytes::from_static(b"A"))
        );
    }
}

#[test]
fn offset_commit_v2_retention_time_expires_the_offset_explicitly() {
    // OffsetCommit v2-v4 retention_time_ms: written as OffsetCommitValue v1 with an expire timestamp.
    let mut sh = shard();
    sh.finish_loading(0);
    let mut req = commit_req(-1, "", 9).with_retention_time_ms(60_000);
    // v2-v5 carry no leader epoch.
    req.topics[0].partitions[0].committed_leader_epoch = -1;
    let r = sh.offset_commit(1_000, 2, &req, &any_partition);
    let CoordinatorRecord::OffsetCommit { value: Some(v), .. } = &r.records[0] else {
        panic!("{:?}", r.records)
    };
    assert_eq!(v.expire_timestamp_ms, 61_000);
    let (k, bytes) = r.records[0].encode();
    let bytes = bytes.expect("value");
    assert_eq!(&bytes[..2], &[0, 1], "value version 1");
    assert_eq!(
        CoordinatorRecord::decode(Some(&k), Some(&bytes)).expect("decode"),
        Some(r.records[0].clone())
    );
    // v5+ has no retention time.
    let r = sh.offset_commit(1_000, 5, &req, &any_partition);
    let CoordinatorRecord::OffsetCommit { value: Some(v), .. } = &r.records[0] else {
        panic!()
    };
    assert_eq!(v.expire_timestamp_ms, -1);
    // Re-commit with v2 and let the explicit expiry pass: the next check writes the tombstone.
    sh.offset_commit(2_000, 2, &req, &any_partition);
    let r = sh.poll(600_000);
    assert_eq!(
        r.records,
        vec![
            CoordinatorRecord::OffsetCommit {
                group_id: "g".into(),
                topic: "t".into(),
                partition: 0,
                value: None
            },
            CoordinatorRecord::GroupMetadata {
                group_id: "g".into(),
                value: None
            },
        ]
    );
}
