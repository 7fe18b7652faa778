//! The producer: partitioning, per-partition batching (`linger.ms`, `batch.size`), compression, acks, retries
//! with backoff and a delivery result per record.
//!
//! [`Producer::send`] picks the partition, appends the record to that partition's open batch and returns a
//! [`DeliveryFuture`]. One sender task drains batches that are full, older than `linger.ms`, or being
//! flushed, groups them by partition leader into one Produce request per broker and sends it; at most
//! `max.in.flight.requests` requests are outstanding, so while the broker is busy records accumulate into
//! bigger batches (as in the Java client). A retriable error (NOT_LEADER_OR_FOLLOWER,
//! UNKNOWN_TOPIC_OR_PARTITION, a lost connection, a timeout) refreshes the topic's metadata, waits
//! `retry.backoff.ms` and sends the same encoded batch again, up to `retries` times. Without idempotence a
//! retried batch may be reordered behind a later one of the same partition, as in Kafka with
//! `max.in.flight.requests.per.connection > 1`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use crate::client::{Client, ClientConfig};
use crate::error::{ClientError, Result};
use crate::partitioner::{murmur2_partition, FastRng, PartitionStrategy};
use crate::records::{encode_batch, now_ms, CompressionType, ProducerRecord, RecordMetadata};

/// The highest Produce version this client sends (v13 switches to topic ids).
const PRODUCE_MAX_VERSION: i16 = 12;

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

struct OpenBatch {
    records: Vec<(ProducerRecord, i64)>,
    outcome: BatchHandle,
    size_bytes: usize,
    created: Instant,
    permits: usize,
}

struct ReadyBatch {
    topic: String,
    partition: i32,
    records: Vec<(ProducerRecord, i64)>,
    outcome: BatchHandle,
    permits: usize,
    created: Instant,
}

/// One topic's open batches and sticky partition: a record costs one topic lookup, then indexing.
#[derive(Default)]
struct TopicBatches {
    /// Indexed by partition: a queue each, where every batch but the last is full; records go to the last.
    partitions: Vec<VecDeque<OpenBatch>>,
    /// KIP-480: the partition keyless records of this topic currently stick to.
    sticky: Option<i32>,
}

impl TopicBatches {
    /// The queue of `partition` (non-negative: validated or reduced modulo the partition count by `send`).
    fn queue_mut(&mut self, partition: i32) -> &mut VecDeque<OpenBatch> {
        let index = usize::try_from(partition).unwrap_or(0);
        if index >= self.partitions.len() {
            self.partitions.resize_with(index + 1, VecDeque::new);
        }
        &mut self.partitions[index]
    }
}

#[derive(Default)]
struct Accumulator {
    /// Batches by topic; a topic is dropped once none of its partitions holds a batch.
    batches: HashMap<String, TopicBatches>,
    flushing: bool,
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
    /// Connects and starts the sender task.
    pub async fn new(config: ProducerConfig) -> Result<Producer> {
        if config.batch_size_bytes == 0 || config.max_in_flight_requests == 0 {
            return Err(ClientError::Config(
                "batch.size and max.in.flight.requests must be positive".into(),
            ));
        }
        let client = Client::connect(config.client.clone()).await?;
        let buffer_capacity = config.buffer_memory_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let inner = Arc::new(Inner {
            client,
            buffer: Arc::new(Semaphore::new(buffer_capacity)),
            buffer_capacity,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight_requests)),
            config,
            state: Mutex::new(Accumulator::default()),
            wake: Notify::new(),
            rng: FastRng::new(),
            round_robin: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            pending: AtomicU32::new(0),
            idle: Notify::new(),
        });
        tokio::spawn(sender_loop(inner.clone()));
        Ok(Producer { inner })
    }

    /// The underlying client (metadata, connections).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Queues `record` and returns a future of its delivery result. Waits while `buffer.memory` is full.
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
            let mut state = inner.state.lock();
            let topic_batches = match state.batches.get_mut(record.topic.as_str()) {
                Some(t) => t,
                None => state.batches.entry(record.topic.clone()).or_default(),
            };
            let partition = match record.partition {
                Some(p) => p,
                None => self.choose_partition(&mut topic_batches.sticky, &record, num_partitions),
            };
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
            if queue
                .back()
                .is_none_or(|b| b.size_bytes > 0 && b.size_bytes + size > batch_size)
            {
                queue.push_back(OpenBatch {
                    records: Vec::new(),
                    outcome: BatchHandle(Arc::new(BatchOutcome {
                        topic: Arc::from(record.topic.as_str()),
                        partition,
                        result: OnceLock::new(),
                        wakers: Mutex::new(Vec::new()),
                    })),
                    size_bytes: 0,
                    created: Instant::now(),
                    permits: 0,
                });
            }
            let Some(batch) = queue.back_mut() else {
                // Pushed just above; undo this record's accounting rather than panic.
                drop(state);
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
            let wake =
                batch.records.len() == 1 || batch.size_bytes >= inner.config.batch_size_bytes;
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
        let inner = &self.inner;
        loop {
            let idle = inner.idle.notified();
            if inner.pending.load(Ordering::Acquire) == 0 {
                break;
            }
            inner.state.lock().flushing = true;
            inner.wake.notify_one();
            idle.await;
        }
        inner.state.lock().flushing = false;
    }

    /// Flushes and stops the sender; later `send`s fail with [`ClientError::Closed`].
    pub async fn close(&self) {
        self.flush().await;
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.wake.notify_one();
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

    /// Takes the batches due now; returns them and the earliest future deadline of the rest.
    fn drain_ready(&self) -> (Vec<ReadyBatch>, Option<Instant>) {
        let mut state = self.state.lock();
        let linger = Duration::from_millis(self.config.linger_ms);
        let now = Instant::now();
        let flushing = state.flushing || self.closed.load(Ordering::Relaxed);
        let batch_size = self.config.batch_size_bytes;
        // At most one batch per partition per request, as Kafka's producer sends.
        let mut ready = Vec::new();
        state.batches.retain(|topic, parts| {
            for (index, queue) in parts.partitions.iter_mut().enumerate() {
                let due = queue.len() > 1
                    || queue.front().is_some_and(|b| {
                        flushing || b.size_bytes >= batch_size || b.created + linger <= now
                    });
                if !due {
                    continue;
                }
                let Some(b) = queue.pop_front() else {
                    continue;
                };
                let partition = i32::try_from(index).unwrap_or(i32::MAX);
                if queue.is_empty() && parts.sticky == Some(partition) {
                    parts.sticky = None;
                }
                ready.push(ReadyBatch {
                    topic: topic.clone(),
                    partition,
                    records: b.records,
                    outcome: b.outcome,
                    permits: b.permits,
                    created: b.created,
                });
            }
            parts.partitions.iter().any(|q| !q.is_empty())
        });
        let next = state
            .batches
            .values()
            .flat_map(|parts| parts.partitions.iter())
            .filter_map(|q| q.front())
            .map(|b| b.created + linger)
            .min();
        (ready, next)
    }
}

async fn sender_loop(inner: Arc<Inner>) {
    let max_age = Duration::from_millis(inner.config.client.metadata_max_age_ms);
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
        let Ok(permit) = inner.in_flight.clone().acquire_owned().await else {
            return;
        };
        let ready = loop {
            let (ready, next) = inner.drain_ready();
            if !ready.is_empty() {
                break ready;
            }
            if inner.closed.load(Ordering::Relaxed) && next.is_none() {
                return;
            }
            match next {
                Some(deadline) => {
                    tokio::select! {
                        _ = inner.wake.notified() => {}
                        _ = tokio::time::sleep_until(deadline.into()) => {}
                    }
                }
                None => inner.wake.notified().await,
            }
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            send_batches(&inner, ready).await;
            drop(permit);
        });
    }
}

/// An encoded batch on its way, with its records' shared outcome.
struct InFlight {
    topic: String,
    partition: i32,
    bytes: Bytes,
    count: usize,
    outcome: BatchHandle,
    permits: usize,
    created: Instant,
}

impl InFlight {
    fn fail(self, inner: &Inner, error: ClientError) {
        self.outcome.0.complete(Err(error));
        inner.completed(self.count, self.permits);
    }

    fn succeed(self, inner: &Inner, base_offset: i64, log_append_time_ms: i64) {
        self.outcome
            .0
            .complete(Ok((base_offset, log_append_time_ms)));
        inner.completed(self.count, self.permits);
    }
}

async fn send_batches(inner: &Arc<Inner>, ready: Vec<ReadyBatch>) {
    let mut batches = Vec::with_capacity(ready.len());
    for b in ready {
        let encoded = encode_batch(&b.records, inner.config.compression);
        let flight = InFlight {
            topic: b.topic,
            partition: b.partition,
            bytes: Bytes::new(),
            count: b.records.len(),
            outcome: b.outcome,
            permits: b.permits,
            created: b.created,
        };
        match encoded {
            Ok(bytes) => batches.push(InFlight { bytes, ..flight }),
            Err(e) => flight.fail(inner, e),
        }
    }
    let mut attempt = 0u32;
    while !batches.is_empty() {
        let retry = send_once(inner, batches).await;
        attempt += 1;
        let deadline = Duration::from_millis(inner.config.delivery_timeout_ms);
        let mut again = Vec::new();
        for (flight, error) in retry {
            if !error.is_retriable()
                || attempt > inner.config.retries
                || flight.created.elapsed() >= deadline
            {
                flight.fail(inner, error);
            } else {
                again.push(flight);
            }
        }
        if again.is_empty() {
            return;
        }
        let mut topics: Vec<&str> = again.iter().map(|f| f.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        tokio::time::sleep(Duration::from_millis(inner.config.client.retry_backoff_ms)).await;
        for topic in topics {
            let _ = inner.client.topic_refreshed(topic, false).await;
        }
        batches = again;
    }
}

/// Sends each batch once to its partition's leader; returns the batches to retry with their error.
async fn send_once(inner: &Arc<Inner>, batches: Vec<InFlight>) -> Vec<(InFlight, ClientError)> {
    let metadata = inner.client.metadata();
    let mut by_leader: HashMap<i32, Vec<InFlight>> = HashMap::new();
    let mut retry = Vec::new();
    for flight in batches {
        match metadata.leader(&flight.topic, flight.partition) {
            Some(leader) => by_leader.entry(leader).or_default().push(flight),
            None => {
                let error = ClientError::broker(
                    format!("topic {} partition {}", flight.topic, flight.partition),
                    kafka_protocol::ResponseError::LeaderNotAvailable.code(),
                    None,
                );
                retry.push((flight, error));
            }
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (leader, flights) in by_leader {
        let inner = inner.clone();
        tasks.spawn(async move { produce_to(&inner, leader, flights).await });
    }
    while let Some(result) = tasks.join_next().await {
        if let Ok(mut failed) = result {
            retry.append(&mut failed);
        }
    }
    retry
}

async fn produce_to(
    inner: &Arc<Inner>,
    leader: i32,
    flights: Vec<InFlight>,
) -> Vec<(InFlight, ClientError)> {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for f in &flights {
        let data = PartitionProduceData::default()
            .with_index(f.partition)
            .with_records(Some(f.bytes.clone()));
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
    let request = ProduceRequest::default()
        .with_acks(inner.config.acks.code())
        .with_timeout_ms(timeout_ms)
        .with_topic_data(topics);
    let conn = match inner.client.connection_to(leader).await {
        Ok(conn) => conn,
        Err(e) => return flights.into_iter().map(|f| (f, e.clone())).collect(),
    };
    if inner.config.acks == Acks::None {
        match conn
            .send_no_response(&request, Some(PRODUCE_MAX_VERSION))
            .await
        {
            Ok(()) => flights.into_iter().for_each(|f| f.succeed(inner, -1, -1)),
            Err(e) => return flights.into_iter().map(|f| (f, e.clone())).collect(),
        }
        return Vec::new();
    }
    let response = match conn.send(&request, Some(PRODUCE_MAX_VERSION)).await {
        Ok(r) => r,
        Err(e) => return flights.into_iter().map(|f| (f, e.clone())).collect(),
    };
    let mut retry = Vec::new();
    for flight in flights {
        let answer = response
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == flight.topic)
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == flight.partition);
        let Some(answer) = answer else {
            let e = ClientError::Malformed {
                api: kafka_protocol::messages::ApiKey::Produce,
                addr: conn.addr().to_owned(),
                reason: format!("no answer for {}-{}", flight.topic, flight.partition),
            };
            flight.fail(inner, e);
            continue;
        };
        if answer.error_code == 0 {
            flight.succeed(inner, answer.base_offset, answer.log_append_time_ms);
            continue;
        }
        let error = ClientError::broker(
            format!("producing to {}-{}", flight.topic, flight.partition),
            answer.error_code,
            answer.error_message.as_ref().map(|m| m.as_str().to_owned()),
        );
        if error.is_retriable() {
            retry.push((flight, error));
        } else {
            flight.fail(inner, error);
        }
    }
    retry
}
