//! Record-level reading and writing of magic-v2 batches, for the places where Kafka looks inside a batch: the
//! exact offset for a timestamp (ListOffsets), the key check of compacted topics (Produce), the log cleaner,
//! which drops records and re-encodes the survivors, and transaction markers (control batches whose record
//! says COMMIT or ABORT: [`control_batch`], [`control_type`], [`end_txn_marker`]).
//!
//! Written for hostile input: every length is checked against the bytes present, nothing is allocated from a
//! count in the data (the `kafka-protocol` decoder reserves `recordCount` entries up front and would abort the
//! process on a forged count), and decompression stops at a caller-given size, so a small compressed batch cannot
//! expand without bound. Compression codecs are Kafka's: gzip, snappy (xerial framing or raw), lz4 (frame
//! format) and zstd; [`compress`] writes them the way Kafka's Java client and librdkafka do.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::ops::Range;

use sluice_protocol::batch::{self, BatchHeader};

/// What the broker needs to know about one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// Offset relative to the batch's base offset.
    pub offset_delta: i32,
    /// Timestamp relative to the batch's base timestamp.
    pub timestamp_delta: i64,
    /// False for a null key.
    pub has_key: bool,
}

/// Why a batch's records could not be read, or records not compressed.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The batch header is invalid.
    #[error("record batch: {0}")]
    Batch(#[from] batch::BatchError),
    /// The records are not well formed.
    #[error("malformed record {index}: {reason}")]
    Malformed {
        /// Index of the record in the records section.
        index: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// The compressed records do not decompress.
    #[error("cannot decompress records ({codec}): {source}")]
    Decompress {
        /// The codec.
        codec: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The records decompress to more than the allowed size.
    #[error("records decompress to more than {0} bytes")]
    TooLarge(usize),
    /// The compression codec is not one Kafka defines.
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    /// The compressor failed (it writes to memory, so only on an error of the codec library).
    #[error("cannot compress records ({codec}): {source}")]
    Compress {
        /// The codec.
        codec: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// The records of the batch at the start of `batch`, decompressed up to `max_decompressed_bytes`.
pub fn read_records(
    batch: &[u8],
    max_decompressed_bytes: usize,
) -> Result<Vec<RecordInfo>, RecordsError> {
    let header = BatchHeader::new(batch)?;
    let size = header.size().min(batch.len());
    let body = batch
        .get(batch::RECORD_BATCH_OVERHEAD..size)
        .unwrap_or_default();
    let decompressed;
    let records: &[u8] = match header.compression() {
        0 => body,
        codec => {
            decompressed = decompress(codec, body, max_decompressed_bytes)?;
            &decompressed
        }
    };
    // Straight from the walker: collecting `RawRecord`s first would take about seven times the memory.
    RawRecords::new(records)
        .map(|r| {
            r.map(|r| RecordInfo {
                offset_delta: r.offset_delta,
                timestamp_delta: r.timestamp_delta,
                has_key: r.key.is_some(),
            })
        })
        .collect()
}

fn bounded_read(
    mut reader: impl Read,
    codec: &'static str,
    max: usize,
) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .by_ref()
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|source| RecordsError::Decompress { codec, source })?;
    if out.len() > max {
        return Err(RecordsError::TooLarge(max));
    }
    Ok(out)
}

/// The xerial snappy-java stream header (Kafka's Java client and librdkafka frame snappy this way).
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
/// snappy-java's stream version and the oldest version that reads it, written after the magic.
const XERIAL_VERSION: i32 = 1;
const XERIAL_COMPATIBLE_VERSION: i32 = 1;
/// Magic (8) + version (4) + compatible version (4).
const XERIAL_HEADER_BYTES: usize = 16;
/// Uncompressed bytes per xerial block: snappy-java's `SnappyOutputStream` default, which Kafka uses.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;
/// The Java client's and librdkafka's default zstd level.
const ZSTD_LEVEL: i32 = 3;

/// `body`, compressed with Kafka codec `codec` (a batch's attributes & 0x07), decompressed to at most `max`
/// bytes. Codec 0 (none) returns `body` copied. Snappy may be xerial-framed or raw, as Kafka reads it.
pub fn decompress(codec: u8, body: &[u8], max: usize) -> Result<Vec<u8>, RecordsError> {
    match codec {
        0 if body.len() > max => Err(RecordsError::TooLarge(max)),
        0 => Ok(body.to_vec()),
        1 => bounded_read(flate2::read::MultiGzDecoder::new(body), "gzip", max),
        2 => snappy_decompress(body, max),
        3 => {
            let decoder = lz4::Decoder::new(body).map_err(|source| RecordsError::Decompress {
                codec: "lz4",
                source,
            })?;
            bounded_read(decoder, "lz4", max)
        }
        4 => {
            let decoder = zstd::stream::read::Decoder::new(body).map_err(|source| {
                RecordsError::Decompress {
                    codec: "zstd",
                    source,
                }
            })?;
            bounded_read(decoder, "zstd", max)
        }
        other => Err(RecordsError::UnknownCodec(other)),
    }
}

/// `raw` (a records section) compressed with Kafka codec `codec` as Kafka's Java client and librdkafka write
/// it: gzip (1) at the default level; snappy (2) in the xerial framing with 32 KiB blocks; lz4 (3) as an LZ4
/// frame of independent 64 KiB blocks, fast level, no checksums (the batch CRC covers the bytes); zstd (4) at
/// level 3. Codec 0 (none) returns `raw` copied.
pub fn compress(codec: u8, raw: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let failed = |codec| move |source| RecordsError::Compress { codec, source };
    match codec {
        0 => Ok(raw.to_vec()),
        1 => gzip_compress(raw).map_err(failed("gzip")),
        2 => snappy_compress(raw).map_err(failed("snappy")),
        3 => lz4_compress(raw).map_err(failed("lz4")),
        4 => zstd::stream::encode_all(raw, ZSTD_LEVEL).map_err(failed("zstd")),
        other => Err(RecordsError::UnknownCodec(other)),
    }
}

fn gzip_compress(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 2),
        flate2::Compression::default(),
    );
    encoder.write_all(raw)?;
    encoder.finish()
}

fn lz4_compress(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    // Kafka's `KafkaLZ4BlockOutputStream` and librdkafka: independent 64 KiB blocks, no block or content
    // checksum; level 0 is LZ4's fast mode.
    let mut encoder = lz4::EncoderBuilder::new()
        .block_size(lz4::BlockSize::Max64KB)
        .block_mode(lz4::BlockMode::Independent)
        .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
        .checksum(lz4::ContentChecksum::NoChecksum)
        .level(0)
        .build(Vec::with_capacity(raw.len() / 2))?;
    encoder.write_all(raw)?;
    let (out, result) = encoder.finish();
    result?;
    Ok(out)
}

fn snappy_error(reason: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_string())
}

/// The xerial framing that [`snappy_decompress`] reads: header, then per block of at most
/// [`XERIAL_BLOCK_BYTES`] input its compressed length (big-endian u32) and the raw snappy block.
fn snappy_compress(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_BYTES + raw.len() / 2);
    out.extend_from_slice(XERIAL_MAGIC);
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    out.extend_from_slice(&XERIAL_COMPATIBLE_VERSION.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    let mut block = vec![0; snap::raw::max_compress_len(XERIAL_BLOCK_BYTES)];
    for chunk in raw.chunks(XERIAL_BLOCK_BYTES) {
        let len = encoder.compress(chunk, &mut block).map_err(snappy_error)?;
        let compressed = block
            .get(..len)
            .ok_or_else(|| snappy_error("block longer than its buffer"))?;
        let len = u32::try_from(len).map_err(snappy_error)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(compressed);
    }
    Ok(out)
}

fn snappy_decompress(body: &[u8], max: usize) -> Result<Vec<u8>, RecordsError> {
    let failed = |reason| RecordsError::Decompress {
        codec: "snappy",
        source: snappy_error(reason),
    };
    let mut decoder = snap::raw::Decoder::new();
    let mut raw_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), RecordsError> {
        let len = snap::raw::decompress_len(block).map_err(|e| failed(e.to_string()))?;
        if out.len().saturating_add(len) > max {
            return Err(RecordsError::TooLarge(max));
        }
        let start = out.len();
        out.resize(start + len, 0);
        decoder
            .decompress(block, &mut out[start..])
            .map_err(|e| failed(e.to_string()))?;
        Ok(())
    };
    let mut out = Vec::new();
    if !body.starts_with(XERIAL_MAGIC) {
        raw_block(body, &mut out)?;
        return Ok(out);
    }
    let mut rest = body
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| failed("truncated xerial header".into()))?;
    while !rest.is_empty() {
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| failed("truncated block length".into()))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let block = rest
            .get(4..4 + len)
            .ok_or_else(|| failed("truncated block".into()))?;
        raw_block(block, &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// One record of a decompressed records section, as byte ranges into that buffer (Kafka's `DefaultRecord`
/// layout: length, attributes, timestamp delta, offset delta, key, value, headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    /// The whole record, from its length varint to its last header byte.
    pub range: Range<usize>,
    /// The record's attributes byte.
    pub attributes: u8,
    /// Timestamp relative to the batch's base timestamp.
    pub timestamp_delta: i64,
    /// Offset relative to the batch's base offset.
    pub offset_delta: i32,
    /// Key bytes; None for a null key.
    pub key: Option<Range<usize>>,
    /// Value bytes; None for a null value (a tombstone).
    pub value: Option<Range<usize>>,
    /// From the offset-delta varint to the end of the record (offset delta, key, value, headers): what
    /// re-encoding with another timestamp delta copies unchanged.
    pub after_timestamp: Range<usize>,
}

/// Every record of `buf`, a decompressed records section (the bytes after a batch's 61-byte header).
///
/// Each record must consume exactly its declared length, as Kafka's `DefaultRecord.readFrom` requires, and
/// every key, value, header key and header value must lie within its record; header keys must not be null.
/// The record count in the batch header is not consulted.
pub fn parse_raw_records(buf: &[u8]) -> Result<Vec<RawRecord>, RecordsError> {
    RawRecords::new(buf).collect()
}

/// Appends one record to `out`: `buf[r.range]` re-encoded with `timestamp_delta` instead of its own (length
/// varint recomputed), i.e. varint(len) + attributes + varlong(timestamp_delta) + `buf[r.after_timestamp]`.
///
/// # Panics
///
/// If `r.after_timestamp` is not within `buf`, which cannot happen when `r` came from [`parse_raw_records`] of
/// the same `buf`.
pub fn write_record_with_timestamp_delta(
    out: &mut Vec<u8>,
    buf: &[u8],
    r: &RawRecord,
    timestamp_delta: i64,
) {
    let rest = &buf[r.after_timestamp.clone()];
    let length = 1 + varlong_len(timestamp_delta) + rest.len();
    // Fits: `rest` is less than the record's own length, a varint, and a varlong takes at most 10 bytes.
    write_varlong(out, length as i64);
    out.push(r.attributes);
    write_varlong(out, timestamp_delta);
    out.extend_from_slice(rest);
}

/// Kafka's zig-zag varlong encoding (a varint is the same for values within i32).
fn write_varlong(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes [`write_varlong`] writes for `value`.
fn varlong_len(value: i64) -> usize {
    let v = ((value << 1) ^ (value >> 63)) as u64;
    let bits = (u64::BITS - v.leading_zeros()).max(1);
    bits.div_ceil(7) as usize
}

/// The record walker: yields each record of a records section, or the first error and then nothing.
struct RawRecords<'a> {
    buf: &'a [u8],
    pos: usize,
    index: usize,
    failed: bool,
}

impl<'a> RawRecords<'a> {
    fn new(buf: &'a [u8]) -> Self {
        RawRecords {
            buf,
            pos: 0,
            index: 0,
            failed: false,
        }
    }
}

impl Iterator for RawRecords<'_> {
    type Item = Result<RawRecord, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        match parse_raw_record(self.buf, self.pos) {
            Ok(record) => {
                self.pos = record.range.end;
                self.index += 1;
                Some(Ok(record))
            }
            Err(reason) => {
                self.failed = true;
                Some(Err(RecordsError::Malformed {
                    index: self.index,
                    reason,
                }))
            }
        }
    }
}

/// The record that starts at `buf[start]`, or what is wrong with it.
fn parse_raw_record(buf: &[u8], start: usize) -> Result<RawRecord, &'static str> {
    let mut r = Reader { buf, pos: start };
    let length = r.varint().ok_or("bad length")?;
    let length = usize::try_from(length).map_err(|_| "negative length")?;
    let end = r
        .pos
        .checked_add(length)
        .filter(|e| *e <= buf.len())
        .ok_or("length beyond the records")?;
    // From here on nothing is read past the record's own end.
    let mut r = Reader {
        buf: &buf[..end],
        pos: r.pos,
    };
    let attributes = r.byte().ok_or("truncated attributes")?;
    let timestamp_delta = r.varlong().ok_or("bad timestamp delta")?;
    let after_timestamp_start = r.pos;
    let offset_delta = r.varint().ok_or("bad offset delta")?;
    let key = r.nullable_bytes([
        "bad key length",
        "negative key length",
        "key beyond the record",
    ])?;
    let value = r.nullable_bytes([
        "bad value length",
        "negative value length",
        "value beyond the record",
    ])?;
    let header_count = r.varint().ok_or("bad header count")?;
    if header_count < 0 {
        return Err("negative header count");
    }
    // Each header takes at least two bytes, so a forged count fails on the record's end, not on memory.
    for _ in 0..header_count {
        let header_key = r.nullable_bytes([
            "bad header key length",
            "negative header key length",
            "header key beyond the record",
        ])?;
        if header_key.is_none() {
            return Err("null header key");
        }
        r.nullable_bytes([
            "bad header value length",
            "negative header value length",
            "header value beyond the record",
        ])?;
    }
    if r.pos != end {
        return Err("record longer than its fields");
    }
    Ok(RawRecord {
        range: start..end,
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        after_timestamp: after_timestamp_start..end,
    })
}

/// A cursor over bytes that never reads past `buf`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// A zig-zag varint: at most 5 bytes, and its value must fit an i32.
    fn varint(&mut self) -> Option<i32> {
        i32::try_from(self.zigzag(5)?).ok()
    }

    /// A zig-zag varlong: at most 10 bytes.
    fn varlong(&mut self) -> Option<i64> {
        self.zigzag(10)
    }

    fn zigzag(&mut self, max_bytes: u32) -> Option<i64> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        None
    }

    /// A varint length (-1 for null) and that many bytes; `reasons` name a bad varint, a length below -1 and
    /// bytes past the end.
    fn nullable_bytes(
        &mut self,
        reasons: [&'static str; 3],
    ) -> Result<Option<Range<usize>>, &'static str> {
        let [bad, negative, beyond] = reasons;
        let length = self.varint().ok_or(bad)?;
        if length == -1 {
            return Ok(None);
        }
        let length = usize::try_from(length).map_err(|_| negative)?;
        let start = self.pos;
        let end = start
            .checked_add(length)
            .filter(|e| *e <= self.buf.len())
            .ok_or(beyond)?;
        self.pos = end;
        Ok(Some(start..end))
    }
}

/// The type of a transaction marker: the control record's key (Kafka's `ControlRecordType` ABORT and COMMIT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlType {
    /// The producer's transaction was aborted (key type 0).
    Abort,
    /// The producer's transaction was committed (key type 1).
    Commit,
}

impl ControlType {
    /// The type id in the control record key.
    pub fn type_id(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
        }
    }
}

/// A transaction marker as Kafka's `EndTransactionMarker`: its type and the coordinator epoch in its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndTxnMarker {
    /// COMMIT or ABORT.
    pub control_type: ControlType,
    /// The epoch of the transaction coordinator that wrote it.
    pub coordinator_epoch: i32,
}

/// Bytes of a control record key (version `i16`, type `i16`).
const CONTROL_KEY_BYTES: usize = 4;
/// Bytes of an end-transaction marker value (version `i16`, coordinator epoch `i32`).
const END_TXN_MARKER_VALUE_BYTES: usize = 6;
/// Largest records section of a control batch that is decompressed to read its control record.
const MAX_CONTROL_RECORDS_BYTES: usize = 1 << 20;

/// A magic-v2 control batch holding one transaction marker, as Kafka's `MemoryRecords.withEndTransactionMarker`
/// writes it: attributes transactional | control (bits 4 and 5, CreateTime, uncompressed), base sequence -1,
/// partition leader epoch -1, one record at `timestamp_ms` whose key is the control record key (version 0,
/// type 0 = ABORT or 1 = COMMIT) and whose value is the `EndTransactionMarker` (version 0, `coordinator_epoch`),
/// CRC32C set. Its base offset is 0: [`crate::Log::append_as_leader`] assigns the offset and the leader epoch.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> bytes::BytesMut {
    let control_type = if commit {
        ControlType::Commit
    } else {
        ControlType::Abort
    };
    let mut key = [0u8; CONTROL_KEY_BYTES];
    key[2..].copy_from_slice(&control_type.type_id().to_be_bytes());
    let mut value = [0u8; END_TXN_MARKER_VALUE_BYTES];
    value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
    let mut out = batch::build_batch(
        timestamp_ms,
        &[(Some(&key[..]), Some(&value[..]))],
        producer_id,
        producer_epoch,
        -1,
    );
    let attributes = batch::TRANSACTIONAL_FLAG_MASK | batch::CONTROL_FLAG_MASK;
    out[batch::ATTRIBUTES_OFFSET..batch::ATTRIBUTES_OFFSET + 2]
        .copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[batch::ATTRIBUTES_OFFSET..]);
    out[batch::CRC_OFFSET..batch::CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    bytes::BytesMut::from(&out[..])
}

/// The first record of the control batch at the start of `batch` (its records decompressed if they are
/// compressed), with the buffer its ranges point into; `None` when `batch` is not a whole control batch or
/// holds no readable record.
fn first_control_record(batch: &[u8]) -> Option<(Cow<'_, [u8]>, RawRecord)> {
    let header = BatchHeader::new(batch).ok()?;
    if !header.is_control() {
        return None;
    }
    let body = batch.get(batch::RECORD_BATCH_OVERHEAD..header.size())?;
    let records: Cow<'_, [u8]> = match header.compression() {
        0 => Cow::Borrowed(body),
        codec => Cow::Owned(decompress(codec, body, MAX_CONTROL_RECORDS_BYTES).ok()?),
    };
    let record = RawRecords::new(&records).next()?.ok()?;
    Some((records, record))
}

/// The big-endian `i16` at `at` of `bytes`.
fn be_i16_at(bytes: &[u8], at: usize) -> Option<i16> {
    bytes
        .get(at..at + 2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
}

/// The control type of a control record key, as Kafka's `ControlRecordType.parse`: at least 4 bytes, a
/// non-negative version (a newer version is read as version 0), then the type; `None` for a type other than
/// ABORT and COMMIT.
fn parse_control_key(key: &[u8]) -> Option<ControlType> {
    if key.len() < CONTROL_KEY_BYTES || be_i16_at(key, 0)? < 0 {
        return None;
    }
    match be_i16_at(key, 2)? {
        0 => Some(ControlType::Abort),
        1 => Some(ControlType::Commit),
        _ => None,
    }
}

/// For one whole control batch (its bytes), the type of its control record: `None` for a batch that is not a
/// control batch, holds no record (the cleaner emptied it) or whose control type is neither ABORT nor COMMIT
/// (consumers ignore unknown control types, as Kafka's do).
pub fn control_type(batch: &[u8]) -> Option<ControlType> {
    let (records, record) = first_control_record(batch)?;
    parse_control_key(records.get(record.key?)?)
}

/// For one whole control batch, its transaction marker (Kafka's `EndTransactionMarker.deserialize`): the control
/// type and the coordinator epoch from a value of at least 6 bytes with a non-negative version. `None` when
/// [`control_type`] is `None` or the value is malformed.
pub fn end_txn_marker(batch: &[u8]) -> Option<EndTxnMarker> {
    let (records, record) = first_control_record(batch)?;
    let control_type = parse_control_key(records.get(record.key?)?)?;
    let value = records.get(record.value?)?;
    if value.len() < END_TXN_MARKER_VALUE_BYTES || be_i16_at(value, 0)? < 0 {
        return None;
    }
    let coordinator_epoch = i32::from_be_bytes(value.get(2..6)?.try_into().ok()?);
    Some(EndTxnMarker {
        control_type,
        coordinator_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    type KeyValue = (Option<&'static [u8]>, Option<&'static [u8]>);

    fn kafka_records(records: &[KeyValue]) -> Vec<Record> {
        records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                delete_horizon: false,
                offset: i as i64,
                sequence: i as i32,
                timestamp: 1000 + 10 * i as i64,
                key: k.map(Bytes::from_static),
                value: v.map(Bytes::from_static),
                // Every other record carries headers, one of them with a null value.
                headers: if i % 2 == 0 {
                    [
                        (
                            StrBytes::from_static_str("h1"),
                            Some(Bytes::from_static(b"x")),
                        ),
                        (StrBytes::from_static_str("h2"), None),
                    ]
                    .into_iter()
                    .collect()
                } else {
                    Default::default()
                },
            })
            .collect()
    }

    fn encode(compression: Compression, records: &[Record]) -> Vec<u8> {
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
        buf.to_vec()
    }

    fn batch(compression: Compression, records: &[KeyValue]) -> Vec<u8> {
        encode(compression, &kafka_records(records))
    }

    fn keys_batch(compression: Compression, keys: &[Option<&'static [u8]>]) -> Vec<u8> {
        let value: &'static [u8] = &[b'v'; 300];
        let records: Vec<KeyValue> = keys.iter().map(|k| (*k, Some(value))).collect();
        batch(compression, &records)
    }

    /// The decompressed records section of a whole batch.
    fn section(b: &[u8]) -> Vec<u8> {
        let header = BatchHeader::new(b).unwrap();
        decompress(
            header.compression(),
            &b[batch::RECORD_BATCH_OVERHEAD..],
            1 << 24,
        )
        .unwrap()
    }

    /// Bytes that compress somewhat, not uniformly (xorshift over a small alphabet, with runs).
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let run = (x >> 60) as usize + 1;
            out.extend(std::iter::repeat_n(b'a' + (x % 16) as u8, run));
        }
        out.truncate(len);
        out
    }

    #[test]
    fn control_batches_read_back_with_kafka_protocol_and_from_it() {
        let ours = control_batch(77, 4, false, 12, 5_555);
        let decoded = RecordBatchDecoder::decode(&mut Bytes::from(ours.to_vec())).unwrap();
        let r = &decoded.records[0];
        assert!(r.control && r.transactional);
        assert_eq!((r.producer_id, r.producer_epoch, r.sequence), (77, 4, -1));
        assert_eq!(r.timestamp, 5_555);
        assert_eq!(r.key.as_deref(), Some(&[0u8, 0, 0, 0][..]), "ABORT key");
        assert_eq!(r.value.as_deref(), Some(&[0u8, 0, 0, 0, 0, 12][..]));
        // A marker another implementation encoded, compressed or not, reads back.
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let theirs = encode(
                compression,
                &[Record {
                    transactional: true,
                    control: true,
                    partition_leader_epoch: 0,
                    producer_id: 5,
                    producer_epoch: 1,
                    timestamp_type: TimestampType::Creation,
                    delete_horizon: false,
                    offset: 0,
                    sequence: -1,
                    timestamp: 1,
                    key: Some(Bytes::from_static(&[0, 0, 0, 1])),
                    value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 3])),
                    headers: Default::default(),
                }],
            );
            assert_eq!(control_type(&theirs), Some(ControlType::Commit));
            assert_eq!(
                end_txn_marker(&theirs),
                Some(EndTxnMarker {
                    control_type: ControlType::Commit,
                    coordinator_epoch: 3
                })
            );
        }
    }

    #[test]
    fn every_codec_reads_back_offsets_timestamps_and_keys() {
        let keys: [Option<&'static [u8]>; 4] = [Some(b"a"), None, Some(b""), None];
        for compression in CODECS {
            let b = keys_batch(compression, &keys);
            let records =
                read_records(&b, 1 << 20).unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_eq!(records.len(), 4, "{compression:?}");
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r.offset_delta, i as i32);
                assert_eq!(r.timestamp_delta, 10 * i as i64);
                assert_eq!(r.has_key, keys[i].is_some(), "{compression:?} record {i}");
            }
        }
    }

    #[test]
    fn every_codec_round_trips() {
        let inputs = [
            Vec::new(),
            b"x".to_vec(),
            sample(1000),
            // Several snappy (32 KiB) and lz4 (64 KiB) blocks, the last one partial.
            sample(200 * 1024),
        ];
        for codec in 0..=4u8 {
            for input in &inputs {
                let compressed = compress(codec, input).unwrap();
                let what = format!("codec {codec}, {} bytes", input.len());
                assert_eq!(
                    decompress(codec, &compressed, input.len()).expect(&what),
                    *input,
                    "{what}"
                );
                if !input.is_empty() {
                    assert!(
                        matches!(
                            decompress(codec, &compressed, input.len() - 1),
                            Err(RecordsError::TooLarge(_))
                        ),
                        "{what}"
                    );
                }
            }
        }
        assert!(matches!(
            compress(5, b"x"),
            Err(RecordsError::UnknownCodec(5))
        ));
        assert!(matches!(
            decompress(7, b"x", 10),
            Err(RecordsError::UnknownCodec(7))
        ));
    }

    /// The framing Kafka's Java client writes (snappy-java's `SnappyOutputStream`, `KafkaLZ4BlockOutputStream`).
    #[test]
    fn compressed_framing_is_what_kafka_writes() {
        let input = sample(200 * 1024);

        let snappy = compress(2, &input).unwrap();
        assert_eq!(
            &snappy[..16],
            b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"
        );
        let mut rest = &snappy[16..];
        let mut blocks = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let block = snap::raw::Decoder::new()
                .decompress_vec(&rest[4..4 + len])
                .unwrap();
            blocks.push(block.len());
            rest = &rest[4 + len..];
        }
        assert_eq!(
            blocks,
            [
                32 * 1024,
                32 * 1024,
                32 * 1024,
                32 * 1024,
                32 * 1024,
                32 * 1024,
                8 * 1024
            ]
        );
        assert_eq!(
            compress(2, b"").unwrap().len(),
            16,
            "an empty input is the header alone"
        );

        let lz4 = compress(3, &input).unwrap();
        assert_eq!(&lz4[..4], &0x184D_2204u32.to_le_bytes(), "LZ4 frame magic");
        // FLG: version 01, independent blocks, no block checksum, no content size, no content checksum.
        assert_eq!(lz4[4], 0b0110_0000, "FLG");
        // BD: 64 KiB maximum block size.
        assert_eq!(lz4[5], 4 << 4, "BD");

        assert_eq!(
            &compress(1, &input).unwrap()[..2],
            b"\x1f\x8b",
            "gzip magic"
        );
        assert_eq!(
            &compress(4, &input).unwrap()[..4],
            &0xFD2F_B528u32.to_le_bytes(),
            "zstd magic"
        );
    }

    /// Another implementation reads what `compress` writes: each batch's section is recompressed and the batch
    /// decoded by `kafka-protocol`.
    #[test]
    fn kafka_protocol_reads_compressed_sections() {
        let originals = kafka_records(&[
            (Some(b"k0"), Some(b"v0")),
            (None, None),
            (Some(b"k2"), Some(&[7; 100_000])),
        ]);
        for compression in CODECS {
            let b = encode(compression, &originals);
            let codec = BatchHeader::new(&b).unwrap().compression();
            let mut rebuilt = b[..batch::RECORD_BATCH_OVERHEAD].to_vec();
            rebuilt.extend_from_slice(&compress(codec, &section(&b)).unwrap());
            let length = (rebuilt.len() - batch::LOG_OVERHEAD) as i32;
            rebuilt[batch::LENGTH_OFFSET..batch::LENGTH_OFFSET + 4]
                .copy_from_slice(&length.to_be_bytes());
            let crc = crc32c::crc32c(&rebuilt[batch::ATTRIBUTES_OFFSET..]);
            rebuilt[batch::CRC_OFFSET..batch::CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());

            let decoded = RecordBatchDecoder::decode(&mut Bytes::from(rebuilt))
                .unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_eq!(decoded.compression, compression);
            assert_eq!(decoded.records.len(), originals.len());
            for (got, want) in decoded.records.iter().zip(&originals) {
                assert_eq!(got.key, want.key, "{compression:?}");
                assert_eq!(got.value, want.value, "{compression:?}");
                assert_eq!(got.headers, want.headers, "{compression:?}");
            }
        }
    }

    #[test]
    fn every_codec_parses_raw_records() {
        let records: [KeyValue; 4] = [
            (Some(b"k0"), Some(b"value zero")),
            (None, Some(b"")),
            (Some(b"k2"), None),
            (Some(b""), Some(&[9; 5000])),
        ];
        for compression in CODECS {
            let buf = section(&batch(compression, &records));
            let raw = parse_raw_records(&buf).unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_eq!(raw.len(), records.len(), "{compression:?}");
            let mut pos = 0;
            for (i, (r, (key, value))) in raw.iter().zip(&records).enumerate() {
                let what = format!("{compression:?} record {i}");
                assert_eq!(r.range.start, pos, "{what}: records are contiguous");
                pos = r.range.end;
                assert_eq!(r.attributes, 0, "{what}");
                assert_eq!(r.offset_delta, i as i32, "{what}");
                assert_eq!(r.timestamp_delta, 10 * i as i64, "{what}");
                assert_eq!(r.key.clone().map(|k| &buf[k]), *key, "{what}");
                assert_eq!(r.value.clone().map(|v| &buf[v]), *value, "{what}");
                assert_eq!(r.after_timestamp.end, r.range.end, "{what}");
                let mut after = Reader {
                    buf: &buf,
                    pos: r.after_timestamp.start,
                };
                assert_eq!(
                    after.varint(),
                    Some(i as i32),
                    "{what}: the offset delta starts after_timestamp"
                );
            }
            assert_eq!(pos, buf.len(), "{compression:?}");
        }
    }

    #[test]
    fn rewritten_timestamp_delta_reads_back() {
        let records: [KeyValue; 3] = [
            (Some(b"k0"), Some(b"v0")),
            (Some(b"k1"), None),
            (None, Some(&[1; 200])),
        ];
        let buf = section(&batch(Compression::None, &records));
        let raw = parse_raw_records(&buf).unwrap();

        // Its own delta reproduces the record byte for byte.
        let mut same = Vec::new();
        for r in &raw {
            write_record_with_timestamp_delta(&mut same, &buf, r, r.timestamp_delta);
        }
        assert_eq!(same, buf);

        // Deltas whose varlong is longer or shorter than the original's (0, 10 and 20: one byte each).
        for delta in [-10_000_000_000, 0, 63, 64, -65, i64::MAX, i64::MIN, 1 << 40] {
            let mut out = Vec::new();
            for r in &raw {
                write_record_with_timestamp_delta(&mut out, &buf, r, delta);
            }
            let back = parse_raw_records(&out).unwrap_or_else(|e| panic!("delta {delta}: {e}"));
            assert_eq!(back.len(), raw.len());
            for (new, old) in back.iter().zip(&raw) {
                assert_eq!(new.timestamp_delta, delta);
                assert_eq!(new.offset_delta, old.offset_delta);
                assert_eq!(new.attributes, old.attributes);
                assert_eq!(
                    new.key.clone().map(|k| &out[k]),
                    old.key.clone().map(|k| &buf[k])
                );
                assert_eq!(
                    new.value.clone().map(|v| &out[v]),
                    old.value.clone().map(|v| &buf[v])
                );
                assert_eq!(
                    &out[new.after_timestamp.clone()],
                    &buf[old.after_timestamp.clone()]
                );
            }
        }
    }

    #[test]
    fn varlong_lengths_match_what_is_written() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            8191,
            8192,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            write_varlong(&mut out, v);
            assert_eq!(out.len(), varlong_len(v), "{v}");
            assert_eq!(Reader { buf: &out, pos: 0 }.varlong(), Some(v), "{v}");
        }
    }

    /// A one-record section built by hand: `fields` after the length varint.
    fn hand_record(fields: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_varlong(&mut out, fields.len() as i64);
        out.extend_from_slice(fields);
        out
    }

    fn malformed(buf: &[u8]) -> &'static str {
        match parse_raw_records(buf) {
            Err(RecordsError::Malformed { reason, .. }) => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lengths_are_checked_against_the_record() {
        // attributes, timestamp delta 0, offset delta 0, key "k", value "v", no headers.
        let good = [0, 0, 0, 2, b'k', 2, b'v', 0];
        assert_eq!(parse_raw_records(&hand_record(&good)).unwrap().len(), 1);
        // A trailing byte inside the record's length (Kafka: "Invalid record size").
        assert_eq!(
            malformed(&hand_record(&[&good[..], &[0]].concat())),
            "record longer than its fields"
        );
        // The value runs past the record's end although the section has bytes after it.
        let mut two = hand_record(&[0, 0, 0, 2, b'k', 4, b'v']);
        two.extend_from_slice(&hand_record(&good));
        assert_eq!(malformed(&two), "value beyond the record");
        // The header count claims a billion headers: an error, not an allocation.
        let mut forged = good[..7].to_vec();
        write_varlong(&mut forged, 1_000_000_000);
        assert_eq!(malformed(&hand_record(&forged)), "bad header key length");
        // Null header key, negative header count, key length below -1.
        assert_eq!(
            malformed(&hand_record(&[0, 0, 0, 2, b'k', 2, b'v', 2, 1, 1])),
            "null header key"
        );
        assert_eq!(
            malformed(&hand_record(&[0, 0, 0, 2, b'k', 2, b'v', 1])),
            "negative header count"
        );
        assert_eq!(
            malformed(&hand_record(&[0, 0, 0, 3, 2, b'v', 0])),
            "negative key length"
        );
        // A length beyond the section, a negative length, a varint longer than five bytes.
        assert_eq!(malformed(&[20, 0, 0]), "length beyond the records");
        assert_eq!(malformed(&[1]), "negative length");
        assert_eq!(
            malformed(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            "bad length"
        );
        // The walker reports the index of the bad record.
        let mut second_bad = hand_record(&good);
        second_bad.push(1);
        assert!(matches!(
            parse_raw_records(&second_bad),
            Err(RecordsError::Malformed { index: 1, .. })
        ));
    }

    #[test]
    fn decompression_is_bounded() {
        let b = keys_batch(Compression::Gzip, &[None; 20]);
        assert!(matches!(
            read_records(&b, 1000),
            Err(RecordsError::TooLarge(1000))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let good = keys_batch(Compression::None, &[Some(b"k"), None]);
        for cut in 0..good.len() {
            let _ = read_records(&good[..cut], 1 << 20);
        }
        let mut forged = good.clone();
        for i in batch::RECORD_BATCH_OVERHEAD..forged.len() {
            forged[i] = 0xff;
            let _ = read_records(&forged, 1 << 20);
        }
        for codec in 1..=7u8 {
            let mut b = good.clone();
            b[22] = (b[22] & !0x07) | codec;
            let _ = read_records(&b, 1 << 20);
        }
        for codec in 0..=7u8 {
            for cut in 0..64 {
                let _ = decompress(codec, &sample(cut), 1 << 20);
            }
        }
    }

    #[test]
    fn damaged_raw_records_never_panic() {
        let records: [KeyValue; 3] = [
            (Some(b"key"), Some(b"value")),
            (None, None),
            (Some(b"k"), Some(b"v")),
        ];
        let buf = section(&batch(Compression::None, &records));
        let ends: Vec<usize> = parse_raw_records(&buf)
            .unwrap()
            .iter()
            .map(|r| r.range.end)
            .collect();
        // A cut at a record boundary leaves the records before it; any other cut is an error.
        for cut in 0..buf.len() {
            match parse_raw_records(&buf[..cut]) {
                Ok(raw) => {
                    assert!(cut == 0 || ends.contains(&cut), "cut {cut} parsed");
                    assert_eq!(raw.last().map_or(0, |r| r.range.end), cut);
                }
                Err(RecordsError::Malformed { .. }) => assert!(!ends.contains(&cut), "cut {cut}"),
                Err(e) => panic!("cut {cut}: {e}"),
            }
        }
        for i in 0..buf.len() {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xff, buf[i] ^ 0x01] {
                let mut forged = buf.clone();
                forged[i] = byte;
                if let Ok(raw) = parse_raw_records(&forged) {
                    // Whatever parses is within the buffer and rewrites without panicking.
                    let mut out = Vec::new();
                    for r in &raw {
                        assert!(r.range.end <= forged.len());
                        write_record_with_timestamp_delta(&mut out, &forged, r, -10_000_000_000);
                    }
                    assert_eq!(
                        parse_raw_records(&out).map(|r| r.len()).ok(),
                        Some(raw.len())
                    );
                }
            }
        }
    }
}
