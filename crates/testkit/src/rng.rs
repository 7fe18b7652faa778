//! One seeded random number generator for every test: SplitMix64, small and fast, with a whole run derived from
//! one printed seed. Independent streams per concern come from [`Rng::fork`], so adding draws to one concern does
//! not shift the others (the quorum simulation keeps network, faults and time apart this way).
//!
//! The sequence is part of the contract: `next_u64`, `below`, `chance` and `fork` must keep producing exactly
//! what they produce today, or every recorded seed (`SLUICE_SIM_SEED=...` in a bug report) stops reproducing.

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014). Any seed is valid,
/// zero included.
///
/// ```
/// use sluice_testkit::Rng;
/// let mut a = Rng::from_seed(7);
/// let mut b = Rng::from_seed(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(10) < 10);
/// ```
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator whose whole sequence is determined by `seed`.
    pub fn from_seed(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0). Plain modulo: the bias is below 2^-40 for the small `n` tests use,
    /// and changing it would change every seed's run.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// An index into a collection of `len` items (0 when `len` is 0).
    pub fn index(&mut self, len: usize) -> usize {
        // `below(len) < len`, so the conversion back always fits.
        self.below(len as u64) as usize
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// A new, independent generator seeded from this one's next draw: one stream per concern.
    pub fn fork(&mut self) -> Rng {
        Rng::from_seed(self.next_u64())
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// The seed of a randomised test: the environment variable `var` (decimal, or hex with `0x`) when set, else one
/// derived from the clock and the process id, so each run explores a new case. Print it with the command that
/// reproduces the run.
pub fn seed_from_env(var: &str) -> u64 {
    if let Ok(value) = std::env::var(var) {
        let value = value.trim();
        let parsed = match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => value.parse(),
        };
        match parsed {
            Ok(seed) => return seed,
            Err(e) => panic!("{var}={value:?} is not a seed: {e}"),
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // One SplitMix64 step mixes the two, so runs started in the same nanosecond by two processes differ.
    Rng::from_seed(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference outputs of SplitMix64 for seed 1234567 (from the algorithm's published C version), so a
    /// change to the generator cannot go unnoticed.
    #[test]
    fn splitmix64_reference_sequence() {
        let mut rng = Rng::from_seed(1234567);
        let got: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423,
                4593380528125082431,
                16408922859458223821,
            ]
        );
    }

    #[test]
    fn fork_is_seeded_from_the_next_draw() {
        let mut a = Rng::from_seed(42);
        let mut b = Rng::from_seed(42);
        let mut forked = a.fork();
        let mut by_hand = Rng::from_seed(b.next_u64());
        assert_eq!(forked.next_u64(), by_hand.next_u64());
        assert_eq!(
            a.next_u64(),
            b.next_u64(),
            "the parent advanced by one draw"
        );
    }

    #[test]
    fn below_and_chance_stay_in_range() {
        let mut rng = Rng::from_seed(0);
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.index(0), 0);
        for _ in 0..1000 {
            assert!(rng.below(7) < 7);
        }
        assert!(!(0..1000).any(|_| rng.chance(0)));
        assert!((0..1000).all(|_| rng.chance(1000)));
        let hits = (0..10_000).filter(|_| rng.chance(250)).count();
        assert!((2_000..3_000).contains(&hits), "{hits} of 10000 at 25%");
        assert_eq!(rng.bytes(13).len(), 13);
    }
}
