//! A contributor (a bank): answers the coordinator's `Overthreshold` stream. It has its
//! items evaluated by every committee member, sends its tags to the coordinator, and
//! writes the items the coordinator says are held by `t` or more banks to `outputs/`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Response, Status, Streaming};
use tracing::Instrument;
use xmcredit_contracts::audit::Outcome;
use xmcredit_contracts::{ComputationKind, OutputForm, Role, VerifiedContract};
use xmcredit_crypto::NodeId;
use xmcredit_protocol::overthreshold::{
    ContributorConfig, ContributorOutput, MessageKind, OutgoingMessage, OverthresholdContributor,
    OverthresholdMessage, Parameters,
};
use xmcredit_protocol::{ProtocolError, SessionBinding};

use super::{parameters, CHUNK_SIZE, FAULT_CONTRIBUTOR_BEFORE_TAGS, OUTGOING_FRAMES};
use crate::context::NodeContext;
use crate::proto;
use crate::run::observed::{Direction, Observed};
use crate::run::{contract_dataset, failed, finish_job, start_job, verified_contract, RunOutcome, Traffic};
use crate::service::ResponseStream;
use crate::store::JobState;
use crate::transport::PeerIdentity;
use crate::NodeError;

/// Everything the contributor checked before it blinds anything.
struct ContributorSession {
    verified: VerifiedContract,
    binding: SessionBinding,
    params: Parameters,
    dataset: String,
    /// X's keys, in the order the protocol indexes them.
    keys: Vec<String>,
    state: OverthresholdContributor,
}

/// Checks the coordinator's Announce (see the module docs of `run::overthreshold`) and
/// sets up the session over this node's dataset.
fn prepare(
    ctx: &NodeContext,
    coordinator: &NodeId,
    announce: &[u8],
) -> Result<ContributorSession, NodeError> {
    let message = OverthresholdMessage::from_bytes(announce)?;
    let OverthresholdMessage::Announce(_) = &message else {
        return Err(NodeError::Protocol(ProtocolError::UnexpectedMessage {
            state: "contributor awaiting Announce",
            got: message.kind().name(),
        }));
    };
    let binding = message.binding().clone();
    let (_, verified, epoch) = verified_contract(ctx, binding.contract.as_str())?;
    if epoch != binding.epoch {
        return Err(NodeError::Refused(format!(
            "session is for epoch {}, the contract is in epoch {epoch}",
            binding.epoch
        )));
    }
    let params = parameters(ctx, &verified)?;
    let me = ctx.node_id().clone();
    verified.require_role(&me, Role::Contributor)?;
    verified.require_receiver(&me, OutputForm::OwnMatches)?;
    verified.require_role(coordinator, Role::Coordinator)?;
    ctx.store.claim_session(binding.session.as_bytes(), binding.contract.as_str())?;
    // The dataset the contract names, keyed by the column it fixes (the key
    // definition every party's tags must share), with at least the contract's minimum.
    let meta = contract_dataset(ctx, &verified, &me, Role::Contributor, "")?;
    verified.require_min_set_size(&me, meta.rows)?;
    let keys = ctx.store.dataset_keys(&meta)?;
    let items = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
    let config = ContributorConfig {
        binding: binding.clone(),
        me,
        parameters: params.clone(),
        chunk_size: CHUNK_SIZE,
    };
    let state = OverthresholdContributor::new(config, items, &mut rand::rngs::OsRng)?;
    Ok(ContributorSession { verified, binding, params, dataset: meta.name, keys, state })
}

/// Answers one `Overthreshold` stream opened by `caller` (the coordinator).
pub async fn serve_session(
    ctx: Arc<NodeContext>,
    caller: PeerIdentity,
    mut incoming: Streaming<proto::Frame>,
) -> Result<Response<ResponseStream<proto::Frame>>, Status> {
    let peer = caller.node_id.clone();
    let first = tokio::time::timeout(ctx.config.timeouts.round(), incoming.next())
        .await
        .map_err(|_| Status::deadline_exceeded("no announce"))?
        .ok_or_else(|| Status::invalid_argument("empty overthreshold stream"))??;
    let Ok(message) = OverthresholdMessage::from_bytes(&first.payload) else {
        return Err(Status::invalid_argument(
            "the first overthreshold frame is not an overthreshold message",
        ));
    };
    let contract = message.binding().contract.clone();
    if let Err(error) = ctx.check_contract_key_for(&caller, contract.as_str()) {
        return Err(ctx.refuse(Some(&contract), Some(&peer), error).into());
    }
    let session = match tokio::task::block_in_place(|| prepare(&ctx, &peer, &first.payload)) {
        Ok(session) => session,
        Err(error) => return Err(ctx.refuse(Some(&contract), Some(&peer), error).into()),
    };
    let (tx, rx) = mpsc::channel::<Result<proto::Frame, Status>>(OUTGOING_FRAMES);
    tokio::spawn(run_contributor(ctx, peer, session, first.payload, incoming, tx));
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

async fn run_contributor(
    ctx: Arc<NodeContext>,
    coordinator: NodeId,
    session: ContributorSession,
    announce: Vec<u8>,
    incoming: Streaming<proto::Frame>,
    tx: mpsc::Sender<Result<proto::Frame, Status>>,
) {
    let started = Instant::now();
    let ContributorSession { verified, binding, params, dataset, keys, state } = session;
    let span = tracing::info_span!("overthreshold", node = %ctx.node_id(), contract = %binding.contract, session = %binding.session, role = "contributor");
    let mut peers = vec![coordinator.to_string()];
    peers.extend(params.committee().iter().filter(|m| *m != ctx.node_id()).map(ToString::to_string));
    let mut job = match start_job(
        &ctx,
        ComputationKind::Overthreshold,
        &verified,
        "contributor",
        binding.session.to_string(),
        peers,
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
        drive(&ctx, &coordinator, &params, state, announce, incoming, &tx, &mut observed)
            .instrument(span.clone()),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => {
            Err(NodeError::Timeout(format!("the whole overthreshold session ({} s)", deadline.as_secs())))
        }
    };
    let me = ctx.node_id().clone();
    match result.and_then(|(output, evaluate_s)| {
        let path =
            write_result(&ctx, &verified, &binding, &params, &dataset, &keys, &output, evaluate_s, started)?;
        Ok((output, path))
    }) {
        Ok((output, path)) => {
            tracing::info!(parent: &span, n = output.set_size, matches = output.matches.len(), "overthreshold contributor done");
            observed.wrote("own_matches", output.matches.len() as u64);
            job.observed = Some(observed);
            let mut sizes = BTreeMap::new();
            sizes.insert(me, output.set_size);
            finish_job(
                &ctx,
                &mut job,
                &verified,
                RunOutcome {
                    state: JobState::Succeeded,
                    detail: format!(
                        "{} items, {} held by {} or more of {} banks, results in {}",
                        output.set_size,
                        output.matches.len(),
                        params.threshold(),
                        output.contributors_counted,
                        path.display()
                    ),
                    set_sizes: sizes,
                    transcript_digest: None,
                    outcome: Outcome::Ok,
                    traffic: Some(Traffic {
                        sent: output.traffic.bytes_sent,
                        received: output.traffic.bytes_received,
                    }),
                    // `write_result` writes the CSV and its JSON report beside it.
                    output_files: [path.clone(), path.with_extension("json")]
                        .iter()
                        .filter_map(|p| crate::run::output_name(p))
                        .collect(),
                },
            );
        }
        Err(error) => {
            tracing::warn!(parent: &span, error = %error, "overthreshold contributor failed");
            job.observed = Some(observed);
            finish_job(&ctx, &mut job, &verified, failed(&error));
            let _ = tx.send(Err(Status::from(error))).await;
        }
    }
}

/// One event of the evaluation phase: a member's reply, its stream failing, or its
/// stream ending.
enum MemberEvent {
    Reply(NodeId, Vec<u8>),
    Failed(NodeId, String),
    Ended(NodeId),
}

/// The streams to the committee: one sender per member, and every member's replies
/// merged into one channel.
struct Committee {
    senders: HashMap<NodeId, mpsc::Sender<proto::Frame>>,
    events: mpsc::Receiver<MemberEvent>,
}

impl Committee {
    /// Opens a stream to every member (in process for this node), each holding its
    /// first messages (`first`, Hello and the first chunks) before the call is made: a
    /// member reads Hello before it answers the call.
    async fn open(
        ctx: &Arc<NodeContext>,
        contract: &str,
        params: &Parameters,
        first: Vec<OutgoingMessage>,
    ) -> Result<Self, (NodeId, String)> {
        let (event_tx, events) = mpsc::channel::<MemberEvent>(OUTGOING_FRAMES * params.committee().len());
        let mut senders = HashMap::new();
        let mut receivers = HashMap::new();
        for member in params.committee() {
            // Room for Hello and the window of chunks (CONTRIBUTOR_WINDOW_CHUNKS).
            let (tx, rx) = mpsc::channel::<proto::Frame>(OUTGOING_FRAMES);
            senders.insert(member.clone(), tx);
            receivers.insert(member.clone(), rx);
        }
        let committee = Self { senders, events };
        committee.route(first).await.map_err(|member| (member, "closed its stream".to_string()))?;
        for member in params.committee() {
            let Some(rx) = receivers.remove(member) else { continue };
            let replies: ResponseStream<proto::Frame> = if member == ctx.node_id() {
                super::member::local_evaluations(ctx.clone(), rx)
            } else {
                let channel = ctx
                    .channel_for_contract(member, contract)
                    .await
                    .map_err(|e| (member.clone(), e.to_string()))?;
                let response = crate::service::peer_client(channel)
                    .overthreshold_eval(ReceiverStream::new(rx))
                    .await
                    .map_err(|status| (member.clone(), status.message().to_string()))?;
                Box::pin(response.into_inner())
            };
            tokio::spawn(forward(member.clone(), replies, event_tx.clone()));
        }
        Ok(committee)
    }

    /// Sends each message to its member; returns the member whose stream is gone.
    async fn route(&self, messages: Vec<OutgoingMessage>) -> Result<(), NodeId> {
        for message in messages {
            if let Some(sender) = self.senders.get(&message.to) {
                sender.send(proto::Frame { payload: message.bytes }).await.map_err(|_| message.to.clone())?;
            }
        }
        Ok(())
    }
}

/// Moves one member's replies into the merged channel.
async fn forward(
    member: NodeId,
    mut replies: ResponseStream<proto::Frame>,
    events: mpsc::Sender<MemberEvent>,
) {
    while let Some(item) = replies.next().await {
        let event = match item {
            Ok(frame) => MemberEvent::Reply(member.clone(), frame.payload),
            Err(status) => MemberEvent::Failed(member.clone(), status.message().to_string()),
        };
        let failed = matches!(event, MemberEvent::Failed(..));
        if events.send(event).await.is_err() || failed {
            return;
        }
    }
    let _ = events.send(MemberEvent::Ended(member)).await;
}

/// The error that ends the session because `member` failed: the protocol's
/// `CommitteeMemberFailed` (how far it got), with the cause.
fn member_failed(state: OverthresholdContributor, member: &NodeId, cause: &str) -> NodeError {
    let error = state.member_failed(member);
    NodeError::Peer { peer: member.to_string(), message: format!("{error}: {cause}") }
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    ctx: &Arc<NodeContext>,
    coordinator: &NodeId,
    params: &Parameters,
    state: OverthresholdContributor,
    announce: Vec<u8>,
    mut incoming: Streaming<proto::Frame>,
    tx: &mpsc::Sender<Result<proto::Frame, Status>>,
    observed: &mut Observed,
) -> Result<(ContributorOutput, f64), NodeError> {
    let evaluate_started = Instant::now();
    let (mut state, out) = tokio::task::block_in_place(|| state.handle(coordinator, &announce))?;
    count(observed, &announce, &out);
    let contract = params_contract(&announce)?;
    let (to_members, mut to_coordinator) = split(out);
    let mut committee = match Committee::open(ctx, &contract, params, to_members).await {
        Ok(committee) => committee,
        Err((member, cause)) => return Err(member_failed(state, &member, &cause)),
    };
    while matches!(state, OverthresholdContributor::AwaitingEvaluations(_)) {
        let event = tokio::time::timeout(ctx.config.timeouts.round(), committee.events.recv()).await;
        let (member, bytes) = match event {
            Err(_) => {
                let missing = state.missing_members();
                let Some(member) = missing.first().cloned() else {
                    return Err(NodeError::Internal("no member owes a reply, yet none came".into()));
                };
                let cause = format!("no reply within {} s", ctx.config.timeouts.round().as_secs());
                return Err(member_failed(state, &member, &cause));
            }
            Ok(None) => return Err(NodeError::Internal("the committee's streams are gone".into())),
            Ok(Some(MemberEvent::Failed(member, cause))) => {
                return Err(member_failed(state, &member, &cause))
            }
            Ok(Some(MemberEvent::Ended(member))) => {
                // A member ends its stream once it has answered every chunk; before that
                // it is a failure.
                if state.missing_members().contains(&member) {
                    return Err(member_failed(
                        state,
                        &member,
                        "ended its stream before answering every chunk",
                    ));
                }
                continue;
            }
            Ok(Some(MemberEvent::Reply(member, bytes))) => (member, bytes),
        };
        let (next, out) = tokio::task::block_in_place(|| state.handle(&member, &bytes))?;
        state = next;
        count(observed, &bytes, &out);
        let (to_members, to_coord) = split(out);
        if let Err(member) = committee.route(to_members).await {
            return Err(member_failed(state, &member, "closed its stream"));
        }
        to_coordinator.extend(to_coord);
    }
    drop(committee);
    let evaluate_s = evaluate_started.elapsed().as_secs_f64();
    crate::run::fault::exit_if_asked(FAULT_CONTRIBUTOR_BEFORE_TAGS);
    for message in to_coordinator {
        let sent = message.bytes.clone();
        tx.send(Ok(proto::Frame { payload: message.bytes })).await.map_err(|_| NodeError::Peer {
            peer: coordinator.to_string(),
            message: "closed the session".into(),
        })?;
        observed.overthreshold_bytes(Direction::Sent, &sent);
    }
    while !state.is_done() {
        let bytes =
            crate::run::next_from_peer(ctx, &mut incoming, coordinator, "overthreshold result").await?;
        let (next, out) = tokio::task::block_in_place(|| state.handle(coordinator, &bytes))?;
        state = next;
        count(observed, &bytes, &out);
    }
    let output = state
        .into_output()
        .ok_or_else(|| NodeError::Internal("contributor finished without output".into()))?;
    Ok((output, evaluate_s))
}

/// Counts one received message and what the state machine answered it with for the
/// committee (routed at once). Tags for the coordinator are counted when sent.
fn count(observed: &mut Observed, received: &[u8], out: &[OutgoingMessage]) {
    observed.overthreshold_bytes(Direction::Received, received);
    for message in out.iter().filter(|m| m.kind != MessageKind::TagChunk) {
        observed.overthreshold_bytes(Direction::Sent, &message.bytes);
    }
}

/// Messages for the committee (Hello, blinded chunks) apart from the tags for the
/// coordinator, by kind: the coordinator may sit on the committee too.
fn split(out: Vec<OutgoingMessage>) -> (Vec<OutgoingMessage>, Vec<OutgoingMessage>) {
    out.into_iter().partition(|m| m.kind != MessageKind::TagChunk)
}

/// The contract id a message is bound to.
fn params_contract(message: &[u8]) -> Result<String, NodeError> {
    Ok(OverthresholdMessage::from_bytes(message)?.binding().contract.to_string())
}

/// Writes the contributor's matches: `outputs/overthreshold-<contract>-<session>.csv`
/// (`key,multiplicity`, one line per own item held by `t` or more banks) and a JSON
/// report beside it (sizes, traffic, timings), both mode 0600.
#[allow(clippy::too_many_arguments)]
fn write_result(
    ctx: &NodeContext,
    verified: &VerifiedContract,
    binding: &SessionBinding,
    params: &Parameters,
    dataset: &str,
    keys: &[String],
    output: &ContributorOutput,
    evaluate_s: f64,
    started: Instant,
) -> Result<std::path::PathBuf, NodeError> {
    let mut csv = String::from("key,multiplicity\n");
    let mut matches = serde_json::Map::new();
    for found in &output.matches {
        let key = keys.get(found.index).ok_or_else(|| {
            NodeError::Internal(format!("a match at index {} of {}", found.index, keys.len()))
        })?;
        let _ = writeln!(csv, "{key},{}", found.multiplicity);
        matches.insert(key.clone(), serde_json::json!(found.multiplicity));
    }
    let stem = format!("overthreshold-{}-{}", verified.id(), binding.session);
    let path = crate::run::write_output(ctx, &format!("{stem}.csv"), csv.as_bytes())?;
    let report = serde_json::json!({
        "computation": "overthreshold",
        "contract": verified.id().as_str(),
        "session": binding.session.to_string(),
        "epoch": binding.epoch.0,
        "dataset": dataset,
        "threshold": params.threshold(),
        "set_size": output.set_size,
        "contributors_counted": output.contributors_counted,
        "matches": matches,
        "bytes_sent": output.traffic.bytes_sent,
        "bytes_received": output.traffic.bytes_received,
        "evaluate_s": evaluate_s,
        "wall_s": started.elapsed().as_secs_f64(),
        "output_file": path.display().to_string(),
    });
    let text = serde_json::to_vec_pretty(&report).map_err(|e| NodeError::Internal(e.to_string()))?;
    crate::run::write_output(ctx, &format!("{stem}.json"), &text)?;
    Ok(path)
}
