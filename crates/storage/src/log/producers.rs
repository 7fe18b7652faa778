//! The log's idempotent and transactional producer state (KIP-98): checks before an append, replay after it
//! (which completes transactions), and the snapshots it is rebuilt from at open and after truncation.

use std::collections::HashMap;

use sluice_protocol::batch::{BatchHeader, Batches};

use crate::io::read_file;
use crate::producer_state::{
    check_epoch, check_sequence, idempotence_of, snapshot_file_name, tracks_producer, CompletedTxn,
    ProducerEntry, ProducerState, TxnChange, SNAPSHOT_SUFFIX,
};
use crate::records::end_txn_marker;
use crate::segment::{parse_base_offset, read_header_at};
use crate::txn_index::AbortedTxn;
use crate::{AppendError, StorageError};

use super::append::batch_error;
use super::{AppendOrigin, Log, State};

/// What a producer-state rebuild found ([`Log::rebuild_producer_state`]).
pub(super) struct Rebuilt {
    /// The state of every batch below the rebuild's end.
    pub(super) state: ProducerState,
    /// Transactions the replayed markers completed, in log order.
    pub(super) completed: Vec<CompletedTxn>,
    /// The aborted ones as transaction index entries (last stable offset as of each marker).
    pub(super) aborted: Vec<AbortedTxn>,
}

impl Log {
    /// Checks every batch with a producer id of an append against the producer state, in order (two batches of
    /// one producer in one call must follow each other), as Kafka's `analyzeAndValidateProducerState` with
    /// `ProducerAppendInfo`: an idempotent batch's epoch and sequence (a retry of an appended batch is refused with
    /// [`AppendError::DuplicateSequence`] carrying its original offsets); a transaction marker's or an unsequenced
    /// transactional batch's epoch (fencing: an older epoch is refused, a newer one accepted); a transaction marker
    /// must be a readable COMMIT or ABORT; a non-transactional batch is refused while its producer's transaction is
    /// open. From [`AppendOrigin::Client`], batches with a producer id but no sequence are refused (Kafka's
    /// `LogValidator`). Nothing is written on error.
    pub(super) fn check_producers(
        producers: &ProducerState,
        batches: &[u8],
        origin: AppendOrigin,
    ) -> Result<(), AppendError> {
        // Entries as if the earlier batches of this call were appended, for the producers they touched.
        let mut touched: HashMap<i64, ProducerEntry> = HashMap::new();
        let mut next = producers.map_end_offset();
        for item in Batches::new(batches) {
            let (_, h) = item.map_err(batch_error)?;
            let count = i64::from(h.last_offset_delta()) + 1;
            let base_offset = next;
            next += count;
            let pid = h.producer_id();
            if pid < 0 {
                if h.is_transactional() || h.is_control() {
                    return Err(AppendError::InvalidRecord(
                        "a transactional or control batch needs a producer id".into(),
                    ));
                }
                continue;
            }
            if origin == AppendOrigin::Client && h.base_sequence() < 0 {
                return Err(AppendError::InvalidRecord(format!(
                    "invalid sequence number {} in a batch of producer {pid}",
                    h.base_sequence()
                )));
            }
            if !tracks_producer(&h) {
                continue;
            }
            let current = touched.get(&pid).or_else(|| producers.get(pid));
            let epoch = h.producer_epoch();
            let marker = if h.is_control() {
                let marker = end_txn_marker(h.bytes()).ok_or_else(|| {
                    AppendError::InvalidRecord(format!(
                        "control batch of producer {pid} is not a COMMIT or ABORT marker"
                    ))
                })?;
                check_epoch(current, pid, epoch)?;
                Some(marker)
            } else {
                match idempotence_of(&h) {
                    Some((_, _, first, last)) => {
                        if let Some(dup) = check_sequence(current, pid, epoch, first, last)? {
                            return Err(AppendError::DuplicateSequence {
                                producer_id: pid,
                                base_offset: dup.base_offset,
                                last_offset: dup.last_offset,
                                max_timestamp_ms: dup.max_timestamp_ms,
                            });
                        }
                    }
                    None => check_epoch(current, pid, epoch)?,
                }
                if !h.is_transactional()
                    && current.is_some_and(|e| e.current_txn_first_offset.is_some())
                {
                    return Err(AppendError::InvalidRecord(format!(
                        "expected a transactional batch from producer {pid}: its transaction is open"
                    )));
                }
                None
            };
            let mut entry = current.cloned().unwrap_or_else(|| ProducerEntry {
                epoch,
                batches: Default::default(),
                last_timestamp_ms: h.max_timestamp(),
                coordinator_epoch: -1,
                current_txn_first_offset: None,
            });
            let _: TxnChange = entry.apply(&h, base_offset, marker);
            touched.insert(pid, entry);
        }
        Ok(())
    }

    /// Applies just-written batches (offsets assigned) to the producer state and returns the transaction
    /// index entries of the transactions they aborted (each with the last stable offset right after it
    /// completed, Kafka's `lastStableOffset(CompletedTxn)`); completed transactions stay unstable until the high
    /// watermark passes their marker.
    pub(super) fn replay_producers(st: &mut State, batches: &[u8]) -> Vec<AbortedTxn> {
        let mut completed = Vec::new();
        let mut last_stable_offsets = Vec::new();
        for (_, h) in Batches::new(batches).map_while(Result::ok) {
            let marker = if h.is_control() {
                end_txn_marker(h.bytes())
            } else {
                None
            };
            if let Some(c) = st.producers.apply(&h, marker) {
                last_stable_offsets.push(
                    st.producers
                        .first_ongoing_offset()
                        .unwrap_or(c.last_offset + 1),
                );
                completed.push(c);
            }
        }
        let leo = st.log_end_offset;
        st.producers.advance_to(leo);
        Self::note_completed_txns(st, &completed);
        Self::aborted_entries(&completed, &last_stable_offsets)
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
    /// at or below `upto` and `max_snapshot` (snapshots above `upto` describe a cut tail and are removed), then
    /// the batches from there to `upto`: headers only, but the whole batch for a control batch (its marker).
    /// Without a snapshot the whole log is replayed. Data records are never decoded.
    pub(super) fn rebuild_producer_state(
        &self,
        st: &State,
        upto: i64,
        max_snapshot: i64,
    ) -> Result<Rebuilt, StorageError> {
        self.delete_snapshots(|o| o > upto);
        let first_base = *st
            .segments
            .keys()
            .next()
            .expect("invariant: at least one segment");
        let mut state = None;
        for o in self
            .snapshot_offsets()
            .into_iter()
            .rev()
            .filter(|o| *o <= max_snapshot)
        {
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
        let mut rebuilt = Rebuilt {
            state: state.unwrap_or_else(|| ProducerState::empty_at(first_base)),
            completed: Vec::new(),
            aborted: Vec::new(),
        };
        let from = rebuilt.state.map_end_offset().max(first_base);
        let mut whole = Vec::new();
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
                    let marker = if h.is_control() && h.producer_id() >= 0 {
                        whole.clear();
                        file.read_at_into(&mut whole, h.size(), pos)
                            .map_err(|e| self.io_err(&self.dir(), e))?;
                        end_txn_marker(&whole)
                    } else {
                        None
                    };
                    if let Some(c) = rebuilt.state.apply(&h, marker) {
                        if c.aborted {
                            rebuilt.aborted.push(AbortedTxn {
                                producer_id: c.producer_id,
                                first_offset: c.first_offset,
                                last_offset: c.last_offset,
                                last_stable_offset: rebuilt
                                    .state
                                    .first_ongoing_offset()
                                    .unwrap_or(c.last_offset + 1),
                            });
                        }
                        rebuilt.completed.push(c);
                    }
                }
                pos += h.size() as u64;
            }
        }
        rebuilt.state.advance_to(upto);
        Ok(rebuilt)
    }

    /// The producer state (idempotent and transactional producers seen below the log end offset).
    pub fn producer_state(&self) -> ProducerState {
        self.state.lock().producers.clone()
    }

    /// Forgets producers whose last batch is older than `expiration_ms` (`producer.id.expiration.ms`), never one
    /// with an open transaction; retention passes do this with the 1-day default. Returns how many were removed.
    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.state
            .lock()
            .producers
            .remove_expired(now_ms, expiration_ms)
    }
}
