//! Lookup vectors a provider has published: at most one per (contract, epoch).
//!
//! Two vectors of one (contract, epoch) share their pads (the key is per contract and
//! epoch), so a querier holding both would learn `g(u) - g'(u)` for every entity of the
//! universe, unpadded. A provider therefore records the digest of the first vector it
//! publishes in an epoch and refuses to publish another one (a new dataset version or
//! universe takes effect at the next epoch).
//!
//! Tree `lookup_vectors` (opened on demand): key contract ‖ 0x00 ‖ epoch u64, value the
//! 32-byte vector digest (`xmcredit lookup vector v1`).

use xmcredit_crypto::{ContractId, Epoch};

use super::{join, Store};
use crate::NodeError;

const TREE: &str = "lookup_vectors";

impl Store {
    /// Records `digest` as this node's vector for (contract, epoch), flushed to disk;
    /// accepts the same digest again and refuses a different one.
    pub fn claim_lookup_vector(
        &self,
        contract: &ContractId,
        epoch: Epoch,
        digest: &[u8; 32],
    ) -> Result<(), NodeError> {
        let tree = self.db.open_tree(TREE).map_err(|e| NodeError::store("open tree", e))?;
        let key = join(&[contract.as_bytes(), &epoch.to_be_bytes()]);
        let previous = tree
            .compare_and_swap(&key, None as Option<&[u8]>, Some(&digest[..]))
            .map_err(|e| NodeError::store("claim lookup vector", e))?;
        match previous {
            Ok(()) => self.flush(),
            Err(existing) if existing.current.as_deref() == Some(&digest[..]) => Ok(()),
            Err(existing) => Err(NodeError::Refused(format!(
                "contract {contract} already has a lookup vector in epoch {epoch} (digest {}); a different one (new dataset version or universe) would share its pads, so it waits for the next epoch",
                existing.current.map(hex::encode).unwrap_or_default()
            ))),
        }
    }
}
