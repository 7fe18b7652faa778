//! Disk-full and I/O-error handling through the `io` seam: ENOSPC gives a typed error, leaves the log
//! readable with no partial batch, and appends succeed once space returns; EIO takes the directory offline.

mod common;

use std::sync::Arc;

use common::{batch, read_all};
use sluice_storage::io::{FaultyIo, WriteFault};
use sluice_storage::manager::ManagerOptions;
use sluice_storage::{
    AppendError, Log, LogConfig, LogManager, LogOptions, ReadError, StorageError,
};

fn open_faulty(path: &std::path::Path, config: LogConfig) -> (Log, FaultyIo) {
    let io = FaultyIo::default();
    let opts = LogOptions {
        io: Arc::new(io.clone()),
        ..LogOptions::default()
    };
    (Log::open_with(path, config, opts).unwrap(), io)
}

#[test]
fn disk_full_is_typed_leaves_no_partial_batch_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let (log, io) = open_faulty(&path, LogConfig::default());
    for i in 0..5 {
        log.append_as_leader(&mut batch(2, i, 0), 0, 0).unwrap();
    }
    let size = log.size_bytes();
    // A torn write: 17 bytes reach the file, then ENOSPC.
    io.faults
        .set_write_fault(Some(WriteFault::DiskFull { written: 17 }));
    let err = log.append_as_leader(&mut batch(2, 9, 0), 0, 0).unwrap_err();
    assert!(
        matches!(err, AppendError::Storage(StorageError::DiskFull { .. })),
        "{err:?}"
    );
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(log.size_bytes(), size);
    let file = path.join("00000000000000000000.log");
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        size,
        "the torn bytes were cut back"
    );
    assert_eq!(
        read_all(&log).len(),
        5,
        "still readable while the disk is full"
    );
    // Space returns.
    io.faults.set_write_fault(None);
    let info = log.append_as_leader(&mut batch(2, 9, 0), 0, 0).unwrap();
    assert_eq!(info.base_offset, 10);
    assert_eq!(read_all(&log).len(), 6);
    drop(log);
    let log = Log::open(&path, LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(read_all(&log).len(), 6);
}

#[test]
fn disk_full_while_rolling_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let (log, io) = open_faulty(
        &path,
        LogConfig {
            segment_bytes: 300,
            ..LogConfig::default()
        },
    );
    log.append_as_leader(&mut batch(5, 0, 0), 0, 0).unwrap();
    log.append_as_leader(&mut batch(5, 1, 0), 0, 0).unwrap();
    io.faults
        .set_write_fault(Some(WriteFault::DiskFull { written: 0 }));
    let mut errors = 0;
    for i in 0..3 {
        if let Err(e) = log.append_as_leader(&mut batch(5, i, 0), 0, 0) {
            assert!(
                matches!(e, AppendError::Storage(StorageError::DiskFull { .. })),
                "{e:?}"
            );
            errors += 1;
        }
    }
    assert_eq!(errors, 3);
    let leo = log.log_end_offset();
    assert_eq!(read_all(&log).len() as i64 * 5, leo);
    io.faults.set_write_fault(None);
    for i in 0..5 {
        log.append_as_leader(&mut batch(5, i, 0), 0, 0).unwrap();
    }
    assert_eq!(log.log_end_offset(), leo + 25);
    assert_eq!(read_all(&log).len() as i64 * 5, leo + 25);
}

#[test]
fn io_error_takes_the_directory_offline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let (log, io) = open_faulty(&path, LogConfig::default());
    log.append_as_leader(&mut batch(2, 0, 0), 0, 0).unwrap();
    io.faults.set_write_fault(Some(WriteFault::Eio));
    let err = log.append_as_leader(&mut batch(2, 1, 0), 0, 0).unwrap_err();
    assert!(
        matches!(err, AppendError::Storage(StorageError::Io { .. })),
        "{err:?}"
    );
    io.faults.set_write_fault(None);
    assert!(matches!(
        log.read(0, 100, i64::MAX),
        Err(ReadError::Storage(StorageError::Offline { .. }))
    ));
    assert!(matches!(
        log.append_as_leader(&mut batch(2, 1, 0), 0, 0),
        Err(AppendError::Storage(StorageError::Offline { .. }))
    ));
    assert!(matches!(log.flush(), Err(StorageError::Offline { .. })));
}

#[test]
fn manager_takes_only_the_failing_dir_offline() {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().join("d1"), root.path().join("d2")];
    let io = FaultyIo::default();
    let opts = ManagerOptions {
        io: Arc::new(io.clone()),
        ..ManagerOptions::default()
    };
    let mgr = LogManager::open_with(dirs.clone(), LogConfig::default(), opts).unwrap();
    let a = mgr.get_or_create("a", 0, LogConfig::default()).unwrap();
    let b = mgr.get_or_create("b", 0, LogConfig::default()).unwrap();
    assert_ne!(
        a.dir().parent(),
        b.dir().parent(),
        "partitions spread over the directories"
    );
    a.append_as_leader(&mut batch(1, 0, 0), 0, 0).unwrap();
    io.faults.set_write_fault(Some(WriteFault::Eio));
    assert!(a.append_as_leader(&mut batch(1, 0, 0), 0, 0).is_err());
    io.faults.set_write_fault(None);
    assert_eq!(
        mgr.offline_dirs(),
        vec![a.dir().parent().unwrap().to_path_buf()]
    );
    b.append_as_leader(&mut batch(1, 0, 0), 0, 0).unwrap();
    // New partitions go to the online directory.
    let c = mgr.get_or_create("c", 0, LogConfig::default()).unwrap();
    assert_eq!(c.dir().parent(), b.dir().parent());
    assert!(
        mgr.shutdown().is_err(),
        "the offline log cannot close cleanly"
    );
}

#[test]
fn failed_truncation_takes_the_log_offline_instead_of_half_serving_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, io) = open_faulty(
        &dir.path().join("t-0"),
        LogConfig {
            segment_bytes: 200,
            ..LogConfig::default()
        },
    );
    for i in 0..10 {
        log.append_as_leader(&mut batch(3, i, 0), 0, 0).unwrap();
    }
    io.faults
        .set_write_fault(Some(WriteFault::DiskFull { written: 0 }));
    assert!(log.truncate_to(7).is_err());
    io.faults.set_write_fault(None);
    assert!(matches!(
        log.append_as_leader(&mut batch(1, 0, 0), 0, 0),
        Err(AppendError::Storage(StorageError::Offline { .. }))
    ));

    let dir = tempfile::tempdir().unwrap();
    let (log, io) = open_faulty(&dir.path().join("t-0"), LogConfig::default());
    log.append_as_leader(&mut batch(3, 0, 0), 0, 0).unwrap();
    io.faults
        .set_write_fault(Some(WriteFault::DiskFull { written: 0 }));
    assert!(log.truncate_fully_and_start_at(100).is_err());
    io.faults.set_write_fault(None);
    assert!(matches!(
        log.read(100, 10, i64::MAX),
        Err(ReadError::Storage(StorageError::Offline { .. }))
    ));
}
