//! A deterministic, seeded simulation of partition replication: three brokers, each a real `ReplicaManager` over a
//! real `LogManager` in a temporary directory, replicating one partition (RF 3, `min.insync.replicas=2`), driven by
//! the real controller logic (`sluice_metadata::controller`: registration, heartbeats, session fencing and the
//! elections it triggers, AlterPartition), with an idempotent acks=all producer, while brokers crash (losing what
//! they had not flushed), restart, pause past their session (zombies), and are cut off from the controller, from
//! each other and from the producer. Time is virtual (a step is 50 ms); a run is a pure function of its seed.
//!
//! What is shared with the broker: the leader's side of a follower fetch is `Partition::follower_fetch` (divergence
//! check, follower progress, high watermark) plus a log read up to the log end; the follower's side is
//! `replica_fetcher::apply` (append as follower, truncation on a diverging epoch); ISR changes are
//! `Partition::propose_isr` sent through `controller::alter_partition`; an acks=all produce is
//! `Partition::append_producer_batch` then `Partition::replicated`; a restarted broker hosts nothing until its new
//! registration is committed and its image caught up (`ReplicaManager::activate`). The network between brokers is
//! the simulation's: a fetch is one synchronous exchange, which either happens or does not.
//!
//! Invariants (the replication issue's):
//! - `acknowledged_never_lost`: every batch the producer saw acknowledged is in the final leader's log, at the
//!   offsets it was acknowledged with, and in every in-sync replica's log. At most RF - min.insync.replicas = 1
//!   replica is lost at once: a broker crashes (and may lose its unflushed tail) only while every other one runs
//!   and has been back in the ISR since its own last crash.
//! - `committed_prefix`: every live replica's log below its high watermark is byte for byte the current leader's.
//! - `high_watermark_monotonic`: a leader's high watermark never moves back within its leader epoch.
//! - `one_leader_per_epoch`: no two brokers append as leader in one leader epoch.
//! - `no_duplicates`: every producer sequence is in the final log once (idempotence across failovers).
//! - liveness: once faults stop, the cluster heals and the producer's last batch is acknowledged.
//!
//! `SLUICE_REPL_SIM_SEEDS=N` sets how many seeds run (default 300 in debug builds, 2000 in release);
//! `SLUICE_REPL_SIM_SEED=S` runs one seed.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{EpochEndOffset, PartitionData};
use sluice_metadata::controller::{self, ControllerDefaults, ElectionConfig, Heartbeat, IsrChange};
use sluice_metadata::{
    BrokerRegistration, ControllerResult, MetadataDelta, MetadataImage, NewTopic, Uuid,
};
use sluice_protocol::batch::Batches;
use sluice_storage::{LogConfig, LogManager, ReadError};
use sluice_testkit::{BatchBuilder, Rng};
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::partition::{Partition, ProduceError, Replicated};
use crate::replica_manager::ReplicaManager;

const TOPIC: &str = "sim";
const BROKERS: i32 = 3;
const STEP_MS: i64 = 50;
const HEARTBEAT_MS: i64 = 500;
const SESSION_MS: i64 = 3_000;
const REQUEST_TIMEOUT_MS: i64 = 5_000;
const PRODUCER_ID: i64 = 7;

thread_local! {
    static NOW: Cell<i64> = const { Cell::new(0) };
}

fn sim_now() -> i64 {
    NOW.with(Cell::get)
}

/// `SLUICE_REPL_SIM_TRACE=1`: every fault, restart, partition change and acknowledgement on stderr.
fn trace(what: impl FnOnce() -> String) {
    if std::env::var_os("SLUICE_REPL_SIM_TRACE").is_some() {
        eprintln!("{:>6} ms  {}", sim_now(), what());
    }
}

/// Broker `id`'s registration under `incarnation`.
fn registration(id: i32, incarnation: Uuid) -> BrokerRegistration {
    BrokerRegistration {
        node_id: id,
        host: "sim".into(),
        port: 9092,
        incarnation_id: incarnation,
        ..Default::default()
    }
}

/// The broker epoch of broker `id` in `image` when it is registered under `incarnation`.
fn registered_epoch(image: &MetadataImage, id: i32, incarnation: Uuid) -> Option<i64> {
    image
        .brokers
        .get(&id)
        .filter(|b| b.incarnation_id == incarnation)
        .map(|b| b.epoch)
}

fn apply<T>(image: &MetadataImage, result: &ControllerResult<T>) -> MetadataImage {
    let mut delta = MetadataDelta::new(image);
    for (i, r) in result.records.iter().enumerate() {
        delta.replay(image.offset + 1 + i as i64, r).unwrap();
    }
    delta.apply()
}

/// A broker process.
struct Process {
    logs: Arc<LogManager>,
    replicas: ReplicaManager,
    view: watch::Sender<Arc<MetadataImage>>,
    incarnation: Uuid,
    /// Its broker epoch once its registration is in its image.
    broker_epoch: i64,
    next_heartbeat_ms: i64,
    next_isr_ms: i64,
    next_checkpoint_ms: i64,
    caught_up: bool,
}

struct Node {
    id: i32,
    dir: PathBuf,
    process: Option<Process>,
    /// Crashed (maybe losing its unflushed tail) and not back in the ISR since.
    recovering: bool,
    /// Crashed until then (ms).
    down_until: i64,
    /// Paused (SIGSTOP) until then (ms).
    paused_until: i64,
    /// Cut off from the controller until then (ms).
    isolated_until: i64,
}

impl Node {
    fn running(&self, now: i64) -> Option<&Process> {
        self.process.as_ref().filter(|_| now >= self.paused_until)
    }
}

/// The producer's request in flight.
struct InFlight {
    node: i32,
    incarnation: Uuid,
    partition: Arc<Partition>,
    last_offset: i64,
    base_offset: i64,
    sent_ms: i64,
}

struct Producer {
    view: Arc<MetadataImage>,
    next_sequence: i32,
    /// Records in the current batch (retried with the same sequence until acknowledged).
    batch_records: usize,
    in_flight: Option<InFlight>,
    next_try_ms: i64,
    /// base sequence -> (base offset, last offset) as acknowledged.
    acked: BTreeMap<i32, (i64, i64)>,
    last_ack_ms: i64,
}

struct Sim {
    seed: u64,
    rng: Rng,
    rng_fault: Rng,
    /// The brokers' log directories (removed with the simulation).
    dir: tempfile::TempDir,
    image: Arc<MetadataImage>,
    elections: ElectionConfig,
    last_heartbeat: HashMap<i32, i64>,
    nodes: Vec<Node>,
    /// Links between brokers cut until then (ms): (lower id, higher id).
    cut: HashMap<(i32, i32), i64>,
    producer_cut_until: Vec<i64>,
    producer: Producer,
    lag_max_ms: i64,
    /// Leader epoch -> the broker that appended as leader in it.
    epoch_leaders: HashMap<i32, i32>,
    /// (broker, incarnation, leader epoch) -> the highest high watermark it had as leader.
    leader_hw: HashMap<(i32, Uuid, i32), i64>,
    next_incarnation: u128,
    faults: usize,
    healed_ms: i64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        NOW.with(|n| n.set(0));
        let mut root = Rng::from_seed(seed);
        let rng = root.fork();
        let mut rng_fault = root.fork();
        let lag_max_ms = [1_000, 2_000, 10_000][rng_fault.index(3)];
        // tmpfs where there is one: the logs fsync, and the simulation does not need the disk's durability.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let mut image = MetadataImage::empty("sim", 0);
        let elections = ElectionConfig {
            auto_leader_rebalance_enable: false,
            ..ElectionConfig::default()
        };
        let mut sim = Sim {
            seed,
            rng,
            rng_fault,
            image: Arc::new(MetadataImage::empty("sim", 0)),
            elections,
            last_heartbeat: HashMap::new(),
            nodes: Vec::new(),
            cut: HashMap::new(),
            producer_cut_until: vec![0; BROKERS as usize],
            producer: Producer {
                view: Arc::new(MetadataImage::empty("sim", 0)),
                next_sequence: 0,
                batch_records: 1,
                in_flight: None,
                next_try_ms: 0,
                acked: BTreeMap::new(),
                last_ack_ms: -1,
            },
            healed_ms: i64::MAX,
            lag_max_ms,
            epoch_leaders: HashMap::new(),
            leader_hw: HashMap::new(),
            next_incarnation: 1,
            faults: 0,
            dir,
        };
        // Three registered, unfenced brokers and the topic, as a freshly formatted cluster has them.
        let mut incarnations = Vec::new();
        for id in 0..BROKERS {
            let incarnation = sim.incarnation();
            incarnations.push(incarnation);
            image = apply(
                &image,
                &controller::register_broker(&image, registration(id, incarnation), false),
            );
            let hb = controller::broker_heartbeat(
                &image,
                Heartbeat {
                    node_id: id,
                    broker_epoch: image.brokers[&id].epoch,
                    current_metadata_offset: i64::MAX,
                    want_fence: false,
                    want_shut_down: false,
                },
            );
            image = apply(&image, &hb);
        }
        let topic = NewTopic {
            num_partitions: 1,
            replication_factor: 3,
            configs: vec![("min.insync.replicas".into(), Some("2".into()))],
            ..NewTopic::with_defaults(TOPIC)
        };
        let defaults = ControllerDefaults {
            num_partitions: 1,
            default_replication_factor: 3,
        };
        let created = controller::create_topics(&image, defaults, &[topic], false, &mut || {
            Uuid::from_u128(0x51)
        });
        image = apply(&image, &created);
        sim.image = Arc::new(image);
        sim.producer.view = sim.image.clone();
        for id in 0..BROKERS {
            let dir = sim.dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            sim.nodes.push(Node {
                id,
                dir,
                process: None,
                recovering: false,
                down_until: 0,
                paused_until: 0,
                isolated_until: 0,
            });
            let process = sim.start_process(id as usize, incarnations[id as usize]);
            process.replicas.activate();
            sim.nodes[id as usize].process = Some(process);
            sim.last_heartbeat.insert(id, 0);
        }
        sim
    }

    fn incarnation(&mut self) -> Uuid {
        self.next_incarnation += 1;
        Uuid::from_u128(self.next_incarnation)
    }

    fn fail(&self, invariant: &str, detail: String) -> ! {
        panic!(
            "replication simulation: {invariant} violated (seed {seed}, t={now} ms): {detail}\n{state}\n\
             reproduce: SLUICE_REPL_SIM_SEED={seed} cargo test -p sluice-broker --lib replication_sim",
            seed = self.seed,
            now = sim_now(),
            state = self.describe(),
        );
    }

    /// The controller's view and every broker's, for a failure message.
    fn describe(&self) -> String {
        let mut out = format!(
            "controller: {:?}\n",
            self.image.topic(TOPIC).map(|t| &t.partitions[0])
        );
        for (id, b) in &self.image.brokers {
            out += &format!(
                "  broker {id}: epoch {} fenced {} last heartbeat {:?}\n",
                b.epoch,
                b.fenced,
                self.last_heartbeat.get(id)
            );
        }
        for n in &self.nodes {
            out += &format!(
                "node {}: down_until {} paused_until {} isolated_until {}",
                n.id, n.down_until, n.paused_until, n.isolated_until
            );
            match &n.process {
                None => out += " crashed\n",
                Some(p) => {
                    out += &format!(
                        " active {} epoch {} caught_up {} view offset {}\n",
                        p.replicas.is_active(),
                        p.broker_epoch,
                        p.caught_up,
                        p.view.borrow().offset
                    );
                    if let Some(part) = Self::partition_of(p) {
                        out += &format!(
                            "    log [{}, {}) hw {} epochs {:?}\n    {:?}\n",
                            part.log.log_start_offset(),
                            part.log.log_end_offset(),
                            part.high_watermark(),
                            part.log.epoch_entries(),
                            part.state()
                        );
                    }
                }
            }
        }
        out += &format!(
            "producer: next sequence {} in flight {:?} acked {} last ack {} ms\n",
            self.producer.next_sequence,
            self.producer.in_flight.as_ref().map(|r| (
                r.node,
                r.base_offset,
                r.last_offset,
                r.sent_ms
            )),
            self.producer.acked.len(),
            self.producer.last_ack_ms
        );
        out
    }

    /// Opens node `i`'s logs (recovering them) and a replica manager that hosts nothing until activated.
    fn start_process(&self, i: usize, incarnation: Uuid) -> Process {
        let node = &self.nodes[i];
        let config = BrokerConfig::from_pairs([
            ("node.id", node.id.to_string()),
            ("log.dirs", node.dir.display().to_string()),
            ("replica.lag.time.max.ms", self.lag_max_ms.to_string()),
        ])
        .unwrap();
        let logs =
            Arc::new(LogManager::open(vec![node.dir.clone()], LogConfig::default()).unwrap());
        let (view, receiver) = watch::channel(self.image.clone());
        let replicas =
            ReplicaManager::new(Arc::new(config), logs.clone(), receiver).with_clock(sim_now);
        let epoch = registered_epoch(&self.image, node.id, incarnation).unwrap_or(-1);
        Process {
            logs,
            replicas,
            view,
            incarnation,
            broker_epoch: epoch,
            next_heartbeat_ms: sim_now(),
            next_isr_ms: sim_now(),
            next_checkpoint_ms: sim_now(),
            caught_up: epoch >= 0,
        }
    }

    fn commit<T>(&mut self, result: &ControllerResult<T>) {
        if !result.records.is_empty() {
            self.image = Arc::new(apply(&self.image, result));
            trace(|| format!("controller: {:?}", result.records));
        }
    }

    fn linked(&self, a: i32, b: i32, now: i64) -> bool {
        let key = (a.min(b), a.max(b));
        self.cut.get(&key).is_none_or(|&until| now >= until)
    }

    fn partition_of(process: &Process) -> Option<Arc<Partition>> {
        process
            .replicas
            .partitions()
            .into_iter()
            .find(|p| p.topic == TOPIC)
    }

    fn run(&mut self, steps: u64) {
        let fault_steps = steps * 2 / 3;
        for step in 0..steps {
            let now = step as i64 * STEP_MS;
            NOW.with(|n| n.set(now));
            if step < fault_steps {
                self.inject_faults(now);
            } else if step == fault_steps {
                self.heal(now);
            }
            self.restart_crashed(now);
            self.controller_tick(now);
            for i in 0..self.nodes.len() {
                self.broker_tick(i, now);
            }
            self.produce(now);
            self.check_leaders(now);
            if step % 20 == 0 {
                self.check_committed_prefix();
            }
        }
        self.finish(steps as i64 * STEP_MS);
    }

    fn inject_faults(&mut self, now: i64) {
        if !self.rng_fault.chance(20) {
            return;
        }
        let i = self.rng_fault.index(self.nodes.len());
        let id = self.nodes[i].id;
        match self.rng_fault.below(5) {
            0 => {
                // At most one broker down at a time: RF - min.insync.replicas.
                // At most RF - min.insync.replicas = 1 replica lost at once: no other broker down, or crashed and
                // not back in the ISR since.
                // Back in the ISR under its new registration (the old incarnation's membership does not count).
                let image = self.image.clone();
                let isr = &image.topic(TOPIC).unwrap().partitions[0].isr;
                for n in &mut self.nodes {
                    let registered = n
                        .process
                        .as_ref()
                        .is_some_and(|p| registered_epoch(&image, n.id, p.incarnation).is_some());
                    if registered && isr.contains(&n.id) {
                        n.recovering = false;
                    }
                }
                let others_lost = self
                    .nodes
                    .iter()
                    .any(|n| n.id != id && (n.process.is_none() || n.recovering));
                if self.nodes[i].process.is_some() && !others_lost {
                    self.crash(i, now);
                }
            }
            1 => {
                if self.nodes[i].process.is_some() && now >= self.nodes[i].paused_until {
                    // Sometimes past the session timeout: a zombie when it wakes.
                    self.nodes[i].paused_until = now + 200 + self.rng_fault.below(6_000) as i64;
                    trace(|| format!("pause {id} until {}", self.nodes[i].paused_until));
                    self.faults += 1;
                }
            }
            2 => {
                self.nodes[i].isolated_until = now + 200 + self.rng_fault.below(6_000) as i64;
                trace(|| {
                    format!(
                        "isolate {id} from the controller until {}",
                        self.nodes[i].isolated_until
                    )
                });
                self.faults += 1;
            }
            3 => {
                let j = (i + 1 + self.rng_fault.index(self.nodes.len() - 1)) % self.nodes.len();
                let key = (id.min(self.nodes[j].id), id.max(self.nodes[j].id));
                let until = now + 200 + self.rng_fault.below(6_000) as i64;
                self.cut.insert(key, until);
                trace(|| format!("cut {key:?} until {until}"));
                self.faults += 1;
            }
            _ => {
                self.producer_cut_until[i] = now + 200 + self.rng_fault.below(4_000) as i64;
                self.faults += 1;
            }
        }
    }

    /// SIGKILL: the process ends; what it had not flushed may be lost (a random part of the unflushed tail).
    fn crash(&mut self, i: usize, now: i64) {
        let Some(process) = self.nodes[i].process.take() else {
            return;
        };
        if let Some(p) = Self::partition_of(&process) {
            let durable = p.log.recovery_point().max(p.log.log_start_offset());
            let end = p.log.log_end_offset();
            if end > durable && self.rng_fault.chance(600) {
                let keep = durable + self.rng_fault.below((end - durable) as u64 + 1) as i64;
                p.log.truncate_to(keep).unwrap();
            }
            trace(|| {
                format!(
                    "crash {}: durable {durable}, log end {end} -> {}",
                    self.nodes[i].id,
                    p.log.log_end_offset()
                )
            });
        } else {
            trace(|| format!("crash {} (hosting nothing)", self.nodes[i].id));
        }
        drop(process);
        self.nodes[i].recovering = true;
        self.nodes[i].down_until = now + 200 + self.rng_fault.below(3_000) as i64;
        self.nodes[i].paused_until = 0;
        self.faults += 1;
    }

    fn restart_crashed(&mut self, now: i64) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].process.is_none() && now >= self.nodes[i].down_until {
                let incarnation = self.incarnation();
                let process = self.start_process(i, incarnation);
                trace(|| format!("restart {}", self.nodes[i].id));
                self.nodes[i].process = Some(process);
            }
        }
    }

    fn heal(&mut self, now: i64) {
        self.healed_ms = now;
        self.cut.clear();
        for n in &mut self.nodes {
            n.isolated_until = 0;
            n.paused_until = n.paused_until.min(now);
            n.down_until = n.down_until.min(now);
        }
        self.producer_cut_until.iter_mut().for_each(|t| *t = 0);
    }

    /// The controller fences brokers whose session expired (and elects new leaders for what they led).
    fn controller_tick(&mut self, now: i64) {
        for id in 0..BROKERS {
            let last = self.last_heartbeat.get(&id).copied().unwrap_or(0);
            let fenced = self.image.brokers.get(&id).is_none_or(|b| b.fenced);
            if !fenced && now - last > SESSION_MS {
                let result = controller::fence_broker(&self.image, id, &self.elections);
                self.commit(&result);
            }
        }
    }

    fn broker_tick(&mut self, i: usize, now: i64) {
        let id = self.nodes[i].id;
        if self.nodes[i].running(now).is_none() {
            return;
        }
        let reaches_controller = now >= self.nodes[i].isolated_until;
        if reaches_controller {
            self.heartbeat(i, now);
            // Metadata arrives with a lag.
            if self.rng.chance(300) {
                let process = self.nodes[i].process.as_mut().unwrap();
                process.view.send_replace(self.image.clone());
                if process.broker_epoch < 0 {
                    if let Some(epoch) = registered_epoch(&self.image, id, process.incarnation) {
                        process.broker_epoch = epoch;
                    }
                }
                if process.caught_up && process.broker_epoch >= 0 {
                    process.replicas.activate();
                }
                process.replicas.reconcile(&self.image);
            }
        }
        self.fetch(i, now);
        self.propose_isr(i, now, reaches_controller);
        let process = self.nodes[i].process.as_mut().unwrap();
        if let Some(p) = Self::partition_of(process) {
            if self.rng.chance(30) {
                p.log.flush().unwrap();
            }
        }
        if now >= process.next_checkpoint_ms {
            process.next_checkpoint_ms = now + 1_000;
            process.logs.checkpoint_high_watermarks().unwrap();
        }
    }

    fn heartbeat(&mut self, i: usize, now: i64) {
        let id = self.nodes[i].id;
        let process = self.nodes[i].process.as_mut().unwrap();
        if now < process.next_heartbeat_ms {
            return;
        }
        process.next_heartbeat_ms = now + HEARTBEAT_MS;
        let incarnation = process.incarnation;
        let registered = registered_epoch(&self.image, id, incarnation);
        match registered {
            None => {
                let alive = now - self.last_heartbeat.get(&id).copied().unwrap_or(0) <= SESSION_MS
                    && self.image.brokers.get(&id).is_some_and(|b| !b.fenced);
                // Every restart here follows a crash: the previous incarnation wrote no clean-shutdown epoch.
                let result = controller::register_broker_with(
                    &self.image,
                    registration(id, incarnation),
                    alive,
                    -1,
                    &self.elections,
                );
                self.commit(&result);
            }
            Some(epoch) => {
                let offset = process.view.borrow().offset;
                let result = controller::broker_heartbeat_with(
                    &self.image,
                    Heartbeat {
                        node_id: id,
                        broker_epoch: epoch,
                        current_metadata_offset: offset,
                        want_fence: false,
                        want_shut_down: false,
                    },
                    &self.elections,
                );
                if result.response.error_code == 0 {
                    self.last_heartbeat.insert(id, now);
                    let process = self.nodes[i].process.as_mut().unwrap();
                    process.caught_up |= result.response.is_caught_up;
                }
                self.commit(&result);
            }
        }
    }

    /// One fetch of follower `i` from the leader it knows, when both run and the link holds.
    fn fetch(&mut self, i: usize, now: i64) {
        if !self.rng.chance(500) {
            return;
        }
        let id = self.nodes[i].id;
        let Some(follower) = Self::partition_of(self.nodes[i].process.as_ref().unwrap()) else {
            return;
        };
        let Some(position) = follower.follower_position() else {
            return;
        };
        let leader_id = position.leader;
        if leader_id == id || !self.linked(id, leader_id, now) {
            return;
        }
        let Some(leader_process) = self.nodes[leader_id as usize].running(now) else {
            return;
        };
        // The leader's side, as `apis::fetch` does it for a replica.
        let Ok(leader) = leader_process.replicas.partition(TOPIC, 0) else {
            return;
        };
        if crate::apis::check_leader_epoch(position.leader_epoch, leader.leader_epoch()).is_err()
            || !leader.state().replicas.contains(&id)
        {
            return;
        }
        let log = &leader.log;
        let data = if let Some((epoch, end_offset)) = leader.follower_fetch(
            leader_id,
            id,
            position.fetch_offset,
            position.last_fetched_epoch,
            position.log_start_offset,
            now,
        ) {
            PartitionData::default()
                .with_high_watermark(log.high_watermark())
                .with_log_start_offset(log.log_start_offset())
                .with_diverging_epoch(
                    EpochEndOffset::default()
                        .with_epoch(epoch)
                        .with_end_offset(end_offset),
                )
                .with_records(Some(Bytes::new()))
        } else {
            let max_bytes = [200, 1_000, 1 << 20][self.rng.index(3)];
            match log.read(position.fetch_offset, max_bytes, log.log_end_offset()) {
                Ok(read) => PartitionData::default()
                    .with_high_watermark(log.high_watermark())
                    .with_log_start_offset(read.log_start_offset)
                    .with_records(Some(read.data)),
                Err(ReadError::OffsetOutOfRange { .. }) => {
                    // The follower resets into the leader's range (ListOffsets, then `reset_as_follower`).
                    follower
                        .reset_as_follower(
                            position.leader_epoch,
                            log.log_start_offset(),
                            log.log_end_offset(),
                        )
                        .unwrap();
                    return;
                }
                Err(e) => self.fail("storage", format!("leader read failed: {e}")),
            }
        };
        crate::replica_fetcher::apply(&follower, position.leader_epoch, data);
    }

    fn propose_isr(&mut self, i: usize, now: i64, reaches_controller: bool) {
        let id = self.nodes[i].id;
        let process = self.nodes[i].process.as_mut().unwrap();
        if now < process.next_isr_ms {
            return;
        }
        process.next_isr_ms = now + (self.lag_max_ms / 2).min(500);
        let Some(p) = Self::partition_of(process) else {
            return;
        };
        let image = process.replicas.image();
        let eligible = |r: i32| crate::isr::isr_eligible(&image, r);
        let Some(proposal) = p.propose_isr(id, now, self.lag_max_ms, 5_000, eligible) else {
            return;
        };
        let epoch = process.broker_epoch;
        if !reaches_controller {
            p.isr_proposal_failed(&proposal);
            return;
        }
        let change = IsrChange {
            topic_id: p.topic_id,
            topic_name: None,
            partition: 0,
            leader_epoch: proposal.leader_epoch,
            partition_epoch: proposal.partition_epoch,
            new_isr: proposal.new_isr.clone(),
        };
        let result =
            controller::alter_partition(&self.image, id, epoch, &[change], &self.elections);
        let refused = result.response.error_code != 0
            || result.response.partitions.iter().any(|o| o.error_code != 0);
        self.commit(&result);
        if refused {
            p.isr_proposal_failed(&proposal);
        }
    }

    fn produce(&mut self, now: i64) {
        if let Some(req) = &self.producer.in_flight {
            let node = &self.nodes[req.node as usize];
            let same_process = node
                .process
                .as_ref()
                .is_some_and(|p| p.incarnation == req.incarnation);
            let answered = if !same_process {
                Some(Err("connection lost"))
            } else if node.running(now).is_none()
                || now < self.producer_cut_until[req.node as usize]
            {
                None
            } else {
                match req.partition.replicated(req.last_offset) {
                    Some(Replicated::Done) => Some(Ok(())),
                    Some(Replicated::BelowMinIsr) => Some(Err("NOT_ENOUGH_REPLICAS_AFTER_APPEND")),
                    Some(Replicated::NotLeader) => Some(Err("NOT_LEADER_OR_FOLLOWER")),
                    _ => None,
                }
            };
            let answered = answered.or_else(|| {
                (now - req.sent_ms > REQUEST_TIMEOUT_MS).then_some(Err("REQUEST_TIMED_OUT"))
            });
            match answered {
                None => return,
                Some(Ok(())) => {
                    let req = self.producer.in_flight.take().unwrap();
                    let seq = self.producer.next_sequence;
                    if let Some(old) = self
                        .producer
                        .acked
                        .insert(seq, (req.base_offset, req.last_offset))
                    {
                        self.fail(
                            "no_duplicates",
                            format!("sequence {seq} acknowledged twice: {old:?}"),
                        );
                    }
                    trace(|| {
                        format!(
                            "acked sequence {seq} at {}..={} from {}",
                            req.base_offset, req.last_offset, req.node
                        )
                    });
                    self.producer.next_sequence += self.producer.batch_records as i32;
                    self.producer.last_ack_ms = now;
                    self.producer.batch_records = 1 + self.rng.index(4);
                }
                Some(Err(_)) => {
                    self.producer.in_flight = None;
                    self.producer.view = self.image.clone();
                    self.producer.next_try_ms = now + 100;
                }
            }
        }
        if now < self.producer.next_try_ms {
            return;
        }
        if self.rng.chance(50) {
            self.producer.view = self.image.clone();
        }
        let leader = self.producer.view.topic(TOPIC).unwrap().partitions[0].leader;
        if leader < 0 || now < self.producer_cut_until[leader as usize] {
            self.producer.next_try_ms = now + 100;
            self.producer.view = self.image.clone();
            return;
        }
        let Some(process) = self.nodes[leader as usize].running(now) else {
            self.producer.next_try_ms = now + 100;
            return;
        };
        let Ok(partition) = process.replicas.partition(TOPIC, 0) else {
            self.producer.next_try_ms = now + 100;
            self.producer.view = self.image.clone();
            return;
        };
        let seq = self.producer.next_sequence;
        let mut batch = BatchBuilder::new()
            .timestamp_ms(now)
            .values((0..self.producer.batch_records).map(|k| format!("v{}", seq as usize + k)))
            .idempotent(PRODUCER_ID, 0, seq)
            .build();
        match partition.append_producer_batch(leader, &mut batch, -1, now) {
            Ok(info) => {
                let epoch = partition.leader_epoch();
                if let Some(&other) = self.epoch_leaders.get(&epoch) {
                    if other != leader {
                        self.fail(
                            "one_leader_per_epoch",
                            format!("brokers {other} and {leader} both appended as leader in epoch {epoch}"),
                        );
                    }
                }
                self.epoch_leaders.insert(epoch, leader);
                self.producer.in_flight = Some(InFlight {
                    node: leader,
                    incarnation: process.incarnation,
                    partition,
                    last_offset: info.last_offset,
                    base_offset: info.base_offset,
                    sent_ms: now,
                });
            }
            Err(ProduceError::OutOfOrderSequence(e)) => self.fail(
                "acknowledged_never_lost",
                format!("leader {leader} lost the producer's acknowledged batches: {e}"),
            ),
            Err(_) => {
                self.producer.next_try_ms = now + 100;
                self.producer.view = self.image.clone();
            }
        }
    }

    /// Every leader's high watermark, per epoch, only moves forward.
    fn check_leaders(&mut self, now: i64) {
        for node in &self.nodes {
            let Some(process) = node.running(now) else {
                continue;
            };
            let Some(p) = Self::partition_of(process) else {
                continue;
            };
            if !p.is_leader() {
                continue;
            }
            let key = (node.id, process.incarnation, p.leader_epoch());
            let hw = p.high_watermark();
            let seen = *self.leader_hw.entry(key).or_insert(hw);
            if hw < seen {
                self.fail(
                    "high_watermark_monotonic",
                    format!(
                        "leader {} in epoch {} moved its high watermark back from {seen} to {hw}",
                        key.0, key.2
                    ),
                );
            }
            self.leader_hw.insert(key, hw);
        }
    }

    /// The bytes of `p`'s log in `[start, end)` (whole batches).
    fn log_bytes(p: &Partition, start: i64, end: i64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offset = start;
        while offset < end {
            let read = p.log.read(offset, 1 << 20, end).unwrap();
            if read.data.is_empty() {
                break;
            }
            for batch in Batches::new(&read.data) {
                let (_, batch) = batch.unwrap();
                if batch.base_offset() >= end {
                    return out;
                }
                out.extend_from_slice(batch.bytes());
                offset = batch.next_offset();
            }
        }
        out
    }

    /// The current leader (by the controller's image), if it runs and leads in the image's epoch.
    fn current_leader(&self) -> Option<(i32, Arc<Partition>)> {
        let registration = &self.image.topic(TOPIC)?.partitions[0];
        let node = &self.nodes[usize::try_from(registration.leader).ok()?];
        let p = Self::partition_of(node.process.as_ref()?)?;
        (p.is_leader() && p.leader_epoch() == registration.leader_epoch).then_some((node.id, p))
    }

    /// Every replica's log below its high watermark is the leader's.
    fn check_committed_prefix(&self) {
        let Some((leader_id, leader)) = self.current_leader() else {
            return;
        };
        for node in &self.nodes {
            let Some(p) = node.process.as_ref().and_then(Self::partition_of) else {
                continue;
            };
            if node.id == leader_id {
                continue;
            }
            let start = p.log.log_start_offset().max(leader.log.log_start_offset());
            let hw = p.high_watermark();
            if hw <= start {
                continue;
            }
            if Self::log_bytes(&p, start, hw) != Self::log_bytes(&leader, start, hw) {
                self.fail(
                    "committed_prefix",
                    format!(
                        "broker {}'s log below its high watermark {hw} differs from leader {leader_id}'s",
                        node.id
                    ),
                );
            }
        }
    }

    /// After the faults: the cluster healed, the last batch acknowledged, every acknowledged batch where it was
    /// acknowledged, once, on every in-sync replica.
    fn finish(&mut self, end: i64) {
        let Some((leader_id, leader)) = self.current_leader() else {
            self.fail(
                "liveness",
                format!(
                    "no leader after healing: {:?}",
                    self.image.topic(TOPIC).map(|t| &t.partitions[0])
                ),
            );
        };
        if self.producer.acked.is_empty() {
            self.fail("liveness", "nothing was ever acknowledged".into());
        }
        if self.producer.last_ack_ms < self.healed_ms {
            self.fail(
                "liveness",
                format!(
                    "nothing acknowledged after the faults stopped at {} ms (run ends at {end} ms)",
                    self.healed_ms
                ),
            );
        }
        let registration = self.image.topic(TOPIC).unwrap().partitions[0].clone();
        let batches = |p: &Partition| -> BTreeMap<i32, (i64, i64)> {
            let mut found = BTreeMap::new();
            let data = Self::log_bytes(p, p.log.log_start_offset(), p.log.log_end_offset());
            for batch in Batches::new(&data) {
                let (_, batch) = batch.unwrap();
                if found
                    .insert(
                        batch.base_sequence(),
                        (batch.base_offset(), batch.last_offset()),
                    )
                    .is_some()
                {
                    self.fail(
                        "no_duplicates",
                        format!("sequence {} twice in a log", batch.base_sequence()),
                    );
                }
            }
            found
        };
        let in_leader = batches(&leader);
        for member in &registration.isr {
            let node = &self.nodes[*member as usize];
            let Some(p) = node.process.as_ref().and_then(Self::partition_of) else {
                continue;
            };
            let logged = if *member == leader_id {
                in_leader.clone()
            } else {
                batches(&p)
            };
            for (seq, offsets) in &self.producer.acked {
                if logged.get(seq) != Some(offsets) {
                    self.fail(
                        "acknowledged_never_lost",
                        format!(
                            "batch {seq} acknowledged at {offsets:?} is {:?} on in-sync broker {member} (leader {leader_id})",
                            logged.get(seq)
                        ),
                    );
                }
            }
        }
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("SLUICE_REPL_SIM_SEED") {
        return vec![seed.parse().expect("SLUICE_REPL_SIM_SEED is a number")];
    }
    let default = if cfg!(debug_assertions) { 300 } else { 2_000 };
    let n = std::env::var("SLUICE_REPL_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    (0..n).collect()
}

#[test]
fn replication_keeps_every_acknowledged_record() {
    let mut faults = 0;
    let mut acked = 0;
    let seeds = seeds();
    for &seed in &seeds {
        let mut sim = Sim::new(seed);
        sim.run(1_200);
        faults += sim.faults;
        acked += sim.producer.acked.len();
    }
    eprintln!(
        "replication simulation: {} seeds, {faults} faults injected, {acked} batches acknowledged",
        seeds.len()
    );
}
