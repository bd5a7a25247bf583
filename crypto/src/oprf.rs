//! The OPRF of RFC 9497, ciphersuite ristretto255-SHA512, base mode (§3.3.1).
//!
//! Only the base (OPRF) protocol is implemented. The verifiable and partially-oblivious
//! modes differ from it in the context string (§3.1) and add proofs; their context
//! strings are available through [`Mode`] solely so that the RFC's batched vectors,
//! which it gives only for those modes, can check Blind, BlindEvaluate and Finalize on
//! batches. No proof is produced or verified here.

use std::sync::LazyLock;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::group::{decode_element, decode_scalar, ElementBytes};
use crate::h2c::XmdSha512;
use crate::CryptoError;

/// RFC 9497 §4.1: the ciphersuite identifier.
pub const SUITE_ID: &[u8] = b"ristretto255-SHA512";
/// Length of Finalize's output (`Nh`, SHA-512).
pub const OUTPUT_LEN: usize = 64;

/// RFC 9497 §3.1 protocol modes; only their context strings are used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Oprf = 0x00,
    Voprf = 0x01,
    Poprf = 0x02,
}

/// The ciphersuite bound to one mode's context string
/// `"OPRFV1-" || I2OSP(mode, 1) || "-" || "ristretto255-SHA512"`.
#[derive(Debug, Clone)]
pub struct Suite {
    context: Vec<u8>,
    hash_to_group: XmdSha512,
}

static BASE_SUITE: LazyLock<Suite> = LazyLock::new(|| Suite::new(Mode::Oprf));

impl Suite {
    /// The base-mode suite every xmcredit protocol uses.
    pub fn base() -> &'static Suite {
        &BASE_SUITE
    }

    /// A suite with another mode's context string (for the RFC's batched vectors).
    pub fn new(mode: Mode) -> Self {
        let mut context = b"OPRFV1-".to_vec();
        context.push(mode as u8);
        context.push(b'-');
        context.extend_from_slice(SUITE_ID);
        let hash_to_group = XmdSha512::new(&[b"HashToGroup-".as_slice(), &context].concat());
        Self { context, hash_to_group }
    }

    /// The context string of RFC 9497 §3.1.
    pub fn context_string(&self) -> &[u8] {
        &self.context
    }

    /// `HashToGroup(x)`: `hash_to_ristretto255` with DST `"HashToGroup-" || contextString`.
    pub fn hash_to_group(&self, input: &[u8]) -> RistrettoPoint {
        self.hash_to_group.hash_to_ristretto255(input)
    }

    /// `HashToScalar(x, DST)`: 64 bytes of `expand_message_xmd` reduced mod the order.
    pub fn hash_to_scalar_with_dst(&self, input: &[u8], dst: &[u8]) -> Scalar {
        let mut uniform = [0u8; 64];
        if XmdSha512::new(dst).expand_into(input, &mut uniform).is_err() {
            unreachable!("64-byte expansion is within RFC 9380 bounds");
        }
        Scalar::from_bytes_mod_order_wide(&uniform)
    }

    /// RFC 9497 §3.2.1 `DeriveKeyPair(seed, info)`.
    pub fn derive_key_pair(&self, seed: &[u8; 32], info: &[u8]) -> Result<OprfKey, CryptoError> {
        let info_len = u16::try_from(info.len()).map_err(|_| CryptoError::DeriveKeyPair)?;
        let mut derive_input = Vec::with_capacity(32 + 2 + info.len() + 1);
        derive_input.extend_from_slice(seed);
        derive_input.extend_from_slice(&info_len.to_be_bytes());
        derive_input.extend_from_slice(info);
        let dst = [b"DeriveKeyPair".as_slice(), &self.context].concat();
        let counter_at = derive_input.len();
        derive_input.push(0);
        for counter in 0..=255u8 {
            derive_input[counter_at] = counter;
            let secret = self.hash_to_scalar_with_dst(&derive_input, &dst);
            if secret != Scalar::ZERO {
                derive_input.zeroize();
                return Ok(OprfKey { secret });
            }
        }
        derive_input.zeroize();
        Err(CryptoError::DeriveKeyPair)
    }

    /// RFC 9497 §3.3.1 `Blind(input, blind)` with a caller-chosen blind (for the test
    /// vectors and for set sessions, which share one blind).
    pub fn blind_with(&self, input: &[u8], blind: &Blind) -> Result<BlindedElement, CryptoError> {
        let input_element = self.hash_to_group(input);
        if input_element.is_identity() {
            return Err(CryptoError::IdentityElement);
        }
        Ok(BlindedElement(blind.scalar * input_element))
    }

    /// RFC 9497 §3.3.1 `Blind(input)` with a fresh random blind.
    pub fn blind(
        &self,
        input: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Blind, BlindedElement), CryptoError> {
        let blind = Blind::random(rng);
        let blinded = self.blind_with(input, &blind)?;
        Ok((blind, blinded))
    }

    /// RFC 9497 §3.3.1 `Finalize(input, blind, evaluatedElement)`:
    /// `Hash(I2OSP(len(input), 2) || input || I2OSP(len(unblinded), 2) || unblinded || "Finalize")`.
    pub fn finalize(
        &self,
        input: &[u8],
        blind: &Blind,
        evaluated: &EvaluatedElement,
    ) -> Result<OprfOutput, CryptoError> {
        let unblinded = (blind.scalar.invert() * evaluated.0).compress();
        finalize_hash(input, &unblinded.0)
    }
}

/// The Finalize hash over an already-unblinded element.
pub(crate) fn finalize_hash(input: &[u8], unblinded: &ElementBytes) -> Result<OprfOutput, CryptoError> {
    let input_len = u16::try_from(input.len())
        .map_err(|_| CryptoError::ExpandMessage("OPRF input longer than 65535 bytes"))?;
    let mut hasher = Sha512::new();
    hasher.update(input_len.to_be_bytes());
    hasher.update(input);
    hasher.update(32u16.to_be_bytes());
    hasher.update(unblinded);
    hasher.update(b"Finalize");
    Ok(OprfOutput(hasher.finalize().into()))
}

/// RFC 9497 §3.3.1 `BlindEvaluate(skS, blindedElement)`.
pub fn blind_evaluate(key: &OprfKey, blinded: &BlindedElement) -> EvaluatedElement {
    EvaluatedElement(key.secret * blinded.0)
}

/// A server's OPRF private key `skS`. Zeroized on drop, redacted in `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct OprfKey {
    secret: Scalar,
}

impl OprfKey {
    /// A fresh random key (RFC 9497 §3.2 GenerateKeyPair).
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        loop {
            let secret = Scalar::random(rng);
            if secret != Scalar::ZERO {
                return Self { secret };
            }
        }
    }

    /// A key from its canonical serialization (`DeserializeScalar`), refusing zero.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let secret = decode_scalar(bytes)?;
        if secret == Scalar::ZERO {
            return Err(CryptoError::ZeroScalar);
        }
        Ok(Self { secret })
    }

    /// `SerializeScalar(skS)`; the caller owns zeroizing the copy.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// `pkS = skS · G`.
    pub fn public_key(&self) -> ElementBytes {
        (&self.secret * RISTRETTO_BASEPOINT_TABLE).compress().0
    }

    pub(crate) fn scalar(&self) -> &Scalar {
        &self.secret
    }
}

impl std::fmt::Debug for OprfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OprfKey(<redacted>)")
    }
}

/// A client's blinding scalar. Zeroized on drop, redacted in `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Blind {
    scalar: Scalar,
}

impl Blind {
    /// A fresh non-zero blind (RFC 9497 §3.3.1 `RandomScalar`).
    pub fn random(rng: &mut impl CryptoRngCore) -> Self {
        loop {
            let scalar = Scalar::random(rng);
            if scalar != Scalar::ZERO {
                return Self { scalar };
            }
        }
    }

    /// A blind from its serialization (test vectors), refusing zero.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let scalar = decode_scalar(bytes)?;
        if scalar == Scalar::ZERO {
            return Err(CryptoError::ZeroScalar);
        }
        Ok(Self { scalar })
    }
}

impl Blind {
    pub(crate) fn scalar(&self) -> &Scalar {
        &self.scalar
    }
}

impl std::fmt::Debug for Blind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Blind(<redacted>)")
    }
}

/// `blind · H(x)`: what a client sends. Never the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlindedElement(pub(crate) RistrettoPoint);

/// `k · blind · H(x)`: what a server returns. Never the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvaluatedElement(pub(crate) RistrettoPoint);

macro_rules! element_codec {
    ($ty:ident) => {
        impl $ty {
            /// Decodes a peer's bytes through [`decode_element`].
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
                decode_element(bytes).map(Self)
            }

            pub fn to_bytes(&self) -> ElementBytes {
                self.0.compress().0
            }
        }
    };
}
element_codec!(BlindedElement);
element_codec!(EvaluatedElement);

/// The 64-byte output of RFC 9497 Finalize.
#[derive(Clone, PartialEq, Eq)]
pub struct OprfOutput(pub [u8; OUTPUT_LEN]);

impl std::fmt::Debug for OprfOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OprfOutput({})", hex::encode(self.0))
    }
}
