//! The client's error type: transport, protocol and broker-reported failures.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;

/// Kafka's error codes as an enum (`kafka-protocol`'s `ResponseError`).
pub use kafka_protocol::ResponseError as KafkaError;

/// Everything that can go wrong talking to a Kafka-compatible broker.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No broker in the bootstrap list (or the metadata) could be reached.
    #[error("cannot reach any broker ({bootstrap}): {reason}; is the broker running and is --bootstrap-server right?")]
    Unreachable {
        /// The addresses tried.
        bootstrap: String,
        /// The last connection error.
        reason: String,
    },
    /// A socket error on an established connection (the connection is dropped and re-opened on next use).
    #[error("connection to {addr} failed: {reason}")]
    Connection {
        /// The broker address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// A request did not get its response within `request.timeout.ms`.
    #[error("request {api:?} to {addr} timed out after {timeout_ms} ms")]
    Timeout {
        /// The API of the request.
        api: ApiKey,
        /// The broker address.
        addr: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The broker sent bytes that do not decode as the expected response.
    #[error("malformed {api:?} response from {addr}: {reason}")]
    Malformed {
        /// The API of the response.
        api: ApiKey,
        /// The broker address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// The broker does not support any version of an API this client can speak.
    #[error("the broker does not support {api:?} (or no version this client speaks)")]
    UnsupportedApi {
        /// The API.
        api: ApiKey,
    },
    /// The broker answered with a Kafka error code.
    #[error("{context}: {error}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker {
        /// What the request was about (for example `topic orders partition 3`).
        context: String,
        /// The Kafka error.
        error: ResponseError,
        /// The error message the broker attached, if any.
        message: Option<String>,
    },
    /// The topic does not exist (and was not auto-created).
    #[error("unknown topic {0}: create it first (sluice topic create {0})")]
    UnknownTopic(String),
    /// The partition does not exist in the topic.
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
    },
    /// A record batch in a fetch response could not be decoded.
    #[error("corrupt record batch in {topic}-{partition} at offset {offset}: {reason}")]
    CorruptBatch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The fetch offset.
        offset: i64,
        /// What was wrong.
        reason: String,
    },
    /// An invalid argument or configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The producer or consumer was closed.
    #[error("the client was closed")]
    Closed,
    /// Another producer initialized with the same `transactional.id` and a newer epoch (KIP-98 fencing), or the
    /// transaction coordinator answered PRODUCER_FENCED / INVALID_PRODUCER_EPOCH. Fatal: every later call on this
    /// producer fails with it; close the producer.
    #[error("producer with transactional id {transactional_id} was fenced by another producer with the same id")]
    ProducerFenced {
        /// The transactional id.
        transactional_id: String,
    },
    /// The current transaction hit an error that only aborting it clears (Kafka's abortable errors): call
    /// `abort_transaction` and start a new transaction. Every call but `abort_transaction` fails with this until then.
    #[error("the transaction must be aborted: {cause}")]
    TransactionAbortable {
        /// The error that made the transaction abortable.
        cause: Box<ClientError>,
    },
    /// The producer hit a fatal transactional (or idempotence) error: it cannot send any more; close it.
    #[error("the producer is in a fatal error state: {cause}")]
    TransactionFatal {
        /// The error that made the producer unusable.
        cause: Box<ClientError>,
    },
    /// A transactional method was called in a state that does not allow it (Java's `IllegalStateException`);
    /// the producer's state is unchanged.
    #[error("cannot {operation} while the producer is {state}")]
    InvalidTransactionState {
        /// The method called.
        operation: &'static str,
        /// The state the producer is in (or why the call is refused).
        state: String,
    },
    /// Records of a transaction that was aborted before they were sent (Java's `TransactionAbortedException`).
    #[error("the transaction was aborted before the records were sent")]
    TransactionAborted,
    /// A batch waited longer than `delivery.timeout.ms` for a successful send.
    #[error("{records} record(s) for {topic}-{partition} expired: {timeout_ms} ms passed since the batch was created")]
    DeliveryTimeout {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The records in the batch.
        records: usize,
        /// `delivery.timeout.ms`.
        timeout_ms: u64,
    },
}

/// The client's error type under the name the Java client and most Rust clients use.
pub type Error = ClientError;

impl ClientError {
    /// A broker error for `code` (which must not be 0) with context.
    pub fn broker(context: impl Into<String>, code: i16, message: Option<String>) -> Self {
        ClientError::Broker {
            context: context.into(),
            error: ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)),
            message,
        }
    }

    /// The Kafka error this is, if the broker reported one (for a transactional error, the one that caused it).
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            ClientError::Broker { error, .. } => Some(*error),
            ClientError::ProducerFenced { .. } => Some(ResponseError::ProducerFenced),
            ClientError::TransactionAbortable { cause }
            | ClientError::TransactionFatal { cause } => cause.kafka_error(),
            _ => None,
        }
    }

    /// True for [`ClientError::ProducerFenced`] and [`ClientError::TransactionFatal`]: the producer cannot go on.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ClientError::ProducerFenced { .. } | ClientError::TransactionFatal { .. }
        )
    }

    /// True for [`ClientError::TransactionAbortable`]: abort the transaction, then go on.
    pub fn is_abortable(&self) -> bool {
        matches!(self, ClientError::TransactionAbortable { .. })
    }

    /// True for errors worth retrying after a metadata refresh or backoff.
    pub fn is_retriable(&self) -> bool {
        match self {
            // Java's `ConcurrentTransactionsException` is retriable; `kafka-protocol`'s table says not.
            ClientError::Broker {
                error: ResponseError::ConcurrentTransactions,
                ..
            } => true,
            ClientError::Broker { error, .. } => error.is_retriable(),
            ClientError::Connection { .. }
            | ClientError::Timeout { .. }
            | ClientError::Unreachable { .. } => true,
            _ => false,
        }
    }
}

/// Turns a response error code into a `Result`.
pub(crate) fn check_code(
    code: i16,
    context: impl FnOnce() -> String,
    message: Option<&kafka_protocol::protocol::StrBytes>,
) -> Result<(), ClientError> {
    if code == 0 {
        Ok(())
    } else {
        Err(ClientError::broker(
            context(),
            code,
            message.map(|m| m.as_str().to_owned()),
        ))
    }
}

/// The client's result type.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
