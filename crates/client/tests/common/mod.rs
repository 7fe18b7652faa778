//! Shared fixture for the client's integration tests: the test kit's in-process broker ([`TestBroker`], a free
//! loopback port and a temporary log directory) with the client settings and topic creation these tests use.

#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use sluice_client::admin::NewTopic;
use sluice_client::{Admin, ClientConfig};
pub use sluice_testkit::TestBroker;

/// What the client tests ask of their broker.
pub(crate) trait ClientFixture {
    /// Client settings pointing at this broker.
    fn client_config(&self) -> ClientConfig;
    /// Creates a topic with `partitions` partitions (replication factor 1).
    async fn create_topic(&self, name: &str, partitions: i32);
}

impl ClientFixture for TestBroker {
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(&self.bootstrap());
        c.request_timeout_ms = 10_000;
        c
    }

    async fn create_topic(&self, name: &str, partitions: i32) {
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
}
