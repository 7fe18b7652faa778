//! The shared client core: bootstrap list, one pooled connection per broker, and the cluster metadata cache
//! that producer, consumer and admin route requests with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;
use parking_lot::RwLock;
use uuid::Uuid;

use crate::connection::Connection;
use crate::error::{ClientError, Result};

/// FindCoordinator key type of a consumer group.
pub const COORDINATOR_GROUP: i8 = 0;
/// FindCoordinator key type of a transactional id.
pub const COORDINATOR_TRANSACTION: i8 = 1;

/// Settings shared by producer, consumer and admin.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` addresses to bootstrap from (`bootstrap.servers`).
    pub bootstrap_servers: Vec<String>,
    /// `client.id` sent in every request header.
    pub client_id: String,
    /// `request.timeout.ms`: how long to wait for any response.
    pub request_timeout_ms: u64,
    /// `socket.connection.setup.timeout.ms`.
    pub connect_timeout_ms: u64,
    /// `retry.backoff.ms`: pause before retrying a retriable error.
    pub retry_backoff_ms: u64,
    /// `metadata.max.age.ms`: cached metadata older than this is refreshed before use.
    pub metadata_max_age_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap_servers: vec!["127.0.0.1:9092".to_owned()],
            client_id: "sluice-client".to_owned(),
            request_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            retry_backoff_ms: 100,
            metadata_max_age_ms: 300_000,
        }
    }
}

impl ClientConfig {
    /// A config with `bootstrap` as a comma-separated `host:port` list.
    pub fn new(bootstrap: &str) -> ClientConfig {
        ClientConfig {
            bootstrap_servers: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            ..ClientConfig::default()
        }
    }
}

/// One broker of the cluster as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// `node.id`.
    pub node_id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// Rack, if configured.
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One partition's leader and replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// Leader node id, -1 when there is none.
    pub leader: i32,
    /// Leader epoch, -1 if unknown.
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// Offline replica node ids.
    pub offline_replicas: Vec<i32>,
    /// The partition's error code in the metadata response (0 = none).
    pub error_code: i16,
}

/// One topic in the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Topic id (nil when the broker does not send ids).
    pub topic_id: Uuid,
    /// Whether the topic is internal (`__consumer_offsets`).
    pub is_internal: bool,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionInfo>,
}

/// A snapshot of the cluster metadata.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetadata {
    /// Cluster id, if the broker sends one.
    pub cluster_id: Option<String>,
    /// The controller's node id (-1 if unknown).
    pub controller_id: i32,
    /// Brokers by node id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicInfo>,
}

impl ClusterMetadata {
    /// The leader of `topic`-`partition`, if known.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let topic = self.topics.get(topic)?;
        let p = topic.partitions.iter().find(|p| p.partition == partition)?;
        (p.leader >= 0).then_some(p.leader)
    }
}

struct Inner {
    config: ClientConfig,
    connections: tokio::sync::Mutex<HashMap<String, Arc<Connection>>>,
    metadata: RwLock<(Arc<ClusterMetadata>, Option<Instant>)>,
}

/// A handle on a cluster: connections and metadata. Cloning is cheap and shares both.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap_servers", &self.inner.config.bootstrap_servers)
            .finish()
    }
}

impl Client {
    /// Creates a client and checks that a bootstrap broker answers (fetching cluster metadata).
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        if config.bootstrap_servers.is_empty() {
            return Err(ClientError::Config("bootstrap.servers is empty".into()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                config,
                connections: tokio::sync::Mutex::new(HashMap::new()),
                metadata: RwLock::new((Arc::new(ClusterMetadata::default()), None)),
            }),
        };
        client.refresh_metadata(Some(&[]), false).await?;
        Ok(client)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The cached metadata snapshot.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.inner.metadata.read().0.clone()
    }

    /// A live connection to `addr`, opened if needed.
    pub async fn connection_to_addr(&self, addr: &str) -> Result<Arc<Connection>> {
        let mut pool = self.inner.connections.lock().await;
        if let Some(conn) = pool.get(addr) {
            if conn.is_alive() {
                return Ok(conn.clone());
            }
        }
        let config = &self.inner.config;
        let conn = Arc::new(
            Connection::connect(
                addr,
                &config.client_id,
                config.connect_timeout_ms,
                config.request_timeout_ms,
            )
            .await?,
        );
        pool.insert(addr.to_owned(), conn.clone());
        Ok(conn)
    }

    /// A live connection to broker `node_id` (from the metadata).
    pub async fn connection_to(&self, node_id: i32) -> Result<Arc<Connection>> {
        let addr = match self.metadata().brokers.get(&node_id) {
            Some(b) => b.addr(),
            None => {
                self.refresh_metadata(Some(&[]), false).await?;
                self.metadata()
                    .brokers
                    .get(&node_id)
                    .map(BrokerInfo::addr)
                    .ok_or_else(|| ClientError::Connection {
                        addr: format!("node {node_id}"),
                        reason: "broker not in the cluster metadata".into(),
                    })?
            }
        };
        self.connection_to_addr(&addr).await
    }

    /// A connection to any reachable broker: known brokers first, then the bootstrap list.
    pub async fn any_connection(&self) -> Result<Arc<Connection>> {
        let mut candidates: Vec<String> = self
            .metadata()
            .brokers
            .values()
            .map(BrokerInfo::addr)
            .collect();
        candidates.extend(self.inner.config.bootstrap_servers.iter().cloned());
        let mut last = String::from("no address");
        for addr in &candidates {
            match self.connection_to_addr(addr).await {
                Ok(conn) => return Ok(conn),
                Err(e) => last = e.to_string(),
            }
        }
        Err(ClientError::Unreachable {
            bootstrap: self.inner.config.bootstrap_servers.join(","),
            reason: last,
        })
    }

    /// Sends `request` to any broker.
    pub async fn send_any<R: Request>(&self, request: &R, cap: Option<i16>) -> Result<R::Response> {
        self.any_connection().await?.send(request, cap).await
    }

    /// Sends `request` to broker `node_id`.
    pub async fn send_to<R: Request>(
        &self,
        node_id: i32,
        request: &R,
        cap: Option<i16>,
    ) -> Result<R::Response> {
        self.connection_to(node_id).await?.send(request, cap).await
    }

    /// Sends `request` to the controller (for admin requests); any broker if the controller is unknown.
    pub async fn send_controller<R: Request>(
        &self,
        request: &R,
        cap: Option<i16>,
    ) -> Result<R::Response> {
        let controller = self.metadata().controller_id;
        if controller >= 0 {
            if let Ok(conn) = self.connection_to(controller).await {
                return conn.send(request, cap).await;
            }
        }
        self.send_any(request, cap).await
    }

    /// Refreshes metadata for `topics` (`None` = all topics, `Some(&[])` = brokers only) and merges it into
    /// the cache. Topic-level errors are left in the response for the caller; the cache drops topics the
    /// broker says do not exist.
    pub async fn refresh_metadata(
        &self,
        topics: Option<&[String]>,
        allow_auto_topic_creation: bool,
    ) -> Result<MetadataResponse> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(allow_auto_topic_creation);
        let response = self.send_any(&request, None).await?;
        self.merge_metadata(&response, topics.is_none());
        Ok(response)
    }

    fn merge_metadata(&self, response: &MetadataResponse, all_topics: bool) {
        let mut guard = self.inner.metadata.write();
        let mut next = (*guard.0).clone();
        next.cluster_id = response.cluster_id.as_ref().map(|s| s.as_str().to_owned());
        next.controller_id = response.controller_id.0;
        if !response.brokers.is_empty() {
            next.brokers = response
                .brokers
                .iter()
                .map(|b| {
                    (
                        b.node_id.0,
                        BrokerInfo {
                            node_id: b.node_id.0,
                            host: b.host.as_str().to_owned(),
                            port: b.port,
                            rack: b.rack.as_ref().map(|r| r.as_str().to_owned()),
                        },
                    )
                })
                .collect();
        }
        if all_topics {
            next.topics.clear();
        }
        for t in &response.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.as_str().to_owned()) else {
                continue;
            };
            if t.error_code != 0 {
                next.topics.remove(&name);
                continue;
            }
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: ids(&p.replica_nodes),
                    isr: ids(&p.isr_nodes),
                    offline_replicas: ids(&p.offline_replicas),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            next.topics.insert(
                name.clone(),
                TopicInfo {
                    name,
                    topic_id: t.topic_id,
                    is_internal: t.is_internal,
                    partitions,
                },
            );
        }
        *guard = (Arc::new(next), Some(Instant::now()));
    }

    /// The partition count of `topic` from the cache, whatever its age (no allocation and no clock read:
    /// the producer asks this for every record and refreshes old metadata in the background, see
    /// [`metadata_age`](Self::metadata_age)).
    pub fn cached_partition_count(&self, topic: &str) -> Option<usize> {
        self.inner
            .metadata
            .read()
            .0
            .topics
            .get(topic)
            .map(|t| t.partitions.len())
    }

    /// How long ago the cache was last refreshed (`None` before the first refresh).
    pub fn metadata_age(&self) -> Option<Duration> {
        self.inner.metadata.read().1.map(|at| at.elapsed())
    }

    /// The metadata of `topic`, from the cache if fresh, else refreshed (auto-creating the topic when
    /// `allow_auto_topic_creation`). Errors with [`ClientError::UnknownTopic`] if it does not exist.
    pub async fn topic(&self, topic: &str, allow_auto_topic_creation: bool) -> Result<TopicInfo> {
        let fresh = {
            let guard = self.inner.metadata.read();
            let young = guard.1.is_some_and(|at| {
                at.elapsed() < Duration::from_millis(self.inner.config.metadata_max_age_ms)
            });
            guard.0.topics.get(topic).filter(|_| young).cloned()
        };
        if let Some(info) = fresh {
            return Ok(info);
        }
        self.topic_refreshed(topic, allow_auto_topic_creation).await
    }

    /// The metadata of `topic`, always asking a broker (after NOT_LEADER_OR_FOLLOWER and friends). A topic
    /// that is being created (LEADER_NOT_AVAILABLE) is asked for again a few times.
    pub async fn topic_refreshed(
        &self,
        topic: &str,
        allow_auto_topic_creation: bool,
    ) -> Result<TopicInfo> {
        let names = [topic.to_owned()];
        let mut attempts = 0;
        loop {
            attempts += 1;
            let response = self
                .refresh_metadata(Some(&names), allow_auto_topic_creation)
                .await?;
            let entry = response
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic));
            let code = entry.map_or(ResponseError::UnknownTopicOrPartition.code(), |t| {
                t.error_code
            });
            let leaderless = entry.is_some_and(|t| t.partitions.iter().any(|p| p.leader_id.0 < 0));
            match ResponseError::try_from_code(code) {
                None if !leaderless || attempts >= 10 => {
                    if let Some(info) = self.metadata().topics.get(topic) {
                        return Ok(info.clone());
                    }
                    return Err(ClientError::UnknownTopic(topic.to_owned()));
                }
                None => {}
                Some(ResponseError::UnknownTopicOrPartition) if !allow_auto_topic_creation => {
                    return Err(ClientError::UnknownTopic(topic.to_owned()));
                }
                Some(e) if e.is_retriable() && attempts < 10 => {}
                Some(_) => {
                    return Err(ClientError::broker(
                        format!("metadata for topic {topic}"),
                        code,
                        None,
                    ))
                }
            }
            tokio::time::sleep(Duration::from_millis(self.inner.config.retry_backoff_ms)).await;
        }
    }

    /// Finds the group coordinator for `group_id` (FindCoordinator, key type 0).
    pub async fn group_coordinator(&self, group_id: &str) -> Result<i32> {
        self.find_coordinator(COORDINATOR_GROUP, group_id).await
    }

    /// Finds the transaction coordinator for `transactional_id` (FindCoordinator, key type 1).
    pub async fn transaction_coordinator(&self, transactional_id: &str) -> Result<i32> {
        self.find_coordinator(COORDINATOR_TRANSACTION, transactional_id)
            .await
    }

    /// FindCoordinator for `key` of `key_type` (0: group, 1: transaction); retriable errors are retried a
    /// few times with `retry.backoff.ms` between.
    pub async fn find_coordinator(&self, key_type: i8, key: &str) -> Result<i32> {
        let what = if key_type == COORDINATOR_TRANSACTION {
            "transactional id"
        } else {
            "group"
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let conn = self.any_connection().await?;
            let version = conn.version_for::<FindCoordinatorRequest>(None)?;
            let mut request = FindCoordinatorRequest::default().with_key_type(key_type);
            if version >= 4 {
                request.coordinator_keys = vec![StrBytes::from_string(key.to_owned())];
            } else {
                request.key = StrBytes::from_string(key.to_owned());
            }
            let response = conn.send_at(&request, version).await?;
            let (code, node, message) = if version >= 4 {
                match response.coordinators.first() {
                    Some(c) => (c.error_code, c.node_id.0, c.error_message.clone()),
                    None => (ResponseError::CoordinatorNotAvailable.code(), -1, None),
                }
            } else {
                (
                    response.error_code,
                    response.node_id.0,
                    response.error_message.clone(),
                )
            };
            if code == 0 && node >= 0 {
                // Make sure the coordinator's address is known.
                if !self.metadata().brokers.contains_key(&node) {
                    self.refresh_metadata(Some(&[]), false).await?;
                }
                return Ok(node);
            }
            let err = ClientError::broker(
                format!("finding the coordinator of {what} {key}"),
                code,
                message.map(|m| m.as_str().to_owned()),
            );
            if !err.is_retriable() || attempts >= 20 {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(self.inner.config.retry_backoff_ms)).await;
        }
    }
}

fn ids(nodes: &[BrokerId]) -> Vec<i32> {
    nodes.iter().map(|b| b.0).collect()
}
