//! Log compaction, as Kafka's `LogCleaner` / `Cleaner` does it: keep at least the last record of every key.
//!
//! A pass over one log ([`Log::clean`]):
//!
//! 1. **Plan** (under the state lock): the cleanable segments are the inactive ones wholly below the high
//!    watermark and older than `min.compaction.lag.ms`; the *dirty* part starts at the first dirty offset (where
//!    the last pass ended, kept per log directory in `cleaner-offset-checkpoint`).
//! 2. **Offset map**: the latest offset of every key in the dirty part, keyed by a 128-bit hash of the key
//!    (Kafka's `SkimpyOffsetMap` keys by MD5). At most `max_map_entries` keys (`log.cleaner.dedupe.buffer.size`
//!    / 24, as Kafka counts): when the map fills, the pass ends at the last segment mapped whole, and the next
//!    pass carries on from there. Keys mapped from the segment that did not fit only point at offsets beyond
//!    the pass, which stay in the log, so dropping older records for them is still right.
//! 3. **Rewrite** every cleanable segment from the start of the log to the end of the map, in groups whose
//!    sizes add up to at most `segment.bytes` (small segments merge). A record is kept when its key is not in
//!    the map or it is the mapped (latest) one; records without a key are dropped, as Kafka does. A batch
//!    whose records all stay is copied byte for byte; otherwise it is re-framed: same base offset, same last
//!    offset delta (so a producer's last sequence survives, as Kafka's `overrideLastOffset`), the kept
//!    records' bytes, the same compression codec, a new CRC. A batch that loses every record is dropped,
//!    unless it is the last batch of a producer the log still tracks: then it stays with no records, so the
//!    producer state can be rebuilt from the log.
//! 4. **Tombstones** (KIP-534): a batch with a tombstone (null value) that has no delete horizon yet gets one
//!    (`now + delete.retention.ms` in its base timestamp, attribute bit 6, record timestamp deltas rewritten
//!    so timestamps do not change); a later pass after the horizon drops its tombstones.
//! 5. **Swap**, crash-safe as Kafka's `replaceSegments`: the group is written to `<base>.log.cleaned` and
//!    fsynced, renamed to `<base>.log.swap`; then, under the state lock and only if no truncation, retention
//!    or move changed the group meanwhile, the old segments are renamed to `.deleted` and the swap file to
//!    `<base>.log`. At open, a `.cleaned` file is removed (the old segments are intact) and a `.swap` file
//!    completes its swap (old segments it covers removed, then renamed into place): either the old segments
//!    or the new one are read, never a mix, and no record that should survive is lost.
//!
//! 6. **Transactions**, as Kafka's cleaner (`CleanedTransactionMetadata`): nothing at or above the last stable
//!    offset is cleanable, so every transaction the pass sees is decided. The aborted transactions of each segment
//!    (from the transaction indexes, searching later segments too: a marker may follow its records' segment) tell
//!    which transactional batches were aborted: they never enter the offset map and the rewrite drops their
//!    records (the batch stays empty when it is its producer's last). A marker stays while a batch of its
//!    transaction was seen in the pass (an ABORT then keeps its transaction index entry in the cleaned segment);
//!    once none is left it is a marker of an empty transaction: it gets a delete horizon
//!    (`now + delete.retention.ms`, as a tombstone) and a pass after the horizon drops it (or empties it, when it
//!    is its producer's last batch). The cleaned segment's transaction index is written to
//!    `<base>.txnindex.cleaned`, renamed to `.txnindex.swap` just before the log's `.swap`, and into place with it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_protocol::batch::{self, BatchHeader, RECORD_BATCH_OVERHEAD};

use crate::index::{IndexBuilder, IndexedBatch};
use crate::io::{read_full_at, Io, IoFile};
use crate::producer_state::ProducerState;
use crate::records::{
    compress, control_type, decompress, parse_raw_records, write_record_with_timestamp_delta,
    ControlType,
};
use crate::segment::{parse_base_offset, scan_segment, segment_path, ScanParams};
use crate::segment::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX};
use crate::txn_index::{encode_aborted_txns, AbortedTxn};
use crate::StorageError;

use super::{Log, Segment};

/// Suffix of a segment the cleaner is writing (removed at open: the old segments are intact).
pub const CLEANED_SUFFIX: &str = ".log.cleaned";
/// Suffix of a cleaned segment ready to replace the segments it covers (the swap is completed at open).
pub const SWAP_SUFFIX: &str = ".log.swap";
/// Batch attribute bit: the base timestamp holds the delete horizon (KIP-534).
pub const DELETE_HORIZON_FLAG: i16 = 0x40;
/// Suffix of the transaction index of a segment the cleaner is writing.
pub const TXN_CLEANED_SUFFIX: &str = ".txnindex.cleaned";
/// Suffix of the transaction index of a cleaned segment ready to replace the segments it covers.
pub const TXN_SWAP_SUFFIX: &str = ".txnindex.swap";

/// Largest records section the cleaner decompresses; a bigger batch is kept as it is.
const MAX_DECOMPRESSED_BYTES: usize = 256 << 20;
/// Bytes read from a segment at a time.
const READ_CHUNK_BYTES: usize = 1 << 20;
/// Bytes of cleaned output buffered before a write.
const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// Batch header bytes covered by the batch length field (the length excludes base offset and length).
const LENGTH_EXCLUDED: usize = batch::LOG_OVERHEAD;

/// How dirty a compacted log is (Kafka's `LogToClean`), from [`Log::cleanable_state`].
#[derive(Clone, Debug, PartialEq)]
pub struct CleanableState {
    /// Where the dirty part starts: the end of the last pass, or the log start offset.
    pub first_dirty_offset: i64,
    /// The first offset the cleaner may not touch: the active segment, the last stable offset (at most the
    /// high watermark), or a segment younger than `min.compaction.lag.ms`.
    pub first_uncleanable_offset: i64,
    /// Bytes of cleanable segments below the first dirty offset.
    pub clean_bytes: u64,
    /// Bytes of cleanable segments from the first dirty offset on.
    pub dirty_bytes: u64,
    /// `dirty / (clean + dirty)`, 0 when there is nothing cleanable.
    pub dirty_ratio: f64,
    /// The oldest dirty cleanable segment is older than `max.compaction.lag.ms`.
    pub lag_exceeded: bool,
    /// A tombstone in the cleaned part has passed its delete horizon.
    pub tombstones_due: bool,
}

impl CleanableState {
    /// Whether a pass is due: dirty enough, a record waited `max.compaction.lag.ms`, or tombstones to drop.
    pub fn needs_cleaning(&self, min_cleanable_dirty_ratio: f64) -> bool {
        (self.dirty_bytes > 0
            && (self.dirty_ratio >= min_cleanable_dirty_ratio || self.lag_exceeded))
            || self.tombstones_due
    }
}

/// Settings of one pass ([`Log::clean`]).
#[derive(Clone, Copy, Debug)]
pub struct CleanOptions {
    /// The time of the pass (delete horizons, compaction lag).
    pub now_ms: i64,
    /// Most keys the offset map holds (`log.cleaner.dedupe.buffer.size` / 24 per thread, as Kafka).
    pub max_map_entries: usize,
    /// Read and write at most this many bytes per second (`log.cleaner.io.max.bytes.per.second`).
    pub io_max_bytes_per_second: f64,
}

impl Default for CleanOptions {
    fn default() -> Self {
        CleanOptions {
            now_ms: super::wall_clock_ms(),
            max_map_entries: (128 << 20) / 24,
            io_max_bytes_per_second: f64::INFINITY,
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CleanStats {
    /// The pass cleaned everything below this offset; the next starts its dirty part here.
    pub end_offset: i64,
    /// Segment bytes read (offset map and rewrite).
    pub bytes_read: u64,
    /// Bytes of the cleaned segments.
    pub bytes_written: u64,
    /// Records in the rewritten segments.
    pub records_read: u64,
    /// Records dropped.
    pub records_removed: u64,
    /// Keys in the offset map.
    pub map_entries: usize,
    /// Segments replaced, and segments that replaced them.
    pub segments_before: usize,
    /// Segments after the pass (of those rewritten).
    pub segments_after: usize,
    /// The pass stopped because the log changed under it (truncation, retention, a move, a close).
    pub aborted: bool,
}

/// A cleanable segment as planned under the lock.
struct Source {
    base: i64,
    size: u64,
    next_offset: i64,
    file: Arc<dyn IoFile>,
}

/// The transactions a pass walks through (Kafka's `CleanedTransactionMetadata`): which transactional batches
/// were aborted, and which markers may go.
#[derive(Default)]
struct TxnTracker {
    /// Aborted transactions not reached yet, by first offset.
    pending: BTreeMap<(i64, i64), AbortedTxn>,
    /// Every aborted transaction added, by (producer id, marker offset), so one found again is added once.
    known: HashSet<(i64, i64)>,
    /// Aborted transactions reached and not ended yet, per producer, and whether a batch of one was seen.
    aborted: HashMap<i64, (AbortedTxn, bool)>,
    /// Producers whose (committed) transaction had a batch seen since its start.
    committed: HashSet<i64>,
    /// Entries for the transaction index of the segment being written: ABORTs that stay.
    retained: Vec<AbortedTxn>,
}

impl TxnTracker {
    fn add_aborted(&mut self, txns: Vec<AbortedTxn>) {
        for t in txns {
            if self.known.insert((t.producer_id, t.last_offset)) {
                self.pending.insert((t.first_offset, t.last_offset), t);
            }
        }
    }

    fn reach(&mut self, offset: i64) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > offset {
                break;
            }
            let t = entry.remove();
            self.aborted.entry(t.producer_id).or_insert((t, false));
        }
    }

    /// A data batch: true when it belongs to an aborted transaction (its records may all go).
    fn on_data_batch(&mut self, header: &BatchHeader<'_>) -> bool {
        self.reach(header.last_offset());
        if !header.is_transactional() {
            return false;
        }
        match self.aborted.get_mut(&header.producer_id()) {
            Some((_, seen)) => {
                *seen = true;
                true
            }
            None => {
                self.committed.insert(header.producer_id());
                false
            }
        }
    }

    /// A control batch: true when it may go (a marker whose transaction has no batch left, or an emptied one).
    fn on_control_batch(&mut self, header: &BatchHeader<'_>) -> bool {
        self.reach(header.last_offset());
        if header.record_count() == 0 {
            return true;
        }
        let producer_id = header.producer_id();
        match control_type(header.bytes()) {
            Some(ControlType::Abort) => match self.aborted.remove(&producer_id) {
                Some((txn, true)) => {
                    self.retained.push(txn);
                    false
                }
                _ => true,
            },
            Some(ControlType::Commit) => !self.committed.remove(&producer_id),
            None => false,
        }
    }
}

/// Latest offset per key, by a 128-bit hash of the key.
struct OffsetMap {
    map: HashMap<u128, i64>,
    capacity: usize,
}

fn key_hash(key: &[u8]) -> u128 {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

impl OffsetMap {
    fn latest(&self, key: &[u8]) -> Option<i64> {
        self.map.get(&key_hash(key)).copied()
    }
}

/// Sleeps so that the bytes counted stay under a rate (Kafka's `Throttler`).
struct Throttler {
    rate: f64,
    start: Instant,
    bytes: u64,
}

impl Throttler {
    fn new(rate: f64) -> Self {
        Throttler {
            rate,
            start: Instant::now(),
            bytes: 0,
        }
    }
    fn account(&mut self, bytes: u64) {
        self.bytes += bytes;
        if !self.rate.is_finite() || self.rate <= 0.0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

/// Calls `f` with every whole batch of `file[..size]`, read in chunks, until `f` returns false. Returns the
/// bytes read and whether every batch up to `size` was passed to `f` (false also when bytes that are not a
/// whole batch stop the walk: the segment changed under the reader).
fn for_each_batch(
    file: &dyn IoFile,
    size: u64,
    throttler: &mut Throttler,
    mut f: impl FnMut(&[u8]) -> bool,
) -> std::io::Result<(u64, bool)> {
    let mut pos = 0u64;
    let mut buf: Vec<u8> = Vec::new();
    let mut read = 0u64;
    while pos < size {
        let want = (READ_CHUNK_BYTES as u64).min(size - pos) as usize;
        buf.clear();
        buf.resize(want, 0);
        let n = read_full_at(file, &mut buf, pos)?;
        buf.truncate(n);
        read += n as u64;
        throttler.account(n as u64);
        let mut at = 0usize;
        while at < buf.len() {
            if buf.len() - at < batch::LOG_OVERHEAD && at > 0 {
                // The chunk ends inside the next batch's length field: read on from there.
                break;
            }
            let Some(len) = batch::batch_size(&buf[at..]).filter(|l| *l >= RECORD_BATCH_OVERHEAD)
            else {
                return Ok((read, false));
            };
            if at + len > buf.len() {
                if at > 0 {
                    break;
                }
                // One batch larger than a chunk: read it whole.
                let mut whole = vec![0u8; len];
                let n = read_full_at(file, &mut whole, pos)?;
                read += n as u64;
                throttler.account(n as u64);
                if n < len || pos + len as u64 > size {
                    return Ok((read, false));
                }
                if !f(&whole) {
                    return Ok((read, false));
                }
                at = len;
                break;
            }
            if pos + (at + len) as u64 > size {
                return Ok((read, false));
            }
            if !f(&buf[at..at + len]) {
                return Ok((read, false));
            }
            at += len;
        }
        if at == 0 {
            return Ok((read, false));
        }
        pos += at as u64;
    }
    Ok((read, true))
}

/// The records section of a batch, decompressed; `None` when it cannot be read (the batch is then kept whole).
fn records_of<'a>(header: &BatchHeader<'a>) -> Option<Cow<'a, [u8]>> {
    let body = header.bytes().get(RECORD_BATCH_OVERHEAD..header.size())?;
    match header.compression() {
        0 => Some(Cow::Borrowed(body)),
        codec => decompress(codec, body, MAX_DECOMPRESSED_BYTES)
            .ok()
            .map(Cow::Owned),
    }
}

/// What the rewrite decides for one batch.
enum Verdict<'a> {
    /// Copy the batch as it is.
    Keep,
    /// Drop the batch.
    Drop,
    /// Write these bytes instead.
    Rewrite(Cow<'a, [u8]>),
}

/// Per-pass inputs of [`filter_batch`].
struct Filter<'a> {
    map: &'a OffsetMap,
    producers: &'a ProducerState,
    now_ms: i64,
    delete_retention_ms: i64,
}

/// Counters [`filter_batch`] updates.
#[derive(Default)]
struct FilterCounts {
    records_read: u64,
    records_removed: u64,
    /// Earliest delete horizon of a kept batch that still holds tombstones.
    next_horizon_ms: Option<i64>,
}

/// A batch's header with no record: what stays of a producer's last batch whose records all go.
fn emptied(batch_bytes: &[u8]) -> Vec<u8> {
    let mut out = batch_bytes[..RECORD_BATCH_OVERHEAD].to_vec();
    let length = (RECORD_BATCH_OVERHEAD - LENGTH_EXCLUDED) as i32;
    out[batch::LENGTH_OFFSET..batch::LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    out[batch::RECORDS_COUNT_OFFSET..batch::RECORDS_COUNT_OFFSET + 4]
        .copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&out[batch::ATTRIBUTES_OFFSET..]);
    out[batch::CRC_OFFSET..batch::CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

fn filter_batch<'a>(
    batch_bytes: &'a [u8],
    filter: &Filter<'_>,
    counts: &mut FilterCounts,
    txns: &mut TxnTracker,
) -> Verdict<'a> {
    let Ok(header) = BatchHeader::new(batch_bytes) else {
        return Verdict::Keep;
    };
    // Kafka's `isBatchLastRecordOfProducer`: the batch holding a producer's last sequence, or, for a producer
    // without one, its markers of the current epoch, stay (possibly empty) so its state is rebuilt from the log.
    let producer_id = header.producer_id();
    let last_of_producer = producer_id >= 0
        && filter
            .producers
            .get(producer_id)
            .is_some_and(|e| match e.batches.back() {
                Some(b) => b.last_offset == header.last_offset(),
                None => header.is_control() && header.producer_epoch() == e.epoch,
            });
    let count = u64::try_from(header.record_count()).unwrap_or(0);
    let control_discardable = if header.is_control() {
        if !txns.on_control_batch(&header) {
            return Verdict::Keep;
        }
        // A marker of a transaction with no batch left: kept until its delete horizon, as a tombstone.
        if header.attributes() & DELETE_HORIZON_FLAG != 0 {
            if filter.now_ms < header.base_timestamp() {
                let horizon = header.base_timestamp();
                counts.next_horizon_ms =
                    Some(counts.next_horizon_ms.map_or(horizon, |h| h.min(horizon)));
                return Verdict::Keep;
            }
            counts.records_read += count;
            counts.records_removed += count;
            return if last_of_producer && count > 0 {
                Verdict::Rewrite(Cow::Owned(emptied(batch_bytes)))
            } else if last_of_producer {
                Verdict::Keep
            } else {
                Verdict::Drop
            };
        }
        if count == 0 {
            return if last_of_producer {
                Verdict::Keep
            } else {
                Verdict::Drop
            };
        }
        true
    } else {
        if txns.on_data_batch(&header) {
            // An aborted transaction's batch: its records go whatever their keys.
            counts.records_read += count;
            counts.records_removed += count;
            return if !last_of_producer {
                Verdict::Drop
            } else if count == 0 {
                Verdict::Keep
            } else {
                Verdict::Rewrite(Cow::Owned(emptied(batch_bytes)))
            };
        }
        false
    };
    let Some(raw) = records_of(&header) else {
        tracing::warn!(
            offset = header.base_offset(),
            "cleaner cannot read a batch's records; keeping it whole"
        );
        return Verdict::Keep;
    };
    let Ok(records) = parse_raw_records(&raw) else {
        tracing::warn!(
            offset = header.base_offset(),
            "cleaner found malformed records; keeping the batch whole"
        );
        return Verdict::Keep;
    };
    counts.records_read += records.len() as u64;
    let attributes = header.attributes();
    let has_horizon = attributes & DELETE_HORIZON_FLAG != 0;
    let horizon_passed = has_horizon && filter.now_ms >= header.base_timestamp();
    let base_offset = header.base_offset();
    let keep: Vec<bool> = if control_discardable {
        vec![true; records.len()]
    } else {
        records
            .iter()
            .map(|r| {
                let Some(key) = &r.key else {
                    return false;
                };
                let offset = base_offset + i64::from(r.offset_delta);
                let latest = filter.map.latest(&raw[key.clone()]);
                let newest = latest.is_none_or(|l| offset >= l);
                newest && !(r.value.is_none() && horizon_passed)
            })
            .collect()
    };
    let kept = keep.iter().filter(|k| **k).count();
    counts.records_removed += (records.len() - kept) as u64;
    let tombstones_kept = control_discardable
        || records
            .iter()
            .zip(&keep)
            .any(|(r, k)| *k && r.value.is_none());
    let set_horizon = tombstones_kept && !has_horizon;
    if tombstones_kept {
        let horizon = if set_horizon {
            filter.now_ms.saturating_add(filter.delete_retention_ms)
        } else {
            header.base_timestamp()
        };
        counts.next_horizon_ms = Some(counts.next_horizon_ms.map_or(horizon, |h| h.min(horizon)));
    }
    if kept == records.len() && !set_horizon {
        return Verdict::Keep;
    }
    if kept == 0 && !last_of_producer {
        return Verdict::Drop;
    }
    let old_base_ts = header.base_timestamp();
    let new_base_ts = if set_horizon {
        filter.now_ms.saturating_add(filter.delete_retention_ms)
    } else {
        old_base_ts
    };
    let mut section = Vec::with_capacity(raw.len());
    let mut max_ts = i64::MIN;
    for (r, _) in records.iter().zip(&keep).filter(|(_, k)| **k) {
        let ts = old_base_ts.saturating_add(r.timestamp_delta);
        max_ts = max_ts.max(ts);
        if set_horizon {
            write_record_with_timestamp_delta(
                &mut section,
                &raw,
                r,
                ts.saturating_sub(new_base_ts),
            );
        } else {
            section.extend_from_slice(&raw[r.range.clone()]);
        }
    }
    let codec = header.compression();
    let body = if codec == 0 || section.is_empty() {
        section
    } else {
        match compress(codec, &section) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, offset = base_offset, "cleaner cannot compress; keeping the batch whole");
                return Verdict::Keep;
            }
        }
    };
    let mut out = Vec::with_capacity(RECORD_BATCH_OVERHEAD + body.len());
    out.extend_from_slice(&batch_bytes[..RECORD_BATCH_OVERHEAD]);
    out.extend_from_slice(&body);
    let length = (out.len() - LENGTH_EXCLUDED) as i32;
    out[batch::LENGTH_OFFSET..batch::LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    let attributes = if set_horizon {
        attributes | DELETE_HORIZON_FLAG
    } else {
        attributes
    };
    out[batch::ATTRIBUTES_OFFSET..batch::ATTRIBUTES_OFFSET + 2]
        .copy_from_slice(&attributes.to_be_bytes());
    out[batch::BASE_TIMESTAMP_OFFSET..batch::BASE_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&new_base_ts.to_be_bytes());
    if !header.is_log_append_time() && kept > 0 {
        out[batch::MAX_TIMESTAMP_OFFSET..batch::MAX_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&max_ts.to_be_bytes());
    }
    out[batch::RECORDS_COUNT_OFFSET..batch::RECORDS_COUNT_OFFSET + 4]
        .copy_from_slice(&(kept as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[batch::ATTRIBUTES_OFFSET..]);
    out[batch::CRC_OFFSET..batch::CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Verdict::Rewrite(Cow::Owned(out))
}

impl Log {
    /// The cleaner's view of this log, `None` unless `cleanup.policy` holds `compact`.
    pub fn cleanable_state(&self, now_ms: i64) -> Option<CleanableState> {
        let config = self.config();
        if !config.compact {
            return None;
        }
        let st = self.state.lock();
        let first_dirty = self.first_dirty_offset_locked(st.log_start_offset, st.log_end_offset);
        let mut state = CleanableState {
            first_dirty_offset: first_dirty,
            first_uncleanable_offset: st.log_end_offset,
            clean_bytes: 0,
            dirty_bytes: 0,
            dirty_ratio: 0.0,
            lag_exceeded: false,
            tombstones_due: self.next_delete_horizon_ms.load(Ordering::Acquire) <= now_ms,
        };
        let last_stable_offset = Self::last_stable_offset_locked(&st);
        for seg in st.segments.values() {
            if !Self::cleanable(
                seg,
                last_stable_offset,
                now_ms,
                config.min_compaction_lag_ms,
            ) {
                state.first_uncleanable_offset = seg.base_offset;
                break;
            }
            if seg.next_offset <= first_dirty {
                state.clean_bytes += seg.size;
            } else {
                if state.dirty_bytes == 0 && seg.size > 0 {
                    let ts = seg.rolling_timestamp_ms.unwrap_or(seg.max_timestamp_ms);
                    state.lag_exceeded =
                        ts >= 0 && now_ms.saturating_sub(ts) > config.max_compaction_lag_ms;
                }
                state.dirty_bytes += seg.size;
            }
        }
        let total = state.clean_bytes + state.dirty_bytes;
        if total > 0 {
            state.dirty_ratio = state.dirty_bytes as f64 / total as f64;
        }
        Some(state)
    }

    /// An inactive segment wholly below the last stable offset (so below the high watermark, and every
    /// transaction in it decided) and older than the compaction lag.
    fn cleanable(seg: &Segment, last_stable_offset: i64, now_ms: i64, min_lag_ms: i64) -> bool {
        seg.active.is_none()
            && seg.next_offset <= last_stable_offset
            && (min_lag_ms <= 0 || seg.max_timestamp_ms <= now_ms.saturating_sub(min_lag_ms))
    }

    fn first_dirty_offset_locked(&self, log_start: i64, log_end: i64) -> i64 {
        let stored = self.first_dirty_offset.load(Ordering::Acquire);
        if stored < log_start || stored > log_end {
            log_start
        } else {
            stored
        }
    }

    /// The first dirty offset the cleaner checkpoint holds for this log (-1 when none).
    pub fn cleaner_checkpoint(&self) -> i64 {
        self.first_dirty_offset.load(Ordering::Acquire)
    }

    /// Sets the first dirty offset from the log directory's `cleaner-offset-checkpoint` (at open).
    pub fn set_cleaner_checkpoint(&self, offset: i64) {
        self.first_dirty_offset.store(offset, Ordering::Release);
    }

    /// When the last pass over this log ended (ms since the epoch), -1 before the first.
    pub fn last_clean_ms(&self) -> i64 {
        self.last_clean_ms.load(Ordering::Acquire)
    }

    /// One cleaning pass (see the module documentation). `Ok(None)` when the log is not compacted or nothing
    /// is cleanable; passes on one log are serialized. Reads and appends go on meanwhile; only the swap of
    /// each rewritten group takes the state lock.
    pub fn clean(&self, options: &CleanOptions) -> Result<Option<CleanStats>, StorageError> {
        let _pass = self.clean_lock.lock();
        let config = self.config();
        if !config.compact {
            return Ok(None);
        }
        let now_ms = options.now_ms;
        let (sources, first_dirty, producers, mut rewrites) = {
            let st = self.state.lock();
            self.check_usable(&st)?;
            let first_dirty =
                self.first_dirty_offset_locked(st.log_start_offset, st.log_end_offset);
            let mut sources = Vec::new();
            let last_stable_offset = Self::last_stable_offset_locked(&st);
            for seg in st.segments.values() {
                if !Self::cleanable(
                    seg,
                    last_stable_offset,
                    now_ms,
                    config.min_compaction_lag_ms,
                ) {
                    break;
                }
                if seg.size == 0 {
                    continue;
                }
                sources.push(Source {
                    base: seg.base_offset,
                    size: seg.size,
                    next_offset: seg.next_offset,
                    file: self.loaded(seg)?.log.clone(),
                });
            }
            (sources, first_dirty, st.producers.clone(), st.rewrites)
        };
        let Some(last) = sources.last() else {
            return Ok(None);
        };
        let tombstones_due = self.next_delete_horizon_ms.load(Ordering::Acquire) <= now_ms;
        if last.next_offset <= first_dirty && !tombstones_due {
            return Ok(None);
        }
        let mut throttler = Throttler::new(options.io_max_bytes_per_second);
        let mut stats = CleanStats::default();

        // The offset map over the dirty part, segment by segment.
        let mut map = OffsetMap {
            map: HashMap::new(),
            capacity: options.max_map_entries.max(1),
        };
        let mut end = first_dirty;
        let mut mapped_any = false;
        // Aborted transactions never enter the map (Kafka's `buildOffsetMap`).
        let mut map_txns = TxnTracker::default();
        if last.next_offset > first_dirty {
            map_txns.add_aborted(self.aborted_transactions(first_dirty, last.next_offset)?);
        }
        for source in sources.iter().filter(|s| s.next_offset > first_dirty) {
            let complete = self.map_segment(
                source,
                first_dirty,
                &mut map,
                !mapped_any,
                &mut map_txns,
                &mut throttler,
                &mut stats,
            )?;
            mapped_any = true;
            if !complete {
                break;
            }
            end = source.next_offset;
        }
        stats.map_entries = map.map.len();
        stats.end_offset = end;
        if mapped_any && end <= first_dirty {
            // The first dirty segment could not be walked to its end: its bytes are not whole batches.
            return Err(StorageError::Corrupt(format!(
                "{}: the log cleaner cannot read the dirty segment at offset {first_dirty}",
                self.dir().display()
            )));
        }

        // Groups of consecutive segments below `end`, each at most `segment.bytes` (and u32 relative offsets).
        let mut groups: Vec<Vec<&Source>> = Vec::new();
        for source in sources.iter().filter(|s| s.next_offset <= end) {
            let fits = groups.last().is_some_and(|g| {
                let size: u64 = g.iter().map(|s| s.size).sum();
                size + source.size <= config.segment_bytes
                    && source.next_offset - 1 - g[0].base <= i64::from(u32::MAX)
            });
            if fits {
                groups.last_mut().expect("checked").push(source);
            } else {
                groups.push(vec![source]);
            }
        }
        let filter = Filter {
            map: &map,
            producers: &producers,
            now_ms,
            delete_retention_ms: config.delete_retention_ms,
        };
        let mut counts = FilterCounts::default();
        // One tracker for the whole rewrite: a transaction may span groups.
        let mut txns = TxnTracker::default();
        for group in &groups {
            let done = self.clean_group(
                group,
                &filter,
                &mut counts,
                &mut txns,
                &mut rewrites,
                &mut throttler,
                &mut stats,
            )?;
            if !done {
                stats.aborted = true;
                break;
            }
        }
        stats.records_read = counts.records_read;
        stats.records_removed = counts.records_removed;
        if !stats.aborted {
            self.first_dirty_offset.store(end, Ordering::Release);
            self.next_delete_horizon_ms.store(
                counts.next_horizon_ms.unwrap_or(i64::MAX),
                Ordering::Release,
            );
            self.last_clean_ms.store(now_ms, Ordering::Release);
        }
        Ok(Some(stats))
    }

    /// Adds the keys of `source`'s batches at or after `from` to the map. Returns false when the map filled
    /// (never for the `first` segment of a pass, which is mapped whole whatever its size, so a pass always
    /// makes progress) or the segment could not be walked to its end.
    #[allow(clippy::too_many_arguments)]
    fn map_segment(
        &self,
        source: &Source,
        from: i64,
        map: &mut OffsetMap,
        first: bool,
        txns: &mut TxnTracker,
        throttler: &mut Throttler,
        stats: &mut CleanStats,
    ) -> Result<bool, StorageError> {
        let (read, complete) = for_each_batch(&*source.file, source.size, throttler, |bytes| {
            let Ok(header) = BatchHeader::new(bytes) else {
                return false;
            };
            if header.is_control() {
                txns.on_control_batch(&header);
                return true;
            }
            if txns.on_data_batch(&header) || header.last_offset() < from {
                return true;
            }
            let Some(raw) = records_of(&header) else {
                return true;
            };
            let Ok(records) = parse_raw_records(&raw) else {
                return true;
            };
            for r in &records {
                let Some(key) = &r.key else {
                    continue;
                };
                let offset = header.base_offset() + i64::from(r.offset_delta);
                if offset < from {
                    continue;
                }
                let hash = key_hash(&raw[key.clone()]);
                if !first && map.map.len() >= map.capacity && !map.map.contains_key(&hash) {
                    return false;
                }
                map.map.insert(hash, offset);
            }
            true
        })
        .map_err(|e| self.io_err(&segment_path(&self.dir(), source.base, LOG_SUFFIX), e))?;
        stats.bytes_read += read;
        Ok(complete)
    }

    /// Rewrites one group of segments into one and swaps it in. Returns false when the log changed under the
    /// pass (the group is left as it was): `rewrites` is the log's rewrite count the pass last saw, moved on by
    /// this swap's own.
    #[allow(clippy::too_many_arguments)]
    fn clean_group(
        &self,
        group: &[&Source],
        filter: &Filter<'_>,
        counts: &mut FilterCounts,
        txns: &mut TxnTracker,
        rewrites: &mut u64,
        throttler: &mut Throttler,
        stats: &mut CleanStats,
    ) -> Result<bool, StorageError> {
        let dir = self.dir();
        let base = group[0].base;
        let cleaned_path = segment_path(&dir, base, CLEANED_SUFFIX);
        let swap_path = segment_path(&dir, base, SWAP_SUFFIX);
        let txn_cleaned_path = segment_path(&dir, base, TXN_CLEANED_SUFFIX);
        let txn_swap_path = segment_path(&dir, base, TXN_SWAP_SUFFIX);
        let out = self
            .io
            .open(&cleaned_path, true)
            .map_err(|e| self.io_err(&cleaned_path, e))?;
        out.set_len(0).map_err(|e| self.io_err(&cleaned_path, e))?;
        let interval = self.config.read().index_interval_bytes;
        let mut index = IndexBuilder::new();
        let mut written = 0u64;
        let mut pending: Vec<u8> = Vec::with_capacity(WRITE_CHUNK_BYTES);
        let mut write_error: Option<std::io::Error> = None;
        let mut complete = true;
        let mut accounted_writes = 0u64;
        txns.retained.clear();
        for source in group {
            // Kafka collects each segment's aborted transactions over its whole range (the cleaned segment's
            // transaction index is rebuilt from them).
            txns.add_aborted(self.aborted_transactions(source.base, source.next_offset)?);
            let (read, whole) = for_each_batch(&*source.file, source.size, throttler, |bytes| {
                let Ok(header) = BatchHeader::new(bytes) else {
                    return false;
                };
                let (base_offset, last_offset) = (header.base_offset(), header.last_offset());
                let out_bytes: Cow<'_, [u8]> = match filter_batch(bytes, filter, counts, txns) {
                    Verdict::Keep => Cow::Borrowed(bytes),
                    Verdict::Drop => return true,
                    Verdict::Rewrite(b) => b,
                };
                let max_ts = BatchHeader::new(&out_bytes)
                    .map(|h| h.max_timestamp())
                    .unwrap_or(-1);
                index.on_batch(
                    base,
                    IndexedBatch {
                        base_offset,
                        last_offset,
                        max_timestamp_ms: max_ts,
                        position: written + pending.len() as u64,
                        size: out_bytes.len() as u64,
                    },
                    interval,
                );
                pending.extend_from_slice(&out_bytes);
                if pending.len() >= WRITE_CHUNK_BYTES {
                    if let Err(e) = out.write_all_at(&pending, written) {
                        write_error = Some(e);
                        return false;
                    }
                    written += pending.len() as u64;
                    pending.clear();
                }
                true
            })
            .map_err(|e| self.io_err(&segment_path(&dir, source.base, LOG_SUFFIX), e))?;
            stats.bytes_read += read;
            // Writes count against the rate too, once per segment.
            throttler.account(written - accounted_writes);
            accounted_writes = written;
            if !whole {
                complete = false;
                break;
            }
        }
        if write_error.is_none() && !pending.is_empty() {
            match out.write_all_at(&pending, written) {
                Ok(()) => written += pending.len() as u64,
                Err(e) => write_error = Some(e),
            }
        }
        let finished = match write_error {
            Some(e) => Err(e),
            None => out.sync_data(),
        };
        drop(out);
        if let Err(e) = finished {
            let _ = self.io.remove_file(&cleaned_path);
            return Err(self.io_err(&cleaned_path, e));
        }
        let remove_cleaned = || {
            let _ = self.io.remove_file(&cleaned_path);
            let _ = self.io.remove_file(&txn_cleaned_path);
        };
        if !complete {
            tracing::warn!(dir = %dir.display(), segment = base, "cleaner could not read a segment to its end; leaving it as it is");
            remove_cleaned();
            return Ok(false);
        }
        // The transaction index of the cleaned segment: the ABORTs it keeps.
        let aborted = std::mem::take(&mut txns.retained);
        if written > 0 && !aborted.is_empty() {
            let wrote = self.io.open(&txn_cleaned_path, true).and_then(|f| {
                f.set_len(0)?;
                f.write_all_at(&encode_aborted_txns(&aborted), 0)?;
                f.sync_data()
            });
            if let Err(e) = wrote {
                remove_cleaned();
                return Err(self.io_err(&txn_cleaned_path, e));
            }
        }
        let has_txn_index = written > 0 && !aborted.is_empty();
        index.maybe_append_time(base);

        let mut st = self.state.lock();
        let unchanged = !st.closed
            && st.rewrites == *rewrites
            && group.iter().all(|s| {
                st.segments
                    .get(&s.base)
                    .is_some_and(|seg| seg.size == s.size && seg.active.is_none())
            });
        if !unchanged {
            drop(st);
            remove_cleaned();
            return Ok(false);
        }
        if written > 0 {
            // Durable as `.swap` before any old segment goes: from here a crash completes the swap at open. The
            // transaction index goes first: a `.txnindex.swap` without its `.log.swap` is removed at open.
            if has_txn_index {
                self.io
                    .rename(&txn_cleaned_path, &txn_swap_path)
                    .map_err(|e| self.io_err(&txn_swap_path, e))?;
            }
            self.io
                .rename(&cleaned_path, &swap_path)
                .and_then(|_| self.io.sync_dir(&dir))
                .map_err(|e| self.io_err(&swap_path, e))?;
        } else {
            remove_cleaned();
        }
        for source in group {
            self.delete_segment(&mut st, source.base)?;
        }
        if written > 0 {
            let log_path = segment_path(&dir, base, LOG_SUFFIX);
            self.io
                .rename(&swap_path, &log_path)
                .map_err(|e| self.io_err(&log_path, e))?;
            if has_txn_index {
                let txn_path = segment_path(&dir, base, TXN_INDEX_SUFFIX);
                self.io
                    .rename(&txn_swap_path, &txn_path)
                    .map_err(|e| self.io_err(&txn_path, e))?;
            }
            self.write_index_files(base, &index)?;
            self.cache.remove(&log_path);
            st.segments.insert(
                base,
                Segment {
                    base_offset: base,
                    size: written,
                    next_offset: group.last().expect("a group is never empty").next_offset,
                    max_timestamp_ms: index.max_timestamp_ms,
                    offset_of_max_timestamp: index.offset_of_max_timestamp,
                    rolling_timestamp_ms: None,
                    has_txn_index,
                    active: None,
                },
            );
            stats.segments_after += 1;
        }
        // Nothing survived (written == 0): the group's offsets become a gap readers skip.
        st.rewrites += 1;
        *rewrites = st.rewrites;
        drop(st);
        self.io.sync_dir(&dir).map_err(|e| self.io_err(&dir, e))?;
        stats.segments_before += group.len();
        stats.bytes_written += written;
        Ok(true)
    }
}

/// At open, before segments are listed: removes `.cleaned` files (an interrupted rewrite; the old segments
/// are intact) and completes every `.log.swap` (removes the segments whose base offsets it covers, then renames
/// it and its `.txnindex.swap` into place; its other indexes are rebuilt by the load). A `.txnindex.swap`
/// without its `.log.swap` is removed (the swap had not begun). Returns whether anything changed.
pub(super) fn recover_interrupted_cleaning(
    io: &dyn Io,
    dir: &Path,
    names: &[String],
    index_interval_bytes: u64,
) -> std::io::Result<bool> {
    let mut changed = false;
    for name in names {
        let stem = name
            .strip_suffix(CLEANED_SUFFIX)
            .or_else(|| name.strip_suffix(TXN_CLEANED_SUFFIX));
        if stem.and_then(parse_base_offset).is_some() {
            io.remove_file(&dir.join(name))?;
            changed = true;
        }
    }
    let swaps: HashSet<i64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(SWAP_SUFFIX).and_then(parse_base_offset))
        .collect();
    for name in names {
        if let Some(base) = name
            .strip_suffix(TXN_SWAP_SUFFIX)
            .and_then(parse_base_offset)
        {
            if !swaps.contains(&base) {
                io.remove_file(&dir.join(name))?;
                changed = true;
            }
        }
    }
    let bases: Vec<i64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(LOG_SUFFIX).and_then(parse_base_offset))
        .collect();
    for name in names {
        let Some(base) = name.strip_suffix(SWAP_SUFFIX).and_then(parse_base_offset) else {
            continue;
        };
        let swap_path = dir.join(name);
        let file = io.open(&swap_path, false)?;
        let len = file.len()?;
        let outcome = scan_segment(
            &*file,
            ScanParams {
                base_offset: base,
                file_len: len,
                min_offset: base,
                end_offset_exclusive: i64::MAX,
                index_interval_bytes,
                verify_crc: true,
            },
        )?;
        drop(file);
        let last = outcome.next_offset - 1;
        tracing::warn!(dir = %dir.display(), segment = base, last_offset = last, "completing an interrupted segment swap of the log cleaner");
        let remove = |old: i64, suffix: &str| match io.remove_file(&segment_path(dir, old, suffix))
        {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        // The segments it covers go; its own base's indexes too (stale: the load rebuilds them).
        for &old in bases
            .iter()
            .filter(|b| **b >= base && **b <= last.max(base))
        {
            for suffix in [
                LOG_SUFFIX,
                INDEX_SUFFIX,
                TIME_INDEX_SUFFIX,
                TXN_INDEX_SUFFIX,
            ] {
                remove(old, suffix)?;
            }
        }
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX] {
            remove(base, suffix)?;
        }
        let txn_swap = segment_path(dir, base, TXN_SWAP_SUFFIX);
        if io.exists(&txn_swap) {
            io.rename(&txn_swap, &segment_path(dir, base, TXN_INDEX_SUFFIX))?;
        }
        io.rename(&swap_path, &segment_path(dir, base, LOG_SUFFIX))?;
        changed = true;
    }
    if changed {
        io.sync_dir(dir)?;
    }
    Ok(changed)
}
