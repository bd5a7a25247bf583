//! Private aggregate lookup over a public universe (design.md, computation 4), as
//! sans-I/O state machines and pure helpers.
//!
//! # Roles and flow
//!
//! The universe `U` is the sorted list of registered entity codes the credit center
//! publishes per epoch ([`Universe`]). Each provider `j` holds the OPRF key `k_j` the
//! node derives with `MasterSecret::derive_oprf_key(contract, epoch,
//! KeyPurpose::LookupProvider)` and, for every `u` in `U`, its contribution `g_j(u)` (a
//! w-bit value computed by the node from its dataset and the contract's scorecard). It
//! publishes the padded vector `v_j(u) = (g_j(u) + pad_j(u)) mod 2^w` with
//! `pad_j(u) = KDF(k_j · H(u))` ([`prepare_contribution`]; exact bytes in
//! [`xmcredit_crypto::lookup`]). The node sums the providers' vectors with `secagg`
//! (with one provider, `V = v_1`); [`combine`] is the same sum in memory.
//!
//! The querier Q downloads the whole `V` (asking for single entries would say whom it
//! looks up; [`VectorDownload`]), runs one OPRF session with each provider for its
//! applicants, blinded ([`LookupQuery::start_session`]), and removes the pads:
//! `Σ_j g_j(x) = V[index(x)] - Σ_j pad_j(k_j · H(x)) mod 2^w` ([`LookupQuery::finish`]).
//!
//! ```text
//! provider P_j (node)          coordinator (secagg)           querier Q
//! prepare_contribution ─ v_j ─▶ Σ_j v_j mod 2^w = V
//!                               LookupVector::to_chunks ─ VectorChunk × ⌈|U|/c⌉ ─▶ VectorDownload::handle
//!                                                                     (digest checked at the end)
//!                                                             LookupQuery::new(applicants)
//! ProviderAwaitingHello ◀──────────────── Hello ─────────────  LookupQuery::start_session
//!   ::handle (universe, n ≤ max, n ≤ quota)                     (one per provider, own session id)
//! ProviderAwaitingBlinded ◀────────── BlindedChunk ──────────  (window of 4 chunks,
//!   ::handle ─────────────────────── EvaluatedChunk ────────▶   QuerierAwaitingEvaluated::handle
//!   (one reply per chunk, in order)                              unblinds to N_j(x), next chunk)
//! Done: "n lookups made"                                      LookupQuery::finish(V, replies)
//! ```
//!
//! | party       | learns                                                           |
//! |-------------|------------------------------------------------------------------|
//! | querier Q   | `Σ_j g_j(x) mod 2^w` for each of its registered applicants; `NotRegistered` for the others; `V` (uniformly random to it at every other entry) |
//! | provider P_j| `n`, the number of (distinct, registered) lookups of the session  |
//! | coordinator | `V` only, uniformly random without the keys (secagg hides each `v_j`) |
//! | anyone      | no single provider's contribution: each `v_j(u)` is padded by a PRF value of `k_j` |
//!
//! Secure against semi-honest parties: a provider that publishes a wrong `v_j` or
//! evaluates with another key makes results wrong, not leak. A querier's view of an
//! entry it did not look up is `g(u) + pad(u)` with `pad(u)` a PRF output under keys it
//! does not hold. The quota (design.md trust model) is what stops a querier from
//! looking up the whole universe: the provider refuses Hello when `n` is above the
//! querier's remaining daily quota ([`ProtocolError::QuotaExceeded`]) or its own
//! session maximum ([`ProtocolError::SetTooLarge`]); the node counts the quota.
//!
//! Every receiving state checks, in order: the sender is the peer the session was set
//! up with, the bytes decode, the binding is this session's, the message fits the
//! state, the chunk is the next one in sequence (0, 1, 2, … per direction), its size is
//! the chunking's; points go through crypto's checked batch decoder, which names the
//! index of the first bad one among the n ([`ProtocolError::InvalidElement`]). Any
//! error ends the session.
//!
//! # Values
//!
//! All values are mod `2^w`, `w = limits.output_bits` (1..=64). Points with negative
//! rules are w-bit two's complement (`Width::encode_signed`, [`LookupValue::signed`]).
//! Bit masks: providers are ordered by node id, provider `j`'s mask sits at bit offset
//! `Σ_{i<j} rules_i` ([`bit_offsets`], [`BitLayout`]), so the sum is the concatenation.
//!
//! # Exact bytes
//!
//! ```text
//! universe digest = SHA-256("xmcredit universe v1" || I2OSP(count, 8)
//!                   || for each entry, ascending bytewise: I2OSP(len, 2) || entry)
//! pad_j(u)        = OS2IP(SHA-512("xmcredit lookup pad" || I2OSP(len(contract), 2)
//!                   || contract || I2OSP(epoch, 8) || universe digest || I2OSP(w, 1)
//!                   || N_j(u))[0..8]) mod 2^w          N_j(u) = 32-byte k_j · H(u)
//! packed vector   = for each entry: I2OSP(value, ceil(w/8))
//! vector digest   = SHA-256("xmcredit lookup vector v1" || I2OSP(len(contract), 2)
//!                   || contract || I2OSP(epoch, 8) || universe digest || I2OSP(w, 1)
//!                   || I2OSP(count, 8) || packed vector)
//! transcript      = SHA-256("xmcredit lookup transcript v1" || D_qp || D_pq), each D
//!                   the SHA-256 of one direction's messages as I2OSP(len, 8) || bytes
//! ```
//!
//! # Wire encoding
//!
//! A message is `version || kind || binding || body`, integers big-endian (I2OSP):
//!
//! ```text
//! version  = 0x01
//! kind     = 0xC1..0xC4 (PSI uses 0x81..0x87, SecAgg 0x00..0x41, overthreshold
//!            0x91..0x96: another protocol's frame is refused as an unknown kind)
//! binding  = I2OSP(len(contract), 2) || contract || I2OSP(epoch, 8) || session id (16)
//! element  = 32 bytes, a canonical ristretto255 encoding
//!
//! 0xC1 Hello          binding || universe digest (32) || I2OSP(n, 8) || I2OSP(chunk size, 4)
//!                     chunk size in 1..=65536
//! 0xC2 BlindedChunk   binding || I2OSP(seq, 4) || I2OSP(count, 4) || count × element
//! 0xC3 EvaluatedChunk binding || I2OSP(seq, 4) || I2OSP(count, 4) || count × element
//! 0xC4 VectorChunk    binding || universe digest (32) || I2OSP(w, 1) || I2OSP(total, 8)
//!                     || vector digest (32) || I2OSP(first index, 8) || I2OSP(count, 4)
//!                     || count × I2OSP(entry, ceil(w/8))
//! ```
//!
//! Element counts are at most [`MAX_CHUNK_ELEMENTS`] (65536), vector chunk counts at
//! most [`MAX_VECTOR_CHUNK_ENTRIES`] (131072). The decoder ([`LookupMessage::from_bytes`])
//! refuses a wrong version or kind, a truncated field, a count over its limit or larger
//! than the bytes left, a chunk size outside 1..=65536, a width outside 1..=64, an empty
//! vector chunk or one running past `total`, an entry with bits above `w`, and trailing
//! bytes, all as [`ProtocolError::Malformed`].
//!
//! # Choices beyond the design
//!
//! - The universe digest is bound into every pad, into Hello and into the vector: a
//!   querier with another universe is refused by the provider, and a vector over another
//!   universe by the querier, instead of giving wrong values.
//! - Only distinct registered applicants are looked up; the rest are `NotRegistered`
//!   locally. A provider learns `n` either way; the quota is spent on real lookups.
//! - The provider answers Hello with nothing: the first EvaluatedChunk is its answer, so
//!   Q sends Hello and its first chunks together (blinded elements reveal nothing).

mod messages;
mod provider;
mod querier;
mod universe;
mod vector;

use std::fmt;

use xmcredit_crypto::NodeId;

pub use messages::{
    BlindedChunk, EvaluatedChunk, Hello, LookupMessage, LookupMessageKind, VectorChunk, MAX_CHUNK_ELEMENTS,
    MAX_VECTOR_CHUNK_ENTRIES, WIRE_VERSION,
};
pub use provider::{
    prepare_contribution, LookupProvider, ProviderAwaitingBlinded, ProviderAwaitingHello, ProviderConfig,
    ProviderNext, ProviderOutput, ProviderPolicy,
};
pub use querier::{
    LookupQuery, LookupValue, ProviderReply, QuerierAwaitingEvaluated, QuerierConfig, QuerierNext,
    QuerierSession, QueryOutput, QUERIER_WINDOW_CHUNKS,
};
pub use universe::{Universe, MAX_ENTRY_LEN, MAX_UNIVERSE_ENTRIES, UNIVERSE_LABEL};
pub use vector::{
    bit_offsets, combine, BitLayout, DownloadNext, LookupVector, VectorDownload, VectorHeader, VECTOR_LABEL,
};
pub use xmcredit_crypto::lookup::Width;

use crate::chunks::{at_offset, check_chunk, check_seq, chunk_count};
use crate::psi::transcript::{Side, Transcript};
use crate::{ProtocolError, SessionBinding};

/// Domain-separation label of the query session's transcript digest.
const TRANSCRIPT_LABEL: &[u8] = b"xmcredit lookup transcript v1";

/// The protocol's name in the shared chunking errors ([`crate::chunks`]).
const PROTOCOL: &str = "lookup";

/// A message for the node to send: the encoded bytes, already in the transcript.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub to: NodeId,
    pub kind: LookupMessageKind,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for OutgoingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutgoingMessage({} to {}, {} bytes)", self.kind, self.to, self.bytes.len())
    }
}

/// One end of a query session: the binding, the peer, the transcript.
#[derive(Debug)]
struct Channel {
    binding: SessionBinding,
    peer: NodeId,
    transcript: Transcript,
}

impl Channel {
    fn new(binding: SessionBinding, peer: NodeId, side: Side) -> Self {
        Self { binding, peer, transcript: Transcript::with_label(TRANSCRIPT_LABEL, side) }
    }

    /// Sender, decoding and binding checks common to every receiving state.
    fn receive(&mut self, from: &NodeId, bytes: &[u8]) -> Result<LookupMessage, ProtocolError> {
        if *from != self.peer {
            return Err(ProtocolError::UnexpectedSender {
                expected: self.peer.to_string(),
                got: from.clone(),
            });
        }
        let message = LookupMessage::from_bytes(bytes)?;
        self.binding.check(message.binding())?;
        self.transcript.received(bytes);
        Ok(message)
    }

    /// Encodes `message`, adds it to the transcript and queues it for the peer.
    fn send(&mut self, message: LookupMessage, out: &mut Vec<OutgoingMessage>) {
        let bytes = message.to_bytes();
        self.transcript.sent(&bytes);
        out.push(OutgoingMessage { to: self.peer.clone(), kind: message.kind(), bytes });
    }
}

fn unexpected(state: &'static str, message: &LookupMessage) -> ProtocolError {
    ProtocolError::UnexpectedMessage { state, got: message.kind().name() }
}
