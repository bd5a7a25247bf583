//! Revocation that takes effect (issue 9). Every `tls.crl_refresh_secs`, and on SIGHUP,
//! the node
//!
//! 1. fetches the CA's CRL from `tls.crl_source` (if configured) over gRPC, installs it
//!    as its CRL file if it verifies under the alliance CA certificate and is not older
//!    than the one in force (a stale CRL cannot roll a revocation back);
//! 2. re-reads its CRL file (also covering a CRL copied by hand, and `ca revoke` on the
//!    CA's own node) and, if it changed, swaps the TLS configurations;
//! 3. closes every live connection, served or dialled, whose peer certificate the CRL
//!    lists, and audits it.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use xmcredit_contracts::audit::Outcome;

use crate::context::NodeContext;
use crate::pki::{check_crl, first_certificate_der, write_file_atomic, CheckedCrl};
use crate::proto;
use crate::service::peer_client;
use crate::transport::ServerTls;
use crate::NodeError;

/// One refresh; errors are logged, never fatal (the CRL in force stays in force).
pub async fn refresh(ctx: &Arc<NodeContext>, server_tls: &ServerTls, forced: bool) {
    if let Some(source) = ctx.config.tls.crl_source.clone() {
        match fetch_and_install(ctx, &source).await {
            Ok(true) => tracing::info!(%source, "installed a newer CRL from the CA"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%source, error = %e, "could not refresh the CRL from the CA; keeping the one in force")
            }
        }
    }
    if let Err(e) = apply_crl_file(ctx, server_tls, forced) {
        tracing::error!(error = %e, "reload refused; keeping the previous TLS configuration");
    }
}

fn ca_der(ctx: &NodeContext) -> Result<Vec<u8>, NodeError> {
    let path = ctx.config.resolve(&ctx.config.tls.ca_cert);
    let pem = std::fs::read(&path).map_err(|e| NodeError::file(&path, e))?;
    Ok(first_certificate_der(&pem)?)
}

/// The CRL file in force, checked, with its bytes; `None` if there is none.
fn current_crl(ctx: &NodeContext) -> Result<Option<(Vec<u8>, CheckedCrl)>, NodeError> {
    let path = ctx.config.resolve(&ctx.config.tls.crl);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NodeError::file(&path, e)),
    };
    let checked = check_crl(&bytes, &ca_der(ctx)?).map_err(|e| NodeError::file(&path, e))?;
    Ok(Some((bytes, checked)))
}

/// Fetches the CA's CRL; writes it if it is valid, different and not older. Returns
/// whether it was installed.
async fn fetch_and_install(ctx: &NodeContext, source: &xmcredit_crypto::NodeId) -> Result<bool, NodeError> {
    let channel = ctx.channel(source).await?;
    let reply = peer_client(channel)
        .fetch_crl(proto::CrlRequest {})
        .await
        .map_err(|status| NodeError::Peer {
            peer: source.to_string(),
            message: status.message().to_string(),
        })?
        .into_inner();
    if reply.crl_der.is_empty() {
        return Ok(false);
    }
    let fetched = check_crl(&reply.crl_der, &ca_der(ctx)?)?;
    if let Some((bytes, current)) = current_crl(ctx)? {
        if bytes == reply.crl_der {
            return Ok(false);
        }
        // Only a CRL that supersedes the one in force (a greater CRL number): a relay
        // cannot roll a revocation back or swap between two CRLs of one second.
        if !fetched.supersedes(&current) {
            return Err(NodeError::Refused(format!(
                "{source} served a CRL (number {}, issued at {}) that does not supersede the one in force (number {}, issued at {}): not installed",
                fetched.number.as_deref().map(hex::encode).unwrap_or_else(|| "-".into()),
                fetched.this_update,
                current.number.as_deref().map(hex::encode).unwrap_or_else(|| "-".into()),
                current.this_update
            )));
        }
    }
    let path = ctx.config.resolve(&ctx.config.tls.crl);
    write_file_atomic(&path, &reply.crl_der)?;
    Ok(true)
}

/// Reloads TLS if the CRL file changed (or `forced`), then closes live connections of
/// revoked peers (on every pass, so a connection that raced an earlier pass is caught).
fn apply_crl_file(ctx: &NodeContext, server_tls: &ServerTls, forced: bool) -> Result<(), NodeError> {
    let current = current_crl(ctx)?;
    let digest: Option<[u8; 32]> = current.as_ref().map(|(bytes, _)| Sha256::digest(bytes).into());
    let loaded =
        *ctx.crl_digest.lock().map_err(|_| NodeError::Internal("CRL digest lock poisoned".into()))?;
    let mut reload_error = None;
    if loaded != digest || forced {
        match crate::server::reload_tls(ctx, server_tls) {
            Ok(crls) => {
                tracing::info!(node = %ctx.node_id(), crls, "reloaded certificates and revocation lists");
                // Only a successful reload counts as loaded: a failed one is retried next period.
                if let Ok(mut slot) = ctx.crl_digest.lock() {
                    *slot = digest;
                }
            }
            Err(e) => reload_error = Some(e),
        }
    }
    // Revoked peers lose their live connections even if the TLS reload failed.
    if let Some((_, checked)) = current {
        for peer in ctx.live.close_revoked(&checked.revoked) {
            tracing::warn!(%peer, "closed a live connection: the peer's certificate is revoked");
            ctx.audit(
                xmcredit_contracts::audit::AuditEvent::ConnectionClosed { peer: peer.clone() },
                None,
                None,
                vec![peer.clone()],
                Default::default(),
                Outcome::Refused {
                    reason: format!("closed live connection of {peer}: certificate revoked by the CRL"),
                },
                None,
            );
        }
    }
    reload_error.map_or(Ok(()), Err)
}

/// Records the CRL in force at startup, so the first refresh reloads only on a change.
pub fn note_loaded(ctx: &NodeContext) {
    if let Ok(Some((bytes, checked))) = current_crl(ctx) {
        if let Ok(mut loaded) = ctx.crl_digest.lock() {
            *loaded = Some(Sha256::digest(&bytes).into());
        }
        ctx.live.close_revoked(&checked.revoked);
    }
}

/// The CRL file this node serves to peers (`FetchCrl`): its own, as the CA signed it.
pub fn served_crl(ctx: &NodeContext) -> Result<Vec<u8>, NodeError> {
    Ok(current_crl(ctx)?.map(|(bytes, _)| bytes).unwrap_or_default())
}
