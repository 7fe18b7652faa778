//! Kafka error codes the controller returns, and [`ApiError`], a code with its message.
//!
//! The pure controller answers with Kafka's own codes because its responses go straight to the wire;
//! the names match `org.apache.kafka.common.protocol.Errors`.

/// Kafka error codes used by the controller and the admin APIs: names for the values of the one table,
/// `sluice_protocol::ErrorCode` (kafka-protocol's), so they cannot drift from what the wire carries.
pub mod code {
    use sluice_protocol::ErrorCode;

    /// No error.
    pub const NONE: i16 = 0;
    /// An unexpected server error.
    pub const UNKNOWN_SERVER_ERROR: i16 = ErrorCode::UnknownServerError.code();
    /// The topic or partition does not exist.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = ErrorCode::UnknownTopicOrPartition.code();
    /// The request timed out.
    pub const REQUEST_TIMED_OUT: i16 = ErrorCode::RequestTimedOut.code();
    /// The topic name is invalid.
    pub const INVALID_TOPIC_EXCEPTION: i16 = ErrorCode::InvalidTopicException.code();
    /// Not authorized for the topic.
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = ErrorCode::TopicAuthorizationFailed.code();
    /// Not authorized for the cluster.
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = ErrorCode::ClusterAuthorizationFailed.code();
    /// The version of the API is not supported.
    pub const UNSUPPORTED_VERSION: i16 = ErrorCode::UnsupportedVersion.code();
    /// The topic already exists.
    pub const TOPIC_ALREADY_EXISTS: i16 = ErrorCode::TopicAlreadyExists.code();
    /// The number of partitions is invalid.
    pub const INVALID_PARTITIONS: i16 = ErrorCode::InvalidPartitions.code();
    /// The replication factor is invalid.
    pub const INVALID_REPLICATION_FACTOR: i16 = ErrorCode::InvalidReplicationFactor.code();
    /// The replica assignment is invalid.
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = ErrorCode::InvalidReplicaAssignment.code();
    /// A configuration is invalid.
    pub const INVALID_CONFIG: i16 = ErrorCode::InvalidConfig.code();
    /// This is not the controller.
    pub const NOT_CONTROLLER: i16 = ErrorCode::NotController.code();
    /// The request is malformed or inconsistent.
    pub const INVALID_REQUEST: i16 = ErrorCode::InvalidRequest.code();
    /// The request violates a configured policy.
    pub const POLICY_VIOLATION: i16 = ErrorCode::PolicyViolation.code();
    /// A disk error on the broker.
    pub const KAFKA_STORAGE_ERROR: i16 = ErrorCode::KafkaStorageError.code();
    /// Topic deletion is disabled.
    pub const TOPIC_DELETION_DISABLED: i16 = ErrorCode::TopicDeletionDisabled.code();
    /// The topic id does not exist.
    pub const UNKNOWN_TOPIC_ID: i16 = ErrorCode::UnknownTopicId.code();
    /// The broker epoch in the request is not the broker's current one.
    pub const STALE_BROKER_EPOCH: i16 = ErrorCode::StaleBrokerEpoch.code();
    /// The broker id is not registered with the controller.
    pub const BROKER_ID_NOT_REGISTERED: i16 = ErrorCode::BrokerIdNotRegistered.code();
    /// Another live incarnation of this broker id is registered.
    pub const DUPLICATE_BROKER_REGISTRATION: i16 = ErrorCode::DuplicateBrokerRegistration.code();
    /// The request names another cluster.
    pub const INCONSISTENT_CLUSTER_ID: i16 = ErrorCode::InconsistentClusterId.code();
}

/// A Kafka error code with an optional message, as a response carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The Kafka error code (see [`code`]).
    pub code: i16,
    /// The message sent to the client, if any.
    pub message: Option<String>,
}

impl ApiError {
    /// An error with a message.
    pub fn new(code: i16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: Some(message.into()),
        }
    }
    /// An error without a message.
    pub fn code_only(code: i16) -> Self {
        Self {
            code,
            message: None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => write!(f, "error {}: {m}", self.code),
            None => write!(f, "error {}", self.code),
        }
    }
}

impl std::error::Error for ApiError {}
