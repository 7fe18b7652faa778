//! Property tests: `decode_request` never panics (or aborts) on arbitrary bytes, on arbitrary bodies
//! behind a valid header prefix, or on mutated valid frames of every API and version.

#[path = "generated/samples.rs"]
mod samples;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;
use sluice_protocol::decode_request;
use sluice_protocol::guard::decodable_request_versions;

/// Every (api key, version) pair, with a populated valid frame.
fn valid_frames() -> &'static [Bytes] {
    static FRAMES: std::sync::OnceLock<Vec<Bytes>> = std::sync::OnceLock::new();
    FRAMES.get_or_init(build_valid_frames)
}

fn build_valid_frames() -> Vec<Bytes> {
    let mut out = Vec::new();
    for api_key in ApiKey::iter() {
        let (min, max) = decodable_request_versions(api_key as i16).expect("known api");
        for version in min..=max {
            let body = samples::sample_request(api_key as i16, version).expect("sample");
            let header = RequestHeader::default()
                .with_request_api_key(api_key as i16)
                .with_request_api_version(version)
                .with_correlation_id(1)
                .with_client_id(Some(StrBytes::from_static_str("p")));
            let mut buf = BytesMut::new();
            header
                .encode(&mut buf, api_key.request_header_version(version))
                .expect("header");
            body.encode(&mut buf, version).expect("body");
            out.push(buf.freeze());
        }
    }
    out
}

fn api_key_and_version() -> impl Strategy<Value = (i16, i16)> {
    let keys: Vec<i16> = ApiKey::iter().map(|k| k as i16).collect();
    proptest::sample::select(keys).prop_flat_map(|key| {
        let (min, max) = decodable_request_versions(key).expect("known api");
        (Just(key), min..=max)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(Bytes::from(bytes));
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_prefix_never_panic(
        (api_key, version) in api_key_and_version(),
        tail in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut frame = Vec::with_capacity(8 + tail.len());
        frame.extend_from_slice(&api_key.to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&42i32.to_be_bytes());
        frame.extend_from_slice(&tail);
        if let Err(e) = decode_request(Bytes::from(frame)) {
            prop_assert_eq!(e.correlation_id(), Some(42));
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        index in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let frames = valid_frames();
        let frame = &frames[index.index(frames.len())];
        let mut bytes = frame.to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let _ = decode_request(Bytes::from(bytes));
    }
}
