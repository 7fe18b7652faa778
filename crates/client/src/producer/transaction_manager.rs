//! The producer's transaction manager: the state machine of a transactional producer and the per-partition
//! sequence bookkeeping of an idempotent one, as the Java client's `TransactionManager`, `TxnPartitionMap` and
//! `TxnPartitionEntry` do it (KIP-98 idempotence and transactions, KIP-360 epoch bumps, KIP-447 offsets;
//! transaction version 1, so partitions are added with AddPartitionsToTxn and offsets with AddOffsetsToTxn).
//!
//! Pure: no I/O, no clock, no locks. The producer keeps it under its accumulator lock. The sender asks it
//! which batches may be drained and with which producer id, epoch and base sequence, and reports each produce
//! outcome; the transactional API methods move its state; the coordinator exchanges report their outcomes.
//!
//! States and the transitions Kafka allows (target <- sources):
//!
//! | target | allowed from |
//! |---|---|
//! | `Uninitialized` | `Ready`, `AbortableError` |
//! | `Initializing` | `Uninitialized`, `AbortingTransaction` |
//! | `Ready` | `Initializing`, `CommittingTransaction`, `AbortingTransaction` |
//! | `InTransaction` | `Ready` |
//! | `CommittingTransaction` | `InTransaction` |
//! | `AbortingTransaction` | `InTransaction`, `AbortableError` |
//! | `AbortableError` | `InTransaction`, `CommittingTransaction`, `AbortableError`, `Initializing` |
//! | `FatalError` | any |
//!
//! An invalid transition asked for by an API call fails that call and changes nothing
//! ([`ClientError::InvalidTransactionState`]); one caused by a produce outcome poisons the manager into
//! `FatalError`, as the Java client's sender thread does (KAFKA-14831).
//!
//! Sequence numbers (KIP-98): each partition's batches get consecutive base sequences in drain order; a retry
//! keeps its sequence; a partition whose first queued batch is a retry sends only the lowest in-flight
//! sequence, so retried batches reach the broker in order. A batch is "in flight" from its first drain until
//! it completes or fails for good. An idempotent producer that hits OUT_OF_ORDER_SEQUENCE_NUMBER or
//! UNKNOWN_PRODUCER_ID with a real gap bumps its epoch locally (the broker takes any newer epoch starting at
//! sequence 0) and rewrites the sequences of the partition's in-flight batches from 0 (KIP-360).

use std::collections::{BTreeSet, HashMap, HashSet};

use kafka_protocol::ResponseError;

use crate::consumer::TopicPartition;
use crate::error::ClientError;

/// A producer id and epoch as InitProducerId hands them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerIdAndEpoch {
    /// The producer id (-1: none).
    pub producer_id: i64,
    /// The producer epoch (-1: none).
    pub epoch: i16,
}

impl ProducerIdAndEpoch {
    /// No producer id yet.
    pub const NONE: ProducerIdAndEpoch = ProducerIdAndEpoch {
        producer_id: -1,
        epoch: -1,
    };

    /// Whether this is a producer id the broker handed out.
    pub fn is_valid(&self) -> bool {
        self.producer_id >= 0
    }
}

/// The state of a producer's transaction manager (the Java client's `TransactionManager.State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    /// No producer id yet (`init_transactions` not called, or an idempotent producer before its first send).
    Uninitialized,
    /// InitProducerId is under way.
    Initializing,
    /// A producer id is at hand and no transaction is open.
    Ready,
    /// `begin_transaction` was called.
    InTransaction,
    /// `commit_transaction` is flushing and ending the transaction.
    CommittingTransaction,
    /// `abort_transaction` is dropping unsent batches and ending the transaction.
    AbortingTransaction,
    /// The transaction failed; only `abort_transaction` is allowed.
    AbortableError,
    /// The producer cannot go on; every call fails.
    FatalError,
}

impl TransactionState {
    /// Kafka's valid-transition table (see the module docs).
    pub fn can_transition_to(self, target: TransactionState) -> bool {
        use TransactionState::*;
        match target {
            Uninitialized => matches!(self, Ready | AbortableError),
            Initializing => matches!(self, Uninitialized | AbortingTransaction),
            Ready => matches!(
                self,
                Initializing | CommittingTransaction | AbortingTransaction
            ),
            InTransaction => self == Ready,
            CommittingTransaction => self == InTransaction,
            AbortingTransaction => matches!(self, InTransaction | AbortableError),
            AbortableError => matches!(
                self,
                InTransaction | CommittingTransaction | AbortableError | Initializing
            ),
            FatalError => true,
        }
    }
}

impl std::fmt::Display for TransactionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Identifies a batch to the manager from its first drain on (batches move between the accumulator and
/// send tasks, so the manager tracks them by id rather than by reference).
pub(crate) type BatchId = u64;

/// The producer fields a batch is (to be) sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchSequence {
    /// The batch.
    pub(crate) id: BatchId,
    /// Producer id and epoch.
    pub(crate) producer: ProducerIdAndEpoch,
    /// Base sequence.
    pub(crate) base_sequence: i32,
    /// Records in the batch.
    pub(crate) record_count: i32,
    /// The sequence was rewritten after the batch was first sent (Java's `sequenceHasBeenReset`).
    pub(crate) sequence_reset: bool,
}

impl BatchSequence {
    /// The sequence of the batch's last record.
    fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.record_count - 1)
    }
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from `i32::MAX` to 0.
pub(crate) fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// One partition's sequence state (Java's `TxnPartitionEntry`).
#[derive(Debug, Clone)]
struct PartitionEntry {
    /// The producer id and epoch this partition's sequences belong to.
    producer: ProducerIdAndEpoch,
    /// The base sequence of the next new batch.
    next_sequence: i32,
    /// The last sequence the broker acknowledged (-1: none).
    last_acked_sequence: i32,
    /// The last offset the broker acknowledged (-1: none); tells retention from data loss on
    /// UNKNOWN_PRODUCER_ID.
    last_acked_offset: i64,
    /// Batches drained and not yet completed, ordered by producer id, epoch and base sequence.
    in_flight: Vec<BatchSequence>,
}

impl PartitionEntry {
    fn new() -> PartitionEntry {
        PartitionEntry {
            producer: ProducerIdAndEpoch::NONE,
            next_sequence: 0,
            last_acked_sequence: -1,
            last_acked_offset: -1,
            in_flight: Vec::new(),
        }
    }

    fn sort(&mut self) {
        self.in_flight
            .sort_by_key(|b| (b.producer.producer_id, b.producer.epoch, b.base_sequence));
    }

    /// KIP-360: the in-flight batches are renumbered from 0 under `producer`, in their order.
    fn start_sequences_at_beginning(&mut self, producer: ProducerIdAndEpoch) {
        let mut sequence = 0;
        for b in &mut self.in_flight {
            b.producer = producer;
            b.base_sequence = sequence;
            b.sequence_reset = true;
            sequence = increment_sequence(sequence, b.record_count);
        }
        self.producer = producer;
        self.next_sequence = sequence;
        self.last_acked_sequence = -1;
    }

    /// A batch failed for good: the batches after it move down by its record count.
    fn adjust_sequences_due_to_failed_batch(&mut self, failed: &BatchSequence) {
        self.next_sequence = (self.next_sequence - failed.record_count).max(0);
        for b in &mut self.in_flight {
            if b.base_sequence >= failed.base_sequence {
                b.base_sequence = (b.base_sequence - failed.record_count).max(0);
                b.sequence_reset = true;
            }
        }
        self.sort();
    }
}

/// What a transactional coordinator answer means for the caller (the branches of the Java handlers).
#[derive(Debug, Clone)]
pub(crate) enum CoordinatorOutcome {
    /// Success.
    Done,
    /// NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE (or a lost connection): look the coordinator up again and
    /// retry.
    FindCoordinator,
    /// A retriable error (CONCURRENT_TRANSACTIONS, COORDINATOR_LOAD_IN_PROGRESS, ...): back off and retry.
    Retry,
    /// The transaction must be aborted.
    Abortable(ClientError),
    /// UNKNOWN_PRODUCER_ID / INVALID_PRODUCER_ID_MAPPING: abortable with an epoch bump when the coordinator can
    /// bump epochs (InitProducerId v3+), else fatal.
    AbortableIfPossible(ClientError),
    /// The producer cannot go on.
    Fatal(ClientError),
}

/// The transactional APIs whose answers [`classify`] maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnApi {
    /// FindCoordinator (key type 1 or 0).
    FindCoordinator,
    /// InitProducerId.
    InitProducerId,
    /// AddPartitionsToTxn (one partition's code).
    AddPartitionsToTxn,
    /// AddOffsetsToTxn.
    AddOffsetsToTxn,
    /// TxnOffsetCommit (one partition's code).
    TxnOffsetCommit,
    /// EndTxn.
    EndTxn,
}

/// Maps one error code of a transactional API's answer as the Java client's handlers do.
pub(crate) fn classify(
    api: TxnApi,
    code: i16,
    context: &str,
    transactional_id: &str,
) -> CoordinatorOutcome {
    use ResponseError as E;
    let Some(error) = ResponseError::try_from_code(code) else {
        return CoordinatorOutcome::Done;
    };
    let broker = || ClientError::broker(context.to_owned(), code, None);
    let fenced = || ClientError::ProducerFenced {
        transactional_id: transactional_id.to_owned(),
    };
    match (api, error) {
        (TxnApi::FindCoordinator, E::TransactionalIdAuthorizationFailed) => {
            CoordinatorOutcome::Fatal(broker())
        }
        (TxnApi::FindCoordinator, E::GroupAuthorizationFailed | E::TransactionAbortable) => {
            CoordinatorOutcome::Abortable(broker())
        }
        (TxnApi::FindCoordinator, _) if broker().is_retriable() => CoordinatorOutcome::Retry,
        (TxnApi::FindCoordinator, _) => CoordinatorOutcome::Fatal(broker()),

        // The group coordinator's answers to TxnOffsetCommit.
        (
            TxnApi::TxnOffsetCommit,
            E::CoordinatorNotAvailable | E::NotCoordinator | E::RequestTimedOut,
        ) => CoordinatorOutcome::FindCoordinator,
        (TxnApi::TxnOffsetCommit, _) if broker().is_retriable() => CoordinatorOutcome::Retry,
        (
            TxnApi::TxnOffsetCommit,
            E::GroupAuthorizationFailed
            | E::FencedInstanceId
            | E::TransactionAbortable
            | E::UnknownMemberId
            | E::IllegalGeneration,
        ) => CoordinatorOutcome::Abortable(broker()),
        (TxnApi::TxnOffsetCommit, E::InvalidProducerEpoch | E::ProducerFenced) => {
            CoordinatorOutcome::Fatal(fenced())
        }
        (TxnApi::TxnOffsetCommit, _) => CoordinatorOutcome::Fatal(broker()),

        // The transaction coordinator's answers.
        (_, E::NotCoordinator | E::CoordinatorNotAvailable) => CoordinatorOutcome::FindCoordinator,
        (_, _) if broker().is_retriable() => CoordinatorOutcome::Retry,
        // "We could still receive INVALID_PRODUCER_EPOCH from old versioned transaction coordinator, just treat
        // it the same as PRODUCER_FENCED."
        (_, E::InvalidProducerEpoch | E::ProducerFenced) => CoordinatorOutcome::Fatal(fenced()),
        (_, E::TransactionAbortable) => CoordinatorOutcome::Abortable(broker()),
        // InitProducerId: authorization failures are abortable (the producer goes back to Uninitialized and
        // init_transactions may be called again).
        (
            TxnApi::InitProducerId,
            E::TransactionalIdAuthorizationFailed | E::ClusterAuthorizationFailed,
        ) => CoordinatorOutcome::Abortable(broker()),
        (TxnApi::InitProducerId, _) => CoordinatorOutcome::Fatal(broker()),
        (_, E::TransactionalIdAuthorizationFailed | E::InvalidTxnState) => {
            CoordinatorOutcome::Fatal(broker())
        }
        (_, E::UnknownProducerId | E::InvalidProducerIdMapping) => {
            CoordinatorOutcome::AbortableIfPossible(broker())
        }
        (TxnApi::AddOffsetsToTxn, E::GroupAuthorizationFailed) => {
            CoordinatorOutcome::Abortable(broker())
        }
        // AddPartitionsToTxn: the caller gathers TOPIC_AUTHORIZATION_FAILED and OPERATION_NOT_ATTEMPTED over all
        // partitions into one abortable error.
        (TxnApi::AddPartitionsToTxn, _) => CoordinatorOutcome::Abortable(broker()),
        (_, _) => CoordinatorOutcome::Fatal(broker()),
    }
}

/// The state of one producer's idempotence and transactions.
#[derive(Debug)]
pub(crate) struct TransactionManager {
    transactional_id: Option<String>,
    state: TransactionState,
    /// The error behind `AbortableError` / `FatalError`.
    last_error: Option<ClientError>,
    producer: ProducerIdAndEpoch,
    partitions: HashMap<TopicPartition, PartitionEntry>,
    /// Partitions where a batch that had been sent was given up on (expired or out of retries), so the
    /// broker may or may not have its sequences: value = the sequence after that batch. No new batch is
    /// drained there until the in-flight ones settle it.
    unresolved: HashMap<TopicPartition, i32>,
    /// Partitions whose in-flight sequences are rewritten at the next epoch bump.
    partitions_to_rewrite: HashSet<TopicPartition>,
    /// Partitions sent to in this transaction, not yet in an AddPartitionsToTxn request.
    new_partitions: BTreeSet<TopicPartition>,
    /// Partitions in an AddPartitionsToTxn request under way.
    pending_partitions: BTreeSet<TopicPartition>,
    /// Partitions the coordinator added to the transaction.
    partitions_in_transaction: HashSet<TopicPartition>,
    /// Whether a partition or offsets were added, so that EndTxn must be sent.
    transaction_started: bool,
    epoch_bump_required: bool,
    /// The transaction coordinator speaks InitProducerId v3+ (KIP-360).
    coordinator_supports_epoch_bump: bool,
    /// The abort under way follows INVALID_PRODUCER_ID_MAPPING: the coordinator would refuse EndTxn, so the
    /// abort goes straight to InitProducerId.
    abort_skips_end_txn: bool,
    next_batch_id: BatchId,
}

impl TransactionManager {
    /// A manager for an idempotent producer (`transactional_id` `None`) or a transactional one.
    pub(crate) fn new(transactional_id: Option<String>) -> TransactionManager {
        TransactionManager {
            transactional_id,
            state: TransactionState::Uninitialized,
            last_error: None,
            producer: ProducerIdAndEpoch::NONE,
            partitions: HashMap::new(),
            unresolved: HashMap::new(),
            partitions_to_rewrite: HashSet::new(),
            new_partitions: BTreeSet::new(),
            pending_partitions: BTreeSet::new(),
            partitions_in_transaction: HashSet::new(),
            transaction_started: false,
            epoch_bump_required: false,
            coordinator_supports_epoch_bump: false,
            abort_skips_end_txn: false,
            next_batch_id: 1,
        }
    }

    // ---- queries ----

    pub(crate) fn is_transactional(&self) -> bool {
        self.transactional_id.is_some()
    }

    pub(crate) fn transactional_id(&self) -> &str {
        self.transactional_id.as_deref().unwrap_or("")
    }

    pub(crate) fn state(&self) -> TransactionState {
        self.state
    }

    pub(crate) fn producer_id_and_epoch(&self) -> ProducerIdAndEpoch {
        self.producer
    }

    #[cfg(test)]
    pub(crate) fn last_error(&self) -> Option<&ClientError> {
        self.last_error.as_ref()
    }

    pub(crate) fn has_fatal_error(&self) -> bool {
        self.state == TransactionState::FatalError
    }

    pub(crate) fn has_abortable_error(&self) -> bool {
        self.state == TransactionState::AbortableError
    }

    pub(crate) fn has_error(&self) -> bool {
        self.has_fatal_error() || self.has_abortable_error()
    }

    pub(crate) fn is_aborting(&self) -> bool {
        self.state == TransactionState::AbortingTransaction
    }

    pub(crate) fn is_completing(&self) -> bool {
        matches!(
            self.state,
            TransactionState::CommittingTransaction | TransactionState::AbortingTransaction
        )
    }

    pub(crate) fn transaction_started(&self) -> bool {
        self.transaction_started
    }

    pub(crate) fn epoch_bump_required(&self) -> bool {
        self.epoch_bump_required
    }

    pub(crate) fn set_coordinator_supports_epoch_bump(&mut self, supported: bool) {
        self.coordinator_supports_epoch_bump = supported;
    }

    /// An idempotent producer bumps its epoch itself; a transactional one needs InitProducerId v3+.
    pub(crate) fn can_bump_epoch(&self) -> bool {
        !self.is_transactional() || self.coordinator_supports_epoch_bump
    }

    /// Whether the abort under way skips EndTxn (it follows INVALID_PRODUCER_ID_MAPPING, which the coordinator
    /// would answer again) and goes straight to the epoch bump.
    pub(crate) fn abort_skips_end_txn(&self) -> bool {
        self.abort_skips_end_txn && self.can_bump_epoch()
    }

    /// The error every call gets in an error state (Java's `maybeFailWithError`).
    pub(crate) fn error_for_callers(&self) -> Option<ClientError> {
        let cause = || {
            Box::new(
                self.last_error
                    .clone()
                    .unwrap_or(ClientError::TransactionAborted),
            )
        };
        match self.state {
            TransactionState::FatalError => Some(match &self.last_error {
                Some(e @ ClientError::ProducerFenced { .. }) => e.clone(),
                _ => ClientError::TransactionFatal { cause: cause() },
            }),
            TransactionState::AbortableError => {
                Some(ClientError::TransactionAbortable { cause: cause() })
            }
            _ => None,
        }
    }

    pub(crate) fn maybe_fail_with_error(&self) -> Result<(), ClientError> {
        match self.error_for_callers() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    // ---- transitions ----

    fn invalid(&self, operation: &'static str) -> ClientError {
        ClientError::InvalidTransactionState {
            operation,
            state: self.state.to_string(),
        }
    }

    /// A transition asked for by an API call: refused without a state change when invalid.
    fn transition(
        &mut self,
        target: TransactionState,
        operation: &'static str,
    ) -> Result<(), ClientError> {
        if !self.state.can_transition_to(target) {
            return Err(self.invalid(operation));
        }
        tracing::debug!(from = %self.state, to = %target, "transaction state");
        self.state = target;
        if !matches!(
            target,
            TransactionState::AbortableError | TransactionState::FatalError
        ) {
            self.last_error = None;
        }
        Ok(())
    }

    /// A transition caused by a response: an invalid one poisons the manager (Java's sender thread).
    fn transition_or_poison(&mut self, target: TransactionState) {
        if self.transition(target, "handle a response").is_err() {
            let message = format!(
                "invalid transition from {} to {target} while handling a response",
                self.state
            );
            tracing::warn!(%message, "transaction manager poisoned");
            self.state = TransactionState::FatalError;
            self.last_error = Some(ClientError::InvalidTransactionState {
                operation: "handle a response",
                state: message,
            });
        }
    }

    fn ensure_transactional(&self, operation: &'static str) -> Result<(), ClientError> {
        if self.is_transactional() {
            Ok(())
        } else {
            Err(ClientError::InvalidTransactionState {
                operation,
                state: "not transactional (transactional_id is not set)".into(),
            })
        }
    }

    pub(crate) fn transition_to_abortable(&mut self, error: ClientError) {
        if self.state == TransactionState::AbortingTransaction {
            tracing::debug!(%error, "already aborting; abortable error ignored");
            return;
        }
        tracing::info!(%error, "transaction: abortable error");
        self.transition_or_poison(TransactionState::AbortableError);
        if self.state == TransactionState::AbortableError {
            self.last_error = Some(error);
        }
    }

    pub(crate) fn transition_to_fatal(&mut self, error: ClientError) {
        tracing::info!(%error, "producer: fatal error");
        self.state = TransactionState::FatalError;
        self.last_error = Some(error);
    }

    /// After an abortable authorization failure of InitProducerId: back to `Uninitialized`, so
    /// `init_transactions` (or the next send of an idempotent producer) may try again.
    pub(crate) fn transition_to_uninitialized(&mut self) {
        self.transition_or_poison(TransactionState::Uninitialized);
        self.last_error = None;
    }

    /// Applies a coordinator outcome that is an error.
    pub(crate) fn fail_with(&mut self, outcome: CoordinatorOutcome) {
        match outcome {
            CoordinatorOutcome::Abortable(e) => self.transition_to_abortable(e),
            CoordinatorOutcome::AbortableIfPossible(e) => {
                if self.can_bump_epoch() {
                    self.epoch_bump_required = true;
                    self.transition_to_abortable(e);
                } else {
                    self.transition_to_fatal(e);
                }
            }
            CoordinatorOutcome::Fatal(e) => self.transition_to_fatal(e),
            CoordinatorOutcome::Done
            | CoordinatorOutcome::Retry
            | CoordinatorOutcome::FindCoordinator => {}
        }
    }

    /// `init_transactions`: `Uninitialized` -> `Initializing`.
    pub(crate) fn begin_initialize(&mut self) -> Result<(), ClientError> {
        self.ensure_transactional("init_transactions")?;
        self.maybe_fail_with_error()?;
        self.transition(TransactionState::Initializing, "init_transactions")
    }

    /// InitProducerId succeeded: the producer id is at hand. An epoch bump restarts every sequence.
    pub(crate) fn handle_init_producer_id(
        &mut self,
        producer: ProducerIdAndEpoch,
        is_epoch_bump: bool,
    ) {
        tracing::debug!(
            producer_id = producer.producer_id,
            epoch = producer.epoch,
            "producer id set"
        );
        self.producer = producer;
        self.transition_or_poison(TransactionState::Ready);
        if is_epoch_bump {
            self.reset_sequence_numbers();
            self.clear_transaction();
        }
    }

    /// `begin_transaction`: `Ready` -> `InTransaction`.
    pub(crate) fn begin_transaction(&mut self) -> Result<(), ClientError> {
        self.ensure_transactional("begin_transaction")?;
        self.maybe_fail_with_error()?;
        self.transition(TransactionState::InTransaction, "begin_transaction")
    }

    /// `commit_transaction`: `InTransaction` -> `CommittingTransaction`.
    pub(crate) fn begin_commit(&mut self) -> Result<(), ClientError> {
        self.ensure_transactional("commit_transaction")?;
        self.maybe_fail_with_error()?;
        self.transition(
            TransactionState::CommittingTransaction,
            "commit_transaction",
        )
    }

    /// `abort_transaction`: `InTransaction` or `AbortableError` -> `AbortingTransaction`. Partitions not yet
    /// added are forgotten (their batches are dropped by the sender).
    pub(crate) fn begin_abort(&mut self) -> Result<(), ClientError> {
        self.ensure_transactional("abort_transaction")?;
        if self.state != TransactionState::AbortableError {
            self.maybe_fail_with_error()?;
        }
        let skip_end_txn = self.last_error.as_ref().and_then(ClientError::kafka_error)
            == Some(ResponseError::InvalidProducerIdMapping);
        self.transition(TransactionState::AbortingTransaction, "abort_transaction")?;
        self.abort_skips_end_txn = skip_end_txn;
        self.new_partitions.clear();
        Ok(())
    }

    /// `send_offsets_to_transaction` is allowed only inside a transaction.
    pub(crate) fn check_send_offsets(&self) -> Result<(), ClientError> {
        self.ensure_transactional("send_offsets_to_transaction")?;
        self.maybe_fail_with_error()?;
        if self.state != TransactionState::InTransaction {
            return Err(self.invalid("send_offsets_to_transaction"));
        }
        Ok(())
    }

    /// AddOffsetsToTxn succeeded: EndTxn must now be sent.
    pub(crate) fn offsets_added(&mut self) {
        self.transaction_started = true;
    }

    /// EndTxn succeeded (or was not needed): `Ready`, or `Initializing` when an epoch bump follows.
    pub(crate) fn complete_transaction(&mut self) {
        let target = if self.epoch_bump_required {
            TransactionState::Initializing
        } else {
            TransactionState::Ready
        };
        self.transition_or_poison(target);
        self.epoch_bump_required = false;
        self.clear_transaction();
    }

    fn clear_transaction(&mut self) {
        self.abort_skips_end_txn = false;
        self.transaction_started = false;
        self.new_partitions.clear();
        self.pending_partitions.clear();
        self.partitions_in_transaction.clear();
    }

    // ---- partitions of the transaction ----

    /// `send` to `tp`: fails in an error state, outside a transaction (transactional producer), and before
    /// `init_transactions`; remembers a partition new to the transaction.
    pub(crate) fn maybe_add_partition(&mut self, tp: &TopicPartition) -> Result<(), ClientError> {
        self.maybe_fail_with_error()?;
        if !self.is_transactional() {
            return Ok(());
        }
        if !self.producer.is_valid() {
            return Err(ClientError::InvalidTransactionState {
                operation: "send",
                state: "not initialized: call init_transactions first".into(),
            });
        }
        if self.state != TransactionState::InTransaction {
            return Err(ClientError::InvalidTransactionState {
                operation: "send",
                state: format!("{} (call begin_transaction first)", self.state),
            });
        }
        if !self.partitions_in_transaction.contains(tp)
            && !self.pending_partitions.contains(tp)
            && !self.new_partitions.contains(tp)
        {
            tracing::debug!(topic = %tp.0, partition = tp.1, "partition joins the transaction");
            self.new_partitions.insert(tp.clone());
        }
        Ok(())
    }

    /// Partitions for the next AddPartitionsToTxn (all not yet added), with the producer id and epoch;
    /// `None` when nothing waits or one is already under way.
    pub(crate) fn take_partitions_to_add(
        &mut self,
    ) -> Option<(ProducerIdAndEpoch, Vec<TopicPartition>)> {
        if self.new_partitions.is_empty() || !self.pending_partitions.is_empty() {
            return None;
        }
        if self.has_error()
            || !matches!(
                self.state,
                TransactionState::InTransaction | TransactionState::CommittingTransaction
            )
        {
            return None;
        }
        self.pending_partitions.append(&mut self.new_partitions);
        Some((
            self.producer,
            self.pending_partitions.iter().cloned().collect(),
        ))
    }

    /// The AddPartitionsToTxn answer, as Java's `AddPartitionsToTxnHandler`: `results` is every partition's
    /// error code. Returns `Some(backoff_hint)` when the request must be retried (all partitions stay pending);
    /// the hint is true for CONCURRENT_TRANSACTIONS on the first add of a transaction (Kafka retries that after
    /// 20 ms instead of `retry.backoff.ms`).
    pub(crate) fn handle_add_partitions(
        &mut self,
        results: &[(TopicPartition, i16)],
    ) -> AddPartitionsResult {
        let transactional_id = self.transactional_id().to_owned();
        let mut unauthorized = Vec::new();
        let mut other_errors = Vec::new();
        for (tp, code) in results {
            if *code == 0 {
                continue;
            }
            let context = format!("adding {}-{} to the transaction", tp.0, tp.1);
            match ResponseError::try_from_code(*code) {
                Some(ResponseError::ConcurrentTransactions) => {
                    return AddPartitionsResult::Retry {
                        fast: self.partitions_in_transaction.is_empty(),
                    };
                }
                Some(ResponseError::TopicAuthorizationFailed) => unauthorized.push(tp.0.clone()),
                Some(ResponseError::OperationNotAttempted) => {}
                _ => match classify(
                    TxnApi::AddPartitionsToTxn,
                    *code,
                    &context,
                    &transactional_id,
                ) {
                    CoordinatorOutcome::Done => {}
                    CoordinatorOutcome::Retry => return AddPartitionsResult::Retry { fast: false },
                    CoordinatorOutcome::FindCoordinator => {
                        return AddPartitionsResult::FindCoordinator
                    }
                    CoordinatorOutcome::Abortable(e) => other_errors.push(e),
                    outcome => {
                        for tp in results.iter().map(|(tp, _)| tp) {
                            self.pending_partitions.remove(tp);
                        }
                        self.fail_with(outcome);
                        return AddPartitionsResult::Failed;
                    }
                },
            }
        }
        for (tp, _) in results {
            self.pending_partitions.remove(tp);
        }
        if !unauthorized.is_empty() {
            unauthorized.sort();
            unauthorized.dedup();
            self.transition_to_abortable(ClientError::broker(
                format!(
                    "adding topics {} to the transaction",
                    unauthorized.join(", ")
                ),
                ResponseError::TopicAuthorizationFailed.code(),
                None,
            ));
            return AddPartitionsResult::Failed;
        }
        if let Some(first) = other_errors.into_iter().next() {
            self.transition_to_abortable(first);
            return AddPartitionsResult::Failed;
        }
        self.partitions_in_transaction
            .extend(results.iter().map(|(tp, _)| tp.clone()));
        self.transaction_started = true;
        AddPartitionsResult::Added
    }

    /// An AddPartitionsToTxn that failed before an answer (a fatal outcome applied by the caller): the pending
    /// partitions are dropped.
    pub(crate) fn abandon_pending_partitions(&mut self) {
        self.pending_partitions.clear();
    }

    /// Whether partitions wait to be added (or are being added).
    #[cfg(test)]
    pub(crate) fn has_partitions_to_add(&self) -> bool {
        !self.new_partitions.is_empty() || !self.pending_partitions.is_empty()
    }

    /// Java's `isSendToPartitionAllowed`: a transactional producer sends only to partitions the coordinator
    /// added.
    pub(crate) fn is_send_to_partition_allowed(&self, tp: &TopicPartition) -> bool {
        !self.has_fatal_error()
            && (!self.is_transactional() || self.partitions_in_transaction.contains(tp))
    }

    // ---- sequence numbers ----

    fn entry(&mut self, tp: &TopicPartition) -> &mut PartitionEntry {
        self.partitions
            .entry(tp.clone())
            .or_insert_with(PartitionEntry::new)
    }

    fn has_in_flight(&self, tp: &TopicPartition) -> bool {
        self.partitions
            .get(tp)
            .is_some_and(|e| !e.in_flight.is_empty())
    }

    fn has_stale_producer(&self, tp: &TopicPartition) -> bool {
        self.partitions
            .get(tp)
            .map_or(ProducerIdAndEpoch::NONE, |e| e.producer)
            != self.producer
    }

    fn last_acked_sequence(&self, tp: &TopicPartition) -> i32 {
        self.partitions
            .get(tp)
            .map_or(-1, |e| e.last_acked_sequence)
    }

    fn next_sequence(&self, tp: &TopicPartition) -> i32 {
        self.partitions.get(tp).map_or(0, |e| e.next_sequence)
    }

    fn is_next_sequence(&self, tp: &TopicPartition, sequence: i32) -> bool {
        i64::from(sequence) - i64::from(self.last_acked_sequence(tp)) == 1
    }

    /// The batch's current producer fields (its sequence may have been rewritten since it was drained).
    pub(crate) fn in_flight_batch(
        &self,
        tp: &TopicPartition,
        id: BatchId,
    ) -> Option<BatchSequence> {
        self.partitions
            .get(tp)?
            .in_flight
            .iter()
            .find(|b| b.id == id)
            .copied()
    }

    fn remove_in_flight(&mut self, tp: &TopicPartition, id: BatchId) -> Option<BatchSequence> {
        let entry = self.partitions.get_mut(tp)?;
        let index = entry.in_flight.iter().position(|b| b.id == id)?;
        Some(entry.in_flight.remove(index))
    }

    /// Java's `shouldStopDrainBatchesForPartition`: whether the first queued batch of `tp` must wait.
    /// `first` is that batch's id when it was drained before (a retry).
    pub(crate) fn should_stop_drain(&self, tp: &TopicPartition, first: Option<BatchId>) -> bool {
        if !self.is_send_to_partition_allowed(tp) || !self.producer.is_valid() {
            return true;
        }
        let Some(first) = first else {
            // A new batch waits while batches of an older epoch are in flight (they could be written after a
            // new-epoch batch at sequence 0), and while the partition's sequences are unresolved.
            return (self.has_in_flight(tp) && self.has_stale_producer(tp))
                || self.unresolved.contains_key(tp);
        };
        // A retry goes out only when it is the lowest in-flight sequence: retries are resent one at a time, in
        // order.
        let Some(entry) = self.partitions.get(tp) else {
            return false;
        };
        match (entry.in_flight.first(), self.in_flight_batch(tp, first)) {
            (Some(lowest), Some(batch)) => lowest.id != batch.id,
            _ => false,
        }
    }

    /// A new batch is drained: it gets the next sequence of its partition (restarting from 0 under the current
    /// producer id/epoch once the partition's older-epoch batches are done) and is in flight from now on.
    pub(crate) fn assign_sequence(
        &mut self,
        tp: &TopicPartition,
        record_count: i32,
    ) -> BatchSequence {
        let producer = self.producer;
        let fatal = self.has_fatal_error();
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        let entry = self.entry(tp);
        if !fatal && entry.producer != producer && entry.in_flight.is_empty() {
            entry.start_sequences_at_beginning(producer);
        }
        let batch = BatchSequence {
            id,
            producer,
            base_sequence: entry.next_sequence,
            record_count: record_count.max(1),
            sequence_reset: false,
        };
        entry.next_sequence = increment_sequence(entry.next_sequence, batch.record_count);
        entry.in_flight.push(batch);
        entry.sort();
        batch
    }

    /// The broker acknowledged the batch (`base_offset` -1 when unknown: acks=0 or DUPLICATE_SEQUENCE_NUMBER).
    pub(crate) fn handle_completed_batch(
        &mut self,
        tp: &TopicPartition,
        id: BatchId,
        base_offset: i64,
    ) {
        let Some(batch) = self.remove_in_flight(tp, id) else {
            return;
        };
        let entry = self.entry(tp);
        let last_sequence = batch.last_sequence();
        if last_sequence > entry.last_acked_sequence {
            entry.last_acked_sequence = last_sequence;
        }
        if base_offset >= 0 {
            let last_offset = base_offset + i64::from(batch.record_count) - 1;
            entry.last_acked_offset = entry.last_acked_offset.max(last_offset);
        }
    }

    fn request_epoch_bump_for_partition(&mut self, tp: &TopicPartition) {
        self.epoch_bump_required = true;
        self.partitions_to_rewrite.insert(tp.clone());
    }

    /// Java's `TransactionManager.canRetry` for a produce error on an in-flight batch (the sender checks
    /// attempts and the delivery timeout first).
    pub(crate) fn can_retry(
        &mut self,
        tp: &TopicPartition,
        id: BatchId,
        error: &ClientError,
        log_start_offset: i64,
    ) -> bool {
        let Some(batch) = self.in_flight_batch(tp, id) else {
            return error.is_retriable();
        };
        match error.kafka_error() {
            Some(ResponseError::UnknownProducerId) => {
                if log_start_offset == -1 || batch.sequence_reset {
                    return true;
                }
                let last_acked_offset = self.partitions.get(tp).map_or(-1, |e| e.last_acked_offset);
                if last_acked_offset < log_start_offset {
                    // Retention removed the producer's records: not data loss. Restart the sequences (a
                    // transactional producer keeps its epoch, an idempotent one bumps it) and retry.
                    if self.is_transactional() {
                        let producer = self.producer;
                        self.entry(tp).start_sequences_at_beginning(producer);
                    } else {
                        self.request_epoch_bump_for_partition(tp);
                    }
                    return true;
                }
                if !self.is_transactional() {
                    self.request_epoch_bump_for_partition(tp);
                    return true;
                }
                false
            }
            Some(ResponseError::OutOfOrderSequenceNumber) => {
                let unresolved = self.unresolved.get(tp).copied();
                if unresolved.is_none()
                    && (batch.sequence_reset || !self.is_next_sequence(tp, batch.base_sequence))
                {
                    // Not the next batch: an earlier one failed, this one is retried after it.
                    return true;
                }
                if !self.is_transactional() {
                    if unresolved.is_none() || unresolved == Some(batch.base_sequence) {
                        // A real gap: bump the epoch and restart the partition's sequences.
                        self.request_epoch_bump_for_partition(tp);
                    }
                    return true;
                }
                false
            }
            _ => error.is_retriable(),
        }
    }

    /// Java's `maybeTransitionToErrorState` for a failed batch.
    fn maybe_transition_to_error_state(&mut self, error: &ClientError) {
        let fatal = matches!(
            error.kafka_error(),
            Some(
                ResponseError::ClusterAuthorizationFailed
                    | ResponseError::TransactionalIdAuthorizationFailed
                    | ResponseError::ProducerFenced
                    | ResponseError::UnsupportedVersion
            )
        ) || matches!(error, ClientError::UnsupportedApi { .. });
        if fatal {
            let error = match error.kafka_error() {
                Some(ResponseError::ProducerFenced) if self.is_transactional() => {
                    ClientError::ProducerFenced {
                        transactional_id: self.transactional_id().to_owned(),
                    }
                }
                _ => error.clone(),
            };
            self.transition_to_fatal(error);
        } else if self.is_transactional() {
            if self.can_bump_epoch() && !self.is_completing() {
                self.epoch_bump_required = true;
            }
            self.transition_to_abortable(error.clone());
        }
    }

    /// A batch failed for good (Java's `handleFailedBatch`); `adjust_sequences` when the broker certainly did
    /// not write it and it had retries left.
    pub(crate) fn handle_failed_batch(
        &mut self,
        tp: &TopicPartition,
        id: Option<BatchId>,
        error: &ClientError,
        adjust_sequences: bool,
    ) {
        self.maybe_transition_to_error_state(error);
        let batch = id.and_then(|id| self.remove_in_flight(tp, id));
        if self.has_fatal_error() {
            return;
        }
        let Some(batch) = batch else {
            return;
        };
        match error.kafka_error() {
            // UNKNOWN_PRODUCER_ID is an out-of-order-sequence error in Java's exception hierarchy.
            Some(ResponseError::OutOfOrderSequenceNumber | ResponseError::UnknownProducerId)
                if !self.is_transactional() =>
            {
                self.request_epoch_bump_for_partition(tp);
            }
            Some(ResponseError::UnknownProducerId) => {
                // The broker has no state for the producer and takes sequence 0 next.
                self.partitions.remove(tp);
                self.unresolved.remove(tp);
            }
            _ if adjust_sequences => {
                if self.is_transactional() {
                    if let Some(entry) = self.partitions.get_mut(tp) {
                        entry.adjust_sequences_due_to_failed_batch(&batch);
                    }
                } else {
                    self.request_epoch_bump_for_partition(tp);
                }
            }
            _ => {}
        }
    }

    /// A batch that had been sent was given up on (delivery timeout or out of retries after an uncertain
    /// error): the broker may hold its sequences or not.
    pub(crate) fn mark_sequence_unresolved(&mut self, tp: &TopicPartition, id: BatchId) {
        let Some(batch) = self.in_flight_batch(tp, id) else {
            return;
        };
        let next = increment_sequence(batch.last_sequence(), 1);
        let entry = self.unresolved.entry(tp.clone()).or_insert(next);
        *entry = (*entry).max(next);
    }

    /// Java's `maybeResolveSequences`: once an unresolved partition has nothing in flight, either later batches
    /// proved the lost one was written (acked up to the next sequence) or the epoch is bumped (idempotent) /
    /// the transaction must be aborted (transactional).
    pub(crate) fn maybe_resolve_sequences(&mut self) {
        let partitions: Vec<TopicPartition> = self.unresolved.keys().cloned().collect();
        for tp in partitions {
            if self.has_in_flight(&tp) {
                continue;
            }
            self.unresolved.remove(&tp);
            if self.is_next_sequence(&tp, self.next_sequence(&tp)) {
                continue;
            }
            let unacked = "the client got no acknowledgement for records it can no longer retry";
            if self.is_transactional() {
                if self.can_bump_epoch() {
                    self.epoch_bump_required = true;
                    self.transition_to_abortable(ClientError::Config(format!(
                        "{unacked}; abort the transaction and go on"
                    )));
                } else {
                    self.transition_to_fatal(ClientError::Config(format!(
                        "{unacked}; the producer cannot go on safely"
                    )));
                }
            } else {
                self.request_epoch_bump_for_partition(&tp);
            }
        }
    }

    fn reset_sequence_numbers(&mut self) {
        self.partitions.clear();
        self.unresolved.clear();
        self.partitions_to_rewrite.clear();
    }

    /// An idempotent producer's InitProducerId is given up (nothing waits for it any more): back to
    /// `Uninitialized`, so the next batch asks again.
    pub(crate) fn abandon_idempotent_init(&mut self) {
        if !self.is_transactional() && self.state == TransactionState::Initializing {
            self.state = TransactionState::Uninitialized;
        }
    }

    /// Java's `bumpIdempotentEpochAndResetIdIfNeeded`, for an idempotent producer: a pending epoch bump is
    /// done locally (a new producer id once the epoch is exhausted); returns true when InitProducerId must be
    /// sent (the state is then `Initializing`).
    pub(crate) fn bump_idempotent_epoch_and_reset_id_if_needed(&mut self) -> bool {
        if self.is_transactional() || self.has_fatal_error() {
            return false;
        }
        if self.epoch_bump_required {
            if self.producer.epoch == i16::MAX {
                tracing::debug!("producer epoch exhausted: a new producer id is needed");
                self.producer = ProducerIdAndEpoch::NONE;
                self.transition_or_poison(TransactionState::Uninitialized);
            } else {
                self.producer.epoch += 1;
                tracing::debug!(
                    producer_id = self.producer.producer_id,
                    epoch = self.producer.epoch,
                    "producer epoch bumped"
                );
            }
            let producer = self.producer;
            for tp in std::mem::take(&mut self.partitions_to_rewrite) {
                if let Some(entry) = self.partitions.get_mut(&tp) {
                    entry.start_sequences_at_beginning(producer);
                }
                self.unresolved.remove(&tp);
            }
            self.epoch_bump_required = false;
        }
        if self.state != TransactionState::Initializing && !self.producer.is_valid() {
            self.transition_or_poison(TransactionState::Initializing);
            return self.state == TransactionState::Initializing;
        }
        false
    }
}

/// What [`TransactionManager::handle_add_partitions`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddPartitionsResult {
    /// The partitions are in the transaction.
    Added,
    /// Retry the same request after a backoff (`fast`: 20 ms).
    Retry {
        /// CONCURRENT_TRANSACTIONS on the first add of a transaction.
        fast: bool,
    },
    /// Look up the coordinator again and retry.
    FindCoordinator,
    /// The manager moved to an error state.
    Failed,
}

#[cfg(test)]
mod tests;
