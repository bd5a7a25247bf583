//! What a peer may cost a node (issue 11), tried from real connections against real
//! node processes: each limit is pushed past while an honest peer and the operator
//! must still be served.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::*;
use xmcredit_node::proto;
use xmcredit_node::service::peer_client;
use xmcredit_simulator::limit_faults;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_does_not_lock_out_peers_or_the_operator() -> Result<()> {
    let (_dir, alliance) = alliance(&["credit-center", "bank-a", "bank-b"], true).await?;
    // 300 silent TCP connections: more than the 128 handshakes held at once and more
    // than the old fixed cap of 256.
    let fault = limit_faults::connection_flood(&alliance, "credit-center", "bank-b", "bank-a", 300).await?;
    assert!(fault.passed, "{fault:?}");
    // bank-b's own node may hold a connection or two (CRL fetches, audit heads), so the
    // attacker's count is checked as "at most the limit held, at least 4 refused".
    assert!(fault.observed.contains("refused;"), "{}", fault.observed);
    wait_for_log(alliance.node("credit-center")?, "already holds its limit of connections").await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_flood_is_refused_past_the_session_limit() -> Result<()> {
    let (_dir, alliance) = alliance(&["credit-center", "bank-a", "bank-b"], true).await?;
    let fault = limit_faults::stream_flood(&alliance, "credit-center", "bank-b", "bank-a", 40).await?;
    assert!(fault.passed, "{fault:?}");
    assert!(fault.observed.starts_with("24 refused with ResourceExhausted"), "{}", fault.observed);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_id_is_refused_before_the_log_or_the_store() -> Result<()> {
    let (_dir, alliance) = alliance(&["credit-center", "bank-a", "bank-b"], true).await?;
    let fault = limit_faults::oversized_request(&alliance, "credit-center", "bank-b").await?;
    assert!(fault.passed, "{fault:?}");
    assert_contains(
        &fault.observed,
        &["ResourceExhausted", "contract id of 7340032 bytes from bank-b: at most 128"],
    );
    let log = node_log(alliance.node("credit-center")?);
    assert!(!log.contains(&"x".repeat(200)), "the id itself is not in the log");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_stalled_sessions_exits_within_five_seconds() -> Result<()> {
    let (_dir, mut alliance) = alliance(&["credit-center", "bank-a", "bank-b"], true).await?;
    // bank-b holds PSI streams at the credit center that never send anything.
    let center = alliance.node("credit-center")?;
    let channel = channel(alliance.node("bank-b")?, center).await?;
    let mut held = Vec::new();
    for _ in 0..8 {
        let (tx, rx) = tokio::sync::mpsc::channel::<proto::Frame>(1);
        let mut client = peer_client(channel.clone());
        held.push((
            tx,
            tokio::spawn(async move { client.psi(tokio_stream::wrappers::ReceiverStream::new(rx)).await }),
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    alliance.node_mut("credit-center")?.stop()?;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?} with stalled sessions");
    let log = node_log(alliance.node("credit-center")?);
    assert_contains(
        &log,
        &["SIGTERM: shutting down", "sessions still open after the shutdown grace period", "stopped"],
    );
    drop(held);
    Ok(())
}
