//! Log cleaner benchmark (not a timed test): how fast a pass cleans a compacted log (MB of dirty log per
//! second, against reading the same segment files in the same run), and what a running cleaner costs a
//! concurrent appender on another log (append throughput alone vs beside the cleaner, alternated).
//!
//! Run: `cargo bench -p sluice-storage --bench clean_bench` (env: `SLUICE_BENCH_MB` of dirty log per trial,
//! default 256; `SLUICE_BENCH_KEYS`, default 100000; `SLUICE_BENCH_TRIALS`, default 3; `SLUICE_BENCH_DIR`,
//! default the system temp dir). Warm the page cache first on a VM (see docs/benchmarks.md).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_protocol::batch::{build_batch, RecordKeyValue};
use sluice_storage::log::CleanOptions;
use sluice_storage::{Log, LogConfig};

const RECORDS_PER_BATCH: usize = 16;
const VALUE_BYTES: usize = 200;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn compacted_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.0,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

/// Writes `mb` of keyed records cycling over `keys` keys, then rolls: all of it is dirty and cleanable.
fn fill(log: &Log, mb: u64, keys: u64) -> u64 {
    let value = vec![b'v'; VALUE_BYTES];
    let mut key_no = 0u64;
    let mut written = 0u64;
    while written < mb << 20 {
        let keys_text: Vec<Vec<u8>> = (0..RECORDS_PER_BATCH)
            .map(|_| {
                key_no = (key_no + 1) % keys;
                format!("key-{key_no:08}").into_bytes()
            })
            .collect();
        let recs: Vec<RecordKeyValue<'_>> = keys_text
            .iter()
            .map(|k| (Some(k.as_slice()), Some(value.as_slice())))
            .collect();
        let mut batch = build_batch(1_700_000_000_000, &recs, -1, -1, -1);
        written += batch.len() as u64;
        log.append_as_leader(&mut batch, 0, 0).unwrap();
    }
    log.set_high_watermark(log.log_end_offset());
    log.roll().unwrap();
    log.flush().unwrap();
    written
}

/// Reads every segment file of `dir` once (the floor a pass cannot beat: it reads the dirty part twice).
fn read_files(dir: &Path) -> (u64, Duration) {
    let start = Instant::now();
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            bytes += std::fs::read(&path).unwrap().len() as u64;
        }
    }
    (bytes, start.elapsed())
}

/// Appends `mb` to a fresh delete-policy log; MB/s.
fn append_rate(dir: &Path, mb: u64) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    let log = Log::open(
        dir,
        LogConfig {
            file_delete_delay_ms: 0,
            ..LogConfig::default()
        },
    )
    .unwrap();
    let value = vec![b'v'; 1000];
    let recs: Vec<RecordKeyValue<'_>> = (0..RECORDS_PER_BATCH)
        .map(|_| (None, Some(value.as_slice())))
        .collect();
    let template = build_batch(1_700_000_000_000, &recs, -1, -1, -1);
    let start = Instant::now();
    let mut written = 0u64;
    while written < mb << 20 {
        let mut batch = template.clone();
        written += batch.len() as u64;
        log.append_as_leader(&mut batch, 0, 0).unwrap();
    }
    let rate = mb_per_s(written, start.elapsed());
    drop(log);
    let _ = std::fs::remove_dir_all(dir);
    rate
}

fn main() {
    let mb = env_u64("SLUICE_BENCH_MB", 256);
    let keys = env_u64("SLUICE_BENCH_KEYS", 100_000);
    let trials = env_u64("SLUICE_BENCH_TRIALS", 3).max(1);
    let root = std::env::var("SLUICE_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| std::env::temp_dir());
    let root = tempfile::Builder::new()
        .prefix("sluice-clean-bench")
        .tempdir_in(root)
        .unwrap();
    println!("log cleaner benchmark: {mb} MB of dirty log per trial, {keys} keys, {VALUE_BYTES} B values, {trials} trials");

    let mut clean_rates = Vec::new();
    let mut read_rates = Vec::new();
    let mut alone = Vec::new();
    let mut beside = Vec::new();
    for trial in 0..trials {
        let dir = root.path().join(format!("compacted-{trial}"));
        let log = Log::open(&dir, compacted_config()).unwrap();
        let dirty = fill(&log, mb, keys);
        let (read_bytes, read_time) = read_files(&dir);
        read_rates.push(mb_per_s(read_bytes, read_time));

        // Appends alone, then beside a pass over the compacted log (which is then re-dirtied for the next).
        alone.push(append_rate(&root.path().join("appender"), mb / 2));
        let running = Arc::new(AtomicBool::new(true));
        let cleaner = {
            let running = running.clone();
            let log_dir = dir.clone();
            std::thread::spawn(move || {
                let log = Log::open(&log_dir, compacted_config()).unwrap();
                log.set_high_watermark(log.log_end_offset());
                let start = Instant::now();
                let stats = log.clean(&CleanOptions::default()).unwrap().unwrap();
                let took = start.elapsed();
                running.store(false, Ordering::Release);
                log.close().unwrap();
                (stats, took)
            })
        };
        drop(log);
        let mut rates = Vec::new();
        while running.load(Ordering::Acquire) {
            rates.push(append_rate(&root.path().join("appender"), 32));
        }
        let (stats, took) = cleaner.join().unwrap();
        if !rates.is_empty() {
            beside.push(median(&mut rates.clone()));
        }
        let rate = mb_per_s(dirty, took);
        clean_rates.push(rate);
        println!(
            "trial {trial}: cleaned {:.0} MB -> {:.1} MB in {:.2} s ({rate:.0} MB/s of dirty log; {} records dropped, {} keys), \
             segment read {:.0} MB/s; appends alone {:.0} MB/s, beside the cleaner {:?} MB/s",
            dirty as f64 / 1e6,
            stats.bytes_written as f64 / 1e6,
            took.as_secs_f64(),
            stats.records_removed,
            stats.map_entries,
            read_rates[trial as usize],
            alone[trial as usize],
            rates.iter().map(|r| r.round()).collect::<Vec<_>>()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let clean = median(&mut clean_rates);
    let read = median(&mut read_rates);
    let a = median(&mut alone);
    println!("| measure | median |");
    println!("|---|---|");
    println!("| cleaner throughput (MB of dirty log / s) | {clean:.0} |");
    println!("| reading the same segments (MB/s, same run) | {read:.0} |");
    println!("| cleaner / read | {:.2}x |", clean / read);
    println!("| appends alone (MB/s) | {a:.0} |");
    if !beside.is_empty() {
        let b = median(&mut beside);
        println!("| appends beside a running cleaner (MB/s) | {b:.0} |");
        println!("| appends beside / alone | {:.2}x |", b / a);
    }
}
