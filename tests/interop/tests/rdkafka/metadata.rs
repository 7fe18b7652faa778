//! Metadata through librdkafka: the one broker as advertised, topic auto-creation (on and off), invalid names.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaRespErr;
use sluice_interop::Broker;

use crate::common::{consumer, WAIT_MS};

/// Polls Metadata for `topic` until it has partitions with leaders (a just-created topic may briefly report
/// LEADER_NOT_AVAILABLE, as in Kafka).
fn wait_for_topic(broker: &Broker, topic: &str) -> rdkafka::metadata::Metadata {
    let client = consumer(broker, &[("allow.auto.create.topics", "true")]);
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        let metadata = client
            .fetch_metadata(Some(topic), Duration::from_millis(WAIT_MS))
            .expect("Metadata request");
        let ready = metadata.topics().iter().any(|t| {
            t.name() == topic
                && t.error().is_none()
                && !t.partitions().is_empty()
                && t.partitions()
                    .iter()
                    .all(|p| p.error().is_none() && p.leader() >= 0)
        });
        if ready {
            return metadata;
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} not ready: {:?}",
            describe(&metadata)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn describe(metadata: &rdkafka::metadata::Metadata) -> Vec<String> {
    metadata
        .topics()
        .iter()
        .map(|t| {
            format!(
                "{} error={:?} partitions={}",
                t.name(),
                t.error(),
                t.partitions().len()
            )
        })
        .collect()
}

#[test]
fn single_broker_and_auto_created_topic() {
    let broker = Broker::builder()
        .config("num.partitions", "3")
        .start()
        .expect("start broker");
    let metadata = wait_for_topic(&broker, "auto-created");

    assert_eq!(metadata.brokers().len(), 1, "one broker");
    let me = &metadata.brokers()[0];
    assert_eq!(
        (me.host(), me.port()),
        ("127.0.0.1", i32::from(broker.port())),
        "advertised listener"
    );

    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == "auto-created")
        .expect("topic in metadata");
    assert_eq!(
        topic.partitions().len(),
        3,
        "num.partitions applies to auto-created topics"
    );
    for (i, partition) in topic.partitions().iter().enumerate() {
        assert_eq!(partition.id(), i as i32);
        assert_eq!(partition.leader(), me.id(), "partition {i} leader");
        assert_eq!(partition.replicas(), &[me.id()], "partition {i} replicas");
        assert_eq!(partition.isr(), &[me.id()], "partition {i} isr");
    }
}

/// Metadata with a null topic list (all topics; librdkafka sends it as Metadata v12 with a null compact array)
/// lists every topic and creates none.
#[test]
fn all_topics_metadata() {
    let broker = Broker::builder()
        .config("num.partitions", "2")
        .start()
        .expect("start broker");
    wait_for_topic(&broker, "listed-a");
    wait_for_topic(&broker, "listed-b");
    let client = consumer(&broker, &[("allow.auto.create.topics", "true")]);
    let all = client
        .fetch_metadata(None, Duration::from_millis(WAIT_MS))
        .expect("all-topics Metadata");
    // Internal topics (`__consumer_offsets`, once the group coordinator made it) are listed too, as in Kafka.
    let mut names: Vec<&str> = all
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|name| !name.starts_with("__"))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["listed-a", "listed-b"],
        "exactly the two topics: {:?}",
        describe(&all)
    );
    for topic in all.topics().iter().filter(|t| !t.name().starts_with("__")) {
        assert_eq!(topic.error(), None);
        assert_eq!(topic.partitions().len(), 2);
    }
}

#[test]
fn no_auto_creation_when_disabled() {
    let broker = Broker::builder()
        .config("auto.create.topics.enable", "false")
        .start()
        .expect("start broker");
    let client = consumer(&broker, &[("allow.auto.create.topics", "true")]);
    for _ in 0..3 {
        let metadata = client
            .fetch_metadata(Some("not-there"), Duration::from_millis(WAIT_MS))
            .expect("Metadata request");
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == "not-there")
            .expect("topic echoed back");
        assert_eq!(
            topic.error(),
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn client_without_auto_create_does_not_create() {
    let broker = Broker::start().expect("start broker");
    // librdkafka consumers default to allow.auto.create.topics=false: Metadata v4+ carries that flag.
    let client = consumer(&broker, &[("allow.auto.create.topics", "false")]);
    let metadata = client
        .fetch_metadata(Some("consumer-no-create"), Duration::from_millis(WAIT_MS))
        .expect("Metadata request");
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == "consumer-no-create")
        .expect("topic echoed back");
    assert_eq!(
        topic.error(),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    );
}

#[test]
fn invalid_topic_name_is_rejected() {
    let broker = Broker::start().expect("start broker");
    let client = consumer(&broker, &[("allow.auto.create.topics", "true")]);
    let name = "bad name*";
    let metadata = client
        .fetch_metadata(Some(name), Duration::from_millis(WAIT_MS))
        .expect("Metadata request");
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == name)
        .expect("topic echoed back");
    assert_eq!(
        topic.error(),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION),
        "INVALID_TOPIC_EXCEPTION"
    );
}
