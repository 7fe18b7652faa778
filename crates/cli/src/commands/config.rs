//! `sluice config describe|set|delete`: topic and broker configs (Kafka's `kafka-configs.sh`), through
//! DescribeConfigs and IncrementalAlterConfigs.

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;
use sluice_client::admin::{ConfigChange, ConfigResourceType};
use sluice_client::Admin;

use super::{parse_key_value, print_json, print_table, GlobalArgs};

pub(crate) const EXAMPLES: &str = "Examples:
  sluice config describe --topic orders
  sluice config describe --broker 0 --all
  sluice config set --topic orders retention.ms=3600000 cleanup.policy=compact
  sluice config delete --topic orders retention.ms";

/// `sluice config`.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Which resource: `--topic NAME` or `--broker ID`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Entity {
    /// A topic.
    #[arg(long)]
    topic: Option<String>,
    /// A broker, by node id.
    #[arg(long)]
    broker: Option<i32>,
}

impl Entity {
    fn resource(&self) -> anyhow::Result<(ConfigResourceType, String)> {
        match (&self.topic, self.broker) {
            (Some(t), None) => Ok((ConfigResourceType::Topic, t.clone())),
            (None, Some(b)) => Ok((ConfigResourceType::Broker, b.to_string())),
            _ => bail!("name exactly one of --topic or --broker"),
        }
    }
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Show configs (by default only those set explicitly).
    Describe {
        #[command(flatten)]
        entity: Entity,
        /// Also show defaults.
        #[arg(long)]
        all: bool,
    },
    /// Set configs.
    Set {
        #[command(flatten)]
        entity: Entity,
        /// `KEY=VALUE` pairs.
        #[arg(required = true, value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// Remove configs (back to the default).
    Delete {
        #[command(flatten)]
        entity: Entity,
        /// Keys to remove.
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

pub(crate) async fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let global = args.global;
    let admin = Admin::new(global.client_config()).await?;
    match args.command {
        ConfigCommand::Describe { entity, all } => {
            let (kind, name) = entity.resource()?;
            let entries: Vec<_> = admin
                .describe_configs(kind, &name)
                .await?
                .into_iter()
                .filter(|e| all || !e.is_default)
                .collect();
            if global.json() {
                let list: Vec<_> = entries
                    .iter()
                    .map(|e| json!({"name": e.name, "value": e.value, "default": e.is_default, "read_only": e.read_only, "sensitive": e.sensitive}))
                    .collect();
                print_json(&json!(list));
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.name.clone(),
                            if e.sensitive {
                                "(sensitive)".to_owned()
                            } else {
                                e.value.clone().unwrap_or_else(|| "null".to_owned())
                            },
                            if e.is_default { "default" } else { "set" }.to_owned(),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "VALUE", "SOURCE"], &rows);
            }
        }
        ConfigCommand::Set { entity, configs } => {
            let (kind, name) = entity.resource()?;
            let changes: Vec<ConfigChange> = configs
                .into_iter()
                .map(|(k, v)| ConfigChange::Set(k, v))
                .collect();
            admin.alter_configs(kind, &name, &changes).await?;
            if global.json() {
                print_json(&json!({"resource": name, "updated": changes.len()}));
            } else {
                println!("Updated {} config(s) of {name}.", changes.len());
            }
        }
        ConfigCommand::Delete { entity, keys } => {
            let (kind, name) = entity.resource()?;
            let changes: Vec<ConfigChange> = keys.into_iter().map(ConfigChange::Delete).collect();
            admin.alter_configs(kind, &name, &changes).await?;
            if global.json() {
                print_json(&json!({"resource": name, "deleted": changes.len()}));
            } else {
                println!("Deleted {} config(s) of {name}.", changes.len());
            }
        }
    }
    Ok(())
}
