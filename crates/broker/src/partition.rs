//! One hosted partition: its log and its replica state (role, leader, epochs, replicas, ISR, what the leader
//! knows of its followers), held together under one lock and changed only by [`Partition::make_leader`] and
//! [`Partition::make_follower`], which the replica manager calls with this partition's registration when the
//! metadata image changes it (Kafka's `Partition.makeLeader`/`makeFollower`).
//!
//! The high watermark lives here too: the leader moves it to the smallest log end offset over the ISR (its own
//! included) and never back; with the leader alone in the ISR it is the log end offset after every append. Fetches
//! (the purgatory) and acks=all produces wait on [`Partition::subscribe_high_watermark`], not on appends.
//!
//! Lock order: the state lock is taken for reading around a leader append (so leadership cannot change in the
//! middle of one) and for writing by `make_leader`/`make_follower`; the log's own locks nest inside. Never held
//! across an `.await`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use sluice_metadata::PartitionRegistration;
use sluice_storage::{AppendError, AppendInfo, AppendOrigin, Log, ProducerError};
use tokio::sync::watch;
use uuid::Uuid;

use crate::apis::now_ms;
use crate::replication_quota::Side;

/// This broker's role for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It serves produce and fetch, and moves the high watermark.
    Leader,
    /// Another broker leads (or none does); this one holds a replica.
    Follower,
}

/// A partition's replica state, as the metadata image last set it (plus, on a leader, its followers' progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// This broker's role.
    pub role: Role,
    /// The leader's broker id (-1: none).
    pub leader: i32,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// The partition epoch (bumped on every registration change, KIP-497).
    pub partition_epoch: i32,
    /// Every replica, preferred leader first.
    pub replicas: Vec<i32>,
    /// The in-sync replicas.
    pub isr: Vec<i32>,
    /// `min.insync.replicas` in force for the topic.
    pub min_insync_replicas: i32,
    /// On a leader: what it knows of each follower (log end offset -1 until it fetches).
    pub followers: BTreeMap<i32, ReplicaProgress>,
    /// On a leader: an ISR proposed to the controller (AlterPartition) and not yet in the image, with when it was
    /// proposed (ms). Until it is, the high watermark counts the union of both ISRs (KIP-497's "maximal ISR").
    pub pending_isr: Option<(Vec<i32>, i64)>,
}

/// What a leader knows of one follower (Kafka's `Replica` state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaProgress {
    /// Its log end offset, from its last fetch (-1: none since this leader's epoch began).
    pub log_end_offset: i64,
    /// When it last was caught up with the leader (ms).
    pub last_caught_up_ms: i64,
    /// The leader's log end offset at its previous fetch.
    pub last_fetch_leader_leo: i64,
    /// When its previous fetch came (ms).
    pub last_fetch_ms: i64,
    /// Its log start offset, from its last fetch (-1: unknown).
    pub log_start_offset: i64,
}

impl ReplicaProgress {
    fn unknown(now_ms: i64, in_sync: bool) -> ReplicaProgress {
        ReplicaProgress {
            log_end_offset: -1,
            // An in-sync follower starts a new leader's epoch caught up, as in Kafka: it gets a full
            // `replica.lag.time.max.ms` to fetch before it can be taken out of the ISR.
            last_caught_up_ms: if in_sync { now_ms } else { -1 },
            last_fetch_leader_leo: -1,
            last_fetch_ms: -1,
            log_start_offset: -1,
        }
    }
}

/// An ISR change a leader proposes to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    /// The leader epoch it acts on.
    pub leader_epoch: i32,
    /// The partition epoch it acts on.
    pub partition_epoch: i32,
    /// The proposed ISR.
    pub new_isr: Vec<i32>,
}

/// Why a leader append was refused before or by the log.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// This broker does not lead the partition (any more).
    #[error("this broker is not the leader of the partition")]
    NotLeader,
    /// acks=all with fewer in-sync replicas than `min.insync.replicas` (nothing was appended).
    #[error("the in-sync replicas ({isr}) are fewer than min.insync.replicas ({min})")]
    NotEnoughReplicas {
        /// ISR size.
        isr: usize,
        /// `min.insync.replicas`.
        min: i32,
    },
    /// The log refused the batch.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The batch's sequence does not follow the producer's last one (`OUT_OF_ORDER_SEQUENCE_NUMBER`).
    #[error("out of order sequence: {0}")]
    OutOfOrderSequence(String),
    /// The batch's producer epoch is older than the producer's current one (`INVALID_PRODUCER_EPOCH`).
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
}

/// Where a follower stands, for its next fetch from the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerPosition {
    /// The leader to fetch from.
    pub leader: i32,
    /// The leader epoch this broker knows (the fetch's `current_leader_epoch`).
    pub leader_epoch: i32,
    /// This log's end offset: the next offset to fetch.
    pub fetch_offset: i64,
    /// The epoch of the last batch in this log (-1: none), for the leader's divergence check.
    pub last_fetched_epoch: i32,
    /// This log's start offset.
    pub log_start_offset: i64,
}

/// What an acks=all produce learns once its records are (or are not) below the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicated {
    /// The high watermark passed the records, with enough in-sync replicas.
    Done,
    /// The high watermark passed them, but the ISR shrank below `min.insync.replicas` meanwhile
    /// (NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    BelowMinIsr,
    /// This broker stopped leading the partition before the high watermark passed them.
    NotLeader,
    /// The timeout ended first (REQUEST_TIMED_OUT).
    TimedOut,
}

/// One partition this broker hosts.
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub index: i32,
    /// The topic's id.
    pub topic_id: Uuid,
    /// True for internal topics (`__consumer_offsets`, `__transaction_state`), which clients may not produce to.
    pub internal: bool,
    /// The partition log.
    pub log: Arc<Log>,
    /// True when the topic's `cleanup.policy` includes `compact` (every record then needs a key).
    compacted: AtomicBool,
    /// Whether this replica is in the topic's `leader.replication.throttled.replicas` /
    /// `follower.replication.throttled.replicas` ([`crate::replication_quota`]).
    throttled: [AtomicBool; 2],
    state: RwLock<PartitionState>,
    /// The high watermark, published whenever it moves (and when the state changes, so waiters re-check).
    high_watermark: watch::Sender<i64>,
    /// Serializes reading, comparing and setting the high watermark (appends run under a shared state lock).
    hw_update: parking_lot::Mutex<()>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("topic", &self.topic)
            .field("index", &self.index)
            .field("state", &*self.state.read())
            .finish_non_exhaustive()
    }
}

impl Partition {
    /// A partition over `log`, a follower of no leader until `make_leader` or `make_follower` applies its
    /// registration.
    pub(crate) fn new(
        topic: String,
        index: i32,
        topic_id: Uuid,
        internal: bool,
        log: Arc<Log>,
    ) -> Partition {
        let (high_watermark, _) = watch::channel(log.high_watermark());
        Partition {
            topic,
            index,
            topic_id,
            internal,
            log,
            compacted: AtomicBool::new(false),
            throttled: [AtomicBool::new(false), AtomicBool::new(false)],
            state: RwLock::new(PartitionState {
                role: Role::Follower,
                leader: -1,
                leader_epoch: -1,
                partition_epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
                min_insync_replicas: 1,
                followers: BTreeMap::new(),
                pending_isr: None,
            }),
            high_watermark,
            hw_update: parking_lot::Mutex::new(()),
        }
    }

    /// A copy of the replica state.
    pub fn state(&self) -> PartitionState {
        self.state.read().clone()
    }

    /// The current leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        self.state.read().leader_epoch
    }

    /// True when this broker leads the partition.
    pub fn is_leader(&self) -> bool {
        self.state.read().role == Role::Leader
    }

    /// True when the topic's `cleanup.policy` includes `compact`.
    pub fn is_compacted(&self) -> bool {
        self.compacted.load(Ordering::Acquire)
    }

    pub(crate) fn set_compacted(&self, compacted: bool) {
        self.compacted.store(compacted, Ordering::Release);
    }

    /// True when the topic's throttled replicas of `side` name this broker's replica.
    pub fn is_replication_throttled(&self, side: Side) -> bool {
        self.throttled[side as usize].load(Ordering::Acquire)
    }

    pub(crate) fn set_replication_throttled(&self, side: Side, throttled: bool) {
        self.throttled[side as usize].store(throttled, Ordering::Release);
    }

    /// The high watermark: offsets below it are committed (on every ISR member) and visible to consumers.
    pub fn high_watermark(&self) -> i64 {
        self.log.high_watermark()
    }

    /// Receives the high watermark whenever it moves or the replica state changes; a fetch waiting for data and
    /// an acks=all produce waiting for replication await `changed()` on it.
    pub fn subscribe_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// Makes this broker the leader as `registration` says (`node_id` is this broker). Returns false, changing
    /// nothing, for a registration older than the state (a stale image). A new leader epoch forgets what was known
    /// of the followers: they report again.
    pub fn make_leader(
        &self,
        node_id: i32,
        registration: &PartitionRegistration,
        min_insync_replicas: i32,
    ) -> bool {
        self.make_leader_at(node_id, registration, min_insync_replicas, now_ms())
    }

    /// [`Partition::make_leader`] at `now` (ms), the time in-sync followers count as caught up from.
    pub fn make_leader_at(
        &self,
        node_id: i32,
        registration: &PartitionRegistration,
        min_insync_replicas: i32,
        now: i64,
    ) -> bool {
        let mut state = self.state.write();
        if !Self::newer(&state, registration) {
            return false;
        }
        let new_epoch =
            state.role != Role::Leader || state.leader_epoch != registration.leader_epoch;
        let followers = registration
            .replicas
            .iter()
            .filter(|&&r| r != node_id)
            .map(|&r| {
                let known = if new_epoch {
                    None
                } else {
                    state.followers.get(&r).copied()
                };
                (
                    r,
                    known.unwrap_or_else(|| {
                        ReplicaProgress::unknown(now, registration.isr.contains(&r))
                    }),
                )
            })
            .collect();
        // A proposal the image now answers (a new partition epoch) or a new leader epoch settles it.
        let pending_isr = state
            .pending_isr
            .take()
            .filter(|_| !new_epoch && registration.partition_epoch == state.partition_epoch);
        *state = PartitionState {
            role: Role::Leader,
            leader: node_id,
            leader_epoch: registration.leader_epoch,
            partition_epoch: registration.partition_epoch,
            replicas: registration.replicas.clone(),
            isr: registration.isr.clone(),
            min_insync_replicas,
            followers,
            pending_isr,
        };
        self.maybe_increment_high_watermark(node_id, &state);
        drop(state);
        self.notify();
        true
    }

    /// Makes this broker a follower as `registration` says. Returns false, changing nothing, for a registration
    /// older than the state. (Fetching from the leader and truncating to it come with partition replication.)
    pub fn make_follower(
        &self,
        registration: &PartitionRegistration,
        min_insync_replicas: i32,
    ) -> bool {
        let mut state = self.state.write();
        if !Self::newer(&state, registration) {
            return false;
        }
        *state = PartitionState {
            role: Role::Follower,
            leader: registration.leader,
            leader_epoch: registration.leader_epoch,
            partition_epoch: registration.partition_epoch,
            replicas: registration.replicas.clone(),
            isr: registration.isr.clone(),
            min_insync_replicas,
            followers: BTreeMap::new(),
            pending_isr: None,
        };
        drop(state);
        self.notify();
        true
    }

    /// Updates `min.insync.replicas` (a topic config change) without touching the registration.
    pub(crate) fn set_min_insync_replicas(&self, min: i32) {
        self.state.write().min_insync_replicas = min;
    }

    /// True when `registration` is not older than `state` (epochs never move back).
    fn newer(state: &PartitionState, registration: &PartitionRegistration) -> bool {
        if registration.leader_epoch < state.leader_epoch
            || (registration.leader_epoch == state.leader_epoch
                && registration.partition_epoch < state.partition_epoch)
        {
            tracing::debug!(
                state_epochs = ?(state.leader_epoch, state.partition_epoch),
                registration_epochs = ?(registration.leader_epoch, registration.partition_epoch),
                "stale partition registration ignored"
            );
            return false;
        }
        true
    }

    /// Moves the high watermark to the smallest log end offset over the ISR, if that is higher (Kafka's
    /// `maybeIncrementLeaderHW`). The caller holds the state lock.
    fn maybe_increment_high_watermark(&self, node_id: i32, state: &PartitionState) -> bool {
        // KIP-966's strict min ISR (Kafka's `isUnderMinIsr`): below `min.insync.replicas` (at most the replication
        // factor) the high watermark stands still, so the replicas that left the ISR (its ELR) hold every committed
        // record and may lead.
        let effective_min = usize::try_from(state.min_insync_replicas)
            .unwrap_or(1)
            .min(state.replicas.len());
        if state.isr.len() < effective_min {
            return false;
        }
        let _serial = self.hw_update.lock();
        let leo = self.log.log_end_offset();
        let mut hw = leo;
        let pending = state.pending_isr.as_ref().map(|(isr, _)| isr.as_slice());
        for member in state.isr.iter().chain(pending.unwrap_or_default()) {
            if *member == node_id {
                continue;
            }
            let follower = state.followers.get(member).map_or(-1, |f| f.log_end_offset);
            hw = hw.min(follower);
        }
        let current = self.log.high_watermark();
        if hw > current {
            debug_assert!(
                hw <= leo,
                "high watermark {hw} beyond the log end offset {leo}"
            );
            self.log.set_high_watermark(hw);
            self.high_watermark.send_replace(hw);
            return true;
        }
        false
    }

    fn notify(&self) {
        self.high_watermark.send_replace(self.log.high_watermark());
    }

    /// Appends producer batches as leader (see `Log::append_as_leader`: CRC checked, offsets and the leader epoch
    /// written in place) and moves the high watermark. `acks == -1` first checks `min.insync.replicas`
    /// (NOT_ENOUGH_REPLICAS). May fsync when the topic has `flush.messages` set: call it from a blocking context
    /// then (see [`Partition::append_may_block`]).
    pub fn append_as_leader(
        &self,
        node_id: i32,
        batches: &mut [u8],
        acks: i16,
        now_ms: i64,
    ) -> Result<AppendInfo, ProduceError> {
        self.append_as_leader_from(node_id, batches, acks, now_ms, AppendOrigin::Coordinator)
    }

    /// [`Partition::append_as_leader`] for batches from `origin`: a client may not write control batches (see
    /// `Log::append_as_leader_from`).
    fn append_as_leader_from(
        &self,
        node_id: i32,
        batches: &mut [u8],
        acks: i16,
        now_ms: i64,
        origin: AppendOrigin,
    ) -> Result<AppendInfo, ProduceError> {
        let state = self.state.read();
        if state.role != Role::Leader {
            return Err(ProduceError::NotLeader);
        }
        if acks == -1 && (state.isr.len() as i64) < i64::from(state.min_insync_replicas) {
            return Err(ProduceError::NotEnoughReplicas {
                isr: state.isr.len(),
                min: state.min_insync_replicas,
            });
        }
        let info = self
            .log
            .append_as_leader_from(batches, state.leader_epoch, now_ms, origin)?;
        let moved = self.maybe_increment_high_watermark(node_id, &state);
        drop(state);
        if !moved {
            // Wake followers' fetches parked on this partition even when the high watermark did not move (once:
            // a move already woke every waiter).
            self.notify();
        }
        Ok(info)
    }

    /// Appends one producer batch, enforcing idempotence for batches with a producer id (KIP-98): the log's
    /// producer state (`sluice_storage::producer_state`, rebuilt from snapshots and batch headers on open, so it
    /// survives a restart) refuses an older producer epoch or a sequence that does not follow the producer's last
    /// one, and a retry of one of the producer's last 5 batches is answered with the original offsets without
    /// appending again. A producer the partition does not know (new or expired) may start at any sequence, as in
    /// Kafka.
    pub fn append_producer_batch(
        &self,
        node_id: i32,
        batch: &mut [u8],
        acks: i16,
        now_ms: i64,
    ) -> Result<AppendInfo, ProduceError> {
        match self.append_as_leader_from(node_id, batch, acks, now_ms, AppendOrigin::Client) {
            Ok(info) => Ok(info),
            Err(ProduceError::Append(AppendError::DuplicateSequence {
                base_offset,
                last_offset,
                max_timestamp_ms,
                ..
            })) => Ok(AppendInfo {
                base_offset,
                last_offset,
                max_timestamp_ms,
                log_append_time_ms: -1,
                record_count: (last_offset - base_offset + 1).max(0) as u64,
                log_start_offset: self.log.log_start_offset(),
            }),
            Err(ProduceError::Append(AppendError::Producer(
                e @ ProducerError::OutOfOrderSequence { .. },
            ))) => Err(ProduceError::OutOfOrderSequence(e.to_string())),
            Err(ProduceError::Append(AppendError::Producer(
                e @ ProducerError::InvalidProducerEpoch { .. },
            ))) => Err(ProduceError::InvalidProducerEpoch(e.to_string())),
            Err(e) => Err(e),
        }
    }

    /// On a leader: records a follower's fetch at `fetch_offset` (its log end offset: Kafka's
    /// `updateFollowerFetchState`) and moves the high watermark if every ISR member now has more. Ignored on a
    /// follower or for a broker that holds no replica.
    pub fn update_follower_fetch(
        &self,
        node_id: i32,
        follower: i32,
        fetch_offset: i64,
        follower_log_start_offset: i64,
    ) {
        self.update_follower_fetch_at(
            node_id,
            follower,
            fetch_offset,
            follower_log_start_offset,
            now_ms(),
        );
    }

    /// On a leader: a follower's fetch (Fetch from a replica) at `fetch_offset`, the end of its log, whose last
    /// batch has `last_fetched_epoch` (-1: none). When its log diverges from this one (KIP-320/KIP-595: that epoch
    /// ends earlier here, or is unknown past it) returns this log's epoch and end offset to truncate to, recording
    /// nothing; otherwise records the fetch ([`Partition::update_follower_fetch`]) and returns `None`.
    pub fn follower_fetch(
        &self,
        node_id: i32,
        follower: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
        follower_log_start_offset: i64,
        now: i64,
    ) -> Option<(i32, i64)> {
        if last_fetched_epoch >= 0 {
            // Kafka's leader writes its epoch's start into the epoch cache when it becomes leader; this one does at its
            // first append. Until then an epoch above the cache's latest (the follower has records of a leader this
            // one never saw) ends where this log ends, as Kafka's cache would answer.
            let end = self
                .log
                .end_offset_for_epoch(last_fetched_epoch)
                .or_else(|| {
                    let latest = self.log.latest_epoch().unwrap_or(-1);
                    (latest < last_fetched_epoch).then(|| (latest, self.log.log_end_offset()))
                });
            if let Some((epoch, end_offset)) = end {
                if epoch < last_fetched_epoch || end_offset < fetch_offset {
                    return Some((epoch, end_offset));
                }
            }
        }
        self.update_follower_fetch_at(
            node_id,
            follower,
            fetch_offset,
            follower_log_start_offset,
            now,
        );
        None
    }

    fn update_follower_fetch_at(
        &self,
        node_id: i32,
        follower: i32,
        fetch_offset: i64,
        follower_log_start_offset: i64,
        now: i64,
    ) {
        let mut state = self.state.write();
        if state.role != Role::Leader || !state.replicas.contains(&follower) {
            return;
        }
        let leo = self.log.log_end_offset();
        let progress = state
            .followers
            .entry(follower)
            .or_insert_with(|| ReplicaProgress::unknown(now, false));
        // Kafka's `Replica.updateFetchState`: caught up when the fetch reaches the leader's end now, or reaches
        // what the leader's end was at the previous fetch (then it was caught up as of that fetch).
        if fetch_offset >= leo {
            progress.last_caught_up_ms = now;
        } else if fetch_offset >= progress.last_fetch_leader_leo {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.log_end_offset = fetch_offset.min(leo);
        progress.last_fetch_leader_leo = leo;
        progress.last_fetch_ms = now;
        let start_moved = follower_log_start_offset > progress.log_start_offset;
        progress.log_start_offset = follower_log_start_offset;
        self.maybe_increment_high_watermark(node_id, &state);
        drop(state);
        if start_moved {
            // A DeleteRecords may be waiting for the low watermark.
            self.notify();
        }
    }

    /// On a leader: the smallest log start offset over this log and the in-sync followers (Kafka's
    /// `lowWatermarkIfLeader`): DeleteRecords answers once it passed the requested offset. A follower that has not
    /// reported its log start yet counts as 0.
    pub fn low_watermark(&self) -> i64 {
        let state = self.state.read();
        let mut low = self.log.log_start_offset();
        for member in &state.isr {
            if let Some(f) = state.followers.get(member) {
                low = low.min(f.log_start_offset.max(0));
            }
        }
        low
    }

    /// Waits until [`Partition::low_watermark`] reaches `offset` or `timeout` ends; true when it did.
    pub async fn wait_low_watermark(&self, offset: i64, timeout: std::time::Duration) -> bool {
        let reached = self
            .wait_until(timeout, || (self.low_watermark() >= offset).then_some(()))
            .await;
        matches!(reached, Ok(Some(())))
    }

    /// Re-evaluates `check` whenever the high watermark or the replica state changes, until it gives an answer.
    /// `Ok(None)`: the partition went away; `Err(())`: `timeout` ended first.
    async fn wait_until<T>(
        &self,
        timeout: std::time::Duration,
        check: impl Fn() -> Option<T>,
    ) -> Result<Option<T>, ()> {
        let mut changes = self.subscribe_high_watermark();
        let wait = async {
            loop {
                changes.borrow_and_update();
                if let Some(answer) = check() {
                    return Some(answer);
                }
                if changes.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| ())
    }

    /// On a leader with no proposal pending (or one older than `retry_after_ms`): the ISR this leader should
    /// propose (Kafka's `maybeShrinkIsr`/`maybeExpandIsr`), recorded as pending. Members other than the leader not
    /// caught up for `lag_max_ms` leave; replicas outside it, caught up, whose log end offset reached the high
    /// watermark and the start of this leader's epoch join, if `eligible` says their broker may (KIP-841: not
    /// fenced, not in controlled shutdown; the controller would refuse them with INELIGIBLE_REPLICA).
    pub fn propose_isr(
        &self,
        node_id: i32,
        now_ms: i64,
        lag_max_ms: i64,
        retry_after_ms: i64,
        eligible: impl Fn(i32) -> bool,
    ) -> Option<IsrProposal> {
        let mut state = self.state.write();
        if state.role != Role::Leader {
            return None;
        }
        if let Some((_, at)) = &state.pending_isr {
            if now_ms - at < retry_after_ms {
                return None;
            }
        }
        let hw = self.log.high_watermark();
        // Nothing appended in this epoch yet: it starts at the log end.
        let epoch_start = self
            .log
            .epoch_entries()
            .iter()
            .find(|(e, _)| *e == state.leader_epoch)
            .map_or_else(|| self.log.log_end_offset(), |(_, start)| *start);
        let caught_up = |f: &ReplicaProgress| now_ms - f.last_caught_up_ms <= lag_max_ms;
        let mut new_isr: Vec<i32> = state
            .isr
            .iter()
            .copied()
            .filter(|&r| r == node_id || state.followers.get(&r).is_some_and(caught_up))
            .collect();
        for (&r, f) in &state.followers {
            if !new_isr.contains(&r)
                && eligible(r)
                && f.log_end_offset >= hw
                && f.log_end_offset >= epoch_start
                && caught_up(f)
            {
                new_isr.push(r);
            }
        }
        let mut sorted_new = new_isr.clone();
        sorted_new.sort_unstable();
        let mut sorted_old = state.isr.clone();
        sorted_old.sort_unstable();
        if sorted_new == sorted_old {
            state.pending_isr = None;
            return None;
        }
        state.pending_isr = Some((new_isr.clone(), now_ms));
        Some(IsrProposal {
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            new_isr,
        })
    }

    /// The controller refused `proposal` (or could not be asked): it is no longer pending.
    pub fn isr_proposal_failed(&self, proposal: &IsrProposal) {
        let mut state = self.state.write();
        if state
            .pending_isr
            .as_ref()
            .is_some_and(|(isr, _)| *isr == proposal.new_isr)
        {
            state.pending_isr = None;
        }
    }

    /// Where a follower fetches from next: `None` unless this broker follows a known leader.
    pub fn follower_position(&self) -> Option<FollowerPosition> {
        let state = self.state.read();
        if state.role != Role::Follower || state.leader < 0 {
            return None;
        }
        Some(FollowerPosition {
            leader: state.leader,
            leader_epoch: state.leader_epoch,
            fetch_offset: self.log.log_end_offset(),
            last_fetched_epoch: self.log.latest_epoch().unwrap_or(-1),
            log_start_offset: self.log.log_start_offset(),
        })
    }

    /// On a follower of `leader_epoch`: appends the leader's batches as they are (offsets and epochs kept, CRC
    /// checked), takes the leader's high watermark (bounded by this log) and its log start offset (bounded by that
    /// high watermark). Returns false, appending nothing,
    /// when the partition's state moved on meanwhile (a new epoch, or this broker leads it now).
    pub fn append_as_follower(
        &self,
        leader_epoch: i32,
        records: &[u8],
        leader_high_watermark: i64,
        leader_log_start_offset: i64,
    ) -> Result<bool, AppendError> {
        let state = self.state.read();
        if state.role != Role::Follower || state.leader_epoch != leader_epoch {
            return Ok(false);
        }
        if !records.is_empty() {
            // An empty log restarted at the leader's log start may be sent the whole batch that contains that offset,
            // starting below it: take the batch's base as the start (Kafka's `UnexpectedAppendOffsetException`
            // handling in `Partition.appendRecordsToFollowerOrFutureReplica`); the log start follows the leader's
            // below.
            let base = sluice_protocol::batch::BatchHeader::new(records).map(|h| h.base_offset());
            let leo = self.log.log_end_offset();
            if let Ok(base) = base {
                if base < leo && self.log.log_start_offset() == leo {
                    self.log
                        .truncate_fully_and_start_at(base)
                        .map_err(AppendError::Storage)?;
                }
            }
            self.log.append_as_follower(records)?;
        }
        let hw = self
            .log
            .update_high_watermark_as_follower(leader_high_watermark);
        // The leader's log start moved (DeleteRecords, retention): follow it, within what is committed here.
        let start = leader_log_start_offset.min(hw);
        if start > self.log.log_start_offset() {
            if let Err(e) = self.log.delete_records_before(start) {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e,
                    "cannot move the log start to the leader's");
            }
        }
        drop(state);
        self.notify();
        Ok(true)
    }

    /// On a follower of `leader_epoch` told by the leader that its log diverges after `end_offset` of `epoch`
    /// (Fetch's diverging epoch, KIP-320/KIP-595): cuts the records the leader does not have, from the smaller of
    /// the leader's end offset and this log's own end offset for that epoch. Returns the new log end offset, or
    /// `None` when the state moved on meanwhile.
    pub fn truncate_as_follower(
        &self,
        leader_epoch: i32,
        epoch: i32,
        end_offset: i64,
    ) -> Result<Option<i64>, sluice_storage::StorageError> {
        let state = self.state.read();
        if state.role != Role::Follower || state.leader_epoch != leader_epoch {
            return Ok(None);
        }
        let own_end = self
            .log
            .end_offset_for_epoch(epoch)
            .map_or(self.log.log_start_offset(), |(_, end)| end);
        let to = own_end.min(end_offset).max(0);
        tracing::info!(
            topic = %self.topic,
            partition = self.index,
            epoch,
            leader_end_offset = end_offset,
            truncate_to = to,
            "log diverges from the leader's; truncating"
        );
        self.log.truncate_to(to)?;
        drop(state);
        self.notify();
        Ok(Some(self.log.log_end_offset()))
    }

    /// On a follower of `leader_epoch` whose fetch offset is out of the leader's range (Kafka's
    /// `handleOutOfRangeError`): a log ahead of the leader's end is cut back to it; a log that ends before the
    /// leader's start is emptied and restarted there. Returns false when the state moved on meanwhile.
    pub fn reset_as_follower(
        &self,
        leader_epoch: i32,
        leader_log_start_offset: i64,
        leader_log_end_offset: i64,
    ) -> Result<bool, sluice_storage::StorageError> {
        let state = self.state.read();
        if state.role != Role::Follower || state.leader_epoch != leader_epoch {
            return Ok(false);
        }
        let leo = self.log.log_end_offset();
        if leo > leader_log_end_offset {
            tracing::warn!(topic = %self.topic, partition = self.index, leo, leader_log_end_offset,
                "this replica is ahead of its leader; truncating to the leader's end");
            self.log.truncate_to(leader_log_end_offset)?;
        } else if leo < leader_log_start_offset {
            tracing::warn!(topic = %self.topic, partition = self.index, leo, leader_log_start_offset,
                "this replica ends before its leader's log starts; restarting it at the leader's start");
            self.log
                .truncate_fully_and_start_at(leader_log_start_offset)?;
        }
        drop(state);
        self.notify();
        Ok(true)
    }

    /// Waits until the high watermark passes `last_offset` (an acks=all produce, Kafka's `DelayedProduce`), this
    /// broker stops leading, or `timeout` ends.
    pub async fn wait_replicated(
        &self,
        last_offset: i64,
        timeout: std::time::Duration,
    ) -> Replicated {
        match self
            .wait_until(timeout, || self.replicated(last_offset))
            .await
        {
            Ok(Some(outcome)) => outcome,
            Ok(None) => Replicated::NotLeader,
            Err(()) => Replicated::TimedOut,
        }
    }

    /// Where an acks=all produce of records up to `last_offset` stands: `None` while this broker leads and the high
    /// watermark has not passed them.
    pub fn replicated(&self, last_offset: i64) -> Option<Replicated> {
        let state = self.state.read();
        if state.role != Role::Leader {
            return Some(Replicated::NotLeader);
        }
        if self.log.high_watermark() > last_offset {
            return Some(
                if (state.isr.len() as i64) < i64::from(state.min_insync_replicas) {
                    Replicated::BelowMinIsr
                } else {
                    Replicated::Done
                },
            );
        }
        None
    }

    /// The leader epoch of the batch holding `offset`, from the leader-epoch cache (`None` when the cache has
    /// no epoch starting at or before it). A binary search over `Log::end_offset_for_epoch`, which is monotonic
    /// in the requested epoch.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let latest = self.log.latest_epoch()?;
        if latest < 0 {
            return None;
        }
        // Smallest requested epoch whose (floor epoch's) end offset lies beyond `offset`.
        let (mut lo, mut hi) = (0i32, latest);
        let mut found = None;
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            match self.log.end_offset_for_epoch(mid) {
                Some((epoch, end)) if epoch >= 0 && end > offset => {
                    found = Some(epoch);
                    if mid == 0 {
                        break;
                    }
                    hi = mid - 1;
                }
                _ => lo = mid + 1,
            }
        }
        found.or(Some(latest).filter(|_| offset >= self.log.log_start_offset()))
    }

    /// True when an append may fsync (the topic forces flushes by message count), so it must not run on an
    /// async worker thread.
    pub fn append_may_block(&self) -> bool {
        self.log.config().flush_messages.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::batch::build_batch;
    use sluice_storage::{LogConfig, LogManager};
    use std::time::Duration;

    const ME: i32 = 1;

    fn registration(leader: i32, leader_epoch: i32, isr: &[i32]) -> PartitionRegistration {
        PartitionRegistration {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader,
            leader_epoch,
            partition_epoch: leader_epoch,
            ..Default::default()
        }
    }

    fn partition(dir: &std::path::Path) -> (LogManager, Partition) {
        let logs = LogManager::open(vec![dir.to_path_buf()], LogConfig::default()).unwrap();
        let log = logs.get_or_create("t", 0, LogConfig::default()).unwrap();
        let p = Partition::new("t".into(), 0, Uuid::new_v4(), false, log);
        (logs, p)
    }

    fn batch(n: usize) -> Vec<u8> {
        let values: Vec<Vec<u8>> = (0..n).map(|i| format!("v{i}").into_bytes()).collect();
        let records: Vec<_> = values.iter().map(|v| (None, Some(v.as_slice()))).collect();
        build_batch(0, &records, -1, -1, -1)
    }

    #[test]
    fn a_sole_in_sync_leader_commits_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_logs, p) = partition(dir.path());
        assert!(matches!(
            p.append_as_leader(ME, &mut batch(1), 1, 0),
            Err(ProduceError::NotLeader)
        ));
        assert!(p.make_leader(ME, &registration(ME, 0, &[ME]), 1));
        let info = p.append_as_leader(ME, &mut batch(3), -1, 0).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 2));
        assert_eq!(p.high_watermark(), 3);
    }

    #[test]
    fn followers_in_the_isr_hold_the_high_watermark_back() {
        let dir = tempfile::tempdir().unwrap();
        let (_logs, p) = partition(dir.path());
        p.make_leader(ME, &registration(ME, 0, &[1, 2, 3]), 2);
        p.append_as_leader(ME, &mut batch(3), 1, 0).unwrap();
        assert_eq!(p.high_watermark(), 0, "no follower has reported anything");
        assert_eq!(p.state().followers[&2].log_end_offset, -1);
        // The ISR shrinks to the leader (the controller moved the followers out), below min.insync.replicas: the
        // high watermark stands still (KIP-966's strict min ISR: the followers that left hold all that is committed)...
        let shrunk = PartitionRegistration {
            partition_epoch: 1,
            ..registration(ME, 0, &[ME])
        };
        p.make_leader(ME, &shrunk, 2);
        assert_eq!(p.high_watermark(), 0);
        // ... and acks=all is refused, before anything is appended.
        assert!(matches!(
            p.append_as_leader(ME, &mut batch(1), -1, 0),
            Err(ProduceError::NotEnoughReplicas { isr: 1, min: 2 })
        ));
        assert_eq!(p.log.log_end_offset(), 3);
        // With min.insync.replicas 1 the leader alone commits everything.
        let relaxed = PartitionRegistration {
            partition_epoch: 2,
            ..registration(ME, 0, &[ME])
        };
        p.make_leader(ME, &relaxed, 1);
        assert_eq!(p.high_watermark(), 3);
    }

    #[test]
    fn stale_registrations_are_ignored_and_epochs_never_move_back() {
        let dir = tempfile::tempdir().unwrap();
        let (_logs, p) = partition(dir.path());
        assert!(p.make_leader(ME, &registration(ME, 5, &[ME]), 1));
        assert!(!p.make_follower(&registration(2, 4, &[2]), 1));
        assert!(!p.make_leader(ME, &registration(ME, 4, &[ME]), 1));
        assert_eq!((p.leader_epoch(), p.is_leader()), (5, true));
        assert!(p.make_follower(&registration(2, 6, &[2, 3]), 1));
        let state = p.state();
        assert_eq!(
            (state.role, state.leader, state.leader_epoch),
            (Role::Follower, 2, 6)
        );
        assert!(state.followers.is_empty());
    }

    #[tokio::test]
    async fn acks_all_waits_for_the_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let (_logs, p) = partition(dir.path());
        let p = Arc::new(p);
        p.make_leader(ME, &registration(ME, 0, &[1, 2]), 1);
        let info = p.append_as_leader(ME, &mut batch(2), -1, 0).unwrap();
        assert_eq!(
            p.wait_replicated(info.last_offset, Duration::from_millis(50))
                .await,
            Replicated::TimedOut
        );
        // Leadership moves while a produce waits: it learns at once.
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move {
                p.wait_replicated(info.last_offset, Duration::from_secs(10))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        p.make_follower(&registration(2, 1, &[2]), 1);
        assert_eq!(waiter.await.unwrap(), Replicated::NotLeader);
        // A sole in-sync leader is replicated as soon as it appended.
        p.make_leader(ME, &registration(ME, 2, &[ME]), 1);
        let info = p.append_as_leader(ME, &mut batch(1), -1, 0).unwrap();
        assert_eq!(
            p.wait_replicated(info.last_offset, Duration::from_secs(1))
                .await,
            Replicated::Done
        );
    }

    #[test]
    fn laggards_leave_the_isr_and_caught_up_replicas_join_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_logs, p) = partition(dir.path());
        p.make_leader(ME, &registration(ME, 0, &[1, 2]), 1);
        p.append_as_leader(ME, &mut batch(3), 1, 0).unwrap();
        let now = now_ms();
        // Follower 2 fetched to the end (caught up); follower 3 is outside the ISR and behind.
        p.update_follower_fetch(ME, 2, 3, 0);
        p.update_follower_fetch(ME, 3, 1, 0);
        assert_eq!(p.high_watermark(), 3);
        assert_eq!(
            p.propose_isr(ME, now, 1_000, 5_000, |_| true),
            None,
            "nothing to change"
        );
        // 3 reaches the high watermark: it joins; the proposal stays pending (not proposed twice).
        p.update_follower_fetch(ME, 3, 3, 0);
        // Not while its broker is fenced or shutting down (KIP-841).
        assert_eq!(p.propose_isr(ME, now_ms(), 1_000, 5_000, |r| r != 3), None);
        let join = p
            .propose_isr(ME, now_ms(), 1_000, 5_000, |_| true)
            .expect("3 joins");
        assert_eq!(join.new_isr, vec![1, 2, 3]);
        assert_eq!(p.propose_isr(ME, now_ms(), 1_000, 5_000, |_| true), None);
        // While pending, the high watermark waits for 3 as well (the union of both ISRs).
        p.append_as_leader(ME, &mut batch(1), 1, 0).unwrap();
        p.update_follower_fetch(ME, 2, 4, 0);
        assert_eq!(p.high_watermark(), 3);
        p.update_follower_fetch(ME, 3, 4, 0);
        assert_eq!(p.high_watermark(), 4);
        // The controller refused it: recomputed next round. Later nobody fetched for longer than the lag bound.
        p.isr_proposal_failed(&join);
        let shrink = p
            .propose_isr(ME, now_ms() + 10_000, 1_000, 5_000, |_| true)
            .expect("2 left behind");
        assert_eq!(shrink.new_isr, vec![1]);
        // The image answers (a new partition epoch): nothing pending any more.
        let applied = PartitionRegistration {
            partition_epoch: 1,
            ..registration(ME, 0, &[1])
        };
        p.make_leader(ME, &applied, 1);
        assert_eq!(p.state().pending_isr, None);
        assert_eq!(p.state().isr, vec![1]);
    }
}
