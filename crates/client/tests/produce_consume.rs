//! Producer and consumer against an in-process Sluice broker: round trips for every codec, per-record
//! delivery offsets, keyed placement (murmur2), partitioners, seek, pause/resume, offset reset and commits.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use common::{ClientFixture, TestBroker};
use sluice_client::partitioner::murmur2_partition;
use sluice_client::{
    Acks, CompressionType, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset,
    PartitionStrategy, Producer, ProducerConfig, ProducerRecord,
};

fn producer_config(broker: &TestBroker) -> ProducerConfig {
    ProducerConfig {
        client: broker.client_config(),
        ..ProducerConfig::default()
    }
}

fn consumer_config(broker: &TestBroker) -> ConsumerConfig {
    ConsumerConfig {
        client: broker.client_config(),
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 100,
        ..ConsumerConfig::default()
    }
}

/// Polls until `n` records arrived or 15 s passed.
async fn consume_n(consumer: &mut Consumer, n: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while out.len() < n && std::time::Instant::now() < deadline {
        out.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .expect("poll"),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_with_offsets_keys_and_headers() {
    let mut broker = TestBroker::start().await;
    for codec in CompressionType::ALL {
        let topic = format!("codec-{codec}");
        broker.create_topic(&topic, 1).await;
        let producer = Producer::new(ProducerConfig {
            compression: codec,
            linger_ms: 20,
            ..producer_config(&broker)
        })
        .await
        .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..200 {
            let record = ProducerRecord::new(&topic, format!("value-{i}-{}", "x".repeat(i % 50)))
                .with_key(format!("key-{i}"))
                .with_header("i", i.to_string());
            deliveries.push(producer.send(record).await.unwrap());
        }
        producer.flush().await;
        let mut offsets = Vec::new();
        for d in deliveries {
            let meta = d.await.unwrap();
            assert_eq!(meta.partition, 0);
            offsets.push(meta.offset);
        }
        assert_eq!(offsets, (0..200).collect::<Vec<i64>>(), "{codec}");

        let mut consumer = Consumer::new(consumer_config(&broker)).await.unwrap();
        consumer.assign(vec![(topic.clone(), 0)]).await.unwrap();
        let records = consume_n(&mut consumer, 200).await;
        assert_eq!(records.len(), 200, "{codec}");
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.key.as_deref(), Some(format!("key-{i}").as_bytes()));
            let value = format!("value-{i}-{}", "x".repeat(i % 50));
            assert_eq!(r.value.as_deref(), Some(value.as_bytes()));
            assert_eq!(
                r.headers,
                vec![("i".to_owned(), Some(Bytes::from(i.to_string())))]
            );
        }
        producer.close().await;
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_land_where_murmur2_puts_them() {
    let mut broker = TestBroker::start().await;
    broker.create_topic("keyed", 6).await;
    let producer = Producer::new(producer_config(&broker)).await.unwrap();
    let mut expected: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
    let mut deliveries = Vec::new();
    for i in 0..120 {
        let key = format!("user-{i}");
        expected
            .entry(murmur2_partition(key.as_bytes(), 6))
            .or_default()
            .insert(key.clone());
        deliveries.push(
            producer
                .send(ProducerRecord::new("keyed", "v").with_key(key.clone()))
                .await
                .unwrap(),
        );
    }
    for d in deliveries {
        d.await.unwrap();
    }
    let mut consumer = Consumer::new(consumer_config(&broker)).await.unwrap();
    consumer.assign_topic("keyed").await.unwrap();
    let records = consume_n(&mut consumer, 120).await;
    let mut seen: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
    for r in records {
        let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
        seen.entry(r.partition).or_default().insert(key);
    }
    assert_eq!(seen, expected);
    assert!(
        seen.len() > 3,
        "120 keys should spread over most of 6 partitions"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioners_spread_or_stick_as_configured() {
    let mut broker = TestBroker::start().await;
    broker.create_topic("spread", 4).await;
    // Round-robin: every partition in turn.
    let producer = Producer::new(ProducerConfig {
        partitioner: PartitionStrategy::RoundRobin,
        ..producer_config(&broker)
    })
    .await
    .unwrap();
    let mut parts = Vec::new();
    for _ in 0..8 {
        let d = producer
            .send(ProducerRecord::new("spread", "v"))
            .await
            .unwrap();
        parts.push(d);
    }
    let mut counts = [0; 4];
    for d in parts {
        counts[d.await.unwrap().partition as usize] += 1;
    }
    assert_eq!(counts, [2, 2, 2, 2]);

    // Sticky (KIP-480): keyless records sent together share one partition (one batch).
    let sticky = Producer::new(ProducerConfig {
        linger_ms: 1_000,
        ..producer_config(&broker)
    })
    .await
    .unwrap();
    let mut ds = Vec::new();
    for _ in 0..10 {
        ds.push(
            sticky
                .send(ProducerRecord::new("spread", "s"))
                .await
                .unwrap(),
        );
    }
    sticky.flush().await;
    let mut partitions = BTreeSet::new();
    for d in ds {
        partitions.insert(d.await.unwrap().partition);
    }
    assert_eq!(partitions.len(), 1);

    // Explicit partition wins; an out-of-range partition is an error.
    let d = producer
        .send(ProducerRecord::new("spread", "p").with_partition(3))
        .await
        .unwrap();
    assert_eq!(d.await.unwrap().partition, 3);
    assert!(producer
        .send(ProducerRecord::new("spread", "p").with_partition(9))
        .await
        .is_err());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_pause_resume_reset_and_commit() {
    let mut broker = TestBroker::start().await;
    broker.create_topic("nav", 2).await;
    let producer = Producer::new(ProducerConfig {
        acks: Acks::Leader,
        ..producer_config(&broker)
    })
    .await
    .unwrap();
    for p in 0..2 {
        for i in 0..10 {
            producer
                .send(ProducerRecord::new("nav", format!("{p}-{i}")).with_partition(p))
                .await
                .unwrap();
        }
    }
    producer.flush().await;

    // latest: nothing old is read.
    let mut latest = Consumer::new(ConsumerConfig {
        auto_offset_reset: OffsetReset::Latest,
        ..consumer_config(&broker)
    })
    .await
    .unwrap();
    latest.assign(vec![("nav".into(), 0)]).await.unwrap();
    assert_eq!(latest.position("nav", 0).await.unwrap(), 10);
    assert!(latest
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());

    let mut consumer = Consumer::new(ConsumerConfig {
        group_id: Some("nav-group".into()),
        ..consumer_config(&broker)
    })
    .await
    .unwrap();
    consumer
        .assign(vec![("nav".into(), 0), ("nav".into(), 1)])
        .await
        .unwrap();
    consumer.seek("nav", 0, 7).unwrap();
    consumer.pause(&[("nav".into(), 1)]).unwrap();
    let records = consume_n(&mut consumer, 3).await;
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.partition == 0));
    assert_eq!(records[0].value.as_deref(), Some(&b"0-7"[..]));
    consumer.resume(&[("nav".into(), 1)]).unwrap();
    let records = consume_n(&mut consumer, 10).await;
    assert_eq!(records.len(), 10);
    assert!(records.iter().all(|r| r.partition == 1));

    consumer.seek("nav", 1, 2).unwrap();
    consumer.commit_async().unwrap().await.unwrap().unwrap();
    assert_eq!(
        consumer.committed(&[("nav".into(), 1)]).await.unwrap()[&("nav".to_owned(), 1)],
        2
    );
    consumer.seek("nav", 1, 4).unwrap();
    consumer.commit_sync().await.unwrap();
    let committed = consumer
        .committed(&[("nav".into(), 0), ("nav".into(), 1)])
        .await
        .unwrap();
    assert_eq!(committed.get(&("nav".to_owned(), 0)), Some(&10));
    assert_eq!(committed.get(&("nav".to_owned(), 1)), Some(&4));

    // A new consumer of the group starts at the committed offsets.
    let mut again = Consumer::new(ConsumerConfig {
        group_id: Some("nav-group".into()),
        ..consumer_config(&broker)
    })
    .await
    .unwrap();
    again.assign(vec![("nav".into(), 1)]).await.unwrap();
    let records = consume_n(&mut again, 6).await;
    assert_eq!(records.first().map(|r| r.offset), Some(4));
    assert_eq!(records.len(), 6);

    // Seeking beyond the log end resets per auto.offset.reset (earliest here).
    again.seek("nav", 1, 1_000).unwrap();
    let records = consume_n(&mut again, 10).await;
    assert_eq!(records.first().map(|r| r.offset), Some(0));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_delivers_without_offsets_and_unknown_topics_fail_cleanly() {
    let mut broker = TestBroker::start_with(&[("auto.create.topics.enable", "false")]).await;
    broker.create_topic("fire", 1).await;
    let producer = Producer::new(ProducerConfig {
        acks: Acks::None,
        ..producer_config(&broker)
    })
    .await
    .unwrap();
    let d = producer
        .send(ProducerRecord::new("fire", "x"))
        .await
        .unwrap();
    assert_eq!(d.await.unwrap().offset, -1);
    let err = producer
        .send(ProducerRecord::new("no-such-topic", "x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-topic"), "{err}");

    let mut consumer = Consumer::new(consumer_config(&broker)).await.unwrap();
    consumer.assign(vec![("fire".into(), 0)]).await.unwrap();
    let records = consume_n(&mut consumer, 1).await;
    assert_eq!(records.len(), 1);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = sluice_client::ClientConfig::new(&format!("127.0.0.1:{port}"));
    config.connect_timeout_ms = 1_000;
    let err = sluice_client::Client::connect(config).await.unwrap_err();
    assert!(err.to_string().contains("cannot reach any broker"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stay_under_batch_size_while_requests_are_in_flight() {
    // With one request in flight, records pile up behind it; they must be cut into batches of at most
    // batch.size, never one batch past the broker's max.message.bytes (1 MiB).
    let mut broker = TestBroker::start().await;
    broker.create_topic("pileup", 1).await;
    let producer = Producer::new(ProducerConfig {
        batch_size_bytes: 900_000,
        max_in_flight_requests: 1,
        linger_ms: 0,
        ..producer_config(&broker)
    })
    .await
    .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..30_000 {
        let value = format!("{i:0>100}");
        deliveries.push(
            producer
                .send(ProducerRecord::new("pileup", value))
                .await
                .unwrap(),
        );
    }
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(d.await.unwrap().offset, i as i64);
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_batch_fails_each_of_its_records() {
    let mut broker = TestBroker::start().await;
    broker.create_topic("big", 1).await;
    let producer = Producer::new(producer_config(&broker)).await.unwrap();
    let too_big = producer
        .send(ProducerRecord::new("big", vec![b'x'; 2 * 1024 * 1024]))
        .await
        .unwrap();
    let err = too_big.await.unwrap_err();
    assert_eq!(
        err.kafka_error(),
        Some(sluice_client::error::KafkaError::MessageTooLarge),
        "{err}"
    );
    // The producer keeps working after a failed batch.
    let ok = producer
        .send(ProducerRecord::new("big", "small"))
        .await
        .unwrap();
    assert_eq!(ok.await.unwrap().offset, 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_ride_out_a_broker_restart() {
    // A restart drops every connection: sends in flight fail with a retriable connection error, are retried
    // after a metadata refresh on a new connection, and the consumer reconnects the same way.
    let mut broker = TestBroker::start().await;
    let addr = broker.addr();
    let mut client = sluice_client::ClientConfig::new(&addr.to_string());
    client.request_timeout_ms = 5_000;
    client.retry_backoff_ms = 200;
    let admin = sluice_client::Admin::new(client.clone()).await.unwrap();
    admin
        .create_topic(sluice_client::admin::NewTopic {
            name: "durable".into(),
            num_partitions: 1,
            replication_factor: 1,
            configs: vec![],
        })
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig {
        client: client.clone(),
        retries: 20,
        ..ProducerConfig::default()
    })
    .await
    .unwrap();
    producer
        .send(ProducerRecord::new("durable", "before"))
        .await
        .unwrap()
        .await
        .unwrap();
    let mut consumer = Consumer::new(ConsumerConfig {
        client: client.clone(),
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait_ms: 100,
        ..ConsumerConfig::default()
    })
    .await
    .unwrap();
    consumer.assign(vec![("durable".into(), 0)]).await.unwrap();
    assert_eq!(consume_n(&mut consumer, 1).await.len(), 1);

    broker.shutdown().await;
    // Queue a record while the broker is down, then bring it back on the same port and directory.
    let pending = producer
        .send(ProducerRecord::new("durable", "during"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.restart().await;
    assert_eq!(
        broker.addr(),
        addr,
        "restarted on the port the clients know"
    );
    let meta = pending.await.unwrap();
    assert_eq!(meta.offset, 1);
    let records = consume_n(&mut consumer, 1).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value.as_deref(), Some(&b"during"[..]));
    broker.shutdown().await;
}
