//! The secure-aggregation scenarios: the credit center sums the banks' outstanding loans
//! per district, per industry (short vectors) and per registered entity over the public
//! universe of codes (a long vector), each checked against the plaintext sum; then the
//! same with one bank killed before it sends its masked input (the sum is exactly the
//! others'), one killed after it (its input still counts), and too many killed (a clear
//! error, nothing unmasked); and a second run of a contract in the same epoch, which the
//! banks refuse (a differencing attack: they send one masked input per contract and
//! epoch, so each run above has a contract of its own).
//!
//! Banks are made to drop at an exact point by restarting them with the node's
//! fault-injection hook (`XMCREDIT_TEST_EXIT_AT`, see `xmcredit_node::run::secagg::fault`);
//! they exit as if killed, and are restarted without it afterwards.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use serde_json::Value;
use sha2::{Digest, Sha256};
use xmcredit_contracts::entity_code::{EntityCode, EntityKind, XIAMEN_DISTRICTS};
use xmcredit_node::run::secagg::fault::{ExitPoint, EXIT_AT_VAR};
use xmcredit_node::run::secagg::sum_digest;

use crate::alliance::Alliance;
use crate::contracts::{header, parties, PartyLine};
use crate::data::World;
use crate::datasets::DatasetFile;
use crate::scenarios::ScenarioResult;

/// The scenarios' contracts. A contributor sends a masked input in at most one session
/// per (contract, epoch) (see `xmcredit_node::run::secagg`): two sums over survivor sets
/// that differ by one bank would give that bank's vector away by subtraction. So every
/// run that reaches the masked inputs has a contract of its own, which every bank signs.
pub const BY_DISTRICT: &str = "credit-center.pro-secagg-loans-by-district-all";
pub const BY_DISTRICT_DROP_BEFORE: &str = "credit-center.pro-secagg-loans-by-district-drop-before";
pub const BY_DISTRICT_DROP_AFTER: &str = "credit-center.pro-secagg-loans-by-district-drop-after";
pub const BY_DISTRICT_ABORT: &str = "credit-center.pro-secagg-loans-by-district-abort";
pub const BY_INDUSTRY: &str = "credit-center.pro-secagg-loans-by-industry-all";
pub const BY_ENTITY: &str = "credit-center.pro-secagg-loans-by-entity-all";
pub const BY_ENTITY_DROP_AFTER: &str = "credit-center.pro-secagg-loans-by-entity-drop-after";

/// The banks' loan-book dataset.
pub const LOANS_DATASET: &str = "loans";
/// Industry sections of GB/T 4754-2017 the synthetic borrowers fall in, with weights:
/// C manufacturing, F wholesale and retail, E construction, G transport, I software and
/// IT, H hospitality, L leasing and business services, A agriculture.
pub const INDUSTRIES: [(&str, u32); 8] =
    [("C", 24), ("F", 30), ("E", 10), ("G", 8), ("I", 9), ("H", 8), ("L", 8), ("A", 3)];

/// One loan of a bank's book: the borrower and its outstanding balance in fen.
#[derive(Debug, Clone)]
pub struct Loan {
    pub code: EntityCode,
    pub district: &'static str,
    pub industry: &'static str,
    pub outstanding_fen: u64,
    /// Whether the borrower is in the credit center's registry (the universe).
    pub registered: bool,
}

/// The borrower's industry section: a registry fact, the same at every bank, derived
/// from the code so that the world needs no new field.
pub fn industry_of(code: &EntityCode) -> &'static str {
    let digest = Sha256::digest(code.as_str().as_bytes());
    let total: u32 = INDUSTRIES.iter().map(|(_, w)| w).sum();
    let mut pick = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % total;
    for (industry, weight) in INDUSTRIES {
        if pick < weight {
            return industry;
        }
        pick -= weight;
    }
    INDUSTRIES[0].0
}

fn district_of(code: &EntityCode) -> &'static str {
    let division = &code.as_str()[2..8];
    XIAMEN_DISTRICTS.iter().map(|(d, _)| *d).find(|d| *d == division).unwrap_or(XIAMEN_DISTRICTS[0].0)
}

/// Each bank's loan book, deterministic from the world and `seed`: about a quarter of
/// the registered entities borrow from each bank (so many borrow from several), plus a
/// few borrowers the registry does not know (they count per district and industry but
/// are outside the universe). Balances run from 5 thousand to 3 million yuan.
pub fn loan_books(world: &World, banks: usize, seed: u64) -> Result<Vec<Vec<Loan>>> {
    let mut books = Vec::with_capacity(banks);
    for bank in 0..banks {
        let mut rng: ChaCha20Rng = rand::SeedableRng::seed_from_u64(seed ^ (0x05ec_4a66 + bank as u64));
        let mut book = Vec::new();
        for entity in &world.entities {
            if rng.gen_bool(0.25) {
                book.push(Loan {
                    code: entity.code,
                    district: entity.district,
                    industry: industry_of(&entity.code),
                    outstanding_fen: rng.gen_range(5_000..3_000_000u64) * 100 + rng.gen_range(0..100),
                    registered: true,
                });
            }
        }
        let unregistered = (book.len() / 20).max(1);
        let registry = world.entity();
        for _ in 0..unregistered {
            let (district, _) = XIAMEN_DISTRICTS[rng.gen_range(0..XIAMEN_DISTRICTS.len())];
            let code = EntityCode::random(&mut rng, EntityKind::Enterprise, district)?;
            if registry.contains_key(&code) || book.iter().any(|l: &Loan| l.code == code) {
                continue;
            }
            book.push(Loan {
                code,
                district: district_of(&code),
                industry: industry_of(&code),
                outstanding_fen: rng.gen_range(5_000..3_000_000u64) * 100,
                registered: false,
            });
        }
        books.push(book);
    }
    Ok(books)
}

/// A bank's loan book as the CSV and schema its operator would import.
pub fn loans_file(book: &[Loan], dir: &Path) -> Result<DatasetFile> {
    std::fs::create_dir_all(dir)?;
    let districts: Vec<String> = XIAMEN_DISTRICTS.iter().map(|(d, _)| format!("\"{d}\"")).collect();
    let industries: Vec<String> = INDUSTRIES.iter().map(|(i, _)| format!("\"{i}\"")).collect();
    let schema = format!(
        "name = \"{LOANS_DATASET}\"\nkey = \"credit_code\"\ncolumns = [\n  {{ name = \"district\", type = \"enum\", values = [{}] }},\n  {{ name = \"industry\", type = \"enum\", values = [{}] }},\n  {{ name = \"outstanding\", type = \"decimal\", scale = 2 }},\n]\n",
        districts.join(", "),
        industries.join(", ")
    );
    let mut csv = String::from("credit_code,district,industry,outstanding\n");
    for loan in book {
        let _ = writeln!(
            csv,
            "{},{},{},{}.{:02}",
            loan.code,
            loan.district,
            loan.industry,
            loan.outstanding_fen / 100,
            loan.outstanding_fen % 100
        );
    }
    let csv_path = dir.join(format!("{LOANS_DATASET}.csv"));
    let schema_path = dir.join(format!("{LOANS_DATASET}.schema.toml"));
    std::fs::write(&csv_path, csv)?;
    std::fs::write(&schema_path, schema)?;
    Ok(DatasetFile { name: LOANS_DATASET, csv: csv_path, schema: schema_path, rows: book.len() })
}

/// A secagg contract: the coordinator receives the sum of the contributors' vectors.
#[derive(Debug, Clone)]
pub struct SecaggContract<'a> {
    pub id: &'a str,
    pub purpose: &'a str,
    pub coordinator: PartyLine<'a>,
    pub contributors: Vec<PartyLine<'a>>,
    pub threshold: usize,
    pub min_contributors: usize,
    pub dataset: &'a str,
    pub value_column: &'a str,
    /// A column of the dataset, or its key `credit_code` (with no groups: the universe).
    pub group_column: &'a str,
    /// Vector positions; empty for the universe.
    pub groups: Vec<String>,
    pub output_bits: u32,
}

impl SecaggContract<'_> {
    /// The contract as TOML, as an operator would write it.
    pub fn toml(&self) -> String {
        let mut text = header(self.id, self.purpose);
        let groups: Vec<String> = self.groups.iter().map(|g| format!("\"{g}\"")).collect();
        let _ = write!(
            text,
            "[computation]\nkind = \"secagg\"\nthreshold = {}\nvalue_column = \"{}\"\ngroup_column = \"{}\"\ngroups = [{}]\n\n",
            self.threshold,
            self.value_column,
            self.group_column,
            groups.join(", ")
        );
        let mut all = vec![self.coordinator.clone()];
        all.extend(self.contributors.iter().cloned());
        parties(&mut text, &all);
        let mut columns = vec![format!("\"{}\"", self.value_column)];
        if self.group_column != "credit_code" {
            columns.push(format!("\"{}\"", self.group_column));
        }
        for contributor in &self.contributors {
            let _ = write!(
                text,
                "[[datasets]]\nparty = \"{}\"\nname = \"{}\"\nkey = \"credit_code\"\ncolumns = [{}]\n\n",
                contributor.node,
                self.dataset,
                columns.join(", ")
            );
        }
        let _ = write!(
            text,
            "[[receivers]]\nnode = \"{}\"\nform = \"sum\"\n\n[limits]\nmin_contributors = {}\noutput_bits = {}\n",
            self.coordinator.node, self.min_contributors, self.output_bits
        );
        text
    }
}

/// The plaintext answer: entry i = the sum over `books` of the loans whose group
/// (`group_of`) is `positions[i]`.
pub fn expected_sum<'a>(
    books: impl IntoIterator<Item = &'a [Loan]>,
    positions: &[String],
    group_of: impl Fn(&Loan) -> String,
) -> Vec<u64> {
    let index: BTreeMap<&str, usize> = positions.iter().enumerate().map(|(i, p)| (p.as_str(), i)).collect();
    let mut sum = vec![0u64; positions.len()];
    for book in books {
        for loan in book {
            if let Some(&i) = index.get(group_of(loan).as_str()) {
                sum[i] += loan.outstanding_fen;
            }
        }
    }
    sum
}

/// Stops `bank` and starts it again so that it exits at `point` in its next session
/// (`None`: runs normally again).
pub async fn restart_with_exit(alliance: &mut Alliance, bank: &str, point: Option<ExitPoint>) -> Result<()> {
    let node = alliance.node_mut(bank)?;
    // A node that already exited at its fault point is only reaped here.
    let _ = node.kill();
    node.set_env(EXIT_AT_VAR, point.map_or("", ExitPoint::name));
    node.start().await.with_context(|| format!("restarting {bank}"))
}

/// The coordinator's report, or the error it ended with.
async fn run_secagg(alliance: &Alliance, contract: &str) -> (Result<Value>, f64) {
    let started = Instant::now();
    let result = match alliance.node("credit-center") {
        Ok(center) => center.run("secagg", contract).await,
        Err(e) => Err(e),
    };
    (result, started.elapsed().as_secs_f64())
}

/// The report's sum, compared with the expected one (in full for short vectors, by
/// digest for the universe).
fn sum_matches(report: &Value, expected: &[u64]) -> bool {
    let digest_ok = report["sum_digest"].as_str() == Some(sum_digest(expected).as_str());
    match report["sum"].as_array() {
        Some(sum) => digest_ok && sum.iter().map(Value::as_u64).eq(expected.iter().map(|v| Some(*v))),
        None => digest_ok,
    }
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// Rounds, bytes per bank and who dropped, from the coordinator's report.
fn figures(report: &Value) -> String {
    let rounds: Vec<String> = ["0", "1", "2", "4"]
        .iter()
        .map(|r| format!("r{r} {:.3}", report["per_round_s"][r].as_f64().unwrap_or(f64::NAN)))
        .collect();
    let bytes: Vec<String> = report["bytes_per_node"]
        .as_object()
        .map(|nodes| {
            nodes
                .iter()
                .map(|(node, b)| {
                    format!(
                        "{node} ↓{} ↑{}",
                        kib(b["sent"].as_u64().unwrap_or(0)),
                        kib(b["received"].as_u64().unwrap_or(0))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let dropped = report["dropped"]
        .as_object()
        .filter(|d| !d.is_empty())
        .map(|d| d.iter().map(|(n, r)| format!("{n} at round {r}")).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "none".into());
    format!(
        "seconds: setup {:.3}, {}, close {:.3}, coordinator total {:.3}; bytes (to ↓ / from ↑ each bank): {}; dropped: {dropped}",
        report["setup_s"].as_f64().unwrap_or(f64::NAN),
        rounds.join(" "),
        report["close_s"].as_f64().unwrap_or(f64::NAN),
        report["wall_s"].as_f64().unwrap_or(f64::NAN),
        bytes.join(", ")
    )
}

fn bytes_of(report: &Value) -> u64 {
    report["bytes_sent"].as_u64().unwrap_or(0) + report["bytes_received"].as_u64().unwrap_or(0)
}

/// One scenario that should produce a sum.
struct SumScenario<'a> {
    name: String,
    contract: &'a str,
    /// Banks whose inputs the sum must contain.
    counted: Vec<usize>,
    /// Banks that must be reported dropped, with the round.
    dropped: Vec<(usize, ExitPoint)>,
    positions: &'a [String],
    group_of: &'a dyn Fn(&Loan) -> String,
}

async fn sum_scenario(
    alliance: &mut Alliance,
    banks: &[String],
    books: &[Vec<Loan>],
    scenario: SumScenario<'_>,
) -> Result<ScenarioResult> {
    for (b, point) in &scenario.dropped {
        restart_with_exit(alliance, &banks[*b], Some(*point)).await?;
    }
    let (result, wall_s) = run_secagg(alliance, scenario.contract).await;
    for (b, _) in &scenario.dropped {
        restart_with_exit(alliance, &banks[*b], None).await?;
    }
    let report = result.with_context(|| format!("running {}", scenario.contract))?;
    let expected = expected_sum(
        scenario.counted.iter().map(|&b| books[b].as_slice()),
        scenario.positions,
        scenario.group_of,
    );
    let mut verified = sum_matches(&report, &expected);
    let in_sum: Vec<&str> = report["contributors"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let counted: Vec<&str> = scenario.counted.iter().map(|&b| banks[b].as_str()).collect();
    verified &= in_sum == counted;
    for (b, point) in &scenario.dropped {
        verified &= report["dropped"][&banks[*b]].as_u64() == Some(u64::from(point.round().number()));
    }
    if scenario.dropped.is_empty() {
        verified &= report["dropped"].as_object().is_some_and(|d| d.is_empty());
    }
    let sizes = banks.iter().zip(books).map(|(bank, book)| (bank.clone(), book.len() as u64)).collect();
    Ok(ScenarioResult {
        name: scenario.name,
        computation: "secagg".into(),
        output: "sum".into(),
        sizes,
        verified,
        wall_s,
        bytes_total: bytes_of(&report),
        extra: crate::scenarios::contract_extra(scenario.contract),
        detail: format!(
            "credit-center learned a {}-entry sum (total {} fen) over {}; expected over {}; {}",
            report["vector_len"],
            report["sum_total"],
            in_sum.join(", "),
            counted.join(", "),
            figures(&report)
        ),
    })
}

/// Has every party sign a contract proposed by the credit center.
async fn agree(alliance: &Alliance, contract: &SecaggContract<'_>) -> Result<()> {
    let signers: Vec<&str> = contract.contributors.iter().map(|p| p.node).collect();
    alliance.agree("credit-center", &contract.toml(), contract.id, &signers).await
}

fn party<'a>(alliance: &'a Alliance, id: &str, roles: &'a [&'a str]) -> Result<PartyLine<'a>> {
    let node = alliance.node(id)?;
    Ok(PartyLine { node: node.id.as_str(), public_key: &node.public_key, roles })
}

/// Every secure-aggregation scenario. The banks must be running and the credit center
/// must hold its `registry` dataset (the universe). Imports each bank's loan book
/// first. With fewer than 3 banks only the scenarios without dropouts run (a threshold
/// of 2 of 2 tolerates none).
pub async fn run_all(
    alliance: &mut Alliance,
    world: &World,
    banks: &[String],
) -> Result<Vec<ScenarioResult>> {
    if banks.len() < 2 {
        bail!("secure aggregation needs at least 2 banks");
    }
    let seed = world.entities.first().map_or(0, |e| {
        let d = Sha256::digest(e.code.as_str().as_bytes());
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    });
    let books = loan_books(world, banks.len(), seed)?;
    let data_dir = alliance.base.join("secagg-data");
    for (bank, book) in banks.iter().zip(&books) {
        let file = loans_file(book, &data_dir.join(bank))?;
        let report = alliance.node(bank)?.import(file.name, &file.schema, &file.csv, false).await?;
        if report["committed"].as_bool() != Some(true) {
            bail!("{bank} did not import its loan book: {report}");
        }
    }

    // Tolerate one dropout: t = n - 1 (at least 2); a sum needs as many inputs.
    let n = banks.len();
    let threshold = (n - 1).max(2);
    let districts: Vec<String> = XIAMEN_DISTRICTS.iter().map(|(d, _)| d.to_string()).collect();
    let industries: Vec<String> = INDUSTRIES.iter().map(|(i, _)| i.to_string()).collect();
    let universe: Vec<String> = world.entity_codes(|_| true).iter().map(|c| c.to_string()).collect();
    {
        let coordinator_roles = ["coordinator"];
        let contributor_roles = ["contributor"];
        let contributors: Vec<PartyLine<'_>> =
            banks.iter().map(|b| party(alliance, b, &contributor_roles)).collect::<Result<_>>()?;
        let base = SecaggContract {
            id: BY_DISTRICT,
            purpose: "普惠金融: outstanding loans per district, all banks (fen)",
            coordinator: party(alliance, "credit-center", &coordinator_roles)?,
            contributors,
            threshold,
            min_contributors: threshold,
            dataset: LOANS_DATASET,
            value_column: "outstanding",
            group_column: "district",
            groups: districts.clone(),
            output_bits: 48,
        };
        let by_industry = SecaggContract {
            id: BY_INDUSTRY,
            purpose: "普惠金融: outstanding loans per industry section, all banks (fen)",
            group_column: "industry",
            groups: industries.clone(),
            ..base.clone()
        };
        let by_entity = SecaggContract {
            id: BY_ENTITY,
            purpose:
                "多头借贷: outstanding loans per registered entity over the public registry, all banks (fen)",
            group_column: "credit_code",
            groups: Vec::new(),
            output_bits: 40,
            ..base.clone()
        };
        for contract in [&base, &by_industry, &by_entity] {
            agree(alliance, contract).await?;
        }
        if banks.len() >= 3 {
            // The runs with dropouts: one contract each (one masked input per contract
            // and epoch), signed by every bank like the first.
            let district = |id, purpose| SecaggContract { id, purpose, ..base.clone() };
            let entity = |id, purpose| SecaggContract { id, purpose, ..by_entity.clone() };
            for contract in [
                district(
                    BY_DISTRICT_DROP_BEFORE,
                    "普惠金融: outstanding loans per district, run with a bank dropped before its masked input (fen)",
                ),
                district(
                    BY_DISTRICT_DROP_AFTER,
                    "普惠金融: outstanding loans per district, run with a bank dropped after its masked input (fen)",
                ),
                district(BY_DISTRICT_ABORT, "普惠金融: outstanding loans per district, run with too many dropouts (fen)"),
                entity(
                    BY_ENTITY_DROP_AFTER,
                    "多头借贷: outstanding loans per registered entity, run with a bank dropped after its masked input (fen)",
                ),
            ] {
                agree(alliance, &contract).await?;
            }
        }
    }

    let all: Vec<usize> = (0..n).collect();
    let district_of = |l: &Loan| l.district.to_string();
    let industry_of = |l: &Loan| l.industry.to_string();
    let code_of = |l: &Loan| l.code.to_string();
    let mut results = Vec::new();
    for (name, contract, positions, group_of) in [
        ("loans per district, all banks", BY_DISTRICT, &districts, &district_of as &dyn Fn(&Loan) -> String),
        ("loans per industry, all banks", BY_INDUSTRY, &industries, &industry_of as &dyn Fn(&Loan) -> String),
        (
            "loans per registered entity (universe), all banks",
            BY_ENTITY,
            &universe,
            &code_of as &dyn Fn(&Loan) -> String,
        ),
    ] {
        let scenario = SumScenario {
            name: name.into(),
            contract,
            counted: all.clone(),
            dropped: Vec::new(),
            positions,
            group_of,
        };
        results.push(sum_scenario(alliance, banks, &books, scenario).await?);
    }
    results.push(rerun_refused(alliance, banks, BY_DISTRICT).await?);
    if n < 3 {
        return Ok(results);
    }

    let last = n - 1;
    let before = SumScenario {
        name: format!("loans per district, {} killed before its masked input", banks[last]),
        contract: BY_DISTRICT_DROP_BEFORE,
        counted: (0..last).collect(),
        dropped: vec![(last, ExitPoint::BeforeMaskedInput)],
        positions: &districts,
        group_of: &district_of,
    };
    results.push(sum_scenario(alliance, banks, &books, before).await?);
    let after = SumScenario {
        name: format!("loans per district, {} killed after its masked input", banks[last]),
        contract: BY_DISTRICT_DROP_AFTER,
        counted: all.clone(),
        dropped: vec![(last, ExitPoint::AfterMaskedInput)],
        positions: &districts,
        group_of: &district_of,
    };
    results.push(sum_scenario(alliance, banks, &books, after).await?);
    let after_long = SumScenario {
        name: format!("loans per registered entity, {} killed after its masked input", banks[0]),
        contract: BY_ENTITY_DROP_AFTER,
        counted: all.clone(),
        dropped: vec![(0, ExitPoint::AfterMaskedInput)],
        positions: &universe,
        group_of: &code_of,
    };
    results.push(sum_scenario(alliance, banks, &books, after_long).await?);
    results.push(too_many_dropouts(alliance, banks, BY_DISTRICT_ABORT).await?);
    Ok(results)
}

/// The coordinator runs `contract` again in the same epoch, after a run in which every
/// bank sent its masked input: every bank must refuse (naming the contract and epoch),
/// so the coordinator aborts with nothing unmasked and no second sum to subtract.
async fn rerun_refused(alliance: &Alliance, banks: &[String], contract: &str) -> Result<ScenarioResult> {
    let (result, wall_s) = run_secagg(alliance, contract).await;
    let error = match result {
        Ok(report) => bail!("a second run of {contract} in the same epoch produced a sum: {report}"),
        Err(e) => format!("{e:#}"),
    };
    let center = alliance.node("credit-center")?.status().await?;
    let center_job = center
        .jobs
        .iter()
        .filter(|j| j.contract_id == contract && j.role == "coordinator")
        .max_by_key(|j| j.job_id)
        .cloned();
    let reason = format!("already contributed a masked input to contract {contract} in epoch");
    let refused_by_all = center_job.as_ref().is_some_and(|j| {
        j.state == "failed"
            && j.detail.contains("nothing was unmasked")
            && j.detail.matches(&reason).count() == banks.len()
            && banks.iter().all(|b| j.detail.contains(&format!("{b} at round 0")))
    });
    Ok(ScenarioResult {
        name: format!(
            "loans per district, the same contract run again in the same epoch: refused by {}",
            banks.join(", ")
        ),
        computation: "secagg".into(),
        output: "abort".into(),
        sizes: BTreeMap::new(),
        verified: refused_by_all,
        wall_s,
        bytes_total: 0,
        extra: crate::scenarios::contract_extra(contract),
        detail: format!(
            "credit-center: {error}; its job: {}",
            center_job.map(|j| format!("{} ({})", j.state, j.detail)).unwrap_or_default()
        ),
    })
}

/// Two banks killed before their masked inputs, with a threshold that tolerates one:
/// the coordinator must abort with a clear error, unmask nothing, and the remaining
/// bank must never have revealed its shares.
async fn too_many_dropouts(
    alliance: &mut Alliance,
    banks: &[String],
    contract: &str,
) -> Result<ScenarioResult> {
    let killed = [&banks[banks.len() - 2], &banks[banks.len() - 1]];
    for bank in killed {
        restart_with_exit(alliance, bank, Some(ExitPoint::BeforeMaskedInput)).await?;
    }
    let (result, wall_s) = run_secagg(alliance, contract).await;
    for bank in killed {
        restart_with_exit(alliance, bank, None).await?;
    }
    let error = match result {
        Ok(report) => bail!("the run with too many dropouts produced a sum: {report}"),
        Err(e) => format!("{e:#}"),
    };
    let clear = error.contains("threshold") && error.contains("aborted");
    let center = alliance.node("credit-center")?.status().await?;
    let center_job = center
        .jobs
        .iter()
        .filter(|j| j.contract_id == contract && j.role == "coordinator")
        .max_by_key(|j| j.job_id)
        .cloned();
    let unmasked_nothing =
        center_job.as_ref().is_some_and(|j| j.state == "failed" && j.detail.contains("nothing was unmasked"));
    let survivor = alliance.node(&banks[0])?.status().await?;
    let survivor_job = survivor
        .jobs
        .iter()
        .filter(|j| j.contract_id == contract && j.role == "contributor")
        .max_by_key(|j| j.job_id)
        .cloned();
    // The survivor sent its masked input and then saw the session end before any
    // unmask request: it revealed no share.
    let revealed_nothing =
        survivor_job.as_ref().is_some_and(|j| j.state != "succeeded" && j.detail.contains("round 4"));
    Ok(ScenarioResult {
        name: format!("loans per district, {} and {} killed: too many dropouts", killed[0], killed[1]),
        computation: "secagg".into(),
        output: "abort".into(),
        sizes: BTreeMap::new(),
        verified: clear && unmasked_nothing && revealed_nothing,
        wall_s,
        bytes_total: 0,
        extra: crate::scenarios::contract_extra(contract),
        detail: format!(
            "credit-center: {error}; its job: {}; {}'s job: {}",
            center_job.map(|j| format!("{} ({})", j.state, j.detail)).unwrap_or_default(),
            banks[0],
            survivor_job.map(|j| format!("{} ({})", j.state, j.detail)).unwrap_or_default(),
        ),
    })
}
