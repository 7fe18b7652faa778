//! The pure controller logic against Apache Kafka's behaviour (`ReplicationControlManager`,
//! `ConfigurationControlManager`, `ControllerApis`): error codes and messages, records produced, validate_only.

use sluice_metadata::controller::{
    self, AlterConfigOp, AlterConfigsResource, ConfigOpType, ControllerDefaults,
    IncrementalAlterConfigsResource,
};
use sluice_metadata::error::code;
use sluice_metadata::{
    BrokerRegistration, ControllerResult, CreatePartitions, DeleteTopicTarget, MetadataDelta,
    MetadataImage, MetadataRecord, NewTopic, Uuid,
};

const DEFAULTS: ControllerDefaults = ControllerDefaults {
    num_partitions: 2,
    default_replication_factor: 1,
};

fn apply<T>(image: &MetadataImage, result: &ControllerResult<T>) -> MetadataImage {
    let mut delta = MetadataDelta::new(image);
    for (i, r) in result.records.iter().enumerate() {
        delta.replay(image.offset + 1 + i as i64, r).unwrap();
    }
    delta.apply()
}

fn cluster(brokers: i32) -> MetadataImage {
    let mut image = MetadataImage::empty("c", 0);
    for node_id in 0..brokers {
        let reg = BrokerRegistration {
            node_id,
            host: "h".into(),
            port: 9092,
            rack: None,
            ..Default::default()
        };
        image = apply(&image, &controller::register_broker(&image, reg, false));
        let epoch = image.brokers[&node_id].epoch;
        let hb = controller::broker_heartbeat(
            &image,
            controller::Heartbeat {
                node_id,
                broker_epoch: epoch,
                current_metadata_offset: i64::MAX,
                want_fence: false,
                want_shut_down: false,
            },
        );
        image = apply(&image, &hb);
    }
    image
}

fn ids() -> impl FnMut() -> Uuid {
    let mut n = 0u128;
    move || {
        n += 1;
        Uuid::from_u128(n)
    }
}

fn create(
    image: &MetadataImage,
    topics: &[NewTopic],
) -> ControllerResult<Vec<sluice_metadata::CreateTopicOutcome>> {
    controller::create_topics(image, DEFAULTS, topics, false, &mut ids())
}

fn topic(name: &str, partitions: i32, rf: i16) -> NewTopic {
    NewTopic {
        num_partitions: partitions,
        replication_factor: rf,
        ..NewTopic::with_defaults(name)
    }
}

#[test]
fn create_topics_errors_match_kafka() {
    let image = cluster(1);
    let image = apply(&image, &create(&image, &[topic("a_b", 1, 1)]));
    let mut assigned = NewTopic::with_defaults("assigned");
    assigned.assignments = vec![(0, vec![0]), (2, vec![0])];
    let mut assigned_with_count = topic("assigned2", 3, -1);
    assigned_with_count.assignments = vec![(0, vec![0])];
    let mut unknown_broker = NewTopic::with_defaults("assigned3");
    unknown_broker.assignments = vec![(0, vec![5])];
    let mut null_config = NewTopic::with_defaults("nullcfg");
    null_config.configs = vec![("retention.ms".into(), None)];
    let cases = [
        (topic("", 1, 1), code::INVALID_TOPIC_EXCEPTION, "Topic name is illegal, it can't be empty"),
        (topic("..", 1, 1), code::INVALID_TOPIC_EXCEPTION, "Topic name cannot be \".\" or \"..\""),
        (topic("a.b", 1, 1), code::INVALID_TOPIC_EXCEPTION, "Topic 'a.b' collides with existing topic: a_b"),
        (topic("a_b", 1, 1), code::TOPIC_ALREADY_EXISTS, "Topic 'a_b' already exists."),
        (topic("x", 0, 1), code::INVALID_PARTITIONS, "Number of partitions was set to an invalid non-positive value."),
        (
            topic("x", 1, 0),
            code::INVALID_REPLICATION_FACTOR,
            "Replication factor must be larger than 0, or -1 to use the default value.",
        ),
        (
            topic("x", 1, 2),
            code::INVALID_REPLICATION_FACTOR,
            "Unable to replicate the partition 2 time(s): The target replication factor of 2 cannot be reached \
             because only 1 broker(s) are registered.",
        ),
        (assigned, code::INVALID_REPLICA_ASSIGNMENT, "partitions should be a consecutive 0-based integer sequence"),
        (
            assigned_with_count,
            code::INVALID_REQUEST,
            "A manual partition assignment was specified, but numPartitions was not set to -1.",
        ),
        (
            unknown_broker,
            code::INVALID_REPLICA_ASSIGNMENT,
            "The manual partition assignment includes broker 5, but no such broker is registered.",
        ),
        (null_config, code::INVALID_CONFIG, "Null value not supported for topic configs: retention.ms"),
        (topic("__cluster_metadata", 1, 1), code::INVALID_REQUEST, "Creation of internal topic __cluster_metadata is prohibited."),
    ];
    for (t, error_code, message) in cases {
        let result = create(&image, std::slice::from_ref(&t));
        assert!(result.records.is_empty(), "{t:?}");
        let o = &result.response[0];
        assert_eq!(
            (o.error_code, o.error_message.as_deref()),
            (error_code, Some(message)),
            "{t:?}"
        );
        assert_eq!((o.num_partitions, o.replication_factor), (-1, -1));
    }
    let long = "x".repeat(250);
    assert_eq!(
        create(&image, &[topic(&long, 1, 1)]).response[0].error_code,
        code::INVALID_TOPIC_EXCEPTION
    );
}

#[test]
fn create_topics_uses_defaults_assignments_and_marks_internal_topics() {
    let image = cluster(3);
    let mut assigned = NewTopic::with_defaults("assigned");
    assigned.assignments = vec![(1, vec![2, 0]), (0, vec![1, 2])];
    let result = create(
        &image,
        &[
            topic("defaults", -1, -1),
            topic("spread", 3, 3),
            assigned,
            topic("__consumer_offsets", 1, 1),
        ],
    );
    assert!(
        result.response.iter().all(|o| o.error_code == 0),
        "{:?}",
        result.response
    );
    let image = apply(&image, &result);
    let defaults = image.topic("defaults").unwrap();
    assert_eq!(defaults.partitions.len(), 2);
    assert_eq!(defaults.partitions[0].replicas.len(), 1);
    let spread = image.topic("spread").unwrap();
    let leaders: Vec<i32> = spread.partitions.iter().map(|p| p.leader).collect();
    assert_eq!(
        leaders,
        vec![0, 1, 2],
        "leaders are spread over the brokers"
    );
    assert!(spread
        .partitions
        .iter()
        .all(|p| p.isr == p.replicas && p.leader_epoch == 0));
    let assigned = image.topic("assigned").unwrap();
    assert_eq!(assigned.partitions[0].replicas, vec![1, 2]);
    assert_eq!(assigned.partitions[1].leader, 2);
    assert!(image.topic("__consumer_offsets").unwrap().internal);
    assert!(!spread.internal);
}

#[test]
fn duplicates_in_one_request_are_invalid_request_once() {
    let image = cluster(1);
    let result = create(
        &image,
        &[topic("d", 1, 1), topic("d", 1, 1), topic("e", 1, 1)],
    );
    let codes: Vec<(&str, i16)> = result
        .response
        .iter()
        .map(|o| (o.name.as_str(), o.error_code))
        .collect();
    assert_eq!(codes, vec![("d", code::INVALID_REQUEST), ("e", 0)]);
}

#[test]
fn validate_only_returns_success_without_records() {
    let image = cluster(1);
    let result = controller::create_topics(&image, DEFAULTS, &[topic("v", 4, 1)], true, &mut ids());
    assert!(result.records.is_empty());
    assert_eq!(result.response[0].error_code, 0);
    assert_eq!(result.response[0].num_partitions, 4);
}

#[test]
fn topic_records_come_first_then_configs_then_partitions() {
    let image = cluster(1);
    let mut t = topic("c", 2, 1);
    t.configs = vec![("retention.ms".into(), Some("5".into()))];
    let result = create(&image, &[t]);
    assert!(matches!(result.records[0], MetadataRecord::Topic { .. }));
    assert!(matches!(result.records[1], MetadataRecord::Config { .. }));
    assert!(matches!(
        result.records[2],
        MetadataRecord::Partition { partition: 0, .. }
    ));
    assert_eq!(result.records.len(), 4);
}

#[test]
fn huge_partition_counts_are_refused_without_allocating() {
    let image = cluster(1);
    let result = create(&image, &[topic("huge", i32::MAX, 1)]);
    assert_eq!(result.response[0].error_code, code::POLICY_VIOLATION);
    assert!(result.records.is_empty());
}

#[test]
fn delete_topics_follows_controller_apis() {
    let image = cluster(1);
    let image = apply(
        &image,
        &create(&image, &[topic("foo", 1, 1), topic("bar", 1, 1)]),
    );
    let foo = image.topic("foo").unwrap().id;
    let bar = image.topic("bar").unwrap().id;
    let target = |name: Option<&str>, id: Uuid| DeleteTopicTarget {
        name: name.map(str::to_string),
        topic_id: id,
    };
    let result = controller::delete_topics(
        &image,
        &[
            target(None, Uuid::nil()),
            target(Some("foo"), foo),
            target(Some("bar"), Uuid::nil()),
            target(None, bar),
            target(Some("quux"), Uuid::nil()),
            target(Some("quux"), Uuid::nil()),
            target(None, Uuid::from_u128(999)),
        ],
    );
    let errors: Vec<(Option<&str>, Option<&str>)> = result
        .response
        .iter()
        .map(|o| {
            (
                o.name.as_deref(),
                o.error.as_ref().and_then(|e| e.message.as_deref()),
            )
        })
        .collect();
    assert!(errors.contains(&(None, Some("Neither topic name nor id were specified."))));
    assert!(errors.contains(&(
        Some("foo"),
        Some("You may not specify both topic name and topic id.")
    )));
    assert!(errors.contains(&(
        Some("bar"),
        Some("The provided topic name maps to an ID that was already supplied.")
    )));
    assert!(errors.contains(&(Some("quux"), Some("Duplicate topic name."))));
    assert!(errors.contains(&(None, Some("This server does not host this topic ID."))));
    assert!(
        errors.contains(&(Some("bar"), None)),
        "bar deleted by id, reported with its name"
    );
    assert_eq!(
        result.records,
        vec![MetadataRecord::RemoveTopic { topic_id: bar }]
    );
    let image = apply(&image, &result);
    assert!(image.topic("bar").is_none());
    let unknown = controller::delete_topics(&image, &[target(Some("bar"), Uuid::nil())]);
    let e = unknown.response[0].error.as_ref().unwrap();
    assert_eq!(
        (e.code, e.message.as_deref()),
        (
            code::UNKNOWN_TOPIC_OR_PARTITION,
            Some("This server does not host this topic-partition.")
        )
    );
}

#[test]
fn create_partitions_only_increases() {
    let image = cluster(2);
    let image = apply(&image, &create(&image, &[topic("foo", 2, 2)]));
    let req = |name: &str, count: i32, assignments: Option<Vec<Vec<i32>>>| CreatePartitions {
        name: name.into(),
        count,
        assignments,
    };
    let result = controller::create_partitions(
        &image,
        &[
            req("foo", 4, None),
            req("foo", 3, None),
            req("missing", 2, None),
        ],
        false,
    );
    // A name given twice is answered once, with INVALID_REQUEST, and nothing is created for it.
    assert_eq!(result.response.len(), 2);
    assert_eq!(
        result.response[0].error.as_ref().unwrap().code,
        code::INVALID_REQUEST,
        "duplicate name"
    );
    assert_eq!(
        result.response[1].error.as_ref().unwrap().code,
        code::UNKNOWN_TOPIC_OR_PARTITION
    );
    assert!(result.records.is_empty());
    let image = apply(
        &image,
        &controller::create_partitions(&image, &[req("foo", 4, None)], false),
    );
    assert_eq!(image.topic("foo").unwrap().partitions.len(), 4);
    assert!(image
        .topic("foo")
        .unwrap()
        .partitions
        .iter()
        .all(|p| p.replicas.len() == 2));
    let cases = [
        (req("foo", 4, None), code::INVALID_PARTITIONS, "Topic already has 4 partition(s)."),
        (req("foo", 3, None), code::INVALID_PARTITIONS, "The topic foo currently has 4 partition(s); 3 would not be an increase."),
        (
            req("foo", 6, Some(vec![vec![0, 1]])),
            code::INVALID_REPLICA_ASSIGNMENT,
            "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified.",
        ),
        (
            req("foo", 5, Some(vec![vec![0]])),
            code::INVALID_REPLICA_ASSIGNMENT,
            "The manual partition assignment includes a partition with 1 replica(s), but this is not consistent \
             with previous partitions, which have 2 replica(s).",
        ),
        (
            req("foo", 5, Some(vec![vec![1, 1]])),
            code::INVALID_REPLICA_ASSIGNMENT,
            "The manual partition assignment includes the broker 1 more than once.",
        ),
    ];
    for (r, error_code, message) in cases {
        let result = controller::create_partitions(&image, std::slice::from_ref(&r), false);
        let e = result.response[0]
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{r:?} succeeded"));
        assert_eq!((e.code, e.message.as_deref()), (error_code, Some(message)));
        assert!(result.records.is_empty());
    }
    let missing = controller::create_partitions(&image, &[req("missing", 2, None)], false);
    assert_eq!(
        missing.response[0].error.as_ref().unwrap().code,
        code::UNKNOWN_TOPIC_OR_PARTITION
    );
    let dry = controller::create_partitions(&image, &[req("foo", 8, None)], true);
    assert!(dry.records.is_empty() && dry.response[0].error.is_none());
}

fn op(key: &str, op: ConfigOpType, value: Option<&str>) -> AlterConfigOp {
    AlterConfigOp {
        key: key.into(),
        op,
        value: value.map(str::to_string),
    }
}

fn incremental(name: &str, ops: Vec<AlterConfigOp>) -> IncrementalAlterConfigsResource {
    IncrementalAlterConfigsResource {
        resource_type: 2,
        resource_name: name.into(),
        ops,
    }
}

const LEADER_RATE: &str = "leader.replication.throttled.rate";
const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";

fn broker(name: &str, ops: Vec<AlterConfigOp>) -> IncrementalAlterConfigsResource {
    IncrementalAlterConfigsResource {
        resource_type: 4,
        resource_name: name.into(),
        ops,
    }
}

/// The replication throttle rates are dynamic broker configs, per broker id or cluster-wide (the empty name), as
/// Kafka's `ConfigurationControlManager` keeps them; other broker keys are static.
#[test]
fn replication_throttle_rates_are_dynamic_broker_configs() {
    let image = cluster(2);
    let result = controller::incremental_alter_configs(
        &image,
        &[
            broker("1", vec![op(LEADER_RATE, ConfigOpType::Set, Some("1000"))]),
            broker("", vec![op(FOLLOWER_RATE, ConfigOpType::Set, Some("2000"))]),
        ],
        false,
    );
    assert!(
        result.response.iter().all(|r| r.error.is_none()),
        "{:?}",
        result.response
    );
    let image = apply(&image, &result);
    assert_eq!(
        image
            .broker_configs("1")
            .and_then(|c| c.get(LEADER_RATE))
            .map(String::as_str),
        Some("1000")
    );
    assert_eq!(
        image
            .broker_configs("")
            .and_then(|c| c.get(FOLLOWER_RATE))
            .map(String::as_str),
        Some("2000")
    );
    assert_eq!(image.broker_configs("0"), None);

    // Legacy AlterConfigs replaces the broker's overrides.
    let result = controller::alter_configs(
        &image,
        &[AlterConfigsResource {
            resource_type: 4,
            resource_name: "1".into(),
            configs: vec![(FOLLOWER_RATE.into(), Some("3000".into()))],
        }],
        false,
    );
    assert_eq!(result.response[0].error, None);
    let image = apply(&image, &result);
    let configs = image.broker_configs("1").unwrap();
    assert_eq!(configs.get(LEADER_RATE), None);
    assert_eq!(configs.get(FOLLOWER_RATE).map(String::as_str), Some("3000"));

    let result = controller::incremental_alter_configs(
        &image,
        &[broker(
            "1",
            vec![op(FOLLOWER_RATE, ConfigOpType::Delete, None)],
        )],
        false,
    );
    let image = apply(&image, &result);
    assert_eq!(image.broker_configs("1"), None, "no override left");
}

#[test]
fn incremental_alter_configs_set_delete_append_subtract() {
    let image = cluster(1);
    let image = apply(&image, &create(&image, &[topic("t", 1, 1)]));
    let result = controller::incremental_alter_configs(
        &image,
        &[incremental(
            "t",
            vec![
                op("retention.ms", ConfigOpType::Set, Some("100")),
                op("cleanup.policy", ConfigOpType::Append, Some("compact")),
            ],
        )],
        false,
    );
    assert_eq!(result.response[0].error, None);
    let image = apply(&image, &result);
    let configs = &image.topic("t").unwrap().configs;
    assert_eq!(configs.get("retention.ms").map(String::as_str), Some("100"));
    assert_eq!(
        configs.get("cleanup.policy").map(String::as_str),
        Some("delete,compact"),
        "appended to the default"
    );

    let result = controller::incremental_alter_configs(
        &image,
        &[incremental(
            "t",
            vec![
                op("retention.ms", ConfigOpType::Delete, None),
                op("cleanup.policy", ConfigOpType::Subtract, Some("delete")),
            ],
        )],
        false,
    );
    let image = apply(&image, &result);
    let configs = &image.topic("t").unwrap().configs;
    assert_eq!(configs.get("retention.ms"), None);
    assert_eq!(
        configs.get("cleanup.policy").map(String::as_str),
        Some("compact")
    );

    let errors = [
        (
            incremental(
                "t",
                vec![op("retention.ms", ConfigOpType::Append, Some("1"))],
            ),
            code::INVALID_CONFIG,
        ),
        (
            incremental("t", vec![op("retention.ms", ConfigOpType::Set, Some("x"))]),
            code::INVALID_CONFIG,
        ),
        (
            incremental("t", vec![op("nope", ConfigOpType::Set, Some("1"))]),
            code::INVALID_CONFIG,
        ),
        (
            incremental(
                "t",
                vec![
                    op("retention.ms", ConfigOpType::Set, Some("1")),
                    op("retention.ms", ConfigOpType::Delete, None),
                ],
            ),
            code::INVALID_REQUEST,
        ),
        (
            incremental(
                "missing",
                vec![op("retention.ms", ConfigOpType::Set, Some("1"))],
            ),
            code::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            broker(
                "0",
                vec![op("log.retention.ms", ConfigOpType::Set, Some("1"))],
            ),
            code::INVALID_REQUEST,
        ),
        (
            broker("x", vec![op(LEADER_RATE, ConfigOpType::Set, Some("1"))]),
            code::INVALID_REQUEST,
        ),
        (
            broker("0", vec![op(LEADER_RATE, ConfigOpType::Set, Some("-1"))]),
            code::INVALID_CONFIG,
        ),
        (
            broker("0", vec![op(LEADER_RATE, ConfigOpType::Append, Some("1"))]),
            code::INVALID_CONFIG,
        ),
    ];
    for (resource, error_code) in errors {
        let result =
            controller::incremental_alter_configs(&image, std::slice::from_ref(&resource), false);
        assert_eq!(
            result.response[0].error.as_ref().map(|e| e.code),
            Some(error_code),
            "{resource:?}"
        );
        assert!(result.records.is_empty());
    }
    let dry = controller::incremental_alter_configs(
        &image,
        &[incremental(
            "t",
            vec![op("retention.ms", ConfigOpType::Set, Some("7"))],
        )],
        true,
    );
    assert!(dry.records.is_empty() && dry.response[0].error.is_none());
}

#[test]
fn alter_configs_replaces_every_override() {
    let image = cluster(1);
    let mut t = topic("t", 1, 1);
    t.configs = vec![
        ("retention.ms".into(), Some("5".into())),
        ("segment.ms".into(), Some("1000".into())),
    ];
    let image = apply(&image, &create(&image, &[t]));
    let resource = AlterConfigsResource {
        resource_type: 2,
        resource_name: "t".into(),
        configs: vec![
            ("segment.ms".into(), Some("1000".into())),
            ("flush.ms".into(), Some("10".into())),
        ],
    };
    let result = controller::alter_configs(&image, &[resource], false);
    assert_eq!(result.response[0].error, None);
    assert_eq!(
        result.records.len(),
        2,
        "retention.ms removed, flush.ms set, segment.ms unchanged"
    );
    let image = apply(&image, &result);
    let configs = &image.topic("t").unwrap().configs;
    assert_eq!(
        configs.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["flush.ms", "segment.ms"]
    );
}

#[test]
fn removing_a_topic_removes_its_configs() {
    let image = cluster(1);
    let mut t = topic("t", 1, 1);
    t.configs = vec![("retention.ms".into(), Some("5".into()))];
    let image = apply(&image, &create(&image, &[t]));
    let id = image.topic("t").unwrap().id;
    let image = apply(
        &image,
        &controller::delete_topics(
            &image,
            &[DeleteTopicTarget {
                name: None,
                topic_id: id,
            }],
        ),
    );
    let image = apply(&image, &create(&image, &[topic("t", 1, 1)]));
    assert!(image.topic("t").unwrap().configs.is_empty());
}
