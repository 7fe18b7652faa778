//! Tests of the group timers: session, rebalance and sync timeouts, KIP-134's initial rebalance delay, and
//! the sessions of a loaded group.

use bytes::Bytes;
use sluice_protocol::ErrorCode;

use super::{
    client, heartbeat, join_new, join_req, joined, range, shard, shard_with, stable_single,
    sync_req, REBALANCE_MS, SESSION_MS,
};
use crate::record::CoordinatorRecord;
use crate::{GroupCoordinatorConfig, GroupState, Parkable};

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
