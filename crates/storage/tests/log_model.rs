//! Property test: random sequences of append, read, high-watermark moves, truncate, roll, retention (by size
//! and by time), delete-records and reopen (clean and unclean) against an in-memory model of the log.

mod common;

use proptest::prelude::*;
use sluice_protocol::batch::{BatchHeader, Batches};
use sluice_storage::epoch::LeaderEpochCache;
use sluice_storage::io::FaultyIo;
use sluice_storage::{Log, LogConfig, LogOptions};

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: Vec<usize>,
        bump_epoch: bool,
    },
    Read {
        at: u16,
        max_bytes: u16,
        bounded: bool,
    },
    SetHw(u16),
    Truncate(u16),
    Roll,
    Retention {
        bytes: i64,
    },
    /// Time-based retention at "now" = the latest batch timestamp + 1 (batch timestamps are their tags).
    RetentionMs {
        ms: i64,
    },
    DeleteRecords(u16),
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop::collection::vec(1usize..5, 1..4), prop::bool::weighted(0.1))
            .prop_map(|(records, bump_epoch)| Op::Append { records, bump_epoch }),
        3 => (any::<u16>(), 1u16..2000, any::<bool>()).prop_map(|(at, max_bytes, bounded)| Op::Read { at, max_bytes, bounded }),
        2 => any::<u16>().prop_map(Op::SetHw),
        1 => any::<u16>().prop_map(Op::Truncate),
        1 => Just(Op::Roll),
        1 => (200i64..3000).prop_map(|bytes| Op::Retention { bytes }),
        1 => (-1i64..40).prop_map(|ms| Op::RetentionMs { ms }),
        1 => any::<u16>().prop_map(Op::DeleteRecords),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

#[derive(Debug, Default)]
struct Model {
    batches: Vec<(i64, i64, Vec<u8>)>,
    log_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
    epoch: i32,
    epochs: LeaderEpochCache,
}

impl Model {
    fn pick(&self, sel: u16) -> i64 {
        let span = (self.log_end_offset - self.log_start_offset + 1).max(1);
        self.log_start_offset + i64::from(sel) % span
    }
}

fn check(log: &Log, m: &Model) {
    assert_eq!(
        log.log_start_offset(),
        m.log_start_offset,
        "log start offset"
    );
    assert_eq!(log.log_end_offset(), m.log_end_offset, "log end offset");
    assert_eq!(log.high_watermark(), m.high_watermark, "high watermark");
    assert_eq!(log.latest_epoch(), m.epochs.latest_epoch(), "latest epoch");
    let all = common::read_all(log);
    let expected: Vec<_> = m
        .batches
        .iter()
        .filter(|b| b.1 >= m.log_start_offset)
        .cloned()
        .collect();
    assert_eq!(all.len(), expected.len(), "batch count");
    for (got, want) in all.iter().zip(&expected) {
        assert_eq!(got, want, "batch bytes");
    }
}

fn run(ops: Vec<Op>, segment_bytes: u64, index_interval_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m-0");
    let config = LogConfig {
        segment_bytes,
        index_interval_bytes,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    };
    // fsync is skipped (the page cache is never lost here); it keeps 64 cases fast on a busy disk.
    let io = FaultyIo::default();
    io.faults
        .skip_fsync
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let options = LogOptions {
        io: std::sync::Arc::new(io),
        ..LogOptions::default()
    };
    let mut log = Log::open_with(&path, config.clone(), options.clone()).unwrap();
    let mut m = Model::default();
    let mut tag = 0u64;
    for op in ops {
        match op {
            Op::Append {
                records,
                bump_epoch,
            } => {
                if bump_epoch {
                    m.epoch += 1;
                }
                let mut buf = Vec::new();
                for r in &records {
                    tag += 1;
                    buf.extend(common::batch(*r, tag, tag as i64));
                }
                let info = log.append_as_leader(&mut buf, m.epoch, 0).unwrap();
                assert_eq!(info.base_offset, m.log_end_offset);
                m.epochs.assign(m.epoch, info.base_offset);
                for item in Batches::new(&buf) {
                    let (_, h) = item.unwrap();
                    m.batches
                        .push((h.base_offset(), h.last_offset(), h.bytes().to_vec()));
                }
                m.log_end_offset = info.last_offset + 1;
            }
            Op::Read {
                at,
                max_bytes,
                bounded,
            } => {
                let offset = m.pick(at);
                let bound = if bounded { m.high_watermark } else { i64::MAX };
                let r = log.read(offset, max_bytes as usize, bound).unwrap();
                let limit = bound.min(m.log_end_offset);
                let expected: Vec<_> = m
                    .batches
                    .iter()
                    .filter(|b| offset < limit && b.1 >= offset && b.0 < limit)
                    .collect();
                let got: Vec<_> = Batches::new(&r.data).map(|b| b.unwrap().1).collect();
                if expected.is_empty() {
                    assert!(got.is_empty());
                } else {
                    assert!(!got.is_empty(), "at least one batch (KIP-74)");
                    assert!(got.len() <= expected.len());
                    for (g, w) in got.iter().zip(&expected) {
                        assert_eq!(g.bytes(), &w.2[..]);
                    }
                    assert!(r.data.len() <= (max_bytes as usize).max(expected[0].2.len()));
                }
            }
            Op::SetHw(sel) => {
                // The leader path takes offsets up to the log end; lower ones are ignored.
                let hw = m.pick(sel).min(m.log_end_offset);
                log.set_high_watermark(hw);
                m.high_watermark = m.high_watermark.max(hw);
            }
            Op::Truncate(sel) => {
                let target = m.pick(sel);
                log.truncate_to(target).unwrap();
                if target < m.log_end_offset {
                    m.batches.retain(|b| b.1 < target);
                    m.log_end_offset = m
                        .batches
                        .last()
                        .map_or(m.log_start_offset.min(target), |b| b.1 + 1);
                    if m.batches.iter().all(|b| b.1 < m.log_start_offset) {
                        // Nothing readable remains: the log end is the start of the removed batch.
                        m.log_end_offset = log.log_end_offset();
                    }
                    m.high_watermark = m.high_watermark.min(m.log_end_offset);
                    m.log_start_offset = m.log_start_offset.min(m.log_end_offset);
                    m.epochs.truncate_from_end(m.log_end_offset);
                }
            }
            Op::Roll => log.roll().unwrap(),
            Op::Retention { bytes } => {
                log.update_config(LogConfig {
                    retention_bytes: bytes,
                    ..config.clone()
                });
                log.apply_retention(0).unwrap();
                log.update_config(config.clone());
                let lso = log.log_start_offset();
                assert!(lso >= m.log_start_offset && lso <= m.high_watermark);
                assert!(
                    lso == m.log_start_offset
                        || lso == m.log_end_offset
                        || m.batches.iter().any(|b| b.0 == lso),
                    "retention cuts at a batch boundary"
                );
                if lso > m.log_start_offset {
                    m.log_start_offset = lso;
                    m.batches.retain(|b| b.1 >= lso);
                    m.epochs.truncate_from_start(lso);
                    m.epochs.truncate_from_end(m.log_end_offset);
                }
            }
            Op::RetentionMs { ms } => {
                let now_ms = tag as i64 + 1;
                log.update_config(LogConfig {
                    retention_ms: ms,
                    ..config.clone()
                });
                log.apply_retention(now_ms).unwrap();
                log.update_config(config.clone());
                let lso = log.log_start_offset();
                assert!(lso >= m.log_start_offset && lso <= m.high_watermark);
                assert!(
                    lso == m.log_start_offset
                        || lso == m.log_end_offset
                        || m.batches.iter().any(|b| b.0 == lso),
                    "retention cuts at a batch boundary"
                );
                let max_timestamp =
                    |b: &(i64, i64, Vec<u8>)| BatchHeader::new(&b.2).unwrap().max_timestamp();
                let live = || m.batches.iter().filter(|b| b.1 >= m.log_start_offset);
                if ms < 0 {
                    assert_eq!(lso, m.log_start_offset, "retention.ms=-1 keeps everything");
                } else {
                    // Kafka deletes a segment when now - its largest timestamp > retention.ms.
                    let cutoff_ms = now_ms - ms;
                    // (A batch that DeleteRecords cut into stays until retention moves the start past it.)
                    for b in live().filter(|b| lso > m.log_start_offset && b.1 < lso) {
                        assert!(
                            max_timestamp(b) < cutoff_ms,
                            "deleted batch {}..={} (timestamp {}) is not older than {cutoff_ms}",
                            b.0,
                            b.1,
                            max_timestamp(b)
                        );
                    }
                    // When everything is expired and below the high watermark, every segment goes, the active
                    // one included (Kafka rolls a new empty one): the log starts at its end.
                    if m.high_watermark == m.log_end_offset
                        && live().all(|b| max_timestamp(b) < cutoff_ms)
                    {
                        assert_eq!(lso, m.log_end_offset, "every expired segment is deleted");
                    }
                }
                if lso > m.log_start_offset {
                    m.log_start_offset = lso;
                    m.batches.retain(|b| b.1 >= lso);
                    m.epochs.truncate_from_start(lso);
                    m.epochs.truncate_from_end(m.log_end_offset);
                }
            }
            Op::DeleteRecords(sel) => {
                let target = m.pick(sel).min(m.high_watermark);
                let lso = log.delete_records_before(target).unwrap();
                if target > m.log_start_offset {
                    m.log_start_offset = target;
                    m.epochs.truncate_from_start(target);
                    m.epochs.truncate_from_end(m.log_end_offset);
                }
                assert_eq!(lso, m.log_start_offset);
                m.batches.retain(|b| b.1 >= m.log_start_offset);
            }
            Op::Reopen { clean } => {
                if clean {
                    log.close().unwrap();
                }
                drop(log);
                // As the LogManager does: a clean shutdown checkpoints the high watermark; after a crash
                // there may be no entry (the log end offset) or an older one.
                let checkpointed = if clean {
                    Some(m.high_watermark)
                } else {
                    [None, Some(m.log_start_offset)][(tag % 2) as usize]
                };
                let reopen = LogOptions {
                    high_watermark: checkpointed,
                    ..options.clone()
                };
                log = Log::open_with(&path, config.clone(), reopen).unwrap();
                let hw = log.high_watermark();
                if clean {
                    assert_eq!(hw, m.high_watermark, "checkpointed high watermark restored");
                } else if checkpointed.is_none() {
                    assert_eq!(
                        hw,
                        log.log_end_offset(),
                        "no checkpoint: the log end offset"
                    );
                }
                assert!(hw >= m.log_start_offset && hw <= log.log_end_offset());
                m.high_watermark = hw;
            }
        }
        check(&log, &m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        ops in prop::collection::vec(op(), 1..60),
        segment_bytes in 150u64..1500,
        index_interval_bytes in 1u64..400,
    ) {
        run(ops, segment_bytes, index_interval_bytes);
    }
}
