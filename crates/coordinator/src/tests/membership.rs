//! Tests of JoinGroup, SyncGroup, Heartbeat and LeaveGroup: KIP-394 member ids, KIP-345 static members
//! (with KIP-814's skip_assignment), protocol selection, `group.max.size`.

use bytes::Bytes;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::{GroupId, HeartbeatRequest, LeaveGroupRequest};
use sluice_protocol::ErrorCode;

use super::{
    client, heartbeat, join_new, join_req, joined, range, s, shard, shard_with, stable_single,
    sync_req, synced,
};
use crate::record::CoordinatorRecord;
use crate::{GroupCoordinatorConfig, GroupState, Parkable};

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
