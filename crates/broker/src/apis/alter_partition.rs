//! AlterPartition (key 56), v2-v3, served on the controller listener: a partition leader asks the active controller
//! to change the partition's ISR (KIP-497); the checks are `sluice_metadata::controller::alter_partition`. The
//! broker's side is `isr.rs`.
//!
//! Errors: NOT_CONTROLLER from a node that is not the active controller (the leader retries against the new one),
//! STALE_BROKER_EPOCH for a leader whose registration is not current, REQUEST_TIMED_OUT when the record was not
//! committed in time; per partition UNKNOWN_TOPIC_ID, NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH,
//! INVALID_UPDATE_VERSION, INVALID_REQUEST, INELIGIBLE_REPLICA.

use std::sync::Arc;

use kafka_protocol::messages::alter_partition_response::{PartitionData, TopicData};
use kafka_protocol::messages::{AlterPartitionRequest, AlterPartitionResponse, BrokerId};
use sluice_metadata::controller::IsrChange;

use super::RequestContext;
use crate::broker::Broker;

/// Changes the ISRs the leader asks for.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: AlterPartitionRequest,
) -> AlterPartitionResponse {
    let changes: Vec<IsrChange> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| IsrChange {
                topic_id: t.topic_id,
                topic_name: None,
                partition: p.partition_index,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: if ctx.api_version >= 3 {
                    p.new_isr_with_epochs
                        .iter()
                        .map(|b| b.broker_id.0)
                        .collect()
                } else {
                    p.new_isr.iter().map(|b| b.0).collect()
                },
            })
        })
        .collect();
    let outcome = match broker
        .controller
        .alter_partition(request.broker_id.0, request.broker_epoch, changes)
        .await
    {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::debug!(broker_id = request.broker_id.0, error = %e, "AlterPartition failed");
            return AlterPartitionResponse::default().with_error_code(e.code());
        }
    };
    let mut topics: Vec<TopicData> = Vec::new();
    for p in outcome.partitions {
        let mut data = PartitionData::default()
            .with_partition_index(p.partition)
            .with_error_code(p.error_code)
            .with_leader_id(BrokerId(-1))
            .with_leader_epoch(-1)
            .with_partition_epoch(-1);
        if let Some(r) = p.registration.filter(|_| p.error_code == 0) {
            data = data
                .with_leader_id(BrokerId(r.leader))
                .with_leader_epoch(r.leader_epoch)
                .with_isr(r.isr.iter().map(|&b| BrokerId(b)).collect())
                .with_partition_epoch(r.partition_epoch);
        }
        match topics.iter_mut().find(|t| t.topic_id == p.topic_id) {
            Some(t) => t.partitions.push(data),
            None => topics.push(
                TopicData::default()
                    .with_topic_id(p.topic_id)
                    .with_partitions(vec![data]),
            ),
        }
    }
    AlterPartitionResponse::default()
        .with_error_code(outcome.error_code)
        .with_topics(topics)
}
