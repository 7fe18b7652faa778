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
//!
//! When the peer goes away (the reader sees end of stream or a read error), nobody can receive a response any
//! more: an in-flight Fetch (which may be parked in the purgatory for `max_wait_ms`; its wait is cancel-safe) is
//! dropped at once, later Fetches are skipped, and from then on no response is written, so responses never leave
//! out of order. Other requests already read still run (an acks=0 produce sent just before closing lands).
//!
//! Responses are written as chunks ([`sluice_protocol::EncodedResponse`]): a Fetch response's record bytes are the
//! buffers the log read returned, handed to the socket with vectored writes (`writev`) without another copy;
//! small chunks (most responses) are copied into a staging buffer so that pipelined responses leave together.
//!
//! On plaintext connections a Fetch's records are not even read into memory: the Fetch handler takes them as
//! segment file ranges ([`register_file_records`], available while this module processes a Fetch), the encoder
//! turns them into file chunks, and the writer hands those to the socket with `sendfile` (page cache to socket, no
//! copy through user space), after writing everything queued before them so the order on the wire is kept. A file
//! that turns out shorter than its range (a segment truncated meanwhile) closes the connection: a frame is never
//! sent short. TLS connections (not served yet) cannot use `sendfile`: they must not open the file-records scope,
//! so their Fetch falls back to reading records into memory.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use sluice_protocol::response::{FileChunk, FileRecords, ResponseChunk};
use sluice_protocol::{ApiKey, EncodedResponse, RequestError, RequestKind, ResponseKind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
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
/// Response chunks shorter than this are copied into the staging buffer rather than written as their own `iovec`.
const COPY_CHUNK_MAX_BYTES: usize = 512;
/// `iovec`s per `writev` call (Linux allows 1024).
const MAX_IOVECS: usize = 64;

tokio::task_local! {
    /// File records the Fetch handler of the request being processed registered ([`register_file_records`]). Set
    /// only while a Fetch is processed on a connection that writes with `sendfile`.
    static FILE_RECORDS: RefCell<Vec<FileRecords>>;
}

/// True while processing a Fetch whose response may carry file ranges ([`register_file_records`]).
pub(crate) fn file_records_enabled() -> bool {
    FILE_RECORDS.try_with(|_| ()).is_ok()
}

/// Registers a file range as the records of one partition of the Fetch being processed and returns the
/// placeholder to put in its `records` (see `sluice_protocol::response::FileRecords`); the range is written with
/// `sendfile`. `None` outside such a Fetch (a TLS connection, a test calling the handler directly) or when the
/// range cannot be carried: the caller then reads the records into memory.
pub(crate) fn register_file_records(chunk: FileChunk) -> Option<Bytes> {
    FILE_RECORDS
        .try_with(|files| {
            let mut files = files.borrow_mut();
            let records = FileRecords::new(files.len(), chunk)?;
            let placeholder = records.records();
            files.push(records);
            Some(placeholder)
        })
        .ok()
        .flatten()
}

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
    listener: crate::apis::ListenerKind,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let (read_half, write_half) = stream.into_split();
    let (queue, mut requests) = mpsc::channel::<Work>(MAX_QUEUED_REQUESTS);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (peer_gone_tx, mut peer_gone) = watch::channel(false);
    // Aborted however this task ends, a panic in a handler included, so the socket is released at once.
    let reader = AbortOnDrop(tokio::spawn(read_requests(
        broker.clone(),
        read_half,
        peer,
        queue,
        shutdown,
        in_flight.clone(),
        peer_gone_tx,
    )));

    let mut writer = ResponseWriter::new(write_half);
    // Set once the peer went away and a response was dropped: nothing is written after that.
    let mut muted = false;
    while let Some(work) = requests.recv().await {
        let outcome = match work {
            Work::Reply(frame) => Some(EncodedResponse::from_frame(frame)),
            Work::Request(request, permit) => {
                // Only a Fetch is dropped when the peer goes: it has no effect but its response, and it may wait.
                let is_fetch = request.api_key == ApiKey::Fetch;
                let response = if !is_fetch {
                    process(&broker, *request, peer, listener).await
                } else if muted || *peer_gone.borrow() {
                    Processed::PeerGone
                } else {
                    tokio::select! {
                        response = process(&broker, *request, peer, listener) => response,
                        () = peer_went_away(&mut peer_gone) => Processed::PeerGone,
                    }
                };
                drop(permit);
                match response {
                    Processed::Respond(frame) => Some(frame),
                    Processed::NoResponse => None,
                    Processed::PeerGone => {
                        if !muted {
                            tracing::debug!(%peer, "peer closed the connection; in-flight fetch dropped");
                            muted = true;
                        }
                        None
                    }
                    Processed::Close => {
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                        break;
                    }
                }
            }
        };
        in_flight.fetch_sub(1, Ordering::AcqRel);
        if muted {
            continue;
        }
        if let Some(response) = outcome {
            writer.push(response);
        }
        // Coalesce writes while more responses are ready; write when the queue is empty or enough is staged.
        if requests.is_empty() || writer.buffered_bytes() >= WRITE_BUFFER_BYTES {
            if let Err(e) = writer.flush().await {
                tracing::debug!(%peer, error = %e, "write failed; closing connection");
                break;
            }
        }
    }
    drop(reader);
    if !muted {
        let _ = writer.flush().await;
    }
    let _ = writer.shutdown().await;
    tracing::debug!(%peer, "connection closed");
}

/// Completes when the reader reports that the peer went away; never if the reader ended for another reason
/// (shutdown, idle, a bad frame), so that the requests already read are answered.
async fn peer_went_away(peer_gone: &mut watch::Receiver<bool>) {
    if peer_gone.wait_for(|gone| *gone).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A queued piece of output.
enum Queued {
    /// Bytes; may be partly written already (advanced).
    Bytes(Bytes),
    /// A file range, written with `sendfile`; `sent` bytes of it are written already.
    File { chunk: FileChunk, sent: u64 },
}

impl Queued {
    fn remaining(&self) -> usize {
        match self {
            Queued::Bytes(b) => b.len(),
            Queued::File { chunk, sent } => (u64::from(chunk.len) - sent) as usize,
        }
    }
}

/// The write side of a connection: response chunks queued in order, small ones copied into a staging buffer,
/// bytes written with vectored writes and file ranges with `sendfile`.
struct ResponseWriter {
    socket: OwnedWriteHalf,
    /// Small chunks copied together; sealed into `queue` before a large chunk or a write.
    staging: BytesMut,
    /// Chunks to write, in order; the first may be partly written already.
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// A write failed: the stream may end inside a frame, so nothing more is written.
    failed: bool,
}

impl ResponseWriter {
    fn new(socket: OwnedWriteHalf) -> ResponseWriter {
        ResponseWriter {
            socket,
            staging: BytesMut::with_capacity(WRITE_BUFFER_BYTES),
            queue: VecDeque::new(),
            queued_bytes: 0,
            failed: false,
        }
    }

    /// Bytes waiting to be written.
    fn buffered_bytes(&self) -> usize {
        self.queued_bytes + self.staging.len()
    }

    /// Queues a response behind the ones already queued.
    fn push(&mut self, response: EncodedResponse) {
        for chunk in response.into_chunks() {
            match chunk {
                ResponseChunk::Bytes(chunk) if chunk.len() < COPY_CHUNK_MAX_BYTES => {
                    self.staging.extend_from_slice(&chunk);
                }
                ResponseChunk::Bytes(chunk) => {
                    self.seal_staging();
                    self.queued_bytes += chunk.len();
                    self.queue.push_back(Queued::Bytes(chunk));
                }
                ResponseChunk::File(chunk) => {
                    self.seal_staging();
                    self.queued_bytes += chunk.len as usize;
                    self.queue.push_back(Queued::File { chunk, sent: 0 });
                }
            }
        }
    }

    fn seal_staging(&mut self) {
        if !self.staging.is_empty() {
            let staged = self.staging.split().freeze();
            self.queued_bytes += staged.len();
            self.queue.push_back(Queued::Bytes(staged));
            if self.staging.capacity() < COPY_CHUNK_MAX_BYTES {
                self.staging.reserve(WRITE_BUFFER_BYTES);
            }
        }
    }

    /// Writes everything queued, in order. After a failure nothing more is written (the failed write may have
    /// ended inside a frame) and every later call fails.
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.failed {
            return Err(std::io::Error::other("an earlier write failed"));
        }
        self.seal_staging();
        let written = self.write_queue().await;
        if written.is_err() {
            self.failed = true;
            self.queue.clear();
            self.queued_bytes = 0;
        }
        written
    }

    async fn write_queue(&mut self) -> std::io::Result<()> {
        while let Some(front) = self.queue.front() {
            let written = match front {
                Queued::Bytes(_) => self.write_bytes().await?,
                Queued::File { .. } => self.send_file().await?,
            };
            self.advance(written);
        }
        Ok(())
    }

    /// One vectored write of the bytes chunks at the front of the queue (up to the first file range).
    async fn write_bytes(&mut self) -> std::io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        for (slot, chunk) in slices.iter_mut().zip(self.queue.iter()) {
            let Queued::Bytes(chunk) = chunk else {
                break;
            };
            *slot = IoSlice::new(chunk);
            count += 1;
        }
        let written = self.socket.write_vectored(&slices[..count]).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        Ok(written)
    }

    /// One `sendfile` of the file range at the front of the queue, when the socket takes it: returns the bytes
    /// sent (a partial send is fine; the rest is sent by the next call). A file that ends before the range does
    /// is an error: the frame cannot be completed.
    async fn send_file(&mut self) -> std::io::Result<usize> {
        let Some(Queued::File { chunk, sent }) = self.queue.front() else {
            return Ok(0);
        };
        let mut position = chunk.position + sent;
        let count = (u64::from(chunk.len) - sent) as usize;
        let stream: &TcpStream = self.socket.as_ref();
        loop {
            stream.writable().await?;
            let sent_now = stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(stream, &*chunk.file, Some(&mut position), count)
                    .map_err(std::io::Error::from)
            });
            match sent_now {
                Ok(0) => {
                    tracing::warn!(
                        position, missing_bytes = count,
                        "segment file ends inside the fetched range (truncated meanwhile?); closing the connection rather than send a short response"
                    );
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "segment file shorter than the fetched range",
                    ));
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops `written` bytes from the front of the queue.
    fn advance(&mut self, mut written: usize) {
        self.queued_bytes = self.queued_bytes.saturating_sub(written);
        while written > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            let remaining = front.remaining();
            if written >= remaining {
                written -= remaining;
                self.queue.pop_front();
                continue;
            }
            match front {
                Queued::Bytes(b) => b.advance(written),
                Queued::File { sent, .. } => *sent += written as u64,
            }
            written = 0;
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.socket.shutdown().await
    }
}

/// What the processor does after a request.
enum Processed {
    Respond(EncodedResponse),
    /// acks=0 produce without errors: Kafka sends nothing.
    NoResponse,
    /// The peer went away before the response was ready: the handler was dropped.
    PeerGone,
    /// Close the connection (acks=0 produce with an error, or a response that cannot be encoded).
    Close,
}

async fn process(
    broker: &Arc<Broker>,
    request: sluice_protocol::Request,
    peer: SocketAddr,
    listener: crate::apis::ListenerKind,
) -> Processed {
    let ctx = RequestContext {
        listener,
        api_key: request.api_key,
        api_version: request.api_version(),
        correlation_id: request.correlation_id(),
        client_id: request.header.client_id.as_ref().map(|s| s.to_string()),
        peer,
    };
    tracing::trace!(%peer, api_key = ?ctx.api_key, api_version = ctx.api_version, correlation_id = ctx.correlation_id,
        client_id = ?ctx.client_id, "request");
    let acks_zero = matches!(&request.body, RequestKind::Produce(p) if p.acks == 0);
    // A Fetch may return records as file ranges, written with `sendfile`. This is a plaintext connection; a TLS
    // connection must dispatch without the file-records scope so that its records are read into memory.
    let (response, files) = if ctx.api_key == ApiKey::Fetch {
        FILE_RECORDS
            .scope(RefCell::new(Vec::new()), async {
                let response = apis::dispatch(broker, &ctx, request.body).await;
                (response, FILE_RECORDS.with(RefCell::take))
            })
            .await
    } else {
        (apis::dispatch(broker, &ctx, request.body).await, Vec::new())
    };
    let response = match response {
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
    match sluice_protocol::response::encode_response_chunks_with_files(
        ctx.api_key,
        ctx.api_version,
        ctx.correlation_id,
        &response,
        &files,
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
    peer_gone: watch::Sender<bool>,
) {
    let end = read_loop(&broker, read_half, peer, &queue, &mut shutdown, &in_flight).await;
    if matches!(end, ReadEnd::PeerClosed | ReadEnd::Io(_)) {
        // Nobody will read a response: let the processor drop a fetch waiting for data.
        peer_gone.send_replace(true);
    }
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
