//! The transaction coordinator as a pure state machine over one `__transaction_state` partition (Kafka's
//! `TransactionCoordinator` + `TransactionStateManager`, transaction version 1: KIP-98, with KIP-360 epoch bumps
//! and KIP-890 part 1 verification).
//!
//! Every request and every timer firing returns a [`TxnResult`]: the records to append to the partition, the
//! response, and the transaction markers to write ([`MarkerRequest`]). State changes only by replaying records
//! ([`TxnCoordinatorShard::replay`]), which is also how a partition is loaded. No I/O, no clock: time is an
//! argument, and producer ids come from a closure (the broker's producer id manager).
//!
//! The shell's contract:
//! - append a result's `records` in order, and then call [`TxnCoordinatorShard::replay`] for each, before the next
//!   handler call on this shard and before it sends the response; if the append fails, answer the request with
//!   the append's error, drop the shard and load it again from the log;
//! - write the markers of every [`MarkerRequest`] (WriteTxnMarkers to each partition's leader), and once all of
//!   them are written call [`TxnCoordinatorShard::markers_written`], whose `Complete*` record it appends the same
//!   way;
//! - after loading, call [`TxnCoordinatorShard::finish_loading`] and send the markers it returns (transactions
//!   the previous coordinator left in `PrepareCommit`/`PrepareAbort`);
//! - call [`TxnCoordinatorShard::poll`] at [`TxnCoordinatorShard::next_deadline_ms`] (timed-out transactions are
//!   aborted, expired transactional ids are tombstoned).
//!
//! A transaction in `PrepareCommit`/`PrepareAbort` always has markers in flight (sent by the handler that wrote
//! it, or resent by `finish_loading`): that is Kafka's pending `Complete*` transition, and requests for it get
//! `CONCURRENT_TRANSACTIONS`.

use std::collections::BTreeMap;

use sluice_protocol::ErrorCode;

use crate::CONSUMER_OFFSETS_TOPIC;

pub mod metadata;
pub mod record;

#[cfg(test)]
mod tests;

pub use metadata::{TransactionState, TransitionError, TxnMetadata};
pub use record::{TxnLogRecord, TxnLogValue, TxnRecordError};

/// The transaction version this coordinator runs at (Kafka's finalized `transaction.version`): 1, flexible
/// records and no epoch bump per transaction. Kafka stamps it as the `ClientTransactionVersion` of the aborts the
/// coordinator starts itself (timeouts, fencing); client requests below EndTxn v5 / AddPartitionsToTxn v5 are
/// stamped 0.
pub const TRANSACTION_VERSION_LEVEL: i16 = 1;

/// The `ClientTransactionVersion` of a client that sends EndTxn below v5 and AddPartitionsToTxn below v5.
const CLIENT_TRANSACTION_VERSION: i16 = 0;

/// The outcomes of a transaction coordinator operation; Kafka error codes appear only in [`TxnError::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnError {
    /// Success.
    None,
    /// Kafka's `ConcurrentTransactions`: markers are being written (or a fence is under way); retry.
    ConcurrentTransactions,
    /// Kafka's `CoordinatorLoadInProgress` (also: no producer id block available yet).
    CoordinatorLoadInProgress,
    /// Kafka's `InvalidProducerEpoch` (only through [`TxnError::for_pre_kip588_client`]).
    InvalidProducerEpoch,
    /// Kafka's `ProducerFenced`: a newer producer with the same transactional id exists.
    ProducerFenced,
    /// Kafka's `InvalidProducerIdMapping`: the producer id is not the transactional id's.
    InvalidProducerIdMapping,
    /// Kafka's `InvalidTxnState`: the request does not fit the transaction's state.
    InvalidTxnState,
    /// Kafka's `InvalidTransactionTimeout`: not in `1..=transaction.max.timeout.ms`.
    InvalidTransactionTimeout,
    /// Kafka's `TransactionalIdNotFound`.
    TransactionalIdNotFound,
    /// Kafka's `NotCoordinator`.
    NotCoordinator,
    /// Kafka's `CoordinatorNotAvailable`.
    CoordinatorNotAvailable,
    /// Kafka's `UnknownProducerId`.
    UnknownProducerId,
    /// Kafka's `InvalidRequest` (an empty transactional id).
    InvalidRequest,
    /// Kafka's `TransactionAbortable`: KIP-890 verification found the partition outside the transaction.
    TransactionAbortable,
    /// Kafka's `UnknownServerError`: a transition Kafka's state table forbids (a coordinator bug).
    UnknownServerError,
}

impl TxnError {
    /// The Kafka error code.
    pub fn code(self) -> i16 {
        match self {
            TxnError::None => 0,
            TxnError::ConcurrentTransactions => ErrorCode::ConcurrentTransactions.code(),
            TxnError::CoordinatorLoadInProgress => ErrorCode::CoordinatorLoadInProgress.code(),
            TxnError::InvalidProducerEpoch => ErrorCode::InvalidProducerEpoch.code(),
            TxnError::ProducerFenced => ErrorCode::ProducerFenced.code(),
            TxnError::InvalidProducerIdMapping => ErrorCode::InvalidProducerIdMapping.code(),
            TxnError::InvalidTxnState => ErrorCode::InvalidTxnState.code(),
            TxnError::InvalidTransactionTimeout => ErrorCode::InvalidTransactionTimeout.code(),
            TxnError::TransactionalIdNotFound => ErrorCode::TransactionalIdNotFound.code(),
            TxnError::NotCoordinator => ErrorCode::NotCoordinator.code(),
            TxnError::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable.code(),
            TxnError::UnknownProducerId => ErrorCode::UnknownProducerId.code(),
            TxnError::InvalidRequest => ErrorCode::InvalidRequest.code(),
            TxnError::TransactionAbortable => ErrorCode::TransactionAbortable.code(),
            TxnError::UnknownServerError => ErrorCode::UnknownServerError.code(),
        }
    }

    /// The error as a client from before KIP-588 understands it: `PRODUCER_FENCED` becomes
    /// `INVALID_PRODUCER_EPOCH`. Kafka does this for InitProducerId below v4 and for EndTxn, AddPartitionsToTxn
    /// and AddOffsetsToTxn below v2.
    pub fn for_pre_kip588_client(self) -> TxnError {
        match self {
            TxnError::ProducerFenced => TxnError::InvalidProducerEpoch,
            other => other,
        }
    }
}

/// Broker settings the transaction coordinator follows (Kafka's names and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnCoordinatorConfig {
    /// `transaction.max.timeout.ms` (15 min).
    pub transaction_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms` (7 days).
    pub transactional_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms` (10 s).
    pub abort_timed_out_check_interval_ms: i64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms` (1 h).
    pub remove_expired_check_interval_ms: i64,
    /// `offsets.topic.num.partitions` (50), to place AddOffsetsToTxn's group.
    pub offsets_topic_num_partitions: i32,
}

impl Default for TxnCoordinatorConfig {
    fn default() -> Self {
        TxnCoordinatorConfig {
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            abort_timed_out_check_interval_ms: 10_000,
            remove_expired_check_interval_ms: 3_600_000,
            offsets_topic_num_partitions: 50,
        }
    }
}

/// Transaction markers to write: WriteTxnMarkers for one transaction, to the leaders of its partitions.
///
/// Once every partition's marker is written (at once if `partitions` is empty), the shell calls
/// [`TxnCoordinatorShard::markers_written`] with this request's transactional id, producer id and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerRequest {
    /// The transaction's id.
    pub transactional_id: String,
    /// The producer id the markers are written for.
    pub producer_id: i64,
    /// The producer epoch of the markers (bumped when the coordinator fenced the producer).
    pub producer_epoch: i16,
    /// Commit (true) or abort (false) markers.
    pub commit: bool,
    /// The coordinator epoch: the leader epoch of this shard's `__transaction_state` partition.
    pub coordinator_epoch: i32,
    /// The partitions to write a marker to, in order.
    pub partitions: Vec<(String, i32)>,
}

/// What one request or timer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult<T> {
    /// Records to append to the shard's `__transaction_state` partition, in order, and then replay, before the
    /// response is sent.
    pub records: Vec<TxnLogRecord>,
    /// The response to the request.
    pub response: T,
    /// Transaction markers to write once the records are appended.
    pub markers: Vec<MarkerRequest>,
}

impl<T> TxnResult<T> {
    fn only(response: T) -> Self {
        TxnResult {
            records: Vec::new(),
            response,
            markers: Vec::new(),
        }
    }
}

/// The transactional ids of one `__transaction_state` partition.
#[derive(Debug, Clone)]
pub struct TxnCoordinatorShard {
    config: TxnCoordinatorConfig,
    coordinator_epoch: i32,
    txns: BTreeMap<String, TxnMetadata>,
    /// When `poll` next looks for timed-out transactions; `None` until loading finished.
    next_abort_check_ms: Option<i64>,
    /// When `poll` next looks for expired transactional ids; `None` until loading finished.
    next_expiration_check_ms: Option<i64>,
}

impl TxnCoordinatorShard {
    /// An empty shard for a partition whose leader epoch is `coordinator_epoch`.
    pub fn new(config: TxnCoordinatorConfig, coordinator_epoch: i32) -> Self {
        TxnCoordinatorShard {
            config,
            coordinator_epoch,
            txns: BTreeMap::new(),
            next_abort_check_ms: None,
            next_expiration_check_ms: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &TxnCoordinatorConfig {
        &self.config
    }

    /// The leader epoch of this shard's partition, stamped on its markers.
    pub fn coordinator_epoch(&self) -> i32 {
        self.coordinator_epoch
    }

    /// Every transactional id of this shard, in order.
    pub fn transactional_ids(&self) -> impl Iterator<Item = &String> {
        self.txns.keys()
    }

    // ------------------------------------------------------------------------------------------------------
    // Replay and loading
    // ------------------------------------------------------------------------------------------------------

    /// Applies one record of the partition: the only way the shard's state changes, both when loading and on
    /// the write path. A value replaces the id's metadata; a tombstone removes the id.
    pub fn replay(&mut self, record: &TxnLogRecord) {
        match &record.value {
            Some(v) => {
                self.txns.insert(
                    record.transactional_id.clone(),
                    TxnMetadata::from_value(&record.transactional_id, v),
                );
            }
            None => {
                self.txns.remove(&record.transactional_id);
            }
        }
    }

    /// Called once a load finished replaying: returns the markers of the transactions found in
    /// `PrepareCommit`/`PrepareAbort` (Kafka resends them at load), and schedules the timeout and expiration
    /// checks one interval from now.
    pub fn finish_loading(&mut self, now_ms: i64) -> Vec<MarkerRequest> {
        self.next_abort_check_ms =
            Some(now_ms.saturating_add(self.config.abort_timed_out_check_interval_ms));
        self.next_expiration_check_ms =
            Some(now_ms.saturating_add(self.config.remove_expired_check_interval_ms));
        self.txns
            .values()
            .filter(|m| m.state.is_prepare())
            .map(|m| self.markers_for(m, m.state == TransactionState::PrepareCommit))
            .collect()
    }

    fn markers_for(&self, m: &TxnMetadata, commit: bool) -> MarkerRequest {
        MarkerRequest {
            transactional_id: m.transactional_id.clone(),
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            commit,
            coordinator_epoch: self.coordinator_epoch,
            partitions: m.partitions.iter().cloned().collect(),
        }
    }

    // ------------------------------------------------------------------------------------------------------
    // InitProducerId
    // ------------------------------------------------------------------------------------------------------

    /// InitProducerId with a transactional id (the shell answers one without an id from the producer id manager,
    /// and turns a half-given KIP-360 producer id/epoch into INVALID_REQUEST).
    ///
    /// A new id gets a new producer id at epoch 0. An id in Empty or Complete* gets its epoch bumped, which fences
    /// the previous producer; when the epoch is exhausted, a new producer id. An Ongoing transaction is aborted
    /// first with a bumped epoch (a PrepareAbort record and its markers) and the client gets
    /// CONCURRENT_TRANSACTIONS, retries, and gets its epoch once the abort completed. `expected` (KIP-360,
    /// InitProducerId v3+) is accepted when it is the current producer id and epoch, or the epoch before the last
    /// bump (a retry), else PRODUCER_FENCED. `new_producer_id` returns `None` when no producer id block is
    /// available (COORDINATOR_LOAD_IN_PROGRESS, as Kafka's producer id manager answers).
    pub fn init_producer_id(
        &mut self,
        transactional_id: &str,
        transaction_timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now_ms: i64,
        new_producer_id: &mut dyn FnMut() -> Option<i64>,
    ) -> TxnResult<Result<(i64, i16), TxnError>> {
        if transactional_id.is_empty() {
            return TxnResult::only(Err(TxnError::InvalidRequest));
        }
        if transaction_timeout_ms <= 0
            || transaction_timeout_ms > self.config.transaction_max_timeout_ms
        {
            return TxnResult::only(Err(TxnError::InvalidTransactionTimeout));
        }
        let created;
        let m = match self.txns.get(transactional_id) {
            Some(m) => m,
            None => match new_producer_id() {
                Some(pid) => {
                    created =
                        TxnMetadata::new(transactional_id, pid, transaction_timeout_ms, now_ms);
                    &created
                }
                None => return TxnResult::only(Err(TxnError::CoordinatorLoadInProgress)),
            },
        };

        // KIP-360: the producer id given must be this id's (or no epoch was ever handed out, or it is a retry of a
        // producer id rotation); the epoch is checked when bumping.
        if let Some((pid, epoch)) = expected {
            let valid = m.producer_epoch == metadata::NO_PRODUCER_EPOCH
                || pid == m.producer_id
                || (pid == m.prev_producer_id && metadata::is_epoch_exhausted(epoch));
            if !valid {
                return TxnResult::only(Err(TxnError::ProducerFenced));
            }
        }

        let value = match m.state {
            TransactionState::PrepareCommit | TransactionState::PrepareAbort => {
                return TxnResult::only(Err(TxnError::ConcurrentTransactions));
            }
            TransactionState::Ongoing => {
                // Abort it with a bumped epoch; the client retries after CONCURRENT_TRANSACTIONS and then gets
                // an epoch bumped once more (a new producer id if that exhausts the epochs).
                let result = match m.prepare_fenced_abort(TRANSACTION_VERSION_LEVEL, now_ms) {
                    Ok(v) => v,
                    Err(_) => return TxnResult::only(Err(TxnError::UnknownServerError)),
                };
                return self.write_prepare(
                    transactional_id,
                    result,
                    false,
                    Err(TxnError::ConcurrentTransactions),
                );
            }
            TransactionState::Empty
            | TransactionState::CompleteCommit
            | TransactionState::CompleteAbort => {
                if m.is_producer_epoch_exhausted()
                    && expected.is_none_or(|(_, epoch)| epoch == m.producer_epoch)
                {
                    let Some(pid) = new_producer_id() else {
                        return TxnResult::only(Err(TxnError::CoordinatorLoadInProgress));
                    };
                    m.prepare_producer_id_rotation(
                        pid,
                        transaction_timeout_ms,
                        now_ms,
                        expected.is_some(),
                    )
                    .map(Some)
                } else {
                    m.prepare_increment_producer_epoch(
                        transaction_timeout_ms,
                        expected.map(|(_, epoch)| epoch),
                        now_ms,
                    )
                }
            }
            TransactionState::Dead | TransactionState::PrepareEpochFence => {
                return TxnResult::only(Err(TxnError::UnknownServerError));
            }
        };
        match value {
            Ok(Some(v)) => {
                let response = Ok((v.producer_id, v.producer_epoch));
                TxnResult {
                    records: vec![TxnLogRecord {
                        transactional_id: transactional_id.to_string(),
                        value: Some(v),
                    }],
                    response,
                    markers: Vec::new(),
                }
            }
            Ok(None) => TxnResult::only(Err(TxnError::ProducerFenced)),
            Err(_) => TxnResult::only(Err(TxnError::UnknownServerError)),
        }
    }

    /// A Prepare* record and its markers.
    fn write_prepare<T>(
        &self,
        transactional_id: &str,
        value: TxnLogValue,
        commit: bool,
        response: T,
    ) -> TxnResult<T> {
        let marker = MarkerRequest {
            transactional_id: transactional_id.to_string(),
            producer_id: value.producer_id,
            producer_epoch: value.producer_epoch,
            commit,
            coordinator_epoch: self.coordinator_epoch,
            partitions: value.partitions.iter().cloned().collect(),
        };
        TxnResult {
            records: vec![TxnLogRecord {
                transactional_id: transactional_id.to_string(),
                value: Some(value),
            }],
            response,
            markers: vec![marker],
        }
    }

    // ------------------------------------------------------------------------------------------------------
    // AddPartitionsToTxn, AddOffsetsToTxn, KIP-890 verification
    // ------------------------------------------------------------------------------------------------------

    /// The checks AddPartitionsToTxn and EndTxn share: the id exists and the producer id is its own.
    fn owned(&self, transactional_id: &str, producer_id: i64) -> Result<&TxnMetadata, TxnError> {
        if transactional_id.is_empty() {
            return Err(TxnError::InvalidRequest);
        }
        match self.txns.get(transactional_id) {
            Some(m) if m.state != TransactionState::Dead && m.producer_id == producer_id => Ok(m),
            _ => Err(TxnError::InvalidProducerIdMapping),
        }
    }

    /// AddPartitionsToTxn v0-v3 (and v4 without VerifyOnly): adds partitions to the transaction, which becomes
    /// Ongoing (starting now if it was Empty or Complete*). Partitions all already in an Ongoing transaction write
    /// nothing. Another producer id: INVALID_PRODUCER_ID_MAPPING; another epoch: PRODUCER_FENCED; markers being
    /// written: CONCURRENT_TRANSACTIONS.
    pub fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> TxnResult<TxnError> {
        let m = match self.owned(transactional_id, producer_id) {
            Ok(m) => m,
            Err(e) => return TxnResult::only(e),
        };
        if m.producer_epoch != producer_epoch {
            return TxnResult::only(TxnError::ProducerFenced);
        }
        if m.state.is_prepare() {
            return TxnResult::only(TxnError::ConcurrentTransactions);
        }
        if m.state == TransactionState::Ongoing
            && partitions.iter().all(|p| m.partitions.contains(p))
        {
            return TxnResult::only(TxnError::None);
        }
        match m.prepare_add_partitions(partitions, CLIENT_TRANSACTION_VERSION, now_ms) {
            Ok(v) => TxnResult {
                records: vec![TxnLogRecord {
                    transactional_id: transactional_id.to_string(),
                    value: Some(v),
                }],
                response: TxnError::None,
                markers: Vec::new(),
            },
            Err(_) => TxnResult::only(TxnError::UnknownServerError),
        }
    }

    /// KIP-890 part 1 (AddPartitionsToTxn v4 with VerifyOnly, sent by partition leaders before a transactional
    /// produce): whether each partition is in the transaction (NONE) or not (TRANSACTION_ABORTABLE). Writes
    /// nothing. An unknown id or another producer id answers INVALID_PRODUCER_ID_MAPPING for every partition,
    /// another epoch PRODUCER_FENCED, markers being written CONCURRENT_TRANSACTIONS.
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<((String, i32), TxnError)> {
        let all = |e: TxnError| partitions.iter().map(|p| (p.clone(), e)).collect();
        let m = match self.owned(transactional_id, producer_id) {
            Ok(m) => m,
            Err(e) => return all(e),
        };
        if m.producer_epoch != producer_epoch {
            return all(TxnError::ProducerFenced);
        }
        if m.state.is_prepare() {
            return all(TxnError::ConcurrentTransactions);
        }
        partitions
            .iter()
            .map(|p| {
                let e = if m.partitions.contains(p) {
                    TxnError::None
                } else {
                    TxnError::TransactionAbortable
                };
                (p.clone(), e)
            })
            .collect()
    }

    /// AddOffsetsToTxn: adds the group's `__consumer_offsets` partition to the transaction, as
    /// [`TxnCoordinatorShard::add_partitions`] does.
    pub fn add_offsets(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
        now_ms: i64,
    ) -> TxnResult<TxnError> {
        let partition = crate::partition_for(group_id, self.config.offsets_topic_num_partitions);
        self.add_partitions(
            transactional_id,
            producer_id,
            producer_epoch,
            &[(CONSUMER_OFFSETS_TOPIC.to_string(), partition)],
            now_ms,
        )
    }

    // ------------------------------------------------------------------------------------------------------
    // EndTxn and markers
    // ------------------------------------------------------------------------------------------------------

    /// EndTxn below v5: an Ongoing transaction writes PrepareCommit or PrepareAbort and its markers to every
    /// partition. A retry after the transaction completed with the same result answers NONE, with the other
    /// result INVALID_TXN_STATE; while markers are being written, CONCURRENT_TRANSACTIONS; Empty,
    /// INVALID_TXN_STATE. Another producer id: INVALID_PRODUCER_ID_MAPPING; another epoch: PRODUCER_FENCED.
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> TxnResult<TxnError> {
        let m = match self.owned(transactional_id, producer_id) {
            Ok(m) => m,
            Err(e) => return TxnResult::only(e),
        };
        // Transaction version 1: the client never bumps its epoch on its own, so it must be the current one.
        if producer_epoch != m.producer_epoch {
            return TxnResult::only(TxnError::ProducerFenced);
        }
        let response = match (m.state, commit) {
            (TransactionState::Ongoing, _) => {
                return match m.prepare_abort_or_commit(commit, CLIENT_TRANSACTION_VERSION, now_ms) {
                    Ok(v) => self.write_prepare(transactional_id, v, commit, TxnError::None),
                    Err(_) => TxnResult::only(TxnError::UnknownServerError),
                };
            }
            // Markers are in flight: Kafka's pending Complete* transition answers before the state does.
            (TransactionState::PrepareCommit | TransactionState::PrepareAbort, _) => {
                TxnError::ConcurrentTransactions
            }
            (TransactionState::CompleteCommit, true) | (TransactionState::CompleteAbort, false) => {
                TxnError::None
            }
            (TransactionState::CompleteCommit, false)
            | (TransactionState::CompleteAbort, true)
            | (TransactionState::Empty, _) => TxnError::InvalidTxnState,
            (TransactionState::Dead | TransactionState::PrepareEpochFence, _) => {
                TxnError::UnknownServerError
            }
        };
        TxnResult::only(response)
    }

    /// Every marker of a [`MarkerRequest`] is written: the transaction's CompleteCommit or CompleteAbort record
    /// (its partitions cleared). Nothing when the transaction is no longer the one the markers were for (a
    /// stale call after a reload).
    pub fn markers_written(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        now_ms: i64,
    ) -> TxnResult<()> {
        let Some(m) = self.txns.get(transactional_id) else {
            return TxnResult::only(());
        };
        if !m.state.is_prepare()
            || m.producer_id != producer_id
            || m.producer_epoch != producer_epoch
        {
            tracing::debug!(
                transactional_id,
                producer_id,
                producer_epoch,
                state = %m.state,
                "markers written for a transaction that is no longer completing"
            );
            return TxnResult::only(());
        }
        match m.prepare_complete(now_ms) {
            Ok(v) => TxnResult {
                records: vec![TxnLogRecord {
                    transactional_id: transactional_id.to_string(),
                    value: Some(v),
                }],
                response: (),
                markers: Vec::new(),
            },
            Err(_) => TxnResult::only(()),
        }
    }

    // ------------------------------------------------------------------------------------------------------
    // Timers
    // ------------------------------------------------------------------------------------------------------

    /// The earliest time [`TxnCoordinatorShard::poll`] has something to check; `None` before
    /// [`TxnCoordinatorShard::finish_loading`].
    pub fn next_deadline_ms(&self) -> Option<i64> {
        match (self.next_abort_check_ms, self.next_expiration_check_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the checks that are due at `now_ms`, each every its interval (Kafka's scheduled tasks):
    /// - `abortTimedOutTransactions`: every Ongoing transaction that started more than its timeout ago is aborted
    ///   with a bumped epoch (PrepareAbort and its markers), which fences its producer;
    /// - `removeExpiredTransactionalIds`: every id in Empty or Complete* not updated for
    ///   `transactional.id.expiration.ms` gets a tombstone.
    ///
    /// `new_producer_id` is not needed at transaction version 1 (a TV2 abort may rotate the producer id).
    pub fn poll(
        &mut self,
        now_ms: i64,
        new_producer_id: &mut dyn FnMut() -> Option<i64>,
    ) -> TxnResult<()> {
        let _ = new_producer_id;
        let mut result = TxnResult::only(());
        let abort_check = *self
            .next_abort_check_ms
            .get_or_insert(now_ms.saturating_add(self.config.abort_timed_out_check_interval_ms));
        if now_ms >= abort_check {
            self.abort_timed_out_transactions(now_ms, &mut result);
            self.next_abort_check_ms =
                Some(now_ms.saturating_add(self.config.abort_timed_out_check_interval_ms));
        }
        let expiration_check = *self
            .next_expiration_check_ms
            .get_or_insert(now_ms.saturating_add(self.config.remove_expired_check_interval_ms));
        if now_ms >= expiration_check {
            self.remove_expired_transactional_ids(now_ms, &mut result);
            self.next_expiration_check_ms =
                Some(now_ms.saturating_add(self.config.remove_expired_check_interval_ms));
        }
        result
    }

    fn abort_timed_out_transactions(&self, now_ms: i64, result: &mut TxnResult<()>) {
        for m in self.txns.values() {
            let timed_out = m.state == TransactionState::Ongoing
                && m.txn_start_ms.saturating_add(i64::from(m.timeout_ms)) < now_ms;
            if !timed_out {
                continue;
            }
            match m.prepare_fenced_abort(TRANSACTION_VERSION_LEVEL, now_ms) {
                Ok(v) => {
                    tracing::info!(
                        transactional_id = %m.transactional_id,
                        producer_id = m.producer_id,
                        producer_epoch = v.producer_epoch,
                        "aborting a transaction that exceeded its timeout"
                    );
                    let step = self.write_prepare(&m.transactional_id, v, false, ());
                    result.records.extend(step.records);
                    result.markers.extend(step.markers);
                }
                Err(e) => tracing::error!(error = %e, "cannot abort a timed-out transaction"),
            }
        }
    }

    fn remove_expired_transactional_ids(&self, now_ms: i64, result: &mut TxnResult<()>) {
        let expiration_ms = self.config.transactional_id_expiration_ms;
        for m in self.txns.values() {
            if m.should_expire(now_ms, expiration_ms) && m.prepare_dead().is_ok() {
                result.records.push(TxnLogRecord {
                    transactional_id: m.transactional_id.clone(),
                    value: None,
                });
            }
        }
    }

    // ------------------------------------------------------------------------------------------------------
    // DescribeTransactions, ListTransactions
    // ------------------------------------------------------------------------------------------------------

    /// DescribeTransactions for one id; `None` answers TRANSACTIONAL_ID_NOT_FOUND.
    pub fn describe(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.txns
            .get(transactional_id)
            .filter(|m| m.state != TransactionState::Dead)
    }

    /// ListTransactions over this shard: the ids whose state is one of `states` (by Kafka's names; empty for
    /// all), whose producer id is one of `producer_ids` (empty for all), and, when `duration_filter_ms` is 0 or
    /// more (KIP-994), whose transaction started more than that long before `now_ms`. The shell reports the
    /// state names [`TransactionState::from_name`] does not know as `UnknownStateFilters`.
    pub fn list(
        &self,
        states: &[String],
        producer_ids: &[i64],
        duration_filter_ms: i64,
        now_ms: i64,
    ) -> Vec<&TxnMetadata> {
        let wanted: Vec<TransactionState> = states
            .iter()
            .filter_map(|s| TransactionState::from_name(s))
            .collect();
        self.txns
            .values()
            .filter(|m| m.state != TransactionState::Dead)
            .filter(|m| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
            .filter(|m| states.is_empty() || wanted.contains(&m.state))
            .filter(|m| {
                duration_filter_ms < 0 || now_ms.saturating_sub(m.txn_start_ms) > duration_filter_ms
            })
            .collect()
    }
}
