//! The broker served in-process on a free loopback port, driven over TCP with hand-encoded requests:
//! ApiVersions (and its UNSUPPORTED_VERSION fallback, KIP-511), Metadata with auto-creation, Produce with
//! acks 0/1/-1, ListOffsets, DeleteRecords, OffsetForLeaderEpoch, in-order pipelining, and bad input that must
//! close the connection while the server keeps serving others.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, DeleteRecordsRequest,
    DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use sluice_testkit::rng::{seed_from_env, Rng};
use sluice_testkit::{BatchBuilder, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Encodes a request frame (size, header, body).
fn frame<R: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sluice-test")));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, R::header_version(version)).unwrap();
    body.encode(&mut buf, version).unwrap();
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.freeze()
}

async fn read_frame(stream: &mut TcpStream) -> Option<Bytes> {
    let size = tokio::time::timeout(TIMEOUT, stream.read_i32())
        .await
        .expect("response in time")
        .ok()?;
    let mut body = vec![0u8; size as usize];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut body))
        .await
        .expect("response in time")
        .ok()?;
    Some(Bytes::from(body))
}

/// Sends one request and decodes its response; checks the correlation id.
async fn call<Req, Resp>(stream: &mut TcpStream, key: ApiKey, version: i16, body: &Req) -> Resp
where
    Req: Encodable + HeaderVersion,
    Resp: Decodable + HeaderVersion,
{
    stream
        .write_all(&frame(key, version, 7, body))
        .await
        .unwrap();
    let mut response = read_frame(stream).await.expect("a response");
    let header = ResponseHeader::decode(&mut response, Resp::header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    let decoded = Resp::decode(&mut response, version).unwrap();
    assert_eq!(
        response.remaining(),
        0,
        "{key:?} v{version}: trailing bytes in response"
    );
    decoded
}

/// True when the server closed the connection (EOF or reset) without answering.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(TIMEOUT, stream.read(&mut byte))
            .await
            .expect("close in time"),
        Ok(0) | Err(_)
    )
}

fn metadata_request(topics: &[&str], auto_create: bool) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))
                })
                .collect(),
        ))
        .with_allow_auto_topic_creation(auto_create)
}

fn produce_request(topic: &str, acks: i16, records: usize) -> ProduceRequest {
    let batch = (0..records)
        .fold(
            BatchBuilder::new().timestamp_ms(1_700_000_000_000),
            |b, i| b.key_value("key", format!("value-{i}")),
        )
        .build_bytes();
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])])
}

fn list_offsets_request(topic: &str, timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)
                .with_current_leader_epoch(-1)])])
}

#[tokio::test]
async fn api_versions_every_version_and_fallback() {
    let mut broker = TestBroker::start().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    for version in 0..=4 {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-test"))
            .with_client_software_version(StrBytes::from_static_str("1.0"));
        let response: ApiVersionsResponse =
            call(&mut s, ApiKey::ApiVersions, version, &request).await;
        assert_eq!(response.error_code, 0, "v{version}");
        let range = |key: ApiKey| {
            response
                .api_keys
                .iter()
                .find(|k| k.api_key == key as i16)
                .map(|k| (k.min_version, k.max_version))
        };
        assert_eq!(range(ApiKey::ApiVersions), Some((0, 4)));
        assert_eq!(range(ApiKey::Metadata), Some((0, 12)));
        assert_eq!(range(ApiKey::Produce), Some((3, 11)));
        assert_eq!(range(ApiKey::ListOffsets), Some((1, 8)));
        assert_eq!(range(ApiKey::DeleteRecords), Some((0, 2)));
        assert_eq!(range(ApiKey::OffsetForLeaderEpoch), Some((2, 4)));
        assert_eq!(range(ApiKey::InitProducerId), Some((0, 4)));
        assert_eq!(range(ApiKey::AddPartitionsToTxn), Some((0, 4)));
        assert_eq!(range(ApiKey::EndTxn), Some((0, 4)));
        // Never advertise what is not implemented.
        assert_eq!(range(ApiKey::DescribeAcls), None);
    }
    // ApiVersions v9 (unknown to us): a v0-format UNSUPPORTED_VERSION answer with ApiVersions' range (KIP-511).
    let mut raw = BytesMut::new();
    raw.put_i32(10);
    raw.put_i16(ApiKey::ApiVersions as i16);
    raw.put_i16(9);
    raw.put_i32(42);
    raw.put_i16(-1); // null client id
    s.write_all(&raw).await.unwrap();
    let mut response = read_frame(&mut s).await.unwrap();
    assert_eq!(response.get_i32(), 42);
    let decoded = ApiVersionsResponse::decode(&mut response, 0).unwrap();
    assert_eq!(decoded.error_code, 35);
    assert_eq!(decoded.api_keys.len(), 1);
    assert_eq!(
        (decoded.api_keys[0].api_key, decoded.api_keys[0].max_version),
        (ApiKey::ApiVersions as i16, 4)
    );
    // The connection stays usable.
    let _: ApiVersionsResponse = call(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("x"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    )
    .await;
    broker.shutdown().await;
}

#[tokio::test]
async fn metadata_auto_creates_and_rejects_invalid_names() {
    let mut broker = TestBroker::start().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    for version in 0i16..=12 {
        let topic = format!("auto-{version}");
        let response: MetadataResponse = call(
            &mut s,
            ApiKey::Metadata,
            version,
            &metadata_request(&[&topic, "bad/name"], true),
        )
        .await;
        assert_eq!(response.brokers.len(), 1, "v{version}");
        assert_eq!(response.brokers[0].port, i32::from(broker.addr().port()));
        let t = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic.as_str()))
            .unwrap();
        assert_eq!(t.error_code, 0, "v{version}");
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.partitions[0].leader_id, BrokerId(0));
        if version >= 10 {
            assert!(!t.topic_id.is_nil());
        }
        if version >= 2 {
            assert!(response.cluster_id.is_some());
        }
        let bad = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("bad/name"))
            .unwrap();
        assert_eq!(bad.error_code, 17, "INVALID_TOPIC_EXCEPTION");
    }
    // Auto-creation not allowed: UNKNOWN_TOPIC_OR_PARTITION.
    let response: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["not-created"], false),
    )
    .await;
    assert_eq!(response.topics[0].error_code, 3);
    // Every topic (null list).
    let response: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    )
    .await;
    assert_eq!(
        response.topics.len(),
        13,
        "one auto-created topic per version"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn produce_then_list_offsets_delete_records_and_epochs() {
    let mut broker = TestBroker::start().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["orders"], true),
    )
    .await;
    let mut expected_base = 0;
    for (version, acks) in [(3i16, 1i16), (7, -1), (9, 1), (11, -1)] {
        let response: ProduceResponse = call(
            &mut s,
            ApiKey::Produce,
            version,
            &produce_request("orders", acks, 5),
        )
        .await;
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "v{version}");
        assert_eq!(p.base_offset, expected_base, "v{version}");
        assert_eq!(p.log_append_time_ms, -1, "CreateTime");
        if version >= 5 {
            assert_eq!(p.log_start_offset, 0);
        }
        expected_base += 5;
    }
    // acks=0: no response at all; the next request's response is the next frame.
    s.write_all(&frame(
        ApiKey::Produce,
        9,
        99,
        &produce_request("orders", 0, 5),
    ))
    .await
    .unwrap();
    let latest: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        8,
        &list_offsets_request("orders", -1),
    )
    .await;
    assert_eq!(latest.topics[0].partitions[0].offset, 25);
    let earliest: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        1,
        &list_offsets_request("orders", -2),
    )
    .await;
    assert_eq!(earliest.topics[0].partitions[0].offset, 0);
    let by_time: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        5,
        &list_offsets_request("orders", 1_600_000_000_000),
    )
    .await;
    assert_eq!(by_time.topics[0].partitions[0].offset, 0);
    let future: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        5,
        &list_offsets_request("orders", 1_800_000_000_000),
    )
    .await;
    assert_eq!(
        future.topics[0].partitions[0].offset, -1,
        "no record at or after a future timestamp"
    );
    let max_ts: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        7,
        &list_offsets_request("orders", -3),
    )
    .await;
    assert_eq!(max_ts.topics[0].partitions[0].timestamp, 1_700_000_000_000);
    let unknown: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        8,
        &list_offsets_request("nope", -1),
    )
    .await;
    assert_eq!(unknown.topics[0].partitions[0].error_code, 3);

    // Produce to an unknown topic and with a corrupt batch.
    let response: ProduceResponse = call(
        &mut s,
        ApiKey::Produce,
        9,
        &produce_request("missing", 1, 1),
    )
    .await;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 3);
    let mut corrupt = produce_request("orders", 1, 3);
    let records = corrupt.topic_data[0].partition_data[0]
        .records
        .take()
        .unwrap();
    let mut bytes = records.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // breaks the CRC
    corrupt.topic_data[0].partition_data[0].records = Some(Bytes::from(bytes));
    let response: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &corrupt).await;
    assert_eq!(
        response.responses[0].partition_responses[0].error_code, 2,
        "CORRUPT_MESSAGE"
    );

    // DeleteRecords up to offset 10, then beyond the high watermark.
    let delete = |offset: i64| {
        DeleteRecordsRequest::default()
            .with_timeout_ms(1000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(offset)])])
    };
    let response: DeleteRecordsResponse = call(&mut s, ApiKey::DeleteRecords, 2, &delete(10)).await;
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    assert_eq!(response.topics[0].partitions[0].low_watermark, 10);
    let response: DeleteRecordsResponse =
        call(&mut s, ApiKey::DeleteRecords, 0, &delete(1000)).await;
    assert_eq!(
        response.topics[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );
    let earliest: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        8,
        &list_offsets_request("orders", -2),
    )
    .await;
    assert_eq!(earliest.topics[0].partitions[0].offset, 10);

    // OffsetForLeaderEpoch: epoch 0 is the current epoch, so its end offset is the log end offset.
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("orders")))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_leader_epoch(0)
                .with_current_leader_epoch(-1)])]);
    let response: OffsetForLeaderEpochResponse =
        call(&mut s, ApiKey::OffsetForLeaderEpoch, 4, &request).await;
    let p = &response.topics[0].partitions[0];
    assert_eq!((p.error_code, p.leader_epoch, p.end_offset), (0, 0, 25));
    broker.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let mut broker = TestBroker::start().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["pipe"], true),
    )
    .await;
    let mut all = BytesMut::new();
    for i in 0..50 {
        if i % 2 == 0 {
            all.extend_from_slice(&frame(
                ApiKey::Produce,
                9,
                i,
                &produce_request("pipe", 1, 2),
            ));
        } else {
            all.extend_from_slice(&frame(
                ApiKey::ApiVersions,
                3,
                i,
                &ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("x"))
                    .with_client_software_version(StrBytes::from_static_str("1")),
            ));
        }
    }
    s.write_all(&all).await.unwrap();
    let mut next_base = 0;
    for i in 0..50 {
        let mut response = read_frame(&mut s).await.unwrap();
        if i % 2 == 0 {
            let header = ResponseHeader::decode(&mut response, 1).unwrap();
            assert_eq!(header.correlation_id, i);
            let produce = ProduceResponse::decode(&mut response, 9).unwrap();
            assert_eq!(
                produce.responses[0].partition_responses[0].base_offset, next_base,
                "appends keep request order"
            );
            next_base += 2;
        } else {
            assert_eq!(response.get_i32(), i);
        }
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_input_closes_the_connection_and_the_server_keeps_serving() {
    let mut broker = TestBroker::start().await;
    let addr = broker.addr();
    let api_versions = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("x"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        ("zero length", 0i32.to_be_bytes().to_vec()),
        (
            "oversized length",
            (200 * 1024 * 1024i32).to_be_bytes().to_vec(),
        ),
        (
            "frame shorter than a header",
            [&3i32.to_be_bytes()[..], &[0, 18, 0]].concat(),
        ),
        (
            "unknown api key",
            [
                &12i32.to_be_bytes()[..],
                &[0x27, 0x0f, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0],
            ]
            .concat(),
        ),
        (
            "api not served (SaslHandshake)",
            frame(
                ApiKey::SaslHandshake,
                1,
                1,
                &kafka_protocol::messages::SaslHandshakeRequest::default(),
            )
            .to_vec(),
        ),
        ("unsupported Produce version", {
            // A Produce v3 frame relabelled v2 (below our range; kafka-protocol cannot even encode v2).
            let mut f = frame(ApiKey::Produce, 3, 1, &ProduceRequest::default()).to_vec();
            f[6..8].copy_from_slice(&2i16.to_be_bytes());
            f
        }),
        (
            "Produce v12 (decodable, not advertised)",
            frame(ApiKey::Produce, 12, 1, &ProduceRequest::default()).to_vec(),
        ),
        // A Metadata v12 request whose topic array claims 2^31-1 entries in a few bytes (the decoder hazard).
        ("huge array count", {
            let mut f = BytesMut::new();
            f.put_i32(0);
            f.put_i16(3);
            f.put_i16(12);
            f.put_i32(1);
            f.put_i16(-1);
            f.put_u8(0); // header tagged fields
            f.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]); // compact array length varint
            let n = (f.len() - 4) as i32;
            f[..4].copy_from_slice(&n.to_be_bytes());
            f.to_vec()
        }),
    ];
    let mut garbage = vec![0u8; 64];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    garbage[..4].copy_from_slice(&60i32.to_be_bytes());
    garbage[4..8].copy_from_slice(&[0, 3, 0, 12]); // Metadata v12, then garbage
    cases.push(("garbage body", garbage));
    assert!(
        sluice_broker::apis::supported_versions(ApiKey::SaslHandshake).is_none(),
        "this test needs an API the broker does not serve; pick another"
    );
    for (name, bytes) in cases {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        assert!(closed(&mut s).await, "{name}: connection should be closed");
        // The server still serves a fresh connection.
        let mut ok = TcpStream::connect(addr).await.unwrap();
        let response: ApiVersionsResponse =
            call(&mut ok, ApiKey::ApiVersions, 3, &api_versions).await;
        assert_eq!(response.error_code, 0, "after {name}");
    }
    // A truncated frame followed by EOF from the client.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 0, 0, 100, 0, 18]).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(closed(&mut s).await);
    assert_eq!(
        broker.broker().handler_panics(),
        0,
        "bad input must close the connection, never panic a handler"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let mut broker = TestBroker::start_with(&[("connections.max.idle.ms", "200")]).await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let started = std::time::Instant::now();
    assert!(closed(&mut s).await);
    assert!(started.elapsed() >= Duration::from_millis(150));
    broker.shutdown().await;
}

#[tokio::test]
async fn data_survives_a_clean_restart() {
    let mut broker = TestBroker::start().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["durable"], true),
    )
    .await;
    let _: ProduceResponse = call(
        &mut s,
        ApiKey::Produce,
        9,
        &produce_request("durable", -1, 7),
    )
    .await;
    drop(s);
    broker.restart().await;

    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let latest: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        8,
        &list_offsets_request("durable", -1),
    )
    .await;
    assert_eq!(latest.topics[0].partitions[0].error_code, 0);
    assert_eq!(latest.topics[0].partitions[0].offset, 7);
    broker.shutdown().await;
}

#[tokio::test]
async fn acks_all_below_min_insync_replicas_is_refused() {
    let mut broker = TestBroker::start_with(&[("min.insync.replicas", "2")]).await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["isr"], true),
    )
    .await;
    // ISR = {this node} is smaller than min.insync.replicas = 2: acks=-1 gets NOT_ENOUGH_REPLICAS, nothing is
    // appended; acks=1 does not care.
    let response: ProduceResponse =
        call(&mut s, ApiKey::Produce, 9, &produce_request("isr", -1, 3)).await;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 19);
    let response: ProduceResponse =
        call(&mut s, ApiKey::Produce, 9, &produce_request("isr", 1, 3)).await;
    let p = &response.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    // Invalid acks value.
    let response: ProduceResponse =
        call(&mut s, ApiKey::Produce, 9, &produce_request("isr", 2, 3)).await;
    assert_eq!(
        response.responses[0].partition_responses[0].error_code, 21,
        "INVALID_REQUIRED_ACKS"
    );
    broker.shutdown().await;
}

/// A valid request body for `api`, with content where it makes the handler do real work (a topic that exists,
/// a real record batch), so mutations reach past the first field.
fn valid_request(
    api: ApiKey,
    version: i16,
    topic: &str,
    topic_id: uuid::Uuid,
) -> kafka_protocol::messages::RequestKind {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::*;
    let name = || TopicName(StrBytes::from_string(topic.to_string()));
    match api {
        ApiKey::Produce => RequestKind::Produce(produce_request(topic, 1, 3)),
        ApiKey::Fetch => RequestKind::Fetch(
            FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(0)
                .with_min_bytes(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![{
                    let t = FetchTopic::default().with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20)]);
                    // Names up to v12, topic ids from v13.
                    if version >= 13 {
                        t.with_topic_id(topic_id)
                    } else {
                        t.with_topic(name())
                    }
                }]),
        ),
        ApiKey::ListOffsets => RequestKind::ListOffsets(list_offsets_request(topic, -1)),
        // v0-v3 have no allow_auto_topic_creation field (auto-creation is implied).
        ApiKey::Metadata => RequestKind::Metadata(metadata_request(&[topic], version < 4)),
        ApiKey::ApiVersions => RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("fuzz"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        ),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(DeleteRecordsRequest::default()),
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(
            OffsetForLeaderEpochRequest::default().with_topics(vec![
                OffsetForLeaderTopic::default()
                    .with_topic(name())
                    .with_partitions(vec![OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(0)]),
            ]),
        ),
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(kafka_protocol::messages::ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(CreatePartitionsRequest::default())
        }
        ApiKey::DescribeConfigs => {
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_string(topic.to_string())),
            ]))
        }
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(AlterConfigsRequest::default()),
        ApiKey::IncrementalAlterConfigs => {
            RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default())
        }
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        // One key up to v3, a batch of keys from v4.
        ApiKey::FindCoordinator if version >= 4 => RequestKind::FindCoordinator(
            FindCoordinatorRequest::default()
                .with_coordinator_keys(vec![StrBytes::from_static_str("fuzz-group")]),
        ),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(
            FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("fuzz-group")),
        ),
        ApiKey::JoinGroup => RequestKind::JoinGroup(JoinGroupRequest::default()),
        ApiKey::SyncGroup => RequestKind::SyncGroup(SyncGroupRequest::default()),
        ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default()),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(LeaveGroupRequest::default()),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(OffsetCommitRequest::default()),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(OffsetFetchRequest::default()),
        ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(TxnOffsetCommitRequest::default()),
        ApiKey::AddPartitionsToTxn => {
            RequestKind::AddPartitionsToTxn(AddPartitionsToTxnRequest::default())
        }
        ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(AddOffsetsToTxnRequest::default()),
        ApiKey::EndTxn => RequestKind::EndTxn(EndTxnRequest::default()),
        ApiKey::WriteTxnMarkers => RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default()),
        ApiKey::DescribeTransactions => {
            RequestKind::DescribeTransactions(DescribeTransactionsRequest::default())
        }
        ApiKey::ListTransactions => {
            RequestKind::ListTransactions(ListTransactionsRequest::default())
        }
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(DescribeGroupsRequest::default()),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(DeleteGroupsRequest::default()),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(OffsetDeleteRequest::default()),
        ApiKey::DescribeQuorum => {
            RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(
                vec![describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
                .with_partitions(vec![describe_quorum_request::PartitionData::default()])],
            ))
        }
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(
            ElectLeadersRequest::default().with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default()
                    .with_topic(name())
                    .with_partitions(vec![0]),
            ])),
        ),
        ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::default().with_topics(vec![
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(name())
                    .with_partitions(vec![
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_replicas(Some(vec![BrokerId(0)])),
                    ]),
            ]),
        ),
        ApiKey::ListPartitionReassignments => {
            RequestKind::ListPartitionReassignments(ListPartitionReassignmentsRequest::default())
        }
        ApiKey::DescribeLogDirs => {
            RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(Some(vec![
                describe_log_dirs_request::DescribableLogDirTopic::default()
                    .with_topic(name())
                    .with_partitions(vec![0]),
            ])))
        }
        // A directory that is not in log.dirs: LOG_DIR_NOT_FOUND, no move started.
        ApiKey::AlterReplicaLogDirs => {
            RequestKind::AlterReplicaLogDirs(AlterReplicaLogDirsRequest::default().with_dirs(vec![
                alter_replica_log_dirs_request::AlterReplicaLogDir::default()
                    .with_path(StrBytes::from_static_str("/nonexistent-log-dir"))
                    .with_topics(vec![
                        alter_replica_log_dirs_request::AlterReplicaLogDirTopic::default()
                            .with_name(name())
                            .with_partitions(vec![0]),
                    ]),
            ]))
        }
        ApiKey::DescribeTopicPartitions => RequestKind::DescribeTopicPartitions(
            DescribeTopicPartitionsRequest::default().with_topics(vec![
                describe_topic_partitions_request::TopicRequest::default().with_name(name()),
            ]),
        ),
        other => panic!("{other:?} is advertised but this test has no request for it: add one"),
    }
}

/// The request header (valid, version-correct) of a fuzz case.
fn request_header(api: ApiKey, version: i16, correlation_id: i32) -> BytesMut {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    buf
}

/// A byte biased towards the values that make lengths and counts extreme.
fn extreme_byte(rng: &mut Rng) -> u8 {
    match rng.below(4) {
        0 => 0x00,
        1 => 0xff,
        2 => 0x7f,
        _ => rng.next_u64() as u8,
    }
}

/// Mutates a valid request body; returns the strategy's name. Strategy 0 keeps the body valid.
fn mutate(body: &mut Vec<u8>, rng: &mut Rng) -> &'static str {
    match rng.below(6) {
        0 => "valid",
        1 => {
            let len = rng.below(200) as usize;
            *body = (0..len).map(|_| extreme_byte(rng)).collect();
            "random body"
        }
        2 if !body.is_empty() => {
            for _ in 0..1 + rng.below(4) {
                let at = rng.index(body.len());
                body[at] ^= 1 << rng.below(8);
            }
            "bit flips"
        }
        3 if !body.is_empty() => {
            // An extreme length, count or number written over a field.
            let at = rng.index(body.len());
            let patterns: [&[u8]; 5] = [
                &[0xff, 0xff, 0xff, 0xff],
                &[0x7f, 0xff, 0xff, 0xff],
                &[0x80, 0x00, 0x00, 0x00],
                &[0xff, 0xff, 0xff, 0xff, 0x0f],
                &[0x00, 0x00],
            ];
            let pattern = patterns[rng.index(patterns.len())];
            for (i, b) in pattern.iter().enumerate() {
                if let Some(slot) = body.get_mut(at + i) {
                    *slot = *b;
                }
            }
            "extreme field"
        }
        4 if !body.is_empty() => {
            body.truncate(rng.index(body.len()));
            "truncated"
        }
        _ => {
            for _ in 0..1 + rng.below(16) {
                body.push(extreme_byte(rng));
            }
            "trailing bytes"
        }
    }
}

#[tokio::test]
async fn random_frames_never_take_the_server_down() {
    let seed = seed_from_env("SLUICE_TEST_SEED");
    eprintln!("random_frames_never_take_the_server_down: seed {seed:#x} (rerun with SLUICE_TEST_SEED={seed:#x})");
    let mut broker = TestBroker::start().await;
    let addr = broker.addr();
    let mut rng = Rng::from_seed(seed);
    // A topic for the valid bodies to name, so mutated requests reach real partitions.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let created: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["fuzz"], true),
    )
    .await;
    let topic_id = created.topics[0].topic_id;
    assert!(!topic_id.is_nil());
    drop(s);
    // Every API the registry advertises on a client listener, every advertised version (BrokerRegistration and
    // BrokerHeartbeat are served on the controller listener only).
    let apis: Vec<_> = sluice_broker::apis::SUPPORTED_APIS
        .iter()
        .copied()
        .filter(|a| {
            sluice_broker::apis::is_served_on(a.api_key, sluice_broker::apis::ListenerKind::Client)
        })
        .collect();
    assert!(apis.len() >= 27, "the registry shrank?");
    // APIs whose valid requests may legitimately wait (long polling, a rebalance): a mutated one may ask to
    // wait longer than this test waits, so for them only an answer or a close is checked when one comes.
    let may_wait = [ApiKey::Fetch, ApiKey::JoinGroup, ApiKey::SyncGroup];
    // Every valid body encodes at every advertised version (independent of the seed).
    for api in &apis {
        for version in api.min_version..=api.max_version {
            let mut encoded = BytesMut::new();
            if let Err(e) =
                valid_request(api.api_key, version, "fuzz", topic_id).encode(&mut encoded, version)
            {
                panic!(
                    "{:?} v{version}: cannot encode the valid body: {e}",
                    api.api_key
                );
            }
        }
    }
    for case in 0..1000 {
        let api = apis[rng.index(apis.len())];
        let span = (api.max_version - api.min_version + 1) as u64;
        let version = api.min_version + rng.below(span) as i16;
        let request = valid_request(api.api_key, version, "fuzz", topic_id);
        let mut encoded = BytesMut::new();
        request.encode(&mut encoded, version).unwrap_or_else(|e| {
            panic!(
                "{:?} v{version}: cannot encode the valid body: {e}",
                api.api_key
            )
        });
        let mut body = encoded.to_vec();
        let strategy = mutate(&mut body, &mut rng);
        let header = request_header(api.api_key, version, case);
        let mut f = BytesMut::new();
        f.put_i32((header.len() + body.len()) as i32);
        f.put_slice(&header);
        f.put_slice(&body);
        let what = format!(
            "seed {seed:#x} case {case}: {:?} v{version}, {strategy}",
            api.api_key
        );
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&f).await.unwrap();
        s.shutdown().await.unwrap();
        // Either a response or a close; drain until EOF.
        let mut sink = Vec::new();
        let wait = if may_wait.contains(&api.api_key) {
            Duration::from_secs(2)
        } else {
            TIMEOUT
        };
        match tokio::time::timeout(wait, s.read_to_end(&mut sink)).await {
            Ok(_) => {}
            Err(_) if may_wait.contains(&api.api_key) && strategy != "valid" => continue,
            Err(_) => panic!("{what}: no answer and no close"),
        }
        if strategy == "valid" {
            // An unmodified request gets an answer with its correlation id (all of these set acks != 0).
            assert!(sink.len() >= 8, "{what}: no response to a valid request");
            assert_eq!(&sink[4..8], &case.to_be_bytes(), "{what}: correlation id");
        }
        assert_eq!(
            broker.broker().handler_panics(),
            0,
            "{what}: a handler panicked"
        );
    }
    // Still serving.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    let response: ApiVersionsResponse = call(
        &mut ok,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("x"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    )
    .await;
    assert_eq!(response.error_code, 0, "seed {seed:#x}");
    assert_eq!(broker.broker().handler_panics(), 0, "seed {seed:#x}");
    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};
    let mut broker = TestBroker::start().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["quiet"], true),
    )
    .await;
    // A long-polling fetch on an empty partition: in flight for about a second.
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(1000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("quiet")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    s.write_all(&frame(ApiKey::Fetch, 12, 5, &fetch))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(async move { broker.shutdown().await });
    // The fetch is answered (not dropped), then the connection closes, then shutdown completes.
    let mut response = read_frame(&mut s)
        .await
        .expect("the in-flight fetch is answered");
    let header = ResponseHeader::decode(&mut response, 1).unwrap();
    assert_eq!(header.correlation_id, 5);
    let decoded = FetchResponse::decode(&mut response, 12).unwrap();
    assert_eq!(decoded.responses[0].partitions[0].error_code, 0);
    assert!(closed(&mut s).await);
    shutdown.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing listens any more.
    assert!(TcpStream::connect(s.peer_addr().unwrap()).await.is_err());
}

#[tokio::test]
async fn metadata_by_topic_id() {
    let mut broker = TestBroker::start().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let created: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["by-id"], true),
    )
    .await;
    let id = created.topics[0].topic_id;
    assert!(!id.is_nil());
    let unknown = uuid::Uuid::from_u128(0x1234);
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_topic_id(id),
            MetadataRequestTopic::default().with_topic_id(unknown),
        ]))
        .with_allow_auto_topic_creation(false);
    let response: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &request).await;
    assert_eq!(response.topics.len(), 2);
    assert_eq!(response.topics[0].error_code, 0);
    assert_eq!(
        response.topics[0].name.as_ref().map(|n| n.0.as_str()),
        Some("by-id")
    );
    assert_eq!(response.topics[1].error_code, 100, "UNKNOWN_TOPIC_ID");
    assert_eq!(response.topics[1].topic_id, unknown);
    broker.shutdown().await;
}

#[tokio::test]
async fn deleting_a_topic_deletes_its_log_and_recreating_starts_empty() {
    let mut broker = TestBroker::start().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["doomed"], true),
    )
    .await;
    let _: ProduceResponse =
        call(&mut s, ApiKey::Produce, 9, &produce_request("doomed", 1, 4)).await;
    let partition_dir = broker.dir().join("doomed-0");
    assert!(partition_dir.exists());

    let outcomes = broker
        .broker()
        .controller
        .delete_topics(vec![sluice_metadata::DeleteTopicTarget {
            name: Some("doomed".into()),
            topic_id: uuid::Uuid::nil(),
        }])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1);
    // The replica manager follows the image: the partition directory goes away (renamed for deletion).
    let deadline = std::time::Instant::now() + TIMEOUT;
    while partition_dir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "log of a deleted topic still in place"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response: ProduceResponse =
        call(&mut s, ApiKey::Produce, 9, &produce_request("doomed", 1, 1)).await;
    assert_eq!(
        response.responses[0].partition_responses[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );

    // Re-created under the same name: a new, empty log.
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["doomed"], true),
    )
    .await;
    let response: ProduceResponse =
        call(&mut s, ApiKey::Produce, 9, &produce_request("doomed", 1, 2)).await;
    let p = &response.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    broker.shutdown().await;
}

#[tokio::test]
async fn an_empty_metadata_log_does_not_wipe_existing_logs() {
    let mut broker = TestBroker::start().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["kept"], true),
    )
    .await;
    let _: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce_request("kept", 1, 3)).await;
    drop(s);
    broker.shutdown().await;

    // A misconfigured metadata.log.dir: the image is empty, the partition logs must be left alone.
    let other_metadata = tempfile::tempdir().unwrap();
    let other = other_metadata.path().display().to_string();
    broker.restart_with(&[("metadata.log.dir", &other)]).await;
    assert!(broker.dir().join("kept-0").exists());
    broker.shutdown().await;

    // Back on the right metadata log, the data is still there.
    broker.restart().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let latest: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        8,
        &list_offsets_request("kept", -1),
    )
    .await;
    assert_eq!(latest.topics[0].partitions[0].offset, 3);
    broker.shutdown().await;
}

fn idempotent_produce(
    topic: &str,
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    records: usize,
) -> ProduceRequest {
    let batch = BatchBuilder::new()
        .timestamp_ms(1_700_000_000_000)
        .values((0..records).map(|i| format!("v{i}")))
        .idempotent(producer_id, epoch, sequence)
        .build_bytes();
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])])
}

#[tokio::test]
async fn idempotent_producer_retries_are_deduplicated_and_gaps_refused() {
    use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
    let mut broker = TestBroker::start().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["idem"], true),
    )
    .await;
    let init: InitProducerIdResponse = call(
        &mut s,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60000),
    )
    .await;
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert!(pid >= 0);
    assert_eq!(init.producer_epoch, 0);
    let init2: InitProducerIdResponse = call(
        &mut s,
        ApiKey::InitProducerId,
        0,
        &InitProducerIdRequest::default().with_transactional_id(None),
    )
    .await;
    assert_ne!(init2.producer_id.0, pid, "every producer gets its own id");

    let produce = |epoch: i16, seq: i32, n: usize| idempotent_produce("idem", pid, epoch, seq, n);
    let result = |r: &ProduceResponse| {
        let p = &r.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce(0, 0, 5)).await;
    assert_eq!(result(&r), (0, 0));
    // A retry of the same batch: the original offset, nothing appended (KIP-98).
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce(0, 0, 5)).await;
    assert_eq!(result(&r), (0, 0));
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce(0, 5, 3)).await;
    assert_eq!(result(&r), (0, 5));
    // A gap in the sequence.
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce(0, 20, 1)).await;
    assert_eq!(result(&r).0, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER");
    // A new epoch starts at sequence 0; the old epoch is then fenced.
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce(1, 3, 1)).await;
    assert_eq!(result(&r).0, 45, "a new epoch must start at sequence 0");
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce(1, 0, 2)).await;
    assert_eq!(result(&r), (0, 8));
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce(0, 8, 1)).await;
    assert_eq!(result(&r).0, 47, "INVALID_PRODUCER_EPOCH");
    let latest: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        8,
        &list_offsets_request("idem", -1),
    )
    .await;
    assert_eq!(
        latest.topics[0].partitions[0].offset, 10,
        "the retry appended nothing"
    );

    // A transactional id goes to the transaction coordinator; transactional records need one.
    let init: InitProducerIdResponse = call(
        &mut s,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_transactional_id(Some(kafka_protocol::messages::TransactionalId(
                StrBytes::from_static_str("tx"),
            ))),
    )
    .await;
    assert_eq!((init.error_code, init.producer_epoch), (0, 0));
    let mut tx = produce(1, 2, 1);
    let mut bytes = tx.topic_data[0].partition_data[0]
        .records
        .take()
        .unwrap()
        .to_vec();
    bytes[22] |= 0x10; // the transactional attribute bit
    tx.topic_data[0].partition_data[0].records = Some(Bytes::from(bytes));
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &tx).await;
    assert_eq!(result(&r).0, 53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED");
    broker.shutdown().await;
}

#[tokio::test]
async fn retention_runs_periodically() {
    let mut broker = TestBroker::start_with(&[
        ("log.segment.bytes", "1024"),
        ("log.retention.ms", "60000"),
        ("log.retention.check.interval.ms", "100"),
    ])
    .await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["old"], true),
    )
    .await;
    // Batches timestamped in 2023: every closed segment is past a one-minute retention at once.
    for _ in 0..20 {
        let r: ProduceResponse =
            call(&mut s, ApiKey::Produce, 9, &produce_request("old", 1, 10)).await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let earliest: ListOffsetsResponse = call(
            &mut s,
            ApiKey::ListOffsets,
            8,
            &list_offsets_request("old", -2),
        )
        .await;
        if earliest.topics[0].partitions[0].offset > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.shutdown().await;
}

/// One batch as a client builds it, with the given record timestamps and keys.
fn client_batch(
    compression: kafka_protocol::records::Compression,
    records: &[(i64, Option<&'static [u8]>)],
) -> Bytes {
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (timestamp, key))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: *timestamp,
            key: key.map(Bytes::from_static),
            value: Some(Bytes::from_static(b"value")),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

fn produce_bytes(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])])
}

#[tokio::test]
async fn offsets_for_times_look_inside_batches() {
    use kafka_protocol::records::Compression;
    let mut broker = TestBroker::start().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["times"], true),
    )
    .await;
    let timestamps = [1000i64, 1010, 1040, 1020, 1030];
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let records: Vec<(i64, Option<&'static [u8]>)> =
            timestamps.iter().map(|t| (*t, None)).collect();
        let r: ProduceResponse = call(
            &mut s,
            ApiKey::Produce,
            9,
            &produce_bytes("times", client_batch(compression, &records)),
        )
        .await;
        assert_eq!(
            r.responses[0].partition_responses[0].error_code, 0,
            "{compression:?}"
        );
    }
    // The first batch holds offsets 0-4: the first record at or after 1015 is offset 2 (1040), not the batch.
    let found: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        8,
        &list_offsets_request("times", 1015),
    )
    .await;
    let p = &found.topics[0].partitions[0];
    assert_eq!((p.offset, p.timestamp), (2, 1040));
    let found: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        8,
        &list_offsets_request("times", 1005),
    )
    .await;
    assert_eq!(found.topics[0].partitions[0].offset, 1);
    // KIP-734: the first record holding the largest timestamp.
    let max: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        8,
        &list_offsets_request("times", -3),
    )
    .await;
    let p = &max.topics[0].partitions[0];
    assert_eq!((p.offset, p.timestamp), (2, 1040));
    broker.shutdown().await;
}

#[tokio::test]
async fn compacted_topics_refuse_records_without_a_key() {
    use kafka_protocol::records::Compression;
    let mut broker = TestBroker::start().await;
    let outcomes = broker
        .broker()
        .controller
        .create_topics(
            vec![sluice_metadata::NewTopic {
                name: "compacted".into(),
                num_partitions: 1,
                replication_factor: 1,
                assignments: Vec::new(),
                configs: vec![("cleanup.policy".into(), Some("compact".into()))],
            }],
            false,
        )
        .await;
    assert_eq!(outcomes[0].error_code, 0, "{:?}", outcomes[0].error_message);
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    for compression in [Compression::None, Compression::Lz4, Compression::Snappy] {
        let records = client_batch(
            compression,
            &[(1, Some(b"a")), (2, None), (3, Some(b"c")), (4, None)],
        );
        let r: ProduceResponse = call(
            &mut s,
            ApiKey::Produce,
            9,
            &produce_bytes("compacted", records),
        )
        .await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 87, "{compression:?}: INVALID_RECORD");
        let indexes: Vec<i32> = p.record_errors.iter().map(|e| e.batch_index).collect();
        assert_eq!(indexes, vec![1, 3], "{compression:?}");
        assert!(p
            .error_message
            .as_ref()
            .is_some_and(|m| m.contains("without key")));
    }
    let records = client_batch(Compression::Gzip, &[(1, Some(b"a")), (2, Some(b"b"))]);
    let r: ProduceResponse = call(
        &mut s,
        ApiKey::Produce,
        9,
        &produce_bytes("compacted", records),
    )
    .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    // Keyless records are fine on a topic that is not compacted.
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["plain"], true),
    )
    .await;
    let records = client_batch(Compression::None, &[(1, None)]);
    let r: ProduceResponse =
        call(&mut s, ApiKey::Produce, 9, &produce_bytes("plain", records)).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    broker.shutdown().await;
}

/// `log.cleanup.policy` is the `cleanup.policy` of topics without their own, as in Kafka: with `compact` there,
/// a topic created without configs refuses keyless records and DeleteRecords (POLICY_VIOLATION); one that
/// adds `delete` takes DeleteRecords.
#[tokio::test]
async fn the_broker_cleanup_policy_is_the_default_of_topics() {
    use kafka_protocol::records::Compression;
    let mut broker = TestBroker::start_with(&[("log.cleanup.policy", "compact")]).await;
    for (name, policy) in [("defaulted", None), ("deletable", Some("compact,delete"))] {
        let outcomes = broker
            .broker()
            .controller
            .create_topics(
                vec![sluice_metadata::NewTopic {
                    name: name.into(),
                    num_partitions: 1,
                    replication_factor: 1,
                    assignments: Vec::new(),
                    configs: policy
                        .map(|p| vec![("cleanup.policy".to_string(), Some(p.to_string()))])
                        .unwrap_or_default(),
                }],
                false,
            )
            .await;
        assert_eq!(outcomes[0].error_code, 0, "{:?}", outcomes[0].error_message);
    }
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let keyless = client_batch(Compression::None, &[(1, None)]);
    let r: ProduceResponse = call(
        &mut s,
        ApiKey::Produce,
        9,
        &produce_bytes("defaulted", keyless),
    )
    .await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 87,
        "INVALID_RECORD"
    );
    for name in ["defaulted", "deletable"] {
        let records = client_batch(Compression::None, &[(1, Some(b"a")), (2, Some(b"b"))]);
        let r: ProduceResponse =
            call(&mut s, ApiKey::Produce, 9, &produce_bytes(name, records)).await;
        assert_eq!(
            r.responses[0].partition_responses[0].error_code, 0,
            "{name}"
        );
    }
    let delete = |name: &'static str| {
        DeleteRecordsRequest::default()
            .with_timeout_ms(1000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(name)))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(1)])])
    };
    let response: DeleteRecordsResponse =
        call(&mut s, ApiKey::DeleteRecords, 2, &delete("defaulted")).await;
    assert_eq!(
        response.topics[0].partitions[0].error_code, 44,
        "POLICY_VIOLATION"
    );
    let response: DeleteRecordsResponse =
        call(&mut s, ApiKey::DeleteRecords, 2, &delete("deletable")).await;
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    assert_eq!(response.topics[0].partitions[0].low_watermark, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn broker_fetch_max_bytes_caps_the_response() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};
    let mut broker = TestBroker::start_with(&[("fetch.max.bytes", "1024")]).await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["capped"], true),
    )
    .await;
    // Three batches of ~700 bytes each: 2.1 KB in the log.
    let value = vec![b'x'; 640];
    for _ in 0..3 {
        let batch = BatchBuilder::new()
            .timestamp_ms(1_700_000_000_000)
            .value(&value)
            .build_bytes();
        let r: ProduceResponse =
            call(&mut s, ApiKey::Produce, 9, &produce_bytes("capped", batch)).await;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    // The client asks for 1 MiB; the broker's fetch.max.bytes (1 KiB) wins: one whole batch (KIP-74), not three.
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("capped")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let response: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &request).await;
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.high_watermark, 3);
    let records = partition.records.clone().expect("records");
    let batches = sluice_protocol::batch::Batches::new(&records)
        .filter(Result::is_ok)
        .count();
    assert_eq!(batches, 1, "{} bytes returned", records.len());
    broker.shutdown().await;
}

/// A running broker writes `replication-offset-checkpoint` every `replica.high.watermark.checkpoint.interval.ms`
/// (Kafka's format), so a crash reopens with a recent high watermark rather than none.
#[tokio::test]
async fn high_watermarks_are_checkpointed_while_running() {
    let mut broker =
        TestBroker::start_with(&[("replica.high.watermark.checkpoint.interval.ms", "100")]).await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &metadata_request(&["checkpointed"], true),
    )
    .await;
    let response: ProduceResponse = call(
        &mut s,
        ApiKey::Produce,
        9,
        &produce_request("checkpointed", 1, 7),
    )
    .await;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    let path = broker.dir().join("replication-offset-checkpoint");
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().any(|l| l == "checkpointed 0 7") {
            assert!(text.starts_with("0\n"), "version 0 first: {text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint with the high watermark 7: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(s);
    broker.shutdown().await;
}
