//! Idempotent and transactional producer state of one partition (KIP-98, Kafka's `ProducerStateManager` and
//! `ProducerAppendInfo`): per producer id the epoch, its last appended batches (sequences and offsets), the
//! coordinator epoch of its last transaction marker and the first offset of its ongoing transaction. It refuses
//! stale epochs and out-of-order sequences, answers a retried batch with its original offsets, and knows which
//! transactions are open (the last stable offset). Rebuilt on open from the latest `.snapshot` file and the
//! batches after it, so a retry or an open transaction spanning a restart is still known.
//!
//! Snapshot file `<20-digit offset>.snapshot`: the state of every batch below that offset. Format (big endian):
//! version `i16` (2), CRC32C `u32` of everything after it, producer count `i32`, then per producer: producer id
//! `i64`, epoch `i16`, last timestamp `i64`, coordinator epoch `i32`, first offset of the ongoing transaction
//! `i64` (-1: none), batch count `i32`, and per batch first sequence `i32`, last sequence `i32`, base offset
//! `i64`, last offset `i64`, max timestamp `i64`. Version 1 (written before transactions) lacks the coordinator
//! epoch and the transaction offset and is still read.

use std::collections::{BTreeMap, HashMap, VecDeque};

use sluice_protocol::batch::BatchHeader;

use crate::records::{ControlType, EndTxnMarker};

/// Suffix of a producer-state snapshot file.
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// Batches remembered per producer for duplicate detection (Kafka's `NUM_BATCHES_TO_RETAIN`, the client's
/// maximum of 5 in-flight requests with idempotence).
pub const BATCHES_KEPT: usize = 5;
/// A producer whose last batch is older than this is forgotten (`producer.id.expiration.ms` default, 1 day).
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;

const SNAPSHOT_VERSION: i16 = 2;
const SNAPSHOT_VERSION_1: i16 = 1;
const HEADER_BYTES: usize = 2 + 4 + 4;
const PRODUCER_BYTES_V1: usize = 8 + 2 + 8 + 4;
const PRODUCER_BYTES: usize = PRODUCER_BYTES_V1 + 4 + 8;
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

/// What a partition remembers about one producer (Kafka's `ProducerStateEntry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    /// The producer's current epoch.
    pub epoch: i16,
    /// Its last batches with sequences in this epoch, oldest first (at most [`BATCHES_KEPT`]).
    pub batches: VecDeque<ProducerBatch>,
    /// Max timestamp of its last batch, or the timestamp of its last transaction marker (drives expiration, as
    /// Kafka's `lastTimestamp`).
    pub last_timestamp_ms: i64,
    /// Epoch of the transaction coordinator that wrote its last marker; -1 before any.
    pub coordinator_epoch: i32,
    /// Offset of the first record of its ongoing transaction (Kafka's `currentTxnFirstOffset`); `None` when no
    /// transaction is open on this partition.
    pub current_txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    /// A producer seen for the first time, at `epoch`.
    fn new(epoch: i16, last_timestamp_ms: i64) -> Self {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_KEPT),
            last_timestamp_ms,
            coordinator_epoch: -1,
            current_txn_first_offset: None,
        }
    }

    /// Sequence of its last batch; -1 when none is remembered (Kafka's `lastSeq`).
    pub fn last_sequence(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_sequence)
    }

    /// Kafka's `maybeUpdateProducerEpoch`: a new epoch forgets the batches of the old one.
    fn set_epoch(&mut self, epoch: i16) {
        if self.epoch != epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
    }

    fn push_batch(&mut self, batch: ProducerBatch) {
        if self.batches.len() == BATCHES_KEPT {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
    }

    /// Applies one batch with this producer's id, at `base_offset` (Kafka's `ProducerAppendInfo.append`): a data
    /// batch updates the epoch, remembers its sequences (when it has them) and, when transactional, opens a
    /// transaction if none is open; a transaction marker ends the open transaction. Control batches without a
    /// readable marker change nothing (`marker` is `None`).
    pub(crate) fn apply(
        &mut self,
        header: &BatchHeader<'_>,
        base_offset: i64,
        marker: Option<EndTxnMarker>,
    ) -> TxnChange {
        let epoch = header.producer_epoch();
        if header.is_control() {
            let Some(marker) = marker else {
                return TxnChange::None;
            };
            let ended = self.current_txn_first_offset.take();
            self.set_epoch(epoch);
            self.coordinator_epoch = marker.coordinator_epoch;
            self.last_timestamp_ms = header.max_timestamp();
            return match ended {
                Some(first) => TxnChange::Ended(first),
                None => TxnChange::None,
            };
        }
        self.set_epoch(epoch);
        let last_offset = base_offset + i64::from(header.last_offset_delta().max(0));
        if let Some((_, _, first, last)) = idempotence_of(header) {
            self.push_batch(ProducerBatch {
                first_sequence: first,
                last_sequence: last,
                base_offset,
                last_offset,
                max_timestamp_ms: header.max_timestamp(),
            });
        }
        self.last_timestamp_ms = header.max_timestamp();
        if header.is_transactional() && self.current_txn_first_offset.is_none() {
            self.current_txn_first_offset = Some(base_offset);
            return TxnChange::Started(base_offset);
        }
        TxnChange::None
    }
}

/// What one batch did to its producer's transaction ([`ProducerEntry::apply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TxnChange {
    /// Nothing.
    None,
    /// It opened a transaction at this offset.
    Started(i64),
    /// It ended the transaction that opened at this offset.
    Ended(i64),
}

/// A transaction that a COMMIT or ABORT marker ended (Kafka's `CompletedTxn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletedTxn {
    /// The producer.
    pub producer_id: i64,
    /// Offset of the transaction's first record.
    pub first_offset: i64,
    /// Offset of its marker.
    pub last_offset: i64,
    /// True for an ABORT marker.
    pub aborted: bool,
}

/// A transaction open on the partition (for DescribeProducers and `kafka-transactions.sh find-hanging`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OngoingTxn {
    /// The producer.
    pub producer_id: i64,
    /// Its current epoch.
    pub producer_epoch: i16,
    /// Offset of the transaction's first record.
    pub first_offset: i64,
    /// Timestamp of the producer's last batch.
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
    /// The batch's (or transaction marker's) epoch is older than the producer's current one
    /// (`INVALID_PRODUCER_EPOCH`).
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
/// `None` for a batch without a producer id or with a negative base sequence (not idempotent: a plain batch, or
/// a transactional batch the group coordinator writes without sequences).
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

/// Whether a batch with a producer id changes the producer state: an idempotent or transactional data batch, or
/// a control batch (a transaction marker). Plain batches that carry a producer id without a sequence are not
/// tracked.
pub fn tracks_producer(header: &BatchHeader<'_>) -> bool {
    header.producer_id() >= 0
        && (header.is_control() || header.is_transactional() || idempotence_of(header).is_some())
}

/// Kafka's `checkProducerEpoch`: a batch or marker whose epoch is older than the producer's current one is
/// refused.
pub fn check_epoch(
    entry: Option<&ProducerEntry>,
    producer_id: i64,
    epoch: i16,
) -> Result<(), ProducerError> {
    match entry {
        Some(e) if epoch < e.epoch => Err(ProducerError::InvalidProducerEpoch {
            producer_id,
            epoch,
            current: e.epoch,
        }),
        _ => Ok(()),
    }
}

/// Checks an idempotent batch against its producer's entry as Kafka's `ProducerAppendInfo`: an older epoch is
/// refused; a retry of one of the producer's last batches (same epoch, same sequences) returns that batch
/// (`Ok(Some)`: do not append); a sequence that does not follow the last one is refused. A producer this
/// partition does not know (new or expired) may start at any sequence, as in Kafka; a new epoch must start at 0.
pub fn check_sequence(
    entry: Option<&ProducerEntry>,
    producer_id: i64,
    epoch: i16,
    first_sequence: i32,
    last_sequence: i32,
) -> Result<Option<ProducerBatch>, ProducerError> {
    let Some(entry) = entry else {
        return Ok(None);
    };
    check_epoch(Some(entry), producer_id, epoch)?;
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
        // Known epoch but no batch with sequences (a snapshot, or only transaction markers or coordinator
        // writes so far): accept any.
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

/// The producer state of one partition: every producer seen in batches below [`ProducerState::map_end_offset`],
/// and the transactions open at that offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions, first offset -> producer id (Kafka's `ongoingTxns`; derived from the entries).
    ongoing: BTreeMap<i64, i64>,
    map_end_offset: i64,
}

impl ProducerState {
    /// Empty state covering nothing below `offset`.
    pub fn empty_at(offset: i64) -> Self {
        ProducerState {
            producers: HashMap::new(),
            ongoing: BTreeMap::new(),
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

    /// Every producer and its entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, e)| (*id, e))
    }

    /// Number of producers tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// First offset of the oldest open transaction (Kafka's `firstUndecidedOffset`).
    pub fn first_ongoing_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// The open transactions, by first offset.
    pub fn ongoing_transactions(&self) -> Vec<OngoingTxn> {
        self.ongoing
            .iter()
            .filter_map(|(first, pid)| {
                self.producers.get(pid).map(|e| OngoingTxn {
                    producer_id: *pid,
                    producer_epoch: e.epoch,
                    first_offset: *first,
                    last_timestamp_ms: e.last_timestamp_ms,
                })
            })
            .collect()
    }

    /// [`check_sequence`] against this state.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
    ) -> Result<Option<ProducerBatch>, ProducerError> {
        check_sequence(
            self.producers.get(&producer_id),
            producer_id,
            epoch,
            first_sequence,
            last_sequence,
        )
    }

    /// Records an appended idempotent, non-transactional batch of `producer_id` (a live append or a replayed
    /// one).
    pub fn update(&mut self, producer_id: i64, epoch: i16, batch: ProducerBatch) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch, batch.max_timestamp_ms));
        entry.set_epoch(epoch);
        entry.push_batch(batch);
        entry.last_timestamp_ms = batch.max_timestamp_ms;
        self.map_end_offset = self.map_end_offset.max(batch.last_offset + 1);
    }

    /// Applies one batch written to the log (a live append, a follower's, or a replay at open), offsets
    /// assigned; `marker` is the transaction marker of a control batch ([`crate::records::end_txn_marker`]).
    /// Returns the transaction a COMMIT or ABORT marker ended, if one was open; a marker for a producer without
    /// an open transaction only updates its epoch (Kafka writes it anyway and indexes nothing).
    pub fn apply(
        &mut self,
        header: &BatchHeader<'_>,
        marker: Option<EndTxnMarker>,
    ) -> Option<CompletedTxn> {
        self.map_end_offset = self.map_end_offset.max(header.next_offset());
        if !tracks_producer(header) || (header.is_control() && marker.is_none()) {
            return None;
        }
        let producer_id = header.producer_id();
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(header.producer_epoch(), header.max_timestamp()));
        match entry.apply(header, header.base_offset(), marker) {
            TxnChange::None => None,
            TxnChange::Started(first) => {
                self.ongoing.insert(first, producer_id);
                None
            }
            TxnChange::Ended(first) => {
                self.ongoing.remove(&first);
                Some(CompletedTxn {
                    producer_id,
                    first_offset: first,
                    last_offset: header.base_offset(),
                    aborted: marker.is_some_and(|m| m.control_type == ControlType::Abort),
                })
            }
        }
    }

    /// Applies one data batch read from the log (recovery replay); control batches need
    /// [`ProducerState::apply`] with their marker.
    pub fn replay(&mut self, header: &BatchHeader<'_>) {
        self.apply(header, None);
    }

    /// Marks batches up to `offset` (exclusive) as applied (batches without a producer id in between).
    pub fn advance_to(&mut self, offset: i64) {
        self.map_end_offset = self.map_end_offset.max(offset);
    }

    /// Forgets producers whose last batch is older than `expiration_ms` at `now_ms`, never one with an open
    /// transaction (Kafka's `isProducerExpired`); returns how many.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms
        });
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
            body.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            body.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
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

    /// Decodes a snapshot taken at `offset` (version 2, or version 1 without transactions); `None` when it is
    /// truncated, corrupt or of another version.
    pub fn decode(bytes: &[u8], offset: i64) -> Option<ProducerState> {
        if bytes.len() < HEADER_BYTES {
            return None;
        }
        let mut r = Reader(bytes);
        let version = r.i16()?;
        let producer_bytes = match version {
            SNAPSHOT_VERSION => PRODUCER_BYTES,
            SNAPSHOT_VERSION_1 => PRODUCER_BYTES_V1,
            _ => return None,
        };
        let crc = r.u32()?;
        if crc32c::crc32c(r.0) != crc {
            return None;
        }
        let count = usize::try_from(r.i32()?).ok()?;
        if count > r.0.len() / producer_bytes {
            return None;
        }
        let mut state = ProducerState::empty_at(offset);
        state.producers.reserve(count);
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_timestamp_ms = r.i64()?;
            let (coordinator_epoch, txn_first_offset) = if version == SNAPSHOT_VERSION {
                (r.i32()?, r.i64()?)
            } else {
                (-1, -1)
            };
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
            let current_txn_first_offset = match txn_first_offset {
                -1 => None,
                o if o >= 0 && o < offset => Some(o),
                // A transaction opening at or after the snapshot's own offset cannot be in it.
                _ => return None,
            };
            if let Some(first) = current_txn_first_offset {
                if state.ongoing.insert(first, id).is_some() {
                    return None;
                }
            }
            let entry = ProducerEntry {
                epoch,
                batches,
                last_timestamp_ms,
                coordinator_epoch,
                current_txn_first_offset,
            };
            if state.producers.insert(id, entry).is_some() {
                return None;
            }
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(state)
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

    /// A transactional batch of `records` records of `producer_id` at `base_offset`; `sequence` -1 for none.
    fn txn_batch(
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        base_offset: i64,
        records: usize,
    ) -> Vec<u8> {
        let values: Vec<Vec<u8>> = (0..records).map(|i| vec![i as u8]).collect();
        let kvs: Vec<_> = values.iter().map(|v| (None, Some(&v[..]))).collect();
        let mut b = sluice_protocol::batch::build_batch(2_000, &kvs, producer_id, epoch, sequence);
        let attributes = sluice_protocol::batch::TRANSACTIONAL_FLAG_MASK;
        b[sluice_protocol::batch::ATTRIBUTES_OFFSET..sluice_protocol::batch::ATTRIBUTES_OFFSET + 2]
            .copy_from_slice(&attributes.to_be_bytes());
        sluice_protocol::batch::set_base_offset(&mut b, base_offset);
        b
    }

    fn marker(producer_id: i64, epoch: i16, commit: bool, offset: i64) -> Vec<u8> {
        let mut b = crate::records::control_batch(producer_id, epoch, commit, 3, 5_000).to_vec();
        sluice_protocol::batch::set_base_offset(&mut b, offset);
        b
    }

    fn apply(s: &mut ProducerState, bytes: &[u8]) -> Option<CompletedTxn> {
        let h = BatchHeader::new(bytes).unwrap();
        s.apply(&h, crate::records::end_txn_marker(bytes))
    }

    #[test]
    fn transactions_open_at_their_first_batch_and_end_at_their_marker() {
        // KIP-98: a transactional batch opens the producer's transaction if none is open; a marker ends it.
        let mut s = ProducerState::default();
        assert_eq!(apply(&mut s, &txn_batch(1, 0, 0, 0, 2)), None);
        assert_eq!(
            apply(&mut s, &txn_batch(2, 4, -1, 2, 1)),
            None,
            "no sequence (coordinator)"
        );
        assert_eq!(
            apply(&mut s, &txn_batch(1, 0, 2, 3, 1)),
            None,
            "same transaction"
        );
        assert_eq!(s.get(1).unwrap().current_txn_first_offset, Some(0));
        assert_eq!(s.get(2).unwrap().current_txn_first_offset, Some(2));
        assert!(
            s.get(2).unwrap().batches.is_empty(),
            "no sequences to remember"
        );
        assert_eq!(s.first_ongoing_offset(), Some(0));
        assert_eq!(
            s.ongoing_transactions(),
            vec![
                OngoingTxn {
                    producer_id: 1,
                    producer_epoch: 0,
                    first_offset: 0,
                    last_timestamp_ms: 2_000
                },
                OngoingTxn {
                    producer_id: 2,
                    producer_epoch: 4,
                    first_offset: 2,
                    last_timestamp_ms: 2_000
                },
            ]
        );
        assert_eq!(
            apply(&mut s, &marker(1, 0, false, 4)),
            Some(CompletedTxn {
                producer_id: 1,
                first_offset: 0,
                last_offset: 4,
                aborted: true
            })
        );
        let e = s.get(1).unwrap();
        assert_eq!(
            (
                e.current_txn_first_offset,
                e.coordinator_epoch,
                e.last_timestamp_ms
            ),
            (None, 3, 5_000)
        );
        assert_eq!(
            e.last_sequence(),
            2,
            "a marker keeps the sequences of its epoch"
        );
        assert_eq!(s.first_ongoing_offset(), Some(2));
        // A marker with a newer epoch bumps it and forgets the old epoch's batches.
        assert_eq!(
            apply(&mut s, &marker(2, 5, true, 5)),
            Some(CompletedTxn {
                producer_id: 2,
                first_offset: 2,
                last_offset: 5,
                aborted: false
            })
        );
        assert_eq!(s.get(2).unwrap().epoch, 5);
        assert_eq!(s.first_ongoing_offset(), None);
        // A marker for a producer with no open transaction completes nothing (Kafka indexes nothing for it).
        assert_eq!(apply(&mut s, &marker(9, 0, false, 6)), None);
        assert_eq!(s.get(9).unwrap().coordinator_epoch, 3);
        assert_eq!(s.map_end_offset(), 7);
        // The next transactional batch opens a new transaction.
        apply(&mut s, &txn_batch(1, 0, 3, 7, 1));
        assert_eq!(s.first_ongoing_offset(), Some(7));
        // Plain batches without a producer id, or with one but no sequence, are not tracked.
        apply(
            &mut s,
            &sluice_protocol::batch::build_batch(1, &[(None, Some(b"x"))], 44, 0, -1),
        );
        assert!(s.get(44).is_none());
    }

    #[test]
    fn producers_with_an_open_transaction_never_expire() {
        let mut s = ProducerState::default();
        apply(&mut s, &txn_batch(1, 0, 0, 0, 1));
        s.update(2, 0, batch(0, 0, 1));
        assert_eq!(s.remove_expired(i64::MAX / 2, 1), 1);
        assert!(s.get(1).is_some() && s.get(2).is_none());
        apply(&mut s, &marker(1, 0, true, 2));
        assert_eq!(s.remove_expired(i64::MAX / 2, 1), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn snapshots_keep_open_transactions_and_version_1_is_still_read() {
        let mut s = ProducerState::default();
        apply(&mut s, &txn_batch(1, 2, 0, 0, 3));
        apply(&mut s, &marker(3, 0, true, 3));
        apply(&mut s, &txn_batch(5, 0, -1, 4, 1));
        s.update(6, 1, batch(0, 1, 5));
        let bytes = s.encode();
        assert_eq!(&bytes[..2], &2i16.to_be_bytes());
        let back = ProducerState::decode(&bytes, s.map_end_offset()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.first_ongoing_offset(), Some(0));
        assert_eq!(back.ongoing_transactions().len(), 2);
        // An open transaction at or after the snapshot's own offset is impossible: corrupt.
        assert_eq!(ProducerState::decode(&bytes, 4), None);
        // Version 1: producer id, epoch, last timestamp, batches.
        let mut body = Vec::new();
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&7i64.to_be_bytes());
        body.extend_from_slice(&2i16.to_be_bytes());
        body.extend_from_slice(&1_234i64.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        for v in [0i32, 4] {
            body.extend_from_slice(&v.to_be_bytes());
        }
        for v in [10i64, 14, 1_234] {
            body.extend_from_slice(&v.to_be_bytes());
        }
        let mut v1 = 1i16.to_be_bytes().to_vec();
        v1.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        v1.extend_from_slice(&body);
        let old = ProducerState::decode(&v1, 15).unwrap();
        let e = old.get(7).unwrap();
        assert_eq!(
            (e.epoch, e.last_timestamp_ms, e.coordinator_epoch),
            (2, 1_234, -1)
        );
        assert_eq!(e.current_txn_first_offset, None);
        assert_eq!(
            e.batches
                .back()
                .map(|b| (b.first_sequence, b.last_sequence, b.last_offset)),
            Some((0, 4, 14))
        );
        let mut v3 = v1.clone();
        v3[1] = 3;
        assert_eq!(ProducerState::decode(&v3, 15), None, "unknown version");
    }
}
