//! Shared helpers for the rdkafka interop tests: client construction, a producer that records its delivery
//! reports, a bounded "consume everything" loop and the record model the tests compare byte for byte.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, Timestamp, TopicPartitionList};
use sluice_interop::Broker;

/// Bound on any single wait for the broker in these tests.
pub(crate) const WAIT_MS: u64 = 60_000;

/// One record as produced and as it must be consumed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
    pub(crate) timestamp_ms: Option<i64>,
}

/// A record read back, with where it was read.
#[derive(Debug, Clone)]
pub(crate) struct Consumed {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) record: Record,
}

/// One delivery report, in the order the producer's callback saw them.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// Index of the record in the test's own sequence (the delivery opaque).
    pub(crate) id: usize,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) error: Option<String>,
}

/// Producer context that records every delivery report.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) reports: Mutex<Vec<Report>>,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let report = match result {
            Ok(msg) => Report {
                id,
                partition: msg.partition(),
                offset: msg.offset(),
                error: None,
            },
            Err((err, msg)) => Report {
                id,
                partition: msg.partition(),
                offset: msg.offset(),
                error: Some(err.to_string()),
            },
        };
        if let Ok(mut reports) = self.reports.lock() {
            reports.push(report);
        }
    }
}

/// Client config pointed at the broker, with extra properties.
pub(crate) fn config(broker: &Broker, extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker.bootstrap_servers());
    config.set("broker.address.family", "v4");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config
}

/// A producer that records delivery reports.
pub(crate) fn producer(broker: &Broker, extra: &[(&str, &str)]) -> BaseProducer<Recorder> {
    config(broker, extra)
        .create_with_context(Recorder::default())
        .expect("create producer")
}

/// A consumer used with `assign` only (no subscribe, no commits). librdkafka refuses `assign` without a
/// `group.id`, so it has one, but never joins the group.
pub(crate) fn consumer(broker: &Broker, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut base = vec![
        ("group.id", "sluice-interop-assign-only"),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "false"),
        ("auto.offset.reset", "error"),
    ];
    base.extend_from_slice(extra);
    config(broker, &base).create().expect("create consumer")
}

/// An admin client.
pub(crate) fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    config(broker, &[]).create().expect("create admin client")
}

/// Runs a future to completion on a small current-thread runtime (admin calls are plain futures).
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// Sends one record, polling through a full local queue; the delivery opaque is `id`.
pub(crate) fn send(
    producer: &BaseProducer<Recorder>,
    topic: &str,
    partition: Option<i32>,
    record: &Record,
    id: usize,
) {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        let mut base = BaseRecord::with_opaque_to(topic, id);
        if let Some(partition) = partition {
            base = base.partition(partition);
        }
        if let Some(key) = &record.key {
            base = base.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            base = base.payload(value.as_slice());
        }
        if let Some(ts) = record.timestamp_ms {
            base = base.timestamp(ts);
        }
        if !record.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (name, value) in &record.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: value.as_deref(),
                });
            }
            base = base.headers(headers);
        }
        match producer.send(base) {
            Ok(()) => return,
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                _,
            )) => {
                assert!(
                    Instant::now() < deadline,
                    "producer queue stayed full for {WAIT_MS} ms"
                );
                producer.poll(Duration::from_millis(10));
            }
            Err((err, _)) => panic!("send record {id}: {err}"),
        }
    }
}

/// Flushes and serves callbacks until `expected` delivery reports arrived; returns them in arrival order.
pub(crate) fn flush_reports(producer: &BaseProducer<Recorder>, expected: usize) -> Vec<Report> {
    producer
        .flush(Duration::from_millis(WAIT_MS))
        .expect("flush: every record delivered or failed in time");
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        producer.poll(Duration::from_millis(10));
        let reports = producer
            .context()
            .reports
            .lock()
            .expect("reports lock")
            .clone();
        if reports.len() >= expected {
            assert_eq!(
                reports.len(),
                expected,
                "more delivery reports than records sent"
            );
            return reports;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} delivery reports after {WAIT_MS} ms",
            reports.len()
        );
    }
}

/// Reads `expected` records from the given partitions (from the beginning), failing on a consumer error or
/// when nothing new arrives for [`WAIT_MS`].
pub(crate) fn consume_all(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<Consumed> {
    consume_from(consumer, topic, partitions, Offset::Beginning, expected)
}

/// Like [`consume_all`] but from `start` in every partition.
pub(crate) fn consume_from(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    start: Offset,
    expected: usize,
) -> Vec<Consumed> {
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, start)
            .expect("assignment offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::with_capacity(expected);
    let mut last_progress = Instant::now();
    while out.len() < expected {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                last_progress = Instant::now();
                out.push(Consumed {
                    partition: msg.partition(),
                    offset: msg.offset(),
                    record: record_of(&msg),
                });
            }
            Some(Err(err)) => panic!("consumer error after {} records: {err}", out.len()),
            None => assert!(
                last_progress.elapsed() < Duration::from_millis(WAIT_MS),
                "consumed only {} of {expected} records; nothing new for {WAIT_MS} ms",
                out.len()
            ),
        }
    }
    // Anything beyond `expected` is a duplicate or a stray record: give it a moment to show up.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(500) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => panic!(
                "unexpected extra record at {}-{} offset {} after {expected} records",
                topic,
                msg.partition(),
                msg.offset()
            ),
            Some(Err(err)) => panic!("consumer error after all records: {err}"),
            None => {}
        }
    }
    out
}

/// The record model of a consumed message.
pub(crate) fn record_of<M: Message>(msg: &M) -> Record {
    let headers = msg
        .headers()
        .map(|h| {
            h.iter()
                .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    let timestamp_ms = match msg.timestamp() {
        Timestamp::CreateTime(ts) | Timestamp::LogAppendTime(ts) => Some(ts),
        Timestamp::NotAvailable => None,
    };
    Record {
        key: msg.key().map(<[u8]>::to_vec),
        value: msg.payload().map(<[u8]>::to_vec),
        headers,
        timestamp_ms,
    }
}

/// A small deterministic PRNG (xorshift64*) so record contents are reproducible without extra crates.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `len` bytes: a quarter random, the rest repetitive text, so that every codec has something to do.
    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let word = self.next_u64();
            if word.is_multiple_of(4) {
                out.extend_from_slice(&word.to_le_bytes());
            } else {
                out.extend_from_slice(b"sluice--");
            }
        }
        out.truncate(len);
        out
    }
}

/// The i-th record of a test data set: key, value of 1..=`max_value_len` bytes, two or three headers, and an
/// explicit CreateTime (so the consumed timestamp must equal it).
pub(crate) fn make_record(
    rng: &mut Rng,
    i: usize,
    max_value_len: usize,
    timestamp_ms: i64,
) -> Record {
    // No empty values: whether librdkafka sends an empty slice as null or empty is the client's business.
    let value_len = 1 + (rng.next_u64() % max_value_len.max(1) as u64) as usize;
    let mut headers = vec![
        ("seq".to_owned(), Some(i.to_string().into_bytes())),
        ("bin".to_owned(), Some(rng.bytes(8))),
    ];
    if i.is_multiple_of(7) {
        headers.push(("null-valued".to_owned(), None));
    }
    Record {
        key: Some(format!("key-{i}").into_bytes()),
        // Every 1000th record has a null value (a tombstone shape), the rest random bytes.
        value: if i % 1000 == 999 {
            None
        } else {
            Some(rng.bytes(value_len))
        },
        headers,
        timestamp_ms: Some(timestamp_ms),
    }
}

/// Index of a record made by [`make_record`], from its `seq` header.
pub(crate) fn seq_of(record: &Record) -> usize {
    record
        .headers
        .iter()
        .find(|(name, _)| name == "seq")
        .and_then(|(_, value)| value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("record without a seq header: {record:?}"))
}

/// Checks that `consumed` is exactly `produced` (byte for byte, each once), that offsets in each partition are
/// dense from `first_offset` and that each partition preserves production order. Returns records per partition.
pub(crate) fn assert_same_records(
    produced: &[Record],
    consumed: &[Consumed],
    first_offset: i64,
) -> BTreeMap<i32, usize> {
    assert_eq!(consumed.len(), produced.len(), "record count");
    let mut seen = vec![false; produced.len()];
    let mut per_partition: BTreeMap<i32, (i64, Option<usize>, usize)> = BTreeMap::new();
    for c in consumed {
        let seq = seq_of(&c.record);
        assert!(seq < produced.len(), "unknown seq {seq}");
        assert!(!seen[seq], "record {seq} consumed twice");
        seen[seq] = true;
        assert_eq!(
            c.record, produced[seq],
            "record {seq} differs (partition {} offset {})",
            c.partition, c.offset
        );
        let entry = per_partition
            .entry(c.partition)
            .or_insert((first_offset, None, 0));
        assert_eq!(
            c.offset, entry.0,
            "offsets in partition {} not dense",
            c.partition
        );
        if let Some(prev) = entry.1 {
            assert!(
                seq > prev,
                "partition {} out of production order: {seq} after {prev}",
                c.partition
            );
        }
        *entry = (c.offset + 1, Some(seq), entry.2 + 1);
    }
    per_partition
        .into_iter()
        .map(|(p, (_, _, n))| (p, n))
        .collect()
}
