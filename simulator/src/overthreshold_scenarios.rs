//! Duplicate financing (design.md computation 2, use 2 "supply-chain finance"): each
//! bank's financed invoices, with seeded frauds (invoices financed at two banks, at
//! three), the overthreshold contract, and the demo scenario `duplicate-financing`,
//! checked against the multiplicities counted in the clear.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::Value;
use xmcredit_node::proto;

use crate::alliance::{final_report, Alliance, NodeHandle};
use crate::contracts::{header, parties, PartyLine};
use crate::scenarios::ScenarioResult;

/// Each bank's dataset of financed receivables, keyed by invoice number.
pub const INVOICES_DATASET: &str = "financed_invoices";
/// Its key column.
pub const INVOICE_KEY: &str = "invoice_no";

/// The invoice key: a 20-digit fully digitalized e-invoice number, written with
/// full-width digits, spaces or hyphens by some systems (ARCHITECTURE.md, "Dataset keys").
pub const INVOICE_KEY_KIND: &str = r#"{ kind = "identifier", normalize = ["fullwidth", "strip_spaces", "strip_hyphens"], pattern = "[0-9]{20}" }"#;
fn invoices_schema() -> String {
    format!(
        "name = \"{INVOICES_DATASET}\"\nkey = \"{INVOICE_KEY}\"\nkey_kind = {INVOICE_KEY_KIND}\ncolumns = [{{ name = \"amount\", type = \"decimal\", scale = 2 }}]\n"
    )
}

/// Every bank's financed invoices, and the frauds seeded among them.
#[derive(Debug, Clone)]
pub struct Financing {
    /// Per bank (in the order given), its invoice numbers, each once.
    pub banks: Vec<Vec<String>>,
    /// The seeded frauds: invoice → the banks (indices) that financed it.
    pub seeded: BTreeMap<String, BTreeSet<usize>>,
}

/// A 20-digit fully digitalized e-invoice number (全电发票号码): year, Fujian's
/// province code, the Xiamen tax bureau, then 14 digits.
fn invoice_number(rng: &mut ChaCha20Rng) -> String {
    format!("263502{:014}", rng.gen_range(0..100_000_000_000_000u64))
}

impl Financing {
    /// `per_bank` invoices at each of `banks` banks, all distinct, then `doubles`
    /// invoices of bank i also financed at bank i+1, and (with 3 or more banks)
    /// `triples` invoices of bank i also financed at banks i+1 and i+2.
    pub fn generate(
        seed: u64,
        banks: usize,
        per_bank: usize,
        doubles: usize,
        triples: usize,
    ) -> Result<Self> {
        anyhow::ensure!(banks >= 2, "duplicate financing needs at least two banks");
        anyhow::ensure!(doubles + triples <= per_bank, "more frauds than invoices");
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x0ef0_7e5b);
        let mut all = BTreeSet::new();
        let mut lists: Vec<Vec<String>> = Vec::with_capacity(banks);
        for _ in 0..banks {
            let mut list = Vec::with_capacity(per_bank + doubles + 2 * triples);
            while list.len() < per_bank {
                let number = invoice_number(&mut rng);
                if all.insert(number.clone()) {
                    list.push(number);
                }
            }
            lists.push(list);
        }
        let mut seeded: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (b, list) in lists.iter().enumerate() {
            let next = (b + 1) % banks;
            for invoice in &list[..doubles] {
                seeded.entry(invoice.clone()).or_default().extend([b, next]);
            }
            if banks >= 3 {
                for invoice in &list[doubles..doubles + triples] {
                    seeded.entry(invoice.clone()).or_default().extend([b, next, (b + 2) % banks]);
                }
            }
        }
        for (invoice, holders) in &seeded {
            for &b in holders {
                if !lists[b].contains(invoice) {
                    lists[b].push(invoice.clone());
                }
            }
        }
        // Frauds sit anywhere in a bank's file, not at the top.
        for list in &mut lists {
            for i in (1..list.len()).rev() {
                let j = rng.gen_range(0..=i);
                list.swap(i, j);
            }
        }
        Ok(Self { banks: lists, seeded })
    }

    /// The plaintext answer: how many banks financed each invoice.
    pub fn multiplicities(&self) -> BTreeMap<&str, u16> {
        let mut counts: BTreeMap<&str, u16> = BTreeMap::new();
        for list in &self.banks {
            for invoice in list {
                *counts.entry(invoice.as_str()).or_default() += 1;
            }
        }
        counts
    }

    /// The plaintext answer bank `b` must receive: its invoices financed at
    /// `threshold` or more banks, with their multiplicity.
    pub fn expected(&self, b: usize, threshold: u16) -> BTreeMap<String, u16> {
        let counts = self.multiplicities();
        self.banks[b]
            .iter()
            .filter_map(|i| counts.get(i.as_str()).filter(|m| **m >= threshold).map(|m| (i.clone(), *m)))
            .collect()
    }

    /// The plaintext histogram: multiplicity → invoices financed at exactly that many
    /// banks.
    pub fn histogram(&self) -> BTreeMap<u16, u64> {
        let mut histogram = BTreeMap::new();
        for m in self.multiplicities().values() {
            *histogram.entry(*m).or_default() += 1;
        }
        histogram
    }
}

/// An invoice number as back-office systems write it: every third in groups of four
/// with hyphens, every third in full-width digits, the rest plain. The key definition
/// normalizes all three to the same key, so the same invoice written differently at two
/// banks still matches (the plaintext answer is over the plain numbers).
fn spelled(invoice: &str, position: usize) -> String {
    match position % 3 {
        1 => {
            let digits: Vec<char> = invoice.chars().collect();
            digits.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
        }
        2 => invoice
            .chars()
            .map(|c| c.to_digit(10).and_then(|d| char::from_u32(0xFF10 + d)).unwrap_or(c))
            .collect(),
        _ => invoice.to_string(),
    }
}

/// Writes bank `b`'s invoices (schema and CSV) under `dir`; amounts vary by position.
pub fn write_invoices(
    dir: &Path,
    file: &str,
    invoices: &[String],
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let mut csv = format!("{INVOICE_KEY},amount\n");
    for (i, invoice) in invoices.iter().enumerate() {
        let spelled = spelled(invoice, i);
        let _ = writeln!(csv, "{spelled},{}.{:02}", 50_000 + (i * 7919) % 900_000, i % 100);
    }
    let schema = dir.join(format!("{file}.schema.toml"));
    let data = dir.join(format!("{file}.csv"));
    std::fs::write(&schema, invoices_schema())?;
    std::fs::write(&data, csv)?;
    Ok((schema, data))
}

/// Imports a dataset whose schema declares its key kind (invoice numbers are not
/// entity codes) through the node's admin service; fails unless it commits.
pub async fn import_ids(
    node: &NodeHandle,
    dataset: &str,
    files: &(std::path::PathBuf, std::path::PathBuf),
) -> Result<Value> {
    let schema_toml = std::fs::read_to_string(&files.0)?;
    let stream = node
        .admin()
        .await?
        .import(proto::ImportRequest {
            dataset: dataset.to_string(),
            csv_path: std::fs::canonicalize(&files.1)?.display().to_string(),
            schema_toml,
            key_kind: String::new(),
            allow_rejects: false,
        })
        .await?
        .into_inner();
    let report = final_report(stream).await?;
    if report["committed"] != Value::Bool(true) {
        bail!("import of {dataset} into {} did not commit: {report}", node.id);
    }
    Ok(report)
}

/// An overthreshold contract: `parties` (with their roles), a `financed_invoices`
/// dataset keyed by `invoice_no` for every contributor, `own_matches` to each
/// contributor and `histogram` to the coordinator, the threshold (omitted: the default
/// 2), each contributor's daily quota and minimum set size, and the maximum set size.
pub fn contract(
    id: &str,
    purpose: &str,
    members: &[PartyLine<'_>],
    threshold: Option<u32>,
    quota: u64,
    min_set_size: u64,
    max_set_size: u64,
) -> String {
    let mut text = header(id, purpose);
    text.push_str("[computation]\nkind = \"overthreshold\"\n");
    if let Some(t) = threshold {
        let _ = writeln!(text, "threshold = {t}");
    }
    text.push('\n');
    parties(&mut text, members);
    let contributors: Vec<&str> =
        members.iter().filter(|p| p.roles.contains(&"contributor")).map(|p| p.node).collect();
    for c in &contributors {
        let _ = write!(
            text,
            "[[datasets]]\nparty = \"{c}\"\nname = \"{INVOICES_DATASET}\"\nkey = \"{INVOICE_KEY}\"\nkey_kind = {INVOICE_KEY_KIND}\ncolumns = []\n\n"
        );
    }
    for c in &contributors {
        let _ = write!(text, "[[receivers]]\nnode = \"{c}\"\nform = \"own_matches\"\n\n");
    }
    for p in members.iter().filter(|p| p.roles.contains(&"coordinator")) {
        let _ = write!(text, "[[receivers]]\nnode = \"{}\"\nform = \"histogram\"\n\n", p.node);
    }
    let each = |n: u64| contributors.iter().map(|c| format!("{c} = {n}")).collect::<Vec<_>>().join(", ");
    let _ = write!(
        text,
        "[limits]\nmin_set_size = {{ {} }}\nlookups_per_day = {{ {} }}\nmin_contributors = {}\nmax_set_size = {max_set_size}\n",
        each(min_set_size),
        each(quota),
        contributors.len()
    );
    text
}

/// A contributor's result file (`outputs/overthreshold-<contract>-<session>.json`):
/// its invoices at or over the threshold, with their multiplicity.
pub fn read_result(
    node: &NodeHandle,
    contract: &str,
    session: &str,
) -> Result<(BTreeMap<String, u16>, Value)> {
    let path = node.dir.join("outputs").join(format!("overthreshold-{contract}-{session}.json"));
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let matches = report["matches"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), u16::try_from(v.as_u64()?).ok()?))).collect())
        .unwrap_or_default();
    Ok((matches, report))
}

/// The coordinator's histogram as the report has it.
pub fn histogram_of(report: &Value) -> BTreeMap<u16, u64> {
    report["histogram"]
        .as_object()
        .map(|h| h.iter().filter_map(|(m, c)| Some((m.parse().ok()?, c.as_u64()?))).collect())
        .unwrap_or_default()
}

/// The demo's scenario `duplicate-financing`: the credit center coordinates and sits on
/// the committee with the first two banks; every bank contributes its financed
/// invoices (with seeded frauds at two and three banks); each bank's answer and the
/// histogram are compared with the plaintext counts.
pub async fn duplicate_financing(
    alliance: &Alliance,
    dir: &Path,
    banks: &[String],
    seed: u64,
    per_bank: usize,
) -> Result<ScenarioResult> {
    let id = "credit-center.duplicate-financing";
    let financing = Financing::generate(seed, banks.len(), per_bank, 5, 3)?;
    for (b, bank) in banks.iter().enumerate() {
        let files = write_invoices(dir, &format!("invoices-{bank}"), &financing.banks[b])?;
        import_ids(alliance.node(bank)?, INVOICES_DATASET, &files).await?;
    }
    let center = alliance.node("credit-center")?;
    let mut lines = vec![PartyLine {
        node: center.id.as_str(),
        public_key: &center.public_key,
        roles: &["committee", "coordinator"],
    }];
    for (b, bank) in banks.iter().enumerate() {
        let node = alliance.node(bank)?;
        let roles: &[&str] = if b < 2 { &["committee", "contributor"] } else { &["contributor"] };
        lines.push(PartyLine { node: node.id.as_str(), public_key: &node.public_key, roles });
    }
    let max = financing.banks.iter().map(Vec::len).max().unwrap_or(0) as u64;
    let toml = contract(
        id,
        "信用+供应链：识别在两家及以上银行融资的同一发票 (simulator)",
        &lines,
        None,
        (max * 4).max(1000),
        1,
        max.next_power_of_two().max(1024),
    );
    let signers: Vec<&str> = banks.iter().map(String::as_str).collect();
    alliance.agree("credit-center", &toml, id, &signers).await?;
    let started = Instant::now();
    let report = center.run("overthreshold", id).await.context("running duplicate-financing")?;
    let wall_s = started.elapsed().as_secs_f64();
    let session = report["session"].as_str().unwrap_or_default().to_string();
    let mut mismatches = Vec::new();
    let mut bytes_total = 0u64;
    let mut found = 0usize;
    let mut sizes = BTreeMap::new();
    for (b, bank) in banks.iter().enumerate() {
        let (got, bank_report) = read_result(alliance.node(bank)?, id, &session)?;
        bytes_total += bank_report["bytes_sent"].as_u64().unwrap_or(0)
            + bank_report["bytes_received"].as_u64().unwrap_or(0);
        sizes.insert(bank.clone(), financing.banks[b].len() as u64);
        let expected = financing.expected(b, 2);
        found += got.len();
        if got != expected {
            mismatches.push(format!("{bank}: got {} matches, expected {}", got.len(), expected.len()));
        }
    }
    let histogram = histogram_of(&report);
    if histogram != financing.histogram() {
        mismatches.push(format!("histogram {histogram:?}, expected {:?}", financing.histogram()));
    }
    let seeded_found = financing.seeded.len();
    let mut extra = BTreeMap::new();
    extra.insert("use".to_string(), Value::from("duplicate-financing"));
    extra.insert("contract".to_string(), Value::from(id));
    extra.insert("threshold".to_string(), report["threshold"].clone());
    extra.insert("committee".to_string(), report["committee"].clone());
    extra.insert("histogram".to_string(), report["histogram"].clone());
    extra.insert("seeded_frauds".to_string(), Value::from(seeded_found));
    Ok(ScenarioResult {
        name: format!("duplicate-financing ({} banks, committee of {})", banks.len(), 3.min(banks.len() + 1)),
        computation: "overthreshold".into(),
        output: "own_matches".into(),
        sizes,
        verified: mismatches.is_empty() && !financing.seeded.is_empty(),
        wall_s,
        bytes_total,
        detail: if mismatches.is_empty() {
            format!(
                "{seeded_found} seeded frauds: every bank got exactly its invoices financed at 2+ banks ({found} answers, no false positive); coordinator histogram {}",
                report["histogram"]
            )
        } else {
            mismatches.join("; ")
        },
        extra,
    })
}
