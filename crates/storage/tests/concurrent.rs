//! Concurrency: appenders, readers, retention and delete-records at once. Readers must only ever see
//! whole, CRC-valid batches with dense offsets, whatever the writers and the retention pass do.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sluice_protocol::batch::Batches;
use sluice_storage::{Log, LogConfig, ReadError};

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
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ r;
            while !stop.load(Ordering::Relaxed) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let (lso, leo) = (log.log_start_offset(), log.log_end_offset());
                let offset = lso + (seed % (leo - lso + 1) as u64) as i64;
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
