//! The daily quota a serving node spends before it evaluates anything for a peer (issue
//! 10): the contract's `limits.lookups_per_day` for the caller, and this node's
//! `limits.dataset_lookups_per_day` for the caller over the dataset across every
//! contract (another contract over the same dataset is another oracle on the same
//! keys). Both are spent in one store transaction, or neither. The PSI server, the
//! lookup provider and the overthreshold committee member all spend through here.

use xmcredit_contracts::lookup_day;
use xmcredit_crypto::{ContractId, NodeId};

use crate::context::NodeContext;
use crate::store::QuotaRefusal;
use crate::NodeError;

/// One spend: `n` items (`what`, e.g. "lookups") for `caller` under `contract`, whose
/// daily quota is `limit`, over `dataset`.
pub(crate) struct QuotaSpend<'a> {
    pub contract: &'a ContractId,
    pub dataset: &'a str,
    pub caller: &'a NodeId,
    pub n: u64,
    pub limit: u64,
    pub what: &'a str,
    /// A PSI cardinality with noise: the epoch whose one noisy run for the caller this
    /// session spends (a second run in the epoch would give the exact count away).
    pub noisy_run_epoch: Option<u64>,
}

impl QuotaSpend<'_> {
    /// Spends both counts or neither. Over this node's ceiling, refuses naming it; over
    /// the contract's quota, refuses with `over_contract(used today)`, the caller's
    /// wording for its protocol. Returns the contract quota that was left before this
    /// spend (for the protocol state's own check).
    pub(crate) fn spend(
        &self,
        ctx: &NodeContext,
        over_contract: impl FnOnce(u64) -> NodeError,
    ) -> Result<u64, NodeError> {
        let Self { contract, dataset, caller, n, limit, what, noisy_run_epoch } = *self;
        let day = lookup_day(ctx.now_unix());
        let used_before = ctx.store.quota_used(contract.as_str(), caller.as_str(), day)?;
        let ceiling = ctx.config.limits.dataset_lookups_per_day;
        match ctx.store.quota_consume_with_dataset(
            contract.as_str(),
            dataset,
            caller.as_str(),
            day,
            n,
            limit,
            ceiling,
            noisy_run_epoch,
        )? {
            Ok(()) => Ok(limit.saturating_sub(used_before)),
            Err(QuotaRefusal::Contract { used }) => Err(over_contract(used)),
            Err(QuotaRefusal::Dataset { used, ceiling }) => Err(NodeError::Refused(format!(
                "{caller} has made {used} {what} today over dataset {dataset}, across all contracts, and asks for {n} more; this node allows {ceiling} a day (limits.dataset_lookups_per_day)"
            ))),
            Err(QuotaRefusal::NoisyRun { epoch }) => Err(NodeError::Refused(format!(
                "{caller} has had its noisy cardinality run of epoch {epoch} under contract {contract}: one run per epoch, since a second run's fresh dummies would stand out against the epoch's stable replies and give the exact count"
            ))),
        }
    }
}
