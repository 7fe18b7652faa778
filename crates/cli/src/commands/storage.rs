//! `sluice storage`: Kafka's `kafka-storage.sh` for Sluice. `random-uuid` prints a new cluster id, `format` writes
//! `meta.properties` (cluster id, node id, a directory id) into every log directory and the metadata directory
//! of a node before its first start, and `info` shows what each directory holds.
//!
//! The configuration is read exactly as `sluice server` reads it (`--config FILE`, then `--override KEY=VALUE`),
//! so the directories formatted are the ones the server will use.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sluice_broker::BrokerConfig;
use sluice_metadata::meta_properties::{self, MetaPropertiesError};

pub(crate) const EXAMPLES: &str = "Examples:
  sluice storage random-uuid
  sluice storage format --cluster-id \"$(sluice storage random-uuid)\" --config server.properties
  sluice storage format -t MkU3OEVBNTcwNTJENDM2Qg -c server.properties --ignore-formatted
  sluice storage info --config server.properties";

/// `sluice storage`.
#[derive(Debug, Args)]
pub(crate) struct StorageArgs {
    #[command(subcommand)]
    command: StorageCommand,
}

#[derive(Debug, Subcommand)]
enum StorageCommand {
    /// Print a new random cluster id (22 characters of URL-safe base64, as Kafka's).
    RandomUuid,
    /// Write meta.properties into every log directory and the metadata directory of this node.
    Format(FormatArgs),
    /// Show what meta.properties each directory of this node holds.
    Info(ConfigArgs),
}

/// The configuration options `sluice server` takes.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// The node's `server.properties` file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Set one configuration key, after the file (repeatable).
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(Debug, Args)]
struct FormatArgs {
    /// The cluster id (from `sluice storage random-uuid`; the same on every node of the cluster).
    #[arg(long, short = 't', value_name = "ID")]
    cluster_id: String,
    #[command(flatten)]
    config: ConfigArgs,
    /// Leave directories that are already formatted (for this cluster and node) as they are and format the others.
    #[arg(long, short = 'g')]
    ignore_formatted: bool,
    /// This controller starts as the only voter of the quorum (Kafka's single-node dynamic quorum); needs the
    /// controller role and no `controller.quorum.voters`.
    #[arg(long, short = 's')]
    standalone: bool,
}

/// Runs a storage command; refusals are one line on stderr and exit status 1 (2 for a bad configuration, as
/// `sluice server`).
pub(crate) fn run(args: StorageArgs) -> ExitCode {
    match args.command {
        StorageCommand::RandomUuid => {
            println!("{}", meta_properties::random_uuid());
            ExitCode::SUCCESS
        }
        StorageCommand::Format(args) => {
            let config = match load(&args.config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match format(&args, &config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
        StorageCommand::Info(args) => {
            let config = match load(&args) {
                Ok(config) => config,
                Err(code) => return code,
            };
            info(&config)
        }
    }
}

fn load(args: &ConfigArgs) -> Result<BrokerConfig, ExitCode> {
    BrokerConfig::load(Some(&args.config), &args.overrides).map_err(|e| {
        eprintln!("sluice storage: {e}");
        ExitCode::from(2)
    })
}

/// Every directory of the node, sorted and without duplicates (Kafka formats a `TreeSet`).
fn directories(config: &BrokerConfig) -> Vec<PathBuf> {
    let mut dirs = config.log_dirs.clone();
    dirs.push(config.metadata_log_dir.clone());
    dirs.sort();
    dirs.dedup();
    dirs
}

fn format(args: &FormatArgs, config: &BrokerConfig) -> Result<(), String> {
    let cluster_id =
        meta_properties::validate_cluster_id(&args.cluster_id).map_err(|e| e.to_string())?;
    if let Some(configured) = &config.cluster_id {
        if *configured != cluster_id {
            return Err(format!(
                "The cluster id {cluster_id} given to format differs from cluster.id={configured} in the configuration."
            ));
        }
    }
    if args.standalone {
        if !config.roles.controller {
            return Err("You can only use --standalone on a controller (process.roles must contain controller).".into());
        }
        if !config.quorum_voters.is_empty() {
            return Err("You cannot use --standalone when controller.quorum.voters is set: a static quorum is defined by that list. Remove controller.quorum.voters and set controller.quorum.bootstrap.servers instead.".into());
        }
    }
    let dirs = directories(config);
    let outcome =
        meta_properties::format_dirs(&dirs, &cluster_id, config.node_id, args.ignore_formatted)
            .map_err(|e| e.to_string())?;
    if outcome.iter().all(|(_, written)| written.is_none()) {
        println!("All of the log directories are already formatted.");
    }
    for (dir, written) in &outcome {
        if let Some(p) = written {
            println!(
                "Formatting {} with cluster.id {} and node.id {}",
                dir.display(),
                p.cluster_id,
                p.node_id
            );
        }
    }
    Ok(())
}

fn info(config: &BrokerConfig) -> ExitCode {
    let dirs = directories(config);
    let mut problems = Vec::new();
    println!(
        "{}:",
        if dirs.len() == 1 {
            "Found log directory"
        } else {
            "Found log directories"
        }
    );
    for dir in &dirs {
        let role = if *dir == config.metadata_log_dir {
            " (metadata)"
        } else {
            ""
        };
        if !dir.is_dir() {
            println!("  {}{role}: missing", dir.display());
            problems.push(if dir.exists() {
                format!("{} is not a directory", dir.display())
            } else {
                format!("{} does not exist", dir.display())
            });
            continue;
        }
        match meta_properties::read(dir) {
            Ok(Some(p)) => println!("  {}{role}: {p}", dir.display()),
            Ok(None) => {
                println!("  {}{role}: not formatted", dir.display());
                problems.push(format!("{} is not formatted.", dir.display()));
            }
            Err(e) => {
                println!("  {}{role}: unreadable", dir.display());
                problems.push(e.to_string());
            }
        }
    }
    // The directories must agree with each other and with this node's configuration.
    if problems.is_empty() {
        match meta_properties::check_or_create(
            &dirs,
            config.node_id,
            config.cluster_id.as_deref(),
            false,
        ) {
            Ok(cluster_id) => println!("\nCluster id: {cluster_id}"),
            Err(MetaPropertiesError::NotFormatted { .. }) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    println!(
        "\n{}:",
        if problems.len() == 1 {
            "Found problem"
        } else {
            "Found problems"
        }
    );
    for problem in &problems {
        println!("  {problem}");
    }
    ExitCode::FAILURE
}
