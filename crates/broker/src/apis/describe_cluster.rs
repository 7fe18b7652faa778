//! DescribeCluster (key 60), v0-v2 (KIP-700, KIP-919, KIP-1073): cluster id, controller id and the live brokers
//! (registered and unfenced, as Metadata lists them) from the metadata image; with v2's `IncludeFencedBrokers`,
//! the fenced ones too, each marked `IsFenced` (as Kafka 4.0's `KafkaApis.handleDescribeCluster`, so operators can
//! see a registered broker whose session expired).
//!
//! v1's endpoint type 2 (controllers) is answered on the controller listener with the quorum's voters and the
//! active controller, as Kafka's controllers do (KIP-919); on a broker listener it is UNSUPPORTED_ENDPOINT_TYPE,
//! as in Kafka.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::image::MetadataImage;
use sluice_protocol::ErrorCode;

use super::metadata::controller_id_for_clients;
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
    let include_fenced = ctx.api_version >= 2 && request.include_fenced_brokers;
    response
        .with_controller_id(BrokerId(controller_id))
        .with_brokers(registered_brokers(&image, include_fenced))
}

/// The registered brokers by id: the unfenced ones, and the fenced ones too when `include_fenced` (v2 only:
/// `IsFenced` cannot be encoded below v2, and only a fenced broker sets it).
fn registered_brokers(image: &MetadataImage, include_fenced: bool) -> Vec<DescribeClusterBroker> {
    image
        .brokers
        .values()
        .filter(|b| include_fenced || !b.fenced)
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(StrBytes::from_string))
                .with_is_fenced(b.fenced)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::DescribeClusterResponse;
    use kafka_protocol::protocol::Encodable;
    use sluice_metadata::image::BrokerRegistration;

    fn image() -> MetadataImage {
        let mut image = MetadataImage::empty("MkU3OEVBNTcwNTJENDM2Qk", 1);
        for (id, fenced) in [(1, false), (2, true), (3, false)] {
            image.brokers.insert(
                id,
                BrokerRegistration {
                    node_id: id,
                    host: format!("b{id}"),
                    port: 9092,
                    rack: (id == 3).then(|| "r3".to_owned()),
                    incarnation_id: uuid::Uuid::from_u128(id as u128),
                    epoch: i64::from(id),
                    fenced,
                    in_controlled_shutdown: false,
                },
            );
        }
        image
    }

    /// KIP-1073: without `IncludeFencedBrokers` a fenced broker is left out, as in Metadata; with it, it is
    /// listed and marked, and the answer still encodes at v2.
    #[test]
    fn fenced_brokers_only_when_asked_for() {
        let image = image();
        let live: Vec<i32> = registered_brokers(&image, false)
            .iter()
            .map(|b| b.broker_id.0)
            .collect();
        assert_eq!(live, vec![1, 3]);
        let all = registered_brokers(&image, true);
        let marked: Vec<(i32, bool)> = all.iter().map(|b| (b.broker_id.0, b.is_fenced)).collect();
        assert_eq!(marked, vec![(1, false), (2, true), (3, false)]);
        assert_eq!(all[2].rack.as_deref(), Some("r3"));
        let response = DescribeClusterResponse::default().with_brokers(all);
        let mut buf = bytes::BytesMut::new();
        response.encode(&mut buf, 2).unwrap();
        assert!(
            response.encode(&mut bytes::BytesMut::new(), 1).is_err(),
            "IsFenced is a v2 field: a v1 answer must never carry a fenced broker"
        );
    }
}
