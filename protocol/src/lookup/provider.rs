//! The provider's side: its padded contribution over the universe, and its states in a
//! query session (an OPRF evaluation with a quota).

use std::fmt;

use xmcredit_crypto::lookup::{padded_contributions, LookupPadContext};
use xmcredit_crypto::oprf::OprfKey;
use xmcredit_crypto::set::evaluate_batch;
use xmcredit_crypto::NodeId;

use super::messages::{BlindedChunk, EvaluatedChunk, LookupMessage};
use super::universe::Universe;
use super::vector::{LookupVector, VectorHeader};
use super::{
    at_offset, check_chunk, check_seq, chunk_count, unexpected, Channel, OutgoingMessage, Side, PROTOCOL,
};
use crate::{ProtocolError, SessionBinding};

/// Provider `j`'s padded contribution: `v_j(u) = (g_j(u) + pad_j(u)) mod 2^w` for every
/// universe entry `u`, with `pad_j(u)` from `N_j(u) = k_j · H(u)` (exact bytes in
/// [`xmcredit_crypto::lookup`]). Batched and parallel.
///
/// `values[i]` is `g_j(universe[i])` as a w-bit value: points as computed by the
/// contract's scorecard (negative totals as two's complement,
/// `Width::encode_signed`), bit masks already shifted to the provider's offset
/// ([`super::BitLayout::place`]). `key` is the node's `LookupProvider` key of the
/// header's contract and epoch. Refuses a value count other than the universe's and a
/// header of another universe, and a value that does not fit the width.
pub fn prepare_contribution(
    key: &OprfKey,
    header: &VectorHeader,
    universe: &Universe,
    values: &[u64],
) -> Result<LookupVector, ProtocolError> {
    if header.universe_digest != universe.digest() {
        return Err(ProtocolError::UniverseMismatch {
            expected: hex::encode(universe.digest()),
            got: hex::encode(header.universe_digest),
        });
    }
    if values.len() != universe.len() {
        return Err(ProtocolError::ContributionLength { expected: universe.len(), got: values.len() });
    }
    let context =
        LookupPadContext::new(&header.contract, header.epoch, &header.universe_digest, header.width);
    let padded = padded_contributions(key, &context, universe.entries(), values)?;
    LookupVector::new(header.clone(), padded)
}

/// The provider's limits for one session (filled in by the node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderPolicy {
    /// Lookups the querier has left today: the contract's `lookups_per_day` for it
    /// minus what the node has counted (across every contract over the same dataset).
    pub remaining_quota: u64,
    /// Most lookups this node answers in one session (bounds its work).
    pub max_lookups: u64,
}

/// Everything a provider session is set up with.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub binding: SessionBinding,
    /// The querier node, as the transport authenticates it.
    pub querier: NodeId,
    /// Digest of the universe this node contributed over this epoch.
    pub universe_digest: [u8; 32],
    pub policy: ProviderPolicy,
}

/// What the provider learns: how many lookups were made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderOutput {
    pub lookups: u64,
    /// `SHA-256("xmcredit lookup transcript v1" || D_qp || D_pq)`, as PSI's; equal to
    /// the querier's for an honest run.
    pub transcript_digest: [u8; 32],
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

// ---- AwaitingHello -------------------------------------------------------------------

/// P waits for the querier's Hello.
pub struct ProviderAwaitingHello {
    channel: Channel,
    universe_digest: [u8; 32],
    policy: ProviderPolicy,
    key: OprfKey,
}

impl ProviderAwaitingHello {
    const STATE: &'static str = "provider awaiting Hello";

    /// A session answering with `key`, the node's `LookupProvider` key of the binding's
    /// contract and epoch.
    pub fn new(config: ProviderConfig, key: OprfKey) -> Self {
        let ProviderConfig { binding, querier, universe_digest, policy } = config;
        Self { channel: Channel::new(binding, querier, Side::Server), universe_digest, policy, key }
    }

    /// Takes Hello: refuses another universe, `n = 0`, `n` above the session maximum
    /// ([`ProtocolError::SetTooLarge`]) and `n` above the querier's remaining quota
    /// ([`ProtocolError::QuotaExceeded`]). Nothing is sent back: the evaluated chunks
    /// are the answer. The node charges `n` to the quota once this returns `Ok`
    /// ([`ProviderAwaitingBlinded::lookups`]).
    pub fn handle(mut self, from: &NodeId, bytes: &[u8]) -> Result<ProviderAwaitingBlinded, ProtocolError> {
        let hello = match self.channel.receive(from, bytes)? {
            LookupMessage::Hello(hello) => hello,
            other => return Err(unexpected(Self::STATE, &other)),
        };
        if hello.universe_digest != self.universe_digest {
            return Err(ProtocolError::UniverseMismatch {
                expected: hex::encode(self.universe_digest),
                got: hex::encode(hello.universe_digest),
            });
        }
        let n = hello.lookups;
        if n == 0 {
            return Err(ProtocolError::SetTooSmall { whose: "querier", got: 0, min: 1 });
        }
        if n > self.policy.max_lookups {
            return Err(ProtocolError::SetTooLarge {
                whose: "querier",
                got: n,
                max: self.policy.max_lookups,
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
            return Err(ProtocolError::SetTooLarge { whose: "querier", got: n, max });
        }
        Ok(ProviderAwaitingBlinded {
            channel: self.channel,
            key: self.key,
            n,
            chunk_size: hello.chunk_size,
            next_seq: 0,
            received: 0,
        })
    }
}

impl fmt::Debug for ProviderAwaitingHello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderAwaitingHello")
            .field("binding", &self.channel.binding)
            .field("querier", &self.channel.peer)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

// ---- AwaitingBlinded -----------------------------------------------------------------

/// P evaluates blinded chunks as they arrive and answers each at once.
pub struct ProviderAwaitingBlinded {
    channel: Channel,
    key: OprfKey,
    n: u64,
    chunk_size: u32,
    next_seq: u32,
    received: u64,
}

/// Where a provider goes after a BlindedChunk.
#[derive(Debug)]
pub enum ProviderNext {
    AwaitingBlinded(Box<ProviderAwaitingBlinded>),
    /// All n evaluated; the run is over once the returned messages are sent.
    Done(ProviderOutput),
}

impl ProviderAwaitingBlinded {
    const STATE: &'static str = "provider awaiting BlindedChunk";

    /// Lookups accepted at Hello: what the node charges to the querier's quota.
    pub fn lookups(&self) -> u64 {
        self.n
    }

    /// Takes the next BlindedChunk (in sequence, exactly the chunking's size, not past
    /// n) and evaluates it (RFC 9497 §3.3.1 BlindEvaluate, batched; the identity and
    /// non-canonical points are refused with their index among the n).
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(ProviderNext, Vec<OutgoingMessage>), ProtocolError> {
        let chunk: BlindedChunk = match self.channel.receive(from, bytes)? {
            LookupMessage::BlindedChunk(chunk) => chunk,
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
        let mut out = Vec::with_capacity(1);
        let reply =
            EvaluatedChunk { binding: self.channel.binding.clone(), seq: chunk.seq, elements: evaluated };
        self.channel.send(LookupMessage::EvaluatedChunk(reply), &mut out);
        self.received = after;
        self.next_seq += 1;
        if self.received < self.n {
            return Ok((ProviderNext::AwaitingBlinded(Box::new(self)), out));
        }
        let summary = self.channel.transcript.finish();
        let output = ProviderOutput {
            lookups: self.n,
            transcript_digest: summary.digest,
            bytes_sent: summary.bytes_sent,
            bytes_received: summary.bytes_received,
        };
        Ok((ProviderNext::Done(output), out))
    }
}

impl fmt::Debug for ProviderAwaitingBlinded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderAwaitingBlinded")
            .field("binding", &self.channel.binding)
            .field("n", &self.n)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

// ---- Driver --------------------------------------------------------------------------

/// The provider's states in one value, for a node's receive loop (see
/// [`crate::psi::PsiClient`] for the loop's shape).
#[derive(Debug)]
pub enum LookupProvider {
    AwaitingHello(Box<ProviderAwaitingHello>),
    AwaitingBlinded(Box<ProviderAwaitingBlinded>),
    Done(ProviderOutput),
}

impl LookupProvider {
    /// [`ProviderAwaitingHello::new`].
    pub fn new(config: ProviderConfig, key: OprfKey) -> Self {
        Self::AwaitingHello(Box::new(ProviderAwaitingHello::new(config, key)))
    }

    /// Hands one message from `from` to the current state.
    pub fn handle(self, from: &NodeId, bytes: &[u8]) -> Result<(Self, Vec<OutgoingMessage>), ProtocolError> {
        match self {
            Self::AwaitingHello(state) => {
                Ok((Self::AwaitingBlinded(Box::new(state.handle(from, bytes)?)), Vec::new()))
            }
            Self::AwaitingBlinded(state) => match state.handle(from, bytes)? {
                (ProviderNext::AwaitingBlinded(next), out) => Ok((Self::AwaitingBlinded(next), out)),
                (ProviderNext::Done(output), out) => Ok((Self::Done(output), out)),
            },
            Self::Done(_) => {
                let got = LookupMessage::from_bytes(bytes)
                    .map(|m| m.kind().name())
                    .unwrap_or("undecodable message");
                Err(ProtocolError::UnexpectedMessage { state: "provider done", got })
            }
        }
    }

    /// Lookups accepted so far (0 before Hello): what the node charges to the quota.
    pub fn lookups(&self) -> u64 {
        match self {
            Self::AwaitingHello(_) => 0,
            Self::AwaitingBlinded(state) => state.lookups(),
            Self::Done(output) => output.lookups,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done(_))
    }

    pub fn into_output(self) -> Option<ProviderOutput> {
        match self {
            Self::Done(output) => Some(output),
            _ => None,
        }
    }
}
