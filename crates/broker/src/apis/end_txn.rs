//! EndTxn (key 26), v0-v4: commits or aborts a producer's transaction. The coordinator writes PrepareCommit or
//! PrepareAbort and answers; the markers are written to every partition of the transaction in the background
//! (`txn_coordinator`), after which the transaction is complete (a new one may begin meanwhile: its requests get
//! CONCURRENT_TRANSACTIONS and retry until then, as with Kafka).

use std::sync::Arc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};
use sluice_protocol::ErrorCode;

use super::RequestContext;
use crate::broker::Broker;

/// Ends the transaction.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: EndTxnRequest,
) -> EndTxnResponse {
    let code = if request.transactional_id.0.is_empty() {
        ErrorCode::InvalidRequest.code()
    } else {
        match broker
            .txns
            .end_txn(
                broker,
                &request.transactional_id.0,
                request.producer_id.0,
                request.producer_epoch,
                request.committed,
            )
            .await
        {
            // KIP-588: clients before v2 know INVALID_PRODUCER_EPOCH, not PRODUCER_FENCED.
            Ok(e) if ctx.api_version < 2 => e.for_pre_kip588_client().code(),
            Ok(e) => e.code(),
            Err(e) => e.code(),
        }
    };
    EndTxnResponse::default().with_error_code(code)
}
