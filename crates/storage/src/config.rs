//! Per-partition log configuration with Kafka's defaults.

/// Which timestamp a batch carries: the producer's (`CreateTime`) or the broker's append time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestampType {
    /// Keep the producer's timestamps (`message.timestamp.type=CreateTime`).
    #[default]
    CreateTime,
    /// Overwrite the batch max timestamp with the broker's append time.
    LogAppendTime,
}

/// Configuration of one partition log; `Default` gives Kafka's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// Roll the active segment when it would exceed this size (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll the active segment when its first batch is older than this (`segment.ms`).
    pub segment_ms: i64,
    /// Roll when the offset index reaches this size (`segment.index.bytes`).
    pub segment_index_bytes: u64,
    /// Bytes between offset index entries (`index.interval.bytes`).
    pub index_interval_bytes: u64,
    /// Largest accepted batch (`max.message.bytes`).
    pub max_message_bytes: u64,
    /// Delete segments older than this; -1 keeps forever (`retention.ms`).
    pub retention_ms: i64,
    /// Delete oldest segments while the log exceeds this; -1 is unbounded (`retention.bytes`).
    pub retention_bytes: i64,
    /// Fsync after this many unflushed messages (`flush.messages`); `None` never forces.
    pub flush_messages: Option<u64>,
    /// Fsync when the last flush is older than this (`flush.ms`); `None` never forces.
    pub flush_ms: Option<u64>,
    /// CreateTime or LogAppendTime (`message.timestamp.type`).
    pub timestamp_type: TimestampType,
    /// Delay before a `.deleted` segment file is removed (`file.delete.delay.ms`).
    pub file_delete_delay_ms: u64,
    /// `cleanup.policy` holds `compact`: the log cleaner keeps the latest record of every key.
    pub compact: bool,
    /// `cleanup.policy` holds `delete`: retention by time and size applies. A compact-only log keeps every
    /// segment retention would delete, as Kafka does.
    pub delete: bool,
    /// Clean a compacted log once its dirty part is at least this share of it (`min.cleanable.dirty.ratio`).
    pub min_cleanable_dirty_ratio: f64,
    /// How long a tombstone stays readable after the cleaner first saw it (`delete.retention.ms`, KIP-534).
    pub delete_retention_ms: i64,
    /// Records younger than this are never compacted (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
    /// A record stays uncompacted at most this long, whatever the dirty ratio (`max.compaction.lag.ms`).
    pub max_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            flush_messages: None,
            flush_ms: None,
            timestamp_type: TimestampType::CreateTime,
            file_delete_delay_ms: 60_000,
            compact: false,
            delete: true,
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}
