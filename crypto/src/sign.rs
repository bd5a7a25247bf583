//! Ed25519 identities (RFC 8032, via ed25519-dalek): every node signs contracts and its
//! SecAgg key advertisements with its identity key. Verification is strict (no
//! small-order keys, canonical signatures only).

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::CryptoError;

pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;

/// A node's Ed25519 signing key. ed25519-dalek zeroizes it on drop; redacted in `Debug`.
#[derive(Clone)]
pub struct IdentityKey(SigningKey);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey(public: {})", self.public_key())
    }
}

impl IdentityKey {
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self(SigningKey::generate(rng))
    }

    pub fn from_seed(bytes: &[u8]) -> Result<Self, CryptoError> {
        let seed: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::Malformed {
            what: "identity key",
            reason: format!("{} bytes, want 32", bytes.len()),
        })?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The secret seed, for writing the key file.
    pub fn expose_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public_key(&self) -> IdentityPublicKey {
        IdentityPublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

/// A node's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityPublicKey(VerifyingKey);

impl IdentityPublicKey {
    /// Decodes a public key, refusing non-canonical and small-order points.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| CryptoError::Malformed {
            what: "Ed25519 public key",
            reason: format!("{} bytes, want 32", bytes.len()),
        })?;
        let key = VerifyingKey::from_bytes(&array)
            .map_err(|e| CryptoError::Malformed { what: "Ed25519 public key", reason: e.to_string() })?;
        if key.is_weak() {
            return Err(CryptoError::Malformed {
                what: "Ed25519 public key",
                reason: "small-order point".into(),
            });
        }
        Ok(Self(key))
    }

    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(text.trim())
            .map_err(|e| CryptoError::Malformed { what: "Ed25519 public key", reason: e.to_string() })?;
        Self::from_bytes(&bytes)
    }

    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_bytes()
    }

    /// Strict verification (RFC 8032 §5.1.7 with canonical `S` and no weak keys).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), CryptoError> {
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0.verify_strict(message, &signature).map_err(|_| CryptoError::BadSignature)
    }
}

impl std::fmt::Display for IdentityPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl std::fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityPublicKey({self})")
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl Signature {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; SIGNATURE_LEN] = bytes.try_into().map_err(|_| CryptoError::Malformed {
            what: "Ed25519 signature",
            reason: format!("{} bytes, want 64", bytes.len()),
        })?;
        Ok(Self(array))
    }

    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(text.trim())
            .map_err(|e| CryptoError::Malformed { what: "Ed25519 signature", reason: e.to_string() })?;
        Self::from_bytes(&bytes)
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({self})")
    }
}
