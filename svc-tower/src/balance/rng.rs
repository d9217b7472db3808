//! A lock-free, seedable PRNG for picks.
//!
//! SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014;
//! Java's `SplittableRandom`) over an atomic counter: each draw is one `fetch_add` and a few
//! multiplies, so concurrent picks never contend on a lock, and a fixed seed gives a fixed
//! sequence (for one thread), which is what tests need.

use std::sync::atomic::{AtomicU64, Ordering};

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A shared SplitMix64 generator.
#[derive(Debug)]
pub(crate) struct SplitMix {
    state: AtomicU64,
}

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A seed from the standard library's per-process random hasher keys.
    pub(crate) fn random_seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        h.finish()
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Maps 32 random bits onto `0..n` (Lemire's multiply-shift; bias below 2^-32 × n).
#[inline]
pub(crate) fn below(bits: u32, n: usize) -> usize {
    ((u64::from(bits) * n as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let (a, b) = (SplitMix::new(7), SplitMix::new(7));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }

    #[test]
    fn below_covers_the_range() {
        let rng = SplitMix::new(1);
        let mut seen = [0u32; 5];
        for _ in 0..1000 {
            seen[below(rng.next_u64() as u32, 5)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 100), "{seen:?}");
    }
}
