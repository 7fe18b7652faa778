//! Removing data: truncation (a follower's divergent tail, or the whole log), DeleteRecords, retention,
//! and the delayed removal of deleted segment files.

use std::path::PathBuf;

use crate::epoch::LeaderEpochCache;
use crate::index::IndexBuilder;
use crate::producer_state::{ProducerState, DEFAULT_PRODUCER_ID_EXPIRATION_MS};
use crate::segment::{
    scan_segment, segment_path, DELETED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
    TXN_INDEX_SUFFIX,
};
use crate::StorageError;

use super::{
    encode_offset_checkpoint, wall_clock_ms, Log, Segment, State, LEADER_EPOCH_CHECKPOINT,
    LOG_START_OFFSET_CHECKPOINT, RECOVERY_POINT_CHECKPOINT,
};

impl Log {
    /// Renames a segment's files to `.deleted` and schedules their removal.
    pub(super) fn delete_segment(&self, st: &mut State, base: i64) -> Result<(), StorageError> {
        st.segments.remove(&base);
        let delay = self.config.read().file_delete_delay_ms as i64;
        self.cache
            .remove(&segment_path(&self.dir(), base, LOG_SUFFIX));
        for suffix in [
            LOG_SUFFIX,
            INDEX_SUFFIX,
            TIME_INDEX_SUFFIX,
            TXN_INDEX_SUFFIX,
        ] {
            let path = segment_path(&self.dir(), base, suffix);
            let mut deleted = path.clone().into_os_string();
            deleted.push(DELETED_SUFFIX);
            let deleted = PathBuf::from(deleted);
            match self.io.rename(&path, &deleted) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_err(&path, e)),
            }
            if delay <= 0 {
                let _ = self.io.remove_file(&deleted);
            } else {
                st.pending_deletes.push((deleted, wall_clock_ms() + delay));
            }
        }
        Ok(())
    }

    pub(super) fn remove_due_files(&self, st: &mut State) {
        let now = wall_clock_ms();
        let io = &self.io;
        st.pending_deletes.retain(|(path, due)| {
            if *due > now {
                return true;
            }
            if let Err(e) = io.remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove deleted segment file");
                }
            }
            false
        });
    }

    /// Removes the tail from `offset` (a follower cutting its divergent suffix). The batch containing
    /// `offset` goes entirely; a no-op when `offset >= LEO`.
    pub fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        if offset < 0 {
            return Err(StorageError::InvalidArgument(format!(
                "cannot truncate to negative offset {offset}"
            )));
        }
        let _flush = self.claim_flush();
        let mut st = self.state.lock();
        self.check_usable(&st)?;
        if offset >= st.log_end_offset {
            return Ok(());
        }
        let first_base = *st
            .segments
            .keys()
            .next()
            .expect("invariant: at least one segment");
        if offset < first_base {
            drop(st);
            drop(_flush);
            return self.truncate_fully_and_start_at(offset);
        }
        if let Err(e) = self.cut_tail(&mut st, offset) {
            // The log may be half cut (segments gone, the new active one not open): never serve it.
            self.health().set_offline();
            return Err(e);
        }
        let leo = st.log_end_offset_of_active();
        tracing::info!(dir = %self.dir().display(), offset, log_end_offset = leo, "truncated log");
        st.log_end_offset = leo;
        st.recovery_point = st.recovery_point.min(leo);
        st.high_watermark = st.high_watermark.min(leo);
        let lso_moved = leo < st.log_start_offset;
        st.log_start_offset = st.log_start_offset.min(leo);
        Self::debug_check_offsets(&st);
        st.epochs.truncate_from_end(leo);
        // As Kafka: reload from the latest snapshot at or below the cut and replay the rest. Completed
        // transactions whose marker was cut are gone; the replayed ones stay unstable until the high watermark
        // passes their marker.
        match self.rebuild_producer_state(&st, leo, leo) {
            Ok(rebuilt) => {
                st.producers = rebuilt.state;
                st.unreplicated_txns.retain(|_, marker| *marker < leo);
                Self::note_completed_txns(&mut st, &rebuilt.completed);
            }
            Err(e) => {
                self.health().set_offline();
                return Err(e);
            }
        }
        let epochs = st.epochs.encode();
        let rp = st.recovery_point;
        st.checkpointed_recovery_point = rp;
        let seq = st.next_checkpoint_seq();
        drop(st);
        self.write_checkpoint(LEADER_EPOCH_CHECKPOINT, &epochs, seq)?;
        self.write_checkpoint(
            RECOVERY_POINT_CHECKPOINT,
            &encode_offset_checkpoint(rp),
            seq,
        )?;
        if lso_moved {
            self.write_checkpoint(
                LOG_START_OFFSET_CHECKPOINT,
                &encode_offset_checkpoint(leo),
                seq,
            )?;
        }
        Ok(())
    }

    /// Deletes the segments above `offset` and cuts the one containing it before the batch holding
    /// `offset`, making it the active segment; its transaction index keeps the entries whose marker stays.
    fn cut_tail(&self, st: &mut State, offset: i64) -> Result<(), StorageError> {
        st.rewrites += 1;
        let doomed: Vec<i64> = st.segments.range(offset + 1..).map(|(b, _)| *b).collect();
        for b in doomed {
            self.delete_segment(st, b)?;
        }
        st.unsynced.clear();
        let seg_base = st.active_ref().base_offset;
        let log_path = segment_path(&self.dir(), seg_base, LOG_SUFFIX);
        self.cache.remove(&log_path);
        let file = match &st.active_ref().active {
            Some(f) => f.log.clone(),
            None => self
                .io
                .open(&log_path, false)
                .map_err(|e| self.io_err(&log_path, e))?,
        };
        let size = st.active_ref().size;
        let mut params = self.scan_params(seg_base, size, i64::MIN, false);
        params.end_offset_exclusive = offset;
        let outcome = scan_segment(&*file, params).map_err(|e| self.io_err(&log_path, e))?;
        let mut aborted = match &st.active_ref().active {
            Some(f) => f.aborted.clone(),
            None if st.active_ref().has_txn_index => self.read_txn_index(seg_base)?,
            None => Vec::new(),
        };
        aborted.retain(|t| t.last_offset < outcome.next_offset);
        let has_txn_index = !aborted.is_empty();
        let files = self.open_active_files(
            seg_base,
            outcome.index.clone(),
            Some(outcome.valid_bytes),
            aborted,
        )?;
        let seg = st.active();
        seg.has_txn_index = has_txn_index;
        seg.size = outcome.valid_bytes;
        seg.next_offset = outcome.next_offset;
        seg.max_timestamp_ms = outcome.index.max_timestamp_ms;
        seg.offset_of_max_timestamp = outcome.index.offset_of_max_timestamp;
        seg.rolling_timestamp_ms = outcome.first_batch_timestamp_ms;
        seg.active = Some(files);
        Ok(())
    }

    /// Deletes every segment and restarts the log empty at `offset` (log start = LEO = HW = `offset`).
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), StorageError> {
        if offset < 0 {
            return Err(StorageError::InvalidArgument(format!(
                "cannot start at negative offset {offset}"
            )));
        }
        let _flush = self.claim_flush();
        let mut st = self.state.lock();
        self.check_usable(&st)?;
        st.rewrites += 1;
        let all: Vec<i64> = st.segments.keys().copied().collect();
        let restarted = all
            .into_iter()
            .try_for_each(|b| self.delete_segment(&mut st, b))
            .and_then(|()| {
                self.open_active_files(offset, IndexBuilder::new(), Some(0), Vec::new())
            });
        let files = match restarted {
            Ok(files) => files,
            Err(e) => {
                // Segments are gone but no new one exists: never serve this log again.
                self.health().set_offline();
                return Err(e);
            }
        };
        st.unsynced.clear();
        st.segments.insert(
            offset,
            Segment {
                base_offset: offset,
                size: 0,
                next_offset: offset,
                max_timestamp_ms: -1,
                offset_of_max_timestamp: -1,
                rolling_timestamp_ms: None,
                has_txn_index: false,
                active: Some(files),
            },
        );
        st.log_start_offset = offset;
        st.log_end_offset = offset;
        st.high_watermark = offset;
        st.recovery_point = offset;
        Self::debug_check_offsets(&st);
        st.checkpointed_recovery_point = offset;
        st.epochs.clear();
        st.producers = ProducerState::empty_at(offset);
        st.unreplicated_txns.clear();
        self.delete_snapshots(|_| true);
        let seq = st.next_checkpoint_seq();
        drop(st);
        self.write_checkpoint(
            LEADER_EPOCH_CHECKPOINT,
            &LeaderEpochCache::default().encode(),
            seq,
        )?;
        self.write_checkpoint(
            LOG_START_OFFSET_CHECKPOINT,
            &encode_offset_checkpoint(offset),
            seq,
        )?;
        self.write_checkpoint(
            RECOVERY_POINT_CHECKPOINT,
            &encode_offset_checkpoint(offset),
            seq,
        )?;
        Ok(())
    }

    /// DeleteRecords: moves the log start offset to `offset` (never backwards, never above the high
    /// watermark), deletes segments wholly below it, and returns the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        let mut st = self.state.lock();
        self.check_usable(&st)?;
        if offset > st.high_watermark {
            return Err(StorageError::AboveHighWatermark {
                offset,
                high_watermark: st.high_watermark,
            });
        }
        if offset <= st.log_start_offset {
            return Ok(st.log_start_offset);
        }
        st.log_start_offset = offset;
        Self::debug_check_offsets(&st);
        let leo = st.log_end_offset;
        // Same normalisation as at load: no epoch entry starts at or after the log end offset.
        st.epochs.truncate_from_start(offset);
        st.epochs.truncate_from_end(leo);
        self.delete_below_start(&mut st)?;
        let (lso, epochs) = (st.log_start_offset, st.epochs.encode());
        let seq = st.next_checkpoint_seq();
        drop(st);
        self.write_checkpoint(
            LOG_START_OFFSET_CHECKPOINT,
            &encode_offset_checkpoint(lso),
            seq,
        )?;
        self.write_checkpoint(LEADER_EPOCH_CHECKPOINT, &epochs, seq)?;
        Ok(lso)
    }

    /// Deletes non-active segments whose every offset is below the log start offset.
    fn delete_below_start(&self, st: &mut State) -> Result<usize, StorageError> {
        let bases: Vec<i64> = st.segments.keys().copied().collect();
        let mut deleted = 0;
        for w in bases.windows(2) {
            if w[1] <= st.log_start_offset {
                self.delete_segment(st, w[0])?;
                deleted += 1;
            } else {
                break;
            }
        }
        Ok(deleted)
    }

    /// Retention: deletes leading segments wholly below the log start offset, older than `retention.ms`
    /// (by max timestamp) or beyond `retention.bytes`, only ever below the high watermark (rolling the
    /// active segment first when it qualifies), and removes `.deleted` files that are due. Returns the
    /// number of segments deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let config = self.config.read().clone();
        let mut st = self.state.lock();
        self.check_usable(&st)?;
        self.remove_due_files(&mut st);
        let expired = st
            .producers
            .remove_expired(now_ms, DEFAULT_PRODUCER_ID_EXPIRATION_MS);
        if expired > 0 {
            tracing::debug!(dir = %self.dir().display(), expired, "expired idempotent producers");
        }
        let mut deleted = self.delete_below_start(&mut st)?;
        let mut total: i64 = st.segments.values().map(|s| s.size as i64).sum();
        loop {
            let hw = st.high_watermark;
            let count = st.segments.len();
            let (base, size, end, max_ts) = {
                let s = st
                    .segments
                    .values()
                    .next()
                    .expect("invariant: at least one segment");
                let end = if count > 1 {
                    st.segments.keys().nth(1).copied().unwrap_or(s.next_offset)
                } else {
                    st.log_end_offset
                };
                (s.base_offset, s.size, end, s.max_timestamp_ms)
            };
            if size == 0 || end > hw {
                break;
            }
            // A compact-only log (`cleanup.policy=compact`) is never cut by time or size.
            let by_time = config.delete
                && config.retention_ms >= 0
                && max_ts >= 0
                && now_ms - max_ts > config.retention_ms;
            let by_size = config.delete
                && config.retention_bytes >= 0
                && total - size as i64 >= config.retention_bytes;
            if !(by_time || by_size) {
                break;
            }
            if count == 1 {
                self.roll_locked(&mut st)?;
            }
            tracing::info!(dir = %self.dir().display(), segment = base, by_time, by_size, "retention deleting segment");
            self.delete_segment(&mut st, base)?;
            total -= size as i64;
            deleted += 1;
            let first = *st
                .segments
                .keys()
                .next()
                .expect("invariant: at least one segment");
            if first > st.log_start_offset {
                st.log_start_offset = first;
                Self::debug_check_offsets(&st);
                let leo = st.log_end_offset;
                st.epochs.truncate_from_start(first);
                st.epochs.truncate_from_end(leo);
            }
        }
        if deleted > 0 {
            // Snapshots below the first segment are never replayed from again.
            let first = *st
                .segments
                .keys()
                .next()
                .expect("invariant: at least one segment");
            self.delete_snapshots(|o| o < first);
            let (lso, epochs) = (st.log_start_offset, st.epochs.encode());
            let seq = st.next_checkpoint_seq();
            drop(st);
            self.write_checkpoint(
                LOG_START_OFFSET_CHECKPOINT,
                &encode_offset_checkpoint(lso),
                seq,
            )?;
            self.write_checkpoint(LEADER_EPOCH_CHECKPOINT, &epochs, seq)?;
        }
        Ok(deleted)
    }
}
