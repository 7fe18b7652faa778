//! The metadata log: append, reopen, torn tails, snapshots, and a property test that replaying the log from the
//! start and from a snapshot yields the image the controller built in memory.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use sluice_metadata::controller::{
    self, AlterConfigOp, ConfigOpType, ControllerDefaults, IncrementalAlterConfigsResource,
};
use sluice_metadata::log::{FileLogOptions, FileMetadataLog, MetadataLog, LOG_DIR_NAME};
use sluice_metadata::{
    BrokerRegistration, ControllerResult, CreatePartitions, DeleteTopicTarget, MetadataDelta,
    MetadataImage, NewTopic, Uuid,
};

fn options(dir: &Path, snapshot_interval_records: u64) -> FileLogOptions {
    FileLogOptions {
        dir: dir.to_path_buf(),
        node_id: 0,
        snapshot_interval_records,
        lock_wait_ms: 0,
    }
}

fn base() -> MetadataImage {
    MetadataImage::empty("test-cluster", 0)
}

/// Commits a controller result the way the broker's driver does: replay, append, snapshot policy.
fn commit<T>(
    log: &mut FileMetadataLog,
    image: &mut MetadataImage,
    result: ControllerResult<T>,
) -> T {
    if !result.records.is_empty() {
        let mut delta = MetadataDelta::new(image);
        let base_offset = log.next_offset();
        for (i, r) in result.records.iter().enumerate() {
            delta
                .replay(base_offset + i as i64, r)
                .expect("controller records apply");
        }
        log.append(&result.records).expect("append");
        *image = delta.apply();
        log.maybe_snapshot(image).expect("snapshot");
    }
    result.response
}

fn register(log: &mut FileMetadataLog, image: &mut MetadataImage, node_id: i32) {
    let reg = BrokerRegistration {
        node_id,
        host: "localhost".into(),
        port: 9092 + node_id,
        rack: None,
    };
    commit(log, image, controller::register_broker(image, reg));
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join(LOG_DIR_NAME))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn reopen_replays_every_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut image, report) =
        FileMetadataLog::open(&options(dir.path(), 0), base()).unwrap();
    assert_eq!(report.records_replayed, 0);
    register(&mut log, &mut image, 0);
    let mut ids = (1u128..).map(Uuid::from_u128);
    let result = controller::create_topics(
        &image,
        ControllerDefaults::default(),
        &[NewTopic::with_defaults("a")],
        false,
        &mut || ids.next().unwrap(),
    );
    let out = commit(&mut log, &mut image, result);
    assert_eq!(out[0].error_code, 0);
    drop(log);
    let (log, reopened, report) = FileMetadataLog::open(&options(dir.path(), 0), base()).unwrap();
    assert_eq!(reopened, image);
    assert_eq!(report.records_replayed as i64, image.offset + 1);
    assert_eq!(log.next_offset(), image.offset + 1);
}

#[test]
fn a_second_writer_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _, _) = FileMetadataLog::open(&options(dir.path(), 0), base()).unwrap();
    let second = FileMetadataLog::open(&options(dir.path(), 0), base());
    assert!(
        matches!(second, Err(sluice_metadata::log::LogError::Locked(_))),
        "{second:?}"
    );
    drop(first);
    assert!(FileMetadataLog::open(&options(dir.path(), 0), base()).is_ok());
}

#[test]
fn torn_tail_is_cut_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut image, _) = FileMetadataLog::open(&options(dir.path(), 0), base()).unwrap();
    register(&mut log, &mut image, 0);
    drop(log);
    let segment = segment_files(dir.path()).pop().unwrap();
    let good_len = std::fs::metadata(&segment).unwrap().len();
    // A crash mid-append: half a frame header plus garbage.
    OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&[0, 0, 0, 40, 1, 2, 3])
        .unwrap();
    let (mut log, mut reopened, report) =
        FileMetadataLog::open(&options(dir.path(), 0), base()).unwrap();
    assert_eq!(report.truncated_bytes, 7);
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), good_len);
    assert_eq!(reopened, image);
    register(&mut log, &mut reopened, 1);
    drop(log);
    let (_, again, _) = FileMetadataLog::open(&options(dir.path(), 0), base()).unwrap();
    assert_eq!(again, reopened);
    assert_eq!(again.brokers.len(), 2);
}

#[test]
fn corrupt_last_batch_is_cut_by_crc() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut image, _) = FileMetadataLog::open(&options(dir.path(), 0), base()).unwrap();
    register(&mut log, &mut image, 0);
    let after_first = image.clone();
    register(&mut log, &mut image, 1);
    drop(log);
    let segment = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let (_, reopened, report) = FileMetadataLog::open(&options(dir.path(), 0), base()).unwrap();
    assert!(report.truncated_bytes > 0);
    assert_eq!(reopened, after_first);
}

#[test]
fn snapshots_roll_segments_and_bound_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut image, _) = FileMetadataLog::open(&options(dir.path(), 5), base()).unwrap();
    for node in 0..12 {
        register(&mut log, &mut image, node);
    }
    drop(log);
    let snapshots: Vec<_> = std::fs::read_dir(dir.path().join(LOG_DIR_NAME))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".checkpoint"))
        .collect();
    assert_eq!(
        snapshots,
        vec![format!("{:020}.checkpoint", 9)],
        "only the newest snapshot is kept"
    );
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "segments covered by the snapshot are deleted"
    );
    let (_, reopened, report) = FileMetadataLog::open(&options(dir.path(), 5), base()).unwrap();
    assert_eq!(report.snapshot_offset, Some(9));
    assert_eq!(report.records_replayed, 2);
    assert_eq!(reopened, image);
}

#[test]
fn corruption_before_the_last_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut image, _) = FileMetadataLog::open(&options(dir.path(), 0), base()).unwrap();
    register(&mut log, &mut image, 0);
    drop(log);
    // A second segment after the first makes the first one not the tail.
    let first = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&first).unwrap();
    let next = dir.path().join(LOG_DIR_NAME).join(format!("{:020}.log", 1));
    std::fs::write(&next, []).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&first, &bytes).unwrap();
    assert!(FileMetadataLog::open(&options(dir.path(), 0), base()).is_err());
}

#[derive(Debug, Clone)]
enum Op {
    Register(i32),
    Create {
        name: u8,
        partitions: i32,
        rf: i16,
        retention_ms: Option<i64>,
    },
    Delete(u8),
    AddPartitions {
        name: u8,
        count: i32,
    },
    SetConfig {
        name: u8,
        key: usize,
        value: i64,
    },
    DeleteConfig {
        name: u8,
        key: usize,
    },
}

const KEYS: &[&str] = &[
    "retention.ms",
    "segment.bytes",
    "flush.messages",
    "cleanup.policy",
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3i32).prop_map(Op::Register),
        (
            0..6u8,
            -1..4i32,
            -1..3i16,
            proptest::option::of(-2..10_000i64)
        )
            .prop_map(|(name, partitions, rf, retention_ms)| Op::Create {
                name,
                partitions,
                rf,
                retention_ms
            }),
        (0..6u8).prop_map(Op::Delete),
        (0..6u8, 0..6i32).prop_map(|(name, count)| Op::AddPartitions { name, count }),
        (0..6u8, 0..KEYS.len(), 1_048_576..1_100_000i64)
            .prop_map(|(name, key, value)| Op::SetConfig { name, key, value }),
        (0..6u8, 0..KEYS.len()).prop_map(|(name, key)| Op::DeleteConfig { name, key }),
    ]
}

fn topic_name(n: u8) -> String {
    format!("topic-{n}")
}

fn apply(
    log: &mut FileMetadataLog,
    image: &mut MetadataImage,
    op: &Op,
    ids: &mut dyn FnMut() -> Uuid,
) {
    let snapshot = image.clone();
    match op {
        Op::Register(node) => register(log, image, *node),
        Op::Create {
            name,
            partitions,
            rf,
            retention_ms,
        } => {
            let topic = NewTopic {
                name: topic_name(*name),
                num_partitions: *partitions,
                replication_factor: *rf,
                assignments: Vec::new(),
                configs: retention_ms
                    .map(|v| ("retention.ms".to_string(), Some(v.to_string())))
                    .into_iter()
                    .collect(),
            };
            let defaults = ControllerDefaults {
                num_partitions: 2,
                default_replication_factor: 1,
            };
            commit(
                log,
                image,
                controller::create_topics(&snapshot, defaults, &[topic], false, ids),
            );
        }
        Op::Delete(name) => {
            let target = DeleteTopicTarget {
                name: Some(topic_name(*name)),
                topic_id: Uuid::nil(),
            };
            commit(log, image, controller::delete_topics(&snapshot, &[target]));
        }
        Op::AddPartitions { name, count } => {
            let request = CreatePartitions {
                name: topic_name(*name),
                count: *count,
                assignments: None,
            };
            commit(
                log,
                image,
                controller::create_partitions(&snapshot, &[request], false),
            );
        }
        Op::SetConfig { name, key, .. } | Op::DeleteConfig { name, key } => {
            let (op_type, value) = match op {
                Op::SetConfig { value, .. } if KEYS[*key] == "cleanup.policy" => (
                    ConfigOpType::Set,
                    Some(if value % 2 == 0 { "compact" } else { "delete" }.to_string()),
                ),
                Op::SetConfig { value, .. } => (ConfigOpType::Set, Some(value.to_string())),
                _ => (ConfigOpType::Delete, None),
            };
            let resource = IncrementalAlterConfigsResource {
                resource_type: 2,
                resource_name: topic_name(*name),
                ops: vec![AlterConfigOp {
                    key: KEYS[*key].to_string(),
                    op: op_type,
                    value,
                }],
            };
            commit(
                log,
                image,
                controller::incremental_alter_configs(&snapshot, &[resource], false),
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Replaying the log from offset 0 and from the newest snapshot both rebuild the image the controller built.
    #[test]
    fn replay_from_log_and_from_snapshot_agree(ops in proptest::collection::vec(op(), 1..60), interval in 1u64..8) {
        let plain = tempfile::tempdir().unwrap();
        let snapped = tempfile::tempdir().unwrap();
        let (mut log_a, mut image_a, _) = FileMetadataLog::open(&options(plain.path(), 0), base()).unwrap();
        let (mut log_b, mut image_b, _) = FileMetadataLog::open(&options(snapped.path(), interval), base()).unwrap();
        // One broker from the start, so most creations succeed and later ops have topics to act on.
        register(&mut log_a, &mut image_a, 0);
        register(&mut log_b, &mut image_b, 0);
        let mut next_a = 0u128;
        let mut next_b = 0u128;
        for op in &ops {
            apply(&mut log_a, &mut image_a, op, &mut || { next_a += 1; Uuid::from_u128(next_a) });
            apply(&mut log_b, &mut image_b, op, &mut || { next_b += 1; Uuid::from_u128(next_b) });
        }
        prop_assert_eq!(&image_a, &image_b);
        drop(log_a);
        drop(log_b);
        let (_, replayed_a, report_a) = FileMetadataLog::open(&options(plain.path(), 0), base()).unwrap();
        let (_, replayed_b, _) = FileMetadataLog::open(&options(snapped.path(), interval), base()).unwrap();
        prop_assert_eq!(report_a.snapshot_offset, None);
        prop_assert_eq!(&replayed_a, &image_a);
        prop_assert_eq!(&replayed_b, &image_a);
        // Every partition registration stays internally consistent.
        for topic in replayed_a.topics() {
            prop_assert!(!topic.partitions.is_empty());
            for p in &topic.partitions {
                prop_assert!(p.replicas.contains(&p.leader));
                prop_assert!(p.isr.iter().all(|r| p.replicas.contains(r)));
            }
        }
    }
}
