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

    /// Adds `amount` if the total stays within `limit`, atomically; returns the new total
    /// or `Err(used)` (the unchanged count) when it would not fit.
    pub fn quota_consume(
        &self,
        contract: &str,
        querier: &str,
        day: u64,
        amount: u64,
        limit: u64,
    ) -> Result<Result<u64, u64>, NodeError> {
        let key = join(&[contract.as_bytes(), querier.as_bytes(), &day.to_be_bytes()]);
        loop {
            let current = self.quotas.get(&key).map_err(|e| NodeError::store("read quota", e))?;
            let used = current
                .as_ref()
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map_or(0, u64::from_be_bytes);
            let Some(total) = used.checked_add(amount).filter(|t| *t <= limit) else {
                return Ok(Err(used));
            };
            let swapped = self
                .quotas
                .compare_and_swap(&key, current, Some(&total.to_be_bytes()))
                .map_err(|e| NodeError::store("update quota", e))?;
            if swapped.is_ok() {
                self.flush()?;
                return Ok(Ok(total));
            }
        }
    }
}
