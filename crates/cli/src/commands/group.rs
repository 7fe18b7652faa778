//! `sluice group list|describe|delete|reset-offsets`: consumer groups (Kafka's `kafka-consumer-groups.sh`).

use std::collections::BTreeMap;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use sluice_client::admin::OffsetSpec;
use sluice_client::Admin;

use super::{print_json, print_table, GlobalArgs};

pub(crate) const EXAMPLES: &str = "Examples:
  sluice group list
  sluice group describe billing              # committed offset, log end offset and lag per partition
  sluice group reset-offsets billing --topic orders --to-earliest
  sluice group reset-offsets billing --topic orders --to-datetime 2026-11-22T00:00:00Z
  sluice group reset-offsets billing --topic orders --to-offset 100 --dry-run
  sluice group delete billing";

/// `sluice group`.
#[derive(Debug, Args)]
pub(crate) struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
    #[command(flatten)]
    global: GlobalArgs,
}

/// Where `reset-offsets` moves the group.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ResetTarget {
    /// To the log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end offset.
    #[arg(long)]
    to_latest: bool,
    /// To this offset (clamped to the log's range).
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// To the first record at or after this UTC time (`YYYY-MM-DDTHH:MM:SS[.mmm][Z]`) or epoch ms.
    #[arg(long, value_name = "DATETIME")]
    to_datetime: Option<String>,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List groups.
    List,
    /// Show a group's state, members and per-partition committed offset, log end offset and lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Delete a group (it must have no members).
    Delete {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets for a topic (the group must have no members).
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic whose partitions are reset (all partitions).
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        target: ResetTarget,
        /// Show the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(crate) async fn run(args: GroupArgs) -> anyhow::Result<()> {
    let global = args.global;
    let admin = Admin::new(global.client_config()).await?;
    match args.command {
        GroupCommand::List => {
            let groups = admin.list_groups().await?;
            if global.json() {
                let list: Vec<_> = groups
                    .iter()
                    .map(|g| json!({"group": g.group_id, "state": g.state, "protocol_type": g.protocol_type}))
                    .collect();
                print_json(&json!(list));
            } else {
                let rows: Vec<Vec<String>> = groups
                    .iter()
                    .map(|g| vec![g.group_id.clone(), g.state.clone()])
                    .collect();
                print_table(&["GROUP", "STATE"], &rows);
            }
        }
        GroupCommand::Describe { group } => describe(&admin, &group, global.json()).await?,
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await?;
            if global.json() {
                print_json(&json!({"group": group, "deleted": true}));
            } else {
                println!("Deleted group {group}.");
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            target,
            dry_run,
        } => {
            let info = admin.describe_topic(&topic).await?;
            let spec = if target.to_earliest {
                OffsetSpec::Earliest
            } else if target.to_latest {
                OffsetSpec::Latest
            } else if let Some(dt) = &target.to_datetime {
                OffsetSpec::Timestamp(parse_datetime_ms(dt)?)
            } else {
                OffsetSpec::Earliest
            };
            let partitions: Vec<i32> = info.partitions.iter().map(|p| p.partition).collect();
            let queries = |spec| {
                partitions
                    .iter()
                    .map(|p| (topic.clone(), *p, spec))
                    .collect::<Vec<_>>()
            };
            let earliest = admin.list_offsets(&queries(OffsetSpec::Earliest)).await?;
            let latest = admin.list_offsets(&queries(OffsetSpec::Latest)).await?;
            let wanted = admin.list_offsets(&queries(spec)).await?;
            let mut new_offsets = Vec::new();
            for p in &partitions {
                let key = (topic.clone(), *p);
                let lo = earliest[&key].as_ref().map_err(Clone::clone)?.offset;
                let hi = latest[&key].as_ref().map_err(Clone::clone)?.offset;
                let offset = match target.to_offset {
                    Some(n) => n.clamp(lo, hi),
                    // A timestamp after the last record finds no offset (-1): the log end then.
                    None => match wanted[&key].as_ref().map_err(Clone::clone)?.offset {
                        -1 => hi,
                        o => o,
                    },
                };
                new_offsets.push((key, offset));
            }
            if !dry_run {
                admin
                    .alter_group_offsets(&group, &new_offsets)
                    .await
                    .context("committing the new offsets (stop the group's consumers first)")?;
            }
            if global.json() {
                let list: Vec<_> = new_offsets
                    .iter()
                    .map(|((t, p), o)| json!({"topic": t, "partition": p, "offset": o}))
                    .collect();
                print_json(&json!({"group": group, "dry_run": dry_run, "offsets": list}));
            } else {
                let rows: Vec<Vec<String>> = new_offsets
                    .iter()
                    .map(|((t, p), o)| vec![t.clone(), p.to_string(), o.to_string()])
                    .collect();
                print_table(&["TOPIC", "PARTITION", "NEW-OFFSET"], &rows);
                if dry_run {
                    println!("(dry run: nothing committed)");
                }
            }
        }
    }
    Ok(())
}

async fn describe(admin: &Admin, group: &str, json_out: bool) -> anyhow::Result<()> {
    let description = admin.describe_group(group).await?;
    let mut committed: BTreeMap<(String, i32), i64> = admin.group_offsets(group).await?;
    // As kafka-consumer-groups.sh: the partitions a member is assigned are listed even with no committed offset.
    for partition in description.assignments.values().flatten() {
        committed.entry(partition.clone()).or_insert(-1);
    }
    let queries: Vec<_> = committed
        .keys()
        .map(|(t, p)| (t.clone(), *p, OffsetSpec::Latest))
        .collect();
    let ends = admin.list_offsets(&queries).await?;
    let rows: Vec<(String, i32, i64, i64)> = committed
        .iter()
        .map(|((t, p), c)| {
            let end = ends
                .get(&(t.clone(), *p))
                .and_then(|r| r.as_ref().ok())
                .map_or(-1, |o| o.offset);
            (t.clone(), *p, *c, end)
        })
        .collect();
    let lag = |c: i64, e: i64| if c >= 0 && e >= 0 { (e - c).max(0) } else { -1 };
    // Unknown (no committed offset, no log end, so no lag): `-` in the table, null in JSON.
    let known = |v: i64| (v >= 0).then_some(v);
    let cell = |v: i64| known(v).map_or_else(|| "-".to_string(), |v| v.to_string());
    if json_out {
        let partitions: Vec<_> = rows
            .iter()
            .map(|(t, p, c, e)| json!({"topic": t, "partition": p, "committed_offset": known(*c), "log_end_offset": known(*e), "lag": known(lag(*c, *e))}))
            .collect();
        let members: Vec<_> = description
            .members
            .iter()
            .map(|(m, c, h)| json!({"member_id": m, "client_id": c, "host": h}))
            .collect();
        print_json(&json!({
            "group": description.group_id,
            "state": description.state,
            "protocol": description.protocol,
            "members": members,
            "partitions": partitions,
        }));
        return Ok(());
    }
    println!(
        "Group: {}  State: {}  Members: {}",
        description.group_id,
        description.state,
        description.members.len()
    );
    for (m, c, h) in &description.members {
        println!("  member {m} client {c} host {h}");
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(t, p, c, e)| {
            vec![
                t.clone(),
                p.to_string(),
                cell(*c),
                cell(*e),
                cell(lag(*c, *e)),
            ]
        })
        .collect();
    print_table(
        &["TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"],
        &table,
    );
    Ok(())
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.mmm][Z]` (UTC) or plain epoch milliseconds into epoch milliseconds.
fn parse_datetime_ms(s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || {
        anyhow::anyhow!("cannot parse {s:?}: use YYYY-MM-DDTHH:MM:SS[.mmm][Z] (UTC) or epoch ms")
    };
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let (hms, millis) = match time.split_once('.') {
        Some((hms, frac)) => {
            let frac3: String = frac.chars().chain("000".chars()).take(3).collect();
            (hms, frac3.parse::<i64>().map_err(|_| bad())?)
        }
        None => (time, 0),
    };
    let t: Vec<i64> = hms
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let [y, mo, day] = <[i64; 3]>::try_from(d).map_err(|_| bad())?;
    let [h, mi, sec] = <[i64; 3]>::try_from(t).map_err(|_| bad())?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_as_utc() {
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_datetime_ms("2000-03-01T00:00:00").unwrap(),
            951_868_800_000
        );
        assert_eq!(
            parse_datetime_ms("2026-11-22T02:30:00.5Z").unwrap(),
            1_795_314_600_500
        );
        assert_eq!(parse_datetime_ms("12345").unwrap(), 12345);
        assert!(parse_datetime_ms("2026-13-01T00:00:00").is_err());
        assert!(parse_datetime_ms("yesterday").is_err());
    }
}
