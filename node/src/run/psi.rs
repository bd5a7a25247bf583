//! PSI between two nodes (design.md computation 1): the client's job (`run psi`) and
//! the server's session handler, both driving `xmcredit_protocol::psi` over one
//! bidirectional gRPC stream of frames.
//!
//! The server decides everything that could leak from its side before answering: the
//! contract (verified now, this epoch), the caller's role, the output form, the session
//! id never seen before (replay), the client's minimum set size and daily quota.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Response, Status, Streaming};
use tracing::Instrument;
use xmcredit_contracts::audit::Outcome;
use xmcredit_contracts::{
    lookup_day, Computation, ComputationKind, OutputForm, PsiOutput, Role, VerifiedContract,
};
use xmcredit_crypto::keys::KeyPurpose;
use xmcredit_crypto::{ContractId, Epoch, NodeId, SessionId};
use xmcredit_protocol::psi::{
    ClientConfig, ClientOutput, ClientPolicy, DatasetVersion as SetVersion, OutgoingMessage, PsiClient,
    PsiMessage, PsiMessageKind, PsiOutputForm, PsiServer, ServerConfig, ServerOutput, ServerPolicy,
    ServerSet, ServerSetId,
};
use xmcredit_protocol::SessionBinding;

use super::{contract_dataset, failed, finish_job, start_job, verified_contract, RunOutcome};
use crate::context::NodeContext;
use crate::proto;
use crate::service::admin::ProgressSender;
use crate::service::ResponseStream;
use crate::store::{DatasetRow, JobState};
use crate::NodeError;

/// A session's deadline, in round timeouts.
const SESSION_DEADLINE_ROUNDS: u32 = 30;

/// Elements per chunk on the wire: 8192 × 32 bytes = 256 KiB frames.
const CHUNK_SIZE: u32 = 8192;

/// Fault injection (tests and the simulator; see `run::secagg::fault`): with
/// `XMCREDIT_TEST_EXIT_AT=psi-client-after-first-reply` a client process exits, as a
/// crash would, once the server has answered its first chunk: mid-protocol, exactly.
const PSI_CLIENT_EXIT_POINT: &str = "psi-client-after-first-reply";

fn exit_if_asked(point: &str) {
    if std::env::var("XMCREDIT_TEST_EXIT_AT").is_ok_and(|v| v.trim() == point) {
        tracing::warn!(point, "XMCREDIT_TEST_EXIT_AT: exiting the process (fault injection)");
        std::process::exit(86);
    }
}

/// The cache key of an evaluated server set: (contract, epoch, dataset name, version).
pub type ServerSetKey = (ContractId, Epoch, String, u64);
/// An evaluated server set and the rows it was built from (to name the both form's
/// matches).
pub type CachedServerSet = (Arc<ServerSet>, Arc<Vec<DatasetRow>>);

fn form_of(output: PsiOutput) -> PsiOutputForm {
    match output {
        PsiOutput::Intersection => PsiOutputForm::Intersection,
        PsiOutput::Cardinality => PsiOutputForm::Cardinality,
        PsiOutput::Both => PsiOutputForm::Both,
        PsiOutput::Labels => PsiOutputForm::Labels,
    }
}

/// The output form the contract grants `node` as a receiver.
fn receiver_form(output: PsiOutput) -> OutputForm {
    match output {
        PsiOutput::Cardinality => OutputForm::Cardinality,
        PsiOutput::Labels => OutputForm::Labels,
        PsiOutput::Intersection | PsiOutput::Both => OutputForm::Intersection,
    }
}

fn psi_parameters(verified: &VerifiedContract) -> Result<(PsiOutput, Vec<String>), NodeError> {
    match &verified.contract().computation {
        Computation::Psi { output, label_columns } => Ok((*output, label_columns.clone())),
        other => {
            Err(NodeError::Refused(format!("contract {} is for {}, not psi", verified.id(), other.kind())))
        }
    }
}

fn min_set_size(verified: &VerifiedContract, node: &NodeId) -> u64 {
    verified.contract().limits.min_set_size.get(node).copied().unwrap_or(1).max(1)
}

fn frame(message: &OutgoingMessage) -> proto::Frame {
    proto::Frame { payload: message.bytes.clone() }
}

/// What the client checked before a run.
struct ClientRun {
    verified: VerifiedContract,
    epoch: Epoch,
    output: PsiOutput,
    server: NodeId,
    meta: crate::store::DatasetVersion,
    rows: Vec<DatasetRow>,
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
    let (output, _) = psi_parameters(&verified)?;
    verified.require_receiver(&me, receiver_form(output))?;
    let server = verified
        .contract()
        .parties_with(Role::Server)
        .next()
        .map(|p| p.node.clone())
        .ok_or_else(|| NodeError::Refused(format!("contract {contract_id} names no server")))?;
    let (meta, rows) = contract_dataset(ctx, &verified, &me, dataset)?;
    verified.require_min_set_size(&me, rows.len() as u64)?;
    Ok(ClientRun { verified, epoch, output, server, meta, rows })
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
    let ClientRun { verified, epoch, output, server, meta, rows } = prepared;
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
    tracing::info!(n = rows.len(), server = %server, "psi client starting");
    let config = ClientConfig {
        binding,
        server: server.clone(),
        form: form_of(output),
        chunk_size: CHUNK_SIZE,
        policy: ClientPolicy { min_server_set_size: min_set_size(&verified, &server) },
    };
    // Each message has the round timeout; the whole session has a deadline too, so a
    // peer trickling messages cannot keep a job running for ever.
    let deadline = ctx.config.timeouts.round() * SESSION_DEADLINE_ROUNDS;
    let result = match tokio::time::timeout(
        deadline,
        drive_client(&ctx, config, &rows, &progress).instrument(span.clone()),
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
                client_report(&verified, &meta.name, &rows, &output, started.elapsed().as_secs_f64());
            let mut sizes = BTreeMap::new();
            sizes.insert(me.clone(), rows.len() as u64);
            sizes.insert(server.clone(), output.server_set_size);
            finish_job(
                &ctx,
                &mut job,
                &verified,
                RunOutcome {
                    state: JobState::Succeeded,
                    detail: format!("{} matches of {} ({})", output.cardinality, rows.len(), output.form),
                    set_sizes: sizes,
                    transcript_digest: Some(output.transcript_digest),
                    outcome: Outcome::Ok,
                },
            );
            tracing::info!(matches = output.cardinality, "psi client done");
            Ok(report)
        }
        Err(error) => {
            tracing::warn!(error = %error, "psi client failed");
            finish_job(&ctx, &mut job, &verified, failed(&error));
            Err(error)
        }
    }
}

async fn drive_client(
    ctx: &NodeContext,
    config: ClientConfig,
    rows: &[DatasetRow],
    progress: &ProgressSender,
) -> Result<ClientOutput, NodeError> {
    let server = config.server.clone();
    let inputs: Vec<Vec<u8>> = rows.iter().map(|r| r.key.as_bytes().to_vec()).collect();
    let total = inputs.len() as u64;
    let (mut client, first) = PsiClient::start(config, inputs, &mut rand::rngs::OsRng)?;
    let (tx, rx) = mpsc::channel::<proto::Frame>(16);
    for message in &first {
        tx.send(frame(message)).await.map_err(|_| NodeError::Internal("psi stream closed".into()))?;
    }
    let channel = ctx.channel(&server).await?;
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
        match PsiMessage::from_bytes(&frame_in.payload) {
            Ok(PsiMessage::EvaluatedChunk(chunk)) => {
                evaluated += chunk.elements.len() as u64;
                progress.progress("evaluated", evaluated, total);
                exit_if_asked(PSI_CLIENT_EXIT_POINT);
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
        let (next_state, out) = client.handle(&server, &frame_in.payload)?;
        client = next_state;
        for message in &out {
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
    rows: &[DatasetRow],
    output: &ClientOutput,
    wall_s: f64,
) -> serde_json::Value {
    let intersection: Option<Vec<&str>> = output
        .intersection
        .as_ref()
        .map(|indices| indices.iter().filter_map(|&i| rows.get(i)).map(|r| r.key.as_str()).collect());
    let labels: Option<BTreeMap<&str, serde_json::Value>> = output.labels.as_ref().map(|labels| {
        labels
            .iter()
            .filter_map(|(i, label)| {
                let text = String::from_utf8_lossy(label);
                let value = serde_json::from_str(text.trim_end())
                    .unwrap_or(serde_json::Value::String(text.into_owned()));
                rows.get(*i).map(|r| (r.key.as_str(), value))
            })
            .collect()
    });
    serde_json::json!({
        "computation": "psi",
        "contract": verified.id().as_str(),
        "dataset": dataset,
        "output": output.form.to_string(),
        "client_set_size": rows.len(),
        "server_set_size": output.server_set_size,
        "cardinality": output.cardinality,
        "intersection": intersection,
        "labels": labels,
        "bytes_sent": output.bytes_sent,
        "bytes_received": output.bytes_received,
        "wall_s": wall_s,
        "transcript_digest": hex::encode(output.transcript_digest),
    })
}

/// Everything the server checks before it answers a Hello.
struct ServerSession {
    verified: VerifiedContract,
    binding: SessionBinding,
    policy: ServerPolicy,
    set: Arc<ServerSet>,
    dataset_rows: Arc<Vec<DatasetRow>>,
}

fn prepare_server(ctx: &NodeContext, peer: &NodeId, hello: &[u8]) -> Result<ServerSession, NodeError> {
    let message = PsiMessage::from_bytes(hello)?;
    let PsiMessage::Hello(hello) = message else {
        return Err(NodeError::Protocol(xmcredit_protocol::ProtocolError::UnexpectedMessage {
            state: "awaiting hello",
            got: message.kind().name(),
        }));
    };
    let binding = hello.binding.clone();
    let (_, verified, epoch) = verified_contract(ctx, binding.contract.as_str())?;
    if epoch != binding.epoch {
        return Err(NodeError::Refused(format!(
            "session is for epoch {}, the contract is in epoch {epoch}",
            binding.epoch
        )));
    }
    let me = ctx.node_id();
    verified.require_role(me, Role::Server)?;
    verified.require_role(peer, Role::Client)?;
    let (output, label_columns) = psi_parameters(&verified)?;
    verified.require_receiver(peer, receiver_form(output))?;
    if output == PsiOutput::Both {
        verified.require_receiver(me, OutputForm::Intersection)?;
    }
    // The client's set size, from Hello: enforced here, by the node that would leak,
    // and bounded by this node's own limit before any quota is spent.
    verified.require_min_set_size(peer, hello.client_set_size)?;
    if hello.client_set_size > ctx.config.limits.max_set_size {
        return Err(NodeError::Refused(format!(
            "{peer} declares {} elements; this node answers at most {} (limits.max_set_size)",
            hello.client_set_size, ctx.config.limits.max_set_size
        )));
    }
    // A replayed session is refused before it can spend the client's quota.
    ctx.store.claim_session(binding.session.as_bytes(), binding.contract.as_str())?;
    let (set, rows) = server_set(ctx, &verified, epoch, &label_columns)?;
    // Quota last: only a session that will be answered counts against it.
    if let Some(limit) = verified.contract().limits.lookups_per_day.get(peer) {
        let day = lookup_day(ctx.now_unix());
        if let Err(used) = ctx.store.quota_consume(
            binding.contract.as_str(),
            peer.as_str(),
            day,
            hello.client_set_size,
            *limit,
        )? {
            verified.check_lookup_quota(peer, used, hello.client_set_size)?;
        }
    }
    Ok(ServerSession {
        policy: ServerPolicy {
            form: form_of(output),
            min_client_set_size: min_set_size(&verified, peer),
            max_client_set_size: ctx.config.limits.max_set_size,
        },
        verified,
        binding,
        set,
        dataset_rows: rows,
    })
}

/// The evaluated server set for this contract and epoch, from the cache or built now.
fn server_set(
    ctx: &NodeContext,
    verified: &VerifiedContract,
    epoch: Epoch,
    label_columns: &[String],
) -> Result<CachedServerSet, NodeError> {
    let me = ctx.node_id().clone();
    // The dataset's current version is a cheap read; its rows are read (and the set
    // evaluated) only when this (contract, epoch, version) is not cached yet.
    let named = verified
        .contract()
        .dataset_of(&me)
        .ok_or_else(|| NodeError::Refused(format!("contract {} names no dataset for {me}", verified.id())))?;
    let meta = ctx
        .store
        .current_dataset(&named.name)?
        .ok_or_else(|| NodeError::NotFound { what: "dataset", id: named.name.clone() })?;
    verified.require_schema(&me, &meta.schema)?;
    verified.require_min_set_size(&me, meta.rows)?;
    let key = (verified.id().clone(), epoch, meta.name.clone(), meta.version);
    if let Some(cached) = ctx.psi_sets.lock().map_err(|_| NodeError::Internal("cache lock".into()))?.get(&key)
    {
        return Ok(cached.clone());
    }
    let rows = Arc::new(ctx.store.dataset_rows(&meta)?);
    let started = Instant::now();
    let oprf_key = server_key(ctx, verified.id(), epoch, meta.version)?;
    let id = ServerSetId { contract: verified.id().clone(), epoch, dataset: SetVersion(meta.version) };
    let elements: Vec<&[u8]> = rows.iter().map(|r| r.key.as_bytes()).collect();
    let set = if label_columns.is_empty() {
        ServerSet::build(&oprf_key, id, &elements)?
    } else {
        verified.require_columns(
            &me,
            &meta.name,
            &label_columns.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let labels = fixed_width_labels(&meta.schema, &rows, label_columns)?;
        ServerSet::build_with_labels(&oprf_key, id, &elements, &labels)?
    };
    tracing::info!(
        elements = set.len(),
        seconds = started.elapsed().as_secs_f64(),
        "psi server set evaluated"
    );
    let entry = (Arc::new(set), rows);
    let mut cache = ctx.psi_sets.lock().map_err(|_| NodeError::Internal("cache lock".into()))?;
    // One entry per contract: a new epoch or dataset version replaces the old one.
    cache.retain(|(contract, ..), _| contract != verified.id());
    cache.insert(key, entry.clone());
    Ok(entry)
}

/// The server's OPRF key for (contract, epoch, dataset version): a new version of the
/// dataset gets a new key, so tags and label pads of two versions never line up (a
/// client holding ciphertexts of both could otherwise XOR the labels of entities it
/// does not hold, and see which entities were added or removed).
fn server_key(
    ctx: &NodeContext,
    contract: &ContractId,
    epoch: Epoch,
    dataset_version: u64,
) -> Result<xmcredit_crypto::oprf::OprfKey, NodeError> {
    Ok(ctx.secrets.master.derive_oprf_key_with_context(
        contract,
        epoch,
        KeyPurpose::PsiServer,
        &dataset_version.to_be_bytes(),
    )?)
}

/// Labels as compact JSON objects of the named columns, space-padded to one width (the
/// protocol requires one length so ciphertexts say nothing about unmatched labels).
fn fixed_width_labels(
    schema: &xmcredit_contracts::DatasetSchema,
    rows: &[DatasetRow],
    columns: &[String],
) -> Result<Vec<Vec<u8>>, NodeError> {
    let positions: Vec<(String, usize)> = columns
        .iter()
        .map(|c| {
            schema.column(c).map(|(i, _)| (c.clone(), i)).ok_or_else(|| {
                NodeError::Refused(format!("label column {c} is not in dataset {}", schema.name()))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut labels: Vec<Vec<u8>> = rows
        .iter()
        .map(|row| {
            let object: serde_json::Map<String, serde_json::Value> = positions
                .iter()
                .map(|(name, i)| {
                    (
                        name.clone(),
                        row.values.get(*i).map_or(serde_json::Value::Null, |v| v.to_string().into()),
                    )
                })
                .collect();
            serde_json::Value::Object(object).to_string().into_bytes()
        })
        .collect();
    let width = labels.iter().map(Vec::len).max().unwrap_or(0);
    for label in &mut labels {
        label.resize(width, b' ');
    }
    Ok(labels)
}

/// Answers one PSI session opened by `peer` (the server role).
pub async fn serve_session(
    ctx: Arc<NodeContext>,
    peer: NodeId,
    mut incoming: Streaming<proto::Frame>,
) -> Result<Response<ResponseStream<proto::Frame>>, Status> {
    let first = tokio::time::timeout(ctx.config.timeouts.round(), incoming.next())
        .await
        .map_err(|_| Status::deadline_exceeded("no hello"))?
        .ok_or_else(|| Status::invalid_argument("empty psi stream"))??;
    let contract_hint = PsiMessage::from_bytes(&first.payload).ok().map(|m| m.binding().contract.clone());
    let session = match tokio::task::block_in_place(|| prepare_server(&ctx, &peer, &first.payload)) {
        Ok(session) => session,
        Err(error) => return Err(ctx.refuse(contract_hint.as_ref(), Some(&peer), error).into()),
    };
    let (tx, rx) = mpsc::channel::<Result<proto::Frame, Status>>(16);
    tokio::spawn(run_server(ctx, peer, session, first.payload, incoming, tx));
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

async fn run_server(
    ctx: Arc<NodeContext>,
    peer: NodeId,
    session: ServerSession,
    hello: Vec<u8>,
    incoming: Streaming<proto::Frame>,
    tx: mpsc::Sender<Result<proto::Frame, Status>>,
) {
    let span = tracing::info_span!("psi", node = %ctx.node_id(), contract = %session.binding.contract, session = %session.binding.session, role = "server");
    let mut job = match start_job(
        &ctx,
        ComputationKind::Psi,
        &session.verified,
        "server",
        session.binding.session.to_string(),
        vec![peer.to_string()],
    ) {
        Ok(job) => job,
        Err(e) => {
            let _ = tx.send(Err(Status::from(e))).await;
            return;
        }
    };
    let result = drive_server(&ctx, &peer, &session, hello, incoming, &tx).instrument(span.clone()).await;
    match result {
        Ok(output) => {
            let mut sizes = BTreeMap::new();
            sizes.insert(ctx.node_id().clone(), session.set.len() as u64);
            sizes.insert(peer.clone(), output.client_set_size);
            let detail = match &output.intersection {
                Some(indices) => {
                    let mut codes: Vec<&str> = indices
                        .iter()
                        .filter_map(|&i| session.dataset_rows.get(i))
                        .map(|r| r.key.as_str())
                        .collect();
                    codes.sort_unstable();
                    let digest = codes_digest(&codes);
                    match save_output(&ctx, &session.binding, &codes) {
                        Ok(path) => format!(
                            "intersection of {} in {} (sha256 of sorted codes {digest})",
                            codes.len(),
                            path.display()
                        ),
                        Err(e) => format!(
                            "intersection of {} NOT SAVED: {e} (sha256 of sorted codes {digest})",
                            codes.len()
                        ),
                    }
                }
                None => format!("answered {} elements ({})", output.client_set_size, output.form),
            };
            tracing::info!(parent: &span, n = output.client_set_size, "psi server done");
            finish_job(
                &ctx,
                &mut job,
                &session.verified,
                RunOutcome {
                    state: JobState::Succeeded,
                    detail,
                    set_sizes: sizes,
                    transcript_digest: Some(output.transcript_digest),
                    outcome: Outcome::Ok,
                },
            );
        }
        Err(error) => {
            tracing::warn!(parent: &span, error = %error, "psi server session failed");
            finish_job(&ctx, &mut job, &session.verified, failed(&error));
            let _ = tx.send(Err(Status::from(error))).await;
        }
    }
}

/// Writes the server's output (the both form's intersection, its own codes): the
/// contract grants it to this node's operator.
fn save_output(
    ctx: &NodeContext,
    binding: &SessionBinding,
    codes: &[&str],
) -> Result<std::path::PathBuf, NodeError> {
    let mut text = String::from("credit_code\n");
    for code in codes {
        text.push_str(code);
        text.push('\n');
    }
    super::write_output(ctx, &format!("psi-{}-{}.csv", binding.contract, binding.session), text.as_bytes())
}

/// SHA-256 over the sorted codes joined by '\n': lets the simulator check the server's
/// output without the server sending its records anywhere.
pub fn codes_digest(sorted_codes: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for code in sorted_codes {
        hasher.update(code.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

async fn drive_server(
    ctx: &NodeContext,
    peer: &NodeId,
    session: &ServerSession,
    hello: Vec<u8>,
    mut incoming: Streaming<proto::Frame>,
    tx: &mpsc::Sender<Result<proto::Frame, Status>>,
) -> Result<ServerOutput, NodeError> {
    let oprf_key =
        server_key(ctx, &session.binding.contract, session.binding.epoch, session.set.id().dataset.0)?;
    let config = ServerConfig {
        binding: session.binding.clone(),
        client: peer.clone(),
        policy: session.policy.clone(),
    };
    let mut server = PsiServer::new(config, session.set.clone(), oprf_key, &mut rand::rngs::OsRng)?;
    let mut next = Some(hello);
    while !server.is_done() {
        let bytes = match next.take() {
            Some(bytes) => bytes,
            None => {
                let received = tokio::time::timeout(ctx.config.timeouts.round(), incoming.next())
                    .await
                    .map_err(|_| NodeError::Timeout(format!("a psi message from {peer}")))?;
                match received {
                    Some(Ok(frame)) => frame.payload,
                    // Reading the client's stream failed here (a frame over the size limit,
                    // a reset): the fault is in what the client sent, not an answer of its.
                    Some(Err(status)) => {
                        return Err(NodeError::BadFrame {
                            peer: peer.to_string(),
                            reason: status.message().to_string(),
                        })
                    }
                    None => {
                        return Err(NodeError::Peer {
                            peer: peer.to_string(),
                            message: "ended the session early".into(),
                        })
                    }
                }
            }
        };
        // Evaluation is CPU work (parallel inside crypto): keep it off the I/O threads.
        let (next_state, out) = tokio::task::block_in_place(|| server.handle(peer, &bytes))?;
        server = next_state;
        for message in &out {
            if message.kind == PsiMessageKind::ServerDone {
                tracing::debug!("psi server sent its last message");
            }
            tx.send(Ok(frame(message))).await.map_err(|_| NodeError::Peer {
                peer: peer.to_string(),
                message: "closed the session".into(),
            })?;
        }
    }
    server.into_output().ok_or_else(|| NodeError::Internal("psi server finished without output".into()))
}
