//! SIGKILL crash tests: a child process (this test binary re-executed in child mode) appends in a loop
//! and is killed at random moments; after each kill the log is reopened and checked: every acknowledged
//! batch is present byte for byte, every batch is whole and CRC-valid, offsets are dense, no partial
//! batch is readable and the LEO matches the valid data. The child is an idempotent producer (KIP-98), so each
//! reopen also checks that the producer state was rebuilt: a retry of the last acknowledged batch is caught
//! as a duplicate with its original offsets, and a sequence gap is refused.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::read_all;
use sluice_protocol::batch::{set_base_offset, set_partition_leader_epoch};
use sluice_storage::{AppendError, Log, LogConfig, ProducerError};
use sluice_testkit::rng::{seed_from_env, Rng};
use sluice_testkit::BatchBuilder;

/// The child's producer id; its sequence numbers equal the offsets (it is the only writer).
const PRODUCER_ID: i64 = 4242;

const CHILD_DIR_ENV: &str = "SLUICE_CRASH_CHILD_DIR";
const CHILD_FLUSH_ENV: &str = "SLUICE_CRASH_CHILD_FLUSH";
const KILLS: usize = 24;

fn config(flush_every_append: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        flush_messages: flush_every_append.then_some(1),
        retention_bytes: 256 * 1024,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

/// The batch the child appends at `base_offset`: content derived from the offset, 1..=5 records, some
/// of them large so that a kill can land inside a multi-page write.
fn expected_batch(base_offset: i64) -> Vec<u8> {
    let records = 1 + (base_offset % 5) as usize;
    let value_bytes = if base_offset % 7 == 0 { 9000 } else { 40 };
    let values: Vec<Vec<u8>> = (0..records)
        .map(|i| {
            let mut v = format!("{base_offset}:{i}:").into_bytes();
            v.resize(value_bytes, b'a' + (base_offset % 26) as u8);
            v
        })
        .collect();
    BatchBuilder::new()
        .timestamp_ms(base_offset)
        .values(values)
        .idempotent(PRODUCER_ID, 0, base_offset as i32)
        .build()
}

/// Child mode: append forever, printing `ACK <next offset>` after each append returns.
#[test]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let flush = std::env::var(CHILD_FLUSH_ENV).is_ok_and(|v| v == "1");
    let log = Log::open(&dir, config(flush)).expect("child open");
    let stdout = std::io::stdout();
    {
        let mut out = stdout.lock();
        writeln!(out, "READY").expect("stdout");
        out.flush().expect("stdout");
    }
    loop {
        let base = log.log_end_offset();
        let mut b = expected_batch(base);
        let info = log.append_as_leader(&mut b, 3, base).expect("child append");
        assert_eq!(info.base_offset, base);
        if base % 64 == 0 {
            // Exercise retention (segment renames, checkpoints) under the kills too.
            log.set_high_watermark(info.last_offset + 1);
            log.apply_retention(0).expect("child retention");
        }
        let mut out = stdout.lock();
        writeln!(out, "ACK {}", info.last_offset + 1).expect("stdout");
        out.flush().expect("stdout");
    }
}

fn verify(path: &Path, acked: i64, flush: bool, last_start: &mut i64) -> i64 {
    let log = Log::open(path, config(flush)).expect("reopen after kill");
    let leo = log.log_end_offset();
    let start = log.log_start_offset();
    assert!(
        start >= *last_start,
        "log start offset moved back: {start} < {last_start}"
    );
    assert!(start <= leo);
    *last_start = start;
    assert!(
        leo >= acked,
        "LEO {leo} below the last acknowledged offset {acked}"
    );
    let batches = read_all(&log);
    let valid_end = batches.last().map_or(log.log_start_offset(), |b| b.1 + 1);
    assert_eq!(leo, valid_end, "LEO must match the valid data");
    for (base, _, bytes) in &batches {
        let mut want = expected_batch(*base);
        set_base_offset(&mut want, *base);
        set_partition_leader_epoch(&mut want, 3);
        assert_eq!(
            bytes, &want,
            "batch at {base} differs from what was appended"
        );
    }
    // The tail is really gone from the file: a read at LEO returns nothing.
    assert!(log.read(leo, 1 << 20, i64::MAX).unwrap().data.is_empty());
    // Producer state rebuilt from snapshot + tail: the last batch is a duplicate, a gap is refused.
    if let Some((base, last, _)) = batches.last() {
        let state = log.producer_state();
        let entry = state.get(PRODUCER_ID).expect("producer state rebuilt");
        assert_eq!(entry.batches.back().unwrap().last_sequence as i64, *last);
        match log.append_as_leader(&mut expected_batch(*base), 3, 0) {
            Err(AppendError::DuplicateSequence {
                base_offset,
                last_offset,
                ..
            }) => assert_eq!((base_offset, last_offset), (*base, *last)),
            other => panic!("retry of the batch at {base} not caught as a duplicate: {other:?}"),
        }
        assert!(matches!(
            log.append_as_leader(&mut expected_batch(leo + 1), 3, 0),
            Err(AppendError::Producer(
                ProducerError::OutOfOrderSequence { .. }
            ))
        ));
        assert_eq!(
            log.log_end_offset(),
            leo,
            "refused batches are not appended"
        );
    }
    leo
}

#[test]
fn crash_sigkill_recover_keeps_every_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash-0");
    let seed = seed_from_env("SLUICE_CRASH_SEED");
    println!("crash test seed {seed} (reproduce with SLUICE_CRASH_SEED={seed})");
    let mut rng = Rng::from_seed(seed);
    let exe = std::env::current_exe().unwrap();
    let mut last_leo = 0;
    let mut last_start = 0;
    for kill in 0..KILLS {
        let flush = kill % 2 == 0;
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, &path)
            .env(CHILD_FLUSH_ENV, if flush { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acked = 0i64;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print its "test ... " prefix on the same line.
                if line.trim_end().ends_with("READY") {
                    let _ = ready_tx.send(());
                }
                if let Some(n) = line
                    .strip_prefix("ACK ")
                    .and_then(|n| n.trim().parse().ok())
                {
                    acked = n;
                }
            }
            acked
        });
        // Wait for the child to have opened (recovered) the log, then kill it at a random moment.
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child did not open the log");
        std::thread::sleep(Duration::from_millis(5 + rng.below(40)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the child must die by SIGKILL, not fail: {status:?}"
        );
        let acked = reader.join().unwrap();
        let leo = verify(&path, acked, flush, &mut last_start);
        assert!(
            leo >= last_leo,
            "acknowledged data never shrinks: {leo} < {last_leo}"
        );
        println!("kill {kill}: flush={flush} acked={acked} leo={leo} log_start={last_start}");
        last_leo = leo;
    }
    assert!(
        last_leo > 0,
        "the children appended nothing; the test proved nothing"
    );
}
