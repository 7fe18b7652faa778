//! Behaviour of one partition log: append validation, reads (KIP-74, upper bound), offsets by timestamp,
//! leader epochs, truncation, delete-records, retention, rolling, reopen and flush.

mod common;

use common::{batch, read_all};
use sluice_protocol::batch::{Batches, CRC_OFFSET, MAGIC_OFFSET};
use sluice_storage::{AppendError, Log, LogConfig, ReadError, StorageError, TimestampType};
use sluice_testkit::batch::sized_batch;

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 512,
        index_interval_bytes: 128,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

#[test]
fn append_assigns_offsets_and_epoch_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), LogConfig::default()).unwrap();
    let mut b = batch(3, 1, 1_000);
    let info = log.append_as_leader(&mut b, 5, 2_000).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (0, 2, 3)
    );
    assert_eq!(info.log_append_time_ms, -1);
    assert_eq!(info.max_timestamp_ms, 1_000);
    let mut two = batch(2, 2, 1_500);
    two.extend(batch(4, 3, 1_600));
    let info = log.append_as_leader(&mut two, 5, 2_000).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (3, 8, 6)
    );
    assert_eq!(log.log_end_offset(), 9);
    let all = read_all(&log);
    assert_eq!(
        all.iter().map(|b| (b.0, b.1)).collect::<Vec<_>>(),
        vec![(0, 2), (3, 4), (5, 8)]
    );
    for (_, _, bytes) in &all {
        assert_eq!(common::header(bytes).partition_leader_epoch(), 5);
    }
    assert_eq!(log.latest_epoch(), Some(5));
}

#[test]
fn invalid_batches_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path().join("t-0"),
        LogConfig {
            max_message_bytes: 2000,
            ..LogConfig::default()
        },
    )
    .unwrap();
    let mut bad_crc = batch(2, 1, 0);
    bad_crc[CRC_OFFSET] ^= 1;
    assert!(matches!(
        log.append_as_leader(&mut bad_crc, 0, 0),
        Err(AppendError::Corrupt(_))
    ));
    let mut magic1 = batch(2, 1, 0);
    magic1[MAGIC_OFFSET] = 1;
    assert!(matches!(
        log.append_as_leader(&mut magic1, 0, 0),
        Err(AppendError::UnsupportedMagic(1))
    ));
    let mut big = sized_batch(3, 1000, 0);
    assert!(matches!(
        log.append_as_leader(&mut big, 0, 0),
        Err(AppendError::TooLarge { max: 2000, .. })
    ));
    // A good batch followed by a cut one: all-or-nothing.
    let mut mixed = batch(2, 1, 0);
    let cut = batch(2, 2, 0);
    mixed.extend_from_slice(&cut[..cut.len() - 3]);
    assert!(matches!(
        log.append_as_leader(&mut mixed, 0, 0),
        Err(AppendError::Corrupt(_))
    ));
    assert!(matches!(
        log.append_as_leader(&mut [], 0, 0),
        Err(AppendError::InvalidRecord(_))
    ));
    // Record count that disagrees with lastOffsetDelta.
    let mut wrong = batch(3, 1, 0);
    wrong[57..61].copy_from_slice(&2i32.to_be_bytes());
    let crc = crc32c::crc32c(&wrong[21..]);
    wrong[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        log.append_as_leader(&mut wrong, 0, 0),
        Err(AppendError::InvalidRecord(_))
    ));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn log_append_time_rewrites_timestamp_and_crc() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path().join("t-0"), cfg).unwrap();
    let mut b = batch(2, 1, 10);
    let info = log.append_as_leader(&mut b, 0, 77_000).unwrap();
    assert_eq!(info.log_append_time_ms, 77_000);
    let all = read_all(&log);
    let h = common::header(&all[0].2);
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp(), 77_000);
}

#[test]
fn read_respects_upper_bound_max_bytes_and_kip74() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), small_config()).unwrap();
    let mut sizes = Vec::new();
    for i in 0..20u64 {
        let mut b = batch(3, i, 1000 + i as i64);
        sizes.push(b.len());
        log.append_as_leader(&mut b, 0, 0).unwrap();
    }
    assert!(log.segment_count() > 1, "small segments roll");
    // Offset in the middle of a batch returns that whole batch first.
    let r = log.read(4, 1 << 20, i64::MAX).unwrap();
    let first = Batches::new(&r.data).next().unwrap().unwrap().1;
    assert_eq!(first.base_offset(), 3);
    // max_bytes smaller than one batch still returns one whole batch (KIP-74).
    let r = log.read(0, 1, i64::MAX).unwrap();
    assert_eq!(r.data.len(), sizes[0]);
    // max_bytes covering 2.5 batches returns 2.
    let r = log
        .read(0, sizes[0] + sizes[1] + sizes[2] / 2, i64::MAX)
        .unwrap();
    assert_eq!(Batches::new(&r.data).count(), 2);
    // Upper bound (high watermark) cuts at a batch boundary.
    let r = log.read(0, 1 << 20, 6).unwrap();
    let batches: Vec<_> = Batches::new(&r.data)
        .map(|b| b.unwrap().1.base_offset())
        .collect();
    assert_eq!(batches, vec![0, 3]);
    assert!(log.read(6, 1 << 20, 6).unwrap().data.is_empty());
    // Out of range.
    assert!(matches!(
        log.read(61, 100, i64::MAX),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert!(log.read(60, 100, i64::MAX).unwrap().data.is_empty());
    assert_eq!(read_all(&log).len(), 20);
}

#[test]
fn high_watermark_only_moves_forward_on_the_leader_path() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), LogConfig::default()).unwrap();
    log.append_as_leader(&mut batch(5, 0, 0), 0, 0).unwrap();
    log.set_high_watermark(5);
    assert_eq!(log.high_watermark(), 5);
    // A stale value from a racing appender is ignored.
    log.set_high_watermark(2);
    assert_eq!(log.high_watermark(), 5);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "above the log end offset")]
fn high_watermark_above_the_log_end_is_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), LogConfig::default()).unwrap();
    log.append_as_leader(&mut batch(5, 0, 0), 0, 0).unwrap();
    log.set_high_watermark(6);
}

#[test]
fn a_follower_adopts_its_leaders_high_watermark_within_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), small_config()).unwrap();
    for i in 0..4 {
        log.append_as_leader(&mut batch(5, i, 0), 0, 0).unwrap();
    }
    // The leader is ahead of this log: bounded by the log end.
    assert_eq!(log.update_high_watermark_as_follower(100), 20);
    // A new leader behind the old one: the follower follows it down.
    assert_eq!(log.update_high_watermark_as_follower(7), 7);
    assert_eq!(log.high_watermark(), 7);
    log.delete_records_before(5).unwrap();
    assert_eq!(
        log.update_high_watermark_as_follower(0),
        5,
        "never below the log start"
    );
}

#[test]
fn offset_for_timestamp_and_max_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), small_config()).unwrap();
    for i in 0..30i64 {
        // Timestamps rise with a dip at batch 10.
        let ts = if i == 10 { 50 } else { 1000 + i * 10 };
        log.append_as_leader(&mut batch(2, i as u64, ts), 1, 0)
            .unwrap();
    }
    let found = log.offset_for_timestamp(1125).unwrap().unwrap();
    assert_eq!(found.offset, 26); // batch 13 (ts 1130) starts at 26
    assert_eq!(found.timestamp_ms, 1130);
    assert_eq!(found.leader_epoch, Some(1));
    assert_eq!(log.offset_for_timestamp(0).unwrap().unwrap().offset, 0);
    assert_eq!(log.offset_for_timestamp(10_000).unwrap(), None);
    let max = log.max_timestamp_offset().unwrap().unwrap();
    assert_eq!((max.timestamp_ms, max.offset), (1290, 58));
}

#[test]
fn epochs_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), small_config()).unwrap();
    for i in 0..10i64 {
        let epoch = if i < 4 { 1 } else { 3 };
        log.append_as_leader(&mut batch(3, i as u64, 100 + i), epoch, 0)
            .unwrap();
    }
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 12)));
    assert_eq!(log.end_offset_for_epoch(2), Some((1, 12)));
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 30)));
    assert_eq!(log.end_offset_for_epoch(4), None);
    log.set_high_watermark(30);
    log.truncate_to(13).unwrap(); // inside batch 12..=14: that batch goes
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(log.high_watermark(), 12);
    assert_eq!(log.latest_epoch(), Some(1));
    assert_eq!(read_all(&log).len(), 4);
    log.append_as_leader(&mut batch(1, 99, 0), 4, 0).unwrap();
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 12)));
    assert_eq!(log.end_offset_for_epoch(4), Some((4, 13)));
    // Reopen keeps everything.
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path().join("t-0"), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), 13);
    assert_eq!(log.end_offset_for_epoch(3), Some((1, 12)));
    assert_eq!(read_all(&log).len(), 5);
    log.truncate_fully_and_start_at(500).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.high_watermark()
        ),
        (500, 500, 500)
    );
    assert_eq!(log.latest_epoch(), None);
    let info = log.append_as_leader(&mut batch(2, 1, 0), 7, 0).unwrap();
    assert_eq!(info.base_offset, 500);
}

#[test]
fn delete_records_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), small_config()).unwrap();
    for i in 0..40i64 {
        log.append_as_leader(&mut batch(2, i as u64, 1_000 + i), 0, 0)
            .unwrap();
    }
    let segments = log.segment_count();
    assert!(segments >= 3);
    assert!(matches!(
        log.delete_records_before(10),
        Err(StorageError::AboveHighWatermark { .. })
    ));
    log.set_high_watermark(80);
    assert_eq!(log.delete_records_before(11).unwrap(), 11);
    assert_eq!(log.delete_records_before(5).unwrap(), 11, "never backwards");
    assert!(matches!(
        log.read(10, 100, i64::MAX),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    // Offset 11 is inside batch 10..=11; the whole batch comes back.
    let r = log.read(11, 100, i64::MAX).unwrap();
    assert_eq!(
        Batches::new(&r.data)
            .next()
            .unwrap()
            .unwrap()
            .1
            .base_offset(),
        10
    );
    // Retention by size keeps at most ~retention_bytes.
    let mut cfg = small_config();
    cfg.retention_bytes = 1000;
    log.update_config(cfg.clone());
    let deleted = log.apply_retention(2_000).unwrap();
    assert!(deleted > 0);
    assert!(log.size_bytes() <= 1000 + 512, "size {}", log.size_bytes());
    let lso = log.log_start_offset();
    assert!(lso > 11);
    assert_eq!(read_all(&log).first().map(|b| b.0), Some(lso));
    // Retention by time deletes everything old, rolling the active segment.
    cfg.retention_bytes = -1;
    cfg.retention_ms = 1000;
    log.update_config(cfg);
    log.apply_retention(1_000_000).unwrap();
    assert_eq!(log.log_start_offset(), 80);
    assert_eq!(log.log_end_offset(), 80);
    assert_eq!(log.size_bytes(), 0);
    let info = log.append_as_leader(&mut batch(1, 0, 0), 0, 0).unwrap();
    assert_eq!(info.base_offset, 80);
}

#[test]
fn retention_never_passes_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config();
    cfg.retention_ms = 1;
    let log = Log::open(dir.path().join("t-0"), cfg).unwrap();
    for i in 0..40i64 {
        log.append_as_leader(&mut batch(2, i as u64, 1_000), 0, 0)
            .unwrap();
    }
    log.apply_retention(1_000_000).unwrap();
    assert_eq!(
        log.log_start_offset(),
        0,
        "high watermark 0 keeps everything"
    );
    log.set_high_watermark(40);
    log.apply_retention(1_000_000).unwrap();
    assert!(log.log_start_offset() <= 40 && log.log_start_offset() > 0);
}

#[test]
fn reopen_after_clean_close_and_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    {
        let log = Log::open(&path, small_config()).unwrap();
        for i in 0..25 {
            log.append_as_leader(&mut batch(2, i, 1_000), 2, 0).unwrap();
        }
        log.set_high_watermark(40);
        log.close().unwrap();
        assert!(matches!(
            log.append_as_leader(&mut batch(1, 0, 0), 0, 0),
            Err(AppendError::Storage(StorageError::Closed { .. }))
        ));
    }
    assert!(path.join(".clean-shutdown").exists());
    let before;
    {
        let log = Log::open(&path, small_config()).unwrap();
        assert!(
            !path.join(".clean-shutdown").exists(),
            "marker removed at open"
        );
        assert_eq!(log.log_end_offset(), 50);
        // A log alone keeps no high watermark (the LogManager checkpoints it): the log end offset.
        assert_eq!(log.high_watermark(), 50);
        before = read_all(&log);
        log.append_as_leader(&mut batch(2, 99, 1_000), 2, 0)
            .unwrap();
        // Dropped without close: unclean.
    }
    let log = Log::open(&path, small_config()).unwrap();
    assert_eq!(log.log_end_offset(), 52);
    let after = read_all(&log);
    assert_eq!(&after[..before.len()], &before[..]);
    assert_eq!(log.latest_epoch(), Some(2));
}

#[test]
fn flush_returns_durable_offset_and_flush_messages_forces() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), LogConfig::default()).unwrap();
    log.append_as_leader(&mut batch(3, 0, 0), 0, 0).unwrap();
    assert_eq!(log.recovery_point(), 0);
    assert_eq!(log.flush().unwrap(), 3);
    assert_eq!(log.recovery_point(), 3);
    log.update_config(LogConfig {
        flush_messages: Some(1),
        ..LogConfig::default()
    });
    log.append_as_leader(&mut batch(2, 0, 0), 0, 0).unwrap();
    assert_eq!(
        log.recovery_point(),
        5,
        "flush.messages=1 makes the append durable before returning"
    );
    log.update_config(LogConfig {
        flush_messages: Some(10),
        ..LogConfig::default()
    });
    log.append_as_leader(&mut batch(2, 0, 0), 0, 0).unwrap();
    assert_eq!(log.recovery_point(), 5);
    log.update_config(LogConfig {
        flush_ms: Some(0),
        ..LogConfig::default()
    });
    log.flush_if_due(i64::MAX).unwrap();
    assert_eq!(log.recovery_point(), 7);
}

#[test]
fn follower_append_keeps_offsets_and_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Log::open(dir.path().join("l-0"), LogConfig::default()).unwrap();
    leader.append_as_leader(&mut batch(2, 0, 0), 1, 0).unwrap();
    leader.append_as_leader(&mut batch(3, 1, 0), 2, 0).unwrap();
    let data = leader.read(0, 1 << 20, i64::MAX).unwrap().data.to_vec();
    let follower = Log::open(dir.path().join("f-0"), LogConfig::default()).unwrap();
    let info = follower.append_as_follower(&data).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (0, 4));
    assert_eq!(follower.epoch_entries(), vec![(1, 0), (2, 2)]);
    let again = leader.read(0, 1 << 20, i64::MAX).unwrap().data.to_vec();
    assert!(
        follower.append_as_follower(&again).is_err(),
        "offsets below LEO are refused"
    );
}

#[test]
fn follower_append_checks_every_batch_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Log::open(dir.path().join("l-0"), LogConfig::default()).unwrap();
    leader.append_as_leader(&mut batch(2, 0, 0), 1, 0).unwrap();
    leader.append_as_leader(&mut batch(3, 1, 0), 1, 0).unwrap();
    let data = leader.read(0, 1 << 20, i64::MAX).unwrap().data.to_vec();
    let first = common::header(&data).size();
    let follower = Log::open(dir.path().join("f-0"), LogConfig::default()).unwrap();
    // A flipped byte in the second batch's records: CRC32C refuses the whole answer, nothing is written.
    let mut corrupt = data.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(matches!(
        follower.append_as_follower(&corrupt),
        Err(AppendError::Corrupt(_))
    ));
    assert_eq!(follower.log_end_offset(), 0);
    // The second batch before the first: offsets go back within the answer.
    let mut swapped = data[first..].to_vec();
    swapped.extend_from_slice(&data[..first]);
    assert!(follower.append_as_follower(&swapped).is_err());
    assert_eq!(follower.log_end_offset(), 0);
    // The batches as the leader wrote them are taken byte for byte.
    follower.append_as_follower(&data).unwrap();
    assert_eq!(follower.log_end_offset(), 5);
    assert_eq!(
        follower.read(0, 1 << 20, i64::MAX).unwrap().data.to_vec(),
        data
    );
}

#[test]
fn rolls_on_segment_ms_and_full_index() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path().join("t-0"), cfg).unwrap();
    log.append_as_leader(&mut batch(1, 0, 10_000), 0, 10_000)
        .unwrap();
    log.append_as_leader(&mut batch(1, 1, 10_500), 0, 10_500)
        .unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append_as_leader(&mut batch(1, 2, 11_500), 0, 11_500)
        .unwrap();
    assert_eq!(
        log.segment_count(),
        2,
        "first batch of the segment is older than segment.ms"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_index_bytes: 16,
        index_interval_bytes: 1,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path().join("t-0"), cfg).unwrap();
    for i in 0..4 {
        log.append_as_leader(&mut batch(1, i, 0), 0, 0).unwrap();
    }
    // Entries are added from the second batch on; two 8-byte entries fill a 16-byte index.
    assert_eq!(log.segment_count(), 2);
    assert_eq!(read_all(&log).len(), 4);
}

#[test]
fn timestamps_resolve_to_the_exact_record_in_uncompressed_batches() {
    use sluice_protocol::batch::build_batch_with_timestamps;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), LogConfig::default()).unwrap();
    let mut first = build_batch_with_timestamps(&[(100, b"a"), (300, b"b"), (200, b"c")]);
    log.append_as_leader(&mut first, 4, 0).unwrap();
    let mut second = build_batch_with_timestamps(&[(400, b"d"), (500, b"e"), (450, b"f")]);
    log.append_as_leader(&mut second, 4, 0).unwrap();
    // ListOffsets: the first record (not batch) with a timestamp >= the target, as Kafka returns.
    let hit = |ts| {
        log.offset_for_timestamp(ts)
            .unwrap()
            .map(|t| (t.timestamp_ms, t.offset))
    };
    assert_eq!(hit(150), Some((300, 1)));
    assert_eq!(hit(300), Some((300, 1)));
    assert_eq!(hit(301), Some((400, 3)));
    assert_eq!(hit(460), Some((500, 4)));
    assert_eq!(hit(501), None);
    // KIP-734: the record holding the max timestamp.
    let max = log.max_timestamp_offset().unwrap().unwrap();
    assert_eq!(
        (max.timestamp_ms, max.offset, max.leader_epoch),
        (500, 4, Some(4))
    );
    // After DeleteRecords past that record's batch start, offsets never go below the log start.
    log.set_high_watermark(6);
    log.delete_records_before(5).unwrap();
    assert_eq!(hit(0), Some((450, 5)));
}
