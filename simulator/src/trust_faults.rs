//! Faults against the trust model (issue 9), each tried as an attacker would against
//! the running alliance, with a stable id in the report:
//!
//! - `ca-minted-certificate`: the CA holder mints a second certificate for a bank and
//!   uses it to pose as that bank and to reach its operator service;
//! - `revoked-open-connection`: a bank is revoked while its connections are open;
//! - `audit-rewritten`: a bank's audit record is edited and every later record
//!   re-hashed, node stopped, store files in hand;
//! - `audit-truncated`: the last records of a bank's chain are cut.
//!
//! The last three change the alliance for good (a revoked bank, damaged chains), so the
//! demo runs them after every scenario.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use xmcredit_contracts::audit::{AuditChain, AuditEntry, AuditRecord, Outcome};
use xmcredit_node::config::NodeConfig;
use xmcredit_node::proto;
use xmcredit_node::service::{admin_client, peer_client};

use crate::alliance::{Alliance, NodeHandle, NodeProgram};
use crate::faults::FaultResult;

/// A certificate the CA on `ca_node` issues for `name` over a fresh TLS key and a fresh
/// identity key, in a directory of its own: what the CA holder can do alone.
pub fn mint_certificate(
    program: &NodeProgram,
    alliance: &Alliance,
    ca_node: &NodeHandle,
    name: &str,
) -> Result<NodeConfig> {
    let dir = alliance.base.join(format!("minted-{name}"));
    std::fs::create_dir_all(&dir)?;
    let d = dir.display().to_string();
    program.run(
        &["init", "--data-dir", &d, "--node-id", name, "--listen", "127.0.0.1:9"],
        &dir.join("init.log"),
    )?;
    let ca_dir = ca_node.dir.display().to_string();
    let csr = format!("{d}/tls.csr");
    let out = format!("{d}/tls.crt");
    program.run(
        &["ca", "issue", "--data-dir", &ca_dir, "--csr", &csr, "--node-id", name, "--out", &out],
        &dir.join("issue.log"),
    )?;
    std::fs::copy(ca_node.dir.join("ca.crt"), dir.join("ca.crt"))?;
    Ok(NodeConfig::load(&dir.join("node.toml"))?)
}

/// `ca-minted-certificate`.
pub async fn ca_minted_certificate(
    program: &NodeProgram,
    alliance: &Alliance,
    bank: &str,
) -> Result<FaultResult> {
    let center = alliance.node("credit-center")?;
    let minted = mint_certificate(program, alliance, center, bank)?;
    let auth = xmcredit_node::server::client_auth(&minted)?;
    let mut observed = Vec::new();
    let mut passed = true;
    for target in alliance.nodes.iter().filter(|n| n.id.as_str() != bank) {
        let channel = xmcredit_node::transport::connect(
            &target.address,
            &target.id,
            auth.clone(),
            Duration::from_secs(5),
        )
        .await?;
        let answer = peer_client(channel).health(proto::HealthRequest {}).await;
        match answer {
            Ok(_) => {
                passed = false;
                observed.push(format!("{}: answered", target.id));
            }
            Err(status) => {
                passed &= status.code() == tonic::Code::PermissionDenied
                    && status.message().contains("proved identity key");
                observed.push(format!("{}: {:?}", target.id, status.code()));
            }
        }
    }
    let own = alliance.node(bank)?;
    let channel =
        xmcredit_node::transport::connect(&own.address, &own.id, auth, Duration::from_secs(5)).await?;
    let admin = admin_client(channel).status(proto::StatusRequest::default()).await;
    let unreachable = matches!(&admin, Err(s) if s.code() == tonic::Code::Unimplemented);
    passed &= unreachable;
    observed.push(format!(
        "{bank}'s operator service over the network: {}",
        if unreachable { "not served" } else { "ANSWERED" }
    ));
    Ok(FaultResult {
        id: "ca-minted-certificate".into(),
        name: format!("the CA holder mints a second certificate for {bank}"),
        expected: format!("a TLS connection and nothing else: every peer refuses it (the key it proves is not {bank}'s identity key), and no operator call is served on the network"),
        observed: observed.join("; "),
        passed,
    })
}

/// `revoked-open-connection`: `bank` holds connections to every other node; the CA
/// revokes it; within one CRL period every one of them is closed.
pub async fn revoked_open_connection(
    program: &NodeProgram,
    alliance: &Alliance,
    bank: &str,
) -> Result<FaultResult> {
    let node = alliance.node(bank)?;
    let auth = xmcredit_node::server::client_auth(&NodeConfig::load(&node.config)?)?;
    let mut clients = Vec::new();
    for target in alliance.nodes.iter().filter(|n| n.id.as_str() != bank) {
        let channel = xmcredit_node::transport::connect(
            &target.address,
            &target.id,
            auth.clone(),
            Duration::from_secs(5),
        )
        .await?;
        let mut client = peer_client(channel);
        client.health(proto::HealthRequest {}).await?;
        clients.push((target.id.clone(), client, None::<f64>));
    }
    let center = alliance.node("credit-center")?;
    let ca_dir = center.dir.display().to_string();
    program
        .run(&["ca", "revoke", "--data-dir", &ca_dir, "--node-id", bank], &center.dir.join("revoke.log"))?;
    let revoked_at = Instant::now();
    while revoked_at.elapsed() < Duration::from_secs(10) && clients.iter().any(|c| c.2.is_none()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (_, client, closed) in clients.iter_mut().filter(|c| c.2.is_none()) {
            if client.health(proto::HealthRequest {}).await.is_err() {
                *closed = Some(revoked_at.elapsed().as_secs_f64());
            }
        }
    }
    let passed = clients.iter().all(|c| c.2.is_some());
    let observed = clients
        .iter()
        .map(|(id, _, closed)| match closed {
            Some(s) => format!("{id} closed it after {s:.1} s"),
            None => format!("{id} STILL OPEN after 10 s"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    Ok(FaultResult {
        id: "revoked-open-connection".into(),
        name: format!("{bank} revoked while its connections are open"),
        expected: "every node closes the open connection within one CRL period (2 s here); the CRL reaches the banks over gRPC from the CA node".into(),
        observed,
        passed,
    })
}

/// Every audit record in `node`'s store, read from the files (the node must be stopped).
pub fn read_chain(node: &NodeHandle) -> Result<(sled::Db, sled::Tree, Vec<AuditRecord>)> {
    let db = sled::open(node.dir.join("store"))?;
    let tree = db.open_tree("audit")?;
    let records = tree
        .iter()
        .values()
        .map(|v| Ok(serde_json::from_slice::<AuditRecord>(&v?)?))
        .collect::<Result<Vec<_>>>()?;
    Ok((db, tree, records))
}

/// The entry a record was made from.
pub fn entry_of(record: &AuditRecord) -> AuditEntry {
    AuditEntry {
        time: record.time,
        node: record.node.clone(),
        contract: record.contract.clone(),
        computation: record.computation,
        parties: record.parties.clone(),
        set_sizes: record.set_sizes.clone(),
        outcome: record.outcome.clone(),
        transcript_digest: record.transcript_digest,
        event: record.event.clone(),
    }
}

/// Waits until every witness of `node` holds a head at or past its last record.
pub async fn wait_witnessed(node: &NodeHandle) -> Result<u64> {
    let last = node.status().await?.audit_records.saturating_sub(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = node
            .admin()
            .await?
            .audit_verify(proto::AuditVerifyRequest { witnesses: true })
            .await?
            .into_inner();
        let caught_up = !reply.witness_reports.is_empty()
            && reply.witness_reports.iter().all(|r| {
                r.split("latest record ")
                    .nth(1)
                    .and_then(|t| t.split(',').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|seq| seq >= last)
            });
        if caught_up && reply.ok {
            return Ok(last);
        }
        if Instant::now() > deadline {
            bail!(
                "the witnesses of {} never caught up to record {last}: {:?}",
                node.id,
                reply.witness_reports
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Stops `bank`, rewrites its store's audit chain with `edit`, starts it again, and
/// reports what plain and witnessed verification say (in that order).
pub async fn tamper(
    alliance: &mut Alliance,
    bank: &str,
    edit: impl FnOnce(&sled::Tree, &[AuditRecord]) -> Result<()>,
) -> Result<(proto::AuditVerifyReply, proto::AuditVerifyReply)> {
    wait_witnessed(alliance.node(bank)?).await?;
    alliance.node_mut(bank)?.stop()?;
    {
        let (db, tree, records) = read_chain(alliance.node(bank)?)?;
        edit(&tree, &records)?;
        db.flush()?;
    }
    alliance.node_mut(bank)?.start().await?;
    let node = alliance.node(bank)?;
    let plain =
        node.admin().await?.audit_verify(proto::AuditVerifyRequest { witnesses: false }).await?.into_inner();
    let witnessed =
        node.admin().await?.audit_verify(proto::AuditVerifyRequest { witnesses: true }).await?.into_inner();
    Ok((plain, witnessed))
}

/// Replaces record 1's outcome and re-hashes every later record.
pub fn rewrite_record_one(tree: &sled::Tree, records: &[AuditRecord]) -> Result<()> {
    let mut rewritten: Vec<AuditRecord> = Vec::new();
    for record in records {
        let mut entry = entry_of(record);
        if record.seq == 1 {
            entry.outcome = Outcome::Refused { reason: "nothing happened here".into() };
        }
        let next = AuditChain::append(rewritten.last(), entry)?;
        rewritten.push(next);
    }
    for record in &rewritten {
        tree.insert(record.seq.to_be_bytes(), serde_json::to_vec(record)?)?;
    }
    Ok(())
}

/// Removes the last two records.
pub fn cut_last_two(tree: &sled::Tree, records: &[AuditRecord]) -> Result<()> {
    for record in records.iter().rev().take(2) {
        tree.remove(record.seq.to_be_bytes())?;
    }
    Ok(())
}

fn tamper_result(
    id: &str,
    name: String,
    (plain, witnessed): (proto::AuditVerifyReply, proto::AuditVerifyReply),
    must_say: &[&str],
) -> FaultResult {
    let caught = !witnessed.ok && must_say.iter().any(|s| witnessed.detail.contains(s));
    FaultResult {
        id: id.into(),
        name,
        expected: "`audit verify` alone cannot tell; `audit verify --witnesses` names where the chain disagrees with a head a witness holds".into(),
        observed: format!(
            "plain verify: {}; with witnesses: {}",
            if plain.ok { "intact (as expected of a re-hashed chain)" } else { plain.detail.as_str() },
            witnessed.detail
        ),
        passed: plain.ok && caught,
    }
}

/// `audit-rewritten`.
pub async fn audit_rewritten(alliance: &mut Alliance, bank: &str) -> Result<FaultResult> {
    let replies = tamper(alliance, bank, rewrite_record_one).await?;
    Ok(tamper_result(
        "audit-rewritten",
        format!("{bank}'s audit record 1 edited and every later record re-hashed"),
        replies,
        &["disagrees with the head"],
    ))
}

/// `audit-truncated`.
pub async fn audit_truncated(alliance: &mut Alliance, bank: &str) -> Result<FaultResult> {
    let replies = tamper(alliance, bank, cut_last_two).await?;
    Ok(tamper_result(
        "audit-truncated",
        format!("{bank}'s audit chain cut by its last two records"),
        replies,
        &["cut short", "disagrees with the head"],
    ))
}
