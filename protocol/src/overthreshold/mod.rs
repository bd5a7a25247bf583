//! Multi-party duplicate detection (design.md, computation 2): which of each bank's
//! items (receivable or invoice keys) occur at `t` or more banks, under an OPRF whose
//! key is shared by a committee, as sans-I/O state machines.
//!
//! # Roles and flow
//!
//! The contract names a coordinator, a committee of `c` members and the contributors
//! (banks). Member `i` holds `k_i`, the key its node derives with
//! `MasterSecret::derive_oprf_key(contract, epoch, KeyPurpose::OverthresholdCommittee)`;
//! the effective key is `k = Σ k_i`, which nobody holds. Contributor B blinds every item
//! with one session scalar `r` (crypto's `ClientSetSession`), sends the same blinded
//! chunks to every member, adds the `c` evaluations point-wise
//! (`Σ k_i · r · H(x) = r · k · H(x)`, crypto's `EvaluationSum`), unblinds to
//! `N = k · H(x)` and tags it. The coordinator counts equal tags across banks.
//!
//! ```text
//! contributor B                 committee member i             coordinator
//!                                                              CoordinatorCollecting::new
//! ContributorAwaitingAnnounce ◀────────────── Announce ──────── (tag bits, chunk size)
//!   ::handle ── Hello ─────────▶ MemberAwaitingHello::handle
//!             (n, chunk size)      checks min ≤ n ≤ max, n ≤ quota
//!            ── BlindedChunk ──▶ MemberAwaitingBlinded::handle
//! ContributorAwaitingEvaluations ◀─ EvaluatedChunk ─ (k_i · r·H(x), in order)
//!   ::handle (every member, every chunk; next chunk out as one completes)
//!   sums, unblinds, tags ──────────────────────── TagChunk ───▶ CoordinatorCollecting
//!                                  (tags sorted ascending)         ::receive … close
//! ContributorAwaitingResult ◀──────────────────── ResultChunk ── (positions with
//!   ::handle → ContributorOutput                                   multiplicity ≥ t)
//!                                                              → CoordinatorOutput
//! ```
//!
//! The contributor keeps at most [`CONTRIBUTOR_WINDOW_CHUNKS`] chunks in flight: it sends
//! chunk `s + W` once every member has answered chunk `s`. Members answer each chunk as
//! it arrives. If a member stops answering, the node's timer fires and the node calls
//! [`ContributorAwaitingEvaluations::member_failed`], which returns
//! [`ProtocolError::CommitteeMemberFailed`] naming it; the contributor sends no tags.
//! The coordinator collects with `receive(&mut self, ..)` (a refused message leaves its
//! state unchanged, so one bank cannot end the others' session) and counts at `close`,
//! when every contributor's set is in or the node's timer fired: missing contributors
//! are named, and fewer than the contract's `min_contributors` aborts
//! ([`ProtocolError::TooFewContributors`]).
//!
//! # Who learns what
//!
//! | party | learns |
//! |---|---|
//! | contributor B | for each of its own items held by `t` or more contributors (itself included), the item's index and its multiplicity; the number of contributors counted. Nothing about items below `t`, nor which banks hold its items. |
//! | committee member i | `n_B` for each contributor B that asks it; uniformly random blinded points. It cannot evaluate `k` alone, so it cannot test a guessed id. |
//! | coordinator | each contributor's `n_B`, and the tags: pseudorandom values under `k`, so for every distinct tag the *set of banks* holding it (not the item). Its output is the multiplicity histogram `{m → number of distinct tags held by exactly m banks}` and, per pair of banks, the number of tags they share; from the tags it could compute the count for any subset of banks, which the histogram and pair counts summarize. It learns no item and cannot test a guessed id (it holds no key share). |
//!
//! Nobody can evaluate `k · H(x)` for a guessed `x` without every member's cooperation;
//! a contributor can, for `x` of its own choosing, but every evaluation counts against
//! its daily quota, which each member enforces on its own. A contributor colluding with
//! the coordinator can learn, for ids it pays quota for, how many banks hold them (the
//! quota and the minimum set size bound this). Security is against semi-honest parties:
//! a member returning wrong evaluations makes B's tags wrong without being detected
//! (a verifiable OPRF would catch it; future work), and a coordinator can answer wrongly
//! within the checks the contributor makes on the result.
//!
//! # Wire encoding
//!
//! A message is `version || kind || binding || body`, integers big-endian (I2OSP):
//!
//! ```text
//! version   = 0x01 (1 byte)
//! kind      = 1 byte, 0x91..0x96 (PSI uses 0x81..0x87, SecAgg 0x00..0x41, lookup
//!             0xC1..0xC4: another protocol's frame is refused here as an unknown kind)
//! binding   = I2OSP(len(contract), 2) || contract (UTF-8) || I2OSP(epoch, 8)
//!             || session id (16)                    (= SessionBinding::to_bytes)
//! element   = 32 bytes, a canonical ristretto255 encoding (RFC 9496 §4.3.2)
//!
//! 0x91 Announce       binding || I2OSP(tag bits, 2) || I2OSP(chunk size, 4)
//! 0x92 Hello          binding || I2OSP(n, 8) || I2OSP(chunk size, 4)
//! 0x93 BlindedChunk   binding || I2OSP(seq, 4) || I2OSP(count, 4) || count × element
//! 0x94 EvaluatedChunk binding || I2OSP(seq, 4) || I2OSP(count, 4) || count × element
//! 0x95 TagChunk       binding || I2OSP(seq, 4) || I2OSP(total tags, 8)
//!                     || I2OSP(L, 1) || I2OSP(count, 4) || count × L bytes
//! 0x96 ResultChunk    binding || I2OSP(seq, 4) || I2OSP(contributors counted, 2)
//!                     || I2OSP(total matches, 8) || I2OSP(count, 4)
//!                     || count × (I2OSP(position, 8) || I2OSP(multiplicity, 2))
//! ```
//!
//! Chunk sizes are in `1..=65536`, every count at most [`MAX_CHUNK_ELEMENTS`] (65536),
//! `L` (tag bytes = tag bits / 8) in 5..=16. BlindedChunk and EvaluatedChunk follow
//! Hello's chunk size; TagChunk and ResultChunk the Announce's. Each stream is numbered
//! from 0 and every chunk holds exactly the chunk size, the last one the rest. TagChunk
//! and ResultChunk are sent even when empty (one chunk, total 0). The decoder
//! ([`OverthresholdMessage::from_bytes`]) checks shape only and never panics; meaning is
//! the states' job.
//!
//! # Choices beyond the design
//!
//! - **Tag length.** `tag bits = tag_bits_for(T, T, 40) = 40 + 2·⌈log2 T⌉` rounded up to
//!   whole bytes, with `T = contributors × max_set_size` (the maximum set size per bank,
//!   from the session [`Parameters`]): below 2^-40 chance that any two of the at most T
//!   tags of different items collide. The coordinator announces it; each contributor
//!   derives it too and refuses another ([`ProtocolError::TagLengthMismatch`]).
//! - **Tags are sent sorted ascending**, not in X's order: X's order (often sorted by id)
//!   would tell the coordinator the rank of each shared item. The coordinator refuses a
//!   set that is not strictly ascending, which also refuses a repeated tag (a tag must
//!   count once per bank). ResultChunk positions index that sorted stream; the
//!   contributor maps them back to X.
//! - **Result form**: only the positions with multiplicity ≥ t and their multiplicity
//!   (the contract grants contributors `own_matches`), never the multiplicity of items
//!   below the threshold.
//! - A contributor's set with a repeated item is refused before anything is sent
//!   ([`ProtocolError::DuplicateElement`]): one blind per session would show members the
//!   repeat as equal blinded elements.
//! - Quota: a member charges `n` to the contributor's daily quota when it accepts Hello
//!   (the node reads [`MemberAwaitingBlinded::charged`]), before it evaluates anything.

mod contributor;
mod coordinator;
mod member;
mod messages;

use std::fmt;

use xmcredit_crypto::set::tag_bits_for;
use xmcredit_crypto::NodeId;

pub use contributor::{
    ContributorAfterAnnounce, ContributorAwaitingAnnounce, ContributorAwaitingEvaluations,
    ContributorAwaitingResult, ContributorConfig, ContributorEvaluationsNext, ContributorOutput,
    ContributorResultNext, OverthresholdContributor, OwnMatch, CONTRIBUTOR_WINDOW_CHUNKS,
};
pub use coordinator::{CoordinatorCollecting, CoordinatorConfig, CoordinatorOutput, SharedPair};
pub use member::{
    CommitteeMember, MemberAwaitingBlinded, MemberAwaitingHello, MemberConfig, MemberNext, MemberOutput,
    MemberPolicy,
};
pub use messages::{
    Announce, BlindedChunk, EvaluatedChunk, Hello, MessageKind, OverthresholdMessage, ResultChunk,
    ResultEntry, TagChunk, MAX_CHUNK_ELEMENTS, WIRE_VERSION,
};

use crate::{ProtocolError, SessionBinding};

/// Statistical security of tags (design.md: tags of at least 40 + log2 n + log2 m bits).
pub const STATISTICAL_SECURITY_BITS: u32 = 40;

/// Most contributors a session may have (multiplicities travel as u16).
pub const MAX_CONTRIBUTORS: usize = 1024;

/// The name chunk errors carry.
const PROTOCOL: &str = "overthreshold";

/// What every party of a session agrees on, from the contract (filled in by the node).
/// Construct with [`Parameters::new`], which checks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameters {
    coordinator: NodeId,
    committee: Vec<NodeId>,
    contributors: Vec<NodeId>,
    threshold: u32,
    min_contributors: u32,
    max_set_size: u64,
    tag_bits: u32,
}

impl Parameters {
    /// Checks: at least two distinct contributors (at most [`MAX_CONTRIBUTORS`]), a
    /// committee of at least one distinct member, `2 <= threshold <= min_contributors <=
    /// contributors`, and a `max_set_size` (per bank) whose tags fit in 128 bits.
    pub fn new(
        coordinator: NodeId,
        committee: Vec<NodeId>,
        contributors: Vec<NodeId>,
        threshold: u32,
        min_contributors: u32,
        max_set_size: u64,
    ) -> Result<Self, ProtocolError> {
        let refuse = |reason: String| Err(ProtocolError::OverthresholdSetup { reason });
        if contributors.len() < 2 || contributors.len() > MAX_CONTRIBUTORS {
            return refuse(format!("{} contributors, need 2 to {MAX_CONTRIBUTORS}", contributors.len()));
        }
        if committee.is_empty() {
            return refuse("an empty committee".into());
        }
        for (what, list) in [("contributor", &contributors), ("committee member", &committee)] {
            if let Some(repeat) =
                list.iter().enumerate().find_map(|(i, n)| list[..i].contains(n).then_some(n))
            {
                return refuse(format!("{what} {repeat} is named twice"));
            }
        }
        let n = contributors.len() as u64;
        if threshold < 2 || u64::from(threshold) > n {
            return refuse(format!("threshold {threshold} outside 2..={n}"));
        }
        if min_contributors < threshold || u64::from(min_contributors) > n {
            return refuse(format!("min_contributors {min_contributors} outside {threshold}..={n}"));
        }
        let total = n.saturating_mul(max_set_size);
        let tag_bits = tag_bits_for(total, total, STATISTICAL_SECURITY_BITS).map_err(|e| {
            ProtocolError::OverthresholdSetup { reason: format!("max_set_size {max_set_size}: {e}") }
        })?;
        Ok(Self { coordinator, committee, contributors, threshold, min_contributors, max_set_size, tag_bits })
    }

    pub fn coordinator(&self) -> &NodeId {
        &self.coordinator
    }

    pub fn committee(&self) -> &[NodeId] {
        &self.committee
    }

    pub fn contributors(&self) -> &[NodeId] {
        &self.contributors
    }

    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    pub fn min_contributors(&self) -> u32 {
        self.min_contributors
    }

    /// The maximum set size per bank.
    pub fn max_set_size(&self) -> u64 {
        self.max_set_size
    }

    /// `tag_bits_for(T, T, 40)` with `T = contributors × max_set_size`.
    pub fn tag_bits(&self) -> u32 {
        self.tag_bits
    }
}

/// A message for the node to send.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub to: NodeId,
    pub kind: MessageKind,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for OutgoingMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutgoingMessage({} to {}, {} bytes)", self.kind, self.to, self.bytes.len())
    }
}

/// Bytes sent and received by one role, for the node's metrics and audit record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Traffic {
    /// Decodes `bytes` and checks the binding; counts them as received once they pass.
    fn receive(
        &mut self,
        binding: &SessionBinding,
        bytes: &[u8],
    ) -> Result<OverthresholdMessage, ProtocolError> {
        let message = OverthresholdMessage::from_bytes(bytes)?;
        binding.check(message.binding())?;
        self.bytes_received += bytes.len() as u64;
        Ok(message)
    }

    /// Encodes `message` for `to` and queues it.
    fn send(&mut self, to: &NodeId, message: &OverthresholdMessage, out: &mut Vec<OutgoingMessage>) {
        let bytes = message.to_bytes();
        self.bytes_sent += bytes.len() as u64;
        out.push(OutgoingMessage { to: to.clone(), kind: message.kind(), bytes });
    }
}

/// Refuses a message from anyone but `expected`.
fn check_sender(expected: &NodeId, from: &NodeId) -> Result<(), ProtocolError> {
    if from != expected {
        return Err(ProtocolError::UnexpectedSender { expected: expected.to_string(), got: from.clone() });
    }
    Ok(())
}

fn unexpected(state: &'static str, message: &OverthresholdMessage) -> ProtocolError {
    ProtocolError::UnexpectedMessage { state, got: message.kind().name() }
}

/// Refuses a chunk size outside `1..=MAX_CHUNK_ELEMENTS`.
fn check_chunk_size(chunk_size: u32) -> Result<(), ProtocolError> {
    if chunk_size == 0 || chunk_size as usize > MAX_CHUNK_ELEMENTS {
        return Err(ProtocolError::InvalidChunkSize { got: chunk_size, max: MAX_CHUNK_ELEMENTS });
    }
    Ok(())
}
