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
#[derive(Clone, Debug, PartialEq, Eq)]
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
        }
    }
}
