//! The controller quorum: the metadata log replicated by Raft (TiKV's raft-rs), KRaft-style.
//!
//! - [`store`]: the durable Raft state (entries, hard state, snapshot of the image) behind a [`store::Disk`] seam.
//! - [`node`]: one member, events in and outputs out, applying committed entries to the [`crate::MetadataImage`].
//! - [`observer`]: a node that is not a voter following the committed log (broker-only nodes).
//!
//! Why raft-rs rather than openraft: it does no I/O and owns no runtime (ticks and messages in, a `Ready` of
//! messages and entries out), so the same member code runs in the broker's driver thread and under a seeded,
//! deterministic simulation of time, network and crashes; it has run TiKV in production for years. openraft 0.9
//! drives its own tokio tasks and storage traits, which a deterministic simulation cannot step. See
//! `docs/metadata.md`.

pub mod node;
pub mod observer;
pub mod store;

pub use node::{ProposeError, QuorumError, QuorumNode, QuorumSettings, ReadyOutput};
pub use raft::eraftpb::{Entry, Message, Snapshot};
pub use store::{CommittedRead, Disk, FileDisk, MemoryDisk, Persisted, QuorumStore, StoreError};

/// Encodes a Raft message for the wire.
pub fn encode_message(message: &Message) -> Vec<u8> {
    use protobuf::Message as _;
    // Encoding a message held in memory cannot fail (proto3, no required fields).
    message.write_to_bytes().unwrap_or_default()
}

/// Decodes a Raft message from the wire; `None` for bytes that are not one.
pub fn decode_message(bytes: &[u8]) -> Option<Message> {
    use protobuf::Message as _;
    Message::parse_from_bytes(bytes).ok()
}

/// Encodes a snapshot or entries for the wire (observers' metadata fetch).
pub fn encode_proto<M: protobuf::Message>(m: &M) -> Vec<u8> {
    m.write_to_bytes().unwrap_or_default()
}

/// Decodes an entry or snapshot from the wire.
pub fn decode_proto<M: protobuf::Message>(bytes: &[u8]) -> Option<M> {
    M::parse_from_bytes(bytes).ok()
}
