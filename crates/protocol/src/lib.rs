//! Kafka wire protocol for Sluice: bytes in, types out, and back. No I/O lives here.
//!
//! Message bodies are encoded and decoded with the `kafka-protocol` crate; this crate adds what it lacks:
//! frame bounds ([`frame`]), a guard that rejects malformed requests before they reach that decoder
//! ([`guard`]), the request and response envelopes ([`decode_request`], [`encode_response`]), a zero-copy
//! view of magic-v2 record batch headers ([`batch`]), and Kafka's error codes ([`ErrorCode`]).

pub mod batch;
pub mod error;
pub mod frame;
pub mod guard;
mod guard_generated;
pub mod request;
pub mod response;

pub use error::{EncodeError, FrameError, MalformedReason, RequestError};
pub use request::{decode_request, peek_request_prefix, Request, RequestPrefix};
pub use response::{
    api_versions_unsupported_response, encode_response, encode_response_chunks, EncodedResponse,
};

/// The message types, re-exported so the broker names one crate.
pub use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

/// Kafka's error codes: `ErrorCode::UnknownTopicOrPartition.code()` is the `i16` to put on the wire.
///
/// This is `kafka-protocol`'s `ResponseError`; code 0 (no error) is [`ERROR_NONE`].
pub use kafka_protocol::ResponseError as ErrorCode;

/// The "no error" code, 0.
pub const ERROR_NONE: i16 = 0;
