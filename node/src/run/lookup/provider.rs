//! The provider's side (also the coordinator with one provider): serving the padded
//! vector, and answering a querier's OPRF session under its daily quota.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Response, Status, Streaming};
use tracing::Instrument;
use xmcredit_contracts::audit::Outcome;
use xmcredit_contracts::{ComputationKind, OutputForm, Role, VerifiedContract};
use xmcredit_crypto::keys::KeyPurpose;
use xmcredit_crypto::{ContractId, NodeId, SessionId};
use xmcredit_protocol::lookup::{
    LookupMessage, LookupProvider, ProviderConfig, ProviderOutput, ProviderPolicy, MAX_VECTOR_CHUNK_ENTRIES,
};
use xmcredit_protocol::{ProtocolError, SessionBinding};

use super::{published_vector, session_universe, Params, SESSION_DEADLINE_ROUNDS, UNIVERSE_FRAGMENT_BYTES};
use crate::context::NodeContext;
use crate::proto;
use crate::run::observed::{Direction, Observed};
use crate::run::quota::QuotaSpend;
use crate::run::{failed, finish_job, start_job, verified_contract, RunOutcome};
use crate::service::ResponseStream;
use crate::store::JobState;
use crate::transport::PeerIdentity;
use crate::NodeError;

// ---- The vector ------------------------------------------------------------------------

/// Serves the whole vector of a lookup contract for this epoch to one of its queriers:
/// the universe's encoding in fragments, then the VectorChunks bound to the querier's
/// session id. The caller's contract key is checked before anything else.
pub async fn serve_vector(
    ctx: Arc<NodeContext>,
    caller: PeerIdentity,
    request: proto::LookupVectorRequest,
) -> Result<Response<ResponseStream<proto::LookupVectorPart>>, Status> {
    let peer = caller.node_id.clone();
    let contract = ContractId::new(request.contract_id.as_str()).ok();
    if let Err(error) = ctx.check_contract_key_for(&caller, &request.contract_id) {
        return Err(ctx.refuse(contract.as_ref(), Some(&peer), error).into());
    }
    let parts = match tokio::task::block_in_place(|| vector_parts(&ctx, &peer, &request)) {
        Ok(parts) => parts,
        Err(error) => return Err(ctx.refuse(contract.as_ref(), Some(&peer), error).into()),
    };
    let stream = tokio_stream::iter(parts.into_iter().map(Ok));
    Ok(Response::new(Box::pin(stream)))
}

fn vector_parts(
    ctx: &NodeContext,
    peer: &NodeId,
    request: &proto::LookupVectorRequest,
) -> Result<Vec<proto::LookupVectorPart>, NodeError> {
    let (_, verified, epoch) = verified_contract(ctx, &request.contract_id)?;
    if epoch.0 != request.epoch {
        return Err(NodeError::Refused(format!(
            "the download is for epoch {}, the contract is in epoch {epoch}",
            request.epoch
        )));
    }
    let params = Params::of(&verified)?;
    let me = ctx.node_id();
    verified.require_role(me, Role::Coordinator)?;
    verified.require_role(peer, Role::Querier)?;
    verified.require_receiver(peer, OutputForm::Scores)?;
    let session: [u8; 16] = request
        .session_id
        .as_slice()
        .try_into()
        .map_err(|_| NodeError::Refused("a download session id has 16 bytes".into()))?;
    ctx.store.claim_session(&session, verified.id().as_str())?;
    let (universe, vector) = published_vector(ctx, &verified, &params, epoch)?;
    let binding = SessionBinding { contract: verified.id().clone(), epoch, session: SessionId(session) };
    // The querier already holds this universe: the vector alone.
    let known = request.known_universe.as_slice() == universe.digest().as_slice();
    let encoding = if known { Vec::new() } else { universe.to_bytes() };
    let mut parts: Vec<proto::LookupVectorPart> = encoding
        .chunks(UNIVERSE_FRAGMENT_BYTES)
        .map(|fragment| proto::LookupVectorPart {
            universe_fragment: fragment.to_vec(),
            vector_chunk: Vec::new(),
        })
        .collect();
    parts.extend(
        vector
            .to_chunks(&binding, MAX_VECTOR_CHUNK_ENTRIES)?
            .into_iter()
            .map(|chunk| proto::LookupVectorPart { universe_fragment: Vec::new(), vector_chunk: chunk }),
    );
    tracing::info!(contract = %verified.id(), querier = %peer, entries = vector.len(), "lookup vector served");
    Ok(parts)
}

// ---- A query session -------------------------------------------------------------------

/// Everything the provider checked before it answers a Hello.
struct ProviderSession {
    verified: VerifiedContract,
    binding: SessionBinding,
    provider: LookupProvider,
}

fn prepare_session(ctx: &NodeContext, peer: &NodeId, hello: &[u8]) -> Result<ProviderSession, NodeError> {
    let message = LookupMessage::from_bytes(hello)?;
    let LookupMessage::Hello(hello) = message else {
        return Err(NodeError::Protocol(ProtocolError::UnexpectedMessage {
            state: "provider awaiting Hello",
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
    let params = Params::of(&verified)?;
    let me = ctx.node_id();
    verified.require_role(me, Role::Provider)?;
    verified.require_role(peer, Role::Querier)?;
    verified.require_receiver(peer, OutputForm::Scores)?;
    // A replayed session is refused before it can spend the querier's quota.
    ctx.store.claim_session(binding.session.as_bytes(), binding.contract.as_str())?;
    let universe_digest = session_universe(ctx, &verified, &params, epoch)?;
    if hello.universe_digest != universe_digest {
        return Err(ProtocolError::UniverseMismatch {
            expected: hex::encode(universe_digest),
            got: hex::encode(hello.universe_digest),
        }
        .into());
    }
    let n = hello.lookups;
    let max_lookups = ctx.config.limits.max_set_size;
    if n == 0 || n > max_lookups {
        return Err(ProtocolError::SetTooLarge { whose: "querier", got: n, max: max_lookups }.into());
    }
    // Quota last: only a session that will be answered counts against it. Hello's n is
    // the querier's distinct registered applicants; repeats inside the session are
    // refused below (one blind per session makes them visible).
    let limit = verified.contract().limits.lookups_per_day.get(peer).copied().unwrap_or(0);
    // The contract's quota and this node's ceiling for the querier over the dataset,
    // across every contract (issue 10), spent together or not at all.
    let dataset =
        verified.contract().dataset_for(me, Role::Provider).map(|d| d.name.clone()).ok_or_else(|| {
            NodeError::Refused(format!("contract {} names no dataset of {me}", verified.id()))
        })?;
    let spend = QuotaSpend {
        contract: &binding.contract,
        dataset: &dataset,
        caller: peer,
        n,
        limit,
        what: "lookups",
        noisy_run_epoch: None,
    };
    let remaining = spend.spend(ctx, |used| {
        ProtocolError::QuotaExceeded { requested: n, remaining: limit.saturating_sub(used) }.into()
    })?;
    let key = ctx.secrets.master.derive_oprf_key(&binding.contract, epoch, KeyPurpose::LookupProvider)?;
    let config = ProviderConfig {
        binding: binding.clone(),
        querier: peer.clone(),
        universe_digest,
        policy: ProviderPolicy { remaining_quota: remaining, max_lookups },
    };
    Ok(ProviderSession { verified, binding, provider: LookupProvider::new(config, key) })
}

/// Answers one lookup query session opened by `caller` (the provider role).
pub async fn serve_session(
    ctx: Arc<NodeContext>,
    caller: PeerIdentity,
    mut incoming: Streaming<proto::Frame>,
) -> Result<Response<ResponseStream<proto::Frame>>, Status> {
    let peer = caller.node_id.clone();
    let first = tokio::time::timeout(ctx.config.timeouts.round(), incoming.next())
        .await
        .map_err(|_| Status::deadline_exceeded("no hello"))?
        .ok_or_else(|| Status::invalid_argument("empty lookup stream"))??;
    let contract_hint = LookupMessage::from_bytes(&first.payload).ok().map(|m| m.binding().contract.clone());
    // Before any work or quota: the caller must hold the key the contract pins for it.
    match &contract_hint {
        Some(contract) => {
            if let Err(error) = ctx.check_contract_key_for(&caller, contract.as_str()) {
                return Err(ctx.refuse(Some(contract), Some(&peer), error).into());
            }
        }
        None => return Err(Status::invalid_argument("the first lookup frame is not a lookup message")),
    }
    let session = match tokio::task::block_in_place(|| prepare_session(&ctx, &peer, &first.payload)) {
        Ok(session) => session,
        Err(error) => return Err(ctx.refuse(contract_hint.as_ref(), Some(&peer), error).into()),
    };
    let (tx, rx) = mpsc::channel::<Result<proto::Frame, Status>>(16);
    tokio::spawn(run_provider(ctx, peer, session, first.payload, incoming, tx));
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

async fn run_provider(
    ctx: Arc<NodeContext>,
    peer: NodeId,
    session: ProviderSession,
    hello: Vec<u8>,
    incoming: Streaming<proto::Frame>,
    tx: mpsc::Sender<Result<proto::Frame, Status>>,
) {
    let ProviderSession { verified, binding, provider } = session;
    let span = tracing::info_span!("lookup", node = %ctx.node_id(), contract = %binding.contract, session = %binding.session, role = "provider");
    let mut job = match start_job(
        &ctx,
        ComputationKind::Lookup,
        &verified,
        "provider",
        binding.session.to_string(),
        vec![peer.to_string()],
    ) {
        Ok(job) => job,
        Err(e) => {
            let _ = tx.send(Err(Status::from(e))).await;
            return;
        }
    };
    let deadline = ctx.config.timeouts.round() * SESSION_DEADLINE_ROUNDS;
    let mut observed = Observed::default();
    let result = match tokio::time::timeout(
        deadline,
        drive_provider(&ctx, &peer, provider, hello, incoming, &tx, &mut observed).instrument(span.clone()),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(NodeError::Timeout(format!(
            "the whole lookup session with {peer} ({} s)",
            deadline.as_secs()
        ))),
    };
    match result {
        Ok(output) => {
            tracing::info!(parent: &span, n = output.lookups, "lookup provider done");
            let mut sizes = BTreeMap::new();
            sizes.insert(peer.clone(), output.lookups);
            job.observed = Some(observed);
            finish_job(
                &ctx,
                &mut job,
                &verified,
                RunOutcome {
                    state: JobState::Succeeded,
                    detail: format!("{} lookups by {peer}", output.lookups),
                    set_sizes: sizes,
                    transcript_digest: Some(output.transcript_digest),
                    outcome: Outcome::Ok,
                    // Not counted per job on this side yet.
                    traffic: None,
                    output_files: Vec::new(),
                },
            );
        }
        Err(error) => {
            tracing::warn!(parent: &span, error = %error, "lookup provider session failed");
            job.observed = Some(observed);
            finish_job(&ctx, &mut job, &verified, failed(&error));
            let _ = tx.send(Err(Status::from(error))).await;
        }
    }
}

async fn drive_provider(
    ctx: &NodeContext,
    peer: &NodeId,
    mut provider: LookupProvider,
    hello: Vec<u8>,
    mut incoming: Streaming<proto::Frame>,
    tx: &mpsc::Sender<Result<proto::Frame, Status>>,
    observed: &mut Observed,
) -> Result<ProviderOutput, NodeError> {
    let mut next = Some(hello);
    // One blind per session: a repeated blinded element is a repeated lookup, which
    // would spend one quota unit on two looks at the same entity's pad. Refused.
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    while !provider.is_done() {
        let bytes = match next.take() {
            Some(bytes) => bytes,
            None => crate::run::next_from_peer(ctx, &mut incoming, peer, "lookup").await?,
        };
        let decoded = LookupMessage::from_bytes(&bytes);
        if let Ok(message) = &decoded {
            observed.lookup(Direction::Received, message);
        }
        if let Ok(LookupMessage::BlindedChunk(chunk)) = decoded {
            if chunk.elements.iter().any(|e| !seen.insert(*e)) {
                return Err(NodeError::Refused(format!(
                    "{peer} sent a blinded element twice in one session (a repeated lookup)"
                )));
            }
        }
        let (next_state, out) = tokio::task::block_in_place(|| provider.handle(peer, &bytes))?;
        provider = next_state;
        for message in &out {
            observed.lookup_bytes(Direction::Sent, &message.bytes);
            tx.send(Ok(proto::Frame { payload: message.bytes.clone() })).await.map_err(|_| {
                NodeError::Peer { peer: peer.to_string(), message: "closed the session".into() }
            })?;
        }
    }
    provider
        .into_output()
        .ok_or_else(|| NodeError::Internal("lookup provider finished without output".into()))
}
