//! What the CLI integration tests share.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The `sluice` binary under test.
pub(crate) const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// Runs `sluice ARGS` against `bootstrap` (through `SLUICE_BOOTSTRAP_SERVER`), with `stdin` as input.
pub(crate) fn run_sluice(bootstrap: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(SLUICE)
        .args(args)
        .env("SLUICE_BOOTSTRAP_SERVER", bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
