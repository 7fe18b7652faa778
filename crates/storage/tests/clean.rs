//! Log compaction: unit cases and a model-based property test with crashes in the middle of cleaning.
//!
//! The model is every record appended (offset, key, value). After any sequence of appends, rolls, cleans,
//! crashes at any point of a pass (every file operation after the N-th fails, as if the process had died)
//! and reopens, reading the whole log must give: offsets strictly increasing; every record read exactly as
//! appended at its offset; for every key, its latest record present (a tombstone may be gone once its
//! delete horizon passed, and then nothing older of that key is left); every record of the active segment
//! present.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{DyingIo, DyingIoHandle};
use proptest::prelude::*;
use sluice_protocol::batch::{self, Batches};
use sluice_storage::io::RealIo;
use sluice_storage::log::{CleanOptions, DELETE_HORIZON_FLAG};
use sluice_storage::records::{compress, decompress, parse_raw_records};
use sluice_storage::{Log, LogConfig, LogOptions};
use sluice_testkit::batch::BatchBuilder;

/// One record read back: offset, key, value (`None`: tombstone), timestamp.
type Read = (i64, Option<Vec<u8>>, Option<Vec<u8>>, i64);

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 64,
        file_delete_delay_ms: 0,
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 1_000,
        ..LogConfig::default()
    }
}

fn options(now_ms: i64) -> CleanOptions {
    CleanOptions {
        now_ms,
        ..CleanOptions::default()
    }
}

/// Re-frames an uncompressed batch with its records compressed by `codec`.
fn compressed(batch_bytes: Vec<u8>, codec: u8) -> Vec<u8> {
    if codec == 0 {
        return batch_bytes;
    }
    let body = compress(codec, &batch_bytes[batch::RECORD_BATCH_OVERHEAD..]).unwrap();
    let mut out = batch_bytes[..batch::RECORD_BATCH_OVERHEAD].to_vec();
    out.extend_from_slice(&body);
    let length = (out.len() - batch::LOG_OVERHEAD) as i32;
    out[batch::LENGTH_OFFSET..batch::LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    let attributes = i16::from(codec);
    out[batch::ATTRIBUTES_OFFSET..batch::ATTRIBUTES_OFFSET + 2]
        .copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[batch::ATTRIBUTES_OFFSET..]);
    out[batch::CRC_OFFSET..batch::CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Every record of the log from its start, through reads as a consumer makes them.
fn read_all(log: &Log) -> Vec<Read> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.high_watermark();
    while offset < end {
        let r = log.read(offset, 1 << 16, end).unwrap();
        if r.data.is_empty() {
            // The offsets left are a gap compaction made at the end of the log (as in Kafka, a consumer there
            // waits for the next record); the checks below find anything missing.
            break;
        }
        for item in Batches::new(&r.data) {
            let (_, h) = item.unwrap();
            h.validate().expect("every batch read has a valid CRC");
            let body = &h.bytes()[batch::RECORD_BATCH_OVERHEAD..h.size()];
            let raw = match h.compression() {
                0 => body.to_vec(),
                c => decompress(c, body, 1 << 24).unwrap(),
            };
            for rec in parse_raw_records(&raw).unwrap() {
                let o = h.base_offset() + i64::from(rec.offset_delta);
                if o >= offset {
                    out.push((
                        o,
                        rec.key.map(|k| raw[k].to_vec()),
                        rec.value.map(|v| raw[v].to_vec()),
                        h.base_timestamp() + rec.timestamp_delta,
                    ));
                }
            }
            offset = h.next_offset();
        }
    }
    out
}

fn append(log: &Log, records: &[(u8, Option<u8>)], ts: i64, codec: u8) {
    let mut b = BatchBuilder::new().timestamp_ms(ts);
    for (k, v) in records {
        let key = [b'k', *k];
        let value = v.map(|v| vec![v; 20]);
        b = b.record(Some(&key), value.as_deref());
    }
    let mut bytes = compressed(b.build(), codec);
    log.append_as_leader(&mut bytes, 0, ts).unwrap();
    log.set_high_watermark(log.log_end_offset());
}

#[test]
fn keeps_the_latest_record_of_every_key_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), config()).unwrap();
    for round in 0..20u8 {
        append(
            &log,
            &[(round % 3, Some(round)), (7, Some(round))],
            1_000,
            0,
        );
    }
    log.roll().unwrap();
    let before = log.size_bytes();
    let stats = log
        .clean(&options(2_000))
        .unwrap()
        .expect("something to clean");
    assert!(!stats.aborted);
    assert!(
        log.size_bytes() < before / 4,
        "{} -> {}",
        before,
        log.size_bytes()
    );
    let read = read_all(&log);
    let offsets: Vec<i64> = read.iter().map(|r| r.0).collect();
    // The last of key 0 is round 18 (offset 36), of 1 round 19 (38), of 2 round 17 (34), of 7 round 19 (39).
    assert_eq!(offsets, vec![34, 36, 38, 39]);
    assert_eq!(read[1].2.as_deref(), Some(&[18u8; 20][..]));
    assert_eq!(log.log_end_offset(), 40);
    // Appends continue at the same offset; a second pass with nothing new does nothing.
    assert!(log.clean(&options(2_000)).unwrap().is_none());
}

#[test]
fn every_codec_is_cleaned_and_kept() {
    for codec in 0..=4u8 {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path().join("t-0"), config()).unwrap();
        for round in 0..10u8 {
            append(
                &log,
                &[(1, Some(round)), (2, Some(round)), (round, Some(round))],
                1_000,
                codec,
            );
        }
        log.roll().unwrap();
        log.clean(&options(2_000)).unwrap().unwrap();
        let read = read_all(&log);
        let keys: Vec<u8> = read.iter().map(|r| r.1.as_ref().unwrap()[1]).collect();
        assert_eq!(keys, vec![0, 3, 4, 5, 6, 7, 8, 1, 2, 9], "codec {codec}");
        let r = log.read(0, 1 << 20, log.high_watermark()).unwrap();
        for item in Batches::new(&r.data) {
            assert_eq!(item.unwrap().1.compression(), codec, "codec kept");
        }
    }
}

#[test]
fn tombstones_stay_for_delete_retention_after_their_first_clean_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), config()).unwrap();
    append(&log, &[(1, Some(1)), (2, Some(2))], 500, 0);
    append(&log, &[(1, None)], 600, 0);
    log.roll().unwrap();
    log.clean(&options(10_000)).unwrap().unwrap();
    let read = read_all(&log);
    assert_eq!(read.len(), 2, "{read:?}");
    assert_eq!(
        read[1],
        (2, Some(b"k\x01".to_vec()), None, 600),
        "the tombstone keeps its timestamp"
    );
    let r = log.read(2, 1 << 20, log.high_watermark()).unwrap();
    let (_, h) = Batches::new(&r.data).next().unwrap().unwrap();
    assert_ne!(h.attributes() & DELETE_HORIZON_FLAG, 0);
    assert_eq!(
        h.base_timestamp(),
        11_000,
        "the horizon is now + delete.retention.ms"
    );
    // Before the horizon, the tombstone stays; the state says when it is due.
    assert!(log.clean(&options(10_500)).unwrap().is_none());
    assert!(!log.cleanable_state(10_500).unwrap().tombstones_due);
    assert!(log.cleanable_state(11_000).unwrap().tombstones_due);
    log.clean(&options(11_000)).unwrap().unwrap();
    let read = read_all(&log);
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].1.as_deref(), Some(&b"k\x02"[..]));
}

#[test]
fn records_without_a_key_are_dropped_and_the_last_batch_of_a_producer_stays() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), config()).unwrap();
    let mut b = BatchBuilder::new()
        .timestamp_ms(100)
        .key_value("a", "1")
        .idempotent(7, 0, 0)
        .build();
    log.append_as_leader(&mut b, 0, 100).unwrap();
    let mut b = BatchBuilder::new()
        .timestamp_ms(100)
        .value("no key")
        .build();
    log.append_as_leader(&mut b, 0, 100).unwrap();
    let mut b = BatchBuilder::new()
        .timestamp_ms(100)
        .key_value("a", "2")
        .build();
    log.append_as_leader(&mut b, 0, 100).unwrap();
    log.set_high_watermark(log.log_end_offset());
    log.roll().unwrap();
    log.clean(&options(1_000)).unwrap().unwrap();
    let r = log.read(0, 1 << 20, log.high_watermark()).unwrap();
    let batches: Vec<(i64, i32, i64)> = Batches::new(&r.data)
        .map(|b| {
            let h = b.unwrap().1;
            (h.base_offset(), h.record_count(), h.producer_id())
        })
        .collect();
    assert_eq!(
        batches,
        vec![(0, 0, 7), (2, 1, -1)],
        "producer 7's last batch stays, empty"
    );
    // Reopening rebuilds producer 7's state from the empty batch.
    drop(log);
    std::fs::remove_file(dir.path().join("t-0").join("00000000000000000003.snapshot")).ok();
    let log = Log::open(dir.path().join("t-0"), config()).unwrap();
    assert!(log.producer_state().get(7).is_some());
}

#[test]
fn a_compact_only_log_is_never_cut_by_retention() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: 1,
        retention_bytes: 1,
        ..config()
    };
    let log = Log::open(dir.path().join("t-0"), cfg.clone()).unwrap();
    for i in 0..10u8 {
        append(&log, &[(i, Some(i))], 1_000, 0);
    }
    log.roll().unwrap();
    assert_eq!(log.apply_retention(1_000_000).unwrap(), 0);
    log.update_config(LogConfig {
        delete: true,
        ..cfg
    });
    assert!(
        log.apply_retention(1_000_000).unwrap() > 0,
        "compact,delete applies retention too"
    );
}

#[test]
fn reads_skip_the_gaps_cleaning_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path().join("t-0"),
        LogConfig {
            segment_bytes: 200,
            ..config()
        },
    )
    .unwrap();
    for _ in 0..6 {
        append(&log, &[(1, Some(1)), (1, Some(2))], 1_000, 0);
    }
    append(&log, &[(2, Some(3))], 1_000, 0);
    log.roll().unwrap();
    log.clean(&options(2_000)).unwrap().unwrap();
    // Offsets 0..=10 are gone but for key 1's last (11); a read at 0 finds it.
    let r = log.read(0, 1 << 20, log.high_watermark()).unwrap();
    let (_, h) = Batches::new(&r.data).next().unwrap().unwrap();
    assert!(h.last_offset() >= 11);
    assert_eq!(
        read_all(&log).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![11, 12]
    );
}

#[test]
fn the_offset_map_bound_splits_a_clean_into_passes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path().join("t-0"),
        LogConfig {
            segment_bytes: 300,
            ..config()
        },
    )
    .unwrap();
    for round in 0..4u8 {
        for k in 0..40u8 {
            append(&log, &[(k, Some(round))], 1_000, 0);
        }
    }
    log.roll().unwrap();
    let opts = CleanOptions {
        max_map_entries: 10,
        ..options(2_000)
    };
    let mut passes = 0;
    while let Some(stats) = log.clean(&opts).unwrap() {
        passes += 1;
        assert!(passes < 100);
        assert!(stats.map_entries <= 40);
    }
    assert!(passes > 1, "{passes} passes");
    let read = read_all(&log);
    assert_eq!(read.len(), 40, "one record per key");
    assert!(read.iter().all(|r| r.2.as_deref() == Some(&[3u8; 20][..])));
}

/// Crashes that left a `.swap` / a `.cleaned` file for the next open to deal with.
static SWAPS_LEFT: AtomicU64 = AtomicU64::new(0);
static CLEANED_LEFT: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Debug)]
enum Op {
    /// Append one batch: (key, value or tombstone) records, compressed with the codec.
    Append(Vec<(u8, Option<u8>)>, u8),
    Roll,
    /// Clean at this many ms after the previous clock.
    Clean(i64),
    /// Clean, killed after this many file operations, then reopen.
    CrashInClean(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec((0u8..6, prop::option::weighted(0.85, 0u8..255)), 1..4), 0u8..5)
            .prop_map(|(r, c)| Op::Append(r, c)),
        2 => Just(Op::Roll),
        2 => (0i64..1_500).prop_map(Op::Clean),
        2 => (0u64..40).prop_map(Op::CrashInClean),
        1 => Just(Op::Reopen),
    ]
}

/// Checks the log against everything appended (`model`: offset -> (key, value)).
fn check(log: &Log, model: &BTreeMap<i64, (u8, Option<u8>)>, unchanged_from: i64) {
    let read = read_all(log);
    let mut last = -1;
    for (o, k, v, _) in &read {
        assert!(*o > last, "offsets increase: {o} after {last}");
        last = *o;
        let (mk, mv) = model
            .get(o)
            .unwrap_or_else(|| panic!("offset {o} was never appended"));
        assert_eq!(k.as_deref(), Some(&[b'k', *mk][..]), "key at {o}");
        assert_eq!(v.clone(), mv.map(|v| vec![v; 20]), "value at {o}");
    }
    let mut latest: BTreeMap<u8, (i64, Option<u8>)> = BTreeMap::new();
    for (o, (k, v)) in model {
        latest.insert(*k, (*o, *v));
    }
    for (k, (o, v)) in &latest {
        let seen_latest = read.iter().any(|r| r.0 == *o);
        if v.is_some() {
            assert!(seen_latest, "key {k}'s latest record at {o} is present");
        } else if !seen_latest {
            assert!(
                !read.iter().any(|r| r.1.as_deref() == Some(&[b'k', *k][..])),
                "key {k}'s tombstone at {o} is gone, and so is every older record of it"
            );
        }
    }
    for o in model.keys().filter(|o| **o >= unchanged_from) {
        assert!(
            read.iter().any(|r| r.0 == *o),
            "record {o}, appended after the last pass, is present"
        );
    }
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = Log::open(&path, config()).unwrap();
    let mut model = BTreeMap::new();
    let mut now = 10_000i64;
    // No pass ran since the log end offset was here: nothing from here on may be missing.
    let mut unchanged_from = 0i64;
    for op in ops {
        match op {
            Op::Append(records, codec) => {
                let base = log.log_end_offset();
                append(&log, &records, now, codec);
                for (i, r) in records.iter().enumerate() {
                    model.insert(base + i as i64, *r);
                }
            }
            Op::Roll => log.roll().unwrap(),
            Op::Clean(advance) => {
                unchanged_from = log.log_end_offset();
                now += advance;
                log.clean(&options(now)).unwrap();
            }
            Op::CrashInClean(budget) => {
                unchanged_from = log.log_end_offset();
                now += 700;
                let dying = Arc::new(DyingIo {
                    real: RealIo,
                    budget: AtomicU64::new(u64::MAX),
                });
                drop(log);
                let opened = Log::open_with(
                    &path,
                    config(),
                    LogOptions {
                        io: Arc::new(DyingIoHandle(dying.clone())),
                        ..LogOptions::default()
                    },
                )
                .unwrap();
                dying.budget.store(budget, Ordering::SeqCst);
                let _ = opened.clean(&options(now));
                drop(opened);
                let names: Vec<String> = std::fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                if names.iter().any(|n| n.ends_with(".log.swap")) {
                    SWAPS_LEFT.fetch_add(1, Ordering::SeqCst);
                }
                if names.iter().any(|n| n.ends_with(".log.cleaned")) {
                    CLEANED_LEFT.fetch_add(1, Ordering::SeqCst);
                }
                log = Log::open(&path, config()).unwrap();
                log.set_high_watermark(log.log_end_offset());
            }
            Op::Reopen => {
                log.close().unwrap();
                drop(log);
                log = Log::open(&path, config()).unwrap();
            }
        }
        check(&log, &model, unchanged_from);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 500, ..ProptestConfig::default() })]

    #[test]
    fn cleaning_keeps_the_latest_of_every_key_through_crashes(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}

#[test]
fn a_crash_at_every_step_of_a_pass_recovers_to_old_or_new_segments() {
    // Enough writes for several groups; then a crash after 0, 1, 2, ... file operations of the pass.
    for budget in 0..80u64 {
        let mut ops = Vec::new();
        for round in 0..6u8 {
            for k in 0..5u8 {
                ops.push(Op::Append(
                    vec![
                        (k, Some(round)),
                        (k + 1, if k == 2 { None } else { Some(round) }),
                    ],
                    round % 5,
                ));
            }
            // A key of its own per segment, so every group keeps something and is swapped, not dropped.
            ops.push(Op::Append(vec![(20 + round, Some(round))], 0));
            ops.push(Op::Roll);
        }
        ops.push(Op::CrashInClean(budget));
        ops.push(Op::Clean(2_000));
        run(ops);
    }
    assert!(
        SWAPS_LEFT.load(Ordering::SeqCst) > 0,
        "some crash left a swap to complete"
    );
    assert!(
        CLEANED_LEFT.load(Ordering::SeqCst) > 0,
        "some crash left a cleaned file to drop"
    );
}

#[test]
fn a_read_chunk_ending_inside_a_batch_length_is_read_on() {
    // Batches sized so that the cleaner's 1 MiB read chunk ends fewer than 12 bytes into a batch.
    let build = |key: u32, value_len: usize| {
        BatchBuilder::new()
            .timestamp_ms(1_000)
            .key_value(format!("{key:06}"), vec![b'v'; value_len])
            .build()
    };
    let value_len = (100..400)
        .find(|v| {
            let rest = (1usize << 20) % build(0, *v).len();
            (1..12).contains(&rest)
        })
        .expect("a size that ends a chunk inside a length field");
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path().join("t-0"),
        LogConfig {
            segment_bytes: 8 << 20,
            ..config()
        },
    )
    .unwrap();
    let batches = (3usize << 20) / build(0, value_len).len();
    for i in 0..batches {
        let mut b = build((i % 100) as u32, value_len);
        log.append_as_leader(&mut b, 0, 1_000).unwrap();
    }
    log.set_high_watermark(log.log_end_offset());
    log.roll().unwrap();
    let stats = log.clean(&options(2_000)).unwrap().unwrap();
    assert_eq!(
        stats.end_offset, batches as i64,
        "the whole segment was mapped"
    );
    assert_eq!(read_all(&log).len(), 100, "one record per key");
}
