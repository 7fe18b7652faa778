//! Recovery after unclean shutdown: flipped bytes and torn tails in the active segment, corruption in an
//! earlier segment, and missing or garbage index files; recovery must truncate exactly at the first bad
//! batch and rebuild indexes.

mod common;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::{batch, read_all};
use sluice_storage::{Log, LogConfig};
use sluice_testkit::batch::sized_batch;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 100,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

/// Appends `n` batches of 3 records and drops the log without a clean close; returns each batch's
/// (base offset, file, position, size).
fn fill(path: &Path, n: u64) -> Vec<(i64, PathBuf, u64, u64)> {
    let log = Log::open(path, config()).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let mut b = batch(3, i, 1_000 + i as i64);
        let info = log.append_as_leader(&mut b, 1, 0).unwrap();
        out.push((info.base_offset, b.len() as u64));
    }
    drop(log);
    // Map offsets to files and positions by walking segment files.
    let mut segs: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    let mut placed = Vec::new();
    let mut it = out.into_iter();
    for seg in segs {
        let len = std::fs::metadata(&seg).unwrap().len();
        let mut pos = 0;
        while pos < len {
            let (base, size) = it.next().unwrap();
            placed.push((base, seg.clone(), pos, size));
            pos += size;
        }
    }
    placed
}

fn flip_byte(file: &Path, at: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut data = std::fs::read(file).unwrap();
    data[at as usize] ^= 0x5a;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&data[at as usize..at as usize + 1]).unwrap();
}

fn segment_files(path: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn recover_truncates_at_flipped_byte_in_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let placed = fill(&path, 60);
    let last_file = placed.last().unwrap().1.clone();
    let in_active: Vec<_> = placed.iter().filter(|p| p.1 == last_file).collect();
    assert!(
        in_active.len() >= 3,
        "need several batches in the active segment"
    );
    let victim = in_active[in_active.len() / 2];
    flip_byte(&victim.1, victim.2 + victim.3 - 2); // inside the records: CRC mismatch
    let log = Log::open(&path, config()).unwrap();
    assert_eq!(
        log.log_end_offset(),
        victim.0,
        "truncated exactly at the corrupt batch"
    );
    assert_eq!(std::fs::metadata(&victim.1).unwrap().len(), victim.2);
    let all = read_all(&log);
    assert_eq!(
        all.len(),
        placed.iter().position(|p| p.0 == victim.0).unwrap()
    );
    // The log accepts appends again right after the cut.
    let info = log.append_as_leader(&mut batch(1, 0, 0), 1, 0).unwrap();
    assert_eq!(info.base_offset, victim.0);
}

#[test]
fn recover_truncates_torn_tail_mid_batch_and_mid_header() {
    for cut_into in [5u64, 40, 70] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let placed = fill(&path, 30);
        let last = placed.last().unwrap().clone();
        let f = OpenOptions::new().write(true).open(&last.1).unwrap();
        f.set_len(last.2 + cut_into.min(last.3 - 1)).unwrap();
        drop(f);
        let log = Log::open(&path, config()).unwrap();
        assert_eq!(log.log_end_offset(), last.0, "cut {cut_into}");
        assert_eq!(std::fs::metadata(&last.1).unwrap().len(), last.2);
        assert_eq!(read_all(&log).len(), placed.len() - 1);
    }
}

#[test]
fn recover_truncates_at_corrupt_header_and_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let placed = fill(&path, 60);
    let files = segment_files(&path);
    assert!(files.len() >= 3);
    // Corrupt the length field of the second batch of the second segment (recovery point is 0, so
    // every segment is scanned).
    let victim = placed
        .iter()
        .filter(|p| p.1 == files[1])
        .nth(1)
        .unwrap()
        .clone();
    flip_byte(&victim.1, victim.2 + 9);
    let log = Log::open(&path, config()).unwrap();
    assert_eq!(log.log_end_offset(), victim.0);
    assert_eq!(
        segment_files(&path).len(),
        2,
        "segments after the cut are removed"
    );
    assert_eq!(
        read_all(&log).len(),
        placed.iter().position(|p| p.0 == victim.0).unwrap()
    );
}

#[test]
fn recover_skips_scan_after_clean_shutdown_but_rebuilds_bad_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    {
        let log = Log::open(&path, config()).unwrap();
        for i in 0..60u64 {
            log.append_as_leader(&mut batch(3, i, 1_000 + i as i64), 1, 0)
                .unwrap();
        }
        log.close().unwrap();
    }
    let files = segment_files(&path);
    // Garbage offset index, missing time index on the first segment.
    std::fs::write(files[0].with_extension("index"), b"garbage!!").unwrap();
    std::fs::remove_file(files[0].with_extension("timeindex")).unwrap();
    let log = Log::open(&path, config()).unwrap();
    assert_eq!(log.log_end_offset(), 180);
    assert_eq!(read_all(&log).len(), 60);
    assert_eq!(
        log.offset_for_timestamp(1_001).unwrap().map(|t| t.offset),
        Some(3)
    );
    let rebuilt = std::fs::read(files[0].with_extension("index")).unwrap();
    assert_eq!(
        rebuilt.len() % 8,
        0,
        "index rebuilt in the 8-byte entry format"
    );
}

#[test]
fn recover_rebuilds_indexes_of_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let placed = fill(&path, 10);
    let last = placed.last().unwrap().1.clone();
    std::fs::remove_file(last.with_extension("index")).unwrap();
    std::fs::write(last.with_extension("timeindex"), b"x").unwrap();
    let log = Log::open(&path, config()).unwrap();
    assert_eq!(log.log_end_offset(), 30);
    for p in &placed {
        let r = log.read(p.0 + 1, 1, i64::MAX).unwrap();
        assert_eq!(common::header(&r.data).base_offset(), p.0);
    }
}

#[test]
fn clean_reopen_walks_only_the_tail_of_the_active_segment() {
    use sluice_storage::io::FaultyIo;
    use sluice_storage::LogOptions;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    {
        let log = Log::open(&path, LogConfig::default()).unwrap();
        for i in 0..200 {
            log.append_as_leader(&mut sized_batch(16, 1000, 1_000 + i), 2, 0)
                .unwrap();
        }
        log.close().unwrap();
    }
    let io = FaultyIo::default();
    let options = LogOptions {
        io: std::sync::Arc::new(io.clone()),
        ..LogOptions::default()
    };
    let log = Log::open_with(&path, LogConfig::default(), options).unwrap();
    let read = io
        .faults
        .read_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        read < 256 * 1024,
        "clean open read {read} bytes of a {} byte segment",
        log.size_bytes()
    );
    assert_eq!(log.log_end_offset(), 3200);
    // Indexes and timestamps are as good as after a full scan.
    assert_eq!(
        log.offset_for_timestamp(1_150).unwrap().map(|t| t.offset),
        Some(150 * 16)
    );
    assert_eq!(
        log.max_timestamp_offset()
            .unwrap()
            .map(|t| (t.timestamp_ms, t.offset)),
        Some((1_199, 199 * 16))
    );
    for b in [0, 1, 77, 199] {
        let r = log.read(b * 16 + 3, 1, i64::MAX).unwrap();
        assert_eq!(common::header(&r.data).base_offset(), b * 16);
    }
    // Appending after the resumed walk keeps indexing correctly, and a later clean reopen agrees.
    log.append_as_leader(&mut sized_batch(16, 1000, 5_000), 2, 0)
        .unwrap();
    log.close().unwrap();
    drop(log);
    let log = Log::open(&path, LogConfig::default()).unwrap();
    assert_eq!(read_all(&log).len(), 201);
    assert_eq!(
        log.offset_for_timestamp(4_000).unwrap().map(|t| t.offset),
        Some(3200)
    );
}
