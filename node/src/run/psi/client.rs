//! The client's side of a PSI run: checks, the session loop, the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tracing::Instrument;
use xmcredit_contracts::audit::Outcome;
use xmcredit_contracts::{ComputationKind, CountNoise, PsiOutput, Role, VerifiedContract};
use xmcredit_crypto::{ContractId, Epoch, NodeId, SessionId};
use xmcredit_protocol::psi::{ClientConfig, ClientOutput, ClientPolicy, PsiClient, PsiMessage};
use xmcredit_protocol::SessionBinding;

use super::{
    form_of, frame, min_set_size, psi_parameters, receiver_form, PsiParameters, CHUNK_SIZE,
    SESSION_DEADLINE_ROUNDS,
};
use crate::context::NodeContext;
use crate::proto;
use crate::run::observed::{Direction, Observed};
use crate::run::{contract_dataset, failed, finish_job, start_job, verified_contract, RunOutcome, Traffic};
use crate::service::admin::ProgressSender;
use crate::store::JobState;
use crate::NodeError;

/// What the client checked before a run.
struct ClientRun {
    verified: VerifiedContract,
    epoch: Epoch,
    output: PsiOutput,
    /// Noise the contract declares on the count.
    noise: Option<CountNoise>,
    server: NodeId,
    meta: crate::store::DatasetVersion,
    /// The client's set, in key order: its working set (the protocol blinds all of it).
    keys: Vec<String>,
}

/// The client's checks before it sends anything: the contract (with signatures it may
/// have missed), its role and output, the server, its dataset and its own minimum.
async fn prepare_client(
    ctx: &Arc<NodeContext>,
    contract_id: &str,
    dataset: &str,
) -> Result<ClientRun, NodeError> {
    crate::service::contracts::sync_signatures(ctx, contract_id).await?;
    let (_, verified, epoch) = verified_contract(ctx, contract_id)?;
    let me = ctx.node_id().clone();
    verified.require_role(&me, Role::Client)?;
    let PsiParameters { output, noise, .. } = psi_parameters(&verified)?;
    verified.require_receiver(&me, receiver_form(output))?;
    let server = verified
        .contract()
        .parties_with(Role::Server)
        .next()
        .map(|p| p.node.clone())
        .ok_or_else(|| NodeError::Refused(format!("contract {contract_id} names no server")))?;
    let meta = contract_dataset(ctx, &verified, &me, Role::Client, dataset)?;
    verified.require_min_set_size(&me, meta.rows)?;
    let keys = ctx.store.dataset_keys(&meta)?;
    Ok(ClientRun { verified, epoch, output, noise, server, meta, keys })
}

/// Runs the client side of a PSI under `contract_id`: the operator's `run psi`.
pub async fn run_client(
    ctx: Arc<NodeContext>,
    contract_id: &str,
    dataset: &str,
    progress: ProgressSender,
) -> Result<serde_json::Value, NodeError> {
    let started = Instant::now();
    // A run this node refuses before it starts is audited like a peer's refusal.
    let prepared = prepare_client(&ctx, contract_id, dataset).await.map_err(|error| {
        let contract = ContractId::new(contract_id).ok();
        ctx.refuse(contract.as_ref(), None, error)
    })?;
    let ClientRun { verified, epoch, output, noise, server, meta, keys } = prepared;
    let me = ctx.node_id().clone();
    let binding = SessionBinding {
        contract: verified.id().clone(),
        epoch,
        session: SessionId::random(&mut rand::rngs::OsRng),
    };
    ctx.store.claim_session(binding.session.as_bytes(), contract_id)?;
    let span = tracing::info_span!("psi", node = %me, contract = %contract_id, session = %binding.session, role = "client");
    let mut job = start_job(
        &ctx,
        ComputationKind::Psi,
        &verified,
        "client",
        binding.session.to_string(),
        vec![server.to_string()],
    )?;
    progress.attach(&ctx, job.id);
    tracing::info!(n = keys.len(), server = %server, "psi client starting");
    let config = ClientConfig {
        binding,
        server: server.clone(),
        form: form_of(output),
        chunk_size: CHUNK_SIZE,
        policy: ClientPolicy {
            min_server_set_size: min_set_size(&verified, &server),
            count_noise_epsilon_milli: noise.map(|noise| noise.epsilon_milli()),
        },
    };
    let mut observed = Observed::default();
    // Each message has the round timeout; the whole session has a deadline too, so a
    // peer trickling messages cannot keep a job running for ever.
    let deadline = ctx.config.timeouts.round() * SESSION_DEADLINE_ROUNDS;
    let result = match tokio::time::timeout(
        deadline,
        drive_client(&ctx, config, &keys, &progress, &mut observed).instrument(span.clone()),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => {
            Err(NodeError::Timeout(format!("the whole psi session with {server} ({} s)", deadline.as_secs())))
        }
    };
    let _enter = span.enter();
    match result {
        Ok(output) => {
            let report =
                client_report(&verified, &meta.name, &keys, &output, started.elapsed().as_secs_f64());
            let mut sizes = BTreeMap::new();
            sizes.insert(me.clone(), keys.len() as u64);
            sizes.insert(server.clone(), output.server_set_size);
            match (&output.labels, &output.intersection) {
                (Some(labels), _) => observed.wrote("labels", labels.len() as u64),
                (None, Some(matches)) => observed.wrote("intersection", matches.len() as u64),
                (None, None) => observed.wrote("cardinality", 1),
            }
            job.observed = Some(observed);
            finish_job(
                &ctx,
                &mut job,
                &verified,
                RunOutcome {
                    state: JobState::Succeeded,
                    detail: format!("{} matches of {} ({})", output.cardinality, keys.len(), output.form),
                    set_sizes: sizes,
                    transcript_digest: Some(output.transcript_digest),
                    outcome: Outcome::Ok,
                    traffic: Some(Traffic { sent: output.bytes_sent, received: output.bytes_received }),
                    // The client's result goes back to the operator in the report; it
                    // writes no file.
                    output_files: Vec::new(),
                },
            );
            tracing::info!(matches = output.cardinality, "psi client done");
            Ok(report)
        }
        Err(error) => {
            tracing::warn!(error = %error, "psi client failed");
            job.observed = Some(observed);
            finish_job(&ctx, &mut job, &verified, failed(&error));
            Err(error)
        }
    }
}

async fn drive_client(
    ctx: &NodeContext,
    config: ClientConfig,
    keys: &[String],
    progress: &ProgressSender,
    observed: &mut Observed,
) -> Result<ClientOutput, NodeError> {
    let server = config.server.clone();
    let contract = config.binding.contract.clone();
    let inputs: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
    let total = inputs.len() as u64;
    // Blinding and unblinding are CPU work (parallel inside crypto): off the I/O threads.
    let (mut client, first) =
        tokio::task::block_in_place(|| PsiClient::start(config, inputs, &mut rand::rngs::OsRng))?;
    let (tx, rx) = mpsc::channel::<proto::Frame>(16);
    for message in &first {
        observed.psi_bytes(Direction::Sent, &message.bytes);
        crate::run::fault::exit_before_psi_send("client", message.kind);
        tx.send(frame(message)).await.map_err(|_| NodeError::Internal("psi stream closed".into()))?;
    }
    let channel = ctx.channel_for_contract(&server, contract.as_str()).await?;
    let mut replies = crate::service::peer_client(channel)
        .psi(ReceiverStream::new(rx))
        .await
        .map_err(|status| NodeError::Peer {
            peer: server.to_string(),
            message: status.message().to_string(),
        })?
        .into_inner();
    let mut evaluated = 0u64;
    while !client.is_done() {
        let next = tokio::time::timeout(ctx.config.timeouts.round(), replies.next())
            .await
            .map_err(|_| NodeError::Timeout(format!("a psi message from {server}")))?;
        let frame_in = match next {
            Some(Ok(frame)) => frame,
            Some(Err(status)) => {
                return Err(NodeError::Peer {
                    peer: server.to_string(),
                    message: status.message().to_string(),
                })
            }
            None => {
                return Err(NodeError::Peer {
                    peer: server.to_string(),
                    message: "ended the session early".into(),
                })
            }
        };
        let decoded = PsiMessage::from_bytes(&frame_in.payload);
        if let Ok(message) = &decoded {
            observed.psi(Direction::Received, message);
        }
        match decoded {
            Ok(PsiMessage::EvaluatedChunk(chunk)) => {
                evaluated += chunk.elements.len() as u64;
                progress.progress("evaluated", evaluated, total);
                crate::run::fault::exit_if_asked(crate::run::fault::PSI_CLIENT_AFTER_FIRST_REPLY);
            }
            // A server announcing more tags than this node would ever process is refused
            // before it can stream them.
            Ok(PsiMessage::HelloAck(ack)) if ack.server_set_size > ctx.config.limits.max_set_size => {
                return Err(NodeError::Refused(format!(
                    "{server} announces {} elements; this node takes at most {} (limits.max_set_size)",
                    ack.server_set_size, ctx.config.limits.max_set_size
                )));
            }
            _ => {}
        }
        let (next_state, out) = tokio::task::block_in_place(|| client.handle(&server, &frame_in.payload))?;
        client = next_state;
        for message in &out {
            observed.psi_bytes(Direction::Sent, &message.bytes);
            crate::run::fault::exit_before_psi_send("client", message.kind);
            tx.send(frame(message)).await.map_err(|_| NodeError::Internal("psi stream closed".into()))?;
        }
    }
    // End our side and wait for the server to end its own: it may still be reading our
    // last message (the Both form's MatchReport), and dropping the call would reset it.
    drop(tx);
    match tokio::time::timeout(ctx.config.timeouts.round(), replies.next()).await {
        Ok(None) => {}
        Ok(Some(Ok(_))) => {
            return Err(NodeError::Peer {
                peer: server.to_string(),
                message: "sent a message after the last".into(),
            })
        }
        Ok(Some(Err(status))) => {
            return Err(NodeError::Peer { peer: server.to_string(), message: status.message().to_string() })
        }
        Err(_) => return Err(NodeError::Timeout(format!("{server} to close the session"))),
    }
    client.into_output().ok_or_else(|| NodeError::Internal("psi client finished without output".into()))
}

fn client_report(
    verified: &VerifiedContract,
    dataset: &str,
    keys: &[String],
    output: &ClientOutput,
    wall_s: f64,
) -> serde_json::Value {
    // What the count carries, so nobody reads a noisy count as an exact one.
    let noise = match output.noise {
        Some(applied) => serde_json::json!({
            "mechanism": "discrete_laplace",
            "epsilon_milli": applied.epsilon_milli,
            "dummies": applied.dummies,
            // The count is within ± this of the exact one (the clamp).
            "bound": applied.dummies / 2,
            "runs": "one per epoch",
        }),
        None => serde_json::Value::Null,
    };
    let intersection: Option<Vec<&str>> = output
        .intersection
        .as_ref()
        .map(|indices| indices.iter().filter_map(|&i| keys.get(i)).map(String::as_str).collect());
    let labels: Option<BTreeMap<&str, serde_json::Value>> = output.labels.as_ref().map(|labels| {
        labels
            .iter()
            .filter_map(|(i, label)| {
                let text = String::from_utf8_lossy(label);
                let value = serde_json::from_str(text.trim_end())
                    .unwrap_or(serde_json::Value::String(text.into_owned()));
                keys.get(*i).map(|k| (k.as_str(), value))
            })
            .collect()
    });
    serde_json::json!({
        "computation": "psi",
        "contract": verified.id().as_str(),
        "dataset": dataset,
        "output": output.form.to_string(),
        "client_set_size": keys.len(),
        "server_set_size": output.server_set_size,
        "cardinality": output.cardinality,
        "noise": noise,
        "intersection": intersection,
        "labels": labels,
        "bytes_sent": output.bytes_sent,
        "bytes_received": output.bytes_received,
        "wall_s": wall_s,
        "transcript_digest": hex::encode(output.transcript_digest),
    })
}
