//! ApiVersions (key 18), v0-v4: the API keys and version ranges this broker serves, straight from the registry.
//!
//! A request whose version we do not support never reaches this handler: the network layer answers it with
//! Kafka's v0-format UNSUPPORTED_VERSION response (KIP-511) so the client can retry with a version we share.
//! No features are advertised or finalized (a KRaft broker without feature flags): the feature fields are
//! tagged and left at their defaults, so they are not written at all.

use std::sync::Arc;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use sluice_protocol::ErrorCode;

use super::{is_served_on, ListenerKind, RequestContext, SUPPORTED_APIS};
use crate::broker::Broker;

/// Kafka's rule for `client_software_name`/`client_software_version` (v3+): letters, digits, `-` and `.`,
/// starting and ending with a letter or digit.
fn is_valid_software_field(value: &str) -> bool {
    let bytes = value.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_alphanumeric();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            edge_ok(first)
                && edge_ok(last)
                && bytes
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
        _ => false,
    }
}

/// The API keys advertised on a listener of kind `listener`, in registry order (the broker-to-controller APIs
/// only on the controller listener, as Kafka).
pub(crate) fn api_keys(listener: ListenerKind) -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .filter(|a| is_served_on(a.api_key, listener))
        .map(|a| {
            ApiVersion::default()
                .with_api_key(a.api_key as i16)
                .with_min_version(a.min_version)
                .with_max_version(a.max_version)
        })
        .collect()
}

/// Answers with every API in the registry (INVALID_REQUEST for a v3+ request with a malformed client
/// software name or version, as Kafka does).
pub(crate) async fn handle(
    _broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: ApiVersionsRequest,
) -> ApiVersionsResponse {
    if ctx.api_version >= 3
        && !(is_valid_software_field(&request.client_software_name)
            && is_valid_software_field(&request.client_software_version))
    {
        tracing::debug!(peer = %ctx.peer, name = %request.client_software_name.as_str(),
            version = %request.client_software_version.as_str(), "ApiVersions with invalid client software name/version");
        return ApiVersionsResponse::default().with_error_code(ErrorCode::InvalidRequest.code());
    }
    ApiVersionsResponse::default().with_api_keys(api_keys(ctx.listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_field_rule() {
        assert!(is_valid_software_field("librdkafka"));
        assert!(is_valid_software_field("2.12.1"));
        assert!(is_valid_software_field("apache-kafka-java"));
        assert!(!is_valid_software_field(""));
        assert!(!is_valid_software_field("-x"));
        assert!(!is_valid_software_field("a b"));
        assert!(!is_valid_software_field("x."));
    }

    #[test]
    fn broker_to_controller_apis_only_on_the_controller_listener() {
        let has = |listener, key: sluice_protocol::ApiKey| {
            api_keys(listener).iter().any(|a| a.api_key == key as i16)
        };
        use sluice_protocol::ApiKey;
        assert!(!has(ListenerKind::Client, ApiKey::BrokerRegistration));
        assert!(!has(ListenerKind::Client, ApiKey::BrokerHeartbeat));
        assert!(has(ListenerKind::Client, ApiKey::DescribeQuorum));
        assert!(has(ListenerKind::Controller, ApiKey::BrokerRegistration));
        assert!(has(ListenerKind::Controller, ApiKey::BrokerHeartbeat));
        assert!(has(ListenerKind::Controller, ApiKey::Metadata));
    }
}
