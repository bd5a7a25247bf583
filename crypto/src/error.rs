use thiserror::Error;

/// Everything that can go wrong in this crate. Variants name what the caller (or the
/// peer who sent the bytes) did wrong, so a node can log and refuse with a reason.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// A group element had the wrong number of bytes (RFC 9497 §4.1: `Ne` = 32).
    #[error("group element must be 32 bytes, got {got}")]
    ElementLength { got: usize },
    /// The bytes are not the canonical encoding of a ristretto255 element (RFC 9496 §4.3.1).
    #[error("bytes are not a canonical ristretto255 encoding")]
    NonCanonicalElement,
    /// The identity element is refused wherever a peer supplies an element (RFC 9497 §4.1
    /// DeserializeElement, §3.3.1 InvalidInputError).
    #[error("the identity element is not allowed here")]
    IdentityElement,
    /// A scalar had the wrong number of bytes (RFC 9497 §4.1: `Ns` = 32).
    #[error("scalar must be 32 bytes, got {got}")]
    ScalarLength { got: usize },
    /// The bytes are not a canonical scalar mod the group order.
    #[error("bytes are not a canonical scalar")]
    NonCanonicalScalar,
    /// A zero scalar where RFC 9497 forbids one (a blind, a key).
    #[error("scalar must not be zero")]
    ZeroScalar,
    /// RFC 9497 §3.2.1 DeriveKeyPair ran out of counter values.
    #[error("key derivation failed (RFC 9497 DeriveKeyPairError)")]
    DeriveKeyPair,
    /// expand_message_xmd parameters out of the RFC 9380 §5.3.1 bounds.
    #[error("expand_message_xmd: {0}")]
    ExpandMessage(&'static str),
    /// A batch whose parts have different lengths.
    #[error("batch length mismatch: expected {expected}, got {got}")]
    BatchLength { expected: usize, got: usize },
    /// Shamir parameters that cannot work (t = 0, t > n, duplicate or zero indices).
    #[error("secret sharing: {0}")]
    Sharing(&'static str),
    /// Fewer shares than the threshold.
    #[error("need {threshold} shares to reconstruct, have {got}")]
    TooFewShares { threshold: usize, got: usize },
    /// AEAD open failed: wrong key, wrong associated data, or tampered ciphertext.
    #[error("authenticated decryption failed")]
    Decryption,
    /// An Ed25519 signature did not verify (or was malformed).
    #[error("signature does not verify")]
    BadSignature,
    /// An Ed25519 public key or signature had the wrong shape.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// An identifier (node, contract) that breaks its syntax rules.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidId { kind: &'static str, value: String, reason: &'static str },
    /// A tag length outside what the set sizes and this crate allow.
    #[error("tag length {bits} bits is outside [{min}, {max}]")]
    TagLength { bits: u32, min: u32, max: u32 },
    /// A lookup output width outside 1 to 64 bits (design.md computation 4).
    #[error("lookup output width {bits} bits is outside 1..=64")]
    LookupWidth { bits: u32 },
    /// Noise parameters no sampler accepts (a variance outside (0, 2^50], a
    /// non-positive ε).
    #[error("noise parameters refused: {reason}")]
    NoiseParameter { reason: String },
    /// A lookup value that does not fit the output width: unsigned values in
    /// `[0, 2^bits)`, signed ones in `[-2^(bits-1), 2^(bits-1))`.
    #[error("value {value} does not fit {bits} bits ({})", if *signed { "two's complement" } else { "unsigned" })]
    ValueOutOfRange { value: i128, bits: u32, signed: bool },
}
