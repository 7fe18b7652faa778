//! The Sluice partition log: segmented, indexed, recoverable storage for one partition (`Log`) and for
//! every partition under `log.dirs` (`LogManager`). No tokio; all file access goes through the [`io`] seam.
//!
//! See `docs/storage.md` for the file formats, what each flush setting promises and how recovery works.

pub mod config;
pub mod epoch;
pub mod error;
pub mod index;
pub mod io;
pub mod log;
pub mod manager;
pub mod segment;

pub use config::{LogConfig, TimestampType};
pub use error::{AppendError, ReadError, StorageError};
pub use log::{AppendInfo, DirHealth, Log, LogOptions, ReadResult, TimestampOffset};
pub use manager::LogManager;
