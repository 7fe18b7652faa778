//! Response encoding over every API and version: frames from `encode_response` are well formed
//! (the generated response walkers accept them and `kafka-protocol` decodes them back), and no tagged
//! field holding its default value is ever emitted (older librdkafka mis-skips them; Apache Kafka never
//! sends them).

#[path = "generated/samples.rs"]
mod samples;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Decodable;
use sluice_protocol::guard::{check_response, encodable_response_versions};
use sluice_protocol::{encode_response, EncodeError};

fn versions(api_key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let (min, max) = encodable_response_versions(api_key as i16).expect("known api");
    min..=max
}

fn decode_back(api_key: ApiKey, version: i16, frame: &Bytes) -> (i32, ResponseKind) {
    let size = i32::from_be_bytes(frame[..4].try_into().expect("prefix"));
    assert_eq!(
        size as usize,
        frame.len() - 4,
        "{api_key:?} v{version} size prefix"
    );
    let mut buf = frame.slice(4..);
    let header = ResponseHeader::decode(&mut buf, api_key.response_header_version(version))
        .expect("header decodes");
    let body = ResponseKind::decode(api_key, &mut buf, version).expect("body decodes");
    assert!(
        buf.is_empty(),
        "{api_key:?} v{version}: {} bytes left",
        buf.len()
    );
    (header.correlation_id, body)
}

#[test]
fn default_valued_tagged_fields_are_never_emitted() {
    let mut frames = 0;
    for api_key in ApiKey::iter() {
        for version in versions(api_key) {
            let body = samples::sample_response(api_key as i16, version, false).expect("sample");
            let frame = encode_response(api_key, version, 9, &body)
                .unwrap_or_else(|e| panic!("{api_key:?} v{version}: {e}"));
            let check = check_response(api_key, version, &frame[4..])
                .unwrap_or_else(|e| panic!("{api_key:?} v{version}: {e}"));
            assert_eq!(
                check.tagged_fields, 0,
                "{api_key:?} v{version} emitted a tagged field holding its default"
            );
            let (correlation_id, decoded) = decode_back(api_key, version, &frame);
            assert_eq!(correlation_id, 9);
            assert_eq!(decoded, body, "{api_key:?} v{version}");
            frames += 1;
        }
    }
    assert!(frames >= 280, "{frames}");
}

#[test]
fn set_tagged_fields_are_emitted_and_walked() {
    let mut with_tags = 0;
    for api_key in ApiKey::iter() {
        for version in versions(api_key) {
            let body = samples::sample_response(api_key as i16, version, true).expect("sample");
            let frame = encode_response(api_key, version, 9, &body)
                .unwrap_or_else(|e| panic!("{api_key:?} v{version}: {e}"));
            let check = check_response(api_key, version, &frame[4..])
                .unwrap_or_else(|e| panic!("{api_key:?} v{version}: {e}"));
            if check.tagged_fields > 0 {
                with_tags += 1;
            }
            let (_, decoded) = decode_back(api_key, version, &frame);
            assert_eq!(decoded, body, "{api_key:?} v{version}");
        }
    }
    // Fetch v12+, ApiVersions v3+, Metadata, DescribeCluster and others define tagged fields.
    assert!(
        with_tags > 20,
        "only {with_tags} frames carried tagged fields"
    );
    let fetch = samples::sample_response(ApiKey::Fetch as i16, 16, true).expect("sample");
    let frame = encode_response(ApiKey::Fetch, 16, 1, &fetch).expect("encodes");
    assert!(
        check_response(ApiKey::Fetch, 16, &frame[4..])
            .expect("walks")
            .tagged_fields
            > 0
    );
}

#[test]
fn api_versions_responses_always_use_header_v0() {
    for version in versions(ApiKey::ApiVersions) {
        let body =
            samples::sample_response(ApiKey::ApiVersions as i16, version, false).expect("sample");
        let frame =
            encode_response(ApiKey::ApiVersions, version, 0x0a0b_0c0d, &body).expect("encodes");
        assert_eq!(&frame[4..8], &0x0a0b_0c0di32.to_be_bytes());
        // The error code (7, from the sample) follows the correlation id directly: no header tag byte.
        assert_eq!(&frame[8..10], &7i16.to_be_bytes(), "v{version}");
    }
}

#[test]
fn flexible_responses_use_header_v1() {
    let body = samples::sample_response(ApiKey::Metadata as i16, 12, false).expect("sample");
    let frame = encode_response(ApiKey::Metadata, 12, 3, &body).expect("encodes");
    assert_eq!(&frame[4..8], &3i32.to_be_bytes());
    assert_eq!(
        frame[8], 0,
        "empty tagged-field section of response header v1"
    );
}

#[test]
fn mismatched_or_unsupported_bodies_are_refused() {
    let body = samples::default_response(ApiKey::Metadata as i16).expect("default");
    assert_eq!(
        encode_response(ApiKey::Fetch, 12, 1, &body),
        Err(EncodeError::MismatchedBody { api_key: 1 })
    );
    assert_eq!(
        encode_response(ApiKey::Metadata, 99, 1, &body),
        Err(EncodeError::UnsupportedVersion {
            api_key: 3,
            api_version: 99
        })
    );
}
