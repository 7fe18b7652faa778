//! The controller quorum's network: Raft messages between the voters, over the CONTROLLER listener.
//!
//! A CONTROLLER listener serves two kinds of connections, told apart by the API key of their first frame (peeked,
//! not consumed): Kafka requests (BrokerRegistration, BrokerHeartbeat, DescribeQuorum, forwarded admin requests;
//! served by `network.rs` like any client connection), and quorum connections, whose frames carry
//! [`QUORUM_API_KEY`], a key Kafka does not use:
//!
//! `[size i32][api key i16 = QUORUM_API_KEY][kind u8][body]`, size counting everything after itself. Kinds:
//! - 1, a raft-rs `Message` protobuf between voters: one-way (Raft's messages carry their own responses);
//! - 2, an observer's fetch of the committed log ([`FetchRequest`]), answered on the same connection by a frame of
//!   kind 3 ([`FetchResponse`]): broker-only nodes follow the metadata log this way (KIP-595 observers).
//!
//! A peer that sends anything else is disconnected with a log line.
//!
//! Each voter keeps one outbound connection per peer, fed by a bounded queue: a message that finds the queue full
//! or the connection down is dropped, and Raft retransmits (heartbeats, probes, snapshot retry).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_metadata::quorum::observer::{FetchRequest, FetchResponse};
use sluice_metadata::quorum::{self, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::controller::{Controller, Transport};

/// The API key of quorum frames (outside Kafka's range of API keys).
pub const QUORUM_API_KEY: i16 = 0x7A00;
const KIND_RAFT_MESSAGE: u8 = 1;
const KIND_OBSERVER_FETCH: u8 = 2;
const KIND_OBSERVER_FETCH_RESPONSE: u8 = 3;
/// An observer gives up on a fetch answer after its long-poll wait plus this.
const OBSERVER_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest quorum frame accepted (a snapshot of a large image travels in one message).
const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 1024;
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Keepalive of served quorum connections: probed after this much silence, ...
const SERVE_KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// ... then this often, closed after this many unanswered probes.
const SERVE_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const SERVE_KEEPALIVE_PROBES: u32 = 3;

/// Sends Raft messages to the other voters over TCP.
pub struct NetTransport {
    peers: HashMap<u64, mpsc::Sender<Bytes>>,
}

impl std::fmt::Debug for NetTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetTransport")
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn frame(message: &Message) -> Bytes {
    frame_of(KIND_RAFT_MESSAGE, &quorum::encode_message(message))
}

fn frame_of(kind: u8, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(body.len() + 7);
    buf.put_i32(i32::try_from(body.len() + 3).unwrap_or(i32::MAX));
    buf.put_i16(QUORUM_API_KEY);
    buf.put_u8(kind);
    buf.put_slice(body);
    buf.freeze()
}

/// Reads one quorum frame into `buf`: `(kind, body)`. `Err` names what was wrong (the connection should close).
async fn read_frame<'a>(
    stream: &mut TcpStream,
    buf: &'a mut Vec<u8>,
) -> Result<(u8, &'a [u8]), String> {
    let size = stream.read_i32().await.map_err(|e| e.to_string())?;
    let size = usize::try_from(size).map_err(|_| format!("negative frame size {size}"))?;
    if !(3..=MAX_FRAME_BYTES).contains(&size) {
        return Err(format!("frame size {size} out of bounds"));
    }
    buf.resize(size, 0);
    stream.read_exact(buf).await.map_err(|e| e.to_string())?;
    let api_key = i16::from_be_bytes([buf[0], buf[1]]);
    if api_key != QUORUM_API_KEY {
        return Err(format!("not a quorum frame (api key {api_key})"));
    }
    Ok((buf[2], &buf[3..]))
}

/// An observer's connection to one voter's CONTROLLER listener.
#[derive(Debug)]
pub struct ObserverClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl ObserverClient {
    /// Connects to a voter (bounded by two seconds).
    pub async fn connect(host: &str, port: u16) -> Result<ObserverClient, String> {
        let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect((host, port)))
            .await
            .map_err(|_| format!("connecting to {host}:{port} timed out"))?
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(ObserverClient {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends one fetch and waits for its answer. After an error the connection must be dropped.
    pub async fn fetch(&mut self, request: &FetchRequest) -> Result<FetchResponse, String> {
        let mut body = Vec::new();
        request.encode(&mut body);
        let exchange = async {
            self.stream
                .write_all(&frame_of(KIND_OBSERVER_FETCH, &body))
                .await
                .map_err(|e| e.to_string())?;
            let (kind, body) = read_frame(&mut self.stream, &mut self.buf).await?;
            if kind != KIND_OBSERVER_FETCH_RESPONSE {
                return Err(format!("unexpected quorum frame kind {kind}"));
            }
            FetchResponse::decode(body).map_err(|e| e.to_string())
        };
        let timeout =
            Duration::from_millis(u64::from(request.max_wait_ms)) + OBSERVER_FETCH_TIMEOUT;
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| "no fetch answer in time".to_string())?
    }
}

impl Transport for NetTransport {
    fn send(&self, messages: Vec<Message>) {
        for m in messages {
            let Some(peer) = self.peers.get(&m.to) else {
                tracing::debug!(to = m.to, "raft message for an unknown peer dropped");
                continue;
            };
            if peer.try_send(frame(&m)).is_err() {
                tracing::debug!(to = m.to, "raft message dropped: peer queue full or closed");
            }
        }
    }
}

impl NetTransport {
    /// Starts one sender task per voter other than `node_id`; they stop when `shutdown` turns true.
    /// Connects to every voter but `node_id`. A connection whose written bytes stay unacknowledged for
    /// `request_timeout` (`controller.quorum.request.timeout.ms`: a peer cut off, or gone without closing) is
    /// dropped and made again.
    pub fn start(
        node_id: i32,
        voters: &[(i32, String, u16)],
        request_timeout: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<NetTransport> {
        let mut peers = HashMap::new();
        for (id, host, port) in voters {
            if *id == node_id {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            peers.insert(crate::controller::raft_id(*id), tx);
            tokio::spawn(peer_sender(
                *id,
                format!("{host}:{port}"),
                request_timeout,
                rx,
                shutdown.clone(),
            ));
        }
        Arc::new(NetTransport { peers })
    }
}

/// Keeps a connection to one peer and writes its queued frames, reconnecting with backoff.
async fn peer_sender(
    peer: i32,
    address: String,
    request_timeout: Duration,
    mut queue: mpsc::Receiver<Bytes>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let connected = tokio::select! {
            c = tokio::time::timeout(request_timeout, TcpStream::connect(&address)) => c,
            _ = shutdown.changed() => return,
        };
        let stream = match connected {
            Ok(Ok(stream)) => stream,
            _ => {
                // Drop what queued up meanwhile: stale Raft messages are worthless, Raft sends fresh ones.
                while queue.try_recv().is_ok() {}
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Raft's frames are one-way: nothing would notice a peer that stopped acknowledging (a cut cable, a
        // dropped route), and after the heal the queued bytes would wait for TCP's backed-off retransmission timer
        // (20 s and more after a long cut). Kafka's voters time out each request instead; here the kernel aborts
        // the connection once written data stays unacknowledged for the request timeout, and it is made again.
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(request_timeout))
        {
            tracing::debug!(peer, error = %e, "cannot set TCP_USER_TIMEOUT on the quorum connection");
        }
        backoff = Duration::from_millis(50);
        tracing::debug!(peer, %address, "quorum connection established");
        // The peer never writes on this connection: a read that returns means it closed (a restarted peer's old
        // connection). Noticing that at once, rather than on the next failed write, keeps the first votes after a
        // peer restarts from being written into a dead socket and lost (an extra election timeout each).
        let (mut reader, mut writer) = stream.into_split();
        let mut probe = [0u8; 1];
        loop {
            let next = tokio::select! {
                m = queue.recv() => m,
                _ = reader.read(&mut probe) => {
                    tracing::debug!(peer, "quorum connection closed by the peer; reconnecting");
                    break;
                }
                _ = shutdown.changed() => return,
            };
            let Some(bytes) = next else {
                return;
            };
            if let Err(e) = writer.write_all(&bytes).await {
                tracing::debug!(peer, error = %e, "quorum connection lost");
                break;
            }
        }
    }
}

/// True when the first frame's API key (bytes 4..6 of the connection) is [`QUORUM_API_KEY`].
pub async fn is_quorum_connection(stream: &TcpStream) -> bool {
    let mut head = [0u8; 6];
    // Peek until six bytes are there (or the peer stops sending): a client's first frame is at least that long.
    for _ in 0..50 {
        match stream.peek(&mut head).await {
            Ok(6) => return i16::from_be_bytes([head[4], head[5]]) == QUORUM_API_KEY,
            Ok(0) | Err(_) => return false,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    false
}

/// Reads quorum frames from a peer: Raft messages go to the controller, observer fetches are answered on this
/// connection; until the peer closes or sends something that is not a quorum frame.
pub async fn serve_quorum_connection(
    controller: Controller,
    mut stream: TcpStream,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = stream.peer_addr().ok();
    // This side only reads Raft frames: a peer that vanished without closing (cut off, then reconnected on a new
    // connection) would leave this one open forever. Keepalive probes close it once the peer stops answering.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(SERVE_KEEPALIVE_IDLE)
        .with_interval(SERVE_KEEPALIVE_INTERVAL)
        .with_retries(SERVE_KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(?peer, error = %e, "cannot set keepalive on the quorum connection");
    }
    let mut buf = Vec::new();
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut stream, &mut buf) => frame,
            _ = shutdown.changed() => return,
        };
        let (kind, body) = match frame {
            Ok(frame) => frame,
            Err(e) => {
                tracing::debug!(?peer, error = %e, "quorum connection closed");
                return;
            }
        };
        match kind {
            KIND_RAFT_MESSAGE => match quorum::decode_message(body) {
                Some(message) => controller.step(message),
                None => {
                    tracing::warn!(?peer, "undecodable raft message; closing");
                    return;
                }
            },
            KIND_OBSERVER_FETCH => {
                let request = match FetchRequest::decode(body) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(?peer, error = %e, "closing");
                        return;
                    }
                };
                let response = tokio::select! {
                    r = controller.observer_fetch(request) => r,
                    _ = shutdown.changed() => return,
                };
                let mut out = Vec::new();
                response.encode(&mut out);
                if stream
                    .write_all(&frame_of(KIND_OBSERVER_FETCH_RESPONSE, &out))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            other => {
                tracing::warn!(?peer, kind = other, "unknown quorum frame kind; closing");
                return;
            }
        }
    }
}
