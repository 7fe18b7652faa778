//! Moving partition logs between this broker's log directories (AlterReplicaLogDirs, KIP-113) and describing the
//! log directories (DescribeLogDirs, KIP-113/KIP-827).
//!
//! [`LogManager::alter_log_dir`] checks the request as Kafka's `ReplicaManager.alterReplicaLogDirs` does and starts
//! one `sluice-log-mover` thread per move, which copies the log into a future directory in rounds and then swaps
//! it in (`log/relocate.rs`: the copy runs outside the log's lock, the swap holds it only for the tail appended
//! since the last round). A move to another directory than the one in progress cancels that one first, as Kafka
//! replaces the future replica. At open, [`resolve_moved_logs`] finishes what a crash interrupted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::LogManager;
use crate::io::Io;
use crate::log::{future_dir_name, CopyControl, MoveError, MOVE_MARKER_FILE};
use crate::{Log, StorageError};

/// A copy round that copied less than this is close enough to the log end for the swap to hold the lock briefly.
const CAUGHT_UP_BYTES: u64 = 1 << 20;
/// Rounds before swapping anyway (a producer outpacing the copy then waits for the last round's appends).
const MAX_ROUNDS: usize = 64;
/// Times a copy starts over after the log was truncated under it.
const MAX_RESTARTS: usize = 3;
/// The longest directory name a file system takes (Kafka's check, KAFKA-4893).
const MAX_DIR_NAME_BYTES: usize = 255;
/// How much copying a throttled move may do at once after an idle spell, in seconds of its rate.
const THROTTLE_BURST: Duration = Duration::from_secs(1);
/// The longest sleep between checks for a cancelled move or a changed rate.
const THROTTLE_SLICE: Duration = Duration::from_millis(100);

/// The bound on the bytes/s every log-directory move of this broker copies together
/// (`replica.alter.log.dirs.io.max.bytes.per.second`, Kafka's `alterLogDirs` replication quota): a pacer that lets
/// each chunk go once the chunks before it have had their time at the rate, with a second of burst.
#[derive(Debug)]
pub(super) struct MoveThrottle {
    /// Bytes per second; `u64::MAX` (the default, as Kafka's `Long.MAX_VALUE`) does not throttle.
    rate: AtomicU64,
    /// When the bytes paced so far will have had their time.
    paid_until: Mutex<Option<Instant>>,
}

impl Default for MoveThrottle {
    fn default() -> Self {
        MoveThrottle {
            rate: AtomicU64::new(u64::MAX),
            paid_until: Mutex::new(None),
        }
    }
}

impl MoveThrottle {
    /// Waits until `bytes` more may be copied at the current rate; returns early when `stop` says so. A changed
    /// rate starts the wait over at the new rate (at 0, nothing is copied until it changes).
    fn pace(&self, bytes: u64, stop: &dyn Fn() -> bool) {
        'rate: loop {
            let rate = self.rate.load(Ordering::Acquire);
            if rate == u64::MAX {
                return;
            }
            let done = (rate > 0).then(|| {
                let now = Instant::now();
                let mut paid = self.paid_until.lock();
                let from = match *paid {
                    Some(t) if t + THROTTLE_BURST > now => t,
                    _ => now.checked_sub(THROTTLE_BURST).unwrap_or(now),
                };
                let done = from + Duration::from_secs_f64(bytes as f64 / rate as f64);
                *paid = Some(done);
                done
            });
            loop {
                if stop() {
                    return;
                }
                if self.rate.load(Ordering::Acquire) != rate {
                    *self.paid_until.lock() = None;
                    continue 'rate;
                }
                let now = Instant::now();
                let wait = match done {
                    Some(done) if done <= now => return,
                    Some(done) => (done - now).min(THROTTLE_SLICE),
                    None => THROTTLE_SLICE,
                };
                std::thread::sleep(wait);
            }
        }
    }
}

/// A move in progress.
#[derive(Debug)]
pub(super) struct MoveHandle {
    /// Index of the target log directory.
    target: usize,
    cancelled: AtomicBool,
    /// The future log's end offset and size in bytes so far.
    progress: Mutex<(i64, u64)>,
}

impl MoveHandle {
    /// Stops the move at its next step; its future directory is removed.
    pub(super) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }
}

/// What [`LogManager::alter_log_dir`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterLogDirOutcome {
    /// The log is already in that directory (no-op).
    AlreadyThere,
    /// A move to that directory started.
    Started,
    /// A move to that directory was already in progress.
    InProgress,
}

/// Why [`LogManager::alter_log_dir`] refused, each with Kafka's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlterLogDirError {
    /// The path is not one of `log.dirs` (LOG_DIR_NOT_FOUND).
    #[error("log directory {0} is not in log.dirs")]
    LogDirNotFound(String),
    /// The target directory, or the partition's own, is offline (KAFKA_STORAGE_ERROR).
    #[error("log directory {0} is offline")]
    Offline(PathBuf),
    /// This broker has no log of the partition (REPLICA_NOT_AVAILABLE).
    #[error("no replica of the partition on this broker")]
    NoReplica,
    /// The future directory's name would be too long (INVALID_TOPIC_EXCEPTION).
    #[error("the topic name is too long")]
    InvalidTopic,
    /// Shutting down, or the mover thread could not start (KAFKA_STORAGE_ERROR).
    #[error("{0}")]
    Unavailable(String),
}

/// One log directory as DescribeLogDirs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirInfo {
    /// The directory, absolute.
    pub dir: PathBuf,
    /// True when the directory is offline (then nothing else is reported).
    pub offline: bool,
    /// Size of its file system in bytes (`statvfs`), when known.
    pub total_bytes: Option<u64>,
    /// Bytes available to this process on its file system, when known.
    pub usable_bytes: Option<u64>,
    /// Replicas in the directory, current and future, sorted by topic, partition, future last.
    pub replicas: Vec<ReplicaInfo>,
}

/// One replica (log) in a log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Bytes of its segments.
    pub size_bytes: u64,
    /// For a current replica, the high watermark minus the log end offset, at least 0 (Kafka's); for a future
    /// replica, the current log's end offset minus the future log's.
    pub offset_lag: i64,
    /// True for the future replica of a move in progress.
    pub is_future: bool,
}

/// The absolute form of `path` (without resolving symbolic links, as Java's `File.getAbsolutePath`).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `(total, usable)` bytes of the file system holding `dir`, as Java's `FileStore.getTotalSpace` and
/// `getUsableSpace`.
fn file_system_space(dir: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some((
        s.f_blocks.saturating_mul(s.f_frsize),
        s.f_bavail.saturating_mul(s.f_frsize),
    ))
}

impl LogManager {
    /// The index of the log directory `path` names (compared as absolute paths), if it is one of `log.dirs`.
    pub fn log_dir_index(&self, path: &Path) -> Option<usize> {
        let wanted = absolute(path);
        self.dirs
            .iter()
            .position(|d| d.dir() == path || absolute(d.dir()) == wanted)
    }

    /// Moves the log of `topic`-`partition` into log directory `dir` (AlterReplicaLogDirs), in the background.
    /// Checks in Kafka's order: the future directory's name must fit, `dir` must be one of `log.dirs` and online,
    /// the partition must have a log here in an online directory. A move already in progress to another directory is cancelled first.
    pub fn alter_log_dir(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        dir: &Path,
    ) -> Result<AlterLogDirOutcome, AlterLogDirError> {
        if future_dir_name(&format!("{topic}-{partition}")).len() > MAX_DIR_NAME_BYTES {
            return Err(AlterLogDirError::InvalidTopic);
        }
        let target = self
            .log_dir_index(dir)
            .ok_or_else(|| AlterLogDirError::LogDirNotFound(dir.display().to_string()))?;
        let health = self.dirs[target].clone();
        if health.is_offline() {
            return Err(AlterLogDirError::Offline(absolute(health.dir())));
        }
        let log = self
            .get(topic, partition)
            .ok_or(AlterLogDirError::NoReplica)?;
        let current = log.health();
        if current.is_offline() {
            return Err(AlterLogDirError::Offline(absolute(current.dir())));
        }
        let key = (topic.to_string(), partition);
        let mut moves = self.moves.lock();
        if let Some(existing) = moves.get(&key) {
            if existing.target == target {
                return Ok(AlterLogDirOutcome::InProgress);
            }
            existing.cancel();
            moves.remove(&key);
        }
        if log.dir().parent() == Some(health.dir()) {
            return Ok(AlterLogDirOutcome::AlreadyThere);
        }
        if self.shut_down.load(Ordering::Acquire) {
            return Err(AlterLogDirError::Unavailable("shutting down".into()));
        }
        let handle = Arc::new(MoveHandle {
            target,
            cancelled: AtomicBool::new(false),
            progress: Mutex::new((0, 0)),
        });
        moves.insert(key.clone(), handle.clone());
        drop(moves);
        let manager = self.clone();
        self.movers.fetch_add(1, Ordering::AcqRel);
        let spawned = std::thread::Builder::new()
            .name("sluice-log-mover".into())
            .spawn({
                let handle = handle.clone();
                let key = key.clone();
                move || {
                    manager.run_move(key, log, handle);
                    manager.movers.fetch_sub(1, Ordering::AcqRel);
                }
            });
        if let Err(e) = spawned {
            self.movers.fetch_sub(1, Ordering::AcqRel);
            self.finish_move(&key, &handle);
            return Err(AlterLogDirError::Unavailable(format!(
                "cannot start the log mover: {e}"
            )));
        }
        tracing::info!(topic, partition, target = %health.dir().display(), "moving a log to another log directory");
        Ok(AlterLogDirOutcome::Started)
    }

    /// Forgets `handle` if it is still the move registered for `key`.
    /// Sets the bound on the bytes/s all log-directory moves copy together
    /// (`replica.alter.log.dirs.io.max.bytes.per.second`); `None` removes it. Moves in progress follow at once.
    pub fn set_log_dir_move_rate(&self, bytes_per_second: Option<u64>) {
        let rate = bytes_per_second.unwrap_or(u64::MAX);
        if self.move_throttle.rate.swap(rate, Ordering::AcqRel) != rate {
            tracing::info!(bytes_per_second = ?bytes_per_second, "log-directory move throttle changed");
        }
    }

    fn finish_move(&self, key: &(String, i32), handle: &Arc<MoveHandle>) {
        let mut moves = self.moves.lock();
        if moves.get(key).is_some_and(|h| Arc::ptr_eq(h, handle)) {
            moves.remove(key);
        }
    }

    /// The mover thread: copy rounds, then the swap; afterwards the map and both directories' high-watermark
    /// checkpoints follow the log.
    fn run_move(&self, key: (String, i32), log: Arc<Log>, handle: Arc<MoveHandle>) {
        let health = self.dirs[handle.target].clone();
        let source = log.health();
        let stop =
            || handle.cancelled.load(Ordering::Acquire) || self.shut_down.load(Ordering::Acquire);
        let progress = |leo: i64, bytes: u64| *handle.progress.lock() = (leo, bytes);
        let throttle = |bytes: u64| self.move_throttle.pace(bytes, &stop);
        let control = CopyControl {
            stop: &stop,
            progress: &progress,
            throttle: &throttle,
        };
        let mut outcome = Err(MoveError::Rewritten);
        for _ in 0..MAX_RESTARTS {
            let mut future = match log.begin_future(health.clone()) {
                Ok(f) => f,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            progress(0, 0);
            let result = (|| {
                for _ in 0..MAX_ROUNDS {
                    if stop() {
                        return Err(MoveError::Cancelled);
                    }
                    if log.copy_round(&mut future, &control)? < CAUGHT_UP_BYTES {
                        break;
                    }
                }
                log.swap_into(&mut future, &control)
            })();
            if result.is_err() {
                log.discard_future(&future);
            }
            outcome = result;
            if !matches!(outcome, Err(MoveError::Rewritten)) {
                break;
            }
            tracing::info!(topic = %key.0, partition = key.1, "log truncated during its move; copying again");
        }
        match outcome {
            Ok(doomed) => {
                {
                    let mut logs = self.logs.write();
                    if let Some(entry) = logs.get_mut(&key) {
                        if Arc::ptr_eq(&entry.0, &log) {
                            entry.1 = handle.target;
                        }
                    }
                }
                if let Some(doomed) = doomed {
                    self.pending_dir_deletes.lock().push(doomed);
                }
                self.finish_move(&key, &handle);
                let _serial = self.hw_checkpoint.lock();
                if !self.shut_down.load(Ordering::Acquire) {
                    for i in 0..self.dirs.len() {
                        let d = self.dirs[i].dir();
                        if d == health.dir() || d == source.dir() {
                            if let Err(e) = self.write_high_watermarks(i) {
                                tracing::warn!(dir = %d.display(), error = %e, "cannot rewrite the high-watermark checkpoint after a log move");
                            }
                        }
                    }
                }
            }
            Err(MoveError::AlreadyThere) => self.finish_move(&key, &handle),
            Err(MoveError::Cancelled | MoveError::Closed) => {
                tracing::info!(topic = %key.0, partition = key.1, "log-directory move stopped");
                self.finish_move(&key, &handle);
            }
            Err(e) => {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "log-directory move failed; the log stays where it was");
                self.finish_move(&key, &handle);
            }
        }
    }

    /// Number of log-directory moves in progress (mover threads still running, cancelled ones included).
    pub fn moves_in_progress(&self) -> usize {
        self.movers.load(Ordering::Acquire)
    }

    /// Every log directory with the replicas it holds (DescribeLogDirs), in configuration order. Future replicas
    /// of moves in progress are listed in their target directory.
    pub fn describe_log_dirs(&self) -> Vec<LogDirInfo> {
        let logs: Vec<((String, i32), Arc<Log>)> = self
            .logs
            .read()
            .iter()
            .map(|(k, (log, _))| (k.clone(), log.clone()))
            .collect();
        let moves: Vec<((String, i32), Arc<MoveHandle>)> = self
            .moves
            .lock()
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        let by_key: HashMap<&(String, i32), &Arc<Log>> = logs.iter().map(|(k, l)| (k, l)).collect();
        let mut out = Vec::with_capacity(self.dirs.len());
        for (i, health) in self.dirs.iter().enumerate() {
            let dir = absolute(health.dir());
            if health.is_offline() {
                out.push(LogDirInfo {
                    dir,
                    offline: true,
                    total_bytes: None,
                    usable_bytes: None,
                    replicas: Vec::new(),
                });
                continue;
            }
            let space = file_system_space(health.dir());
            let mut replicas: Vec<ReplicaInfo> = logs
                .iter()
                .filter(|(_, log)| log.dir().parent() == Some(health.dir()))
                .map(|((topic, partition), log)| ReplicaInfo {
                    topic: topic.clone(),
                    partition: *partition,
                    size_bytes: log.size_bytes(),
                    offset_lag: (log.high_watermark() - log.log_end_offset()).max(0),
                    is_future: false,
                })
                .collect();
            for (key, handle) in &moves {
                if handle.target != i {
                    continue;
                }
                let Some(log) = by_key.get(key) else { continue };
                let (future_leo, bytes) = *handle.progress.lock();
                replicas.push(ReplicaInfo {
                    topic: key.0.clone(),
                    partition: key.1,
                    size_bytes: bytes,
                    offset_lag: (log.log_end_offset() - future_leo).max(0),
                    is_future: true,
                });
            }
            replicas.sort_by(|a, b| {
                (&a.topic, a.partition, a.is_future).cmp(&(&b.topic, b.partition, b.is_future))
            });
            out.push(LogDirInfo {
                dir,
                offline: false,
                total_bytes: space.map(|s| s.0),
                usable_bytes: space.map(|s| s.1),
                replicas,
            });
        }
        out
    }
}

/// A partition log found at open: (directory index, topic, partition, path, checkpointed high watermark).
pub(super) type OpenJob = (usize, String, i32, PathBuf, Option<i64>);

/// At open, before the logs are opened: finishes log-directory moves a crash interrupted (see `log/relocate.rs`).
/// A partition found in two directories keeps the one holding the move marker (the complete, moved copy) and the
/// other is removed; a marker is removed once its directory is the only one. Two copies without a marker are an
/// error, as in Kafka ("Duplicate log directories"). A log without a high-watermark entry in its directory's
/// checkpoint takes the entry another directory's checkpoint has (a move right before the crash).
pub(super) fn resolve_moved_logs(
    io: &dyn Io,
    jobs: Vec<OpenJob>,
    high_watermarks: &[HashMap<(String, i32), i64>],
) -> Result<Vec<OpenJob>, StorageError> {
    let mut by_partition: HashMap<(String, i32), Vec<OpenJob>> = HashMap::new();
    for job in jobs {
        by_partition
            .entry((job.1.clone(), job.2))
            .or_default()
            .push(job);
    }
    let mut out = Vec::with_capacity(by_partition.len());
    for (key, mut copies) in by_partition {
        let marked = |job: &OpenJob| io.exists(&job.3.join(MOVE_MARKER_FILE));
        let keep = if copies.len() == 1 {
            0
        } else {
            let with_marker: Vec<usize> =
                (0..copies.len()).filter(|i| marked(&copies[*i])).collect();
            let [keep] = with_marker[..] else {
                return Err(StorageError::InvalidArgument(format!(
                    "duplicate log directories for {}-{}: {}",
                    key.0,
                    key.1,
                    copies
                        .iter()
                        .map(|c| c.3.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            keep
        };
        let mut job = copies.swap_remove(keep);
        for other in copies {
            tracing::warn!(kept = %job.3.display(), removed = %other.3.display(), "a log-directory move was interrupted after its commit; removing the old copy");
            io.remove_dir_all(&other.3)
                .map_err(|e| StorageError::from_io(&other.3, e))?;
            if let Some(parent) = other.3.parent() {
                io.sync_dir(parent)
                    .map_err(|e| StorageError::from_io(parent, e))?;
            }
        }
        if marked(&job) {
            let marker = job.3.join(MOVE_MARKER_FILE);
            io.remove_file(&marker)
                .and_then(|()| io.sync_dir(&job.3))
                .map_err(|e| StorageError::from_io(&marker, e))?;
        }
        if job.4.is_none() {
            job.4 = high_watermarks.iter().find_map(|m| m.get(&key).copied());
        }
        out.push(job);
    }
    Ok(out)
}
