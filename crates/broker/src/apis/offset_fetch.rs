//! OffsetFetch (key 9), v1-v9: committed offsets of a group (v2+: all of them with null topics and a top-level
//! error code; v5+ leader epochs; v7+ `require_stable`, KIP-447: a partition with a pending transactional offset
//! answers UNSTABLE_OFFSET_COMMIT, and the consumer retries; v8+ several groups at once, KIP-709). A partition
//! without a committed offset answers -1.

use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_coordinator::CommittedOffset;

use super::RequestContext;
use crate::broker::Broker;

/// Fetches committed offsets.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let v = ctx.api_version;
    // The field exists from v7; decoding leaves it false before.
    let require_stable = v >= 7 && request.require_stable;
    if v >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for g in request.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect::<Vec<_>>()
            });
            let group = match broker
                .groups
                .offset_fetch(broker, &g.group_id, topics, require_stable)
                .await
            {
                Ok(offsets) => OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(by_topic(&offsets, |name, parts| {
                        OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(
                                parts
                                    .iter()
                                    .map(|o| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(o.partition)
                                            .with_committed_offset(o.offset)
                                            .with_committed_leader_epoch(o.leader_epoch)
                                            .with_metadata(
                                                o.metadata.clone().map(StrBytes::from_string),
                                            )
                                            .with_error_code(o.error.code())
                                    })
                                    .collect(),
                            )
                    })),
                Err(e) => OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_error_code(e.code()),
            };
            groups.push(group);
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group_id: GroupId = request.group_id.clone();
    let requested = request.topics.clone().map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect::<Vec<_>>()
    });
    match broker
        .groups
        .offset_fetch(broker, &group_id, requested.clone(), require_stable)
        .await
    {
        Ok(offsets) => {
            OffsetFetchResponse::default().with_topics(by_topic(&offsets, |name, parts| {
                OffsetFetchResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        parts
                            .iter()
                            .map(|o| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(o.partition)
                                    .with_committed_offset(o.offset)
                                    .with_committed_leader_epoch(if v >= 5 {
                                        o.leader_epoch
                                    } else {
                                        -1
                                    })
                                    .with_metadata(o.metadata.clone().map(StrBytes::from_string))
                                    .with_error_code(o.error.code())
                            })
                            .collect(),
                    )
            }))
        }
        Err(e) => {
            // v2+ carry a top-level error; v1 only per partition.
            let topics = requested
                .unwrap_or_default()
                .into_iter()
                .map(|(name, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_metadata(Some(StrBytes::from_static_str("")))
                                        .with_error_code(e.code())
                                })
                                .collect(),
                        )
                })
                .collect();
            let mut response = OffsetFetchResponse::default().with_topics(topics);
            if v >= 2 {
                response.error_code = e.code();
            }
            response
        }
    }
}

/// Groups offsets by topic, in first-seen order.
fn by_topic<T>(
    offsets: &[CommittedOffset],
    mut make: impl FnMut(TopicName, &[&CommittedOffset]) -> T,
) -> Vec<T> {
    let mut order: Vec<&str> = Vec::new();
    for o in offsets {
        if !order.contains(&o.topic.as_str()) {
            order.push(&o.topic);
        }
    }
    order
        .into_iter()
        .map(|topic| {
            let parts: Vec<&CommittedOffset> =
                offsets.iter().filter(|o| o.topic == topic).collect();
            make(TopicName(StrBytes::from_string(topic.to_string())), &parts)
        })
        .collect()
}
