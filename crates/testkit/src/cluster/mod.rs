//! In-process fixtures (the `cluster` feature): [`TestBroker`], one embedded single node (broker and controller
//! of a quorum of one) on a free loopback port with its own temporary directory; [`BlockingBroker`], the same on
//! its own runtime for synchronous tests; and [`TestCluster`], N combined `broker,controller` nodes forming a Raft
//! quorum over their CONTROLLER listeners, each node a real [`sluice_broker::Server`] that can be killed and
//! restarted on its directory.
//!
//! Everything is configured the way an operator would, through `BrokerConfig::from_pairs`, so a fixture runs
//! exactly the code `sluice server` runs. Overrides are `(key, value)` pairs applied after the fixture's own
//! settings (later ones win).

mod ports;
mod quorum;
mod single;

use std::time::{Duration, Instant};

pub use ports::free_port;
pub use quorum::{TestCluster, CLUSTER_ID};
pub use single::{BlockingBroker, TestBroker};

/// How often [`eventually`] polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns `Some`, and returns that value; panics naming `what` if `timeout` passes first.
/// For conditions that become true asynchronously (a metadata change reaching every node, a broker fenced).
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Owned copies of `(key, value)` overrides.
fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
