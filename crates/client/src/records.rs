//! Record types seen by users (produced, consumed, delivered) and the conversion to and from magic-v2 record
//! batches through `kafka-protocol`'s `RecordBatchEncoder` / `RecordBatchDecoder` (every codec).

use std::collections::HashSet;
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

/// The idempotence fields of a produced batch's header (KIP-98): producer id, epoch, base sequence and the
/// transactional flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerStamp {
    /// Producer id.
    pub(crate) producer_id: i64,
    /// Producer epoch.
    pub(crate) epoch: i16,
    /// Sequence of the batch's first record.
    pub(crate) base_sequence: i32,
    /// Whether the batch belongs to a transaction (attribute bit 4).
    pub(crate) transactional: bool,
}

/// Writes `stamp` into the header of the encoded batch `batch` and recomputes its CRC32C (the producer
/// fields and the attributes are covered by it). Encoding once and stamping keeps one code path for a first
/// send and for a retry whose sequence was rewritten after an epoch bump (KIP-360).
pub(crate) fn stamp_batch(batch: &mut [u8], stamp: ProducerStamp) -> Result<()> {
    use sluice_protocol::batch::{
        BatchHeader, ATTRIBUTES_OFFSET, BASE_SEQUENCE_OFFSET, CRC_OFFSET, PRODUCER_EPOCH_OFFSET,
        PRODUCER_ID_OFFSET, RECORD_BATCH_OVERHEAD, TRANSACTIONAL_FLAG_MASK,
    };
    if batch.len() < RECORD_BATCH_OVERHEAD {
        return Err(ClientError::Config(format!(
            "cannot stamp a record batch of {} bytes",
            batch.len()
        )));
    }
    let mut attributes =
        i16::from_be_bytes([batch[ATTRIBUTES_OFFSET], batch[ATTRIBUTES_OFFSET + 1]]);
    if stamp.transactional {
        attributes |= TRANSACTIONAL_FLAG_MASK;
    } else {
        attributes &= !TRANSACTIONAL_FLAG_MASK;
    }
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8]
        .copy_from_slice(&stamp.producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_OFFSET..PRODUCER_EPOCH_OFFSET + 2]
        .copy_from_slice(&stamp.epoch.to_be_bytes());
    batch[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4]
        .copy_from_slice(&stamp.base_sequence.to_be_bytes());
    let crc = BatchHeader::new(batch)
        .and_then(|h| h.compute_crc())
        .map_err(|e| ClientError::Config(format!("cannot stamp a record batch: {e}")))?;
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Encodes `records` (with their timestamps already resolved) as one magic-v2 batch, base offset 0, with the
/// producer fields of `stamp` (none: producer id -1, base sequence -1, as a non-idempotent producer sends).
pub(crate) fn encode_batch(
    records: &[(ProducerRecord, i64)],
    compression: CompressionType,
    stamp: Option<ProducerStamp>,
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
    if let Some(stamp) = stamp {
        stamp_batch(&mut buf, stamp)?;
    }
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

/// The read_committed view of one fetched partition: the fetch response's `aborted_transactions`, as
/// `(producer id, first offset)`.
pub(crate) type AbortedTransactions<'a> = &'a [(i64, i64)];

/// Whether a control batch holds an ABORT marker: its first record's key is (version i16, type i16) and type 0
/// is ABORT (Kafka's `ControlRecordType`).
fn is_abort_marker(batch: &Bytes) -> bool {
    let mut slice = batch.clone();
    let Ok(set) = RecordBatchDecoder::decode(&mut slice) else {
        return false;
    };
    set.records
        .first()
        .and_then(|r| r.key.as_ref())
        .is_some_and(|key| key.len() >= 4 && i16::from_be_bytes([key[2], key[3]]) == 0)
}

/// Decodes the whole batches in `data` (a trailing partial batch is normal and ignored), keeping the records
/// at or after `from_offset`. Each batch's CRC32C is checked before `kafka-protocol` decodes it.
///
/// `read_committed` (the fetch was sent with isolation level 1) drops the records of aborted transactions
/// exactly as the Java consumer's `CompletedFetch` does: going through the batches in offset order, an
/// aborted transaction of the response's list becomes active for its producer once a batch of that producer
/// reaches the transaction's first offset; while active, that producer's transactional batches are skipped;
/// the producer's ABORT marker ends it. Control batches are never returned.
pub(crate) fn decode_batches(
    topic: &str,
    partition: i32,
    data: &Bytes,
    from_offset: i64,
    read_committed: Option<AbortedTransactions<'_>>,
) -> Result<DecodedRecords> {
    let corrupt = |offset: i64, reason: String| ClientError::CorruptBatch {
        topic: topic.to_owned(),
        partition,
        offset,
        reason,
    };
    let mut out = DecodedRecords::default();
    // The aborted transactions by first offset, consumed in order (Java's priority queue).
    let mut aborted: Vec<(i64, i64)> = read_committed.map(<[_]>::to_vec).unwrap_or_default();
    aborted.sort_by_key(|&(producer_id, first_offset)| (first_offset, producer_id));
    let mut aborted = aborted.into_iter().peekable();
    let mut aborted_producers: HashSet<i64> = HashSet::new();
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
        if read_committed.is_some() && header.producer_id() >= 0 {
            while let Some((producer_id, _)) =
                aborted.next_if(|&(_, first_offset)| first_offset <= header.last_offset())
            {
                aborted_producers.insert(producer_id);
            }
            let producer_id = header.producer_id();
            if header.is_control() {
                if aborted_producers.contains(&producer_id)
                    && is_abort_marker(&data.slice(at..at + header.size()))
                {
                    aborted_producers.remove(&producer_id);
                }
            } else if header.is_transactional() && aborted_producers.contains(&producer_id) {
                continue;
            }
        }
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
            let batch = encode_batch(&records, codec, None).unwrap();
            let header = sluice_protocol::batch::BatchHeader::new(&batch).unwrap();
            header.validate().unwrap();
            assert_eq!(header.record_count(), 50);
            assert_eq!(header.base_sequence(), -1);
            assert_eq!(i16::from(header.compression()), codec.codec() as i16);
            let decoded = decode_batches("t", 0, &batch, 10, None).unwrap();
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
    fn stamped_batches_carry_the_producer_fields_under_a_valid_crc() {
        let records: Vec<(ProducerRecord, i64)> = (0..3)
            .map(|i| (ProducerRecord::new("t", format!("v{i}")), 1_000))
            .collect();
        let stamp = ProducerStamp {
            producer_id: 4_000_000_001,
            epoch: 7,
            base_sequence: 42,
            transactional: true,
        };
        for codec in CompressionType::ALL {
            let batch = encode_batch(&records, codec, Some(stamp)).unwrap();
            let header = sluice_protocol::batch::BatchHeader::new(&batch).unwrap();
            header.validate_produced().unwrap();
            assert_eq!(header.producer_id(), 4_000_000_001);
            assert_eq!(header.producer_epoch(), 7);
            assert_eq!(header.base_sequence(), 42);
            assert!(header.is_transactional());
            assert_eq!(i16::from(header.compression()), codec.codec() as i16);
            // A retry after an epoch bump is restamped (KIP-360): new fields, CRC still valid, records intact.
            let mut again = BytesMut::from(&batch[..]);
            let bumped = ProducerStamp {
                epoch: 8,
                base_sequence: 0,
                transactional: false,
                ..stamp
            };
            stamp_batch(&mut again, bumped).unwrap();
            let header = sluice_protocol::batch::BatchHeader::new(&again).unwrap();
            header.validate_produced().unwrap();
            assert_eq!((header.producer_epoch(), header.base_sequence()), (8, 0));
            assert!(!header.is_transactional());
            let decoded = decode_batches("t", 0, &again.freeze(), 0, None).unwrap();
            assert_eq!(decoded.records.len(), 3);
            assert_eq!(decoded.records[2].value.as_deref(), Some(&b"v2"[..]));
        }
        assert!(stamp_batch(&mut [0u8; 10], stamp).is_err());
    }

    /// A batch at `base` with one record per value: transactional or not, or a control batch holding one
    /// COMMIT / ABORT marker (key: version 0, type 1 / 0; value: version 0, coordinator epoch 0).
    fn batch_at(base: i64, producer_id: i64, kind: &str, values: &[&str]) -> Vec<u8> {
        let control = kind == "commit" || kind == "abort";
        let records: Vec<Record> = (0..values.len().max(1))
            .map(|i| Record {
                transactional: kind != "plain",
                control,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: i as i32,
                timestamp: 1_000,
                key: control.then(|| {
                    Bytes::from_static(if kind == "commit" {
                        &[0, 0, 0, 1]
                    } else {
                        &[0, 0, 0, 0]
                    })
                }),
                value: if control {
                    Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0]))
                } else {
                    values.get(i).map(|v| Bytes::from(v.to_string()))
                },
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    fn values(decoded: &DecodedRecords) -> Vec<String> {
        decoded
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
            .collect()
    }

    #[test]
    fn read_committed_drops_aborted_transactions_as_the_java_consumer() {
        // Producers 1 and 2 interleave; 1's first transaction aborts, 2's commits, 1's second commits.
        let log: Vec<u8> = [
            batch_at(0, 1, "txn", &["1a", "1b"]),
            batch_at(2, 2, "txn", &["2a"]),
            batch_at(3, -1, "plain", &["p"]),
            batch_at(4, 1, "abort", &[]),
            batch_at(5, 2, "txn", &["2b"]),
            batch_at(6, 2, "commit", &[]),
            batch_at(7, 1, "txn", &["1c"]),
            batch_at(8, 1, "commit", &[]),
        ]
        .concat();
        let data = Bytes::from(log);
        // The broker lists producer 1's aborted transaction, which began at offset 0.
        let aborted = [(1, 0)];
        let decoded = decode_batches("t", 0, &data, 0, Some(&aborted)).unwrap();
        assert_eq!(values(&decoded), ["2a", "p", "2b", "1c"]);
        assert_eq!(decoded.next_offset, Some(9));
        // read_uncommitted sees everything but the markers.
        let decoded = decode_batches("t", 0, &data, 0, None).unwrap();
        assert_eq!(values(&decoded), ["1a", "1b", "2a", "p", "2b", "1c"]);
        // The ABORT marker ends the aborted range: producer 1's later transaction is kept even when listed
        // transactions of other producers are still open.
        let decoded = decode_batches("t", 0, &data, 0, Some(&[(1, 0), (2, 9)])).unwrap();
        assert_eq!(values(&decoded), ["2a", "p", "2b", "1c"]);
        // A fetch starting inside the range still skips it, and the position moves past it.
        let decoded = decode_batches("t", 0, &data, 1, Some(&aborted)).unwrap();
        assert_eq!(values(&decoded), ["2a", "p", "2b", "1c"]);
        // Only aborted batches: nothing returned, the position still advances past them.
        let only =
            Bytes::from([batch_at(0, 1, "txn", &["x"]), batch_at(1, 1, "abort", &[])].concat());
        let decoded = decode_batches("t", 0, &only, 0, Some(&aborted)).unwrap();
        assert!(decoded.records.is_empty());
        assert_eq!(decoded.next_offset, Some(2));
    }

    #[test]
    fn partial_tail_is_ignored_and_corruption_is_an_error() {
        let records = vec![(ProducerRecord::new("t", "x"), 5)];
        let batch = encode_batch(&records, CompressionType::None, None).unwrap();
        let mut two = batch.to_vec();
        two.extend_from_slice(&batch[..batch.len() - 3]);
        let decoded = decode_batches("t", 0, &Bytes::from(two), 0, None).unwrap();
        assert_eq!(decoded.records.len(), 1);

        let mut bad = batch.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            decode_batches("t", 0, &Bytes::from(bad), 0, None),
            Err(ClientError::CorruptBatch { .. })
        ));
    }
}
