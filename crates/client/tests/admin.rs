//! Admin client against an in-process Sluice broker: topic lifecycle, partitions, configs, offsets, cluster and
//! groups.

mod common;

use common::{ClientFixture, TestBroker};
use sluice_client::admin::{ConfigChange, ConfigResourceType, NewTopic, OffsetSpec};
use sluice_client::{Admin, ClientError, Producer, ProducerConfig, ProducerRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_lifecycle_configs_offsets_cluster_and_groups() {
    let mut broker = TestBroker::start().await;
    let admin = Admin::new(broker.client_config()).await.unwrap();

    admin
        .create_topic(NewTopic {
            name: "orders".into(),
            num_partitions: 3,
            replication_factor: 1,
            configs: vec![("retention.ms".into(), "3600000".into())],
        })
        .await
        .unwrap();
    // Creating it again names the topic and Kafka's error.
    let err = admin
        .create_topic(NewTopic {
            name: "orders".into(),
            num_partitions: 3,
            replication_factor: 1,
            configs: vec![],
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TopicAlreadyExists"), "{err}");

    let topics = admin.list_topics().await.unwrap();
    assert!(topics.iter().any(|t| t.name == "orders"));
    let described = admin.describe_topic("orders").await.unwrap();
    assert_eq!(described.partitions.len(), 3);
    assert!(described
        .partitions
        .iter()
        .all(|p| p.leader >= 0 && !p.isr.is_empty()));

    admin.create_partitions("orders", 5).await.unwrap();
    assert_eq!(
        admin
            .describe_topic("orders")
            .await
            .unwrap()
            .partitions
            .len(),
        5
    );

    let configs = admin
        .describe_configs(ConfigResourceType::Topic, "orders")
        .await
        .unwrap();
    let retention = configs.iter().find(|c| c.name == "retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    admin
        .alter_configs(
            ConfigResourceType::Topic,
            "orders",
            &[ConfigChange::Set("cleanup.policy".into(), "compact".into())],
        )
        .await
        .unwrap();
    admin
        .alter_configs(
            ConfigResourceType::Topic,
            "orders",
            &[ConfigChange::Delete("retention.ms".into())],
        )
        .await
        .unwrap();
    let configs = admin
        .describe_configs(ConfigResourceType::Topic, "orders")
        .await
        .unwrap();
    let get = |k: &str| configs.iter().find(|c| c.name == k).cloned().unwrap();
    assert_eq!(get("cleanup.policy").value.as_deref(), Some("compact"));
    assert!(get("retention.ms").is_default, "{:?}", get("retention.ms"));
    let broker_configs = admin
        .describe_configs(ConfigResourceType::Broker, "0")
        .await
        .unwrap();
    assert!(!broker_configs.is_empty());

    let producer = Producer::new(ProducerConfig {
        client: broker.client_config(),
        ..ProducerConfig::default()
    })
    .await
    .unwrap();
    // `orders` is compacted now, so records need keys (Kafka refuses keyless records there).
    let mut deliveries = Vec::new();
    for i in 0..4 {
        deliveries.push(
            producer
                .send(
                    ProducerRecord::new("orders", format!("{i}"))
                        .with_key(format!("k{i}"))
                        .with_partition(2),
                )
                .await
                .unwrap(),
        );
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.flush().await;
    let offsets = admin
        .list_offsets(&[
            ("orders".into(), 2, OffsetSpec::Earliest),
            ("orders".into(), 1, OffsetSpec::Latest),
        ])
        .await
        .unwrap();
    assert_eq!(
        offsets[&("orders".to_owned(), 2)].as_ref().unwrap().offset,
        0
    );
    assert_eq!(
        offsets[&("orders".to_owned(), 1)].as_ref().unwrap().offset,
        0
    );
    let latest = admin
        .list_offsets(&[("orders".into(), 2, OffsetSpec::Latest)])
        .await
        .unwrap();
    assert_eq!(
        latest[&("orders".to_owned(), 2)].as_ref().unwrap().offset,
        4
    );

    let cluster = admin.describe_cluster(false).await.unwrap();
    assert_eq!(cluster.brokers.len(), 1);
    assert!(cluster.cluster_id.is_some());

    admin
        .alter_group_offsets("g1", &[(("orders".into(), 2), 3)])
        .await
        .unwrap();
    let committed = admin.group_offsets("g1").await.unwrap();
    assert_eq!(committed.get(&("orders".to_owned(), 2)), Some(&3));
    let groups = admin.list_groups().await.unwrap();
    assert!(groups.iter().any(|g| g.group_id == "g1"), "{groups:?}");
    let described = admin.describe_group("g1").await.unwrap();
    assert!(described.members.is_empty());
    admin.delete_group("g1").await.unwrap();
    assert!(!admin
        .list_groups()
        .await
        .unwrap()
        .iter()
        .any(|g| g.group_id == "g1"));

    admin.delete_topic("orders").await.unwrap();
    let err = admin.describe_topic("orders").await.unwrap_err();
    assert!(matches!(err, ClientError::UnknownTopic(_)), "{err}");
    broker.shutdown().await;
}
