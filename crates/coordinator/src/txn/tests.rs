//! Tick-by-tick tests of the transaction coordinator shard: explicit `now_ms`, exact records, responses and
//! markers, each citing the Kafka behaviour it checks (KIP-98 transactions, KIP-360 epoch bumps, KIP-890 part 1
//! verification, Kafka's `TransactionCoordinator` / `TransactionStateManager`).
//!
//! Every step goes through [`Harness`], which plays the shell: it keeps the log, replays each returned record,
//! and checks after every step that each record follows Kafka's transition table and that a shard rebuilt from
//! the log (from the records, and from their bytes) describes every transactional id as the live one does.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::metadata::{TransactionState, TxnMetadata};
use super::*;
use crate::partition_for;

const TID: &str = "tx";
const TIMEOUT: i32 = 60_000;

/// The shell around one shard: a log, a producer id counter, and the checks that run after every step.
struct Harness {
    shard: TxnCoordinatorShard,
    log: Vec<TxnLogRecord>,
    next_pid: i64,
    pids_available: bool,
}

impl Harness {
    fn new() -> Self {
        Self::with(TxnCoordinatorConfig::default())
    }

    fn with(config: TxnCoordinatorConfig) -> Self {
        let mut shard = TxnCoordinatorShard::new(config, 3);
        assert!(shard.finish_loading(0).is_empty());
        Harness {
            shard,
            log: Vec::new(),
            next_pid: 1000,
            pids_available: true,
        }
    }

    /// Appends and replays a result's records, as the shell does, checking each transition first.
    fn apply<T>(&mut self, r: TxnResult<T>) -> TxnResult<T> {
        for rec in &r.records {
            let before = self.shard.describe(&rec.transactional_id).cloned();
            check_transition(before.as_ref(), rec);
            self.shard.replay(rec);
            self.log.push(rec.clone());
        }
        self.check_replay_equivalence();
        r
    }

    fn init(
        &mut self,
        id: &str,
        expected: Option<(i64, i16)>,
        now: i64,
    ) -> TxnResult<Result<(i64, i16), TxnError>> {
        self.init_with_timeout(id, TIMEOUT, expected, now)
    }

    fn init_with_timeout(
        &mut self,
        id: &str,
        timeout: i32,
        expected: Option<(i64, i16)>,
        now: i64,
    ) -> TxnResult<Result<(i64, i16), TxnError>> {
        let available = self.pids_available;
        let mut next = self.next_pid;
        let r = self
            .shard
            .init_producer_id(id, timeout, expected, now, &mut || {
                available.then(|| {
                    next += 1;
                    next - 1
                })
            });
        self.next_pid = next;
        self.apply(r)
    }

    fn add(
        &mut self,
        pid: i64,
        epoch: i16,
        parts: &[(&str, i32)],
        now: i64,
    ) -> TxnResult<TxnError> {
        let parts = tps(parts);
        let r = self.shard.add_partitions(TID, pid, epoch, &parts, now);
        self.apply(r)
    }

    fn end(&mut self, pid: i64, epoch: i16, commit: bool, now: i64) -> TxnResult<TxnError> {
        let r = self.shard.end_txn(TID, pid, epoch, commit, now);
        self.apply(r)
    }

    fn written(&mut self, marker: &MarkerRequest, now: i64) -> TxnResult<()> {
        let r = self.shard.markers_written(
            &marker.transactional_id,
            marker.producer_id,
            marker.producer_epoch,
            now,
        );
        self.apply(r)
    }

    fn poll(&mut self, now: i64) -> TxnResult<()> {
        let r = self.shard.poll(now, &mut || None);
        self.apply(r)
    }

    fn state(&self) -> TransactionState {
        self.meta().state
    }

    fn meta(&self) -> &TxnMetadata {
        self.shard.describe(TID).expect("transactional id")
    }

    fn all(shard: &TxnCoordinatorShard) -> BTreeMap<String, TxnMetadata> {
        shard
            .transactional_ids()
            .filter_map(|id| shard.describe(id).map(|m| (id.clone(), m.clone())))
            .collect()
    }

    /// A shard rebuilt by replaying the log equals the live one; rebuilt from the log's bytes it differs only in
    /// the KIP-360 last epoch, which Kafka's log does not keep either.
    fn check_replay_equivalence(&self) {
        let live = Self::all(&self.shard);
        let mut from_records = TxnCoordinatorShard::new(self.shard.config().clone(), 3);
        let mut from_bytes = TxnCoordinatorShard::new(self.shard.config().clone(), 3);
        for rec in &self.log {
            from_records.replay(rec);
            let (key, value) = rec.encode();
            let decoded = TxnLogRecord::decode(&key, value.as_deref())
                .expect("decodes")
                .expect("a transaction log record");
            from_bytes.replay(&decoded);
        }
        assert_eq!(Self::all(&from_records), live);
        let forget_last_epoch = |mut m: BTreeMap<String, TxnMetadata>| {
            m.values_mut().for_each(|t| t.last_producer_epoch = -1);
            m
        };
        assert_eq!(
            Self::all(&from_bytes),
            forget_last_epoch(live),
            "loaded from bytes"
        );
    }
}

/// Each record is a transition Kafka's table allows from the id's current state (a new id starts Empty); a
/// tombstone removes an id in a state that may expire.
fn check_transition(before: Option<&TxnMetadata>, rec: &TxnLogRecord) {
    match (&rec.value, before) {
        (Some(v), Some(m)) => assert!(
            m.state.can_transition_to(v.state),
            "{} -> {} for {}",
            m.state,
            v.state,
            rec.transactional_id
        ),
        (Some(v), None) => assert_eq!(v.state, TransactionState::Empty, "a new id starts Empty"),
        (None, Some(m)) => assert!(m.state.is_expiration_allowed(), "tombstone in {}", m.state),
        (None, None) => panic!("tombstone for an unknown id {}", rec.transactional_id),
    }
}

fn tps(parts: &[(&str, i32)]) -> Vec<(String, i32)> {
    parts.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

fn set(parts: &[(&str, i32)]) -> BTreeSet<(String, i32)> {
    tps(parts).into_iter().collect()
}

fn value(r: &TxnLogRecord) -> &TxnLogValue {
    r.value.as_ref().expect("a value, not a tombstone")
}

/// The single record of a result.
fn record<T>(r: &TxnResult<T>) -> &TxnLogValue {
    assert_eq!(r.records.len(), 1, "one record: {:?}", r.records);
    value(&r.records[0])
}

/// A producer that initialized and opened a transaction over `t-0` and `t-1` at 200.
fn ongoing() -> (Harness, i64, i16) {
    let mut h = Harness::new();
    let (pid, epoch) = h.init(TID, None, 100).response.expect("init");
    let r = h.add(pid, epoch, &[("t", 0), ("t", 1)], 200);
    assert_eq!(r.response, TxnError::None);
    (h, pid, epoch)
}

// ----------------------------------------------------------------------------------------------------------
// KIP-98: Empty -> Ongoing -> PrepareCommit -> CompleteCommit, and the abort path
// ----------------------------------------------------------------------------------------------------------

#[test]
fn init_producer_id_for_a_new_id_writes_empty_at_epoch_zero() {
    let mut h = Harness::new();
    let r = h.init(TID, None, 100);
    assert_eq!(r.response, Ok((1000, 0)));
    assert!(r.markers.is_empty());
    assert_eq!(r.records[0].transactional_id, TID);
    assert_eq!(
        record(&r),
        &TxnLogValue {
            producer_id: 1000,
            prev_producer_id: 1000,
            next_producer_id: -1,
            producer_epoch: 0,
            last_producer_epoch: -1,
            timeout_ms: TIMEOUT,
            state: TransactionState::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: 100,
            txn_start_ms: -1,
            client_transaction_version: 0,
        }
    );
    assert_eq!(h.state(), TransactionState::Empty);
}

#[test]
fn commit_path_tick_by_tick() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init(TID, None, 100).response.expect("init");

    // AddPartitionsToTxn: Empty -> Ongoing, the transaction starts now.
    let r = h.add(pid, epoch, &[("t", 0)], 200);
    assert_eq!(r.response, TxnError::None);
    let v = record(&r);
    assert_eq!(v.state, TransactionState::Ongoing);
    assert_eq!((v.txn_start_ms, v.last_update_ms), (200, 200));
    assert_eq!(v.partitions, set(&[("t", 0)]));

    // Partitions already in the transaction: NONE, nothing written.
    let r = h.add(pid, epoch, &[("t", 0)], 250);
    assert_eq!((r.response, r.records.len()), (TxnError::None, 0));

    // More partitions: the union, same start.
    let r = h.add(pid, epoch, &[("t", 0), ("u", 3)], 300);
    let v = record(&r);
    assert_eq!(v.partitions, set(&[("t", 0), ("u", 3)]));
    assert_eq!((v.txn_start_ms, v.last_update_ms), (200, 300));

    // EndTxn(commit): PrepareCommit over the same partitions, and commit markers at the same epoch.
    let r = h.end(pid, epoch, true, 400);
    assert_eq!(r.response, TxnError::None);
    let v = record(&r);
    assert_eq!(v.state, TransactionState::PrepareCommit);
    assert_eq!((v.producer_id, v.producer_epoch), (pid, epoch));
    assert_eq!((v.txn_start_ms, v.last_update_ms), (200, 400));
    assert_eq!(
        r.markers,
        vec![MarkerRequest {
            transactional_id: TID.into(),
            producer_id: pid,
            producer_epoch: epoch,
            commit: true,
            coordinator_epoch: 3,
            partitions: tps(&[("t", 0), ("u", 3)]),
        }]
    );
    let marker = r.markers[0].clone();

    // Markers written: CompleteCommit, no partitions.
    let r = h.written(&marker, 500);
    let v = record(&r);
    assert_eq!(v.state, TransactionState::CompleteCommit);
    assert!(v.partitions.is_empty());
    assert_eq!((v.txn_start_ms, v.last_update_ms), (200, 500));
    assert_eq!(
        (v.producer_id, v.producer_epoch),
        (pid, epoch),
        "TV1 does not bump"
    );

    // Twice: the transaction is no longer completing, nothing is written.
    assert!(h.written(&marker, 510).records.is_empty());

    // A retried EndTxn(commit) is answered NONE; abort is INVALID_TXN_STATE.
    let r = h.end(pid, epoch, true, 600);
    assert_eq!((r.response, r.records.len()), (TxnError::None, 0));
    assert_eq!(
        h.end(pid, epoch, false, 600).response,
        TxnError::InvalidTxnState
    );

    // The next transaction starts from CompleteCommit.
    let r = h.add(pid, epoch, &[("v", 1)], 700);
    let v = record(&r);
    assert_eq!(v.state, TransactionState::Ongoing);
    assert_eq!(v.partitions, set(&[("v", 1)]));
    assert_eq!(v.txn_start_ms, 700);
}

#[test]
fn abort_path_tick_by_tick() {
    let (mut h, pid, epoch) = ongoing();
    let r = h.end(pid, epoch, false, 300);
    assert_eq!(r.response, TxnError::None);
    assert_eq!(record(&r).state, TransactionState::PrepareAbort);
    assert_eq!(r.markers.len(), 1);
    assert!(!r.markers[0].commit);
    assert_eq!(r.markers[0].partitions, tps(&[("t", 0), ("t", 1)]));
    let marker = r.markers[0].clone();
    let r = h.written(&marker, 400);
    assert_eq!(record(&r).state, TransactionState::CompleteAbort);

    assert_eq!(h.end(pid, epoch, false, 500).response, TxnError::None);
    assert_eq!(
        h.end(pid, epoch, true, 500).response,
        TxnError::InvalidTxnState
    );
    // InitProducerId from CompleteAbort bumps the epoch.
    assert_eq!(h.init(TID, None, 600).response, Ok((pid, epoch + 1)));
}

#[test]
fn end_txn_without_a_transaction_is_invalid_txn_state() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init(TID, None, 100).response.expect("init");
    for commit in [true, false] {
        let r = h.end(pid, epoch, commit, 200);
        assert_eq!(
            (r.response, r.records.len()),
            (TxnError::InvalidTxnState, 0)
        );
    }
}

#[test]
fn wrong_producer_id_or_epoch_and_unknown_ids() {
    let (mut h, pid, epoch) = ongoing();
    // Kafka checks the producer id first (INVALID_PRODUCER_ID_MAPPING), then the epoch (PRODUCER_FENCED: Kafka
    // 4 answers TV1 clients with it, and the shell downgrades it for pre-KIP-588 clients).
    assert_eq!(
        h.add(pid + 1, epoch, &[("x", 0)], 300).response,
        TxnError::InvalidProducerIdMapping
    );
    assert_eq!(
        h.add(pid, epoch + 1, &[("x", 0)], 300).response,
        TxnError::ProducerFenced
    );
    assert_eq!(
        h.end(pid + 1, epoch, true, 300).response,
        TxnError::InvalidProducerIdMapping
    );
    assert_eq!(
        h.end(pid, epoch + 1, true, 300).response,
        TxnError::ProducerFenced
    );
    let r = h
        .shard
        .add_partitions("nope", pid, epoch, &tps(&[("x", 0)]), 300);
    assert_eq!(r.response, TxnError::InvalidProducerIdMapping);
    let r = h.shard.end_txn("nope", pid, epoch, true, 300);
    assert_eq!(r.response, TxnError::InvalidProducerIdMapping);
    let r = h
        .shard
        .add_partitions("", pid, epoch, &tps(&[("x", 0)]), 300);
    assert_eq!(r.response, TxnError::InvalidRequest);
    assert_eq!(
        TxnError::ProducerFenced.for_pre_kip588_client(),
        TxnError::InvalidProducerEpoch
    );
    assert_eq!(TxnError::ProducerFenced.code(), 90);
    assert_eq!(TxnError::InvalidProducerEpoch.code(), 47);
    // Nothing changed.
    assert_eq!(h.meta().partitions, set(&[("t", 0), ("t", 1)]));
}

#[test]
fn add_offsets_adds_the_groups_consumer_offsets_partition() {
    let (mut h, pid, epoch) = ongoing();
    let r = h.shard.add_offsets(TID, pid, epoch, "my-group", 300);
    let r = h.apply(r);
    assert_eq!(r.response, TxnError::None);
    let p = partition_for("my-group", 50);
    assert!(record(&r)
        .partitions
        .contains(&("__consumer_offsets".to_string(), p)));
    // Again: already in the transaction, nothing written.
    let r = h.shard.add_offsets(TID, pid, epoch, "my-group", 310);
    assert_eq!((r.response, r.records.len()), (TxnError::None, 0));
}

// ----------------------------------------------------------------------------------------------------------
// Concurrent requests while markers are being written
// ----------------------------------------------------------------------------------------------------------

#[test]
fn requests_while_markers_are_in_flight_get_concurrent_transactions() {
    for commit in [true, false] {
        let (mut h, pid, epoch) = ongoing();
        let marker = h.end(pid, epoch, commit, 300).markers[0].clone();
        // Kafka's pending Complete* transition: every request on the id waits, whatever the result asked.
        assert_eq!(
            h.end(pid, epoch, commit, 310).response,
            TxnError::ConcurrentTransactions
        );
        assert_eq!(
            h.end(pid, epoch, !commit, 310).response,
            TxnError::ConcurrentTransactions
        );
        assert_eq!(
            h.add(pid, epoch, &[("t", 0)], 310).response,
            TxnError::ConcurrentTransactions
        );
        assert_eq!(
            h.add(pid, epoch, &[("z", 9)], 310).response,
            TxnError::ConcurrentTransactions
        );
        let r = h.init(TID, None, 310);
        assert_eq!(
            (r.response, r.records.len()),
            (Err(TxnError::ConcurrentTransactions), 0)
        );
        assert_eq!(
            h.shard
                .verify_partitions(TID, pid, epoch, &tps(&[("t", 0)])),
            vec![(("t".to_string(), 0), TxnError::ConcurrentTransactions)]
        );
        // The producer id and epoch are still checked first.
        assert_eq!(
            h.end(pid, epoch + 1, commit, 310).response,
            TxnError::ProducerFenced
        );
        h.written(&marker, 320);
        assert_eq!(h.init(TID, None, 330).response, Ok((pid, epoch + 1)));
    }
}

// ----------------------------------------------------------------------------------------------------------
// Fencing: InitProducerId on an ongoing transaction
// ----------------------------------------------------------------------------------------------------------

#[test]
fn init_on_ongoing_aborts_with_a_bumped_epoch_and_fences_the_old_producer() {
    let (mut h, pid, epoch) = ongoing();
    // A second producer with the same transactional id.
    let r = h.init(TID, None, 300);
    assert_eq!(r.response, Err(TxnError::ConcurrentTransactions));
    let v = record(&r).clone();
    // PrepareEpochFence is never written: the PrepareAbort carries the bumped epoch, no last epoch, and the
    // coordinator's transaction version (Kafka passes the server's level for aborts it starts).
    assert_eq!(v.state, TransactionState::PrepareAbort);
    assert_eq!(
        (v.producer_id, v.producer_epoch, v.last_producer_epoch),
        (pid, epoch + 1, -1)
    );
    assert_eq!(v.partitions, set(&[("t", 0), ("t", 1)]));
    assert_eq!((v.txn_start_ms, v.last_update_ms), (200, 300));
    assert_eq!(v.client_transaction_version, TRANSACTION_VERSION_LEVEL);
    assert_eq!(v.timeout_ms, TIMEOUT, "the new timeout waits for the retry");
    assert_eq!(
        r.markers,
        vec![MarkerRequest {
            transactional_id: TID.into(),
            producer_id: pid,
            producer_epoch: epoch + 1,
            commit: false,
            coordinator_epoch: 3,
            partitions: tps(&[("t", 0), ("t", 1)]),
        }]
    );
    let marker = r.markers[0].clone();

    // The old producer is fenced everywhere.
    assert_eq!(
        h.add(pid, epoch, &[("t", 2)], 310).response,
        TxnError::ProducerFenced
    );
    assert_eq!(
        h.end(pid, epoch, true, 310).response,
        TxnError::ProducerFenced
    );
    // The new producer retries while the abort completes.
    assert_eq!(
        h.init(TID, None, 320).response,
        Err(TxnError::ConcurrentTransactions)
    );
    let r = h.written(&marker, 330);
    assert_eq!(record(&r).state, TransactionState::CompleteAbort);
    assert_eq!(record(&r).producer_epoch, epoch + 1);
    // And gets an epoch bumped once more.
    let r = h.init_with_timeout(TID, 5_000, None, 340);
    assert_eq!(r.response, Ok((pid, epoch + 2)));
    assert_eq!(record(&r).timeout_ms, 5_000);
    assert_eq!(
        h.end(pid, epoch, false, 350).response,
        TxnError::ProducerFenced
    );
}

#[test]
fn init_on_empty_or_complete_bumps_the_epoch() {
    let mut h = Harness::new();
    assert_eq!(h.init(TID, None, 100).response, Ok((1000, 0)));
    let r = h.init_with_timeout(TID, 30_000, None, 200);
    assert_eq!(r.response, Ok((1000, 1)));
    let v = record(&r);
    assert_eq!(
        (v.state, v.last_producer_epoch, v.timeout_ms),
        (TransactionState::Empty, -1, 30_000)
    );
    assert_eq!(v.last_update_ms, 200);
    // The fenced producer (epoch 0) is rejected.
    assert_eq!(
        h.add(1000, 0, &[("t", 0)], 300).response,
        TxnError::ProducerFenced
    );
}

// ----------------------------------------------------------------------------------------------------------
// KIP-360: InitProducerId with the producer's id and epoch
// ----------------------------------------------------------------------------------------------------------

#[test]
fn kip360_bump_and_its_retry() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init(TID, None, 100).response.expect("init");

    // The producer bumps its own epoch after an abortable error.
    let r = h.init(TID, Some((pid, epoch)), 200);
    assert_eq!(r.response, Ok((pid, epoch + 1)));
    assert_eq!(record(&r).last_producer_epoch, epoch);

    // The response was lost: the retry names the old epoch, and gets the same answer without a second bump.
    let r = h.init(TID, Some((pid, epoch)), 300);
    assert_eq!(r.response, Ok((pid, epoch + 1)));
    assert_eq!(
        (record(&r).producer_epoch, record(&r).last_producer_epoch),
        (epoch + 1, epoch)
    );

    // Any other epoch is fenced, and so is another producer id.
    let r = h.init(TID, Some((pid, epoch + 5)), 400);
    assert_eq!(
        (r.response, r.records.len()),
        (Err(TxnError::ProducerFenced), 0)
    );
    assert_eq!(
        h.init(TID, Some((pid + 7, epoch + 1)), 400).response,
        Err(TxnError::ProducerFenced)
    );

    // A producer without an epoch fences the KIP-360 producer: its retry no longer matches.
    assert_eq!(h.init(TID, None, 500).response, Ok((pid, epoch + 2)));
    assert_eq!(
        h.init(TID, Some((pid, epoch)), 600).response,
        Err(TxnError::ProducerFenced)
    );
    assert_eq!(
        h.init(TID, Some((pid, epoch + 2)), 600).response,
        Ok((pid, epoch + 3))
    );
}

#[test]
fn kip360_retry_does_not_survive_a_reload_as_in_kafka() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init(TID, None, 100).response.expect("init");
    assert_eq!(
        h.init(TID, Some((pid, epoch)), 200).response,
        Ok((pid, epoch + 1))
    );
    // A new coordinator loads the partition from its bytes: the last epoch is not in the log.
    let mut loaded = TxnCoordinatorShard::new(TxnCoordinatorConfig::default(), 4);
    for rec in &h.log {
        let (k, v) = rec.encode();
        let decoded = TxnLogRecord::decode(&k, v.as_deref())
            .expect("ok")
            .expect("some");
        loaded.replay(&decoded);
    }
    assert!(loaded.finish_loading(1_000).is_empty());
    let r = loaded.init_producer_id(TID, TIMEOUT, Some((pid, epoch)), 1_000, &mut || None);
    assert_eq!(r.response, Err(TxnError::ProducerFenced));
}

#[test]
fn kip360_with_an_unknown_id_gets_a_new_producer_id() {
    // UNKNOWN_PRODUCER_ID recovery after the id expired: a new producer id, whatever was expected.
    let mut h = Harness::new();
    assert_eq!(h.init(TID, Some((77, 12)), 100).response, Ok((1000, 0)));
    assert_eq!(h.meta().last_producer_epoch, -1);
}

// ----------------------------------------------------------------------------------------------------------
// Epoch exhaustion
// ----------------------------------------------------------------------------------------------------------

/// A shard whose id is Empty at `epoch` (as a long-lived producer leaves it).
fn at_epoch(epoch: i16) -> Harness {
    let mut h = Harness::new();
    let (pid, _) = h.init(TID, None, 100).response.expect("init");
    let rec = TxnLogRecord {
        transactional_id: TID.into(),
        value: Some(TxnLogValue {
            producer_epoch: epoch,
            ..h.meta().to_value()
        }),
    };
    assert_eq!(pid, 1000);
    h.shard.replay(&rec);
    h.log.push(rec);
    h
}

#[test]
fn exhausted_epoch_rotates_the_producer_id() {
    let mut h = at_epoch(i16::MAX - 2);
    // 32765 -> 32766, the last epoch ever handed out.
    assert_eq!(h.init(TID, None, 200).response, Ok((1000, i16::MAX - 1)));
    // Exhausted: a new producer id at epoch 0; the old one is kept as the previous id.
    let r = h.init(TID, None, 300);
    assert_eq!(r.response, Ok((1001, 0)));
    let v = record(&r);
    assert_eq!((v.prev_producer_id, v.last_producer_epoch), (1000, -1));
    // The old producer id is now unknown to this id.
    assert_eq!(
        h.add(1000, i16::MAX - 1, &[("t", 0)], 400).response,
        TxnError::InvalidProducerIdMapping
    );
}

#[test]
fn exhausted_epoch_rotation_with_kip360_and_its_retry() {
    let mut h = at_epoch(i16::MAX - 1);
    let r = h.init(TID, Some((1000, i16::MAX - 1)), 200);
    assert_eq!(r.response, Ok((1001, 0)));
    assert_eq!(record(&r).last_producer_epoch, i16::MAX - 1);
    // The retry names the old producer id and its exhausted epoch: the same answer.
    let r = h.init(TID, Some((1000, i16::MAX - 1)), 300);
    assert_eq!(r.response, Ok((1001, 0)));
    // The old producer id with an epoch that is not exhausted is fenced.
    assert_eq!(
        h.init(TID, Some((1000, 5)), 400).response,
        Err(TxnError::ProducerFenced)
    );
}

#[test]
fn fencing_an_ongoing_transaction_at_the_last_epoch_then_rotating() {
    let mut h = at_epoch(i16::MAX - 1);
    assert_eq!(
        h.add(1000, i16::MAX - 1, &[("t", 0)], 200).response,
        TxnError::None
    );
    // The fence takes the epoch to i16::MAX, which is never handed to a client.
    let r = h.init(TID, None, 300);
    assert_eq!(r.response, Err(TxnError::ConcurrentTransactions));
    assert_eq!(r.markers[0].producer_epoch, i16::MAX);
    let marker = r.markers[0].clone();
    h.written(&marker, 310);
    // The retry finds the epoch exhausted and rotates.
    assert_eq!(h.init(TID, None, 320).response, Ok((1001, 0)));
}

// ----------------------------------------------------------------------------------------------------------
// InitProducerId validation
// ----------------------------------------------------------------------------------------------------------

#[test]
fn init_validates_timeout_id_and_producer_id_supply() {
    let mut h = Harness::new();
    for bad in [0, -1, 900_001] {
        let r = h.init_with_timeout(TID, bad, None, 100);
        assert_eq!(
            r.response,
            Err(TxnError::InvalidTransactionTimeout),
            "{bad}"
        );
    }
    assert_eq!(
        h.init_with_timeout(TID, 900_000, None, 100).response,
        Ok((1000, 0))
    );
    assert_eq!(
        h.init("", None, 100).response,
        Err(TxnError::InvalidRequest)
    );
    // No producer id block yet: the client retries.
    h.pids_available = false;
    let r = h.init("other", None, 100);
    assert_eq!(
        (r.response, r.records.len()),
        (Err(TxnError::CoordinatorLoadInProgress), 0)
    );
    assert!(h.shard.describe("other").is_none());
    // An existing id that needs no new producer id does not care.
    assert_eq!(h.init(TID, None, 200).response, Ok((1000, 1)));
}

// ----------------------------------------------------------------------------------------------------------
// KIP-890 part 1: verification
// ----------------------------------------------------------------------------------------------------------

#[test]
fn verify_partitions_answers_per_partition() {
    let (mut h, pid, epoch) = ongoing();
    let asked = tps(&[("t", 0), ("t", 7)]);
    assert_eq!(
        h.shard.verify_partitions(TID, pid, epoch, &asked),
        vec![
            (("t".to_string(), 0), TxnError::None),
            (("t".to_string(), 7), TxnError::TransactionAbortable),
        ]
    );
    let every = |e: TxnError| asked.iter().map(|p| (p.clone(), e)).collect::<Vec<_>>();
    assert_eq!(
        h.shard.verify_partitions(TID, pid + 1, epoch, &asked),
        every(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(
        h.shard.verify_partitions("nope", pid, epoch, &asked),
        every(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(
        h.shard.verify_partitions(TID, pid, epoch + 1, &asked),
        every(TxnError::ProducerFenced)
    );
    assert_eq!(
        h.shard.verify_partitions("", pid, epoch, &asked),
        every(TxnError::InvalidRequest)
    );
    // Verification writes nothing; after the commit completes no partition is in a transaction.
    let marker = h.end(pid, epoch, true, 300).markers[0].clone();
    h.written(&marker, 310);
    assert_eq!(
        h.shard.verify_partitions(TID, pid, epoch, &asked),
        every(TxnError::TransactionAbortable)
    );
}

// ----------------------------------------------------------------------------------------------------------
// Timers: transaction timeouts and transactional id expiration
// ----------------------------------------------------------------------------------------------------------

#[test]
fn timed_out_transactions_are_aborted_with_a_bumped_epoch_at_the_next_check() {
    // Checks every 10 s from the load at 0; the transaction starts at 10_000 with a 60 s timeout.
    let mut h = Harness::new();
    let (pid, epoch) = h.init(TID, None, 0).response.expect("init");
    assert_eq!(
        h.add(pid, epoch, &[("t", 0)], 10_000).response,
        TxnError::None
    );
    assert_eq!(h.shard.next_deadline_ms(), Some(10_000));
    // Polling before a check is due does nothing.
    assert!(h.poll(5_000).records.is_empty());
    // Up to 70_000 the transaction is at most its timeout old (Kafka aborts only past it: start + timeout < now).
    for t in (10_000..=70_000).step_by(10_000) {
        let r = h.poll(t);
        assert!(r.records.is_empty() && r.markers.is_empty(), "at {t}");
        assert_eq!(h.shard.next_deadline_ms(), Some(t + 10_000));
    }
    let r = h.poll(80_000);
    let v = record(&r);
    assert_eq!(v.state, TransactionState::PrepareAbort);
    assert_eq!((v.producer_epoch, v.last_producer_epoch), (epoch + 1, -1));
    assert_eq!((v.txn_start_ms, v.last_update_ms), (10_000, 80_000));
    assert_eq!(v.client_transaction_version, TRANSACTION_VERSION_LEVEL);
    assert_eq!(
        r.markers,
        vec![MarkerRequest {
            transactional_id: TID.into(),
            producer_id: pid,
            producer_epoch: epoch + 1,
            commit: false,
            coordinator_epoch: 3,
            partitions: tps(&[("t", 0)]),
        }]
    );
    let marker = r.markers[0].clone();
    // The old producer learns it was fenced.
    assert_eq!(
        h.end(pid, epoch, true, 80_100).response,
        TxnError::ProducerFenced
    );
    assert_eq!(
        h.add(pid, epoch, &[("t", 1)], 80_100).response,
        TxnError::ProducerFenced
    );
    // Not aborted twice while the markers are written.
    assert!(h.poll(90_000).records.is_empty());
    h.written(&marker, 90_100);
    assert_eq!(h.state(), TransactionState::CompleteAbort);
    // The producer must initialize again.
    assert_eq!(h.init(TID, None, 95_000).response, Ok((pid, epoch + 2)));
}

#[test]
fn expired_transactional_ids_get_a_tombstone() {
    let config = TxnCoordinatorConfig {
        transactional_id_expiration_ms: 100_000,
        remove_expired_check_interval_ms: 50_000,
        abort_timed_out_check_interval_ms: 1_000_000,
        ..TxnCoordinatorConfig::default()
    };
    let mut h = Harness::with(config);
    h.init("idle", None, 0).response.expect("init");
    h.init("done", None, 0).response.expect("init");
    h.init("busy", None, 0).response.expect("init");
    let (pid, epoch) = (
        h.meta_of("done").producer_id,
        h.meta_of("done").producer_epoch,
    );
    let r = h
        .shard
        .add_partitions("done", pid, epoch, &tps(&[("t", 0)]), 10_000);
    h.apply(r);
    let r = h.shard.end_txn("done", pid, epoch, true, 20_000);
    let marker = h.apply(r).markers[0].clone();
    h.written(&marker, 30_000);
    let busy = h.meta_of("busy").clone();
    let r = h.shard.add_partitions(
        "busy",
        busy.producer_id,
        busy.producer_epoch,
        &tps(&[("t", 1)]),
        40_000,
    );
    h.apply(r);

    assert!(h.poll(50_000).records.is_empty());
    // At 100_000 "idle" (updated at 0) is exactly expired (Kafka: last update <= now - expiration).
    let r = h.poll(100_000);
    assert_eq!(
        r.records,
        vec![TxnLogRecord {
            transactional_id: "idle".into(),
            value: None
        }]
    );
    assert!(h.shard.describe("idle").is_none());
    // "done" (CompleteCommit at 30_000) expires at the check after 130_000; an Ongoing one never does.
    let r = h.poll(150_000);
    assert_eq!(r.records.len(), 1);
    assert_eq!(r.records[0].transactional_id, "done");
    assert!(h.shard.describe("busy").is_some());
    // An expired id starts over with a new producer id.
    assert_eq!(h.init("idle", None, 160_000).response, Ok((1003, 0)));
}

impl Harness {
    fn meta_of(&self, id: &str) -> &TxnMetadata {
        self.shard.describe(id).expect("transactional id")
    }
}

#[test]
fn poll_schedules_itself_without_finish_loading() {
    let mut shard = TxnCoordinatorShard::new(TxnCoordinatorConfig::default(), 1);
    assert_eq!(shard.next_deadline_ms(), None);
    assert!(shard.poll(5, &mut || None).records.is_empty());
    assert_eq!(shard.next_deadline_ms(), Some(10_005));
}

// ----------------------------------------------------------------------------------------------------------
// Loading
// ----------------------------------------------------------------------------------------------------------

#[test]
fn loading_resends_the_markers_of_prepared_transactions() {
    let (mut h, pid, epoch) = ongoing();
    h.end(pid, epoch, true, 300);
    h.init("other", None, 310).response.expect("init");
    // The coordinator moves: a new leader epoch loads the log.
    let mut loaded = TxnCoordinatorShard::new(TxnCoordinatorConfig::default(), 9);
    for rec in &h.log {
        loaded.replay(rec);
    }
    let markers = loaded.finish_loading(1_000);
    assert_eq!(
        markers,
        vec![MarkerRequest {
            transactional_id: TID.into(),
            producer_id: pid,
            producer_epoch: epoch,
            commit: true,
            coordinator_epoch: 9,
            partitions: tps(&[("t", 0), ("t", 1)]),
        }]
    );
    assert_eq!(loaded.next_deadline_ms(), Some(11_000));
    let r = loaded.markers_written(TID, pid, epoch, 1_100);
    assert_eq!(record(&r).state, TransactionState::CompleteCommit);
    // Markers for another epoch (a stale completion) write nothing.
    assert!(loaded
        .markers_written(TID, pid, epoch + 1, 1_100)
        .records
        .is_empty());
    assert!(loaded
        .markers_written("unknown", pid, epoch, 1_100)
        .records
        .is_empty());
}

// ----------------------------------------------------------------------------------------------------------
// DescribeTransactions and ListTransactions
// ----------------------------------------------------------------------------------------------------------

#[test]
fn describe_and_list_filter_as_kafka() {
    let (mut h, pid, _) = ongoing(); // "tx": Ongoing since 200
    h.init("idle", None, 300).response.expect("init"); // Empty, producer id 1001
    assert!(h.shard.describe("missing").is_none());
    assert_eq!(h.meta().state.name(), "Ongoing");

    let ids = |v: Vec<&TxnMetadata>| {
        v.into_iter()
            .map(|m| m.transactional_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(h.shard.list(&[], &[], -1, 1_000)), vec!["idle", "tx"]);
    assert_eq!(
        ids(h.shard.list(&["Ongoing".into()], &[], -1, 1_000)),
        vec!["tx"]
    );
    assert_eq!(
        ids(h.shard.list(&["Bogus".into()], &[], -1, 1_000)),
        Vec::<String>::new()
    );
    assert_eq!(ids(h.shard.list(&[], &[1001], -1, 1_000)), vec!["idle"]);
    assert_eq!(
        ids(h.shard.list(&[], &[pid, 1001], -1, 1_000)),
        vec!["idle", "tx"]
    );
    // KIP-994: running longer than the filter. "tx" has run 800 ms at 1_000; Empty has no start (-1), so Kafka
    // counts it as running since the epoch.
    assert_eq!(ids(h.shard.list(&[], &[], 800, 1_000)), vec!["idle"]);
    assert_eq!(ids(h.shard.list(&[], &[], 799, 1_000)), vec!["idle", "tx"]);
}

// ----------------------------------------------------------------------------------------------------------
// Replay equivalence over random operation sequences
// ----------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Init {
        id: usize,
        kip360: bool,
        stale: bool,
    },
    Add {
        id: usize,
        partition: i32,
        stale: bool,
    },
    End {
        id: usize,
        commit: bool,
    },
    Markers {
        id: usize,
    },
    Advance {
        ms: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, any::<bool>(), any::<bool>()).prop_map(|(id, kip360, stale)| Op::Init {
            id,
            kip360,
            stale
        }),
        (0..3usize, 0..4i32, any::<bool>()).prop_map(|(id, partition, stale)| Op::Add {
            id,
            partition,
            stale
        }),
        (0..3usize, any::<bool>()).prop_map(|(id, commit)| Op::End { id, commit }),
        (0..3usize).prop_map(|id| Op::Markers { id }),
        (1..40_000i64).prop_map(|ms| Op::Advance { ms }),
    ]
}

proptest! {
    /// Whatever the requests and timers, every record is a valid transition and a shard rebuilt from the log
    /// equals the live one (checked by the harness after every step), and the markers in flight are exactly the
    /// ids in Prepare*.
    #[test]
    fn replaying_the_log_rebuilds_the_live_shard(ops in proptest::collection::vec(op(), 1..80)) {
        let config = TxnCoordinatorConfig {
            transactional_id_expiration_ms: 200_000,
            remove_expired_check_interval_ms: 30_000,
            ..TxnCoordinatorConfig::default()
        };
        let mut h = Harness::with(config);
        let names = ["a", "b", "c"];
        let mut in_flight: BTreeMap<String, MarkerRequest> = BTreeMap::new();
        let mut now = 0i64;
        for op in ops {
            let current = |h: &Harness, id: usize| {
                h.shard.describe(names[id]).map(|m| (m.producer_id, m.producer_epoch))
            };
            let markers = match op {
                Op::Init { id, kip360, stale } => {
                    let expected = current(&h, id)
                        .filter(|_| kip360)
                        .map(|(p, e)| (p, if stale { e - 1 } else { e }));
                    h.init(names[id], expected, now).markers
                }
                Op::Add { id, partition, stale } => {
                    let Some((pid, epoch)) = current(&h, id) else { continue };
                    let epoch = if stale { epoch - 1 } else { epoch };
                    let r = h.shard.add_partitions(names[id], pid, epoch, &tps(&[("t", partition)]), now);
                    h.apply(r).markers
                }
                Op::End { id, commit } => {
                    let Some((pid, epoch)) = current(&h, id) else { continue };
                    let r = h.shard.end_txn(names[id], pid, epoch, commit, now);
                    h.apply(r).markers
                }
                Op::Markers { id } => {
                    if let Some(m) = in_flight.remove(names[id]) {
                        h.written(&m, now);
                    }
                    Vec::new()
                }
                Op::Advance { ms } => {
                    now += ms;
                    h.poll(now).markers
                }
            };
            for m in markers {
                prop_assert!(!in_flight.contains_key(&m.transactional_id), "markers sent twice");
                in_flight.insert(m.transactional_id.clone(), m);
            }
            let prepared: Vec<String> = Harness::all(&h.shard)
                .into_values()
                .filter(|m| m.state.is_prepare())
                .map(|m| m.transactional_id)
                .collect();
            prop_assert_eq!(prepared, in_flight.keys().cloned().collect::<Vec<_>>());
            // No transition ever leaves a state a loaded shard cannot hold.
            for m in Harness::all(&h.shard).values() {
                prop_assert!(!matches!(m.state, TransactionState::Dead | TransactionState::PrepareEpochFence));
            }
        }
    }
}
