//! Record-batch builders for tests: uncompressed magic-v2 batches encoded by
//! [`sluice_protocol::batch::build_batch`] (base offset 0, CreateTime, no headers, every record at the base
//! timestamp), so tests name the records and producer fields they care about instead of encoding batches by
//! hand. Compressed batches are what clients send; tests that need them encode them with `kafka-protocol`.

use bytes::Bytes;
use sluice_protocol::batch::{build_batch, RecordKeyValue};

use crate::clock::wall_clock_ms;

/// One record's key and value, owned; `None` is null.
type OwnedRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

/// One batch under construction: its records (key and value, either may be null), base timestamp and, for an
/// idempotent producer (KIP-98), producer id, epoch and base sequence.
///
/// ```
/// use sluice_protocol::batch::BatchHeader;
/// use sluice_testkit::BatchBuilder;
/// let bytes = BatchBuilder::new()
///     .timestamp_ms(1_700_000_000_000)
///     .key_value("k", "v")
///     .value("w")
///     .idempotent(77, 0, 4)
///     .build();
/// let header = BatchHeader::new(&bytes).unwrap();
/// assert_eq!(header.last_offset_delta(), 1);
/// assert_eq!(header.producer_id(), 77);
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    timestamp_ms: i64,
    records: Vec<OwnedRecord>,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::new()
    }
}

impl BatchBuilder {
    /// An empty batch at timestamp 0 from a non-idempotent producer (producer id, epoch and sequence -1).
    pub fn new() -> BatchBuilder {
        BatchBuilder {
            timestamp_ms: 0,
            records: Vec::new(),
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// Every record's timestamp (the batch's base and max timestamp).
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> BatchBuilder {
        self.timestamp_ms = timestamp_ms;
        self
    }

    /// Timestamps the records with the wall clock: a broker compares timestamps with its own clock (segment
    /// rolling by `segment.ms`, retention), so an old timestamp can roll a segment per batch.
    pub fn now(self) -> BatchBuilder {
        self.timestamp_ms(wall_clock_ms())
    }

    /// Appends a record; `None` is a null key or value.
    pub fn record(mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> BatchBuilder {
        self.records
            .push((key.map(<[u8]>::to_vec), value.map(<[u8]>::to_vec)));
        self
    }

    /// Appends a record with a null key.
    pub fn value(self, value: impl AsRef<[u8]>) -> BatchBuilder {
        self.record(None, Some(value.as_ref()))
    }

    /// Appends a record with a key.
    pub fn key_value(self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> BatchBuilder {
        self.record(Some(key.as_ref()), Some(value.as_ref()))
    }

    /// Appends one null-key record per value.
    pub fn values<I>(self, values: I) -> BatchBuilder
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        values.into_iter().fold(self, BatchBuilder::value)
    }

    /// Marks the batch as written by an idempotent producer: its id, epoch and the sequence of its first record.
    pub fn idempotent(
        mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> BatchBuilder {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no record was added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The encoded batch.
    pub fn build(&self) -> Vec<u8> {
        let records: Vec<RecordKeyValue<'_>> = self
            .records
            .iter()
            .map(|(k, v)| (k.as_deref(), v.as_deref()))
            .collect();
        build_batch(
            self.timestamp_ms,
            &records,
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
        )
    }

    /// The encoded batch as `Bytes` (what a ProduceRequest carries).
    pub fn build_bytes(&self) -> Bytes {
        Bytes::from(self.build())
    }
}

/// A batch of null-key records with these values, timestamped `timestamp_ms`.
pub fn values_batch<I>(timestamp_ms: i64, values: I) -> Vec<u8>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    BatchBuilder::new()
        .timestamp_ms(timestamp_ms)
        .values(values)
        .build()
}

/// A batch of `records` null-key records of `value_bytes` bytes each (`x`), timestamped `timestamp_ms`: for tests
/// about sizes (segment rolls, `max.message.bytes`, fetch limits).
pub fn sized_batch(records: usize, value_bytes: usize, timestamp_ms: i64) -> Vec<u8> {
    let value = vec![b'x'; value_bytes];
    values_batch(timestamp_ms, std::iter::repeat_n(value, records))
}

#[cfg(test)]
mod tests {
    use sluice_protocol::batch::{BatchHeader, Batches};

    use super::*;

    #[test]
    fn the_builder_encodes_what_build_batch_encodes() {
        let by_hand = build_batch(
            5,
            &[(Some(&b"k"[..]), Some(&b"v"[..])), (None, None)],
            9,
            2,
            3,
        );
        let built = BatchBuilder::new()
            .timestamp_ms(5)
            .key_value("k", "v")
            .record(None, None)
            .idempotent(9, 2, 3)
            .build();
        assert_eq!(built, by_hand);
    }

    #[test]
    fn helpers_build_valid_batches() {
        let batch = sized_batch(3, 100, 42);
        let header = BatchHeader::new(&batch).unwrap();
        header.validate().unwrap();
        assert_eq!(header.last_offset_delta(), 2);
        assert_eq!(header.base_timestamp(), 42);
        assert_eq!(header.producer_id(), -1);
        assert!(batch.len() > 300);
        let two = [values_batch(1, ["a", "b"]), values_batch(2, ["c"])].concat();
        assert_eq!(Batches::new(&two).filter(Result::is_ok).count(), 2);
        let now = BatchBuilder::new().now().value("x").build();
        assert!(BatchHeader::new(&now).unwrap().base_timestamp() > 1_600_000_000_000);
    }
}
