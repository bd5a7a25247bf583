//! The lookup scenarios of the demo (issue 13), each checked against its plaintext
//! answer: Credit Easy Loan matching (the credit center alone, a bit mask of the
//! product's criteria), multi-bank exposure (every bank's balances, the querier's
//! included, summed exactly with SecAgg) and the sole-proprietor profile (credit center, the utilities node and the
//! other banks; scorecard points, some negative).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use xmcredit_contracts::entity_code::EntityKind;

use crate::alliance::Alliance;
use crate::contracts::{self, LookupProvider, PartyLine, EASY_LOAN_COLUMNS, EASY_LOAN_RULES};
use crate::data::World;
use crate::scenarios::ScenarioResult;
use crate::secagg_scenarios::{loan_books, Loan, LOANS_DATASET};

/// The utilities node of the demo (water, power and gas arrears).
pub const UTILITIES: &str = "utilities";
/// Its dataset.
pub const UTILITY_DATASET: &str = "utility_arrears";

/// Daily lookups each querier may make in the demo's contracts: a bank's daily applicant flow.
const QUOTA: u64 = 10_000;

fn party<'a>(alliance: &'a Alliance, id: &'a str, roles: &'a [&'a str]) -> Result<PartyLine<'a>> {
    let node = alliance.node(id)?;
    Ok(PartyLine { node: node.id.as_str(), public_key: &node.public_key, roles })
}

/// Months of water, power and gas arrears of an entity: deterministic from its code.
pub fn utility_arrears(code: &str) -> [i64; 3] {
    let d = Sha256::digest(format!("utilities {code}").as_bytes());
    [i64::from(d[0] % 8), i64::from(d[1] % 8), i64::from(d[2] % 8)]
}

/// The utilities node's dataset: every registered entity's arrears, as the CSV and
/// schema its operator imports.
pub async fn import_utilities(alliance: &Alliance, world: &World) -> Result<()> {
    let dir = alliance.base.join("lookup-data").join(UTILITIES);
    std::fs::create_dir_all(&dir)?;
    let schema = format!(
        "name = \"{UTILITY_DATASET}\"\nkey = \"credit_code\"\ncolumns = [\n  {{ name = \"water_months\", type = \"integer\" }},\n  {{ name = \"power_months\", type = \"integer\" }},\n  {{ name = \"gas_months\", type = \"integer\" }},\n]\n"
    );
    let mut csv = String::from("credit_code,water_months,power_months,gas_months\n");
    for e in &world.entities {
        let [w, p, g] = utility_arrears(e.code.as_str());
        let _ = writeln!(csv, "{},{w},{p},{g}", e.code);
    }
    let (schema_path, csv_path) = (dir.join("utility.schema.toml"), dir.join("utility.csv"));
    std::fs::write(&schema_path, schema)?;
    std::fs::write(&csv_path, csv)?;
    let report = alliance.node(UTILITIES)?.import(UTILITY_DATASET, &schema_path, &csv_path, false).await?;
    if report["committed"].as_bool() != Some(true) {
        bail!("{UTILITIES} did not import its arrears: {report}");
    }
    Ok(())
}

/// Proposes and signs `toml`, publishes the epoch's vector from the coordinator, runs the
/// querier; returns (coordinator report, querier report, wall seconds).
async fn run_lookup(
    alliance: &Alliance,
    id: &str,
    toml: &str,
    signers: &[&str],
    querier: &str,
) -> Result<(Value, Value, f64)> {
    alliance.agree("credit-center", toml, id, signers).await?;
    let started = Instant::now();
    let published = alliance
        .node("credit-center")?
        .run("lookup", id)
        .await
        .with_context(|| format!("publishing {id}"))?;
    let report = alliance.node(querier)?.run("lookup", id).await.with_context(|| format!("querying {id}"))?;
    Ok((published, report, started.elapsed().as_secs_f64()))
}

/// The scenario row: `use`, provider-side and query-side seconds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn result(
    name: String,
    use_case: &str,
    output: &str,
    published: &Value,
    report: &Value,
    wall_s: f64,
    mismatches: usize,
    detail: String,
) -> ScenarioResult {
    let secagg = &published["secagg"];
    let secagg_bytes =
        secagg["bytes_sent"].as_u64().unwrap_or(0) + secagg["bytes_received"].as_u64().unwrap_or(0);
    let mut extra = BTreeMap::new();
    extra.insert("use".to_string(), Value::from(use_case));
    extra.insert("provider_s".to_string(), published["provider_s"].clone());
    extra.insert("query_s".to_string(), report["query_s"].clone());
    extra.insert("vector_s".to_string(), report["vector_s"].clone());
    extra.insert("providers".to_string(), report["providers"].clone());
    extra.insert("contract".to_string(), report["contract"].clone());
    let mut sizes = BTreeMap::new();
    sizes.insert("universe".to_string(), report["universe_size"].as_u64().unwrap_or(0));
    sizes.insert("applicants".to_string(), report["applicants"].as_u64().unwrap_or(0));
    sizes.insert("lookups".to_string(), report["lookups"].as_u64().unwrap_or(0));
    ScenarioResult {
        name,
        computation: "lookup".into(),
        output: output.into(),
        sizes,
        verified: mismatches == 0 && report["applicants"].as_u64().unwrap_or(0) > 0,
        wall_s,
        bytes_total: report["bytes_total"].as_u64().unwrap_or(0) + secagg_bytes,
        extra,
        detail,
    }
}

/// Credit Easy Loan matching: the credit center's registry, the product's four
/// criteria as a bit mask; `bank` learns, per applicant, which hold and whether all do.
pub async fn easy_loan(alliance: &Alliance, world: &World, bank: &str, b: usize) -> Result<ScenarioResult> {
    let id = "credit-center.lookup-easy-loan";
    let toml = contracts::lookup(
        id,
        "信易贷: Credit Easy Loan criteria (tax grade A/B, headcount >= 5, arrears <= 3 months, not dishonest) per applicant",
        &[party(alliance, "credit-center", &["coordinator", "provider"])?, party(alliance, bank, &["querier"])?],
        &[LookupProvider {
            node: "credit-center",
            dataset: "registry",
            columns: EASY_LOAN_COLUMNS,
            rules: EASY_LOAN_RULES,
        }],
        &[bank],
        "bitmask",
        8,
        QUOTA,
    );
    let (published, report, wall_s) = run_lookup(alliance, id, &toml, &[bank], bank).await?;
    let entities = world.entity();
    let results = &report["results"];
    let (mut mismatches, mut eligible, mut registered) = (0, 0, 0);
    for applicant in &world.applicants[b] {
        let got = &results[applicant.code.as_str()];
        match entities.get(&applicant.code) {
            None => mismatches += usize::from(got["registered"] != false),
            Some(e) => {
                registered += 1;
                let want = contracts::easy_loan_criteria(
                    e.tax_grade,
                    i64::from(e.si_headcount),
                    i64::from(e.utility_arrears_months),
                    e.dishonest,
                );
                let flags: Vec<bool> = got["criteria"]
                    .as_array()
                    .map(|c| c.iter().map(|v| v == true).collect())
                    .unwrap_or_default();
                let all = want.iter().all(|c| *c);
                eligible += usize::from(all);
                mismatches += usize::from(flags != want.to_vec() || got["all"] != all);
            }
        }
    }
    Ok(result(
        format!("lookup easy-loan matching (credit-center → {bank})"),
        "easy-loan-matching",
        "bitmask",
        &published,
        &report,
        wall_s,
        mismatches,
        format!(
            "{bank} learned the 4 criteria of {registered} registered applicants ({eligible} meet all); {mismatches} differ from the plaintext evaluation"
        ),
    ))
}

/// Each bank's balance per registered borrower, in fen (the demo's loan books).
fn balances(books: &[Vec<Loan>]) -> Vec<BTreeMap<String, u64>> {
    books
        .iter()
        .map(|book| {
            book.iter().filter(|l| l.registered).map(|l| (l.code.to_string(), l.outstanding_fen)).collect()
        })
        .collect()
}

/// The demo's loan books, as `secagg_scenarios::run_all` imported them.
fn demo_books(world: &World, banks: usize) -> Result<Vec<Vec<Loan>>> {
    let seed = world.entities.first().map_or(0, |e| {
        let d = Sha256::digest(e.code.as_str().as_bytes());
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    });
    loan_books(world, banks, seed)
}

/// A `value` lookup in which every bank provides one decimal `column` of its `dataset`
/// and `banks[0]`, a provider itself, also queries for the keys of `querier_dataset`;
/// agrees it, publishes the epoch's vector and runs the query. Returns (coordinator
/// report, querier report, wall seconds).
pub(crate) async fn every_bank_sums(
    alliance: &Alliance,
    banks: &[String],
    id: &str,
    purpose: &str,
    (dataset, column): (&str, &str),
    querier_dataset: &str,
) -> Result<(Value, Value, f64)> {
    let querier = banks[0].as_str();
    let providers: Vec<&str> = banks.iter().map(String::as_str).collect();
    let columns = [column];
    let provider_lines: Vec<LookupProvider> =
        providers.iter().map(|p| LookupProvider { node: p, dataset, columns: &columns, rules: "" }).collect();
    let mut parties = vec![
        party(alliance, "credit-center", &["coordinator"])?,
        party(alliance, querier, &["provider", "querier"])?,
    ];
    for p in &providers[1..] {
        parties.push(party(alliance, p, &["provider"])?);
    }
    let toml = contracts::lookup_over(
        id,
        purpose,
        &parties,
        &provider_lines,
        (&[querier], querier_dataset),
        "value",
        EXPOSURE_BITS,
        QUOTA,
    );
    run_lookup(alliance, id, &toml, &providers, querier).await
}

/// Multi-bank exposure (多头借贷): every bank's outstanding balances summed exactly with
/// SecAgg by the credit center; `banks[0]`, a provider itself, learns per applicant the
/// total it owes at all banks, to the fen.
pub async fn multi_bank_exposure(
    alliance: &Alliance,
    world: &World,
    banks: &[String],
) -> Result<ScenarioResult> {
    let querier = banks[0].as_str();
    let (published, report, wall_s) = every_bank_sums(
        alliance,
        banks,
        "credit-center.lookup-exposure",
        "多头借贷: each applicant's outstanding balance at all banks together, exact to the fen (SecAgg over the banks)",
        (LOANS_DATASET, "outstanding"),
        "loan_applicants",
    )
    .await?;
    let providers: Vec<&str> = banks.iter().map(String::as_str).collect();
    let books = balances(&demo_books(world, banks.len())?);
    let entities = world.entity();
    let results = &report["results"];
    let (mut mismatches, mut several) = (0, 0);
    for applicant in &world.applicants[0] {
        let got = &results[applicant.code.as_str()];
        if !entities.contains_key(&applicant.code) {
            mismatches += usize::from(got["registered"] != false);
            continue;
        }
        let code = applicant.code.to_string();
        let lenders = books.iter().filter(|b| b.get(&code).is_some_and(|fen| *fen > 0)).count();
        let want: u64 = books.iter().map(|b| b.get(&code).copied().unwrap_or(0)).sum();
        several += usize::from(lenders >= 2);
        mismatches += usize::from(got["value"].as_u64() != Some(want));
    }
    Ok(result(
        format!("lookup multi-bank exposure ({} → {querier})", providers.join(", ")),
        "multi-bank-exposure",
        "value",
        &published,
        &report,
        wall_s,
        mismatches,
        format!(
            "{querier} learned the total balance (fen) of its registered applicants at {} banks, its own included ({several} borrow at 2+ banks); {mismatches} differ from the plaintext",
            providers.len()
        ),
    ))
}

/// Bits of a summed balance in fen: each of up to 2^8 banks may contribute up to
/// 2^40 fen (11 billion yuan) without the sum wrapping.
const EXPOSURE_BITS: u32 = 48;

const PROFILE_CENTER_COLUMNS: &[&str] = &["tax_grade", "si_headcount", "dishonest"];
const PROFILE_CENTER_RULES: &str = r#"[
  { column = "tax_grade", comparison = "in", constant = ["A", "B"], points = 30 },
  { column = "si_headcount", comparison = "ge", constant = 1, points = 10 },
  { column = "dishonest", comparison = "eq", constant = true, points = -60 },
]"#;
const PROFILE_UTILITY_COLUMNS: &[&str] = &["water_months", "power_months", "gas_months"];
const PROFILE_UTILITY_RULES: &str = r#"[
  { column = "water_months", comparison = "gt", constant = 3, points = -10 },
  { column = "power_months", comparison = "gt", constant = 3, points = -10 },
  { column = "gas_months", comparison = "gt", constant = 3, points = -10 },
]"#;
const PROFILE_BANK_RULES: &str = r#"[
  { column = "outstanding", comparison = "gt", constant = "0", points = 5 },
]"#;

/// Sole-proprietor profile (个体工商户画像): credit center (tax grade, headcount,
/// dishonesty), the utilities node (arrears) and the other banks (active borrower)
/// each score; `banks[0]` learns each applicant's total only.
pub async fn sole_proprietor_profile(
    alliance: &Alliance,
    world: &World,
    banks: &[String],
) -> Result<ScenarioResult> {
    let querier = banks[0].as_str();
    let other_banks: Vec<&str> = banks[1..].iter().map(String::as_str).collect();
    let id = "credit-center.lookup-profile";
    let mut provider_lines = vec![
        LookupProvider {
            node: "credit-center",
            dataset: "registry",
            columns: PROFILE_CENTER_COLUMNS,
            rules: PROFILE_CENTER_RULES,
        },
        LookupProvider {
            node: UTILITIES,
            dataset: UTILITY_DATASET,
            columns: PROFILE_UTILITY_COLUMNS,
            rules: PROFILE_UTILITY_RULES,
        },
    ];
    for b in &other_banks {
        provider_lines.push(LookupProvider {
            node: b,
            dataset: LOANS_DATASET,
            columns: &["outstanding"],
            rules: PROFILE_BANK_RULES,
        });
    }
    let mut parties = vec![
        party(alliance, "credit-center", &["coordinator", "provider"])?,
        party(alliance, querier, &["querier"])?,
        party(alliance, UTILITIES, &["provider"])?,
    ];
    for b in &other_banks {
        parties.push(party(alliance, b, &["provider"])?);
    }
    let toml = contracts::lookup(
        id,
        "个体工商户画像: an applicant's score from the credit center, the utilities and the other banks (total only)",
        &parties,
        &provider_lines,
        &[querier],
        "points",
        16,
        QUOTA,
    );
    let mut signers = vec![querier, UTILITIES];
    signers.extend(&other_banks);
    let (published, report, wall_s) = run_lookup(alliance, id, &toml, &signers, querier).await?;
    let books = balances(&demo_books(world, banks.len())?);
    let entities = world.entity();
    let results = &report["results"];
    let (mut mismatches, mut sole) = (0, 0);
    for applicant in &world.applicants[0] {
        let got = &results[applicant.code.as_str()];
        let Some(e) = entities.get(&applicant.code) else {
            mismatches += usize::from(got["registered"] != false);
            continue;
        };
        let code = applicant.code.to_string();
        let mut want = 0i64;
        want += if matches!(e.tax_grade, "A" | "B") { 30 } else { 0 };
        want += if e.si_headcount >= 1 { 10 } else { 0 };
        want += if e.dishonest { -60 } else { 0 };
        want += utility_arrears(&code).iter().map(|m| if *m > 3 { -10 } else { 0 }).sum::<i64>();
        want += books[1..]
            .iter()
            .map(|b| if b.get(&code).copied().unwrap_or(0) > 0 { 5 } else { 0 })
            .sum::<i64>();
        sole += usize::from(e.kind == EntityKind::SoleProprietor);
        mismatches += usize::from(got["value"] != want);
    }
    Ok(result(
        format!("lookup sole-proprietor profile (credit-center, {UTILITIES}, {} → {querier})", other_banks.join(", ")),
        "sole-proprietor-profile",
        "points",
        &published,
        &report,
        wall_s,
        mismatches,
        format!(
            "{querier} learned the total score of its registered applicants ({sole} sole proprietors) from {} providers; {mismatches} differ from the plaintext",
            provider_lines.len()
        ),
    ))
}

/// The three uses, in order (exposure sums at least 2 banks with SecAgg; the profile
/// needs a bank besides the querier, with the utilities node).
pub async fn run_all(alliance: &Alliance, world: &World, banks: &[String]) -> Result<Vec<ScenarioResult>> {
    let mut out = vec![easy_loan(alliance, world, &banks[0], 0).await?];
    if banks.len() >= 2 {
        out.push(multi_bank_exposure(alliance, world, banks).await?);
    }
    import_utilities(alliance, world).await?;
    out.push(sole_proprietor_profile(alliance, world, banks).await?);
    Ok(out)
}
