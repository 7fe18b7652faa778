//! The transaction index of a segment (Kafka's `TransactionIndex`): the aborted transactions whose ABORT marker
//! lies in that segment, in marker order, so a `read_committed` fetch can tell the consumer which producer's
//! records to drop (the `aborted_transactions` of a FetchResponse).
//!
//! File `<20-digit base offset>.txnindex`, Kafka's on-disk format: 34-byte entries, big-endian: version `i16`
//! (0), producer id `i64`, first offset `i64` (the transaction's first record), last offset `i64` (its ABORT
//! marker), last stable offset `i64` (the LSO right after the transaction completed). The file is created at the
//! first abort in its segment; a segment without one has none.

/// Bytes of one entry.
pub const ABORTED_TXN_BYTES: usize = 34;
/// The entry version written (Kafka's `AbortedTxn.CURRENT_VERSION`).
pub const ABORTED_TXN_VERSION: i16 = 0;

/// One aborted transaction (Kafka's `AbortedTxn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AbortedTxn {
    /// The producer whose transaction was aborted.
    pub producer_id: i64,
    /// Offset of the transaction's first record.
    pub first_offset: i64,
    /// Offset of the transaction's ABORT marker.
    pub last_offset: i64,
    /// The last stable offset right after the transaction completed: the first offset of the oldest transaction
    /// of another producer still open then, or `last_offset + 1` (Kafka's `lastStableOffset(CompletedTxn)`).
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    /// The entry in the `.txnindex` format.
    pub fn encode(&self) -> [u8; ABORTED_TXN_BYTES] {
        let mut out = [0u8; ABORTED_TXN_BYTES];
        out[..2].copy_from_slice(&ABORTED_TXN_VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }

    /// The entry `bytes` holds, and its version.
    fn decode(bytes: &[u8; ABORTED_TXN_BYTES]) -> (i16, AbortedTxn) {
        let i64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            i64::from_be_bytes(b)
        };
        (
            i16::from_be_bytes([bytes[0], bytes[1]]),
            AbortedTxn {
                producer_id: i64_at(2),
                first_offset: i64_at(10),
                last_offset: i64_at(18),
                last_stable_offset: i64_at(26),
            },
        )
    }
}

/// Encodes entries in the `.txnindex` format.
pub fn encode_aborted_txns(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ABORTED_TXN_BYTES);
    for e in entries {
        out.extend_from_slice(&e.encode());
    }
    out
}

/// What a `.txnindex` file holds ([`parse_txn_index`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnIndexContents {
    /// Valid entries; `torn_bytes` trailing bytes (less than one entry, a write cut short) follow them.
    Valid {
        /// The entries, in file order.
        entries: Vec<AbortedTxn>,
        /// Bytes after the last whole entry (cut them).
        torn_bytes: usize,
    },
    /// An entry is not one this version writes or contradicts the segment (Kafka's `sanityCheck` fails): the
    /// index must be rebuilt from the log.
    Corrupt(String),
}

/// Parses and sanity-checks the `.txnindex` file of the segment at `base_offset`: every entry of version 0, its
/// first offset at most its last offset, its last offset at or above the segment base (Kafka's `sanityCheck`)
/// and above the previous entry's (markers are appended in offset order), and its last stable offset at most the
/// marker's next offset (it may be below the first offset: another producer's older transaction was still open).
/// A tail shorter than an entry is reported as torn, not corrupt.
pub fn parse_txn_index(bytes: &[u8], base_offset: i64) -> TxnIndexContents {
    let mut entries = Vec::with_capacity(bytes.len() / ABORTED_TXN_BYTES);
    let mut chunks = bytes.chunks_exact(ABORTED_TXN_BYTES);
    let mut previous_last = i64::MIN;
    for chunk in &mut chunks {
        let Ok(chunk) = <&[u8; ABORTED_TXN_BYTES]>::try_from(chunk) else {
            break;
        };
        let (version, e) = AbortedTxn::decode(chunk);
        let problem = if version != ABORTED_TXN_VERSION {
            Some(format!("entry version {version}"))
        } else if e.last_offset < base_offset {
            Some(format!(
                "last offset {} below the segment base {base_offset}",
                e.last_offset
            ))
        } else if e.first_offset > e.last_offset || e.first_offset < 0 {
            Some(format!(
                "first offset {} after last offset {}",
                e.first_offset, e.last_offset
            ))
        } else if e.last_offset <= previous_last {
            Some(format!(
                "last offset {} not above the previous entry's {previous_last}",
                e.last_offset
            ))
        } else if e.last_stable_offset > e.last_offset.saturating_add(1) {
            Some(format!(
                "last stable offset {} after the marker's next offset",
                e.last_stable_offset
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return TxnIndexContents::Corrupt(format!("entry {}: {problem}", entries.len()));
        }
        previous_last = e.last_offset;
        entries.push(e);
    }
    TxnIndexContents::Valid {
        entries,
        torn_bytes: chunks.remainder().len(),
    }
}

/// Kafka's `TransactionIndex.collectAbortedTxns` over one segment's entries: appends to `out` those with
/// `last_offset >= start_offset` and `first_offset < upper_bound_offset`, and returns true when the search is
/// complete (an entry's last stable offset reaches `upper_bound_offset`: no transaction aborted in a later
/// segment can overlap the range, since it would have been open then and held that last stable offset down).
pub fn collect_aborted_txns(
    entries: &[AbortedTxn],
    start_offset: i64,
    upper_bound_offset: i64,
    out: &mut Vec<AbortedTxn>,
) -> bool {
    for e in entries {
        if e.last_offset >= start_offset && e.first_offset < upper_bound_offset {
            out.push(*e);
        }
        if e.last_stable_offset >= upper_bound_offset {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(producer_id: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn entries_round_trip_in_kafkas_layout() {
        let e = txn(0x0102_0304_0506_0708, 10, 20, 21);
        let bytes = e.encode();
        assert_eq!(bytes.len(), 34);
        assert_eq!(&bytes[..2], &[0, 0], "version 0");
        assert_eq!(&bytes[2..10], &[1, 2, 3, 4, 5, 6, 7, 8], "producer id");
        assert_eq!(&bytes[10..18], &10i64.to_be_bytes(), "first offset");
        assert_eq!(&bytes[18..26], &20i64.to_be_bytes(), "last offset");
        assert_eq!(&bytes[26..34], &21i64.to_be_bytes(), "last stable offset");
        let entries = vec![e, txn(3, 15, 30, 31), txn(-5, 40, 41, 42)];
        assert_eq!(
            parse_txn_index(&encode_aborted_txns(&entries), 10),
            TxnIndexContents::Valid {
                entries: entries.clone(),
                torn_bytes: 0
            }
        );
        assert_eq!(
            parse_txn_index(&[], 0),
            TxnIndexContents::Valid {
                entries: vec![],
                torn_bytes: 0
            }
        );
    }

    #[test]
    fn a_torn_tail_is_reported_and_the_whole_entries_kept() {
        let entries = vec![txn(1, 0, 5, 6), txn(2, 3, 9, 10)];
        let bytes = encode_aborted_txns(&entries);
        for cut in 1..ABORTED_TXN_BYTES {
            let torn = &bytes[..bytes.len() - cut];
            assert_eq!(
                parse_txn_index(torn, 0),
                TxnIndexContents::Valid {
                    entries: entries[..1].to_vec(),
                    torn_bytes: ABORTED_TXN_BYTES - cut
                }
            );
        }
    }

    #[test]
    fn entries_contradicting_the_segment_are_corrupt() {
        let corrupt = |entries: &[AbortedTxn], base: i64| {
            matches!(
                parse_txn_index(&encode_aborted_txns(entries), base),
                TxnIndexContents::Corrupt(_)
            )
        };
        assert!(corrupt(&[txn(1, 0, 5, 6)], 10), "last offset below base");
        assert!(corrupt(&[txn(1, 7, 5, 8)], 0), "first after last");
        assert!(
            corrupt(&[txn(1, 0, 5, 6), txn(2, 0, 5, 6)], 0),
            "not increasing"
        );
        assert!(corrupt(&[txn(1, 4, 5, 7)], 0), "LSO after the marker");
        assert!(
            !corrupt(&[txn(1, 4, 5, 2)], 0),
            "LSO held down by an older transaction"
        );
        let mut versioned = txn(1, 0, 5, 6).encode();
        versioned[1] = 1;
        assert!(matches!(
            parse_txn_index(&versioned, 0),
            TxnIndexContents::Corrupt(_)
        ));
        // Garbage never panics.
        let mut x: u64 = 7;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = parse_txn_index(&bytes, 3);
        }
    }

    #[test]
    fn collection_filters_by_range_and_stops_at_the_last_stable_offset() {
        // Producer 1 aborted 0..=10 while producer 2's transaction (from 4) was open; producer 2 aborted 4..=12.
        let entries = [txn(1, 0, 10, 4), txn(2, 4, 12, 13), txn(3, 20, 25, 26)];
        let mut out = Vec::new();
        assert!(!collect_aborted_txns(&entries, 0, 100, &mut out));
        assert_eq!(out, entries.to_vec());
        out.clear();
        assert!(collect_aborted_txns(&entries, 11, 13, &mut out));
        assert_eq!(out, vec![entries[1]], "ends before 11 / complete at LSO 13");
        out.clear();
        assert!(collect_aborted_txns(&entries, 0, 4, &mut out));
        assert_eq!(out, vec![entries[0]], "first offset 4 is not below 4");
        out.clear();
        assert!(!collect_aborted_txns(&entries, 26, 30, &mut out));
        assert!(out.is_empty());
    }
}
