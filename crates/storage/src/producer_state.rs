//! Idempotent-producer state of one partition (KIP-98, Kafka's `ProducerStateManager`): per producer id the
//! epoch and its last appended batches (sequences and offsets), to refuse stale epochs and out-of-order
//! sequences and to answer a retried batch with its original offsets. Rebuilt on open from the latest
//! `.snapshot` file and the batch headers after it, so a retry spanning a restart is still caught.
//!
//! Snapshot file `<20-digit offset>.snapshot`: the state of every batch below that offset. Format (big
//! endian): version `i16` (1), CRC32C `u32` of everything after it, producer count `i32`, then per producer:
//! producer id `i64`, epoch `i16`, last timestamp `i64`, batch count `i32`, and per batch first sequence
//! `i32`, last sequence `i32`, base offset `i64`, last offset `i64`, max timestamp `i64`.

use std::collections::{HashMap, VecDeque};

use sluice_protocol::batch::BatchHeader;

/// Suffix of a producer-state snapshot file.
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// Batches remembered per producer for duplicate detection (Kafka's `NUM_BATCHES_TO_RETAIN`, the client's
/// maximum of 5 in-flight requests with idempotence).
pub const BATCHES_KEPT: usize = 5;
/// A producer whose last batch is older than this is forgotten (`producer.id.expiration.ms` default, 1 day).
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;

const SNAPSHOT_VERSION: i16 = 1;
const HEADER_BYTES: usize = 2 + 4 + 4;
const PRODUCER_BYTES: usize = 8 + 2 + 8 + 4;
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;

/// One appended batch of an idempotent producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Sequence of the batch's first record.
    pub first_sequence: i32,
    /// Sequence of the batch's last record.
    pub last_sequence: i32,
    /// Offset of the batch's first record.
    pub base_offset: i64,
    /// Offset of the batch's last record.
    pub last_offset: i64,
    /// The batch's max timestamp.
    pub max_timestamp_ms: i64,
}

/// What a partition remembers about one producer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    /// The producer's current epoch.
    pub epoch: i16,
    /// Its last batches in this epoch, oldest first (at most [`BATCHES_KEPT`]).
    pub batches: VecDeque<ProducerBatch>,
    /// Max timestamp of its last batch (drives expiration, as Kafka's `lastTimestamp`).
    pub last_timestamp_ms: i64,
}

/// Why an idempotent batch was refused; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// The batch's sequence does not follow the producer's last one (`OUT_OF_ORDER_SEQUENCE_NUMBER`).
    #[error("producer {producer_id} epoch {epoch}: expected sequence {expected}, got {got}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The sequence the batch should start at.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// The batch's epoch is older than the producer's current one (`INVALID_PRODUCER_EPOCH`).
    #[error("producer {producer_id} epoch {epoch} is older than {current}")]
    InvalidProducerEpoch {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The producer's current epoch.
        current: i16,
    },
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from `i32::MAX` to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// The idempotence fields of a batch with a producer id: (producer id, epoch, first sequence, last sequence).
/// `None` for a batch without a producer id or with a negative base sequence (not idempotent).
pub fn idempotence_of(header: &BatchHeader<'_>) -> Option<(i64, i16, i32, i32)> {
    let producer_id = header.producer_id();
    let first = header.base_sequence();
    let delta = header.last_offset_delta();
    if producer_id < 0 || first < 0 || delta < 0 {
        return None;
    }
    Some((
        producer_id,
        header.producer_epoch(),
        first,
        increment_sequence(first, delta),
    ))
}

/// The producer state of one partition: every producer seen in batches below [`ProducerState::map_end_offset`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    map_end_offset: i64,
}

impl ProducerState {
    /// Empty state covering nothing below `offset`.
    pub fn empty_at(offset: i64) -> Self {
        ProducerState {
            producers: HashMap::new(),
            map_end_offset: offset,
        }
    }

    /// Offset up to which (exclusive) batches have been applied.
    pub fn map_end_offset(&self) -> i64 {
        self.map_end_offset
    }

    /// The entry of `producer_id`, if known.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks an incoming batch as Kafka's `ProducerAppendInfo`: an older epoch is refused; a retry of one
    /// of the producer's last batches (same epoch, same sequences) returns that batch (`Ok(Some)`: do not
    /// append); a sequence that does not follow the last one is refused. A producer this partition does not
    /// know (new or expired) may start at any sequence, as in Kafka; a new epoch must start at 0.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
    ) -> Result<Option<ProducerBatch>, ProducerError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(None);
        };
        if epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: entry.epoch,
            });
        }
        if epoch == entry.epoch {
            if let Some(dup) = entry
                .batches
                .iter()
                .find(|b| b.first_sequence == first_sequence && b.last_sequence == last_sequence)
            {
                return Ok(Some(*dup));
            }
        }
        let expected = match entry.batches.back() {
            Some(last) if epoch == entry.epoch => increment_sequence(last.last_sequence, 1),
            Some(_) => 0,
            // Known epoch but no batch (cannot happen from appends; a snapshot may hold it): accept any.
            None => return Ok(None),
        };
        if first_sequence != expected {
            return Err(ProducerError::OutOfOrderSequence {
                producer_id,
                epoch,
                expected,
                got: first_sequence,
            });
        }
        Ok(None)
    }

    /// Records an appended batch of `producer_id` (a live append or a replayed one).
    pub fn update(&mut self, producer_id: i64, epoch: i16, batch: ProducerBatch) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::with_capacity(BATCHES_KEPT),
                last_timestamp_ms: batch.max_timestamp_ms,
            });
        if entry.epoch != epoch {
            entry.batches.clear();
            entry.epoch = epoch;
        }
        if entry.batches.len() == BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        entry.last_timestamp_ms = batch.max_timestamp_ms;
        self.map_end_offset = self.map_end_offset.max(batch.last_offset + 1);
    }

    /// Applies one batch read from the log (recovery replay): idempotent batches update their producer.
    pub fn replay(&mut self, header: &BatchHeader<'_>) {
        if let Some((pid, epoch, first, last)) = idempotence_of(header) {
            self.update(
                pid,
                epoch,
                ProducerBatch {
                    first_sequence: first,
                    last_sequence: last,
                    base_offset: header.base_offset(),
                    last_offset: header.last_offset(),
                    max_timestamp_ms: header.max_timestamp(),
                },
            );
        }
        self.map_end_offset = self.map_end_offset.max(header.next_offset());
    }

    /// Marks batches up to `offset` (exclusive) as applied (batches without a producer id in between).
    pub fn advance_to(&mut self, offset: i64) {
        self.map_end_offset = self.map_end_offset.max(offset);
    }

    /// Forgets producers whose last batch is older than `expiration_ms` at `now_ms`; returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms);
        before - self.producers.len()
    }

    /// Encodes the state as a snapshot (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        let mut body = Vec::new();
        body.extend_from_slice(&(ids.len() as i32).to_be_bytes());
        for id in ids {
            let e = &self.producers[id];
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.last_timestamp_ms.to_be_bytes());
            body.extend_from_slice(&(e.batches.len() as i32).to_be_bytes());
            for b in &e.batches {
                body.extend_from_slice(&b.first_sequence.to_be_bytes());
                body.extend_from_slice(&b.last_sequence.to_be_bytes());
                body.extend_from_slice(&b.base_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
                body.extend_from_slice(&b.max_timestamp_ms.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(6 + body.len());
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a snapshot taken at `offset`; `None` when it is truncated, corrupt or of another version.
    pub fn decode(bytes: &[u8], offset: i64) -> Option<ProducerState> {
        if bytes.len() < HEADER_BYTES {
            return None;
        }
        let mut r = Reader(bytes);
        if r.i16()? != SNAPSHOT_VERSION {
            return None;
        }
        let crc = r.u32()?;
        if crc32c::crc32c(r.0) != crc {
            return None;
        }
        let count = usize::try_from(r.i32()?).ok()?;
        if count > r.0.len() / PRODUCER_BYTES {
            return None;
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_timestamp_ms = r.i64()?;
            let n = usize::try_from(r.i32()?).ok()?;
            if n > BATCHES_KEPT || n > r.0.len() / BATCH_BYTES {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(ProducerBatch {
                    first_sequence: r.i32()?,
                    last_sequence: r.i32()?,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                    max_timestamp_ms: r.i64()?,
                });
            }
            producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp_ms,
                },
            );
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(ProducerState {
            producers,
            map_end_offset: offset,
        })
    }
}

/// A big-endian cursor that never panics.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

/// File name of the snapshot at `offset`.
pub fn snapshot_file_name(offset: i64) -> String {
    format!("{offset:020}{SNAPSHOT_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: i32, last: i32, base: i64) -> ProducerBatch {
        ProducerBatch {
            first_sequence: first,
            last_sequence: last,
            base_offset: base,
            last_offset: base + i64::from(last - first),
            max_timestamp_ms: 1_000 + base,
        }
    }

    #[test]
    fn sequences_epochs_and_duplicates() {
        let mut s = ProducerState::default();
        assert_eq!(
            s.check(7, 0, 5, 9),
            Ok(None),
            "unknown producer: any sequence"
        );
        s.update(7, 0, batch(5, 9, 0));
        assert_eq!(s.check(7, 0, 10, 12), Ok(None));
        s.update(7, 0, batch(10, 12, 5));
        assert_eq!(s.check(7, 0, 5, 9), Ok(Some(batch(5, 9, 0))), "retry");
        assert!(matches!(
            s.check(7, 0, 14, 15),
            Err(ProducerError::OutOfOrderSequence {
                expected: 13,
                got: 14,
                ..
            })
        ));
        assert!(matches!(
            s.check(7, 1, 3, 3),
            Err(ProducerError::OutOfOrderSequence { expected: 0, .. })
        ));
        s.update(7, 1, batch(0, 0, 8));
        assert!(matches!(
            s.check(7, 0, 13, 13),
            Err(ProducerError::InvalidProducerEpoch { current: 1, .. })
        ));
        assert_eq!(s.map_end_offset(), 9);
        for i in 1..10 {
            s.update(7, 1, batch(i, i, 8 + i64::from(i)));
        }
        assert_eq!(s.get(7).unwrap().batches.len(), BATCHES_KEPT);
        assert_eq!(increment_sequence(0, 4), 4);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let mut s = ProducerState::default();
        s.update(1, 0, batch(0, 4, 0));
        s.update(2, 3, batch(0, 0, 5));
        s.update(1, 0, batch(5, 5, 6));
        let bytes = s.encode();
        assert_eq!(
            ProducerState::decode(&bytes, s.map_end_offset()),
            Some(s.clone())
        );
        for cut in 0..bytes.len() {
            assert_eq!(ProducerState::decode(&bytes[..cut], 7), None);
        }
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(ProducerState::decode(&bad, 7), None);
    }

    #[test]
    fn expiration_uses_the_last_batch_timestamp() {
        let mut s = ProducerState::default();
        s.update(1, 0, batch(0, 0, 0));
        s.update(2, 0, batch(0, 0, 500));
        assert_eq!(s.remove_expired(1_000 + 500 + 100, 200), 1);
        assert!(s.get(1).is_none() && s.get(2).is_some());
    }
}
