//! WriteTxnMarkers (key 27), v1: the transaction coordinator's request to a partition leader to end a
//! producer's transaction on its partitions with a COMMIT or ABORT control batch. `write_local` is also the
//! coordinator's own path for the partitions this broker leads. A marker for a `__consumer_offsets` partition
//! goes through the group coordinator, which makes the transaction's offset commits visible or drops them.
//!
//! Each marker is appended as leader and answered once it is on every in-sync replica (Kafka appends markers
//! with acks=all). Errors per partition: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER,
//! NOT_ENOUGH_REPLICAS(_AFTER_APPEND), INVALID_PRODUCER_EPOCH (the producer moved past this transaction; the
//! coordinator stops retrying), REQUEST_TIMED_OUT, KAFKA_STORAGE_ERROR.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use sluice_coordinator::CONSUMER_OFFSETS_TOPIC;
use sluice_protocol::ErrorCode;
use sluice_storage::{AppendError, ProducerError};

use super::{now_ms, RequestContext};
use crate::broker::Broker;
use crate::partition::Replicated;
use crate::replica_manager::ProduceError;

/// How long a marker waits for the in-sync replicas.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes every marker of the request.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let mut markers = Vec::with_capacity(request.markers.len());
    for m in request.markers {
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in m.topics {
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for p in t.partition_indexes {
                let code = write_local(
                    broker,
                    &t.name.0,
                    p,
                    m.producer_id.0,
                    m.producer_epoch,
                    m.transaction_result,
                    m.coordinator_epoch,
                )
                .await;
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(code),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}

/// Writes one COMMIT (`commit`) or ABORT marker of `producer_id` to a partition this broker leads and waits for
/// its replication; the Kafka error code (0 when written).
pub(crate) async fn write_local(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> i16 {
    if topic == CONSUMER_OFFSETS_TOPIC {
        return match broker
            .groups
            .complete_transaction(
                partition,
                producer_id,
                producer_epoch,
                coordinator_epoch,
                commit,
            )
            .await
        {
            Ok(()) => 0,
            Err(e) => e.code(),
        };
    }
    let hosted = match broker.replicas.partition(topic, partition) {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    let now = now_ms();
    let mut batch = sluice_storage::records::control_batch(
        producer_id,
        producer_epoch,
        commit,
        coordinator_epoch,
        now,
    );
    let node_id = broker.config.node_id;
    let p = hosted.clone();
    let appended =
        match tokio::task::spawn_blocking(move || p.append_as_leader(node_id, &mut batch, -1, now))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "marker append task failed");
                return ErrorCode::KafkaStorageError.code();
            }
        };
    let info = match appended {
        Ok(info) => info,
        Err(e) => return marker_error(topic, partition, e),
    };
    match hosted
        .wait_replicated(info.last_offset, REPLICATION_TIMEOUT)
        .await
    {
        Replicated::Done => 0,
        Replicated::NotLeader => ErrorCode::NotLeaderOrFollower.code(),
        Replicated::BelowMinIsr => ErrorCode::NotEnoughReplicasAfterAppend.code(),
        Replicated::TimedOut => ErrorCode::RequestTimedOut.code(),
    }
}

fn marker_error(topic: &str, partition: i32, e: ProduceError) -> i16 {
    let code = match &e {
        ProduceError::NotLeader => ErrorCode::NotLeaderOrFollower,
        ProduceError::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
        ProduceError::InvalidProducerEpoch(_)
        | ProduceError::Append(AppendError::Producer(ProducerError::InvalidProducerEpoch {
            ..
        })) => ErrorCode::InvalidProducerEpoch,
        ProduceError::Append(AppendError::Storage(_)) => ErrorCode::KafkaStorageError,
        _ => ErrorCode::UnknownServerError,
    };
    tracing::debug!(topic, partition, error = %e, "transaction marker refused");
    code.code()
}
