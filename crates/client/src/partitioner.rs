//! Partitioners: which partition a record without an explicit partition goes to.
//!
//! Keyed records hash with the Java client's murmur2 (`toPositive(murmur2(key)) % numPartitions`), which is
//! also librdkafka's `murmur2_random`, so a key lands on the same partition whichever client wrote it.
//! Keyless records follow the configured strategy: sticky (KIP-480, the Java default), round-robin or
//! random. A [`Partitioner`] implementation replaces all of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, seed `0x9747b28c`), as a signed 32-bit value.
///
/// ```
/// assert_eq!(sluice_client::partitioner::murmur2(b"foobar"), -790332482);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // The length is folded in as a Java int: truncation matches the reference for any real key.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `num_partitions` as the Java client and librdkafka's `murmur2_random`
/// choose it: `(murmur2(key) & 0x7fffffff) % num_partitions`.
pub fn murmur2_partition(key: &[u8], num_partitions: i32) -> i32 {
    if num_partitions <= 0 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) % num_partitions
}

/// A user-supplied partitioner. It sees every record that has no explicit partition.
pub trait Partitioner: Send + Sync + std::fmt::Debug {
    /// The partition for a record of `topic` with `key`, among `num_partitions` (> 0).
    fn partition(&self, topic: &str, key: Option<&[u8]>, num_partitions: i32) -> i32;
}

/// How the producer picks partitions for records without an explicit partition.
#[derive(Debug, Clone, Default)]
pub enum PartitionStrategy {
    /// Keyed: murmur2. Keyless: sticky (KIP-480): one partition until its batch is sent, then another.
    #[default]
    Default,
    /// Keyed: murmur2. Keyless: random (librdkafka's `murmur2_random`).
    Murmur2Random,
    /// Every record, keyed or not, to the next partition in turn.
    RoundRobin,
    /// Every record, keyed or not, to a random partition.
    Random,
    /// A custom partitioner.
    Custom(Arc<dyn Partitioner>),
}

/// A small, fast pseudo-random source (xorshift64*), seeded from the clock and a counter; partition
/// choice needs spread, not unpredictability.
#[derive(Debug)]
pub(crate) struct FastRng(AtomicU64);

impl FastRng {
    pub(crate) fn new() -> FastRng {
        static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let seed = nanos ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        FastRng(AtomicU64::new(seed | 1))
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n` > 0).
    pub(crate) fn below(&self, n: i32) -> i32 {
        if n <= 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, hash) in cases {
            assert_eq!(murmur2(key), hash, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partition_is_to_positive_modulo() {
        // toPositive(-790332482) = 1357151166; 1357151166 % 50 = 16.
        assert_eq!(murmur2_partition(b"foobar", 50), 16);
        assert_eq!(murmur2_partition(b"foobar", 0), 0);
        for n in 1..40 {
            let p = murmur2_partition(b"a-little-bit-long-string", n);
            assert!((0..n).contains(&p));
        }
    }

    #[test]
    fn rng_stays_in_range_and_spreads() {
        let rng = FastRng::new();
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            let p = rng.below(7);
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 500), "{seen:?}");
    }
}
