//! InitProducerId (key 22), v0-v4: a new producer id (epoch 0) for an idempotent producer (KIP-98).
//!
//! As in Kafka, a non-transactional producer always gets a fresh id; an id and epoch sent by the client (v3+,
//! KIP-360) are not reused. Transactions are not supported: a request with a transactional id gets
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED (fatal for the client, so it stops at once instead of retrying). The
//! sequence checks that make the producer idempotent are in `Partition::append_producer_batch`.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use sluice_protocol::ErrorCode;

use super::RequestContext;
use crate::broker::Broker;

/// Allocates a producer id.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    match &request.transactional_id {
        None => {}
        // Kafka's transaction coordinator: an empty transactional id is INVALID_REQUEST.
        Some(id) if id.0.is_empty() => {
            return InitProducerIdResponse::default()
                .with_error_code(ErrorCode::InvalidRequest.code())
                .with_producer_epoch(-1);
        }
        Some(_) => {
            return InitProducerIdResponse::default()
                .with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code())
                .with_producer_epoch(-1);
        }
    }
    let b = broker.clone();
    // Reserving a new block of ids fsyncs.
    match tokio::task::spawn_blocking(move || b.producer_ids.generate()).await {
        Ok(Ok(id)) => {
            tracing::debug!(producer_id = id, client = ?ctx.client_id, "producer id allocated");
            InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            InitProducerIdResponse::default()
                .with_error_code(ErrorCode::KafkaStorageError.code())
                .with_producer_epoch(-1)
        }
        Err(e) => {
            tracing::error!(error = %e, "producer id task failed");
            InitProducerIdResponse::default()
                .with_error_code(ErrorCode::UnknownServerError.code())
                .with_producer_epoch(-1)
        }
    }
}
