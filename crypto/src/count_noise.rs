//! Noise on a PSI cardinality, added by the server although only the client counts.
//!
//! In the cardinality form the client counts its matches among shuffled replies, so the
//! server never sees the number it must protect. It can still add to it, with one more
//! element from the client: the *noise anchor* `R = r·G`, the client's blind times the
//! base point. For a fresh scalar `s` the server knows `s·G`; it sends the dummy reply
//! `s·R`, which the client unblinds (like every reply, with `r⁻¹`) to `s·G`. Among its
//! tags the server includes the tags of exactly `half + η` of its `2·half` dummies
//! (η discrete-Laplace for the contract's ε, clamped to `±half`) and random tags for the
//! others. The client sees `n + 2·half` shuffled replies and `m + 2·half` tags, counts
//! `|X ∩ Y| + half + η` matches and reports that minus `half`.
//!
//! `half = ceil(30 / ε)`, computed in integers from ε in thousandths
//! ([`count_noise_half`]). Unclamped, the noise makes the count ε-DP for one entity
//! (sensitivity 1). The clamp puts the mass beyond `±half` on the end points, which a
//! neighbouring count cannot reach (or reaches with too little mass); that costs
//! `δ ≤ 2·e^{−ε·half} / (1 + e^{−ε}) ≤ 2·e^{−30} < 2⁻⁴²` ([`CountNoise::delta`]), so a run
//! is (ε, 2⁻⁴²)-DP. The variates come from [`DiscreteLaplace`], an f64 inverse-CDF
//! sampler: the distribution is discrete Laplace up to the rounding of 53-bit uniforms,
//! not exactly.
//!
//! Within one epoch the server's OPRF key is fixed, so the client's real replies
//! unblind to the same values in every session while the dummies are fresh: two
//! sessions in one epoch tell them apart and give the exact count. A node therefore
//! answers one noisy session per client, contract and epoch.
//!
//! The anchor holds against a semi-honest client only: a client that sends `R = r'·G`
//! with `r' ≠ r` can unblind every reply both ways and tell the dummies from its own
//! replies. The same client could already blind each element with its own scalar and
//! learn which elements matched, so the cardinality form as a whole assumes a client
//! that follows the protocol (ARCHITECTURE.md, "What each party learns").

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::scalar::Scalar;
use rand_core::CryptoRngCore;
use subtle::{ConditionallySelectable, ConstantTimeLess};
use zeroize::Zeroize;

use crate::group::{decode_element, par_map, ElementBytes};
use crate::noise::DiscreteLaplace;
use crate::set::{Tag, UnblindedElement};
use crate::CryptoError;

/// Smallest ε a contract may declare for a count, in thousandths (0.01): below it the
/// dummies (6,000 at 0.01) cost more than the noise is worth.
pub const COUNT_EPSILON_MILLI_MIN: u32 = 10;
/// Largest ε, in thousandths (10): above it the noise is almost always zero.
pub const COUNT_EPSILON_MILLI_MAX: u32 = 10_000;

/// `e^{-30}` bounds the clamp probability: `half = ceil(30 / ε)`.
const CLAMP_EXPONENT_MILLI: u64 = 30_000;

/// `half = ceil(30_000 / epsilon_milli)`: the server sends `2·half` dummy replies. Pure
/// integer arithmetic, so a client written elsewhere computes the same number.
pub fn count_noise_half(epsilon_milli: u32) -> Result<u32, CryptoError> {
    if !(COUNT_EPSILON_MILLI_MIN..=COUNT_EPSILON_MILLI_MAX).contains(&epsilon_milli) {
        return Err(CryptoError::NoiseParameter {
            reason: format!(
                "count noise with ε = {epsilon_milli}/1000, outside {COUNT_EPSILON_MILLI_MIN}..={COUNT_EPSILON_MILLI_MAX} thousandths"
            ),
        });
    }
    let half = CLAMP_EXPONENT_MILLI.div_ceil(u64::from(epsilon_milli));
    // At most 3,000 for the smallest ε.
    Ok(u32::try_from(half).unwrap_or(u32::MAX))
}

/// The noise a contract declares on a cardinality: ε (in thousandths), sensitivity one
/// entity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CountNoise {
    epsilon_milli: u32,
    half: u32,
    laplace: DiscreteLaplace,
}

impl CountNoise {
    /// Refuses ε outside [`COUNT_EPSILON_MILLI_MIN`]..=[`COUNT_EPSILON_MILLI_MAX`].
    pub fn new(epsilon_milli: u32) -> Result<Self, CryptoError> {
        let half = count_noise_half(epsilon_milli)?;
        let laplace = DiscreteLaplace::new(f64::from(epsilon_milli) / 1000.0, 1.0)?;
        Ok(Self { epsilon_milli, half, laplace })
    }

    pub fn epsilon_milli(&self) -> u32 {
        self.epsilon_milli
    }

    pub fn epsilon(&self) -> f64 {
        f64::from(self.epsilon_milli) / 1000.0
    }

    /// Dummy replies the server sends and the client expects: `2·half`.
    pub fn dummies(&self) -> u32 {
        2 * self.half
    }

    /// What the client subtracts from its count.
    pub fn half(&self) -> u32 {
        self.half
    }

    /// Variance of the (unclamped) noise: `2q / (1 − q)²`, `q = e^{−ε}`.
    pub fn variance(&self) -> f64 {
        self.laplace.variance()
    }

    /// A bound on the δ the clamp costs: `2·q^half / (1 + q)`, `q = e^{−ε}`. Under
    /// count c each end point carries `q^half / (1 + q)` (the clamped tail); count c + 1
    /// never outputs `c − half`, and outputs `c + half` with less than `e^{−ε}` times that
    /// mass, so the two end points are the only excess, each at most their own mass.
    pub fn delta(&self) -> f64 {
        let q = (-self.epsilon()).exp();
        2.0 * q.powf(f64::from(self.half)) / (1.0 + q)
    }

    /// How many dummy tags to include: `half + η`, η discrete-Laplace clamped to
    /// `±half`, so the result is in `0..=2·half`.
    pub fn sample_included(&self, rng: &mut impl CryptoRngCore) -> u32 {
        let half = i64::from(self.half);
        let eta = self.laplace.sample(rng).clamp(-half, half);
        // In 0..=2·half, which fits a u32.
        u32::try_from(half + eta).unwrap_or(0)
    }
}

/// `R = r·G`: the client's blind on the base point (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoiseAnchor(pub ElementBytes);

/// The server's dummies for one session: fresh scalars `s_i` and their `s_i·G`.
/// The scalars are zeroized when the replies are made (or the value dropped).
pub struct DummyReplies {
    scalars: Vec<Scalar>,
    unblinded: Vec<UnblindedElement>,
}

impl std::fmt::Debug for DummyReplies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DummyReplies({} dummies, <redacted>)", self.scalars.len())
    }
}

impl Drop for DummyReplies {
    fn drop(&mut self) {
        self.scalars.zeroize();
        self.unblinded.iter_mut().for_each(|u| u.0.zeroize());
    }
}

impl DummyReplies {
    /// `count` fresh non-zero scalars from `rng` and their multiples of the base point.
    pub fn new(count: usize, rng: &mut impl CryptoRngCore) -> Self {
        let scalars: Vec<Scalar> = (0..count)
            .map(|_| loop {
                let s = Scalar::random(rng);
                if s != Scalar::ZERO {
                    break s;
                }
            })
            .collect();
        let unblinded = par_map(&scalars, |s| UnblindedElement((s * RISTRETTO_BASEPOINT_TABLE).compress().0));
        Self { scalars, unblinded }
    }

    /// `s_i·R` for every dummy (the replies) and `s_i·G` (what they unblind to), after
    /// the anchor has passed the checked decoder (the identity and non-canonical
    /// encodings are refused). Consumes the dummies: the scalars are zeroized here.
    pub fn evaluate(
        self,
        anchor: &NoiseAnchor,
    ) -> Result<(Vec<ElementBytes>, Vec<UnblindedElement>), CryptoError> {
        let point = decode_element(&anchor.0)?;
        let replies: Vec<ElementBytes> = par_map(&self.scalars, |s| (s * point).compress().0);
        let mut this = self;
        let unblinded = std::mem::take(&mut this.unblinded);
        Ok((replies, unblinded))
    }
}

/// The server's extra tags: for `i < included` the tag of dummy `i`, otherwise random
/// tag `i`, chosen without a branch on `included` (the noise).
pub fn select_dummy_tags(included: u32, dummy_tags: &[Tag], random_tags: &[Tag]) -> Vec<Tag> {
    dummy_tags
        .iter()
        .zip(random_tags)
        .enumerate()
        .map(|(i, (dummy, random))| {
            let take_dummy = (i as u32).ct_lt(&included);
            let mut tag = [0u8; 16];
            for (byte, (d, r)) in tag.iter_mut().zip(dummy.0.iter().zip(random.0.iter())) {
                *byte = u8::conditional_select(r, d, take_dummy);
            }
            Tag(tag)
        })
        .collect()
}
