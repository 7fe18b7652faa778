//! Segment files: naming, the recovery scan (framing + CRC check, index rebuild) and a bounded cache of
//! opened inactive segments (file handle + indexes).
//!
//! A segment is `<20-digit base offset>.log` (batches exactly as appended), `.index`, `.timeindex` and, once a
//! transaction was aborted in it, `.txnindex`.
//! Invariant: a segment's `.log` holds whole batches with strictly increasing offsets, all `>=` its base
//! offset and below the next segment's base offset; the log's in-memory size for a segment never covers a
//! byte that is not part of a completely written batch.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use sluice_protocol::batch::{BatchHeader, RECORD_BATCH_OVERHEAD};

use crate::index::{IndexBuilder, IndexedBatch, OffsetEntry, TimeEntry};
use crate::io::{read_full_at, IoFile};
use crate::txn_index::AbortedTxn;

/// Suffix of segment data files.
pub const LOG_SUFFIX: &str = ".log";
/// Suffix of offset index files.
pub const INDEX_SUFFIX: &str = ".index";
/// Suffix of time index files.
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// Suffix of transaction index files (aborted transactions, `crate::txn_index`).
pub const TXN_INDEX_SUFFIX: &str = ".txnindex";
/// Suffix given to files waiting for deletion.
pub const DELETED_SUFFIX: &str = ".deleted";

/// `<dir>/<20-digit base offset><suffix>`.
pub fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}{suffix}"))
}

/// Parses a 20-digit base offset file stem.
pub fn parse_base_offset(stem: &str) -> Option<i64> {
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// What a scan of one segment found.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Bytes of whole, valid batches from the start of the file.
    pub valid_bytes: u64,
    /// Offset after the last valid batch (the segment base offset when none).
    pub next_offset: i64,
    /// Indexes rebuilt over the valid batches.
    pub index: IndexBuilder,
    /// Max timestamp of the first batch (the segment.ms rolling basis).
    pub first_batch_timestamp_ms: Option<i64>,
    /// `(partition leader epoch, base offset)` of each valid batch whose epoch differs from the previous.
    pub epochs: Vec<(i32, i64)>,
    /// Why the scan stopped before the end of the file (`None` when the whole file is valid).
    pub stop_reason: Option<String>,
    /// A valid batch is a control batch (a transaction marker may be there).
    pub has_control_batches: bool,
}

/// Parameters of [`scan_segment`].
#[derive(Debug, Clone, Copy)]
pub struct ScanParams {
    /// Segment base offset.
    pub base_offset: i64,
    /// Bytes of the file to scan.
    pub file_len: u64,
    /// Every batch must start at or after this offset (the previous segment's end).
    pub min_offset: i64,
    /// Stop before the first batch whose last offset reaches this (truncation); `i64::MAX` for none.
    pub end_offset_exclusive: i64,
    /// Index interval for the rebuilt offset index.
    pub index_interval_bytes: u64,
    /// Check each batch's CRC32C (recovery) or only its framing (trusted data).
    pub verify_crc: bool,
}

const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Walks the batches of a segment from position 0, checking framing, offsets and (optionally) CRCs, and
/// rebuilding the indexes; stops at the first torn or corrupt batch.
pub fn scan_segment(file: &dyn IoFile, p: ScanParams) -> io::Result<ScanOutcome> {
    scan_segment_from(file, p, None)
}

/// Where a scan resumes instead of position 0: a batch start known from a trusted index, and the
/// indexes for everything before it.
#[derive(Debug, Clone)]
pub struct ScanStart {
    /// File position of a batch start.
    pub position: u64,
    /// Indexes covering the data before `position`, set so that the batch at `position` re-adds its
    /// own index entry.
    pub index: IndexBuilder,
    /// Max timestamp of the segment's first batch.
    pub first_batch_timestamp_ms: Option<i64>,
}

/// [`scan_segment`] resuming at `start` (used after a clean shutdown, where only the tail after the last
/// index entry must be walked to find the log end).
pub fn scan_segment_from(
    file: &dyn IoFile,
    p: ScanParams,
    start: Option<ScanStart>,
) -> io::Result<ScanOutcome> {
    let mut out = ScanOutcome {
        next_offset: p.base_offset,
        index: IndexBuilder::new(),
        ..Default::default()
    };
    let mut pos: u64 = 0;
    if let Some(start) = start {
        pos = start.position.min(p.file_len);
        out.valid_bytes = pos;
        out.index = start.index;
        out.first_batch_timestamp_ms = start.first_batch_timestamp_ms;
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start: u64 = 0; // file position of buf[0]
    let mut expected = p.min_offset.max(p.base_offset);
    let mut last_epoch: Option<i32> = None;
    while pos < p.file_len {
        let remaining = p.file_len - pos;
        if remaining < RECORD_BATCH_OVERHEAD as u64 {
            out.stop_reason = Some(format!(
                "{remaining} trailing bytes at position {pos}, shorter than a batch header"
            ));
            break;
        }
        // Make sure the header is buffered.
        if pos < buf_start || pos + RECORD_BATCH_OVERHEAD as u64 > buf_start + buf.len() as u64 {
            let want = (SCAN_CHUNK_BYTES as u64).min(remaining) as usize;
            buf.resize(want, 0);
            let n = read_full_at(file, &mut buf, pos)?;
            buf.truncate(n);
            buf_start = pos;
            if n < RECORD_BATCH_OVERHEAD {
                out.stop_reason = Some(format!("short read at position {pos}"));
                break;
            }
        }
        let rel = (pos - buf_start) as usize;
        let header = match BatchHeader::new(&buf[rel..]) {
            Ok(h) => h,
            Err(e) => {
                out.stop_reason = Some(format!("bad batch header at position {pos}: {e}"));
                break;
            }
        };
        let size = header.size() as u64;
        if size > remaining {
            out.stop_reason = Some(format!(
                "torn batch at position {pos}: {size} bytes declared, {remaining} present"
            ));
            break;
        }
        let (base, last, max_ts, epoch, control) = (
            header.base_offset(),
            header.last_offset(),
            header.max_timestamp(),
            header.partition_leader_epoch(),
            header.is_control(),
        );
        if header.magic() != 2 {
            out.stop_reason = Some(format!(
                "batch at position {pos} has magic {}",
                header.magic()
            ));
            break;
        }
        if base < expected || last < base || last - p.base_offset > i64::from(u32::MAX) {
            out.stop_reason = Some(format!(
                "batch at position {pos} has offsets {base}..={last}, expected >= {expected}"
            ));
            break;
        }
        if last >= p.end_offset_exclusive {
            out.stop_reason = None;
            break;
        }
        if p.verify_crc {
            if rel as u64 + size > buf.len() as u64 {
                // Refill so that the whole batch is buffered.
                let want = (SCAN_CHUNK_BYTES as u64).max(size).min(remaining) as usize;
                buf.resize(want, 0);
                let n = read_full_at(file, &mut buf, pos)?;
                buf.truncate(n);
                buf_start = pos;
                if (n as u64) < size {
                    out.stop_reason = Some(format!("short read of batch at position {pos}"));
                    break;
                }
            }
            let rel = (pos - buf_start) as usize;
            let whole = &buf[rel..rel + size as usize];
            let check = BatchHeader::new(whole).and_then(|h| h.validate());
            if let Err(e) = check {
                out.stop_reason = Some(format!("corrupt batch at position {pos}: {e}"));
                break;
            }
        }
        if out.first_batch_timestamp_ms.is_none() {
            out.first_batch_timestamp_ms = Some(max_ts);
        }
        out.has_control_batches |= control;
        if epoch >= 0 && last_epoch != Some(epoch) {
            out.epochs.push((epoch, base));
            last_epoch = Some(epoch);
        }
        let indexed = IndexedBatch {
            base_offset: base,
            last_offset: last,
            max_timestamp_ms: max_ts,
            position: pos,
            size,
        };
        out.index
            .on_batch(p.base_offset, indexed, p.index_interval_bytes);
        pos += size;
        out.valid_bytes = pos;
        out.next_offset = last + 1;
        expected = last + 1;
    }
    Ok(out)
}

/// Reads the 61-byte batch header at `position`; `None` at or past end of data.
pub fn read_header_at(
    file: &dyn IoFile,
    position: u64,
) -> io::Result<Option<[u8; RECORD_BATCH_OVERHEAD]>> {
    let mut buf = [0u8; RECORD_BATCH_OVERHEAD];
    let n = read_full_at(file, &mut buf, position)?;
    Ok((n == RECORD_BATCH_OVERHEAD).then_some(buf))
}

/// An opened inactive segment: its data file and indexes, immutable while cached.
#[derive(Debug)]
pub struct LoadedSegment {
    /// The `.log` file.
    pub log: Arc<dyn IoFile>,
    /// Offset index entries.
    pub offsets: Vec<OffsetEntry>,
    /// Time index entries.
    pub times: Vec<TimeEntry>,
    /// Transaction index entries (aborted transactions whose marker is in this segment).
    pub aborted_txns: Vec<AbortedTxn>,
    /// The `.log` file opened read-only for `Log::read_slices` (`sendfile`), on first use.
    pub slice_file: OnceLock<Arc<std::fs::File>>,
}

#[derive(Debug, Default)]
struct CacheInner {
    map: HashMap<PathBuf, (Arc<LoadedSegment>, u64)>,
    lru: BTreeMap<u64, PathBuf>,
    tick: u64,
}

/// A least-recently-used cache of opened inactive segments, shared by every log of a `LogManager`, that
/// bounds open file handles and in-memory indexes. Evicted entries stay valid for readers holding them.
#[derive(Debug)]
pub struct SegmentCache {
    capacity: usize,
    inner: Mutex<CacheInner>,
}

impl SegmentCache {
    /// A cache holding at most `capacity` inactive segments (at least 1).
    pub fn new(capacity: usize) -> Self {
        SegmentCache {
            capacity: capacity.max(1),
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// The cached segment for `log_path`, marking it recently used.
    pub fn get(&self, log_path: &Path) -> Option<Arc<LoadedSegment>> {
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let (seg, old) = {
            let entry = inner.map.get_mut(log_path)?;
            let old = entry.1;
            entry.1 = tick;
            (entry.0.clone(), old)
        };
        inner.lru.remove(&old);
        inner.lru.insert(tick, log_path.to_path_buf());
        Some(seg)
    }

    /// Caches `segment`, evicting the least recently used entries beyond capacity.
    pub fn insert(&self, log_path: &Path, segment: Arc<LoadedSegment>) {
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((_, old)) = inner.map.insert(log_path.to_path_buf(), (segment, tick)) {
            inner.lru.remove(&old);
        }
        inner.lru.insert(tick, log_path.to_path_buf());
        while inner.map.len() > self.capacity {
            let Some((_, victim)) = inner.lru.pop_first() else {
                break;
            };
            inner.map.remove(&victim);
        }
    }

    /// Forgets `log_path` (deleted or truncated segment).
    pub fn remove(&self, log_path: &Path) {
        let mut inner = self.inner.lock();
        if let Some((_, tick)) = inner.map.remove(log_path) {
            inner.lru.remove(&tick);
        }
    }

    /// Number of cached segments.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = segment_path(Path::new("/x"), 42, LOG_SUFFIX);
        assert_eq!(p, Path::new("/x/00000000000000000042.log"));
        assert_eq!(parse_base_offset("00000000000000000042"), Some(42));
        assert_eq!(parse_base_offset("42"), None);
        assert_eq!(parse_base_offset("0000000000000000004x"), None);
    }

    #[test]
    fn cache_evicts_least_recently_used() {
        #[derive(Debug)]
        struct Nothing;
        impl IoFile for Nothing {
            fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<usize> {
                Ok(0)
            }
            fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
                Ok(())
            }
            fn sync_data(&self) -> io::Result<()> {
                Ok(())
            }
            fn set_len(&self, _: u64) -> io::Result<()> {
                Ok(())
            }
            fn len(&self) -> io::Result<u64> {
                Ok(0)
            }
        }
        let cache = SegmentCache::new(2);
        let seg = || {
            Arc::new(LoadedSegment {
                log: Arc::new(Nothing),
                offsets: vec![],
                times: vec![],
                aborted_txns: vec![],
                slice_file: OnceLock::new(),
            })
        };
        cache.insert(Path::new("a"), seg());
        cache.insert(Path::new("b"), seg());
        assert!(cache.get(Path::new("a")).is_some());
        cache.insert(Path::new("c"), seg());
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get(Path::new("b")).is_none(),
            "b was least recently used"
        );
        assert!(cache.get(Path::new("a")).is_some());
        cache.remove(Path::new("a"));
        assert_eq!(cache.len(), 1);
    }
}
