//! `sluice cluster describe` and `sluice cluster quorum` run as processes against an in-process single node (a
//! quorum of one): brokers with their fenced state, the quorum summary, and `--status` / `--replication` checked
//! line by line against the patterns Kafka's own `MetadataQuorumCommandTest` asserts for
//! `kafka-metadata-quorum.sh describe`. Fencing in a 3-node cluster is in `tests/interop/python/test_cluster.py`.

use std::process::{Command, Output};

use sluice_testkit::BlockingBroker;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// The kit's in-process broker, on its own runtime so the test thread can run the binary synchronously; shut
/// down cleanly when dropped.
struct TestBroker {
    bootstrap: String,
    broker: BlockingBroker,
}

impl TestBroker {
    fn start() -> TestBroker {
        let broker = BlockingBroker::start();
        TestBroker {
            bootstrap: broker.bootstrap(),
            broker,
        }
    }

    fn port(&self) -> i64 {
        i64::from(self.broker.port())
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(SLUICE)
            .args(args)
            .env("SLUICE_BOOTSTRAP_SERVER", &self.bootstrap)
            .output()
            .unwrap()
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

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn describe_lists_brokers_with_their_state_and_the_quorum() {
    let broker = TestBroker::start();
    let port = broker.port().to_string();
    let text = broker.ok(&["cluster", "describe"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("Cluster: ") && lines[0].len() == 9 + 22,
        "{text}"
    );
    assert_eq!(lines[1], "Controller: 0", "{text}");
    assert_eq!(
        words(lines[2]),
        ["ID", "HOST", "PORT", "RACK", "STATE"],
        "{text}"
    );
    assert_eq!(
        words(lines[3]),
        ["0", "127.0.0.1", port.as_str(), "-", "unfenced"],
        "{text}"
    );
    let quorum = lines[4];
    assert!(
        quorum.starts_with("Quorum: leader 0, epoch ")
            && quorum.ends_with(", voters [0], observers []"),
        "{text}"
    );
    assert_eq!(lines.len(), 5, "{text}");

    let described = json(&broker.ok(&["cluster", "describe", "--output", "json"]));
    assert_eq!(described["cluster_id"].as_str().unwrap().len(), 22);
    assert_eq!(described["controller_id"], 0);
    assert_eq!(
        described["fenced_listed"], true,
        "the node speaks DescribeCluster v2"
    );
    let b = &described["brokers"][0];
    assert_eq!(
        (&b["id"], &b["port"], &b["fenced"], &b["rack"]),
        (
            &serde_json::json!(0),
            &serde_json::json!(broker.port()),
            &serde_json::json!(false),
            &serde_json::Value::Null
        )
    );
    assert_eq!(described["quorum"]["leader_id"], 0);
    assert_eq!(described["quorum"]["voters"], serde_json::json!([0]));
    assert!(described["quorum"]["high_watermark"].as_i64().unwrap() >= 0);
    assert!(described["quorum_error"].is_null());
}

/// The patterns of Kafka's `MetadataQuorumCommandTest.testDescribeQuorumStatusSuccessful` and, on one voter,
/// `testOnlyOneBrokerAndOneController` (lag 0, lag time 0).
#[test]
fn quorum_status_prints_kafkas_fields() {
    let broker = TestBroker::start();
    let text = broker.ok(&["cluster", "quorum", "--status"]);
    let lines: Vec<&str> = text.lines().collect();
    let labels = [
        "ClusterId:",
        "LeaderId:",
        "LeaderEpoch:",
        "HighWatermark:",
        "MaxFollowerLag:",
        "MaxFollowerLagTimeMs:",
        "CurrentVoters:",
        "CurrentObservers:",
    ];
    assert_eq!(lines.len(), labels.len(), "{text}");
    for (line, label) in lines.iter().zip(labels) {
        assert!(
            line.starts_with(label),
            "{line:?} should start with {label}"
        );
        // Every value starts at column 24, as Kafka pads its labels.
        assert!(
            line.len() > 24
                && line[label.len()..24].trim().is_empty()
                && !line[24..].starts_with(' '),
            "{line:?}"
        );
    }
    assert_eq!(
        lines[0][24..].len(),
        22,
        "a 22-character cluster id: {text}"
    );
    assert_eq!(lines[1], "LeaderId:               0");
    assert!(lines[2][24..].parse::<u32>().is_ok(), "{text}");
    assert!(lines[3][24..].parse::<i64>().is_ok(), "{text}");
    assert_eq!(lines[4], "MaxFollowerLag:         0");
    assert_eq!(lines[5], "MaxFollowerLagTimeMs:   0");
    assert_eq!(
        lines[6],
        "CurrentVoters:          [{\"id\": 0, \"directoryId\": null}]"
    );
    assert_eq!(lines[7], "CurrentObservers:       []");

    let status = json(&broker.ok(&["cluster", "quorum", "--status", "--output", "json"]));
    assert_eq!(status["leader_id"], 0);
    assert_eq!(status["max_follower_lag"], 0);
    assert_eq!(status["current_voters"][0]["id"], 0);
    assert_eq!(status["current_observers"], serde_json::json!([]));
    assert_eq!(status["cluster_id"].as_str().unwrap(), &lines[0][24..]);
}

/// The patterns of Kafka's `MetadataQuorumCommandTest.testDescribeQuorumReplicationSuccessful` and
/// `testHumanReadableOutput`: a tab-separated table, the leader first with lag 0.
#[test]
fn quorum_replication_prints_kafkas_table() {
    let broker = TestBroker::start();
    let text = broker.ok(&["cluster", "quorum", "--replication"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let header: Vec<&str> = lines[0].split('\t').map(str::trim_end).collect();
    assert_eq!(
        header,
        [
            "NodeId",
            "DirectoryId",
            "LogEndOffset",
            "Lag",
            "LastFetchTimestamp",
            "LastCaughtUpTimestamp",
            "Status",
            ""
        ],
        "every cell ends with a tab: {text:?}"
    );
    let leader = words(lines[1]);
    assert_eq!(leader[0], "0");
    assert_eq!(
        leader[1], "AAAAAAAAAAAAAAAAAAAAAA",
        "no directory id: Kafka's zero UUID"
    );
    assert!(leader[2].parse::<i64>().unwrap() >= 0);
    assert_eq!(leader[3], "0", "the leader has no lag");
    assert!(leader[4].parse::<i64>().is_ok() && leader[5].parse::<i64>().is_ok());
    assert_eq!(leader[6], "Leader");

    let human = broker.ok(&["cluster", "quorum", "--replication", "--human-readable"]);
    let row: Vec<&str> = human
        .lines()
        .nth(1)
        .unwrap()
        .split('\t')
        .map(str::trim)
        .collect();
    for cell in [row[4], row[5]] {
        let ms = cell
            .strip_suffix(" ms ago")
            .unwrap_or_else(|| panic!("{human}"));
        assert!(ms.parse::<u64>().is_ok(), "{human}");
    }

    let replication = json(&broker.ok(&["cluster", "quorum", "--replication", "--output", "json"]));
    let replicas = replication["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0]["node_id"], 0);
    assert_eq!(replicas[0]["status"], "Leader");
    assert_eq!(replicas[0]["lag"], 0);
}

/// Kafka's tool wants exactly one of --status and --replication, and --human-readable only with
/// --replication; here these are usage errors (exit status 2).
#[test]
fn quorum_options_are_checked_and_errors_are_one_line() {
    let broker = TestBroker::start();
    for args in [
        &["cluster", "quorum"][..],
        &["cluster", "quorum", "--status", "--replication"],
        &["cluster", "quorum", "--status", "--human-readable"],
        &["cluster", "quorum", "--human-readable"],
    ] {
        let out = broker.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = Command::new(SLUICE)
        .args([
            "cluster",
            "quorum",
            "--status",
            "--bootstrap-server",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("sluice: error: cannot reach any broker"),
        "{stderr}"
    );
    let help = broker.ok(&["cluster", "--help"]);
    assert!(help.contains("sluice cluster quorum --status"), "{help}");
}
