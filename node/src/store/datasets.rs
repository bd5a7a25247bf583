//! Datasets: versions of imported CSV files, visible only once fully written.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;
use xmcredit_contracts::data::{DatasetSchema, Value};

use super::{from_json, join, to_json, Store};
use crate::NodeError;

/// Rows written per sled batch during an import.
const BATCH_ROWS: usize = 20_000;

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
    /// SHA-256 over the rows in key order (see `RowDigest`), hex.
    pub digest: String,
    pub imported_unix: u64,
    pub source: String,
    pub state: VersionState,
}

/// One row: its key (a normalized entity code or another id) and values in schema order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRow {
    pub key: String,
    pub values: Vec<Value>,
}

/// SHA-256 over `len(key) u32 ‖ key ‖ len(json) u32 ‖ json(values)` for each row in key
/// order: identifies a dataset version's content.
#[derive(Default)]
struct RowDigest(Sha256);

impl RowDigest {
    fn add(&mut self, key: &str, values: &[u8]) {
        self.0.update((key.len() as u32).to_be_bytes());
        self.0.update(key.as_bytes());
        self.0.update((values.len() as u32).to_be_bytes());
        self.0.update(values);
    }

    fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

impl Store {
    /// Writes a new version of `schema.name()` with `rows` (sorted by key, unique) and
    /// makes it current, all or nothing: the version is visible only after its last
    /// row is written; a crash before that leaves the previous version current and the
    /// partial rows are removed at the next start. `progress` is called per batch.
    pub fn write_dataset_version(
        &self,
        schema: &DatasetSchema,
        rows: &[DatasetRow],
        source: &str,
        now_unix: u64,
        mut progress: impl FnMut(u64),
    ) -> Result<DatasetVersion, NodeError> {
        let _guard =
            self.import_lock.lock().map_err(|_| NodeError::Internal("import lock poisoned".into()))?;
        let name = schema.name();
        let version = self.latest_version(name)?.map_or(1, |v| v + 1);
        let mut meta = DatasetVersion {
            name: name.to_string(),
            version,
            schema: schema.clone(),
            rows: rows.len() as u64,
            digest: String::new(),
            imported_unix: now_unix,
            source: source.to_string(),
            state: VersionState::Importing,
        };
        let meta_key = join(&[name.as_bytes(), &version.to_be_bytes()]);
        self.dataset_meta
            .insert(&meta_key, to_json(&meta)?)
            .map_err(|e| NodeError::store("import meta", e))?;
        // Rows are encoded, hashed and written one batch at a time, so an import holds
        // one batch of encodings, not the whole file twice.
        let mut digest = RowDigest::default();
        for (chunk_index, chunk) in rows.chunks(BATCH_ROWS).enumerate() {
            let mut batch = sled::Batch::default();
            for row in chunk {
                let value = to_json(&row.values)?;
                digest.add(&row.key, &value);
                batch.insert(join(&[&meta_key, row.key.as_bytes()]), value);
            }
            self.dataset_rows.apply_batch(batch).map_err(|e| NodeError::store("import rows", e))?;
            progress(((chunk_index * BATCH_ROWS) + chunk.len()) as u64);
        }
        meta.digest = digest.finish();
        // Commit: meta and the current pointer flip together.
        meta.state = VersionState::Committed;
        (&self.dataset_meta, &self.dataset_current)
            .transaction(|(meta_tree, current)| {
                let encoded_meta = serde_json::to_vec(&meta)
                    .map_err(|e| sled::transaction::ConflictableTransactionError::Abort(e.to_string()))?;
                meta_tree.insert(meta_key.as_slice(), encoded_meta)?;
                current.insert(name.as_bytes(), &version.to_be_bytes())?;
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<String>| {
                NodeError::Internal(format!("commit import: {e}"))
            })?;
        self.flush()?;
        Ok(meta)
    }

    /// The highest version number ever started for `name` (committed or not).
    fn latest_version(&self, name: &str) -> Result<Option<u64>, NodeError> {
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

    /// The rows of one committed version, in key order.
    pub fn dataset_rows(&self, meta: &DatasetVersion) -> Result<Vec<DatasetRow>, NodeError> {
        let prefix = join(&[meta.name.as_bytes(), &meta.version.to_be_bytes(), b""]);
        let mut rows = Vec::with_capacity(meta.rows as usize);
        for entry in self.dataset_rows.scan_prefix(&prefix) {
            let (key, value) = entry.map_err(|e| NodeError::store("read rows", e))?;
            let values: Vec<Value> = from_json(&value, "dataset row")?;
            rows.push(DatasetRow { key: String::from_utf8_lossy(&key[prefix.len()..]).into_owned(), values });
        }
        check_row_count(meta, rows.len())?;
        Ok(rows)
    }

    /// The keys of one committed version, in key order, without decoding the rows (the
    /// secagg coordinator publishes a registry's keys as the universe).
    pub fn dataset_keys(&self, meta: &DatasetVersion) -> Result<Vec<String>, NodeError> {
        let prefix = join(&[meta.name.as_bytes(), &meta.version.to_be_bytes(), b""]);
        let mut keys = Vec::with_capacity(meta.rows as usize);
        for key in self.dataset_rows.scan_prefix(&prefix).keys() {
            let key = key.map_err(|e| NodeError::store("read keys", e))?;
            keys.push(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
        }
        check_row_count(meta, keys.len())?;
        Ok(keys)
    }

    /// Row count stored under a version's prefix, committed or not (tests use it to
    /// prove a half import left nothing behind).
    pub fn raw_row_count(&self, name: &str, version: u64) -> usize {
        self.dataset_rows.scan_prefix(join(&[name.as_bytes(), &version.to_be_bytes(), b""])).count()
    }

    /// Removes the rows of versions that never committed and marks them abandoned;
    /// returns what was removed.
    pub fn remove_partial_imports(&self) -> Result<Vec<(String, u64)>, NodeError> {
        let mut removed = Vec::new();
        for entry in self.dataset_meta.iter() {
            let (key, value) = entry.map_err(|e| NodeError::store("scan meta", e))?;
            let meta: DatasetVersion = from_json(&value, "dataset meta")?;
            if meta.state == VersionState::Importing {
                let prefix = join(&[&key, b""]);
                let mut batch = sled::Batch::default();
                for row_key in self.dataset_rows.scan_prefix(&prefix).keys() {
                    batch.remove(row_key.map_err(|e| NodeError::store("scan rows", e))?);
                }
                self.dataset_rows.apply_batch(batch).map_err(|e| NodeError::store("remove rows", e))?;
                let abandoned = DatasetVersion { state: VersionState::Abandoned, rows: 0, ..meta };
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

/// A version whose stored rows differ in number from its meta record was damaged.
fn check_row_count(meta: &DatasetVersion, found: usize) -> Result<(), NodeError> {
    if found as u64 != meta.rows {
        return Err(NodeError::Corrupt {
            what: "dataset",
            reason: format!("{} v{} has {found} rows, meta says {}", meta.name, meta.version, meta.rows),
        });
    }
    Ok(())
}

fn version_from_key(bytes: &[u8]) -> Result<u64, NodeError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| NodeError::Corrupt {
        what: "dataset version",
        reason: format!("{} bytes", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}
