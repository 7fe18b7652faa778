//! Helpers shared by the storage integration tests: deterministic batches (built with the test kit) and whole-log
//! verification.
#![allow(dead_code, unreachable_pub)]

use sluice_protocol::batch::{BatchHeader, Batches};
use sluice_storage::Log;
use sluice_testkit::batch::values_batch;

/// A batch of `records` records whose values encode `tag` (so content can be checked after reads).
pub fn batch(records: usize, tag: u64, timestamp_ms: i64) -> Vec<u8> {
    values_batch(timestamp_ms, (0..records).map(|i| format!("v-{tag}-{i}")))
}

/// Reads the whole log from the start, checking that every batch is whole, CRC-valid and that offsets
/// are dense; returns `(base_offset, last_offset, bytes)` per batch.
pub fn read_all(log: &Log) -> Vec<(i64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let leo = log.log_end_offset();
    while offset < leo {
        let r = log.read(offset, 1 << 20, i64::MAX).expect("read");
        assert!(
            !r.data.is_empty(),
            "no data at offset {offset} below LEO {leo}"
        );
        for item in Batches::new(&r.data) {
            let (_, h) = item.expect("whole batch");
            h.validate().expect("valid batch");
            if !out.is_empty() {
                let prev: &(i64, i64, Vec<u8>) = out.last().unwrap();
                assert_eq!(h.base_offset(), prev.1 + 1, "offsets must be dense");
            }
            out.push((h.base_offset(), h.last_offset(), h.bytes().to_vec()));
            offset = h.next_offset();
        }
    }
    out
}

/// Header of a batch held in `bytes`.
pub fn header(bytes: &[u8]) -> BatchHeader<'_> {
    BatchHeader::new(bytes).expect("header")
}
