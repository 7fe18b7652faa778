//! `sluice cluster describe` (DescribeCluster v2 and DescribeQuorum: cluster id, controller, every registered
//! broker with whether it is fenced, and a summary of the metadata quorum) and `sluice cluster quorum --status |
//! --replication`, which prints what Kafka's `kafka-metadata-quorum.sh describe --status | --replication` prints,
//! field for field (`MetadataQuorumCommand.handleDescribeStatus` / `handleDescribeReplication`).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};
use sluice_client::admin::{ClusterDescription, QuorumInfo, QuorumReplica};
use sluice_client::Admin;
use sluice_metadata::meta_properties::encode_uuid;

use super::{print_json, print_table, GlobalArgs};

pub(crate) const EXAMPLES: &str = "Examples:
  sluice cluster describe
  sluice cluster describe --output json --bootstrap-server broker1:9092
  sluice cluster quorum --status
  sluice cluster quorum --replication --human-readable";

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
    /// Show the cluster id, the controller, every broker (fenced or not) and the metadata quorum.
    Describe,
    /// Describe the metadata quorum, as `kafka-metadata-quorum.sh describe` does.
    Quorum(QuorumArgs),
}

/// `sluice cluster quorum`: exactly one of `--status` and `--replication`, as Kafka's tool requires.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("view").required(true).args(["status", "replication"])))]
struct QuorumArgs {
    /// A short summary of the quorum status: leader, epoch, high watermark, follower lag, voters, observers.
    #[arg(long)]
    status: bool,
    /// Every voter and observer: log end offset, lag behind the leader, last fetch and last caught-up times.
    #[arg(long)]
    replication: bool,
    /// With --replication: timestamps as "N ms ago" (text output only).
    #[arg(long, conflicts_with = "status")]
    human_readable: bool,
}

pub(crate) async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let admin = Admin::new(args.global.client_config()).await?;
    match args.command {
        ClusterCommand::Describe => describe(&admin, args.global.json()).await,
        ClusterCommand::Quorum(quorum) => {
            if quorum.status {
                status(&admin, args.global.json()).await
            } else {
                replication(&admin, args.global.json(), quorum.human_readable).await
            }
        }
    }
}

/// `sluice cluster describe`. The quorum is a summary here; a cluster whose quorum cannot be described (an
/// election under way, a broker without DescribeQuorum) still has its brokers listed.
async fn describe(admin: &Admin, json_output: bool) -> anyhow::Result<()> {
    let cluster = admin.describe_cluster(true).await?;
    let quorum = admin.describe_quorum().await;
    if json_output {
        print_json(&describe_json(&cluster, &quorum));
        return Ok(());
    }
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
                b.info.node_id.to_string(),
                b.info.host.clone(),
                b.info.port.to_string(),
                b.info.rack.clone().unwrap_or_else(|| "-".to_owned()),
                if b.fenced { "fenced" } else { "unfenced" }.to_owned(),
            ]
        })
        .collect();
    print_table(&["ID", "HOST", "PORT", "RACK", "STATE"], &rows);
    if !cluster.fenced_listed {
        println!("(fenced brokers are not listed: the broker does not support DescribeCluster v2)");
    }
    match &quorum {
        Ok(q) => println!("{}", quorum_summary(q)),
        Err(e) => println!("Quorum: unavailable ({e})"),
    }
    Ok(())
}

/// One line: leader, epoch, high watermark, voters and observers.
fn quorum_summary(q: &QuorumInfo) -> String {
    let ids = |replicas: &[QuorumReplica]| {
        let ids: Vec<String> = replicas.iter().map(|r| r.replica_id.to_string()).collect();
        format!("[{}]", ids.join(", "))
    };
    format!(
        "Quorum: leader {}, epoch {}, high watermark {}, voters {}, observers {}",
        q.leader_id,
        q.leader_epoch,
        q.high_watermark,
        ids(&q.voters),
        ids(&q.observers)
    )
}

fn describe_json(
    cluster: &ClusterDescription,
    quorum: &Result<QuorumInfo, sluice_client::ClientError>,
) -> Value {
    let brokers: Vec<Value> = cluster
        .brokers
        .iter()
        .map(|b| {
            json!({
                "id": b.info.node_id,
                "host": b.info.host,
                "port": b.info.port,
                "rack": b.info.rack,
                "fenced": b.fenced,
            })
        })
        .collect();
    let (quorum, quorum_error) = match quorum {
        Ok(q) => {
            let ids = |replicas: &[QuorumReplica]| -> Vec<i32> {
                replicas.iter().map(|r| r.replica_id).collect()
            };
            let summary = json!({
                "leader_id": q.leader_id,
                "leader_epoch": q.leader_epoch,
                "high_watermark": q.high_watermark,
                "voters": ids(&q.voters),
                "observers": ids(&q.observers),
            });
            (summary, Value::Null)
        }
        Err(e) => (Value::Null, Value::String(e.to_string())),
    };
    json!({
        "cluster_id": cluster.cluster_id,
        "controller_id": cluster.controller_id,
        "brokers": brokers,
        "fenced_listed": cluster.fenced_listed,
        "quorum": quorum,
        "quorum_error": quorum_error,
    })
}

/// `--status`: `MetadataQuorumCommand.handleDescribeStatus`.
async fn status(admin: &Admin, json_output: bool) -> anyhow::Result<()> {
    let cluster = admin.describe_cluster(false).await?;
    let quorum = admin.describe_quorum().await?;
    let cluster_id = cluster.cluster_id.as_deref().unwrap_or("null");
    let lag = follower_lag(&quorum)?;
    if json_output {
        let replicas = |replicas: &[QuorumReplica]| -> Vec<Value> {
            replicas
                .iter()
                .map(|r| {
                    json!({
                        "id": r.replica_id,
                        "directory_id": directory_id_or_null(r),
                        "endpoints": endpoints(&quorum, r.replica_id),
                    })
                })
                .collect()
        };
        print_json(&json!({
            "cluster_id": cluster_id,
            "leader_id": quorum.leader_id,
            "leader_epoch": quorum.leader_epoch,
            "high_watermark": quorum.high_watermark,
            "max_follower_lag": lag.max_follower_lag,
            "max_follower_lag_time_ms": lag.max_follower_lag_time_ms,
            "current_voters": replicas(&quorum.voters),
            "current_observers": replicas(&quorum.observers),
        }));
    } else {
        println!("{}", status_text(cluster_id, &quorum, &lag));
    }
    Ok(())
}

/// How far the furthest-behind voter trails the leader.
#[derive(Debug, PartialEq, Eq)]
struct FollowerLag {
    /// Leader log end offset minus the smallest voter log end offset.
    max_follower_lag: i64,
    /// Leader last-caught-up time minus that voter's; 0 when the leader is that voter, -1 when a time is unknown.
    max_follower_lag_time_ms: i64,
}

/// Kafka's computation: the voter with the smallest log end offset (the first one on ties, as Java's
/// `Stream.min`); an error when the leader is not among the voters (Kafka's tool fails there too).
fn follower_lag(quorum: &QuorumInfo) -> anyhow::Result<FollowerLag> {
    let leader = quorum.leader().ok_or_else(|| {
        anyhow!(
            "the metadata quorum has no leader among its voters (leader id {}): an election may be under way, try again",
            quorum.leader_id
        )
    })?;
    let behind = quorum
        .voters
        .iter()
        .min_by_key(|v| v.log_end_offset)
        .unwrap_or(leader);
    let max_follower_lag_time_ms = if behind.replica_id == leader.replica_id {
        0
    } else {
        match (
            leader.last_caught_up_timestamp_ms,
            behind.last_caught_up_timestamp_ms,
        ) {
            (Some(l), Some(b)) => l - b,
            _ => -1,
        }
    };
    Ok(FollowerLag {
        max_follower_lag: leader.log_end_offset - behind.log_end_offset,
        max_follower_lag_time_ms,
    })
}

/// The `--status` text, byte for byte as Kafka prints it (labels padded to 24 columns).
fn status_text(cluster_id: &str, quorum: &QuorumInfo, lag: &FollowerLag) -> String {
    let fields = [
        ("ClusterId:", cluster_id.to_owned()),
        ("LeaderId:", quorum.leader_id.to_string()),
        ("LeaderEpoch:", quorum.leader_epoch.to_string()),
        ("HighWatermark:", quorum.high_watermark.to_string()),
        ("MaxFollowerLag:", lag.max_follower_lag.to_string()),
        (
            "MaxFollowerLagTimeMs:",
            lag.max_follower_lag_time_ms.to_string(),
        ),
        ("CurrentVoters:", replica_list(quorum, &quorum.voters)),
        ("CurrentObservers:", replica_list(quorum, &quorum.observers)),
    ];
    fields
        .iter()
        .map(|(label, value)| format!("{label:<24}{value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Kafka's `printReplicaState`: `[{"id": 1, "directoryId": null, "endpoints": ["CONTROLLER://h:9093"]}, ...]`,
/// `endpoints` left out when the answer has none for that node.
fn replica_list(quorum: &QuorumInfo, replicas: &[QuorumReplica]) -> String {
    let items: Vec<String> = replicas
        .iter()
        .map(|r| {
            let directory = match directory_id_or_null(r) {
                Value::String(id) => format!("\"{id}\""),
                _ => "null".to_owned(),
            };
            let mut item = format!("{{\"id\": {}, \"directoryId\": {directory}", r.replica_id);
            let endpoints = endpoints(quorum, r.replica_id);
            if !endpoints.is_empty() {
                let quoted: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
                item.push_str(&format!(", \"endpoints\": [{}]", quoted.join(", ")));
            }
            item.push('}');
            item
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// A replica's controller endpoints (`NAME://host:port`) from the answer's nodes.
fn endpoints(quorum: &QuorumInfo, id: i32) -> Vec<String> {
    quorum
        .nodes
        .get(&id)
        .map(|eps| eps.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

/// Kafka's `Uuid.toString()` (22 characters of URL-safe base64) of a replica's directory id.
fn directory_id(r: &QuorumReplica) -> String {
    encode_uuid(*r.directory_id.as_bytes())
}

/// The directory id, or null when none was reported (Kafka's `--status` prints `null` for the zero UUID).
fn directory_id_or_null(r: &QuorumReplica) -> Value {
    if r.directory_id.is_nil() {
        Value::Null
    } else {
        Value::String(directory_id(r))
    }
}

/// `--replication`: `MetadataQuorumCommand.handleDescribeReplication`.
async fn replication(admin: &Admin, json_output: bool, human_readable: bool) -> anyhow::Result<()> {
    let quorum = admin.describe_quorum().await?;
    let rows = replication_rows(&quorum)?;
    if json_output {
        let replicas: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "node_id": r.replica.replica_id,
                    "directory_id": directory_id(r.replica),
                    "log_end_offset": r.replica.log_end_offset,
                    "lag": r.lag,
                    "last_fetch_timestamp": r.replica.last_fetch_timestamp_ms.unwrap_or(-1),
                    "last_caught_up_timestamp": r.replica.last_caught_up_timestamp_ms.unwrap_or(-1),
                    "status": r.status,
                })
            })
            .collect();
        print_json(&json!({ "replicas": replicas }));
        return Ok(());
    }
    let now_ms = now_ms();
    let time = |ts: Option<i64>, desc: &str| -> anyhow::Result<String> {
        match ts {
            None => Ok("-1".to_owned()),
            Some(ts) if human_readable => {
                Ok(format!("{} ms ago", relative_time_ms(ts, now_ms, desc)?))
            }
            Some(ts) => Ok(ts.to_string()),
        }
    };
    let mut table = Vec::with_capacity(rows.len());
    for r in &rows {
        table.push(vec![
            r.replica.replica_id.to_string(),
            directory_id(r.replica),
            r.replica.log_end_offset.to_string(),
            r.lag.to_string(),
            time(r.replica.last_fetch_timestamp_ms, "last fetch")?,
            time(r.replica.last_caught_up_timestamp_ms, "last caught up")?,
            r.status.to_owned(),
        ]);
    }
    print!(
        "{}",
        kafka_table(
            &[
                "NodeId",
                "DirectoryId",
                "LogEndOffset",
                "Lag",
                "LastFetchTimestamp",
                "LastCaughtUpTimestamp",
                "Status",
            ],
            &table,
        )
    );
    Ok(())
}

/// One row of the replication table.
struct ReplicationRow<'a> {
    replica: &'a QuorumReplica,
    /// Leader log end offset minus this replica's.
    lag: i64,
    /// `Leader`, `Follower` or `Observer`.
    status: &'static str,
}

/// The leader, then the other voters, then the observers, each in the order the answer lists them.
fn replication_rows(quorum: &QuorumInfo) -> anyhow::Result<Vec<ReplicationRow<'_>>> {
    let Some(leader) = quorum.leader() else {
        bail!(
            "the metadata quorum has no leader among its voters (leader id {}): an election may be under way, try again",
            quorum.leader_id
        );
    };
    let leader_end = leader.log_end_offset;
    let row = |replica, status| ReplicationRow {
        replica,
        lag: leader_end - replica.log_end_offset,
        status,
    };
    let mut rows = vec![row(leader, "Leader")];
    rows.extend(
        quorum
            .voters
            .iter()
            .filter(|v| v.replica_id != leader.replica_id)
            .map(|v| row(v, "Follower")),
    );
    rows.extend(quorum.observers.iter().map(|o| row(o, "Observer")));
    Ok(rows)
}

/// Kafka's `relativeTimeMs`: refuses a timestamp at or before the epoch or in the future.
fn relative_time_ms(timestamp_ms: i64, now_ms: i64, desc: &str) -> anyhow::Result<i64> {
    if timestamp_ms <= 0 || timestamp_ms > now_ms {
        bail!(
            "Error while computing relative time, possible drift in system clock. Current timestamp is {now_ms}, {desc} timestamp is {timestamp_ms}"
        );
    }
    Ok(now_ms - timestamp_ms)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Kafka's `ToolsUtils.prettyPrintTable`: every cell padded to its column's width and followed by a tab, the
/// last one included.
fn kafka_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        for (cell, width) in cells.zip(&widths) {
            out.push_str(&format!("{cell:<width$}\t"));
        }
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_client::admin::RaftEndpoint;

    use super::*;

    fn replica(id: i32, leo: i64, caught_up: Option<i64>) -> QuorumReplica {
        QuorumReplica {
            replica_id: id,
            directory_id: Default::default(),
            log_end_offset: leo,
            last_fetch_timestamp_ms: caught_up,
            last_caught_up_timestamp_ms: caught_up,
        }
    }

    fn quorum() -> QuorumInfo {
        let endpoint = |port| {
            vec![RaftEndpoint {
                name: "CONTROLLER".to_owned(),
                host: "127.0.0.1".to_owned(),
                port,
            }]
        };
        QuorumInfo {
            leader_id: 2,
            leader_epoch: 7,
            high_watermark: 120,
            voters: vec![
                replica(1, 118, Some(1_000)),
                replica(2, 125, Some(1_500)),
                replica(3, 110, Some(900)),
            ],
            observers: vec![replica(4, 100, None)],
            nodes: BTreeMap::from([
                (1, endpoint(9093)),
                (2, endpoint(9094)),
                (3, endpoint(9095)),
            ]),
        }
    }

    /// MetadataQuorumCommand: the lag is the leader's log end offset minus the smallest voter's, the lag time
    /// the difference of their last caught-up times.
    #[test]
    fn status_prints_kafkas_fields_and_layout() {
        let q = quorum();
        let lag = follower_lag(&q).unwrap();
        assert_eq!(
            lag,
            FollowerLag {
                max_follower_lag: 15,
                max_follower_lag_time_ms: 600
            }
        );
        let text = status_text("MkU3OEVBNTcwNTJENDM2Qk", &q, &lag);
        let expected = [
            "ClusterId:              MkU3OEVBNTcwNTJENDM2Qk",
            "LeaderId:               2",
            "LeaderEpoch:            7",
            "HighWatermark:          120",
            "MaxFollowerLag:         15",
            "MaxFollowerLagTimeMs:   600",
            "CurrentVoters:          [{\"id\": 1, \"directoryId\": null, \"endpoints\": [\"CONTROLLER://127.0.0.1:9093\"]}, \
             {\"id\": 2, \"directoryId\": null, \"endpoints\": [\"CONTROLLER://127.0.0.1:9094\"]}, \
             {\"id\": 3, \"directoryId\": null, \"endpoints\": [\"CONTROLLER://127.0.0.1:9095\"]}]",
            "CurrentObservers:       [{\"id\": 4, \"directoryId\": null}]",
        ];
        assert_eq!(text, expected.join("\n"));
    }

    /// A single voter (the embedded node) is its own furthest follower: lag 0, lag time 0 (Kafka's test
    /// `testDescribeQuorumStatusSuccessful` on one controller).
    #[test]
    fn lone_leader_has_no_lag() {
        let q = QuorumInfo {
            leader_id: 0,
            leader_epoch: 1,
            high_watermark: 5,
            voters: vec![replica(0, 5, Some(10))],
            observers: vec![],
            nodes: BTreeMap::new(),
        };
        let lag = follower_lag(&q).unwrap();
        assert_eq!((lag.max_follower_lag, lag.max_follower_lag_time_ms), (0, 0));
        let mut unknown = quorum();
        unknown.voters[2].last_caught_up_timestamp_ms = None;
        assert_eq!(follower_lag(&unknown).unwrap().max_follower_lag_time_ms, -1);
        unknown.leader_id = 9;
        assert!(follower_lag(&unknown).is_err());
    }

    #[test]
    fn replication_lists_leader_followers_then_observers() {
        let q = quorum();
        let rows = replication_rows(&q).unwrap();
        let summary: Vec<(i32, i64, &str)> = rows
            .iter()
            .map(|r| (r.replica.replica_id, r.lag, r.status))
            .collect();
        assert_eq!(
            summary,
            vec![
                (2, 0, "Leader"),
                (1, 7, "Follower"),
                (3, 15, "Follower"),
                (4, 25, "Observer")
            ]
        );
        assert_eq!(directory_id(rows[0].replica), "AAAAAAAAAAAAAAAAAAAAAA");
    }

    /// ToolsUtils.prettyPrintTable pads every cell and ends every cell with a tab.
    #[test]
    fn table_is_kafkas_tab_separated_layout() {
        let table = kafka_table(
            &["NodeId", "Status"],
            &[vec!["12345678".into(), "Leader".into()]],
        );
        assert_eq!(table, "NodeId  \tStatus\t\n12345678\tLeader\t\n");
    }

    #[test]
    fn relative_time_refuses_future_and_epoch() {
        assert_eq!(relative_time_ms(900, 1_000, "last fetch").unwrap(), 100);
        assert!(relative_time_ms(1_001, 1_000, "last fetch").is_err());
        assert!(relative_time_ms(0, 1_000, "last fetch").is_err());
    }

    #[test]
    fn endpoints_bracket_ipv6_hosts() {
        let e = RaftEndpoint {
            name: "CONTROLLER".into(),
            host: "::1".into(),
            port: 9093,
        };
        assert_eq!(e.to_string(), "CONTROLLER://[::1]:9093");
    }
}
