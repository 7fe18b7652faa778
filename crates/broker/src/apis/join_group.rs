//! JoinGroup (key 11), v0-v9: joins a classic group through the group coordinator. The response is parked until
//! the rebalance completes (KIP-394 MEMBER_ID_REQUIRED from v4, KIP-345 static membership from v5, the chosen
//! protocol's type and name from v7, KIP-814 skip-assignment from v9).

use std::sync::Arc;

use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_coordinator::ClientInfo;

use super::RequestContext;
use crate::broker::Broker;
use crate::group_coordinator::client_host;

/// Joins the group.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let client = ClientInfo {
        api_version: ctx.api_version,
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: client_host(&ctx.peer),
    };
    let member_id = request.member_id.clone();
    match broker.groups.join_group(broker, client, request).await {
        Ok(r) => r,
        Err(e) => JoinGroupResponse::default()
            .with_error_code(e.code())
            .with_generation_id(-1)
            .with_protocol_name(if ctx.api_version >= 7 {
                None
            } else {
                Some(StrBytes::from_static_str(""))
            })
            .with_member_id(member_id),
    }
}
