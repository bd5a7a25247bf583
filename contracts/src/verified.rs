//! A contract every party has signed, that no party has revoked, checked at a time
//! inside its window. Only [`crate::SignedContract::verify`] makes one; protocol state
//! machines start only from one.

use xmcredit_crypto::sign::Signature;
use xmcredit_crypto::{ContractId, Epoch, NodeId};

use crate::document::{ComputationKind, Contract};
use crate::signing::{SignaturesVerified, SignedContract};
use crate::ContractError;

#[derive(Clone, Debug)]
pub struct VerifiedContract {
    contract: Contract,
    bytes: Vec<u8>,
    digest: [u8; 32],
    signatures: Vec<(NodeId, Signature)>,
    _verified: SignaturesVerified,
}

impl VerifiedContract {
    pub(crate) fn new(signed: &SignedContract, proof: SignaturesVerified) -> Self {
        VerifiedContract {
            contract: signed.contract().clone(),
            bytes: signed.canonical_bytes().to_vec(),
            digest: signed.digest(),
            signatures: signed.signatures().to_vec(),
            _verified: proof,
        }
    }

    pub fn contract(&self) -> &Contract {
        &self.contract
    }

    pub fn id(&self) -> &ContractId {
        &self.contract.id
    }

    pub fn kind(&self) -> ComputationKind {
        self.contract.kind()
    }

    /// The canonical bytes every party signed.
    pub fn canonical_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-256 of the canonical bytes.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Every party's verified signature.
    pub fn signatures(&self) -> &[(NodeId, Signature)] {
        &self.signatures
    }

    /// Refuses a time outside the validity window (a long-lived node re-checks before
    /// each run; verification checked only the time it was given).
    pub fn check_time(&self, now_unix: u64) -> Result<(), ContractError> {
        check_window(&self.contract, now_unix)
    }

    /// The epoch at `now_unix`: `(now − not_before) / epoch_seconds`, inside the window.
    pub fn epoch_at(&self, now_unix: u64) -> Result<Epoch, ContractError> {
        self.check_time(now_unix)?;
        Ok(Epoch((now_unix - self.contract.not_before) / self.contract.epoch_seconds))
    }

    /// The first and last second of `epoch` (the last clipped to `not_after`).
    pub fn epoch_bounds(&self, epoch: Epoch) -> (u64, u64) {
        let start =
            self.contract.not_before.saturating_add(epoch.0.saturating_mul(self.contract.epoch_seconds));
        let end = start.saturating_add(self.contract.epoch_seconds - 1).min(self.contract.not_after);
        (start, end)
    }
}

/// `not_before <= now <= not_after`, or the error saying which side it fell off.
pub(crate) fn check_window(contract: &Contract, now_unix: u64) -> Result<(), ContractError> {
    if now_unix < contract.not_before {
        return Err(ContractError::NotYetValid {
            contract: contract.id.clone(),
            not_before: contract.not_before,
            now: now_unix,
        });
    }
    if now_unix > contract.not_after {
        return Err(ContractError::Expired {
            contract: contract.id.clone(),
            not_after: contract.not_after,
            now: now_unix,
        });
    }
    Ok(())
}
