//! The high-watermark checkpoint (`replication-offset-checkpoint` in each log directory, Kafka's
//! `OffsetCheckpointFile`): format, round trip through clean shutdown and through a crash (the last
//! periodic checkpoint), malformed files, clamping on open, deleted partitions, the legacy per-partition file.

mod common;

use std::path::{Path, PathBuf};

use common::batch;
use sluice_storage::{Log, LogConfig, LogManager};

const CHECKPOINT: &str = "replication-offset-checkpoint";

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

fn open(dirs: &[PathBuf]) -> LogManager {
    LogManager::open(dirs.to_vec(), small()).unwrap()
}

/// Creates `topic-partition` with `batches` batches of 5 records and sets its high watermark to `hw`.
fn fill(mgr: &LogManager, topic: &str, partition: i32, batches: u64, hw: i64) {
    let log = mgr.get_or_create(topic, partition, small()).unwrap();
    for i in 0..batches {
        log.append_as_leader(&mut batch(5, i, 1_000), 0, 0).unwrap();
    }
    log.set_high_watermark(hw);
}

fn hw(mgr: &LogManager, topic: &str, partition: i32) -> i64 {
    mgr.get(topic, partition).unwrap().high_watermark()
}

fn checkpoint_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(CHECKPOINT)).unwrap()
}

#[test]
fn the_checkpoint_is_kafkas_format_per_log_directory_and_survives_clean_shutdown() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().join("a"), root.path().join("b")];
    let mgr = open(&dirs);
    // New partitions go to the directory holding fewest: orders-0 -> a, orders-1 -> b, audit-0 -> a.
    fill(&mgr, "orders", 0, 4, 12);
    fill(&mgr, "orders", 1, 2, 10);
    fill(&mgr, "audit", 0, 3, 0);
    mgr.checkpoint_high_watermarks().unwrap();
    assert_eq!(checkpoint_text(&dirs[0]), "0\n2\naudit 0 0\norders 0 12\n");
    assert_eq!(checkpoint_text(&dirs[1]), "0\n1\norders 1 10\n");
    // Shutdown writes the final values.
    mgr.get("audit", 0).unwrap().set_high_watermark(15);
    mgr.shutdown().unwrap();
    assert_eq!(checkpoint_text(&dirs[0]), "0\n2\naudit 0 15\norders 0 12\n");
    // No leftover temporary files, no per-partition high-watermark file.
    for d in &dirs {
        for e in std::fs::read_dir(d).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.ends_with(".tmp"), "{name}");
        }
    }
    assert!(!dirs[0].join("orders-0").join(CHECKPOINT).exists());
    drop(mgr);

    let mgr = open(&dirs);
    assert_eq!(hw(&mgr, "orders", 0), 12);
    assert_eq!(hw(&mgr, "orders", 1), 10);
    assert_eq!(hw(&mgr, "audit", 0), 15);
    assert_eq!(mgr.get("orders", 0).unwrap().log_end_offset(), 20);
}

#[test]
fn after_a_crash_the_last_periodic_checkpoint_is_used() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().to_path_buf()];
    {
        let mgr = open(&dirs);
        fill(&mgr, "t", 0, 4, 10);
        mgr.checkpoint_high_watermarks().unwrap();
        // Moves on after the checkpoint; the process then dies without a clean shutdown.
        let log = mgr.get("t", 0).unwrap();
        log.append_as_leader(&mut batch(5, 9, 1_000), 0, 0).unwrap();
        log.set_high_watermark(25);
        // Dropping without `shutdown` closes nothing and writes nothing (the lock goes with the file).
    }
    let mgr = open(&dirs);
    let log = mgr.get("t", 0).unwrap();
    assert_eq!(
        log.log_end_offset(),
        25,
        "the appended data survives the crash"
    );
    assert_eq!(log.high_watermark(), 10, "the last periodic checkpoint");
}

#[test]
fn a_malformed_checkpoint_is_ignored_and_rewritten() {
    for garbage in [
        &b"not a checkpoint"[..],
        b"1\n1\nt 0 5\n",
        b"0\n3\nt 0 5\n",
        b"0\n1\nt zero 5\n",
        b"",
    ] {
        let root = tempfile::tempdir().unwrap();
        let dirs = vec![root.path().to_path_buf()];
        let mgr = open(&dirs);
        fill(&mgr, "t", 0, 4, 5);
        mgr.shutdown().unwrap();
        drop(mgr);
        std::fs::write(root.path().join(CHECKPOINT), garbage).unwrap();

        let mgr = open(&dirs);
        // No entry: the log end offset (today's single-node behaviour), not a failure.
        assert_eq!(hw(&mgr, "t", 0), 20);
        mgr.checkpoint_high_watermarks().unwrap();
        assert_eq!(checkpoint_text(root.path()), "0\n1\nt 0 20\n");
    }
}

#[test]
fn checkpointed_values_are_clamped_into_the_recovered_log() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().to_path_buf()];
    let mgr = open(&dirs);
    fill(&mgr, "ahead", 0, 4, 20);
    fill(&mgr, "behind", 0, 4, 20);
    mgr.get("behind", 0)
        .unwrap()
        .delete_records_before(10)
        .unwrap();
    mgr.shutdown().unwrap();
    drop(mgr);
    // Above the log end (a checkpoint fsynced, the data not) and below the log start.
    std::fs::write(
        root.path().join(CHECKPOINT),
        "0\n2\nahead 0 1000\nbehind 0 3\n",
    )
    .unwrap();
    let mgr = open(&dirs);
    assert_eq!(hw(&mgr, "ahead", 0), 20);
    assert_eq!(hw(&mgr, "behind", 0), 10);
}

#[test]
fn a_deleted_partitions_entry_is_dropped() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().to_path_buf()];
    {
        let mgr = open(&dirs);
        fill(&mgr, "gone", 0, 4, 3);
        fill(&mgr, "kept", 0, 2, 10);
        mgr.checkpoint_high_watermarks().unwrap();
        assert_eq!(checkpoint_text(root.path()), "0\n2\ngone 0 3\nkept 0 10\n");
        mgr.delete("gone", 0).unwrap();
        assert_eq!(checkpoint_text(root.path()), "0\n1\nkept 0 10\n");
        // Re-created and written to before a crash: it must not inherit the deleted log's value.
        let again = mgr.get_or_create("gone", 0, small()).unwrap();
        for i in 0..4 {
            again
                .append_as_leader(&mut batch(5, i, 1_000), 0, 0)
                .unwrap();
        }
        again.set_high_watermark(5);
    }
    let mgr = open(&dirs);
    assert_eq!(hw(&mgr, "kept", 0), 10);
    assert_eq!(
        hw(&mgr, "gone", 0),
        20,
        "no entry: the log end offset, not the deleted log's 3"
    );
    assert_eq!(mgr.get("gone", 0).unwrap().log_end_offset(), 20);
}

#[test]
fn no_checkpoint_is_written_after_shutdown() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().to_path_buf()];
    let mgr = open(&dirs);
    fill(&mgr, "t", 0, 2, 4);
    mgr.shutdown().unwrap();
    std::fs::remove_file(root.path().join(CHECKPOINT)).unwrap();
    // The directory may belong to another instance now.
    mgr.checkpoint_high_watermarks().unwrap();
    assert!(!root.path().join(CHECKPOINT).exists());
}

#[test]
fn an_older_versions_per_partition_checkpoint_is_read_once_then_removed() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("t-0");
    {
        let log = Log::open(&path, small()).unwrap();
        for i in 0..4 {
            log.append_as_leader(&mut batch(5, i, 1_000), 0, 0).unwrap();
        }
        log.close().unwrap();
    }
    // What an older version's clean close left in the partition directory.
    std::fs::write(path.join(CHECKPOINT), "0\n1\n15\n").unwrap();
    let dirs = vec![root.path().to_path_buf()];
    {
        let mgr = open(&dirs);
        assert_eq!(hw(&mgr, "t", 0), 15);
        assert!(!path.join(CHECKPOINT).exists());
        mgr.shutdown().unwrap();
    }
    assert_eq!(checkpoint_text(root.path()), "0\n1\nt 0 15\n");
    let mgr = open(&dirs);
    assert_eq!(hw(&mgr, "t", 0), 15);
}
