//! Masked inputs a contributor has sent: at most one per (contract, epoch).
//!
//! Two sums of the same vectors over survivor sets that differ by one bank give away that
//! bank's vector by subtraction (a differencing attack by the coordinator, who chooses
//! the survivors by closing rounds). So a contributor claims (contract, epoch) here,
//! durably, before it sends a masked input, and refuses to send a second one; a re-run
//! needs a new epoch or a new contract, which every party signs.
//!
//! Tree `secagg_inputs` (opened on demand): key contract ‖ 0x00 ‖ epoch u64, value the
//! 16-byte session id that sent the input.

use xmcredit_crypto::{ContractId, Epoch, SessionId};

use super::{join, Store};
use crate::NodeError;

/// The tree of claimed (contract, epoch) pairs.
const TREE: &str = "secagg_inputs";

fn key(contract: &ContractId, epoch: Epoch) -> Vec<u8> {
    join(&[contract.as_bytes(), &epoch.to_be_bytes()])
}

fn refusal(contract: &ContractId, epoch: Epoch, session: &[u8]) -> NodeError {
    NodeError::Refused(format!(
        "already contributed a masked input to contract {contract} in epoch {epoch}; a re-run needs a new epoch or a new contract (that input was session {})",
        hex::encode(session)
    ))
}

impl Store {
    fn secagg_inputs(&self) -> Result<sled::Tree, NodeError> {
        self.db.open_tree(TREE).map_err(|e| NodeError::store("open tree", e))
    }

    /// Refuses, with the reason [`Store::claim_secagg_input`] would give, when this node
    /// has already sent a masked input under `contract` in `epoch`. A read only: checked
    /// when a session opens, so that a re-run fails at once; the claim itself is made
    /// just before the masked input goes out.
    pub fn check_secagg_input(&self, contract: &ContractId, epoch: Epoch) -> Result<(), NodeError> {
        let previous = self
            .secagg_inputs()?
            .get(key(contract, epoch))
            .map_err(|e| NodeError::store("read secagg input", e))?;
        match previous {
            Some(session) => Err(refusal(contract, epoch, &session)),
            None => Ok(()),
        }
    }

    /// Claims (contract, epoch) for `session`'s masked input, atomically and flushed to
    /// disk before it returns; refuses when any session (this one included) claimed it
    /// before. Call it before sending the masked input, never after.
    pub fn claim_secagg_input(
        &self,
        contract: &ContractId,
        epoch: Epoch,
        session: &SessionId,
    ) -> Result<(), NodeError> {
        let tree = self.secagg_inputs()?;
        let swapped = tree
            .compare_and_swap(key(contract, epoch), None as Option<&[u8]>, Some(&session.as_bytes()[..]))
            .map_err(|e| NodeError::store("claim secagg input", e))?;
        if let Err(current) = swapped {
            return Err(refusal(contract, epoch, current.current.as_deref().unwrap_or_default()));
        }
        tree.flush().map_err(|e| NodeError::store("flush secagg input", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_masked_input_per_contract_and_epoch() -> Result<(), NodeError> {
        let dir = tempfile::tempdir().map_err(|e| NodeError::Internal(e.to_string()))?;
        let contract = ContractId::new("c")?;
        let other = ContractId::new("c-2")?;
        {
            let store = Store::open(dir.path())?;
            store.check_secagg_input(&contract, Epoch(3))?;
            store.claim_secagg_input(&contract, Epoch(3), &SessionId([1; 16]))?;
            // Another epoch or another contract is a new claim.
            store.claim_secagg_input(&contract, Epoch(4), &SessionId([2; 16]))?;
            store.claim_secagg_input(&other, Epoch(3), &SessionId([3; 16]))?;
        }
        // Durable: a restarted node still refuses, naming the contract and the epoch.
        let store = crate::store::once_released(|| Store::open(dir.path()))?;
        for refused in [
            store.check_secagg_input(&contract, Epoch(3)),
            store.claim_secagg_input(&contract, Epoch(3), &SessionId([4; 16])),
            store.claim_secagg_input(&contract, Epoch(3), &SessionId([1; 16])),
        ] {
            let message = refused.expect_err("a second masked input").to_string();
            assert!(
                message.contains("already contributed a masked input to contract c in epoch 3"),
                "{message}"
            );
            assert!(message.contains("a re-run needs a new epoch or a new contract"), "{message}");
        }
        Ok(())
    }
}
