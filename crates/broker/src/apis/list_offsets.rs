//! ListOffsets (key 2), v1-v8: the offset for a timestamp, or one of the special timestamps: -2 earliest
//! (log start offset), -1 latest (high watermark, or the last stable offset under read_committed, or the log end
//! offset for a replica), -3 max timestamp (KIP-734, v7+), -4 earliest local (KIP-405, v8+; no tiered storage,
//! so the log start offset).
//!
//! As in Kafka, a timestamp lookup only returns offsets below the last fetchable offset, and a partition with no
//! match answers offset -1 / timestamp -1 without an error. `current_leader_epoch` (v4+) is fenced (KIP-320).

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use sluice_protocol::ErrorCode;

use super::{check_leader_epoch, RequestContext};
use crate::broker::Broker;

/// Earliest offset (`ListOffsetsRequest.EARLIEST_TIMESTAMP`).
const EARLIEST_TIMESTAMP: i64 = -2;
/// Latest offset.
const LATEST_TIMESTAMP: i64 = -1;
/// Offset of the record with the largest timestamp (KIP-734).
const MAX_TIMESTAMP: i64 = -3;
/// Earliest offset in local storage (KIP-405).
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
/// The replica id of a consumer.
const CONSUMER_REPLICA_ID: i32 = -1;
/// Isolation level read_committed.
const READ_COMMITTED: i8 = 1;

/// Answers every requested partition.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let version = ctx.api_version;
    let mut seen = BTreeSet::new();
    let mut duplicates = BTreeSet::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            if !seen.insert((topic.name.0.to_string(), p.partition_index)) {
                duplicates.insert((topic.name.0.to_string(), p.partition_index));
            }
        }
    }
    let client = request.replica_id.0 == CONSUMER_REPLICA_ID;
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result = if duplicates.contains(&(name.clone(), p.partition_index)) {
                        Err(ErrorCode::InvalidRequest.code())
                    } else {
                        list_offset(
                            broker,
                            &name,
                            p.partition_index,
                            p.current_leader_epoch,
                            p.timestamp,
                            client,
                            request.isolation_level,
                            version,
                        )
                    };
                    let mut response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match result {
                        Ok(found) => {
                            response = response
                                .with_timestamp(found.timestamp)
                                .with_offset(found.offset);
                            if version >= 4 {
                                response = response.with_leader_epoch(found.leader_epoch);
                            }
                        }
                        Err(code) => response = response.with_error_code(code),
                    }
                    response
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// An answer for one partition: -1 everywhere when nothing matches.
struct Found {
    timestamp: i64,
    offset: i64,
    leader_epoch: i32,
}

const NOT_FOUND: Found = Found {
    timestamp: -1,
    offset: -1,
    leader_epoch: -1,
};

#[allow(clippy::too_many_arguments)]
fn list_offset(
    broker: &Arc<Broker>,
    topic: &str,
    index: i32,
    current_leader_epoch: i32,
    timestamp: i64,
    client: bool,
    isolation_level: i8,
    version: i16,
) -> Result<Found, i16> {
    let partition = broker.replicas.partition(topic, index)?;
    check_leader_epoch(current_leader_epoch, partition.leader_epoch())?;
    let log = &partition.log;
    // A consumer sees up to the high watermark (read_uncommitted) or the last stable offset (read_committed). A
    // replica sees the log end offset.
    let last_fetchable = match (client, isolation_level) {
        (false, _) => log.log_end_offset(),
        (true, READ_COMMITTED) => log.last_stable_offset(),
        (true, _) => log.high_watermark(),
    };
    let storage_error = |e: sluice_storage::StorageError| {
        tracing::error!(topic, partition = index, error = %e, "ListOffsets failed in storage");
        ErrorCode::KafkaStorageError.code()
    };
    match timestamp {
        LATEST_TIMESTAMP => Ok(Found {
            timestamp: -1,
            offset: last_fetchable,
            leader_epoch: partition.leader_epoch(),
        }),
        EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP
            if timestamp == EARLIEST_TIMESTAMP || version >= 8 =>
        {
            let start = log.log_start_offset();
            Ok(Found {
                timestamp: -1,
                offset: start,
                leader_epoch: partition.epoch_for_offset(start).unwrap_or(-1),
            })
        }
        MAX_TIMESTAMP if version >= 7 => match log.max_timestamp_offset().map_err(storage_error)? {
            Some(t) if t.offset < last_fetchable => {
                // The first record holding the largest timestamp (the log may only know its batch).
                let (timestamp_ms, offset) =
                    exact_record(log, t.offset, last_fetchable, |ts| ts == t.timestamp_ms)
                        .unwrap_or((t.timestamp_ms, t.offset));
                Ok(Found {
                    timestamp: timestamp_ms,
                    offset,
                    leader_epoch: t.leader_epoch.unwrap_or(-1),
                })
            }
            _ => Ok(NOT_FOUND),
        },
        _ => match log.offset_for_timestamp(timestamp).map_err(storage_error)? {
            Some(t) if t.offset < last_fetchable => {
                // Kafka answers the first record whose timestamp reaches the target, not its batch.
                let (timestamp_ms, offset) =
                    exact_record(log, t.offset, last_fetchable, |ts| ts >= timestamp)
                        .unwrap_or((t.timestamp_ms, t.offset));
                Ok(Found {
                    timestamp: timestamp_ms,
                    offset,
                    leader_epoch: t.leader_epoch.unwrap_or(-1),
                })
            }
            _ => Ok(NOT_FOUND),
        },
    }
}

/// Decompressed bytes read from one batch when looking inside it.
const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// The (timestamp, offset) of the first record at or after `from` and below `upper` in the batch holding `from`
/// whose timestamp satisfies `wanted` (Kafka's `LogSegment.findOffsetByTimestamp` looks inside the batch).
/// `None` when the batch cannot be read or has no such record; the caller then answers at batch granularity.
fn exact_record(
    log: &sluice_storage::Log,
    from: i64,
    upper: i64,
    wanted: impl Fn(i64) -> bool,
) -> Option<(i64, i64)> {
    let read = log.read(from, 1, upper).ok()?;
    let data: &[u8] = &read.data;
    let header = sluice_protocol::batch::BatchHeader::new(data).ok()?;
    let records = sluice_storage::records::read_records(data, MAX_DECOMPRESSED_BYTES).ok()?;
    records.iter().find_map(|r| {
        let offset = header
            .base_offset()
            .checked_add(i64::from(r.offset_delta))?;
        // Under LogAppendTime every record carries the batch's (max) timestamp.
        let timestamp_ms = if header.is_log_append_time() {
            header.max_timestamp()
        } else {
            header.base_timestamp().checked_add(r.timestamp_delta)?
        };
        (offset >= from && offset < upper && wanted(timestamp_ms)).then_some((timestamp_ms, offset))
    })
}
