//! Metadata (key 3), v0-v12: brokers, cluster id, controller id and the requested topics with their partitions,
//! leaders, replicas and ISR, from the controller's image.
//!
//! Unknown topics are created when `auto.create.topics.enable` is set and the request allows it (always before
//! v4), with the broker's default partition count and replication factor, and returned with their partitions at
//! once: on a single node the creation is committed before the response, so clients need not retry through
//! LEADER_NOT_AVAILABLE. Invalid names get INVALID_TOPIC_EXCEPTION; topics asked for by id (v12) that do not
//! exist get UNKNOWN_TOPIC_ID.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::{MetadataImage, NewTopic, TopicImage};
use sluice_protocol::ErrorCode;
use uuid::Uuid;

use super::RequestContext;
use crate::broker::Broker;

/// Topic operations a client may perform, as a bitfield (KIP-430): READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE,
/// DESCRIBE_CONFIGS, ALTER_CONFIGS. Without an authorizer every operation is allowed, as in Kafka.
const TOPIC_AUTHORIZED_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// Cluster operations (KIP-430): CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
/// IDEMPOTENT_WRITE.
const CLUSTER_AUTHORIZED_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// Internal topics created by their coordinators, never by a Metadata request.
const COORDINATOR_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

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
            let outcomes = broker.controller.create_topics(to_create, false).await;
            for outcome in outcomes {
                if outcome.error_code == ErrorCode::TopicAlreadyExists.code()
                    || outcome.error_code == 0
                {
                    tracing::info!(topic = %outcome.name, client = ?ctx.client_id, "auto-created topic");
                    continue;
                }
                tracing::warn!(topic = %outcome.name, error_code = outcome.error_code, message = ?outcome.error_message,
                    "topic auto-creation failed");
                creation_errors.push((outcome.name, outcome.error_code));
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

    let brokers = image
        .brokers
        .values()
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
        response = response.with_controller_id(BrokerId(image.controller_id));
    }
    if version >= 2 {
        response = response.with_cluster_id(Some(StrBytes::from_string(image.cluster_id.clone())));
    }
    if (8..=10).contains(&version) && request.include_cluster_authorized_operations {
        response = response.with_cluster_authorized_operations(CLUSTER_AUTHORIZED_OPERATIONS);
    }
    response
}

/// The metadata of one existing topic.
fn topic_metadata(
    image: &MetadataImage,
    topic: &TopicImage,
    ctx: &RequestContext,
    request: &MetadataRequest,
) -> MetadataResponseTopic {
    let version = ctx.api_version;
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let offline: Vec<BrokerId> = p
                .replicas
                .iter()
                .filter(|r| !image.brokers.contains_key(r))
                .map(|r| BrokerId(*r))
                .collect();
            let error = if p.leader < 0 || !image.brokers.contains_key(&p.leader) {
                ErrorCode::LeaderNotAvailable.code()
            } else {
                0
            };
            let mut entry = MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
                .with_leader_id(BrokerId(p.leader))
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
