//! The metadata image (an immutable view of the cluster metadata) and the delta that replays records onto it.
//!
//! As in Kafka's `MetadataImage`/`MetadataDelta`: the image never changes once built; a [`MetadataDelta`]
//! starts from an image, replays records, and [`MetadataDelta::apply`] yields the next image. Topics are
//! shared between successive images through `Arc`, so an image is cheap to derive.

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;
use uuid::Uuid;

use crate::codec::{DecodeError, Reader, Writer};
use crate::record::{self, ConfigResourceType, MetadataRecord};

/// A broker as registered with the controller, and its lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerRegistration {
    /// The broker's `node.id`.
    pub node_id: i32,
    /// The advertised host.
    pub host: String,
    /// The advertised port.
    pub port: i32,
    /// The rack (`broker.rack`), if set.
    pub rack: Option<String>,
    /// A random id the broker picks at every start-up: a registration with a new incarnation id is a new broker
    /// epoch, a repeated one (a retried BrokerRegistration) is the same.
    pub incarnation_id: Uuid,
    /// The broker epoch: the metadata offset of the registration record (set by replay).
    pub epoch: i64,
    /// Fenced brokers lead no partition and are not shown to clients; a broker registers fenced and is unfenced
    /// once it has caught up with the metadata log.
    pub fenced: bool,
    /// The broker asked to shut down; its leaderships are being moved away.
    pub in_controlled_shutdown: bool,
}

/// One partition's replica set, ISR, leader and epochs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionRegistration {
    /// Broker ids holding a replica, preferred leader first. During a reassignment: the target replicas, then the
    /// `removing_replicas` (Kafka's order).
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// The leader's broker id, or -1 when none.
    pub leader: i32,
    /// Bumped on every leader change.
    pub leader_epoch: i32,
    /// Bumped on every change of this registration.
    pub partition_epoch: i32,
    /// Replicas a reassignment adds (in `replicas`, catching up); empty when none is in progress.
    pub adding_replicas: Vec<i32>,
    /// Replicas a reassignment removes once the added ones are in the ISR (in `replicas` meanwhile).
    pub removing_replicas: Vec<i32>,
    /// Eligible leader replicas (KIP-966): replicas that left an ISR smaller than `min.insync.replicas`, and so hold
    /// every committed record (the high watermark cannot move then), which may lead when the ISR is empty.
    pub elr: Vec<i32>,
    /// The last leader of a partition whose ISR and ELR emptied (KIP-966's last known leader): it may lead again,
    /// as an unclean election, when nothing else can.
    pub last_known_elr: Vec<i32>,
}

impl PartitionRegistration {
    /// True while a reassignment of this partition is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// True when a field beyond the basic ones is set (reassignment, ELR): the record needs its extended type.
    pub fn is_extended(&self) -> bool {
        self.is_reassigning() || !self.elr.is_empty() || !self.last_known_elr.is_empty()
    }
}

/// A topic in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    /// The topic name.
    pub name: String,
    /// The topic id.
    pub id: Uuid,
    /// The partitions; the index is the partition id.
    pub partitions: Vec<PartitionRegistration>,
    /// Config overrides only (absent keys take the broker default).
    pub configs: BTreeMap<String, String>,
    /// Whether the topic is internal.
    pub internal: bool,
}

impl TopicImage {
    /// The partition with this id, if it exists.
    pub fn partition(&self, partition: i32) -> Option<&PartitionRegistration> {
        usize::try_from(partition)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }
}

/// The cluster metadata at one offset of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataImage {
    /// The cluster id (from `meta.properties`).
    pub cluster_id: String,
    /// The active controller's node id.
    pub controller_id: i32,
    /// Registered brokers by node id.
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    /// Offset of the last record applied, or -1 for an empty log.
    pub offset: i64,
    /// Every producer id below this has been handed out in a block (`ProducerIds` records).
    pub next_producer_id: i64,
    topics: BTreeMap<String, Arc<TopicImage>>,
    topic_ids: BTreeMap<Uuid, String>,
    broker_configs: BTreeMap<String, BTreeMap<String, String>>,
}

impl MetadataImage {
    /// An image with no brokers, topics or configs.
    pub fn empty(cluster_id: impl Into<String>, controller_id: i32) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            controller_id,
            brokers: BTreeMap::new(),
            offset: -1,
            next_producer_id: 0,
            topics: BTreeMap::new(),
            topic_ids: BTreeMap::new(),
            broker_configs: BTreeMap::new(),
        }
    }

    /// The topic with this name.
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name).map(|t| t.as_ref())
    }

    /// The topic with this id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicImage> {
        self.topic_ids.get(&id).and_then(|name| self.topic(name))
    }

    /// All topics, by name order.
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values().map(|t| t.as_ref())
    }

    /// The number of topics.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Dynamic config overrides of a broker (`"0"`) or of the cluster default (`""`).
    pub fn broker_configs(&self, resource_name: &str) -> Option<&BTreeMap<String, String>> {
        self.broker_configs.get(resource_name)
    }

    /// Serializes the whole image (a snapshot body); see [`MetadataImage::decode`].
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(SNAPSHOT_VERSION);
        w.str(&self.cluster_id);
        w.i32(self.controller_id);
        w.u64(self.offset as u64);
        w.u64(self.next_producer_id as u64);
        w.len(self.brokers.len());
        for b in self.brokers.values() {
            record::encode_broker(&mut w, b);
        }
        w.len(self.topics.len());
        for t in self.topics.values() {
            w.str(&t.name);
            w.uuid(t.id);
            w.bool(t.internal);
            w.len(t.partitions.len());
            for p in &t.partitions {
                record::encode_partition(&mut w, p);
                w.i32_array(&p.adding_replicas);
                w.i32_array(&p.removing_replicas);
                w.i32_array(&p.elr);
                w.i32_array(&p.last_known_elr);
            }
            encode_map(&mut w, &t.configs);
        }
        w.len(self.broker_configs.len());
        for (name, configs) in &self.broker_configs {
            w.str(name);
            encode_map(&mut w, configs);
        }
        w.into_inner()
    }

    /// Deserializes an image written by [`MetadataImage::encode`].
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        // Version 2 had no reassignments, version 3 no ELR.
        if !(2..=SNAPSHOT_VERSION).contains(&version) {
            return Err(DecodeError::Invalid(format!(
                "unknown snapshot version {version}"
            )));
        }
        let mut image = MetadataImage::empty(r.str()?, r.i32()?);
        image.offset = r.u64()? as i64;
        image.next_producer_id = r.u64()? as i64;
        for _ in 0..r.len(34)? {
            let b = record::decode_broker(&mut r)?;
            image.brokers.insert(b.node_id, b);
        }
        for _ in 0..r.len(25)? {
            let name = r.str()?;
            let id = r.uuid()?;
            let internal = r.bool()?;
            let mut partitions = Vec::new();
            for _ in 0..r.len(20)? {
                let mut p = record::decode_partition(&mut r)?;
                if version >= 3 {
                    p.adding_replicas = r.i32_array()?;
                    p.removing_replicas = r.i32_array()?;
                }
                if version >= 4 {
                    p.elr = r.i32_array()?;
                    p.last_known_elr = r.i32_array()?;
                }
                partitions.push(p);
            }
            let configs = decode_map(&mut r)?;
            if image.topic_ids.insert(id, name.clone()).is_some() {
                return Err(DecodeError::Invalid(format!("duplicate topic id {id}")));
            }
            image.topics.insert(
                name.clone(),
                Arc::new(TopicImage {
                    name,
                    id,
                    partitions,
                    configs,
                    internal,
                }),
            );
        }
        for _ in 0..r.len(8)? {
            let name = r.str()?;
            image.broker_configs.insert(name, decode_map(&mut r)?);
        }
        if !r.is_empty() {
            return Err(DecodeError::Invalid("trailing bytes after snapshot".into()));
        }
        Ok(image)
    }
}

/// Version 3 added the reassignment fields of partitions, version 4 the ELR; versions 2 and 3 are still read.
const SNAPSHOT_VERSION: u8 = 4;

fn encode_map(w: &mut Writer, map: &BTreeMap<String, String>) {
    w.len(map.len());
    for (k, v) in map {
        w.str(k);
        w.str(v);
    }
}

fn decode_map(r: &mut Reader<'_>) -> Result<BTreeMap<String, String>, DecodeError> {
    let mut map = BTreeMap::new();
    for _ in 0..r.len(8)? {
        let k = r.str()?;
        map.insert(k, r.str()?);
    }
    Ok(map)
}

/// A record could not be applied to the image: the log contradicts itself.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// A record names a topic id the image does not have.
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    /// A topic record reuses a name or id that exists.
    #[error("topic {name} ({topic_id}) already exists")]
    TopicExists {
        /// The topic name.
        name: String,
        /// The topic id.
        topic_id: Uuid,
    },
    /// A partition record skips partition ids.
    #[error("partition {partition} of topic {topic_id} leaves a gap (topic has {count})")]
    PartitionGap {
        /// The topic id.
        topic_id: Uuid,
        /// The partition id in the record.
        partition: i32,
        /// Partitions the topic has.
        count: usize,
    },
    /// A config record names a topic the image does not have.
    #[error("config for unknown topic {0}")]
    UnknownTopic(String),
    /// A broker state record names a broker (or broker epoch) that is not registered.
    #[error("no broker {node_id} with epoch {epoch}")]
    UnknownBroker {
        /// The broker id.
        node_id: i32,
        /// The broker epoch in the record.
        epoch: i64,
    },
    /// A producer-id block would hand out ids again.
    #[error("producer id block ending at {next} does not follow {current}")]
    ProducerIdsBackwards {
        /// The record's next producer id.
        next: i64,
        /// The image's.
        current: i64,
    },
}

/// Records replayed on top of an image; [`MetadataDelta::apply`] produces the next image.
#[derive(Debug, Clone)]
pub struct MetadataDelta {
    next: MetadataImage,
}

impl MetadataDelta {
    /// A delta starting from `image`.
    pub fn new(image: &MetadataImage) -> Self {
        Self {
            next: image.clone(),
        }
    }

    /// Applies one record at `offset` of the metadata log.
    pub fn replay(&mut self, offset: i64, record: &MetadataRecord) -> Result<(), ReplayError> {
        let img = &mut self.next;
        match record {
            MetadataRecord::RegisterBroker(b) => {
                let mut b = b.clone();
                b.epoch = offset;
                img.brokers.insert(b.node_id, b);
            }
            MetadataRecord::BrokerState {
                node_id,
                epoch,
                fenced,
                in_controlled_shutdown,
            } => {
                let broker = img
                    .brokers
                    .get_mut(node_id)
                    .filter(|b| b.epoch == *epoch)
                    .ok_or(ReplayError::UnknownBroker {
                        node_id: *node_id,
                        epoch: *epoch,
                    })?;
                broker.fenced = *fenced;
                broker.in_controlled_shutdown = *in_controlled_shutdown;
            }
            MetadataRecord::ProducerIds {
                next_producer_id, ..
            } => {
                if *next_producer_id <= img.next_producer_id {
                    return Err(ReplayError::ProducerIdsBackwards {
                        next: *next_producer_id,
                        current: img.next_producer_id,
                    });
                }
                img.next_producer_id = *next_producer_id;
            }
            MetadataRecord::Topic {
                name,
                topic_id,
                internal,
            } => {
                if img.topics.contains_key(name) || img.topic_ids.contains_key(topic_id) {
                    return Err(ReplayError::TopicExists {
                        name: name.clone(),
                        topic_id: *topic_id,
                    });
                }
                img.topic_ids.insert(*topic_id, name.clone());
                img.topics.insert(
                    name.clone(),
                    Arc::new(TopicImage {
                        name: name.clone(),
                        id: *topic_id,
                        partitions: Vec::new(),
                        configs: BTreeMap::new(),
                        internal: *internal,
                    }),
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                registration,
            } => {
                let name = img
                    .topic_ids
                    .get(topic_id)
                    .ok_or(ReplayError::UnknownTopicId(*topic_id))?;
                let topic = img
                    .topics
                    .get_mut(name)
                    .ok_or(ReplayError::UnknownTopicId(*topic_id))?;
                let topic = Arc::make_mut(topic);
                let count = topic.partitions.len();
                match usize::try_from(*partition) {
                    Ok(i) if i < count => topic.partitions[i] = registration.clone(),
                    Ok(i) if i == count => topic.partitions.push(registration.clone()),
                    _ => {
                        return Err(ReplayError::PartitionGap {
                            topic_id: *topic_id,
                            partition: *partition,
                            count,
                        })
                    }
                }
            }
            MetadataRecord::Config {
                resource_type,
                resource_name,
                key,
                value,
            } => match resource_type {
                ConfigResourceType::Topic => {
                    let topic = img
                        .topics
                        .get_mut(resource_name)
                        .ok_or_else(|| ReplayError::UnknownTopic(resource_name.clone()))?;
                    let topic = Arc::make_mut(topic);
                    match value {
                        Some(v) => topic.configs.insert(key.clone(), v.clone()),
                        None => topic.configs.remove(key),
                    };
                }
                ConfigResourceType::Broker => {
                    let configs = img.broker_configs.entry(resource_name.clone()).or_default();
                    match value {
                        Some(v) => configs.insert(key.clone(), v.clone()),
                        None => configs.remove(key),
                    };
                    if configs.is_empty() {
                        img.broker_configs.remove(resource_name);
                    }
                }
            },
            MetadataRecord::RemoveTopic { topic_id } => {
                let name = img
                    .topic_ids
                    .remove(topic_id)
                    .ok_or(ReplayError::UnknownTopicId(*topic_id))?;
                img.topics.remove(&name);
            }
        }
        img.offset = offset;
        Ok(())
    }

    /// The image as it stands after the records replayed so far.
    pub fn image(&self) -> &MetadataImage {
        &self.next
    }

    /// The next image.
    pub fn apply(self) -> MetadataImage {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition() -> PartitionRegistration {
        PartitionRegistration {
            replicas: vec![0],
            isr: vec![0],
            leader: 0,
            leader_epoch: 0,
            partition_epoch: 0,
            ..Default::default()
        }
    }

    #[test]
    fn replay_builds_topics_and_removes_them() {
        let base = MetadataImage::empty("c", 0);
        let id = Uuid::from_u128(7);
        let mut delta = MetadataDelta::new(&base);
        delta
            .replay(
                0,
                &MetadataRecord::Topic {
                    name: "a".into(),
                    topic_id: id,
                    internal: false,
                },
            )
            .unwrap();
        delta
            .replay(
                1,
                &MetadataRecord::Partition {
                    topic_id: id,
                    partition: 0,
                    registration: partition(),
                },
            )
            .unwrap();
        let err = delta.replay(
            2,
            &MetadataRecord::Partition {
                topic_id: id,
                partition: 5,
                registration: partition(),
            },
        );
        assert!(matches!(err, Err(ReplayError::PartitionGap { .. })));
        let image = delta.apply();
        assert_eq!(image.topic("a").map(|t| t.partitions.len()), Some(1));
        assert_eq!(image.topic_by_id(id).map(|t| t.name.as_str()), Some("a"));
        assert_eq!(image.offset, 1);
        assert!(base.topic("a").is_none(), "the base image is untouched");

        let mut delta = MetadataDelta::new(&image);
        delta
            .replay(2, &MetadataRecord::RemoveTopic { topic_id: id })
            .unwrap();
        let image = delta.apply();
        assert!(image.topic("a").is_none());
        assert!(image.topic_by_id(id).is_none());
    }

    #[test]
    fn snapshot_round_trips_and_rejects_truncation() {
        let id = Uuid::from_u128(9);
        let mut delta = MetadataDelta::new(&MetadataImage::empty("cluster", 1));
        let records = [
            MetadataRecord::RegisterBroker(BrokerRegistration {
                node_id: 1,
                host: "h".into(),
                port: 1,
                rack: None,
                incarnation_id: Uuid::from_u128(3),
                epoch: 0,
                fenced: false,
                in_controlled_shutdown: false,
            }),
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
                internal: true,
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 0,
                registration: partition(),
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 1,
                registration: PartitionRegistration {
                    replicas: vec![2, 0],
                    adding_replicas: vec![2],
                    removing_replicas: vec![0],
                    ..partition()
                },
            },
            MetadataRecord::Config {
                resource_type: ConfigResourceType::Topic,
                resource_name: "t".into(),
                key: "retention.ms".into(),
                value: Some("5".into()),
            },
            MetadataRecord::Config {
                resource_type: ConfigResourceType::Broker,
                resource_name: "1".into(),
                key: "x".into(),
                value: Some("y".into()),
            },
        ];
        for (i, r) in records.iter().enumerate() {
            delta.replay(i as i64, r).unwrap();
        }
        let image = delta.apply();
        let bytes = image.encode();
        assert_eq!(MetadataImage::decode(&bytes), Ok(image));
        for len in 0..bytes.len() {
            assert!(MetadataImage::decode(&bytes[..len]).is_err());
        }
    }
}
