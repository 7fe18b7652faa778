//! `sluice bench produce|consume`: throughput and latency like Kafka's `kafka-producer-perf-test.sh` and
//! `kafka-consumer-perf-test.sh`: records/s, MB/s and (produce) send-to-acknowledgement latency percentiles
//! from an HdrHistogram; a progress bar on a terminal; `--output json` prints one object.

use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;
use sluice_client::{
    Acks, CompressionType, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};

use super::{print_json, GlobalArgs};

pub(crate) const EXAMPLES: &str = "Examples:
  sluice bench produce --topic bench --num-records 1000000 --record-size 100
  sluice bench produce --topic bench --num-records 200000 --throughput 50000 --acks 1 --compression lz4
  sluice bench produce --topic bench --num-records 1000000 --producers 4 --output json
  sluice bench consume --topic bench --num-records 1000000";

/// `sluice bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
    #[command(flatten)]
    global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Produce records as fast as allowed and report throughput and latency.
    Produce(ProduceBench),
    /// Consume records from the beginning and report throughput.
    Consume(ConsumeBench),
}

#[derive(Debug, Args)]
struct ProduceBench {
    /// Topic (auto-created by the broker if allowed).
    #[arg(long)]
    topic: String,
    /// Records to produce in total.
    #[arg(long, default_value_t = 100_000)]
    num_records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Rate limit in records/s for all producers together (-1 = unlimited).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    throughput: i64,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: Acks,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: CompressionType,
    /// Producer instances running in parallel.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// `batch.size` in bytes (default: librdkafka's 1000000, so `rdkafka_performance` compares like for like).
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: usize,
    /// `linger.ms`.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
}

#[derive(Debug, Args)]
struct ConsumeBench {
    /// Topic.
    #[arg(long)]
    topic: String,
    /// Records to consume before stopping.
    #[arg(long, default_value_t = 100_000)]
    num_records: u64,
    /// Stop when no record arrives for this long (ms).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Produce(p) => produce(p, &args.global).await,
        BenchCommand::Consume(c) => consume(c, &args.global).await,
    }
}

fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} records ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

async fn produce(args: ProduceBench, global: &GlobalArgs) -> anyhow::Result<()> {
    if args.producers == 0 || args.num_records == 0 {
        bail!("--producers and --num-records must be positive");
    }
    // A fixed payload of printable bytes (the same for every record, as Kafka's perf test by default).
    let payload = Bytes::from(
        (0..args.record_size)
            .map(|i| b'A' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut producers = Vec::new();
    for _ in 0..args.producers {
        producers.push(
            Producer::new(ProducerConfig {
                client: global.client_config(),
                acks: args.acks,
                compression: args.compression,
                batch_size_bytes: args.batch_size,
                linger_ms: args.linger_ms,
                ..ProducerConfig::default()
            })
            .await?,
        );
    }
    let done = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(args.num_records);
    let ticker = bar.clone().map(|bar| {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                bar.set_position(done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let n = u64::from(args.producers);
    for (i, producer) in producers.into_iter().enumerate() {
        let count = args.num_records / n + u64::from((i as u64) < args.num_records % n);
        let rate = (args.throughput > 0).then(|| args.throughput as f64 / n as f64);
        let topic = args.topic.clone();
        let payload = payload.clone();
        let done = done.clone();
        tasks.spawn(run_producer(producer, topic, payload, count, rate, done));
    }
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram")?;
    while let Some(joined) = tasks.join_next().await {
        let h = joined.context("producer task")??;
        histogram.add(h).context("merging histograms")?;
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let records = args.num_records as f64;
    let records_per_sec = records / elapsed;
    let mb_per_sec = records * args.record_size as f64 / elapsed / (1024.0 * 1024.0);
    let ms = |us: u64| us as f64 / 1000.0;
    let p = |q: f64| ms(histogram.value_at_quantile(q));
    if global.json() {
        print_json(&json!({
            "records": args.num_records,
            "record_size": args.record_size,
            "elapsed_sec": elapsed,
            "records_per_sec": records_per_sec,
            "mb_per_sec": mb_per_sec,
            "latency_ms": {
                "avg": histogram.mean() / 1000.0,
                "p50": p(0.50),
                "p95": p(0.95),
                "p99": p(0.99),
                "p999": p(0.999),
                "max": ms(histogram.max()),
            },
        }));
    } else {
        println!(
            "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency.",
            args.num_records,
            records_per_sec,
            mb_per_sec,
            histogram.mean() / 1000.0,
            ms(histogram.max())
        );
        println!(
            "Latency percentiles: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms.",
            p(0.50),
            p(0.95),
            p(0.99),
            p(0.999)
        );
    }
    Ok(())
}

/// One producer's share: sends `count` records (rate-limited if `rate` is set) and returns the histogram
/// of send-to-acknowledgement latencies in microseconds.
async fn run_producer(
    producer: Producer,
    topic: String,
    payload: Bytes,
    count: u64,
    rate: Option<f64>,
    done: Arc<AtomicU64>,
) -> anyhow::Result<Histogram<u64>> {
    // Deliveries go to the collector in chunks, so the channel costs one send per chunk, not per record.
    const CHUNK: usize = 1024;
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Vec<(Instant, sluice_client::DeliveryFuture)>>(128);
    let collector = tokio::spawn(async move {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        // Acknowledgements arrive a batch at a time: read the clock once per wait (and every 256
        // records), not once per record.
        while let Some(chunk) = rx.recv().await {
            let mut now = Instant::now();
            let mut since_clock = 0u32;
            for (sent, mut delivery) in chunk {
                let ready =
                    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut delivery).poll(cx))).await;
                match ready {
                    Poll::Ready(result) => {
                        result?;
                    }
                    Poll::Pending => {
                        delivery.await?;
                        now = Instant::now();
                        since_clock = 0;
                    }
                }
                since_clock += 1;
                if since_clock >= 256 {
                    now = Instant::now();
                    since_clock = 0;
                }
                let us = u64::try_from(now.saturating_duration_since(sent).as_micros())
                    .unwrap_or(u64::MAX);
                h.saturating_record(us.max(1));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok::<_, anyhow::Error>(h)
    });
    let start = Instant::now();
    // Record timestamps derive from the per-record Instant, so each record costs one clock read.
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    let mut chunk = Vec::with_capacity(CHUNK);
    for i in 0..count {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let sent = Instant::now();
        let elapsed_ms = i64::try_from(sent.duration_since(start).as_millis()).unwrap_or(0);
        let record = ProducerRecord {
            topic: topic.clone(),
            value: Some(payload.clone()),
            timestamp_ms: Some(start_ms + elapsed_ms),
            ..ProducerRecord::default()
        };
        let delivery = producer.send(record).await?;
        chunk.push((sent, delivery));
        // Rate-limited runs hand over each record at once, so a slow chunk does not skew latencies.
        if rate.is_some() || chunk.len() >= CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            if tx.send(full).await.is_err() {
                break;
            }
        }
    }
    if !chunk.is_empty() {
        // A send error means the collector stopped early; its own error is reported below.
        let _ = tx.send(chunk).await;
    }
    drop(tx);
    producer.flush().await;
    let histogram = collector.await.context("latency collector")??;
    producer.close().await;
    Ok(histogram)
}

async fn consume(args: ConsumeBench, global: &GlobalArgs) -> anyhow::Result<()> {
    let mut consumer = Consumer::new(ConsumerConfig {
        client: global.client_config(),
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    })
    .await?;
    consumer.assign_topic(&args.topic).await?;
    let assigned = consumer.assignment();
    consumer.seek_to_beginning(&assigned).await?;
    let bar = progress_bar(args.num_records);
    let start = Instant::now();
    let mut last = Instant::now();
    let mut records = 0u64;
    let mut bytes = 0u64;
    while records < args.num_records {
        let batch = consumer.poll(Duration::from_millis(500)).await?;
        if batch.is_empty() {
            if last.elapsed() >= Duration::from_millis(args.timeout_ms) {
                break;
            }
            continue;
        }
        last = Instant::now();
        for r in &batch {
            bytes += (r.value.as_ref().map_or(0, Bytes::len) + r.key.as_ref().map_or(0, Bytes::len))
                as u64;
        }
        records += batch.len() as u64;
        if let Some(bar) = &bar {
            bar.set_position(records);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let records_per_sec = records as f64 / elapsed;
    let mb_per_sec = bytes as f64 / elapsed / (1024.0 * 1024.0);
    if global.json() {
        print_json(&json!({
            "records": records,
            "bytes": bytes,
            "elapsed_sec": elapsed,
            "records_per_sec": records_per_sec,
            "mb_per_sec": mb_per_sec,
        }));
    } else {
        println!(
            "{records} records consumed in {elapsed:.2} s, {records_per_sec:.1} records/sec ({mb_per_sec:.2} MB/sec)."
        );
    }
    if records < args.num_records {
        bail!(
            "only {records} of {} records arrived within --timeout-ms {}",
            args.num_records,
            args.timeout_ms
        );
    }
    Ok(())
}
