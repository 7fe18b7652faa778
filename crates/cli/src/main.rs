//! The `sluice` binary: `sluice server` runs a broker, `sluice storage` formats its directories; further
//! subcommands (topic, produce, consume, ...) plug in as more variants of [`Command`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use sluice_broker::{BrokerConfig, Server, CONFIG_KEYS};

mod commands;

/// Sluice: a Kafka-compatible streaming platform.
#[derive(Debug, Parser)]
#[command(name = "sluice", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker (with no arguments: node 0 as controller and broker on 127.0.0.1:9092, data in ./data).
    Server(ServerArgs),
    /// Format and inspect a node's storage (Kafka's kafka-storage.sh): random-uuid, format, info.
    #[command(after_help = commands::storage::EXAMPLES)]
    Storage(commands::storage::StorageArgs),
    #[command(flatten)]
    Tools(commands::ToolCommand),
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// A Kafka `server.properties` file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set one configuration key, after the file (repeatable), e.g. `--override log.dirs=/var/lib/sluice`.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

/// The `--help` epilogue of `sluice server`: every configuration key with its default.
fn config_keys_help() -> String {
    let width = CONFIG_KEYS.iter().map(|k| k.name.len()).max().unwrap_or(0);
    let mut text =
        String::from("Configuration keys (Kafka server.properties names; default in brackets):\n");
    for key in CONFIG_KEYS {
        let default = key.default.unwrap_or("unset");
        text.push_str(&format!("  {:width$}  [{default}] {}\n", key.name, key.doc));
    }
    text
}

/// Options of the client tools that Kafka's tools users also put before the subcommand
/// (`sluice --bootstrap-server B topic list`); each takes a value.
const TOOL_OPTIONS: [&str; 2] = ["--bootstrap-server", "--output"];

/// Moves [`TOOL_OPTIONS`] given before the subcommand to just after it, where the tools define them (as global
/// options of each tool, so they are accepted anywhere after it). Everything else keeps its order.
fn hoist_tool_options(args: Vec<String>) -> Vec<String> {
    let mut kept = Vec::with_capacity(args.len());
    let mut moved = Vec::new();
    let mut rest = args.into_iter();
    kept.extend(rest.next());
    while let Some(arg) = rest.next() {
        if TOOL_OPTIONS.contains(&arg.as_str()) {
            moved.push(arg);
            moved.extend(rest.next());
        } else if TOOL_OPTIONS
            .iter()
            .any(|o| arg.starts_with(&format!("{o}=")))
        {
            moved.push(arg);
        } else if arg.starts_with('-') {
            kept.push(arg);
        } else {
            // The subcommand: the moved options go right after it.
            kept.push(arg);
            kept.append(&mut moved);
            kept.extend(rest);
            return kept;
        }
    }
    // No subcommand (`sluice --help`): leave the options where they were for the parser to report.
    kept.append(&mut moved);
    kept
}

fn main() -> ExitCode {
    let command = Cli::command().mut_subcommand("server", |s| s.after_help(config_keys_help()));
    let matches = command.get_matches_from(hoist_tool_options(std::env::args().collect()));
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging();
    match cli.command {
        Command::Server(args) => run_server(args),
        Command::Storage(args) => commands::storage::run(args),
        Command::Tools(command) => commands::run(command),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour escape codes only for a terminal: a log file or a pipe gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run_server(args: ServerArgs) -> ExitCode {
    let config = match BrokerConfig::load(args.config.as_deref(), &args.overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sluice server: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-worker")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sluice server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "sluice server failed");
            eprintln!("sluice server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the server until SIGTERM or SIGINT, then shuts it down cleanly.
async fn serve(config: BrokerConfig) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    wait_for_signal().await?;
    server.shutdown().await?;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::hoist_tool_options;

    fn hoisted(args: &str) -> String {
        hoist_tool_options(args.split(' ').map(str::to_owned).collect()).join(" ")
    }

    #[test]
    fn tool_options_before_the_subcommand_move_after_it() {
        assert_eq!(
            hoisted("sluice --bootstrap-server b:1 topic list"),
            "sluice topic --bootstrap-server b:1 list"
        );
        assert_eq!(
            hoisted("sluice --output json --bootstrap-server=b:1 group list"),
            "sluice group --output json --bootstrap-server=b:1 list"
        );
        assert_eq!(
            hoisted("sluice topic list --bootstrap-server b:1"),
            "sluice topic list --bootstrap-server b:1"
        );
        assert_eq!(hoisted("sluice --version"), "sluice --version");
        assert_eq!(
            hoisted("sluice server --override a=b"),
            "sluice server --override a=b"
        );
    }
}
