//! The log cleaner's side of the manager (Kafka's `LogCleanerManager`): which compacted log to clean next,
//! which logs are being cleaned, and the per-directory `cleaner-offset-checkpoint`.

use std::collections::HashMap;

use crate::io::{read_file, write_file_atomic};
use crate::log::{CleanOptions, CleanStats, CleanableState};
use crate::StorageError;

use super::{encode_high_watermarks, parse_high_watermarks, LogManager};

/// Each log directory's first dirty offset per compacted partition, in Kafka's `OffsetCheckpointFile` format.
pub const CLEANER_OFFSET_CHECKPOINT: &str = "cleaner-offset-checkpoint";

/// The cleaner's view of one compacted partition ([`LogManager::cleaner_states`]).
#[derive(Clone, Debug)]
pub struct CleanerStatus {
    /// Topic and partition.
    pub partition: (String, i32),
    /// Dirty ratio and cleanable range.
    pub state: CleanableState,
    /// When its last pass ended (ms since the epoch), -1 before the first.
    pub last_clean_ms: i64,
}

impl LogManager {
    /// Reads every online directory's cleaner checkpoint into its logs (at open).
    pub(super) fn load_cleaner_checkpoints(&self) {
        let logs = self.logs.read();
        for (i, health) in self.dirs.iter().enumerate() {
            if health.is_offline() {
                continue;
            }
            let path = health.dir().join(CLEANER_OFFSET_CHECKPOINT);
            if !self.io.exists(&path) {
                continue;
            }
            let entries = read_file(&*self.io, &path)
                .map_err(|e| e.to_string())
                .and_then(|b| parse_high_watermarks(&b))
                .unwrap_or_else(|reason| {
                    tracing::warn!(path = %path.display(), %reason, "ignoring an invalid cleaner checkpoint; its logs are cleaned from the start");
                    HashMap::new()
                });
            for (key, offset) in entries {
                if let Some((log, dir)) = logs.get(&key) {
                    if *dir == i {
                        log.set_cleaner_checkpoint(offset);
                    }
                }
            }
        }
    }

    /// The cleaner's state of every compacted log.
    pub fn cleaner_states(&self, now_ms: i64) -> Vec<CleanerStatus> {
        let logs: Vec<_> = self
            .logs
            .read()
            .iter()
            .map(|(k, (log, _))| (k.clone(), log.clone()))
            .collect();
        let mut out: Vec<CleanerStatus> = logs
            .into_iter()
            .filter_map(|(partition, log)| {
                let state = log.cleanable_state(now_ms)?;
                Some(CleanerStatus {
                    partition,
                    state,
                    last_clean_ms: log.last_clean_ms(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.partition.cmp(&b.partition));
        out
    }

    /// One cleaner thread's step: picks the compacted log that needs cleaning most (a tombstone or
    /// `max.compaction.lag.ms` due first, then the highest dirty ratio at or above its
    /// `min.cleanable.dirty.ratio`), not being cleaned by another thread and not marked uncleanable by a
    /// failed pass, cleans it, and writes its directory's checkpoint. `None` when no log needs cleaning.
    pub fn clean_filthiest(&self, options: &CleanOptions) -> Option<((String, i32), CleanStats)> {
        let (key, log) = {
            let mut cleaning = self.cleaning.lock();
            let uncleanable = self.uncleanable.lock();
            let logs = self.logs.read();
            let mut best: Option<(bool, f64, (String, i32))> = None;
            for (key, (log, i)) in logs.iter() {
                if cleaning.contains(key) || self.dirs[*i].is_offline() || uncleanable.contains(key)
                {
                    continue;
                }
                let Some(state) = log.cleanable_state(options.now_ms) else {
                    continue;
                };
                if !state.needs_cleaning(log.config().min_cleanable_dirty_ratio) {
                    continue;
                }
                let urgent = state.lag_exceeded || state.tombstones_due;
                let better = best
                    .as_ref()
                    .is_none_or(|(u, r, _)| (urgent, state.dirty_ratio) > (*u, *r));
                if better {
                    best = Some((urgent, state.dirty_ratio, key.clone()));
                }
            }
            let (_, _, key) = best?;
            let log = logs.get(&key)?.0.clone();
            cleaning.insert(key.clone());
            (key, log)
        };
        let result = log.clean(options);
        self.cleaning.lock().remove(&key);
        match result {
            Ok(Some(stats)) => {
                if let Err(e) = self.write_cleaner_checkpoint(&log) {
                    tracing::warn!(error = %e, "cannot write the cleaner checkpoint");
                }
                Some((key, stats))
            }
            Ok(None) => None,
            Err(e) => {
                // As Kafka's uncleanable partitions: not tried again until the log is deleted or the broker
                // restarts, so a log the cleaner cannot read does not keep a cleaner thread busy.
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "log cleaning failed; marking the partition uncleanable");
                self.uncleanable.lock().insert(key);
                None
            }
        }
    }

    /// Writes the cleaner checkpoint of the directory holding `log`.
    fn write_cleaner_checkpoint(&self, log: &crate::Log) -> Result<(), StorageError> {
        let _serial = self.cleaner_checkpoint.lock();
        let dir = log.dir();
        let Some(parent) = dir.parent() else {
            return Ok(());
        };
        let mut entries: Vec<((String, i32), i64)> = self
            .logs
            .read()
            .iter()
            .filter(|(_, (l, _))| l.dir().parent() == Some(parent))
            .filter(|((topic, _), (l, _))| {
                l.cleaner_checkpoint() >= 0 && !topic.contains(char::is_whitespace)
            })
            .map(|(k, (l, _))| (k.clone(), l.cleaner_checkpoint()))
            .collect();
        entries.sort();
        let path = parent.join(CLEANER_OFFSET_CHECKPOINT);
        write_file_atomic(&*self.io, &path, &encode_high_watermarks(&entries))
            .map_err(|e| StorageError::from_io(&path, e))
    }
}
