//! acks 0, 1 and all: every record delivered, delivery reports in order with increasing offsets (acks 1/all;
//! acks 0 has no offsets to report), and everything readable back.

use sluice_interop::Broker;

use crate::codecs::assert_report_offsets;
use crate::common::{
    assert_same_records, consume_all, consumer, flush_reports, make_record, producer, send, Record,
    Rng,
};

const RECORDS: usize = 20_000;

fn produce_with_acks(acks: &str) {
    let broker = Broker::builder()
        .config("num.partitions", "1")
        .start()
        .expect("start broker");
    let topic = format!("acks-{}", if acks == "-1" { "all" } else { acks });
    let producer = producer(&broker, &[("acks", acks), ("linger.ms", "2")]);
    let mut rng = Rng::new(42);
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| make_record(&mut rng, i, 100, 1_600_000_000_000 + i as i64))
        .collect();
    for (i, record) in records.iter().enumerate() {
        send(&producer, &topic, Some(0), record, i);
    }
    let reports = flush_reports(&producer, RECORDS);
    if acks == "0" {
        // No response, so no offset: librdkafka makes one up (RD_KAFKA_OFFSET_INVALID + index in batch), so only
        // success is checked here; the records' real positions are checked by consuming below.
        for report in &reports {
            assert!(
                report.error.is_none(),
                "record {} failed: {:?}",
                report.id,
                report.error
            );
        }
    } else {
        let placed = assert_report_offsets(&reports);
        // One partition, one producer, no retries: offset order is send order.
        for (id, (partition, offset)) in placed {
            assert_eq!((partition, offset), (0, id as i64), "record {id} placement");
        }
    }
    let consumer = consumer(&broker, &[]);
    let consumed = consume_all(&consumer, &topic, 1, RECORDS);
    assert_same_records(&records, &consumed, 0);
    for (i, c) in consumed.iter().enumerate() {
        assert_eq!(
            c.offset, i as i64,
            "single partition offsets are the send order"
        );
    }
}

#[test]
fn acks_0_delivers_everything() {
    produce_with_acks("0");
}

#[test]
fn acks_1_reports_increasing_offsets() {
    produce_with_acks("1");
}

#[test]
fn acks_all_reports_increasing_offsets() {
    produce_with_acks("all");
}

#[test]
fn acks_minus_one_is_all() {
    produce_with_acks("-1");
}
