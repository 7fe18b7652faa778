//! Group settings from the broker config take effect on a broker served in-process on a free loopback port:
//! `group.max.session.timeout.ms=10000` makes a JoinGroup asking for 30000 ms fail with INVALID_SESSION_TIMEOUT
//! (26), as Apache Kafka does, while the default bound (1800000) accepts the same request.

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
mod common;

use common::Client;
use sluice_broker::{BrokerConfig, Server};

/// The calls these tests make, on the shared test [`Client`].
trait GroupCalls {
    async fn join(&mut self, group: &str, session_timeout_ms: i32) -> JoinGroupResponse;
}

impl GroupCalls for Client {
    /// JoinGroup v3 (before KIP-394, so a fresh member joins in one round) asking for `session_timeout_ms`.
    async fn join(&mut self, group: &str, session_timeout_ms: i32) -> JoinGroupResponse {
        let protocol = JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::new());
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_session_timeout_ms(session_timeout_ms)
            .with_rebalance_timeout_ms(session_timeout_ms)
            .with_member_id(StrBytes::from_static_str(""))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![protocol]);
        self.send(3, request).await
    }
}

async fn start(dir: &std::path::Path, extra: &[(&str, &str)]) -> Server {
    let mut pairs = vec![
        (
            "listeners".to_string(),
            "PLAINTEXT://127.0.0.1:0".to_string(),
        ),
        ("log.dirs".to_string(), dir.display().to_string()),
        // A new group's first rebalance would otherwise wait 3 s.
        (
            "group.initial.rebalance.delay.ms".to_string(),
            "0".to_string(),
        ),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Server::start(BrokerConfig::from_pairs(pairs).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn group_max_session_timeout_ms_rejects_a_longer_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("group.max.session.timeout.ms", "10000")]).await;
    let mut client = Client::connect(&server).await;
    let response = client.join("capped", 30_000).await;
    assert_eq!(response.error_code, 26, "INVALID_SESSION_TIMEOUT");
    // Within the configured bound the same consumer is accepted.
    let response = client.join("capped", 10_000).await;
    assert_eq!(response.error_code, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn default_group_max_session_timeout_accepts_the_same_join() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]).await;
    let mut client = Client::connect(&server).await;
    let response = client.join("uncapped", 30_000).await;
    assert_eq!(response.error_code, 0);
    server.shutdown().await.unwrap();
}

/// Shutdown stops the group timers before the logs close: a timer firing afterwards (a session expiring, a
/// rebalance completing) would append to a closed `__consumer_offsets` log and lose that group change.
#[tokio::test]
async fn shutdown_stops_group_timers_before_the_logs_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]).await;
    let mut client = Client::connect(&server).await;
    let response = client.join("timers", 6_000).await;
    assert_eq!(response.error_code, 0);
    let broker = server.broker().clone();
    assert!(
        !broker.groups.timers_stopped(),
        "the timer loop runs while serving"
    );
    server.shutdown().await.unwrap();
    assert!(
        broker.groups.timers_stopped(),
        "shutdown waited for the timer loop to end"
    );
}
