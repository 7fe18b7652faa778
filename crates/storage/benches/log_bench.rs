//! Storage benchmark (not a timed test): append and read throughput of the partition log against raw
//! `write()`/`pread()` of the same bytes on the same disk in the same run, and group commit under
//! `flush.messages=1` with concurrent appenders.
//!
//! Run: `cargo bench -p sluice-storage --bench log_bench` (env: `SLUICE_BENCH_MB` per trial, default 64;
//! `SLUICE_BENCH_TRIALS`, default 9;
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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

/// Wall-clock and on-CPU (user + system, this thread) time of some work.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    wall: Duration,
    cpu: Duration,
}

impl Span {
    const ZERO: Span = Span {
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
    };
}

impl std::ops::AddAssign for Span {
    fn add_assign(&mut self, other: Span) {
        self.wall += other.wall;
        self.cpu += other.cpu;
    }
}

/// CPU time consumed by the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
#[allow(unsafe_code)]
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call; the clock id is a
    // constant the kernel supports for every thread.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A starting point for a [`Span`].
struct Stamp {
    wall: Instant,
    cpu: Duration,
}

impl Stamp {
    fn now() -> Stamp {
        Stamp {
            wall: Instant::now(),
            cpu: thread_cpu_time(),
        }
    }
    fn elapsed(&self) -> Span {
        Span {
            wall: self.wall.elapsed(),
            cpu: thread_cpu_time().saturating_sub(self.cpu),
        }
    }
}

/// Batches written or read per timed step; steps of the raw file and the log alternate (and alternate
/// which goes first), so both see the same machine conditions within milliseconds.
const STEP_BATCHES: u64 = 64;

/// Writes `count` batches to a raw file with `write()` and appends them to a fresh log, interleaved in
/// steps; returns (raw time, log time, the log).
fn interleaved_write(
    raw_path: &Path,
    log_dir: &Path,
    batch: &[u8],
    count: u64,
) -> (Span, Span, Log) {
    let mut raw = File::create(raw_path).expect("create raw file");
    let log = Log::open(log_dir, LogConfig::default()).expect("open log");
    let mut buf = batch.to_vec();
    let (mut raw_t, mut log_t) = (Span::ZERO, Span::ZERO);
    let mut done = 0;
    let mut step = 0u64;
    while done < count {
        let n = STEP_BATCHES.min(count - done);
        let mut raw_step = || {
            let start = Stamp::now();
            for _ in 0..n {
                raw.write_all(batch).expect("raw write");
            }
            start.elapsed()
        };
        let mut log_step = || {
            let start = Stamp::now();
            for _ in 0..n {
                log.append_as_leader(&mut buf, 0, 0).expect("append");
            }
            start.elapsed()
        };
        if step.is_multiple_of(2) {
            raw_t += raw_step();
            log_t += log_step();
        } else {
            log_t += log_step();
            raw_t += raw_step();
        }
        done += n;
        step += 1;
    }
    raw.sync_all().expect("sync raw file (untimed)");
    log.flush().expect("flush log (untimed)");
    (raw_t, log_t, log)
}

/// Reads the raw file with 1 MiB `pread`s into a reused buffer and the log with 1 MiB `Log::read`s,
/// interleaved; returns (raw time, log time, bytes the log returned).
fn interleaved_read(raw_path: &Path, log: &Log, len: u64) -> (Span, Span, u64) {
    let f = File::open(raw_path).expect("open raw file");
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let leo = log.log_end_offset();
    let (mut raw_t, mut log_t) = (Span::ZERO, Span::ZERO);
    let (mut pos, mut offset, mut log_bytes, mut sum) = (0u64, 0i64, 0u64, 0u64);
    let mut step = 0u64;
    while pos < len || offset < leo {
        let mut raw_step = || {
            if pos >= len {
                return Span::ZERO;
            }
            let start = Stamp::now();
            let n = f.read_at(&mut buf, pos).expect("pread");
            let d = start.elapsed();
            assert!(n > 0);
            sum = sum.wrapping_add(u64::from(buf[n - 1]));
            pos += n as u64;
            d
        };
        let mut log_step = || {
            if offset >= leo {
                return Span::ZERO;
            }
            let start = Stamp::now();
            let r = log.read(offset, READ_CHUNK_BYTES, i64::MAX).expect("read");
            let d = start.elapsed();
            for item in sluice_protocol::batch::Batches::new(&r.data) {
                let (_, h) = item.expect("whole batch");
                offset = h.next_offset();
            }
            log_bytes += r.data.len() as u64;
            d
        };
        if step.is_multiple_of(2) {
            raw_t += raw_step();
            log_t += log_step();
        } else {
            log_t += log_step();
            raw_t += raw_step();
        }
        step += 1;
    }
    assert!(sum > 0);
    (raw_t, log_t, log_bytes)
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
    let total_mb = env_u64("SLUICE_BENCH_MB", 64);
    let trials = env_u64("SLUICE_BENCH_TRIALS", 9) as usize;
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

    let crc_start = Instant::now();
    let mut crc = 0u32;
    for _ in 0..2000 {
        crc ^= crc32c::crc32c(std::hint::black_box(&batch[21..]));
    }
    let crc_ns = crc_start.elapsed().as_nanos() as f64 / 2000.0;
    println!(
        "CRC32C of one batch (validation cost): {crc_ns:.0} ns ({:.1} GiB/s) [{crc:08x}]",
        batch.len() as f64 / crc_ns / 1.073_741_824
    );
    let mut write_ratios = Vec::new();
    let mut read_ratios = Vec::new();
    let (mut write_cpu_ratios, mut read_cpu_ratios) = (Vec::new(), Vec::new());
    let (mut raw_w, mut log_w, mut raw_r, mut log_r) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for trial in 0..trials {
        let raw_path = root.path().join(format!("raw-{trial}.bin"));
        let log_dir = root.path().join(format!("bench-{trial}"));
        let (rw, lw, log) = interleaved_write(&raw_path, &log_dir, &batch, count);
        let (rr, lr, read_bytes) = interleaved_read(&raw_path, &log, total);
        assert_eq!(read_bytes, total, "the log returned every byte");
        println!(
            "trial {trial}: write raw {:.0} MiB/s log {:.0} MiB/s (cpu ratio {:.2}) | read raw {:.0} MiB/s log {:.0} MiB/s (cpu ratio {:.2})",
            mib_per_s(total, rw.wall),
            mib_per_s(total, lw.wall),
            rw.cpu.as_secs_f64() / lw.cpu.as_secs_f64(),
            mib_per_s(total, rr.wall),
            mib_per_s(total, lr.wall),
            rr.cpu.as_secs_f64() / lr.cpu.as_secs_f64()
        );
        println!(
            "         write off-CPU raw {:.0} ms log {:.0} ms, on-CPU raw {:.0} ms log {:.0} ms",
            rw.wall.saturating_sub(rw.cpu).as_secs_f64() * 1e3,
            lw.wall.saturating_sub(lw.cpu).as_secs_f64() * 1e3,
            rw.cpu.as_secs_f64() * 1e3,
            lw.cpu.as_secs_f64() * 1e3
        );
        write_ratios.push(rw.wall.as_secs_f64() / lw.wall.as_secs_f64());
        read_ratios.push(rr.wall.as_secs_f64() / lr.wall.as_secs_f64());
        write_cpu_ratios.push(rw.cpu.as_secs_f64() / lw.cpu.as_secs_f64());
        read_cpu_ratios.push(rr.cpu.as_secs_f64() / lr.cpu.as_secs_f64());
        raw_w.push(mib_per_s(total, rw.wall));
        log_w.push(mib_per_s(total, lw.wall));
        raw_r.push(mib_per_s(total, rr.wall));
        log_r.push(mib_per_s(total, lr.wall));
        drop(log);
        let _ = std::fs::remove_file(&raw_path);
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    println!(
        "append (no fsync), median of {trials}: log {:.0} MiB/s ({:.0} batches/s) vs raw write() {:.0} MiB/s -> ratio {:.2} (target >= 0.85)",
        median(&mut log_w),
        median(&mut log_w) * 1024.0 * 1024.0 / batch.len() as f64,
        median(&mut raw_w),
        median(&mut write_ratios)
    );
    println!(
        "read (1 MiB per read), median of {trials}: log {:.0} MiB/s vs raw pread {:.0} MiB/s -> ratio {:.2} (target >= 0.85)",
        median(&mut log_r),
        median(&mut raw_r),
        median(&mut read_ratios)
    );
    println!(
        "on-CPU time ratios (raw / log, median; independent of other load on the machine): append {:.2}, read {:.2}",
        median(&mut write_cpu_ratios),
        median(&mut read_cpu_ratios)
    );
    for appenders in [1usize, 4] {
        let (aps, fps) = group_commit(root.path(), appenders, secs);
        println!(
            "flush.messages=1, {appenders} appender(s), 1 KiB batches: {aps:.0} appends/s, {fps:.0} fsyncs/s ({:.2} appends per fsync)",
            aps / fps.max(1e-9)
        );
    }
}
