//! Faults against a node's limits (issue 11), each tried from real connections against
//! the running alliance, with a stable id in the report:
//!
//! - `connection-flood`: raw TCP connections that never start TLS, plus one peer
//!   opening more authenticated connections than its limit;
//! - `stream-flood`: one peer opening many PSI streams that never send a message;
//! - `oversized-request`: a 7 MiB contract id.
//!
//! In each, an honest peer's call and the operator's CLI must still succeed.

use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::net::TcpStream;
use xmcredit_node::config::NodeConfig;
use xmcredit_node::proto;
use xmcredit_node::service::peer_client;

use crate::alliance::{Alliance, NodeHandle};
use crate::faults::FaultResult;

async fn dial(from: &NodeHandle, to: &NodeHandle) -> Result<tonic::transport::Channel> {
    let auth = xmcredit_node::server::client_auth(&NodeConfig::load(&from.config)?)?;
    Ok(xmcredit_node::transport::connect(&to.address, &to.id, auth, Duration::from_secs(5)).await?)
}

/// An honest peer's Health call and the operator's status, both of which must work.
async fn honest_still_served(alliance: &Alliance, honest: &str, target: &NodeHandle) -> (bool, String) {
    let peer = match alliance.node(honest) {
        Ok(node) => node,
        Err(e) => return (false, e.to_string()),
    };
    let started = Instant::now();
    let health = match dial(peer, target).await {
        Ok(channel) => peer_client(channel).health(proto::HealthRequest {}).await.is_ok(),
        Err(_) => false,
    };
    let operator = target.status().await.is_ok();
    (
        health && operator,
        format!(
            "{honest}'s call {} in {:.2} s; operator status {}",
            if health { "answered" } else { "FAILED" },
            started.elapsed().as_secs_f64(),
            if operator { "answered" } else { "FAILED" }
        ),
    )
}

/// `connection-flood`: `raw` idle TCP connections to `target`, then `attacker` opens
/// more authenticated connections than `limits.max_connections_per_peer`.
pub async fn connection_flood(
    alliance: &Alliance,
    target: &str,
    attacker: &str,
    honest: &str,
    raw: usize,
) -> Result<FaultResult> {
    let node = alliance.node(target)?;
    let mut idle = Vec::new();
    for _ in 0..raw {
        if let Ok(stream) = TcpStream::connect(&node.address).await {
            idle.push(stream);
        }
    }
    let limit = NodeConfig::load(&node.config)?.limits.max_connections_per_peer;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..limit + 4 {
        match dial(alliance.node(attacker)?, node).await {
            Ok(channel) => held.push(channel),
            Err(_) => refused += 1,
        }
    }
    let (served, observed) = honest_still_served(alliance, honest, node).await;
    drop((idle, held));
    Ok(FaultResult {
        id: "connection-flood".into(),
        name: format!("{raw} silent TCP connections and {} connections from {attacker} at {target}", limit + 4),
        expected: format!(
            "{attacker}'s connections beyond {limit} are refused; silent connections cannot lock peers out; {honest} and the operator are served"
        ),
        observed: format!("{attacker}: {} held, {refused} refused; {observed}", limit + 4 - refused),
        passed: served && refused >= 4 && limit + 4 - refused <= limit,
    })
}

/// `stream-flood`: `attacker` opens `streams` PSI streams that never send anything.
pub async fn stream_flood(
    alliance: &Alliance,
    target: &str,
    attacker: &str,
    honest: &str,
    streams: usize,
) -> Result<FaultResult> {
    let node = alliance.node(target)?;
    let limit = NodeConfig::load(&node.config)?.limits.max_sessions_per_peer;
    // Two connections, so the per-connection stream limit does not queue them (retried
    // briefly: a flood just before may still hold the attacker's slots).
    let attacker_node = alliance.node(attacker)?;
    let mut channels = Vec::new();
    for attempt in 0..20 {
        match dial(attacker_node, node).await {
            Ok(channel) => channels.push(channel),
            Err(e) if attempt == 19 => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
        if channels.len() == 2 {
            break;
        }
    }
    let (tx, mut results) = tokio::sync::mpsc::channel(streams);
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..streams {
        let (frames_tx, frames_rx) = tokio::sync::mpsc::channel::<proto::Frame>(1);
        senders.push(frames_tx);
        let mut client = peer_client(channels[i % channels.len()].clone());
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let answer = client.psi(tokio_stream::wrappers::ReceiverStream::new(frames_rx)).await;
            let _ = tx.send(answer.err().map(|s| s.code())).await;
        }));
    }
    drop(tx);
    // The refusals come back at once; the accepted streams stall (until the hello
    // timeout), which is the point.
    let mut exhausted = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while exhausted < streams.saturating_sub(limit) {
        match tokio::time::timeout_at(deadline, results.recv()).await {
            Ok(Some(Some(tonic::Code::ResourceExhausted))) => exhausted += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let (served, observed) = honest_still_served(alliance, honest, node).await;
    for task in &tasks {
        task.abort();
    }
    drop(senders);
    let expected_refusals = streams.saturating_sub(limit);
    Ok(FaultResult {
        id: "stream-flood".into(),
        name: format!("{attacker} opens {streams} PSI streams at {target} and sends nothing"),
        expected: format!(
            "at most {limit} are held (dropped after the hello timeout); the other {expected_refusals} are refused with ResourceExhausted; {honest} and the operator are served"
        ),
        observed: format!("{exhausted} refused with ResourceExhausted; {observed}"),
        passed: served && exhausted == expected_refusals,
    })
}

/// `oversized-request`: a 7 MiB contract id in `FetchContract`.
pub async fn oversized_request(alliance: &Alliance, target: &str, attacker: &str) -> Result<FaultResult> {
    let node = alliance.node(target)?;
    let records_before = node.status().await?.audit_records;
    let mut client = peer_client(dial(alliance.node(attacker)?, node).await?);
    let huge = "x".repeat(7 * 1024 * 1024);
    let answer = client.fetch_contract(proto::ContractQuery { contract_id: huge }).await;
    let status = node.status().await?;
    let records = node.admin().await?.audit_show(proto::AuditShowRequest { last: 3 }).await?.into_inner();
    let largest = records.records_json.iter().map(String::len).max().unwrap_or(0);
    let code = answer.as_ref().err().map(|s| s.code());
    let passed = code == Some(tonic::Code::ResourceExhausted)
        && status.audit_records <= records_before + 1
        && largest < 4096;
    Ok(FaultResult {
        id: "oversized-request".into(),
        name: format!("{attacker} sends a 7 MiB contract id to {target}"),
        expected:
            "refused with ResourceExhausted before it is logged or stored; at most one small audit record"
                .into(),
        observed: format!(
            "{}; audit records +{}, largest of the last {} is {largest} bytes",
            match &answer {
                Ok(_) => "ANSWERED".to_string(),
                Err(s) => format!("{:?}: {}", s.code(), s.message()),
            },
            status.audit_records - records_before,
            records.records_json.len()
        ),
        passed,
    })
}
