//! Replication throttles (KIP-73), as Kafka's `ReplicationQuotaManager` applies them: a leader stops sending
//! records of its throttled partitions to followers outside the ISR while the bytes it sent them exceed
//! `leader.replication.throttled.rate`; a follower stops asking for its throttled partitions while it is outside the
//! ISR and the bytes it fetched for them exceed `follower.replication.throttled.rate`.
//!
//! Which partitions are throttled comes from each topic's `leader.replication.throttled.replicas` /
//! `follower.replication.throttled.replicas` (`*`, or `partition:broker` pairs naming this broker's replica;
//! `Partition::replication_throttles`). The rates are dynamic broker configs in the metadata image: this broker's
//! own, else the cluster-wide default (the empty broker name), else unlimited.
//!
//! The rate is measured as Kafka's `Rate` over `replication.quota.window.num` (11) samples of
//! `replication.quota.window.size.seconds` (1 s): the bytes in the live samples divided by the time they span,
//! never less than 10 s, so a throttled move starts with a burst of at most ten seconds' worth.

use parking_lot::Mutex;
use sluice_metadata::MetadataImage;

/// `replication.quota.window.num` (Kafka's default).
const SAMPLES: usize = 11;
/// `replication.quota.window.size.seconds` (Kafka's default), in ms.
const WINDOW_MS: i64 = 1_000;

/// Which side of replication a quota throttles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The leader serving followers (`leader.replication.throttled.rate`).
    Leader,
    /// The follower fetching (`follower.replication.throttled.rate`).
    Follower,
}

impl Side {
    /// The broker config holding the rate.
    pub fn rate_key(self) -> &'static str {
        match self {
            Side::Leader => "leader.replication.throttled.rate",
            Side::Follower => "follower.replication.throttled.rate",
        }
    }

    /// The topic config listing the throttled replicas.
    pub fn replicas_key(self) -> &'static str {
        match self {
            Side::Leader => "leader.replication.throttled.replicas",
            Side::Follower => "follower.replication.throttled.replicas",
        }
    }
}

/// One side's byte rate, measured over sliding samples.
#[derive(Debug)]
pub struct ReplicationQuota {
    side: Side,
    node_id: String,
    samples: Mutex<Samples>,
}

#[derive(Debug)]
struct Samples {
    /// (window start ms, bytes) per sample; `current` is the one being filled.
    windows: [(i64, u64); SAMPLES],
    current: usize,
}

/// The bytes/s bound `key` (a dynamic broker config) sets for broker `node_id` in `image`: its own value, else the
/// cluster-wide default, else none (also for Kafka's unbounded default, `Long.MAX_VALUE`).
pub fn broker_rate(image: &MetadataImage, node_id: &str, key: &str) -> Option<u64> {
    [node_id, ""]
        .into_iter()
        .find_map(|name| image.broker_configs(name).and_then(|c| c.get(key)))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&rate| rate < i64::MAX as u64)
}

impl ReplicationQuota {
    /// A quota for `side` of broker `node_id`, with nothing recorded.
    pub fn new(side: Side, node_id: i32, now_ms: i64) -> ReplicationQuota {
        ReplicationQuota {
            side,
            node_id: node_id.to_string(),
            samples: Mutex::new(Samples {
                windows: [(now_ms, 0); SAMPLES],
                current: 0,
            }),
        }
    }

    /// The rate bound in bytes per second from `image`: this broker's dynamic config, else the cluster-wide default,
    /// else none.
    pub fn bound(&self, image: &MetadataImage) -> Option<u64> {
        broker_rate(image, &self.node_id, self.side.rate_key())
    }

    /// Whether the measured rate is above the bound in `image` (never without a bound).
    pub fn is_exceeded(&self, image: &MetadataImage, now_ms: i64) -> bool {
        self.bound(image)
            .is_some_and(|bound| self.rate(now_ms) > bound as f64)
    }

    /// Counts `bytes` replicated for throttled partitions.
    pub fn record(&self, bytes: usize, now_ms: i64) {
        if bytes == 0 {
            return;
        }
        let mut s = self.samples.lock();
        let current = s.current;
        if now_ms - s.windows[current].0 >= WINDOW_MS {
            s.current = (current + 1) % SAMPLES;
            let next = s.current;
            s.windows[next] = (now_ms, 0);
        }
        let current = s.current;
        s.windows[current].1 = s.windows[current].1.saturating_add(bytes as u64);
    }

    /// Bytes per second over the live samples (Kafka's `Rate` with `SampledStat`).
    pub fn rate(&self, now_ms: i64) -> f64 {
        let mut s = self.samples.lock();
        let span = SAMPLES as i64 * WINDOW_MS;
        for w in s.windows.iter_mut() {
            if now_ms - w.0 >= span {
                *w = (now_ms, 0);
            }
        }
        let total: u64 = s.windows.iter().map(|w| w.1).sum();
        let oldest = s.windows.iter().map(|w| w.0).min().unwrap_or(now_ms);
        let mut elapsed = (now_ms - oldest).max(0);
        let full = elapsed / WINDOW_MS;
        let min_full = SAMPLES as i64 - 1;
        if full < min_full {
            elapsed += (min_full - full) * WINDOW_MS;
        }
        total as f64 * 1000.0 / elapsed as f64
    }
}

/// Whether this broker's replica of `partition` is throttled on `side` by the topic's `configs`.
pub fn is_throttled(
    configs: &std::collections::BTreeMap<String, String>,
    side: Side,
    partition: i32,
    node_id: i32,
) -> bool {
    configs
        .get(side.replicas_key())
        .is_some_and(|v| sluice_metadata::topic_config::is_throttled_replica(v, partition, node_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_spans_at_least_ten_seconds() {
        let q = ReplicationQuota::new(Side::Leader, 1, 0);
        q.record(10_000, 0);
        // 10,000 bytes over the 10 s minimum span.
        assert_eq!(q.rate(500), 10_000.0 * 1000.0 / 10_500.0);
        q.record(10_000, 1_200);
        assert_eq!(q.rate(10_500), 20_000.0 * 1000.0 / 10_500.0);
        // The first sample (from 0 ms) expires 11 s after it began.
        assert_eq!(q.rate(12_000), 10_000.0 * 1000.0 / 10_800.0);
    }

    #[test]
    fn old_samples_expire() {
        let q = ReplicationQuota::new(Side::Follower, 1, 0);
        for t in 0..11 {
            q.record(1_000, t * 1_000);
        }
        assert!(q.rate(10_999) > 900.0);
        // Eleven seconds later every sample is obsolete.
        assert_eq!(q.rate(22_500), 0.0);
    }

    #[test]
    fn throttled_replicas_name_this_broker() {
        let mut configs = std::collections::BTreeMap::new();
        configs.insert(
            "leader.replication.throttled.replicas".to_owned(),
            "0:1, 1:2".to_owned(),
        );
        assert!(is_throttled(&configs, Side::Leader, 0, 1));
        assert!(is_throttled(&configs, Side::Leader, 1, 2));
        assert!(!is_throttled(&configs, Side::Leader, 0, 2));
        assert!(!is_throttled(&configs, Side::Follower, 0, 1));
        configs.insert(
            "follower.replication.throttled.replicas".to_owned(),
            "*".to_owned(),
        );
        assert!(is_throttled(&configs, Side::Follower, 7, 9));
    }
}
