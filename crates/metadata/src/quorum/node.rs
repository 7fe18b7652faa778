//! One member of the controller quorum: raft-rs's `RawNode` over a [`QuorumStore`], plus the state machine it
//! drives (the [`MetadataImage`]). Events in (ticks, messages from peers, proposals), outputs back (messages to
//! send, entries applied); no clock, no sockets, no threads, so the broker's driver and the seeded simulation run
//! the same code.
//!
//! A proposal counts only once the quorum has committed it: [`QuorumNode::propose`] returns the `(index, term)` the
//! entry got, and the caller answers when [`ReadyOutput::applied`] reports that index applied with that term (with
//! another term, a new leader overwrote it: the operation did not happen).
//!
//! Reference: Raft (Ongaro and Ousterhout), sections 5.2-5.4 and 7 (snapshots); raft-rs's `Ready` protocol
//! (messages of a leader may go before its entries are persisted, `persisted_messages` only after).

use std::sync::Arc;

use raft::eraftpb::{Entry, EntryType, Message, Snapshot};
use raft::{Config, RawNode, StateRole};

use crate::image::{MetadataDelta, MetadataImage, ReplayError};
use crate::quorum::store::{QuorumStore, StoreError};
use crate::record::{self, MetadataRecord};

/// Settings of one quorum member.
#[derive(Debug, Clone)]
pub struct QuorumSettings {
    /// This member's id (`node.id`, as u64).
    pub node_id: u64,
    /// Ticks without a leader's heartbeat before an election (the timeout is randomized in
    /// `[election_tick, 2 * election_tick)` unless `fixed_election_timeout`).
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Take a snapshot after this many bytes of entries (`metadata.log.max.record.bytes.between.snapshots`).
    pub snapshot_after_bytes: u64,
    /// Use exactly `election_tick` as the election timeout. raft-rs randomizes it with the thread RNG, which a
    /// seeded simulation cannot reproduce; the simulation sets this and jitters its ticks from its own seed.
    pub fixed_election_timeout: bool,
}

/// The quorum member failed in a way it cannot continue from.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// Persisting failed: the member stops rather than acknowledge what is not durable.
    #[error("quorum storage: {0}")]
    Store(#[from] StoreError),
    /// A committed entry does not decode or does not apply: the log contradicts itself.
    #[error("committed entry {index} does not apply: {reason}")]
    Apply {
        /// The entry's index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// A snapshot's image does not decode.
    #[error("snapshot at {index} does not decode: {reason}")]
    Snapshot {
        /// The snapshot index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// raft-rs refused its configuration or failed internally.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}

/// A proposal was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This member is not the leader (or is handing leadership over); the caller should go to the leader.
    #[error("not the leader")]
    NotLeader,
}

/// What one [`QuorumNode::process_ready`] produced.
#[derive(Debug, Default)]
pub struct ReadyOutput {
    /// Messages to deliver to peers (`to` names the peer).
    pub messages: Vec<Message>,
    /// `(index, term)` of every entry applied in this round, in order.
    pub applied: Vec<(u64, u64)>,
    /// True when the image changed (entries with records applied, or a snapshot installed).
    pub image_changed: bool,
}

/// A quorum member and the metadata image it has applied.
pub struct QuorumNode {
    raw: RawNode<QuorumStore>,
    store: QuorumStore,
    image: Arc<MetadataImage>,
    applied: u64,
    snapshot_after_bytes: u64,
    /// Ticks each follower has spent waiting for a snapshot (see [`QuorumNode::tick`]).
    snapshot_waits: std::collections::HashMap<u64, usize>,
    /// Ticks after which a snapshot that has not been acknowledged is taken as lost.
    snapshot_timeout_ticks: usize,
    /// The leader this member last heard from as a follower, and when (see [`QuorumNode::last_leader_contact`]).
    leader_contact: Option<(u64, std::time::Instant)>,
}

impl std::fmt::Debug for QuorumNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumNode")
            .field("id", &self.raw.raft.id)
            .field("term", &self.raw.raft.term)
            .field("role", &self.raw.raft.state)
            .field("applied", &self.applied)
            .finish()
    }
}

/// A slog drain that forwards raft-rs's log lines to `tracing` (at debug level: elections and their reasons are
/// logged by the driver at info).
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        tracing::debug!(target: "raft", "{}", record.msg());
        Ok(())
    }
}

impl QuorumNode {
    /// A member over `store`. `empty_image` is the image before any entry (it carries the cluster id); when the store
    /// has a snapshot, the image is decoded from it instead. Committed entries after the snapshot are applied by the
    /// first [`QuorumNode::process_ready`].
    pub fn new(
        settings: &QuorumSettings,
        store: QuorumStore,
        empty_image: MetadataImage,
    ) -> Result<QuorumNode, QuorumError> {
        let snapshot = store.snapshot_data();
        let snap_index = snapshot.get_metadata().index;
        let image = if snap_index > 0 {
            decode_snapshot_image(&snapshot)?
        } else {
            empty_image
        };
        let mut config = Config {
            id: settings.node_id,
            election_tick: settings.election_tick,
            heartbeat_tick: settings.heartbeat_tick,
            applied: snap_index,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            // A leader that has not heard from a majority for an election timeout steps down, so a controller cut
            // off from the others stops acting as controller (Kafka's `controller.quorum.fetch.timeout.ms` role).
            check_quorum: true,
            // A rejoining member does not disrupt a working leader with a higher term (Raft thesis, 9.6).
            pre_vote: true,
            ..Default::default()
        };
        if settings.fixed_election_timeout {
            config.min_election_tick = settings.election_tick;
            config.max_election_tick = settings.election_tick + 1;
        }
        config.validate()?;
        let logger = slog::Logger::root(slog::Fuse(TracingDrain), slog::o!());
        let raw = RawNode::new(&config, store.clone(), &logger)?;
        Ok(QuorumNode {
            raw,
            store,
            image: Arc::new(image),
            applied: snap_index,
            snapshot_after_bytes: settings.snapshot_after_bytes,
            snapshot_waits: Default::default(),
            snapshot_timeout_ticks: settings.election_tick * 3,
            leader_contact: None,
        })
    }

    /// Starts an election now (a single voter elects itself at start-up instead of waiting for a timeout).
    pub fn campaign(&mut self) {
        if let Err(e) = self.raw.campaign() {
            tracing::debug!(target: "raft", "campaign refused: {e}");
        }
    }

    /// Advances the logical clock by one tick.
    ///
    /// A leader that sent a follower a snapshot waits for its acknowledgement before sending it anything else
    /// (raft-rs's `Snapshot` progress state); a snapshot message lost on the way would leave the follower behind
    /// forever, so one not acknowledged within three election timeouts is reported as failed and sent again.
    pub fn tick(&mut self) {
        self.raw.tick();
        if !self.is_leader() {
            self.snapshot_waits.clear();
            return;
        }
        let waiting: Vec<u64> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(_, pr)| pr.state == raft::ProgressState::Snapshot)
            .map(|(id, _)| *id)
            .collect();
        self.snapshot_waits.retain(|id, _| waiting.contains(id));
        for id in waiting {
            let ticks = self.snapshot_waits.entry(id).or_insert(0);
            *ticks += 1;
            if *ticks > self.snapshot_timeout_ticks {
                self.snapshot_waits.remove(&id);
                self.raw.report_snapshot(id, raft::SnapshotStatus::Failure);
            }
        }
    }

    /// Feeds a message from a peer. Messages for another member or from an older term are ignored by raft-rs.
    pub fn step(&mut self, message: Message) {
        let from = message.from;
        if let Err(e) = self.raw.step(message) {
            tracing::debug!(target: "raft", "message dropped: {e}");
            return;
        }
        if !self.is_leader() && self.leader_id() == Some(from) {
            self.leader_contact = Some((from, std::time::Instant::now()));
        }
    }

    /// The leader this member last heard from while following it, and when. On a member that just won an
    /// election this is the previous leader and the last sign of life it gave the quorum.
    pub fn last_leader_contact(&self) -> Option<(u64, std::time::Instant)> {
        self.leader_contact
    }

    /// Appends a batch of records to the log as leader; returns the `(index, term)` the entry got. It is not
    /// committed yet: wait for that index in [`ReadyOutput::applied`].
    pub fn propose(&mut self, records: &[MetadataRecord]) -> Result<(u64, u64), ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader);
        }
        self.raw
            .propose(Vec::new(), record::encode_batch(records))
            .map_err(|_| ProposeError::NotLeader)?;
        Ok((self.raw.raft.raft_log.last_index(), self.raw.raft.term))
    }

    /// Persists what raft-rs produced, applies what is committed, and returns the messages to send. Call after
    /// every tick, step and propose.
    pub fn process_ready(&mut self) -> Result<ReadyOutput, QuorumError> {
        let mut out = ReadyOutput::default();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut ready = self.raw.ready();
        out.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let image = decode_snapshot_image(&snapshot)?;
            let index = snapshot.get_metadata().index;
            self.store.apply_snapshot(snapshot)?;
            self.image = Arc::new(image);
            self.applied = index;
            out.image_changed = true;
        }
        self.apply(ready.take_committed_entries(), &mut out)?;
        self.store.append(ready.entries())?;
        if let Some(hs) = ready.hs() {
            self.store.set_hard_state(hs)?;
        }
        out.messages.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.store.set_commit(commit);
        }
        out.messages.extend(light.take_messages());
        self.apply(light.take_committed_entries(), &mut out)?;
        self.raw.advance_apply();
        self.maybe_snapshot()?;
        Ok(out)
    }

    fn apply(&mut self, entries: Vec<Entry>, out: &mut ReadyOutput) -> Result<(), QuorumError> {
        if let Some(image) =
            apply_entries(&self.image, &mut self.applied, &entries, |index, term| {
                out.applied.push((index, term))
            })?
        {
            self.image = Arc::new(image);
            out.image_changed = true;
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), QuorumError> {
        if self.snapshot_after_bytes == 0
            || self.store.bytes_since_snapshot() < self.snapshot_after_bytes
        {
            return Ok(());
        }
        // Only an applied (hence committed and durable) index can be snapshotted.
        let index = self.applied.min(self.store.commit_index());
        if index > self.store.snapshot_data().get_metadata().index {
            self.store.create_snapshot(index, self.image.encode())?;
            tracing::info!(index, "metadata snapshot written");
        }
        Ok(())
    }

    /// Takes a snapshot of the applied image now (tests; the driver relies on the byte threshold).
    pub fn snapshot_now(&mut self) -> Result<(), QuorumError> {
        let index = self.applied.min(self.store.commit_index());
        self.store.create_snapshot(index, self.image.encode())?;
        Ok(())
    }

    /// The image as of the last applied entry.
    pub fn image(&self) -> &Arc<MetadataImage> {
        &self.image
    }

    /// The index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// True when this member is the leader (the active controller).
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this member knows of, if any.
    pub fn leader_id(&self) -> Option<u64> {
        let id = self.raw.raft.leader_id;
        (id != raft::INVALID_ID).then_some(id)
    }

    /// The current term (Kafka's leader epoch of the metadata log).
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The commit index (the metadata log's high watermark).
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// True once this leader has applied every entry up to its term's first entry: only then does its image reflect
    /// everything earlier leaders committed, so only then may it act on the image (fence brokers, elect leaders).
    pub fn leader_caught_up(&self) -> bool {
        self.is_leader() && self.applied >= self.commit_index() && {
            let term = self.raw.raft.term;
            // The leader's no-op entry of this term is committed once commit's term is the current term.
            self.raw.raft.raft_log.term(self.commit_index()).ok() == Some(term)
        }
    }

    /// The last log index and, for a leader, each voter's matched index (DescribeQuorum's log end offsets).
    pub fn progress(&self) -> (u64, Vec<(u64, u64)>) {
        let last = self.raw.raft.raft_log.last_index();
        let mut voters: Vec<(u64, u64)> = if self.is_leader() {
            self.raw
                .raft
                .prs()
                .iter()
                .map(|(id, pr)| (*id, pr.matched))
                .collect()
        } else {
            Vec::new()
        };
        voters.sort_unstable();
        (last, voters)
    }

    /// The store (shared with the readers that serve the committed log to observers).
    pub fn store(&self) -> &QuorumStore {
        &self.store
    }

    /// Tells raft-rs a peer could not be reached (it then probes instead of streaming to it).
    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }
}

/// Applies the committed `entries` after `*applied` to `image`, in order, advancing `*applied` and calling
/// `on_applied(index, term)` for each; returns the new image when some entry carried records. Entries at or below
/// `*applied` are skipped. Voters ([`QuorumNode`]) and observers ([`crate::quorum::observer::Observer`]) apply
/// through this one function, so both reach the same image at the same index.
pub(crate) fn apply_entries(
    image: &MetadataImage,
    applied: &mut u64,
    entries: &[Entry],
    mut on_applied: impl FnMut(u64, u64),
) -> Result<Option<MetadataImage>, QuorumError> {
    let mut delta: Option<MetadataDelta> = None;
    for entry in entries {
        if entry.index <= *applied {
            continue;
        }
        if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
            let records = record::decode_batch(&entry.data).map_err(|e| QuorumError::Apply {
                index: entry.index,
                reason: e.to_string(),
            })?;
            let d = delta.get_or_insert_with(|| MetadataDelta::new(image));
            for r in &records {
                d.replay(entry.index as i64, r)
                    .map_err(|e: ReplayError| QuorumError::Apply {
                        index: entry.index,
                        reason: e.to_string(),
                    })?;
            }
        }
        // Conf changes are never proposed (the voter set is static, `controller.quorum.voters`).
        *applied = entry.index;
        on_applied(entry.index, entry.term);
    }
    Ok(delta.map(MetadataDelta::apply))
}

/// Decodes the image a snapshot carries.
pub fn decode_snapshot_image(snapshot: &Snapshot) -> Result<MetadataImage, QuorumError> {
    MetadataImage::decode(&snapshot.data).map_err(|e| QuorumError::Snapshot {
        index: snapshot.get_metadata().index,
        reason: e.to_string(),
    })
}
