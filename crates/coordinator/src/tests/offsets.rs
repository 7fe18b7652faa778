//! Tests of committed offsets: OffsetCommit's checks, standalone commits and their replay, OffsetFetch,
//! OffsetDelete (KIP-496) and expiry (KIP-211, explicit retention of OffsetCommit v2-v4).

use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{GroupId, LeaveGroupRequest, OffsetDeleteRequest, TopicName};
use sluice_protocol::ErrorCode;

use super::{
    any_partition, client, commit_req, join_new, join_req, range, s, shard, stable_single, sync_req,
};
use crate::record::{CoordinatorRecord, OffsetCommitValue};
use crate::{GroupCoordinatorConfig, GroupState, Parkable};

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
    let fetched = sh.offset_fetch("g", Some(&[("t".to_string(), vec![0, 1])]), false);
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
