//! Diffie-Hellman on ristretto255 (SecAgg's two key pairs per node, Bonawitz et al. 2017
//! round 0): `shared = HKDF-SHA256(salt = "xmcredit dh v1", IKM = a·B, info = context)`.
//! The peer's public key goes through the checked decoder, so the identity and
//! non-canonical encodings are refused.

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::group::{decode_element, decode_scalar, ElementBytes};
use crate::CryptoError;

/// A DH secret key. Zeroized on drop, redacted in `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DhSecret(Scalar);

impl std::fmt::Debug for DhSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DhSecret(<redacted>)")
    }
}

/// A DH public key `a·G`; never the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhPublic(RistrettoPoint);

impl DhSecret {
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        loop {
            let scalar = Scalar::random(rng);
            if scalar != Scalar::ZERO {
                return Self(scalar);
            }
        }
    }

    /// The secret as a scalar, to be Shamir-shared (SecAgg shares the mask key).
    pub fn to_scalar(&self) -> Zeroizing<Scalar> {
        Zeroizing::new(self.0)
    }

    /// Rebuilds a secret reconstructed from shares; refuses zero.
    pub fn from_scalar(scalar: Scalar) -> Result<Self, CryptoError> {
        if scalar == Scalar::ZERO {
            return Err(CryptoError::ZeroScalar);
        }
        Ok(Self(scalar))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Self::from_scalar(decode_scalar(bytes)?)
    }

    pub fn public(&self) -> DhPublic {
        DhPublic(&self.0 * RISTRETTO_BASEPOINT_TABLE)
    }

    /// The 32-byte key shared with `peer`, bound to `context`.
    pub fn agree(&self, peer: &DhPublic, context: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut shared_point = (self.0 * peer.0).compress().0;
        let hkdf = Hkdf::<Sha256>::new(Some(b"xmcredit dh v1"), &shared_point);
        shared_point.zeroize();
        let mut key = Zeroizing::new([0u8; 32]);
        if hkdf.expand(context, key.as_mut()).is_err() {
            unreachable!("32 bytes is within HKDF-SHA256's output bound");
        }
        key
    }
}

impl DhPublic {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        decode_element(bytes).map(Self)
    }

    pub fn to_bytes(&self) -> ElementBytes {
        self.0.compress().0
    }
}
