//! The operator's console over real HTTP (issue 15): real node processes with the
//! console on, reached the way a browser or an attacker's script would.
//! `/metrics` counts a PSI run's jobs, rows and bytes; `/healthz` and `/readyz` answer
//! without login; every page refuses a request without a session, with a forged one,
//! and after a wrong token; Sign through the console signs the contract; a POST without
//! the session's CSRF token (or with another session's) changes nothing.

mod common;
#[path = "common/http.rs"]
mod http;

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use common::*;
use http::{csrf_of, get, login, metric, post, request};
use xmcredit_node::proto;
use xmcredit_simulator::alliance::NodeHandle;

const PAGES: [&str; 5] = ["/", "/contracts", "/jobs", "/datasets", "/audit"];

async fn contract_state(node: &NodeHandle, id: &str) -> Result<proto::ContractView> {
    Ok(node
        .admin()
        .await?
        .show_contract(proto::ContractQuery { contract_id: id.to_string() })
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_psi_run_and_health_answers_without_login() -> Result<()> {
    let (dir, alliance) = alliance(&["credit-center", "bank-a"], false).await?;
    let center = alliance.node("credit-center")?;
    let bank = alliance.node("bank-a")?;

    let health = get(&center.console, "/healthz", None).await?;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = get(&center.console, "/readyz", None).await?;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_contains(
        &ready.body,
        &["ready", "store: open", "node certificate: valid", "ca certificate: valid"],
    );

    let server_codes = codes(51, 300);
    let client_codes: Vec<String> = server_codes.iter().step_by(3).cloned().chain(codes(52, 40)).collect();
    import_list_and_applicants(dir.path(), center, bank, &server_codes, &client_codes).await?;
    let toml = psi_contract("credit-center.console-metrics", center, bank, "intersection", &[], 1, 1);
    alliance.agree("credit-center", &toml, "credit-center.console-metrics", &["bank-a"]).await?;
    let report = bank.run("psi", "credit-center.console-metrics").await?;
    let listed: BTreeSet<&String> = server_codes.iter().collect();
    let expected: BTreeSet<String> = client_codes.iter().filter(|c| listed.contains(c)).cloned().collect();
    assert_eq!(report_codes(&report, "intersection").into_iter().collect::<BTreeSet<_>>(), expected);

    let bank_metrics = get(&bank.console, "/metrics", None).await?;
    assert_eq!(bank_metrics.status, 200);
    let text = &bank_metrics.body;
    assert_eq!(
        metric(text, "xmcredit_jobs_total{kind=\"psi\",outcome=\"succeeded\",role=\"client\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(text, "xmcredit_job_duration_seconds_count{kind=\"psi\"}"), Some(1.0), "{text}");
    assert_eq!(
        metric(text, "xmcredit_import_rows_total{dataset=\"loan_applicants\",result=\"accepted\"}"),
        Some(client_codes.len() as f64),
        "{text}"
    );
    assert_eq!(
        metric(text, "xmcredit_import_rows_total{dataset=\"loan_applicants\",result=\"rejected\"}"),
        Some(0.0)
    );
    // The run moved every blinded element both ways: the counters must cover them.
    let sent = metric(text, "xmcredit_peer_bytes_sent_total").context("bytes sent")?;
    let received = metric(text, "xmcredit_peer_bytes_received_total").context("bytes received")?;
    assert!(sent >= 32.0 * client_codes.len() as f64, "sent {sent}");
    assert!(received >= 32.0 * client_codes.len() as f64, "received {received}");
    // bank-a started after the credit center, so its first probe found it answering.
    assert_eq!(metric(text, "xmcredit_peer_reachable{peer=\"credit-center\"}"), Some(1.0), "{text}");
    let records = audit_verifies(bank).await?;
    assert_eq!(metric(text, "xmcredit_audit_records"), Some(records as f64), "{text}");

    // The server side counts its own job once it has finished.
    let mut server_text = String::new();
    for _ in 0..50 {
        server_text = get(&center.console, "/metrics", None).await?.body;
        if metric(&server_text, "xmcredit_jobs_total{kind=\"psi\",outcome=\"succeeded\",role=\"server\"}")
            == Some(1.0)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&server_text, "xmcredit_jobs_total{kind=\"psi\",outcome=\"succeeded\",role=\"server\"}"),
        Some(1.0),
        "{server_text}"
    );
    assert_eq!(
        metric(&server_text, "xmcredit_jobs_total{kind=\"psi\",outcome=\"succeeded\",role=\"client\"}"),
        None
    );
    assert_eq!(metric(&server_text, "xmcredit_store_open"), Some(1.0));

    // Refusals are counted by the kind of their reason: an id over the length cap, and
    // a contract the credit center does not hold.
    let mut wire = xmcredit_node::service::peer_client(channel(bank, center).await?);
    let long = wire.fetch_contract(proto::ContractQuery { contract_id: "x".repeat(500) }).await;
    assert_eq!(long.map(|_| ()).map_err(|s| s.code()), Err(tonic::Code::ResourceExhausted));
    let unknown =
        wire.fetch_contract(proto::ContractQuery { contract_id: "credit-center.none".into() }).await;
    assert!(unknown.is_err());
    let refusals = get(&center.console, "/metrics", None).await?.body;
    assert_eq!(metric(&refusals, "xmcredit_refusals_total{reason=\"Refused\"}"), Some(1.0), "{refusals}");
    assert_eq!(metric(&refusals, "xmcredit_refusals_total{reason=\"NotFound\"}"), Some(1.0), "{refusals}");
    assert!(
        metric(&server_text, "xmcredit_certificate_days_left{certificate=\"node\"}").is_some_and(|d| d > 0.0)
    );
    Ok(())
}

/// The finished-jobs row of job `id` on a jobs page (the `<tr>` whose first cell is it).
fn job_row(page: &str, id: u64) -> Option<&str> {
    let finished = &page[page.find("id=\"finished\"")?..];
    let start = finished.find(&format!("<tr><td>{id}</td>"))?;
    let row = &finished[start..];
    Some(&row[..row.find("</tr>")?])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_page_shows_each_jobs_bytes_and_output_files() -> Result<()> {
    let (dir, alliance) = alliance(&["credit-center", "bank-a"], false).await?;
    let center = alliance.node("credit-center")?;
    let bank = alliance.node("bank-a")?;
    let server_codes = codes(61, 200);
    let client_codes: Vec<String> = server_codes.iter().step_by(4).cloned().chain(codes(62, 30)).collect();
    import_list_and_applicants(dir.path(), center, bank, &server_codes, &client_codes).await?;
    // The both form: the server writes the intersection to its outputs/.
    let toml = psi_contract("credit-center.console-jobs", center, bank, "both", &[], 1, 1);
    alliance.agree("credit-center", &toml, "credit-center.console-jobs", &["bank-a"]).await?;
    let report = bank.run("psi", "credit-center.console-jobs").await?;
    let sent = report["bytes_sent"].as_u64().context("bytes_sent")?;
    let received = report["bytes_received"].as_u64().context("bytes_received")?;
    assert!(sent > 0 && received > 0, "{report}");

    // The client's row: exactly the report's bytes (in the title, unrounded).
    let cookie = login(&bank.console, &bank.console_token()?).await?;
    let page = get(&bank.console, "/jobs", Some(&cookie)).await?;
    assert_eq!(page.status, 200);
    let jobs = bank.admin().await?.status(proto::StatusRequest::default()).await?.into_inner().jobs;
    let client_job = jobs.iter().find(|j| j.kind == "psi" && j.role == "client").context("client job")?;
    let row = job_row(&page.body, client_job.job_id).context("client row")?;
    assert!(row.contains(&format!("{sent} / {received} bytes")), "{row}");

    // The server's row: its bytes, and the file it wrote, once it has finished.
    let cookie = login(&center.console, &center.console_token()?).await?;
    let mut row = String::new();
    for _ in 0..50 {
        let page = get(&center.console, "/jobs", Some(&cookie)).await?;
        if let Some(r) = page.body.find("id=\"finished\"").and_then(|_| {
            let at = page.body.find("psi-credit-center.console-jobs-")?;
            let start = page.body[..at].rfind("<tr>")?;
            let end = at + page.body[at..].find("</tr>")?;
            Some(page.body[start..end].to_string())
        }) {
            row = r;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(row.contains("server"), "{row}");
    // The server sent what the client received, and the other way round.
    assert!(row.contains(&format!("{received} / {sent} bytes")), "{row}");
    assert!(row.contains(".csv"), "{row}");
    let name_start = row.find("psi-credit-center.console-jobs-").context("file name")?;
    let name_end = name_start + row[name_start..].find(".csv").context("csv")? + 4;
    let written = center.dir.join("outputs").join(&row[name_start..name_end]);
    assert!(written.exists(), "{}", written.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_page_refuses_requests_without_the_token() -> Result<()> {
    let (_dir, alliance) = alliance(&["credit-center", "bank-a"], true).await?;
    let bank = alliance.node("bank-a")?;
    let address = &bank.console;
    let token = bank.console_token()?;

    for page in PAGES {
        // No cookie at all.
        let reply = get(address, page, None).await?;
        assert_eq!(reply.status, 401, "{page} without a session: {}", reply.body);
        assert!(!reply.body.contains(&bank.public_key), "{page} leaked the identity key without a session");
        // A made-up session id.
        let forged = format!("xmcredit_session={}", "a".repeat(64));
        let reply = get(address, page, Some(&forged)).await?;
        assert_eq!(reply.status, 401, "{page} with a forged session");
    }
    // A wrong token, and the right token with one character changed, get no session.
    // (The changed character must differ from the token's own last one.)
    let last = if token.ends_with('0') { '1' } else { '0' };
    for wrong in ["not-the-token".to_string(), format!("{}{last}", &token[..token.len() - 1])] {
        let reply = post(address, "/login", None, &[("token", &wrong)]).await?;
        assert_eq!(reply.status, 401);
        assert!(reply.header("set-cookie").is_none(), "a wrong token got a cookie");
    }
    let reply = post(address, "/login", None, &[("token", &token)]).await?;
    assert_eq!(reply.status, 303);
    let set_cookie = reply.header("set-cookie").context("no cookie")?;
    assert_contains(set_cookie, &["HttpOnly", "SameSite=Strict"]);
    let cookie = http::session_cookie(&reply).context("cookie")?;
    for page in PAGES {
        let reply = get(address, page, Some(&cookie)).await?;
        assert_eq!(reply.status, 200, "{page}: {}", reply.body);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
    let overview = get(address, "/", Some(&cookie)).await?;
    assert_contains(&overview.body, &[&bank.public_key, "credit-center", "Certificates"]);

    // A page fetched through another host name (DNS rebinding) is refused even with
    // the session.
    let rebound =
        request(address, "GET", "/", &[("Host", "attacker.example:80"), ("Cookie", &cookie)], None).await?;
    assert_eq!(rebound.status, 421);

    // Logging out ends the session.
    let csrf = csrf_of(&overview.body).context("no csrf")?;
    let out = post(address, "/logout", Some(&cookie), &[("csrf", &csrf)]).await?;
    assert_eq!(out.status, 303);
    assert_eq!(get(address, "/", Some(&cookie)).await?.status, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_through_the_console_signs_and_forged_posts_are_refused() -> Result<()> {
    let (_dir, alliance) = alliance(&["credit-center", "bank-a"], true).await?;
    let center = alliance.node("credit-center")?;
    let bank = alliance.node("bank-a")?;
    let id = "credit-center.console-sign";
    center.propose(&psi_contract(id, center, bank, "intersection", &[], 1, 1)).await?;
    // The proposal reaches bank-a, which waits for its operator.
    let mut view = contract_state(bank, id).await;
    for _ in 0..50 {
        if view.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        view = contract_state(bank, id).await;
    }
    assert_eq!(view?.missing_signatures, vec!["bank-a".to_string()]);

    let address = &bank.console;
    let cookie = login(address, &bank.console_token()?).await?;
    let page = get(address, "/contracts", Some(&cookie)).await?;
    assert!(page.body.contains(&format!("id=\"sign-{id}\"")), "no Sign button: {}", page.body);
    let csrf = csrf_of(&page.body).context("no csrf")?;
    let other = login(address, &bank.console_token()?).await?;
    let other_csrf = csrf_of(&get(address, "/contracts", Some(&other)).await?.body).context("csrf")?;
    assert_ne!(csrf, other_csrf);

    // A cross-site form has the cookie (if SameSite failed) but not the token.
    let zeros = "0".repeat(64);
    let attacks: [(&str, Vec<(&str, &str)>); 4] = [
        ("no csrf field", vec![("contract_id", id)]),
        ("empty csrf", vec![("csrf", ""), ("contract_id", id)]),
        ("wrong csrf", vec![("csrf", &zeros), ("contract_id", id)]),
        ("another session's csrf", vec![("csrf", &other_csrf), ("contract_id", id)]),
    ];
    for (attack, form) in &attacks {
        let reply = post(address, "/contracts/sign", Some(&cookie), form).await?;
        assert_eq!(reply.status, 403, "{attack}: {}", reply.body);
        assert_eq!(
            contract_state(bank, id).await?.missing_signatures,
            vec!["bank-a".to_string()],
            "{attack} signed"
        );
    }
    // And the right token without a session is no better.
    let reply = post(address, "/contracts/sign", None, &[("csrf", &csrf), ("contract_id", id)]).await?;
    assert_eq!(reply.status, 401);
    let reply =
        post(address, "/contracts/revoke", Some(&cookie), &[("contract_id", id), ("reason", "x")]).await?;
    assert_eq!(reply.status, 403);
    assert!(contract_state(bank, id).await?.state.starts_with("awaiting"));

    let reply =
        post(address, "/contracts/sign", Some(&cookie), &[("csrf", &csrf), ("contract_id", id)]).await?;
    assert_eq!(reply.status, 303, "{}", reply.body);
    let location = reply.header("location").context("no redirect")?;
    let done = get(address, location, Some(&cookie)).await?;
    assert_contains(&done.body, &["Signed", id, "now active"]);
    let view = contract_state(bank, id).await?;
    assert_eq!(view.state, "active");
    assert!(view.signed_by.contains(&"bank-a".to_string()));
    // The signature reached the proposer too.
    assert_eq!(contract_state(center, id).await?.state, "active");
    // Audited as `contract sign` audits it, and the audit page shows the event, not a
    // guess from the fields (a proposal is not "psi run ... completed").
    let records = audit_records(bank).await?;
    let signs: Vec<_> = records.iter().filter(|r| r["event"]["kind"] == "sign").collect();
    assert_eq!(signs.len(), 1, "{records:#?}");
    assert_eq!(signs[0]["event"], serde_json::json!({"kind": "sign", "automatic": false}));
    assert_eq!(signs[0]["contract"], id);
    let page = get(address, "/audit", Some(&cookie)).await?;
    assert_contains(
        &page.body,
        &[
            &format!("signed the contract (operator) under {id}"),
            &format!("contract proposed by credit-center under {id}"),
        ],
    );
    assert!(!page.body.contains("psi run"), "{}", page.body);
    Ok(())
}
