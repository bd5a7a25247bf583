//! External sort of an import's parsed rows: rows are collected in an arena of at most
//! [`RUN_BYTES`], sorted by (key, row number) and spilled to a run file when the arena
//! is full; the runs are then merged, so an import of any size holds one arena and one
//! record per run. Rows that failed to parse are kept (without values) so that a code
//! on two rows is still seen as a duplicate.
//!
//! Record encoding (arena and run files): `len key u16 ‖ key ‖ row u64 ‖ line u64 ‖
//! has values u8 ‖ len values u32 ‖ values`, values in the store's row encoding. The
//! file line travels with the row because a quoted cell can span lines, so the line
//! cannot be derived from the row number when duplicates are reported after the merge.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::NodeError;

/// Bytes of records held in memory before a run is spilled to disk.
pub const RUN_BYTES: usize = 32 * 1024 * 1024;

/// One parsed row on its way to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    pub row: u64,
    /// The file line the row starts on (header = 1).
    pub line: u64,
    /// `None` for a row already rejected (kept only to see duplicates).
    pub values: Option<Vec<u8>>,
}

impl Ord for Record {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key).then(self.row.cmp(&other.row))
    }
}

impl PartialOrd for Record {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn put_record(out: &mut Vec<u8>, key: &[u8], row: u64, line: u64, values: Option<&[u8]>) {
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&row.to_be_bytes());
    out.extend_from_slice(&line.to_be_bytes());
    out.push(u8::from(values.is_some()));
    let values = values.unwrap_or_default();
    out.extend_from_slice(&(values.len() as u32).to_be_bytes());
    out.extend_from_slice(values);
}

/// (key, row, line, values) of the record at `at` in `arena`, and its end.
fn record_at(arena: &[u8], at: usize) -> (&[u8], u64, u64, Option<&[u8]>, usize) {
    let key_len = usize::from(u16::from_be_bytes([arena[at], arena[at + 1]]));
    let key = &arena[at + 2..at + 2 + key_len];
    let mut pos = at + 2 + key_len;
    let row = u64::from_be_bytes(arena[pos..pos + 8].try_into().unwrap_or_default());
    pos += 8;
    let line = u64::from_be_bytes(arena[pos..pos + 8].try_into().unwrap_or_default());
    pos += 8;
    let has = arena[pos] == 1;
    pos += 1;
    let len = u32::from_be_bytes(arena[pos..pos + 4].try_into().unwrap_or_default()) as usize;
    pos += 4;
    let values = &arena[pos..pos + len];
    (key, row, line, has.then_some(values), pos + len)
}

/// Collects records, spilling sorted runs to `dir`.
pub struct Sorter {
    dir: PathBuf,
    arena: Vec<u8>,
    offsets: Vec<usize>,
    runs: Vec<RunFile>,
    budget: usize,
}

impl Sorter {
    pub fn new(dir: &Path) -> Self {
        Self::with_budget(dir, RUN_BYTES)
    }

    pub fn with_budget(dir: &Path, budget: usize) -> Self {
        Self { dir: dir.to_path_buf(), arena: Vec::new(), offsets: Vec::new(), runs: Vec::new(), budget }
    }

    /// Adds one row. Keys are at most a few hundred bytes (import checks them first).
    pub fn push(&mut self, key: &[u8], row: u64, line: u64, values: Option<&[u8]>) -> Result<(), NodeError> {
        if key.len() > usize::from(u16::MAX) {
            return Err(NodeError::Import(format!("row {row}: key of {} bytes", key.len())));
        }
        self.offsets.push(self.arena.len());
        put_record(&mut self.arena, key, row, line, values);
        if self.arena.len() >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn sort(&mut self) {
        let arena = &self.arena;
        self.offsets.sort_unstable_by(|&a, &b| {
            let (ka, ra, ..) = record_at(arena, a);
            let (kb, rb, ..) = record_at(arena, b);
            ka.cmp(kb).then(ra.cmp(&rb))
        });
    }

    fn spill(&mut self) -> Result<(), NodeError> {
        self.sort();
        std::fs::create_dir_all(&self.dir).map_err(|e| NodeError::file(&self.dir, e))?;
        let path = self.dir.join(format!("run-{}-{}.bin", std::process::id(), next_run_number()));
        let file = File::create(&path).map_err(|e| NodeError::file(&path, e))?;
        let run = RunFile { path };
        let mut out = BufWriter::with_capacity(1 << 20, file);
        for &at in &self.offsets {
            let (.., end) = record_at(&self.arena, at);
            out.write_all(&self.arena[at..end]).map_err(|e| NodeError::file(&run.path, e))?;
        }
        out.flush().map_err(|e| NodeError::file(&run.path, e))?;
        self.runs.push(run);
        self.arena.clear();
        self.offsets.clear();
        Ok(())
    }

    /// Every record in (key, row) order.
    pub fn finish(mut self) -> Result<Merged, NodeError> {
        self.sort();
        let mut sources = Vec::with_capacity(self.runs.len() + 1);
        for run in self.runs.drain(..) {
            let file = File::open(&run.path).map_err(|e| NodeError::file(&run.path, e))?;
            sources.push(Source::File { reader: BufReader::with_capacity(256 * 1024, file), run });
        }
        sources.push(Source::Memory {
            arena: std::mem::take(&mut self.arena),
            offsets: std::mem::take(&mut self.offsets),
            next: 0,
        });
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (index, source) in sources.iter_mut().enumerate() {
            if let Some(record) = source.next()? {
                heap.push(Reverse((record, index)));
            }
        }
        Ok(Merged { sources, heap })
    }
}

fn next_run_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A spilled run, removed when dropped.
struct RunFile {
    path: PathBuf,
}

impl Drop for RunFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

enum Source {
    File { reader: BufReader<File>, run: RunFile },
    Memory { arena: Vec<u8>, offsets: Vec<usize>, next: usize },
}

impl Source {
    fn next(&mut self) -> Result<Option<Record>, NodeError> {
        match self {
            Source::Memory { arena, offsets, next } => {
                let Some(&at) = offsets.get(*next) else { return Ok(None) };
                *next += 1;
                let (key, row, line, values, _) = record_at(arena, at);
                Ok(Some(Record { key: key.to_vec(), row, line, values: values.map(<[u8]>::to_vec) }))
            }
            Source::File { reader, run } => {
                let io = |e: std::io::Error| NodeError::file(&run.path, e);
                let mut len = [0u8; 2];
                match reader.read_exact(&mut len) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(io(e)),
                }
                let mut key = vec![0u8; usize::from(u16::from_be_bytes(len))];
                reader.read_exact(&mut key).map_err(io)?;
                let mut fixed = [0u8; 21];
                reader.read_exact(&mut fixed).map_err(io)?;
                let row = u64::from_be_bytes(fixed[..8].try_into().unwrap_or_default());
                let line = u64::from_be_bytes(fixed[8..16].try_into().unwrap_or_default());
                let values_len = u32::from_be_bytes(fixed[17..21].try_into().unwrap_or_default()) as usize;
                let mut values = vec![0u8; values_len];
                reader.read_exact(&mut values).map_err(io)?;
                Ok(Some(Record { key, row, line, values: (fixed[16] == 1).then_some(values) }))
            }
        }
    }
}

/// The merge of every run.
pub struct Merged {
    sources: Vec<Source>,
    heap: BinaryHeap<Reverse<(Record, usize)>>,
}

impl Merged {
    pub fn next_record(&mut self) -> Result<Option<Record>, NodeError> {
        let Some(Reverse((record, index))) = self.heap.pop() else { return Ok(None) };
        if let Some(next) = self.sources[index].next()? {
            self.heap.push(Reverse((next, index)));
        }
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_spilled_to_disk_merge_in_key_then_row_order() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // A budget of a few records forces many runs.
        let mut sorter = Sorter::with_budget(dir.path(), 100);
        let mut expected = Vec::new();
        for row in 0..500u64 {
            let key = format!("K{:03}", (row * 7919) % 211).into_bytes();
            let values = (row % 3 != 0).then(|| row.to_be_bytes().to_vec());
            // Lines need not follow rows (a quoted cell can span lines): they travel as is.
            let line = row * 3 + 2;
            sorter.push(&key, row, line, values.as_deref()).unwrap_or_else(|e| panic!("{e}"));
            expected.push(Record { key, row, line, values });
        }
        expected.sort();
        assert!(std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0) > 10, "runs were spilled");
        let mut merged = sorter.finish().unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        while let Some(record) = merged.next_record().unwrap_or_else(|e| panic!("{e}")) {
            got.push(record);
        }
        assert_eq!(got, expected);
        drop(merged);
        assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(1), 0, "run files removed");
    }
}
