//! OffsetForLeaderEpoch (key 23), v2-v4: for each partition, the end offset of the largest leader epoch at or
//! below the requested one (KIP-101, KIP-279), so a follower or a consumer (KIP-320) can detect log divergence
//! and truncate to the right place. An epoch the cache does not know answers epoch -1 / offset -1.
//! `current_leader_epoch` is fenced (KIP-320).

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{check_leader_epoch, RequestContext};
use crate::broker::Broker;

/// Looks up every requested partition's epoch end offset.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.topic.0.to_string();
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let entry = EpochEndOffset::default().with_partition(p.partition);
                    match end_offset(
                        broker,
                        &name,
                        p.partition,
                        p.current_leader_epoch,
                        p.leader_epoch,
                    ) {
                        Ok(Some((epoch, offset))) => {
                            entry.with_leader_epoch(epoch).with_end_offset(offset)
                        }
                        Ok(None) => entry.with_leader_epoch(-1).with_end_offset(-1),
                        Err(code) => entry.with_error_code(code),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

fn end_offset(
    broker: &Arc<Broker>,
    topic: &str,
    index: i32,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> Result<Option<(i32, i64)>, i16> {
    let partition = broker.replicas.partition(topic, index)?;
    check_leader_epoch(current_leader_epoch, partition.leader_epoch())?;
    if leader_epoch < 0 {
        return Ok(None);
    }
    Ok(partition.log.end_offset_for_epoch(leader_epoch))
}
