//! KIP-98 across a broker restart: the idempotent-producer state lives in the partition log (snapshots and
//! batch headers), so a retry that spans a clean restart is answered with the original offsets instead of
//! being appended twice, and a sequence gap is still refused.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use sluice_testkit::{BatchBuilder, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request and decodes its response.
async fn call<Req, Resp>(stream: &mut TcpStream, key: ApiKey, version: i16, body: &Req) -> Resp
where
    Req: Encodable + HeaderVersion,
    Resp: Decodable + HeaderVersion,
{
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("sluice-test")));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, Req::header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    stream.write_all(&buf).await.unwrap();
    let size = tokio::time::timeout(TIMEOUT, stream.read_i32())
        .await
        .expect("response in time")
        .unwrap();
    let mut body = vec![0u8; size as usize];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut body))
        .await
        .expect("response in time")
        .unwrap();
    let mut response = Bytes::from(body);
    let header = ResponseHeader::decode(&mut response, Resp::header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    let decoded = Resp::decode(&mut response, version).unwrap();
    assert_eq!(response.remaining(), 0);
    decoded
}

fn produce(producer_id: i64, sequence: i32, records: usize) -> ProduceRequest {
    let batch = BatchBuilder::new()
        .timestamp_ms(1_700_000_000_000)
        .values((0..records).map(|i| format!("v{i}")))
        .idempotent(producer_id, 0, sequence)
        .build_bytes();
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("idem")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])])
}

async fn send(s: &mut TcpStream, request: &ProduceRequest) -> (i16, i64) {
    let r: ProduceResponse = call(s, ApiKey::Produce, 9, request).await;
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[tokio::test]
async fn a_retry_spanning_a_restart_is_deduplicated() {
    let pid = 77;
    let mut broker = TestBroker::start().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    let metadata = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("idem"))))]))
        .with_allow_auto_topic_creation(true);
    let _: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &metadata).await;
    assert_eq!(send(&mut s, &produce(pid, 0, 4)).await, (0, 0));
    assert_eq!(send(&mut s, &produce(pid, 4, 2)).await, (0, 4));
    drop(s);
    broker.restart().await;
    let mut s = TcpStream::connect(broker.addr()).await.unwrap();
    // The producer did not see the ack of its last batch and retries it after the restart.
    assert_eq!(
        send(&mut s, &produce(pid, 4, 2)).await,
        (0, 4),
        "original offset"
    );
    assert_eq!(
        send(&mut s, &produce(pid, 0, 4)).await,
        (0, 0),
        "older retry"
    );
    assert_eq!(
        send(&mut s, &produce(pid, 9, 1)).await.0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    assert_eq!(
        send(&mut s, &produce(pid, 6, 1)).await,
        (0, 6),
        "nothing was appended twice"
    );
    drop(s);
    broker.shutdown().await;
}
