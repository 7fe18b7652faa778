//! The Kafka APIs this broker serves: one module per API, and the registry that lists each API key with the
//! version range we advertise and dispatches a decoded request to its handler.
//!
//! Every handler has the same shape:
//! `pub(crate) async fn handle(broker: &Arc<Broker>, ctx: &RequestContext, request: XxxRequest) -> XxxResponse`.
//! ApiVersions is derived from the registry, so an API is advertised exactly when it has an entry here. Adding
//! an API is one `mod` line and one registry line.
//!
//! Before a handler runs, `dispatch` refuses the controller-only APIs on client listeners
//! ([`CONTROLLER_ONLY_APIS`]) and forwards the admin requests only the active controller can answer when this
//! node is not it (`forwarding.rs`, KIP-590).

use std::net::SocketAddr;
use std::sync::Arc;

use sluice_protocol::{ApiKey, RequestKind, ResponseKind};

use crate::broker::Broker;

mod forwarding;

pub(crate) mod add_offsets_to_txn;
pub(crate) mod add_partitions_to_txn;
pub(crate) mod allocate_producer_ids;
pub(crate) mod alter_configs;
pub(crate) mod alter_partition;
pub(crate) mod alter_partition_reassignments;
pub(crate) mod alter_replica_log_dirs;
pub(crate) mod api_versions;
pub(crate) mod broker_heartbeat;
pub(crate) mod broker_registration;
pub(crate) mod create_partitions;
pub(crate) mod create_topics;
pub(crate) mod delete_groups;
pub(crate) mod delete_records;
pub(crate) mod delete_topics;
pub(crate) mod describe_cluster;
pub(crate) mod describe_configs;
pub(crate) mod describe_groups;
pub(crate) mod describe_log_dirs;
pub(crate) mod describe_quorum;
pub(crate) mod describe_topic_partitions;
pub(crate) mod describe_transactions;
pub(crate) mod elect_leaders;
pub(crate) mod end_txn;
pub(crate) mod fetch;
pub(crate) mod find_coordinator;
pub(crate) mod heartbeat;
pub(crate) mod incremental_alter_configs;
pub(crate) mod init_producer_id;
pub(crate) mod join_group;
pub(crate) mod leave_group;
pub(crate) mod list_groups;
pub(crate) mod list_offsets;
pub(crate) mod list_partition_reassignments;
pub(crate) mod list_transactions;
pub(crate) mod metadata;
pub(crate) mod offset_commit;
pub(crate) mod offset_delete;
pub(crate) mod offset_fetch;
pub(crate) mod offset_for_leader_epoch;
pub(crate) mod preferred_replica;
pub(crate) mod produce;
pub(crate) mod sync_group;
pub(crate) mod txn_offset_commit;
pub(crate) mod write_txn_markers;

/// The kind of listener a request arrived on. Kafka serves the broker-to-controller APIs (BrokerRegistration,
/// BrokerHeartbeat) only on the controller listener, and forwards admin requests that reach a broker listener
/// of a node that is not the active controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListenerKind {
    /// A client (broker) listener: `listeners` minus `controller.listener.names`.
    #[default]
    Client,
    /// A listener named in `controller.listener.names`.
    Controller,
}

/// What a handler knows about the request besides its body.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The API key of the request.
    pub api_key: ApiKey,
    /// The request's API version (within our advertised range).
    pub api_version: i16,
    /// The correlation id the response echoes.
    pub correlation_id: i32,
    /// The client id from the request header.
    pub client_id: Option<String>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener the request arrived on.
    pub listener: ListenerKind,
}

impl RequestContext {
    /// A context for a request that arrived on a client listener.
    pub fn new(
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        client_id: Option<String>,
        peer: SocketAddr,
    ) -> RequestContext {
        RequestContext {
            api_key,
            api_version,
            correlation_id,
            client_id,
            peer,
            listener: ListenerKind::Client,
        }
    }

    /// The same context for a request that arrived on `listener`.
    pub fn with_listener(self, listener: ListenerKind) -> RequestContext {
        RequestContext { listener, ..self }
    }
}

/// One API we serve and the versions we advertise for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupportedApi {
    /// The API key.
    pub api_key: ApiKey,
    /// Lowest advertised version.
    pub min_version: i16,
    /// Highest advertised version.
    pub max_version: i16,
}

/// Why a decoded request was not dispatched.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The API is not in the registry.
    #[error("api key {0:?} is not served by this broker")]
    NotServed(ApiKey),
    /// The API is served only on the controller listener (BrokerRegistration, BrokerHeartbeat).
    #[error("api key {0:?} is served only on the controller listener")]
    NotOnThisListener(ApiKey),
}

macro_rules! api_registry {
    ($( $variant:ident => $module:ident, $min:literal ..= $max:literal; )+) => {
        /// Every API this broker serves, with the version range advertised in ApiVersions.
        pub const SUPPORTED_APIS: &[SupportedApi] = &[
            $( SupportedApi { api_key: ApiKey::$variant, min_version: $min, max_version: $max }, )+
        ];

        /// Runs the handler of `request`'s API. The version was checked against [`SUPPORTED_APIS`] by the caller.
        pub(crate) async fn dispatch(
            broker: &Arc<Broker>,
            ctx: &RequestContext,
            request: RequestKind,
        ) -> Result<ResponseKind, DispatchError> {
            if !is_served_on(ctx.api_key, ctx.listener) {
                return Err(DispatchError::NotOnThisListener(ctx.api_key));
            }
            let request = match forwarding::forward_if_needed(broker, ctx, request).await {
                Ok(response) => return Ok(response),
                Err(request) => request,
            };
            match request {
                $( RequestKind::$variant(r) => Ok(ResponseKind::$variant($module::handle(broker, ctx, r).await)), )+
                _ => Err(DispatchError::NotServed(ctx.api_key)),
            }
        }
    };
}

// The registry: `RequestKind variant => handler module, advertised versions;`.
api_registry! {
    Produce => produce, 3..=11;
    Fetch => fetch, 4..=16;
    ListOffsets => list_offsets, 1..=8;
    Metadata => metadata, 0..=12;
    ApiVersions => api_versions, 0..=4;
    DeleteRecords => delete_records, 0..=2;
    OffsetForLeaderEpoch => offset_for_leader_epoch, 2..=4;
    InitProducerId => init_producer_id, 0..=4;
    CreateTopics => create_topics, 2..=7;
    DeleteTopics => delete_topics, 1..=6;
    CreatePartitions => create_partitions, 0..=3;
    DescribeConfigs => describe_configs, 1..=4;
    AlterConfigs => alter_configs, 0..=2;
    IncrementalAlterConfigs => incremental_alter_configs, 0..=1;
    DescribeCluster => describe_cluster, 0..=2;
    FindCoordinator => find_coordinator, 0..=4;
    JoinGroup => join_group, 0..=9;
    SyncGroup => sync_group, 0..=5;
    Heartbeat => heartbeat, 0..=4;
    LeaveGroup => leave_group, 0..=5;
    OffsetCommit => offset_commit, 2..=9;
    OffsetFetch => offset_fetch, 1..=9;
    TxnOffsetCommit => txn_offset_commit, 0..=4;
    ListGroups => list_groups, 0..=5;
    DescribeGroups => describe_groups, 0..=5;
    DeleteGroups => delete_groups, 0..=2;
    OffsetDelete => offset_delete, 0..=0;
    DescribeQuorum => describe_quorum, 0..=2;
    ElectLeaders => elect_leaders, 0..=2;
    AlterPartitionReassignments => alter_partition_reassignments, 0..=1;
    ListPartitionReassignments => list_partition_reassignments, 0..=0;
    AlterReplicaLogDirs => alter_replica_log_dirs, 1..=2;
    DescribeLogDirs => describe_log_dirs, 1..=4;
    BrokerRegistration => broker_registration, 0..=4;
    BrokerHeartbeat => broker_heartbeat, 0..=1;
    AllocateProducerIds => allocate_producer_ids, 0..=0;
    AlterPartition => alter_partition, 2..=3;
    DescribeTopicPartitions => describe_topic_partitions, 0..=0;
    AddPartitionsToTxn => add_partitions_to_txn, 0..=4;
    AddOffsetsToTxn => add_offsets_to_txn, 0..=4;
    EndTxn => end_txn, 0..=4;
    WriteTxnMarkers => write_txn_markers, 1..=1;
    DescribeTransactions => describe_transactions, 0..=0;
    ListTransactions => list_transactions, 0..=1;
}

/// APIs served only on the controller listener (Kafka's `"listeners": ["controller"]` in their message specs):
/// hidden from ApiVersions and refused on client listeners.
pub const CONTROLLER_ONLY_APIS: &[ApiKey] = &[
    ApiKey::BrokerRegistration,
    ApiKey::BrokerHeartbeat,
    ApiKey::AllocateProducerIds,
    ApiKey::AlterPartition,
];

/// True when `api_key` may be used on a listener of kind `listener`.
pub fn is_served_on(api_key: ApiKey, listener: ListenerKind) -> bool {
    listener == ListenerKind::Controller || !CONTROLLER_ONLY_APIS.contains(&api_key)
}

/// The advertised range of `api_key` on a listener of kind `listener`, if it is served there. The network layer
/// checks a request's version with this.
pub fn supported_versions_on(api_key: ApiKey, listener: ListenerKind) -> Option<(i16, i16)> {
    if is_served_on(api_key, listener) {
        supported_versions(api_key)
    } else {
        None
    }
}

/// The advertised range of `api_key`, if we serve it.
pub fn supported_versions(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|a| a.api_key == api_key)
        .map(|a| (a.min_version, a.max_version))
}

/// Milliseconds since the Unix epoch (the clock Kafka timestamps use).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The Kafka error code of a partition the replica manager cannot serve here.
impl From<crate::replica_manager::ReplicaError> for i16 {
    fn from(e: crate::replica_manager::ReplicaError) -> i16 {
        use crate::replica_manager::ReplicaError;
        use sluice_protocol::ErrorCode;
        match e {
            ReplicaError::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition.code(),
            ReplicaError::NotLeader => ErrorCode::NotLeaderOrFollower.code(),
            ReplicaError::Storage => ErrorCode::KafkaStorageError.code(),
        }
    }
}

/// Checks a request's `current_leader_epoch` against the partition's (KIP-320): -1 skips the check; an older
/// epoch is FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH.
pub(crate) fn check_leader_epoch(
    current_leader_epoch: i32,
    partition_epoch: i32,
) -> Result<(), i16> {
    use sluice_protocol::ErrorCode;
    if current_leader_epoch < 0 || current_leader_epoch == partition_epoch {
        Ok(())
    } else if current_leader_epoch < partition_epoch {
        Err(ErrorCode::FencedLeaderEpoch.code())
    } else {
        Err(ErrorCode::UnknownLeaderEpoch.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_no_duplicates_and_valid_ranges() {
        for (i, a) in SUPPORTED_APIS.iter().enumerate() {
            assert!(a.min_version <= a.max_version, "{:?}", a.api_key);
            let decodable = a.api_key.valid_versions();
            assert!(
                decodable.min <= a.min_version && a.max_version <= decodable.max,
                "{:?} advertises versions kafka-protocol cannot decode",
                a.api_key
            );
            assert!(
                SUPPORTED_APIS[i + 1..]
                    .iter()
                    .all(|b| b.api_key != a.api_key),
                "{:?} twice",
                a.api_key
            );
        }
    }

    #[test]
    fn leader_epoch_fencing() {
        assert_eq!(check_leader_epoch(-1, 5), Ok(()));
        assert_eq!(check_leader_epoch(5, 5), Ok(()));
        assert_eq!(
            check_leader_epoch(4, 5),
            Err(sluice_protocol::ErrorCode::FencedLeaderEpoch.code())
        );
        assert_eq!(
            check_leader_epoch(6, 5),
            Err(sluice_protocol::ErrorCode::UnknownLeaderEpoch.code())
        );
    }
}
