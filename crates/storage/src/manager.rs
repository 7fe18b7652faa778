//! Every partition log under `log.dirs` (skeleton; bodies land next).
#![allow(unused_variables)]

use std::path::PathBuf;
use std::sync::Arc;

use crate::{Log, LogConfig, StorageError};

/// Owns every partition log under `log.dirs`.
#[derive(Debug)]
pub struct LogManager {
    dirs: Vec<PathBuf>,
}

impl LogManager {
    /// Opens every partition directory under `log_dirs`.
    pub fn open(
        log_dirs: Vec<PathBuf>,
        default_config: LogConfig,
    ) -> Result<LogManager, StorageError> {
        todo!()
    }
    /// The log of a partition, if present.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Log>> {
        todo!()
    }
    /// The log of a partition, created if absent.
    pub fn get_or_create(
        &self,
        topic: &str,
        partition: i32,
        config: LogConfig,
    ) -> Result<Arc<Log>, StorageError> {
        todo!()
    }
    /// Deletes a partition log.
    pub fn delete(&self, topic: &str, partition: i32) -> Result<(), StorageError> {
        todo!()
    }
    /// All partitions.
    pub fn partitions(&self) -> Vec<(String, i32)> {
        todo!()
    }
    /// Retention pass.
    pub fn run_retention(&self, now_ms: i64) {
        todo!()
    }
    /// flush.ms pass.
    pub fn flush_due(&self, now_ms: i64) {
        todo!()
    }
    /// Clean shutdown.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        todo!()
    }
}
