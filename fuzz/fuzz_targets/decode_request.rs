//! Fuzz target: `decode_request` on arbitrary frame bodies must return, never panic or abort, and never
//! ask the allocator for more than libFuzzer's malloc limit (the kafka-protocol 0.18 hazard).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_protocol::{decode_request, peek_request_prefix};

fuzz_target!(|data: &[u8]| {
    let frame = bytes::Bytes::copy_from_slice(data);
    match decode_request(frame) {
        Ok(request) => {
            // A decoded request carries the header it was read from.
            let prefix = peek_request_prefix(data).expect("a decoded frame has a prefix");
            assert_eq!(request.correlation_id(), prefix.correlation_id);
            assert_eq!(request.api_version(), prefix.api_version);
        }
        Err(e) => {
            // Every error after the first 8 bytes carries the correlation id for the broker's log line.
            if let Some(prefix) = peek_request_prefix(data) {
                assert_eq!(e.correlation_id(), Some(prefix.correlation_id));
            }
        }
    }
});
