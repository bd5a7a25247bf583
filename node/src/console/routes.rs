//! The console's routes. `/healthz`, `/readyz` and `/metrics` answer without login; every
//! other page needs a session, and every POST but the login the session's CSRF token.
//! Requests whose Host header is not this listener's loopback address are refused, so a
//! web page elsewhere cannot reach the console through DNS rebinding.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::Markup;
use serde::Deserialize;
use tonic::Request;

use super::auth::{cookie, LoginToken, Session, Sessions, SESSION_COOKIE};
use super::pages::{self, Page};
use super::probe::Probes;
use super::ConsoleConfig;
use crate::context::NodeContext;
use crate::proto::{self, admin_server::Admin};
use crate::service::admin::AdminService;
use crate::store::AuditLog;

/// Audit records shown on the audit page.
const AUDIT_SHOWN: usize = 200;
/// Jobs shown on the jobs page.
const JOBS_SHOWN: usize = 200;
/// Certificates this close to expiry raise an alert.
const CERTIFICATE_ALERT_DAYS: i64 = 30;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct ConsoleState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    ctx: Arc<NodeContext>,
    admin: AdminService,
    token: LoginToken,
    sessions: Sessions,
    probes: Arc<Probes>,
    session_lifetime: Duration,
    /// Host header values accepted; `None` when bound to a non-loopback address (the
    /// operator chose to expose it, presumably behind a proxy).
    hosts: Option<Vec<String>>,
}

impl ConsoleState {
    pub fn new(
        ctx: Arc<NodeContext>,
        token: LoginToken,
        probes: Arc<Probes>,
        config: &ConsoleConfig,
        bound: SocketAddr,
    ) -> Self {
        let port = bound.port();
        let hosts = bound.ip().is_loopback().then(|| {
            vec![
                bound.to_string(),
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
                format!("[::1]:{port}"),
            ]
        });
        Self(Arc::new(Inner {
            admin: AdminService::new(ctx.clone()),
            ctx,
            token,
            sessions: Sessions::default(),
            probes,
            session_lifetime: Duration::from_secs(config.session_hours.saturating_mul(3600)),
            hosts,
        }))
    }
}

pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/", get(overview))
        .route("/contracts", get(contracts))
        .route("/contracts/sign", post(sign))
        .route("/contracts/revoke", post(revoke))
        .route("/jobs", get(jobs))
        .route("/datasets", get(datasets))
        .route("/audit", get(audit))
        .with_state(state)
}

fn html(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup).into_response();
    // Pages hold contract and dataset details: no caching by the browser.
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

// ---- Without login -------------------------------------------------------------------

async fn healthz() -> &'static str {
    "ok\n"
}

/// (which, subject, not-after unix seconds) of the node's and the CA's certificate.
fn read_certificates(ctx: &NodeContext) -> Vec<Result<(&'static str, String, i64), String>> {
    let files = crate::server::tls_files(&ctx.config);
    [("node", files.cert), ("ca", files.ca_cert)]
        .into_iter()
        .map(|(which, path)| {
            let pem =
                std::fs::read(&path).map_err(|e| format!("{which} certificate {}: {e}", path.display()))?;
            let der = rustls_pemfile::certs(&mut pem.as_slice())
                .next()
                .and_then(Result::ok)
                .ok_or_else(|| format!("{which} certificate {}: no PEM certificate in it", path.display()))?;
            let (_, cert) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| format!("{which} certificate {}: {e}", path.display()))?;
            Ok((which, cert.subject().to_string(), cert.validity().not_after.timestamp()))
        })
        .collect()
}

fn days_left(ctx: &NodeContext, not_after: i64) -> i64 {
    (not_after - ctx.now_unix() as i64).div_euclid(86_400)
}

async fn readyz(State(state): State<ConsoleState>) -> Response {
    let ctx = &state.0.ctx;
    let mut lines = Vec::new();
    let mut ready = true;
    match ctx.store.audit_last() {
        Ok(_) => lines.push("store: open".to_string()),
        Err(e) => {
            ready = false;
            lines.push(format!("store: {e}"));
        }
    }
    for cert in read_certificates(ctx) {
        match cert {
            Ok((which, _, not_after)) => {
                let days = days_left(ctx, not_after);
                ready &= days >= 0;
                lines.push(format!(
                    "{which} certificate: {} ({days} days left)",
                    if days >= 0 { "valid" } else { "expired" }
                ));
            }
            Err(e) => {
                ready = false;
                lines.push(e);
            }
        }
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, format!("{}\n{}\n", if ready { "ready" } else { "not ready" }, lines.join("\n"))).into_response()
}

async fn metrics(State(state): State<ConsoleState>) -> Response {
    let ctx = &state.0.ctx;
    let last = ctx.store.audit_last();
    let snapshot = super::metrics::Snapshot {
        store_open: last.is_ok(),
        audit_records: last.ok().flatten().map(|r| r.seq + 1).unwrap_or(0),
        peers: state.0.probes.latest().into_iter().map(|(id, p)| (id, p.status.reachable)).collect(),
        certificates: read_certificates(ctx)
            .into_iter()
            .flatten()
            .map(|(which, _, not_after)| (which.to_string(), days_left(ctx, not_after)))
            .collect(),
    };
    let body = super::metrics::METRICS.encode(&snapshot);
    let mut response = body.into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

// ---- Login ---------------------------------------------------------------------------

/// A request from a logged-in operator on an accepted Host.
struct Operator {
    session_id: String,
    session: Session,
}

/// Why a request was not let in.
enum Rejection {
    WrongHost,
    NoSession(String),
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::WrongHost => (
                StatusCode::MISDIRECTED_REQUEST,
                "this console answers only on its own loopback address (Host header refused)\n",
            )
                .into_response(),
            Rejection::NoSession(node) => html(
                StatusCode::UNAUTHORIZED,
                pages::login(&node, Some("Log in with the console token first.")),
            ),
        }
    }
}

fn host_ok(state: &ConsoleState, headers: &HeaderMap) -> bool {
    let Some(hosts) = &state.0.hosts else { return true };
    headers.get(HOST).and_then(|h| h.to_str().ok()).is_some_and(|host| hosts.iter().any(|h| h == host))
}

#[axum::async_trait]
impl FromRequestParts<ConsoleState> for Operator {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, Rejection> {
        if !host_ok(state, &parts.headers) {
            return Err(Rejection::WrongHost);
        }
        let node = state.0.ctx.node_id().to_string();
        let session_id = parts
            .headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .find_map(|h| cookie(h, SESSION_COOKIE).map(str::to_string))
            .ok_or_else(|| Rejection::NoSession(node.clone()))?;
        let session = state.0.sessions.get(&session_id).ok_or(Rejection::NoSession(node))?;
        Ok(Operator { session_id, session })
    }
}

async fn login_page(State(state): State<ConsoleState>) -> Response {
    html(StatusCode::OK, pages::login(state.0.ctx.node_id().as_str(), None))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !host_ok(&state, &headers) {
        return Rejection::WrongHost.into_response();
    }
    let node = state.0.ctx.node_id().to_string();
    if !state.0.token.matches(&form.token) {
        tracing::warn!("console login with a wrong token");
        return html(
            StatusCode::UNAUTHORIZED,
            pages::login(&node, Some("That is not this node's console token.")),
        );
    }
    let id = state.0.sessions.create(state.0.session_lifetime);
    tracing::info!("console login");
    let mut response = see_other("/");
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        state.0.session_lifetime.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn csrf_refused() -> Response {
    tracing::warn!("console POST without the session's CSRF token refused");
    (StatusCode::FORBIDDEN, "refused: the form's CSRF token is missing or is not this session's\n")
        .into_response()
}

async fn logout(
    State(state): State<ConsoleState>,
    operator: Operator,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !operator.session.csrf_matches(&form.csrf) {
        return csrf_refused();
    }
    state.0.sessions.remove(&operator.session_id);
    let mut response = see_other("/login");
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("xmcredit_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

// ---- Pages ---------------------------------------------------------------------------

fn page(state: &ConsoleState, operator: &Operator, which: Page, title: &str, body: Markup) -> Response {
    let node = state.0.ctx.node_id().to_string();
    html(StatusCode::OK, pages::layout(&node, which, &operator.session.csrf, title, body))
}

fn failed(state: &ConsoleState, operator: &Operator, which: Page, error: impl std::fmt::Display) -> Response {
    let node = state.0.ctx.node_id().to_string();
    let body = pages::error(&error.to_string());
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        pages::layout(&node, which, &operator.session.csrf, "Error", body),
    )
}

async fn overview(State(state): State<ConsoleState>, operator: Operator) -> Response {
    let ctx = &state.0.ctx;
    let me = ctx.node_id().to_string();
    let mut alerts = Vec::new();
    let mut certificates = Vec::new();
    for cert in read_certificates(ctx) {
        match cert {
            Ok((which, subject, not_after)) => {
                let days = days_left(ctx, not_after);
                if days < 0 {
                    alerts.push(format!("The {which} certificate has expired."));
                } else if days < CERTIFICATE_ALERT_DAYS {
                    alerts.push(format!("The {which} certificate expires in {days} days."));
                }
                certificates.push(pages::CertificateView {
                    which,
                    subject,
                    not_after_unix: not_after,
                    days_left: days,
                });
            }
            Err(e) => alerts.push(e),
        }
    }
    let probes = state.0.probes.latest();
    let peers = ctx
        .config
        .peers
        .iter()
        .map(|p| {
            let probe = probes.get(p.id.as_str());
            if probe.is_some_and(|p| !p.status.reachable) {
                alerts.push(format!("Peer {} did not answer the last probe.", p.id));
            }
            pages::PeerView {
                id: p.id.to_string(),
                address: p.address.clone(),
                reachable: probe.map(|p| p.status.reachable),
                detail: probe.map(|p| p.status.detail.clone()).unwrap_or_default(),
                probed: probe.map(|p| pages::time(p.at_unix)).unwrap_or_default(),
            }
        })
        .collect();
    let now = ctx.now_unix();
    let contracts = match ctx.store.contracts() {
        Ok(c) => c,
        Err(e) => return failed(&state, &operator, Page::Overview, e),
    };
    let awaiting_me: Vec<String> =
        contracts.iter().filter(|c| c.state(now).missing().contains(&me)).map(|c| c.id()).collect();
    if !awaiting_me.is_empty() {
        alerts.push(format!("Contracts awaiting this node's signature: {}.", awaiting_me.join(", ")));
    }
    let recent = ctx.store.recent_jobs(20).unwrap_or_default();
    let bad: Vec<String> = recent
        .iter()
        .filter(|j| matches!(j.state.as_str(), "failed" | "interrupted"))
        .map(|j| format!("{} ({})", j.id, j.state.as_str()))
        .collect();
    if !bad.is_empty() {
        alerts.push(format!("Recent jobs that did not finish well: {}.", bad.join(", ")));
    }
    if let Err(e) = ctx.store.audit_verify() {
        alerts.push(format!("The audit chain does not verify: {e}"));
    }
    let audit_records = ctx.store.audit_last().ok().flatten().map(|r| r.seq + 1).unwrap_or(0);
    let active = contracts.iter().filter(|c| c.state(now) == crate::store::ContractState::Active).count();
    let o = pages::Overview {
        identity_key: ctx.secrets.identity.public_key().to_string(),
        peer_listen: ctx.config.listen.to_string(),
        certificates,
        peers,
        alerts,
        counts: vec![
            ("Contracts", format!("{} ({active} active)", contracts.len())),
            ("Datasets", ctx.store.datasets().map(|d| d.len()).unwrap_or(0).to_string()),
            ("Jobs recorded", ctx.store.job_count().to_string()),
            ("Audit records", audit_records.to_string()),
        ],
    };
    page(&state, &operator, Page::Overview, "Overview", pages::overview(&o))
}

#[derive(Deserialize, Default)]
struct Flash {
    #[serde(default)]
    done: Option<String>,
}

async fn contracts(
    State(state): State<ConsoleState>,
    operator: Operator,
    Query(flash): Query<Flash>,
) -> Response {
    let ctx = &state.0.ctx;
    let me = ctx.node_id().to_string();
    let now = ctx.now_unix();
    let stored = match ctx.store.contracts() {
        Ok(c) => c,
        Err(e) => return failed(&state, &operator, Page::Contracts, e),
    };
    let cards = stored
        .iter()
        .map(|c| {
            let document = serde_json::to_string_pretty(c.signed.contract()).unwrap_or_default();
            pages::contract(c, &c.state(now), &me, &operator.session.csrf, &document)
        })
        .collect();
    page(&state, &operator, Page::Contracts, "Contracts", pages::contracts(cards, flash.done.as_deref()))
}

#[derive(Deserialize)]
struct ContractForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    contract_id: String,
    #[serde(default)]
    reason: String,
}

fn flash_redirect(message: &str) -> Response {
    let encoded: String = message
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    see_other(&format!("/contracts?done={encoded}"))
}

fn ack_text(verb: &str, ack: &proto::ContractAck) -> String {
    let mut text = format!("{verb} {}: now {}", ack.contract_id, ack.state);
    if !ack.missing_signatures.is_empty() {
        text.push_str(&format!(", still awaiting {}", ack.missing_signatures.join(", ")));
    }
    if !ack.unreached.is_empty() {
        text.push_str(&format!("; not reached: {}", ack.unreached.join("; ")));
    }
    text
}

async fn sign(
    State(state): State<ConsoleState>,
    operator: Operator,
    Form(form): Form<ContractForm>,
) -> Response {
    if !operator.session.csrf_matches(&form.csrf) {
        return csrf_refused();
    }
    tracing::info!(contract = %crate::context::bounded(&form.contract_id), "console: sign");
    let request = Request::new(proto::ContractQuery { contract_id: form.contract_id.clone() });
    match state.0.admin.sign_contract(request).await {
        Ok(ack) => flash_redirect(&ack_text("Signed", ack.get_ref())),
        Err(status) => failed(
            &state,
            &operator,
            Page::Contracts,
            format!("signing {}: {}", form.contract_id, status.message()),
        ),
    }
}

async fn revoke(
    State(state): State<ConsoleState>,
    operator: Operator,
    Form(form): Form<ContractForm>,
) -> Response {
    if !operator.session.csrf_matches(&form.csrf) {
        return csrf_refused();
    }
    if form.reason.trim().is_empty() {
        return failed(&state, &operator, Page::Contracts, "a revocation needs a reason");
    }
    tracing::info!(contract = %crate::context::bounded(&form.contract_id), "console: revoke");
    let request = Request::new(proto::RevokeRequest {
        contract_id: form.contract_id.clone(),
        reason: form.reason.clone(),
    });
    match state.0.admin.revoke_contract(request).await {
        Ok(ack) => flash_redirect(&ack_text("Revoked", ack.get_ref())),
        Err(status) => failed(
            &state,
            &operator,
            Page::Contracts,
            format!("revoking {}: {}", form.contract_id, status.message()),
        ),
    }
}

/// (file name, bytes, modified unix seconds) of each file in `<data_dir>/outputs`.
fn output_files(ctx: &NodeContext) -> Vec<(String, u64, u64)> {
    let Ok(entries) = std::fs::read_dir(ctx.config.data_dir.join("outputs")) else { return Vec::new() };
    let mut files: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Some((e.file_name().to_string_lossy().into_owned(), meta.len(), modified))
        })
        .collect();
    files.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    files
}

async fn jobs(State(state): State<ConsoleState>, operator: Operator) -> Response {
    let ctx = &state.0.ctx;
    let recent = match ctx.store.recent_jobs(JOBS_SHOWN) {
        Ok(j) => j,
        Err(e) => return failed(&state, &operator, Page::Jobs, e),
    };
    let with_summaries: Vec<_> = recent
        .into_iter()
        .map(|j| {
            let summary = ctx.store.job_summary(j.id).ok().flatten();
            (j, summary)
        })
        .collect();
    let body = pages::jobs(&with_summaries, &ctx.job_progress(), &output_files(ctx), ctx.now_unix());
    page(&state, &operator, Page::Jobs, "Jobs", body)
}

async fn datasets(State(state): State<ConsoleState>, operator: Operator) -> Response {
    let ctx = &state.0.ctx;
    let current = match ctx.store.datasets() {
        Ok(d) => d,
        Err(e) => return failed(&state, &operator, Page::Datasets, e),
    };
    let versions: Vec<_> = current
        .into_iter()
        .map(|d| {
            let list = ctx.store.dataset_versions(&d.name).unwrap_or_default();
            (d.name, list)
        })
        .collect();
    let reports = ctx.store.import_reports().unwrap_or_default();
    page(&state, &operator, Page::Datasets, "Datasets", pages::datasets(&versions, &reports))
}

#[derive(Deserialize, Default)]
struct VerifyQuery {
    #[serde(default)]
    verify: Option<String>,
}

async fn audit(
    State(state): State<ConsoleState>,
    operator: Operator,
    Query(query): Query<VerifyQuery>,
) -> Response {
    let ctx = &state.0.ctx;
    let records = match ctx.store.audit_records() {
        Ok(r) => r,
        Err(e) => return failed(&state, &operator, Page::Audit, e),
    };
    let verify = match query.verify.as_deref() {
        Some(which @ ("local" | "witnesses")) => {
            let request = Request::new(proto::AuditVerifyRequest { witnesses: which == "witnesses" });
            Some(match state.0.admin.audit_verify(request).await {
                Ok(reply) => (reply.get_ref().ok, reply.get_ref().detail.clone()),
                Err(status) => (false, status.message().to_string()),
            })
        }
        _ => None,
    };
    let shown = &records[records.len().saturating_sub(AUDIT_SHOWN)..];
    page(&state, &operator, Page::Audit, "Audit log", pages::audit(shown, records.len(), verify))
}
