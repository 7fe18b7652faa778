//! Test fixture for interop tests: a real `sluice server` process on a free loopback port with a temporary log
//! directory, readiness-checked with an ApiVersions round trip, restartable (SIGTERM or SIGKILL) on the same port
//! and directory, and always killed when dropped.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// How long a start-up may take before the fixture gives up (a debug build replaying a log can be slow).
const START_TIMEOUT_MS: u64 = 30_000;
/// How long a SIGTERM'd broker may take to shut down cleanly before the fixture reports an error.
const STOP_TIMEOUT_MS: u64 = 30_000;
/// How many times an initial start is retried on a new port (another process may grab the free port first).
const START_ATTEMPTS: u32 = 3;

/// Errors of the broker fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The broker binary does not exist.
    #[error(
        "broker binary {path} not found: build it (`cargo build -p sluice-cli`) or set SLUICE_BIN"
    )]
    BinaryMissing {
        /// The path that was tried.
        path: PathBuf,
    },
    /// An I/O error while preparing or talking to the broker.
    #[error("{context}: {source}")]
    Io {
        /// What the fixture was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The broker process exited while the fixture expected it to run.
    #[error("broker exited with {status} during {phase}; log tail:\n{log_tail}")]
    Exited {
        /// What the fixture was doing.
        phase: &'static str,
        /// The exit status.
        status: ExitStatus,
        /// The last lines of the broker's output.
        log_tail: String,
    },
    /// The broker did not answer an ApiVersions request in time.
    #[error("broker on {addr} not ready after {timeout_ms} ms (last error: {last_error}); log tail:\n{log_tail}")]
    NotReady {
        /// The address polled.
        addr: SocketAddr,
        /// How long the fixture waited.
        timeout_ms: u64,
        /// The last connection or protocol error seen.
        last_error: String,
        /// The last lines of the broker's output.
        log_tail: String,
    },
    /// A SIGTERM'd broker did not exit in time (it was then killed).
    #[error(
        "broker did not exit within {timeout_ms} ms of SIGTERM (killed); log tail:\n{log_tail}"
    )]
    StopTimeout {
        /// How long the fixture waited.
        timeout_ms: u64,
        /// The last lines of the broker's output.
        log_tail: String,
    },
    /// The broker is not running (already stopped or killed).
    #[error("broker is not running")]
    NotRunning,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> FixtureError {
    let context = context.into();
    move |source| FixtureError::Io { context, source }
}

/// The broker binary: `SLUICE_BIN`, else `<workspace>/target/debug/sluice` (honouring `CARGO_TARGET_DIR`).
pub fn broker_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(bin);
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target_dir.join("debug").join("sluice")
}

/// A free TCP port on 127.0.0.1 (bound, read, released: another process may still take it, hence retries).
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Builder for a [`Broker`]: extra `--override KEY=VALUE` settings on top of the listener and log dir.
#[derive(Debug, Default, Clone)]
pub struct BrokerBuilder {
    overrides: Vec<(String, String)>,
}

impl BrokerBuilder {
    /// Adds a broker config override (a `server.properties` key), passed on every (re)start.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.overrides.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts the broker on a free loopback port with a fresh temporary log directory.
    pub fn start(self) -> Result<Broker, FixtureError> {
        let bin = broker_binary();
        if !bin.is_file() {
            return Err(FixtureError::BinaryMissing { path: bin });
        }
        let dir = tempfile::Builder::new()
            .prefix("sluice-interop-")
            .tempdir()
            .map_err(io_err("creating the temporary broker directory"))?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port().map_err(io_err("finding a free port"))?;
            let mut broker = Broker {
                bin: bin.clone(),
                overrides: self.overrides.clone(),
                port,
                log_path: dir.path().join("broker.log"),
                data_dir: dir.path().join("data"),
                child: None,
                dir: None,
            };
            match broker.spawn_and_wait() {
                Ok(()) => {
                    broker.dir = Some(dir);
                    return Ok(broker);
                }
                // The port may have been taken between `free_port` and the bind: try another one.
                Err(err @ FixtureError::Exited { .. }) => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or(FixtureError::NotRunning))
    }
}

/// A running `sluice server` child process. Dropping it kills the process (SIGKILL) and removes its directory.
#[derive(Debug)]
pub struct Broker {
    bin: PathBuf,
    overrides: Vec<(String, String)>,
    port: u16,
    log_path: PathBuf,
    data_dir: PathBuf,
    child: Option<Child>,
    /// Owns the temporary directory (data + log); `None` only while the first start is in progress.
    dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts a broker with the default settings (see [`BrokerBuilder`] for overrides).
    pub fn start() -> Result<Broker, FixtureError> {
        BrokerBuilder::default().start()
    }

    /// A builder to start a broker with config overrides.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// `host:port` for a client's `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The listener port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's `log.dirs` directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The OS process id of the running broker, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the broker printed so far (all incarnations), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `lines` lines of the broker's output.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// True while the child process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus, FixtureError> {
        let mut child = self.child.take().ok_or(FixtureError::NotRunning)?;
        signal(&child, Signal::TERM);
        let deadline = Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    signal(&child, Signal::KILL);
                    let _ = child.wait();
                    return Err(FixtureError::StopTimeout {
                        timeout_ms: STOP_TIMEOUT_MS,
                        log_tail: self.log_tail(40),
                    });
                }
                Err(source) => {
                    return Err(FixtureError::Io {
                        context: "waiting for the broker".into(),
                        source,
                    })
                }
            }
        }
    }

    /// Sends SIGKILL (a crash: no shutdown work at all) and reaps the process.
    pub fn kill(&mut self) -> Result<(), FixtureError> {
        let mut child = self.child.take().ok_or(FixtureError::NotRunning)?;
        signal(&child, Signal::KILL);
        child.wait().map_err(io_err("reaping the killed broker"))?;
        Ok(())
    }

    /// Starts the broker again on the same port and data directory (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill)); kills a still-running one first.
    pub fn restart(&mut self) -> Result<(), FixtureError> {
        if self.child.is_some() {
            self.kill()?;
        }
        self.spawn_and_wait()
    }

    fn spawn_and_wait(&mut self) -> Result<(), FixtureError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io_err(format!("opening {}", self.log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_err("duplicating the log handle"))?;
        let mut command = Command::new(&self.bin);
        command
            .arg("server")
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://127.0.0.1:{}", self.port))
            .arg("--override")
            .arg(format!("log.dirs={}", self.data_dir.display()));
        for (key, value) in &self.overrides {
            command.arg("--override").arg(format!("{key}={value}"));
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(io_err(format!("spawning {}", self.bin.display())))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls with an ApiVersions v0 request until the broker answers with the matching correlation id.
    fn wait_ready(&mut self) -> Result<(), FixtureError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
        let mut last_error: String;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(FixtureError::Exited {
                        phase: "start-up",
                        status,
                        log_tail: self.log_tail(40),
                    });
                }
            }
            match api_versions_round_trip(addr) {
                Ok(()) => {
                    // Another test's broker may hold the port while ours is still failing to bind: make sure
                    // ours is alive after answering (a failed bind exits within milliseconds of start-up).
                    thread::sleep(Duration::from_millis(100));
                    if let Some(child) = self.child.as_mut() {
                        if let Ok(Some(status)) = child.try_wait() {
                            self.child = None;
                            return Err(FixtureError::Exited {
                                phase: "start-up (port taken?)",
                                status,
                                log_tail: self.log_tail(40),
                            });
                        }
                    }
                    return Ok(());
                }
                Err(err) => last_error = err.to_string(),
            }
            if Instant::now() >= deadline {
                if let Some(mut child) = self.child.take() {
                    signal(&child, Signal::KILL);
                    let _ = child.wait();
                }
                return Err(FixtureError::NotReady {
                    addr,
                    timeout_ms: START_TIMEOUT_MS,
                    last_error,
                    log_tail: self.log_tail(40),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, Signal::KILL);
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- sluice broker log (127.0.0.1:{}), last 60 lines ----\n{}",
                self.port,
                self.log_tail(60)
            );
        }
    }
}

fn signal(child: &Child, sig: Signal) {
    let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    if let Some(pid) = pid {
        // The child may already have exited (ESRCH): nothing to do then.
        let _ = kill_process(pid, sig);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends one ApiVersions v0 request (header v1, client id "sluice-interop") and checks the response frame.
fn api_versions_round_trip(addr: SocketAddr) -> io::Result<()> {
    const CORRELATION_ID: i32 = 0x5e1c_e000;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_millis(2_000)))?;
    stream.set_write_timeout(Some(Duration::from_millis(2_000)))?;
    let client_id = b"sluice-interop";
    let mut body = Vec::with_capacity(32);
    body.extend_from_slice(&18i16.to_be_bytes()); // api key: ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // api version 0
    body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(6..=1 << 20).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ApiVersions response length {len}"),
        ));
    }
    let mut response = vec![0u8; len as usize];
    stream.read_exact(&mut response)?;
    let correlation = i32::from_be_bytes([response[0], response[1], response[2], response[3]]);
    let error_code = i16::from_be_bytes([response[4], response[5]]);
    if correlation != CORRELATION_ID || error_code != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ApiVersions answer: correlation id {correlation:#x}, error code {error_code}"),
        ));
    }
    Ok(())
}
