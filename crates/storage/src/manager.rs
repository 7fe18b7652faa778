//! `LogManager`: every partition log under `log.dirs`: parallel open (with recovery) at start-up, create
//! and delete, periodic retention, `flush.ms` and high-watermark checkpoint passes, clean shutdown, and
//! offline log directories.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::io::{read_file, write_file_atomic, Io, RealIo};
use crate::log::{DirHealth, LogOptions, FUTURE_DIR_SUFFIX, HIGH_WATERMARK_CHECKPOINT};
use crate::segment::SegmentCache;
use crate::{Log, LogConfig, StorageError};

mod cleaner;
mod moves;

pub use cleaner::{CleanerStatus, CLEANER_OFFSET_CHECKPOINT};

pub use moves::{AlterLogDirError, AlterLogDirOutcome, LogDirInfo, ReplicaInfo};

/// Suffix of a partition directory renamed for deletion (`<topic>-<partition>.<uniqueId>-delete`, as Kafka).
pub const DELETE_DIR_SUFFIX: &str = "-delete";

/// The lock file in every log directory (Kafka's `LogManager.LockFileName`).
pub const LOCK_FILE: &str = ".lock";

/// Takes an exclusive, non-blocking `flock` on `<dir>/.lock` (Kafka's `LogManager.lockLogDirs`): two
/// brokers writing one log directory would corrupt it. The lock belongs to the open file description, so
/// it is released when the returned file is closed, including by a crash.
fn lock_log_dir(dir: &Path) -> Result<File, StorageError> {
    use rustix::fs::{flock, FlockOperation};
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::from_io(&path, e))?;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(e) if e == rustix::io::Errno::INTR => continue,
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(StorageError::Locked {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(StorageError::from_io(&path, e.into())),
        }
    }
}

/// Options of a [`LogManager`] beyond the contract's `open`.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// File-system access.
    pub io: Arc<dyn Io>,
    /// At most this many inactive segments (file handle + indexes) are kept open across all logs.
    pub max_open_inactive_segments: usize,
    /// Threads used to open logs at start-up.
    pub recovery_threads: usize,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8);
        ManagerOptions {
            io: Arc::new(RealIo),
            max_open_inactive_segments: 1024,
            recovery_threads: threads,
        }
    }
}

/// Parses a partition directory name `<topic>-<partition>`.
pub fn parse_partition_dir(name: &str) -> Option<(String, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    if topic.is_empty() || partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic.to_string(), partition.parse().ok()?))
}

/// The name a partition directory `name` is renamed to for deletion: `<name>.<uniqueId>-delete`.
pub fn delete_dir_name(name: &str) -> String {
    format!(
        "{name}.{}{DELETE_DIR_SUFFIX}",
        uuid::Uuid::new_v4().simple()
    )
}

/// Encodes a log directory's high-watermark checkpoint in Kafka's format (`OffsetCheckpointFile`):
/// version `0`, the entry count, then one `topic partition offset` line per entry.
fn encode_high_watermarks(entries: &[((String, i32), i64)]) -> Vec<u8> {
    let mut out = format!("0\n{}\n", entries.len());
    for ((topic, partition), offset) in entries {
        out.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    out.into_bytes()
}

/// Parses [`encode_high_watermarks`]'s format, as Kafka's `CheckpointFile` reads it: version `0`, a count
/// equal to the number of entry lines, each `topic partition offset` (whitespace-separated, partition and
/// offset non-negative). Any deviation makes the whole file invalid; the error says why.
fn parse_high_watermarks(bytes: &[u8]) -> Result<HashMap<(String, i32), i64>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    match lines.next().map(str::trim) {
        Some("0") => {}
        Some(v) => return Err(format!("unsupported version {v:?}")),
        None => return Err("empty file".into()),
    }
    let count: usize = lines
        .next()
        .and_then(|c| c.trim().parse().ok())
        .ok_or_else(|| "missing or invalid entry count".to_string())?;
    let mut entries = HashMap::new();
    let mut found = 0usize;
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [topic, partition, offset] = fields[..] else {
            return Err(format!("malformed line {line:?}"));
        };
        let partition: i32 = partition
            .parse()
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(|| format!("malformed line {line:?}"))?;
        let offset: i64 = offset
            .parse()
            .ok()
            .filter(|o| *o >= 0)
            .ok_or_else(|| format!("malformed line {line:?}"))?;
        entries.insert((topic.to_string(), partition), offset);
        found += 1;
    }
    if found != count {
        return Err(format!("expected {count} entries, found {found}"));
    }
    Ok(entries)
}

/// Reads the high-watermark checkpoint of log directory `dir`. Missing: empty. Unreadable or malformed:
/// a warning and empty (every log of the directory then opens with the no-checkpoint default).
fn read_high_watermarks(io: &dyn Io, dir: &Path) -> HashMap<(String, i32), i64> {
    let path = dir.join(HIGH_WATERMARK_CHECKPOINT);
    if !io.exists(&path) {
        return HashMap::new();
    }
    let parsed = read_file(io, &path)
        .map_err(|e| e.to_string())
        .and_then(|b| parse_high_watermarks(&b));
    parsed.unwrap_or_else(|reason| {
        tracing::warn!(path = %path.display(), %reason, "ignoring an invalid high-watermark checkpoint; its logs start with the high watermark at their log end offset");
        HashMap::new()
    })
}

/// True for a leftover temporary file of [`write_file_atomic`] writing the high-watermark or cleaner checkpoint.
fn is_high_watermark_tmp(name: &str) -> bool {
    [HIGH_WATERMARK_CHECKPOINT, CLEANER_OFFSET_CHECKPOINT]
        .iter()
        .any(|file| {
            name.strip_prefix(file)
                .is_some_and(|rest| rest.starts_with('.') && rest.ends_with(".tmp"))
        })
}

/// Open logs by (topic, partition), each with the index of its log directory.
type LogMap = HashMap<(String, i32), (Arc<Log>, usize)>;

/// Owns every partition log under `log.dirs`. `Send + Sync`.
#[derive(Debug)]
pub struct LogManager {
    dirs: Vec<Arc<DirHealth>>,
    io: Arc<dyn Io>,
    cache: Arc<SegmentCache>,
    logs: RwLock<LogMap>,
    pending_dir_deletes: Mutex<Vec<PathBuf>>,
    /// Exclusive locks on each log directory's `.lock`, held until [`LogManager::shutdown`] or drop.
    locks: Mutex<Vec<File>>,
    /// Set by [`LogManager::shutdown`]: no log is created or deleted afterwards.
    shut_down: AtomicBool,
    /// Serializes high-watermark checkpoint writes: each takes its values under this lock, so a later
    /// write never carries older values than an earlier one.
    hw_checkpoint: Mutex<()>,
    /// Log-directory moves in progress (AlterReplicaLogDirs), by partition (`manager/moves.rs`).
    moves: Mutex<HashMap<(String, i32), Arc<moves::MoveHandle>>>,
    /// Mover threads running (a cancelled move's thread may still be cleaning up).
    movers: std::sync::atomic::AtomicUsize,
    /// The copy rate bound of every move together (`replica.alter.log.dirs.io.max.bytes.per.second`).
    move_throttle: moves::MoveThrottle,
    /// Partitions a cleaner thread is cleaning (`manager/cleaner.rs`).
    cleaning: Mutex<HashSet<(String, i32)>>,
    /// Serializes writes of the cleaner checkpoints.
    cleaner_checkpoint: Mutex<()>,
    /// Partitions whose last cleaning pass failed: not cleaned again until deleted (Kafka's uncleanable
    /// partitions).
    uncleanable: Mutex<HashSet<(String, i32)>>,
}

impl LogManager {
    /// Opens every `<topic>-<partition>` directory under `log_dirs` in parallel, recovering each as
    /// needed. A log directory that fails with an I/O error goes offline (its logs are not served); the
    /// call fails only when every directory is offline.
    pub fn open(
        log_dirs: Vec<PathBuf>,
        default_config: LogConfig,
    ) -> Result<LogManager, StorageError> {
        LogManager::open_with(log_dirs, default_config, ManagerOptions::default())
    }

    /// [`LogManager::open`] with an explicit file-system seam and limits.
    pub fn open_with(
        log_dirs: Vec<PathBuf>,
        default_config: LogConfig,
        options: ManagerOptions,
    ) -> Result<LogManager, StorageError> {
        if log_dirs.is_empty() {
            return Err(StorageError::InvalidArgument("no log directories".into()));
        }
        let io = options.io.clone();
        let mut locks = Vec::with_capacity(log_dirs.len());
        let mut unlocked = Vec::new();
        for (i, dir) in log_dirs.iter().enumerate() {
            // A directory another instance holds is fatal; one that cannot be locked goes offline.
            let locked = io
                .create_dir_all(dir)
                .map_err(|e| StorageError::from_io(dir, e))
                .and_then(|()| lock_log_dir(dir));
            match locked {
                Ok(lock) => locks.push(lock),
                Err(e @ StorageError::Locked { .. }) => return Err(e),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot lock log directory");
                    unlocked.push(i);
                }
            }
        }
        let dirs: Vec<Arc<DirHealth>> = log_dirs
            .iter()
            .map(|d| Arc::new(DirHealth::new(d.clone())))
            .collect();
        for i in unlocked {
            dirs[i].set_offline();
        }
        let mut jobs: Vec<(usize, String, i32, PathBuf, Option<i64>)> = Vec::new();
        // Every directory's high-watermark checkpoint: a log moved between directories right before a crash may
        // have its entry only in the old directory's.
        let mut all_high_watermarks: Vec<HashMap<(String, i32), i64>> = Vec::new();
        for (i, health) in dirs.iter().enumerate() {
            if health.is_offline() {
                continue;
            }
            let dir = health.dir().to_path_buf();
            let names = match io.create_dir_all(&dir).and_then(|_| io.list_dir(&dir)) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "log directory unusable");
                    health.set_offline();
                    continue;
                }
            };
            let high_watermarks = read_high_watermarks(&*io, &dir);
            all_high_watermarks.push(high_watermarks.clone());
            for name in names {
                let path = dir.join(&name);
                if is_high_watermark_tmp(&name) {
                    let _ = io.remove_file(&path);
                    continue;
                }
                if name.ends_with(FUTURE_DIR_SUFFIX) {
                    // A log-directory move interrupted before its commit: the original is authoritative.
                    tracing::warn!(path = %path.display(), "removing the future log of an interrupted log-directory move");
                    if let Err(e) = io.remove_dir_all(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove future log directory");
                    }
                    continue;
                }
                if name.ends_with(DELETE_DIR_SUFFIX) {
                    if let Err(e) = io.remove_dir_all(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove deleted partition directory");
                    }
                    continue;
                }
                if !path.is_dir() {
                    continue;
                }
                if let Some((topic, partition)) = parse_partition_dir(&name) {
                    let hw = high_watermarks.get(&(topic.clone(), partition)).copied();
                    jobs.push((i, topic, partition, path, hw));
                }
            }
        }
        if dirs.iter().all(|d| d.is_offline()) {
            return Err(StorageError::Offline {
                dir: log_dirs[0].clone(),
            });
        }
        let jobs = moves::resolve_moved_logs(&*io, jobs, &all_high_watermarks)?;
        let cache = Arc::new(SegmentCache::new(options.max_open_inactive_segments));
        let next = Mutex::new(jobs.into_iter());
        let opened = Mutex::new(HashMap::new());
        let threads = options.recovery_threads.max(1);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let Some((i, topic, partition, path, hw)) = next.lock().next() else { break };
                    let health = dirs[i].clone();
                    if health.is_offline() {
                        continue;
                    }
                    let opts = LogOptions {
                        io: io.clone(),
                        cache: cache.clone(),
                        health: Some(health.clone()),
                        high_watermark: hw,
                    };
                    match Log::open_with(&path, default_config.clone(), opts) {
                        Ok(log) => {
                            opened.lock().insert((topic, partition), (Arc::new(log), i));
                        }
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "cannot open partition log; taking its directory offline");
                            health.set_offline();
                        }
                    }
                });
            }
        });
        let mut logs = opened.into_inner();
        logs.retain(|_, (_, i)| !dirs[*i].is_offline());
        tracing::info!(partitions = logs.len(), "log manager opened");
        let manager = LogManager {
            dirs,
            io,
            cache,
            logs: RwLock::new(logs),
            pending_dir_deletes: Mutex::new(Vec::new()),
            locks: Mutex::new(locks),
            shut_down: AtomicBool::new(false),
            hw_checkpoint: Mutex::new(()),
            moves: Mutex::new(HashMap::new()),
            movers: std::sync::atomic::AtomicUsize::new(0),
            move_throttle: moves::MoveThrottle::default(),
            cleaning: Mutex::new(HashSet::new()),
            cleaner_checkpoint: Mutex::new(()),
            uncleanable: Mutex::new(HashSet::new()),
        };
        manager.load_cleaner_checkpoints();
        Ok(manager)
    }

    /// The log of a partition, if present.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Log>> {
        self.logs
            .read()
            .get(&(topic.to_string(), partition))
            .map(|(l, _)| l.clone())
    }

    /// The log of a partition, created (in the online directory holding the fewest partitions) if absent.
    pub fn get_or_create(
        &self,
        topic: &str,
        partition: i32,
        config: LogConfig,
    ) -> Result<Arc<Log>, StorageError> {
        if let Some(l) = self.get(topic, partition) {
            return Ok(l);
        }
        if topic.is_empty() || topic.contains('/') || topic == "." || topic == ".." || partition < 0
        {
            return Err(StorageError::InvalidArgument(format!(
                "invalid partition {topic}-{partition}"
            )));
        }
        let mut logs = self.logs.write();
        if let Some((l, _)) = logs.get(&(topic.to_string(), partition)) {
            return Ok(l.clone());
        }
        if self.shut_down.load(Ordering::Acquire) {
            return Err(StorageError::Closed {
                dir: self.dirs[0].dir().join(format!("{topic}-{partition}")),
            });
        }
        let mut counts = vec![0usize; self.dirs.len()];
        for (_, i) in logs.values() {
            counts[*i] += 1;
        }
        let Some(i) = (0..self.dirs.len())
            .filter(|i| !self.dirs[*i].is_offline())
            .min_by_key(|i| counts[*i])
        else {
            return Err(StorageError::Offline {
                dir: self.dirs[0].dir().to_path_buf(),
            });
        };
        let health = self.dirs[i].clone();
        let path = health.dir().join(format!("{topic}-{partition}"));
        let opts = LogOptions {
            io: self.io.clone(),
            cache: self.cache.clone(),
            health: Some(health),
            high_watermark: None,
        };
        let log = Arc::new(Log::open_with(&path, config, opts)?);
        logs.insert((topic.to_string(), partition), (log.clone(), i));
        Ok(log)
    }

    /// Deletes a partition log: closes it, renames its directory to `<topic>-<partition>.<uniqueId>-delete`
    /// (Kafka's naming; never opened as a live partition) and removes that on the next retention pass
    /// (readers holding open files keep working until then).
    pub fn delete(&self, topic: &str, partition: i32) -> Result<(), StorageError> {
        let mut logs = self.logs.write();
        if self.shut_down.load(Ordering::Acquire) {
            return Err(StorageError::Closed {
                dir: self.dirs[0].dir().join(format!("{topic}-{partition}")),
            });
        }
        let Some((log, dir_index)) = logs.remove(&(topic.to_string(), partition)) else {
            return Ok(());
        };
        drop(logs);
        self.uncleanable
            .lock()
            .remove(&(topic.to_string(), partition));
        if let Some(mv) = self.moves.lock().remove(&(topic.to_string(), partition)) {
            mv.cancel();
        }
        log.close_for_delete();
        let dir = log.dir().to_path_buf();
        // The log may have moved to another directory since the map recorded its index.
        let dir_index = self
            .dirs
            .iter()
            .position(|d| Some(d.dir()) == dir.parent())
            .unwrap_or(dir_index);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = dir.with_file_name(delete_dir_name(&name));
        self.io
            .rename(&dir, &target)
            .map_err(|e| StorageError::from_io(&dir, e))?;
        if let Some(parent) = target.parent() {
            let _ = self.io.sync_dir(parent);
        }
        self.pending_dir_deletes.lock().push(target);
        // Drop the partition's high-watermark entry now, so a re-created partition of the same name never
        // starts from the deleted one's value after a crash. The delete itself is done: a failure is logged
        // (and takes the directory offline unless the disk is full).
        let _serial = self.hw_checkpoint.lock();
        if !self.shut_down.load(Ordering::Acquire) {
            if let Err(e) = self.write_high_watermarks(dir_index) {
                tracing::warn!(error = %e, "cannot rewrite the high-watermark checkpoint after a delete");
            }
        }
        Ok(())
    }

    /// Writes every online log directory's `replication-offset-checkpoint` (Kafka's
    /// `ReplicaManager.checkpointHighWatermarks`): version `0`, the count, then `topic partition
    /// high_watermark` for every partition in that directory, written to a temporary file, fsynced and
    /// renamed. At open each log starts from its entry (see [`LogOptions::high_watermark`]).
    ///
    /// The broker calls this every `replica.high.watermark.checkpoint.interval.ms` (Kafka's default 5000);
    /// [`LogManager::shutdown`] calls it after closing the logs. After a crash the last periodic checkpoint
    /// is what the logs reopen with. A no-op after shutdown (another instance may own the directories).
    /// An I/O error other than ENOSPC takes that directory offline, as Kafka does; the other directories
    /// are still written, and the first error is returned.
    pub fn checkpoint_high_watermarks(&self) -> Result<(), StorageError> {
        let _serial = self.hw_checkpoint.lock();
        if self.shut_down.load(Ordering::Acquire) {
            return Ok(());
        }
        self.write_all_high_watermarks()
    }

    /// Writes the checkpoint of every online directory; the caller holds `hw_checkpoint`.
    fn write_all_high_watermarks(&self) -> Result<(), StorageError> {
        let mut first = None;
        for i in 0..self.dirs.len() {
            if let Err(e) = self.write_high_watermarks(i) {
                tracing::error!(dir = %self.dirs[i].dir().display(), error = %e, "cannot write the high-watermark checkpoint");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Writes the high-watermark checkpoint of directory `i` (skipped while it is offline); the caller
    /// holds `hw_checkpoint`.
    fn write_high_watermarks(&self, i: usize) -> Result<(), StorageError> {
        let health = &self.dirs[i];
        if health.is_offline() {
            return Ok(());
        }
        let mut entries: Vec<((String, i32), i64)> = self
            .logs
            .read()
            .iter()
            .filter(|(_, (log, _))| log.dir().parent() == Some(health.dir()))
            .map(|(k, (log, _))| (k.clone(), log.high_watermark()))
            .collect();
        // Kafka's topic names hold no whitespace; a name that would break the line format is left out
        // (its log then reopens with the no-checkpoint default).
        entries.retain(|((topic, partition), _)| {
            let ok = !topic.contains(char::is_whitespace);
            if !ok {
                tracing::warn!(topic = %topic, partition, "topic name with whitespace left out of the high-watermark checkpoint");
            }
            ok
        });
        entries.sort();
        let path = health.dir().join(HIGH_WATERMARK_CHECKPOINT);
        write_file_atomic(&*self.io, &path, &encode_high_watermarks(&entries)).map_err(|e| {
            let err = StorageError::from_io(&path, e);
            if !matches!(err, StorageError::DiskFull { .. }) {
                health.set_offline();
            }
            err
        })
    }

    /// Every partition with a log, sorted.
    pub fn partitions(&self) -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = self.logs.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// Log directories currently offline.
    pub fn offline_dirs(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .filter(|d| d.is_offline())
            .map(|d| d.dir().to_path_buf())
            .collect()
    }

    /// Number of inactive segments currently open (bounded by `max_open_inactive_segments`).
    pub fn open_inactive_segments(&self) -> usize {
        self.cache.len()
    }

    fn all_logs(&self) -> Vec<Arc<Log>> {
        self.all_logs_unlocked(&self.logs.read())
    }

    fn all_logs_unlocked(&self, logs: &LogMap) -> Vec<Arc<Log>> {
        logs.values().map(|(l, _)| l.clone()).collect()
    }

    /// Retention pass over every log, and removal of deleted partition directories. The broker calls
    /// this periodically (`log.retention.check.interval.ms`). Errors are logged; a failing directory is
    /// already offline.
    pub fn run_retention(&self, now_ms: i64) {
        for log in self.all_logs() {
            if let Err(e) = log.apply_retention(now_ms) {
                tracing::warn!(dir = %log.dir().display(), error = %e, "retention failed");
            }
        }
        let pending = std::mem::take(&mut *self.pending_dir_deletes.lock());
        for dir in pending {
            if let Err(e) = self.io.remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove deleted partition directory");
            }
        }
    }

    /// `flush.ms` pass: flushes every log whose last flush is older than its `flush.ms`, and every log
    /// with rolled segments awaiting their fsync. Called periodically.
    pub fn flush_due(&self, now_ms: i64) {
        for log in self.all_logs() {
            if let Err(e) = log.flush_if_due(now_ms) {
                tracing::warn!(dir = %log.dir().display(), error = %e, "scheduled flush failed");
            }
        }
    }

    /// Clean shutdown: closes every log (fsync, checkpoints, clean-shutdown marker), then writes the
    /// high-watermark checkpoints. Returns the first error after trying them all.
    ///
    /// Afterwards no log is created or deleted, and the log directories' locks are released, so another
    /// instance (in this process or another) may open them.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        let mut first = None;
        // Taken under the map's write lock: a concurrent `delete` either finished or sees the flag.
        self.shut_down.store(true, Ordering::Release);
        let logs = {
            let _guard = self.logs.write();
            self.all_logs_unlocked(&_guard)
        };
        for log in logs {
            if let Err(e) = log.close() {
                tracing::error!(dir = %log.dir().display(), error = %e, "clean close failed");
                first.get_or_insert(e);
            }
        }
        // After the closes, so the values are final; before the locks go, so the directories are still ours.
        {
            let _serial = self.hw_checkpoint.lock();
            if let Err(e) = self.write_all_high_watermarks() {
                first.get_or_insert(e);
            }
        }
        self.locks.lock().clear();
        first.map_or(Ok(()), Err)
    }

    /// The log directories, in configuration order.
    pub fn log_dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.dir().to_path_buf()).collect()
    }

    /// The directory health for `dir`, if it is one of the log directories.
    pub fn dir_health(&self, dir: &Path) -> Option<Arc<DirHealth>> {
        self.dirs.iter().find(|d| d.dir() == dir).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dir_names() {
        assert_eq!(parse_partition_dir("orders-3"), Some(("orders".into(), 3)));
        assert_eq!(
            parse_partition_dir("my-topic-12"),
            Some(("my-topic".into(), 12))
        );
        assert_eq!(parse_partition_dir("orders"), None);
        assert_eq!(parse_partition_dir("orders-x"), None);
        assert_eq!(parse_partition_dir("-1"), None);
        assert_eq!(parse_partition_dir("a-1.3-delete"), None);
    }

    #[test]
    fn high_watermark_checkpoint_round_trips_in_kafkas_format() {
        let entries = vec![(("a".to_string(), 0), 5), (("my-topic".to_string(), 12), 0)];
        let bytes = encode_high_watermarks(&entries);
        assert_eq!(bytes, b"0\n2\na 0 5\nmy-topic 12 0\n");
        let parsed = parse_high_watermarks(&bytes).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[&("a".to_string(), 0)], 5);
        assert_eq!(parsed[&("my-topic".to_string(), 12)], 0);
        assert_eq!(parse_high_watermarks(b"0\n0\n").unwrap().len(), 0);
    }

    #[test]
    fn malformed_high_watermark_checkpoints_are_rejected() {
        for bad in [
            &b""[..],
            b"1\n1\na 0 5\n",
            b"0\n",
            b"0\nx\n",
            b"0\n2\na 0 5\n",
            b"0\n1\na 0 5\nb 0 6\n",
            b"0\n1\na 0\n",
            b"0\n1\na 0 5 7\n",
            b"0\n1\na x 5\n",
            b"0\n1\na 0 -5\n",
            b"0\n1\na -1 5\n",
            b"0\n1\n\n",
            b"\xff\n",
        ] {
            assert!(
                parse_high_watermarks(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn only_the_checkpoints_own_temporary_files_are_recognised() {
        assert!(is_high_watermark_tmp(
            "replication-offset-checkpoint.123-4.tmp"
        ));
        assert!(!is_high_watermark_tmp("replication-offset-checkpoint"));
        assert!(!is_high_watermark_tmp("orders-0"));
        assert!(!is_high_watermark_tmp("replication-offset-checkpointx.tmp"));
    }
}
