//! Faults the simulator injects, each with what must happen and what did.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use xmcredit_crypto::NodeId;
use xmcredit_node::config::NodeConfig;
use xmcredit_node::proto;
use xmcredit_node::run::fault;

use crate::alliance::{Alliance, NodeProgram};

/// One injected fault. `id` is stable (scripts key on it); `name` is for people.
#[derive(Debug, Clone, Serialize)]
pub struct FaultResult {
    pub id: String,
    pub name: String,
    pub expected: String,
    pub observed: String,
    pub passed: bool,
}

/// A node whose certificate comes from another CA calls the credit center.
pub async fn foreign_certificate(alliance: &Alliance, program: &NodeProgram) -> Result<FaultResult> {
    let dir = alliance.base.join("rogue");
    std::fs::create_dir_all(&dir)?;
    let d = dir.display().to_string();
    // A complete, valid-looking node named like a real bank, with its own CA.
    program.run(
        &["init", "--data-dir", &d, "--node-id", "bank-a", "--listen", "127.0.0.1:9"],
        &dir.join("init.log"),
    )?;
    program.run(&["ca", "init", "--data-dir", &d, "--name", "Rogue CA"], &dir.join("ca.log"))?;
    program.run(
        &[
            "ca",
            "issue",
            "--data-dir",
            &d,
            "--csr",
            &format!("{d}/tls.csr"),
            "--out",
            &format!("{d}/tls.crt"),
        ],
        &dir.join("issue.log"),
    )?;
    let config = NodeConfig::load(&dir.join("node.toml"))?;
    let auth = xmcredit_node::server::client_auth(&config)?;
    let center = alliance.node("credit-center")?;
    let outcome = match xmcredit_node::transport::connect(
        &center.address,
        &center.id,
        auth.clone(),
        Duration::from_secs(5),
    )
    .await
    {
        Ok(channel) => xmcredit_node::service::peer_client(channel)
            .health(proto::HealthRequest {})
            .await
            .map(|r| format!("answered: {}", r.into_inner().node_id))
            .map_err(|s| s.message().to_string()),
        Err(e) => Err(e.to_string()),
    };
    // Refused for the right reason: the credit center's certificate does not chain to
    // the rogue's trust anchor (and the rogue's own would not chain to the alliance's).
    let (observed, passed) = match outcome {
        Ok(answer) => (answer, false),
        Err(reason) => {
            let right = reason.contains("UnknownIssuer") || reason.contains("UnknownCA");
            (format!("refused: {reason}"), right)
        }
    };
    Ok(FaultResult {
        id: "foreign-ca-certificate".into(),
        name: "peer with a certificate from another CA".into(),
        expected: "the TLS handshake fails; the credit center logs the refusal".into(),
        observed,
        passed,
    })
}

/// A client expects one node at an address and finds another there.
pub async fn wrong_name(alliance: &Alliance) -> Result<FaultResult> {
    let bank = alliance.node("bank-a")?;
    let center = alliance.node("credit-center")?;
    let config = NodeConfig::load(&bank.config)?;
    let auth = xmcredit_node::server::client_auth(&config)?;
    let claimed = NodeId::new("bank-b")?;
    let result =
        xmcredit_node::transport::connect(&center.address, &claimed, auth.clone(), Duration::from_secs(5))
            .await;
    let passed = matches!(&result, Err(e) if e.to_string().contains("not valid for name \"bank-b\""));
    Ok(FaultResult {
        id: "wrong-node-name".into(),
        name: "a node presenting another node's name".into(),
        expected: "bank-a, expecting bank-b at the credit center's address, refuses the certificate".into(),
        observed: match result {
            Ok(_) => "connected".into(),
            Err(e) => format!("refused: {e}"),
        },
        passed,
    })
}

/// A legitimate peer sends bytes that are not a protocol message, and a truncated one.
pub async fn malformed_messages(alliance: &Alliance) -> Result<FaultResult> {
    let bank = alliance.node("bank-a")?;
    let center = alliance.node("credit-center")?;
    let config = NodeConfig::load(&bank.config)?;
    let auth = xmcredit_node::server::client_auth(&config)?;
    let mut observed = Vec::new();
    let mut passed = true;
    for (what, payload) in [("random bytes", vec![0x42u8; 77]), ("a truncated hello", vec![0x01, 0x81, 0x00])]
    {
        let channel = xmcredit_node::transport::connect(
            &center.address,
            &center.id,
            auth.clone(),
            Duration::from_secs(5),
        )
        .await?;
        let frames = tokio_stream::iter(vec![proto::Frame { payload }]);
        let result = xmcredit_node::service::peer_client(channel).psi(frames).await;
        match result {
            Ok(_) => {
                passed = false;
                observed.push(format!("{what}: accepted"));
            }
            Err(status) => observed.push(format!("{what}: {:?} {}", status.code(), status.message())),
        }
    }
    // The credit center is still serving.
    let alive = center.status().await.is_ok();
    passed &= alive;
    observed.push(format!("credit center still serving: {alive}"));
    Ok(FaultResult {
        id: "malformed-messages".into(),
        name: "malformed protocol messages".into(),
        expected: "refused with InvalidArgument and a reason; the node keeps serving".into(),
        observed: observed.join("; "),
        passed,
    })
}

/// A bank's node process dies in the middle of a PSI run (it exits, as a crash would,
/// once the server has answered its first chunk), then restarts.
pub async fn bank_killed(alliance: &mut Alliance, bank: &str, contract: &str) -> Result<FaultResult> {
    let node = alliance.node_mut(bank)?;
    node.stop()?;
    node.set_env(fault::EXIT_AT_VAR, fault::PSI_CLIENT_AFTER_FIRST_REPLY);
    node.start().await?;
    let run_result = alliance.node(bank)?.run("psi", contract).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node = alliance.node_mut(bank)?;
    let died = !node.is_running();
    node.stop()?;
    node.set_env(fault::EXIT_AT_VAR, "");
    node.start().await?;
    let node = alliance.node(bank)?;
    let status = node.status().await?;
    let interrupted =
        status.jobs.iter().filter(|j| j.contract_id == contract && j.state == "interrupted").count();
    let running = status.jobs.iter().filter(|j| j.state == "running").count();
    let verify =
        node.admin().await?.audit_verify(proto::AuditVerifyRequest { witnesses: false }).await?.into_inner();
    // The server notices the broken stream and ends its side of the session.
    let mut center_running = usize::MAX;
    for _ in 0..50 {
        let center = alliance.node("credit-center")?.status().await?;
        center_running = center.jobs.iter().filter(|j| j.state == "running").count();
        if center_running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let passed =
        died && run_result.is_err() && interrupted == 1 && running == 0 && verify.ok && center_running == 0;
    Ok(FaultResult {
        id: "psi-client-killed".into(),
        name: format!("{bank} dies during a PSI run"),
        expected: "the bank's job is marked interrupted at restart, nothing left running on either side, audit chain intact".into(),
        observed: format!(
            "process died mid-run: {died}; run: {}; {bank} jobs interrupted: {interrupted}, running: {running}; audit: {}; credit center jobs running: {center_running}",
            match &run_result {
                Ok(_) => "finished (the fault did not happen)".to_string(),
                Err(e) => format!("ended: {e}"),
            },
            verify.detail
        ),
        passed,
    })
}
