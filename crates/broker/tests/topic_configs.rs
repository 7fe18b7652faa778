//! Topic configs as Produce, Fetch and retention see them, on a broker served in-process on a free loopback
//! port: `max.message.bytes` (MESSAGE_TOO_LARGE), `message.timestamp.type=LogAppendTime` (the broker's clock in
//! the response and in the fetched batch), `retention.bytes`/`retention.ms` changed on a live topic with
//! IncrementalAlterConfigs/AlterConfigs and applied by the periodic retention task, and a topic's
//! `min.insync.replicas` above its ISR (NOT_ENOUGH_REPLICAS for acks=-1 only), each as Apache Kafka behaves.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
mod common;

use common::Client;
use sluice_protocol::batch::BatchHeader;
use sluice_testkit::batch::sized_batch;
use sluice_testkit::clock::wall_clock_ms;
use sluice_testkit::TestBroker;

const TIMEOUT: Duration = Duration::from_secs(20);
const TOPIC: i8 = 2;

/// The calls these tests make, on the shared test [`Client`].
trait TopicCalls {
    async fn create_topic(&mut self, name: &str, configs: &[(&str, &str)]);
    async fn produce(
        &mut self,
        topic: &str,
        acks: i16,
        batch: Vec<u8>,
    ) -> produce_response::PartitionProduceResponse;
    async fn offset(&mut self, topic: &str, timestamp: i64) -> i64;
}

impl TopicCalls for Client {
    /// Creates a one-partition, replication-factor-1 topic with the given configs; asserts success.
    async fn create_topic(&mut self, name: &str, configs: &[(&str, &str)]) {
        let topic = CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(s(k))
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            );
        let response = self
            .send(
                7,
                CreateTopicsRequest::default()
                    .with_topics(vec![topic])
                    .with_timeout_ms(5000),
            )
            .await;
        assert_eq!(response.topics[0].error_code, 0, "create {name}");
    }

    /// Produces one batch to partition 0 (v9); returns the partition's response.
    async fn produce(
        &mut self,
        topic: &str,
        acks: i16,
        batch: Vec<u8>,
    ) -> produce_response::PartitionProduceResponse {
        let request = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(s(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch)))])]);
        let mut response = self.send(9, request).await;
        response.responses.remove(0).partition_responses.remove(0)
    }

    /// ListOffsets (v8) of partition 0 at `timestamp` (-2 earliest, -1 latest).
    async fn offset(&mut self, topic: &str, timestamp: i64) -> i64 {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(timestamp)
                    .with_current_leader_epoch(-1)])]);
        let response = self.send(8, request).await;
        let p = &response.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        p.offset
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

#[tokio::test]
async fn a_batch_above_the_topics_max_message_bytes_is_message_too_large() {
    let mut broker = TestBroker::start().await;
    let mut client = Client::connect(broker.server()).await;
    client
        .create_topic("small", &[("max.message.bytes", "2048")])
        .await;
    let too_large = sized_batch(4, 1000, wall_clock_ms());
    assert!(too_large.len() > 2048);
    let p = client.produce("small", 1, too_large).await;
    assert_eq!(p.error_code, 10, "MESSAGE_TOO_LARGE");
    // Nothing was appended; a batch within the limit goes in at offset 0.
    let fits = sized_batch(1, 1000, wall_clock_ms());
    assert!(fits.len() <= 2048);
    let p = client.produce("small", 1, fits).await;
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    // The limit is the topic's: the same large batch is fine on a topic with the broker default (1 MiB).
    client.create_topic("roomy", &[]).await;
    let p = client
        .produce("roomy", 1, sized_batch(4, 1000, wall_clock_ms()))
        .await;
    assert_eq!(p.error_code, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn log_append_time_topics_stamp_batches_with_the_brokers_clock() {
    let mut broker = TestBroker::start().await;
    let mut client = Client::connect(broker.server()).await;
    client
        .create_topic("stamped", &[("message.timestamp.type", "LogAppendTime")])
        .await;
    client.create_topic("create-time", &[]).await;
    let producer_timestamp_ms = 1_600_000_000_000;
    let before_ms = wall_clock_ms();
    let p = client
        .produce("stamped", -1, sized_batch(3, 10, producer_timestamp_ms))
        .await;
    let after_ms = wall_clock_ms();
    assert_eq!(p.error_code, 0);
    assert!(
        (before_ms..=after_ms).contains(&p.log_append_time_ms),
        "log_append_time_ms {} not the broker's clock ({before_ms}..={after_ms})",
        p.log_append_time_ms
    );
    // CreateTime topics answer -1, as Kafka.
    let p2 = client
        .produce("create-time", -1, sized_batch(3, 10, producer_timestamp_ms))
        .await;
    assert_eq!((p2.error_code, p2.log_append_time_ms), (0, -1));

    // The fetched batch carries the broker's timestamp and the LogAppendTime attribute, with a valid CRC.
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s("stamped")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response = client.send(12, request).await;
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    let records = partition.records.clone().expect("records");
    let header = BatchHeader::new(&records).unwrap();
    header.validate().unwrap();
    assert!(header.is_log_append_time());
    assert_eq!(header.max_timestamp(), p.log_append_time_ms);
    assert_eq!(header.record_count(), 3);
    broker.shutdown().await;
}

/// Waits until the topic's log start offset moves past 0 (retention deleted a segment); returns it.
async fn wait_for_retention(client: &mut Client, topic: &str) -> i64 {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let earliest = client.offset(topic, -2).await;
        if earliest > 0 {
            return earliest;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}: retention never deleted a segment"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Segment files (`.log`) in a partition directory.
fn segment_count(dir: &std::path::Path, topic: &str) -> usize {
    std::fs::read_dir(dir.join(format!("{topic}-0")))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .count()
}

#[tokio::test]
async fn retention_altered_on_a_live_topic_is_applied_by_the_periodic_task() {
    let mut broker = TestBroker::start_with(&[("log.retention.check.interval.ms", "100")]).await;
    let mut client = Client::connect(broker.server()).await;
    // segment.bytes cannot go below 1 MiB (Kafka 4's minimum): write ~3.5 MiB in 256 KiB batches.
    client
        .create_topic("by-bytes", &[("segment.bytes", "1048576")])
        .await;
    for _ in 0..14 {
        let p = client
            .produce("by-bytes", 1, sized_batch(256, 1000, wall_clock_ms()))
            .await;
        assert_eq!(p.error_code, 0);
    }
    assert!(segment_count(broker.dir(), "by-bytes") >= 3);
    // The defaults (7 days, unbounded bytes) keep every segment of this fresh data.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        client.offset("by-bytes", -2).await,
        0,
        "nothing to delete yet"
    );

    // IncrementalAlterConfigs SET retention.bytes=1 MiB on the live topic.
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s("by-bytes"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(s("retention.bytes"))
                    .with_config_operation(0)
                    .with_value(Some(s("1048576"))),
            ]),
    ]);
    assert_eq!(client.send(1, request).await.responses[0].error_code, 0);
    let earliest = wait_for_retention(&mut client, "by-bytes").await;
    let latest = client.offset("by-bytes", -1).await;
    assert_eq!(latest, 14 * 256, "retention never touches the log end");
    assert!(earliest < latest);
    // What is left is at most retention.bytes plus the active segment.
    assert!(
        segment_count(broker.dir(), "by-bytes") <= 2,
        "old segments deleted"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn retention_ms_altered_with_alter_configs_deletes_old_segments() {
    let mut broker = TestBroker::start_with(&[("log.retention.check.interval.ms", "100")]).await;
    let mut client = Client::connect(broker.server()).await;
    // Forever at first; batches timestamped 2020.
    client
        .create_topic(
            "by-time",
            &[("segment.bytes", "1048576"), ("retention.ms", "-1")],
        )
        .await;
    for _ in 0..14 {
        let p = client
            .produce("by-time", 1, sized_batch(256, 1000, 1_600_000_000_000))
            .await;
        assert_eq!(p.error_code, 0);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        client.offset("by-time", -2).await,
        0,
        "retention.ms=-1 keeps all"
    );
    // AlterConfigs replaces every override: keep segment.bytes, set retention.ms to one second.
    let config = |k: &str, v: &str| {
        alter_configs_request::AlterableConfig::default()
            .with_name(s(k))
            .with_value(Some(s(v)))
    };
    let request = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s("by-time"))
            .with_configs(vec![
                config("segment.bytes", "1048576"),
                config("retention.ms", "1000"),
            ]),
    ]);
    assert_eq!(client.send(2, request).await.responses[0].error_code, 0);
    // Every batch is past retention.ms; like Kafka, retention may take the active segment too (rolling a new,
    // empty one), so the log start offset moves up to, never past, the log end.
    let earliest = wait_for_retention(&mut client, "by-time").await;
    assert!(earliest <= 14 * 256);
    assert_eq!(client.offset("by-time", -1).await, 14 * 256);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_topics_min_insync_replicas_above_its_isr_refuses_acks_all_only() {
    let mut broker = TestBroker::start().await;
    let mut client = Client::connect(broker.server()).await;
    // Kafka accepts min.insync.replicas above the replication factor at creation; produce enforces it.
    client
        .create_topic("strict", &[("min.insync.replicas", "2")])
        .await;
    let p = client
        .produce("strict", -1, sized_batch(2, 10, wall_clock_ms()))
        .await;
    assert_eq!(p.error_code, 19, "NOT_ENOUGH_REPLICAS");
    let p = client
        .produce("strict", 1, sized_batch(2, 10, wall_clock_ms()))
        .await;
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 0),
        "acks=1 ignores the ISR size"
    );
    assert_eq!(
        client.offset("strict", -1).await,
        2,
        "the refused batch was not appended"
    );
    // The broker default (1) still governs other topics.
    client.create_topic("relaxed", &[]).await;
    let p = client
        .produce("relaxed", -1, sized_batch(2, 10, wall_clock_ms()))
        .await;
    assert_eq!(p.error_code, 0);
    broker.shutdown().await;
}
