//! `Log::read_slices` returns the very batches `Log::read` returns, as file ranges: checked against `read` on
//! random logs (several segments, a moved log start, random offsets, byte limits and upper bounds), and the
//! ranges stay readable after retention deletes their segment.

mod common;

use std::os::unix::fs::FileExt;

use common::batch;
use proptest::prelude::*;
use sluice_storage::log::FileReadResult;
use sluice_storage::{Log, LogConfig, ReadError};
use sluice_testkit::batch::sized_batch;

/// The bytes the slices cover, read from their files.
fn materialize(result: &FileReadResult) -> Vec<u8> {
    let mut out = Vec::new();
    for slice in &result.slices {
        assert!(slice.len > 0, "no empty slice");
        let mut buf = vec![0u8; slice.len as usize];
        slice
            .file
            .read_exact_at(&mut buf, slice.position)
            .expect("slice within the file");
        out.extend_from_slice(&buf);
    }
    out
}

/// Asserts `read_slices` agrees with `read` for these arguments.
fn same_as_read(log: &Log, offset: i64, max_bytes: usize, upper_bound: i64) {
    let read = log.read(offset, max_bytes, upper_bound);
    let slices = log.read_slices(offset, max_bytes, upper_bound);
    match (read, slices) {
        (Ok(read), Ok(slices)) => {
            assert_eq!(
                materialize(&slices),
                read.data.as_ref(),
                "offset {offset} max_bytes {max_bytes} upper_bound {upper_bound}"
            );
            assert_eq!(slices.len_bytes(), read.data.len() as u64);
            assert_eq!(
                (
                    slices.log_start_offset,
                    slices.log_end_offset,
                    slices.high_watermark
                ),
                (
                    read.log_start_offset,
                    read.log_end_offset,
                    read.high_watermark
                )
            );
        }
        (
            Err(ReadError::OffsetOutOfRange {
                offset: a,
                log_start_offset: b,
                log_end_offset: c,
            }),
            Err(ReadError::OffsetOutOfRange {
                offset: x,
                log_start_offset: y,
                log_end_offset: z,
            }),
        ) => assert_eq!((a, b, c), (x, y, z)),
        (read, slices) => panic!(
            "offset {offset} max_bytes {max_bytes} upper_bound {upper_bound}: read {:?} vs read_slices {:?}",
            read.map(|r| r.data.len()),
            slices.map(|s| s.len_bytes())
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn read_slices_returns_the_batches_read_returns(
        batches in prop::collection::vec((1usize..6, 0usize..300), 1..40),
        segment_bytes in 300u64..3000,
        index_interval_bytes in 64u64..1024,
        delete_before in 0usize..8,
        high_watermark_back in 0i64..10,
        reads in prop::collection::vec((0i64..200, 0usize..4000, 0i64..200), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes,
            index_interval_bytes,
            file_delete_delay_ms: 0,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path().join("t-0"), config).unwrap();
        for (i, (records, value_bytes)) in batches.iter().enumerate() {
            let mut b = sized_batch(*records, *value_bytes, 1_000 + i as i64);
            log.append_as_leader(&mut b, 0, 2_000).unwrap();
        }
        let leo = log.log_end_offset();
        log.set_high_watermark(leo - high_watermark_back.min(leo));
        if delete_before > 0 {
            let to = (delete_before as i64 * 3).min(log.high_watermark());
            log.delete_records_before(to).unwrap();
        }
        let lso = log.log_start_offset();
        for (offset, max_bytes, upper_bound) in reads {
            // Offsets around the readable range, out-of-range ones included.
            let offset = lso - 1 + offset % (leo - lso + 3);
            same_as_read(&log, offset, max_bytes, upper_bound);
            same_as_read(&log, offset, max_bytes, log.high_watermark());
            same_as_read(&log, offset, usize::MAX, i64::MAX);
        }
    }
}

#[test]
fn slices_cover_whole_batches_and_respect_kip_74() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), LogConfig::default()).unwrap();
    let mut sizes = Vec::new();
    for i in 0..5 {
        let mut b = sized_batch(2, 500, 1_000 + i);
        sizes.push(b.len() as u64);
        log.append_as_leader(&mut b, 0, 2_000).unwrap();
    }
    let leo = log.log_end_offset();
    // One byte asked: still the first whole batch (KIP-74).
    let one = log.read_slices(0, 1, leo).unwrap();
    assert_eq!(one.len_bytes(), sizes[0]);
    // Two and a half batches' worth: two batches.
    let two = log
        .read_slices(0, (sizes[0] + sizes[1] + sizes[2] / 2) as usize, leo)
        .unwrap();
    assert_eq!(two.len_bytes(), sizes[0] + sizes[1]);
    // The upper bound cuts before the batch starting at it.
    let bounded = log.read_slices(0, usize::MAX, 4).unwrap();
    assert_eq!(bounded.len_bytes(), sizes[0] + sizes[1]);
    // Nothing at the upper bound or at the log end.
    assert!(log.read_slices(4, usize::MAX, 4).unwrap().slices.is_empty());
    assert!(log
        .read_slices(leo, usize::MAX, leo)
        .unwrap()
        .slices
        .is_empty());
    assert!(matches!(
        log.read_slices(leo + 1, 10, leo),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn slices_stay_readable_after_retention_deletes_their_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 400,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path().join("t-0"), config).unwrap();
    for i in 0..20 {
        let mut b = batch(3, i, 1_000 + i as i64);
        log.append_as_leader(&mut b, 0, 2_000).unwrap();
    }
    let leo = log.log_end_offset();
    log.set_high_watermark(leo);
    let before = log.read_slices(0, usize::MAX, leo).unwrap();
    let expected = log.read(0, usize::MAX, leo).unwrap().data;
    assert!(!before.slices.is_empty());
    log.delete_records_before(leo - 1).unwrap();
    log.apply_retention(i64::MAX / 2).unwrap();
    assert!(log.log_start_offset() > 0);
    assert!(
        !dir.path()
            .join("t-0")
            .join("00000000000000000000.log")
            .exists(),
        "the first segment was deleted"
    );
    assert!(matches!(
        log.read_slices(0, usize::MAX, leo),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert_eq!(materialize(&before), expected.as_ref());
}
