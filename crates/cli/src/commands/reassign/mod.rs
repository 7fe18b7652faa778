//! `sluice reassign generate|execute|verify|cancel|list`: moving partitions between brokers, as Kafka's
//! `kafka-reassign-partitions.sh` (`ReassignPartitionsCommand`) does, with its JSON files and its messages, over
//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455), Metadata, DescribeCluster and, for
//! throttles, DescribeConfigs and IncrementalAlterConfigs. The files, the placement and the texts are in
//! [`plan`]; this module talks to the cluster.
//!
//! Where it differs from Kafka's tool: `verify --wait` polls until the partitions have moved (showing how many
//! have); a `--broker-list` naming an unknown broker is an error (Kafka drops it silently); `generate` starts
//! each topic's placement at a point derived from its name rather than at random; `execute --throttle` sets the
//! brokers' rates before the topics' replica lists (so a broker that refuses dynamic configs, as Sluice does,
//! leaves nothing half set); clearing throttles deletes only the keys that are set; log directories other than
//! `any` are refused.

mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sluice_client::admin::{ConfigChange, ConfigResourceType, PartitionReassignment};
use sluice_client::consumer::TopicPartition;
use sluice_client::{Admin, ClientError};

use self::plan::{join_ids, partition_name, Broker, PartitionState};
use super::{print_json, GlobalArgs, UsageError};

pub(crate) const EXAMPLES: &str = "Examples:
  echo '{\"topics\":[{\"topic\":\"orders\"}],\"version\":1}' > topics.json
  sluice reassign generate --topics-to-move-json-file topics.json --broker-list 1,2,3
  sluice reassign execute --reassignment-json-file plan.json
  sluice reassign execute --reassignment-json-file plan.json --additional --throttle 50000000
  sluice reassign verify --reassignment-json-file plan.json --wait
  sluice reassign cancel --reassignment-json-file plan.json
  sluice reassign list";

/// Broker configs that throttle replication (Kafka's `BROKER_LEVEL_THROTTLES`); `execute --throttle` sets the
/// first two, clearing removes all three.
const LEADER_RATE: &str = "leader.replication.throttled.rate";
const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
const BROKER_THROTTLES: [&str; 3] = [
    LEADER_RATE,
    FOLLOWER_RATE,
    "replica.alter.log.dirs.io.max.bytes.per.second",
];
/// Topic configs naming the throttled replicas (`partition:broker,...`; Kafka's `TOPIC_LEVEL_THROTTLES`).
const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";
const TOPIC_THROTTLES: [&str; 2] = [LEADER_REPLICAS, FOLLOWER_REPLICAS];

/// DescribeConfigs' `ConfigSource` of a key set on the topic (TOPIC_CONFIG) and on one broker
/// (DYNAMIC_BROKER_CONFIG): the throttles a clear removes.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;

const CANNOT_EXECUTE_BECAUSE_OF_EXISTING: &str = "Cannot execute because there is an existing partition assignment.  Use --additional to override this and create a new partition assignment in addition to the existing one. The --additional flag can also be used to change the throttle by resubmitting the current reassignment.";
const YOU_MUST_RUN_VERIFY: &str = "Warning: You must run --verify periodically, until the reassignment completes, to ensure the throttle is removed.";

/// How often `verify --wait` asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long `verify --wait` lets a partition that is no longer moving show other replicas than its target before
/// reporting it: the controller answers ListPartitionReassignments, the metadata comes from a broker that may not
/// have applied the last change yet.
const METADATA_GRACE: Duration = Duration::from_secs(5);

/// `sluice reassign`.
#[derive(Debug, Args)]
pub(crate) struct ReassignArgs {
    #[command(subcommand)]
    command: ReassignCommand,
    #[command(flatten)]
    global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
enum ReassignCommand {
    /// Propose a plan spreading topics' partitions over brokers (prints the current and the proposed
    /// assignment; changes nothing).
    Generate(GenerateArgs),
    /// Start the reassignments of a plan (prints the current assignment first, to roll back with).
    Execute(ExecuteArgs),
    /// Show whether each partition of a plan has moved; once no reassignment runs, remove the throttles.
    Verify(VerifyArgs),
    /// Cancel the reassignments of a plan that are still running and remove the throttles.
    Cancel(CancelArgs),
    /// List the partition reassignments in progress.
    List,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// The topics to move: `{"topics":[{"topic":"orders"}],"version":1}`.
    #[arg(long, value_name = "FILE")]
    topics_to_move_json_file: PathBuf,
    /// The brokers to place the replicas on, comma-separated ids (`1,2,3`).
    #[arg(long, value_name = "ID,ID,...")]
    broker_list: String,
    /// Ignore the brokers' racks (`broker.rack`).
    #[arg(long)]
    disable_rack_aware: bool,
}

#[derive(Debug, Args)]
struct ExecuteArgs {
    /// The plan: `{"version":1,"partitions":[{"topic":"orders","partition":0,"replicas":[1,2]}]}`.
    #[arg(long, value_name = "FILE")]
    reassignment_json_file: PathBuf,
    /// Throttle the moving replicas' replication to this many bytes/s per broker (broker configs
    /// leader/follower.replication.throttled.rate, topic configs leader/follower.replication.throttled.replicas).
    #[arg(long, value_name = "BYTES_PER_SEC")]
    throttle: Option<u64>,
    /// Run even though other reassignments are in progress (or resubmit one, to change its throttle).
    #[arg(long)]
    additional: bool,
    /// Refuse any move that changes a partition's replication factor (KIP-860; the controller checks it).
    #[arg(long)]
    disallow_replication_factor_change: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The plan given to `execute`.
    #[arg(long, value_name = "FILE")]
    reassignment_json_file: PathBuf,
    /// Leave the throttles in place once the reassignments are done.
    #[arg(long)]
    preserve_throttles: bool,
    /// Poll until every partition of the plan has moved, showing progress on stderr.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up (exit status 1) after this many milliseconds.
    #[arg(long, value_name = "MS", requires = "wait")]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Args)]
struct CancelArgs {
    /// The plan given to `execute`.
    #[arg(long, value_name = "FILE")]
    reassignment_json_file: PathBuf,
    /// Leave the throttles in place.
    #[arg(long)]
    preserve_throttles: bool,
}

pub(crate) async fn run(args: ReassignArgs) -> anyhow::Result<()> {
    let global = args.global;
    match args.command {
        ReassignCommand::Generate(g) => generate(g, &global).await,
        ReassignCommand::Execute(e) => execute(e, &global).await,
        ReassignCommand::Verify(v) => verify(v, &global).await,
        ReassignCommand::Cancel(c) => cancel(c, &global).await,
        ReassignCommand::List => list(&global).await,
    }
}

/// A file's text; an unreadable file is a usage error naming the option.
fn read_input(path: &Path, option: &str) -> Result<String, UsageError> {
    std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read {option} {}: {e}", path.display())))
}

/// The plan in `--reassignment-json-file`; any fault in it is a usage error naming the file.
fn load_reassignment(path: &Path) -> Result<BTreeMap<TopicPartition, Vec<i32>>, UsageError> {
    let text = read_input(path, "--reassignment-json-file")?;
    plan::parse_reassignment(&text).map_err(|e| UsageError(format!("{}: {e}", path.display())))
}

/// `s` when `n` is not 1.
fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `topic-partition` for each partition.
fn names<'a>(partitions: impl IntoIterator<Item = &'a TopicPartition>) -> Vec<String> {
    partitions.into_iter().map(partition_name).collect()
}

/// The replicas of each partition of `topic` (fresh Metadata), `None` if the topic does not exist.
async fn topic_replicas(
    admin: &Admin,
    topic: &str,
) -> anyhow::Result<Option<Vec<(i32, Vec<i32>)>>> {
    match admin.describe_topic(topic).await {
        Ok(info) => Ok(Some(
            info.partitions
                .into_iter()
                .map(|p| (p.partition, p.replicas))
                .collect(),
        )),
        Err(ClientError::UnknownTopic(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The replicas of these partitions now; a topic or partition that does not exist is an error naming it, in
/// Kafka's words (`getReplicaAssignmentForPartitions`).
async fn current_replicas(
    admin: &Admin,
    partitions: &BTreeMap<TopicPartition, Vec<i32>>,
) -> anyhow::Result<BTreeMap<TopicPartition, Vec<i32>>> {
    let topics: BTreeSet<&str> = partitions.keys().map(|(t, _)| t.as_str()).collect();
    let mut current = BTreeMap::new();
    for topic in topics {
        let found = topic_replicas(admin, topic)
            .await?
            .ok_or_else(|| anyhow!("Topic {topic} not found."))?;
        for (partition, replicas) in found {
            let tp = (topic.to_owned(), partition);
            if partitions.contains_key(&tp) {
                current.insert(tp, replicas);
            }
        }
    }
    let missing = names(partitions.keys().filter(|tp| !current.contains_key(*tp)));
    if !missing.is_empty() {
        bail!("Unable to find partition: {}", missing.join(", "));
    }
    Ok(current)
}

/// The ids of the cluster's (unfenced) brokers.
async fn broker_ids(admin: &Admin) -> anyhow::Result<BTreeSet<i32>> {
    Ok(admin
        .describe_cluster(false)
        .await?
        .brokers
        .iter()
        .map(|b| b.info.node_id)
        .collect())
}

/// `sluice reassign generate`.
async fn generate(args: GenerateArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let text = read_input(&args.topics_to_move_json_file, "--topics-to-move-json-file")?;
    let topics = plan::parse_topics(&text)
        .map_err(|e| UsageError(format!("{}: {e}", args.topics_to_move_json_file.display())))?;
    let wanted = plan::parse_broker_list(&args.broker_list).map_err(UsageError)?;
    let admin = Admin::new(global.client_config()).await?;
    let cluster = admin.describe_cluster(false).await?;
    let brokers = wanted
        .iter()
        .map(|id| {
            let b = cluster
                .brokers
                .iter()
                .find(|b| b.info.node_id == *id)
                .ok_or_else(|| anyhow!("Unknown broker id {id}"))?;
            Ok(Broker {
                id: *id,
                rack: b.info.rack.clone().filter(|_| !args.disable_rack_aware),
            })
        })
        .collect::<anyhow::Result<Vec<Broker>>>()?;
    let mut current = BTreeMap::new();
    for topic in &topics {
        let partitions = topic_replicas(&admin, topic)
            .await?
            .ok_or_else(|| anyhow!("Topic {topic} not found."))?;
        current.extend(
            partitions
                .into_iter()
                .map(|(partition, replicas)| ((topic.clone(), partition), replicas)),
        );
    }
    let proposed = plan::propose(&current, &brokers).map_err(|e| anyhow!(e))?;
    let (current, proposed) = (
        plan::format_reassignment(&current),
        plan::format_reassignment(&proposed),
    );
    if global.json() {
        println!("{{\"current\":{current},\"proposed\":{proposed}}}");
    } else {
        println!("Current partition replica assignment\n{current}\n");
        println!("Proposed partition reassignment configuration\n{proposed}");
    }
    Ok(())
}

/// `sluice reassign execute`.
async fn execute(args: ExecuteArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let proposed = load_reassignment(&args.reassignment_json_file)?;
    let admin = Admin::new(global.client_config()).await?;
    let live = broker_ids(&admin).await?;
    if let Some(unknown) = proposed.values().flatten().find(|b| !live.contains(b)) {
        bail!("Unknown broker id {unknown}");
    }
    let current = current_replicas(&admin, &proposed).await?;
    let ongoing = admin.list_partition_reassignments(None).await?;
    if !args.additional && !ongoing.is_empty() {
        bail!(CANNOT_EXECUTE_BECAUSE_OF_EXISTING);
    }
    let rollback = plan::format_reassignment(&current);
    if !global.json() {
        println!("Current partition replica assignment\n\n{rollback}\n\nSave this to use as the --reassignment-json-file option during rollback");
    }
    if let Some(rate) = args.throttle {
        if !global.json() {
            println!("{YOU_MUST_RUN_VERIFY}");
        }
        let moves = plan::move_map(&ongoing, &proposed, &current);
        set_throttles(&admin, &moves, rate).await?;
        if !global.json() {
            println!("The inter-broker throttle limit was set to {rate} B/s");
        }
    }
    let request: Vec<(TopicPartition, Option<Vec<i32>>)> = proposed
        .iter()
        .map(|(tp, replicas)| (tp.clone(), Some(replicas.clone())))
        .collect();
    let (results, errors) =
        submit(&admin, &request, !args.disallow_replication_factor_change).await?;
    if !errors.is_empty() {
        let started = names(results.iter().filter(|(_, r)| r.is_ok()).map(|(tp, _)| tp));
        let others = if started.is_empty() {
            String::new()
        } else {
            format!(" (started: {})", started.join(","))
        };
        bail!(
            "Error reassigning partition(s): {}{others}",
            errors.join("; ")
        );
    }
    let started = names(proposed.keys());
    if global.json() {
        println!(
            "{{\"current\":{rollback},\"started\":{},\"throttle\":{}}}",
            json!(started),
            json!(args.throttle)
        );
    } else {
        println!(
            "Successfully started partition reassignment{} for {}",
            plural(started.len()),
            started.join(",")
        );
    }
    Ok(())
}

/// Sends AlterPartitionReassignments (within the client's request timeout); returns the per-partition results
/// and `t-0: error` for every partition that failed, in order.
async fn submit(
    admin: &Admin,
    request: &[(TopicPartition, Option<Vec<i32>>)],
    allow_replication_factor_change: bool,
) -> anyhow::Result<(
    Vec<(TopicPartition, sluice_client::Result<()>)>,
    Vec<String>,
)> {
    let timeout = Duration::from_millis(admin.client().config().request_timeout_ms);
    let results = admin
        .alter_partition_reassignments_with(request, timeout, allow_replication_factor_change)
        .await?;
    let errors = results
        .iter()
        .filter_map(|(tp, r)| {
            r.as_ref()
                .err()
                .map(|e| format!("{}: {e}", partition_name(tp)))
        })
        .collect();
    Ok((results, errors))
}

/// Sets the replication throttles of `moves`: the rate on every broker involved, then the throttled replicas of
/// every topic (Kafka sets the topics first; the brokers first means a broker that refuses dynamic configs leaves
/// no topic config behind).
async fn set_throttles(
    admin: &Admin,
    moves: &BTreeMap<TopicPartition, plan::PartitionMove>,
    rate: u64,
) -> anyhow::Result<()> {
    for broker in plan::reassigning_brokers(moves) {
        let rates = [
            ConfigChange::Set(LEADER_RATE.to_owned(), rate.to_string()),
            ConfigChange::Set(FOLLOWER_RATE.to_owned(), rate.to_string()),
        ];
        admin
            .alter_configs(ConfigResourceType::Broker, &broker.to_string(), &rates)
            .await
            .with_context(|| format!("setting the replication throttle of broker {broker}"))?;
    }
    for (topic, (leader, follower)) in plan::topic_throttles(moves) {
        let replicas = [
            ConfigChange::Set(LEADER_REPLICAS.to_owned(), leader),
            ConfigChange::Set(FOLLOWER_REPLICAS.to_owned(), follower),
        ];
        admin
            .alter_configs(ConfigResourceType::Topic, &topic, &replicas)
            .await
            .with_context(|| format!("setting the throttled replicas of topic {topic}"))?;
    }
    Ok(())
}

/// Removes every throttle Kafka's `clearAllThrottles` removes: the rates on every broker of the cluster and the
/// throttled replicas of the plan's topics, printing Kafka's two lines unless `quiet`. Only keys that are set
/// are deleted (a broker or topic without them, or that no longer exists, is left alone); a broker that cannot be
/// reached is a warning on stderr, not a failure.
async fn clear_throttles(
    admin: &Admin,
    targets: &BTreeMap<TopicPartition, Vec<i32>>,
    quiet: bool,
) -> anyhow::Result<()> {
    let live = broker_ids(admin).await?;
    if !quiet {
        let mut brokers = live.clone();
        brokers.extend(targets.values().flatten());
        println!(
            "Clearing broker-level throttles on broker{} {}",
            plural(brokers.len()),
            join_ids(&brokers)
        );
    }
    for broker in &live {
        let removed = remove_set_keys(
            admin,
            ConfigResourceType::Broker,
            &broker.to_string(),
            &BROKER_THROTTLES,
            SOURCE_DYNAMIC_BROKER,
        )
        .await;
        match removed {
            Ok(()) => {}
            // A registered broker that is down: the others are still cleared, and a later verify clears it.
            Err(
                e @ (ClientError::Connection { .. }
                | ClientError::Timeout { .. }
                | ClientError::Unreachable { .. }),
            ) => eprintln!(
                "sluice: warning: cannot clear the replication throttle of broker {broker} ({e}); run verify again once it is reachable"
            ),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("clearing the replication throttle of broker {broker}")))
            }
        }
    }
    let topics: BTreeSet<&str> = targets.keys().map(|(t, _)| t.as_str()).collect();
    if !quiet {
        let topics: Vec<&str> = topics.iter().copied().collect();
        println!(
            "Clearing topic-level throttles on topic{} {}",
            plural(topics.len()),
            topics.join(",")
        );
    }
    for topic in topics {
        let removed = remove_set_keys(
            admin,
            ConfigResourceType::Topic,
            topic,
            &TOPIC_THROTTLES,
            SOURCE_TOPIC,
        )
        .await;
        match removed {
            Err(e)
                if e.kafka_error()
                    == Some(sluice_client::error::KafkaError::UnknownTopicOrPartition) => {}
            other => other
                .with_context(|| format!("clearing the throttled replicas of topic {topic}"))?,
        }
    }
    Ok(())
}

/// Deletes those of `keys` that DescribeConfigs reports set with `source`.
async fn remove_set_keys(
    admin: &Admin,
    kind: ConfigResourceType,
    name: &str,
    keys: &[&str],
    source: i8,
) -> sluice_client::Result<()> {
    let set: Vec<ConfigChange> = admin
        .describe_configs(kind, name)
        .await?
        .into_iter()
        .filter(|e| e.source == source && keys.contains(&e.name.as_str()))
        .map(|e| ConfigChange::Delete(e.name))
        .collect();
    if set.is_empty() {
        return Ok(());
    }
    admin.alter_configs(kind, name, &set).await
}

/// Where each partition of `targets` stands (Kafka's `findPartitionReassignmentStates`): in progress when
/// ListPartitionReassignments lists it, else done on the replicas the metadata shows. Also whether any
/// reassignment at all is in progress (one not in the plan too), which keeps the throttles.
async fn partition_states(
    admin: &Admin,
    targets: &BTreeMap<TopicPartition, Vec<i32>>,
) -> anyhow::Result<(BTreeMap<TopicPartition, PartitionState>, bool)> {
    let ongoing = admin.list_partition_reassignments(None).await?;
    let running: BTreeMap<TopicPartition, &PartitionReassignment> = ongoing
        .iter()
        .map(|r| ((r.topic.clone(), r.partition), r))
        .collect();
    let topics: BTreeSet<&str> = targets
        .keys()
        .filter(|tp| !running.contains_key(*tp))
        .map(|(t, _)| t.as_str())
        .collect();
    let mut current: BTreeMap<TopicPartition, Vec<i32>> = BTreeMap::new();
    for topic in topics {
        for (partition, replicas) in topic_replicas(admin, topic).await?.unwrap_or_default() {
            current.insert((topic.to_owned(), partition), replicas);
        }
    }
    let states = targets
        .iter()
        .map(|(tp, target)| {
            let state = match running.get(tp) {
                Some(r) => PartitionState {
                    current: r.replicas.clone(),
                    target: target.clone(),
                    done: false,
                },
                None => PartitionState {
                    current: current.get(tp).cloned().unwrap_or_default(),
                    target: target.clone(),
                    done: true,
                },
            };
            (tp.clone(), state)
        })
        .collect();
    Ok((states, !ongoing.is_empty()))
}

/// What `verify --wait` shows while it waits: a bar on a terminal, else a line on stderr whenever the count of
/// completed partitions changes.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    shown: Option<usize>,
}

impl Progress {
    fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} partitions moved",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Progress {
            bar,
            total,
            shown: None,
        }
    }

    fn update(&mut self, completed: usize) {
        if self.shown == Some(completed) {
            return;
        }
        self.shown = Some(completed);
        match &self.bar {
            Some(bar) => bar.set_position(completed as u64),
            None => eprintln!(
                "Waiting for partition reassignments: {completed}/{} partitions complete",
                self.total
            ),
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `sluice reassign verify`.
async fn verify(args: VerifyArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let targets = load_reassignment(&args.reassignment_json_file)?;
    let admin = Admin::new(global.client_config()).await?;
    let started = Instant::now();
    let mut progress = args.wait.then(|| Progress::new(targets.len()));
    // Since when no partition of the plan has been moving (the metadata may lag behind the controller).
    let mut all_done_since: Option<Instant> = None;
    let (states, ongoing) = loop {
        let (states, ongoing) = partition_states(&admin, &targets).await?;
        let Some(progress) = progress.as_mut() else {
            break (states, ongoing);
        };
        let completed = states.values().filter(|s| s.completed()).count();
        progress.update(completed);
        if states.values().all(|s| s.done) {
            let since = *all_done_since.get_or_insert_with(Instant::now);
            if completed == states.len() || since.elapsed() >= METADATA_GRACE {
                break (states, ongoing);
            }
        } else {
            all_done_since = None;
        }
        if let Some(limit) = args.timeout_ms {
            if started.elapsed() >= Duration::from_millis(limit) {
                let moving = names(states.iter().filter(|(_, s)| !s.done).map(|(tp, _)| tp));
                bail!(
                    "gave up after {limit} ms: {completed}/{} partitions complete, still moving: {}",
                    states.len(),
                    moving.join(",")
                );
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    if let Some(progress) = progress {
        progress.finish();
    }
    let complete = states.values().all(|s| s.done);
    let clear = !ongoing && !args.preserve_throttles;
    if global.json() {
        let partitions: Vec<Value> = states
            .iter()
            .map(|((topic, partition), s)| {
                json!({
                    "topic": topic,
                    "partition": partition,
                    "state": s.label(),
                    "current_replicas": s.current,
                    "target_replicas": s.target,
                })
            })
            .collect();
        print_json(&json!({
            "partitions": partitions,
            "complete": complete,
            "throttles_cleared": clear,
        }));
    } else {
        println!("{}", plan::status_text(&states));
    }
    if clear {
        // Every throttle goes, as in Kafka: which brokers the earlier reassignments throttled is not known.
        clear_throttles(&admin, &targets, global.json()).await?;
    } else if complete && ongoing && !args.preserve_throttles && !global.json() {
        println!("Throttles are kept: other partition reassignments are still in progress.");
    }
    if args.wait {
        let different = names(
            states
                .iter()
                .filter(|(_, s)| !s.completed())
                .map(|(tp, _)| tp),
        );
        if !different.is_empty() {
            bail!(
                "no longer moving but not on their target replicas: {} (was the reassignment cancelled?)",
                different.join(",")
            );
        }
    }
    Ok(())
}

/// `sluice reassign cancel`.
async fn cancel(args: CancelArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let targets = load_reassignment(&args.reassignment_json_file)?;
    let admin = Admin::new(global.client_config()).await?;
    let partitions: Vec<TopicPartition> = targets.keys().cloned().collect();
    let running: Vec<TopicPartition> = admin
        .list_partition_reassignments(Some(&partitions))
        .await?
        .into_iter()
        .filter(|r| !r.adding_replicas.is_empty() || !r.removing_replicas.is_empty())
        .map(|r| (r.topic, r.partition))
        .collect();
    if !running.is_empty() {
        let request: Vec<(TopicPartition, Option<Vec<i32>>)> =
            running.iter().map(|tp| (tp.clone(), None)).collect();
        let (_, errors) = submit(&admin, &request, true).await?;
        if !errors.is_empty() {
            bail!(
                "Error cancelling partition reassignment{} for: {}",
                plural(errors.len()),
                errors.join("; ")
            );
        }
    }
    let cancelled = names(&running);
    if !global.json() {
        if cancelled.is_empty() {
            println!("None of the specified partition reassignments are active.");
        } else {
            println!(
                "Successfully cancelled partition reassignment{} for: {}",
                plural(cancelled.len()),
                cancelled.join(",")
            );
        }
    }
    if !args.preserve_throttles {
        clear_throttles(&admin, &targets, global.json()).await?;
    }
    if global.json() {
        print_json(&json!({
            "cancelled": cancelled,
            "throttles_cleared": !args.preserve_throttles,
        }));
    }
    Ok(())
}

/// `sluice reassign list` (Kafka's `--list`).
async fn list(global: &GlobalArgs) -> anyhow::Result<()> {
    let admin = Admin::new(global.client_config()).await?;
    let ongoing = admin.list_partition_reassignments(None).await?;
    if global.json() {
        let reassignments: Vec<Value> = ongoing
            .iter()
            .map(|r| {
                json!({
                    "topic": r.topic,
                    "partition": r.partition,
                    "replicas": r.replicas,
                    "adding_replicas": r.adding_replicas,
                    "removing_replicas": r.removing_replicas,
                })
            })
            .collect();
        print_json(&json!({ "reassignments": reassignments }));
    } else {
        println!("{}", plan::list_text(&ongoing));
    }
    Ok(())
}
