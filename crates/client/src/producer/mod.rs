//! The producer: partitioning, per-partition batching (`linger.ms`, `batch.size`), compression, acks,
//! retries, idempotence (on by default, as Kafka since 3.0) and transactions, with a delivery result per record.
//!
//! [`Producer::send`] picks the partition, appends the record to that partition's open batch and returns a
//! [`DeliveryFuture`]. One sender task ([`sender`]) drains batches that are full, older than `linger.ms`, or
//! being flushed, groups them by partition leader into one Produce request per broker and sends it; at most
//! `max.in.flight.requests` requests are outstanding, so while the broker is busy records accumulate into
//! bigger batches (as in the Java client). A batch that fails with a retriable error goes back to the front
//! of its partition's queue ([`accumulator`]) and is sent again after `retry.backoff.ms` (and, for a
//! NOT_LEADER_OR_FOLLOWER and the like, a metadata refresh), up to `retries` times and within
//! `delivery.timeout.ms`.
//!
//! Idempotence (KIP-98): the producer gets a producer id with InitProducerId before its first batch, and each
//! batch carries the id, the epoch and the base sequence of its partition, kept by the
//! [`transaction_manager`]; a retry keeps its sequence and retries go out in sequence order, so the broker
//! writes each batch once and in order with up to 5 requests in flight. Transactions (KIP-98, transaction
//! version 1): `init_transactions`, `begin_transaction`, `send`, `send_offsets_to_transaction`,
//! `commit_transaction` / `abort_transaction`, driven by the [`transactions`] module against the transaction
//! coordinator.

mod accumulator;
mod sender;
mod transaction_manager;
mod transactions;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use crate::client::{Client, ClientConfig};
use crate::consumer::{ConsumerGroupMetadata, TopicPartition};
use crate::error::{ClientError, Result};
use crate::partitioner::{murmur2_partition, FastRng, PartitionStrategy};
use crate::records::{now_ms, CompressionType, ProducerRecord, RecordMetadata};
use accumulator::{Accumulator, Batch};
use transaction_manager::TransactionManager;
pub use transaction_manager::{ProducerIdAndEpoch, TransactionState};

/// Kafka's bound on `max.in.flight.requests.per.connection` with idempotence: the broker remembers a
/// producer's last 5 batches per partition to recognise a retried one.
pub const MAX_IN_FLIGHT_WITH_IDEMPOTENCE: usize = 5;

/// `acks`: how many replicas must have the batch before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// `acks=0`: the broker does not answer; offsets are unknown (-1).
    None,
    /// `acks=1`: the leader has appended it.
    Leader,
    /// `acks=all` (-1): every in-sync replica has it.
    #[default]
    All,
}

impl Acks {
    /// The wire value.
    pub fn code(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Acks> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            _ => Err(ClientError::Config(format!(
                "acks must be 0, 1, all or -1, not {s:?}"
            ))),
        }
    }
}

/// Producer settings (Kafka's names in the docs of each field).
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Connection settings.
    pub client: ClientConfig,
    /// `acks`.
    pub acks: Acks,
    /// `linger.ms`: how long a batch waits for more records before it is sent.
    pub linger_ms: u64,
    /// `batch.size`: a partition's batch is sent once it holds this many bytes.
    pub batch_size_bytes: usize,
    /// `compression.type`.
    pub compression: CompressionType,
    /// `retries`: how many times a batch is re-sent after a retriable error.
    pub retries: u32,
    /// `delivery.timeout.ms`: a record fails once this long has passed since `send`.
    pub delivery_timeout_ms: u64,
    /// `buffer.memory`: bytes of records waiting or in flight before `send` waits.
    pub buffer_memory_bytes: usize,
    /// `max.in.flight.requests.per.connection` (here: for the whole producer).
    pub max_in_flight_requests: usize,
    /// `partitioner`.
    pub partitioner: PartitionStrategy,
    /// Whether producing to a missing topic may auto-create it (Metadata `allow_auto_topic_creation`).
    pub allow_auto_create_topics: bool,
    /// `enable.idempotence`. `None` (the default) is Kafka's default since 3.0: on, unless `acks` is not `all`,
    /// `retries` is 0 or `max_in_flight_requests` is above 5, in which case it is silently off. `Some(true)`
    /// with any of those is a configuration error; a `transactional_id` needs it.
    pub enable_idempotence: Option<bool>,
    /// `transactional.id`: makes the producer transactional (see [`Producer::init_transactions`]).
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms`: how long the coordinator lets a transaction stay open before aborting it.
    pub transaction_timeout_ms: i32,
    /// `max.block.ms`: how long `init_transactions`, `commit_transaction`, `abort_transaction` and
    /// `send_offsets_to_transaction` wait before failing with a timeout (calling the same method again
    /// resumes where it stopped).
    pub max_block_ms: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            client: ClientConfig::default(),
            acks: Acks::All,
            linger_ms: 5,
            batch_size_bytes: 16 * 1024,
            compression: CompressionType::None,
            retries: 5,
            delivery_timeout_ms: 120_000,
            buffer_memory_bytes: 32 * 1024 * 1024,
            max_in_flight_requests: 5,
            partitioner: PartitionStrategy::Default,
            allow_auto_create_topics: true,
            enable_idempotence: None,
            transactional_id: None,
            transaction_timeout_ms: 60_000,
            max_block_ms: 60_000,
        }
    }
}

impl ProducerConfig {
    /// Whether the producer is idempotent, as Kafka's `ProducerConfig` decides it: an explicit
    /// `enable.idempotence=true` (or a `transactional.id`) with `acks` other than `all`, `retries` 0 or more
    /// than 5 requests in flight is an error; the default is on unless one of those is set.
    pub fn idempotence(&self) -> Result<bool> {
        let conflict = if self.acks != Acks::All {
            Some("acks must be all")
        } else if self.retries == 0 {
            Some("retries must be greater than 0")
        } else if self.max_in_flight_requests > MAX_IN_FLIGHT_WITH_IDEMPOTENCE {
            Some("max.in.flight.requests.per.connection must be at most 5")
        } else {
            None
        };
        let transactional = self.transactional_id.is_some();
        match (self.enable_idempotence, conflict) {
            (Some(false), _) if transactional => Err(ClientError::Config(
                "a transactional.id needs enable.idempotence".into(),
            )),
            (Some(false), _) => Ok(false),
            (Some(true), Some(why)) => Err(ClientError::Config(format!(
                "enable.idempotence=true: {why}"
            ))),
            (None, Some(why)) if transactional => Err(ClientError::Config(format!(
                "a transactional.id needs idempotence: {why}"
            ))),
            (None, Some(_)) => Ok(false),
            (_, None) => Ok(true),
        }
    }
}

/// The outcome of one batch, shared by the [`DeliveryFuture`]s of its records: set once by the sender
/// (base offset and LogAppendTime, or the error). One allocation per batch instead of a channel per record.
#[derive(Debug)]
struct BatchOutcome {
    topic: Arc<str>,
    partition: i32,
    result: OnceLock<Result<(i64, i64)>>,
    wakers: Mutex<Vec<Waker>>,
}

impl BatchOutcome {
    fn complete(&self, result: Result<(i64, i64)>) {
        let _ = self.result.set(result);
        let wakers = std::mem::take(&mut *self.wakers.lock());
        for w in wakers {
            w.wake();
        }
    }
}

/// Owns a batch's outcome until it is completed; dropping it unfinished (a producer torn down with batches
/// in flight) completes it with [`ClientError::Closed`] so no delivery future waits forever.
#[derive(Debug)]
struct BatchHandle(Arc<BatchOutcome>);

impl Drop for BatchHandle {
    fn drop(&mut self) {
        if self.0.result.get().is_none() {
            self.0.complete(Err(ClientError::Closed));
        }
    }
}

/// Resolves to where the record landed, or why it was not delivered.
#[derive(Debug)]
pub struct DeliveryFuture {
    outcome: Arc<BatchOutcome>,
    /// The record's position in its batch (its offset delta).
    index: i64,
    timestamp_ms: i64,
}

impl DeliveryFuture {
    fn resolve(&self, result: &Result<(i64, i64)>) -> Result<RecordMetadata> {
        let &(base_offset, log_append_time_ms) = result.as_ref().map_err(Clone::clone)?;
        Ok(RecordMetadata {
            topic: self.outcome.topic.to_string(),
            partition: self.outcome.partition,
            offset: if base_offset < 0 {
                -1
            } else {
                base_offset + self.index
            },
            timestamp_ms: if log_append_time_ms >= 0 {
                log_append_time_ms
            } else {
                self.timestamp_ms
            },
        })
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.outcome.result.get() {
            return Poll::Ready(self.resolve(result));
        }
        let mut wakers = self.outcome.wakers.lock();
        // Completion sets the result before taking the wakers: check again under the lock.
        if let Some(result) = self.outcome.result.get() {
            drop(wakers);
            return Poll::Ready(self.resolve(result));
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    state: Mutex<Accumulator>,
    buffer: Arc<Semaphore>,
    buffer_capacity: usize,
    in_flight: Arc<Semaphore>,
    wake: Notify,
    rng: FastRng,
    round_robin: AtomicU32,
    closed: AtomicBool,
    /// Records handed to `send` and not yet completed, for `flush`.
    pending: AtomicU32,
    idle: Notify,
    /// The transactional state and its coordinator (`None` without a `transactional.id`).
    transactions: Option<transactions::Transactions>,
    /// Send tasks put their requests on the connections in drain order.
    turnstile: sender::Turnstile,
}

/// An async Kafka producer. Cloning shares it.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Producer {
    /// Connects and starts the sender task. An idempotent producer asks for its producer id before its first
    /// batch goes out; a transactional one in [`init_transactions`](Self::init_transactions).
    pub async fn new(config: ProducerConfig) -> Result<Producer> {
        if config.batch_size_bytes == 0 || config.max_in_flight_requests == 0 {
            return Err(ClientError::Config(
                "batch.size and max.in.flight.requests must be positive".into(),
            ));
        }
        if config.transactional_id.as_deref() == Some("") {
            return Err(ClientError::Config(
                "transactional.id must not be empty".into(),
            ));
        }
        if config.transaction_timeout_ms <= 0 {
            return Err(ClientError::Config(
                "transaction.timeout.ms must be positive".into(),
            ));
        }
        let idempotent = config.idempotence()?;
        let client = Client::connect(config.client.clone()).await?;
        let buffer_capacity = config.buffer_memory_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let accumulator = Accumulator {
            txn: idempotent.then(|| TransactionManager::new(config.transactional_id.clone())),
            ..Accumulator::default()
        };
        let transactions = config
            .transactional_id
            .clone()
            .map(transactions::Transactions::new);
        let inner = Arc::new(Inner {
            client,
            buffer: Arc::new(Semaphore::new(buffer_capacity)),
            buffer_capacity,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight_requests)),
            config,
            state: Mutex::new(accumulator),
            wake: Notify::new(),
            rng: FastRng::new(),
            round_robin: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            pending: AtomicU32::new(0),
            idle: Notify::new(),
            transactions,
            turnstile: sender::Turnstile::new(),
        });
        tokio::spawn(sender::sender_loop(inner.clone()));
        Ok(Producer { inner })
    }

    /// The underlying client (metadata, connections).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Whether the producer is idempotent (see [`ProducerConfig::enable_idempotence`]).
    pub fn is_idempotent(&self) -> bool {
        self.inner.state.lock().txn.is_some()
    }

    /// The producer id and epoch in use ([`ProducerIdAndEpoch::NONE`] before InitProducerId answered, and
    /// always without idempotence).
    pub fn producer_id_and_epoch(&self) -> ProducerIdAndEpoch {
        self.inner
            .state
            .lock()
            .txn
            .as_ref()
            .map_or(ProducerIdAndEpoch::NONE, |tm| tm.producer_id_and_epoch())
    }

    /// The state of the transaction manager (`Uninitialized` without idempotence).
    pub fn transaction_state(&self) -> TransactionState {
        self.inner
            .state
            .lock()
            .txn
            .as_ref()
            .map_or(TransactionState::Uninitialized, |tm| tm.state())
    }

    /// Queues `record` and returns a future of its delivery result. Waits while `buffer.memory` is full.
    ///
    /// A transactional producer sends only between [`begin_transaction`](Self::begin_transaction) and the
    /// end of the transaction; the first record for a partition adds the partition to the transaction
    /// (AddPartitionsToTxn) before its batch goes out. Fails at once when the producer is in an error state
    /// ([`ClientError::TransactionAbortable`], [`ClientError::ProducerFenced`],
    /// [`ClientError::TransactionFatal`]).
    pub async fn send(&self, mut record: ProducerRecord) -> Result<DeliveryFuture> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Relaxed) {
            return Err(ClientError::Closed);
        }
        let count = match inner.client.cached_partition_count(&record.topic) {
            Some(count) => count,
            None => inner
                .client
                .topic(&record.topic, inner.config.allow_auto_create_topics)
                .await?
                .partitions
                .len(),
        };
        let num_partitions = i32::try_from(count).unwrap_or(i32::MAX);
        if num_partitions == 0 {
            return Err(ClientError::UnknownTopic(record.topic));
        }
        if let Some(p) = record.partition {
            if !(0..num_partitions).contains(&p) {
                return Err(ClientError::UnknownPartition {
                    topic: record.topic,
                    partition: p,
                });
            }
        }
        let size = record.size_bytes();
        let permits = size.clamp(1, inner.buffer_capacity);
        let n = u32::try_from(permits).unwrap_or(u32::MAX);
        match inner.buffer.try_acquire_many(n) {
            Ok(permit) => permit.forget(),
            Err(tokio::sync::TryAcquireError::NoPermits) => inner
                .buffer
                .acquire_many(n)
                .await
                .map_err(|_| ClientError::Closed)?
                .forget(),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(ClientError::Closed),
        }
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        record.timestamp_ms = Some(timestamp_ms);
        inner.pending.fetch_add(1, Ordering::AcqRel);
        let (wake, future) = {
            let mut guard = inner.state.lock();
            let state = &mut *guard;
            let topic_batches = match state.batches.get_mut(record.topic.as_str()) {
                Some(t) => t,
                None => state.batches.entry(record.topic.clone()).or_default(),
            };
            let partition = match record.partition {
                Some(p) => p,
                None => self.choose_partition(&mut topic_batches.sticky, &record, num_partitions),
            };
            if let Some(tm) = state.txn.as_mut() {
                let checked = if tm.is_transactional() {
                    tm.maybe_add_partition(&(record.topic.clone(), partition))
                } else {
                    tm.maybe_fail_with_error()
                };
                if let Err(e) = checked {
                    drop(guard);
                    inner.completed(1, permits);
                    return Err(e);
                }
            }
            let batch_size = inner.config.batch_size_bytes;
            // KIP-480: once the sticky partition's batch is full, the next keyless record picks another.
            if record.partition.is_none() && topic_batches.sticky == Some(partition) {
                let batch_bytes = topic_batches
                    .partitions
                    .get(usize::try_from(partition).unwrap_or(usize::MAX))
                    .and_then(VecDeque::back)
                    .map_or(0, |b| b.size_bytes);
                if batch_bytes + size >= batch_size {
                    topic_batches.sticky = None;
                }
            }
            let queue = topic_batches.queue_mut(partition);
            if queue.back().is_none_or(|b| {
                !b.is_open() || (b.size_bytes > 0 && b.size_bytes + size > batch_size)
            }) {
                queue.push_back(Batch::new(BatchHandle(Arc::new(BatchOutcome {
                    topic: Arc::from(record.topic.as_str()),
                    partition,
                    result: OnceLock::new(),
                    wakers: Mutex::new(Vec::new()),
                }))));
            }
            let Some(batch) = queue.back_mut() else {
                // Pushed just above; undo this record's accounting rather than panic.
                drop(guard);
                inner.completed(1, permits);
                return Err(ClientError::Closed);
            };
            batch.size_bytes += size;
            batch.permits += permits;
            let future = DeliveryFuture {
                outcome: batch.outcome.0.clone(),
                index: batch.records.len() as i64,
                timestamp_ms,
            };
            batch.records.push((record, timestamp_ms));
            batch.record_count = batch.records.len();
            let wake = batch.records.len() == 1 || batch.size_bytes >= batch_size;
            (wake, future)
        };
        if wake {
            inner.wake.notify_one();
        }
        Ok(future)
    }

    fn choose_partition(
        &self,
        sticky: &mut Option<i32>,
        record: &ProducerRecord,
        num_partitions: i32,
    ) -> i32 {
        let inner = &self.inner;
        let round_robin = || {
            (inner.round_robin.fetch_add(1, Ordering::Relaxed) % num_partitions.max(1) as u32)
                as i32
        };
        match (&inner.config.partitioner, record.key.as_deref()) {
            (PartitionStrategy::Custom(p), key) => p
                .partition(&record.topic, key, num_partitions)
                .rem_euclid(num_partitions),
            (PartitionStrategy::RoundRobin, _) => round_robin(),
            (PartitionStrategy::Random, _) => inner.rng.below(num_partitions),
            (PartitionStrategy::Default | PartitionStrategy::Murmur2Random, Some(key)) => {
                murmur2_partition(key, num_partitions)
            }
            (PartitionStrategy::Murmur2Random, None) => inner.rng.below(num_partitions),
            (PartitionStrategy::Default, None) => match *sticky {
                Some(p) if p < num_partitions => p,
                _ => {
                    let p = inner.rng.below(num_partitions);
                    *sticky = Some(p);
                    p
                }
            },
        }
    }

    /// Sends every queued record now and waits until all records sent so far are completed.
    pub async fn flush(&self) {
        self.inner.flush().await;
    }

    /// Aborts an open transaction (best effort), flushes and stops the sender; later `send`s fail with
    /// [`ClientError::Closed`].
    pub async fn close(&self) {
        let ongoing = self.inner.transactions.is_some()
            && self.inner.state.lock().txn.as_ref().is_some_and(|tm| {
                matches!(
                    tm.state(),
                    TransactionState::InTransaction | TransactionState::AbortableError
                )
            });
        if ongoing {
            if let Err(e) = self.abort_transaction().await {
                tracing::debug!(error = %e, "abort on close failed");
            }
        }
        self.flush().await;
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.wake.notify_one();
    }

    /// Gets the producer id and epoch for the `transactional.id` from the transaction coordinator
    /// (InitProducerId), fencing any earlier producer with the same id and aborting (or completing) the
    /// transaction it left open. Call once, before the first transaction. Fails with
    /// [`ClientError::ProducerFenced`] when a newer producer took the id meanwhile; a timeout may be retried
    /// by calling this again.
    pub async fn init_transactions(&self) -> Result<()> {
        transactions::run(&self.inner, transactions::Operation::Init).await
    }

    /// Starts a transaction: records sent from now on commit or abort together. Needs a finished
    /// [`init_transactions`](Self::init_transactions) and no open transaction.
    pub fn begin_transaction(&self) -> Result<()> {
        transactions::check_no_pending(&self.inner, "begin_transaction")?;
        let mut state = self.inner.state.lock();
        match state.txn.as_mut() {
            Some(tm) => tm.begin_transaction(),
            None => Err(ClientError::InvalidTransactionState {
                operation: "begin_transaction",
                state: "not transactional (transactional_id is not set)".into(),
            }),
        }
    }

    /// Commits a consumer group's offsets (the next offsets to read) as part of the transaction (KIP-98,
    /// KIP-447): AddOffsetsToTxn to the transaction coordinator, then TxnOffsetCommit to the group coordinator
    /// with the consumer's generation, member id and instance id, so a zombie member is fenced. The offsets
    /// become visible to the group when the transaction commits.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, i64)],
        group_metadata: &ConsumerGroupMetadata,
    ) -> Result<()> {
        transactions::run(
            &self.inner,
            transactions::Operation::SendOffsets {
                offsets: offsets.to_vec(),
                group: group_metadata.clone(),
            },
        )
        .await
    }

    /// Flushes every record of the transaction, then commits it (EndTxn). A record that failed makes the
    /// transaction abortable: this then fails with [`ClientError::TransactionAbortable`] and the transaction
    /// must be aborted.
    pub async fn commit_transaction(&self) -> Result<()> {
        transactions::run(&self.inner, transactions::Operation::Commit).await
    }

    /// Aborts the transaction: records not yet sent fail with [`ClientError::TransactionAborted`], those in
    /// flight complete, then EndTxn(abort); after an abortable error the epoch is bumped (KIP-360) so the
    /// producer can go on with a new transaction.
    pub async fn abort_transaction(&self) -> Result<()> {
        transactions::run(&self.inner, transactions::Operation::Abort).await
    }
}

impl Inner {
    /// Completes `n` records: releases their buffer and wakes `flush` when none are left.
    fn completed(&self, records: usize, permits: usize) {
        self.buffer.add_permits(permits);
        let n = u32::try_from(records).unwrap_or(u32::MAX);
        if self.pending.fetch_sub(n, Ordering::AcqRel) == n {
            self.idle.notify_waiters();
        }
    }

    /// Fails a batch that never reached a final answer from the broker (aborted, expired, fatal state).
    fn fail_batch(&self, batch: Batch, error: ClientError) {
        batch.outcome.0.complete(Err(error));
        self.completed(batch.record_count, batch.permits);
    }

    /// Makes every queued batch due and waits until no record is pending.
    async fn flush(&self) {
        loop {
            let idle = self.idle.notified();
            if self.pending.load(Ordering::Acquire) == 0 {
                break;
            }
            self.state.lock().flushing = true;
            self.wake.notify_one();
            idle.await;
        }
        self.state.lock().flushing = false;
    }
}
