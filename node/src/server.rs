//! `serve`: open the store, repair what a crash left, load keys and certificates, and
//! answer peers and the operator over mutual TLS until told to stop.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use xmcredit_contracts::audit::Outcome;

use crate::config::NodeConfig;
use crate::context::NodeContext;
use crate::identity::{NodeSecrets, STORE_DIR};
use crate::pki::tls::{TlsFiles, TlsIdentity};
use crate::proto::admin_server::AdminServer;
use crate::proto::node_server::NodeServer;
use crate::service::admin::AdminService;
use crate::service::peer::PeerService;
use crate::transport::{ServerTls, MAX_MESSAGE_BYTES};
use crate::NodeError;

/// The TLS files a configuration names, with the CRL only if it exists.
pub fn tls_files(config: &NodeConfig) -> TlsFiles {
    let crl = config.resolve(&config.tls.crl);
    TlsFiles {
        ca_cert: config.resolve(&config.tls.ca_cert),
        cert: config.resolve(&config.tls.cert),
        key: config.resolve(&config.tls.key),
        crls: if crl.exists() { vec![crl] } else { Vec::new() },
    }
}

/// Loads the TLS identity and checks it names this node.
pub fn load_tls(config: &NodeConfig) -> Result<TlsIdentity, NodeError> {
    let identity = TlsIdentity::load(&tls_files(config))?;
    if identity.node_id() != &config.node_id {
        return Err(NodeError::Refused(format!(
            "the certificate names {}, the configuration says node_id = {}",
            identity.node_id(),
            config.node_id
        )));
    }
    Ok(identity)
}

/// Builds the shared context: secrets, store (repaired), TLS client configuration.
pub fn open(config: NodeConfig) -> Result<(Arc<NodeContext>, TlsIdentity), NodeError> {
    let secrets = NodeSecrets::load(&config.data_dir)?;
    let tls = load_tls(&config)?;
    let store = crate::store::Store::open(&config.data_dir.join(STORE_DIR))?;
    let ctx = Arc::new(NodeContext {
        tls_client: std::sync::RwLock::new(tls.client_config()?),
        store,
        secrets,
        config,
        psi_sets: Mutex::new(Default::default()),
    });
    recover(&ctx)?;
    Ok((ctx, tls))
}

/// Re-reads the TLS files and swaps the server and client configurations; a file that
/// does not load (or a certificate that no longer names this node) changes nothing.
fn reload_tls(ctx: &NodeContext, server_tls: &ServerTls) -> Result<usize, NodeError> {
    let identity = load_tls(&ctx.config)?;
    let server = identity.server_config()?;
    let client = identity.client_config()?;
    server_tls.replace(server);
    match ctx.tls_client.write() {
        Ok(mut current) => *current = client,
        Err(poisoned) => *poisoned.into_inner() = client,
    }
    Ok(tls_files(&ctx.config).crls.len())
}

/// Repairs what a crash or kill may have left: partial imports and running jobs.
fn recover(ctx: &NodeContext) -> Result<(), NodeError> {
    for (dataset, version) in ctx.store.remove_partial_imports()? {
        tracing::warn!(dataset = %dataset, version, "removed a partial import left by a crash");
        ctx.audit(
            None,
            None,
            Vec::new(),
            Default::default(),
            Outcome::Interrupted {
                reason: format!("import of {dataset} v{version} did not finish; removed"),
            },
            None,
        );
    }
    for job in ctx.store.interrupt_running_jobs(ctx.now_unix())? {
        tracing::warn!(job = job.id, contract = %job.contract_id, "job was running when the node stopped");
        ctx.audit(
            xmcredit_crypto::ContractId::new(job.contract_id.clone()).ok().as_ref(),
            None,
            Vec::new(),
            Default::default(),
            Outcome::Interrupted {
                reason: format!("job {} ({}) was running when the node stopped", job.id, job.computation),
            },
            None,
        );
    }
    Ok(())
}

/// Serves peers and the operator on `listener` until `shutdown` resolves; running jobs
/// are then marked interrupted and audited. Each message on `reload` re-reads the
/// certificate, key, CA and CRL files (`serve` sends one on SIGHUP): a CRL the credit
/// center just issued applies to every connection from then on, without a restart.
pub async fn serve(
    ctx: Arc<NodeContext>,
    tls: &TlsIdentity,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut reload: tokio::sync::mpsc::Receiver<()>,
) -> Result<(), NodeError> {
    let peer = NodeServer::new(PeerService::new(ctx.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServer::new(AdminService::new(ctx.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let router = crate::transport::server_builder().add_service(peer).add_service(admin);
    tracing::info!(node = %ctx.node_id(), address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving");
    let server_tls = Arc::new(ServerTls::new(tls.server_config()?));
    let reloader = {
        let ctx = ctx.clone();
        let server_tls = server_tls.clone();
        tokio::spawn(async move {
            while reload.recv().await.is_some() {
                match reload_tls(&ctx, &server_tls) {
                    Ok(crls) => {
                        tracing::info!(node = %ctx.node_id(), crls, "reloaded certificates and revocation lists")
                    }
                    Err(e) => {
                        tracing::error!(node = %ctx.node_id(), error = %e, "reload refused; keeping the previous TLS configuration")
                    }
                }
            }
        })
    };
    let served = crate::transport::serve_reloadable(listener, server_tls, router, shutdown).await;
    reloader.abort();
    served?;
    let stopped = ctx.store.interrupt_running_jobs(ctx.now_unix())?;
    for job in stopped {
        ctx.audit(
            xmcredit_crypto::ContractId::new(job.contract_id.clone()).ok().as_ref(),
            None,
            Vec::new(),
            Default::default(),
            Outcome::Interrupted { reason: format!("job {} aborted by shutdown", job.id) },
            None,
        );
    }
    ctx.store.flush()?;
    tracing::info!(node = %ctx.node_id(), "stopped");
    Ok(())
}
