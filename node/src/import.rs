//! CSV import: one file into one new dataset version, with a report a data steward can
//! act on (every rejected row with its number and reason).
//!
//! The file is UTF-8 with or without a byte-order mark, with a header row naming the key
//! column (a composite key's part columns) and every schema column (in any order). Keys
//! are read as the schema's key kind says (`xmcredit_contracts::key`): normalized
//! unified social credit codes by default, identifiers under their normalization and
//! pattern, or composites of several columns. A key that occurs on more than one row is
//! a data-quality problem (重错码): every row carrying it is rejected and reported, never
//! silently merged.

mod sort;

use std::path::Path;

use serde::Serialize;
use xmcredit_contracts::data::DatasetSchema;
use xmcredit_contracts::key::{IdentifierRule, KeyKind};

use crate::store::RowCodec;
use crate::NodeError;
pub use sort::RUN_BYTES;

/// At most this many rejected rows are listed one by one (the report says how many
/// there were in all), so a wholly wrong file does not produce a gigantic report.
pub const MAX_LISTED_REJECTIONS: usize = 1000;
/// Under the data directory: the import's sorted runs (removed after each import, and
/// at start in case a crash left some).
pub const IMPORT_SPILL_DIR: &str = "import-spill";
/// Applies the import request's legacy `key_kind` flag to `schema`. Key kinds belong in
/// the schema (`key_kind = { ... }`); `id` (or `identifier`) on a schema that declares
/// none still means what it meant before: identifiers, trimmed, no pattern.
pub fn schema_with_key_flag(schema: DatasetSchema, flag: &str) -> Result<DatasetSchema, NodeError> {
    match flag {
        "" => Ok(schema),
        "entity_code" | "code" if schema.key_kind().is_entity_code() => Ok(schema),
        "id" | "identifier" if schema.key_kind().is_entity_code() => schema
            .with_key_kind(KeyKind::Identifier(IdentifierRule::trimmed()))
            .map_err(|e| NodeError::Import(e.to_string())),
        "entity_code" | "code" | "id" | "identifier" => Err(NodeError::Import(format!(
            "the schema declares key_kind {}; leave --key-kind out",
            schema.key_kind()
        ))),
        other => Err(NodeError::Import(format!(
            "key kind {other:?}: declare key_kind in the schema (entity_code, identifier or composite)"
        ))),
    }
}

/// One refused row. `row` counts data rows from 1; `line` is the file line (header = 1).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RejectedRow {
    pub row: u64,
    pub line: u64,
    pub key: Option<String>,
    pub reason: String,
}

/// A row accepted with a remark (e.g. a failed GB 11714 check at position 17).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RowWarning {
    pub row: u64,
    pub key: String,
    pub warning: String,
}

/// The report printed after an import.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ImportReport {
    pub dataset: String,
    pub source: String,
    pub rows_read: u64,
    pub rows_accepted: u64,
    pub rows_rejected: u64,
    pub rejected: Vec<RejectedRow>,
    pub warnings: Vec<RowWarning>,
    pub ignored_columns: Vec<String>,
    /// The schema's key definition (canonical JSON), as a contract must name it.
    pub key_definition: String,
    /// Set when the rows were written: the new version and its digest.
    pub version: Option<u64>,
    pub digest: Option<String>,
    pub committed: bool,
    /// Why nothing was written, when nothing was.
    pub not_committed_reason: Option<String>,
    pub seconds: f64,
}

impl ImportReport {
    fn reject(&mut self, row: u64, key: Option<String>, reason: String) {
        self.rows_rejected += 1;
        if self.rejected.len() < MAX_LISTED_REJECTIONS {
            self.rejected.push(RejectedRow { row, line: row + 1, key, reason });
        }
    }
}

/// A CSV read and checked, its rows sorted on disk (in runs under the spill
/// directory) and not yet merged: duplicates show only in the merge.
pub struct ParsedCsv {
    sorter: sort::Sorter,
    /// "code" for entity codes, "key" otherwise (the duplicate message's word).
    key_word: &'static str,
    /// Rows that parsed (an upper bound of the rows the version will hold).
    candidates: u64,
}

impl std::fmt::Debug for ParsedCsv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedCsv").field("candidates", &self.candidates).finish_non_exhaustive()
    }
}

impl ParsedCsv {
    pub fn candidates(&self) -> u64 {
        self.candidates
    }

    /// Merges the runs in key order, rejects every row of a key seen more than once,
    /// and hands each accepted row (key, encoded values) to `sink`, in key order.
    /// Finishes the report's counts and sorts its rejections by row.
    pub fn for_each_accepted(
        self,
        report: &mut ImportReport,
        mut sink: impl FnMut(&[u8], &[u8]) -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        let key_word = self.key_word;
        let mut merged = self.sorter.finish()?;
        let mut group: Vec<sort::Record> = Vec::new();
        let mut accepted = 0u64;
        loop {
            let next = match merged.next_record()? {
                Some(record) if group.first().is_some_and(|first| first.key == record.key) => {
                    group.push(record);
                    continue;
                }
                next => next,
            };
            if group.len() == 1 {
                if let Some(sort::Record { key, values: Some(values), .. }) = group.first() {
                    sink(key, values)?;
                    accepted += 1;
                }
            } else if group.len() > 1 {
                let all: Vec<String> = group.iter().map(|r| r.row.to_string()).collect();
                // Rows already rejected for a bad value keep that reason.
                for record in group.iter().filter(|r| r.values.is_some()) {
                    report.reject(
                        record.row,
                        Some(String::from_utf8_lossy(&record.key).into_owned()),
                        format!("duplicate {key_word}: appears on rows {}", all.join(", ")),
                    );
                }
            }
            group.clear();
            match next {
                Some(record) => group.push(record),
                None => break,
            }
        }
        report.rejected.sort_by_key(|r| r.row);
        report.rows_accepted = accepted;
        Ok(())
    }
}

/// Reads and checks `path` against `schema`, streaming: each row is parsed, encoded
/// and handed to an external sort (runs spilled under `spill_dir`), so the import
/// holds one run's worth of rows whatever the file's size. Nothing is written to the
/// store here.
pub fn read_csv(
    path: &Path,
    schema: &DatasetSchema,
    spill_dir: &Path,
    mut progress: impl FnMut(u64),
) -> Result<(ParsedCsv, ImportReport), NodeError> {
    let mut report = ImportReport {
        dataset: schema.name().to_string(),
        source: path.display().to_string(),
        key_definition: schema.key_kind().definition(),
        ..ImportReport::default()
    };
    // The csv reader strips a UTF-8 byte-order mark itself.
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| NodeError::Import(format!("cannot read {}: {e}", path.display())))?;
    let headers =
        reader.headers().map_err(|e| NodeError::Import(format!("{}: header row: {e}", path.display())))?;
    let headers: Vec<String> = headers.iter().map(|h| h.trim_start_matches('\u{feff}').to_string()).collect();
    let position = |name: &str| headers.iter().position(|h| h == name);
    let key_kind = schema.key_kind();
    let key_columns = key_kind.source_columns(schema.key());
    let mut key_at = Vec::with_capacity(key_columns.len());
    for column in &key_columns {
        key_at.push(
            position(column)
                .ok_or_else(|| NodeError::Import(format!("header has no key column {column:?}")))?,
        );
    }
    let mut column_at = Vec::with_capacity(schema.columns().len());
    for (column, _) in schema.columns() {
        column_at.push(
            position(column).ok_or_else(|| NodeError::Import(format!("header has no column {column:?}")))?,
        );
    }
    report.ignored_columns = headers
        .iter()
        .filter(|h| !key_columns.contains(&h.as_str()) && schema.column(h).is_none())
        .cloned()
        .collect();

    // Every row with a readable key goes to the sort, with its values if they parsed: a
    // code on two rows is a duplicate even when one of the rows is also bad in another
    // way.
    let codec = RowCodec::new(schema);
    let mut sorter = sort::Sorter::new(spill_dir);
    let mut candidates = 0u64;
    let mut encoded = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut row_number = 0u64;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                row_number += 1;
                report.rows_read += 1;
                report.reject(row_number, None, format!("unreadable row: {e}"));
                continue;
            }
        }
        row_number += 1;
        report.rows_read += 1;
        if row_number % 50_000 == 0 {
            progress(row_number);
        }
        if record.len() != headers.len() {
            report.reject(
                row_number,
                None,
                format!("row has {} cells, the header has {}", record.len(), headers.len()),
            );
            continue;
        }
        let key_cells: Vec<&str> = key_at.iter().map(|&i| record.get(i).unwrap_or_default()).collect();
        let key = match key_kind.read(&key_cells) {
            Ok(read) => {
                for warning in read.warnings {
                    report.warnings.push(RowWarning { row: row_number, key: read.element.clone(), warning });
                }
                read.element
            }
            Err(e) => {
                report.reject(row_number, Some(key_cells.join(" | ")), e.to_string());
                continue;
            }
        };
        let cells: Vec<&str> = column_at.iter().map(|&i| record.get(i).unwrap_or_default()).collect();
        match schema.parse_row(&cells) {
            Ok(values) => {
                encoded.clear();
                codec.encode_values(&values, &mut encoded)?;
                sorter.push(key.as_bytes(), row_number, Some(&encoded))?;
                candidates += 1;
            }
            Err(e) => {
                report.reject(row_number, Some(key.clone()), format!("bad value: {e}"));
                sorter.push(key.as_bytes(), row_number, None)?;
            }
        }
    }
    progress(row_number);
    let key_word = if key_kind.is_entity_code() { "code" } else { "key" };
    Ok((ParsedCsv { sorter, key_word, candidates }, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmcredit_contracts::data::ColumnType;

    #[test]
    fn a_code_on_two_rows_is_a_duplicate_even_when_one_row_is_also_bad() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("rows.csv");
        // Row 1 and row 3 share a code; row 3 also has a bad value. Row 2 is clean.
        std::fs::write(
            &path,
            "credit_code,headcount\n91350203MA31XEK09P,12\n92350206MA8T12340D,3\n91350203ma31xek09p,many\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let schema = DatasetSchema::new("d", "credit_code", vec![("headcount".into(), ColumnType::Integer)])
            .unwrap_or_else(|e| panic!("{e}"));
        let (parsed, mut report) =
            read_csv(&path, &schema, &dir.path().join("spill"), |_| {}).unwrap_or_else(|e| panic!("{e}"));
        let mut keys = Vec::new();
        parsed
            .for_each_accepted(&mut report, |key, _| {
                keys.push(String::from_utf8_lossy(key).into_owned());
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys, vec!["92350206MA8T12340D"]);
        assert_eq!(report.rows_rejected, 2);
        assert_eq!(report.rejected[0].row, 1);
        assert_eq!(report.rejected[0].reason, "duplicate code: appears on rows 1, 3");
        assert_eq!(report.rejected[1].row, 3);
        assert!(report.rejected[1].reason.starts_with("bad value"), "{:?}", report.rejected[1]);
    }

    /// A composite key (supplier code, invoice number): each part normalized by its own
    /// rule, a bad part named with its column and row, and the same receivable written
    /// two ways caught as a duplicate.
    #[test]
    fn composite_keys_are_read_part_by_part_and_bad_parts_named_by_row() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("rows.csv");
        std::fs::write(
            &path,
            "amount,invoice_no,supplier_code\n\
             10.00,2535 0200 0000 0012 3456,91350203MA31XEK09P\n\
             11.00,253502000000001234,91350203MA31XEK09P\n\
             12.00,25350200000000123457,91350203MA31XEK09Q\n\
             13.00,2535-0200-0000-0012-3456,91350203ma31xek09p\n\
             14.00,25350200000000123458,92350206MA8T12340D\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let schema: DatasetSchema = toml::from_str(
            r#"name = "payables"
               key = "receivable"
               key_kind = { kind = "composite", parts = [
                 { column = "supplier_code", kind = "entity_code" },
                 { column = "invoice_no", kind = "identifier", normalize = ["strip_spaces", "strip_hyphens"], pattern = "[0-9]{20}" },
               ] }
               columns = [{ name = "amount", type = "decimal", scale = 2 }]"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (parsed, mut report) =
            read_csv(&path, &schema, &dir.path().join("spill"), |_| {}).unwrap_or_else(|e| panic!("{e}"));
        let mut keys = Vec::new();
        parsed
            .for_each_accepted(&mut report, |key, _| {
                keys.push(String::from_utf8_lossy(key).into_owned());
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys, vec!["18:92350206MA8T12340D,20:25350200000000123458,"]);
        let reasons: Vec<(u64, &str)> = report.rejected.iter().map(|r| (r.row, r.reason.as_str())).collect();
        assert_eq!(
            reasons,
            vec![
                (1, "duplicate key: appears on rows 1, 4"),
                (2, "key column invoice_no: \"253502000000001234\" does not match the pattern [0-9]{20}"),
                (
                    3,
                    "key column supplier_code: bad unified social credit code: check character is 'Q', the first 17 characters require 'P'"
                ),
                (4, "duplicate key: appears on rows 1, 4"),
            ]
        );
        assert!(report.ignored_columns.is_empty(), "{:?}", report.ignored_columns);
        assert_eq!(report.key_definition, schema.key_kind().definition());
    }
}
