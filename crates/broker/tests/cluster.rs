//! A 3-node cluster in one process (the kit's `TestCluster`: three `broker,controller` nodes, a Raft quorum over
//! their CONTROLLER listeners): a topic created through a node that is not the controller (CreateTopics forwarded
//! over the controller channel, as KIP-590 forwards it) reaches every node's metadata image; when the active
//! controller stops, the others elect a new one (Raft section 5.2) that serves CreateTopics, nothing committed
//! before is lost, and the stopped node, restarted on its directory, catches up with both topics.

use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
mod common;

use common::Client;
use sluice_testkit::cluster::eventually;
use sluice_testkit::TestCluster;

const NONE: i16 = 0;
const REQUEST_TIMED_OUT: i16 = 7;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const NOT_CONTROLLER: i16 = 41;

/// How long a metadata change may take to reach every node, or a new controller to be elected.
const PROPAGATION: Duration = Duration::from_secs(30);

fn create_topic(name: &str, partitions: i32, replication_factor: i16) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)])
        .with_timeout_ms(5000)
}

/// Waits until every running node's image holds `topic` with `partitions` partitions of
/// `replication_factor` replicas each.
async fn wait_topic_everywhere(
    cluster: &TestCluster,
    topic: &str,
    partitions: usize,
    replication_factor: usize,
) {
    eventually(
        &format!("{topic} in every running node's image"),
        PROPAGATION,
        || {
            cluster
                .running()
                .all(|(i, _)| {
                    cluster.image(i).topic(topic).is_some_and(|t| {
                        t.partitions.len() == partitions
                            && t.partitions
                                .iter()
                                .all(|p| p.replicas.len() == replication_factor)
                    })
                })
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_reach_every_node_and_a_new_controller_serves_create_topics() {
    let mut cluster = TestCluster::start(3).await;
    let controller = cluster.active_controller().await;

    // Through a node that is not the controller: the request is forwarded, the answer comes back from it.
    let via = (controller + 1) % cluster.len();
    let mut client = Client::connect(cluster.node(via)).await;
    let response = client.send(7, create_topic("before", 3, 3)).await;
    assert_eq!(response.topics[0].error_code, NONE, "{response:?}");
    wait_topic_everywhere(&cluster, "before", 3, 3).await;
    drop(client);

    cluster.kill(controller).await;
    let successor = cluster.active_controller().await;
    assert_ne!(successor, controller, "a stopped node cannot stay active");

    // The new controller serves CreateTopics. Until every node knows it, a request may find no controller;
    // a retry after a timed-out attempt that did commit finds the topic there.
    let via = (successor + 1) % cluster.len();
    let via = if via == controller {
        (via + 1) % cluster.len()
    } else {
        via
    };
    let mut client = Client::connect(cluster.node(via)).await;
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let response = client.send(7, create_topic("after", 2, 2)).await;
        match response.topics[0].error_code {
            NONE | TOPIC_ALREADY_EXISTS => break,
            NOT_CONTROLLER | REQUEST_TIMED_OUT if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => panic!("CreateTopics after the fail-over: {response:?}"),
        }
    }
    wait_topic_everywhere(&cluster, "after", 2, 2).await;
    let before = cluster.image(successor);
    assert_eq!(before.topic("before").map(|t| t.partitions.len()), Some(3));
    drop(client);

    // The old controller comes back as a follower and catches up with what was committed without it.
    cluster.restart(controller).await;
    cluster.wait_brokers(3).await;
    wait_topic_everywhere(&cluster, "after", 2, 2).await;
    wait_topic_everywhere(&cluster, "before", 3, 3).await;
    cluster.shutdown().await;
}

/// A connection to the CONTROLLER listener that never sends a byte (a port probe, a half-open peer) is dropped
/// at shutdown: the listener tells quorum peers from clients by the first bytes, and that wait must not hold the
/// node's exit for the whole drain timeout (it did: every SIGTERMed node took 10 s to exit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_to_the_controller_listener_does_not_hold_up_shutdown() {
    let mut cluster = TestCluster::start(3).await;
    cluster.wait_brokers(3).await;
    let victim = (cluster.active_controller().await + 1) % cluster.len();
    let silent = tokio::net::TcpStream::connect(("127.0.0.1", cluster.controller_port(victim)))
        .await
        .expect("connect to the controller listener");
    // Let the listener accept it and start waiting for its first bytes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    cluster.kill(victim).await;
    let took = started.elapsed();
    assert!(
        took < sluice_broker::server::DRAIN_TIMEOUT / 2,
        "shutdown took {took:?} with a silent connection open"
    );
    drop(silent);
    cluster.shutdown().await;
}
