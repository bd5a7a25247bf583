//! The coordinator's job: `run overthreshold --contract X` on the node the contract
//! names as coordinator (normally the credit center). It opens a stream to every
//! contributor, counts their tags, answers each with its own items at or over the
//! threshold, and keeps the histogram the contract grants it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tracing::Instrument;
use xmcredit_contracts::audit::Outcome;
use xmcredit_contracts::{ComputationKind, OutputForm, Role, VerifiedContract};
use xmcredit_crypto::{ContractId, NodeId, SessionId};
use xmcredit_protocol::overthreshold::{
    CoordinatorCollecting, CoordinatorConfig, CoordinatorOutput, Parameters,
};
use xmcredit_protocol::SessionBinding;

use super::{names, parameters, CHUNK_SIZE, FAULT_COORDINATOR_BEFORE_RESULTS, OUTGOING_FRAMES};
use crate::context::NodeContext;
use crate::proto;
use crate::run::observed::{Direction, Observed};
use crate::run::{failed, finish_job, report_output, start_job, verified_contract, RunOutcome, Traffic};
use crate::service::admin::ProgressSender;
use crate::store::JobState;
use crate::NodeError;

/// Everything checked before any stream opens.
struct Prepared {
    verified: VerifiedContract,
    binding: SessionBinding,
    params: Parameters,
}

fn prepare(ctx: &NodeContext, contract_id: &str, dataset: &str) -> Result<Prepared, NodeError> {
    let (_, verified, epoch) = verified_contract(ctx, contract_id)?;
    let me = ctx.node_id().clone();
    let party = verified.require_role(&me, Role::Coordinator)?;
    if party.roles.contains(&Role::Contributor) {
        return Err(NodeError::Refused(format!(
            "contract {contract_id} makes {me} both coordinator and contributor, which this node does not support yet"
        )));
    }
    if !dataset.is_empty() {
        return Err(NodeError::Refused(format!(
            "the coordinator of an overthreshold contract brings no dataset (asked for {dataset})"
        )));
    }
    verified.require_receiver(&me, OutputForm::Histogram)?;
    let params = parameters(ctx, &verified)?;
    let binding = SessionBinding {
        contract: verified.id().clone(),
        epoch,
        session: SessionId::random(&mut rand::rngs::OsRng),
    };
    ctx.store.claim_session(binding.session.as_bytes(), verified.id().as_str())?;
    Ok(Prepared { verified, binding, params })
}

/// Runs the coordinator of an overthreshold computation under `contract_id`.
pub async fn run_coordinator(
    ctx: Arc<NodeContext>,
    contract_id: &str,
    dataset: &str,
    progress: ProgressSender,
) -> Result<serde_json::Value, NodeError> {
    let started = Instant::now();
    crate::service::contracts::sync_signatures(&ctx, contract_id).await?;
    let prepared = match tokio::task::block_in_place(|| prepare(&ctx, contract_id, dataset)) {
        Ok(prepared) => prepared,
        Err(error) => {
            let contract = ContractId::new(contract_id).ok();
            return Err(ctx.refuse(contract.as_ref(), None, error));
        }
    };
    let Prepared { verified, binding, params } = prepared;
    let span = tracing::info_span!("overthreshold", node = %ctx.node_id(), contract = %contract_id, session = %binding.session, role = "coordinator");
    let mut job = start_job(
        &ctx,
        ComputationKind::Overthreshold,
        &verified,
        "coordinator",
        binding.session.to_string(),
        params.contributors().iter().map(ToString::to_string).collect(),
    )?;
    progress.attach(&ctx, job.id);
    let mut reasons: BTreeMap<NodeId, String> = BTreeMap::new();
    let mut observed = Observed::default();
    let result =
        drive(&ctx, &binding, &params, &progress, &mut reasons, &mut observed).instrument(span.clone()).await;
    match result {
        Ok(output) => {
            let wall_s = started.elapsed().as_secs_f64();
            let report = report(&ctx, &verified, &binding, &params, &output, &reasons, wall_s);
            if report.is_ok() {
                observed.wrote("histogram", output.histogram.len() as u64);
            }
            job.observed = Some(observed);
            let sizes = output.set_sizes.iter().cloned().collect();
            let detail = match &report {
                Ok(report) => format!(
                    "{} banks counted ({}), missing: {}; histogram in {}",
                    output.counted.len(),
                    names(&output.counted),
                    names(&output.missing),
                    report["output_file"].as_str().unwrap_or("-")
                ),
                Err(e) => format!("histogram NOT SAVED: {e}"),
            };
            tracing::info!(parent: &span, counted = output.counted.len(), missing = output.missing.len(), "overthreshold coordinator done");
            finish_job(
                &ctx,
                &mut job,
                &verified,
                RunOutcome {
                    state: JobState::Succeeded,
                    detail,
                    set_sizes: sizes,
                    transcript_digest: None,
                    outcome: Outcome::Ok,
                    traffic: report.as_ref().ok().and_then(Traffic::from_report),
                    output_files: report.as_ref().map(report_output).unwrap_or_default(),
                },
            );
            report
        }
        Err(error) => {
            job.observed = Some(observed);
            tracing::warn!(parent: &span, error = %error, "overthreshold coordinator failed");
            let mut outcome = failed(&error);
            if !reasons.is_empty() {
                let why: Vec<String> = reasons.iter().map(|(n, r)| format!("{n}: {r}")).collect();
                outcome.detail = format!("{} ({})", outcome.detail, why.join("; "));
                outcome.outcome = match outcome.outcome {
                    Outcome::Refused { .. } => Outcome::Refused { reason: outcome.detail.clone() },
                    _ => Outcome::Failed { reason: outcome.detail.clone() },
                };
            }
            finish_job(&ctx, &mut job, &verified, outcome);
            match reasons.is_empty() {
                true => Err(error),
                false => {
                    let why: Vec<String> = reasons.iter().map(|(n, r)| format!("{n}: {r}")).collect();
                    Err(NodeError::Refused(format!("{error} ({})", why.join("; "))))
                }
            }
        }
    }
}

/// A contributor's stream: a tag chunk, or the stream failing or ending.
enum BankEvent {
    Frame(NodeId, Vec<u8>),
    Failed(NodeId, String),
    Ended(NodeId),
}

async fn drive(
    ctx: &Arc<NodeContext>,
    binding: &SessionBinding,
    params: &Parameters,
    progress: &ProgressSender,
    reasons: &mut BTreeMap<NodeId, String>,
    observed: &mut Observed,
) -> Result<CoordinatorOutput, NodeError> {
    let config =
        CoordinatorConfig { binding: binding.clone(), parameters: params.clone(), chunk_size: CHUNK_SIZE };
    let (mut collecting, announces) = CoordinatorCollecting::new(config)?;
    let contributors = params.contributors().len();
    let (event_tx, mut events) = mpsc::channel::<BankEvent>(OUTGOING_FRAMES * contributors);
    let mut senders: HashMap<NodeId, mpsc::Sender<proto::Frame>> = HashMap::new();
    for announce in announces {
        observed.overthreshold_bytes(Direction::Sent, &announce.bytes);
        let (tx, rx) = mpsc::channel::<proto::Frame>(OUTGOING_FRAMES);
        // The Announce is queued before the call: a contributor reads it first.
        let _ = tx.send(proto::Frame { payload: announce.bytes }).await;
        senders.insert(announce.to.clone(), tx);
        tokio::spawn(open_bank(ctx.clone(), binding.contract.clone(), announce.to, rx, event_tx.clone()));
    }
    drop(event_tx);
    let mut failed: Vec<NodeId> = Vec::new();
    let round = ctx.config.timeouts.round();
    // A bank sends nothing while the committee evaluates its set (minutes for large
    // sets), so silence is not failure: each bank times its members out itself and
    // reports. The coordinator waits for every bank's tags or failure, up to the
    // session's deadline.
    let deadline = round * super::SESSION_DEADLINE_ROUNDS;
    let closing = tokio::time::Instant::now() + deadline;
    loop {
        if collecting.is_complete() || collecting.missing().iter().all(|m| failed.contains(m)) {
            break;
        }
        let event = match tokio::time::timeout_at(closing, events.recv()).await {
            Err(_) => {
                for missing in collecting.missing() {
                    reasons.entry(missing).or_insert_with(|| {
                        format!("sent no complete tag set within {} s", deadline.as_secs())
                    });
                }
                break;
            }
            Ok(None) => break,
            Ok(Some(event)) => event,
        };
        match event {
            BankEvent::Frame(bank, bytes) => {
                observed.overthreshold_bytes(Direction::Received, &bytes);
                if let Err(error) = tokio::task::block_in_place(|| collecting.receive(&bank, &bytes)) {
                    tracing::warn!(bank = %bank, error = %error, "overthreshold tag chunk refused");
                    reasons.insert(bank, error.to_string());
                }
                let done = contributors - collecting.missing().len();
                progress.progress("tag sets", done as u64, contributors as u64);
            }
            BankEvent::Failed(bank, reason) => {
                tracing::warn!(bank = %bank, %reason, "overthreshold contributor failed");
                reasons.insert(bank.clone(), reason);
                failed.push(bank);
            }
            BankEvent::Ended(bank) => {
                if collecting.missing().contains(&bank) {
                    reasons
                        .entry(bank.clone())
                        .or_insert_with(|| "ended its stream without a whole tag set".into());
                    failed.push(bank);
                }
            }
        }
    }
    let (output, results) = tokio::task::block_in_place(|| collecting.close())?;
    crate::run::fault::exit_if_asked(FAULT_COORDINATOR_BEFORE_RESULTS);
    for message in results {
        observed.overthreshold_bytes(Direction::Sent, &message.bytes);
        if let Some(sender) = senders.get(&message.to) {
            if sender.send(proto::Frame { payload: message.bytes }).await.is_err() {
                tracing::warn!(bank = %message.to, "overthreshold contributor left before its result");
            }
        }
    }
    // Ending the request streams ends each session; wait for the contributors to close
    // theirs, so that they have written their results when the run returns.
    drop(senders);
    let grace = tokio::time::Instant::now() + round;
    while let Ok(Some(_)) = tokio::time::timeout_at(grace, events.recv()).await {}
    Ok(output)
}

/// Opens the `Overthreshold` stream to `bank` and forwards its frames.
async fn open_bank(
    ctx: Arc<NodeContext>,
    contract: ContractId,
    bank: NodeId,
    requests: mpsc::Receiver<proto::Frame>,
    events: mpsc::Sender<BankEvent>,
) {
    let channel = match ctx.channel_for_contract(&bank, contract.as_str()).await {
        Ok(channel) => channel,
        Err(error) => {
            let _ = events.send(BankEvent::Failed(bank, format!("unreachable: {error}"))).await;
            return;
        }
    };
    let mut replies =
        match crate::service::peer_client(channel).overthreshold(ReceiverStream::new(requests)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let _ = events.send(BankEvent::Failed(bank, status.message().to_string())).await;
                return;
            }
        };
    while let Some(item) = replies.next().await {
        let event = match item {
            Ok(frame) => BankEvent::Frame(bank.clone(), frame.payload),
            Err(status) => BankEvent::Failed(bank.clone(), status.message().to_string()),
        };
        let failed = matches!(event, BankEvent::Failed(..));
        if events.send(event).await.is_err() || failed {
            return;
        }
    }
    let _ = events.send(BankEvent::Ended(bank)).await;
}

/// The coordinator's report, and its output (the histogram the contract grants it) in
/// `outputs/overthreshold-histogram-<contract>-<session>.json`.
fn report(
    ctx: &NodeContext,
    verified: &VerifiedContract,
    binding: &SessionBinding,
    params: &Parameters,
    output: &CoordinatorOutput,
    reasons: &BTreeMap<NodeId, String>,
    wall_s: f64,
) -> Result<serde_json::Value, NodeError> {
    let histogram: serde_json::Map<String, serde_json::Value> =
        output.histogram.iter().map(|(m, count)| (m.to_string(), serde_json::json!(count))).collect();
    let pairs: Vec<serde_json::Value> = output
        .pairs
        .iter()
        .map(|p| serde_json::json!({ "a": p.a.as_str(), "b": p.b.as_str(), "shared": p.shared }))
        .collect();
    let set_sizes: serde_json::Map<String, serde_json::Value> =
        output.set_sizes.iter().map(|(n, size)| (n.to_string(), serde_json::json!(size))).collect();
    let missing: serde_json::Map<String, serde_json::Value> = output
        .missing
        .iter()
        .map(|n| (n.to_string(), serde_json::json!(reasons.get(n).cloned().unwrap_or_default())))
        .collect();
    let output_json = serde_json::json!({
        "contract": verified.id().as_str(),
        "session": binding.session.to_string(),
        "epoch": binding.epoch.0,
        "threshold": params.threshold(),
        "counted": output.counted.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "histogram": histogram,
        "pairs": pairs,
    });
    let text = serde_json::to_vec_pretty(&output_json).map_err(|e| NodeError::Internal(e.to_string()))?;
    let path = crate::run::write_output(
        ctx,
        &format!("overthreshold-histogram-{}-{}.json", verified.id(), binding.session),
        &text,
    )?;
    Ok(serde_json::json!({
        "computation": "overthreshold",
        "contract": verified.id().as_str(),
        "session": binding.session.to_string(),
        "epoch": binding.epoch.0,
        "threshold": params.threshold(),
        "tag_bits": params.tag_bits(),
        "committee": params.committee().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "contributors": params.contributors().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "counted": output.counted.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "missing": missing,
        "set_sizes": set_sizes,
        "histogram": histogram,
        "pairs": pairs,
        "bytes_sent": output.traffic.bytes_sent,
        "bytes_received": output.traffic.bytes_received,
        "wall_s": wall_s,
        "output_file": path.display().to_string(),
        "observations": [
            "the coordinator sees each bank's n and its tags: pseudorandom under a key no single node holds, so it learns for every distinct tag which banks hold it (the histogram and pair counts), never an item",
            "each committee member learns n of each bank that asks it, and counts it against the bank's daily quota",
            "each bank learns which of its own items are held by threshold or more banks, and how many",
        ],
    }))
}
