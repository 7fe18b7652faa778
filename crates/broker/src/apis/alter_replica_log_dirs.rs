//! AlterReplicaLogDirs (key 34), v1-v2: moves replicas this broker hosts into another of its `log.dirs` (KIP-113).
//! The move runs in the background (`sluice_storage::manager::LogManager::alter_log_dir`: the log is copied into a
//! `-future` directory without stopping the partition, then swapped in under its lock); the answer comes at once
//! and DescribeLogDirs shows the progress (the future replica) until the swap. Each broker answers for its own
//! replicas (not forwarded).
//!
//! Errors as Kafka's `ReplicaManager.alterReplicaLogDirs`, checked in its order: INVALID_TOPIC_EXCEPTION when the
//! future directory's name would pass 255 bytes, LOG_DIR_NOT_FOUND for a path that is not one of `log.dirs`,
//! KAFKA_STORAGE_ERROR for an offline directory (the target's or the replica's), REPLICA_NOT_AVAILABLE for a
//! partition this broker holds no replica of (UNKNOWN_TOPIC_OR_PARTITION when the metadata has no such partition),
//! and success when the replica is already there or a move to that directory is in progress.

use std::path::Path;
use std::sync::Arc;

use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::{
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use sluice_storage::manager::AlterLogDirError;

use super::RequestContext;
use crate::broker::Broker;

/// Starts the requested moves.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    let image = broker.replicas.image();
    let mut results: Vec<AlterReplicaLogDirTopicResult> = Vec::new();
    for dir in &request.dirs {
        let path = Path::new(dir.path.as_str());
        for topic in &dir.topics {
            let name = topic.name.0.as_str();
            for &partition in &topic.partitions {
                let in_metadata = image.topic(name).is_some_and(|t| {
                    usize::try_from(partition).is_ok_and(|i| i < t.partitions.len())
                });
                let code = match broker.logs.alter_log_dir(name, partition, path) {
                    Ok(_) => 0,
                    Err(e) => {
                        tracing::warn!(topic = name, partition, dir = %path.display(), error = %e, "cannot alter the replica's log directory");
                        error_code(&e, in_metadata)
                    }
                };
                let entry = AlterReplicaLogDirPartitionResult::default()
                    .with_partition_index(partition)
                    .with_error_code(code);
                match results.iter_mut().find(|t| t.topic_name.0.as_str() == name) {
                    Some(t) => t.partitions.push(entry),
                    None => results.push(
                        AlterReplicaLogDirTopicResult::default()
                            .with_topic_name(TopicName(StrBytes::from_string(name.to_string())))
                            .with_partitions(vec![entry]),
                    ),
                }
            }
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(results)
}

/// Kafka's error for a refused move; a partition without a replica here is UNKNOWN_TOPIC_OR_PARTITION when the
/// metadata does not have it (Kafka's `getPartitionOrException`).
fn error_code(e: &AlterLogDirError, in_metadata: bool) -> i16 {
    match e {
        AlterLogDirError::LogDirNotFound(_) => ErrorCode::LogDirNotFound.code(),
        AlterLogDirError::Offline(_) | AlterLogDirError::Unavailable(_) => {
            ErrorCode::KafkaStorageError.code()
        }
        AlterLogDirError::NoReplica if in_metadata => ErrorCode::ReplicaNotAvailable.code(),
        AlterLogDirError::NoReplica => ErrorCode::UnknownTopicOrPartition.code(),
        AlterLogDirError::InvalidTopic => ErrorCode::InvalidTopicException.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_kafkas_errors() {
        assert_eq!(
            error_code(&AlterLogDirError::LogDirNotFound("/x".into()), true),
            57
        );
        assert_eq!(
            error_code(&AlterLogDirError::Offline("/x".into()), true),
            56
        );
        assert_eq!(error_code(&AlterLogDirError::NoReplica, true), 9);
        assert_eq!(error_code(&AlterLogDirError::NoReplica, false), 3);
        assert_eq!(error_code(&AlterLogDirError::InvalidTopic, true), 17);
    }
}
