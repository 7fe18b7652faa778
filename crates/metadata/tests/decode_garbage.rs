//! Disk contents are untrusted: decoding arbitrary bytes as records, snapshots or a log tail never panics and never
//! allocates beyond the input (counts are checked against the remaining bytes).

use proptest::prelude::*;
use sluice_metadata::log::{FileLogOptions, FileMetadataLog, MetadataLog, LOG_DIR_NAME};
use sluice_metadata::{BrokerRegistration, MetadataImage, MetadataRecord};

proptest! {
    #[test]
    fn record_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = MetadataRecord::decode(&bytes);
    }

    #[test]
    fn snapshot_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = MetadataImage::decode(&bytes);
    }

    /// A valid record with one byte changed decodes to something or fails; it never panics.
    #[test]
    fn mutated_records_never_panic(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let record = MetadataRecord::RegisterBroker(BrokerRegistration {
            node_id: 3,
            host: "broker-3.example".into(),
            port: 9092,
            rack: Some("rack-a".into()),
            ..Default::default()
        });
        let mut bytes = record.encode();
        let i = index.index(bytes.len());
        bytes[i] = byte;
        let _ = MetadataRecord::decode(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// Garbage after the last good batch is a torn tail: recovery keeps every committed batch and cuts the rest.
    #[test]
    fn garbage_tail_is_cut_and_committed_batches_survive(tail in proptest::collection::vec(any::<u8>(), 1..200)) {
        let dir = tempfile::tempdir().unwrap();
        let options = FileLogOptions {
            dir: dir.path().to_path_buf(),
            node_id: 0,
            snapshot_interval_records: 0,
            lock_wait_ms: 0,
        };
        let (mut log, _, _) = FileMetadataLog::open(&options, MetadataImage::empty("c", 0)).unwrap();
        let record = MetadataRecord::RegisterBroker(BrokerRegistration {
            node_id: 0,
            host: "h".into(),
            port: 1,
            rack: None,
            ..Default::default()
        });
        log.append(std::slice::from_ref(&record)).unwrap();
        drop(log);
        let segment = dir.path().join(LOG_DIR_NAME).join(format!("{:020}.log", 0));
        let good_len = std::fs::metadata(&segment).unwrap().len();
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes.extend_from_slice(&tail);
        std::fs::write(&segment, &bytes).unwrap();
        // A random tail can only be a torn frame (its CRC will not match), so recovery cuts exactly it.
        let (_, image, report) = FileMetadataLog::open(&options, MetadataImage::empty("c", 0)).unwrap();
        prop_assert_eq!(image.brokers.len(), 1);
        prop_assert_eq!(report.truncated_bytes, tail.len() as u64);
        prop_assert_eq!(std::fs::metadata(&segment).unwrap().len(), good_len);
    }
}
