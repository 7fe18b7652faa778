//! Interim request-guard walkers: the request header only. Replaced by the output of
//! `crates/protocol/gen/` (one walker per API, generated from Kafka's message schemas).

use crate::guard::{GuardError, Walker};

/// Walks a request header at `header_version` (0-2).
pub(crate) fn walk_request_header(
    w: &mut Walker<'_>,
    header_version: i16,
) -> Result<(), GuardError> {
    w.skip("request_api_key", 2)?;
    w.skip("request_api_version", 2)?;
    w.skip("correlation_id", 4)?;
    if header_version >= 1 {
        w.string("client_id", true)?;
    }
    if header_version >= 2 {
        w.tagged_fields("_tagged_fields", |_, _| Ok(false))?;
    }
    Ok(())
}

/// Interim: accepts every body (the generated walkers land next).
pub(crate) fn walk_request_body(
    w: &mut Walker<'_>,
    _api_key: i16,
    _api_version: i16,
) -> Result<(), GuardError> {
    let rest = w.remaining() as u64;
    w.skip("body", rest)
}
