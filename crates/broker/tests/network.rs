//! Connection handling end to end: a long-poll fetch of a peer that closed is released at once (not after its
//! `max_wait_ms`), and large Fetch responses written with vectored writes arrive whole and in request order, also
//! to a slow reader.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
mod common;

use common::{create_topic, frame, read_response};
use sluice_testkit::{BatchBuilder, TestBroker};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// One batch of `count` records whose values are `size` bytes derived from `seed`, timestamped now.
fn batch(count: usize, size: usize, seed: u8) -> Bytes {
    BatchBuilder::new()
        .now()
        .values((0..count).map(|i| value(size, seed, i)))
        .build_bytes()
}

fn value(size: usize, seed: u8, index: usize) -> Bytes {
    (0..size)
        .map(|j| (j as u8).wrapping_add(seed).wrapping_add(index as u8))
        .collect::<Vec<u8>>()
        .into()
}

fn fetch(topic: &str, partitions: &[i32], max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(8 << 20)
                            .with_log_start_offset(-1)
                            .with_current_leader_epoch(-1)
                    })
                    .collect(),
            )])
}

async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_closed_peer_releases_its_parked_fetch_at_once() {
    let mut broker = TestBroker::start().await;
    let purgatory = || broker.broker().fetch_purgatory.parked();
    let mut stream = TcpStream::connect(broker.addr()).await.expect("connect");
    create_topic(&mut stream, "quiet", 1).await;

    // A fetch of an empty partition that would wait 30 s, and an ApiVersions pipelined behind it.
    stream
        .write_all(&frame(11, 2, &fetch("quiet", &[0], 30_000)))
        .await
        .expect("write");
    stream
        .write_all(&frame(3, 3, &ApiVersionsRequest::default()))
        .await
        .expect("write");
    wait_until("the fetch parks", Duration::from_secs(5), || {
        purgatory() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(purgatory(), 1, "still waiting: nothing was produced");

    drop(stream);
    let closed_at = Instant::now();
    wait_until(
        "the parked fetch is released",
        Duration::from_secs(2),
        || purgatory() == 0,
    )
    .await;
    assert!(closed_at.elapsed() < Duration::from_secs(2));

    // The broker keeps serving: another connection's long poll still waits and is woken by a produce.
    let mut other = TcpStream::connect(broker.addr()).await.expect("connect");
    other
        .write_all(&frame(11, 4, &fetch("quiet", &[0], 30_000)))
        .await
        .expect("write");
    wait_until("the second fetch parks", Duration::from_secs(5), || {
        purgatory() == 1
    })
    .await;
    let mut producer = TcpStream::connect(broker.addr()).await.expect("connect");
    let produce = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("quiet")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(3, 10, 1)))])]);
    producer
        .write_all(&frame(9, 5, &produce))
        .await
        .expect("write");
    let _: ProduceResponse = read_response(&mut producer, 9, 5).await;
    let response: FetchResponse = read_response(&mut other, 11, 4).await;
    let mut records = response.responses[0].partitions[0]
        .records
        .clone()
        .expect("records");
    let batches = RecordBatchDecoder::decode_all(&mut records).expect("decode");
    assert_eq!(batches.iter().map(|b| b.records.len()).sum::<usize>(), 3);
    assert_eq!(purgatory(), 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn large_fetch_responses_arrive_whole_and_in_order_to_a_slow_reader() {
    let mut broker = TestBroker::start().await;
    let mut stream = TcpStream::connect(broker.addr()).await.expect("connect");
    create_topic(&mut stream, "big", 4).await;
    // Each partition: a few batches of 1 KiB records, about 600 KiB in all.
    let mut produced: Vec<Vec<Bytes>> = vec![Vec::new(); 4];
    let mut correlation_id = 10;
    for partition in 0..4i32 {
        for b in 0..6u8 {
            let seed = (partition as u8).wrapping_mul(16).wrapping_add(b);
            let records = batch(100, 1024, seed);
            let produce = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("big")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records))])]);
            correlation_id += 1;
            stream
                .write_all(&frame(9, correlation_id, &produce))
                .await
                .expect("write");
            let response: ProduceResponse = read_response(&mut stream, 9, correlation_id).await;
            assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
            produced[partition as usize].extend((0..100).map(|i| value(1024, seed, i)));
        }
    }

    // Pipeline fetches (flexible and not) and a Metadata between them, then read slowly: the broker's writes are
    // partial and must resume where they stopped.
    let versions = [11i16, 12, 4, 16];
    let mut pipelined = BytesMut::new();
    for (i, &version) in versions.iter().enumerate() {
        let mut request = fetch("big", &[0, 1, 2, 3], 0);
        if version >= 13 {
            let id = broker
                .broker()
                .replicas
                .image()
                .topic("big")
                .expect("topic")
                .id;
            request.topics[0].topic_id = id;
            request.topics[0].topic = TopicName::default();
        }
        pipelined.extend_from_slice(&frame(version, 100 + i as i32 * 2, &request));
        pipelined.extend_from_slice(&frame(
            12,
            101 + i as i32 * 2,
            &MetadataRequest::default().with_topics(None),
        ));
    }
    stream.write_all(&pipelined).await.expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, &version) in versions.iter().enumerate() {
        let response: FetchResponse = read_response(&mut stream, version, 100 + i as i32 * 2).await;
        let partitions: Vec<_> = response
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .collect();
        assert_eq!(partitions.len(), 4, "v{version}");
        for p in partitions {
            let mut records = p.records.clone().expect("records");
            let values: Vec<Bytes> = RecordBatchDecoder::decode_all(&mut records)
                .expect("decode")
                .into_iter()
                .flat_map(|set| set.records.into_iter())
                .map(|r| r.value.unwrap_or_default())
                .collect();
            assert_eq!(
                values, produced[p.partition_index as usize],
                "v{version} partition {}",
                p.partition_index
            );
        }
        let _: MetadataResponse = read_response(&mut stream, 12, 101 + i as i32 * 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn requests_read_before_the_close_still_take_effect() {
    let mut broker = TestBroker::start().await;
    let purgatory = || broker.broker().fetch_purgatory.parked();
    let log_end = || {
        broker
            .broker()
            .replicas
            .partitions()
            .iter()
            .find(|p| p.topic == "late")
            .map_or(-1, |p| p.log.log_end_offset())
    };
    let mut stream = TcpStream::connect(broker.addr()).await.expect("connect");
    create_topic(&mut stream, "late", 1).await;
    // A long poll on another (empty) topic, then an acks=0 produce behind it, then the client closes: the fetch
    // is dropped without an answer, the produce (already read, no answer expected) is still appended.
    create_topic(&mut stream, "idle", 1).await;
    stream
        .write_all(&frame(11, 2, &fetch("idle", &[0], 30_000)))
        .await
        .expect("write");
    let produce = ProduceRequest::default()
        .with_acks(0)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("late")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(4, 10, 2)))])]);
    stream
        .write_all(&frame(9, 3, &produce))
        .await
        .expect("write");
    wait_until("the fetch parks", Duration::from_secs(5), || {
        purgatory() == 1
    })
    .await;
    assert_eq!(log_end(), 0, "the produce waits behind the fetch");
    drop(stream);
    wait_until("the fetch is released", Duration::from_secs(2), || {
        purgatory() == 0
    })
    .await;
    wait_until("the produce lands", Duration::from_secs(2), || {
        log_end() == 4
    })
    .await;
    broker.shutdown().await;
}
