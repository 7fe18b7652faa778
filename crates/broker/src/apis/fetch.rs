//! Fetch v4-v16: read whole record batches from partition logs, with long polling (`min_bytes`/`max_wait_ms` in
//! the fetch purgatory), response and partition byte limits (KIP-74), incremental fetch sessions (KIP-227) and
//! topic ids (v13+).
//!
//! Flow (Kafka's `KafkaApis.handleFetchRequest` + `ReplicaManager.fetchMessages`):
//! 1. The session cache turns the request into a [`FetchContext`](crate::fetch_session::FetchContext): the partitions
//!    to read.
//! 2. A read pass reads each partition from its fetch offset up to the high watermark (read_uncommitted) or the
//!    last stable offset (read_committed; equal to the high watermark until transactions exist). The response
//!    `max_bytes` (capped at the broker's `fetch.max.bytes`, 55 MiB by default, KIP-541) is shared across
//!    partitions in order; the first partition that has data always gets at least
//!    one whole batch even if larger than the limits (KIP-74), later ones only whole batches that fit.
//! 3. If fewer than `min_bytes` were read and nothing failed, the fetch waits in the purgatory for an append to one
//!    of its partitions or `max_wait_ms`, then reads again.
//! 4. The session cache decides which partitions the response carries (all for a full fetch, changed ones for an
//!    incremental fetch) and its session id.
//!
//! Partition errors as Kafka sends them: UNKNOWN_TOPIC_ID (v13+ unknown id), UNKNOWN_TOPIC_OR_PARTITION,
//! NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH (`current_leader_epoch` fencing, KIP-320),
//! OFFSET_OUT_OF_RANGE, KAFKA_STORAGE_ERROR (NOT_LEADER_OR_FOLLOWER for v4-v5, which predate it); an errored
//! partition carries high watermark, last stable offset and log start offset -1 and empty records.
//!
//! Follower fetches (`replica_id` >= 0, `replica_state` from v15) read up to the log end offset rather than the high
//! watermark; their fetch offset is the follower's log end offset, which the leader records
//! (`Partition::update_follower_fetch`) and which may move the high watermark. A follower whose last fetched epoch
//! ends earlier in this log gets the diverging epoch and no records (KIP-320/KIP-595), at once. A fetcher with no
//! replica of the partition gets UNKNOWN_LEADER_EPOCH when it sent a leader epoch, NOT_LEADER_OR_FOLLOWER otherwise
//! (Kafka's `Partition.followerReplicaOrThrow`). A follower outside the ISR gets no records of a partition whose
//! leader replica is replication-throttled while `leader.replication.throttled.rate` is exceeded
//! ([`crate::replication_quota`]).
//!
//! Copies: on a connection that writes with `sendfile` (plaintext; see `network.rs`), the records of a partition
//! are a segment file range (`Log::read_slices`) registered with the connection, and the encoder makes them a file
//! chunk that goes from the page cache to the socket without passing through user space; reads under
//! [`SENDFILE_MIN_BYTES`] are read into memory (a copy is cheaper than the extra syscall). Elsewhere (TLS, direct
//! calls) they are the `Bytes` the log read returned (a trimmed read is a zero-copy slice), their own chunks in the
//! response, written with `writev`, so record bytes are not copied after the read either way.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchResponse, FetchableTopicResponse, LeaderIdAndEpoch,
    NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::MetadataImage;
use sluice_protocol::response::FileChunk;
use sluice_protocol::ErrorCode;
use sluice_storage::log::FileReadResult;
use sluice_storage::{Log, ReadError};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::{check_leader_epoch, now_ms, preferred_replica, RequestContext};
use crate::broker::Broker;
use crate::fetch_session::{
    ContextPartition, FetchMetadata, FetchPartitionData, FetchPartitionKey, FetchSessionRequest,
    PartitionFetchOutcome, TopicKey, FIRST_TOPIC_ID_VERSION,
};
use crate::purgatory::WakeReason;
use crate::replica_manager::ReplicaError;
use crate::replication_quota::Side;

/// Records shorter than this are read into memory rather than sent with `sendfile`.
const SENDFILE_MIN_BYTES: u64 = 1024;

/// `isolation_level` 1: only records below the last stable offset.
const READ_COMMITTED: i8 = 1;
/// The first Fetch version with `replica_state` instead of `replica_id`.
const FIRST_REPLICA_STATE_VERSION: i16 = 15;
/// The first Fetch version with session id and epoch.
const FIRST_SESSION_VERSION: i16 = 7;
/// The first Fetch version that may carry `KAFKA_STORAGE_ERROR` (older clients get NOT_LEADER_OR_FOLLOWER).
const FIRST_STORAGE_ERROR_VERSION: i16 = 6;
/// The first Fetch version whose errored partitions carry the current leader and its endpoint.
const FIRST_CURRENT_LEADER_VERSION: i16 = 16;
/// Longest wait honoured, whatever the client asks: a fetch never parks for more than this.
const MAX_WAIT_CAP_MS: u64 = 5 * 60 * 1000;
/// Kafka's broker `fetch.max.bytes` default (55 MiB, KIP-541): the most a response's `max_bytes` may ask for.
#[cfg(test)]
const DEFAULT_FETCH_MAX_BYTES: usize = 57_671_680;

/// Handles one Fetch request.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: FetchRequest,
) -> FetchResponse {
    let version = ctx.api_version;
    let replica_id = if version >= FIRST_REPLICA_STATE_VERSION {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let params = FetchParams {
        version,
        is_from_follower: replica_id >= 0,
        replica_id,
        read_committed: request.isolation_level == READ_COMMITTED,
        max_bytes: clamp_max_bytes(request.max_bytes, broker_fetch_max_bytes(broker)),
        min_bytes: usize::try_from(request.min_bytes).unwrap_or(0),
        client_rack: preferred_replica::client_rack(version, replica_id >= 0, &request.rack_id),
    };

    let image = broker.replicas.image();
    let session_request = session_request(version, params.is_from_follower, &request, &image);
    let resolve = |id: Uuid| image.topic_by_id(id).map(|t| t.name.clone());
    let context = broker
        .fetch_sessions
        .lock()
        .new_context(session_request, &resolve, now_ms());

    let max_wait = Duration::from_millis(
        u64::try_from(request.max_wait_ms)
            .unwrap_or(0)
            .min(MAX_WAIT_CAP_MS),
    );
    let deadline = Instant::now() + max_wait;
    let mut pass = read_pass(broker, &params, context.partitions());
    while !pass.satisfied(&params) && !max_wait.is_zero() {
        match broker
            .fetch_purgatory
            .wait(&mut pass.notifiers, deadline)
            .await
        {
            WakeReason::Appended => pass = read_pass(broker, &params, context.partitions()),
            WakeReason::Expired => {
                // Something may have landed as the deadline passed: answer with the freshest data.
                if pass
                    .notifiers
                    .iter()
                    .any(|n| n.has_changed().unwrap_or(true))
                {
                    pass = read_pass(broker, &params, context.partitions());
                }
                break;
            }
            WakeReason::Full => break,
        }
    }

    if params.is_from_follower {
        let throttled_bytes = pass
            .partitions
            .iter()
            .filter(|r| r.throttled)
            .map(|r| r.records_bytes)
            .sum();
        broker.leader_quota.record(throttled_bytes, now_ms());
    }
    let outcomes: Vec<PartitionFetchOutcome> =
        pass.partitions.iter().map(|p| p.outcome()).collect();
    let plan = broker
        .fetch_sessions
        .lock()
        .update_and_generate(&context, &outcomes, now_ms());

    // The image may have moved while waiting; leader hints should be current.
    let image = broker.replicas.image();
    let mut response = FetchResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(plan.error_code)
        .with_session_id(plan.session_id);
    let mut leaders: Vec<i32> = Vec::new();
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let included = context
        .partitions()
        .iter()
        .zip(pass.partitions)
        .zip(plan.include.iter().copied());
    for ((cp, read), include) in included {
        if !include {
            continue;
        }
        let mut data = read.data;
        if version >= FIRST_CURRENT_LEADER_VERSION && needs_leader_hint(data.error_code) {
            if let Some((leader, epoch)) = current_leader(&image, cp) {
                data.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
                if leader >= 0 && !leaders.contains(&leader) {
                    leaders.push(leader);
                }
            }
        }
        push_partition(&mut responses, version, cp, data);
    }
    response.responses = responses;
    if version >= FIRST_CURRENT_LEADER_VERSION {
        response.node_endpoints = leaders
            .into_iter()
            .filter_map(|id| image.brokers.get(&id))
            .map(|b| {
                NodeEndpoint::default()
                    .with_node_id(BrokerId(b.node_id))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_port(b.port)
                    .with_rack(b.rack.clone().map(StrBytes::from_string))
            })
            .collect();
    }
    response
}

/// The request-wide read parameters (Kafka's `FetchParams`).
#[derive(Clone, Debug)]
struct FetchParams {
    version: i16,
    is_from_follower: bool,
    /// The fetching follower's broker id (-1 for consumers).
    replica_id: i32,
    read_committed: bool,
    /// Response-level byte limit (the first partition with data may exceed it by one batch, KIP-74).
    max_bytes: usize,
    min_bytes: usize,
    /// A v11+ consumer's `rack_id` (Kafka's `ClientMetadata`); `None`: only the leader serves it (KIP-392).
    client_rack: Option<String>,
}

/// The broker's `fetch.max.bytes` (validated at start-up; Kafka's default when unset).
fn broker_fetch_max_bytes(broker: &Broker) -> usize {
    broker.config.fetch_max_bytes
}

/// The response byte budget: the request's `max_bytes` (negative = 0), at most the broker's `fetch.max.bytes`,
/// as Kafka bounds it (KIP-541), so that one fetch cannot make the broker buffer gigabytes.
fn clamp_max_bytes(requested: i32, broker_max_bytes: usize) -> usize {
    usize::try_from(requested)
        .unwrap_or(0)
        .min(broker_max_bytes)
}

/// Builds the session cache's view of the request: partition keys by topic id (v13+) or name, names resolved.
fn session_request(
    version: i16,
    is_from_follower: bool,
    request: &FetchRequest,
    image: &MetadataImage,
) -> FetchSessionRequest {
    let uses_topic_ids = version >= FIRST_TOPIC_ID_VERSION;
    let topic_of = |name: &TopicName, id: Uuid| -> (TopicKey, Option<String>) {
        if uses_topic_ids {
            (
                TopicKey::Id(id),
                image.topic_by_id(id).map(|t| t.name.clone()),
            )
        } else {
            let name = name.0.to_string();
            (TopicKey::Name(name.clone()), Some(name))
        }
    };
    let mut partitions = Vec::new();
    for topic in &request.topics {
        let (key, topic_name) = topic_of(&topic.topic, topic.topic_id);
        for p in &topic.partitions {
            partitions.push(ContextPartition {
                key: FetchPartitionKey {
                    topic: key.clone(),
                    partition: p.partition,
                },
                topic_name: topic_name.clone(),
                data: FetchPartitionData {
                    fetch_offset: p.fetch_offset,
                    log_start_offset: p.log_start_offset,
                    partition_max_bytes: p.partition_max_bytes,
                    current_leader_epoch: p.current_leader_epoch,
                    last_fetched_epoch: p.last_fetched_epoch,
                },
            });
        }
    }
    let (metadata, forgotten) = if version >= FIRST_SESSION_VERSION {
        let mut forgotten = Vec::new();
        for topic in &request.forgotten_topics_data {
            let (key, _) = topic_of(&topic.topic, topic.topic_id);
            forgotten.extend(topic.partitions.iter().map(|&partition| FetchPartitionKey {
                topic: key.clone(),
                partition,
            }));
        }
        (
            FetchMetadata {
                session_id: request.session_id,
                epoch: request.session_epoch,
            },
            forgotten,
        )
    } else {
        (FetchMetadata::LEGACY, Vec::new())
    };
    FetchSessionRequest {
        version,
        metadata,
        is_from_follower,
        partitions,
        forgotten,
    }
}

/// How a partition ended up in the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadStage {
    /// Rejected before reading (unknown topic id, topic or partition). Like Kafka's "erroneous" partitions these
    /// do not end a long poll early: a consumer fetching a deleted topic alongside live ones still long-polls.
    Rejected,
    /// The partition was looked up and read (possibly with an error, which ends the long poll).
    Read,
}

/// One partition's result in a read pass.
#[derive(Debug)]
struct PartitionRead {
    stage: ReadStage,
    /// The response partition (partition index, error, offsets, records).
    data: PartitionData,
    records_bytes: usize,
    /// A follower's read of a partition whose leader replica is replication-throttled: its bytes count against
    /// `leader.replication.throttled.rate`.
    throttled: bool,
}

impl PartitionRead {
    fn error(stage: ReadStage, partition: i32, error_code: i16) -> PartitionRead {
        PartitionRead {
            stage,
            data: PartitionData::default()
                .with_partition_index(partition)
                .with_error_code(error_code)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_aborted_transactions(None)
                .with_preferred_read_replica(BrokerId(-1))
                .with_records(Some(Bytes::new())),
            records_bytes: 0,
            throttled: false,
        }
    }

    /// A successful read (no aborted transactions listed yet: see [`PartitionRead::with_aborted`]).
    fn records(
        params: &FetchParams,
        partition: i32,
        offsets: (i64, i64),
        log_start_offset: i64,
        records: Bytes,
    ) -> PartitionRead {
        let (high_watermark, last_stable_offset) = offsets;
        let records_bytes = records.len();
        PartitionRead {
            stage: ReadStage::Read,
            data: PartitionData::default()
                .with_partition_index(partition)
                .with_error_code(0)
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(last_stable_offset)
                .with_log_start_offset(log_start_offset)
                .with_aborted_transactions(params.read_committed.then(Vec::new))
                .with_preferred_read_replica(BrokerId(-1))
                .with_records(Some(records)),
            records_bytes,
            throttled: false,
        }
    }

    /// Lists the aborted transactions of the read range (read_committed fetches, Kafka's
    /// `collectAbortedTransactions`): the consumer drops their records.
    fn with_aborted(mut self, aborted: Vec<sluice_storage::AbortedTxn>) -> PartitionRead {
        if !aborted.is_empty() {
            self.data.aborted_transactions = Some(
                aborted
                    .into_iter()
                    .map(|a| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(a.producer_id))
                            .with_first_offset(a.first_offset)
                    })
                    .collect(),
            );
        }
        self
    }

    /// A follower's fetch that diverges from this leader's log after `end_offset` of `epoch`: no records, the
    /// diverging epoch set, answered at once.
    fn diverging(
        params: &FetchParams,
        partition: i32,
        high_watermark: i64,
        log_start_offset: i64,
        epoch: i32,
        end_offset: i64,
    ) -> PartitionRead {
        // Only followers get a divergence: the last stable offset is not theirs to use.
        let mut read = PartitionRead::records(
            params,
            partition,
            (high_watermark, high_watermark),
            log_start_offset,
            Bytes::new(),
        );
        read.data.diverging_epoch = EpochEndOffset::default()
            .with_epoch(epoch)
            .with_end_offset(end_offset);
        read
    }

    /// True when this partition's answer must go out at once (a divergence or a preferred read replica to report).
    fn urgent(&self) -> bool {
        self.data.diverging_epoch.epoch >= 0 || self.data.preferred_read_replica.0 >= 0
    }

    fn outcome(&self) -> PartitionFetchOutcome {
        PartitionFetchOutcome {
            error_code: self.data.error_code,
            high_watermark: self.data.high_watermark,
            log_start_offset: self.data.log_start_offset,
            records_bytes: self.records_bytes,
            has_preferred_read_replica: self.data.preferred_read_replica.0 >= 0,
        }
    }
}

/// The result of reading every context partition once.
struct ReadPass {
    partitions: Vec<PartitionRead>,
    /// Append notifiers of the partitions read, subscribed before reading them.
    notifiers: Vec<watch::Receiver<i64>>,
    bytes: usize,
    /// Some partition was read (Kafka's non-empty `fetchInfos`).
    any_read: bool,
    /// Some read partition failed (Kafka's `errorReadingData`).
    any_read_error: bool,
}

impl ReadPass {
    /// Kafka's immediate-response rule: nothing to wait for, enough bytes, or an error reading. `min_bytes` above
    /// the response `max_bytes` cannot be met, so reaching `max_bytes` is enough too.
    fn satisfied(&self, params: &FetchParams) -> bool {
        !self.any_read
            || self.any_read_error
            || self.bytes >= params.min_bytes.min(params.max_bytes.max(1))
    }
}

/// Reads every partition once, in order, sharing the response byte budget (Kafka's `ReplicaManager.readFromLog`).
fn read_pass(broker: &Broker, params: &FetchParams, partitions: &[ContextPartition]) -> ReadPass {
    let mut pass = ReadPass {
        partitions: Vec::with_capacity(partitions.len()),
        notifiers: Vec::new(),
        bytes: 0,
        any_read: false,
        any_read_error: false,
    };
    let mut limit_bytes = params.max_bytes;
    // KIP-74: until a partition returned data, the next one may exceed the limits by one batch.
    let mut min_one_batch = true;
    for cp in partitions {
        let read = read_partition(
            broker,
            params,
            cp,
            limit_bytes,
            min_one_batch,
            &mut pass.notifiers,
        );
        if read.stage == ReadStage::Read {
            pass.any_read = true;
            pass.any_read_error |= read.data.error_code != 0 || read.urgent();
        }
        if read.records_bytes > 0 {
            min_one_batch = false;
        }
        limit_bytes = limit_bytes.saturating_sub(read.records_bytes);
        pass.bytes = pass.bytes.saturating_add(read.records_bytes);
        pass.partitions.push(read);
    }
    pass
}

fn read_partition(
    broker: &Broker,
    params: &FetchParams,
    cp: &ContextPartition,
    limit_bytes: usize,
    min_one_batch: bool,
    notifiers: &mut Vec<watch::Receiver<i64>>,
) -> PartitionRead {
    let index = cp.key.partition;
    let Some(topic) = cp.topic_name.as_deref() else {
        return PartitionRead::error(ReadStage::Rejected, index, ErrorCode::UnknownTopicId.code());
    };
    let partition = match preferred_replica::partition_for_fetch(
        broker,
        params.client_rack.as_deref(),
        topic,
        index,
    ) {
        Ok(p) => p,
        Err(e @ ReplicaError::UnknownTopicOrPartition) => {
            return PartitionRead::error(ReadStage::Rejected, index, e.into())
        }
        Err(e) => {
            return PartitionRead::error(
                ReadStage::Read,
                index,
                storage_code(params.version, e.into()),
            )
        }
    };
    if let TopicKey::Id(id) = cp.key.topic {
        // A topic re-created under the same name since the id was resolved.
        if partition.topic_id != id {
            return PartitionRead::error(
                ReadStage::Rejected,
                index,
                ErrorCode::UnknownTopicId.code(),
            );
        }
    }
    if let Err(code) = check_leader_epoch(cp.data.current_leader_epoch, partition.leader_epoch()) {
        return PartitionRead::error(ReadStage::Read, index, code);
    }
    if let Some(replica) = preferred_replica::preferred_read_replica(
        broker,
        &partition,
        params.client_rack.as_deref(),
        cp.data.fetch_offset,
        now_ms(),
    ) {
        // KIP-392: the consumer should fetch from `replica`; no records from here.
        let log = &partition.log;
        let mut read = PartitionRead::records(
            params,
            index,
            (log.high_watermark(), log.last_stable_offset()),
            log.log_start_offset(),
            Bytes::new(),
        );
        read.data.preferred_read_replica = BrokerId(replica);
        return read;
    }
    // Subscribe before reading, so that a high watermark moving (or, for a follower, an append) during this read
    // wakes a parked fetch.
    notifiers.push(partition.subscribe_high_watermark());
    let log = &partition.log;
    if params.is_from_follower && !partition.state().replicas.contains(&params.replica_id) {
        // A fetcher outside the replica set, answered as Kafka's `Partition.followerReplicaOrThrow` does.
        let code = if cp.data.current_leader_epoch >= 0 {
            ErrorCode::UnknownLeaderEpoch.code()
        } else {
            ErrorCode::NotLeaderOrFollower.code()
        };
        return PartitionRead::error(ReadStage::Read, index, code);
    }
    if params.is_from_follower {
        // KIP-320/KIP-595: a follower whose last fetched epoch ends earlier here (or is unknown past it) has records
        // this leader does not: tell it where the logs diverge instead of sending records. Otherwise its fetch offset
        // is its log end offset, which may move the high watermark.
        if let Some((epoch, end_offset)) = partition.follower_fetch(
            broker.config.node_id,
            params.replica_id,
            cp.data.fetch_offset,
            cp.data.last_fetched_epoch,
            cp.data.log_start_offset,
            now_ms(),
        ) {
            return PartitionRead::diverging(
                params,
                index,
                log.high_watermark(),
                log.log_start_offset(),
                epoch,
                end_offset,
            );
        }
    }
    let high_watermark = log.high_watermark();
    let last_stable_offset = log.last_stable_offset();
    let throttled = params.is_from_follower && partition.is_replication_throttled(Side::Leader);
    if throttled
        && !partition.state().isr.contains(&params.replica_id)
        && broker
            .leader_quota
            .is_exceeded(&broker.replicas.image(), now_ms())
    {
        // KIP-73: a throttled follower outside the ISR gets nothing while the leader's rate is exceeded.
        let mut read = PartitionRead::records(
            params,
            index,
            (high_watermark, last_stable_offset),
            log.log_start_offset(),
            Bytes::new(),
        );
        read.throttled = true;
        return read;
    }
    // Followers read up to the log end, read_committed consumers up to the last stable offset.
    let upper_bound = if params.is_from_follower {
        log.log_end_offset()
    } else if params.read_committed {
        last_stable_offset
    } else {
        high_watermark
    };
    let partition_max_bytes = usize::try_from(cp.data.partition_max_bytes).unwrap_or(0);
    let max_bytes = partition_max_bytes.min(limit_bytes);
    if max_bytes == 0 && !min_one_batch {
        // The budget is spent: skip the read (which would return one batch to discard), but still answer
        // OFFSET_OUT_OF_RANGE and the offsets as a read would.
        let log_start_offset = log.log_start_offset();
        if cp.data.fetch_offset < log_start_offset || cp.data.fetch_offset > log.log_end_offset() {
            return PartitionRead::error(
                ReadStage::Read,
                index,
                ErrorCode::OffsetOutOfRange.code(),
            );
        }
        return PartitionRead::records(
            params,
            index,
            (high_watermark, last_stable_offset),
            log_start_offset,
            Bytes::new(),
        );
    }
    let read = if crate::network::file_records_enabled() {
        read_file_records(
            log,
            cp.data.fetch_offset,
            max_bytes,
            upper_bound,
            min_one_batch,
        )
    } else {
        log.read(cp.data.fetch_offset, max_bytes, upper_bound)
            .map(|result| {
                let records = if min_one_batch {
                    result.data
                } else {
                    whole_batches_within(result.data, max_bytes)
                };
                (records, result.log_start_offset)
            })
            .map_err(ReadFailure::from)
    };
    let (records, log_start_offset) = match read {
        Ok(read) => read,
        Err(ReadFailure::Log(ReadError::OffsetOutOfRange { .. })) => {
            return PartitionRead::error(ReadStage::Read, index, ErrorCode::OffsetOutOfRange.code())
        }
        Err(ReadFailure::Log(ReadError::Storage(e))) => {
            tracing::warn!(topic, partition = index, error = %e, "fetch read failed");
            let code = storage_code(params.version, ErrorCode::KafkaStorageError.code());
            return PartitionRead::error(ReadStage::Read, index, code);
        }
        Err(ReadFailure::SmallRead(e)) => {
            tracing::warn!(topic, partition = index, error = %e, "fetch read of a segment range failed");
            let code = storage_code(params.version, ErrorCode::KafkaStorageError.code());
            return PartitionRead::error(ReadStage::Read, index, code);
        }
    };
    let aborted = if params.read_committed && !params.is_from_follower && !records.is_empty() {
        match log.aborted_transactions(cp.data.fetch_offset, upper_bound) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(topic, partition = index, error = %e, "reading the transaction index failed");
                let code = storage_code(params.version, ErrorCode::KafkaStorageError.code());
                return PartitionRead::error(ReadStage::Read, index, code);
            }
        }
    } else {
        Vec::new()
    };
    let mut read = PartitionRead::records(
        params,
        index,
        (high_watermark, last_stable_offset),
        log_start_offset,
        records,
    )
    .with_aborted(aborted);
    read.throttled = throttled;
    read
}

/// Why a partition read failed.
#[derive(Debug)]
enum ReadFailure {
    Log(ReadError),
    /// Reading a small file range into memory failed (a segment truncated meanwhile, an I/O error).
    SmallRead(std::io::Error),
}

impl From<ReadError> for ReadFailure {
    fn from(e: ReadError) -> ReadFailure {
        ReadFailure::Log(e)
    }
}

/// Reads a partition as file ranges ([`Log::read_slices`]) and registers them with the connection for
/// `sendfile`; returns the records to put in the response (a placeholder for a registered range) and the log
/// start offset. Ranges under [`SENDFILE_MIN_BYTES`], or that cannot be registered, are read into memory with one
/// `pread` each. Same batches as `Log::read` followed by [`whole_batches_within`].
fn read_file_records(
    log: &Log,
    offset: i64,
    max_bytes: usize,
    upper_bound: i64,
    min_one_batch: bool,
) -> Result<(Bytes, i64), ReadFailure> {
    let result: FileReadResult = log.read_slices(offset, max_bytes, upper_bound)?;
    let log_start_offset = result.log_start_offset;
    let len_bytes = result.len_bytes();
    // KIP-74's one oversized batch is for the first partition with data only (as `whole_batches_within`): a
    // read over `max_bytes` is that one batch.
    if len_bytes == 0 || (!min_one_batch && len_bytes > max_bytes as u64) {
        return Ok((Bytes::new(), log_start_offset));
    }
    if let [slice] = result.slices.as_slice() {
        if len_bytes >= SENDFILE_MIN_BYTES {
            let chunk = FileChunk {
                file: slice.file.clone(),
                position: slice.position,
                len: slice.len,
            };
            if let Some(placeholder) = crate::network::register_file_records(chunk) {
                return Ok((placeholder, log_start_offset));
            }
        }
    }
    let mut buf = vec![
        0u8;
        usize::try_from(len_bytes)
            .map_err(std::io::Error::other)
            .map_err(ReadFailure::SmallRead)?
    ];
    let mut at = 0usize;
    for slice in &result.slices {
        let len = slice.len as usize;
        std::os::unix::fs::FileExt::read_exact_at(
            &*slice.file,
            &mut buf[at..at + len],
            slice.position,
        )
        .map_err(ReadFailure::SmallRead)?;
        at += len;
    }
    Ok((Bytes::from(buf), log_start_offset))
}

/// KAFKA_STORAGE_ERROR is NOT_LEADER_OR_FOLLOWER for Fetch v4-v5 clients, which do not know it (Kafka's
/// `maybeDownConvertStorageError`).
fn storage_code(version: i16, code: i16) -> i16 {
    if code == ErrorCode::KafkaStorageError.code() && version < FIRST_STORAGE_ERROR_VERSION {
        ErrorCode::NotLeaderOrFollower.code()
    } else {
        code
    }
}

/// The longest prefix of `data` made of whole batches and at most `max_bytes` long (a zero-copy slice).
fn whole_batches_within(data: Bytes, max_bytes: usize) -> Bytes {
    if data.len() <= max_bytes {
        return data;
    }
    let mut end = 0usize;
    while let Some(size) = batch_size_at(&data, end) {
        match end.checked_add(size) {
            Some(next) if next <= max_bytes && next <= data.len() => end = next,
            _ => break,
        }
    }
    data.slice(..end)
}

/// Size of the batch starting at `at`, if its length field is present and sane.
fn batch_size_at(data: &[u8], at: usize) -> Option<usize> {
    sluice_protocol::batch::batch_size(data.get(at..)?)
}

fn needs_leader_hint(error_code: i16) -> bool {
    error_code == ErrorCode::NotLeaderOrFollower.code()
        || error_code == ErrorCode::FencedLeaderEpoch.code()
}

/// The partition's leader and leader epoch from the image, when the topic is known.
fn current_leader(image: &MetadataImage, cp: &ContextPartition) -> Option<(i32, i32)> {
    let topic = image.topic(cp.topic_name.as_deref()?)?;
    let registration = topic.partition(cp.key.partition)?;
    Some((registration.leader, registration.leader_epoch))
}

/// Appends `data` to the response, opening a new topic entry unless the previous partition was of the same topic
/// (Kafka's `FetchResponse.of` grouping).
fn push_partition(
    responses: &mut Vec<FetchableTopicResponse>,
    version: i16,
    cp: &ContextPartition,
    data: PartitionData,
) {
    let (name, id) = match &cp.key.topic {
        TopicKey::Id(id) => (None, *id),
        TopicKey::Name(name) => (Some(name.as_str()), Uuid::nil()),
    };
    let same_topic = responses.last().is_some_and(|last| {
        if version >= FIRST_TOPIC_ID_VERSION {
            last.topic_id == id
        } else {
            name.is_some_and(|n| last.topic.0.as_str() == n)
        }
    });
    if !same_topic {
        let mut topic = FetchableTopicResponse::default();
        if version >= FIRST_TOPIC_ID_VERSION {
            topic.topic_id = id;
        } else {
            topic.topic = TopicName(StrBytes::from_string(name.unwrap_or_default().to_string()));
        }
        responses.push(topic);
    }
    if let Some(last) = responses.last_mut() {
        last.partitions.push(data);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn partition_counts(response: &FetchResponse) -> HashMap<Uuid, usize> {
        response
            .responses
            .iter()
            .map(|t| (t.topic_id, t.partitions.len()))
            .collect()
    }

    /// A batch of `size` bytes (header fields only matter for the length).
    fn batch(size: usize) -> Vec<u8> {
        let mut b = vec![0u8; size];
        let length = i32::try_from(size - 12).expect("size");
        b[8..12].copy_from_slice(&length.to_be_bytes());
        b
    }

    #[test]
    fn whole_batches_are_kept_within_the_limit() {
        let mut data = batch(100);
        data.extend(batch(200));
        data.extend(batch(50));
        let data = Bytes::from(data);
        assert_eq!(whole_batches_within(data.clone(), 1000).len(), 350);
        assert_eq!(whole_batches_within(data.clone(), 350).len(), 350);
        assert_eq!(whole_batches_within(data.clone(), 349).len(), 300);
        assert_eq!(whole_batches_within(data.clone(), 299).len(), 100);
        assert_eq!(whole_batches_within(data.clone(), 99).len(), 0);
        assert_eq!(whole_batches_within(data, 0).len(), 0);
    }

    #[test]
    fn a_garbled_length_never_panics() {
        let mut data = batch(100);
        data.extend([0xff; 12]); // negative length
        assert_eq!(whole_batches_within(Bytes::from(data), 105).len(), 100);
        let mut data = batch(100);
        data.extend([0u8; 5]); // truncated header
        assert_eq!(whole_batches_within(Bytes::from(data), 104).len(), 100);
    }

    #[test]
    fn response_max_bytes_is_bounded_by_the_broker() {
        assert_eq!(
            clamp_max_bytes(i32::MAX, DEFAULT_FETCH_MAX_BYTES),
            DEFAULT_FETCH_MAX_BYTES
        );
        assert_eq!(clamp_max_bytes(1000, DEFAULT_FETCH_MAX_BYTES), 1000);
        assert_eq!(clamp_max_bytes(-1, DEFAULT_FETCH_MAX_BYTES), 0);
    }

    #[test]
    fn storage_errors_are_not_leader_for_old_clients() {
        let storage = ErrorCode::KafkaStorageError.code();
        assert_eq!(
            storage_code(5, storage),
            ErrorCode::NotLeaderOrFollower.code()
        );
        assert_eq!(storage_code(6, storage), storage);
        assert_eq!(storage_code(4, 1), 1);
    }

    #[test]
    fn consecutive_partitions_of_a_topic_share_an_entry() {
        let cp = |topic: &str, partition| ContextPartition {
            key: FetchPartitionKey {
                topic: TopicKey::Name(topic.into()),
                partition,
            },
            topic_name: Some(topic.into()),
            data: FetchPartitionData {
                fetch_offset: 0,
                log_start_offset: -1,
                partition_max_bytes: 1,
                current_leader_epoch: -1,
                last_fetched_epoch: -1,
            },
        };
        let mut responses = Vec::new();
        for (t, p) in [("a", 0), ("a", 1), ("b", 0), ("a", 2)] {
            push_partition(
                &mut responses,
                12,
                &cp(t, p),
                PartitionData::default().with_partition_index(p),
            );
        }
        let shape: Vec<(String, usize)> = responses
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.len()))
            .collect();
        assert_eq!(
            shape,
            vec![("a".into(), 2), ("b".into(), 1), ("a".into(), 1)]
        );

        let by_id = |id: u128, partition| ContextPartition {
            key: FetchPartitionKey {
                topic: TopicKey::Id(Uuid::from_u128(id)),
                partition,
            },
            topic_name: None,
            data: cp("x", 0).data,
        };
        let mut response = FetchResponse::default();
        for (t, p) in [(1, 0), (1, 1), (2, 0)] {
            push_partition(
                &mut response.responses,
                13,
                &by_id(t, p),
                PartitionData::default(),
            );
        }
        let counts = partition_counts(&response);
        assert_eq!(counts.get(&Uuid::from_u128(1)), Some(&2));
        assert_eq!(counts.get(&Uuid::from_u128(2)), Some(&1));
    }
}
