//! DeleteRecords (key 21), v0-v2: moves each partition's log start offset forward to the requested offset (-1 =
//! the high watermark), deleting whole segments below it, and answers the new low watermark.
//!
//! As in Kafka: an offset above the high watermark (or negative other than -1) is OFFSET_OUT_OF_RANGE, and a
//! compacted topic (cleanup.policy without `delete`) is POLICY_VIOLATION. Single node: the low watermark is this
//! log's start offset, so there is nothing to wait for and `timeout_ms` is not used.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use sluice_protocol::ErrorCode;

use super::RequestContext;
use crate::broker::Broker;

/// The request offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;
/// The low watermark reported with an error.
const INVALID_LOW_WATERMARK: i64 = -1;

/// Deletes records in every requested partition.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let timeout = std::time::Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let result =
                delete_partition(broker, &name, p.partition_index, p.offset, timeout).await;
            let entry =
                DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            partitions.push(match result {
                Ok(low_watermark) => entry.with_low_watermark(low_watermark),
                Err(code) => entry
                    .with_low_watermark(INVALID_LOW_WATERMARK)
                    .with_error_code(code),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

async fn delete_partition(
    broker: &Arc<Broker>,
    topic: &str,
    index: i32,
    offset: i64,
    timeout: std::time::Duration,
) -> Result<i64, i16> {
    let partition = broker.replicas.partition(topic, index)?;
    // The effective `cleanup.policy` (the topic's, else `log.cleanup.policy`): without `delete`, records leave
    // only through compaction.
    if !partition.log.config().delete {
        return Err(ErrorCode::PolicyViolation.code());
    }
    let high_watermark = partition.log.high_watermark();
    let offset = if offset == HIGH_WATERMARK {
        high_watermark
    } else {
        offset
    };
    if offset < 0 || offset > high_watermark {
        return Err(ErrorCode::OffsetOutOfRange.code());
    }
    let log = partition.log.clone();
    // Deleting segments touches the file system: keep it off the async workers.
    match tokio::task::spawn_blocking(move || log.delete_records_before(offset)).await {
        Ok(Ok(_)) => {
            // Kafka's DelayedDeleteRecords: the answer waits until the in-sync followers moved their log start too
            // (they take the leader's from their next fetch).
            if !partition.wait_low_watermark(offset, timeout).await {
                return Err(ErrorCode::RequestTimedOut.code());
            }
            Ok(partition.low_watermark())
        }
        Ok(Err(e)) => {
            tracing::error!(topic, partition = index, error = %e, "DeleteRecords failed in storage");
            Err(ErrorCode::KafkaStorageError.code())
        }
        Err(e) => {
            tracing::error!(topic, partition = index, error = %e, "DeleteRecords task failed");
            Err(ErrorCode::KafkaStorageError.code())
        }
    }
}
