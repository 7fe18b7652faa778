//! DescribeCluster (key 60), v0-v1 (KIP-700, KIP-919): cluster id, controller id and the live brokers (registered
//! and unfenced, as Metadata lists them) from the metadata image.
//!
//! v1's endpoint type 2 (controllers) is answered on the controller listener with the quorum's voters and the
//! active controller, as Kafka's controllers do (KIP-919); on a broker listener it is UNSUPPORTED_ENDPOINT_TYPE,
//! as in Kafka.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;

use super::metadata::{controller_id_for_clients, live_brokers};
use super::{ListenerKind, RequestContext};
use crate::broker::Broker;

/// Cluster operations a client may perform without an authorizer (KIP-430 bits): CREATE, ALTER, DESCRIBE,
/// CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
const CLUSTER_AUTHORIZED_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
/// Endpoint type 1: brokers.
const ENDPOINT_TYPE_BROKERS: i8 = 1;
/// Endpoint type 2: controllers (KIP-919).
const ENDPOINT_TYPE_CONTROLLERS: i8 = 2;

/// Describes the cluster from the current image.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let image = broker.controller.image();
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(image.cluster_id.clone()));
    let authorized = if request.include_cluster_authorized_operations {
        CLUSTER_AUTHORIZED_OPERATIONS
    } else {
        i32::MIN
    };
    response = response.with_cluster_authorized_operations(authorized);
    if ctx.api_version >= 1 {
        response = response.with_endpoint_type(request.endpoint_type);
        let controllers = request.endpoint_type == ENDPOINT_TYPE_CONTROLLERS
            && ctx.listener == ListenerKind::Controller
            && !broker.controller.voters().is_empty();
        if controllers {
            let voters = broker
                .controller
                .voters()
                .into_iter()
                .map(|(id, host, port)| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(i32::from(port))
                })
                .collect();
            let leader = broker.controller.leader_id().unwrap_or(-1);
            return response
                .with_controller_id(BrokerId(leader))
                .with_brokers(voters);
        }
        if request.endpoint_type != ENDPOINT_TYPE_BROKERS {
            return response
                .with_error_code(ErrorCode::UnsupportedEndpointType.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "The broker only supports the BROKER endpoint type.",
                )))
                .with_controller_id(BrokerId(-1));
        }
    }
    let controller_id =
        controller_id_for_clients(&image, broker.controller.leader_id(), broker.config.node_id);
    let brokers = live_brokers(&image)
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(StrBytes::from_string))
        })
        .collect();
    response
        .with_controller_id(BrokerId(controller_id))
        .with_brokers(brokers)
}
