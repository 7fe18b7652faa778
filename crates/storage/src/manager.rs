//! `LogManager`: every partition log under `log.dirs`: parallel open (with recovery) at start-up, create
//! and delete, periodic retention and `flush.ms` passes, clean shutdown, and offline log directories.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::io::{Io, RealIo};
use crate::log::{DirHealth, LogOptions};
use crate::segment::SegmentCache;
use crate::{Log, LogConfig, StorageError};

/// Suffix of a partition directory renamed for deletion.
pub const DELETE_DIR_SUFFIX: &str = "-delete";

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
    delete_seq: AtomicU64,
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
        let dirs: Vec<Arc<DirHealth>> = log_dirs
            .iter()
            .map(|d| Arc::new(DirHealth::new(d.clone())))
            .collect();
        let mut jobs: Vec<(usize, String, i32, PathBuf)> = Vec::new();
        for (i, health) in dirs.iter().enumerate() {
            let dir = health.dir().to_path_buf();
            let names = match io.create_dir_all(&dir).and_then(|_| io.list_dir(&dir)) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "log directory unusable");
                    health.set_offline();
                    continue;
                }
            };
            for name in names {
                let path = dir.join(&name);
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
                    jobs.push((i, topic, partition, path));
                }
            }
        }
        if dirs.iter().all(|d| d.is_offline()) {
            return Err(StorageError::Offline {
                dir: log_dirs[0].clone(),
            });
        }
        let cache = Arc::new(SegmentCache::new(options.max_open_inactive_segments));
        let next = Mutex::new(jobs.into_iter());
        let opened = Mutex::new(HashMap::new());
        let threads = options.recovery_threads.max(1);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let Some((i, topic, partition, path)) = next.lock().next() else { break };
                    let health = dirs[i].clone();
                    if health.is_offline() {
                        continue;
                    }
                    let opts = LogOptions { io: io.clone(), cache: cache.clone(), health: Some(health.clone()) };
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
        Ok(LogManager {
            dirs,
            io,
            cache,
            logs: RwLock::new(logs),
            pending_dir_deletes: Mutex::new(Vec::new()),
            delete_seq: AtomicU64::new(0),
        })
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
        };
        let log = Arc::new(Log::open_with(&path, config, opts)?);
        logs.insert((topic.to_string(), partition), (log.clone(), i));
        Ok(log)
    }

    /// Deletes a partition log: closes it, renames its directory to `<name>.<n>-delete` and removes that
    /// on the next retention pass (readers holding open files keep working until then).
    pub fn delete(&self, topic: &str, partition: i32) -> Result<(), StorageError> {
        let Some((log, _)) = self.logs.write().remove(&(topic.to_string(), partition)) else {
            return Ok(());
        };
        log.close_for_delete();
        let dir = log.dir().to_path_buf();
        let seq = self.delete_seq.fetch_add(1, Ordering::Relaxed);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = dir.with_file_name(format!(
            "{name}.{seq}-{}{DELETE_DIR_SUFFIX}",
            std::process::id()
        ));
        self.io
            .rename(&dir, &target)
            .map_err(|e| StorageError::from_io(&dir, e))?;
        if let Some(parent) = target.parent() {
            let _ = self.io.sync_dir(parent);
        }
        self.pending_dir_deletes.lock().push(target);
        Ok(())
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
        self.logs.read().values().map(|(l, _)| l.clone()).collect()
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

    /// Clean shutdown: closes every log (fsync, checkpoints, clean-shutdown marker). Returns the first
    /// error after trying them all.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        let mut first = None;
        for log in self.all_logs() {
            if let Err(e) = log.close() {
                tracing::error!(dir = %log.dir().display(), error = %e, "clean close failed");
                first.get_or_insert(e);
            }
        }
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
}
