//! A minimal Kafka client for broker integration tests: one connection, requests encoded and responses
//! decoded with `kafka-protocol`, each response checked for its correlation id, decoded whole, and awaited
//! for at most [`TIMEOUT`].

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
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
        let header = RequestHeader::default()
            .with_request_api_key(Q::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("sluice-broker-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, Q::header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).await.unwrap();
        let read = async {
            let len = self.stream.read_i32().await.unwrap();
            let mut buf = vec![0u8; len as usize];
            self.stream.read_exact(&mut buf).await.unwrap();
            buf
        };
        let buf = tokio::time::timeout(TIMEOUT, read)
            .await
            .expect("response in time");
        let mut bytes = Bytes::from(buf);
        let header =
            ResponseHeader::decode(&mut bytes, Q::Response::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        let response = Q::Response::decode(&mut bytes, version).unwrap();
        assert_eq!(bytes.remaining(), 0, "the whole response body is decoded");
        response
    }
}
