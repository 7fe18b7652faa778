//! AddOffsetsToTxn (key 25), v0-v4: adds the group's `__consumer_offsets` partition to a producer's transaction,
//! so that its TxnOffsetCommit becomes visible with the transaction's commit marker.

use std::sync::Arc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use sluice_protocol::ErrorCode;

use super::RequestContext;
use crate::broker::Broker;

/// Adds the group's offsets partition to the transaction.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let code = if request.transactional_id.0.is_empty() || request.group_id.0.is_empty() {
        ErrorCode::InvalidRequest.code()
    } else {
        match broker
            .txns
            .add_offsets(
                broker,
                &request.transactional_id.0,
                request.producer_id.0,
                request.producer_epoch,
                &request.group_id.0,
            )
            .await
        {
            // KIP-588: clients before v2 know INVALID_PRODUCER_EPOCH, not PRODUCER_FENCED.
            Ok(e) if ctx.api_version < 2 => e.for_pre_kip588_client().code(),
            Ok(e) => e.code(),
            Err(e) => e.code(),
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
