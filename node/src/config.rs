//! The node's configuration: one TOML file, unknown keys refused, every default
//! documented here and in `config.sample.toml` (which a test parses).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use xmcredit_crypto::sign::IdentityPublicKey;
use xmcredit_crypto::NodeId;

use crate::NodeError;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id; must equal the DNS name in its certificate.
    pub node_id: NodeId,
    /// Address the gRPC listener binds (peers and the operator CLI connect here).
    pub listen: SocketAddr,
    /// Where keys, certificates and the store live. Relative paths below are relative
    /// to it.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub tls: TlsPaths,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub store: StoreConfig,
    /// The operator's web console, `/metrics` and `/healthz` (off by default).
    #[serde(default)]
    pub console: crate::console::ConsoleConfig,
    /// The other nodes of the alliance this node talks to.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
}

/// Certificate and key files. Defaults: `ca.crt`, `tls.crt`, `secrets/tls.key`, and a
/// CRL at `crl.der` if that file exists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    #[serde(default = "default_ca_cert")]
    pub ca_cert: PathBuf,
    #[serde(default = "default_cert")]
    pub cert: PathBuf,
    #[serde(default = "default_key")]
    pub key: PathBuf,
    #[serde(default = "default_crl")]
    pub crl: PathBuf,
    /// The peer that runs the alliance CA and serves its CRL over gRPC (`FetchCrl`).
    /// When set, the node fetches the CRL every `crl_refresh_secs` and on SIGHUP,
    /// installs it if it verifies under `ca_cert` and is not older than the one in
    /// force, and closes live connections of every peer it revokes. Default: none (the
    /// CRL file is still re-read every period, so copying `crl.der` by hand works).
    #[serde(default)]
    pub crl_source: Option<NodeId>,
    /// Seconds between CRL refreshes. Default 300.
    #[serde(default = "default_crl_refresh_secs")]
    pub crl_refresh_secs: u64,
}

fn default_crl_refresh_secs() -> u64 {
    300
}

fn default_ca_cert() -> PathBuf {
    "ca.crt".into()
}
fn default_cert() -> PathBuf {
    "tls.crt".into()
}
fn default_key() -> PathBuf {
    "secrets/tls.key".into()
}
fn default_crl() -> PathBuf {
    "crl.der".into()
}

impl Default for TlsPaths {
    fn default() -> Self {
        Self {
            ca_cert: default_ca_cert(),
            cert: default_cert(),
            key: default_key(),
            crl: default_crl(),
            crl_source: None,
            crl_refresh_secs: default_crl_refresh_secs(),
        }
    }
}

/// Timeouts, in seconds. Defaults: connect 5, protocol round 120, a session's first
/// message 10 (a stream that opens and says nothing is dropped then), shutdown grace 3
/// (SIGTERM cancels sessions still running after it). The server-side TLS handshake
/// deadline is `limits.handshake_secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "default_connect_secs")]
    pub connect_secs: u64,
    #[serde(default = "default_round_secs")]
    pub round_secs: u64,
    #[serde(default = "default_hello_secs")]
    pub hello_secs: u64,
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
}

fn default_hello_secs() -> u64 {
    10
}
fn default_shutdown_grace_secs() -> u64 {
    3
}

fn default_connect_secs() -> u64 {
    5
}
fn default_round_secs() -> u64 {
    120
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_secs: default_connect_secs(),
            round_secs: default_round_secs(),
            hello_secs: default_hello_secs(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
        }
    }
}

impl Timeouts {
    pub fn connect(&self) -> Duration {
        Duration::from_secs(self.connect_secs)
    }
    pub fn round(&self) -> Duration {
        Duration::from_secs(self.round_secs)
    }
    /// How long a session's opening message may take: the hello timeout, never longer
    /// than a round.
    pub fn hello(&self) -> Duration {
        Duration::from_secs(self.hello_secs.min(self.round_secs))
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// What the node may do on its own. Default: a proposal from a peer is stored but not
/// signed until the operator runs `contract sign` (banks expect that).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default = "default_true")]
    pub require_operator_approval: bool,
}

fn default_true() -> bool {
    true
}

impl Default for Policy {
    fn default() -> Self {
        Self { require_operator_approval: true }
    }
}

/// Local resource limits, whatever a contract allows, and what a peer may cost this
/// node (issue 11). Defaults: sets of at most 2^22 elements; 512 authenticated
/// connections, 128 handshakes in progress (the oldest dropped for a newcomer), 32
/// connections per peer, 32 streams per connection, 16 protocol sessions per peer at
/// once; TLS handshake and identity proof within 10 s, HTTP/2 preface within 10 s,
/// connections silent for 300 s closed; ids a peer sends at most 128 bytes, contract
/// documents 256 KiB; 50,000 lookups per querier per dataset per day across contracts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_max_set_size")]
    pub max_set_size: u64,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_pending_handshakes")]
    pub max_pending_handshakes: usize,
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: u32,
    #[serde(default = "default_max_sessions_per_peer")]
    pub max_sessions_per_peer: usize,
    #[serde(default = "default_handshake_secs")]
    pub handshake_secs: u64,
    #[serde(default = "default_preface_secs")]
    pub preface_secs: u64,
    #[serde(default = "default_idle_secs")]
    pub idle_secs: u64,
    /// Most elements one querier may have this node evaluate per day over one of its
    /// datasets, across every contract (issue 10: a second contract must not multiply a
    /// bank's lookups). Also the ceiling on the daily quotas this node signs: the
    /// quotas of all its contracts that give one querier one dataset must sum to at
    /// most this. Default 50,000 (a bank's daily applicant flow, with room).
    #[serde(default = "default_dataset_lookups_per_day")]
    pub dataset_lookups_per_day: u64,
    /// Most ε (in thousandths) one client may spend in any 24 hours on noisy PSI
    /// cardinalities over one of this node's datasets: the sum over the noisy contracts
    /// this node signs as server for that client and dataset of `epsilon_milli` times
    /// the runs 24 hours can hold (one per epoch: `ceil(86 400 / epoch_seconds) + 1`,
    /// 2 with daily epochs). Default 2,000 (one daily contract at ε = 1).
    #[serde(default = "default_dataset_epsilon_milli_per_day")]
    pub dataset_epsilon_milli_per_day: u64,
}

fn default_dataset_lookups_per_day() -> u64 {
    50_000
}

fn default_dataset_epsilon_milli_per_day() -> u64 {
    2_000
}

fn default_max_set_size() -> u64 {
    1 << 22
}
fn default_max_connections() -> usize {
    512
}
fn default_max_pending_handshakes() -> usize {
    128
}
fn default_max_connections_per_peer() -> usize {
    32
}
fn default_max_streams_per_connection() -> u32 {
    32
}
fn default_max_sessions_per_peer() -> usize {
    16
}
fn default_handshake_secs() -> u64 {
    10
}
fn default_preface_secs() -> u64 {
    10
}
fn default_idle_secs() -> u64 {
    300
}

/// Longest id or name a peer may send in a request (contract ids, node ids); checked
/// before anything is logged or stored.
pub const MAX_ID_BYTES: usize = 128;
/// Largest contract document (canonical bytes) a peer may send.
pub const MAX_CONTRACT_BYTES: usize = 256 * 1024;
/// Largest revocation a peer may send.
pub const MAX_REVOCATION_BYTES: usize = 8 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_set_size: default_max_set_size(),
            max_connections: default_max_connections(),
            max_pending_handshakes: default_max_pending_handshakes(),
            max_connections_per_peer: default_max_connections_per_peer(),
            max_streams_per_connection: default_max_streams_per_connection(),
            max_sessions_per_peer: default_max_sessions_per_peer(),
            handshake_secs: default_handshake_secs(),
            preface_secs: default_preface_secs(),
            idle_secs: default_idle_secs(),
            dataset_lookups_per_day: default_dataset_lookups_per_day(),
            dataset_epsilon_milli_per_day: default_dataset_epsilon_milli_per_day(),
        }
    }
}

impl Limits {
    /// The transport's share of these limits.
    pub fn server(&self) -> crate::transport::ServerLimits {
        crate::transport::ServerLimits {
            max_connections: self.max_connections,
            max_pending_handshakes: self.max_pending_handshakes,
            max_connections_per_peer: self.max_connections_per_peer,
            max_streams_per_connection: self.max_streams_per_connection,
            handshake: Duration::from_secs(self.handshake_secs),
            preface: Duration::from_secs(self.preface_secs),
            idle: Duration::from_secs(self.idle_secs),
        }
    }
}

/// The sled store and the node's in-memory caches. Defaults: a 64 MiB sled page cache
/// and 96 MiB of evaluated PSI server sets (32 bytes per element plus labels, so a set
/// of 2^20 elements without labels takes 32 MiB).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// Budget of the PSI server's evaluated-set cache; 0 caches nothing.
    #[serde(default = "default_psi_cache_mb")]
    pub psi_cache_mb: u64,
}

fn default_psi_cache_mb() -> u64 {
    96
}

fn default_cache_mb() -> u64 {
    64
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { cache_mb: default_cache_mb(), psi_cache_mb: default_psi_cache_mb() }
    }
}

/// Who vouches for this node's audit chain. After each job and every
/// `head_period_secs`, the node sends its signed chain head to each witness; `audit
/// verify --witnesses` fetches them back. Default witnesses: the peer `credit-center`
/// (if configured and not this node) and the first other configured peer by id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default)]
    pub witnesses: Option<Vec<NodeId>>,
    /// Default 300.
    #[serde(default = "default_head_period_secs")]
    pub head_period_secs: u64,
}

fn default_head_period_secs() -> u64 {
    300
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { witnesses: None, head_period_secs: default_head_period_secs() }
    }
}

/// A peer node: its id (which its certificate must name), address, and the Ed25519
/// identity key it must prove on every connection (hex, as its `identity.pub`). Without
/// `identity_key`, the first key the peer proves is pinned in the store and any other
/// key is refused later (trust on first use); contracts always pin their own keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: NodeId,
    pub address: String,
    #[serde(default)]
    pub identity_key: Option<String>,
}

impl PeerConfig {
    /// The configured identity key (checked to parse when the file was loaded).
    pub fn identity_key(&self) -> Option<IdentityPublicKey> {
        self.identity_key.as_deref().and_then(|hex| IdentityPublicKey::from_hex(hex).ok())
    }
}

impl NodeConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Config { path: path.to_path_buf(), reason: e.to_string() })?;
        Self::parse(&text).map_err(|reason| NodeError::Config { path: path.to_path_buf(), reason })
    }

    /// Parses configuration text; the error names the offending key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.id == self.node_id {
                return Err(format!("peers[{i}].id: {} is this node itself", peer.id));
            }
            if self.peers[..i].iter().any(|p| p.id == peer.id) {
                return Err(format!("peers[{i}].id: {} is listed twice", peer.id));
            }
            if let Some(key) = &peer.identity_key {
                IdentityPublicKey::from_hex(key).map_err(|e| format!("peers[{i}].identity_key: {e}"))?;
            }
        }
        for (i, witness) in self.audit.witnesses.iter().flatten().enumerate() {
            if self.peer(witness).is_none() {
                return Err(format!("audit.witnesses[{i}]: {witness} is not a configured peer"));
            }
        }
        if let Some(source) = &self.tls.crl_source {
            if self.peer(source).is_none() {
                return Err(format!("tls.crl_source: {source} is not a configured peer"));
            }
        }
        let l = &self.limits;
        if l.max_connections == 0
            || l.max_pending_handshakes == 0
            || l.max_connections_per_peer == 0
            || l.max_streams_per_connection == 0
            || l.max_sessions_per_peer == 0
            || l.handshake_secs == 0
            || l.preface_secs == 0
            || l.idle_secs == 0
            || self.timeouts.hello_secs == 0
        {
            return Err(
                "limits: every connection, stream and session limit and deadline must be at least 1".into()
            );
        }
        if self.store.cache_mb == 0 {
            return Err("store.cache_mb: at least 1".into());
        }
        if self.tls.crl_refresh_secs == 0 || self.audit.head_period_secs == 0 {
            return Err("tls.crl_refresh_secs and audit.head_period_secs must be at least 1".into());
        }
        if self.timeouts.round_secs == 0 || self.timeouts.connect_secs == 0 {
            return Err("timeouts: must be at least 1 second".into());
        }
        Ok(())
    }

    /// A path from the config, resolved against the data directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.data_dir.join(path)
        }
    }

    pub fn peer(&self, id: &NodeId) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| &p.id == id)
    }

    /// The witnesses of this node's audit chain (see [`AuditConfig`]).
    pub fn witnesses(&self) -> Vec<NodeId> {
        if let Some(witnesses) = &self.audit.witnesses {
            return witnesses.clone();
        }
        let mut ids: Vec<&NodeId> = self.peers.iter().map(|p| &p.id).collect();
        ids.sort();
        let mut chosen = Vec::new();
        if let Some(cc) = ids.iter().find(|id| id.as_str() == "credit-center") {
            chosen.push((*cc).clone());
        }
        if let Some(other) = ids.iter().find(|id| id.as_str() != "credit-center") {
            chosen.push((*other).clone());
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_sample_parses() {
        let text = include_str!("../config.sample.toml");
        let config = NodeConfig::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.node_id.as_str(), "bank-a");
        assert_eq!(config.peers.len(), 2);
        assert!(config.policy.require_operator_approval);
        assert_eq!(config.timeouts.round_secs, 120);
    }

    #[test]
    fn errors_name_the_key() {
        let base = "node_id = \"bank-a\"\nlisten = \"127.0.0.1:1\"\ndata_dir = \"/tmp/x\"\n";
        let unknown = NodeConfig::parse(&format!("{base}colour = 1\n")).err().unwrap_or_default();
        assert!(unknown.contains("colour"), "{unknown}");
        let bad_id = NodeConfig::parse(&base.replace("bank-a", "Bank A")).err().unwrap_or_default();
        assert!(bad_id.contains("node_id") || bad_id.contains("node id"), "{bad_id}");
        let bad_listen = NodeConfig::parse(&base.replace("127.0.0.1:1", "nowhere")).err().unwrap_or_default();
        assert!(bad_listen.contains("listen"), "{bad_listen}");
        let self_peer = NodeConfig::parse(&format!("{base}[[peers]]\nid = \"bank-a\"\naddress = \"x:1\"\n"))
            .err()
            .unwrap_or_default();
        assert!(self_peer.contains("peers[0].id"), "{self_peer}");
    }
}
