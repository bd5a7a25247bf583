//! The client's states: C holds X and learns what the form grants.

use std::collections::{HashMap, HashSet};
use std::fmt;

use rand_core::CryptoRngCore;
use xmcredit_crypto::count_noise::CountNoise;
use xmcredit_crypto::set::{tag_bits_for, ClientSetSession, Tag, TagContext, UnblindedElement};
use xmcredit_crypto::NodeId;

use super::messages::{BlindedChunk, EvaluatedChunk, Hello, MatchReport, ServerDone, TagChunk};
use super::server_set::refuse_duplicates;
use super::{
    at_offset, check_chunk, check_seq, chunk_count, unexpected, Channel, OutgoingMessage, PsiMessage,
    PsiOutputForm, Side, MAX_CHUNK_ELEMENTS, PROTOCOL, STATISTICAL_SECURITY_BITS,
};
use crate::{ProtocolError, SessionBinding};

/// Blinded chunks the client keeps in flight before it waits for replies: enough to keep
/// the server busy while a reply travels back, few enough that neither side queues the
/// whole set. (In the cardinality form the server answers only after the last chunk, so
/// the client sends them all.)
pub const CLIENT_WINDOW_CHUNKS: u32 = 4;

/// The client's limits, from the contract (filled in by the node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Smallest server set the client takes part with. It matters most in the `Both`
    /// form, where S learns the intersection: a tiny Y would turn that into a
    /// membership test of a few chosen entities.
    pub min_server_set_size: u64,
    /// Cardinality form: the ε (in thousandths) of the noise the contract declares. The
    /// client then sends a noise anchor, expects the dummies that ε gives and subtracts
    /// half of them from its count.
    pub count_noise_epsilon_milli: Option<u32>,
}

/// The noise a client's count carries, as its output reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedNoise {
    pub epsilon_milli: u32,
    /// Dummy replies the server added (`2·half`); the count is clamped within `±half`
    /// of the true one.
    pub dummies: u32,
}

/// Everything a client session is set up with.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub binding: SessionBinding,
    /// The server node, as the transport authenticates it.
    pub server: NodeId,
    pub form: PsiOutputForm,
    /// Elements per chunk, `1..=MAX_CHUNK_ELEMENTS`.
    pub chunk_size: u32,
    pub policy: ClientPolicy,
}

/// What the client learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOutput {
    pub form: PsiOutputForm,
    /// `m = |Y|`, announced by the server.
    pub server_set_size: u64,
    /// Indices into X of the elements in Y, ascending; `None` in the cardinality form.
    pub intersection: Option<Vec<usize>>,
    /// `|X ∩ Y|`; with noise, `|X ∩ Y| + η` clamped to `0..=min(n, m)`.
    pub cardinality: u64,
    /// The noise the cardinality carries; `None`: it is exact.
    pub noise: Option<AppliedNoise>,
    /// Labels form: `(index into X, label)` for each match, ascending by index.
    pub labels: Option<Vec<(usize, Vec<u8>)>>,
    /// See the module docs; equal to the server's for an honest run.
    pub transcript_digest: [u8; 32],
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// How the client matches tags against its own.
enum Matcher {
    /// Intersection, Both, Labels: replies come in request order, so reply `i` is `x_i`'s.
    /// `unblinded` is kept (labels form only) to decrypt the labels of matches.
    Indexed { by_tag: HashMap<Tag, usize>, unblinded: Vec<UnblindedElement> },
    /// Cardinality: replies are shuffled; only the tags are kept.
    Counting { tags: HashSet<Tag> },
}

impl Matcher {
    fn new(form: PsiOutputForm, n: usize) -> Self {
        match form {
            PsiOutputForm::Cardinality => Self::Counting { tags: HashSet::with_capacity(n) },
            PsiOutputForm::Labels => {
                Self::Indexed { by_tag: HashMap::with_capacity(n), unblinded: Vec::with_capacity(n) }
            }
            PsiOutputForm::Intersection | PsiOutputForm::Both => {
                Self::Indexed { by_tag: HashMap::with_capacity(n), unblinded: Vec::new() }
            }
        }
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Indexed { by_tag, .. } => write!(f, "Matcher::Indexed({} tags)", by_tag.len()),
            Self::Counting { tags } => write!(f, "Matcher::Counting({} tags)", tags.len()),
        }
    }
}

// ---- AwaitingHelloAck ----------------------------------------------------------------

/// C has sent Hello and waits for S to accept.
pub struct ClientAwaitingHelloAck {
    channel: Channel,
    form: PsiOutputForm,
    chunk_size: u32,
    policy: ClientPolicy,
    inputs: Vec<Vec<u8>>,
    session: ClientSetSession,
    noise: Option<CountNoise>,
}

impl ClientAwaitingHelloAck {
    const STATE: &'static str = "client awaiting HelloAck";

    /// Starts a session over `inputs` (X, e.g. entity codes as bytes) and returns Hello.
    ///
    /// Refuses an empty X, a chunk size outside `1..=MAX_CHUNK_ELEMENTS`, and a repeated
    /// element ([`ProtocolError::DuplicateElement`]), before anything is sent. The blind
    /// `r` is drawn here from `rng`.
    pub fn start(
        config: ClientConfig,
        inputs: Vec<Vec<u8>>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Self, Vec<OutgoingMessage>), ProtocolError> {
        let ClientConfig { binding, server, form, chunk_size, policy } = config;
        if chunk_size == 0 || chunk_size as usize > MAX_CHUNK_ELEMENTS {
            return Err(ProtocolError::InvalidChunkSize { got: chunk_size, max: MAX_CHUNK_ELEMENTS });
        }
        if inputs.is_empty() {
            return Err(ProtocolError::SetTooSmall { whose: "client", got: 0, min: 1 });
        }
        let n = inputs.len() as u64;
        if chunk_count(n, chunk_size).is_none() {
            let max = u64::from(u32::MAX) * u64::from(chunk_size);
            return Err(ProtocolError::SetTooLarge { whose: "client", got: n, max });
        }
        refuse_duplicates("client", &inputs)?;
        let noise = match policy.count_noise_epsilon_milli {
            Some(_) if form != PsiOutputForm::Cardinality => {
                return Err(ProtocolError::NoiseMismatch {
                    reason: format!("noise is for the cardinality form, not {form}"),
                })
            }
            Some(epsilon_milli) => Some(CountNoise::new(epsilon_milli)?),
            None => None,
        };
        let session = ClientSetSession::new(rng);
        let mut channel = Channel::new(binding, server, Side::Client);
        let mut out = Vec::with_capacity(1);
        let hello = Hello {
            binding: channel.binding.clone(),
            form,
            client_set_size: n,
            chunk_size,
            noise_anchor: noise.map(|_| session.noise_anchor()),
        };
        channel.send(PsiMessage::Hello(hello), &mut out);
        Ok((Self { channel, form, chunk_size, policy, inputs, session, noise }, out))
    }

    /// Takes HelloAck: checks `m` against the policy and the tag length against
    /// `tag_bits_for(n, m, 40)`, then sends the first blinded chunks.
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(ClientAwaitingEvaluated, Vec<OutgoingMessage>), ProtocolError> {
        let ack = match self.channel.receive(from, bytes)? {
            PsiMessage::HelloAck(ack) => ack,
            other => return Err(unexpected(Self::STATE, &other)),
        };
        let n = self.inputs.len() as u64;
        let m = ack.server_set_size;
        if m < self.policy.min_server_set_size {
            return Err(ProtocolError::SetTooSmall {
                whose: "server",
                got: m,
                min: self.policy.min_server_set_size,
            });
        }
        let dummies = self.noise.map_or(0, |noise| noise.dummies());
        if ack.dummies != self.noise.map(|_| dummies) {
            let epsilon = self.noise.map_or(0.0, |noise| noise.epsilon());
            let contract = &self.channel.binding.contract;
            return Err(ProtocolError::NoiseMismatch {
                reason: match ack.dummies {
                    None => format!(
                        "the server adds no dummies; contract {contract}'s ε = {epsilon} gives {dummies}, so the count would be exact"
                    ),
                    Some(got) if self.noise.is_none() => {
                        format!("the server announces {got} dummies; contract {contract} declares no noise")
                    }
                    Some(got) => format!(
                        "the server announces {got} dummies; contract {contract}'s ε = {epsilon} gives {dummies}"
                    ),
                },
            });
        }
        let expected_bits =
            tag_bits_for(n + u64::from(dummies), m + u64::from(dummies), STATISTICAL_SECURITY_BITS)?;
        if u32::from(ack.tag_bits) != expected_bits {
            return Err(ProtocolError::TagLengthMismatch {
                expected_bits,
                got_bits: u32::from(ack.tag_bits),
            });
        }
        let tag_context =
            TagContext::new(&self.channel.binding.contract, self.channel.binding.epoch, expected_bits)?;
        // Checked in `start`.
        let total_chunks = chunk_count(n, self.chunk_size).unwrap_or(u32::MAX);
        let window = match self.form {
            PsiOutputForm::Cardinality => total_chunks,
            _ => total_chunks.min(CLIENT_WINDOW_CHUNKS),
        };
        let mut next = ClientAwaitingEvaluated {
            matcher: Matcher::new(self.form, self.inputs.len() + dummies as usize),
            channel: self.channel,
            form: self.form,
            chunk_size: self.chunk_size,
            n,
            m,
            noise: self.noise,
            inputs: self.inputs,
            session: self.session,
            tag_context,
            total_chunks,
            chunks_sent: 0,
            next_seq: 0,
            received: 0,
        };
        let mut out = Vec::with_capacity(window as usize);
        for _ in 0..window {
            next.send_next_chunk(&mut out)?;
        }
        Ok((next, out))
    }
}

impl fmt::Debug for ClientAwaitingHelloAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAwaitingHelloAck")
            .field("binding", &self.channel.binding)
            .field("form", &self.form)
            .field("n", &self.inputs.len())
            .finish_non_exhaustive()
    }
}

// ---- AwaitingEvaluated ---------------------------------------------------------------

/// C is sending blinded chunks and unblinding the replies.
pub struct ClientAwaitingEvaluated {
    channel: Channel,
    form: PsiOutputForm,
    chunk_size: u32,
    n: u64,
    m: u64,
    noise: Option<CountNoise>,
    /// X until its last chunk is blinded, then dropped.
    inputs: Vec<Vec<u8>>,
    session: ClientSetSession,
    tag_context: TagContext,
    matcher: Matcher,
    total_chunks: u32,
    chunks_sent: u32,
    next_seq: u32,
    /// Evaluated elements received so far.
    received: u64,
}

/// Where a client goes after an EvaluatedChunk.
#[derive(Debug)]
pub enum ClientEvaluatedNext {
    /// More replies to come.
    AwaitingEvaluated(Box<ClientAwaitingEvaluated>),
    /// All n replies are in; the tags come next.
    AwaitingTags(Box<ClientAwaitingTags>),
}

impl ClientAwaitingEvaluated {
    const STATE: &'static str = "client awaiting EvaluatedChunk";

    /// Blinds and queues chunk `chunks_sent` (RFC 9497 §3.3.1 Blind, with the session's
    /// one blind).
    fn send_next_chunk(&mut self, out: &mut Vec<OutgoingMessage>) -> Result<(), ProtocolError> {
        let seq = self.chunks_sent;
        let start = seq as usize * self.chunk_size as usize;
        let end = (start + self.chunk_size as usize).min(self.inputs.len());
        let inputs = self.inputs.get(start..end).unwrap_or_default();
        // Only an input hashing to the identity fails (probability ~2^-252); it is ours.
        let elements = self.session.blind_batch(inputs).map_err(|e| ProtocolError::Crypto(e.source))?;
        let chunk = BlindedChunk { binding: self.channel.binding.clone(), seq, elements };
        self.channel.send(PsiMessage::BlindedChunk(chunk), out);
        self.chunks_sent += 1;
        if self.chunks_sent == self.total_chunks {
            self.inputs = Vec::new();
        }
        Ok(())
    }

    /// Takes the next EvaluatedChunk: unblinds it (refusing the identity and
    /// non-canonical points, with their index), tags it, and sends the next blinded
    /// chunk if any is left.
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(ClientEvaluatedNext, Vec<OutgoingMessage>), ProtocolError> {
        let chunk: EvaluatedChunk = match self.channel.receive(from, bytes)? {
            PsiMessage::EvaluatedChunk(chunk) => chunk,
            other => return Err(unexpected(Self::STATE, &other)),
        };
        check_seq(PROTOCOL, "EvaluatedChunk", self.next_seq, chunk.seq)?;
        // A noisy session's dummies make reply chunks past the blinded ones: the server
        // answers after the last blinded chunk (cardinality form), with n + d replies.
        let dummies = u64::from(self.noise.map_or(0, |noise| noise.dummies()));
        let answerable = if self.noise.is_some() && self.chunks_sent == self.total_chunks {
            chunk_count(self.n + dummies, self.chunk_size).unwrap_or(u32::MAX)
        } else {
            self.chunks_sent
        };
        if chunk.seq >= answerable {
            return Err(ProtocolError::UnrequestedChunk { seq: chunk.seq });
        }
        let after = check_chunk(
            PROTOCOL,
            "evaluated elements",
            self.n + dummies,
            self.received,
            self.chunk_size,
            chunk.seq,
            chunk.elements.len(),
        )?;
        let unblinded = self.session.unblind_batch(&chunk.elements).map_err(at_offset(self.received))?;
        let tags = self.tag_context.tag_batch(&unblinded);
        let offset = self.received as usize;
        match &mut self.matcher {
            Matcher::Indexed { by_tag, unblinded: kept } => {
                by_tag.extend(tags.into_iter().enumerate().map(|(i, tag)| (tag, offset + i)));
                if self.form == PsiOutputForm::Labels {
                    kept.extend_from_slice(&unblinded);
                }
            }
            Matcher::Counting { tags: set } => set.extend(tags),
        }
        self.received = after;
        self.next_seq += 1;
        let mut out = Vec::new();
        if self.chunks_sent < self.total_chunks {
            self.send_next_chunk(&mut out)?;
        }
        if self.received < self.n + dummies {
            return Ok((ClientEvaluatedNext::AwaitingEvaluated(Box::new(self)), out));
        }
        let next = ClientAwaitingTags {
            channel: self.channel,
            form: self.form,
            chunk_size: self.chunk_size,
            n: self.n,
            m: self.m,
            expected_tags: self.m + dummies,
            noise: self.noise,
            tag_context: self.tag_context,
            matcher: self.matcher,
            next_seq: 0,
            received: 0,
            intersection: Vec::new(),
            matched_tags: Vec::new(),
            labels: Vec::new(),
            cardinality: 0,
            tag_chunks: None,
        };
        Ok((ClientEvaluatedNext::AwaitingTags(Box::new(next)), out))
    }
}

impl fmt::Debug for ClientAwaitingEvaluated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAwaitingEvaluated")
            .field("binding", &self.channel.binding)
            .field("form", &self.form)
            .field("n", &self.n)
            .field("chunks_sent", &self.chunks_sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

// ---- AwaitingTags --------------------------------------------------------------------

/// C has every `N_x` and matches the server's tags as they stream in.
pub struct ClientAwaitingTags {
    channel: Channel,
    form: PsiOutputForm,
    chunk_size: u32,
    n: u64,
    m: u64,
    /// m, plus a noisy session's extra tags.
    expected_tags: u64,
    noise: Option<CountNoise>,
    tag_context: TagContext,
    matcher: Matcher,
    next_seq: u32,
    /// Tags received so far.
    received: u64,
    intersection: Vec<usize>,
    matched_tags: Vec<Tag>,
    labels: Vec<(usize, Vec<u8>)>,
    cardinality: u64,
    /// Tags per TagChunk and the label length, fixed by the first TagChunk
    /// ([`super::tag_chunk_size`]: the label width decides it).
    tag_chunks: Option<(u32, usize)>,
}

/// Where a client goes after a TagChunk or ServerDone.
#[derive(Debug)]
pub enum ClientTagsNext {
    AwaitingTags(Box<ClientAwaitingTags>),
    /// The run is over (in the Both form, the MatchReport is among the messages).
    Done(ClientOutput),
}

impl ClientAwaitingTags {
    const STATE: &'static str = "client awaiting TagChunk or ServerDone";

    /// Takes a TagChunk (matches it) or ServerDone (checks the count, outputs, and in
    /// the Both form sends the MatchReport).
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(ClientTagsNext, Vec<OutgoingMessage>), ProtocolError> {
        match self.channel.receive(from, bytes)? {
            PsiMessage::TagChunk(chunk) => {
                self.absorb(&chunk)?;
                Ok((ClientTagsNext::AwaitingTags(Box::new(self)), Vec::new()))
            }
            PsiMessage::ServerDone(done) => self.finish(&done),
            other => Err(unexpected(Self::STATE, &other)),
        }
    }

    fn absorb(&mut self, chunk: &TagChunk) -> Result<(), ProtocolError> {
        check_seq(PROTOCOL, "TagChunk", self.next_seq, chunk.seq)?;
        let tag_len = self.tag_context.tag_len();
        if usize::from(chunk.tag_len) != tag_len {
            return Err(ProtocolError::TagLengthMismatch {
                expected_bits: tag_len as u32 * 8,
                got_bits: u32::from(chunk.tag_len) * 8,
            });
        }
        // The first chunk fixes the label width, and with it the tags per chunk; every
        // later label must have that width.
        let label_len = chunk.labels.get(0).map_or(0, <[u8]>::len);
        let (tags_per_chunk, width) = *self
            .tag_chunks
            .get_or_insert((super::tag_chunk_size(self.chunk_size, tag_len, label_len), label_len));
        if let Some(i) =
            (0..chunk.labels.len()).find(|&i| chunk.labels.get(i).map_or(0, <[u8]>::len) != width)
        {
            return Err(ProtocolError::Malformed {
                what: "PSI TagChunk",
                reason: format!("label {i} of chunk {} is not {width} bytes like the first label", chunk.seq),
            });
        }
        let after = check_chunk(
            PROTOCOL,
            "tags",
            self.expected_tags,
            self.received,
            tags_per_chunk,
            chunk.seq,
            chunk.tags.len(),
        )?;
        let labelled = self.form == PsiOutputForm::Labels;
        let labels_expected = if labelled { chunk.tags.len() } else { 0 };
        if chunk.labels.len() != labels_expected {
            return Err(ProtocolError::LabelsMismatch {
                form: self.form,
                tags: chunk.tags.len(),
                labels: chunk.labels.len(),
            });
        }
        match &mut self.matcher {
            Matcher::Indexed { by_tag, unblinded } => {
                for (i, tag) in chunk.tags.iter().enumerate() {
                    // Removing makes a repeated tag count once.
                    let Some(index) = by_tag.remove(tag) else { continue };
                    self.intersection.push(index);
                    if self.form == PsiOutputForm::Both {
                        self.matched_tags.push(*tag);
                    }
                    if let (true, Some(ciphertext), Some(element)) =
                        (labelled, chunk.labels.get(i), unblinded.get(index))
                    {
                        // N_x = N_y for a match, so x's pad opens y's label.
                        let mut label = ciphertext.to_vec();
                        self.tag_context.xor_pad(element, &mut label);
                        self.labels.push((index, label));
                    }
                }
            }
            Matcher::Counting { tags } => {
                for tag in &chunk.tags {
                    if tags.remove(tag) {
                        self.cardinality += 1;
                    }
                }
            }
        }
        self.received = after;
        self.next_seq += 1;
        Ok(())
    }

    fn finish(mut self, done: &ServerDone) -> Result<(ClientTagsNext, Vec<OutgoingMessage>), ProtocolError> {
        let expected = self.expected_tags;
        if self.received != expected {
            return Err(ProtocolError::TagCountMismatch { declared: expected, got: self.received });
        }
        if done.total_tags != expected {
            return Err(ProtocolError::TagCountMismatch { declared: expected, got: done.total_tags });
        }
        let mut out = Vec::new();
        if self.form == PsiOutputForm::Both {
            // Sorted by value: the report's order then says nothing about X's order.
            self.matched_tags.sort_unstable();
            let total_matches = self.matched_tags.len() as u64;
            let tag_len = self.tag_context.tag_len() as u8;
            let mut chunks: Vec<&[Tag]> = self.matched_tags.chunks(self.chunk_size as usize).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            for (seq, tags) in chunks.into_iter().enumerate() {
                let report = MatchReport {
                    binding: self.channel.binding.clone(),
                    seq: u32::try_from(seq).unwrap_or(u32::MAX),
                    total_matches,
                    tag_len,
                    tags: tags.to_vec(),
                };
                self.channel.send(PsiMessage::MatchReport(report), &mut out);
            }
        }
        self.intersection.sort_unstable();
        self.labels.sort_unstable_by_key(|(index, _)| *index);
        let summary = self.channel.transcript.finish();
        let (intersection, cardinality, labels) = match self.form {
            // The dummies' matches are half ± the noise: take half away, and clamp to
            // what a count can be (post-processing, which costs no privacy).
            PsiOutputForm::Cardinality => {
                let half = u64::from(self.noise.map_or(0, |noise| noise.half()));
                (None, self.cardinality.saturating_sub(half).min(self.n.min(self.m)), None)
            }
            PsiOutputForm::Labels => {
                (Some(self.intersection.clone()), self.intersection.len() as u64, Some(self.labels))
            }
            PsiOutputForm::Intersection | PsiOutputForm::Both => {
                (Some(self.intersection.clone()), self.intersection.len() as u64, None)
            }
        };
        let output = ClientOutput {
            form: self.form,
            server_set_size: self.m,
            intersection,
            cardinality,
            noise: self
                .noise
                .map(|noise| AppliedNoise { epsilon_milli: noise.epsilon_milli(), dummies: noise.dummies() }),
            labels,
            transcript_digest: summary.digest,
            bytes_sent: summary.bytes_sent,
            bytes_received: summary.bytes_received,
        };
        Ok((ClientTagsNext::Done(output), out))
    }
}

impl fmt::Debug for ClientAwaitingTags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAwaitingTags")
            .field("binding", &self.channel.binding)
            .field("form", &self.form)
            .field("m", &self.m)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

// ---- Driver --------------------------------------------------------------------------

/// The client's states in one value, for a node's receive loop:
///
/// ```text
/// let (mut client, out) = PsiClient::start(config, inputs, &mut rng)?;
/// send(out);
/// while !client.is_done() {
///     let (from, bytes) = receive();
///     let (next, out) = client.handle(&from, &bytes)?;   // any error ends the run
///     send(out);
///     client = next;
/// }
/// ```
#[derive(Debug)]
pub enum PsiClient {
    AwaitingHelloAck(Box<ClientAwaitingHelloAck>),
    AwaitingEvaluated(Box<ClientAwaitingEvaluated>),
    AwaitingTags(Box<ClientAwaitingTags>),
    Done(ClientOutput),
}

impl PsiClient {
    /// [`ClientAwaitingHelloAck::start`].
    pub fn start(
        config: ClientConfig,
        inputs: Vec<Vec<u8>>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Self, Vec<OutgoingMessage>), ProtocolError> {
        let (state, out) = ClientAwaitingHelloAck::start(config, inputs, rng)?;
        Ok((Self::AwaitingHelloAck(Box::new(state)), out))
    }

    /// Hands one message from `from` to the current state.
    pub fn handle(self, from: &NodeId, bytes: &[u8]) -> Result<(Self, Vec<OutgoingMessage>), ProtocolError> {
        match self {
            Self::AwaitingHelloAck(state) => {
                let (next, out) = state.handle(from, bytes)?;
                Ok((Self::AwaitingEvaluated(Box::new(next)), out))
            }
            Self::AwaitingEvaluated(state) => match state.handle(from, bytes)? {
                (ClientEvaluatedNext::AwaitingEvaluated(next), out) => {
                    Ok((Self::AwaitingEvaluated(next), out))
                }
                (ClientEvaluatedNext::AwaitingTags(next), out) => Ok((Self::AwaitingTags(next), out)),
            },
            Self::AwaitingTags(state) => match state.handle(from, bytes)? {
                (ClientTagsNext::AwaitingTags(next), out) => Ok((Self::AwaitingTags(next), out)),
                (ClientTagsNext::Done(output), out) => Ok((Self::Done(output), out)),
            },
            Self::Done(_) => {
                // Still decode, so the error names what arrived.
                let got =
                    PsiMessage::from_bytes(bytes).map(|m| m.kind().name()).unwrap_or("undecodable message");
                Err(ProtocolError::UnexpectedMessage { state: "client done", got })
            }
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done(_))
    }

    pub fn output(&self) -> Option<&ClientOutput> {
        match self {
            Self::Done(output) => Some(output),
            _ => None,
        }
    }

    pub fn into_output(self) -> Option<ClientOutput> {
        match self {
            Self::Done(output) => Some(output),
            _ => None,
        }
    }
}
