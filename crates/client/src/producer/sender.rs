//! The sender (Java's `Sender`): one task that keeps the transaction manager moving (InitProducerId for an
//! idempotent producer, AddPartitionsToTxn, failing batches an abort or a fatal error leaves behind), drains
//! due batches into Produce requests with at most `max.in.flight.requests` outstanding, and applies each
//! partition's answer: success, a retry (back to the front of the queue, in sequence order), or failure.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::accumulator::{Batch, DrainConfig, Drained, RetryState};
use super::transaction_manager::ProducerIdAndEpoch;
use super::{transactions, Acks, Inner};
use crate::connection::ResponseFuture;
use crate::consumer::TopicPartition;
use crate::error::{ClientError, Result};
use crate::records::{encode_batch, stamp_batch};

/// The highest Produce version this client sends (v13 switches to topic ids).
const PRODUCE_MAX_VERSION: i16 = 12;

/// Hands out the turn to put requests on the connections, in drain order. Send tasks encode their batches in
/// parallel, but a partition's batches must reach the broker in sequence order: a broker that does not know
/// the producer takes any first sequence, so a later batch overtaking the first would be accepted and the
/// first refused.
pub(super) struct Turnstile {
    next: parking_lot::Mutex<u64>,
    turned: tokio::sync::Notify,
}

impl Turnstile {
    pub(super) fn new() -> Turnstile {
        Turnstile {
            next: parking_lot::Mutex::new(0),
            turned: tokio::sync::Notify::new(),
        }
    }

    /// Waits until `ticket` is next; the turn passes on when the returned guard is dropped.
    async fn wait(&self, ticket: u64) -> Turn<'_> {
        loop {
            let turned = self.turned.notified();
            if *self.next.lock() == ticket {
                return Turn(self);
            }
            turned.await;
        }
    }
}

/// The turn to submit requests; passes to the next ticket when dropped (also on an early return).
struct Turn<'a>(&'a Turnstile);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.next.lock() += 1;
        self.0.turned.notify_waiters();
    }
}

/// What the sender must start or finish after looking at the state (outside the lock).
#[derive(Default)]
struct Chores {
    /// Batches to fail, with their error.
    fail: Vec<(Batch, ClientError)>,
    /// An idempotent producer needs its producer id.
    init_producer_id: bool,
    /// Partitions to add to the transaction.
    add_partitions: Option<(ProducerIdAndEpoch, Vec<TopicPartition>)>,
}

/// Java's `Sender.runOnce` preamble, under the lock: resolve sequences, drop the batches an error or an abort
/// leaves behind, and decide on InitProducerId / AddPartitionsToTxn.
fn chores(inner: &Inner) -> Chores {
    let mut chores = Chores::default();
    let mut guard = inner.state.lock();
    let state = &mut *guard;
    let Some(tm) = state.txn.as_mut() else {
        return chores;
    };
    tm.maybe_resolve_sequences();
    if tm.has_fatal_error() {
        let error = tm.error_for_callers().unwrap_or(ClientError::Closed);
        for (_, batch) in state.take_batches(false) {
            chores.fail.push((batch, error.clone()));
        }
        return chores;
    }
    if tm.has_abortable_error() || tm.is_aborting() {
        // Java's `abortUndrainedBatches`: what was never sent is dropped; retries of sent batches go on.
        let error = if tm.is_aborting() {
            ClientError::TransactionAborted
        } else {
            tm.error_for_callers()
                .unwrap_or(ClientError::TransactionAborted)
        };
        for (_, batch) in state.take_batches(true) {
            chores.fail.push((batch, error.clone()));
        }
    }
    let Some(tm) = state.txn.as_mut() else {
        return chores;
    };
    // InitProducerId lazily, once a batch waits for it (and a pending epoch bump before the next drain).
    let due = !tm.producer_id_and_epoch().is_valid() || tm.epoch_bump_required();
    if due
        && !state.init_in_flight
        && state
            .batches
            .values()
            .any(|t| t.partitions.iter().any(|q| !q.is_empty()))
        && tm.bump_idempotent_epoch_and_reset_id_if_needed()
    {
        state.init_in_flight = true;
        chores.init_producer_id = true;
    }
    if !state.add_partitions_in_flight {
        if let Some(add) = tm.take_partitions_to_add() {
            state.add_partitions_in_flight = true;
            chores.add_partitions = Some(add);
        }
    }
    chores
}

pub(super) async fn sender_loop(inner: Arc<Inner>) {
    let max_age = Duration::from_millis(inner.config.client.metadata_max_age_ms);
    let drain_config = |flushing: bool| DrainConfig {
        linger: Duration::from_millis(inner.config.linger_ms),
        batch_size_bytes: inner.config.batch_size_bytes,
        delivery_timeout: Duration::from_millis(inner.config.delivery_timeout_ms),
        flushing,
    };
    // Tickets for the turnstile, in drain order.
    let mut next_ticket: u64 = 0;
    loop {
        // `send` reads partition counts from the cache without checking its age; keep it fresh here
        // (`metadata.max.age.ms`) so added partitions are noticed.
        if inner
            .client
            .metadata_age()
            .is_some_and(|age| age >= max_age)
        {
            let topics: Vec<String> = inner.client.metadata().topics.keys().cloned().collect();
            let client = inner.client.clone();
            tokio::spawn(async move {
                if let Err(e) = client.refresh_metadata(Some(&topics), false).await {
                    tracing::debug!(error = %e, "periodic metadata refresh failed");
                }
            });
        }
        // Armed before looking at the state, so a wake-up in between is not lost.
        let woken = inner.wake.notified();
        let chores = chores(&inner);
        for (batch, error) in chores.fail {
            inner.fail_batch(batch, error);
        }
        if chores.init_producer_id {
            let inner = inner.clone();
            tokio::spawn(async move { transactions::init_idempotent_producer_id(&inner).await });
        }
        if let Some((producer, partitions)) = chores.add_partitions {
            let inner = inner.clone();
            tokio::spawn(async move {
                transactions::add_partitions(&inner, producer, partitions).await
            });
        }
        let closed = inner.closed.load(Ordering::Relaxed);
        let permit = match inner.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(tokio::sync::TryAcquireError::NoPermits) => None,
            Err(tokio::sync::TryAcquireError::Closed) => return,
        };
        let Some(permit) = permit else {
            // A send task finishing wakes us.
            woken.await;
            continue;
        };
        let (drained, expired, next) = {
            let mut state = inner.state.lock();
            let config = drain_config(state.flushing || closed);
            let mut result = state.drain(Instant::now(), &config);
            let timeout_ms = inner.config.delivery_timeout_ms;
            let mut expired = Vec::new();
            for ((topic, partition), batch) in std::mem::take(&mut result.expired) {
                let error = ClientError::DeliveryTimeout {
                    topic: topic.clone(),
                    partition,
                    records: batch.record_count,
                    timeout_ms,
                };
                if let Some(tm) = state.txn.as_mut() {
                    let tp = (topic, partition);
                    if let Some(id) = batch.id {
                        tm.mark_sequence_unresolved(&tp, id);
                    }
                    tm.handle_failed_batch(&tp, batch.id, &error, false);
                }
                expired.push((batch, error));
            }
            (result.ready, expired, result.next_deadline)
        };
        let expired_any = !expired.is_empty();
        for (batch, error) in expired {
            inner.fail_batch(batch, error);
        }
        if !drained.is_empty() {
            let inner = inner.clone();
            let ticket = next_ticket;
            next_ticket += 1;
            tokio::spawn(async move {
                send_batches(&inner, drained, ticket).await;
                drop(permit);
                inner.wake.notify_one();
            });
            continue;
        }
        drop(permit);
        if expired_any {
            continue;
        }
        if closed && inner.pending.load(Ordering::Acquire) == 0 {
            return;
        }
        match next {
            Some(deadline) => {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
            None => woken.await,
        }
    }
}

/// One partition's answer to a Produce request.
enum Answer {
    /// Written at `base_offset` (-1 when unknown), with the LogAppendTime (-1 for CreateTime).
    Written {
        base_offset: i64,
        log_append_time_ms: i64,
    },
    /// Failed, with the partition's log start offset when the broker sent it (-1 otherwise).
    Failed {
        error: ClientError,
        log_start_offset: i64,
    },
}

/// Encodes (first send) or restamps (a sequence rewritten after an epoch bump) each batch, puts the requests
/// on the connections in its turn, and applies the answers.
async fn send_batches(inner: &Arc<Inner>, drained: Vec<Drained>, ticket: u64) {
    let mut flights = Vec::with_capacity(drained.len());
    let mut answers: Vec<(Drained, Answer)> = Vec::new();
    for mut d in drained {
        let encoded = match (&d.batch.encoded, d.stamp) {
            (None, stamp) => encode_batch(&d.batch.records, inner.config.compression, stamp),
            (Some(bytes), Some(stamp)) if d.batch.stamp != Some(stamp) => {
                let mut copy = BytesMut::from(&bytes[..]);
                stamp_batch(&mut copy, stamp).map(|()| copy.freeze())
            }
            (Some(bytes), _) => Ok(bytes.clone()),
        };
        match encoded {
            Ok(bytes) => {
                d.batch.encoded = Some(bytes);
                d.batch.stamp = d.stamp;
                // The bytes are what is sent from now on; the records' memory goes.
                d.batch.records = Vec::new();
                flights.push(d);
            }
            Err(error) => answers.push((
                d,
                Answer::Failed {
                    error,
                    log_start_offset: -1,
                },
            )),
        }
    }
    let mut submitted = Vec::new();
    {
        let _turn = inner.turnstile.wait(ticket).await;
        let metadata = inner.client.metadata();
        let mut by_leader: HashMap<i32, Vec<Drained>> = HashMap::new();
        for d in flights {
            match metadata.leader(&d.topic, d.partition) {
                Some(leader) => by_leader.entry(leader).or_default().push(d),
                None => {
                    let error = ClientError::broker(
                        format!("topic {} partition {}", d.topic, d.partition),
                        ResponseError::LeaderNotAvailable.code(),
                        None,
                    );
                    answers.push((
                        d,
                        Answer::Failed {
                            error,
                            log_start_offset: -1,
                        },
                    ));
                }
            }
        }
        for (leader, flights) in by_leader {
            match submit(inner, leader, flights).await {
                Submitted::Waiting(flights, response) => submitted.push((flights, response)),
                Submitted::Answered(mut done) => answers.append(&mut done),
            }
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (flights, response) in submitted {
        tasks.spawn(async move {
            let response = response.await;
            answer_all(flights, response)
        });
    }
    while let Some(result) = tasks.join_next().await {
        if let Ok(mut part) = result {
            answers.append(&mut part);
        }
    }
    let refresh = apply_answers(inner, answers);
    if refresh.is_empty() {
        return;
    }
    let backoff = Duration::from_millis(inner.config.client.retry_backoff_ms);
    for topic in refresh {
        if let Err(e) = inner.client.topic_refreshed(&topic, false).await {
            tracing::debug!(%topic, error = %e, "metadata refresh after a produce error failed");
        }
        inner.state.lock().metadata_refreshed(&topic, backoff);
    }
    inner.wake.notify_one();
}

/// Whether a retried batch waits for a metadata refresh first: not for the sequence and replication errors,
/// where the leader is right.
fn needs_metadata(error: &ClientError) -> bool {
    !matches!(
        error.kafka_error(),
        Some(
            ResponseError::OutOfOrderSequenceNumber
                | ResponseError::UnknownProducerId
                | ResponseError::NotEnoughReplicas
                | ResponseError::NotEnoughReplicasAfterAppend
                | ResponseError::ConcurrentTransactions
        )
    )
}

/// Applies the answers under the lock (Java's `Sender.completeBatch`/`failBatch`); completes the delivery
/// futures after it. Returns the topics whose metadata must be refreshed.
fn apply_answers(inner: &Inner, answers: Vec<(Drained, Answer)>) -> Vec<String> {
    let retries = inner.config.retries;
    let delivery_timeout = Duration::from_millis(inner.config.delivery_timeout_ms);
    let backoff = Duration::from_millis(inner.config.client.retry_backoff_ms);
    let now = Instant::now();
    let mut done: Vec<(Batch, Result<(i64, i64)>)> = Vec::new();
    let mut refresh = HashSet::new();
    {
        let mut guard = inner.state.lock();
        let state = &mut *guard;
        for (d, answer) in answers {
            let Drained {
                topic,
                partition,
                mut batch,
                ..
            } = d;
            let tp = (topic, partition);
            match answer {
                Answer::Written {
                    base_offset,
                    log_append_time_ms,
                } => {
                    if let (Some(tm), Some(id)) = (state.txn.as_mut(), batch.id) {
                        tm.handle_completed_batch(&tp, id, base_offset);
                    }
                    done.push((batch, Ok((base_offset, log_append_time_ms))));
                }
                Answer::Failed {
                    error,
                    log_start_offset,
                } => {
                    let timed_out = batch.created + delivery_timeout <= now;
                    let may_retry = !timed_out
                        && batch.attempts < retries
                        && match (state.txn.as_mut(), batch.id) {
                            (Some(tm), Some(id)) => tm.can_retry(&tp, id, &error, log_start_offset),
                            _ => error.is_retriable(),
                        };
                    if may_retry {
                        tracing::debug!(topic = %tp.0, partition = tp.1, %error, attempt = batch.attempts + 1, "retrying a batch");
                        batch.attempts += 1;
                        batch.retry = if needs_metadata(&error) {
                            refresh.insert(tp.0.clone());
                            RetryState::AwaitingMetadata(now)
                        } else {
                            RetryState::Backoff(now + backoff)
                        };
                        state.reenqueue(&tp.0, tp.1, batch);
                        continue;
                    }
                    if error.kafka_error() == Some(ResponseError::DuplicateSequenceNumber) {
                        // The broker has the batch but no longer its offsets: success without an offset.
                        if let (Some(tm), Some(id)) = (state.txn.as_mut(), batch.id) {
                            tm.handle_completed_batch(&tp, id, -1);
                        }
                        done.push((batch, Ok((-1, -1))));
                        continue;
                    }
                    if let Some(tm) = state.txn.as_mut() {
                        // Given up on after an error that leaves the outcome open: the broker may have it.
                        let uncertain = error.is_retriable();
                        if uncertain {
                            if let Some(id) = batch.id {
                                tm.mark_sequence_unresolved(&tp, id);
                            }
                        }
                        let adjust = !uncertain && batch.attempts < retries;
                        tm.handle_failed_batch(&tp, batch.id, &error, adjust);
                    }
                    let error = match state.txn.as_ref().and_then(|tm| {
                        (tm.is_transactional()
                            && error.kafka_error() == Some(ResponseError::ProducerFenced))
                        .then(|| tm.error_for_callers())
                        .flatten()
                    }) {
                        Some(e) => e,
                        None => error,
                    };
                    done.push((batch, Err(error)));
                }
            }
        }
    }
    for (batch, result) in done {
        batch.outcome.0.complete(result);
        inner.completed(batch.record_count, batch.permits);
    }
    refresh.into_iter().collect()
}

/// A Produce request put on a leader's connection, or its batches' answers when it could not be (or needs
/// none: acks=0).
enum Submitted {
    Waiting(Vec<Drained>, ResponseFuture<ProduceResponse>),
    Answered(Vec<(Drained, Answer)>),
}

fn failed_all(flights: Vec<Drained>, error: &ClientError) -> Vec<(Drained, Answer)> {
    flights
        .into_iter()
        .map(|f| {
            (
                f,
                Answer::Failed {
                    error: error.clone(),
                    log_start_offset: -1,
                },
            )
        })
        .collect()
}

/// Builds the Produce request of `flights` and queues it on the leader's connection.
async fn submit(inner: &Arc<Inner>, leader: i32, flights: Vec<Drained>) -> Submitted {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for f in &flights {
        let data = PartitionProduceData::default()
            .with_index(f.partition)
            .with_records(f.batch.encoded.clone());
        match topics.iter_mut().find(|t| t.name.0.as_str() == f.topic) {
            Some(t) => t.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(f.topic.clone())))
                    .with_partition_data(vec![data]),
            ),
        }
    }
    let timeout_ms = i32::try_from(inner.config.client.request_timeout_ms).unwrap_or(i32::MAX);
    let transactional_id = inner
        .config
        .transactional_id
        .as_ref()
        .filter(|_| inner.transactions.is_some())
        .map(|id| TransactionalId(StrBytes::from_string(id.clone())));
    let request = ProduceRequest::default()
        .with_transactional_id(transactional_id)
        .with_acks(inner.config.acks.code())
        .with_timeout_ms(timeout_ms)
        .with_topic_data(topics);
    let conn = match inner.client.connection_to(leader).await {
        Ok(conn) => conn,
        Err(e) => return Submitted::Answered(failed_all(flights, &e)),
    };
    if inner.config.acks == Acks::None {
        return Submitted::Answered(
            match conn
                .send_no_response(&request, Some(PRODUCE_MAX_VERSION))
                .await
            {
                Ok(()) => flights
                    .into_iter()
                    .map(|f| {
                        (
                            f,
                            Answer::Written {
                                base_offset: -1,
                                log_append_time_ms: -1,
                            },
                        )
                    })
                    .collect(),
                Err(e) => failed_all(flights, &e),
            },
        );
    }
    match conn.submit(&request, Some(PRODUCE_MAX_VERSION)).await {
        Ok(response) => Submitted::Waiting(flights, response),
        Err(e) => Submitted::Answered(failed_all(flights, &e)),
    }
}

/// Each batch's answer from its partition's entry of the Produce response.
fn answer_all(flights: Vec<Drained>, response: Result<ProduceResponse>) -> Vec<(Drained, Answer)> {
    let response = match response {
        Ok(r) => r,
        Err(e) => return failed_all(flights, &e),
    };
    let mut out = Vec::with_capacity(flights.len());
    for flight in flights {
        let answer = response
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == flight.topic)
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == flight.partition);
        let answer = match answer {
            None => Answer::Failed {
                error: ClientError::Malformed {
                    api: ApiKey::Produce,
                    addr: format!("the leader of {}-{}", flight.topic, flight.partition),
                    reason: format!("no answer for {}-{}", flight.topic, flight.partition),
                },
                log_start_offset: -1,
            },
            Some(a) if a.error_code == 0 => Answer::Written {
                base_offset: a.base_offset,
                log_append_time_ms: a.log_append_time_ms,
            },
            Some(a) => Answer::Failed {
                error: ClientError::broker(
                    format!("producing to {}-{}", flight.topic, flight.partition),
                    a.error_code,
                    a.error_message.as_ref().map(|m| m.as_str().to_owned()),
                ),
                log_start_offset: a.log_start_offset,
            },
        };
        out.push((flight, answer));
    }
    out
}
