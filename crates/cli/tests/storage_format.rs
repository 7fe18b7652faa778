//! `sluice storage` as a process, as `kafka-storage.sh` behaves: `random-uuid` prints a usable cluster id,
//! `format` writes `meta.properties` into every log directory and the metadata directory, refuses a formatted
//! directory unless `--ignore-formatted`, refuses a cluster id that is not a base64 UUID (exit status 1, one
//! message on stderr, nothing written), and `info` shows what each directory holds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// A node's configuration in a temporary directory: two log dirs and a separate metadata dir.
struct Node {
    root: tempfile::TempDir,
    config: PathBuf,
}

impl Node {
    fn new(extra: &str) -> Node {
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("server.properties");
        let text = format!(
            "node.id=1\nlog.dirs={},{}\nmetadata.log.dir={}\n{extra}",
            root.path().join("logs-a").display(),
            root.path().join("logs-b").display(),
            root.path().join("meta").display(),
        );
        std::fs::write(&config, text).unwrap();
        Node { root, config }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn storage(&self, args: &[&str]) -> Output {
        Command::new(SLUICE)
            .arg("storage")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn random_uuid() -> String {
    let out = Command::new(SLUICE)
        .args(["storage", "random-uuid"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert_eq!(id.len(), 22, "{id}");
    assert!(!id.starts_with('-'), "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{id}"
    );
    id
}

fn meta_properties(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("meta.properties")).unwrap()
}

#[test]
fn random_uuid_prints_a_new_cluster_id_that_format_accepts() {
    let first = random_uuid();
    let second = random_uuid();
    assert_ne!(first, second);
    let node = Node::new("");
    let out = node.storage(&["format", "--cluster-id", &first]);
    assert!(out.status.success(), "{}", stderr(&out));
    for dir in ["logs-a", "logs-b", "meta"] {
        let text = meta_properties(&node.dir(dir));
        assert!(text.contains("version=1\n"), "{text}");
        assert!(text.contains(&format!("cluster.id={first}\n")), "{text}");
        assert!(text.contains("node.id=1\n"), "{text}");
        assert!(text.contains("directory.id="), "{text}");
    }
}

#[test]
fn format_twice_is_refused_then_ignore_formatted_formats_only_new_dirs() {
    let id = random_uuid();
    let node = Node::new("");
    let out = node.storage(&["format", "-t", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for dir in ["logs-a", "logs-b", "meta"] {
        let line = format!(
            "Formatting {} with cluster.id {id} and node.id 1",
            node.dir(dir).display()
        );
        assert!(text.lines().any(|l| l == line), "{line:?} not in {text}");
    }
    let before = meta_properties(&node.dir("meta"));

    // Again: refused with Kafka's message and exit status 1, nothing changed.
    let out = node.storage(&["format", "--cluster-id", &id]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.trim(),
        format!(
            "Log directory {} is already formatted. Use --ignore-formatted to ignore this directory and format the others.",
            node.dir("logs-a").display()
        )
    );
    assert_eq!(meta_properties(&node.dir("meta")), before);

    // --ignore-formatted: nothing left to do.
    let out = node.storage(&["format", "--cluster-id", &id, "--ignore-formatted"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "All of the log directories are already formatted."
    );
    assert_eq!(meta_properties(&node.dir("meta")), before);

    // A new log directory: only it is formatted.
    let new_dirs = format!(
        "log.dirs={},{},{}",
        node.dir("logs-a").display(),
        node.dir("logs-b").display(),
        node.dir("logs-c").display()
    );
    let out = node.storage(&["format", "-t", &id, "-g", "--override", &new_dirs]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "Formatting {} with cluster.id {id} and node.id 1",
            node.dir("logs-c").display()
        )
    );
    assert_eq!(meta_properties(&node.dir("meta")), before);

    // Another cluster id cannot take the directories over, even with --ignore-formatted.
    let other = random_uuid();
    let out = node.storage(&["format", "-t", &other, "--ignore-formatted"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("Invalid cluster.id in:") && err.contains(&id) && err.contains(&other),
        "{err}"
    );
}

#[test]
fn a_cluster_id_that_is_not_a_base64_uuid_is_refused() {
    let node = Node::new("");
    for (bad, reason) in [
        ("my-cluster", "decoded as 7 bytes"),
        ("not.a.uuid.at.all.xxxx", "Illegal base64 character 2e"),
    ] {
        let out = node.storage(&["format", "--cluster-id", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!(
                "Cluster ID string {bad} does not appear to be a valid UUID: "
            )) && err.contains(reason),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!node.dir("meta").join("meta.properties").exists());
    }
}

#[test]
fn info_shows_each_directory() {
    let node = Node::new("");
    let out = node.storage(&["info"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("does not exist"), "{text}");

    let id = random_uuid();
    assert!(node.storage(&["format", "-t", &id]).status.success());
    let out = node.storage(&["info"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let text = stdout(&out);
    for dir in ["logs-a", "logs-b", "meta"] {
        let line = text
            .lines()
            .find(|l| l.contains(&node.dir(dir).display().to_string()))
            .unwrap_or_else(|| panic!("{dir} not in {text}"));
        assert!(
            line.contains(&format!("cluster.id={id}")) && line.contains("node.id=1"),
            "{line}"
        );
    }
    assert!(text.contains(&format!("Cluster id: {id}")), "{text}");

    // Another node's configuration over the same directories: a problem naming both ids.
    let out = node.storage(&["info", "--override", "node.id=2"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("Stored node id 1 doesn't match previous node id 2"),
        "{text}"
    );
}

#[test]
fn format_refuses_standalone_off_a_controller_and_bad_configs() {
    let id = random_uuid();
    let node =
        Node::new("process.roles=broker\ncontroller.quorum.bootstrap.servers=localhost:9093\n");
    let out = node.storage(&["format", "-t", &id, "--standalone"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--standalone"), "{}", stderr(&out));
    assert!(!node.dir("meta").exists());
    // Without --standalone the broker-only node formats.
    let out = node.storage(&["format", "-t", &id]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A configuration `sluice server` would refuse is refused here too (exit status 2, naming the key).
    let out = node.storage(&["format", "-t", &id, "--override", "log.retention.hourz=1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("log.retention.hourz"),
        "{}",
        stderr(&out)
    );

    // A configured cluster.id that differs from --cluster-id is refused.
    let other = Node::new(&format!("cluster.id={}\n", random_uuid()));
    let out = other.storage(&["format", "-t", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("differs from cluster.id="),
        "{}",
        stderr(&out)
    );
}
