//! One partition's log (Kafka's `UnifiedLog` + `LocalLog`): an ordered set of segments, the active one
//! last, with append, read, truncation, retention, flush (group commit) and recovery on open.
//!
//! Locking: all state sits behind one mutex held only for in-memory work and the append `pwrite`; reads
//! copy what they need under it and `pread` outside it; fsync runs outside it under a separate flush
//! mutex, so concurrent appenders waiting for durability share one fsync (group commit).
//!
//! `impl Log` is split by concern: `load` (open and recovery), `append` (validation, append as leader
//! and follower, rolling), `read` (reads and timestamp lookups), `truncate` (truncation, DeleteRecords,
//! retention), `clean` (log compaction), `flush` (flush policy, group commit), `producers`
//! (idempotent and transactional producer state) and `txn` (transactions: last stable offset, transaction
//! indexes, aborted transactions). This file
//! holds the public types, the state, open and close, checkpoint and active-segment file helpers, and the
//! small accessors.

mod append;
mod clean;
mod flush;
mod load;
mod producers;
mod read;
mod relocate;
mod truncate;
mod txn;

pub use clean::{
    CleanOptions, CleanStats, CleanableState, CLEANED_SUFFIX, DELETE_HORIZON_FLAG, SWAP_SUFFIX,
    TXN_CLEANED_SUFFIX, TXN_SWAP_SUFFIX,
};
pub use relocate::{
    future_dir_name, CopyControl, FutureLog, MoveError, FUTURE_DIR_SUFFIX, MOVE_MARKER_FILE,
};

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use sluice_protocol::batch::RECORD_BATCH_OVERHEAD;

use crate::epoch::LeaderEpochCache;
use crate::index::{
    encode_offset_entries, encode_time_entries, IndexBuilder, OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES,
};
use crate::io::{read_file, read_full_at, write_file_atomic, Io, IoFile, RealIo};
use crate::producer_state::{snapshot_file_name, ProducerState};
use crate::segment::{segment_path, SegmentCache, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use crate::txn_index::AbortedTxn;
use crate::{LogConfig, StorageError};

/// Marker written by a clean close; its presence at open skips the recovery scan.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";
/// Checkpoint of the recovery point (everything below it is fsynced and valid).
pub const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
/// Checkpoint of the log start offset.
pub const LOG_START_OFFSET_CHECKPOINT: &str = "log-start-offset-checkpoint";
/// Checkpoint of the high watermarks of every partition in a log directory (Kafka's
/// `replication-offset-checkpoint`), written by [`crate::LogManager::checkpoint_high_watermarks`] in the
/// log directory. A file of this name inside a partition directory is the per-partition form older
/// versions wrote at clean close: read once at open when the caller gives no high watermark, then removed.
pub const HIGH_WATERMARK_CHECKPOINT: &str = "replication-offset-checkpoint";
/// Checkpoint of the leader-epoch cache.
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

/// Default number of inactive segments a standalone log keeps open.
pub const DEFAULT_OPEN_SEGMENTS: usize = 256;

/// What an append assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Largest batch max timestamp appended.
    pub max_timestamp_ms: i64,
    /// The append time under LogAppendTime, -1 under CreateTime.
    pub log_append_time_ms: i64,
    /// Number of records appended.
    pub record_count: u64,
    /// Log start offset after the append.
    pub log_start_offset: i64,
}

/// Who appends as leader (Kafka's `AppendOrigin`), which decides what a batch may be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A broker-side writer: the transaction coordinator's markers (WriteTxnMarkers), the group coordinator's
    /// transactional offset commits. Control batches (COMMIT/ABORT markers) and transactional batches without
    /// sequences are accepted; sequences, when a batch has them, are checked as for a client.
    #[default]
    Coordinator,
    /// A producer's ProduceRequest: control batches are refused, and a batch with a producer id must carry a
    /// sequence (Kafka's `LogValidator`), both with [`crate::AppendError::InvalidRecord`].
    Client,
}

/// Whole batches read from the log, in one buffer.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// Whole batches; empty when nothing is readable.
    pub data: Bytes,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
    /// Log end offset at the time of the read.
    pub log_end_offset: i64,
    /// High watermark at the time of the read.
    pub high_watermark: i64,
    /// Last stable offset at the time of the read ([`Log::last_stable_offset`]).
    pub last_stable_offset: i64,
}

/// A byte range of a segment file holding whole batches, for `sendfile` (see [`Log::read_slices`]).
#[derive(Clone, Debug)]
pub struct FileSlice {
    /// The segment's `.log` file, opened read-only. Holding it keeps the data readable when retention or
    /// deletion renames or removes the segment meanwhile.
    pub file: Arc<File>,
    /// Position of the first byte in the file.
    pub position: u64,
    /// Length of the range in bytes.
    pub len: u32,
}

/// Whole batches read from the log as file ranges instead of bytes ([`Log::read_slices`]).
#[derive(Clone, Debug)]
pub struct FileReadResult {
    /// Ranges in log order, none empty; empty when nothing is readable. A read covers one segment, as
    /// [`Log::read`] does, so this holds at most one range today.
    pub slices: Vec<FileSlice>,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
    /// Log end offset at the time of the read.
    pub log_end_offset: i64,
    /// High watermark at the time of the read.
    pub high_watermark: i64,
    /// Last stable offset at the time of the read ([`Log::last_stable_offset`]).
    pub last_stable_offset: i64,
}

impl FileReadResult {
    /// Total bytes of all slices.
    pub fn len_bytes(&self) -> u64 {
        self.slices.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// A (timestamp, offset) pair as ListOffsets returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampOffset {
    /// The timestamp found.
    pub timestamp_ms: i64,
    /// The offset found.
    pub offset: i64,
    /// The leader epoch of that offset, when known.
    pub leader_epoch: Option<i32>,
}

/// Health of one log directory, shared by every log in it. Any I/O error other than ENOSPC takes the
/// directory offline: every later operation on its logs fails with [`StorageError::Offline`].
#[derive(Debug)]
pub struct DirHealth {
    dir: PathBuf,
    offline: AtomicBool,
}

impl DirHealth {
    /// Healthy state for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirHealth {
            dir: dir.into(),
            offline: AtomicBool::new(false),
        }
    }
    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// True once an I/O error took the directory offline.
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }
    /// Takes the directory offline.
    pub fn set_offline(&self) {
        if !self.offline.swap(true, Ordering::AcqRel) {
            tracing::error!(dir = %self.dir.display(), "log directory is now offline after an I/O error");
        }
    }
}

/// How to open a log: the file-system seam, the shared segment cache and the directory health.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// File-system access.
    pub io: Arc<dyn Io>,
    /// Cache of opened inactive segments.
    pub cache: Arc<SegmentCache>,
    /// Health of the log directory; `None` creates one for the partition directory's parent.
    pub health: Option<Arc<DirHealth>>,
    /// The high watermark to start with (the `LogManager` passes its `replication-offset-checkpoint`
    /// entry), clamped into `[log start, log end]` after recovery. `None`: the log end offset after
    /// recovery, so a single node that had no checkpoint hides none of its data (see docs/storage.md).
    pub high_watermark: Option<i64>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            io: Arc::new(RealIo),
            cache: Arc::new(SegmentCache::new(DEFAULT_OPEN_SEGMENTS)),
            health: None,
            high_watermark: None,
        }
    }
}

/// Files of the active segment and its in-memory indexes.
#[derive(Debug)]
struct ActiveFiles {
    log: Arc<dyn IoFile>,
    index: Arc<dyn IoFile>,
    time_index: Arc<dyn IoFile>,
    builder: IndexBuilder,
    offsets_written: usize,
    times_written: usize,
    /// The `.txnindex` file, opened (created) at the segment's first abort.
    txn_index: Option<Arc<dyn IoFile>>,
    /// Every entry of the transaction index, all written to `txn_index`.
    aborted: Vec<AbortedTxn>,
    /// Entries were written to `txn_index` since its last fsync.
    txn_index_dirty: bool,
    /// The `.log` file opened read-only for [`Log::read_slices`], on first use.
    slice_file: OnceLock<Arc<File>>,
}

#[derive(Debug)]
struct Segment {
    base_offset: i64,
    /// Bytes of whole batches; readers never see past this.
    size: u64,
    next_offset: i64,
    max_timestamp_ms: i64,
    offset_of_max_timestamp: i64,
    rolling_timestamp_ms: Option<i64>,
    /// The segment's `.txnindex` holds entries (readers of aborted transactions skip segments without).
    has_txn_index: bool,
    active: Option<ActiveFiles>,
}

#[derive(Debug)]
struct State {
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
    recovery_point: i64,
    checkpointed_recovery_point: i64,
    epochs: LeaderEpochCache,
    last_flush_ms: i64,
    /// Files of rolled segments not yet fsynced, and whether the directory needs an fsync.
    unsynced: Vec<Arc<dyn IoFile>>,
    dir_dirty: bool,
    pending_deletes: Vec<(PathBuf, i64)>,
    closed: bool,
    /// Idempotent and transactional producers seen in batches below the log end offset.
    producers: ProducerState,
    /// Completed transactions whose marker may not be replicated yet, first offset -> marker offset: they keep
    /// the last stable offset at their first offset until the high watermark passes the marker (Kafka's
    /// `unreplicatedTxns`).
    unreplicated_txns: BTreeMap<i64, i64>,
    /// Orders checkpoint contents (see `Log::write_checkpoint`).
    checkpoint_seq: u64,
    /// Counts truncations, which rewrite bytes below the old log end offset: a log-directory move copying
    /// segments outside the lock starts over when it changed (`relocate.rs`).
    rewrites: u64,
}

impl State {
    /// A number ordering checkpoint contents encoded under the state lock.
    fn next_checkpoint_seq(&mut self) -> u64 {
        self.checkpoint_seq += 1;
        self.checkpoint_seq
    }
    fn active(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("invariant: a log always has an active segment")
    }
    fn log_end_offset_of_active(&self) -> i64 {
        self.active_ref().next_offset
    }
    fn active_ref(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("invariant: a log always has an active segment")
    }
}

/// One partition's log. `Send + Sync`; every method takes `&self`.
#[derive(Debug)]
pub struct Log {
    /// The partition directory. Changes only when a log-directory move swaps the log into another log
    /// directory (`relocate.rs`), under the flush slot and the state lock; paths are always computed from it
    /// under the state lock or the checkpoint lock, so none points into a directory renamed away.
    dir: RwLock<PathBuf>,
    io: Arc<dyn Io>,
    cache: Arc<SegmentCache>,
    /// Health of the log directory holding `dir`; swapped with it.
    health: RwLock<Arc<DirHealth>>,
    config: RwLock<LogConfig>,
    state: Mutex<State>,
    /// True while one thread fsyncs (or truncates); others wait on `flush_done`.
    flushing: Mutex<bool>,
    flush_done: Condvar,
    fsyncs: AtomicU64,
    /// Appenders currently inside an append call, and the most seen at once since the last fsync
    /// (drives the group-commit delay).
    appenders: AtomicU64,
    recent_concurrency: AtomicU64,
    /// Set once the log is being deleted: a late I/O error from its vanished directory is not a disk fault.
    deleted: AtomicBool,
    /// Sequence of the last content written per checkpoint file; its mutex serializes checkpoint writes.
    checkpoints_written: Mutex<std::collections::HashMap<String, u64>>,
    /// Serializes cleaning passes (`clean.rs`).
    clean_lock: Mutex<()>,
    /// Where the cleaner's dirty part starts (-1: the log start offset); `cleaner-offset-checkpoint`.
    first_dirty_offset: AtomicI64,
    /// Earliest delete horizon of a tombstone the last pass kept (`i64::MAX`: none).
    next_delete_horizon_ms: AtomicI64,
    /// When the last cleaning pass ended (-1: never).
    last_clean_ms: AtomicI64,
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_offset_checkpoint(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" || lines.next()?.trim() != "1" {
        return None;
    }
    lines.next()?.trim().parse().ok()
}

fn encode_offset_checkpoint(offset: i64) -> Vec<u8> {
    format!("0\n1\n{offset}\n").into_bytes()
}

impl Log {
    /// Opens (or creates) the log in `dir` with the real file system, recovering if the last shutdown
    /// was unclean.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Log, StorageError> {
        Log::open_with(dir, config, LogOptions::default())
    }

    /// Opens with an explicit file-system seam, segment cache and directory health.
    pub fn open_with(
        dir: impl Into<PathBuf>,
        config: LogConfig,
        options: LogOptions,
    ) -> Result<Log, StorageError> {
        let dir = dir.into();
        let health = options.health.clone().unwrap_or_else(|| {
            Arc::new(DirHealth::new(
                dir.parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| dir.clone()),
            ))
        });
        if health.is_offline() {
            return Err(StorageError::Offline {
                dir: health.dir().to_path_buf(),
            });
        }
        let log = Log {
            dir: RwLock::new(dir.clone()),
            io: options.io,
            cache: options.cache,
            health: RwLock::new(health),
            config: RwLock::new(config),
            state: Mutex::new(State {
                segments: BTreeMap::new(),
                log_start_offset: 0,
                log_end_offset: 0,
                high_watermark: 0,
                recovery_point: 0,
                checkpointed_recovery_point: -1,
                epochs: LeaderEpochCache::default(),
                last_flush_ms: wall_clock_ms(),
                unsynced: Vec::new(),
                dir_dirty: false,
                pending_deletes: Vec::new(),
                closed: false,
                producers: ProducerState::default(),
                unreplicated_txns: BTreeMap::new(),
                checkpoint_seq: 0,
                rewrites: 0,
            }),
            flushing: Mutex::new(false),
            flush_done: Condvar::new(),
            fsyncs: AtomicU64::new(0),
            appenders: AtomicU64::new(0),
            recent_concurrency: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            checkpoints_written: Mutex::new(std::collections::HashMap::new()),
            clean_lock: Mutex::new(()),
            first_dirty_offset: AtomicI64::new(-1),
            next_delete_horizon_ms: AtomicI64::new(i64::MAX),
            last_clean_ms: AtomicI64::new(-1),
        };
        log.load(options.high_watermark)?;
        Ok(log)
    }

    /// Maps an I/O error; anything but ENOSPC takes the log directory offline.
    fn io_err(&self, path: &Path, e: std::io::Error) -> StorageError {
        if self.deleted.load(Ordering::Acquire) {
            // The directory was renamed for deletion under a concurrent operation: not a disk fault.
            return StorageError::Closed { dir: self.dir() };
        }
        let err = StorageError::from_io(path, e);
        if !matches!(err, StorageError::DiskFull { .. }) {
            self.health().set_offline();
        }
        err
    }

    fn check_usable(&self, st: &State) -> Result<(), StorageError> {
        let health = self.health.read();
        if health.is_offline() {
            return Err(StorageError::Offline {
                dir: health.dir().to_path_buf(),
            });
        }
        drop(health);
        if st.closed {
            return Err(StorageError::Closed { dir: self.dir() });
        }
        Ok(())
    }

    fn read_checkpoint(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.dir().join(name);
        if !self.io.exists(&path) {
            return None;
        }
        match read_file(&*self.io, &path) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read checkpoint; ignoring it");
                None
            }
        }
    }

    /// Writes checkpoint `name` atomically. `seq` comes from [`State::next_checkpoint_seq`], taken under the
    /// state lock when `data` was encoded: writes are serialized and one older than the last written for the
    /// same file is skipped, so a slower writer never replaces newer content with stale content.
    fn write_checkpoint(&self, name: &str, data: &[u8], seq: u64) -> Result<(), StorageError> {
        let mut written = self.checkpoints_written.lock();
        if written.get(name).is_some_and(|last| *last > seq) {
            return Ok(());
        }
        let path = self.dir().join(name);
        write_file_atomic(&*self.io, &path, data).map_err(|e| self.io_err(&path, e))?;
        self.fsyncs.fetch_add(2, Ordering::Relaxed);
        written.insert(name.to_string(), seq);
        Ok(())
    }

    /// Opens the files of an active segment and writes its indexes in full (the transaction index from
    /// `aborted`: created when it has entries, removed when it has none).
    fn open_active_files(
        &self,
        base: i64,
        builder: IndexBuilder,
        truncate_log_to: Option<u64>,
        aborted: Vec<AbortedTxn>,
    ) -> Result<ActiveFiles, StorageError> {
        let log_path = segment_path(&self.dir(), base, LOG_SUFFIX);
        let index_path = segment_path(&self.dir(), base, INDEX_SUFFIX);
        let time_path = segment_path(&self.dir(), base, TIME_INDEX_SUFFIX);
        let log = self
            .io
            .open(&log_path, true)
            .map_err(|e| self.io_err(&log_path, e))?;
        if let Some(len) = truncate_log_to {
            log.set_len(len).map_err(|e| self.io_err(&log_path, e))?;
        }
        let index = self
            .io
            .open(&index_path, true)
            .map_err(|e| self.io_err(&index_path, e))?;
        let time_index = self
            .io
            .open(&time_path, true)
            .map_err(|e| self.io_err(&time_path, e))?;
        let offsets = encode_offset_entries(&builder.offsets);
        index
            .set_len(0)
            .and_then(|_| index.write_all_at(&offsets, 0))
            .map_err(|e| self.io_err(&index_path, e))?;
        let times = encode_time_entries(&builder.times);
        time_index
            .set_len(0)
            .and_then(|_| time_index.write_all_at(&times, 0))
            .map_err(|e| self.io_err(&time_path, e))?;
        let txn_index = self.write_txn_index(base, &aborted)?;
        Ok(ActiveFiles {
            log,
            index,
            time_index,
            offsets_written: builder.offsets.len(),
            times_written: builder.times.len(),
            builder,
            // Rewritten, not yet fsynced: it follows the data to disk at the next flush, roll or close.
            txn_index_dirty: txn_index.is_some(),
            txn_index,
            aborted,
            slice_file: OnceLock::new(),
        })
    }

    /// Writes index entries appended since the last write.
    fn write_index_tail(&self, base: i64, files: &mut ActiveFiles) -> Result<(), StorageError> {
        if files.builder.offsets.len() > files.offsets_written {
            let bytes = encode_offset_entries(&files.builder.offsets[files.offsets_written..]);
            let at = files.offsets_written as u64 * OFFSET_ENTRY_BYTES;
            files
                .index
                .write_all_at(&bytes, at)
                .map_err(|e| self.io_err(&segment_path(&self.dir(), base, INDEX_SUFFIX), e))?;
            files.offsets_written = files.builder.offsets.len();
        }
        if files.builder.times.len() > files.times_written {
            let bytes = encode_time_entries(&files.builder.times[files.times_written..]);
            let at = files.times_written as u64 * TIME_ENTRY_BYTES;
            files
                .time_index
                .write_all_at(&bytes, at)
                .map_err(|e| self.io_err(&segment_path(&self.dir(), base, TIME_INDEX_SUFFIX), e))?;
            files.times_written = files.builder.times.len();
        }
        Ok(())
    }

    /// The log start offset (first readable offset).
    pub fn log_start_offset(&self) -> i64 {
        self.state.lock().log_start_offset
    }

    /// The log end offset (offset the next record gets).
    pub fn log_end_offset(&self) -> i64 {
        self.state.lock().log_end_offset
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> i64 {
        self.state.lock().high_watermark
    }

    /// Moves the high watermark forward to `offset` (the leader's path, Kafka's
    /// `maybeIncrementHighWatermark`). An `offset` above the log end offset is a caller bug: asserted in
    /// debug builds, clamped in release builds so uncommitted offsets are never exposed beyond the log.
    /// An `offset` below the current high watermark is ignored, so concurrent appenders that each advance
    /// it to the log end offset they saw may finish in any order. Truncation lowers it on its own path;
    /// a follower adopting its leader's value uses [`Log::update_high_watermark_as_follower`].
    pub fn set_high_watermark(&self, offset: i64) {
        let mut st = self.state.lock();
        debug_assert!(
            offset <= st.log_end_offset,
            "high watermark {offset} above the log end offset {} in {}",
            st.log_end_offset,
            self.dir().display()
        );
        let hw = offset.min(st.log_end_offset);
        if hw > st.high_watermark {
            st.high_watermark = hw;
            Self::prune_unreplicated_txns(&mut st);
        }
        Self::debug_check_offsets(&st);
    }

    /// Sets the high watermark to the leader's `leader_high_watermark` bounded by this log (Kafka's
    /// `UnifiedLog.maybeUpdateHighWatermark` on a follower): clamped into `[log start, log end]`, since a
    /// follower's log may lag its leader's high watermark. Unlike [`Log::set_high_watermark`] this may move
    /// it down, as Kafka's follower does when a new leader's high watermark is behind the old one's.
    /// Returns the new high watermark.
    pub fn update_high_watermark_as_follower(&self, leader_high_watermark: i64) -> i64 {
        let mut st = self.state.lock();
        st.high_watermark = leader_high_watermark.clamp(st.log_start_offset, st.log_end_offset);
        Self::prune_unreplicated_txns(&mut st);
        Self::debug_check_offsets(&st);
        st.high_watermark
    }

    /// Debug builds: `log start <= high watermark <= log end`, the invariant every state change keeps.
    fn debug_check_offsets(st: &State) {
        debug_assert!(
            st.log_start_offset <= st.high_watermark && st.high_watermark <= st.log_end_offset,
            "offsets out of order: log start {}, high watermark {}, log end {}",
            st.log_start_offset,
            st.high_watermark,
            st.log_end_offset
        );
    }

    /// Offset below which everything is fsynced (the durable offset).
    pub fn recovery_point(&self) -> i64 {
        self.state.lock().recovery_point
    }

    /// Number of fsyncs this log issued (data, directory and checkpoints).
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// The partition directory (a copy: a log-directory move may change it).
    pub fn dir(&self) -> PathBuf {
        self.dir.read().clone()
    }

    /// The health of the log directory currently holding this log.
    pub fn health(&self) -> Arc<DirHealth> {
        self.health.read().clone()
    }

    /// The latest leader epoch in the epoch cache.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.state.lock().epochs.latest_epoch()
    }

    /// OffsetForLeaderEpoch: (largest epoch <= `epoch`, its end offset); `None` when unknown.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let st = self.state.lock();
        st.epochs.end_offset_for(epoch, st.log_end_offset)
    }

    /// The leader-epoch cache entries (epoch, start offset).
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.state.lock().epochs.entries().to_vec()
    }

    /// A copy of the configuration.
    pub fn config(&self) -> LogConfig {
        self.config.read().clone()
    }

    /// Replaces the configuration (applies from the next append, roll, flush or retention pass).
    pub fn update_config(&self, config: LogConfig) {
        *self.config.write() = config;
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.state.lock().segments.values().map(|s| s.size).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.state.lock().segments.len()
    }

    /// Clean close: fsyncs data and indexes, writes every checkpoint, then the clean-shutdown marker. Later
    /// operations fail with [`StorageError::Closed`]. The high watermark is not written here: the
    /// `LogManager` keeps it, for every log of a directory, in the directory's checkpoint.
    pub fn close(&self) -> Result<(), StorageError> {
        {
            let st = self.state.lock();
            if st.closed {
                return Ok(());
            }
        }
        self.flush()?;
        // Holding the flush slot until the marker is written excludes a concurrent delete
        // (`close_for_delete` claims it too), so the directory is never renamed under this close.
        let _flush = self.claim_flush();
        let mut st = self.state.lock();
        if st.closed {
            return Ok(());
        }
        self.check_usable(&st)?;
        let dir = self.dir();
        let active = st.active();
        let base = active.base_offset;
        if let Some(files) = active.active.as_mut() {
            files.builder.maybe_append_time(base);
            self.write_index_tail(base, files)?;
            for f in [&files.index, &files.time_index]
                .into_iter()
                .chain(files.txn_index.as_ref())
            {
                f.sync_data().map_err(|e| self.io_err(&dir, e))?;
            }
            files.txn_index_dirty = false;
        }
        st.closed = true;
        self.remove_due_files(&mut st);
        let leo = st.log_end_offset;
        let (lso, epochs) = (st.log_start_offset, st.epochs.encode());
        let producers = st.producers.encode();
        let seq = st.next_checkpoint_seq();
        drop(st);
        self.write_checkpoint(&snapshot_file_name(leo), &producers, seq)?;
        self.write_checkpoint(LEADER_EPOCH_CHECKPOINT, &epochs, seq)?;
        self.write_checkpoint(
            LOG_START_OFFSET_CHECKPOINT,
            &encode_offset_checkpoint(lso),
            seq,
        )?;
        self.write_checkpoint(
            RECOVERY_POINT_CHECKPOINT,
            &encode_offset_checkpoint(leo),
            seq,
        )?;
        self.write_checkpoint(CLEAN_SHUTDOWN_FILE, b"", seq)?;
        Ok(())
    }

    /// Marks the log closed without writing anything (used before its directory is deleted). Waits for a
    /// running flush, truncation or clean close to finish, so none of them writes into a renamed directory.
    pub(crate) fn close_for_delete(&self) {
        let _flush = self.claim_flush();
        self.deleted.store(true, Ordering::Release);
        self.state.lock().closed = true;
        let paths: Vec<PathBuf> = self
            .state
            .lock()
            .segments
            .keys()
            .map(|b| segment_path(&self.dir(), *b, LOG_SUFFIX))
            .collect();
        for p in paths {
            self.cache.remove(&p);
        }
    }
}

/// Reads a whole segment's batches from `position` (used by tests and tools).
pub fn read_segment_bytes(
    file: &dyn IoFile,
    position: u64,
    len: usize,
) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = read_full_at(file, &mut buf, position)?;
    buf.truncate(n);
    Ok(buf)
}

const _: () = assert!(RECORD_BATCH_OVERHEAD == 61);

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn log_and_manager_are_send_and_sync() {
        assert_send_sync::<Log>();
        assert_send_sync::<crate::LogManager>();
    }

    #[test]
    fn offset_checkpoints_round_trip_and_reject_garbage() {
        assert_eq!(
            parse_offset_checkpoint(&encode_offset_checkpoint(42)),
            Some(42)
        );
        assert_eq!(parse_offset_checkpoint(b"0\n2\n42\n"), None);
        assert_eq!(parse_offset_checkpoint(b"1\n1\n42\n"), None);
        assert_eq!(parse_offset_checkpoint(b"0\n1\n"), None);
        assert_eq!(parse_offset_checkpoint(b"\xff"), None);
    }
}
