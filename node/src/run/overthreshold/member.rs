//! A committee member: evaluates one contributor's blinded elements under its share
//! `k_i` of the session key, after the contract, replay and quota checks. Served on the
//! `OverthresholdEval` stream a contributor opens, or in process when the contributor
//! is this node.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Response, Status, Streaming};
use tracing::Instrument;
use xmcredit_contracts::audit::Outcome;
use xmcredit_contracts::{ComputationKind, Role, VerifiedContract};
use xmcredit_crypto::keys::KeyPurpose;
use xmcredit_crypto::NodeId;
use xmcredit_protocol::overthreshold::{
    CommitteeMember, MemberConfig, MemberOutput, MemberPolicy, OverthresholdMessage,
};
use xmcredit_protocol::{ProtocolError, SessionBinding};

use super::{member_claim, parameters, FAULT_MEMBER_BEFORE_EVALUATION, OUTGOING_FRAMES, QUOTA_DATASET};
use crate::context::NodeContext;
use crate::proto;
use crate::run::observed::{Direction, Observed};
use crate::run::quota::QuotaSpend;
use crate::run::{failed, finish_job, start_job, verified_contract, RunOutcome};
use crate::service::ResponseStream;
use crate::store::JobState;
use crate::transport::PeerIdentity;
use crate::NodeError;

/// A member's session, checked and charged, ready for the blinded chunks.
struct MemberSession {
    verified: VerifiedContract,
    binding: SessionBinding,
    member: CommitteeMember,
}

/// Checks a contributor's Hello, in order: the contract verified now and in the
/// session's epoch, this node a committee member, the caller a contributor, the session
/// never opened by this contributor here (replay), the set size within the contract's
/// minimum and maximum, and last the contributor's daily quota (spent here, with the
/// node's ceiling across contracts, in one transaction).
fn prepare(ctx: &NodeContext, contributor: &NodeId, hello: &[u8]) -> Result<MemberSession, NodeError> {
    let message = OverthresholdMessage::from_bytes(hello)?;
    let OverthresholdMessage::Hello(hello_message) = &message else {
        return Err(NodeError::Protocol(ProtocolError::UnexpectedMessage {
            state: "committee member awaiting Hello",
            got: message.kind().name(),
        }));
    };
    let binding = hello_message.binding.clone();
    let (_, verified, epoch) = verified_contract(ctx, binding.contract.as_str())?;
    if epoch != binding.epoch {
        return Err(NodeError::Refused(format!(
            "session is for epoch {}, the contract is in epoch {epoch}",
            binding.epoch
        )));
    }
    let params = parameters(ctx, &verified)?;
    let me = ctx.node_id();
    verified.require_role(me, Role::Committee)?;
    verified.require_role(contributor, Role::Contributor)?;
    // A replayed Hello is refused before it can spend the contributor's quota.
    ctx.store.claim_session(&member_claim(&binding, contributor), binding.contract.as_str())?;
    let n = hello_message.set_size;
    let min_set_size = verified.contract().limits.min_set_size.get(contributor).copied().unwrap_or(1);
    if n < min_set_size {
        return Err(ProtocolError::SetTooSmall { whose: "contributor", got: n, min: min_set_size }.into());
    }
    if n > params.max_set_size() {
        return Err(
            ProtocolError::SetTooLarge { whose: "contributor", got: n, max: params.max_set_size() }.into()
        );
    }
    let limit = verified.contract().limits.lookups_per_day.get(contributor).copied().unwrap_or(0);
    let spend = QuotaSpend {
        contract: &binding.contract,
        dataset: QUOTA_DATASET,
        caller: contributor,
        n,
        limit,
        what: "overthreshold evaluations",
        noisy_run_epoch: None,
    };
    let remaining = spend.spend(ctx, |used| {
        ProtocolError::QuotaExceeded { requested: n, remaining: limit.saturating_sub(used) }.into()
    })?;
    // k_i for (contract, epoch), derived from the master secret and dropped (zeroized)
    // with the session.
    let key =
        ctx.secrets.master.derive_oprf_key(&binding.contract, epoch, KeyPurpose::OverthresholdCommittee)?;
    let config = MemberConfig {
        binding: binding.clone(),
        contributor: contributor.clone(),
        policy: MemberPolicy {
            min_set_size,
            max_set_size: params.max_set_size(),
            remaining_quota: remaining,
        },
    };
    let (member, out) = CommitteeMember::new(config, key).handle(contributor, hello)?;
    debug_assert!(out.is_empty(), "a member answers Hello with nothing");
    Ok(MemberSession { verified, binding, member })
}

/// Answers one `OverthresholdEval` stream opened by `caller` (a contributor).
pub async fn serve_evaluations(
    ctx: Arc<NodeContext>,
    caller: PeerIdentity,
    mut incoming: Streaming<proto::Frame>,
) -> Result<Response<ResponseStream<proto::Frame>>, Status> {
    let peer = caller.node_id.clone();
    let first = tokio::time::timeout(ctx.config.timeouts.round(), incoming.next())
        .await
        .map_err(|_| Status::deadline_exceeded("no hello"))?
        .ok_or_else(|| Status::invalid_argument("empty overthreshold stream"))??;
    let Ok(message) = OverthresholdMessage::from_bytes(&first.payload) else {
        return Err(Status::invalid_argument(
            "the first overthreshold frame is not an overthreshold message",
        ));
    };
    let contract = message.binding().contract.clone();
    // Before any work or quota: the caller must hold the key the contract pins for it.
    if let Err(error) = ctx.check_contract_key_for(&caller, contract.as_str()) {
        return Err(ctx.refuse(Some(&contract), Some(&peer), error).into());
    }
    let session = match tokio::task::block_in_place(|| prepare(&ctx, &peer, &first.payload)) {
        Ok(session) => session,
        Err(error) => return Err(ctx.refuse(Some(&contract), Some(&peer), error).into()),
    };
    let (tx, rx) = mpsc::channel::<Result<proto::Frame, Status>>(OUTGOING_FRAMES);
    tokio::spawn(run_member(ctx, peer, session, incoming, tx));
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// This node as a committee member for its own contributions: the same checks and
/// quota as for a peer, over in-process channels (`incoming` starts with Hello).
/// Returns the stream of replies.
pub(crate) fn local_evaluations(
    ctx: Arc<NodeContext>,
    mut incoming: mpsc::Receiver<proto::Frame>,
) -> ResponseStream<proto::Frame> {
    let (tx, rx) = mpsc::channel::<Result<proto::Frame, Status>>(OUTGOING_FRAMES);
    let me = ctx.node_id().clone();
    tokio::spawn(async move {
        let Some(hello) = incoming.recv().await else { return };
        let contract =
            OverthresholdMessage::from_bytes(&hello.payload).ok().map(|m| m.binding().contract.clone());
        match tokio::task::block_in_place(|| prepare(&ctx, &me, &hello.payload)) {
            Ok(session) => {
                let incoming = ReceiverStream::new(incoming).map(Ok::<_, Status>);
                run_member(ctx, me, session, incoming, tx).await;
            }
            Err(error) => {
                let error = ctx.refuse(contract.as_ref(), Some(&me), error);
                let _ = tx.send(Err(Status::from(error))).await;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

async fn run_member<S>(
    ctx: Arc<NodeContext>,
    contributor: NodeId,
    session: MemberSession,
    incoming: S,
    tx: mpsc::Sender<Result<proto::Frame, Status>>,
) where
    S: Stream<Item = Result<proto::Frame, Status>> + Unpin,
{
    let MemberSession { verified, binding, member } = session;
    let span = tracing::info_span!("overthreshold", node = %ctx.node_id(), contract = %binding.contract, session = %binding.session, role = "committee");
    let mut job = match start_job(
        &ctx,
        ComputationKind::Overthreshold,
        &verified,
        "committee",
        binding.session.to_string(),
        vec![contributor.to_string()],
    ) {
        Ok(job) => job,
        Err(e) => {
            let _ = tx.send(Err(Status::from(e))).await;
            return;
        }
    };
    let charged = member.charged().unwrap_or(0);
    // The Hello (n) was read before the job started, by `prepare`.
    let mut observed = Observed::default();
    observed.received.set_sizes_announced += 1;
    let deadline = ctx.config.timeouts.round() * super::SESSION_DEADLINE_ROUNDS;
    let result = match tokio::time::timeout(
        deadline,
        drive(&ctx, &contributor, member, incoming, &tx, &mut observed).instrument(span.clone()),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(NodeError::Timeout(format!(
            "the whole overthreshold evaluation for {contributor} ({} s)",
            deadline.as_secs()
        ))),
    };
    job.observed = Some(observed);
    match result {
        Ok(output) => {
            tracing::info!(parent: &span, n = output.evaluated, "overthreshold evaluations done");
            let mut sizes = BTreeMap::new();
            sizes.insert(contributor.clone(), output.evaluated);
            finish_job(
                &ctx,
                &mut job,
                &verified,
                RunOutcome {
                    state: JobState::Succeeded,
                    detail: format!("{} evaluations for {contributor}", output.evaluated),
                    set_sizes: sizes,
                    transcript_digest: None,
                    outcome: Outcome::Ok,
                    // Not counted per job on this side yet.
                    traffic: None,
                    output_files: Vec::new(),
                },
            );
        }
        Err(error) => {
            tracing::warn!(parent: &span, error = %error, "overthreshold evaluations failed");
            let mut outcome = failed(&error);
            outcome.detail = format!("{} ({charged} charged to {contributor}'s quota)", outcome.detail);
            outcome.set_sizes.insert(contributor.clone(), charged);
            finish_job(&ctx, &mut job, &verified, outcome);
            let _ = tx.send(Err(Status::from(error))).await;
        }
    }
}

async fn drive<S>(
    ctx: &NodeContext,
    contributor: &NodeId,
    mut member: CommitteeMember,
    mut incoming: S,
    tx: &mpsc::Sender<Result<proto::Frame, Status>>,
    observed: &mut Observed,
) -> Result<MemberOutput, NodeError>
where
    S: Stream<Item = Result<proto::Frame, Status>> + Unpin,
{
    while !member.is_done() {
        let next = tokio::time::timeout(ctx.config.timeouts.round(), incoming.next())
            .await
            .map_err(|_| NodeError::Timeout(format!("a blinded chunk from {contributor}")))?;
        let bytes = match next {
            Some(Ok(frame)) => frame.payload,
            Some(Err(status)) => {
                return Err(NodeError::BadFrame {
                    peer: contributor.to_string(),
                    reason: status.message().to_string(),
                })
            }
            None => {
                return Err(NodeError::Peer {
                    peer: contributor.to_string(),
                    message: "ended the session early".into(),
                })
            }
        };
        observed.overthreshold_bytes(Direction::Received, &bytes);
        let (next_state, out) = tokio::task::block_in_place(|| member.handle(contributor, &bytes))?;
        member = next_state;
        for message in out {
            observed.overthreshold_bytes(Direction::Sent, &message.bytes);
            crate::run::fault::exit_if_asked(FAULT_MEMBER_BEFORE_EVALUATION);
            tx.send(Ok(proto::Frame { payload: message.bytes })).await.map_err(|_| NodeError::Peer {
                peer: contributor.to_string(),
                message: "closed the session".into(),
            })?;
        }
    }
    member.into_output().ok_or_else(|| NodeError::Internal("committee member finished without output".into()))
}
