//! Acknowledged records survive a clean restart (SIGTERM) and a crash (SIGKILL), byte for byte at the same
//! offsets, and the log continues at the old end afterwards.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::producer::{Producer, PurgeConfig};
use rdkafka::Offset;
use sluice_interop::Broker;

use crate::codecs::assert_report_offsets;
use crate::common::{
    assert_same_records, consume_all, consume_from, consumer, flush_reports, make_record, producer,
    send, seq_of, Record, Rng, WAIT_MS,
};

const PARTITIONS: i32 = 2;
const RECORDS: usize = 20_000;

fn data_set(seed: u64, start: usize, count: usize) -> Vec<Record> {
    let mut rng = Rng::new(seed);
    (0..start + count)
        .map(|i| make_record(&mut rng, i, 500, 1_650_000_000_000 + i as i64))
        .skip(start)
        .collect()
}

fn produce_acked(
    broker: &Broker,
    topic: &str,
    records: &[Record],
    first_id: usize,
) -> BTreeMap<usize, (i32, i64)> {
    let producer = producer(broker, &[("acks", "all"), ("linger.ms", "2")]);
    for (i, record) in records.iter().enumerate() {
        send(&producer, topic, None, record, first_id + i);
    }
    let reports = flush_reports(&producer, records.len());
    reports
        .iter()
        .map(|r| {
            assert!(
                r.error.is_none(),
                "record {} not delivered: {:?}",
                r.id,
                r.error
            );
            (r.id, (r.partition, r.offset))
        })
        .collect()
}

fn watermarks(broker: &Broker, topic: &str) -> Vec<(i64, i64)> {
    let consumer = consumer(broker, &[]);
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_millis(WAIT_MS))
                .unwrap_or_else(|e| panic!("watermarks of {topic}-{p}: {e}"))
        })
        .collect()
}

/// After a restart: the same records at the same offsets, then new records continue at the old end.
fn check_after_restart(broker: &Broker, topic: &str, records: &[Record], highs: &[(i64, i64)]) {
    assert_eq!(
        watermarks(broker, topic),
        highs,
        "watermarks changed across the restart"
    );
    let consumed = consume_all(&consumer(broker, &[]), topic, PARTITIONS, records.len());
    assert_same_records(records, &consumed, 0);

    let more = data_set(7, records.len(), 1_000);
    let placed = produce_acked(broker, topic, &more, records.len());
    for (id, (partition, offset)) in &placed {
        let old_high = highs[*partition as usize].1;
        assert!(
            *offset >= old_high,
            "record {id} at {partition}/{offset} overwrote offsets below the old end {old_high}"
        );
    }
    let consumed = consume_from(&consumer(broker, &[]), topic, PARTITIONS, Offset::End, 0);
    assert!(consumed.is_empty());
    let mut assignment = rdkafka::TopicPartitionList::new();
    for (p, (_, high)) in highs.iter().enumerate() {
        assignment
            .add_partition_offset(topic, p as i32, Offset::Offset(*high))
            .expect("offset");
    }
    let new_consumer = consumer(broker, &[]);
    new_consumer.assign(&assignment).expect("assign");
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    while seen < more.len() {
        assert!(
            Instant::now() < deadline,
            "only {seen} of {} new records readable",
            more.len()
        );
        if let Some(msg) = new_consumer.poll(Duration::from_millis(100)) {
            let msg = msg.expect("consume new records");
            let record = crate::common::record_of(&msg);
            let seq = seq_of(&record);
            assert_eq!(record, more[seq - records.len()], "new record {seq}");
            seen += 1;
        }
    }
}

#[test]
fn survives_clean_restart() {
    let mut broker = Broker::builder()
        .config("num.partitions", &PARTITIONS.to_string())
        .start()
        .expect("start broker");
    let topic = "durable-clean";
    let records = data_set(7, 0, RECORDS);
    produce_acked(&broker, topic, &records, 0);
    let highs = watermarks(&broker, topic);
    assert_eq!(
        highs.iter().map(|(_, h)| *h as usize).sum::<usize>(),
        RECORDS
    );

    let status = broker.stop().expect("clean shutdown on SIGTERM");
    assert!(
        status.success(),
        "SIGTERM should exit 0, got {status}; log:\n{}",
        broker.log_tail(30)
    );
    broker.restart().expect("restart after clean shutdown");
    check_after_restart(&broker, topic, &records, &highs);
}

#[test]
fn survives_sigkill() {
    let mut broker = Broker::builder()
        .config("num.partitions", &PARTITIONS.to_string())
        .start()
        .expect("start broker");
    let topic = "durable-kill";
    let records = data_set(7, 0, RECORDS);
    produce_acked(&broker, topic, &records, 0);
    let highs = watermarks(&broker, topic);
    broker.kill().expect("SIGKILL");
    broker.restart().expect("restart after SIGKILL");
    check_after_restart(&broker, topic, &records, &highs);
}

/// SIGKILL while a producer is mid-stream: every acknowledged record survives at its reported offset, and the
/// log holds nothing but produced records, densely.
#[test]
fn acknowledged_records_survive_sigkill_mid_stream() {
    let mut broker = Broker::builder()
        .config("num.partitions", &PARTITIONS.to_string())
        .start()
        .expect("start broker");
    let topic = "durable-mid-stream";
    let total = 50_000;
    let records = data_set(11, 0, total);
    // A small local queue keeps the producer mid-stream (send blocks and polls) when a quarter is acknowledged.
    let producer = producer(
        &broker,
        &[
            ("acks", "all"),
            ("linger.ms", "1"),
            ("message.timeout.ms", "5000"),
            ("queue.buffering.max.messages", "1000"),
        ],
    );
    let mut killed = false;
    for (i, record) in records.iter().enumerate() {
        send(&producer, topic, None, record, i);
        if i % 500 == 0 {
            producer.poll(Duration::ZERO);
        }
        if !killed && producer.context().reports.lock().expect("lock").len() >= total / 4 {
            broker.kill().expect("SIGKILL mid-stream");
            killed = true;
            break;
        }
    }
    assert!(
        killed,
        "the producer finished before a quarter was acknowledged; nothing was tested"
    );
    // Nothing more may reach the broker: drop whatever is queued or in flight.
    producer.purge(PurgeConfig::default().queue().inflight());
    producer.poll(Duration::from_millis(100));
    let reports = producer.context().reports.lock().expect("lock").clone();
    drop(producer);
    let acked: Vec<_> = reports
        .iter()
        .filter(|r| r.error.is_none())
        .cloned()
        .collect();
    assert!(acked.len() >= total / 4);
    let placed = assert_report_offsets(&acked);

    broker.restart().expect("restart after SIGKILL");
    let highs = watermarks(&broker, topic);
    let stored: i64 = highs.iter().map(|(low, high)| high - low).sum();
    assert!(
        stored as usize >= acked.len(),
        "{stored} records stored, {} were acknowledged",
        acked.len()
    );
    let consumed = consume_all(&consumer(&broker, &[]), topic, PARTITIONS, stored as usize);
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for c in &consumed {
        let seq = seq_of(&c.record);
        assert_eq!(c.record, records[seq], "stored record {seq} differs");
        let expected = next.entry(c.partition).or_insert(0);
        assert_eq!(
            c.offset, *expected,
            "offsets not dense in partition {}",
            c.partition
        );
        *expected += 1;
        if let Some(place) = placed.get(&seq) {
            assert_eq!(
                *place,
                (c.partition, c.offset),
                "acknowledged record {seq} moved"
            );
        }
    }
    let read: std::collections::BTreeSet<usize> =
        consumed.iter().map(|c| seq_of(&c.record)).collect();
    for id in placed.keys() {
        assert!(read.contains(id), "acknowledged record {id} lost");
    }
}
