//! The client-side tools of the `sluice` binary (`topic`, `produce`, `consume`, `config`, `cluster`, `group`,
//! `reassign`, `log-dirs`, `bench`), all built on `sluice-client`. Each runs on a current-thread-plus-workers tokio runtime,
//! prints text or JSON (`--output`), and turns any failure into one line on stderr and a non-zero exit status: 2
//! for a usage error (from the argument parser, or a [`UsageError`] such as an unreadable input file), 1 otherwise.

use std::fmt;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use sluice_client::error::KafkaError;
use sluice_client::{ClientConfig, ClientError};

pub(crate) mod bench;
pub(crate) mod cluster;
pub(crate) mod config;
pub(crate) mod consume;
pub(crate) mod group;
pub(crate) mod log_dirs;
pub(crate) mod produce;
pub(crate) mod reassign;
pub(crate) mod storage;
pub(crate) mod topic;

/// Options every tool takes (after the subcommand: `sluice topic list --bootstrap-server host:9092`).
#[derive(Debug, Clone, Args)]
pub(crate) struct GlobalArgs {
    /// Broker(s) to bootstrap from, comma-separated `HOST:PORT`.
    #[arg(
        long,
        global = true,
        env = "SLUICE_BOOTSTRAP_SERVER",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub(crate) bootstrap_server: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,
}

impl GlobalArgs {
    /// Client settings for the bootstrap list.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(&self.bootstrap_server);
        config.client_id = "sluice-cli".to_owned();
        config.connect_timeout_ms = 5_000;
        config
    }

    /// True for `--output json`.
    pub(crate) fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Human-readable text.
    Text,
    /// JSON (one object, or one object per line for streams of records).
    Json,
}

/// The tool subcommands, flattened into the top-level `sluice` command.
#[derive(Debug, Subcommand)]
pub(crate) enum ToolCommand {
    /// Create, list, describe, alter and delete topics.
    #[command(after_help = topic::EXAMPLES)]
    Topic(topic::TopicArgs),
    /// Produce records read line by line from stdin or a file.
    #[command(after_help = produce::EXAMPLES)]
    Produce(produce::ProduceArgs),
    /// Consume records and print them.
    #[command(after_help = consume::EXAMPLES)]
    Consume(consume::ConsumeArgs),
    /// Describe, set and delete topic and broker configs.
    #[command(after_help = config::EXAMPLES)]
    Config(config::ConfigArgs),
    /// Describe the cluster.
    #[command(after_help = cluster::EXAMPLES)]
    Cluster(cluster::ClusterArgs),
    /// List, describe, delete consumer groups and reset their offsets.
    #[command(after_help = group::EXAMPLES)]
    Group(group::GroupArgs),
    /// Describe brokers' log directories (Kafka's kafka-log-dirs.sh --describe).
    #[command(after_help = log_dirs::EXAMPLES)]
    LogDirs(log_dirs::LogDirsArgs),
    /// Move partitions between brokers (Kafka's kafka-reassign-partitions.sh): generate, execute, verify, cancel.
    #[command(after_help = reassign::EXAMPLES)]
    Reassign(reassign::ReassignArgs),
    /// Measure produce and consume throughput and latency.
    #[command(after_help = bench::EXAMPLES)]
    Bench(bench::BenchArgs),
}

/// Runs a tool and maps its outcome to an exit status; errors are one line on stderr.
pub(crate) fn run(command: ToolCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sluice: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            ToolCommand::Topic(args) => topic::run(args).await,
            ToolCommand::Produce(args) => produce::run(args).await,
            ToolCommand::Consume(args) => consume::run(args).await,
            ToolCommand::Config(args) => config::run(args).await,
            ToolCommand::Cluster(args) => cluster::run(args).await,
            ToolCommand::Group(args) => group::run(args).await,
            ToolCommand::LogDirs(args) => log_dirs::run(args).await,
            ToolCommand::Reassign(args) => reassign::run(args).await,
            ToolCommand::Bench(args) => bench::run(args).await,
        }
    });
    // Background connection tasks must not keep the process alive.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: error: {}", one_line(&e));
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A usage error found after argument parsing: an input file that cannot be read or does not hold what the
/// command expects, or an option value the parser cannot check (an empty `--broker-list`). Exit status 2, as for
/// the parser's own usage errors, and one line on stderr like every error.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The error chain on one line, with a hint for the common cases.
fn one_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}").replace('\n', " ");
    let hint = e.downcast_ref::<ClientError>().and_then(|c| match c {
        ClientError::Broker { error, .. } => match error {
            KafkaError::TopicAuthorizationFailed
            | KafkaError::GroupAuthorizationFailed
            | KafkaError::ClusterAuthorizationFailed => {
                Some("the principal lacks an ACL for this operation")
            }
            KafkaError::UnknownTopicOrPartition => {
                Some("check the topic name with `sluice topic list`")
            }
            _ => None,
        },
        _ => None,
    });
    match hint {
        Some(h) if !text.contains(h) => format!("{text} ({h})"),
        _ => text,
    }
}

/// Parses `KEY=VALUE`.
pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Prints a JSON value on one line.
pub(crate) fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

/// Left-aligned text table: a header row and rows, columns padded to the widest cell.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
