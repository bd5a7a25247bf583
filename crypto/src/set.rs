//! Set sessions: the batched OPRF that every set protocol (PSI, duplicate detection,
//! lookups) is made of, and the tags and pads derived from its output.
//!
//! A client blinds all its elements in one session with one fresh scalar `r`, so
//! unblinding with `r⁻¹` does not depend on order and the server may shuffle its replies.
//! The unblinded element is `N = k · H(x)` with `H` the RFC 9497 base-mode HashToGroup.
//! Tags and pads are derived from `N` alone (not from the input, unlike RFC 9497's
//! Finalize, which a client could not compute on shuffled replies):
//!
//! ```text
//! label   = "xmcredit tag" | "xmcredit pad"          (12 ASCII bytes)
//! context = I2OSP(len(contract_id), 2) || contract_id (UTF-8)
//!           || I2OSP(epoch, 8)
//! tag     = SHA-512(label || context || N)[0 .. tag_len]
//! pad     = SHA-512(label || context || N || I2OSP(0, 4))
//!        || SHA-512(label || context || N || I2OSP(1, 4)) || ...   truncated to its length
//! ```
//!
//! where `N` is the 32-byte canonical encoding of the unblinded element and I2OSP is
//! big-endian. [`TagContext::pad_u64`] is the first 8 bytes of the pad read as a
//! little-endian u64; private lookups do not use it but their own, domain-separated pads
//! ([`crate::lookup`]).

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{Identity, IsIdentity};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::group::{
    decode_batch, mul_and_compress_batch, par_map, try_par_map, BatchElementError, ElementBytes,
};
use crate::oprf::{OprfKey, Suite};
use crate::{ContractId, CryptoError, Epoch};

/// Smallest and largest tag lengths this crate produces, in bits.
pub const MIN_TAG_BITS: u32 = 40;
pub const MAX_TAG_BITS: u32 = 128;

/// `N = k · H(x)`, serialized: the unblinded OPRF value of one element.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnblindedElement(pub ElementBytes);

// Redacted: N = k·H(x) is a PRF value of a record under a secret key; in a log it
// would let anyone holding one record's N recognize it across lines.
impl std::fmt::Debug for UnblindedElement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnblindedElement(<redacted>)")
    }
}

/// A client's side of one set session: one blind `r` for every element.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ClientSetSession {
    blind: Scalar,
    unblind: Scalar,
}

impl std::fmt::Debug for ClientSetSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSetSession(<redacted>)")
    }
}

impl ClientSetSession {
    /// Starts a session with a fresh non-zero blind.
    pub fn new(rng: &mut impl CryptoRngCore) -> Self {
        let blind = loop {
            let candidate = Scalar::random(rng);
            if candidate != Scalar::ZERO {
                break candidate;
            }
        };
        Self { unblind: blind.invert(), blind }
    }

    /// A session with a chosen blind, to reproduce RFC 9497's vectors with the batch
    /// code. Protocols use [`ClientSetSession::new`].
    pub fn from_blind(blind: &crate::oprf::Blind) -> Self {
        let blind = *blind.scalar();
        Self { unblind: blind.invert(), blind }
    }

    /// `r · H(x)` for every input, serialized, in parallel. Refuses an input that hashes
    /// to the identity (RFC 9497 InvalidInputError; probability ~2⁻²⁵²).
    pub fn blind_batch<I: AsRef<[u8]> + Sync>(
        &self,
        inputs: &[I],
    ) -> Result<Vec<ElementBytes>, BatchElementError> {
        let points = hash_batch(inputs)?;
        Ok(mul_and_compress_batch(&self.blind, &points))
    }

    /// `r⁻¹ · E` for every evaluated element the server returned, in parallel, in the
    /// order received. Every element goes through the checked decoder first.
    pub fn unblind_batch(
        &self,
        evaluated: &[ElementBytes],
    ) -> Result<Vec<UnblindedElement>, BatchElementError> {
        let points = decode_batch(evaluated)?;
        Ok(mul_and_compress_batch(&self.unblind, &points).into_iter().map(UnblindedElement).collect())
    }

    /// `R = r·G`, the session's noise anchor: with it a PSI server can add dummy replies
    /// that unblind to points it knows ([`crate::count_noise`]).
    pub fn noise_anchor(&self) -> crate::count_noise::NoiseAnchor {
        crate::count_noise::NoiseAnchor(
            (&self.blind * curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE).compress().0,
        )
    }

    /// Unblinds one element (the one-at-a-time form the batch must agree with).
    pub fn unblind_one(&self, evaluated: &ElementBytes) -> Result<UnblindedElement, CryptoError> {
        let point = crate::group::decode_element(evaluated)?;
        Ok(UnblindedElement((self.unblind * point).compress().0))
    }
}

/// The point-wise sum of a committee's evaluations of one batch of blinded elements,
/// `Σ_i k_i · B_j` for every `j`: the evaluation under the sum key `k = Σ_i k_i` that no
/// single member holds (an additively shared OPRF key, design.md computation 2).
///
/// Every member's elements go through the checked decoder ([`decode_batch`]) before they
/// are added, so a bad element is named by its index in the batch.
pub struct EvaluationSum {
    points: Vec<RistrettoPoint>,
    added: usize,
}

impl std::fmt::Debug for EvaluationSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EvaluationSum({} elements, {} evaluations added)", self.points.len(), self.added)
    }
}

impl EvaluationSum {
    /// An empty sum (all identities) for a batch of `len` blinded elements.
    pub fn new(len: usize) -> Self {
        Self { points: vec![RistrettoPoint::identity(); len], added: 0 }
    }

    /// Elements in the batch.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// How many evaluations (members) have been added.
    pub fn added(&self) -> usize {
        self.added
    }

    /// Decodes one member's evaluations of the batch and adds them point-wise. Refuses a
    /// batch of another length ([`CryptoError::BatchLength`], index = the shorter length)
    /// and, with its index, an element that fails [`crate::group::decode_element`]; a
    /// refused batch adds nothing.
    pub fn add(&mut self, evaluated: &[ElementBytes]) -> Result<(), BatchElementError> {
        if evaluated.len() != self.points.len() {
            return Err(BatchElementError {
                index: evaluated.len().min(self.points.len()),
                source: CryptoError::BatchLength { expected: self.points.len(), got: evaluated.len() },
            });
        }
        let decoded = decode_batch(evaluated)?;
        for (sum, point) in self.points.iter_mut().zip(decoded) {
            *sum += point;
        }
        self.added += 1;
        Ok(())
    }
}

impl ClientSetSession {
    /// `r⁻¹ · Σ_i E_i` for every element of a summed batch: `N = k · H(x)` under the sum
    /// key. Refuses, with its index, a sum that is the identity (only members choosing
    /// their replies to cancel can produce one; its tag would be the same for every such
    /// element).
    pub fn unblind_sum(&self, sum: &EvaluationSum) -> Result<Vec<UnblindedElement>, BatchElementError> {
        if let Some(index) = sum.points.iter().position(|p| p.is_identity()) {
            return Err(BatchElementError { index, source: CryptoError::IdentityElement });
        }
        Ok(mul_and_compress_batch(&self.unblind, &sum.points).into_iter().map(UnblindedElement).collect())
    }
}

/// `H(x)` for every input, in parallel, refusing the identity.
fn hash_batch<I: AsRef<[u8]> + Sync>(inputs: &[I]) -> Result<Vec<RistrettoPoint>, BatchElementError> {
    let suite = Suite::base();
    try_par_map(inputs, |input| {
        let point = suite.hash_to_group(input.as_ref());
        if point.is_identity() {
            Err(CryptoError::IdentityElement)
        } else {
            Ok(point)
        }
    })
}

/// The server's `k · B` for every blinded element, serialized, in parallel.
pub fn evaluate_batch(
    key: &OprfKey,
    blinded: &[ElementBytes],
) -> Result<Vec<ElementBytes>, BatchElementError> {
    let points = decode_batch(blinded)?;
    Ok(mul_and_compress_batch(key.scalar(), &points))
}

/// `k · H(y)` for the key holder's own inputs: what it compares the client's values to.
pub fn evaluate_own_batch<I: AsRef<[u8]> + Sync>(
    key: &OprfKey,
    inputs: &[I],
) -> Result<Vec<UnblindedElement>, BatchElementError> {
    let points = hash_batch(inputs)?;
    Ok(mul_and_compress_batch(key.scalar(), &points).into_iter().map(UnblindedElement).collect())
}

/// RFC 9497 Finalize's hash over an unblinded element: equal to `Finalize(input, ...)`
/// for the blind that produced it (used to check the set code against the RFC).
pub fn finalize_unblinded(
    input: &[u8],
    element: &UnblindedElement,
) -> Result<crate::oprf::OprfOutput, CryptoError> {
    crate::oprf::finalize_hash(input, &element.0)
}

/// Number of tag bits for sets of sizes `n` and `m` at `statistical_bits` of security:
/// the chance that any of the n·m pairs collide is below 2^-statistical_bits when the
/// tag has `statistical_bits + log2 n + log2 m` bits. Rounded up to whole bytes.
pub fn tag_bits_for(n: u64, m: u64, statistical_bits: u32) -> Result<u32, CryptoError> {
    let log2_ceil = |v: u64| if v <= 1 { 0 } else { 64 - (v - 1).leading_zeros() };
    let bits = statistical_bits.max(MIN_TAG_BITS) + log2_ceil(n) + log2_ceil(m);
    let bits = bits.div_ceil(8) * 8;
    if bits > MAX_TAG_BITS {
        return Err(CryptoError::TagLength { bits, min: MIN_TAG_BITS, max: MAX_TAG_BITS });
    }
    Ok(bits)
}

/// A truncated tag, stored in 16 bytes with the unused tail zeroed so that tags of one
/// length compare and hash by value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub [u8; 16]);

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tag({})", hex::encode(self.0))
    }
}

/// What tags and pads of one (contract, epoch) are bound to.
#[derive(Clone, Debug)]
pub struct TagContext {
    tag_prefix: Sha512,
    pad_prefix: Sha512,
    tag_len: usize,
}

impl TagContext {
    /// Binds tags and pads to `contract` and `epoch`, with tags of `tag_bits` bits (a
    /// multiple of 8 in [`MIN_TAG_BITS`], [`MAX_TAG_BITS`]).
    pub fn new(contract: &ContractId, epoch: Epoch, tag_bits: u32) -> Result<Self, CryptoError> {
        if !(MIN_TAG_BITS..=MAX_TAG_BITS).contains(&tag_bits) || tag_bits % 8 != 0 {
            return Err(CryptoError::TagLength { bits: tag_bits, min: MIN_TAG_BITS, max: MAX_TAG_BITS });
        }
        let prefix = |label: &[u8]| {
            let mut hasher = Sha512::new();
            hasher.update(label);
            // Contract ids are at most 64 bytes (ids.rs), so the length fits in u16.
            hasher.update((contract.as_bytes().len() as u16).to_be_bytes());
            hasher.update(contract.as_bytes());
            hasher.update(epoch.to_be_bytes());
            hasher
        };
        Ok(Self {
            tag_prefix: prefix(b"xmcredit tag"),
            pad_prefix: prefix(b"xmcredit pad"),
            tag_len: (tag_bits / 8) as usize,
        })
    }

    /// Tag length in bytes.
    pub fn tag_len(&self) -> usize {
        self.tag_len
    }

    /// The tag of one unblinded element.
    pub fn tag(&self, element: &UnblindedElement) -> Tag {
        let mut hasher = self.tag_prefix.clone();
        hasher.update(element.0);
        let digest = hasher.finalize();
        let mut tag = [0u8; 16];
        tag[..self.tag_len].copy_from_slice(&digest[..self.tag_len]);
        Tag(tag)
    }

    /// Tags of a batch, in parallel.
    pub fn tag_batch(&self, elements: &[UnblindedElement]) -> Vec<Tag> {
        par_map(elements, |element| self.tag(element))
    }

    /// Fills `out` with the pad of one unblinded element.
    pub fn pad_into(&self, element: &UnblindedElement, out: &mut [u8]) {
        for (block, chunk) in out.chunks_mut(64).enumerate() {
            let mut hasher = self.pad_prefix.clone();
            hasher.update(element.0);
            hasher.update((block as u32).to_be_bytes());
            let digest = hasher.finalize();
            chunk.copy_from_slice(&digest[..chunk.len()]);
        }
    }

    /// The 64-bit additive pad of one element, for lookups: the pad's first 8 bytes,
    /// little-endian.
    pub fn pad_u64(&self, element: &UnblindedElement) -> u64 {
        let mut bytes = [0u8; 8];
        self.pad_into(element, &mut bytes);
        u64::from_le_bytes(bytes)
    }

    /// XORs `data` with the pad of `element` (label encryption and decryption).
    pub fn xor_pad(&self, element: &UnblindedElement, data: &mut [u8]) {
        let mut pad = vec![0u8; data.len()];
        self.pad_into(element, &mut pad);
        data.iter_mut().zip(pad.iter()).for_each(|(d, p)| *d ^= p);
        pad.zeroize();
    }
}
