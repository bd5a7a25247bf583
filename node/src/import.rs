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
use xmcredit_contracts::key::{IdentifierRule, KeyKind, PartKind};

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

/// One refused row. `row` counts data rows from 1; `line` is the file line the row
/// starts on (header = 1), which differs from `row + 1` after a quoted cell that spans
/// lines or a blank line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RejectedRow {
    pub row: u64,
    pub line: u64,
    pub key: Option<String>,
    pub reason: String,
}

/// A row accepted with a remark (e.g. a failed GB 11714 check at position 17, or a
/// code accepted only after normalization). `row` and `line` as in [`RejectedRow`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RowWarning {
    pub row: u64,
    pub line: u64,
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
    /// At most [`MAX_LISTED_REJECTIONS`] warnings, in row order; `warnings_total`
    /// counts them all (a file written in lower case warns on every row).
    pub warnings: Vec<RowWarning>,
    pub warnings_total: u64,
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
    fn reject(&mut self, row: u64, line: u64, key: Option<String>, reason: String) {
        self.rows_rejected += 1;
        if self.rejected.len() < MAX_LISTED_REJECTIONS {
            self.rejected.push(RejectedRow { row, line, key, reason });
        }
    }

    fn warn(&mut self, warning: RowWarning) {
        self.warnings_total += 1;
        if self.warnings.len() < MAX_LISTED_REJECTIONS {
            self.warnings.push(warning);
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
                // File lines, as the report's `line` says: what a steward finds in an
                // editor (data row numbers were off by the header and by multi-line cells).
                let all: Vec<String> = group.iter().map(|r| r.line.to_string()).collect();
                // Rows already rejected for a bad value keep that reason.
                for record in group.iter().filter(|r| r.values.is_some()) {
                    report.reject(
                        record.row,
                        record.line,
                        Some(String::from_utf8_lossy(&record.key).into_owned()),
                        format!("duplicate {key_word}: appears on lines {}", all.join(", ")),
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
    // The csv reader strips a UTF-8 byte-order mark itself. Cells are trimmed here, not
    // by the reader: an entity code's key reader sees the cell as written, so that a
    // code accepted only after trimming is reported as normalized; and a cell's own
    // line breaks must stay countable (see `record_line`).
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::Headers)
        .from_path(path)
        .map_err(|e| NodeError::Import(format!("cannot read {}: {e}", path.display())))?;
    // A second handle on the file, to read the byte that ended each record (see
    // `record_line`); lines fall back to the record's start position without it.
    let peek = std::fs::File::open(path).ok();
    let headers =
        reader.headers().map_err(|e| NodeError::Import(format!("{}: header row: {e}", path.display())))?;
    let headers: Vec<String> = headers.iter().map(|h| h.trim_start_matches('\u{feff}').to_string()).collect();
    let position = |name: &str| headers.iter().position(|h| h == name);
    let key_kind = schema.key_kind();
    let key_columns = key_kind.source_columns(schema.key());
    // Which key cells go to the key reader untrimmed: entity codes (their normalization
    // trims and says so); identifier rules get the cell trimmed, as they always did.
    let key_raw: Vec<bool> = match key_kind {
        KeyKind::EntityCode => vec![true],
        KeyKind::Identifier(_) => vec![false],
        KeyKind::Composite(parts) => parts.iter().map(|p| p.kind == PartKind::EntityCode).collect(),
    };
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
        let line_before = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                row_number += 1;
                report.rows_read += 1;
                let line = e.position().map_or(line_before, csv::Position::line);
                report.reject(row_number, line, None, format!("unreadable row: {e}"));
                continue;
            }
        }
        row_number += 1;
        // Every row takes at least a line after the header: the bound also gives files
        // ended by a bare `\r` (old Mac exports), where the reader counts no lines,
        // the line their rows are on.
        let line = record_line(&record, reader.position(), peek.as_ref()).max(row_number + 1);
        report.rows_read += 1;
        if row_number % 50_000 == 0 {
            progress(row_number);
        }
        if record.len() != headers.len() {
            report.reject(
                row_number,
                line,
                None,
                format!("row has {} cells, the header has {}", record.len(), headers.len()),
            );
            continue;
        }
        let key_cells: Vec<&str> = key_at
            .iter()
            .zip(&key_raw)
            .map(|(&i, &raw)| {
                let cell = record.get(i).unwrap_or_default();
                if raw {
                    cell
                } else {
                    cell.trim()
                }
            })
            .collect();
        let key = match key_kind.read(&key_cells) {
            Ok(read) => {
                for warning in read.warnings {
                    report.warn(RowWarning { row: row_number, line, key: read.element.clone(), warning });
                }
                read.element
            }
            Err(e) => {
                let cells: Vec<&str> = key_cells.iter().map(|c| c.trim()).collect();
                report.reject(row_number, line, Some(cells.join(" | ")), e.to_string());
                continue;
            }
        };
        let cells: Vec<&str> = column_at.iter().map(|&i| record.get(i).unwrap_or_default().trim()).collect();
        match schema.parse_row(&cells) {
            Ok(values) => {
                encoded.clear();
                codec.encode_values(&values, &mut encoded)?;
                sorter.push(key.as_bytes(), row_number, line, Some(&encoded))?;
                candidates += 1;
            }
            Err(e) => {
                report.reject(row_number, line, Some(key.clone()), format!("bad value: {e}"));
                sorter.push(key.as_bytes(), row_number, line, None)?;
            }
        }
    }
    progress(row_number);
    let key_word = if key_kind.is_entity_code() { "code" } else { "key" };
    Ok((ParsedCsv { sorter, key_word, candidates }, report))
}

/// The file line `record` starts on (header = 1).
///
/// The record's own position is where the reader started looking for it: before any
/// blank lines it skipped, and before the `\n` of the previous record's CRLF (the
/// reader stops at the `\r`). Counting back from the end is exact: the record spans
/// one line more than the line breaks inside its cells, and it ends on the reader's
/// line after it, or on the line before when the byte that ended it was a `\n` (the
/// reader has counted that one). `peek` reads that byte from the file; without it the
/// start position, never after the true start, is the answer.
fn record_line(record: &csv::StringRecord, after: &csv::Position, peek: Option<&std::fs::File>) -> u64 {
    let start = record.position().map_or(0, csv::Position::line);
    let inner_breaks = record.iter().map(|cell| cell.matches('\n').count() as u64).sum::<u64>();
    let ended_by_newline = match (peek, after.byte().checked_sub(1)) {
        (Some(file), Some(last)) => {
            use std::os::unix::fs::FileExt;
            let mut byte = [0u8; 1];
            match file.read_exact_at(&mut byte, last) {
                Ok(()) => byte[0] == b'\n',
                Err(_) => return start,
            }
        }
        _ => return start,
    };
    let end = if ended_by_newline { after.line().saturating_sub(1) } else { after.line() };
    start.max(end.saturating_sub(inner_breaks))
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
        assert_eq!(report.rejected[0].reason, "duplicate code: appears on lines 2, 4");
        assert_eq!(report.rejected[0].line, 2);
        assert_eq!(report.rejected[1].row, 3);
        assert!(report.rejected[1].reason.starts_with("bad value"), "{:?}", report.rejected[1]);
    }

    /// `line` is the line a row starts on, after a quoted cell spanning lines, a blank
    /// line and CRLF line ends, and for a last row without a final line break; the
    /// duplicate reason cites the same lines. A code written in lower case is accepted
    /// with a warning saying so.
    #[test]
    fn lines_follow_the_file_and_normalized_codes_are_warnings() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("rows.csv");
        std::fs::write(
            &path,
            "credit_code,note,headcount\r\n\
             91350203MA31XEK09P,\"two\r\nlines\",1\r\n\
             \r\n\
             92350206MA8T12340D,plain,x\r\n\
             91350203ma31xek09p,\"three\nlines\nhere\",2\n\
             91350203MA31XEK07H,\"last, \nunterminated\",y",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // `note` is not in the schema: ignored, its line breaks still counted.
        let schema = DatasetSchema::new("d", "credit_code", vec![("headcount".into(), ColumnType::Integer)])
            .unwrap_or_else(|e| panic!("{e}"));
        let (parsed, mut report) =
            read_csv(&path, &schema, &dir.path().join("spill"), |_| {}).unwrap_or_else(|e| panic!("{e}"));
        parsed.for_each_accepted(&mut report, |_, _| Ok(())).unwrap_or_else(|e| panic!("{e}"));
        let rejected: Vec<(u64, u64, &str)> =
            report.rejected.iter().map(|r| (r.row, r.line, r.reason.as_str())).collect();
        assert_eq!(
            rejected,
            vec![
                (1, 2, "duplicate code: appears on lines 2, 6"),
                (2, 5, "bad value: column headcount: \"x\" is not an integer"),
                (3, 6, "duplicate code: appears on lines 2, 6"),
                (4, 9, "bad value: column headcount: \"y\" is not an integer"),
            ]
        );
        let warnings: Vec<(u64, u64, &str)> =
            report.warnings.iter().map(|w| (w.row, w.line, w.warning.as_str())).collect();
        assert_eq!(warnings[0], (3, 6, "code normalized from \"91350203ma31xek09p\""));
        assert_eq!((warnings.len(), report.warnings_total), (2, 2), "{warnings:?}");
        assert_eq!((warnings[1].0, warnings[1].1), (4, 9));
        assert_eq!(report.ignored_columns, vec!["note".to_string()]);
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
                (1, "duplicate key: appears on lines 2, 5"),
                (2, "key column invoice_no: \"253502000000001234\" does not match the pattern [0-9]{20}"),
                (
                    3,
                    "key column supplier_code: bad unified social credit code: check character is 'Q', the first 17 characters require 'P'"
                ),
                (4, "duplicate key: appears on lines 2, 5"),
            ]
        );
        assert!(report.ignored_columns.is_empty(), "{:?}", report.ignored_columns);
        assert_eq!(report.key_definition, schema.key_kind().definition());
    }
}
