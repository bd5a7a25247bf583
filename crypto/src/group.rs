//! The one door through which bytes become ristretto255 elements, and the encodings
//! used on the wire.
//!
//! A peer's 32 bytes are only ever turned into a point by [`decode_element`], which
//! refuses wrong lengths, non-canonical encodings (RFC 9496 §4.3.1) and the identity
//! (RFC 9497 §4.1 DeserializeElement).

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use rayon::prelude::*;

use crate::CryptoError;

/// Length of a serialized element (`Ne`) and scalar (`Ns`) for ristretto255.
pub const ELEMENT_LEN: usize = 32;
pub const SCALAR_LEN: usize = 32;

/// Below this many elements the batch forms stay on the calling thread: rayon's
/// fork/join costs more than it saves.
const PARALLEL_MIN: usize = 256;
/// Elements per work unit in the parallel forms: large enough to amortize the batched
/// inversion inside `double_and_compress_batch`.
const CHUNK: usize = 1024;

/// A serialized group element as it travels on the wire.
pub type ElementBytes = [u8; ELEMENT_LEN];

/// Decodes a peer-supplied element: exactly 32 bytes, canonical, not the identity.
pub fn decode_element(bytes: &[u8]) -> Result<RistrettoPoint, CryptoError> {
    let array: ElementBytes =
        bytes.try_into().map_err(|_| CryptoError::ElementLength { got: bytes.len() })?;
    let point = CompressedRistretto(array).decompress().ok_or(CryptoError::NonCanonicalElement)?;
    if point.is_identity() {
        return Err(CryptoError::IdentityElement);
    }
    Ok(point)
}

/// Decodes a canonical scalar (RFC 9497 DeserializeScalar).
pub fn decode_scalar(bytes: &[u8]) -> Result<Scalar, CryptoError> {
    let array: [u8; SCALAR_LEN] =
        bytes.try_into().map_err(|_| CryptoError::ScalarLength { got: bytes.len() })?;
    Option::from(Scalar::from_canonical_bytes(array)).ok_or(CryptoError::NonCanonicalScalar)
}

/// Index and reason of the first element of a batch that failed to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("element {index} of the batch: {source}")]
pub struct BatchElementError {
    pub index: usize,
    #[source]
    pub source: CryptoError,
}

/// Decodes a batch of peer-supplied elements in parallel with [`decode_element`]'s
/// checks, naming the first bad one.
pub fn decode_batch(elements: &[ElementBytes]) -> Result<Vec<RistrettoPoint>, BatchElementError> {
    let decode_chunk = |(chunk_index, chunk): (usize, &[ElementBytes])| {
        chunk
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                decode_element(bytes)
                    .map_err(|source| BatchElementError { index: chunk_index * CHUNK + i, source })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let chunks: Vec<Vec<RistrettoPoint>> = if elements.len() < PARALLEL_MIN {
        elements.chunks(CHUNK).enumerate().map(decode_chunk).collect::<Result<_, _>>()?
    } else {
        elements.par_chunks(CHUNK).enumerate().map(decode_chunk).collect::<Result<_, _>>()?
    };
    Ok(chunks.into_iter().flatten().collect())
}

/// `compress(scalar · P)` for every `P`, in parallel.
///
/// Multiplies by `scalar / 2` and lets `double_and_compress_batch` do the last doubling:
/// that batch form shares one inversion across the chunk and is several times faster
/// than compressing each point on its own. The result is byte-identical to
/// `(scalar * P).compress()`.
pub fn mul_and_compress_batch(scalar: &Scalar, points: &[RistrettoPoint]) -> Vec<ElementBytes> {
    // k/2 is as secret as k: zeroized when this returns.
    let half = zeroize::Zeroizing::new(scalar * Scalar::from(2u8).invert());
    let half = &*half;
    let work = |chunk: &[RistrettoPoint]| {
        let halved: Vec<RistrettoPoint> = chunk.iter().map(|p| half * p).collect();
        RistrettoPoint::double_and_compress_batch(&halved).into_iter().map(|c| c.0).collect::<Vec<_>>()
    };
    if points.len() < PARALLEL_MIN {
        points.chunks(CHUNK).flat_map(work).collect()
    } else {
        points.par_chunks(CHUNK).flat_map_iter(work).collect()
    }
}

/// Compresses a batch of points in parallel, one point at a time. Prefer
/// [`mul_and_compress_batch`] wherever a multiplication precedes compression: it folds
/// the batched doubling into the multiplication.
pub fn compress_batch(points: &[RistrettoPoint]) -> Vec<ElementBytes> {
    if points.len() < PARALLEL_MIN {
        points.iter().map(|p| p.compress().0).collect()
    } else {
        points.par_iter().map(|p| p.compress().0).collect()
    }
}

/// Runs `f` over `items` in parallel chunks when the batch is large enough.
pub(crate) fn par_map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync + Send) -> Vec<U> {
    if items.len() < PARALLEL_MIN {
        items.iter().map(f).collect()
    } else {
        items.par_iter().with_min_len(64).map(f).collect()
    }
}

/// Like [`par_map`] for fallible work, keeping the index of the first failure.
pub(crate) fn try_par_map<T: Sync, U: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<U, CryptoError> + Sync + Send,
) -> Result<Vec<U>, BatchElementError> {
    let indexed = |(index, item): (usize, &T)| f(item).map_err(|source| BatchElementError { index, source });
    if items.len() < PARALLEL_MIN {
        items.iter().enumerate().map(indexed).collect()
    } else {
        items.par_iter().enumerate().with_min_len(64).map(indexed).collect()
    }
}
