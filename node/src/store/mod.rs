//! The node's state in sled, under `<data_dir>/store`.
//!
//! Key layout (every tree's keys are byte strings; `‖` is concatenation, integers are
//! big-endian so keys sort numerically):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `layout` | `"version"` | u32: the store layout ([`STORE_LAYOUT`]) |
//! | `dataset_blocks` | name ‖ 0x00 ‖ version u64 ‖ 0x00 ‖ block u32 | a block of rows ([`blocks`]) |
//! | `dataset_meta` | name ‖ 0x00 ‖ version u64 | JSON [`DatasetVersion`] |
//! | `dataset_current` | name | version u64 |
//! | `contracts` | contract id | JSON [`StoredContract`] |
//! | `quotas` | contract ‖ 0x00 ‖ querier ‖ 0x00 ‖ day u64 | count u64 |
//! | `jobs` | job id u64 | JSON [`JobRecord`] |
//! | `sessions` | session id (16 bytes) | contract id (replay refusal) |
//! | `audit` | seq u64 | JSON audit record |
//! | `secagg_inputs` | contract ‖ 0x00 ‖ epoch u64 | session id that got this node's masked input |
//! | `lookup_vectors` | contract ‖ 0x00 ‖ epoch u64 | digest of the one lookup vector this provider published |
//! | `peer_keys` | node id | Ed25519 key pinned on first sight (peers configured without `identity_key`) |
//! | `witnessed_heads` | node id ‖ 0x00 ‖ seq u64 | JSON [`SignedHead`] another node sent this witness |
//! | `job_summaries` | job id u64 | JSON [`JobSummary`] (the console's jobs page) |
//! | `import_reports` | seq u64 | JSON [`StoredImportReport`] (the last 50 imports) |
//!
//! Consistency after a crash: a dataset version becomes visible only when its meta
//! record turns `committed` and `dataset_current` points at it, in one sled batch;
//! blocks of a version still `importing` at startup are deleted. A job still `running`
//! at startup is marked `interrupted` and audited.

mod audit;
mod blocks;
mod console;
mod contracts;
mod datasets;
mod jobs;
mod layout;
mod lookup;
mod peers;
mod quotas;
mod rowcodec;
mod secagg;
mod witness;

pub use audit::AuditLog;
pub use blocks::{BlockIter, DatasetWriter, RowBlock, BLOCK_ROWS, IMPORT_PAUSE_VAR};
pub use console::{JobSummary, StoredImportReport};
pub use contracts::{ContractState, StoredContract};
pub use datasets::{DatasetRow, DatasetVersion, VersionState};
pub use jobs::{JobRecord, JobState};
pub use layout::STORE_LAYOUT;
pub use peers::Pin;
pub use quotas::QuotaRefusal;
pub use rowcodec::RowCodec;
pub use witness::{SignedHead, Witnessed, HEADS_KEPT_PER_NODE};

use std::path::Path;
use std::sync::Mutex;

use crate::NodeError;

/// sled page cache size unless the configuration says otherwise (`store.cache_mb`).
pub const STORE_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Handle to the node's sled database and its trees.
#[derive(Debug)]
pub struct Store {
    db: sled::Db,
    dataset_blocks: sled::Tree,
    dataset_meta: sled::Tree,
    dataset_current: sled::Tree,
    contracts: sled::Tree,
    quotas: sled::Tree,
    jobs: sled::Tree,
    sessions: sled::Tree,
    audit: sled::Tree,
    peer_keys: sled::Tree,
    witnessed_heads: sled::Tree,
    /// Serializes audit appends so sequence numbers and hash links never fork.
    audit_lock: Mutex<()>,
    /// Serializes contract read-modify-writes (see `update_contract`).
    contract_lock: Mutex<()>,
    /// Serializes dataset version allocation and writing: two imports of one dataset
    /// must not take the same version number.
    import_lock: Mutex<()>,
}

impl Store {
    /// Opens (or creates) the store with the default page cache.
    pub fn open(dir: &Path) -> Result<Self, NodeError> {
        Self::open_with_cache(dir, STORE_CACHE_BYTES)
    }

    /// Opens (or creates) the store with a page cache of `cache_bytes`
    /// (`store.cache_mb` in the configuration).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, NodeError> {
        // sled's default page cache is 1 GiB; a node's working set is far smaller, and
        // large imports would otherwise hold that much resident.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| NodeError::store("open", e))?;
        layout::check_or_set(&db, dir)?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| NodeError::store("open tree", e));
        let store = Self {
            dataset_blocks: tree("dataset_blocks")?,
            dataset_meta: tree("dataset_meta")?,
            dataset_current: tree("dataset_current")?,
            contracts: tree("contracts")?,
            quotas: tree("quotas")?,
            jobs: tree("jobs")?,
            sessions: tree("sessions")?,
            audit: tree("audit")?,
            peer_keys: tree("peer_keys")?,
            witnessed_heads: tree("witnessed_heads")?,
            audit_lock: Mutex::new(()),
            contract_lock: Mutex::new(()),
            import_lock: Mutex::new(()),
            db,
        };
        Ok(store)
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<(), NodeError> {
        self.db.flush().map_err(|e| NodeError::store("flush", e))?;
        Ok(())
    }

    /// Records a session id as used; refuses one seen before (a replayed session).
    pub fn claim_session(&self, session: &[u8; 16], contract: &str) -> Result<(), NodeError> {
        let previous = self
            .sessions
            .compare_and_swap(session, None as Option<&[u8]>, Some(contract.as_bytes()))
            .map_err(|e| NodeError::store("claim session", e))?;
        if previous.is_err() {
            return Err(NodeError::Replay { session: hex::encode(session) });
        }
        Ok(())
    }
}

/// `a ‖ 0x00 ‖ b`: names and ids never contain NUL, so prefixes cannot collide.
fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, NodeError> {
    serde_json::to_vec(value).map_err(|e| NodeError::Internal(format!("encoding a store record: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, NodeError> {
    serde_json::from_slice(bytes).map_err(|e| NodeError::Corrupt { what, reason: e.to_string() })
}

/// Test support: sled lets go of its file lock when its flusher thread drops the
/// database, a moment after the last handle, so a test that reopens a store at once can
/// find the lock still held. Retries `open` while it fails on the lock (up to 2 s).
#[cfg(test)]
pub(crate) fn once_released<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    for _ in 0..200 {
        match open() {
            Err(e) if e.to_string().contains("WouldBlock") || e.to_string().contains("acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
    open()
}
