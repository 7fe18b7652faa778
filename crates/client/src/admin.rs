//! The admin client: topics, partitions, partition reassignments, configs, offsets, groups, the cluster
//! description and the metadata quorum.
//!
//! Requests that change cluster metadata go to the controller (any broker if unknown); offset queries go to
//! each partition's leader; group requests go to the group's coordinator. Every per-resource error is
//! reported as a [`ClientError::Broker`] naming the resource.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    alter_partition_reassignments_request, list_partition_reassignments_request,
};
use kafka_protocol::messages::{describe_quorum_request, describe_quorum_response};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest, DescribeQuorumRequest,
    DescribeQuorumResponse, GroupId, IncrementalAlterConfigsRequest, ListGroupsRequest,
    ListOffsetsRequest, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::client::{BrokerInfo, Client, ClientConfig, TopicInfo};
use crate::consumer::{commit_offsets, fetch_committed, IsolationLevel, TopicPartition};
use crate::error::{check_code, ClientError, Result};

/// Which offset ListOffsets should find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset (timestamp -2).
    Earliest,
    /// The log end offset (timestamp -1).
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    fn timestamp(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// A ListOffsets answer for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset (-1 when no record matches a timestamp query).
    pub offset: i64,
    /// The timestamp of that record (-1 for earliest/latest).
    pub timestamp_ms: i64,
}

/// Looks up offsets, one ListOffsets request per partition leader, retrying partitions whose leader moved.
pub(crate) async fn list_offsets(
    client: &Client,
    queries: &[(String, i32, OffsetSpec)],
    isolation_level: IsolationLevel,
) -> Result<BTreeMap<TopicPartition, Result<ListedOffset>>> {
    let mut out = BTreeMap::new();
    let mut todo: Vec<(String, i32, OffsetSpec)> = queries.to_vec();
    for topic in todo
        .iter()
        .map(|q| q.0.clone())
        .collect::<std::collections::BTreeSet<_>>()
    {
        client.topic(&topic, false).await?;
    }
    for attempt in 0..5 {
        if todo.is_empty() {
            break;
        }
        let metadata = client.metadata();
        let mut by_leader: HashMap<i32, Vec<(String, i32, OffsetSpec)>> = HashMap::new();
        let mut retry = Vec::new();
        for q in todo {
            match metadata.leader(&q.0, q.1) {
                Some(l) => by_leader.entry(l).or_default().push(q),
                None => {
                    if !metadata
                        .topics
                        .get(&q.0)
                        .is_some_and(|t| t.partitions.iter().any(|p| p.partition == q.1))
                    {
                        out.insert(
                            (q.0.clone(), q.1),
                            Err(ClientError::UnknownPartition {
                                topic: q.0.clone(),
                                partition: q.1,
                            }),
                        );
                    } else {
                        retry.push(q);
                    }
                }
            }
        }
        for (leader, qs) in by_leader {
            let mut topics: Vec<ListOffsetsTopic> = Vec::new();
            for (topic, partition, spec) in &qs {
                let p = ListOffsetsPartition::default()
                    .with_partition_index(*partition)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(spec.timestamp());
                match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                    Some(t) => t.partitions.push(p),
                    None => topics.push(
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.clone())))
                            .with_partitions(vec![p]),
                    ),
                }
            }
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(isolation_level.code())
                .with_timeout_ms(
                    i32::try_from(client.config().request_timeout_ms).unwrap_or(i32::MAX),
                )
                .with_topics(topics);
            let response = match client.send_to(leader, &request, None).await {
                Ok(r) => r,
                Err(e) if e.is_retriable() && attempt < 4 => {
                    retry.extend(qs);
                    continue;
                }
                // Only this leader's partitions fail (Kafka's admin client answers per partition): a leader that
                // cannot be reached must not hide the offsets of the others.
                Err(e) => {
                    for (topic, partition, _) in qs {
                        out.insert((topic, partition), Err(e.clone()));
                    }
                    continue;
                }
            };
            for (topic, partition, spec) in qs {
                let answer = response
                    .topics
                    .iter()
                    .filter(|t| t.name.0.as_str() == topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == partition);
                let tp = (topic.clone(), partition);
                match answer {
                    None => {
                        out.insert(
                            tp,
                            Err(ClientError::broker(
                                format!("offsets of {topic}-{partition}"),
                                ResponseError::UnknownTopicOrPartition.code(),
                                None,
                            )),
                        );
                    }
                    Some(a) if a.error_code == 0 => {
                        out.insert(
                            tp,
                            Ok(ListedOffset {
                                offset: a.offset,
                                timestamp_ms: a.timestamp,
                            }),
                        );
                    }
                    Some(a) => {
                        let e = ClientError::broker(
                            format!("offsets of {topic}-{partition}"),
                            a.error_code,
                            None,
                        );
                        if e.is_retriable() && attempt < 4 {
                            retry.push((topic, partition, spec));
                        } else {
                            out.insert(tp, Err(e));
                        }
                    }
                }
            }
        }
        if !retry.is_empty() {
            tokio::time::sleep(Duration::from_millis(client.config().retry_backoff_ms)).await;
            let mut topics: Vec<String> = retry.iter().map(|q| q.0.clone()).collect();
            topics.sort();
            topics.dedup();
            for t in topics {
                let _ = client.topic_refreshed(&t, false).await;
            }
        }
        todo = retry;
    }
    for (topic, partition, _) in todo {
        out.insert(
            (topic.clone(), partition),
            Err(ClientError::broker(
                format!("offsets of {topic}-{partition}"),
                ResponseError::LeaderNotAvailable.code(),
                None,
            )),
        );
    }
    Ok(out)
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count (-1 = broker default `num.partitions`).
    pub num_partitions: i32,
    /// Replication factor (-1 = broker default).
    pub replication_factor: i16,
    /// Topic configs.
    pub configs: Vec<(String, String)>,
}

/// What kind of resource a config belongs to (Kafka's `ConfigResource.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigResourceType {
    /// A topic (2).
    Topic,
    /// A broker (4).
    Broker,
}

impl ConfigResourceType {
    fn code(self) -> i8 {
        match self {
            ConfigResourceType::Topic => 2,
            ConfigResourceType::Broker => 4,
        }
    }
}

/// One config entry as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Key.
    pub name: String,
    /// Value (`None` for sensitive or unset values).
    pub value: Option<String>,
    /// Where the value comes from (Kafka's `ConfigSource`: 1 topic, 4 static broker, 5 default, ...).
    pub source: i8,
    /// Whether the value is the default.
    pub is_default: bool,
    /// Read-only.
    pub read_only: bool,
    /// Sensitive (value hidden).
    pub sensitive: bool,
}

/// A config change for [`Admin::alter_configs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Set `key` to `value`.
    Set(String, String),
    /// Remove `key` (back to its default).
    Delete(String),
}

/// A reassignment in progress as ListPartitionReassignments reports it (Kafka's `PartitionReassignment`, KIP-455).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReassignment {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Every replica while the reassignment runs: the target replicas and the ones still being removed.
    pub replicas: Vec<i32>,
    /// Replicas being added (in the target, not yet in sync).
    pub adding_replicas: Vec<i32>,
    /// Replicas being removed (not in the target; dropped once the adding ones are in sync).
    pub removing_replicas: Vec<i32>,
}

/// The cluster as DescribeCluster (or Metadata) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// Controller node id (-1 if unknown).
    pub controller_id: i32,
    /// Brokers by id: the unfenced ones, and the fenced ones too when [`ClusterDescription::fenced_listed`].
    pub brokers: Vec<ClusterBroker>,
    /// True when fenced brokers were asked for and the broker could list them (DescribeCluster v2, KIP-1073).
    /// False otherwise: then a fenced broker is simply absent, as in Metadata.
    pub fenced_listed: bool,
}

/// One broker of a [`ClusterDescription`] (Kafka's `Node` with `isFenced`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBroker {
    /// Id, advertised address and rack.
    pub info: BrokerInfo,
    /// Registered but fenced: its heartbeats stopped for longer than its session, or it has not caught up with
    /// the metadata log since it registered. A fenced broker leads no partition.
    pub fenced: bool,
}

/// The metadata quorum as DescribeQuorum reports it (Kafka's `QuorumInfo`, KIP-595, KIP-836, KIP-853).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumInfo {
    /// The leader (the active controller), -1 if unknown.
    pub leader_id: i32,
    /// The leader epoch (the Raft term).
    pub leader_epoch: i32,
    /// The metadata log's high watermark (its commit index).
    pub high_watermark: i64,
    /// The voters as the leader sees them, in the order it reports them.
    pub voters: Vec<QuorumReplica>,
    /// Observers (broker-only nodes replicating the log) the leader has heard from.
    pub observers: Vec<QuorumReplica>,
    /// The controller endpoints of each voter (DescribeQuorum v2; empty below).
    pub nodes: BTreeMap<i32, Vec<RaftEndpoint>>,
}

impl QuorumInfo {
    /// The leader's replica state, if the leader is one of the voters.
    pub fn leader(&self) -> Option<&QuorumReplica> {
        self.voters.iter().find(|v| v.replica_id == self.leader_id)
    }
}

/// One replica of the metadata log in [`QuorumInfo`] (Kafka's `QuorumInfo.ReplicaState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumReplica {
    /// The node id.
    pub replica_id: i32,
    /// The directory id of its metadata log (KIP-853); the nil UUID when not reported.
    pub directory_id: uuid::Uuid,
    /// Its log end offset as the leader knows it (-1 unknown).
    pub log_end_offset: i64,
    /// When the leader last received a fetch from it, in ms since the epoch (DescribeQuorum v1+).
    pub last_fetch_timestamp_ms: Option<i64>,
    /// When it was last caught up with the leader, in ms since the epoch (DescribeQuorum v1+).
    pub last_caught_up_timestamp_ms: Option<i64>,
}

/// A voter's listener (Kafka's `RaftVoterEndpoint`); displays as `NAME://host:port`, IPv6 hosts in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftEndpoint {
    /// The listener name (`CONTROLLER`).
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl fmt::Display for RaftEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.name, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.name, self.host, self.port)
        }
    }
}

/// The topic of the metadata log, the one partition DescribeQuorum describes.
const CLUSTER_METADATA_TOPIC: &str = "__cluster_metadata";

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type (`consumer` for consumer groups).
    pub protocol_type: String,
    /// State (`Stable`, `Empty`, ...), if the broker reports it.
    pub state: String,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// State.
    pub state: String,
    /// Protocol type.
    pub protocol_type: String,
    /// The chosen assignor.
    pub protocol: String,
    /// Members: (member id, client id, client host).
    pub members: Vec<(String, String, String)>,
    /// The partitions assigned to each member (by member id), for groups of the `consumer` protocol type; a
    /// member whose assignment does not decode has none here.
    pub assignments: BTreeMap<String, Vec<TopicPartition>>,
}

/// The admin client.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    /// Connects to the cluster.
    pub async fn new(config: ClientConfig) -> Result<Admin> {
        Ok(Admin {
            client: Client::connect(config).await?,
        })
    }

    /// An admin over an existing client.
    pub fn from_client(client: Client) -> Admin {
        Admin { client }
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.client.config().request_timeout_ms).unwrap_or(i32::MAX)
    }

    /// Runs `attempt` again after `retry_backoff_ms` while it fails with a retriable error (an election under way:
    /// NOT_CONTROLLER, NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, a dropped connection), until
    /// `request_timeout_ms` has passed; then its last outcome is the outcome. For requests that are safe to repeat.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline =
            Instant::now() + Duration::from_millis(self.client.config().request_timeout_ms);
        loop {
            match attempt().await {
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(
                        self.client.config().retry_backoff_ms,
                    ))
                    .await;
                }
                other => return other,
            }
        }
    }

    /// Creates topics; one result per topic, in order.
    pub async fn create_topics(&self, topics: &[NewTopic]) -> Result<Vec<Result<()>>> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.name.clone())))
                            .with_num_partitions(t.num_partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let response = self.client.send_controller(&request, None).await?;
        let results = topics
            .iter()
            .map(|t| {
                let r = response
                    .topics
                    .iter()
                    .find(|r| r.name.0.as_str() == t.name)
                    .ok_or_else(|| {
                        ClientError::broker(format!("creating topic {}", t.name), -1, None)
                    })?;
                check_code(
                    r.error_code,
                    || format!("creating topic {}", t.name),
                    r.error_message.as_ref(),
                )
            })
            .collect();
        Ok(results)
    }

    /// Creates one topic.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let mut results = self.create_topics(std::slice::from_ref(&topic)).await?;
        results.pop().unwrap_or(Ok(()))?;
        // Wait until the metadata shows the topic with leaders, so the next request finds it.
        let _ = self.client.topic_refreshed(&topic.name, false).await;
        Ok(())
    }

    /// Deletes topics by name; one result per topic, in order.
    pub async fn delete_topics(&self, names: &[String]) -> Result<Vec<Result<()>>> {
        let conn = self.client.any_connection().await?;
        let version = conn.version_for::<DeleteTopicsRequest>(None)?;
        let mut request = DeleteTopicsRequest::default().with_timeout_ms(self.timeout_ms());
        if version >= 6 {
            request.topics = names
                .iter()
                .map(|n| {
                    DeleteTopicState::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                })
                .collect();
        } else {
            request.topic_names = names
                .iter()
                .map(|n| TopicName(StrBytes::from_string(n.clone())))
                .collect();
        }
        let response = conn.send_at(&request, version).await?;
        let results = names
            .iter()
            .map(|n| {
                let r = response
                    .responses
                    .iter()
                    .find(|r| r.name.as_ref().is_some_and(|x| x.0.as_str() == n))
                    .ok_or_else(|| ClientError::broker(format!("deleting topic {n}"), -1, None))?;
                check_code(
                    r.error_code,
                    || format!("deleting topic {n}"),
                    r.error_message.as_ref(),
                )
            })
            .collect();
        Ok(results)
    }

    /// Deletes one topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let mut results = self.delete_topics(&[name.to_owned()]).await?;
        results.pop().unwrap_or(Ok(()))
    }

    /// Every topic (internal ones included), from fresh metadata.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        self.client.refresh_metadata(None, false).await?;
        Ok(self.client.metadata().topics.values().cloned().collect())
    }

    /// One topic's partitions, leaders, replicas and ISR, from fresh metadata.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        self.client.topic_refreshed(name, false).await
    }

    /// Grows `topic` to `total` partitions.
    pub async fn create_partitions(&self, topic: &str, total: i32) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_count(total)
                .with_assignments(None)]);
        let response = self.client.send_controller(&request, None).await?;
        let r = response
            .results
            .iter()
            .find(|r| r.name.0.as_str() == topic)
            .ok_or_else(|| {
                ClientError::broker(format!("adding partitions to {topic}"), -1, None)
            })?;
        check_code(
            r.error_code,
            || format!("adding partitions to {topic}"),
            r.error_message.as_ref(),
        )?;
        let _ = self.client.topic_refreshed(topic, false).await;
        Ok(())
    }

    /// Starts, changes or cancels partition reassignments (AlterPartitionReassignments, KIP-455), sent to the
    /// controller: `Some(replicas)` moves a partition to those replicas (the first is the preferred leader), `None`
    /// cancels its reassignment in progress. `timeout` bounds how long the controller may take to accept them. One
    /// result per partition, in the order given; an error of the whole request (or a retriable one that outlasted
    /// `request_timeout_ms`) is the `Err`. The call returns once the controller accepted the reassignments, not
    /// when the data has moved: [`Admin::list_partition_reassignments`] shows those still running.
    pub async fn alter_partition_reassignments(
        &self,
        reassignments: &[(TopicPartition, Option<Vec<i32>>)],
        timeout: Duration,
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        self.alter_partition_reassignments_with(reassignments, timeout, true)
            .await
    }

    /// As [`Admin::alter_partition_reassignments`]; with `allow_replication_factor_change` false (KIP-860,
    /// AlterPartitionReassignments v1), the controller refuses, with INVALID_REPLICATION_FACTOR, a target whose
    /// replica count differs from the partition's. A controller that only speaks v0 cannot be asked that: the
    /// request then fails (UnsupportedVersion) rather than being sent without the check.
    pub async fn alter_partition_reassignments_with(
        &self,
        reassignments: &[(TopicPartition, Option<Vec<i32>>)],
        timeout: Duration,
        allow_replication_factor_change: bool,
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let request = reassignment_request(reassignments, timeout_ms)
            .with_allow_replication_factor_change(allow_replication_factor_change);
        let response = self
            .retrying(|| async {
                let response = self.client.send_controller(&request, None).await?;
                check_code(
                    response.error_code,
                    || "reassigning partitions".to_owned(),
                    response.error_message.as_ref(),
                )?;
                Ok(response)
            })
            .await?;
        Ok(reassignment_results(reassignments, &response))
    }

    /// The partition reassignments in progress (ListPartitionReassignments, KIP-455), asked of the controller:
    /// every one with `filter` `None`, else those among the given partitions (a partition with none running is
    /// simply absent). Sorted by topic and partition.
    pub async fn list_partition_reassignments(
        &self,
        filter: Option<&[TopicPartition]>,
    ) -> Result<Vec<PartitionReassignment>> {
        let request = list_reassignments_request(filter, self.timeout_ms());
        let response = self
            .retrying(|| async {
                let response = self.client.send_controller(&request, None).await?;
                check_code(
                    response.error_code,
                    || "listing partition reassignments".to_owned(),
                    response.error_message.as_ref(),
                )?;
                Ok(response)
            })
            .await?;
        Ok(ongoing_reassignments(&response))
    }

    /// The configs of a topic or broker (`name` is the broker id for brokers).
    pub async fn describe_configs(
        &self,
        resource_type: ConfigResourceType,
        name: &str,
    ) -> Result<Vec<ConfigEntry>> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type.code())
                .with_resource_name(StrBytes::from_string(name.to_owned()))
                .with_configuration_keys(None),
        ]);
        let response = match resource_type {
            ConfigResourceType::Broker => match name.parse::<i32>() {
                Ok(id) => self.client.send_to(id, &request, None).await?,
                Err(_) => {
                    return Err(ClientError::Config(format!(
                        "a broker is named by its node id, not {name:?}"
                    )))
                }
            },
            ConfigResourceType::Topic => self.client.send_any(&request, None).await?,
        };
        let result = response.results.first().ok_or_else(|| {
            ClientError::broker(format!("describing configs of {name}"), -1, None)
        })?;
        check_code(
            result.error_code,
            || format!("describing configs of {name}"),
            result.error_message.as_ref(),
        )?;
        Ok(result
            .configs
            .iter()
            .map(|c| ConfigEntry {
                name: c.name.as_str().to_owned(),
                value: c.value.as_ref().map(|v| v.as_str().to_owned()),
                source: c.config_source,
                is_default: c.config_source == 5,
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            })
            .collect())
    }

    /// Sets or deletes configs of a topic or broker (IncrementalAlterConfigs).
    pub async fn alter_configs(
        &self,
        resource_type: ConfigResourceType,
        name: &str,
        changes: &[ConfigChange],
    ) -> Result<()> {
        let configs = changes
            .iter()
            .map(|c| match c {
                ConfigChange::Set(k, v) => AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(v.clone()))),
                ConfigChange::Delete(k) => AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(1)
                    .with_value(None),
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type.code())
                .with_resource_name(StrBytes::from_string(name.to_owned()))
                .with_configs(configs),
        ]);
        let response = match resource_type {
            ConfigResourceType::Broker => match name.parse::<i32>() {
                Ok(id) => self.client.send_to(id, &request, None).await?,
                Err(_) => {
                    return Err(ClientError::Config(format!(
                        "a broker is named by its node id, not {name:?}"
                    )))
                }
            },
            ConfigResourceType::Topic => self.client.send_controller(&request, None).await?,
        };
        let r = response
            .responses
            .first()
            .ok_or_else(|| ClientError::broker(format!("altering configs of {name}"), -1, None))?;
        check_code(
            r.error_code,
            || format!("altering configs of {name}"),
            r.error_message.as_ref(),
        )
    }

    /// Offsets of partitions (earliest, latest or by timestamp).
    pub async fn list_offsets(
        &self,
        queries: &[(String, i32, OffsetSpec)],
    ) -> Result<BTreeMap<TopicPartition, Result<ListedOffset>>> {
        list_offsets(&self.client, queries, IsolationLevel::ReadUncommitted).await
    }

    /// Offsets of partitions at an isolation level (Kafka's `ListOffsetsOptions`): with read_committed,
    /// `Latest` is the last stable offset (the end of what a read_committed consumer can read).
    pub async fn list_offsets_with_isolation(
        &self,
        queries: &[(String, i32, OffsetSpec)],
        isolation_level: IsolationLevel,
    ) -> Result<BTreeMap<TopicPartition, Result<ListedOffset>>> {
        list_offsets(&self.client, queries, isolation_level).await
    }

    /// The cluster id, controller and brokers (DescribeCluster if served, else Metadata). With `include_fenced`,
    /// fenced brokers are listed too, marked, when the broker speaks DescribeCluster v2 (Kafka's
    /// `DescribeClusterOptions.includeFencedBrokers`); [`ClusterDescription::fenced_listed`] says whether they were.
    pub async fn describe_cluster(&self, include_fenced: bool) -> Result<ClusterDescription> {
        let conn = self.client.any_connection().await?;
        if let Ok(version) = conn.version_for::<DescribeClusterRequest>(None) {
            // IsFenced cannot be asked for below v2; Kafka's client fails there, ours says it could not.
            let fenced_listed = include_fenced && version >= 2;
            let request =
                DescribeClusterRequest::default().with_include_fenced_brokers(fenced_listed);
            let response = conn.send(&request, None).await?;
            check_code(
                response.error_code,
                || "describing the cluster".to_owned(),
                response.error_message.as_ref(),
            )?;
            let mut brokers: Vec<ClusterBroker> = response
                .brokers
                .iter()
                .map(|b| ClusterBroker {
                    info: BrokerInfo {
                        node_id: b.broker_id.0,
                        host: b.host.as_str().to_owned(),
                        port: b.port,
                        rack: b.rack.as_ref().map(|r| r.as_str().to_owned()),
                    },
                    fenced: b.is_fenced,
                })
                .collect();
            brokers.sort_by_key(|b| b.info.node_id);
            return Ok(ClusterDescription {
                cluster_id: Some(response.cluster_id.as_str().to_owned()),
                controller_id: response.controller_id.0,
                brokers,
                fenced_listed,
            });
        }
        self.client.refresh_metadata(Some(&[]), false).await?;
        let m = self.client.metadata();
        Ok(ClusterDescription {
            cluster_id: m.cluster_id.clone(),
            controller_id: m.controller_id,
            brokers: m
                .brokers
                .values()
                .map(|info| ClusterBroker {
                    info: info.clone(),
                    fenced: false,
                })
                .collect(),
            fenced_listed: false,
        })
    }

    /// The metadata quorum: DescribeQuorum for `__cluster_metadata` partition 0, sent to any broker (a broker
    /// forwards it to the active controller, as Kafka's `Admin.describeMetadataQuorum` relies on). Retriable
    /// errors (an election under way: NOT_LEADER_OR_FOLLOWER, NOT_CONTROLLER, REQUEST_TIMED_OUT) are retried
    /// until `request_timeout_ms` has passed.
    pub async fn describe_quorum(&self) -> Result<QuorumInfo> {
        let request = DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str(CLUSTER_METADATA_TOPIC)))
                .with_partitions(vec![
                    describe_quorum_request::PartitionData::default().with_partition_index(0)
                ]),
        ]);
        self.retrying(|| async { quorum_info(&self.client.send_any(&request, None).await?) })
            .await
    }

    /// Every group on every broker (ListGroups).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        self.client.refresh_metadata(Some(&[]), false).await?;
        let brokers: Vec<i32> = self.client.metadata().brokers.keys().copied().collect();
        let mut out = Vec::new();
        for id in brokers {
            let response = self
                .client
                .send_to(id, &ListGroupsRequest::default(), None)
                .await?;
            check_code(response.error_code, || "listing groups".to_owned(), None)?;
            out.extend(response.groups.iter().map(|g| GroupListing {
                group_id: g.group_id.0.as_str().to_owned(),
                protocol_type: g.protocol_type.as_str().to_owned(),
                state: g.group_state.as_str().to_owned(),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// A group's state and members (DescribeGroups).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let coordinator = self.client.group_coordinator(group).await?;
        let request = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
        let response = self.client.send_to(coordinator, &request, None).await?;
        let g = response
            .groups
            .first()
            .ok_or_else(|| ClientError::broker(format!("describing group {group}"), -1, None))?;
        check_code(
            g.error_code,
            || format!("describing group {group}"),
            g.error_message.as_ref(),
        )?;
        Ok(GroupDescription {
            group_id: g.group_id.0.as_str().to_owned(),
            state: g.group_state.as_str().to_owned(),
            protocol_type: g.protocol_type.as_str().to_owned(),
            protocol: g.protocol_data.as_str().to_owned(),
            members: g
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.as_str().to_owned(),
                        m.client_id.as_str().to_owned(),
                        m.client_host.as_str().to_owned(),
                    )
                })
                .collect(),
            assignments: if g.protocol_type.as_str() == "consumer" {
                g.members
                    .iter()
                    .filter_map(|m| {
                        let assigned =
                            crate::group::decode_assignment(m.member_assignment.clone()).ok()?;
                        Some((m.member_id.as_str().to_owned(), assigned))
                    })
                    .collect()
            } else {
                BTreeMap::new()
            },
        })
    }

    /// Deletes a group (it must have no members).
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let coordinator = self.client.group_coordinator(group).await?;
        let request = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
        let response = self.client.send_to(coordinator, &request, None).await?;
        let r = response
            .results
            .first()
            .ok_or_else(|| ClientError::broker(format!("deleting group {group}"), -1, None))?;
        check_code(r.error_code, || format!("deleting group {group}"), None)
    }

    /// A group's committed offsets (all partitions it has committed).
    pub async fn group_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        Ok(fetch_committed(&self.client, group, None, false)
            .await?
            .into_iter()
            .collect())
    }

    /// Overwrites a group's committed offsets (the group must have no active members).
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<()> {
        commit_offsets(&self.client, group, -1, "", offsets).await
    }
}

/// An AlterPartitionReassignments request: the partitions grouped by topic, topics in the order they first occur;
/// `None` replicas (a cancel) go as null.
fn reassignment_request(
    reassignments: &[(TopicPartition, Option<Vec<i32>>)],
    timeout_ms: i32,
) -> AlterPartitionReassignmentsRequest {
    let mut topics: Vec<alter_partition_reassignments_request::ReassignableTopic> = Vec::new();
    for ((topic, partition), replicas) in reassignments {
        let p = alter_partition_reassignments_request::ReassignablePartition::default()
            .with_partition_index(*partition)
            .with_replicas(
                replicas
                    .as_ref()
                    .map(|r| r.iter().copied().map(BrokerId).collect()),
            );
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(topics)
}

/// A ListPartitionReassignments request: every reassignment (null topics) or those of the given partitions,
/// grouped by topic.
fn list_reassignments_request(
    filter: Option<&[TopicPartition]>,
    timeout_ms: i32,
) -> ListPartitionReassignmentsRequest {
    let topics = filter.map(|partitions| {
        let mut topics: Vec<list_partition_reassignments_request::ListPartitionReassignmentsTopics> =
            Vec::new();
        for (topic, partition) in partitions {
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partition_indexes.push(*partition),
                None => topics.push(
                    list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partition_indexes(vec![*partition]),
                ),
            }
        }
        topics
    });
    ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(topics)
}

/// One result per asked partition of an AlterPartitionReassignments answer, in the order asked; a partition the
/// answer does not mention fails (Kafka's admin client fails it with UnknownServerException).
fn reassignment_results(
    asked: &[(TopicPartition, Option<Vec<i32>>)],
    response: &AlterPartitionReassignmentsResponse,
) -> Vec<(TopicPartition, Result<()>)> {
    asked
        .iter()
        .map(|((topic, partition), replicas)| {
            let context = || match replicas {
                Some(_) => format!("reassigning {topic}-{partition}"),
                None => format!("cancelling the reassignment of {topic}-{partition}"),
            };
            let result = match response
                .responses
                .iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == *partition)
            {
                Some(p) => check_code(p.error_code, context, p.error_message.as_ref()),
                None => Err(ClientError::broker(
                    context(),
                    ResponseError::UnknownServerError.code(),
                    Some("the answer does not mention the partition".to_owned()),
                )),
            };
            ((topic.clone(), *partition), result)
        })
        .collect()
}

/// The reassignments of a ListPartitionReassignments answer, sorted by topic and partition.
fn ongoing_reassignments(
    response: &ListPartitionReassignmentsResponse,
) -> Vec<PartitionReassignment> {
    let ids = |replicas: &[BrokerId]| replicas.iter().map(|b| b.0).collect::<Vec<i32>>();
    let mut out: Vec<PartitionReassignment> = response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| PartitionReassignment {
                topic: t.name.0.as_str().to_owned(),
                partition: p.partition_index,
                replicas: ids(&p.replicas),
                adding_replicas: ids(&p.adding_replicas),
                removing_replicas: ids(&p.removing_replicas),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    out
}

/// The quorum from a DescribeQuorum answer; a top-level or partition error is the error.
fn quorum_info(response: &DescribeQuorumResponse) -> Result<QuorumInfo> {
    let context = || "describing the metadata quorum".to_owned();
    check_code(
        response.error_code,
        context,
        response.error_message.as_ref(),
    )?;
    let partition = response
        .topics
        .iter()
        .filter(|t| t.topic_name.0.as_str() == CLUSTER_METADATA_TOPIC)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == 0)
        .ok_or_else(|| {
            // Kafka's admin client throws UnknownServerException for such an answer.
            ClientError::broker(
                context(),
                ResponseError::UnknownServerError.code(),
                Some("the answer does not describe __cluster_metadata partition 0".to_owned()),
            )
        })?;
    check_code(
        partition.error_code,
        context,
        partition.error_message.as_ref(),
    )?;
    let replica = |r: &describe_quorum_response::ReplicaState| QuorumReplica {
        replica_id: r.replica_id.0,
        directory_id: r.replica_directory_id,
        log_end_offset: r.log_end_offset,
        last_fetch_timestamp_ms: (r.last_fetch_timestamp != -1).then_some(r.last_fetch_timestamp),
        last_caught_up_timestamp_ms: (r.last_caught_up_timestamp != -1)
            .then_some(r.last_caught_up_timestamp),
    };
    Ok(QuorumInfo {
        leader_id: partition.leader_id.0,
        leader_epoch: partition.leader_epoch,
        high_watermark: partition.high_watermark,
        voters: partition.current_voters.iter().map(replica).collect(),
        observers: partition.observers.iter().map(replica).collect(),
        nodes: response
            .nodes
            .iter()
            .map(|n| {
                let endpoints = n
                    .listeners
                    .iter()
                    .map(|l| RaftEndpoint {
                        name: l.name.as_str().to_owned(),
                        host: l.host.as_str().to_owned(),
                        port: l.port,
                    })
                    .collect();
                (n.node_id.0, endpoints)
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(topic: &str) -> TopicName {
        TopicName(StrBytes::from_string(topic.to_owned()))
    }

    /// Both requests group partitions by topic, a cancel goes as null replicas, and each survives encoding and
    /// decoding at every version this client speaks (AlterPartitionReassignments v0 has no
    /// AllowReplicationFactorChange, which must stay at its default, true, to encode there).
    #[test]
    fn reassignment_requests_group_by_topic_and_encode() {
        use bytes::BytesMut;
        use kafka_protocol::protocol::{Decodable, Encodable};

        fn round_trip<R: Encodable + Decodable + PartialEq + std::fmt::Debug>(r: &R, version: i16) {
            let mut buf = BytesMut::new();
            r.encode(&mut buf, version).unwrap();
            assert_eq!(&R::decode(&mut buf.freeze(), version).unwrap(), r);
        }

        let asked = [
            (("b".to_owned(), 1), Some(vec![3, 1])),
            (("a".to_owned(), 0), None),
            (("b".to_owned(), 0), Some(vec![2])),
        ];
        let request = reassignment_request(&asked, 5_000);
        assert_eq!(request.timeout_ms, 5_000);
        type Asked = (i32, Option<Vec<i32>>);
        let grouped: Vec<(&str, Vec<Asked>)> = request
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let replicas = p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
                        (p.partition_index, replicas)
                    })
                    .collect();
                (t.name.0.as_str(), partitions)
            })
            .collect();
        assert_eq!(
            grouped,
            [
                ("b", vec![(1, Some(vec![3, 1])), (0, Some(vec![2]))]),
                ("a", vec![(0, None)])
            ]
        );
        for version in 0..=1 {
            round_trip(&request, version);
        }

        let all = list_reassignments_request(None, 1_000);
        assert!(all.topics.is_none());
        round_trip(&all, 0);
        let some = list_reassignments_request(
            Some(&[
                ("b".to_owned(), 2),
                ("a".to_owned(), 0),
                ("b".to_owned(), 0),
            ]),
            1_000,
        );
        let grouped: Vec<(&str, &[i32])> = some
            .topics
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| (t.name.0.as_str(), t.partition_indexes.as_slice()))
            .collect();
        assert_eq!(grouped, [("b", &[2, 0][..]), ("a", &[0][..])]);
        round_trip(&some, 0);
    }

    /// Results come in the order asked whatever the answer's order; a partition's error names it (and says
    /// cancelling for a cancel); a partition left out of the answer fails alone.
    #[test]
    fn reassignment_results_follow_the_request() {
        use kafka_protocol::messages::alter_partition_reassignments_response::{
            ReassignablePartitionResponse, ReassignableTopicResponse,
        };
        let response = AlterPartitionReassignmentsResponse::default().with_responses(vec![
            ReassignableTopicResponse::default()
                .with_name(name("b"))
                .with_partitions(vec![ReassignablePartitionResponse::default()
                    .with_partition_index(0)
                    .with_error_code(ResponseError::NoReassignmentInProgress.code())
                    .with_error_message(Some(StrBytes::from_static_str("none")))]),
            ReassignableTopicResponse::default()
                .with_name(name("a"))
                .with_partitions(vec![
                    ReassignablePartitionResponse::default().with_partition_index(1),
                    ReassignablePartitionResponse::default()
                        .with_partition_index(0)
                        .with_error_code(ResponseError::InvalidReplicaAssignment.code()),
                ]),
        ]);
        let asked = [
            (("a".to_owned(), 0), Some(vec![1, 2])),
            (("a".to_owned(), 1), Some(vec![2])),
            (("b".to_owned(), 0), None),
            (("c".to_owned(), 0), Some(vec![1])),
        ];
        let results = reassignment_results(&asked, &response);
        let order: Vec<&TopicPartition> = results.iter().map(|(tp, _)| tp).collect();
        assert_eq!(
            order,
            asked.iter().map(|(tp, _)| tp).collect::<Vec<_>>(),
            "the order asked"
        );
        let err = results[0].1.as_ref().unwrap_err();
        assert_eq!(
            err.kafka_error(),
            Some(ResponseError::InvalidReplicaAssignment)
        );
        assert!(err.to_string().starts_with("reassigning a-0: "), "{err}");
        assert!(results[1].1.is_ok());
        let err = results[2].1.as_ref().unwrap_err();
        assert_eq!(
            err.kafka_error(),
            Some(ResponseError::NoReassignmentInProgress)
        );
        assert!(
            err.to_string()
                .starts_with("cancelling the reassignment of b-0: ")
                && err.to_string().ends_with("(none)"),
            "{err}"
        );
        let err = results[3].1.as_ref().unwrap_err();
        assert_eq!(err.kafka_error(), Some(ResponseError::UnknownServerError));
    }

    #[test]
    fn ongoing_reassignments_are_flattened_and_sorted() {
        use kafka_protocol::messages::list_partition_reassignments_response::{
            OngoingPartitionReassignment, OngoingTopicReassignment,
        };
        let partition = |index, replicas: &[i32], adding: &[i32], removing: &[i32]| {
            let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
            OngoingPartitionReassignment::default()
                .with_partition_index(index)
                .with_replicas(ids(replicas))
                .with_adding_replicas(ids(adding))
                .with_removing_replicas(ids(removing))
        };
        let response = ListPartitionReassignmentsResponse::default().with_topics(vec![
            OngoingTopicReassignment::default()
                .with_name(name("z"))
                .with_partitions(vec![partition(0, &[3, 1], &[3], &[1])]),
            OngoingTopicReassignment::default()
                .with_name(name("a"))
                .with_partitions(vec![
                    partition(2, &[1, 2], &[2], &[]),
                    partition(1, &[2, 3, 1], &[], &[1]),
                ]),
        ]);
        let listed = ongoing_reassignments(&response);
        let keys: Vec<(&str, i32)> = listed
            .iter()
            .map(|r| (r.topic.as_str(), r.partition))
            .collect();
        assert_eq!(keys, [("a", 1), ("a", 2), ("z", 0)]);
        assert_eq!(
            listed[2],
            PartitionReassignment {
                topic: "z".to_owned(),
                partition: 0,
                replicas: vec![3, 1],
                adding_replicas: vec![3],
                removing_replicas: vec![1],
            }
        );
        assert!(ongoing_reassignments(&ListPartitionReassignmentsResponse::default()).is_empty());
    }
}
