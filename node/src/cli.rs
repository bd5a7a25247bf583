//! The operator's command line: `xmcredit-node <command>`. Setup commands (init, ca)
//! work on files; everything else talks to the running node's admin service over
//! mutual TLS with the node's own certificate.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tokio_stream::StreamExt;
use xmcredit_contracts::audit::{AuditRecord, Outcome};
use xmcredit_crypto::NodeId;

use crate::config::NodeConfig;
use crate::identity::{self, NodeSecrets};
use crate::pki::{self, AllianceCa, Index, NodeKey};
use crate::proto;

#[derive(Debug, Parser)]
#[command(
    name = "xmcredit-node",
    version,
    about = "A node of the Xiamen credit alliance's privacy computation network"
)]
pub struct Cli {
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// The node's configuration file.
    #[arg(long, short, env = "XMCREDIT_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the node's keys, a certificate request and a starter configuration.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        node_id: NodeId,
        /// Address to listen on, written into the starter configuration.
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: String,
    },
    /// The alliance CA (run on the credit center's node).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Answer peers and the operator until SIGTERM or Ctrl-C.
    Serve(ConfigArg),
    /// Import a CSV file as a new version of a dataset.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        /// The dataset to import into (default: the schema's `name`; when given, it
        /// must be the schema's name).
        #[arg(long)]
        dataset: Option<String>,
        /// The dataset schema (TOML: name, key, columns).
        #[arg(long)]
        schema: PathBuf,
        #[arg(long)]
        csv: PathBuf,
        /// Legacy: `id` for a schema that declares no key_kind means identifiers, only
        /// trimmed. Declare `key_kind` in the schema instead (entity_code, identifier or
        /// composite).
        #[arg(long, default_value = "")]
        key_kind: String,
        /// Import the valid rows even when some rows are rejected.
        #[arg(long)]
        allow_rejects: bool,
    },
    /// Propose, sign, show, list and revoke contracts.
    #[command(subcommand)]
    Contract(ContractCommand),
    /// Run a computation under a contract, as this node's role in it.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// psi, secagg, lookup or overthreshold.
        computation: String,
        #[arg(long)]
        contract: String,
        /// The local dataset to use (default: the one the contract names for this node).
        #[arg(long, default_value = "")]
        dataset: String,
    },
    /// Peers, contracts, datasets and recent jobs.
    Status(ConfigArg),
    /// Show or verify the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the alliance CA in <data-dir>/ca and trust it.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "Xiamen Credit Alliance CA")]
        name: String,
    },
    /// Issue a node certificate from its request.
    Issue {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        csr: PathBuf,
        /// Refuse the request unless it names this node.
        #[arg(long)]
        node_id: Option<NodeId>,
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// List issued certificates.
    List {
        #[arg(long)]
        data_dir: PathBuf,
        /// Print the issuance index as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a node's certificates and write a new CRL to <data-dir>/crl.der.
    Revoke {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        node_id: NodeId,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContractCommand {
    /// Sign a contract document (TOML) and send it to the other parties.
    Propose {
        #[command(flatten)]
        config: ConfigArg,
        file: PathBuf,
    },
    /// Approve (sign) a contract a peer proposed.
    Sign {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
    },
    Show {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
    },
    List(ConfigArg),
    /// Revoke a contract for every party.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Only the last N records.
        #[arg(long, default_value_t = 0)]
        last: u64,
        /// Print each record's stored JSON, one per line, instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Verify the hash chain; names the first altered, removed or re-ordered record.
    /// With --witnesses, also compares it with the signed heads this node's witnesses
    /// hold, which catches a chain rewritten with every later hash recomputed, or cut.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        witnesses: bool,
    },
}

/// Entry point of the `xmcredit-node` binary (and of the simulator's node processes).
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<()> {
    let cli = Cli::parse_from(args);
    crate::logging::init(cli.log_json);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(run(cli.command)).map_err(readable)
}

/// A UTC date and time for unix seconds.
fn utc(unix: u64) -> String {
    let (y, m, d) = xmcredit_contracts::Date::from_days_since_epoch((unix / 86_400) as i32).ymd();
    let s = unix % 86_400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Unix seconds as RFC 3339 in UTC (`2026-03-01T04:00:00Z`).
fn rfc3339(unix: u64) -> String {
    format!("{}Z", utc(unix).replacen(' ', "T", 1))
}

/// The audit records as a table: seq, UTC time, node, event, contract, outcome.
fn print_audit(records_json: &[String]) -> Result<()> {
    println!("{:<6} {:<21} {:<16} {:<26} {:<28} outcome", "seq", "time (UTC)", "node", "event", "contract");
    for json in records_json {
        let record: AuditRecord = serde_json::from_str(json)
            .with_context(|| format!("the node sent an unreadable audit record: {json}"))?;
        let event = match &record.event {
            Some(event) => event.to_string(),
            // Written before events were recorded.
            None => {
                record.computation.map_or_else(|| "-".to_string(), |k| format!("{k} (no event recorded)"))
            }
        };
        let outcome = match &record.outcome {
            Outcome::Ok => "ok".to_string(),
            Outcome::Refused { reason } => format!("refused: {reason}"),
            Outcome::Failed { reason } => format!("failed: {reason}"),
            Outcome::Interrupted { reason } => format!("interrupted: {reason}"),
        };
        println!(
            "{:<6} {:<21} {:<16} {:<26} {:<28} {outcome}",
            record.seq,
            rfc3339(record.time),
            record.node.as_str(),
            event,
            record.contract.as_ref().map_or("-", |c| c.as_str()),
        );
    }
    Ok(())
}

/// The error as an operator should read it: a gRPC status from the node becomes what
/// happened and the node's message (real line breaks, no metadata dump), after whatever
/// context the command added.
fn readable(error: anyhow::Error) -> anyhow::Error {
    if error.downcast_ref::<tonic::Status>().is_none() {
        return error;
    }
    let parts: Vec<String> = error
        .chain()
        .map(|cause| match cause.downcast_ref::<tonic::Status>() {
            Some(status) => status_text(status),
            None => cause.to_string(),
        })
        .collect();
    anyhow::anyhow!(parts.join(": "))
}

fn status_text(status: &tonic::Status) -> String {
    use tonic::Code;
    let what = match status.code() {
        Code::PermissionDenied => "refused",
        Code::InvalidArgument => "invalid input",
        Code::NotFound => "not found",
        Code::AlreadyExists => "refused as a replay",
        Code::DeadlineExceeded => "timed out",
        Code::Unavailable => "unreachable",
        Code::ResourceExhausted => "over a limit",
        Code::Unauthenticated => "not authenticated",
        _ => "the node failed",
    };
    format!("{what}: {}", status.message())
}

/// The line naming the CSV columns an import ignored, if it ignored any.
fn ignored_columns_line(report: &serde_json::Value) -> Option<String> {
    let columns: Vec<&str> =
        report.get("ignored_columns")?.as_array()?.iter().filter_map(serde_json::Value::as_str).collect();
    if columns.is_empty() {
        return None;
    }
    Some(format!("ignored columns (not in the schema, not imported): {}", columns.join(", ")))
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Init { data_dir, node_id, listen } => init(&data_dir, &node_id, &listen),
        Command::Ca(command) => ca(command),
        Command::Serve(config) => serve(&config.config).await,
        Command::Import { config, dataset, schema, csv, key_kind, allow_rejects } => {
            let schema_toml =
                std::fs::read_to_string(&schema).with_context(|| format!("reading {}", schema.display()))?;
            let csv_path =
                std::fs::canonicalize(&csv).with_context(|| format!("reading {}", csv.display()))?;
            let mut admin = admin(&config.config).await?;
            let stream = admin
                .import(proto::ImportRequest {
                    // Empty: the node takes the schema's name.
                    dataset: dataset.unwrap_or_default(),
                    csv_path: csv_path.display().to_string(),
                    schema_toml,
                    key_kind,
                    allow_rejects,
                })
                .await?
                .into_inner();
            let report = follow(stream).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            // On stderr, so stdout stays one JSON document for scripts; a column the
            // schema does not name is dropped, and an operator must see that without
            // reading the JSON.
            if let Some(line) = ignored_columns_line(&report) {
                eprintln!("{line}");
            }
            if report.get("committed").and_then(|v| v.as_bool()) != Some(true) {
                bail!(
                    "nothing imported: {}",
                    report.get("not_committed_reason").and_then(|v| v.as_str()).unwrap_or("see report")
                );
            }
            Ok(())
        }
        Command::Contract(command) => contract(command).await,
        Command::Run { config, computation, contract, dataset } => {
            let mut admin = admin(&config.config).await?;
            let stream = admin
                .run(proto::RunRequest { computation, contract_id: contract, dataset, values: Vec::new() })
                .await?
                .into_inner();
            let report = follow(stream).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Status(config) => {
            let status =
                admin(&config.config).await?.status(proto::StatusRequest::default()).await?.into_inner();
            print_status(&status);
            Ok(())
        }
        Command::Audit(AuditCommand::Show { config, last, json }) => {
            let reply =
                admin(&config.config).await?.audit_show(proto::AuditShowRequest { last }).await?.into_inner();
            if json {
                for record in reply.records_json {
                    println!("{record}");
                }
                return Ok(());
            }
            print_audit(&reply.records_json)
        }
        Command::Audit(AuditCommand::Verify { config, witnesses }) => {
            let reply = admin(&config.config)
                .await?
                .audit_verify(proto::AuditVerifyRequest { witnesses })
                .await?
                .into_inner();
            for line in &reply.witness_reports {
                println!("witness {line}");
            }
            if reply.ok && witnesses {
                println!("audit log intact: {} records; {}", reply.records, reply.detail);
                Ok(())
            } else if reply.ok {
                println!("audit log intact: {} records", reply.records);
                Ok(())
            } else {
                bail!("audit log does not verify: {}", reply.detail)
            }
        }
    }
}

fn init(data_dir: &Path, node_id: &NodeId, listen: &str) -> Result<()> {
    std::fs::create_dir_all(data_dir.join("secrets"))
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // The data directory holds raw records (the store) and keys: owner only.
    set_private_dir(data_dir)?;
    set_private_dir(&data_dir.join("secrets"))?;
    let secrets = NodeSecrets::create(data_dir, &mut rand::rngs::OsRng)?;
    let key = NodeKey::generate()?;
    key.write(&data_dir.join(identity::TLS_KEY_FILE))?;
    crate::console::auth::LoginToken::ensure(data_dir)?;
    let csr = pki::certificate_request(&key, node_id)?;
    std::fs::write(data_dir.join(identity::CSR_FILE), &csr)?;
    let config_path = data_dir.join("node.toml");
    if !config_path.exists() {
        let absolute = std::fs::canonicalize(data_dir)?;
        std::fs::write(
            &config_path,
            format!(
                "node_id = \"{node_id}\"\nlisten = \"{listen}\"\ndata_dir = \"{}\"\n\n# Add one [[peers]] table per node this node talks to:\n# [[peers]]\n# id = \"credit-center\"\n# address = \"credit-center.example:7400\"\n",
                absolute.display()
            ),
        )?;
    }
    println!("node {node_id} initialized in {}", data_dir.display());
    println!("identity public key (for contracts): {}", secrets.public_key());
    println!(
        "certificate request: {} (send it to the credit center)",
        data_dir.join(identity::CSR_FILE).display()
    );
    println!("configuration: {}", config_path.display());
    Ok(())
}

#[cfg(unix)]
fn set_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

#[cfg(not(unix))]
fn set_private_dir(_path: &Path) -> Result<()> {
    Ok(())
}

fn ca_paths(data_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let dir = data_dir.join(identity::CA_DIR);
    (dir.join("ca.crt"), dir.join("ca.key"), dir.join("index.json"))
}

fn write_crl(data_dir: &Path, ca: &AllianceCa, index: &mut Index) -> Result<()> {
    let now = SystemTime::now();
    let crl = ca.crl(
        &index.revoked_serials(),
        index.next_crl_number(),
        now,
        now + Duration::from_secs(30 * 86_400),
    )?;
    pki::write_file_atomic(&data_dir.join(identity::CRL_FILE), &crl)?;
    Ok(())
}

fn ca(command: CaCommand) -> Result<()> {
    match command {
        CaCommand::Init { data_dir, name } => {
            let (cert, key, index_path) = ca_paths(&data_dir);
            if cert.exists() {
                bail!("{} exists: the CA is already created", cert.display());
            }
            std::fs::create_dir_all(cert.parent().unwrap_or(&data_dir))?;
            let ca = AllianceCa::create(&name)?;
            ca.write(&cert, &key)?;
            let mut index = Index::default();
            index.write(&index_path)?;
            pki::write_file_atomic(&data_dir.join(identity::CA_CERT_FILE), ca.cert_pem().as_bytes())?;
            write_crl(&data_dir, &ca, &mut index)?;
            index.write(&index_path)?;
            println!(
                "alliance CA created: {} (give this certificate to every node)",
                data_dir.join(identity::CA_CERT_FILE).display()
            );
            Ok(())
        }
        CaCommand::Issue { data_dir, csr, node_id, days, out } => {
            let (cert, key, index_path) = ca_paths(&data_dir);
            let ca = AllianceCa::read(&cert, &key)?;
            let mut index = Index::read(&index_path)?;
            let request =
                std::fs::read_to_string(&csr).with_context(|| format!("reading {}", csr.display()))?;
            let issued = ca.issue(&request, node_id.as_ref(), days, index.next_serial())?;
            index.record(&issued)?;
            index.write(&index_path)?;
            std::fs::write(&out, &issued.pem)?;
            println!(
                "issued certificate serial {} for {} -> {}",
                issued.serial,
                issued.node_id,
                out.display()
            );
            Ok(())
        }
        CaCommand::List { data_dir, json } => {
            let (_, _, index_path) = ca_paths(&data_dir);
            let index = Index::read(&index_path)?;
            if json {
                println!("{}", index.to_json()?);
                return Ok(());
            }
            println!("{:<8} {:<24} {:<22} revoked", "serial", "node", "valid until (UTC)");
            for entry in &index.issued {
                let revoked = entry.revoked_at_unix.map_or_else(|| "-".to_string(), utc);
                println!(
                    "{:<8} {:<24} {:<22} {revoked}",
                    entry.serial,
                    entry.node_id,
                    utc(entry.not_after_unix)
                );
            }
            Ok(())
        }
        CaCommand::Revoke { data_dir, node_id } => {
            let (cert, key, index_path) = ca_paths(&data_dir);
            let ca = AllianceCa::read(&cert, &key)?;
            let mut index = Index::read(&index_path)?;
            let serials = index.revoke_node(&node_id, SystemTime::now());
            if serials.is_empty() {
                bail!("no unrevoked certificate for {node_id}");
            }
            write_crl(&data_dir, &ca, &mut index)?;
            index.write(&index_path)?;
            println!(
                "revoked serials {serials:?} of {node_id}; distribute {} to every node",
                data_dir.join(identity::CRL_FILE).display()
            );
            Ok(())
        }
    }
}

async fn serve(config_path: &Path) -> Result<()> {
    let config = NodeConfig::load(config_path)?;
    crate::server::check_data_dir(&config.data_dir)?;
    // The store first: its lock says whether a node already serves this directory,
    // which is the error to show rather than the port it also holds.
    let listen = config.listen;
    let (ctx, tls) = crate::server::open(config)?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
        }
    };
    // SIGHUP re-reads certificates and CRLs (after `ca revoke`, copy the new crl.der
    // and send SIGHUP: no restart needed).
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading certificates and revocation lists");
                    let _ = reload_tx.try_send(());
                }
            });
        }
        Err(e) => tracing::error!(error = %e, "cannot listen for SIGHUP; certificate reloads need a restart"),
    }
    crate::server::serve(ctx, &tls, listener, shutdown, reload_rx).await?;
    Ok(())
}

/// A client for this node's admin service, over the Unix socket in its data directory.
pub async fn admin(
    config_path: &Path,
) -> Result<proto::admin_client::AdminClient<tonic::transport::Channel>> {
    let config = NodeConfig::load(config_path)?;
    let channel = crate::admin_socket::connect(&config.data_dir).await?;
    Ok(crate::service::admin_client(channel))
}

/// Prints progress to stderr and returns the final report.
async fn follow(mut stream: tonic::Streaming<proto::Progress>) -> Result<serde_json::Value> {
    let mut last_stage = String::new();
    while let Some(message) = stream.next().await {
        let message = message.map_err(|status| anyhow::anyhow!("{}", status.message()))?;
        if !message.report_json.is_empty() {
            if !last_stage.is_empty() {
                eprintln!();
            }
            return Ok(serde_json::from_str(&message.report_json)?);
        }
        if message.stage != last_stage && !last_stage.is_empty() {
            eprintln!();
        }
        if message.total > 0 {
            eprint!(
                "\r{}: {}/{} ({:.0}%)",
                message.stage,
                message.done,
                message.total,
                100.0 * message.done as f64 / message.total as f64
            );
        } else {
            eprint!("\r{}: {}", message.stage, message.done);
        }
        last_stage = message.stage;
    }
    bail!("the node ended the operation without a report")
}

async fn contract(command: ContractCommand) -> Result<()> {
    let print_ack = |ack: proto::ContractAck| {
        println!("contract {}: {}", ack.contract_id, ack.state);
        if !ack.missing_signatures.is_empty() {
            println!("  waiting for signatures from: {}", ack.missing_signatures.join(", "));
        }
        for unreached in &ack.unreached {
            println!("  not reached: {unreached}");
        }
    };
    match command {
        ContractCommand::Propose { config, file } => {
            let contract_toml =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            print_ack(
                admin(&config.config)
                    .await?
                    .propose_contract(proto::ProposeRequest { contract_toml })
                    .await?
                    .into_inner(),
            );
        }
        ContractCommand::Sign { config, id } => {
            print_ack(
                admin(&config.config)
                    .await?
                    .sign_contract(proto::ContractQuery { contract_id: id })
                    .await?
                    .into_inner(),
            );
        }
        ContractCommand::Show { config, id } => {
            let view = admin(&config.config)
                .await?
                .show_contract(proto::ContractQuery { contract_id: id })
                .await?
                .into_inner();
            println!("contract {}: {}", view.contract_id, view.state);
            println!("signed by: {}", view.signed_by.join(", "));
            if !view.missing_signatures.is_empty() {
                println!("missing: {}", view.missing_signatures.join(", "));
            }
            println!("{}", view.document_json);
        }
        ContractCommand::List(config) => {
            let list = admin(&config.config)
                .await?
                .list_contracts(proto::ListContractsRequest {})
                .await?
                .into_inner();
            for c in list.contracts {
                println!(
                    "{:<32} {:<14} {:<20} {}",
                    c.contract_id,
                    c.kind,
                    c.state,
                    c.missing_signatures.join(",")
                );
            }
        }
        ContractCommand::Revoke { config, id, reason } => {
            print_ack(
                admin(&config.config)
                    .await?
                    .revoke_contract(proto::RevokeRequest { contract_id: id, reason })
                    .await?
                    .into_inner(),
            );
        }
    }
    Ok(())
}

fn print_status(status: &proto::StatusReply) {
    println!("node {}", status.node_id);
    println!("peers:");
    for p in &status.peers {
        println!(
            "  {:<20} {:<24} {:<12} {}",
            p.node_id,
            p.address,
            if p.reachable { "reachable" } else { "UNREACHABLE" },
            p.detail
        );
    }
    println!("datasets:");
    for d in &status.datasets {
        println!(
            "  {:<24} v{:<4} {:>9} rows  {}",
            d.name,
            d.version,
            d.rows,
            &d.digest[..16.min(d.digest.len())]
        );
    }
    println!("contracts:");
    for c in &status.contracts {
        println!("  {:<32} {:<14} {:<20} {}", c.contract_id, c.kind, c.state, c.missing_signatures.join(","));
    }
    println!("recent jobs:");
    for j in &status.jobs {
        println!(
            "  #{:<6} {:<8} {:<28} {:<12} {:<12} {}",
            j.job_id, j.kind, j.contract_id, j.role, j.state, j.detail
        );
        if let Ok(observed) = serde_json::from_str::<serde_json::Value>(&j.observed_json) {
            // Only the classes the job saw: "received tags=2997 evaluated_elements=2000 ...".
            let side = |name: &str| -> String {
                observed[name]
                    .as_object()
                    .map(|counts| {
                        counts
                            .iter()
                            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                            .map(|(class, n)| format!("{class}={n}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default()
            };
            println!(
                "          received: {} | sent: {} | wrote: {}",
                side("received"),
                side("sent"),
                side("written")
            );
        }
    }
    println!("audit records: {}", status.audit_records);
}
