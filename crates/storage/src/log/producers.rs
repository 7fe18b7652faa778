//! The log's idempotent-producer state (KIP-98): checks before an append, replay after it, and the
//! snapshots it is rebuilt from at open and after truncation.

use sluice_protocol::batch::{BatchHeader, Batches};

use crate::io::read_file;
use crate::producer_state::{idempotence_of, snapshot_file_name, ProducerState, SNAPSHOT_SUFFIX};
use crate::segment::{parse_base_offset, read_header_at};
use crate::{AppendError, StorageError};

use super::append::batch_error;
use super::{Log, State};

impl Log {
    /// Checks every idempotent batch of an append against the producer state (in order, so two batches of
    /// one producer in one call must follow each other). A retry of an appended batch is refused with
    /// [`AppendError::DuplicateSequence`] carrying its original offsets; nothing is written either way.
    pub(super) fn check_producers(
        producers: &ProducerState,
        batches: &[u8],
    ) -> Result<(), AppendError> {
        let mut tentative: Option<ProducerState> = None;
        let mut next = producers.map_end_offset();
        for item in Batches::new(batches) {
            let (_, h) = item.map_err(batch_error)?;
            let Some((pid, epoch, first, last)) = idempotence_of(&h) else {
                continue;
            };
            let state = tentative.as_ref().unwrap_or(producers);
            if let Some(dup) = state.check(pid, epoch, first, last)? {
                return Err(AppendError::DuplicateSequence {
                    producer_id: pid,
                    base_offset: dup.base_offset,
                    last_offset: dup.last_offset,
                    max_timestamp_ms: dup.max_timestamp_ms,
                });
            }
            // Later batches of this call are checked against the state as if this one were appended.
            let t = tentative.get_or_insert_with(|| producers.clone());
            let count = i64::from(h.last_offset_delta()) + 1;
            t.update(
                pid,
                epoch,
                crate::producer_state::ProducerBatch {
                    first_sequence: first,
                    last_sequence: last,
                    base_offset: next,
                    last_offset: next + count - 1,
                    max_timestamp_ms: h.max_timestamp(),
                },
            );
            next += count;
        }
        Ok(())
    }

    /// Applies just-written batches (offsets assigned) to the producer state.
    pub(super) fn replay_producers(st: &mut State, batches: &[u8]) {
        for (_, h) in Batches::new(batches).map_while(Result::ok) {
            st.producers.replay(&h);
        }
        let leo = st.log_end_offset;
        st.producers.advance_to(leo);
    }

    /// Offsets of the producer-state snapshots in the partition directory, ascending.
    pub(super) fn snapshot_offsets(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .io
            .list_dir(&self.dir())
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.strip_suffix(SNAPSHOT_SUFFIX).and_then(parse_base_offset))
            .collect();
        v.sort_unstable();
        v
    }

    /// Removes the snapshots whose offset matches `doomed` (best effort: a stale snapshot is ignored or
    /// replaced later).
    pub(super) fn delete_snapshots(&self, doomed: impl Fn(i64) -> bool) {
        for o in self.snapshot_offsets().into_iter().filter(|o| doomed(*o)) {
            let path = self.dir().join(snapshot_file_name(o));
            if let Err(e) = self.io.remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove producer snapshot");
                }
            }
        }
    }

    /// Producer state of every batch below `upto` (Kafka's `loadProducerState`): the latest valid snapshot
    /// at or below `upto` (snapshots above it describe a cut tail and are removed), then the batch headers
    /// from there to `upto`. Without a snapshot the whole log is replayed. Records are never decoded.
    pub(super) fn rebuild_producer_state(
        &self,
        st: &State,
        upto: i64,
    ) -> Result<ProducerState, StorageError> {
        self.delete_snapshots(|o| o > upto);
        let first_base = *st
            .segments
            .keys()
            .next()
            .expect("invariant: at least one segment");
        let mut state = None;
        for o in self.snapshot_offsets().into_iter().rev() {
            let path = self.dir().join(snapshot_file_name(o));
            match read_file(&*self.io, &path)
                .ok()
                .and_then(|b| ProducerState::decode(&b, o))
            {
                Some(s) => {
                    state = Some(s);
                    break;
                }
                None => {
                    tracing::warn!(path = %path.display(), "invalid producer snapshot; ignoring it");
                    let _ = self.io.remove_file(&path);
                }
            }
        }
        let mut state = state.unwrap_or_else(|| ProducerState::empty_at(first_base));
        let from = state.map_end_offset().max(first_base);
        for seg in st.segments.values() {
            if seg.next_offset <= from || seg.base_offset >= upto || seg.size == 0 {
                continue;
            }
            let (file, mut pos) = self.locate(seg, from.max(seg.base_offset))?;
            while pos < seg.size {
                let Some(h) =
                    read_header_at(&*file, pos).map_err(|e| self.io_err(&self.dir(), e))?
                else {
                    break;
                };
                let h = BatchHeader::new(&h)
                    .map_err(|e| StorageError::Corrupt(format!("{}: {e}", self.dir().display())))?;
                if h.base_offset() >= upto {
                    break;
                }
                if h.last_offset() >= from {
                    state.replay(&h);
                }
                pos += h.size() as u64;
            }
        }
        state.advance_to(upto);
        Ok(state)
    }

    /// The producer state (idempotent producers seen below the log end offset).
    pub fn producer_state(&self) -> ProducerState {
        self.state.lock().producers.clone()
    }

    /// Forgets producers whose last batch is older than `expiration_ms` (`producer.id.expiration.ms`);
    /// retention passes do this with the 1-day default. Returns how many were removed.
    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.state
            .lock()
            .producers
            .remove_expired(now_ms, expiration_ms)
    }
}
