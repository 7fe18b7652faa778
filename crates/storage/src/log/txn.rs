//! Transactions in the log (KIP-98, Kafka's `UnifiedLog`/`LogSegment` transaction parts): the last stable
//! offset, the transaction index of each segment (aborted transactions, `.txnindex`), and the aborted
//! transactions a `read_committed` fetch returns.
//!
//! A transactional batch opens its producer's transaction (its first offset is `current_txn_first_offset` in the
//! producer state); a COMMIT or ABORT marker (control batch) ends it. The last stable offset is the first offset
//! of the oldest transaction still open, or completed with its marker not yet below the high watermark, capped by
//! the high watermark. An ABORT appends `AbortedTxn { producer_id, first_offset, last_offset = marker offset,
//! last_stable_offset }` to the transaction index of the segment that receives the marker.

use std::sync::Arc;

use crate::io::{read_file, IoFile};
use crate::producer_state::{CompletedTxn, OngoingTxn};
use crate::segment::{segment_path, TXN_INDEX_SUFFIX};
use crate::txn_index::{
    collect_aborted_txns, encode_aborted_txns, parse_txn_index, AbortedTxn, TxnIndexContents,
    ABORTED_TXN_BYTES,
};
use crate::StorageError;

use super::{Log, State};

impl Log {
    /// The last stable offset (Kafka's `UnifiedLog.lastStableOffset`): the first unstable offset (the oldest
    /// open transaction's first offset, or that of a completed transaction whose marker is not yet below the high
    /// watermark), at least the log start offset, when it is below the high watermark; the high watermark
    /// otherwise. A `read_committed` consumer reads up to it.
    pub fn last_stable_offset(&self) -> i64 {
        Self::last_stable_offset_locked(&self.state.lock())
    }

    pub(super) fn last_stable_offset_locked(st: &State) -> i64 {
        let ongoing = st.producers.first_ongoing_offset();
        let unreplicated = st.unreplicated_txns.keys().next().copied();
        let first_unstable = match (ongoing, unreplicated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match first_unstable {
            Some(offset) if offset < st.high_watermark => offset.max(st.log_start_offset),
            _ => st.high_watermark,
        }
    }

    /// Forgets completed transactions whose marker is below the high watermark (Kafka's
    /// `onHighWatermarkUpdated`): they no longer hold the last stable offset back.
    pub(super) fn prune_unreplicated_txns(st: &mut State) {
        let hw = st.high_watermark;
        st.unreplicated_txns.retain(|_, marker| *marker >= hw);
    }

    /// Records completed transactions (Kafka's `completeTxn`): each stays unstable until the high watermark
    /// passes its marker.
    pub(super) fn note_completed_txns(st: &mut State, completed: &[CompletedTxn]) {
        for c in completed {
            st.unreplicated_txns.insert(c.first_offset, c.last_offset);
        }
        Self::prune_unreplicated_txns(st);
    }

    /// The transactions open on this partition, by first offset (DescribeProducers, `kafka-transactions.sh
    /// find-hanging`).
    pub fn ongoing_transactions(&self) -> Vec<OngoingTxn> {
        self.state.lock().producers.ongoing_transactions()
    }

    /// Every aborted transaction with `last_offset >= start_offset` and `first_offset < upper_bound_offset`, in
    /// index order, from the transaction indexes of the segment holding `start_offset` and the segments after it
    /// (Kafka's `collectAbortedTransactions`: a marker may sit in a later segment than the transaction's
    /// records). The search stops at the first entry whose last stable offset reaches `upper_bound_offset`. The
    /// fetch path calls it with the fetch offset and the end of the data it returns.
    pub fn aborted_transactions(
        &self,
        start_offset: i64,
        upper_bound_offset: i64,
    ) -> Result<Vec<AbortedTxn>, StorageError> {
        let st = self.state.lock();
        self.check_usable(&st)?;
        let mut out = Vec::new();
        if upper_bound_offset <= start_offset {
            return Ok(out);
        }
        let from = st
            .segments
            .range(..=start_offset)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        for seg in st.segments.range(from..).map(|(_, s)| s) {
            if !seg.has_txn_index {
                continue;
            }
            let complete = match &seg.active {
                Some(files) => {
                    collect_aborted_txns(&files.aborted, start_offset, upper_bound_offset, &mut out)
                }
                None => collect_aborted_txns(
                    &self.loaded(seg)?.aborted_txns,
                    start_offset,
                    upper_bound_offset,
                    &mut out,
                ),
            };
            if complete {
                break;
            }
        }
        Ok(out)
    }

    /// Entries for the transaction index from transactions completed by an append, in marker order: each ABORT
    /// with the last stable offset right after it completed (`last_stable_offsets`, taken as each marker was
    /// applied).
    pub(super) fn aborted_entries(
        completed: &[CompletedTxn],
        last_stable_offsets: &[i64],
    ) -> Vec<AbortedTxn> {
        completed
            .iter()
            .zip(last_stable_offsets)
            .filter(|(c, _)| c.aborted)
            .map(|(c, lso)| AbortedTxn {
                producer_id: c.producer_id,
                first_offset: c.first_offset,
                last_offset: c.last_offset,
                last_stable_offset: *lso,
            })
            .collect()
    }

    /// Appends `entries` to the transaction index of the active segment (Kafka's `LogSegment.updateTxnIndex`),
    /// creating the file at its first entry. Readers see them at once; a failed write takes the log directory
    /// offline whatever the error (even ENOSPC), since the data they describe is already in the log: recovery
    /// rebuilds the index from the log at the next open.
    pub(super) fn append_txn_index(
        &self,
        st: &mut State,
        entries: &[AbortedTxn],
    ) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let dir = self.dir();
        let active = st.active();
        let base = active.base_offset;
        active.has_txn_index = true;
        let files = active
            .active
            .as_mut()
            .expect("invariant: the last segment is active");
        let position = (files.aborted.len() * ABORTED_TXN_BYTES) as u64;
        files.aborted.extend_from_slice(entries);
        files.txn_index_dirty = true;
        let path = segment_path(&dir, base, TXN_INDEX_SUFFIX);
        let written = match &files.txn_index {
            Some(f) => Ok(f.clone()),
            None => self.io.open(&path, true),
        }
        .and_then(|f| {
            f.write_all_at(&encode_aborted_txns(entries), position)?;
            Ok(f)
        });
        match written {
            Ok(f) => {
                files.txn_index = Some(f);
                Ok(())
            }
            Err(e) => {
                let err = self.io_err(&path, e);
                self.health().set_offline();
                Err(err)
            }
        }
    }

    /// Writes the whole transaction index of segment `base` (the file is replaced; removed when `entries` is
    /// empty). Returns the opened file when it has entries.
    pub(super) fn write_txn_index(
        &self,
        base: i64,
        entries: &[AbortedTxn],
    ) -> Result<Option<Arc<dyn IoFile>>, StorageError> {
        let path = segment_path(&self.dir(), base, TXN_INDEX_SUFFIX);
        if entries.is_empty() {
            return match self.io.remove_file(&path) {
                Ok(()) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.io_err(&path, e)),
            };
        }
        let file = self
            .io
            .open(&path, true)
            .and_then(|f| {
                f.set_len(0)?;
                f.write_all_at(&encode_aborted_txns(entries), 0)?;
                Ok(f)
            })
            .map_err(|e| self.io_err(&path, e))?;
        Ok(Some(file))
    }

    /// The entries of segment `base`'s transaction index as stored (whole entries only; none when the file is
    /// missing). Used for inactive segments, whose index was checked at open.
    pub(super) fn read_txn_index(&self, base: i64) -> Result<Vec<AbortedTxn>, StorageError> {
        let path = segment_path(&self.dir(), base, TXN_INDEX_SUFFIX);
        if !self.io.exists(&path) {
            return Ok(Vec::new());
        }
        let bytes = match read_file(&*self.io, &path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io_err(&path, e)),
        };
        match parse_txn_index(&bytes, base) {
            TxnIndexContents::Valid { entries, .. } => Ok(entries),
            TxnIndexContents::Corrupt(reason) => Err(StorageError::Corrupt(format!(
                "{}: {reason}",
                path.display()
            ))),
        }
    }
}
