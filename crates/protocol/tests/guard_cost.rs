//! Measures what the guard adds to `decode_request` (run on demand, in release mode, next to the decode
//! it protects: `cargo test --release -p sluice-protocol --test guard_cost -- --ignored --nocapture`).
//! Prints figures; asserts nothing about time.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, RequestKind, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_protocol::decode_request;
use sluice_protocol::guard::check_request;

fn produce_frame(partitions: usize, records_bytes: usize) -> Bytes {
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("bench")))
        .with_partition_data(
            (0..partitions)
                .map(|i| {
                    PartitionProduceData::default()
                        .with_index(i as i32)
                        .with_records(Some(Bytes::from(vec![7u8; records_bytes])))
                })
                .collect(),
        );
    let body = RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![topic]),
    );
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(11)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, ApiKey::Produce.request_header_version(11))
        .expect("header");
    body.encode(&mut buf, 11).expect("body");
    buf.freeze()
}

fn ns_per_op(iterations: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

#[test]
#[ignore = "prints timing figures; run in release on demand"]
fn guard_cost_next_to_decode() {
    for (partitions, records_bytes) in [(1, 20 * 1024), (100, 1024), (1000, 100)] {
        let frame = produce_frame(partitions, records_bytes);
        let n = 20_000;
        let guard = ns_per_op(n, || {
            check_request(ApiKey::Produce, 11, std::hint::black_box(&frame)).expect("valid");
        });
        let full = ns_per_op(n, || {
            decode_request(std::hint::black_box(frame.clone())).expect("valid");
        });
        println!(
            "produce v11, {partitions} partitions x {records_bytes} B ({} B frame): guard {guard:.0} ns, decode_request (guard + decode) {full:.0} ns, guard share {:.0}%",
            frame.len(),
            100.0 * guard / full
        );
    }
}
