//! The Sluice partition log: segmented, indexed, recoverable storage for one partition (`Log`) and for
//! every partition under `log.dirs` (`LogManager`). No tokio; all file access goes through the [`io`] seam.
//!
//! See `docs/storage.md` for the file formats, what each flush setting promises and how recovery works.

/// Per-partition log configuration (Kafka's topic-level log settings and defaults).
pub mod config;
/// The leader-epoch cache (epoch -> start offset) and its checkpoint format.
pub mod epoch;
/// Typed storage errors.
pub mod error;
/// Offset and time index entries, their file formats and the index builder.
pub mod index;
/// The file-system seam, the real implementation and a fault-injecting one for tests.
pub mod io;
/// One partition's log.
pub mod log;
/// Every partition log under `log.dirs`.
pub mod manager;
/// Idempotent and transactional producer state (KIP-98) and its snapshot files.
pub mod producer_state;
pub mod records;
/// Segment file naming, the recovery scan and the cache of opened inactive segments.
pub mod segment;
/// The transaction index of a segment (aborted transactions) and its file format.
pub mod txn_index;

pub use config::{LogConfig, TimestampType};
pub use error::{AppendError, ReadError, StorageError};
pub use log::{
    AppendInfo, AppendOrigin, DirHealth, FileReadResult, Log, LogOptions, ReadResult,
    TimestampOffset,
};
pub use manager::LogManager;
pub use producer_state::{
    CompletedTxn, OngoingTxn, ProducerBatch, ProducerEntry, ProducerError, ProducerState,
};
pub use records::ControlType;
pub use txn_index::AbortedTxn;
