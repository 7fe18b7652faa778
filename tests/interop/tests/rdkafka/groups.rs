//! Consumer groups and the idempotent producer through librdkafka: subscribe, commit, resume from the
//! committed offsets, group listing and deletion; `enable.idempotence=true` (InitProducerId, sequences).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::Offset;
use sluice_interop::Broker;

use crate::common::{
    admin, block_on, config, flush_reports, make_record, producer, send, seq_of, Record, Rng,
    WAIT_MS,
};

const PARTITIONS: i32 = 3;

fn produce(
    broker: &Broker,
    topic: &str,
    records: &[Record],
    first_id: usize,
    extra: &[(&str, &str)],
) {
    let producer = producer(broker, extra);
    for (i, record) in records.iter().enumerate() {
        send(&producer, topic, None, record, first_id + i);
    }
    for report in flush_reports(&producer, records.len()) {
        assert!(
            report.error.is_none(),
            "record {}: {:?}",
            report.id,
            report.error
        );
    }
}

fn group_consumer(broker: &Broker, group: &str) -> BaseConsumer {
    config(
        broker,
        &[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "500"),
        ],
    )
    .create()
    .expect("create group consumer")
}

/// Polls until `count` records arrived (each checked against `records` by its seq header); returns their seqs.
fn read(consumer: &BaseConsumer, records: &[Record], count: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    while seen.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records through the group",
            seen.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                let record = crate::common::record_of(&msg);
                let seq = seq_of(&record);
                assert_eq!(
                    record,
                    records[seq],
                    "record {seq} at {}/{}",
                    msg.partition(),
                    msg.offset()
                );
                assert!(seen.insert(seq), "record {seq} delivered twice");
            }
            Some(Err(err)) => panic!("group consumer error: {err}"),
            None => {}
        }
    }
    seen
}

/// Not yet passing: after reading and committing, dropping the first member (rdkafka's consumer close) never
/// returns, although the broker sees the connections closed. Undiagnosed (client close sequence or a broker
/// answer it waits for); librdkafka's own group tests 0018/0030/0056 pass.
#[test]
#[ignore = "hangs in the first member's close (drop) after commit; undiagnosed"]
fn group_commit_and_resume() {
    let broker = Broker::builder()
        .config("num.partitions", &PARTITIONS.to_string())
        .config("group.initial.rebalance.delay.ms", "0")
        .start()
        .expect("start broker");
    let topic = "grouped";
    let mut rng = Rng::new(21);
    let records: Vec<Record> = (0..2_000)
        .map(|i| make_record(&mut rng, i, 100, 1_700_000_000_000 + i as i64))
        .collect();
    produce(&broker, topic, &records[..1_000], 0, &[("acks", "all")]);

    // First member: everything so far, then a synchronous commit of its position.
    let first = group_consumer(&broker, "g1");
    first.subscribe(&[topic]).expect("subscribe");
    let seen = read(&first, &records, 1_000);
    assert_eq!(seen.len(), 1_000);
    first
        .commit_consumer_state(CommitMode::Sync)
        .expect("OffsetCommit");
    let committed = first
        .committed(Duration::from_millis(WAIT_MS))
        .expect("OffsetFetch");
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            other => panic!("partition {} committed {other:?}", e.partition()),
        })
        .sum();
    assert_eq!(total, 1_000, "committed offsets add up to the records read");
    first.unsubscribe();
    drop(first);

    // A new member of the same group resumes from the committed offsets: only the new records.
    produce(&broker, topic, &records[1_000..], 1_000, &[("acks", "all")]);
    let second = group_consumer(&broker, "g1");
    second.subscribe(&[topic]).expect("subscribe");
    let seen = read(&second, &records, 1_000);
    assert!(
        seen.iter().all(|seq| *seq >= 1_000),
        "a committed record was delivered again"
    );
    drop(second);

    // The group is listed, and can be deleted once empty.
    let groups = admin(&broker)
        .inner()
        .fetch_group_list(Some("g1"), Duration::from_millis(WAIT_MS))
        .expect("ListGroups/DescribeGroups");
    assert!(
        groups.groups().iter().any(|g| g.name() == "g1"),
        "group g1 listed"
    );
    let deleted = block_on(admin(&broker).delete_groups(
        &["g1"],
        &rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .expect("DeleteGroups request");
    assert_eq!(deleted, vec![Ok("g1".to_owned())]);
}

#[test]
fn two_members_split_the_partitions() {
    let broker = Broker::builder()
        .config("num.partitions", "4")
        .config("group.initial.rebalance.delay.ms", "0")
        .start()
        .expect("start broker");
    let topic = "shared";
    let a = group_consumer(&broker, "g2");
    let b = group_consumer(&broker, "g2");
    // Create the topic first so both members see its 4 partitions.
    let mut rng = Rng::new(22);
    let records: Vec<Record> = (0..400)
        .map(|i| make_record(&mut rng, i, 50, 1_700_000_000_000 + i as i64))
        .collect();
    produce(&broker, topic, &records, 0, &[("acks", "all")]);
    a.subscribe(&[topic]).expect("subscribe a");
    b.subscribe(&[topic]).expect("subscribe b");
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        a.poll(Duration::from_millis(50));
        b.poll(Duration::from_millis(50));
        let (pa, pb) = (
            a.assignment().expect("a assignment"),
            b.assignment().expect("b assignment"),
        );
        if pa.count() == 2 && pb.count() == 2 {
            let mut all: Vec<i32> = pa
                .elements()
                .iter()
                .chain(pb.elements().iter())
                .map(|e| e.partition())
                .collect();
            all.sort_unstable();
            assert_eq!(all, [0, 1, 2, 3], "each partition to exactly one member");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no balanced assignment: {} and {} partitions",
            pa.count(),
            pb.count()
        );
    }
}

#[test]
fn idempotent_producer_round_trip() {
    let broker = Broker::builder()
        .config("num.partitions", "2")
        .start()
        .expect("start broker");
    let topic = "idempotent";
    let mut rng = Rng::new(23);
    let records: Vec<Record> = (0..20_000)
        .map(|i| make_record(&mut rng, i, 200, 1_700_000_000_000 + i as i64))
        .collect();
    produce(
        &broker,
        topic,
        &records,
        0,
        &[("enable.idempotence", "true"), ("linger.ms", "2")],
    );
    let consumer = crate::common::consumer(&broker, &[]);
    let consumed = crate::common::consume_all(&consumer, topic, 2, records.len());
    crate::common::assert_same_records(&records, &consumed, 0);
}
