//! Contracts as this node holds them: the canonical bytes exactly as received, the
//! signatures collected so far, and a revocation if one arrived. Nothing here is
//! re-serialized to be verified: `SignedContract` keeps the received bytes.

use serde::{Deserialize, Serialize};
use xmcredit_contracts::{ContractError, Revocation, SignedContract, VerifiedContract};

use super::{from_json, to_json, Store};
use crate::NodeError;

/// One stored contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredContract {
    pub signed: SignedContract,
    #[serde(default)]
    pub revocations: Vec<Revocation>,
    pub received_from: String,
    pub received_unix: u64,
}

/// Where a contract stands for this node, now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractState {
    AwaitingSignatures {
        missing: Vec<String>,
    },
    Active,
    Revoked {
        reason: String,
    },
    /// Signed by everyone but outside its validity window, or otherwise refused.
    Inactive {
        reason: String,
    },
}

impl ContractState {
    pub fn label(&self) -> &'static str {
        match self {
            ContractState::AwaitingSignatures { .. } => "awaiting-signatures",
            ContractState::Active => "active",
            ContractState::Revoked { .. } => "revoked",
            ContractState::Inactive { .. } => "inactive",
        }
    }

    pub fn missing(&self) -> Vec<String> {
        match self {
            ContractState::AwaitingSignatures { missing } => missing.clone(),
            _ => Vec::new(),
        }
    }
}

impl StoredContract {
    pub fn id(&self) -> String {
        self.signed.contract().id.to_string()
    }

    /// Verifies the contract as of `now_unix` (all signatures, window, revocations).
    pub fn verify(&self, now_unix: u64) -> Result<VerifiedContract, ContractError> {
        self.signed.verify(now_unix, &self.revocations)
    }

    pub fn state(&self, now_unix: u64) -> ContractState {
        let missing = self.signed.missing_signatures();
        if let Some(revocation) = self.revocations.first() {
            return ContractState::Revoked { reason: format!("by {}: {}", revocation.by, revocation.reason) };
        }
        if !missing.is_empty() {
            return ContractState::AwaitingSignatures {
                missing: missing.iter().map(ToString::to_string).collect(),
            };
        }
        match self.verify(now_unix) {
            Ok(_) => ContractState::Active,
            Err(ContractError::Revoked { by, reason, .. }) => {
                ContractState::Revoked { reason: format!("by {by}: {reason}") }
            }
            Err(e) => ContractState::Inactive { reason: e.to_string() },
        }
    }
}

impl Store {
    /// Read-modify-write of one contract under the store's contract lock, so concurrent
    /// signatures, revocations and syncs merge instead of overwriting each other (a lost
    /// revocation would re-activate a contract).
    pub fn update_contract(
        &self,
        id: &str,
        change: impl FnOnce(Option<StoredContract>) -> Result<StoredContract, NodeError>,
    ) -> Result<StoredContract, NodeError> {
        let _guard =
            self.contract_lock.lock().map_err(|_| NodeError::Internal("contract lock poisoned".into()))?;
        let updated = change(self.contract(id)?)?;
        if updated.id() != id {
            return Err(NodeError::Internal(format!("contract {id} updated into {}", updated.id())));
        }
        self.put_contract(&updated)?;
        Ok(updated)
    }

    fn put_contract(&self, contract: &StoredContract) -> Result<(), NodeError> {
        self.contracts
            .insert(contract.id().as_bytes(), to_json(contract)?)
            .map_err(|e| NodeError::store("put contract", e))?;
        self.flush()
    }

    pub fn contract(&self, id: &str) -> Result<Option<StoredContract>, NodeError> {
        self.contracts
            .get(id.as_bytes())
            .map_err(|e| NodeError::store("read contract", e))?
            .map(|v| from_json(&v, "contract"))
            .transpose()
    }

    pub fn require_contract(&self, id: &str) -> Result<StoredContract, NodeError> {
        self.contract(id)?.ok_or_else(|| NodeError::NotFound { what: "contract", id: id.to_string() })
    }

    /// Every stored contract that still decodes. One that does not (stored by an older
    /// version whose rules have since tightened, or damaged) is logged and skipped, so
    /// it cannot take `status` and `contract list` down with it; `contract show` on its
    /// id names the reason.
    pub fn contracts(&self) -> Result<Vec<StoredContract>, NodeError> {
        let mut out = Vec::new();
        for entry in self.contracts.iter() {
            let (key, value) = entry.map_err(|e| NodeError::store("scan contracts", e))?;
            match from_json(&value, "contract") {
                Ok(contract) => out.push(contract),
                Err(e) => {
                    tracing::error!(contract = %String::from_utf8_lossy(&key), error = %e, "stored contract does not decode; skipped")
                }
            }
        }
        Ok(out)
    }
}
