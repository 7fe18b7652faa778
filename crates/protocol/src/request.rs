//! Request decoding: a frame body (after the size prefix) to a typed [`Request`], never panicking or
//! aborting on any input.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

use crate::error::{MalformedReason, RequestError};
use crate::guard;

/// Bytes of api key, api version and correlation id at the start of every request header version.
pub const REQUEST_HEADER_PREFIX_BYTES: usize = 8;

/// A decoded request: its header and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The API this request calls.
    pub api_key: ApiKey,
    /// The request header (api key, version, correlation id, client id, tagged fields).
    pub header: RequestHeader,
    /// The request body, one variant per API.
    pub body: RequestKind,
}

impl Request {
    /// The API version of the request.
    pub fn api_version(&self) -> i16 {
        self.header.request_api_version
    }

    /// The correlation id the response must carry.
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// The fixed prefix every request header starts with, readable from any frame of at least 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    /// API key as sent.
    pub api_key: i16,
    /// API version as sent.
    pub api_version: i16,
    /// Correlation id as sent.
    pub correlation_id: i32,
}

/// Reads api key, api version and correlation id; `None` when the frame is shorter than 8 bytes.
pub fn peek_request_prefix(frame: &[u8]) -> Option<RequestPrefix> {
    let prefix: [u8; REQUEST_HEADER_PREFIX_BYTES] =
        frame.get(..REQUEST_HEADER_PREFIX_BYTES)?.try_into().ok()?;
    Some(RequestPrefix {
        api_key: i16::from_be_bytes([prefix[0], prefix[1]]),
        api_version: i16::from_be_bytes([prefix[2], prefix[3]]),
        correlation_id: i32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]),
    })
}

/// Decodes one request frame (the bytes after the 4-byte size prefix).
///
/// Order of checks: the 8-byte prefix (api key, version, correlation id) is read first, so every later
/// error carries the correlation id; then the API key and the version are checked against what
/// `kafka-protocol` knows; then the schema guard walks header and body; only then does `kafka-protocol`
/// decode. The broker's own advertised version ranges are checked by the broker, not here.
pub fn decode_request(frame: Bytes) -> Result<Request, RequestError> {
    let Some(prefix) = peek_request_prefix(&frame) else {
        let b = |i: usize| frame.get(i).copied();
        let pair = |i: usize| Some(i16::from_be_bytes([b(i)?, b(i + 1)?]));
        return Err(RequestError::Malformed {
            api_key: pair(0),
            api_version: pair(2),
            correlation_id: None,
            reason: MalformedReason::TooShort {
                len_bytes: frame.len(),
            },
        });
    };
    let RequestPrefix {
        api_key: raw_key,
        api_version,
        correlation_id,
    } = prefix;
    let api_key = ApiKey::try_from(raw_key).map_err(|()| RequestError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    let supported = guard::decodable_request_versions(raw_key);
    if !supported.is_some_and(|(min, max)| (min..=max).contains(&api_version)) {
        return Err(RequestError::UnsupportedVersion {
            api_key: raw_key,
            api_version,
            correlation_id,
        });
    }
    let malformed = |reason: MalformedReason| RequestError::Malformed {
        api_key: Some(raw_key),
        api_version: Some(api_version),
        correlation_id: Some(correlation_id),
        reason,
    };
    guard::check_request(api_key, api_version, &frame)
        .map_err(|e| malformed(MalformedReason::Guard(e)))?;

    let header_version = api_key.request_header_version(api_version);
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, header_version)
        .map_err(|e| malformed(MalformedReason::Decode(format!("{e:#}"))))?;
    let body = RequestKind::decode(api_key, &mut buf, api_version)
        .map_err(|e| malformed(MalformedReason::Decode(format!("{e:#}"))))?;
    // Bytes after the body are ignored, as Kafka ignores them (see `guard::check_request`).
    Ok(Request {
        api_key,
        header,
        body,
    })
}
