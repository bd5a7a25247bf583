//! The simulated parties' datasets as the CSV files and schemas an operator would
//! import: the credit center's registry, A-grade taxpayer list and dishonesty list, and
//! each bank's loan applicants.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::data::World;

/// A CSV file and its schema, ready for `xmcredit-node import`.
#[derive(Debug, Clone)]
pub struct DatasetFile {
    pub name: &'static str,
    pub csv: PathBuf,
    pub schema: PathBuf,
    pub rows: usize,
}

fn write(
    dir: &Path,
    name: &'static str,
    schema: &str,
    csv: &str,
    rows: usize,
) -> anyhow::Result<DatasetFile> {
    let csv_path = dir.join(format!("{name}.csv"));
    let schema_path = dir.join(format!("{name}.schema.toml"));
    // A byte-order mark, as spreadsheet exports write it; the importer accepts it.
    std::fs::write(&csv_path, format!("\u{feff}{csv}"))?;
    std::fs::write(&schema_path, schema)?;
    Ok(DatasetFile { name, csv: csv_path, schema: schema_path, rows })
}

/// The credit center's three datasets.
pub fn credit_center_files(world: &World, dir: &Path) -> anyhow::Result<Vec<DatasetFile>> {
    let registry_schema = r#"name = "registry"
key = "credit_code"
columns = [
  { name = "district", type = "enum", values = ["350203", "350205", "350206", "350211", "350212", "350213"] },
  { name = "kind", type = "enum", values = ["enterprise", "sole_proprietor", "cooperative"] },
  { name = "tax_grade", type = "enum", values = ["A", "B", "M", "C", "D"] },
  { name = "si_headcount", type = "integer" },
  { name = "utility_arrears_months", type = "integer" },
  { name = "dishonest", type = "bool" },
  { name = "credit_grade", type = "enum", values = ["A", "B", "C", "D"] },
]
"#;
    let mut registry = String::from(
        "credit_code,district,kind,tax_grade,si_headcount,utility_arrears_months,dishonest,credit_grade\n",
    );
    for e in &world.entities {
        let kind = match e.kind {
            xmcredit_contracts::entity_code::EntityKind::Enterprise => "enterprise",
            xmcredit_contracts::entity_code::EntityKind::SoleProprietor => "sole_proprietor",
            _ => "cooperative",
        };
        let _ = writeln!(
            registry,
            "{},{},{},{},{},{},{},{}",
            e.code,
            e.district,
            kind,
            e.tax_grade,
            e.si_headcount,
            e.utility_arrears_months,
            e.dishonest,
            e.credit_grade
        );
    }
    let a_grade_schema = "name = \"a_grade_taxpayers\"\nkey = \"credit_code\"\ncolumns = [{ name = \"tax_year\", type = \"integer\" }]\n";
    let mut a_grade = String::from("credit_code,tax_year\n");
    let mut a_rows = 0;
    for e in world.entities.iter().filter(|e| e.tax_grade == "A") {
        let _ = writeln!(a_grade, "{},2025", e.code);
        a_rows += 1;
    }
    let dishonest_schema =
        "name = \"dishonesty_list\"\nkey = \"credit_code\"\ncolumns = [{ name = \"listed_on\", type = \"date\" }]\n";
    let mut dishonest = String::from("credit_code,listed_on\n");
    let mut d_rows = 0;
    for (i, e) in world.entities.iter().filter(|e| e.dishonest).enumerate() {
        let _ = writeln!(dishonest, "{},2025-{:02}-{:02}", e.code, 1 + i % 12, 1 + i % 28);
        d_rows += 1;
    }
    Ok(vec![
        write(dir, "registry", registry_schema, &registry, world.entities.len())?,
        write(dir, "a_grade_taxpayers", a_grade_schema, &a_grade, a_rows)?,
        write(dir, "dishonesty_list", dishonest_schema, &dishonest, d_rows)?,
    ])
}

/// Bank `bank`'s loan applicants.
pub fn bank_files(world: &World, bank: usize, dir: &Path) -> anyhow::Result<Vec<DatasetFile>> {
    let schema =
        "name = \"loan_applicants\"\nkey = \"credit_code\"\ncolumns = [{ name = \"amount\", type = \"decimal\", scale = 2 }]\n";
    let mut csv = String::from("credit_code,amount\n");
    for a in &world.applicants[bank] {
        // Lower case with padding, as a branch's export might have it: import normalizes.
        let code = if a.amount_cents % 7 == 0 {
            format!(" {} ", a.code.as_str().to_lowercase())
        } else {
            a.code.to_string()
        };
        let _ = writeln!(csv, "{},{}.{:02}", code, a.amount_cents / 100, a.amount_cents % 100);
    }
    Ok(vec![write(dir, "loan_applicants", schema, &csv, world.applicants[bank].len())?])
}
