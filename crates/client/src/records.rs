//! Record types seen by users (produced, consumed, delivered) and the conversion to and from magic-v2 record
//! batches through `kafka-protocol`'s `RecordBatchEncoder` / `RecordBatchDecoder` (every codec).

use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use sluice_protocol::batch::{BatchError, Batches};

use crate::error::{ClientError, Result};

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Target topic.
    pub topic: String,
    /// Explicit partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// Key (`None` = null key).
    pub key: Option<Bytes>,
    /// Value (`None` = null value, a tombstone on compacted topics).
    pub value: Option<Bytes>,
    /// Headers in order; a header value may be null.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// CreateTime timestamp in ms since the epoch; `None` = now.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and no key.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..ProducerRecord::default()
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> ProducerRecord {
        self.key = Some(key.into());
        self
    }

    /// Sets an explicit partition.
    pub fn with_partition(mut self, partition: i32) -> ProducerRecord {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn with_header(
        mut self,
        key: impl Into<String>,
        value: impl Into<Bytes>,
    ) -> ProducerRecord {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// Approximate encoded size, used for `batch.size` and buffer accounting.
    pub fn size_bytes(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len) + 4)
            .sum();
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + headers
            + 16
    }
}

/// Where a produced record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset assigned by the broker (-1 with acks=0).
    pub offset: i64,
    /// The record's timestamp (LogAppendTime if the topic uses it, else the CreateTime sent).
    pub timestamp_ms: i64,
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp in ms since the epoch.
    pub timestamp_ms: i64,
    /// Whether the timestamp is LogAppendTime (else CreateTime).
    pub log_append_time: bool,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Batch compression (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionType {
    /// No compression.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy (xerial framing, as Kafka).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl CompressionType {
    /// Every codec, for tests and help texts.
    pub const ALL: [CompressionType; 5] = [
        CompressionType::None,
        CompressionType::Gzip,
        CompressionType::Snappy,
        CompressionType::Lz4,
        CompressionType::Zstd,
    ];

    /// Kafka's name for the codec.
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::None => "none",
            CompressionType::Gzip => "gzip",
            CompressionType::Snappy => "snappy",
            CompressionType::Lz4 => "lz4",
            CompressionType::Zstd => "zstd",
        }
    }

    fn codec(self) -> Compression {
        match self {
            CompressionType::None => Compression::None,
            CompressionType::Gzip => Compression::Gzip,
            CompressionType::Snappy => Compression::Snappy,
            CompressionType::Lz4 => Compression::Lz4,
            CompressionType::Zstd => Compression::Zstd,
        }
    }
}

impl FromStr for CompressionType {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self> {
        CompressionType::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                ClientError::Config(format!(
                    "unknown compression {s:?} (none, gzip, snappy, lz4, zstd)"
                ))
            })
    }
}

impl std::fmt::Display for CompressionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Encodes `records` (with their timestamps already resolved) as one magic-v2 batch, base offset 0, no
/// producer id.
pub(crate) fn encode_batch(
    records: &[(ProducerRecord, i64)],
    compression: CompressionType,
) -> Result<Bytes> {
    let encoded: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (r, timestamp_ms))| {
            let mut headers = IndexMap::with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers.insert(StrBytes::from_string(k.clone()), v.clone());
            }
            let offset = i as i64;
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset,
                // The encoder keeps records in one batch while `offset - sequence` is constant; this makes
                // the batch's base sequence -1 (no sequence), as a non-idempotent producer sends.
                sequence: (offset as i32).wrapping_sub(1),
                timestamp: *timestamp_ms,
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            }
        })
        .collect();
    let size: usize = records.iter().map(|(r, _)| r.size_bytes()).sum();
    let mut buf = BytesMut::with_capacity(size + 128);
    let options = RecordEncodeOptions {
        version: 2,
        compression: compression.codec(),
    };
    let encoded_result = if compression == CompressionType::Lz4 {
        RecordBatchEncoder::encode_with_custom_compression(
            &mut buf,
            encoded.iter(),
            &options,
            Some(lz4_fast),
        )
    } else {
        RecordBatchEncoder::encode(&mut buf, encoded.iter(), &options)
    };
    encoded_result
        .map_err(|e| ClientError::Config(format!("cannot encode a record batch: {e}")))?;
    Ok(buf.freeze())
}

/// LZ4 frame (independent 64 KiB blocks, as Kafka writes them) at the fast level and without the optional
/// content checksum, like librdkafka's and the Java client's defaults (the batch CRC32C already covers it).
fn lz4_fast(records: &mut BytesMut, out: &mut BytesMut, _codec: Compression) -> anyhow::Result<()> {
    use bytes::BufMut;
    use std::io::Write;
    let mut encoder = lz4::EncoderBuilder::new()
        .level(0)
        .block_mode(lz4::BlockMode::Independent)
        .checksum(lz4::ContentChecksum::NoChecksum)
        .build(out.writer())?;
    encoder.write_all(records)?;
    let (_, result) = encoder.finish();
    result?;
    Ok(())
}

/// Largest record count accepted in one batch header: the decoder reserves memory by it, so a corrupt count
/// must not turn into a huge allocation.
const MAX_RECORDS_PER_BATCH: i32 = 1 << 22;

/// What [`decode_batches`] found in one partition's fetched bytes.
#[derive(Debug, Default)]
pub(crate) struct DecodedRecords {
    /// Records at or after the fetch offset, control records dropped.
    pub(crate) records: Vec<ConsumerRecord>,
    /// The offset after the last whole batch (the next fetch position), if any batch was whole.
    pub(crate) next_offset: Option<i64>,
}

/// Decodes the whole batches in `data` (a trailing partial batch is normal and ignored), keeping the records
/// at or after `from_offset`. Each batch's CRC32C is checked before `kafka-protocol` decodes it.
pub(crate) fn decode_batches(
    topic: &str,
    partition: i32,
    data: &Bytes,
    from_offset: i64,
) -> Result<DecodedRecords> {
    let corrupt = |offset: i64, reason: String| ClientError::CorruptBatch {
        topic: topic.to_owned(),
        partition,
        offset,
        reason,
    };
    let mut out = DecodedRecords::default();
    for item in Batches::new(data) {
        let (at, header) = match item {
            Ok(b) => b,
            // A partial batch at the end of a fetch response (the broker cut at max_bytes).
            Err(BatchError::Truncated { .. }) => break,
            Err(e) => return Err(corrupt(from_offset, e.to_string())),
        };
        let next = header.next_offset();
        if header.record_count() == 0 && header.is_control() {
            out.next_offset = Some(next);
            continue;
        }
        header
            .validate()
            .map_err(|e| corrupt(header.base_offset(), e.to_string()))?;
        if header.record_count() > MAX_RECORDS_PER_BATCH {
            return Err(corrupt(
                header.base_offset(),
                format!("record count {} is implausible", header.record_count()),
            ));
        }
        out.next_offset = Some(next);
        if next <= from_offset || header.is_control() {
            continue;
        }
        let mut slice = data.slice(at..at + header.size());
        let set = RecordBatchDecoder::decode(&mut slice)
            .map_err(|e| corrupt(header.base_offset(), e.to_string()))?;
        for r in set.records {
            if r.offset < from_offset || r.control {
                continue;
            }
            out.records.push(ConsumerRecord {
                topic: topic.to_owned(),
                partition,
                offset: r.offset,
                timestamp_ms: r.timestamp,
                log_append_time: r.timestamp_type == TimestampType::LogAppend,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_one_batch() {
        let records: Vec<(ProducerRecord, i64)> = (0..50)
            .map(|i| {
                (
                    ProducerRecord::new("t", format!("value-{i}"))
                        .with_key(format!("k{i}"))
                        .with_header("h", "v"),
                    1_000 + i,
                )
            })
            .collect();
        for codec in CompressionType::ALL {
            let batch = encode_batch(&records, codec).unwrap();
            let header = sluice_protocol::batch::BatchHeader::new(&batch).unwrap();
            header.validate().unwrap();
            assert_eq!(header.record_count(), 50);
            assert_eq!(header.base_sequence(), -1);
            assert_eq!(i16::from(header.compression()), codec.codec() as i16);
            let decoded = decode_batches("t", 0, &batch, 10).unwrap();
            assert_eq!(decoded.next_offset, Some(50));
            assert_eq!(decoded.records.len(), 40);
            assert_eq!(decoded.records[0].offset, 10);
            assert_eq!(decoded.records[0].value.as_deref(), Some(&b"value-10"[..]));
            assert_eq!(decoded.records[0].key.as_deref(), Some(&b"k10"[..]));
            assert_eq!(decoded.records[0].timestamp_ms, 1_010);
            assert_eq!(decoded.records[0].headers[0].0, "h");
        }
    }

    #[test]
    fn partial_tail_is_ignored_and_corruption_is_an_error() {
        let records = vec![(ProducerRecord::new("t", "x"), 5)];
        let batch = encode_batch(&records, CompressionType::None).unwrap();
        let mut two = batch.to_vec();
        two.extend_from_slice(&batch[..batch.len() - 3]);
        let decoded = decode_batches("t", 0, &Bytes::from(two), 0).unwrap();
        assert_eq!(decoded.records.len(), 1);

        let mut bad = batch.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            decode_batches("t", 0, &Bytes::from(bad), 0),
            Err(ClientError::CorruptBatch { .. })
        ));
    }
}
