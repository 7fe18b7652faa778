//! Sparse offset index and time index of one segment, held in memory and stored in Kafka's file formats.
//!
//! `.index`: 8-byte entries `(relative offset: u32, position: u32)`, big-endian: the last offset of a
//! batch (relative to the segment base offset) and the file position where that batch starts.
//! `.timeindex`: 12-byte entries `(timestamp: i64, relative offset: u32)`: the largest timestamp seen so far
//! in the segment and the offset of the batch holding it. Both are strictly increasing.

/// Size of one offset index entry.
pub const OFFSET_ENTRY_BYTES: u64 = 8;
/// Size of one time index entry.
pub const TIME_ENTRY_BYTES: u64 = 12;

/// One offset index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Last offset of the batch, relative to the segment base offset.
    pub relative_offset: u32,
    /// File position where that batch starts.
    pub position: u32,
}

/// One time index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    /// Largest timestamp so far in the segment.
    pub timestamp_ms: i64,
    /// Relative offset of the batch with that timestamp.
    pub relative_offset: u32,
}

/// Encodes offset entries in the `.index` format.
pub fn encode_offset_entries(entries: &[OffsetEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * OFFSET_ENTRY_BYTES as usize);
    for e in entries {
        out.extend_from_slice(&e.relative_offset.to_be_bytes());
        out.extend_from_slice(&e.position.to_be_bytes());
    }
    out
}

/// Encodes time entries in the `.timeindex` format.
pub fn encode_time_entries(entries: &[TimeEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * TIME_ENTRY_BYTES as usize);
    for e in entries {
        out.extend_from_slice(&e.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&e.relative_offset.to_be_bytes());
    }
    out
}

/// Parses and sanity-checks an `.index` file against the segment's size in bytes and its offset span
/// (`max_relative_offset` = last offset - base offset). `None` when the file must be rebuilt.
pub fn parse_offset_index(
    bytes: &[u8],
    log_size: u64,
    max_relative_offset: i64,
) -> Option<Vec<OffsetEntry>> {
    if !(bytes.len() as u64).is_multiple_of(OFFSET_ENTRY_BYTES) {
        return None;
    }
    let mut entries = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_BYTES as usize);
    for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES as usize) {
        let relative_offset = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        let e = OffsetEntry {
            relative_offset,
            position,
        };
        if let Some(prev) = entries.last() {
            let prev: &OffsetEntry = prev;
            if e.relative_offset <= prev.relative_offset || e.position <= prev.position {
                return None;
            }
        }
        if u64::from(e.position) >= log_size || i64::from(e.relative_offset) > max_relative_offset {
            return None;
        }
        entries.push(e);
    }
    Some(entries)
}

/// Parses and sanity-checks a `.timeindex` file. `None` when the file must be rebuilt.
pub fn parse_time_index(bytes: &[u8], max_relative_offset: i64) -> Option<Vec<TimeEntry>> {
    if !(bytes.len() as u64).is_multiple_of(TIME_ENTRY_BYTES) {
        return None;
    }
    let mut entries: Vec<TimeEntry> = Vec::with_capacity(bytes.len() / TIME_ENTRY_BYTES as usize);
    for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES as usize) {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&chunk[..8]);
        let e = TimeEntry {
            timestamp_ms: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
        };
        if let Some(prev) = entries.last() {
            if e.timestamp_ms <= prev.timestamp_ms || e.relative_offset < prev.relative_offset {
                return None;
            }
        }
        if i64::from(e.relative_offset) > max_relative_offset {
            return None;
        }
        entries.push(e);
    }
    Some(entries)
}

/// File position to start scanning for `relative_offset`: the start of the batch of the largest entry
/// whose offset is below `relative_offset` (every batch before it ends before the target), else 0.
pub fn lookup_position(entries: &[OffsetEntry], relative_offset: i64) -> u64 {
    let idx = entries.partition_point(|e| i64::from(e.relative_offset) < relative_offset);
    if idx == 0 {
        0
    } else {
        u64::from(entries[idx - 1].position)
    }
}

/// The largest time entry whose timestamp is strictly below `timestamp_ms`: every batch up to that
/// entry's offset has a max timestamp below the target, so a search may start there.
pub fn lookup_time(entries: &[TimeEntry], timestamp_ms: i64) -> Option<TimeEntry> {
    let idx = entries.partition_point(|e| e.timestamp_ms < timestamp_ms);
    if idx == 0 {
        None
    } else {
        Some(entries[idx - 1])
    }
}

/// One batch as the index builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexedBatch {
    /// First offset of the batch.
    pub base_offset: i64,
    /// Last offset of the batch.
    pub last_offset: i64,
    /// The batch max timestamp.
    pub max_timestamp_ms: i64,
    /// File position of the batch in its segment.
    pub position: u64,
    /// Size of the batch in bytes.
    pub size: u64,
}

/// Builds index entries while batches are appended or scanned, as Kafka's `LogSegment.append` does.
#[derive(Clone, Debug, Default)]
pub struct IndexBuilder {
    /// Offset index entries.
    pub offsets: Vec<OffsetEntry>,
    /// Time index entries.
    pub times: Vec<TimeEntry>,
    /// Bytes appended since the last offset index entry.
    pub bytes_since_last_entry: u64,
    /// Largest batch max timestamp so far (-1 when none).
    pub max_timestamp_ms: i64,
    /// Offset of the batch holding `max_timestamp_ms`.
    pub offset_of_max_timestamp: i64,
}

impl IndexBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        IndexBuilder {
            max_timestamp_ms: -1,
            offset_of_max_timestamp: -1,
            ..Default::default()
        }
    }

    /// Records one batch at `position` (relative offsets must fit u32, positions u32; the caller rolls
    /// segments before that).
    pub fn on_batch(&mut self, segment_base: i64, batch: IndexedBatch, index_interval_bytes: u64) {
        let IndexedBatch {
            base_offset,
            last_offset,
            max_timestamp_ms,
            position,
            size,
        } = batch;
        if max_timestamp_ms > self.max_timestamp_ms {
            self.max_timestamp_ms = max_timestamp_ms;
            self.offset_of_max_timestamp = base_offset;
        }
        if self.bytes_since_last_entry > index_interval_bytes {
            let rel = (last_offset - segment_base) as u32;
            self.offsets.push(OffsetEntry {
                relative_offset: rel,
                position: position as u32,
            });
            self.maybe_append_time(segment_base);
            self.bytes_since_last_entry = 0;
        }
        self.bytes_since_last_entry += size;
    }

    /// Appends a time entry for the max timestamp so far if it is newer than the last entry (also
    /// called when a segment becomes inactive, as Kafka's `onBecomeInactiveSegment`).
    pub fn maybe_append_time(&mut self, segment_base: i64) {
        if self.max_timestamp_ms < 0 {
            return;
        }
        let newer = self
            .times
            .last()
            .is_none_or(|t| self.max_timestamp_ms > t.timestamp_ms);
        if newer {
            let rel = (self.offset_of_max_timestamp - segment_base).max(0) as u32;
            self.times.push(TimeEntry {
                timestamp_ms: self.max_timestamp_ms,
                relative_offset: rel,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_round_trips_and_rejects_garbage() {
        let entries = vec![
            OffsetEntry {
                relative_offset: 9,
                position: 4100,
            },
            OffsetEntry {
                relative_offset: 20,
                position: 8300,
            },
        ];
        let bytes = encode_offset_entries(&entries);
        assert_eq!(
            parse_offset_index(&bytes, 10_000, 30),
            Some(entries.clone())
        );
        assert_eq!(parse_offset_index(&bytes[..7], 10_000, 30), None);
        assert_eq!(
            parse_offset_index(&bytes, 8000, 30),
            None,
            "position past the log end"
        );
        assert_eq!(
            parse_offset_index(&bytes, 10_000, 15),
            None,
            "offset past the segment"
        );
        let mut swapped = encode_offset_entries(&[entries[1], entries[0]]);
        assert_eq!(parse_offset_index(&swapped, 10_000, 30), None);
        swapped.clear();
        assert_eq!(parse_offset_index(&swapped, 0, 0), Some(vec![]));
    }

    #[test]
    fn lookups_pick_a_safe_start() {
        let entries = vec![
            OffsetEntry {
                relative_offset: 9,
                position: 4100,
            },
            OffsetEntry {
                relative_offset: 20,
                position: 8300,
            },
        ];
        assert_eq!(lookup_position(&entries, 5), 0);
        assert_eq!(lookup_position(&entries, 9), 0);
        assert_eq!(lookup_position(&entries, 10), 4100);
        assert_eq!(lookup_position(&entries, 21), 8300);
        let times = vec![
            TimeEntry {
                timestamp_ms: 100,
                relative_offset: 3,
            },
            TimeEntry {
                timestamp_ms: 200,
                relative_offset: 9,
            },
        ];
        assert_eq!(lookup_time(&times, 100), None);
        assert_eq!(lookup_time(&times, 150), Some(times[0]));
        assert_eq!(lookup_time(&times, 1000), Some(times[1]));
        let bytes = encode_time_entries(&times);
        assert_eq!(parse_time_index(&bytes, 9), Some(times));
        assert_eq!(parse_time_index(&bytes, 8), None);
    }

    #[test]
    fn builder_indexes_every_interval() {
        let mut b = IndexBuilder::new();
        let mut pos = 0;
        for i in 0..10i64 {
            let batch = IndexedBatch {
                base_offset: 100 + i * 2,
                last_offset: 101 + i * 2,
                max_timestamp_ms: 1000 + i,
                position: pos,
                size: 3000,
            };
            b.on_batch(100, batch, 4096);
            pos += 3000;
        }
        // An entry every second batch (after > 4096 bytes accumulated).
        assert_eq!(b.offsets.len(), 4);
        assert_eq!(
            b.offsets[0],
            OffsetEntry {
                relative_offset: 5,
                position: 6000
            }
        );
        assert_eq!(b.max_timestamp_ms, 1009);
        b.maybe_append_time(100);
        assert_eq!(b.times.last().map(|t| t.timestamp_ms), Some(1009));
    }
}
