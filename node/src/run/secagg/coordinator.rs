//! The coordinator's job: `run secagg --contract X` on the node the contract names as
//! coordinator (normally the credit center).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tracing::Instrument;
use xmcredit_contracts::audit::Outcome;
use xmcredit_contracts::{ComputationKind, OutputForm, Role, VerifiedContract};
use xmcredit_crypto::{ContractId, NodeId};
use xmcredit_protocol::secagg::{
    Aggregate, CollectingKeys, CollectingMaskedInputs, CollectingShares, CollectingUnmaskResponses, Round,
    SecAggMessage, Setup, MAX_VECTOR_LEN,
};
use xmcredit_protocol::ProtocolError;

use super::input::Params;
use super::wire::{fragments, sum_digest, Open, Reassembler, MAX_KEY_BYTES};
use super::{kind_name, message_cap, next_round, roster, transcribe, DEFAULT_UNIVERSE_DATASET};
use crate::context::NodeContext;
use crate::proto;
use crate::run::observed::{Direction, Observed};
use crate::run::{failed, finish_job, report_output, start_job, verified_contract, RunOutcome, Traffic};
use crate::service::admin::ProgressSender;
use crate::store::JobState;
use crate::NodeError;

/// Outgoing frames queued per contributor stream.
const OUTGOING_FRAMES: usize = 16;
/// How long the coordinator waits, after the last round, for contributors to close
/// their streams (so that byte counts are final and nobody sees a reset).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Everything checked before any stream opens.
struct Prepared {
    verified: VerifiedContract,
    params: Params,
    setup: Setup,
    open: Open,
    /// Universe mode: the dataset whose keys are the universe.
    universe_dataset: Option<String>,
    contributors: Vec<NodeId>,
}

/// Runs the coordinator of a secure aggregation under `contract_id`. `dataset` names
/// the universe in universe mode (default [`DEFAULT_UNIVERSE_DATASET`]) and must be
/// empty otherwise.
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
    let binding = prepared.setup.binding().clone();
    let span = tracing::info_span!("secagg", node = %ctx.node_id(), contract = %contract_id, session = %binding.session, role = "coordinator");
    run_prepared(ctx, prepared, progress, started).instrument(span).await.map(|(report, _)| report)
}

/// The SecAgg step of a `lookup` contract with several providers: the coordinator sums
/// the padded vectors of the providers other than itself over `universe` (every one of
/// them must be in the sum). Returns the report and the sum mod 2^64.
pub async fn run_for_lookup(
    ctx: Arc<NodeContext>,
    verified: VerifiedContract,
    epoch: xmcredit_crypto::Epoch,
    universe: Vec<String>,
    progress: ProgressSender,
) -> Result<(serde_json::Value, Vec<u64>), NodeError> {
    let started = Instant::now();
    let params = Params::of(&verified)?;
    let me = ctx.node_id().clone();
    let len = universe.len();
    let mut nonce = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let open =
        Open { contract: verified.id().clone(), epoch, nonce, contract_digest: verified.digest(), universe };
    let binding = open.binding();
    let roster = roster(&verified, &params, &me)?;
    let contributors: Vec<NodeId> = roster.parties().iter().map(|p| p.id.clone()).collect();
    let setup = super::setup(binding, roster, len, &params)?;
    ctx.store.claim_session(setup.binding().session.as_bytes(), verified.id().as_str())?;
    let prepared = Prepared {
        verified,
        params,
        setup,
        open,
        universe_dataset: Some(DEFAULT_UNIVERSE_DATASET.into()),
        contributors,
    };
    let span = tracing::info_span!("secagg", node = %me, contract = %prepared.verified.id(), session = %prepared.setup.binding().session, role = "lookup coordinator");
    let (report, aggregate) = run_prepared(ctx, prepared, progress, started).instrument(span).await?;
    Ok((report, aggregate.sum))
}

async fn run_prepared(
    ctx: Arc<NodeContext>,
    prepared: Prepared,
    progress: ProgressSender,
    started: Instant,
) -> Result<(serde_json::Value, Aggregate), NodeError> {
    let binding = prepared.setup.binding().clone();
    let mut job = start_job(
        &ctx,
        ComputationKind::Secagg,
        &prepared.verified,
        "coordinator",
        binding.session.to_string(),
        prepared.contributors.iter().map(ToString::to_string).collect(),
    )?;
    progress.attach(&ctx, job.id);
    tracing::info!(
        contributors = prepared.contributors.len(),
        len = prepared.setup.vector().len,
        bits = prepared.params.bits,
        threshold = prepared.params.threshold,
        "secagg coordinator starting"
    );
    let mut log = RunLog { setup_s: started.elapsed().as_secs_f64(), ..RunLog::default() };
    let result = drive(&ctx, &prepared, &progress, &mut log).await;
    let session = binding.session.to_string();
    let verified = &prepared.verified;
    match result {
        Ok(aggregate) => {
            audit_dropouts(&ctx, verified, &session, &log, Some(&aggregate));
            let wall_s = started.elapsed().as_secs_f64();
            let report = report(&ctx, &prepared, &aggregate, &log, wall_s);
            let sizes =
                aggregate.contributors.iter().map(|c| (c.clone(), aggregate.sum.len() as u64)).collect();
            let mut observed = log.observed.clone();
            if !prepared.params.lookup {
                observed.wrote("sum", aggregate.sum.len() as u64);
            }
            job.observed = Some(observed);
            finish_job(
                &ctx,
                &mut job,
                verified,
                RunOutcome {
                    state: JobState::Succeeded,
                    detail: format!(
                        "sum of {} entries over {}{}",
                        aggregate.sum.len(),
                        list(&aggregate.contributors),
                        log.dropped_text()
                    ),
                    set_sizes: sizes,
                    transcript_digest: Some(log.transcript.clone().finalize().into()),
                    outcome: Outcome::Ok,
                    traffic: Traffic::from_report(&report),
                    output_files: report_output(&report),
                },
            );
            tracing::info!(
                contributors = aggregate.contributors.len(),
                dropped = log.dropped.len(),
                "secagg coordinator done"
            );
            Ok((report, aggregate))
        }
        Err(error) => {
            tracing::warn!(error = %error, "secagg coordinator failed");
            audit_dropouts(&ctx, verified, &session, &log, None);
            let mut outcome = failed(&error);
            let effect = if log.unmask_requested { "no sum was output" } else { "nothing was unmasked" };
            outcome.detail = format!("{}{}; {effect}", outcome.detail, log.dropped_text());
            outcome.outcome = match outcome.outcome {
                Outcome::Refused { .. } => Outcome::Refused { reason: outcome.detail.clone() },
                _ => Outcome::Failed { reason: outcome.detail.clone() },
            };
            outcome.transcript_digest = Some(log.transcript.clone().finalize().into());
            job.observed = Some(log.observed.clone());
            finish_job(&ctx, &mut job, verified, outcome);
            Err(error)
        }
    }
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
    verified.require_receiver(&me, OutputForm::Sum)?;
    let params = Params::of(&verified)?;
    let (universe, universe_dataset) = if params.universe_mode() {
        let name = if dataset.is_empty() { DEFAULT_UNIVERSE_DATASET } else { dataset };
        (load_universe(ctx, name)?, Some(name.to_string()))
    } else {
        if !dataset.is_empty() {
            return Err(NodeError::Refused(format!(
                "contract {contract_id} sums by its listed groups; the coordinator uses no dataset ({dataset} given)"
            )));
        }
        (Vec::new(), None)
    };
    let len = if params.universe_mode() { universe.len() } else { params.groups.len() };
    let mut nonce = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let open =
        Open { contract: verified.id().clone(), epoch, nonce, contract_digest: verified.digest(), universe };
    let binding = open.binding();
    let roster = roster(&verified, &params, &me)?;
    let contributors: Vec<NodeId> = roster.parties().iter().map(|p| p.id.clone()).collect();
    // Refuses a width at which n contributors could wrap the sum.
    let setup = super::setup(binding, roster, len, &params)?;
    ctx.store.claim_session(setup.binding().session.as_bytes(), contract_id)?;
    Ok(Prepared { verified, params, setup, open, universe_dataset, contributors })
}

/// The sorted keys of a local dataset: the public universe. Only the keys leave it.
fn load_universe(ctx: &NodeContext, name: &str) -> Result<Vec<String>, NodeError> {
    let meta = ctx
        .store
        .current_dataset(name)?
        .ok_or_else(|| NodeError::NotFound { what: "universe dataset", id: name.to_string() })?;
    let mut keys = ctx.store.dataset_keys(&meta)?;
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() || keys.len() > MAX_VECTOR_LEN {
        return Err(NodeError::Refused(format!(
            "universe dataset {name} has {} keys; a universe needs 1 to {MAX_VECTOR_LEN}",
            keys.len()
        )));
    }
    if let Some(key) = keys.iter().find(|k| k.is_empty() || k.len() > MAX_KEY_BYTES) {
        return Err(NodeError::Refused(format!(
            "universe dataset {name} has a key of {} bytes; keys must be 1 to {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(keys)
}

/// What happened in a run, kept for the report and the audit even when it fails.
#[derive(Default)]
struct RunLog {
    /// Who dropped at which round, and why.
    dropped: BTreeMap<NodeId, (Round, String)>,
    /// Wall seconds of each round, in order.
    rounds: Vec<(Round, f64)>,
    transcript: Sha256,
    sent: BTreeMap<NodeId, u64>,
    received: BTreeMap<NodeId, u64>,
    /// Whether the unmask request went out (after it, survivors reveal shares).
    unmask_requested: bool,
    /// Seconds to check the contract and prepare the session (the universe loaded).
    setup_s: f64,
    /// Seconds from the sum to every stream closed.
    close_s: f64,
    /// What this node received and sent, by class (issue 10).
    observed: Observed,
}

impl RunLog {
    fn dropped_text(&self) -> String {
        if self.dropped.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .dropped
            .iter()
            .map(|(node, (round, reason))| format!("{node} at {round} ({reason})"))
            .collect();
        format!("; dropped: {}", parts.join(", "))
    }
}

/// Something a contributor's stream task reports.
enum Event {
    /// One whole message.
    Message(NodeId, Vec<u8>),
    /// The stream ended (the reason says how); nothing more will come from it.
    Gone(NodeId, String),
}

/// One stream per contributor: the queue of frames to send and the task that reads.
struct Link {
    outgoing: Option<mpsc::Sender<proto::Frame>>,
    received: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

struct Links {
    links: BTreeMap<NodeId, Link>,
}

impl Links {
    /// Opens a stream to every contributor; each begins with the opening message.
    fn open(
        ctx: &Arc<NodeContext>,
        contributors: &[NodeId],
        open: &[u8],
        cap: usize,
        events: &mpsc::Sender<Event>,
        log: &mut RunLog,
    ) -> Self {
        let mut links = BTreeMap::new();
        for peer in contributors {
            let (tx, rx) = mpsc::channel(OUTGOING_FRAMES);
            let received = Arc::new(AtomicU64::new(0));
            let first = fragments(open);
            *log.sent.entry(peer.clone()).or_default() +=
                first.iter().map(|f| f.payload.len() as u64).sum::<u64>();
            transcribe(&mut log.transcript, true, peer, open);
            let task = tokio::spawn(stream_task(
                ctx.clone(),
                peer.clone(),
                first,
                rx,
                events.clone(),
                cap,
                received.clone(),
            ));
            links.insert(peer.clone(), Link { outgoing: Some(tx), received, task });
        }
        Self { links }
    }

    fn alive(&self, peer: &NodeId) -> bool {
        self.links.get(peer).is_some_and(|l| l.outgoing.is_some())
    }

    /// Records `peer` as dropped at `round` (once) and ends its stream.
    fn drop_peer(&mut self, peer: &NodeId, round: Round, reason: String, log: &mut RunLog) {
        if let Some(link) = self.links.get_mut(peer) {
            if link.outgoing.take().is_some() {
                tracing::warn!(peer = %peer, %round, reason = %reason, "contributor dropped");
                log.dropped.entry(peer.clone()).or_insert((round, reason));
            }
        }
    }

    /// Sends one message to `peer`; a stream that is gone or does not take the message
    /// within `timeout` drops the peer.
    async fn send(&mut self, peer: &NodeId, bytes: &[u8], round: Round, timeout: Duration, log: &mut RunLog) {
        let Some(tx) = self.links.get(peer).and_then(|l| l.outgoing.clone()) else { return };
        transcribe(&mut log.transcript, true, peer, bytes);
        for frame in fragments(bytes) {
            let len = frame.payload.len() as u64;
            if !matches!(tokio::time::timeout(timeout, tx.send(frame)).await, Ok(Ok(()))) {
                self.drop_peer(peer, round, "its stream does not take messages".into(), log);
                return;
            }
            *log.sent.entry(peer.clone()).or_default() += len;
        }
    }

    /// Ends every stream and waits (briefly) for the contributors to end theirs.
    async fn close(self, log: &mut RunLog) {
        let mut tasks = Vec::new();
        for (peer, mut link) in self.links {
            link.outgoing.take();
            tasks.push((peer, link.received, link.task));
        }
        let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
        for (peer, received, mut task) in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::debug!(peer = %peer, "stream still open after the grace period; abandoned");
                task.abort();
            }
            log.received.insert(peer, received.load(Ordering::Relaxed));
        }
    }
}

/// Opens the `SecAgg` call to one contributor and forwards what it sends as whole
/// messages; reports how the stream ended.
async fn stream_task(
    ctx: Arc<NodeContext>,
    peer: NodeId,
    first: Vec<proto::Frame>,
    outgoing: mpsc::Receiver<proto::Frame>,
    events: mpsc::Sender<Event>,
    cap: usize,
    received: Arc<AtomicU64>,
) {
    let reason = match read_stream(&ctx, &peer, first, outgoing, &events, cap, &received).await {
        Ok(()) => "closed its stream".to_string(),
        Err(reason) => reason,
    };
    let _ = events.send(Event::Gone(peer, reason)).await;
}

async fn read_stream(
    ctx: &NodeContext,
    peer: &NodeId,
    first: Vec<proto::Frame>,
    outgoing: mpsc::Receiver<proto::Frame>,
    events: &mpsc::Sender<Event>,
    cap: usize,
    received: &AtomicU64,
) -> Result<(), String> {
    let round = ctx.config.timeouts.round();
    let channel = ctx.channel(peer).await.map_err(|e| format!("unreachable: {e}"))?;
    let requests = tokio_stream::iter(first).chain(ReceiverStream::new(outgoing));
    let mut client = crate::service::peer_client(channel);
    let call = client.sec_agg(requests);
    let response = tokio::time::timeout(round, call)
        .await
        .map_err(|_| format!("did not accept the session within {} s", round.as_secs()))?
        .map_err(|status| format!("did not take part: {}", status.message()))?;
    let mut incoming = response.into_inner();
    let mut reassembler = Reassembler::new(cap);
    while let Some(item) = incoming.next().await {
        let frame = item.map_err(|status| format!("its stream failed: {}", status.message()))?;
        received.fetch_add(frame.payload.len() as u64, Ordering::Relaxed);
        if let Some(message) = reassembler.push(frame).map_err(|e| format!("sent a bad frame: {e}"))? {
            events
                .send(Event::Message(peer.clone(), message))
                .await
                .map_err(|_| "the coordinator stopped listening".to_string())?;
        }
    }
    Ok(())
}

/// A coordinator state that collects one round's messages.
trait Collecting {
    const ROUND: Round;
    fn accept(&mut self, sender: &NodeId, message: SecAggMessage) -> Result<(), ProtocolError>;
    fn pending(&self) -> Vec<NodeId>;
}

fn unexpected(state: &'static str, message: &SecAggMessage) -> ProtocolError {
    ProtocolError::UnexpectedMessage { state, got: kind_name(message) }
}

impl Collecting for CollectingKeys {
    const ROUND: Round = Round::AdvertiseKeys;
    fn accept(&mut self, sender: &NodeId, message: SecAggMessage) -> Result<(), ProtocolError> {
        match message {
            SecAggMessage::AdvertiseKeys(m) => self.receive(sender, *m),
            other => Err(unexpected("collecting keys", &other)),
        }
    }
    fn pending(&self) -> Vec<NodeId> {
        CollectingKeys::pending(self)
    }
}

impl Collecting for CollectingShares {
    const ROUND: Round = Round::ShareKeys;
    fn accept(&mut self, sender: &NodeId, message: SecAggMessage) -> Result<(), ProtocolError> {
        match message {
            SecAggMessage::EncryptedShares(m) => self.receive(sender, m),
            other => Err(unexpected("collecting shares", &other)),
        }
    }
    fn pending(&self) -> Vec<NodeId> {
        CollectingShares::pending(self)
    }
}

impl Collecting for CollectingMaskedInputs {
    const ROUND: Round = Round::MaskedInputCollection;
    fn accept(&mut self, sender: &NodeId, message: SecAggMessage) -> Result<(), ProtocolError> {
        match message {
            SecAggMessage::MaskedInput(m) => self.receive(sender, m),
            other => Err(unexpected("collecting masked inputs", &other)),
        }
    }
    fn pending(&self) -> Vec<NodeId> {
        CollectingMaskedInputs::pending(self)
    }
}

impl Collecting for CollectingUnmaskResponses {
    const ROUND: Round = Round::Unmasking;
    fn accept(&mut self, sender: &NodeId, message: SecAggMessage) -> Result<(), ProtocolError> {
        match message {
            SecAggMessage::UnmaskResponse(m) => self.receive(sender, m),
            other => Err(unexpected("collecting unmask responses", &other)),
        }
    }
    fn pending(&self) -> Vec<NodeId> {
        CollectingUnmaskResponses::pending(self)
    }
}

/// Collects one round until everyone it waits for has answered, dropped, or the round's
/// time is up; returns how many answered.
async fn collect<S: Collecting>(
    state: &mut S,
    links: &mut Links,
    events: &mut mpsc::Receiver<Event>,
    log: &mut RunLog,
    timeout: Duration,
    progress: &ProgressSender,
) -> usize {
    let round = S::ROUND;
    let deadline = tokio::time::Instant::now() + timeout;
    let expected = state.pending().len();
    let stage = format!("round {}", round.number());
    let mut answered = 0;
    progress.progress(&stage, 0, expected as u64);
    loop {
        let waiting: Vec<NodeId> = state.pending().into_iter().filter(|p| links.alive(p)).collect();
        if waiting.is_empty() {
            break;
        }
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(_) => {
                for peer in waiting {
                    let reason = format!("no answer within {} s", timeout.as_secs());
                    links.drop_peer(&peer, round, reason, log);
                }
                break;
            }
        };
        match event {
            Event::Message(peer, bytes) => {
                if !links.alive(&peer) {
                    continue; // a late message from a contributor already dropped
                }
                transcribe(&mut log.transcript, false, &peer, &bytes);
                let observed = &mut log.observed;
                let result = tokio::task::block_in_place(|| {
                    SecAggMessage::from_bytes(&bytes).and_then(|message| {
                        observed.secagg(Direction::Received, &message);
                        state.accept(&peer, message)
                    })
                });
                match result {
                    Ok(()) => {
                        answered += 1;
                        progress.progress(&stage, answered as u64, expected as u64);
                    }
                    Err(e) => links.drop_peer(&peer, round, format!("sent a message refused: {e}"), log),
                }
            }
            Event::Gone(peer, reason) => {
                // One that already answered this round is gone for the next one; after
                // its last answer a contributor may go.
                let answered_already = !state.pending().contains(&peer);
                if answered_already && round == Round::Unmasking {
                    continue;
                }
                let at = if answered_already { next_round(round) } else { round };
                links.drop_peer(&peer, at, reason, log);
            }
        }
    }
    answered
}

/// Stops the run when fewer than the contract allows answered a round: the threshold,
/// and up to the masked inputs (which fix who is in the sum) the contract's
/// `min_contributors`. Round 4 only needs `t` shares.
fn enough(params: &Params, round: Round, answered: usize) -> Result<(), NodeError> {
    if answered < params.threshold {
        return Err(
            ProtocolError::BelowThreshold { round, got: answered, threshold: params.threshold }.into()
        );
    }
    if round != Round::Unmasking && answered < params.min_contributors {
        return Err(NodeError::Refused(format!(
            "secure aggregation {round}: {answered} contributors left, the contract's min_contributors is {}; aborted",
            params.min_contributors
        )));
    }
    Ok(())
}

async fn drive(
    ctx: &Arc<NodeContext>,
    prepared: &Prepared,
    progress: &ProgressSender,
    log: &mut RunLog,
) -> Result<Aggregate, NodeError> {
    let params = &prepared.params;
    let timeout = ctx.config.timeouts.round();
    let cap = message_cap(prepared.setup.vector().len);
    let open = prepared.open.to_bytes();
    let (events_tx, mut events) = mpsc::channel(64);
    let mut links = Links::open(ctx, &prepared.contributors, &open, cap, &events_tx, log);
    drop(events_tx);
    let result = rounds(&mut links, &mut events, prepared, params, timeout, progress, log).await;
    // End every stream: after the last round, or at once on an abort, so that no
    // contributor waits for a message that will never come.
    drop(events);
    let closing = Instant::now();
    links.close(log).await;
    log.close_s = closing.elapsed().as_secs_f64();
    result
}

async fn rounds(
    links: &mut Links,
    events: &mut mpsc::Receiver<Event>,
    prepared: &Prepared,
    params: &Params,
    timeout: Duration,
    progress: &ProgressSender,
    log: &mut RunLog,
) -> Result<Aggregate, NodeError> {
    let mut clock = Instant::now();
    let mut lap = |log: &mut RunLog, round: Round| {
        log.rounds.push((round, clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };

    // Round 0: AdvertiseKeys.
    let mut keys = CollectingKeys::new(prepared.setup.clone());
    let answered = collect(&mut keys, links, events, log, timeout, progress).await;
    enough(params, Round::AdvertiseKeys, answered)?;
    crate::run::fault::exit_if_asked("secagg-coordinator-before-key-list");
    let (mut shares, key_list) = keys.close_round()?;
    let message = SecAggMessage::KeyList(key_list.message);
    let bytes = message.to_bytes();
    for peer in &key_list.to {
        log.observed.secagg(Direction::Sent, &message);
        links.send(peer, &bytes, Round::ShareKeys, timeout, log).await;
    }
    lap(log, Round::AdvertiseKeys);

    // Round 1: ShareKeys.
    let answered = collect(&mut shares, links, events, log, timeout, progress).await;
    enough(params, Round::ShareKeys, answered)?;
    crate::run::fault::exit_if_asked("secagg-coordinator-before-share-relay");
    let (mut masked, relays) = shares.close_round()?;
    for relay in relays {
        let message = SecAggMessage::ShareRelay(relay.message);
        log.observed.secagg(Direction::Sent, &message);
        let bytes = message.to_bytes();
        links.send(&relay.to, &bytes, Round::MaskedInputCollection, timeout, log).await;
    }
    lap(log, Round::ShareKeys);

    // Round 2: MaskedInputCollection.
    let answered = collect(&mut masked, links, events, log, timeout, progress).await;
    enough(params, Round::MaskedInputCollection, answered)?;
    crate::run::fault::exit_if_asked("secagg-coordinator-before-unmask-request");
    let (mut unmasking, request) = masked.close_round()?;
    let bytes = SecAggMessage::UnmaskRequest(request.message).to_bytes();
    log.unmask_requested = true;
    for peer in &request.to {
        links.send(peer, &bytes, Round::Unmasking, timeout, log).await;
    }
    lap(log, Round::MaskedInputCollection);

    // Round 4: Unmasking.
    let answered = collect(&mut unmasking, links, events, log, timeout, progress).await;
    enough(params, Round::Unmasking, answered)?;
    crate::run::fault::exit_if_asked("secagg-coordinator-before-sum");
    let aggregate = tokio::task::block_in_place(|| unmasking.close_round())?;
    log.observed.received.unmasked_outputs += 1;
    lap(log, Round::Unmasking);
    Ok(aggregate)
}

/// One `interrupted` audit record per contributor that dropped, naming the round.
fn audit_dropouts(
    ctx: &NodeContext,
    verified: &VerifiedContract,
    session: &str,
    log: &RunLog,
    aggregate: Option<&Aggregate>,
) {
    for (node, (round, reason)) in &log.dropped {
        let effect = match aggregate {
            Some(a) if a.contributors.contains(node) => {
                "its input is in the sum (its self-mask was rebuilt from the others' shares)"
            }
            Some(_) => "its input is not in the sum",
            None => "the run aborted",
        };
        let event = xmcredit_contracts::audit::AuditEvent::Dropout {
            computation: ComputationKind::Secagg,
            node: node.clone(),
            round: round.to_string(),
        };
        ctx.audit(
            event,
            Some(verified.id()),
            Some(ComputationKind::Secagg),
            vec![node.clone()],
            BTreeMap::new(),
            Outcome::Interrupted {
                reason: format!("secagg session {session}: {node} dropped at {round}: {reason}; {effect}"),
            },
            None,
        );
    }
}

fn list(nodes: &[NodeId]) -> String {
    nodes.iter().map(NodeId::as_str).collect::<Vec<_>>().join(", ")
}

/// Entries listed in full in the report; longer sums give a digest, the first entries
/// and the CSV file.
const REPORT_ENTRIES: usize = 1 << 12;

fn report(
    ctx: &NodeContext,
    prepared: &Prepared,
    aggregate: &Aggregate,
    log: &RunLog,
    wall_s: f64,
) -> serde_json::Value {
    let labels: &[String] =
        if prepared.params.universe_mode() { &prepared.open.universe } else { &prepared.params.groups };
    let binding = prepared.setup.binding();
    // The report carries the sum (or its digest) either way; a file that cannot be
    // written is logged, not a failure of the run.
    // A lookup's sum is the padded vector: uniformly random to the coordinator, and
    // served to queriers from the store, not from a file.
    // Noise can take an entry below zero: decoded as signed then (`Aggregate::decoded`).
    let values = aggregate.decoded();
    let output = if prepared.params.lookup {
        None
    } else {
        write_output(ctx, prepared, labels, &values)
            .map_err(|e| tracing::warn!(error = %e, "could not write the sum to a file"))
            .ok()
    };
    let total: i128 = values.iter().sum();
    let nonzero = values.iter().filter(|&&v| v != 0).count();
    let in_sum: BTreeSet<&NodeId> = aggregate.contributors.iter().collect();
    let dropped: BTreeMap<&str, u8> =
        log.dropped.iter().map(|(node, (round, _))| (node.as_str(), round.number())).collect();
    let reasons: BTreeMap<&str, String> = log
        .dropped
        .iter()
        .map(|(node, (round, reason))| (node.as_str(), format!("{round}: {reason}")))
        .collect();
    let per_round: BTreeMap<String, f64> =
        log.rounds.iter().map(|(round, seconds)| (round.number().to_string(), *seconds)).collect();
    let per_node: BTreeMap<&str, serde_json::Value> = prepared
        .contributors
        .iter()
        .map(|node| {
            let sent = log.sent.get(node).copied().unwrap_or(0);
            let received = log.received.get(node).copied().unwrap_or(0);
            (
                node.as_str(),
                serde_json::json!({ "sent": sent, "received": received, "in_sum": in_sum.contains(node) }),
            )
        })
        .collect();
    let head: Vec<serde_json::Value> =
        labels.iter().zip(&values).take(10).map(|(label, value)| serde_json::json!([label, value])).collect();
    let full = aggregate.sum.len() <= REPORT_ENTRIES && !prepared.params.universe_mode();
    serde_json::json!({
        "computation": "secagg",
        "contract": prepared.verified.id().as_str(),
        "session": binding.session.to_string(),
        "epoch": binding.epoch.0,
        "mode": if prepared.params.universe_mode() { "universe" } else { "groups" },
        "universe": prepared.universe_dataset.as_ref().map(|name| serde_json::json!({
            "dataset": name,
            "size": prepared.open.universe.len(),
            "digest": hex::encode(prepared.open.universe_digest()),
        })),
        "groups": if full { serde_json::json!(labels) } else { serde_json::Value::Null },
        "sum": if full { serde_json::json!(values) } else { serde_json::Value::Null },
        "noise": noise_report(&prepared.params, aggregate.contributors.len()),
        "vector_len": aggregate.sum.len(),
        "output_bits": prepared.params.bits,
        "threshold": prepared.params.threshold,
        "min_contributors": prepared.params.min_contributors,
        "sum_digest": sum_digest(&aggregate.sum),
        "sum_total": total,
        "nonzero": nonzero,
        "head": head,
        "output_file": output,
        "contributors": aggregate.contributors,
        "dropped": dropped,
        "dropped_reasons": reasons,
        "wall_s": wall_s,
        "setup_s": log.setup_s,
        "per_round_s": per_round,
        "close_s": log.close_s,
        "bytes_sent": log.sent.values().sum::<u64>(),
        "bytes_received": log.received.values().sum::<u64>(),
        "bytes_per_node": per_node,
        "transcript_digest": hex::encode(log.transcript.clone().finalize()),
    })
}

/// The contract's noise as the coordinator applied it: the declared total, what each
/// contributor added, what this sum carries with its number of inputs, and the ε the
/// declared variance gives at δ = 10^-6 for the declared sensitivity (Skellam bound,
/// `xmcredit_crypto::noise::skellam_epsilon`). `null` for an exact sum.
fn noise_report(params: &Params, inputs: usize) -> serde_json::Value {
    let Some(noise) = params.noise else { return serde_json::Value::Null };
    let fewest = params.fewest().max(1);
    let share = noise.variance() as f64 / fewest as f64;
    let sensitivity = noise.sensitivity() as f64;
    serde_json::json!({
        "mechanism": "skellam",
        "variance": noise.variance(),
        "sensitivity": noise.sensitivity(),
        "per_contributor_variance": share,
        "variance_in_this_sum": share * inputs as f64,
        "epsilon_at_delta_1e-6": xmcredit_crypto::noise::skellam_epsilon(noise.variance() as f64, sensitivity, sensitivity, 1e-6),
    })
}

/// Writes the whole sum as CSV (`group,sum`) under `<data_dir>/outputs/`, readable by
/// the node's user only (mode 0600); returns its path.
fn write_output(
    ctx: &NodeContext,
    prepared: &Prepared,
    labels: &[String],
    sum: &[i128],
) -> Result<String, NodeError> {
    use std::fmt::Write as _;
    let file_name = format!("secagg-{}-{}.csv", prepared.verified.id(), prepared.setup.binding().session);
    let mut text = String::with_capacity(sum.len() * 32);
    text.push_str("group,sum\n");
    for (label, value) in labels.iter().zip(sum) {
        let _ = writeln!(text, "{label},{value}");
    }
    // Per-entity sums are confidential: mode 0600, like a key.
    let path = crate::run::write_output(ctx, &file_name, text.as_bytes())?;
    Ok(path.display().to_string())
}
