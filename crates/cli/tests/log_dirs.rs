//! `sluice log-dirs describe` against an in-process single node: Kafka's `kafka-log-dirs.sh --describe` output
//! (two status lines, then the JSON object), the partitions with their sizes, `--topic-list` and `--broker-list`.

use std::process::Output;

use serde_json::Value;
use sluice_testkit::BlockingBroker;

mod common;
use common::run_sluice;

fn ok(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "sluice {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn describe_prints_kafkas_format_with_every_partition() {
    let broker = BlockingBroker::start();
    let bootstrap = broker.bootstrap();
    for (topic, partitions) in [("orders", "2"), ("other", "1")] {
        let args = ["topic", "create", topic, "--partitions", partitions];
        ok(run_sluice(&bootstrap, &args, ""), &args);
    }
    let args = ["produce", "orders", "--partition", "0"];
    ok(run_sluice(&bootstrap, &args, "a\nb\nc\n"), &args);

    let args = ["log-dirs", "describe", "--topic-list", "orders"];
    let out = ok(run_sluice(&bootstrap, &args, ""), &args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "Querying brokers for log directories information");
    assert!(
        lines[1].starts_with("Received log directory information from brokers "),
        "{out}"
    );
    let json: Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(json["version"], 1);
    let brokers = json["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 1);
    let dirs = brokers[0]["logDirs"].as_array().unwrap();
    assert_eq!(dirs.len(), 1);
    assert_eq!(dirs[0]["error"], Value::Null);
    let mut partitions: Vec<(String, i64, bool)> = dirs[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["offsetLag"], 0);
            (
                p["partition"].as_str().unwrap().to_owned(),
                p["size"].as_i64().unwrap(),
                p["isFuture"].as_bool().unwrap(),
            )
        })
        .collect();
    partitions.sort();
    assert_eq!(partitions.len(), 2, "{partitions:?}");
    assert_eq!(partitions[0].0, "orders-0");
    assert!(partitions[0].1 > 0);
    assert_eq!(partitions[1], ("orders-1".to_owned(), 0, false));

    // --output json: the object alone, every topic.
    let broker_id = brokers[0]["broker"].as_i64().unwrap().to_string();
    let args = [
        "log-dirs",
        "describe",
        "--output",
        "json",
        "--broker-list",
        &broker_id,
    ];
    let out = ok(run_sluice(&bootstrap, &args, ""), &args);
    let json: Value = serde_json::from_str(out.trim()).unwrap();
    let all = json["brokers"][0]["logDirs"][0]["partitions"]
        .as_array()
        .unwrap();
    assert!(all.iter().any(|p| p["partition"] == "other-0"), "{out}");

    // An unknown broker is an error, named as Kafka's tool names it.
    let args = ["log-dirs", "describe", "--broker-list", "4242"];
    let out = run_sluice(&bootstrap, &args, "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not exist from --broker-list: 4242"));
}
