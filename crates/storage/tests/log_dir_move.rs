//! Moving a log between log directories (AlterReplicaLogDirs, KIP-113): the background copy and the swap, appends
//! during the copy, truncation restarting the copy, Kafka's refusals, DescribeLogDirs' view, and crash safety at
//! every step of the commit (`log/relocate.rs`).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{batch, read_all};
use sluice_storage::log::{CopyControl, MoveError, MOVE_MARKER_FILE};
use sluice_storage::manager::{AlterLogDirError, AlterLogDirOutcome};
use sluice_storage::{LogConfig, LogManager};

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

fn two_dirs(root: &Path) -> Vec<PathBuf> {
    vec![root.join("a"), root.join("b")]
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn wait_idle(logs: &LogManager) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while logs.moves_in_progress() > 0 {
        assert!(Instant::now() < deadline, "move did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn values(log: &sluice_storage::Log) -> Vec<(i64, i64)> {
    read_all(log).iter().map(|(b, l, _)| (*b, *l)).collect()
}

fn no_control() -> (impl Fn() -> bool, impl Fn(i64, u64), impl Fn(u64)) {
    (|| false, |_, _| {}, |_| {})
}

#[test]
fn a_log_moves_while_appends_continue_and_nothing_is_lost() {
    let root = tempfile::tempdir().unwrap();
    let dirs = two_dirs(root.path());
    let logs = Arc::new(LogManager::open(dirs.clone(), small()).unwrap());
    let log = logs.get_or_create("orders", 0, small()).unwrap();
    let from = log.dir().parent().unwrap().to_path_buf();
    let to = dirs.iter().find(|d| **d != from).unwrap().clone();
    for i in 0..200 {
        log.append_as_leader(&mut batch(3, i, 1_000 + i as i64), 0, 0)
            .unwrap();
    }
    assert!(log.segment_count() > 10);
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                log.append_as_leader(&mut batch(2, 1_000 + n, 5_000), 0, 0)
                    .expect("appends never fail during a move");
                n += 1;
            }
            n
        })
    };
    assert_eq!(
        logs.alter_log_dir("orders", 0, &to).unwrap(),
        AlterLogDirOutcome::Started
    );
    let again = logs.alter_log_dir("orders", 0, &to).unwrap();
    assert!(
        matches!(
            again,
            AlterLogDirOutcome::InProgress | AlterLogDirOutcome::AlreadyThere
        ),
        "{again:?}"
    );
    wait_idle(&logs);
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Release);
    let appended = appender.join().unwrap();
    assert_eq!(log.dir(), to.join("orders-0"));
    assert_eq!(
        logs.alter_log_dir("orders", 0, &to).unwrap(),
        AlterLogDirOutcome::AlreadyThere
    );
    let expected = 200 * 3 + appended as i64 * 2;
    assert_eq!(log.log_end_offset(), expected);
    let before = values(&log);
    assert_eq!(before.last().unwrap().1, expected - 1);
    // Appends after the swap go to the new directory.
    log.append_as_leader(&mut batch(1, 9_999, 9_999), 0, 0)
        .unwrap();
    // The old directory is renamed for deletion and gone after the next retention pass.
    logs.run_retention(0);
    assert!(
        !names(&from).iter().any(|n| n.starts_with("orders-0")),
        "{:?}",
        names(&from)
    );
    assert!(!to.join("orders-0").join(MOVE_MARKER_FILE).exists());
    // DescribeLogDirs: the replica in its new directory, no future replica left.
    let described = logs.describe_log_dirs();
    let new_dir = described
        .iter()
        .find(|d| d.dir == std::path::absolute(&to).unwrap())
        .unwrap();
    assert_eq!(new_dir.replicas.len(), 1);
    assert!(!new_dir.replicas[0].is_future);
    assert_eq!(new_dir.replicas[0].size_bytes, log.size_bytes());
    assert!(new_dir.total_bytes.unwrap() >= new_dir.usable_bytes.unwrap());
    logs.shutdown().unwrap();
    drop(logs);
    // After a restart the log opens from its new directory with every record.
    let logs = LogManager::open(dirs.clone(), small()).unwrap();
    let log = logs.get("orders", 0).unwrap();
    assert_eq!(log.dir(), to.join("orders-0"));
    assert_eq!(log.log_end_offset(), expected + 1);
    assert_eq!(values(&log)[..before.len()], before[..]);
}

#[test]
fn kafkas_refusals_and_no_ops() {
    let root = tempfile::tempdir().unwrap();
    let dirs = two_dirs(root.path());
    let logs = Arc::new(LogManager::open(dirs.clone(), small()).unwrap());
    let log = logs.get_or_create("t", 0, small()).unwrap();
    let here = log.dir().parent().unwrap().to_path_buf();
    assert!(matches!(
        logs.alter_log_dir("t", 0, &root.path().join("elsewhere")),
        Err(AlterLogDirError::LogDirNotFound(_))
    ));
    assert_eq!(
        logs.alter_log_dir("missing", 0, &dirs[0]),
        Err(AlterLogDirError::NoReplica)
    );
    assert_eq!(
        logs.alter_log_dir("t", 0, &here).unwrap(),
        AlterLogDirOutcome::AlreadyThere
    );
    // The same directory spelled with a trailing slash is the same directory.
    let slashed = PathBuf::from(format!("{}/", here.display()));
    assert_eq!(
        logs.alter_log_dir("t", 0, &slashed).unwrap(),
        AlterLogDirOutcome::AlreadyThere
    );
    let long = "x".repeat(249);
    logs.get_or_create(&long, 0, small()).unwrap();
    assert_eq!(
        logs.alter_log_dir(&long, 0, &dirs[1]),
        Err(AlterLogDirError::InvalidTopic)
    );
}

#[test]
fn a_truncation_during_the_copy_makes_the_swap_refuse_and_the_log_stays() {
    let root = tempfile::tempdir().unwrap();
    let dirs = two_dirs(root.path());
    let logs = LogManager::open(dirs.clone(), small()).unwrap();
    let log = logs.get_or_create("t", 0, small()).unwrap();
    for i in 0..40 {
        log.append_as_leader(&mut batch(2, i, 1_000), 0, 0).unwrap();
    }
    let from = log.dir();
    let target = logs
        .describe_log_dirs()
        .iter()
        .position(|d| Some(d.dir.as_path()) != std::path::absolute(&from).unwrap().parent())
        .unwrap();
    let health = sluice_storage::DirHealth::new(dirs[target].clone());
    let (stop, progress, throttle) = no_control();
    let control = CopyControl {
        stop: &stop,
        progress: &progress,
        throttle: &throttle,
    };
    let mut future = log.begin_future(Arc::new(health)).unwrap();
    log.copy_round(&mut future, &control).unwrap();
    assert_eq!(future.log_end_offset(), 80);
    // Appends during the copy are picked up by the next round; a truncation invalidates the copy.
    log.append_as_leader(&mut batch(2, 99, 1_000), 0, 0)
        .unwrap();
    log.copy_round(&mut future, &control).unwrap();
    assert_eq!(future.log_end_offset(), 82);
    log.truncate_to(50).unwrap();
    assert!(matches!(
        log.swap_into(&mut future, &control),
        Err(MoveError::Rewritten)
    ));
    log.discard_future(&future);
    assert!(!future.dir().exists());
    assert_eq!(log.dir(), from);
    assert_eq!(values(&log).last().unwrap().1, 49);
}

#[test]
fn retention_during_the_copy_removes_the_copied_segments_too() {
    let root = tempfile::tempdir().unwrap();
    let dirs = two_dirs(root.path());
    let logs = LogManager::open(dirs.clone(), small()).unwrap();
    let log = logs.get_or_create("t", 0, small()).unwrap();
    for i in 0..40 {
        log.append_as_leader(&mut batch(2, i, 1_000), 0, 0).unwrap();
    }
    let other = dirs
        .iter()
        .find(|d| Some(d.as_path()) != log.dir().parent())
        .unwrap()
        .clone();
    let (stop, progress, throttle) = no_control();
    let control = CopyControl {
        stop: &stop,
        progress: &progress,
        throttle: &throttle,
    };
    let mut future = log
        .begin_future(Arc::new(sluice_storage::DirHealth::new(other.clone())))
        .unwrap();
    log.copy_round(&mut future, &control).unwrap();
    log.set_high_watermark(log.log_end_offset());
    let start = log.delete_records_before(41).unwrap();
    assert!(start >= 41);
    log.swap_into(&mut future, &control).unwrap();
    assert_eq!(log.dir(), other.join("t-0"));
    assert_eq!(log.log_start_offset(), start);
    let segments = names(&log.dir())
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .count();
    assert_eq!(segments, log.segment_count());
    assert_eq!(read_all(&log).last().unwrap().1, 79);
}

/// Copies a partition directory as a crash after step (b) of the commit leaves it: the complete copy, holding the
/// marker, under the partition's name in the other directory.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn crashes_at_each_step_leave_exactly_one_complete_log() {
    let root = tempfile::tempdir().unwrap();
    let dirs = two_dirs(root.path());
    let (from, to, expected) = {
        let logs = LogManager::open(dirs.clone(), small()).unwrap();
        let log = logs.get_or_create("t", 0, small()).unwrap();
        for i in 0..30 {
            log.append_as_leader(&mut batch(2, i, 1_000), 0, 0).unwrap();
        }
        let expected = values(&log);
        let from = log.dir().parent().unwrap().to_path_buf();
        let to = dirs.iter().find(|d| **d != from).unwrap().clone();
        logs.shutdown().unwrap();
        (from, to, expected)
    };
    // A crash during the copy: the future directory is removed, the original is authoritative.
    copy_dir(&from.join("t-0"), &to.join("t-0.0123abcd-future"));
    std::fs::write(
        to.join("t-0.0123abcd-future")
            .join("00000000000000000000.log"),
        b"torn",
    )
    .unwrap();
    {
        let logs = LogManager::open(dirs.clone(), small()).unwrap();
        let log = logs.get("t", 0).unwrap();
        assert_eq!(log.dir(), from.join("t-0"));
        assert_eq!(values(&log), expected);
        assert!(
            !names(&to).iter().any(|n| n.starts_with("t-0")),
            "{:?}",
            names(&to)
        );
        logs.shutdown().unwrap();
    }
    // A crash between the rename into place and the old directory's retirement: the marked copy wins.
    copy_dir(&from.join("t-0"), &to.join("t-0"));
    std::fs::write(to.join("t-0").join(MOVE_MARKER_FILE), b"").unwrap();
    {
        let logs = LogManager::open(dirs.clone(), small()).unwrap();
        let log = logs.get("t", 0).unwrap();
        assert_eq!(log.dir(), to.join("t-0"));
        assert_eq!(values(&log), expected);
        assert!(!from.join("t-0").exists());
        assert!(!to.join("t-0").join(MOVE_MARKER_FILE).exists());
        logs.shutdown().unwrap();
    }
    // A crash after the retirement, before the marker's removal: the marker goes, the log stays.
    std::fs::write(to.join("t-0").join(MOVE_MARKER_FILE), b"").unwrap();
    {
        let logs = LogManager::open(dirs.clone(), small()).unwrap();
        let log = logs.get("t", 0).unwrap();
        assert_eq!(log.dir(), to.join("t-0"));
        assert_eq!(values(&log), expected);
        assert!(!to.join("t-0").join(MOVE_MARKER_FILE).exists());
        logs.shutdown().unwrap();
    }
    // Two copies and no marker: refused, as Kafka refuses duplicate log directories.
    copy_dir(&to.join("t-0"), &from.join("t-0"));
    let err = LogManager::open(dirs.clone(), small()).unwrap_err();
    assert!(
        err.to_string().contains("duplicate log directories"),
        "{err}"
    );
}

#[test]
fn a_move_to_another_directory_replaces_the_one_in_progress_and_deletion_cancels_it() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("c"),
    ];
    let logs = Arc::new(LogManager::open(dirs.clone(), small()).unwrap());
    let log = logs.get_or_create("t", 0, small()).unwrap();
    for i in 0..300 {
        log.append_as_leader(&mut batch(2, i, 1_000), 0, 0).unwrap();
    }
    let from = log.dir().parent().unwrap().to_path_buf();
    let others: Vec<PathBuf> = dirs.iter().filter(|d| **d != from).cloned().collect();
    logs.alter_log_dir("t", 0, &others[0]).unwrap();
    logs.alter_log_dir("t", 0, &others[1]).unwrap();
    wait_idle(&logs);
    // The last request wins (unless the first finished before the second arrived, then it moved twice).
    assert_eq!(log.dir(), others[1].join("t-0"));
    assert_eq!(read_all(&log).last().unwrap().1, 599);
    for d in &dirs {
        assert!(
            !names(d).iter().any(|n| n.ends_with("-future")),
            "{:?}",
            names(d)
        );
    }
    // Deleting the partition during a move stops the move and leaves no future directory.
    logs.alter_log_dir("t", 0, &from).unwrap();
    logs.delete("t", 0).unwrap();
    wait_idle(&logs);
    logs.run_retention(0);
    for d in &dirs {
        assert!(
            !names(d).iter().any(|n| n.starts_with("t-0")),
            "{:?}",
            names(d)
        );
    }
}

/// `replica.alter.log.dirs.io.max.bytes.per.second`: a move copies no faster than the rate (after a second's
/// burst); a rate of 0 holds it; removing the throttle lets it finish at once.
#[test]
fn a_throttled_move_copies_at_the_rate_and_finishes_once_the_throttle_goes() {
    let root = tempfile::tempdir().unwrap();
    let dirs = two_dirs(root.path());
    // Segments of 50 kB: each is paced (and copied) as one chunk.
    let config = LogConfig {
        segment_bytes: 50_000,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    };
    let logs = Arc::new(LogManager::open(dirs.clone(), config.clone()).unwrap());
    let log = logs.get_or_create("slow", 0, config).unwrap();
    let mut i = 0;
    while log.size_bytes() < 600_000 {
        log.append_as_leader(&mut batch(50, i, 1_000), 0, 0)
            .unwrap();
        i += 1;
    }
    let size = log.size_bytes();
    let from = log.dir().parent().unwrap().to_path_buf();
    let to = dirs.iter().find(|d| **d != from).unwrap().clone();
    let copied = |logs: &LogManager| -> u64 {
        logs.describe_log_dirs()
            .iter()
            .flat_map(|d| d.replicas.iter())
            .filter(|r| r.is_future)
            .map(|r| r.size_bytes)
            .sum()
    };

    // 100 kB/s: the first second's burst (100 kB) and about 100 kB per second after it.
    logs.set_log_dir_move_rate(Some(100_000));
    let started = Instant::now();
    logs.alter_log_dir("slow", 0, &to).unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let so_far = copied(&logs);
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(
        logs.moves_in_progress(),
        1,
        "the throttled move is still copying"
    );
    // At most the rate's bytes for the time so far, the burst and one segment; at least the burst.
    assert!(
        (so_far as f64) <= 100_000.0 * (elapsed + 1.0) + 50_000.0,
        "{so_far} of {size} bytes in {elapsed:.2} s at 100 kB/s"
    );
    assert!(
        so_far >= 50_000,
        "{so_far} bytes in {elapsed:.2} s: the burst goes at once"
    );

    logs.set_log_dir_move_rate(Some(0));
    std::thread::sleep(Duration::from_millis(200));
    let held = copied(&logs);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(logs.moves_in_progress(), 1);
    assert_eq!(copied(&logs), held, "rate 0 holds the copy");

    logs.set_log_dir_move_rate(None);
    wait_idle(&logs);
    assert_eq!(log.dir(), to.join("slow-0"));
    assert_eq!(log.size_bytes(), size);
}
