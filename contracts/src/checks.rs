//! The checks a node makes before it takes part in a run, as functions over a
//! [`VerifiedContract`] and the request at hand. Each refusal is its own
//! [`ContractError`] variant naming the rule and the values; the node turns it into its
//! reply to the peer and into the audit record's reason.
//!
//! The node owns the state (how many lookups a querier made today, which schema a
//! dataset has); the rules are here.

use xmcredit_crypto::NodeId;

use crate::data::{ColumnType, DatasetSchema};
use crate::document::{Computation, DatasetUse, LookupOutput, OutputForm, Party, Role};
use crate::scorecard::Scorecard;
use crate::time::DAY;
use crate::value_column::ValueColumn;
use crate::{ComputationKind, ContractError, VerifiedContract};

/// Lookup quotas count per day in China Standard Time (UTC+8): a day starts at 00:00 in
/// Xiamen, not at 08:00.
pub const QUOTA_DAY_UTC_OFFSET_SECONDS: u64 = 8 * 3600;

/// The day a lookup counts against: days since 1970-01-01 in UTC+8. The node keys its
/// per-querier counters by (contract, querier, `lookup_day(now)`).
pub fn lookup_day(now_unix: u64) -> u64 {
    now_unix.saturating_add(QUOTA_DAY_UTC_OFFSET_SECONDS) / DAY
}

impl VerifiedContract {
    /// `node` is a party.
    pub fn require_party(&self, node: &NodeId) -> Result<&Party, ContractError> {
        self.contract()
            .party(node)
            .ok_or_else(|| ContractError::NotAParty { contract: self.id().clone(), node: node.clone() })
    }

    /// `node` is a party holding `role`.
    pub fn require_role(&self, node: &NodeId, role: Role) -> Result<&Party, ContractError> {
        let party = self.require_party(node)?;
        if !party.roles.contains(&role) {
            return Err(ContractError::RoleNotHeld {
                contract: self.id().clone(),
                node: node.clone(),
                role,
                held: party.roles.clone(),
            });
        }
        Ok(party)
    }

    /// `party` uses `dataset`, and every column asked for is its key or one of the
    /// columns the contract names for it.
    pub fn require_columns(
        &self,
        party: &NodeId,
        dataset: &str,
        columns: &[&str],
    ) -> Result<&DatasetUse, ContractError> {
        let used = self.require_dataset(party, dataset)?;
        if let Some(column) =
            columns.iter().find(|c| **c != used.key && !used.columns.iter().any(|u| u == *c))
        {
            return Err(ContractError::ColumnNotInContract {
                contract: self.id().clone(),
                party: party.clone(),
                dataset: dataset.to_string(),
                column: column.to_string(),
                allowed: used.columns.clone(),
            });
        }
        Ok(used)
    }

    /// `schema` is the dataset the contract names for `party` and has everything the
    /// contract uses: the same key column, every named column, rule constants and secagg
    /// groups that parse with their column's type, a numeric secagg value column.
    pub fn require_schema(
        &self,
        party: &NodeId,
        schema: &DatasetSchema,
    ) -> Result<&DatasetUse, ContractError> {
        let used = self.require_dataset(party, schema.name())?;
        if used.key != schema.key() {
            return Err(ContractError::KeyColumnMismatch {
                contract: self.id().clone(),
                dataset: used.name.clone(),
                contract_key: used.key.clone(),
                schema_key: schema.key().to_string(),
            });
        }
        if used.key_kind != *schema.key_kind() {
            return Err(ContractError::KeyDefinitionMismatch {
                contract: self.id().clone(),
                dataset: used.name.clone(),
                contract_definition: used.key_kind.definition(),
                dataset_definition: schema.key_kind().definition(),
            });
        }
        for column in &used.columns {
            if schema.column(column).is_none() {
                return Err(ContractError::ColumnNotInSchema {
                    dataset: used.name.clone(),
                    column: column.clone(),
                });
            }
        }
        Scorecard::compile(&used.rules, schema)?;
        if let Computation::Secagg { value_column, group_column, groups, .. } = &self.contract().computation {
            if let Some((_, ty)) = schema.column(value_column) {
                if !matches!(ty, ColumnType::Integer | ColumnType::Decimal { .. }) {
                    return Err(ContractError::ColumnTypeNotAllowed {
                        dataset: used.name.clone(),
                        column: value_column.clone(),
                        column_type: ty.clone(),
                        allowed: "integer or decimal",
                    });
                }
            }
            if let Some((_, ty)) = schema.column(group_column) {
                for group in groups {
                    ty.parse_cell(group).map_err(|reason| ContractError::BadGroup {
                        dataset: used.name.clone(),
                        group: group.clone(),
                        reason,
                    })?;
                }
            }
        }
        Ok(used)
    }

    /// `party`'s contribution rules compiled against its schema (a `lookup` provider).
    pub fn scorecard(&self, party: &NodeId, schema: &DatasetSchema) -> Result<Scorecard, ContractError> {
        let used = self.require_schema(party, schema)?;
        Scorecard::compile(&used.rules, schema)
    }

    /// `party`'s value column compiled against its schema (a `lookup` provider under
    /// output `value`), bounded so the sum over every provider fits `output_bits`.
    pub fn value_column(&self, party: &NodeId, schema: &DatasetSchema) -> Result<ValueColumn, ContractError> {
        let used = self.require_schema(party, schema)?;
        let contract = self.contract();
        let Computation::Lookup { output: LookupOutput::Value, scale } = contract.computation else {
            return Err(ContractError::Malformed {
                field: "computation.output".into(),
                reason: format!("contract {} does not sum a value column", self.id()),
            });
        };
        let bits = contract.limits.output_bits.unwrap_or(64);
        let providers = contract.parties_with(Role::Provider).count();
        ValueColumn::compile(used, schema, scale, bits, providers)
    }

    /// `party`'s set has at least the contract's minimum for it (1 if none is set).
    pub fn require_min_set_size(&self, party: &NodeId, size: u64) -> Result<(), ContractError> {
        self.require_party(party)?;
        let minimum = self.contract().limits.min_set_size.get(party).copied().unwrap_or(1);
        if size < minimum {
            return Err(ContractError::SetTooSmall {
                contract: self.id().clone(),
                party: party.clone(),
                size,
                minimum,
            });
        }
        Ok(())
    }

    /// `querier` may make `requested` more lookups on a day it has already made
    /// `used_today` (counted by [`lookup_day`]). Returns how many remain afterwards.
    pub fn check_lookup_quota(
        &self,
        querier: &NodeId,
        used_today: u64,
        requested: u64,
    ) -> Result<u64, ContractError> {
        // A lookup's querier, or a PSI client whose elements the server counts.
        let role = if self.kind() == ComputationKind::Psi { Role::Client } else { Role::Querier };
        self.require_role(querier, role)?;
        let per_day = self.contract().limits.lookups_per_day.get(querier).copied().unwrap_or(0);
        match used_today.checked_add(requested) {
            Some(total) if total <= per_day => Ok(per_day - total),
            _ => Err(ContractError::QuotaExceeded {
                contract: self.id().clone(),
                querier: querier.clone(),
                used_today,
                requested,
                per_day,
            }),
        }
    }

    /// At least the contract's minimum number of contributors (providers, for `lookup`)
    /// take part (1 if none is set).
    pub fn require_contributors(&self, present: u64) -> Result<(), ContractError> {
        let minimum = u64::from(self.contract().limits.min_contributors.unwrap_or(1));
        if present < minimum {
            return Err(ContractError::TooFewContributors { contract: self.id().clone(), present, minimum });
        }
        Ok(())
    }

    /// `node` is a named receiver of the output in `form`.
    pub fn require_receiver(&self, node: &NodeId, form: OutputForm) -> Result<(), ContractError> {
        let contract = self.contract();
        let Some(receiver) = contract.receiver(node) else {
            return Err(ContractError::NotAReceiver {
                contract: self.id().clone(),
                node: node.clone(),
                receivers: contract.receivers.iter().map(|r| r.node.clone()).collect(),
            });
        };
        if receiver.form != form {
            return Err(ContractError::WrongOutputForm {
                contract: self.id().clone(),
                node: node.clone(),
                requested: form,
                allowed: receiver.form,
            });
        }
        Ok(())
    }

    fn require_dataset(&self, party: &NodeId, dataset: &str) -> Result<&DatasetUse, ContractError> {
        self.require_party(party)?;
        let contract = self.contract();
        let named = contract.datasets.iter().find(|d| d.party == *party && d.name == dataset);
        let used = named.or_else(|| contract.dataset_of(party));
        match used {
            Some(used) if used.name == dataset => Ok(used),
            _ => Err(ContractError::DatasetNotInContract {
                contract: self.id().clone(),
                party: party.clone(),
                dataset: dataset.to_string(),
                named: used.map(|u| u.name.clone()),
            }),
        }
    }
}
