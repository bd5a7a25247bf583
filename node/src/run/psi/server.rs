//! The server's side of a PSI session: the checks before answering, the cached
//! evaluated set, the session loop and the server's output.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Response, Status, Streaming};
use tracing::Instrument;
use xmcredit_contracts::audit::Outcome;
use xmcredit_contracts::{ComputationKind, OutputForm, PsiOutput, Role, VerifiedContract};
use xmcredit_crypto::keys::KeyPurpose;
use xmcredit_crypto::{ContractId, Epoch, NodeId};
use xmcredit_protocol::psi::{
    check_noise_anchor, DatasetVersion as SetVersion, PsiMessage, PsiMessageKind, PsiServer, ServerConfig,
    ServerOutput, ServerPolicy, ServerSet, ServerSetBuilder, ServerSetId,
};
use xmcredit_protocol::SessionBinding;

use super::{form_of, frame, min_set_size, psi_parameters, receiver_form, PsiParameters};
use crate::context::NodeContext;
use crate::proto;
use crate::run::observed::{Direction, Observed};
use crate::run::quota::QuotaSpend;
use crate::run::{failed, finish_job, start_job, verified_contract, RunOutcome, Traffic};
use crate::service::ResponseStream;
use crate::store::{DatasetRow, DatasetVersion, JobState};
use crate::transport::PeerIdentity;
use crate::NodeError;

/// Frames a session may have built and not yet handed to HTTP/2 (which holds one
/// stream window more). A client that stops reading therefore pins at most this many
/// frames plus the one being built, each at most `TAG_CHUNK_BUDGET_BYTES` and in
/// practice a few hundred KiB, whatever the server set's size (issue 11: memory that
/// does not scale with a stalling attacker).
pub const SESSION_FRAMES_BUFFERED: usize = 2;

/// Everything the server checks before it answers a Hello.
struct ServerSession {
    verified: VerifiedContract,
    binding: SessionBinding,
    policy: ServerPolicy,
    set: Arc<ServerSet>,
    /// The dataset version the set was built from: the both form's matches are read
    /// from it by index, never held.
    dataset: DatasetVersion,
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
    let PsiParameters { output, label_columns, noise } = psi_parameters(&verified)?;
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
    // A Hello whose noise does not match the contract (or whose anchor is no valid
    // element) is refused before the quota and the epoch's one noisy run are spent.
    check_noise_anchor(&hello, noise.map(|noise| noise.epsilon_milli()))?;
    // A replayed session is refused before it can spend the client's quota.
    ctx.store.claim_session(binding.session.as_bytes(), binding.contract.as_str())?;
    let (set, version) = server_set(ctx, &verified, epoch, &label_columns)?;
    // Quota last: only a session that will be answered counts against it. Two counts,
    // spent together or not at all: the contract's quota, and this node's ceiling for
    // the client over this dataset across every contract.
    let limit = *verified.contract().limits.lookups_per_day.get(peer).ok_or_else(|| {
        NodeError::Refused(format!("contract {} gives {peer} no daily quota", binding.contract))
    })?;
    let dataset = server_dataset_name(&verified, me)?;
    let n = hello.client_set_size;
    let spend = QuotaSpend {
        contract: &binding.contract,
        dataset: &dataset,
        caller: peer,
        n,
        limit,
        what: "lookups",
        noisy_run_epoch: noise.map(|_| epoch.0),
    };
    spend.spend(ctx, |used| match verified.check_lookup_quota(peer, used, n) {
        Err(refusal) => refusal.into(),
        Ok(_) => {
            NodeError::Internal(format!("the store refused {n} lookups for {peer} that the contract allows"))
        }
    })?;
    Ok(ServerSession {
        policy: ServerPolicy {
            form: form_of(output),
            min_client_set_size: min_set_size(&verified, peer),
            max_client_set_size: ctx.config.limits.max_set_size,
            count_noise_epsilon_milli: noise.map(|noise| noise.epsilon_milli()),
        },
        verified,
        binding,
        set,
        dataset: version,
    })
}

/// Sends one message to the client (the fault hook first).
async fn send_message(
    tx: &mpsc::Sender<Result<proto::Frame, Status>>,
    peer: &NodeId,
    message: &xmcredit_protocol::psi::OutgoingMessage,
) -> Result<(), NodeError> {
    if message.kind == PsiMessageKind::ServerDone {
        tracing::debug!("psi server sent its last message");
    }
    crate::run::fault::exit_before_psi_send("server", message.kind);
    tx.send(Ok(frame(message)))
        .await
        .map_err(|_| NodeError::Peer { peer: peer.to_string(), message: "closed the session".into() })
}

/// The name of the dataset the contract uses from this node.
fn server_dataset_name(verified: &VerifiedContract, me: &NodeId) -> Result<String, NodeError> {
    verified
        .contract()
        .datasets
        .iter()
        .find(|d| &d.party == me)
        .map(|d| d.name.clone())
        .ok_or_else(|| NodeError::Refused(format!("contract {} names no dataset of {me}", verified.id())))
}

/// The evaluated server set for this contract and epoch, from the cache or built now,
/// and the dataset version it holds.
fn server_set(
    ctx: &NodeContext,
    verified: &VerifiedContract,
    epoch: Epoch,
    label_columns: &[String],
) -> Result<(Arc<ServerSet>, DatasetVersion), NodeError> {
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
    if let Some(cached) =
        ctx.psi_sets.lock().map_err(|_| NodeError::Internal("cache lock".into()))?.get_mut(&key)
    {
        cached.used = Instant::now();
        return Ok((cached.set.clone(), meta));
    }
    let started = Instant::now();
    let oprf_key = server_key(ctx, verified.id(), epoch, meta.version)?;
    let id = ServerSetId { contract: verified.id().clone(), epoch, dataset: SetVersion(meta.version) };
    let labels = if label_columns.is_empty() {
        None
    } else {
        verified.require_columns(
            &me,
            &meta.name,
            &label_columns.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let labeller = Labeller::new(&meta.schema, label_columns)?;
        // One width for every label: a first pass over the dataset finds it.
        let mut width = 0;
        for row in ctx.store.dataset_rows(&meta) {
            width = width.max(labeller.label(&row?).len());
        }
        Some((labeller, width))
    };
    let capacity = usize::try_from(meta.rows).unwrap_or(0);
    let mut builder = ServerSetBuilder::new(&oprf_key, id, capacity, labels.as_ref().map(|(_, w)| *w))?;
    // Block by block: one block's keys and labels at a time besides the set itself.
    for block in ctx.store.dataset_blocks(&meta) {
        let block = block?;
        match &labels {
            None => {
                let keys: Vec<&str> = block.keys().collect::<Result<_, _>>()?;
                builder.push_batch::<_, &[u8]>(&keys, None)?;
            }
            Some((labeller, width)) => {
                let mut keys = Vec::with_capacity(block.len());
                let mut texts = Vec::with_capacity(block.len());
                for row in block.rows() {
                    let row = row?;
                    let mut label = labeller.label(&row);
                    label.resize(*width, b' ');
                    texts.push(label);
                    keys.push(row.key);
                }
                builder.push_batch(&keys, Some(&texts))?;
            }
        }
    }
    let set = Arc::new(builder.finish());
    tracing::info!(
        elements = set.len(),
        bytes = set.heap_bytes(),
        seconds = started.elapsed().as_secs_f64(),
        "psi server set evaluated"
    );
    ctx.evict_inactive_psi_sets();
    ctx.cache_psi_set(key, set.clone());
    Ok((set, meta))
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

/// Labels as compact JSON objects of the named columns, space-padded to one width by
/// the caller (the protocol requires one length so ciphertexts say nothing about
/// unmatched labels).
struct Labeller {
    positions: Vec<(String, usize)>,
}

impl Labeller {
    fn new(schema: &xmcredit_contracts::DatasetSchema, columns: &[String]) -> Result<Self, NodeError> {
        let positions = columns
            .iter()
            .map(|c| {
                schema.column(c).map(|(i, _)| (c.clone(), i)).ok_or_else(|| {
                    NodeError::Refused(format!("label column {c} is not in dataset {}", schema.name()))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { positions })
    }

    fn label(&self, row: &DatasetRow) -> Vec<u8> {
        let object: serde_json::Map<String, serde_json::Value> = self
            .positions
            .iter()
            .map(|(name, i)| {
                (name.clone(), row.values.get(*i).map_or(serde_json::Value::Null, |v| v.to_string().into()))
            })
            .collect();
        serde_json::Value::Object(object).to_string().into_bytes()
    }
}

/// Answers one PSI session opened by `peer` (the server role).
pub async fn serve_session(
    ctx: Arc<NodeContext>,
    caller: PeerIdentity,
    mut incoming: Streaming<proto::Frame>,
) -> Result<Response<ResponseStream<proto::Frame>>, Status> {
    let peer = caller.node_id.clone();
    // A stream that opens and says nothing is dropped after the hello timeout.
    let first = tokio::time::timeout(ctx.config.timeouts.hello(), incoming.next())
        .await
        .map_err(|_| Status::deadline_exceeded("no hello"))?
        .ok_or_else(|| Status::invalid_argument("empty psi stream"))??;
    let contract_hint = PsiMessage::from_bytes(&first.payload).ok().map(|m| m.binding().contract.clone());
    // Before any work or quota: the caller must hold the key the contract pins for it.
    if let Some(contract) = &contract_hint {
        if let Err(error) = ctx.check_contract_key_for(&caller, contract.as_str()) {
            return Err(ctx.refuse(Some(contract), Some(&peer), error).into());
        }
    }
    let session = match tokio::task::block_in_place(|| prepare_server(&ctx, &peer, &first.payload)) {
        Ok(session) => session,
        Err(error) => return Err(ctx.refuse(contract_hint.as_ref(), Some(&peer), error).into()),
    };
    let (tx, rx) = mpsc::channel::<Result<proto::Frame, Status>>(SESSION_FRAMES_BUFFERED);
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
    let deadline = ctx.config.timeouts.round() * super::SESSION_DEADLINE_ROUNDS;
    let mut observed = Observed::default();
    let result = match tokio::time::timeout(
        deadline,
        drive_server(&ctx, &peer, &session, hello, incoming, &tx, &mut observed).instrument(span.clone()),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => {
            Err(NodeError::Timeout(format!("the whole psi session with {peer} ({} s)", deadline.as_secs())))
        }
    };
    match result {
        Ok(output) => {
            let mut sizes = BTreeMap::new();
            sizes.insert(ctx.node_id().clone(), session.set.len() as u64);
            sizes.insert(peer.clone(), output.client_set_size);
            let mut output_files = Vec::new();
            let detail = match &output.intersection {
                Some(indices) => {
                    let positions: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
                    let matched = tokio::task::block_in_place(|| {
                        ctx.store.dataset_rows_at(&session.dataset, &positions)
                    });
                    let matched: Vec<String> = match matched {
                        Ok(rows) => rows.into_iter().map(|r| r.key).collect(),
                        Err(e) => {
                            tracing::warn!(parent: &span, error = %e, "could not read the matched rows");
                            Vec::new()
                        }
                    };
                    let mut codes: Vec<&str> = matched.iter().map(String::as_str).collect();
                    codes.sort_unstable();
                    let digest = codes_digest(&codes);
                    let key_column = session
                        .verified
                        .contract()
                        .dataset_of(ctx.node_id())
                        .map_or_else(|| "key".to_string(), |d| d.key.clone());
                    match tokio::task::block_in_place(|| {
                        save_output(&ctx, &session.binding, &key_column, &codes)
                    }) {
                        Ok(path) => {
                            output_files.extend(crate::run::output_name(&path));
                            format!(
                                "intersection of {} in {} (sha256 of sorted codes {digest})",
                                codes.len(),
                                path.display()
                            )
                        }
                        Err(e) => format!(
                            "intersection of {} NOT SAVED: {e} (sha256 of sorted codes {digest})",
                            codes.len()
                        ),
                    }
                }
                None => format!("answered {} elements ({})", output.client_set_size, output.form),
            };
            if let Some(indices) = &output.intersection {
                observed.wrote("intersection", indices.len() as u64);
            }
            job.observed = Some(observed);
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
                    traffic: Some(Traffic { sent: output.bytes_sent, received: output.bytes_received }),
                    output_files,
                },
            );
        }
        Err(error) => {
            tracing::warn!(parent: &span, error = %error, "psi server session failed");
            job.observed = Some(observed);
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
    key_column: &str,
    codes: &[&str],
) -> Result<std::path::PathBuf, NodeError> {
    // The header is the key column's name in the contract, so the file reads like the
    // dataset it came from.
    let mut text = format!("{key_column}\n");
    for code in codes {
        text.push_str(code);
        text.push('\n');
    }
    crate::run::write_output(
        ctx,
        &format!("psi-{}-{}.csv", binding.contract, binding.session),
        text.as_bytes(),
    )
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
    observed: &mut Observed,
) -> Result<ServerOutput, NodeError> {
    let oprf_key =
        server_key(ctx, &session.binding.contract, session.binding.epoch, session.set.id().dataset.0)?;
    let config = ServerConfig {
        binding: session.binding.clone(),
        client: peer.clone(),
        policy: session.policy.clone(),
    };
    // A noisy session draws its dummies here (up to 6,000 base-point multiplications).
    let mut server = tokio::task::block_in_place(|| {
        PsiServer::new(config, session.set.clone(), oprf_key, &mut rand::rngs::OsRng)
    })?;
    let mut next = Some(hello);
    while !server.is_done() {
        let bytes = match next.take() {
            Some(bytes) => bytes,
            None => crate::run::next_from_peer(ctx, &mut incoming, peer, "psi").await?,
        };
        observed.psi_bytes(Direction::Received, &bytes);
        // Evaluation is CPU work (parallel inside crypto): keep it off the I/O threads.
        let (next_state, out) = tokio::task::block_in_place(|| server.handle_streaming(peer, &bytes))?;
        server = next_state;
        for message in &out {
            observed.psi_bytes(Direction::Sent, &message.bytes);
            send_message(tx, peer, message).await?;
        }
        // Tag chunks are built one at a time as the stream takes them (its buffer is
        // bounded): a session holds one chunk, never the whole tag set (issue 11).
        loop {
            let (next_state, message) = server.next_outgoing();
            server = next_state;
            let Some(message) = message else { break };
            observed.psi_bytes(Direction::Sent, &message.bytes);
            send_message(tx, peer, &message).await?;
        }
    }
    server.into_output().ok_or_else(|| NodeError::Internal("psi server finished without output".into()))
}
