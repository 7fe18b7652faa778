//! Idempotent and transactional producing, and read_committed consuming, against an in-process Sluice broker
//! (issue 10; KIP-98, KIP-360, KIP-447):
//!
//! - a Produce response lost after the broker wrote the batch: the idempotent producer's retry is written
//!   once, in order, with up to 5 requests in flight; without idempotence the same loss duplicates records;
//! - committed and aborted transactions as seen by read_committed consumers: this client's, and librdkafka's
//!   (Python `confluent-kafka` from the repo's `.venv`, a third-party witness; skipped with a message when
//!   `.venv` is absent), while read_uncommitted sees the aborted records too;
//! - offsets committed in a transaction (consume-transform-produce) become the group's only on commit;
//! - a second producer with the same transactional id fences the first: every later call fails with
//!   `ProducerFenced`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::proxy::LossyProxy;
use common::{ClientFixture, TestBroker};
use sluice_client::error::KafkaError;
use sluice_client::{
    ClientConfig, ClientError, Consumer, ConsumerConfig, ConsumerGroupMetadata, ConsumerRecord,
    IsolationLevel, OffsetReset, Producer, ProducerConfig, ProducerRecord, TransactionState,
};

/// The broker's transaction support is new: a test that needs it says so when it is missing.
const NEEDS_TXN: &str = "needs the broker's transaction coordinator";

fn producer_config(client: ClientConfig) -> ProducerConfig {
    ProducerConfig {
        client,
        linger_ms: 2,
        ..ProducerConfig::default()
    }
}

fn transactional_config(broker: &TestBroker, transactional_id: &str) -> ProducerConfig {
    ProducerConfig {
        transactional_id: Some(transactional_id.to_owned()),
        max_block_ms: 30_000,
        ..producer_config(broker.client_config())
    }
}

fn consumer_config(client: ClientConfig, isolation_level: IsolationLevel) -> ConsumerConfig {
    ConsumerConfig {
        client,
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 100,
        isolation_level,
        ..ConsumerConfig::default()
    }
}

/// Reads every partition of `topic` from the start until `expected` records came, or until nothing more came
/// for a second once at least `expected` did (so an unexpected extra record is seen too); 20 s at most.
async fn read_all(
    client: ClientConfig,
    topic: &str,
    isolation_level: IsolationLevel,
    expected: usize,
) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::new(consumer_config(client, isolation_level))
        .await
        .expect("consumer");
    consumer.assign_topic(topic).await.expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        let got = consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll");
        if got.is_empty() {
            if out.len() >= expected && quiet_since.elapsed() > Duration::from_secs(1) {
                break;
            }
        } else {
            quiet_since = Instant::now();
        }
        out.extend(got);
    }
    out
}

fn values(records: &[ConsumerRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

/// A broker whose advertised address is a [`LossyProxy`] in front of it.
async fn broker_behind_proxy() -> (TestBroker, LossyProxy) {
    let (proxy, upstream) = LossyProxy::bind().await;
    let advertised = format!("PLAINTEXT://{}", proxy.addr());
    let broker = TestBroker::start_with(&[("advertised.listeners", advertised.as_str())]).await;
    upstream.send(broker.addr()).expect("proxy upstream");
    (broker, proxy)
}

fn proxied_client(proxy: &LossyProxy) -> ClientConfig {
    let mut c = ClientConfig::new(&proxy.addr().to_string());
    c.request_timeout_ms = 10_000;
    c.retry_backoff_ms = 50;
    c
}

/// Sends `n` records `{prefix}{i}` to partition 0 of `topic`, returning the delivery offsets in send order.
async fn send_all(producer: &Producer, topic: &str, prefix: &str, n: usize) -> Vec<i64> {
    let mut deliveries = Vec::new();
    for i in 0..n {
        let record = ProducerRecord::new(topic, format!("{prefix}{i}")).with_partition(0);
        deliveries.push(producer.send(record).await.expect("send"));
    }
    let mut offsets = Vec::new();
    for d in deliveries {
        offsets.push(d.await.expect("delivered").offset);
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_produce_survives_lost_responses_exactly_once_and_in_order() {
    let (mut broker, proxy) = broker_behind_proxy().await;
    let client = proxied_client(&proxy);
    broker.create_topic("idempotent", 1).await;
    // Small batches so that several requests are in flight when a response is lost.
    let producer = Producer::new(ProducerConfig {
        batch_size_bytes: 256,
        retries: 20,
        ..producer_config(client.clone())
    })
    .await
    .unwrap();
    assert!(producer.is_idempotent(), "idempotence is on by default");
    const N: usize = 400;
    // Lose three Produce responses (each also closes its connection, failing what else was in flight on it).
    proxy.drop_produce_responses(3);
    let offsets = send_all(&producer, "idempotent", "v", N).await;
    assert_eq!(proxy.dropped(), 3, "the proxy lost three responses");
    let pid = producer.producer_id_and_epoch();
    assert!(pid.is_valid(), "InitProducerId answered: {pid:?}");
    // Every record once, at the offset its delivery reported, in send order.
    assert_eq!(offsets, (0..N as i64).collect::<Vec<_>>());
    let read = read_all(
        client.clone(),
        "idempotent",
        IsolationLevel::ReadUncommitted,
        N,
    )
    .await;
    assert_eq!(
        values(&read),
        (0..N).map(|i| format!("v{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        read.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..N as i64).collect::<Vec<_>>()
    );

    // The same loss without idempotence writes the batch twice: what the test above guards against.
    broker.create_topic("plain", 1).await;
    let plain = Producer::new(ProducerConfig {
        enable_idempotence: Some(false),
        max_in_flight_requests: 1,
        ..producer_config(client.clone())
    })
    .await
    .unwrap();
    assert!(!plain.is_idempotent());
    proxy.drop_produce_responses(1);
    send_all(&plain, "plain", "p", 10).await;
    assert_eq!(proxy.dropped(), 4);
    let read = read_all(client, "plain", IsolationLevel::ReadUncommitted, 11).await;
    assert!(
        read.len() > 10,
        "a lost response without idempotence duplicates records: {:?}",
        values(&read)
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotence_settings_follow_kafka() {
    let mut broker = TestBroker::start().await;
    let base = producer_config(broker.client_config());
    // Defaulted idempotence is silently off with acks=1; explicitly on, it is a configuration error.
    let acks_one = ProducerConfig {
        acks: sluice_client::Acks::Leader,
        ..base.clone()
    };
    assert!(!Producer::new(acks_one.clone())
        .await
        .unwrap()
        .is_idempotent());
    let explicit = ProducerConfig {
        enable_idempotence: Some(true),
        ..acks_one
    };
    assert!(matches!(
        Producer::new(explicit).await,
        Err(ClientError::Config(_))
    ));
    let many_in_flight = ProducerConfig {
        enable_idempotence: Some(true),
        max_in_flight_requests: 6,
        ..base.clone()
    };
    assert!(Producer::new(many_in_flight).await.is_err());
    // A transactional id needs idempotence.
    let txn_without = ProducerConfig {
        transactional_id: Some("t".into()),
        enable_idempotence: Some(false),
        ..base.clone()
    };
    assert!(Producer::new(txn_without).await.is_err());
    // Transactional calls on a producer without a transactional id are refused and change nothing.
    let producer = Producer::new(base).await.unwrap();
    assert!(matches!(
        producer.begin_transaction(),
        Err(ClientError::InvalidTransactionState { .. })
    ));
    assert!(producer.commit_transaction().await.is_err());
    broker.shutdown().await;
}

/// Produces, on `topic` partition 0: a committed transaction (c0..c4), an aborted one (a0..a4), records
/// outside any transaction from an idempotent producer (n0, n1), and a committed one (c5..c9).
async fn committed_and_aborted(broker: &TestBroker, topic: &str) {
    let producer = Producer::new(transactional_config(broker, &format!("{topic}-txn")))
        .await
        .unwrap();
    assert_eq!(
        producer.transaction_state(),
        TransactionState::Uninitialized
    );
    producer.init_transactions().await.expect(NEEDS_TXN);
    assert_eq!(producer.transaction_state(), TransactionState::Ready);
    let plain = Producer::new(producer_config(broker.client_config()))
        .await
        .unwrap();

    producer.begin_transaction().unwrap();
    let first = send_all_in_txn(&producer, topic, "c", 0..5).await;
    producer.commit_transaction().await.unwrap();
    first_delivered(first).await;

    producer.begin_transaction().unwrap();
    let aborted = send_all_in_txn(&producer, topic, "a", 0..5).await;
    // Let the aborted records reach the log, so the abort is of written records.
    producer.flush().await;
    producer.abort_transaction().await.unwrap();
    for d in aborted {
        // Sent before the abort: written (then aborted by the marker), or dropped unsent.
        let _ = d.await;
    }
    send_all(&plain, topic, "n", 2).await;

    producer.begin_transaction().unwrap();
    let last = send_all_in_txn(&producer, topic, "c", 5..10).await;
    producer.commit_transaction().await.unwrap();
    first_delivered(last).await;
    assert_eq!(producer.transaction_state(), TransactionState::Ready);
    producer.close().await;
}

async fn send_all_in_txn(
    producer: &Producer,
    topic: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
) -> Vec<sluice_client::DeliveryFuture> {
    let mut out = Vec::new();
    for i in range {
        let record = ProducerRecord::new(topic, format!("{prefix}{i}")).with_partition(0);
        out.push(producer.send(record).await.expect("send in a transaction"));
    }
    out
}

async fn first_delivered(deliveries: Vec<sluice_client::DeliveryFuture>) {
    for d in deliveries {
        d.await.expect("committed record delivered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_consumers_see_commits_and_never_aborts() {
    let mut broker = TestBroker::start().await;
    broker.create_topic("txn-visibility", 1).await;
    committed_and_aborted(&broker, "txn-visibility").await;
    let committed: Vec<String> = (0..5)
        .map(|i| format!("c{i}"))
        .chain(["n0".to_owned(), "n1".to_owned()])
        .chain((5..10).map(|i| format!("c{i}")))
        .collect();

    let read = read_all(
        broker.client_config(),
        "txn-visibility",
        IsolationLevel::ReadCommitted,
        committed.len(),
    )
    .await;
    assert_eq!(values(&read), committed, "read_committed (sluice-client)");
    // read_uncommitted also returns the aborted records; neither returns the markers.
    let read = read_all(
        broker.client_config(),
        "txn-visibility",
        IsolationLevel::ReadUncommitted,
        committed.len() + 5,
    )
    .await;
    let all = values(&read);
    assert_eq!(all.len(), committed.len() + 5, "{all:?}");
    assert!(all.iter().any(|v| v == "a0"), "{all:?}");

    // librdkafka as a third-party witness.
    if let Some(python) = python() {
        let out = run_python(
            python,
            vec![
                "-c".into(),
                PY_READ_COMMITTED.into(),
                broker.bootstrap(),
                "txn-visibility".into(),
                committed.len().to_string(),
            ],
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let seen: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            seen,
            committed.iter().map(String::as_str).collect::<Vec<_>>(),
            "read_committed (librdkafka); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_to_a_transaction_commit_with_it() {
    let mut broker = TestBroker::start().await;
    broker.create_topic("eos-in", 1).await;
    broker.create_topic("eos-out", 1).await;
    let plain = Producer::new(producer_config(broker.client_config()))
        .await
        .unwrap();
    send_all(&plain, "eos-in", "in", 6).await;

    // A group member reads the input; each batch is transformed, produced and its offsets committed in one
    // transaction.
    let mut consumer = Consumer::new(ConsumerConfig {
        group_id: Some("eos-group".into()),
        enable_auto_commit: false,
        ..consumer_config(broker.client_config(), IsolationLevel::ReadCommitted)
    })
    .await
    .unwrap();
    consumer.subscribe(vec!["eos-in".into()]).unwrap();
    let mut input = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while input.len() < 6 && Instant::now() < deadline {
        input.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    assert_eq!(input.len(), 6);
    let group: ConsumerGroupMetadata = consumer.group_metadata().unwrap();
    assert!(
        group.generation_id >= 1 && !group.member_id.is_empty(),
        "{group:?}"
    );

    let producer = Producer::new(transactional_config(&broker, "eos-txn"))
        .await
        .unwrap();
    producer.init_transactions().await.expect(NEEDS_TXN);
    let tp = ("eos-in".to_owned(), 0);

    // First three: committed.
    producer.begin_transaction().unwrap();
    for r in &input[..3] {
        let out = format!(
            "out-{}",
            String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
        );
        producer
            .send(ProducerRecord::new("eos-out", out).with_partition(0))
            .await
            .unwrap();
    }
    producer
        .send_offsets_to_transaction(&[(tp.clone(), input[2].offset + 1)], &group)
        .await
        .unwrap();
    producer.commit_transaction().await.unwrap();
    let committed = consumer.committed(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(
        committed.get(&tp),
        Some(&3),
        "offsets committed with the transaction"
    );

    // Next three: aborted, offsets included.
    producer.begin_transaction().unwrap();
    for r in &input[3..] {
        let out = format!(
            "out-{}",
            String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
        );
        producer
            .send(ProducerRecord::new("eos-out", out).with_partition(0))
            .await
            .unwrap();
    }
    producer
        .send_offsets_to_transaction(&[(tp.clone(), input[5].offset + 1)], &group)
        .await
        .unwrap();
    producer.abort_transaction().await.unwrap();
    let committed = consumer.committed(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(
        committed.get(&tp),
        Some(&3),
        "an aborted transaction's offsets are not committed"
    );

    let read = read_all(
        broker.client_config(),
        "eos-out",
        IsolationLevel::ReadCommitted,
        3,
    )
    .await;
    assert_eq!(values(&read), ["out-in0", "out-in1", "out-in2"]);

    // A stale generation is refused by the group coordinator (KIP-447): the transaction becomes abortable.
    producer.begin_transaction().unwrap();
    let stale = ConsumerGroupMetadata {
        generation_id: group.generation_id + 10,
        ..group.clone()
    };
    let err = producer
        .send_offsets_to_transaction(&[(tp.clone(), 6)], &stale)
        .await
        .unwrap_err();
    assert!(err.is_abortable(), "{err:?}");
    assert_eq!(
        err.kafka_error(),
        Some(KafkaError::IllegalGeneration),
        "{err:?}"
    );
    assert!(producer
        .commit_transaction()
        .await
        .unwrap_err()
        .is_abortable());
    producer.abort_transaction().await.unwrap();
    assert_eq!(producer.transaction_state(), TransactionState::Ready);
    consumer.close().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let mut broker = TestBroker::start().await;
    broker.create_topic("fenced", 2).await;
    let first = Producer::new(transactional_config(&broker, "fence-me"))
        .await
        .unwrap();
    first.init_transactions().await.expect(NEEDS_TXN);
    let epoch = first.producer_id_and_epoch();
    first.begin_transaction().unwrap();
    let zombie = first
        .send(ProducerRecord::new("fenced", "zombie").with_partition(0))
        .await
        .unwrap();
    first.flush().await;
    zombie.await.unwrap();

    // The new instance takes over the id: the coordinator bumps the epoch and aborts the open transaction.
    let second = Producer::new(transactional_config(&broker, "fence-me"))
        .await
        .unwrap();
    second.init_transactions().await.unwrap();
    let new_epoch = second.producer_id_and_epoch();
    assert_eq!(new_epoch.producer_id, epoch.producer_id);
    assert!(new_epoch.epoch > epoch.epoch, "{epoch:?} -> {new_epoch:?}");

    // The first producer's next partition needs AddPartitionsToTxn: PRODUCER_FENCED, fatal.
    let late = first
        .send(ProducerRecord::new("fenced", "late").with_partition(1))
        .await
        .unwrap();
    let err = first.commit_transaction().await.unwrap_err();
    assert!(
        matches!(err, ClientError::ProducerFenced { ref transactional_id } if transactional_id == "fence-me"),
        "{err:?}"
    );
    assert!(late.await.is_err());
    assert_eq!(first.transaction_state(), TransactionState::FatalError);
    // Every later call fails with it.
    let fenced = |r: Result<(), ClientError>| matches!(r, Err(ClientError::ProducerFenced { .. }));
    assert!(fenced(first.begin_transaction()));
    assert!(fenced(first.abort_transaction().await));
    assert!(fenced(first.commit_transaction().await));
    assert!(fenced(
        first
            .send(ProducerRecord::new("fenced", "x").with_partition(0))
            .await
            .map(|_| ())
    ));

    // The second producer works, and readers never see the zombie's records.
    second.begin_transaction().unwrap();
    second
        .send(ProducerRecord::new("fenced", "fresh").with_partition(0))
        .await
        .unwrap();
    second.commit_transaction().await.unwrap();
    let read = read_all(
        broker.client_config(),
        "fenced",
        IsolationLevel::ReadCommitted,
        1,
    )
    .await;
    assert_eq!(values(&read), ["fresh"]);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producers_writes_fail_and_its_abort_reports_the_fencing() {
    let mut broker = TestBroker::start().await;
    broker.create_topic("fenced-produce", 1).await;
    let first = Producer::new(transactional_config(&broker, "fence-produce"))
        .await
        .unwrap();
    first.init_transactions().await.expect(NEEDS_TXN);
    first.begin_transaction().unwrap();
    first
        .send(ProducerRecord::new("fenced-produce", "before").with_partition(0))
        .await
        .unwrap()
        .await
        .unwrap();
    let second = Producer::new(transactional_config(&broker, "fence-produce"))
        .await
        .unwrap();
    second.init_transactions().await.unwrap();
    // The partition is already in the first producer's transaction: its next batch goes straight to the
    // partition, whose producer state now has the newer epoch. KIP-588: that is abortable, and the abort's
    // EndTxn learns the fencing from the coordinator.
    let refused = first
        .send(ProducerRecord::new("fenced-produce", "after").with_partition(0))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.kafka_error(),
            Some(KafkaError::InvalidProducerEpoch | KafkaError::ProducerFenced)
        ),
        "{refused:?}"
    );
    let err = first.commit_transaction().await.unwrap_err();
    assert!(err.is_abortable() || err.is_fatal(), "{err:?}");
    let err = first.abort_transaction().await.unwrap_err();
    assert!(matches!(err, ClientError::ProducerFenced { .. }), "{err:?}");
    assert!(matches!(
        first.begin_transaction(),
        Err(ClientError::ProducerFenced { .. })
    ));
    let read = read_all(
        broker.client_config(),
        "fenced-produce",
        IsolationLevel::ReadCommitted,
        0,
    )
    .await;
    assert!(read.is_empty(), "{:?}", values(&read));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_record_makes_the_transaction_abortable_and_the_abort_bumps_the_epoch() {
    let mut broker = TestBroker::start().await;
    let admin = sluice_client::Admin::new(broker.client_config())
        .await
        .unwrap();
    admin
        .create_topic(sluice_client::admin::NewTopic {
            name: "small".into(),
            num_partitions: 1,
            replication_factor: 1,
            configs: vec![("max.message.bytes".into(), "1000".into())],
        })
        .await
        .unwrap();
    let producer = Producer::new(transactional_config(&broker, "bump-me"))
        .await
        .unwrap();
    producer.init_transactions().await.expect(NEEDS_TXN);
    let before = producer.producer_id_and_epoch();
    // An empty transaction ends without EndTxn.
    producer.begin_transaction().unwrap();
    producer.commit_transaction().await.unwrap();
    assert_eq!(producer.producer_id_and_epoch(), before);

    producer.begin_transaction().unwrap();
    let big = producer
        .send(ProducerRecord::new("small", vec![b'x'; 4000]).with_partition(0))
        .await
        .unwrap();
    let err = big.await.unwrap_err();
    assert_eq!(
        err.kafka_error(),
        Some(KafkaError::MessageTooLarge),
        "{err:?}"
    );
    assert_eq!(
        producer.transaction_state(),
        TransactionState::AbortableError
    );
    let err = producer
        .send(ProducerRecord::new("small", "more").with_partition(0))
        .await
        .unwrap_err();
    assert!(err.is_abortable(), "{err:?}");
    assert!(producer
        .commit_transaction()
        .await
        .unwrap_err()
        .is_abortable());
    producer.abort_transaction().await.unwrap();
    // KIP-360: InitProducerId with the current id and epoch bumped the epoch; the producer goes on.
    let after = producer.producer_id_and_epoch();
    assert_eq!(after.producer_id, before.producer_id);
    assert_eq!(after.epoch, before.epoch + 1, "{before:?} -> {after:?}");
    assert_eq!(producer.transaction_state(), TransactionState::Ready);
    producer.begin_transaction().unwrap();
    producer
        .send(ProducerRecord::new("small", "ok").with_partition(0))
        .await
        .unwrap();
    producer.commit_transaction().await.unwrap();
    let read = read_all(
        broker.client_config(),
        "small",
        IsolationLevel::ReadCommitted,
        1,
    )
    .await;
    assert_eq!(values(&read), ["ok"]);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_drops_what_a_librdkafka_transaction_aborted() {
    let Some(python) = python() else { return };
    let mut broker = TestBroker::start().await;
    broker.create_topic("from-librdkafka", 1).await;
    let out = run_python(
        python,
        vec![
            "-c".into(),
            PY_TRANSACTIONS.into(),
            broker.bootstrap(),
            "from-librdkafka".into(),
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "librdkafka's transactions failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = read_all(
        broker.client_config(),
        "from-librdkafka",
        IsolationLevel::ReadCommitted,
        6,
    )
    .await;
    assert_eq!(values(&read), ["c0", "c1", "c2", "c3", "c4", "c5"]);
    let read = read_all(
        broker.client_config(),
        "from-librdkafka",
        IsolationLevel::ReadUncommitted,
        9,
    )
    .await;
    assert_eq!(read.len(), 9, "{:?}", values(&read));
    broker.shutdown().await;
}

/// A librdkafka transactional producer: c0..c2 committed, a0..a2 aborted, c3..c5 committed, on partition 0.
const PY_TRANSACTIONS: &str = r#"
import sys
from confluent_kafka import Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "librdkafka-txn", "linger.ms": 5})
p.init_transactions(30)
for prefix, start, commit in (("c", 0, True), ("a", 0, False), ("c", 3, True)):
    p.begin_transaction()
    for i in range(start, start + 3):
        p.produce(topic, value="%s%d" % (prefix, i), partition=0)
    p.flush(30)
    if commit:
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)
"#;

/// Reads `n` records of partition 0 with `isolation.level=read_committed` and prints each value on a line.
const PY_READ_COMMITTED: &str = r#"
import sys, time
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "txn-witness", "enable.auto.commit": False,
              "isolation.level": "read_committed"})
c.assign([TopicPartition(topic, 0, 0)])
got, deadline, quiet = 0, time.time() + 30, None
while time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        if got >= n:
            quiet = quiet or time.time()
            if time.time() - quiet > 1.5:
                break
        continue
    if m.error():
        print("error: %s" % m.error(), file=sys.stderr)
        continue
    quiet = None
    got += 1
    print(m.value().decode())
c.close()
"#;

fn python() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED (librdkafka witness): {} not found; run scripts/install-test-deps.sh",
            path.display()
        );
        None
    }
}

async fn run_python(python: PathBuf, args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(&args)
            .output()
            .expect("running python")
    })
    .await
    .expect("python task")
}
