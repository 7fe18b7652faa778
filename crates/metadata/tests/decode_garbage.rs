//! Disk contents are untrusted: decoding arbitrary bytes as records, batches, snapshots or a log tail never panics and never
//! allocates beyond the input (counts are checked against the remaining bytes).

use proptest::prelude::*;
use sluice_metadata::quorum::{Entry, FileDisk, QuorumStore};
use sluice_metadata::record::{decode_batch, encode_batch};
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

    /// Garbage after the last good frame of `quorum.log` is a torn tail: loading keeps every persisted entry and cuts
    /// exactly the garbage.
    #[test]
    fn garbage_tail_is_cut_and_persisted_entries_survive(tail in proptest::collection::vec(any::<u8>(), 1..200)) {
        let dir = tempfile::tempdir().unwrap();
        let (disk, persisted) = FileDisk::open(dir.path()).unwrap();
        let store = QuorumStore::new(Box::new(disk), persisted, &[1]);
        let record = MetadataRecord::RegisterBroker(BrokerRegistration {
            node_id: 0,
            host: "h".into(),
            port: 1,
            ..Default::default()
        });
        let entry = Entry {
            index: 1,
            term: 1,
            data: encode_batch(std::slice::from_ref(&record)).into(),
            ..Default::default()
        };
        store.append(std::slice::from_ref(&entry)).unwrap();
        drop(store);
        let log = dir.path().join("quorum.log");
        let good_len = std::fs::metadata(&log).unwrap().len();
        let mut bytes = std::fs::read(&log).unwrap();
        bytes.extend_from_slice(&tail);
        std::fs::write(&log, &bytes).unwrap();
        // A random tail can only be a torn frame (its CRC will not match), so loading cuts exactly it.
        let (_, persisted) = FileDisk::open(dir.path()).unwrap();
        prop_assert_eq!(persisted.entries.len(), 1);
        prop_assert_eq!(decode_batch(&persisted.entries[0].data).unwrap(), vec![record]);
        prop_assert_eq!(std::fs::metadata(&log).unwrap().len(), good_len);
    }

    /// A batch (one Raft entry's data) decodes to records or fails; it never panics.
    #[test]
    fn batch_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_batch(&bytes);
    }
}
