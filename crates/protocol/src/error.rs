//! Typed errors of the protocol crate: frame bounds, request decoding, response encoding.

use crate::guard::GuardError;

/// A frame-length prefix that cannot be accepted (checked against `socket.request.max.bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The 4-byte size prefix is negative.
    #[error("negative frame size {size_bytes}")]
    NegativeSize {
        /// The size read from the wire.
        size_bytes: i32,
    },
    /// The size prefix is zero: no request fits in an empty frame.
    #[error("empty frame")]
    Empty,
    /// The frame is larger than `socket.request.max.bytes`.
    #[error("frame of {size_bytes} bytes exceeds socket.request.max.bytes ({max_bytes})")]
    TooLarge {
        /// The size read from the wire.
        size_bytes: i32,
        /// The configured limit.
        max_bytes: i32,
    },
}

/// Why a request frame was judged malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedReason {
    /// The frame is too short to hold api key, api version and correlation id (8 bytes).
    #[error("frame of {len_bytes} bytes is shorter than the 8-byte header prefix")]
    TooShort {
        /// Length of the frame body.
        len_bytes: usize,
    },
    /// The schema-driven guard rejected the bytes before they reached the decoder.
    #[error("{0}")]
    Guard(#[from] GuardError),
    /// The guard accepted the bytes but `kafka-protocol`'s decoder refused them (e.g. invalid UTF-8).
    #[error("decode failed: {0}")]
    Decode(String),
}

/// A request frame that cannot be turned into a [`crate::Request`].
///
/// The broker answers none of these: Kafka closes the connection on an unknown API key or a malformed
/// request. The one exception is an ApiVersions request whose version is unsupported, answered with
/// [`crate::api_versions_unsupported_response`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The API key is not one `kafka-protocol` knows.
    #[error("unknown api key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey {
        /// The API key from the header.
        api_key: i16,
        /// The correlation id from the header.
        correlation_id: i32,
    },
    /// The API version is outside the range `kafka-protocol` can decode. The broker's own advertised
    /// ranges are narrower and checked by the broker.
    #[error(
        "unsupported version {api_version} of api key {api_key} (correlation id {correlation_id})"
    )]
    UnsupportedVersion {
        /// The API key from the header.
        api_key: i16,
        /// The API version from the header.
        api_version: i16,
        /// The correlation id from the header.
        correlation_id: i32,
    },
    /// The frame is not a well-formed request.
    #[error("malformed request (api key {api_key:?}, version {api_version:?}, correlation id {correlation_id:?}): {reason}")]
    Malformed {
        /// The API key, when the frame held one.
        api_key: Option<i16>,
        /// The API version, when the frame held one.
        api_version: Option<i16>,
        /// The correlation id, when the frame held one.
        correlation_id: Option<i32>,
        /// What was wrong.
        reason: MalformedReason,
    },
}

impl RequestError {
    /// The correlation id, when it could be read from the frame.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            RequestError::UnknownApiKey { correlation_id, .. }
            | RequestError::UnsupportedVersion { correlation_id, .. } => Some(*correlation_id),
            RequestError::Malformed { correlation_id, .. } => *correlation_id,
        }
    }
}

/// A response that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The API key is not one `kafka-protocol` knows.
    #[error("unknown api key {api_key}")]
    UnknownApiKey {
        /// The API key asked for.
        api_key: i16,
    },
    /// The version is outside the range `kafka-protocol` can encode.
    #[error("unsupported version {api_version} of api key {api_key}")]
    UnsupportedVersion {
        /// The API key asked for.
        api_key: i16,
        /// The version asked for.
        api_version: i16,
    },
    /// The response body is not the response of the API key it is sent for.
    #[error("response body does not belong to api key {api_key}")]
    MismatchedBody {
        /// The API key asked for.
        api_key: i16,
    },
    /// `kafka-protocol` refused to encode the message (a field that cannot exist at this version, or a
    /// value too large for its wire type).
    #[error("encode failed: {0}")]
    Encode(String),
    /// The encoded frame would not fit the 4-byte signed size prefix.
    #[error("response of {size_bytes} bytes is too large for a frame")]
    TooLarge {
        /// The encoded size.
        size_bytes: usize,
    },
}
