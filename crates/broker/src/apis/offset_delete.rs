//! OffsetDelete (key 47), v0: deletes a group's committed offsets for topics it does not subscribe to (KIP-496).

use std::sync::Arc;

use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::RequestContext;
use crate::broker::Broker;

/// Deletes offsets.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    match broker.groups.offset_delete(broker, request).await {
        Ok(r) => r,
        Err(e) => OffsetDeleteResponse::default().with_error_code(e.code()),
    }
}
