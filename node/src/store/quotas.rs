//! Lookup quota counters: how many elements a querier has had evaluated under a
//! contract on a given day. The rule (how many are allowed) is the contract's; the
//! count is kept here, and incremented atomically before the work is done.

use super::{join, Store};
use crate::NodeError;

impl Store {
    /// Elements used so far by `querier` under `contract` on `day` (days since epoch).
    pub fn quota_used(&self, contract: &str, querier: &str, day: u64) -> Result<u64, NodeError> {
        let key = join(&[contract.as_bytes(), querier.as_bytes(), &day.to_be_bytes()]);
        Ok(self
            .quotas
            .get(key)
            .map_err(|e| NodeError::store("read quota", e))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }
}

/// Which of the two daily counts a session would exceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// The contract's own quota: the count used so far under the contract.
    Contract { used: u64 },
    /// The node's ceiling for one querier over one dataset, across all contracts.
    Dataset { used: u64, ceiling: u64 },
    /// The querier's one noisy run of this epoch (PSI cardinality with noise) is spent.
    NoisyRun { epoch: u64 },
}

impl Store {
    /// Spends `amount` of `querier`'s quota under `contract` (limit `contract_limit`)
    /// *and* of its count over `dataset` across every contract (limit
    /// `dataset_ceiling`), in one transaction: both fit, or nothing is spent (issue 10:
    /// a second contract over the same dataset must not multiply the lookups). With
    /// `noisy_run_epoch`, the querier's one noisy run of that epoch under `contract` is
    /// spent in the same transaction (refused if it already was).
    #[allow(clippy::too_many_arguments)]
    pub fn quota_consume_with_dataset(
        &self,
        contract: &str,
        dataset: &str,
        querier: &str,
        day: u64,
        amount: u64,
        contract_limit: u64,
        dataset_ceiling: u64,
        noisy_run_epoch: Option<u64>,
    ) -> Result<Result<(), QuotaRefusal>, NodeError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        let contract_key = join(&[contract.as_bytes(), querier.as_bytes(), &day.to_be_bytes()]);
        let dataset_key = dataset_quota_key(dataset, querier, day);
        let run_key = noisy_run_epoch.map(|epoch| noisy_run_key(contract, querier, epoch));
        let read = |value: Option<sled::IVec>| {
            value.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()).map_or(0, u64::from_be_bytes)
        };
        let outcome = self.quotas.transaction(|tx| {
            let contract_used = read(tx.get(&contract_key)?);
            let dataset_used = read(tx.get(&dataset_key)?);
            let Some(contract_total) = contract_used.checked_add(amount).filter(|t| *t <= contract_limit)
            else {
                return Ok(Err(QuotaRefusal::Contract { used: contract_used }));
            };
            let Some(dataset_total) = dataset_used.checked_add(amount).filter(|t| *t <= dataset_ceiling)
            else {
                return Ok(Err(QuotaRefusal::Dataset { used: dataset_used, ceiling: dataset_ceiling }));
            };
            if let (Some(key), Some(epoch)) = (&run_key, noisy_run_epoch) {
                if tx.get(key)?.is_some() {
                    return Ok(Err(QuotaRefusal::NoisyRun { epoch }));
                }
                tx.insert(key.as_slice(), &day.to_be_bytes())?;
            }
            tx.insert(contract_key.as_slice(), &contract_total.to_be_bytes())?;
            tx.insert(dataset_key.as_slice(), &dataset_total.to_be_bytes())?;
            Ok::<_, ConflictableTransactionError<()>>(Ok(()))
        });
        let outcome =
            outcome.map_err(|e: TransactionError<()>| NodeError::store("update quotas", format!("{e:?}")))?;
        if outcome.is_ok() {
            self.flush()?;
        }
        Ok(outcome)
    }
}

/// `0x02 "noisy-run" ‖ 0x00 ‖ contract ‖ 0x00 ‖ querier ‖ 0x00 ‖ epoch` (the value: the
/// day it was spent, for an operator reading the store).
fn noisy_run_key(contract: &str, querier: &str, epoch: u64) -> Vec<u8> {
    join(&[b"\x02noisy-run", contract.as_bytes(), querier.as_bytes(), &epoch.to_be_bytes()])
}

/// `0x01 "dataset" ‖ 0x00 ‖ dataset ‖ 0x00 ‖ querier ‖ 0x00 ‖ day`: a contract id never
/// starts with 0x01, so these keys never meet a contract's.
fn dataset_quota_key(dataset: &str, querier: &str, day: u64) -> Vec<u8> {
    join(&[b"\x01dataset", dataset.as_bytes(), querier.as_bytes(), &day.to_be_bytes()])
}
