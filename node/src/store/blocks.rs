//! Dataset rows in blocks (store layout 2): a version is a sequence of blocks of
//! [`BLOCK_ROWS`] rows (the last may be shorter), in key order, each one sled record
//!
//! `dataset_blocks`: name ‖ 0x00 ‖ version u64 ‖ 0x00 ‖ block u32 → `0x01 ‖ varint(rows) ‖ row…`
//!
//! with rows in the encoding of [`super::rowcodec`]. Row `i` is in block
//! `i / block_rows`, so reading a few rows by index reads a few blocks. Readers iterate
//! block by block ([`BlockIter`]); nothing here holds more than one block.

use std::sync::{Arc, MutexGuard};

use sha2::{Digest, Sha256};
use sled::Transactional;
use xmcredit_contracts::data::{DatasetSchema, Value};

use super::rowcodec::{get_unsigned, put_unsigned, RowCodec};
use super::{join, to_json, DatasetRow, DatasetVersion, Store, VersionState};
use crate::NodeError;

/// Rows per block: big enough that sled's per-record cost vanishes (one batch of about
/// 100-200 KiB for typical rows), small enough that a reader holds little.
pub const BLOCK_ROWS: u32 = 4096;
/// The first byte of every block: the block encoding, so a later one can be told apart.
const BLOCK_FORMAT: u8 = 1;
/// Test hook (like `run::fault`): milliseconds to pause after each block written, so a
/// test can kill a node while an import of a small file is still writing.
pub const IMPORT_PAUSE_VAR: &str = "XMCREDIT_TEST_IMPORT_BLOCK_PAUSE_MS";

/// The prefix of every block key of one version.
pub(super) fn version_prefix(name: &str, version: u64) -> Vec<u8> {
    join(&[name.as_bytes(), &version.to_be_bytes(), b""])
}

fn block_key(name: &str, version: u64, block: u32) -> Vec<u8> {
    let mut key = version_prefix(name, version);
    key.extend_from_slice(&block.to_be_bytes());
    key
}

/// SHA-256 over every row's encoding (key and values, [`super::rowcodec`]) in key
/// order: identifies a version's content whatever its block size.
#[derive(Default)]
struct RowDigest(Sha256);

/// Writes one new version of a dataset, block by block; the version becomes visible
/// only at [`DatasetWriter::commit`]. Holds the store's import lock: one import at a
/// time allocates and writes versions. Dropped without a commit (an error, a refusal),
/// it removes what it wrote; a crash leaves the version `importing`, removed at the
/// next start ([`Store::remove_partial_imports`]).
pub struct DatasetWriter<'a> {
    store: &'a Store,
    _guard: MutexGuard<'a, ()>,
    meta: DatasetVersion,
    meta_key: Vec<u8>,
    codec: RowCodec,
    block: Vec<u8>,
    block_len: u32,
    next_block: u32,
    last_key: Option<Vec<u8>>,
    digest: RowDigest,
    pause: Option<std::time::Duration>,
    finished: bool,
}

impl std::fmt::Debug for DatasetWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetWriter")
            .field("dataset", &self.meta.name)
            .field("version", &self.meta.version)
            .field("rows", &self.meta.rows)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Starts a new version of `schema.name()`: allocates its number and records it as
    /// `importing`. Rows are then pushed in strictly increasing key order.
    pub fn begin_dataset_version(
        &self,
        schema: &DatasetSchema,
        source: &str,
        now_unix: u64,
    ) -> Result<DatasetWriter<'_>, NodeError> {
        let guard =
            self.import_lock.lock().map_err(|_| NodeError::Internal("import lock poisoned".into()))?;
        let name = schema.name();
        let version = self.latest_version(name)?.map_or(1, |v| v + 1);
        let meta = DatasetVersion {
            name: name.to_string(),
            version,
            schema: schema.clone(),
            rows: 0,
            digest: String::new(),
            imported_unix: now_unix,
            source: source.to_string(),
            state: VersionState::Importing,
            block_rows: BLOCK_ROWS,
            blocks: 0,
        };
        let meta_key = join(&[name.as_bytes(), &version.to_be_bytes()]);
        self.dataset_meta
            .insert(&meta_key, to_json(&meta)?)
            .map_err(|e| NodeError::store("import meta", e))?;
        let pause = std::env::var(IMPORT_PAUSE_VAR)
            .ok()
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_millis);
        Ok(DatasetWriter {
            store: self,
            _guard: guard,
            codec: RowCodec::new(schema),
            meta,
            meta_key,
            block: Vec::new(),
            block_len: 0,
            next_block: 0,
            last_key: None,
            digest: RowDigest::default(),
            pause,
            finished: false,
        })
    }

    /// Writes `rows` (sorted by key, unique) as a new version and makes it current, all
    /// or nothing. `progress` is called per block with the rows written so far.
    pub fn write_dataset_version(
        &self,
        schema: &DatasetSchema,
        rows: impl IntoIterator<Item = DatasetRow>,
        source: &str,
        now_unix: u64,
        mut progress: impl FnMut(u64),
    ) -> Result<DatasetVersion, NodeError> {
        let mut writer = self.begin_dataset_version(schema, source, now_unix)?;
        for row in rows {
            if writer.push(row.key.as_bytes(), &row.values)? {
                progress(writer.rows());
            }
        }
        writer.commit()
    }

    /// The blocks of one committed version, in key order.
    pub fn dataset_blocks(&self, meta: &DatasetVersion) -> BlockIter {
        BlockIter {
            inner: self.dataset_blocks.scan_prefix(version_prefix(&meta.name, meta.version)),
            codec: Arc::new(RowCodec::new(&meta.schema)),
            name: meta.name.clone(),
            version: meta.version,
            expected_rows: meta.rows,
            block_rows: u64::from(meta.block_rows),
            next_block: 0,
            rows_seen: 0,
            done: false,
        }
    }

    /// The rows of one committed version, in key order, read block by block.
    pub fn dataset_rows(&self, meta: &DatasetVersion) -> impl Iterator<Item = Result<DatasetRow, NodeError>> {
        self.dataset_blocks(meta).flat_map(
            |block| -> Box<dyn Iterator<Item = Result<DatasetRow, NodeError>>> {
                match block {
                    Ok(block) => Box::new(block.into_rows()),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            },
        )
    }

    /// The keys of one committed version, in key order (the secagg coordinator
    /// publishes a registry's keys as the universe: that list is its working set).
    pub fn dataset_keys(&self, meta: &DatasetVersion) -> Result<Vec<String>, NodeError> {
        let mut keys = Vec::with_capacity(usize::try_from(meta.rows).unwrap_or(0));
        for block in self.dataset_blocks(meta) {
            for key in block?.keys() {
                keys.push(key?.to_string());
            }
        }
        Ok(keys)
    }

    /// The rows at `indices` (positions in key order) of one committed version, in the
    /// order of `indices`; reads only the blocks that hold them.
    pub fn dataset_rows_at(
        &self,
        meta: &DatasetVersion,
        indices: &[u64],
    ) -> Result<Vec<DatasetRow>, NodeError> {
        let codec = Arc::new(RowCodec::new(&meta.schema));
        let block_rows = u64::from(meta.block_rows.max(1));
        let mut order: Vec<usize> = (0..indices.len()).collect();
        order.sort_unstable_by_key(|&i| indices[i]);
        let mut out: Vec<Option<DatasetRow>> = vec![None; indices.len()];
        let mut current: Option<(u64, Vec<DatasetRow>)> = None;
        for position in order {
            let index = indices[position];
            if index >= meta.rows {
                return Err(NodeError::Internal(format!(
                    "row {index} of {} v{}, which has {} rows",
                    meta.name, meta.version, meta.rows
                )));
            }
            let block = index / block_rows;
            if current.as_ref().is_none_or(|(b, _)| *b != block) {
                let key = block_key(&meta.name, meta.version, u32::try_from(block).unwrap_or(u32::MAX));
                let bytes = self
                    .dataset_blocks
                    .get(&key)
                    .map_err(|e| NodeError::store("read block", e))?
                    .ok_or_else(|| NodeError::Corrupt {
                        what: "dataset",
                        reason: format!("{} v{} has no block {block}", meta.name, meta.version),
                    })?;
                let rows = RowBlock::parse(bytes, codec.clone(), block * block_rows)?
                    .into_rows()
                    .collect::<Result<Vec<_>, _>>()?;
                current = Some((block, rows));
            }
            let (_, rows) = current.as_ref().ok_or_else(|| NodeError::Internal("no block".into()))?;
            let row = rows.get((index % block_rows) as usize).cloned().ok_or_else(|| NodeError::Corrupt {
                what: "dataset",
                reason: format!("{} v{} block {block} is short", meta.name, meta.version),
            })?;
            out[position] = Some(row);
        }
        out.into_iter().map(|r| r.ok_or_else(|| NodeError::Internal("row not read".into()))).collect()
    }

    /// Rows stored under a version's prefix, committed or not (tests use it to prove a
    /// half import left nothing behind).
    pub fn raw_row_count(&self, name: &str, version: u64) -> Result<u64, NodeError> {
        let mut rows = 0;
        for entry in self.dataset_blocks.scan_prefix(version_prefix(name, version)).values() {
            let bytes = entry.map_err(|e| NodeError::store("scan blocks", e))?;
            rows += block_header(&bytes)?.0;
        }
        Ok(rows)
    }

    /// Removes every block of one version (a version that never committed).
    pub(super) fn remove_blocks(&self, name: &str, version: u64) -> Result<(), NodeError> {
        let mut batch = sled::Batch::default();
        for key in self.dataset_blocks.scan_prefix(version_prefix(name, version)).keys() {
            batch.remove(key.map_err(|e| NodeError::store("scan blocks", e))?);
        }
        self.dataset_blocks.apply_batch(batch).map_err(|e| NodeError::store("remove blocks", e))
    }
}

impl DatasetWriter<'_> {
    /// The version being written.
    pub fn version(&self) -> u64 {
        self.meta.version
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.meta.rows
    }

    /// Adds one row; returns whether a block was written by this call (for progress).
    pub fn push(&mut self, key: &[u8], values: &[Value]) -> Result<bool, NodeError> {
        self.check_order(key)?;
        let start = self.block.len();
        self.codec.encode_row(key, values, &mut self.block)?;
        self.row_added(start)
    }

    /// Adds one row whose values are already encoded with this schema's codec (the
    /// import's sorted runs hold them so).
    pub(crate) fn push_encoded(&mut self, key: &[u8], values: &[u8]) -> Result<bool, NodeError> {
        self.check_order(key)?;
        let start = self.block.len();
        put_unsigned(&mut self.block, key.len() as u64);
        self.block.extend_from_slice(key);
        self.block.extend_from_slice(values);
        self.row_added(start)
    }

    fn check_order(&mut self, key: &[u8]) -> Result<(), NodeError> {
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(NodeError::Internal(format!(
                "rows of {} pushed out of key order at {}",
                self.meta.name,
                String::from_utf8_lossy(key)
            )));
        }
        match &mut self.last_key {
            Some(last) => {
                last.clear();
                last.extend_from_slice(key);
            }
            None => self.last_key = Some(key.to_vec()),
        }
        Ok(())
    }

    fn row_added(&mut self, start: usize) -> Result<bool, NodeError> {
        self.digest.0.update(&self.block[start..]);
        self.block_len += 1;
        self.meta.rows += 1;
        if self.block_len == BLOCK_ROWS {
            self.write_block()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn write_block(&mut self) -> Result<(), NodeError> {
        if self.block_len == 0 {
            return Ok(());
        }
        let mut value = Vec::with_capacity(self.block.len() + 6);
        value.push(BLOCK_FORMAT);
        put_unsigned(&mut value, u64::from(self.block_len));
        value.extend_from_slice(&self.block);
        let key = block_key(&self.meta.name, self.meta.version, self.next_block);
        // One record per block: sled's cost is per record, and a block is one batch.
        self.store.dataset_blocks.insert(key, value).map_err(|e| NodeError::store("import block", e))?;
        self.next_block += 1;
        self.meta.blocks += 1;
        self.block.clear();
        self.block_len = 0;
        if let Some(pause) = self.pause {
            std::thread::sleep(pause);
        }
        Ok(())
    }

    /// Writes the last block and makes the version current: its meta record turns
    /// `committed` and `dataset_current` points at it, in one transaction.
    pub fn commit(mut self) -> Result<DatasetVersion, NodeError> {
        self.write_block()?;
        let mut meta = self.meta.clone();
        meta.digest = hex::encode(std::mem::take(&mut self.digest).0.finalize());
        meta.state = VersionState::Committed;
        let name = meta.name.clone();
        let version = meta.version;
        let meta_key = self.meta_key.clone();
        (&self.store.dataset_meta, &self.store.dataset_current)
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
        self.finished = true;
        self.store.flush()?;
        Ok(meta)
    }

    /// Removes everything written for this version, its meta record included: the
    /// version was never visible, so its number may be taken again.
    pub fn discard(mut self) -> Result<(), NodeError> {
        self.finished = true;
        self.remove_written()
    }

    fn remove_written(&self) -> Result<(), NodeError> {
        self.store.remove_blocks(&self.meta.name, self.meta.version)?;
        self.store.dataset_meta.remove(&self.meta_key).map_err(|e| NodeError::store("remove meta", e))?;
        Ok(())
    }
}

impl Drop for DatasetWriter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            if let Err(e) = self.remove_written() {
                tracing::warn!(dataset = %self.meta.name, version = self.meta.version, error = %e,
                    "could not remove an unfinished import; the next start removes it");
            }
        }
    }
}

/// `(rows, offset of the first row)` of an encoded block.
fn block_header(bytes: &[u8]) -> Result<(u64, usize), NodeError> {
    if bytes.first() != Some(&BLOCK_FORMAT) {
        return Err(NodeError::Corrupt {
            what: "dataset block",
            reason: format!("block format {:?}, this node reads {BLOCK_FORMAT}", bytes.first()),
        });
    }
    let mut pos = 1;
    let rows = get_unsigned(bytes, &mut pos)?;
    Ok((rows, pos))
}

/// One stored block: up to `block_rows` consecutive rows of a version.
#[derive(Debug, Clone)]
pub struct RowBlock {
    bytes: sled::IVec,
    codec: Arc<RowCodec>,
    first_row: u64,
    rows: u64,
    start: usize,
}

impl RowBlock {
    fn parse(bytes: sled::IVec, codec: Arc<RowCodec>, first_row: u64) -> Result<Self, NodeError> {
        let (rows, start) = block_header(&bytes)?;
        Ok(Self { bytes, codec, first_row, rows, start })
    }

    /// The position (in key order) of the block's first row in its version.
    pub fn first_row(&self) -> u64 {
        self.first_row
    }

    pub fn len(&self) -> usize {
        self.rows as usize
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The block's rows, decoded one at a time.
    pub fn rows(&self) -> impl Iterator<Item = Result<DatasetRow, NodeError>> + '_ {
        let mut pos = self.start;
        let mut left = self.rows;
        std::iter::from_fn(move || {
            if left == 0 {
                return (pos != self.bytes.len()).then(|| Err(trailing()));
            }
            left -= 1;
            match self.codec.decode_row(&self.bytes, &mut pos) {
                Ok(row) => Some(Ok(row)),
                Err(e) => {
                    left = 0;
                    pos = self.bytes.len();
                    Some(Err(e))
                }
            }
        })
    }

    /// Like [`RowBlock::rows`], owning the block.
    pub fn into_rows(self) -> impl Iterator<Item = Result<DatasetRow, NodeError>> {
        let mut pos = self.start;
        let mut left = self.rows;
        std::iter::from_fn(move || {
            if left == 0 {
                return (pos != self.bytes.len()).then(|| {
                    pos = self.bytes.len();
                    Err(trailing())
                });
            }
            left -= 1;
            match self.codec.decode_row(&self.bytes, &mut pos) {
                Ok(row) => Some(Ok(row)),
                Err(e) => {
                    left = 0;
                    pos = self.bytes.len();
                    Some(Err(e))
                }
            }
        })
    }

    /// The block's keys, without decoding the values.
    pub fn keys(&self) -> impl Iterator<Item = Result<&str, NodeError>> + '_ {
        let mut pos = self.start;
        let mut left = self.rows;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let key = self.codec.decode_key(&self.bytes, &mut pos).and_then(|key| {
                self.codec.skip_values(&self.bytes, &mut pos)?;
                std::str::from_utf8(key).map_err(|_| NodeError::Corrupt {
                    what: "dataset block",
                    reason: "a row key is not UTF-8".into(),
                })
            });
            if key.is_err() {
                left = 0;
            }
            Some(key)
        })
    }
}

fn trailing() -> NodeError {
    NodeError::Corrupt { what: "dataset block", reason: "bytes after the last row".into() }
}

/// The blocks of one version in order; checks that they are numbered without gaps, of
/// `block_rows` rows each but the last, and hold as many rows as the meta record says.
pub struct BlockIter {
    inner: sled::Iter,
    codec: Arc<RowCodec>,
    name: String,
    version: u64,
    expected_rows: u64,
    block_rows: u64,
    next_block: u64,
    rows_seen: u64,
    done: bool,
}

impl std::fmt::Debug for BlockIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockIter")
            .field("dataset", &self.name)
            .field("version", &self.version)
            .field("next_block", &self.next_block)
            .finish_non_exhaustive()
    }
}

impl BlockIter {
    fn damaged(&mut self, reason: String) -> Option<Result<RowBlock, NodeError>> {
        self.done = true;
        Some(Err(NodeError::Corrupt {
            what: "dataset",
            reason: format!("{} v{}: {reason}", self.name, self.version),
        }))
    }
}

impl Iterator for BlockIter {
    type Item = Result<RowBlock, NodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let Some(entry) = self.inner.next() else {
            self.done = true;
            if self.rows_seen != self.expected_rows {
                let reason = format!("{} rows stored, meta says {}", self.rows_seen, self.expected_rows);
                return self.damaged(reason);
            }
            return None;
        };
        let (key, bytes) = match entry {
            Ok(entry) => entry,
            Err(e) => {
                self.done = true;
                return Some(Err(NodeError::store("read blocks", e)));
            }
        };
        let number = key.len().checked_sub(4).map(|at| &key[at..]).and_then(|b| b.try_into().ok());
        if number.map(u32::from_be_bytes).map(u64::from) != Some(self.next_block) {
            let reason = format!("block {} missing", self.next_block);
            return self.damaged(reason);
        }
        let block = match RowBlock::parse(bytes, self.codec.clone(), self.rows_seen) {
            Ok(block) => block,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        // Every block but the last is full, so row i is in block i / block_rows.
        let full = block.rows == self.block_rows;
        if !full && self.rows_seen + block.rows != self.expected_rows {
            let reason =
                format!("block {} holds {} rows, not {}", self.next_block, block.rows, self.block_rows);
            return self.damaged(reason);
        }
        self.next_block += 1;
        self.rows_seen += block.rows;
        Some(Ok(block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmcredit_contracts::data::ColumnType;

    fn schema() -> DatasetSchema {
        DatasetSchema::new(
            "book",
            "k",
            vec![("n".into(), ColumnType::Integer), ("ok".into(), ColumnType::Bool)],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn rows(count: u32) -> Vec<DatasetRow> {
        (0..count)
            .map(|i| DatasetRow {
                key: format!("K{i:07}"),
                values: vec![Value::Integer(i64::from(i) * 31 - 7), Value::Bool(i % 2 == 0)],
            })
            .collect()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(&dir.path().join("store")).unwrap_or_else(|e| panic!("{e}"));
        (dir, store)
    }

    #[test]
    fn a_version_of_several_blocks_reads_back_row_by_row_and_by_index() {
        let (_dir, store) = store();
        let all = rows(BLOCK_ROWS * 2 + 5);
        let meta = store
            .write_dataset_version(&schema(), all.clone(), "test", 1, |_| {})
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((meta.rows, meta.blocks, meta.block_rows), (all.len() as u64, 3, BLOCK_ROWS));
        let read: Vec<DatasetRow> =
            store.dataset_rows(&meta).collect::<Result<_, _>>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, all);
        let keys = store.dataset_keys(&meta).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys, all.iter().map(|r| r.key.clone()).collect::<Vec<_>>());
        let wanted = [u64::from(BLOCK_ROWS) * 2 + 4, 0, u64::from(BLOCK_ROWS), 1];
        let picked = store.dataset_rows_at(&meta, &wanted).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(picked, wanted.iter().map(|&i| all[i as usize].clone()).collect::<Vec<_>>());
        assert!(store.dataset_rows_at(&meta, &[all.len() as u64]).is_err(), "past the end");
        // The same rows give the same digest, whatever the run.
        let again =
            store.write_dataset_version(&schema(), all, "test", 2, |_| {}).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((again.version, again.digest.as_str()), (2, meta.digest.as_str()));
    }

    #[test]
    fn a_missing_or_damaged_block_is_reported_not_skipped() {
        let (_dir, store) = store();
        let meta = store
            .write_dataset_version(&schema(), rows(BLOCK_ROWS * 2 + 1), "test", 1, |_| {})
            .unwrap_or_else(|e| panic!("{e}"));
        store.dataset_blocks.remove(block_key("book", 1, 1)).unwrap_or_else(|e| panic!("{e}"));
        let error = store.dataset_rows(&meta).find_map(Result::err).expect("a missing block is an error");
        assert!(error.to_string().contains("block 1 missing"), "{error}");
        store
            .dataset_blocks
            .insert(block_key("book", 1, 1), vec![BLOCK_FORMAT, 1, 0xff])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(store.dataset_rows(&meta).any(|r| r.is_err()), "a damaged block is an error");
        assert!(store.dataset_keys(&meta).is_err());
    }

    #[test]
    fn rows_out_of_order_are_refused_and_an_unfinished_version_leaves_nothing() {
        let (_dir, store) = store();
        let mut writer = store.begin_dataset_version(&schema(), "test", 1).unwrap_or_else(|e| panic!("{e}"));
        for row in rows(BLOCK_ROWS + 3) {
            writer.push(row.key.as_bytes(), &row.values).unwrap_or_else(|e| panic!("{e}"));
        }
        let refused = writer.push(b"K0000000", &[Value::Integer(1), Value::Bool(true)]);
        assert!(refused.is_err(), "a key that does not sort after the last is refused");
        assert_eq!(store.raw_row_count("book", 1).unwrap_or_else(|e| panic!("{e}")), u64::from(BLOCK_ROWS));
        drop(writer);
        assert_eq!(store.raw_row_count("book", 1).unwrap_or_else(|e| panic!("{e}")), 0);
        assert!(store.dataset_versions("book").unwrap_or_else(|e| panic!("{e}")).is_empty());
        assert!(store.current_dataset("book").unwrap_or_else(|e| panic!("{e}")).is_none());
    }
}
