//! Envelope tests: requests built with `kafka-protocol`'s encoder decode back through `decode_request`,
//! responses encode to complete frames, and hostile frames come back as typed errors.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, RequestHeader, RequestKind,
    ResponseKind,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_protocol::{
    api_versions_unsupported_response, decode_request, encode_response, MalformedReason,
    RequestError,
};

/// Encodes header + body the way a client does (without the size prefix).
fn request_frame(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &RequestKind,
) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(api_version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("test-client")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api_key.request_header_version(api_version))
        .expect("header encodes");
    body.encode(&mut buf, api_version).expect("body encodes");
    buf.freeze()
}

#[test]
fn api_versions_request_round_trips_at_every_version() {
    for version in 0..=4 {
        let body = RequestKind::ApiVersions(if version >= 3 {
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("librdkafka"))
                .with_client_software_version(StrBytes::from_static_str("2.12.1"))
        } else {
            ApiVersionsRequest::default()
        });
        let frame = request_frame(ApiKey::ApiVersions, version, 7, &body);
        let request = decode_request(frame).expect("decodes");
        assert_eq!(request.api_key, ApiKey::ApiVersions);
        assert_eq!(request.api_version(), version);
        assert_eq!(request.correlation_id(), 7);
        assert_eq!(request.body, body);
    }
}

#[test]
fn metadata_request_round_trips() {
    let body = RequestKind::Metadata(MetadataRequest::default().with_topics(None));
    for version in [1, 4, 9, 12] {
        let frame = request_frame(ApiKey::Metadata, version, 42, &body);
        let request = decode_request(frame).expect("decodes");
        assert_eq!(request.body, body, "v{version}");
    }
}

#[test]
fn short_frames_are_malformed_not_panics() {
    for len in 0..8 {
        let frame = Bytes::from(vec![0u8; len]);
        match decode_request(frame) {
            Err(RequestError::Malformed {
                correlation_id: None,
                reason: MalformedReason::TooShort { len_bytes },
                ..
            }) => assert_eq!(len_bytes, len),
            other => panic!("len {len}: {other:?}"),
        }
    }
}

#[test]
fn unknown_key_and_version_carry_the_correlation_id() {
    let mut frame = BytesMut::new();
    frame.put_i16(1000);
    frame.put_i16(0);
    frame.put_i32(99);
    assert_eq!(
        decode_request(frame.freeze()),
        Err(RequestError::UnknownApiKey {
            api_key: 1000,
            correlation_id: 99
        })
    );
    let mut frame = BytesMut::new();
    frame.put_i16(18);
    frame.put_i16(5);
    frame.put_i32(100);
    assert_eq!(
        decode_request(frame.freeze()),
        Err(RequestError::UnsupportedVersion {
            api_key: 18,
            api_version: 5,
            correlation_id: 100
        })
    );
}

#[test]
fn api_versions_response_uses_header_v0_even_when_flexible() {
    let body = ResponseKind::ApiVersions(ApiVersionsResponse::default());
    let frame = encode_response(ApiKey::ApiVersions, 3, 5, &body).expect("encodes");
    let size = i32::from_be_bytes(frame[..4].try_into().unwrap());
    assert_eq!(size as usize, frame.len() - 4);
    assert_eq!(&frame[4..8], &5i32.to_be_bytes());
    // Header v0 has no tagged-field byte: the body's error code follows the correlation id directly.
    assert_eq!(&frame[8..10], &0i16.to_be_bytes());
}

#[test]
fn api_versions_unsupported_response_is_kafkas_v0_answer() {
    let frame = api_versions_unsupported_response(11, &[(18, 0, 4)]);
    let expected: &[u8] = &[
        0, 0, 0, 16, // size
        0, 0, 0, 11, // correlation id
        0, 35, // UNSUPPORTED_VERSION
        0, 0, 0, 1, // one entry
        0, 18, 0, 0, 0, 4,
    ];
    assert_eq!(&frame[..], expected);
}

/// The kafka-protocol 0.18 hazard from DESIGN.md: a Metadata request of a few bytes whose topic count is
/// 2^31 - 1. kafka-protocol alone calls `Vec::with_capacity(2^31 - 1)` and aborts the process.
#[test]
fn huge_array_count_is_refused_before_the_decoder() {
    let mut frame = BytesMut::new();
    frame.put_i16(3); // Metadata
    frame.put_i16(1);
    frame.put_i32(77);
    frame.put_i16(-1); // null client id
    frame.put_i32(i32::MAX); // topic count
    match decode_request(frame.freeze()) {
        Err(RequestError::Malformed {
            correlation_id: Some(77),
            reason: MalformedReason::Guard(e),
            ..
        }) => assert!(
            matches!(
                e.kind,
                sluice_protocol::guard::GuardErrorKind::CountTooLarge { .. }
            ),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

/// Many small elements that fit the frame but would decode to far more memory than the frame: each
/// Metadata topic is 2 bytes on the wire (an empty name) and about 50 in memory.
#[test]
fn memory_amplification_is_bounded_by_the_decode_budget() {
    let topics = 40 * 1024 * 1024 / 2;
    let mut frame = BytesMut::with_capacity(14 + 2 * topics);
    frame.put_i16(3);
    frame.put_i16(1);
    frame.put_i32(78);
    frame.put_i16(-1);
    frame.put_i32(topics as i32);
    frame.put_bytes(0, 2 * topics);
    match decode_request(frame.freeze()) {
        Err(RequestError::Malformed {
            reason: MalformedReason::Guard(e),
            ..
        }) => assert!(
            matches!(
                e.kind,
                sluice_protocol::guard::GuardErrorKind::DecodeBudgetExceeded { .. }
            ),
            "{e}"
        ),
        other => panic!("{:?}", other.map(|r| r.api_key)),
    }
}

#[test]
fn negative_and_null_lengths_follow_the_schema() {
    // Metadata v1: topics is nullable (null = all topics), a topic name is not.
    let mut frame = BytesMut::new();
    frame.put_i16(3);
    frame.put_i16(1);
    frame.put_i32(5);
    frame.put_i16(-1);
    frame.put_i32(-1);
    assert!(decode_request(frame.clone().freeze()).is_ok());
    frame.truncate(10);
    frame.put_i32(-2);
    assert!(decode_request(frame.clone().freeze()).is_err());
    // A topic name of length -2 is never valid.
    frame.truncate(10);
    frame.put_i32(1);
    frame.put_i16(-2);
    assert!(decode_request(frame.clone().freeze()).is_err());
    // kafka-protocol types the name as nullable in every version (Kafka's schema: from v10), so a null
    // name at v1 reaches the handler as `None`, as it does from kafka-protocol alone.
    frame.truncate(14);
    frame.put_i16(-1);
    let request = decode_request(frame.freeze()).expect("decodes");
    match request.body {
        RequestKind::Metadata(m) => assert_eq!(m.topics.expect("topics")[0].name, None),
        other => panic!("{other:?}"),
    }
}

/// The first input libFuzzer found against kafka-protocol 0.18 alone (a ControllerRegistration v0 request
/// whose varint array count asks `Vec::with_capacity` for 29 GB; found after 671 executions). Through
/// `decode_request` it is a typed error.
#[test]
fn fuzzer_found_allocation_bomb_is_refused() {
    const CRASH_HEX: &str =
        "0046000000000001000466757a7a000000000000000000919191919191919191919191919191919191919191\
        9191919191919191919191919191919191919191919191919191919191919191919191919191919191919191\
        9191919191919191919191919191919191919191919191919191919191919191919191919191919191919191\
        919191919191919191919100000000000000000000000000010100";
    let frame: Vec<u8> = (0..CRASH_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&CRASH_HEX[i..i + 2], 16).expect("hex"))
        .collect();
    assert_eq!(frame.len(), 159);
    match decode_request(Bytes::from(frame)) {
        Err(RequestError::Malformed {
            correlation_id: Some(1),
            reason: MalformedReason::Guard(_),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}
