//! Leader-epoch cache: epoch -> start offset, as Kafka's `LeaderEpochFileCache` (KIP-101/279), stored in
//! the partition's `leader-epoch-checkpoint`.

/// Epochs in increasing order with their start offsets (both strictly increasing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    /// A cache holding `entries` (assumed valid; see [`LeaderEpochCache::parse`]).
    pub fn from_entries(entries: Vec<(i32, i64)>) -> Self {
        LeaderEpochCache { entries }
    }
    /// The entries, oldest first.
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }
    /// The latest epoch.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.0)
    }

    /// Records that `epoch` starts at `start_offset`; returns true when the cache changed. As Kafka,
    /// entries with an epoch >= `epoch` or a start offset >= `start_offset` are replaced.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(&(last_epoch, last_start)) = self.entries.last() {
            if last_epoch == epoch && last_start <= start_offset {
                return false;
            }
        }
        while let Some(&(e, s)) = self.entries.last() {
            if e >= epoch || s >= start_offset {
                self.entries.pop();
            } else {
                break;
            }
        }
        self.entries.push((epoch, start_offset));
        true
    }

    /// Drops every epoch starting at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < end_offset);
        before != self.entries.len()
    }

    /// Moves the log start to `start_offset`: epochs wholly before it go, the one covering it now starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let covering = self.entries.partition_point(|&(_, s)| s <= start_offset);
        if covering == 0 {
            return false;
        }
        let changed = covering > 1 || self.entries[0].1 != start_offset;
        let epoch = self.entries[covering - 1].0;
        self.entries.drain(..covering - 1);
        self.entries[0] = (epoch, start_offset);
        changed
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The epoch of `offset`: the latest epoch starting at or before it.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let idx = self.entries.partition_point(|&(_, s)| s <= offset);
        (idx > 0).then(|| self.entries[idx - 1].0)
    }

    /// OffsetForLeaderEpoch: `(largest epoch <= requested, end offset of that epoch)`, where the end
    /// offset is the start of the next epoch, or the log end offset for the latest epoch. `None` when the
    /// requested epoch is newer than any known (Kafka's UNDEFINED_EPOCH_OFFSET).
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        if requested < 0 {
            return None;
        }
        let latest = self.latest_epoch()?;
        if requested == latest {
            return Some((requested, log_end_offset));
        }
        let higher = self.entries.partition_point(|&(e, _)| e <= requested);
        if higher == self.entries.len() {
            return None;
        }
        let higher_start = self.entries[higher].1;
        if higher == 0 {
            Some((requested, higher_start))
        } else {
            Some((self.entries[higher - 1].0, higher_start))
        }
    }

    /// Encodes in Kafka's checkpoint text format: version, count, then `epoch offset` lines.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("0\n{}\n", self.entries.len());
        for (e, o) in &self.entries {
            s.push_str(&format!("{e} {o}\n"));
        }
        s.into_bytes()
    }

    /// Parses the checkpoint format; `None` when malformed or not strictly increasing.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()?.trim() != "0" {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut entries: Vec<(i32, i64)> = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let mut parts = lines.next()?.split_whitespace();
            let e: i32 = parts.next()?.parse().ok()?;
            let o: i64 = parts.next()?.parse().ok()?;
            if let Some(&(pe, po)) = entries.last() {
                if e <= pe || o <= po {
                    return None;
                }
            }
            entries.push((e, o));
        }
        Some(LeaderEpochCache { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offset_for_epoch_follows_kafka() {
        // Reference: Kafka LeaderEpochFileCache.endOffsetFor.
        let mut c = LeaderEpochCache::default();
        assert_eq!(c.end_offset_for(0, 10), None);
        assert!(c.assign(2, 5));
        assert!(c.assign(4, 20));
        assert!(!c.assign(4, 25));
        assert_eq!(c.end_offset_for(4, 30), Some((4, 30)));
        assert_eq!(c.end_offset_for(2, 30), Some((2, 20)));
        assert_eq!(c.end_offset_for(3, 30), Some((2, 20)));
        assert_eq!(c.end_offset_for(1, 30), Some((1, 5)));
        assert_eq!(c.end_offset_for(5, 30), None);
        assert_eq!(c.epoch_for_offset(4), None);
        assert_eq!(c.epoch_for_offset(19), Some(2));
        assert_eq!(c.epoch_for_offset(20), Some(4));
    }

    #[test]
    fn truncation_and_checkpoint_round_trip() {
        let mut c = LeaderEpochCache::from_entries(vec![(1, 0), (2, 10), (3, 20)]);
        assert!(c.truncate_from_end(20));
        assert_eq!(c.entries(), &[(1, 0), (2, 10)]);
        assert!(c.truncate_from_start(12));
        assert_eq!(c.entries(), &[(2, 12)]);
        assert!(!c.truncate_from_start(5));
        let parsed = LeaderEpochCache::parse(&c.encode()).unwrap();
        assert_eq!(parsed, c);
        assert_eq!(LeaderEpochCache::parse(b"0\n2\n1 5\n1 6\n"), None);
        assert_eq!(LeaderEpochCache::parse(b"garbage"), None);
        // A new epoch starting below existing entries replaces them.
        let mut c = LeaderEpochCache::from_entries(vec![(1, 0), (2, 10)]);
        assert!(c.assign(3, 5));
        assert_eq!(c.entries(), &[(1, 0), (3, 5)]);
    }
}
