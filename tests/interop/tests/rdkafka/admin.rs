//! Admin through librdkafka's AdminClient: CreateTopics (errors, validate-only, configs), DeleteTopics,
//! CreatePartitions and DescribeConfigs.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use sluice_interop::Broker;

use crate::common::{admin, block_on, consumer, WAIT_MS};

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

fn create(
    broker: &Broker,
    topic: NewTopic<'_>,
    opts: &AdminOptions,
) -> Result<String, (String, RDKafkaErrorCode)> {
    let results =
        block_on(admin(broker).create_topics(&[topic], opts)).expect("CreateTopics request");
    assert_eq!(results.len(), 1);
    results.into_iter().next().expect("one result")
}

/// Partition count of `topic` per Metadata (no auto-creation), or the topic error.
fn partitions(broker: &Broker, topic: &str) -> Result<usize, RDKafkaRespErr> {
    let client = consumer(broker, &[("allow.auto.create.topics", "false")]);
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_millis(WAIT_MS))
        .expect("Metadata request");
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("topic echoed back");
    match t.error() {
        Some(err) => Err(err),
        None => Ok(t.partitions().len()),
    }
}

fn eventually<T: PartialEq + std::fmt::Debug>(what: &str, want: T, mut probe: impl FnMut() -> T) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        let got = probe();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn create_and_delete_topics() {
    let broker = Broker::start().expect("start broker");
    let topic =
        NewTopic::new("admin-a", 5, TopicReplication::Fixed(1)).set("retention.ms", "123456");
    assert_eq!(create(&broker, topic, &options()), Ok("admin-a".to_owned()));
    eventually("admin-a partitions", Ok(5), || {
        partitions(&broker, "admin-a")
    });

    let again = NewTopic::new("admin-a", 1, TopicReplication::Fixed(1));
    assert_eq!(
        create(&broker, again, &options()),
        Err(("admin-a".to_owned(), RDKafkaErrorCode::TopicAlreadyExists))
    );

    let too_many = NewTopic::new("admin-rf3", 1, TopicReplication::Fixed(3));
    assert_eq!(
        create(&broker, too_many, &options()),
        Err((
            "admin-rf3".to_owned(),
            RDKafkaErrorCode::InvalidReplicationFactor
        )),
        "one broker cannot hold three replicas"
    );

    let bad_name = NewTopic::new("bad/name", 1, TopicReplication::Fixed(1));
    assert_eq!(
        create(&broker, bad_name, &options()),
        Err(("bad/name".to_owned(), RDKafkaErrorCode::InvalidTopic))
    );

    let bad_config =
        NewTopic::new("admin-bad-config", 1, TopicReplication::Fixed(1)).set("no.such.config", "1");
    assert_eq!(
        create(&broker, bad_config, &options()),
        Err((
            "admin-bad-config".to_owned(),
            RDKafkaErrorCode::InvalidConfig
        ))
    );

    let dry = NewTopic::new("admin-dry", 2, TopicReplication::Fixed(1));
    assert_eq!(
        create(&broker, dry, &options().validate_only(true)),
        Ok("admin-dry".to_owned())
    );
    assert_eq!(
        partitions(&broker, "admin-dry"),
        Err(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART),
        "validate_only must not create"
    );

    let deleted = block_on(admin(&broker).delete_topics(&["admin-a"], &options()))
        .expect("DeleteTopics request");
    assert_eq!(deleted, vec![Ok("admin-a".to_owned())]);
    eventually(
        "admin-a after delete",
        Err(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART),
        || partitions(&broker, "admin-a"),
    );
    let missing = block_on(admin(&broker).delete_topics(&["admin-a"], &options()))
        .expect("DeleteTopics request");
    assert_eq!(
        missing,
        vec![Err((
            "admin-a".to_owned(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))]
    );

    // The name is free again, and the new topic starts empty.
    let reborn = NewTopic::new("admin-a", 2, TopicReplication::Fixed(1));
    assert_eq!(
        create(&broker, reborn, &options()),
        Ok("admin-a".to_owned())
    );
    eventually("admin-a recreated", Ok(2), || {
        partitions(&broker, "admin-a")
    });
    let client = consumer(&broker, &[]);
    let marks = client
        .fetch_watermarks("admin-a", 0, Duration::from_millis(WAIT_MS))
        .expect("watermarks");
    assert_eq!(marks, (0, 0));
}

#[test]
fn topics_survive_restart_and_deletes_stay_deleted() {
    let mut broker = Broker::start().expect("start broker");
    for name in ["keep-me", "drop-me"] {
        assert_eq!(
            create(
                &broker,
                NewTopic::new(name, 3, TopicReplication::Fixed(1)),
                &options()
            ),
            Ok(name.to_owned())
        );
    }
    let deleted = block_on(admin(&broker).delete_topics(&["drop-me"], &options()))
        .expect("DeleteTopics request");
    assert_eq!(deleted, vec![Ok("drop-me".to_owned())]);
    let status = broker.stop().expect("clean shutdown");
    assert!(status.success(), "exit status {status}");
    broker.restart().expect("restart");
    assert_eq!(partitions(&broker, "keep-me"), Ok(3));
    assert_eq!(
        partitions(&broker, "drop-me"),
        Err(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    );
}

#[test]
fn create_partitions_grows_a_topic() {
    let broker = Broker::start().expect("start broker");
    assert_eq!(
        create(
            &broker,
            NewTopic::new("grow", 2, TopicReplication::Fixed(1)),
            &options()
        ),
        Ok("grow".to_owned())
    );
    let results =
        block_on(admin(&broker).create_partitions(&[NewPartitions::new("grow", 6)], &options()))
            .expect("CreatePartitions request");
    assert_eq!(results, vec![Ok("grow".to_owned())]);
    eventually("grow partitions", Ok(6), || partitions(&broker, "grow"));
    let shrink =
        block_on(admin(&broker).create_partitions(&[NewPartitions::new("grow", 3)], &options()))
            .expect("CreatePartitions request");
    assert_eq!(
        shrink,
        vec![Err((
            "grow".to_owned(),
            RDKafkaErrorCode::InvalidPartitions
        ))]
    );
}

#[test]
fn describe_topic_configs_shows_overrides_and_defaults() {
    let broker = Broker::start().expect("start broker");
    let topic =
        NewTopic::new("described", 1, TopicReplication::Fixed(1)).set("retention.ms", "123456");
    assert_eq!(
        create(&broker, topic, &options()),
        Ok("described".to_owned())
    );
    let results = block_on(
        admin(&broker).describe_configs(&[ResourceSpecifier::Topic("described")], &options()),
    )
    .expect("DescribeConfigs request");
    assert_eq!(results.len(), 1);
    let resource = results
        .into_iter()
        .next()
        .expect("one")
        .expect("topic resource");
    let entries = resource.entry_map();
    let retention = entries.get("retention.ms").expect("retention.ms listed");
    assert_eq!(retention.value.as_deref(), Some("123456"));
    assert!(!retention.is_default, "an override is not a default");
    let segment = entries.get("segment.bytes").expect("segment.bytes listed");
    assert!(segment.is_default, "segment.bytes was not set on the topic");
}

#[test]
fn delete_records_moves_the_log_start() {
    let broker = Broker::builder()
        .config("num.partitions", "1")
        .start()
        .expect("start broker");
    let producer = crate::common::producer(&broker, &[("acks", "all")]);
    let mut rng = crate::common::Rng::new(3);
    for i in 0..100 {
        let record = crate::common::make_record(&mut rng, i, 20, 1_700_000_000_000 + i as i64);
        crate::common::send(&producer, "trimmed", Some(0), &record, i);
    }
    for report in crate::common::flush_reports(&producer, 100) {
        assert!(
            report.error.is_none(),
            "record {}: {:?}",
            report.id,
            report.error
        );
    }
    let mut upto = rdkafka::TopicPartitionList::new();
    upto.add_partition_offset("trimmed", 0, rdkafka::Offset::Offset(40))
        .expect("offset");
    let result =
        block_on(admin(&broker).delete_records(&upto, &options())).expect("DeleteRecords request");
    let element = result
        .find_partition("trimmed", 0)
        .expect("partition in result");
    element.error().expect("no partition error");
    assert_eq!(
        element.offset(),
        rdkafka::Offset::Offset(40),
        "low watermark after the deletion"
    );

    let client = consumer(&broker, &[]);
    let marks = client
        .fetch_watermarks("trimmed", 0, Duration::from_millis(WAIT_MS))
        .expect("watermarks");
    assert_eq!(marks, (40, 100));
    // The first readable record is now offset 40.
    let consumed = crate::common::consume_all(&client, "trimmed", 1, 60);
    assert_eq!(consumed.first().map(|c| c.offset), Some(40));

    // Beyond the high watermark is OFFSET_OUT_OF_RANGE, as in Kafka.
    let mut beyond = rdkafka::TopicPartitionList::new();
    beyond
        .add_partition_offset("trimmed", 0, rdkafka::Offset::Offset(101))
        .expect("offset");
    let result = block_on(admin(&broker).delete_records(&beyond, &options()))
        .expect("DeleteRecords request");
    let element = result
        .find_partition("trimmed", 0)
        .expect("partition in result");
    assert!(
        element.error().is_err(),
        "deleting past the high watermark must fail"
    );
}

#[test]
fn alter_configs_replaces_topic_overrides() {
    let broker = Broker::start().expect("start broker");
    let topic =
        NewTopic::new("altered", 1, TopicReplication::Fixed(1)).set("retention.ms", "123456");
    assert_eq!(create(&broker, topic, &options()), Ok("altered".to_owned()));
    let change = rdkafka::admin::AlterConfig::new(ResourceSpecifier::Topic("altered"))
        .set("cleanup.policy", "compact");
    let results = block_on(admin(&broker).alter_configs(&[change], &options()))
        .expect("AlterConfigs request");
    assert_eq!(results.len(), 1);
    assert!(results[0].is_ok(), "AlterConfigs: {:?}", results[0]);
    let described = block_on(
        admin(&broker).describe_configs(&[ResourceSpecifier::Topic("altered")], &options()),
    )
    .expect("DescribeConfigs request");
    let resource = described
        .into_iter()
        .next()
        .expect("one")
        .expect("topic resource");
    let entries = resource.entry_map();
    assert_eq!(
        entries
            .get("cleanup.policy")
            .and_then(|e| e.value.as_deref()),
        Some("compact")
    );
    // AlterConfigs (not incremental) replaces the whole override set: retention.ms is back to its default.
    let retention = entries.get("retention.ms").expect("retention.ms listed");
    assert!(
        retention.is_default,
        "retention.ms should be the default again, is {:?}",
        retention.value
    );
}
