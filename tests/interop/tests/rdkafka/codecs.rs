//! 100k records with keys, headers and timestamps per compression codec, produced and consumed back
//! byte-identical, with delivery-report offsets matching where each record is read.

use std::collections::BTreeMap;
use std::path::Path;

use sluice_interop::Broker;

use crate::common::{
    assert_same_records, consume_all, consumer, flush_reports, make_record, producer, send, Record,
    Report, Rng,
};

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 3;
const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// Checks every report succeeded and, per partition, offsets are dense from 0 in arrival order; returns
/// record id -> (partition, offset).
pub(crate) fn assert_report_offsets(reports: &[Report]) -> BTreeMap<usize, (i32, i64)> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut placed = BTreeMap::new();
    for report in reports {
        assert!(
            report.error.is_none(),
            "record {} not delivered: {:?}",
            report.id,
            report.error
        );
        let expected = next.entry(report.partition).or_insert(0);
        assert_eq!(
            report.offset, *expected,
            "delivery reports for partition {} not increasing by one (record {})",
            report.partition, report.id
        );
        *expected += 1;
        assert!(
            placed
                .insert(report.id, (report.partition, report.offset))
                .is_none(),
            "record {} reported twice",
            report.id
        );
    }
    placed
}

/// Total bytes of the partition logs of `topic` under the broker's data dir (`<topic>-<partition>/*.log`).
fn log_bytes(data_dir: &Path, topic: &str) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_partition_dir = name
            .strip_prefix(topic)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|p| p.parse::<u32>().is_ok());
        if !is_partition_dir {
            continue;
        }
        for file in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if file.path().extension().is_some_and(|ext| ext == "log") {
                total += file.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

fn raw_bytes(records: &[Record]) -> u64 {
    records
        .iter()
        .map(|r| {
            let key = r.key.as_ref().map_or(0, Vec::len);
            let value = r.value.as_ref().map_or(0, Vec::len);
            let headers: usize = r
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum();
            (key + value + headers) as u64
        })
        .sum()
}

/// Produces and consumes back; returns (bytes of the partition logs on disk, bytes of record data).
fn round_trip(codec: &str, seed: u64) -> (u64, u64) {
    let broker = Broker::builder()
        .config("num.partitions", &PARTITIONS.to_string())
        .start()
        .expect("start broker");
    let topic = format!("codec-{codec}");
    let producer = producer(
        &broker,
        &[
            ("compression.type", codec),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("batch.num.messages", "2000"),
        ],
    );
    let mut rng = Rng::new(seed);
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| make_record(&mut rng, i, 300, BASE_TIMESTAMP_MS + i as i64))
        .collect();
    for (i, record) in records.iter().enumerate() {
        send(&producer, &topic, None, record, i);
        if i % 1000 == 0 {
            producer.poll(std::time::Duration::ZERO);
        }
    }
    let reports = flush_reports(&producer, RECORDS);
    let placed = assert_report_offsets(&reports);

    let consumer = consumer(&broker, &[]);
    let consumed = consume_all(&consumer, &topic, PARTITIONS, RECORDS);
    let per_partition = assert_same_records(&records, &consumed, 0);
    assert_eq!(
        per_partition.len(),
        PARTITIONS as usize,
        "keys should spread over every partition"
    );
    for c in &consumed {
        let seq = crate::common::seq_of(&c.record);
        assert_eq!(
            placed.get(&seq),
            Some(&(c.partition, c.offset)),
            "record {seq}: reported vs read position"
        );
    }

    (log_bytes(broker.data_dir(), &topic), raw_bytes(&records))
}

/// The broker stores batches as the producer sent them: compressed codecs must take visibly less space.
fn assert_stored_compressed(codec: &str, (stored, raw): (u64, u64)) {
    assert!(
        stored > 0 && stored * 10 < raw * 9,
        "{codec}: log is {stored} bytes for {raw} bytes of record data: batches were not stored compressed"
    );
}

#[test]
fn codec_none_100k_round_trip() {
    let (stored, raw) = round_trip("none", 1);
    assert!(
        stored >= raw,
        "uncompressed log is {stored} bytes for {raw} bytes of record data"
    );
}

#[test]
fn codec_gzip_100k_round_trip() {
    assert_stored_compressed("gzip", round_trip("gzip", 2));
}

#[test]
fn codec_snappy_100k_round_trip() {
    assert_stored_compressed("snappy", round_trip("snappy", 3));
}

/// Round trip; `codec_lz4_batches_stored_compressed` checks the stored size separately.
#[test]
fn codec_lz4_100k_round_trip() {
    round_trip("lz4", 4);
}

/// librdkafka enables LZ4 only when the broker advertises FindCoordinator (its feature map uses that as the
/// marker of Kafka >= 0.8.2); without it, it logs "Broker does not support compression type lz4: not
/// compressing batch" and sends LZ4-configured batches uncompressed. This checks they arrive compressed.
#[test]
fn codec_lz4_batches_stored_compressed() {
    assert_stored_compressed("lz4", round_trip("lz4", 4));
}

#[test]
fn codec_zstd_100k_round_trip() {
    assert_stored_compressed("zstd", round_trip("zstd", 5));
}
