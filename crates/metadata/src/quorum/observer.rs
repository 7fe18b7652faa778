//! Observers of the metadata log: nodes that are not voters (`process.roles=broker`) follow the committed log
//! and publish images from it, as Kafka's brokers follow `__cluster_metadata` (KIP-595 observers: they fetch,
//! they never vote and never count towards a commit).
//!
//! An observer fetches from a voter (the leader when it knows it) with a [`FetchRequest`] naming the next index
//! it needs; the voter answers the committed entries from there ([`QuorumStore::read_committed`]), or its snapshot
//! when that index is below its log start, and the leader it knows. [`Observer::apply`] applies an answer through
//! the same code voters apply with, so an observer's image at index `i` is the voters' image at `i`.
//!
//! Observers keep nothing on disk: after a restart they fetch the snapshot and the log again before they publish
//! anything (the broker waits for that before it reconciles its partition logs with the image).
//!
//! [`QuorumStore::read_committed`]: crate::quorum::QuorumStore::read_committed

use std::sync::Arc;

use bytes::{Buf, BufMut};
use raft::eraftpb::{Entry, Snapshot};

use crate::image::MetadataImage;
use crate::quorum::node::{apply_entries, decode_snapshot_image, QuorumError};
use crate::quorum::{decode_proto, encode_proto, CommittedRead};

/// What an observer asks a voter for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The cluster the observer was formatted for; a voter of another cluster answers INCONSISTENT_CLUSTER_ID.
    pub cluster_id: String,
    /// The observer's node id (reported by DescribeQuorum).
    pub node_id: i32,
    /// The first index the observer has not applied.
    pub from: u64,
    /// A soft bound on the entry bytes in the answer (at least one entry is sent).
    pub max_bytes: u32,
    /// How long the voter may hold the request when nothing new is committed (long polling).
    pub max_wait_ms: u32,
}

/// A voter's answer to a [`FetchRequest`].
#[derive(Debug, Clone)]
pub struct FetchResponse {
    /// 0, or INCONSISTENT_CLUSTER_ID, or NOT_CONTROLLER when the voter cannot serve (it stopped).
    pub error_code: i16,
    /// The leader the voter knows (-1 when an election runs).
    pub leader_id: i32,
    /// The voter's commit index (the metadata log's high watermark).
    pub commit: u64,
    /// Entries from the requested index, or a snapshot to install first.
    pub read: CommittedRead,
}

/// Kafka's INCONSISTENT_CLUSTER_ID.
pub const INCONSISTENT_CLUSTER_ID: i16 = crate::error::code::INCONSISTENT_CLUSTER_ID;

/// Why bytes are not a fetch message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed observer fetch message: {0}")]
pub struct WireError(&'static str);

fn take_bytes<'a>(buf: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], WireError> {
    if buf.remaining() < 4 {
        return Err(WireError(what));
    }
    let len = buf.get_u32() as usize;
    if buf.remaining() < len {
        return Err(WireError(what));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(head)
}

impl FetchRequest {
    /// `[cluster id: u32 length + UTF-8][node id i32][from u64][max bytes u32][max wait ms u32]`.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u32(self.cluster_id.len() as u32);
        out.put_slice(self.cluster_id.as_bytes());
        out.put_i32(self.node_id);
        out.put_u64(self.from);
        out.put_u32(self.max_bytes);
        out.put_u32(self.max_wait_ms);
    }

    /// The inverse of [`FetchRequest::encode`].
    pub fn decode(mut buf: &[u8]) -> Result<FetchRequest, WireError> {
        let cluster_id = std::str::from_utf8(take_bytes(&mut buf, "cluster id")?)
            .map_err(|_| WireError("cluster id is not UTF-8"))?
            .to_owned();
        if buf.remaining() != 4 + 8 + 4 + 4 {
            return Err(WireError("request fields"));
        }
        Ok(FetchRequest {
            cluster_id,
            node_id: buf.get_i32(),
            from: buf.get_u64(),
            max_bytes: buf.get_u32(),
            max_wait_ms: buf.get_u32(),
        })
    }
}

const READ_ENTRIES: u8 = 0;
const READ_SNAPSHOT: u8 = 1;

impl FetchResponse {
    /// `[error i16][leader i32][commit u64][kind u8]` then, for entries, `[count u32]` and each entry as
    /// `[u32 length][Entry protobuf]`; for a snapshot, `[u32 length][Snapshot protobuf]`.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_i16(self.error_code);
        out.put_i32(self.leader_id);
        out.put_u64(self.commit);
        match &self.read {
            CommittedRead::Entries(entries) => {
                out.put_u8(READ_ENTRIES);
                out.put_u32(entries.len() as u32);
                for e in entries {
                    let bytes = encode_proto(e);
                    out.put_u32(bytes.len() as u32);
                    out.put_slice(&bytes);
                }
            }
            CommittedRead::Snapshot(snapshot) => {
                out.put_u8(READ_SNAPSHOT);
                let bytes = encode_proto(snapshot);
                out.put_u32(bytes.len() as u32);
                out.put_slice(&bytes);
            }
        }
    }

    /// The inverse of [`FetchResponse::encode`].
    pub fn decode(mut buf: &[u8]) -> Result<FetchResponse, WireError> {
        if buf.remaining() < 2 + 4 + 8 + 1 {
            return Err(WireError("response header"));
        }
        let error_code = buf.get_i16();
        let leader_id = buf.get_i32();
        let commit = buf.get_u64();
        let read = match buf.get_u8() {
            READ_ENTRIES => {
                if buf.remaining() < 4 {
                    return Err(WireError("entry count"));
                }
                let count = buf.get_u32() as usize;
                // Every entry takes at least its 4-byte length: a count beyond that is a lie.
                if count > buf.remaining() / 4 {
                    return Err(WireError("entry count"));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let bytes = take_bytes(&mut buf, "entry")?;
                    entries.push(decode_proto::<Entry>(bytes).ok_or(WireError("entry protobuf"))?);
                }
                CommittedRead::Entries(entries)
            }
            READ_SNAPSHOT => {
                let bytes = take_bytes(&mut buf, "snapshot")?;
                CommittedRead::Snapshot(
                    decode_proto::<Snapshot>(bytes).ok_or(WireError("snapshot protobuf"))?,
                )
            }
            _ => return Err(WireError("read kind")),
        };
        if buf.has_remaining() {
            return Err(WireError("trailing bytes"));
        }
        Ok(FetchResponse {
            error_code,
            leader_id,
            commit,
            read,
        })
    }
}

/// What an observer has applied.
#[derive(Debug)]
pub struct Observer {
    image: Arc<MetadataImage>,
    applied: u64,
}

impl Observer {
    /// An observer that has applied nothing; `empty_image` carries this node's cluster id.
    pub fn new(empty_image: MetadataImage) -> Observer {
        Observer {
            image: Arc::new(empty_image),
            applied: 0,
        }
    }

    /// The next index to fetch.
    pub fn next_index(&self) -> u64 {
        self.applied + 1
    }

    /// The index of the last applied entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The image as of the last applied entry.
    pub fn image(&self) -> &Arc<MetadataImage> {
        &self.image
    }

    /// Applies a voter's answer; returns true when the image changed. Entries must continue from
    /// [`Observer::next_index`] (a gap is an error: the voter answered another request); a snapshot at or below the
    /// applied index is ignored; a snapshot of another cluster is refused.
    pub fn apply(&mut self, read: &CommittedRead) -> Result<bool, QuorumError> {
        match read {
            CommittedRead::Snapshot(snapshot) => {
                let index = snapshot.get_metadata().index;
                if index <= self.applied {
                    return Ok(false);
                }
                let image = decode_snapshot_image(snapshot)?;
                if image.cluster_id != self.image.cluster_id {
                    return Err(QuorumError::Snapshot {
                        index,
                        reason: format!(
                            "it belongs to cluster {}, this node to cluster {}",
                            image.cluster_id, self.image.cluster_id
                        ),
                    });
                }
                self.image = Arc::new(image);
                self.applied = index;
                Ok(true)
            }
            CommittedRead::Entries(entries) => {
                let fresh: Vec<&Entry> =
                    entries.iter().filter(|e| e.index > self.applied).collect();
                if let Some(first) = fresh.first() {
                    if first.index != self.applied + 1 {
                        return Err(QuorumError::Apply {
                            index: first.index,
                            reason: format!("expected entry {} next", self.applied + 1),
                        });
                    }
                    if fresh.windows(2).any(|w| w[1].index != w[0].index + 1) {
                        return Err(QuorumError::Apply {
                            index: first.index,
                            reason: "entries are not consecutive".into(),
                        });
                    }
                }
                match apply_entries(&self.image, &mut self.applied, entries, |_, _| {})? {
                    Some(image) => {
                        self.image = Arc::new(image);
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
        }
    }
}

/// True for the codes an observer should not retry at once against the same voter.
pub fn is_fatal(error_code: i16) -> bool {
    error_code == INCONSISTENT_CLUSTER_ID
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::{MemoryDisk, Persisted, QuorumStore};
    use crate::record::{self, MetadataRecord};

    fn entry(index: u64, records: &[MetadataRecord]) -> Entry {
        Entry {
            index,
            term: 1,
            data: record::encode_batch(records).into(),
            ..Default::default()
        }
    }

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id: crate::Uuid::new_v4(),
            internal: false,
        }
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let req = FetchRequest {
            cluster_id: "abc".into(),
            node_id: 7,
            from: 42,
            max_bytes: 1 << 20,
            max_wait_ms: 500,
        };
        let mut buf = Vec::new();
        req.encode(&mut buf);
        assert_eq!(FetchRequest::decode(&buf).unwrap(), req);
        assert!(FetchRequest::decode(&buf[..buf.len() - 1]).is_err());

        let resp = FetchResponse {
            error_code: 0,
            leader_id: 2,
            commit: 9,
            read: CommittedRead::Entries(vec![entry(1, &[topic("a")]), entry(2, &[])]),
        };
        let mut buf = Vec::new();
        resp.encode(&mut buf);
        let back = FetchResponse::decode(&buf).unwrap();
        assert_eq!((back.leader_id, back.commit), (2, 9));
        match back.read {
            CommittedRead::Entries(e) => assert_eq!(e.len(), 2),
            other => panic!("{other:?}"),
        }
        // A count that the bytes cannot hold is refused before allocating.
        let mut lie = buf[..15].to_vec();
        lie.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(FetchResponse::decode(&lie).is_err());
        for cut in 0..buf.len() {
            assert!(FetchResponse::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn applies_entries_and_snapshots_as_voters_do() {
        let mut observer = Observer::new(MetadataImage::empty("c1", -1));
        let read = CommittedRead::Entries(vec![entry(1, &[topic("a")]), entry(2, &[])]);
        assert!(observer.apply(&read).unwrap());
        assert_eq!(observer.next_index(), 3);
        assert!(observer.image().topic("a").is_some());
        // The same answer again (a retried fetch) changes nothing.
        assert!(!observer.apply(&read).unwrap());
        // A gap is refused.
        let gap = CommittedRead::Entries(vec![entry(5, &[topic("b")])]);
        assert!(observer.apply(&gap).is_err());

        // A snapshot from a voter's store, past what was applied, replaces the image.
        let store = QuorumStore::new(Box::new(MemoryDisk::default()), Persisted::default(), &[1]);
        store
            .append(&(1..=10).map(|i| entry(i, &[])).collect::<Vec<_>>())
            .unwrap();
        store.set_commit(10);
        let mut image = (**observer.image()).clone();
        image.offset = 10;
        store.create_snapshot(10, image.encode()).unwrap();
        let snapshot = CommittedRead::Snapshot(store.snapshot_data());
        assert!(observer.apply(&snapshot).unwrap());
        assert_eq!(observer.next_index(), 11);

        // Another cluster's snapshot is refused.
        let mut other = Observer::new(MetadataImage::empty("c2", -1));
        assert!(other.apply(&snapshot).is_err());
    }
}
