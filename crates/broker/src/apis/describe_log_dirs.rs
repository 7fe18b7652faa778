//! DescribeLogDirs (key 35), v1-v4: every `log.dirs` entry of this broker with its error (KAFKA_STORAGE_ERROR when
//! offline), absolute path, the partitions it holds (size in bytes, offset lag, and the future replica of a
//! log-directory move in progress, `is_future_key`), and from v4 the file system's total and usable bytes
//! (KIP-827). A null topic list asks for every partition; a list filters, and topics left with no partition are
//! omitted, as Kafka's `ReplicaManager.describeLogDirs` does. Each broker answers for its own directories (not
//! forwarded). Sluice has no ACLs yet, so CLUSTER_AUTHORIZATION_FAILED is never answered.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use sluice_storage::manager::LogDirInfo;

use super::RequestContext;
use crate::broker::Broker;

/// Describes this broker's log directories.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted: Option<HashSet<(String, i32)>> = request.topics.map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect()
    });
    // statvfs and the directory walk are blocking file-system calls.
    let logs = broker.logs.clone();
    let dirs = match tokio::task::spawn_blocking(move || logs.describe_log_dirs()).await {
        Ok(dirs) => dirs,
        Err(e) => {
            tracing::error!(error = %e, "describing log directories failed");
            return DescribeLogDirsResponse::default()
                .with_error_code(ErrorCode::UnknownServerError.code());
        }
    };
    DescribeLogDirsResponse::default().with_results(
        dirs.into_iter()
            .map(|dir| dir_result(dir, wanted.as_ref()))
            .collect(),
    )
}

/// One directory's result: its replicas that `wanted` names (all when `None`), grouped by topic.
fn dir_result(dir: LogDirInfo, wanted: Option<&HashSet<(String, i32)>>) -> DescribeLogDirsResult {
    let result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(dir.dir.display().to_string()));
    if dir.offline {
        return result.with_error_code(ErrorCode::KafkaStorageError.code());
    }
    let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
    for r in dir.replicas {
        if wanted.is_some_and(|w| !w.contains(&(r.topic.clone(), r.partition))) {
            continue;
        }
        let partition = DescribeLogDirsPartition::default()
            .with_partition_index(r.partition)
            .with_partition_size(i64::try_from(r.size_bytes).unwrap_or(i64::MAX))
            .with_offset_lag(r.offset_lag)
            .with_is_future_key(r.is_future);
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == r.topic => t.partitions.push(partition),
            _ => topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(r.topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    // Java's FileStore reports a negative size for file systems above 8 EiB; Kafka answers Long.MAX_VALUE.
    let bytes = |b: Option<u64>| b.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
    result
        .with_error_code(0)
        .with_topics(topics)
        .with_total_bytes(bytes(dir.total_bytes))
        .with_usable_bytes(bytes(dir.usable_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::manager::ReplicaInfo;

    fn replica(topic: &str, partition: i32, is_future: bool) -> ReplicaInfo {
        ReplicaInfo {
            topic: topic.into(),
            partition,
            size_bytes: 10,
            offset_lag: if is_future { 5 } else { 0 },
            is_future,
        }
    }

    fn dir(offline: bool) -> LogDirInfo {
        LogDirInfo {
            dir: "/data/a".into(),
            offline,
            total_bytes: Some(1000),
            usable_bytes: Some(400),
            replicas: vec![
                replica("a", 0, false),
                replica("a", 1, false),
                replica("a", 1, true),
                replica("b", 0, false),
            ],
        }
    }

    #[test]
    fn replicas_are_grouped_by_topic_and_filtered_like_kafka() {
        let all = dir_result(dir(false), None);
        assert_eq!(all.error_code, 0);
        assert_eq!(all.log_dir.as_str(), "/data/a");
        assert_eq!((all.total_bytes, all.usable_bytes), (1000, 400));
        assert_eq!(all.topics.len(), 2);
        assert_eq!(all.topics[0].partitions.len(), 3);
        assert!(all.topics[0].partitions[2].is_future_key);
        assert_eq!(all.topics[0].partitions[2].offset_lag, 5);
        let wanted: HashSet<(String, i32)> = [("a".to_string(), 0)].into();
        let some = dir_result(dir(false), Some(&wanted));
        // Topic b has no wanted partition: omitted, as Kafka filters empty topics.
        assert_eq!(some.topics.len(), 1);
        assert_eq!(some.topics[0].partitions.len(), 1);
        let none = dir_result(dir(false), Some(&HashSet::new()));
        assert!(none.topics.is_empty());
        assert_eq!(none.error_code, 0);
    }

    #[test]
    fn an_offline_directory_is_a_storage_error_without_topics() {
        let r = dir_result(dir(true), None);
        assert_eq!(r.error_code, ErrorCode::KafkaStorageError.code());
        assert!(r.topics.is_empty());
        assert_eq!((r.total_bytes, r.usable_bytes), (-1, -1));
    }
}
