//! `LogManager`: parallel open of many partitions (with recovery), create/get/delete, bounded open
//! inactive segments, retention and flush passes, clean shutdown.

mod common;

use std::sync::Arc;

use common::{batch, read_all};
use sluice_storage::manager::ManagerOptions;
use sluice_storage::{LogConfig, LogManager, StorageError};

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

/// Entries of a log directory other than the `.lock` file and the high-watermark checkpoint, sorted.
fn partition_entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock" && n != "replication-offset-checkpoint")
        .collect();
    v.sort();
    v
}

#[test]
fn a_locked_log_directory_refuses_a_second_manager_until_released() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().join("a"), root.path().join("b")];
    let first = LogManager::open(dirs.clone(), small()).unwrap();
    first.get_or_create("orders", 0, small()).unwrap();
    // flock belongs to the open file description: a second open in this process conflicts too.
    for locked in [dirs.clone(), vec![dirs[1].clone()]] {
        let err = LogManager::open(locked.clone(), small()).unwrap_err();
        match &err {
            StorageError::Locked { dir } => assert_eq!(dir, locked.first().unwrap()),
            other => panic!("expected Locked, got {other:?}"),
        }
        assert!(err.to_string().contains(&locked[0].display().to_string()));
    }
    drop(first);
    let second = LogManager::open(dirs.clone(), small()).unwrap();
    assert_eq!(second.partitions(), vec![("orders".to_string(), 0)]);
    // A clean shutdown releases the locks even while the manager value is still alive.
    second.shutdown().unwrap();
    assert!(second.get_or_create("late", 0, small()).is_err());
    let third = LogManager::open(dirs, small()).unwrap();
    assert_eq!(third.partitions(), vec![("orders".to_string(), 0)]);
}

#[test]
fn a_directory_renamed_for_deletion_is_never_opened_as_a_partition() {
    let root = tempfile::tempdir().unwrap();
    {
        let mgr = LogManager::open(vec![root.path().to_path_buf()], small()).unwrap();
        let log = mgr.get_or_create("orders", 1, small()).unwrap();
        log.append_as_leader(&mut batch(2, 0, 0), 0, 0).unwrap();
        mgr.delete("orders", 1).unwrap();
        // The old instance never ran a retention pass: the renamed directory is still there.
        assert_eq!(partition_entries(root.path()).len(), 1);
        mgr.shutdown().unwrap();
    }
    let mgr = LogManager::open(vec![root.path().to_path_buf()], small()).unwrap();
    assert!(mgr.partitions().is_empty());
    assert!(partition_entries(root.path()).is_empty(), "removed at open");
}

#[test]
fn opens_every_partition_in_parallel_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().join("a"), root.path().join("b")];
    {
        let mgr = LogManager::open(dirs.clone(), small()).unwrap();
        for p in 0..12 {
            let log = mgr.get_or_create("orders", p, small()).unwrap();
            for i in 0..=(p as u64) {
                log.append_as_leader(&mut batch(2, i, 0), 0, 0).unwrap();
            }
        }
        let log = mgr.get_or_create("my-topic", 3, small()).unwrap();
        log.append_as_leader(&mut batch(1, 0, 0), 0, 0).unwrap();
        // Half clean: shut down only some logs, leave the others to recovery.
        for p in 0..6 {
            mgr.get("orders", p).unwrap().close().unwrap();
        }
    }
    let opts = ManagerOptions {
        recovery_threads: 4,
        ..ManagerOptions::default()
    };
    let mgr = LogManager::open_with(dirs, small(), opts).unwrap();
    let parts = mgr.partitions();
    assert_eq!(parts.len(), 13);
    assert!(parts.contains(&("my-topic".to_string(), 3)));
    for p in 0..12 {
        let log = mgr.get("orders", p).unwrap();
        assert_eq!(log.log_end_offset(), 2 * (p as i64 + 1));
        assert_eq!(read_all(&log).len(), p as usize + 1);
    }
    mgr.shutdown().unwrap();
}

#[test]
fn bounds_open_inactive_segments() {
    let root = tempfile::tempdir().unwrap();
    let opts = ManagerOptions {
        max_open_inactive_segments: 3,
        ..ManagerOptions::default()
    };
    let mgr = LogManager::open_with(vec![root.path().to_path_buf()], small(), opts).unwrap();
    let log = mgr.get_or_create("t", 0, small()).unwrap();
    for i in 0..60 {
        log.append_as_leader(&mut batch(3, i, 0), 0, 0).unwrap();
    }
    assert!(log.segment_count() > 6);
    for (base, _, _) in read_all(&log) {
        log.read(base, 1, i64::MAX).unwrap();
        assert!(mgr.open_inactive_segments() <= 3);
    }
    assert_eq!(mgr.open_inactive_segments(), 3);
}

#[test]
fn delete_renames_then_removes_and_retention_runs() {
    let root = tempfile::tempdir().unwrap();
    let mgr = LogManager::open(vec![root.path().to_path_buf()], small()).unwrap();
    let log = mgr.get_or_create("gone", 0, small()).unwrap();
    log.append_as_leader(&mut batch(2, 0, 0), 0, 0).unwrap();
    let held = log.read(0, 100, i64::MAX).unwrap();
    mgr.delete("gone", 0).unwrap();
    assert!(mgr.get("gone", 0).is_none());
    assert!(!root.path().join("gone-0").exists());
    let renamed = partition_entries(root.path());
    assert_eq!(renamed.len(), 1);
    // Kafka's naming: `<topic>-<partition>.<uniqueId>-delete` (a 32-hex-digit UUID).
    let (stem, unique) = renamed[0]
        .strip_suffix("-delete")
        .unwrap()
        .split_once('.')
        .unwrap();
    assert_eq!(stem, "gone-0");
    assert_eq!(unique.len(), 32);
    assert!(unique.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!held.data.is_empty());
    assert!(
        log.append_as_leader(&mut batch(1, 0, 0), 0, 0).is_err(),
        "a deleted log refuses appends"
    );
    // Retention removes the renamed directory and applies retention.ms to live logs.
    let cfg = LogConfig {
        retention_ms: 10,
        ..small()
    };
    let live = mgr.get_or_create("live", 0, cfg).unwrap();
    for i in 0..20 {
        live.append_as_leader(&mut batch(3, i, 1_000), 0, 0)
            .unwrap();
    }
    live.set_high_watermark(60);
    mgr.run_retention(1_000_000);
    assert_eq!(partition_entries(root.path()), vec!["live-0".to_string()]);
    assert_eq!(live.log_start_offset(), 60);
    // Re-creating the deleted partition starts empty.
    let again = mgr.get_or_create("gone", 0, small()).unwrap();
    assert_eq!(again.log_end_offset(), 0);
}

#[test]
fn flush_due_honours_flush_ms_and_shutdown_is_clean() {
    let root = tempfile::tempdir().unwrap();
    let mgr =
        Arc::new(LogManager::open(vec![root.path().to_path_buf()], LogConfig::default()).unwrap());
    let timed = mgr
        .get_or_create(
            "timed",
            0,
            LogConfig {
                flush_ms: Some(1000),
                ..LogConfig::default()
            },
        )
        .unwrap();
    let lazy = mgr.get_or_create("lazy", 0, LogConfig::default()).unwrap();
    timed.append_as_leader(&mut batch(2, 0, 0), 0, 0).unwrap();
    lazy.append_as_leader(&mut batch(2, 0, 0), 0, 0).unwrap();
    mgr.flush_due(i64::MAX / 2);
    assert_eq!(timed.recovery_point(), 2);
    assert_eq!(
        lazy.recovery_point(),
        0,
        "no flush policy: the OS writes back"
    );
    mgr.shutdown().unwrap();
    assert!(root.path().join("lazy-0/.clean-shutdown").exists());
    assert!(root.path().join("timed-0/.clean-shutdown").exists());
}
