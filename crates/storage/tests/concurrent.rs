//! Concurrency: appenders, readers, retention and delete-records at once. Readers must only ever see
//! whole, CRC-valid batches with dense offsets, whatever the writers and the retention pass do. Concurrent
//! appenders with `flush.messages=1` share fsyncs (group commit).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use sluice_protocol::batch::Batches;
use sluice_storage::{Log, LogConfig, ReadError};
use sluice_testkit::Rng;

#[test]
fn readers_never_see_partial_batches_during_appends_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 2048,
        retention_bytes: 8192,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    };
    let log = Arc::new(Log::open(dir.path().join("c-0"), cfg).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..2u64 {
        let (log, stop) = (log.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 3000 {
                let mut b = common::batch(1 + (i % 4) as usize, t * 100_000 + i, i as i64);
                log.append_as_leader(&mut b, 0, 0).unwrap();
                log.set_high_watermark(log.log_end_offset());
                i += 1;
            }
        }));
    }
    for r in 0..2u64 {
        let (log, stop) = (log.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut rng = Rng::from_seed(0x9e37_79b9_7f4a_7c15u64 ^ r);
            while !stop.load(Ordering::Relaxed) {
                let (lso, leo) = (log.log_start_offset(), log.log_end_offset());
                let offset = lso + rng.below((leo - lso + 1) as u64) as i64;
                match log.read(offset, 4096, i64::MAX) {
                    Ok(res) => {
                        let mut prev: Option<i64> = None;
                        for item in Batches::new(&res.data) {
                            let (_, h) = item.expect("whole batch");
                            h.validate().expect("valid CRC");
                            if let Some(p) = prev {
                                assert_eq!(h.base_offset(), p, "dense offsets");
                            }
                            prev = Some(h.next_offset());
                        }
                        reads += 1;
                    }
                    // Retention may move the start past the chosen offset between the two calls.
                    Err(ReadError::OffsetOutOfRange { .. }) => {}
                    Err(e) => panic!("read failed: {e}"),
                }
            }
            assert!(reads > 0);
        }));
    }
    {
        let (log, stop) = (log.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let mut passes = 0;
            while !stop.load(Ordering::Relaxed) {
                log.apply_retention(0).unwrap();
                let hw = log.high_watermark();
                if passes % 5 == 0 && hw > 0 {
                    log.delete_records_before((hw - 3).max(log.log_start_offset()))
                        .unwrap();
                }
                passes += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }));
    }
    let appenders: Vec<_> = handles.drain(..2).collect();
    for h in appenders {
        h.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    assert!(log.log_start_offset() > 0, "retention ran");
    let all = common::read_all(&log);
    assert_eq!(all.last().map(|b| b.1 + 1), Some(log.log_end_offset()));
}

#[test]
fn concurrent_appenders_with_flush_messages_1_share_fsyncs() {
    const THREADS: u64 = 4;
    const APPENDS: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        flush_messages: Some(1),
        ..LogConfig::default()
    };
    let log = Arc::new(Log::open(dir.path().join("g-0"), cfg).unwrap());
    let fsyncs_before = log.fsync_count();
    let start = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (log, start) = (log.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..APPENDS {
                    let mut b = common::batch(1, t * 100_000 + i, i as i64);
                    let info = log.append_as_leader(&mut b, 0, 0).unwrap();
                    // flush.messages=1: an append returns only once its batch is durable.
                    assert!(
                        log.recovery_point() > info.last_offset,
                        "append returned before its fsync"
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let appends = THREADS * APPENDS;
    let fsyncs = log.fsync_count() - fsyncs_before;
    eprintln!("{appends} appends, {fsyncs} fsyncs");
    // One fsync per append would be `appends` (or more, with directory and checkpoint syncs); appenders that
    // wait for a running fsync are covered by the next one instead.
    assert!(
        fsyncs < appends,
        "no group commit: {fsyncs} fsyncs for {appends} appends"
    );
    assert_eq!(log.log_end_offset(), appends as i64);
    assert_eq!(
        log.recovery_point(),
        log.log_end_offset(),
        "everything appended is durable"
    );
    assert_eq!(log.flush().unwrap(), log.log_end_offset());
}
