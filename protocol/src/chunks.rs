//! Numbered, fixed-size chunks: the one chunking rule of the set protocols (PSI, lookup
//! and overthreshold). A sequence of `total` items travels in chunks numbered 0, 1, 2,
//! …, each holding exactly the session's chunk size, the last one the rest. Every error
//! names its protocol (each protocol module's `PROTOCOL`) and the message or items.

use xmcredit_crypto::group::BatchElementError;

use crate::ProtocolError;

/// Refuses a chunk whose number is not `expected`.
pub(crate) fn check_seq(
    protocol: &'static str,
    what: &'static str,
    expected: u32,
    got: u32,
) -> Result<(), ProtocolError> {
    if got != expected {
        return Err(ProtocolError::ChunkOutOfOrder { protocol, what, expected, got });
    }
    Ok(())
}

/// Checks a chunk of `got` items against a total of `declared`, `received` of which
/// came before: not past the total, and exactly the chunking's size. Returns the items
/// received after this chunk.
pub(crate) fn check_chunk(
    protocol: &'static str,
    what: &'static str,
    declared: u64,
    received: u64,
    chunk_size: u32,
    seq: u32,
    got: usize,
) -> Result<u64, ProtocolError> {
    let after = received + got as u64;
    if after > declared {
        return Err(ProtocolError::TooManyElements { protocol, what, declared, got: after });
    }
    let expected = chunk_len(declared, chunk_size, seq);
    if got as u64 != expected {
        return Err(ProtocolError::ChunkLength { protocol, what, seq, expected, got: got as u64 });
    }
    Ok(after)
}

/// Items in chunk `seq` of a `total`-item sequence.
pub(crate) fn chunk_len(total: u64, chunk_size: u32, seq: u32) -> u64 {
    let start = u64::from(seq) * u64::from(chunk_size);
    total.saturating_sub(start).min(u64::from(chunk_size))
}

/// Chunks in a `total`-item sequence; `None` when their numbers would not fit in u32.
pub(crate) fn chunk_count(total: u64, chunk_size: u32) -> Option<u32> {
    u32::try_from(total.div_ceil(u64::from(chunk_size.max(1)))).ok()
}

/// Re-bases a batch error's index from the chunk to the whole set.
pub(crate) fn at_offset(offset: u64) -> impl Fn(BatchElementError) -> ProtocolError {
    move |error| {
        ProtocolError::InvalidElement(BatchElementError {
            index: usize::try_from(offset).unwrap_or(usize::MAX).saturating_add(error.index),
            source: error.source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{chunk_count, chunk_len};

    #[test]
    fn chunking_covers_the_total_exactly() {
        for (total, chunk_size) in [(0u64, 4u32), (1, 4), (4, 4), (10, 4), (65536, 4096), (7, 1)] {
            let count = chunk_count(total, chunk_size).expect("fits");
            let sum: u64 = (0..count).map(|seq| chunk_len(total, chunk_size, seq)).sum();
            assert_eq!(sum, total, "{total} in chunks of {chunk_size}");
            assert!((0..count).all(|seq| chunk_len(total, chunk_size, seq) > 0));
            assert_eq!(chunk_len(total, chunk_size, count), 0);
        }
        assert_eq!(chunk_count(u64::MAX, 1), None);
    }
}
