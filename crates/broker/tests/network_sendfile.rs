//! Fetch records written with `sendfile` on plaintext connections: the records a client receives are the log's
//! bytes exactly (large and small partitions, from the middle of a batch run), and a segment file that ends inside
//! a range being sent (truncated meanwhile) closes the connection instead of sending a short frame, with the broker
//! still serving others.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
mod common;

use common::{call, create_topic, frame};
use sluice_testkit::{BatchBuilder, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One batch of `count` records with `size`-byte values derived from `seed`, timestamped now.
fn batch(count: usize, size: usize, seed: u8) -> Bytes {
    BatchBuilder::new()
        .now()
        .values((0..count).map(|i| {
            (0..size)
                .map(|j| (j as u8).wrapping_add(seed).wrapping_add(i as u8))
                .collect::<Vec<u8>>()
        }))
        .build_bytes()
}

async fn produce(stream: &mut TcpStream, topic: &str, partition: i32, records: Bytes, id: i32) {
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let response: ProduceResponse = call(stream, 9, id, &request).await;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
}

/// A Fetch of `topic` (v11, by name) for `(partition, fetch offset)` pairs.
fn fetch(topic: &str, partitions: &[(i32, i64)], partition_max_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(i32::MAX)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(p, offset)| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(partition_max_bytes)
                            .with_log_start_offset(-1)
                            .with_current_leader_epoch(-1)
                    })
                    .collect(),
            )])
}

#[tokio::test]
async fn fetched_records_are_the_logs_bytes() {
    let mut broker = TestBroker::start().await;
    let mut stream = TcpStream::connect(broker.addr()).await.expect("connect");
    create_topic(&mut stream, "t", 3).await;
    // Partition 0: large batches (file ranges); 1: tiny batches (read into memory); 2: empty.
    let mut id = 10;
    for b in 0..5u8 {
        id += 1;
        produce(&mut stream, "t", 0, batch(50, 700, b), id).await;
        id += 1;
        produce(&mut stream, "t", 1, batch(1, 10, b), id).await;
    }
    let state = broker.broker();
    let log_of = |p: i32| state.logs.get("t", p).expect("log");
    for offset in [0i64, 49, 50, 120, 249] {
        for partition_max_bytes in [1, 40_000, 8 << 20] {
            id += 1;
            let request = fetch(
                "t",
                &[(0, offset), (1, offset.min(4)), (2, 0)],
                partition_max_bytes,
            );
            let response: FetchResponse = call(&mut stream, 11, id, &request).await;
            let partitions = &response.responses[0].partitions;
            assert_eq!(partitions.len(), 3);
            // The response's byte budget is shared in order: compute what each partition may return as the
            // broker does (KIP-74: the first partition with data may exceed the limit by one batch).
            let mut min_one_batch = true;
            for p in partitions {
                assert_eq!(p.error_code, 0);
                let fetch_offset = match p.partition_index {
                    0 => offset,
                    1 => offset.min(4),
                    _ => 0,
                };
                let log = log_of(p.partition_index);
                let expected = log
                    .read(
                        fetch_offset,
                        partition_max_bytes as usize,
                        log.high_watermark(),
                    )
                    .expect("read")
                    .data;
                let expected = if !min_one_batch && expected.len() > partition_max_bytes as usize {
                    Bytes::new()
                } else {
                    expected
                };
                let got = p.records.clone().expect("records");
                assert_eq!(
                    got, expected,
                    "partition {} offset {fetch_offset} max {partition_max_bytes}",
                    p.partition_index
                );
                if !got.is_empty() {
                    min_one_batch = false;
                }
            }
        }
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_segment_truncated_under_a_send_closes_the_connection_without_a_short_frame() {
    let mut broker = TestBroker::start().await;
    let mut stream = TcpStream::connect(broker.addr()).await.expect("connect");
    create_topic(&mut stream, "trunc", 1).await;
    // About 20 MiB in one segment: far more than the sockets buffer with a small receive buffer.
    for b in 0..24u8 {
        produce(
            &mut stream,
            "trunc",
            0,
            batch(850, 1024, b),
            10 + i32::from(b),
        )
        .await;
    }
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("rcvbuf");
    let mut slow = socket.connect(broker.addr()).await.expect("connect");
    slow.write_all(&frame(11, 7, &fetch("trunc", &[(0, 0)], 60 << 20)))
        .await
        .expect("write");
    // Let the broker fill the socket buffers, then cut the segment under the pending send.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let segment = broker
        .dir()
        .join("trunc-0")
        .join("00000000000000000000.log");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open segment")
        .set_len(1 << 20)
        .expect("truncate");
    let declared = slow.read_i32().await.expect("size") as usize;
    assert!(
        declared > 20 << 20,
        "the response declared every byte: {declared}"
    );
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection is closed, not left hanging");
    assert!(
        received < declared,
        "a short frame is never completed: {received} of {declared} bytes"
    );
    // The broker serves other connections.
    let mut other = TcpStream::connect(broker.addr()).await.expect("connect");
    let response: MetadataResponse = call(
        &mut other,
        12,
        99,
        &MetadataRequest::default().with_topics(None),
    )
    .await;
    assert!(!response.topics.is_empty());
    broker.shutdown().await;
}
