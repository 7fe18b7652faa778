//! TxnOffsetCommit (key 28), v0-v4: a transactional producer commits its consumer's offsets inside its
//! transaction (KIP-98; v2 adds leader epochs, v3 the member id, generation and group instance id of KIP-447). The
//! offsets stay pending until the transaction's COMMIT marker reaches the group's `__consumer_offsets` partition.
//!
//! As Kafka's `KafkaApis.handleTxnOffsetCommitRequest`: partitions of unknown topics or beyond a topic's partition
//! count answer UNKNOWN_TOPIC_OR_PARTITION here, the others go to the group coordinator, and a coordinator that
//! cannot be reached answers its error for each of them. v5 (transaction version 2, KIP-890 part 2: the commit
//! also adds the partition to the transaction) is not served: clients without TV2 use v4 at most.

use std::sync::Arc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use sluice_protocol::ErrorCode;

use super::RequestContext;
use crate::broker::Broker;

/// Commits offsets inside a transaction.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let image = broker.controller.image();
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::new();
    let mut known = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let partition_count = image.topic(&topic.name.0).map(|t| t.partitions.len());
        let (valid, unknown): (Vec<_>, Vec<_>) = topic.partitions.iter().cloned().partition(|p| {
            partition_count.is_some_and(|n| usize::try_from(p.partition_index).is_ok_and(|i| i < n))
        });
        if !unknown.is_empty() {
            let codes = unknown
                .iter()
                .map(|p| (p.partition_index, ErrorCode::UnknownTopicOrPartition.code()));
            add_partitions(&mut topics, &topic.name, codes);
        }
        if !valid.is_empty() {
            known.push(topic.clone().with_partitions(valid));
        }
    }
    if known.is_empty() {
        return TxnOffsetCommitResponse::default().with_topics(topics);
    }
    let forwarded = request.with_topics(known);
    let fallback: Vec<(_, Vec<i32>)> = forwarded
        .topics
        .iter()
        .map(|t| {
            let partitions = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.clone(), partitions)
        })
        .collect();
    match broker.groups.txn_offset_commit(broker, forwarded).await {
        Ok(response) => {
            for t in response.topics {
                let codes = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.error_code));
                add_partitions(&mut topics, &t.name, codes);
            }
        }
        Err(e) => {
            for (name, partitions) in &fallback {
                add_partitions(&mut topics, name, partitions.iter().map(|&p| (p, e.code())));
            }
        }
    }
    if ctx.api_version < 2 {
        // Producers of Kafka 0.11-1.1 may crash on COORDINATOR_LOAD_IN_PROGRESS (KAFKA-7296): Kafka answers them
        // COORDINATOR_NOT_AVAILABLE instead.
        let loading = ErrorCode::CoordinatorLoadInProgress.code();
        for p in topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            if p.error_code == loading {
                p.error_code = ErrorCode::CoordinatorNotAvailable.code();
            }
        }
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// Adds partition results to the response's entry for `name`, creating it if needed (Kafka's
/// `TxnOffsetCommitResponse.Builder` merges by topic).
fn add_partitions(
    topics: &mut Vec<TxnOffsetCommitResponseTopic>,
    name: &kafka_protocol::messages::TopicName,
    codes: impl Iterator<Item = (i32, i16)>,
) {
    let index = match topics.iter().position(|t| &t.name == name) {
        Some(i) => i,
        None => {
            topics.push(TxnOffsetCommitResponseTopic::default().with_name(name.clone()));
            topics.len() - 1
        }
    };
    topics[index]
        .partitions
        .extend(codes.map(|(partition, error_code)| {
            TxnOffsetCommitResponsePartition::default()
                .with_partition_index(partition)
                .with_error_code(error_code)
        }));
}
