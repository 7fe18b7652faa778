//! ElectLeaders (key 43) over TCP against a single in-process node, at every advertised version: the per-partition
//! codes and messages of Kafka's `ReplicationControlManager.electLeaders` (ELECTION_NOT_NEEDED,
//! UNKNOWN_TOPIC_OR_PARTITION), null = every partition (with the not-needed ones left out), an empty list, and an
//! unknown election type (INVALID_REQUEST). Elections that move leaders need a cluster: the pure logic's unit tests
//! (`sluice-metadata`, `controller::election`) and `tests/interop/python/test_elections.py` cover them.

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use sluice_testkit::TestBroker;

mod common;
use common::Client;

fn name(v: &str) -> TopicName {
    TopicName(StrBytes::from_string(v.to_string()))
}

fn partitions(topic: &str, ids: &[i32]) -> TopicPartitions {
    TopicPartitions::default()
        .with_topic(name(topic))
        .with_partitions(ids.to_vec())
}

/// (topic, partition, error code, message) of every result.
fn results(response: &ElectLeadersResponse) -> Vec<(String, i32, i16, Option<String>)> {
    response
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result.iter().map(move |p| {
                (
                    t.topic.0.to_string(),
                    p.partition_id,
                    p.error_code,
                    p.error_message.as_ref().map(|m| m.to_string()),
                )
            })
        })
        .collect()
}

#[tokio::test]
async fn elect_leaders_answers_like_kafkas_controller() {
    let broker = TestBroker::start_with(&[]).await;
    let mut client = Client::connect(broker.server()).await;
    let created = client
        .send(
            7,
            CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(name("t"))
                    .with_num_partitions(2)
                    .with_replication_factor(1)])
                .with_timeout_ms(10_000),
        )
        .await;
    assert_eq!(created.topics[0].error_code, 0);

    let not_needed = ErrorCode::ElectionNotNeeded.code();
    let unknown = ErrorCode::UnknownTopicOrPartition.code();
    for version in 0..=2 {
        // The only replica leads already: nothing to elect; unknown partitions and topics are named.
        let request = ElectLeadersRequest::default()
            .with_election_type(0)
            .with_topic_partitions(Some(vec![
                partitions("t", &[0, 7]),
                partitions("nope", &[0]),
            ]))
            .with_timeout_ms(10_000);
        let response = client.send(version, request).await;
        assert_eq!(response.error_code, 0);
        assert_eq!(
            results(&response),
            vec![
                (
                    "t".into(),
                    0,
                    not_needed,
                    Some("Leader election not needed for topic partition.".into())
                ),
                (
                    "t".into(),
                    7,
                    unknown,
                    Some("No such partition as t-7".into())
                ),
                (
                    "nope".into(),
                    0,
                    unknown,
                    Some("No such topic as nope".into())
                ),
            ],
            "v{version}"
        );
        // Null: every partition, the ones needing no election left out; the topic is still listed.
        let all = client
            .send(
                version,
                ElectLeadersRequest::default().with_topic_partitions(None),
            )
            .await;
        let topics: Vec<_> = all
            .replica_election_results
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partition_result.len()))
            .collect();
        assert_eq!(topics, vec![("t".to_string(), 0)], "v{version}");
        // An empty list: nothing to do.
        let empty = client
            .send(
                version,
                ElectLeadersRequest::default().with_topic_partitions(Some(Vec::new())),
            )
            .await;
        assert!(empty.replica_election_results.is_empty());
    }
    // v1+: UNCLEAN for a partition that has a leader is not needed either.
    let unclean = client
        .send(
            1,
            ElectLeadersRequest::default()
                .with_election_type(1)
                .with_topic_partitions(Some(vec![partitions("t", &[1])])),
        )
        .await;
    assert_eq!(results(&unclean)[0].2, not_needed);
    // An unknown election type is an invalid request, at the top and for every partition.
    let invalid = client
        .send(
            2,
            ElectLeadersRequest::default()
                .with_election_type(5)
                .with_topic_partitions(Some(vec![partitions("t", &[0, 1])])),
        )
        .await;
    let code = ErrorCode::InvalidRequest.code();
    assert_eq!(invalid.error_code, code);
    assert_eq!(
        results(&invalid),
        vec![
            ("t".into(), 0, code, Some("Unknown election type 5".into())),
            ("t".into(), 1, code, Some("Unknown election type 5".into())),
        ]
    );
}
