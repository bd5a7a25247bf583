//! Who takes part in a secure aggregation and with what parameters, checked once before
//! any key is made (Bonawitz et al. 2017, §4 and Figure 4, "Setup": the users and their
//! order, the threshold `t`, and an input domain large enough that the sum cannot wrap).

use std::collections::BTreeMap;

use xmcredit_crypto::noise::{skellam_tail_bound, Skellam};
use xmcredit_crypto::sign::IdentityPublicKey;
use xmcredit_crypto::NodeId;

use crate::{ProtocolError, SessionBinding};

/// Most contributors one session may have. Counts travel as u16 on the wire and every
/// contributor does O(n) key agreements and signature checks, so this is far above any
/// alliance of banks while keeping a hostile count harmless.
pub const MAX_PARTIES: usize = 1024;

/// Longest vector one session may aggregate (2^24 elements, 128 MiB per masked input):
/// room above the ~2^20 registered entities of a city universe, low enough that a
/// message stays a size a node can hold in memory.
pub const MAX_VECTOR_LEN: usize = 1 << 24;

/// A party's 1-based Shamir evaluation point, fixed by its position in the contract's
/// party order. Only a [`Roster`] makes one, so an index always names a party.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartyIndex(u32);

impl PartyIndex {
    /// The Shamir evaluation point (1-based).
    pub fn get(self) -> u32 {
        self.0
    }

    /// Position in the roster's party list (0-based).
    fn position(self) -> usize {
        self.0 as usize - 1
    }
}

/// One contributor: its node id and the Ed25519 key that signs its advertisements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Party {
    pub id: NodeId,
    pub identity: IdentityPublicKey,
}

/// The ordered contributors of a session, the threshold `t` and the coordinator.
///
/// The coordinator may or may not be a contributor too; when it is, its node drives
/// both roles and hands its own contributor's messages to its coordinator.
#[derive(Clone, Debug)]
pub struct Roster {
    parties: Vec<Party>,
    by_id: BTreeMap<NodeId, PartyIndex>,
    threshold: usize,
    coordinator: NodeId,
}

impl Roster {
    /// Checks and fixes the party order (the contract's), which fixes Shamir indices.
    ///
    /// Refuses fewer than 2 parties, more than [`MAX_PARTIES`], a repeated node id or
    /// identity key, and a threshold outside `2..=n`: with `t = 1` every share would be
    /// the secret itself, so each peer would receive the mask key in the clear.
    pub fn new(
        parties: Vec<(NodeId, IdentityPublicKey)>,
        threshold: usize,
        coordinator: NodeId,
    ) -> Result<Self, ProtocolError> {
        let n = parties.len();
        let invalid = |reason: String| ProtocolError::InvalidSetup { reason };
        if n < 2 {
            return Err(invalid(format!("{n} contributors; secure aggregation needs at least 2")));
        }
        if n > MAX_PARTIES {
            return Err(invalid(format!("{n} contributors; at most {MAX_PARTIES} are supported")));
        }
        if threshold < 2 || threshold > n {
            return Err(invalid(format!("threshold {threshold} must be between 2 and n = {n}")));
        }
        let mut by_id = BTreeMap::new();
        let mut keys = Vec::with_capacity(n);
        for (position, (id, identity)) in parties.iter().enumerate() {
            // position < MAX_PARTIES, so the 1-based index fits a u32.
            let index = PartyIndex(position as u32 + 1);
            if by_id.insert(id.clone(), index).is_some() {
                return Err(invalid(format!("{id} is listed twice")));
            }
            if keys.contains(&identity.to_bytes()) {
                return Err(invalid(format!("{id} has the same identity key as another party")));
            }
            keys.push(identity.to_bytes());
        }
        let parties = parties.into_iter().map(|(id, identity)| Party { id, identity }).collect();
        Ok(Self { parties, by_id, threshold, coordinator })
    }

    /// Number of contributors `n`.
    pub fn len(&self) -> usize {
        self.parties.len()
    }

    /// Always false: a roster has at least two parties.
    pub fn is_empty(&self) -> bool {
        self.parties.is_empty()
    }

    /// The threshold `t`: shares needed to reconstruct, and contributors needed in every
    /// round.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    pub fn coordinator(&self) -> &NodeId {
        &self.coordinator
    }

    /// The parties in contract order (index 1 first).
    pub fn parties(&self) -> &[Party] {
        &self.parties
    }

    /// The party's 1-based Shamir index, or `None` for a node outside the roster.
    pub fn index_of(&self, id: &NodeId) -> Option<PartyIndex> {
        self.by_id.get(id).copied()
    }

    /// Like [`Roster::index_of`], refusing a stranger with
    /// [`ProtocolError::UnknownParticipant`].
    pub(crate) fn require(&self, id: &NodeId) -> Result<PartyIndex, ProtocolError> {
        self.index_of(id).ok_or_else(|| ProtocolError::UnknownParticipant { who: id.clone() })
    }

    pub(crate) fn party(&self, index: PartyIndex) -> &Party {
        // Indices come only from this roster (`PartyIndex` has no public constructor),
        // and a session's states share one roster, so the position is in range.
        &self.parties[index.position()]
    }

    pub(crate) fn id(&self, index: PartyIndex) -> &NodeId {
        &self.party(index).id
    }

    pub(crate) fn all_indices(&self) -> impl Iterator<Item = PartyIndex> + '_ {
        (1..=self.parties.len() as u32).map(PartyIndex)
    }
}

/// The shape of the aggregated vector: its length and the declared bit width of every
/// element (fixed-point values in `0 ..= 2^bits - 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorSpec {
    pub len: usize,
    pub bits: u32,
}

impl VectorSpec {
    /// Largest value one contributor may put in an element: `2^bits - 1`.
    pub fn max_element(&self) -> u64 {
        ((1u128 << self.bits) - 1) as u64
    }
}

/// Distributed Skellam noise on a session's sum (issue 10): every contributor adds its
/// share to its input before masking, so the unmasked sum carries the total.
///
/// The contract declares a total variance `V` for the sum. Dropouts take shares out of
/// the sum, so each contributor adds `V / fewest`, `fewest` being the fewest inputs a sum
/// may contain (the threshold, or the contract's minimum number of contributors if
/// higher): any sum the contributors let be unmasked carries at least `V`, and the sum
/// of all `n` carries `V · n / fewest`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SessionNoise {
    share: Skellam,
    /// The decoded total noise stays within ±bound (except with probability < 2^-100).
    bound: u64,
}

impl SessionNoise {
    /// Shares of a total `variance` for a session of `n` contributors of which at least
    /// `fewest` are summed.
    pub fn skellam(variance: u64, fewest: usize, n: usize) -> Result<Self, ProtocolError> {
        let invalid = |reason: String| ProtocolError::InvalidSetup { reason };
        if fewest == 0 || fewest > n {
            return Err(invalid(format!("noise spread over {fewest} of {n} contributors")));
        }
        let share = Skellam::with_variance(variance as f64 / fewest as f64)
            .map_err(|e| invalid(format!("noise: {e}")))?;
        // The largest total: all n shares, n·V/fewest <= n·V.
        let bound = skellam_tail_bound(variance.saturating_mul(n as u64));
        Ok(Self { share, bound })
    }

    /// What each contributor adds to every entry.
    pub fn share(&self) -> Skellam {
        self.share
    }

    pub fn bound(&self) -> u64 {
        self.bound
    }
}

/// Everything both roles agree on before round 0: the session binding, the roster and
/// the vector shape. Made only by [`Setup::new`], so every state can rely on its checks.
#[derive(Clone, Debug)]
pub struct Setup {
    binding: SessionBinding,
    roster: Roster,
    vector: VectorSpec,
    noise: Option<SessionNoise>,
}

impl Setup {
    /// Refuses a vector length outside `1..=MAX_VECTOR_LEN`, a width outside `1..=64`,
    /// and ([`ProtocolError::SumCouldWrap`]) any width at which `n` contributors' maximal
    /// elements could sum past `2^64 - 1`: the protocol sums mod 2^64, and only this
    /// bound makes that sum the exact one.
    pub fn new(binding: SessionBinding, roster: Roster, vector: VectorSpec) -> Result<Self, ProtocolError> {
        if vector.len == 0 || vector.len > MAX_VECTOR_LEN {
            return Err(ProtocolError::InvalidSetup {
                reason: format!("vector length {} is outside 1..={MAX_VECTOR_LEN}", vector.len),
            });
        }
        if vector.bits == 0 || vector.bits > 64 {
            return Err(ProtocolError::InvalidSetup {
                reason: format!("bit width {} is outside 1..=64", vector.bits),
            });
        }
        let n = roster.len();
        let worst_sum = n as u128 * ((1u128 << vector.bits) - 1);
        if worst_sum > u64::MAX as u128 {
            return Err(ProtocolError::SumCouldWrap { n, bits: vector.bits });
        }
        Ok(Self { binding, roster, vector, noise: None })
    }

    /// The session with distributed noise. Sums are then decoded as signed 64-bit
    /// integers, so refuses ([`ProtocolError::SumCouldWrap`]) a width at which `n` maximal
    /// inputs plus the noise's bound could pass `2^63 - 1`.
    pub fn with_noise(self, noise: SessionNoise) -> Result<Self, ProtocolError> {
        let n = self.roster.len();
        let worst = n as u128 * u128::from(self.vector.max_element()) + u128::from(noise.bound);
        if worst > i64::MAX as u128 {
            return Err(ProtocolError::SumCouldWrap { n, bits: self.vector.bits });
        }
        Ok(Self { noise: Some(noise), ..self })
    }

    pub fn noise(&self) -> Option<SessionNoise> {
        self.noise
    }

    pub fn binding(&self) -> &SessionBinding {
        &self.binding
    }

    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    pub fn vector(&self) -> VectorSpec {
        self.vector
    }

    pub(crate) fn threshold(&self) -> usize {
        self.roster.threshold
    }
}
