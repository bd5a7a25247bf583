//! The ChaCha20 PRG that expands a 32-byte seed into u64 masks (SecAgg's `PRG(b)` and
//! `PRG(s_uv)`, and lookup pads of long vectors).
//!
//! Element `i` of the mask stream is the little-endian u64 at keystream bytes
//! `8i .. 8i + 8` of ChaCha20 (RFC 8439 variant: 96-bit zero nonce, 32-bit counter
//! from 0) keyed by the seed. Any range can be produced on its own, so long vectors
//! are masked chunk by chunk, in parallel, with the same result as in one go.

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A PRG seed. Zeroized on drop, redacted in `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Seed(pub [u8; 32]);

impl PartialEq for Seed {
    /// Constant time: seeds are secrets.
    fn eq(&self, other: &Self) -> bool {
        subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
    }
}
impl Eq for Seed {}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}

/// Whether a mask is added or subtracted (SecAgg's `±PRG(s_uv)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskSign {
    Add,
    Subtract,
}

/// Largest mask stream: the ChaCha20 32-bit block counter covers 2^38 bytes.
pub const MAX_MASK_ELEMENTS: u64 = 1 << 35;

/// Writes mask elements `start .. start + out.len()` of `seed`'s stream into `out`.
pub fn fill_masks(seed: &Seed, start: u64, out: &mut [u64]) {
    debug_assert!(start + out.len() as u64 <= MAX_MASK_ELEMENTS);
    let mut cipher = ChaCha20::new(&seed.0.into(), &[0u8; 12].into());
    cipher.seek(start * 8);
    let mut buffer = [0u8; 4096];
    for chunk in out.chunks_mut(buffer.len() / 8) {
        let bytes = &mut buffer[..chunk.len() * 8];
        bytes.fill(0);
        cipher.apply_keystream(bytes);
        for (value, word) in chunk.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(word);
            *value = u64::from_le_bytes(le);
        }
    }
    buffer.zeroize();
}

/// Adds (or subtracts) mask elements `start ..` of `seed`'s stream to `values`, mod 2^64.
pub fn apply_masks(seed: &Seed, start: u64, values: &mut [u64], sign: MaskSign) {
    let mut masks = vec![0u64; values.len().min(8192)];
    let mut offset = start;
    for chunk in values.chunks_mut(masks.len().max(1)) {
        let masks = &mut masks[..chunk.len()];
        fill_masks(seed, offset, masks);
        for (value, mask) in chunk.iter_mut().zip(masks.iter()) {
            *value = match sign {
                MaskSign::Add => value.wrapping_add(*mask),
                MaskSign::Subtract => value.wrapping_sub(*mask),
            };
        }
        offset += chunk.len() as u64;
    }
    masks.zeroize();
}
