//! `sluice reassign` run as a process: `generate` and every input fault against an in-process single node, and
//! `execute` / `verify` / `cancel` / `list` against an in-process 3-node cluster (the kit's `TestCluster`, nodes 0,
//! 1 and 2), where partitions really move: an RF1 partition from broker 1 to broker 2 with its records readable
//! afterwards, an RF2 partition onto other brokers, and a reassignment held in progress (its new replica's broker
//! is stopped) that is listed, refused without `--additional`, waited for in vain and cancelled. The messages are
//! those of Kafka's `kafka-reassign-partitions.sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_testkit::{BlockingBroker, TestCluster};

mod common;
use common::{run_sluice as run_at, SLUICE};

/// Asserts success; returns stdout.
fn ok(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "sluice {args:?} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts exit status `code` and one line on stderr containing `expected`; returns that line.
fn fails(out: &Output, code: i32, expected: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {} stderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("sluice: error: "), "{stderr}");
    assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    stderr
}

/// Asserts exit status `code`; returns the lines on stderr (progress, then the error).
fn stderr_lines(out: &Output, code: i32) -> Vec<String> {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Writes `text` to `name` in `dir`; returns the path as a string.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A reassignment file moving each `(topic, partition)` to its replicas.
fn plan(moves: &[(&str, i32, &[i32])]) -> String {
    let partitions: Vec<Value> = moves
        .iter()
        .map(|(topic, partition, replicas)| {
            serde_json::json!({"topic": topic, "partition": partition, "replicas": replicas})
        })
        .collect();
    serde_json::json!({"version": 1, "partitions": partitions}).to_string()
}

/// The replicas of each partition of `topic`, from `sluice topic describe --output json`.
fn replicas(bootstrap: &str, topic: &str) -> Vec<Vec<i64>> {
    let args = ["topic", "describe", topic, "--output", "json"];
    let described = json(&ok(run_at(bootstrap, &args, ""), &args));
    described[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_i64().unwrap())
                .collect()
        })
        .collect()
}

/// Returns `out`, failing the test with a plain diagnosis when the broker does not serve the reassignment APIs
/// (AlterPartitionReassignments, key 45; ListPartitionReassignments, key 46).
fn served(out: Output) -> Output {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("does not support ListPartitionReassignments")
            && !stderr.contains("does not support AlterPartitionReassignments")
            && !stderr.contains("UnsupportedVersion"),
        "the broker does not serve partition reassignments (API keys 45 and 46): {stderr}"
    );
    out
}

// ---------------------------------------------------------------------------------------------------------
// A single node: generate, and input faults.

#[test]
fn generate_prints_the_current_and_a_proposed_assignment_in_kafkas_format() {
    let broker = BlockingBroker::start();
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    for (topic, partitions) in [("orders", "3"), ("audit", "1")] {
        let args = ["topic", "create", topic, "--partitions", partitions];
        ok(run_at(&bootstrap, &args, ""), &args);
    }
    let topics = write(
        dir.path(),
        "topics.json",
        r#"{"topics":[{"topic":"orders"},{"topic":"audit"}],"version":1}"#,
    );
    let args = [
        "reassign",
        "generate",
        "--topics-to-move-json-file",
        &topics,
        "--broker-list",
        "0",
    ];
    let text = ok(run_at(&bootstrap, &args, ""), &args);
    // Kafka's layout: a heading, the JSON, a blank line, a heading, the JSON.
    let expected = r#"{"version":1,"partitions":[{"topic":"audit","partition":0,"replicas":[0],"log_dirs":["any"]},{"topic":"orders","partition":0,"replicas":[0],"log_dirs":["any"]},{"topic":"orders","partition":1,"replicas":[0],"log_dirs":["any"]},{"topic":"orders","partition":2,"replicas":[0],"log_dirs":["any"]}]}"#;
    assert_eq!(
        text,
        format!(
            "Current partition replica assignment\n{expected}\n\n\
             Proposed partition reassignment configuration\n{expected}\n"
        )
    );
    // The proposal is a valid --reassignment-json-file (execute would accept it) and is stable.
    assert_eq!(text, ok(run_at(&bootstrap, &args, ""), &args));

    let mut json_args = args.to_vec();
    json_args.extend(["--output", "json"]);
    let out = json(&ok(run_at(&bootstrap, &json_args, ""), &json_args));
    assert_eq!(out["current"], json(expected));
    assert_eq!(out["proposed"], json(expected));

    let help = ok(
        run_at(&bootstrap, &["reassign", "--help"], ""),
        &["reassign", "--help"],
    );
    assert!(
        help.contains("Examples:") && help.contains("--bootstrap-server"),
        "{help}"
    );
    for sub in ["generate", "execute", "verify", "cancel", "list"] {
        assert!(help.contains(sub), "{sub}: {help}");
    }
}

/// Bad files and options are usage errors (exit status 2, one line naming the fault) found before any broker is
/// asked; what only the cluster can tell (an unknown topic, partition or broker, a replication factor above the
/// broker count) is a failure (exit status 1).
#[test]
fn bad_input_is_one_line_and_usage_errors_exit_2() {
    let broker = BlockingBroker::start();
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let args = ["topic", "create", "orders", "--partitions", "2"];
    ok(run_at(&bootstrap, &args, ""), &args);
    let topics = write(
        dir.path(),
        "topics.json",
        r#"{"topics":[{"topic":"orders"}]}"#,
    );
    let missing = dir.path().join("missing.json").display().to_string();
    let malformed = write(
        dir.path(),
        "malformed.json",
        r#"{"topics": [{"topic": "orders"}"#,
    );
    let repeated = write(
        dir.path(),
        "repeated.json",
        r#"{"topics":[{"topic":"orders"},{"topic":"orders"}]}"#,
    );
    let unknown = write(
        dir.path(),
        "unknown.json",
        r#"{"topics":[{"topic":"nope"}]}"#,
    );
    let generate = |file: &str, brokers: &str| {
        run_at(
            &bootstrap,
            &[
                "reassign",
                "generate",
                "--topics-to-move-json-file",
                file,
                "--broker-list",
                brokers,
            ],
            "",
        )
    };
    fails(
        &generate(&missing, "0"),
        2,
        "cannot read --topics-to-move-json-file",
    );
    fails(
        &generate(&malformed, "0"),
        2,
        "malformed.json: not valid JSON",
    );
    fails(
        &generate(&repeated, "0"),
        2,
        "List of topics to reassign contains duplicate entries: orders",
    );
    fails(&generate(&topics, ""), 2, "--broker-list is empty");
    fails(&generate(&topics, "0,x"), 2, "\"x\" is not a broker id");
    fails(
        &generate(&topics, "0,0"),
        2,
        "Broker list contains duplicate entries: 0",
    );
    fails(&generate(&unknown, "0"), 1, "Topic nope not found.");
    fails(&generate(&topics, "0,7"), 1, "Unknown broker id 7");

    // The reassignment file of execute, verify and cancel; usage errors are found with no broker running.
    let cases = [
        (
            r#"{"version":1,"partitions":[{"topic":"orders","partition":0,"replicas":[0,0]}]}"#,
            "Partition replica lists may not contain duplicate entries: orders-0 contains multiple entries for 0",
        ),
        (
            r#"{"version":1,"partitions":[]}"#,
            "Partition reassignment list cannot be empty",
        ),
        (
            r#"{"version":1,"partitions":[{"topic":"orders","partition":0,"replicas":[]}]}"#,
            "Partition replica list cannot be empty",
        ),
        (
            r#"{"version":1,"partitions":[{"topic":"orders","partition":0,"replicas":[0],"log_dirs":["/d"]}]}"#,
            "only \"any\" is supported",
        ),
        (r#"{"version":2,"partitions":[]}"#, "unsupported version 2"),
        ("not json", "not valid JSON"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = write(dir.path(), &format!("plan-{i}.json"), text);
        for command in ["execute", "verify", "cancel"] {
            let out = Command::new(SLUICE)
                .args(["reassign", command, "--reassignment-json-file", &file])
                .args(["--bootstrap-server", "127.0.0.1:1"])
                .output()
                .unwrap();
            fails(&out, 2, expected);
        }
    }
    let out = run_at(
        &bootstrap,
        &["reassign", "execute", "--reassignment-json-file", &missing],
        "",
    );
    fails(&out, 2, "cannot read --reassignment-json-file");

    // What the cluster tells: unknown broker, topic, partition (Kafka's messages), checked before anything is
    // submitted.
    for (moves, expected) in [
        (plan(&[("orders", 0, &[0, 5])]), "Unknown broker id 5"),
        (plan(&[("nope", 0, &[0])]), "Topic nope not found."),
        (
            plan(&[("orders", 0, &[0]), ("orders", 9, &[0])]),
            "Unable to find partition: orders-9",
        ),
    ] {
        let file = write(dir.path(), "cluster-fault.json", &moves);
        let out = run_at(
            &bootstrap,
            &["reassign", "execute", "--reassignment-json-file", &file],
            "",
        );
        fails(&out, 1, expected);
    }
    // Argument-parser errors are usage errors too.
    let out = run_at(&bootstrap, &["reassign", "execute"], "");
    assert_eq!(out.status.code(), Some(2));
    let out = run_at(
        &bootstrap,
        &[
            "reassign",
            "verify",
            "--reassignment-json-file",
            "x",
            "--timeout-ms",
            "5",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "--timeout-ms needs --wait");
}

/// A plan whose partitions are where it wants them: execute resubmits them, with a throttle (the broker's
/// dynamic rates and the topic's throttled replicas), verify says completed and clears the throttle, cancel finds
/// nothing to cancel.
#[test]
fn single_node_execute_verify_cancel_and_the_throttle() {
    let broker = BlockingBroker::start();
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let args = ["topic", "create", "orders", "--partitions", "2"];
    ok(run_at(&bootstrap, &args, ""), &args);
    let file = write(
        dir.path(),
        "plan.json",
        &plan(&[("orders", 0, &[0]), ("orders", 1, &[0])]),
    );
    let list = served(run_at(&bootstrap, &["reassign", "list"], ""));
    assert_eq!(ok(list, &[]), "No partition reassignments found.\n");

    let args = [
        "reassign",
        "execute",
        "--reassignment-json-file",
        &file,
        "--throttle",
        "1000000",
    ];
    let text = ok(run_at(&bootstrap, &args, ""), &args);
    assert!(
        text.contains("The inter-broker throttle limit was set to 1000000 B/s"),
        "{text}"
    );
    let args = ["config", "describe", "--broker", "0"];
    let configs = ok(run_at(&bootstrap, &args, ""), &args);
    assert!(
        has_entry(&configs, "leader.replication.throttled.rate", "1000000"),
        "{configs}"
    );

    let args = ["reassign", "execute", "--reassignment-json-file", &file];
    let text = ok(run_at(&bootstrap, &args, ""), &args);
    let current = r#"{"version":1,"partitions":[{"topic":"orders","partition":0,"replicas":[0],"log_dirs":["any"]},{"topic":"orders","partition":1,"replicas":[0],"log_dirs":["any"]}]}"#;
    assert_eq!(
        text,
        format!(
            "Current partition replica assignment\n\n{current}\n\n\
             Save this to use as the --reassignment-json-file option during rollback\n\
             Successfully started partition reassignments for orders-0,orders-1\n"
        )
    );
    let args = [
        "reassign",
        "verify",
        "--reassignment-json-file",
        &file,
        "--wait",
    ];
    let text = ok(run_at(&bootstrap, &args, ""), &args);
    assert_eq!(
        text,
        "Status of partition reassignment:\n\
         Reassignment of partition orders-0 is completed.\n\
         Reassignment of partition orders-1 is completed.\n\
         Clearing broker-level throttles on broker 0\n\
         Clearing topic-level throttles on topic orders\n"
    );
    let args = ["config", "describe", "--broker", "0"];
    let configs = ok(run_at(&bootstrap, &args, ""), &args);
    assert!(!configs.contains("throttled"), "{configs}");
    let args = ["config", "describe", "--topic", "orders"];
    let configs = ok(run_at(&bootstrap, &args, ""), &args);
    assert!(!configs.contains("throttled"), "{configs}");
    let args = [
        "reassign",
        "cancel",
        "--reassignment-json-file",
        &file,
        "--preserve-throttles",
    ];
    let text = ok(run_at(&bootstrap, &args, ""), &args);
    assert_eq!(
        text,
        "None of the specified partition reassignments are active.\n"
    );
}

/// Whether `sluice config describe`'s table has `key` set to `value`.
fn has_entry(table: &str, key: &str, value: &str) -> bool {
    table
        .lines()
        .any(|l| l.split_whitespace().take(2).eq([key, value]))
}

// ---------------------------------------------------------------------------------------------------------
// A 3-node cluster: partitions move.

/// The kit's 3-node cluster on its own runtime, so the test thread runs the binary synchronously; stopped when
/// dropped.
struct Cluster {
    cluster: Option<TestCluster>,
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    fn start(overrides: &[(&str, &str)]) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cluster = runtime.block_on(TestCluster::start_with(3, overrides));
        Cluster {
            cluster: Some(cluster),
            runtime,
        }
    }

    fn cluster(&self) -> &TestCluster {
        self.cluster.as_ref().unwrap()
    }

    fn bootstrap(&self) -> String {
        self.cluster().bootstrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        run_at(&self.bootstrap(), args, "")
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(self.run(args), args)
    }

    fn active_controller(&self) -> usize {
        self.runtime.block_on(self.cluster().active_controller())
    }

    fn kill(&mut self, i: usize) {
        let cluster = self.cluster.as_mut().unwrap();
        self.runtime.block_on(cluster.kill(i));
    }

    /// Creates `topic`; returns the replicas of each partition once the metadata shows every partition with a
    /// leader (the broker asked applies the controller's records a moment after the controller).
    fn create_topic(&self, topic: &str, partitions: i32, replication_factor: i16) -> Vec<Vec<i64>> {
        let (p, rf) = (partitions.to_string(), replication_factor.to_string());
        self.ok(&[
            "topic",
            "create",
            topic,
            "--partitions",
            &p,
            "--replication-factor",
            &rf,
        ]);
        let args = ["topic", "describe", topic, "--output", "json"];
        eventually(
            &format!("{topic} in the metadata"),
            Duration::from_secs(20),
            || {
                let out = self.run(&args);
                out.status.success()
                    && json(&String::from_utf8_lossy(&out.stdout))[0]["partitions"]
                        .as_array()
                        .is_some_and(|ps| {
                            ps.len() == partitions as usize
                                && ps.iter().all(|p| p["leader"].as_i64() >= Some(0))
                        })
            },
        );
        replicas(&self.bootstrap(), topic)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            self.runtime.block_on(cluster.shutdown());
        }
    }
}

/// Polls `check` every 200 ms until it returns true or `timeout` passes.
fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Moves an RF1 partition from broker 1 to broker 2 (KIP-455: the controller adds 2, it catches up, 1 is
/// removed): execute prints the rollback plan and starts it, verify --wait shows progress and completion and
/// clears the throttles, and the partition's records are then read from broker 2.
#[test]
fn cluster_moves_an_rf1_partition_from_broker_1_to_broker_2() {
    let cluster = Cluster::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let placed = cluster.create_topic("moving", 3, 1);
    // Striped placement puts one partition on each broker; take the one on broker 1.
    let partition = placed
        .iter()
        .position(|r| r == &[1])
        .unwrap_or_else(|| panic!("no partition on broker 1: {placed:?}"))
        as i32;
    let p = partition.to_string();
    let input: String = (0..200).map(|i| format!("record {i}\n")).collect();
    let out = run_at(
        &cluster.bootstrap(),
        &["produce", "moving", "--partition", &p],
        &input,
    );
    ok(out, &["produce"]);

    let file = write(
        dir.path(),
        "plan.json",
        &plan(&[("moving", partition, &[2])]),
    );
    let out = served(cluster.run(&["reassign", "execute", "--reassignment-json-file", &file]));
    let text = ok(out, &["reassign", "execute"]);
    assert_eq!(
        text,
        format!(
            "Current partition replica assignment\n\n\
             {{\"version\":1,\"partitions\":[{{\"topic\":\"moving\",\"partition\":{partition},\"replicas\":[1],\"log_dirs\":[\"any\"]}}]}}\n\n\
             Save this to use as the --reassignment-json-file option during rollback\n\
             Successfully started partition reassignment for moving-{partition}\n"
        )
    );

    let out = cluster.run(&[
        "reassign",
        "verify",
        "--reassignment-json-file",
        &file,
        "--wait",
        "--timeout-ms",
        "60000",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = ok(out, &["reassign", "verify", "--wait"]);
    assert_eq!(
        text,
        format!(
            "Status of partition reassignment:\n\
             Reassignment of partition moving-{partition} is completed.\n\
             Clearing broker-level throttles on brokers 0,1,2\n\
             Clearing topic-level throttles on topic moving\n"
        )
    );
    // Progress while it waited: at least the final count, on stderr.
    assert!(
        stderr.contains("Waiting for partition reassignments: 1/1 partitions complete"),
        "{stderr}"
    );
    assert_eq!(
        replicas(&cluster.bootstrap(), "moving")[partition as usize],
        [2]
    );
    assert_eq!(
        cluster.ok(&["reassign", "list"]),
        "No partition reassignments found.\n"
    );

    // The records moved with it.
    let text = cluster.ok(&[
        "consume",
        "moving",
        "--partition",
        &p,
        "--offset",
        "earliest",
        "--max-messages",
        "200",
        "--timeout-ms",
        "20000",
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 200);
    assert_eq!((lines[0], lines[199]), ("record 0", "record 199"));

    // verify without --wait, as JSON.
    let out = json(&cluster.ok(&[
        "reassign",
        "verify",
        "--reassignment-json-file",
        &file,
        "--output",
        "json",
    ]));
    assert_eq!(out["complete"], true);
    assert_eq!(out["throttles_cleared"], true);
    assert_eq!(out["partitions"][0]["state"], "completed");
    assert_eq!(
        out["partitions"][0]["current_replicas"],
        serde_json::json!([2])
    );
}

/// Moves an RF2 partition onto other brokers: from {a, b} to [c, a] (c the broker it was not on, now first, the
/// preferred leader); the metadata then shows exactly [c, a] and c leads once elected.
#[test]
fn cluster_moves_an_rf2_partition_to_other_brokers() {
    let cluster = Cluster::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let placed = cluster.create_topic("pairs", 1, 2);
    let (a, b) = (placed[0][0] as i32, placed[0][1] as i32);
    let c = (0..3).find(|x| *x != a && *x != b).unwrap();
    let input: String = (0..50).map(|i| format!("pair {i}\n")).collect();
    ok(
        run_at(&cluster.bootstrap(), &["produce", "pairs"], &input),
        &["produce"],
    );

    // KIP-860: a plan that would make it RF 3 is refused when the replication factor must not change.
    let grow = write(dir.path(), "grow.json", &plan(&[("pairs", 0, &[a, b, c])]));
    let args = [
        "reassign",
        "execute",
        "--reassignment-json-file",
        &grow,
        "--disallow-replication-factor-change",
    ];
    let out = served(cluster.run(&args));
    let err = fails(&out, 1, "Error reassigning partition(s)");
    assert!(
        err.contains("The replication factor is changed from 2 to 3"),
        "{err}"
    );
    assert_eq!(replicas(&cluster.bootstrap(), "pairs")[0].len(), 2);

    let file = write(dir.path(), "plan.json", &plan(&[("pairs", 0, &[c, a])]));
    let args = [
        "reassign",
        "execute",
        "--reassignment-json-file",
        &file,
        "--disallow-replication-factor-change",
    ];
    let out = served(cluster.run(&args));
    let text = ok(out, &["reassign", "execute"]);
    assert!(
        text.contains(&format!(
            "{{\"topic\":\"pairs\",\"partition\":0,\"replicas\":[{a},{b}],\"log_dirs\":[\"any\",\"any\"]}}"
        )),
        "the rollback plan: {text}"
    );
    assert!(
        text.ends_with("Successfully started partition reassignment for pairs-0\n"),
        "{text}"
    );
    let text = cluster.ok(&[
        "reassign",
        "verify",
        "--reassignment-json-file",
        &file,
        "--wait",
        "--timeout-ms",
        "60000",
    ]);
    assert!(
        text.starts_with(
            "Status of partition reassignment:\nReassignment of partition pairs-0 is completed.\n"
        ),
        "{text}"
    );
    assert_eq!(
        replicas(&cluster.bootstrap(), "pairs")[0],
        [i64::from(c), i64::from(a)]
    );
    // Every record is still there, whoever leads now.
    let text = cluster.ok(&[
        "consume",
        "pairs",
        "--offset",
        "earliest",
        "--max-messages",
        "50",
        "--timeout-ms",
        "20000",
    ]);
    assert_eq!(text.lines().count(), 50);
    // Resubmitting the same plan is harmless, and the rollback plan moves it back.
    let rollback = write(dir.path(), "rollback.json", &plan(&[("pairs", 0, &[a, b])]));
    cluster.ok(&["reassign", "execute", "--reassignment-json-file", &rollback]);
    let text = cluster.ok(&[
        "reassign",
        "verify",
        "--reassignment-json-file",
        &rollback,
        "--wait",
        "--timeout-ms",
        "60000",
    ]);
    assert!(
        text.contains("Reassignment of partition pairs-0 is completed."),
        "{text}"
    );
    let now = replicas(&cluster.bootstrap(), "pairs");
    assert_eq!(now[0], [i64::from(a), i64::from(b)]);
}

/// A reassignment that cannot finish (the broker it adds is stopped, still registered and unfenced for the
/// session timeout raised here) is listed with its adding and removing replicas, shown in progress, blocks
/// another execute unless --additional, makes verify --wait give up after its timeout, and is cancelled: the
/// partition is back on its old replicas.
#[test]
fn cluster_reassignment_in_progress_is_listed_refused_and_cancelled() {
    let mut cluster = Cluster::start(&[("broker.session.timeout.ms", "60000")]);
    let dir = tempfile::tempdir().unwrap();
    let placed = cluster.create_topic("stuck", 3, 2);
    // The broker to stop: not the active controller. The partition: one it does not hold.
    let controller = cluster.active_controller() as i32;
    let down = (0..3).find(|x| *x != controller).unwrap();
    let partition = placed
        .iter()
        .position(|r| !r.contains(&i64::from(down)))
        .unwrap_or_else(|| panic!("every partition is on broker {down}: {placed:?}"));
    let (a, b) = (placed[partition][0] as i32, placed[partition][1] as i32);
    let p = partition as i32;
    served(cluster.run(&["reassign", "list"]));
    cluster.kill(down as usize);

    let file = write(dir.path(), "plan.json", &plan(&[("stuck", p, &[a, down])]));
    let text = cluster.ok(&["reassign", "execute", "--reassignment-json-file", &file]);
    assert!(
        text.ends_with(&format!(
            "Successfully started partition reassignment for stuck-{p}\n"
        )),
        "{text}"
    );
    let listed = cluster.ok(&["reassign", "list"]);
    assert_eq!(
        listed,
        format!(
            "Current partition reassignments:\nstuck-{p}: replicas: {a},{down},{b}. adding: {down}. removing: {b}.\n"
        )
    );
    let listed = json(&cluster.ok(&["reassign", "list", "--output", "json"]));
    assert_eq!(
        listed["reassignments"][0]["adding_replicas"],
        serde_json::json!([down])
    );

    let text = cluster.ok(&["reassign", "verify", "--reassignment-json-file", &file]);
    assert_eq!(
        text,
        format!(
            "Status of partition reassignment:\nReassignment of partition stuck-{p} is still in progress.\n"
        ),
        "no throttle is cleared while a reassignment runs"
    );
    let out = cluster.run(&[
        "reassign",
        "verify",
        "--reassignment-json-file",
        &file,
        "--wait",
        "--timeout-ms",
        "1500",
    ]);
    assert_eq!(
        stderr_lines(&out, 1),
        [
            "Waiting for partition reassignments: 0/1 partitions complete".to_owned(),
            format!(
                "sluice: error: gave up after 1500 ms: 0/1 partitions complete, still moving: stuck-{p}"
            )
        ],
        "a progress line only when the count changes, then the error"
    );

    // Another plan is refused while one runs, unless --additional.
    let other = (0..3).find(|x| *x != partition).unwrap();
    let other_replicas: Vec<i32> = placed[other].iter().map(|r| *r as i32).collect();
    let other_file = write(
        dir.path(),
        "other.json",
        &plan(&[("stuck", other as i32, &other_replicas)]),
    );
    let out = cluster.run(&[
        "reassign",
        "execute",
        "--reassignment-json-file",
        &other_file,
    ]);
    fails(
        &out,
        1,
        "Cannot execute because there is an existing partition assignment.  Use --additional",
    );
    let text = cluster.ok(&[
        "reassign",
        "execute",
        "--reassignment-json-file",
        &other_file,
        "--additional",
    ]);
    assert!(
        text.contains("Successfully started partition reassignment for"),
        "{text}"
    );

    let out = cluster.run(&["reassign", "cancel", "--reassignment-json-file", &file]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = ok(out, &["reassign", "cancel"]);
    assert!(
        stderr.contains(&format!(
            "sluice: warning: cannot clear the replication throttle of broker {down}"
        )),
        "the stopped broker cannot be reached: {stderr}"
    );
    assert_eq!(
        text,
        format!(
            "Successfully cancelled partition reassignment for: stuck-{p}\n\
             Clearing broker-level throttles on brokers 0,1,2\n\
             Clearing topic-level throttles on topic stuck\n"
        )
    );
    // (`topic describe` cannot be used while the stopped broker still leads partitions: it lists their offsets.)
    let reverted = format!(
        "There is no active reassignment of partition stuck-{p}, but replica set is {a},{b} rather than {a},{down}."
    );
    eventually(
        "the cancelled partition back on its replicas",
        Duration::from_secs(20),
        || {
            cluster
                .ok(&["reassign", "verify", "--reassignment-json-file", &file])
                .contains(&reverted)
        },
    );
    let out = cluster.run(&[
        "reassign",
        "verify",
        "--reassignment-json-file",
        &file,
        "--wait",
        "--timeout-ms",
        "30000",
    ]);
    // Progress, the warning about the stopped broker's throttle, then the error.
    let lines = stderr_lines(&out, 1);
    assert_eq!(
        lines.first().map(String::as_str),
        Some("Waiting for partition reassignments: 0/1 partitions complete"),
        "{lines:?}"
    );
    assert!(
        lines.last().unwrap().starts_with("sluice: error: ")
            && lines
                .last()
                .unwrap()
                .contains(&format!("not on their target replicas: stuck-{p}")),
        "{lines:?}"
    );
    assert_eq!(
        cluster.ok(&["reassign", "list"]),
        "No partition reassignments found.\n"
    );
    let text = cluster.ok(&["reassign", "cancel", "--reassignment-json-file", &file]);
    assert!(
        text.starts_with("None of the specified partition reassignments are active.\n"),
        "{text}"
    );
}

/// `topic describe` while a partition's only replica is down: the other partitions' offsets are still shown
/// (ListOffsets answers per partition, as Kafka's admin client does); the lost one shows -1.
#[test]
fn cluster_topic_describe_shows_the_reachable_partitions_when_a_leader_is_down() {
    let mut cluster = Cluster::start(&[]);
    let placed = cluster.create_topic("spread", 3, 1);
    // Every partition gets records: keyless records are sticky and could all land on the one killed below.
    let input: String = (0..10).map(|i| format!("r {i}\n")).collect();
    for p in 0..3 {
        let p = p.to_string();
        ok(
            run_at(
                &cluster.bootstrap(),
                &["produce", "spread", "--partition", &p],
                &input,
            ),
            &["produce"],
        );
    }
    let controller = cluster.active_controller();
    let (lost, victim) = placed
        .iter()
        .enumerate()
        .map(|(p, r)| (p, r[0] as usize))
        .find(|(_, node)| *node != controller)
        .expect("a partition led by a node that is not the controller");
    cluster.kill(victim);
    let text = cluster.ok(&["topic", "describe", "spread", "--output", "json"]);
    let partitions = json(&text)[0]["partitions"].as_array().unwrap().clone();
    let mut total = 0;
    for p in &partitions {
        let index = p["partition"].as_i64().unwrap() as usize;
        let latest = p["latest_offset"].as_i64().unwrap();
        if index == lost {
            assert_eq!(latest, -1, "{p}");
        } else {
            assert!(latest >= 0, "{p}");
            total += latest;
        }
    }
    assert_eq!(total, 20, "{text}");
}
