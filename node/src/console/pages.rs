//! The console's HTML, rendered on the server. maud escapes every interpolated value, so
//! ids, reasons and file names a peer or a CSV controls cannot inject markup. No script
//! and nothing loaded from elsewhere: the style sheet is inline.

use std::collections::HashMap;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::context::JobProgress;
use crate::store::{
    ContractState, DatasetVersion, JobRecord, JobSummary, StoredContract, StoredImportReport,
};
use xmcredit_contracts::audit::{AuditRecord, Outcome};

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}
header a{color:#fff;text-decoration:none}header a.here{text-decoration:underline}
header .node{font-weight:bold;margin-right:1em}header form{margin-left:auto}
main{padding:1em 1.5em}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;background:#fff;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eef1f4}code,pre{font-family:ui-monospace,monospace;font-size:.85em}
pre{background:#fff;border:1px solid #d0d7de;padding:.6em;overflow:auto;max-height:24em}
.ok{color:#1a7f37}.bad{color:#cf222e}.warn{color:#9a6700}
.alerts li{margin:.2em 0}.card{background:#fff;border:1px solid #d0d7de;padding:.8em 1em;margin:1em 0}
form.inline{display:inline}button{cursor:pointer}
";

/// Which page is shown (for the navigation bar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Overview,
    Contracts,
    Jobs,
    Datasets,
    Audit,
}

/// A whole page around `body`.
pub fn layout(node: &str, page: Page, csrf: &str, title: &str, body: Markup) -> Markup {
    let link = |p: Page, href: &str, label: &str| {
        html! { a href=(href) class=[(p == page).then_some("here")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · " (node) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    span.node { "xmcredit · " (node) }
                    (link(Page::Overview, "/", "Overview"))
                    (link(Page::Contracts, "/contracts", "Contracts"))
                    (link(Page::Jobs, "/jobs", "Jobs"))
                    (link(Page::Datasets, "/datasets", "Datasets"))
                    (link(Page::Audit, "/audit", "Audit"))
                    form method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Log out" }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The login page (also the answer to any page asked for without a session).
pub fn login(node: &str, message: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Log in · " (node) } style { (PreEscaped(STYLE)) } }
            body {
                header { span.node { "xmcredit · " (node) } }
                main {
                    h1 { "Log in" }
                    @if let Some(message) = message { p.bad { (message) } }
                    p { "Paste the token from " code { "<data_dir>/console.token" } " (readable by the node's account only)." }
                    form method="post" action="/login" {
                        input type="password" name="token" size="70" autocomplete="off" autofocus;
                        " "
                        button type="submit" id="login" { "Log in" }
                    }
                }
            }
        }
    }
}

/// A UTC date and time for unix seconds.
pub fn time(unix: u64) -> String {
    let days = (unix / 86_400) as i32;
    let (y, m, d) = xmcredit_contracts::Date::from_days_since_epoch(days).ymd();
    let s = unix % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}

/// What the overview shows.
#[derive(Debug)]
pub struct Overview {
    pub identity_key: String,
    pub peer_listen: String,
    pub certificates: Vec<CertificateView>,
    pub peers: Vec<PeerView>,
    pub alerts: Vec<String>,
    pub counts: Vec<(&'static str, String)>,
}

#[derive(Debug)]
pub struct CertificateView {
    pub which: &'static str,
    pub subject: String,
    pub not_after_unix: i64,
    pub days_left: i64,
}

#[derive(Debug)]
pub struct PeerView {
    pub id: String,
    pub address: String,
    pub reachable: Option<bool>,
    pub detail: String,
    pub probed: String,
}

pub fn overview(o: &Overview) -> Markup {
    html! {
        h2 { "Alerts" }
        @if o.alerts.is_empty() { p.ok #alerts { "None." } }
        @else { ul.alerts #alerts { @for a in &o.alerts { li.warn { (a) } } } }
        h2 { "Identity" }
        table {
            tr { th { "Identity key (for contracts)" } td { code { (o.identity_key) } } }
            tr { th { "Peer listener (mutual TLS)" } td { code { (o.peer_listen) } } }
            @for (what, value) in &o.counts { tr { th { (what) } td { (value) } } }
        }
        h2 { "Certificates" }
        table {
            tr { th { "Certificate" } th { "Subject" } th { "Expires" } th { "Days left" } }
            @for c in &o.certificates {
                tr {
                    td { (c.which) } td { code { (c.subject) } }
                    td { (time(c.not_after_unix.max(0) as u64)) }
                    td class=(if c.days_left < 30 { "bad" } else { "ok" }) { (c.days_left) }
                }
            }
        }
        h2 { "Peers" }
        table #peers {
            tr { th { "Peer" } th { "Address" } th { "Reachable" } th { "Detail" } th { "Probed" } }
            @for p in &o.peers {
                tr {
                    td { (p.id) } td { code { (p.address) } }
                    @match p.reachable {
                        Some(true) => td.ok { "yes" },
                        Some(false) => td.bad { "no" },
                        None => td.warn { "not probed yet" },
                    }
                    td { (p.detail) } td { (p.probed) }
                }
            }
        }
    }
}

fn state_class(state: &ContractState) -> &'static str {
    match state {
        ContractState::Active => "ok",
        ContractState::AwaitingSignatures { .. } => "warn",
        _ => "bad",
    }
}

/// One contract as the contracts page shows it; `awaiting_me` adds the Sign button.
pub fn contract(c: &StoredContract, state: &ContractState, me: &str, csrf: &str, document: &str) -> Markup {
    let doc = c.signed.contract();
    let signed: Vec<String> = c.signed.signatures().iter().map(|(n, _)| n.to_string()).collect();
    let awaiting_me = state.missing().iter().any(|m| m == me);
    let party = doc.parties.iter().any(|p| p.node.as_str() == me);
    let revocable = party && !matches!(state, ContractState::Revoked { .. });
    html! {
        div.card id={ "contract-" (doc.id.as_str()) } {
            h2 { code { (doc.id.as_str()) } " v" (doc.version) " · " (doc.kind().to_string()) " · "
                span class=(state_class(state)) { (state.label()) } }
            @match state {
                ContractState::Revoked { reason } | ContractState::Inactive { reason } => p.bad { (reason) },
                ContractState::AwaitingSignatures { missing } => p.warn { "Awaiting signatures of: " (missing.join(", ")) },
                ContractState::Active => {},
            }
            p { (doc.purpose) }
            p { "Valid " (time(doc.not_before)) " to " (time(doc.not_after)) "; epochs of " (doc.epoch_seconds) " s. Received from "
                (c.received_from) " at " (time(c.received_unix)) "." }
            table {
                tr { th { "Party" } th { "Name" } th { "Roles" } th { "Identity key" } th { "Signed" } }
                @for p in &doc.parties {
                    tr {
                        td { (p.node.as_str()) } td { (p.name.clone().unwrap_or_default()) }
                        td { (p.roles.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")) }
                        td { code { (short(&p.public_key.to_string())) "…" } }
                        @if signed.iter().any(|s| s == p.node.as_str()) { td.ok { "yes" } } @else { td.warn { "no" } }
                    }
                }
            }
            p { "Datasets: "
                @for (i, d) in doc.datasets.iter().enumerate() {
                    @if i > 0 { "; " } (d.party.as_str()) ": " code { (d.name) } " keyed by " code { (d.key) }
                    @if !d.columns.is_empty() { ", columns " (d.columns.join(", ")) }
                }
                ". Receivers: "
                @for (i, r) in doc.receivers.iter().enumerate() {
                    @if i > 0 { ", " } (r.node.as_str()) " (" (serde_json::to_value(r.form).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) ")"
                }
                "."
            }
            p { "Limits: " code { (serde_json::to_string(&doc.limits).unwrap_or_default()) } }
            p { "Digest: " code { (hex::encode(c.signed.digest())) } }
            details { summary { "Canonical document" } pre { (document) } }
            @if awaiting_me {
                form.inline method="post" action="/contracts/sign" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="contract_id" value=(doc.id.as_str());
                    button type="submit" id={ "sign-" (doc.id.as_str()) } { "Sign as " (me) }
                }
                " "
            }
            @if revocable {
                form.inline method="post" action="/contracts/revoke" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="contract_id" value=(doc.id.as_str());
                    input type="text" name="reason" placeholder="reason (required)" required;
                    button type="submit" { "Revoke" }
                }
            }
        }
    }
}

/// The contracts page body.
pub fn contracts(cards: Vec<Markup>, flash: Option<&str>) -> Markup {
    html! {
        @if let Some(flash) = flash { p.card #flash { (flash) } }
        @if cards.is_empty() { p { "No contract yet. Propose one with " code { "xmcredit-node contract propose" } "." } }
        @for card in cards { (card) }
    }
}

/// A job with its summary, for the jobs page. `progress` is what each running job of
/// this process reported last.
pub fn jobs(
    jobs: &[(JobRecord, Option<JobSummary>)],
    progress: &HashMap<u64, JobProgress>,
    outputs: &[(String, u64, u64)],
    now: u64,
) -> Markup {
    let running: Vec<_> = jobs.iter().filter(|(j, _)| j.finished_unix.is_none()).collect();
    let finished: Vec<_> = jobs.iter().filter(|(j, _)| j.finished_unix.is_some()).collect();
    html! {
        // Reloads itself only while something runs, so progress moves without
        // JavaScript and an idle page stays still.
        @if !running.is_empty() { meta http-equiv="refresh" content="5"; }
        h2 { "Running" }
        @if running.is_empty() { p { "None." } }
        @else {
            table #running {
                tr { th { "Job" } th { "Kind" } th { "Role" } th { "Contract" } th { "Peers" } th { "Running for" } th { "Progress" } th { "Detail" } }
                @for (j, _) in running {
                    tr { td { (j.id) } td { (j.computation) } td { (j.role) } td { code { (j.contract_id) } }
                         td { (j.peers.join(", ")) } td { (now.saturating_sub(j.started_unix)) " s" }
                         td.progress { (progress_text(progress.get(&j.id))) }
                         td { (j.detail) } }
                }
            }
        }
        h2 { "Finished" }
        table #finished {
            tr { th { "Job" } th { "Kind" } th { "Role" } th { "Contract" } th { "Outcome" } th { "Started" } th { "Duration" }
                 th { "Set sizes" } th { "Bytes sent / received" } th { "Output files" } th { "Transcript digest" } th { "Detail" } }
            @for (j, s) in finished {
                tr {
                    td { (j.id) } td { (j.computation) } td { (j.role) } td { code { (j.contract_id) } }
                    td class=(if j.state.as_str() == "succeeded" { "ok" } else { "bad" }) { (j.state.as_str()) }
                    td { (time(j.started_unix)) }
                    td { @if let Some(s) = s { (format!("{:.3}", s.duration_ms as f64 / 1000.0)) " s" } @else { (j.finished_unix.unwrap_or(0).saturating_sub(j.started_unix)) " s" } }
                    td { @if let Some(s) = s { @for (node, size) in &s.set_sizes { (node) ": " (size) br; } } }
                    td.bytes { @match s.as_ref().map(|s| (s.bytes_sent, s.bytes_received)) {
                        Some((Some(sent), Some(received))) => {
                            span title=(format!("{sent} / {received} bytes")) { (human_bytes(sent)) " / " (human_bytes(received)) }
                        }
                        _ => { "-" }
                    } }
                    td.outputs { @if let Some(s) = s { @for name in &s.output_files { code { (name) } br; } } }
                    td { @if let Some(d) = s.as_ref().and_then(|s| s.transcript_digest.as_deref()) { code title=(d) { (short(d)) "…" } } }
                    td { (j.detail) }
                }
            }
        }
        p { "Bytes are this node's, as the job's run report counts them; totals per node are in " a href="/metrics" { "/metrics" } "." }
        h2 { "Output files" }
        p { "In " code { "<data_dir>/outputs" } " (mode 0600: they hold codes and per-entity values)." }
        @if outputs.is_empty() { p { "None yet." } }
        @else {
            table { tr { th { "File" } th { "Bytes" } th { "Written" } }
                @for (name, bytes, at) in outputs { tr { td { code { (name) } } td { (bytes) } td { (time(*at)) } } } }
        }
    }
}

/// A running job's last report as "phase done/total" ("phase" alone when the phase
/// has no count; "-" before the first report or for a job of another process).
pub fn progress_text(progress: Option<&JobProgress>) -> String {
    match progress {
        None => "-".into(),
        Some(p) if p.total == 0 => p.phase.clone(),
        Some(p) => format!("{} {}/{}", p.phase, p.done, p.total),
    }
}

/// Bytes in binary units with one decimal ("812 B", "1.5 KiB", "3.0 MiB").
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The datasets page body.
pub fn datasets(versions: &[(String, Vec<DatasetVersion>)], reports: &[StoredImportReport]) -> Markup {
    html! {
        @if versions.is_empty() { p { "No dataset yet. Import one with " code { "xmcredit-node import" } "." } }
        @for (name, list) in versions {
            h2 { (name) }
            @if let Some(current) = list.iter().rev().find(|v| matches!(v.state, crate::store::VersionState::Committed)) {
                p { "Key column " code { (current.schema.key()) } "; columns: "
                    @for (i, (column, ty)) in current.schema.columns().iter().enumerate() {
                        @if i > 0 { ", " } code { (column) } " (" (ty.to_string()) ")"
                    }
                }
            }
            table {
                tr { th { "Version" } th { "State" } th { "Rows" } th { "Digest (SHA-256 of rows)" } th { "Imported" } th { "Source" } }
                @for v in list.iter().rev() {
                    tr { td { (v.version) } td { (format!("{:?}", v.state).to_lowercase()) } td { (v.rows) }
                         td { code { (v.digest) } } td { (time(v.imported_unix)) } td { code { (v.source) } } }
                }
            }
        }
        h2 { "Import reports" }
        @if reports.is_empty() { p { "None kept yet." } }
        @for r in reports {
            @let report = &r.report;
            div.card {
                p {
                    b { (report["dataset"].as_str().unwrap_or("?")) } " at " (time(r.time_unix)) ": "
                    (report["rows_read"]) " rows read, " (report["rows_accepted"]) " accepted, "
                    span class=(if report["rows_rejected"].as_u64().unwrap_or(0) > 0 { "bad" } else { "ok" }) { (report["rows_rejected"]) " rejected" }
                    "; "
                    @if report["committed"].as_bool().unwrap_or(false) { span.ok { "committed as version " (report["version"]) } }
                    @else { span.bad { "not committed: " (report["not_committed_reason"].as_str().unwrap_or("")) } }
                }
                // Columns the schema does not name are dropped on import; say so, or a
                // steward believes they were kept.
                @if let Some(ignored) = report["ignored_columns"].as_array().filter(|c| !c.is_empty()) {
                    p.ignored-columns {
                        "Ignored columns (not in the schema, not imported): "
                        @for (i, column) in ignored.iter().enumerate() {
                            @if i > 0 { ", " }
                            code { (column.as_str().unwrap_or("?")) }
                        }
                    }
                }
                @if let Some(warnings) = report["warnings"].as_array().filter(|w| !w.is_empty()) {
                    details {
                        summary { "Warnings (" (report["warnings_total"].as_u64().unwrap_or(warnings.len() as u64)) ")" }
                        table {
                            tr { th { "Row" } th { "Line" } th { "Key" } th { "Warning" } }
                            @for w in warnings {
                                tr { td { (w["row"]) } td { (w["line"]) } td { code { (w["key"].as_str().unwrap_or("")) } } td { (w["warning"].as_str().unwrap_or("")) } }
                            }
                        }
                        @if let Some(more) = report["warnings_not_kept"].as_u64() { p { (more) " more not kept here." } }
                    }
                }
                @if let Some(rejected) = report["rejected"].as_array().filter(|r| !r.is_empty()) {
                    details {
                        summary { "Rejected rows" }
                        table {
                            tr { th { "Row" } th { "Line" } th { "Key" } th { "Reason" } }
                            @for row in rejected {
                                tr { td { (row["row"]) } td { (row["line"]) } td { code { (row["key"].as_str().unwrap_or("")) } } td { (row["reason"].as_str().unwrap_or("")) } }
                            }
                        }
                        @if let Some(more) = report["rejected_rows_not_kept"].as_u64() { p { (more) " more not kept here." } }
                    }
                }
            }
        }
    }
}

/// What a record says happened, in words: its event. Records written before events
/// were recorded have none; for them it is inferred from the other fields.
pub fn what_happened(r: &AuditRecord) -> String {
    let contract = r.contract.as_ref().map(|c| format!(" under {}", c.as_str())).unwrap_or_default();
    if let Some(event) = &r.event {
        return format!("{event}{contract}");
    }
    match (&r.computation, &r.outcome) {
        (Some(kind), Outcome::Ok) => format!("{kind} run{contract} completed"),
        (Some(kind), Outcome::Refused { .. }) => format!("{kind} run{contract} refused"),
        (Some(kind), Outcome::Failed { .. }) => format!("{kind} run{contract} failed"),
        (Some(kind), Outcome::Interrupted { .. }) => format!("{kind} run{contract} interrupted"),
        (None, Outcome::Ok) if r.contract.is_none() && !r.set_sizes.is_empty() => {
            "dataset imported".to_string()
        }
        (None, Outcome::Ok) => format!("contract event{contract}"),
        (None, Outcome::Refused { .. }) => format!("refusal{contract}"),
        (None, Outcome::Failed { .. }) => format!("failure{contract}"),
        (None, Outcome::Interrupted { .. }) => format!("interrupted{contract}"),
    }
}

fn reason(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Ok => "",
        Outcome::Refused { reason } | Outcome::Failed { reason } | Outcome::Interrupted { reason } => reason,
    }
}

/// The audit page body.
pub fn audit(records: &[AuditRecord], total: usize, verify: Option<(bool, String)>) -> Markup {
    html! {
        div.card {
            @match &verify {
                Some((true, detail)) => p.ok #verify { "Verified: " (detail) " (" (total) " records)." },
                Some((false, detail)) => p.bad #verify { "Does not verify: " (detail) },
                None => p { "The chain links each record to the previous one's hash; verifying re-checks every link." },
            }
            form.inline method="get" action="/audit" { input type="hidden" name="verify" value="local"; button type="submit" id="verify-chain" { "Verify the chain" } }
            " "
            form.inline method="get" action="/audit" { input type="hidden" name="verify" value="witnesses"; button type="submit" { "Verify against the witnesses" } }
        }
        p { "The last " (records.len()) " of " (total) " records, newest first." }
        table #audit {
            tr { th { "Seq" } th { "Time" } th { "Event" } th { "What happened" } th { "Outcome" } th { "Parties" } th { "Set sizes" } th { "Transcript digest" } }
            @for r in records.iter().rev() {
                tr {
                    td { (r.seq) } td { (time(r.time)) }
                    td.event { (r.event.as_ref().map(|e| e.label()).unwrap_or_else(|| "-".into())) }
                    td { (what_happened(r)) }
                    td class=(if matches!(r.outcome, Outcome::Ok) { "ok" } else { "bad" }) {
                        (match r.outcome { Outcome::Ok => "ok", Outcome::Refused { .. } => "refused", Outcome::Failed { .. } => "failed", Outcome::Interrupted { .. } => "interrupted" })
                        @let why = reason(&r.outcome);
                        @if !why.is_empty() { ": " (why) }
                    }
                    td { (r.parties.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")) }
                    td { @for (node, size) in &r.set_sizes { (node.as_str()) ": " (size) br; } }
                    td { @if let Some(d) = &r.transcript_digest { @let d = hex::encode(d); code title=(d) { (short(&d)) "…" } } }
                }
            }
        }
    }
}

/// An error page inside the layout.
pub fn error(message: &str) -> Markup {
    html! { p.bad #error { (message) } }
}

#[cfg(test)]
mod job_page_tests {
    use super::*;
    use crate::store::JobState;

    fn job(id: u64, finished: Option<u64>) -> JobRecord {
        JobRecord {
            id,
            computation: "psi".into(),
            contract_id: "c1".into(),
            role: "client".into(),
            session: "s".into(),
            peers: vec!["bank-b".into()],
            state: if finished.is_some() { JobState::Succeeded } else { JobState::Running },
            detail: String::new(),
            started_unix: 100,
            finished_unix: finished,
            observed: None,
        }
    }

    #[test]
    fn units_and_progress_text() {
        assert_eq!(human_bytes(812), "812 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(progress_text(None), "-");
        let p = JobProgress { phase: "evaluated".into(), done: 3, total: 10 };
        assert_eq!(progress_text(Some(&p)), "evaluated 3/10");
        let p = JobProgress { phase: "started".into(), done: 0, total: 0 };
        assert_eq!(progress_text(Some(&p)), "started");
    }

    #[test]
    fn running_jobs_show_progress_and_refresh_finished_show_bytes_and_outputs() {
        let summary = JobSummary {
            job_id: 1,
            set_sizes: Default::default(),
            transcript_digest: None,
            duration_ms: 5,
            bytes_sent: Some(2048),
            bytes_received: Some(100),
            output_files: vec!["psi-c1-s.csv".into()],
        };
        let mut progress = HashMap::new();
        progress.insert(2, JobProgress { phase: "evaluated".into(), done: 4, total: 9 });
        let page = jobs(&[(job(1, Some(101)), Some(summary)), (job(2, None), None)], &progress, &[], 103)
            .into_string();
        assert!(page.contains("2.0 KiB / 100 B"), "{page}");
        assert!(page.contains("psi-c1-s.csv"), "{page}");
        assert!(page.contains("evaluated 4/9"), "{page}");
        assert!(page.contains(r#"http-equiv="refresh""#), "{page}");
        // Nothing running: no refresh.
        let idle = jobs(&[(job(1, Some(101)), None)], &HashMap::new(), &[], 103).into_string();
        assert!(!idle.contains("refresh"), "{idle}");
    }
}
