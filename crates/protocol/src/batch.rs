//! Zero-copy view of magic-v2 record batch headers: field offsets, CRC32C validation, iteration over
//! concatenated batches and in-place setters for the fields a broker rewrites.
//!
//! Layout (Kafka's `DefaultRecordBatch`, all big-endian):
//! ```text
//! baseOffset: i64 @0 | batchLength: i32 @8 | partitionLeaderEpoch: i32 @12 | magic: i8 @16 | crc: u32 @17
//! attributes: i16 @21 | lastOffsetDelta: i32 @23 | baseTimestamp: i64 @27 | maxTimestamp: i64 @35
//! producerId: i64 @43 | producerEpoch: i16 @51 | baseSequence: i32 @53 | recordCount: i32 @57 | records @61
//! ```
//! `batchLength` counts the bytes after itself (total size - 12). The CRC32C covers attributes..end, so
//! base offset and partition leader epoch can be rewritten without recomputing it.

/// Offset of `baseOffset`.
pub const BASE_OFFSET_OFFSET: usize = 0;
/// Offset of `batchLength`.
pub const LENGTH_OFFSET: usize = 8;
/// Offset of `partitionLeaderEpoch`.
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
/// Offset of `magic`.
pub const MAGIC_OFFSET: usize = 16;
/// Offset of `crc`.
pub const CRC_OFFSET: usize = 17;
/// Offset of `attributes`; the CRC covers from here to the end of the batch.
pub const ATTRIBUTES_OFFSET: usize = 21;
/// Offset of `lastOffsetDelta`.
pub const LAST_OFFSET_DELTA_OFFSET: usize = 23;
/// Offset of `baseTimestamp`.
pub const BASE_TIMESTAMP_OFFSET: usize = 27;
/// Offset of `maxTimestamp`.
pub const MAX_TIMESTAMP_OFFSET: usize = 35;
/// Offset of `producerId`.
pub const PRODUCER_ID_OFFSET: usize = 43;
/// Offset of `producerEpoch`.
pub const PRODUCER_EPOCH_OFFSET: usize = 51;
/// Offset of `baseSequence`.
pub const BASE_SEQUENCE_OFFSET: usize = 53;
/// Offset of `recordCount`.
pub const RECORDS_COUNT_OFFSET: usize = 57;
/// Size of the batch header; records start here.
pub const RECORD_BATCH_OVERHEAD: usize = 61;
/// Bytes before and including `batchLength` (`batchLength` counts what follows).
pub const LOG_OVERHEAD: usize = 12;
/// The only supported magic.
pub const MAGIC_V2: i8 = 2;

/// Attribute bits: compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub const COMPRESSION_CODEC_MASK: i16 = 0x07;
/// Attribute bit: timestamps are LogAppendTime.
pub const TIMESTAMP_TYPE_MASK: i16 = 0x08;
/// Attribute bit: the batch is part of a transaction.
pub const TRANSACTIONAL_FLAG_MASK: i16 = 0x10;
/// Attribute bit: the batch holds a control record.
pub const CONTROL_FLAG_MASK: i16 = 0x20;

/// Why a buffer is not a valid magic-v2 batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than a header or than `batchLength` says.
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the batch needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// `batchLength` is smaller than a header.
    #[error("record batch length {0} is invalid")]
    InvalidLength(i32),
    /// Magic is not 2.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// Stored and computed CRC32C differ.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The CRC in the header.
        stored: u32,
        /// The CRC over attributes..end.
        computed: u32,
    },
    /// `lastOffsetDelta` does not match `recordCount - 1`, or the batch is empty.
    #[error("record batch has {count} records but lastOffsetDelta {last_offset_delta}")]
    CountMismatch {
        /// `recordCount`.
        count: i32,
        /// `lastOffsetDelta`.
        last_offset_delta: i32,
    },
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Total size (`LOG_OVERHEAD + batchLength`) of the batch starting at `buf[0]`, from its first 12 bytes;
/// `None` if fewer than 12 bytes are present or the length is below a header.
pub fn batch_size(buf: &[u8]) -> Option<usize> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let length = be_i32(buf, LENGTH_OFFSET);
    if length < (RECORD_BATCH_OVERHEAD - LOG_OVERHEAD) as i32 {
        return None;
    }
    Some(LOG_OVERHEAD + length as usize)
}

/// A read-only view of one magic-v2 batch header; the slice holds at least the full header.
#[derive(Clone, Copy, Debug)]
pub struct BatchHeader<'a> {
    buf: &'a [u8],
}

impl<'a> BatchHeader<'a> {
    /// Views the header at the start of `buf`; checks only that a whole header and a sane length are
    /// present (the batch body may be absent, so this also works on a header read alone).
    pub fn new(buf: &'a [u8]) -> Result<Self, BatchError> {
        if buf.len() < RECORD_BATCH_OVERHEAD {
            return Err(BatchError::Truncated {
                needed: RECORD_BATCH_OVERHEAD,
                available: buf.len(),
            });
        }
        let length = be_i32(buf, LENGTH_OFFSET);
        if length < (RECORD_BATCH_OVERHEAD - LOG_OVERHEAD) as i32 {
            return Err(BatchError::InvalidLength(length));
        }
        Ok(BatchHeader { buf })
    }

    /// The bytes the view was made over.
    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// `baseOffset`.
    pub fn base_offset(&self) -> i64 {
        be_i64(self.buf, BASE_OFFSET_OFFSET)
    }
    /// `batchLength` (size minus 12).
    pub fn batch_length(&self) -> i32 {
        be_i32(self.buf, LENGTH_OFFSET)
    }
    /// Total size of the batch in bytes.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length() as usize
    }
    /// `partitionLeaderEpoch`.
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(self.buf, PARTITION_LEADER_EPOCH_OFFSET)
    }
    /// `magic`.
    pub fn magic(&self) -> i8 {
        self.buf[MAGIC_OFFSET] as i8
    }
    /// Stored `crc`.
    pub fn crc(&self) -> u32 {
        be_i32(self.buf, CRC_OFFSET) as u32
    }
    /// `attributes`.
    pub fn attributes(&self) -> i16 {
        be_i16(self.buf, ATTRIBUTES_OFFSET)
    }
    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes() & COMPRESSION_CODEC_MASK) as u8
    }
    /// True when timestamps are LogAppendTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & TIMESTAMP_TYPE_MASK != 0
    }
    /// True for a transactional batch.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_FLAG_MASK != 0
    }
    /// True for a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_FLAG_MASK != 0
    }
    /// `lastOffsetDelta`.
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.buf, LAST_OFFSET_DELTA_OFFSET)
    }
    /// Offset of the last record: base offset + last offset delta.
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .saturating_add(i64::from(self.last_offset_delta()))
    }
    /// Offset after the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }
    /// `baseTimestamp`.
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.buf, BASE_TIMESTAMP_OFFSET)
    }
    /// `maxTimestamp`.
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.buf, MAX_TIMESTAMP_OFFSET)
    }
    /// `producerId` (-1 when not idempotent).
    pub fn producer_id(&self) -> i64 {
        be_i64(self.buf, PRODUCER_ID_OFFSET)
    }
    /// `producerEpoch`.
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.buf, PRODUCER_EPOCH_OFFSET)
    }
    /// `baseSequence`.
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.buf, BASE_SEQUENCE_OFFSET)
    }
    /// `recordCount`.
    pub fn record_count(&self) -> i32 {
        be_i32(self.buf, RECORDS_COUNT_OFFSET)
    }

    /// CRC32C over attributes..end; needs the whole batch in the view.
    pub fn compute_crc(&self) -> Result<u32, BatchError> {
        let size = self.size();
        if self.buf.len() < size {
            return Err(BatchError::Truncated {
                needed: size,
                available: self.buf.len(),
            });
        }
        Ok(crc32c::crc32c(&self.buf[ATTRIBUTES_OFFSET..size]))
    }

    /// Validation of a stored, replicated or fetched batch without decoding records: whole batch present,
    /// magic 2, CRC32C, and no more records than offsets (`0 <= recordCount <= lastOffsetDelta + 1`): log
    /// compaction removes records but keeps a batch's offset range, and may keep a producer's last batch
    /// with no record at all (as Kafka's cleaner does).
    pub fn validate(&self) -> Result<(), BatchError> {
        self.validate_with(false)
    }

    /// [`BatchHeader::validate`] plus what a producer's batch must satisfy (Kafka's `LogValidator`): at least
    /// one record and one offset per record (`lastOffsetDelta == recordCount - 1`).
    pub fn validate_produced(&self) -> Result<(), BatchError> {
        self.validate_with(true)
    }

    fn validate_with(&self, produced: bool) -> Result<(), BatchError> {
        if self.magic() != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(self.magic()));
        }
        let computed = self.compute_crc()?;
        if computed != self.crc() {
            return Err(BatchError::CrcMismatch {
                stored: self.crc(),
                computed,
            });
        }
        let count = self.record_count();
        let last_offset_delta = self.last_offset_delta();
        let dense = count >= 1 && i64::from(last_offset_delta) == i64::from(count) - 1;
        let plausible =
            count >= 0 && last_offset_delta >= 0 && count <= last_offset_delta.saturating_add(1);
        if (produced && !dense) || !plausible {
            return Err(BatchError::CountMismatch {
                count,
                last_offset_delta,
            });
        }
        Ok(())
    }
}

/// Writes `baseOffset` in place (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes `partitionLeaderEpoch` in place (not covered by the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Rewrites the batch as LogAppendTime with `max_timestamp_ms` and recomputes the CRC; `batch` must hold
/// the whole batch (as validated by [`BatchHeader::validate`]).
pub fn set_log_append_time(batch: &mut [u8], max_timestamp_ms: i64) -> Result<(), BatchError> {
    let size = BatchHeader::new(batch)?.size();
    if batch.len() < size {
        return Err(BatchError::Truncated {
            needed: size,
            available: batch.len(),
        });
    }
    let attributes = be_i16(batch, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_MASK;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&max_timestamp_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..size]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Iterates over concatenated batches, yielding `(position, header)`; stops with an error at the first
/// batch whose header is short or whose body is cut (it does not check CRCs).
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Batches<'a> {
    /// Iterates the batches in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Batches { buf, pos: 0 }
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<(usize, BatchHeader<'a>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let header = match BatchHeader::new(rest) {
            Ok(h) => h,
            Err(e) => {
                self.pos = self.buf.len();
                return Some(Err(e));
            }
        };
        let size = header.size();
        if rest.len() < size {
            self.pos = self.buf.len();
            return Some(Err(BatchError::Truncated {
                needed: size,
                available: rest.len(),
            }));
        }
        let at = self.pos;
        self.pos += size;
        Some(Ok((at, BatchHeader { buf: &rest[..size] })))
    }
}

/// Reads a zig-zag varint (Kafka's `varint`/`varlong`) at `*pos`, advancing it; `None` when malformed.
fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

/// Iterates `(offset delta, timestamp)` of each record of an uncompressed batch without decoding keys,
/// values or headers. Ends early on malformed records.
#[derive(Clone, Debug)]
pub struct RecordTimestamps<'a> {
    buf: &'a [u8],
    pos: usize,
    remaining: i32,
    base_timestamp_ms: i64,
}

/// The record timestamps of `batch` (a whole batch), or `None` when it is compressed (its records
/// cannot be read without decompressing) or too short.
pub fn record_timestamps(batch: &[u8]) -> Option<RecordTimestamps<'_>> {
    let header = BatchHeader::new(batch).ok()?;
    if header.compression() != 0 || batch.len() < header.size() {
        return None;
    }
    Some(RecordTimestamps {
        buf: &batch[..header.size()],
        pos: RECORD_BATCH_OVERHEAD,
        remaining: header.record_count(),
        base_timestamp_ms: header.base_timestamp(),
    })
}

impl Iterator for RecordTimestamps<'_> {
    type Item = (i64, i64);

    fn next(&mut self) -> Option<(i64, i64)> {
        if self.remaining <= 0 {
            return None;
        }
        self.remaining -= 1;
        let length = get_varint(self.buf, &mut self.pos)?;
        let body_start = self.pos;
        let end = body_start.checked_add(usize::try_from(length).ok()?)?;
        if end > self.buf.len() {
            self.remaining = 0;
            return None;
        }
        let mut p = body_start + 1; // attributes
        let timestamp_delta = get_varint(&self.buf[..end], &mut p)?;
        let offset_delta = get_varint(&self.buf[..end], &mut p)?;
        self.pos = end;
        Some((
            offset_delta,
            self.base_timestamp_ms.saturating_add(timestamp_delta),
        ))
    }
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One record's key and value for [`build_batch`] (`None` is a null key or value).
pub type RecordKeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Encodes an uncompressed magic-v2 batch whose records carry the given timestamps (base timestamp = the
/// first, max timestamp = the largest), with null keys. Used by tests and tools.
pub fn build_batch_with_timestamps(records: &[(i64, &[u8])]) -> Vec<u8> {
    let base = records.first().map_or(0, |r| r.0);
    let kvs: Vec<RecordKeyValue<'_>> = records.iter().map(|r| (None, Some(r.1))).collect();
    let mut out = build_batch(base, &kvs, -1, -1, -1);
    // Rewrite each record's timestamp delta: re-encode the records with their deltas.
    let mut body = Vec::new();
    for (i, (ts, value)) in records.iter().enumerate() {
        let mut rec = vec![0u8];
        put_varint(&mut rec, ts - base);
        put_varint(&mut rec, i as i64);
        put_varint(&mut rec, -1);
        put_varint(&mut rec, value.len() as i64);
        rec.extend_from_slice(value);
        put_varint(&mut rec, 0);
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    out.truncate(RECORD_BATCH_OVERHEAD);
    out.extend_from_slice(&body);
    let length = (out.len() - LOG_OVERHEAD) as i32;
    out[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    let max = records.iter().map(|r| r.0).max().unwrap_or(base);
    out[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&max.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Encodes an uncompressed magic-v2 batch (base offset 0, CreateTime, no headers). Used by tests, tools
/// and benchmarks; the broker never re-encodes produced batches.
pub fn build_batch(
    base_timestamp_ms: i64,
    records: &[RecordKeyValue<'_>],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut rec = Vec::new();
        rec.push(0u8); // attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        match key {
            Some(k) => {
                put_varint(&mut rec, k.len() as i64);
                rec.extend_from_slice(k);
            }
            None => put_varint(&mut rec, -1),
        }
        match value {
            Some(v) => {
                put_varint(&mut rec, v.len() as i64);
                rec.extend_from_slice(v);
            }
            None => put_varint(&mut rec, -1),
        }
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut out = Vec::with_capacity(RECORD_BATCH_OVERHEAD + body.len());
    out.extend_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(
        &((RECORD_BATCH_OVERHEAD - LOG_OVERHEAD + body.len()) as i32).to_be_bytes(),
    );
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes());
    out.extend_from_slice(&base_timestamp_ms.to_be_bytes());
    out.extend_from_slice(&base_timestamp_ms.to_be_bytes());
    out.extend_from_slice(&producer_id.to_be_bytes());
    out.extend_from_slice(&producer_epoch.to_be_bytes());
    out.extend_from_slice(&base_sequence.to_be_bytes());
    out.extend_from_slice(&(records.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        let recs: Vec<RecordKeyValue<'_>> = (0..n).map(|_| (None, Some(&b"hello"[..]))).collect();
        build_batch(1_000, &recs, -1, -1, -1)
    }

    #[test]
    fn built_batch_validates_and_reads_back() {
        let b = sample(3);
        let h = BatchHeader::new(&b).unwrap();
        h.validate().unwrap();
        assert_eq!(h.size(), b.len());
        assert_eq!(h.record_count(), 3);
        assert_eq!(h.last_offset_delta(), 2);
        assert_eq!(h.magic(), 2);
        assert_eq!(h.max_timestamp(), 1_000);
        assert_eq!(batch_size(&b), Some(b.len()));
    }

    #[test]
    fn setters_keep_crc_valid() {
        let mut b = sample(2);
        set_base_offset(&mut b, 42);
        set_partition_leader_epoch(&mut b, 7);
        let h = BatchHeader::new(&b).unwrap();
        h.validate().unwrap();
        assert_eq!(
            (h.base_offset(), h.last_offset(), h.partition_leader_epoch()),
            (42, 43, 7)
        );
        set_log_append_time(&mut b, 9_999).unwrap();
        let h = BatchHeader::new(&b).unwrap();
        h.validate().unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp(), 9_999);
    }

    #[test]
    fn corrupt_byte_fails_crc() {
        let mut b = sample(2);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(
            BatchHeader::new(&b).unwrap().validate(),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn wrong_magic_and_count_rejected() {
        let mut b = sample(2);
        b[MAGIC_OFFSET] = 1;
        assert_eq!(
            BatchHeader::new(&b).unwrap().validate(),
            Err(BatchError::UnsupportedMagic(1))
        );
        let mut b = sample(2);
        b[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
            .copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        // Fewer records than offsets: a compacted batch, valid when stored, refused from a producer.
        assert_eq!(BatchHeader::new(&b).unwrap().validate(), Ok(()));
        assert!(matches!(
            BatchHeader::new(&b).unwrap().validate_produced(),
            Err(BatchError::CountMismatch { .. })
        ));
        // More records than offsets is never valid.
        b[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
            .copy_from_slice(&0i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            BatchHeader::new(&b).unwrap().validate(),
            Err(BatchError::CountMismatch { .. })
        ));
    }

    #[test]
    fn iteration_stops_at_cut_batch() {
        let mut buf = sample(1);
        buf.extend(sample(2));
        let full = buf.len();
        buf.extend_from_slice(&sample(1)[..30]);
        let items: Vec<_> = Batches::new(&buf).collect();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        assert!(items[2].is_err());
        let (pos, _) = *items[1].as_ref().unwrap();
        assert!(pos < full);
        assert!(BatchHeader::new(&buf[..20]).is_err());
    }

    #[test]
    fn record_timestamps_of_uncompressed_batches() {
        let b = build_batch_with_timestamps(&[(100, b"a"), (90, b"bb"), (130, b"ccc"), (120, b"")]);
        let h = BatchHeader::new(&b).unwrap();
        h.validate().unwrap();
        assert_eq!(
            (h.base_timestamp(), h.max_timestamp(), h.record_count()),
            (100, 130, 4)
        );
        let ts: Vec<_> = record_timestamps(&b).unwrap().collect();
        assert_eq!(ts, vec![(0, 100), (1, 90), (2, 130), (3, 120)]);
        let mut gz = b.clone();
        gz[ATTRIBUTES_OFFSET + 1] |= 1;
        assert!(
            record_timestamps(&gz).is_none(),
            "compressed records are not readable"
        );
        // A cut batch ends the iteration instead of panicking.
        assert!(record_timestamps(&b[..b.len() - 2]).is_none());
        let mut bad = b.clone();
        bad[RECORD_BATCH_OVERHEAD] = 0xff; // record length varint that never ends / is huge
        let _ = record_timestamps(&bad).unwrap().count();
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut pos = 0;
            assert_eq!(get_varint(&out, &mut pos), Some(v));
            assert_eq!(pos, out.len());
        }
        assert_eq!(get_varint(&[0x80, 0x80], &mut 0), None);
    }

    #[test]
    fn short_or_negative_length_rejected() {
        let mut b = sample(1);
        b[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            BatchHeader::new(&b).unwrap_err(),
            BatchError::InvalidLength(-5)
        );
        assert_eq!(batch_size(&b), None);
    }
}
