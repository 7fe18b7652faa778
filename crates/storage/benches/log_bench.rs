//! Storage benchmark (not a timed test): append and read throughput of the partition log against raw
//! `write()`/`pread()` of the same bytes on the same disk in the same run, and group commit under
//! `flush.messages=1` with concurrent appenders.
//!
//! Run: `cargo bench -p sluice-storage --bench log_bench` (env: `SLUICE_BENCH_MB`, default 256;
//! `SLUICE_BENCH_DIR`, default the system temp dir; `SLUICE_BENCH_SECS` for group commit, default 2).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_protocol::batch::{build_batch, RecordKeyValue};
use sluice_storage::{Log, LogConfig};

const RECORDS_PER_BATCH: usize = 16;
const RECORD_VALUE_BYTES: usize = 1000;
const READ_CHUNK_BYTES: usize = 1 << 20;
const ROUNDS: usize = 3;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn make_batch(records: usize, value_bytes: usize) -> Vec<u8> {
    let value = vec![b'v'; value_bytes];
    let recs: Vec<RecordKeyValue<'_>> = (0..records)
        .map(|_| (None, Some(value.as_slice())))
        .collect();
    build_batch(1_700_000_000_000, &recs, -1, -1, -1)
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn raw_write(path: &Path, batch: &[u8], count: u64) -> Duration {
    let mut f = File::create(path).expect("create raw file");
    let start = Instant::now();
    for _ in 0..count {
        f.write_all(batch).expect("raw write");
    }
    let d = start.elapsed();
    f.sync_all().expect("sync raw file (untimed)");
    d
}

fn log_append(dir: &Path, batch: &[u8], count: u64) -> (Log, Duration) {
    let log = Log::open(dir, LogConfig::default()).expect("open log");
    let mut buf = batch.to_vec();
    let start = Instant::now();
    for _ in 0..count {
        log.append_as_leader(&mut buf, 0, 0).expect("append");
    }
    let d = start.elapsed();
    log.flush().expect("flush (untimed)");
    (log, d)
}

fn raw_pread(path: &Path, len: u64) -> Duration {
    let f = File::open(path).expect("open raw file");
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let start = Instant::now();
    let mut pos = 0u64;
    let mut sum = 0u64;
    while pos < len {
        let n = f.read_at(&mut buf, pos).expect("pread");
        if n == 0 {
            break;
        }
        sum = sum.wrapping_add(u64::from(buf[n - 1]));
        pos += n as u64;
    }
    let d = start.elapsed();
    assert!(pos == len && sum > 0);
    d
}

fn log_read(log: &Log) -> (Duration, u64) {
    let leo = log.log_end_offset();
    let start = Instant::now();
    let mut offset = 0i64;
    let mut bytes = 0u64;
    while offset < leo {
        let r = log.read(offset, READ_CHUNK_BYTES, i64::MAX).expect("read");
        let mut last_next = offset;
        for item in sluice_protocol::batch::Batches::new(&r.data) {
            let (_, h) = item.expect("whole batch");
            last_next = h.next_offset();
        }
        bytes += r.data.len() as u64;
        offset = last_next;
    }
    (start.elapsed(), bytes)
}

fn group_commit(root: &Path, appenders: usize, secs: u64) -> (f64, f64) {
    let dir = root.join(format!("gc{appenders}-0"));
    let config = LogConfig {
        flush_messages: Some(1),
        ..LogConfig::default()
    };
    let log = Arc::new(Log::open(&dir, config).expect("open"));
    let batch = make_batch(1, RECORD_VALUE_BYTES);
    let stop = Arc::new(AtomicBool::new(false));
    let appends = Arc::new(AtomicU64::new(0));
    let fsyncs_before = log.fsync_count();
    let start = Instant::now();
    let handles: Vec<_> = (0..appenders)
        .map(|_| {
            let (log, stop, appends, mut buf) =
                (log.clone(), stop.clone(), appends.clone(), batch.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    log.append_as_leader(&mut buf, 0, 0).expect("append");
                    appends.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("appender");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let fsyncs = log.fsync_count() - fsyncs_before;
    let n = appends.load(Ordering::Relaxed);
    assert_eq!(
        log.recovery_point(),
        log.log_end_offset(),
        "every acknowledged append is durable"
    );
    (n as f64 / elapsed, fsyncs as f64 / elapsed)
}

fn main() {
    let total_mb = env_u64("SLUICE_BENCH_MB", 256);
    let secs = env_u64("SLUICE_BENCH_SECS", 2);
    let root = match std::env::var("SLUICE_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).expect("bench dir"),
        Err(_) => tempfile::tempdir().expect("bench dir"),
    };
    let batch = make_batch(RECORDS_PER_BATCH, RECORD_VALUE_BYTES);
    let count = total_mb * 1024 * 1024 / batch.len() as u64;
    let total = count * batch.len() as u64;
    println!(
        "sluice-storage bench: {count} batches of {} bytes ({RECORDS_PER_BATCH} x {RECORD_VALUE_BYTES}-byte records), {} MiB, dir {}",
        batch.len(),
        total / (1024 * 1024),
        root.path().display()
    );

    let (mut best_raw_w, mut best_log_w) = (Duration::MAX, Duration::MAX);
    let (mut best_raw_r, mut best_log_r) = (Duration::MAX, Duration::MAX);
    for round in 0..ROUNDS {
        let raw_path = root.path().join(format!("raw-{round}.bin"));
        let log_dir = root.path().join(format!("bench-{round}"));
        // Alternate the order so that neither side always runs on a warmer page cache.
        let (rw, (log, lw)) = if round % 2 == 0 {
            let rw = raw_write(&raw_path, &batch, count);
            (rw, log_append(&log_dir, &batch, count))
        } else {
            let l = log_append(&log_dir, &batch, count);
            (raw_write(&raw_path, &batch, count), l)
        };
        let (rr, (lr, read_bytes)) = if round % 2 == 0 {
            (raw_pread(&raw_path, total), log_read(&log))
        } else {
            let l = log_read(&log);
            (raw_pread(&raw_path, total), l)
        };
        assert_eq!(read_bytes, total, "the log returned every byte");
        println!(
            "round {round}: write raw {:.0} MiB/s log {:.0} MiB/s | read raw {:.0} MiB/s log {:.0} MiB/s",
            mib_per_s(total, rw),
            mib_per_s(total, lw),
            mib_per_s(total, rr),
            mib_per_s(total, lr)
        );
        best_raw_w = best_raw_w.min(rw);
        best_log_w = best_log_w.min(lw);
        best_raw_r = best_raw_r.min(rr);
        best_log_r = best_log_r.min(lr);
        drop(log);
        let _ = std::fs::remove_file(&raw_path);
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    let append_ratio = best_raw_w.as_secs_f64() / best_log_w.as_secs_f64();
    let read_ratio = best_raw_r.as_secs_f64() / best_log_r.as_secs_f64();
    println!(
        "append (no fsync): log {:.0} MiB/s ({:.0} batches/s) vs raw write() {:.0} MiB/s -> ratio {:.2} (target >= 0.85)",
        mib_per_s(total, best_log_w),
        count as f64 / best_log_w.as_secs_f64(),
        mib_per_s(total, best_raw_w),
        append_ratio
    );
    println!(
        "read (1 MiB per read): log {:.0} MiB/s vs raw pread {:.0} MiB/s -> ratio {:.2} (target >= 0.85)",
        mib_per_s(total, best_log_r),
        mib_per_s(total, best_raw_r),
        read_ratio
    );
    for appenders in [1usize, 4] {
        let (aps, fps) = group_commit(root.path(), appenders, secs);
        println!(
            "flush.messages=1, {appenders} appender(s), 1 KiB batches: {aps:.0} appends/s, {fps:.0} fsyncs/s ({:.2} appends per fsync)",
            aps / fps.max(1e-9)
        );
    }
}
