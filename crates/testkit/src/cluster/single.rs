//! One embedded single node: `sluice server` with only `listeners` (127.0.0.1, port 0 at first) and `log.dirs` (a
//! temporary directory) set, plus a test's overrides; shut down cleanly and restarted on the same directory and
//! port, so a test sees what a restarted process sees and its clients can reconnect to the address they know.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_broker::{Broker, BrokerConfig, Server, ServerError};

use super::owned;

/// How long a restart keeps retrying to bind the port it had before taking a new one.
const REBIND_WAIT: Duration = Duration::from_secs(5);

/// A running (or shut down, until restarted) embedded single node with its own temporary directory.
///
/// Dropping it while it runs shuts it down in the background on the current runtime (and removes the directory
/// afterwards); a test that checks what shutdown leaves behind calls [`TestBroker::shutdown`].
///
/// ```no_run
/// # async fn example() {
/// use sluice_testkit::TestBroker;
/// let mut broker = TestBroker::start_with(&[("log.segment.bytes", "1048576")]).await;
/// let address = broker.addr(); // connect clients here
/// broker.restart().await; // clean shutdown, then the same directory and port
/// broker.shutdown().await;
/// # }
/// ```
pub struct TestBroker {
    server: Option<Server>,
    /// `Some` until dropped (moved into the background shutdown).
    dir: Option<tempfile::TempDir>,
    overrides: Vec<(String, String)>,
    /// The client listener's port as last bound; 0 before the first start.
    port: u16,
}

impl std::fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBroker")
            .field("port", &self.port)
            .field("running", &self.server.is_some())
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

impl TestBroker {
    /// Starts a node with default settings.
    pub async fn start() -> TestBroker {
        TestBroker::start_with(&[]).await
    }

    /// Starts a node with these config overrides (applied after `listeners` and `log.dirs`, so they may replace
    /// them too).
    pub async fn start_with(overrides: &[(&str, &str)]) -> TestBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broker = TestBroker {
            server: None,
            dir: Some(dir),
            overrides: owned(overrides),
            port: 0,
        };
        broker.start_server(&[]).await;
        broker
    }

    /// The running server.
    ///
    /// # Panics
    /// When the node is shut down.
    pub fn server(&self) -> &Server {
        self.server
            .as_ref()
            .expect("the broker is shut down; restart() it first")
    }

    /// The running node's shared state (config, controller and image, logs, replica manager).
    pub fn broker(&self) -> &Arc<Broker> {
        self.server().broker()
    }

    /// The client listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.server().local_addr()
    }

    /// `host:port` of the client listener, for a client's `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr().to_string()
    }

    /// The node's directory (`log.dirs`, and the metadata log unless `metadata.log.dir` is overridden); it
    /// outlives shutdowns and is removed when the fixture is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("directory kept until drop").path()
    }

    /// True between a start and a shutdown.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Shuts the node down cleanly (connections drained, logs flushed, clean-shutdown marker written) and keeps
    /// its directory. Does nothing when it is already down.
    pub async fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    /// Shuts the node down (if running) and starts it again on the same directory and port with the overrides
    /// it was started with.
    pub async fn restart(&mut self) {
        self.restart_with(&[]).await;
    }

    /// Like [`TestBroker::restart`], with `extra` overrides on top for this start only (a later `restart()`
    /// goes back to the original ones).
    pub async fn restart_with(&mut self, extra: &[(&str, &str)]) {
        self.shutdown().await;
        self.start_server(&owned(extra)).await;
    }

    /// Starts the server: on the last bound port when there is one (retrying while it is briefly taken, then on
    /// a new port), else on a port the kernel picks.
    async fn start_server(&mut self, extra: &[(String, String)]) {
        let deadline = Instant::now() + REBIND_WAIT;
        let mut port = self.port;
        loop {
            match Server::start(self.config(port, extra)).await {
                Ok(server) => {
                    self.port = server.local_addr().port();
                    self.server = Some(server);
                    return;
                }
                Err(ServerError::Bind { address, source }) if port != 0 => {
                    if Instant::now() >= deadline {
                        eprintln!(
                            "TestBroker: cannot bind {address} again ({source}); restarting on a new port"
                        );
                        port = 0;
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Err(e) => panic!("TestBroker failed to start: {e}"),
            }
        }
    }

    fn config(&self, port: u16, extra: &[(String, String)]) -> BrokerConfig {
        let mut pairs = vec![
            (
                "listeners".to_owned(),
                format!("PLAINTEXT://127.0.0.1:{port}"),
            ),
            ("log.dirs".to_owned(), self.dir().display().to_string()),
        ];
        pairs.extend(self.overrides.iter().cloned());
        pairs.extend(extra.iter().cloned());
        BrokerConfig::from_pairs(pairs).expect("TestBroker config")
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let dir = self.dir.take();
        if let Some(server) = self.server.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                // The runtime the server runs on; the directory goes once the logs are closed.
                runtime.spawn(async move {
                    let _ = server.shutdown().await;
                    drop(dir);
                });
            }
        }
    }
}

/// A [`TestBroker`] on its own multi-threaded runtime, for synchronous tests (ones that run the `sluice` binary
/// and wait for it). Shut down cleanly when dropped.
pub struct BlockingBroker {
    /// `Some` until dropped.
    broker: Option<TestBroker>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for BlockingBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingBroker")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

impl BlockingBroker {
    /// Starts a node with default settings.
    pub fn start() -> BlockingBroker {
        BlockingBroker::start_with(&[])
    }

    /// Starts a node with these config overrides.
    pub fn start_with(overrides: &[(&str, &str)]) -> BlockingBroker {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let broker = runtime.block_on(TestBroker::start_with(overrides));
        BlockingBroker {
            broker: Some(broker),
            runtime,
        }
    }

    /// The node.
    pub fn broker(&self) -> &TestBroker {
        self.broker.as_ref().expect("running until dropped")
    }

    /// `host:port` of the client listener.
    pub fn bootstrap(&self) -> String {
        self.broker().bootstrap()
    }

    /// The client listener's port.
    pub fn port(&self) -> u16 {
        self.broker().addr().port()
    }

    /// Runs `future` to completion on the node's runtime (a client call from a synchronous test).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

impl Drop for BlockingBroker {
    fn drop(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            self.runtime.block_on(async move {
                if let Some(server) = broker.server.take() {
                    // No panic from a drop (it may run while a failed test unwinds).
                    if let Err(e) = server.shutdown().await {
                        eprintln!("BlockingBroker: shutdown failed: {e}");
                    }
                }
            });
        }
    }
}
