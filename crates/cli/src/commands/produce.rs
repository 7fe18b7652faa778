//! `sluice produce TOPIC`: one record per input line from stdin or `--file` (Kafka's
//! `kafka-console-producer.sh`), with optional keys, headers, partition, acks and compression.

use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use serde_json::json;
use sluice_client::{Acks, CompressionType, Producer, ProducerConfig, ProducerRecord};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::{parse_key_value, print_json, GlobalArgs};

pub(crate) const EXAMPLES: &str = "Examples:
  echo hello | sluice produce orders
  sluice produce orders --key-separator : < keyed-lines.txt      # \"key:value\" per line
  sluice produce orders --file data.txt --compression zstd --acks all
  sluice produce orders --partition 2 --header source=cli --header v=1";

/// `sluice produce`.
#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// Topic to produce to.
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value (lines without SEP are an error).
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header `KEY=VALUE` added to every record (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
    /// Produce to this partition (default: murmur2 of the key, sticky for keyless records).
    #[arg(long)]
    partition: Option<i32>,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: Acks,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: CompressionType,
    /// How long a batch waits for more records (ms).
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    #[command(flatten)]
    global: GlobalArgs,
}

pub(crate) async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let global = args.global.clone();
    let producer = Producer::new(ProducerConfig {
        client: global.client_config(),
        acks: args.acks,
        compression: args.compression,
        linger_ms: args.linger_ms,
        allow_auto_create_topics: true,
        ..ProducerConfig::default()
    })
    .await?;
    let reader: Box<dyn AsyncRead + Unpin + Send> = match &args.file {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };
    let mut lines = BufReader::new(reader).lines();
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Some(Bytes::from(v.clone()))))
        .collect();
    // Deliveries are awaited by a separate task so reading and sending overlap.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<sluice_client::DeliveryFuture>(10_000);
    let waiter = tokio::spawn(async move {
        let mut delivered = 0u64;
        while let Some(d) = rx.recv().await {
            d.await?;
            delivered += 1;
        }
        Ok::<u64, sluice_client::ClientError>(delivered)
    });
    let mut line_no = 0u64;
    while let Some(line) = lines.next_line().await.context("reading input")? {
        line_no += 1;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_owned())), v.to_owned()),
                None => anyhow::bail!(
                    "line {line_no} has no key separator {sep:?}; every line must be KEY{sep}VALUE"
                ),
            },
            None => (None, line),
        };
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            key,
            value: Some(Bytes::from(value)),
            headers: headers.clone(),
            timestamp_ms: None,
        };
        let delivery = producer.send(record).await?;
        if tx.send(delivery).await.is_err() {
            break;
        }
    }
    drop(tx);
    producer.flush().await;
    let delivered = waiter.await.context("delivery task")??;
    if global.json() {
        print_json(&json!({"topic": args.topic, "records": delivered}));
    } else {
        eprintln!("Produced {delivered} records to {}.", args.topic);
    }
    Ok(())
}
