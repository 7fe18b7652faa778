//! Shared fixture for the client's integration tests: an in-process Sluice broker on a free loopback port with
//! a temporary log directory, shut down when the test ends.

#![allow(dead_code, unreachable_pub)]

use sluice_broker::{BrokerConfig, Server};
use sluice_client::admin::NewTopic;
use sluice_client::{Admin, ClientConfig};

/// A running broker and its directory.
pub struct TestBroker {
    pub server: Server,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    /// Starts a broker with the given extra config pairs.
    pub async fn start_with(extra: &[(&str, &str)]) -> TestBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut pairs = vec![
            ("listeners".to_owned(), "PLAINTEXT://127.0.0.1:0".to_owned()),
            ("log.dirs".to_owned(), dir.path().display().to_string()),
        ];
        pairs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let config = BrokerConfig::from_pairs(pairs).expect("broker config");
        let server = Server::start(config).await.expect("broker start");
        TestBroker { server, _dir: dir }
    }

    /// Starts a broker with default settings.
    pub async fn start() -> TestBroker {
        Self::start_with(&[]).await
    }

    /// `host:port`.
    pub fn bootstrap(&self) -> String {
        self.server.local_addr().to_string()
    }

    /// Client settings pointing at this broker.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(&self.bootstrap());
        c.request_timeout_ms = 10_000;
        c
    }

    /// Creates a topic with `partitions` partitions.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin = Admin::new(self.client_config()).await.expect("admin");
        admin
            .create_topic(NewTopic {
                name: name.to_owned(),
                num_partitions: partitions,
                replication_factor: 1,
                configs: vec![],
            })
            .await
            .expect("create topic");
    }

    /// Shuts the broker down.
    pub async fn stop(self) {
        self.server.shutdown().await.expect("shutdown");
    }
}
