//! The contributor's side: answers a `SecAgg` stream the coordinator opens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Response, Status, Streaming};
use tracing::Instrument;
use xmcredit_contracts::audit::Outcome;
use xmcredit_contracts::{ComputationKind, Role, VerifiedContract};
use xmcredit_crypto::{ContractId, NodeId};
use xmcredit_protocol::secagg::{AwaitingKeyList, Round, SecAggMessage, Setup, MAX_VECTOR_LEN};
use xmcredit_protocol::ProtocolError;

use super::fault::{exit_if_asked, ExitPoint};
use super::input::{self, Input, Params};
use super::wire::{fragments, peek_contract, Open, Reassembler};
use super::{kind_name, roster, transcribe, SMALL_MESSAGE_BYTES};
use crate::context::NodeContext;
use crate::proto;
use crate::run::observed::{Direction, Observed};
use crate::run::{contract_dataset, failed, finish_job, start_job, verified_contract, RunOutcome};
use crate::service::ResponseStream;
use crate::store::JobState;
use crate::transport::PeerIdentity;
use crate::NodeError;

/// Frames queued towards the coordinator.
const OUTGOING_FRAMES: usize = 16;
/// Bytes an opening message may take per universe code (18-character codes take 19).
const OPEN_BYTES_PER_CODE: usize = 33;

/// A session the contributor accepted: everything checked, its input made.
struct Session {
    verified: VerifiedContract,
    params: Params,
    setup: Setup,
    input: Input,
    dataset: String,
}

/// The refusal the node audits and logs, and the one it tells the coordinator (which
/// names no row, key or value of this node's data).
struct Refusal {
    local: NodeError,
    remote: Option<NodeError>,
}

impl From<NodeError> for Refusal {
    fn from(local: NodeError) -> Self {
        Self { local, remote: None }
    }
}

impl From<ProtocolError> for Refusal {
    fn from(error: ProtocolError) -> Self {
        NodeError::from(error).into()
    }
}

impl From<xmcredit_contracts::ContractError> for Refusal {
    fn from(error: xmcredit_contracts::ContractError) -> Self {
        NodeError::from(error).into()
    }
}

/// The most universe codes this node accepts in one session.
fn max_universe(ctx: &NodeContext) -> usize {
    usize::try_from(ctx.config.limits.max_set_size).unwrap_or(usize::MAX).min(MAX_VECTOR_LEN)
}

/// How long a contributor waits for the coordinator's next message: the coordinator's
/// round may run to its own timeout before it answers.
fn wait(ctx: &NodeContext) -> Duration {
    ctx.config.timeouts.round() * 2
}

/// Answers one secure-aggregation session opened by `peer` (the contributor role).
pub async fn serve_session(
    ctx: Arc<NodeContext>,
    caller: PeerIdentity,
    mut incoming: Streaming<proto::Frame>,
) -> Result<Response<ResponseStream<proto::Frame>>, Status> {
    let peer = caller.node_id.clone();
    let cap = SMALL_MESSAGE_BYTES.saturating_add(max_universe(&ctx).saturating_mul(OPEN_BYTES_PER_CODE));
    let mut reassembler = Reassembler::new(cap);
    let first = match receive_open(&ctx, &peer, &mut incoming, &mut reassembler).await {
        Ok(first) => first,
        Err(error) => return Err(ctx.refuse(None, Some(&peer), error).into()),
    };
    let open = match Open::from_bytes(&first, max_universe(&ctx)) {
        Ok(open) => open,
        Err(error) => return Err(ctx.refuse(None, Some(&peer), error).into()),
    };
    let contract: ContractId = open.contract.clone();
    // The coordinator must hold the key the contract pins for it, not only a certificate.
    if let Err(error) = ctx.check_contract_key_for(&caller, contract.as_str()) {
        return Err(ctx.refuse(Some(&contract), Some(&peer), error).into());
    }
    if let Err(error) = crate::service::contracts::sync_signatures(&ctx, contract.as_str()).await {
        return Err(ctx.refuse(Some(&contract), Some(&peer), error).into());
    }
    let session = match tokio::task::block_in_place(|| prepare(&ctx, &peer, &open)) {
        Ok(session) => session,
        Err(Refusal { local, remote }) => {
            let local = ctx.refuse(Some(&contract), Some(&peer), local);
            return Err(remote.unwrap_or(local).into());
        }
    };
    reassembler.set_cap(SMALL_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<Result<proto::Frame, Status>>(OUTGOING_FRAMES);
    let binding = session.setup.binding();
    let span = tracing::info_span!("secagg", node = %ctx.node_id(), contract = %binding.contract, session = %binding.session, role = "contributor");
    tokio::spawn(run_contributor(ctx, peer, session, first, incoming, reassembler, tx).instrument(span));
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// Reads the opening message. Its first fragment must name a contract this node holds
/// in which the caller is the coordinator, before the rest (a universe can be tens of
/// MiB) is buffered.
async fn receive_open(
    ctx: &NodeContext,
    peer: &NodeId,
    incoming: &mut Streaming<proto::Frame>,
    reassembler: &mut Reassembler,
) -> Result<Vec<u8>, NodeError> {
    let timeout = ctx.config.timeouts.round();
    let frame = match tokio::time::timeout(timeout, incoming.next()).await {
        Err(_) => return Err(NodeError::Timeout("the opening message".into())),
        Ok(None) => return Err(NodeError::Refused("an empty secagg stream".into())),
        Ok(Some(Err(status))) => {
            return Err(NodeError::Peer { peer: peer.to_string(), message: status.message().to_string() })
        }
        Ok(Some(Ok(frame))) => frame,
    };
    let contract = frame.payload.get(1..).and_then(peek_contract).ok_or_else(|| {
        NodeError::Protocol(ProtocolError::Malformed {
            what: "secagg frame",
            reason: "the first message of a session must open it".into(),
        })
    })?;
    let stored = ctx.store.require_contract(contract.as_str())?;
    let named = stored.signed.contract().party(peer).is_some_and(|p| p.roles.contains(&Role::Coordinator));
    if !named {
        return Err(NodeError::Refused(format!("{peer} is not the coordinator of contract {contract}")));
    }
    match reassembler.push(frame)? {
        Some(message) => Ok(message),
        None => receive(incoming, reassembler, timeout, peer, "the opening message").await,
    }
}

/// Everything a contributor checks before it answers (see the module docs of
/// `run::secagg`, step 2).
fn prepare(ctx: &NodeContext, peer: &NodeId, open: &Open) -> Result<Session, Refusal> {
    let (_, verified, epoch) = verified_contract(ctx, open.contract.as_str())?;
    if epoch != open.epoch {
        return Err(NodeError::Refused(format!(
            "session is for epoch {}, the contract is in epoch {epoch}",
            open.epoch
        ))
        .into());
    }
    if verified.digest() != open.contract_digest {
        return Err(NodeError::Refused(format!(
            "the coordinator's contract {} is not the one this node signed (digest {})",
            open.contract,
            hex::encode(open.contract_digest)
        ))
        .into());
    }
    let me = ctx.node_id();
    let lookup = verified.kind() == xmcredit_contracts::ComputationKind::Lookup;
    verified.require_role(me, if lookup { Role::Provider } else { Role::Contributor })?;
    verified.require_role(peer, Role::Coordinator)?;
    // One masked input per (contract, epoch) (see the module docs): a re-run is refused
    // here already; the claim itself is made just before the masked input goes out.
    ctx.store.check_secagg_input(&open.contract, open.epoch)?;
    let params = Params::of(&verified)?;
    if params.universe_mode() == open.universe.is_empty() {
        return Err(NodeError::Refused(if params.universe_mode() {
            "the contract sums over the universe, and the coordinator sent none".to_string()
        } else {
            "the contract sums by its listed groups, and the coordinator sent a universe".to_string()
        })
        .into());
    }
    let binding = open.binding();
    if lookup {
        // The provider's padded vector over the coordinator's universe (claimed as this
        // epoch's one vector), summed like any input.
        let (values, dataset) = crate::run::lookup::contribution(ctx, &verified, epoch, &open.universe)?;
        let rows_used = values.len();
        let input = Input { values, rows_used, rows_outside: 0 };
        let roster = roster(&verified, &params, peer)?;
        let setup = super::setup(binding, roster, input.values.len(), &params)?;
        ctx.store.claim_session(setup.binding().session.as_bytes(), open.contract.as_str())?;
        return Ok(Session { verified, params, setup, input, dataset });
    }
    let meta = contract_dataset(ctx, &verified, me, Role::Contributor, "")?;
    let input = input::build(&params, &meta.schema, ctx.store.dataset_rows(&meta), &open.universe).map_err(
        |error| {
            tracing::warn!(contract = %open.contract, reason = %error, "secagg input refused");
            Refusal {
                local: NodeError::Refused(format!("dataset {}: {error}", meta.name)),
                remote: Some(NodeError::Refused(error.for_peer())),
            }
        },
    )?;
    let roster = roster(&verified, &params, peer)?;
    let setup = super::setup(binding, roster, input.values.len(), &params)?;
    ctx.store.claim_session(setup.binding().session.as_bytes(), open.contract.as_str())?;
    Ok(Session { verified, params, setup, input, dataset: meta.name })
}

/// What the contributor saw of a finished session.
struct Seen {
    survivors: Vec<NodeId>,
    dropped: Vec<NodeId>,
}

async fn run_contributor(
    ctx: Arc<NodeContext>,
    peer: NodeId,
    session: Session,
    open: Vec<u8>,
    incoming: Streaming<proto::Frame>,
    reassembler: Reassembler,
    tx: mpsc::Sender<Result<proto::Frame, Status>>,
) {
    let binding = session.setup.binding().clone();
    let mut job = match start_job(
        &ctx,
        ComputationKind::Secagg,
        &session.verified,
        "contributor",
        binding.session.to_string(),
        vec![peer.to_string()],
    ) {
        Ok(job) => job,
        Err(e) => {
            let _ = tx.send(Err(Status::from(e))).await;
            return;
        }
    };
    let mut transcript = Sha256::new();
    transcribe(&mut transcript, false, &peer, &open);
    let len = session.input.values.len() as u64;
    let (rows_used, rows_outside) = (session.input.rows_used, session.input.rows_outside);
    let mut stream = Stream {
        ctx: &ctx,
        peer: &peer,
        incoming,
        reassembler,
        tx: &tx,
        transcript,
        observed: Observed::default(),
    };
    let result = drive(&ctx, &peer, session.setup, session.input, &session.params, &mut stream).await;
    let digest: [u8; 32] = stream.transcript.finalize().into();
    job.observed = Some(stream.observed);
    match result {
        Ok(seen) => {
            let mut sizes = BTreeMap::new();
            sizes.insert(ctx.node_id().clone(), len);
            tracing::info!(survivors = seen.survivors.len(), "secagg contributor done");
            finish_job(
                &ctx,
                &mut job,
                &session.verified,
                RunOutcome {
                    state: JobState::Succeeded,
                    detail: format!(
                        "sent a masked input of {len} entries from {} ({rows_used} rows used, {rows_outside} outside the groups) and unmask shares; in the sum: {}; dropped: {}",
                        session.dataset,
                        names(&seen.survivors),
                        if seen.dropped.is_empty() { "none".to_string() } else { names(&seen.dropped) }
                    ),
                    set_sizes: sizes,
                    transcript_digest: Some(digest),
                    outcome: Outcome::Ok,
                    // Not counted per job on this side yet.
                    traffic: None,
                    output_files: Vec::new(),
                },
            );
        }
        Err(error) => {
            tracing::warn!(error = %error, "secagg contributor session failed");
            let mut outcome = failed(&error);
            outcome.transcript_digest = Some(digest);
            finish_job(&ctx, &mut job, &session.verified, outcome);
            let _ = tx.send(Err(Status::from(error))).await;
        }
    }
}

fn names(nodes: &[NodeId]) -> String {
    nodes.iter().map(NodeId::as_str).collect::<Vec<_>>().join(", ")
}

/// The contributor's end of the stream.
struct Stream<'a> {
    ctx: &'a NodeContext,
    peer: &'a NodeId,
    incoming: Streaming<proto::Frame>,
    reassembler: Reassembler,
    tx: &'a mpsc::Sender<Result<proto::Frame, Status>>,
    transcript: Sha256,
    observed: Observed,
}

impl Stream<'_> {
    async fn send(&mut self, message: &SecAggMessage) -> Result<(), NodeError> {
        let bytes = tokio::task::block_in_place(|| message.to_bytes());
        transcribe(&mut self.transcript, true, self.peer, &bytes);
        self.observed.secagg(Direction::Sent, message);
        for frame in fragments(&bytes) {
            self.tx.send(Ok(frame)).await.map_err(|_| NodeError::Peer {
                peer: self.peer.to_string(),
                message: "closed the session".into(),
            })?;
        }
        Ok(())
    }

    /// The coordinator's message for `round`.
    async fn receive(&mut self, round: Round) -> Result<SecAggMessage, NodeError> {
        let what = format!("the coordinator's message for {round}");
        let bytes =
            receive(&mut self.incoming, &mut self.reassembler, wait(self.ctx), self.peer, &what).await?;
        transcribe(&mut self.transcript, false, self.peer, &bytes);
        let message = tokio::task::block_in_place(|| SecAggMessage::from_bytes(&bytes))?;
        self.observed.secagg(Direction::Received, &message);
        Ok(message)
    }

    /// Waits for the coordinator to end the session after the last message, so that
    /// ending ours cannot cut off what it is still reading.
    async fn end(&mut self) -> Result<(), NodeError> {
        match tokio::time::timeout(wait(self.ctx), self.incoming.next()).await {
            Ok(None) => Ok(()),
            Ok(Some(Ok(_))) => Err(NodeError::Peer {
                peer: self.peer.to_string(),
                message: "sent a message after the last".into(),
            }),
            Ok(Some(Err(status))) => {
                Err(NodeError::Peer { peer: self.peer.to_string(), message: status.message().to_string() })
            }
            Err(_) => Err(NodeError::Timeout(format!("{} to close the session", self.peer))),
        }
    }
}

/// Reads frames until one whole message, within `timeout`.
async fn receive(
    incoming: &mut Streaming<proto::Frame>,
    reassembler: &mut Reassembler,
    timeout: Duration,
    peer: &NodeId,
    what: &str,
) -> Result<Vec<u8>, NodeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, incoming.next())
            .await
            .map_err(|_| NodeError::Timeout(what.to_string()))?;
        let frame = match next {
            Some(Ok(frame)) => frame,
            Some(Err(status)) => {
                return Err(NodeError::Peer { peer: peer.to_string(), message: status.message().to_string() })
            }
            None => {
                return Err(NodeError::Peer {
                    peer: peer.to_string(),
                    message: format!("ended the session before {what}; nothing more was sent"),
                })
            }
        };
        if let Some(message) = reassembler.push(frame)? {
            return Ok(message);
        }
    }
}

fn unexpected(state: &'static str, message: &SecAggMessage) -> NodeError {
    ProtocolError::UnexpectedMessage { state, got: kind_name(message) }.into()
}

/// The contract's minimum number of contributors, checked on every list the
/// coordinator sends before this node shares, masks or reveals anything.
fn require_fewest(params: &Params, round: Round, count: usize) -> Result<(), NodeError> {
    if count < params.fewest() {
        return Err(NodeError::Refused(format!(
            "secure aggregation {round}: the coordinator goes on with {count} contributors, the contract needs {}",
            params.fewest()
        )));
    }
    Ok(())
}

async fn drive(
    ctx: &NodeContext,
    coordinator: &NodeId,
    setup: Setup,
    input: Input,
    params: &Params,
    stream: &mut Stream<'_>,
) -> Result<Seen, NodeError> {
    let me = ctx.node_id().clone();
    let binding = setup.binding().clone();
    exit_if_asked(ExitPoint::BeforeKeys);
    let (state, advertise) =
        AwaitingKeyList::start(setup, me, &ctx.secrets.identity, input.values, &mut rand::rngs::OsRng)?;
    stream.send(&SecAggMessage::AdvertiseKeys(Box::new(advertise))).await?;

    let key_list = match stream.receive(Round::ShareKeys).await? {
        SecAggMessage::KeyList(key_list) => key_list,
        other => return Err(unexpected("awaiting the key list", &other)),
    };
    require_fewest(params, Round::AdvertiseKeys, key_list.entries.len())?;
    exit_if_asked(ExitPoint::BeforeShares);
    let (state, shares) =
        tokio::task::block_in_place(|| state.handle(coordinator, key_list, &mut rand::rngs::OsRng))?;
    stream.send(&SecAggMessage::EncryptedShares(shares)).await?;

    let relay = match stream.receive(Round::MaskedInputCollection).await? {
        SecAggMessage::ShareRelay(relay) => relay,
        other => return Err(unexpected("awaiting the share relay", &other)),
    };
    require_fewest(params, Round::ShareKeys, relay.shares.len() + 1)?;
    exit_if_asked(ExitPoint::BeforeMaskedInput);
    let (state, masked) = tokio::task::block_in_place(|| state.handle(coordinator, relay))?;
    // Durably, before the masked input leaves: a second session of this contract and
    // epoch (another survivor set) could otherwise be subtracted from this one.
    tokio::task::block_in_place(|| {
        ctx.store.claim_secagg_input(&binding.contract, binding.epoch, &binding.session)
    })?;
    stream.send(&SecAggMessage::MaskedInput(masked)).await?;

    let request = match stream.receive(Round::Unmasking).await? {
        SecAggMessage::UnmaskRequest(request) => request,
        other => return Err(unexpected("awaiting the unmask request", &other)),
    };
    require_fewest(params, Round::MaskedInputCollection, request.survivors.len())?;
    exit_if_asked(ExitPoint::AfterMaskedInput);
    let seen = Seen { survivors: request.survivors.clone(), dropped: request.dropped.clone() };
    let response = tokio::task::block_in_place(|| state.handle(coordinator, request))?;
    stream.send(&SecAggMessage::UnmaskResponse(response)).await?;
    stream.end().await?;
    Ok(seen)
}
