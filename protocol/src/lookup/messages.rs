//! The wire messages of the lookup protocol and their byte encoding (documented, with
//! the exact layout, in the [module docs](super)).

use std::fmt;

use xmcredit_crypto::group::{ElementBytes, ELEMENT_LEN};
use xmcredit_crypto::lookup::Width;

use crate::wire::{Reader, Writer};
use crate::{ProtocolError, SessionBinding};

/// Version byte that starts every lookup message.
pub const WIRE_VERSION: u8 = 1;

/// Most elements one Blinded/EvaluatedChunk may carry (2 MiB of elements), as in PSI.
pub const MAX_CHUNK_ELEMENTS: usize = 1 << 16;

/// Most entries one VectorChunk may carry: 1 MiB at 64 bits per entry.
pub const MAX_VECTOR_CHUNK_ENTRIES: usize = 1 << 17;

/// The kind byte of each message. The range 0xC1..0xC4 is the lookup protocol's own (PSI
/// uses 0x81..0x87, SecAgg 0x00..0x41, overthreshold 0x91..0x96), so another protocol's
/// frame is refused here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LookupMessageKind {
    Hello,
    BlindedChunk,
    EvaluatedChunk,
    VectorChunk,
}

impl LookupMessageKind {
    pub fn code(self) -> u8 {
        match self {
            Self::Hello => 0xc1,
            Self::BlindedChunk => 0xc2,
            Self::EvaluatedChunk => 0xc3,
            Self::VectorChunk => 0xc4,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0xc1 => Self::Hello,
            0xc2 => Self::BlindedChunk,
            0xc3 => Self::EvaluatedChunk,
            0xc4 => Self::VectorChunk,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "lookup Hello",
            Self::BlindedChunk => "lookup BlindedChunk",
            Self::EvaluatedChunk => "lookup EvaluatedChunk",
            Self::VectorChunk => "lookup VectorChunk",
        }
    }
}

impl fmt::Display for LookupMessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Q → P: opens a query session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub binding: SessionBinding,
    /// Digest of the universe the querier's vector is over; the provider refuses
    /// another than the one it contributed over.
    pub universe_digest: [u8; 32],
    /// `n`, the number of lookups: what the provider learns and counts against the
    /// querier's quota.
    pub lookups: u64,
    /// Elements per chunk, in `1..=MAX_CHUNK_ELEMENTS`.
    pub chunk_size: u32,
}

/// Q → P: `r · H(x)` for the next chunk of the querier's lookups (RFC 9497 §3.3.1
/// Blind, one blind for the whole session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlindedChunk {
    pub binding: SessionBinding,
    pub seq: u32,
    pub elements: Vec<ElementBytes>,
}

/// P → Q: `k_j · r · H(x)` (RFC 9497 §3.3.1 BlindEvaluate) for chunk `seq`, in request
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvaluatedChunk {
    pub binding: SessionBinding,
    pub seq: u32,
    pub elements: Vec<ElementBytes>,
}

/// Coordinator → Q: a run of consecutive entries of the aggregate vector, with the
/// vector's header and digest repeated in every chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VectorChunk {
    pub binding: SessionBinding,
    pub universe_digest: [u8; 32],
    pub width: Width,
    /// Entries in the whole vector (= universe size).
    pub total_entries: u64,
    /// [`super::LookupVector::digest`] of the whole vector.
    pub vector_digest: [u8; 32],
    /// Index of this chunk's first entry.
    pub first_index: u64,
    /// Entries, each below `2^w`.
    pub entries: Vec<u64>,
}

/// Any lookup message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupMessage {
    Hello(Hello),
    BlindedChunk(BlindedChunk),
    EvaluatedChunk(EvaluatedChunk),
    VectorChunk(VectorChunk),
}

impl LookupMessage {
    pub fn kind(&self) -> LookupMessageKind {
        match self {
            Self::Hello(_) => LookupMessageKind::Hello,
            Self::BlindedChunk(_) => LookupMessageKind::BlindedChunk,
            Self::EvaluatedChunk(_) => LookupMessageKind::EvaluatedChunk,
            Self::VectorChunk(_) => LookupMessageKind::VectorChunk,
        }
    }

    pub fn binding(&self) -> &SessionBinding {
        match self {
            Self::Hello(m) => &m.binding,
            Self::BlindedChunk(m) => &m.binding,
            Self::EvaluatedChunk(m) => &m.binding,
            Self::VectorChunk(m) => &m.binding,
        }
    }

    /// The message's bytes (layout in the [module docs](super)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let kind = self.kind();
        let start = |capacity| Writer::new(WIRE_VERSION, kind.code(), self.binding(), capacity);
        match self {
            Self::Hello(m) => {
                let mut w = start(32 + 8 + 4);
                w.bytes(&m.universe_digest);
                w.u64(m.lookups);
                w.u32(m.chunk_size);
                w.into_bytes()
            }
            Self::BlindedChunk(BlindedChunk { seq, elements, .. })
            | Self::EvaluatedChunk(EvaluatedChunk { seq, elements, .. }) => {
                let mut w = start(4 + 4 + elements.len() * ELEMENT_LEN);
                w.u32(*seq);
                w.count(elements.len());
                for element in elements {
                    w.bytes(element);
                }
                w.into_bytes()
            }
            Self::VectorChunk(m) => {
                let entry_len = m.width.entry_len();
                let mut w = start(32 + 1 + 8 + 32 + 8 + 4 + m.entries.len() * entry_len);
                w.bytes(&m.universe_digest);
                // At most 64.
                w.u8(m.width.bits() as u8);
                w.u64(m.total_entries);
                w.bytes(&m.vector_digest);
                w.u64(m.first_index);
                w.count(m.entries.len());
                for entry in &m.entries {
                    w.bytes(&entry.to_be_bytes()[8 - entry_len..]);
                }
                w.into_bytes()
            }
        }
    }

    /// Decodes a message, refusing with [`ProtocolError::Malformed`] a wrong version or
    /// kind, a truncated field, a count above the limit or larger than the bytes left,
    /// a chunk size outside `1..=MAX_CHUNK_ELEMENTS`, a width outside 1..=64, a vector
    /// chunk that is empty (of a non-empty vector) or runs past the vector's end, an
    /// entry with bits set above the width, and trailing bytes. It checks shape only;
    /// meaning is the states' job.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(bytes, "lookup message");
        r.version(WIRE_VERSION)?;
        let code = r.u8()?;
        let kind = LookupMessageKind::from_code(code)
            .ok_or_else(|| r.malformed(format!("unknown message kind 0x{code:02x}")))?;
        r.rename(kind.name());
        let binding = r.binding()?;
        let message = match kind {
            LookupMessageKind::Hello => {
                let universe_digest = r.array()?;
                let lookups = r.u64()?;
                let chunk_size = r.u32()?;
                if chunk_size == 0 || chunk_size as usize > MAX_CHUNK_ELEMENTS {
                    return Err(
                        r.malformed(format!("chunk size {chunk_size} outside 1..={MAX_CHUNK_ELEMENTS}"))
                    );
                }
                Self::Hello(Hello { binding, universe_digest, lookups, chunk_size })
            }
            LookupMessageKind::BlindedChunk => {
                let (seq, elements) = read_elements(&mut r)?;
                Self::BlindedChunk(BlindedChunk { binding, seq, elements })
            }
            LookupMessageKind::EvaluatedChunk => {
                let (seq, elements) = read_elements(&mut r)?;
                Self::EvaluatedChunk(EvaluatedChunk { binding, seq, elements })
            }
            LookupMessageKind::VectorChunk => {
                let universe_digest = r.array()?;
                let bits = r.u8()?;
                let width = Width::new(u32::from(bits))
                    .map_err(|_| r.malformed(format!("width {bits} outside 1..=64")))?;
                let total_entries = r.u64()?;
                let vector_digest = r.array()?;
                let first_index = r.u64()?;
                let entry_len = width.entry_len();
                let count = r.count(MAX_VECTOR_CHUNK_ENTRIES, entry_len)?;
                if count == 0 && total_entries != 0 {
                    return Err(r.malformed("an empty chunk of a non-empty vector"));
                }
                if first_index.checked_add(count as u64).is_none_or(|end| end > total_entries) {
                    return Err(r.malformed(format!(
                        "entries {first_index}..+{count} run past the vector's {total_entries}"
                    )));
                }
                let raw = r.take(count * entry_len)?;
                let mut entries = Vec::with_capacity(count);
                for (i, bytes) in raw.chunks_exact(entry_len).enumerate() {
                    let mut be = [0u8; 8];
                    be[8 - entry_len..].copy_from_slice(bytes);
                    let entry = u64::from_be_bytes(be);
                    if !width.fits(entry) {
                        return Err(r.malformed(format!("entry {i} has bits set above the width of {width}")));
                    }
                    entries.push(entry);
                }
                Self::VectorChunk(VectorChunk {
                    binding,
                    universe_digest,
                    width,
                    total_entries,
                    vector_digest,
                    first_index,
                    entries,
                })
            }
        };
        r.finish()?;
        Ok(message)
    }
}

/// `I2OSP(seq, 4) || I2OSP(count, 4) || count × 32 bytes`.
fn read_elements(r: &mut Reader<'_>) -> Result<(u32, Vec<ElementBytes>), ProtocolError> {
    let seq = r.u32()?;
    let count = r.count(MAX_CHUNK_ELEMENTS, ELEMENT_LEN)?;
    let raw = r.take(count * ELEMENT_LEN)?;
    let elements = raw
        .chunks_exact(ELEMENT_LEN)
        .map(|bytes| {
            let mut element = [0u8; ELEMENT_LEN];
            element.copy_from_slice(bytes);
            element
        })
        .collect();
    Ok((seq, elements))
}
