//! Uniform shuffles for the server: the order of its tags (every form) and of its
//! evaluated replies (cardinality form).
//!
//! The randomness is drawn from the caller's RNG when the server state is made and
//! expanded with crypto's ChaCha20 PRG ([`xmcredit_crypto::prg`]), so the later
//! transitions need no RNG. Fisher–Yates with Lemire's unbiased bounded draw gives every
//! permutation the same probability.

use rand_core::CryptoRngCore;
use xmcredit_crypto::prg::{fill_masks, Seed};
use zeroize::Zeroize;

const BUFFER: usize = 64;

/// A ChaCha20 stream of u64 draws. Zeroized on drop, redacted in `Debug`: whoever knows
/// it knows the permutation.
pub(crate) struct Shuffler {
    seed: Seed,
    position: u64,
    buffer: [u64; BUFFER],
    used: usize,
}

impl Shuffler {
    pub(crate) fn new(rng: &mut impl CryptoRngCore) -> Self {
        let mut seed = Seed([0u8; 32]);
        rng.fill_bytes(&mut seed.0);
        Self { seed, position: 0, buffer: [0; BUFFER], used: BUFFER }
    }

    fn next_u64(&mut self) -> u64 {
        if self.used == BUFFER {
            fill_masks(&self.seed, self.position, &mut self.buffer);
            self.position += BUFFER as u64;
            self.used = 0;
        }
        let value = self.buffer[self.used];
        self.used += 1;
        value
    }

    /// Uniform in `0..bound` (Lemire, "Fast Random Integer Generation in an Interval",
    /// 2019), `bound >= 1`.
    fn below(&mut self, bound: u64) -> u64 {
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if product as u64 >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// Fisher–Yates.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

impl Drop for Shuffler {
    fn drop(&mut self) {
        self.buffer.zeroize();
    }
}

impl std::fmt::Debug for Shuffler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shuffler(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::Shuffler;

    #[test]
    fn every_permutation_is_about_equally_likely() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut shuffler = Shuffler::new(&mut rng);
        let mut counts: HashMap<[u8; 3], u32> = HashMap::new();
        let rounds = 60_000;
        for _ in 0..rounds {
            let mut items = [0u8, 1, 2];
            shuffler.shuffle(&mut items);
            *counts.entry(items).or_default() += 1;
        }
        assert_eq!(counts.len(), 6);
        for (permutation, count) in counts {
            // 10_000 expected; 5 standard deviations is about ±460.
            assert!((9_500..=10_500).contains(&count), "{permutation:?} came {count} times");
        }
    }

    #[test]
    fn draws_stay_below_the_bound() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut shuffler = Shuffler::new(&mut rng);
        for bound in [1u64, 2, 3, 7, 1 << 63, u64::MAX] {
            for _ in 0..200 {
                assert!(shuffler.below(bound) < bound);
            }
        }
    }
}
