//! Async Rust client for Kafka-compatible brokers (Sluice, Apache Kafka, Redpanda): producer, consumer and
//! admin over `kafka-protocol`'s message types.
//!
//! - [`Client`]: bootstrap list, one pipelined [`Connection`] per broker with ApiVersions negotiation (the
//!   highest version both sides speak), and a metadata cache refreshed on NOT_LEADER_OR_FOLLOWER and
//!   UNKNOWN_TOPIC_OR_PARTITION.
//! - [`Producer`]: partitioners (explicit, murmur2 key hash as the Java client and librdkafka's
//!   `murmur2_random`, sticky, round-robin, random, custom), batching, compression, acks, retries.
//! - [`Consumer`]: assign or subscribe (consumer groups with the range, round-robin and cooperative-sticky
//!   assignors), poll, seek, pause/resume, commit sync/async, auto-commit, `auto.offset.reset`.
//! - [`Admin`]: topics, partitions, configs, offsets, groups, cluster.

pub mod admin;
pub mod client;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod partitioner;
pub mod producer;
pub mod records;

pub use admin::Admin;
pub use client::{BrokerInfo, Client, ClientConfig, ClusterMetadata, PartitionInfo, TopicInfo};
pub use connection::Connection;
pub use consumer::{Consumer, ConsumerConfig, ConsumerGroupMetadata, IsolationLevel, OffsetReset};
pub use error::{ClientError, Error, Result};
pub use group::Assignor;
pub use partitioner::{PartitionStrategy, Partitioner};
pub use producer::{
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerIdAndEpoch, TransactionState,
};
pub use records::{CompressionType, ConsumerRecord, ProducerRecord, RecordMetadata};
