//! Fetch end to end: a broker started in-process on a free loopback port, driven with Fetch requests encoded by
//! `kafka-protocol`: reads at every version family, long polling (wake on produce, `min_bytes`/`max_wait_ms`),
//! KIP-74 oversize batches, KIP-227 sessions (full, incremental, forgotten, epoch errors) and Kafka's errors.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
mod common;

use common::Client;
use sluice_testkit::{BatchBuilder, TestBroker};
use uuid::Uuid;

const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
const UNKNOWN_TOPIC_ID: i16 = 100;
const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Creates `name` with `partitions` partitions and returns its topic id.
async fn create_topic(client: &mut Client, name: &str, partitions: i32) -> Uuid {
    let topic = CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(1);
    let response = client
        .send(
            7,
            CreateTopicsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(5000),
        )
        .await;
    assert_eq!(response.topics[0].error_code, NONE, "{response:?}");
    response.topics[0].topic_id
}

/// One batch of records with these values (keys `k0`, `k1`, ...), timestamped now: an old timestamp would roll a
/// segment per batch (`segment.ms`), and a fetch reads one segment.
fn batch(values: &[&[u8]]) -> Bytes {
    values
        .iter()
        .enumerate()
        .fold(BatchBuilder::new().now(), |b, (i, v)| {
            b.key_value(format!("k{i}"), v)
        })
        .build_bytes()
}

/// Produces one batch to `topic`-`partition` with acks=-1 and returns its base offset.
async fn produce(client: &mut Client, topic: &str, partition: i32, records: Bytes) -> i64 {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let response = client.send(9, request).await;
    let p = &response.responses[0].partition_responses[0];
    assert_eq!(p.error_code, NONE, "{response:?}");
    p.base_offset
}

fn fetch_partition(partition: i32, offset: i64, max_bytes: i32) -> FetchPartition {
    FetchPartition::default()
        .with_partition(partition)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(max_bytes)
        .with_current_leader_epoch(-1)
        .with_log_start_offset(-1)
}

/// A sessionless fetch of `partitions` (partition, offset) of `topic` (named by name before v13, by id after).
fn fetch_request(version: i16, topic: (&str, Uuid), partitions: &[(i32, i64)]) -> FetchRequest {
    let mut t = FetchTopic::default().with_partitions(
        partitions
            .iter()
            .map(|&(p, o)| fetch_partition(p, o, 1 << 20))
            .collect(),
    );
    if version >= 13 {
        t.topic_id = topic.1;
    } else {
        t.topic = TopicName(s(topic.0));
    }
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![t])
}

/// The values of every record in `data`.
fn values(data: &PartitionData) -> Vec<Vec<u8>> {
    let mut records = data.records.clone().expect("records are never null");
    let sets = RecordBatchDecoder::decode_all(&mut records).expect("decode records");
    sets.iter()
        .flat_map(|set| {
            set.records
                .iter()
                .map(|r| r.value.clone().unwrap_or_default().to_vec())
        })
        .collect()
}

fn partitions(response: &FetchResponse) -> Vec<&PartitionData> {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .collect()
}

fn partition(response: &FetchResponse, index: i32) -> &PartitionData {
    partitions(response)
        .into_iter()
        .find(|p| p.partition_index == index)
        .unwrap_or_else(|| panic!("partition {index} not in {response:?}"))
}

#[tokio::test]
async fn fetch_returns_what_was_produced_at_every_version_family() {
    let mut broker = TestBroker::start().await;
    let mut client = Client::connect(broker.server()).await;
    let id = create_topic(&mut client, "events", 2).await;
    assert_eq!(
        produce(&mut client, "events", 0, batch(&[b"a", b"b"])).await,
        0
    );
    assert_eq!(produce(&mut client, "events", 0, batch(&[b"c"])).await, 2);

    for version in [4, 5, 7, 11, 12, 13, 15, 16] {
        let response = client
            .send(
                version,
                fetch_request(version, ("events", id), &[(0, 0), (1, 0)]),
            )
            .await;
        assert_eq!(response.error_code, NONE, "v{version}");
        assert_eq!(response.responses.len(), 1, "v{version}: one topic entry");
        if version >= 13 {
            assert_eq!(response.responses[0].topic_id, id);
        } else {
            assert_eq!(response.responses[0].topic.0.as_str(), "events");
        }
        let p0 = partition(&response, 0);
        assert_eq!(p0.error_code, NONE, "v{version}");
        assert_eq!(
            values(p0),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
            "v{version}"
        );
        assert_eq!(
            (p0.high_watermark, p0.last_stable_offset),
            (3, 3),
            "v{version}"
        );
        if version >= 5 {
            assert_eq!(p0.log_start_offset, 0);
        }
        assert_eq!(
            p0.aborted_transactions, None,
            "read_uncommitted sends null, as Kafka does"
        );
        let p1 = partition(&response, 1);
        assert_eq!((p1.error_code, p1.high_watermark), (NONE, 0));
        assert_eq!(p1.records, Some(Bytes::new()), "empty records, never null");
    }

    // From the middle of a batch: the whole batch comes back (clients skip the records before their offset).
    let response = client
        .send(12, fetch_request(12, ("events", id), &[(0, 1)]))
        .await;
    assert_eq!(
        values(partition(&response, 0)),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    // From the second batch.
    let response = client
        .send(12, fetch_request(12, ("events", id), &[(0, 2)]))
        .await;
    assert_eq!(values(partition(&response, 0)), vec![b"c".to_vec()]);

    // read_committed: LSO = HW, aborted transactions an empty list.
    let response = client
        .send(
            16,
            fetch_request(16, ("events", id), &[(0, 0)]).with_isolation_level(1),
        )
        .await;
    let p0 = partition(&response, 0);
    assert_eq!(values(p0).len(), 3);
    assert_eq!(p0.last_stable_offset, 3);
    assert_eq!(p0.aborted_transactions, Some(vec![]));
    broker.shutdown().await;
}

#[tokio::test]
async fn kafka_errors_per_partition() {
    let mut broker = TestBroker::start().await;
    let mut client = Client::connect(broker.server()).await;
    let id = create_topic(&mut client, "t", 1).await;
    produce(&mut client, "t", 0, batch(&[b"x", b"y", b"z"])).await;

    // OFFSET_OUT_OF_RANGE past the log end and before the log start, with -1 offsets as Kafka sends.
    for offset in [4, 1000, -5] {
        let response = client
            .send(12, fetch_request(12, ("t", id), &[(0, offset)]))
            .await;
        let p = partition(&response, 0);
        assert_eq!(p.error_code, OFFSET_OUT_OF_RANGE, "offset {offset}");
        assert_eq!(
            (p.high_watermark, p.last_stable_offset, p.log_start_offset),
            (-1, -1, -1)
        );
        assert_eq!(p.records, Some(Bytes::new()));
    }
    // Fetching at the log end is no error: nothing yet.
    let response = client
        .send(12, fetch_request(12, ("t", id), &[(0, 3)]))
        .await;
    let p = partition(&response, 0);
    assert_eq!((p.error_code, p.high_watermark), (NONE, 3));
    assert_eq!(p.records, Some(Bytes::new()));

    // Unknown partition and unknown topic by name (v12), unknown topic id (v13).
    let response = client
        .send(12, fetch_request(12, ("t", id), &[(7, 0)]))
        .await;
    assert_eq!(
        partition(&response, 7).error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    let response = client
        .send(12, fetch_request(12, ("nope", id), &[(0, 0)]))
        .await;
    assert_eq!(
        partition(&response, 0).error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    let unknown_id = Uuid::from_u128(0xfeed);
    let response = client
        .send(13, fetch_request(13, ("", unknown_id), &[(0, 0)]))
        .await;
    assert_eq!(response.responses[0].topic_id, unknown_id);
    assert_eq!(partition(&response, 0).error_code, UNKNOWN_TOPIC_ID);

    // current_leader_epoch newer than the partition's: UNKNOWN_LEADER_EPOCH (KIP-320).
    let mut request = fetch_request(12, ("t", id), &[(0, 0)]);
    request.topics[0].partitions[0].current_leader_epoch = 99;
    let response = client.send(12, request).await;
    assert_eq!(partition(&response, 0).error_code, UNKNOWN_LEADER_EPOCH);

    // A follower fetch is answered as Kafka answers a fetcher outside the replica set.
    let response = client
        .send(
            12,
            fetch_request(12, ("t", id), &[(0, 0)]).with_replica_id(BrokerId(5)),
        )
        .await;
    assert_eq!(partition(&response, 0).error_code, NOT_LEADER_OR_FOLLOWER);
    // From v15 the replica id travels in replica_state; with a leader epoch the answer is UNKNOWN_LEADER_EPOCH.
    let mut request = fetch_request(15, ("t", id), &[(0, 0)])
        .with_replica_state(fetch_request::ReplicaState::default().with_replica_id(BrokerId(5)));
    request.topics[0].partitions[0].current_leader_epoch = 0;
    let response = client.send(15, request).await;
    assert_eq!(partition(&response, 0).error_code, UNKNOWN_LEADER_EPOCH);
    broker.shutdown().await;
}

#[tokio::test]
async fn long_poll_wakes_on_produce() {
    let mut broker = TestBroker::start().await;
    let mut consumer = Client::connect(broker.server()).await;
    let mut producer = Client::connect(broker.server()).await;
    let id = create_topic(&mut consumer, "live", 1).await;

    let request = fetch_request(12, ("live", id), &[(0, 0)])
        .with_max_wait_ms(20_000)
        .with_min_bytes(1);
    let started = Instant::now();
    let fetch = tokio::spawn(async move {
        let response = consumer.send(12, request).await;
        (response, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fetch.is_finished(),
        "an empty fetch with max_wait 20 s must wait"
    );
    assert_eq!(broker.broker().fetch_purgatory.parked(), 1);
    produce(&mut producer, "live", 0, batch(&[b"wake"])).await;
    let (response, waited) = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .expect("the fetch answered well before max_wait")
        .expect("fetch task");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(values(partition(&response, 0)), vec![b"wake".to_vec()]);
    assert_eq!(broker.broker().fetch_purgatory.parked(), 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn min_bytes_and_max_wait() {
    let mut broker = TestBroker::start().await;
    let mut client = Client::connect(broker.server()).await;
    let id = create_topic(&mut client, "mb", 1).await;
    produce(&mut client, "mb", 0, batch(&[b"small"])).await;

    // Data available and min_bytes 1: at once.
    let started = Instant::now();
    let response = client
        .send(
            12,
            fetch_request(12, ("mb", id), &[(0, 0)]).with_max_wait_ms(5000),
        )
        .await;
    assert!(started.elapsed() < Duration::from_millis(2000));
    assert_eq!(values(partition(&response, 0)).len(), 1);

    // Fewer bytes than min_bytes: waits for max_wait, then answers with what there is.
    let started = Instant::now();
    let request = fetch_request(12, ("mb", id), &[(0, 0)])
        .with_max_wait_ms(400)
        .with_min_bytes(1 << 20);
    let response = client.send(12, request).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(390), "{waited:?}");
    assert!(waited < Duration::from_millis(5000), "{waited:?}");
    assert_eq!(values(partition(&response, 0)).len(), 1);

    // Nothing new and max_wait 0: at once, empty.
    let started = Instant::now();
    let response = client
        .send(
            12,
            fetch_request(12, ("mb", id), &[(0, 1)]).with_max_wait_ms(0),
        )
        .await;
    assert!(started.elapsed() < Duration::from_millis(2000));
    assert_eq!(partition(&response, 0).records, Some(Bytes::new()));

    // A partition error ends the wait at once.
    let started = Instant::now();
    let response = client
        .send(
            12,
            fetch_request(12, ("mb", id), &[(0, 99)]).with_max_wait_ms(5000),
        )
        .await;
    assert!(started.elapsed() < Duration::from_millis(2000));
    assert_eq!(partition(&response, 0).error_code, OFFSET_OUT_OF_RANGE);
    broker.shutdown().await;
}

#[tokio::test]
async fn kip74_oversize_batches_and_byte_limits() {
    let mut broker = TestBroker::start().await;
    let mut client = Client::connect(broker.server()).await;
    let id = create_topic(&mut client, "big", 2).await;
    let big = vec![7u8; 100_000];
    produce(&mut client, "big", 0, batch(&[&big])).await;
    produce(&mut client, "big", 1, batch(&[&big])).await;

    // Limits far below one batch: the first partition with data still gets its whole batch, the next one
    // nothing (and no error), since the response budget is spent.
    let mut request = fetch_request(12, ("big", id), &[(0, 0), (1, 0)]).with_max_bytes(1000);
    for p in &mut request.topics[0].partitions {
        p.partition_max_bytes = 1000;
    }
    let response = client.send(12, request).await;
    let p0 = partition(&response, 0);
    assert_eq!(values(p0), vec![big.clone()]);
    let p1 = partition(&response, 1);
    assert_eq!((p1.error_code, p1.high_watermark), (NONE, 1));
    assert_eq!(p1.records, Some(Bytes::new()));

    // The first partition *with data* gets the oversize batch, even when it is not the first partition.
    let mut request = fetch_request(12, ("big", id), &[(0, 1), (1, 0)]).with_max_bytes(1000);
    for p in &mut request.topics[0].partitions {
        p.partition_max_bytes = 1000;
    }
    let response = client.send(12, request).await;
    assert_eq!(partition(&response, 0).records, Some(Bytes::new()));
    assert_eq!(values(partition(&response, 1)), vec![big.clone()]);

    // partition_max_bytes keeps whole batches only: three small batches, a limit that fits two.
    let small = batch(&[b"0123456789"]);
    let small_len = i32::try_from(small.len()).expect("len");
    for _ in 0..3 {
        produce(&mut client, "big", 1, small.clone()).await;
    }
    let mut request = fetch_request(12, ("big", id), &[(1, 1)]);
    request.topics[0].partitions[0].partition_max_bytes = 2 * small_len + 5;
    let response = client.send(12, request).await;
    let p1 = partition(&response, 1);
    assert_eq!(p1.records.as_ref().map(Bytes::len), Some(2 * small.len()));
    assert_eq!(values(p1).len(), 2);
    broker.shutdown().await;
}

fn session_fetch(
    session_id: i32,
    epoch: i32,
    topic: Uuid,
    partitions: &[(i32, i64)],
) -> FetchRequest {
    let topics = if partitions.is_empty() {
        vec![]
    } else {
        vec![FetchTopic::default().with_topic_id(topic).with_partitions(
            partitions
                .iter()
                .map(|&(p, o)| fetch_partition(p, o, 1 << 20))
                .collect(),
        )]
    };
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
}

#[tokio::test]
async fn fetch_sessions_full_incremental_forgotten() {
    let mut broker = TestBroker::start().await;
    let mut client = Client::connect(broker.server()).await;
    let id = create_topic(&mut client, "s", 3).await;
    produce(&mut client, "s", 0, batch(&[b"p0"])).await;

    // Full fetch, epoch 0: a new session; every partition answered.
    let response = client
        .send(13, session_fetch(0, 0, id, &[(0, 0), (1, 0), (2, 0)]))
        .await;
    assert_eq!(response.error_code, NONE);
    let session = response.session_id;
    assert!(session > 0, "a session was created");
    assert_eq!(partitions(&response).len(), 3);
    assert_eq!(values(partition(&response, 0)), vec![b"p0".to_vec()]);

    // Incremental, epoch 1, advancing p0's offset: nothing changed, nothing sent.
    let response = client
        .send(13, session_fetch(session, 1, id, &[(0, 1)]))
        .await;
    assert_eq!((response.error_code, response.session_id), (NONE, session));
    assert!(partitions(&response).is_empty(), "{response:?}");

    // New data on p2: only p2 is sent, at its cached offset 0.
    produce(&mut client, "s", 2, batch(&[b"p2"])).await;
    let response = client.send(13, session_fetch(session, 2, id, &[])).await;
    let sent = partitions(&response);
    assert_eq!(sent.len(), 1, "{response:?}");
    assert_eq!(sent[0].partition_index, 2);
    assert_eq!(values(sent[0]), vec![b"p2".to_vec()]);

    // Forget p2 and p1; new data on p2 is no longer sent, new data on p0 is.
    let mut request = session_fetch(session, 3, id, &[(2, 1)]);
    request.topics.clear();
    request.forgotten_topics_data = vec![ForgottenTopic::default()
        .with_topic_id(id)
        .with_partitions(vec![1, 2])];
    let response = client.send(13, request).await;
    assert!(partitions(&response).is_empty(), "{response:?}");
    produce(&mut client, "s", 2, batch(&[b"p2-again"])).await;
    produce(&mut client, "s", 0, batch(&[b"p0-again"])).await;
    let response = client.send(13, session_fetch(session, 4, id, &[])).await;
    let sent = partitions(&response);
    assert_eq!(sent.len(), 1, "{response:?}");
    assert_eq!(sent[0].partition_index, 0);
    assert_eq!(values(sent[0]), vec![b"p0-again".to_vec()]);

    // A replayed epoch and an unknown session id are session errors with no partitions.
    let response = client.send(13, session_fetch(session, 4, id, &[])).await;
    assert_eq!(
        (response.error_code, response.session_id),
        (INVALID_FETCH_SESSION_EPOCH, 0)
    );
    assert!(response.responses.is_empty());
    let response = client
        .send(13, session_fetch(session.wrapping_add(1), 1, id, &[]))
        .await;
    assert_eq!(response.error_code, FETCH_SESSION_ID_NOT_FOUND);
    // A v12 request cannot continue a session opened with topic ids (v13+).
    let response = client.send(12, session_fetch(session, 5, id, &[])).await;
    assert_eq!(response.error_code, FETCH_SESSION_TOPIC_ID_ERROR);
    // The session survived the errors.
    let response = client.send(13, session_fetch(session, 5, id, &[])).await;
    assert_eq!((response.error_code, response.session_id), (NONE, session));

    // Epoch -1 closes the session: a sessionless full answer, and the id is gone.
    let response = client
        .send(13, session_fetch(session, -1, id, &[(0, 0)]))
        .await;
    assert_eq!((response.error_code, response.session_id), (NONE, 0));
    assert_eq!(partitions(&response).len(), 1);
    let response = client.send(13, session_fetch(session, 6, id, &[])).await;
    assert_eq!(response.error_code, FETCH_SESSION_ID_NOT_FOUND);
    broker.shutdown().await;
}

#[tokio::test]
async fn an_incremental_long_poll_wakes_on_produce_to_a_cached_partition() {
    let mut broker = TestBroker::start().await;
    let mut consumer = Client::connect(broker.server()).await;
    let mut producer = Client::connect(broker.server()).await;
    let id = create_topic(&mut consumer, "sl", 2).await;
    let response = consumer
        .send(16, session_fetch(0, 0, id, &[(0, 0), (1, 0)]))
        .await;
    let session = response.session_id;
    assert!(session > 0);

    // The incremental request names no partition; the session's partitions are watched.
    let request = session_fetch(session, 1, id, &[]).with_max_wait_ms(20_000);
    let fetch = tokio::spawn(async move { consumer.send(16, request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fetch.is_finished());
    produce(&mut producer, "sl", 1, batch(&[b"late"])).await;
    let response = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .expect("woken by the produce")
        .expect("fetch task");
    let sent = partitions(&response);
    assert_eq!(sent.len(), 1, "{response:?}");
    assert_eq!(values(sent[0]), vec![b"late".to_vec()]);
    broker.shutdown().await;
}
