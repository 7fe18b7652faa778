//! `QuorumNode::last_leader_contact`: a follower remembers which leader it last heard from and when, and a member
//! that wins the next election still names the previous leader (the controller uses it to keep the previous
//! controller's broker on the session it had instead of giving it a fresh one).

use std::time::Instant;

use sluice_metadata::quorum::{MemoryDisk, Message, QuorumNode, QuorumSettings, QuorumStore};
use sluice_metadata::MetadataImage;

const VOTERS: [u64; 3] = [1, 2, 3];

fn boot(id: u64) -> QuorumNode {
    let disk = MemoryDisk::default();
    let store = QuorumStore::new(Box::new(disk.clone()), disk.load(), &VOTERS);
    let settings = QuorumSettings {
        node_id: id,
        election_tick: 10,
        heartbeat_tick: 2,
        snapshot_after_bytes: 0,
        // Randomized, so that the two survivors do not split every vote.
        fixed_election_timeout: false,
    };
    QuorumNode::new(&settings, store, MetadataImage::empty("contact", -1)).expect("boot")
}

/// One tick of every live member, then every message delivered (to live members) until none is left.
fn step(nodes: &mut [Option<QuorumNode>]) {
    for node in nodes.iter_mut().flatten() {
        node.tick();
    }
    let mut pending: Vec<Message> = Vec::new();
    loop {
        for node in nodes.iter_mut().flatten() {
            pending.extend(node.process_ready().expect("ready").messages);
        }
        if pending.is_empty() {
            return;
        }
        for message in pending.drain(..) {
            if let Some(Some(node)) = nodes.get_mut(message.to as usize - 1) {
                node.step(message);
            }
        }
    }
}

fn leader(nodes: &[Option<QuorumNode>]) -> Option<u64> {
    nodes
        .iter()
        .zip(VOTERS)
        .find(|(n, _)| n.as_ref().is_some_and(|n| n.is_leader()))
        .map(|(_, id)| id)
}

/// Steps until a member leads (at most `ticks` ticks); its id.
fn elect(nodes: &mut [Option<QuorumNode>], ticks: usize) -> u64 {
    for _ in 0..ticks {
        step(nodes);
        if let Some(id) = leader(nodes) {
            return id;
        }
    }
    panic!("no leader within {ticks} ticks");
}

#[test]
fn a_new_leader_names_the_previous_leader_and_when_it_last_heard_from_it() {
    let mut nodes: Vec<Option<QuorumNode>> = VOTERS.iter().map(|&id| Some(boot(id))).collect();
    nodes[0].as_mut().expect("node 1").campaign();
    let first = elect(&mut nodes, 100);
    for _ in 0..10 {
        step(&mut nodes);
    }
    let before_stop = Instant::now();
    for (i, node) in nodes.iter().enumerate() {
        let node = node.as_ref().expect("running");
        if VOTERS[i] == first {
            assert_eq!(
                node.last_leader_contact(),
                None,
                "a leader that never followed heard from no leader"
            );
        } else {
            let (from, _) = node
                .last_leader_contact()
                .expect("a follower heard from the leader");
            assert_eq!(from, first);
        }
    }

    // The leader stops; the others elect one of themselves, which still names the old leader.
    nodes[first as usize - 1] = None;
    let second = elect(&mut nodes, 200);
    assert_ne!(second, first);
    let (from, heard) = nodes[second as usize - 1]
        .as_ref()
        .expect("running")
        .last_leader_contact()
        .expect("the new leader followed the old one");
    assert_eq!(from, first, "the previous leader");
    assert!(
        heard <= before_stop,
        "last heard before the old leader stopped"
    );
}
