//! One partition's log (Kafka's `UnifiedLog` + `LocalLog`): an ordered set of segments, the active one
//! last, with append, read, truncation, retention, flush (group commit) and recovery on open.
//!
//! Locking: all state sits behind one mutex held only for in-memory work and the append `pwrite`; reads
//! copy what they need under it and `pread` outside it; fsync runs outside it under a separate flush
//! mutex, so concurrent appenders waiting for durability share one fsync (group commit).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use sluice_protocol::batch::{self, BatchError, BatchHeader, Batches, RECORD_BATCH_OVERHEAD};

use crate::epoch::LeaderEpochCache;
use crate::index::{
    encode_offset_entries, encode_time_entries, lookup_position, lookup_time, parse_offset_index,
    parse_time_index, IndexBuilder, IndexedBatch, OffsetEntry, TimeEntry, OFFSET_ENTRY_BYTES,
    TIME_ENTRY_BYTES,
};
use crate::io::{
    read_file, read_full_at, replace_file_unsynced, write_file_atomic, Io, IoFile, RealIo,
};
use crate::producer_state::{
    idempotence_of, snapshot_file_name, ProducerState, DEFAULT_PRODUCER_ID_EXPIRATION_MS,
    SNAPSHOT_SUFFIX,
};
use crate::segment::{
    parse_base_offset, read_header_at, scan_segment, scan_segment_from, segment_path,
    LoadedSegment, ScanParams, ScanStart, SegmentCache, DELETED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
};
use crate::{AppendError, LogConfig, ReadError, StorageError, TimestampType};

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

/// Rolled-but-unsynced segment files (3 per segment) held before a roll syncs them itself.
const MAX_UNSYNCED_FILES: usize = 24;

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
}

impl FileReadResult {
    /// Total bytes of all slices.
    pub fn len_bytes(&self) -> u64 {
        self.slices.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// Where a read starts, decided under the state lock ([`Log::plan_read`]).
struct ReadPlan {
    /// `(log start, log end, high watermark)` at the time of the read.
    meta: (i64, i64, i64),
    /// `None` when nothing is readable.
    start: Option<ReadStart>,
}

struct ReadStart {
    file: Arc<dyn IoFile>,
    /// Read-only `std::fs::File` of the same segment, for [`Log::read_slices`] only.
    slice_file: Option<Arc<File>>,
    pos: u64,
    end_pos: u64,
    limit: i64,
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
    /// Idempotent producers seen in batches below the log end offset.
    producers: ProducerState,
    /// Orders checkpoint contents (see `Log::write_checkpoint`).
    checkpoint_seq: u64,
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
    dir: PathBuf,
    io: Arc<dyn Io>,
    cache: Arc<SegmentCache>,
    health: Arc<DirHealth>,
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
}

/// How long a flusher waits for concurrent appenders to join its fsync (PostgreSQL's `commit_delay`);
/// only applied when more than one appender was active since the last fsync.
const GROUP_COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(200);

/// The claimed flush slot (see `Log::flushing`); released, waking every waiter, on drop.
struct FlushSlot<'a>(&'a Log);

impl Drop for FlushSlot<'_> {
    fn drop(&mut self) {
        *self.0.flushing.lock() = false;
        self.0.flush_done.notify_all();
    }
}

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

/// Summary of a validated producer request.
struct Validated {
    batch_count: usize,
    record_count: u64,
    max_timestamp_ms: i64,
}

fn batch_error(e: BatchError) -> AppendError {
    match e {
        BatchError::UnsupportedMagic(m) => AppendError::UnsupportedMagic(m),
        BatchError::CountMismatch { .. } => AppendError::InvalidRecord(e.to_string()),
        other => AppendError::Corrupt(other.to_string()),
    }
}

/// Validates every batch without decoding records and, under LogAppendTime, rewrites max timestamps.
fn validate_batches(
    batches: &mut [u8],
    max_message_bytes: u64,
    timestamp_type: TimestampType,
    now_ms: i64,
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
        let rest = &batches[pos..];
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
        whole.validate().map_err(batch_error)?;
        if whole.is_control() {
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
            dir: dir.clone(),
            io: options.io,
            cache: options.cache,
            health,
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
                checkpoint_seq: 0,
            }),
            flushing: Mutex::new(false),
            flush_done: Condvar::new(),
            fsyncs: AtomicU64::new(0),
            appenders: AtomicU64::new(0),
            recent_concurrency: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            checkpoints_written: Mutex::new(std::collections::HashMap::new()),
        };
        log.load(options.high_watermark)?;
        Ok(log)
    }

    /// Maps an I/O error; anything but ENOSPC takes the log directory offline.
    fn io_err(&self, path: &Path, e: std::io::Error) -> StorageError {
        if self.deleted.load(Ordering::Acquire) {
            // The directory was renamed for deletion under a concurrent operation: not a disk fault.
            return StorageError::Closed {
                dir: self.dir.clone(),
            };
        }
        let err = StorageError::from_io(path, e);
        if !matches!(err, StorageError::DiskFull { .. }) {
            self.health.set_offline();
        }
        err
    }

    fn check_usable(&self, st: &State) -> Result<(), StorageError> {
        if self.health.is_offline() {
            return Err(StorageError::Offline {
                dir: self.health.dir().to_path_buf(),
            });
        }
        if st.closed {
            return Err(StorageError::Closed {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    fn read_checkpoint(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.dir.join(name);
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
        let path = self.dir.join(name);
        write_file_atomic(&*self.io, &path, data).map_err(|e| self.io_err(&path, e))?;
        self.fsyncs.fetch_add(2, Ordering::Relaxed);
        written.insert(name.to_string(), seq);
        Ok(())
    }

    /// Opens the three files of an active segment and writes its indexes in full.
    fn open_active_files(
        &self,
        base: i64,
        builder: IndexBuilder,
        truncate_log_to: Option<u64>,
    ) -> Result<ActiveFiles, StorageError> {
        let log_path = segment_path(&self.dir, base, LOG_SUFFIX);
        let index_path = segment_path(&self.dir, base, INDEX_SUFFIX);
        let time_path = segment_path(&self.dir, base, TIME_INDEX_SUFFIX);
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
        Ok(ActiveFiles {
            log,
            index,
            time_index,
            offsets_written: builder.offsets.len(),
            times_written: builder.times.len(),
            builder,
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
                .map_err(|e| self.io_err(&segment_path(&self.dir, base, INDEX_SUFFIX), e))?;
            files.offsets_written = files.builder.offsets.len();
        }
        if files.builder.times.len() > files.times_written {
            let bytes = encode_time_entries(&files.builder.times[files.times_written..]);
            let at = files.times_written as u64 * TIME_ENTRY_BYTES;
            files
                .time_index
                .write_all_at(&bytes, at)
                .map_err(|e| self.io_err(&segment_path(&self.dir, base, TIME_INDEX_SUFFIX), e))?;
            files.times_written = files.builder.times.len();
        }
        Ok(())
    }

    fn scan_params(
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
    fn load(&self, initial_hw: Option<i64>) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        self.io
            .create_dir_all(&dir)
            .map_err(|e| self.io_err(&dir, e))?;
        let names = self.io.list_dir(&dir).map_err(|e| self.io_err(&dir, e))?;
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
                .or_else(|| name.strip_suffix(TIME_INDEX_SUFFIX));
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
        if bases.is_empty() {
            let start = lso_ckpt.unwrap_or(0).max(0);
            let files = self.open_active_files(start, IndexBuilder::new(), Some(0))?;
            segments.insert(
                start,
                Segment {
                    base_offset: start,
                    size: 0,
                    next_offset: start,
                    max_timestamp_ms: -1,
                    offset_of_max_timestamp: -1,
                    rolling_timestamp_ms: None,
                    active: Some(files),
                },
            );
        } else {
            let recover_from = if clean {
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
                    let seg =
                        self.load_trusted_inactive(base, len, next_base.unwrap_or(base), &*file)?;
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
                let files = if make_active {
                    Some(self.open_active_files(
                        base,
                        index.clone(),
                        cut.then_some(outcome.valid_bytes),
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
                    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
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
        st.producers = self.rebuild_producer_state(&st, leo)?;
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
        let index_path = segment_path(&self.dir, base, INDEX_SUFFIX);
        let time_path = segment_path(&self.dir, base, TIME_INDEX_SUFFIX);
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

    fn write_index_files(&self, base: i64, index: &IndexBuilder) -> Result<(), StorageError> {
        for (suffix, bytes) in [
            (INDEX_SUFFIX, encode_offset_entries(&index.offsets)),
            (TIME_INDEX_SUFFIX, encode_time_entries(&index.times)),
        ] {
            let p = segment_path(&self.dir, base, suffix);
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
        let time_path = segment_path(&self.dir, base, TIME_INDEX_SUFFIX);
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
                tracing::warn!(segment = base, dir = %self.dir.display(), "rebuilding a missing or invalid time index");
                let path = segment_path(&self.dir, base, LOG_SUFFIX);
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
            active: None,
        })
    }

    /// The opened form of an inactive segment, through the shared cache; indexes failing their sanity
    /// check are rebuilt from the data.
    fn loaded(&self, seg: &Segment) -> Result<Arc<LoadedSegment>, StorageError> {
        let log_path = segment_path(&self.dir, seg.base_offset, LOG_SUFFIX);
        if let Some(l) = self.cache.get(&log_path) {
            return Ok(l);
        }
        let log = self
            .io
            .open(&log_path, false)
            .map_err(|e| self.io_err(&log_path, e))?;
        let max_rel = seg.next_offset - 1 - seg.base_offset;
        let index_path = segment_path(&self.dir, seg.base_offset, INDEX_SUFFIX);
        let time_path = segment_path(&self.dir, seg.base_offset, TIME_INDEX_SUFFIX);
        let offsets = read_file(&*self.io, &index_path)
            .ok()
            .and_then(|b| parse_offset_index(&b, seg.size, max_rel));
        let times = read_file(&*self.io, &time_path)
            .ok()
            .and_then(|b| parse_time_index(&b, max_rel));
        let loaded = match (offsets, times) {
            (Some(offsets), Some(times)) => LoadedSegment {
                log,
                offsets,
                times,
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
                    slice_file: OnceLock::new(),
                }
            }
        };
        let loaded = Arc::new(loaded);
        self.cache.insert(&log_path, loaded.clone());
        Ok(loaded)
    }

    /// Rolls a new active segment at the log end offset (no-op when the active segment is empty).
    fn roll_locked(&self, st: &mut State) -> Result<(), StorageError> {
        let leo = st.log_end_offset;
        let (active_base, active_size) = {
            let a = st.active_ref();
            (a.base_offset, a.size)
        };
        if active_size == 0 && active_base == leo {
            return Ok(());
        }
        let new_files = self.open_active_files(leo, IndexBuilder::new(), Some(0))?;
        // As Kafka at roll: a snapshot at the new segment's base bounds the producer-state replay at the
        // next open to the active segment. Not fsynced (a torn or lost snapshot fails its CRC or is
        // missing, and the open falls back to an older one), so a roll costs no extra fsync.
        // Optional, so a failure only costs replay work: the data writes report a failing disk.
        let snapshot = self.dir.join(snapshot_file_name(leo));
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
                ..
            } = files;
            st.unsynced.extend([log, index, time_index]);
            if let Err(e) = res {
                // The data is intact; a short index is still a valid sparse index and is rebuilt if needed.
                tracing::warn!(dir = %self.dir.display(), segment = base, error = %e, "cannot complete the index of a rolled segment");
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
                active: Some(new_files),
            },
        );
        tracing::debug!(dir = %self.dir.display(), base_offset = leo, "rolled new segment");
        if st.unsynced.len() > MAX_UNSYNCED_FILES {
            // Nobody ran the periodic flush (`flush_if_due`): sync rolled segments here rather than
            // holding their file handles without bound.
            for f in std::mem::take(&mut st.unsynced) {
                f.sync_data().map_err(|e| self.io_err(&self.dir, e))?;
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

    /// Appends producer batches as leader: validates each (magic, framing, CRC32C, record count, size)
    /// without decoding records, assigns offsets and `leader_epoch` in place (and LogAppendTime), writes
    /// them with one `pwrite`. All-or-nothing: on error nothing becomes readable.
    pub fn append_as_leader(
        &self,
        batches: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let _appender = AppenderGuard::enter(self);
        let config = self.config.read().clone();
        let v = validate_batches(
            batches,
            config.max_message_bytes,
            config.timestamp_type,
            now_ms,
        )?;
        let (info, flush_target) = {
            let mut st = self.state.lock();
            self.check_usable(&st)?;
            Self::check_producers(&st.producers, batches)?;
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
            Self::replay_producers(&mut st, batches);
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
    /// offset, and records each batch's partition leader epoch in the epoch cache.
    pub fn append_as_follower(&self, batches: &mut [u8]) -> Result<AppendInfo, AppendError> {
        let _appender = AppenderGuard::enter(self);
        let config = self.config.read().clone();
        let v = validate_batches(batches, u64::MAX, TimestampType::CreateTime, -1)?;
        let mut st = self.state.lock();
        self.check_usable(&st)?;
        let leo = st.log_end_offset;
        let mut expected = leo;
        let mut epochs = Vec::new();
        let mut last = leo - 1;
        for item in Batches::new(batches) {
            let (_, h) = item.map_err(batch_error)?;
            if h.base_offset() < expected {
                return Err(AppendError::InvalidRecord(format!(
                    "follower batch base offset {} is below the expected {expected}",
                    h.base_offset()
                )));
            }
            epochs.push((h.partition_leader_epoch(), h.base_offset()));
            expected = h.next_offset();
            last = h.last_offset();
        }
        let first_base = epochs.first().map(|e| e.1).unwrap_or(leo);
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
                let files = self.open_active_files(first_base, IndexBuilder::new(), Some(0))?;
                if let Some(seg) = st.segments.remove(&active_base) {
                    drop(seg);
                    let _ = self
                        .io
                        .remove_file(&segment_path(&self.dir, active_base, LOG_SUFFIX));
                    let _ =
                        self.io
                            .remove_file(&segment_path(&self.dir, active_base, INDEX_SUFFIX));
                    let _ = self.io.remove_file(&segment_path(
                        &self.dir,
                        active_base,
                        TIME_INDEX_SUFFIX,
                    ));
                    st.segments.insert(
                        first_base,
                        Segment {
                            base_offset: first_base,
                            size: 0,
                            next_offset: first_base,
                            max_timestamp_ms: -1,
                            offset_of_max_timestamp: -1,
                            rolling_timestamp_ms: None,
                            active: Some(files),
                        },
                    );
                }
            }
        }
        self.write_batches(&mut st, batches, config.index_interval_bytes)?;
        Self::replay_producers(&mut st, batches);
        let mut changed = false;
        for (e, o) in epochs {
            changed |= st.epochs.assign(e, o);
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
            max_timestamp_ms: v.max_timestamp_ms,
            log_append_time_ms: -1,
            record_count: v.record_count,
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
        let dir = self.dir.clone();
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
                self.health.set_offline();
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

    /// Waits until no flush runs and claims the slot, excluding flushes (used by truncation and close).
    fn claim_flush(&self) -> FlushSlot<'_> {
        let mut flushing = self.flushing.lock();
        while *flushing {
            self.flush_done.wait(&mut flushing);
        }
        *flushing = true;
        FlushSlot(self)
    }

    /// Position to start scanning segment `seg` for `offset`, and its data file.
    fn locate(&self, seg: &Segment, offset: i64) -> Result<(Arc<dyn IoFile>, u64), StorageError> {
        let rel = offset - seg.base_offset;
        match &seg.active {
            Some(files) => Ok((
                files.log.clone(),
                lookup_position(&files.builder.offsets, rel),
            )),
            None => {
                let l = self.loaded(seg)?;
                Ok((l.log.clone(), lookup_position(&l.offsets, rel)))
            }
        }
    }

    /// Opens (once per segment) the read-only file [`Log::read_slices`] hands out.
    fn slice_file(&self, cell: &OnceLock<Arc<File>>, base: i64) -> Result<Arc<File>, StorageError> {
        if let Some(file) = cell.get() {
            return Ok(file.clone());
        }
        let path = segment_path(&self.dir, base, LOG_SUFFIX);
        let file = Arc::new(File::open(&path).map_err(|e| self.io_err(&path, e))?);
        Ok(cell.get_or_init(|| file).clone())
    }

    /// Under the state lock: range checks and the segment and position a read of `offset` starts at.
    fn plan_read(
        &self,
        offset: i64,
        upper_bound: i64,
        want_slice_file: bool,
    ) -> Result<ReadPlan, ReadError> {
        let st = self.state.lock();
        self.check_usable(&st)?;
        let meta = (st.log_start_offset, st.log_end_offset, st.high_watermark);
        if offset < st.log_start_offset || offset > st.log_end_offset {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: st.log_start_offset,
                log_end_offset: st.log_end_offset,
            });
        }
        let limit = upper_bound.min(st.log_end_offset);
        let nothing = ReadPlan { meta, start: None };
        if offset >= limit {
            return Ok(nothing);
        }
        let Some(seg) = st
            .segments
            .range(..=offset)
            .next_back()
            .map(|(_, s)| s)
            .filter(|s| s.next_offset > offset)
            .or_else(|| {
                st.segments
                    .range(offset..)
                    .map(|(_, s)| s)
                    .find(|s| s.size > 0)
            })
        else {
            return Ok(nothing);
        };
        let rel = offset.max(seg.base_offset) - seg.base_offset;
        let (file, pos, slice_file) = match &seg.active {
            Some(files) => {
                let slice_file = if want_slice_file {
                    Some(self.slice_file(&files.slice_file, seg.base_offset)?)
                } else {
                    None
                };
                (
                    files.log.clone(),
                    lookup_position(&files.builder.offsets, rel),
                    slice_file,
                )
            }
            None => {
                let l = self.loaded(seg)?;
                let slice_file = if want_slice_file {
                    Some(self.slice_file(&l.slice_file, seg.base_offset)?)
                } else {
                    None
                };
                (l.log.clone(), lookup_position(&l.offsets, rel), slice_file)
            }
        };
        Ok(ReadPlan {
            meta,
            start: Some(ReadStart {
                file,
                slice_file,
                pos,
                end_pos: seg.size,
                limit,
            }),
        })
    }

    /// Skips batches that end before `offset` (at most an index interval's worth) and returns the position and
    /// size of the batch containing `offset`, or `None` when no batch below `limit` is there.
    fn first_batch(&self, start: &ReadStart, offset: i64) -> Result<Option<(u64, u64)>, ReadError> {
        let mut pos = start.pos;
        loop {
            let Some(h) =
                read_header_at(&*start.file, pos).map_err(|e| self.io_err(&self.dir, e))?
            else {
                return Ok(None);
            };
            if pos >= start.end_pos {
                return Ok(None);
            }
            let header = BatchHeader::new(&h)
                .map_err(|e| StorageError::Corrupt(format!("{}: {e}", self.dir.display())))?;
            if header.base_offset() >= start.limit {
                return Ok(None);
            }
            if header.last_offset() >= offset {
                return Ok(Some((pos, header.size() as u64)));
            }
            pos += header.size() as u64;
        }
    }

    /// Reads whole batches starting with the batch containing `offset`, up to `max_bytes` but at least
    /// one batch (KIP-74), and never a batch starting at or after `upper_bound` (high watermark or last
    /// stable offset). One `pread` into one buffer.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<ReadResult, ReadError> {
        let plan = self.plan_read(offset, upper_bound, false)?;
        let result = |data: Bytes| ReadResult {
            data,
            log_start_offset: plan.meta.0,
            log_end_offset: plan.meta.1,
            high_watermark: plan.meta.2,
        };
        let Some(start) = &plan.start else {
            return Ok(result(Bytes::new()));
        };
        let Some((pos, first_size)) = self.first_batch(start, offset)? else {
            return Ok(result(Bytes::new()));
        };
        let end_pos = start.end_pos;
        let want = (max_bytes as u64)
            .min(end_pos - pos)
            .max(first_size)
            .min(end_pos - pos);
        let mut buf = Vec::new();
        start
            .file
            .read_at_into(&mut buf, want as usize, pos)
            .map_err(|e| self.io_err(&self.dir, e))?;
        // Keep whole batches below the upper bound.
        let mut keep = 0usize;
        for (at, h) in Batches::new(&buf).map_while(Result::ok) {
            if h.base_offset() >= start.limit {
                break;
            }
            keep = at + h.size();
        }
        buf.truncate(keep);
        Ok(result(Bytes::from(buf)))
    }

    /// The same batches as [`Log::read`] with the same arguments (same offsets, KIP-74 and upper-bound rules),
    /// returned as ranges of the segment file instead of bytes, for `sendfile`: record bytes are not copied
    /// into user space. Batch boundaries are found by reading batch headers (61 bytes each) only.
    ///
    /// The ranges may outlive the segment's place in the log (retention, truncation); the file stays open. A
    /// truncation may leave a range reaching past the end of the file: a writer must check what it sends.
    pub fn read_slices(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<FileReadResult, ReadError> {
        let plan = self.plan_read(offset, upper_bound, true)?;
        let mut result = FileReadResult {
            slices: Vec::new(),
            log_start_offset: plan.meta.0,
            log_end_offset: plan.meta.1,
            high_watermark: plan.meta.2,
        };
        let Some(start) = &plan.start else {
            return Ok(result);
        };
        let Some(slice_file) = start.slice_file.clone() else {
            return Ok(result);
        };
        let Some((pos, first_size)) = self.first_batch(start, offset)? else {
            return Ok(result);
        };
        let end_pos = start.end_pos;
        let want = (max_bytes as u64)
            .min(end_pos - pos)
            .max(first_size)
            .min(end_pos - pos);
        // As `read` keeps whole batches of its buffer: walk headers while the whole batch lies within `want`.
        let mut at = 0u64;
        let mut keep = 0u64;
        while want - at >= RECORD_BATCH_OVERHEAD as u64 {
            let Some(h) =
                read_header_at(&*start.file, pos + at).map_err(|e| self.io_err(&self.dir, e))?
            else {
                break;
            };
            let Ok(header) = BatchHeader::new(&h) else {
                break;
            };
            let size = header.size() as u64;
            if size > want - at || header.base_offset() >= start.limit {
                break;
            }
            at += size;
            keep = at;
        }
        if keep > 0 {
            let len = u32::try_from(keep).map_err(|_| {
                StorageError::Corrupt(format!("{}: read of {keep} bytes", self.dir.display()))
            })?;
            result.slices.push(FileSlice {
                file: slice_file,
                position: pos,
                len,
            });
        }
        Ok(result)
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
            self.dir.display()
        );
        let hw = offset.min(st.log_end_offset);
        if hw > st.high_watermark {
            st.high_watermark = hw;
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
    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// ListOffsets by timestamp: the first batch (from the log start) whose max timestamp is at least
    /// `timestamp_ms`; the offset is that batch's base offset (records are not decoded).
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        let mut after_base = i64::MIN;
        loop {
            let (file, mut pos, end_pos, lso) = {
                let st = self.state.lock();
                self.check_usable(&st)?;
                let lso = st.log_start_offset;
                let Some(seg) = st.segments.values().find(|s| {
                    s.base_offset > after_base
                        && s.next_offset > lso
                        && s.size > 0
                        && s.max_timestamp_ms >= timestamp_ms
                }) else {
                    return Ok(None);
                };
                after_base = seg.base_offset;
                let min_rel = lso - seg.base_offset;
                let start = |offsets: &[OffsetEntry], times: &[TimeEntry]| {
                    let from_rel = lookup_time(times, timestamp_ms)
                        .map(|t| i64::from(t.relative_offset))
                        .unwrap_or(0)
                        .max(min_rel);
                    lookup_position(offsets, from_rel)
                };
                let (file, pos) = match &seg.active {
                    Some(f) => (f.log.clone(), start(&f.builder.offsets, &f.builder.times)),
                    None => {
                        let l = self.loaded(seg)?;
                        (l.log.clone(), start(&l.offsets, &l.times))
                    }
                };
                (file, pos, seg.size, lso)
            };
            while pos < end_pos {
                let Some(h) = read_header_at(&*file, pos).map_err(|e| self.io_err(&self.dir, e))?
                else {
                    break;
                };
                let h = BatchHeader::new(&h).map_err(|e| StorageError::Corrupt(e.to_string()))?;
                if h.max_timestamp() >= timestamp_ms && h.last_offset() >= lso {
                    let epoch = h.partition_leader_epoch();
                    let (ts, offset) = self
                        .first_record_at_or_after(&*file, pos, &h, timestamp_ms, lso)?
                        .unwrap_or((h.max_timestamp(), h.base_offset().max(lso)));
                    return Ok(Some(TimestampOffset {
                        timestamp_ms: ts,
                        offset,
                        leader_epoch: (epoch >= 0).then_some(epoch),
                    }));
                }
                pos += h.size() as u64;
            }
        }
    }

    /// Reads the whole batch at `pos` and returns `(timestamp, offset)` of its first record with a
    /// timestamp >= `min_timestamp_ms` and an offset >= `min_offset`, when its records are readable
    /// (uncompressed, CreateTime); `None` otherwise (the caller falls back to the batch).
    fn first_record_at_or_after(
        &self,
        file: &dyn IoFile,
        pos: u64,
        header: &BatchHeader<'_>,
        min_timestamp_ms: i64,
        min_offset: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        if header.is_log_append_time() || header.compression() != 0 {
            return Ok(None);
        }
        let mut buf = Vec::new();
        file.read_at_into(&mut buf, header.size(), pos)
            .map_err(|e| self.io_err(&self.dir, e))?;
        let base = header.base_offset();
        Ok(batch::record_timestamps(&buf).and_then(|mut records| {
            records
                .find(|&(delta, ts)| ts >= min_timestamp_ms && base + delta >= min_offset)
                .map(|(delta, ts)| (ts, base + delta))
        }))
    }

    /// KIP-734: the largest timestamp in the log and the offset of the first record holding it (the
    /// batch's first offset when its records are compressed or under LogAppendTime); `None` for an
    /// empty log.
    pub fn max_timestamp_offset(&self) -> Result<Option<TimestampOffset>, StorageError> {
        let (file, mut pos, end_pos, ts, batch_offset, lso) = {
            let st = self.state.lock();
            self.check_usable(&st)?;
            let lso = st.log_start_offset;
            let mut best: Option<&Segment> = None;
            for s in st
                .segments
                .values()
                .filter(|s| s.size > 0 && s.next_offset > lso)
            {
                if s.max_timestamp_ms >= 0
                    && best.is_none_or(|b| s.max_timestamp_ms > b.max_timestamp_ms)
                {
                    best = Some(s);
                }
            }
            let Some(seg) = best else { return Ok(None) };
            let batch_offset = seg.offset_of_max_timestamp.max(lso);
            let (file, pos) = self.locate(seg, batch_offset)?;
            (file, pos, seg.size, seg.max_timestamp_ms, batch_offset, lso)
        };
        let mut found = (ts, batch_offset);
        while pos < end_pos {
            let Some(h) = read_header_at(&*file, pos).map_err(|e| self.io_err(&self.dir, e))?
            else {
                break;
            };
            let h = BatchHeader::new(&h).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            if h.last_offset() >= batch_offset {
                if h.max_timestamp() == ts {
                    if let Some(record) = self.first_record_at_or_after(&*file, pos, &h, ts, lso)? {
                        found = record;
                    }
                }
                break;
            }
            pos += h.size() as u64;
        }
        let epoch = self.state.lock().epochs.epoch_for_offset(found.1);
        Ok(Some(TimestampOffset {
            timestamp_ms: found.0,
            offset: found.1,
            leader_epoch: epoch,
        }))
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

    /// Renames a segment's files to `.deleted` and schedules their removal.
    fn delete_segment(&self, st: &mut State, base: i64) -> Result<(), StorageError> {
        st.segments.remove(&base);
        let delay = self.config.read().file_delete_delay_ms as i64;
        self.cache
            .remove(&segment_path(&self.dir, base, LOG_SUFFIX));
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let path = segment_path(&self.dir, base, suffix);
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

    fn remove_due_files(&self, st: &mut State) {
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
            self.health.set_offline();
            return Err(e);
        }
        let leo = st.log_end_offset_of_active();
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset = leo, "truncated log");
        st.log_end_offset = leo;
        st.recovery_point = st.recovery_point.min(leo);
        st.high_watermark = st.high_watermark.min(leo);
        let lso_moved = leo < st.log_start_offset;
        st.log_start_offset = st.log_start_offset.min(leo);
        Self::debug_check_offsets(&st);
        st.epochs.truncate_from_end(leo);
        // As Kafka: reload from the latest snapshot at or below the cut and replay the rest.
        match self.rebuild_producer_state(&st, leo) {
            Ok(p) => st.producers = p,
            Err(e) => {
                self.health.set_offline();
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
    /// `offset`, making it the active segment.
    fn cut_tail(&self, st: &mut State, offset: i64) -> Result<(), StorageError> {
        let doomed: Vec<i64> = st.segments.range(offset + 1..).map(|(b, _)| *b).collect();
        for b in doomed {
            self.delete_segment(st, b)?;
        }
        st.unsynced.clear();
        let seg_base = st.active_ref().base_offset;
        let log_path = segment_path(&self.dir, seg_base, LOG_SUFFIX);
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
        let files =
            self.open_active_files(seg_base, outcome.index.clone(), Some(outcome.valid_bytes))?;
        let seg = st.active();
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
        let all: Vec<i64> = st.segments.keys().copied().collect();
        let restarted = all
            .into_iter()
            .try_for_each(|b| self.delete_segment(&mut st, b))
            .and_then(|()| self.open_active_files(offset, IndexBuilder::new(), Some(0)));
        let files = match restarted {
            Ok(files) => files,
            Err(e) => {
                // Segments are gone but no new one exists: never serve this log again.
                self.health.set_offline();
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
            tracing::debug!(dir = %self.dir.display(), expired, "expired idempotent producers");
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
            let by_time =
                config.retention_ms >= 0 && max_ts >= 0 && now_ms - max_ts > config.retention_ms;
            let by_size =
                config.retention_bytes >= 0 && total - size as i64 >= config.retention_bytes;
            if !(by_time || by_size) {
                break;
            }
            if count == 1 {
                self.roll_locked(&mut st)?;
            }
            tracing::info!(dir = %self.dir.display(), segment = base, by_time, by_size, "retention deleting segment");
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

    /// Makes everything below `target` durable (group commit: an appender that finds its offset already
    /// fsynced by another returns at once). Returns the recovery point.
    fn flush_to(&self, target: i64) -> Result<i64, StorageError> {
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
            if self.health.is_offline() {
                return Err(StorageError::Offline {
                    dir: self.health.dir().to_path_buf(),
                });
            }
            if st.recovery_point >= target.min(st.log_end_offset) && st.unsynced.is_empty() {
                return Ok(st.recovery_point);
            }
            let upto = st.log_end_offset;
            let mut files = std::mem::take(&mut st.unsynced);
            let dir_dirty = std::mem::take(&mut st.dir_dirty);
            let seg = st.active();
            if let Some(f) = &seg.active {
                files.push(f.log.clone());
            }
            (files, upto, dir_dirty)
        };
        for f in &files {
            f.sync_data().map_err(|e| self.io_err(&self.dir, e))?;
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        if dir_dirty {
            self.io
                .sync_dir(&self.dir)
                .map_err(|e| self.io_err(&self.dir, e))?;
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

    /// Checks every idempotent batch of an append against the producer state (in order, so two batches of
    /// one producer in one call must follow each other). A retry of an appended batch is refused with
    /// [`AppendError::DuplicateSequence`] carrying its original offsets; nothing is written either way.
    fn check_producers(producers: &ProducerState, batches: &[u8]) -> Result<(), AppendError> {
        let mut tentative: Option<ProducerState> = None;
        let mut next = producers.map_end_offset();
        for item in Batches::new(batches) {
            let (_, h) = item.map_err(batch_error)?;
            let Some((pid, epoch, first, last)) = idempotence_of(&h) else {
                continue;
            };
            let state = tentative.as_ref().unwrap_or(producers);
            if let Some(dup) = state.check(pid, epoch, first, last)? {
                return Err(AppendError::DuplicateSequence {
                    producer_id: pid,
                    base_offset: dup.base_offset,
                    last_offset: dup.last_offset,
                    max_timestamp_ms: dup.max_timestamp_ms,
                });
            }
            // Later batches of this call are checked against the state as if this one were appended.
            let t = tentative.get_or_insert_with(|| producers.clone());
            let count = i64::from(h.last_offset_delta()) + 1;
            t.update(
                pid,
                epoch,
                crate::producer_state::ProducerBatch {
                    first_sequence: first,
                    last_sequence: last,
                    base_offset: next,
                    last_offset: next + count - 1,
                    max_timestamp_ms: h.max_timestamp(),
                },
            );
            next += count;
        }
        Ok(())
    }

    /// Applies just-written batches (offsets assigned) to the producer state.
    fn replay_producers(st: &mut State, batches: &[u8]) {
        for (_, h) in Batches::new(batches).map_while(Result::ok) {
            st.producers.replay(&h);
        }
        let leo = st.log_end_offset;
        st.producers.advance_to(leo);
    }

    /// Offsets of the producer-state snapshots in the partition directory, ascending.
    fn snapshot_offsets(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .io
            .list_dir(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.strip_suffix(SNAPSHOT_SUFFIX).and_then(parse_base_offset))
            .collect();
        v.sort_unstable();
        v
    }

    /// Removes the snapshots whose offset matches `doomed` (best effort: a stale snapshot is ignored or
    /// replaced later).
    fn delete_snapshots(&self, doomed: impl Fn(i64) -> bool) {
        for o in self.snapshot_offsets().into_iter().filter(|o| doomed(*o)) {
            let path = self.dir.join(snapshot_file_name(o));
            if let Err(e) = self.io.remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove producer snapshot");
                }
            }
        }
    }

    /// Producer state of every batch below `upto` (Kafka's `loadProducerState`): the latest valid snapshot
    /// at or below `upto` (snapshots above it describe a cut tail and are removed), then the batch headers
    /// from there to `upto`. Without a snapshot the whole log is replayed. Records are never decoded.
    fn rebuild_producer_state(&self, st: &State, upto: i64) -> Result<ProducerState, StorageError> {
        self.delete_snapshots(|o| o > upto);
        let first_base = *st
            .segments
            .keys()
            .next()
            .expect("invariant: at least one segment");
        let mut state = None;
        for o in self.snapshot_offsets().into_iter().rev() {
            let path = self.dir.join(snapshot_file_name(o));
            match read_file(&*self.io, &path)
                .ok()
                .and_then(|b| ProducerState::decode(&b, o))
            {
                Some(s) => {
                    state = Some(s);
                    break;
                }
                None => {
                    tracing::warn!(path = %path.display(), "invalid producer snapshot; ignoring it");
                    let _ = self.io.remove_file(&path);
                }
            }
        }
        let mut state = state.unwrap_or_else(|| ProducerState::empty_at(first_base));
        let from = state.map_end_offset().max(first_base);
        for seg in st.segments.values() {
            if seg.next_offset <= from || seg.base_offset >= upto || seg.size == 0 {
                continue;
            }
            let (file, mut pos) = self.locate(seg, from.max(seg.base_offset))?;
            while pos < seg.size {
                let Some(h) = read_header_at(&*file, pos).map_err(|e| self.io_err(&self.dir, e))?
                else {
                    break;
                };
                let h = BatchHeader::new(&h)
                    .map_err(|e| StorageError::Corrupt(format!("{}: {e}", self.dir.display())))?;
                if h.base_offset() >= upto {
                    break;
                }
                if h.last_offset() >= from {
                    state.replay(&h);
                }
                pos += h.size() as u64;
            }
        }
        state.advance_to(upto);
        Ok(state)
    }

    /// The producer state (idempotent producers seen below the log end offset).
    pub fn producer_state(&self) -> ProducerState {
        self.state.lock().producers.clone()
    }

    /// Forgets producers whose last batch is older than `expiration_ms` (`producer.id.expiration.ms`);
    /// retention passes do this with the 1-day default. Returns how many were removed.
    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.state
            .lock()
            .producers
            .remove_expired(now_ms, expiration_ms)
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
        let dir = self.dir.clone();
        let active = st.active();
        let base = active.base_offset;
        if let Some(files) = active.active.as_mut() {
            files.builder.maybe_append_time(base);
            self.write_index_tail(base, files)?;
            for f in [&files.index, &files.time_index] {
                f.sync_data().map_err(|e| self.io_err(&dir, e))?;
            }
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
            .map(|b| segment_path(&self.dir, *b, LOG_SUFFIX))
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
