//! Opening a log: listing and loading its segments, the clean-shutdown fast path, recovery from the
//! recovery point (scan, truncation at the first torn or corrupt batch, transaction indexes rebuilt from the
//! replayed markers), and opening inactive segments on demand (rebuilding invalid indexes).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use sluice_protocol::batch::BatchHeader;

use crate::epoch::LeaderEpochCache;
use crate::index::{
    encode_offset_entries, encode_time_entries, parse_offset_index, parse_time_index, IndexBuilder,
};
use crate::io::{read_file, IoFile};
use crate::segment::{
    parse_base_offset, read_header_at, scan_segment, scan_segment_from, segment_path,
    LoadedSegment, ScanParams, ScanStart, DELETED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX,
    TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX,
};
use crate::txn_index::{parse_txn_index, AbortedTxn, TxnIndexContents, ABORTED_TXN_BYTES};
use crate::StorageError;

use super::{
    encode_offset_checkpoint, parse_offset_checkpoint, Log, Segment, CLEAN_SHUTDOWN_FILE,
    HIGH_WATERMARK_CHECKPOINT, LEADER_EPOCH_CHECKPOINT, LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
};

impl Log {
    pub(super) fn scan_params(
        &self,
        base: i64,
        file_len: u64,
        min_offset: i64,
        verify_crc: bool,
    ) -> ScanParams {
        ScanParams {
            base_offset: base,
            file_len,
            min_offset,
            end_offset_exclusive: i64::MAX,
            index_interval_bytes: self.config.read().index_interval_bytes,
            verify_crc,
        }
    }

    /// Loads segments from disk: the clean-shutdown fast path or recovery from the recovery point.
    /// `initial_hw` is the checkpointed high watermark, if the caller has one.
    pub(super) fn load(&self, initial_hw: Option<i64>) -> Result<(), StorageError> {
        let dir = self.dir();
        self.io
            .create_dir_all(&dir)
            .map_err(|e| self.io_err(&dir, e))?;
        let mut names = self.io.list_dir(&dir).map_err(|e| self.io_err(&dir, e))?;
        let interval = self.config.read().index_interval_bytes;
        if super::clean::recover_interrupted_cleaning(&*self.io, &dir, &names, interval)
            .map_err(|e| self.io_err(&dir, e))?
        {
            names = self.io.list_dir(&dir).map_err(|e| self.io_err(&dir, e))?;
        }
        let mut bases = Vec::new();
        for name in &names {
            if name.ends_with(DELETED_SUFFIX) || name.ends_with(".tmp") {
                let path = dir.join(name);
                if let Err(e) = self.io.remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove leftover file");
                }
            } else if let Some(base) = name.strip_suffix(LOG_SUFFIX).and_then(parse_base_offset) {
                bases.push(base);
            }
        }
        for name in &names {
            let stem = name
                .strip_suffix(INDEX_SUFFIX)
                .or_else(|| name.strip_suffix(TIME_INDEX_SUFFIX))
                .or_else(|| name.strip_suffix(TXN_INDEX_SUFFIX));
            if let Some(base) = stem.and_then(parse_base_offset) {
                if !bases.contains(&base) {
                    let _ = self.io.remove_file(&dir.join(name));
                }
            }
        }
        bases.sort_unstable();
        let clean_path = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = self.io.exists(&clean_path);
        let lso_ckpt = self
            .read_checkpoint(LOG_START_OFFSET_CHECKPOINT)
            .and_then(|b| parse_offset_checkpoint(&b));
        let rp_ckpt = self
            .read_checkpoint(RECOVERY_POINT_CHECKPOINT)
            .and_then(|b| parse_offset_checkpoint(&b));
        // An older version's per-partition high-watermark checkpoint (clean close only): used when the
        // caller has no entry, then removed below.
        let legacy_hw_path = dir.join(HIGH_WATERMARK_CHECKPOINT);
        let legacy_hw = self.io.exists(&legacy_hw_path).then(|| {
            self.read_checkpoint(HIGH_WATERMARK_CHECKPOINT)
                .and_then(|b| parse_offset_checkpoint(&b))
        });
        let hw_ckpt = initial_hw.or(legacy_hw.flatten());
        let epochs_ckpt = self.read_checkpoint(LEADER_EPOCH_CHECKPOINT);
        let mut epochs = match epochs_ckpt {
            Some(b) => LeaderEpochCache::parse(&b).unwrap_or_else(|| {
                tracing::warn!(dir = %dir.display(), "invalid leader-epoch checkpoint; starting empty");
                LeaderEpochCache::default()
            }),
            None => LeaderEpochCache::default(),
        };

        let mut segments = BTreeMap::new();
        let mut recovered_files: Vec<Arc<dyn IoFile>> = Vec::new();
        // The first segment recovered by replaying its batches (`None`: every segment is trusted), whether a
        // recovered segment holds control batches (transaction markers), and whether one had a transaction index.
        let mut recovery_start = None;
        let mut recovered_markers = false;
        let mut recovered_txn_index = false;
        if bases.is_empty() {
            let start = lso_ckpt.unwrap_or(0).max(0);
            let files = self.open_active_files(start, IndexBuilder::new(), Some(0), Vec::new())?;
            segments.insert(
                start,
                Segment {
                    base_offset: start,
                    size: 0,
                    next_offset: start,
                    max_timestamp_ms: -1,
                    offset_of_max_timestamp: -1,
                    rolling_timestamp_ms: None,
                    has_txn_index: false,
                    active: Some(files),
                },
            );
        } else {
            let mut recover_from = if clean {
                None
            } else {
                let rp = rp_ckpt.unwrap_or(0);
                Some(
                    bases
                        .iter()
                        .rev()
                        .find(|b| **b <= rp)
                        .copied()
                        .unwrap_or(bases[0]),
                )
            };
            if let Some(from) = recover_from {
                tracing::info!(dir = %dir.display(), from_segment = from, "unclean shutdown: recovering log");
            }
            // Transaction indexes of the segments recovery trusts: a torn tail entry is cut; a corrupt index
            // makes recovery start at its segment, which rebuilds it from the log.
            let mut trusted_txns: HashMap<i64, Vec<AbortedTxn>> = HashMap::new();
            for &base in &bases {
                if recover_from.is_some_and(|r| base >= r) {
                    break;
                }
                let name = format!("{base:020}{TXN_INDEX_SUFFIX}");
                if !names.contains(&name) {
                    continue;
                }
                match self.load_txn_index(base)? {
                    Ok(entries) => {
                        if !entries.is_empty() {
                            trusted_txns.insert(base, entries);
                        }
                    }
                    Err(reason) => {
                        tracing::warn!(dir = %dir.display(), segment = base, reason = %reason, "corrupt transaction index: recovering the log from its segment");
                        recover_from = Some(recover_from.map_or(base, |r| r.min(base)));
                        break;
                    }
                }
            }
            recovery_start = recover_from;
            let mut expected_next = i64::MIN;
            let mut cut_after: Option<usize> = None;
            for (i, &base) in bases.iter().enumerate() {
                let is_last = i + 1 == bases.len();
                let next_base = bases.get(i + 1).copied();
                let log_path = segment_path(&dir, base, LOG_SUFFIX);
                let file = self
                    .io
                    .open(&log_path, false)
                    .map_err(|e| self.io_err(&log_path, e))?;
                let len = file.len().map_err(|e| self.io_err(&log_path, e))?;
                let recover = recover_from.is_some_and(|r| base >= r);
                if !recover && !is_last {
                    // Trusted inactive segment: take its max timestamp from the time index.
                    let mut seg =
                        self.load_trusted_inactive(base, len, next_base.unwrap_or(base), &*file)?;
                    seg.has_txn_index = trusted_txns.contains_key(&base);
                    expected_next = seg.next_offset;
                    segments.insert(base, seg);
                    continue;
                }
                // After a clean shutdown only the tail after the last index entry is walked.
                let resume = if recover {
                    None
                } else {
                    self.clean_resume_point(base, len, &*file)
                };
                let params = self.scan_params(base, len, expected_next, recover);
                let outcome = scan_segment_from(&*file, params, resume)
                    .map_err(|e| self.io_err(&log_path, e))?;
                let cut = outcome.valid_bytes < len;
                if cut {
                    tracing::warn!(
                        segment = %log_path.display(),
                        valid_bytes = outcome.valid_bytes,
                        cut_bytes = len - outcome.valid_bytes,
                        next_offset = outcome.next_offset,
                        reason = outcome.stop_reason.as_deref().unwrap_or("unknown"),
                        "recovery truncated the log at the first torn or corrupt batch"
                    );
                }
                if recover {
                    recovered_markers |= outcome.has_control_batches;
                    recovered_txn_index |= names.contains(&format!("{base:020}{TXN_INDEX_SUFFIX}"));
                    // As Kafka's LogSegment.recover: only epochs newer than the cache's latest.
                    for &(e, o) in &outcome.epochs {
                        if epochs.latest_epoch().is_none_or(|latest| e > latest) {
                            epochs.assign(e, o);
                        }
                    }
                    recovered_files.push(file.clone());
                }
                let mut index = outcome.index;
                let make_active = is_last || cut;
                // A recovered segment's transaction index is rebuilt below from the replay; a trusted one keeps
                // the entries whose marker is in the data that is left.
                let mut aborted = if recover {
                    Vec::new()
                } else {
                    trusted_txns.remove(&base).unwrap_or_default()
                };
                aborted.retain(|t| t.last_offset < outcome.next_offset);
                let has_txn_index = !aborted.is_empty();
                let files = if make_active {
                    Some(self.open_active_files(
                        base,
                        index.clone(),
                        cut.then_some(outcome.valid_bytes),
                        aborted,
                    )?)
                } else {
                    index.maybe_append_time(base);
                    self.write_index_files(base, &index)?;
                    None
                };
                expected_next = outcome.next_offset;
                segments.insert(
                    base,
                    Segment {
                        base_offset: base,
                        size: outcome.valid_bytes,
                        next_offset: if make_active {
                            outcome.next_offset
                        } else {
                            next_base
                                .unwrap_or(outcome.next_offset)
                                .max(outcome.next_offset)
                        },
                        max_timestamp_ms: index.max_timestamp_ms,
                        offset_of_max_timestamp: index.offset_of_max_timestamp,
                        rolling_timestamp_ms: outcome.first_batch_timestamp_ms,
                        has_txn_index: has_txn_index && make_active,
                        active: files,
                    },
                );
                if cut {
                    cut_after = Some(i);
                    break;
                }
            }
            if let Some(i) = cut_after {
                for &base in &bases[i + 1..] {
                    tracing::warn!(dir = %dir.display(), segment = base, "recovery removed a segment after the truncation point");
                    for suffix in [
                        LOG_SUFFIX,
                        INDEX_SUFFIX,
                        TIME_INDEX_SUFFIX,
                        TXN_INDEX_SUFFIX,
                    ] {
                        let p = segment_path(&dir, base, suffix);
                        if let Err(e) = self.io.remove_file(&p) {
                            if e.kind() != std::io::ErrorKind::NotFound {
                                return Err(self.io_err(&p, e));
                            }
                        }
                    }
                }
            }
        }
        for f in &recovered_files {
            f.sync_data().map_err(|e| self.io_err(&dir, e))?;
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }

        let mut st = self.state.lock();
        st.segments = segments;
        let first_base = *st
            .segments
            .keys()
            .next()
            .expect("invariant: at least one segment");
        let leo = st.active_ref().next_offset;
        st.log_end_offset = leo;
        st.log_start_offset = lso_ckpt.unwrap_or(first_base).max(first_base).min(leo);
        st.recovery_point = leo;
        st.high_watermark = match hw_ckpt {
            Some(hw) => {
                if hw > leo {
                    // The checkpoint is fsynced, the data maybe not: recovery cut below it.
                    tracing::warn!(dir = %dir.display(), checkpointed = hw, log_end_offset = leo, "checkpointed high watermark is above the recovered log end offset; using the log end offset");
                }
                hw.clamp(st.log_start_offset, leo)
            }
            None => leo,
        };
        Self::debug_check_offsets(&st);
        let lso = st.log_start_offset;
        epochs.truncate_from_start(lso);
        epochs.truncate_from_end(leo);
        st.epochs = epochs;
        // When recovered segments hold transaction markers, the producer state is rebuilt from a snapshot at or
        // below the first of them, so that replaying them rebuilds their transaction indexes (Kafka's
        // `LogSegment.recover` with `updateProducerState`). Without markers they index nothing.
        let max_snapshot = match recovery_start {
            Some(from) if recovered_markers => from,
            _ => i64::MAX,
        };
        let rebuilt = self.rebuild_producer_state(&st, leo, max_snapshot)?;
        st.producers = rebuilt.state;
        Self::note_completed_txns(&mut st, &rebuilt.completed);
        if let Some(from) = recovery_start {
            if recovered_markers || recovered_txn_index {
                self.rebuild_txn_indexes(&mut st, from, &rebuilt.aborted)?;
            }
        }
        let epoch_bytes = st.epochs.encode();
        let seq = st.next_checkpoint_seq();
        drop(st);
        self.write_checkpoint(LEADER_EPOCH_CHECKPOINT, &epoch_bytes, seq)?;
        self.write_checkpoint(
            RECOVERY_POINT_CHECKPOINT,
            &encode_offset_checkpoint(leo),
            seq,
        )?;
        self.write_checkpoint(
            LOG_START_OFFSET_CHECKPOINT,
            &encode_offset_checkpoint(lso),
            seq,
        )?;
        self.state.lock().checkpointed_recovery_point = leo;
        if legacy_hw.is_some() {
            // Best effort: a leftover is only read again when the caller has no entry for this log.
            if let Err(e) = self.io.remove_file(&legacy_hw_path) {
                tracing::warn!(path = %legacy_hw_path.display(), error = %e, "cannot remove the per-partition high-watermark checkpoint");
            }
        }
        if clean {
            // A crash from now on must run recovery again: the marker goes before anything is appended.
            self.io
                .remove_file(&clean_path)
                .map_err(|e| self.io_err(&clean_path, e))?;
            self.io.sync_dir(&dir).map_err(|e| self.io_err(&dir, e))?;
        }
        Ok(())
    }

    /// For the active segment of a cleanly shut down log: the position of the batch of the last
    /// offset-index entry and the indexes before it, if the index files are valid and agree with the
    /// data; `None` makes the caller walk the whole segment.
    fn clean_resume_point(&self, base: i64, len: u64, file: &dyn IoFile) -> Option<ScanStart> {
        let max_rel = i64::from(u32::MAX);
        let index_path = segment_path(&self.dir(), base, INDEX_SUFFIX);
        let time_path = segment_path(&self.dir(), base, TIME_INDEX_SUFFIX);
        let offsets = parse_offset_index(&read_file(&*self.io, &index_path).ok()?, len, max_rel)?;
        let times = parse_time_index(&read_file(&*self.io, &time_path).ok()?, max_rel)?;
        let last = *offsets.last()?;
        let at = read_header_at(file, u64::from(last.position)).ok()??;
        let header = BatchHeader::new(&at).ok()?;
        if header.last_offset() != base + i64::from(last.relative_offset) {
            return None;
        }
        let first = read_header_at(file, 0).ok()??;
        let first_ts = BatchHeader::new(&first).ok()?.max_timestamp();
        let mut index = IndexBuilder::new();
        index.offsets = offsets[..offsets.len() - 1].to_vec();
        if let Some(t) = times.last() {
            index.max_timestamp_ms = t.timestamp_ms;
            index.offset_of_max_timestamp = base + i64::from(t.relative_offset);
        }
        index.times = times;
        // Larger than any interval: the batch at `position` re-adds the entry just dropped.
        index.bytes_since_last_entry = u64::MAX / 2;
        Some(ScanStart {
            position: u64::from(last.position),
            index,
            first_batch_timestamp_ms: Some(first_ts),
        })
    }

    pub(super) fn write_index_files(
        &self,
        base: i64,
        index: &IndexBuilder,
    ) -> Result<(), StorageError> {
        for (suffix, bytes) in [
            (INDEX_SUFFIX, encode_offset_entries(&index.offsets)),
            (TIME_INDEX_SUFFIX, encode_time_entries(&index.times)),
        ] {
            let p = segment_path(&self.dir(), base, suffix);
            let f = self.io.open(&p, true).map_err(|e| self.io_err(&p, e))?;
            f.set_len(0)
                .and_then(|_| f.write_all_at(&bytes, 0))
                .map_err(|e| self.io_err(&p, e))?;
        }
        Ok(())
    }

    /// A trusted (below the recovery point or cleanly shut down) inactive segment: the time index gives
    /// its max timestamp; a missing or invalid time index is rebuilt from the data.
    fn load_trusted_inactive(
        &self,
        base: i64,
        len: u64,
        next_base: i64,
        file: &dyn IoFile,
    ) -> Result<Segment, StorageError> {
        let time_path = segment_path(&self.dir(), base, TIME_INDEX_SUFFIX);
        let times = if self.io.exists(&time_path) {
            read_file(&*self.io, &time_path)
                .ok()
                .and_then(|b| parse_time_index(&b, next_base - 1 - base))
        } else {
            None
        };
        let (max_ts, offset_of_max, rolling) = match times {
            Some(t) => match t.last() {
                Some(last) => (
                    last.timestamp_ms,
                    base + i64::from(last.relative_offset),
                    None,
                ),
                None => (-1, -1, None),
            },
            None => {
                tracing::warn!(segment = base, dir = %self.dir().display(), "rebuilding a missing or invalid time index");
                let path = segment_path(&self.dir(), base, LOG_SUFFIX);
                let mut outcome = scan_segment(file, self.scan_params(base, len, i64::MIN, false))
                    .map_err(|e| self.io_err(&path, e))?;
                outcome.index.maybe_append_time(base);
                self.write_index_files(base, &outcome.index)?;
                (
                    outcome.index.max_timestamp_ms,
                    outcome.index.offset_of_max_timestamp,
                    outcome.first_batch_timestamp_ms,
                )
            }
        };
        Ok(Segment {
            base_offset: base,
            size: len,
            next_offset: next_base,
            max_timestamp_ms: max_ts,
            offset_of_max_timestamp: offset_of_max,
            rolling_timestamp_ms: rolling,
            has_txn_index: false,
            active: None,
        })
    }

    /// Reads and checks the transaction index of a trusted segment at open: its entries, with a torn tail
    /// (a length that is not a multiple of 34, a write cut short) cut from the file; `Err` with the reason when
    /// an entry is corrupt (the segment must be recovered).
    fn load_txn_index(&self, base: i64) -> Result<Result<Vec<AbortedTxn>, String>, StorageError> {
        let path = segment_path(&self.dir(), base, TXN_INDEX_SUFFIX);
        let bytes = match read_file(&*self.io, &path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ok(Vec::new())),
            Err(e) => return Err(self.io_err(&path, e)),
        };
        match parse_txn_index(&bytes, base) {
            TxnIndexContents::Valid {
                entries,
                torn_bytes,
            } => {
                if torn_bytes > 0 {
                    tracing::warn!(path = %path.display(), torn_bytes, "cutting a torn entry off a transaction index");
                    let len = (entries.len() * ABORTED_TXN_BYTES) as u64;
                    self.io
                        .open(&path, true)
                        .and_then(|f| {
                            f.set_len(len)?;
                            f.sync_data()
                        })
                        .map_err(|e| self.io_err(&path, e))?;
                }
                Ok(Ok(entries))
            }
            TxnIndexContents::Corrupt(reason) => Ok(Err(reason)),
        }
    }

    /// Writes the transaction indexes of the segments from `from` on (those recovery replayed) from the aborted
    /// transactions the replay found, each in the segment holding its marker, and fsyncs them: the recovery point
    /// moves past these segments, and recovery trusts the indexes below it.
    fn rebuild_txn_indexes(
        &self,
        st: &mut super::State,
        from: i64,
        aborted: &[AbortedTxn],
    ) -> Result<(), StorageError> {
        let mut by_segment: BTreeMap<i64, Vec<AbortedTxn>> = BTreeMap::new();
        for t in aborted {
            if let Some((base, _)) = st.segments.range(..=t.last_offset).next_back() {
                if *base >= from {
                    by_segment.entry(*base).or_default().push(*t);
                }
            }
        }
        for (base, seg) in st.segments.range_mut(from..) {
            let entries = by_segment.remove(base).unwrap_or_default();
            let file = self.write_txn_index(*base, &entries)?;
            if let Some(f) = &file {
                let path = segment_path(&self.dir(), *base, TXN_INDEX_SUFFIX);
                f.sync_data().map_err(|e| self.io_err(&path, e))?;
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            seg.has_txn_index = !entries.is_empty();
            if let Some(files) = seg.active.as_mut() {
                files.txn_index = file;
                files.aborted = entries;
                files.txn_index_dirty = false;
            }
            self.cache
                .remove(&segment_path(&self.dir(), *base, LOG_SUFFIX));
        }
        Ok(())
    }

    /// The opened form of an inactive segment, through the shared cache; indexes failing their sanity
    /// check are rebuilt from the data.
    pub(super) fn loaded(&self, seg: &Segment) -> Result<Arc<LoadedSegment>, StorageError> {
        let log_path = segment_path(&self.dir(), seg.base_offset, LOG_SUFFIX);
        if let Some(l) = self.cache.get(&log_path) {
            return Ok(l);
        }
        let log = self
            .io
            .open(&log_path, false)
            .map_err(|e| self.io_err(&log_path, e))?;
        let max_rel = seg.next_offset - 1 - seg.base_offset;
        let index_path = segment_path(&self.dir(), seg.base_offset, INDEX_SUFFIX);
        let time_path = segment_path(&self.dir(), seg.base_offset, TIME_INDEX_SUFFIX);
        let offsets = read_file(&*self.io, &index_path)
            .ok()
            .and_then(|b| parse_offset_index(&b, seg.size, max_rel));
        let times = read_file(&*self.io, &time_path)
            .ok()
            .and_then(|b| parse_time_index(&b, max_rel));
        let aborted_txns = if seg.has_txn_index {
            self.read_txn_index(seg.base_offset)?
        } else {
            Vec::new()
        };
        let loaded = match (offsets, times) {
            (Some(offsets), Some(times)) => LoadedSegment {
                log,
                offsets,
                times,
                aborted_txns,
                slice_file: OnceLock::new(),
            },
            _ => {
                tracing::warn!(segment = %log_path.display(), "rebuilding invalid index files");
                let mut outcome = scan_segment(
                    &*log,
                    self.scan_params(seg.base_offset, seg.size, i64::MIN, false),
                )
                .map_err(|e| self.io_err(&log_path, e))?;
                outcome.index.maybe_append_time(seg.base_offset);
                self.write_index_files(seg.base_offset, &outcome.index)?;
                LoadedSegment {
                    log,
                    offsets: outcome.index.offsets,
                    times: outcome.index.times,
                    aborted_txns,
                    slice_file: OnceLock::new(),
                }
            }
        };
        let loaded = Arc::new(loaded);
        self.cache.insert(&log_path, loaded.clone());
        Ok(loaded)
    }
}
