//! A committee member's states: member i holds `k_i` and evaluates one contributor's
//! blinded elements, after checking its set size and quota.

use std::fmt;

use xmcredit_crypto::oprf::OprfKey;
use xmcredit_crypto::set::evaluate_batch;
use xmcredit_crypto::NodeId;

use super::messages::{BlindedChunk, EvaluatedChunk, OverthresholdMessage};
use super::{check_sender, unexpected, OutgoingMessage, Traffic, PROTOCOL};
use crate::chunks::{at_offset, check_chunk, check_seq, chunk_count};
use crate::{ProtocolError, SessionBinding};

/// The member's limits for one contributor, filled in by the node from the contract and
/// its own quota counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberPolicy {
    /// The contract's `limits.min_set_size` for this contributor. A tiny set would make
    /// the run a membership test of a few chosen ids.
    pub min_set_size: u64,
    /// The maximum set size per bank (the session [`super::Parameters`]); the tag length
    /// is derived from it, so a larger set would weaken every bank's tags.
    pub max_set_size: u64,
    /// What is left of the contributor's daily quota of evaluations, as the node counts
    /// it (across all contracts over the same dataset).
    pub remaining_quota: u64,
}

/// Everything a member's session with one contributor is set up with.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    pub binding: SessionBinding,
    /// The contributor, as the transport authenticates it.
    pub contributor: NodeId,
    pub policy: MemberPolicy,
}

/// What a member learns: who asked, and how many elements it evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberOutput {
    pub contributor: NodeId,
    /// `n`, charged to the contributor's quota when Hello was accepted.
    pub evaluated: u64,
    pub traffic: Traffic,
}

// ---- AwaitingHello -------------------------------------------------------------------

/// Member i waits for a contributor's Hello.
pub struct MemberAwaitingHello {
    binding: SessionBinding,
    contributor: NodeId,
    policy: MemberPolicy,
    key: OprfKey,
    traffic: Traffic,
}

/// Where a member goes after Hello or a BlindedChunk.
#[derive(Debug)]
pub enum MemberNext {
    AwaitingBlinded(Box<MemberAwaitingBlinded>),
    /// Every element is evaluated (at once for `n = 0`).
    Done(MemberOutput),
}

impl MemberAwaitingHello {
    const STATE: &'static str = "committee member awaiting Hello";

    /// A session evaluating for `config.contributor` with `key`, this member's `k_i` for
    /// the binding's contract and epoch (`KeyPurpose::OverthresholdCommittee`).
    pub fn new(config: MemberConfig, key: OprfKey) -> Self {
        let MemberConfig { binding, contributor, policy } = config;
        Self { binding, contributor, policy, key, traffic: Traffic::default() }
    }

    /// Takes Hello: refuses `n` below the contract's minimum
    /// ([`ProtocolError::SetTooSmall`]), above the maximum per bank
    /// ([`ProtocolError::SetTooLarge`]) or above the remaining quota
    /// ([`ProtocolError::QuotaExceeded`]), each with the numbers. On success the node
    /// charges `n` to the contributor's quota ([`MemberAwaitingBlinded::charged`]).
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(MemberNext, Vec<OutgoingMessage>), ProtocolError> {
        check_sender(&self.contributor, from)?;
        let hello = match self.traffic.receive(&self.binding, bytes)? {
            OverthresholdMessage::Hello(hello) => hello,
            other => return Err(unexpected(Self::STATE, &other)),
        };
        let n = hello.set_size;
        if n < self.policy.min_set_size {
            return Err(ProtocolError::SetTooSmall {
                whose: "contributor",
                got: n,
                min: self.policy.min_set_size,
            });
        }
        if n > self.policy.max_set_size {
            return Err(ProtocolError::SetTooLarge {
                whose: "contributor",
                got: n,
                max: self.policy.max_set_size,
            });
        }
        if n > self.policy.remaining_quota {
            return Err(ProtocolError::QuotaExceeded {
                requested: n,
                remaining: self.policy.remaining_quota,
            });
        }
        if chunk_count(n, hello.chunk_size).is_none() {
            let max = u64::from(u32::MAX) * u64::from(hello.chunk_size);
            return Err(ProtocolError::SetTooLarge { whose: "contributor", got: n, max });
        }
        if n == 0 {
            let output = MemberOutput { contributor: self.contributor, evaluated: 0, traffic: self.traffic };
            return Ok((MemberNext::Done(output), Vec::new()));
        }
        let next = MemberAwaitingBlinded {
            binding: self.binding,
            contributor: self.contributor,
            key: self.key,
            traffic: self.traffic,
            n,
            chunk_size: hello.chunk_size,
            next_seq: 0,
            received: 0,
        };
        Ok((MemberNext::AwaitingBlinded(Box::new(next)), Vec::new()))
    }
}

impl fmt::Debug for MemberAwaitingHello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberAwaitingHello")
            .field("binding", &self.binding)
            .field("contributor", &self.contributor)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

// ---- AwaitingBlinded -----------------------------------------------------------------

/// Member i evaluates the contributor's blinded chunks as they arrive.
pub struct MemberAwaitingBlinded {
    binding: SessionBinding,
    contributor: NodeId,
    key: OprfKey,
    traffic: Traffic,
    n: u64,
    chunk_size: u32,
    next_seq: u32,
    received: u64,
}

impl MemberAwaitingBlinded {
    const STATE: &'static str = "committee member awaiting BlindedChunk";

    /// The `n` the node charges to the contributor's daily quota: the Hello accepted,
    /// whatever happens next.
    pub fn charged(&self) -> u64 {
        self.n
    }

    /// Takes the next BlindedChunk (refusing a replayed, skipped or wrongly sized one)
    /// and answers with `k_i · B` for each element (RFC 9497 §3.3.1 BlindEvaluate,
    /// batched; the identity and non-canonical points are refused with their index in
    /// the whole set).
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(MemberNext, Vec<OutgoingMessage>), ProtocolError> {
        check_sender(&self.contributor, from)?;
        let chunk: BlindedChunk = match self.traffic.receive(&self.binding, bytes)? {
            OverthresholdMessage::BlindedChunk(chunk) => chunk,
            other => return Err(unexpected(Self::STATE, &other)),
        };
        check_seq(PROTOCOL, "BlindedChunk", self.next_seq, chunk.seq)?;
        let after = check_chunk(
            PROTOCOL,
            "blinded elements",
            self.n,
            self.received,
            self.chunk_size,
            chunk.seq,
            chunk.elements.len(),
        )?;
        let evaluated = evaluate_batch(&self.key, &chunk.elements).map_err(at_offset(self.received))?;
        let reply = EvaluatedChunk { binding: self.binding.clone(), seq: chunk.seq, elements: evaluated };
        let mut out = Vec::with_capacity(1);
        self.traffic.send(&self.contributor, &OverthresholdMessage::EvaluatedChunk(reply), &mut out);
        self.received = after;
        self.next_seq += 1;
        if self.received < self.n {
            return Ok((MemberNext::AwaitingBlinded(Box::new(self)), out));
        }
        let output = MemberOutput { contributor: self.contributor, evaluated: self.n, traffic: self.traffic };
        Ok((MemberNext::Done(output), out))
    }
}

impl fmt::Debug for MemberAwaitingBlinded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberAwaitingBlinded")
            .field("binding", &self.binding)
            .field("contributor", &self.contributor)
            .field("n", &self.n)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

// ---- Driver --------------------------------------------------------------------------

/// A member's states for one contributor in one value, for a node's receive loop:
///
/// ```text
/// let key = master.derive_oprf_key(&contract, epoch, KeyPurpose::OverthresholdCommittee)?;
/// let mut member = CommitteeMember::new(config, key);
/// while !member.is_done() {
///     let (from, bytes) = receive();
///     let (next, out) = member.handle(&from, &bytes)?;   // any error ends the run
///     if let Some(n) = next.charged() { quota.charge_once(contributor, n) }
///     send(out);
///     member = next;
/// }
/// ```
#[derive(Debug)]
pub enum CommitteeMember {
    AwaitingHello(Box<MemberAwaitingHello>),
    AwaitingBlinded(Box<MemberAwaitingBlinded>),
    Done(MemberOutput),
}

impl CommitteeMember {
    /// [`MemberAwaitingHello::new`].
    pub fn new(config: MemberConfig, key: OprfKey) -> Self {
        Self::AwaitingHello(Box::new(MemberAwaitingHello::new(config, key)))
    }

    /// Hands one message from `from` to the current state.
    pub fn handle(self, from: &NodeId, bytes: &[u8]) -> Result<(Self, Vec<OutgoingMessage>), ProtocolError> {
        let (next, out) = match self {
            Self::AwaitingHello(state) => state.handle(from, bytes)?,
            Self::AwaitingBlinded(state) => state.handle(from, bytes)?,
            Self::Done(_) => {
                let got = OverthresholdMessage::from_bytes(bytes)
                    .map(|m| m.kind().name())
                    .unwrap_or("undecodable message");
                return Err(ProtocolError::UnexpectedMessage { state: "committee member done", got });
            }
        };
        Ok(match next {
            MemberNext::AwaitingBlinded(state) => (Self::AwaitingBlinded(state), out),
            MemberNext::Done(output) => (Self::Done(output), out),
        })
    }

    /// The `n` accepted at Hello (to charge to the quota), once Hello is accepted.
    pub fn charged(&self) -> Option<u64> {
        match self {
            Self::AwaitingHello(_) => None,
            Self::AwaitingBlinded(state) => Some(state.charged()),
            Self::Done(output) => Some(output.evaluated),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done(_))
    }

    pub fn into_output(self) -> Option<MemberOutput> {
        match self {
            Self::Done(output) => Some(output),
            _ => None,
        }
    }
}
