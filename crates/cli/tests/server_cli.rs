//! `sluice server` as a process: `--help` lists every configuration key with its default, an unknown key is an
//! error naming it, and SIGTERM shuts a serving broker down cleanly with exit status 0.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

#[test]
fn sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(SLUICE)
        .args(["server", "--override"])
        .arg(format!("listeners=PLAINTEXT://127.0.0.1:{port}"))
        .arg("--override")
        .arg(format!("log.dirs={}", dir.path().display()))
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
}
