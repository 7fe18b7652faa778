//! Pure controller logic: each operation reads the current [`MetadataImage`] and returns the records to
//! append with the response to send, as Kafka's `ControllerResult`. Nothing here does I/O or changes
//! state; the driver appends the records to the metadata log and replays them into the next image.

mod brokers;
mod configs;
mod election;
mod isr;
mod reassign;
mod topics;

pub use brokers::{
    allocate_producer_ids, broker_heartbeat, broker_heartbeat_with, fence_broker,
    is_eligible_leader, register_broker, register_broker_with, Heartbeat, HeartbeatOutcome,
    ProducerIdBlock, RegistrationOutcome, CLEAN_SHUTDOWN_UNKNOWN, PRODUCER_ID_BLOCK_SIZE,
};
pub use configs::{
    alter_configs, incremental_alter_configs, AlterConfigOp, AlterConfigsOutcome,
    AlterConfigsResource, ConfigOpType, IncrementalAlterConfigsResource,
};
pub use election::{
    elect_leaders, periodic_elections, ElectLeadersOutcome, ElectionConfig, ElectionTarget,
    ElectionType, PartitionElectionOutcome, TopicElectionOutcome, MAX_ELECTIONS_PER_IMBALANCE,
    UNCLEAN_LEADER_ELECTION_ENABLE,
};
pub use isr::{alter_partition, AlterPartitionOutcome, IsrChange, IsrChangeOutcome};
pub use reassign::{
    alter_partition_reassignments, list_partition_reassignments, OngoingReassignment,
    ReassignmentOutcome, ReassignmentTarget,
};
pub use topics::{
    create_partitions, create_topics, delete_topics, is_internal_topic, validate_topic_name,
    CreatePartitions, CreatePartitionsOutcome, CreateTopicOutcome, DeleteTopicOutcome,
    DeleteTopicTarget, NewTopic, CLUSTER_METADATA_TOPIC, MAX_RECORDS_PER_USER_OP,
    MAX_TOPIC_NAME_LENGTH,
};

use crate::record::MetadataRecord;

/// What an operation returns: the records to append atomically, and the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerResult<T> {
    /// Records to append, as one atomic batch (empty when nothing changes).
    pub records: Vec<MetadataRecord>,
    /// The response to the caller.
    pub response: T,
}

/// Broker-level defaults the controller applies when a request says -1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerDefaults {
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
}

impl Default for ControllerDefaults {
    fn default() -> Self {
        Self {
            num_partitions: 1,
            default_replication_factor: 1,
        }
    }
}
