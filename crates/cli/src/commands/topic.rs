//! `sluice topic create|list|describe|alter|delete`: topic administration (Kafka's `kafka-topics.sh`).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use sluice_client::admin::{NewTopic, OffsetSpec};
use sluice_client::{Admin, TopicInfo};

use super::{parse_key_value, print_json, print_table, GlobalArgs};

pub(crate) const EXAMPLES: &str = "Examples:
  sluice topic create orders --partitions 6 --config retention.ms=86400000
  sluice topic list
  sluice topic describe orders
  sluice topic alter orders --partitions 12
  sluice topic delete orders
  sluice topic describe --output json";

/// `sluice topic`.
#[derive(Debug, Args)]
pub(crate) struct TopicArgs {
    #[command(subcommand)]
    command: TopicCommand,
    #[command(flatten)]
    global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions (broker default `num.partitions` if omitted).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor (broker default if omitted).
        #[arg(long)]
        replication_factor: Option<i16>,
        /// A topic config `KEY=VALUE` (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Succeed if the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics.
    List {
        /// Include internal topics (`__consumer_offsets`).
        #[arg(long)]
        internal: bool,
    },
    /// Describe partitions (leader, replicas, ISR, offsets) of one topic or all.
    Describe {
        /// Topic name (all topics if omitted).
        name: Option<String>,
    },
    /// Grow a topic's partition count.
    Alter {
        /// Topic name.
        name: String,
        /// The new (larger) partition count.
        #[arg(long)]
        partitions: i32,
    },
    /// Delete a topic.
    Delete {
        /// Topic name.
        name: String,
    },
}

pub(crate) async fn run(args: TopicArgs) -> anyhow::Result<()> {
    let global = args.global;
    let admin = Admin::new(global.client_config()).await?;
    match args.command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            let result = admin
                .create_topic(NewTopic {
                    name: name.clone(),
                    num_partitions: partitions.unwrap_or(-1),
                    replication_factor: replication_factor.unwrap_or(-1),
                    configs,
                })
                .await;
            let created = match result {
                Ok(()) => true,
                Err(e)
                    if if_not_exists
                        && e.kafka_error()
                            == Some(sluice_client::error::KafkaError::TopicAlreadyExists) =>
                {
                    false
                }
                Err(e) => return Err(e.into()),
            };
            if global.json() {
                print_json(&json!({"topic": name, "created": created}));
            } else if created {
                println!("Created topic {name}.");
            } else {
                println!("Topic {name} already exists.");
            }
        }
        TopicCommand::List { internal } => {
            let topics: Vec<TopicInfo> = admin
                .list_topics()
                .await?
                .into_iter()
                .filter(|t| internal || !t.is_internal)
                .collect();
            if global.json() {
                let list: Vec<_> = topics
                    .iter()
                    .map(|t| json!({"name": t.name, "partitions": t.partitions.len(), "internal": t.is_internal}))
                    .collect();
                print_json(&json!(list));
            } else {
                for t in topics {
                    println!("{}", t.name);
                }
            }
        }
        TopicCommand::Describe { name } => {
            let topics = match name {
                Some(name) => vec![admin.describe_topic(&name).await?],
                None => admin
                    .list_topics()
                    .await?
                    .into_iter()
                    .filter(|t| !t.is_internal)
                    .collect(),
            };
            describe(&admin, &topics, global.json()).await?;
        }
        TopicCommand::Alter { name, partitions } => {
            let current = admin.describe_topic(&name).await?.partitions.len();
            if usize::try_from(partitions).unwrap_or(0) <= current {
                bail!("topic {name} has {current} partitions; --partitions must be larger (partitions can only be added)");
            }
            admin.create_partitions(&name, partitions).await?;
            if global.json() {
                print_json(&json!({"topic": name, "partitions": partitions}));
            } else {
                println!("Topic {name} now has {partitions} partitions.");
            }
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            if global.json() {
                print_json(&json!({"topic": name, "deleted": true}));
            } else {
                println!("Deleted topic {name}.");
            }
        }
    }
    Ok(())
}

async fn describe(admin: &Admin, topics: &[TopicInfo], json_out: bool) -> anyhow::Result<()> {
    let mut queries = Vec::new();
    for t in topics {
        for p in &t.partitions {
            queries.push((t.name.clone(), p.partition, OffsetSpec::Earliest));
        }
    }
    let earliest = admin
        .list_offsets(&queries)
        .await
        .context("listing offsets")?;
    for q in &mut queries {
        q.2 = OffsetSpec::Latest;
    }
    let latest = admin
        .list_offsets(&queries)
        .await
        .context("listing offsets")?;
    let offset = |map: &std::collections::BTreeMap<
        _,
        sluice_client::Result<sluice_client::admin::ListedOffset>,
    >,
                  topic: &str,
                  p: i32| {
        map.get(&(topic.to_owned(), p))
            .and_then(|r| r.as_ref().ok())
            .map_or(-1, |o| o.offset)
    };
    let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    if json_out {
        let list: Vec<_> = topics
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "topic_id": t.topic_id.to_string(),
                    "internal": t.is_internal,
                    "partitions": t.partitions.iter().map(|p| json!({
                        "partition": p.partition,
                        "leader": p.leader,
                        "leader_epoch": p.leader_epoch,
                        "replicas": p.replicas,
                        "isr": p.isr,
                        "earliest_offset": offset(&earliest, &t.name, p.partition),
                        "latest_offset": offset(&latest, &t.name, p.partition),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&json!(list));
        return Ok(());
    }
    for (i, t) in topics.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!(
            "Topic: {}  TopicId: {}  Partitions: {}",
            t.name,
            t.topic_id,
            t.partitions.len()
        );
        let rows: Vec<Vec<String>> = t
            .partitions
            .iter()
            .map(|p| {
                vec![
                    p.partition.to_string(),
                    p.leader.to_string(),
                    ids(&p.replicas),
                    ids(&p.isr),
                    offset(&earliest, &t.name, p.partition).to_string(),
                    offset(&latest, &t.name, p.partition).to_string(),
                ]
            })
            .collect();
        print_table(
            &[
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "ISR",
                "EARLIEST",
                "LATEST",
            ],
            &rows,
        );
    }
    Ok(())
}
