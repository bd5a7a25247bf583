//! Two-party PSI from the DH-OPRF (design.md, computation 1), as sans-I/O state
//! machines over crypto's set sessions.
//!
//! # Roles and flow
//!
//! The client C (a bank) holds X, the server S (the credit center) holds Y, optional
//! labels, and the OPRF key `k` the node derives per (contract, epoch, dataset version)
//! with `MasterSecret::derive_oprf_key_with_context(contract, epoch,
//! KeyPurpose::PsiServer, version)`, so two versions of Y never share tags or pads. C blinds
//! every `x` with one session scalar `r` (RFC 9497 §3.3.1 Blind, batched: see
//! [`xmcredit_crypto::set`]), S evaluates (BlindEvaluate), C unblinds to
//! `N_x = k · H(x)`. S sends the tag of `N_y = k · H(y)` for every `y`; C matches tags.
//! Tags and pads come from `N` alone (crypto::set), not from RFC 9497 Finalize, so the
//! cardinality form can shuffle replies and C still unblinds them.
//!
//! ```text
//! client C                                         server S
//! ClientAwaitingHelloAck::start ──── Hello ──────▶ ServerAwaitingHello::handle
//!   (form, n = |X|, chunk size)                      checks form, min ≤ n ≤ max
//! ClientAwaitingHelloAck::handle ◀── HelloAck ──── (m = |Y|, tag bits)
//!   checks m ≥ its minimum, tag bits
//!                              ── BlindedChunk ──▶ ServerAwaitingBlinded::handle
//! ClientAwaitingEvaluated      ◀─ EvaluatedChunk ─   (one per chunk, in order; or,
//!   ::handle (next chunk out)                         cardinality: all, shuffled, at the end)
//! ClientAwaitingTags::handle   ◀─── TagChunk ────── (tags of Y, order shuffled per session;
//!                              ◀── ServerDone ────   labels form: encrypted labels)
//!                              ── MatchReport ───▶ ServerAwaitingMatchReport::handle
//!                                 (Both form only)   (S outputs the matched indices of Y)
//! ```
//!
//! | form           | C learns                               | S learns                  |
//! |----------------|----------------------------------------|---------------------------|
//! | `Intersection` | which `x_i` are in Y (indices into X)  | n                         |
//! | `Cardinality`  | \|X ∩ Y\| only (replies are shuffled)  | n                         |
//! | … with noise   | \|X ∩ Y\| + η (below)                   | n                         |
//! | `Both`         | the intersection                       | n and the intersection (indices into Y; semi-honest C) |
//! | `Labels`       | the intersection and the labels of its matches | n                 |
//!
//! C also learns m and, in the labels form, the (common) label length. Each side checks
//! the other's set size against the contract's minimum before it reveals anything that
//! depends on its own set: S checks n at Hello, C checks m at HelloAck.
//!
//! Every state is its own type; a transition consumes it with one message and returns
//! the next state and the messages to send, so a step cannot be taken twice or out of
//! order. Any error ends the session: whoever gets one sends nothing further.
//! [`PsiClient`] and [`PsiServer`] wrap the states for a node's receive loop.
//!
//! Every receiving state checks, in order: the sender is the peer this session was set
//! up with ([`ProtocolError::UnexpectedSender`]; the node authenticated it with mutual
//! TLS), the bytes decode, the binding is this session's ([`SessionBinding::check`]),
//! the message fits the state ([`ProtocolError::UnexpectedMessage`]), and the chunk is
//! the next one in sequence ([`ProtocolError::ChunkOutOfOrder`]: chunk numbers 0, 1, 2,
//! … per direction and message kind, so a replayed or skipped chunk is refused).
//! Elements from the peer go through crypto's checked batch decoder, which refuses the
//! identity and non-canonical encodings (RFC 9497 §4.1 DeserializeElement) and names the
//! index of the first bad one in the whole set ([`ProtocolError::InvalidElement`]).
//!
//! # Wire encoding
//!
//! A message is `version || kind || binding || body`, all integers big-endian (I2OSP):
//!
//! ```text
//! version   = 0x01 (1 byte)
//! kind      = 1 byte, see below (0x81.. so another protocol's frame is refused here)
//! binding   = I2OSP(len(contract), 2) || contract (UTF-8) || I2OSP(epoch, 8)
//!             || session id (16)                    (= SessionBinding::to_bytes)
//! element   = 32 bytes, a canonical ristretto255 encoding (RFC 9496 §4.3.2)
//! tags(L)   = I2OSP(L, 1) || I2OSP(count, 4) || count × L bytes,  L = tag bits / 8 in 5..=16
//!
//! 0x81 Hello          binding || form (1) || I2OSP(n, 8) || I2OSP(chunk size, 4)
//!                     [|| noise anchor (32), form 4 only]
//!                     form: 0 Intersection, 1 Cardinality, 2 Both, 3 Labels,
//!                     4 Cardinality with a noise anchor; chunk size in 1..=65536
//! 0x82 HelloAck       binding || I2OSP(m, 8) || I2OSP(tag bits, 2)
//!                     [|| I2OSP(dummies, 4), in answer to form 4 only]
//! 0x83 BlindedChunk   binding || I2OSP(seq, 4) || I2OSP(count, 4) || count × element
//! 0x84 EvaluatedChunk binding || I2OSP(seq, 4) || I2OSP(count, 4) || count × element
//! 0x85 TagChunk       binding || I2OSP(seq, 4) || tags(L)
//!                     || I2OSP(label count, 4) || label count × (I2OSP(len, 2) || ciphertext)
//!                     label count: 0, or (labels form) the tag count
//! 0x86 ServerDone     binding || I2OSP(total tags, 8)
//! 0x87 MatchReport    binding || I2OSP(seq, 4) || I2OSP(total matches, 8) || tags(L)
//! ```
//!
//! Every count is at most [`MAX_CHUNK_ELEMENTS`] (65536). The decoder
//! ([`PsiMessage::from_bytes`]) refuses a wrong version or kind, a truncated field, a
//! count over the limit or larger than the bytes left, a tag length outside 5..=16,
//! an unknown form, a chunk size outside 1..=65536, a label count that is neither 0 nor
//! the tag count, and trailing bytes, all as [`ProtocolError::Malformed`] naming the
//! message and the fault. It checks shape only; meaning is the states' job.
//!
//! Chunking: each of BlindedChunk, EvaluatedChunk, TagChunk and MatchReport is numbered
//! from 0 and holds exactly `chunk size` items, the last chunk the rest (n, n, m and the
//! match total items in all; n + d evaluated and m + d tags with d noise dummies).
//! MatchReport is sent even when empty (one chunk, total 0).
//! TagChunks are the exception that keeps frames under the limit whatever the label
//! width: they hold `tag_chunk_size(chunk size, L, label length)` =
//! `min(chunk size, max(1, floor(4 MiB / (L + 2 + label length))))` tags (label length
//! and its 2 length bytes counted only in the labels form); the client reads the label
//! length from the first TagChunk's first label, and every label has that length.
//!
//! Labels: `ciphertext = label XOR pad(N_y)` with crypto's pad (`TagContext::xor_pad`),
//! which depends on (contract, epoch, N_y) only. C can compute the pad of `N_x` for its
//! own elements only, so it decrypts exactly the labels of its matches.
//!
//! # Noise on the cardinality
//!
//! Under a contract with count noise ([`ServerPolicy::count_noise_epsilon_milli`]) the
//! client's Hello carries the noise anchor `R = r·G` (form byte 4), the server answers
//! with `d = 2·h` dummies (`h = ceil(30_000 / epsilon_milli)`): `d` dummy replies
//! `s_i·R` shuffled in with the `n` evaluated elements, and `d` extra tags (the tags of
//! `h + η` dummies' `s_i·G`, random tags for the rest) shuffled in with Y's. The client
//! expects `n + d` replies and `m + d` tags (tags of `tag_bits_for(n + d, m + d, 40)`
//! bits), counts, and reports the count minus `h`, clamped to `0..=min(n, m)`.
//! `xmcredit_crypto::count_noise` has the mechanism and its (ε, δ). Either side refuses
//! a session whose noise differs from its contract's
//! ([`ProtocolError::NoiseMismatch`]).
//!
//! # Transcript
//!
//! Both outputs carry `transcript_digest`, defined in `transcript.rs`:
//! `SHA-256("xmcredit psi transcript v1" || SHA-256(C→S stream) || SHA-256(S→C stream))`,
//! each stream the messages of one direction in order, each as
//! `I2OSP(len, 8) || bytes`. Both ends of an honest run get the same digest.
//!
//! # Choices beyond the design
//!
//! - A set with a repeated element is refused before anything is sent
//!   ([`ProtocolError::DuplicateElement`]): one blind per session makes equal inputs
//!   give equal blinded elements, and equal `y` give equal tags, each a leak.
//! - S sends its tags in an order shuffled per session: Y's stored order (often sorted
//!   by code) would otherwise tell C the rank of each match among Y.
//! - C keeps at most [`CLIENT_WINDOW_CHUNKS`] chunks in flight and sends the next one as
//!   each reply arrives (in the cardinality form, where S answers only at the end, it
//!   sends all chunks at once).
//! - The client refuses a HelloAck whose tag length is not exactly
//!   `tag_bits_for(n, m, 40)`: shorter tags would let false matches through.

mod client;
mod messages;
mod server;
mod server_set;
mod shuffle;
pub(crate) mod transcript;

use std::fmt;

use xmcredit_crypto::NodeId;

pub use client::{
    AppliedNoise, ClientAwaitingEvaluated, ClientAwaitingHelloAck, ClientAwaitingTags, ClientConfig,
    ClientEvaluatedNext, ClientOutput, ClientPolicy, ClientTagsNext, PsiClient, CLIENT_WINDOW_CHUNKS,
};
/// The bytes of tags and labels one TagChunk may carry (half the 8 MiB frame limit).
pub const TAG_CHUNK_BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// Tags per TagChunk for a session's `chunk_size`, tag length and label length (0 outside
/// the labels form): the session's chunk size unless wide labels would make a frame
/// larger than [`TAG_CHUNK_BUDGET_BYTES`].
pub fn tag_chunk_size(chunk_size: u32, tag_len: usize, label_len: usize) -> u32 {
    let per_tag = tag_len + if label_len > 0 { 2 + label_len } else { 0 };
    let cap = (TAG_CHUNK_BUDGET_BYTES / per_tag.max(1)).max(1);
    chunk_size.min(u32::try_from(cap).unwrap_or(u32::MAX))
}

pub use messages::{
    BlindedChunk, EncryptedLabels, EvaluatedChunk, Hello, HelloAck, MatchReport, PsiMessage, PsiMessageKind,
    ServerDone, TagChunk, MAX_CHUNK_ELEMENTS, MAX_LABEL_LEN, NOISY_CARDINALITY_CODE, WIRE_VERSION,
};
pub use server::{
    check_noise_anchor, PsiServer, ServerAwaitingBlinded, ServerAwaitingHello, ServerAwaitingMatchReport,
    ServerBlindedNext, ServerConfig, ServerMatchReportNext, ServerOutput, ServerPolicy,
};
pub use server_set::{DatasetVersion, ServerSet, ServerSetBuilder, ServerSetId};

use crate::chunks::{at_offset, check_chunk, check_seq, chunk_count};
use crate::{ProtocolError, SessionBinding};
use transcript::{Side, Transcript};

/// The protocol's name in the shared chunking errors ([`crate::chunks`]).
const PROTOCOL: &str = "PSI";

/// Statistical security of tags: the chance that any of the n·m pairs of different
/// elements share a tag is below 2^-40 (design.md: tags of at least
/// 40 + log2 n + log2 m bits).
pub const STATISTICAL_SECURITY_BITS: u32 = 40;

/// What the run outputs, and to whom (the table in the module docs). The contract fixes
/// it; the server refuses a client asking for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PsiOutputForm {
    /// C learns which of its elements are in Y.
    Intersection,
    /// C learns |X ∩ Y| only.
    Cardinality,
    /// C learns the intersection, then reports its matched tags, so S learns it too.
    Both,
    /// C learns the intersection and the labels S holds for its matches.
    Labels,
}

impl PsiOutputForm {
    /// The form's byte in Hello.
    pub fn code(self) -> u8 {
        match self {
            Self::Intersection => 0,
            Self::Cardinality => 1,
            Self::Both => 2,
            Self::Labels => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Intersection,
            1 => Self::Cardinality,
            2 => Self::Both,
            3 => Self::Labels,
            _ => return None,
        })
    }
}

impl fmt::Display for PsiOutputForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Intersection => "intersection",
            Self::Cardinality => "cardinality",
            Self::Both => "intersection to both",
            Self::Labels => "labels",
        };
        f.write_str(name)
    }
}

/// A message for the node to send: the encoded bytes, already in the transcript.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub to: NodeId,
    pub kind: PsiMessageKind,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for OutgoingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutgoingMessage({} to {}, {} bytes)", self.kind, self.to, self.bytes.len())
    }
}

/// One end of the session's channel: the binding, the peer, the transcript.
#[derive(Debug)]
struct Channel {
    binding: SessionBinding,
    peer: NodeId,
    transcript: Transcript,
}

impl Channel {
    fn new(binding: SessionBinding, peer: NodeId, side: Side) -> Self {
        Self { binding, peer, transcript: Transcript::new(side) }
    }

    /// Sender, decoding and binding checks common to every receiving state.
    fn receive(&mut self, from: &NodeId, bytes: &[u8]) -> Result<PsiMessage, ProtocolError> {
        if *from != self.peer {
            return Err(ProtocolError::UnexpectedSender {
                expected: self.peer.to_string(),
                got: from.clone(),
            });
        }
        let message = PsiMessage::from_bytes(bytes)?;
        self.binding.check(message.binding())?;
        self.transcript.received(bytes);
        Ok(message)
    }

    /// Encodes `message`, adds it to the transcript and queues it for the peer.
    fn send(&mut self, message: PsiMessage, out: &mut Vec<OutgoingMessage>) {
        out.push(self.outgoing(message));
    }

    /// Encodes `message` and adds it to the transcript: the message to send next.
    fn outgoing(&mut self, message: PsiMessage) -> OutgoingMessage {
        let bytes = message.to_bytes();
        self.transcript.sent(&bytes);
        OutgoingMessage { to: self.peer.clone(), kind: message.kind(), bytes }
    }
}

fn unexpected(state: &'static str, message: &PsiMessage) -> ProtocolError {
    ProtocolError::UnexpectedMessage { state, got: message.kind().name() }
}
