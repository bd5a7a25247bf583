//! `bench-overthreshold`: duplicate detection between real node processes, against the
//! floor measured in the same run. Banks with `n` financed invoices each (one in eight
//! shared with the next bank, one in sixteen with the next two), a committee of the
//! credit center and the first banks, threshold 2. The floor is
//! `FloorCosts::overthreshold_cpu_seconds` over every bank's items (per item:
//! hash-to-group, blind, one evaluation per committee member, the decoding of each
//! reply, unblind, tag) divided by the cores, since every process shares them.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::alliance::{Alliance, NodeProgram};
use crate::contracts::PartyLine;
use crate::floor::FloorReport;
use crate::overthreshold_scenarios::{
    contract, histogram_of, import_ids, read_result, write_invoices, Financing, INVOICES_DATASET,
};

#[derive(Debug, Serialize)]
pub struct OverthresholdBench {
    pub banks: usize,
    pub items_per_bank: usize,
    pub committee: usize,
    pub threshold: u32,
    /// The coordinator's run, from the operator's command to the last bank's result.
    pub wall_s: f64,
    /// Per bank, from Announce to its tags (blind, evaluations, unblind, tags).
    pub bank_evaluate_s: Vec<f64>,
    pub floor_s: f64,
    pub ratio_to_floor: f64,
    /// Every byte each bank sent and received (to the committee and the coordinator),
    /// summed, per item.
    pub bytes_per_element: f64,
    pub bytes_total: u64,
    pub matches: u64,
    pub verified: bool,
    pub floor: FloorReport,
}

/// One run of `banks` banks × `n` items, committee of `committee` (the credit center
/// and the first `committee - 1` banks).
pub async fn run(
    program: NodeProgram,
    base: &Path,
    banks: usize,
    n: usize,
    committee: usize,
) -> Result<OverthresholdBench> {
    anyhow::ensure!((3..=26).contains(&banks), "--banks must be between 3 and 26");
    anyhow::ensure!((1..=banks + 1).contains(&committee), "--committee must be between 1 and banks + 1");
    anyhow::ensure!(n >= 32, "--n must be at least 32");
    let floor = FloorReport::measure(4096);
    let (doubles, triples) = (n / 16, n / 32);
    let financing = Financing::generate(2026, banks, n - doubles - 2 * triples, doubles, triples)?;
    let bank_ids: Vec<String> = (0..banks).map(|i| format!("bank-{}", (b'a' + i as u8) as char)).collect();
    let mut ids = vec!["credit-center"];
    ids.extend(bank_ids.iter().map(String::as_str));
    let alliance = Alliance::create_with_limits(
        program,
        base,
        &ids,
        true,
        &format!("dataset_lookups_per_day = {}", 4 * n as u64),
    )
    .await?;
    let data = base.join("bench-data");
    std::fs::create_dir_all(&data)?;
    for (b, bank) in bank_ids.iter().enumerate() {
        let files = write_invoices(&data, &format!("invoices-{bank}"), &financing.banks[b])?;
        import_ids(alliance.node(bank)?, INVOICES_DATASET, &files).await?;
    }
    let center = alliance.node("credit-center")?;
    let member_roles: &[&str] = &["committee", "contributor"];
    let mut lines = vec![PartyLine {
        node: center.id.as_str(),
        public_key: &center.public_key,
        roles: &["committee", "coordinator"],
    }];
    for (b, bank) in bank_ids.iter().enumerate() {
        let node = alliance.node(bank)?;
        let roles: &[&str] = if b + 1 < committee { member_roles } else { &["contributor"] };
        lines.push(PartyLine { node: node.id.as_str(), public_key: &node.public_key, roles });
    }
    let largest = financing.banks.iter().map(Vec::len).max().unwrap_or(0) as u64;
    let id = "credit-center.bench-overthreshold";
    let toml = contract(id, "benchmark", &lines, Some(2), 2 * largest, 1, largest);
    let signers: Vec<&str> = bank_ids.iter().map(String::as_str).collect();
    alliance.agree("credit-center", &toml, id, &signers).await?;

    let started = Instant::now();
    let report = center.run("overthreshold", id).await.context("the overthreshold run")?;
    let wall_s = started.elapsed().as_secs_f64();
    let session = report["session"].as_str().unwrap_or_default().to_string();
    let mut verified = histogram_of(&report) == financing.histogram();
    let (mut bytes_total, mut matches) = (0u64, 0u64);
    let mut bank_evaluate_s = Vec::new();
    for (b, bank) in bank_ids.iter().enumerate() {
        let (got, bank_report) = read_result(alliance.node(bank)?, id, &session)?;
        verified &= got == financing.expected(b, 2);
        matches += got.len() as u64;
        bytes_total += bank_report["bytes_sent"].as_u64().unwrap_or(0)
            + bank_report["bytes_received"].as_u64().unwrap_or(0);
        bank_evaluate_s.push(bank_report["evaluate_s"].as_f64().unwrap_or(0.0));
    }
    let items: u64 = financing.banks.iter().map(|b| b.len() as u64).sum();
    let floor_s = floor.costs.overthreshold_cpu_seconds(items, committee as u64) / floor.cores.max(1) as f64;
    Ok(OverthresholdBench {
        banks,
        items_per_bank: n,
        committee,
        threshold: 2,
        wall_s,
        bank_evaluate_s,
        floor_s,
        ratio_to_floor: wall_s / floor_s.max(1e-9),
        bytes_per_element: bytes_total as f64 / items.max(1) as f64,
        bytes_total,
        matches,
        verified,
        floor,
    })
}
