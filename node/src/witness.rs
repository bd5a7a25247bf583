//! An audit chain another node can vouch for (issue 9). A node signs its chain head
//! (sequence number, record hash, time) with its identity key and sends it to its
//! witnesses after each job and every `audit.head_period_secs`; a witness stores the
//! heads it receives (store `witnessed_heads`). `audit verify --witnesses` fetches them
//! back and names the first point where the local chain disagrees with a head a witness
//! holds: a record rewritten (even with every later hash recomputed) or a chain cut
//! short. Records appended after the last head a witness received are vouched for by
//! nobody yet: that window is at most one period or one job.

use std::sync::Arc;

use xmcredit_contracts::audit::{verify_chain, AuditRecord};
use xmcredit_crypto::NodeId;

use crate::context::NodeContext;
use crate::proto;
use crate::service::peer_client;
use crate::store::{AuditLog, SignedHead, Witnessed};
use crate::transport::PeerIdentity;
use crate::NodeError;

/// This node's current head, signed; `None` for an empty chain.
pub fn current_head(ctx: &NodeContext) -> Result<Option<SignedHead>, NodeError> {
    let Some(last) = ctx.store.audit_last()? else { return Ok(None) };
    Ok(Some(SignedHead::sign(&ctx.secrets.identity, ctx.node_id(), last.seq, &last.hash, ctx.now_unix())))
}

/// Sends the current head to every witness; failures are logged (the next period
/// retries).
pub async fn publish_head(ctx: Arc<NodeContext>) {
    let head = match current_head(&ctx) {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the audit head");
            return;
        }
    };
    let Ok(head_json) = serde_json::to_string(&head) else { return };
    for witness in ctx.config.witnesses() {
        let sent = async {
            let channel = ctx.channel(&witness).await?;
            peer_client(channel)
                .witness_head(proto::AuditHead { head_json: head_json.clone() })
                .await
                .map_err(|s| NodeError::Peer { peer: witness.to_string(), message: s.message().to_string() })
        };
        match sent.await {
            Ok(_) => tracing::debug!(%witness, seq = head.seq, "audit head witnessed"),
            Err(e) => {
                tracing::warn!(%witness, seq = head.seq, error = %e, "could not send the audit head to a witness")
            }
        }
    }
}

/// Publishes the head every `audit.head_period_secs` (the first time right away) and
/// whenever a job ends.
pub async fn publish_periodically(ctx: Arc<NodeContext>) {
    let period = std::time::Duration::from_secs(ctx.config.audit.head_period_secs);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = ctx.head_due.notified() => {}
        }
        publish_head(ctx.clone()).await;
    }
}

/// A witness receiving a head from `caller`: it must be the caller's own head, signed
/// with the key the caller proved on this connection (which `check_caller` compared
/// with the pinned key).
pub fn receive_head(
    ctx: &NodeContext,
    caller: &PeerIdentity,
    head_json: &str,
) -> Result<&'static str, NodeError> {
    if head_json.len() > 4096 {
        return Err(NodeError::Refused(format!("an audit head of {} bytes (at most 4096)", head_json.len())));
    }
    let head: SignedHead = serde_json::from_str(head_json)
        .map_err(|e| NodeError::Refused(format!("audit head does not parse: {e}")))?;
    if head.node != caller.node_id {
        return Err(NodeError::Refused(format!(
            "{} sent a head for {}: a node sends only its own",
            caller.node_id, head.node
        )));
    }
    head.verify(&caller.identity_key).map_err(NodeError::Refused)?;
    match ctx.store.witness_head(&head)? {
        Witnessed::Stored => Ok("stored"),
        Witnessed::AlreadyHeld => Ok("already-held"),
        Witnessed::Conflict(held) => {
            tracing::error!(node = %head.node, seq = head.seq, held = %held.hash, sent = %head.hash, "a node sent a second, different head for one sequence number: its chain was rewritten");
            Err(NodeError::Refused(format!(
                "this witness already holds head {} of {} with hash {}; the one sent has {}: the chain was rewritten",
                head.seq, head.node, held.hash, head.hash
            )))
        }
    }
}

/// What comparing the local chain with witnesses found.
#[derive(Debug, Clone)]
pub struct WitnessCheck {
    /// The first problem, if any ("record 7 disagrees with the head bank-b holds").
    pub problem: Option<String>,
    /// One line per witness.
    pub reports: Vec<String>,
}

/// Compares `records` (the local chain) with one witness's heads for this node.
pub fn compare(records: &[AuditRecord], witness: &NodeId, heads: &[SignedHead]) -> Option<(u64, String)> {
    let mut first: Option<(u64, String)> = None;
    for head in heads {
        let problem = match records.get(head.seq as usize) {
            None => Some(format!(
                "the chain was cut short: {witness} holds a head at record {} (signed at {}), but the local chain ends {}",
                head.seq,
                head.time,
                match records.len() {
                    0 => "before any record".to_string(),
                    n => format!("at record {}", n - 1),
                }
            )),
            Some(record) if hex::encode(record.hash) != head.hash => Some(format!(
                "the chain up to record {} disagrees with the head {witness} holds (signed at {}): a record at or before it was changed; local hash {}, witnessed {}",
                head.seq,
                head.time,
                hex::encode(record.hash),
                head.hash
            )),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            if first.as_ref().is_none_or(|(seq, _)| head.seq < *seq) {
                first = Some((head.seq, problem));
            }
        }
    }
    first
}

/// Fetches the heads every witness holds for this node and compares.
pub async fn check_with_witnesses(ctx: &NodeContext) -> Result<WitnessCheck, NodeError> {
    let records = ctx.store.audit_records()?;
    let own_key = ctx.secrets.public_key();
    let mut reports = Vec::new();
    let mut first: Option<(u64, String)> = None;
    if let Err(e) = verify_chain(&records) {
        first = Some((0, format!("the local chain does not verify: {e}")));
    }
    for witness in ctx.config.witnesses() {
        let fetched = async {
            let channel = ctx.channel(&witness).await?;
            peer_client(channel)
                .fetch_witnessed_heads(proto::WitnessedHeadsRequest {})
                .await
                .map_err(|s| NodeError::Peer { peer: witness.to_string(), message: s.message().to_string() })
                .map(|r| r.into_inner().heads_json)
        };
        let heads_json = match fetched.await {
            Ok(heads) => heads,
            Err(e) => {
                reports.push(format!("{witness}: not reachable ({e})"));
                continue;
            }
        };
        let mut heads = Vec::new();
        for json in &heads_json {
            match serde_json::from_str::<SignedHead>(json) {
                // Only heads this node signed count: a witness cannot invent one.
                Ok(head) if head.node == *ctx.node_id() && head.verify(&own_key).is_ok() => heads.push(head),
                _ => reports.push(format!("{witness}: returned a head not signed by this node (ignored)")),
            }
        }
        let latest = heads.iter().map(|h| h.seq).max();
        match compare(&records, &witness, &heads) {
            None => reports.push(format!(
                "{witness}: {} heads, latest record {}, agrees",
                heads.len(),
                latest.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
            )),
            Some((seq, problem)) => {
                reports.push(format!("{witness}: {problem}"));
                if first.as_ref().is_none_or(|(s, _)| seq < *s) {
                    first = Some((seq, problem));
                }
            }
        }
    }
    let vouched =
        reports.iter().filter(|r| r.contains(" heads, latest record ") && !r.contains(": 0 heads")).count();
    if first.is_none() && !records.is_empty() && vouched == 0 {
        first = Some((
            u64::MAX,
            "no witness vouched for this chain (none answered, or none holds a head yet)".into(),
        ));
    }
    Ok(WitnessCheck { problem: first.map(|(_, p)| p), reports })
}
