//! Cluster metadata for Sluice: metadata records, the immutable [`MetadataImage`] and the [`MetadataDelta`]
//! that replays records onto it, pure controller logic returning `(records, response)`, the topic-level
//! config catalogue, `meta.properties`, and the controller quorum ([`quorum`]): the metadata log replicated by
//! Raft, with snapshots of the image.
//!
//! Nothing here uses tokio: the broker's controller driver serializes operations, proposes their records through
//! a [`quorum::QuorumNode`] and publishes each committed image.

pub mod codec;
pub mod controller;
pub mod error;
pub mod image;
pub mod log;
pub mod meta_properties;
pub mod quorum;
pub mod record;
pub mod topic_config;

pub use controller::{
    validate_topic_name, ControllerDefaults, ControllerResult, CreatePartitions,
    CreatePartitionsOutcome, CreateTopicOutcome, DeleteTopicOutcome, DeleteTopicTarget, NewTopic,
};
pub use error::ApiError;
pub use image::{
    BrokerRegistration, MetadataDelta, MetadataImage, PartitionRegistration, ReplayError,
    TopicImage,
};
pub use record::{ConfigResourceType, MetadataRecord};
pub use uuid::Uuid;
