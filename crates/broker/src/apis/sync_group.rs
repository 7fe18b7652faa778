//! SyncGroup (key 14), v0-v5: the leader hands in the assignment; every member's response is parked until it
//! arrives (v5 echoes the protocol type and name).

use std::sync::Arc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use sluice_coordinator::ClientInfo;

use super::RequestContext;
use crate::broker::Broker;
use crate::group_coordinator::client_host;

/// Syncs the group.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let client = ClientInfo {
        api_version: ctx.api_version,
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: client_host(&ctx.peer),
    };
    match broker.groups.sync_group(broker, client, request).await {
        Ok(r) => r,
        Err(e) => SyncGroupResponse::default().with_error_code(e.code()),
    }
}
