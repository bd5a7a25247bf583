//! Supplier exposure (信用+供应链, issue 14): how much each supplier that presented
//! receivables to a bank has already financed at every bank, its receivables from the
//! chain leader summed across banks with lookup `value` (SecAgg over the banks), checked
//! against the sum made in the clear. A bank learns the total for its own presenting
//! suppliers only; no bank learns another's book.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use xmcredit_contracts::entity_code::EntityCode;

use crate::alliance::Alliance;
use crate::lookup_scenarios::{every_bank_sums, result};
use crate::scenarios::ScenarioResult;
use crate::supply_chain::SupplyChain;

/// Each bank's financed receivables, summed per supplier (fen).
pub const FINANCING_DATASET: &str = "supplier_financing";
/// The querying bank's suppliers that presented receivables to it.
pub const PRESENTING_DATASET: &str = "presenting_suppliers";
/// Advance rate: a bank finances 80% of a receivable's face amount.
const ADVANCE_PERCENT: u64 = 80;

/// Who financed what: ledger entry `i` at bank `i mod n`, and every fifth entry at the
/// next bank as well (the duplicate financing `overthreshold` finds). Per bank, the
/// financed fen per supplier.
pub fn financing(chain: &SupplyChain, banks: usize) -> Vec<BTreeMap<EntityCode, u64>> {
    let mut books = vec![BTreeMap::new(); banks];
    for (i, payable) in chain.ledger.iter().enumerate() {
        let advance = payable.amount_cents * ADVANCE_PERCENT / 100;
        let mut at = vec![i % banks];
        if i % 5 == 0 && banks > 1 {
            at.push((i + 1) % banks);
        }
        for b in at {
            *books[b].entry(payable.supplier).or_insert(0) += advance;
        }
    }
    books
}

/// Writes and imports every bank's financing per supplier and `banks[0]`'s presenting
/// suppliers.
async fn import(
    alliance: &Alliance,
    banks: &[String],
    books: &[BTreeMap<EntityCode, u64>],
    presenting: &BTreeSet<EntityCode>,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let financing_schema = format!(
        "name = \"{FINANCING_DATASET}\"\nkey = \"credit_code\"\ncolumns = [{{ name = \"financed\", type = \"decimal\", scale = 2 }}]\n"
    );
    let presenting_schema = format!("name = \"{PRESENTING_DATASET}\"\nkey = \"credit_code\"\ncolumns = []\n");
    let mut files = Vec::new();
    for (bank, book) in banks.iter().zip(books) {
        let mut csv = String::from("credit_code,financed\n");
        for (code, fen) in book {
            let _ = writeln!(csv, "{code},{}.{:02}", fen / 100, fen % 100);
        }
        files.push((bank.as_str(), FINANCING_DATASET, financing_schema.clone(), csv, book.len()));
    }
    let mut csv = String::from("credit_code\n");
    for code in presenting {
        let _ = writeln!(csv, "{code}");
    }
    files.push((banks[0].as_str(), PRESENTING_DATASET, presenting_schema, csv, presenting.len()));
    for (node, name, schema, csv, rows) in files {
        let (schema_path, csv_path) =
            (dir.join(format!("{node}-{name}.schema.toml")), dir.join(format!("{node}-{name}.csv")));
        std::fs::write(&schema_path, schema)?;
        std::fs::write(&csv_path, csv)?;
        let report = alliance.node(node)?.import(name, &schema_path, &csv_path, false).await?;
        if report["committed"].as_bool() != Some(true)
            || report["rows_accepted"].as_u64() != Some(rows as u64)
        {
            bail!("{node} did not import {name} whole: {report}");
        }
    }
    Ok(())
}

/// Runs the scenario: every bank a provider, `banks[0]` also the querier for the
/// suppliers that presented receivables to it.
pub async fn run(
    alliance: &Alliance,
    chain: &SupplyChain,
    banks: &[String],
    dir: &Path,
) -> Result<ScenarioResult> {
    let books = financing(chain, banks.len());
    let presenting: BTreeSet<EntityCode> = chain.presented.iter().map(|r| r.supplier).collect();
    import(alliance, banks, &books, &presenting, dir).await?;
    let (published, report, wall_s) = every_bank_sums(
        alliance,
        banks,
        "credit-center.supplier-exposure",
        "信用+供应链: each presenting supplier's receivables already financed at every bank, exact to the fen",
        (FINANCING_DATASET, "financed"),
        PRESENTING_DATASET,
    )
    .await?;
    let querier = banks[0].as_str();
    let providers: Vec<&str> = banks.iter().map(String::as_str).collect();
    let results = &report["results"];
    let (mut mismatches, mut elsewhere) = (0, 0);
    for supplier in &presenting {
        let want: u64 = books.iter().map(|b| b.get(supplier).copied().unwrap_or(0)).sum();
        let own = books[0].get(supplier).copied().unwrap_or(0);
        elsewhere += usize::from(want > own);
        mismatches += usize::from(results[supplier.as_str()]["value"].as_u64() != Some(want));
    }
    let mut row = result(
        format!("supplier exposure ({} → {querier})", providers.join(", ")),
        "supplier-exposure",
        "value",
        &published,
        &report,
        wall_s,
        mismatches,
        format!(
            "{querier} learned, for the {} suppliers that presented receivables to it, what each has financed at {} banks together ({elsewhere} also elsewhere); {mismatches} differ from the plaintext",
            presenting.len(),
            providers.len()
        ),
    );
    row.verified &= !presenting.is_empty();
    Ok(row)
}
