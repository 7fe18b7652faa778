//! AlterConfigs (key 33), v0-v2: replaces all config overrides of a TOPIC resource with the given set
//! (non-incremental; keys left out are reset to the default). validate_only checks without writing. BROKER
//! resources (a broker id, or the empty name for the cluster-wide default) take only the replication throttle
//! rates, the broker configs Sluice changes at run time (`topic_config::dynamic_broker`).

use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::controller::{AlterConfigsOutcome, AlterConfigsResource};
use sluice_metadata::error::code;

use super::RequestContext;
use crate::broker::Broker;

/// Replaces topic config overrides through the controller.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let resources: Vec<AlterConfigsResource> = request
        .resources
        .into_iter()
        .map(|r| AlterConfigsResource {
            resource_type: r.resource_type,
            resource_name: r.resource_name.to_string(),
            configs: r
                .configs
                .into_iter()
                .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
                .collect(),
        })
        .collect();
    let echo: Vec<(i8, String)> = resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.clone()))
        .collect();
    let outcomes = match broker
        .controller
        .alter_configs(resources, request.validate_only)
        .await
    {
        Ok(outcomes) => outcomes,
        Err(e) => failed_outcomes(echo, &e),
    };
    AlterConfigsResponse::default().with_responses(
        outcomes
            .into_iter()
            .map(|o| {
                let (error_code, error_message) =
                    o.error.map_or((code::NONE, None), |e| (e.code, e.message));
                AlterConfigsResourceResponse::default()
                    .with_error_code(error_code)
                    .with_error_message(error_message.map(StrBytes::from_string))
                    .with_resource_type(o.resource_type)
                    .with_resource_name(StrBytes::from_string(o.resource_name))
            })
            .collect(),
    )
}

/// Every resource failed because the controller could not commit.
pub(crate) fn failed_outcomes(
    resources: Vec<(i8, String)>,
    error: &crate::controller::ControllerError,
) -> Vec<AlterConfigsOutcome> {
    let message = &error.to_string();
    tracing::error!("config change failed: {message}");
    resources
        .into_iter()
        .map(|(resource_type, resource_name)| AlterConfigsOutcome {
            resource_type,
            resource_name,
            error: Some(sluice_metadata::ApiError::new(error.code(), message)),
        })
        .collect()
}
