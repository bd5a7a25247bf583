//! Datasets: versions of imported CSV files, visible only once fully written.

use serde::{Deserialize, Serialize};
use xmcredit_contracts::data::{DatasetSchema, Value};

use super::{from_json, join, to_json, Store};
use crate::NodeError;

/// Whether a version's rows are all there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    Importing,
    Committed,
    /// An import that never finished (the node stopped); its rows were removed at the
    /// next start. The record stays so the version number is never reused.
    Abandoned,
}

/// What the store knows about one version of a dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetVersion {
    pub name: String,
    pub version: u64,
    pub schema: DatasetSchema,
    pub rows: u64,
    /// SHA-256 over the rows' encodings in key order (`store::blocks`), hex.
    pub digest: String,
    pub imported_unix: u64,
    pub source: String,
    pub state: VersionState,
    /// Rows per block (every block but the last is full).
    pub block_rows: u32,
    pub blocks: u64,
}

/// One row: its key (a normalized entity code or another id) and values in schema order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRow {
    pub key: String,
    pub values: Vec<Value>,
}

impl Store {
    /// The highest version number ever started for `name` (committed or not).
    pub(super) fn latest_version(&self, name: &str) -> Result<Option<u64>, NodeError> {
        let prefix = join(&[name.as_bytes(), b""]);
        let last = self.dataset_meta.scan_prefix(&prefix).keys().last();
        match last {
            None => Ok(None),
            Some(key) => {
                let key = key.map_err(|e| NodeError::store("scan versions", e))?;
                Ok(Some(version_from_key(&key[prefix.len()..])?))
            }
        }
    }

    /// The current (committed) version of a dataset.
    pub fn current_dataset(&self, name: &str) -> Result<Option<DatasetVersion>, NodeError> {
        let Some(version) =
            self.dataset_current.get(name.as_bytes()).map_err(|e| NodeError::store("read", e))?
        else {
            return Ok(None);
        };
        let version = version_from_key(&version)?;
        let meta = self
            .dataset_meta
            .get(join(&[name.as_bytes(), &version.to_be_bytes()]))
            .map_err(|e| NodeError::store("read", e))?
            .ok_or(NodeError::Corrupt {
                what: "dataset meta",
                reason: format!("{name} v{version} missing"),
            })?;
        Ok(Some(from_json(&meta, "dataset meta")?))
    }

    /// Every dataset's current version.
    pub fn datasets(&self) -> Result<Vec<DatasetVersion>, NodeError> {
        let mut out = Vec::new();
        for entry in self.dataset_current.iter().keys() {
            let name = entry.map_err(|e| NodeError::store("scan datasets", e))?;
            if let Some(version) = self.current_dataset(&String::from_utf8_lossy(&name))? {
                out.push(version);
            }
        }
        Ok(out)
    }

    /// All versions (committed or importing) of a dataset, for inspection and tests.
    pub fn dataset_versions(&self, name: &str) -> Result<Vec<DatasetVersion>, NodeError> {
        self.dataset_meta
            .scan_prefix(join(&[name.as_bytes(), b""]))
            .values()
            .map(|v| from_json(&v.map_err(|e| NodeError::store("scan", e))?, "dataset meta"))
            .collect()
    }

    /// Removes the rows of versions that never committed and marks them abandoned;
    /// returns what was removed.
    pub fn remove_partial_imports(&self) -> Result<Vec<(String, u64)>, NodeError> {
        let mut removed = Vec::new();
        for entry in self.dataset_meta.iter() {
            let (key, value) = entry.map_err(|e| NodeError::store("scan meta", e))?;
            let meta: DatasetVersion = from_json(&value, "dataset meta")?;
            if meta.state == VersionState::Importing {
                self.remove_blocks(&meta.name, meta.version)?;
                let abandoned = DatasetVersion { state: VersionState::Abandoned, rows: 0, blocks: 0, ..meta };
                self.dataset_meta
                    .insert(&key, to_json(&abandoned)?)
                    .map_err(|e| NodeError::store("mark abandoned", e))?;
                removed.push((abandoned.name, abandoned.version));
            }
        }
        self.flush()?;
        Ok(removed)
    }
}

fn version_from_key(bytes: &[u8]) -> Result<u64, NodeError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| NodeError::Corrupt {
        what: "dataset version",
        reason: format!("{} bytes", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}
