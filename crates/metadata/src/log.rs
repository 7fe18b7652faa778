//! The metadata log's directory: its name under the metadata dir and the lock that keeps one process on it. The log
//! itself is the Raft quorum's (`crate::quorum::store`); `meta.properties` is `crate::meta_properties`.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The directory holding the quorum's files, inside the metadata dir. Not Kafka's `__cluster_metadata-0`: the
/// metadata dir defaults to the first of `log.dirs`, and a `<topic>-<partition>` name would make the storage
/// `LogManager` open it as a partition log and "recover" (truncate) our differently framed files.
pub const LOG_DIR_NAME: &str = "__cluster_metadata";

/// The metadata log's directory could not be prepared.
#[derive(Debug, Error)]
pub enum LogError {
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// Another broker (process or instance) holds the metadata log.
    #[error("{0} is locked by another broker using the same metadata dir")]
    Locked(PathBuf),
}

/// Creates `dir` if needed and takes an exclusive, non-blocking `flock` on `<dir>/.lock`, retrying for up to
/// `wait_ms`. Two writers on one metadata log would fork it; the lock is released when the file is closed,
/// including by a crash.
pub fn lock_dir(dir: &Path, wait_ms: u64) -> Result<File, LogError> {
    use rustix::fs::{flock, FlockOperation};
    std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
        context: format!("create {}", dir.display()),
        source,
    })?;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LogError::Io {
            context: format!("open {}", path.display()),
            source,
        })?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                if std::time::Instant::now() >= deadline {
                    return Err(LogError::Locked(path));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                return Err(LogError::Io {
                    context: format!("lock {}", path.display()),
                    source: e.into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_locker_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path(), 0).unwrap();
        assert!(matches!(lock_dir(dir.path(), 0), Err(LogError::Locked(_))));
        drop(first);
        lock_dir(dir.path(), 0).unwrap();
    }
}
