//! The server's states: S holds Y (as a cached [`ServerSet`]) and the OPRF key.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use rand_core::CryptoRngCore;
use xmcredit_crypto::count_noise::{select_dummy_tags, CountNoise, DummyReplies};
use xmcredit_crypto::group::{decode_element, ElementBytes};
use xmcredit_crypto::oprf::OprfKey;
use xmcredit_crypto::set::{evaluate_batch, tag_bits_for, Tag, TagContext};
use xmcredit_crypto::NodeId;
use zeroize::Zeroize;

use super::messages::{
    BlindedChunk, EncryptedLabels, EvaluatedChunk, Hello, HelloAck, MatchReport, ServerDone, TagChunk,
};
use super::server_set::ServerSet;
use super::shuffle::Shuffler;
use super::{
    at_offset, check_chunk, check_seq, chunk_count, unexpected, Channel, OutgoingMessage, PsiMessage,
    PsiOutputForm, Side, PROTOCOL, STATISTICAL_SECURITY_BITS,
};
use crate::{ProtocolError, SessionBinding};

/// The server's limits, from the contract (filled in by the node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerPolicy {
    /// The one output form the contract grants; a Hello asking for another is refused.
    pub form: PsiOutputForm,
    /// Smallest client set S answers. S enforces it because S is the party that would
    /// leak: a client with a set of one would learn that one entity's membership (and
    /// label). Values below 1 act as 1.
    pub min_client_set_size: u64,
    /// Largest client set S answers (bounds its work and, in the cardinality form, the
    /// n × 32 bytes it buffers).
    pub max_client_set_size: u64,
    /// Cardinality form: the ε (in thousandths) of the noise the contract declares on
    /// the count, which S adds with dummy replies (`xmcredit_crypto::count_noise`).
    /// `None`: the exact count. S refuses a Hello whose noise anchor does not match.
    pub count_noise_epsilon_milli: Option<u32>,
}

/// Everything a noisy session drew when it was set up: the noise itself (how many dummy
/// tags S includes), the dummies' scalars and the random tags that stand in for the
/// dummies S leaves out. It is the noise: no `Debug`, and zeroized when dropped (the
/// scalars by [`DummyReplies`]).
struct PendingNoise {
    noise: CountNoise,
    included: u32,
    /// Taken (and consumed) when the anchor arrives.
    dummies: Option<DummyReplies>,
    random_tags: Vec<[u8; 16]>,
}

impl Drop for PendingNoise {
    fn drop(&mut self) {
        self.included.zeroize();
        self.random_tags.zeroize();
    }
}

impl PendingNoise {
    fn draw(epsilon_milli: u32, rng: &mut impl CryptoRngCore) -> Result<Self, ProtocolError> {
        let noise = CountNoise::new(epsilon_milli)?;
        let count = noise.dummies() as usize;
        let included = noise.sample_included(rng);
        let dummies = DummyReplies::new(count, rng);
        let random_tags = (0..count)
            .map(|_| {
                let mut tag = [0u8; 16];
                rng.fill_bytes(&mut tag);
                tag
            })
            .collect();
        Ok(Self { noise, included, dummies: Some(dummies), random_tags })
    }

    /// The dummy replies for `anchor` and the extra tags (dummies' or random) under
    /// `tag_context`.
    fn answer(
        mut self,
        anchor: &xmcredit_crypto::count_noise::NoiseAnchor,
        tag_context: &TagContext,
    ) -> Result<(Vec<ElementBytes>, Vec<Tag>), ProtocolError> {
        let dummies = self.dummies.take().ok_or_else(|| ProtocolError::NoiseMismatch {
            reason: "this session's dummies were already used".into(),
        })?;
        let (replies, mut unblinded) = dummies.evaluate(anchor).map_err(|e| ProtocolError::Malformed {
            what: "PSI Hello",
            reason: format!("noise anchor: {e}"),
        })?;
        let mut dummy_tags = tag_context.tag_batch(&unblinded);
        // With the transcript, the dummies' values and tags would tell which tags are
        // theirs, and so η.
        unblinded.iter_mut().for_each(|u| u.0.zeroize());
        let len = tag_context.tag_len();
        // Tags keep their unused tail zero (crypto::set::Tag).
        let mut random_tags: Vec<Tag> = self
            .random_tags
            .iter()
            .map(|bytes| {
                let mut tag = [0u8; 16];
                tag[..len].copy_from_slice(&bytes[..len]);
                Tag(tag)
            })
            .collect();
        let extra = select_dummy_tags(self.included, &dummy_tags, &random_tags);
        // Either list beside the extra tags (dummies first) would give `included` away.
        dummy_tags.iter_mut().chain(random_tags.iter_mut()).for_each(|t| t.0.zeroize());
        Ok((replies, extra))
    }
}

/// Everything a server session is set up with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub binding: SessionBinding,
    /// The client node, as the transport authenticates it.
    pub client: NodeId,
    pub policy: ServerPolicy,
}

/// What the server learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOutput {
    pub form: PsiOutputForm,
    /// `n = |X|`.
    pub client_set_size: u64,
    /// Both form only: indices into Y (the [`ServerSet`]'s order) of the matches,
    /// ascending.
    pub intersection: Option<Vec<usize>>,
    /// See the module docs; equal to the client's for an honest run.
    pub transcript_digest: [u8; 32],
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

// ---- AwaitingHello -------------------------------------------------------------------

/// S waits for the client's Hello.
pub struct ServerAwaitingHello {
    channel: Channel,
    policy: ServerPolicy,
    set: Arc<ServerSet>,
    key: OprfKey,
    tag_order: Shuffler,
    reply_order: Shuffler,
    noise: Option<PendingNoise>,
}

/// The server's check of a Hello's noise anchor against the contract's count noise
/// (`count_noise_epsilon_milli`): an anchor exactly when the contract adds noise, and
/// one that passes the checked decoder. [`ServerAwaitingHello::handle`] runs it; a node
/// runs it too before it spends the client's quota and the epoch's one noisy run.
pub fn check_noise_anchor(
    hello: &Hello,
    count_noise_epsilon_milli: Option<u32>,
) -> Result<(), ProtocolError> {
    match (count_noise_epsilon_milli, &hello.noise_anchor) {
        (Some(milli), None) => Err(ProtocolError::NoiseMismatch {
            reason: format!(
                "the contract adds noise of ε = {} to the count; this Hello has no noise anchor",
                f64::from(milli) / 1000.0
            ),
        }),
        (None, Some(_)) => Err(ProtocolError::NoiseMismatch {
            reason: "the contract declares no noise; this Hello carries a noise anchor".into(),
        }),
        (Some(_), Some(anchor)) => decode_element(&anchor.0).map(|_| ()).map_err(|e| {
            ProtocolError::Malformed { what: "PSI Hello", reason: format!("noise anchor: {e}") }
        }),
        (None, None) => Ok(()),
    }
}

impl ServerAwaitingHello {
    const STATE: &'static str = "server awaiting Hello";

    /// Sets up a session serving `set` with `key` (the PsiServer key of the binding's
    /// contract and epoch). The randomness for shuffling tags and (cardinality form)
    /// replies is drawn here from `rng`, so later transitions need none.
    ///
    /// Refuses, as local faults, a set built for another contract, epoch or key, and the
    /// labels form with a set built without labels.
    pub fn new(
        config: ServerConfig,
        set: Arc<ServerSet>,
        key: OprfKey,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, ProtocolError> {
        let ServerConfig { binding, client, policy } = config;
        set.check_serves(&binding, &key)?;
        if policy.form == PsiOutputForm::Labels && !set.has_labels() {
            return Err(ProtocolError::ServerSetMismatch {
                reason: "the labels form needs a set built with labels".into(),
            });
        }
        let noise = match policy.count_noise_epsilon_milli {
            Some(_) if policy.form != PsiOutputForm::Cardinality => {
                return Err(ProtocolError::NoiseMismatch {
                    reason: format!(
                        "noise is for the cardinality form, the policy's form is {}",
                        policy.form
                    ),
                })
            }
            Some(epsilon_milli) => Some(PendingNoise::draw(epsilon_milli, rng)?),
            None => None,
        };
        Ok(Self {
            channel: Channel::new(binding, client, Side::Server),
            policy,
            set,
            key,
            tag_order: Shuffler::new(rng),
            reply_order: Shuffler::new(rng),
            noise,
        })
    }

    /// Takes Hello: refuses another form than the contract's and a client set outside
    /// `[max(1, min), max]`, then answers with `m` and the tag length.
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(ServerAwaitingBlinded, Vec<OutgoingMessage>), ProtocolError> {
        let hello = match self.channel.receive(from, bytes)? {
            PsiMessage::Hello(hello) => hello,
            other => return Err(unexpected(Self::STATE, &other)),
        };
        if hello.form != self.policy.form {
            return Err(ProtocolError::FormNotAllowed { requested: hello.form, allowed: self.policy.form });
        }
        let n = hello.client_set_size;
        let min = self.policy.min_client_set_size.max(1);
        if n < min {
            return Err(ProtocolError::SetTooSmall { whose: "client", got: n, min });
        }
        if n > self.policy.max_client_set_size {
            return Err(ProtocolError::SetTooLarge {
                whose: "client",
                got: n,
                max: self.policy.max_client_set_size,
            });
        }
        if chunk_count(n, hello.chunk_size).is_none() {
            let max = u64::from(u32::MAX) * u64::from(hello.chunk_size);
            return Err(ProtocolError::SetTooLarge { whose: "client", got: n, max });
        }
        check_noise_anchor(&hello, self.policy.count_noise_epsilon_milli)?;
        let dummies = self.noise.as_ref().map_or(0, |pending| pending.noise.dummies());
        let m = self.set.len() as u64;
        // Dummies are replies and tags like the others: the tags are long enough for all.
        let tag_bits =
            tag_bits_for(n + u64::from(dummies), m + u64::from(dummies), STATISTICAL_SECURITY_BITS)?;
        let tag_context =
            TagContext::new(&self.channel.binding.contract, self.channel.binding.epoch, tag_bits)?;
        let (dummy_replies, extra_tags) = match (self.noise.take(), &hello.noise_anchor) {
            (Some(pending), Some(anchor)) => pending.answer(anchor, &tag_context)?,
            _ => (Vec::new(), Vec::new()),
        };
        let mut out = Vec::with_capacity(1);
        let ack = HelloAck {
            binding: self.channel.binding.clone(),
            server_set_size: m,
            // At most MAX_TAG_BITS = 128.
            tag_bits: u16::try_from(tag_bits).unwrap_or(u16::MAX),
            dummies: hello.noise_anchor.map(|_| dummies),
        };
        self.channel.send(PsiMessage::HelloAck(ack), &mut out);
        let next = ServerAwaitingBlinded {
            channel: self.channel,
            form: self.policy.form,
            set: self.set,
            key: self.key,
            tag_context,
            n,
            chunk_size: hello.chunk_size,
            next_seq: 0,
            received: 0,
            buffered: Vec::new(),
            dummy_replies,
            extra_tags,
            tag_order: self.tag_order,
            reply_order: self.reply_order,
        };
        Ok((next, out))
    }
}

impl fmt::Debug for ServerAwaitingHello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAwaitingHello")
            .field("binding", &self.channel.binding)
            .field("client", &self.channel.peer)
            .field("policy", &self.policy)
            .field("set", &self.set)
            .finish_non_exhaustive()
    }
}

// ---- AwaitingBlinded -----------------------------------------------------------------

/// S evaluates blinded chunks as they arrive.
pub struct ServerAwaitingBlinded {
    channel: Channel,
    form: PsiOutputForm,
    set: Arc<ServerSet>,
    key: OprfKey,
    tag_context: TagContext,
    n: u64,
    chunk_size: u32,
    next_seq: u32,
    /// Blinded elements received so far.
    received: u64,
    /// Cardinality form: every evaluated element, shuffled and sent after the last chunk.
    buffered: Vec<ElementBytes>,
    /// Noisy cardinality: the dummy replies, shuffled in among the others.
    dummy_replies: Vec<ElementBytes>,
    /// Noisy cardinality: tags of the included dummies and random tags, sent after Y's.
    extra_tags: Vec<Tag>,
    tag_order: Shuffler,
    reply_order: Shuffler,
}

/// Where a server goes after a BlindedChunk.
#[derive(Debug)]
pub enum ServerBlindedNext {
    AwaitingBlinded(Box<ServerAwaitingBlinded>),
    /// Both form: every tag is sent, the client's MatchReport comes next.
    AwaitingMatchReport(Box<ServerAwaitingMatchReport>),
    /// Every other form: the run is over once the returned messages are sent.
    Done(ServerOutput),
    /// Every blinded chunk answered: the tags go out next, pulled one chunk at a time.
    SendingTags(Box<ServerSendingTags>),
}

impl ServerAwaitingBlinded {
    const STATE: &'static str = "server awaiting BlindedChunk";

    /// Takes the next BlindedChunk and evaluates it (RFC 9497 §3.3.1 BlindEvaluate,
    /// batched; the identity and non-canonical points are refused with their index).
    /// Except in the cardinality form the reply goes out at once, so memory stays flat.
    /// After the last chunk, sends the (shuffled) replies in the cardinality form, then
    /// the tags and ServerDone.
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(ServerBlindedNext, Vec<OutgoingMessage>), ProtocolError> {
        let chunk: BlindedChunk = match self.channel.receive(from, bytes)? {
            PsiMessage::BlindedChunk(chunk) => chunk,
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
        let mut out = Vec::new();
        if self.form == PsiOutputForm::Cardinality {
            self.buffered.extend_from_slice(&evaluated);
        } else {
            let reply =
                EvaluatedChunk { binding: self.channel.binding.clone(), seq: chunk.seq, elements: evaluated };
            self.channel.send(PsiMessage::EvaluatedChunk(reply), &mut out);
        }
        self.received = after;
        self.next_seq += 1;
        if self.received < self.n {
            return Ok((ServerBlindedNext::AwaitingBlinded(Box::new(self)), out));
        }
        let next = self.send_tags(&mut out);
        Ok((next, out))
    }

    fn send_tags(mut self, out: &mut Vec<OutgoingMessage>) -> ServerBlindedNext {
        let chunk_size = self.chunk_size as usize;
        if self.form == PsiOutputForm::Cardinality {
            let mut replies = std::mem::take(&mut self.buffered);
            replies.append(&mut self.dummy_replies);
            self.reply_order.shuffle(&mut replies);
            for (seq, elements) in replies.chunks(chunk_size).enumerate() {
                let reply = EvaluatedChunk {
                    binding: self.channel.binding.clone(),
                    seq: u32::try_from(seq).unwrap_or(u32::MAX),
                    elements: elements.to_vec(),
                };
                self.channel.send(PsiMessage::EvaluatedChunk(reply), out);
            }
        }
        // The session's tags go out in an order shuffled per session, one chunk at a
        // time as the node pulls them ([`ServerSendingTags`]): a session never holds
        // every TagChunk at once, whatever the label width.
        // Positions m.. are the extra tags of a noisy session, shuffled in with Y's.
        let total = self.set.len() + self.extra_tags.len();
        let mut order: Vec<u32> = (0..u32::try_from(total).unwrap_or(u32::MAX)).collect();
        self.tag_order.shuffle(&mut order);
        let tag_len = self.tag_context.tag_len() as u8;
        let label_len = if self.form == PsiOutputForm::Labels {
            self.set.labels().and_then(|l| l.get(0)).map_or(0, <[u8]>::len)
        } else {
            0
        };
        // Wide labels make smaller tag chunks, so no frame outgrows the limit.
        let tags_per_chunk = super::tag_chunk_size(self.chunk_size, usize::from(tag_len), label_len).max(1);
        ServerBlindedNext::SendingTags(Box::new(ServerSendingTags {
            channel: self.channel,
            form: self.form,
            set: self.set,
            tag_context: self.tag_context,
            n: self.n,
            chunk_size: self.chunk_size,
            order,
            tags_per_chunk,
            tag_len,
            next_seq: 0,
            extra_tags: self.extra_tags,
        }))
    }
}

// ---- SendingTags ---------------------------------------------------------------------

/// Every blinded chunk is answered; the tags of Y (and, labels form, the encrypted
/// labels) go out chunk by chunk as the node pulls them, then ServerDone.
pub struct ServerSendingTags {
    channel: Channel,
    form: PsiOutputForm,
    set: Arc<ServerSet>,
    tag_context: TagContext,
    n: u64,
    chunk_size: u32,
    /// Positions of Y (and, from m on, of the extra tags) in the session's shuffled order.
    order: Vec<u32>,
    tags_per_chunk: u32,
    tag_len: u8,
    next_seq: u32,
    /// Noisy cardinality: the tags at positions m.. of `order`.
    extra_tags: Vec<Tag>,
}

impl fmt::Debug for ServerSendingTags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSendingTags")
            .field("binding", &self.channel.binding)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

/// Where a server goes after sending one more message.
#[derive(Debug)]
pub enum ServerSendingNext {
    SendingTags(Box<ServerSendingTags>),
    AwaitingMatchReport(Box<ServerAwaitingMatchReport>),
    Done(ServerOutput),
}

impl ServerSendingTags {
    /// The next TagChunk, or (after the last) ServerDone and the state that follows.
    pub fn next(mut self) -> (ServerSendingNext, OutgoingMessage) {
        let per_chunk = self.tags_per_chunk as usize;
        let start = (self.next_seq as usize).saturating_mul(per_chunk);
        if start < self.order.len() {
            let positions = &self.order[start..(start + per_chunk).min(self.order.len())];
            let elements = self.set.elements();
            let m = elements.len();
            let tags: Vec<Tag> = positions
                .iter()
                .filter_map(|&p| match elements.get(p as usize) {
                    Some(element) => Some(self.tag_context.tag(element)),
                    None => self.extra_tags.get((p as usize).wrapping_sub(m)).copied(),
                })
                .collect();
            let mut labels = EncryptedLabels::new();
            if let Some(all) = self.set.labels().filter(|_| self.form == PsiOutputForm::Labels) {
                labels = EncryptedLabels::with_capacity(positions.len(), 0);
                for ciphertext in positions.iter().filter_map(|&p| all.get(p as usize)) {
                    labels.push(ciphertext);
                }
            }
            let chunk = TagChunk {
                binding: self.channel.binding.clone(),
                seq: self.next_seq,
                tag_len: self.tag_len,
                tags,
                labels,
            };
            self.next_seq += 1;
            let message = self.channel.outgoing(PsiMessage::TagChunk(chunk));
            return (ServerSendingNext::SendingTags(Box::new(self)), message);
        }
        let done = ServerDone { binding: self.channel.binding.clone(), total_tags: self.order.len() as u64 };
        let message = self.channel.outgoing(PsiMessage::ServerDone(done));
        if self.form == PsiOutputForm::Both {
            // The client's MatchReport names tags: the whole tag set, once, to match them.
            let tags = self.tag_context.tag_batch(self.set.elements());
            let next = ServerAwaitingMatchReport {
                channel: self.channel,
                n: self.n,
                chunk_size: self.chunk_size,
                tag_len: self.tag_len,
                tags,
                next_seq: 0,
                total: 0,
                reported: HashSet::new(),
            };
            return (ServerSendingNext::AwaitingMatchReport(Box::new(next)), message);
        }
        let summary = self.channel.transcript.finish();
        let output = ServerOutput {
            form: self.form,
            client_set_size: self.n,
            intersection: None,
            transcript_digest: summary.digest,
            bytes_sent: summary.bytes_sent,
            bytes_received: summary.bytes_received,
        };
        (ServerSendingNext::Done(output), message)
    }
}

impl fmt::Debug for ServerAwaitingBlinded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAwaitingBlinded")
            .field("binding", &self.channel.binding)
            .field("form", &self.form)
            .field("n", &self.n)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

// ---- AwaitingMatchReport -------------------------------------------------------------

/// Both form: S has sent its tags and waits for the client's matched tags.
pub struct ServerAwaitingMatchReport {
    channel: Channel,
    n: u64,
    chunk_size: u32,
    tag_len: u8,
    /// This session's tag of each element of Y, in Y's order.
    tags: Vec<Tag>,
    next_seq: u32,
    /// The report's total, fixed by its chunk 0.
    total: u64,
    reported: HashSet<Tag>,
}

/// Where a server goes after a MatchReport chunk.
#[derive(Debug)]
pub enum ServerMatchReportNext {
    AwaitingMatchReport(Box<ServerAwaitingMatchReport>),
    Done(ServerOutput),
}

impl ServerAwaitingMatchReport {
    const STATE: &'static str = "server awaiting MatchReport";

    /// Takes the next MatchReport chunk; after the last, maps the reported tags back to
    /// indices of Y. Refuses more matches than `min(n, m)`, a repeated tag and a tag
    /// that is not one of this session's.
    pub fn handle(
        mut self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(ServerMatchReportNext, Vec<OutgoingMessage>), ProtocolError> {
        let report: MatchReport = match self.channel.receive(from, bytes)? {
            PsiMessage::MatchReport(report) => report,
            other => return Err(unexpected(Self::STATE, &other)),
        };
        check_seq(PROTOCOL, "MatchReport", self.next_seq, report.seq)?;
        if report.tag_len != self.tag_len {
            return Err(ProtocolError::TagLengthMismatch {
                expected_bits: u32::from(self.tag_len) * 8,
                got_bits: u32::from(report.tag_len) * 8,
            });
        }
        if report.seq == 0 {
            let limit = self.n.min(self.tags.len() as u64);
            if report.total_matches > limit {
                return Err(ProtocolError::TooManyElements {
                    protocol: PROTOCOL,
                    what: "matched tags",
                    declared: limit,
                    got: report.total_matches,
                });
            }
            self.total = report.total_matches;
        } else if report.total_matches != self.total {
            return Err(ProtocolError::MatchTotalChanged { first: self.total, got: report.total_matches });
        }
        let received = self.reported.len() as u64;
        let after = check_chunk(
            PROTOCOL,
            "matched tags",
            self.total,
            received,
            self.chunk_size,
            report.seq,
            report.tags.len(),
        )?;
        for tag in &report.tags {
            if !self.reported.insert(*tag) {
                return Err(ProtocolError::DuplicateMatch);
            }
        }
        self.next_seq += 1;
        if after < self.total {
            return Ok((ServerMatchReportNext::AwaitingMatchReport(Box::new(self)), Vec::new()));
        }
        let intersection: Vec<usize> = self
            .tags
            .iter()
            .enumerate()
            .filter(|(_, tag)| self.reported.contains(tag))
            .map(|(i, _)| i)
            .collect();
        if intersection.len() != self.reported.len() {
            return Err(ProtocolError::UnknownMatch { unknown: self.reported.len() - intersection.len() });
        }
        let summary = self.channel.transcript.finish();
        let output = ServerOutput {
            form: PsiOutputForm::Both,
            client_set_size: self.n,
            intersection: Some(intersection),
            transcript_digest: summary.digest,
            bytes_sent: summary.bytes_sent,
            bytes_received: summary.bytes_received,
        };
        Ok((ServerMatchReportNext::Done(output), Vec::new()))
    }
}

impl fmt::Debug for ServerAwaitingMatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAwaitingMatchReport")
            .field("binding", &self.channel.binding)
            .field("n", &self.n)
            .field("m", &self.tags.len())
            .field("reported", &self.reported.len())
            .finish_non_exhaustive()
    }
}

// ---- Driver --------------------------------------------------------------------------

/// The server's states in one value, for a node's receive loop:
///
/// ```text
/// let set: Arc<ServerSet> = cache.get_or_build(contract, epoch, dataset_version)?;
/// let mut server = PsiServer::new(config, set, key, &mut rng)?;
/// while !server.is_done() {
///     let (from, bytes) = receive();
///     let (next, out) = server.handle(&from, &bytes)?;   // any error ends the run
///     send(out);
///     server = next;
/// }
/// ```
#[derive(Debug)]
pub enum PsiServer {
    AwaitingHello(Box<ServerAwaitingHello>),
    AwaitingBlinded(Box<ServerAwaitingBlinded>),
    SendingTags(Box<ServerSendingTags>),
    AwaitingMatchReport(Box<ServerAwaitingMatchReport>),
    Done(ServerOutput),
}

impl PsiServer {
    /// [`ServerAwaitingHello::new`].
    pub fn new(
        config: ServerConfig,
        set: Arc<ServerSet>,
        key: OprfKey,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, ProtocolError> {
        ServerAwaitingHello::new(config, set, key, rng).map(|state| Self::AwaitingHello(Box::new(state)))
    }

    /// Hands one message from `from` to the current state and returns every message
    /// to send, the tag chunks included. A node that must bound its memory uses
    /// [`PsiServer::handle_streaming`] and pulls the tags with [`PsiServer::next_outgoing`].
    pub fn handle(self, from: &NodeId, bytes: &[u8]) -> Result<(Self, Vec<OutgoingMessage>), ProtocolError> {
        let (mut server, mut out) = self.handle_streaming(from, bytes)?;
        loop {
            let (next, message) = server.next_outgoing();
            server = next;
            match message {
                Some(message) => out.push(message),
                None => return Ok((server, out)),
            }
        }
    }

    /// Like [`PsiServer::handle`], but once every blinded chunk is answered the tag
    /// chunks are not built: the state is [`PsiServer::SendingTags`] and the node pulls
    /// them one at a time with [`PsiServer::next_outgoing`] as its stream has room.
    pub fn handle_streaming(
        self,
        from: &NodeId,
        bytes: &[u8],
    ) -> Result<(Self, Vec<OutgoingMessage>), ProtocolError> {
        match self {
            Self::AwaitingHello(state) => {
                let (next, out) = state.handle(from, bytes)?;
                Ok((Self::AwaitingBlinded(Box::new(next)), out))
            }
            Self::AwaitingBlinded(state) => Ok(match state.handle(from, bytes)? {
                (ServerBlindedNext::AwaitingBlinded(next), out) => (Self::AwaitingBlinded(next), out),
                (ServerBlindedNext::SendingTags(next), out) => (Self::SendingTags(next), out),
                (ServerBlindedNext::AwaitingMatchReport(next), out) => (Self::AwaitingMatchReport(next), out),
                (ServerBlindedNext::Done(output), out) => (Self::Done(output), out),
            }),
            Self::SendingTags(_) => {
                let got =
                    PsiMessage::from_bytes(bytes).map(|m| m.kind().name()).unwrap_or("undecodable message");
                Err(ProtocolError::UnexpectedMessage { state: "server sending tags", got })
            }
            Self::AwaitingMatchReport(state) => Ok(match state.handle(from, bytes)? {
                (ServerMatchReportNext::AwaitingMatchReport(next), out) => {
                    (Self::AwaitingMatchReport(next), out)
                }
                (ServerMatchReportNext::Done(output), out) => (Self::Done(output), out),
            }),
            Self::Done(_) => {
                let got =
                    PsiMessage::from_bytes(bytes).map(|m| m.kind().name()).unwrap_or("undecodable message");
                Err(ProtocolError::UnexpectedMessage { state: "server done", got })
            }
        }
    }

    /// The next message the server has to send without waiting for the client: a tag
    /// chunk, then ServerDone. `None` in every other state.
    pub fn next_outgoing(self) -> (Self, Option<OutgoingMessage>) {
        match self {
            Self::SendingTags(state) => {
                let (next, message) = state.next();
                let next = match next {
                    ServerSendingNext::SendingTags(state) => Self::SendingTags(state),
                    ServerSendingNext::AwaitingMatchReport(state) => Self::AwaitingMatchReport(state),
                    ServerSendingNext::Done(output) => Self::Done(output),
                };
                (next, Some(message))
            }
            other => (other, None),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done(_))
    }

    pub fn output(&self) -> Option<&ServerOutput> {
        match self {
            Self::Done(output) => Some(output),
            _ => None,
        }
    }

    pub fn into_output(self) -> Option<ServerOutput> {
        match self {
            Self::Done(output) => Some(output),
            _ => None,
        }
    }
}
