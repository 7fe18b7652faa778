//! Group coordinator as a pure state machine over `__consumer_offsets` (Kafka's `group-coordinator` module for
//! classic groups): [`GroupCoordinatorShard`] owns one partition's groups and offsets, turns requests and timer
//! firings into records plus responses, and rebuilds itself by replaying the partition's records. No I/O, no
//! clock: the broker's `group_coordinator` module is the tokio shell around it.

pub mod group;
pub mod record;
pub mod shard;
pub mod txn;

#[cfg(test)]
mod tests;

pub use group::{ClassicGroup, GroupState, Member};
pub use record::{CoordinatorRecord, GroupMetadataValue, OffsetCommitValue, RecordError};
pub use shard::{
    ClientInfo, CommittedOffset, CoordinatorResult, Delivery, GroupCoordinatorConfig,
    GroupCoordinatorShard, GroupError, Parkable,
};

/// The internal topic that holds group metadata and committed offsets.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The internal topic that holds the transaction coordinator's state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Java's `String.hashCode` (over UTF-16 code units), which Kafka uses to place a group.
pub fn java_string_hash_code(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__consumer_offsets` partition of a group: `Utils.abs(groupId.hashCode()) % partitions`, as Kafka's
/// `GroupCoordinatorService.partitionFor` computes it (`Utils.abs(Integer.MIN_VALUE)` is 0).
pub fn partition_for(group_id: &str, num_partitions: i32) -> i32 {
    let h = java_string_hash_code(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % num_partitions.max(1)
}
