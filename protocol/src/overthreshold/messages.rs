//! The wire messages of overthreshold and their byte encoding (documented, with the
//! exact layout, in the [module docs](super)).

use std::fmt;

use xmcredit_crypto::group::{ElementBytes, ELEMENT_LEN};
use xmcredit_crypto::set::{Tag, MAX_TAG_BITS, MIN_TAG_BITS};

use crate::wire::{Reader, Writer};
use crate::{ProtocolError, SessionBinding};

/// Version byte that starts every overthreshold message.
pub const WIRE_VERSION: u8 = 1;

/// Most elements, tags or result entries one chunk may carry (65536 × 32 bytes = 2 MiB of
/// elements), the same bound as PSI's.
pub const MAX_CHUNK_ELEMENTS: usize = 1 << 16;

/// Shortest and longest tag on the wire, in bytes (crypto's 40 to 128 bits).
const MIN_TAG_LEN: usize = (MIN_TAG_BITS / 8) as usize;
const MAX_TAG_LEN: usize = (MAX_TAG_BITS / 8) as usize;

/// Bytes of one result entry: `I2OSP(position, 8) || I2OSP(multiplicity, 2)`.
const RESULT_ENTRY_LEN: usize = 8 + 2;

/// The kind byte of each message: 0x91..0x96, apart from PSI's 0x81..0x87, SecAgg's
/// 0x00..0x41 and lookup's 0xC1..0xC4, so a frame of another protocol is refused as an
/// unknown kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Announce,
    Hello,
    BlindedChunk,
    EvaluatedChunk,
    TagChunk,
    ResultChunk,
}

impl MessageKind {
    pub const ALL: [MessageKind; 6] = [
        MessageKind::Announce,
        MessageKind::Hello,
        MessageKind::BlindedChunk,
        MessageKind::EvaluatedChunk,
        MessageKind::TagChunk,
        MessageKind::ResultChunk,
    ];

    pub fn code(self) -> u8 {
        match self {
            Self::Announce => 0x91,
            Self::Hello => 0x92,
            Self::BlindedChunk => 0x93,
            Self::EvaluatedChunk => 0x94,
            Self::TagChunk => 0x95,
            Self::ResultChunk => 0x96,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x91 => Self::Announce,
            0x92 => Self::Hello,
            0x93 => Self::BlindedChunk,
            0x94 => Self::EvaluatedChunk,
            0x95 => Self::TagChunk,
            0x96 => Self::ResultChunk,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Announce => "overthreshold Announce",
            Self::Hello => "overthreshold Hello",
            Self::BlindedChunk => "overthreshold BlindedChunk",
            Self::EvaluatedChunk => "overthreshold EvaluatedChunk",
            Self::TagChunk => "overthreshold TagChunk",
            Self::ResultChunk => "overthreshold ResultChunk",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---- Messages ------------------------------------------------------------------------

/// Coordinator → every contributor: the session's tag length and chunk size for tags
/// and results. Every contributor checks the tag length against the one it derives from
/// the contract, so all banks' tags have one length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    pub binding: SessionBinding,
    /// `tag_bits_for(T, T, 40)`, `T` = contributors × the maximum set size per bank.
    pub tag_bits: u16,
    /// Tags per TagChunk and entries per ResultChunk, `1..=MAX_CHUNK_ELEMENTS`.
    pub chunk_size: u32,
}

/// Contributor → each committee member: how many elements it will send, in chunks of
/// what size. The member checks n against the contract's minimum, the maximum and the
/// contributor's remaining daily quota before it evaluates anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub binding: SessionBinding,
    /// `n = |X|`, the one thing a member learns about X.
    pub set_size: u64,
    /// Elements per chunk, `1..=MAX_CHUNK_ELEMENTS`.
    pub chunk_size: u32,
}

/// Contributor → each committee member (the same bytes to every member): `r · H(x)`
/// for the next chunk of X, in X's order (RFC 9497 §3.3.1 Blind, one blind per session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlindedChunk {
    pub binding: SessionBinding,
    pub seq: u32,
    pub elements: Vec<ElementBytes>,
}

/// Committee member i → contributor: `k_i · r · H(x)` for chunk `seq`, in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvaluatedChunk {
    pub binding: SessionBinding,
    pub seq: u32,
    pub elements: Vec<ElementBytes>,
}

/// Contributor → coordinator: chunk `seq` of its tags, the whole set sorted ascending
/// by value (so their order says nothing about X's order and a repeat is adjacent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagChunk {
    pub binding: SessionBinding,
    pub seq: u32,
    /// Tags in the whole set, the same in every chunk.
    pub total_tags: u64,
    pub tag_len: u8,
    pub tags: Vec<Tag>,
}

/// One entry of a result: the position of a tag in the contributor's TagChunk stream
/// and the number of contributors (this one included) whose sets hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResultEntry {
    pub position: u64,
    pub multiplicity: u16,
}

/// Coordinator → contributor: chunk `seq` of the positions of its tags held by at least
/// `t` contributors, ascending, each with its multiplicity. Always at least one chunk,
/// empty when nothing reaches the threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultChunk {
    pub binding: SessionBinding,
    pub seq: u32,
    /// Contributors whose tag sets were counted, the same in every chunk.
    pub contributors: u16,
    /// Entries in the whole result, the same in every chunk.
    pub total_matches: u64,
    pub entries: Vec<ResultEntry>,
}

/// Any overthreshold message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverthresholdMessage {
    Announce(Announce),
    Hello(Hello),
    BlindedChunk(BlindedChunk),
    EvaluatedChunk(EvaluatedChunk),
    TagChunk(TagChunk),
    ResultChunk(ResultChunk),
}

impl OverthresholdMessage {
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Announce(_) => MessageKind::Announce,
            Self::Hello(_) => MessageKind::Hello,
            Self::BlindedChunk(_) => MessageKind::BlindedChunk,
            Self::EvaluatedChunk(_) => MessageKind::EvaluatedChunk,
            Self::TagChunk(_) => MessageKind::TagChunk,
            Self::ResultChunk(_) => MessageKind::ResultChunk,
        }
    }

    pub fn binding(&self) -> &SessionBinding {
        match self {
            Self::Announce(m) => &m.binding,
            Self::Hello(m) => &m.binding,
            Self::BlindedChunk(m) => &m.binding,
            Self::EvaluatedChunk(m) => &m.binding,
            Self::TagChunk(m) => &m.binding,
            Self::ResultChunk(m) => &m.binding,
        }
    }

    /// The message's bytes (layout in the [module docs](super)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let kind = self.kind();
        let start = |capacity| Writer::new(WIRE_VERSION, kind.code(), self.binding(), capacity);
        match self {
            Self::Announce(m) => {
                let mut w = start(2 + 4);
                w.u16(m.tag_bits);
                w.u32(m.chunk_size);
                w.into_bytes()
            }
            Self::Hello(m) => {
                let mut w = start(8 + 4);
                w.u64(m.set_size);
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
            Self::TagChunk(m) => {
                let tag_len = usize::from(m.tag_len).min(MAX_TAG_LEN);
                let mut w = start(4 + 8 + 1 + 4 + m.tags.len() * tag_len);
                w.u32(m.seq);
                w.u64(m.total_tags);
                w.u8(m.tag_len);
                w.count(m.tags.len());
                for tag in &m.tags {
                    w.bytes(&tag.0[..tag_len]);
                }
                w.into_bytes()
            }
            Self::ResultChunk(m) => {
                let mut w = start(4 + 2 + 8 + 4 + m.entries.len() * RESULT_ENTRY_LEN);
                w.u32(m.seq);
                w.u16(m.contributors);
                w.u64(m.total_matches);
                w.count(m.entries.len());
                for entry in &m.entries {
                    w.u64(entry.position);
                    w.u16(entry.multiplicity);
                }
                w.into_bytes()
            }
        }
    }

    /// Decodes a message, refusing with [`ProtocolError::Malformed`] a wrong version or
    /// kind (PSI's and SecAgg's kinds included), a truncated field, a count above
    /// [`MAX_CHUNK_ELEMENTS`] or larger than the bytes left, a chunk size outside
    /// `1..=MAX_CHUNK_ELEMENTS`, a tag length outside 5..=16 bytes, and trailing bytes.
    /// It never panics and allocates only what the bytes present can fill. Elements
    /// stay bytes: the states decode them with crypto's checked batch decoder.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(bytes, "overthreshold message");
        r.version(WIRE_VERSION)?;
        let code = r.u8()?;
        let kind = MessageKind::from_code(code)
            .ok_or_else(|| r.malformed(format!("unknown message kind 0x{code:02x}")))?;
        r.rename(kind.name());
        let binding = r.binding()?;
        let message = match kind {
            MessageKind::Announce => {
                let tag_bits = r.u16()?;
                let chunk_size = read_chunk_size(&mut r)?;
                Self::Announce(Announce { binding, tag_bits, chunk_size })
            }
            MessageKind::Hello => {
                let set_size = r.u64()?;
                let chunk_size = read_chunk_size(&mut r)?;
                Self::Hello(Hello { binding, set_size, chunk_size })
            }
            MessageKind::BlindedChunk => {
                let (seq, elements) = read_elements(&mut r)?;
                Self::BlindedChunk(BlindedChunk { binding, seq, elements })
            }
            MessageKind::EvaluatedChunk => {
                let (seq, elements) = read_elements(&mut r)?;
                Self::EvaluatedChunk(EvaluatedChunk { binding, seq, elements })
            }
            MessageKind::TagChunk => {
                let seq = r.u32()?;
                let total_tags = r.u64()?;
                let tag_len = r.u8()?;
                let len = usize::from(tag_len);
                if !(MIN_TAG_LEN..=MAX_TAG_LEN).contains(&len) {
                    return Err(
                        r.malformed(format!("tag length {len} bytes outside {MIN_TAG_LEN}..={MAX_TAG_LEN}"))
                    );
                }
                let count = r.count(MAX_CHUNK_ELEMENTS, len)?;
                let raw = r.take(count * len)?;
                let tags = raw
                    .chunks_exact(len)
                    .map(|bytes| {
                        // Tags are kept in 16 bytes with the unused tail zero (crypto::set::Tag).
                        let mut tag = [0u8; MAX_TAG_LEN];
                        tag[..len].copy_from_slice(bytes);
                        Tag(tag)
                    })
                    .collect();
                Self::TagChunk(TagChunk { binding, seq, total_tags, tag_len, tags })
            }
            MessageKind::ResultChunk => {
                let seq = r.u32()?;
                let contributors = r.u16()?;
                let total_matches = r.u64()?;
                let count = r.count(MAX_CHUNK_ELEMENTS, RESULT_ENTRY_LEN)?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let position = r.u64()?;
                    let multiplicity = r.u16()?;
                    entries.push(ResultEntry { position, multiplicity });
                }
                Self::ResultChunk(ResultChunk { binding, seq, contributors, total_matches, entries })
            }
        };
        r.finish()?;
        Ok(message)
    }
}

fn read_chunk_size(r: &mut Reader<'_>) -> Result<u32, ProtocolError> {
    let chunk_size = r.u32()?;
    if chunk_size == 0 || chunk_size as usize > MAX_CHUNK_ELEMENTS {
        return Err(r.malformed(format!("chunk size {chunk_size} outside 1..={MAX_CHUNK_ELEMENTS}")));
    }
    Ok(chunk_size)
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
