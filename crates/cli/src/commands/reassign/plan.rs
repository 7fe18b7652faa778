//! The pure core of `sluice reassign`, no I/O: Kafka's two JSON files (the topics to move, and a reassignment),
//! parsed, checked and printed as `kafka-reassign-partitions.sh` (`ReassignPartitionsCommand`) does; the
//! placement `generate` proposes (Kafka's `AdminUtils.assignReplicasToBrokers`, rack-unaware and rack-aware, with
//! a start derived from the topic name where Kafka draws one at random); the throttle values `execute --throttle`
//! sets; and the per-partition states `verify` and `list` print, in Kafka's words.
//!
//! Errors are one-line messages about the input (the caller names the file and exits with status 2).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use sluice_client::admin::PartitionReassignment;
use sluice_client::consumer::TopicPartition;

/// What `log_dirs` holds for a replica whose directory is left to the broker (Kafka's `ANY_LOG_DIR`).
const ANY_LOG_DIR: &str = "any";

/// The only version of both files (Kafka's `EARLIEST_VERSION` and `EARLIEST_TOPICS_JSON_VERSION`); a file
/// without `version` is read as this one.
const VERSION: i64 = 1;

/// `topic-partition`, as Kafka's `TopicPartition.toString`.
pub(crate) fn partition_name((topic, partition): &TopicPartition) -> String {
    format!("{topic}-{partition}")
}

/// `1,2,3`.
pub(crate) fn join_ids<'a>(ids: impl IntoIterator<Item = &'a i32>) -> String {
    ids.into_iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The values of `items` that occur more than once, sorted (Kafka's `ToolsUtils.duplicates`).
fn duplicates<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    let mut seen = BTreeSet::new();
    items
        .iter()
        .filter(|item| !seen.insert((*item).clone()))
        .cloned()
        .collect()
}

fn parse_json(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => {
            match object.get("version") {
                None => {}
                Some(v) if v.as_i64() == Some(VERSION) => {}
                Some(v) => {
                    return Err(format!("unsupported version {v} (only {VERSION} is known)"))
                }
            }
            Ok(object)
        }
        Ok(_) => Err("expected a JSON object".to_owned()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// `object[key]` as an array, or an error naming `at`.
fn array<'a>(object: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a [Value], String> {
    match object.get(key) {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("{at}\"{key}\" must be an array")),
        None => Err(format!("{at}\"{key}\" is missing")),
    }
}

fn string<'a>(object: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a str, String> {
    object
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}\"{key}\" must be a string"))
}

/// A non-negative 32-bit integer (a partition index or a broker id).
fn id(value: &Value) -> Option<i32> {
    value
        .as_i64()
        .and_then(|v| i32::try_from(v).ok())
        .filter(|v| *v >= 0)
}

/// Parses the `--topics-to-move-json-file` of `generate`: `{"topics":[{"topic":"t"},...],"version":1}`. At
/// least one topic, none twice.
pub(crate) fn parse_topics(text: &str) -> Result<Vec<String>, String> {
    let object = parse_json(text)?;
    let mut topics = Vec::new();
    for (i, entry) in array(&object, "topics", "")?.iter().enumerate() {
        let at = format!("topics[{i}].");
        let entry = entry
            .as_object()
            .ok_or_else(|| format!("topics[{i}] must be an object"))?;
        topics.push(string(entry, "topic", &at)?.to_owned());
    }
    if topics.is_empty() {
        return Err("\"topics\" lists no topic".to_owned());
    }
    let repeated = duplicates(&topics);
    if !repeated.is_empty() {
        let repeated: Vec<String> = repeated.into_iter().collect();
        return Err(format!(
            "List of topics to reassign contains duplicate entries: {}",
            repeated.join(",")
        ));
    }
    Ok(topics)
}

/// Parses `--broker-list` (`1,2,3`): at least one broker id, none twice.
pub(crate) fn parse_broker_list(list: &str) -> Result<Vec<i32>, String> {
    if list.trim().is_empty() {
        return Err(
            "--broker-list is empty: name the brokers to place replicas on, e.g. 1,2,3".to_owned(),
        );
    }
    let brokers = list
        .split(',')
        .map(|item| {
            let item = item.trim();
            item.parse::<i32>()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| format!("--broker-list: {item:?} is not a broker id"))
        })
        .collect::<Result<Vec<i32>, String>>()?;
    let repeated = duplicates(&brokers);
    if !repeated.is_empty() {
        return Err(format!(
            "Broker list contains duplicate entries: {}",
            join_ids(&repeated)
        ));
    }
    Ok(brokers)
}

/// Parses a `--reassignment-json-file`:
/// `{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,2],"log_dirs":["any","any"]},...]}` and
/// checks it as Kafka's `parseExecuteAssignmentArgs` does: at least one partition, none twice, no empty replica
/// list, no broker twice in one. `log_dirs` is optional; when present it has one entry per replica, and each must be
/// `"any"` (moving replicas between a broker's log directories, AlterReplicaLogDirs, is not offered).
pub(crate) fn parse_reassignment(text: &str) -> Result<BTreeMap<TopicPartition, Vec<i32>>, String> {
    let object = parse_json(text)?;
    let mut entries: Vec<(TopicPartition, Vec<i32>)> = Vec::new();
    for (i, entry) in array(&object, "partitions", "")?.iter().enumerate() {
        let at = format!("partitions[{i}].");
        let entry = entry
            .as_object()
            .ok_or_else(|| format!("partitions[{i}] must be an object"))?;
        let topic = string(entry, "topic", &at)?.to_owned();
        let partition = entry
            .get("partition")
            .and_then(id)
            .ok_or_else(|| format!("{at}\"partition\" must be a partition index (0 or more)"))?;
        let replicas = array(entry, "replicas", &at)?
            .iter()
            .map(id)
            .collect::<Option<Vec<i32>>>()
            .ok_or_else(|| format!("{at}\"replicas\" must hold broker ids"))?;
        let tp = (topic, partition);
        if let Some(dirs) = entry.get("log_dirs") {
            let dirs = dirs
                .as_array()
                .ok_or_else(|| format!("{at}\"log_dirs\" must be an array"))?;
            if dirs.len() != replicas.len() {
                return Err(format!(
                    "Size of replicas list [{}] is different from size of log dirs list ({} entries) for partition {}",
                    join_ids(&replicas),
                    dirs.len(),
                    partition_name(&tp)
                ));
            }
            if let Some(dir) = dirs.iter().find(|d| d.as_str() != Some(ANY_LOG_DIR)) {
                return Err(format!(
                    "{at}\"log_dirs\" names {dir}: only \"any\" is supported (moving a replica to a given log directory is not)"
                ));
            }
        }
        entries.push((tp, replicas));
    }
    if entries.is_empty() {
        return Err("Partition reassignment list cannot be empty".to_owned());
    }
    if entries.iter().any(|(_, replicas)| replicas.is_empty()) {
        return Err("Partition replica list cannot be empty".to_owned());
    }
    let names: Vec<String> = entries.iter().map(|(tp, _)| partition_name(tp)).collect();
    let repeated = duplicates(&names);
    if !repeated.is_empty() {
        let repeated: Vec<String> = repeated.into_iter().collect();
        return Err(format!(
            "Partition reassignment contains duplicate topic partitions: {}",
            repeated.join(",")
        ));
    }
    let repeated_replicas: Vec<String> = entries
        .iter()
        .filter_map(|(tp, replicas)| {
            let repeated = duplicates(replicas);
            (!repeated.is_empty()).then(|| {
                format!(
                    "{} contains multiple entries for {}",
                    partition_name(tp),
                    join_ids(&repeated)
                )
            })
        })
        .collect();
    if !repeated_replicas.is_empty() {
        return Err(format!(
            "Partition replica lists may not contain duplicate entries: {}",
            repeated_replicas.join(". ")
        ));
    }
    Ok(entries.into_iter().collect())
}

/// A reassignment file in Kafka's layout (`formatAsReassignmentJson`): compact, `version` then `partitions`,
/// partitions sorted by topic and index, each with `topic`, `partition`, `replicas` and `log_dirs` (all `"any"`).
pub(crate) fn format_reassignment(assignment: &BTreeMap<TopicPartition, Vec<i32>>) -> String {
    let partitions: Vec<String> = assignment
        .iter()
        .map(|((topic, partition), replicas)| {
            let dirs = vec![format!("\"{ANY_LOG_DIR}\""); replicas.len()];
            format!(
                "{{\"topic\":{},\"partition\":{partition},\"replicas\":[{}],\"log_dirs\":[{}]}}",
                Value::String(topic.clone()),
                join_ids(replicas),
                dirs.join(",")
            )
        })
        .collect();
    format!(
        "{{\"version\":{VERSION},\"partitions\":[{}]}}",
        partitions.join(",")
    )
}

/// A broker `generate` may place replicas on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broker {
    pub(crate) id: i32,
    /// `broker.rack`, when set and rack awareness is on.
    pub(crate) rack: Option<String>,
}

/// Where a topic's placement starts: the broker of partition 0's first replica (an index into the broker list)
/// and the first follower shift. Kafka draws both at random; [`Start::for_topic`] derives them from the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    pub(crate) index: usize,
    pub(crate) shift: usize,
}

impl Start {
    /// A start from the topic name (FNV-1a, stable across runs and builds), so that `generate` proposes the same
    /// plan every time and different topics start on different brokers.
    pub(crate) fn for_topic(topic: &str, brokers: usize) -> Start {
        assert!(brokers > 0, "a placement needs brokers");
        let hash = topic.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let n = brokers as u64;
        Start {
            index: (hash % n) as usize,
            shift: ((hash >> 32) % n) as usize,
        }
    }
}

/// The broker a follower goes to (Kafka's `AdminUtils.replicaIndex`): never the first replica's broker; the
/// shift grows with each round over the brokers so that followers spread too.
fn replica_index(first: usize, shift: usize, replica: usize, brokers: usize) -> usize {
    (first + 1 + (shift + replica) % (brokers - 1)) % brokers
}

/// Brokers ordered so that racks alternate, racks by name and brokers by id within a rack (Kafka's
/// `getRackAlternatedBrokerList`): rack1 {0,1}, rack2 {3} gives 0, 3, 1.
fn rack_alternated(brokers: &[Broker]) -> Vec<&Broker> {
    let mut by_rack: BTreeMap<&str, Vec<&Broker>> = BTreeMap::new();
    for b in brokers {
        by_rack
            .entry(b.rack.as_deref().unwrap_or_default())
            .or_default()
            .push(b);
    }
    for list in by_rack.values_mut() {
        list.sort_by_key(|b| b.id);
    }
    let mut out = Vec::with_capacity(brokers.len());
    for round in 0.. {
        if out.len() == brokers.len() {
            break;
        }
        out.extend(by_rack.values().filter_map(|list| list.get(round).copied()));
    }
    out
}

/// Places the replicas of one topic's partitions, `(partition, replication factor)` each, over `brokers`, as
/// Kafka's `AdminUtils.assignReplicasToBrokers` with a fixed start: the first replica round-robin over the brokers
/// from `start.index`, the followers at an increasing shift after it. When every broker has a rack, rack-aware as
/// Kafka: the brokers in rack-alternated order, and a follower skips a broker whose rack (or itself) already holds
/// a replica while some rack (broker) holds none. Some brokers with a rack and some without is an error, as in
/// Kafka.
pub(crate) fn assign_replicas(
    brokers: &[Broker],
    partitions: &[(i32, usize)],
    start: Start,
) -> Result<BTreeMap<i32, Vec<i32>>, String> {
    let n = brokers.len();
    if n == 0 {
        return Err("no brokers to place replicas on".to_owned());
    }
    let racked = brokers.iter().filter(|b| b.rack.is_some()).count();
    if racked != 0 && racked != n {
        return Err("Not all brokers have rack information. Add --disable-rack-aware in command line to make replica assignment without rack information.".to_owned());
    }
    let mut sorted: Vec<&Broker> = brokers.iter().collect();
    sorted.sort_by_key(|b| b.id);
    let order = if racked == n {
        rack_alternated(brokers)
    } else {
        sorted
    };
    let racks: BTreeSet<&str> = order.iter().filter_map(|b| b.rack.as_deref()).collect();
    // Rack-unaware placement is the rack-aware one with every broker in its own rack.
    let rack_of = |b: &Broker| b.rack.clone().unwrap_or_else(|| format!("broker {}", b.id));
    let rack_count = if racked == n { racks.len() } else { n };
    let shift_step = if racked == n { racks.len() } else { 1 };
    let mut out = BTreeMap::new();
    for &(partition, replication_factor) in partitions {
        if replication_factor == 0 {
            return Err(format!("partition {partition} has no replicas"));
        }
        if replication_factor > n {
            return Err(format!(
                "Replication factor: {replication_factor} larger than available brokers: {n}."
            ));
        }
        let p =
            usize::try_from(partition).map_err(|_| format!("bad partition index {partition}"))?;
        let shift = (start.shift + p / n) * shift_step;
        let first = (p + start.index) % n;
        let leader = order[first];
        let mut replicas = vec![leader.id];
        let mut racks_used = BTreeSet::from([rack_of(leader)]);
        let mut k = 0;
        while replicas.len() < replication_factor {
            // Within n - 1 steps every other broker is visited, and one of them fits (see below).
            let mut tries = 0;
            loop {
                assert!(
                    tries < n,
                    "no broker fits a follower of partition {partition}"
                );
                tries += 1;
                let candidate = order[replica_index(first, shift, k, n)];
                k += 1;
                let rack = rack_of(candidate);
                // A rack (broker) is reused only once every rack (broker) holds a replica: while a rack holds
                // none, some broker on it holds none either, so the search ends.
                let rack_ok = !racks_used.contains(&rack) || racks_used.len() == rack_count;
                let broker_ok = !replicas.contains(&candidate.id) || replicas.len() == n;
                if rack_ok && broker_ok {
                    replicas.push(candidate.id);
                    racks_used.insert(rack);
                    break;
                }
            }
        }
        out.insert(partition, replicas);
    }
    Ok(out)
}

/// The plan `generate` proposes: each topic's partitions spread over `brokers` from the topic's own
/// [`Start::for_topic`], every partition keeping its replication factor.
pub(crate) fn propose(
    current: &BTreeMap<TopicPartition, Vec<i32>>,
    brokers: &[Broker],
) -> Result<BTreeMap<TopicPartition, Vec<i32>>, String> {
    let mut by_topic: BTreeMap<&str, Vec<(i32, usize)>> = BTreeMap::new();
    for ((topic, partition), replicas) in current {
        by_topic
            .entry(topic)
            .or_default()
            .push((*partition, replicas.len()));
    }
    let mut out = BTreeMap::new();
    for (topic, partitions) in by_topic {
        let placed = assign_replicas(brokers, &partitions, Start::for_topic(topic, brokers.len()))
            .map_err(|e| format!("topic {topic}: {e}"))?;
        out.extend(
            placed
                .into_iter()
                .map(|(partition, replicas)| ((topic.to_owned(), partition), replicas)),
        );
    }
    Ok(out)
}

/// The brokers a partition's data moves from and to (Kafka's `PartitionMove`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PartitionMove {
    /// Replicas that hold the data now (they lead the copy).
    pub(crate) sources: BTreeSet<i32>,
    /// Replicas that receive it.
    pub(crate) destinations: BTreeSet<i32>,
}

/// Every partition moving once `proposed` is submitted (Kafka's `calculateProposedMoveMap`): the reassignments
/// in progress (sources: their replicas less the ones being added; destinations: the ones being added), with the
/// proposed ones over them; a proposed partition already moving keeps that move's sources, else its current
/// replicas are the sources, and its destinations are its target replicas that are not sources.
pub(crate) fn move_map(
    ongoing: &[PartitionReassignment],
    proposed: &BTreeMap<TopicPartition, Vec<i32>>,
    current: &BTreeMap<TopicPartition, Vec<i32>>,
) -> BTreeMap<TopicPartition, PartitionMove> {
    let mut moves: BTreeMap<TopicPartition, PartitionMove> = ongoing
        .iter()
        .map(|r| {
            let adding: BTreeSet<i32> = r.adding_replicas.iter().copied().collect();
            let sources = r
                .replicas
                .iter()
                .copied()
                .filter(|b| !adding.contains(b))
                .collect();
            (
                (r.topic.clone(), r.partition),
                PartitionMove {
                    sources,
                    destinations: adding,
                },
            )
        })
        .collect();
    for (tp, target) in proposed {
        let sources = match moves.get(tp) {
            Some(m) => m.sources.clone(),
            None => current
                .get(tp)
                .map(|r| r.iter().copied().collect())
                .unwrap_or_default(),
        };
        let destinations = target
            .iter()
            .copied()
            .filter(|b| !sources.contains(b))
            .collect();
        moves.insert(
            tp.clone(),
            PartitionMove {
                sources,
                destinations,
            },
        );
    }
    moves
}

/// The topic configs that throttle the moves, per topic: `leader.replication.throttled.replicas` (every
/// `partition:source`) and `follower.replication.throttled.replicas` (every `partition:destination`), as Kafka's
/// `calculateLeaderThrottles` / `calculateFollowerThrottles`, sorted by partition then broker.
pub(crate) fn topic_throttles(
    moves: &BTreeMap<TopicPartition, PartitionMove>,
) -> BTreeMap<String, (String, String)> {
    let mut out: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for ((topic, partition), m) in moves {
        let (leader, follower) = out.entry(topic.clone()).or_default();
        leader.extend(m.sources.iter().map(|b| format!("{partition}:{b}")));
        follower.extend(
            m.destinations
                .iter()
                .filter(|b| !m.sources.contains(b))
                .map(|b| format!("{partition}:{b}")),
        );
    }
    out.into_iter()
        .map(|(topic, (leader, follower))| (topic, (leader.join(","), follower.join(","))))
        .collect()
}

/// Every broker a move reads from or writes to (Kafka's `calculateReassigningBrokers`): the ones whose
/// replication rate is throttled.
pub(crate) fn reassigning_brokers(
    moves: &BTreeMap<TopicPartition, PartitionMove>,
) -> BTreeSet<i32> {
    moves
        .values()
        .flat_map(|m| m.sources.iter().chain(m.destinations.iter()).copied())
        .collect()
}

/// Where one partition of a reassignment file stands (Kafka's `PartitionReassignmentState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionState {
    /// The replicas now: every replica while the reassignment runs, else the metadata's (empty for a partition
    /// that does not exist).
    pub(crate) current: Vec<i32>,
    /// The replicas the file asks for.
    pub(crate) target: Vec<i32>,
    /// No reassignment of the partition is running.
    pub(crate) done: bool,
}

impl PartitionState {
    /// Done, and on exactly the target replicas.
    pub(crate) fn completed(&self) -> bool {
        self.done && self.current == self.target
    }

    /// Kafka's one line for the partition.
    pub(crate) fn line(&self, tp: &TopicPartition) -> String {
        let name = partition_name(tp);
        if !self.done {
            format!("Reassignment of partition {name} is still in progress.")
        } else if self.completed() {
            format!("Reassignment of partition {name} is completed.")
        } else {
            format!(
                "There is no active reassignment of partition {name}, but replica set is {} rather than {}.",
                join_ids(&self.current),
                join_ids(&self.target)
            )
        }
    }

    /// `completed`, `in_progress` or `different` (done on other replicas), for `--output json`.
    pub(crate) fn label(&self) -> &'static str {
        if !self.done {
            "in_progress"
        } else if self.completed() {
            "completed"
        } else {
            "different"
        }
    }
}

/// Kafka's `partitionReassignmentStatesToString`: a heading, then one line per partition by topic and index.
pub(crate) fn status_text(states: &BTreeMap<TopicPartition, PartitionState>) -> String {
    let mut lines = vec!["Status of partition reassignment:".to_owned()];
    lines.extend(states.iter().map(|(tp, state)| state.line(tp)));
    lines.join("\n")
}

/// Kafka's `curReassignmentsToString` (`--list`): `t-0: replicas: 1,2,3. adding: 3. removing: 1.` per
/// reassignment in progress, sorted, under a heading; or that there is none.
pub(crate) fn list_text(ongoing: &[PartitionReassignment]) -> String {
    if ongoing.is_empty() {
        return "No partition reassignments found.".to_owned();
    }
    let mut sorted: Vec<&PartitionReassignment> = ongoing.iter().collect();
    sorted.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let mut lines = vec!["Current partition reassignments:".to_owned()];
    for r in sorted {
        let mut line = format!(
            "{}: replicas: {}.",
            partition_name(&(r.topic.clone(), r.partition)),
            join_ids(&r.replicas)
        );
        if !r.adding_replicas.is_empty() {
            line.push_str(&format!(" adding: {}.", join_ids(&r.adding_replicas)));
        }
        if !r.removing_replicas.is_empty() {
            line.push_str(&format!(" removing: {}.", join_ids(&r.removing_replicas)));
        }
        lines.push(line);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        (topic.to_owned(), partition)
    }

    fn brokers(ids: &[i32]) -> Vec<Broker> {
        ids.iter().map(|&id| Broker { id, rack: None }).collect()
    }

    fn racked(pairs: &[(i32, &str)]) -> Vec<Broker> {
        pairs
            .iter()
            .map(|&(id, rack)| Broker {
                id,
                rack: Some(rack.to_owned()),
            })
            .collect()
    }

    fn reassignment(
        topic: &str,
        partition: i32,
        replicas: &[i32],
        adding: &[i32],
        removing: &[i32],
    ) -> PartitionReassignment {
        PartitionReassignment {
            topic: topic.to_owned(),
            partition,
            replicas: replicas.to_vec(),
            adding_replicas: adding.to_vec(),
            removing_replicas: removing.to_vec(),
        }
    }

    #[test]
    fn topics_file_is_parsed_and_checked() {
        assert_eq!(
            parse_topics(r#"{"topics":[{"topic":"a"},{"topic":"b"}],"version":1}"#),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        // `version` may be left out (Kafka reads the file as version 1).
        assert_eq!(
            parse_topics(r#"{"topics":[{"topic":"a"}]}"#),
            Ok(vec!["a".to_owned()])
        );
        // Kafka's ReassignPartitionsUnitTest.testParseGenerateAssignmentArgs.
        let err = parse_topics(r#"{"topics":[{"topic":"foo"},{"topic":"foo"}],"version":1}"#)
            .unwrap_err();
        assert_eq!(
            err,
            "List of topics to reassign contains duplicate entries: foo"
        );
        for (bad, expected) in [
            ("{", "not valid JSON"),
            ("[1]", "expected a JSON object"),
            (r#"{"version":1}"#, "\"topics\" is missing"),
            (r#"{"topics":[],"version":1}"#, "lists no topic"),
            (
                r#"{"topics":[{"name":"a"}]}"#,
                "topics[0].\"topic\" must be a string",
            ),
            (
                r#"{"topics":[{"topic":"a"}],"version":2}"#,
                "unsupported version 2",
            ),
        ] {
            let err = parse_topics(bad).unwrap_err();
            assert!(err.contains(expected), "{bad}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn broker_list_is_parsed_and_checked() {
        assert_eq!(parse_broker_list("5,2,3,4"), Ok(vec![5, 2, 3, 4]));
        assert_eq!(parse_broker_list(" 1, 2 "), Ok(vec![1, 2]));
        // Kafka's testParseGenerateAssignmentArgs.
        assert_eq!(
            parse_broker_list("5,2,3,4,5").unwrap_err(),
            "Broker list contains duplicate entries: 5"
        );
        assert!(parse_broker_list("").unwrap_err().contains("empty"));
        assert!(parse_broker_list("  ").unwrap_err().contains("empty"));
        for bad in ["1,,2", "a", "-1", "1;2"] {
            assert!(
                parse_broker_list(bad)
                    .unwrap_err()
                    .contains("is not a broker id"),
                "{bad}"
            );
        }
    }

    #[test]
    fn reassignment_file_is_parsed() {
        // Kafka's testParseExecuteAssignmentArgs, the accepted case.
        let parsed = parse_reassignment(
            r#"{"version":1,"partitions":[{"topic":"foo","partition":0,"replicas":[1,2,3],"log_dirs":["any","any","any"]},{"topic":"foo","partition":1,"replicas":[3,4,5],"log_dirs":["any","any","any"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            parsed,
            BTreeMap::from([(tp("foo", 0), vec![1, 2, 3]), (tp("foo", 1), vec![3, 4, 5])])
        );
        // log_dirs and version are optional; extra fields are ignored, as Kafka's decoder does.
        let parsed = parse_reassignment(
            r#"{"partitions":[{"topic":"a","partition":2,"replicas":[0],"x":1}]}"#,
        )
        .unwrap();
        assert_eq!(parsed, BTreeMap::from([(tp("a", 2), vec![0])]));
    }

    #[test]
    fn reassignment_file_faults_are_named() {
        // Kafka's testParseExecuteAssignmentArgs, the refused cases, then the shapes its decoder refuses.
        for (bad, expected) in [
            (r#"{"version":1,"partitions":[]}"#, "Partition reassignment list cannot be empty"),
            (
                r#"{"version":1,"partitions":[{"topic":"foo","partition":0,"replicas":[0,1]},{"topic":"foo","partition":0,"replicas":[2,3,4]}]}"#,
                "Partition reassignment contains duplicate topic partitions: foo-0",
            ),
            (
                r#"{"version":1,"partitions":[{"topic":"foo","partition":0,"replicas":[0,0]},{"topic":"foo","partition":1,"replicas":[2,3]}]}"#,
                "Partition replica lists may not contain duplicate entries: foo-0 contains multiple entries for 0",
            ),
            (
                r#"{"version":1,"partitions":[{"topic":"foo","partition":0,"replicas":[]}]}"#,
                "Partition replica list cannot be empty",
            ),
            (
                r#"{"partitions":[{"topic":"foo","partition":0,"replicas":[1,2],"log_dirs":["any"]}]}"#,
                "Size of replicas list [1,2] is different from size of log dirs list (1 entries) for partition foo-0",
            ),
            (
                r#"{"partitions":[{"topic":"foo","partition":0,"replicas":[1],"log_dirs":["/data"]}]}"#,
                "partitions[0].\"log_dirs\" names \"/data\": only \"any\" is supported",
            ),
            (r#"{"partitions":[{"topic":"foo","partition":-1,"replicas":[1]}]}"#, "\"partition\" must be"),
            (r#"{"partitions":[{"topic":"foo","partition":0,"replicas":[1,"2"]}]}"#, "must hold broker ids"),
            (r#"{"partitions":[{"topic":"foo","partition":0,"replicas":[-3]}]}"#, "must hold broker ids"),
            (r#"{"partitions":[{"topic":"foo","partition":0}]}"#, "partitions[0].\"replicas\" is missing"),
            (r#"{"partitions":[{"partition":0,"replicas":[1]}]}"#, "partitions[0].\"topic\" must be a string"),
            (r#"{"partitions":{}}"#, "\"partitions\" must be an array"),
            (r#"{"partitions":[7]}"#, "partitions[0] must be an object"),
            (r#"{"version":"1","partitions":[]}"#, "unsupported version \"1\""),
            ("", "not valid JSON"),
            ("{\"partitions\": [", "not valid JSON"),
        ] {
            let err = parse_reassignment(bad).unwrap_err();
            assert!(err.starts_with(expected) || err.contains(expected), "{bad}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn reassignment_file_is_printed_in_kafkas_layout_and_reads_back() {
        let plan = BTreeMap::from([
            (tp("b", 0), vec![2]),
            (tp("a", 10), vec![1, 2]),
            (tp("a", 2), vec![3, 1]),
        ]);
        let text = format_reassignment(&plan);
        assert_eq!(
            text,
            r#"{"version":1,"partitions":[{"topic":"a","partition":2,"replicas":[3,1],"log_dirs":["any","any"]},{"topic":"a","partition":10,"replicas":[1,2],"log_dirs":["any","any"]},{"topic":"b","partition":0,"replicas":[2],"log_dirs":["any"]}]}"#
        );
        assert_eq!(parse_reassignment(&text), Ok(plan));
        // A name that needs escaping stays valid JSON.
        let odd = BTreeMap::from([(tp("we\"ird\\", 0), vec![1])]);
        assert_eq!(parse_reassignment(&format_reassignment(&odd)), Ok(odd));
        assert_eq!(
            format_reassignment(&BTreeMap::new()),
            r#"{"version":1,"partitions":[]}"#
        );
    }

    /// The example in the doc of Kafka's `AdminUtils.assignReplicasToBrokers`: 5 brokers, 10 partitions, 3
    /// replicas, start index and shift 0.
    #[test]
    fn rack_unaware_placement_is_kafkas() {
        let partitions: Vec<(i32, usize)> = (0..10).map(|p| (p, 3)).collect();
        let placed = assign_replicas(
            &brokers(&[0, 1, 2, 3, 4]),
            &partitions,
            Start { index: 0, shift: 0 },
        )
        .unwrap();
        let expected: BTreeMap<i32, Vec<i32>> = [
            vec![0, 1, 2],
            vec![1, 2, 3],
            vec![2, 3, 4],
            vec![3, 4, 0],
            vec![4, 0, 1],
            vec![0, 2, 3],
            vec![1, 3, 4],
            vec![2, 4, 0],
            vec![3, 0, 1],
            vec![4, 1, 2],
        ]
        .into_iter()
        .enumerate()
        .map(|(p, r)| (p as i32, r))
        .collect();
        assert_eq!(placed, expected);
        // The broker list's order does not matter (Kafka sorts it).
        let shuffled = assign_replicas(
            &brokers(&[3, 0, 4, 2, 1]),
            &partitions,
            Start { index: 0, shift: 0 },
        )
        .unwrap();
        assert_eq!(shuffled, expected);
    }

    /// The example in the doc of Kafka's `AdminUtils.assignReplicasToBrokers`: racks alternate (0, 3, 1, 5, 4,
    /// 2) and the followers shift once the first round is done (partition 6 gets 0,4,2, not 0,3,1 again).
    #[test]
    fn rack_aware_placement_is_kafkas() {
        let b = racked(&[
            (0, "rack1"),
            (1, "rack3"),
            (2, "rack3"),
            (3, "rack2"),
            (4, "rack2"),
            (5, "rack1"),
        ]);
        let ids: Vec<i32> = rack_alternated(&b).iter().map(|b| b.id).collect();
        assert_eq!(ids, [0, 3, 1, 5, 4, 2]);
        let partitions: Vec<(i32, usize)> = (0..7).map(|p| (p, 3)).collect();
        let placed = assign_replicas(&b, &partitions, Start { index: 0, shift: 0 }).unwrap();
        let expected: BTreeMap<i32, Vec<i32>> = BTreeMap::from([
            (0, vec![0, 3, 1]),
            (1, vec![3, 1, 5]),
            (2, vec![1, 5, 4]),
            (3, vec![5, 4, 2]),
            (4, vec![4, 2, 0]),
            (5, vec![2, 0, 3]),
            (6, vec![0, 4, 2]),
        ]);
        assert_eq!(placed, expected);
        // Kafka's getRackAlternatedBrokerList doc: three racks of three.
        let nine = racked(&[
            (0, "rack1"),
            (1, "rack1"),
            (2, "rack1"),
            (3, "rack2"),
            (4, "rack2"),
            (5, "rack2"),
            (6, "rack3"),
            (7, "rack3"),
            (8, "rack3"),
        ]);
        let ids: Vec<i32> = rack_alternated(&nine).iter().map(|b| b.id).collect();
        assert_eq!(ids, [0, 3, 6, 1, 4, 7, 2, 5, 8]);
    }

    /// Every placement, for every broker count, replication factor, start and shift: each partition gets
    /// distinct brokers from the list, leaders go round-robin (no broker leads two more than another), and with
    /// racks every replica set spans min(factor, racks) racks.
    #[test]
    fn placements_are_valid_and_balanced() {
        for n in 1..=7usize {
            let ids: Vec<i32> = (0..n as i32).map(|i| i * 10 + 1).collect();
            let rack_names = ["a", "b", "c"];
            let with_racks: Vec<Broker> = ids
                .iter()
                .enumerate()
                .map(|(i, &id)| Broker {
                    id,
                    rack: Some(rack_names[i % 3].to_owned()),
                })
                .collect();
            let racks = n.min(3);
            for rf in 1..=n {
                for index in 0..n {
                    for shift in 0..n {
                        let start = Start { index, shift };
                        let partitions: Vec<(i32, usize)> =
                            (0..(3 * n) as i32).map(|p| (p, rf)).collect();
                        for (set, racked) in [(brokers(&ids), false), (with_racks.clone(), true)] {
                            let placed = assign_replicas(&set, &partitions, start).unwrap();
                            let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
                            for replicas in placed.values() {
                                assert_eq!(replicas.len(), rf);
                                let distinct: BTreeSet<&i32> = replicas.iter().collect();
                                assert_eq!(distinct.len(), rf, "{replicas:?}");
                                assert!(replicas.iter().all(|r| ids.contains(r)));
                                *leaders.entry(replicas[0]).or_default() += 1;
                                if racked {
                                    let spanned: BTreeSet<&str> = replicas
                                        .iter()
                                        .map(|r| {
                                            set.iter()
                                                .find(|b| b.id == *r)
                                                .and_then(|b| b.rack.as_deref())
                                                .unwrap()
                                        })
                                        .collect();
                                    assert_eq!(spanned.len(), rf.min(racks), "{replicas:?}");
                                }
                            }
                            assert!(leaders.values().all(|&c| c == 3), "{leaders:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn placement_refusals_are_kafkas() {
        let partitions = [(0, 3)];
        assert_eq!(
            assign_replicas(&brokers(&[1, 2]), &partitions, Start { index: 0, shift: 0 })
                .unwrap_err(),
            "Replication factor: 3 larger than available brokers: 2."
        );
        let mixed = vec![
            Broker {
                id: 1,
                rack: Some("r1".to_owned()),
            },
            Broker { id: 2, rack: None },
        ];
        assert!(
            assign_replicas(&mixed, &[(0, 1)], Start { index: 0, shift: 0 })
                .unwrap_err()
                .starts_with("Not all brokers have rack information")
        );
        assert!(assign_replicas(&[], &[(0, 1)], Start { index: 0, shift: 0 }).is_err());
        assert!(assign_replicas(&brokers(&[1]), &[(0, 0)], Start { index: 0, shift: 0 }).is_err());
    }

    #[test]
    fn proposal_keeps_each_partitions_replication_factor_and_is_repeatable() {
        let current = BTreeMap::from([
            (tp("orders", 0), vec![1]),
            (tp("orders", 1), vec![1, 2]),
            (tp("orders", 2), vec![2, 1, 3]),
            (tp("audit", 0), vec![3, 2]),
        ]);
        let b = brokers(&[4, 5, 6]);
        let proposed = propose(&current, &b).unwrap();
        assert_eq!(
            proposed.keys().collect::<Vec<_>>(),
            current.keys().collect::<Vec<_>>()
        );
        for (tp, replicas) in &proposed {
            assert_eq!(replicas.len(), current[tp].len(), "{tp:?}");
            assert!(replicas.iter().all(|r| [4, 5, 6].contains(r)), "{tp:?}");
        }
        // The same input gives the same plan; the start depends only on the topic name and the broker count.
        assert_eq!(propose(&current, &b).unwrap(), proposed);
        let start = Start::for_topic("orders", 3);
        assert_eq!(start, Start::for_topic("orders", 3));
        assert!(start.index < 3 && start.shift < 3);
        // The topic's partitions are placed as assign_replicas places them from that start.
        let orders = assign_replicas(&b, &[(0, 1), (1, 2), (2, 3)], start).unwrap();
        for (p, replicas) in orders {
            assert_eq!(proposed[&tp("orders", p)], replicas);
        }
        // Topics start at different brokers (over enough names, every start index occurs).
        let starts: BTreeSet<usize> = (0..50)
            .map(|i| Start::for_topic(&format!("topic-{i}"), 3).index)
            .collect();
        assert_eq!(starts.len(), 3);
        let err = propose(&BTreeMap::from([(tp("wide", 0), vec![1, 2, 3, 4])]), &b).unwrap_err();
        assert_eq!(
            err,
            "topic wide: Replication factor: 4 larger than available brokers: 3."
        );
    }

    /// Kafka's ReassignPartitionsUnitTest.testMoveMap: reassignments in progress overwritten with other, the
    /// same, disjoint, fewer and more replicas, one left alone, and a partition not moving yet.
    #[test]
    fn moves_and_throttles_are_kafkas() {
        let ongoing = vec![
            reassignment("foo", 0, &[1, 2, 3, 4], &[4], &[3]),
            reassignment("foo", 1, &[4, 5, 6, 7, 8], &[7, 8], &[4, 5]),
            reassignment("foo", 2, &[1, 2, 3, 4], &[3, 4], &[1, 2]),
            reassignment("foo", 3, &[1, 2, 3, 4], &[3, 4], &[1, 2]),
            reassignment("foo", 4, &[1, 2, 3, 4], &[3, 4], &[1, 2]),
            reassignment("foo", 5, &[1, 2, 3, 4], &[3, 4], &[1, 2]),
        ];
        let proposed = BTreeMap::from([
            (tp("foo", 0), vec![1, 2, 5]),
            (tp("foo", 2), vec![3, 4]),
            (tp("foo", 3), vec![5, 6]),
            (tp("foo", 4), vec![3]),
            (tp("foo", 5), vec![3, 4, 5, 6]),
            (tp("bar", 0), vec![1, 2, 3]),
        ]);
        let current = BTreeMap::from([
            (tp("foo", 0), vec![1, 2, 3, 4]),
            (tp("foo", 1), vec![4, 5, 6, 7, 8]),
            (tp("foo", 2), vec![1, 2, 3, 4]),
            (tp("foo", 3), vec![1, 2, 3, 4]),
            (tp("foo", 4), vec![1, 2, 3, 4]),
            (tp("foo", 5), vec![1, 2, 3, 4]),
            (tp("bar", 0), vec![2, 3, 4]),
            (tp("baz", 0), vec![1, 2, 3]),
        ]);
        let moves = move_map(&ongoing, &proposed, &current);
        let mv = |sources: &[i32], destinations: &[i32]| PartitionMove {
            sources: sources.iter().copied().collect(),
            destinations: destinations.iter().copied().collect(),
        };
        assert_eq!(
            moves,
            BTreeMap::from([
                (tp("foo", 0), mv(&[1, 2, 3], &[5])),
                (tp("foo", 1), mv(&[4, 5, 6], &[7, 8])),
                (tp("foo", 2), mv(&[1, 2], &[3, 4])),
                (tp("foo", 3), mv(&[1, 2], &[5, 6])),
                (tp("foo", 4), mv(&[1, 2], &[3])),
                (tp("foo", 5), mv(&[1, 2], &[3, 4, 5, 6])),
                (tp("bar", 0), mv(&[2, 3, 4], &[1])),
            ])
        );
        let throttles = topic_throttles(&moves);
        assert_eq!(
            throttles["foo"],
            (
                "0:1,0:2,0:3,1:4,1:5,1:6,2:1,2:2,3:1,3:2,4:1,4:2,5:1,5:2".to_owned(),
                "0:5,1:7,1:8,2:3,2:4,3:5,3:6,4:3,5:3,5:4,5:5,5:6".to_owned()
            )
        );
        assert_eq!(
            throttles["bar"],
            ("0:2,0:3,0:4".to_owned(), "0:1".to_owned())
        );
        assert_eq!(throttles.len(), 2, "baz does not move");
        assert_eq!(
            reassigning_brokers(&moves),
            BTreeSet::from([1, 2, 3, 4, 5, 6, 7, 8])
        );
        // Partitions sort by index, not as text (Kafka's TreeSet<String> would put 10:1 before 2:1).
        let wide = move_map(
            &[],
            &BTreeMap::from([(tp("t", 10), vec![2]), (tp("t", 2), vec![2])]),
            &BTreeMap::from([(tp("t", 10), vec![1]), (tp("t", 2), vec![1])]),
        );
        assert_eq!(
            topic_throttles(&wide)["t"],
            ("2:1,10:1".to_owned(), "2:2,10:2".to_owned())
        );
    }

    /// Kafka's testPartitionReassignStatesToString, and the line for a partition done on other replicas.
    #[test]
    fn status_lines_are_kafkas() {
        let state = |current: &[i32], target: &[i32], done| PartitionState {
            current: current.to_vec(),
            target: target.to_vec(),
            done,
        };
        let states = BTreeMap::from([
            (tp("foo", 0), state(&[1, 2, 3], &[1, 2, 3], true)),
            (tp("foo", 1), state(&[1, 2, 3], &[1, 2, 4], false)),
            (tp("bar", 0), state(&[1, 2, 3], &[1, 2, 4], false)),
        ]);
        assert_eq!(
            status_text(&states),
            "Status of partition reassignment:\n\
             Reassignment of partition bar-0 is still in progress.\n\
             Reassignment of partition foo-0 is completed.\n\
             Reassignment of partition foo-1 is still in progress."
        );
        let cancelled = state(&[1, 2], &[3, 4], true);
        assert_eq!(
            cancelled.line(&tp("t", 0)),
            "There is no active reassignment of partition t-0, but replica set is 1,2 rather than 3,4."
        );
        assert_eq!(
            (
                cancelled.label(),
                states[&tp("foo", 0)].label(),
                states[&tp("foo", 1)].label()
            ),
            ("different", "completed", "in_progress")
        );
        assert!(!cancelled.completed());
    }

    /// Kafka's testCurReassignmentsToString.
    #[test]
    fn list_lines_are_kafkas() {
        assert_eq!(list_text(&[]), "No partition reassignments found.");
        let ongoing = vec![
            reassignment("foo", 1, &[1, 2, 3], &[4, 5], &[1, 2]),
            reassignment("foo", 0, &[0, 1, 2], &[4], &[]),
            reassignment("bar", 0, &[2, 3, 0], &[], &[0]),
        ];
        assert_eq!(
            list_text(&ongoing),
            "Current partition reassignments:\n\
             bar-0: replicas: 2,3,0. removing: 0.\n\
             foo-0: replicas: 0,1,2. adding: 4.\n\
             foo-1: replicas: 1,2,3. adding: 4,5. removing: 1,2."
        );
    }
}
