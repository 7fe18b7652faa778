//! The broker's channel to the active controller (Kafka's `NodeToControllerChannelManager`): typed requests
//! sent to the CONTROLLER listener of whichever voter leads the Raft quorum now, over one `sluice_client`
//! [`Connection`] per address.
//!
//! Two users: the broker's own controller RPCs (BrokerRegistration, BrokerHeartbeat from `lifecycle.rs`), and
//! the forwarding of admin requests a client sent to a broker that is not the active controller (KIP-590;
//! [`ControllerChannel::forward_to_leader_broker`]). The leader is read from the local quorum state at every
//! attempt; a NOT_CONTROLLER answer (leadership moved while the request travelled) or a failed connection is
//! retried with a short backoff until the caller's deadline. A connection that failed or timed out is dropped
//! and re-opened on the next attempt, as Kafka clients do.
//!
//! Retrying is safe because the controller answers NOT_CONTROLLER before doing anything: only responses in
//! which every item is NOT_CONTROLLER are retried, never a partial success.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AlterConfigsRequest, AlterPartitionReassignmentsRequest,
    AlterPartitionRequest, BrokerHeartbeatRequest, BrokerRegistrationRequest,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeQuorumRequest,
    ElectLeadersRequest, IncrementalAlterConfigsRequest, ListPartitionReassignmentsRequest,
};
use kafka_protocol::protocol::Request;
use sluice_client::{ClientError, Connection};
use sluice_protocol::ErrorCode;
use tokio::time::Instant;

use crate::config::BrokerConfig;
use crate::controller::Controller;

/// First pause between attempts; doubled after each failed attempt up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between attempts. Kafka's clients back off up to `retry.backoff.max.ms` (1 s), but a forwarding
/// broker retrying through a controller election waits for an event only a quorum round away: polling every
/// 200 ms answers within that of the new leader (the failover benchmark lost 0.3-0.7 s to the 1 s cap).
const MAX_BACKOFF: Duration = Duration::from_millis(200);
/// Connecting to a controller gives up after this (or the caller's deadline, if sooner).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The request timeout the connections are opened with; every call is bounded by its own deadline as well.
const CONNECTION_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Why a request to the controller got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// This node is configured without controller quorum voters (the embedded single node is its own
    /// controller): there is nobody to send to.
    #[error("no controller quorum voters are configured")]
    NoVoters,
    /// The deadline passed before any controller answered. `sent` is true when the last attempt reached a
    /// controller and timed out waiting for its answer (REQUEST_TIMED_OUT); false when no leader was known or
    /// none could be reached (NOT_CONTROLLER).
    #[error("no answer from the active controller in time (last error: {last_error})")]
    Timeout {
        /// The last attempt was sent and not answered.
        sent: bool,
        /// What the last attempt ran into.
        last_error: String,
    },
    /// The controller does not serve this API at the requested version.
    #[error("the controller does not serve {api_key} v{version}")]
    UnsupportedVersion {
        /// The API key.
        api_key: i16,
        /// The version asked for.
        version: i16,
    },
    /// The controller's answer could not be decoded, or another error that retrying does not fix.
    #[error("controller request failed: {0}")]
    Client(#[from] ClientError),
}

impl ChannelError {
    /// The Kafka error code a forwarded request answers with: NOT_CONTROLLER when no controller could be
    /// reached (the client refreshes metadata and retries), REQUEST_TIMED_OUT when one was reached but did not
    /// answer in time, UNKNOWN_SERVER_ERROR otherwise.
    pub fn error_code(&self) -> i16 {
        match self {
            ChannelError::NoVoters | ChannelError::Timeout { sent: false, .. } => {
                ErrorCode::NotController.code()
            }
            ChannelError::Timeout { sent: true, .. } => ErrorCode::RequestTimedOut.code(),
            ChannelError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion.code(),
            ChannelError::Client(_) => ErrorCode::UnknownServerError.code(),
        }
    }
}

/// A request only the active controller answers. `is_not_controller` says whether a response means "ask the
/// new leader" (retried); `error_response` builds the answer a forwarding broker gives when the controller could
/// not be asked: every item of the request with `error_code`.
pub trait ControllerRequest: Request + Send + Sync {
    /// True when the response says the receiver is not the active controller and nothing was done.
    fn is_not_controller(response: &Self::Response) -> bool;
    /// The response to `self` (at `version`) with `error_code` on every item.
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response;
}

/// The broker's connections to the active controller. Cheap to clone.
#[derive(Clone)]
pub struct ControllerChannel {
    inner: Arc<Inner>,
}

struct Inner {
    controller: Controller,
    client_id: String,
    /// One connection per `host:port`, replaced when it dies. Locked only to look up or insert.
    connections: parking_lot::Mutex<HashMap<String, Arc<Connection>>>,
}

impl std::fmt::Debug for ControllerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerChannel")
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

impl ControllerChannel {
    /// A channel that finds the active controller through `controller` (its Raft leader and voters).
    pub fn new(controller: Controller, config: Arc<BrokerConfig>) -> ControllerChannel {
        ControllerChannel {
            inner: Arc::new(Inner {
                controller,
                client_id: format!("sluice-broker-{}", config.node_id),
                connections: parking_lot::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// True when there is a remote controller quorum to talk to (voters configured). False on the embedded
    /// single node, which is its own controller.
    pub fn has_voters(&self) -> bool {
        !self.inner.controller.voters().is_empty()
    }

    /// Sends `request` to the active controller at the highest version both sides speak, retrying on
    /// NOT_CONTROLLER and connection failures until `timeout` has passed.
    pub async fn send<R: ControllerRequest>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, ChannelError> {
        self.send_inner(request, None, timeout).await
    }

    /// Forwards an admin request a client sent to this broker (KIP-590) to the active controller's CONTROLLER
    /// listener at the client's `version`, which serves it through the same handlers. Retries as
    /// [`send`](Self::send); the caller turns an error into per-item errors with
    /// [`ControllerRequest::error_response`] and [`ChannelError::error_code`].
    pub async fn forward_to_leader_broker<R: ControllerRequest>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ChannelError> {
        self.send_inner(request, Some(version), timeout).await
    }

    async fn send_inner<R: ControllerRequest>(
        &self,
        request: &R,
        version: Option<i16>,
        timeout: Duration,
    ) -> Result<R::Response, ChannelError> {
        let deadline = Instant::now() + timeout;
        let mut backoff = MIN_BACKOFF;
        let mut sent = false;
        let mut last_error = String::from("no attempt");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ChannelError::Timeout { sent, last_error });
            }
            let remaining = deadline - now;
            match self.attempt(request, version, remaining).await {
                Attempt::Done(response) => return Ok(response),
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry { sent: s, error } => {
                    sent = s;
                    last_error = error;
                }
            }
            tracing::debug!(api_key = R::KEY, error = %last_error, "controller request will be retried");
            let now = Instant::now();
            if now >= deadline {
                return Err(ChannelError::Timeout { sent, last_error });
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One try: find the leader, get a connection, send, classify the outcome.
    async fn attempt<R: ControllerRequest>(
        &self,
        request: &R,
        version: Option<i16>,
        remaining: Duration,
    ) -> Attempt<R::Response> {
        let voters = self.inner.controller.voters();
        if voters.is_empty() {
            return Attempt::Fatal(ChannelError::NoVoters);
        }
        let Some(leader) = self.inner.controller.leader_id() else {
            return Attempt::Retry {
                sent: false,
                error: "no controller leader is known yet".into(),
            };
        };
        let Some(addr) = leader_address(&voters, leader) else {
            return Attempt::Retry {
                sent: false,
                error: format!("the leader {leader} is not among controller.quorum.voters"),
            };
        };
        let conn = match self.connection(&addr, remaining).await {
            Ok(conn) => conn,
            Err(error) => return Attempt::Retry { sent: false, error },
        };
        let version = match version {
            Some(v) => {
                let supported = kafka_protocol::messages::ApiKey::try_from(R::KEY)
                    .ok()
                    .and_then(|api| conn.broker_versions(api))
                    .is_some_and(|(min, max)| min <= v && v <= max);
                if !supported {
                    return Attempt::Fatal(ChannelError::UnsupportedVersion {
                        api_key: R::KEY,
                        version: v,
                    });
                }
                v
            }
            None => match conn.version_for::<R>(None) {
                Ok(v) => v,
                Err(e) => return Attempt::Fatal(e.into()),
            },
        };
        match tokio::time::timeout(remaining, conn.send_at(request, version)).await {
            Err(_) => {
                // A response may still arrive for the abandoned request: the connection is not reused.
                self.evict(&addr, &conn);
                Attempt::Retry {
                    sent: true,
                    error: format!("controller {leader} at {addr} did not answer in time"),
                }
            }
            Ok(Err(e @ (ClientError::Connection { .. } | ClientError::Timeout { .. }))) => {
                self.evict(&addr, &conn);
                Attempt::Retry {
                    sent: matches!(e, ClientError::Timeout { .. }),
                    error: e.to_string(),
                }
            }
            Ok(Err(e)) => Attempt::Fatal(e.into()),
            Ok(Ok(response)) if R::is_not_controller(&response) => Attempt::Retry {
                sent: false,
                error: format!("node {leader} at {addr} answered NOT_CONTROLLER"),
            },
            Ok(Ok(response)) => Attempt::Done(response),
        }
    }

    /// The live connection to `addr`, opened if there is none.
    async fn connection(&self, addr: &str, remaining: Duration) -> Result<Arc<Connection>, String> {
        if let Some(conn) = self.inner.connections.lock().get(addr) {
            if conn.is_alive() {
                return Ok(conn.clone());
            }
        }
        let connect_timeout_ms =
            u64::try_from(remaining.min(CONNECT_TIMEOUT).as_millis()).unwrap_or(u64::MAX);
        let conn = Connection::connect(
            addr,
            &self.inner.client_id,
            connect_timeout_ms.max(1),
            CONNECTION_REQUEST_TIMEOUT_MS,
        )
        .await
        .map_err(|e| e.to_string())?;
        let conn = Arc::new(conn);
        self.inner
            .connections
            .lock()
            .insert(addr.to_owned(), conn.clone());
        Ok(conn)
    }

    /// Drops `conn` from the cache unless another task already replaced it.
    fn evict(&self, addr: &str, conn: &Arc<Connection>) {
        let mut connections = self.inner.connections.lock();
        if connections.get(addr).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            connections.remove(addr);
        }
    }
}

enum Attempt<T> {
    Done(T),
    Retry { sent: bool, error: String },
    Fatal(ChannelError),
}

/// The `host:port` of `leader`'s CONTROLLER listener, from the voters `(id, host, port)`.
fn leader_address(voters: &[(i32, String, u16)], leader: i32) -> Option<String> {
    voters
        .iter()
        .find(|(id, _, _)| *id == leader)
        .map(|(_, host, port)| {
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        })
}

/// NOT_CONTROLLER on a non-empty list of item codes, all of them.
fn all_not_controller(mut codes: impl Iterator<Item = i16>) -> bool {
    let not_controller = ErrorCode::NotController.code();
    let mut any = false;
    let all = codes.all(|c| {
        any = true;
        c == not_controller
    });
    any && all
}

fn message(error_code: i16) -> Option<kafka_protocol::protocol::StrBytes> {
    let text = match ErrorCode::try_from_code(error_code) {
        Some(e) => e.to_string(),
        None => format!("error {error_code}"),
    };
    Some(kafka_protocol::protocol::StrBytes::from_string(text))
}

impl ControllerRequest for BrokerRegistrationRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        response.error_code == ErrorCode::NotController.code()
    }
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        Self::Response::default()
            .with_error_code(error_code)
            .with_broker_epoch(-1)
    }
}

impl ControllerRequest for BrokerHeartbeatRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        response.error_code == ErrorCode::NotController.code()
    }
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        Self::Response::default()
            .with_error_code(error_code)
            .with_is_fenced(true)
    }
}

impl ControllerRequest for AllocateProducerIdsRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        response.error_code == ErrorCode::NotController.code()
    }
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        Self::Response::default()
            .with_error_code(error_code)
            .with_producer_id_start(kafka_protocol::messages::ProducerId(-1))
    }
}

impl ControllerRequest for AlterPartitionRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        response.error_code == ErrorCode::NotController.code()
    }
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        Self::Response::default().with_error_code(error_code)
    }
}

impl ControllerRequest for DescribeQuorumRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        // A voter that lost the leadership answers NOT_LEADER_OR_FOLLOWER on the partition (Kafka's Raft client).
        let not_leader = ErrorCode::NotLeaderOrFollower.code();
        response.error_code == ErrorCode::NotController.code()
            || all_not_controller(
                response
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|p| {
                        if p.error_code == not_leader {
                            ErrorCode::NotController.code()
                        } else {
                            p.error_code
                        }
                    }),
            )
    }
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response {
        let mut response = Self::Response::default().with_error_code(error_code);
        if version >= 2 {
            response.error_message = message(error_code);
        }
        response
    }
}

impl ControllerRequest for CreateTopicsRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        all_not_controller(response.topics.iter().map(|t| t.error_code))
    }
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response {
        use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
        let topics = self
            .topics
            .iter()
            .map(|t| {
                let mut r = CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(error_code)
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
                if version >= 1 {
                    r.error_message = message(error_code);
                }
                r
            })
            .collect();
        Self::Response::default().with_topics(topics)
    }
}

impl ControllerRequest for DeleteTopicsRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        all_not_controller(response.responses.iter().map(|t| t.error_code))
    }
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response {
        use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
        let responses = if version >= 6 {
            self.topics
                .iter()
                .map(|t| {
                    DeletableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_topic_id(t.topic_id)
                        .with_error_code(error_code)
                        .with_error_message(message(error_code))
                })
                .collect()
        } else {
            self.topic_names
                .iter()
                .map(|n| {
                    let mut r = DeletableTopicResult::default()
                        .with_name(Some(n.clone()))
                        .with_error_code(error_code);
                    if version >= 5 {
                        r.error_message = message(error_code);
                    }
                    r
                })
                .collect()
        };
        Self::Response::default().with_responses(responses)
    }
}

impl ControllerRequest for CreatePartitionsRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        all_not_controller(response.results.iter().map(|t| t.error_code))
    }
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
        let results = self
            .topics
            .iter()
            .map(|t| {
                CreatePartitionsTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(error_code)
                    .with_error_message(message(error_code))
            })
            .collect();
        Self::Response::default().with_results(results)
    }
}

impl ControllerRequest for AlterConfigsRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        all_not_controller(response.responses.iter().map(|t| t.error_code))
    }
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
        let responses = self
            .resources
            .iter()
            .map(|r| {
                AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone())
                    .with_error_code(error_code)
                    .with_error_message(message(error_code))
            })
            .collect();
        Self::Response::default().with_responses(responses)
    }
}

impl ControllerRequest for IncrementalAlterConfigsRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        all_not_controller(response.responses.iter().map(|t| t.error_code))
    }
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
        let responses = self
            .resources
            .iter()
            .map(|r| {
                AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone())
                    .with_error_code(error_code)
                    .with_error_message(message(error_code))
            })
            .collect();
        Self::Response::default().with_responses(responses)
    }
}

impl ControllerRequest for ElectLeadersRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        response.error_code == ErrorCode::NotController.code()
            || all_not_controller(
                response
                    .replica_election_results
                    .iter()
                    .flat_map(|t| t.partition_result.iter())
                    .map(|p| p.error_code),
            )
    }
    fn error_response(&self, version: i16, error_code: i16) -> Self::Response {
        use kafka_protocol::messages::elect_leaders_response::{
            PartitionResult, ReplicaElectionResult,
        };
        let results = self
            .topic_partitions
            .iter()
            .flatten()
            .map(|t| {
                ReplicaElectionResult::default()
                    .with_topic(t.topic.clone())
                    .with_partition_result(
                        t.partitions
                            .iter()
                            .map(|&p| {
                                PartitionResult::default()
                                    .with_partition_id(p)
                                    .with_error_code(error_code)
                                    .with_error_message(message(error_code))
                            })
                            .collect(),
                    )
            })
            .collect();
        let mut response = Self::Response::default().with_replica_election_results(results);
        if version >= 1 {
            response.error_code = error_code;
        }
        response
    }
}

impl ControllerRequest for AlterPartitionReassignmentsRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        response.error_code == ErrorCode::NotController.code()
            || all_not_controller(
                response
                    .responses
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|p| p.error_code),
            )
    }
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        use kafka_protocol::messages::alter_partition_reassignments_response::{
            ReassignablePartitionResponse, ReassignableTopicResponse,
        };
        let responses = self
            .topics
            .iter()
            .map(|t| {
                ReassignableTopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                ReassignablePartitionResponse::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error_code)
                                    .with_error_message(message(error_code))
                            })
                            .collect(),
                    )
            })
            .collect();
        Self::Response::default()
            .with_error_code(error_code)
            .with_error_message(message(error_code))
            .with_responses(responses)
    }
}

impl ControllerRequest for ListPartitionReassignmentsRequest {
    fn is_not_controller(response: &Self::Response) -> bool {
        response.error_code == ErrorCode::NotController.code()
    }
    fn error_response(&self, _version: i16, error_code: i16) -> Self::Response {
        Self::Response::default()
            .with_error_code(error_code)
            .with_error_message(message(error_code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
    use kafka_protocol::messages::{CreateTopicsResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn leader_address_brackets_ipv6_hosts() {
        let voters = vec![
            (1, "10.0.0.1".to_string(), 9093),
            (2, "::1".to_string(), 9093),
        ];
        assert_eq!(leader_address(&voters, 1).as_deref(), Some("10.0.0.1:9093"));
        assert_eq!(leader_address(&voters, 2).as_deref(), Some("[::1]:9093"));
        assert_eq!(leader_address(&voters, 3), None);
    }

    #[test]
    fn only_an_all_not_controller_answer_is_retried() {
        let nc = ErrorCode::NotController.code();
        let response = |codes: &[i16]| {
            CreateTopicsResponse::default().with_topics(
                codes
                    .iter()
                    .map(|&c| CreatableTopicResult::default().with_error_code(c))
                    .collect(),
            )
        };
        assert!(CreateTopicsRequest::is_not_controller(&response(&[nc, nc])));
        assert!(
            !CreateTopicsRequest::is_not_controller(&response(&[nc, 0])),
            "a partial success is never sent again"
        );
        assert!(!CreateTopicsRequest::is_not_controller(&response(&[])));
    }

    #[test]
    fn error_response_answers_every_item() {
        let request = CreateTopicsRequest::default().with_topics(vec![
            CreatableTopic::default().with_name(TopicName(StrBytes::from_static_str("a"))),
            CreatableTopic::default().with_name(TopicName(StrBytes::from_static_str("b"))),
        ]);
        let response = request.error_response(7, ErrorCode::RequestTimedOut.code());
        assert_eq!(response.topics.len(), 2);
        assert!(response
            .topics
            .iter()
            .all(|t| t.error_code == ErrorCode::RequestTimedOut.code()));
        assert_eq!(response.topics[1].name.0.as_str(), "b");
    }
}
