//! A contributor's states: bank B holds X, has it evaluated by every committee member,
//! sends its tags to the coordinator and learns which of its items reach the threshold.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use rand_core::CryptoRngCore;
use xmcredit_crypto::set::{ClientSetSession, EvaluationSum, Tag, TagContext};
use xmcredit_crypto::NodeId;

use super::messages::{BlindedChunk, EvaluatedChunk, Hello, OverthresholdMessage, ResultChunk, TagChunk};
use super::{check_chunk_size, check_sender, unexpected, OutgoingMessage, Parameters, Traffic, PROTOCOL};
use crate::chunks::{at_offset, check_chunk, check_seq, chunk_count};
use crate::{ProtocolError, SessionBinding};

/// Blinded chunks in flight: chunk `s + W` goes out once every member has answered chunk
/// `s`, so neither the members nor the contributor queue the whole set.
pub const CONTRIBUTOR_WINDOW_CHUNKS: u32 = 4;

/// Everything a contributor's session is set up with.
#[derive(Clone, Debug)]
pub struct ContributorConfig {
    pub binding: SessionBinding,
    /// This node; must be one of the parameters' contributors.
    pub me: NodeId,
    pub parameters: Parameters,
    /// Elements per blinded chunk, `1..=MAX_CHUNK_ELEMENTS`.
    pub chunk_size: u32,
}

/// One of the contributor's items held by `t` or more contributors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnMatch {
    /// Index into X as passed to [`ContributorAwaitingAnnounce::new`].
    pub index: usize,
    /// Contributors (this one included) holding the item.
    pub multiplicity: u16,
}

/// What a contributor learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContributorOutput {
    /// Own items at or over the threshold, ascending by index.
    pub matches: Vec<OwnMatch>,
    /// Contributors whose tag sets the coordinator counted.
    pub contributors_counted: u16,
    /// `n = |X|`.
    pub set_size: u64,
    pub traffic: Traffic,
}

// ---- AwaitingAnnounce ----------------------------------------------------------------

/// B waits for the coordinator's Announce before it sends anything.
pub struct ContributorAwaitingAnnounce {
    binding: SessionBinding,
    params: Parameters,
    chunk_size: u32,
    items: Vec<Vec<u8>>,
    session: ClientSetSession,
    traffic: Traffic,
}

/// Where a contributor goes after Announce.
#[derive(Debug)]
pub enum ContributorAfterAnnounce {
    AwaitingEvaluations(Box<ContributorAwaitingEvaluations>),
    /// An empty X: the (empty) tag set is already sent.
    AwaitingResult(Box<ContributorAwaitingResult>),
}

impl ContributorAwaitingAnnounce {
    const STATE: &'static str = "contributor awaiting Announce";

    /// Sets up a session over `items` (X: receivable or invoice keys in the contract's
    /// canonical encoding). Refuses, before anything is sent, a node that is not a
    /// contributor, a chunk size outside `1..=MAX_CHUNK_ELEMENTS`, more items than the
    /// maximum per bank, and a repeated item ([`ProtocolError::DuplicateElement`]). The
    /// blind `r` is drawn here from `rng`.
    pub fn new(
        config: ContributorConfig,
        items: Vec<Vec<u8>>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, ProtocolError> {
        let ContributorConfig { binding, me, parameters: params, chunk_size } = config;
        if !params.contributors().contains(&me) {
            return Err(ProtocolError::NotAParticipant { who: me, role: "contributor" });
        }
        check_chunk_size(chunk_size)?;
        let n = items.len() as u64;
        if n > params.max_set_size() {
            return Err(ProtocolError::SetTooLarge {
                whose: "contributor",
                got: n,
                max: params.max_set_size(),
            });
        }
        if chunk_count(n, chunk_size).is_none() {
            let max = u64::from(u32::MAX) * u64::from(chunk_size);
            return Err(ProtocolError::SetTooLarge { whose: "contributor", got: n, max });
        }
        let mut seen: HashMap<&[u8], usize> = HashMap::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            if let Some(first) = seen.insert(item.as_slice(), index) {
                return Err(ProtocolError::DuplicateElement { whose: "contributor", first, second: index });
            }
        }
        drop(seen);
        let session = ClientSetSession::new(rng);
        Ok(Self { binding, params, chunk_size, items, session, traffic: Traffic::default() })
    }

    /// Takes Announce: checks the tag length against the one derived from the
    /// parameters, sends Hello and the first blinded chunks to every committee member
    /// (an empty X sends Hello and its empty tag set at once).
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(ContributorAfterAnnounce, Vec<OutgoingMessage>), ProtocolError> {
        check_sender(self.params.coordinator(), from)?;
        let announce = match self.traffic.receive(&self.binding, bytes)? {
            OverthresholdMessage::Announce(announce) => announce,
            other => return Err(unexpected(Self::STATE, &other)),
        };
        let expected_bits = self.params.tag_bits();
        if u32::from(announce.tag_bits) != expected_bits {
            return Err(ProtocolError::TagLengthMismatch {
                expected_bits,
                got_bits: u32::from(announce.tag_bits),
            });
        }
        let tag_context = TagContext::new(&self.binding.contract, self.binding.epoch, expected_bits)?;
        let n = self.items.len() as u64;
        let mut out = Vec::new();
        let hello = Hello { binding: self.binding.clone(), set_size: n, chunk_size: self.chunk_size };
        send_to_all(
            &mut self.traffic,
            self.params.committee(),
            &OverthresholdMessage::Hello(hello),
            &mut out,
        );
        // Checked in `new`.
        let total_chunks = chunk_count(n, self.chunk_size).unwrap_or(u32::MAX);
        let committee = self.params.committee().len();
        let mut next = ContributorAwaitingEvaluations {
            binding: self.binding,
            params: self.params,
            traffic: self.traffic,
            chunk_size: self.chunk_size,
            tag_chunk_size: announce.chunk_size,
            n,
            items: self.items,
            session: self.session,
            tag_context,
            total_chunks,
            chunks_sent: 0,
            completed: 0,
            replied: vec![0; committee],
            pending: VecDeque::new(),
            tags: Vec::with_capacity(n as usize),
        };
        if total_chunks == 0 {
            return Ok((ContributorAfterAnnounce::AwaitingResult(Box::new(next.send_tags(&mut out)?)), out));
        }
        for _ in 0..total_chunks.min(CONTRIBUTOR_WINDOW_CHUNKS) {
            next.send_next_chunk(&mut out)?;
        }
        Ok((ContributorAfterAnnounce::AwaitingEvaluations(Box::new(next)), out))
    }
}

impl fmt::Debug for ContributorAwaitingAnnounce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContributorAwaitingAnnounce")
            .field("binding", &self.binding)
            .field("n", &self.items.len())
            .finish_non_exhaustive()
    }
}

/// Encodes `message` once and queues it for each of `to`.
fn send_to_all(
    traffic: &mut Traffic,
    to: &[NodeId],
    message: &OverthresholdMessage,
    out: &mut Vec<OutgoingMessage>,
) {
    let bytes = message.to_bytes();
    for node in to {
        traffic.bytes_sent += bytes.len() as u64;
        out.push(OutgoingMessage { to: node.clone(), kind: message.kind(), bytes: bytes.clone() });
    }
}

// ---- AwaitingEvaluations -------------------------------------------------------------

/// B sends blinded chunks to every member and sums, unblinds and tags the replies.
pub struct ContributorAwaitingEvaluations {
    binding: SessionBinding,
    params: Parameters,
    traffic: Traffic,
    chunk_size: u32,
    /// Tags per TagChunk and entries per ResultChunk, from Announce.
    tag_chunk_size: u32,
    n: u64,
    /// X until its last chunk is blinded, then dropped.
    items: Vec<Vec<u8>>,
    session: ClientSetSession,
    tag_context: TagContext,
    total_chunks: u32,
    chunks_sent: u32,
    /// Chunks every member has answered (summed, unblinded and tagged).
    completed: u32,
    /// Chunks each member (in committee order) has answered.
    replied: Vec<u32>,
    /// Sums of chunks `completed..chunks_sent`.
    pending: VecDeque<EvaluationSum>,
    /// Tags of X's items so far, in X's order.
    tags: Vec<Tag>,
}

/// Where a contributor goes after an EvaluatedChunk.
#[derive(Debug)]
pub enum ContributorEvaluationsNext {
    AwaitingEvaluations(Box<ContributorAwaitingEvaluations>),
    /// Every chunk is in from every member; the tags are among the messages.
    AwaitingResult(Box<ContributorAwaitingResult>),
}

impl ContributorAwaitingEvaluations {
    const STATE: &'static str = "contributor awaiting EvaluatedChunk";

    /// Blinds chunk `chunks_sent` (RFC 9497 §3.3.1 Blind, the session's one blind) and
    /// queues it for every member.
    fn send_next_chunk(&mut self, out: &mut Vec<OutgoingMessage>) -> Result<(), ProtocolError> {
        let seq = self.chunks_sent;
        let start = seq as usize * self.chunk_size as usize;
        let end = (start + self.chunk_size as usize).min(self.items.len());
        let items = self.items.get(start..end).unwrap_or_default();
        // Only an item hashing to the identity fails (probability ~2^-252); it is ours.
        let elements = self.session.blind_batch(items).map_err(|e| ProtocolError::Crypto(e.source))?;
        self.pending.push_back(EvaluationSum::new(elements.len()));
        let chunk = BlindedChunk { binding: self.binding.clone(), seq, elements };
        send_to_all(
            &mut self.traffic,
            self.params.committee(),
            &OverthresholdMessage::BlindedChunk(chunk),
            out,
        );
        self.chunks_sent += 1;
        if self.chunks_sent == self.total_chunks {
            self.items = Vec::new();
        }
        Ok(())
    }

    /// Members that still owe a reply to a chunk already sent, in committee order (for
    /// the node's log when its timer fires).
    pub fn missing_members(&self) -> Vec<NodeId> {
        let committee = self.params.committee();
        committee
            .iter()
            .zip(&self.replied)
            .filter(|(_, r)| **r < self.chunks_sent)
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// Ends the run because `member` failed (the node's timer fired or its stream
    /// broke): [`ProtocolError::CommitteeMemberFailed`] naming it and how far it got.
    pub fn member_failed(self, member: &NodeId) -> ProtocolError {
        match self.params.committee().iter().position(|m| m == member) {
            Some(i) => ProtocolError::CommitteeMemberFailed {
                member: member.clone(),
                replied: self.replied[i],
                expected: self.total_chunks,
            },
            None => ProtocolError::NotAParticipant { who: member.clone(), role: "committee member" },
        }
    }

    /// Takes one member's next EvaluatedChunk: refuses a non-member, a replayed, skipped
    /// or unrequested chunk, a wrong length and (naming the member and the element's
    /// index in X) an element failing the checked decoder. When every member has
    /// answered a chunk, sums, unblinds and tags it and sends the next blinded chunk;
    /// after the last, sends the tags to the coordinator.
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(ContributorEvaluationsNext, Vec<OutgoingMessage>), ProtocolError> {
        let Some(member) = self.params.committee().iter().position(|m| m == from) else {
            return Err(ProtocolError::NotAParticipant { who: from.clone(), role: "committee member" });
        };
        let chunk: EvaluatedChunk = match self.traffic.receive(&self.binding, bytes)? {
            OverthresholdMessage::EvaluatedChunk(chunk) => chunk,
            other => return Err(unexpected(Self::STATE, &other)),
        };
        check_seq(PROTOCOL, "EvaluatedChunk", self.replied[member], chunk.seq)?;
        if chunk.seq >= self.chunks_sent {
            return Err(ProtocolError::UnrequestedChunk { seq: chunk.seq });
        }
        let offset = u64::from(chunk.seq) * u64::from(self.chunk_size);
        check_chunk(
            PROTOCOL,
            "evaluated elements",
            self.n,
            offset,
            self.chunk_size,
            chunk.seq,
            chunk.elements.len(),
        )?;
        // Every member has answered `completed` chunks at least, so the index is in range.
        let slot = (chunk.seq - self.completed) as usize;
        let sum = self.pending.get_mut(slot).ok_or(ProtocolError::UnrequestedChunk { seq: chunk.seq })?;
        sum.add(&chunk.elements).map_err(|e| ProtocolError::InvalidEvaluation {
            member: from.clone(),
            index: offset + e.index as u64,
            source: e.source,
        })?;
        self.replied[member] += 1;

        let mut out = Vec::new();
        let committee = self.params.committee().len();
        while self.pending.front().is_some_and(|sum| sum.added() == committee) {
            let Some(sum) = self.pending.pop_front() else { break };
            let start = u64::from(self.completed) * u64::from(self.chunk_size);
            let unblinded = self.session.unblind_sum(&sum).map_err(at_offset(start))?;
            self.tags.extend(self.tag_context.tag_batch(&unblinded));
            self.completed += 1;
            if self.chunks_sent < self.total_chunks {
                self.send_next_chunk(&mut out)?;
            }
        }
        if self.completed < self.total_chunks {
            return Ok((ContributorEvaluationsNext::AwaitingEvaluations(Box::new(self)), out));
        }
        let next = self.send_tags(&mut out)?;
        Ok((ContributorEvaluationsNext::AwaitingResult(Box::new(next)), out))
    }

    /// Sorts the tags by value, remembering where each came from, and sends them to the
    /// coordinator in TagChunks of the announced size (one empty chunk for an empty X).
    fn send_tags(
        mut self,
        out: &mut Vec<OutgoingMessage>,
    ) -> Result<ContributorAwaitingResult, ProtocolError> {
        let mut sorted: Vec<(Tag, usize)> = std::mem::take(&mut self.tags).into_iter().zip(0..).collect();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
            // Two different items with one tag: a 2^-40 event the tag length is chosen
            // against. Sent, it would be refused as a repeat; refused here instead.
            let (first, second) = (pair[0].1.min(pair[1].1), pair[0].1.max(pair[1].1));
            return Err(ProtocolError::DuplicateElement { whose: "contributor tag set", first, second });
        }
        let (tags, order): (Vec<Tag>, Vec<usize>) = sorted.into_iter().unzip();
        let tag_len = self.tag_context.tag_len() as u8;
        let coordinator = self.params.coordinator().clone();
        let mut chunks: Vec<&[Tag]> = tags.chunks(self.tag_chunk_size as usize).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for (seq, chunk) in chunks.into_iter().enumerate() {
            let message = TagChunk {
                binding: self.binding.clone(),
                seq: u32::try_from(seq).unwrap_or(u32::MAX),
                total_tags: self.n,
                tag_len,
                tags: chunk.to_vec(),
            };
            self.traffic.send(&coordinator, &OverthresholdMessage::TagChunk(message), out);
        }
        Ok(ContributorAwaitingResult {
            binding: self.binding,
            params: self.params,
            traffic: self.traffic,
            n: self.n,
            order,
            chunk_size: self.tag_chunk_size,
            next_seq: 0,
            contributors: 0,
            total: 0,
            received: 0,
            next_position: 0,
            matches: Vec::new(),
        })
    }
}

impl fmt::Debug for ContributorAwaitingEvaluations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContributorAwaitingEvaluations")
            .field("binding", &self.binding)
            .field("n", &self.n)
            .field("chunks_sent", &self.chunks_sent)
            .field("completed", &self.completed)
            .field("replied", &self.replied)
            .finish_non_exhaustive()
    }
}

// ---- AwaitingResult ------------------------------------------------------------------

/// B has sent its tags and waits for the coordinator's answer.
pub struct ContributorAwaitingResult {
    binding: SessionBinding,
    params: Parameters,
    traffic: Traffic,
    n: u64,
    /// Position in the sorted tag stream → index into X.
    order: Vec<usize>,
    chunk_size: u32,
    next_seq: u32,
    /// Fixed by chunk 0.
    contributors: u16,
    total: u64,
    received: u64,
    /// Positions must be ascending: the next one is at least this.
    next_position: u64,
    matches: Vec<OwnMatch>,
}

/// Where a contributor goes after a ResultChunk.
#[derive(Debug)]
pub enum ContributorResultNext {
    AwaitingResult(Box<ContributorAwaitingResult>),
    Done(ContributorOutput),
}

impl ContributorAwaitingResult {
    const STATE: &'static str = "contributor awaiting ResultChunk";

    /// Takes the next ResultChunk. Refuses ([`ProtocolError::BadResult`]) fewer
    /// contributors counted than the contract's minimum or more than it names, more
    /// matches than n, totals that change between chunks, positions out of range or not
    /// ascending, and multiplicities below the threshold or above the contributors
    /// counted.
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(ContributorResultNext, Vec<OutgoingMessage>), ProtocolError> {
        check_sender(self.params.coordinator(), from)?;
        let chunk: ResultChunk = match self.traffic.receive(&self.binding, bytes)? {
            OverthresholdMessage::ResultChunk(chunk) => chunk,
            other => return Err(unexpected(Self::STATE, &other)),
        };
        check_seq(PROTOCOL, "ResultChunk", self.next_seq, chunk.seq)?;
        let bad = |reason: String| Err(ProtocolError::BadResult { reason });
        if chunk.seq == 0 {
            let named = self.params.contributors().len();
            let min = self.params.min_contributors();
            if u32::from(chunk.contributors) < min || usize::from(chunk.contributors) > named {
                return bad(format!(
                    "{} contributors counted, the contract requires {min} to {named}",
                    chunk.contributors
                ));
            }
            if chunk.total_matches > self.n {
                return bad(format!("{} matches for a set of {}", chunk.total_matches, self.n));
            }
            self.contributors = chunk.contributors;
            self.total = chunk.total_matches;
        } else if chunk.contributors != self.contributors || chunk.total_matches != self.total {
            return bad(format!(
                "chunk {} says {} contributors and {} matches, chunk 0 said {} and {}",
                chunk.seq, chunk.contributors, chunk.total_matches, self.contributors, self.total
            ));
        }
        let after = check_chunk(
            PROTOCOL,
            "result entries",
            self.total,
            self.received,
            self.chunk_size,
            chunk.seq,
            chunk.entries.len(),
        )?;
        let threshold = self.params.threshold();
        for entry in &chunk.entries {
            if entry.position < self.next_position || entry.position >= self.n {
                return bad(format!(
                    "position {} out of order or past the set of {}",
                    entry.position, self.n
                ));
            }
            if u32::from(entry.multiplicity) < threshold || entry.multiplicity > self.contributors {
                return bad(format!(
                    "multiplicity {} outside the threshold {threshold} to the {} contributors counted",
                    entry.multiplicity, self.contributors
                ));
            }
            let index = usize::try_from(entry.position).ok().and_then(|p| self.order.get(p).copied());
            let Some(index) = index else {
                return bad(format!("position {} past the set", entry.position));
            };
            self.matches.push(OwnMatch { index, multiplicity: entry.multiplicity });
            self.next_position = entry.position + 1;
        }
        self.received = after;
        self.next_seq += 1;
        if self.received < self.total {
            return Ok((ContributorResultNext::AwaitingResult(Box::new(self)), Vec::new()));
        }
        self.matches.sort_unstable();
        let output = ContributorOutput {
            matches: self.matches,
            contributors_counted: self.contributors,
            set_size: self.n,
            traffic: self.traffic,
        };
        Ok((ContributorResultNext::Done(output), Vec::new()))
    }
}

impl fmt::Debug for ContributorAwaitingResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContributorAwaitingResult")
            .field("binding", &self.binding)
            .field("n", &self.n)
            .field("received", &self.received)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

// ---- Driver --------------------------------------------------------------------------

/// The contributor's states in one value, for a node's receive loop:
///
/// ```text
/// let mut bank = OverthresholdContributor::new(config, items, &mut rng)?;
/// while !bank.is_done() {
///     match receive_with_timeout() {
///         Ok((from, bytes)) => { let (next, out) = bank.handle(&from, &bytes)?; send(out); bank = next; }
///         Err(Timeout) => return Err(bank.member_failed(&bank.missing_members()[0])),
///     }
/// }
/// ```
#[derive(Debug)]
pub enum OverthresholdContributor {
    AwaitingAnnounce(Box<ContributorAwaitingAnnounce>),
    AwaitingEvaluations(Box<ContributorAwaitingEvaluations>),
    AwaitingResult(Box<ContributorAwaitingResult>),
    Done(ContributorOutput),
}

impl OverthresholdContributor {
    /// [`ContributorAwaitingAnnounce::new`].
    pub fn new(
        config: ContributorConfig,
        items: Vec<Vec<u8>>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, ProtocolError> {
        Ok(Self::AwaitingAnnounce(Box::new(ContributorAwaitingAnnounce::new(config, items, rng)?)))
    }

    /// Hands one message from `from` to the current state.
    pub fn handle(self, from: &NodeId, bytes: &[u8]) -> Result<(Self, Vec<OutgoingMessage>), ProtocolError> {
        Ok(match self {
            Self::AwaitingAnnounce(state) => match state.handle(from, bytes)? {
                (ContributorAfterAnnounce::AwaitingEvaluations(next), out) => {
                    (Self::AwaitingEvaluations(next), out)
                }
                (ContributorAfterAnnounce::AwaitingResult(next), out) => (Self::AwaitingResult(next), out),
            },
            Self::AwaitingEvaluations(state) => match state.handle(from, bytes)? {
                (ContributorEvaluationsNext::AwaitingEvaluations(next), out) => {
                    (Self::AwaitingEvaluations(next), out)
                }
                (ContributorEvaluationsNext::AwaitingResult(next), out) => (Self::AwaitingResult(next), out),
            },
            Self::AwaitingResult(state) => match state.handle(from, bytes)? {
                (ContributorResultNext::AwaitingResult(next), out) => (Self::AwaitingResult(next), out),
                (ContributorResultNext::Done(output), out) => (Self::Done(output), out),
            },
            Self::Done(_) => {
                let got = OverthresholdMessage::from_bytes(bytes)
                    .map(|m| m.kind().name())
                    .unwrap_or("undecodable message");
                return Err(ProtocolError::UnexpectedMessage { state: "contributor done", got });
            }
        })
    }

    /// Members owing a reply (empty outside the evaluation phase).
    pub fn missing_members(&self) -> Vec<NodeId> {
        match self {
            Self::AwaitingEvaluations(state) => state.missing_members(),
            _ => Vec::new(),
        }
    }

    /// The error that ends the run because `member` failed
    /// ([`ProtocolError::CommitteeMemberFailed`], or
    /// [`ProtocolError::NotAParticipant`] for a node outside the committee).
    pub fn member_failed(self, member: &NodeId) -> ProtocolError {
        match self {
            Self::AwaitingEvaluations(state) => state.member_failed(member),
            Self::AwaitingAnnounce(state) => {
                if !state.params.committee().contains(member) {
                    return ProtocolError::NotAParticipant { who: member.clone(), role: "committee member" };
                }
                let expected = chunk_count(state.items.len() as u64, state.chunk_size).unwrap_or(u32::MAX);
                ProtocolError::CommitteeMemberFailed { member: member.clone(), replied: 0, expected }
            }
            Self::AwaitingResult(_) | Self::Done(_) => {
                if !self.committee_contains(member) {
                    return ProtocolError::NotAParticipant { who: member.clone(), role: "committee member" };
                }
                // Every member had answered every chunk; a later failure is reported too.
                ProtocolError::CommitteeMemberFailed { member: member.clone(), replied: 0, expected: 0 }
            }
        }
    }

    fn committee_contains(&self, member: &NodeId) -> bool {
        match self {
            Self::AwaitingAnnounce(s) => s.params.committee().contains(member),
            Self::AwaitingEvaluations(s) => s.params.committee().contains(member),
            Self::AwaitingResult(s) => s.params.committee().contains(member),
            Self::Done(_) => true,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done(_))
    }

    pub fn output(&self) -> Option<&ContributorOutput> {
        match self {
            Self::Done(output) => Some(output),
            _ => None,
        }
    }

    pub fn into_output(self) -> Option<ContributorOutput> {
        match self {
            Self::Done(output) => Some(output),
            _ => None,
        }
    }
}
