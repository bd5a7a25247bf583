//! Private aggregate lookup (design.md computation 4; `xmcredit_protocol::lookup`): the
//! provider's padded vector and its query sessions ([`provider`]), and the querier's
//! job (`run lookup --contract X`, [`querier`]).
//!
//! # Who runs what
//!
//! The coordinator (the credit center) publishes the epoch's vector. With one provider
//! it is that provider's padded vector `v = g + pad mod 2^w`; with several, each
//! provider's vector is summed with SecAgg (the coordinator sees only the sum, uniform
//! without the providers' keys). A querier downloads the whole vector and runs one OPRF
//! session per provider, all at once; a provider that also queries (two datasets in
//! the contract, one per role) runs its own pads in process with its own key.
//! [`require_runnable`] checks the parties before anything runs.
//!
//! # The universe
//!
//! The universe of an epoch is the sorted keys of the coordinator's `registry` dataset
//! ([`UNIVERSE_DATASET`], the same dataset SecAgg's universe mode publishes). Only the
//! keys leave the node: the querier downloads them with the vector (`LookupVector`
//! RPC), and their digest is bound into every pad, into Hello and into the vector, so a
//! querier with another universe is refused by the provider rather than given wrong
//! values.
//!
//! # The vector
//!
//! Entry `i` is `g(u_i) + pad(u_i) mod 2^w` with `g` the contract's rule on the
//! provider's row for `u_i` ([`Contribution`]): the scorecard's points (w-bit two's
//! complement), the bit mask of the rules that hold at the provider's `BitLayout`
//! offset, or (output `value`) its value column in the contract's units, refused rather
//! than rounded when it does not fit exactly. An entity of the universe
//! the provider holds no row for contributes 0 (no points, no criterion met). Rows
//! whose key is not in the universe are not used. The vector is cached in memory per
//! (contract, epoch, dataset version, universe version) and its digest is claimed in
//! the store: one vector per (contract, epoch), a different one is refused
//! (`store/lookup.rs` says why).

mod coordinator;
mod provider;
mod querier;

pub use coordinator::{run, run_coordinator};
pub use provider::{serve_session, serve_vector};
pub use querier::run_querier;

use std::sync::Arc;
use std::time::Instant;

use xmcredit_contracts::{
    Computation, Contract, DatasetSchema, LookupOutput, Role, Scorecard, Value, ValueColumn, VerifiedContract,
};
use xmcredit_crypto::keys::KeyPurpose;
use xmcredit_crypto::{ContractId, Epoch, NodeId};
use xmcredit_protocol::lookup::{
    prepare_contribution, BitLayout, LookupVector, Universe, VectorHeader, Width,
};

use crate::context::NodeContext;
use crate::NodeError;

/// The coordinator's dataset whose keys are the universe.
pub const UNIVERSE_DATASET: &str = "registry";

/// Bytes of the universe encoding per `LookupVectorPart` (the transport caps a message
/// at 8 MiB).
const UNIVERSE_FRAGMENT_BYTES: usize = 1 << 20;

/// A session's deadline, in round timeouts.
const SESSION_DEADLINE_ROUNDS: u32 = 30;

/// Blinded elements per chunk: 8192 × 32 bytes = 256 KiB frames.
const CHUNK_SIZE: u32 = 8192;

/// Cache key of a provider's vector: (contract, epoch, dataset, dataset version,
/// universe digest).
pub type VectorKey = (ContractId, Epoch, String, u64, [u8; 32]);
/// A provider's padded vector and the universe it is over.
pub type CachedVector = (Arc<Universe>, Arc<LookupVector>);

/// The node-side rules on a lookup contract, checked before anyone signs it: either one
/// provider that is also the coordinator (it publishes its own vector), or providers of
/// which at least two are not the coordinator (their vectors are summed with SecAgg,
/// whose threshold is at least 2; the coordinator, if a provider, adds its own).
pub fn require_runnable(document: &Contract) -> Result<(), NodeError> {
    let providers: Vec<&NodeId> = document.parties_with(Role::Provider).map(|p| &p.node).collect();
    let coordinator = document.parties_with(Role::Coordinator).map(|p| &p.node).next();
    if providers.len() == 1 {
        if coordinator != Some(providers[0]) {
            return Err(NodeError::Refused(format!(
                "contract {}: with one provider, the provider publishes its own vector, so it must also be the coordinator",
                document.id
            )));
        }
        return Ok(());
    }
    let others = providers.iter().filter(|p| Some(**p) != coordinator).count();
    if others < 2 {
        return Err(NodeError::Refused(format!(
            "contract {}: the providers other than the coordinator are summed with secagg, which needs at least 2 of them ({others} here)",
            document.id
        )));
    }
    Ok(())
}

/// What a lookup contract fixes for a run.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    pub output: LookupOutput,
    /// Decimal places of a summed value column (output `value`).
    pub scale: u8,
    pub width: Width,
    pub coordinator: NodeId,
    /// In node order.
    pub providers: Vec<NodeId>,
}

impl Params {
    pub(crate) fn of(verified: &VerifiedContract) -> Result<Self, NodeError> {
        let contract = verified.contract();
        let Computation::Lookup { output, scale } = &contract.computation else {
            return Err(NodeError::Refused(format!(
                "contract {} is for {}, not lookup",
                verified.id(),
                contract.kind()
            )));
        };
        require_runnable(contract)?;
        let bits = contract
            .limits
            .output_bits
            .ok_or_else(|| NodeError::Refused(format!("contract {} sets no output_bits", verified.id())))?;
        let width = Width::new(bits)?;
        let coordinator =
            contract.parties_with(Role::Coordinator).map(|p| p.node.clone()).next().ok_or_else(|| {
                NodeError::Refused(format!("contract {} names no coordinator", verified.id()))
            })?;
        let mut providers: Vec<NodeId> =
            contract.parties_with(Role::Provider).map(|p| p.node.clone()).collect();
        providers.sort();
        Ok(Self { output: *output, scale: *scale, width, coordinator, providers })
    }

    /// One provider, which publishes its own vector (no aggregation).
    pub(crate) fn single(&self) -> bool {
        self.providers.len() == 1
    }

    /// The providers summed with SecAgg: all but the coordinator.
    pub(crate) fn secagg_contributors(&self) -> Vec<NodeId> {
        if self.single() {
            return Vec::new();
        }
        self.providers.iter().filter(|p| **p != self.coordinator).cloned().collect()
    }

    /// The providers' rule counts, for the bit layout.
    fn rule_counts(&self, verified: &VerifiedContract) -> Vec<(NodeId, u32)> {
        self.providers
            .iter()
            .map(|p| {
                let rules = verified.contract().dataset_for(p, Role::Provider).map_or(0, |d| d.rules.len());
                (p.clone(), rules as u32)
            })
            .collect()
    }

    pub(crate) fn bit_layout(&self, verified: &VerifiedContract) -> Result<BitLayout, NodeError> {
        Ok(BitLayout::new(&self.rule_counts(verified), self.width)?)
    }
}

/// The universe: the sorted, distinct keys of the local `registry` dataset, read once
/// per dataset version (`NodeContext::lookup_registry`).
fn load_universe(ctx: &NodeContext) -> Result<Arc<Universe>, NodeError> {
    let meta = ctx
        .store
        .current_dataset(UNIVERSE_DATASET)?
        .ok_or_else(|| NodeError::NotFound { what: "universe dataset", id: UNIVERSE_DATASET.to_string() })?;
    let lock = || ctx.lookup_registry.lock().map_err(|_| NodeError::Internal("cache lock".into()));
    if let Some((version, universe)) = lock()?.as_ref() {
        if *version == meta.version {
            return Ok(universe.clone());
        }
    }
    let mut keys = ctx.store.dataset_keys(&meta)?;
    keys.sort_unstable();
    keys.dedup();
    let universe = Arc::new(Universe::new(keys.into_iter().map(String::into_bytes).collect())?);
    *lock()? = Some((meta.version, universe.clone()));
    Ok(universe)
}

/// This provider's padded vector for (contract, epoch) over `universe` (the local
/// registry's when `None`): from the cache, or computed from its dataset now and claimed
/// in the store (one vector per contract and epoch).
pub(crate) fn provider_vector(
    ctx: &NodeContext,
    verified: &VerifiedContract,
    params: &Params,
    epoch: Epoch,
    universe: Option<Arc<Universe>>,
) -> Result<CachedVector, NodeError> {
    let me = ctx.node_id().clone();
    verified.require_role(&me, Role::Provider)?;
    let named = verified
        .contract()
        .dataset_for(&me, Role::Provider)
        .ok_or_else(|| NodeError::Refused(format!("contract {} names no dataset for {me}", verified.id())))?;
    let meta = ctx
        .store
        .current_dataset(&named.name)?
        .ok_or_else(|| NodeError::NotFound { what: "dataset", id: named.name.clone() })?;
    verified.require_schema(&me, &meta.schema)?;
    let universe = match universe {
        Some(universe) => universe,
        None => load_universe(ctx)?,
    };
    let key = (verified.id().clone(), epoch, meta.name.clone(), meta.version, universe.digest());
    let cached = ctx
        .lookup_vectors
        .lock()
        .map(|c| c.get(&key).cloned())
        .map_err(|_| NodeError::Internal("cache lock".into()))?;
    if let Some(cached) = cached {
        return Ok(cached);
    }
    let started = Instant::now();
    let contribution = Contribution::of(verified, params, &me, &meta.schema)?;
    // The universe and the dataset are both in key order: one merge over the two, the
    // dataset read block by block.
    let mut rows = ctx.store.dataset_rows(&meta).peekable();
    let mut values = Vec::with_capacity(universe.len());
    for entry in universe.entries() {
        let mut found = None;
        while let Some(next) = rows.peek() {
            let key = match next {
                Ok(row) => row.key.as_bytes(),
                Err(_) => {
                    return Err(rows
                        .next()
                        .and_then(Result::err)
                        .unwrap_or_else(|| NodeError::Internal("dataset read".into())))
                }
            };
            match key.cmp(entry.as_slice()) {
                std::cmp::Ordering::Less => {
                    rows.next();
                }
                std::cmp::Ordering::Equal => {
                    found = rows.next().and_then(Result::ok);
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        let Some(row) = found else {
            values.push(0);
            continue;
        };
        values.push(contribution.of_row(&me, params, &row.values)?);
    }
    // A damaged block after the universe's last entry is still an error.
    for row in rows {
        row?;
    }
    let read_s = started.elapsed().as_secs_f64();
    let oprf_key = ctx.secrets.master.derive_oprf_key(verified.id(), epoch, KeyPurpose::LookupProvider)?;
    let header = VectorHeader::new(verified.id().clone(), epoch, &universe, params.width);
    let vector = prepare_contribution(&oprf_key, &header, &universe, &values)?;
    ctx.store.claim_lookup_vector(verified.id(), epoch, &vector.digest(), &universe.digest())?;
    tracing::info!(
        entries = universe.len(),
        seconds = started.elapsed().as_secs_f64(),
        rows_and_rules_seconds = read_s,
        "lookup vector prepared"
    );
    let entry = (universe, Arc::new(vector));
    let mut cache = ctx.lookup_vectors.lock().map_err(|_| NodeError::Internal("cache lock".into()))?;
    // One entry per contract: a new epoch or dataset version replaces the old one.
    cache.retain(|(contract, ..), _| contract != verified.id());
    cache.insert(key, entry.clone());
    Ok(entry)
}

/// How a provider turns one of its rows into its contribution `g(u)`, by the contract's
/// output: scorecard points, its rules' bits at its offset, or its value column.
enum Contribution {
    Points(Scorecard),
    Bitmask(Scorecard, BitLayout),
    Value(ValueColumn),
}

impl Contribution {
    fn of(
        verified: &VerifiedContract,
        params: &Params,
        me: &NodeId,
        schema: &DatasetSchema,
    ) -> Result<Self, NodeError> {
        Ok(match params.output {
            LookupOutput::Points => Self::Points(verified.scorecard(me, schema)?),
            LookupOutput::Bitmask => {
                Self::Bitmask(verified.scorecard(me, schema)?, params.bit_layout(verified)?)
            }
            LookupOutput::Value => Self::Value(verified.value_column(me, schema)?),
        })
    }

    fn of_row(&self, me: &NodeId, params: &Params, row: &[Value]) -> Result<u64, NodeError> {
        Ok(match self {
            Self::Points(card) => params.width.encode_signed(card.evaluate(row)?)?,
            Self::Bitmask(card, layout) => layout.place(me, card.evaluate_mask(row)?)?,
            Self::Value(column) => column.units(row)?,
        })
    }
}

/// A provider's SecAgg input for a lookup: its padded vector over the coordinator's
/// universe (the codes of the opening message), and its dataset's name.
pub(crate) fn contribution(
    ctx: &NodeContext,
    verified: &VerifiedContract,
    epoch: Epoch,
    codes: &[String],
) -> Result<(Vec<u64>, String), NodeError> {
    let params = Params::of(verified)?;
    let universe = Universe::new(codes.iter().map(|c| c.as_bytes().to_vec()).collect())?;
    let (_, vector) = provider_vector(ctx, verified, &params, epoch, Some(Arc::new(universe)))?;
    let dataset = verified
        .contract()
        .dataset_for(ctx.node_id(), Role::Provider)
        .map(|d| d.name.clone())
        .unwrap_or_default();
    Ok((vector.values().to_vec(), dataset))
}

/// The universe digest a provider's query sessions of this epoch must carry: that of
/// the vector it published (computed now when it publishes alone).
pub(crate) fn session_universe(
    ctx: &NodeContext,
    verified: &VerifiedContract,
    params: &Params,
    epoch: Epoch,
) -> Result<[u8; 32], NodeError> {
    if let Some(digest) = ctx.store.lookup_vector_universe(verified.id(), epoch)? {
        return Ok(digest);
    }
    if params.single() {
        let (universe, _) = provider_vector(ctx, verified, params, epoch, None)?;
        return Ok(universe.digest());
    }
    Err(NodeError::Refused(format!(
        "{} has contributed no vector to contract {} in epoch {epoch}: the coordinator aggregates first",
        ctx.node_id(),
        verified.id()
    )))
}

/// The vector queriers download from the coordinator this epoch: the provider's own
/// (one provider) or the stored aggregate (several), with its universe.
pub(crate) fn published_vector(
    ctx: &NodeContext,
    verified: &VerifiedContract,
    params: &Params,
    epoch: Epoch,
) -> Result<CachedVector, NodeError> {
    if params.single() {
        return provider_vector(ctx, verified, params, epoch, None);
    }
    let Some((digest, bits, values)) = ctx.store.lookup_sum(verified.id(), epoch)? else {
        return Err(NodeError::Refused(format!(
            "contract {} has no aggregate for epoch {epoch} yet: its coordinator runs `run lookup` first",
            verified.id()
        )));
    };
    let universe = load_universe(ctx)?;
    if universe.digest() != digest || bits != params.width.bits() {
        return Err(NodeError::Refused(format!(
            "the registry changed since contract {}'s aggregate of epoch {epoch}; a new aggregate waits for the next epoch",
            verified.id()
        )));
    }
    let header = VectorHeader::new(verified.id().clone(), epoch, &universe, params.width);
    Ok((universe, Arc::new(LookupVector::from_aggregate(header, values))))
}
