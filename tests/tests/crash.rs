//! A node killed at any step of a PSI session, on either side, recovers (issue 11):
//! for each message kind each role sends, the node exits (as a crash would) just
//! before sending it; after a restart, no job is left `running` on either node, the
//! store opens with its datasets' digests unchanged, both audit chains verify, and a
//! new run gives the plaintext answer.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::*;
use xmcredit_node::run::fault::{psi_point, EXIT_AT_VAR, PSI_CLIENT_KINDS, PSI_SERVER_KINDS};
use xmcredit_simulator::alliance::Alliance;

async fn no_job_running(alliance: &Alliance, node: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = alliance.node(node)?.status().await?;
        let running: Vec<_> = status.jobs.iter().filter(|j| j.state == "running").collect();
        if running.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{node} still has running jobs: {running:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn digests(alliance: &Alliance, node: &str) -> Result<Vec<(String, u64, String)>> {
    let status = alliance.node(node)?.status().await?;
    Ok(status.datasets.into_iter().map(|d| (d.name, d.version, d.digest)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_before_any_psi_message_recovers() -> Result<()> {
    let (dir, mut alliance) = alliance(&["credit-center", "bank-a"], false).await?;
    let gov = codes(31, 120);
    let applicants: Vec<String> = codes(31, 160)[60..].to_vec();
    import_ok(
        alliance.node("credit-center")?,
        GOV_DATASET,
        &write_gov(dir.path(), GOV_DATASET, &gov_rows(&gov))?,
    )
    .await?;
    import_ok(
        alliance.node("bank-a")?,
        "loan_applicants",
        &write_applicants(dir.path(), "apps", &applicants)?,
    )
    .await?;
    let id = "credit-center.crash-psi";
    let toml =
        psi_contract(id, alliance.node("credit-center")?, alliance.node("bank-a")?, "both", &[], 10, 10);
    alliance.agree("credit-center", &toml, id, &["bank-a"]).await?;
    let gov_set: BTreeSet<&String> = gov.iter().collect();
    let mut expected: Vec<String> = applicants.iter().filter(|c| gov_set.contains(c)).cloned().collect();
    expected.sort();
    let before = (digests(&alliance, "credit-center").await?, digests(&alliance, "bank-a").await?);

    let points = PSI_CLIENT_KINDS
        .iter()
        .map(|k| ("bank-a", psi_point("client", k)))
        .chain(PSI_SERVER_KINDS.iter().map(|k| ("credit-center", psi_point("server", k))));
    for (victim, point) in points {
        let node = alliance.node_mut(victim)?;
        node.stop()?;
        node.set_env(EXIT_AT_VAR, &point);
        node.start().await?;
        let run = alliance.node("bank-a")?.run("psi", id).await;
        assert!(run.is_err(), "{point}: the run cannot finish with {victim} dying");
        let deadline = Instant::now() + Duration::from_secs(10);
        while alliance.node_mut(victim)?.is_running() {
            if Instant::now() > deadline {
                bail!("{point}: {victim} did not die at its fault point");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let node = alliance.node_mut(victim)?;
        node.stop()?;
        node.set_env(EXIT_AT_VAR, "");
        node.start().await?;

        for name in ["credit-center", "bank-a"] {
            no_job_running(&alliance, name).await.map_err(|e| e.context(point.clone()))?;
            audit_verifies(alliance.node(name)?)
                .await
                .map_err(|e| e.context(format!("{point}: {name}'s audit")))?;
        }
        let after = (digests(&alliance, "credit-center").await?, digests(&alliance, "bank-a").await?);
        assert_eq!(after, before, "{point}: datasets unchanged");
        let report = alliance.node("bank-a")?.run("psi", id).await?;
        assert_eq!(
            report_codes(&report, "intersection"),
            expected,
            "{point}: a new run gives the plaintext answer"
        );
    }
    Ok(())
}
