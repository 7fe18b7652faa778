//! OffsetCommit (key 8), v2-v9: commits offsets for a group member (generation and member checks) or a
//! standalone consumer (generation -1, empty group). Unknown topic-partitions are UNKNOWN_TOPIC_OR_PARTITION.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::RequestContext;
use crate::broker::Broker;

/// Commits offsets.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let fallback: Vec<OffsetCommitResponseTopic> = request
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                        })
                        .collect(),
                )
        })
        .collect();
    match broker
        .groups
        .offset_commit(broker, ctx.api_version, request)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let mut topics = fallback;
            for t in &mut topics {
                for p in &mut t.partitions {
                    p.error_code = e.code();
                }
            }
            OffsetCommitResponse::default().with_topics(topics)
        }
    }
}
