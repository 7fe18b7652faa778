//! The admin APIs end to end: a broker started in-process on a free loopback port, driven with requests encoded
//! by `kafka-protocol`, checking the error codes Apache Kafka returns and that metadata survives a restart.

use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
mod common;

use common::Client;
use sluice_testkit::TestBroker;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic(name: &str, partitions: i32, rf: i16) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(rf)
}

/// A CreatePartitions entry without assignments (null, as clients send it).
fn grow(name: &str, count: i32) -> CreatePartitionsTopic {
    CreatePartitionsTopic::default()
        .with_name(TopicName(s(name)))
        .with_count(count)
        .with_assignments(None)
}

async fn start() -> TestBroker {
    TestBroker::start_with(&[("log.segment.bytes", "1048576")]).await
}

fn config_value<'a>(
    result: &'a describe_configs_response::DescribeConfigsResult,
    name: &str,
) -> &'a describe_configs_response::DescribeConfigsResourceResult {
    result
        .configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

async fn describe_topic(
    client: &mut Client,
    name: &str,
) -> describe_configs_response::DescribeConfigsResult {
    let request = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s(name))])
        .with_include_synonyms(true)
        .with_include_documentation(true);
    client.send(4, request).await.results.remove(0)
}

#[tokio::test]
async fn admin_apis_behave_like_kafka() {
    let mut broker = start().await;
    let mut client = Client::connect(broker.server()).await;

    // CreateTopics v7: defaults, configs, topic id and the configs of the new topic.
    let orders = topic("orders", 3, -1).with_configs(vec![CreatableTopicConfig::default()
        .with_name(s("retention.ms"))
        .with_value(Some(s("1000")))]);
    let created = client
        .send(
            7,
            CreateTopicsRequest::default()
                .with_topics(vec![orders])
                .with_timeout_ms(5000),
        )
        .await;
    let result = &created.topics[0];
    assert_eq!(result.error_code, 0, "{result:?}");
    assert!(!result.topic_id.is_nil());
    assert_eq!((result.num_partitions, result.replication_factor), (3, 1));
    let configs = result.configs.as_ref().unwrap();
    let retention = configs
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .unwrap();
    assert_eq!(
        (retention.value.as_deref(), retention.config_source),
        (Some("1000"), 1)
    );
    let segment = configs
        .iter()
        .find(|c| c.name.as_str() == "segment.bytes")
        .unwrap();
    assert_eq!(
        (segment.value.as_deref(), segment.config_source),
        (Some("1048576"), 4),
        "STATIC_BROKER_CONFIG"
    );

    // Kafka's errors, one topic each.
    let bad_config = topic("bad-config", 1, 1).with_configs(vec![CreatableTopicConfig::default()
        .with_name(s("retention.ms"))
        .with_value(Some(s("soon")))]);
    let unknown_config =
        topic("unknown-config", 1, 1).with_configs(vec![CreatableTopicConfig::default()
            .with_name(s("no.such.config"))
            .with_value(Some(s("1")))]);
    let request = CreateTopicsRequest::default().with_topics(vec![
        topic("orders", 1, 1),
        topic("too-replicated", 1, 3),
        topic("no-partitions", 0, 1),
        topic("bad name", 1, 1),
        bad_config,
        unknown_config,
        topic("defaults", -1, -1),
        topic("__cluster_metadata", 1, 1),
    ]);
    let created = client.send(5, request).await;
    let codes: Vec<(String, i16)> = created
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("orders".into(), 36),
            ("too-replicated".into(), 38),
            ("no-partitions".into(), 37),
            ("bad name".into(), 17),
            ("bad-config".into(), 40),
            ("unknown-config".into(), 40),
            ("defaults".into(), 0),
            ("__cluster_metadata".into(), 42),
        ]
    );
    assert_eq!(
        created.topics[1].error_message.as_deref(),
        Some(
            "Unable to replicate the partition 3 time(s): The target replication factor of 3 cannot be reached \
             because only 1 broker(s) are registered."
        )
    );
    assert_eq!(
        created.topics[6].num_partitions, 1,
        "num.partitions default"
    );

    // validate_only (v2, the oldest version we serve) creates nothing.
    let created = client
        .send(
            2,
            CreateTopicsRequest::default()
                .with_topics(vec![topic("dry-run", 2, 1)])
                .with_validate_only(true),
        )
        .await;
    assert_eq!(created.topics[0].error_code, 0);
    assert_eq!(describe_topic(&mut client, "dry-run").await.error_code, 3);

    // CreatePartitions: grow, shrink refused, unknown topic, bad assignment.
    let request = CreatePartitionsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![
            grow("orders", 5),
            grow("defaults", 1),
            grow("missing", 2),
            grow("dry-run-2", 2),
        ]);
    let grown = client.send(3, request).await;
    let codes: Vec<i16> = grown.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, vec![0, 37, 3, 3]);
    let request =
        CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(s("defaults")))
            .with_count(2)
            .with_assignments(Some(vec![
                CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(9)])
            ]))]);
    assert_eq!(client.send(0, request).await.results[0].error_code, 39);

    // DescribeConfigs: topic override, broker default with synonyms and documentation; broker resource.
    let described = describe_topic(&mut client, "orders").await;
    assert_eq!(described.error_code, 0);
    let retention = config_value(&described, "retention.ms");
    assert_eq!(
        (retention.value.as_deref(), retention.config_source),
        (Some("1000"), 1)
    );
    assert_eq!(retention.synonyms[0].name.as_str(), "retention.ms");
    assert!(retention
        .synonyms
        .iter()
        .any(|s| s.name.as_str() == "log.retention.hours" && s.source == 5));
    assert_eq!(retention.config_type, 5, "LONG");
    assert!(retention.documentation.is_some());
    let flush = config_value(&described, "flush.messages");
    assert_eq!(
        (flush.value.as_deref(), flush.config_source),
        (Some("9223372036854775807"), 5)
    );
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(s("0")),
        DescribeConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(s("7")),
    ]);
    let described = client.send(1, request).await;
    assert_eq!(described.results[0].error_code, 0);
    let segment = config_value(&described.results[0], "log.segment.bytes");
    assert_eq!(
        (segment.value.as_deref(), segment.config_source),
        (Some("1048576"), 4)
    );
    assert_eq!(described.results[1].error_code, 42);

    // IncrementalAlterConfigs: SET, APPEND to a list, APPEND to a non-list refused.
    let op = |name: &str, op: i8, value: &str| {
        incremental_alter_configs_request::AlterableConfig::default()
            .with_name(s(name))
            .with_config_operation(op)
            .with_value(Some(s(value)))
    };
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s("orders"))
            .with_configs(vec![
                op("retention.ms", 0, "2000"),
                op("cleanup.policy", 2, "compact"),
            ]),
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s("defaults"))
            .with_configs(vec![op("retention.ms", 2, "1")]),
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s("missing"))
            .with_configs(vec![op("retention.ms", 0, "1")]),
    ]);
    let altered = client.send(1, request).await;
    let codes: Vec<i16> = altered.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, vec![0, 40, 3]);
    let described = describe_topic(&mut client, "orders").await;
    assert_eq!(
        config_value(&described, "retention.ms").value.as_deref(),
        Some("2000")
    );
    assert_eq!(
        config_value(&described, "cleanup.policy").value.as_deref(),
        Some("delete,compact")
    );

    // AlterConfigs replaces every override.
    let request = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s("orders"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(s("flush.messages"))
                .with_value(Some(s("1")))]),
    ]);
    assert_eq!(client.send(2, request).await.responses[0].error_code, 0);
    let described = describe_topic(&mut client, "orders").await;
    assert_eq!(config_value(&described, "flush.messages").config_source, 1);
    assert_eq!(
        config_value(&described, "retention.ms").config_source,
        5,
        "the override is gone"
    );

    // DescribeCluster.
    let cluster = client
        .send(1, DescribeClusterRequest::default().with_endpoint_type(1))
        .await;
    assert_eq!(cluster.error_code, 0);
    assert_eq!(cluster.cluster_id.len(), 22);
    assert_eq!(cluster.brokers.len(), 1);
    assert_eq!(cluster.brokers[0].port, i32::from(broker.addr().port()));

    // DeleteTopics v6 by id and name; unknown ones.
    let request = DeleteTopicsRequest::default().with_topics(vec![
        DeleteTopicState::default().with_topic_id(uuid::Uuid::from_u128(1)),
        DeleteTopicState::default().with_name(Some(TopicName(s("defaults")))),
        DeleteTopicState::default().with_name(Some(TopicName(s("missing")))),
    ]);
    let deleted = client.send(6, request).await;
    let mut codes: Vec<i16> = deleted.responses.iter().map(|r| r.error_code).collect();
    codes.sort_unstable();
    assert_eq!(codes, vec![0, 3, 100]);

    drop(client);
    broker.shutdown().await;
}

/// Admin changes are in the metadata log, so a restarted broker answers from them.
#[tokio::test]
async fn admin_changes_survive_restart() {
    let mut broker = start().await;
    let mut client = Client::connect(broker.server()).await;
    let created = client
        .send(
            7,
            CreateTopicsRequest::default().with_topics(vec![topic("orders", 3, 1)]),
        )
        .await;
    let orders_id = created.topics[0].topic_id;
    let request = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s("orders"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(s("flush.messages"))
                .with_value(Some(s("1")))]),
    ]);
    assert_eq!(client.send(2, request).await.responses[0].error_code, 0);
    assert_eq!(
        client
            .send(
                7,
                CreateTopicsRequest::default().with_topics(vec![topic("defaults", 1, 1)])
            )
            .await
            .topics[0]
            .error_code,
        0
    );
    let deleted = client
        .send(
            1,
            DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s("defaults"))]),
        )
        .await;
    assert_eq!(deleted.responses[0].error_code, 0);
    let cluster_id = client
        .send(0, DescribeClusterRequest::default())
        .await
        .cluster_id
        .to_string();
    drop(client);
    broker.shutdown().await;

    broker.restart().await;
    let mut client = Client::connect(broker.server()).await;
    let cluster = client.send(0, DescribeClusterRequest::default()).await;
    assert_eq!(cluster.cluster_id.as_str(), cluster_id);
    let described = describe_topic(&mut client, "orders").await;
    assert_eq!(
        config_value(&described, "flush.messages").value.as_deref(),
        Some("1")
    );
    assert_eq!(describe_topic(&mut client, "defaults").await.error_code, 3);
    let deleted = client
        .send(
            1,
            DeleteTopicsRequest::default()
                .with_topic_names(vec![TopicName(s("orders")), TopicName(s("orders"))]),
        )
        .await;
    assert_eq!(deleted.responses.len(), 1);
    assert_eq!(deleted.responses[0].error_code, 42, "Duplicate topic name.");
    let request = DeleteTopicsRequest::default()
        .with_topics(vec![DeleteTopicState::default().with_topic_id(orders_id)]);
    let deleted = client.send(6, request).await;
    assert_eq!(deleted.responses[0].error_code, 0);
    assert_eq!(
        deleted.responses[0].name.as_ref().map(|n| n.0.as_str()),
        Some("orders")
    );
    drop(client);
    broker.shutdown().await;
}

/// The log cleaner's broker keys in DescribeConfigs, as Kafka reports them: a topic without its own
/// `cleanup.policy` / `min.cleanable.dirty.ratio` takes `log.cleanup.policy` / `log.cleaner.min.cleanable.ratio`
/// (STATIC_BROKER_CONFIG when set), and the broker keys carry Kafka's types (v3+).
#[tokio::test]
async fn log_cleaner_configs_are_described_like_kafka() {
    let mut broker = TestBroker::start_with(&[
        ("log.cleanup.policy", "compact,delete"),
        ("log.cleaner.min.cleanable.ratio", "0.2"),
    ])
    .await;
    let mut client = Client::connect(broker.server()).await;
    let created = client
        .send(
            7,
            CreateTopicsRequest::default().with_topics(vec![topic("profiles", 1, 1)]),
        )
        .await;
    assert_eq!(created.topics[0].error_code, 0);
    let described = describe_topic(&mut client, "profiles").await;
    for (name, value, source) in [
        ("cleanup.policy", "compact,delete", 4),
        ("min.cleanable.dirty.ratio", "0.2", 4),
        ("delete.retention.ms", "86400000", 5),
        ("max.compaction.lag.ms", "9223372036854775807", 5),
    ] {
        let c = config_value(&described, name);
        assert_eq!(
            (c.value.as_deref(), c.config_source),
            (Some(value), source),
            "{name}"
        );
    }
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(s("0"))]);
    let described = client.send(4, request).await;
    for (name, value, config_type) in [
        ("log.cleanup.policy", "compact,delete", 7),
        ("log.cleaner.enable", "true", 1),
        ("log.cleaner.threads", "1", 3),
        ("log.cleaner.dedupe.buffer.size", "134217728", 5),
        (
            "log.cleaner.io.max.bytes.per.second",
            "1.7976931348623157E308",
            6,
        ),
        ("log.cleaner.backoff.ms", "15000", 5),
        ("log.cleaner.min.cleanable.ratio", "0.2", 6),
        ("log.cleaner.delete.retention.ms", "86400000", 5),
    ] {
        let c = config_value(&described.results[0], name);
        assert_eq!(
            (c.value.as_deref(), c.config_type),
            (Some(value), config_type),
            "{name}"
        );
    }
    drop(client);
    broker.shutdown().await;
}
