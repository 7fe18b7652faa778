//! Durability: the flush policy (`flush.messages`, `flush.ms`, rolled segments) and group commit, with the
//! fsync outside the state lock under the flush slot.

use std::sync::atomic::Ordering;

use crate::StorageError;

use super::{encode_offset_checkpoint, wall_clock_ms, Log, RECOVERY_POINT_CHECKPOINT};

/// How long a flusher waits for concurrent appenders to join its fsync (PostgreSQL's `commit_delay`);
/// only applied when more than one appender was active since the last fsync.
const GROUP_COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(200);

/// The claimed flush slot (see `Log::flushing`); released, waking every waiter, on drop.
pub(super) struct FlushSlot<'a>(&'a Log);

impl Drop for FlushSlot<'_> {
    fn drop(&mut self) {
        *self.0.flushing.lock() = false;
        self.0.flush_done.notify_all();
    }
}

impl Log {
    /// Waits until no flush runs and claims the slot, excluding flushes (used by truncation and close).
    pub(super) fn claim_flush(&self) -> FlushSlot<'_> {
        let mut flushing = self.flushing.lock();
        while *flushing {
            self.flush_done.wait(&mut flushing);
        }
        *flushing = true;
        FlushSlot(self)
    }

    /// Makes everything below `target` durable (group commit: an appender that finds its offset already
    /// fsynced by another returns at once). Returns the recovery point.
    pub(super) fn flush_to(&self, target: i64) -> Result<i64, StorageError> {
        // Wait while another thread fsyncs; every waiter re-checks when it finishes, so appends covered
        // by that fsync return without queueing behind the next flusher.
        {
            let mut flushing = self.flushing.lock();
            loop {
                {
                    let st = self.state.lock();
                    if st.recovery_point >= target.min(st.log_end_offset) && st.unsynced.is_empty()
                    {
                        return Ok(st.recovery_point);
                    }
                }
                if !*flushing {
                    *flushing = true;
                    break;
                }
                self.flush_done.wait(&mut flushing);
            }
        }
        let _flush = FlushSlot(self);
        if self
            .recent_concurrency
            .swap(self.appenders.load(Ordering::Acquire), Ordering::AcqRel)
            > 1
        {
            // Other appenders are running: give them a moment to land their batches in this fsync.
            std::thread::sleep(GROUP_COMMIT_DELAY);
        }
        let (files, upto, dir_dirty) = {
            let mut st = self.state.lock();
            if self.health().is_offline() {
                return Err(StorageError::Offline {
                    dir: self.health().dir().to_path_buf(),
                });
            }
            if st.recovery_point >= target.min(st.log_end_offset) && st.unsynced.is_empty() {
                return Ok(st.recovery_point);
            }
            let upto = st.log_end_offset;
            let mut files = std::mem::take(&mut st.unsynced);
            let dir_dirty = std::mem::take(&mut st.dir_dirty);
            let seg = st.active();
            if let Some(f) = &mut seg.active {
                files.push(f.log.clone());
                // The transaction index follows its data to disk (recovery trusts it below the recovery point).
                if std::mem::take(&mut f.txn_index_dirty) {
                    files.extend(f.txn_index.clone());
                }
            }
            (files, upto, dir_dirty)
        };
        for f in &files {
            f.sync_data().map_err(|e| self.io_err(&self.dir(), e))?;
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        if dir_dirty {
            self.io
                .sync_dir(&self.dir())
                .map_err(|e| self.io_err(&self.dir(), e))?;
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        let mut st = self.state.lock();
        let durable = upto.min(st.log_end_offset);
        if durable > st.recovery_point {
            st.recovery_point = durable;
        }
        st.last_flush_ms = wall_clock_ms();
        let rp = st.recovery_point;
        // Checkpoint when the recovery point crossed into a later segment, bounding the next recovery scan.
        let seg_of = |o: i64| st.segments.range(..=o).next_back().map(|(b, _)| *b);
        let crossed = seg_of(rp) != seg_of(st.checkpointed_recovery_point);
        if crossed {
            st.checkpointed_recovery_point = rp;
            let seq = st.next_checkpoint_seq();
            drop(st);
            self.write_checkpoint(
                RECOVERY_POINT_CHECKPOINT,
                &encode_offset_checkpoint(rp),
                seq,
            )?;
        }
        Ok(rp)
    }

    /// Fsyncs everything appended so far; returns the durable offset (the new recovery point).
    pub fn flush(&self) -> Result<i64, StorageError> {
        self.flush_to(i64::MAX)
    }

    /// Flushes when `flush.ms` has elapsed since the last flush, or when rolled segments await their
    /// fsync (as Kafka flushes a segment when it rolls). Called periodically by the `LogManager`.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<(), StorageError> {
        let due = {
            let st = self.state.lock();
            if st.closed {
                return Ok(());
            }
            let by_time = self.config.read().flush_ms.is_some_and(|ms| {
                st.log_end_offset > st.recovery_point && now_ms - st.last_flush_ms >= ms as i64
            });
            by_time || !st.unsynced.is_empty()
        };
        if due {
            self.flush()?;
        }
        Ok(())
    }
}
