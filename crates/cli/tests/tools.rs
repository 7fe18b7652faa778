//! The client tools of the `sluice` binary run as processes against an in-process broker: every command's
//! text and JSON output, exit codes and one-line errors, and keyed placement equal to librdkafka's
//! `murmur2_random` (through Python's confluent-kafka when `.venv` exists).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use sluice_testkit::BlockingBroker;

mod common;
use common::SLUICE;

/// The kit's in-process broker, on its own runtime so the test thread can run the binary synchronously; shut
/// down cleanly when dropped.
struct TestBroker {
    bootstrap: String,
    _broker: BlockingBroker,
}

impl TestBroker {
    fn start() -> TestBroker {
        let broker = BlockingBroker::start();
        TestBroker {
            bootstrap: broker.bootstrap(),
            _broker: broker,
        }
    }

    /// Runs `sluice ARGS` against this broker with `stdin` as input.
    fn run_with_input(&self, args: &[&str], stdin: &str) -> Output {
        common::run_sluice(&self.bootstrap, args, stdin)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, "")
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sluice {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines().map(json).collect()
}

#[test]
fn topic_create_list_describe_alter_delete() {
    let broker = TestBroker::start();
    let out = broker.ok(&[
        "topic",
        "create",
        "orders",
        "--partitions",
        "3",
        "--replication-factor",
        "1",
        "--config",
        "retention.ms=60000",
    ]);
    assert_eq!(out.trim(), "Created topic orders.");
    // Creating it again is an error naming the topic, unless --if-not-exists.
    let again = broker.run(&["topic", "create", "orders", "--partitions", "3"]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("orders") && stderr.contains("TopicAlreadyExists"),
        "{stderr}"
    );
    broker.ok(&["topic", "create", "orders", "--if-not-exists"]);

    broker.ok(&["topic", "create", "payments", "--partitions", "1"]);
    let list = broker.ok(&["topic", "list"]);
    assert_eq!(list.lines().collect::<Vec<_>>(), vec!["orders", "payments"]);
    let list = json(&broker.ok(&["topic", "list", "--output", "json"]));
    assert_eq!(list[0]["name"], "orders");
    assert_eq!(list[0]["partitions"], 3);

    broker.run_with_input(&["produce", "orders", "--partition", "1"], "a\nb\n");
    let text = broker.ok(&["topic", "describe", "orders"]);
    assert!(text.starts_with("Topic: orders"), "{text}");
    assert!(
        text.contains("PARTITION  LEADER  REPLICAS  ISR  EARLIEST  LATEST"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "0", "0", "0", "0", "2"]),
        "{text}"
    );
    let described = json(&broker.ok(&["topic", "describe", "orders", "--output", "json"]));
    let partitions = described[0]["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    assert_eq!(partitions[1]["latest_offset"], 2);
    assert_eq!(partitions[1]["isr"], serde_json::json!([0]));

    let out = broker.ok(&["topic", "alter", "orders", "--partitions", "5"]);
    assert_eq!(out.trim(), "Topic orders now has 5 partitions.");
    let shrink = broker.run(&["topic", "alter", "orders", "--partitions", "2"]);
    assert_eq!(shrink.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&shrink.stderr).contains("can only be added"));

    broker.ok(&["topic", "delete", "payments"]);
    assert_eq!(broker.ok(&["topic", "list"]).trim(), "orders");
    let missing = broker.run(&["topic", "describe", "payments"]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(
        stderr.trim(),
        "sluice: error: unknown topic payments: create it first (sluice topic create payments)"
    );
}

#[test]
fn produce_and_consume_with_keys_headers_and_every_codec() {
    let broker = TestBroker::start();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("lines-{codec}");
        broker.ok(&["topic", "create", &topic, "--partitions", "1"]);
        let input: String = (0..50).map(|i| format!("k{i}|value {i}\n")).collect();
        let out = broker.run_with_input(
            &[
                "produce",
                &topic,
                "--key-separator",
                "|",
                "--header",
                "source=test",
                "--header",
                "v=1",
                "--compression",
                codec,
                "--acks",
                "1",
            ],
            &input,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("Produced 50 records"));
        let text = broker.ok(&[
            "consume",
            &topic,
            "--from-beginning",
            "--max-messages",
            "50",
            "--format",
            "{partition}/{offset} {key}={value} {headers}",
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 50, "{codec}");
        assert_eq!(lines[0], "0/0 k0=value 0 source=test,v=1");
        assert_eq!(lines[49], "0/49 k49=value 49 source=test,v=1");
    }
    // JSON lines, a start offset, and a partition.
    let records = json_lines(&broker.ok(&[
        "consume",
        "lines-zstd",
        "--partition",
        "0",
        "--offset",
        "47",
        "--timeout-ms",
        "1500",
        "--output",
        "json",
    ]));
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["offset"], 47);
    assert_eq!(records[0]["key"], "k47");
    assert_eq!(records[0]["value"], "value 47");
    assert_eq!(records[0]["headers"]["source"], "test");
    assert!(records[0]["timestamp"].as_i64().unwrap() > 1_600_000_000_000);

    // A line without the separator is a one-line error naming the line.
    let out = broker.run_with_input(
        &["produce", "lines-none", "--key-separator", "|"],
        "novalue\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1 has no key separator"));

    // --file input.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "from-file\n").unwrap();
    broker.ok(&[
        "produce",
        "lines-none",
        "--file",
        file.path().to_str().unwrap(),
    ]);
    let last = broker.ok(&[
        "consume",
        "lines-none",
        "--offset",
        "50",
        "--max-messages",
        "1",
    ]);
    assert_eq!(last.trim(), "from-file");
}

#[test]
fn consume_with_a_group_commits_and_group_commands_show_lag_and_reset() {
    let broker = TestBroker::start();
    broker.ok(&["topic", "create", "events", "--partitions", "2"]);
    let input: String = (0..10).map(|i| format!("e{i}\n")).collect();
    broker.run_with_input(&["produce", "events", "--partition", "0"], &input);
    broker.run_with_input(&["produce", "events", "--partition", "1"], "x\ny\n");

    let read = broker.ok(&[
        "consume",
        "events",
        "--group",
        "audit",
        "--from-beginning",
        "--max-messages",
        "12",
    ]);
    assert_eq!(read.lines().count(), 12);
    // The group resumes where it stopped: nothing new.
    let again = broker.ok(&[
        "consume",
        "events",
        "--group",
        "audit",
        "--timeout-ms",
        "800",
    ]);
    assert_eq!(again, "");

    let list = broker.ok(&["group", "list"]);
    assert!(list.lines().any(|l| l.starts_with("audit")), "{list}");
    let described = json(&broker.ok(&["group", "describe", "audit", "--output", "json"]));
    let parts = described["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["committed_offset"], 10);
    assert_eq!(parts[0]["lag"], 0);
    let text = broker.ok(&["group", "describe", "audit"]);
    assert!(
        text.contains("TOPIC   PARTITION  COMMITTED  LOG-END  LAG"),
        "{text}"
    );

    let dry = broker.ok(&[
        "group",
        "reset-offsets",
        "audit",
        "--topic",
        "events",
        "--to-offset",
        "4",
        "--dry-run",
    ]);
    assert!(dry.contains("dry run"), "{dry}");
    broker.ok(&[
        "group",
        "reset-offsets",
        "audit",
        "--topic",
        "events",
        "--to-earliest",
    ]);
    let described = json(&broker.ok(&["group", "describe", "audit", "--output", "json"]));
    assert_eq!(described["partitions"][0]["committed_offset"], 0);
    assert_eq!(described["partitions"][0]["lag"], 10);
    broker.ok(&[
        "group",
        "reset-offsets",
        "audit",
        "--topic",
        "events",
        "--to-latest",
    ]);
    let described = json(&broker.ok(&["group", "describe", "audit", "--output", "json"]));
    assert_eq!(described["partitions"][1]["committed_offset"], 2);
    broker.ok(&[
        "group",
        "reset-offsets",
        "audit",
        "--topic",
        "events",
        "--to-datetime",
        "2000-01-01T00:00:00Z",
    ]);
    let resumed = broker.ok(&[
        "consume",
        "events",
        "--group",
        "audit",
        "--partition",
        "1",
        "--max-messages",
        "2",
    ]);
    assert_eq!(resumed, "x\ny\n");

    broker.ok(&["group", "delete", "audit"]);
    assert!(!broker.ok(&["group", "list"]).contains("audit"));
}

#[test]
fn config_and_cluster_commands() {
    let broker = TestBroker::start();
    broker.ok(&["topic", "create", "cfg", "--partitions", "1"]);
    broker.ok(&[
        "config",
        "set",
        "--topic",
        "cfg",
        "retention.ms=5000",
        "cleanup.policy=compact",
    ]);
    let text = broker.ok(&["config", "describe", "--topic", "cfg"]);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["retention.ms", "5000", "set"]),
        "{text}"
    );
    broker.ok(&["config", "delete", "--topic", "cfg", "retention.ms"]);
    let entries = json(&broker.ok(&[
        "config", "describe", "--topic", "cfg", "--all", "--output", "json",
    ]));
    let retention = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "retention.ms")
        .unwrap();
    assert_eq!(retention["default"], true);
    let broker_cfg = broker.ok(&["config", "describe", "--broker", "0", "--all"]);
    assert!(broker_cfg.contains("log.retention"), "{broker_cfg}");
    let neither = broker.run(&["config", "describe"]);
    assert_eq!(neither.status.code(), Some(2));

    let cluster = json(&broker.ok(&["cluster", "describe", "--output", "json"]));
    assert_eq!(cluster["controller_id"], 0);
    assert_eq!(cluster["brokers"][0]["id"], 0);
    let port: i64 = broker
        .bootstrap
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cluster["brokers"][0]["port"], port);
    let text = broker.ok(&["cluster", "describe"]);
    assert!(text.starts_with("Cluster: "), "{text}");
}

#[test]
fn bench_reports_throughput_and_latency() {
    let broker = TestBroker::start();
    broker.ok(&["topic", "create", "bench", "--partitions", "2"]);
    let report = json(&broker.ok(&[
        "bench",
        "produce",
        "--topic",
        "bench",
        "--num-records",
        "5000",
        "--record-size",
        "200",
        "--producers",
        "2",
        "--acks",
        "1",
        "--compression",
        "lz4",
        "--output",
        "json",
    ]));
    assert_eq!(report["records"], 5000);
    assert!(report["records_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["mb_per_sec"].as_f64().unwrap() > 0.0);
    let latency = &report["latency_ms"];
    assert!(latency["p50"].as_f64().unwrap() <= latency["p99"].as_f64().unwrap());
    assert!(latency["p99"].as_f64().unwrap() <= latency["max"].as_f64().unwrap());

    let text = broker.ok(&[
        "bench",
        "produce",
        "--topic",
        "bench",
        "--num-records",
        "1000",
        "--throughput",
        "2000",
    ]);
    assert!(text.contains("1000 records sent"), "{text}");
    assert!(text.contains("p99.9"), "{text}");
    // Rate-limited to 2000/s: 1000 records take about half a second, so well under 3000 records/s.
    let rate: f64 = text
        .split(", ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rate > 0.0 && rate < 3000.0, "{text}");

    let consumed = json(&broker.ok(&[
        "bench",
        "consume",
        "--topic",
        "bench",
        "--num-records",
        "6000",
        "--output",
        "json",
    ]));
    assert_eq!(consumed["records"], 6000);
    assert!(consumed["mb_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn unreachable_broker_and_help() {
    let out = Command::new(SLUICE)
        .args(["topic", "list", "--bootstrap-server", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("sluice: error: cannot reach any broker (127.0.0.1:1)"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));

    // Before the subcommand too, as Kafka's tools users write it.
    let out = Command::new(SLUICE)
        .args(["--bootstrap-server", "127.0.0.1:1", "topic", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("sluice: error: cannot reach any broker (127.0.0.1:1)"));
    let out = Command::new(SLUICE)
        .args([
            "--output=json",
            "group",
            "list",
            "--bootstrap-server=127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    for cmd in [
        "topic", "produce", "consume", "config", "cluster", "group", "bench",
    ] {
        let help = Command::new(SLUICE).args([cmd, "--help"]).output().unwrap();
        assert!(help.status.success());
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(text.contains("Examples:"), "{cmd}: {text}");
        assert!(text.contains("--bootstrap-server"), "{cmd}: {text}");
    }
}

#[test]
fn keyed_produce_lands_where_librdkafka_murmur2_random_puts_the_key() {
    let broker = TestBroker::start();
    broker.ok(&["topic", "create", "by-sluice", "--partitions", "7"]);
    broker.ok(&["topic", "create", "by-librdkafka", "--partitions", "7"]);
    let keys: Vec<String> = (0..100).map(|i| format!("customer-{i}")).collect();
    let input: String = keys.iter().map(|k| format!("{k}\t{k}\n")).collect();
    let out = broker.run_with_input(&["produce", "by-sluice", "--key-separator", "\t"], &input);
    assert!(out.status.success());
    let placed = |topic: &str| {
        let text = broker.ok(&[
            "consume",
            topic,
            "--from-beginning",
            "--max-messages",
            "100",
            "--format",
            "{key} {partition}",
        ]);
        let mut map: Vec<(String, i32)> = text
            .lines()
            .map(|l| {
                let (k, p) = l.split_once(' ').unwrap();
                (k.to_owned(), p.parse().unwrap())
            })
            .collect();
        map.sort();
        map
    };
    let ours = placed("by-sluice");
    assert_eq!(ours.len(), 100);
    for (key, partition) in &ours {
        assert_eq!(
            *partition,
            sluice_client::partitioner::murmur2_partition(key.as_bytes(), 7)
        );
    }
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if !python.is_file() {
        eprintln!(
            "SKIPPED the librdkafka half: {} not found (scripts/install-test-deps.sh)",
            python.display()
        );
        return;
    }
    let script = r#"
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "partitioner": "murmur2_random"})
for line in sys.stdin:
    k = line.strip()
    p.produce("by-librdkafka", key=k, value=k)
sys.exit(1 if p.flush(30) else 0)
"#;
    let mut child = Command::new(python)
        .args(["-c", script, &broker.bootstrap])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(keys.join("\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(placed("by-librdkafka"), ours);
}

#[test]
fn consume_as_a_group_member_shows_in_describe_and_commits_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let broker = TestBroker::start();
    broker.ok(&["topic", "create", "live", "--partitions", "2"]);
    broker.run_with_input(&["produce", "live", "--partition", "0"], "a\nb\nc\n");
    broker.run_with_input(&["produce", "live", "--partition", "1"], "d\n");
    let mut child = Command::new(SLUICE)
        .args(["consume", "live", "--group", "watchers", "--from-beginning"])
        .env("SLUICE_BOOTSTRAP_SERVER", &broker.bootstrap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got: Vec<String> = (0..4).map(|_| lines.next().unwrap().unwrap()).collect();
    got.sort();
    assert_eq!(got, ["a", "b", "c", "d"]);
    let described = json(&broker.ok(&["group", "describe", "watchers", "--output", "json"]));
    assert_eq!(described["state"], "Stable");
    assert_eq!(described["members"].as_array().unwrap().len(), 1);
    assert_eq!(described["protocol"], "range");
    // The member's partitions are listed whether or not an offset was committed yet (null then, `-` in text).
    let parts = described["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts
        .iter()
        .all(|p| p["committed_offset"].is_null() || p["committed_offset"].is_i64()));
    let text = broker.ok(&["group", "describe", "watchers"]);
    assert!(text.contains("live"), "{text}");
    assert!(
        !text.split_whitespace().any(|cell| cell == "-1"),
        "unknown values print as -: {text}"
    );

    // Ctrl-C: a clean exit that commits what was printed and leaves the group.
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child we spawned (not yet reaped) with a valid signal number has no
    // memory-safety preconditions.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let described = json(&broker.ok(&["group", "describe", "watchers", "--output", "json"]));
    assert_eq!(described["members"].as_array().unwrap().len(), 0);
    let parts = described["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().all(|p| p["lag"] == 0), "{parts:?}");
}

#[test]
fn log_lines_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(SLUICE)
        .args(["server", "--override", "listeners=PLAINTEXT://127.0.0.1:0"])
        .arg("--override")
        .arg(format!("log.dirs={}", dir.path().display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let first = lines.next().expect("a log line").unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(first.contains("INFO"), "{first}");
    assert!(
        !first.contains('\x1b'),
        "no ANSI escape in piped logs: {first:?}"
    );
}
