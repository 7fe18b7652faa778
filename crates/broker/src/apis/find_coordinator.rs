//! FindCoordinator (key 10), v0-v4: the broker that coordinates a group: the leader of its `__consumer_offsets`
//! partition in the metadata image, with that broker's registered host and port. COORDINATOR_NOT_AVAILABLE when
//! the partition has no live leader (none, fenced or unregistered), so the client retries. v4 batches keys
//! (KIP-699). Key type TRANSACTION finds the leader of the transactional id's `__transaction_state` partition the
//! same way; other key types are INVALID_REQUEST.
//!
//! `__consumer_offsets` is created on first use, as Kafka does (`GroupCoordinator::ensure_topic`: through the local
//! controller when it is the active one, else a CreateTopics to the active controller), answering
//! COORDINATOR_NOT_AVAILABLE until the topic reaches this node's image. When this node leads the group's partition
//! it loads it before answering, so the coordinator is ready when asked.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_coordinator::{CONSUMER_OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC};
use sluice_metadata::{BrokerRegistration, MetadataImage};
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
    let transaction = match key_type {
        KEY_TYPE_GROUP => false,
        KEY_TYPE_TRANSACTION => true,
        _ => return failed(key, ErrorCode::InvalidRequest),
    };
    if transaction && key.is_empty() {
        return failed(key, ErrorCode::InvalidRequest);
    }
    // The internal topic is created on first use, through whichever controller is active.
    let (ensured, topic, partition) = if transaction {
        (
            broker.txns.ensure_topic(broker).await,
            TRANSACTION_STATE_TOPIC,
            broker.txns.partition_for(&key),
        )
    } else {
        (
            broker.groups.ensure_topic(broker).await,
            CONSUMER_OFFSETS_TOPIC,
            broker.groups.partition_for(&key),
        )
    };
    if ensured.is_err() {
        return failed(key, ErrorCode::CoordinatorNotAvailable);
    }
    let image = broker.controller.image();
    let Some(node) = coordinator_node(&image, topic, partition) else {
        return failed(key, ErrorCode::CoordinatorNotAvailable);
    };
    let (node_id, host, port) = (node.node_id, node.host.clone(), node.port);
    if node_id == broker.config.node_id {
        if let Err(code) = load(broker, transaction, &key).await {
            return failed(key, code);
        }
    }
    Coordinator::default()
        .with_key(key)
        .with_node_id(BrokerId(node_id))
        .with_host(StrBytes::from_string(host))
        .with_port(port)
        .with_error_code(0)
        .with_error_message(None)
}

/// Loads the key's partition on this node (creating the internal topic if needed).
async fn load(broker: &Arc<Broker>, transaction: bool, key: &StrBytes) -> Result<(), ErrorCode> {
    let loaded = if transaction {
        broker.txns.describe(broker, key).await.map(|_| ())
    } else {
        broker.groups.describe_group(broker, key).await.map(|_| ())
    };
    match loaded {
        Ok(()) => Ok(()),
        Err(e) if e.code() == ErrorCode::NotCoordinator.code() => Err(ErrorCode::NotCoordinator),
        Err(_) => Err(ErrorCode::CoordinatorNotAvailable),
    }
}

/// The live leader of partition `partition` of the internal topic `topic`: the coordinator of the keys hashed
/// to it.
fn coordinator_node<'a>(
    image: &'a MetadataImage,
    topic: &str,
    partition: i32,
) -> Option<&'a BrokerRegistration> {
    let leader = image
        .topic(topic)?
        .partitions
        .get(usize::try_from(partition).ok()?)?
        .leader;
    image.brokers.get(&leader).filter(|b| !b.fenced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_metadata::{MetadataDelta, MetadataRecord, PartitionRegistration, Uuid};

    #[test]
    fn the_coordinator_is_the_live_leader_of_the_groups_partition() {
        let id = Uuid::from_u128(5);
        let partition = |partition: i32, leader: i32| MetadataRecord::Partition {
            topic_id: id,
            partition,
            registration: PartitionRegistration {
                replicas: vec![1, 2],
                isr: vec![1, 2],
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
                ..Default::default()
            },
        };
        let records = [
            MetadataRecord::RegisterBroker(BrokerRegistration {
                node_id: 1,
                host: "one".into(),
                port: 9092,
                ..Default::default()
            }),
            MetadataRecord::RegisterBroker(BrokerRegistration {
                node_id: 2,
                host: "two".into(),
                port: 9093,
                fenced: true,
                ..Default::default()
            }),
            MetadataRecord::Topic {
                name: CONSUMER_OFFSETS_TOPIC.into(),
                topic_id: id,
                internal: true,
            },
            partition(0, 1),
            partition(1, 2),
            partition(2, -1),
        ];
        let base = MetadataImage::empty("c", 1);
        let mut delta = MetadataDelta::new(&base);
        for (offset, r) in records.iter().enumerate() {
            delta.replay(offset as i64, r).unwrap();
        }
        let image = delta.apply();
        assert_eq!(
            coordinator_node(&image, CONSUMER_OFFSETS_TOPIC, 0).map(|b| b.host.as_str()),
            Some("one")
        );
        assert!(
            coordinator_node(&image, CONSUMER_OFFSETS_TOPIC, 1).is_none(),
            "fenced leader"
        );
        assert!(
            coordinator_node(&image, CONSUMER_OFFSETS_TOPIC, 2).is_none(),
            "no leader"
        );
        assert!(
            coordinator_node(&image, CONSUMER_OFFSETS_TOPIC, 3).is_none(),
            "no such partition"
        );
    }
}
