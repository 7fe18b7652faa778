//! Group settings from the broker config take effect on a broker served in-process on a free loopback port:
//! `group.max.session.timeout.ms=10000` makes a JoinGroup asking for 30000 ms fail with INVALID_SESSION_TIMEOUT
//! (26), as Apache Kafka does, while the default bound (1800000) accepts the same request.

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
mod common;

use common::Client;
use sluice_testkit::TestBroker;

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

/// A broker with these overrides; a new group's first rebalance would otherwise wait 3 s.
async fn start(extra: &[(&str, &str)]) -> TestBroker {
    let mut overrides = vec![("group.initial.rebalance.delay.ms", "0")];
    overrides.extend_from_slice(extra);
    TestBroker::start_with(&overrides).await
}

#[tokio::test]
async fn group_max_session_timeout_ms_rejects_a_longer_session() {
    let mut broker = start(&[("group.max.session.timeout.ms", "10000")]).await;
    let mut client = Client::connect(broker.server()).await;
    let response = client.join("capped", 30_000).await;
    assert_eq!(response.error_code, 26, "INVALID_SESSION_TIMEOUT");
    // Within the configured bound the same consumer is accepted.
    let response = client.join("capped", 10_000).await;
    assert_eq!(response.error_code, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn default_group_max_session_timeout_accepts_the_same_join() {
    let mut broker = start(&[]).await;
    let mut client = Client::connect(broker.server()).await;
    let response = client.join("uncapped", 30_000).await;
    assert_eq!(response.error_code, 0);
    broker.shutdown().await;
}

/// Shutdown stops the group timers before the logs close: a timer firing afterwards (a session expiring, a
/// rebalance completing) would append to a closed `__consumer_offsets` log and lose that group change.
#[tokio::test]
async fn shutdown_stops_group_timers_before_the_logs_close() {
    let mut broker = start(&[]).await;
    let mut client = Client::connect(broker.server()).await;
    let response = client.join("timers", 6_000).await;
    assert_eq!(response.error_code, 0);
    let state = broker.broker().clone();
    assert!(
        !state.groups.timers_stopped(),
        "the timer loop runs while serving"
    );
    broker.shutdown().await;
    assert!(
        state.groups.timers_stopped(),
        "shutdown waited for the timer loop to end"
    );
}
