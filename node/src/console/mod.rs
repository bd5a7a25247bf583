//! The operator's view (issue 15): a separate HTTP listener, on 127.0.0.1 by default,
//! serving the web console (token login, session cookie, CSRF token on every action),
//! Prometheus `/metrics`, and `/healthz` (liveness) and `/readyz` (store open,
//! certificates valid). The console renders HTML on the server (maud) and needs no
//! JavaScript and nothing from the internet.
//!
//! It adds no business logic: pages read the store and the Admin service's own
//! handlers; the Sign and Revoke actions call the same functions as `contract sign` and
//! `contract revoke` over the Unix socket.

pub mod auth;
pub mod metrics;
mod pages;
pub mod probe;
mod routes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::context::NodeContext;
use crate::store::{JobRecord, JobSummary};
use crate::NodeError;

/// The console's token file in the data directory (mode 0600, written by `init`, or by
/// `serve` when the console is on and the file is missing).
pub const TOKEN_FILE: &str = "console.token";

/// `[console]` in the node's configuration. Default: off; when on, 127.0.0.1:7480 and
/// sessions of 8 hours.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Where the HTTP listener binds. Anything but a loopback address exposes the
    /// console's login page (and `/metrics`) to that network: put a TLS proxy in front.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// How long a login lasts.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7480))
}

fn default_session_hours() -> u64 {
    8
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self { enabled: false, listen: default_listen(), session_hours: default_session_hours() }
    }
}

/// Where the token file of the node with data directory `data_dir` is.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Binds the console listener if `[console] enabled`, and serves it until `shutdown`.
/// A port already taken stops `serve` with the address in the error, before any peer is
/// answered.
pub async fn start(
    ctx: Arc<NodeContext>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<tokio::task::JoinHandle<()>>, NodeError> {
    let config = ctx.config.console.clone();
    if !config.enabled {
        return Ok(None);
    }
    let token = auth::LoginToken::ensure(&ctx.config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| NodeError::Refused(format!("cannot bind the console on {}: {e}", config.listen)))?;
    let address = listener.local_addr().map_err(|e| NodeError::Internal(e.to_string()))?;
    tracing::info!(address = %address, token_file = %token_path(&ctx.config.data_dir).display(), "console listening");
    let probes = probe::Probes::start(ctx.clone());
    let state = routes::ConsoleState::new(ctx, token, probes, &config, address);
    let app = routes::router(state);
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "the console listener failed");
        }
    })))
}

/// When each running job of this process started, for durations finer than the job
/// record's whole seconds.
static JOB_STARTS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<u64, std::time::Instant>>> =
    std::sync::LazyLock::new(Default::default);

/// Notes a job's start (called by `run::start_job`).
pub fn record_job_start(job_id: u64) {
    if let Ok(mut starts) = JOB_STARTS.lock() {
        starts.insert(job_id, std::time::Instant::now());
    }
}

/// Records what the console shows of a finished job and counts it in the metrics.
pub fn record_job_end(ctx: &NodeContext, job: &JobRecord, outcome: &crate::run::RunOutcome) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let started = JOB_STARTS.lock().ok().and_then(|mut starts| starts.remove(&job.id));
    let seconds = match started {
        Some(at) => at.elapsed().as_secs_f64(),
        // Started before a restart: the record's whole seconds are all there is.
        None => now_ms.saturating_sub(job.started_unix.saturating_mul(1000)) as f64 / 1000.0,
    };
    metrics::METRICS.job_finished(&job.computation, job.state.as_str(), &job.role, seconds);
    let summary = JobSummary {
        job_id: job.id,
        set_sizes: outcome.set_sizes.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        transcript_digest: outcome.transcript_digest.map(hex::encode),
        duration_ms: (seconds * 1000.0).round() as u64,
        bytes_sent: outcome.traffic.map(|t| t.sent),
        bytes_received: outcome.traffic.map(|t| t.received),
        output_files: outcome.output_files.clone(),
    };
    if let Err(e) = ctx.store.save_job_summary(&summary) {
        tracing::warn!(job = job.id, error = %e, "could not keep the job's summary for the console");
    }
}

/// Keeps an import report for the console and counts its rows in the metrics.
pub fn record_import(ctx: &NodeContext, report: &serde_json::Value) {
    let dataset = report["dataset"].as_str().unwrap_or("-");
    let accepted = report["rows_accepted"].as_u64().unwrap_or(0);
    let rejected = report["rows_rejected"].as_u64().unwrap_or(0);
    metrics::METRICS.imported(dataset, accepted, rejected);
    if let Err(e) = ctx.store.save_import_report(ctx.now_unix(), report.clone()) {
        tracing::warn!(dataset, error = %e, "could not keep the import report for the console");
    }
}
