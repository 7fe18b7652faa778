//! Replica fetchers: a follower copies its leaders' logs with the Fetch API, as a Kafka replica does
//! (`ReplicaFetcherThread`): one task per source broker (`num.replica.fetchers` = 1), each fetching every partition
//! this broker follows on that leader in one request (Fetch v12, `replica_id` = this broker, `last_fetched_epoch`
//! for the leader's divergence check), long-polled by the leader.
//!
//! Per partition in an answer: records are appended as they are (`Partition::append_as_follower`: offsets and
//! epochs kept, CRC checked, producer state rebuilt from the batches) and the leader's high watermark taken; a
//! diverging epoch truncates the log first (`Partition::truncate_as_follower`); OFFSET_OUT_OF_RANGE resets the log
//! into the leader's range, asked with ListOffsets (`Partition::reset_as_follower`). A partition whose answer
//! carried an error sits out alone (the others go on): `replica.fetch.backoff.ms`, or 20 ms when the leader does not
//! lead it at this epoch yet (it is a moment behind in the metadata log), until a new leader epoch. The manager and
//! the fetchers wake when a metadata image has been applied to the partitions, and a fetcher abandons a fetch parked
//! on its leader when it starts following more partitions there. After a failover, the new leader's acks=all
//! produces wait for exactly that fetch. The leader learns each follower's log end offset from its fetch offset and moves the high
//! watermark (`apis::fetch`), which releases acks=all produces.
//!
//! A throttled replica (the topic's `follower.replication.throttled.replicas`) outside the ISR is left out of the
//! request while `follower.replication.throttled.rate` is exceeded (KIP-73, [`crate::replication_quota`]).
//!
//! Not built: OffsetForLeaderEpoch for leaders older than Fetch v12, fetch sessions between brokers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_client::Connection;
use sluice_protocol::ErrorCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::apis::now_ms;
use crate::broker::Broker;
use crate::partition::Partition;
use crate::replication_quota::Side;

/// The Fetch version followers send (topic names; last fetched epoch and diverging epochs since v12).
const REPLICA_FETCH_VERSION: i16 = 12;
/// The ListOffsets version a follower resets an out-of-range log with.
const LIST_OFFSETS_VERSION: i16 = 4;
/// ListOffsets' special timestamps.
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;
/// `replica.fetch.wait.max.ms` (Kafka's default).
const FETCH_WAIT_MAX_MS: i32 = 500;
/// `replica.fetch.min.bytes` (Kafka's default).
const FETCH_MIN_BYTES: i32 = 1;
/// `replica.fetch.max.bytes` (Kafka's default, per partition).
const FETCH_MAX_BYTES_PER_PARTITION: i32 = 1024 * 1024;
/// `replica.fetch.response.max.bytes` (Kafka's default).
const FETCH_RESPONSE_MAX_BYTES: i32 = 10 * 1024 * 1024;
/// `replica.fetch.backoff.ms` (Kafka's default): the pause after a failed fetch.
const FETCH_BACKOFF: Duration = Duration::from_millis(1000);
/// How soon a partition is fetched again after its leader answered that it does not lead it at this epoch yet.
const LEADER_BEHIND_RETRY: Duration = Duration::from_millis(20);
/// How often the manager looks for leaders to fetch from besides applied metadata changes.
const MANAGER_TICK: Duration = Duration::from_secs(1);

/// Runs the replica fetchers of `broker` until `shutdown`: a task per leader this broker follows partitions on,
/// started when such a partition appears and ending when none is left.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    // Woken once an image's changes are applied to the partitions (not when the image is published: the roles
    // change only after that), so a new leader's fetcher starts at once.
    let mut applied = broker.replicas.applied_receiver();
    let mut fetchers: HashMap<i32, JoinHandle<()>> = HashMap::new();
    loop {
        fetchers.retain(|_, task| !task.is_finished());
        for leader in leaders_followed(&broker) {
            fetchers.entry(leader).or_insert_with(|| {
                tracing::info!(leader, "starting a replica fetcher");
                tokio::spawn(fetch_from(broker.clone(), leader, shutdown.clone()))
            });
        }
        tokio::select! {
            _ = applied.changed() => {}
            _ = tokio::time::sleep(MANAGER_TICK) => {}
            _ = shutdown.changed() => break,
        }
    }
    for (_, task) in fetchers {
        let _ = task.await;
    }
}

/// The leaders of the partitions this broker follows.
fn leaders_followed(broker: &Broker) -> Vec<i32> {
    let mut leaders: Vec<i32> = broker
        .replicas
        .partitions()
        .iter()
        .filter_map(|p| p.follower_position().map(|pos| pos.leader))
        .filter(|&l| l != broker.config.node_id)
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    leaders
}

/// The partitions this broker follows on `leader`.
fn followed_on(broker: &Broker, leader: i32) -> Vec<Arc<Partition>> {
    broker
        .replicas
        .partitions()
        .into_iter()
        .filter(|p| {
            p.follower_position()
                .is_some_and(|pos| pos.leader == leader)
        })
        .collect()
}

/// One leader's fetcher: fetches every partition this broker follows on `leader` until there is none left.
///
/// A partition whose answer carried an error sits out for a while ([`PartitionBackoff`]) while the others go on.
/// When this broker starts following a partition on `leader` (or a new epoch of one) while a fetch is parked on
/// the leader, that fetch is abandoned on a fresh connection (the leader answers one request per connection at a
/// time), so the partition is fetched at once rather than after the leader's `replica.fetch.wait.max.ms`: after a
/// failover, the new leader's acks=all produces wait for exactly this fetch.
async fn fetch_from(broker: Arc<Broker>, leader: i32, mut shutdown: watch::Receiver<bool>) {
    let node_id = broker.config.node_id;
    let client_id = format!("sluice-replica-fetcher-{node_id}");
    let mut applied = broker.replicas.applied_receiver();
    let mut conn: Option<(String, Connection)> = None;
    let mut delayed: HashMap<(String, i32), (i32, Instant)> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        // From here on, an image applied to the partitions wakes the pause or the parked fetch below.
        applied.mark_unchanged();
        let partitions = followed_on(&broker, leader);
        if partitions.is_empty() {
            tracing::info!(
                leader,
                "no partition left to fetch from this leader; fetcher stops"
            );
            return;
        }
        let image = broker.replicas.image();
        let Some(address) = image
            .brokers
            .get(&leader)
            .filter(|b| !b.fenced)
            .map(|b| format!("{}:{}", b.host, b.port))
        else {
            if !pause(FETCH_BACKOFF, &mut applied, &mut shutdown).await {
                return;
            }
            continue;
        };
        if conn
            .as_ref()
            .is_none_or(|(a, c)| *a != address || !c.is_alive())
        {
            match Connection::connect(&address, &client_id, 5_000, 30_000).await {
                Ok(c) => conn = Some((address.clone(), c)),
                Err(e) => {
                    tracing::debug!(leader, %address, error = %e, "cannot reach the leader");
                    conn = None;
                    if !pause(FETCH_BACKOFF, &mut applied, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
            }
        }
        // Partitions that failed sit out their backoff (a new leader epoch ends it); KIP-73: a throttled replica
        // outside the ISR waits while this follower's rate is exceeded.
        let known: HashMap<(String, i32), i32> = partitions
            .iter()
            .map(|p| ((p.topic.clone(), p.index), p.leader_epoch()))
            .collect();
        let now = now_ms();
        let instant = Instant::now();
        delayed.retain(|_, (_, until)| *until > instant);
        let partitions: Vec<Arc<Partition>> = partitions
            .into_iter()
            .filter(|p| {
                delayed
                    .get(&(p.topic.clone(), p.index))
                    .is_none_or(|(epoch, _)| *epoch != p.leader_epoch())
            })
            .filter(|p| {
                !(p.is_replication_throttled(Side::Follower)
                    && !p.state().isr.contains(&node_id)
                    && broker.follower_quota.is_exceeded(&image, now))
            })
            .collect();
        if partitions.is_empty() {
            let wait = delayed
                .values()
                .map(|(_, until)| until.saturating_duration_since(instant))
                .min()
                .unwrap_or(FETCH_BACKOFF);
            if !pause(wait, &mut applied, &mut shutdown).await {
                return;
            }
            continue;
        }
        let (request, positions) = fetch_request(node_id, &partitions);
        let (_, c) = conn.as_ref().expect("connected above");
        let response = {
            let send = c.send_at(&request, REPLICA_FETCH_VERSION);
            tokio::pin!(send);
            loop {
                tokio::select! {
                    r = &mut send => break Some(r),
                    _ = shutdown.changed() => return,
                    _ = applied.changed() => {
                        if gained_partitions(&broker, leader, &known) {
                            break None;
                        }
                    }
                }
            }
        };
        let Some(response) = response else {
            tracing::debug!(
                leader,
                "following new partitions on this leader; abandoning the parked fetch"
            );
            conn = None;
            continue;
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader, error = %e, "replica fetch failed");
                conn = None;
                if !pause(FETCH_BACKOFF, &mut applied, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        if response.error_code != 0 {
            tracing::debug!(
                leader,
                error_code = response.error_code,
                "replica fetch refused"
            );
            if !pause(FETCH_BACKOFF, &mut applied, &mut shutdown).await {
                return;
            }
            continue;
        }
        let mut out_of_range = Vec::new();
        let mut throttled_bytes = 0;
        for topic in response.responses {
            for data in topic.partitions {
                let key = (topic.topic.0.to_string(), data.partition_index);
                let Some((partition, epoch)) = positions.get(&key) else {
                    continue;
                };
                if partition.is_replication_throttled(Side::Follower) {
                    throttled_bytes += data.records.as_ref().map_or(0, |r| r.len());
                }
                let error_code = data.error_code;
                if error_code == ErrorCode::OffsetOutOfRange.code() {
                    out_of_range.push((key, partition.clone(), *epoch));
                } else if !apply(partition, *epoch, data) {
                    delayed.insert(key, (*epoch, Instant::now() + backoff_for(error_code)));
                }
            }
        }
        broker.follower_quota.record(throttled_bytes, now_ms());
        for (key, partition, epoch) in out_of_range {
            if !reset_out_of_range(c, node_id, &partition, epoch).await {
                delayed.insert(key, (epoch, Instant::now() + FETCH_BACKOFF));
            }
        }
    }
}

/// True when this broker now follows a partition on `leader` that it did not follow when the parked fetch was
/// sent (`known`: partition to leader epoch), or follows one at a new leader epoch.
fn gained_partitions(broker: &Broker, leader: i32, known: &HashMap<(String, i32), i32>) -> bool {
    followed_on(broker, leader).iter().any(|p| {
        known
            .get(&(p.topic.clone(), p.index))
            .is_none_or(|epoch| *epoch != p.leader_epoch())
    })
}

/// How long a partition whose answer carried `error_code` sits out. A leader that does not know this broker's
/// leader epoch yet, or does not lead the partition yet, is most likely a moment behind in the metadata log (the
/// follower applied the election first), so it is asked again soon; after a failover the new leader's acks=all
/// produces wait for this fetch. Anything else waits `replica.fetch.backoff.ms`.
fn backoff_for(error_code: i16) -> Duration {
    if error_code == ErrorCode::UnknownLeaderEpoch.code()
        || error_code == ErrorCode::NotLeaderOrFollower.code()
    {
        LEADER_BEHIND_RETRY
    } else {
        FETCH_BACKOFF
    }
}

/// The Fetch request for `partitions` at their current positions, and each one's leader epoch by (topic,
/// partition).
#[allow(clippy::type_complexity)]
fn fetch_request(
    node_id: i32,
    partitions: &[Arc<Partition>],
) -> (FetchRequest, HashMap<(String, i32), (Arc<Partition>, i32)>) {
    let mut by_topic: HashMap<String, Vec<FetchPartition>> = HashMap::new();
    let mut positions = HashMap::new();
    for p in partitions {
        let Some(pos) = p.follower_position() else {
            continue;
        };
        by_topic.entry(p.topic.clone()).or_default().push(
            FetchPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(pos.leader_epoch)
                .with_fetch_offset(pos.fetch_offset)
                .with_last_fetched_epoch(pos.last_fetched_epoch)
                .with_log_start_offset(pos.log_start_offset)
                .with_partition_max_bytes(FETCH_MAX_BYTES_PER_PARTITION),
        );
        positions.insert((p.topic.clone(), p.index), (p.clone(), pos.leader_epoch));
    }
    let topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(node_id))
        .with_max_wait_ms(FETCH_WAIT_MAX_MS)
        .with_min_bytes(FETCH_MIN_BYTES)
        .with_max_bytes(FETCH_RESPONSE_MAX_BYTES)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    (request, positions)
}

/// Applies one partition's answer; false when it failed (the fetcher backs off).
pub(crate) fn apply(
    partition: &Partition,
    leader_epoch: i32,
    data: kafka_protocol::messages::fetch_response::PartitionData,
) -> bool {
    if data.error_code != 0 {
        // NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH, OFFSET_OUT_OF_RANGE...: the next image settles
        // leadership; retried after the backoff.
        tracing::debug!(
            topic = %partition.topic,
            partition = partition.index,
            error_code = data.error_code,
            "replica fetch of a partition refused"
        );
        return false;
    }
    if data.diverging_epoch.epoch >= 0 {
        return match partition.truncate_as_follower(
            leader_epoch,
            data.diverging_epoch.epoch,
            data.diverging_epoch.end_offset,
        ) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(topic = %partition.topic, partition = partition.index, error = %e,
                    "truncating to the leader's log failed");
                false
            }
        };
    }
    let records = data.records.unwrap_or_default();
    // Whole batches only (a leader may end an answer with a partial batch); the rest comes with the next fetch.
    let mut whole = 0;
    while let Some(size) = sluice_protocol::batch::batch_size(&records[whole..]) {
        if whole + size > records.len() {
            break;
        }
        whole += size;
    }
    // Appended from the response's own buffer: the follower writes the leader's bytes as they are.
    match partition.append_as_follower(
        leader_epoch,
        &records[..whole],
        data.high_watermark,
        data.log_start_offset,
    ) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e,
                "appending the leader's records failed");
            false
        }
    }
}

/// Asks the leader for its log start and end (ListOffsets as a replica) and resets the follower's log into that
/// range. False when it failed.
async fn reset_out_of_range(
    conn: &Connection,
    node_id: i32,
    partition: &Partition,
    leader_epoch: i32,
) -> bool {
    let offsets = |timestamp: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(node_id))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(partition.topic.clone())))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition.index)
                    .with_current_leader_epoch(leader_epoch)
                    .with_timestamp(timestamp)])])
    };
    let mut found = [0i64; 2];
    for (slot, timestamp) in [(0, EARLIEST_TIMESTAMP), (1, LATEST_TIMESTAMP)] {
        let answer = match conn
            .send_at(&offsets(timestamp), LIST_OFFSETS_VERSION)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "ListOffsets to the leader failed");
                return false;
            }
        };
        let Some(p) = answer
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .filter(|p| p.error_code == 0)
        else {
            return false;
        };
        found[slot] = p.offset;
    }
    match partition.reset_as_follower(leader_epoch, found[0], found[1]) {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(topic = %partition.topic, partition = partition.index, error = %e,
                "resetting the replica to the leader's range failed");
            false
        }
    }
}

/// Sleeps for `wait`, or until an image's changes are applied (the leader may have moved) since the fetcher
/// looked at its partitions; false when shutting down.
async fn pause(
    wait: Duration,
    applied: &mut watch::Receiver<i64>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = applied.changed() => true,
        _ = shutdown.changed() => false,
    }
}
