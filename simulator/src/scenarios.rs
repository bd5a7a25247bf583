//! The PSI scenarios of the demo, each checked against its plaintext answer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::alliance::Alliance;
use crate::contracts::{self, PartyLine};
use crate::data::World;

/// One scenario's row in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub computation: String,
    pub output: String,
    pub sizes: BTreeMap<String, u64>,
    pub verified: bool,
    pub wall_s: f64,
    pub bytes_total: u64,
    /// What the receiving node learned, in brief, and what was compared.
    pub detail: String,
    /// Fields some computations add (lookup: `use`, `provider_s`, `query_s`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn party<'a>(alliance: &'a Alliance, id: &'a str, roles: &'a [&'a str]) -> Result<PartyLine<'a>> {
    let node = alliance.node(id)?;
    Ok(PartyLine { node: node.id.as_str(), public_key: &node.public_key, roles })
}

fn codes_of(report: &Value, field: &str) -> BTreeSet<String> {
    report[field]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn bytes_of(report: &Value) -> u64 {
    report["bytes_sent"].as_u64().unwrap_or(0) + report["bytes_received"].as_u64().unwrap_or(0)
}

/// Runs one PSI contract end to end: propose (server side), sign (client), run from
/// the client; returns the client's report and the wall time of the run.
async fn run_psi(
    alliance: &Alliance,
    id: &str,
    toml: &str,
    proposer: &str,
    signer: &str,
    client: &str,
) -> Result<(Value, f64)> {
    alliance.agree(proposer, toml, id, &[signer]).await?;
    let started = Instant::now();
    let report = alliance.node(client)?.run("psi", id).await.with_context(|| format!("running {id}"))?;
    Ok((report, started.elapsed().as_secs_f64()))
}

/// Which of each bank's applicants are A-grade taxpayers (intersection).
pub async fn a_grade(alliance: &Alliance, world: &World, banks: &[String]) -> Result<Vec<ScenarioResult>> {
    let a_grade = world.entity_codes(|e| e.tax_grade == "A");
    let mut results = Vec::new();
    for (b, bank) in banks.iter().enumerate() {
        let id = format!("credit-center.xel-psi-a-grade-{bank}");
        let toml = contracts::psi(
            &id,
            "信易贷: loan applicants on the A-grade taxpayer list",
            &party(alliance, "credit-center", &["server"])?,
            "a_grade_taxpayers",
            &party(alliance, bank, &["client"])?,
            "intersection",
            &[],
            100,
            20,
        );
        let (report, wall_s) = run_psi(alliance, &id, &toml, "credit-center", bank, bank).await?;
        let expected: BTreeSet<String> =
            world.applicant_codes(b).intersection(&a_grade).map(|c| c.to_string()).collect();
        let got = codes_of(&report, "intersection");
        results.push(ScenarioResult {
            name: format!("a-grade taxpayers among {bank}'s applicants"),
            computation: "psi".into(),
            output: "intersection".into(),
            sizes: sizes(&[("credit-center", a_grade.len()), (bank, world.applicants[b].len())]),
            verified: got == expected,
            wall_s,
            bytes_total: bytes_of(&report),
            extra: contract_extra(&id),
            detail: format!("{bank} learned {} of {} expected matches", got.len(), expected.len()),
        });
    }
    Ok(results)
}

/// The contract a scenario ran under, for the observation report to find its jobs.
pub fn contract_extra(id: &str) -> BTreeMap<String, Value> {
    BTreeMap::from([("contract".to_string(), Value::from(id))])
}

fn sizes(pairs: &[(&str, usize)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v as u64)).collect()
}

/// The ε of the noisy dishonest count, in thousandths (one run per epoch).
pub const DISHONEST_NOISE_EPSILON_MILLI: u32 = 500;

/// How many of a bank's applicants are on the dishonesty list (cardinality only): exact,
/// or with noise of `noise_epsilon_milli` the credit center adds (issue 10), checked
/// against the plaintext count within the clamp the contract's ε gives.
pub async fn dishonest_count(
    alliance: &Alliance,
    world: &World,
    (bank, b): (&str, usize),
    noise_epsilon_milli: Option<u32>,
) -> Result<ScenarioResult> {
    let listed = world.entity_codes(|e| e.dishonest);
    let (id, purpose, kind) = match noise_epsilon_milli {
        None => (
            format!("credit-center.xel-psi-dishonest-{bank}"),
            "严重失信主体名单: how many applicants are listed (count only)",
            "count only",
        ),
        Some(_) => (
            format!("credit-center.xel-psi-dishonest-noisy-{bank}"),
            "严重失信主体名单: how many applicants are listed (count with noise, portfolio statistics)",
            "count with noise",
        ),
    };
    let toml = contracts::psi(
        &id,
        purpose,
        &party(alliance, "credit-center", &["server"])?,
        "dishonesty_list",
        &party(alliance, bank, &["client"])?,
        "cardinality",
        &[],
        10,
        20,
    );
    let toml = match noise_epsilon_milli {
        Some(milli) => contracts::with_count_noise(&toml, milli),
        None => toml,
    };
    let (report, wall_s) = run_psi(alliance, &id, &toml, "credit-center", bank, bank).await?;
    let expected = world.applicant_codes(b).intersection(&listed).count() as u64;
    let got = report["cardinality"].as_u64().unwrap_or(u64::MAX);
    let no_codes = report["intersection"].is_null();
    let mut extra = contract_extra(&id);
    let (within, detail) = match noise_epsilon_milli {
        None => {
            (got == expected, format!("{bank} learned the count {got} (expected {expected}) and no codes"))
        }
        Some(milli) => {
            // Within the clamp the contract's ε gives, and the report says so.
            let half = u64::from(xmcredit_crypto::count_noise::count_noise_half(milli)?);
            let error = got as i64 - expected as i64;
            extra.insert("use".into(), Value::from("easy-loan-matching"));
            extra.insert("noise".into(), report["noise"].clone());
            extra.insert("noise_error".into(), Value::from(error));
            (
                report["noise"]["bound"].as_u64() == Some(half) && got.abs_diff(expected) <= half,
                format!(
                    "{bank} learned the count {got} with noise of ε {} (exact {expected}, error {error:+}, clamp ±{half}) and no codes",
                    f64::from(milli) / 1000.0
                ),
            )
        }
    };
    Ok(ScenarioResult {
        name: format!("dishonest applicants of {bank}, {kind}"),
        computation: "psi".into(),
        output: "cardinality".into(),
        sizes: sizes(&[("credit-center", listed.len()), (bank, world.applicants[b].len())]),
        verified: within && no_codes,
        wall_s,
        bytes_total: bytes_of(&report),
        extra,
        detail,
    })
}

/// Government labels (tax grade, headcount, credit grade) for a bank's matched applicants.
pub async fn labels(alliance: &Alliance, world: &World, bank: &str, b: usize) -> Result<ScenarioResult> {
    let id = format!("credit-center.xel-psi-labels-{bank}");
    let toml = contracts::psi(
        &id,
        "信易贷: registry attributes of matched applicants",
        &party(alliance, "credit-center", &["server"])?,
        "registry",
        &party(alliance, bank, &["client"])?,
        "labels",
        &["tax_grade", "si_headcount", "credit_grade"],
        100,
        20,
    );
    let (report, wall_s) = run_psi(alliance, &id, &toml, "credit-center", bank, bank).await?;
    let registry = world.entity();
    let expected: BTreeMap<String, (String, String, String)> = world.applicants[b]
        .iter()
        .filter_map(|a| registry.get(&a.code))
        .map(|e| {
            (
                e.code.to_string(),
                (e.tax_grade.to_string(), e.si_headcount.to_string(), e.credit_grade.to_string()),
            )
        })
        .collect();
    let got: BTreeMap<String, (String, String, String)> = report["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(code, label)| {
                    let field = |name: &str| label[name].as_str().unwrap_or_default().to_string();
                    (code.clone(), (field("tax_grade"), field("si_headcount"), field("credit_grade")))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ScenarioResult {
        name: format!("registry labels for {bank}'s matched applicants"),
        computation: "psi".into(),
        output: "labels".into(),
        sizes: sizes(&[("credit-center", world.entities.len()), (bank, world.applicants[b].len())]),
        verified: got == expected,
        wall_s,
        bytes_total: bytes_of(&report),
        extra: contract_extra(&id),
        detail: format!("{bank} decrypted {} labels, expected {}", got.len(), expected.len()),
    })
}

/// Two banks learn their common applicants (co-lending), both sides checked.
pub async fn mutual(
    alliance: &Alliance,
    world: &World,
    (client, c): (&str, usize),
    (server, s): (&str, usize),
) -> Result<ScenarioResult> {
    let id = format!("{client}.scf-psi-common-{client}-{server}");
    let toml = contracts::psi(
        &id,
        "联合授信: common applicants of two banks, both learn them",
        &party(alliance, server, &["server"])?,
        "loan_applicants",
        &party(alliance, client, &["client"])?,
        "both",
        &[],
        20,
        20,
    );
    let (report, wall_s) = run_psi(alliance, &id, &toml, client, server, client).await?;
    let expected: BTreeSet<String> =
        world.applicant_codes(c).intersection(&world.applicant_codes(s)).map(|c| c.to_string()).collect();
    let got = codes_of(&report, "intersection");
    // The server keeps its output to itself; its job record carries a digest of the
    // sorted codes it learned, which must be the digest of the plaintext answer.
    let sorted: Vec<&str> = expected.iter().map(String::as_str).collect();
    let expected_digest = xmcredit_node::run::psi::codes_digest(&sorted);
    // The server finishes after the client (it handles the client's last message), so
    // wait briefly for its job to end.
    let mut server_saw = String::new();
    for _ in 0..50 {
        let status = alliance.node(server)?.status().await?;
        if let Some(job) =
            status.jobs.iter().find(|j| j.contract_id == id && j.role == "server" && j.state != "running")
        {
            server_saw = job.detail.clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let server_ok = server_saw.contains(&expected_digest);
    Ok(ScenarioResult {
        name: format!("common applicants of {client} and {server}, both learn them"),
        computation: "psi".into(),
        output: "both".into(),
        sizes: sizes(&[(server, world.applicants[s].len()), (client, world.applicants[c].len())]),
        verified: got == expected && server_ok,
        wall_s,
        bytes_total: bytes_of(&report),
        extra: contract_extra(&id),
        detail: format!(
            "{client} learned {} of {} common applicants; {server}'s output {}",
            got.len(),
            expected.len(),
            if server_ok { "matches" } else { "DIFFERS" }
        ),
    })
}
