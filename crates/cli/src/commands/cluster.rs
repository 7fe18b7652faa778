//! `sluice cluster describe`: cluster id, controller and brokers (DescribeCluster).

use clap::{Args, Subcommand};
use serde_json::json;
use sluice_client::Admin;

use super::{print_json, print_table, GlobalArgs};

pub(crate) const EXAMPLES: &str = "Examples:
  sluice cluster describe
  sluice cluster describe --output json --bootstrap-server broker1:9092";

/// `sluice cluster`.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
    #[command(flatten)]
    global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Show the cluster id, the controller and every broker.
    Describe,
}

pub(crate) async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let admin = Admin::new(args.global.client_config()).await?;
    match args.command {
        ClusterCommand::Describe => {
            let cluster = admin.describe_cluster().await?;
            if args.global.json() {
                let brokers: Vec<_> = cluster
                    .brokers
                    .iter()
                    .map(|b| json!({"id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack}))
                    .collect();
                print_json(&json!({
                    "cluster_id": cluster.cluster_id,
                    "controller_id": cluster.controller_id,
                    "brokers": brokers,
                }));
            } else {
                println!(
                    "Cluster: {}",
                    cluster.cluster_id.as_deref().unwrap_or("(unknown)")
                );
                println!("Controller: {}", cluster.controller_id);
                let rows: Vec<Vec<String>> = cluster
                    .brokers
                    .iter()
                    .map(|b| {
                        vec![
                            b.node_id.to_string(),
                            b.host.clone(),
                            b.port.to_string(),
                            b.rack.clone().unwrap_or_else(|| "-".to_owned()),
                        ]
                    })
                    .collect();
                print_table(&["ID", "HOST", "PORT", "RACK"], &rows);
            }
        }
    }
    Ok(())
}
