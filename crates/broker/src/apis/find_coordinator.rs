//! FindCoordinator (key 10), v0-v4: the broker that coordinates a group (the leader of its
//! `__consumer_offsets` partition, which is created on first use). v4 batches keys (KIP-699). Key type
//! TRANSACTION answers COORDINATOR_NOT_AVAILABLE until the transaction coordinator exists; other key types are
//! INVALID_REQUEST.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_coordinator::CONSUMER_OFFSETS_TOPIC;
use sluice_protocol::ErrorCode;

use super::RequestContext;
use crate::broker::Broker;

/// FindCoordinator's key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Finds the coordinator of each key.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if ctx.api_version >= 4 {
        request.coordinator_keys.clone()
    } else {
        vec![request.key.clone()]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        coordinators.push(find_one(broker, request.key_type, key).await);
    }
    if ctx.api_version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = coordinators.pop().unwrap_or_default();
    let mut response = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if ctx.api_version >= 1 {
        response.error_message = c.error_message;
    }
    response
}

async fn find_one(broker: &Arc<Broker>, key_type: i8, key: StrBytes) -> Coordinator {
    let failed = |key: StrBytes, e: ErrorCode| {
        Coordinator::default()
            .with_key(key)
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::from_static_str(""))
            .with_port(-1)
            .with_error_code(e.code())
            .with_error_message(Some(StrBytes::from_string(e.to_string())))
    };
    match key_type {
        KEY_TYPE_GROUP => {}
        KEY_TYPE_TRANSACTION => return failed(key, ErrorCode::CoordinatorNotAvailable),
        _ => return failed(key, ErrorCode::InvalidRequest),
    }
    // Creates the topic if needed and loads the group's partition, so the coordinator is ready when asked.
    if let Err(e) = broker.groups.describe_group(broker, &key).await {
        let code = if e.code() == ErrorCode::NotCoordinator.code() {
            ErrorCode::NotCoordinator
        } else {
            ErrorCode::CoordinatorNotAvailable
        };
        return failed(key, code);
    }
    let partition = broker.groups.partition_for(&key);
    let image = broker.controller.image();
    let leader = image
        .topic(CONSUMER_OFFSETS_TOPIC)
        .and_then(|t| {
            usize::try_from(partition)
                .ok()
                .and_then(|p| t.partitions.get(p))
        })
        .map(|p| p.leader);
    let Some(node) = leader.and_then(|l| image.brokers.get(&l)) else {
        return failed(key, ErrorCode::CoordinatorNotAvailable);
    };
    Coordinator::default()
        .with_key(key)
        .with_node_id(BrokerId(node.node_id))
        .with_host(StrBytes::from_string(node.host.clone()))
        .with_port(node.port)
        .with_error_code(0)
        .with_error_message(None)
}
