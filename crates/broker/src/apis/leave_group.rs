//! LeaveGroup (key 13), v0-v5: one member (v0-v2) or a batch of members by member id or group instance id
//! (v3+, KIP-345).

use std::sync::Arc;

use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::RequestContext;
use crate::broker::Broker;

/// Removes members from the group.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    match broker
        .groups
        .leave_group(broker, ctx.api_version, request)
        .await
    {
        Ok(r) => r,
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
    }
}
