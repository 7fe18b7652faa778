//! A minimal Kafka client for broker integration tests: one connection, requests encoded and responses
//! decoded with `kafka-protocol`, each response checked for its correlation id, decoded whole, and awaited
//! for at most [`TIMEOUT`]; and the same on a raw `TcpStream` for tests that drive the socket themselves.

#![allow(dead_code)] // each test crate uses its own subset

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use sluice_broker::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest a test waits for one response.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    pub(crate) async fn connect(server: &Server) -> Client {
        Client {
            stream: TcpStream::connect(server.local_addr()).await.unwrap(),
            correlation_id: 0,
        }
    }

    pub(crate) async fn send<Q>(&mut self, version: i16, request: Q) -> Q::Response
    where
        Q: Request + Encodable + HeaderVersion,
        Q::Response: Decodable + HeaderVersion,
    {
        self.correlation_id += 1;
        let response = call(&mut self.stream, version, self.correlation_id, &request);
        tokio::time::timeout(TIMEOUT, response)
            .await
            .expect("response in time")
    }
}

/// A request frame (size prefix, header v1/v2, body).
pub(crate) fn frame<Q>(version: i16, correlation_id: i32, request: &Q) -> Bytes
where
    Q: Request + Encodable + HeaderVersion,
{
    let header = RequestHeader::default()
        .with_request_api_key(Q::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sluice-broker-test")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, Q::header_version(version))
        .expect("header");
    request.encode(&mut body, version).expect("body");
    let mut frame = BytesMut::new();
    frame.put_i32(i32::try_from(body.len()).expect("len"));
    frame.extend_from_slice(&body);
    frame.freeze()
}

/// Reads one response and checks its correlation id.
pub(crate) async fn read_response<R>(stream: &mut TcpStream, version: i16, correlation_id: i32) -> R
where
    R: Decodable + HeaderVersion,
{
    let len = stream.read_i32().await.expect("response size");
    let mut buf = vec![0u8; usize::try_from(len).expect("size")];
    stream.read_exact(&mut buf).await.expect("response");
    let mut bytes = Bytes::from(buf);
    let header = ResponseHeader::decode(&mut bytes, R::header_version(version)).expect("header");
    assert_eq!(header.correlation_id, correlation_id, "responses in order");
    let response = R::decode(&mut bytes, version).expect("decode");
    assert_eq!(bytes.remaining(), 0, "the whole response body is decoded");
    response
}

/// Creates a topic with CreateTopics v7 (replication factor 1); asserts success.
pub(crate) async fn create_topic(stream: &mut TcpStream, name: &str, partitions: i32) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    stream
        .write_all(&frame(7, 1, &request))
        .await
        .expect("write");
    let response: CreateTopicsResponse = read_response(stream, 7, 1).await;
    assert_eq!(response.topics[0].error_code, 0, "{response:?}");
}

/// Sends one request and reads its response (checked as [`read_response`] does).
pub(crate) async fn call<Q, R>(
    stream: &mut TcpStream,
    version: i16,
    correlation_id: i32,
    request: &Q,
) -> R
where
    Q: Request + Encodable + HeaderVersion,
    R: Decodable + HeaderVersion,
{
    stream
        .write_all(&frame(version, correlation_id, request))
        .await
        .expect("write");
    read_response(stream, version, correlation_id).await
}
