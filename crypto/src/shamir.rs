//! Shamir t-of-n secret sharing over the ristretto255 scalar field (Bonawitz et al. 2017,
//! §3: the mask key and self-mask seed are shared this way).
//!
//! Share `i` (1-based) is `f(i)` for a random polynomial `f` of degree `t - 1` with
//! `f(0)` the secret. Any `t` shares determine `f(0)` by Lagrange interpolation; any
//! `t - 1` are uniformly distributed whatever the secret.

use curve25519_dalek::scalar::Scalar;
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::CryptoError;

/// One share: the evaluation point (a party's 1-based index) and `f(index)`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Share {
    #[zeroize(skip)]
    pub index: u32,
    pub value: Scalar,
}

impl PartialEq for Share {
    /// Constant time in the share's value (a share is secret).
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && bool::from(subtle::ConstantTimeEq::ct_eq(&self.value, &other.value))
    }
}
impl Eq for Share {}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share {{ index: {}, value: <redacted> }}", self.index)
    }
}

/// Splits `secret` into `n` shares with indices `1..=n`, any `threshold` of which
/// reconstruct it.
pub fn split(
    secret: &Scalar,
    threshold: usize,
    n: usize,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<Share>, CryptoError> {
    if threshold == 0 {
        return Err(CryptoError::Sharing("threshold must be at least 1"));
    }
    if threshold > n {
        return Err(CryptoError::Sharing("threshold must not exceed the number of shares"));
    }
    if u32::try_from(n).is_err() {
        return Err(CryptoError::Sharing("too many shares"));
    }
    let mut coefficients = Vec::with_capacity(threshold);
    coefficients.push(*secret);
    coefficients.extend((1..threshold).map(|_| Scalar::random(rng)));
    let shares = (1..=n as u32)
        .map(|index| {
            let x = Scalar::from(index);
            // Horner's rule from the highest coefficient down.
            let value = coefficients.iter().rev().fold(Scalar::ZERO, |acc, c| acc * x + c);
            Share { index, value }
        })
        .collect();
    coefficients.zeroize();
    Ok(shares)
}

/// Reconstructs the secret from at least `threshold` shares with distinct non-zero
/// indices (the first `threshold` are used).
pub fn reconstruct(shares: &[Share], threshold: usize) -> Result<Scalar, CryptoError> {
    if threshold == 0 {
        return Err(CryptoError::Sharing("threshold must be at least 1"));
    }
    if shares.len() < threshold {
        return Err(CryptoError::TooFewShares { threshold, got: shares.len() });
    }
    let used = &shares[..threshold];
    for (i, share) in used.iter().enumerate() {
        if share.index == 0 {
            return Err(CryptoError::Sharing("share index 0 would reveal the secret"));
        }
        if used[..i].iter().any(|other| other.index == share.index) {
            return Err(CryptoError::Sharing("duplicate share index"));
        }
    }
    let xs: Vec<Scalar> = used.iter().map(|s| Scalar::from(s.index)).collect();
    let mut secret = Scalar::ZERO;
    for (i, share) in used.iter().enumerate() {
        // Lagrange basis polynomial i evaluated at 0: prod_{j != i} x_j / (x_j - x_i).
        let (mut numerator, mut denominator) = (Scalar::ONE, Scalar::ONE);
        for (j, x_j) in xs.iter().enumerate() {
            if i != j {
                numerator *= x_j;
                denominator *= x_j - xs[i];
            }
        }
        secret += share.value * numerator * denominator.invert();
    }
    Ok(secret)
}
