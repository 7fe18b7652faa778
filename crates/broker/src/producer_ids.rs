//! Producer id allocation for idempotent producers (InitProducerId): unique across restarts.
//!
//! Ids are handed out from blocks of [`PRODUCER_ID_BLOCK_SIZE`]. Before the first id of a block is handed out,
//! the end of that block is written durably to `<metadata.log.dir>/producer-ids` (write to a temporary file,
//! fsync, rename, fsync the directory), so after any crash the next block starts beyond every id ever returned.
//! An id is never reused; a crash only skips the rest of a block. (Kafka allocates the same kind of blocks
//! through the controller's metadata log; this file stands in until the controller does.)

use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Ids reserved per durable write.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// The file holding the first id of the next unreserved block.
pub const PRODUCER_IDS_FILE: &str = "producer-ids";

/// Why an id could not be allocated.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    /// The allocation file could not be read or written.
    #[error("producer id file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The allocation file does not hold a non-negative integer.
    #[error("producer id file {path} is corrupt: {content:?}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// Every id up to `i64::MAX` has been used.
    #[error("producer ids exhausted")]
    Exhausted,
}

/// Hands out unique producer ids; `Send + Sync`.
#[derive(Debug)]
pub struct ProducerIdManager {
    path: PathBuf,
    /// (next id to hand out, end of the reserved block, exclusive).
    state: Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    /// Opens (or starts) the allocator whose state lives in `dir`.
    pub fn open(dir: &Path) -> Result<ProducerIdManager, ProducerIdError> {
        let path = dir.join(PRODUCER_IDS_FILE);
        let next_block = match std::fs::read_to_string(&path) {
            Ok(content) => content
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= 0)
                .ok_or(ProducerIdError::Corrupt {
                    path: path.clone(),
                    content,
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(ProducerIdError::Io { path, source }),
        };
        // Nothing of the next block is reserved yet: the first `generate` reserves it.
        Ok(ProducerIdManager {
            path,
            state: Mutex::new((next_block, next_block)),
        })
    }

    /// A new producer id. Blocking (may fsync): call it from `spawn_blocking` in async code.
    pub fn generate(&self) -> Result<i64, ProducerIdError> {
        let mut state = self.state.lock();
        let (next, block_end) = *state;
        if next >= block_end {
            let new_end = next
                .checked_add(PRODUCER_ID_BLOCK_SIZE)
                .ok_or(ProducerIdError::Exhausted)?;
            self.persist(new_end)?;
            *state = (next, new_end);
        }
        state.0 = next + 1;
        Ok(next)
    }

    fn persist(&self, next_block: i64) -> Result<(), ProducerIdError> {
        let io = |source| ProducerIdError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(format!("{next_block}\n").as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let m = ProducerIdManager::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| m.generate().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(m);
        // A restart (or crash) skips the rest of the block: never an id handed out before.
        let m = ProducerIdManager::open(dir.path()).unwrap();
        assert_eq!(m.generate().unwrap(), PRODUCER_ID_BLOCK_SIZE);
        // Crossing a block boundary reserves the next block.
        for _ in 1..PRODUCER_ID_BLOCK_SIZE {
            m.generate().unwrap();
        }
        assert_eq!(m.generate().unwrap(), 2 * PRODUCER_ID_BLOCK_SIZE);
        let m = ProducerIdManager::open(dir.path()).unwrap();
        assert_eq!(m.generate().unwrap(), 3 * PRODUCER_ID_BLOCK_SIZE);
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PRODUCER_IDS_FILE), "banana").unwrap();
        assert!(matches!(
            ProducerIdManager::open(dir.path()),
            Err(ProducerIdError::Corrupt { .. })
        ));
    }
}
