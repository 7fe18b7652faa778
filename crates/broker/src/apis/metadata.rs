//! Metadata (key 3), v0-v12: brokers, cluster id, controller id and the requested topics with their partitions,
//! leaders, replicas and ISR, from the metadata image.
//!
//! As Kafka's `KRaftMetadataCache`: only live brokers (registered and unfenced) are listed; a partition whose
//! leader is not live answers LEADER_NOT_AVAILABLE with leader -1, and its offline replicas (v5+) are those whose
//! broker is fenced or unregistered. The controller id is the active controller when it is a live broker, else
//! a live broker (Kafka answers a random one): admin requests sent there are forwarded (KIP-590).
//!
//! Unknown topics are created when `auto.create.topics.enable` is set and the request allows it (always before
//! v4), with the broker's default partition count and replication factor. On the active controller the creation
//! is committed before the response, so the topic is returned with its partitions at once; elsewhere the
//! CreateTopics goes to the active controller and a topic not yet in this node's image answers
//! LEADER_NOT_AVAILABLE, so the client retries, as Kafka's brokers do. Invalid names get
//! INVALID_TOPIC_EXCEPTION; topics asked for by id (v12) that do not exist get UNKNOWN_TOPIC_ID.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::{BrokerRegistration, MetadataImage, NewTopic, TopicImage};
use sluice_protocol::ErrorCode;
use uuid::Uuid;

use super::RequestContext;
use crate::broker::Broker;

/// Topic operations a client may perform, as a bitfield (KIP-430): READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE,
/// DESCRIBE_CONFIGS, ALTER_CONFIGS. Without an authorizer every operation is allowed, as in Kafka.
pub(crate) const TOPIC_AUTHORIZED_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// Cluster operations (KIP-430): CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
/// IDEMPOTENT_WRITE.
const CLUSTER_AUTHORIZED_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// Internal topics created by their coordinators, never by a Metadata request.
const COORDINATOR_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

/// How long an auto-creation forwarded to the active controller may take before the topic is reported as
/// LEADER_NOT_AVAILABLE (retried by the client).
const AUTO_CREATE_FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// One topic the request names, by name or (v10+) by id.
enum Wanted {
    Name(String),
    Id(Uuid),
}

/// Answers from the metadata image, auto-creating unknown topics when allowed.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: MetadataRequest,
) -> MetadataResponse {
    let version = ctx.api_version;
    // v0: an empty list means every topic; v1+: null means every topic.
    let all_topics = match &request.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    // As Kafka: from v12, a request naming any non-zero topic id is answered by id (names ignored, zero ids
    // skipped); otherwise by name.
    let by_id = version >= 12
        && request
            .topics
            .iter()
            .flatten()
            .any(|t| !t.topic_id.is_nil());
    let mut wanted = Vec::new();
    let mut seen_names = BTreeSet::new();
    let mut seen_ids = BTreeSet::new();
    for t in request.topics.iter().flatten() {
        if by_id {
            if !t.topic_id.is_nil() && seen_ids.insert(t.topic_id) {
                wanted.push(Wanted::Id(t.topic_id));
            }
        } else if let Some(name) = &t.name {
            if seen_names.insert(name.0.to_string()) {
                wanted.push(Wanted::Name(name.0.to_string()));
            }
        }
    }
    let allow_auto_create = broker.config.auto_create_topics_enable
        && (version < 4 || request.allow_auto_topic_creation);

    let mut image = broker.controller.image();
    let mut creation_errors: Vec<(String, i16)> = Vec::new();
    if allow_auto_create && !all_topics {
        let to_create: Vec<NewTopic> = wanted
            .iter()
            .filter_map(|w| match w {
                Wanted::Name(name) => Some(name),
                Wanted::Id(_) => None,
            })
            .filter(|name| {
                image.topic(name).is_none()
                    && !COORDINATOR_TOPICS.contains(&name.as_str())
                    && sluice_metadata::validate_topic_name(name).is_ok()
            })
            .map(|name| NewTopic {
                name: name.clone(),
                num_partitions: -1,
                replication_factor: -1,
                assignments: Vec::new(),
                configs: Vec::new(),
            })
            .collect();
        if !to_create.is_empty() {
            for (name, error_code) in auto_create(broker, to_create).await {
                if error_code == ErrorCode::TopicAlreadyExists.code() || error_code == 0 {
                    tracing::info!(topic = %name, client = ?ctx.client_id, "auto-created topic");
                    // Consulted only if the topic is not in the image yet (created through another node).
                    creation_errors.push((name, ErrorCode::LeaderNotAvailable.code()));
                    continue;
                }
                tracing::warn!(topic = %name, error_code, "topic auto-creation failed");
                creation_errors.push((name, error_code));
            }
            image = broker.controller.image();
        }
    }

    let topics: Vec<MetadataResponseTopic> = if all_topics {
        image
            .topics()
            .map(|t| topic_metadata(&image, t, ctx, &request))
            .collect()
    } else {
        wanted
            .iter()
            .map(|w| match w {
                Wanted::Name(name) => match image.topic(name) {
                    Some(t) => topic_metadata(&image, t, ctx, &request),
                    None => {
                        let error = if let Some((_, code)) =
                            creation_errors.iter().find(|(n, _)| n == name)
                        {
                            *code
                        } else if sluice_metadata::validate_topic_name(name).is_err() {
                            ErrorCode::InvalidTopicException.code()
                        } else {
                            ErrorCode::UnknownTopicOrPartition.code()
                        };
                        MetadataResponseTopic::default()
                            .with_error_code(error)
                            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                    }
                },
                Wanted::Id(id) => match image.topic_by_id(*id) {
                    Some(t) => topic_metadata(&image, t, ctx, &request),
                    None => MetadataResponseTopic::default()
                        .with_error_code(ErrorCode::UnknownTopicId.code())
                        .with_topic_id(*id),
                },
            })
            .collect()
    };

    let brokers = live_brokers(&image)
        .map(|b| {
            let mut entry = MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(b.port);
            if version >= 1 {
                entry = entry.with_rack(b.rack.clone().map(StrBytes::from_string));
            }
            entry
        })
        .collect();
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if version >= 1 {
        let controller_id =
            controller_id_for_clients(&image, broker.controller.leader_id(), broker.config.node_id);
        response = response.with_controller_id(BrokerId(controller_id));
    }
    if version >= 2 {
        response = response.with_cluster_id(Some(StrBytes::from_string(image.cluster_id.clone())));
    }
    if (8..=10).contains(&version) && request.include_cluster_authorized_operations {
        response = response.with_cluster_authorized_operations(CLUSTER_AUTHORIZED_OPERATIONS);
    }
    response
}

/// Creates `topics` with the broker defaults: on this node when it is the active controller (or the embedded
/// single node), else by a CreateTopics sent to the active controller. The error code per topic name.
async fn auto_create(broker: &Arc<Broker>, topics: Vec<NewTopic>) -> Vec<(String, i16)> {
    if broker.controller.is_active() || !broker.controller_channel.has_voters() {
        return broker
            .controller
            .create_topics(topics, false)
            .await
            .into_iter()
            .map(|o| (o.name, o.error_code))
            .collect();
    }
    let request = CreateTopicsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.name.clone())))
                        .with_num_partitions(t.num_partitions)
                        .with_replication_factor(t.replication_factor)
                })
                .collect(),
        )
        .with_timeout_ms(
            i32::try_from(AUTO_CREATE_FORWARD_TIMEOUT.as_millis()).unwrap_or(i32::MAX),
        );
    match broker
        .controller_channel
        .send(&request, AUTO_CREATE_FORWARD_TIMEOUT)
        .await
    {
        Ok(response) => response
            .topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.error_code))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "topic auto-creation through the active controller failed");
            // The client retries on LEADER_NOT_AVAILABLE, by which time a controller may be reachable.
            topics
                .into_iter()
                .map(|t| (t.name, ErrorCode::LeaderNotAvailable.code()))
                .collect()
        }
    }
}

/// True when `node_id` is a registered, unfenced broker: one clients may be sent to.
pub(crate) fn is_live(image: &MetadataImage, node_id: i32) -> bool {
    image.brokers.get(&node_id).is_some_and(|b| !b.fenced)
}

/// The brokers clients see: registered and unfenced (Kafka leaves fenced brokers out), by id.
pub(crate) fn live_brokers(image: &MetadataImage) -> impl Iterator<Item = &BrokerRegistration> {
    image.brokers.values().filter(|b| !b.fenced)
}

/// The controller id given to clients: this node when it is a live broker (it forwards admin requests to the
/// active controller), else the active controller when it is a live broker, else the lowest live broker id, or -1
/// when no broker is live. Kafka answers a random live broker. Not the active controller first: right after it
/// dies it is still "live" until its session expires, and librdkafka keeps sending admin requests to the
/// controller id it last saw, unreachable, until its metadata refresh minutes later.
pub(crate) fn controller_id_for_clients(
    image: &MetadataImage,
    active_controller: Option<i32>,
    local_node: i32,
) -> i32 {
    is_live(image, local_node)
        .then_some(local_node)
        .or_else(|| active_controller.filter(|&id| is_live(image, id)))
        .or_else(|| live_brokers(image).next().map(|b| b.node_id))
        .unwrap_or(-1)
}

/// The metadata of one existing topic.
fn topic_metadata(
    image: &MetadataImage,
    topic: &TopicImage,
    ctx: &RequestContext,
    request: &MetadataRequest,
) -> MetadataResponseTopic {
    topic_metadata_at(image, topic, ctx.api_version, request)
}

/// [`topic_metadata`] for a request at `version`.
fn topic_metadata_at(
    image: &MetadataImage,
    topic: &TopicImage,
    version: i16,
    request: &MetadataRequest,
) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let offline: Vec<BrokerId> = p
                .replicas
                .iter()
                .filter(|r| !is_live(image, **r))
                .map(|r| BrokerId(*r))
                .collect();
            let (error, leader) = if is_live(image, p.leader) {
                (0, p.leader)
            } else {
                (ErrorCode::LeaderNotAvailable.code(), -1)
            };
            let mut entry = MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
                .with_leader_id(BrokerId(leader))
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect());
            if version >= 7 {
                entry = entry.with_leader_epoch(p.leader_epoch);
            }
            if version >= 5 {
                entry = entry.with_offline_replicas(offline);
            }
            entry
        })
        .collect();
    let mut entry = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_partitions(partitions);
    if version >= 1 {
        entry = entry.with_is_internal(topic.internal);
    }
    if version >= 10 {
        entry = entry.with_topic_id(topic.id);
    }
    if version >= 8 && request.include_topic_authorized_operations {
        entry = entry.with_topic_authorized_operations(TOPIC_AUTHORIZED_OPERATIONS);
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_metadata::{MetadataDelta, MetadataRecord, PartitionRegistration, Uuid};

    /// Broker 1 live (rack r1), broker 2 fenced, broker 3 never registered; topic `t`: partition 0 led by 1 with
    /// replicas [1, 2, 3], partition 1 led by nobody (its only replica, 2, is fenced).
    fn image() -> MetadataImage {
        let broker = |node_id: i32, fenced: bool| {
            MetadataRecord::RegisterBroker(BrokerRegistration {
                node_id,
                host: format!("b{node_id}"),
                port: 9092,
                rack: Some(format!("r{node_id}")),
                fenced,
                ..Default::default()
            })
        };
        let id = Uuid::from_u128(9);
        let partition =
            |partition: i32, leader: i32, replicas: Vec<i32>| MetadataRecord::Partition {
                topic_id: id,
                partition,
                registration: PartitionRegistration {
                    isr: replicas.clone(),
                    replicas,
                    leader,
                    leader_epoch: 3,
                    partition_epoch: 3,
                    ..Default::default()
                },
            };
        let records = [
            broker(1, false),
            broker(2, true),
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
                internal: false,
            },
            partition(0, 1, vec![1, 2, 3]),
            partition(1, -1, vec![2]),
        ];
        let base = MetadataImage::empty("cluster", 1);
        let mut delta = MetadataDelta::new(&base);
        for (offset, record) in records.iter().enumerate() {
            delta.replay(offset as i64, record).unwrap();
        }
        delta.apply()
    }

    #[test]
    fn fenced_and_unregistered_brokers_are_not_listed_and_are_offline_replicas() {
        let image = image();
        let live: Vec<i32> = live_brokers(&image).map(|b| b.node_id).collect();
        assert_eq!(live, vec![1], "Kafka leaves fenced brokers out");
        let topic = image.topic("t").unwrap();
        let t = topic_metadata_at(&image, topic, 12, &MetadataRequest::default());
        let p0 = &t.partitions[0];
        assert_eq!((p0.error_code, p0.leader_id.0), (0, 1));
        assert_eq!(
            p0.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(
            p0.offline_replicas.iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(p0.leader_epoch, 3);
        let p1 = &t.partitions[1];
        assert_eq!(p1.error_code, ErrorCode::LeaderNotAvailable.code());
        assert_eq!(p1.leader_id.0, -1);
        assert_eq!(
            p1.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![2]
        );
        // Before v5 there is no offline replica list.
        let old = topic_metadata_at(&image, topic, 4, &MetadataRequest::default());
        assert!(old.partitions[0].offline_replicas.is_empty());
    }

    #[test]
    fn controller_id_is_a_live_broker() {
        let image = image();
        assert_eq!(controller_id_for_clients(&image, Some(1), 2), 1);
        // The active controller is fenced, unregistered or unknown: some live broker instead.
        assert_eq!(controller_id_for_clients(&image, Some(2), 2), 1);
        assert_eq!(controller_id_for_clients(&image, Some(7), 2), 1);
        assert_eq!(controller_id_for_clients(&image, None, 1), 1);
        let empty = MetadataImage::empty("cluster", 1);
        assert_eq!(controller_id_for_clients(&empty, Some(1), 1), -1);
    }
}
