//! Tick-by-tick tests of the group coordinator shard: explicit `now_ms`, exact records and responses, each
//! citing the KIP or Kafka behaviour it checks. One file per area of `shard/`; this one holds the shared
//! requests and steps (a shard, a JoinGroup, a member that is Stable, ...) and the placement test.

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, OffsetCommitRequest,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;

use crate::{
    partition_for, ClientInfo, Delivery, GroupCoordinatorConfig, GroupCoordinatorShard, Parkable,
};

mod admin;
mod membership;
mod offsets;
mod rebalance;
mod txn_offsets;

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
