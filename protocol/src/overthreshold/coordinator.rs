//! The coordinator: collects every contributor's tags, counts each tag once per bank,
//! answers each bank with its own items at or over the threshold, and keeps the
//! histogram and the pairwise overlaps for itself.

use std::collections::BTreeMap;
use std::fmt;

use xmcredit_crypto::set::Tag;
use xmcredit_crypto::NodeId;

use super::messages::{Announce, OverthresholdMessage, ResultChunk, ResultEntry, TagChunk};
use super::{check_chunk_size, unexpected, OutgoingMessage, Parameters, Traffic, PROTOCOL};
use crate::chunks::{check_chunk, check_seq};
use crate::{ProtocolError, SessionBinding};

/// Everything the coordinator's session is set up with.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub binding: SessionBinding,
    pub parameters: Parameters,
    /// Tags per TagChunk and entries per ResultChunk, `1..=MAX_CHUNK_ELEMENTS`
    /// (announced to every contributor).
    pub chunk_size: u32,
}

/// The number of tags two banks share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedPair {
    pub a: NodeId,
    pub b: NodeId,
    pub shared: u64,
}

/// What the coordinator learns and outputs (the contract grants it `histogram`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorOutput {
    /// Contributors whose tag sets were counted, in the parameters' order.
    pub counted: Vec<NodeId>,
    /// Contributors whose sets did not arrive whole or were refused, in the parameters'
    /// order.
    pub missing: Vec<NodeId>,
    /// `n_B` of each counted contributor.
    pub set_sizes: Vec<(NodeId, u64)>,
    /// Multiplicity `m` → number of distinct tags held by exactly `m` counted banks
    /// (`m` from 1; multiplicities no tag has are left out).
    pub histogram: BTreeMap<u16, u64>,
    /// For every pair of counted banks (`a` before `b` in the parameters' order), the
    /// number of tags both hold, zeros included.
    pub pairs: Vec<SharedPair>,
    pub traffic: Traffic,
}

/// One contributor's tag stream as it arrives.
#[derive(Debug)]
enum BankTags {
    Waiting,
    Receiving {
        total: u64,
        next_seq: u32,
        tags: Vec<Tag>,
    },
    Complete {
        tags: Vec<Tag>,
    },
    /// Refused on content (a repeat, not ascending, a changed or excessive total):
    /// dropped, named missing at close.
    Refused,
}

/// The coordinator collecting tag sets.
pub struct CoordinatorCollecting {
    binding: SessionBinding,
    params: Parameters,
    chunk_size: u32,
    tag_len: u8,
    /// In the parameters' contributor order.
    banks: Vec<BankTags>,
    traffic: Traffic,
}

impl CoordinatorCollecting {
    /// Starts the session: Announce (tag bits, chunk size) to every contributor.
    pub fn new(config: CoordinatorConfig) -> Result<(Self, Vec<OutgoingMessage>), ProtocolError> {
        let CoordinatorConfig { binding, parameters: params, chunk_size } = config;
        check_chunk_size(chunk_size)?;
        let tag_bits = params.tag_bits();
        let mut traffic = Traffic::default();
        let mut out = Vec::with_capacity(params.contributors().len());
        let announce = OverthresholdMessage::Announce(Announce {
            binding: binding.clone(),
            // At most MAX_TAG_BITS = 128.
            tag_bits: u16::try_from(tag_bits).unwrap_or(u16::MAX),
            chunk_size,
        });
        for contributor in params.contributors() {
            traffic.send(contributor, &announce, &mut out);
        }
        let banks = params.contributors().iter().map(|_| BankTags::Waiting).collect();
        let tag_len = u8::try_from(tag_bits / 8).unwrap_or(u8::MAX);
        Ok((Self { binding, params, chunk_size, tag_len, banks, traffic }, out))
    }

    /// Takes one TagChunk. A refused message leaves the state unchanged (one bank's bad
    /// or late frame does not end the session), except that a set refused on its
    /// content ([`ProtocolError::BadTagSet`], a total above the maximum, a changed
    /// total, another tag length) is dropped and its contributor named missing at close.
    /// A chunk from a contributor whose set is complete is
    /// [`ProtocolError::DuplicateTagSet`].
    pub fn receive(&mut self, from: &NodeId, bytes: &[u8]) -> Result<(), ProtocolError> {
        const STATE: &str = "coordinator collecting tag sets";
        let Some(bank) = self.params.contributors().iter().position(|c| c == from) else {
            return Err(ProtocolError::NotAParticipant { who: from.clone(), role: "contributor" });
        };
        let message = OverthresholdMessage::from_bytes(bytes)?;
        self.binding.check(message.binding())?;
        let chunk: TagChunk = match message {
            OverthresholdMessage::TagChunk(chunk) => chunk,
            other => return Err(unexpected(STATE, &other)),
        };
        let (total, next_seq, mut tags) = match std::mem::replace(&mut self.banks[bank], BankTags::Waiting) {
            BankTags::Waiting => (chunk.total_tags, 0, Vec::new()),
            BankTags::Receiving { total, next_seq, tags } => (total, next_seq, tags),
            complete @ BankTags::Complete { .. } => {
                self.banks[bank] = complete;
                return Err(ProtocolError::DuplicateTagSet { from: from.clone() });
            }
            BankTags::Refused => {
                self.banks[bank] = BankTags::Refused;
                return Err(ProtocolError::UnexpectedMessage {
                    state: "coordinator: this contributor's set was refused",
                    got: "overthreshold TagChunk",
                });
            }
        };
        let restore = |banks: &mut Vec<BankTags>, tags: Vec<Tag>| {
            banks[bank] =
                if next_seq == 0 { BankTags::Waiting } else { BankTags::Receiving { total, next_seq, tags } };
        };
        // Replays and skips: state unchanged.
        if let Err(error) = check_seq(PROTOCOL, "TagChunk", next_seq, chunk.seq) {
            restore(&mut self.banks, tags);
            return Err(error);
        }
        self.traffic.bytes_received += bytes.len() as u64;
        match self.absorb(from, total, &mut tags, &chunk) {
            Ok(after) if after == total => self.banks[bank] = BankTags::Complete { tags },
            Ok(_) => self.banks[bank] = BankTags::Receiving { total, next_seq: next_seq + 1, tags },
            Err(error) => {
                self.banks[bank] = BankTags::Refused;
                return Err(error);
            }
        }
        Ok(())
    }

    /// Checks one chunk's content and appends its tags; returns the tags received.
    fn absorb(
        &self,
        from: &NodeId,
        total: u64,
        tags: &mut Vec<Tag>,
        chunk: &TagChunk,
    ) -> Result<u64, ProtocolError> {
        if chunk.tag_len != self.tag_len {
            return Err(ProtocolError::TagLengthMismatch {
                expected_bits: u32::from(self.tag_len) * 8,
                got_bits: u32::from(chunk.tag_len) * 8,
            });
        }
        if chunk.total_tags != total {
            return Err(ProtocolError::BadTagSet {
                from: from.clone(),
                position: tags.len() as u64,
                reason: "the total differs from the one chunk 0 declared",
            });
        }
        if total > self.params.max_set_size() {
            return Err(ProtocolError::SetTooLarge {
                whose: "contributor",
                got: total,
                max: self.params.max_set_size(),
            });
        }
        let after = check_chunk(
            PROTOCOL,
            "tags",
            total,
            tags.len() as u64,
            self.chunk_size,
            chunk.seq,
            chunk.tags.len(),
        )?;
        for tag in &chunk.tags {
            if let Some(last) = tags.last() {
                if tag <= last {
                    let reason =
                        if tag == last { "a tag is repeated" } else { "tags are not in ascending order" };
                    return Err(ProtocolError::BadTagSet {
                        from: from.clone(),
                        position: tags.len() as u64,
                        reason,
                    });
                }
            }
            tags.push(*tag);
        }
        Ok(after)
    }

    /// Whether every contributor's set is complete (the node may close at once).
    pub fn is_complete(&self) -> bool {
        self.banks.iter().all(|b| matches!(b, BankTags::Complete { .. }))
    }

    /// Contributors whose sets are not complete (not arrived, partial or refused).
    pub fn missing(&self) -> Vec<NodeId> {
        self.params
            .contributors()
            .iter()
            .zip(&self.banks)
            .filter(|(_, b)| !matches!(b, BankTags::Complete { .. }))
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Counts and answers. Called when every set is in ([`Self::is_complete`]) or when
    /// the node's timer fires; incomplete sets are left out and their contributors named
    /// in the output. Fewer complete sets than `min_contributors` aborts with
    /// [`ProtocolError::TooFewContributors`] and nothing is sent.
    pub fn close(self) -> Result<(CoordinatorOutput, Vec<OutgoingMessage>), ProtocolError> {
        let Self { binding, params, chunk_size, banks, mut traffic, .. } = self;
        let missing: Vec<NodeId> = params
            .contributors()
            .iter()
            .zip(&banks)
            .filter(|(_, b)| !matches!(b, BankTags::Complete { .. }))
            .map(|(c, _)| c.clone())
            .collect();
        let counted: Vec<(NodeId, Vec<Tag>)> = params
            .contributors()
            .iter()
            .zip(banks)
            .filter_map(|(c, b)| match b {
                BankTags::Complete { tags } => Some((c.clone(), tags)),
                _ => None,
            })
            .collect();
        let min = params.min_contributors() as usize;
        if counted.len() < min {
            let missing = missing.iter().map(NodeId::to_string).collect::<Vec<_>>().join(", ");
            return Err(ProtocolError::TooFewContributors { got: counted.len(), min, missing });
        }

        // Every (tag, bank, position), sorted by tag: equal tags sit together, and within
        // a bank positions come out ascending because each bank's tags are sorted.
        let mut all: Vec<(Tag, u16, u64)> = Vec::with_capacity(counted.iter().map(|(_, t)| t.len()).sum());
        for (bank, (_, tags)) in counted.iter().enumerate() {
            // At most MAX_CONTRIBUTORS banks.
            let bank = u16::try_from(bank).unwrap_or(u16::MAX);
            all.extend(tags.iter().enumerate().map(|(position, tag)| (*tag, bank, position as u64)));
        }
        all.sort_unstable();
        let banks = counted.len();
        let threshold = params.threshold();
        let mut histogram: BTreeMap<u16, u64> = BTreeMap::new();
        let mut shared = vec![0u64; banks * banks];
        let mut results: Vec<Vec<ResultEntry>> = vec![Vec::new(); banks];
        for group in all.chunk_by(|a, b| a.0 == b.0) {
            // A bank's tags are distinct (checked on arrival), so the group has one entry
            // per bank holding the tag.
            let multiplicity = u16::try_from(group.len()).unwrap_or(u16::MAX);
            *histogram.entry(multiplicity).or_default() += 1;
            for (i, (_, a, _)) in group.iter().enumerate() {
                for (_, b, _) in &group[i + 1..] {
                    shared[usize::from(*a) * banks + usize::from(*b)] += 1;
                }
            }
            if u32::from(multiplicity) >= threshold {
                for (_, bank, position) in group {
                    results[usize::from(*bank)].push(ResultEntry { position: *position, multiplicity });
                }
            }
        }
        let mut pairs = Vec::with_capacity(banks * banks.saturating_sub(1) / 2);
        for a in 0..banks {
            for b in a + 1..banks {
                // Banks are added in order, so a group lists a lower bank index first.
                let count = shared[a * banks + b] + shared[b * banks + a];
                pairs.push(SharedPair { a: counted[a].0.clone(), b: counted[b].0.clone(), shared: count });
            }
        }

        let contributors = u16::try_from(banks).unwrap_or(u16::MAX);
        let mut out = Vec::new();
        for ((node, _), entries) in counted.iter().zip(results) {
            let total_matches = entries.len() as u64;
            let mut chunks: Vec<&[ResultEntry]> = entries.chunks(chunk_size as usize).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            for (seq, chunk) in chunks.into_iter().enumerate() {
                let message = ResultChunk {
                    binding: binding.clone(),
                    seq: u32::try_from(seq).unwrap_or(u32::MAX),
                    contributors,
                    total_matches,
                    entries: chunk.to_vec(),
                };
                traffic.send(node, &OverthresholdMessage::ResultChunk(message), &mut out);
            }
        }
        let set_sizes = counted.iter().map(|(node, tags)| (node.clone(), tags.len() as u64)).collect();
        let output = CoordinatorOutput {
            counted: counted.into_iter().map(|(node, _)| node).collect(),
            missing,
            set_sizes,
            histogram,
            pairs,
            traffic,
        };
        Ok((output, out))
    }
}

impl fmt::Debug for CoordinatorCollecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordinatorCollecting")
            .field("binding", &self.binding)
            .field("contributors", &self.params.contributors())
            .field("missing", &self.missing())
            .finish_non_exhaustive()
    }
}
