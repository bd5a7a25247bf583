//! Integer noise for differential privacy: the Skellam distribution for secure
//! aggregation, the discrete Laplace (two-sided geometric) distribution for counts, and
//! the (ε, δ) the Skellam mechanism gives.
//!
//! **Skellam** `Sk(μ) = P₁ − P₂` with `P₁, P₂ ~ Poisson(μ)` independent: mean 0,
//! variance `2μ`, and closed under summation (`Sk(μ₁) + Sk(μ₂) = Sk(μ₁ + μ₂)`), which is
//! why every SecAgg contributor can add its own share and the sum carries noise of the
//! declared variance (Agarwal, Kairouz and Liu, "The Skellam Mechanism for
//! Differentially Private Federated Learning", NeurIPS 2021, §3).
//!
//! Poisson variates: inversion by sequential products for `μ < 10`, Hörmann's PTRS
//! (transformed rejection with squeeze, "The transformed rejection method for
//! generating Poisson random variables", Insurance: Mathematics and Economics 12, 1993)
//! above. Both use f64 arithmetic on uniforms taken from the caller's CSPRNG; variances
//! are capped at [`MAX_VARIANCE`] so every variate is an integer f64 represents exactly.
//! The samplers are not constant time (the number of rejections depends on the
//! variate): a process that can time a node's sampling can learn about its noise.
//!
//! All randomness comes from the RNG the caller passes (the node passes the OS CSPRNG;
//! tests a seeded ChaCha20), as everywhere in this crate.

use rand_core::CryptoRngCore;

use crate::CryptoError;

/// Largest variance a Skellam noise may have: `2^50`, so each Poisson mean is at most
/// `2^49` and every variate stays far below `2^53`, where f64 stops counting in ones.
pub const MAX_VARIANCE: u64 = 1 << 50;

/// A uniform f64 in `[0, 1)` from 53 random bits.
fn uniform(rng: &mut impl CryptoRngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `ln(k!)` for an integer-valued `k >= 0`: exactly below 10, Stirling's series above
/// (error below 1e-13 there).
fn ln_factorial(k: f64) -> f64 {
    if k < 10.0 {
        return ((1..=k as u64).product::<u64>() as f64).ln();
    }
    let x = k + 1.0;
    let x2 = x * x;
    let series = (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0 - 1.0 / (1680.0 * x2)) / x2) / x2) / x;
    (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + series
}

/// One Poisson(`mean`) variate, `0 <= mean <= 2^49`.
fn poisson(mean: f64, rng: &mut impl CryptoRngCore) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean < 10.0 {
        // Inversion: the number of uniforms whose running product stays above e^-mean.
        let limit = (-mean).exp();
        let mut product = uniform(rng);
        let mut k = 0u64;
        while product > limit {
            k += 1;
            product *= uniform(rng);
        }
        return k;
    }
    // PTRS (Hörmann 1993, Algorithm PTRS with the paper's constants).
    let sqrt_mean = mean.sqrt();
    let ln_mean = mean.ln();
    let b = 0.931 + 2.53 * sqrt_mean;
    let a = -0.059 + 0.024_83 * b;
    let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
    let v_r = 0.9277 - 3.6224 / (b - 2.0);
    loop {
        let u = uniform(rng) - 0.5;
        let v = uniform(rng);
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + mean + 0.43).floor();
        if us >= 0.07 && v <= v_r {
            return k as u64;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        if v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln() <= -mean + k * ln_mean - ln_factorial(k) {
            return k as u64;
        }
    }
}

/// Centered Skellam noise of a given variance (`Sk(variance / 2)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Skellam {
    /// The mean of each of the two Poisson variables: half the variance.
    mu: f64,
}

impl Skellam {
    /// Noise of `variance` (which need not be an integer: a contributor's share of an
    /// integer total is a fraction of it). Refuses a variance that is not finite, not
    /// positive, or above [`MAX_VARIANCE`].
    pub fn with_variance(variance: f64) -> Result<Self, CryptoError> {
        if !(variance.is_finite() && variance > 0.0 && variance <= MAX_VARIANCE as f64) {
            return Err(CryptoError::NoiseParameter {
                reason: format!("Skellam variance {variance} is outside (0, 2^50]"),
            });
        }
        Ok(Self { mu: variance / 2.0 })
    }

    pub fn variance(&self) -> f64 {
        2.0 * self.mu
    }

    /// One variate.
    pub fn sample(&self, rng: &mut impl CryptoRngCore) -> i64 {
        // Both Poisson variates stay below 2^53 (MAX_VARIANCE), so the difference fits.
        poisson(self.mu, rng) as i64 - poisson(self.mu, rng) as i64
    }

    /// Adds an independent variate to every element, modulo 2^64 (two's complement), so
    /// a masked sum decodes to `Σ x + Σ noise` as a signed integer.
    pub fn add_to(&self, values: &mut [u64], rng: &mut impl CryptoRngCore) {
        for value in values {
            *value = value.wrapping_add(self.sample(rng) as u64);
        }
    }
}

/// A bound the absolute value of a Skellam variate of `variance` exceeds with
/// probability below 2^-100: `64·⌈√variance⌉ + 64`. (Skellam tails are at least as
/// light as Poisson's: Bernstein's inequality gives `P(|X| > t) <= 2·exp(-t² / (2(v +
/// t/3)))`, below 2^-180 at this `t` for every `v >= 0`.)
pub fn skellam_tail_bound(variance: u64) -> u64 {
    64 * (variance as f64).sqrt().ceil() as u64 + 64
}

/// The ε of (ε, δ)-differential privacy that Skellam noise of total `variance` gives a
/// query whose L1 and L2 sensitivities are `l1` and `l2`.
///
/// Agarwal, Kairouz and Liu 2021, Theorem 3.5 (the multi-dimensional Skellam mechanism
/// with per-coordinate variance `V`) is (α, ε(α))-Rényi DP for every α > 1 with
/// `ε(α) <= α·Δ2² / (2V) + min(((2α − 1)·Δ2² + 6·Δ1) / (4V²), 3·Δ1 / (2V))`;
/// converted with Mironov 2017 (Proposition 3): `ε = min_α ε(α) + ln(1/δ) / (α − 1)`,
/// minimised over a grid of α in (1, 512].
pub fn skellam_epsilon(variance: f64, l1: f64, l2: f64, delta: f64) -> f64 {
    let rdp = |alpha: f64| {
        alpha * l2 * l2 / (2.0 * variance)
            + f64::min(
                ((2.0 * alpha - 1.0) * l2 * l2 + 6.0 * l1) / (4.0 * variance * variance),
                3.0 * l1 / (2.0 * variance),
            )
    };
    let small = (1..=100).map(|k| 1.0 + k as f64 / 10.0);
    let large = (12..=512).map(f64::from);
    small
        .chain(large)
        .map(|alpha| rdp(alpha) + (1.0 / delta).ln() / (alpha - 1.0))
        .fold(f64::INFINITY, f64::min)
}

/// Discrete Laplace (two-sided geometric) noise: `P(X = k) ∝ exp(−ε·|k| / Δ)`, which
/// makes a count of sensitivity `Δ` ε-differentially private (Ghosh, Roughgarden and
/// Sundararajan 2009). Sampled as the difference of two geometric variates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiscreteLaplace {
    /// `ε / Δ`: the decay per unit.
    rate: f64,
}

impl DiscreteLaplace {
    /// Refuses ε or Δ that are not finite and positive, and rates below 2^-20 (noise of
    /// a scale no count needs).
    pub fn new(epsilon: f64, sensitivity: f64) -> Result<Self, CryptoError> {
        let rate = epsilon / sensitivity;
        if !(epsilon.is_finite() && sensitivity.is_finite() && epsilon > 0.0 && sensitivity > 0.0)
            || rate < 1.0 / (1u64 << 20) as f64
        {
            return Err(CryptoError::NoiseParameter {
                reason: format!("discrete Laplace with ε = {epsilon}, Δ = {sensitivity}"),
            });
        }
        Ok(Self { rate })
    }

    /// The variance: `2·q / (1 − q)²` with `q = e^-rate`.
    pub fn variance(&self) -> f64 {
        let q = (-self.rate).exp();
        2.0 * q / ((1.0 - q) * (1.0 - q))
    }

    /// One geometric variate on {0, 1, ...} with `P(G >= k) = e^{-rate·k}`.
    fn geometric(&self, rng: &mut impl CryptoRngCore) -> i64 {
        // 1 − u is in (0, 1], so the logarithm is finite.
        let u = 1.0 - uniform(rng);
        (-u.ln() / self.rate).floor() as i64
    }

    pub fn sample(&self, rng: &mut impl CryptoRngCore) -> i64 {
        self.geometric(rng) - self.geometric(rng)
    }
}
