//! Interop with librdkafka (through Python's `confluent-kafka` in the repo's `.venv`, installed by
//! `scripts/install-test-deps.sh`): records produced by `sluice-client` read by librdkafka and the reverse,
//! for every codec, and keyed placement equal to librdkafka's `murmur2_random` partitioner.
//! Skips with a message when `.venv` is absent.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{ClientFixture, TestBroker};
use sluice_client::partitioner::murmur2_partition;
use sluice_client::{
    CompressionType, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};

const PARTITIONS: i32 = 4;
const RECORDS: usize = 60;

/// Reads `n` records from every partition of a topic from the beginning and prints one JSON line each.
const PY_CONSUME: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "interop-reader", "enable.auto.commit": False})
md = c.list_topics(topic, timeout=10)
c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
got, deadline = 0, time.time() + 30
while got < n and time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        continue
    if m.error():
        print("error: %s" % m.error(), file=sys.stderr)
        continue
    got += 1
    print(json.dumps({"partition": m.partition(), "offset": m.offset(), "key": m.key().decode(),
                      "value": m.value().decode(),
                      "headers": [[k, v.decode()] for k, v in (m.headers() or [])]}))
c.close()
"#;

/// Produces `n` keyed records with a codec and the `murmur2_random` partitioner.
const PY_PRODUCE: &str = r#"
import sys
from confluent_kafka import Producer
bootstrap, topic, n, codec = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
              "partitioner": "murmur2_random", "linger.ms": 20})
errors = []
def report(err, msg):
    if err is not None:
        errors.append(str(err))
for i in range(n):
    p.produce(topic, key="key-%d" % i, value="value-%d" % i, headers=[("h", b"v")], on_delivery=report)
left = p.flush(30)
if left or errors:
    print("undelivered=%d errors=%s" % (left, errors[:3]), file=sys.stderr)
    sys.exit(1)
"#;

fn python() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: {} not found; run scripts/install-test-deps.sh for the librdkafka interop tests",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_reads_what_sluice_client_produced_for_every_codec() {
    let Some(python) = python() else { return };
    let mut broker = TestBroker::start().await;
    for codec in CompressionType::ALL {
        let topic = format!("to-librdkafka-{codec}");
        broker.create_topic(&topic, PARTITIONS).await;
        let producer = Producer::new(ProducerConfig {
            client: broker.client_config(),
            compression: codec,
            linger_ms: 10,
            ..ProducerConfig::default()
        })
        .await
        .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..RECORDS {
            let record = ProducerRecord::new(&topic, format!("value-{i}"))
                .with_key(format!("key-{i}"))
                .with_header("h", "v");
            deliveries.push(producer.send(record).await.unwrap());
        }
        let mut placed = std::collections::HashMap::new();
        for (i, d) in deliveries.into_iter().enumerate() {
            let m = d.await.unwrap();
            placed.insert(format!("key-{i}"), (m.partition, m.offset));
        }
        let out = run_python(
            python.clone(),
            vec![
                "-c".into(),
                PY_CONSUME.into(),
                broker.bootstrap(),
                topic.clone(),
                RECORDS.to_string(),
            ],
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            RECORDS,
            "{codec}: librdkafka read {} records; stderr: {}",
            lines.len(),
            String::from_utf8_lossy(&out.stderr)
        );
        for line in lines {
            let key = json_field(line, "key");
            let i: usize = key.trim_start_matches("key-").parse().unwrap();
            assert_eq!(json_field(line, "value"), format!("value-{i}"), "{codec}");
            let partition: i32 = json_number(line, "partition");
            let offset: i64 = json_number(line, "offset");
            assert_eq!(placed[&key], (partition, offset), "{codec} {key}");
            assert!(
                line.contains(r#"[["h", "v"]]"#),
                "{codec}: headers in {line}"
            );
        }
        producer.close().await;
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_client_reads_what_librdkafka_produced_and_placement_matches_murmur2_random() {
    let Some(python) = python() else { return };
    let mut broker = TestBroker::start().await;
    for codec in CompressionType::ALL {
        let topic = format!("from-librdkafka-{codec}");
        broker.create_topic(&topic, PARTITIONS).await;
        let out = run_python(
            python.clone(),
            vec![
                "-c".into(),
                PY_PRODUCE.into(),
                broker.bootstrap(),
                topic.clone(),
                RECORDS.to_string(),
                codec.name().into(),
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "{codec}: librdkafka produce failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut consumer = Consumer::new(ConsumerConfig {
            client: broker.client_config(),
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait_ms: 100,
            ..ConsumerConfig::default()
        })
        .await
        .unwrap();
        consumer.assign_topic(&topic).await.unwrap();
        let mut records = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while records.len() < RECORDS && std::time::Instant::now() < deadline {
            records.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
        }
        assert_eq!(records.len(), RECORDS, "{codec}");
        for r in &records {
            let key = r.key.clone().unwrap();
            let i: usize = std::str::from_utf8(&key)
                .unwrap()
                .trim_start_matches("key-")
                .parse()
                .unwrap();
            assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
            assert_eq!(r.headers.len(), 1);
            assert_eq!(
                r.partition,
                murmur2_partition(&key, PARTITIONS),
                "{codec}: librdkafka's murmur2_random and ours disagree on key-{i}"
            );
        }
    }
    broker.shutdown().await;
}

/// The string value of `"name": "..."` in a flat JSON line written by the script above.
fn json_field(line: &str, name: &str) -> String {
    let start = line.find(&format!("\"{name}\": \"")).unwrap() + name.len() + 5;
    let end = start + line[start..].find('"').unwrap();
    line[start..end].to_owned()
}

/// The number value of `"name": N`.
fn json_number<T: std::str::FromStr>(line: &str, name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let start = line.find(&format!("\"{name}\": ")).unwrap() + name.len() + 4;
    let end = start + line[start..].find([',', '}']).unwrap();
    line[start..end].trim().parse().unwrap()
}
