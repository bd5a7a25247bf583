//! Private aggregate lookup between real nodes (issue 13): Credit Easy Loan matching
//! with the credit center as the one provider, every applicant's criteria compared with
//! a plaintext evaluation of the same rows; refusals (quota, a bank the contract does
//! not name, a certificate without the bank's identity key, another universe, a second
//! vector in one epoch).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use common::*;
use tempfile::TempDir;
use tokio_stream::StreamExt;
use tonic::Code;
use xmcredit_crypto::{ContractId, Epoch, NodeId, SessionId};
use xmcredit_node::proto;
use xmcredit_node::service::peer_client;
use xmcredit_protocol::lookup::{LookupQuery, QuerierConfig, Universe, VectorHeader, Width};
use xmcredit_protocol::SessionBinding;
use xmcredit_simulator::alliance::{Alliance, NodeHandle};
use xmcredit_simulator::contracts::{
    easy_loan_criteria, lookup, LookupProvider, EASY_LOAN_COLUMNS, EASY_LOAN_RULES,
};
use xmcredit_simulator::trust_faults::mint_certificate;

const REGISTRY_SCHEMA: &str = r#"name = "registry"
key = "credit_code"
columns = [
  { name = "tax_grade", type = "enum", values = ["A", "B", "M", "C", "D"] },
  { name = "si_headcount", type = "integer" },
  { name = "utility_arrears_months", type = "integer" },
  { name = "dishonest", type = "bool" },
]
"#;

/// One registry row of the credit center.
#[derive(Debug, Clone)]
struct Registered {
    code: String,
    tax_grade: &'static str,
    si_headcount: i64,
    arrears: i64,
    dishonest: bool,
}

fn registry_rows(codes: &[String]) -> Vec<Registered> {
    const GRADES: [&str; 5] = ["A", "B", "M", "C", "D"];
    codes
        .iter()
        .enumerate()
        .map(|(i, code)| Registered {
            code: code.clone(),
            tax_grade: GRADES[(i * 7) % 5],
            si_headcount: ((i * 13) % 11) as i64,
            arrears: ((i * 5) % 7) as i64,
            dishonest: i % 9 == 4,
        })
        .collect()
}

/// The credit center (coordinator and provider, a 1,200-entity registry) and bank-a
/// (querier, 150 applicants, 120 of them registered), bank-b a party to nothing.
struct Setup {
    dir: TempDir,
    alliance: Alliance,
    registry: Vec<Registered>,
    applicants: Vec<String>,
}

impl Setup {
    async fn new() -> Result<Self> {
        let (dir, alliance) = alliance(&["credit-center", "bank-a", "bank-b"], true).await?;
        let universe = codes(31, 1200);
        let registry = registry_rows(&universe);
        let known: std::collections::BTreeSet<&String> = universe.iter().collect();
        let mut applicants: Vec<String> = universe.iter().step_by(10).cloned().collect();
        applicants.extend(codes(32, 60).into_iter().filter(|c| !known.contains(c)).take(30));
        applicants.sort_by_key(|c| sha256(c.as_bytes()));
        let setup = Self { dir, alliance, registry, applicants };
        setup.import_registry(&setup.registry.clone(), "registry").await?;
        let files = write_applicants(setup.dir.path(), "apps", &setup.applicants)?;
        import_ok(setup.bank(), "loan_applicants", &files).await?;
        Ok(setup)
    }

    async fn import_registry(&self, rows: &[Registered], file: &str) -> Result<()> {
        let mut csv = String::from("credit_code,tax_grade,si_headcount,utility_arrears_months,dishonest\n");
        for r in rows {
            let _ =
                writeln!(csv, "{},{},{},{},{}", r.code, r.tax_grade, r.si_headcount, r.arrears, r.dishonest);
        }
        let files = (
            write(self.dir.path(), &format!("{file}.schema.toml"), REGISTRY_SCHEMA)?,
            write(self.dir.path(), &format!("{file}.csv"), &csv)?,
        );
        import_ok(self.center(), "registry", &files).await?;
        Ok(())
    }

    fn center(&self) -> &NodeHandle {
        self.alliance.node("credit-center").expect("credit-center")
    }

    fn bank(&self) -> &NodeHandle {
        self.alliance.node("bank-a").expect("bank-a")
    }

    fn other_bank(&self) -> &NodeHandle {
        self.alliance.node("bank-b").expect("bank-b")
    }

    /// The easy-loan contract (bit mask over 4 rules, 8 bits), proposed by the credit
    /// center, signed by bank-a.
    async fn agree(&self, name: &str, quota: u64) -> Result<String> {
        let id = format!("credit-center.{name}");
        let toml = lookup(
            &id,
            "integration test: Credit Easy Loan criteria",
            &[party(self.center(), &["coordinator", "provider"]), party(self.bank(), &["querier"])],
            &[LookupProvider {
                node: "credit-center",
                dataset: "registry",
                columns: EASY_LOAN_COLUMNS,
                rules: EASY_LOAN_RULES,
            }],
            &["bank-a"],
            "bitmask",
            8,
            quota,
        );
        self.alliance.agree("credit-center", &toml, &id, &["bank-a"]).await?;
        Ok(id)
    }

    /// Distinct registered applicants: what one run spends of the quota.
    fn registered(&self) -> u64 {
        let known: std::collections::BTreeSet<&String> = self.registry.iter().map(|r| &r.code).collect();
        self.applicants.iter().filter(|c| known.contains(c)).count() as u64
    }

    /// The plaintext answer per applicant: None when not registered, else the criteria.
    fn expected(&self) -> BTreeMap<String, Option<[bool; 4]>> {
        let rows: BTreeMap<&String, &Registered> = self.registry.iter().map(|r| (&r.code, r)).collect();
        self.applicants
            .iter()
            .map(|c| {
                let criteria = rows
                    .get(c)
                    .map(|r| easy_loan_criteria(r.tax_grade, r.si_headcount, r.arrears, r.dishonest));
                (c.clone(), criteria)
            })
            .collect()
    }
}

/// Compares a run's per-applicant results with the plaintext evaluation.
fn check_results(report: &serde_json::Value, expected: &BTreeMap<String, Option<[bool; 4]>>) {
    let results = report["results"].as_object().expect("results");
    assert_eq!(results.len(), expected.len());
    let mut all_hold = 0;
    for (code, want) in expected {
        let got = &results[code];
        match want {
            None => assert_eq!(got["registered"], false, "{code}: {got}"),
            Some(criteria) => {
                assert_eq!(got["registered"], true, "{code}: {got}");
                let flags: Vec<bool> =
                    got["criteria"].as_array().expect("criteria").iter().map(|b| b == true).collect();
                assert_eq!(flags, criteria.to_vec(), "{code}: {got}");
                let all = criteria.iter().all(|c| *c);
                assert_eq!(got["all"], all, "{code}");
                all_hold += usize::from(all);
            }
        }
    }
    assert!(all_hold > 0, "some applicants meet every criterion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn easy_loan_masks_match_the_plaintext_evaluation() -> Result<()> {
    let setup = Setup::new().await?;
    let id = setup.agree("lookup-easy-loan", 10_000).await?;
    let report = setup.bank().run("lookup", &id).await?;
    assert_eq!(report["computation"], "lookup");
    assert_eq!(report["output"], "bitmask");
    assert_eq!(report["applicants"], setup.applicants.len());
    assert_eq!(report["lookups"], setup.registered());
    assert_eq!(report["universe_size"], setup.registry.len());
    // w = 8 bits: one byte per universe entry downloaded, plus the universe itself.
    assert!(report["bytes_vector"].as_u64().unwrap_or(0) >= setup.registry.len() as u64);
    // The query sessions' traffic: at least one blinded and one evaluated element (32
    // bytes each) per lookup.
    let query_bytes = report["bytes_query"].as_u64().unwrap_or(0);
    assert!(query_bytes >= 64 * setup.registered(), "{query_bytes} query bytes");
    check_results(&report, &setup.expected());

    // The output file is the operator's only, as PSI's.
    let path = std::path::PathBuf::from(report["output_file"].as_str().expect("output file"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
    let csv = std::fs::read_to_string(&path)?;
    assert_eq!(csv.lines().count(), setup.applicants.len() + 1);

    // The provider learned how many lookups were made, and audited it.
    let jobs = setup.center().status().await?.jobs;
    let provider_job =
        jobs.iter().find(|j| j.contract_id == id && j.role == "provider").expect("provider job");
    assert_eq!(provider_job.state, "succeeded");
    assert!(
        provider_job.detail.contains(&format!("{} lookups by bank-a", setup.registered())),
        "{provider_job:?}"
    );
    audit_verifies(setup.center()).await?;

    // A second run in the same epoch gets the same vector (cached) and the same answers.
    let again = setup.bank().run("lookup", &id).await?;
    check_results(&again, &setup.expected());
    assert_eq!(again["universe_digest"], report["universe_digest"]);
    // bank-a holds the universe now: the repeat download is the vector alone, w/8 = 1
    // byte per entry plus the chunk headers.
    let repeat = again["bytes_vector"].as_u64().unwrap_or(u64::MAX);
    assert!(repeat < report["bytes_vector"].as_u64().unwrap_or(0), "{repeat}");
    assert!(repeat < setup.registry.len() as u64 + 1024, "{repeat}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_quota_is_enforced_by_the_provider() -> Result<()> {
    let setup = Setup::new().await?;
    let n = setup.registered();
    // One run fits, a second does not; only distinct registered applicants count.
    let id = setup.agree("lookup-quota", n + 10).await?;
    let first = setup.bank().run("lookup", &id).await?;
    check_results(&first, &setup.expected());
    let second = run_status(setup.bank(), "lookup", &id).await?.expect_err("over the quota");
    assert_contains(
        second.message(),
        &["peer credit-center answered", &format!("{n} evaluations requested, 10 left in today's quota")],
    );
    // Refused sessions spend nothing.
    let third = run_status(setup.bank(), "lookup", &id).await?.expect_err("still over the quota");
    assert_contains(third.message(), &["10 left in today's quota"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_the_contract_does_not_name_gets_nothing() -> Result<()> {
    let setup = Setup::new().await?;
    let id = setup.agree("lookup-not-a-party", 10_000).await?;
    let mut client = peer_client(channel(setup.other_bank(), setup.center()).await?);
    let refused = client
        .lookup_vector(proto::LookupVectorRequest {
            contract_id: id.clone(),
            epoch: 0,
            session_id: vec![7; 16],
            known_universe: Vec::new(),
        })
        .await
        .expect_err("bank-b may not download");
    // The same answer as for a contract that does not exist (no probing).
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let hello = crafted_hello(&id, &["91350203MA0000000X"])?;
    let session = client.lookup(tokio_stream::iter(vec![proto::Frame { payload: hello }])).await;
    let status = match session {
        Err(status) => status,
        Ok(response) => response.into_inner().next().await.expect("an answer").expect_err("refused"),
    };
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // And bank-b's own run is refused by bank-b: it holds no such contract.
    let own = run_status(setup.other_bank(), "lookup", &id).await?.expect_err("not a party");
    assert_eq!(own.code(), Code::NotFound, "{own:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_the_banks_identity_key_cannot_download() -> Result<()> {
    let setup = Setup::new().await?;
    let id = setup.agree("lookup-minted", 10_000).await?;
    let minted = mint_certificate(&program(), &setup.alliance, setup.center(), "bank-a")?;
    let auth = xmcredit_node::server::client_auth(&minted)?;
    let wire =
        xmcredit_node::transport::connect(&setup.center().address, &setup.center().id, auth, CONNECT_TIMEOUT)
            .await?;
    let refused = peer_client(wire)
        .lookup_vector(proto::LookupVectorRequest {
            contract_id: id,
            epoch: 0,
            session_id: vec![9; 16],
            known_universe: Vec::new(),
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_contains(refused.message(), &["bank-a proved identity key", &setup.bank().public_key, "refused"]);
    Ok(())
}

/// A Hello of bank-a's for contract `id` in the current epoch (epoch 0: the contract
/// window starts an hour ago with daily epochs) over a universe of `codes`.
fn crafted_hello(id: &str, codes: &[&str]) -> Result<Vec<u8>> {
    let universe =
        std::sync::Arc::new(Universe::from_unsorted(codes.iter().map(|c| c.as_bytes().to_vec()).collect())?);
    let contract = ContractId::new(id)?;
    let header = VectorHeader::new(contract.clone(), Epoch(0), &universe, Width::new(8)?);
    let provider = NodeId::new("credit-center")?;
    let applicants: Vec<Vec<u8>> = universe.entries().to_vec();
    let query = LookupQuery::new(header, universe, vec![provider.clone()], &applicants)?;
    let binding =
        SessionBinding { contract, epoch: Epoch(0), session: SessionId::random(&mut rand::rngs::OsRng) };
    let (_, out) =
        query.start_session(QuerierConfig { binding, provider, chunk_size: 64 }, &mut rand::rngs::OsRng)?;
    Ok(out[0].bytes.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_universe_and_a_second_vector_are_refused() -> Result<()> {
    let setup = Setup::new().await?;
    let id = setup.agree("lookup-universe", 10_000).await?;
    let first = setup.bank().run("lookup", &id).await?;
    check_results(&first, &setup.expected());

    // A querier bound to another universe is refused at Hello, before any quota.
    let mut client = peer_client(channel(setup.bank(), setup.center()).await?);
    let hello = crafted_hello(&id, &[setup.registry[0].code.as_str(), setup.registry[1].code.as_str()])?;
    let session = client.lookup(tokio_stream::iter(vec![proto::Frame { payload: hello }])).await;
    let status = match session {
        Err(status) => status,
        Ok(response) => response.into_inner().next().await.expect("an answer").expect_err("refused"),
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_contains(status.message(), &["lookup: bound to universe"]);

    // A new registry in the same epoch would make a second vector with the same pads
    // (their difference would be g - g', unpadded): the provider refuses to publish it.
    let mut changed = setup.registry.clone();
    changed.truncate(1100);
    setup.import_registry(&changed, "registry-2").await?;
    let refused = run_status(setup.bank(), "lookup", &id).await?.expect_err("a second vector");
    assert_contains(refused.message(), &["already has a lookup vector in epoch 0", "next epoch"]);
    Ok(())
}

// ---- Several providers: SecAgg aggregation --------------------------------------------

const LOANS_SCHEMA: &str = "name = \"loans\"\nkey = \"credit_code\"\ncolumns = [{ name = \"outstanding\", type = \"decimal\", scale = 2 }]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_bank_exposure_sums_every_banks_balance_exactly_the_querier_included() -> Result<()> {
    let (dir, mut alliance) =
        alliance(&["credit-center", "bank-a", "bank-b", "bank-c", "bank-d"], true).await?;
    let universe = codes(41, 600);
    let mut csv = String::from("credit_code,tax_grade,si_headcount,utility_arrears_months,dishonest\n");
    for r in registry_rows(&universe) {
        let _ = writeln!(csv, "{},{},{},{},{}", r.code, r.tax_grade, r.si_headcount, r.arrears, r.dishonest);
    }
    let center = alliance.node("credit-center")?;
    import_ok(
        center,
        "registry",
        &(
            write(dir.path(), "registry.schema.toml", REGISTRY_SCHEMA)?,
            write(dir.path(), "registry.csv", &csv)?,
        ),
    )
    .await?;
    // Each bank lends to a different slice of the universe, overlapping, in yuan with
    // fen. bank-a lends too and queries: it brings its loan book as a provider and its
    // applicants as the querier.
    let banks = ["bank-a", "bank-b", "bank-c", "bank-d"];
    let mut books: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for (b, bank) in banks.iter().enumerate() {
        let book: BTreeMap<String, u64> = universe
            .iter()
            .enumerate()
            .filter(|(i, _)| (i + b) % (2 + b) == 0)
            .map(|(i, code)| (code.clone(), ((i * 7919 + b * 104_729) % 60_000_000) as u64))
            .collect();
        let mut text = String::from("credit_code,outstanding\n");
        for (code, fen) in &book {
            let _ = writeln!(text, "{code},{}.{:02}", fen / 100, fen % 100);
        }
        let files = (
            write(dir.path(), &format!("loans-{bank}.schema.toml"), LOANS_SCHEMA)?,
            write(dir.path(), &format!("loans-{bank}.csv"), &text)?,
        );
        import_ok(alliance.node(bank)?, "loans", &files).await?;
        books.insert(bank, book);
    }
    let mut applicants: Vec<String> = universe.iter().step_by(3).cloned().collect();
    applicants.extend(codes(42, 20).into_iter().filter(|c| !universe.contains(c)).take(10));
    import_ok(
        alliance.node("bank-a")?,
        "loan_applicants",
        &write_applicants(dir.path(), "apps", &applicants)?,
    )
    .await?;

    let id = "credit-center.lookup-exposure";
    let providers: Vec<LookupProvider> = banks
        .iter()
        .map(|bank| LookupProvider { node: bank, dataset: "loans", columns: &["outstanding"], rules: "" })
        .collect();
    let toml = lookup(
        id,
        "integration test: multi-bank exposure",
        &[
            party(center, &["coordinator"]),
            party(alliance.node("bank-a")?, &["provider", "querier"]),
            party(alliance.node("bank-d")?, &["provider"]),
            party(alliance.node("bank-b")?, &["provider"]),
            party(alliance.node("bank-c")?, &["provider"]),
        ],
        &providers,
        &["bank-a"],
        "value",
        48,
        10_000,
    );
    alliance.agree("credit-center", &toml, id, &["bank-a", "bank-b", "bank-c", "bank-d"]).await?;

    // Before the coordinator aggregates, there is nothing to download.
    let early = run_status(alliance.node("bank-a")?, "lookup", id).await?.expect_err("no aggregate yet");
    assert_contains(early.message(), &["no aggregate for epoch 0 yet"]);

    let published = center.run("lookup", id).await?;
    assert_eq!(published["aggregated"], true, "{published}");
    assert_eq!(published["secagg"]["computation"], "secagg");
    // The banks gave their one masked input for this epoch: a second aggregate is refused.
    let again = run_status(center, "lookup", id).await?.expect_err("one aggregate per epoch");
    assert_contains(again.message(), &["already has its aggregate for epoch 0"]);

    let report = alliance.node("bank-a")?.run("lookup", id).await?;
    let results = report["results"].as_object().expect("results");
    let known: std::collections::BTreeSet<&String> = universe.iter().collect();
    let mut nonzero = 0;
    for code in &applicants {
        let got = &results[code];
        if !known.contains(code) {
            assert_eq!(got["registered"], false, "{code}");
            continue;
        }
        let want: u64 = books.values().map(|book| book.get(code).copied().unwrap_or(0)).sum();
        let lenders = books.values().filter(|book| book.contains_key(code)).count();
        nonzero += usize::from(lenders >= 2);
        assert_eq!(got["value"], want, "{code}: {got}");
    }
    assert!(nonzero > 10, "several applicants borrow at more than one bank");
    // The output file has the sums in yuan, to the fen.
    let file = std::fs::read_to_string(report["output_file"].as_str().expect("output file"))?;
    let sample = applicants.iter().find(|c| known.contains(c)).expect("a registered applicant");
    let fen: u64 = books.values().map(|book| book.get(sample).copied().unwrap_or(0)).sum();
    assert!(file.contains(&format!("{sample},true,{}.{:02}\n", fen / 100, fen % 100)), "{file}");
    // Each other provider answered one session of the registered applicants; bank-a
    // removed its own pads in-process.
    let registered = applicants.iter().filter(|c| known.contains(c)).count() as u64;
    for bank in &banks[1..] {
        let jobs = alliance.node(bank)?.status().await?.jobs;
        let job = jobs.iter().find(|j| j.contract_id == id && j.role == "provider").expect("provider job");
        assert!(job.detail.contains(&format!("{registered} lookups by bank-a")), "{job:?}");
    }

    // A provider missing from the run: no partial result, and the refusal names it.
    alliance.node_mut("bank-d")?.stop()?;
    let missing = run_status(alliance.node("bank-a")?, "lookup", id).await?.expect_err("bank-d is down");
    assert_contains(missing.message(), &["bank-d"]);
    Ok(())
}

// ---- Sole-proprietor profile: points from four providers, some negative ---------------

const UTILITY_SCHEMA: &str = r#"name = "utility_arrears"
key = "credit_code"
columns = [
  { name = "water_months", type = "integer" },
  { name = "power_months", type = "integer" },
]
"#;
const OVERDUE_SCHEMA: &str =
    "name = \"overdue\"\nkey = \"credit_code\"\ncolumns = [{ name = \"overdue_count\", type = \"integer\" }]\n";
const PROFILE_CENTER_RULES: &str = r#"[
  { column = "tax_grade", comparison = "in", constant = ["A", "B"], points = 30 },
  { column = "si_headcount", comparison = "ge", constant = 1, points = 10 },
  { column = "dishonest", comparison = "eq", constant = true, points = -60 },
]"#;
const PROFILE_UTILITY_RULES: &str = r#"[
  { column = "water_months", comparison = "gt", constant = 3, points = -10 },
  { column = "power_months", comparison = "gt", constant = 3, points = -10 },
]"#;
const PROFILE_BANK_RULES: &str = r#"[
  { column = "overdue_count", comparison = "ge", constant = 1, points = -15 },
  { column = "overdue_count", comparison = "ge", constant = 3, points = -15 },
]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sole_proprietor_scores_sum_four_providers_and_reveal_only_the_total() -> Result<()> {
    let (dir, alliance) = alliance(&["credit-center", "bank-a", "bank-b", "utilities"], true).await?;
    let universe = codes(51, 500);
    let registry = registry_rows(&universe);
    let mut csv = String::from("credit_code,tax_grade,si_headcount,utility_arrears_months,dishonest\n");
    for r in &registry {
        let _ = writeln!(csv, "{},{},{},{},{}", r.code, r.tax_grade, r.si_headcount, r.arrears, r.dishonest);
    }
    let center = alliance.node("credit-center")?;
    let files = (
        write(dir.path(), "registry.schema.toml", REGISTRY_SCHEMA)?,
        write(dir.path(), "registry.csv", &csv)?,
    );
    import_ok(center, "registry", &files).await?;
    // The utilities node: water and power arrears in months, for most entities.
    let arrears = |i: usize| (((i * 11) % 7) as i64, ((i * 3) % 6) as i64);
    let mut csv = String::from("credit_code,water_months,power_months\n");
    for (i, code) in universe.iter().enumerate().filter(|(i, _)| i % 5 != 0) {
        let (water, power) = arrears(i);
        let _ = writeln!(csv, "{code},{water},{power}");
    }
    let files =
        (write(dir.path(), "utility.schema.toml", UTILITY_SCHEMA)?, write(dir.path(), "utility.csv", &csv)?);
    import_ok(alliance.node("utilities")?, "utility_arrears", &files).await?;
    // Each bank's overdue counts for the entities it lends to; bank-a also queries.
    let overdue = |bank: usize, i: usize| ((i * (7 + bank)) % 5) as i64;
    for (b, bank) in ["bank-a", "bank-b"].iter().enumerate() {
        let mut csv = String::from("credit_code,overdue_count\n");
        for (i, code) in universe.iter().enumerate().filter(|(i, _)| (i + b) % 3 == 0) {
            let _ = writeln!(csv, "{code},{}", overdue(b, i));
        }
        let files = (
            write(dir.path(), &format!("overdue-{bank}.schema.toml"), OVERDUE_SCHEMA)?,
            write(dir.path(), &format!("overdue-{bank}.csv"), &csv)?,
        );
        import_ok(alliance.node(bank)?, "overdue", &files).await?;
    }
    let mut applicants: Vec<String> = universe.iter().step_by(4).cloned().collect();
    applicants.extend(codes(52, 20).into_iter().filter(|c| !universe.contains(c)).take(8));
    import_ok(
        alliance.node("bank-a")?,
        "loan_applicants",
        &write_applicants(dir.path(), "apps", &applicants)?,
    )
    .await?;

    let id = "credit-center.lookup-sole-proprietor";
    let providers = [
        LookupProvider {
            node: "credit-center",
            dataset: "registry",
            columns: &["tax_grade", "si_headcount", "dishonest"],
            rules: PROFILE_CENTER_RULES,
        },
        LookupProvider {
            node: "utilities",
            dataset: "utility_arrears",
            columns: &["water_months", "power_months"],
            rules: PROFILE_UTILITY_RULES,
        },
        LookupProvider {
            node: "bank-a",
            dataset: "overdue",
            columns: &["overdue_count"],
            rules: PROFILE_BANK_RULES,
        },
        LookupProvider {
            node: "bank-b",
            dataset: "overdue",
            columns: &["overdue_count"],
            rules: PROFILE_BANK_RULES,
        },
    ];
    let toml = lookup(
        id,
        "integration test: sole-proprietor profile",
        &[
            party(center, &["coordinator", "provider"]),
            party(alliance.node("bank-a")?, &["provider", "querier"]),
            party(alliance.node("bank-b")?, &["provider"]),
            party(alliance.node("utilities")?, &["provider"]),
        ],
        &providers,
        &["bank-a"],
        "points",
        16,
        10_000,
    );
    alliance.agree("credit-center", &toml, id, &["bank-a", "bank-b", "utilities"]).await?;
    let published = center.run("lookup", id).await?;
    assert_eq!(published["aggregated"], true, "{published}");
    let report = alliance.node("bank-a")?.run("lookup", id).await?;

    let index: BTreeMap<&String, usize> = universe.iter().enumerate().map(|(i, c)| (c, i)).collect();
    let results = report["results"].as_object().expect("results");
    let mut negative = 0;
    for code in &applicants {
        let got = &results[code];
        let Some(&i) = index.get(code) else {
            assert_eq!(got["registered"], false, "{code}");
            continue;
        };
        let r = &registry[i];
        let mut want = 0i64;
        want += if matches!(r.tax_grade, "A" | "B") { 30 } else { 0 };
        want += if r.si_headcount >= 1 { 10 } else { 0 };
        want += if r.dishonest { -60 } else { 0 };
        if i % 5 != 0 {
            let (water, power) = arrears(i);
            want -= 10 * i64::from(water > 3) + 10 * i64::from(power > 3);
        }
        for b in 0..2 {
            if (i + b) % 3 == 0 {
                let count = overdue(b, i);
                want -= 15 * i64::from(count >= 1) + 15 * i64::from(count >= 3);
            }
        }
        negative += usize::from(want < 0);
        assert_eq!(got["value"], want, "{code}: {got}");
        // The total only: no provider's share, no rule that held.
        let fields: Vec<&String> = got.as_object().expect("a result").keys().collect();
        assert_eq!(fields, ["registered", "value"], "{code}: {got}");
    }
    assert!(negative > 5, "the plaintext has negative totals to get right ({negative})");
    assert_eq!(report["providers"].as_array().map(Vec::len), Some(4), "{report}");
    Ok(())
}
