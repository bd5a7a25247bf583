//! The simulator demo at a small size: the whole alliance as real node processes, every
//! scenario checked against its plaintext answer, the faults injected. This is the
//! README's main job, run in CI.

#[path = "common/browser.rs"]
mod browser;

use xmcredit_simulator::alliance::NodeProgram;
use xmcredit_simulator::demo::{run, DemoOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_demo_matches_every_plaintext_answer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let report = dir.path().join("report.json");
    let options = DemoOptions {
        banks: 3,
        entities: 3000,
        applicants: 300,
        seed: 7,
        report: Some(report.clone()),
        dir: Some(dir.path().join("alliance")),
        faults: true,
        html: Some(dir.path().join("report.html")),
    };
    let program = NodeProgram::Binary(env!("CARGO_BIN_EXE_xmcredit-node-under-test").into());
    let passed = run(options, program).await?;
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(report)?)?;
    let scenarios = report["scenarios"].as_array().cloned().unwrap_or_default();
    assert!(scenarios.len() >= 6, "every PSI scenario ran: {scenarios:?}");
    for form in ["intersection", "cardinality", "labels", "both"] {
        assert!(scenarios.iter().any(|s| s["output"] == form), "a {form} scenario ran");
    }
    assert!(scenarios.iter().any(|s| s["computation"] == "secagg" && s["output"] == "sum"), "secagg ran");
    for use_case in
        ["easy-loan-matching", "multi-bank-exposure", "sole-proprietor-profile", "supplier-exposure"]
    {
        let row = scenarios
            .iter()
            .find(|s| s["computation"] == "lookup" && s["use"] == use_case)
            .unwrap_or_else(|| panic!("the lookup use {use_case} ran: {scenarios:?}"));
        assert!(row["provider_s"].is_number() && row["query_s"].is_number(), "{row}");
    }
    // The supply-chain uses (issue 14).
    for (use_case, computation) in
        [("receivable-confirmation", "psi"), ("duplicate-financing", "overthreshold")]
    {
        assert!(
            scenarios.iter().any(|s| s["use"] == use_case && s["computation"] == computation),
            "{use_case} ran as {computation}: {scenarios:?}"
        );
    }
    for scenario in &scenarios {
        assert_eq!(scenario["verified"], true, "{scenario}");
        // The measured observation report (issue 10): every node of every scenario
        // observed only what the contract grants it, counted by the nodes themselves.
        assert_eq!(scenario["privacy_ok"], true, "{scenario}");
        let observations = scenario["observations"].as_object().cloned().unwrap_or_default();
        if scenario["output"] != "abort" && scenario["output"] != "refused" {
            assert!(observations.len() >= 2, "observations from every party: {scenario}");
        }
        for (node, seen) in &observations {
            assert_eq!(seen["privacy_ok"], true, "{node}: {seen}");
            assert!(seen["observed"].is_object() && seen["granted"]["receive"].is_array(), "{node}: {seen}");
        }
        // Every computed result moved bytes; the deliberate abort reveals nothing.
        if scenario["output"] != "abort" {
            assert!(scenario["bytes_total"].as_u64().unwrap_or(0) > 0, "{scenario}");
        }
    }
    let faults = report["faults"].as_array().cloned().unwrap_or_default();
    for fault in &faults {
        assert_eq!(fault["passed"], true, "{fault}");
        assert!(
            fault["id"].as_str().is_some_and(|id| !id.is_empty()),
            "every fault has a stable id: {fault}"
        );
    }
    let ids: Vec<&str> = faults.iter().filter_map(|f| f["id"].as_str()).collect();
    for id in [
        "ca-minted-certificate",
        "revoked-open-connection",
        "audit-rewritten",
        "audit-truncated",
        "connection-flood",
        "stream-flood",
        "oversized-request",
        "secagg-differencing",
    ] {
        assert!(ids.contains(&id), "the demo injects {id}: {ids:?}");
    }
    assert_eq!(report["privacy_ok"], true);
    assert!(passed);
    check_html_report(&dir.path().join("report.html"), &scenarios, &faults)?;
    Ok(())
}

/// The `--html` page: every scenario and fault in it, and both charts drawn with a bar
/// per scenario, as a real browser lays them out.
fn check_html_report(
    path: &std::path::Path,
    scenarios: &[serde_json::Value],
    faults: &[serde_json::Value],
) -> anyhow::Result<()> {
    let page = std::fs::read_to_string(path)?;
    for fault in faults {
        assert!(page.contains(fault["id"].as_str().unwrap_or("?")), "fault {fault} in the page");
    }
    for external in ["<script", " src=", "<link", "url(", "@import"] {
        assert!(!page.contains(external), "the page loads nothing from elsewhere: {external}");
    }
    let Some(chromium) = browser::required()? else { return Ok(()) };
    let mut browser = browser::Browser::launch(&chromium)?;
    browser.open(&format!("file://{}", path.display()))?;
    let drawn = "(id) => [...document.querySelectorAll('#' + id + ' rect.bar')].filter(r => r.getBoundingClientRect().width > 0).length";
    let wall = browser.eval(&format!("({drawn})('wall-time')"))?;
    assert_eq!(wall.as_u64(), Some(scenarios.len() as u64), "a drawn wall-time bar per scenario");
    let floors = browser.eval("document.querySelectorAll('#wall-time rect.floor').length")?;
    let with_floor = scenarios.iter().filter(|s| s["floor_s"].is_number()).count() as u64;
    assert_eq!(floors.as_u64(), Some(with_floor), "a floor bar per PSI scenario");
    let bytes = browser.eval(&format!("({drawn})('bytes-per-element')"))?;
    assert!(bytes.as_u64().is_some_and(|n| n > 0), "bytes-per-element bars drawn: {bytes}");
    let rows = browser.eval("document.querySelectorAll('#scenarios tr').length")?;
    assert_eq!(rows.as_u64(), Some(scenarios.len() as u64 + 1));
    let shots = browser::screenshot_dir(path.parent().unwrap_or(std::path::Path::new(".")));
    browser.screenshot(&shots.join("simulator-report.png"))?;
    Ok(())
}
