//! AlterPartitionReassignments (key 45), v0-v1: starts, replaces or cancels (null replicas) partition reassignments
//! (KIP-455); v1's `allow_replication_factor_change` false refuses targets that change a partition's replication
//! factor (KIP-860, echoed in the answer). Served by the active controller (a broker forwards it, KIP-590); the
//! checks, the per-partition errors and how a reassignment completes are the controller's
//! (`sluice_metadata::controller::alter_partition_reassignments`).

use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::controller::{ReassignmentOutcome, ReassignmentTarget};

use super::RequestContext;
use crate::broker::Broker;

/// Runs the requested reassignments through the controller.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let targets: Vec<ReassignmentTarget> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| ReassignmentTarget {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                replicas: p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
            })
        })
        .collect();
    // v0 has no such field: the replication factor may change.
    let allow_rf_change = ctx.api_version < 1 || request.allow_replication_factor_change;
    let outcomes = match broker
        .controller
        .alter_partition_reassignments(targets.clone(), allow_rf_change)
        .await
    {
        Ok(outcomes) => outcomes,
        Err(e) => {
            let (code, message) = (e.code(), e.to_string());
            targets
                .into_iter()
                .map(|t| ReassignmentOutcome {
                    topic: t.topic,
                    partition: t.partition,
                    error_code: code,
                    error_message: Some(message.clone()),
                })
                .collect()
        }
    };
    // One entry per topic, in request order.
    let mut responses: Vec<ReassignableTopicResponse> = Vec::new();
    for o in outcomes {
        let partition = ReassignablePartitionResponse::default()
            .with_partition_index(o.partition)
            .with_error_code(o.error_code)
            .with_error_message(o.error_message.map(StrBytes::from_string));
        match responses.iter_mut().find(|t| t.name.0.as_str() == o.topic) {
            Some(topic) => topic.partitions.push(partition),
            None => responses.push(
                ReassignableTopicResponse::default()
                    .with_name(TopicName(StrBytes::from_string(o.topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_responses(responses)
}
