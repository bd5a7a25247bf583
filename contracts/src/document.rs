//! The contract document: what people write (TOML or JSON), what every party signs
//! (its canonical bytes) and what every node reads before it takes part.
//!
//! The serde shape of these types *is* the document model; its canonical encoding is
//! [`crate::canonical`] applied to it after [`Contract::normalize`]. Field names are
//! fixed by the `#[serde]` attributes here and pinned by the golden files under
//! `samples/`, so a rename in Rust cannot silently change what is signed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use xmcredit_crypto::sign::IdentityPublicKey;
use xmcredit_crypto::{ContractId, NodeId};

use crate::canonical::{self, utf16_cmp};
use crate::key::KeyKind;
use crate::scorecard::{Constant, Rule};
use crate::{serde_hex, time, ContractError};

/// A contract: which computation may run, between whom, over what data, with which
/// limits, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub id: ContractId,
    /// Starts at 1; a changed contract is a new version, signed anew.
    pub version: u32,
    /// Free text, any language (信易贷 ...).
    pub purpose: String,
    /// Unix seconds; valid from this second on.
    #[serde(deserialize_with = "time::deserialize")]
    pub not_before: u64,
    /// Unix seconds; valid up to and including this second.
    #[serde(deserialize_with = "time::deserialize")]
    pub not_after: u64,
    /// Length of an epoch; epoch e covers `[not_before + e·epoch_seconds, +epoch_seconds)`.
    pub epoch_seconds: u64,
    pub computation: Computation,
    pub parties: Vec<Party>,
    pub datasets: Vec<DatasetUse>,
    pub receivers: Vec<Receiver>,
    pub limits: Limits,
}

/// The four computations (design.md, "The four computations") with their parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Computation {
    /// Two-party DH-OPRF PSI between a server and a client.
    Psi {
        output: PsiOutput,
        /// For `labels`: the server's columns attached (encrypted) to each of its tags.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        label_columns: Vec<String>,
        /// Output `cardinality` only: noise the server adds to the count (issue 10).
        /// Absent = the exact count.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        noise: Option<CountNoise>,
    },
    /// Duplicate detection: which of a contributor's items occur at `threshold` or more
    /// contributors, under an OPRF keyed by the committee. People may leave `threshold`
    /// out ([`DEFAULT_OVERTHRESHOLD`]); the canonical bytes always carry it.
    Overthreshold {
        #[serde(default = "default_overthreshold")]
        threshold: u32,
    },
    /// Secure aggregation of one vector per contributor: entry i is the sum of
    /// `value_column` over the contributor's rows whose `group_column` is `groups[i]`.
    Secagg {
        threshold: u32,
        value_column: String,
        group_column: String,
        groups: Vec<String>,
        /// Whose inputs must count for the sum to be unmasked (issue 10, the differencing
        /// defence). Absent = `threshold`.
        #[serde(default, skip_serializing_if = "SurvivorRule::is_threshold")]
        survivors: SurvivorRule,
        /// Distributed noise every contributor adds before masking (issue 10). Absent =
        /// exact sums.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        noise: Option<SumNoise>,
    },
    /// Private aggregate lookup: each provider scores every entity of the universe with
    /// its rules (or reads its value column); queriers learn the totals of their own
    /// applicants only.
    Lookup {
        output: LookupOutput,
        /// For output `value`: the decimal places of the summed units (2 = fen when the
        /// column is in yuan). Every provider converts its column to these units exactly.
        #[serde(default, skip_serializing_if = "is_zero")]
        scale: u8,
    },
}

/// The threshold of an overthreshold contract that does not name one: an item financed
/// at two banks is already a duplicate.
pub const DEFAULT_OVERTHRESHOLD: u32 = 2;

fn default_overthreshold() -> u32 {
    DEFAULT_OVERTHRESHOLD
}

/// Which contributors of a `secagg` contract must count for its sum to be unmasked.
/// Enforced by the contributors (the nodes that would leak), not the coordinator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SurvivorRule {
    /// Any `threshold` of them (Bonawitz et al.'s dropout tolerance). Two runs over
    /// different survivor sets (two epochs, say) differ by the inputs of the banks in
    /// one and not the other: a coordinator can subtract them.
    #[default]
    Threshold,
    /// Every named contributor: a run with a dropout aborts and unmasks nothing, so no
    /// two sums ever cover different sets of banks.
    All,
}

impl SurvivorRule {
    pub fn is_threshold(&self) -> bool {
        *self == Self::Threshold
    }
}

/// Noise on a `secagg` sum, declared by the contract and added by the contributors
/// (the nodes that would leak), each its share, before masking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "mechanism", rename_all = "lowercase", deny_unknown_fields)]
pub enum SumNoise {
    /// Skellam noise (Agarwal, Kairouz and Liu 2021): every entry of the unmasked sum
    /// carries noise of at least `variance` (integer units of the summed column), whatever
    /// dropout the contract tolerates. `sensitivity` is what one protected record can
    /// change an entry by (and a contributor's vector's L1 norm by); with it the node
    /// states the (ε, δ) the noise gives (ARCHITECTURE.md, "Privacy limits").
    Skellam { variance: u64, sensitivity: u64 },
}

impl SumNoise {
    /// The variance every unmasked entry carries at least.
    pub fn variance(&self) -> u64 {
        match self {
            Self::Skellam { variance, .. } => *variance,
        }
    }

    pub fn sensitivity(&self) -> u64 {
        match self {
            Self::Skellam { sensitivity, .. } => *sensitivity,
        }
    }
}

/// Noise on a `psi` cardinality, declared by the contract and added by the server (the
/// node that would leak): `xmcredit_crypto::count_noise` describes the mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "mechanism", rename_all = "snake_case", deny_unknown_fields)]
pub enum CountNoise {
    /// Discrete Laplace noise of ε = `epsilon_milli / 1000` per run, clamped so that a
    /// run is (ε, 2^-42)-differentially private for one entity. The server answers one
    /// noisy run per client and epoch: within an epoch the OPRF key is fixed, so a
    /// second run's fresh dummies would stand out against the stable real replies and
    /// give the exact count. A client's loss is ε per epoch.
    DiscreteLaplace { epsilon_milli: u32 },
}

impl CountNoise {
    pub fn epsilon_milli(&self) -> u32 {
        match self {
            Self::DiscreteLaplace { epsilon_milli, .. } => *epsilon_milli,
        }
    }
}

/// The output form of `psi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PsiOutput {
    /// The client learns the intersection.
    Intersection,
    /// The client learns only its size.
    Cardinality,
    /// Client and server both learn the intersection.
    Both,
    /// The client learns the server's labels of its matches.
    Labels,
}

/// What a `lookup` sums: points, (one provider) a bit mask of the rules that hold, or
/// each provider's value column (an outstanding balance, say), exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LookupOutput {
    Points,
    Bitmask,
    Value,
}

fn is_zero(scale: &u8) -> bool {
    *scale == 0
}

/// The kind of a computation, without its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputationKind {
    Psi,
    Overthreshold,
    Secagg,
    Lookup,
}

impl fmt::Display for ComputationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Psi => "psi",
            Self::Overthreshold => "overthreshold",
            Self::Secagg => "secagg",
            Self::Lookup => "lookup",
        })
    }
}

impl Computation {
    pub fn kind(&self) -> ComputationKind {
        match self {
            Self::Psi { .. } => ComputationKind::Psi,
            Self::Overthreshold { .. } => ComputationKind::Overthreshold,
            Self::Secagg { .. } => ComputationKind::Secagg,
            Self::Lookup { .. } => ComputationKind::Lookup,
        }
    }
}

/// A party: a node, the Ed25519 key it signs with, and its roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    pub node: NodeId,
    #[serde(with = "serde_hex::public_key")]
    pub public_key: IdentityPublicKey,
    pub roles: Vec<Role>,
    /// A display name (厦门市公共信用信息中心); not used by any check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What a party does in the computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Coordinator,
    Server,
    Client,
    Provider,
    Querier,
    Contributor,
    Committee,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coordinator => "coordinator",
            Self::Server => "server",
            Self::Client => "client",
            Self::Provider => "provider",
            Self::Querier => "querier",
            Self::Contributor => "contributor",
            Self::Committee => "committee",
        }
    }

    /// Roles that bring a dataset.
    pub fn holds_data(self) -> bool {
        matches!(self, Self::Server | Self::Client | Self::Provider | Self::Querier | Self::Contributor)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The dataset a party brings: its name, key column, the value columns it may use, and
/// (for a `lookup` provider) its contribution rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetUse {
    pub party: NodeId,
    pub name: String,
    /// The column whose values are the set elements / lookup keys.
    pub key: String,
    /// What the key holds, exactly as the dataset's schema must declare it (absent:
    /// entity codes). Both sides of a match name the same definition.
    #[serde(default, skip_serializing_if = "KeyKind::is_entity_code")]
    pub key_kind: KeyKind,
    /// The value columns the computation may read (may be empty: the key alone).
    pub columns: Vec<String>,
    /// Contribution rules, in order (bit i of a bit mask is rule i).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Which of the party's roles this dataset serves. Needed only by a party that
    /// brings two datasets: a lookup provider that also queries (its loan book as
    /// provider, its applicants as querier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// Who receives the output, and in what form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    pub node: NodeId,
    pub form: OutputForm,
}

/// The forms an output can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputForm {
    /// psi: the elements in common.
    Intersection,
    /// psi: how many elements are in common.
    Cardinality,
    /// psi: the server's labels of the client's matches.
    Labels,
    /// overthreshold: which of the receiver's own items are at or over the threshold.
    OwnMatches,
    /// overthreshold: how many items occur at 1, 2, ... contributors (coordinator).
    Histogram,
    /// secagg: the sum vector.
    Sum,
    /// lookup: the total (or bit mask) of each of the receiver's own applicants.
    Scores,
}

impl fmt::Display for OutputForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Intersection => "intersection",
            Self::Cardinality => "cardinality",
            Self::Labels => "labels",
            Self::OwnMatches => "own_matches",
            Self::Histogram => "histogram",
            Self::Sum => "sum",
            Self::Scores => "scores",
        })
    }
}

/// Privacy limits every node enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The smallest set each named party may bring (absent: 1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub min_set_size: BTreeMap<NodeId, u64>,
    /// Lookups a day: for `lookup` every querier is named; for `psi` the client; for
    /// `overthreshold` every contributor (each committee member counts the elements it
    /// evaluates for it each day).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lookups_per_day: BTreeMap<NodeId, u64>,
    /// The fewest contributors (providers, for `lookup`) a result may be computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_contributors: Option<u32>,
    /// Bits of each output entry (`secagg`, `lookup`): sums provably fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bits: Option<u32>,
    /// The largest set one contributor may bring to one `overthreshold` session
    /// (required there, absent elsewhere): it fixes the tag length every party derives,
    /// and bounds what one session can test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_set_size: Option<u64>,
}

impl Contract {
    /// Reads a contract people wrote in TOML; normalizes and checks it.
    pub fn from_toml_str(text: &str) -> Result<Contract, ContractError> {
        let mut contract: Contract =
            toml::from_str(text).map_err(|e| ContractError::Toml { message: e.to_string() })?;
        contract.normalize();
        contract.validate()?;
        Ok(contract)
    }

    /// Reads a contract people wrote in JSON (any formatting; duplicate keys, `null`,
    /// and non-integer numbers refused); normalizes and checks it.
    pub fn from_json_str(text: &str) -> Result<Contract, ContractError> {
        let value = canonical::decode_lenient(text.as_bytes())?;
        let bytes = canonical::encode(&value)?;
        let mut contract: Contract =
            serde_json::from_slice(&bytes).map_err(|e| ContractError::Json { message: e.to_string() })?;
        contract.normalize();
        contract.validate()?;
        Ok(contract)
    }

    /// Reads canonical bytes, refusing any that are not exactly
    /// `canonical_bytes(from_canonical_bytes(bytes))`: non-canonical JSON, unsorted sets,
    /// a default written out, a time written as text. Checks well-formedness.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Contract, ContractError> {
        canonical::decode(bytes)?;
        let contract: Contract =
            serde_json::from_slice(bytes).map_err(|e| ContractError::Json { message: e.to_string() })?;
        let again = contract.canonical_bytes()?;
        if again != bytes {
            let offset =
                again.iter().zip(bytes).position(|(a, b)| a != b).unwrap_or(again.len().min(bytes.len()));
            return Err(ContractError::NotCanonical(canonical::CanonicalError {
                location: format!("byte {offset}"),
                reason: "not the canonical form of the contract it decodes to (a set out of order, \
                         a default written out, or a time written as text)"
                    .into(),
            }));
        }
        contract.validate()?;
        Ok(contract)
    }

    /// The bytes every party signs (after the domain prefix, see
    /// [`crate::signing::CONTRACT_DOMAIN`]): canonical JSON of the normalized document.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, ContractError> {
        let mut normalized = self.clone();
        normalized.normalize();
        Ok(canonical::to_canonical_bytes(&normalized)?)
    }

    /// Sorts every array that is a set, so the order people wrote them in does not
    /// matter: parties by node, each party's roles, datasets by (party, name), each
    /// dataset's columns, receivers by node, and each `in` rule's constants. Arrays whose
    /// order means something stay as written: rules (bit positions), secagg groups
    /// (vector positions), psi label columns (label layout).
    pub fn normalize(&mut self) {
        self.parties.sort_by(|a, b| utf16_cmp(a.node.as_str(), b.node.as_str()));
        for party in &mut self.parties {
            party.roles.sort_by(|a, b| utf16_cmp(a.as_str(), b.as_str()));
        }
        self.datasets.sort_by(|a, b| {
            utf16_cmp(a.party.as_str(), b.party.as_str()).then_with(|| utf16_cmp(&a.name, &b.name))
        });
        for dataset in &mut self.datasets {
            dataset.columns.sort_by(|a, b| utf16_cmp(a, b));
            for rule in &mut dataset.rules {
                if let Constant::Many(items) = &mut rule.constant {
                    items.sort_by(|a, b| utf16_cmp(a, b));
                }
            }
        }
        self.receivers.sort_by(|a, b| utf16_cmp(a.node.as_str(), b.node.as_str()));
    }

    pub fn kind(&self) -> ComputationKind {
        self.computation.kind()
    }

    pub fn party(&self, node: &NodeId) -> Option<&Party> {
        self.parties.iter().find(|p| p.node == *node)
    }

    /// The parties holding `role`, in canonical (node id) order.
    pub fn parties_with(&self, role: Role) -> impl Iterator<Item = &Party> + '_ {
        self.parties.iter().filter(move |p| p.roles.contains(&role))
    }

    /// The dataset `party` brings, if any (a well-formed contract has at most one).
    /// The dataset `party` brings (the first, when it brings one per role).
    pub fn dataset_of(&self, party: &NodeId) -> Option<&DatasetUse> {
        self.datasets.iter().find(|d| d.party == *party)
    }

    /// The dataset `party` brings in `role`: the one marked with that role, else the one
    /// with no role marked.
    pub fn dataset_for(&self, party: &NodeId, role: Role) -> Option<&DatasetUse> {
        let mine = || self.datasets.iter().filter(move |d| d.party == *party);
        mine().find(|d| d.role == Some(role)).or_else(|| mine().find(|d| d.role.is_none()))
    }

    pub fn receiver(&self, node: &NodeId) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.node == *node)
    }
}
