//! SIGKILL during log compaction: a child process (this test binary re-executed in child mode) writes rounds
//! of updates to the same keys and cleans the log after each round, and is killed at random moments (mostly
//! while cleaning, which is where it spends its time). After each kill the log is reopened (completing or
//! dropping an interrupted swap) and checked: offsets strictly increase, every record is one that was written,
//! and every key's last record is from a round at least as recent as the last one acknowledged: cleaning
//! never loses what should survive.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_protocol::batch::{Batches, RECORD_BATCH_OVERHEAD};
use sluice_storage::log::CleanOptions;
use sluice_storage::records::{decompress, parse_raw_records};
use sluice_storage::{Log, LogConfig};
use sluice_testkit::rng::{seed_from_env, Rng};
use sluice_testkit::BatchBuilder;

const CHILD_DIR_ENV: &str = "SLUICE_CLEAN_CRASH_CHILD_DIR";
const KILLS: usize = 24;
const KEYS: u32 = 300;
const KEYS_PER_BATCH: u32 = 20;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 32 * 1024,
        index_interval_bytes: 1024,
        file_delete_delay_ms: 0,
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

fn value(key: u32, round: u32) -> Vec<u8> {
    let mut v = format!("{key}:{round}:").into_bytes();
    v.resize(60 + (key % 50) as usize, b'a' + (round % 26) as u8);
    v
}

/// Child mode: round after round, every key updated, the active segment rolled and the log cleaned; prints
/// `ACK <round>` once a round's appends returned.
#[test]
fn clean_crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let log = Log::open(&dir, config()).expect("child open");
    log.set_high_watermark(log.log_end_offset());
    let first_round = read_latest(&log).values().map(|r| r + 1).max().unwrap_or(0);
    let stdout = std::io::stdout();
    {
        let mut out = stdout.lock();
        writeln!(out, "READY").expect("stdout");
        out.flush().expect("stdout");
    }
    for round in first_round.. {
        for first in (0..KEYS).step_by(KEYS_PER_BATCH as usize) {
            let mut b = BatchBuilder::new().timestamp_ms(i64::from(round));
            for key in first..first + KEYS_PER_BATCH {
                b = b.key_value(key.to_string(), value(key, round));
            }
            let mut bytes = b.build();
            log.append_as_leader(&mut bytes, 0, 0)
                .expect("child append");
        }
        log.set_high_watermark(log.log_end_offset());
        {
            let mut out = stdout.lock();
            writeln!(out, "ACK {round}").expect("stdout");
            out.flush().expect("stdout");
        }
        log.roll().expect("child roll");
        log.clean(&CleanOptions::default()).expect("child clean");
    }
}

/// Every key's round as read last from the log, checking offsets and values on the way.
fn read_latest(log: &Log) -> HashMap<u32, u32> {
    let mut latest = HashMap::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    let mut last_offset = -1;
    while offset < end {
        let r = log.read(offset, 1 << 20, end).expect("read");
        if r.data.is_empty() {
            break;
        }
        for item in Batches::new(&r.data) {
            let (_, h) = item.expect("whole batch");
            h.validate().expect("valid batch");
            let body = &h.bytes()[RECORD_BATCH_OVERHEAD..h.size()];
            let raw = match h.compression() {
                0 => body.to_vec(),
                c => decompress(c, body, 1 << 24).expect("decompress"),
            };
            for rec in parse_raw_records(&raw).expect("records") {
                let o = h.base_offset() + i64::from(rec.offset_delta);
                assert!(o > last_offset, "offsets increase: {o} after {last_offset}");
                last_offset = o;
                let key: u32 = std::str::from_utf8(&raw[rec.key.expect("keyed")])
                    .unwrap()
                    .parse()
                    .unwrap();
                let v = &raw[rec.value.expect("no tombstones written")];
                let round: u32 = std::str::from_utf8(v)
                    .unwrap()
                    .split(':')
                    .nth(1)
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(v, value(key, round).as_slice(), "value of key {key} at {o}");
                latest.insert(key, round);
            }
            offset = h.next_offset();
        }
    }
    latest
}

fn verify(path: &Path, acked: Option<u32>) -> Option<u32> {
    let log = Log::open(path, config()).expect("reopen after kill");
    let latest = read_latest(&log);
    if let Some(acked) = acked {
        for key in 0..KEYS {
            let round = latest.get(&key).copied();
            assert!(
                round.is_some_and(|r| r >= acked),
                "key {key}: last round {round:?}, but round {acked} was acknowledged"
            );
        }
    }
    log.close().unwrap();
    latest.values().copied().min()
}

#[test]
fn sigkill_while_cleaning_loses_nothing_that_should_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compacted-0");
    let seed = seed_from_env("SLUICE_CLEAN_CRASH_SEED");
    println!("clean crash test seed {seed} (reproduce with SLUICE_CLEAN_CRASH_SEED={seed})");
    let mut rng = Rng::from_seed(seed);
    let exe = std::env::current_exe().unwrap();
    let mut acked: Option<u32> = None;
    let mut mid_clean = 0;
    for _ in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "clean_crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acked = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim_end().ends_with("READY") {
                    let _ = ready_tx.send(());
                }
                if let Some(n) = line
                    .strip_prefix("ACK ")
                    .and_then(|n| n.trim().parse().ok())
                {
                    acked = Some(n);
                }
            }
            acked
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child did not open the log");
        std::thread::sleep(Duration::from_millis(20 + rng.below(200)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the child must die by SIGKILL: {status:?}"
        );
        if let Some(n) = reader.join().unwrap() {
            acked = Some(acked.map_or(n, |a: u32| a.max(n)));
        }
        let names: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if names
            .iter()
            .any(|n| n.ends_with(".swap") || n.ends_with(".cleaned") || n.ends_with(".deleted"))
        {
            mid_clean += 1;
        }
        verify(&path, acked);
    }
    println!("{mid_clean} of {KILLS} kills left a pass's files behind");
    assert!(
        acked.is_some_and(|a| a >= 3),
        "the child got through several rounds: {acked:?}"
    );
}
