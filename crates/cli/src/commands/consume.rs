//! `sluice consume TOPIC`: print records (Kafka's `kafka-console-consumer.sh`) as a template or JSON lines;
//! with `--group`, join the consumer group (or, with `--partition`, use its committed offsets for that
//! partition) and commit what was printed on exit, also on Ctrl-C.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::json;
use sluice_client::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset};

use super::GlobalArgs;

pub(crate) const EXAMPLES: &str = "Examples:
  sluice consume orders --from-beginning
  sluice consume orders --partition 0 --offset 42 --max-messages 10
  sluice consume orders --group billing                      # resumes where the group left off
  sluice consume orders --format '{partition}:{offset} {key}={value} {headers}'
  sluice consume orders --from-beginning --output json --timeout-ms 2000

Template fields: {topic} {partition} {offset} {timestamp} {key} {value} {headers}; \\n and \\t are
expanded. A null key or value prints as \"null\".";

/// `sluice consume`.
#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Start at the earliest offset when there is no committed offset (default: latest).
    #[arg(long)]
    from_beginning: bool,
    /// Join this consumer group (its assignor picks the partitions; offsets are committed on exit).
    #[arg(long)]
    group: Option<String>,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<i32>,
    /// Start offset: a number, `earliest` or `latest` (for every partition read).
    #[arg(long, value_name = "OFFSET")]
    offset: Option<String>,
    /// Exit after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Exit when no record arrives for this long (ms).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Output template (see below); ignored with `--output json`.
    #[arg(long, default_value = "{value}")]
    format: String,
    #[command(flatten)]
    global: GlobalArgs,
}

enum StartOffset {
    Earliest,
    Latest,
    At(i64),
}

pub(crate) async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let start = match args.offset.as_deref() {
        None => None,
        Some("earliest") => Some(StartOffset::Earliest),
        Some("latest") => Some(StartOffset::Latest),
        Some(n) => match n.parse::<i64>() {
            Ok(n) if n >= 0 => Some(StartOffset::At(n)),
            _ => bail!("--offset must be a non-negative number, earliest or latest, not {n:?}"),
        },
    };
    let mut consumer = Consumer::new(ConsumerConfig {
        client: args.global.client_config(),
        group_id: args.group.clone(),
        auto_offset_reset: if args.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        ..ConsumerConfig::default()
    })
    .await?;
    let subscribed = args.group.is_some() && args.partition.is_none();
    if subscribed {
        if start.is_some() {
            bail!("--offset needs --partition when reading with --group (the group assigns partitions)");
        }
        // Group membership: the group's assignor decides the partitions; offsets are committed on exit.
        consumer.subscribe(vec![args.topic.clone()])?;
    } else {
        match args.partition {
            Some(p) => consumer.assign(vec![(args.topic.clone(), p)]).await?,
            None => consumer.assign_topic(&args.topic).await?,
        }
    }
    let assigned = consumer.assignment();
    match start {
        None => {}
        Some(StartOffset::Earliest) => consumer.seek_to_beginning(&assigned).await?,
        Some(StartOffset::Latest) => consumer.seek_to_end(&assigned).await?,
        Some(StartOffset::At(n)) => {
            for (t, p) in &assigned {
                consumer.seek(t, *p, n)?;
            }
        }
    }
    let template = args.format.replace("\\n", "\n").replace("\\t", "\t");
    let json_out = args.global.json();
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let stdout = std::io::stdout();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    'outer: loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        if let Some(t) = args.timeout_ms {
            if last_record.elapsed() >= Duration::from_millis(t) {
                break;
            }
        }
        let records = tokio::select! {
            _ = &mut ctrl_c => break 'outer,
            r = consumer.poll(Duration::from_millis(200)) => r?,
        };
        if !records.is_empty() {
            last_record = Instant::now();
        }
        let mut out = stdout.lock();
        for r in records {
            if args.max_messages.is_some_and(|max| printed >= max) {
                // Do not commit past what was printed.
                consumer.seek(&r.topic, r.partition, r.offset)?;
                continue;
            }
            let line = if json_out {
                record_json(&r).to_string()
            } else {
                render(&template, &r)
            };
            if writeln!(out, "{line}").is_err() {
                // stdout closed (e.g. piped into `head`): stop quietly.
                break 'outer;
            }
            printed += 1;
        }
        let _ = out.flush();
    }
    if args.group.is_some() {
        consumer.commit_sync().await?;
    }
    consumer.close().await?;
    Ok(())
}

fn text(b: &Option<bytes::Bytes>) -> String {
    match b {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "null".to_owned(),
    }
}

/// Fills a `--format` template in one pass (record contents are never re-scanned for fields).
fn render(template: &str, r: &ConsumerRecord) -> String {
    let field = |name: &str| -> Option<String> {
        Some(match name {
            "topic" => r.topic.clone(),
            "partition" => r.partition.to_string(),
            "offset" => r.offset.to_string(),
            "timestamp" => r.timestamp_ms.to_string(),
            "key" => text(&r.key),
            "value" => text(&r.value),
            "headers" => r
                .headers
                .iter()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect::<Vec<_>>()
                .join(","),
            _ => return None,
        })
    };
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let name = after.find('}').map(|end| &after[1..end]);
        match name.and_then(|n| field(n).map(|v| (n, v))) {
            Some((n, v)) => {
                out.push_str(&v);
                rest = &after[n.len() + 2..];
            }
            None => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn record_json(r: &ConsumerRecord) -> serde_json::Value {
    let opt = |b: &Option<bytes::Bytes>| {
        b.as_ref()
            .map(|b| serde_json::Value::String(String::from_utf8_lossy(b).into_owned()))
            .unwrap_or(serde_json::Value::Null)
    };
    let headers: serde_json::Map<String, serde_json::Value> =
        r.headers.iter().map(|(k, v)| (k.clone(), opt(v))).collect();
    json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp_ms,
        "key": opt(&r.key),
        "value": opt(&r.value),
        "headers": headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_fills_every_field() {
        let r = ConsumerRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            timestamp_ms: 1000,
            log_append_time: false,
            key: None,
            value: Some("v{key}".into()),
            headers: vec![("a".into(), Some("1".into())), ("b".into(), None)],
        };
        assert_eq!(
            render(
                "{topic}/{partition}@{offset} {timestamp} {key}={value} [{headers}]",
                &r
            ),
            "t/2@7 1000 null=v{key} [a=1,b=null]"
        );
        let j = record_json(&r);
        assert_eq!(j["key"], serde_json::Value::Null);
        assert_eq!(j["headers"]["a"], "1");
    }
}
