//! InitProducerId (key 22), v0-v4: a new producer id (epoch 0) for an idempotent producer (KIP-98).
//!
//! As in Kafka, a non-transactional producer always gets a fresh id; an id and epoch sent by the client (v3+,
//! KIP-360) are not reused. A request with a transactional id goes to the transaction coordinator
//! (`TxnCoordinator::init_producer_id`): the id's producer id with its epoch bumped, which fences the previous
//! producer of that id. The sequence checks that make the producer idempotent are in
//! `Partition::append_producer_batch`.
//!
//! Ids come from producer-id blocks the active controller hands out (`producer_ids.rs`), so they are unique
//! across the cluster. When no block is at hand within [`BLOCK_WAIT`] the answer is COORDINATOR_LOAD_IN_PROGRESS,
//! retriable, as Kafka's transaction coordinator answers when its `RPCProducerIdManager` is waiting for a block.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use sluice_protocol::ErrorCode;

use super::RequestContext;
use crate::broker::Broker;
use crate::producer_ids::ControllerBlocks;

/// How long a request waits for a producer-id block when the current one is used up and the prefetched one has
/// not arrived (one controller round trip and a metadata commit; a leader election takes longer). Past it the
/// client gets COORDINATOR_LOAD_IN_PROGRESS and retries, rather than waiting without end.
const BLOCK_WAIT: Duration = Duration::from_secs(5);

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
        Some(id) => {
            let expected = (ctx.api_version >= 3 && request.producer_id.0 >= 0)
                .then_some((request.producer_id.0, request.producer_epoch));
            let outcome = broker
                .txns
                .init_producer_id(broker, &id.0, request.transaction_timeout_ms, expected)
                .await;
            let failed = |code: i16| {
                InitProducerIdResponse::default()
                    .with_error_code(code)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            };
            return match outcome {
                Ok(Ok((producer_id, producer_epoch))) => {
                    tracing::debug!(producer_id, producer_epoch, transactional_id = %id.0,
                        client = ?ctx.client_id, "transactional producer initialized");
                    InitProducerIdResponse::default()
                        .with_producer_id(ProducerId(producer_id))
                        .with_producer_epoch(producer_epoch)
                }
                // KIP-588: clients before v4 know INVALID_PRODUCER_EPOCH, not PRODUCER_FENCED.
                Ok(Err(e)) if ctx.api_version < 4 => failed(e.for_pre_kip588_client().code()),
                Ok(Err(e)) => failed(e.code()),
                Err(e) => failed(e.code()),
            };
        }
    }
    match broker
        .producer_ids
        .generate(ControllerBlocks::of(broker), BLOCK_WAIT)
        .await
    {
        Ok(id) => {
            tracing::debug!(producer_id = id, client = ?ctx.client_id, "producer id allocated");
            InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0)
        }
        Err(e) => {
            tracing::debug!(error = %e, client = ?ctx.client_id, "no producer id yet");
            InitProducerIdResponse::default()
                .with_producer_id(ProducerId(-1))
                .with_error_code(ErrorCode::CoordinatorLoadInProgress.code())
                .with_producer_epoch(-1)
        }
    }
}
