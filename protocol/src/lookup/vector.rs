//! Lookup vectors: a provider's padded contribution, their sum, the bit layout of
//! several providers' masks, and the chunked download of the sum.

use std::fmt;

use sha2::{Digest, Sha256};
use xmcredit_crypto::lookup::Width;
use xmcredit_crypto::{ContractId, Epoch, NodeId};

use super::messages::{LookupMessage, VectorChunk, MAX_VECTOR_CHUNK_ENTRIES};
use super::universe::Universe;
use crate::{ProtocolError, SessionBinding};

/// Domain-separation label of the vector digest.
pub const VECTOR_LABEL: &[u8] = b"xmcredit lookup vector v1";

/// What a vector is over: the contract and epoch (whose keys made the pads), the
/// universe (entry `i` is for the universe's entry `i`), and the output width.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VectorHeader {
    pub contract: ContractId,
    pub epoch: Epoch,
    pub universe_digest: [u8; 32],
    pub width: Width,
}

impl VectorHeader {
    pub fn new(contract: ContractId, epoch: Epoch, universe: &Universe, width: Width) -> Self {
        Self { contract, epoch, universe_digest: universe.digest(), width }
    }

    /// Refuses `other` when it differs, naming the first field.
    pub(crate) fn check(&self, other: &VectorHeader) -> Result<(), ProtocolError> {
        if self.contract != other.contract || self.epoch != other.epoch {
            return Err(ProtocolError::VectorMismatch {
                reason: format!(
                    "vector of contract {} epoch {}, this run is contract {} epoch {}",
                    other.contract, other.epoch, self.contract, self.epoch
                ),
            });
        }
        if self.universe_digest != other.universe_digest {
            return Err(ProtocolError::UniverseMismatch {
                expected: hex::encode(self.universe_digest),
                got: hex::encode(other.universe_digest),
            });
        }
        if self.width != other.width {
            return Err(ProtocolError::WidthMismatch {
                expected: self.width.bits(),
                got: other.width.bits(),
            });
        }
        Ok(())
    }
}

/// One w-bit value per universe entry: a provider's padded contribution `v_j`, or the
/// aggregate `V = Σ_j v_j mod 2^w` the querier downloads.
///
/// Packed encoding: each entry as `I2OSP(value, ceil(w/8))`, in universe order.
/// Digest:
///
/// ```text
/// SHA-256("xmcredit lookup vector v1" || I2OSP(len(contract), 2) || contract
///         || I2OSP(epoch, 8) || universe digest (32) || I2OSP(w, 1)
///         || I2OSP(count, 8) || packed entries)
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LookupVector {
    header: VectorHeader,
    values: Vec<u64>,
}

impl LookupVector {
    /// A vector of `values`, each below `2^w` (refused otherwise with
    /// [`xmcredit_crypto::CryptoError::ValueOutOfRange`]).
    pub fn new(header: VectorHeader, values: Vec<u64>) -> Result<Self, ProtocolError> {
        if let Some(&wide) = values.iter().find(|v| !header.width.fits(**v)) {
            header.width.encode_unsigned(wide)?;
        }
        Ok(Self { header, values })
    }

    /// The aggregate from a secure-aggregation sum of w-bit padded contributions: the
    /// mod-2^64 sum reduced mod 2^w (2^w divides 2^64, so the reduction is exact
    /// whatever wrapped).
    pub fn from_aggregate(header: VectorHeader, sum: Vec<u64>) -> Self {
        let width = header.width;
        Self { header, values: sum.into_iter().map(|v| width.reduce(v)).collect() }
    }

    pub fn header(&self) -> &VectorHeader {
        &self.header
    }

    pub fn width(&self) -> Width {
        self.header.width
    }

    pub fn values(&self) -> &[u64] {
        &self.values
    }

    pub fn into_values(self) -> Vec<u64> {
        self.values
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The packed entries (see the type's docs).
    pub fn packed(&self) -> Vec<u8> {
        let entry_len = self.header.width.entry_len();
        let mut out = Vec::with_capacity(self.values.len() * entry_len);
        for value in &self.values {
            out.extend_from_slice(&value.to_be_bytes()[8 - entry_len..]);
        }
        out
    }

    /// The vector digest (see the type's docs).
    pub fn digest(&self) -> [u8; 32] {
        digest_of(&self.header, &self.values)
    }

    /// The vector as VectorChunk messages of at most `max_entries` entries each (capped
    /// at [`MAX_VECTOR_CHUNK_ENTRIES`]), for a download bound to `binding`. Refuses a
    /// binding of another contract or epoch than the vector's.
    pub fn to_chunks(
        &self,
        binding: &SessionBinding,
        max_entries: usize,
    ) -> Result<Vec<Vec<u8>>, ProtocolError> {
        if binding.contract != self.header.contract || binding.epoch != self.header.epoch {
            return Err(ProtocolError::VectorMismatch {
                reason: format!(
                    "a vector of contract {} epoch {} sent under contract {} epoch {}",
                    self.header.contract, self.header.epoch, binding.contract, binding.epoch
                ),
            });
        }
        let size = max_entries.clamp(1, MAX_VECTOR_CHUNK_ENTRIES);
        let vector_digest = self.digest();
        let chunks = self
            .values
            .chunks(size)
            .enumerate()
            .map(|(i, entries)| {
                LookupMessage::VectorChunk(VectorChunk {
                    binding: binding.clone(),
                    universe_digest: self.header.universe_digest,
                    width: self.header.width,
                    total_entries: self.values.len() as u64,
                    vector_digest,
                    first_index: (i * size) as u64,
                    entries: entries.to_vec(),
                })
                .to_bytes()
            })
            .collect();
        Ok(chunks)
    }
}

impl fmt::Debug for LookupVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LookupVector({} entries of {}, contract {}, epoch {}, universe {})",
            self.values.len(),
            self.header.width,
            self.header.contract,
            self.header.epoch,
            hex::encode(self.header.universe_digest)
        )
    }
}

fn digest_of(header: &VectorHeader, values: &[u64]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(VECTOR_LABEL);
    hasher.update((header.contract.as_bytes().len() as u16).to_be_bytes());
    hasher.update(header.contract.as_bytes());
    hasher.update(header.epoch.to_be_bytes());
    hasher.update(header.universe_digest);
    hasher.update([header.width.bits() as u8]);
    hasher.update((values.len() as u64).to_be_bytes());
    let entry_len = header.width.entry_len();
    for value in values {
        hasher.update(&value.to_be_bytes()[8 - entry_len..]);
    }
    hasher.finalize().into()
}

/// `V = Σ_j v_j mod 2^w`, in memory (the node sums with secure aggregation instead, so
/// that no one sees a single provider's vector). Refuses an empty list and vectors of
/// different headers or lengths.
pub fn combine(vectors: &[LookupVector]) -> Result<LookupVector, ProtocolError> {
    let Some(first) = vectors.first() else {
        return Err(ProtocolError::VectorMismatch { reason: "no vectors to combine".into() });
    };
    let width = first.header.width;
    let mut values = first.values.clone();
    for vector in &vectors[1..] {
        first.header.check(&vector.header)?;
        if vector.values.len() != values.len() {
            return Err(ProtocolError::VectorMismatch {
                reason: format!("vectors of {} and {} entries", values.len(), vector.values.len()),
            });
        }
        for (sum, v) in values.iter_mut().zip(&vector.values) {
            *sum = width.add(*sum, *v);
        }
    }
    Ok(LookupVector { header: first.header.clone(), values })
}

// ---- Bit masks of several providers ----------------------------------------------------

/// Bit offsets of the providers' masks in a bitmask lookup: providers ordered by node
/// id (ascending, as `NodeId` sorts: bytewise), each at the sum of the rule counts of
/// the providers before it. Provider `j`'s contribution is `mask_j << offset_j`, where
/// bit `i` of `mask_j` is its rule `i` (`Scorecard::evaluate_mask`); the sum of
/// contributions is then the concatenation of the masks, with no carries.
///
/// Returns `(node, offset)` in node order. Repeated nodes are refused.
pub fn bit_offsets(rule_counts: &[(NodeId, u32)]) -> Result<Vec<(NodeId, u32)>, ProtocolError> {
    let mut sorted: Vec<&(NodeId, u32)> = rule_counts.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(sorted.len());
    let mut offset = 0u32;
    for (i, (node, count)) in sorted.iter().enumerate() {
        if i > 0 && sorted[i - 1].0 == *node {
            return Err(ProtocolError::BitLayout { reason: format!("provider {node} is listed twice") });
        }
        out.push((node.clone(), offset));
        offset = offset.saturating_add(*count);
    }
    Ok(out)
}

/// The bit layout of a bitmask lookup (see [`bit_offsets`]), checked against the width.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitLayout {
    /// (node, offset, rule count), in node order.
    providers: Vec<(NodeId, u32, u32)>,
    width: Width,
}

impl BitLayout {
    /// Refuses a total of rule counts above the width.
    pub fn new(rule_counts: &[(NodeId, u32)], width: Width) -> Result<Self, ProtocolError> {
        let offsets = bit_offsets(rule_counts)?;
        let total: u64 = rule_counts.iter().map(|(_, c)| u64::from(*c)).sum();
        if total > u64::from(width.bits()) {
            return Err(ProtocolError::BitLayout {
                reason: format!("{total} rules need {total} bits, the width is {width}"),
            });
        }
        let providers = offsets
            .into_iter()
            .map(|(node, offset)| {
                let count = rule_counts.iter().find(|(n, _)| *n == node).map_or(0, |(_, c)| *c);
                (node, offset, count)
            })
            .collect();
        Ok(Self { providers, width })
    }

    pub fn offset(&self, node: &NodeId) -> Option<u32> {
        self.entry(node).map(|(_, offset, _)| *offset)
    }

    /// Provider `node`'s contribution `g = mask << offset`, refusing a mask with bits
    /// beyond its rule count or a node outside the layout.
    pub fn place(&self, node: &NodeId, mask: u64) -> Result<u64, ProtocolError> {
        let (_, offset, count) = self.entry(node).ok_or_else(|| ProtocolError::BitLayout {
            reason: format!("{node} is not a provider of the layout"),
        })?;
        if *count < 64 && mask >> count != 0 {
            return Err(ProtocolError::BitLayout {
                reason: format!("mask {mask:#x} of {node} is wider than its {count} rules"),
            });
        }
        Ok(self.width.reduce(mask << offset))
    }

    /// Provider `node`'s mask out of a looked-up value.
    pub fn extract(&self, node: &NodeId, value: u64) -> Option<u64> {
        let (_, offset, count) = self.entry(node)?;
        let mask = if *count >= 64 { u64::MAX } else { (1u64 << count) - 1 };
        Some((value >> offset) & mask)
    }

    fn entry(&self, node: &NodeId) -> Option<&(NodeId, u32, u32)> {
        self.providers.iter().find(|(n, _, _)| n == node)
    }
}

// ---- Download ---------------------------------------------------------------------------

/// The querier's download of the aggregate vector: VectorChunks from one sender, in
/// order, each repeating the header and digest, the digest checked over the whole
/// vector at the end.
#[derive(Debug)]
pub struct VectorDownload {
    binding: SessionBinding,
    sender: NodeId,
    header: VectorHeader,
    total: u64,
    digest: Option<[u8; 32]>,
    values: Vec<u64>,
}

/// Where a download goes after a chunk.
#[derive(Debug)]
pub enum DownloadNext {
    More(VectorDownload),
    Done(LookupVector),
}

impl VectorDownload {
    const STATE: &'static str = "querier downloading the vector";

    /// Expects the vector of `header` over `universe_len` entries from `sender`, under
    /// `binding` (whose contract and epoch must be the header's).
    pub fn new(
        binding: SessionBinding,
        sender: NodeId,
        header: VectorHeader,
        universe_len: usize,
    ) -> Result<Self, ProtocolError> {
        if binding.contract != header.contract || binding.epoch != header.epoch {
            return Err(ProtocolError::VectorMismatch {
                reason: format!(
                    "a download under contract {} epoch {} for a vector of contract {} epoch {}",
                    binding.contract, binding.epoch, header.contract, header.epoch
                ),
            });
        }
        Ok(Self { binding, sender, header, total: universe_len as u64, digest: None, values: Vec::new() })
    }

    /// Takes the next chunk: refuses another sender, binding, universe, width, length or
    /// digest than the first chunk's and the expected, and a chunk that does not start
    /// where the last one ended (replayed, skipped or reordered). After the last entry,
    /// checks the digest over the whole vector.
    pub fn handle(mut self, from: &NodeId, bytes: &[u8]) -> Result<DownloadNext, ProtocolError> {
        if *from != self.sender {
            return Err(ProtocolError::UnexpectedSender {
                expected: self.sender.to_string(),
                got: from.clone(),
            });
        }
        let message = LookupMessage::from_bytes(bytes)?;
        self.binding.check(message.binding())?;
        let chunk = match message {
            LookupMessage::VectorChunk(chunk) => chunk,
            other => {
                return Err(ProtocolError::UnexpectedMessage { state: Self::STATE, got: other.kind().name() })
            }
        };
        let got = VectorHeader {
            contract: chunk.binding.contract.clone(),
            epoch: chunk.binding.epoch,
            universe_digest: chunk.universe_digest,
            width: chunk.width,
        };
        self.header.check(&got)?;
        if chunk.total_entries != self.total {
            return Err(ProtocolError::VectorMismatch {
                reason: format!(
                    "a vector of {} entries for a universe of {}",
                    chunk.total_entries, self.total
                ),
            });
        }
        match self.digest {
            None => self.digest = Some(chunk.vector_digest),
            Some(digest) if digest != chunk.vector_digest => {
                return Err(ProtocolError::VectorMismatch {
                    reason: "a chunk of another vector (its digest differs from the first chunk's)".into(),
                })
            }
            Some(_) => {}
        }
        let received = self.values.len() as u64;
        if chunk.first_index != received {
            return Err(ProtocolError::VectorMismatch {
                reason: format!("chunk starts at entry {}, expected entry {received}", chunk.first_index),
            });
        }
        // The decoder refused chunks running past total_entries.
        self.values.extend_from_slice(&chunk.entries);
        if (self.values.len() as u64) < self.total {
            return Ok(DownloadNext::More(self));
        }
        let declared = self.digest.unwrap_or_default();
        let vector = LookupVector { header: self.header, values: self.values };
        if vector.digest() != declared {
            return Err(ProtocolError::VectorMismatch {
                reason: "the entries do not hash to the vector digest the chunks declare".into(),
            });
        }
        Ok(DownloadNext::Done(vector))
    }
}
