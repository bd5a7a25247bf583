//! Private aggregate lookups (design.md computation 4): output widths, the pads a
//! provider adds to its contributions, and the provider's batched preparation.
//!
//! A provider `j` holds an OPRF key `k_j` (purpose `lookup provider`). For every entry
//! `u` of the public universe it publishes `v_j(u) = (g_j(u) + pad_j(u)) mod 2^w`, where
//! `pad_j(u)` is derived from `N_j(u) = k_j · H(u)` alone, so a querier who obtains
//! `N_j(x)` for its own `x` (by a blinded OPRF query) can remove the pad, and no one can
//! for any other entry.
//!
//! ```text
//! context = I2OSP(len(contract_id), 2) || contract_id (UTF-8) || I2OSP(epoch, 8)
//!           || universe digest (32) || I2OSP(w, 1)
//! digest  = SHA-512("xmcredit lookup pad" || context || N)          (label: 19 ASCII bytes)
//! pad     = OS2IP(digest[0..8]) mod 2^w                             (big-endian u64, low w bits)
//! v       = (g + pad) mod 2^w
//! ```
//!
//! `N` is the 32-byte canonical encoding of `k_j · H(u)` (RFC 9497 base-mode
//! HashToGroup). The label differs from the set pads' `"xmcredit pad"` in its ninth
//! byte, so a lookup pad never equals a PSI pad or tag. Binding the universe digest and
//! the width means two vectors of one key under another universe or width have
//! independent pads.
//!
//! Values are taken mod 2^w; a signed value (points with negative rules) is its two's
//! complement in w bits ([`Width::encode_signed`], [`Width::decode_signed`]).

use rayon::prelude::*;
use sha2::{Digest, Sha512};

use crate::oprf::OprfKey;
use crate::set::{evaluate_own_batch, UnblindedElement};
use crate::{ContractId, CryptoError, Epoch};

/// Domain-separation label of lookup pads.
pub const PAD_LABEL: &[u8] = b"xmcredit lookup pad";

/// Widest output, in bits.
pub const MAX_WIDTH_BITS: u32 = 64;

/// Universe entries evaluated per batch in [`padded_contributions`]: keeps the
/// intermediate `N` values to 512 KiB however large the universe is, while each batch
/// is still large enough for the parallel batch code.
const PREPARE_BATCH: usize = 1 << 14;

/// The output width `w` of a lookup contract (`limits.output_bits`), 1 to 64 bits.
/// Every value, pad and sum is taken mod `2^w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Width(u32);

impl Width {
    /// A width of `bits` bits, refused outside `1..=64`.
    pub fn new(bits: u32) -> Result<Self, CryptoError> {
        if !(1..=MAX_WIDTH_BITS).contains(&bits) {
            return Err(CryptoError::LookupWidth { bits });
        }
        Ok(Self(bits))
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    /// `2^w - 1`.
    pub fn mask(self) -> u64 {
        u64::MAX >> (64 - self.0)
    }

    /// Bytes of one packed entry: `ceil(w / 8)`.
    pub fn entry_len(self) -> usize {
        self.0.div_ceil(8) as usize
    }

    /// Whether `value < 2^w`.
    pub fn fits(self, value: u64) -> bool {
        value & !self.mask() == 0
    }

    /// `value mod 2^w`.
    pub fn reduce(self, value: u64) -> u64 {
        value & self.mask()
    }

    /// `(a + b) mod 2^w`.
    pub fn add(self, a: u64, b: u64) -> u64 {
        self.reduce(a.wrapping_add(b))
    }

    /// `(a - b) mod 2^w`.
    pub fn sub(self, a: u64, b: u64) -> u64 {
        self.reduce(a.wrapping_sub(b))
    }

    /// An unsigned value, refused unless `value < 2^w`.
    pub fn encode_unsigned(self, value: u64) -> Result<u64, CryptoError> {
        if !self.fits(value) {
            return Err(CryptoError::ValueOutOfRange {
                value: i128::from(value),
                bits: self.0,
                signed: false,
            });
        }
        Ok(value)
    }

    /// A signed value as its w-bit two's complement, refused outside
    /// `[-2^(w-1), 2^(w-1) - 1]`.
    pub fn encode_signed(self, value: i64) -> Result<u64, CryptoError> {
        let half = 1i128 << (self.0 - 1);
        if !(-half..half).contains(&i128::from(value)) {
            return Err(CryptoError::ValueOutOfRange {
                value: i128::from(value),
                bits: self.0,
                signed: true,
            });
        }
        Ok(self.reduce(value as u64))
    }

    /// Reads a w-bit value as two's complement (sign bit = bit `w - 1`). Bits above `w`
    /// are ignored.
    pub fn decode_signed(self, value: u64) -> i64 {
        let shift = 64 - self.0;
        ((value << shift) as i64) >> shift
    }
}

impl std::fmt::Display for Width {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bits", self.0)
    }
}

/// What lookup pads of one (contract, epoch, universe, width) are bound to.
#[derive(Clone, Debug)]
pub struct LookupPadContext {
    prefix: Sha512,
    width: Width,
}

impl LookupPadContext {
    pub fn new(contract: &ContractId, epoch: Epoch, universe_digest: &[u8; 32], width: Width) -> Self {
        let mut prefix = Sha512::new();
        prefix.update(PAD_LABEL);
        // Contract ids are at most 64 bytes (ids.rs), so the length fits in u16.
        prefix.update((contract.as_bytes().len() as u16).to_be_bytes());
        prefix.update(contract.as_bytes());
        prefix.update(epoch.to_be_bytes());
        prefix.update(universe_digest);
        // At most 64 (Width::new).
        prefix.update([width.bits() as u8]);
        Self { prefix, width }
    }

    pub fn width(&self) -> Width {
        self.width
    }

    /// `pad(N) = OS2IP(SHA-512(label || context || N)[0..8]) mod 2^w`.
    pub fn pad(&self, element: &UnblindedElement) -> u64 {
        let mut hasher = self.prefix.clone();
        hasher.update(element.0);
        let digest = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        self.width.reduce(u64::from_be_bytes(first))
    }

    /// Pads of a batch, in parallel, in order.
    pub fn pad_batch(&self, elements: &[UnblindedElement]) -> Vec<u64> {
        crate::group::par_map(elements, |element| self.pad(element))
    }
}

/// A provider's contribution vector: `v(u) = (g(u) + pad(k · H(u))) mod 2^w` for every
/// universe entry `u`, in the universe's order, computed in parallel batches.
///
/// `values[i]` is `g(universe[i])` and must already fit the width (a wider value is
/// refused with [`CryptoError::ValueOutOfRange`] rather than silently reduced).
/// Refuses lists of different lengths ([`CryptoError::BatchLength`]) and an entry that
/// hashes to the identity (probability ~2⁻²⁵²).
pub fn padded_contributions<I: AsRef<[u8]> + Sync>(
    key: &OprfKey,
    context: &LookupPadContext,
    universe: &[I],
    values: &[u64],
) -> Result<Vec<u64>, CryptoError> {
    if universe.len() != values.len() {
        return Err(CryptoError::BatchLength { expected: universe.len(), got: values.len() });
    }
    let width = context.width();
    if let Some(&wide) = values.iter().find(|v| !width.fits(**v)) {
        return Err(CryptoError::ValueOutOfRange {
            value: i128::from(wide),
            bits: width.bits(),
            signed: false,
        });
    }
    let mut out = Vec::with_capacity(values.len());
    for (entries, values) in universe.chunks(PREPARE_BATCH).zip(values.chunks(PREPARE_BATCH)) {
        let evaluated = evaluate_own_batch(key, entries).map_err(|e| e.source)?;
        let padded: Vec<u64> = if evaluated.len() < 256 {
            evaluated.iter().zip(values).map(|(n, g)| width.add(*g, context.pad(n))).collect()
        } else {
            evaluated
                .par_iter()
                .zip(values.par_iter())
                .with_min_len(64)
                .map(|(n, g)| width.add(*g, context.pad(n)))
                .collect()
        };
        out.extend(padded);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths() {
        assert!(Width::new(0).is_err());
        assert!(Width::new(65).is_err());
        let w8 = Width::new(8).expect("valid");
        assert_eq!(w8.mask(), 0xff);
        assert_eq!(w8.entry_len(), 1);
        assert_eq!(Width::new(9).expect("valid").entry_len(), 2);
        let w64 = Width::new(64).expect("valid");
        assert_eq!(w64.mask(), u64::MAX);
        assert_eq!(w64.entry_len(), 8);
        assert_eq!(w8.add(200, 100), 44);
        assert_eq!(w8.sub(5, 10), 251);
        assert_eq!(w64.add(u64::MAX, 2), 1);
    }

    #[test]
    fn twos_complement_round_trips_at_every_width() {
        for bits in 1..=64 {
            let w = Width::new(bits).expect("valid");
            let half = 1i128 << (bits - 1);
            for v in [-half, -half + 1, -1, 0, 1, half - 2, half - 1] {
                if !(-half..half).contains(&v) {
                    continue;
                }
                let v = v as i64;
                let encoded = w.encode_signed(v).expect("in range");
                assert!(w.fits(encoded));
                assert_eq!(w.decode_signed(encoded), v, "{v} at {bits} bits");
            }
            assert!(w.encode_signed((half as i64).saturating_add(0)).is_err() || bits == 64);
            if bits < 64 {
                assert!(w.encode_signed(-(half as i64) - 1).is_err());
                assert!(w.encode_unsigned(1 << bits).is_err());
            }
        }
        // Sums of two's complement values wrap to the right signed sum.
        let w = Width::new(12).expect("valid");
        let sum = [-300i64, 120, -5].iter().fold(0, |acc, v| w.add(acc, w.encode_signed(*v).expect("fits")));
        assert_eq!(w.decode_signed(sum), -185);
    }

    #[test]
    fn pad_label_differs_from_the_set_pad_label() {
        assert_eq!(PAD_LABEL.len(), 19);
        assert_ne!(&PAD_LABEL[..12], b"xmcredit pad");
    }
}
