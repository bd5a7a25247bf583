//! Secure aggregation between real node processes (a credit center and banks on
//! 127.0.0.1, mutual TLS, sled stores): exact sums with no dropout, with dropouts at every
//! round up to n - t, an abort below the threshold that reveals nothing, a contributor
//! refusing an input wider than the contract allows, and contributors refusing a second
//! run of a contract in one epoch (one masked input per contract and epoch, so every run
//! below that reaches the masked inputs has a contract of its own). Sums are checked
//! against the plaintext sum of the CSV files the test writes.

use std::path::Path;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::Value;
use xmcredit_contracts::entity_code::{EntityCode, EntityKind, XIAMEN_DISTRICTS};
use xmcredit_contracts::Contract;
use xmcredit_node::proto;
use xmcredit_node::run::secagg::fault::ExitPoint;
use xmcredit_node::run::secagg::sum_digest;
use xmcredit_simulator::alliance::{Alliance, NodeProgram};
use xmcredit_simulator::contracts::PartyLine;
use xmcredit_simulator::secagg_scenarios::{
    expected_sum, loans_file, restart_with_exit, Loan, SecaggContract, INDUSTRIES, LOANS_DATASET,
};

const CENTER: &str = "credit-center";

fn program() -> NodeProgram {
    NodeProgram::Binary(env!("CARGO_BIN_EXE_xmcredit-node-under-test").into())
}

fn districts() -> Vec<String> {
    XIAMEN_DISTRICTS.iter().map(|(d, _)| d.to_string()).collect()
}

/// A bank's loans: `rows` borrowers with balances up to `max_yuan`.
fn book(rng: &mut ChaCha20Rng, rows: usize, max_yuan: u64) -> Result<Vec<Loan>> {
    let mut loans = Vec::with_capacity(rows);
    for _ in 0..rows {
        let (district, _) = XIAMEN_DISTRICTS[rng.gen_range(0..XIAMEN_DISTRICTS.len())];
        let code = EntityCode::random(rng, EntityKind::Enterprise, district)?;
        let (industry, _) = INDUSTRIES[rng.gen_range(0..INDUSTRIES.len())];
        let outstanding_fen = rng.gen_range(1..max_yuan * 100);
        loans.push(Loan { code, district, industry, outstanding_fen, registered: true });
    }
    Ok(loans)
}

/// An alliance of the credit center and `banks`, each bank holding its `loans`.
async fn alliance(dir: &Path, banks: &[&str], books: &[Vec<Loan>]) -> Result<Alliance> {
    let mut ids = vec![CENTER];
    ids.extend_from_slice(banks);
    let alliance = Alliance::create(program(), dir, &ids, true).await?;
    for (bank, loans) in banks.iter().zip(books) {
        let file = loans_file(loans, &dir.join("csv").join(bank))?;
        let report = alliance.node(bank)?.import(file.name, &file.schema, &file.csv, false).await?;
        anyhow::ensure!(report["committed"].as_bool() == Some(true), "{bank} import: {report}");
    }
    Ok(alliance)
}

/// A per-district contract over `banks`, agreed by everyone.
async fn district_contract(
    alliance: &Alliance,
    id: &str,
    banks: &[&str],
    threshold: usize,
    output_bits: u32,
) -> Result<()> {
    district_contract_with(alliance, id, banks, threshold, output_bits, "").await
}

/// [`district_contract`] with extra lines under `[computation]` (the differencing
/// defences: `survivors = "all"`, `noise = {...}`).
async fn district_contract_with(
    alliance: &Alliance,
    id: &str,
    banks: &[&str],
    threshold: usize,
    output_bits: u32,
    computation: &str,
) -> Result<()> {
    let party = |node: &str, roles: &'static [&'static str]| -> Result<PartyLine<'_>> {
        let handle = alliance.node(node)?;
        Ok(PartyLine { node: handle.id.as_str(), public_key: &handle.public_key, roles })
    };
    let contract = SecaggContract {
        id,
        purpose: "test: outstanding loans per district",
        coordinator: party(CENTER, &["coordinator"])?,
        contributors: banks.iter().map(|b| party(b, &["contributor"])).collect::<Result<_>>()?,
        threshold,
        min_contributors: threshold,
        dataset: LOANS_DATASET,
        value_column: "outstanding",
        group_column: "district",
        groups: districts(),
        output_bits,
    };
    let mut toml = contract.toml();
    if !computation.is_empty() {
        toml = toml.replace(
            "[computation]\nkind = \"secagg\"\n",
            &format!("[computation]\nkind = \"secagg\"\n{computation}\n"),
        );
        anyhow::ensure!(toml.contains(computation), "{toml}");
    }
    alliance.agree(CENTER, &toml, id, banks).await
}

fn sum_of(report: &Value) -> Vec<u64> {
    report["sum"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn by_district(books: &[&Vec<Loan>]) -> Vec<u64> {
    expected_sum(books.iter().map(|b| b.as_slice()), &districts(), |l| l.district.to_string())
}

/// The latest job of `role` under `contract` on `node`.
async fn last_job(alliance: &Alliance, node: &str, contract: &str, role: &str) -> Result<proto::JobSummary> {
    let status = alliance.node(node)?.status().await?;
    status
        .jobs
        .into_iter()
        .filter(|j| j.contract_id == contract && j.role == role)
        .max_by_key(|j| j.job_id)
        .with_context(|| format!("no {role} job for {contract} on {node}"))
}

async fn audit(alliance: &Alliance, node: &str) -> Result<Vec<Value>> {
    let reply = alliance.node(node)?.admin().await?.audit_show(proto::AuditShowRequest { last: 0 }).await?;
    reply.into_inner().records_json.iter().map(|r| Ok(serde_json::from_str(r)?)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_sums_without_dropouts_by_group_and_over_a_universe() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let banks = ["bank-a", "bank-b", "bank-c"];
    let books: Vec<Vec<Loan>> = (0..3).map(|_| book(&mut rng, 40, 2_000_000)).collect::<Result<_>>()?;
    let alliance = alliance(dir.path(), &banks, &books).await?;
    district_contract(&alliance, "credit-center.loans-by-district", &banks, 2, 48).await?;

    let report = alliance.node(CENTER)?.run("secagg", "credit-center.loans-by-district").await?;
    assert_eq!(sum_of(&report), by_district(&books.iter().collect::<Vec<_>>()), "{report}");
    assert_eq!(strings(&report["contributors"]), banks);
    assert_eq!(report["dropped"], serde_json::json!({}));
    assert_eq!(strings(&report["groups"]), districts());
    for bank in banks {
        let job = last_job(&alliance, bank, "credit-center.loans-by-district", "contributor").await?;
        assert_eq!(job.state, "succeeded", "{bank}: {}", job.detail);
    }
    let records = audit(&alliance, CENTER).await?;
    let last = records.last().context("no audit record")?;
    assert_eq!(last["outcome"]["status"], "ok", "{last}");
    assert_eq!(last["set_sizes"]["bank-a"], 6);
    let verify = alliance
        .node(CENTER)?
        .admin()
        .await?
        .audit_verify(proto::AuditVerifyRequest { witnesses: false })
        .await?;
    assert!(verify.get_ref().ok, "{}", verify.get_ref().detail);

    // Universe mode: the credit center publishes a registry of 2^17 + 1000 codes (the
    // masked inputs and the opening message cross in several 1 MiB fragments); each
    // bank sums by key over it; borrowers outside it count nowhere.
    let mut universe: Vec<String> = books.iter().flatten().step_by(2).map(|l| l.code.to_string()).collect();
    while universe.len() < (1 << 17) + 1000 {
        let (district, _) = XIAMEN_DISTRICTS[rng.gen_range(0..XIAMEN_DISTRICTS.len())];
        universe.push(EntityCode::random(&mut rng, EntityKind::SoleProprietor, district)?.to_string());
    }
    universe.sort();
    universe.dedup();
    let csv_dir = dir.path().join("csv").join(CENTER);
    std::fs::create_dir_all(&csv_dir)?;
    let mut csv = String::from("credit_code,registered_on\n");
    for code in &universe {
        csv.push_str(code);
        csv.push_str(",2024-01-01\n");
    }
    std::fs::write(csv_dir.join("registry.csv"), csv)?;
    std::fs::write(
        csv_dir.join("registry.schema.toml"),
        "name = \"registry\"\nkey = \"credit_code\"\ncolumns = [{ name = \"registered_on\", type = \"date\" }]\n",
    )?;
    let imported = alliance
        .node(CENTER)?
        .import("registry", &csv_dir.join("registry.schema.toml"), &csv_dir.join("registry.csv"), false)
        .await?;
    assert_eq!(imported["committed"], true, "{imported}");
    let handles: Vec<_> = banks.iter().map(|b| alliance.node(b)).collect::<Result<_>>()?;
    let contract = SecaggContract {
        id: "credit-center.loans-by-entity",
        purpose: "test: outstanding loans per registered entity",
        coordinator: PartyLine {
            node: CENTER,
            public_key: &alliance.node(CENTER)?.public_key,
            roles: &["coordinator"],
        },
        contributors: handles
            .iter()
            .map(|h| PartyLine { node: h.id.as_str(), public_key: &h.public_key, roles: &["contributor"] })
            .collect(),
        threshold: 2,
        min_contributors: 2,
        dataset: LOANS_DATASET,
        value_column: "outstanding",
        group_column: "credit_code",
        groups: Vec::new(),
        output_bits: 40,
    };
    alliance.agree(CENTER, &contract.toml(), "credit-center.loans-by-entity", &banks).await?;
    let report = alliance.node(CENTER)?.run("secagg", "credit-center.loans-by-entity").await?;
    let expected = expected_sum(books.iter().map(Vec::as_slice), &universe, |l| l.code.to_string());
    assert_eq!(report["mode"], "universe");
    assert_eq!(report["vector_len"].as_u64(), Some(universe.len() as u64));
    assert_eq!(report["sum_digest"].as_str(), Some(sum_digest(&expected).as_str()), "{report}");
    assert_eq!(report["nonzero"].as_u64(), Some(expected.iter().filter(|v| **v != 0).count() as u64));
    // The full sum is in the output file, one line per code.
    let path = report["output_file"].as_str().context("no output file")?;
    let lines: Vec<String> = std::fs::read_to_string(path)?.lines().skip(1).map(String::from).collect();
    let wanted: Vec<String> = universe.iter().zip(&expected).map(|(c, v)| format!("{c},{v}")).collect();
    assert!(lines == wanted, "the output file differs from the plaintext sum");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropouts_at_every_round_up_to_n_minus_t() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let banks = ["bank-a", "bank-b", "bank-c", "bank-d"];
    let books: Vec<Vec<Loan>> = (0..4).map(|_| book(&mut rng, 25, 1_000_000)).collect::<Result<_>>()?;
    let mut alliance = alliance(dir.path(), &banks, &books).await?;
    // One contract per run: a bank sends one masked input per contract and epoch.
    for id in
        ["credit-center.loans-4-drop-early", "credit-center.loans-4-drop-late", "credit-center.loans-4-all"]
    {
        district_contract(&alliance, id, &banks, 2, 48).await?;
    }

    // n - t = 2 dropouts: at round 0 (bank-d) and round 1 (bank-c): the sum is a + b.
    restart_with_exit(&mut alliance, "bank-d", Some(ExitPoint::BeforeKeys)).await?;
    restart_with_exit(&mut alliance, "bank-c", Some(ExitPoint::BeforeShares)).await?;
    let report = alliance.node(CENTER)?.run("secagg", "credit-center.loans-4-drop-early").await?;
    assert_eq!(sum_of(&report), by_district(&[&books[0], &books[1]]), "{report}");
    assert_eq!(strings(&report["contributors"]), ["bank-a", "bank-b"]);
    assert_eq!(report["dropped"], serde_json::json!({"bank-c": 1, "bank-d": 0}), "{report}");

    // At round 2 (bank-c, before its masked input: not counted) and round 4 (bank-d,
    // after it: counted, its self-mask rebuilt from the others' shares).
    restart_with_exit(&mut alliance, "bank-c", Some(ExitPoint::BeforeMaskedInput)).await?;
    restart_with_exit(&mut alliance, "bank-d", Some(ExitPoint::AfterMaskedInput)).await?;
    let report = alliance.node(CENTER)?.run("secagg", "credit-center.loans-4-drop-late").await?;
    assert_eq!(sum_of(&report), by_district(&[&books[0], &books[1], &books[3]]), "{report}");
    assert_eq!(strings(&report["contributors"]), ["bank-a", "bank-b", "bank-d"]);
    assert_eq!(report["dropped"], serde_json::json!({"bank-c": 2, "bank-d": 4}), "{report}");

    // The coordinator's audit says who dropped at which round.
    let records = audit(&alliance, CENTER).await?;
    let reasons: Vec<String> = records
        .iter()
        .filter(|r| r["outcome"]["status"] == "interrupted")
        .filter_map(|r| r["outcome"]["reason"].as_str().map(String::from))
        .collect();
    for (node, round) in [("bank-d", 0), ("bank-c", 1), ("bank-c", 2), ("bank-d", 4)] {
        let needle = format!("{node} dropped at round {round}");
        assert!(reasons.iter().any(|r| r.contains(&needle)), "no audit record with {needle:?}: {reasons:?}");
    }
    assert!(reasons.iter().any(|r| r.contains("bank-d dropped at round 4") && r.contains("is in the sum")));

    // Restarted without the hook, every bank takes part again.
    for bank in ["bank-c", "bank-d"] {
        restart_with_exit(&mut alliance, bank, None).await?;
    }
    let report = alliance.node(CENTER)?.run("secagg", "credit-center.loans-4-all").await?;
    assert_eq!(sum_of(&report), by_district(&books.iter().collect::<Vec<_>>()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_dropouts_abort_with_a_clear_error_and_reveal_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let banks = ["bank-a", "bank-b", "bank-c"];
    let books: Vec<Vec<Loan>> = (0..3).map(|_| book(&mut rng, 20, 1_000_000)).collect::<Result<_>>()?;
    let mut alliance = alliance(dir.path(), &banks, &books).await?;
    district_contract(&alliance, "credit-center.loans-abort", &banks, 2, 48).await?;
    restart_with_exit(&mut alliance, "bank-b", Some(ExitPoint::BeforeMaskedInput)).await?;
    restart_with_exit(&mut alliance, "bank-c", Some(ExitPoint::BeforeMaskedInput)).await?;

    let error = alliance
        .node(CENTER)?
        .run("secagg", "credit-center.loans-abort")
        .await
        .err()
        .context("a sum was output")?;
    let message = format!("{error:#}");
    assert!(
        message.contains("round 2") && message.contains("1 contributors left, the threshold is 2; aborted"),
        "{message}"
    );
    let center = last_job(&alliance, CENTER, "credit-center.loans-abort", "coordinator").await?;
    assert_eq!(center.state, "failed");
    assert!(center.detail.contains("nothing was unmasked"), "{}", center.detail);
    assert!(
        center.detail.contains("bank-b at round 2") && center.detail.contains("bank-c at round 2"),
        "{}",
        center.detail
    );
    // bank-a sent its masked input, then the session ended before any unmask request:
    // it never revealed a share.
    let survivor = last_job(&alliance, "bank-a", "credit-center.loans-abort", "contributor").await?;
    assert_eq!(survivor.state, "failed", "{}", survivor.detail);
    assert!(survivor.detail.contains("before the coordinator's message for round 4"), "{}", survivor.detail);
    let outputs = alliance.node(CENTER)?.dir.join("outputs");
    let written = std::fs::read_dir(&outputs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "no output file after an abort");
    let records = audit(&alliance, CENTER).await?;
    let last = records.last().context("no audit record")?;
    assert_eq!(last["outcome"]["status"], "failed", "{last}");
    assert!(last["outcome"]["reason"].as_str().is_some_and(|r| r.contains("aborted")), "{last}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_wider_than_output_bits_are_refused_by_their_contributor() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let banks = ["bank-a", "bank-b", "bank-c"];
    // 24 bits hold 167,772.15 yuan per district: banks a and b stay well below; bank-c
    // has one loan of 200,000 yuan.
    let mut books: Vec<Vec<Loan>> = (0..3).map(|_| book(&mut rng, 6, 2_000)).collect::<Result<_>>()?;
    books[2][0].outstanding_fen = 20_000_000;
    let alliance = alliance(dir.path(), &banks, &books).await?;
    district_contract(&alliance, "credit-center.loans-narrow", &banks, 2, 24).await?;

    let report = alliance.node(CENTER)?.run("secagg", "credit-center.loans-narrow").await?;
    assert_eq!(sum_of(&report), by_district(&[&books[0], &books[1]]), "{report}");
    assert_eq!(report["dropped"], serde_json::json!({"bank-c": 0}), "{report}");
    let reason = report["dropped_reasons"]["bank-c"].as_str().unwrap_or_default();
    assert!(reason.contains("output_bits = 24"), "{reason}");
    // What the coordinator is told names no group and no value.
    let district = books[2][0].district;
    assert!(!reason.contains(district) && !reason.contains("200000"), "{reason}");
    // bank-c's own audit records the refusal with the group.
    let records = audit(&alliance, "bank-c").await?;
    let refusal = records
        .iter()
        .filter(|r| r["outcome"]["status"] == "refused")
        .filter_map(|r| r["outcome"]["reason"].as_str())
        .find(|r| r.contains("output_bits"))
        .context("no refusal in bank-c's audit")?;
    assert!(refusal.contains("the first is group"), "{refusal}");

    // n × (2^bits - 1) must fit 64 bits: 3 contributors at 63 bits could wrap, and the
    // contract is refused before anyone signs it.
    let error = district_contract(&alliance, "credit-center.loans-wrap", &banks, 2, 63)
        .await
        .err()
        .context("no refusal")?;
    let message = format!("{error:#}");
    assert!(message.contains("limits.output_bits") && message.contains("could wrap"), "{message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_a_contract_in_one_epoch_is_refused_and_reveals_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let banks = ["bank-a", "bank-b", "bank-c"];
    let books: Vec<Vec<Loan>> = (0..3).map(|_| book(&mut rng, 20, 1_000_000)).collect::<Result<_>>()?;
    let mut alliance = alliance(dir.path(), &banks, &books).await?;
    district_contract(&alliance, "credit-center.loans-once", &banks, 2, 48).await?;

    // A run that aborts before any masked input (two banks killed in round 1) claims
    // nothing: the same contract can run again in the same epoch.
    for bank in ["bank-b", "bank-c"] {
        restart_with_exit(&mut alliance, bank, Some(ExitPoint::BeforeShares)).await?;
    }
    let error = alliance
        .node(CENTER)?
        .run("secagg", "credit-center.loans-once")
        .await
        .err()
        .context("a sum was output")?;
    assert!(format!("{error:#}").contains("aborted"), "{error:#}");
    for bank in ["bank-b", "bank-c"] {
        restart_with_exit(&mut alliance, bank, None).await?;
    }
    let report = alliance.node(CENTER)?.run("secagg", "credit-center.loans-once").await?;
    assert_eq!(sum_of(&report), by_district(&books.iter().collect::<Vec<_>>()), "{report}");
    // The per-district sums are written for the node's user only.
    let path = report["output_file"].as_str().context("no output file")?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path}");
    }
    let outputs = alliance.node(CENTER)?.dir.join("outputs");
    let written = std::fs::read_dir(&outputs)?.count();
    let jobs_before: Vec<usize> = {
        let mut counts = Vec::new();
        for bank in banks {
            let status = alliance.node(bank)?.status().await?;
            counts.push(status.jobs.iter().filter(|j| j.contract_id == "credit-center.loans-once").count());
        }
        counts
    };

    // The differencing attack: the coordinator runs the same contract again (it could
    // then drop one bank and subtract the sums). Every bank refuses at the opening
    // message, naming the contract and epoch; nothing is masked, unmasked or output.
    let error = alliance
        .node(CENTER)?
        .run("secagg", "credit-center.loans-once")
        .await
        .err()
        .context("a second sum")?;
    let message = format!("{error:#}");
    assert!(message.contains("round 0") && message.contains("aborted"), "{message}");
    let reason = "already contributed a masked input to contract credit-center.loans-once in epoch 0; a re-run needs a new epoch or a new contract";
    let center = last_job(&alliance, CENTER, "credit-center.loans-once", "coordinator").await?;
    assert_eq!(center.state, "failed", "{}", center.detail);
    assert!(center.detail.contains("nothing was unmasked"), "{}", center.detail);
    for bank in banks {
        assert!(center.detail.contains(&format!("{bank} at round 0")), "{}", center.detail);
    }
    assert_eq!(center.detail.matches(reason).count(), banks.len(), "{}", center.detail);
    assert_eq!(std::fs::read_dir(&outputs)?.count(), written, "no second output file");
    for (bank, before) in banks.iter().zip(jobs_before) {
        // Refused before any session state: no new job, a refusal in the bank's audit.
        let status = alliance.node(bank)?.status().await?;
        let after = status.jobs.iter().filter(|j| j.contract_id == "credit-center.loans-once").count();
        assert_eq!(after, before, "{bank} started a session");
        let records = audit(&alliance, bank).await?;
        let last = records.last().context("no audit record")?;
        assert_eq!(last["outcome"]["status"], "refused", "{bank}: {last}");
        assert!(last["outcome"]["reason"].as_str().is_some_and(|r| r.contains(reason)), "{bank}: {last}");
    }
    Ok(())
}

/// An opening message as the coordinator would send it (see node `run/secagg/wire.rs`),
/// in one frame.
fn opening_frame(contract: &Contract, digest: [u8; 32], nonce: [u8; 16]) -> proto::Frame {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let epoch = (now - contract.not_before) / contract.epoch_seconds;
    let id = contract.id.as_str().as_bytes();
    let mut payload = vec![0x00, 0x01, 0xF0]; // last fragment; version 1, kind open
    payload.extend_from_slice(&(id.len() as u16).to_be_bytes());
    payload.extend_from_slice(id);
    payload.extend_from_slice(&epoch.to_be_bytes());
    payload.extend_from_slice(&nonce);
    payload.extend_from_slice(&digest);
    payload.extend_from_slice(&0u32.to_be_bytes()); // no universe
    proto::Frame { payload }
}

/// Opens a `SecAgg` stream to `to` as `from` (with `from`'s own certificate).
async fn open_session(alliance: &Alliance, from: &str, to: &str, frame: proto::Frame) -> Result<(), String> {
    let config =
        xmcredit_node::config::NodeConfig::load(&alliance.node(from).map_err(|e| e.to_string())?.config)
            .map_err(|e| e.to_string())?;
    let auth = xmcredit_node::server::client_auth(&config).map_err(|e| e.to_string())?;
    let target = alliance.node(to).map_err(|e| e.to_string())?;
    let channel = xmcredit_node::transport::connect(
        &target.address,
        &target.id,
        auth,
        std::time::Duration::from_secs(5),
    )
    .await
    .map_err(|e| e.to_string())?;
    let frames = tokio_stream::iter(vec![frame]);
    match xmcredit_node::service::peer_client(channel).sec_agg(frames).await {
        Ok(_) => Ok(()),
        Err(status) => Err(status.message().to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contributors_refuse_strangers_other_contract_bytes_and_replays() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let banks = ["bank-a", "bank-b"];
    let books: Vec<Vec<Loan>> = (0..2).map(|_| book(&mut rng, 5, 1_000)).collect::<Result<_>>()?;
    let alliance = alliance(dir.path(), &banks, &books).await?;
    district_contract(&alliance, "credit-center.loans-2", &banks, 2, 48).await?;
    let view = alliance
        .node(CENTER)?
        .admin()
        .await?
        .show_contract(proto::ContractQuery { contract_id: "credit-center.loans-2".into() })
        .await?
        .into_inner();
    let canonical = hex::decode(&view.canonical_hex)?;
    let contract = Contract::from_canonical_bytes(&canonical)?;
    let digest = xmcredit_contracts::SignedContract::new(&contract)?.digest();

    // bank-a is a party, but not the coordinator.
    let stranger =
        open_session(&alliance, "bank-a", "bank-b", opening_frame(&contract, digest, [1; 16])).await;
    assert!(stranger.as_ref().is_err_and(|e| e.contains("not the coordinator")), "{stranger:?}");
    // The coordinator with other contract bytes under the same id.
    let mut other = digest;
    other[0] ^= 1;
    let altered = open_session(&alliance, CENTER, "bank-b", opening_frame(&contract, other, [2; 16])).await;
    assert!(altered.as_ref().is_err_and(|e| e.contains("not the one this node signed")), "{altered:?}");
    // A session id is used once: the same opening message again is a replay.
    open_session(&alliance, CENTER, "bank-b", opening_frame(&contract, digest, [3; 16]))
        .await
        .map_err(anyhow::Error::msg)?;
    let replay = open_session(&alliance, CENTER, "bank-b", opening_frame(&contract, digest, [3; 16])).await;
    assert!(replay.as_ref().is_err_and(|e| e.contains("replay")), "{replay:?}");
    Ok(())
}

#[test]
fn universe_mode_needs_the_key_as_group_column() -> Result<()> {
    let key = hex::encode(xmcredit_crypto::sign::IdentityKey::from_seed(&[1; 32])?.public_key().to_bytes());
    let keys: Vec<String> = (2u8..=3)
        .map(|s| {
            Ok(hex::encode(xmcredit_crypto::sign::IdentityKey::from_seed(&[s; 32])?.public_key().to_bytes()))
        })
        .collect::<Result<_>>()?;
    let contract = |group_column: &'static str| SecaggContract {
        id: "credit-center.u",
        purpose: "p",
        coordinator: PartyLine { node: CENTER, public_key: &key, roles: &["coordinator"] },
        contributors: vec![
            PartyLine { node: "bank-a", public_key: &keys[0], roles: &["contributor"] },
            PartyLine { node: "bank-b", public_key: &keys[1], roles: &["contributor"] },
        ],
        threshold: 2,
        min_contributors: 2,
        dataset: LOANS_DATASET,
        value_column: "outstanding",
        group_column,
        groups: Vec::new(),
        output_bits: 40,
    };
    Contract::from_toml_str(&contract("credit_code").toml())?;
    let refused = Contract::from_toml_str(&contract("district").toml()).err().context("accepted")?;
    assert!(refused.to_string().contains("key column"), "{refused}");
    Ok(())
}

/// Moves every node but `down` a day on (the contracts' next epoch) and restarts it;
/// `down` stays stopped.
async fn next_epoch_without(alliance: &mut Alliance, down: &str) -> Result<()> {
    alliance.node_mut(down)?.stop()?;
    let others: Vec<String> =
        alliance.nodes.iter().map(|n| n.id.to_string()).filter(|id| id != down).collect();
    for id in others {
        let node = alliance.node_mut(&id)?;
        node.stop()?;
        node.set_env("XMCREDIT_TIME_OFFSET_SECS", "86400");
        node.start().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differencing_across_epochs_recovers_nothing_under_survivors_all() -> Result<()> {
    // The attack (issue 10): a contract with min_contributors 2 runs in epoch 0 with
    // bank-a, bank-b and bank-c, and in epoch 1 without bank-a; the difference of the
    // two sums is bank-a's vector.
    let dir = tempfile::tempdir()?;
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let banks = ["bank-a", "bank-b", "bank-c"];
    let books: Vec<Vec<Loan>> = (0..3).map(|_| book(&mut rng, 30, 1_000_000)).collect::<Result<_>>()?;
    let mut alliance = alliance(dir.path(), &banks, &books).await?;
    let (open, guarded) = ("credit-center.loans-threshold", "credit-center.loans-all");
    district_contract_with(&alliance, open, &banks, 2, 48, "").await?;
    district_contract_with(&alliance, guarded, &banks, 2, 48, "survivors = \"all\"").await?;
    let all = by_district(&[&books[0], &books[1], &books[2]]);
    let epoch0_open = sum_of(&alliance.node(CENTER)?.run("secagg", open).await?);
    let epoch0_guarded = sum_of(&alliance.node(CENTER)?.run("secagg", guarded).await?);
    assert_eq!((&epoch0_open, &epoch0_guarded), (&all, &all));

    next_epoch_without(&mut alliance, "bank-a").await?;
    // Without the defence the attack works: the difference is bank-a's vector exactly.
    let epoch1_open = sum_of(&alliance.node(CENTER)?.run("secagg", open).await?);
    let difference: Vec<u64> = epoch0_open.iter().zip(&epoch1_open).map(|(a, b)| a - b).collect();
    assert_eq!(difference, by_district(&[&books[0]]), "the differencing attack is real");
    // With survivors = "all", the run without bank-a aborts and unmasks nothing.
    let outputs = alliance.node(CENTER)?.dir.join("outputs");
    let written = std::fs::read_dir(&outputs)?.count();
    let error = alliance.node(CENTER)?.run("secagg", guarded).await.err().context("a sum without bank-a")?;
    let message = format!("{error:#}");
    assert!(message.contains("2 contributors left, the threshold is 3; aborted"), "{message}");
    assert_eq!(std::fs::read_dir(&outputs)?.count(), written, "no output file");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_contract_over_the_same_column_with_other_contributors_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let banks = ["bank-a", "bank-b", "bank-c"];
    let books: Vec<Vec<Loan>> = (0..3).map(|_| book(&mut rng, 10, 1_000_000)).collect::<Result<_>>()?;
    let alliance = alliance(dir.path(), &banks, &books).await?;
    district_contract(&alliance, "credit-center.loans-abc", &banks, 2, 48).await?;
    // Attack: the same column over "all but bank-c", to subtract from the first.
    let refused = district_contract(&alliance, "credit-center.loans-ab", &["bank-a", "bank-b"], 2, 48)
        .await
        .err()
        .context("the second contract was signed")?;
    let message = format!("{refused:#}");
    assert!(
        message.contains("sums column outstanding of dataset loans over contributors [bank-a, bank-b]")
            && message.contains("credit-center.loans-abc (already signed)")
            && message.contains("could subtract"),
        "{message}"
    );
    // The same contributors over another grouping is fine (nothing to subtract).
    district_contract(&alliance, "credit-center.loans-abc-again", &banks, 2, 48).await?;
    Ok(())
}

/// Waits until no job of `node` is `running`.
async fn settle(alliance: &Alliance, node: &str, point: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = alliance.node(node)?.status().await?;
        if status.jobs.iter().all(|j| j.state != "running") {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{point}: {node} still has a running job");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_at_any_secagg_round_recovers() -> Result<()> {
    // Each role, each round: the coordinator before each message it sends, a
    // contributor at each of its points. After a restart nothing is left running, every
    // audit chain verifies, and a new contract over the same banks sums exactly.
    let dir = tempfile::tempdir()?;
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let banks = ["bank-a", "bank-b", "bank-c"];
    let books: Vec<Vec<Loan>> = (0..3).map(|_| book(&mut rng, 12, 1_000_000)).collect::<Result<_>>()?;
    let mut alliance = alliance(dir.path(), &banks, &books).await?;
    let all = by_district(&[&books[0], &books[1], &books[2]]);
    let points = xmcredit_node::run::fault::SECAGG_COORDINATOR_POINTS
        .iter()
        .map(|p| (CENTER, p.to_string()))
        .chain(ExitPoint::ALL.iter().map(|p| ("bank-a", p.name().to_string())));
    for (i, (victim, point)) in points.enumerate() {
        let id = format!("credit-center.crash-{i}");
        district_contract(&alliance, &id, &banks, 2, 48).await?;
        let node = alliance.node_mut(victim)?;
        node.stop()?;
        node.set_env(xmcredit_node::run::fault::EXIT_AT_VAR, &point);
        node.start().await?;
        // With t = 2 of 3 a contributor's death may still leave a sum; the coordinator's
        // cannot. Either way the victim must die at its point.
        let run = alliance.node(CENTER)?.run("secagg", &id).await;
        if victim == CENTER {
            assert!(run.is_err(), "{point}: no sum without the coordinator");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alliance.node_mut(victim)?.is_running() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "{point}: {victim} did not die");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let node = alliance.node_mut(victim)?;
        node.stop()?;
        node.set_env(xmcredit_node::run::fault::EXIT_AT_VAR, "");
        node.start().await?;
        for name in [CENTER, "bank-a", "bank-b", "bank-c"] {
            settle(&alliance, name, &point).await?;
            let verify = alliance
                .node(name)?
                .admin()
                .await?
                .audit_verify(proto::AuditVerifyRequest { witnesses: false })
                .await?;
            anyhow::ensure!(verify.get_ref().ok, "{point}: {name}'s audit: {}", verify.get_ref().detail);
        }
        let again = format!("credit-center.crash-{i}-again");
        district_contract(&alliance, &again, &banks, 2, 48).await?;
        let report = alliance.node(CENTER)?.run("secagg", &again).await?;
        assert_eq!(sum_of(&report), all, "{point}: a new run sums exactly");
    }
    Ok(())
}

/// A noisy report's sum: entries can be negative.
fn signed_sum_of(report: &Value) -> Vec<i64> {
    report["sum"].as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default()
}

/// Declared total variance of the noise in the tests below: σ = 10^5 fen (1,000 yuan)
/// per district, against balances of up to 10^8 fen per loan.
const NOISE_VARIANCE: u64 = 10_000_000_000;
const NOISE: &str = "noise = { mechanism = \"skellam\", variance = 10000000000, sensitivity = 100000000 }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differencing_across_epochs_under_noise_gives_bank_a_plus_noise() -> Result<()> {
    // The attack against a contract that declares noise and keeps the threshold
    // rule: epoch 0 with all three banks, epoch 1 without bank-a, subtract.
    let dir = tempfile::tempdir()?;
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let banks = ["bank-a", "bank-b", "bank-c"];
    let books: Vec<Vec<Loan>> = (0..3).map(|_| book(&mut rng, 30, 1_000_000)).collect::<Result<_>>()?;
    let mut alliance = alliance(dir.path(), &banks, &books).await?;
    let id = "credit-center.loans-noisy";
    district_contract_with(&alliance, id, &banks, 2, 48, NOISE).await?;

    let report0 = alliance.node(CENTER)?.run("secagg", id).await?;
    assert_eq!(report0["noise"]["variance"], NOISE_VARIANCE, "{report0}");
    assert!(report0["noise"]["epsilon_at_delta_1e-6"].as_f64().is_some(), "{report0}");
    let epoch0 = signed_sum_of(&report0);
    let exact0 = by_district(&[&books[0], &books[1], &books[2]]);
    assert_eq!(epoch0.len(), exact0.len(), "{report0}");
    assert_ne!(epoch0, exact0.iter().map(|&v| v as i64).collect::<Vec<_>>(), "no noise on the sum");

    next_epoch_without(&mut alliance, "bank-a").await?;
    let report1 = alliance.node(CENTER)?.run("secagg", id).await?;
    let epoch1 = signed_sum_of(&report1);
    let bank_a = by_district(&[&books[0]]);
    let deviation: Vec<i64> =
        epoch0.iter().zip(&epoch1).zip(&bank_a).map(|((s0, s1), a)| s0 - s1 - *a as i64).collect();
    assert!(deviation.iter().all(|&d| d != 0), "an entry of bank-a's vector came out exact: {deviation:?}");
    // t = 2 of 3: each bank adds V/2; epoch 0 carries 1.5·V, epoch 1 V, the difference
    // 2.5·V. Six entries: their RMS lies within [0.2σ, 5σ] except with probability
    // below 3·10^-4 (χ² with 6 degrees of freedom).
    let sigma = (2.5 * NOISE_VARIANCE as f64).sqrt();
    let rms = (deviation.iter().map(|&d| (d as f64).powi(2)).sum::<f64>() / deviation.len() as f64).sqrt();
    assert!(rms > 0.2 * sigma && rms < 5.0 * sigma, "deviation {deviation:?}: RMS {rms}, σ {sigma}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_contract_over_the_same_column_is_accepted_when_noise_is_declared() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let banks = ["bank-a", "bank-b", "bank-c"];
    let books: Vec<Vec<Loan>> = (0..3).map(|_| book(&mut rng, 10, 1_000_000)).collect::<Result<_>>()?;
    let alliance = alliance(dir.path(), &banks, &books).await?;
    district_contract(&alliance, "credit-center.loans-abc", &banks, 2, 48).await?;
    // The subset contract that is refused without noise is signed with it: its sum, and
    // so any difference with the first, carries the declared noise.
    district_contract_with(&alliance, "credit-center.loans-ab-noisy", &["bank-a", "bank-b"], 2, 48, NOISE)
        .await?;
    let report = alliance.node(CENTER)?.run("secagg", "credit-center.loans-ab-noisy").await?;
    let exact = by_district(&[&books[0], &books[1]]);
    let noisy = signed_sum_of(&report);
    assert_eq!(noisy.len(), exact.len());
    // Within the noise's tail bound (64σ + 64), not equal.
    let bound = 64.0 * (NOISE_VARIANCE as f64).sqrt() + 64.0;
    assert!(
        noisy.iter().zip(&exact).all(|(n, e)| ((n - *e as i64) as f64).abs() < bound),
        "{noisy:?} {exact:?}"
    );
    assert_ne!(noisy, exact.iter().map(|&v| v as i64).collect::<Vec<_>>());
    Ok(())
}
