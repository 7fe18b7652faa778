//! Consumer groups against an in-process Sluice broker: two members split a topic's partitions with each
//! assignor, a member leaving hands its partitions over, cooperative-sticky moves partitions without taking
//! the retained ones away, and committed offsets carry over to the next member.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ClientFixture, TestBroker};
use parking_lot::Mutex;
use sluice_client::{
    Assignor, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};

const PARTITIONS: i32 = 4;
const PER_PARTITION: i32 = 25;

async fn fill(broker: &TestBroker, topic: &str) {
    broker.create_topic(topic, PARTITIONS).await;
    let producer = Producer::new(ProducerConfig {
        client: broker.client_config(),
        ..ProducerConfig::default()
    })
    .await
    .unwrap();
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            producer
                .send(ProducerRecord::new(topic, format!("{p}-{i}")).with_partition(p))
                .await
                .unwrap();
        }
    }
    producer.flush().await;
}

fn member_config(broker: &TestBroker, group: &str, assignor: Assignor) -> ConsumerConfig {
    ConsumerConfig {
        client: broker.client_config(),
        group_id: Some(group.to_owned()),
        auto_offset_reset: OffsetReset::Earliest,
        assignor,
        fetch_max_wait_ms: 100,
        heartbeat_interval_ms: 100,
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 5_000,
        auto_commit_interval_ms: 200,
        ..ConsumerConfig::default()
    }
}

/// What a member task saw.
#[derive(Default)]
struct Seen {
    values: BTreeSet<String>,
    assignment: Vec<(String, i32)>,
    /// Every assignment observed, in order (to check cooperative stickiness).
    history: Vec<Vec<(String, i32)>>,
}

fn spawn_member(
    config: ConsumerConfig,
    topic: &str,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    let topic = topic.to_owned();
    let handle = tokio::spawn(async move {
        let mut consumer = Consumer::new(config).await.unwrap();
        consumer.subscribe(vec![topic]).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let records = consumer.poll(Duration::from_millis(100)).await.unwrap();
            let mut s = out.lock();
            for r in records {
                s.values
                    .insert(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
            let assignment = consumer.assignment();
            if s.history.last() != Some(&assignment) {
                s.history.push(assignment.clone());
            }
            s.assignment = assignment;
        }
        consumer.close().await.unwrap();
    });
    (seen, handle)
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_members_split_the_partitions_with_every_assignor() {
    let mut broker = TestBroker::start().await;
    for assignor in [
        Assignor::Range,
        Assignor::RoundRobin,
        Assignor::CooperativeSticky,
    ] {
        let topic = format!("split-{}", assignor.name());
        let group = format!("g-{}", assignor.name());
        fill(&broker, &topic).await;
        let stop = Arc::new(AtomicBool::new(false));
        let (a, ha) = spawn_member(
            member_config(&broker, &group, assignor),
            &topic,
            stop.clone(),
        );
        // The first member alone gets everything.
        wait_until("member a owns all partitions", || {
            a.lock().assignment.len() == PARTITIONS as usize
        })
        .await;
        let (b, hb) = spawn_member(
            member_config(&broker, &group, assignor),
            &topic,
            stop.clone(),
        );
        wait_until("a and b own two partitions each", || {
            a.lock().assignment.len() == 2 && b.lock().assignment.len() == 2
        })
        .await;
        let total = (PARTITIONS * PER_PARTITION) as usize;
        wait_until("every record consumed", || {
            let all: BTreeSet<String> = a.lock().values.union(&b.lock().values).cloned().collect();
            all.len() == total
        })
        .await;
        let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (
            a.lock().assignment.iter().cloned().collect(),
            b.lock().assignment.iter().cloned().collect(),
        );
        assert!(sa.is_disjoint(&sb), "{assignor:?}: {sa:?} {sb:?}");
        if assignor.is_cooperative() {
            // KIP-429: member a kept consuming the partitions it retained; its assignment only shrank.
            let history = a.lock().history.clone();
            for pair in history.windows(2) {
                let (before, after): (BTreeSet<_>, BTreeSet<_>) =
                    (pair[0].iter().collect(), pair[1].iter().collect());
                assert!(after.is_subset(&before) || before.is_empty(), "{history:?}");
            }
        }
        stop.store(true, Ordering::Relaxed);
        ha.await.unwrap();
        hb.await.unwrap();

        // Offsets were committed: a new member of the group finds nothing left to read.
        let mut late = Consumer::new(member_config(&broker, &group, assignor))
            .await
            .unwrap();
        late.subscribe(vec![topic.clone()]).unwrap();
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            records.extend(late.poll(Duration::from_millis(200)).await.unwrap());
        }
        assert_eq!(late.assignment().len(), PARTITIONS as usize);
        assert!(
            records.is_empty(),
            "{assignor:?}: re-read {} records",
            records.len()
        );
        late.close().await.unwrap();
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaving_member_hands_its_partitions_over() {
    let mut broker = TestBroker::start().await;
    fill(&broker, "handover").await;
    let stop_a = Arc::new(AtomicBool::new(false));
    let stop_b = Arc::new(AtomicBool::new(false));
    let (a, ha) = spawn_member(
        member_config(&broker, "h", Assignor::Range),
        "handover",
        stop_a.clone(),
    );
    let (b, hb) = spawn_member(
        member_config(&broker, "h", Assignor::Range),
        "handover",
        stop_b.clone(),
    );
    wait_until("both members assigned", || {
        a.lock().assignment.len() == 2 && b.lock().assignment.len() == 2
    })
    .await;
    stop_a.store(true, Ordering::Relaxed);
    ha.await.unwrap();
    wait_until("b owns everything after a left", || {
        b.lock().assignment.len() == PARTITIONS as usize
    })
    .await;
    stop_b.store(true, Ordering::Relaxed);
    hb.await.unwrap();
    broker.shutdown().await;
}
