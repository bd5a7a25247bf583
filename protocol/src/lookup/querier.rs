//! The querier's side: its applicants, one OPRF session per provider, and the last
//! step that removes the pads from the downloaded vector.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use rand_core::CryptoRngCore;
use xmcredit_crypto::lookup::{LookupPadContext, Width};
use xmcredit_crypto::set::{ClientSetSession, UnblindedElement};
use xmcredit_crypto::NodeId;

use super::messages::{BlindedChunk, EvaluatedChunk, Hello, LookupMessage, MAX_CHUNK_ELEMENTS};
use super::universe::Universe;
use super::vector::{LookupVector, VectorHeader};
use super::{
    at_offset, check_chunk, check_seq, chunk_count, unexpected, Channel, OutgoingMessage, Side, PROTOCOL,
};
use crate::{ProtocolError, SessionBinding};

/// Blinded chunks the querier keeps in flight before it waits for replies.
pub const QUERIER_WINDOW_CHUNKS: u32 = 4;

/// The result for one applicant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LookupValue {
    /// `Σ_j g_j(x) mod 2^w`: points (read signed with [`LookupValue::signed`] when the
    /// contract has negative points) or the concatenated bit masks.
    Value(u64),
    /// The applicant is not in the universe: no provider scored it.
    NotRegistered,
}

impl LookupValue {
    /// The value read as w-bit two's complement; `None` for `NotRegistered`.
    pub fn signed(self, width: Width) -> Option<i64> {
        match self {
            Self::Value(v) => Some(width.decode_signed(v)),
            Self::NotRegistered => None,
        }
    }
}

/// What the querier learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryOutput {
    /// One result per applicant, in the order the applicants were given.
    pub results: Vec<LookupValue>,
    /// Lookups each provider counted (the distinct registered applicants).
    pub lookups: u64,
    /// Per provider, in node order: the session transcript digest.
    pub transcripts: Vec<(NodeId, [u8; 32])>,
}

/// A querier's run: its applicants, the universe and the contract's providers. The
/// query sessions (one per provider) and the vector download run separately; [`finish`]
/// puts them together.
///
/// Only the distinct applicants that are in the universe are looked up ([`lookups`]):
/// the others are `NotRegistered` without asking anyone (a provider learns only the
/// number of lookups either way), and a repeated applicant is looked up once (one blind
/// per session would show the provider two equal blinded elements).
///
/// [`finish`]: LookupQuery::finish
/// [`lookups`]: LookupQuery::lookups
pub struct LookupQuery {
    header: VectorHeader,
    universe: Arc<Universe>,
    providers: BTreeSet<NodeId>,
    /// Distinct registered applicants, in first-seen order.
    lookups: Vec<Vec<u8>>,
    /// For each applicant: the index into `lookups` and into the universe.
    positions: Vec<Option<(usize, usize)>>,
}

impl LookupQuery {
    /// Refuses a header of another universe and an empty provider list.
    pub fn new(
        header: VectorHeader,
        universe: Arc<Universe>,
        providers: Vec<NodeId>,
        applicants: &[Vec<u8>],
    ) -> Result<Self, ProtocolError> {
        if header.universe_digest != universe.digest() {
            return Err(ProtocolError::UniverseMismatch {
                expected: hex::encode(universe.digest()),
                got: hex::encode(header.universe_digest),
            });
        }
        let providers: BTreeSet<NodeId> = providers.into_iter().collect();
        if providers.is_empty() {
            return Err(ProtocolError::ProviderReplies {
                reason: "a lookup needs at least one provider".into(),
            });
        }
        let mut seen: HashMap<&[u8], usize> = HashMap::new();
        let mut lookups = Vec::new();
        let mut positions = Vec::with_capacity(applicants.len());
        for applicant in applicants {
            let position = universe.index_of(applicant).map(|in_universe| {
                let next = lookups.len();
                let slot = *seen.entry(applicant.as_slice()).or_insert(next);
                if slot == next {
                    lookups.push(applicant.clone());
                }
                (slot, in_universe)
            });
            positions.push(position);
        }
        Ok(Self { header, universe, providers, lookups, positions })
    }

    /// The inputs every provider session looks up (`n` = their count). Empty when no
    /// applicant is registered: then no session is needed and [`LookupQuery::finish`]
    /// takes no replies.
    pub fn lookups(&self) -> &[Vec<u8>] {
        &self.lookups
    }

    pub fn header(&self) -> &VectorHeader {
        &self.header
    }

    /// Starts the session with one provider (config's binding must be the query's
    /// contract and epoch, with a session id of its own). The blind `r` is drawn from
    /// `rng`; returns Hello and the first blinded chunks.
    pub fn start_session(
        &self,
        config: QuerierConfig,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(QuerierSession, Vec<OutgoingMessage>), ProtocolError> {
        if config.binding.contract != self.header.contract || config.binding.epoch != self.header.epoch {
            return Err(ProtocolError::WrongBinding {
                field: "contract and epoch",
                expected: format!("{} {}", self.header.contract, self.header.epoch),
                got: format!("{} {}", config.binding.contract, config.binding.epoch),
            });
        }
        if !self.providers.contains(&config.provider) {
            return Err(ProtocolError::ProviderReplies {
                reason: format!("{} is not a provider of this lookup", config.provider),
            });
        }
        let (state, out) =
            QuerierAwaitingEvaluated::start(config, self.header.universe_digest, self.lookups.clone(), rng)?;
        Ok((QuerierSession::AwaitingEvaluated(Box::new(state)), out))
    }

    /// The results: checks the vector (contract, epoch, universe, width, length) and the
    /// replies (exactly one complete reply from each provider, for this query), then for
    /// each registered applicant `x` at universe index `i` computes
    /// `V[i] - Σ_j pad_j(N_j(x)) mod 2^w`.
    pub fn finish(
        self,
        vector: &LookupVector,
        replies: Vec<ProviderReply>,
    ) -> Result<QueryOutput, ProtocolError> {
        self.header.check(vector.header())?;
        if vector.len() != self.universe.len() {
            return Err(ProtocolError::VectorMismatch {
                reason: format!("{} entries for a universe of {}", vector.len(), self.universe.len()),
            });
        }
        let mut by_provider: HashMap<NodeId, ProviderReply> = HashMap::new();
        for reply in replies {
            if !self.providers.contains(&reply.provider) {
                return Err(ProtocolError::ProviderReplies {
                    reason: format!("a reply from {}, not a provider of this lookup", reply.provider),
                });
            }
            if reply.binding.contract != self.header.contract || reply.binding.epoch != self.header.epoch {
                return Err(ProtocolError::ProviderReplies {
                    reason: format!("the reply of {} is of another contract or epoch", reply.provider),
                });
            }
            if reply.universe_digest != self.header.universe_digest {
                return Err(ProtocolError::UniverseMismatch {
                    expected: hex::encode(self.header.universe_digest),
                    got: hex::encode(reply.universe_digest),
                });
            }
            if reply.elements.len() != self.lookups.len() {
                return Err(ProtocolError::ProviderReplies {
                    reason: format!(
                        "the reply of {} has {} elements for {} lookups",
                        reply.provider,
                        reply.elements.len(),
                        self.lookups.len()
                    ),
                });
            }
            let provider = reply.provider.clone();
            if by_provider.insert(provider.clone(), reply).is_some() {
                return Err(ProtocolError::ProviderReplies {
                    reason: format!("two replies from {provider}"),
                });
            }
        }
        if !self.lookups.is_empty() {
            if let Some(missing) = self.providers.iter().find(|p| !by_provider.contains_key(*p)) {
                return Err(ProtocolError::ProviderReplies { reason: format!("no reply from {missing}") });
            }
        }
        let width = self.header.width;
        let context = LookupPadContext::new(
            &self.header.contract,
            self.header.epoch,
            &self.header.universe_digest,
            width,
        );
        // Σ_j pad_j(x) for each lookup.
        let mut pads = vec![0u64; self.lookups.len()];
        let mut transcripts = Vec::with_capacity(by_provider.len());
        for provider in &self.providers {
            let Some(reply) = by_provider.get(provider) else { continue };
            for (sum, pad) in pads.iter_mut().zip(context.pad_batch(&reply.elements)) {
                *sum = width.add(*sum, pad);
            }
            transcripts.push((provider.clone(), reply.transcript_digest));
        }
        let values = vector.values();
        let results = self
            .positions
            .iter()
            .map(|position| match position {
                Some((lookup, index)) => LookupValue::Value(width.sub(values[*index], pads[*lookup])),
                None => LookupValue::NotRegistered,
            })
            .collect();
        Ok(QueryOutput { results, lookups: self.lookups.len() as u64, transcripts })
    }
}

impl fmt::Debug for LookupQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupQuery")
            .field("header", &self.header)
            .field("providers", &self.providers)
            .field("applicants", &self.positions.len())
            .field("lookups", &self.lookups.len())
            .finish_non_exhaustive()
    }
}

/// One query session's setup.
#[derive(Clone, Debug)]
pub struct QuerierConfig {
    /// The query's contract and epoch, and a fresh session id for this provider.
    pub binding: SessionBinding,
    /// The provider node, as the transport authenticates it.
    pub provider: NodeId,
    /// Elements per chunk, `1..=MAX_CHUNK_ELEMENTS`.
    pub chunk_size: u32,
}

/// A finished session: `N_j(x) = k_j · H(x)` for every lookup, in order. As sensitive
/// as the applicants' pads: `Debug` shows sizes only.
#[derive(Clone)]
pub struct ProviderReply {
    pub provider: NodeId,
    pub binding: SessionBinding,
    pub universe_digest: [u8; 32],
    elements: Vec<UnblindedElement>,
    pub transcript_digest: [u8; 32],
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl ProviderReply {
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }
}

impl fmt::Debug for ProviderReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderReply")
            .field("provider", &self.provider)
            .field("binding", &self.binding)
            .field("elements", &self.elements.len())
            .finish_non_exhaustive()
    }
}

// ---- AwaitingEvaluated ---------------------------------------------------------------

/// Q has sent Hello and blinded chunks and unblinds the provider's replies.
pub struct QuerierAwaitingEvaluated {
    channel: Channel,
    universe_digest: [u8; 32],
    chunk_size: u32,
    n: u64,
    /// The lookups until the last chunk is blinded, then dropped.
    inputs: Vec<Vec<u8>>,
    session: ClientSetSession,
    unblinded: Vec<UnblindedElement>,
    total_chunks: u32,
    chunks_sent: u32,
    next_seq: u32,
}

/// Where a query session goes after an EvaluatedChunk.
#[derive(Debug)]
pub enum QuerierNext {
    AwaitingEvaluated(Box<QuerierAwaitingEvaluated>),
    Done(ProviderReply),
}

impl QuerierAwaitingEvaluated {
    const STATE: &'static str = "querier awaiting EvaluatedChunk";

    fn start(
        config: QuerierConfig,
        universe_digest: [u8; 32],
        inputs: Vec<Vec<u8>>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Self, Vec<OutgoingMessage>), ProtocolError> {
        let QuerierConfig { binding, provider, chunk_size } = config;
        if chunk_size == 0 || chunk_size as usize > MAX_CHUNK_ELEMENTS {
            return Err(ProtocolError::InvalidChunkSize { got: chunk_size, max: MAX_CHUNK_ELEMENTS });
        }
        if inputs.is_empty() {
            return Err(ProtocolError::SetTooSmall { whose: "querier", got: 0, min: 1 });
        }
        let n = inputs.len() as u64;
        let Some(total_chunks) = chunk_count(n, chunk_size) else {
            let max = u64::from(u32::MAX) * u64::from(chunk_size);
            return Err(ProtocolError::SetTooLarge { whose: "querier", got: n, max });
        };
        let mut channel = Channel::new(binding, provider, Side::Client);
        let mut out = Vec::new();
        let hello = Hello { binding: channel.binding.clone(), universe_digest, lookups: n, chunk_size };
        channel.send(LookupMessage::Hello(hello), &mut out);
        let mut state = Self {
            channel,
            universe_digest,
            chunk_size,
            n,
            inputs,
            session: ClientSetSession::new(rng),
            unblinded: Vec::with_capacity(n as usize),
            total_chunks,
            chunks_sent: 0,
            next_seq: 0,
        };
        for _ in 0..total_chunks.min(QUERIER_WINDOW_CHUNKS) {
            state.send_next_chunk(&mut out)?;
        }
        Ok((state, out))
    }

    /// Blinds and queues chunk `chunks_sent` (RFC 9497 §3.3.1 Blind, one blind for the
    /// session).
    fn send_next_chunk(&mut self, out: &mut Vec<OutgoingMessage>) -> Result<(), ProtocolError> {
        let seq = self.chunks_sent;
        let start = seq as usize * self.chunk_size as usize;
        let end = (start + self.chunk_size as usize).min(self.inputs.len());
        let inputs = self.inputs.get(start..end).unwrap_or_default();
        // Only an input hashing to the identity fails (probability ~2^-252); it is ours.
        let elements = self.session.blind_batch(inputs).map_err(|e| ProtocolError::Crypto(e.source))?;
        let chunk = BlindedChunk { binding: self.channel.binding.clone(), seq, elements };
        self.channel.send(LookupMessage::BlindedChunk(chunk), out);
        self.chunks_sent += 1;
        if self.chunks_sent == self.total_chunks {
            self.inputs = Vec::new();
        }
        Ok(())
    }

    /// Takes the next EvaluatedChunk: in sequence, for a chunk already sent, exactly
    /// the chunking's size; unblinds it with crypto's checked decoder (an invalid point
    /// is refused with its index among the n) and sends the next blinded chunk.
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(QuerierNext, Vec<OutgoingMessage>), ProtocolError> {
        let chunk: EvaluatedChunk = match self.channel.receive(from, bytes)? {
            LookupMessage::EvaluatedChunk(chunk) => chunk,
            other => return Err(unexpected(Self::STATE, &other)),
        };
        check_seq(PROTOCOL, "EvaluatedChunk", self.next_seq, chunk.seq)?;
        if chunk.seq >= self.chunks_sent {
            return Err(ProtocolError::UnrequestedChunk { seq: chunk.seq });
        }
        let received = self.unblinded.len() as u64;
        check_chunk(
            PROTOCOL,
            "evaluated elements",
            self.n,
            received,
            self.chunk_size,
            chunk.seq,
            chunk.elements.len(),
        )?;
        let unblinded = self.session.unblind_batch(&chunk.elements).map_err(at_offset(received))?;
        self.unblinded.extend(unblinded);
        self.next_seq += 1;
        let mut out = Vec::new();
        if self.chunks_sent < self.total_chunks {
            self.send_next_chunk(&mut out)?;
        }
        if (self.unblinded.len() as u64) < self.n {
            return Ok((QuerierNext::AwaitingEvaluated(Box::new(self)), out));
        }
        let summary = self.channel.transcript.finish();
        let reply = ProviderReply {
            provider: self.channel.peer,
            binding: self.channel.binding,
            universe_digest: self.universe_digest,
            elements: self.unblinded,
            transcript_digest: summary.digest,
            bytes_sent: summary.bytes_sent,
            bytes_received: summary.bytes_received,
        };
        Ok((QuerierNext::Done(reply), out))
    }
}

impl fmt::Debug for QuerierAwaitingEvaluated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuerierAwaitingEvaluated")
            .field("binding", &self.channel.binding)
            .field("provider", &self.channel.peer)
            .field("n", &self.n)
            .field("chunks_sent", &self.chunks_sent)
            .field("received", &self.unblinded.len())
            .finish_non_exhaustive()
    }
}

// ---- Driver --------------------------------------------------------------------------

/// One query session's states in one value, for a node's receive loop.
#[derive(Debug)]
pub enum QuerierSession {
    AwaitingEvaluated(Box<QuerierAwaitingEvaluated>),
    Done(ProviderReply),
}

impl QuerierSession {
    /// Hands one message from `from` to the current state.
    pub fn handle(self, from: &NodeId, bytes: &[u8]) -> Result<(Self, Vec<OutgoingMessage>), ProtocolError> {
        match self {
            Self::AwaitingEvaluated(state) => match state.handle(from, bytes)? {
                (QuerierNext::AwaitingEvaluated(next), out) => Ok((Self::AwaitingEvaluated(next), out)),
                (QuerierNext::Done(reply), out) => Ok((Self::Done(reply), out)),
            },
            Self::Done(_) => {
                let got = LookupMessage::from_bytes(bytes)
                    .map(|m| m.kind().name())
                    .unwrap_or("undecodable message");
                Err(ProtocolError::UnexpectedMessage { state: "querier session done", got })
            }
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done(_))
    }

    pub fn into_reply(self) -> Option<ProviderReply> {
        match self {
            Self::Done(reply) => Some(reply),
            _ => None,
        }
    }
}
