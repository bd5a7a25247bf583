//! The coordinator's job (`run lookup --contract X` on the coordinator): publish this
//! epoch's vector. With one provider (itself) it prepares its padded vector; with
//! several it sums the other providers' padded vectors with SecAgg over the registry's
//! universe, adds its own if it is a provider, reduces mod 2^w and stores the result
//! for queriers to download.

use std::sync::Arc;
use std::time::Instant;

use xmcredit_contracts::{Role, VerifiedContract};
use xmcredit_crypto::{ContractId, Epoch};
use xmcredit_protocol::lookup::{LookupVector, VectorHeader};

use super::{load_universe, provider_vector, Params};
use crate::context::NodeContext;
use crate::run::verified_contract;
use crate::service::admin::ProgressSender;
use crate::NodeError;

pub async fn run_coordinator(
    ctx: Arc<NodeContext>,
    verified: VerifiedContract,
    epoch: Epoch,
    progress: ProgressSender,
) -> Result<serde_json::Value, NodeError> {
    let started = Instant::now();
    let params = Params::of(&verified)?;
    let me = ctx.node_id().clone();
    verified.require_role(&me, Role::Coordinator)?;
    let providers: Vec<String> = params.providers.iter().map(ToString::to_string).collect();
    if params.single() {
        let (universe, vector) =
            tokio::task::block_in_place(|| provider_vector(&ctx, &verified, &params, epoch, None))?;
        return Ok(serde_json::json!({
            "computation": "lookup",
            "role": "coordinator",
            "contract": verified.id().as_str(),
            "epoch": epoch.0,
            "providers": providers,
            "aggregated": false,
            "universe_size": universe.len(),
            "universe_digest": hex::encode(universe.digest()),
            "vector_digest": hex::encode(vector.digest()),
            "provider_s": started.elapsed().as_secs_f64(),
            "wall_s": started.elapsed().as_secs_f64(),
        }));
    }
    if ctx.store.lookup_sum(verified.id(), epoch)?.is_some() {
        return Err(NodeError::Refused(format!(
            "contract {} already has its aggregate for epoch {epoch}; the providers give one input per epoch",
            verified.id()
        )));
    }
    let universe = tokio::task::block_in_place(|| load_universe(&ctx))?;
    let codes: Vec<String> =
        universe.entries().iter().map(|e| String::from_utf8_lossy(e).into_owned()).collect();
    // Own vector first: a coordinator that cannot contribute does not start a session.
    let own = if params.providers.contains(&me) {
        let (_, vector) = tokio::task::block_in_place(|| {
            provider_vector(&ctx, &verified, &params, epoch, Some(universe.clone()))
        })?;
        Some(vector)
    } else {
        None
    };
    let own_s = started.elapsed().as_secs_f64();
    let (secagg, mut sum) =
        crate::run::secagg::run_for_lookup(ctx.clone(), verified.clone(), epoch, codes, progress).await?;
    if let Some(own) = &own {
        for (s, v) in sum.iter_mut().zip(own.values()) {
            *s = s.wrapping_add(*v);
        }
    }
    let header = VectorHeader::new(verified.id().clone(), epoch, &universe, params.width);
    let vector = LookupVector::from_aggregate(header, sum);
    ctx.store.save_lookup_sum(
        verified.id(),
        epoch,
        &universe.digest(),
        params.width.bits(),
        vector.values(),
    )?;
    Ok(serde_json::json!({
        "computation": "lookup",
        "role": "coordinator",
        "contract": verified.id().as_str(),
        "epoch": epoch.0,
        "providers": providers,
        "aggregated": true,
        "secagg_contributors": params.secagg_contributors().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "universe_size": universe.len(),
        "universe_digest": hex::encode(universe.digest()),
        "vector_digest": hex::encode(vector.digest()),
        "own_vector_s": own_s,
        "secagg": secagg,
        "provider_s": started.elapsed().as_secs_f64(),
        "wall_s": started.elapsed().as_secs_f64(),
    }))
}

/// `run lookup`: the coordinator publishes, a querier queries.
pub async fn run(
    ctx: Arc<NodeContext>,
    contract_id: &str,
    dataset: &str,
    progress: ProgressSender,
) -> Result<serde_json::Value, NodeError> {
    crate::service::contracts::sync_signatures(&ctx, contract_id).await.map_err(|error| {
        let contract = ContractId::new(contract_id).ok();
        ctx.refuse(contract.as_ref(), None, error)
    })?;
    let (_, verified, epoch) = verified_contract(&ctx, contract_id).map_err(|error| {
        let contract = ContractId::new(contract_id).ok();
        ctx.refuse(contract.as_ref(), None, error)
    })?;
    let party = verified.contract().party(ctx.node_id());
    let coordinates = party.is_some_and(|p| p.roles.contains(&Role::Coordinator));
    let queries = party.is_some_and(|p| p.roles.contains(&Role::Querier));
    if coordinates && !queries {
        return run_coordinator(ctx.clone(), verified, epoch, progress).await.map_err(|error| {
            let contract = ContractId::new(contract_id).ok();
            ctx.refuse(contract.as_ref(), None, error)
        });
    }
    super::run_querier(ctx, contract_id, dataset, progress).await
}
