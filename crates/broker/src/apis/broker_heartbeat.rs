//! BrokerHeartbeat (key 63), v0-v1, served on the controller listener: a registered broker reports the metadata
//! offset it has applied and whether it wants to be fenced or to shut down; the active controller unfences it once
//! it has caught up, moves its leaderships away for a controlled shutdown, and answers `is_caught_up`,
//! `is_fenced` and `should_shut_down` (Kafka's `ClusterControlManager` and `BrokerHeartbeatManager`).
//! BROKER_ID_NOT_REGISTERED and STALE_BROKER_EPOCH make the broker register again; NOT_CONTROLLER makes it
//! retry against the new leader.

use std::sync::Arc;

use kafka_protocol::messages::{BrokerHeartbeatRequest, BrokerHeartbeatResponse};
use sluice_metadata::controller::Heartbeat;

use super::RequestContext;
use crate::broker::Broker;

/// Passes the heartbeat to the controller.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: BrokerHeartbeatRequest,
) -> BrokerHeartbeatResponse {
    let heartbeat = Heartbeat {
        node_id: request.broker_id.0,
        broker_epoch: request.broker_epoch,
        current_metadata_offset: request.current_metadata_offset,
        want_fence: request.want_fence,
        want_shut_down: request.want_shut_down,
    };
    match broker.controller.broker_heartbeat(heartbeat).await {
        Ok(outcome) => BrokerHeartbeatResponse::default()
            .with_error_code(outcome.error_code)
            .with_is_caught_up(outcome.is_caught_up)
            .with_is_fenced(outcome.is_fenced)
            .with_should_shut_down(outcome.should_shut_down),
        Err(e) => {
            tracing::debug!(broker_id = request.broker_id.0, error = %e, "BrokerHeartbeat failed");
            BrokerHeartbeatResponse::default()
                .with_error_code(e.code())
                .with_is_fenced(true)
        }
    }
}
