//! `sluice server` as a process: `--help` lists every configuration key with its default, an unknown key is an
//! error naming it, and SIGTERM shuts a serving broker down cleanly with exit status 0, leaving the clean-shutdown
//! marker so that the next start skips the recovery scan.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_testkit::cluster::free_port;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

#[test]
fn help_lists_every_key_with_its_default() {
    let out = Command::new(SLUICE)
        .args(["server", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for key in sluice_broker::CONFIG_KEYS {
        let line = help
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key.name));
        let line = line.unwrap_or_else(|| panic!("--help does not list {}", key.name));
        let default = key.default.unwrap_or("unset");
        assert!(
            line.contains(&format!("[{default}]")),
            "{}: default {default} missing in {line:?}",
            key.name
        );
    }
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(SLUICE)
        .args([
            "server",
            "--override",
            "log.retention.hourz=5",
            "--override",
        ])
        .arg(format!("log.dirs={}", dir.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("log.retention.hourz"), "{stderr}");

    let file = dir.path().join("server.properties");
    std::fs::write(&file, "node.id=0\nbogus.key=1\n").unwrap();
    let out = Command::new(SLUICE)
        .args(["server", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus.key"));
}

/// An ApiVersions v0 request over a blocking socket; returns the response's error code.
fn api_versions_error_code(port: u16) -> std::io::Result<i16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    // size 10: api key 18, version 0, correlation id 1, null client id.
    s.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff])?;
    let mut size = [0u8; 4];
    s.read_exact(&mut size)?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body)?;
    Ok(i16::from_be_bytes([body[4], body[5]]))
}

/// A Metadata v0 request for `topic` (v0 always allows auto-creation); returns the topic's error code.
fn metadata_v0_topic_error_code(port: u16, topic: &str) -> std::io::Result<i16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut frame = Vec::new();
    frame.extend_from_slice(&3i16.to_be_bytes()); // Metadata
    frame.extend_from_slice(&0i16.to_be_bytes()); // v0
    frame.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    frame.extend_from_slice(&1i32.to_be_bytes()); // one topic
    frame.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    frame.extend_from_slice(topic.as_bytes());
    let mut request = (frame.len() as i32).to_be_bytes().to_vec();
    request.extend_from_slice(&frame);
    s.write_all(&request)?;
    let mut size = [0u8; 4];
    s.read_exact(&mut size)?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body)?;
    // correlation id, brokers [node id, host, port], topics [error code, ...].
    let mut at = 4;
    let take = |at: &mut usize, n: usize| {
        let slice = body[*at..*at + n].to_vec();
        *at += n;
        slice
    };
    let brokers = i32::from_be_bytes(take(&mut at, 4).try_into().unwrap());
    for _ in 0..brokers {
        at += 4;
        let host_len = i16::from_be_bytes(take(&mut at, 2).try_into().unwrap());
        at += host_len as usize + 4;
    }
    let topics = i32::from_be_bytes(take(&mut at, 4).try_into().unwrap());
    assert_eq!(topics, 1);
    Ok(i16::from_be_bytes(take(&mut at, 2).try_into().unwrap()))
}

/// Starts `sluice server` on `port` with data in `dir` and waits until it answers ApiVersions.
fn start_server(dir: &std::path::Path, port: u16) -> Child {
    let mut child = Command::new(SLUICE)
        .args(["server", "--override"])
        .arg(format!("listeners=PLAINTEXT://127.0.0.1:{port}"))
        .arg("--override")
        .arg(format!("log.dirs={}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let code = loop {
        match api_versions_error_code(port) {
            Ok(code) => break code,
            Err(_) if started.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => {
                let _ = child.kill();
                panic!("broker did not come up: {e}");
            }
        }
    };
    assert_eq!(code, 0);
    child
}

/// Sends SIGTERM, waits for the exit, asserts status 0 and returns everything the broker logged.
fn sigterm(mut child: Child) -> String {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("broker did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("shutdown complete"), "{stderr}");
    stderr
}

/// The storage layer's clean-shutdown marker (`sluice_storage::CLEAN_SHUTDOWN_FILE`) in a partition directory.
const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";
/// What the storage layer logs when it scans a log because the marker is missing.
const RECOVERY_LINE: &str = "unclean shutdown: recovering log";

#[test]
fn sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let partition_dir = dir.path().join("durable-0");
    let marker = partition_dir.join(CLEAN_SHUTDOWN_MARKER);
    let port = free_port();
    let child = start_server(dir.path(), port);
    assert_eq!(metadata_v0_topic_error_code(port, "durable").unwrap(), 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !partition_dir.is_dir() {
        assert!(Instant::now() < deadline, "partition log never created");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!marker.exists(), "no marker while the log is open");
    sigterm(child);
    assert!(
        marker.exists(),
        "SIGTERM leaves the clean-shutdown marker in {}",
        partition_dir.display()
    );

    // A restart after the clean shutdown trusts the log: no recovery scan.
    let port = free_port();
    let child = start_server(dir.path(), port);
    let stderr = sigterm(child);
    assert!(!stderr.contains(RECOVERY_LINE), "{stderr}");
    assert!(marker.exists());

    // The control: without the marker the same restart scans the partition (and says so).
    std::fs::remove_file(&marker).unwrap();
    let port = free_port();
    let child = start_server(dir.path(), port);
    let stderr = sigterm(child);
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(RECOVERY_LINE) && l.contains("durable-0")),
        "{stderr}"
    );
}
