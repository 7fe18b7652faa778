//! AllocateProducerIds (key 67), v0, served on the controller listener: a broker asks the active controller for
//! the next block of producer ids, taken by a committed `ProducerIds` record so that it is unique across the
//! cluster (Kafka's `ControllerApis.handleAllocateProducerIdsRequest` and `ProducerIdControlManager`). The
//! broker's side is `producer_ids.rs`.
//!
//! Errors, as Kafka's controller answers them: NOT_CONTROLLER from a node that is not the active controller (the
//! broker retries against the new leader), STALE_BROKER_EPOCH when the broker epoch is not that of the broker's
//! current registration or the broker is not registered at all (Kafka's `ClusterControlManager.checkBrokerEpoch`),
//! REQUEST_TIMED_OUT when the record was not committed in time, UNKNOWN_SERVER_ERROR otherwise.

use std::sync::Arc;

use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AllocateProducerIdsResponse, ProducerId,
};
use sluice_protocol::ErrorCode;

use super::RequestContext;
use crate::broker::Broker;

/// Hands the broker a block of producer ids.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    _ctx: &RequestContext,
    request: AllocateProducerIdsRequest,
) -> AllocateProducerIdsResponse {
    let broker_id = request.broker_id.0;
    let result = broker
        .controller
        .allocate_producer_ids(broker_id, request.broker_epoch)
        .await;
    let error_code = match &result {
        Ok(block) => wire_error(block.error_code),
        Err(e) => {
            tracing::debug!(broker_id, error = %e, "AllocateProducerIds failed");
            e.code()
        }
    };
    match result {
        Ok(block) if error_code == 0 => {
            tracing::debug!(
                broker_id,
                first = block.first_producer_id,
                size = block.size,
                "producer id block handed out"
            );
            AllocateProducerIdsResponse::default()
                .with_producer_id_start(ProducerId(block.first_producer_id))
                .with_producer_id_len(block.size)
        }
        _ => AllocateProducerIdsResponse::default()
            .with_error_code(error_code)
            .with_producer_id_start(ProducerId(-1))
            .with_producer_id_len(0),
    }
}

/// The code Kafka puts on the wire for the controller logic's refusal: an unregistered broker is
/// STALE_BROKER_EPOCH here (`checkBrokerEpoch` throws `StaleBrokerEpochException` for it).
fn wire_error(code: i16) -> i16 {
    if code == ErrorCode::BrokerIdNotRegistered.code() {
        ErrorCode::StaleBrokerEpoch.code()
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::{is_served_on, supported_versions, ListenerKind};
    use sluice_protocol::ApiKey;

    #[test]
    fn served_only_on_the_controller_listener() {
        assert_eq!(
            supported_versions(ApiKey::AllocateProducerIds),
            Some((0, 0))
        );
        assert!(is_served_on(
            ApiKey::AllocateProducerIds,
            ListenerKind::Controller
        ));
        assert!(!is_served_on(
            ApiKey::AllocateProducerIds,
            ListenerKind::Client
        ));
    }

    #[test]
    fn an_unregistered_broker_is_a_stale_epoch_on_the_wire() {
        assert_eq!(
            wire_error(ErrorCode::BrokerIdNotRegistered.code()),
            ErrorCode::StaleBrokerEpoch.code()
        );
        assert_eq!(
            wire_error(ErrorCode::StaleBrokerEpoch.code()),
            ErrorCode::StaleBrokerEpoch.code()
        );
        assert_eq!(wire_error(0), 0);
    }
}
