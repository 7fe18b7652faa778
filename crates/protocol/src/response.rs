//! Response encoding: a typed response body to a complete frame (size prefix, response header, body), either
//! as one buffer ([`encode_response`]) or as a list of chunks whose record bytes are the caller's own buffers,
//! never copied ([`encode_response_chunks`], used for Fetch), or ranges of files for `sendfile`
//! ([`encode_response_chunks_with_files`]).

use std::fs::File;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::Encodable;

use crate::error::EncodeError;
use crate::frame::FRAME_SIZE_PREFIX_BYTES;
use crate::guard_generated;
use crate::ErrorCode;

/// Encodes a complete response frame: 4-byte size, response header (v0, or v1 with tagged fields for
/// flexible versions, as `kafka-protocol`'s `ApiKey::response_header_version` says; ApiVersions always
/// uses v0), then the body at `api_version`.
///
/// `kafka-protocol` writes no tagged field that holds its default value (older librdkafka mis-skips them,
/// and Apache Kafka never sends them); `tests/response_tags.rs` checks this for every API and version.
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let header_version = check_response_body(api_key, api_version, body)?;
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_size = header.compute_size(header_version).map_err(encode_err)?;
    let mut buf = BytesMut::with_capacity(FRAME_SIZE_PREFIX_BYTES + header_size + 64);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(encode_err)?;
    body.encode(&mut buf, api_version).map_err(encode_err)?;
    let size_bytes = buf.len() - FRAME_SIZE_PREFIX_BYTES;
    let size = i32::try_from(size_bytes).map_err(|_| EncodeError::TooLarge { size_bytes })?;
    buf[..FRAME_SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// Records shorter than this are copied into the frame like any other field: a separate chunk (one more
/// `iovec` to write) costs more than copying a few hundred bytes.
pub const SPLICE_MIN_BYTES: usize = 1024;

/// Encodes the same frame as [`encode_response`], byte for byte, as a list of chunks: the size prefix, header and
/// body as `kafka-protocol` encodes them, except that in a Fetch response each partition's records of at least
/// [`SPLICE_MIN_BYTES`] are not copied: the chunk list holds their length prefix at the end of one chunk and the
/// records' own `Bytes` (the buffer the log read returned) as the next chunk. Write the chunks in order with one
/// vectored write and the record bytes go from the read buffer to the socket without another copy.
///
/// Other APIs, and Fetch responses without records worth splicing, come back as one chunk.
pub fn encode_response_chunks(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<EncodedResponse, EncodeError> {
    encode_response_chunks_with_files(api_key, api_version, correlation_id, body, &[])
}

/// Like [`encode_response_chunks`], and records that live in files become file chunks: a Fetch partition whose
/// `records` is the [`FileRecords::records`] placeholder of one of `files` is encoded with its length prefix as
/// usual, and its records chunk is that file range ([`ResponseChunk::File`]), to be written with `sendfile`. The
/// placeholder's bytes never reach the frame: if the encoder does not hand every placeholder over whole (it does
/// for Fetch), this fails with [`EncodeError::Encode`] rather than fall back to copying them.
pub fn encode_response_chunks_with_files(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
    files: &[FileRecords],
) -> Result<EncodedResponse, EncodeError> {
    let ResponseKind::Fetch(fetch) = body else {
        return encode_response(api_key, api_version, correlation_id, body)
            .map(EncodedResponse::from_frame);
    };
    let header_version = check_response_body(api_key, api_version, body)?;
    let by_placeholder: std::collections::HashMap<(usize, usize), &FileRecords> = files
        .iter()
        .map(|f| ((f.placeholder.as_ptr() as usize, f.placeholder.len()), f))
        .collect();
    let is_file = |records: &Bytes| {
        by_placeholder
            .get(&(records.as_ptr() as usize, records.len()))
            .copied()
    };
    let mut file_chunks = 0usize;
    let splice: Vec<Splice> = fetch
        .responses
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .filter_map(|partition| partition.records.as_ref())
        .filter_map(|records| match is_file(records) {
            Some(file) => {
                file_chunks += 1;
                Some(Splice::File(records.clone(), file.chunk.clone()))
            }
            None => (records.len() >= SPLICE_MIN_BYTES).then(|| Splice::Bytes(records.clone())),
        })
        .collect();
    if splice.is_empty() {
        return encode_response(api_key, api_version, correlation_id, body)
            .map(EncodedResponse::from_frame);
    }
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = SplicingBuf::new(splice, 256);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(encode_err)?;
    fetch.encode(&mut buf, api_version).map_err(encode_err)?;
    let spliced_files = buf
        .spliced
        .iter()
        .filter(|(_, s)| matches!(s, ResponseChunk::File(_)))
        .count();
    match buf.finish()? {
        Some(encoded) if spliced_files == file_chunks => Ok(encoded),
        _ if file_chunks > 0 => Err(EncodeError::Encode(
            "file records were not spliced whole; the frame cannot be encoded without reading them"
                .into(),
        )),
        // The encoder reached back into bytes already handed out as chunks (it does not for Fetch): the plain
        // encoding is always right.
        _ => encode_response(api_key, api_version, correlation_id, body)
            .map(EncodedResponse::from_frame),
    }
}

/// A range of a file holding records, to be written with `sendfile` (a Fetch partition's records as a segment
/// file range).
#[derive(Clone, Debug)]
pub struct FileChunk {
    /// The open file; holding it keeps the range readable when the file is renamed or deleted meanwhile.
    pub file: Arc<File>,
    /// Position of the first byte.
    pub position: u64,
    /// Length in bytes.
    pub len: u32,
}

impl PartialEq for FileChunk {
    fn eq(&self, other: &FileChunk) -> bool {
        Arc::ptr_eq(&self.file, &other.file)
            && self.position == other.position
            && self.len == other.len
    }
}

impl Eq for FileChunk {}

/// Bytes of the zero region that placeholders point into: the largest [`FileRecords`] plus one distinct start per
/// placeholder of a response. Allocated zeroed on first use and never written, so the kernel maps none of its
/// pages (only address space is taken).
const PLACEHOLDER_REGION_BYTES: usize = FileRecords::MAX_BYTES + FileRecords::MAX_PER_RESPONSE;

static PLACEHOLDER_REGION: OnceLock<Bytes> = OnceLock::new();

/// Records of a Fetch partition that live in a file. `kafka-protocol`'s `PartitionData::records` can only hold
/// `Bytes`, so the partition carries [`FileRecords::records`], a placeholder of the same length (zeros, never
/// sent), and [`encode_response_chunks_with_files`] swaps in the file range when encoding.
#[derive(Clone, Debug)]
pub struct FileRecords {
    placeholder: Bytes,
    chunk: FileChunk,
}

impl FileRecords {
    /// Largest file range carried this way; larger records are read into memory instead.
    pub const MAX_BYTES: usize = 64 * 1024 * 1024;
    /// Most file records in one response; the rest are read into memory instead.
    pub const MAX_PER_RESPONSE: usize = 64 * 1024;

    /// File records for the `index`th file range of a response (0, 1, 2, ...: distinct indexes give distinct
    /// placeholders). `None` for an empty range, a range over [`FileRecords::MAX_BYTES`], or an index from
    /// [`FileRecords::MAX_PER_RESPONSE`] on.
    pub fn new(index: usize, chunk: FileChunk) -> Option<FileRecords> {
        let len = chunk.len as usize;
        if len == 0 || len > Self::MAX_BYTES || index >= Self::MAX_PER_RESPONSE {
            return None;
        }
        let region =
            PLACEHOLDER_REGION.get_or_init(|| Bytes::from(vec![0u8; PLACEHOLDER_REGION_BYTES]));
        Some(FileRecords {
            placeholder: region.slice(index..index + len),
            chunk,
        })
    }

    /// The placeholder to put in `PartitionData::records` (the same length as the file range).
    pub fn records(&self) -> Bytes {
        self.placeholder.clone()
    }

    /// The file range.
    pub fn chunk(&self) -> &FileChunk {
        &self.chunk
    }
}

/// One piece of an [`EncodedResponse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseChunk {
    /// Bytes in memory.
    Bytes(Bytes),
    /// A file range (records), for `sendfile`. A connection that cannot use `sendfile` (TLS) must not be handed
    /// these: its Fetch reads records into memory instead.
    File(FileChunk),
}

impl ResponseChunk {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            ResponseChunk::Bytes(b) => b.len(),
            ResponseChunk::File(f) => f.len as usize,
        }
    }

    /// True for a chunk of no bytes (never produced by the encoders).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`SplicingBuf`] expects the encoder to `put_slice`, in order.
enum Splice {
    /// Records in memory: spliced as themselves.
    Bytes(Bytes),
    /// A placeholder, spliced as the file range.
    File(Bytes, FileChunk),
}

impl Splice {
    fn bytes(&self) -> &Bytes {
        match self {
            Splice::Bytes(b) | Splice::File(b, _) => b,
        }
    }

    fn into_chunk(self) -> ResponseChunk {
        match self {
            Splice::Bytes(b) => ResponseChunk::Bytes(b),
            Splice::File(_, f) => ResponseChunk::File(f),
        }
    }
}

/// Checks that `body` is the response of `api_key` and that `api_version` can be encoded; returns the response
/// header version.
fn check_response_body(
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
) -> Result<i16, EncodeError> {
    let raw_key = api_key as i16;
    let supported = crate::guard::encodable_response_versions(raw_key);
    if !supported.is_some_and(|(min, max)| (min..=max).contains(&api_version)) {
        return Err(EncodeError::UnsupportedVersion {
            api_key: raw_key,
            api_version,
        });
    }
    if guard_generated::response_api_key(body) != Some(raw_key) {
        return Err(EncodeError::MismatchedBody { api_key: raw_key });
    }
    Ok(api_key.response_header_version(api_version))
}

fn encode_err(e: anyhow::Error) -> EncodeError {
    EncodeError::Encode(format!("{e:#}"))
}

/// A response frame as chunks to be written in order (see [`encode_response_chunks`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedResponse {
    chunks: Vec<ResponseChunk>,
    len_bytes: usize,
}

impl EncodedResponse {
    /// A frame held in one buffer.
    pub fn from_frame(frame: Bytes) -> EncodedResponse {
        EncodedResponse {
            len_bytes: frame.len(),
            chunks: if frame.is_empty() {
                Vec::new()
            } else {
                vec![ResponseChunk::Bytes(frame)]
            },
        }
    }

    /// The chunks, in wire order; none is empty.
    pub fn chunks(&self) -> &[ResponseChunk] {
        &self.chunks
    }

    /// The chunks, in wire order; none is empty.
    pub fn into_chunks(self) -> Vec<ResponseChunk> {
        self.chunks
    }

    /// True when some chunk is a file range.
    pub fn has_file_chunks(&self) -> bool {
        self.chunks
            .iter()
            .any(|c| matches!(c, ResponseChunk::File(_)))
    }

    /// Length of the whole frame, size prefix included.
    pub fn len(&self) -> usize {
        self.len_bytes
    }

    /// True for a frame of no bytes (never produced by the encoders).
    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// The frame in one buffer (copies unless it is one chunk already); `None` when it has file chunks, whose
    /// bytes only the file holds.
    pub fn to_contiguous(&self) -> Option<Bytes> {
        match self.chunks.as_slice() {
            [] => Some(Bytes::new()),
            [ResponseChunk::Bytes(one)] => Some(one.clone()),
            chunks => {
                let mut buf = BytesMut::with_capacity(self.len_bytes);
                for chunk in chunks {
                    match chunk {
                        ResponseChunk::Bytes(b) => buf.extend_from_slice(b),
                        ResponseChunk::File(_) => return None,
                    }
                }
                Some(buf.freeze())
            }
        }
    }
}

impl From<Bytes> for EncodedResponse {
    fn from(frame: Bytes) -> EncodedResponse {
        EncodedResponse::from_frame(frame)
    }
}

/// The buffer `kafka-protocol` encodes into for [`encode_response_chunks`]: every byte lands in `head`, except a
/// `put_slice` of exactly the next expected records `Bytes` (the same memory, not merely equal bytes), which is
/// remembered as a splice point instead of being copied.
///
/// Offsets seen by the encoder (`ByteBufMut::offset`, `seek`, `range`, used by its gap-filling encoders) are
/// logical frame offsets, spliced bytes included. An access into bytes that were spliced, or before them, cannot
/// be served; it marks the buffer spoiled and [`SplicingBuf::finish`] reports that, so the caller falls back
/// to the plain encoding.
struct SplicingBuf {
    head: BytesMut,
    /// Records to splice, in the order the encoder writes them (taken out as they are spliced).
    expected: std::vec::IntoIter<Splice>,
    /// The next of `expected`, whose bytes the next `put_slice` is compared with.
    next: Option<Splice>,
    /// `(offset in head where the records go, records)`, in order.
    spliced: Vec<(usize, ResponseChunk)>,
    spliced_bytes: usize,
    spoiled: bool,
    /// What `range` hands out once spoiled (its content is never used).
    scratch: Vec<u8>,
}

impl SplicingBuf {
    fn new(expected: Vec<Splice>, head_capacity: usize) -> SplicingBuf {
        let mut expected = expected.into_iter();
        SplicingBuf {
            head: BytesMut::with_capacity(head_capacity),
            next: expected.next(),
            expected,
            spliced: Vec::new(),
            spliced_bytes: 0,
            spoiled: false,
            scratch: Vec::new(),
        }
    }

    /// The smallest logical offset that maps into `head` after the last splice point.
    fn writable_from(&self) -> usize {
        self.spliced
            .last()
            .map_or(0, |(at, _)| at + self.spliced_bytes)
    }

    /// Writes the size prefix and cuts `head` at the splice points. `None` if the buffer was spoiled.
    fn finish(mut self) -> Result<Option<EncodedResponse>, EncodeError> {
        if self.spoiled {
            return Ok(None);
        }
        let len_bytes = self.head.len() + self.spliced_bytes;
        let size_bytes = len_bytes.saturating_sub(FRAME_SIZE_PREFIX_BYTES);
        let size = i32::try_from(size_bytes).map_err(|_| EncodeError::TooLarge { size_bytes })?;
        let Some(prefix) = self.head.get_mut(..FRAME_SIZE_PREFIX_BYTES) else {
            return Ok(None);
        };
        prefix.copy_from_slice(&size.to_be_bytes());
        let head = self.head.freeze();
        let mut chunks = Vec::with_capacity(2 * self.spliced.len() + 1);
        let mut from = 0;
        for (at, records) in self.spliced {
            if at > from {
                chunks.push(ResponseChunk::Bytes(head.slice(from..at)));
            }
            chunks.push(records);
            from = at;
        }
        if head.len() > from {
            chunks.push(ResponseChunk::Bytes(head.slice(from..)));
        }
        Ok(Some(EncodedResponse { chunks, len_bytes }))
    }
}

// SAFETY: every method delegates to `BytesMut`'s own `BufMut` implementation on `head`, so `chunk_mut` hands
// out `head`'s spare capacity and `advance_mut` keeps `BytesMut`'s contract; `put_slice` only adds a safe
// shortcut that records a `Bytes` instead of writing it.
#[allow(unsafe_code)]
unsafe impl BufMut for SplicingBuf {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of the slice `chunk_mut` returned, which is `head`'s.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if let Some(next) = &self.next {
            let records = next.bytes();
            if !src.is_empty() && src.as_ptr() == records.as_ptr() && src.len() == records.len() {
                if let Some(next) = std::mem::replace(&mut self.next, self.expected.next()) {
                    self.spliced.push((self.head.len(), next.into_chunk()));
                }
                self.spliced_bytes += src.len();
                return;
            }
        }
        self.head.put_slice(src);
    }
}

impl ByteBufMut for SplicingBuf {
    fn offset(&self) -> usize {
        self.head.len() + self.spliced_bytes
    }

    fn seek(&mut self, offset: usize) {
        if offset < self.writable_from() {
            self.spoiled = true;
            return;
        }
        self.head.resize(offset - self.spliced_bytes, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let end = self.offset();
        if r.start < self.writable_from() || r.start > r.end || r.end > end {
            self.spoiled = true;
            self.scratch.clear();
            self.scratch.resize(r.end.saturating_sub(r.start), 0);
            return &mut self.scratch;
        }
        &mut self.head[r.start - self.spliced_bytes..r.end - self.spliced_bytes]
    }
}

/// The frame Apache Kafka sends when an ApiVersions request has a version it does not support
/// (KIP-511, `ApiVersionsRequest.getErrorResponse`): a v0 response header and a v0 body with error 35
/// UNSUPPORTED_VERSION and the supported ranges, so that the client can retry with a version it shares.
/// Kafka lists only ApiVersions' own range here; `api_keys` holds `(api_key, min_version, max_version)`.
pub fn api_versions_unsupported_response(
    correlation_id: i32,
    api_keys: &[(i16, i16, i16)],
) -> Bytes {
    // Header (4) + error code (2) + array count (4) + 6 bytes per entry. The broker passes its own short
    // list; a list too long for one frame is cut rather than overflowing the size prefix.
    const ENTRY_BYTES: usize = 6;
    const FIXED_BYTES: usize = 4 + 2 + 4;
    let max_entries = (i32::MAX as usize - FIXED_BYTES) / ENTRY_BYTES;
    let entries = &api_keys[..api_keys.len().min(max_entries)];
    let size_bytes = FIXED_BYTES + ENTRY_BYTES * entries.len();
    let mut buf = BytesMut::with_capacity(FRAME_SIZE_PREFIX_BYTES + size_bytes);
    // Both fit in i32 by the cut above.
    buf.put_i32(size_bytes as i32);
    buf.put_i32(correlation_id);
    buf.put_i16(ErrorCode::UnsupportedVersion.code());
    buf.put_i32(entries.len() as i32);
    for &(api_key, min_version, max_version) in entries {
        buf.put_i16(api_key);
        buf.put_i16(min_version);
        buf.put_i16(max_version);
    }
    buf.freeze()
}

/// An ApiVersions response entry (`ApiVersionsResponse::api_keys`) for `(api_key, min_version, max_version)`.
pub fn api_version_entry(api_key: i16, min_version: i16, max_version: i16) -> ApiVersion {
    ApiVersion::default()
        .with_api_key(api_key)
        .with_min_version(min_version)
        .with_max_version(max_version)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchResponse, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
        PartitionData,
    };
    use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    /// Records of `len` bytes whose content depends on `seed`, so a misplaced chunk cannot compare equal.
    fn records(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
            .into()
    }

    fn partition(version: i16, index: i32, records: Option<Bytes>) -> PartitionData {
        let mut p = PartitionData::default()
            .with_partition_index(index)
            .with_high_watermark(1000 + i64::from(index))
            .with_last_stable_offset(900)
            .with_preferred_read_replica(BrokerId(-1))
            .with_records(records);
        if version >= 5 {
            p.log_start_offset = 7;
        }
        p
    }

    /// A Fetch response valid at `version`: topics by name (v4-v12) or id (v13+), `partitions` per topic with the
    /// given records; `with_tags` sets tagged fields (current leader, node endpoints) where the version has them.
    fn fetch_response(
        version: i16,
        topics: usize,
        partitions: &[Option<Bytes>],
        with_tags: bool,
    ) -> FetchResponse {
        let mut response = FetchResponse::default().with_throttle_time_ms(3);
        if version >= 7 {
            response.error_code = 0;
            response.session_id = 1234;
        }
        for t in 0..topics {
            let mut topic = FetchableTopicResponse::default();
            if version >= 13 {
                topic.topic_id = uuid::Uuid::from_u128(t as u128 + 1);
            } else {
                topic.topic = TopicName(StrBytes::from_string(format!("topic-{t}")));
            }
            for (i, records) in partitions.iter().enumerate() {
                let index = i32::try_from(i).expect("index");
                let mut p = partition(version, index, records.clone());
                if i % 3 == 1 {
                    p.aborted_transactions = Some(vec![AbortedTransaction::default()
                        .with_producer_id(ProducerId(5))
                        .with_first_offset(42)]);
                }
                if with_tags && version >= 12 && i % 2 == 0 {
                    p.current_leader = LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(1))
                        .with_leader_epoch(4);
                }
                topic.partitions.push(p);
            }
            response.responses.push(topic);
        }
        if with_tags && version >= 16 {
            response.node_endpoints = vec![NodeEndpoint::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("localhost"))
                .with_port(9092)];
        }
        response
    }

    fn fetch_versions() -> std::ops::RangeInclusive<i16> {
        let (min, max) = crate::guard::encodable_response_versions(ApiKey::Fetch as i16)
            .expect("fetch is encodable");
        assert!(min <= 4 && max >= 16, "{min}..={max}");
        4..=max
    }

    /// Encodes both ways and checks the chunked frame is the plain frame, returning the chunked one.
    fn both_ways(version: i16, response: FetchResponse) -> EncodedResponse {
        let body = ResponseKind::Fetch(response);
        let plain = encode_response(ApiKey::Fetch, version, 77, &body)
            .unwrap_or_else(|e| panic!("v{version}: {e}"));
        let chunked = encode_response_chunks(ApiKey::Fetch, version, 77, &body)
            .unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert_eq!(chunked.len(), plain.len(), "v{version} length");
        assert!(chunked.chunks().iter().all(|c| !c.is_empty()), "v{version}");
        assert_eq!(
            chunked.to_contiguous().expect("no file chunks"),
            plain,
            "v{version}: chunked frame differs from kafka-protocol's"
        );
        chunked
    }

    #[test]
    fn chunked_fetch_frames_equal_kafka_protocols_at_every_version() {
        // Lengths around the splice threshold and around varint length-prefix widths (127/16383 bytes).
        let sizes = [
            Some(Bytes::new()),
            None,
            Some(records(1, 1)),
            Some(records(SPLICE_MIN_BYTES - 1, 2)),
            Some(records(SPLICE_MIN_BYTES, 3)),
            Some(records(16_382, 4)),
            Some(records(16_383, 5)),
            Some(records(70_000, 6)),
            Some(records(2_100_000, 7)),
        ];
        for version in fetch_versions() {
            for with_tags in [false, true] {
                both_ways(version, fetch_response(version, 2, &sizes, with_tags));
            }
        }
    }

    #[test]
    fn record_bytes_are_spliced_not_copied() {
        let big = records(50_000, 9);
        let small = records(100, 10);
        for version in fetch_versions() {
            let parts = [Some(big.clone()), Some(small.clone()), Some(big.clone())];
            let chunked = both_ways(version, fetch_response(version, 3, &parts, true));
            let spliced = chunked
                .chunks()
                .iter()
                .filter(|c| matches!(c, ResponseChunk::Bytes(c) if c.as_ptr() == big.as_ptr() && c.len() == big.len()))
                .count();
            assert_eq!(
                spliced, 6,
                "v{version}: every large records chunk is the read buffer"
            );
            // Records chunks alternate with header chunks (the small records are copied into those); v4-v11 frames
            // end with the last records, v12+ with tagged fields.
            let trailer = usize::from(version >= 12);
            assert_eq!(chunked.chunks().len(), 12 + trailer, "v{version}");
        }
    }

    #[test]
    fn empty_and_null_records_and_no_partitions() {
        for version in fetch_versions() {
            for parts in [
                vec![],
                vec![Some(Bytes::new())],
                vec![None],
                vec![None, Some(Bytes::new())],
            ] {
                let chunked = both_ways(version, fetch_response(version, 1, &parts, false));
                assert_eq!(chunked.chunks().len(), 1, "v{version}: nothing to splice");
            }
            let chunked = both_ways(version, fetch_response(version, 0, &[], false));
            assert_eq!(chunked.chunks().len(), 1);
        }
    }

    #[test]
    fn many_partitions() {
        let parts: Vec<Option<Bytes>> = (0..200)
            .map(|i| match i % 4 {
                0 => Some(records(1024 + i, i as u8)),
                1 => Some(Bytes::new()),
                2 => Some(records(300, i as u8)),
                _ => Some(records(5000, i as u8)),
            })
            .collect();
        for version in fetch_versions() {
            let chunked = both_ways(version, fetch_response(version, 5, &parts, true));
            // 100 spliced records chunks per topic, each after a header chunk.
            let trailer = usize::from(version >= 12);
            assert_eq!(chunked.chunks().len(), 5 * 100 * 2 + trailer, "v{version}");
        }
    }

    #[test]
    fn the_same_records_twice_are_spliced_twice() {
        // Two partitions whose records are the same buffer: the splice matches by order, not by content.
        let shared = records(4096, 1);
        for version in fetch_versions() {
            let parts = [
                Some(shared.clone()),
                Some(shared.slice(..2048)),
                Some(shared.clone()),
            ];
            let chunked = both_ways(version, fetch_response(version, 1, &parts, false));
            let trailer = usize::from(version >= 12);
            assert_eq!(chunked.chunks().len(), 6 + trailer, "v{version}");
        }
    }

    #[test]
    fn no_default_tagged_fields_in_chunked_frames() {
        let parts = [
            Some(records(4096, 1)),
            Some(Bytes::new()),
            Some(records(2048, 2)),
        ];
        for version in fetch_versions() {
            let chunked = both_ways(version, fetch_response(version, 2, &parts, false));
            let frame = chunked.to_contiguous().expect("no file chunks");
            let check = crate::guard::check_response(ApiKey::Fetch, version, &frame[4..])
                .unwrap_or_else(|e| panic!("v{version}: {e}"));
            assert_eq!(check.tagged_fields, 0, "v{version}");
            let chunked = both_ways(version, fetch_response(version, 2, &parts, true));
            let frame = chunked.to_contiguous().expect("no file chunks");
            let check = crate::guard::check_response(ApiKey::Fetch, version, &frame[4..])
                .unwrap_or_else(|e| panic!("v{version}: {e}"));
            assert_eq!(check.tagged_fields > 0, version >= 12, "v{version}");
        }
    }

    #[test]
    fn other_apis_and_errors_match_the_plain_encoder() {
        let body = ResponseKind::ApiVersions(Default::default());
        let plain = encode_response(ApiKey::ApiVersions, 3, 5, &body).expect("plain");
        let chunked = encode_response_chunks(ApiKey::ApiVersions, 3, 5, &body).expect("chunked");
        assert_eq!(chunked.chunks(), &[ResponseChunk::Bytes(plain)][..]);
        assert!(matches!(
            encode_response_chunks(ApiKey::Produce, 3, 5, &body),
            Err(EncodeError::MismatchedBody { .. })
        ));
        let fetch = ResponseKind::Fetch(fetch_response(4, 1, &[Some(records(4096, 1))], false));
        assert!(matches!(
            encode_response_chunks(ApiKey::Fetch, 3, 5, &fetch),
            Err(EncodeError::UnsupportedVersion { .. })
        ));
        // A field the version cannot carry is refused, as by the plain encoder.
        let mut bad = fetch_response(6, 1, &[Some(records(4096, 1))], false);
        bad.session_id = 9;
        assert!(matches!(
            encode_response_chunks(ApiKey::Fetch, 6, 5, &ResponseKind::Fetch(bad)),
            Err(EncodeError::Encode(_))
        ));
    }

    #[test]
    fn gap_access_into_spliced_bytes_spoils_the_buffer() {
        let spliced = records(2048, 1);
        let mut buf = SplicingBuf::new(vec![Splice::Bytes(spliced.clone())], 16);
        buf.put_i32(0);
        buf.put_slice(&spliced);
        buf.put_u8(1);
        assert_eq!(buf.offset(), 4 + 2048 + 1);
        // After the splice: served from head.
        buf.range(4 + 2048..4 + 2049)[0] = 2;
        buf.seek(4 + 2048 + 3);
        assert!(!buf.spoiled);
        // Into the spliced bytes or before them: spoiled, no panic.
        assert_eq!(buf.range(10..20).len(), 10);
        assert!(buf.spoiled);
        assert!(buf.finish().expect("finish").is_none());
    }

    /// A file in the temp dir holding `content`, removed on drop.
    struct TempFile {
        path: std::path::PathBuf,
        file: Arc<File>,
    }

    impl TempFile {
        fn new(content: &[u8]) -> TempFile {
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "sluice-response-test-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            std::fs::write(&path, content).expect("write temp file");
            let file = Arc::new(File::open(&path).expect("open temp file"));
            TempFile { path, file }
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// The frame with file chunks read from their files.
    fn materialize(encoded: &EncodedResponse) -> Bytes {
        use std::os::unix::fs::FileExt;
        let mut out = BytesMut::new();
        for chunk in encoded.chunks() {
            match chunk {
                ResponseChunk::Bytes(b) => out.extend_from_slice(b),
                ResponseChunk::File(f) => {
                    let mut buf = vec![0u8; f.len as usize];
                    f.file
                        .read_exact_at(&mut buf, f.position)
                        .expect("read file chunk");
                    out.extend_from_slice(&buf);
                }
            }
        }
        assert_eq!(out.len(), encoded.len());
        out.freeze()
    }

    #[test]
    fn file_chunks_read_back_equal_the_plain_encoding() {
        // One file holding several partitions' records at different positions, sizes around the varint widths
        // and below the splice threshold (file records are always their own chunk).
        let content = records(200_000, 42);
        let file = TempFile::new(&content);
        let ranges: [(usize, usize); 5] = [
            (0, 1),
            (10, 127),
            (500, 16_383),
            (20_000, 100_000),
            (150_000, 2_000),
        ];
        for version in fetch_versions() {
            for with_tags in [false, true] {
                let mut files = Vec::new();
                let mut parts = Vec::new();
                for (i, &(at, len)) in ranges.iter().enumerate() {
                    let chunk = FileChunk {
                        file: file.file.clone(),
                        position: at as u64,
                        len: u32::try_from(len).expect("len"),
                    };
                    let f = FileRecords::new(i, chunk).expect("file records");
                    parts.push(Some(f.records()));
                    files.push(f);
                    // In-memory records between file records.
                    parts.push(Some(records(3000, i as u8)));
                    parts.push(Some(Bytes::new()));
                }
                // The same response with the records in memory, as the plain encoder sees them.
                let real: Vec<Option<Bytes>> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| match i % 3 {
                        0 => {
                            let (at, len) = ranges[i / 3];
                            Some(content.slice(at..at + len))
                        }
                        _ => p.clone(),
                    })
                    .collect();
                let plain = encode_response(
                    ApiKey::Fetch,
                    version,
                    77,
                    &ResponseKind::Fetch(fetch_response(version, 2, &real, with_tags)),
                )
                .expect("plain");
                let body = ResponseKind::Fetch(fetch_response(version, 2, &parts, with_tags));
                let encoded =
                    encode_response_chunks_with_files(ApiKey::Fetch, version, 77, &body, &files)
                        .unwrap_or_else(|e| panic!("v{version}: {e}"));
                assert!(encoded.has_file_chunks());
                assert!(encoded.to_contiguous().is_none());
                let file_chunks = encoded
                    .chunks()
                    .iter()
                    .filter(|c| matches!(c, ResponseChunk::File(_)))
                    .count();
                assert_eq!(
                    file_chunks,
                    2 * ranges.len(),
                    "v{version}: every file range, in both topics"
                );
                assert!(encoded.chunks().iter().all(|c| !c.is_empty()));
                assert_eq!(materialize(&encoded), plain, "v{version} tags {with_tags}");
                // Without `files` the placeholders are plain records (zeros): never what is sent for them.
                let unaware =
                    encode_response_chunks(ApiKey::Fetch, version, 77, &body).expect("encode");
                assert!(!unaware.has_file_chunks());
            }
        }
    }

    #[test]
    fn file_records_refuse_what_they_cannot_carry() {
        let file = TempFile::new(b"abc");
        let chunk = |len: u32| FileChunk {
            file: file.file.clone(),
            position: 0,
            len,
        };
        assert!(FileRecords::new(0, chunk(0)).is_none());
        assert!(FileRecords::new(0, chunk(FileRecords::MAX_BYTES as u32 + 1)).is_none());
        assert!(FileRecords::new(FileRecords::MAX_PER_RESPONSE, chunk(3)).is_none());
        let a = FileRecords::new(0, chunk(3)).expect("a");
        let b = FileRecords::new(1, chunk(3)).expect("b");
        assert_ne!(
            a.records().as_ptr(),
            b.records().as_ptr(),
            "distinct placeholders"
        );
        assert_eq!(a.records().len(), 3);
    }
}
