//! What the coordinators share about their internal topics (`__consumer_offsets`, `__transaction_state`):
//! creating one on first use through whichever controller is active, writing a coordinator's records as one
//! magic-v2 batch, and reading a partition back batch by batch when a shard loads.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_protocol::{batch, ErrorCode};

use crate::broker::Broker;

/// How long creating an internal topic (and seeing it in this node's image) may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of one read while loading a partition.
const LOAD_READ_BYTES: usize = 1 << 20;

/// An internal topic's shape, as Kafka creates it on first use.
pub(crate) struct InternalTopic<'a> {
    /// Topic name.
    pub name: &'a str,
    /// Partition count.
    pub partitions: i32,
    /// Wanted replication factor (capped at the live brokers).
    pub replication_factor: i16,
    /// Topic configs.
    pub configs: &'a [(&'a str, String)],
}

/// Ensures the topic exists, creating it through the local controller when this node is the active one (or the
/// embedded single node), else with a CreateTopics to the active controller, then waiting (briefly) for the topic
/// to reach this node's image. `Err(())` is retriable (COORDINATOR_NOT_AVAILABLE); the cause is logged.
pub(crate) async fn ensure(broker: &Arc<Broker>, topic: &InternalTopic<'_>) -> Result<(), ()> {
    let name = topic.name;
    let mut images = broker.controller.subscribe();
    if images.borrow_and_update().topic(name).is_some() {
        return Ok(());
    }
    let live = crate::apis::metadata::live_brokers(&broker.controller.image()).count();
    let replication_factor = topic
        .replication_factor
        .clamp(1, i16::try_from(live.max(1)).unwrap_or(i16::MAX));
    let local = broker.controller.is_active() || !broker.controller_channel.has_voters();
    let error_code = if local {
        let new = sluice_metadata::NewTopic {
            name: name.to_string(),
            num_partitions: topic.partitions,
            replication_factor,
            assignments: Vec::new(),
            configs: topic
                .configs
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.clone())))
                .collect(),
        };
        let outcomes = broker.controller.create_topics(vec![new], false).await;
        outcomes.first().map_or(-1, |o| o.error_code)
    } else {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_num_partitions(topic.partitions)
                .with_replication_factor(replication_factor)
                .with_configs(
                    topic
                        .configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.to_string()))
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect(),
                )])
            .with_timeout_ms(i32::try_from(CREATE_TIMEOUT.as_millis()).unwrap_or(i32::MAX));
        match broker
            .controller_channel
            .send(&request, CREATE_TIMEOUT)
            .await
        {
            Ok(response) => response.topics.first().map_or(-1, |t| t.error_code),
            Err(e) => {
                tracing::warn!(error = %e, "creating {name} through the active controller failed");
                return Err(());
            }
        }
    };
    if error_code == 0 {
        tracing::info!(
            partitions = topic.partitions,
            replication_factor,
            "created {name}"
        );
    } else if error_code != ErrorCode::TopicAlreadyExists.code() {
        tracing::warn!(error_code, "creating {name} failed");
        return Err(());
    }
    // The controller answered once the topic was committed; this node's image may follow a moment later.
    let arrived = tokio::time::timeout(CREATE_TIMEOUT, async {
        loop {
            if images.borrow_and_update().topic(name).is_some() {
                return true;
            }
            if images.changed().await.is_err() {
                return false;
            }
        }
    })
    .await;
    match arrived {
        Ok(true) => Ok(()),
        _ => Err(()),
    }
}

/// Encodes key/value pairs as one uncompressed magic-v2 batch (CreateTime `now`), ready for `append_as_leader`.
pub(crate) fn encode_batch(
    records: impl Iterator<Item = (Bytes, Option<Bytes>)>,
    now: i64,
) -> Result<BytesMut, String> {
    let batch: Vec<Record> = records
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now,
            key: Some(key),
            value,
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        batch.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("encoding: {e}"))?;
    Ok(buf)
}

/// Reads a partition log from its start to its end and hands every record of every data batch to `visit`, with
/// the batch's header (control batches are handed to `control`). `topic` only names the log in warnings.
pub(crate) fn read_log(
    topic: &str,
    log: &sluice_storage::Log,
    mut visit: impl FnMut(&batch::BatchHeader<'_>, Option<&[u8]>, Option<&[u8]>),
    mut control: impl FnMut(&batch::BatchHeader<'_>, &[u8]),
) {
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let data = match log.read(offset, LOAD_READ_BYTES, end) {
            Ok(r) => r.data,
            Err(e) => {
                tracing::warn!("reading {topic} at {offset}: {e:?}");
                break;
            }
        };
        if data.is_empty() {
            break;
        }
        let before = offset;
        let mut rest: &[u8] = &data;
        while let Some(total) = batch::batch_size(rest) {
            if total > rest.len() {
                break;
            }
            let (bytes, tail) = rest.split_at(total);
            rest = tail;
            let Ok(header) = batch::BatchHeader::new(bytes) else {
                break;
            };
            offset = offset.max(header.next_offset());
            if header.is_control() {
                control(&header, bytes);
                continue;
            }
            // Each record takes at least 7 bytes.
            let plausible = usize::try_from(header.record_count()).is_ok_and(|c| c <= total / 7);
            if !plausible {
                tracing::warn!(
                    "skipping implausible {topic} batch at {}",
                    header.base_offset()
                );
                continue;
            }
            let mut owned = Bytes::copy_from_slice(bytes);
            match RecordBatchDecoder::decode(&mut owned) {
                Ok(set) => {
                    for r in set.records {
                        visit(&header, r.key.as_deref(), r.value.as_deref());
                    }
                }
                Err(e) => tracing::warn!(
                    "skipping unreadable {topic} batch at {}: {e}",
                    header.base_offset()
                ),
            }
        }
        if offset == before {
            break;
        }
    }
}
