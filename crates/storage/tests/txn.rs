//! Transactions in the partition log (KIP-98; Kafka's `ProducerStateManager`, `TransactionIndex`,
//! `UnifiedLog.lastStableOffset` and `collectAbortedTransactions`): COMMIT and ABORT markers, the last stable
//! offset through interleaved transactions, the aborted transactions of a range across segment rolls, fencing of
//! stale markers, restarts (clean and unclean) keeping the LSO and the aborted list, truncation, retention, torn and
//! corrupt `.txnindex` files, follower appends, log-directory moves and compaction of transactional data.

mod common;

use std::path::Path;
use std::sync::Arc;

use sluice_protocol::batch::{self, BatchHeader, Batches};
use sluice_storage::log::{CleanOptions, CopyControl, DELETE_HORIZON_FLAG};
use sluice_storage::records::{control_batch, control_type, end_txn_marker, parse_raw_records};
use sluice_storage::txn_index::ABORTED_TXN_BYTES;
use sluice_storage::{
    AbortedTxn, AppendError, AppendInfo, AppendOrigin, ControlType, DirHealth, Log, LogConfig,
    OngoingTxn, ProducerError,
};
use sluice_testkit::BatchBuilder;

fn config() -> LogConfig {
    LogConfig {
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

/// Sets the transactional bit of a batch and recomputes its CRC.
fn transactional(mut b: Vec<u8>) -> Vec<u8> {
    let at = batch::ATTRIBUTES_OFFSET;
    let attributes = i16::from_be_bytes([b[at], b[at + 1]]) | batch::TRANSACTIONAL_FLAG_MASK;
    b[at..at + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&b[at..]);
    b[batch::CRC_OFFSET..batch::CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A transactional producer: id, epoch and next sequence.
struct Producer {
    id: i64,
    epoch: i16,
    sequence: i32,
}

impl Producer {
    fn new(id: i64) -> Self {
        Producer {
            id,
            epoch: 0,
            sequence: 0,
        }
    }

    /// The next transactional batch of `records` records keyed `key`, without appending it.
    fn batch(&self, key: &str, records: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new().timestamp_ms(1_000 + self.id);
        for i in 0..records {
            b = b.key_value(key, format!("p{}-s{}", self.id, self.sequence + i as i32));
        }
        transactional(b.idempotent(self.id, self.epoch, self.sequence).build())
    }

    /// Appends a transactional batch of `records` records with key `key`.
    fn send_key(&mut self, log: &Log, key: &str, records: usize) -> AppendInfo {
        let info = log
            .append_as_leader(&mut self.batch(key, records), 0, 0)
            .unwrap();
        self.sequence += records as i32;
        info
    }

    fn send(&mut self, log: &Log, records: usize) -> AppendInfo {
        self.send_key(log, "k", records)
    }

    /// Appends the COMMIT or ABORT marker of the producer's transaction; returns the marker's offset.
    fn end(&self, log: &Log, commit: bool) -> i64 {
        let mut marker = control_batch(self.id, self.epoch, commit, 7, 2_000 + self.id);
        let info = log.append_as_leader(&mut marker, 0, 0).unwrap();
        assert_eq!(
            info.base_offset, info.last_offset,
            "a marker takes one offset"
        );
        info.base_offset
    }
}

fn plain(log: &Log) -> i64 {
    log.append_as_leader(&mut common::batch(1, 0, 1_000), 0, 0)
        .unwrap()
        .base_offset
}

fn aborted(producer_id: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id,
        first_offset: first,
        last_offset: last,
        last_stable_offset: lso,
    }
}

fn commit_hw(log: &Log) {
    log.set_high_watermark(log.log_end_offset());
}

fn files(dir: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn txn_index_name(base: i64) -> String {
    format!("{base:020}.txnindex")
}

/// Everything a restart must keep: LSO, aborted transactions, open transactions, producer state.
type Observed = (
    i64,
    Vec<AbortedTxn>,
    Vec<OngoingTxn>,
    sluice_storage::ProducerState,
);

fn observe(log: &Log) -> Observed {
    (
        log.last_stable_offset(),
        log.aborted_transactions(0, log.log_end_offset() + 1)
            .unwrap(),
        log.ongoing_transactions(),
        log.producer_state(),
    )
}

#[test]
fn control_batches_are_kafkas_end_transaction_markers() {
    let commit = control_batch(42, 3, true, 9, 1_234);
    let h = BatchHeader::new(&commit).unwrap();
    h.validate_produced().unwrap();
    assert!(h.is_control() && h.is_transactional());
    assert_eq!(
        h.attributes(),
        0x30,
        "transactional | control, CreateTime, uncompressed"
    );
    assert_eq!(
        (h.producer_id(), h.producer_epoch(), h.base_sequence()),
        (42, 3, -1)
    );
    assert_eq!(
        (h.base_offset(), h.record_count(), h.max_timestamp()),
        (0, 1, 1_234)
    );
    assert_eq!(control_type(&commit), Some(ControlType::Commit));
    let marker = end_txn_marker(&commit).unwrap();
    assert_eq!(marker.coordinator_epoch, 9);
    assert_eq!(
        control_type(&control_batch(42, 3, false, 9, 1_234)),
        Some(ControlType::Abort)
    );
    // Key (version 0, type 1) and value (version 0, coordinator epoch) as Kafka writes them.
    let records = parse_raw_records(&commit[batch::RECORD_BATCH_OVERHEAD..]).unwrap();
    let r = &records[0];
    let body = &commit[batch::RECORD_BATCH_OVERHEAD..];
    assert_eq!(&body[r.key.clone().unwrap()], &[0, 0, 0, 1]);
    assert_eq!(&body[r.value.clone().unwrap()], &[0, 0, 0, 0, 0, 9]);
    // Not a control batch, or an unknown control type (KRaft's LEADER_CHANGE is 2): None.
    assert_eq!(control_type(&common::batch(1, 0, 0)), None);
    let mut other = commit.to_vec();
    let key_at = batch::RECORD_BATCH_OVERHEAD + r.key.clone().unwrap().start;
    other[key_at + 3] = 2;
    assert_eq!(control_type(&other), None);
    assert_eq!(end_txn_marker(&other), None);
    // Garbage never panics.
    for cut in 0..commit.len() {
        let _ = control_type(&commit[..cut]);
        let _ = end_txn_marker(&commit[..cut]);
    }
}

#[test]
fn commit_and_abort_markers_end_transactions_and_move_the_last_stable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), config()).unwrap();
    let mut p = Producer::new(1);
    assert_eq!(p.send(&log, 2).base_offset, 0);
    assert_eq!(
        log.ongoing_transactions(),
        vec![OngoingTxn {
            producer_id: 1,
            producer_epoch: 0,
            first_offset: 0,
            last_timestamp_ms: 1_001
        }]
    );
    assert_eq!(
        log.producer_state()
            .get(1)
            .unwrap()
            .current_txn_first_offset,
        Some(0)
    );
    commit_hw(&log);
    assert_eq!(log.high_watermark(), 2);
    assert_eq!(log.last_stable_offset(), 0, "the open transaction holds it");
    assert_eq!(p.end(&log, true), 2);
    assert!(log.ongoing_transactions().is_empty());
    assert_eq!(
        log.last_stable_offset(),
        0,
        "a completed transaction stays unstable until the high watermark passes its marker"
    );
    commit_hw(&log);
    assert_eq!(log.last_stable_offset(), 3);
    assert!(log.aborted_transactions(0, 3).unwrap().is_empty());
    assert!(
        files(&log.dir(), ".txnindex").is_empty(),
        "a commit indexes nothing"
    );

    p.send(&log, 1);
    assert_eq!(p.end(&log, false), 4);
    commit_hw(&log);
    assert_eq!(log.last_stable_offset(), 5);
    assert_eq!(
        log.aborted_transactions(0, 5).unwrap(),
        vec![aborted(1, 3, 4, 5)]
    );
    // The index file is Kafka's: one 34-byte entry.
    let index = std::fs::read(log.dir().join(txn_index_name(0))).unwrap();
    assert_eq!(index, aborted(1, 3, 4, 5).encode().to_vec());
    // Reads report the LSO and the markers come back as control batches.
    let read = log.read(0, 1 << 20, log.last_stable_offset()).unwrap();
    assert_eq!(read.last_stable_offset, 5);
    let types: Vec<Option<ControlType>> = Batches::new(&read.data)
        .map(|b| control_type(b.unwrap().1.bytes()))
        .collect();
    assert_eq!(
        types,
        vec![
            None,
            Some(ControlType::Commit),
            None,
            Some(ControlType::Abort)
        ]
    );
    assert_eq!(
        log.read_slices(0, 1 << 20, 5).unwrap().last_stable_offset,
        5
    );
    // A read_committed consumer stops at the LSO: nothing of an open transaction.
    p.send(&log, 1);
    commit_hw(&log);
    let lso = log.last_stable_offset();
    assert_eq!(lso, 5);
    let read = log.read(5, 1 << 20, lso).unwrap();
    assert!(read.data.is_empty());
}

#[test]
fn interleaved_transactions_of_several_producers() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), config()).unwrap();
    let (mut p1, mut p2, mut p3) = (Producer::new(1), Producer::new(2), Producer::new(3));
    let step = |log: &Log| {
        commit_hw(log);
        log.last_stable_offset()
    };
    p1.send(&log, 1); // 0
    assert_eq!(step(&log), 0);
    p2.send(&log, 1); // 1
    assert_eq!(plain(&log), 2);
    p1.send(&log, 1); // 3
    assert_eq!(step(&log), 0);
    assert_eq!(p1.end(&log, false), 4);
    // The entry's LSO is where p2's transaction still holds it.
    assert_eq!(step(&log), 1);
    p3.send(&log, 1); // 5
    assert_eq!(step(&log), 1);
    assert_eq!(p2.end(&log, true), 6);
    assert_eq!(step(&log), 5, "p3 is now the oldest open transaction");
    // A marker above the high watermark keeps its transaction unstable.
    assert_eq!(p3.end(&log, false), 7);
    assert_eq!(log.last_stable_offset(), 5);
    log.set_high_watermark(7);
    assert_eq!(log.last_stable_offset(), 5);
    assert_eq!(step(&log), 8);
    let all = vec![aborted(1, 0, 4, 1), aborted(3, 5, 7, 8)];
    assert_eq!(log.aborted_transactions(0, 8).unwrap(), all);
    assert_eq!(log.aborted_transactions(5, 8).unwrap(), all[1..].to_vec());
    // p1's entry has LSO 1: a range ending at 1 cannot overlap a later abort (Kafka's early stop).
    assert_eq!(log.aborted_transactions(0, 1).unwrap(), all[..1].to_vec());
    assert_eq!(log.aborted_transactions(2, 5).unwrap(), all[..1].to_vec());
    assert!(log.aborted_transactions(8, 9).unwrap().is_empty());
    assert!(log.aborted_transactions(3, 3).unwrap().is_empty());
    // A producer's next transaction starts at its next transactional batch.
    p1.send(&log, 2); // 8..=9
    assert_eq!(step(&log), 8);
    assert_eq!(log.ongoing_transactions()[0].first_offset, 8);
}

#[test]
fn aborted_transactions_are_found_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), config()).unwrap();
    let (mut p1, mut p2) = (Producer::new(1), Producer::new(2));
    p1.send(&log, 1); // 0, segment 0
    log.roll().unwrap();
    p2.send(&log, 1); // 1, segment 1
    plain(&log); // 2
    log.roll().unwrap();
    assert_eq!(p1.end(&log, false), 3); // segment 3
    p2.send(&log, 1); // 4
    log.roll().unwrap();
    assert_eq!(p2.end(&log, false), 5); // segment 5
    commit_hw(&log);
    assert_eq!(log.segment_count(), 4);
    assert_eq!(
        files(&log.dir(), ".txnindex"),
        vec![txn_index_name(3), txn_index_name(5)],
        "each marker is indexed in the segment that received it"
    );
    let (a1, a2) = (aborted(1, 0, 3, 1), aborted(2, 1, 5, 6));
    // From segment 0, whose own index is empty: the entries sit in later segments.
    assert_eq!(log.aborted_transactions(0, 1).unwrap(), vec![a1]);
    assert_eq!(log.aborted_transactions(1, 3).unwrap(), vec![a1, a2]);
    assert_eq!(log.aborted_transactions(4, 6).unwrap(), vec![a2]);
    assert_eq!(log.aborted_transactions(0, 6).unwrap(), vec![a1, a2]);
    // After a reopen the entries of inactive segments come from their files.
    log.close().unwrap();
    let log = Log::open(dir.path().join("t-0"), config()).unwrap();
    assert_eq!(log.aborted_transactions(1, 3).unwrap(), vec![a1, a2]);
}

#[test]
fn stale_markers_are_fenced_and_producer_checks_hold() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), config()).unwrap();
    let mut p = Producer::new(1);
    p.epoch = 1;
    p.send(&log, 1); // 0
    let leo = log.log_end_offset();
    // Kafka's fencing of markers: an older epoch is refused with INVALID_PRODUCER_EPOCH.
    let stale = log.append_as_leader(&mut control_batch(1, 0, false, 7, 0), 0, 0);
    assert!(matches!(
        stale,
        Err(AppendError::Producer(ProducerError::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 0,
            current: 1
        }))
    ));
    assert_eq!(log.log_end_offset(), leo, "nothing written");
    assert_eq!(log.ongoing_transactions().len(), 1);
    // A newer epoch (the coordinator aborting after bumping it) is accepted and bumps the producer's.
    let info = log
        .append_as_leader(&mut control_batch(1, 2, false, 7, 0), 0, 0)
        .unwrap();
    assert_eq!(info.base_offset, 1);
    assert_eq!(log.producer_state().get(1).unwrap().epoch, 2);
    assert!(log.ongoing_transactions().is_empty());
    commit_hw(&log);
    assert_eq!(
        log.aborted_transactions(0, 2).unwrap(),
        vec![aborted(1, 0, 1, 2)]
    );
    // The old epoch's data is fenced too.
    assert!(matches!(
        log.append_as_leader(&mut p.batch("k", 1), 0, 0),
        Err(AppendError::Producer(ProducerError::InvalidProducerEpoch {
            current: 2,
            ..
        }))
    ));
    // A marker for a producer without an open transaction is written, and indexes nothing.
    let lone = log
        .append_as_leader(&mut control_batch(9, 0, false, 7, 0), 0, 0)
        .unwrap();
    assert_eq!(lone.base_offset, 2);
    commit_hw(&log);
    assert_eq!(log.aborted_transactions(0, 3).unwrap().len(), 1);
    assert_eq!(log.last_stable_offset(), 3);
    // Clients may not write control batches; their batches with a producer id need a sequence.
    let from_client = log.append_as_leader_from(
        &mut control_batch(5, 0, true, 0, 0),
        0,
        0,
        AppendOrigin::Client,
    );
    assert!(matches!(from_client, Err(AppendError::InvalidRecord(_))));
    let unsequenced = transactional(BatchBuilder::new().value("x").idempotent(5, 0, -1).build());
    assert!(matches!(
        log.append_as_leader_from(&mut unsequenced.clone(), 0, 0, AppendOrigin::Client),
        Err(AppendError::InvalidRecord(_))
    ));
    // ... which the group coordinator writes (transactional offset commits): accepted, a transaction opens.
    log.append_as_leader(&mut unsequenced.clone(), 0, 0)
        .unwrap();
    assert_eq!(log.ongoing_transactions()[0].producer_id, 5);
    // A transactional batch without a producer id is invalid.
    let no_pid = transactional(BatchBuilder::new().value("x").build());
    assert!(matches!(
        log.append_as_leader(&mut no_pid.clone(), 0, 0),
        Err(AppendError::InvalidRecord(_))
    ));
    // A non-transactional batch while the producer's transaction is open (Kafka's INVALID_TXN_STATE).
    let mut q = Producer::new(6);
    q.send(&log, 1);
    let mut plain_idem = BatchBuilder::new()
        .value("y")
        .idempotent(6, 0, q.sequence)
        .build();
    assert!(matches!(
        log.append_as_leader(&mut plain_idem, 0, 0),
        Err(AppendError::InvalidRecord(_))
    ));
    // Sequences still count for transactional batches: a retry is a duplicate, a gap out of order.
    let mut r = Producer::new(7);
    let first = r.batch("k", 2);
    let appended = log.append_as_leader(&mut first.clone(), 0, 0).unwrap();
    r.sequence += 2;
    assert!(matches!(
        log.append_as_leader(&mut first.clone(), 0, 0),
        Err(AppendError::DuplicateSequence { base_offset, .. }) if base_offset == appended.base_offset
    ));
    r.sequence += 1;
    assert!(matches!(
        log.append_as_leader(&mut r.batch("k", 1), 0, 0),
        Err(AppendError::Producer(
            ProducerError::OutOfOrderSequence { .. }
        ))
    ));
    // A transaction and its marker in one append: the entry is indexed at once.
    let s = Producer::new(8);
    let mut both = s.batch("k", 1);
    both.extend_from_slice(&control_batch(8, 0, false, 7, 0));
    let info = log.append_as_leader(&mut both, 0, 0).unwrap();
    assert_eq!(
        log.aborted_transactions(info.base_offset, info.last_offset + 1)
            .unwrap()
            .last()
            .map(|t| (t.producer_id, t.first_offset, t.last_offset)),
        Some((8, info.base_offset, info.last_offset))
    );
}

/// Transactions over several segments: two aborted (markers in later segments), one committed, one open.
fn scenario(log: &Log) -> Producer {
    let (mut p1, mut p2, mut p3) = (Producer::new(1), Producer::new(2), Producer::new(3));
    p1.send(log, 2);
    p2.send(log, 1);
    log.roll().unwrap();
    plain(log);
    p1.send(log, 1);
    p1.end(log, false);
    log.roll().unwrap();
    p3.send(log, 3);
    p2.end(log, true);
    p3.end(log, false);
    log.roll().unwrap();
    p1.send(log, 1);
    plain(log);
    commit_hw(log);
    p1
}

#[test]
fn a_clean_restart_keeps_the_last_stable_offset_and_the_aborted_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let log = Log::open(&path, config()).unwrap();
    let p1 = scenario(&log);
    let before = observe(&log);
    assert_eq!(before.1.len(), 2);
    assert_eq!(before.2.len(), 1, "p1's last transaction is open");
    assert!(before.0 < log.high_watermark());
    log.close().unwrap();
    let log = Log::open(&path, config()).unwrap();
    assert_eq!(observe(&log), before);
    // The open transaction can end after the restart.
    let marker = p1.end(&log, false);
    commit_hw(&log);
    assert_eq!(log.last_stable_offset(), log.log_end_offset());
    assert_eq!(
        log.aborted_transactions(0, log.log_end_offset())
            .unwrap()
            .last()
            .unwrap()
            .last_offset,
        marker
    );
}

#[test]
fn an_unclean_restart_rebuilds_transactions_and_indexes_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let log = Log::open(&path, config()).unwrap();
    scenario(&log);
    let before = observe(&log);
    assert!(!files(&path, ".txnindex").is_empty());
    drop(log);
    // Without any snapshot or transaction index: the replay of the whole log rebuilds them.
    for name in files(&path, ".snapshot")
        .into_iter()
        .chain(files(&path, ".txnindex"))
    {
        std::fs::remove_file(path.join(name)).unwrap();
    }
    let log = Log::open(&path, config()).unwrap();
    assert_eq!(observe(&log), before);
    assert_eq!(files(&path, ".txnindex").len(), 2, "rebuilt on disk");
    drop(log);
    // With the snapshots of the rolls: the same.
    let log = Log::open(&path, config()).unwrap();
    assert_eq!(observe(&log), before);
}

#[test]
fn an_unclean_restart_that_cuts_a_marker_reopens_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let log = Log::open(&path, config()).unwrap();
    let mut p = Producer::new(4);
    plain(&log);
    p.send(&log, 2); // 1..=2
    let marker = p.end(&log, false); // 3
    commit_hw(&log);
    assert_eq!(
        log.aborted_transactions(0, 4).unwrap(),
        vec![aborted(4, 1, 3, 4)]
    );
    drop(log);
    // A torn marker: the tail of the segment is cut in the middle of it.
    let segment = path.join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(len - 5).unwrap();
    drop(file);
    let log = Log::open(&path, config()).unwrap();
    assert_eq!(log.log_end_offset(), marker);
    assert!(log.aborted_transactions(0, 4).unwrap().is_empty());
    assert!(files(&path, ".txnindex").is_empty());
    assert_eq!(log.ongoing_transactions()[0].first_offset, 1);
    assert_eq!(log.last_stable_offset(), 1);
}

#[test]
fn truncation_below_and_across_an_abort_marker() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), config()).unwrap();
    let (mut p1, mut p2) = (Producer::new(1), Producer::new(2));
    p1.send(&log, 1); // 0, segment 0
    log.roll().unwrap();
    p2.send(&log, 1); // 1, segment 1
    assert_eq!(p1.end(&log, false), 2);
    p2.send(&log, 1); // 3
    assert_eq!(p2.end(&log, false), 4);
    log.roll().unwrap();
    plain(&log); // 5, segment 5
    commit_hw(&log);
    let index = log.dir().join(txn_index_name(1));
    assert_eq!(
        std::fs::metadata(&index).unwrap().len(),
        2 * ABORTED_TXN_BYTES as u64
    );
    assert_eq!(log.last_stable_offset(), 6);
    // Below p2's marker: its entry goes (the index is cut), its transaction is open again.
    log.truncate_to(4).unwrap();
    assert_eq!(
        log.aborted_transactions(0, 4).unwrap(),
        vec![aborted(1, 0, 2, 1)]
    );
    assert_eq!(
        std::fs::metadata(&index).unwrap().len(),
        ABORTED_TXN_BYTES as u64
    );
    assert_eq!(log.ongoing_transactions()[0].producer_id, 2);
    assert_eq!(log.last_stable_offset(), 1);
    // Across p1's marker, which sits in a later segment than p1's data: p1's transaction is open again.
    log.truncate_to(2).unwrap();
    assert!(log.aborted_transactions(0, 2).unwrap().is_empty());
    assert!(files(&log.dir(), ".txnindex").is_empty());
    let open: Vec<(i64, i64)> = log
        .ongoing_transactions()
        .iter()
        .map(|t| (t.producer_id, t.first_offset))
        .collect();
    assert_eq!(open, vec![(1, 0), (2, 1)]);
    assert_eq!(log.last_stable_offset(), 0);
    // Writing on: a new marker indexes again.
    p1.sequence = 1;
    p1.end(&log, false);
    commit_hw(&log);
    assert_eq!(
        log.aborted_transactions(0, 3).unwrap(),
        vec![aborted(1, 0, 2, 1)]
    );
    // Truncated into the first segment (segment 1 goes with its index) and then fully.
    log.truncate_to(1).unwrap();
    assert!(files(&log.dir(), ".txnindex").is_empty());
    assert_eq!(log.ongoing_transactions().len(), 1);
    log.truncate_fully_and_start_at(10).unwrap();
    assert!(log.ongoing_transactions().is_empty());
    assert_eq!(log.last_stable_offset(), 10);
    assert!(log.aborted_transactions(0, 100).unwrap().is_empty());
}

#[test]
fn retention_and_delete_records_remove_transaction_indexes_with_their_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.file_delete_delay_ms = 60_000;
    let log = Log::open(dir.path().join("t-0"), cfg).unwrap();
    let mut p = Producer::new(1);
    p.send(&log, 1);
    p.end(&log, false); // 1, segment 0
    log.roll().unwrap();
    p.send(&log, 1);
    p.end(&log, false); // 3, segment 2
    log.roll().unwrap();
    plain(&log);
    commit_hw(&log);
    assert_eq!(files(&log.dir(), ".txnindex").len(), 2);
    log.delete_records_before(2).unwrap();
    assert_eq!(
        files(&log.dir(), ".txnindex"),
        vec![txn_index_name(2)],
        "segment 0 went with its transaction index"
    );
    assert_eq!(
        files(&log.dir(), ".txnindex.deleted"),
        vec![format!("{}.deleted", txn_index_name(0))]
    );
    assert_eq!(
        log.aborted_transactions(2, 5).unwrap(),
        vec![aborted(1, 2, 3, 4)]
    );
    // Retention by size deletes the next one.
    let mut cfg = log.config();
    cfg.retention_bytes = 1;
    cfg.file_delete_delay_ms = 0;
    log.update_config(cfg);
    assert!(log.apply_retention(0).unwrap() >= 1);
    assert!(files(&log.dir(), ".txnindex").is_empty());
    assert!(log.aborted_transactions(4, 5).unwrap().is_empty());
}

#[test]
fn a_torn_transaction_index_is_cut_and_a_corrupt_one_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let log = Log::open(&path, config()).unwrap();
    scenario(&log);
    let before = observe(&log);
    log.close().unwrap();
    let names = files(&path, ".txnindex");
    assert_eq!(names.len(), 2);
    // A torn tail (a write cut short): the whole entries stay, the tail is cut.
    let torn = path.join(&names[0]);
    let whole = std::fs::read(&torn).unwrap();
    let mut damaged = whole.clone();
    damaged.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 2]);
    std::fs::write(&torn, &damaged).unwrap();
    let log = Log::open(&path, config()).unwrap();
    assert_eq!(observe(&log), before);
    assert_eq!(std::fs::read(&torn).unwrap(), whole);
    log.close().unwrap();
    // A corrupt entry (an unknown version): recovery from that segment rebuilds the index from the log.
    let mut corrupt = whole.clone();
    corrupt[1] = 9;
    std::fs::write(&torn, &corrupt).unwrap();
    let log = Log::open(&path, config()).unwrap();
    assert_eq!(observe(&log), before);
    assert_eq!(std::fs::read(&torn).unwrap(), whole);
}

#[test]
fn a_follower_builds_the_same_transaction_state() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Log::open(dir.path().join("leader"), config()).unwrap();
    scenario(&leader);
    let follower = Log::open(dir.path().join("follower"), config()).unwrap();
    let mut offset = 0;
    while offset < leader.log_end_offset() {
        // Small fetches: a few batches at a time.
        let r = leader.read(offset, 200, i64::MAX).unwrap();
        let info = follower.append_as_follower(&r.data).unwrap();
        offset = info.last_offset + 1;
    }
    follower.update_high_watermark_as_follower(leader.high_watermark());
    assert_eq!(observe(&follower), observe(&leader));
    // A follower's segments roll elsewhere: the aborted transactions of every range are still the same.
    for start in 0..leader.log_end_offset() {
        for end in start + 1..=leader.log_end_offset() {
            assert_eq!(
                follower.aborted_transactions(start, end).unwrap(),
                leader.aborted_transactions(start, end).unwrap(),
                "range {start}..{end}"
            );
        }
    }
}

#[test]
fn a_log_directory_move_takes_the_transaction_indexes_along() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("b")).unwrap();
    let log = Log::open(root.path().join("a").join("t-0"), config()).unwrap();
    scenario(&log);
    // An abort in the active segment too.
    let mut p = Producer::new(9);
    p.send(&log, 1);
    p.end(&log, false);
    commit_hw(&log);
    let before = observe(&log);
    let (stop, progress, throttle) = (|| false, |_: i64, _: u64| {}, |_: u64| {});
    let control = CopyControl {
        stop: &stop,
        progress: &progress,
        throttle: &throttle,
    };
    let mut future = log
        .begin_future(Arc::new(DirHealth::new(root.path().join("b"))))
        .unwrap();
    log.copy_round(&mut future, &control).unwrap();
    log.swap_into(&mut future, &control).unwrap();
    assert!(log.dir().starts_with(root.path().join("b")));
    assert_eq!(observe(&log), before);
    assert_eq!(files(&log.dir(), ".txnindex").len(), 3);
    log.close().unwrap();
    let log = Log::open(log.dir(), config()).unwrap();
    assert_eq!(observe(&log), before);
}

#[test]
fn producers_with_an_open_transaction_never_expire() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("t-0"), config()).unwrap();
    let (mut p1, mut p2) = (Producer::new(1), Producer::new(2));
    p1.send(&log, 1);
    p2.send(&log, 1);
    p2.end(&log, true);
    assert_eq!(log.remove_expired_producers(i64::MAX / 2, 1_000), 1);
    assert!(log.producer_state().get(1).is_some());
    assert!(log.producer_state().get(2).is_none());
}

/// Every batch of the log from its start (compaction leaves gaps): (base offset, last offset, bytes).
fn all_batches(log: &Log) -> Vec<(i64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20, i64::MAX).unwrap();
        if r.data.is_empty() {
            break;
        }
        for item in Batches::new(&r.data) {
            let (_, h) = item.unwrap();
            h.validate().unwrap();
            out.push((h.base_offset(), h.last_offset(), h.bytes().to_vec()));
            offset = h.next_offset();
        }
    }
    out
}

/// Every record of the log: (offset, key, value) and whether it is in a control batch.
fn records(log: &Log) -> Vec<(i64, Vec<u8>, Vec<u8>, bool)> {
    let mut out = Vec::new();
    for (_, _, bytes) in all_batches(log) {
        let h = BatchHeader::new(&bytes).unwrap();
        let body = &bytes[batch::RECORD_BATCH_OVERHEAD..];
        for r in parse_raw_records(body).unwrap() {
            out.push((
                h.base_offset() + i64::from(r.offset_delta),
                body[r.key.clone().unwrap_or(0..0)].to_vec(),
                body[r.value.clone().unwrap_or(0..0)].to_vec(),
                h.is_control(),
            ));
        }
    }
    out
}

fn data_values(log: &Log) -> Vec<(String, String)> {
    records(log)
        .into_iter()
        .filter(|r| !r.3)
        .map(|(_, k, v, _)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

fn control_offsets(log: &Log) -> Vec<i64> {
    records(log).iter().filter(|r| r.3).map(|r| r.0).collect()
}

/// A committed-at-once (non-transactional) keyed record.
fn keyed(log: &Log, key: &str, value: &str) {
    log.append_as_leader(
        &mut BatchBuilder::new()
            .timestamp_ms(1_000)
            .key_value(key, value)
            .build(),
        0,
        0,
    )
    .unwrap();
}

#[test]
fn compaction_drops_aborted_records_and_later_the_markers_of_empty_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 1_000,
        ..config()
    };
    let log = Log::open(dir.path().join("t-0"), cfg.clone()).unwrap();
    let (mut p1, mut p2, mut p3) = (Producer::new(1), Producer::new(2), Producer::new(3));
    p1.send_key(&log, "a", 1); // 0: a = p1-s0, committed
    p2.send_key(&log, "a", 1); // 1: a = p2-s0, aborted
    p2.send_key(&log, "b", 1); // 2: b = p2-s1, aborted
    p1.end(&log, true); // 3
    p2.end(&log, false); // 4
    p3.send_key(&log, "b", 1); // 5: b = p3-s0, committed
    p3.end(&log, true); // 6
                        // An open transaction holds the cleaner back at its first offset (the LSO).
    let mut p4 = Producer::new(4);
    p4.send_key(&log, "c", 1); // 7
    log.roll().unwrap();
    commit_hw(&log);
    assert_eq!(log.last_stable_offset(), 7);
    assert_eq!(
        log.cleanable_state(0).unwrap().first_uncleanable_offset,
        0,
        "the segment holding the open transaction is not cleanable"
    );
    assert!(log.clean(&CleanOptions::default()).unwrap().is_none());
    p4.end(&log, true); // 8
    log.roll().unwrap();
    commit_hw(&log);
    let now = 10_000;
    let at = |now_ms| CleanOptions {
        now_ms,
        ..CleanOptions::default()
    };
    log.clean(&at(now)).unwrap().unwrap();
    // The aborted records are gone whatever their keys (the aborted `a` did not hide the committed one); each
    // key's latest committed record stays.
    assert_eq!(
        data_values(&log),
        vec![
            ("a".into(), "p1-s0".into()),
            ("b".into(), "p3-s0".into()),
            ("c".into(), "p4-s0".into()),
        ]
    );
    // p2's batches were seen: its ABORT marker stays, and so does its transaction index entry.
    assert_eq!(
        log.aborted_transactions(0, 9).unwrap(),
        vec![aborted(2, 1, 4, 5)]
    );
    assert_eq!(control_offsets(&log), vec![3, 4, 6, 8]);
    // p2's last batch stays, emptied, so its producer state survives (Kafka's RETAIN_EMPTY).
    assert!(all_batches(&log)
        .iter()
        .any(|(b, l, bytes)| (*b, *l) == (2, 2)
            && BatchHeader::new(bytes).unwrap().record_count() == 0));
    // p2 writes on: its emptied batch is no longer its last and goes; its marker stays while that batch was seen.
    p2.send_key(&log, "d", 1); // 9
    p2.end(&log, true); // 10
    log.roll().unwrap();
    commit_hw(&log);
    log.clean(&at(now)).unwrap().unwrap();
    assert!(!all_batches(&log).iter().any(|(b, _, _)| *b == 2));
    assert_eq!(log.aborted_transactions(0, 11).unwrap().len(), 1);
    // Next pass: p2's aborted transaction has no batch left; its marker gets a delete horizon, its entry goes.
    keyed(&log, "e", "x"); // 11
    log.roll().unwrap();
    commit_hw(&log);
    log.clean(&at(now)).unwrap().unwrap();
    assert!(log.aborted_transactions(0, 12).unwrap().is_empty());
    let marker = all_batches(&log)
        .into_iter()
        .find(|(b, _, _)| *b == 4)
        .unwrap();
    let h = BatchHeader::new(&marker.2).unwrap();
    assert!(h.is_control() && h.attributes() & DELETE_HORIZON_FLAG != 0);
    assert_eq!(h.base_timestamp(), now + 1_000);
    assert_eq!(
        h.max_timestamp(),
        2_002,
        "the marker's own timestamp is kept"
    );
    assert_eq!(control_type(&marker.2), Some(ControlType::Abort));
    // After the horizon (a pass is due for it even with nothing dirty): the marker goes.
    log.clean(&at(now + 2_000)).unwrap().unwrap();
    assert!(!all_batches(&log).iter().any(|(b, _, _)| *b == 4));
    // Commits of transactions with records left stay.
    assert_eq!(control_offsets(&log), vec![3, 6, 8, 10]);
    assert_eq!(
        data_values(&log),
        vec![
            ("a".into(), "p1-s0".into()),
            ("b".into(), "p3-s0".into()),
            ("c".into(), "p4-s0".into()),
            ("d".into(), "p2-s2".into()),
            ("e".into(), "x".into()),
        ]
    );
    // All of it survives a restart (the cleaned segments' indexes and the producer state).
    let before = observe(&log);
    log.close().unwrap();
    let log = Log::open(dir.path().join("t-0"), cfg).unwrap();
    assert_eq!(observe(&log), before);
}

/// What a `read_committed` consumer gets (Kafka's `Fetcher` with the fetch's aborted transactions): every record
/// of a committed or non-transactional batch, as (offset, key, value). Also checks each batch's CRC.
fn committed_view(log: &Log) -> Vec<(i64, String, String)> {
    let end = log.last_stable_offset();
    let mut aborted = log
        .aborted_transactions(log.log_start_offset(), end)
        .unwrap();
    aborted.sort_by_key(|t| t.first_offset);
    let mut aborted = aborted.into_iter().peekable();
    let mut aborting = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (base, _, bytes) in all_batches(log).into_iter().filter(|b| b.0 < end) {
        let h = BatchHeader::new(&bytes).unwrap();
        while let Some(t) = aborted.next_if(|t| t.first_offset <= h.last_offset()) {
            aborting.insert(t.producer_id);
        }
        if h.is_control() {
            if control_type(&bytes) == Some(ControlType::Abort) {
                aborting.remove(&h.producer_id());
            }
            continue;
        }
        if h.is_transactional() && aborting.contains(&h.producer_id()) {
            continue;
        }
        let body = &bytes[batch::RECORD_BATCH_OVERHEAD..];
        for r in parse_raw_records(body).unwrap() {
            out.push((
                base + i64::from(r.offset_delta),
                String::from_utf8(body[r.key.clone().unwrap()].to_vec()).unwrap(),
                String::from_utf8(body[r.value.clone().unwrap()].to_vec()).unwrap(),
            ));
        }
    }
    out
}

/// Rounds of two transactional producers (some transactions aborted, markers a segment later than some of
/// their records) and plain records over five keys, on a compacted log. Returns every record written as
/// offset -> (key, value, committed).
fn compacted_txn_log(log: &Log) -> std::collections::BTreeMap<i64, (String, String, bool)> {
    let mut model = std::collections::BTreeMap::new();
    let (mut a, mut b) = (Producer::new(1), Producer::new(2));
    let mut pending: Vec<(i64, String, String, i64)> = Vec::new();
    for round in 0..8i64 {
        for (p, key) in [(&mut a, round % 5), (&mut b, (round + 2) % 5)] {
            let key = format!("k{key}");
            let value = format!("p{}-s{}", p.id, p.sequence);
            let info = p.send_key(log, &key, 1);
            pending.push((info.base_offset, key, value, p.id));
        }
        let key = format!("k{}", (round + 4) % 5);
        let value = format!("plain-{round}");
        let offset = log.log_end_offset();
        keyed(log, &key, &value);
        model.insert(offset, (key, value, true));
        if round % 2 == 1 {
            // A roll between a transaction's records and its marker.
            log.roll().unwrap();
        }
        for (p, commit) in [(&a, round % 3 != 0), (&b, round % 4 == 1)] {
            p.end(log, commit);
            for (o, k, v, _) in pending.iter().filter(|t| t.3 == p.id) {
                model.insert(*o, (k.clone(), v.clone(), commit));
            }
            pending.retain(|t| t.3 != p.id);
        }
        if round % 2 == 0 {
            log.roll().unwrap();
        }
    }
    log.roll().unwrap();
    commit_hw(log);
    model
}

/// The committed view holds only committed records, and for every key its latest committed one.
fn check_committed(log: &Log, model: &std::collections::BTreeMap<i64, (String, String, bool)>) {
    let view = committed_view(log);
    let mut latest_seen = std::collections::BTreeMap::new();
    for (o, k, v) in &view {
        let (mk, mv, committed) = model
            .get(o)
            .unwrap_or_else(|| panic!("offset {o} never written"));
        assert_eq!((k, v), (mk, mv), "record at {o}");
        assert!(
            *committed,
            "aborted record at {o} ({k}={v}) read as committed"
        );
        latest_seen.insert(k.clone(), *o);
    }
    let mut latest = std::collections::BTreeMap::new();
    for (o, (k, _, committed)) in model {
        if *committed {
            latest.insert(k.clone(), *o);
        }
    }
    assert_eq!(latest_seen, latest, "every key's latest committed record");
}

#[test]
fn a_crash_at_every_step_of_a_transactional_clean_keeps_the_committed_view() {
    let cfg = LogConfig {
        compact: true,
        delete: false,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 1_000,
        segment_bytes: 700,
        ..config()
    };
    let at = |now_ms| CleanOptions {
        now_ms,
        ..CleanOptions::default()
    };
    let mut swapped_txn_index = false;
    for budget in 0..70u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let log = Log::open(&path, cfg.clone()).unwrap();
        let model = compacted_txn_log(&log);
        check_committed(&log, &model);
        log.close().unwrap();
        let dying = Arc::new(common::DyingIo {
            real: sluice_storage::io::RealIo,
            budget: std::sync::atomic::AtomicU64::new(u64::MAX),
        });
        let opened = Log::open_with(
            &path,
            cfg.clone(),
            sluice_storage::LogOptions {
                io: Arc::new(common::DyingIoHandle(dying.clone())),
                ..sluice_storage::LogOptions::default()
            },
        )
        .unwrap();
        dying
            .budget
            .store(budget, std::sync::atomic::Ordering::SeqCst);
        let _ = opened.clean(&at(10_000));
        drop(opened);
        swapped_txn_index |= !files(&path, ".txnindex.swap").is_empty();
        let log = Log::open(&path, cfg.clone()).unwrap();
        commit_hw(&log);
        check_committed(&log, &model);
        // Passes after the crash, the last after every delete horizon: still the same committed view, and
        // nothing aborted left.
        log.clean(&at(10_000)).unwrap();
        check_committed(&log, &model);
        keyed(&log, "z", "last");
        log.roll().unwrap();
        commit_hw(&log);
        log.clean(&at(20_000)).unwrap();
        let mut model = model;
        model.insert(log.log_end_offset() - 1, ("z".into(), "last".into(), true));
        check_committed(&log, &model);
        let aborted_left = all_batches(&log).iter().any(|(b, _, bytes)| {
            let h = BatchHeader::new(bytes).unwrap();
            !h.is_control()
                && h.record_count() > 0
                && model.get(b).is_some_and(|(_, _, committed)| !committed)
        });
        assert!(
            !aborted_left,
            "budget {budget}: an aborted record survived cleaning"
        );
    }
    assert!(
        swapped_txn_index,
        "some crash left a transaction index swap to complete"
    );
}
