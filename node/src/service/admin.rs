//! The operator's service. It is served only on the Unix socket in the data directory
//! (`admin_socket`), never on the network listener: being able to open that socket (the
//! node's own local account) is what it takes to operate the node, and no certificate,
//! whoever issued it, does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use xmcredit_contracts::audit::{AuditEvent, Outcome};
use xmcredit_contracts::DatasetSchema;

use super::{contracts, peer_client, ResponseStream};
use crate::context::{JobProgress, NodeContext, ProgressMap};
use crate::import::{read_csv, schema_with_key_flag, ImportReport, IMPORT_SPILL_DIR};
use crate::proto::{self, admin_server::Admin};
use crate::store::AuditLog;
use crate::NodeError;

#[derive(Debug, Clone)]
pub struct AdminService {
    ctx: Arc<NodeContext>,
}

impl AdminService {
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self { ctx }
    }
}

/// Sends progress messages for a long operation; the last one carries the report.
#[derive(Debug, Clone)]
pub struct ProgressSender {
    tx: mpsc::Sender<Result<proto::Progress, Status>>,
    /// The job this sender reports for and the node's map of running jobs' progress,
    /// once the driver has started its job ([`ProgressSender::attach`]): the console
    /// shows the last report even when no operator is watching the stream.
    job: Arc<std::sync::OnceLock<(ProgressMap, u64)>>,
}

impl ProgressSender {
    pub fn channel() -> (Self, ResponseStream<proto::Progress>) {
        let (tx, rx) = mpsc::channel(64);
        (Self { tx, job: Default::default() }, Box::pin(ReceiverStream::new(rx)))
    }

    /// Ties this sender to job `job_id`: from now on each report is also kept in
    /// `ctx.job_progress` until the job finishes. A second call is ignored (one run,
    /// one job).
    pub fn attach(&self, ctx: &NodeContext, job_id: u64) {
        if self.job.set((ctx.job_progress.clone(), job_id)).is_ok() {
            if let Ok(mut map) = ctx.job_progress.lock() {
                map.insert(job_id, JobProgress { phase: "started".into(), done: 0, total: 0 });
            }
        }
    }

    /// Reports progress; dropped silently if the operator went away.
    pub fn progress(&self, stage: &str, done: u64, total: u64) {
        if let Some((map, job_id)) = self.job.get() {
            if let Ok(mut map) = map.lock() {
                // Only an entry still there is updated: a report after the job finished
                // (its entry removed) must not bring it back as running.
                if let Some(last) = map.get_mut(job_id) {
                    *last = JobProgress { phase: stage.to_string(), done, total };
                }
            }
        }
        let _ = self.tx.try_send(Ok(proto::Progress {
            stage: stage.to_string(),
            done,
            total,
            report_json: String::new(),
        }));
    }

    pub async fn finish(&self, report: Result<serde_json::Value, NodeError>) {
        let message = match report {
            Ok(report) => Ok(proto::Progress {
                stage: "done".into(),
                done: 1,
                total: 1,
                report_json: report.to_string(),
            }),
            Err(e) => Err(Status::from(e)),
        };
        let _ = self.tx.send(message).await;
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusReply>, Status> {
        let ctx = &self.ctx;
        let mut peers = Vec::new();
        for peer in &ctx.config.peers {
            peers.push(peer_status(ctx, peer).await);
        }
        let contracts = contract_summaries(ctx)?;
        let jobs = ctx
            .store
            .recent_jobs(match request.get_ref().jobs_limit {
                0 => 20,
                n => n as usize,
            })?
            .into_iter()
            .map(|j| proto::JobSummary {
                job_id: j.id,
                kind: j.computation,
                contract_id: j.contract_id,
                role: j.role,
                state: j.state.as_str().to_string(),
                detail: j.detail,
                started_unix: j.started_unix,
                observed_json: j
                    .observed
                    .as_ref()
                    .and_then(|o| serde_json::to_string(o).ok())
                    .unwrap_or_default(),
                session: j.session,
            })
            .collect();
        let datasets = ctx
            .store
            .datasets()?
            .into_iter()
            .map(|d| proto::DatasetSummary {
                name: d.name,
                version: d.version,
                rows: d.rows,
                digest: d.digest,
            })
            .collect();
        let audit_records = ctx.store.audit_records()?.len() as u64;
        Ok(Response::new(proto::StatusReply {
            node_id: ctx.node_id().to_string(),
            peers,
            contracts,
            jobs,
            datasets,
            audit_records,
            psi_cached_sets: ctx.psi_sets.lock().map(|c| c.len() as u64).unwrap_or(0),
        }))
    }

    type ImportStream = ResponseStream<proto::Progress>;

    async fn import(
        &self,
        request: Request<proto::ImportRequest>,
    ) -> Result<Response<Self::ImportStream>, Status> {
        let request = request.into_inner();
        let schema: DatasetSchema = toml::from_str(&request.schema_toml)
            .map_err(|e| Status::invalid_argument(format!("schema: {e}")))?;
        // An empty dataset means "the schema's": the name is then not repeated on the
        // command line. When both are given they must agree.
        if !request.dataset.is_empty() && schema.name() != request.dataset {
            return Err(Status::invalid_argument(format!(
                "schema names dataset {:?}, the request {:?}",
                schema.name(),
                request.dataset
            )));
        }
        let schema = schema_with_key_flag(schema, &request.key_kind)?;
        let (progress, stream) = ProgressSender::channel();
        let ctx = self.ctx.clone();
        let path = PathBuf::from(&request.csv_path);
        let allow_rejects = request.allow_rejects;
        tokio::spawn(async move {
            let task_progress = progress.clone();
            let result = tokio::task::spawn_blocking(move || {
                import_dataset(&ctx, &path, &schema, allow_rejects, &task_progress)
            })
            .await
            .unwrap_or_else(|e| Err(NodeError::Internal(format!("import task: {e}"))));
            progress.finish(result).await;
        });
        Ok(Response::new(stream))
    }

    async fn propose_contract(
        &self,
        request: Request<proto::ProposeRequest>,
    ) -> Result<Response<proto::ContractAck>, Status> {
        Ok(Response::new(contracts::propose(&self.ctx, &request.get_ref().contract_toml).await?))
    }

    async fn sign_contract(
        &self,
        request: Request<proto::ContractQuery>,
    ) -> Result<Response<proto::ContractAck>, Status> {
        Ok(Response::new(contracts::sign(&self.ctx, &request.get_ref().contract_id).await?))
    }

    async fn show_contract(
        &self,
        request: Request<proto::ContractQuery>,
    ) -> Result<Response<proto::ContractView>, Status> {
        let stored = contracts::sync_signatures(&self.ctx, &request.get_ref().contract_id).await?;
        let state = stored.state(self.ctx.now_unix());
        let document = serde_json::to_string_pretty(stored.signed.contract()).unwrap_or_default();
        Ok(Response::new(proto::ContractView {
            contract_id: stored.id(),
            state: match &state {
                crate::store::ContractState::Revoked { reason }
                | crate::store::ContractState::Inactive { reason } => {
                    format!("{}: {reason}", state.label())
                }
                _ => state.label().to_string(),
            },
            document_json: document,
            signed_by: stored.signed.signatures().iter().map(|(n, _)| n.to_string()).collect(),
            missing_signatures: state.missing(),
            canonical_hex: hex::encode(stored.signed.canonical_bytes()),
        }))
    }

    async fn list_contracts(
        &self,
        _request: Request<proto::ListContractsRequest>,
    ) -> Result<Response<proto::ContractList>, Status> {
        let contracts = contract_summaries(&self.ctx)?;
        Ok(Response::new(proto::ContractList { contracts }))
    }

    async fn revoke_contract(
        &self,
        request: Request<proto::RevokeRequest>,
    ) -> Result<Response<proto::ContractAck>, Status> {
        let request = request.into_inner();
        Ok(Response::new(contracts::revoke(&self.ctx, &request.contract_id, &request.reason).await?))
    }

    type RunStream = ResponseStream<proto::Progress>;

    async fn run(&self, request: Request<proto::RunRequest>) -> Result<Response<Self::RunStream>, Status> {
        let request = request.into_inner();
        let (progress, stream) = ProgressSender::channel();
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let result = crate::run::run_job(ctx, request, progress.clone()).await;
            progress.finish(result).await;
        });
        Ok(Response::new(stream))
    }

    async fn audit_show(
        &self,
        request: Request<proto::AuditShowRequest>,
    ) -> Result<Response<proto::AuditShowReply>, Status> {
        let records = self.ctx.store.audit_records()?;
        let last = match request.get_ref().last {
            0 => records.len(),
            n => (n as usize).min(records.len()),
        };
        let records_json = records[records.len() - last..]
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default())
            .collect();
        Ok(Response::new(proto::AuditShowReply { records_json }))
    }

    async fn audit_verify(
        &self,
        request: Request<proto::AuditVerifyRequest>,
    ) -> Result<Response<proto::AuditVerifyReply>, Status> {
        let mut reply = match self.ctx.store.audit_verify() {
            Ok(records) => proto::AuditVerifyReply {
                ok: true,
                records,
                detail: "chain intact".into(),
                witness_reports: Vec::new(),
            },
            Err(e) => proto::AuditVerifyReply {
                ok: false,
                records: 0,
                detail: e.to_string(),
                witness_reports: Vec::new(),
            },
        };
        if request.get_ref().witnesses {
            let check = crate::witness::check_with_witnesses(&self.ctx).await?;
            reply.witness_reports = check.reports;
            if let Some(problem) = check.problem {
                reply.ok = false;
                reply.detail = problem;
            } else if reply.ok {
                reply.detail = "chain intact and agrees with every witness's heads".into();
            }
        }
        Ok(Response::new(reply))
    }
}

/// Whether `peer` answers a health request over mutual TLS, proving the pinned key.
pub async fn peer_status(ctx: &NodeContext, peer: &crate::config::PeerConfig) -> proto::PeerStatus {
    let (reachable, detail) = match ctx.channel(&peer.id).await {
        Ok(channel) => match peer_client(channel).health(proto::HealthRequest {}).await {
            Ok(reply) => {
                (true, format!("certificate names {}, version {}", peer.id, reply.get_ref().version))
            }
            Err(status) => (false, status.message().to_string()),
        },
        Err(e) => (false, e.to_string()),
    };
    proto::PeerStatus { node_id: peer.id.to_string(), address: peer.address.clone(), reachable, detail }
}

/// Every stored contract with its state now.
fn contract_summaries(ctx: &NodeContext) -> Result<Vec<proto::ContractSummary>, NodeError> {
    let now = ctx.now_unix();
    Ok(ctx
        .store
        .contracts()?
        .iter()
        .map(|c| {
            let state = c.state(now);
            proto::ContractSummary {
                contract_id: c.id(),
                kind: c.signed.contract().kind().to_string(),
                state: state.label().to_string(),
                missing_signatures: state.missing(),
            }
        })
        .collect())
}

/// Reads, checks and (unless refused) writes one CSV as a new dataset version.
fn import_dataset(
    ctx: &NodeContext,
    path: &std::path::Path,
    schema: &DatasetSchema,
    allow_rejects: bool,
    progress: &ProgressSender,
) -> Result<serde_json::Value, NodeError> {
    let started = Instant::now();
    let spill_dir = ctx.config.data_dir.join(IMPORT_SPILL_DIR);
    let (parsed, mut report) =
        read_csv(path, schema, &spill_dir, |done| progress.progress("reading", done, 0))?;
    let read_s = started.elapsed().as_secs_f64();
    let refusal = |report: &ImportReport| {
        if report.rows_rejected > 0 && !allow_rejects {
            Some(format!("{} rows rejected; fix them or import with --allow-rejects", report.rows_rejected))
        } else {
            None
        }
    };
    // Rows refused while reading: nothing is written. Duplicates show only in the
    // merge, while the version is written; then the unfinished version is discarded.
    let mut refuse =
        if parsed.candidates() == 0 { Some("no row was accepted".to_string()) } else { refusal(&report) };
    let mut committed = None;
    if refuse.is_some() {
        // Nothing is written, but the report still lists the duplicates and counts.
        parsed.for_each_accepted(&mut report, |_, _| Ok(()))?;
        refuse = if report.rows_accepted == 0 {
            Some("no row was accepted".to_string())
        } else {
            refusal(&report)
        };
    } else {
        let mut writer = ctx.store.begin_dataset_version(schema, &report.source, ctx.now_unix())?;
        let total = parsed.candidates();
        parsed.for_each_accepted(&mut report, |key, values| {
            if writer.push_encoded(key, values)? {
                progress.progress("writing", writer.rows(), total);
            }
            Ok(())
        })?;
        refuse = if writer.rows() == 0 { Some("no row was accepted".to_string()) } else { refusal(&report) };
        if refuse.is_some() {
            writer.discard()?;
        } else {
            committed = Some(writer.commit()?);
        }
    }
    if let Some(reason) = refuse {
        report.not_committed_reason = Some(reason.clone());
        report.seconds = started.elapsed().as_secs_f64();
        ctx.audit(
            AuditEvent::ImportRefused { dataset: schema.name().to_string() },
            None,
            None,
            Vec::new(),
            Default::default(),
            Outcome::Refused { reason: format!("import {}: {reason}", schema.name()) },
            None,
        );
    } else if let Some(meta) = committed {
        report.version = Some(meta.version);
        report.digest = Some(meta.digest.clone());
        report.committed = true;
        report.seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            dataset = schema.name(),
            version = meta.version,
            rows = meta.rows,
            read_s,
            write_s = report.seconds - read_s,
            "dataset imported"
        );
        let mut sizes = std::collections::BTreeMap::new();
        sizes.insert(ctx.node_id().clone(), meta.rows);
        let event =
            AuditEvent::Import { dataset: schema.name().to_string(), version: meta.version, rows: meta.rows };
        ctx.audit(event, None, None, Vec::new(), sizes, Outcome::Ok, hex_digest(&meta.digest));
    }
    let report = serde_json::to_value(&report).map_err(|e| NodeError::Internal(e.to_string()))?;
    crate::console::record_import(ctx, &report);
    Ok(report)
}

fn hex_digest(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok().and_then(|v| v.try_into().ok())
}
