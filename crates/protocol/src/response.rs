//! Response encoding: a typed response body to a complete frame (size prefix, response header, body).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

use crate::error::EncodeError;
use crate::frame::FRAME_SIZE_PREFIX_BYTES;
use crate::guard_generated;
use crate::ErrorCode;

/// Encodes a complete response frame: 4-byte size, response header (v0, or v1 with tagged fields for
/// flexible versions, as `kafka-protocol`'s `ApiKey::response_header_version` says; ApiVersions always
/// uses v0), then the body at `api_version`.
///
/// `kafka-protocol` writes no tagged field that holds its default value (older librdkafka mis-skips them,
/// and Apache Kafka never sends them); `tests/response_tags.rs` checks this for every API and version.
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let raw_key = api_key as i16;
    let supported = crate::guard::encodable_response_versions(raw_key);
    if !supported.is_some_and(|(min, max)| (min..=max).contains(&api_version)) {
        return Err(EncodeError::UnsupportedVersion {
            api_key: raw_key,
            api_version,
        });
    }
    if guard_generated::response_api_key(body) != Some(raw_key) {
        return Err(EncodeError::MismatchedBody { api_key: raw_key });
    }
    let header_version = api_key.response_header_version(api_version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let encode_err = |e: anyhow::Error| EncodeError::Encode(format!("{e:#}"));
    let header_size = header.compute_size(header_version).map_err(encode_err)?;
    let mut buf = BytesMut::with_capacity(FRAME_SIZE_PREFIX_BYTES + header_size + 64);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(encode_err)?;
    body.encode(&mut buf, api_version).map_err(encode_err)?;
    let size_bytes = buf.len() - FRAME_SIZE_PREFIX_BYTES;
    let size = i32::try_from(size_bytes).map_err(|_| EncodeError::TooLarge { size_bytes })?;
    buf[..FRAME_SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// The frame Apache Kafka sends when an ApiVersions request has a version it does not support
/// (KIP-511, `ApiVersionsRequest.getErrorResponse`): a v0 response header and a v0 body with error 35
/// UNSUPPORTED_VERSION and the supported ranges, so that the client can retry with a version it shares.
/// Kafka lists only ApiVersions' own range here; `api_keys` holds `(api_key, min_version, max_version)`.
pub fn api_versions_unsupported_response(
    correlation_id: i32,
    api_keys: &[(i16, i16, i16)],
) -> Bytes {
    // Header (4) + error code (2) + array count (4) + 6 bytes per entry. The broker passes its own short
    // list; a list too long for one frame is cut rather than overflowing the size prefix.
    const ENTRY_BYTES: usize = 6;
    const FIXED_BYTES: usize = 4 + 2 + 4;
    let max_entries = (i32::MAX as usize - FIXED_BYTES) / ENTRY_BYTES;
    let entries = &api_keys[..api_keys.len().min(max_entries)];
    let size_bytes = FIXED_BYTES + ENTRY_BYTES * entries.len();
    let mut buf = BytesMut::with_capacity(FRAME_SIZE_PREFIX_BYTES + size_bytes);
    // Both fit in i32 by the cut above.
    buf.put_i32(size_bytes as i32);
    buf.put_i32(correlation_id);
    buf.put_i16(ErrorCode::UnsupportedVersion.code());
    buf.put_i32(entries.len() as i32);
    for &(api_key, min_version, max_version) in entries {
        buf.put_i16(api_key);
        buf.put_i16(min_version);
        buf.put_i16(max_version);
    }
    buf.freeze()
}

/// An ApiVersions response entry (`ApiVersionsResponse::api_keys`) for `(api_key, min_version, max_version)`.
pub fn api_version_entry(api_key: i16, min_version: i16, max_version: i16) -> ApiVersion {
    ApiVersion::default()
        .with_api_key(api_key)
        .with_min_version(min_version)
        .with_max_version(max_version)
}
