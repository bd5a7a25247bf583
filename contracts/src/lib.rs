//! Contracts every xmcredit node enforces, and the tamper-evident audit record.
//!
//! This crate owns the contract document (read from TOML or JSON), its canonical bytes
//! (restricted RFC 8785 JSON, defined once in [`canonical`]), Ed25519 signing by every
//! party and revocation by any party, the one constructor of [`VerifiedContract`], the
//! checks a node makes before it takes part, the scorecard of contribution rules with the
//! small data model it needs ([`data`]), and the hash-chained [`audit`] record.
//!
//! It must never do I/O, read a clock (the time is passed in as unix seconds), spawn
//! tasks or depend on tokio. It never re-serializes a signed document to verify it:
//! signatures are checked over the bytes as received.
#![forbid(unsafe_code)]

pub mod audit;
pub mod canonical;
mod checks;
pub mod data;
mod document;
pub mod entity_code;
mod error;
pub mod key;
mod revocation;
pub mod scorecard;
mod serde_hex;
mod signing;
pub mod time;
mod validate;
pub mod value_column;
mod verified;

pub use audit::{
    verify_chain, verify_chain_with_head, AuditChain, AuditEntry, AuditError, AuditEvent, AuditRecord,
    Outcome,
};
pub use checks::{lookup_day, QUOTA_DAY_UTC_OFFSET_SECONDS};
pub use data::{ColumnType, DataError, DatasetSchema, Date, Value};
pub use document::{
    Computation, ComputationKind, Contract, CountNoise, DatasetUse, Limits, LookupOutput, OutputForm, Party,
    PsiOutput, Receiver, Role, SumNoise, SurvivorRule,
};
pub use error::ContractError;
pub use key::{KeyKind, KeyPart, PartKind};
pub use revocation::{Revocation, REVOCATION_DOMAIN};
pub use scorecard::{Comparison, Constant, Rule, Scorecard};
pub use signing::{SignedContract, CONTRACT_DOMAIN};
pub use validate::{MAX_GROUPS, MAX_PURPOSE_CHARS};
pub use value_column::ValueColumn;
pub use verified::VerifiedContract;
