//! IncrementalAlterConfigs (key 44), v0-v1 (KIP-339): SET / DELETE / APPEND / SUBTRACT on TOPIC config keys;
//! APPEND and SUBTRACT only on LIST keys (`cleanup.policy`). validate_only checks without writing. BROKER
//! resources (a broker id, or the empty name for the cluster-wide default) take only the replication throttle
//! rates, the broker configs Sluice changes at run time (`topic_config::dynamic_broker`).

use std::sync::Arc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::controller::{
    AlterConfigOp, AlterConfigsOutcome, ConfigOpType, IncrementalAlterConfigsResource,
};
use sluice_metadata::error::{code, ApiError};

use super::alter_configs::failed_outcomes;
use super::RequestContext;
use crate::broker::Broker;

/// Applies config operations through the controller.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    // A resource with an unknown operation code is answered here; the others go to the controller.
    let mut answers: Vec<Option<AlterConfigsOutcome>> = Vec::new();
    let mut resources = Vec::new();
    for r in request.resources {
        let resource_name = r.resource_name.to_string();
        let mut ops = Vec::with_capacity(r.configs.len());
        let mut bad_op = None;
        for c in r.configs {
            match ConfigOpType::from_code(c.config_operation) {
                Some(op) => ops.push(AlterConfigOp {
                    key: c.name.to_string(),
                    op,
                    value: c.value.map(|v| v.to_string()),
                }),
                None => bad_op = Some(c.config_operation),
            }
        }
        match bad_op {
            Some(op) => answers.push(Some(AlterConfigsOutcome {
                resource_type: r.resource_type,
                resource_name,
                error: Some(ApiError::new(
                    code::INVALID_REQUEST,
                    format!("Unknown config operation type {op}"),
                )),
            })),
            None => {
                answers.push(None);
                resources.push(IncrementalAlterConfigsResource {
                    resource_type: r.resource_type,
                    resource_name,
                    ops,
                });
            }
        }
    }
    let echo: Vec<(i8, String)> = resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.clone()))
        .collect();
    let outcomes = if resources.is_empty() {
        Vec::new()
    } else {
        match broker
            .controller
            .incremental_alter_configs(resources, request.validate_only)
            .await
        {
            Ok(outcomes) => outcomes,
            Err(e) => failed_outcomes(echo, &e),
        }
    };
    let mut outcomes = outcomes.into_iter();
    let responses = answers
        .into_iter()
        .filter_map(|answer| answer.or_else(|| outcomes.next()))
        .map(|o| {
            let (error_code, error_message) =
                o.error.map_or((code::NONE, None), |e| (e.code, e.message));
            AlterConfigsResourceResponse::default()
                .with_error_code(error_code)
                .with_error_message(error_message.map(StrBytes::from_string))
                .with_resource_type(o.resource_type)
                .with_resource_name(StrBytes::from_string(o.resource_name))
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
