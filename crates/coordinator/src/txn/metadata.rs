//! One transactional id's metadata and the transitions between [`TransactionState`]s (Kafka's
//! `TransactionMetadata` and `TransactionState`).
//!
//! A transition never changes a [`TxnMetadata`]: the `prepare_*` methods check it against Kafka's table of valid
//! previous states and return the [`TxnLogValue`] to append; the metadata changes only when the shard replays that
//! value ([`TxnMetadata::from_value`]). Kafka's in-memory `pendingState` has no counterpart here because the shell
//! replays each record before the next request reaches the shard; the one pending state a request can observe,
//! markers in flight between `Prepare*` and `Complete*`, is implied by the `Prepare*` state itself.

use std::collections::BTreeSet;
use std::fmt;

use super::record::TxnLogValue;

/// Kafka's `RecordBatch.NO_PRODUCER_ID`.
pub const NO_PRODUCER_ID: i64 = -1;
/// Kafka's `RecordBatch.NO_PRODUCER_EPOCH`.
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// The state of a transactional id, with Kafka's ids (TransactionLogValue's `TransactionStatus`) and names (as
/// ListTransactions and DescribeTransactions print them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransactionState {
    /// No transaction in progress (after InitProducerId, or a new id).
    Empty,
    /// Partitions have been added; the transaction is open.
    Ongoing,
    /// EndTxn(commit) is written; commit markers are being written.
    PrepareCommit,
    /// EndTxn(abort), a timeout or a fence is written; abort markers are being written.
    PrepareAbort,
    /// Every commit marker is written.
    CompleteCommit,
    /// Every abort marker is written.
    CompleteAbort,
    /// The id expired; its tombstone is being written. Never held by a loaded shard.
    Dead,
    /// An epoch bump that fences the producer of an ongoing transaction; immediately followed by
    /// `PrepareAbort`, never written to the log.
    PrepareEpochFence,
}

impl TransactionState {
    /// Every state, in id order.
    pub const ALL: [TransactionState; 8] = [
        TransactionState::Empty,
        TransactionState::Ongoing,
        TransactionState::PrepareCommit,
        TransactionState::PrepareAbort,
        TransactionState::CompleteCommit,
        TransactionState::CompleteAbort,
        TransactionState::Dead,
        TransactionState::PrepareEpochFence,
    ];

    /// Kafka's id of the state, as TransactionLogValue's `TransactionStatus`.
    pub fn id(self) -> i8 {
        match self {
            TransactionState::Empty => 0,
            TransactionState::Ongoing => 1,
            TransactionState::PrepareCommit => 2,
            TransactionState::PrepareAbort => 3,
            TransactionState::CompleteCommit => 4,
            TransactionState::CompleteAbort => 5,
            TransactionState::Dead => 6,
            TransactionState::PrepareEpochFence => 7,
        }
    }

    /// The state of a `TransactionStatus` id; `None` for an unknown id.
    pub fn from_id(id: i8) -> Option<TransactionState> {
        TransactionState::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The name Kafka prints (`"Empty"`, `"Ongoing"`, `"PrepareCommit"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TransactionState::Empty => "Empty",
            TransactionState::Ongoing => "Ongoing",
            TransactionState::PrepareCommit => "PrepareCommit",
            TransactionState::PrepareAbort => "PrepareAbort",
            TransactionState::CompleteCommit => "CompleteCommit",
            TransactionState::CompleteAbort => "CompleteAbort",
            TransactionState::Dead => "Dead",
            TransactionState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// The state of a name as [`TransactionState::name`] prints it (ListTransactions' state filters).
    pub fn from_name(name: &str) -> Option<TransactionState> {
        TransactionState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The states from which this state may be entered (Kafka's `validPreviousStates`, transaction version 1:
    /// Kafka 4.x also lets TV2 clients abort from Empty and Complete*, which Sluice does not serve).
    pub fn valid_previous_states(self) -> &'static [TransactionState] {
        use TransactionState::*;
        match self {
            Empty => &[Empty, CompleteCommit, CompleteAbort],
            Ongoing => &[Ongoing, Empty, CompleteCommit, CompleteAbort],
            PrepareCommit => &[Ongoing],
            PrepareAbort => &[Ongoing, PrepareEpochFence],
            CompleteCommit => &[PrepareCommit],
            CompleteAbort => &[PrepareAbort],
            Dead => &[Empty, CompleteAbort, CompleteCommit],
            PrepareEpochFence => &[Ongoing],
        }
    }

    /// Whether `self -> to` is a valid transition.
    pub fn can_transition_to(self, to: TransactionState) -> bool {
        to.valid_previous_states().contains(&self)
    }

    /// Whether an id in this state may expire (`transactional.id.expiration.ms`).
    pub fn is_expiration_allowed(self) -> bool {
        matches!(
            self,
            TransactionState::Empty
                | TransactionState::CompleteCommit
                | TransactionState::CompleteAbort
        )
    }

    /// `PrepareCommit` or `PrepareAbort`: markers are being written.
    pub fn is_prepare(self) -> bool {
        matches!(
            self,
            TransactionState::PrepareCommit | TransactionState::PrepareAbort
        )
    }
}

impl fmt::Display for TransactionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether an epoch leaves no room to bump: Kafka never hands out `i16::MAX` so that the coordinator can always
/// fence (`TransactionMetadata.isEpochExhausted`).
pub fn is_epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

/// A transition that Kafka's table of valid previous states forbids, or that would write an invalid producer id
/// or epoch: a coordinator bug (Kafka throws `IllegalStateException`), answered as `UNKNOWN_SERVER_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transactional id {transactional_id}: invalid transition from {from} to {to}")]
pub struct TransitionError {
    /// The transactional id.
    pub transactional_id: String,
    /// Its current state.
    pub from: TransactionState,
    /// The state asked for.
    pub to: TransactionState,
}

/// The metadata of one transactional id (Kafka's `TransactionMetadata`), as the last replayed record left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    /// The transactional id.
    pub transactional_id: String,
    /// The producer id in use.
    pub producer_id: i64,
    /// The producer id before the last transition (a KIP-360 retry after a producer id rotation names it).
    pub prev_producer_id: i64,
    /// The producer id to switch to at the next completion (transaction version 2 only; -1 here).
    pub next_producer_id: i64,
    /// The current producer epoch.
    pub producer_epoch: i16,
    /// The epoch before a KIP-360 bump, so that a retry of the bump gets the same answer; -1 when none. Not in
    /// Kafka's log schema: a loaded shard has -1, as Kafka's coordinator does after a load.
    pub last_producer_epoch: i16,
    /// The transaction timeout.
    pub timeout_ms: i32,
    /// The state.
    pub state: TransactionState,
    /// The partitions of the ongoing (or completing) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// When the transaction started (first partition added); -1 when none.
    pub txn_start_ms: i64,
    /// When the metadata last changed (drives expiration).
    pub last_update_ms: i64,
    /// The transaction version of the client that made the last transition (Kafka's `ClientTransactionVersion`).
    pub client_transaction_version: i16,
}

impl TxnMetadata {
    /// The metadata of a transactional id that InitProducerId sees for the first time: a new producer id, no
    /// epoch yet, Empty. It is not part of the shard's state until its first record is replayed.
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now_ms: i64) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            prev_producer_id: NO_PRODUCER_ID,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms,
            state: TransactionState::Empty,
            partitions: BTreeSet::new(),
            txn_start_ms: -1,
            last_update_ms: now_ms,
            client_transaction_version: 0,
        }
    }

    /// The metadata a record describes (replay: Kafka's `completeTransitionTo`, which takes every field of the
    /// transition, and its log loading).
    pub fn from_value(transactional_id: &str, v: &TxnLogValue) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id: v.producer_id,
            prev_producer_id: v.prev_producer_id,
            next_producer_id: v.next_producer_id,
            producer_epoch: v.producer_epoch,
            last_producer_epoch: v.last_producer_epoch,
            timeout_ms: v.timeout_ms,
            state: v.state,
            partitions: v.partitions.clone(),
            txn_start_ms: v.txn_start_ms,
            last_update_ms: v.last_update_ms,
            client_transaction_version: v.client_transaction_version,
        }
    }

    /// The record value that describes this metadata as it is.
    pub fn to_value(&self) -> TxnLogValue {
        TxnLogValue {
            producer_id: self.producer_id,
            prev_producer_id: self.prev_producer_id,
            next_producer_id: self.next_producer_id,
            producer_epoch: self.producer_epoch,
            last_producer_epoch: self.last_producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions: self.partitions.clone(),
            last_update_ms: self.last_update_ms,
            txn_start_ms: self.txn_start_ms,
            client_transaction_version: self.client_transaction_version,
        }
    }

    /// Whether the current epoch cannot be bumped for a client (see [`is_epoch_exhausted`]).
    pub fn is_producer_epoch_exhausted(&self) -> bool {
        is_epoch_exhausted(self.producer_epoch)
    }

    /// Whether a transaction is open or completing (Kafka's `hasPendingTransaction`).
    fn has_pending_transaction(&self) -> bool {
        matches!(
            self.state,
            TransactionState::Ongoing
                | TransactionState::PrepareAbort
                | TransactionState::PrepareCommit
        )
    }

    /// Starts a transition to `to`: a copy of the current value whose previous producer id is the current one
    /// (as Kafka's `prepareTransitionTo`), for `change` to edit, then checks it.
    fn transition(
        &self,
        to: TransactionState,
        change: impl FnOnce(&mut TxnLogValue),
    ) -> Result<TxnLogValue, TransitionError> {
        let mut v = self.to_value();
        v.state = to;
        v.prev_producer_id = self.producer_id;
        change(&mut v);
        let valid = self.state.can_transition_to(to)
            && v.producer_id >= 0
            && (to == TransactionState::Dead || v.producer_epoch >= 0);
        if valid {
            Ok(v)
        } else {
            Err(TransitionError {
                transactional_id: self.transactional_id.clone(),
                from: self.state,
                to,
            })
        }
    }

    /// InitProducerId on Empty or Complete*: bump the epoch, or (KIP-360) accept a retry (Kafka's
    /// `prepareIncrementProducerEpoch`). `Ok(None)` when `expected_epoch` is neither the current epoch nor the
    /// last one: the producer is fenced.
    pub fn prepare_increment_producer_epoch(
        &self,
        timeout_ms: i32,
        expected_epoch: Option<i16>,
        now_ms: i64,
    ) -> Result<Option<TxnLogValue>, TransitionError> {
        if self.is_producer_epoch_exhausted() {
            // Kafka throws here: the caller rotates the producer id instead unless the expected epoch is stale.
            return Err(TransitionError {
                transactional_id: self.transactional_id.clone(),
                from: self.state,
                to: TransactionState::Empty,
            });
        }
        let bumped = self.producer_epoch + 1;
        let (epoch, last_epoch) = match expected_epoch {
            // A new producer (or one that does not know its epoch) fences every older one.
            None => (bumped, NO_PRODUCER_EPOCH),
            // The producer continues after an error and nobody else initialized since: bump, remember the epoch
            // it had so that a retry of this call gets the same answer. No current epoch: a new producer.
            Some(e) if self.producer_epoch == NO_PRODUCER_EPOCH || e == self.producer_epoch => {
                (bumped, self.producer_epoch)
            }
            // A retry of a bump that succeeded: the same answer, no new bump.
            Some(e) if e == self.last_producer_epoch => {
                (self.producer_epoch, self.last_producer_epoch)
            }
            Some(_) => return Ok(None),
        };
        self.transition(TransactionState::Empty, |v| {
            v.producer_epoch = epoch;
            v.last_producer_epoch = last_epoch;
            v.timeout_ms = timeout_ms;
            v.partitions.clear();
            v.txn_start_ms = -1;
            v.last_update_ms = now_ms;
        })
        .map(Some)
    }

    /// InitProducerId when the epoch is exhausted: a new producer id at epoch 0 (Kafka's
    /// `prepareProducerIdRotation`). `record_last_epoch` (a KIP-360 request) keeps the old epoch as the last one.
    pub fn prepare_producer_id_rotation(
        &self,
        new_producer_id: i64,
        timeout_ms: i32,
        now_ms: i64,
        record_last_epoch: bool,
    ) -> Result<TxnLogValue, TransitionError> {
        if self.has_pending_transaction() {
            return Err(TransitionError {
                transactional_id: self.transactional_id.clone(),
                from: self.state,
                to: TransactionState::Empty,
            });
        }
        let last_epoch = if record_last_epoch {
            self.producer_epoch
        } else {
            NO_PRODUCER_EPOCH
        };
        self.transition(TransactionState::Empty, |v| {
            v.producer_id = new_producer_id;
            v.producer_epoch = 0;
            v.last_producer_epoch = last_epoch;
            v.timeout_ms = timeout_ms;
            v.partitions.clear();
            v.txn_start_ms = -1;
            v.last_update_ms = now_ms;
        })
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: Ongoing with the union of the partitions; a transaction that starts
    /// here starts now (Kafka's `prepareAddPartitions`).
    pub fn prepare_add_partitions(
        &self,
        added: &[(String, i32)],
        client_transaction_version: i16,
        now_ms: i64,
    ) -> Result<TxnLogValue, TransitionError> {
        let starts = matches!(
            self.state,
            TransactionState::Empty
                | TransactionState::CompleteAbort
                | TransactionState::CompleteCommit
        );
        self.transition(TransactionState::Ongoing, |v| {
            v.partitions.extend(added.iter().cloned());
            if starts {
                v.txn_start_ms = now_ms;
            }
            v.last_update_ms = now_ms;
            v.client_transaction_version = client_transaction_version;
        })
    }

    /// EndTxn from Ongoing: PrepareCommit or PrepareAbort over the same partitions, epoch unchanged (transaction
    /// version 1; Kafka's `prepareAbortOrCommit` without the TV2 epoch bump).
    pub fn prepare_abort_or_commit(
        &self,
        commit: bool,
        client_transaction_version: i16,
        now_ms: i64,
    ) -> Result<TxnLogValue, TransitionError> {
        let to = if commit {
            TransactionState::PrepareCommit
        } else {
            TransactionState::PrepareAbort
        };
        self.transition(to, |v| {
            v.next_producer_id = NO_PRODUCER_ID;
            v.last_update_ms = now_ms;
            v.client_transaction_version = client_transaction_version;
        })
    }

    /// The coordinator aborts an Ongoing transaction and fences its producer (InitProducerId on Ongoing, or the
    /// transaction timed out): Kafka's `prepareFenceProducerEpoch` (PrepareEpochFence, epoch + 1 unless it is
    /// already `i16::MAX`) immediately followed by the abort, so only the PrepareAbort is written, with the bumped
    /// epoch and no last epoch. Its markers carry the bumped epoch, which fences the old producer at every
    /// partition of the transaction.
    pub fn prepare_fenced_abort(
        &self,
        client_transaction_version: i16,
        now_ms: i64,
    ) -> Result<TxnLogValue, TransitionError> {
        let bumped = if self.producer_epoch == i16::MAX {
            self.producer_epoch
        } else {
            self.producer_epoch + 1
        };
        let fence = self.transition(TransactionState::PrepareEpochFence, |v| {
            v.producer_epoch = bumped;
        })?;
        let fenced = TxnMetadata {
            producer_epoch: fence.producer_epoch,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            state: TransactionState::PrepareEpochFence,
            ..self.clone()
        };
        fenced.transition(TransactionState::PrepareAbort, |v| {
            v.next_producer_id = NO_PRODUCER_ID;
            v.last_update_ms = now_ms;
            v.client_transaction_version = client_transaction_version;
        })
    }

    /// Every marker of a Prepare* state is written: CompleteCommit or CompleteAbort, no partitions (Kafka's
    /// `prepareComplete`, transaction version 1: producer id and epochs unchanged).
    pub fn prepare_complete(&self, now_ms: i64) -> Result<TxnLogValue, TransitionError> {
        let to = if self.state == TransactionState::PrepareCommit {
            TransactionState::CompleteCommit
        } else {
            TransactionState::CompleteAbort
        };
        self.transition(to, |v| {
            v.next_producer_id = NO_PRODUCER_ID;
            v.partitions.clear();
            v.last_update_ms = now_ms;
        })
    }

    /// Whether `transactional.id.expiration.ms` has passed since the last update in a state that may expire.
    pub fn should_expire(&self, now_ms: i64, expiration_ms: i64) -> bool {
        self.state.is_expiration_allowed()
            && self.last_update_ms <= now_ms.saturating_sub(expiration_ms)
    }

    /// Checks that the id may expire now (Dead is a valid next state); its record is a tombstone.
    pub fn prepare_dead(&self) -> Result<(), TransitionError> {
        self.transition(TransactionState::Dead, |v| v.partitions.clear())
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_kafkas() {
        let expected = [
            (0, "Empty"),
            (1, "Ongoing"),
            (2, "PrepareCommit"),
            (3, "PrepareAbort"),
            (4, "CompleteCommit"),
            (5, "CompleteAbort"),
            (6, "Dead"),
            (7, "PrepareEpochFence"),
        ];
        for (state, (id, name)) in TransactionState::ALL.into_iter().zip(expected) {
            assert_eq!((state.id(), state.name()), (id, name));
            assert_eq!(TransactionState::from_id(id), Some(state));
            assert_eq!(TransactionState::from_name(name), Some(state));
            assert_eq!(state.to_string(), name);
        }
        assert_eq!(TransactionState::from_id(8), None);
        assert_eq!(TransactionState::from_id(-1), None);
        assert_eq!(TransactionState::from_name("ongoing"), None);
    }

    #[test]
    fn transition_table_is_kafkas() {
        use TransactionState::*;
        // Every (from, to) pair Kafka's validPreviousStates allows (transaction version 1), and no other.
        let allowed = [
            (Empty, Empty),
            (CompleteCommit, Empty),
            (CompleteAbort, Empty),
            (Ongoing, Ongoing),
            (Empty, Ongoing),
            (CompleteCommit, Ongoing),
            (CompleteAbort, Ongoing),
            (Ongoing, PrepareCommit),
            (Ongoing, PrepareAbort),
            (PrepareEpochFence, PrepareAbort),
            (PrepareCommit, CompleteCommit),
            (PrepareAbort, CompleteAbort),
            (Empty, Dead),
            (CompleteAbort, Dead),
            (CompleteCommit, Dead),
            (Ongoing, PrepareEpochFence),
        ];
        for from in TransactionState::ALL {
            for to in TransactionState::ALL {
                assert_eq!(
                    from.can_transition_to(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        let expirable: Vec<_> = TransactionState::ALL
            .into_iter()
            .filter(|s| s.is_expiration_allowed())
            .collect();
        assert_eq!(expirable, vec![Empty, CompleteCommit, CompleteAbort]);
    }

    fn ongoing() -> TxnMetadata {
        TxnMetadata {
            producer_epoch: 3,
            state: TransactionState::Ongoing,
            partitions: [("t".to_string(), 0)].into_iter().collect(),
            txn_start_ms: 100,
            ..TxnMetadata::new("tx", 42, 60_000, 100)
        }
    }

    #[test]
    fn invalid_transitions_are_errors_not_panics() {
        let m = ongoing();
        // Ongoing -> Empty (InitProducerId must fence first), Ongoing -> Complete*, Ongoing -> Dead.
        assert!(m.prepare_increment_producer_epoch(1000, None, 1).is_err());
        assert!(m.prepare_complete(1).is_err());
        assert!(m.prepare_dead().is_err());
        assert!(m.prepare_producer_id_rotation(7, 1000, 1, false).is_err());
        let empty = TxnMetadata::new("tx", 42, 60_000, 100);
        assert!(empty.prepare_abort_or_commit(true, 0, 1).is_err());
        assert!(empty.prepare_fenced_abort(1, 1).is_err());
    }

    #[test]
    fn fenced_abort_bumps_once_and_clears_the_last_epoch() {
        let m = TxnMetadata {
            last_producer_epoch: 2,
            ..ongoing()
        };
        let v = m.prepare_fenced_abort(1, 500).expect("valid");
        assert_eq!(v.state, TransactionState::PrepareAbort);
        assert_eq!((v.producer_epoch, v.last_producer_epoch), (4, -1));
        assert_eq!(v.partitions, m.partitions);
        assert_eq!((v.txn_start_ms, v.last_update_ms), (100, 500));
        // At i16::MAX there is no room: the fence keeps the epoch (Kafka logs an error).
        let at_max = TxnMetadata {
            producer_epoch: i16::MAX,
            ..ongoing()
        };
        assert_eq!(
            at_max
                .prepare_fenced_abort(1, 500)
                .expect("valid")
                .producer_epoch,
            i16::MAX
        );
    }
}
