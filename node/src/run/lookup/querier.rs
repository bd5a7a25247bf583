//! The querier's job: download the whole vector from the coordinator, run one OPRF
//! session per provider for its registered applicants, remove the pads, write the
//! results to `outputs/` and report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use xmcredit_contracts::audit::Outcome;
use xmcredit_contracts::{ComputationKind, LookupOutput, OutputForm, Role, VerifiedContract};
use xmcredit_crypto::keys::KeyPurpose;
use xmcredit_crypto::{ContractId, Epoch, NodeId, SessionId};
use xmcredit_protocol::lookup::{
    BitLayout, DownloadNext, LookupProvider, LookupQuery, LookupValue, LookupVector, ProviderConfig,
    ProviderPolicy, ProviderReply, QuerierConfig, QuerierSession, QueryOutput, Universe, VectorDownload,
    VectorHeader, MAX_ENTRY_LEN,
};
use xmcredit_protocol::SessionBinding;

use super::{Params, CHUNK_SIZE, SESSION_DEADLINE_ROUNDS};
use crate::context::NodeContext;
use crate::proto;
use crate::run::observed::{Direction, Observed};
use crate::run::{
    contract_dataset, failed, finish_job, report_output, start_job, verified_contract, RunOutcome, Traffic,
};
use crate::service::admin::ProgressSender;
use crate::store::JobState;
use crate::NodeError;

/// What the querier checked before a run.
struct QuerierRun {
    verified: VerifiedContract,
    epoch: Epoch,
    params: Params,
    dataset: String,
    /// The applicants, in key order: the querier's working set.
    keys: Vec<String>,
}

async fn prepare(ctx: &Arc<NodeContext>, contract_id: &str, dataset: &str) -> Result<QuerierRun, NodeError> {
    crate::service::contracts::sync_signatures(ctx, contract_id).await?;
    let (_, verified, epoch) = verified_contract(ctx, contract_id)?;
    let me = ctx.node_id().clone();
    verified.require_role(&me, Role::Querier)?;
    verified.require_receiver(&me, OutputForm::Scores)?;
    let params = Params::of(&verified)?;
    let meta = contract_dataset(ctx, &verified, &me, Role::Querier, dataset)?;
    verified.require_min_set_size(&me, meta.rows)?;
    let keys = ctx.store.dataset_keys(&meta)?;
    Ok(QuerierRun { verified, epoch, params, dataset: meta.name, keys })
}

/// Runs a lookup under `contract_id` as its querier: the operator's `run lookup`.
pub async fn run_querier(
    ctx: Arc<NodeContext>,
    contract_id: &str,
    dataset: &str,
    progress: ProgressSender,
) -> Result<serde_json::Value, NodeError> {
    let started = Instant::now();
    let prepared = prepare(&ctx, contract_id, dataset).await.map_err(|error| {
        let contract = ContractId::new(contract_id).ok();
        ctx.refuse(contract.as_ref(), None, error)
    })?;
    let QuerierRun { verified, epoch, params, dataset, keys } = prepared;
    let session = SessionId::random(&mut rand::rngs::OsRng);
    let mut peers: Vec<String> = params.providers.iter().map(ToString::to_string).collect();
    if !params.providers.contains(&params.coordinator) {
        peers.push(params.coordinator.to_string());
    }
    let mut job = start_job(&ctx, ComputationKind::Lookup, &verified, "querier", session.to_string(), peers)?;
    progress.attach(&ctx, job.id);
    let deadline = ctx.config.timeouts.round() * SESSION_DEADLINE_ROUNDS;
    let observed = Arc::new(Mutex::new(Observed::default()));
    let result = match tokio::time::timeout(
        deadline,
        drive(&ctx, &verified, epoch, &params, session, &keys, &progress, &observed),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(NodeError::Timeout(format!("the whole lookup run ({} s)", deadline.as_secs()))),
    };
    match result {
        Ok(run) => {
            let report =
                report(&ctx, &verified, &params, &dataset, &keys, &run, started.elapsed().as_secs_f64());
            let mut sizes = BTreeMap::new();
            sizes.insert(ctx.node_id().clone(), run.output.lookups);
            let transcript = run.output.transcripts.first().map(|(_, digest)| *digest);
            let detail = match &report {
                Ok(report) => format!(
                    "{} applicants, {} looked up, results in {}",
                    keys.len(),
                    run.output.lookups,
                    report["output_file"].as_str().unwrap_or("-")
                ),
                Err(e) => format!("results NOT SAVED: {e}"),
            };
            if report.is_ok() {
                note(&observed, |o| o.wrote("scores", keys.len() as u64));
            }
            job.observed = Some(taken(&observed));
            finish_job(
                &ctx,
                &mut job,
                &verified,
                RunOutcome {
                    state: JobState::Succeeded,
                    detail,
                    set_sizes: sizes,
                    transcript_digest: transcript,
                    outcome: Outcome::Ok,
                    traffic: report.as_ref().ok().and_then(Traffic::from_report),
                    output_files: report.as_ref().map(report_output).unwrap_or_default(),
                },
            );
            report
        }
        Err(error) => {
            tracing::warn!(error = %error, "lookup querier failed");
            job.observed = Some(taken(&observed));
            finish_job(&ctx, &mut job, &verified, failed(&error));
            Err(error)
        }
    }
}

/// Counts one observation; a poisoned lock (a panicked session task) loses it only.
fn note(observed: &Mutex<Observed>, f: impl FnOnce(&mut Observed)) {
    if let Ok(mut observed) = observed.lock() {
        f(&mut observed);
    }
}

fn taken(observed: &Mutex<Observed>) -> Observed {
    observed.lock().map(|o| o.clone()).unwrap_or_default()
}

/// What a finished run holds.
struct Finished {
    session: SessionId,
    output: QueryOutput,
    universe_len: usize,
    universe_digest: [u8; 32],
    vector_bytes: u64,
    query_bytes: u64,
    vector_s: f64,
    query_s: f64,
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    ctx: &Arc<NodeContext>,
    verified: &VerifiedContract,
    epoch: Epoch,
    params: &Params,
    session: SessionId,
    keys: &[String],
    progress: &ProgressSender,
    observed: &Arc<Mutex<Observed>>,
) -> Result<Finished, NodeError> {
    let contract = verified.id().clone();
    let download_started = Instant::now();
    let (universe, vector, vector_bytes) = download(ctx, &contract, epoch, params, session, observed).await?;
    let vector_s = download_started.elapsed().as_secs_f64();
    progress.progress("vector", vector.len() as u64, vector.len() as u64);
    let applicants: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
    let header = vector.header().clone();
    let query = LookupQuery::new(header, universe.clone(), params.providers.clone(), &applicants)?;
    let query_started = Instant::now();
    let mut replies = Vec::with_capacity(params.providers.len());
    let mut query_bytes = 0u64;
    let query = Arc::new(query);
    if !query.lookups().is_empty() {
        // One session per provider, all at once (each its own blind); dropping the set
        // on an error ends the others.
        let mut sessions = tokio::task::JoinSet::new();
        for provider in params.providers.clone() {
            let (ctx, query, contract) = (ctx.clone(), query.clone(), contract.clone());
            if provider == *ctx.node_id() {
                let (verified, params) = (verified.clone(), params.clone());
                sessions.spawn(async move {
                    tokio::task::block_in_place(|| query_own_pads(&ctx, &query, &verified, &params, epoch))
                });
                continue;
            }
            let observed = observed.clone();
            sessions.spawn(async move {
                query_provider(&ctx, &query, &contract, epoch, &provider, &observed).await
            });
        }
        while let Some(joined) = sessions.join_next().await {
            let reply = joined.map_err(|e| NodeError::Internal(format!("a lookup session task: {e}")))??;
            query_bytes += reply.bytes_sent + reply.bytes_received;
            replies.push(reply);
            progress.progress("providers", replies.len() as u64, params.providers.len() as u64);
        }
    }
    let query =
        Arc::try_unwrap(query).map_err(|_| NodeError::Internal("the query is still shared".into()))?;
    let output = query.finish(&vector, replies)?;
    Ok(Finished {
        session,
        output,
        universe_len: universe.len(),
        universe_digest: universe.digest(),
        vector_bytes,
        query_bytes,
        vector_s,
        query_s: query_started.elapsed().as_secs_f64(),
    })
}

/// The universe and the whole vector from the coordinator (never single entries).
async fn download(
    ctx: &Arc<NodeContext>,
    contract: &ContractId,
    epoch: Epoch,
    params: &Params,
    session: SessionId,
    observed: &Mutex<Observed>,
) -> Result<(Arc<Universe>, LookupVector, u64), NodeError> {
    let coordinator = &params.coordinator;
    ctx.store.claim_session(session.as_bytes(), contract.as_str())?;
    let channel = ctx.channel_for_contract(coordinator, contract.as_str()).await?;
    let peer_error = |status: tonic::Status| NodeError::Peer {
        peer: coordinator.to_string(),
        message: status.message().to_string(),
    };
    let cached = ctx.lookup_universe.lock().map_err(|_| NodeError::Internal("cache lock".into()))?.clone();
    let mut parts = crate::service::peer_client(channel)
        .lookup_vector(proto::LookupVectorRequest {
            contract_id: contract.to_string(),
            epoch: epoch.0,
            session_id: session.as_bytes().to_vec(),
            known_universe: cached.as_ref().map(|u| u.digest().to_vec()).unwrap_or_default(),
        })
        .await
        .map_err(peer_error)?
        .into_inner();
    // A universe of at most max_set_size entries of at most MAX_ENTRY_LEN bytes.
    let max_universe_bytes =
        (ctx.config.limits.max_set_size as usize).saturating_mul(2 + MAX_ENTRY_LEN.min(64));
    let mut universe_bytes = Vec::new();
    let mut download: Option<VectorDownload> = None;
    let mut universe: Option<Arc<Universe>> = None;
    let mut received = 0u64;
    let binding = SessionBinding { contract: contract.clone(), epoch, session };
    loop {
        let next = tokio::time::timeout(ctx.config.timeouts.round(), parts.next())
            .await
            .map_err(|_| NodeError::Timeout(format!("the lookup vector from {coordinator}")))?;
        let part = match next {
            Some(Ok(part)) => part,
            Some(Err(status)) => return Err(peer_error(status)),
            None => {
                return Err(NodeError::Peer {
                    peer: coordinator.to_string(),
                    message: "ended the vector download early".into(),
                })
            }
        };
        received += (part.universe_fragment.len() + part.vector_chunk.len()) as u64;
        if !part.universe_fragment.is_empty() {
            if universe.is_some() || universe_bytes.len() + part.universe_fragment.len() > max_universe_bytes
            {
                return Err(NodeError::Refused(format!(
                    "{coordinator} sent a universe fragment after the vector began, or a universe over this node's limit"
                )));
            }
            universe_bytes.extend_from_slice(&part.universe_fragment);
            continue;
        }
        let state = match download.take() {
            Some(state) => state,
            None => {
                let decoded = match (&cached, universe_bytes.is_empty()) {
                    // No fragments: the coordinator's universe is the one held (the
                    // chunks' universe digest is checked against it below).
                    (Some(held), true) => held.clone(),
                    _ => Arc::new(Universe::from_bytes(&std::mem::take(&mut universe_bytes))?),
                };
                let header = VectorHeader::new(contract.clone(), epoch, &decoded, params.width);
                let state = VectorDownload::new(binding.clone(), coordinator.clone(), header, decoded.len())?;
                universe = Some(decoded);
                state
            }
        };
        note(observed, |o| o.lookup_bytes(Direction::Received, &part.vector_chunk));
        match state.handle(coordinator, &part.vector_chunk)? {
            DownloadNext::More(state) => download = Some(state),
            DownloadNext::Done(vector) => {
                let universe = universe.ok_or_else(|| NodeError::Internal("no universe".into()))?;
                if let Ok(mut held) = ctx.lookup_universe.lock() {
                    *held = Some(universe.clone());
                }
                return Ok((universe, vector, received));
            }
        }
    }
}

/// One OPRF session with `provider` for the query's lookups.
async fn query_provider(
    ctx: &NodeContext,
    query: &LookupQuery,
    contract: &ContractId,
    epoch: Epoch,
    provider: &NodeId,
    observed: &Mutex<Observed>,
) -> Result<ProviderReply, NodeError> {
    let binding = SessionBinding {
        contract: contract.clone(),
        epoch,
        session: SessionId::random(&mut rand::rngs::OsRng),
    };
    ctx.store.claim_session(binding.session.as_bytes(), contract.as_str())?;
    let config = QuerierConfig { binding, provider: provider.clone(), chunk_size: CHUNK_SIZE };
    let (mut session, first) =
        tokio::task::block_in_place(|| query.start_session(config, &mut rand::rngs::OsRng))?;
    let (tx, rx) = mpsc::channel::<proto::Frame>(16);
    for message in &first {
        note(observed, |o| o.lookup_bytes(Direction::Sent, &message.bytes));
        tx.send(proto::Frame { payload: message.bytes.clone() })
            .await
            .map_err(|_| NodeError::Internal("lookup stream closed".into()))?;
    }
    let peer_error = |status: tonic::Status| NodeError::Peer {
        peer: provider.to_string(),
        message: status.message().to_string(),
    };
    let channel = ctx.channel_for_contract(provider, contract.as_str()).await?;
    let mut replies = crate::service::peer_client(channel)
        .lookup(ReceiverStream::new(rx))
        .await
        .map_err(peer_error)?
        .into_inner();
    while !session.is_done() {
        let next = tokio::time::timeout(ctx.config.timeouts.round(), replies.next())
            .await
            .map_err(|_| NodeError::Timeout(format!("a lookup message from {provider}")))?;
        let frame = match next {
            Some(Ok(frame)) => frame,
            Some(Err(status)) => return Err(peer_error(status)),
            None => {
                return Err(NodeError::Peer {
                    peer: provider.to_string(),
                    message: "ended the session early".into(),
                })
            }
        };
        note(observed, |o| o.lookup_bytes(Direction::Received, &frame.payload));
        let (next_state, out): (QuerierSession, _) =
            tokio::task::block_in_place(|| session.handle(provider, &frame.payload))?;
        session = next_state;
        for message in &out {
            note(observed, |o| o.lookup_bytes(Direction::Sent, &message.bytes));
            tx.send(proto::Frame { payload: message.bytes.clone() })
                .await
                .map_err(|_| NodeError::Internal("lookup stream closed".into()))?;
        }
    }
    drop(tx);
    session.into_reply().ok_or_else(|| NodeError::Internal("lookup session finished without a reply".into()))
}

/// The session with itself of a querier that is also a provider: both state machines in
/// this process, nothing on the wire. Its own pads are no secret to it, so no quota is
/// spent; the session is still bound and claimed like any other, so the transcript
/// the report lists is of the same kind.
fn query_own_pads(
    ctx: &NodeContext,
    query: &LookupQuery,
    verified: &VerifiedContract,
    params: &Params,
    epoch: Epoch,
) -> Result<ProviderReply, NodeError> {
    let me = ctx.node_id().clone();
    let binding = SessionBinding {
        contract: verified.id().clone(),
        epoch,
        session: SessionId::random(&mut rand::rngs::OsRng),
    };
    ctx.store.claim_session(binding.session.as_bytes(), verified.id().as_str())?;
    let universe_digest = super::session_universe(ctx, verified, params, epoch)?;
    let key = ctx.secrets.master.derive_oprf_key(verified.id(), epoch, KeyPurpose::LookupProvider)?;
    let lookups = query.lookups().len() as u64;
    let policy = ProviderPolicy { remaining_quota: lookups, max_lookups: lookups };
    let config = ProviderConfig { binding: binding.clone(), querier: me.clone(), universe_digest, policy };
    let mut provider = LookupProvider::new(config, key);
    let querier = QuerierConfig { binding, provider: me.clone(), chunk_size: CHUNK_SIZE };
    let (mut session, first) = query.start_session(querier, &mut rand::rngs::OsRng)?;
    let mut to_provider: std::collections::VecDeque<Vec<u8>> = first.into_iter().map(|m| m.bytes).collect();
    while !session.is_done() {
        let bytes = to_provider
            .pop_front()
            .ok_or_else(|| NodeError::Internal("the session with itself stalled".into()))?;
        let (next, replies) = provider.handle(&me, &bytes)?;
        provider = next;
        for reply in replies {
            let (next, out) = session.handle(&me, &reply.bytes)?;
            session = next;
            to_provider.extend(out.into_iter().map(|m| m.bytes));
        }
    }
    let mut reply = session
        .into_reply()
        .ok_or_else(|| NodeError::Internal("lookup session finished without a reply".into()))?;
    // Nothing crossed the wire: the traffic figures count only real sessions.
    reply.bytes_sent = 0;
    reply.bytes_received = 0;
    Ok(reply)
}

/// One applicant's result as the report and the output file show it.
fn result_json(
    params: &Params,
    layout: Option<&BitLayout>,
    me_rules: &[(NodeId, u32)],
    signed: bool,
    value: LookupValue,
) -> serde_json::Value {
    let LookupValue::Value(v) = value else {
        return serde_json::json!({ "registered": false });
    };
    match (params.output, layout) {
        (LookupOutput::Bitmask, Some(layout)) => {
            let mut criteria = Vec::new();
            let mut all = true;
            for (provider, rules) in me_rules {
                let mask = layout.extract(provider, v).unwrap_or(0);
                for i in 0..*rules {
                    let holds = mask >> i & 1 == 1;
                    all &= holds;
                    criteria.push(holds);
                }
            }
            serde_json::json!({ "registered": true, "mask": v, "criteria": criteria, "all": all })
        }
        _ if params.output == LookupOutput::Value => serde_json::json!({ "registered": true, "value": v }),
        _ => {
            let score = if signed { params.width.decode_signed(v) } else { v as i64 };
            serde_json::json!({ "registered": true, "value": score })
        }
    }
}

/// `units` with `scale` decimal places, as the output file shows a summed balance.
fn decimal_text(units: u64, scale: u8) -> String {
    if scale == 0 {
        return units.to_string();
    }
    let divisor = 10u128.pow(u32::from(scale));
    let units = u128::from(units);
    format!("{}.{:0width$}", units / divisor, units % divisor, width = usize::from(scale))
}

fn report(
    ctx: &NodeContext,
    verified: &VerifiedContract,
    params: &Params,
    dataset: &str,
    keys: &[String],
    run: &Finished,
    wall_s: f64,
) -> Result<serde_json::Value, NodeError> {
    let rule_counts = params.rule_counts(verified);
    let layout = match params.output {
        LookupOutput::Bitmask => Some(params.bit_layout(verified)?),
        LookupOutput::Points | LookupOutput::Value => None,
    };
    let signed = params
        .providers
        .iter()
        .filter_map(|p| verified.contract().dataset_for(p, Role::Provider))
        .any(|d| d.rules.iter().any(|r| r.points < 0));
    let mut results = serde_json::Map::new();
    let mut csv = match params.output {
        LookupOutput::Bitmask => String::from("credit_code,registered,mask,criteria,all\n"),
        LookupOutput::Points | LookupOutput::Value => String::from("credit_code,registered,value\n"),
    };
    let mut registered = 0u64;
    for (key, value) in keys.iter().zip(&run.output.results) {
        let json = result_json(params, layout.as_ref(), &rule_counts, signed, *value);
        if json["registered"] == true {
            registered += 1;
        }
        match params.output {
            LookupOutput::Bitmask if json["registered"] == true => {
                let criteria: String = json["criteria"]
                    .as_array()
                    .map(|c| c.iter().map(|b| if b == true { '1' } else { '0' }).collect())
                    .unwrap_or_default();
                let _ = writeln!(csv, "{},true,{},{},{}", key, json["mask"], criteria, json["all"]);
            }
            LookupOutput::Points if json["registered"] == true => {
                let _ = writeln!(csv, "{},true,{}", key, json["value"]);
            }
            LookupOutput::Value if json["registered"] == true => {
                let units = json["value"].as_u64().unwrap_or(0);
                let _ = writeln!(csv, "{},true,{}", key, decimal_text(units, params.scale));
            }
            LookupOutput::Bitmask => {
                let _ = writeln!(csv, "{},false,,,", key);
            }
            LookupOutput::Points | LookupOutput::Value => {
                let _ = writeln!(csv, "{},false,", key);
            }
        }
        results.insert(key.clone(), json);
    }
    let path = crate::run::write_output(
        ctx,
        &format!("lookup-{}-{}.csv", verified.id(), run.session),
        csv.as_bytes(),
    )?;
    let output = match params.output {
        LookupOutput::Bitmask => "bitmask",
        LookupOutput::Points => "points",
        LookupOutput::Value => "value",
    };
    Ok(serde_json::json!({
        "computation": "lookup",
        "contract": verified.id().as_str(),
        "dataset": dataset,
        "output": output,
        "width": params.width.bits(),
        "scale": params.scale,
        "providers": params.providers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "coordinator": params.coordinator.to_string(),
        "applicants": keys.len(),
        "registered": registered,
        "not_registered": keys.len() as u64 - registered,
        "lookups": run.output.lookups,
        "universe_size": run.universe_len,
        "universe_digest": hex::encode(run.universe_digest),
        "results": results,
        "output_file": path.display().to_string(),
        "bytes_vector": run.vector_bytes,
        "bytes_query": run.query_bytes,
        "bytes_total": run.vector_bytes + run.query_bytes,
        "vector_s": run.vector_s,
        "query_s": run.query_s,
        "wall_s": wall_s,
        "transcripts": run.output.transcripts.iter().map(|(p, d)| (p.to_string(), serde_json::Value::String(hex::encode(d)))).collect::<serde_json::Map<_, _>>(),
        "observations": [
            "the querier learns the result for its own registered applicants only; every other entry of the vector is padded with a PRF value of keys it does not hold",
            "each provider learns the number of lookups of the session (distinct registered applicants)",
            "the coordinator serves a vector that is uniformly random to anyone without the providers' keys",
        ],
    }))
}

#[cfg(test)]
mod tests {
    use super::decimal_text;

    #[test]
    fn summed_units_print_with_the_contract_scale() {
        assert_eq!(decimal_text(123_456, 2), "1234.56");
        assert_eq!(decimal_text(5, 2), "0.05");
        assert_eq!(decimal_text(0, 3), "0.000");
        assert_eq!(decimal_text(42, 0), "42");
        assert_eq!(decimal_text(u64::MAX, 18), "18.446744073709551615");
    }
}
