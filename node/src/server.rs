//! `serve`: open the store, repair what a crash left, load keys and certificates, and
//! answer peers and the operator over mutual TLS until told to stop.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use xmcredit_contracts::audit::{AuditEvent, Outcome};

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

/// How a process holding this node's data directory authenticates as the node when it
/// dials a peer (tools, the simulator's fault injection, tests): the node's certificate
/// and its identity key. Accepts any key the server proves (`expected_key = None`).
pub fn client_auth(config: &NodeConfig) -> Result<crate::transport::ClientAuth, NodeError> {
    let tls = load_tls(config)?;
    let secrets = NodeSecrets::load(&config.data_dir)?;
    Ok(crate::transport::ClientAuth {
        tls: tls.client_config()?,
        local: crate::transport::LocalIdentity {
            node_id: config.node_id.clone(),
            key: secrets.identity.clone(),
        },
        expected_key: None,
        live: None,
    })
}

/// Builds the shared context: secrets, store (repaired), TLS client configuration.
pub fn open(config: NodeConfig) -> Result<(Arc<NodeContext>, TlsIdentity), NodeError> {
    let secrets = NodeSecrets::load(&config.data_dir)?;
    let tls = load_tls(&config)?;
    let pid_file = config.data_dir.join(PID_FILE);
    let store = crate::store::Store::open_with_cache(
        &config.data_dir.join(STORE_DIR),
        config.store.cache_mb.saturating_mul(1024 * 1024),
    )
    .map_err(|e| already_serving(&pid_file, e))?;
    // Only the process holding the store's lock gets here, so the file names it.
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        tracing::warn!(path = %pid_file.display(), error = %e, "could not write the pid file");
    }
    let ctx = Arc::new(NodeContext {
        tls_client: std::sync::RwLock::new(tls.client_config()?),
        store,
        secrets,
        config,
        psi_sets: Mutex::new(Default::default()),
        lookup_vectors: Mutex::new(Default::default()),
        lookup_universe: Mutex::new(None),
        lookup_registry: Mutex::new(None),
        live: Arc::new(crate::transport::LiveConnections::default()),
        refusal_window: Mutex::new(Default::default()),
        crl_digest: Mutex::new(None),
        head_due: tokio::sync::Notify::new(),
        job_progress: Default::default(),
    });
    crate::revocation::note_loaded(&ctx);
    recover(&ctx)?;
    Ok((ctx, tls))
}

/// The file naming the process that serves a data directory (informational: the
/// store's own lock is what keeps a second `serve` out).
pub const PID_FILE: &str = "serve.pid";

/// A store that will not open because another process holds its lock says so, with
/// that process's id when the pid file names a live one.
fn already_serving(pid_file: &std::path::Path, error: NodeError) -> NodeError {
    let text = error.to_string();
    if !(text.contains("WouldBlock") || text.contains("could not acquire lock")) {
        return error;
    }
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
    let dir = pid_file.parent().map(|d| d.display().to_string()).unwrap_or_default();
    NodeError::Refused(match pid {
        Some(pid) => {
            format!("a node is already running on {dir} (pid {pid}); stop it first (kill -TERM {pid})")
        }
        None => format!(
            "another process holds the store in {dir} (a node is already running there); stop it first"
        ),
    })
}

/// Refuses a data directory that group or others can read, write or enter: it holds the
/// store (raw records), the keys and the operator's socket.
pub fn check_data_dir(data_dir: &std::path::Path) -> Result<(), NodeError> {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        std::fs::metadata(data_dir).map_err(|e| NodeError::file(data_dir, e))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(NodeError::Refused(format!(
            "the data directory {} has mode {mode:04o}, so group or others can reach the store, keys and operator socket; run `chmod 700 {}`",
            data_dir.display(),
            data_dir.display()
        )));
    }
    Ok(())
}

/// Re-reads the TLS files and swaps the server and client configurations; a file that
/// does not load (or a certificate that no longer names this node) changes nothing.
pub(crate) fn reload_tls(ctx: &NodeContext, server_tls: &ServerTls) -> Result<usize, NodeError> {
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
    // Sorted runs of an import that never finished.
    let spill = ctx.config.data_dir.join(crate::import::IMPORT_SPILL_DIR);
    if spill.exists() {
        std::fs::remove_dir_all(&spill).map_err(|e| NodeError::file(&spill, e))?;
    }
    for (dataset, version) in ctx.store.remove_partial_imports()? {
        tracing::warn!(dataset = %dataset, version, "removed a partial import left by a crash");
        ctx.audit(
            AuditEvent::ImportInterrupted { dataset: dataset.to_string(), version },
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
            AuditEvent::JobInterrupted { job: job.id, computation: job.computation.clone() },
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

/// Serves peers on `listener` (mutual TLS) and the operator on the Unix socket in the
/// data directory until `shutdown` resolves; running jobs are then marked interrupted
/// and audited. Each message on `reload` re-reads the certificate, key, CA and CRL files
/// and, with `tls.crl_source`, fetches the CA's CRL (`serve` sends one on SIGHUP); the
/// same happens every `tls.crl_refresh_secs`. Live connections of a peer the new CRL
/// revokes are closed.
pub async fn serve(
    ctx: Arc<NodeContext>,
    tls: &TlsIdentity,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut reload: tokio::sync::mpsc::Receiver<()>,
) -> Result<(), NodeError> {
    check_data_dir(&ctx.config.data_dir)?;
    let peer = NodeServer::new(PeerService::new(ctx.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServer::new(AdminService::new(ctx.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let limits = ctx.config.limits.server();
    let peer_router = crate::transport::server_builder(&limits).add_service(peer);
    let admin_router = tonic::transport::Server::builder().add_service(admin);
    let admin_listener = crate::admin_socket::bind(&ctx.config.data_dir)?;
    tracing::info!(node = %ctx.node_id(), address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), admin = %crate::admin_socket::socket_path(&ctx.config.data_dir).display(), "serving");

    // One shutdown signal, fanned out to both servers and the background tasks.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let server_tls = Arc::new(ServerTls::new(tls.server_config()?));
    let refresher = {
        let ctx = ctx.clone();
        let server_tls = server_tls.clone();
        tokio::spawn(async move {
            let period = std::time::Duration::from_secs(ctx.config.tls.crl_refresh_secs);
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                let forced = tokio::select! {
                    _ = ticker.tick() => false,
                    signal = reload.recv() => match signal { Some(()) => true, None => return },
                };
                crate::revocation::refresh(&ctx, &server_tls, forced).await;
            }
        })
    };
    let console = crate::console::start(ctx.clone(), stopped(stop_rx.clone())).await?;
    let heads = tokio::spawn(crate::witness::publish_periodically(ctx.clone()));
    let refusal_summaries = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                ticker.tick().await;
                ctx.audit_suppressed_refusals(false);
                ctx.evict_inactive_psi_sets();
            }
        })
    };
    let admin_task = {
        let data_dir = ctx.config.data_dir.clone();
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            crate::admin_socket::serve(admin_listener, &data_dir, admin_router, stop).await
        })
    };
    let serving = crate::transport::serve_reloadable(
        listener,
        server_tls,
        ctx.local_identity(),
        ctx.live.clone(),
        limits,
        peer_router,
        stopped(stop_rx.clone()),
    );
    // SIGTERM lets open sessions finish for a grace period, then cancels them: a peer
    // holding a stalled stream cannot keep the node from stopping (issue 11).
    let grace = ctx.config.timeouts.shutdown_grace();
    let mut stop = stop_rx.clone();
    let served = tokio::select! {
        result = serving => result,
        () = async move {
            let _ = stop.wait_for(|stop| *stop).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_s = grace.as_secs(), "sessions still open after the shutdown grace period: cancelled");
            Ok(())
        }
    };
    refresher.abort();
    heads.abort();
    refusal_summaries.abort();
    ctx.audit_suppressed_refusals(true);
    match admin_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "the admin socket server failed"),
        Err(e) => tracing::error!(error = %e, "the admin socket server panicked"),
        Ok(Ok(())) => {}
    }
    if let Some(console) = console {
        let _ = console.await;
    }
    let _ = std::fs::remove_file(crate::admin_socket::socket_path(&ctx.config.data_dir));
    served?;
    let stopped = ctx.store.interrupt_running_jobs(ctx.now_unix())?;
    for job in stopped {
        ctx.audit(
            AuditEvent::JobInterrupted { job: job.id, computation: job.computation.clone() },
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
