//! Hashing to ristretto255 exactly as RFC 9380 specifies it:
//! `expand_message_xmd` with SHA-512 (§5.3.1) followed by the RFC 9496 §4.3.4 one-way
//! map (`hash_to_ristretto255`, RFC 9380 Appendix B).

use curve25519_dalek::ristretto::RistrettoPoint;
use sha2::{Digest, Sha512};

use crate::CryptoError;

/// SHA-512's output size `b_in_bytes`.
const B_IN_BYTES: usize = 64;
/// SHA-512's input block size `s_in_bytes`.
const S_IN_BYTES: usize = 128;

/// `expand_message_xmd` bound to one domain-separation tag.
///
/// The first block hashed for every message is `Z_pad` (128 zero bytes), so the SHA-512
/// state after it is computed once here and cloned per message: that saves one of the
/// compressions per element when hashing millions of inputs.
#[derive(Clone)]
pub struct XmdSha512 {
    dst_prime: Vec<u8>,
    after_zero_pad: Sha512,
}

impl std::fmt::Debug for XmdSha512 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmdSha512").field("dst_prime", &hex::encode(&self.dst_prime)).finish()
    }
}

impl XmdSha512 {
    /// Binds the expander to `dst`. A DST longer than 255 bytes is first reduced as
    /// RFC 9380 §5.3.3 requires: `H("H2C-OVERSIZE-DST-" || DST)`.
    pub fn new(dst: &[u8]) -> Self {
        let dst: Vec<u8> = if dst.len() > 255 {
            let mut hasher = Sha512::new();
            hasher.update(b"H2C-OVERSIZE-DST-");
            hasher.update(dst);
            hasher.finalize().to_vec()
        } else {
            dst.to_vec()
        };
        let mut dst_prime = dst;
        // Cannot truncate: the DST is at most 255 bytes here (64 after reduction).
        dst_prime.push(dst_prime.len() as u8);
        let mut after_zero_pad = Sha512::new();
        after_zero_pad.update([0u8; S_IN_BYTES]);
        Self { dst_prime, after_zero_pad }
    }

    /// `expand_message_xmd(msg, DST, len_in_bytes)` into `out`, whose length is
    /// `len_in_bytes`.
    pub fn expand_into(&self, msg: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
        let len_in_bytes = out.len();
        let ell = len_in_bytes.div_ceil(B_IN_BYTES);
        if len_in_bytes == 0 {
            return Err(CryptoError::ExpandMessage("len_in_bytes must be positive"));
        }
        if ell > 255 || len_in_bytes > 65535 {
            return Err(CryptoError::ExpandMessage("len_in_bytes too large for SHA-512"));
        }
        let mut hasher = self.after_zero_pad.clone();
        hasher.update(msg);
        hasher.update((len_in_bytes as u16).to_be_bytes());
        hasher.update([0u8]);
        hasher.update(&self.dst_prime);
        let b0 = hasher.finalize();

        let mut previous = [0u8; B_IN_BYTES];
        for (i, chunk) in out.chunks_mut(B_IN_BYTES).enumerate() {
            let mut hasher = Sha512::new();
            if i == 0 {
                hasher.update(b0);
            } else {
                let mixed: Vec<u8> = b0.iter().zip(previous.iter()).map(|(a, b)| a ^ b).collect();
                hasher.update(mixed);
            }
            hasher.update([(i + 1) as u8]);
            hasher.update(&self.dst_prime);
            previous.copy_from_slice(&hasher.finalize());
            chunk.copy_from_slice(&previous[..chunk.len()]);
        }
        Ok(())
    }

    /// `expand_message_xmd` returning a fresh vector.
    pub fn expand(&self, msg: &[u8], len_in_bytes: usize) -> Result<Vec<u8>, CryptoError> {
        let mut out = vec![0u8; len_in_bytes];
        self.expand_into(msg, &mut out)?;
        Ok(out)
    }

    /// RFC 9380 Appendix B `hash_to_ristretto255`: 64 uniform bytes through the RFC 9496
    /// §4.3.4 one-way map.
    pub fn hash_to_ristretto255(&self, msg: &[u8]) -> RistrettoPoint {
        let mut uniform = [0u8; 64];
        // 64 bytes is always within the bounds checked by expand_into.
        if self.expand_into(msg, &mut uniform).is_err() {
            unreachable!("64-byte expansion is within RFC 9380 bounds");
        }
        RistrettoPoint::from_uniform_bytes(&uniform)
    }
}

/// One-shot `expand_message_xmd` with SHA-512.
pub fn expand_message_xmd(msg: &[u8], dst: &[u8], len_in_bytes: usize) -> Result<Vec<u8>, CryptoError> {
    XmdSha512::new(dst).expand(msg, len_in_bytes)
}

/// One-shot `hash_to_ristretto255(msg, DST)`.
pub fn hash_to_ristretto255(msg: &[u8], dst: &[u8]) -> RistrettoPoint {
    XmdSha512::new(dst).hash_to_ristretto255(msg)
}
