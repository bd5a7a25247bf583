//! The audit log: one hash-chained record per run, refusal, contract action or import.
//!
//! Each record names what happened in its `event` ([`AuditEvent`]); records written
//! before events were recorded have none, and hash exactly as they did then (the field
//! is left out of the hashed bytes when absent).
//!
//! Record n carries `prev_hash` = the hash of record n−1 (32 zero bytes for record 0)
//! and its own `hash` = SHA-256(`AUDIT_DOMAIN` || canonical JSON of every field but
//! `hash`). [`verify_chain`] walks the log and names the first record that was altered,
//! removed or re-ordered. Editing the *last* record and recomputing its hash cannot be
//! seen from the log alone; [`verify_chain_with_head`] checks against a head (seq, hash)
//! kept elsewhere (a later record, a signed checkpoint, another node's copy).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xmcredit_crypto::{ContractId, NodeId};

use crate::canonical::{self, CanonicalError};
use crate::document::ComputationKind;
use crate::serde_hex;

/// The domain-separation prefix of a record's hash input.
pub const AUDIT_DOMAIN: &[u8] = b"xmcredit audit v1\n";
/// The `prev_hash` of record 0.
pub const GENESIS_PREV_HASH: [u8; 32] = [0; 32];

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase", deny_unknown_fields)]
pub enum Outcome {
    /// The run completed and its output went to the receivers.
    Ok,
    /// The node refused to take part (the reason is the check's error message).
    Refused { reason: String },
    /// The run started and failed (a peer misbehaved, a protocol error).
    Failed { reason: String },
    /// The run stopped before the end (a peer dropped, shutdown).
    Interrupted { reason: String },
}

/// What happened, so a reader need not guess it from the other fields (issue 15): a
/// proposal is not a PSI run with empty set sizes, a revocation is not a refused run.
/// Stored as an object whose `kind` names the variant, e.g.
/// `{"dataset":"loans","kind":"import","rows":10,"version":2}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuditEvent {
    /// This node took part in a run of the contract, as job `job` in role `role`
    /// (client, server, querier, provider, coordinator, contributor, member).
    Run { computation: ComputationKind, role: String, job: u64 },
    /// A contributor dropped out of a run this node coordinated, at `round`.
    Dropout { computation: ComputationKind, node: NodeId, round: String },
    /// This node proposed (and signed) the contract.
    Propose,
    /// A peer proposed the contract to this node.
    ProposalReceived { from: NodeId },
    /// This node signed the contract: by its operator (`contract sign`, the console's
    /// Sign), or `automatic` on receipt because operator approval is not required.
    Sign { automatic: bool },
    /// `signer`'s signature over the contract reached this node from `from` (the
    /// signer itself, or a party's copy fetched before a run).
    SignatureReceived { signer: NodeId, from: NodeId },
    /// This node revoked the contract.
    Revoke { reason: String },
    /// A party's revocation of the contract reached this node.
    RevocationReceived { from: NodeId, reason: String },
    /// A dataset version was committed with `rows` rows.
    Import { dataset: String, version: u64, rows: u64 },
    /// An import of the dataset was refused; nothing was committed.
    ImportRefused { dataset: String },
    /// An import that a crash cut short was removed at start-up.
    ImportInterrupted { dataset: String, version: u64 },
    /// A job was running when the node stopped (shutdown, or found at start-up).
    JobInterrupted { job: u64, computation: String },
    /// A peer's request was refused; `error_kind` names the error (its variant), the
    /// outcome's reason says the rest. (Not `kind`: that key is the event's tag.)
    Refusal { error_kind: String },
    /// `count` further refusals of `error_kind` from `peer` in one minute, counted, not
    /// recorded one by one.
    RefusalsCoalesced { peer: String, error_kind: String, count: u64 },
    /// A live connection of `peer` was closed because the CRL revokes its certificate.
    ConnectionClosed { peer: NodeId },
}

impl AuditEvent {
    /// A short name for tables (`import`, `sign`, `psi run`, ...).
    pub fn label(&self) -> String {
        match self {
            Self::Run { computation, role, .. } => format!("{computation} run ({role})"),
            Self::Dropout { computation, .. } => format!("{computation} dropout"),
            Self::Propose => "propose".into(),
            Self::ProposalReceived { .. } => "proposal received".into(),
            Self::Sign { automatic: false } => "sign".into(),
            Self::Sign { automatic: true } => "sign (automatic)".into(),
            Self::SignatureReceived { .. } => "signature received".into(),
            Self::Revoke { .. } => "revoke".into(),
            Self::RevocationReceived { .. } => "revocation received".into(),
            Self::Import { .. } => "import".into(),
            Self::ImportRefused { .. } => "import refused".into(),
            Self::ImportInterrupted { .. } => "import interrupted".into(),
            Self::JobInterrupted { .. } => "job interrupted".into(),
            Self::Refusal { .. } => "refusal".into(),
            Self::RefusalsCoalesced { .. } => "refusals coalesced".into(),
            Self::ConnectionClosed { .. } => "connection closed".into(),
        }
    }
}

impl std::fmt::Display for AuditEvent {
    /// The label and the details it holds, in words.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Run { computation, role, job } => write!(f, "{computation} run as {role} (job {job})"),
            Self::Dropout { computation, node, round } => {
                write!(f, "{node} dropped out of a {computation} run at {round}")
            }
            Self::Propose => f.write_str("proposed the contract"),
            Self::ProposalReceived { from } => write!(f, "contract proposed by {from}"),
            Self::Sign { automatic: false } => f.write_str("signed the contract (operator)"),
            Self::Sign { automatic: true } => f.write_str("signed the contract automatically on receipt"),
            Self::SignatureReceived { signer, from } if signer == from => {
                write!(f, "signature of {signer} received")
            }
            Self::SignatureReceived { signer, from } => {
                write!(f, "signature of {signer} received from {from}")
            }
            Self::Revoke { reason } => write!(f, "revoked the contract: {reason}"),
            Self::RevocationReceived { from, reason } => write!(f, "contract revoked by {from}: {reason}"),
            Self::Import { dataset, version, rows } => {
                write!(f, "imported {dataset} v{version} ({rows} rows)")
            }
            Self::ImportRefused { dataset } => write!(f, "import of {dataset} refused"),
            Self::ImportInterrupted { dataset, version } => {
                write!(f, "unfinished import of {dataset} v{version} removed")
            }
            Self::JobInterrupted { job, computation } => write!(f, "{computation} job {job} interrupted"),
            Self::Refusal { error_kind } => write!(f, "refused a peer's request ({error_kind})"),
            Self::RefusalsCoalesced { peer, error_kind, count } => {
                write!(f, "{count} more refusals ({error_kind}) of {peer}")
            }
            Self::ConnectionClosed { peer } => write!(f, "closed the live connection of {peer} (revoked)"),
        }
    }
}

/// What the node records; [`AuditChain::append`] adds seq and hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix seconds.
    pub time: u64,
    /// The node writing the record.
    pub node: NodeId,
    /// Absent for a refusal not tied to a contract (an unknown contract id, say).
    pub contract: Option<ContractId>,
    pub computation: Option<ComputationKind>,
    /// The parties of the run, in the order the node lists them.
    pub parties: Vec<NodeId>,
    /// Set sizes the node knows (its own, and what the protocol reveals of others').
    pub set_sizes: BTreeMap<NodeId, u64>,
    pub outcome: Outcome,
    /// SHA-256 of the run's transcript (the messages sent and received, in order).
    pub transcript_digest: Option<[u8; 32]>,
    /// What happened. `None` only to re-create a record written before events were
    /// recorded; the node always names one.
    pub event: Option<AuditEvent>,
}

/// One record of the log, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub seq: u64,
    #[serde(with = "serde_hex::digest")]
    pub prev_hash: [u8; 32],
    pub time: u64,
    pub node: NodeId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<ContractId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computation: Option<ComputationKind>,
    pub parties: Vec<NodeId>,
    pub set_sizes: BTreeMap<NodeId, u64>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_hex::optional_digest")]
    pub transcript_digest: Option<[u8; 32]>,
    /// What happened; absent in records written before it was recorded. Left out of
    /// the stored and the hashed bytes when absent, so those records verify unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<AuditEvent>,
    /// SHA-256(`AUDIT_DOMAIN` || canonical JSON of the fields above).
    #[serde(with = "serde_hex::digest")]
    pub hash: [u8; 32],
}

/// The hashed fields of a record; field names are its canonical keys.
#[derive(Serialize)]
struct AuditBody<'a> {
    seq: u64,
    prev_hash: String,
    time: u64,
    node: &'a NodeId,
    #[serde(skip_serializing_if = "Option::is_none")]
    contract: Option<&'a ContractId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    computation: Option<ComputationKind>,
    parties: &'a [NodeId],
    set_sizes: &'a BTreeMap<NodeId, u64>,
    outcome: &'a Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    transcript_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a AuditEvent>,
}

/// Why a log does not verify; names the first bad record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The record's fields do not hash to its stored hash: it was edited.
    #[error("audit record seq {seq} was altered: its fields do not hash to its stored hash")]
    Altered { seq: u64 },
    /// A seq number is missing (`next` is the seq found in its place, if any).
    #[error("audit record seq {seq} was removed{}", next.map(|n| format!(" (the next record is seq {n})")).unwrap_or_default())]
    Removed { seq: u64, next: Option<u64> },
    /// Records are out of order: `found` stands where `expected` belongs.
    #[error("audit records were re-ordered: position {position} holds seq {found}, expected seq {expected}")]
    Reordered { position: usize, expected: u64, found: u64 },
    /// Consecutive seq numbers whose hashes do not link: a record before `seq` was
    /// removed and the rest renumbered and re-hashed, or record `seq − 1` was rewritten
    /// with a fresh hash.
    #[error("audit record seq {seq} does not link to the record before it (a record was removed and the rest renumbered, or the previous record was rewritten)")]
    BrokenLink { seq: u64 },
    /// A record cannot be encoded (an integer beyond 2^53−1).
    #[error("audit record seq {seq}: {source}")]
    Encoding { seq: u64, source: CanonicalError },
}

impl AuditRecord {
    /// The hash of this record's fields (what `hash` must equal).
    pub fn compute_hash(&self) -> Result<[u8; 32], AuditError> {
        let body = AuditBody {
            seq: self.seq,
            prev_hash: hex::encode(self.prev_hash),
            time: self.time,
            node: &self.node,
            contract: self.contract.as_ref(),
            computation: self.computation,
            parties: &self.parties,
            set_sizes: &self.set_sizes,
            outcome: &self.outcome,
            transcript_digest: self.transcript_digest.map(hex::encode),
            event: self.event.as_ref(),
        };
        let bytes = canonical::to_canonical_bytes(&body)
            .map_err(|source| AuditError::Encoding { seq: self.seq, source })?;
        Ok(Sha256::new().chain_update(AUDIT_DOMAIN).chain_update(&bytes).finalize().into())
    }

    /// The stored form: canonical JSON of the whole record, `hash` included.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, AuditError> {
        canonical::to_canonical_bytes(self).map_err(|source| AuditError::Encoding { seq: self.seq, source })
    }

    /// Reads the stored form, refusing anything not canonical. The hash is not checked
    /// here; [`verify_chain`] does.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<AuditRecord, AuditError> {
        let unknown = |source| AuditError::Encoding { seq: 0, source };
        canonical::decode(bytes).map_err(unknown)?;
        let record: AuditRecord = serde_json::from_slice(bytes)
            .map_err(|e| unknown(CanonicalError { location: "record".into(), reason: e.to_string() }))?;
        if record.to_canonical_bytes()? != bytes {
            return Err(AuditError::Encoding {
                seq: record.seq,
                source: CanonicalError { location: "record".into(), reason: "not in canonical form".into() },
            });
        }
        Ok(record)
    }
}

/// Appending to the log.
#[derive(Debug)]
pub struct AuditChain;

impl AuditChain {
    /// The record that follows `prev` (or record 0 when `prev` is `None`). Refuses to
    /// extend a record whose own hash does not match its fields.
    pub fn append(prev: Option<&AuditRecord>, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        let (seq, prev_hash) = match prev {
            None => (0, GENESIS_PREV_HASH),
            Some(prev) => {
                if prev.compute_hash()? != prev.hash {
                    return Err(AuditError::Altered { seq: prev.seq });
                }
                (prev.seq + 1, prev.hash)
            }
        };
        let mut record = AuditRecord {
            seq,
            prev_hash,
            time: entry.time,
            node: entry.node,
            contract: entry.contract,
            computation: entry.computation,
            parties: entry.parties,
            set_sizes: entry.set_sizes,
            outcome: entry.outcome,
            transcript_digest: entry.transcript_digest,
            event: entry.event,
            hash: [0; 32],
        };
        record.hash = record.compute_hash()?;
        Ok(record)
    }
}

/// Verifies a whole log from record 0: seq numbers 0, 1, 2 ... in order, each record's
/// hash matching its fields, each `prev_hash` the previous record's hash. Names the
/// first record that breaks one of these.
pub fn verify_chain(records: &[AuditRecord]) -> Result<(), AuditError> {
    let mut prev_hash = GENESIS_PREV_HASH;
    for (position, record) in records.iter().enumerate() {
        let expected = position as u64;
        if record.seq != expected {
            let comes_later = records[position + 1..].iter().any(|r| r.seq == expected);
            if record.seq < expected || comes_later {
                return Err(AuditError::Reordered { position, expected, found: record.seq });
            }
            return Err(AuditError::Removed { seq: expected, next: Some(record.seq) });
        }
        if record.compute_hash()? != record.hash {
            return Err(AuditError::Altered { seq: record.seq });
        }
        if record.prev_hash != prev_hash {
            return Err(AuditError::BrokenLink { seq: record.seq });
        }
        prev_hash = record.hash;
    }
    Ok(())
}

/// [`verify_chain`], and the log still holds record `head_seq` with hash `head_hash`
/// (so the tail was neither cut off nor rewritten since the head was taken).
pub fn verify_chain_with_head(
    records: &[AuditRecord],
    head_seq: u64,
    head_hash: &[u8; 32],
) -> Result<(), AuditError> {
    verify_chain(records)?;
    match records.iter().find(|r| r.seq == head_seq) {
        None => {
            let first_missing = records.last().map(|r| r.seq + 1).unwrap_or(0);
            Err(AuditError::Removed { seq: first_missing, next: None })
        }
        Some(record) if record.hash != *head_hash => Err(AuditError::Altered { seq: head_seq }),
        Some(_) => Ok(()),
    }
}
