//! Metadata records: every change to the cluster metadata is one of these, appended to `__cluster_metadata`.
//!
//! Encoding (version 1 of every record): `[record version u8][record type u8][fields...]`, with the
//! fields written by [`crate::codec`]. A reader that meets an unknown type or a newer version fails
//! loudly instead of skipping, because skipping a metadata change would silently fork the image.
//!
//! New partitions of an existing topic (CreatePartitions) are plain [`MetadataRecord::Partition`]
//! records with the next partition ids, as in Kafka's `PartitionRecord`.

use uuid::Uuid;

use crate::codec::{DecodeError, Reader, Writer};
use crate::image::{BrokerRegistration, PartitionRegistration};

/// The encoding version written for every record today. Version 2 added the broker lifecycle (incarnation id,
/// fencing, controlled shutdown) and producer-id blocks; version 1 logs (single-node Sluice before the Raft
/// quorum) are not read.
pub const RECORD_VERSION: u8 = 2;

/// The kind of resource a config record applies to, with Kafka's `ConfigResource.Type` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigResourceType {
    /// A topic (code 2).
    Topic,
    /// A broker (code 4); the empty name is the cluster-wide default.
    Broker,
}

impl ConfigResourceType {
    /// Kafka's wire code for this resource type.
    pub fn code(self) -> i8 {
        match self {
            ConfigResourceType::Topic => 2,
            ConfigResourceType::Broker => 4,
        }
    }
    /// The resource type for a Kafka wire code, if it is one the controller stores.
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            2 => Some(ConfigResourceType::Topic),
            4 => Some(ConfigResourceType::Broker),
            _ => None,
        }
    }
}

/// One change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A broker registered (or re-registered with new endpoints).
    RegisterBroker(BrokerRegistration),
    /// A topic was created with this id.
    Topic {
        /// The topic name.
        name: String,
        /// The topic id (never nil).
        topic_id: Uuid,
        /// Whether the topic is internal (`__consumer_offsets`, ...).
        internal: bool,
    },
    /// A partition was created (or its registration replaced).
    Partition {
        /// The topic the partition belongs to.
        topic_id: Uuid,
        /// The partition id: an existing one or the next one.
        partition: i32,
        /// Replicas, ISR, leader and epochs.
        registration: PartitionRegistration,
    },
    /// A config key was set (`Some`) or deleted (`None`) on a resource.
    Config {
        /// Topic or broker.
        resource_type: ConfigResourceType,
        /// The topic name, or the broker id as a string ("" = cluster default).
        resource_name: String,
        /// The config key (`retention.ms`).
        key: String,
        /// The value, or `None` to delete the override.
        value: Option<String>,
    },
    /// A topic and all its partitions and configs were removed.
    RemoveTopic {
        /// The removed topic's id.
        topic_id: Uuid,
    },
    /// A registered broker's state changed (Kafka's `FenceBrokerRecord`, `UnfenceBrokerRecord` and
    /// `BrokerRegistrationChangeRecord`): fenced brokers lead nothing and are not listed to clients.
    BrokerState {
        /// The broker.
        node_id: i32,
        /// The broker epoch this change is for (the offset of its registration record).
        epoch: i64,
        /// Whether the broker is fenced.
        fenced: bool,
        /// Whether the broker is shutting down (its leaderships are being moved away).
        in_controlled_shutdown: bool,
    },
    /// A block of producer ids was handed to a broker (Kafka's `ProducerIdsRecord`): every id below
    /// `next_producer_id` is taken, cluster-wide.
    ProducerIds {
        /// The broker that received the block.
        broker_id: i32,
        /// Its broker epoch.
        broker_epoch: i64,
        /// The first id of the next block.
        next_producer_id: i64,
    },
}

const TYPE_REGISTER_BROKER: u8 = 1;
const TYPE_TOPIC: u8 = 2;
const TYPE_PARTITION: u8 = 3;
const TYPE_CONFIG: u8 = 4;
const TYPE_REMOVE_TOPIC: u8 = 5;
const TYPE_BROKER_STATE: u8 = 6;
const TYPE_PRODUCER_IDS: u8 = 7;
/// A partition record of a partition being reassigned: [`TYPE_PARTITION`]'s fields, then the adding and removing
/// replicas (written only then, so logs without reassignments stay readable by older builds).
const TYPE_PARTITION_REASSIGNING: u8 = 8;
/// A partition record with any extended field set: [`TYPE_PARTITION_REASSIGNING`]'s fields, then the ELR and the
/// last known ELR (KIP-966). Written only then; type 8 is still read.
const TYPE_PARTITION_EXTENDED: u8 = 9;
/// The version of a batch of records (one Raft entry).
const BATCH_VERSION: u8 = 1;

/// Encodes the records of one controller operation as one batch (one entry of the metadata log).
pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(BATCH_VERSION);
    w.len(records.len());
    for r in records {
        r.encode_into(&mut w);
    }
    w.into_inner()
}

/// Decodes a batch written by [`encode_batch`]. An empty buffer is an empty batch (a Raft leader's no-op entry).
pub fn decode_batch(buf: &[u8]) -> Result<Vec<MetadataRecord>, DecodeError> {
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(buf);
    let version = r.u8()?;
    if version != BATCH_VERSION {
        return Err(DecodeError::Invalid(format!(
            "unknown batch version {version}"
        )));
    }
    let count = r.len(2)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        records.push(MetadataRecord::decode_from(&mut r)?);
    }
    if !r.is_empty() {
        return Err(DecodeError::Invalid("trailing bytes in batch".into()));
    }
    Ok(records)
}

impl MetadataRecord {
    pub(crate) fn encode_into(&self, w: &mut Writer) {
        w.u8(RECORD_VERSION);
        match self {
            MetadataRecord::RegisterBroker(b) => {
                w.u8(TYPE_REGISTER_BROKER);
                encode_broker(w, b);
            }
            MetadataRecord::Topic {
                name,
                topic_id,
                internal,
            } => {
                w.u8(TYPE_TOPIC);
                w.str(name);
                w.uuid(*topic_id);
                w.bool(*internal);
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                registration,
            } => {
                let extended = registration.is_extended();
                w.u8(if extended {
                    TYPE_PARTITION_EXTENDED
                } else {
                    TYPE_PARTITION
                });
                w.uuid(*topic_id);
                w.i32(*partition);
                encode_partition(w, registration);
                if extended {
                    w.i32_array(&registration.adding_replicas);
                    w.i32_array(&registration.removing_replicas);
                    w.i32_array(&registration.elr);
                    w.i32_array(&registration.last_known_elr);
                }
            }
            MetadataRecord::Config {
                resource_type,
                resource_name,
                key,
                value,
            } => {
                w.u8(TYPE_CONFIG);
                w.u8(resource_type.code() as u8);
                w.str(resource_name);
                w.str(key);
                w.opt_str(value.as_deref());
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                w.u8(TYPE_REMOVE_TOPIC);
                w.uuid(*topic_id);
            }
            MetadataRecord::BrokerState {
                node_id,
                epoch,
                fenced,
                in_controlled_shutdown,
            } => {
                w.u8(TYPE_BROKER_STATE);
                w.i32(*node_id);
                w.u64(*epoch as u64);
                w.bool(*fenced);
                w.bool(*in_controlled_shutdown);
            }
            MetadataRecord::ProducerIds {
                broker_id,
                broker_epoch,
                next_producer_id,
            } => {
                w.u8(TYPE_PRODUCER_IDS);
                w.i32(*broker_id);
                w.u64(*broker_epoch as u64);
                w.u64(*next_producer_id as u64);
            }
        }
    }

    /// Encodes this record on its own.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.into_inner()
    }

    /// Decodes one record from a buffer that holds exactly one record.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let record = Self::decode_from(&mut r)?;
        if !r.is_empty() {
            return Err(DecodeError::Invalid("trailing bytes after record".into()));
        }
        Ok(record)
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(DecodeError::Invalid(format!(
                "unknown record version {version}"
            )));
        }
        let kind = r.u8()?;
        Ok(match kind {
            TYPE_REGISTER_BROKER => MetadataRecord::RegisterBroker(decode_broker(r)?),
            TYPE_TOPIC => MetadataRecord::Topic {
                name: r.str()?,
                topic_id: r.uuid()?,
                internal: r.bool()?,
            },
            TYPE_PARTITION => MetadataRecord::Partition {
                topic_id: r.uuid()?,
                partition: r.i32()?,
                registration: decode_partition(r)?,
            },
            TYPE_PARTITION_REASSIGNING | TYPE_PARTITION_EXTENDED => {
                let topic_id = r.uuid()?;
                let partition = r.i32()?;
                let mut registration = decode_partition(r)?;
                registration.adding_replicas = r.i32_array()?;
                registration.removing_replicas = r.i32_array()?;
                if kind == TYPE_PARTITION_EXTENDED {
                    registration.elr = r.i32_array()?;
                    registration.last_known_elr = r.i32_array()?;
                }
                MetadataRecord::Partition {
                    topic_id,
                    partition,
                    registration,
                }
            }
            TYPE_CONFIG => {
                let code = r.u8()? as i8;
                let resource_type = ConfigResourceType::from_code(code)
                    .ok_or_else(|| DecodeError::Invalid(format!("config resource type {code}")))?;
                MetadataRecord::Config {
                    resource_type,
                    resource_name: r.str()?,
                    key: r.str()?,
                    value: r.opt_str()?,
                }
            }
            TYPE_REMOVE_TOPIC => MetadataRecord::RemoveTopic {
                topic_id: r.uuid()?,
            },
            TYPE_BROKER_STATE => MetadataRecord::BrokerState {
                node_id: r.i32()?,
                epoch: r.u64()? as i64,
                fenced: r.bool()?,
                in_controlled_shutdown: r.bool()?,
            },
            TYPE_PRODUCER_IDS => MetadataRecord::ProducerIds {
                broker_id: r.i32()?,
                broker_epoch: r.u64()? as i64,
                next_producer_id: r.u64()? as i64,
            },
            other => return Err(DecodeError::Invalid(format!("unknown record type {other}"))),
        })
    }
}

pub(crate) fn encode_broker(w: &mut Writer, b: &BrokerRegistration) {
    w.i32(b.node_id);
    w.str(&b.host);
    w.i32(b.port);
    w.opt_str(b.rack.as_deref());
    w.uuid(b.incarnation_id);
    w.u64(b.epoch as u64);
    w.bool(b.fenced);
    w.bool(b.in_controlled_shutdown);
}

pub(crate) fn decode_broker(r: &mut Reader<'_>) -> Result<BrokerRegistration, DecodeError> {
    Ok(BrokerRegistration {
        node_id: r.i32()?,
        host: r.str()?,
        port: r.i32()?,
        rack: r.opt_str()?,
        incarnation_id: r.uuid()?,
        epoch: r.u64()? as i64,
        fenced: r.bool()?,
        in_controlled_shutdown: r.bool()?,
    })
}

pub(crate) fn encode_partition(w: &mut Writer, p: &PartitionRegistration) {
    w.i32_array(&p.replicas);
    w.i32_array(&p.isr);
    w.i32(p.leader);
    w.i32(p.leader_epoch);
    w.i32(p.partition_epoch);
}

pub(crate) fn decode_partition(r: &mut Reader<'_>) -> Result<PartitionRegistration, DecodeError> {
    Ok(PartitionRegistration {
        replicas: r.i32_array()?,
        isr: r.i32_array()?,
        leader: r.i32()?,
        leader_epoch: r.i32()?,
        partition_epoch: r.i32()?,
        ..PartitionRegistration::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<MetadataRecord> {
        let id = Uuid::from_u128(42);
        vec![
            MetadataRecord::RegisterBroker(BrokerRegistration {
                node_id: 1,
                host: "localhost".into(),
                port: 9092,
                rack: Some("r1".into()),
                incarnation_id: Uuid::from_u128(9),
                epoch: 0,
                fenced: true,
                in_controlled_shutdown: false,
            }),
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
                internal: false,
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 0,
                registration: PartitionRegistration {
                    replicas: vec![1],
                    isr: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    ..Default::default()
                },
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 1,
                registration: PartitionRegistration {
                    replicas: vec![3, 1, 2],
                    isr: vec![1, 2],
                    leader: 1,
                    leader_epoch: 4,
                    partition_epoch: 9,
                    adding_replicas: vec![3],
                    removing_replicas: vec![2],
                    ..Default::default()
                },
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 2,
                registration: PartitionRegistration {
                    replicas: vec![1, 2, 3],
                    isr: vec![],
                    leader: -1,
                    leader_epoch: 4,
                    partition_epoch: 9,
                    elr: vec![2, 3],
                    last_known_elr: vec![1],
                    ..Default::default()
                },
            },
            MetadataRecord::Config {
                resource_type: ConfigResourceType::Topic,
                resource_name: "t".into(),
                key: "retention.ms".into(),
                value: Some("1000".into()),
            },
            MetadataRecord::Config {
                resource_type: ConfigResourceType::Broker,
                resource_name: String::new(),
                key: "k".into(),
                value: None,
            },
            MetadataRecord::RemoveTopic { topic_id: id },
            MetadataRecord::BrokerState {
                node_id: 1,
                epoch: 7,
                fenced: false,
                in_controlled_shutdown: true,
            },
            MetadataRecord::ProducerIds {
                broker_id: 1,
                broker_epoch: 7,
                next_producer_id: 2000,
            },
        ]
    }

    #[test]
    fn every_record_round_trips() {
        for record in samples() {
            assert_eq!(MetadataRecord::decode(&record.encode()), Ok(record));
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for record in samples() {
            let bytes = record.encode();
            for len in 0..bytes.len() {
                assert!(
                    MetadataRecord::decode(&bytes[..len]).is_err(),
                    "{record:?} cut at {len}"
                );
            }
        }
    }

    #[test]
    fn unknown_version_and_type_are_rejected() {
        assert!(MetadataRecord::decode(&[RECORD_VERSION + 1, TYPE_REMOVE_TOPIC]).is_err());
        assert!(MetadataRecord::decode(&[1, TYPE_REMOVE_TOPIC]).is_err());
        assert!(MetadataRecord::decode(&[RECORD_VERSION, 99]).is_err());
    }

    #[test]
    fn batches_round_trip_and_empty_is_a_no_op() {
        let records = samples();
        assert_eq!(decode_batch(&encode_batch(&records)), Ok(records));
        assert_eq!(decode_batch(&[]), Ok(Vec::new()));
        let bytes = encode_batch(&samples());
        for len in 1..bytes.len() {
            assert!(decode_batch(&bytes[..len]).is_err(), "cut at {len}");
        }
    }
}
