//! One client connection: length-prefixed request frames in, responses out in request order.
//!
//! Each connection runs two tasks. The *reader* reads frames (each bounded by `socket.request.max.bytes`),
//! decodes them with `sluice_protocol::decode_request` (which guards `kafka-protocol`'s decoder against hostile
//! input) and queues them; it reads ahead while earlier requests are processed, bounded by
//! [`MAX_QUEUED_REQUESTS`] requests and by `socket.request.max.bytes` bytes of queued frames. The *processor*
//! (the connection task itself) takes requests in order, runs each handler to completion and writes its response,
//! so responses leave strictly in request order and requests of one connection never overtake each other (a
//! produce pipeline keeps its order in the log), as in Kafka, which processes one request per connection at a time.
//!
//! Bad input (a negative, zero or oversized length, a frame that does not decode, an unknown API key, a version
//! we do not advertise) closes the connection with a log line; nothing on this path panics. The one exception is
//! ApiVersions with an unsupported version, answered in the v0 format with UNSUPPORTED_VERSION (KIP-511). A
//! connection with no request in flight that stays silent for `connections.max.idle.ms` is closed. On shutdown the
//! reader stops reading, the processor finishes the requests already read and the connection closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::{ApiKey, RequestError, RequestKind, ResponseKind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::apis::{self, RequestContext};
use crate::broker::Broker;

/// Requests read ahead of the one being processed, per connection.
pub const MAX_QUEUED_REQUESTS: usize = 32;

/// Bytes buffered from the socket per connection.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Bytes of responses buffered before a write.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Work for the processor, in request order.
enum Work {
    /// A decoded request and the share of the connection's byte budget its frame holds.
    Request(Box<sluice_protocol::Request>, OwnedSemaphorePermit),
    /// A response decided by the reader itself (the ApiVersions fallback).
    Reply(Bytes),
}

/// Serves one accepted connection until the peer closes it, it misbehaves, it idles out or `shutdown` fires.
pub(crate) async fn serve_connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let (read_half, write_half) = stream.into_split();
    let (queue, mut requests) = mpsc::channel::<Work>(MAX_QUEUED_REQUESTS);
    let in_flight = Arc::new(AtomicUsize::new(0));
    // Aborted however this task ends, a panic in a handler included, so the socket is released at once.
    let reader = AbortOnDrop(tokio::spawn(read_requests(
        broker.clone(),
        read_half,
        peer,
        queue,
        shutdown,
        in_flight.clone(),
    )));

    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, write_half);
    while let Some(work) = requests.recv().await {
        let outcome = match work {
            Work::Reply(frame) => Some(frame),
            Work::Request(request, permit) => {
                let response = process(&broker, *request, peer).await;
                drop(permit);
                match response {
                    Processed::Respond(frame) => Some(frame),
                    Processed::NoResponse => None,
                    Processed::Close => {
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                        break;
                    }
                }
            }
        };
        if let Some(frame) = outcome {
            if let Err(e) = writer.write_all(&frame).await {
                tracing::debug!(%peer, error = %e, "write failed; closing connection");
                in_flight.fetch_sub(1, Ordering::AcqRel);
                break;
            }
        }
        in_flight.fetch_sub(1, Ordering::AcqRel);
        // Coalesce writes while more responses are ready; flush when the queue is empty.
        if requests.is_empty() {
            if let Err(e) = writer.flush().await {
                tracing::debug!(%peer, error = %e, "flush failed; closing connection");
                break;
            }
        }
    }
    drop(reader);
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
    tracing::debug!(%peer, "connection closed");
}

/// What the processor does after a request.
enum Processed {
    Respond(Bytes),
    /// acks=0 produce without errors: Kafka sends nothing.
    NoResponse,
    /// Close the connection (acks=0 produce with an error, or a response that cannot be encoded).
    Close,
}

async fn process(
    broker: &Arc<Broker>,
    request: sluice_protocol::Request,
    peer: SocketAddr,
) -> Processed {
    let ctx = RequestContext {
        api_key: request.api_key,
        api_version: request.api_version(),
        correlation_id: request.correlation_id(),
        client_id: request.header.client_id.as_ref().map(|s| s.to_string()),
        peer,
    };
    tracing::trace!(%peer, api_key = ?ctx.api_key, api_version = ctx.api_version, correlation_id = ctx.correlation_id,
        client_id = ?ctx.client_id, "request");
    let acks_zero = matches!(&request.body, RequestKind::Produce(p) if p.acks == 0);
    let response = match apis::dispatch(broker, &ctx, request.body).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "closing connection");
            return Processed::Close;
        }
    };
    if acks_zero {
        // Kafka closes the connection of an acks=0 producer whose produce failed: it is the only signal it has.
        if let ResponseKind::Produce(p) = &response {
            let failed = p
                .responses
                .iter()
                .flat_map(|t| t.partition_responses.iter())
                .any(|r| r.error_code != 0);
            if failed {
                tracing::info!(%peer, "acks=0 produce failed; closing the connection as Kafka does");
                return Processed::Close;
            }
        }
        return Processed::NoResponse;
    }
    match sluice_protocol::encode_response(
        ctx.api_key,
        ctx.api_version,
        ctx.correlation_id,
        &response,
    ) {
        Ok(frame) => Processed::Respond(frame),
        Err(e) => {
            tracing::error!(%peer, api_key = ?ctx.api_key, api_version = ctx.api_version, error = %e,
                "cannot encode response; closing connection");
            Processed::Close
        }
    }
}

/// Why the reader stopped.
#[derive(Debug)]
enum ReadEnd {
    PeerClosed,
    Shutdown,
    Idle,
    Io(std::io::Error),
    BadFrame(String),
    ProcessorGone,
}

async fn read_requests(
    broker: Arc<Broker>,
    read_half: OwnedReadHalf,
    peer: SocketAddr,
    queue: mpsc::Sender<Work>,
    mut shutdown: watch::Receiver<bool>,
    in_flight: Arc<AtomicUsize>,
) {
    let end = read_loop(&broker, read_half, peer, &queue, &mut shutdown, &in_flight).await;
    match end {
        ReadEnd::PeerClosed | ReadEnd::ProcessorGone => {
            tracing::debug!(%peer, "peer closed the connection")
        }
        ReadEnd::Shutdown => tracing::debug!(%peer, "shutting down: no more requests read"),
        ReadEnd::Idle => {
            tracing::info!(%peer, idle_ms = broker.config.connections_max_idle_ms, "closing idle connection")
        }
        ReadEnd::Io(e) => tracing::debug!(%peer, error = %e, "read failed; closing connection"),
        ReadEnd::BadFrame(reason) => {
            tracing::warn!(%peer, %reason, "bad request; closing connection")
        }
    }
}

async fn read_loop(
    broker: &Arc<Broker>,
    read_half: OwnedReadHalf,
    peer: SocketAddr,
    queue: &mpsc::Sender<Work>,
    shutdown: &mut watch::Receiver<bool>,
    in_flight: &AtomicUsize,
) -> ReadEnd {
    let max_bytes = broker.config.socket_request_max_bytes;
    let max_bytes_i32 = i32::try_from(max_bytes).unwrap_or(i32::MAX);
    let idle = Duration::from_millis(broker.config.connections_max_idle_ms.max(1));
    let budget = Arc::new(Semaphore::new(max_bytes.min(Semaphore::MAX_PERMITS)));
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    tracing::trace!(%peer, "reading requests");
    loop {
        if *shutdown.borrow() {
            return ReadEnd::Shutdown;
        }
        // Wait for the next frame's first byte (fill_buf is cancel-safe: no byte is lost on timeout).
        tokio::select! {
            ready = tokio::time::timeout(idle, reader.fill_buf()) => match ready {
                Ok(Ok([])) => return ReadEnd::PeerClosed,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return ReadEnd::Io(e),
                Err(_) => {
                    if in_flight.load(Ordering::Acquire) == 0 {
                        return ReadEnd::Idle;
                    }
                    continue;
                }
            },
            _ = shutdown.changed() => return ReadEnd::Shutdown,
        }
        // The rest of the frame must arrive within the idle time too.
        let frame =
            match tokio::time::timeout(idle, read_frame(&mut reader, max_bytes_i32, &budget)).await
            {
                Ok(Ok(frame)) => frame,
                Ok(Err(end)) => return end,
                Err(_) => {
                    return ReadEnd::BadFrame(format!(
                        "frame not completed within {} ms",
                        idle.as_millis()
                    ))
                }
            };
        let (frame, permit) = frame;
        let work = match sluice_protocol::decode_request(frame) {
            Ok(request) => match apis::supported_versions(request.api_key) {
                Some((min, max)) if (min..=max).contains(&request.api_version()) => {
                    Work::Request(Box::new(request), permit)
                }
                Some(_) if request.api_key == ApiKey::ApiVersions => {
                    Work::Reply(api_versions_fallback(request.correlation_id()))
                }
                Some((min, max)) => {
                    return ReadEnd::BadFrame(format!(
                        "{:?} v{} is not supported (we serve v{min}-v{max}); correlation id {}",
                        request.api_key,
                        request.api_version(),
                        request.correlation_id()
                    ))
                }
                None => {
                    return ReadEnd::BadFrame(format!(
                        "{:?} is not served by this broker; correlation id {}",
                        request.api_key,
                        request.correlation_id()
                    ))
                }
            },
            Err(RequestError::UnsupportedVersion {
                api_key,
                correlation_id,
                ..
            }) if api_key == ApiKey::ApiVersions as i16 => {
                Work::Reply(api_versions_fallback(correlation_id))
            }
            Err(e) => return ReadEnd::BadFrame(e.to_string()),
        };
        in_flight.fetch_add(1, Ordering::AcqRel);
        if queue.send(work).await.is_err() {
            return ReadEnd::ProcessorGone;
        }
    }
}

/// Reads one size-prefixed frame, holding `size` bytes of the connection's budget until it is processed.
async fn read_frame(
    reader: &mut BufReader<OwnedReadHalf>,
    max_bytes: i32,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, OwnedSemaphorePermit), ReadEnd> {
    let size = match reader.read_i32().await {
        Ok(size) => size,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ReadEnd::BadFrame("truncated frame size".into()))
        }
        Err(e) => return Err(ReadEnd::Io(e)),
    };
    let size = sluice_protocol::frame::check_frame_size(size, max_bytes)
        .map_err(|e| ReadEnd::BadFrame(e.to_string()))?;
    let permits =
        u32::try_from(size).map_err(|_| ReadEnd::BadFrame(format!("frame of {size} bytes")))?;
    let permit = budget
        .clone()
        .acquire_many_owned(permits)
        .await
        .map_err(|_| ReadEnd::ProcessorGone)?;
    let mut body = Vec::with_capacity(size);
    let read = (&mut *reader)
        .take(size as u64)
        .read_to_end(&mut body)
        .await
        .map_err(ReadEnd::Io)?;
    if read != size {
        return Err(ReadEnd::BadFrame(format!(
            "truncated frame: {read} of {size} bytes"
        )));
    }
    Ok((Bytes::from(body), permit))
}

/// Kafka's answer to an ApiVersions request whose version it does not support: v0 format, UNSUPPORTED_VERSION,
/// and ApiVersions' own supported range so the client can retry (KIP-511, `ApiVersionsRequest.getErrorResponse`).
fn api_versions_fallback(correlation_id: i32) -> Bytes {
    let ranges: Vec<(i16, i16, i16)> = apis::SUPPORTED_APIS
        .iter()
        .filter(|a| a.api_key == ApiKey::ApiVersions)
        .map(|a| (a.api_key as i16, a.min_version, a.max_version))
        .collect();
    sluice_protocol::api_versions_unsupported_response(correlation_id, &ranges)
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
