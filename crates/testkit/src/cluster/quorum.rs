//! An in-process N-node cluster: every node a [`Server`] with `process.roles=broker,controller`, a client listener
//! and a CONTROLLER listener on loopback, `controller.quorum.voters` naming all of them, one `cluster.id`, and short
//! session and election timeouts so fencing and fail-over take seconds. Nodes are numbered `0..n` and node `i`
//! has `node.id` `i`.
//!
//! The CONTROLLER ports are chosen before any node starts (each node's config names all of them); if one was
//! taken meanwhile, the whole start is retried on new ports and fresh directories. `kill(i)` stops node `i`
//! (without a controlled shutdown: its leaderships and controllership move only when the others notice it gone);
//! `restart(i)` starts it again on its directory and ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_broker::{BrokerConfig, Server, ServerError};
use sluice_metadata::MetadataImage;
use tokio::task::JoinSet;

use super::{eventually, free_port, owned};

/// The `cluster.id` every node is given (a base64 UUID, as `sluice storage random-uuid` prints).
pub const CLUSTER_ID: &str = "MkU3OEVBNTcwNTJENDM2Qk";

/// Settings that make fail-over quick on loopback; a test's overrides come after them.
const FAST_FAILOVER: &[(&str, &str)] = &[
    ("broker.session.timeout.ms", "3000"),
    ("broker.heartbeat.interval.ms", "300"),
    ("controller.quorum.election.timeout.ms", "600"),
    ("controller.quorum.fetch.timeout.ms", "1200"),
    ("controller.quorum.election.backoff.max.ms", "300"),
    ("controller.quorum.request.timeout.ms", "1000"),
    // `kill` and the end of a test stop nodes one after another; the last ones could never finish a controlled
    // shutdown once the quorum is gone.
    ("controlled.shutdown.enable", "false"),
];

/// How many times a start is retried after a CONTROLLER port was taken by someone else.
const START_ATTEMPTS: usize = 5;
/// How long the cluster may take to form (quorum elected, every broker registered and unfenced).
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restarted node keeps retrying (its old controller may still be releasing the metadata dir lock).
const RESTART_TIMEOUT: Duration = Duration::from_secs(20);

/// One node's fixed settings and its server while it runs.
struct Node {
    controller_port: u16,
    /// The client listener's port as last bound; 0 before the first start.
    client_port: u16,
    dir: PathBuf,
    server: Option<Server>,
}

/// An in-process cluster of combined broker and controller nodes. Dropping it stops every node in the background
/// on the current runtime; [`TestCluster::shutdown`] stops them and waits.
pub struct TestCluster {
    nodes: Vec<Node>,
    overrides: Vec<(String, String)>,
    /// The directories of every start attempt (a failed attempt's may still be in use by its stopping tasks).
    dirs: Vec<tempfile::TempDir>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running: Vec<usize> = self.running().map(|(i, _)| i).collect();
        f.debug_struct("TestCluster")
            .field("nodes", &self.nodes.len())
            .field("running", &running)
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    /// Starts `n` nodes and waits until every node's image lists `n` unfenced brokers.
    pub async fn start(n: usize) -> TestCluster {
        TestCluster::start_with(n, &[]).await
    }

    /// Starts `n` nodes with these overrides on every node.
    pub async fn start_with(n: usize, overrides: &[(&str, &str)]) -> TestCluster {
        assert!(n >= 1, "a cluster has at least one node");
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            overrides: owned(overrides),
            dirs: Vec::new(),
        };
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::tempdir().expect("temp dir");
            cluster.nodes = (0..n)
                .map(|i| Node {
                    controller_port: free_port(),
                    client_port: 0,
                    dir: dir.path().join(format!("node-{i}")),
                    server: None,
                })
                .collect();
            cluster.dirs.push(dir);
            match cluster.start_all().await {
                Ok(()) => {
                    cluster.wait_brokers(n).await;
                    return cluster;
                }
                Err(clash) => eprintln!("TestCluster: attempt {attempt}: {clash}; retrying"),
            }
        }
        panic!("TestCluster: no start in {START_ATTEMPTS} attempts");
    }

    /// Starts every node at once (each waits for the others to form the quorum). A bind clash stops the attempt.
    async fn start_all(&mut self) -> Result<(), String> {
        let mut starting = JoinSet::new();
        for i in 0..self.nodes.len() {
            let config = self.config(i);
            starting.spawn(async move { (i, Server::start(config).await) });
        }
        let mut clash = None;
        while let Some(joined) = starting.join_next().await {
            match joined {
                Ok((i, Ok(server))) => {
                    self.nodes[i].client_port = server.local_addr().port();
                    self.nodes[i].server = Some(server);
                }
                Ok((i, Err(ServerError::Bind { address, source }))) => {
                    clash = Some(format!("node {i} cannot bind {address}: {source}"));
                    starting.abort_all();
                }
                Ok((i, Err(e))) => panic!("TestCluster: node {i} failed to start: {e}"),
                Err(e) if e.is_cancelled() => {}
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        match clash {
            None => Ok(()),
            Some(clash) => {
                for i in 0..self.nodes.len() {
                    self.kill(i).await;
                }
                Err(clash)
            }
        }
    }

    /// Node `i`'s configuration.
    fn config(&self, i: usize) -> BrokerConfig {
        let node = &self.nodes[i];
        let voters = self
            .nodes
            .iter()
            .enumerate()
            .map(|(id, n)| format!("{id}@127.0.0.1:{}", n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut pairs: Vec<(String, String)> = [
            ("node.id", i.to_string()),
            ("process.roles", "broker,controller".to_owned()),
            (
                "listeners",
                format!(
                    "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                    node.client_port, node.controller_port
                ),
            ),
            ("controller.listener.names", "CONTROLLER".to_owned()),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_owned(),
            ),
            ("controller.quorum.voters", voters),
            ("cluster.id", CLUSTER_ID.to_owned()),
            ("log.dirs", node.dir.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        pairs.extend(owned(FAST_FAILOVER));
        pairs.extend(self.overrides.iter().cloned());
        BrokerConfig::from_pairs(pairs).expect("TestCluster config")
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// True while node `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].server.is_some()
    }

    /// Node `i`'s server.
    ///
    /// # Panics
    /// When node `i` is killed.
    pub fn node(&self, i: usize) -> &Server {
        self.nodes[i]
            .server
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} is killed; restart({i}) it first"))
    }

    /// The running nodes with their ids.
    pub fn running(&self) -> impl Iterator<Item = (usize, &Server)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.server.as_ref().map(|s| (i, s)))
    }

    /// Node `i`'s client listener.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.node(i).local_addr()
    }

    /// `host:port` of every running node's client listener, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.running()
            .map(|(_, s)| s.local_addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s directory (its `log.dirs` and metadata log); it outlives kills.
    pub fn node_dir(&self, i: usize) -> &Path {
        &self.nodes[i].dir
    }

    /// Node `i`'s CONTROLLER listener port.
    pub fn controller_port(&self, i: usize) -> u16 {
        self.nodes[i].controller_port
    }

    /// Node `i`'s current metadata image.
    pub fn image(&self, i: usize) -> Arc<MetadataImage> {
        self.node(i).broker().controller.image()
    }

    /// Waits until every running node's image lists exactly `n` unfenced brokers.
    pub async fn wait_brokers(&self, n: usize) {
        let described = || {
            self.running()
                .map(|(i, s)| {
                    let image = s.broker().controller.image();
                    let brokers: Vec<String> = image
                        .brokers
                        .values()
                        .map(|b| format!("{}{}", b.node_id, if b.fenced { "(fenced)" } else { "" }))
                        .collect();
                    format!("node {i}: [{}]", brokers.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let all = self.running().all(|(_, s)| {
                let image = s.broker().controller.image();
                image.brokers.values().filter(|b| !b.fenced).count() == n
            });
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "TestCluster: not every node sees {n} unfenced brokers after {FORM_TIMEOUT:?}: {}",
                described()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The id of the active controller: waits until exactly one running node leads the quorum and every running
    /// node names it as the leader.
    pub async fn active_controller(&self) -> usize {
        eventually(
            "one active controller known to every node",
            FORM_TIMEOUT,
            || {
                let active: Vec<usize> = self
                    .running()
                    .filter(|(_, s)| s.broker().controller.is_active())
                    .map(|(i, _)| i)
                    .collect();
                let [leader] = active[..] else { return None };
                let agreed = self
                    .running()
                    .all(|(_, s)| s.broker().controller.leader_id() == i32::try_from(leader).ok());
                agreed.then_some(leader)
            },
        )
        .await
    }

    /// Stops node `i` (listeners closed, quorum connections dropped, logs flushed), keeping its directory. No
    /// controlled shutdown unless the overrides turn it back on. Does nothing when it is already stopped.
    pub async fn kill(&mut self, i: usize) {
        if let Some(server) = self.nodes[i].server.take() {
            server.shutdown().await.expect("node shutdown");
        }
    }

    /// Starts node `i` again on its directory and ports (after [`TestCluster::kill`]); returns once it is
    /// serving and, as `sluice server` does, waited to be unfenced. Its new registration is refused
    /// (DUPLICATE_BROKER_REGISTRATION) until the controller expires the old session, so this takes up to
    /// `broker.session.timeout.ms` (3 s here).
    pub async fn restart(&mut self, i: usize) {
        self.kill(i).await;
        let deadline = Instant::now() + RESTART_TIMEOUT;
        loop {
            match Server::start(self.config(i)).await {
                Ok(server) => {
                    self.nodes[i].client_port = server.local_addr().port();
                    self.nodes[i].server = Some(server);
                    return;
                }
                // Someone took the client port meanwhile: any port will do for clients.
                Err(ServerError::Bind { address, .. })
                    if self.nodes[i].client_port != 0
                        && address.ends_with(&format!(":{}", self.nodes[i].client_port)) =>
                {
                    self.nodes[i].client_port = 0;
                }
                // The old incarnation's controller may still hold the metadata dir for a moment, or a port.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("TestCluster: restart of node {i}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("TestCluster: node {i} failed to restart: {e}"),
            }
        }
    }

    /// Stops every node and waits for it.
    pub async fn shutdown(mut self) {
        let servers: Vec<Server> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.server.take())
            .collect();
        stop_all(servers).await;
    }
}

/// Stops nodes one after another (a node's shutdown waits for its in-flight requests, bounded by the server's
/// drain timeout).
async fn stop_all(servers: Vec<Server>) {
    for server in servers {
        if let Err(e) = server.shutdown().await {
            eprintln!("TestCluster: shutdown failed: {e}");
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let servers: Vec<Server> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.server.take())
            .collect();
        let dirs = std::mem::take(&mut self.dirs);
        if servers.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                stop_all(servers).await;
                drop(dirs);
            });
        }
    }
}
