//! The wire messages of two-party PSI and their byte encoding (documented, with the
//! exact layout, in the [module docs](super)).

use std::fmt;

use xmcredit_crypto::count_noise::NoiseAnchor;
use xmcredit_crypto::group::{ElementBytes, ELEMENT_LEN};
use xmcredit_crypto::set::{Tag, MAX_TAG_BITS, MIN_TAG_BITS};

use super::PsiOutputForm;
use crate::wire::{Reader, Writer};
use crate::{ProtocolError, SessionBinding};

/// Version byte that starts every PSI message.
pub const WIRE_VERSION: u8 = 1;

/// Most elements, tags or labels one chunk may carry. It bounds what a receiver holds
/// for one message (65536 × 32 bytes = 2 MiB of elements) and keeps every message under
/// gRPC's usual 4 MiB frame limit, labels of realistic size included.
pub const MAX_CHUNK_ELEMENTS: usize = 1 << 16;

/// Longest label: its length travels as I2OSP(len, 2).
pub const MAX_LABEL_LEN: usize = u16::MAX as usize;

/// Shortest and longest tag on the wire, in bytes (crypto's 40 to 128 bits).
const MIN_TAG_LEN: usize = (MIN_TAG_BITS / 8) as usize;
const MAX_TAG_LEN: usize = (MAX_TAG_BITS / 8) as usize;

/// The kind byte of each message. Codes start at 0x81 so that a frame of another
/// protocol (secure aggregation uses 0x00 to 0x4f) handed to the PSI decoder is refused
/// at its kind byte instead of being half-parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PsiMessageKind {
    Hello,
    HelloAck,
    BlindedChunk,
    EvaluatedChunk,
    TagChunk,
    ServerDone,
    MatchReport,
}

impl PsiMessageKind {
    pub fn code(self) -> u8 {
        match self {
            Self::Hello => 0x81,
            Self::HelloAck => 0x82,
            Self::BlindedChunk => 0x83,
            Self::EvaluatedChunk => 0x84,
            Self::TagChunk => 0x85,
            Self::ServerDone => 0x86,
            Self::MatchReport => 0x87,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x81 => Self::Hello,
            0x82 => Self::HelloAck,
            0x83 => Self::BlindedChunk,
            0x84 => Self::EvaluatedChunk,
            0x85 => Self::TagChunk,
            0x86 => Self::ServerDone,
            0x87 => Self::MatchReport,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "PSI Hello",
            Self::HelloAck => "PSI HelloAck",
            Self::BlindedChunk => "PSI BlindedChunk",
            Self::EvaluatedChunk => "PSI EvaluatedChunk",
            Self::TagChunk => "PSI TagChunk",
            Self::ServerDone => "PSI ServerDone",
            Self::MatchReport => "PSI MatchReport",
        }
    }
}

impl fmt::Display for PsiMessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---- Field types ---------------------------------------------------------------------

/// Labels encrypted under the pads of their elements (`label XOR pad(k·H(y))`), stored
/// back to back so that a chunk of labels is two allocations, not one per label.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EncryptedLabels {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl EncryptedLabels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `labels` labels of `bytes` bytes in total.
    pub fn with_capacity(labels: usize, bytes: usize) -> Self {
        Self { bytes: Vec::with_capacity(bytes), ends: Vec::with_capacity(labels) }
    }

    /// Appends one ciphertext.
    pub fn push(&mut self, ciphertext: &[u8]) {
        self.bytes.extend_from_slice(ciphertext);
        self.ends.push(self.bytes.len());
    }

    /// Appends `plaintext` and returns its bytes for encryption in place.
    pub(crate) fn push_for_encryption(&mut self, plaintext: &[u8]) -> &mut [u8] {
        let start = self.bytes.len();
        self.push(plaintext);
        &mut self.bytes[start..]
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `index`-th ciphertext.
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)?;
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        self.bytes.get(start..end)
    }

    /// All ciphertexts in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(start, end)| &self.bytes[start..end])
    }

    /// Total ciphertext bytes.
    pub fn total_bytes(&self) -> usize {
        self.bytes.len()
    }
}

impl fmt::Debug for EncryptedLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptedLabels({} labels, {} bytes)", self.len(), self.bytes.len())
    }
}

// ---- Messages ------------------------------------------------------------------------

/// C → S: opens the session and says what the client wants and how much it will send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub binding: SessionBinding,
    /// The output form the client asks for; the server refuses any other than the
    /// contract's.
    pub form: PsiOutputForm,
    /// `n = |X|`, the one thing the server learns about X.
    pub client_set_size: u64,
    /// Elements per chunk, in `1..=MAX_CHUNK_ELEMENTS`; every chunk of the session (both
    /// directions) holds exactly this many, the last one the rest.
    pub chunk_size: u32,
    /// Cardinality form under a contract with count noise: `R = r·G`, so the server can
    /// add dummy replies (`xmcredit_crypto::count_noise`). On the wire it makes the form
    /// byte [`NOISY_CARDINALITY_CODE`]. With any other form it is a local bug: the anchor
    /// is still written after the form's own code, and every receiver refuses the
    /// trailing bytes.
    pub noise_anchor: Option<NoiseAnchor>,
}

/// The form byte of a cardinality Hello that carries a noise anchor.
pub const NOISY_CARDINALITY_CODE: u8 = 4;

/// S → C: accepts the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloAck {
    pub binding: SessionBinding,
    /// `m = |Y|`.
    pub server_set_size: u64,
    /// Tag length, `crypto::set::tag_bits_for(n + d, m + d, 40)`, d the dummies.
    pub tag_bits: u16,
    /// Answer to a noise anchor: the dummy replies (and extra tags) the server adds,
    /// `2·ceil(30_000 / epsilon_milli)`. Absent otherwise. It is recognised by the four
    /// bytes after the tag bits, so it must stay HelloAck's last field: a field added
    /// later needs a new wire version.
    pub dummies: Option<u32>,
}

/// C → S: `r · H(x)` for the next chunk of X, in X's order (RFC 9497 §3.3.1 Blind, one
/// blind for the whole session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlindedChunk {
    pub binding: SessionBinding,
    pub seq: u32,
    pub elements: Vec<ElementBytes>,
}

/// S → C: `k · r · H(x)` (RFC 9497 §3.3.1 BlindEvaluate): chunk `seq` of the reply, in
/// request order, or (cardinality form) of the shuffled replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvaluatedChunk {
    pub binding: SessionBinding,
    pub seq: u32,
    pub elements: Vec<ElementBytes>,
}

/// S → C: tags of the next chunk of Y (in an order shuffled per session) and, in the
/// labels form, each tag's label encrypted under the pad of its element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagChunk {
    pub binding: SessionBinding,
    pub seq: u32,
    /// Bytes of each tag on the wire (`tag_bits / 8`).
    pub tag_len: u8,
    pub tags: Vec<Tag>,
    /// Empty, or (labels form) one ciphertext per tag.
    pub labels: EncryptedLabels,
}

/// S → C: every tag has been sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerDone {
    pub binding: SessionBinding,
    pub total_tags: u64,
}

/// C → S (intersection-to-both form only): chunk `seq` of the client's matched tags,
/// sorted by value so their order says nothing about X. Always at least one chunk,
/// empty when the intersection is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchReport {
    pub binding: SessionBinding,
    pub seq: u32,
    /// Matched tags in the whole report, the same in every chunk.
    pub total_matches: u64,
    pub tag_len: u8,
    pub tags: Vec<Tag>,
}

/// Any PSI message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PsiMessage {
    Hello(Hello),
    HelloAck(HelloAck),
    BlindedChunk(BlindedChunk),
    EvaluatedChunk(EvaluatedChunk),
    TagChunk(TagChunk),
    ServerDone(ServerDone),
    MatchReport(MatchReport),
}

impl PsiMessage {
    pub fn kind(&self) -> PsiMessageKind {
        match self {
            Self::Hello(_) => PsiMessageKind::Hello,
            Self::HelloAck(_) => PsiMessageKind::HelloAck,
            Self::BlindedChunk(_) => PsiMessageKind::BlindedChunk,
            Self::EvaluatedChunk(_) => PsiMessageKind::EvaluatedChunk,
            Self::TagChunk(_) => PsiMessageKind::TagChunk,
            Self::ServerDone(_) => PsiMessageKind::ServerDone,
            Self::MatchReport(_) => PsiMessageKind::MatchReport,
        }
    }

    pub fn binding(&self) -> &SessionBinding {
        match self {
            Self::Hello(m) => &m.binding,
            Self::HelloAck(m) => &m.binding,
            Self::BlindedChunk(m) => &m.binding,
            Self::EvaluatedChunk(m) => &m.binding,
            Self::TagChunk(m) => &m.binding,
            Self::ServerDone(m) => &m.binding,
            Self::MatchReport(m) => &m.binding,
        }
    }

    /// The message's bytes (layout in the [module docs](super)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let kind = self.kind();
        let start = |capacity| Writer::new(WIRE_VERSION, kind.code(), self.binding(), capacity);
        match self {
            Self::Hello(m) => {
                let mut w = start(1 + 8 + 4 + ELEMENT_LEN);
                // An anchor goes with the cardinality form only (the client's state machine
                // never makes another); its own code keeps older Hellos as they were.
                let noisy = m.noise_anchor.is_some() && m.form == PsiOutputForm::Cardinality;
                w.u8(if noisy { NOISY_CARDINALITY_CODE } else { m.form.code() });
                w.u64(m.client_set_size);
                w.u32(m.chunk_size);
                if let Some(anchor) = &m.noise_anchor {
                    w.bytes(&anchor.0);
                }
                w.into_bytes()
            }
            Self::HelloAck(m) => {
                let mut w = start(8 + 2 + 4);
                w.u64(m.server_set_size);
                w.u16(m.tag_bits);
                if let Some(dummies) = m.dummies {
                    w.u32(dummies);
                }
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
                let tag_len = usize::from(m.tag_len);
                let label_bytes = m.labels.total_bytes() + 2 * m.labels.len();
                let mut w = start(4 + 1 + 4 + m.tags.len() * tag_len + 4 + label_bytes);
                w.u32(m.seq);
                write_tags(&mut w, m.tag_len, &m.tags);
                w.count(m.labels.len());
                for label in m.labels.iter() {
                    // Labels longer than MAX_LABEL_LEN are refused when a ServerSet is
                    // built; a longer one here is a local bug the receiver refuses.
                    w.u16(u16::try_from(label.len()).unwrap_or(u16::MAX));
                    w.bytes(label);
                }
                w.into_bytes()
            }
            Self::ServerDone(m) => {
                let mut w = start(8);
                w.u64(m.total_tags);
                w.into_bytes()
            }
            Self::MatchReport(m) => {
                let mut w = start(4 + 8 + 1 + 4 + m.tags.len() * usize::from(m.tag_len));
                w.u32(m.seq);
                w.u64(m.total_matches);
                write_tags(&mut w, m.tag_len, &m.tags);
                w.into_bytes()
            }
        }
    }

    /// Decodes a message, refusing with [`ProtocolError::Malformed`] a wrong version or
    /// kind, a truncated field, a count above [`MAX_CHUNK_ELEMENTS`], a tag length
    /// outside 5..=16 bytes, an unknown output form, a chunk size outside
    /// `1..=MAX_CHUNK_ELEMENTS`, a label count that is neither 0 nor the tag count, and
    /// trailing bytes. Elements stay bytes here: the states decode them with crypto's
    /// checked batch decoder, which names the index of a bad one.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(bytes, "PSI message");
        r.version(WIRE_VERSION)?;
        let code = r.u8()?;
        let kind = PsiMessageKind::from_code(code)
            .ok_or_else(|| r.malformed(format!("unknown message kind 0x{code:02x}")))?;
        r.rename(kind.name());
        let binding = r.binding()?;
        let message = match kind {
            PsiMessageKind::Hello => {
                let code = r.u8()?;
                let noisy = code == NOISY_CARDINALITY_CODE;
                let form =
                    if noisy { Some(PsiOutputForm::Cardinality) } else { PsiOutputForm::from_code(code) }
                        .ok_or_else(|| r.malformed(format!("unknown output form {code}")))?;
                let client_set_size = r.u64()?;
                let chunk_size = r.u32()?;
                if chunk_size == 0 || chunk_size as usize > MAX_CHUNK_ELEMENTS {
                    return Err(
                        r.malformed(format!("chunk size {chunk_size} outside 1..={MAX_CHUNK_ELEMENTS}"))
                    );
                }
                let noise_anchor = if noisy { Some(NoiseAnchor(r.array()?)) } else { None };
                Self::Hello(Hello { binding, form, client_set_size, chunk_size, noise_anchor })
            }
            PsiMessageKind::HelloAck => {
                let server_set_size = r.u64()?;
                let tag_bits = r.u16()?;
                // The dummy count follows only in answer to a noise anchor.
                let dummies = match r.remaining() {
                    0 => None,
                    _ => Some(r.u32()?),
                };
                Self::HelloAck(HelloAck { binding, server_set_size, tag_bits, dummies })
            }
            PsiMessageKind::BlindedChunk => {
                let (seq, elements) = read_elements(&mut r)?;
                Self::BlindedChunk(BlindedChunk { binding, seq, elements })
            }
            PsiMessageKind::EvaluatedChunk => {
                let (seq, elements) = read_elements(&mut r)?;
                Self::EvaluatedChunk(EvaluatedChunk { binding, seq, elements })
            }
            PsiMessageKind::TagChunk => {
                let seq = r.u32()?;
                let (tag_len, tags) = read_tags(&mut r)?;
                let label_count = r.count(MAX_CHUNK_ELEMENTS, 2)?;
                if label_count != 0 && label_count != tags.len() {
                    return Err(r.malformed(format!("{label_count} labels for {} tags", tags.len())));
                }
                let mut labels = EncryptedLabels::with_capacity(label_count, 0);
                for _ in 0..label_count {
                    let len = usize::from(r.u16()?);
                    labels.push(r.take(len)?);
                }
                Self::TagChunk(TagChunk { binding, seq, tag_len, tags, labels })
            }
            PsiMessageKind::ServerDone => Self::ServerDone(ServerDone { binding, total_tags: r.u64()? }),
            PsiMessageKind::MatchReport => {
                let seq = r.u32()?;
                let total_matches = r.u64()?;
                let (tag_len, tags) = read_tags(&mut r)?;
                Self::MatchReport(MatchReport { binding, seq, total_matches, tag_len, tags })
            }
        };
        r.finish()?;
        Ok(message)
    }
}

/// `I2OSP(tag_len, 1) || I2OSP(count, 4) || count × tag_len bytes`.
fn write_tags(w: &mut Writer, tag_len: u8, tags: &[Tag]) {
    let len = usize::from(tag_len).min(MAX_TAG_LEN);
    w.u8(tag_len);
    w.count(tags.len());
    for tag in tags {
        w.bytes(&tag.0[..len]);
    }
}

fn read_tags(r: &mut Reader<'_>) -> Result<(u8, Vec<Tag>), ProtocolError> {
    let tag_len = r.u8()?;
    let len = usize::from(tag_len);
    if !(MIN_TAG_LEN..=MAX_TAG_LEN).contains(&len) {
        return Err(r.malformed(format!("tag length {len} bytes outside {MIN_TAG_LEN}..={MAX_TAG_LEN}")));
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
    Ok((tag_len, tags))
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

#[cfg(test)]
mod tests {
    use super::EncryptedLabels;

    #[test]
    fn encrypted_labels_keep_their_boundaries() {
        let mut labels = EncryptedLabels::new();
        for label in [&b"ab"[..], b"", b"cde"] {
            labels.push(label);
        }
        assert_eq!(labels.len(), 3);
        assert_eq!(labels.get(0), Some(&b"ab"[..]));
        assert_eq!(labels.get(1), Some(&b""[..]));
        assert_eq!(labels.get(2), Some(&b"cde"[..]));
        assert_eq!(labels.get(3), None);
        assert_eq!(labels.iter().collect::<Vec<_>>(), vec![&b"ab"[..], b"", b"cde"]);
    }
}
