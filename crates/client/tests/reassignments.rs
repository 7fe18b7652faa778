//! Partition reassignments through the admin client (AlterPartitionReassignments and ListPartitionReassignments,
//! KIP-455) against the kit's in-process 3-node cluster: a partition moved to another broker and listed until it
//! is done, one result per partition in the order asked (an unknown topic failing alone), and a cancel with
//! nothing to cancel failing as Kafka's controller fails it (NO_REASSIGNMENT_IN_PROGRESS).

use std::time::{Duration, Instant};

use sluice_client::admin::NewTopic;
use sluice_client::error::KafkaError;
use sluice_client::{Admin, ClientConfig};
use sluice_testkit::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_is_listed_until_done_and_errors_are_per_partition() {
    let cluster = TestCluster::start(3).await;
    let mut config = ClientConfig::new(&cluster.bootstrap());
    config.request_timeout_ms = 10_000;
    let admin = Admin::new(config).await.unwrap();
    admin
        .create_topic(NewTopic {
            name: "moving".into(),
            num_partitions: 1,
            replication_factor: 1,
            configs: vec![],
        })
        .await
        .unwrap();
    // The broker asked may not have applied the new topic yet.
    let deadline = Instant::now() + Duration::from_secs(20);
    let from = loop {
        match admin.describe_topic("moving").await {
            Ok(info) if info.partitions.iter().all(|p| p.leader >= 0) => {
                break info.partitions[0].replicas.clone()
            }
            other => assert!(Instant::now() < deadline, "moving never showed: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(from.len(), 1);
    let to = (from[0] + 1) % 3;

    let results = admin
        .alter_partition_reassignments(
            &[
                (("absent".into(), 0), Some(vec![0])),
                (("moving".into(), 0), Some(vec![to])),
            ],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].0, ("absent".to_owned(), 0));
    let err = results[0].1.as_ref().unwrap_err();
    assert_eq!(
        err.kafka_error(),
        Some(KafkaError::UnknownTopicOrPartition),
        "{err}"
    );
    assert!(err.to_string().contains("reassigning absent-0"), "{err}");
    assert_eq!(results[1].0, ("moving".to_owned(), 0));
    assert!(results[1].1.is_ok(), "{:?}", results[1].1);

    // Listed (if still running: an empty partition moves fast) with the target among its replicas, then done.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = admin.list_partition_reassignments(None).await.unwrap();
        let filtered = admin
            .list_partition_reassignments(Some(&[("moving".to_owned(), 0)]))
            .await
            .unwrap();
        assert_eq!(listed, filtered, "one reassignment runs, on moving-0");
        let Some(r) = listed.first() else { break };
        assert_eq!((r.topic.as_str(), r.partition), ("moving", 0));
        assert!(
            r.replicas.contains(&to) && r.adding_replicas == [to],
            "{r:?}"
        );
        assert!(Instant::now() < deadline, "still moving: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin.describe_topic("moving").await.unwrap().partitions[0].replicas != [to] {
        assert!(
            Instant::now() < deadline,
            "the metadata never showed [{to}]"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Nothing to cancel any more.
    let results = admin
        .alter_partition_reassignments(&[(("moving".into(), 0), None)], Duration::from_secs(10))
        .await
        .unwrap();
    let err = results[0].1.as_ref().unwrap_err();
    assert_eq!(
        err.kafka_error(),
        Some(KafkaError::NoReassignmentInProgress),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("cancelling the reassignment of moving-0"),
        "{err}"
    );
    assert!(admin
        .list_partition_reassignments(Some(&[("other".to_owned(), 3)]))
        .await
        .unwrap()
        .is_empty());
    cluster.shutdown().await;
}
