//! Why a contract was refused, or why a node refuses to take part under one.
//!
//! Every refusal has its own variant carrying the rule and the values involved, so the
//! node can log it, show it to the operator and write it into the audit record as the
//! reason. Variants about what a peer or an author got wrong (a bad signature, a
//! malformed document) are kept apart from the node's own limits (a set below the
//! minimum, a quota used up) by their names, not by nesting.

use std::fmt::Display;

use xmcredit_crypto::{ContractId, CryptoError, NodeId};

use crate::canonical::CanonicalError;
use crate::data::{ColumnType, DataError, Value};
use crate::document::{OutputForm, Role};
use crate::scorecard::Comparison;

/// Joins items for a message: `bank-a, bank-b`, or `(none)`.
pub(crate) fn list<T: Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "(none)".to_string();
    }
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    // ---- Reading the document --------------------------------------------------------
    /// The TOML did not parse into a contract (the message names the field and line).
    #[error("contract TOML: {message}")]
    Toml { message: String },
    /// The JSON did not parse into a contract (the message names the field).
    #[error("contract JSON: {message}")]
    Json { message: String },
    /// The bytes are not in the canonical encoding (ARCHITECTURE.md, "Contracts").
    #[error(transparent)]
    NotCanonical(#[from] CanonicalError),
    /// The document parsed but breaks a well-formedness rule; `field` is its path.
    #[error("contract field {field}: {reason}")]
    Malformed { field: String, reason: String },

    // ---- Signatures and revocation ---------------------------------------------------
    /// Not every party has signed.
    #[error("contract {contract} lacks the signatures of {}", list(.missing))]
    MissingSignatures { contract: ContractId, missing: Vec<NodeId> },
    /// A signature is attributed to a node that is not a party.
    #[error("contract {contract} carries a signature by {node}, which is not a party")]
    SignerNotAParty { contract: ContractId, node: NodeId },
    /// A signature does not verify under the key the contract lists for that party.
    #[error("the signature attributed to {node} does not verify under its key in contract {contract}")]
    BadSignature { contract: ContractId, node: NodeId },
    /// Two signatures attributed to the same party.
    #[error("contract {contract} carries two signatures attributed to {node}")]
    DuplicateSignature { contract: ContractId, node: NodeId },
    /// Asked to sign as a party with a key other than the one the contract lists for it.
    #[error("the key offered for {node} is {offered}, the contract lists {listed}")]
    WrongSigningKey { node: NodeId, offered: String, listed: String },
    /// The current time is before the validity window.
    #[error("contract {contract} is not valid before {not_before} (unix seconds); now is {now}")]
    NotYetValid { contract: ContractId, not_before: u64, now: u64 },
    /// The current time is after the validity window.
    #[error("contract {contract} expired at {not_after} (unix seconds); now is {now}")]
    Expired { contract: ContractId, not_after: u64, now: u64 },
    /// A party revoked the contract; it has ended for everyone.
    #[error("contract {contract} was revoked by {by} at {time}: {reason}")]
    Revoked { contract: ContractId, by: NodeId, time: u64, reason: String },
    /// A revocation that names this contract but is not valid (not a party, bad signature).
    #[error("revocation of contract {contract} attributed to {by} is invalid: {reason}")]
    BadRevocation { contract: ContractId, by: NodeId, reason: String },

    // ---- Checks a node makes before it takes part -----------------------------------
    /// The node is not a party to the contract.
    #[error("{node} is not a party to contract {contract}")]
    NotAParty { contract: ContractId, node: NodeId },
    /// The node is a party but does not hold the role it would act in.
    #[error("{node} would act as {role} but contract {contract} gives it only the role(s) {}", list(.held))]
    RoleNotHeld { contract: ContractId, node: NodeId, role: Role, held: Vec<Role> },
    /// The dataset asked for is not the one the contract names for this party.
    #[error("contract {contract} names {} as the dataset of {party}, not {dataset}", named.as_deref().unwrap_or("nothing"))]
    DatasetNotInContract { contract: ContractId, party: NodeId, dataset: String, named: Option<String> },
    /// A column asked for is not among those the contract names for the dataset.
    #[error("column {column} of {party}'s dataset {dataset} is not in contract {contract} (it names {})", list(.allowed))]
    ColumnNotInContract {
        contract: ContractId,
        party: NodeId,
        dataset: String,
        column: String,
        allowed: Vec<String>,
    },
    /// A column the contract names does not exist in the dataset's schema.
    #[error("the contract names column {column}, which dataset {dataset} does not have")]
    ColumnNotInSchema { dataset: String, column: String },
    /// The key column of the schema differs from the contract's.
    #[error("contract {contract} keys dataset {dataset} by {contract_key}, the schema by {schema_key}")]
    KeyColumnMismatch { contract: ContractId, dataset: String, contract_key: String, schema_key: String },
    /// The dataset's key definition differs from the one the contract names for it.
    #[error("contract {contract} names key definition {contract_definition} for dataset {dataset}, but the dataset is keyed by {dataset_definition}; both sides of a match must use the same key")]
    KeyDefinitionMismatch {
        contract: ContractId,
        dataset: String,
        contract_definition: String,
        dataset_definition: String,
    },
    /// Two datasets that are matched against each other are keyed differently.
    #[error("{party}'s dataset is keyed by {definition}, {other_party}'s by {other_definition}; a {computation} contract needs one key definition for every dataset")]
    KeyDefinitionsDiffer {
        computation: String,
        party: NodeId,
        definition: String,
        other_party: NodeId,
        other_definition: String,
    },
    /// A column the contract uses has a type the computation cannot use.
    #[error("column {column} of dataset {dataset} is {column_type}; the computation needs {allowed}")]
    ColumnTypeNotAllowed { dataset: String, column: String, column_type: ColumnType, allowed: &'static str },
    /// A secagg group is not a value of the group column's type.
    #[error("group {group:?} is not a value of dataset {dataset}'s group column: {reason}")]
    BadGroup { dataset: String, group: String, reason: DataError },
    /// A set is smaller than the minimum the contract sets for its party.
    #[error("{party}'s set has {size} elements; contract {contract} requires at least {minimum}")]
    SetTooSmall { contract: ContractId, party: NodeId, size: u64, minimum: u64 },
    /// The querier would exceed its lookups per day.
    #[error("{querier} has made {used_today} lookups today and asks for {requested} more; contract {contract} allows {per_day} a day")]
    QuotaExceeded { contract: ContractId, querier: NodeId, used_today: u64, requested: u64, per_day: u64 },
    /// Fewer contributors than the contract's minimum.
    #[error("{present} contributors take part; contract {contract} requires at least {minimum}")]
    TooFewContributors { contract: ContractId, present: u64, minimum: u64 },
    /// The output would go to a node the contract does not name as a receiver.
    #[error("{node} is not a receiver of contract {contract}'s output (receivers: {})", list(.receivers))]
    NotAReceiver { contract: ContractId, node: NodeId, receivers: Vec<NodeId> },
    /// A receiver asks for its output in a form the contract does not give it.
    #[error("{node} receives {allowed} under contract {contract}, not {requested}")]
    WrongOutputForm { contract: ContractId, node: NodeId, requested: OutputForm, allowed: OutputForm },

    // ---- Scorecards -----------------------------------------------------------------
    /// A rule's constant does not parse as a value of its column's type.
    #[error("rule {rule} of dataset {dataset}: constant for column {column}: {reason}")]
    BadRuleConstant { dataset: String, rule: usize, column: String, reason: DataError },
    /// A rule compares a column in a way its type does not support (`lt` on an enum).
    #[error("rule {rule} of dataset {dataset}: {comparison} does not apply to column {column} of type {column_type}")]
    RuleNotApplicable {
        dataset: String,
        rule: usize,
        column: String,
        comparison: Comparison,
        column_type: ColumnType,
    },
    /// A row handed to a scorecard has the wrong number of values.
    #[error("row has {got} values, the schema has {expected} columns")]
    RowLength { expected: usize, got: usize },
    /// A row value does not have its column's type.
    #[error("row value {value} in column {column} is not of type {column_type}")]
    RowType { column: String, value: Value, column_type: ColumnType },

    /// A provider's value cannot be summed exactly under the contract.
    #[error("value {value} in column {column} cannot be contributed: {reason}")]
    ValueNotRepresentable { column: String, value: Value, reason: String },

    /// An identity key or signature could not be used.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}
