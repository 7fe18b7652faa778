//! The Sluice partition log: segmented, indexed, recoverable storage for one partition (`Log`) and for
//! every partition under `log.dirs` (`LogManager`). No tokio; all file access goes through the `io` seam.

pub mod config;
pub mod error;
pub mod log;
pub mod manager;

pub use config::{LogConfig, TimestampType};
pub use error::{AppendError, ReadError, StorageError};
pub use log::{AppendInfo, Log, ReadResult, TimestampOffset};
pub use manager::LogManager;
