//! ListOffsets through librdkafka: watermarks (earliest/latest) and offsets for times.

use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use sluice_interop::Broker;

use crate::common::{consumer, flush_reports, make_record, producer, send, Record, Rng, WAIT_MS};

const RECORDS: usize = 1_000;
const T0_MS: i64 = 1_690_000_000_000;
const STEP_MS: i64 = 10;

/// One partition, `RECORDS` records with CreateTime T0 + i * STEP, at most `per_batch` records per batch.
fn broker_with_timed_records(topic: &str, per_batch: usize) -> Broker {
    let broker = Broker::builder()
        .config("num.partitions", "1")
        .start()
        .expect("start broker");
    let producer = producer(
        &broker,
        &[
            ("acks", "all"),
            ("linger.ms", "0"),
            ("batch.num.messages", per_batch.to_string().as_str()),
        ],
    );
    let mut rng = Rng::new(9);
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| make_record(&mut rng, i, 50, T0_MS + i as i64 * STEP_MS))
        .collect();
    for (i, record) in records.iter().enumerate() {
        send(&producer, topic, Some(0), record, i);
    }
    for report in flush_reports(&producer, RECORDS) {
        assert!(
            report.error.is_none(),
            "record {}: {:?}",
            report.id,
            report.error
        );
    }
    broker
}

#[test]
fn watermarks_track_the_log() {
    let topic = "watermarks";
    let broker = broker_with_timed_records(topic, 7);
    let client = consumer(&broker, &[]);
    let (low, high) = client
        .fetch_watermarks(topic, 0, Duration::from_millis(WAIT_MS))
        .expect("watermarks");
    assert_eq!((low, high), (0, RECORDS as i64));

    // An unknown partition is an error, not a made-up answer.
    assert!(
        client
            .fetch_watermarks(topic, 5, Duration::from_millis(5_000))
            .is_err(),
        "partition 5 does not exist"
    );
}

fn offset_for_time(
    client: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    timestamp_ms: i64,
) -> Offset {
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset(topic, 0, Offset::Offset(timestamp_ms))
        .expect("query");
    let answer = client
        .offsets_for_times(query, Duration::from_millis(WAIT_MS))
        .expect("ListOffsets by timestamp");
    let element = answer
        .find_partition(topic, 0)
        .expect("partition in answer");
    element.error().expect("no partition error");
    element.offset()
}

/// The queries Kafka answers with the first record whose timestamp is at or after the target.
fn check_offsets_for_times(per_batch: usize) {
    let topic = format!("by-time-{per_batch}");
    let broker = broker_with_timed_records(&topic, per_batch);
    let client = consumer(&broker, &[]);
    let topic = topic.as_str();
    assert_eq!(
        offset_for_time(&client, topic, 0),
        Offset::Offset(0),
        "before everything: the first offset"
    );
    assert_eq!(offset_for_time(&client, topic, T0_MS), Offset::Offset(0));
    assert_eq!(
        offset_for_time(&client, topic, T0_MS + 1),
        Offset::Offset(1),
        "between records: the next one"
    );
    assert_eq!(
        offset_for_time(&client, topic, T0_MS + 5 * STEP_MS + 5),
        Offset::Offset(6)
    );
    assert_eq!(
        offset_for_time(&client, topic, T0_MS + 500 * STEP_MS),
        Offset::Offset(500)
    );
    let last = T0_MS + (RECORDS as i64 - 1) * STEP_MS;
    assert_eq!(
        offset_for_time(&client, topic, last),
        Offset::Offset(RECORDS as i64 - 1),
        "the last record"
    );
    // Past the last timestamp Kafka answers offset -1, which librdkafka shows as End.
    assert_eq!(
        offset_for_time(&client, topic, last + 1),
        Offset::End,
        "after everything"
    );
}

/// One record per batch: every answer is a batch boundary.
#[test]
fn offsets_for_times_one_record_per_batch() {
    check_offsets_for_times(1);
}

/// Several records per batch: Kafka looks inside the batch for the first record at or after the target.
#[test]
fn offsets_for_times_inside_batches() {
    check_offsets_for_times(7);
}
