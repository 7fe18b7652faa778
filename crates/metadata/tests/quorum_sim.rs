//! A deterministic, seeded simulation of the controller quorum: 3 or 5 members (`QuorumNode` over `MemoryDisk`),
//! a network that drops, delays, reorders, duplicates and partitions messages, members that crash and restart from
//! what they persisted, and proposals of metadata records to whoever believes it leads. A run is a pure function of
//! its seed (the whole configuration is derived from it); a failure prints the seed and the command reproducing it.
//!
//! Invariants checked after every step (named after the property they protect, Raft section 5.2/5.3/5.4):
//! - `election_safety`: at most one leader per term.
//! - `log_matching_committed`: every entry any member applies has the term the first applier saw at that index:
//!   the committed log is one sequence, never forked, reordered or rewritten.
//! - `state_machine_safety`: a member's image after applying index `i` is identical to every other member's image
//!   after `i` (every image is the image of a prefix of the committed log).
//! - `acknowledged_never_lost`: a proposal its proposer saw applied with its own term is in the committed sequence
//!   at that index, and, once faults stop, every member applies it.
//! - liveness after faults stop: a leader emerges and a new proposal commits; a run that commits nothing fails.
//! - `observer_prefix`: an observer (a broker-only node) that reads the committed log from random live voters
//!   (snapshots included) and restarts with nothing, has after index `i` the voters' image after `i`; once faults
//!   stop it catches up with everything acknowledged.
//!
//! `SLUICE_SIM_SEEDS=N` sets how many seeds run (default 400 in debug builds, 3000 in release);
//! `SLUICE_SIM_SEED=S` runs one seed.

use std::collections::{BTreeMap, HashMap, VecDeque};

use sluice_metadata::quorum::observer::Observer;
use sluice_metadata::quorum::{MemoryDisk, Message, QuorumNode, QuorumSettings, QuorumStore};
use sluice_metadata::{ConfigResourceType, MetadataImage, MetadataRecord};
// SplitMix64, one independent stream per concern (forked from the seed's stream, in this order).
use sluice_testkit::Rng;

struct Member {
    disk: MemoryDisk,
    node: Option<QuorumNode>,
    /// Steps until a crashed member restarts.
    down_for: u64,
    /// Proposals this member made as leader: index -> (term, proposal id).
    pending: BTreeMap<u64, (u64, u64)>,
}

struct InFlight {
    deliver_at: u64,
    message: Message,
}

struct Sim {
    seed: u64,
    rng_net: Rng,
    rng_fault: Rng,
    rng_time: Rng,
    settings: Vec<QuorumSettings>,
    voters: Vec<u64>,
    members: Vec<Member>,
    network: VecDeque<InFlight>,
    /// Links that are cut: (from, to).
    cut: Vec<(u64, u64)>,
    step: u64,
    /// The leader of each term seen.
    leaders: HashMap<u64, u64>,
    /// The committed sequence: index -> term, as first applied by any member.
    committed: BTreeMap<u64, u64>,
    /// The encoded image after applying each index, as first seen.
    images: HashMap<u64, Vec<u8>>,
    /// Acknowledged proposals: index -> (term, id).
    acked: BTreeMap<u64, (u64, u64)>,
    next_proposal: u64,
    /// A broker-only node following the committed log.
    observer: Observer,
    rng_observer: Rng,
}

fn fail(seed: u64, invariant: &str, detail: String) -> ! {
    panic!(
        "invariant `{invariant}` violated (seed {seed}): {detail}\nReproduce with: SLUICE_SIM_SEED={seed} cargo test -p sluice-metadata --test quorum_sim -- --nocapture"
    );
}

fn record(id: u64) -> MetadataRecord {
    MetadataRecord::Config {
        resource_type: ConfigResourceType::Broker,
        resource_name: String::new(),
        key: format!("k{}", id % 16),
        value: Some(id.to_string()),
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut config = Rng::from_seed(seed);
        let n = if config.chance(300) { 5 } else { 3 };
        let voters: Vec<u64> = (1..=n).collect();
        let snapshot_after_bytes = [0, 64, 256, 4096][config.below(4) as usize];
        let settings: Vec<QuorumSettings> = voters
            .iter()
            .map(|&id| QuorumSettings {
                node_id: id,
                election_tick: 10,
                heartbeat_tick: 2,
                snapshot_after_bytes,
                fixed_election_timeout: true,
            })
            .collect();
        let mut sim = Sim {
            seed,
            rng_net: config.fork(),
            rng_fault: config.fork(),
            rng_time: config.fork(),
            settings,
            voters: voters.clone(),
            members: Vec::new(),
            network: VecDeque::new(),
            cut: Vec::new(),
            step: 0,
            leaders: HashMap::new(),
            committed: BTreeMap::new(),
            images: HashMap::new(),
            acked: BTreeMap::new(),
            next_proposal: 0,
            observer: Observer::new(MetadataImage::empty("sim-cluster", -1)),
            rng_observer: config.fork(),
        };
        for i in 0..voters.len() {
            let disk = MemoryDisk::default();
            let node = sim.boot(i, &disk);
            sim.members.push(Member {
                disk,
                node: Some(node),
                down_for: 0,
                pending: BTreeMap::new(),
            });
        }
        sim
    }

    fn boot(&self, i: usize, disk: &MemoryDisk) -> QuorumNode {
        let store = QuorumStore::new(Box::new(disk.clone()), disk.load(), &self.voters);
        QuorumNode::new(
            &self.settings[i],
            store,
            MetadataImage::empty("sim-cluster", -1),
        )
        .unwrap_or_else(|e| fail(self.seed, "boot", e.to_string()))
    }

    /// One step of simulated time. `faults` enables crashes, partitions and message loss.
    fn run_step(&mut self, faults: bool) {
        self.step += 1;
        let seed = self.seed;
        // Faults.
        if faults {
            if self.rng_fault.chance(4) {
                let i = self.rng_fault.below(self.members.len() as u64) as usize;
                if self.members[i].node.is_some() {
                    self.members[i].node = None;
                    self.members[i].pending.clear();
                    self.members[i].down_for = 5 + self.rng_fault.below(60);
                }
            }
            if self.rng_fault.chance(6) {
                let a = self.voters[self.rng_fault.below(self.voters.len() as u64) as usize];
                let b = self.voters[self.rng_fault.below(self.voters.len() as u64) as usize];
                if a != b {
                    self.cut.push((a, b));
                    if self.rng_fault.chance(500) {
                        self.cut.push((b, a));
                    }
                }
            }
            if !self.cut.is_empty() && self.rng_fault.chance(20) {
                self.cut.clear();
            }
        }
        for i in 0..self.members.len() {
            if self.members[i].node.is_none() {
                let m = &mut self.members[i];
                m.down_for = m.down_for.saturating_sub(1);
                if m.down_for == 0 || !faults {
                    let disk = m.disk.clone();
                    let node = self.boot(i, &disk);
                    self.members[i].node = Some(node);
                }
            }
        }
        // Deliver due messages (in a random order among those due).
        let mut due = Vec::new();
        let mut later = VecDeque::new();
        while let Some(f) = self.network.pop_front() {
            if f.deliver_at <= self.step {
                due.push(f.message);
            } else {
                later.push_back(f);
            }
        }
        self.network = later;
        for k in (1..due.len()).rev() {
            let j = self.rng_net.below(k as u64 + 1) as usize;
            due.swap(k, j);
        }
        for message in due {
            let to = message.to as usize - 1;
            if let Some(node) = self.members[to].node.as_mut() {
                node.step(message);
            }
        }
        // Ticks, jittered per member from the time stream (raft-rs's own randomization is off in the simulation).
        for i in 0..self.members.len() {
            let tick = self.rng_time.chance(850);
            if let Some(node) = self.members[i].node.as_mut() {
                if tick {
                    node.tick();
                }
            }
        }
        // Proposals to whoever believes it leads.
        if self.rng_time.chance(150) {
            for i in 0..self.members.len() {
                let Some(node) = self.members[i].node.as_mut() else {
                    continue;
                };
                if node.is_leader() {
                    self.next_proposal += 1;
                    let id = self.next_proposal;
                    if let Ok((index, term)) = node.propose(&[record(id)]) {
                        self.members[i].pending.insert(index, (term, id));
                    }
                }
            }
        }
        // Ready processing, message sending, invariant checks.
        for i in 0..self.members.len() {
            let Some(node) = self.members[i].node.as_mut() else {
                continue;
            };
            let out = node
                .process_ready()
                .unwrap_or_else(|e| fail(seed, "process_ready", e.to_string()));
            let term = node.term();
            let is_leader = node.is_leader();
            let id = self.voters[i];
            let image_bytes = node.image().encode();
            let applied_index = node.applied_index();
            if is_leader {
                if let Some(other) = self.leaders.insert(term, id) {
                    if other != id {
                        fail(
                            seed,
                            "election_safety",
                            format!("term {term} has leaders {other} and {id}"),
                        );
                    }
                }
            }
            for (index, entry_term) in &out.applied {
                match self.committed.get(index) {
                    Some(t) if t != entry_term => fail(
                        seed,
                        "log_matching_committed",
                        format!("member {id} applied index {index} with term {entry_term}, committed term is {t}"),
                    ),
                    Some(_) => {}
                    None => {
                        self.committed.insert(*index, *entry_term);
                    }
                }
                if let Some((proposed_term, pid)) = self.members[i].pending.remove(index) {
                    if proposed_term == *entry_term {
                        self.acked.insert(*index, (proposed_term, pid));
                    }
                }
            }
            if !out.applied.is_empty() || out.image_changed {
                match self.images.get(&applied_index) {
                    Some(bytes) if *bytes != image_bytes => fail(
                        seed,
                        "state_machine_safety",
                        format!("member {id}'s image after index {applied_index} differs from another member's"),
                    ),
                    Some(_) => {}
                    None => {
                        self.images.insert(applied_index, image_bytes);
                    }
                }
            }
            for (index, (t, pid)) in &self.acked {
                if self.committed.get(index) != Some(t) {
                    fail(
                        seed,
                        "acknowledged_never_lost",
                        format!("proposal {pid} acknowledged at {index}/{t} is not in the committed log"),
                    );
                }
            }
            for message in out.messages {
                let (from, to) = (message.from, message.to);
                if faults && (self.cut.contains(&(from, to)) || self.rng_net.chance(50)) {
                    continue;
                }
                let delay = 1 + self.rng_net.below(if faults { 8 } else { 3 });
                let duplicate = faults && self.rng_net.chance(20);
                if duplicate {
                    self.network.push_back(InFlight {
                        deliver_at: self.step + delay + self.rng_net.below(5),
                        message: message.clone(),
                    });
                }
                self.network.push_back(InFlight {
                    deliver_at: self.step + delay,
                    message,
                });
            }
        }
    }

    /// The observer fetches from a random live voter (sometimes crashing first: it restarts with nothing) and checks
    /// its image against the voters'.
    fn observe(&mut self, faults: bool) {
        if !self.rng_observer.chance(300) {
            return;
        }
        if faults && self.rng_observer.chance(5) {
            self.observer = Observer::new(MetadataImage::empty("sim-cluster", -1));
        }
        let i = self.rng_observer.below(self.members.len() as u64) as usize;
        let max_bytes = [1usize, 64, 1 << 20][self.rng_observer.below(3) as usize];
        let Some(node) = self.members[i].node.as_ref() else {
            return;
        };
        let read = node
            .store()
            .read_committed(self.observer.next_index(), max_bytes);
        if let Err(e) = self.observer.apply(&read) {
            fail(
                self.seed,
                "observer_prefix",
                format!("observer cannot apply what voter {} served: {e}", i + 1),
            );
        }
        let applied = self.observer.applied_index();
        if applied == 0 {
            return;
        }
        if let Some(bytes) = self.images.get(&applied) {
            if *bytes != self.observer.image().encode() {
                fail(
                    self.seed,
                    "observer_prefix",
                    format!("the observer's image after index {applied} differs from the voters'"),
                );
            }
        }
    }

    fn run(mut self, fault_steps: u64) {
        for _ in 0..fault_steps {
            self.run_step(true);
            self.observe(true);
        }
        // Faults stop: every member up, links healed. A leader must emerge and commit a new proposal, and every
        // member must apply everything acknowledged.
        self.cut.clear();
        let before = self.next_proposal;
        let mut quiet_steps = 0;
        loop {
            self.run_step(false);
            self.observe(false);
            quiet_steps += 1;
            let max_acked = self.acked.keys().next_back().copied().unwrap_or(0);
            let all_applied = self.observer.applied_index() >= max_acked
                && self.members.iter().all(|m| {
                    m.node
                        .as_ref()
                        .is_some_and(|n| n.applied_index() >= max_acked)
                });
            let new_commit = self.acked.values().any(|(_, pid)| *pid > before);
            if all_applied && new_commit {
                break;
            }
            if quiet_steps > 3000 {
                let states: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| {
                        format!(
                            "{:?} commit {:?} bounds {:?}",
                            m.node,
                            m.node.as_ref().map(|n| n.commit_index()),
                            m.node.as_ref().map(|n| n.store().bounds())
                        )
                    })
                    .collect();
                eprintln!("members: {states:#?}");
                fail(
                    self.seed,
                    "liveness",
                    format!(
                        "no new commit or not every member caught up 3000 steps after faults stopped (acked {}, max acked index {max_acked})",
                        self.acked.len()
                    ),
                );
            }
        }
        if self.acked.is_empty() {
            fail(self.seed, "progress", "the run committed nothing".into());
        }
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("SLUICE_SIM_SEED") {
        return vec![seed.parse().expect("SLUICE_SIM_SEED is a number")];
    }
    let default = if cfg!(debug_assertions) { 400 } else { 3000 };
    let n: u64 = std::env::var("SLUICE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (0..n).collect()
}

#[test]
fn quorum_keeps_committed_metadata_under_faults() {
    let seeds = seeds();
    for &seed in &seeds {
        Sim::new(seed).run(600);
    }
    eprintln!("{} seeds passed", seeds.len());
}
