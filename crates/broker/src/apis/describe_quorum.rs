//! DescribeQuorum (key 55), v0-v2 (KIP-595, KIP-836, KIP-853): the state of the metadata quorum, answered by
//! its leader (the active controller) for the one partition it has, `__cluster_metadata`-0: leader, epoch,
//! high watermark, and the voters and observers with their log end offsets and (v1+) last fetch and caught-up
//! times; v2 adds every voter's controller endpoint (named by the first `controller.listener.names`).
//!
//! As Kafka's `KafkaRaftClient.handleDescribeQuorumRequest`: a request that is not exactly that one partition
//! gets UNKNOWN_TOPIC_OR_PARTITION on every partition it names, and a node that is not the leader
//! NOT_LEADER_OR_FOLLOWER. Requests that reach a broker listener of a non-leader are forwarded to the active
//! controller first (`apis/forwarding.rs`), as Kafka's brokers do.

use std::sync::Arc;

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::controller::CLUSTER_METADATA_TOPIC;
use sluice_protocol::ErrorCode;

use super::RequestContext;
use crate::broker::Broker;
use crate::controller::{QuorumStatus, ReplicaStatus};

/// The listener name reported for the voters' endpoints (v2) when `controller.listener.names` is empty.
const DEFAULT_CONTROLLER_LISTENER_NAME: &str = "CONTROLLER";

/// Describes the metadata quorum.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    if !is_metadata_partition_only(&request) {
        return partition_errors(
            &request,
            ctx.api_version,
            ErrorCode::UnknownTopicOrPartition,
        );
    }
    if !broker.controller.is_active() {
        return partition_errors(&request, ctx.api_version, ErrorCode::NotLeaderOrFollower);
    }
    let status = broker.controller.quorum_status();
    let voters = broker.controller.voters();
    let listener_name = broker
        .config
        .controller_listener_names
        .first()
        .map_or(DEFAULT_CONTROLLER_LISTENER_NAME, String::as_str);
    describe(&status, &voters, listener_name, ctx.api_version)
}

/// True when the request names exactly `__cluster_metadata` partition 0.
fn is_metadata_partition_only(request: &DescribeQuorumRequest) -> bool {
    match request.topics.as_slice() {
        [topic] => {
            topic.topic_name.0.as_str() == CLUSTER_METADATA_TOPIC
                && matches!(topic.partitions.as_slice(), [p] if p.partition_index == 0)
        }
        _ => false,
    }
}

/// Every partition the request names, with `error`.
fn partition_errors(
    request: &DescribeQuorumRequest,
    version: i16,
    error: ErrorCode,
) -> DescribeQuorumResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut data = PartitionData::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.code())
                        .with_leader_id(BrokerId(-1))
                        .with_leader_epoch(-1)
                        .with_high_watermark(-1);
                    if version >= 2 {
                        data.error_message = Some(StrBytes::from_string(error.to_string()));
                    }
                    data
                })
                .collect();
            TopicData::default()
                .with_topic_name(t.topic_name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default().with_topics(topics)
}

/// The answer from the leader's view of the quorum.
fn describe(
    status: &QuorumStatus,
    voters: &[(i32, String, u16)],
    listener_name: &str,
    version: i16,
) -> DescribeQuorumResponse {
    let replica = |r: &ReplicaStatus| {
        let mut state = ReplicaState::default()
            .with_replica_id(BrokerId(r.replica_id))
            .with_log_end_offset(r.log_end_offset);
        if version >= 1 {
            state = state
                .with_last_fetch_timestamp(r.last_fetch_timestamp_ms)
                .with_last_caught_up_timestamp(r.last_caught_up_timestamp_ms);
        }
        state
    };
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_error_code(0)
        .with_leader_id(BrokerId(status.leader_id))
        .with_leader_epoch(status.leader_epoch)
        .with_high_watermark(status.high_watermark)
        .with_current_voters(status.voters.iter().map(replica).collect())
        .with_observers(status.observers.iter().map(replica).collect());
    let topic = TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(CLUSTER_METADATA_TOPIC)))
        .with_partitions(vec![partition]);
    let mut response = DescribeQuorumResponse::default().with_topics(vec![topic]);
    if version >= 2 {
        response.nodes = voters
            .iter()
            .map(|(id, host, port)| {
                Node::default()
                    .with_node_id(BrokerId(*id))
                    .with_listeners(vec![Listener::default()
                        .with_name(StrBytes::from_string(listener_name.to_owned()))
                        .with_host(StrBytes::from_string(host.clone()))
                        .with_port(*port)])
            })
            .collect();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_quorum_request;

    fn request(topic: &'static str, partitions: &[i32]) -> DescribeQuorumRequest {
        DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            describe_quorum_request::PartitionData::default()
                                .with_partition_index(p)
                        })
                        .collect(),
                ),
        ])
    }

    #[test]
    fn only_the_metadata_partition_is_described() {
        assert!(is_metadata_partition_only(&request(
            "__cluster_metadata",
            &[0]
        )));
        assert!(!is_metadata_partition_only(&request(
            "__cluster_metadata",
            &[1]
        )));
        assert!(!is_metadata_partition_only(&request(
            "__cluster_metadata",
            &[0, 0]
        )));
        assert!(!is_metadata_partition_only(&request("orders", &[0])));
        let r = partition_errors(
            &request("orders", &[3]),
            2,
            ErrorCode::UnknownTopicOrPartition,
        );
        assert_eq!(r.topics[0].partitions[0].partition_index, 3);
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ErrorCode::UnknownTopicOrPartition.code()
        );
    }

    #[test]
    fn reports_voters_observers_and_v2_endpoints() {
        let status = QuorumStatus {
            leader_id: 1,
            leader_epoch: 4,
            high_watermark: 120,
            voters: vec![
                ReplicaStatus {
                    replica_id: 1,
                    log_end_offset: 130,
                    last_fetch_timestamp_ms: 10,
                    last_caught_up_timestamp_ms: 10,
                },
                ReplicaStatus {
                    replica_id: 2,
                    log_end_offset: 120,
                    last_fetch_timestamp_ms: 9,
                    last_caught_up_timestamp_ms: 8,
                },
            ],
            observers: vec![ReplicaStatus {
                replica_id: 7,
                log_end_offset: 100,
                last_fetch_timestamp_ms: 5,
                last_caught_up_timestamp_ms: -1,
            }],
        };
        let voters = vec![(1, "c1".to_string(), 9093), (2, "c2".to_string(), 9093)];
        let v0 = describe(&status, &voters, "CONTROLLER", 0);
        let p = &v0.topics[0].partitions[0];
        assert_eq!(
            (p.leader_id.0, p.leader_epoch, p.high_watermark),
            (1, 4, 120)
        );
        assert_eq!(p.current_voters.len(), 2);
        assert_eq!(p.observers[0].replica_id.0, 7);
        assert_eq!(
            p.current_voters[1].last_fetch_timestamp, -1,
            "v0 has no timestamps"
        );
        assert!(v0.nodes.is_empty());
        let v2 = describe(&status, &voters, "CONTROLLER", 2);
        assert_eq!(
            v2.topics[0].partitions[0].current_voters[1].last_caught_up_timestamp,
            8
        );
        assert_eq!(v2.nodes.len(), 2);
        assert_eq!(v2.nodes[1].listeners[0].host.as_str(), "c2");
    }
}
