//! `sluice log-dirs describe`: what Kafka's `kafka-log-dirs.sh --describe` prints (`LogDirsCommand`): two status
//! lines, then one JSON object `{"brokers":[{"broker":N,"logDirs":[{"logDir":...,"error":...,"partitions":[...]}]}],
//! "version":1}` with each partition's size, offset lag and whether it is the future replica of a move in
//! progress. DescribeLogDirs is sent to each broker (every broker of the cluster unless `--broker-list` names some),
//! asking for all partitions; `--topic-list` filters the answer, as Kafka's tool does. `--output json` prints the
//! JSON object alone.

use anyhow::bail;
use clap::{Args, Subcommand};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
use kafka_protocol::ResponseError as ErrorCode;
use serde_json::{json, Value};
use sluice_client::Admin;

use super::{print_json, GlobalArgs, UsageError};

pub(crate) const EXAMPLES: &str = "Examples:
  sluice log-dirs describe
  sluice log-dirs describe --broker-list 1,2 --topic-list orders,payments";

/// `sluice log-dirs`.
#[derive(Debug, Args)]
pub(crate) struct LogDirsArgs {
    #[command(subcommand)]
    command: LogDirsCommand,
    #[command(flatten)]
    global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
enum LogDirsCommand {
    /// Describe the log directories of brokers (DescribeLogDirs), as `kafka-log-dirs.sh --describe`.
    Describe(DescribeArgs),
}

#[derive(Debug, Args)]
struct DescribeArgs {
    /// Comma-separated broker ids to query (default: every broker).
    #[arg(long, value_name = "ID,ID")]
    broker_list: Option<String>,
    /// Comma-separated topics to report (default: every topic).
    #[arg(long, value_name = "TOPIC,TOPIC")]
    topic_list: Option<String>,
}

pub(crate) async fn run(args: LogDirsArgs) -> anyhow::Result<()> {
    let LogDirsCommand::Describe(describe) = args.command;
    let topics: Vec<String> = describe
        .topic_list
        .as_deref()
        .map(|l| {
            l.split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let wanted = match describe.broker_list.as_deref() {
        Some(list) => Some(parse_broker_list(list).map_err(UsageError)?),
        None => None,
    };
    let admin = Admin::new(args.global.client_config()).await?;
    let cluster = admin.describe_cluster(false).await?;
    let known: Vec<i32> = cluster.brokers.iter().map(|b| b.info.node_id).collect();
    let brokers = match wanted {
        Some(ids) => {
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| !known.contains(id))
                .map(i32::to_string)
                .collect();
            if !missing.is_empty() {
                bail!(
                    "ERROR: The given brokers do not exist from --broker-list: {}. Current existent brokers: {}",
                    missing.join(","),
                    join(&known)
                );
            }
            ids
        }
        None => known,
    };
    let json_only = args.global.json();
    if !json_only {
        println!("Querying brokers for log directories information");
    }
    let mut answers = Vec::with_capacity(brokers.len());
    for &broker in &brokers {
        // A null topic list: every partition (Kafka's tool asks for all and filters).
        let request = DescribeLogDirsRequest::default().with_topics(None);
        let response: DescribeLogDirsResponse =
            admin.client().send_to(broker, &request, None).await?;
        if response.error_code != 0 {
            bail!(
                "broker {broker}: DescribeLogDirs failed with error code {}",
                response.error_code
            );
        }
        answers.push((broker, response));
    }
    if !json_only {
        println!(
            "Received log directory information from brokers {}",
            join(&brokers)
        );
    }
    print_json(&to_json(&answers, &topics));
    Ok(())
}

fn join(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// `--broker-list`: broker ids, comma-separated.
fn parse_broker_list(list: &str) -> Result<Vec<i32>, String> {
    let ids = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i32>()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| format!("--broker-list: {s:?} is not a broker id"))
        })
        .collect::<Result<Vec<i32>, String>>()?;
    if ids.is_empty() {
        return Err("--broker-list is empty".to_owned());
    }
    Ok(ids)
}

/// The Java exception class Kafka's tool prints for a log directory's error code.
fn error_class(code: i16) -> Value {
    match code {
        0 => Value::Null,
        c if c == ErrorCode::KafkaStorageError.code() => {
            json!("org.apache.kafka.common.errors.KafkaStorageException")
        }
        c => json!(format!("error code {c}")),
    }
}

/// Kafka's `LogDirsCommand.formatAsJson`.
fn to_json(answers: &[(i32, DescribeLogDirsResponse)], topics: &[String]) -> Value {
    let brokers: Vec<Value> = answers
        .iter()
        .map(|(broker, response)| {
            let dirs: Vec<Value> = response
                .results
                .iter()
                .map(|dir| {
                    let partitions: Vec<Value> = dir
                        .topics
                        .iter()
                        .filter(|t| topics.is_empty() || topics.iter().any(|n| n == t.name.0.as_str()))
                        .flat_map(|t| {
                            t.partitions.iter().map(move |p| {
                                json!({
                                    "partition": format!("{}-{}", t.name.0.as_str(), p.partition_index),
                                    "size": p.partition_size,
                                    "offsetLag": p.offset_lag,
                                    "isFuture": p.is_future_key,
                                })
                            })
                        })
                        .collect();
                    json!({
                        "logDir": dir.log_dir.as_str(),
                        "error": error_class(dir.error_code),
                        "partitions": partitions,
                    })
                })
                .collect();
            json!({ "broker": broker, "logDirs": dirs })
        })
        .collect();
    json!({ "brokers": brokers, "version": 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn the_json_is_kafkas_and_the_topic_list_filters() {
        let topic = |name: &str, future: bool| {
            DescribeLogDirsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                .with_partitions(vec![DescribeLogDirsPartition::default()
                    .with_partition_index(0)
                    .with_partition_size(42)
                    .with_offset_lag(if future { 7 } else { 0 })
                    .with_is_future_key(future)])
        };
        let response = DescribeLogDirsResponse::default().with_results(vec![
            DescribeLogDirsResult::default()
                .with_log_dir(StrBytes::from_static_str("/a"))
                .with_topics(vec![topic("orders", false), topic("other", false)]),
            DescribeLogDirsResult::default()
                .with_log_dir(StrBytes::from_static_str("/b"))
                .with_topics(vec![topic("orders", true)]),
            DescribeLogDirsResult::default()
                .with_log_dir(StrBytes::from_static_str("/c"))
                .with_error_code(ErrorCode::KafkaStorageError.code()),
        ]);
        let out = to_json(&[(1, response)], &["orders".to_owned()]);
        assert_eq!(
            out,
            json!({"brokers": [{"broker": 1, "logDirs": [
                {"logDir": "/a", "error": null, "partitions": [
                    {"partition": "orders-0", "size": 42, "offsetLag": 0, "isFuture": false}]},
                {"logDir": "/b", "error": null, "partitions": [
                    {"partition": "orders-0", "size": 42, "offsetLag": 7, "isFuture": true}]},
                {"logDir": "/c", "error": "org.apache.kafka.common.errors.KafkaStorageException", "partitions": []},
            ]}], "version": 1})
        );
        assert_eq!(parse_broker_list("1, 2"), Ok(vec![1, 2]));
        assert!(parse_broker_list("x").is_err());
        assert!(parse_broker_list("").is_err());
    }
}
