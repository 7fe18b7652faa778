//! Appending: validation of producer batches without decoding records, append as leader (offsets and
//! epoch assigned in place) and as follower (offsets kept), and rolling the active segment.

use std::sync::atomic::Ordering;

use sluice_protocol::batch::{self, BatchError, BatchHeader, Batches};

use crate::index::{IndexBuilder, IndexedBatch, OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES};
use crate::io::replace_file_unsynced;
use crate::producer_state::snapshot_file_name;
use crate::segment::{segment_path, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX};
use crate::{AppendError, LogConfig, StorageError, TimestampType};

use super::{
    wall_clock_ms, ActiveFiles, AppendInfo, AppendOrigin, Log, Segment, State,
    LEADER_EPOCH_CHECKPOINT,
};

/// Rolled-but-unsynced segment files (3 or 4 per segment) held before a roll syncs them itself.
const MAX_UNSYNCED_FILES: usize = 24;

/// Counts an appender in and out of `Log::appenders`.
struct AppenderGuard<'a>(&'a Log);

impl<'a> AppenderGuard<'a> {
    fn enter(log: &'a Log) -> Self {
        let n = log.appenders.fetch_add(1, Ordering::AcqRel) + 1;
        log.recent_concurrency.fetch_max(n, Ordering::AcqRel);
        AppenderGuard(log)
    }
}

impl Drop for AppenderGuard<'_> {
    fn drop(&mut self) {
        self.0.appenders.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Summary of a validated producer request.
struct Validated {
    batch_count: usize,
    record_count: u64,
    max_timestamp_ms: i64,
}

pub(super) fn batch_error(e: BatchError) -> AppendError {
    match e {
        BatchError::UnsupportedMagic(m) => AppendError::UnsupportedMagic(m),
        BatchError::CountMismatch { .. } => AppendError::InvalidRecord(e.to_string()),
        other => AppendError::Corrupt(other.to_string()),
    }
}

/// Checks the batch at the start of `rest` without decoding its records (magic, framing, size limit, CRC32C,
/// record count) and returns its header, covering exactly the batch.
fn check_batch(
    rest: &[u8],
    max_message_bytes: u64,
    produced: bool,
) -> Result<BatchHeader<'_>, AppendError> {
    if rest.len() > batch::MAGIC_OFFSET {
        let magic = rest[batch::MAGIC_OFFSET] as i8;
        if magic != batch::MAGIC_V2 {
            return Err(AppendError::UnsupportedMagic(magic));
        }
    }
    let header = BatchHeader::new(rest).map_err(batch_error)?;
    let size = header.size();
    if size > rest.len() {
        return Err(AppendError::Corrupt(format!(
            "batch declares {size} bytes, {} present",
            rest.len()
        )));
    }
    if size as u64 > max_message_bytes {
        return Err(AppendError::TooLarge {
            size,
            max: max_message_bytes,
        });
    }
    let whole = BatchHeader::new(&rest[..size]).map_err(batch_error)?;
    if produced {
        whole.validate_produced().map_err(batch_error)?;
    } else {
        whole.validate().map_err(batch_error)?;
    }
    Ok(whole)
}

/// Validates every batch without decoding records and, under LogAppendTime, rewrites max timestamps. Control
/// batches are refused from clients.
fn validate_batches(
    batches: &mut [u8],
    max_message_bytes: u64,
    timestamp_type: TimestampType,
    now_ms: i64,
    origin: AppendOrigin,
) -> Result<Validated, AppendError> {
    if batches.is_empty() {
        return Err(AppendError::InvalidRecord("no record batches".into()));
    }
    let mut v = Validated {
        batch_count: 0,
        record_count: 0,
        max_timestamp_ms: -1,
    };
    let mut pos = 0usize;
    while pos < batches.len() {
        let whole = check_batch(&batches[pos..], max_message_bytes, true)?;
        let size = whole.size();
        if whole.is_control() && origin == AppendOrigin::Client {
            return Err(AppendError::InvalidRecord(
                "producers may not write control batches".into(),
            ));
        }
        v.record_count += whole.record_count() as u64;
        v.batch_count += 1;
        match timestamp_type {
            TimestampType::CreateTime => {
                v.max_timestamp_ms = v.max_timestamp_ms.max(whole.max_timestamp())
            }
            TimestampType::LogAppendTime => {
                batch::set_log_append_time(&mut batches[pos..pos + size], now_ms)
                    .map_err(batch_error)?;
                v.max_timestamp_ms = now_ms;
            }
        }
        pos += size;
    }
    Ok(v)
}

impl Log {
    /// Rolls a new active segment at the log end offset (no-op when the active segment is empty).
    pub(super) fn roll_locked(&self, st: &mut State) -> Result<(), StorageError> {
        let leo = st.log_end_offset;
        let (active_base, active_size) = {
            let a = st.active_ref();
            (a.base_offset, a.size)
        };
        if active_size == 0 && active_base == leo {
            return Ok(());
        }
        let new_files = self.open_active_files(leo, IndexBuilder::new(), Some(0), Vec::new())?;
        // As Kafka at roll: a snapshot at the new segment's base bounds the producer-state replay at the
        // next open to the active segment. Not fsynced (a torn or lost snapshot fails its CRC or is
        // missing, and the open falls back to an older one), so a roll costs no extra fsync.
        // Optional, so a failure only costs replay work: the data writes report a failing disk.
        let snapshot = self.dir().join(snapshot_file_name(leo));
        if let Err(e) = replace_file_unsynced(&*self.io, &snapshot, &st.producers.encode()) {
            tracing::warn!(path = %snapshot.display(), error = %e, "cannot write producer snapshot");
        }
        let active = st.active();
        if let Some(mut files) = active.active.take() {
            files.builder.maybe_append_time(active.base_offset);
            let base = active.base_offset;
            let res = self.write_index_tail(base, &mut files);
            active.max_timestamp_ms = files.builder.max_timestamp_ms;
            active.offset_of_max_timestamp = files.builder.offset_of_max_timestamp;
            active.next_offset = leo;
            let ActiveFiles {
                log,
                index,
                time_index,
                txn_index,
                txn_index_dirty,
                ..
            } = files;
            st.unsynced.extend([log, index, time_index]);
            // Its transaction index is fsynced with the data before the recovery point passes it: recovery
            // trusts the transaction indexes of segments below the recovery point.
            st.unsynced.extend(txn_index.filter(|_| txn_index_dirty));
            if let Err(e) = res {
                // The data is intact; a short index is still a valid sparse index and is rebuilt if needed.
                tracing::warn!(dir = %self.dir().display(), segment = base, error = %e, "cannot complete the index of a rolled segment");
            }
        }
        st.dir_dirty = true;
        st.segments.insert(
            leo,
            Segment {
                base_offset: leo,
                size: 0,
                next_offset: leo,
                max_timestamp_ms: -1,
                offset_of_max_timestamp: -1,
                rolling_timestamp_ms: None,
                has_txn_index: false,
                active: Some(new_files),
            },
        );
        tracing::debug!(dir = %self.dir().display(), base_offset = leo, "rolled new segment");
        if st.unsynced.len() > MAX_UNSYNCED_FILES {
            // Nobody ran the periodic flush (`flush_if_due`): sync rolled segments here rather than
            // holding their file handles without bound.
            for f in std::mem::take(&mut st.unsynced) {
                f.sync_data().map_err(|e| self.io_err(&self.dir(), e))?;
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Rolls a new active segment now (Kafka's `UnifiedLog.roll`); no-op when the active one is empty.
    pub fn roll(&self) -> Result<(), StorageError> {
        let mut st = self.state.lock();
        self.check_usable(&st)?;
        self.roll_locked(&mut st)
    }

    fn should_roll(
        config: &LogConfig,
        seg: &Segment,
        incoming_bytes: u64,
        last_offset: i64,
        now_ms: i64,
    ) -> bool {
        if seg.size == 0 {
            return false;
        }
        let Some(files) = &seg.active else {
            return true;
        };
        let full_size = seg.size + incoming_bytes > config.segment_bytes
            || seg.size + incoming_bytes > u64::from(u32::MAX);
        let aged = seg
            .rolling_timestamp_ms
            .is_some_and(|ts| now_ms.saturating_sub(ts) > config.segment_ms);
        let index_full = (files.builder.offsets.len() as u64 + 1) * OFFSET_ENTRY_BYTES
            > config.segment_index_bytes
            || (files.builder.times.len() as u64 + 1) * TIME_ENTRY_BYTES
                > config.segment_index_bytes;
        let offset_overflow = last_offset - seg.base_offset > i64::from(i32::MAX);
        full_size || aged || index_full || offset_overflow
    }

    /// Appends batches as leader: validates each (magic, framing, CRC32C, record count, size) without
    /// decoding records, checks producer epochs, sequences and transactions, assigns offsets and
    /// `leader_epoch` in place (and LogAppendTime), writes them with one `pwrite`. All-or-nothing: on error
    /// nothing becomes readable. Accepts transactional batches and control batches (COMMIT/ABORT markers, see
    /// [`crate::records::control_batch`]), as [`AppendOrigin::Coordinator`]: the produce path of clients uses
    /// [`Log::append_as_leader_from`] with [`AppendOrigin::Client`].
    pub fn append_as_leader(
        &self,
        batches: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        self.append_as_leader_from(batches, leader_epoch, now_ms, AppendOrigin::Coordinator)
    }

    /// [`Log::append_as_leader`] for batches from `origin`: a client may not write control batches, nor a batch
    /// with a producer id and no sequence (Kafka's `LogValidator`).
    pub fn append_as_leader_from(
        &self,
        batches: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
        origin: AppendOrigin,
    ) -> Result<AppendInfo, AppendError> {
        let _appender = AppenderGuard::enter(self);
        let config = self.config.read().clone();
        let v = validate_batches(
            batches,
            config.max_message_bytes,
            config.timestamp_type,
            now_ms,
            origin,
        )?;
        let (info, flush_target) = {
            let mut st = self.state.lock();
            self.check_usable(&st)?;
            Self::check_producers(&st.producers, batches, origin)?;
            let base_offset = st.log_end_offset;
            let last_offset = base_offset + v.record_count as i64 - 1;
            if Self::should_roll(
                &config,
                st.active_ref(),
                batches.len() as u64,
                last_offset,
                now_ms,
            ) {
                self.roll_locked(&mut st)?;
            }
            // Assign offsets and the leader epoch in place (neither is covered by the CRC).
            let mut next = base_offset;
            let mut pos = 0usize;
            while pos < batches.len() {
                let size = batch::batch_size(&batches[pos..])
                    .ok_or_else(|| AppendError::Corrupt("batch framing changed".into()))?;
                let chunk = &mut batches[pos..pos + size];
                batch::set_base_offset(chunk, next);
                batch::set_partition_leader_epoch(chunk, leader_epoch);
                let delta = BatchHeader::new(chunk)
                    .map_err(batch_error)?
                    .last_offset_delta();
                next += i64::from(delta) + 1;
                pos += size;
            }
            self.write_batches(&mut st, batches, config.index_interval_bytes)?;
            let aborted = Self::replay_producers(&mut st, batches);
            self.append_txn_index(&mut st, &aborted)?;
            if leader_epoch >= 0 && st.epochs.assign(leader_epoch, base_offset) {
                let bytes = st.epochs.encode();
                let seq = st.next_checkpoint_seq();
                self.write_checkpoint(LEADER_EPOCH_CHECKPOINT, &bytes, seq)?;
            }
            let flush_target = config
                .flush_messages
                .filter(|n| (st.log_end_offset - st.recovery_point) as u64 >= (*n).max(1))
                .map(|_| st.log_end_offset);
            let info = AppendInfo {
                base_offset,
                last_offset: st.log_end_offset - 1,
                max_timestamp_ms: v.max_timestamp_ms,
                log_append_time_ms: if config.timestamp_type == TimestampType::LogAppendTime {
                    now_ms
                } else {
                    -1
                },
                record_count: v.record_count,
                log_start_offset: st.log_start_offset,
            };
            debug_assert!(v.batch_count > 0);
            (info, flush_target)
        };
        if let Some(target) = flush_target {
            self.flush_to(target)?;
        }
        Ok(info)
    }

    /// Appends batches that already carry offsets (a follower copying its leader, Kafka's
    /// `appendAsFollower`): validates framing and CRC, requires offsets to continue from the log end
    /// offset, and records each batch's partition leader epoch in the epoch cache. The batches are written as
    /// they are (nothing in them changes), so they may be the fetch response's own buffer.
    pub fn append_as_follower(&self, batches: &[u8]) -> Result<AppendInfo, AppendError> {
        let _appender = AppenderGuard::enter(self);
        let config = self.config.read().clone();
        if batches.is_empty() {
            return Err(AppendError::InvalidRecord("no record batches".into()));
        }
        // One pass, outside the state lock: each batch is CRC-checked, and offsets never go back (a gap is
        // allowed: compacted batches, or the leader's log start moved past ours before the first).
        let mut first_base = None;
        let mut expected = i64::MIN;
        let mut last = -1;
        let mut record_count = 0u64;
        let mut max_timestamp_ms = -1;
        let mut pos = 0usize;
        while pos < batches.len() {
            let h = check_batch(&batches[pos..], u64::MAX, false)?;
            if h.base_offset() < expected {
                return Err(AppendError::InvalidRecord(format!(
                    "follower batch base offset {} is below the expected {expected}",
                    h.base_offset()
                )));
            }
            first_base.get_or_insert(h.base_offset());
            record_count += h.record_count() as u64;
            max_timestamp_ms = max_timestamp_ms.max(h.max_timestamp());
            expected = h.next_offset();
            last = h.last_offset();
            pos += h.size();
        }
        let first_base = first_base.unwrap_or(-1);
        let mut st = self.state.lock();
        self.check_usable(&st)?;
        let leo = st.log_end_offset;
        if first_base < leo {
            return Err(AppendError::InvalidRecord(format!(
                "follower batch base offset {first_base} is below the expected {leo}"
            )));
        }
        if Self::should_roll(
            &config,
            st.active_ref(),
            batches.len() as u64,
            last,
            wall_clock_ms(),
        ) || first_base > leo
        {
            // A gap (the leader's log start moved past ours) starts a new segment at the batch offset.
            self.roll_locked(&mut st)?;
            if first_base > leo {
                let active_base = st.active_ref().base_offset;
                // Open the replacement before touching the map, so a failure leaves the log intact.
                let files =
                    self.open_active_files(first_base, IndexBuilder::new(), Some(0), Vec::new())?;
                if let Some(seg) = st.segments.remove(&active_base) {
                    drop(seg);
                    let _ =
                        self.io
                            .remove_file(&segment_path(&self.dir(), active_base, LOG_SUFFIX));
                    let _ =
                        self.io
                            .remove_file(&segment_path(&self.dir(), active_base, INDEX_SUFFIX));
                    for suffix in [TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX] {
                        let _ =
                            self.io
                                .remove_file(&segment_path(&self.dir(), active_base, suffix));
                    }
                    st.segments.insert(
                        first_base,
                        Segment {
                            base_offset: first_base,
                            size: 0,
                            next_offset: first_base,
                            max_timestamp_ms: -1,
                            offset_of_max_timestamp: -1,
                            rolling_timestamp_ms: None,
                            has_txn_index: false,
                            active: Some(files),
                        },
                    );
                }
            }
        }
        self.write_batches(&mut st, batches, config.index_interval_bytes)?;
        let aborted = Self::replay_producers(&mut st, batches);
        self.append_txn_index(&mut st, &aborted)?;
        let mut changed = false;
        for (_, h) in Batches::new(batches).map_while(Result::ok) {
            changed |= st
                .epochs
                .assign(h.partition_leader_epoch(), h.base_offset());
        }
        if changed {
            let bytes = st.epochs.encode();
            let seq = st.next_checkpoint_seq();
            self.write_checkpoint(LEADER_EPOCH_CHECKPOINT, &bytes, seq)?;
        }
        let flush_target = config
            .flush_messages
            .filter(|n| (st.log_end_offset - st.recovery_point) as u64 >= (*n).max(1))
            .map(|_| st.log_end_offset);
        let info = AppendInfo {
            base_offset: first_base,
            last_offset: st.log_end_offset - 1,
            max_timestamp_ms,
            log_append_time_ms: -1,
            record_count,
            log_start_offset: st.log_start_offset,
        };
        drop(st);
        if let Some(target) = flush_target {
            self.flush_to(target)?;
        }
        Ok(info)
    }

    /// Writes validated batches (offsets assigned) at the end of the active segment and indexes them. On
    /// failure the file is cut back so no partial batch remains; if that fails the directory goes offline.
    fn write_batches(
        &self,
        st: &mut State,
        batches: &[u8],
        index_interval_bytes: u64,
    ) -> Result<(), StorageError> {
        let dir = self.dir();
        let active = st.active();
        let base = active.base_offset;
        let position = active.size;
        let files = active
            .active
            .as_mut()
            .expect("invariant: the last segment is active");
        if let Err(e) = files.log.write_all_at(batches, position) {
            let path = segment_path(&dir, base, LOG_SUFFIX);
            let err = self.io_err(&path, e);
            if let Err(e2) = files.log.set_len(position) {
                tracing::error!(segment = %path.display(), error = %e2, "cannot cut back a failed write");
                self.health().set_offline();
            }
            return Err(err);
        }
        let mut pos = position;
        let mut next = active.next_offset;
        for item in Batches::new(batches) {
            let Ok((_, h)) = item else { break };
            let indexed = IndexedBatch {
                base_offset: h.base_offset(),
                last_offset: h.last_offset(),
                max_timestamp_ms: h.max_timestamp(),
                position: pos,
                size: h.size() as u64,
            };
            files.builder.on_batch(base, indexed, index_interval_bytes);
            if active.rolling_timestamp_ms.is_none() {
                active.rolling_timestamp_ms = Some(h.max_timestamp());
            }
            pos += h.size() as u64;
            next = h.next_offset();
        }
        active.max_timestamp_ms = files.builder.max_timestamp_ms;
        active.offset_of_max_timestamp = files.builder.offset_of_max_timestamp;
        active.size = pos;
        active.next_offset = next;
        st.log_end_offset = next;
        Ok(())
    }
}
