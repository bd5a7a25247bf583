//! A real browser against a real node's console (issue 15): headless Chromium logs in
//! with the token, opens every page, signs a contract that awaits this node, and
//! verifies the audit chain, as an operator would, clicking the page's own buttons.
//! The demo's HTML report is checked the same way in `demo.rs`.

#[path = "common/browser.rs"]
mod browser;
mod common;

use anyhow::Result;
use browser::Browser;
use common::*;
use serde_json::json;
use xmcredit_node::proto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_opens_every_page_and_signs_a_contract() -> Result<()> {
    let Some(chromium) = browser::required()? else { return Ok(()) };
    let (dir, alliance) = alliance(&["credit-center", "bank-a"], true).await?;
    let center = alliance.node("credit-center")?;
    let bank = alliance.node("bank-a")?;

    // Something on every page: data, an agreed contract and a PSI run, and a second
    // contract left awaiting bank-a's signature.
    let server_codes = codes(61, 200);
    let client_codes: Vec<String> = server_codes.iter().step_by(4).cloned().chain(codes(62, 30)).collect();
    import_ok(center, GOV_DATASET, &write_gov(dir.path(), GOV_DATASET, &gov_rows(&server_codes))?).await?;
    import_ok(bank, "loan_applicants", &write_applicants(dir.path(), "applicants", &client_codes)?).await?;
    let agreed = "credit-center.browser-agreed";
    alliance
        .agree(
            "credit-center",
            &psi_contract(agreed, center, bank, "intersection", &[], 1, 1),
            agreed,
            &["bank-a"],
        )
        .await?;
    let report = bank.run("psi", agreed).await?;
    assert_eq!(report_codes(&report, "intersection").len(), server_codes.iter().step_by(4).count());
    let pending = "credit-center.browser-pending";
    center.propose(&psi_contract(pending, center, bank, "cardinality", &[], 1, 1)).await?;

    let base = format!("http://{}", bank.console);
    let token = bank.console_token()?;
    let shots = browser::screenshot_dir(dir.path());
    let mut page = Browser::launch(&chromium)?;

    // Without a session every page is the login form.
    page.open(&format!("{base}/jobs"))?;
    page.wait_for("document.querySelector('input[name=token]') !== null")?;
    page.eval(&format!(
        "document.querySelector('input[name=token]').value = {}; document.querySelector('#login').click(); true",
        json!(token)
    ))?;
    page.wait_for("location.pathname === '/' && document.querySelector('#alerts') !== null")?;
    // The pending contract may take a moment to arrive; the overview then names it.
    for _ in 0..50 {
        let held = bank.admin().await?.list_contracts(proto::ListContractsRequest {}).await?.into_inner();
        if held.contracts.iter().any(|c| c.contract_id == pending) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    page.open(&format!("{base}/"))?;
    let alerts = page.eval("document.querySelector('#alerts').innerText")?;
    assert!(alerts.as_str().is_some_and(|a| a.contains(pending)), "{alerts}");
    let peers = page.eval("document.querySelector('#peers').innerText")?;
    assert!(peers.as_str().is_some_and(|p| p.contains("credit-center")), "{peers}");
    page.screenshot(&shots.join("console-overview.png"))?;

    for (path, heading, file) in [
        ("/jobs", "Jobs", "console-jobs.png"),
        ("/datasets", "Datasets", "console-datasets.png"),
        ("/audit", "Audit log", "console-audit.png"),
        ("/contracts", "Contracts", "console-contracts.png"),
    ] {
        page.open(&format!("{base}{path}"))?;
        let h1 = page.eval("document.querySelector('h1').innerText")?;
        assert_eq!(h1, json!(heading), "{path}");
        page.screenshot(&shots.join(file))?;
    }
    // The jobs page lists the PSI run with its transcript digest.
    page.open(&format!("{base}/jobs"))?;
    let finished = page.eval("document.querySelector('#finished').innerText")?;
    assert!(finished.as_str().is_some_and(|t| t.contains(agreed) && t.contains("succeeded")), "{finished}");

    // Sign the pending contract with the page's own button.
    page.open(&format!("{base}/contracts"))?;
    page.eval(&format!("document.getElementById({}).click(); true", json!(format!("sign-{pending}"))))?;
    page.wait_for("document.querySelector('#flash') !== null")?;
    let flash = page.eval("document.querySelector('#flash').innerText")?;
    assert!(flash.as_str().is_some_and(|f| f.contains("Signed") && f.contains("now active")), "{flash}");
    let view =
        bank.admin().await?.show_contract(proto::ContractQuery { contract_id: pending.into() }).await?;
    assert_eq!(view.get_ref().state, "active");
    page.screenshot(&shots.join("console-signed.png"))?;

    // Verify the audit chain from the page.
    page.open(&format!("{base}/audit"))?;
    page.eval("document.querySelector('#verify-chain').click(); true")?;
    page.wait_for("document.querySelector('p#verify') !== null")?;
    let verdict = page.eval("document.querySelector('p#verify').innerText")?;
    assert!(verdict.as_str().is_some_and(|v| v.starts_with("Verified")), "{verdict}");
    Ok(())
}
