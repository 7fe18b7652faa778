//! BrokerRegistration (key 62), v0-v4, served on the controller listener: a broker announces itself (id,
//! incarnation, listeners, rack) to the active controller, which registers it fenced and answers its broker
//! epoch (Kafka's `ClusterControlManager.registerBroker`). A cluster id other than ours is
//! INCONSISTENT_CLUSTER_ID; a node that is not the active controller answers NOT_CONTROLLER and the broker
//! retries against the new leader.
//!
//! Metadata keeps one endpoint per broker: the listener named by this node's `inter.broker.listener.name`, else
//! one named like one of its client listeners (the cluster shares its listener names), else the first listed.

use std::sync::Arc;

use kafka_protocol::messages::broker_registration_request::Listener;
use kafka_protocol::messages::{BrokerRegistrationRequest, BrokerRegistrationResponse};
use sluice_metadata::BrokerRegistration;
use sluice_protocol::ErrorCode;

use super::RequestContext;
use crate::broker::Broker;

/// Registers the broker with the controller.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: BrokerRegistrationRequest,
) -> BrokerRegistrationResponse {
    let failed = |code: i16| {
        BrokerRegistrationResponse::default()
            .with_error_code(code)
            .with_broker_epoch(-1)
    };
    let image = broker.controller.image();
    if request.cluster_id.as_str() != image.cluster_id {
        tracing::warn!(broker_id = request.broker_id.0, peer = %ctx.peer, cluster_id = %request.cluster_id.as_str(),
            ours = %image.cluster_id, "BrokerRegistration from another cluster");
        return failed(ErrorCode::InconsistentClusterId.code());
    }
    // `inter.broker.listener.name` first, then any client listener name of ours.
    let preferred: Vec<&str> = std::iter::once(broker.config.inter_broker_listener.as_str())
        .chain(broker.config.listeners.iter().map(|l| l.name.as_str()))
        .filter(|name| !name.is_empty())
        .collect();
    let Some(endpoint) = pick_listener(&request.listeners, &preferred) else {
        return failed(ErrorCode::InvalidRequest.code());
    };
    let registration = BrokerRegistration {
        node_id: request.broker_id.0,
        host: endpoint.host.to_string(),
        port: i32::from(endpoint.port),
        rack: request.rack.as_ref().map(|r| r.to_string()),
        incarnation_id: request.incarnation_id,
        ..Default::default()
    };
    // v3 (KIP-966) says how the previous incarnation ended; older brokers say nothing (taken as clean).
    let previous_broker_epoch = if ctx.api_version >= 3 {
        request.previous_broker_epoch
    } else {
        sluice_metadata::controller::CLEAN_SHUTDOWN_UNKNOWN
    };
    match broker
        .controller
        .register_broker(registration, previous_broker_epoch)
        .await
    {
        Ok(outcome) => {
            if outcome.error_code == 0 {
                tracing::info!(broker_id = request.broker_id.0, epoch = outcome.broker_epoch,
                    incarnation = %request.incarnation_id, "broker registered");
            }
            BrokerRegistrationResponse::default()
                .with_error_code(outcome.error_code)
                .with_broker_epoch(outcome.broker_epoch)
        }
        Err(e) => {
            tracing::debug!(broker_id = request.broker_id.0, error = %e, "BrokerRegistration failed");
            failed(e.code())
        }
    }
}

/// The listener named like the earliest of `preferred`, else the first.
fn pick_listener<'a>(listeners: &'a [Listener], preferred: &[&str]) -> Option<&'a Listener> {
    preferred
        .iter()
        .find_map(|name| listeners.iter().find(|l| l.name.as_str() == *name))
        .or_else(|| listeners.first())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;

    fn listener(name: &'static str, port: u16) -> Listener {
        Listener::default()
            .with_name(StrBytes::from_static_str(name))
            .with_host(StrBytes::from_static_str("h"))
            .with_port(port)
    }

    #[test]
    fn prefers_the_client_listener_name() {
        let listeners = vec![listener("INTERNAL", 1), listener("PLAINTEXT", 2)];
        assert_eq!(pick_listener(&listeners, &["PLAINTEXT"]).unwrap().port, 2);
        assert_eq!(
            pick_listener(&listeners, &["PLAINTEXT", "INTERNAL"])
                .unwrap()
                .port,
            2
        );
        assert_eq!(pick_listener(&listeners, &["OTHER"]).unwrap().port, 1);
        assert!(pick_listener(&[], &["PLAINTEXT"]).is_none());
    }
}
