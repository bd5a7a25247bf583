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

use std::path::Path;

use serde::Serialize;
use xmcredit_contracts::data::DatasetSchema;
use xmcredit_contracts::key::{IdentifierRule, KeyKind};

use crate::store::DatasetRow;
use crate::NodeError;

/// At most this many rejected rows are listed one by one (the report says how many
/// there were in all), so a wholly wrong file does not produce a gigantic report.
pub const MAX_LISTED_REJECTIONS: usize = 1000;
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

/// Reads and checks `path` against `schema`. Returns the accepted rows sorted by key
/// and the report; nothing is written here.
pub fn read_csv(
    path: &Path,
    schema: &DatasetSchema,
    mut progress: impl FnMut(u64),
) -> Result<(Vec<DatasetRow>, ImportReport), NodeError> {
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

    // Every row with a readable key, in file order, with its values if they parsed: a
    // code on two rows is a duplicate even when one of the rows is also bad in another
    // way. One vector, sorted once, costs far less than maps of strings for 10^6 rows.
    let mut keyed: Vec<(String, u64, Option<Vec<xmcredit_contracts::data::Value>>)> = Vec::new();
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
            Ok(values) => keyed.push((key, row_number, Some(values))),
            Err(e) => {
                report.reject(row_number, Some(key.clone()), format!("bad value: {e}"));
                keyed.push((key, row_number, None));
            }
        }
    }
    progress(row_number);
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let what = if key_kind.is_entity_code() { "code" } else { "key" };
    let mut rows: Vec<DatasetRow> = Vec::with_capacity(keyed.len());
    let mut group: Vec<(String, u64, Option<Vec<xmcredit_contracts::data::Value>>)> = Vec::new();
    let mut entries = keyed.into_iter().peekable();
    while let Some(entry) = entries.next() {
        group.push(entry);
        if entries.peek().is_some_and(|next| next.0 == group[0].0) {
            continue;
        }
        if group.len() == 1 {
            if let Some((key, _, Some(values))) = group.pop() {
                rows.push(DatasetRow { key, values });
            }
        } else {
            let all: Vec<String> = group.iter().map(|(_, row, _)| row.to_string()).collect();
            // Rows already rejected for a bad value keep that reason.
            for (key, row, _) in group.iter().filter(|(_, _, values)| values.is_some()) {
                report.reject(
                    *row,
                    Some(key.clone()),
                    format!("duplicate {what}: appears on rows {}", all.join(", ")),
                );
            }
        }
        group.clear();
    }
    report.rejected.sort_by_key(|r| r.row);
    report.rows_accepted = rows.len() as u64;
    Ok((rows, report))
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
        let (rows, report) = read_csv(&path, &schema, |_| {}).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), vec!["92350206MA8T12340D"]);
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
        let (rows, report) = read_csv(&path, &schema, |_| {}).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            vec!["18:92350206MA8T12340D,20:25350200000000123458,"]
        );
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
