//! Typed storage errors: one enum per operation family, mapped to Kafka error codes at the broker edge.

use std::path::PathBuf;

/// A failure of the storage layer itself (I/O, full disk, offline directory, corrupt files).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O error on `path`.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A write failed with ENOSPC on `path`.
    #[error("disk full writing {path}")]
    DiskFull {
        /// The file that could not be written.
        path: PathBuf,
    },
    /// The log directory `dir` is offline after an earlier I/O error.
    #[error("log directory {dir} is offline")]
    Offline {
        /// The offline log directory.
        dir: PathBuf,
    },
    /// On-disk data is corrupt beyond what recovery repairs.
    #[error("corrupt log data: {0}")]
    Corrupt(String),
    /// An argument is out of range (for example a truncation to a negative offset).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// DeleteRecords asked to move the log start offset past the high watermark (`OFFSET_OUT_OF_RANGE`).
    #[error("offset {offset} is above the high watermark {high_watermark}")]
    AboveHighWatermark {
        /// The requested new log start offset.
        offset: i64,
        /// The current high watermark.
        high_watermark: i64,
    },
    /// Another instance (process or, in tests, another `LogManager` in this process) holds the log
    /// directory's `.lock`.
    #[error("failed to acquire lock on {dir}/.lock: another broker instance is using this log directory")]
    Locked {
        /// The locked log directory.
        dir: PathBuf,
    },
    /// The log was closed (shut down or deleted).
    #[error("log {dir} is closed")]
    Closed {
        /// The partition directory.
        dir: PathBuf,
    },
}

impl StorageError {
    /// Maps an I/O error on `path`: ENOSPC becomes [`StorageError::DiskFull`], anything else
    /// [`StorageError::Io`].
    pub fn from_io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            StorageError::DiskFull { path: path.into() }
        } else {
            StorageError::Io {
                path: path.into(),
                source,
            }
        }
    }
}

/// Why an append was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Framing or CRC is wrong (`CORRUPT_MESSAGE`).
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// Well-framed but not acceptable (`INVALID_RECORD`).
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    /// A batch exceeds `max.message.bytes` (`MESSAGE_TOO_LARGE`).
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge {
        /// Size of the offending batch in bytes.
        size: usize,
        /// The configured limit.
        max: u64,
    },
    /// The batch is not magic v2 (`UNSUPPORTED_FOR_MESSAGE_FORMAT`).
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// An idempotent producer's batch has a stale epoch or an out-of-order sequence
    /// (`INVALID_PRODUCER_EPOCH`, `OUT_OF_ORDER_SEQUENCE_NUMBER`).
    #[error(transparent)]
    Producer(#[from] crate::producer_state::ProducerError),
    /// The batch repeats one of the producer's last batches (a retry): it was appended before at these
    /// offsets and is not appended again. The producer gets success with the original offsets.
    #[error("duplicate batch of producer {producer_id}, appended at offsets {base_offset}..={last_offset}")]
    DuplicateSequence {
        /// The producer.
        producer_id: i64,
        /// Offset of the original batch's first record.
        base_offset: i64,
        /// Offset of the original batch's last record.
        last_offset: i64,
        /// The original batch's max timestamp.
        max_timestamp_ms: i64,
    },
    /// The storage layer failed (`KAFKA_STORAGE_ERROR`).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// `offset` lies outside `[log_start_offset, log_end_offset]` (`OFFSET_OUT_OF_RANGE`).
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// The current log start offset.
        log_start_offset: i64,
        /// The current log end offset.
        log_end_offset: i64,
    },
    /// The storage layer failed (`KAFKA_STORAGE_ERROR`).
    #[error(transparent)]
    Storage(#[from] StorageError),
}
