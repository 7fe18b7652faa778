//! Kafka error codes the controller returns, and [`ApiError`], a code with its message.
//!
//! The pure controller answers with Kafka's own codes because its responses go straight to the wire;
//! the names match `org.apache.kafka.common.protocol.Errors`.

/// Kafka error codes used by the controller and the admin APIs.
pub mod code {
    /// No error.
    pub const NONE: i16 = 0;
    /// An unexpected server error.
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    /// The topic or partition does not exist.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// The request timed out.
    pub const REQUEST_TIMED_OUT: i16 = 7;
    /// The topic name is invalid.
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    /// Not authorized for the topic.
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    /// Not authorized for the cluster.
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    /// The version of the API is not supported.
    pub const UNSUPPORTED_VERSION: i16 = 35;
    /// The topic already exists.
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// The number of partitions is invalid.
    pub const INVALID_PARTITIONS: i16 = 37;
    /// The replication factor is invalid.
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    /// The replica assignment is invalid.
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    /// A configuration is invalid.
    pub const INVALID_CONFIG: i16 = 40;
    /// This is not the controller.
    pub const NOT_CONTROLLER: i16 = 41;
    /// The request is malformed or inconsistent.
    pub const INVALID_REQUEST: i16 = 42;
    /// The request violates a configured policy.
    pub const POLICY_VIOLATION: i16 = 44;
    /// A disk error on the broker.
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    /// Topic deletion is disabled.
    pub const TOPIC_DELETION_DISABLED: i16 = 73;
    /// The topic id does not exist.
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    /// The broker epoch in the request is not the broker's current one.
    pub const STALE_BROKER_EPOCH: i16 = 77;
    /// The broker id is not registered with the controller.
    pub const BROKER_ID_NOT_REGISTERED: i16 = 102;
    /// Another live incarnation of this broker id is registered.
    pub const DUPLICATE_BROKER_REGISTRATION: i16 = 101;
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
