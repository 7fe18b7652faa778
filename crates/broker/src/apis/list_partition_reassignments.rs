//! ListPartitionReassignments (key 46), v0: the reassignments in progress, of every partition (null topics) or of
//! the named ones (KIP-455). Answered by the active controller from its image (a broker forwards it, as Kafka's
//! brokers do); unknown topics and partitions that are not being reassigned are left out.

use std::sync::Arc;

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::controller::list_partition_reassignments;

use super::RequestContext;
use crate::broker::Broker;

/// Lists the reassignments in progress.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let filter: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let ongoing = list_partition_reassignments(&broker.controller.image(), filter.as_deref());
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for o in ongoing {
        let partition = OngoingPartitionReassignment::default()
            .with_partition_index(o.partition)
            .with_replicas(ids(o.replicas))
            .with_adding_replicas(ids(o.adding_replicas))
            .with_removing_replicas(ids(o.removing_replicas));
        match topics.iter_mut().find(|t| t.name.0.as_str() == o.topic) {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(o.topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
