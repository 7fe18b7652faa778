//! Writes the seed corpus for the `decode_request` fuzz target: one valid, populated frame per API and
//! version. Run by `scripts/fuzz.sh` (ignored in normal test runs because it writes files).

#[path = "generated/samples.rs"]
mod samples;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_protocol::guard::decodable_request_versions;

#[test]
#[ignore = "writes the fuzz seed corpus; run by scripts/fuzz.sh with SLUICE_FUZZ_SEED_DIR set"]
fn write_fuzz_seed_corpus() {
    let dir = std::env::var("SLUICE_FUZZ_SEED_DIR").expect("SLUICE_FUZZ_SEED_DIR");
    std::fs::create_dir_all(&dir).expect("seed dir");
    let mut written = 0;
    for api_key in ApiKey::iter() {
        let (min, max) = decodable_request_versions(api_key as i16).expect("known api");
        for version in min..=max {
            for (name, body) in [
                ("sample", samples::sample_request(api_key as i16, version)),
                ("default", samples::default_request(api_key as i16)),
            ] {
                let body = body.expect("request");
                let header = RequestHeader::default()
                    .with_request_api_key(api_key as i16)
                    .with_request_api_version(version)
                    .with_correlation_id(1)
                    .with_client_id(Some(StrBytes::from_static_str("fuzz")));
                let mut buf = BytesMut::new();
                header
                    .encode(&mut buf, api_key.request_header_version(version))
                    .expect("header");
                body.encode(&mut buf, version).expect("body");
                let path = format!("{dir}/{}-v{version}-{name}", api_key as i16);
                std::fs::write(path, &buf).expect("write seed");
                written += 1;
            }
        }
    }
    assert!(written >= 560, "{written}");
}
