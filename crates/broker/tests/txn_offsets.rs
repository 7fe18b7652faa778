//! Transactional offset commits end to end (KIP-98, KIP-447) on a broker served in-process on a free loopback
//! port, driven with requests encoded by `kafka-protocol`: TxnOffsetCommit's validation errors as Apache Kafka
//! answers them, OffsetFetch with `require_stable` answering UNSTABLE_OFFSET_COMMIT (88) while the transaction is
//! open, the open transaction holding back the LSO of `__consumer_offsets`, and the COMMIT/ABORT marker written
//! through `GroupCoordinator::complete_transaction` (what the WriteTxnMarkers handler calls), across restarts.

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
mod common;

use common::Client;
use sluice_testkit::TestBroker;

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const ILLEGAL_GENERATION: i16 = 22;
const INVALID_GROUP_ID: i16 = 24;
const UNKNOWN_MEMBER_ID: i16 = 25;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

const PRODUCER_ID: i64 = 7_000;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A TxnOffsetCommit of `group` for the given (topic, partition, offset)s, without member or generation.
fn txn_commit(group: &str, offsets: &[(&str, i32, i64)]) -> TxnOffsetCommitRequest {
    let mut topics: Vec<TxnOffsetCommitRequestTopic> = Vec::new();
    for &(topic, partition, offset) in offsets {
        let p = TxnOffsetCommitRequestPartition::default()
            .with_partition_index(partition)
            .with_committed_offset(offset)
            .with_committed_leader_epoch(0)
            .with_committed_metadata(Some(s("m")));
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("tx")))
        .with_group_id(GroupId(s(group)))
        .with_producer_id(ProducerId(PRODUCER_ID))
        .with_producer_epoch(0)
        .with_generation_id(-1)
        .with_topics(topics)
}

/// The (topic, partition, error) of every partition of a TxnOffsetCommit response, sorted.
fn errors(response: &TxnOffsetCommitResponse) -> Vec<(String, i32, i16)> {
    let mut out: Vec<(String, i32, i16)> = response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index, p.error_code))
        })
        .collect();
    out.sort();
    out
}

fn e(topic: &str, partition: i32, code: i16) -> (String, i32, i16) {
    (topic.to_string(), partition, code)
}

/// OffsetFetch v7 (one group, `require_stable`) of `topic` partition `partition`: (offset, error).
async fn fetch_v7(
    client: &mut Client,
    group: &str,
    topic: &str,
    partition: i32,
    require_stable: bool,
) -> (i64, i16) {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partition_indexes(vec![partition])]))
        .with_require_stable(require_stable);
    let response = client.send(7, request).await;
    assert_eq!(response.error_code, NONE, "{response:?}");
    let p = &response.topics[0].partitions[0];
    (p.committed_offset, p.error_code)
}

/// OffsetFetch v8 (groups array) of every committed offset of `group`: (topic, partition, offset, error).
async fn fetch_all_v8(
    client: &mut Client,
    group: &str,
    require_stable: bool,
) -> Vec<(String, i32, i64, i16)> {
    let request = OffsetFetchRequest::default()
        .with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(None)])
        .with_require_stable(require_stable);
    let response = client.send(8, request).await;
    let g = &response.groups[0];
    assert_eq!(g.error_code, NONE, "{response:?}");
    g.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.error_code,
                )
            })
        })
        .collect()
}

/// OffsetFetch v8 of named partitions.
async fn fetch_v8(client: &mut Client, group: &str, topic: &str, partition: i32) -> (i64, i16) {
    let request = OffsetFetchRequest::default()
        .with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(s(topic)))
                .with_partition_indexes(vec![partition])]))])
        .with_require_stable(true);
    let response = client.send(8, request).await;
    let p = &response.groups[0].topics[0].partitions[0];
    (p.committed_offset, p.error_code)
}

/// The LSO and high watermark of the group's `__consumer_offsets` partition.
fn offsets_topic_lso_and_hw(broker: &TestBroker, group: &str) -> (i64, i64) {
    let b = broker.broker();
    let index = b.groups.partition_for(group);
    let partition = b
        .replicas
        .partitions()
        .into_iter()
        .find(|p| p.topic == "__consumer_offsets" && p.index == index)
        .expect("the group's __consumer_offsets partition is hosted here");
    (
        partition.log.last_stable_offset(),
        partition.high_watermark(),
    )
}

async fn start() -> TestBroker {
    TestBroker::start_with(&[("group.initial.rebalance.delay.ms", "0")]).await
}

async fn create_topic(client: &mut Client, name: &str, partitions: i32) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let response = client.send(7, request).await;
    assert_eq!(response.topics[0].error_code, NONE, "{response:?}");
}

#[tokio::test]
async fn txn_offset_commit_answers_kafkas_validation_errors() {
    let mut broker = start().await;
    let mut client = Client::connect(broker.server()).await;
    create_topic(&mut client, "orders", 2).await;

    // ApiVersions advertises v0-v4 (v5 needs transaction version 2).
    let versions = client
        .send(
            3,
            ApiVersionsRequest::default()
                .with_client_software_name(s("t"))
                .with_client_software_version(s("1")),
        )
        .await;
    let range = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::TxnOffsetCommit as i16)
        .map(|k| (k.min_version, k.max_version));
    assert_eq!(range, Some((0, 4)));

    // Unknown topics and partitions are answered by the broker (KafkaApis), the rest by the coordinator.
    let request = txn_commit("g", &[("orders", 0, 5), ("orders", 7, 5), ("nope", 0, 5)]);
    let response = client.send(3, request).await;
    assert_eq!(
        errors(&response),
        vec![
            e("nope", 0, UNKNOWN_TOPIC_OR_PARTITION),
            e("orders", 0, NONE),
            e("orders", 7, UNKNOWN_TOPIC_OR_PARTITION),
        ]
    );
    // Only unknown partitions: nothing reaches the coordinator.
    let response = client.send(0, txn_commit("g", &[("nope", 1, 5)])).await;
    assert_eq!(
        errors(&response),
        vec![e("nope", 1, UNKNOWN_TOPIC_OR_PARTITION)]
    );
    // An empty group id.
    let response = client.send(3, txn_commit("", &[("orders", 0, 5)])).await;
    assert_eq!(errors(&response), vec![e("orders", 0, INVALID_GROUP_ID)]);
    // A generation for a group that does not exist.
    let request = txn_commit("ghost", &[("orders", 0, 5)])
        .with_generation_id(1)
        .with_member_id(s("m"));
    let response = client.send(3, request).await;
    assert_eq!(errors(&response), vec![e("orders", 0, ILLEGAL_GENERATION)]);

    // A group with one member (JoinGroup v3: no KIP-394 round trip), Stable at generation 1.
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(s("members")))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s(""))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::new())]);
    let joined = client.send(3, join).await;
    assert_eq!((joined.error_code, joined.generation_id), (NONE, 1));
    let member = joined.member_id.to_string();
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("members")))
        .with_generation_id(1)
        .with_member_id(s(&member))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&member))
            .with_assignment(Bytes::new())]);
    assert_eq!(client.send(3, sync).await.error_code, NONE);
    let with_member = |generation: i32, member_id: &str| {
        txn_commit("members", &[("orders", 1, 9)])
            .with_generation_id(generation)
            .with_member_id(s(member_id))
    };
    let response = client.send(3, with_member(1, "stranger")).await;
    assert_eq!(errors(&response), vec![e("orders", 1, UNKNOWN_MEMBER_ID)]);
    let response = client.send(3, with_member(2, &member)).await;
    assert_eq!(errors(&response), vec![e("orders", 1, ILLEGAL_GENERATION)]);
    let response = client.send(3, with_member(1, &member)).await;
    assert_eq!(errors(&response), vec![e("orders", 1, NONE)]);
    // v0-v2 carry no member: accepted although the group has members (unlike OffsetCommit).
    let response = client.send(2, with_member(-1, "")).await;
    assert_eq!(errors(&response), vec![e("orders", 1, NONE)]);
    broker.shutdown().await;
}

#[tokio::test]
async fn require_stable_sees_unstable_offsets_until_the_marker() {
    let mut broker = start().await;
    let mut client = Client::connect(broker.server()).await;
    create_topic(&mut client, "orders", 2).await;
    let group = "eos";

    // A committed offset first, then a transactional one for the same partition.
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("orders")))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(3),
                ]),
        ]);
    let response = client.send(8, commit).await;
    assert_eq!(response.topics[0].partitions[0].error_code, NONE);
    let (lso, hw) = offsets_topic_lso_and_hw(&broker, group);
    assert_eq!(lso, hw, "no open transaction yet");

    let response = client
        .send(
            3,
            txn_commit(group, &[("orders", 0, 10), ("orders", 1, 20)]),
        )
        .await;
    assert_eq!(
        errors(&response),
        vec![e("orders", 0, NONE), e("orders", 1, NONE)]
    );
    // KIP-447: stable offsets are refused while the transaction is open; read_uncommitted-style fetches see the
    // committed offset, never the pending one.
    assert_eq!(
        fetch_v7(&mut client, group, "orders", 0, true).await,
        (-1, UNSTABLE_OFFSET_COMMIT)
    );
    assert_eq!(
        fetch_v7(&mut client, group, "orders", 0, false).await,
        (3, NONE)
    );
    assert_eq!(
        fetch_v7(&mut client, group, "orders", 1, false).await,
        (-1, NONE)
    );
    assert_eq!(
        fetch_v8(&mut client, group, "orders", 1).await,
        (-1, UNSTABLE_OFFSET_COMMIT)
    );
    assert_eq!(
        fetch_all_v8(&mut client, group, true).await,
        vec![("orders".to_string(), 0, -1, UNSTABLE_OFFSET_COMMIT)]
    );
    // The transactional batch is open in the log: the LSO stays at its first offset.
    let (lso, hw) = offsets_topic_lso_and_hw(&broker, group);
    assert!(
        lso < hw,
        "the open transaction holds the LSO back: {lso} < {hw}"
    );

    // A restart reloads the pending offsets from the transactional batch.
    broker.restart().await;
    let mut client = Client::connect(broker.server()).await;
    assert_eq!(
        fetch_v7(&mut client, group, "orders", 0, true).await,
        (-1, UNSTABLE_OFFSET_COMMIT)
    );
    assert_eq!(
        fetch_v7(&mut client, group, "orders", 0, false).await,
        (3, NONE)
    );

    // The transaction coordinator's COMMIT marker (WriteTxnMarkers) makes them the committed offsets.
    let b = broker.broker().clone();
    let partition = b.groups.partition_for(group);
    b.groups
        .complete_transaction(partition, PRODUCER_ID, 0, 0, true)
        .await
        .expect("marker written");
    assert_eq!(
        fetch_v7(&mut client, group, "orders", 0, true).await,
        (10, NONE)
    );
    assert_eq!(
        fetch_v7(&mut client, group, "orders", 1, true).await,
        (20, NONE)
    );
    let (lso, hw) = offsets_topic_lso_and_hw(&broker, group);
    assert_eq!(lso, hw, "the marker ended the transaction");

    // The next transaction aborts: its offset never shows.
    let response = client
        .send(3, txn_commit(group, &[("orders", 0, 30)]))
        .await;
    assert_eq!(errors(&response), vec![e("orders", 0, NONE)]);
    b.groups
        .complete_transaction(partition, PRODUCER_ID, 0, 0, false)
        .await
        .expect("marker written");
    assert_eq!(
        fetch_v7(&mut client, group, "orders", 0, true).await,
        (10, NONE)
    );

    // Another restart replays both markers from the log.
    drop(b);
    broker.restart().await;
    let mut client = Client::connect(broker.server()).await;
    assert_eq!(
        fetch_all_v8(&mut client, group, true).await,
        vec![
            ("orders".to_string(), 0, 10, NONE),
            ("orders".to_string(), 1, 20, NONE)
        ]
    );
    // A marker for a partition this broker does not host is NOT_COORDINATOR.
    let b = broker.broker().clone();
    assert_eq!(
        b.groups
            .complete_transaction(9_999, PRODUCER_ID, 0, 0, true)
            .await
            .map_err(|e| e.code()),
        Err(16)
    );
    drop(b);
    broker.shutdown().await;
}
