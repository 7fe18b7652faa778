//! Record-level reading of one magic-v2 batch, for the few places where Kafka looks inside a batch: the exact
//! offset for a timestamp (ListOffsets) and the key check of compacted topics (Produce).
//!
//! Written for hostile input: every length is checked against the bytes present, nothing is allocated from a
//! count in the data (the `kafka-protocol` decoder reserves `recordCount` entries up front and would abort the
//! process on a forged count), and decompression stops at a caller-given size, so a small compressed batch cannot
//! expand without bound. Compression codecs are Kafka's: gzip, snappy (xerial framing or raw), lz4 (frame
//! format) and zstd.

use std::io::Read;

use sluice_protocol::batch::{self, BatchHeader};

/// What the broker needs to know about one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordInfo {
    /// Offset relative to the batch's base offset.
    pub(crate) offset_delta: i32,
    /// Timestamp relative to the batch's base timestamp.
    pub(crate) timestamp_delta: i64,
    /// False for a null key.
    pub(crate) has_key: bool,
}

/// Why a batch's records could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordsError {
    /// The batch header is invalid.
    #[error("record batch: {0}")]
    Batch(#[from] batch::BatchError),
    /// The records are not well formed.
    #[error("malformed record {index}: {reason}")]
    Malformed {
        /// Index of the record in the batch.
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
}

/// The records of the batch at the start of `batch`, decompressed up to `max_decompressed_bytes`.
pub(crate) fn read_records(
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
    parse_records(records)
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
/// Magic (8) + version (4) + compatible version (4).
const XERIAL_HEADER_BYTES: usize = 16;

fn decompress(codec: u8, body: &[u8], max: usize) -> Result<Vec<u8>, RecordsError> {
    match codec {
        1 => bounded_read(flate2::read::MultiGzDecoder::new(body), "gzip", max),
        2 => snappy(body, max),
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

fn snappy_error(reason: impl std::fmt::Display) -> RecordsError {
    RecordsError::Decompress {
        codec: "snappy",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_string()),
    }
}

fn snappy(body: &[u8], max: usize) -> Result<Vec<u8>, RecordsError> {
    let mut decoder = snap::raw::Decoder::new();
    let mut raw_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), RecordsError> {
        let len = snap::raw::decompress_len(block).map_err(snappy_error)?;
        if out.len().saturating_add(len) > max {
            return Err(RecordsError::TooLarge(max));
        }
        let start = out.len();
        out.resize(start + len, 0);
        decoder
            .decompress(block, &mut out[start..])
            .map_err(snappy_error)?;
        Ok(())
    };
    let mut out = Vec::new();
    if !body.starts_with(XERIAL_MAGIC) {
        raw_block(body, &mut out)?;
        return Ok(out);
    }
    let mut rest = body
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| snappy_error("truncated xerial header"))?;
    while !rest.is_empty() {
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| snappy_error("truncated block length"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let block = rest
            .get(4..4 + len)
            .ok_or_else(|| snappy_error("truncated block"))?;
        raw_block(block, &mut out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// Reads a zig-zag varint (at most 5 bytes) or varlong (at most 10 bytes).
fn varlong(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Option<i64> {
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let b = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// Walks the records (Kafka's `DefaultRecord` layout), reading only what the broker needs.
fn parse_records(buf: &[u8]) -> Result<Vec<RecordInfo>, RecordsError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let index = out.len();
        let bad = |reason| RecordsError::Malformed { index, reason };
        let length = varlong(buf, &mut pos, 5).ok_or(bad("bad length"))?;
        let length = usize::try_from(length).map_err(|_| bad("negative length"))?;
        let end = pos
            .checked_add(length)
            .filter(|e| *e <= buf.len())
            .ok_or(bad("length beyond the batch"))?;
        let record = &buf[..end];
        let mut p = pos;
        p = p
            .checked_add(1)
            .filter(|p| *p <= end)
            .ok_or(bad("truncated attributes"))?;
        let timestamp_delta = varlong(record, &mut p, 10).ok_or(bad("bad timestamp delta"))?;
        let offset_delta = varlong(record, &mut p, 5).ok_or(bad("bad offset delta"))?;
        let offset_delta =
            i32::try_from(offset_delta).map_err(|_| bad("offset delta out of range"))?;
        let key_length = varlong(record, &mut p, 5).ok_or(bad("bad key length"))?;
        if key_length < -1 {
            return Err(bad("negative key length"));
        }
        if key_length > 0 {
            let key_end = usize::try_from(key_length)
                .ok()
                .and_then(|k| p.checked_add(k))
                .filter(|e| *e <= end)
                .ok_or(bad("key beyond the record"))?;
            p = key_end;
        }
        // Value and headers are not needed; the record's length already bounds them.
        let _ = p;
        out.push(RecordInfo {
            offset_delta,
            timestamp_delta,
            has_key: key_length >= 0,
        });
        pos = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(compression: Compression, keys: &[Option<&'static [u8]>]) -> Vec<u8> {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Record {
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
                key: k.map(bytes::Bytes::from_static),
                value: Some(bytes::Bytes::from(vec![b'v'; 300])),
                headers: Default::default(),
            })
            .collect();
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

    #[test]
    fn every_codec_reads_back_offsets_timestamps_and_keys() {
        let keys: [Option<&'static [u8]>; 4] = [Some(b"a"), None, Some(b""), None];
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch(compression, &keys);
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
    fn decompression_is_bounded() {
        let b = batch(Compression::Gzip, &[None; 20]);
        assert!(matches!(
            read_records(&b, 1000),
            Err(RecordsError::TooLarge(1000))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let good = batch(Compression::None, &[Some(b"k"), None]);
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
    }
}
