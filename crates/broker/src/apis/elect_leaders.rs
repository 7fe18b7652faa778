//! ElectLeaders (key 43), v0-v2: preferred (0) and, from v1, unclean (1) leader elections (KIP-183, KIP-460),
//! for the named partitions or, with `topic_partitions` null, for every partition. Served by the active controller
//! (a broker forwards it, KIP-590); the elections and their per-partition errors are the controller's
//! (`sluice_metadata::controller::elect_leaders`). As Kafka's controller, an empty list answers at once and an
//! unknown election type is INVALID_REQUEST for every partition.

use std::sync::Arc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::controller::{ElectLeadersOutcome, ElectionTarget, ElectionType};
use sluice_metadata::error::code;

use super::RequestContext;
use crate::broker::Broker;

/// Runs the requested elections through the controller.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let targets: Option<Vec<ElectionTarget>> = request.topic_partitions.map(|topics| {
        topics
            .into_iter()
            .map(|t| ElectionTarget {
                topic: t.topic.0.to_string(),
                partitions: t.partitions,
            })
            .collect()
    });
    if targets.as_ref().is_some_and(Vec::is_empty) {
        return ElectLeadersResponse::default();
    }
    let outcome = match ElectionType::from_wire(request.election_type) {
        None => ElectLeadersOutcome::failed(
            targets.as_deref(),
            code::INVALID_REQUEST,
            &format!("Unknown election type {}", request.election_type),
        ),
        Some(election_type) => {
            match broker
                .controller
                .elect_leaders(election_type, targets.clone())
                .await
            {
                Ok(outcome) => outcome,
                Err(e) => ElectLeadersOutcome::failed(targets.as_deref(), e.code(), &e.to_string()),
            }
        }
    };
    response(outcome, ctx.api_version)
}

/// The wire response for `outcome` (v0 has no top-level error code).
fn response(outcome: ElectLeadersOutcome, version: i16) -> ElectLeadersResponse {
    let results = outcome
        .topics
        .into_iter()
        .map(|t| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(t.topic)))
                .with_partition_result(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            PartitionResult::default()
                                .with_partition_id(p.partition)
                                .with_error_code(p.error_code)
                                .with_error_message(p.error_message.map(StrBytes::from_string))
                        })
                        .collect(),
                )
        })
        .collect();
    let mut response = ElectLeadersResponse::default().with_replica_election_results(results);
    if version >= 1 {
        response.error_code = outcome.error_code;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_metadata::controller::{PartitionElectionOutcome, TopicElectionOutcome};

    #[test]
    fn v0_carries_errors_only_per_partition() {
        let outcome = ElectLeadersOutcome {
            error_code: code::POLICY_VIOLATION,
            topics: vec![TopicElectionOutcome {
                topic: "t".into(),
                partitions: vec![PartitionElectionOutcome {
                    partition: 3,
                    error_code: code::POLICY_VIOLATION,
                    error_message: Some("m".into()),
                }],
            }],
        };
        assert_eq!(response(outcome.clone(), 0).error_code, 0);
        let r = response(outcome, 1);
        assert_eq!(r.error_code, code::POLICY_VIOLATION);
        let p = &r.replica_election_results[0].partition_result[0];
        assert_eq!((p.partition_id, p.error_code), (3, code::POLICY_VIOLATION));
        assert_eq!(p.error_message.as_deref(), Some("m"));
    }
}
