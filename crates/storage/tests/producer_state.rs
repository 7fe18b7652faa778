//! Idempotent-producer state in the log (KIP-98): checked on append, rebuilt on open from snapshots and batch
//! headers (clean and unclean restarts), cut with the log on truncation; a snapshot plus the replayed tail
//! equals a replay of the whole log.

mod common;

use proptest::prelude::*;
use sluice_storage::producer_state::SNAPSHOT_SUFFIX;
use sluice_storage::{AppendError, Log, LogConfig, ProducerError};
use sluice_testkit::BatchBuilder;

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

/// An idempotent batch of `records` records from `producer_id` at `epoch` starting at `sequence`.
fn idem(producer_id: i64, epoch: i16, sequence: i32, records: usize) -> Vec<u8> {
    BatchBuilder::new()
        .timestamp_ms(1_000)
        .values((0..records).map(|i| format!("p{producer_id}-e{epoch}-s{}", sequence as usize + i)))
        .idempotent(producer_id, epoch, sequence)
        .build()
}

fn snapshots(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(SNAPSHOT_SUFFIX))
        .collect();
    v.sort();
    v
}

fn assert_duplicate(log: &Log, batch: &mut [u8], base: i64, last: i64) {
    match log.append_as_leader(batch, 0, 0) {
        Err(AppendError::DuplicateSequence {
            base_offset,
            last_offset,
            ..
        }) => assert_eq!((base_offset, last_offset), (base, last)),
        other => panic!("expected a duplicate at {base}..={last}, got {other:?}"),
    }
}

#[test]
fn sequences_are_checked_and_retries_answered_with_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), small()).unwrap();
    log.append_as_leader(&mut common::batch(2, 0, 0), 0, 0)
        .unwrap();
    let a = log.append_as_leader(&mut idem(7, 0, 0, 3), 0, 0).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (2, 4));
    log.append_as_leader(&mut idem(7, 0, 3, 1), 0, 0).unwrap();
    let leo = log.log_end_offset();
    assert_duplicate(&log, &mut idem(7, 0, 0, 3), 2, 4);
    assert_eq!(log.log_end_offset(), leo, "a duplicate is not appended");
    assert!(matches!(
        log.append_as_leader(&mut idem(7, 0, 9, 1), 0, 0),
        Err(AppendError::Producer(ProducerError::OutOfOrderSequence {
            expected: 4,
            got: 9,
            ..
        }))
    ));
    log.append_as_leader(&mut idem(7, 1, 0, 1), 0, 0).unwrap();
    assert!(matches!(
        log.append_as_leader(&mut idem(7, 0, 4, 1), 0, 0),
        Err(AppendError::Producer(ProducerError::InvalidProducerEpoch {
            current: 1,
            ..
        }))
    ));
    assert_eq!(log.log_end_offset(), leo + 1);
    // Two batches of one producer in one call must follow each other.
    let mut two = idem(8, 0, 0, 2);
    two.extend(idem(8, 0, 2, 1));
    log.append_as_leader(&mut two, 0, 0).unwrap();
    let mut gap = idem(9, 0, 0, 2);
    gap.extend(idem(9, 0, 5, 1));
    assert!(log.append_as_leader(&mut gap, 0, 0).is_err());
    assert!(
        log.producer_state().get(9).is_none(),
        "nothing of a refused call is kept"
    );
}

#[test]
fn state_survives_clean_and_unclean_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut seq = 0;
    {
        let log = Log::open(&path, small()).unwrap();
        for i in 0..30 {
            log.append_as_leader(&mut idem(1, 0, seq, 1 + i % 3), 0, 0)
                .unwrap();
            seq += 1 + i as i32 % 3;
            log.append_as_leader(&mut common::batch(1, i as u64, 0), 0, 0)
                .unwrap();
        }
        assert!(log.segment_count() > 3);
        assert!(!snapshots(&path).is_empty(), "snapshots at segment rolls");
        log.close().unwrap();
    }
    let expected = {
        let log = Log::open(&path, small()).unwrap();
        let state = log.producer_state();
        let last = *state.get(1).unwrap().batches.back().unwrap();
        assert_eq!(last.last_sequence, seq - 1);
        assert_duplicate(
            &log,
            &mut idem(
                1,
                0,
                last.first_sequence,
                (last.last_sequence - last.first_sequence + 1) as usize,
            ),
            last.base_offset,
            last.last_offset,
        );
        assert!(matches!(
            log.append_as_leader(&mut idem(1, 0, seq + 1, 1), 0, 0),
            Err(AppendError::Producer(
                ProducerError::OutOfOrderSequence { .. }
            ))
        ));
        log.append_as_leader(&mut idem(1, 0, seq, 2), 0, 0).unwrap();
        log.producer_state()
        // Dropped without close: the next open is unclean and replays from the latest snapshot.
    };
    let log = Log::open(&path, small()).unwrap();
    assert_eq!(log.producer_state(), expected);
    assert_duplicate(
        &log,
        &mut idem(1, 0, seq, 2),
        expected.map_end_offset() - 2,
        expected.map_end_offset() - 1,
    );
}

#[test]
fn truncation_drops_state_above_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let log = Log::open(&path, small()).unwrap();
    let mut ends = Vec::new();
    for s in 0..20 {
        let info = log.append_as_leader(&mut idem(3, 0, s, 1), 0, 0).unwrap();
        ends.push(info.last_offset + 1);
    }
    log.close().unwrap();
    let log = Log::open(&path, small()).unwrap();
    // Cut after the batch with sequence 11: snapshots above the cut are gone, sequence 12 is next again.
    log.truncate_to(ends[11]).unwrap();
    let state = log.producer_state();
    assert_eq!(state.map_end_offset(), ends[11]);
    assert_eq!(
        state.get(3).unwrap().batches.back().unwrap().last_sequence,
        11
    );
    for name in snapshots(&path) {
        let offset: i64 = name.trim_end_matches(SNAPSHOT_SUFFIX).parse().unwrap();
        assert!(offset <= ends[11], "snapshot {name} above the cut");
    }
    assert!(matches!(
        log.append_as_leader(&mut idem(3, 0, 15, 1), 0, 0),
        Err(AppendError::Producer(ProducerError::OutOfOrderSequence {
            expected: 12,
            ..
        }))
    ));
    log.append_as_leader(&mut idem(3, 0, 12, 1), 0, 0).unwrap();
    // Truncating below every batch of the producer forgets it.
    log.truncate_fully_and_start_at(log.log_end_offset())
        .unwrap();
    assert!(log.producer_state().is_empty());
    assert!(snapshots(&path).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The live state, the state reopened from the latest snapshot plus the tail, and the state replayed
    /// from the whole log (snapshots removed) are equal.
    #[test]
    fn snapshot_plus_tail_equals_full_replay(
        ops in proptest::collection::vec((0i64..3, 1usize..4, 0u8..10), 1..60),
        clean in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let log = Log::open(&path, small()).unwrap();
        let mut next = [(0i16, 0i32); 3];
        for (pid, records, action) in ops {
            let (epoch, seq) = &mut next[pid as usize];
            match action {
                0 => { *epoch += 1; *seq = 0; }
                1 => { log.roll().unwrap(); continue; }
                2 => { log.append_as_leader(&mut common::batch(records, 0, 0), 0, 0).unwrap(); continue; }
                _ => {}
            }
            log.append_as_leader(&mut idem(pid, *epoch, *seq, records), 0, 0).unwrap();
            *seq += records as i32;
        }
        let live = log.producer_state();
        if clean { log.close().unwrap(); }
        drop(log);
        let reopened = Log::open(&path, small()).unwrap().producer_state();
        prop_assert_eq!(&reopened, &live);
        for name in snapshots(&path) {
            std::fs::remove_file(path.join(name)).unwrap();
        }
        let replayed = Log::open(&path, small()).unwrap().producer_state();
        prop_assert_eq!(&replayed, &live);
    }
}

#[test]
fn every_roll_writes_a_snapshot_so_an_unclean_open_replays_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let log = Log::open(&path, small()).unwrap();
    for i in 0..20 {
        log.append_as_leader(&mut common::batch(2, i, 0), 0, 0)
            .unwrap();
    }
    let rolled = log.segment_count() - 1;
    assert!(rolled >= 3);
    // Even without producers: otherwise an unclean open would replay every segment since the last close.
    assert_eq!(snapshots(&path).len(), rolled);
    log.append_as_leader(&mut idem(5, 0, 0, 1), 0, 0).unwrap();
    log.roll().unwrap();
    let expected = log.producer_state();
    drop(log);
    // Damage the latest snapshot: the open falls back to the previous one and replays more.
    let latest = snapshots(&path).pop().unwrap();
    std::fs::write(path.join(&latest), b"torn").unwrap();
    let log = Log::open(&path, small()).unwrap();
    assert_eq!(log.producer_state(), expected);
    assert!(
        !snapshots(&path).contains(&latest),
        "an invalid snapshot is removed"
    );
}
