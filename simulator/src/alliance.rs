//! A whole alliance on one machine: one real node process per party, each with its own
//! data directory, keys, certificate from a throwaway alliance CA run by the credit
//! center's node, and configuration listing every other node on 127.0.0.1. Setup goes
//! through the node's own command line (`init`, `ca init`, `ca issue`) exactly as an
//! operator would do it; operations go through each node's admin service over mutual
//! TLS. Used by the simulator and by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio_stream::StreamExt;
use xmcredit_crypto::NodeId;
use xmcredit_node::proto;

/// How to start the node program.
#[derive(Debug, Clone)]
pub enum NodeProgram {
    /// A node binary (`xmcredit-node`).
    Binary(PathBuf),
    /// This executable with a leading argument that makes it act as the node binary
    /// (the simulator runs `xmcredit-simulator node ...`).
    SelfWith(String),
}

impl NodeProgram {
    pub fn command(&self) -> Result<Command> {
        Ok(match self {
            NodeProgram::Binary(path) => Command::new(path),
            NodeProgram::SelfWith(arg) => {
                let mut command = Command::new(std::env::current_exe().context("locating this executable")?);
                command.arg(arg);
                command
            }
        })
    }

    /// Runs one setup command to completion; its output goes to `log`.
    pub fn run(&self, args: &[&str], log: &Path) -> Result<String> {
        let output = self
            .command()?
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running node {args:?}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        std::fs::write(log, format!("$ node {}\n{stdout}{stderr}", args.join(" ")))?;
        if !output.status.success() {
            bail!("node {} failed: {}{}", args.join(" "), stdout, stderr);
        }
        Ok(stdout)
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the node binds it right after).
pub fn free_port() -> Result<u16> {
    // Ports below the kernel's ephemeral range (32768-60999 on Linux): a port the
    // kernel hands out for port 0 can be taken by an outgoing connection's local port
    // before the node binds it, and tests here open hundreds of connections (floods).
    // A counter per process, from a start that differs between processes, keeps
    // parallel tests apart.
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = 20_000 + (std::process::id() % 600) * 20;
    for _ in 0..2_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (start - 20_000 + offset) % 12_000;
        let port = u16::try_from(port).unwrap_or(20_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One node of the alliance.
#[derive(Debug)]
pub struct NodeHandle {
    pub id: NodeId,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub address: String,
    /// The console's HTTP address (`/metrics`, `/healthz`, the web console).
    pub console: String,
    /// Ed25519 identity public key (hex), for contracts.
    pub public_key: String,
    child: Option<Child>,
    program: NodeProgram,
    extra_env: Vec<(String, String)>,
}

impl NodeHandle {
    /// Starts `serve` and waits until the admin service answers.
    pub async fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("node.log"))?;
        let mut command = self.program.command()?;
        command
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        for (key, value) in &self.extra_env {
            command.env(key, value);
        }
        self.child = Some(command.spawn().context("starting node")?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "node {} exited at start ({status}); see {}",
                        self.id,
                        self.dir.join("node.log").display()
                    );
                }
            }
            if let Ok(mut admin) = self.admin().await {
                if admin.status(proto::StatusRequest::default()).await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} did not answer within 30 s; see {}",
                    self.id,
                    self.dir.join("node.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The console login token the node wrote in its data directory.
    pub fn console_token(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.dir.join(xmcredit_node::console::TOKEN_FILE))?.trim().to_string())
    }

    /// Sets an environment variable for the next start (e.g. a clock offset).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.to_string(), value.to_string()));
    }

    /// The node's admin client (the CLI's own connection path).
    pub async fn admin(&self) -> Result<proto::admin_client::AdminClient<tonic::transport::Channel>> {
        xmcredit_node::cli::admin(&self.config).await
    }

    /// SIGKILL: the node gets no chance to clean up.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            child.wait()?;
        }
        Ok(())
    }

    /// The node process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak and current resident memory of the node process in KiB (VmHWM, VmRSS from
    /// /proc), where the platform has them.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }

    /// Resets the peak-memory counter (VmHWM) so the next reading covers only what
    /// follows (Linux: `echo 5 > /proc/PID/clear_refs`).
    pub fn reset_peak_memory(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Imports a CSV through the admin service; returns the report.
    pub async fn import(
        &self,
        dataset: &str,
        schema: &Path,
        csv: &Path,
        allow_rejects: bool,
    ) -> Result<serde_json::Value> {
        let schema_toml = std::fs::read_to_string(schema)?;
        let stream = self
            .admin()
            .await?
            .import(proto::ImportRequest {
                dataset: dataset.to_string(),
                csv_path: std::fs::canonicalize(csv)?.display().to_string(),
                schema_toml,
                key_kind: String::new(),
                allow_rejects,
            })
            .await?
            .into_inner();
        final_report(stream).await
    }

    /// Runs a computation as this node's role; returns the report.
    pub async fn run(&self, computation: &str, contract: &str) -> Result<serde_json::Value> {
        let stream = self
            .admin()
            .await?
            .run(proto::RunRequest {
                computation: computation.to_string(),
                contract_id: contract.to_string(),
                dataset: String::new(),
                values: Vec::new(),
            })
            .await?
            .into_inner();
        final_report(stream).await
    }

    pub async fn propose(&self, contract_toml: &str) -> Result<proto::ContractAck> {
        Ok(self
            .admin()
            .await?
            .propose_contract(proto::ProposeRequest { contract_toml: contract_toml.to_string() })
            .await?
            .into_inner())
    }

    pub async fn sign(&self, contract: &str) -> Result<proto::ContractAck> {
        Ok(self
            .admin()
            .await?
            .sign_contract(proto::ContractQuery { contract_id: contract.to_string() })
            .await?
            .into_inner())
    }

    pub async fn status(&self) -> Result<proto::StatusReply> {
        Ok(self.admin().await?.status(proto::StatusRequest::default()).await?.into_inner())
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Reads a progress stream to its final report; a gRPC error becomes the error.
pub async fn final_report(mut stream: tonic::Streaming<proto::Progress>) -> Result<serde_json::Value> {
    while let Some(message) = stream.next().await {
        let message = message.map_err(|status| anyhow::anyhow!("{}", status.message()))?;
        if !message.report_json.is_empty() {
            return Ok(serde_json::from_str(&message.report_json)?);
        }
    }
    bail!("stream ended without a report")
}

/// The nodes of a running alliance; the first is the credit center (it runs the CA).
#[derive(Debug)]
pub struct Alliance {
    pub nodes: Vec<NodeHandle>,
    pub base: PathBuf,
    pub program: NodeProgram,
    /// Extra `[limits]` lines for every node's configuration (benches raise the
    /// per-dataset lookup ceiling to their set sizes).
    pub limits_toml: String,
}

impl Alliance {
    /// Initializes every node, issues certificates from the credit center's CA, writes
    /// configurations (each node lists all others as peers) and starts them all.
    pub async fn create(
        program: NodeProgram,
        base: &Path,
        ids: &[&str],
        require_approval: bool,
    ) -> Result<Self> {
        Self::create_with_limits(program, base, ids, require_approval, "").await
    }

    /// [`Alliance::create`] with extra `[limits]` lines in every node's configuration.
    pub async fn create_with_limits(
        program: NodeProgram,
        base: &Path,
        ids: &[&str],
        require_approval: bool,
        limits_toml: &str,
    ) -> Result<Self> {
        let mut nodes = Vec::new();
        for id in ids {
            let id = NodeId::new(*id)?;
            let dir = base.join(id.as_str());
            std::fs::create_dir_all(&dir)?;
            let port = free_port()?;
            let address = format!("127.0.0.1:{port}");
            let console = format!("127.0.0.1:{}", free_port()?);
            program.run(
                &[
                    "init",
                    "--data-dir",
                    &dir.display().to_string(),
                    "--node-id",
                    id.as_str(),
                    "--listen",
                    &address,
                ],
                &dir.join("init.log"),
            )?;
            let public_key = std::fs::read_to_string(dir.join("identity.pub"))?.trim().to_string();
            nodes.push(NodeHandle {
                config: dir.join("node.toml"),
                id,
                dir,
                address,
                console,
                public_key,
                child: None,
                program: program.clone(),
                extra_env: Vec::new(),
            });
        }
        let ca_dir = nodes.first().map(|n| n.dir.clone()).context("an alliance needs nodes")?;
        let ca_dir_text = ca_dir.display().to_string();
        program.run(&["ca", "init", "--data-dir", &ca_dir_text], &ca_dir.join("ca-init.log"))?;
        for node in &nodes {
            let dir = node.dir.display().to_string();
            program.run(
                &[
                    "ca",
                    "issue",
                    "--data-dir",
                    &ca_dir_text,
                    "--csr",
                    &format!("{dir}/tls.csr"),
                    "--node-id",
                    node.id.as_str(),
                    "--out",
                    &format!("{dir}/tls.crt"),
                ],
                &node.dir.join("ca-issue.log"),
            )?;
            if node.dir != ca_dir {
                std::fs::copy(ca_dir.join("ca.crt"), node.dir.join("ca.crt"))?;
                std::fs::copy(ca_dir.join("crl.der"), node.dir.join("crl.der"))?;
            }
        }
        let mut alliance =
            Self { nodes, base: base.to_path_buf(), program, limits_toml: limits_toml.to_string() };
        alliance.write_configs(require_approval)?;
        for node in &mut alliance.nodes {
            node.start().await?;
        }
        Ok(alliance)
    }

    /// Writes each node's configuration with every other node as a peer.
    pub fn write_configs(&self, require_approval: bool) -> Result<()> {
        for node in &self.nodes {
            let mut text = format!(
                "node_id = \"{}\"\nlisten = \"{}\"\ndata_dir = \"{}\"\n\n[timeouts]\nconnect_secs = 5\nround_secs = 60\n\n[policy]\nrequire_operator_approval = {require_approval}\n",
                node.id,
                node.address,
                std::fs::canonicalize(&node.dir)?.display()
            );
            // Revocation and witnessing on the simulator's short clock: CRLs are
            // re-read (and fetched from the CA node) every 2 s, audit heads sent every 2 s.
            let ca_node = &self.nodes[0].id;
            text.push_str("\n[tls]\ncrl_refresh_secs = 2\n");
            if &node.id != ca_node {
                text.push_str(&format!("crl_source = \"{ca_node}\"\n"));
            }
            text.push_str("\n[audit]\nhead_period_secs = 2\n");
            text.push_str(&format!("\n[console]\nenabled = true\nlisten = \"{}\"\n", node.console));
            if !self.limits_toml.is_empty() {
                text.push_str(&format!("\n[limits]\n{}\n", self.limits_toml));
            }
            for peer in self.nodes.iter().filter(|p| p.id != node.id) {
                text.push_str(&format!(
                    "\n[[peers]]\nid = \"{}\"\naddress = \"{}\"\nidentity_key = \"{}\"\n",
                    peer.id, peer.address, peer.public_key
                ));
            }
            std::fs::write(&node.config, text)?;
        }
        Ok(())
    }

    pub fn node(&self, id: &str) -> Result<&NodeHandle> {
        self.nodes.iter().find(|n| n.id.as_str() == id).with_context(|| format!("no node {id}"))
    }

    pub fn node_mut(&mut self, id: &str) -> Result<&mut NodeHandle> {
        self.nodes.iter_mut().find(|n| n.id.as_str() == id).with_context(|| format!("no node {id}"))
    }

    /// Proposes `contract_toml` from `proposer` and has every other party sign it.
    pub async fn agree(&self, proposer: &str, contract_toml: &str, id: &str, signers: &[&str]) -> Result<()> {
        self.node(proposer)?.propose(contract_toml).await.with_context(|| format!("proposing {id}"))?;
        let mut last = None;
        for signer in signers {
            last = Some(self.node(signer)?.sign(id).await.with_context(|| format!("{signer} signing {id}"))?);
        }
        let state = match last {
            Some(ack) => ack.state,
            None => {
                self.node(proposer)?
                    .admin()
                    .await?
                    .show_contract(proto::ContractQuery { contract_id: id.into() })
                    .await?
                    .into_inner()
                    .state
            }
        };
        if !state.starts_with("active") {
            bail!("contract {id} is {state} after every party signed");
        }
        Ok(())
    }

    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            let _ = node.stop();
        }
    }
}
