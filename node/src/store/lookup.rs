//! Lookup vectors a provider has published: at most one per (contract, epoch).
//!
//! Two vectors of one (contract, epoch) share their pads (the key is per contract and
//! epoch), so a querier holding both would learn `g(u) - g'(u)` for every entity of the
//! universe, unpadded. A provider therefore records the digest of the first vector it
//! publishes in an epoch and refuses to publish another one (a new dataset version or
//! universe takes effect at the next epoch).
//!
//! Tree `lookup_vectors` (opened on demand): key contract ‖ 0x00 ‖ epoch u64, value the
//! 32-byte vector digest (`xmcredit lookup vector v1`) ‖ the 32-byte universe digest.
//! Query sessions check a Hello's universe against the latter.
//!
//! Tree `lookup_sums` (the coordinator of a lookup with several providers): key
//! contract ‖ 0x00 ‖ epoch u64, value universe digest (32) ‖ I2OSP(w, 1) ‖ the
//! aggregate, I2OSP(entry, 8) each: what queriers download this epoch. The providers
//! give one masked input per epoch, so the sum must outlive a restart.

use xmcredit_crypto::{ContractId, Epoch};

use super::{join, Store};
use crate::NodeError;

const TREE: &str = "lookup_vectors";
const SUMS: &str = "lookup_sums";

impl Store {
    /// Records `digest` as this node's vector for (contract, epoch), flushed to disk;
    /// accepts the same digest again and refuses a different one.
    pub fn claim_lookup_vector(
        &self,
        contract: &ContractId,
        epoch: Epoch,
        digest: &[u8; 32],
        universe_digest: &[u8; 32],
    ) -> Result<(), NodeError> {
        let tree = self.db.open_tree(TREE).map_err(|e| NodeError::store("open tree", e))?;
        let key = join(&[contract.as_bytes(), &epoch.to_be_bytes()]);
        let value = [&digest[..], &universe_digest[..]].concat();
        let previous = tree
            .compare_and_swap(&key, None as Option<&[u8]>, Some(value.as_slice()))
            .map_err(|e| NodeError::store("claim lookup vector", e))?;
        match previous {
            Ok(()) => self.flush(),
            Err(existing) if existing.current.as_deref() == Some(value.as_slice()) => Ok(()),
            Err(existing) => Err(NodeError::Refused(format!(
                "contract {contract} already has a lookup vector in epoch {epoch} (digest {}); a different one (new dataset version or universe) would share its pads, so it waits for the next epoch",
                existing.current.map(|v| hex::encode(&v[..v.len().min(32)])).unwrap_or_default()
            ))),
        }
    }

    /// The universe digest of this node's vector for (contract, epoch), if it published one.
    pub fn lookup_vector_universe(
        &self,
        contract: &ContractId,
        epoch: Epoch,
    ) -> Result<Option<[u8; 32]>, NodeError> {
        let tree = self.db.open_tree(TREE).map_err(|e| NodeError::store("open tree", e))?;
        let value = tree
            .get(join(&[contract.as_bytes(), &epoch.to_be_bytes()]))
            .map_err(|e| NodeError::store("read lookup vector", e))?;
        Ok(value.and_then(|v| v.get(32..64).and_then(|d| <[u8; 32]>::try_from(d).ok())))
    }

    /// Stores the aggregate of (contract, epoch), flushed; refuses a second one.
    pub fn save_lookup_sum(
        &self,
        contract: &ContractId,
        epoch: Epoch,
        universe_digest: &[u8; 32],
        width: u32,
        values: &[u64],
    ) -> Result<(), NodeError> {
        let tree = self.db.open_tree(SUMS).map_err(|e| NodeError::store("open tree", e))?;
        let mut value = Vec::with_capacity(33 + values.len() * 8);
        value.extend_from_slice(universe_digest);
        value.push(width as u8);
        for v in values {
            value.extend_from_slice(&v.to_be_bytes());
        }
        let previous = tree
            .compare_and_swap(
                join(&[contract.as_bytes(), &epoch.to_be_bytes()]),
                None as Option<&[u8]>,
                Some(value),
            )
            .map_err(|e| NodeError::store("save lookup sum", e))?;
        if previous.is_err() {
            return Err(NodeError::Refused(format!(
                "contract {contract} already has its lookup aggregate for epoch {epoch}"
            )));
        }
        self.flush()
    }

    /// The aggregate of (contract, epoch): universe digest, width, entries.
    #[allow(clippy::type_complexity)]
    pub fn lookup_sum(
        &self,
        contract: &ContractId,
        epoch: Epoch,
    ) -> Result<Option<([u8; 32], u32, Vec<u64>)>, NodeError> {
        let tree = self.db.open_tree(SUMS).map_err(|e| NodeError::store("open tree", e))?;
        let Some(value) = tree
            .get(join(&[contract.as_bytes(), &epoch.to_be_bytes()]))
            .map_err(|e| NodeError::store("read lookup sum", e))?
        else {
            return Ok(None);
        };
        let corrupt = || NodeError::Corrupt { what: "lookup sum", reason: "truncated".into() };
        let digest: [u8; 32] = value.get(..32).and_then(|d| d.try_into().ok()).ok_or_else(corrupt)?;
        let width = u32::from(*value.get(32).ok_or_else(corrupt)?);
        let body = &value[33..];
        if body.len() % 8 != 0 {
            return Err(corrupt());
        }
        let values =
            body.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default())).collect();
        Ok(Some((digest, width, values)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_vector_per_contract_and_epoch_and_the_sum_survives_a_restart() -> Result<(), NodeError> {
        let dir = tempfile::tempdir().map_err(|e| NodeError::Internal(e.to_string()))?;
        let contract = ContractId::new("credit-center.l")?;
        {
            let store = Store::open(dir.path())?;
            assert_eq!(store.lookup_vector_universe(&contract, Epoch(2))?, None);
            store.claim_lookup_vector(&contract, Epoch(2), &[1; 32], &[9; 32])?;
            // The same vector again (a cache rebuilt after a restart) is accepted.
            store.claim_lookup_vector(&contract, Epoch(2), &[1; 32], &[9; 32])?;
            let refused = store.claim_lookup_vector(&contract, Epoch(2), &[2; 32], &[9; 32]);
            assert!(
                matches!(&refused, Err(NodeError::Refused(r)) if r.contains("already has a lookup vector in epoch 2")),
                "{refused:?}"
            );
            // Another epoch is a new claim.
            store.claim_lookup_vector(&contract, Epoch(3), &[2; 32], &[9; 32])?;
            store.save_lookup_sum(&contract, Epoch(2), &[9; 32], 16, &[0, 1, 65535])?;
            assert!(store.save_lookup_sum(&contract, Epoch(2), &[9; 32], 16, &[5]).is_err());
        }
        let store = crate::store::once_released(|| Store::open(dir.path()))?;
        assert_eq!(store.lookup_vector_universe(&contract, Epoch(2))?, Some([9; 32]));
        assert_eq!(store.lookup_sum(&contract, Epoch(2))?, Some(([9; 32], 16, vec![0, 1, 65535])));
        assert_eq!(store.lookup_sum(&contract, Epoch(3))?, None);
        Ok(())
    }
}
