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

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify, Semaphore};

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

/// Resolves to where the record landed, or why it was not delivered.
#[derive(Debug)]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

type Waiter = (oneshot::Sender<Result<RecordMetadata>>, i64);

struct OpenBatch {
    records: Vec<(ProducerRecord, i64)>,
    waiters: Vec<Waiter>,
    size_bytes: usize,
    created: Instant,
    permits: usize,
}

struct ReadyBatch {
    topic: String,
    partition: i32,
    records: Vec<(ProducerRecord, i64)>,
    waiters: Vec<Waiter>,
    permits: usize,
    created: Instant,
}

#[derive(Default)]
struct Accumulator {
    batches: HashMap<(String, i32), OpenBatch>,
    /// KIP-480: the partition keyless records of a topic currently stick to.
    sticky: HashMap<String, i32>,
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
        let topic = inner
            .client
            .topic(&record.topic, inner.config.allow_auto_create_topics)
            .await?;
        let num_partitions = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
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
        let permit = inner
            .buffer
            .clone()
            .acquire_many_owned(u32::try_from(permits).unwrap_or(u32::MAX))
            .await
            .map_err(|_| ClientError::Closed)?;
        permit.forget();
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        record.timestamp_ms = Some(timestamp_ms);
        let (tx, rx) = oneshot::channel();
        inner.pending.fetch_add(1, Ordering::AcqRel);
        let wake = {
            let mut state = inner.state.lock();
            let partition = match record.partition {
                Some(p) => p,
                None => self.choose_partition(&mut state, &record, num_partitions),
            };
            let key = (record.topic.clone(), partition);
            let batch = state.batches.entry(key).or_insert_with(|| OpenBatch {
                records: Vec::new(),
                waiters: Vec::new(),
                size_bytes: 0,
                created: Instant::now(),
                permits: 0,
            });
            batch.size_bytes += size;
            batch.permits += permits;
            batch.records.push((record, timestamp_ms));
            batch.waiters.push((tx, timestamp_ms));
            batch.records.len() == 1 || batch.size_bytes >= inner.config.batch_size_bytes
        };
        if wake {
            inner.wake.notify_one();
        }
        Ok(DeliveryFuture { rx })
    }

    fn choose_partition(
        &self,
        state: &mut Accumulator,
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
            (PartitionStrategy::Default, None) => {
                let rng = &inner.rng;
                *state
                    .sticky
                    .entry(record.topic.clone())
                    .or_insert_with(|| rng.below(num_partitions))
            }
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
        let due: Vec<(String, i32)> = state
            .batches
            .iter()
            .filter(|(_, b)| flushing || b.size_bytes >= batch_size || b.created + linger <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut ready = Vec::with_capacity(due.len());
        for key in due {
            if let Some(b) = state.batches.remove(&key) {
                if state.sticky.get(&key.0) == Some(&key.1) {
                    state.sticky.remove(&key.0);
                }
                ready.push(ReadyBatch {
                    topic: key.0,
                    partition: key.1,
                    records: b.records,
                    waiters: b.waiters,
                    permits: b.permits,
                    created: b.created,
                });
            }
        }
        let next = state.batches.values().map(|b| b.created + linger).min();
        (ready, next)
    }
}

async fn sender_loop(inner: Arc<Inner>) {
    loop {
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

/// An encoded batch on its way, with the records' completion handles.
struct InFlight {
    topic: String,
    partition: i32,
    bytes: Bytes,
    waiters: Vec<Waiter>,
    permits: usize,
    created: Instant,
}

impl InFlight {
    fn fail(self, inner: &Inner, error: ClientError) {
        let n = self.waiters.len();
        for (tx, _) in self.waiters {
            let _ = tx.send(Err(error.clone()));
        }
        inner.completed(n, self.permits);
    }

    fn succeed(self, inner: &Inner, base_offset: i64, log_append_time_ms: i64) {
        let n = self.waiters.len();
        for (i, (tx, timestamp_ms)) in self.waiters.into_iter().enumerate() {
            let offset = if base_offset < 0 {
                -1
            } else {
                base_offset + i as i64
            };
            let _ = tx.send(Ok(RecordMetadata {
                topic: self.topic.clone(),
                partition: self.partition,
                offset,
                timestamp_ms: if log_append_time_ms >= 0 {
                    log_append_time_ms
                } else {
                    timestamp_ms
                },
            }));
        }
        inner.completed(n, self.permits);
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
            waiters: b.waiters,
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
