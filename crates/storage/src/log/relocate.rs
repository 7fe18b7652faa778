//! Moving a log into another log directory (AlterReplicaLogDirs, KIP-113), in two steps, as Kafka's future
//! replica and `ReplicaAlterLogDirsThread` do:
//!
//! 1. **Copy** ([`Log::copy_round`], repeated): the segments are copied into `<topic>-<partition>.<id>-future`
//!    in the target log directory without holding the log's lock for the I/O. Segment bytes below the log end
//!    offset never change except by truncation, so each round copies from file handles taken under the lock
//!    only what was not copied before: whole sealed segments (with their indexes, written from the entries the
//!    log holds) and the prefix of the active segment. A truncation meanwhile ([`State::rewrites`]) restarts the
//!    copy; segments that retention or DeleteRecords removed meanwhile are removed from the copy.
//! 2. **Swap** ([`Log::swap_into`]), under the flush slot, the state lock and the checkpoint lock, so no append,
//!    flush, truncation or checkpoint runs: the bytes appended since the last round, the active segment's
//!    indexes, the checkpoints and a producer-state snapshot at the log end offset, everything fsynced; then the
//!    ordered commit below, and the same `Log` switches its directory and re-opens its active segment there
//!    (callers holding the `Arc<Log>` never notice; readers holding old file handles keep reading them).
//!
//! Crash safety, the order of the commit: (a) write [`MOVE_MARKER_FILE`] into the complete, fsynced future
//! directory; (b) rename it to `<topic>-<partition>` in the target directory and fsync that directory; (c) rename
//! the old directory to `<topic>-<partition>.<id>-delete` and fsync its parent; (d) remove the marker. At open
//! (`LogManager::open`) a `-future` directory is deleted (a crash before (b): the original stays authoritative);
//! two live directories of one partition (a crash between (b) and (c)) keep the one holding the marker; a marker
//! left alone (a crash between (c) and (d)) is removed. Every point leaves exactly one complete log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::index::{encode_offset_entries, encode_time_entries};
use crate::io::{read_file, write_file_atomic, IoFile};
use crate::manager::delete_dir_name;
use crate::producer_state::snapshot_file_name;
use crate::segment::{segment_path, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX};
use crate::txn_index::encode_aborted_txns;
use crate::StorageError;

use super::{
    encode_offset_checkpoint, DirHealth, Log, LEADER_EPOCH_CHECKPOINT, LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
};

/// Suffix of a future log's directory (`<topic>-<partition>.<uniqueId>-future`, as Kafka).
pub const FUTURE_DIR_SUFFIX: &str = "-future";

/// Written into a moved log's directory before it takes the partition's name and removed once the old
/// directory is gone: at open it tells the moved copy from the original (see the module docs).
pub const MOVE_MARKER_FILE: &str = ".log-dir-move";

/// Bytes copied per read/write while copying a segment.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// The name of a future log directory for partition directory `name`.
pub fn future_dir_name(name: &str) -> String {
    format!(
        "{name}.{}{FUTURE_DIR_SUFFIX}",
        uuid::Uuid::new_v4().simple()
    )
}

/// Why a move step stopped.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The log was truncated during the copy: the copy must start over.
    #[error("the log was truncated during the copy")]
    Rewritten,
    /// The log was closed (deleted, or the broker is shutting down).
    #[error("the log was closed")]
    Closed,
    /// The move was cancelled (another target directory was requested, or shutdown).
    #[error("the move was cancelled")]
    Cancelled,
    /// The log is already in the target directory.
    #[error("the log is already in the target directory")]
    AlreadyThere,
    /// The log's own directory failed.
    #[error("source log directory: {0}")]
    Source(StorageError),
    /// The target log directory failed (it is taken offline unless the disk is full).
    #[error("target log directory: {0}")]
    Target(StorageError),
}

/// How far a copied segment got.
#[derive(Debug, Clone, Copy, Default)]
struct CopiedSegment {
    /// Bytes of its `.log` copied (whole batches).
    bytes: u64,
    /// Sealed, its indexes written and every file fsynced: nothing more to do.
    done: bool,
}

/// A copy of a log being built in another log directory (Kafka's future replica).
#[derive(Debug)]
pub struct FutureLog {
    dir: PathBuf,
    health: Arc<DirHealth>,
    segments: BTreeMap<i64, CopiedSegment>,
    rewrites: u64,
    log_end_offset: i64,
}

impl FutureLog {
    /// The future directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Offsets below this are copied.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }
    /// Bytes of segment data copied.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }
}

/// Hooks of a copy: cancellation, progress and throttling.
pub struct CopyControl<'a> {
    /// True when the copy should stop ([`MoveError::Cancelled`]).
    pub stop: &'a dyn Fn() -> bool,
    /// Called after each segment with the future log's end offset and size.
    pub progress: &'a dyn Fn(i64, u64),
    /// Called with the size of each chunk before it is copied outside the lock; may sleep to throttle.
    pub throttle: &'a dyn Fn(u64),
}

/// The encoded index files of a sealed segment: offset, time and transaction index (empty: no file).
type EncodedIndexes = (Vec<u8>, Vec<u8>, Vec<u8>);

/// One segment as the copy sees it: its data file and, once sealed, its encoded indexes.
struct SegmentSource {
    base: i64,
    size: u64,
    file: Arc<dyn IoFile>,
    indexes: Option<EncodedIndexes>,
}

fn target_err(health: &DirHealth, path: &Path, e: std::io::Error) -> MoveError {
    let err = StorageError::from_io(path, e);
    if !matches!(err, StorageError::DiskFull { .. }) {
        health.set_offline();
    }
    MoveError::Target(err)
}

impl Log {
    /// Starts a future log for this log in the log directory of `target`: an empty
    /// `<topic>-<partition>.<id>-future` directory there.
    pub fn begin_future(&self, target: Arc<DirHealth>) -> Result<FutureLog, MoveError> {
        if target.is_offline() {
            return Err(MoveError::Target(StorageError::Offline {
                dir: target.dir().to_path_buf(),
            }));
        }
        let dir = self.dir();
        if dir.parent() == Some(target.dir()) {
            return Err(MoveError::AlreadyThere);
        }
        let rewrites = {
            let st = self.state.lock();
            if st.closed {
                return Err(MoveError::Closed);
            }
            st.rewrites
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let future = target.dir().join(future_dir_name(&name));
        self.io
            .create_dir_all(&future)
            .map_err(|e| target_err(&target, &future, e))?;
        Ok(FutureLog {
            dir: future,
            health: target,
            segments: BTreeMap::new(),
            rewrites,
            log_end_offset: 0,
        })
    }

    /// Removes a future log's directory (a failed or cancelled move). Best effort.
    pub fn discard_future(&self, future: &FutureLog) {
        if let Err(e) = self.io.remove_dir_all(&future.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %future.dir.display(), error = %e, "cannot remove a future log directory");
            }
        }
    }

    /// Under the state lock: every segment's data file, size and (when sealed and not yet copied whole) its
    /// encoded indexes, and the log end offset they cover.
    fn segment_sources(
        &self,
        st: &super::State,
        future: &FutureLog,
    ) -> Result<(Vec<SegmentSource>, i64), MoveError> {
        if st.closed {
            return Err(MoveError::Closed);
        }
        self.check_usable(st).map_err(MoveError::Source)?;
        if st.rewrites != future.rewrites {
            return Err(MoveError::Rewritten);
        }
        let mut sources = Vec::with_capacity(st.segments.len());
        for seg in st.segments.values() {
            let copied = future
                .segments
                .get(&seg.base_offset)
                .copied()
                .unwrap_or_default();
            if copied.bytes > seg.size {
                // Only a truncation shrinks a segment, and it bumps `rewrites`: be safe anyway.
                return Err(MoveError::Rewritten);
            }
            let source = match &seg.active {
                Some(files) => SegmentSource {
                    base: seg.base_offset,
                    size: seg.size,
                    file: files.log.clone(),
                    indexes: None,
                },
                None if copied.done => continue,
                None => {
                    let loaded = self.loaded(seg).map_err(MoveError::Source)?;
                    SegmentSource {
                        base: seg.base_offset,
                        size: seg.size,
                        file: loaded.log.clone(),
                        indexes: Some((
                            encode_offset_entries(&loaded.offsets),
                            encode_time_entries(&loaded.times),
                            encode_aborted_txns(&loaded.aborted_txns),
                        )),
                    }
                }
            };
            sources.push(source);
        }
        Ok((sources, st.log_end_offset))
    }

    /// Brings `future` up to `sources`: removes copied segments the log no longer has, copies the bytes not yet
    /// copied, writes and fsyncs the indexes of sealed segments. Returns the bytes copied.
    fn apply_sources(
        &self,
        future: &mut FutureLog,
        sources: Vec<SegmentSource>,
        log_end_offset: i64,
        live: &dyn Fn(i64) -> bool,
        control: &CopyControl<'_>,
    ) -> Result<u64, MoveError> {
        let gone: Vec<i64> = future
            .segments
            .keys()
            .copied()
            .filter(|b| !live(*b))
            .collect();
        for base in gone {
            future.segments.remove(&base);
            for suffix in [
                LOG_SUFFIX,
                INDEX_SUFFIX,
                TIME_INDEX_SUFFIX,
                TXN_INDEX_SUFFIX,
            ] {
                let p = segment_path(&future.dir, base, suffix);
                if let Err(e) = self.io.remove_file(&p) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(target_err(&future.health, &p, e));
                    }
                }
            }
        }
        let mut copied_total = 0u64;
        let mut buf = Vec::with_capacity(COPY_CHUNK_BYTES);
        for source in sources {
            if (control.stop)() {
                return Err(MoveError::Cancelled);
            }
            let entry = future.segments.entry(source.base).or_default();
            let path = segment_path(&future.dir, source.base, LOG_SUFFIX);
            let dest = self
                .io
                .open(&path, true)
                .map_err(|e| target_err(&future.health, &path, e))?;
            let mut at = entry.bytes;
            while at < source.size {
                let len = ((source.size - at) as usize).min(COPY_CHUNK_BYTES);
                (control.throttle)(len as u64);
                buf.clear();
                source
                    .file
                    .read_at_into(&mut buf, len, at)
                    .map_err(|e| MoveError::Source(self.io_err(&self.dir(), e)))?;
                if buf.len() != len {
                    return Err(MoveError::Source(StorageError::Corrupt(format!(
                        "{}: segment {} ends at {} bytes, {} expected",
                        self.dir().display(),
                        source.base,
                        at + buf.len() as u64,
                        source.size
                    ))));
                }
                dest.write_all_at(&buf, at)
                    .map_err(|e| target_err(&future.health, &path, e))?;
                at += len as u64;
                copied_total += len as u64;
            }
            entry.bytes = source.size;
            if let Some((offsets, times, txns)) = source.indexes {
                // Sealed: its indexes, then fsync every file once; later rounds skip it.
                dest.sync_data()
                    .map_err(|e| target_err(&future.health, &path, e))?;
                let txn_index = (!txns.is_empty()).then_some((TXN_INDEX_SUFFIX, txns));
                for (suffix, bytes) in [(INDEX_SUFFIX, offsets), (TIME_INDEX_SUFFIX, times)]
                    .into_iter()
                    .chain(txn_index)
                {
                    let p = segment_path(&future.dir, source.base, suffix);
                    let f = self
                        .io
                        .open(&p, true)
                        .and_then(|f| {
                            f.set_len(0)?;
                            f.write_all_at(&bytes, 0)?;
                            f.sync_data()?;
                            Ok(f)
                        })
                        .map_err(|e| target_err(&future.health, &p, e))?;
                    drop(f);
                }
                entry.done = true;
            }
            (control.progress)(future.log_end_offset, future.size_bytes());
        }
        future.log_end_offset = log_end_offset;
        (control.progress)(future.log_end_offset, future.size_bytes());
        Ok(copied_total)
    }

    /// One copy round outside the lock (see the module docs): takes the segments' file handles under the state
    /// lock, then copies what is new since the last round. Returns the bytes copied; a small number means the
    /// future log has caught up and [`Log::swap_into`] will hold the lock only briefly.
    pub fn copy_round(
        &self,
        future: &mut FutureLog,
        control: &CopyControl<'_>,
    ) -> Result<u64, MoveError> {
        let (sources, leo, live) = {
            let st = self.state.lock();
            let (sources, leo) = self.segment_sources(&st, future)?;
            let live: std::collections::BTreeSet<i64> = st.segments.keys().copied().collect();
            (sources, leo, live)
        };
        self.apply_sources(future, sources, leo, &|b| live.contains(&b), control)
    }

    /// Completes the move (see the module docs): under the flush slot, the state lock and the checkpoint lock,
    /// copies the rest, commits in order and switches this log to the new directory. Returns the old directory,
    /// renamed for deletion (`None` if that rename failed: the marker then keeps the new copy authoritative at the
    /// next open, and the old directory is left in place).
    pub fn swap_into(
        &self,
        future: &mut FutureLog,
        control: &CopyControl<'_>,
    ) -> Result<Option<PathBuf>, MoveError> {
        let _flush = self.claim_flush();
        let mut st = self.state.lock();
        let mut written = self.checkpoints_written.lock();
        if (control.stop)() {
            return Err(MoveError::Cancelled);
        }
        let old_dir = self.dir();
        if old_dir.parent() == Some(future.health.dir()) {
            return Err(MoveError::AlreadyThere);
        }
        if future.health.is_offline() {
            return Err(MoveError::Target(StorageError::Offline {
                dir: future.health.dir().to_path_buf(),
            }));
        }
        let (sources, leo) = self.segment_sources(&st, future)?;
        let no_throttle = CopyControl {
            stop: control.stop,
            progress: control.progress,
            throttle: &|_| {},
        };
        let live: std::collections::BTreeSet<i64> = st.segments.keys().copied().collect();
        self.apply_sources(future, sources, leo, &|b| live.contains(&b), &no_throttle)?;
        let health = future.health.clone();
        // The active segment: its data file fsynced, its indexes from the entries in memory.
        let active = st.active_ref();
        let base = active.base_offset;
        if let Some(files) = &active.active {
            let path = segment_path(&future.dir, base, LOG_SUFFIX);
            self.io
                .open(&path, true)
                .and_then(|f| f.sync_data())
                .map_err(|e| target_err(&health, &path, e))?;
            let txn_index = (!files.aborted.is_empty())
                .then(|| (TXN_INDEX_SUFFIX, encode_aborted_txns(&files.aborted)));
            for (suffix, bytes) in [
                (INDEX_SUFFIX, encode_offset_entries(&files.builder.offsets)),
                (TIME_INDEX_SUFFIX, encode_time_entries(&files.builder.times)),
            ]
            .into_iter()
            .chain(txn_index)
            {
                let p = segment_path(&future.dir, base, suffix);
                self.io
                    .open(&p, true)
                    .and_then(|f| {
                        f.set_len(0)?;
                        f.write_all_at(&bytes, 0)?;
                        f.sync_data()
                    })
                    .map_err(|e| target_err(&health, &p, e))?;
            }
        }
        // Producer-state snapshots: the existing ones (they bound replay after a later truncation) and one at the
        // log end offset, so the moved log opens without replaying its producers.
        for offset in self.snapshot_offsets() {
            if offset >= leo {
                continue;
            }
            let name = snapshot_file_name(offset);
            if let Ok(bytes) = read_file(&*self.io, &old_dir.join(&name)) {
                let p = future.dir.join(&name);
                write_file_atomic(&*self.io, &p, &bytes).map_err(|e| target_err(&health, &p, e))?;
            }
        }
        let seq = st.next_checkpoint_seq();
        let checkpoints = [
            (snapshot_file_name(leo), st.producers.encode()),
            (LEADER_EPOCH_CHECKPOINT.to_string(), st.epochs.encode()),
            (
                LOG_START_OFFSET_CHECKPOINT.to_string(),
                encode_offset_checkpoint(st.log_start_offset),
            ),
            (
                RECOVERY_POINT_CHECKPOINT.to_string(),
                encode_offset_checkpoint(leo),
            ),
            // (a): last, so a directory holding the marker is complete.
            (MOVE_MARKER_FILE.to_string(), Vec::new()),
        ];
        for (name, bytes) in &checkpoints {
            let p = future.dir.join(name);
            write_file_atomic(&*self.io, &p, bytes).map_err(|e| target_err(&health, &p, e))?;
        }
        // (b) the commit point.
        let name = old_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let final_dir = health.dir().join(&name);
        if self.io.exists(&final_dir) {
            return Err(MoveError::Target(StorageError::InvalidArgument(format!(
                "{} already exists",
                final_dir.display()
            ))));
        }
        self.io
            .rename(&future.dir, &final_dir)
            .map_err(|e| target_err(&health, &final_dir, e))?;
        self.io
            .sync_dir(health.dir())
            .map_err(|e| target_err(&health, health.dir(), e))?;
        tracing::info!(from = %old_dir.display(), to = %final_dir.display(), log_end_offset = leo, "log moved to another log directory");
        // Switch this log over: from here on every path is computed in the new directory.
        *self.dir.write() = final_dir.clone();
        *self.health.write() = health.clone();
        for b in st.segments.keys() {
            self.cache.remove(&segment_path(&old_dir, *b, LOG_SUFFIX));
        }
        let (builder, aborted) = st
            .active_ref()
            .active
            .as_ref()
            .map(|f| (f.builder.clone(), f.aborted.clone()))
            .unwrap_or_default();
        // Opened before the old files are let go, so a failure leaves the segment map intact (the new
        // directory then goes offline through `io_err`; the data is complete on disk in both places).
        let reopened = self
            .open_active_files(base, builder, None, aborted)
            .map_err(MoveError::Target)?;
        st.active().active = Some(reopened);
        st.unsynced.clear();
        st.dir_dirty = false;
        st.pending_deletes.clear();
        st.recovery_point = leo;
        st.checkpointed_recovery_point = leo;
        for (name, _) in &checkpoints[1..4] {
            written.insert(name.clone(), seq);
        }
        drop(written);
        drop(st);
        // (c) retire the old directory, then (d) drop the marker.
        let doomed = old_dir.with_file_name(delete_dir_name(&name));
        let retired = self.io.rename(&old_dir, &doomed).and_then(|()| {
            old_dir
                .parent()
                .map_or(Ok(()), |parent| self.io.sync_dir(parent))
        });
        if let Err(e) = retired {
            tracing::warn!(dir = %old_dir.display(), error = %e, "cannot retire the old directory of a moved log; the next start-up removes it");
            return Ok(None);
        }
        let marker = final_dir.join(MOVE_MARKER_FILE);
        if let Err(e) = self
            .io
            .remove_file(&marker)
            .and_then(|()| self.io.sync_dir(&final_dir))
        {
            tracing::warn!(path = %marker.display(), error = %e, "cannot remove the move marker; the next start-up removes it");
        }
        Ok(Some(doomed))
    }
}
