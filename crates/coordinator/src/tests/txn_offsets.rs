//! Tests of transactional offset commits (KIP-98, KIP-447): TxnOffsetCommit's checks (Kafka's
//! `validateTransactionalOffsetCommit`), pending offsets invisible to OffsetFetch and UNSTABLE_OFFSET_COMMIT with
//! `require_stable`, COMMIT and ABORT markers (`replayEndTransactionMarker`, with its rule that the most recent
//! record in the log wins), expiry and deletion with open transactions, and a load from the log that rebuilds
//! the same state.

use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    GroupId, OffsetDeleteRequest, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use sluice_protocol::ErrorCode;

use super::{
    any_partition, client, commit_req, join_new, join_req, range, s, shard, shard_with,
    stable_single, sync_req,
};
use crate::record::{CoordinatorRecord, OffsetCommitValue};
use crate::{
    CommittedOffset, CoordinatorResult, GroupCoordinatorConfig, GroupCoordinatorShard, GroupError,
    GroupState, Parkable,
};

const PID: i64 = 4_000;
const OTHER_PID: i64 = 4_001;

/// A TxnOffsetCommit of group "g", partition t-0, as a v3+ client sends it.
fn txn_req(
    producer_id: i64,
    generation: i32,
    member: &str,
    instance: Option<&str>,
    offset: i64,
) -> TxnOffsetCommitRequest {
    txn_req_for("t", 0, producer_id, offset)
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
}

/// A TxnOffsetCommit without member or generation (as v0-v2 and a producer without group management send).
fn txn_req_for(
    topic: &str,
    partition: i32,
    producer_id: i64,
    offset: i64,
) -> TxnOffsetCommitRequest {
    TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_group_id(GroupId(s("g")))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(0)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(2)
                .with_committed_metadata(Some(s("txn-meta")))])])
}

fn err(r: &CoordinatorResult<TxnOffsetCommitResponse>) -> i16 {
    r.response.topics[0].partitions[0].error_code
}

/// Runs a TxnOffsetCommit and applies its records as the shell does once they are appended in a transactional
/// batch of the producer; returns the records.
fn txn_commit(
    sh: &mut GroupCoordinatorShard,
    now_ms: i64,
    request: &TxnOffsetCommitRequest,
) -> Vec<CoordinatorRecord> {
    let r = sh.txn_offset_commit(now_ms, request);
    assert_eq!(err(&r), 0, "{:?}", r.response);
    for record in &r.records {
        sh.replay_transactional(request.producer_id.0, record);
    }
    r.records
}

fn fetch_t0(sh: &GroupCoordinatorShard, require_stable: bool) -> CommittedOffset {
    sh.offset_fetch("g", Some(&[("t".to_string(), vec![0])]), require_stable)
        .remove(0)
}

#[test]
fn txn_offset_commit_checks_group_member_and_generation_as_kafka() {
    let mut sh = shard();
    // GroupCoordinatorService: an empty group id is INVALID_GROUP_ID.
    let empty = txn_req(PID, -1, "", None, 1).with_group_id(GroupId(s("")));
    assert_eq!(
        err(&sh.txn_offset_commit(0, &empty)),
        ErrorCode::InvalidGroupId.code()
    );
    // Unknown group: accepted without a generation (a simple group), ILLEGAL_GENERATION with one.
    assert_eq!(
        err(&sh.txn_offset_commit(0, &txn_req(PID, 1, "m", None, 1))),
        ErrorCode::IllegalGeneration.code()
    );
    let r = sh.txn_offset_commit(5, &txn_req(PID, -1, "", None, 1));
    assert_eq!(err(&r), 0);
    assert_eq!(
        r.records,
        vec![CoordinatorRecord::OffsetCommit {
            group_id: "g".into(),
            topic: "t".into(),
            partition: 0,
            value: Some(OffsetCommitValue {
                offset: 1,
                leader_epoch: 2,
                metadata: "txn-meta".into(),
                commit_timestamp_ms: 5,
                expire_timestamp_ms: -1,
            }),
        }]
    );
    assert!(
        sh.group("g").is_none(),
        "nothing changes before the records are replayed"
    );

    let a = stable_single(&mut sh);
    assert_eq!(
        err(&sh.txn_offset_commit(10, &txn_req(PID, 1, &a, None, 1))),
        0
    );
    assert_eq!(
        err(&sh.txn_offset_commit(10, &txn_req(PID, 0, &a, None, 1))),
        ErrorCode::IllegalGeneration.code()
    );
    assert_eq!(
        err(&sh.txn_offset_commit(10, &txn_req(PID, 1, "x", None, 1))),
        ErrorCode::UnknownMemberId.code()
    );
    // A member id without a generation is still checked (ILLEGAL_GENERATION: -1 is not the generation).
    assert_eq!(
        err(&sh.txn_offset_commit(10, &txn_req(PID, -1, &a, None, 1))),
        ErrorCode::IllegalGeneration.code()
    );
    // An instance id alone: validateMember finds no static member with it.
    assert_eq!(
        err(&sh.txn_offset_commit(10, &txn_req(PID, -1, "", Some("i"), 1))),
        ErrorCode::UnknownMemberId.code()
    );
    // Unlike OffsetCommit, no member and no generation is accepted while the group has members: v0-v2 of
    // TxnOffsetCommit carry neither (ClassicGroup.validateOffsetCommit with isTransactional).
    assert_eq!(
        err(&sh.txn_offset_commit(10, &txn_req(PID, -1, "", None, 1))),
        0
    );
    assert_eq!(
        sh.offset_commit(10, 8, &commit_req(-1, "", 1), &any_partition)
            .response
            .topics[0]
            .partitions[0]
            .error_code,
        ErrorCode::UnknownMemberId.code()
    );
    // During CompletingRebalance the member's transactional commit is accepted (OffsetCommit's
    // REBALANCE_IN_PROGRESS does not apply: "the group state is not enforced for those").
    let (_b, _) = join_new(&mut sh, 20);
    let r = sh.join_group(20, &client(9), &join_req(&a, None, &range()));
    assert_eq!(r.deliveries.len(), 2);
    assert_eq!(
        sh.group("g").map(|g| g.state),
        Some(GroupState::CompletingRebalance)
    );
    assert_eq!(
        err(&sh.txn_offset_commit(30, &txn_req(PID, 2, &a, None, 5))),
        0
    );
    assert_eq!(
        sh.offset_commit(30, 8, &commit_req(2, &a, 5), &any_partition)
            .response
            .topics[0]
            .partitions[0]
            .error_code,
        ErrorCode::RebalanceInProgress.code()
    );
}

#[test]
fn txn_offset_commit_fences_static_members_and_checks_metadata_size() {
    let mut sh = shard_with(GroupCoordinatorConfig {
        initial_rebalance_delay_ms: 0,
        offset_metadata_max_bytes: 4,
        ..GroupCoordinatorConfig::default()
    });
    let r = sh.join_group(0, &client(5), &join_req("", Some("ia"), &range()));
    let Parkable::Parked { member_id: a } = r.response else {
        panic!("static member parked")
    };
    sh.sync_group(0, &client(3), &sync_req(&a, 1, &[(&a, b"A")]));
    // KIP-345: another member id with a's instance id is fenced.
    assert_eq!(
        err(&sh.txn_offset_commit(0, &txn_req(PID, 1, "other", Some("ia"), 1))),
        ErrorCode::FencedInstanceId.code()
    );
    // Metadata is measured as Kafka measures a Java string (UTF-16 units): "ééé" is 3, "txn-meta" 8.
    let mut ok = txn_req(PID, 1, &a, Some("ia"), 1);
    ok.topics[0].partitions[0].committed_metadata = Some(s("ééé"));
    let r = sh.txn_offset_commit(0, &ok);
    assert_eq!((err(&r), r.records.len()), (0, 1));
    let r = sh.txn_offset_commit(0, &txn_req(PID, 1, &a, Some("ia"), 1));
    assert_eq!(
        (err(&r), r.records.len()),
        (ErrorCode::OffsetMetadataTooLarge.code(), 0)
    );
}

#[test]
fn pending_offsets_are_invisible_until_the_commit_marker() {
    // KIP-447: a consumer asking for stable offsets gets UNSTABLE_OFFSET_COMMIT while the producer's
    // transaction is open, and the committed offset once its COMMIT marker is replayed.
    let mut sh = shard();
    sh.offset_commit(0, 8, &commit_req(-1, "", 10), &any_partition);
    txn_commit(&mut sh, 1, &txn_req_for("t", 0, PID, 20));
    assert!(sh.has_pending_transactional_offsets("g", "t", 0));
    assert!(sh.has_open_transactions("g"));
    assert_eq!(
        sh.pending_transactional_offset(PID, "g", "t", 0)
            .map(|v| v.offset),
        Some(20)
    );
    // Without require_stable the committed offset is answered; with it, the partition is unstable.
    assert_eq!(
        (fetch_t0(&sh, false).offset, fetch_t0(&sh, false).error),
        (10, GroupError::None)
    );
    assert_eq!(
        fetch_t0(&sh, true),
        CommittedOffset {
            topic: "t".into(),
            partition: 0,
            offset: -1,
            leader_epoch: -1,
            metadata: Some(String::new()),
            error: GroupError::UnstableOffsetCommit,
        }
    );
    // "All partitions" lists the committed ones (t-0 unstable); a partition with only a pending offset is not
    // listed (Kafka's fetchAllOffsets walks the committed offsets).
    txn_commit(&mut sh, 1, &txn_req_for("u", 3, PID, 7));
    let all = sh.offset_fetch("g", None, true);
    assert_eq!(
        all.iter()
            .map(|o| (o.topic.as_str(), o.partition, o.offset, o.error))
            .collect::<Vec<_>>(),
        vec![("t", 0, -1, GroupError::UnstableOffsetCommit)]
    );
    // Another group of the shard is not affected.
    assert_eq!(sh.offset_fetch("h", None, true), Vec::new());

    sh.replay_end_transaction(PID, true);
    assert!(!sh.has_pending_transactional_offsets("g", "t", 0));
    assert!(!sh.has_open_transactions("g"));
    let t0 = fetch_t0(&sh, true);
    assert_eq!(
        (t0.offset, t0.leader_epoch, t0.metadata.as_deref(), t0.error),
        (20, 2, Some("txn-meta"), GroupError::None)
    );
    assert_eq!(sh.committed_offset("g", "u", 3).map(|v| v.offset), Some(7));
}

#[test]
fn an_abort_marker_drops_the_pending_offsets() {
    let mut sh = shard();
    sh.offset_commit(0, 8, &commit_req(-1, "", 10), &any_partition);
    txn_commit(&mut sh, 1, &txn_req_for("t", 0, PID, 20));
    txn_commit(&mut sh, 1, &txn_req_for("t", 1, OTHER_PID, 30));
    sh.replay_end_transaction(PID, false);
    assert_eq!(fetch_t0(&sh, true).offset, 10, "the committed offset stays");
    assert!(sh.pending_transactional_offset(PID, "g", "t", 0).is_none());
    // The other producer's transaction is still open.
    assert!(sh.has_pending_transactional_offsets("g", "t", 1));
    assert!(sh.has_open_transactions("g"));
    // A marker of a producer without pending offsets (or a second one) changes nothing.
    sh.replay_end_transaction(PID, true);
    sh.replay_end_transaction(99, true);
    assert_eq!(fetch_t0(&sh, true).offset, 10);
    sh.replay_end_transaction(OTHER_PID, true);
    assert_eq!(sh.committed_offset("g", "t", 1).map(|v| v.offset), Some(30));
    assert!(!sh.has_open_transactions("g"));
}

#[test]
fn the_most_recent_record_in_the_log_wins_when_a_transaction_commits() {
    // Kafka's replayEndTransactionMarker: a transactional offset is materialized only if its record is later in
    // the log than the committed offset's record.
    let mut sh = shard();
    // Transactional 20 first, then a plain commit of 25: the COMMIT keeps 25.
    txn_commit(&mut sh, 1, &txn_req_for("t", 0, PID, 20));
    sh.offset_commit(2, 8, &commit_req(-1, "", 25), &any_partition);
    assert_eq!(fetch_t0(&sh, false).offset, 25);
    sh.replay_end_transaction(PID, true);
    assert_eq!(fetch_t0(&sh, false).offset, 25);
    // A plain commit of 30, then transactional 40: the COMMIT moves to 40.
    sh.offset_commit(3, 8, &commit_req(-1, "", 30), &any_partition);
    txn_commit(&mut sh, 4, &txn_req_for("t", 0, PID, 40));
    sh.replay_end_transaction(PID, true);
    assert_eq!(fetch_t0(&sh, false).offset, 40);
}

#[test]
fn open_transactions_keep_offsets_and_groups_from_expiring() {
    // Kafka's cleanupExpiredOffsets: no expiry for a partition with a pending transactional offset, no group
    // deletion while a transaction is open.
    let mut sh = shard();
    sh.finish_loading(0);
    sh.offset_commit(0, 8, &commit_req(-1, "", 5), &any_partition);
    txn_commit(&mut sh, 0, &txn_req_for("t", 0, PID, 6));
    let week = GroupCoordinatorConfig::default().offsets_retention_ms;
    let r = sh.poll(week + 600_000);
    assert!(r.records.is_empty(), "{:?}", r.records);
    // Only a pending offset, no committed one: the simple group is kept too.
    let mut only_pending = shard();
    only_pending.finish_loading(0);
    txn_commit(&mut only_pending, 0, &txn_req_for("t", 0, PID, 6));
    assert!(only_pending.poll(week + 600_000).records.is_empty());
    assert!(only_pending.group("g").is_some());
    // Once the transaction aborts, the old offset expires and the Empty group goes with it.
    sh.replay_end_transaction(PID, false);
    let r = sh.poll(week + 1_200_000);
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

#[test]
fn deleting_a_group_or_its_offsets_tombstones_pending_offsets() {
    // Kafka's deleteAllOffsets and deleteOffsets: a partition with only a pending transactional offset gets a
    // tombstone too, and replaying the tombstone removes the pending offset.
    let mut sh = shard();
    sh.offset_commit(0, 8, &commit_req(-1, "", 5), &any_partition);
    txn_commit(&mut sh, 0, &txn_req_for("t", 0, PID, 6));
    txn_commit(&mut sh, 0, &txn_req_for("u", 1, PID, 7));
    txn_commit(&mut sh, 0, &txn_req_for("u", 1, OTHER_PID, 8));
    let r = sh.delete_group("g");
    assert_eq!(r.response, 0);
    let tombstone = |topic: &str, partition| CoordinatorRecord::OffsetCommit {
        group_id: "g".into(),
        topic: topic.into(),
        partition,
        value: None,
    };
    assert_eq!(
        r.records,
        vec![
            tombstone("t", 0),
            tombstone("u", 1),
            CoordinatorRecord::GroupMetadata {
                group_id: "g".into(),
                value: None
            },
        ]
    );
    assert!(!sh.has_pending_transactional_offsets("g", "u", 1));
    // The markers arrive later and materialize nothing.
    sh.replay_end_transaction(PID, true);
    sh.replay_end_transaction(OTHER_PID, true);
    assert!(sh.committed_offset("g", "t", 0).is_none());
    assert!(sh.committed_offset("g", "u", 1).is_none());
    assert!(!sh.has_open_transactions("g"));

    // OffsetDelete of a partition that has only a pending offset.
    let mut sh = shard();
    sh.offset_commit(0, 8, &commit_req(-1, "", 5), &any_partition);
    txn_commit(&mut sh, 0, &txn_req_for("u", 0, PID, 6));
    let del = OffsetDeleteRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(s("u")))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])]);
    let r = sh.offset_delete(&del);
    assert_eq!(r.records, vec![tombstone("u", 0)]);
    assert!(!sh.has_pending_transactional_offsets("g", "u", 0));
    assert!(
        sh.has_open_transactions("g"),
        "the producer stays open until its marker"
    );
    sh.replay_end_transaction(PID, true);
    assert!(sh.committed_offset("g", "u", 0).is_none());
}

/// One entry of a `__consumer_offsets` log, as a load reads it.
enum LogEntry {
    Plain(CoordinatorRecord),
    Transactional(i64, CoordinatorRecord),
    Marker(i64, bool),
}

#[test]
fn a_load_from_the_log_rebuilds_pending_and_committed_offsets() {
    // The shell replays plain batches with replay, transactional ones with replay_transactional (producer id
    // from the batch header) and control batches with replay_end_transaction, in log order.
    let mut live = shard();
    let mut log = Vec::new();
    let plain = |sh: &mut GroupCoordinatorShard, log: &mut Vec<LogEntry>, offset| {
        let r = sh.offset_commit(0, 8, &commit_req(-1, "", offset), &any_partition);
        log.extend(r.records.into_iter().map(LogEntry::Plain));
    };
    let txn = |sh: &mut GroupCoordinatorShard, log: &mut Vec<LogEntry>, req| {
        let pid = req_pid(&req);
        log.extend(
            txn_commit(sh, 0, &req)
                .into_iter()
                .map(|r| LogEntry::Transactional(pid, r)),
        );
    };
    let marker = |sh: &mut GroupCoordinatorShard, log: &mut Vec<LogEntry>, pid, commit| {
        sh.replay_end_transaction(pid, commit);
        log.push(LogEntry::Marker(pid, commit));
    };
    plain(&mut live, &mut log, 1);
    txn(&mut live, &mut log, txn_req_for("t", 0, PID, 2));
    plain(&mut live, &mut log, 3);
    marker(&mut live, &mut log, PID, true);
    txn(&mut live, &mut log, txn_req_for("t", 1, PID, 4));
    marker(&mut live, &mut log, PID, false);
    txn(&mut live, &mut log, txn_req_for("t", 2, OTHER_PID, 5));
    txn(&mut live, &mut log, txn_req_for("t", 3, PID, 6));
    marker(&mut live, &mut log, PID, true);

    let mut loaded = shard();
    for entry in &log {
        match entry {
            LogEntry::Plain(r) => loaded.replay(&decoded(r)),
            LogEntry::Transactional(pid, r) => loaded.replay_transactional(*pid, &decoded(r)),
            LogEntry::Marker(pid, commit) => loaded.replay_end_transaction(*pid, *commit),
        }
    }
    loaded.finish_loading(0);
    let partitions = [("t".to_string(), vec![0, 1, 2, 3])];
    for require_stable in [false, true] {
        assert_eq!(
            loaded.offset_fetch("g", Some(&partitions), require_stable),
            live.offset_fetch("g", Some(&partitions), require_stable)
        );
    }
    let fetched: Vec<(i64, GroupError)> = loaded
        .offset_fetch("g", Some(&partitions), true)
        .into_iter()
        .map(|o| (o.offset, o.error))
        .collect();
    assert_eq!(
        fetched,
        vec![
            (3, GroupError::None),
            (-1, GroupError::None),
            (-1, GroupError::UnstableOffsetCommit),
            (6, GroupError::None),
        ]
    );
    // The still-open transaction commits on the loaded shard as it would have on the live one.
    loaded.replay_end_transaction(OTHER_PID, true);
    assert_eq!(
        loaded.committed_offset("g", "t", 2).map(|v| v.offset),
        Some(5)
    );
}

fn req_pid(r: &TxnOffsetCommitRequest) -> i64 {
    r.producer_id.0
}

/// A record through its encoded form, as it is read back from disk.
fn decoded(record: &CoordinatorRecord) -> CoordinatorRecord {
    let (k, v) = record.encode();
    CoordinatorRecord::decode(Some(&k), v.as_deref())
        .expect("decode")
        .expect("ours")
}
