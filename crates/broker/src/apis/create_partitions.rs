//! CreatePartitions (key 37), v0-v3: grows a topic's partition count (never shrinks: INVALID_PARTITIONS), with
//! optional replica assignments for the new partitions and validate_only.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::error::code;
use sluice_metadata::CreatePartitions;

use super::RequestContext;
use crate::broker::Broker;

/// Adds partitions through the controller.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let names: Vec<_> = request.topics.iter().map(|t| t.name.clone()).collect();
    let topics: Vec<CreatePartitions> = request
        .topics
        .into_iter()
        .map(|t| CreatePartitions {
            name: t.name.0.to_string(),
            count: t.count,
            assignments: t.assignments.map(|a| {
                a.into_iter()
                    .map(|a| a.broker_ids.into_iter().map(|b| b.0).collect())
                    .collect()
            }),
        })
        .collect();
    let results = match broker
        .controller
        .create_partitions(topics, request.validate_only)
        .await
    {
        Ok(outcomes) => outcomes
            .into_iter()
            .map(|o| {
                let (error_code, error_message) =
                    o.error.map_or((code::NONE, None), |e| (e.code, e.message));
                CreatePartitionsTopicResult::default()
                    .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                        o.name,
                    )))
                    .with_error_code(error_code)
                    .with_error_message(error_message.map(StrBytes::from_string))
            })
            .collect(),
        Err(e) => {
            tracing::error!("CreatePartitions failed: {e}");
            names
                .into_iter()
                .map(|name| {
                    CreatePartitionsTopicResult::default()
                        .with_name(name)
                        .with_error_code(e.code())
                        .with_error_message(Some(StrBytes::from_string(e.to_string())))
                })
                .collect()
        }
    };
    CreatePartitionsResponse::default().with_results(results)
}
