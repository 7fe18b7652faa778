//! One TCP connection to one broker: ApiVersions negotiation at connect, then pipelined requests.
//!
//! A writer task sends request frames in the order callers submit them and hands each expected response's
//! correlation id to a reader task; Kafka answers requests on a connection in order, so the reader matches
//! each response frame to the oldest pending request. Every response frame is checked by
//! [`sluice_protocol::guard::check_response`] before `kafka-protocol` decodes it, so a hostile or broken
//! broker cannot make the decoder allocate without bound; decode errors are [`ClientError::Malformed`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{ClientError, Result};

/// Largest response frame accepted (a fetch response is bounded by `fetch.max.bytes`, 55 MiB by default).
const MAX_RESPONSE_BYTES: i32 = 256 * 1024 * 1024;
/// Requests queued for the writer task before callers wait.
const WRITE_QUEUE_DEPTH: usize = 1024;
/// The ApiVersions version tried first (v3 carries the client software name, KIP-511).
const API_VERSIONS_FIRST_VERSION: i16 = 3;

type Reply = oneshot::Sender<Result<Bytes>>;

struct Outgoing {
    frame: Bytes,
    /// `None` for a request the broker does not answer (Produce with acks=0).
    pending: Option<(i32, Reply)>,
}

/// A negotiated connection to one broker. Cheap to share behind an `Arc`; requests from many tasks are
/// pipelined on the one socket.
pub struct Connection {
    addr: String,
    client_id: StrBytes,
    request_timeout_ms: u64,
    tx: mpsc::Sender<Outgoing>,
    next_correlation_id: AtomicI32,
    dead: Arc<AtomicBool>,
    /// The broker's advertised `(min, max)` per API key.
    versions: HashMap<i16, (i16, i16)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`) and negotiates API versions.
    pub async fn connect(
        addr: &str,
        client_id: &str,
        connect_timeout_ms: u64,
        request_timeout_ms: u64,
    ) -> Result<Connection> {
        let conn_err = |reason: String| ClientError::Connection {
            addr: addr.to_owned(),
            reason,
        };
        let stream = tokio::time::timeout(
            Duration::from_millis(connect_timeout_ms),
            TcpStream::connect(addr),
        )
        .await
        .map_err(|_| conn_err(format!("connect timed out after {connect_timeout_ms} ms")))?
        .map_err(|e| conn_err(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| conn_err(e.to_string()))?;
        let (read_half, write_half) = stream.into_split();
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_DEPTH);
        let (pending_tx, pending_rx) = mpsc::unbounded_channel();
        let dead = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_loop(write_half, rx, pending_tx, dead.clone()));
        tokio::spawn(read_loop(
            read_half,
            pending_rx,
            dead.clone(),
            addr.to_owned(),
        ));
        let mut conn = Connection {
            addr: addr.to_owned(),
            client_id: StrBytes::from_string(client_id.to_owned()),
            request_timeout_ms,
            tx,
            next_correlation_id: AtomicI32::new(1),
            dead,
            versions: HashMap::new(),
        };
        conn.negotiate().await?;
        Ok(conn)
    }

    /// Sends ApiVersions (v3, falling back to v0 as KIP-511 prescribes) and records the broker's ranges.
    async fn negotiate(&mut self) -> Result<()> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("sluice-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response: ApiVersionsResponse =
            match self.send_at(&request, API_VERSIONS_FIRST_VERSION).await {
                Ok(r) if r.error_code == 0 => r,
                // UNSUPPORTED_VERSION answers in v0 (which v3 cannot decode) or with error 35: retry at v0.
                Ok(_) | Err(ClientError::Malformed { .. }) => self.send_at(&request, 0).await?,
                Err(e) => return Err(e),
            };
        if response.error_code != 0 {
            return Err(ClientError::broker(
                format!("ApiVersions to {}", self.addr),
                response.error_code,
                None,
            ));
        }
        self.versions = response
            .api_keys
            .drain(..)
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    /// The broker address this connection talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// False once the socket failed or a request timed out; the owner should open a new connection.
    pub fn is_alive(&self) -> bool {
        !self.dead.load(Ordering::Relaxed) && !self.tx.is_closed()
    }

    /// The broker's advertised version range for `api`, if it serves it.
    pub fn broker_versions(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.versions.get(&(api as i16)).copied()
    }

    /// The highest version both sides speak for `R`, no higher than `cap`.
    pub fn version_for<R: Request>(&self, cap: Option<i16>) -> Result<i16> {
        let api = api_key::<R>()?;
        let (broker_min, broker_max) = self
            .broker_versions(api)
            .ok_or(ClientError::UnsupportedApi { api })?;
        let ours = R::VERSIONS;
        let max = broker_max.min(ours.max).min(cap.unwrap_or(i16::MAX));
        let min = broker_min.max(ours.min);
        if max < min {
            return Err(ClientError::UnsupportedApi { api });
        }
        Ok(max)
    }

    /// Sends `request` at the highest common version (at most `cap`) and decodes the response.
    pub async fn send<R: Request>(&self, request: &R, cap: Option<i16>) -> Result<R::Response> {
        let version = self.version_for::<R>(cap)?;
        self.send_at(request, version).await
    }

    /// Sends a request the broker does not answer (Produce with acks=0); returns once it is queued.
    pub async fn send_no_response<R: Request>(&self, request: &R, cap: Option<i16>) -> Result<()> {
        let version = self.version_for::<R>(cap)?;
        let (_, frame) = self.encode(request, version)?;
        self.tx
            .send(Outgoing {
                frame,
                pending: None,
            })
            .await
            .map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Connection {
            addr: self.addr.clone(),
            reason: "connection closed".into(),
        }
    }

    fn encode<R: Request>(&self, request: &R, version: i16) -> Result<(i32, Bytes)> {
        let api = api_key::<R>()?;
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(128);
        buf.put_i32(0);
        let encoded = header
            .encode(&mut buf, api.request_header_version(version))
            .and_then(|()| request.encode(&mut buf, version));
        if let Err(e) = encoded {
            return Err(ClientError::Config(format!(
                "cannot encode {api:?} v{version}: {e}"
            )));
        }
        let size = i32::try_from(buf.len() - 4)
            .map_err(|_| ClientError::Config(format!("{api:?} request too large")))?;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        Ok((correlation_id, buf.freeze()))
    }

    /// Sends `request` at exactly `version` and decodes the response.
    pub async fn send_at<R: Request>(&self, request: &R, version: i16) -> Result<R::Response> {
        self.send_at_timeout(request, version, self.request_timeout_ms)
            .await
    }

    /// Like [`send`](Self::send) with its own response timeout, for requests the broker parks for long
    /// (JoinGroup waits up to the rebalance timeout).
    pub async fn send_with_timeout<R: Request>(
        &self,
        request: &R,
        cap: Option<i16>,
        timeout_ms: u64,
    ) -> Result<R::Response> {
        let version = self.version_for::<R>(cap)?;
        self.send_at_timeout(request, version, timeout_ms).await
    }

    async fn send_at_timeout<R: Request>(
        &self,
        request: &R,
        version: i16,
        timeout_ms: u64,
    ) -> Result<R::Response> {
        self.submit_at(request, version, timeout_ms).await?.await
    }

    /// Queues `request` at the highest common version (at most `cap`) and returns, once it has its place in
    /// the connection's write order, a future of the response. Requests submitted one after the other go out
    /// in that order (the idempotent producer relies on it: a partition's batches must reach the broker in
    /// sequence order).
    pub async fn submit<R: Request>(
        &self,
        request: &R,
        cap: Option<i16>,
    ) -> Result<ResponseFuture<R::Response>> {
        let version = self.version_for::<R>(cap)?;
        self.submit_at(request, version, self.request_timeout_ms)
            .await
    }

    async fn submit_at<R: Request>(
        &self,
        request: &R,
        version: i16,
        timeout_ms: u64,
    ) -> Result<ResponseFuture<R::Response>> {
        let api = api_key::<R>()?;
        let (correlation_id, frame) = self.encode(request, version)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send(Outgoing {
                frame,
                pending: Some((correlation_id, reply_tx)),
            })
            .await
            .map_err(|_| self.closed_error())?;
        let addr = self.addr.clone();
        let dead = self.dead.clone();
        Ok(Box::pin(async move {
            let closed = |addr: &str| ClientError::Connection {
                addr: addr.to_owned(),
                reason: "connection closed".into(),
            };
            let frame =
                match tokio::time::timeout(Duration::from_millis(timeout_ms), reply_rx).await {
                    Ok(Ok(result)) => result?,
                    Ok(Err(_)) => return Err(closed(&addr)),
                    Err(_) => {
                        // Kafka clients drop a connection whose request timed out: later responses are
                        // suspect.
                        dead.store(true, Ordering::Relaxed);
                        return Err(ClientError::Timeout {
                            api,
                            addr,
                            timeout_ms,
                        });
                    }
                };
            decode_response::<R>(api, version, frame, &addr)
        }))
    }
}

/// The response to a request [submitted](Connection::submit) to a connection.
pub type ResponseFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send>>;

fn api_key<R: Request>() -> Result<ApiKey> {
    ApiKey::try_from(R::KEY).map_err(|_| ClientError::Config(format!("unknown api key {}", R::KEY)))
}

/// Checks the frame with the schema guard, then decodes header and body.
fn decode_response<R: Request>(
    api: ApiKey,
    version: i16,
    frame: Bytes,
    addr: &str,
) -> Result<R::Response> {
    let malformed = |reason: String| ClientError::Malformed {
        api,
        addr: addr.to_owned(),
        reason,
    };
    sluice_protocol::guard::check_response(api, version, &frame)
        .map_err(|e| malformed(e.to_string()))?;
    let mut buf = frame;
    ResponseHeader::decode(&mut buf, api.response_header_version(version))
        .map_err(|e| malformed(e.to_string()))?;
    R::Response::decode(&mut buf, version).map_err(|e| malformed(e.to_string()))
}

async fn write_loop(
    write_half: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    pending_tx: mpsc::UnboundedSender<(i32, Reply)>,
    dead: Arc<AtomicBool>,
) {
    let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Write everything already queued, then flush once.
        while let Some(out) = next.take() {
            if let Some(pending) = out.pending {
                if pending_tx.send(pending).is_err() {
                    dead.store(true, Ordering::Relaxed);
                    return;
                }
            }
            if writer.write_all(&out.frame).await.is_err() {
                dead.store(true, Ordering::Relaxed);
                return;
            }
            next = rx.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            dead.store(true, Ordering::Relaxed);
            return;
        }
    }
}

/// Reads a `size`-byte frame body into a fresh buffer, straight from the socket into its spare capacity (a replica
/// fetch answer is megabytes: not zero-filled first).
async fn read_frame(
    read_half: &mut tokio::net::tcp::OwnedReadHalf,
    size: usize,
) -> std::io::Result<BytesMut> {
    let mut frame = BytesMut::with_capacity(size);
    let mut body = read_half.take(size as u64);
    while frame.len() < size {
        if body.read_buf(&mut frame).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(frame)
}

async fn read_loop(
    mut read_half: tokio::net::tcp::OwnedReadHalf,
    mut pending_rx: mpsc::UnboundedReceiver<(i32, Reply)>,
    dead: Arc<AtomicBool>,
    addr: String,
) {
    let error = loop {
        let mut size = [0u8; 4];
        if let Err(e) = read_half.read_exact(&mut size).await {
            break format!("reading a response: {e}");
        }
        let size = match sluice_protocol::frame::check_frame_size(
            i32::from_be_bytes(size),
            MAX_RESPONSE_BYTES,
        ) {
            Ok(size) if size >= 4 => size,
            Ok(size) => break format!("response frame of {size} bytes"),
            Err(e) => break format!("bad response frame: {e}"),
        };
        let frame = match read_frame(&mut read_half, size).await {
            Ok(frame) => frame,
            Err(e) => break format!("reading a response: {e}"),
        };
        let Some((expected, reply)) = pending_rx.recv().await else {
            break "response without a request".to_owned();
        };
        let correlation_id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        if correlation_id != expected {
            let reason = format!("response correlation id {correlation_id}, expected {expected}");
            let _ = reply.send(Err(ClientError::Connection {
                addr: addr.clone(),
                reason: reason.clone(),
            }));
            break reason;
        }
        let _ = reply.send(Ok(frame.freeze()));
    };
    dead.store(true, Ordering::Relaxed);
    tracing::debug!(%addr, %error, "connection closed");
    pending_rx.close();
    while let Ok((_, reply)) = pending_rx.try_recv() {
        let _ = reply.send(Err(ClientError::Connection {
            addr: addr.clone(),
            reason: error.clone(),
        }));
    }
}
