//! The controller driver: one quorum member ([`QuorumNode`], raft-rs) on a dedicated `sluice-controller` thread,
//! running the pure controller logic of `sluice-metadata` when this node is the active controller (the Raft leader).
//!
//! Operations are serialized through a queue to the thread, as Kafka's `QuorumController` event queue. The thread
//! computes `(records, response)` against the committed image, replays the records onto a delta (so a record that
//! would not apply is never proposed), proposes them as one Raft entry, and answers only when that entry is
//! **committed and applied** with the term it was proposed in; another term there means a new leader overwrote it
//! and the caller gets NOT_CONTROLLER. One operation is in flight at a time, so each is computed against an image
//! that includes every earlier one. Only committed images are published on the `watch` channel.
//!
//! The active controller also runs the broker sessions: brokers heartbeat (BrokerHeartbeat), and one silent for
//! `broker.session.timeout.ms` is fenced, its leaderships moved (`sluice_metadata::controller::fence_broker`).
//! Timers and Raft ticks run on the same thread; blocking file I/O (the quorum's fsyncs) never runs on the async
//! workers, and no lock is held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sluice_metadata::controller::{
    self as logic, AlterConfigsOutcome, AlterConfigsResource, ControllerDefaults, ControllerResult,
    Heartbeat, HeartbeatOutcome, IncrementalAlterConfigsResource, ProducerIdBlock,
    RegistrationOutcome,
};
use sluice_metadata::error::code;
use sluice_metadata::log::{self as mlog, LogError};
use sluice_metadata::meta_properties;
use sluice_metadata::quorum::observer::{self, FetchRequest, FetchResponse, Observer};
use sluice_metadata::quorum::{
    CommittedRead, FileDisk, Message, QuorumError, QuorumNode, QuorumSettings, QuorumStore,
    StoreError,
};
use sluice_metadata::{
    BrokerRegistration, CreatePartitions, CreatePartitionsOutcome, CreateTopicOutcome,
    DeleteTopicOutcome, DeleteTopicTarget, MetadataDelta, MetadataImage, MetadataRecord, NewTopic,
    ReplayError, Uuid,
};
use tokio::sync::{oneshot, watch};

/// The Raft id of a node: raft-rs reserves 0 (its "no node"), and Kafka node ids start at 0, so every id is
/// shifted by one inside the quorum.
pub fn raft_id(node_id: i32) -> u64 {
    u64::try_from(node_id).unwrap_or(0) + 1
}

/// The node id of a Raft id (see [`raft_id`]).
pub fn node_of(raft_id: u64) -> i32 {
    i32::try_from(raft_id.saturating_sub(1)).unwrap_or(i32::MAX)
}

/// The Raft tick: election and heartbeat timeouts are whole numbers of ticks.
pub const TICK_MS: u64 = 50;
/// An operation whose entry is neither committed nor overwritten within this is answered with a timeout (a
/// controller cut off from the quorum).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening waits for another instance to release the metadata dir.
const LOCK_WAIT_MS: u64 = 5_000;

/// Settings for [`Controller::open`].
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This node's id.
    pub node_id: i32,
    /// The metadata dir (`metadata.log.dir`).
    pub metadata_dir: PathBuf,
    /// `log.dirs`: checked with the metadata dir to hold one cluster's `meta.properties`.
    pub log_dirs: Vec<PathBuf>,
    /// `num.partitions`, used when a request says -1.
    pub num_partitions: i32,
    /// `default.replication.factor`, used when a request says -1.
    pub default_replication_factor: i16,
    /// `cluster.id` if configured; otherwise the one in `meta.properties`, or a new one.
    pub cluster_id: Option<String>,
    /// `controller.quorum.voters` as (id, host, port); empty for the embedded single node, its own only voter.
    pub voters: Vec<(i32, String, u16)>,
    /// `controller.quorum.election.timeout.ms`.
    pub election_timeout_ms: u64,
    /// `broker.session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// `metadata.log.max.record.bytes.between.snapshots`.
    pub snapshot_after_bytes: u64,
    /// Leader election settings: the unclean-election default and the leader rebalance.
    pub elections: logic::ElectionConfig,
}

impl ControllerConfig {
    /// Settings for the embedded single node (tests): defaults for the quorum keys.
    pub fn single_node(node_id: i32, metadata_dir: PathBuf) -> ControllerConfig {
        ControllerConfig {
            node_id,
            metadata_dir,
            log_dirs: Vec::new(),
            num_partitions: 1,
            default_replication_factor: 1,
            cluster_id: None,
            voters: Vec::new(),
            election_timeout_ms: 1000,
            session_timeout_ms: 9000,
            snapshot_after_bytes: 20 * 1024 * 1024,
            elections: logic::ElectionConfig::default(),
        }
    }
}

/// The controller failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The metadata dir could not be prepared.
    #[error("metadata log: {0}")]
    Log(#[from] LogError),
    /// The quorum's durable state could not be read or written.
    #[error("quorum storage: {0}")]
    Store(#[from] StoreError),
    /// The quorum member failed.
    #[error("quorum: {0}")]
    Quorum(#[from] QuorumError),
    /// The controller's records did not apply to its own image (a bug); nothing was proposed.
    #[error("controller produced records that do not apply: {0}")]
    Replay(#[from] ReplayError),
    /// `meta.properties` is missing, or names another cluster or node (the message names both ids).
    #[error(transparent)]
    MetaProperties(#[from] meta_properties::MetaPropertiesError),
    /// This node is not the active controller (the leader it knows of, if any).
    #[error("this node is not the active controller (leader: {leader:?})")]
    NotController {
        /// The active controller, if known.
        leader: Option<i32>,
    },
    /// The operation's entry was neither committed nor overwritten in time.
    #[error("the metadata change was not committed within {0:?}")]
    Timeout(Duration),
    /// The controller thread could not be started, or it has stopped.
    #[error("the controller is not running: {0}")]
    Stopped(String),
}

impl ControllerError {
    /// The Kafka error code a client gets for this failure.
    pub fn code(&self) -> i16 {
        match self {
            ControllerError::NotController { .. } | ControllerError::Stopped(_) => {
                code::NOT_CONTROLLER
            }
            ControllerError::Timeout(_) => code::REQUEST_TIMED_OUT,
            _ => code::UNKNOWN_SERVER_ERROR,
        }
    }
}

/// Where the controller sends Raft messages to its peers (the network, or nothing for a single voter).
pub trait Transport: Send + Sync {
    /// Queues messages for their peers (`to`); never blocks. A message that cannot be queued is dropped (Raft
    /// retransmits).
    fn send(&self, messages: Vec<Message>);
}

/// A transport for a single voter: it has no peers.
struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, messages: Vec<Message>) {
        debug_assert!(messages.is_empty(), "a single voter sent {messages:?}");
    }
}

/// A computed operation waiting to be proposed: its records and how to answer once the outcome is known.
struct Proposal {
    records: Vec<MetadataRecord>,
    done: Box<dyn FnOnce(Result<u64, ControllerError>) + Send>,
}

/// An operation: computed against the committed image (and the broker sessions) when it is its turn and this node
/// leads.
type Op = Box<dyn FnOnce(&MetadataImage, &mut Sessions) -> Proposal + Send>;

/// Work for the controller thread.
enum Event {
    /// An operation.
    Op(Op),
    /// A Raft message from a peer.
    Raft(Message),
    /// An observer's fetch of the committed log.
    ObserverFetch(FetchRequest, oneshot::Sender<FetchResponse>),
    /// The node is shutting down: answer what waits, take no new operation, stop taking part.
    Shutdown,
}

/// The most an observer fetch answer carries (soft: at least one entry goes).
const OBSERVER_FETCH_MAX_BYTES: u32 = 8 * 1024 * 1024;
/// An observer that has not fetched for this long is no longer reported (Kafka's `OBSERVER_SESSION_TIMEOUT_MS`).
const OBSERVER_SESSION: Duration = Duration::from_secs(300);

/// An observer fetch waiting for the commit index to pass its `from` (long polling).
struct ParkedFetch {
    request: FetchRequest,
    deadline: Instant,
    reply: oneshot::Sender<FetchResponse>,
}

/// What a voter last saw of an observer.
#[derive(Debug, Clone, Copy)]
struct ObserverSeen {
    /// The last index it has applied (`from - 1` of its last fetch).
    applied: u64,
    /// When it fetched (wall clock, ms) and whether it was caught up then.
    fetched_ms: i64,
    caught_up_ms: i64,
    at: Instant,
}

/// The broker sessions the active controller keeps (Kafka's `BrokerHeartbeatManager`): the last heartbeat of
/// each registered broker. Not replicated: a new active controller gives every broker a fresh session, except
/// the previous controller's own broker (see `Driver::leader_duties`).
#[derive(Debug)]
pub struct Sessions {
    last_heartbeat: HashMap<i32, Instant>,
    /// `broker.session.timeout.ms`.
    timeout: Duration,
}

impl Sessions {
    fn touch(&mut self, node_id: i32) {
        self.last_heartbeat.insert(node_id, Instant::now());
    }
    fn alive(&self, node_id: i32) -> bool {
        self.last_heartbeat
            .get(&node_id)
            .is_some_and(|t| t.elapsed() < self.timeout)
    }
}

/// The Raft status DescribeQuorum reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumStatus {
    /// The active controller, or -1.
    pub leader_id: i32,
    /// The Raft term (the metadata log's leader epoch).
    pub leader_epoch: i32,
    /// The commit index (the metadata log's high watermark).
    pub high_watermark: i64,
    /// Each voter's replication state (as the leader sees it; only this node's own on a follower).
    pub voters: Vec<ReplicaStatus>,
    /// Observers (broker-only nodes following the log) that fetched from this node recently.
    pub observers: Vec<ReplicaStatus>,
}

/// One replica of the metadata log in [`QuorumStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The node id.
    pub replica_id: i32,
    /// Its log end offset (matched index as the leader knows it).
    pub log_end_offset: i64,
    /// When the leader last heard from it (-1 unknown).
    pub last_fetch_timestamp_ms: i64,
    /// When it was last caught up (-1 unknown).
    pub last_caught_up_timestamp_ms: i64,
}

/// What the controller thread (or the observer task) shares with handles.
#[derive(Debug, Default)]
struct Shared {
    leader_id: Option<i32>,
    status: QuorumStatus,
    /// An observer has applied the log up to the commit index of a voter's answer at least once.
    caught_up: bool,
}

/// How long a voter may hold an observer's fetch when nothing new is committed (Kafka's
/// `controller.quorum.fetch.timeout.ms` is 2 s; a fetch waits at most half a second, as Kafka's `FETCH_MAX_WAIT_MS`).
const OBSERVER_MAX_WAIT_MS: u32 = 500;

/// The observer's fetch loop: asks the leader it knows (any voter, in turn, when it knows none or the leader does not
/// answer) for the entries after what it applied, applies them and publishes the image.
async fn observe_loop(
    mut observer: Observer,
    node_id: i32,
    voters: Vec<(i32, String, u16)>,
    publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
    shared: Arc<Mutex<Shared>>,
) {
    let mut target = 0usize;
    let mut client: Option<(i32, crate::quorum_net::ObserverClient)> = None;
    let mut backoff = Duration::from_millis(50);
    let mut refused_logged = false;
    loop {
        let leader = shared.lock().leader_id;
        let want = leader
            .and_then(|l| voters.iter().position(|(id, _, _)| *id == l))
            .unwrap_or(target % voters.len().max(1));
        let Some((voter_id, host, port)) = voters.get(want).cloned() else {
            tracing::error!("an observer needs controller.quorum.voters");
            return;
        };
        if client.as_ref().is_none_or(|(id, _)| *id != voter_id) {
            client = match crate::quorum_net::ObserverClient::connect(host.as_str(), port).await {
                Ok(c) => Some((voter_id, c)),
                Err(e) => {
                    tracing::debug!(voter = voter_id, error = %e, "cannot reach controller");
                    shared.lock().leader_id = None;
                    target = want + 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
        }
        let request = FetchRequest {
            cluster_id: observer.image().cluster_id.clone(),
            node_id,
            from: observer.next_index(),
            max_bytes: OBSERVER_FETCH_MAX_BYTES,
            max_wait_ms: OBSERVER_MAX_WAIT_MS,
        };
        let (_, conn) = client.as_mut().expect("connected above");
        let response = match conn.fetch(&request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(voter = voter_id, error = %e, "observer fetch failed");
                client = None;
                shared.lock().leader_id = None;
                target = want + 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        if response.error_code != 0 {
            if observer::is_fatal(response.error_code) && !refused_logged {
                tracing::error!(
                    voter = voter_id,
                    cluster_id = %request.cluster_id,
                    "the controller belongs to another cluster (INCONSISTENT_CLUSTER_ID); this node was formatted \
                     for cluster {}",
                    request.cluster_id
                );
                refused_logged = true;
            }
            client = None;
            shared.lock().leader_id = None;
            target = want + 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let changed = match observer.apply(&response.read) {
            Ok(changed) => changed,
            Err(e) => {
                tracing::error!(voter = voter_id, error = %e, "cannot apply the metadata log; fetching again");
                client = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let leader = (response.leader_id >= 0).then_some(response.leader_id);
        let (leader_moved, first_catch_up) = {
            let mut s = shared.lock();
            let moved = s.leader_id != leader;
            s.leader_id = leader;
            s.status.leader_id = response.leader_id;
            s.status.high_watermark = response.commit as i64;
            // Caught up: everything a leader has committed is applied (without a leader, the commit index
            // answered may be stale, and a brand-new quorum's is 0).
            let first =
                leader.is_some() && observer.applied_index() >= response.commit && !s.caught_up;
            if first {
                s.caught_up = true;
                tracing::info!(
                    applied = observer.applied_index(),
                    "caught up with the metadata log"
                );
            }
            (moved, first)
        };
        // Publish on a first catch-up too: `wait_caught_up` wakes on publications.
        if changed || leader_moved || first_catch_up {
            let mut image = (**observer.image()).clone();
            image.controller_id = response.leader_id;
            publisher.send_replace(Arc::new(image));
        }
        if leader.is_none() {
            // An election runs: ask the next voter after a pause rather than hammering this one.
            target = want + 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The controller handle; cheap to clone, shared by every connection task.
#[derive(Clone)]
pub struct Controller {
    thread: Arc<ControllerThread>,
    publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
    shared: Arc<Mutex<Shared>>,
    defaults: ControllerDefaults,
    elections: logic::ElectionConfig,
    node_id: i32,
    voters: Arc<Vec<(i32, String, u16)>>,
}

/// The queue to the controller thread. Dropping the last handle closes the queue and joins the thread, so the
/// quorum's files (and their lock) are closed once the last `Controller` is gone: a restart in the same process can
/// open them again at once.
struct ControllerThread {
    events: Mutex<Option<std_mpsc::Sender<Event>>>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The lock on the metadata dir, released after the thread ends.
    _lock: Option<std::fs::File>,
    /// An observer's fetch task (no thread, no events), stopped with the last handle.
    observer_task: Option<tokio::task::AbortHandle>,
}

impl Drop for ControllerThread {
    fn drop(&mut self) {
        if let Some(task) = self.observer_task.take() {
            task.abort();
        }
        self.events.lock().take();
        if let Some(handle) = self.handle.lock().take() {
            if handle.join().is_err() {
                tracing::error!("the controller thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.node_id)
            .field("offset", &self.image().offset)
            .finish_non_exhaustive()
    }
}

/// A random topic id whose URL-safe base64 form does not start with `-` (Kafka's `Uuid.randomUuid` rule, so the
/// id can be passed to command-line tools without reading as an option).
fn new_topic_id() -> Uuid {
    loop {
        let id = Uuid::new_v4();
        // The first base64 character is the top 6 bits of the first byte; '-' is index 62.
        if id.as_bytes()[0] >> 2 != 62 {
            return id;
        }
    }
}

/// The state of the controller thread.
struct Driver {
    node: QuorumNode,
    node_id: i32,
    transport: Arc<dyn Transport>,
    publisher: Arc<watch::Sender<Arc<MetadataImage>>>,
    shared: Arc<Mutex<Shared>>,
    /// Operations waiting their turn, with when they arrived.
    queue: VecDeque<(Instant, Op)>,
    in_flight: Option<InFlight>,
    sessions: Sessions,
    was_leader: bool,
    /// Set when the member failed (storage): it stops taking part and answers every operation with the error.
    failed: Option<String>,
    /// The cluster id observers must name.
    cluster_id: String,
    /// Observer fetches waiting for new commits.
    parked: Vec<ParkedFetch>,
    /// Observers that fetched from this node, by node id.
    observers: HashMap<i32, ObserverSeen>,
    /// Leader election settings (`ControllerConfig::elections`).
    elections: logic::ElectionConfig,
    /// When the active controller next runs its periodic elections (leader imbalance, offline partitions).
    next_periodic_elections: Instant,
}

struct InFlight {
    index: u64,
    term: u64,
    started: Instant,
    done: Box<dyn FnOnce(Result<u64, ControllerError>) + Send>,
}

impl Driver {
    fn run(mut self, events: std_mpsc::Receiver<Event>) {
        let tick = Duration::from_millis(TICK_MS);
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match events.recv_timeout(wait) {
                Ok(Event::Raft(m)) => {
                    if self.failed.is_none() {
                        self.node.step(m);
                    }
                }
                Ok(Event::Op(op)) => self.queue.push_back((Instant::now(), op)),
                Ok(Event::ObserverFetch(request, reply)) => self.observer_fetch(request, reply),
                Ok(Event::Shutdown) => {
                    self.failed = Some("the controller is shutting down".into());
                    if let Some(f) = self.in_flight.take() {
                        (f.done)(Err(ControllerError::Stopped(
                            "the controller is shutting down".into(),
                        )));
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_tick {
                next_tick += tick;
                if self.failed.is_none() {
                    self.node.tick();
                    self.leader_duties();
                }
                self.expire_parked();
            }
            self.drive();
        }
        if let Some(f) = self.in_flight.take() {
            (f.done)(Err(ControllerError::Stopped("controller closed".into())));
        }
    }

    /// Processes Ready rounds until there is nothing left, then starts the next queued operation if it can.
    fn drive(&mut self) {
        loop {
            if let Some(reason) = &self.failed {
                for (_, op) in self.queue.drain(..) {
                    let proposal = op(self.node.image(), &mut self.sessions);
                    (proposal.done)(Err(ControllerError::Stopped(reason.clone())));
                }
                return;
            }
            let out = match self.node.process_ready() {
                Ok(out) => out,
                Err(e) => {
                    tracing::error!(error = %e, "the controller quorum member failed; it stops taking part");
                    self.failed = Some(e.to_string());
                    if let Some(f) = self.in_flight.take() {
                        (f.done)(Err(ControllerError::Stopped(e.to_string())));
                    }
                    continue;
                }
            };
            let progressed = !out.messages.is_empty() || !out.applied.is_empty();
            self.transport.send(out.messages);
            if out.image_changed {
                let mut image = (**self.node.image()).clone();
                image.controller_id = self.leader().unwrap_or(-1);
                self.publisher.send_replace(Arc::new(image));
            }
            for (index, term) in out.applied {
                if self.in_flight.as_ref().is_some_and(|f| f.index == index) {
                    let f = self.in_flight.take().expect("checked above");
                    let result = if f.term == term {
                        Ok(index)
                    } else {
                        Err(ControllerError::NotController {
                            leader: self.leader(),
                        })
                    };
                    (f.done)(result);
                }
            }
            if progressed && !self.parked.is_empty() {
                self.answer_parked();
            }
            self.update_shared();
            // Operations wait while this leader is not caught up (or an election runs); they are retried after the
            // next tick or message, never in a busy loop here.
            let started = self.in_flight.is_none() && !self.queue.is_empty() && self.start_next();
            if !progressed && !started {
                return;
            }
        }
    }

    fn leader(&self) -> Option<i32> {
        self.node.leader_id().map(node_of)
    }

    /// Computes and proposes the next queued operation. Returns true when something was proposed.
    fn start_next(&mut self) -> bool {
        if !self.node.is_leader() {
            let leader = self.leader();
            let candidate = leader.is_none();
            // Without a known leader (an election is running) operations wait; with another leader they fail so the
            // caller can go there.
            if candidate && self.queue.len() < 1024 {
                return false;
            }
            for (_, op) in self.queue.drain(..) {
                let proposal = op(self.node.image(), &mut self.sessions);
                (proposal.done)(Err(ControllerError::NotController { leader }));
            }
            return false;
        }
        if !self.node.leader_caught_up() {
            return false;
        }
        while let Some((_, op)) = self.queue.pop_front() {
            let image = self.node.image().clone();
            let proposal = op(&image, &mut self.sessions);
            if proposal.records.is_empty() {
                (proposal.done)(Ok(self.node.applied_index()));
                continue;
            }
            // Replay first: records that would not apply are never proposed.
            let mut delta = MetadataDelta::new(&image);
            if let Err(e) = proposal
                .records
                .iter()
                .try_for_each(|r| delta.replay(image.offset + 1, r))
            {
                (proposal.done)(Err(e.into()));
                continue;
            }
            match self.node.propose(&proposal.records) {
                Ok((index, term)) => {
                    self.in_flight = Some(InFlight {
                        index,
                        term,
                        started: Instant::now(),
                        done: proposal.done,
                    });
                    return true;
                }
                Err(_) => {
                    (proposal.done)(Err(ControllerError::NotController {
                        leader: self.leader(),
                    }));
                }
            }
        }
        false
    }

    /// Timers of the active controller: fencing brokers whose sessions expired; timing out a stuck operation.
    fn leader_duties(&mut self) {
        if let Some(f) = &self.in_flight {
            if f.started.elapsed() > COMMIT_TIMEOUT {
                let f = self.in_flight.take().expect("checked above");
                (f.done)(Err(ControllerError::Timeout(COMMIT_TIMEOUT)));
            }
        }
        // An operation that waited its whole timeout in the queue (no leader known, or behind a stuck one) is
        // answered now and never run: its caller gave up, and running it later would surprise everyone.
        while self
            .queue
            .front()
            .is_some_and(|(arrived, _)| arrived.elapsed() > COMMIT_TIMEOUT)
        {
            let (_, op) = self.queue.pop_front().expect("checked above");
            let proposal = op(self.node.image(), &mut self.sessions);
            (proposal.done)(Err(ControllerError::Timeout(COMMIT_TIMEOUT)));
        }
        let leader_now = self.node.is_leader();
        if leader_now && !self.was_leader {
            // A new active controller gives every broker a full session before fencing it (Kafka's does), except
            // the previous active controller's own broker (a combined node): its session runs from the last
            // time this member heard from it as the quorum's leader. It lost the leadership because it fell silent,
            // and its broker heartbeated to itself, so waiting a whole new session would leave the partitions it
            // leads (and every acks=all write it is an in-sync follower of) stalled for the election time plus the
            // session. Alive, it heartbeats this controller well within its session.
            tracing::info!(
                term = self.node.term(),
                "this node is now the active controller"
            );
            for id in self.node.image().brokers.keys() {
                self.sessions.touch(*id);
            }
            if let Some((previous, heard)) = self.node.last_leader_contact() {
                let previous = node_of(previous);
                if previous != self.node_id && self.node.image().brokers.contains_key(&previous) {
                    tracing::info!(
                        broker = previous,
                        silent_ms = heard.elapsed().as_millis(),
                        "the previous active controller's broker keeps the session it had"
                    );
                    self.sessions.last_heartbeat.insert(previous, heard);
                }
            }
            self.next_periodic_elections = Instant::now() + self.periodic_elections_interval();
        }
        if !leader_now && self.was_leader {
            tracing::info!(leader = ?self.leader(), "this node is no longer the active controller");
        }
        self.was_leader = leader_now;
        if !leader_now || !self.node.leader_caught_up() {
            return;
        }
        let expired: Vec<i32> = self
            .node
            .image()
            .brokers
            .values()
            .filter(|b| !b.fenced && !self.sessions.alive(b.node_id))
            .map(|b| b.node_id)
            .collect();
        let elections = self.elections;
        for node_id in expired {
            tracing::warn!(broker = node_id, "broker session expired; fencing it");
            // Refresh so the fence is proposed once, not every tick until it commits.
            self.sessions.touch(node_id);
            self.queue.push_back((
                Instant::now(),
                Box::new(move |image: &MetadataImage, _: &mut Sessions| {
                    let result = logic::fence_broker(image, node_id, &elections);
                    Proposal {
                        records: result.records,
                        done: Box::new(move |r| {
                            if let Err(e) = r {
                                tracing::warn!(broker = node_id, error = %e, "fencing failed");
                            }
                        }),
                    }
                }),
            ));
        }
        if Instant::now() >= self.next_periodic_elections {
            self.next_periodic_elections = Instant::now() + self.periodic_elections_interval();
            self.queue.push_back((
                Instant::now(),
                Box::new(move |image: &MetadataImage, _: &mut Sessions| {
                    let result = logic::periodic_elections(image, &elections);
                    if !result.records.is_empty() {
                        tracing::info!(
                            elections = result.records.len(),
                            more = result.response,
                            "periodic leader elections (imbalance, offline partitions)"
                        );
                    }
                    Proposal {
                        records: result.records,
                        done: Box::new(|r| {
                            if let Err(e) = r {
                                tracing::warn!(error = %e, "periodic leader elections failed");
                            }
                        }),
                    }
                }),
            ));
        }
    }

    /// `leader.imbalance.check.interval.seconds`.
    fn periodic_elections_interval(&self) -> Duration {
        Duration::from_millis(self.elections.leader_imbalance_check_interval_ms)
    }

    /// Answers an observer's fetch at once when there is something to send (or it must be refused), else parks it
    /// until a commit or its wait ends.
    fn observer_fetch(&mut self, request: FetchRequest, reply: oneshot::Sender<FetchResponse>) {
        if request.cluster_id != self.cluster_id {
            tracing::warn!(
                observer = request.node_id,
                theirs = %request.cluster_id,
                ours = %self.cluster_id,
                "observer fetch from another cluster refused"
            );
            let _ = reply.send(self.fetch_response(observer::INCONSISTENT_CLUSTER_ID, None));
            return;
        }
        let commit = self.node.commit_index();
        let now_ms = crate::apis::now_ms();
        let applied = request.from.saturating_sub(1);
        let previous = self.observers.get(&request.node_id).copied();
        self.observers.insert(
            request.node_id,
            ObserverSeen {
                applied,
                fetched_ms: now_ms,
                caught_up_ms: if applied >= commit {
                    now_ms
                } else {
                    previous.map_or(-1, |p| p.caught_up_ms)
                },
                at: Instant::now(),
            },
        );
        if self.failed.is_some() {
            let _ = reply.send(self.fetch_response(code::NOT_CONTROLLER, None));
            return;
        }
        let read = self.read_for(&request);
        if has_data(&read) || request.max_wait_ms == 0 {
            let _ = reply.send(self.fetch_response(0, Some(read)));
        } else {
            let deadline = Instant::now() + Duration::from_millis(u64::from(request.max_wait_ms));
            self.parked.push(ParkedFetch {
                request,
                deadline,
                reply,
            });
        }
    }

    fn read_for(&self, request: &FetchRequest) -> CommittedRead {
        self.node.store().read_committed(
            request.from,
            request.max_bytes.min(OBSERVER_FETCH_MAX_BYTES) as usize,
        )
    }

    fn fetch_response(&self, error_code: i16, read: Option<CommittedRead>) -> FetchResponse {
        FetchResponse {
            error_code,
            leader_id: self.leader().unwrap_or(-1),
            commit: self.node.commit_index(),
            read: read.unwrap_or(CommittedRead::Entries(Vec::new())),
        }
    }

    /// Answers the parked fetches that now have entries to read.
    fn answer_parked(&mut self) {
        for parked in std::mem::take(&mut self.parked) {
            let read = self.read_for(&parked.request);
            if has_data(&read) {
                let _ = parked.reply.send(self.fetch_response(0, Some(read)));
            } else {
                self.parked.push(parked);
            }
        }
    }

    /// Answers the parked fetches whose wait is over (with nothing new) and forgets observers gone silent.
    fn expire_parked(&mut self) {
        let now = Instant::now();
        for parked in std::mem::take(&mut self.parked) {
            if parked.deadline <= now || parked.reply.is_closed() {
                let _ = parked.reply.send(self.fetch_response(0, None));
            } else {
                self.parked.push(parked);
            }
        }
        self.observers
            .retain(|_, seen| seen.at.elapsed() < OBSERVER_SESSION);
    }

    fn update_shared(&self) {
        let (last, progress) = self.node.progress();
        let now_ms = crate::apis::now_ms();
        let voters = if progress.is_empty() {
            vec![ReplicaStatus {
                replica_id: self.node_id,
                log_end_offset: last as i64,
                last_fetch_timestamp_ms: -1,
                last_caught_up_timestamp_ms: -1,
            }]
        } else {
            progress
                .into_iter()
                .map(|(id, matched)| ReplicaStatus {
                    replica_id: node_of(id),
                    log_end_offset: if node_of(id) == self.node_id {
                        last as i64
                    } else {
                        matched as i64
                    },
                    last_fetch_timestamp_ms: now_ms,
                    last_caught_up_timestamp_ms: if matched >= self.node.commit_index() {
                        now_ms
                    } else {
                        -1
                    },
                })
                .collect()
        };
        let mut shared = self.shared.lock();
        shared.leader_id = self.leader();
        shared.status = QuorumStatus {
            leader_id: self.leader().unwrap_or(-1),
            leader_epoch: i32::try_from(self.node.term()).unwrap_or(i32::MAX),
            high_watermark: self.node.commit_index() as i64,
            voters,
            observers: {
                let mut observers: Vec<ReplicaStatus> = self
                    .observers
                    .iter()
                    .map(|(id, seen)| ReplicaStatus {
                        replica_id: *id,
                        log_end_offset: seen.applied as i64,
                        last_fetch_timestamp_ms: seen.fetched_ms,
                        last_caught_up_timestamp_ms: seen.caught_up_ms,
                    })
                    .collect();
                observers.sort_by_key(|o| o.replica_id);
                observers
            },
        };
    }
}

/// True when a committed read has something for the observer.
fn has_data(read: &CommittedRead) -> bool {
    match read {
        CommittedRead::Entries(entries) => !entries.is_empty(),
        CommittedRead::Snapshot(_) => true,
    }
}

impl Controller {
    /// Opens (creating if absent) the quorum state under `config.metadata_dir`, loads snapshot + entries and starts
    /// the controller thread. Blocking: call it from `spawn_blocking` in async code. A single voter (no
    /// `controller.quorum.voters`) elects itself at once.
    pub fn open(
        config: ControllerConfig,
        transport: Option<Arc<dyn Transport>>,
    ) -> Result<Controller, ControllerError> {
        // Every directory must belong to one cluster and this node (Kafka's start-up check). They are formatted
        // here only for the embedded single node or when `cluster.id` names the cluster; otherwise a node that was
        // never formatted (`sluice storage format`) refuses to start rather than invent a cluster of its own.
        let mut dirs = config.log_dirs.clone();
        dirs.push(config.metadata_dir.clone());
        let allow_create = config.voters.is_empty() || config.cluster_id.is_some();
        let stored = meta_properties::check_or_create(
            &dirs,
            config.node_id,
            config.cluster_id.as_deref(),
            allow_create,
        )?;
        let dir = config.metadata_dir.join(mlog::LOG_DIR_NAME);
        let lock = mlog::lock_dir(&dir, LOCK_WAIT_MS)?;
        let (disk, persisted) = FileDisk::open(&dir)?;
        let voter_ids: Vec<u64> = if config.voters.is_empty() {
            vec![raft_id(config.node_id)]
        } else {
            config
                .voters
                .iter()
                .map(|(id, _, _)| raft_id(*id))
                .collect()
        };
        let store = QuorumStore::new(Box::new(disk), persisted, &voter_ids);
        let election_tick = usize::try_from(config.election_timeout_ms / TICK_MS)
            .unwrap_or(20)
            .max(2);
        let settings = QuorumSettings {
            node_id: raft_id(config.node_id),
            election_tick,
            heartbeat_tick: (election_tick / 10).max(1),
            snapshot_after_bytes: config.snapshot_after_bytes,
            fixed_election_timeout: false,
        };
        let mut node = QuorumNode::new(&settings, store, MetadataImage::empty(stored, -1))?;
        if voter_ids.len() == 1 {
            node.campaign();
        }
        tracing::info!(
            applied = node.applied_index(),
            voters = ?voter_ids,
            "metadata quorum loaded"
        );
        let defaults = ControllerDefaults {
            num_partitions: config.num_partitions,
            default_replication_factor: config.default_replication_factor,
        };
        let transport = transport.unwrap_or_else(|| Arc::new(NoPeers));
        Self::start(node, transport, defaults, &config, Some(lock))
    }

    fn start(
        node: QuorumNode,
        transport: Arc<dyn Transport>,
        defaults: ControllerDefaults,
        config: &ControllerConfig,
        lock: Option<std::fs::File>,
    ) -> Result<Controller, ControllerError> {
        let (publisher, _) = watch::channel(node.image().clone());
        let publisher = Arc::new(publisher);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (events, queue) = std_mpsc::channel::<Event>();
        let cluster_id = node.image().cluster_id.clone();
        let mut driver = Driver {
            node,
            node_id: config.node_id,
            transport,
            publisher: publisher.clone(),
            shared: shared.clone(),
            queue: VecDeque::new(),
            in_flight: None,
            sessions: Sessions {
                last_heartbeat: HashMap::new(),
                timeout: Duration::from_millis(config.session_timeout_ms),
            },
            was_leader: false,
            failed: None,
            cluster_id,
            parked: Vec::new(),
            observers: HashMap::new(),
            elections: config.elections,
            next_periodic_elections: Instant::now(),
        };
        // Apply what is committed before anyone reads the image (start-up replay).
        driver.drive();
        let handle = std::thread::Builder::new()
            .name("sluice-controller".into())
            .spawn(move || driver.run(queue))
            .map_err(|e| ControllerError::Stopped(e.to_string()))?;
        Ok(Controller {
            thread: Arc::new(ControllerThread {
                events: Mutex::new(Some(events)),
                handle: Mutex::new(Some(handle)),
                _lock: lock,
                observer_task: None,
            }),
            publisher,
            shared,
            defaults,
            elections: config.elections,
            node_id: config.node_id,
            voters: Arc::new(config.voters.clone()),
        })
    }

    /// Follows the committed metadata log as an observer (a broker-only node: `process.roles=broker`): fetches it
    /// from the voters over their CONTROLLER listeners and publishes images from it; it never votes, and every
    /// operation answers NOT_CONTROLLER with the leader it knows (callers go there over the controller channel).
    /// Checks (or, with `cluster.id` configured, creates) `meta.properties` in every dir as voters do. Call within a
    /// tokio runtime; the fetch task stops with the last handle.
    pub fn observe(config: ControllerConfig) -> Result<Controller, ControllerError> {
        let mut dirs = config.log_dirs.clone();
        dirs.push(config.metadata_dir.clone());
        let stored = meta_properties::check_or_create(
            &dirs,
            config.node_id,
            config.cluster_id.as_deref(),
            config.cluster_id.is_some(),
        )?;
        let observer = Observer::new(MetadataImage::empty(stored, -1));
        let (publisher, _) = watch::channel(observer.image().clone());
        let publisher = Arc::new(publisher);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let task = tokio::spawn(observe_loop(
            observer,
            config.node_id,
            config.voters.clone(),
            publisher.clone(),
            shared.clone(),
        ));
        Ok(Controller {
            thread: Arc::new(ControllerThread {
                events: Mutex::new(None),
                handle: Mutex::new(None),
                _lock: None,
                observer_task: Some(task.abort_handle()),
            }),
            publisher,
            shared,
            defaults: ControllerDefaults {
                num_partitions: config.num_partitions,
                default_replication_factor: config.default_replication_factor,
            },
            elections: config.elections,
            node_id: config.node_id,
            voters: Arc::new(config.voters),
        })
    }

    /// Shutting down: operations waiting or arriving from now on are answered NOT_CONTROLLER (callers retry on
    /// the next controller) and this member stops taking part in the quorum. The thread ends with the last handle.
    pub fn shutdown(&self) {
        if !self.is_observer() {
            let _ = self.send_event(Event::Shutdown);
        }
    }

    /// True when this node observes the metadata log rather than voting on it (a broker-only node).
    pub fn is_observer(&self) -> bool {
        self.thread.observer_task.is_some()
    }

    /// Waits until an observer has applied the committed log as of its first answer from a voter (at once for
    /// a voter, whose log is local); false if `timeout` passed first.
    pub async fn wait_caught_up(&self, timeout: Duration) -> bool {
        if !self.is_observer() {
            return true;
        }
        let mut changes = self.publisher.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                if self.shared.lock().caught_up {
                    return;
                }
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .is_ok()
    }

    /// Answers an observer's fetch of the committed log (long-polled up to its `max_wait_ms`).
    pub async fn observer_fetch(&self, request: FetchRequest) -> FetchResponse {
        let (tx, rx) = oneshot::channel();
        let refused = |leader: Option<i32>| FetchResponse {
            error_code: code::NOT_CONTROLLER,
            leader_id: leader.unwrap_or(-1),
            commit: 0,
            read: CommittedRead::Entries(Vec::new()),
        };
        if self.send_event(Event::ObserverFetch(request, tx)).is_err() {
            return refused(self.leader_id());
        }
        rx.await.unwrap_or_else(|_| refused(self.leader_id()))
    }

    fn send_event(&self, event: Event) -> Result<(), ControllerError> {
        if self.is_observer() {
            return Err(ControllerError::NotController {
                leader: self.leader_id(),
            });
        }
        let events = self.thread.events.lock();
        let sender = events
            .as_ref()
            .ok_or_else(|| ControllerError::Stopped("controller closed".into()))?;
        sender
            .send(event)
            .map_err(|_| ControllerError::Stopped("controller thread exited".into()))
    }

    /// Feeds a Raft message received from a peer.
    pub fn step(&self, message: Message) {
        let _ = self.send_event(Event::Raft(message));
    }

    /// True when this node is the active controller (the Raft leader).
    pub fn is_active(&self) -> bool {
        self.shared.lock().leader_id == Some(self.node_id)
    }

    /// The active controller this node knows of.
    pub fn leader_id(&self) -> Option<i32> {
        self.shared.lock().leader_id
    }

    /// `controller.quorum.voters` as (id, host, port); empty for the embedded single node.
    pub fn voters(&self) -> Vec<(i32, String, u16)> {
        (*self.voters).clone()
    }

    /// The quorum's state, for DescribeQuorum.
    pub fn quorum_status(&self) -> QuorumStatus {
        self.shared.lock().status.clone()
    }

    /// Runs `op` on the controller thread against the committed image; its records are proposed and the result
    /// returned once they are committed. `op` also sees the broker sessions.
    async fn run_with_sessions<T, F>(&self, op: F) -> Result<T, ControllerError>
    where
        T: Send + 'static,
        F: FnOnce(&MetadataImage, &mut Sessions) -> ControllerResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let event = Event::Op(Box::new(
            move |image: &MetadataImage, sessions: &mut Sessions| {
                let result = op(image, sessions);
                let response = result.response;
                Proposal {
                    records: result.records,
                    done: Box::new(move |r: Result<u64, ControllerError>| {
                        let _ = tx.send(r.map(|_| response));
                    }),
                }
            },
        ));
        self.send_event(event)?;
        rx.await.map_err(|_| {
            ControllerError::Stopped("controller thread dropped the operation".into())
        })?
    }

    /// Registers a broker (BrokerRegistration): fenced until a heartbeat finds it caught up. The outcome carries the
    /// broker epoch (the registration record's offset).
    pub async fn register_broker(
        &self,
        registration: BrokerRegistration,
        previous_broker_epoch: i64,
    ) -> Result<RegistrationOutcome, ControllerError> {
        let node_id = registration.node_id;
        let elections = self.elections;
        let (tx, rx) = oneshot::channel();
        let event = Event::Op(Box::new(
            move |image: &MetadataImage, sessions: &mut Sessions| {
                let alive = sessions.alive(node_id)
                    && image.brokers.get(&node_id).is_some_and(|b| !b.fenced);
                let result = logic::register_broker_with(
                    image,
                    registration,
                    alive,
                    previous_broker_epoch,
                    &elections,
                );
                let response = result.response.clone();
                if response.error_code == 0 {
                    sessions.touch(node_id);
                }
                Proposal {
                    records: result.records,
                    done: Box::new(move |r: Result<u64, ControllerError>| {
                        // The broker epoch is the offset of the registration record: the entry's index.
                        let _ = tx.send(r.map(|index| RegistrationOutcome {
                            broker_epoch: if response.broker_epoch >= 0 {
                                response.broker_epoch
                            } else {
                                index as i64
                            },
                            ..response
                        }));
                    }),
                }
            },
        ));
        self.send_event(event)?;
        rx.await.map_err(|_| {
            ControllerError::Stopped("controller thread dropped the operation".into())
        })?
    }

    /// A broker heartbeat: renews its session; unfences, fences or shuts it down as its state asks.
    pub async fn broker_heartbeat(
        &self,
        hb: Heartbeat,
    ) -> Result<HeartbeatOutcome, ControllerError> {
        let elections = self.elections;
        self.run_with_sessions(move |image, sessions| {
            let result = logic::broker_heartbeat_with(image, hb, &elections);
            if result.response.error_code == 0 {
                sessions.touch(hb.node_id);
            }
            result
        })
        .await
    }

    /// Hands out a block of producer ids (AllocateProducerIds).
    pub async fn allocate_producer_ids(
        &self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<ProducerIdBlock, ControllerError> {
        self.run_with_sessions(move |image, _| {
            logic::allocate_producer_ids(image, broker_id, broker_epoch)
        })
        .await
    }

    /// Changes partition ISRs for their leader `broker_id` (AlterPartition, KIP-497).
    pub async fn alter_partition(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        changes: Vec<logic::IsrChange>,
    ) -> Result<logic::AlterPartitionOutcome, ControllerError> {
        let elections = self.elections;
        self.run_with_sessions(move |image, _| {
            logic::alter_partition(image, broker_id, broker_epoch, &changes, &elections)
        })
        .await
    }

    /// Runs preferred or unclean leader elections (ElectLeaders); `targets` `None` is every partition.
    pub async fn elect_leaders(
        &self,
        election_type: logic::ElectionType,
        targets: Option<Vec<logic::ElectionTarget>>,
    ) -> Result<logic::ElectLeadersOutcome, ControllerError> {
        let elections = self.elections;
        self.run_with_sessions(move |image, _| {
            logic::elect_leaders(image, election_type, targets.as_deref(), &elections)
        })
        .await
    }

    /// Starts, replaces or cancels partition reassignments (AlterPartitionReassignments).
    pub async fn alter_partition_reassignments(
        &self,
        targets: Vec<logic::ReassignmentTarget>,
        allow_replication_factor_change: bool,
    ) -> Result<Vec<logic::ReassignmentOutcome>, ControllerError> {
        self.run_with_sessions(move |image, _| {
            logic::alter_partition_reassignments(image, &targets, allow_replication_factor_change)
        })
        .await
    }

    /// The current (committed) metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.publisher.borrow().clone()
    }

    /// Fires after every committed change; the replica manager reconciles local logs against the image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.publisher.subscribe()
    }

    /// The defaults applied to -1 partition counts and replication factors.
    pub fn defaults(&self) -> ControllerDefaults {
        self.defaults
    }

    /// Runs `op` on the controller thread against the committed image and commits its records.
    async fn run<T, F>(&self, op: F) -> Result<T, ControllerError>
    where
        T: Send + 'static,
        F: FnOnce(&MetadataImage) -> ControllerResult<T> + Send + 'static,
    {
        self.run_with_sessions(move |image, _| op(image)).await
    }

    /// Creates topics (CreateTopics and Metadata auto-creation). -1 counts take the broker defaults. A metadata
    /// log failure is reported per topic as UNKNOWN_SERVER_ERROR, nothing having been created.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<CreateTopicOutcome> {
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        let defaults = self.defaults;
        let result = self
            .run(move |image| {
                logic::create_topics(image, defaults, &topics, validate_only, &mut new_topic_id)
            })
            .await;
        match result {
            Ok(outcomes) => outcomes,
            Err(e) => {
                tracing::error!("CreateTopics failed: {e}");
                names
                    .into_iter()
                    .map(|name| CreateTopicOutcome {
                        name,
                        error_code: e.code(),
                        error_message: Some(e.to_string()),
                        topic_id: Uuid::nil(),
                        num_partitions: -1,
                        replication_factor: -1,
                        configs: Vec::new(),
                    })
                    .collect()
            }
        }
    }

    /// Deletes topics by name or id (DeleteTopics).
    pub async fn delete_topics(
        &self,
        targets: Vec<DeleteTopicTarget>,
    ) -> Result<Vec<DeleteTopicOutcome>, ControllerError> {
        self.run(move |image| logic::delete_topics(image, &targets))
            .await
    }

    /// Adds partitions to existing topics (CreatePartitions).
    pub async fn create_partitions(
        &self,
        topics: Vec<CreatePartitions>,
        validate_only: bool,
    ) -> Result<Vec<CreatePartitionsOutcome>, ControllerError> {
        self.run(move |image| logic::create_partitions(image, &topics, validate_only))
            .await
    }

    /// Replaces the config overrides of resources (AlterConfigs).
    pub async fn alter_configs(
        &self,
        resources: Vec<AlterConfigsResource>,
        validate_only: bool,
    ) -> Result<Vec<AlterConfigsOutcome>, ControllerError> {
        self.run(move |image| logic::alter_configs(image, &resources, validate_only))
            .await
    }

    /// Applies config operations to resources (IncrementalAlterConfigs).
    pub async fn incremental_alter_configs(
        &self,
        resources: Vec<IncrementalAlterConfigsResource>,
        validate_only: bool,
    ) -> Result<Vec<AlterConfigsOutcome>, ControllerError> {
        self.run(move |image| logic::incremental_alter_configs(image, &resources, validate_only))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> ControllerConfig {
        ControllerConfig {
            num_partitions: 3,
            ..ControllerConfig::single_node(1, dir.to_path_buf())
        }
    }

    /// Registers and unfences broker 1, as the broker's start-up does.
    async fn register(controller: &Controller) {
        let outcome = controller
            .register_broker(registration(), logic::CLEAN_SHUTDOWN_UNKNOWN)
            .await
            .unwrap();
        assert_eq!(outcome.error_code, 0);
        let hb = controller
            .broker_heartbeat(Heartbeat {
                node_id: 1,
                broker_epoch: outcome.broker_epoch,
                current_metadata_offset: controller.image().offset,
                want_fence: false,
                want_shut_down: false,
            })
            .await
            .unwrap();
        assert!(!hb.is_fenced, "{hb:?}");
    }

    fn registration() -> BrokerRegistration {
        BrokerRegistration {
            node_id: 1,
            host: "localhost".into(),
            port: 9092,
            rack: None,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn creates_topics_publishes_images_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let controller = Controller::open(config(dir.path()), None).unwrap();
        register(&controller).await;
        let mut changes = controller.subscribe();
        changes.borrow_and_update();
        let outcomes = controller
            .create_topics(vec![NewTopic::with_defaults("orders")], false)
            .await;
        assert_eq!(outcomes[0].error_code, 0, "{outcomes:?}");
        assert_eq!(outcomes[0].num_partitions, 3);
        assert!(changes.has_changed().unwrap());
        let image = controller.image();
        let topic = image.topic("orders").unwrap();
        assert_eq!(topic.id, outcomes[0].topic_id);
        assert_eq!(topic.partitions.len(), 3);
        assert_eq!(topic.partitions[0].leader, 1);
        let cluster_id = image.cluster_id.clone();
        assert_eq!(cluster_id.len(), 22);

        // validate_only writes nothing.
        let outcomes = controller
            .create_topics(vec![NewTopic::with_defaults("dry")], true)
            .await;
        assert_eq!(outcomes[0].error_code, 0);
        assert!(controller.image().topic("dry").is_none());
        drop(controller);

        let controller = Controller::open(config(dir.path()), None).unwrap();
        register(&controller).await;
        let reopened = controller.image();
        assert_eq!(reopened.cluster_id, cluster_id);
        assert_eq!(reopened.topic("orders"), image.topic("orders"));
        assert_eq!(
            reopened.offset, image.offset,
            "re-registering the same incarnation writes nothing"
        );
    }

    #[test]
    fn topic_ids_never_start_with_a_dash_in_base64() {
        for _ in 0..2000 {
            assert_ne!(new_topic_id().as_bytes()[0] >> 2, 62);
        }
    }

    #[tokio::test]
    async fn rejects_a_different_configured_cluster_id() {
        let dir = tempfile::tempdir().unwrap();
        drop(Controller::open(config(dir.path()), None).unwrap());
        let other = ControllerConfig {
            cluster_id: Some("someOtherClusterId0000".into()),
            ..config(dir.path())
        };
        let err = Controller::open(other, None).unwrap_err();
        assert!(matches!(err, ControllerError::MetaProperties(_)), "{err:?}");
        let message = err.to_string();
        let stored = meta_properties::read(dir.path())
            .unwrap()
            .expect("formatted by the first open")
            .cluster_id;
        assert!(
            message.contains("someOtherClusterId0000") && message.contains(&stored),
            "the error names both ids: {message}"
        );
    }

    #[tokio::test]
    async fn admin_operations_go_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let controller = Controller::open(config(dir.path()), None).unwrap();
        register(&controller).await;
        controller
            .create_topics(vec![NewTopic::with_defaults("t")], false)
            .await;
        let out = controller
            .create_partitions(
                vec![CreatePartitions {
                    name: "t".into(),
                    count: 5,
                    assignments: None,
                }],
                false,
            )
            .await
            .unwrap();
        assert_eq!(out[0].error, None);
        let out = controller
            .incremental_alter_configs(
                vec![IncrementalAlterConfigsResource {
                    resource_type: 2,
                    resource_name: "t".into(),
                    ops: vec![logic::AlterConfigOp {
                        key: "retention.ms".into(),
                        op: logic::ConfigOpType::Set,
                        value: Some("1000".into()),
                    }],
                }],
                false,
            )
            .await
            .unwrap();
        assert_eq!(out[0].error, None);
        let image = controller.image();
        assert_eq!(image.topic("t").unwrap().partitions.len(), 5);
        assert_eq!(
            image
                .topic("t")
                .unwrap()
                .configs
                .get("retention.ms")
                .map(String::as_str),
            Some("1000")
        );
        drop(controller);
        let controller = Controller::open(config(dir.path()), None).unwrap();
        assert_eq!(controller.image().topic("t"), image.topic("t"));
        let out = controller
            .delete_topics(vec![DeleteTopicTarget {
                name: Some("t".into()),
                topic_id: Uuid::nil(),
            }])
            .await
            .unwrap();
        assert_eq!(out[0].error, None);
        assert!(controller.image().topic("t").is_none());
    }
}
