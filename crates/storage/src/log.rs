//! One partition log (skeleton; bodies land next).
#![allow(unused_variables)]

use std::path::PathBuf;

use crate::{AppendError, LogConfig, ReadError, StorageError};

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
    pub data: bytes::Bytes,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
    /// Log end offset at the time of the read.
    pub log_end_offset: i64,
    /// High watermark at the time of the read.
    pub high_watermark: i64,
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

/// One partition's log.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering if the last shutdown was unclean.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Log, StorageError> {
        todo!()
    }
    /// Appends producer batches as leader.
    pub fn append_as_leader(
        &self,
        batches: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        todo!()
    }
    /// Reads whole batches.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<ReadResult, ReadError> {
        todo!()
    }
    /// Log start offset.
    pub fn log_start_offset(&self) -> i64 {
        todo!()
    }
    /// Log end offset.
    pub fn log_end_offset(&self) -> i64 {
        todo!()
    }
    /// High watermark.
    pub fn high_watermark(&self) -> i64 {
        todo!()
    }
    /// Sets the high watermark.
    pub fn set_high_watermark(&self, offset: i64) {
        todo!()
    }
    /// Recovery point.
    pub fn recovery_point(&self) -> i64 {
        todo!()
    }
    /// ListOffsets by timestamp.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, StorageError> {
        todo!()
    }
    /// KIP-734.
    pub fn max_timestamp_offset(&self) -> Result<Option<TimestampOffset>, StorageError> {
        todo!()
    }
    /// Latest leader epoch.
    pub fn latest_epoch(&self) -> Option<i32> {
        todo!()
    }
    /// OffsetForLeaderEpoch.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        todo!()
    }
    /// Truncate the tail.
    pub fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        todo!()
    }
    /// Empty the log and restart it at `offset`.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), StorageError> {
        todo!()
    }
    /// DeleteRecords.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        todo!()
    }
    /// Retention.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        todo!()
    }
    /// Fsync everything.
    pub fn flush(&self) -> Result<i64, StorageError> {
        todo!()
    }
    /// Current config.
    pub fn config(&self) -> LogConfig {
        todo!()
    }
    /// Replace config.
    pub fn update_config(&self, config: LogConfig) {
        todo!()
    }
    /// Total size.
    pub fn size_bytes(&self) -> u64 {
        todo!()
    }
    /// Clean close.
    pub fn close(&self) -> Result<(), StorageError> {
        todo!()
    }
}
