//! The producer's exchanges with the coordinators (Java's `TransactionManager` request handlers, run as async
//! code instead of a priority queue on the sender thread): InitProducerId, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit and EndTxn, with FindCoordinator (key type 1 for the transaction
//! coordinator) and the retries Kafka does (NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE: look the coordinator
//! up again; CONCURRENT_TRANSACTIONS, COORDINATOR_LOAD_IN_PROGRESS and other retriable errors: back off).
//!
//! One transactional request is in flight at a time (as in Java). The API operations (`init_transactions`,
//! `commit_transaction`, `abort_transaction`, `send_offsets_to_transaction`) run one at a time, each bounded
//! by `max.block.ms`; their progress lives in the [`TransactionManager`]'s state, so an operation that timed
//! out (or whose future was dropped) resumes when the same method is called again, and any other one is
//! refused until then (Java's pending transition).
//!
//! [`TransactionManager`]: super::transaction_manager::TransactionManager

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, EndTxnRequest, GroupId,
    InitProducerIdRequest, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};
use parking_lot::Mutex;

use super::transaction_manager::{
    classify, AddPartitionsResult, CoordinatorOutcome, ProducerIdAndEpoch, TransactionState, TxnApi,
};
use super::Inner;
use crate::connection::Connection;
use crate::consumer::{ConsumerGroupMetadata, TopicPartition};
use crate::error::{ClientError, Result};

/// Versions sent (transaction version 1): AddPartitionsToTxn v4+ is for brokers, EndTxn v5 and
/// TxnOffsetCommit v4 belong to transaction version 2 (KIP-890).
const INIT_PRODUCER_ID_MAX_VERSION: i16 = 5;
const ADD_PARTITIONS_MAX_VERSION: i16 = 3;
const ADD_OFFSETS_MAX_VERSION: i16 = 4;
const TXN_OFFSET_COMMIT_MAX_VERSION: i16 = 3;
const END_TXN_MAX_VERSION: i16 = 4;
/// Java's backoff for CONCURRENT_TRANSACTIONS on the first AddPartitionsToTxn of a transaction: the previous
/// transaction is still completing and will be done soon (KAFKA-5482).
const ADD_PARTITIONS_RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// The transactional id and what goes with talking to its coordinator.
pub(super) struct Transactions {
    transactional_id: String,
    /// The transaction coordinator's node id, once found.
    coordinator: Mutex<Option<i32>>,
    /// One transactional request in flight at a time.
    request_lock: tokio::sync::Mutex<()>,
    /// One API operation at a time.
    operation_lock: tokio::sync::Mutex<()>,
    /// An API operation that stopped before its end (timeout, dropped future): only it may run next.
    unfinished: Mutex<Option<&'static str>>,
}

impl Transactions {
    pub(super) fn new(transactional_id: String) -> Transactions {
        Transactions {
            transactional_id,
            coordinator: Mutex::new(None),
            request_lock: tokio::sync::Mutex::new(()),
            operation_lock: tokio::sync::Mutex::new(()),
            unfinished: Mutex::new(None),
        }
    }
}

/// A transactional API operation.
pub(super) enum Operation {
    /// `init_transactions`.
    Init,
    /// `send_offsets_to_transaction`.
    SendOffsets {
        offsets: Vec<(TopicPartition, i64)>,
        group: ConsumerGroupMetadata,
    },
    /// `commit_transaction`.
    Commit,
    /// `abort_transaction`.
    Abort,
}

impl Operation {
    fn name(&self) -> &'static str {
        match self {
            Operation::Init => "init_transactions",
            Operation::SendOffsets { .. } => "send_offsets_to_transaction",
            Operation::Commit => "commit_transaction",
            Operation::Abort => "abort_transaction",
        }
    }
}

fn not_transactional(operation: &'static str) -> ClientError {
    ClientError::InvalidTransactionState {
        operation,
        state: "not transactional (transactional_id is not set)".into(),
    }
}

/// Refuses `operation` while another one is unfinished (Java's `throwIfPendingState`).
pub(super) fn check_no_pending(inner: &Inner, operation: &'static str) -> Result<()> {
    let Some(txns) = &inner.transactions else {
        return Err(not_transactional(operation));
    };
    match *txns.unfinished.lock() {
        Some(previous) => Err(ClientError::InvalidTransactionState {
            operation,
            state: format!(
                "waiting: the previous call to {previous} did not finish; call it again"
            ),
        }),
        None => Ok(()),
    }
}

/// Runs an API operation, bounded by `max.block.ms`.
pub(super) async fn run(inner: &Arc<Inner>, operation: Operation) -> Result<()> {
    let name = operation.name();
    let Some(txns) = &inner.transactions else {
        return Err(not_transactional(name));
    };
    let _one_at_a_time = txns.operation_lock.lock().await;
    {
        let mut unfinished = txns.unfinished.lock();
        if let Some(previous) = *unfinished {
            if previous != name {
                return Err(ClientError::InvalidTransactionState {
                    operation: name,
                    state: format!(
                        "waiting: the previous call to {previous} did not finish; call it again"
                    ),
                });
            }
        }
        *unfinished = Some(name);
    }
    let timeout_ms = inner.config.max_block_ms;
    let result = tokio::time::timeout(
        Duration::from_millis(timeout_ms),
        step(inner, txns, operation),
    )
    .await;
    match result {
        Ok(result) => {
            *txns.unfinished.lock() = None;
            result
        }
        // The operation stays unfinished: calling the same method again resumes it.
        Err(_) => Err(ClientError::Timeout {
            api: match name {
                "init_transactions" => ApiKey::InitProducerId,
                "send_offsets_to_transaction" => ApiKey::AddOffsetsToTxn,
                _ => ApiKey::EndTxn,
            },
            addr: format!("the transaction coordinator of {}", txns.transactional_id),
            timeout_ms,
        }),
    }
}

async fn step(inner: &Arc<Inner>, txns: &Transactions, operation: Operation) -> Result<()> {
    match operation {
        Operation::Init => {
            with_manager(inner, |tm| {
                if tm.state() == TransactionState::Initializing {
                    Ok(())
                } else {
                    tm.begin_initialize()
                }
            })?;
            init_producer_id(inner, txns, ProducerIdAndEpoch::NONE, false).await
        }
        Operation::SendOffsets { offsets, group } => {
            let producer = with_manager(inner, |tm| {
                tm.check_send_offsets()?;
                Ok(tm.producer_id_and_epoch())
            })?;
            add_offsets(inner, txns, producer, &group.group_id).await?;
            txn_offset_commit(inner, txns, producer, &offsets, &group).await
        }
        Operation::Commit => {
            with_manager(inner, |tm| match tm.state() {
                // Resuming.
                TransactionState::CommittingTransaction | TransactionState::Initializing => Ok(()),
                _ => tm.begin_commit(),
            })?;
            inner.wake.notify_one();
            inner.flush().await;
            end_transaction(inner, txns, true).await
        }
        Operation::Abort => {
            with_manager(inner, |tm| match tm.state() {
                TransactionState::AbortingTransaction | TransactionState::Initializing => Ok(()),
                _ => tm.begin_abort(),
            })?;
            // The sender drops what was never sent; the flush waits for what is in flight.
            inner.wake.notify_one();
            inner.flush().await;
            end_transaction(inner, txns, false).await
        }
    }
}

/// Runs `f` on the transaction manager under the lock.
fn with_manager<T>(
    inner: &Inner,
    f: impl FnOnce(&mut super::TransactionManager) -> Result<T>,
) -> Result<T> {
    let mut state = inner.state.lock();
    match state.txn.as_mut() {
        Some(tm) => f(tm),
        None => Err(not_transactional("use transactions")),
    }
}

/// What ending the transaction needs next, read off the manager's state.
enum EndStep {
    Done,
    EndTxn(ProducerIdAndEpoch),
    EpochBump(ProducerIdAndEpoch),
}

/// After the flush: EndTxn (unless nothing was added), then the epoch bump an abortable error asked for
/// (KIP-360) — Java's `beginCompletingTransaction` and what its EndTxn and InitProducerId handlers do.
async fn end_transaction(inner: &Arc<Inner>, txns: &Transactions, commit: bool) -> Result<()> {
    loop {
        let next = with_manager(inner, |tm| {
            // A batch that failed during the flush made the transaction abortable (or the producer fatal).
            if tm.has_error() {
                return Err(tm
                    .error_for_callers()
                    .unwrap_or(ClientError::TransactionAborted));
            }
            match tm.state() {
                TransactionState::CommittingTransaction | TransactionState::AbortingTransaction => {
                    if !tm.transaction_started() {
                        // Nothing reached the coordinator: no EndTxn (Java's `nextRequest`).
                        tm.complete_transaction();
                        return Ok(None);
                    }
                    if !commit && tm.abort_skips_end_txn() {
                        return Ok(Some(EndStep::EpochBump(tm.producer_id_and_epoch())));
                    }
                    Ok(Some(EndStep::EndTxn(tm.producer_id_and_epoch())))
                }
                TransactionState::Initializing => {
                    Ok(Some(EndStep::EpochBump(tm.producer_id_and_epoch())))
                }
                TransactionState::Ready => Ok(Some(EndStep::Done)),
                state => Err(ClientError::InvalidTransactionState {
                    operation: if commit {
                        "commit_transaction"
                    } else {
                        "abort_transaction"
                    },
                    state: state.to_string(),
                }),
            }
        })?;
        match next {
            None => {}
            Some(EndStep::Done) => return Ok(()),
            Some(EndStep::EndTxn(producer)) => {
                end_txn(inner, txns, producer, commit).await?;
                with_manager(inner, |tm| {
                    tm.complete_transaction();
                    Ok(())
                })?;
            }
            Some(EndStep::EpochBump(producer)) => {
                init_producer_id(inner, txns, producer, true).await?;
            }
        }
    }
}

/// Applies a failed outcome to the manager; the caller's error is what later calls will get too.
fn fail(inner: &Inner, outcome: CoordinatorOutcome) -> ClientError {
    let raw = match &outcome {
        CoordinatorOutcome::Abortable(e)
        | CoordinatorOutcome::AbortableIfPossible(e)
        | CoordinatorOutcome::Fatal(e) => e.clone(),
        _ => ClientError::TransactionAborted,
    };
    let mut state = inner.state.lock();
    match state.txn.as_mut() {
        Some(tm) => {
            tm.fail_with(outcome);
            tm.error_for_callers().unwrap_or(raw)
        }
        None => raw,
    }
}

fn backoff(inner: &Inner) -> Duration {
    Duration::from_millis(inner.config.client.retry_backoff_ms)
}

/// A connection to the transaction coordinator (found with FindCoordinator key type 1 when not known), and
/// whether it can bump epochs (InitProducerId v3+, KIP-360).
async fn coordinator_connection(
    inner: &Inner,
    txns: &Transactions,
) -> std::result::Result<Arc<Connection>, CoordinatorOutcome> {
    let cached = *txns.coordinator.lock();
    let node = match cached {
        Some(node) => node,
        None => match inner
            .client
            .transaction_coordinator(&txns.transactional_id)
            .await
        {
            Ok(node) => {
                *txns.coordinator.lock() = Some(node);
                node
            }
            Err(e @ ClientError::Broker { .. }) => {
                let code = e.kafka_error().map_or(-1, |k| k.code());
                return Err(classify(
                    TxnApi::FindCoordinator,
                    code,
                    &format!(
                        "finding the transaction coordinator of {}",
                        txns.transactional_id
                    ),
                    &txns.transactional_id,
                ));
            }
            Err(e) if e.is_retriable() => return Err(CoordinatorOutcome::Retry),
            Err(e) => return Err(CoordinatorOutcome::Fatal(e)),
        },
    };
    let conn = match inner.client.connection_to(node).await {
        Ok(conn) => conn,
        Err(e) if e.is_retriable() => return Err(CoordinatorOutcome::FindCoordinator),
        Err(e) => return Err(CoordinatorOutcome::Fatal(e)),
    };
    let bump = conn
        .broker_versions(ApiKey::InitProducerId)
        .is_some_and(|(_, max)| max >= 3);
    if let Some(tm) = inner.state.lock().txn.as_mut() {
        tm.set_coordinator_supports_epoch_bump(bump);
    }
    Ok(conn)
}

/// Sends `request` to the transaction coordinator until the answer is not a retry; `code` reads the answer's
/// error code. Returns the answer, or the outcome that ended the attempts (not yet applied).
async fn to_coordinator<R, F>(
    inner: &Inner,
    txns: &Transactions,
    api: TxnApi,
    request: &R,
    max_version: i16,
    context: &str,
    code: F,
) -> std::result::Result<R::Response, CoordinatorOutcome>
where
    R: Request,
    F: Fn(&R::Response) -> i16,
{
    loop {
        if inner.closed.load(Ordering::Relaxed) {
            return Err(CoordinatorOutcome::Abortable(ClientError::Closed));
        }
        let outcome = {
            let _one_request = txns.request_lock.lock().await;
            match coordinator_connection(inner, txns).await {
                Err(outcome) => outcome,
                Ok(conn) => match conn.send(request, Some(max_version)).await {
                    Ok(response) => {
                        match classify(api, code(&response), context, &txns.transactional_id) {
                            CoordinatorOutcome::Done => return Ok(response),
                            outcome => outcome,
                        }
                    }
                    // A lost connection or a timeout: the coordinator may have moved.
                    Err(e) if e.is_retriable() => CoordinatorOutcome::FindCoordinator,
                    Err(e) => CoordinatorOutcome::Fatal(e),
                },
            }
        };
        match outcome {
            CoordinatorOutcome::FindCoordinator => {
                *txns.coordinator.lock() = None;
            }
            CoordinatorOutcome::Retry => {}
            outcome => return Err(outcome),
        }
        tracing::debug!(%context, "transactional request retried");
        tokio::time::sleep(backoff(inner)).await;
    }
}

fn transactional_id(txns: &Transactions) -> TransactionalId {
    TransactionalId(StrBytes::from_string(txns.transactional_id.clone()))
}

/// InitProducerId for the transactional id: `current` NONE for `init_transactions`, else the producer id and
/// epoch to bump (KIP-360, after an abortable error).
async fn init_producer_id(
    inner: &Inner,
    txns: &Transactions,
    current: ProducerIdAndEpoch,
    is_epoch_bump: bool,
) -> Result<()> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(transactional_id(txns)))
        .with_transaction_timeout_ms(inner.config.transaction_timeout_ms)
        .with_producer_id(ProducerId(current.producer_id))
        .with_producer_epoch(current.epoch);
    let context = format!("InitProducerId for {}", txns.transactional_id);
    match to_coordinator(
        inner,
        txns,
        TxnApi::InitProducerId,
        &request,
        INIT_PRODUCER_ID_MAX_VERSION,
        &context,
        |r| r.error_code,
    )
    .await
    {
        Ok(response) => {
            let producer = ProducerIdAndEpoch {
                producer_id: response.producer_id.0,
                epoch: response.producer_epoch,
            };
            with_manager(inner, |tm| {
                tm.handle_init_producer_id(producer, is_epoch_bump);
                Ok(())
            })
        }
        // An authorization failure sends the producer back to Uninitialized: init may be tried again (Java's
        // `shouldHandleAuthorizationError`).
        Err(CoordinatorOutcome::Abortable(e))
            if matches!(
                e.kafka_error(),
                Some(
                    kafka_protocol::ResponseError::TransactionalIdAuthorizationFailed
                        | kafka_protocol::ResponseError::ClusterAuthorizationFailed
                )
            ) =>
        {
            with_manager(inner, |tm| {
                tm.transition_to_abortable(e.clone());
                tm.transition_to_uninitialized();
                Ok(())
            })?;
            Err(e)
        }
        Err(outcome) => Err(fail(inner, outcome)),
    }
}

/// EndTxn(commit or abort).
async fn end_txn(
    inner: &Inner,
    txns: &Transactions,
    producer: ProducerIdAndEpoch,
    commit: bool,
) -> Result<()> {
    let request = EndTxnRequest::default()
        .with_transactional_id(transactional_id(txns))
        .with_producer_id(ProducerId(producer.producer_id))
        .with_producer_epoch(producer.epoch)
        .with_committed(commit);
    let context = format!(
        "EndTxn({}) for {}",
        if commit { "commit" } else { "abort" },
        txns.transactional_id
    );
    to_coordinator(
        inner,
        txns,
        TxnApi::EndTxn,
        &request,
        END_TXN_MAX_VERSION,
        &context,
        |r| r.error_code,
    )
    .await
    .map(|_| ())
    .map_err(|outcome| fail(inner, outcome))
}

/// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction.
async fn add_offsets(
    inner: &Inner,
    txns: &Transactions,
    producer: ProducerIdAndEpoch,
    group_id: &str,
) -> Result<()> {
    let request = AddOffsetsToTxnRequest::default()
        .with_transactional_id(transactional_id(txns))
        .with_producer_id(ProducerId(producer.producer_id))
        .with_producer_epoch(producer.epoch)
        .with_group_id(GroupId(StrBytes::from_string(group_id.to_owned())));
    let context = format!("AddOffsetsToTxn for group {group_id}");
    match to_coordinator(
        inner,
        txns,
        TxnApi::AddOffsetsToTxn,
        &request,
        ADD_OFFSETS_MAX_VERSION,
        &context,
        |r| r.error_code,
    )
    .await
    {
        Ok(_) => with_manager(inner, |tm| {
            tm.offsets_added();
            Ok(())
        }),
        Err(outcome) => Err(fail(inner, outcome)),
    }
}

/// TxnOffsetCommit to the group coordinator, with the consumer's group metadata (KIP-447); partitions that
/// got a retriable error are sent again.
async fn txn_offset_commit(
    inner: &Inner,
    txns: &Transactions,
    producer: ProducerIdAndEpoch,
    offsets: &[(TopicPartition, i64)],
    group: &ConsumerGroupMetadata,
) -> Result<()> {
    let mut pending: Vec<(TopicPartition, i64)> = offsets.to_vec();
    while !pending.is_empty() {
        if inner.closed.load(Ordering::Relaxed) {
            return Err(ClientError::Closed);
        }
        let mut topics: Vec<TxnOffsetCommitRequestTopic> = Vec::new();
        for ((topic, partition), offset) in &pending {
            let p = TxnOffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(StrBytes::from_static_str("")));
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(
                    TxnOffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(vec![p]),
                ),
            }
        }
        let request = TxnOffsetCommitRequest::default()
            .with_transactional_id(transactional_id(txns))
            .with_group_id(GroupId(StrBytes::from_string(group.group_id.clone())))
            .with_producer_id(ProducerId(producer.producer_id))
            .with_producer_epoch(producer.epoch)
            .with_generation_id(group.generation_id)
            .with_member_id(StrBytes::from_string(group.member_id.clone()))
            .with_group_instance_id(group.group_instance_id.clone().map(StrBytes::from_string))
            .with_topics(topics);
        let answer = {
            let _one_request = txns.request_lock.lock().await;
            match inner.client.group_coordinator(&group.group_id).await {
                Ok(node) => {
                    inner
                        .client
                        .send_to(node, &request, Some(TXN_OFFSET_COMMIT_MAX_VERSION))
                        .await
                }
                Err(e) => Err(e),
            }
        };
        let response = match answer {
            Ok(r) => r,
            Err(e @ ClientError::Broker { .. }) => {
                let code = e.kafka_error().map_or(-1, |k| k.code());
                match classify(
                    TxnApi::FindCoordinator,
                    code,
                    &e.to_string(),
                    &txns.transactional_id,
                ) {
                    CoordinatorOutcome::Retry | CoordinatorOutcome::FindCoordinator => {
                        tokio::time::sleep(backoff(inner)).await;
                        continue;
                    }
                    outcome => return Err(fail(inner, outcome)),
                }
            }
            Err(e) if e.is_retriable() => {
                tokio::time::sleep(backoff(inner)).await;
                continue;
            }
            Err(e) => return Err(fail(inner, CoordinatorOutcome::Fatal(e))),
        };
        let mut retry = Vec::new();
        for ((topic, partition), offset) in pending {
            let code = response
                .topics
                .iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .map_or(
                    kafka_protocol::ResponseError::UnknownTopicOrPartition.code(),
                    |p| p.error_code,
                );
            let context = format!(
                "TxnOffsetCommit of {topic}-{partition} for group {}",
                group.group_id
            );
            match classify(
                TxnApi::TxnOffsetCommit,
                code,
                &context,
                &txns.transactional_id,
            ) {
                CoordinatorOutcome::Done => {}
                CoordinatorOutcome::Retry | CoordinatorOutcome::FindCoordinator => {
                    retry.push(((topic, partition), offset));
                }
                outcome => return Err(fail(inner, outcome)),
            }
        }
        pending = retry;
        if !pending.is_empty() {
            tokio::time::sleep(backoff(inner)).await;
        }
    }
    Ok(())
}

/// AddPartitionsToTxn for the partitions the sender found new to the transaction; their batches are drained
/// once they are in. Runs as its own task; wakes the sender when done.
pub(super) async fn add_partitions(
    inner: &Arc<Inner>,
    producer: ProducerIdAndEpoch,
    partitions: Vec<TopicPartition>,
) {
    if let Some(txns) = &inner.transactions {
        add_partitions_until_done(inner, txns, producer, &partitions).await;
    }
    inner.state.lock().add_partitions_in_flight = false;
    inner.wake.notify_one();
}

async fn add_partitions_until_done(
    inner: &Inner,
    txns: &Transactions,
    producer: ProducerIdAndEpoch,
    partitions: &[TopicPartition],
) {
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (topic, partition) in partitions {
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(*partition),
            None => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![*partition]),
            ),
        }
    }
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(transactional_id(txns))
        .with_v3_and_below_producer_id(ProducerId(producer.producer_id))
        .with_v3_and_below_producer_epoch(producer.epoch)
        .with_v3_and_below_topics(topics);
    loop {
        let stop = with_manager(inner, |tm| {
            Ok(tm.has_error()
                || !matches!(
                    tm.state(),
                    TransactionState::InTransaction | TransactionState::CommittingTransaction
                ))
        })
        .unwrap_or(true);
        if stop || inner.closed.load(Ordering::Relaxed) {
            let _ = with_manager(inner, |tm| {
                tm.abandon_pending_partitions();
                Ok(())
            });
            return;
        }
        let answer = {
            let _one_request = txns.request_lock.lock().await;
            match coordinator_connection(inner, txns).await {
                Err(outcome) => Err(outcome),
                Ok(conn) => conn
                    .send(&request, Some(ADD_PARTITIONS_MAX_VERSION))
                    .await
                    .map_err(|e| {
                        if e.is_retriable() {
                            CoordinatorOutcome::FindCoordinator
                        } else {
                            CoordinatorOutcome::Fatal(e)
                        }
                    }),
            }
        };
        let pause = match answer {
            Ok(response) => {
                let mut results: Vec<(TopicPartition, i16)> = Vec::new();
                for t in &response.results_by_topic_v3_and_below {
                    for p in &t.results_by_partition {
                        results.push((
                            (t.name.0.as_str().to_owned(), p.partition_index),
                            p.partition_error_code,
                        ));
                    }
                }
                // A partition the answer left out is an error (Java fails such a response too).
                for tp in partitions {
                    if !results.iter().any(|(r, _)| r == tp) {
                        results.push((
                            tp.clone(),
                            kafka_protocol::ResponseError::UnknownServerError.code(),
                        ));
                    }
                }
                let decision = with_manager(inner, |tm| Ok(tm.handle_add_partitions(&results)))
                    .unwrap_or(AddPartitionsResult::Failed);
                match decision {
                    AddPartitionsResult::Added | AddPartitionsResult::Failed => return,
                    AddPartitionsResult::Retry { fast: true } => {
                        backoff(inner).min(ADD_PARTITIONS_RETRY_BACKOFF)
                    }
                    AddPartitionsResult::Retry { fast: false } => backoff(inner),
                    AddPartitionsResult::FindCoordinator => {
                        *txns.coordinator.lock() = None;
                        backoff(inner)
                    }
                }
            }
            Err(CoordinatorOutcome::FindCoordinator) => {
                *txns.coordinator.lock() = None;
                backoff(inner)
            }
            Err(CoordinatorOutcome::Retry) => backoff(inner),
            Err(outcome) => {
                let _ = with_manager(inner, |tm| {
                    tm.abandon_pending_partitions();
                    Ok(())
                });
                fail(inner, outcome);
                return;
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// InitProducerId for an idempotent producer (no transactional id), sent to any broker; retried while
/// batches wait for it. Runs as its own task; wakes the sender when done.
pub(super) async fn init_idempotent_producer_id(inner: &Arc<Inner>) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(i32::MAX)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    loop {
        if inner.closed.load(Ordering::Relaxed) && inner.pending.load(Ordering::Acquire) == 0 {
            break;
        }
        let waiting = inner.state.lock().has_queued();
        if !waiting {
            if let Some(tm) = inner.state.lock().txn.as_mut() {
                tm.abandon_idempotent_init();
            }
            break;
        }
        let answer = inner
            .client
            .send_any(&request, Some(INIT_PRODUCER_ID_MAX_VERSION))
            .await;
        let code = match &answer {
            Ok(r) => r.error_code,
            Err(e) if e.is_retriable() => {
                tracing::debug!(error = %e, "InitProducerId failed; retrying");
                tokio::time::sleep(backoff(inner)).await;
                continue;
            }
            Err(_) => -1,
        };
        let retry = {
            let mut guard = inner.state.lock();
            let state = &mut *guard;
            let Some(tm) = state.txn.as_mut() else {
                break;
            };
            let error = ClientError::broker("InitProducerId", code, None);
            match answer {
                Ok(r) if r.error_code == 0 => {
                    tm.handle_init_producer_id(
                        ProducerIdAndEpoch {
                            producer_id: r.producer_id.0,
                            epoch: r.producer_epoch,
                        },
                        false,
                    );
                    false
                }
                Ok(_) if error.is_retriable() => true,
                Ok(_)
                    if error.kafka_error()
                        == Some(kafka_protocol::ResponseError::ClusterAuthorizationFailed) =>
                {
                    // Back to Uninitialized; the waiting batches fail with the error (Java's
                    // `shouldHandleAuthorizationError`), and the next send asks again.
                    tm.transition_to_abortable(error.clone());
                    tm.transition_to_uninitialized();
                    for (_, batch) in state.take_batches(false) {
                        batch.outcome.0.complete(Err(error.clone()));
                        inner.completed(batch.record_count, batch.permits);
                    }
                    false
                }
                Ok(_) => {
                    tm.transition_to_fatal(error);
                    false
                }
                Err(e) => {
                    tm.transition_to_fatal(e);
                    false
                }
            }
        };
        if !retry {
            break;
        }
        tokio::time::sleep(backoff(inner)).await;
    }
    inner.state.lock().init_in_flight = false;
    inner.wake.notify_one();
}
