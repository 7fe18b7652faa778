//! Topic operations: CreateTopics, DeleteTopics and CreatePartitions, with Kafka's validation and messages
//! (`ReplicationControlManager` and `ControllerApis` in Apache Kafka).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use uuid::Uuid;

use super::{ControllerDefaults, ControllerResult};
use crate::error::{code, ApiError};
use crate::image::{MetadataImage, PartitionRegistration};
use crate::record::{ConfigResourceType, MetadataRecord};
use crate::topic_config;

/// The most records one request may produce, as Kafka's `MAX_RECORDS_PER_USER_OP`; it bounds the memory a
/// single CreateTopics/CreatePartitions can make the controller spend.
pub const MAX_RECORDS_PER_USER_OP: usize = 10_000;

/// The longest legal topic name.
pub const MAX_TOPIC_NAME_LENGTH: usize = 249;

/// The metadata log's topic name; clients may not create it.
pub const CLUSTER_METADATA_TOPIC: &str = "__cluster_metadata";

/// Checks a topic name by Kafka's rules (`Topic.validate`): 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
/// The error text is Kafka's.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > MAX_TOPIC_NAME_LENGTH {
        return Err(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LENGTH} characters, topic name: {name}"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Whether Kafka treats this topic as internal.
pub fn is_internal_topic(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

/// `.` and `_` collide in metric names, so Kafka refuses a topic whose name differs from another only there.
fn unify_collision_chars(name: &str) -> String {
    name.replace('.', "_")
}

/// A topic to create (one entry of CreateTopics, or an auto-creation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// The topic name.
    pub name: String,
    /// Partitions, or -1 for `num.partitions`.
    pub num_partitions: i32,
    /// Replication factor, or -1 for `default.replication.factor`.
    pub replication_factor: i16,
    /// Explicit assignments `(partition, broker ids)`; non-empty requires -1 for both counts.
    pub assignments: Vec<(i32, Vec<i32>)>,
    /// Config overrides; `None` values are rejected as in Kafka.
    pub configs: Vec<(String, Option<String>)>,
}

impl NewTopic {
    /// A topic with the broker defaults and no configs.
    pub fn with_defaults(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: Vec::new(),
        }
    }
}

/// The result of creating one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicOutcome {
    /// The topic name.
    pub name: String,
    /// Kafka error code (0 on success).
    pub error_code: i16,
    /// The error message, if any.
    pub error_message: Option<String>,
    /// The new topic's id (nil on error).
    pub topic_id: Uuid,
    /// Partitions created (-1 on error).
    pub num_partitions: i32,
    /// Replication factor (-1 on error).
    pub replication_factor: i16,
    /// The config overrides the topic was created with (absent keys take broker defaults).
    pub configs: Vec<(String, String)>,
}

impl CreateTopicOutcome {
    fn failed(name: &str, error: ApiError) -> Self {
        Self {
            name: name.to_string(),
            error_code: error.code,
            error_message: error.message,
            topic_id: Uuid::nil(),
            num_partitions: -1,
            replication_factor: -1,
            configs: Vec::new(),
        }
    }
}

/// The brokers new replicas may go to, in striping order: unfenced brokers that are not shutting down, grouped by
/// rack (racks in name order, brokers without a rack as one more group), interleaved one broker per rack at a time,
/// so consecutive positions fall on different racks where there are several (Kafka's `StripedReplicaPlacer`, with
/// a deterministic order instead of its shuffle).
fn broker_ids(image: &MetadataImage) -> Vec<i32> {
    let mut racks: std::collections::BTreeMap<Option<&str>, Vec<i32>> = Default::default();
    for b in image.brokers.values() {
        if super::is_eligible_leader(image, b.node_id) {
            racks.entry(b.rack.as_deref()).or_default().push(b.node_id);
        }
    }
    let mut striped = Vec::new();
    let longest = racks.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for ids in racks.values() {
            if let Some(&id) = ids.get(i) {
                striped.push(id);
            }
        }
    }
    striped
}

/// Striped placement from partition `first`: replica `i` of partition `p` goes to position `(p + i) mod n` of the
/// striped broker order, so leaders rotate over the brokers and each partition's replicas span racks.
fn place(
    brokers: &[i32],
    first: i32,
    count: i32,
    replication_factor: i16,
) -> Result<Vec<Vec<i32>>, ApiError> {
    let rf = usize::try_from(replication_factor).unwrap_or(0);
    if rf > brokers.len() {
        return Err(ApiError::new(
            code::INVALID_REPLICATION_FACTOR,
            format!(
                "Unable to replicate the partition {replication_factor} time(s): The target replication factor of \
                 {replication_factor} cannot be reached because only {} broker(s) are registered.",
                brokers.len()
            ),
        ));
    }
    Ok((first..first.saturating_add(count))
        .map(|p| {
            (0..rf)
                .map(|i| brokers[(p as usize + i) % brokers.len()])
                .collect()
        })
        .collect())
}

/// A new partition: the ISR is the replicas that can lead now (a manual assignment may name fenced brokers), the
/// leader the first of them in replica order (Kafka's `PartitionRegistration` for a new partition).
fn registration(image: &MetadataImage, replicas: Vec<i32>) -> PartitionRegistration {
    let isr: Vec<i32> = replicas
        .iter()
        .copied()
        .filter(|&r| super::is_eligible_leader(image, r))
        .collect();
    let leader = isr.first().copied().unwrap_or(-1);
    PartitionRegistration {
        isr,
        replicas,
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
        ..Default::default()
    }
}

/// Kafka's `validateManualPartitionAssignment`.
pub(super) fn validate_manual_assignment(
    image: &MetadataImage,
    replicas: &[i32],
    replication_factor: Option<usize>,
) -> Result<(), ApiError> {
    let invalid = |m: String| ApiError::new(code::INVALID_REPLICA_ASSIGNMENT, m);
    if replicas.is_empty() {
        return Err(invalid(
            "The manual partition assignment includes an empty replica list.".into(),
        ));
    }
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    let mut prev = None;
    for id in &sorted {
        if !image.brokers.contains_key(id) {
            return Err(invalid(format!(
                "The manual partition assignment includes broker {id}, but no such broker is registered."
            )));
        }
        if prev == Some(*id) {
            return Err(invalid(format!(
                "The manual partition assignment includes the broker {id} more than once."
            )));
        }
        prev = Some(*id);
    }
    if !replicas
        .iter()
        .any(|&r| super::is_eligible_leader(image, r))
    {
        return Err(invalid(
            "All brokers specified in the manual partition assignment are fenced or in controlled shutdown."
                .into(),
        ));
    }
    if let Some(rf) = replication_factor {
        if sorted.len() != rf {
            return Err(invalid(format!(
                "The manual partition assignment includes a partition with {} replica(s), but this is not \
                 consistent with previous partitions, which have {rf} replica(s).",
                sorted.len()
            )));
        }
    }
    Ok(())
}

/// The partitions of one new topic, from explicit assignments or from placement.
fn plan_partitions(
    image: &MetadataImage,
    defaults: ControllerDefaults,
    topic: &NewTopic,
    budget: usize,
) -> Result<Vec<Vec<i32>>, ApiError> {
    if !topic.assignments.is_empty() {
        if topic.replication_factor != -1 {
            return Err(ApiError::new(
                code::INVALID_REQUEST,
                "A manual partition assignment was specified, but replication factor was not set to -1.",
            ));
        }
        if topic.num_partitions != -1 {
            return Err(ApiError::new(
                code::INVALID_REQUEST,
                "A manual partition assignment was specified, but numPartitions was not set to -1.",
            ));
        }
        if topic.assignments.len() > budget {
            return Err(too_large());
        }
        let mut parts: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        let mut rf = None;
        for (partition, replicas) in &topic.assignments {
            if parts.contains_key(partition) {
                return Err(ApiError::new(
                    code::INVALID_REPLICA_ASSIGNMENT,
                    format!(
                        "Found multiple manual partition assignments for partition {partition}"
                    ),
                ));
            }
            validate_manual_assignment(image, replicas, rf)?;
            rf = Some(replicas.len());
            parts.insert(*partition, replicas.clone());
        }
        if parts.keys().copied().ne(0..parts.len() as i32) {
            return Err(ApiError::new(
                code::INVALID_REPLICA_ASSIGNMENT,
                "partitions should be a consecutive 0-based integer sequence",
            ));
        }
        return Ok(parts.into_values().collect());
    }
    if topic.replication_factor < -1 || topic.replication_factor == 0 {
        return Err(ApiError::new(
            code::INVALID_REPLICATION_FACTOR,
            "Replication factor must be larger than 0, or -1 to use the default value.",
        ));
    }
    if topic.num_partitions < -1 || topic.num_partitions == 0 {
        return Err(ApiError::new(
            code::INVALID_PARTITIONS,
            "Number of partitions was set to an invalid non-positive value.",
        ));
    }
    let num_partitions = if topic.num_partitions == -1 {
        defaults.num_partitions
    } else {
        topic.num_partitions
    };
    let replication_factor = if topic.replication_factor == -1 {
        defaults.default_replication_factor
    } else {
        topic.replication_factor
    };
    if replication_factor <= 0 {
        return Err(ApiError::new(
            code::INVALID_REPLICATION_FACTOR,
            "Replication factor must be larger than 0, or -1 to use the default value.",
        ));
    }
    if num_partitions <= 0 {
        return Err(ApiError::new(
            code::INVALID_PARTITIONS,
            "Number of partitions was set to an invalid non-positive value.",
        ));
    }
    if num_partitions as usize > budget {
        return Err(too_large());
    }
    place(&broker_ids(image), 0, num_partitions, replication_factor)
}

fn too_large() -> ApiError {
    ApiError::new(
        code::POLICY_VIOLATION,
        "Unable to perform excessively large batch operation.",
    )
}

/// CreateTopics: validates each topic and returns the records creating the valid ones (none if `validate_only`).
/// `new_topic_id` supplies topic ids (random in production, deterministic in tests).
pub fn create_topics(
    image: &MetadataImage,
    defaults: ControllerDefaults,
    topics: &[NewTopic],
    validate_only: bool,
    new_topic_id: &mut dyn FnMut() -> Uuid,
) -> ControllerResult<Vec<CreateTopicOutcome>> {
    let mut records = Vec::new();
    let mut outcomes = Vec::with_capacity(topics.len());
    let mut seen = HashSet::new();
    let duplicates: HashSet<&str> = topics
        .iter()
        .filter(|t| !seen.insert(t.name.as_str()))
        .map(|t| t.name.as_str())
        .collect();
    let mut reported_duplicates = HashSet::new();
    // Names of topics in the image plus those created earlier in this request, unified for collisions.
    let mut unified: BTreeMap<String, String> = image
        .topics()
        .map(|t| (unify_collision_chars(&t.name), t.name.clone()))
        .collect();
    let mut created_ids = HashSet::new();

    for topic in topics {
        let name = topic.name.as_str();
        if duplicates.contains(name) {
            if reported_duplicates.insert(name) {
                outcomes.push(CreateTopicOutcome::failed(
                    name,
                    ApiError::new(code::INVALID_REQUEST, "Duplicate topic name."),
                ));
            }
            continue;
        }
        let result = (|| {
            validate_topic_name(name)
                .map_err(|m| ApiError::new(code::INVALID_TOPIC_EXCEPTION, m))?;
            if name == CLUSTER_METADATA_TOPIC {
                return Err(ApiError::new(
                    code::INVALID_REQUEST,
                    format!("Creation of internal topic {CLUSTER_METADATA_TOPIC} is prohibited."),
                ));
            }
            if image.topic(name).is_some() {
                return Err(ApiError::new(
                    code::TOPIC_ALREADY_EXISTS,
                    format!("Topic '{name}' already exists."),
                ));
            }
            if let Some(existing) = unified.get(&unify_collision_chars(name)) {
                return Err(ApiError::new(
                    code::INVALID_TOPIC_EXCEPTION,
                    format!("Topic '{name}' collides with existing topic: {existing}"),
                ));
            }
            let nulls: Vec<&str> = topic
                .configs
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.as_str())
                .collect();
            if !nulls.is_empty() {
                return Err(ApiError::new(
                    code::INVALID_CONFIG,
                    format!(
                        "Null value not supported for topic configs: {}",
                        nulls.join(",")
                    ),
                ));
            }
            let mut configs = BTreeMap::new();
            for (key, value) in &topic.configs {
                topic_config::validate(key, value.as_deref())?;
                if let Some(v) = value {
                    configs.insert(key.clone(), v.clone());
                }
            }
            let budget = MAX_RECORDS_PER_USER_OP.saturating_sub(records.len() + 1 + configs.len());
            let partitions = plan_partitions(image, defaults, topic, budget)?;
            Ok((configs, partitions))
        })();
        let (configs, partitions) = match result {
            Ok(ok) => ok,
            Err(e) => {
                outcomes.push(CreateTopicOutcome::failed(name, e));
                continue;
            }
        };
        let mut topic_id = new_topic_id();
        while topic_id.is_nil()
            || image.topic_by_id(topic_id).is_some()
            || created_ids.contains(&topic_id)
        {
            topic_id = new_topic_id();
        }
        created_ids.insert(topic_id);
        unified.insert(unify_collision_chars(name), name.to_string());
        let replication_factor = partitions.first().map(|r| r.len() as i16).unwrap_or(-1);
        outcomes.push(CreateTopicOutcome {
            name: name.to_string(),
            error_code: code::NONE,
            error_message: None,
            topic_id,
            num_partitions: partitions.len() as i32,
            replication_factor,
            configs: configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
        records.push(MetadataRecord::Topic {
            name: name.to_string(),
            topic_id,
            internal: is_internal_topic(name),
        });
        // Config records go after the topic record and before the partitions, as in Kafka.
        for (key, value) in configs {
            records.push(MetadataRecord::Config {
                resource_type: ConfigResourceType::Topic,
                resource_name: name.to_string(),
                key,
                value: Some(value),
            });
        }
        for (partition, replicas) in partitions.into_iter().enumerate() {
            records.push(MetadataRecord::Partition {
                topic_id,
                partition: partition as i32,
                registration: registration(image, replicas),
            });
        }
    }
    if validate_only {
        records.clear();
    }
    ControllerResult {
        records,
        response: outcomes,
    }
}

/// One entry of DeleteTopics: a name (v0-v5, or v6 with a nil id) or a topic id (v6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicTarget {
    /// The topic name, if given.
    pub name: Option<String>,
    /// The topic id, nil if not given.
    pub topic_id: Uuid,
}

/// The result of deleting one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicOutcome {
    /// The topic name, when known.
    pub name: Option<String>,
    /// The topic id, when known (nil otherwise).
    pub topic_id: Uuid,
    /// The error, if the topic was not deleted.
    pub error: Option<ApiError>,
}

/// DeleteTopics, with Kafka's `ControllerApis.deleteTopics` checks (neither/both given, duplicates,
/// a name mapping to an id given too, unknown names and ids).
pub fn delete_topics(
    image: &MetadataImage,
    targets: &[DeleteTopicTarget],
) -> ControllerResult<Vec<DeleteTopicOutcome>> {
    let invalid = |m: &str| Some(ApiError::new(code::INVALID_REQUEST, m));
    let mut outcomes = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let mut ids: Vec<Uuid> = Vec::new();
    let (mut seen_names, mut dup_names) = (HashSet::new(), BTreeSet::new());
    let (mut seen_ids, mut dup_ids) = (HashSet::new(), BTreeSet::new());
    for target in targets {
        match (target.name.as_deref(), target.topic_id.is_nil()) {
            (None, true) => outcomes.push(DeleteTopicOutcome {
                name: None,
                topic_id: Uuid::nil(),
                error: invalid("Neither topic name nor id were specified."),
            }),
            (Some(name), false) => outcomes.push(DeleteTopicOutcome {
                name: Some(name.to_string()),
                topic_id: target.topic_id,
                error: invalid("You may not specify both topic name and topic id."),
            }),
            (Some(name), true) => {
                if !seen_names.insert(name) {
                    dup_names.insert(name);
                } else {
                    names.push(name);
                }
            }
            (None, false) => {
                if !seen_ids.insert(target.topic_id) {
                    dup_ids.insert(target.topic_id);
                } else {
                    ids.push(target.topic_id);
                }
            }
        }
    }
    for name in &dup_names {
        outcomes.push(DeleteTopicOutcome {
            name: Some(name.to_string()),
            topic_id: Uuid::nil(),
            error: invalid("Duplicate topic name."),
        });
    }
    for id in &dup_ids {
        outcomes.push(DeleteTopicOutcome {
            name: None,
            topic_id: *id,
            error: invalid("Duplicate topic id."),
        });
    }
    let mut to_delete: Vec<(Option<String>, Uuid)> = Vec::new();
    let id_set: HashSet<Uuid> = ids
        .iter()
        .copied()
        .filter(|id| !dup_ids.contains(id))
        .collect();
    for id in ids.iter().filter(|id| !dup_ids.contains(id)) {
        match image.topic_by_id(*id) {
            Some(_) => to_delete.push((None, *id)),
            None => outcomes.push(DeleteTopicOutcome {
                name: None,
                topic_id: *id,
                error: Some(ApiError::new(
                    code::UNKNOWN_TOPIC_ID,
                    "This server does not host this topic ID.",
                )),
            }),
        }
    }
    for name in names.iter().filter(|n| !dup_names.contains(*n)) {
        match image.topic(name) {
            None => outcomes.push(DeleteTopicOutcome {
                name: Some(name.to_string()),
                topic_id: Uuid::nil(),
                error: Some(ApiError::new(
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    "This server does not host this topic-partition.",
                )),
            }),
            Some(t) if id_set.contains(&t.id) => outcomes.push(DeleteTopicOutcome {
                name: Some(name.to_string()),
                topic_id: t.id,
                error: invalid("The provided topic name maps to an ID that was already supplied."),
            }),
            Some(t) => to_delete.push((Some(name.to_string()), t.id)),
        }
    }
    let mut records = Vec::new();
    for (name, topic_id) in to_delete {
        let name = name.or_else(|| image.topic_by_id(topic_id).map(|t| t.name.clone()));
        records.push(MetadataRecord::RemoveTopic { topic_id });
        outcomes.push(DeleteTopicOutcome {
            name,
            topic_id,
            error: None,
        });
    }
    ControllerResult {
        records,
        response: outcomes,
    }
}

/// One entry of CreatePartitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePartitions {
    /// The topic name.
    pub name: String,
    /// The new total partition count.
    pub count: i32,
    /// Replica assignments for the new partitions only, if given.
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// The result of one CreatePartitions entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePartitionsOutcome {
    /// The topic name.
    pub name: String,
    /// The error, if the partitions were not created.
    pub error: Option<ApiError>,
}

/// CreatePartitions (`ReplicationControlManager.createPartitions`); `validate_only` writes nothing.
pub fn create_partitions(
    image: &MetadataImage,
    topics: &[CreatePartitions],
    validate_only: bool,
) -> ControllerResult<Vec<CreatePartitionsOutcome>> {
    let mut records = Vec::new();
    let mut outcomes = Vec::with_capacity(topics.len());
    let mut seen = HashSet::new();
    let duplicates: HashSet<&str> = topics
        .iter()
        .filter(|t| !seen.insert(t.name.as_str()))
        .map(|t| t.name.as_str())
        .collect();
    let mut reported = HashSet::new();
    for topic in topics {
        if duplicates.contains(topic.name.as_str()) {
            if reported.insert(topic.name.as_str()) {
                outcomes.push(CreatePartitionsOutcome {
                    name: topic.name.clone(),
                    error: Some(ApiError::new(
                        code::INVALID_REQUEST,
                        "Duplicate topic name.",
                    )),
                });
            }
            continue;
        }
        let budget = MAX_RECORDS_PER_USER_OP.saturating_sub(records.len());
        let error = match plan_new_partitions(image, topic, budget) {
            Ok(new) => {
                records.extend(new);
                None
            }
            Err(e) => Some(e),
        };
        outcomes.push(CreatePartitionsOutcome {
            name: topic.name.clone(),
            error,
        });
    }
    if validate_only {
        records.clear();
    }
    ControllerResult {
        records,
        response: outcomes,
    }
}

fn plan_new_partitions(
    image: &MetadataImage,
    request: &CreatePartitions,
    budget: usize,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let topic = image.topic(&request.name).ok_or_else(|| {
        ApiError::new(
            code::UNKNOWN_TOPIC_OR_PARTITION,
            "This server does not host this topic-partition.",
        )
    })?;
    let current = topic.partitions.len() as i32;
    if request.count == current {
        return Err(ApiError::new(
            code::INVALID_PARTITIONS,
            format!("Topic already has {current} partition(s)."),
        ));
    }
    if request.count < current {
        return Err(ApiError::new(
            code::INVALID_PARTITIONS,
            format!(
                "The topic {} currently has {current} partition(s); {} would not be an increase.",
                request.name, request.count
            ),
        ));
    }
    let additional = request.count - current;
    if additional as usize > budget {
        return Err(too_large());
    }
    let replication_factor = topic
        .partitions
        .first()
        .map(|p| p.replicas.len())
        .ok_or_else(|| {
            ApiError::new(
                code::UNKNOWN_SERVER_ERROR,
                format!(
                    "Invalid state: topic {} appears to have no partitions.",
                    request.name
                ),
            )
        })?;
    let assignments = match &request.assignments {
        Some(assignments) => {
            if assignments.len() != additional as usize {
                return Err(ApiError::new(
                    code::INVALID_REPLICA_ASSIGNMENT,
                    format!(
                        "Attempted to add {additional} additional partition(s), but only {} assignment(s) were specified.",
                        assignments.len()
                    ),
                ));
            }
            for replicas in assignments {
                validate_manual_assignment(image, replicas, Some(replication_factor))?;
            }
            assignments.clone()
        }
        None => place(
            &broker_ids(image),
            current,
            additional,
            replication_factor as i16,
        )?,
    };
    Ok(assignments
        .into_iter()
        .zip(current..)
        .map(|(replicas, partition)| MetadataRecord::Partition {
            topic_id: topic.id,
            partition,
            registration: registration(image, replicas),
        })
        .collect())
}
