//! Exhaustive guard tests over every request API and version `kafka-protocol` 0.18 knows: valid
//! encodings (default and fully populated messages) pass the guard and round-trip through
//! `decode_request`; every truncation is refused; count and length bombs planted at every offset are
//! refused or decoded, never a panic or an abort.

#[path = "generated/samples.rs"]
mod samples;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_protocol::decode_request;
use sluice_protocol::guard::{check_request, decodable_request_versions};

fn frame(api_key: ApiKey, version: i16, body: &RequestKind) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(0x0102_0304)
        .with_client_id(Some(StrBytes::from_static_str("sluice-test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("header encodes");
    body.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("{api_key:?} v{version} encodes: {e:#}"));
    buf.freeze()
}

/// Every (api key, version) pair kafka-protocol can decode, with a populated sample frame.
fn all_sample_frames() -> Vec<(ApiKey, i16, RequestKind, Bytes)> {
    let mut out = Vec::new();
    for api_key in ApiKey::iter() {
        let (min, max) = decodable_request_versions(api_key as i16).expect("known api");
        for version in min..=max {
            let body = samples::sample_request(api_key as i16, version).expect("sample exists");
            let bytes = frame(api_key, version, &body);
            out.push((api_key, version, body, bytes));
        }
    }
    out
}

#[test]
fn every_api_has_a_walker() {
    assert_eq!(ApiKey::iter().count(), 87);
    for api_key in ApiKey::iter() {
        assert!(
            samples::default_request(api_key as i16).is_some(),
            "{api_key:?}"
        );
    }
}

#[test]
fn default_requests_of_every_api_and_version_pass_and_round_trip() {
    let mut checked = 0;
    for api_key in ApiKey::iter() {
        let (min, max) = decodable_request_versions(api_key as i16).expect("known api");
        for version in min..=max {
            let body = samples::default_request(api_key as i16).expect("default exists");
            let bytes = frame(api_key, version, &body);
            check_request(api_key, version, &bytes)
                .unwrap_or_else(|e| panic!("{api_key:?} v{version}: {e}"));
            let request =
                decode_request(bytes).unwrap_or_else(|e| panic!("{api_key:?} v{version}: {e}"));
            assert_eq!(request.body, body, "{api_key:?} v{version}");
            checked += 1;
        }
    }
    assert!(checked >= 280, "only {checked} api versions checked");
}

#[test]
fn populated_requests_of_every_api_and_version_pass_and_round_trip() {
    let frames = all_sample_frames();
    for (api_key, version, body, bytes) in &frames {
        check_request(*api_key, *version, bytes)
            .unwrap_or_else(|e| panic!("{api_key:?} v{version}: {e}"));
        let request =
            decode_request(bytes.clone()).unwrap_or_else(|e| panic!("{api_key:?} v{version}: {e}"));
        assert_eq!(&request.body, body, "{api_key:?} v{version}");
        assert_eq!(request.correlation_id(), 0x0102_0304);
    }
}

#[test]
fn every_truncation_is_refused() {
    for (api_key, version, _, bytes) in all_sample_frames() {
        for len in 0..bytes.len() {
            let result = decode_request(bytes.slice(..len));
            assert!(
                result.is_err(),
                "{api_key:?} v{version} truncated to {len} decoded"
            );
        }
    }
}

/// Kafka's parsers ignore bytes after a request body and librdkafka 2.12.1 sends some (its all-topics
/// Metadata request, librdkafka issue #5049), so a frame with extra bytes decodes to the same request.
#[test]
fn trailing_bytes_are_ignored_as_kafka_does() {
    for (api_key, version, _, bytes) in all_sample_frames() {
        let expected = decode_request(bytes.clone()).expect("sample frame decodes");
        let mut longer = BytesMut::from(&bytes[..]);
        longer.extend_from_slice(&[0, 0, 0]);
        match decode_request(longer.freeze()) {
            Ok(request) => assert_eq!(request, expected, "{api_key:?} v{version}"),
            other => panic!("{api_key:?} v{version}: {other:?}"),
        }
    }
}

/// Plants a huge int32 count/length and a huge varint at every offset of every sample frame. Without
/// the guard, kafka-protocol 0.18 aborts the whole test process on the first of these.
#[test]
fn planted_count_bombs_never_panic_or_abort() {
    let bombs: [&[u8]; 4] = [
        &[0x7f, 0xff, 0xff, 0xff],
        &[0x00, 0x10, 0x00, 0x00],
        &[0xff, 0xff, 0xff, 0xff, 0x0f],
        &[0x80, 0x80, 0x80, 0x80, 0x08],
    ];
    let mut refused = 0u64;
    let mut total = 0u64;
    for (_, _, _, bytes) in all_sample_frames() {
        for offset in 8..bytes.len() {
            for bomb in bombs {
                let mut mutated = BytesMut::from(&bytes[..]);
                let end = (offset + bomb.len()).min(mutated.len());
                mutated[offset..end].copy_from_slice(&bomb[..end - offset]);
                total += 1;
                if decode_request(mutated.freeze()).is_err() {
                    refused += 1;
                }
            }
        }
    }
    eprintln!("count bombs: {refused} of {total} mutated frames refused, the rest decoded");
    // Most plants land on a length or count and must be refused; some land in plain integers.
    assert!(refused * 2 > total, "{refused} of {total} refused");
}

/// The exact all-topics Metadata v12 request librdkafka 2.12.1 sends (librdkafka issue #5049): a null
/// compact topics array, then the three unused bytes of a 4-byte count placeholder, then the real
/// fields. Kafka reads the zeros as the remaining fields and ignores the rest; so must we.
#[test]
fn librdkafka_all_topics_metadata_v12_decodes() {
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&3i16.to_be_bytes()); // Metadata
    frame.extend_from_slice(&12i16.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    frame.extend_from_slice(&7i16.to_be_bytes());
    frame.extend_from_slice(b"rdkafka");
    frame.extend_from_slice(&[0]); // header tagged fields
    frame.extend_from_slice(&[0, 0, 0, 0]); // null topics + placeholder bytes
    frame.extend_from_slice(&[1, 0, 0]); // allow_auto_topic_creation, include_topic_authorized_operations, tags
    let request = decode_request(frame.freeze()).expect("librdkafka's request decodes");
    match request.body {
        RequestKind::Metadata(m) => {
            assert!(m.topics.is_none(), "all topics");
            assert!(!m.allow_auto_topic_creation);
        }
        other => panic!("{other:?}"),
    }
}
