//! Running computations: the node's drivers of the protocol state machines. Each driver
//! checks the contract and its limits before it sends anything, records a job, moves
//! protocol messages over gRPC frames, and audits the outcome.

pub mod fault;
pub mod lookup;
pub mod observed;
pub mod overthreshold;
pub mod psi;
pub(crate) mod quota;
pub mod secagg;

use std::collections::BTreeMap;
use std::sync::Arc;

use xmcredit_contracts::audit::{AuditEvent, Outcome};
use xmcredit_contracts::{ComputationKind, Role, VerifiedContract};
use xmcredit_crypto::{Epoch, NodeId};

use crate::context::NodeContext;
use crate::proto;
use crate::service::admin::ProgressSender;
use crate::store::{DatasetVersion, JobRecord, JobState, StoredContract};
use crate::NodeError;

/// Runs the computation the operator asked for, as this node's role in the contract.
pub async fn run_job(
    ctx: Arc<NodeContext>,
    request: proto::RunRequest,
    progress: ProgressSender,
) -> Result<serde_json::Value, NodeError> {
    match request.computation.as_str() {
        "psi" => psi::run_client(ctx, &request.contract_id, &request.dataset, progress).await,
        "secagg" => secagg::run_coordinator(ctx, &request.contract_id, &request.dataset, progress).await,
        "lookup" => lookup::run(ctx, &request.contract_id, &request.dataset, progress).await,
        "overthreshold" => {
            overthreshold::run_coordinator(ctx, &request.contract_id, &request.dataset, progress).await
        }
        other => Err(NodeError::Refused(format!(
            "unknown computation {other:?}: use psi, secagg, lookup or overthreshold"
        ))),
    }
}

/// A contract this node holds, verified now, with the current epoch.
pub fn verified_contract(
    ctx: &NodeContext,
    id: &str,
) -> Result<(StoredContract, VerifiedContract, Epoch), NodeError> {
    let stored = ctx.store.require_contract(id)?;
    let now = ctx.now_unix();
    let verified = stored.verify(now)?;
    let epoch = verified.epoch_at(now)?;
    Ok((stored, verified, epoch))
}

/// The dataset the contract names for `me` in `role` (or `requested`, which must be
/// that one), checked against the contract's columns. Callers read its rows block by
/// block (`Store::dataset_blocks`, `dataset_rows`) or its keys (`dataset_keys`).
pub fn contract_dataset(
    ctx: &NodeContext,
    verified: &VerifiedContract,
    me: &NodeId,
    role: Role,
    requested: &str,
) -> Result<DatasetVersion, NodeError> {
    let named = verified
        .contract()
        .dataset_for(me, role)
        .ok_or_else(|| NodeError::Refused(format!("contract {} names no dataset for {me}", verified.id())))?;
    if !requested.is_empty() && requested != named.name {
        return Err(NodeError::Refused(format!(
            "contract {} allows dataset {} for {me}, not {requested}",
            verified.id(),
            named.name
        )));
    }
    let meta = ctx
        .store
        .current_dataset(&named.name)?
        .ok_or_else(|| NodeError::NotFound { what: "dataset", id: named.name.clone() })?;
    verified.require_schema(me, &meta.schema)?;
    Ok(meta)
}

/// A job record in the running state; finish it with [`finish_job`].
pub fn start_job(
    ctx: &NodeContext,
    computation: ComputationKind,
    contract: &VerifiedContract,
    role: &str,
    session: String,
    peers: Vec<String>,
) -> Result<JobRecord, NodeError> {
    ctx.store
        .start_job(JobRecord {
            id: 0,
            computation: computation.to_string(),
            contract_id: contract.id().to_string(),
            role: role.to_string(),
            session,
            peers,
            state: JobState::Running,
            detail: String::new(),
            started_unix: ctx.now_unix(),
            finished_unix: None,
            observed: None,
        })
        .inspect(|job| crate::console::record_job_start(job.id))
}

/// What a finished run records and audits.
#[derive(Debug)]
pub struct RunOutcome {
    pub state: JobState,
    pub detail: String,
    pub set_sizes: BTreeMap<NodeId, u64>,
    pub transcript_digest: Option<[u8; 32]>,
    pub outcome: Outcome,
    /// Bytes this node sent and received in the job, as its run report counts them;
    /// `None` where the driver does not count them (the console then shows "-").
    pub traffic: Option<Traffic>,
    /// Names (under `outputs/`, not full paths) of the files the job wrote.
    pub output_files: Vec<String>,
}

/// Bytes one node moved in one job (the console's jobs page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
}

impl Traffic {
    /// The `bytes_sent` and `bytes_received` of a run report, if it has both: reading
    /// them from the report keeps the console equal to what the operator was told.
    pub fn from_report(report: &serde_json::Value) -> Option<Self> {
        Some(Self { sent: report["bytes_sent"].as_u64()?, received: report["bytes_received"].as_u64()? })
    }
}

/// The file name of an output path (the console lists names; the folder is always
/// `<data_dir>/outputs`, and full paths would show the operator's directory layout).
pub fn output_name(path: &std::path::Path) -> Option<String> {
    path.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// The output file a run report names in `output_file`, by name.
pub fn report_output(report: &serde_json::Value) -> Vec<String> {
    report["output_file"].as_str().and_then(|p| output_name(std::path::Path::new(p))).into_iter().collect()
}

/// Records the job's end and appends the audit record.
pub fn finish_job(ctx: &NodeContext, job: &mut JobRecord, contract: &VerifiedContract, outcome: RunOutcome) {
    let parties: Vec<NodeId> = contract.contract().parties.iter().map(|p| p.node.clone()).collect();
    if let Err(e) = ctx.store.finish_job(job, outcome.state, outcome.detail.clone(), ctx.now_unix()) {
        tracing::error!(job = job.id, error = %e, "could not record the job's end");
    }
    ctx.forget_progress(job.id);
    crate::console::record_job_end(ctx, job, &outcome);
    let event = AuditEvent::Run { computation: contract.kind(), role: job.role.clone(), job: job.id };
    ctx.audit(
        event,
        Some(contract.id()),
        Some(contract.kind()),
        parties,
        outcome.set_sizes,
        outcome.outcome,
        outcome.transcript_digest,
    );
    // Witnesses get the new head now, not at the next period.
    ctx.head_due.notify_one();
}

/// The outcome of a run that ended with an error.
pub fn failed(error: &NodeError) -> RunOutcome {
    let refused = matches!(error, NodeError::Contract(_) | NodeError::Refused(_) | NodeError::Replay { .. });
    RunOutcome {
        state: if refused { JobState::Refused } else { JobState::Failed },
        detail: error.to_string(),
        set_sizes: BTreeMap::new(),
        transcript_digest: None,
        outcome: if refused {
            Outcome::Refused { reason: error.to_string() }
        } else {
            Outcome::Failed { reason: error.to_string() }
        },
        traffic: None,
        output_files: Vec::new(),
    }
}

/// Writes an output the contract grants this node's operator to
/// `<data_dir>/outputs/<file_name>`: the folder mode 0700, the file 0600, atomically.
/// Outputs can hold codes and per-entity sums, as sensitive as the data they came from.
pub fn write_output(
    ctx: &NodeContext,
    file_name: &str,
    bytes: &[u8],
) -> Result<std::path::PathBuf, NodeError> {
    let dir = ctx.config.data_dir.join("outputs");
    std::fs::create_dir_all(&dir).map_err(|e| NodeError::file(&dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| NodeError::file(&dir, e))?;
    }
    let path = dir.join(file_name);
    crate::pki::write_secret_file(&path, bytes)?;
    Ok(path)
}

/// The next message a peer sends on a session stream it opened (the server side of
/// PSI and lookup), within one round. A stream error is the peer's fault (a frame over
/// the size limit, a reset); an end of stream is the peer ending the session early.
pub(crate) async fn next_from_peer(
    ctx: &NodeContext,
    incoming: &mut tonic::Streaming<proto::Frame>,
    peer: &NodeId,
    what: &str,
) -> Result<Vec<u8>, NodeError> {
    use tokio_stream::StreamExt;
    let received = tokio::time::timeout(ctx.config.timeouts.round(), incoming.next())
        .await
        .map_err(|_| NodeError::Timeout(format!("a {what} message from {peer}")))?;
    match received {
        Some(Ok(frame)) => Ok(frame.payload),
        Some(Err(status)) => {
            Err(NodeError::BadFrame { peer: peer.to_string(), reason: status.message().to_string() })
        }
        None => Err(NodeError::Peer { peer: peer.to_string(), message: "ended the session early".into() }),
    }
}
