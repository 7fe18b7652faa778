//! Produce (key 0), v3-v11: appends each partition's record batch to its log as the leader.
//!
//! A batch is moved as bytes: its framing, magic and count are checked here from the header alone, the record
//! bytes are copied once into a mutable buffer (the request frame is shared and immutable) and handed to
//! `Log::append_as_leader`, which validates the CRC and rewrites base offset and leader epoch in place. No record
//! is decoded. acks=0 gets no response at all (the network layer drops it); acks=1 and acks=-1 answer after the
//! append: with this broker as the only in-sync replica the high watermark moves with the append. acks=-1 on a
//! partition whose ISR is smaller than `min.insync.replicas` is refused with NOT_ENOUGH_REPLICAS before appending.
//!
//! Per-partition errors: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, CORRUPT_MESSAGE (bad framing or CRC),
//! INVALID_RECORD (not exactly one magic-v2 batch, as Kafka requires from v3), MESSAGE_TOO_LARGE,
//! KAFKA_STORAGE_ERROR, INVALID_TOPIC_EXCEPTION (an internal topic), NOT_ENOUGH_REPLICAS, INVALID_RECORD with
//! per-record `record_errors` for keyless records on a compacted topic (the one case where records are read, as
//! Kafka's `LogValidator` does), and for idempotent producers (KIP-98, producer id from InitProducerId)
//! OUT_OF_ORDER_SEQUENCE_NUMBER and INVALID_PRODUCER_EPOCH; a retried batch is answered with its original offsets
//! (see `Partition::append_producer_batch`). Transactional batches (KIP-98) need the request's transactional id
//! (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as in Kafka); the log tracks their transaction until its marker.
//! Control batches are the coordinators' (INVALID_RECORD from a client).

use std::sync::Arc;

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::batch;
use sluice_protocol::ErrorCode;
use sluice_storage::{AppendError, AppendInfo};

use super::{now_ms, RequestContext};
use crate::broker::Broker;
use crate::replica_manager::{Partition, ProduceError, Replicated};

/// The outcome of one partition's append, before it is shaped for the response version.
struct Outcome {
    error_code: i16,
    error_message: Option<String>,
    info: Option<AppendInfo>,
    /// Per-record errors (v8+): (index of the record in the batch, message).
    record_errors: Vec<(i32, String)>,
}

impl Outcome {
    fn error(error_code: i16, message: impl Into<Option<String>>) -> Outcome {
        Outcome {
            error_code,
            error_message: message.into(),
            info: None,
            record_errors: Vec::new(),
        }
    }
}

/// Appends every partition's batch and reports per-partition results.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: ProduceRequest,
) -> ProduceResponse {
    let version = ctx.api_version;
    let acks = request.acks;
    // acks=all waits (Kafka's DelayedProduce) until the high watermark passes the records, at most `timeout_ms`
    // for the whole request.
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let request_error: Option<(i16, String)> = if !matches!(acks, -1..=1) {
        Some((
            ErrorCode::InvalidRequiredAcks.code(),
            format!("acks must be -1, 0 or 1, not {acks}"),
        ))
    } else {
        None
    };

    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut partition_responses = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let outcome = match &request_error {
                Some((code, message)) => Outcome::error(*code, message.clone()),
                None => {
                    produce_partition(
                        broker,
                        &name,
                        data.index,
                        data.records.as_deref(),
                        acks,
                        deadline,
                        request.transactional_id.is_some(),
                    )
                    .await
                }
            };
            if outcome.error_code != 0 {
                tracing::debug!(topic = %name, partition = data.index, error_code = outcome.error_code,
                    message = ?outcome.error_message, peer = %ctx.peer, "produce refused");
            }
            partition_responses.push(partition_response(version, data.index, outcome));
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partition_responses),
        );
    }
    ProduceResponse::default().with_responses(responses)
}

fn partition_response(version: i16, index: i32, outcome: Outcome) -> PartitionProduceResponse {
    let mut response = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(outcome.error_code);
    match outcome.info {
        Some(info) => {
            response = response
                .with_base_offset(info.base_offset)
                .with_log_append_time_ms(info.log_append_time_ms);
            if version >= 5 {
                response = response.with_log_start_offset(info.log_start_offset);
            }
        }
        None => {
            response = response.with_base_offset(-1).with_log_append_time_ms(-1);
        }
    }
    if version >= 8 {
        let record_errors = outcome
            .record_errors
            .into_iter()
            .map(|(index, message)| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(index)
                    .with_batch_index_error_message(Some(StrBytes::from_string(message)))
            })
            .collect();
        response = response
            .with_error_message(outcome.error_message.map(StrBytes::from_string))
            .with_record_errors(record_errors);
    }
    response
}

/// Decompressed bytes examined per batch for the compacted-topic key check.
const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// Kafka's `LogValidator` rule for compacted topics: every record needs a key. Keyless records are listed in
/// `record_errors` so the client fails only those (and the rest of the batch with a retriable-looking
/// "different record" error, as librdkafka does).
fn check_keys_for_compaction(topic: &str, index: i32, records: &[u8]) -> Result<(), Outcome> {
    let parsed = match sluice_storage::records::read_records(records, MAX_DECOMPRESSED_BYTES) {
        Ok(parsed) => parsed,
        Err(e) => {
            return Err(Outcome::error(
                ErrorCode::CorruptMessage.code(),
                e.to_string(),
            ))
        }
    };
    let message = format!(
        "Compacted topic cannot accept message without key in topic partition {topic}-{index}."
    );
    let record_errors: Vec<(i32, String)> = parsed
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.has_key)
        .map(|(i, _)| (i32::try_from(i).unwrap_or(i32::MAX), message.clone()))
        .collect();
    if record_errors.is_empty() {
        return Ok(());
    }
    let mut outcome = Outcome::error(ErrorCode::InvalidRecord.code(), message);
    outcome.record_errors = record_errors;
    Err(outcome)
}

/// Checks that `records` is exactly one magic-v2 batch, framed consistently, from its header alone (Kafka's
/// `ProduceRequest.validateRecords`). The CRC and record count are checked by the log.
fn check_single_batch(records: &[u8]) -> Result<(), Outcome> {
    if records.is_empty() {
        return Err(Outcome::error(
            ErrorCode::InvalidRecord.code(),
            "produce requests v3+ must carry exactly one record batch per partition".to_string(),
        ));
    }
    let Some(size) = batch::batch_size(records) else {
        return Err(Outcome::error(
            ErrorCode::CorruptMessage.code(),
            "record batch header is truncated or its length invalid".to_string(),
        ));
    };
    if let Some(&magic) = records.get(batch::MAGIC_OFFSET) {
        if magic as i8 != batch::MAGIC_V2 {
            return Err(Outcome::error(
                ErrorCode::InvalidRecord.code(),
                format!(
                    "produce requests v3+ must use record batch magic 2, not {}",
                    magic as i8
                ),
            ));
        }
    }
    if size > records.len() {
        return Err(Outcome::error(
            ErrorCode::CorruptMessage.code(),
            format!(
                "record batch of {size} bytes truncated to {}",
                records.len()
            ),
        ));
    }
    if size < records.len() {
        return Err(Outcome::error(
            ErrorCode::InvalidRecord.code(),
            "produce requests v3+ must carry exactly one record batch per partition".to_string(),
        ));
    }
    Ok(())
}

/// Maps a refused producer batch to its Kafka error code.
fn produce_error(error: ProduceError) -> Outcome {
    match error {
        ProduceError::Append(e) => append_error(e),
        e @ ProduceError::NotLeader => {
            Outcome::error(ErrorCode::NotLeaderOrFollower.code(), e.to_string())
        }
        e @ ProduceError::NotEnoughReplicas { .. } => {
            Outcome::error(ErrorCode::NotEnoughReplicas.code(), e.to_string())
        }
        ProduceError::OutOfOrderSequence(m) => {
            Outcome::error(ErrorCode::OutOfOrderSequenceNumber.code(), m)
        }
        ProduceError::InvalidProducerEpoch(m) => {
            Outcome::error(ErrorCode::InvalidProducerEpoch.code(), m)
        }
    }
}

/// Maps a refused append to its Kafka error code.
fn append_error(error: AppendError) -> Outcome {
    let message = error.to_string();
    let code = match &error {
        AppendError::Corrupt(_) => ErrorCode::CorruptMessage,
        AppendError::InvalidRecord(_) | AppendError::UnsupportedMagic(_) => {
            ErrorCode::InvalidRecord
        }
        AppendError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        AppendError::Producer(sluice_storage::ProducerError::OutOfOrderSequence { .. }) => {
            ErrorCode::OutOfOrderSequenceNumber
        }
        AppendError::Producer(sluice_storage::ProducerError::InvalidProducerEpoch { .. }) => {
            ErrorCode::InvalidProducerEpoch
        }
        // `Partition::append_producer_batch` answers a duplicate with its original offsets before this.
        AppendError::DuplicateSequence { .. } => ErrorCode::DuplicateSequenceNumber,
        AppendError::Storage(e) => {
            tracing::error!(error = %e, "append failed in storage");
            ErrorCode::KafkaStorageError
        }
    };
    Outcome::error(code.code(), message)
}

async fn produce_partition(
    broker: &Arc<Broker>,
    topic: &str,
    index: i32,
    records: Option<&[u8]>,
    acks: i16,
    deadline: tokio::time::Instant,
    transactional: bool,
) -> Outcome {
    let partition: Arc<Partition> = match broker.replicas.partition(topic, index) {
        Ok(p) => p,
        Err(e) => return Outcome::error(e.into(), None),
    };
    if partition.internal {
        // Internal topics are written by their coordinators only (Kafka: "Cannot append to internal topic").
        return Outcome::error(
            ErrorCode::InvalidTopicException.code(),
            format!("cannot produce to internal topic {topic}"),
        );
    }
    let records = records.unwrap_or_default();
    if let Err(outcome) = check_single_batch(records) {
        return outcome;
    }
    if partition.is_compacted() {
        if let Err(outcome) = check_keys_for_compaction(topic, index, records) {
            return outcome;
        }
    }
    let attributes = records
        .get(batch::ATTRIBUTES_OFFSET..batch::ATTRIBUTES_OFFSET + 2)
        .map_or(0, |a| i16::from_be_bytes([a[0], a[1]]));
    if attributes & batch::CONTROL_FLAG_MASK != 0 {
        // Markers are written by transaction coordinators only (WriteTxnMarkers).
        return Outcome::error(
            ErrorCode::InvalidRecord.code(),
            "control records cannot be produced".to_string(),
        );
    }
    if attributes & batch::TRANSACTIONAL_FLAG_MASK != 0 && !transactional {
        // Kafka refuses transactional records without an authorized transactional id.
        return Outcome::error(
            ErrorCode::TransactionalIdAuthorizationFailed.code(),
            "transactional records need a transactional id".to_string(),
        );
    }
    // The one copy: the request frame is shared and immutable, the log rewrites header fields in place.
    let node_id = broker.config.node_id;
    let mut buf = records.to_vec();
    let now = now_ms();
    let result = if partition.append_may_block() {
        // flush.messages may fsync inside the append: keep it off the async workers.
        let p = partition.clone();
        match tokio::task::spawn_blocking(move || {
            p.append_producer_batch(node_id, &mut buf, acks, now)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "append task failed");
                return Outcome::error(
                    ErrorCode::KafkaStorageError.code(),
                    "append task failed".to_string(),
                );
            }
        }
    } else {
        partition.append_producer_batch(node_id, &mut buf, acks, now)
    };
    let info = match result {
        Ok(info) => info,
        Err(e) => return produce_error(e),
    };
    if acks == -1 {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let failure = match partition.wait_replicated(info.last_offset, wait).await {
            Replicated::Done => None,
            Replicated::BelowMinIsr => Some((
                ErrorCode::NotEnoughReplicasAfterAppend,
                "the in-sync replicas fell below min.insync.replicas after the append",
            )),
            Replicated::NotLeader => Some((
                ErrorCode::NotLeaderOrFollower,
                "leadership moved before the records were replicated",
            )),
            Replicated::TimedOut => Some((
                ErrorCode::RequestTimedOut,
                "the records were not replicated to the in-sync replicas within the request timeout",
            )),
        };
        if let Some((code, message)) = failure {
            return Outcome::error(code.code(), message.to_string());
        }
    }
    Outcome {
        error_code: 0,
        error_message: None,
        info: Some(info),
        record_errors: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len_after: i32, magic: i8) -> Vec<u8> {
        let mut b = vec![0u8; 61];
        b[8..12].copy_from_slice(&len_after.to_be_bytes());
        b[16] = magic as u8;
        b
    }

    #[test]
    fn single_batch_rule() {
        assert_eq!(
            check_single_batch(&[]).unwrap_err().error_code,
            ErrorCode::InvalidRecord.code()
        );
        assert_eq!(
            check_single_batch(&[0; 5]).unwrap_err().error_code,
            ErrorCode::CorruptMessage.code()
        );
        // A whole header-only batch of the right magic passes the framing check.
        assert!(check_single_batch(&header(49, 2)).is_ok());
        assert_eq!(
            check_single_batch(&header(49, 1)).unwrap_err().error_code,
            ErrorCode::InvalidRecord.code()
        );
        // Length says more than is present.
        assert_eq!(
            check_single_batch(&header(100, 2)).unwrap_err().error_code,
            ErrorCode::CorruptMessage.code()
        );
        // Two batches.
        let mut two = header(49, 2);
        two.extend(header(49, 2));
        assert_eq!(
            check_single_batch(&two).unwrap_err().error_code,
            ErrorCode::InvalidRecord.code()
        );
    }
}
