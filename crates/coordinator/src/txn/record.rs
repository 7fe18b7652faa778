//! The records of `__transaction_state`, encoded exactly as Apache Kafka encodes them (`TransactionLogKey` and
//! `TransactionLogValue` from Kafka's `transaction-coordinator/src/main/resources/common/message/`), framed as
//! Kafka frames coordinator records: the key is an `i16` key version then the key's fields, the value an `i16`
//! value version then the value's fields, and a null value is a tombstone (an expired transactional id).
//!
//! - TransactionLogKey version 0: `TransactionalId` (string).
//! - TransactionLogValue version 0: `ProducerId` i64, `ProducerEpoch` i16, `TransactionTimeoutMs` i32,
//!   `TransactionStatus` i8, `TransactionPartitions` (nullable array of `Topic` string + `PartitionIds` `[]i32`),
//!   `TransactionLastUpdateTimestampMs` i64, `TransactionStartTimestampMs` i64.
//! - TransactionLogValue version 1 (flexible: compact strings and arrays, tagged fields): the same fields, plus
//!   the tagged `PreviousProducerId` (tag 0, default -1), `NextProducerId` (tag 1, default -1) and
//!   `ClientTransactionVersion` (tag 2, default 0), each written only when it differs from its default.
//!
//! Kafka 4.x writes value version 1 once `transaction.version` is 1 or more, and version 0 below that; Sluice
//! serves transaction version 1 and writes version 1 ([`TXN_LOG_VALUE_VERSION`]). Both versions are read;
//! unknown tagged fields are skipped. The partitions are written null in state Empty, as Kafka does.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::metadata::{TransactionState, NO_PRODUCER_EPOCH, NO_PRODUCER_ID};

/// The TransactionLogKey version (the only one).
pub const TXN_LOG_KEY_VERSION: i16 = 0;
/// The TransactionLogValue version written (flexible, Kafka's choice under `transaction.version` >= 1).
pub const TXN_LOG_VALUE_VERSION: i16 = 1;

const TAG_PREVIOUS_PRODUCER_ID: u32 = 0;
const TAG_NEXT_PRODUCER_ID: u32 = 1;
const TAG_CLIENT_TRANSACTION_VERSION: u32 = 2;

/// Why a record of `__transaction_state` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnRecordError {
    /// The bytes end before the schema does.
    #[error("transaction log record truncated while reading {0}")]
    Truncated(&'static str),
    /// A length, a string or a tagged field that the schema does not allow.
    #[error("malformed {0} in a transaction log record")]
    Malformed(&'static str),
    /// A value version other than 0 and 1.
    #[error("unknown transaction log value version {0}")]
    UnknownValueVersion(i16),
    /// A `TransactionStatus` that is no [`TransactionState`] id.
    #[error("unknown transaction status {0}")]
    UnknownState(i8),
}

/// A transactional id's metadata as TransactionLogValue stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnLogValue {
    /// `ProducerId`.
    pub producer_id: i64,
    /// `PreviousProducerId` (v1 tag 0; -1 when absent).
    pub prev_producer_id: i64,
    /// `NextProducerId` (v1 tag 1; -1 when absent).
    pub next_producer_id: i64,
    /// `ProducerEpoch`.
    pub producer_epoch: i16,
    /// Not in Kafka's schema and never encoded (decoding gives -1): the epoch before a KIP-360 bump, carried from
    /// the handler to `replay` so that the live coordinator answers a retried bump as Kafka's in-memory
    /// metadata does; like Kafka, a coordinator that loads the log has forgotten it.
    pub last_producer_epoch: i16,
    /// `TransactionTimeoutMs`.
    pub timeout_ms: i32,
    /// `TransactionStatus`.
    pub state: TransactionState,
    /// `TransactionPartitions` as (topic, partition) pairs; always empty in state Empty.
    pub partitions: BTreeSet<(String, i32)>,
    /// `TransactionLastUpdateTimestampMs`.
    pub last_update_ms: i64,
    /// `TransactionStartTimestampMs` (-1 when no transaction started).
    pub txn_start_ms: i64,
    /// `ClientTransactionVersion` (v1 tag 2; 0 when absent).
    pub client_transaction_version: i16,
}

/// One record of `__transaction_state`: a transactional id and its metadata, `None` for a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnLogRecord {
    /// The key's `TransactionalId`.
    pub transactional_id: String,
    /// The value; `None` is a tombstone (the id expired).
    pub value: Option<TxnLogValue>,
}

impl TxnLogRecord {
    /// Encodes the record as (key, value) bytes: key version 0, value version [`TXN_LOG_VALUE_VERSION`]; a
    /// tombstone's value is `None`.
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        key.put_i16(TXN_LOG_KEY_VERSION);
        put_string(&mut key, &self.transactional_id);
        let value = self.value.as_ref().map(|v| v.encode(TXN_LOG_VALUE_VERSION));
        (key.freeze(), value)
    }

    /// Decodes a record read from `__transaction_state`. `Ok(None)` for a key version that is not a transaction
    /// log key (Kafka skips those with a warning).
    pub fn decode(
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Option<TxnLogRecord>, TxnRecordError> {
        let mut k = Reader(key);
        if k.i16("key version")? != TXN_LOG_KEY_VERSION {
            return Ok(None);
        }
        let transactional_id = k.string("transactional id")?;
        let value = value.map(TxnLogValue::decode).transpose()?;
        Ok(Some(TxnLogRecord {
            transactional_id,
            value,
        }))
    }
}

impl TxnLogValue {
    /// Encodes the value, version prefix included, as `version` (0 or 1; anything above 0 is written as 1).
    /// Version 0 has no place for the previous and next producer ids and the client's transaction version.
    pub fn encode(&self, version: i16) -> Bytes {
        let flexible = version >= 1;
        let mut b = BytesMut::with_capacity(64);
        b.put_i16(if flexible { 1 } else { 0 });
        b.put_i64(self.producer_id);
        b.put_i16(self.producer_epoch);
        b.put_i32(self.timeout_ms);
        b.put_i8(self.state.id());
        if self.state == TransactionState::Empty {
            // Kafka writes no partitions in Empty.
            if flexible {
                put_uvarint(&mut b, 0);
            } else {
                b.put_i32(-1);
            }
        } else {
            let topics = group_by_topic(&self.partitions);
            if flexible {
                put_uvarint(&mut b, len_u32(topics.len()).saturating_add(1));
                for (topic, ids) in &topics {
                    put_compact_string(&mut b, topic);
                    put_uvarint(&mut b, len_u32(ids.len()).saturating_add(1));
                    ids.iter().for_each(|p| b.put_i32(*p));
                    put_uvarint(&mut b, 0); // the element's tagged fields
                }
            } else {
                b.put_i32(len_i32(topics.len()));
                for (topic, ids) in &topics {
                    put_string(&mut b, topic);
                    b.put_i32(len_i32(ids.len()));
                    ids.iter().for_each(|p| b.put_i32(*p));
                }
            }
        }
        b.put_i64(self.last_update_ms);
        b.put_i64(self.txn_start_ms);
        if flexible {
            let mut tags: Vec<(u32, Vec<u8>)> = Vec::new();
            if self.prev_producer_id != NO_PRODUCER_ID {
                tags.push((
                    TAG_PREVIOUS_PRODUCER_ID,
                    self.prev_producer_id.to_be_bytes().to_vec(),
                ));
            }
            if self.next_producer_id != NO_PRODUCER_ID {
                tags.push((
                    TAG_NEXT_PRODUCER_ID,
                    self.next_producer_id.to_be_bytes().to_vec(),
                ));
            }
            if self.client_transaction_version != 0 {
                tags.push((
                    TAG_CLIENT_TRANSACTION_VERSION,
                    self.client_transaction_version.to_be_bytes().to_vec(),
                ));
            }
            put_uvarint(&mut b, len_u32(tags.len()));
            for (tag, data) in tags {
                put_uvarint(&mut b, tag);
                put_uvarint(&mut b, len_u32(data.len()));
                b.put_slice(&data);
            }
        }
        b.freeze()
    }

    /// Decodes a value, version prefix included (versions 0 and 1).
    pub fn decode(value: &[u8]) -> Result<TxnLogValue, TxnRecordError> {
        let mut r = Reader(value);
        let version = r.i16("value version")?;
        if !(0..=1).contains(&version) {
            return Err(TxnRecordError::UnknownValueVersion(version));
        }
        let flexible = version >= 1;
        let producer_id = r.i64("producer id")?;
        let producer_epoch = r.i16("producer epoch")?;
        let timeout_ms = r.i32("transaction timeout")?;
        let status = r.i8("transaction status")?;
        let state =
            TransactionState::from_id(status).ok_or(TxnRecordError::UnknownState(status))?;
        let mut partitions = BTreeSet::new();
        let topic_count = if flexible {
            r.compact_len("partitions")?
        } else {
            r.array_len("partitions")?
        };
        for _ in 0..topic_count.unwrap_or(0) {
            let topic = if flexible {
                r.compact_string("topic")?
            } else {
                r.string("topic")?
            };
            let id_count = if flexible {
                r.compact_len("partition ids")?
            } else {
                r.array_len("partition ids")?
            }
            .ok_or(TxnRecordError::Malformed("partition ids"))?;
            for _ in 0..id_count {
                partitions.insert((topic.clone(), r.i32("partition id")?));
            }
            if flexible {
                r.skip_tagged_fields()?;
            }
        }
        if state == TransactionState::Empty {
            // Kafka ignores partitions in Empty.
            partitions.clear();
        }
        let last_update_ms = r.i64("last update timestamp")?;
        let txn_start_ms = r.i64("start timestamp")?;
        let mut v = TxnLogValue {
            producer_id,
            prev_producer_id: NO_PRODUCER_ID,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms,
            state,
            partitions,
            last_update_ms,
            txn_start_ms,
            client_transaction_version: 0,
        };
        if flexible {
            let count = r.uvarint("tagged field count")?;
            for _ in 0..count {
                let tag = r.uvarint("tag")?;
                let size = r.uvarint("tag size")?;
                let mut data = Reader(r.take(size as usize, "tagged field")?);
                match tag {
                    TAG_PREVIOUS_PRODUCER_ID => {
                        v.prev_producer_id = data.i64("previous producer id")?
                    }
                    TAG_NEXT_PRODUCER_ID => v.next_producer_id = data.i64("next producer id")?,
                    TAG_CLIENT_TRANSACTION_VERSION => {
                        v.client_transaction_version = data.i16("client transaction version")?
                    }
                    _ => {} // a newer Kafka's field: skipped, as Kafka's reader does
                }
            }
        }
        Ok(v)
    }
}

/// The partitions grouped by topic, in order.
fn group_by_topic(partitions: &BTreeSet<(String, i32)>) -> Vec<(&str, Vec<i32>)> {
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, p) in partitions {
        match topics.last_mut() {
            Some((t, ids)) if *t == topic.as_str() => ids.push(*p),
            _ => topics.push((topic.as_str(), vec![*p])),
        }
    }
    topics
}

fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_string(b: &mut BytesMut, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    b.put_i16(len as i16);
    b.put_slice(&s.as_bytes()[..len]);
}

fn put_compact_string(b: &mut BytesMut, s: &str) {
    put_uvarint(b, len_u32(s.len()).saturating_add(1));
    b.put_slice(s.as_bytes());
}

/// Kafka's unsigned varint: 7 bits a byte, least significant group first.
fn put_uvarint(b: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        b.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

/// A bounds-checked reader over one key or value.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TxnRecordError> {
        if self.0.len() < n {
            return Err(TxnRecordError::Truncated(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], TxnRecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn i8(&mut self, what: &'static str) -> Result<i8, TxnRecordError> {
        Ok(i8::from_be_bytes(self.array(what)?))
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, TxnRecordError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, TxnRecordError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, TxnRecordError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn uvarint(&mut self, what: &'static str) -> Result<u32, TxnRecordError> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let [byte] = self.array::<1>(what)?;
            v |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(TxnRecordError::Malformed(what))
    }

    fn utf8(&mut self, len: usize, what: &'static str) -> Result<String, TxnRecordError> {
        let b = self.take(len, what)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| TxnRecordError::Malformed(what))
    }

    /// A non-nullable string (i16 length).
    fn string(&mut self, what: &'static str) -> Result<String, TxnRecordError> {
        let len = self.i16(what)?;
        let len = usize::try_from(len).map_err(|_| TxnRecordError::Malformed(what))?;
        self.utf8(len, what)
    }

    /// A non-nullable compact string (unsigned varint length + 1).
    fn compact_string(&mut self, what: &'static str) -> Result<String, TxnRecordError> {
        let n = self.uvarint(what)?;
        let len = n.checked_sub(1).ok_or(TxnRecordError::Malformed(what))?;
        self.utf8(len as usize, what)
    }

    /// A nullable array's element count (i32, -1 for null), bounded by what the bytes left can hold (each element
    /// takes at least 4 bytes).
    fn array_len(&mut self, what: &'static str) -> Result<Option<usize>, TxnRecordError> {
        let n = self.i32(what)?;
        if n < 0 {
            return Ok(None);
        }
        self.bounded(n as usize, what).map(Some)
    }

    /// A nullable compact array's element count (unsigned varint count + 1, 0 for null), bounded likewise (each
    /// element takes at least 1 byte).
    fn compact_len(&mut self, what: &'static str) -> Result<Option<usize>, TxnRecordError> {
        match self.uvarint(what)? {
            0 => Ok(None),
            n => self.bounded((n - 1) as usize, what).map(Some),
        }
    }

    fn bounded(&self, n: usize, what: &'static str) -> Result<usize, TxnRecordError> {
        if n > self.0.len() {
            Err(TxnRecordError::Truncated(what))
        } else {
            Ok(n)
        }
    }

    fn skip_tagged_fields(&mut self) -> Result<(), TxnRecordError> {
        let count = self.uvarint("tagged field count")?;
        for _ in 0..count {
            self.uvarint("tag")?;
            let size = self.uvarint("tag size")?;
            self.take(size as usize, "tagged field")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ongoing_value() -> TxnLogValue {
        TxnLogValue {
            producer_id: 1000,
            prev_producer_id: 1000,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: 5,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms: 60_000,
            state: TransactionState::Ongoing,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            last_update_ms: 2_000,
            txn_start_ms: 1_500,
            client_transaction_version: 0,
        }
    }

    /// TransactionLogKey v0 and TransactionLogValue v1 written byte by byte from the schemas: the codec must
    /// produce exactly these bytes and read them back.
    #[test]
    fn encodes_kafkas_bytes_for_key_v0_and_value_v1() {
        let record = TxnLogRecord {
            transactional_id: "tx".into(),
            value: Some(TxnLogValue {
                client_transaction_version: 1,
                ..ongoing_value()
            }),
        };
        let (key, value) = record.encode();
        assert_eq!(&key[..], &[0, 0, 0, 2, b't', b'x']);

        let mut v = vec![0, 1]; // value version 1
        v.extend_from_slice(&1000i64.to_be_bytes()); // ProducerId
        v.extend_from_slice(&5i16.to_be_bytes()); // ProducerEpoch
        v.extend_from_slice(&60_000i32.to_be_bytes()); // TransactionTimeoutMs
        v.push(1); // TransactionStatus: Ongoing
        v.push(3); // TransactionPartitions: compact array of 2
        v.extend_from_slice(&[2, b'a']); // Topic "a" (compact string)
        v.push(3); // PartitionIds: compact array of 2
        v.extend_from_slice(&0i32.to_be_bytes());
        v.extend_from_slice(&2i32.to_be_bytes());
        v.push(0); // the element's tagged fields
        v.extend_from_slice(&[2, b'b']);
        v.push(2);
        v.extend_from_slice(&1i32.to_be_bytes());
        v.push(0);
        v.extend_from_slice(&2_000i64.to_be_bytes()); // TransactionLastUpdateTimestampMs
        v.extend_from_slice(&1_500i64.to_be_bytes()); // TransactionStartTimestampMs
        v.push(2); // two tagged fields: PreviousProducerId (tag 0) and ClientTransactionVersion (tag 2)
        v.extend_from_slice(&[0, 8]);
        v.extend_from_slice(&1000i64.to_be_bytes());
        v.extend_from_slice(&[2, 2, 0, 1]);
        assert_eq!(value.as_deref(), Some(&v[..]));

        assert_eq!(TxnLogRecord::decode(&key, Some(&v)), Ok(Some(record)));
    }

    /// TransactionLogValue v0 (what Kafka writes below transaction.version 1), built by hand.
    #[test]
    fn reads_value_v0() {
        let mut v = vec![0, 0];
        v.extend_from_slice(&7i64.to_be_bytes());
        v.extend_from_slice(&3i16.to_be_bytes());
        v.extend_from_slice(&10_000i32.to_be_bytes());
        v.push(2); // PrepareCommit
        v.extend_from_slice(&1i32.to_be_bytes()); // one topic
        v.extend_from_slice(&[0, 3, b'o', b'u', b't']);
        v.extend_from_slice(&2i32.to_be_bytes());
        v.extend_from_slice(&4i32.to_be_bytes());
        v.extend_from_slice(&9i32.to_be_bytes());
        v.extend_from_slice(&20i64.to_be_bytes());
        v.extend_from_slice(&10i64.to_be_bytes());
        let decoded = TxnLogValue::decode(&v).expect("v0");
        assert_eq!(
            decoded,
            TxnLogValue {
                producer_id: 7,
                prev_producer_id: -1,
                next_producer_id: -1,
                producer_epoch: 3,
                last_producer_epoch: -1,
                timeout_ms: 10_000,
                state: TransactionState::PrepareCommit,
                partitions: [("out".to_string(), 4), ("out".to_string(), 9)]
                    .into_iter()
                    .collect(),
                last_update_ms: 20,
                txn_start_ms: 10,
                client_transaction_version: 0,
            }
        );
        // And our v0 encoder writes the same bytes.
        assert_eq!(&decoded.encode(0)[..], &v[..]);
    }

    #[test]
    fn round_trips_every_state_in_both_versions() {
        for state in TransactionState::ALL {
            let mut value = TxnLogValue {
                state,
                prev_producer_id: 999,
                next_producer_id: 1001,
                client_transaction_version: 2,
                ..ongoing_value()
            };
            if state == TransactionState::Empty {
                value.partitions.clear();
            }
            let record = TxnLogRecord {
                transactional_id: "id-é".into(),
                value: Some(value.clone()),
            };
            let (key, bytes) = record.encode();
            assert_eq!(
                TxnLogRecord::decode(&key, bytes.as_deref()),
                Ok(Some(record.clone())),
                "{state}"
            );
            // Version 0 loses the tagged fields only.
            let v0 = TxnLogValue::decode(&value.encode(0)).expect("v0");
            assert_eq!(
                v0,
                TxnLogValue {
                    prev_producer_id: -1,
                    next_producer_id: -1,
                    client_transaction_version: 0,
                    ..value
                }
            );
        }
    }

    #[test]
    fn empty_writes_null_partitions_and_last_epoch_is_not_persisted() {
        let value = TxnLogValue {
            state: TransactionState::Empty,
            partitions: BTreeSet::new(),
            last_producer_epoch: 4,
            txn_start_ms: -1,
            ..ongoing_value()
        };
        let bytes = value.encode(1);
        // version(2) + pid(8) + epoch(2) + timeout(4) + status(1): the null compact array is a single 0.
        assert_eq!(bytes[17], 0);
        let decoded = TxnLogValue::decode(&bytes).expect("decode");
        assert_eq!(decoded.last_producer_epoch, -1);
        assert_eq!(
            decoded,
            TxnLogValue {
                last_producer_epoch: -1,
                ..value
            }
        );
    }

    #[test]
    fn tombstones_foreign_keys_and_bad_bytes() {
        let (key, _) = TxnLogRecord {
            transactional_id: "gone".into(),
            value: None,
        }
        .encode();
        assert_eq!(
            TxnLogRecord::decode(&key, None),
            Ok(Some(TxnLogRecord {
                transactional_id: "gone".into(),
                value: None
            }))
        );
        // Another key version is not a transaction log record.
        assert_eq!(TxnLogRecord::decode(&[0, 1, 0, 0], None), Ok(None));
        // Truncation anywhere is an error, never a panic.
        let full = ongoing_value().encode(1);
        for n in 0..full.len() {
            assert!(
                TxnLogValue::decode(&full[..n]).is_err(),
                "prefix of {n} bytes"
            );
        }
        assert!(TxnLogRecord::decode(&key[..3], None).is_err());
        assert!(TxnLogRecord::decode(&[], None).is_err());
        // Unknown version and status.
        let mut bad = full.to_vec();
        bad[1] = 2;
        assert_eq!(
            TxnLogValue::decode(&bad),
            Err(TxnRecordError::UnknownValueVersion(2))
        );
        let mut bad = full.to_vec();
        bad[16] = 9;
        assert_eq!(
            TxnLogValue::decode(&bad),
            Err(TxnRecordError::UnknownState(9))
        );
        // A huge array count over a few bytes is refused before any allocation.
        let mut huge = full[..17].to_vec();
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(TxnLogValue::decode(&huge).is_err());
    }

    #[test]
    fn unknown_tagged_fields_are_skipped() {
        let value = ongoing_value();
        // Without tagged fields, the value ends with a zero tagged-field count.
        let mut bytes = TxnLogValue {
            prev_producer_id: NO_PRODUCER_ID,
            ..value.clone()
        }
        .encode(1)
        .to_vec();
        assert_eq!(bytes.pop(), Some(0));
        // Two tagged fields: PreviousProducerId (tag 0) and a tag 7 of 3 bytes that this reader does not know.
        bytes.extend_from_slice(&[2, 0, 8]);
        bytes.extend_from_slice(&1000i64.to_be_bytes());
        bytes.extend_from_slice(&[7, 3, 1, 2, 3]);
        assert_eq!(TxnLogValue::decode(&bytes), Ok(value));
    }
}
