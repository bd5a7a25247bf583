//! Duplicate financing between real nodes (issue 14, design.md computation 2): every
//! bank gets exactly its invoices financed at two or more banks, with their
//! multiplicity, against the counts made in the clear; the coordinator's histogram is
//! the plaintext one. Refusals: a second run past the bank's daily quota (by the
//! committee member), a second contract past the member's per-dataset ceiling across
//! contracts, a bank whose dataset is keyed otherwise than the contract says, a
//! node the contract does not name, a replayed Hello and one bound to another epoch; a
//! committee member that dies mid-protocol, or is absent, aborts the run naming it.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::*;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Code;
use xmcredit_crypto::{ContractId, Epoch, SessionId};
use xmcredit_node::proto;
use xmcredit_node::run::fault::EXIT_AT_VAR;
use xmcredit_node::run::overthreshold::{CHUNK_SIZE, FAULT_MEMBER_BEFORE_EVALUATION};
use xmcredit_node::service::peer_client;
use xmcredit_protocol::overthreshold::{Hello, OverthresholdMessage};
use xmcredit_protocol::SessionBinding;
use xmcredit_simulator::alliance::{Alliance, NodeHandle};
use xmcredit_simulator::contracts::PartyLine;
use xmcredit_simulator::overthreshold_scenarios::{
    contract, histogram_of, import_ids, read_result, write_invoices, Financing, INVOICES_DATASET,
    INVOICE_KEY_KIND,
};

/// Invoices per bank before the seeded frauds are added.
const PER_BANK: usize = 300;

fn line<'a>(node: &'a NodeHandle, roles: &'a [&'a str]) -> PartyLine<'a> {
    PartyLine { node: node.id.as_str(), public_key: &node.public_key, roles }
}

struct Setup {
    dir: TempDir,
    alliance: Alliance,
}

impl Setup {
    async fn new(ids: &[&str]) -> Result<Self> {
        let (dir, alliance) = alliance(ids, true).await?;
        Ok(Self { dir, alliance })
    }

    fn node(&self, id: &str) -> &NodeHandle {
        self.alliance.node(id).expect("node")
    }

    async fn import(&self, bank: &str, invoices: &[String], file: &str) -> Result<()> {
        let files = write_invoices(self.dir.path(), file, invoices)?;
        import_ids(self.node(bank), INVOICES_DATASET, &files).await?;
        Ok(())
    }

    /// Proposes `toml` from the credit center; every other party signs.
    async fn agree(&self, id: &str, toml: &str, signers: &[&str]) -> Result<()> {
        self.alliance.agree("credit-center", toml, id, signers).await
    }

    /// Jobs of `node` for `contract` in `role`, newest first.
    async fn jobs(&self, node: &str, contract: &str, role: &str) -> Result<Vec<proto::JobSummary>> {
        let mut jobs: Vec<proto::JobSummary> = self
            .node(node)
            .status()
            .await?
            .jobs
            .into_iter()
            .filter(|j| j.contract_id == contract && j.role == role)
            .collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.job_id));
        Ok(jobs)
    }
}

/// Opens an `OverthresholdEval` stream from `from` (its own TLS identity and identity
/// key) to `to` with `first` as the only frame; returns the status it ends with.
async fn eval_status(from: &NodeHandle, to: &NodeHandle, first: Vec<u8>) -> Result<tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(proto::Frame { payload: first }).await?;
    let call = peer_client(channel(from, to).await?).overthreshold_eval(ReceiverStream::new(rx)).await;
    let mut replies = match call {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(status),
    };
    match tokio::time::timeout(Duration::from_secs(20), replies.next()).await {
        Ok(Some(Err(status))) => Ok(status),
        other => anyhow::bail!("expected a refusal, got {other:?}"),
    }
}

fn hello(contract: &str, epoch: u64, session: SessionId, n: u64) -> Result<Vec<u8>> {
    let binding = SessionBinding { contract: ContractId::new(contract)?, epoch: Epoch(epoch), session };
    Ok(OverthresholdMessage::Hello(Hello { binding, set_size: n, chunk_size: CHUNK_SIZE }).to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_duplicates_are_found_exactly_and_every_refusal_says_why() -> Result<()> {
    let setup = Setup::new(&["credit-center", "bank-a", "bank-b", "bank-c", "bank-d"]).await?;
    let banks = ["bank-a", "bank-b", "bank-c"];
    let financing = Financing::generate(14, banks.len(), PER_BANK, 5, 3)?;
    for (b, bank) in banks.iter().enumerate() {
        setup.import(bank, &financing.banks[b], &format!("invoices-{bank}")).await?;
    }
    let largest = financing.banks.iter().map(Vec::len).max().unwrap_or(0) as u64;
    let id = "credit-center.duplicate-invoices";
    // The daily quota lets each bank run once, not twice.
    let quota = largest * 3 / 2;
    let (center, a, b, c) =
        (setup.node("credit-center"), setup.node("bank-a"), setup.node("bank-b"), setup.node("bank-c"));
    let toml = contract(
        id,
        "integration test: invoices financed at two or more banks",
        &[
            line(center, &["committee", "coordinator"]),
            line(a, &["committee", "contributor"]),
            line(b, &["committee", "contributor"]),
            line(c, &["contributor"]),
        ],
        None,
        quota,
        10,
        4096,
    );
    setup.agree(id, &toml, &banks).await?;

    let report = center.run("overthreshold", id).await?;
    let session = report["session"].as_str().unwrap_or_default().to_string();
    assert_eq!(report["threshold"], 2, "the default threshold");
    assert_eq!(report["counted"].as_array().map(Vec::len), Some(3), "{report}");
    for (i, bank) in banks.iter().enumerate() {
        let (got, bank_report) = read_result(setup.node(bank), id, &session)?;
        let expected = financing.expected(i, 2);
        assert_eq!(got, expected, "{bank}: its invoices at 2+ banks, exactly");
        // Every seeded fraud this bank financed is among them, with its bank count.
        for (invoice, holders) in financing.seeded.iter().filter(|(_, h)| h.contains(&i)) {
            assert_eq!(got.get(invoice).copied(), Some(holders.len() as u16), "{bank}: {invoice}");
        }
        assert!(got.values().any(|m| *m == 3), "{bank} holds a triple");
        assert_eq!(bank_report["set_size"], financing.banks[i].len() as u64);
        // The operator's CSV beside it: mode 0600, one line per match.
        let csv = setup.node(bank).dir.join("outputs").join(format!("overthreshold-{id}-{session}.csv"));
        let text = std::fs::read_to_string(&csv)?;
        assert_eq!(text.lines().count(), expected.len() + 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&csv)?.permissions().mode() & 0o777, 0o600);
        }
    }
    assert_eq!(histogram_of(&report), financing.histogram(), "the coordinator's histogram");
    // Pairs of banks: the number of invoices both financed, as counted in the clear.
    for pair in report["pairs"].as_array().cloned().unwrap_or_default() {
        let (x, y) = (pair["a"].as_str().unwrap_or(""), pair["b"].as_str().unwrap_or(""));
        let index = |name: &str| banks.iter().position(|b| *b == name).expect("a bank");
        let (i, j) = (index(x), index(y));
        let shared = financing.banks[i].iter().filter(|inv| financing.banks[j].contains(inv)).count();
        assert_eq!(pair["shared"].as_u64(), Some(shared as u64), "{x} & {y}");
    }
    // Each committee member evaluated every contributor's whole set once, and says so.
    for member in ["credit-center", "bank-a", "bank-b"] {
        let jobs = setup.jobs(member, id, "committee").await?;
        assert_eq!(jobs.len(), 3, "{member}: one evaluation job per contributor");
        assert!(
            jobs.iter().all(|j| j.state == "succeeded" && j.detail.contains("evaluations for bank-")),
            "{jobs:?}"
        );
    }
    audit_verifies(center).await?;

    // A second run the same day: the committee members refuse it past the quota.
    let second = run_status(center, "overthreshold", id).await?;
    let status = second.expect_err("over the daily quota");
    assert_contains(status.message(), &["quota"]);
    let refused = setup.jobs("bank-a", id, "contributor").await?;
    assert_eq!(refused[0].state, "failed", "{refused:?}");
    assert_contains(&refused[0].detail, &["quota"]);

    // A node the contract does not name cannot have anything evaluated.
    let epoch = report["epoch"].as_u64().unwrap_or(0);
    let stranger = eval_status(setup.node("bank-d"), a, hello(id, epoch, SessionId([7; 16]), 20)?).await?;
    assert!(matches!(stranger.code(), Code::NotFound | Code::PermissionDenied), "{stranger:?}");
    // bank-c replaying the first run's session to a member: refused before any quota.
    let session_bytes: [u8; 16] =
        hex::decode(&session)?.try_into().map_err(|_| anyhow::anyhow!("session"))?;
    let replay = eval_status(c, center, hello(id, epoch, SessionId(session_bytes), 20)?).await?;
    assert_eq!(replay.code(), Code::AlreadyExists, "{replay:?}");
    // A Hello bound to another epoch.
    let other_epoch = eval_status(c, center, hello(id, epoch + 1, SessionId([9; 16]), 20)?).await?;
    assert_eq!(other_epoch.code(), Code::PermissionDenied, "{other_epoch:?}");
    assert_contains(other_epoch.message(), &["epoch"]);

    // Key column: bank-d signs while its invoices are keyed as the contract says, then
    // re-imports them keyed by another column; the contributor refuses at the run.
    setup.import("bank-d", &financing.banks[0], "bank-d-invoices").await?;
    let mismatch_id = "credit-center.duplicate-invoices-keys";
    let members = [
        line(center, &["committee", "coordinator"]),
        line(a, &["contributor"]),
        line(setup.node("bank-d"), &["contributor"]),
    ];
    let toml = contract(
        mismatch_id,
        "integration test: a bank re-keys its invoices",
        &members,
        Some(2),
        10_000,
        10,
        4096,
    );
    setup.agree(mismatch_id, &toml, &["bank-a", "bank-d"]).await?;
    let wrong_key = format!(
        "name = \"financed_invoices\"\nkey = \"fapiao_no\"\nkey_kind = {INVOICE_KEY_KIND}\ncolumns = [{{ name = \"amount\", type = \"decimal\", scale = 2 }}]\n"
    );
    let dir = setup.dir.path();
    let mut csv = String::from("fapiao_no,amount\n");
    for invoice in &financing.banks[0] {
        csv.push_str(&format!("{invoice},100.00\n"));
    }
    let files = (write(dir, "wrong-key.schema.toml", &wrong_key)?, write(dir, "wrong-key.csv", &csv)?);
    import_ids(setup.node("bank-d"), INVOICES_DATASET, &files).await?;
    let status = run_status(center, "overthreshold", mismatch_id).await?.expect_err("key mismatch");
    assert_contains(
        status.message(),
        &["bank-d", "keys dataset financed_invoices by invoice_no", "fapiao_no"],
    );
    // A new contract naming the old column is refused at signing, naming both columns.
    let column_id = "credit-center.duplicate-invoices-columns";
    let toml = contract(
        column_id,
        "integration test: a bank keys its invoices otherwise",
        &members,
        Some(2),
        10_000,
        10,
        4096,
    );
    let refused = setup.agree(column_id, &toml, &["bank-a", "bank-d"]).await.expect_err("key columns differ");
    assert_contains(
        &format!("{refused:#}"),
        &["bank-d", "financed_invoices", "column invoice_no", "column fapiao_no"],
    );

    // Another key definition (invoice numbers only trimmed, no pattern): bank-d refuses
    // to sign, naming both definitions; nothing runs.
    let trimmed = "{ kind = \"identifier\", normalize = [\"trim\"] }";
    let other_kind = format!(
        "name = \"financed_invoices\"\nkey = \"invoice_no\"\nkey_kind = {trimmed}\ncolumns = [{{ name = \"amount\", type = \"decimal\", scale = 2 }}]\n"
    );
    let csv = csv.replacen("fapiao_no", "invoice_no", 1);
    let files = (write(dir, "other-kind.schema.toml", &other_kind)?, write(dir, "other-kind.csv", &csv)?);
    import_ids(setup.node("bank-d"), INVOICES_DATASET, &files).await?;
    let kinds_id = "credit-center.duplicate-invoices-kinds";
    let toml = contract(
        kinds_id,
        "integration test: a bank defines its invoice key otherwise",
        &[
            line(center, &["committee", "coordinator"]),
            line(a, &["contributor"]),
            line(setup.node("bank-d"), &["contributor"]),
        ],
        Some(2),
        10_000,
        10,
        4096,
    );
    let refused =
        setup.agree(kinds_id, &toml, &["bank-a", "bank-d"]).await.expect_err("key definitions differ");
    assert_contains(
        &format!("{refused:#}"),
        &["bank-d", "financed_invoices", "strip_hyphens", "[0-9]{20}", "[\\\"trim\\\"]", "same key"],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_or_absent_committee_member_aborts_the_run_naming_it() -> Result<()> {
    let mut setup = Setup::new(&["credit-center", "bank-a", "bank-b", "member-m"]).await?;
    let financing = Financing::generate(15, 2, 120, 4, 0)?;
    for (b, bank) in ["bank-a", "bank-b"].iter().enumerate() {
        setup.import(bank, &financing.banks[b], &format!("invoices-{bank}")).await?;
    }
    let id = "credit-center.duplicate-invoices-committee";
    let toml = {
        let (center, a, b, m) =
            (setup.node("credit-center"), setup.node("bank-a"), setup.node("bank-b"), setup.node("member-m"));
        contract(
            id,
            "integration test: a committee member that dies",
            &[
                line(center, &["committee", "coordinator"]),
                line(a, &["contributor"]),
                line(b, &["contributor"]),
                line(m, &["committee"]),
            ],
            None,
            10_000,
            10,
            1024,
        )
    };
    setup.agree(id, &toml, &["bank-a", "bank-b", "member-m"]).await?;

    // member-m dies after accepting Hello, before it answers a single chunk.
    {
        let member = setup.alliance.node_mut("member-m")?;
        member.stop()?;
        member.set_env(EXIT_AT_VAR, FAULT_MEMBER_BEFORE_EVALUATION);
        member.start().await?;
    }
    let started = Instant::now();
    let status =
        run_status(setup.node("credit-center"), "overthreshold", id).await?.expect_err("a member died");
    assert_contains(status.message(), &["committee member member-m failed", "bank-a", "bank-b"]);
    assert!(started.elapsed() < Duration::from_secs(50), "aborted when the stream broke, not at a timeout");
    for bank in ["bank-a", "bank-b"] {
        let jobs = setup.jobs(bank, id, "contributor").await?;
        assert_eq!(jobs[0].state, "failed", "{jobs:?}");
        assert_contains(&jobs[0].detail, &["member-m"]);
        let outputs = setup.node(bank).dir.join("outputs");
        let written = std::fs::read_dir(&outputs).map(|d| d.count()).unwrap_or(0);
        assert_eq!(written, 0, "{bank} wrote no result");
    }

    // Absent altogether: unreachable, named.
    setup.alliance.node_mut("member-m")?.kill()?;
    let status =
        run_status(setup.node("credit-center"), "overthreshold", id).await?.expect_err("member absent");
    assert_contains(status.message(), &["member-m"]);
    // The coordinator's record of the aborted run. The center is also a committee
    // member: its own evaluation for a bank may finish, and be recorded, after it.
    let records = audit_records(setup.node("credit-center")).await?;
    let aborted = records
        .iter()
        .rev()
        .find(|r| r["contract"] == id && r["outcome"]["status"] != "ok")
        .cloned()
        .unwrap_or_default();
    assert_eq!(aborted["outcome"]["status"], "failed", "{records:?}");
    assert_contains(&aborted["outcome"].to_string(), &["member-m"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_contract_does_not_multiply_a_banks_daily_evaluations() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("xmcredit-ot-ceiling-").tempdir()?;
    let banks = ["bank-a", "bank-b", "bank-c"];
    let financing = Financing::generate(15, banks.len(), PER_BANK, 5, 3)?;
    let largest = financing.banks.iter().map(Vec::len).max().unwrap_or(0) as u64;
    // Each member evaluates at most one run's worth per bank a day, across contracts.
    let ceiling = largest * 3 / 2;
    let alliance = Alliance::create_with_limits(
        program(),
        dir.path(),
        &["credit-center", "bank-a", "bank-b", "bank-c"],
        true,
        &format!("dataset_lookups_per_day = {ceiling}"),
    )
    .await?;
    let setup = Setup { dir, alliance };
    for (b, bank) in banks.iter().enumerate() {
        setup.import(bank, &financing.banks[b], &format!("invoices-{bank}")).await?;
    }
    let (center, a, b, c) =
        (setup.node("credit-center"), setup.node("bank-a"), setup.node("bank-b"), setup.node("bank-c"));
    let members = [
        line(center, &["committee", "coordinator"]),
        line(a, &["committee", "contributor"]),
        line(b, &["committee", "contributor"]),
        line(c, &["contributor"]),
    ];
    // Two contracts, each of which alone lets every bank run once today.
    let (first, second) = ("credit-center.invoices-first", "credit-center.invoices-second");
    for id in [first, second] {
        let toml = contract(id, "integration test: a second contract", &members, None, ceiling, 10, 4096);
        setup.agree(id, &toml, &banks).await?;
    }
    let report = center.run("overthreshold", first).await?;
    assert_eq!(report["counted"].as_array().map(Vec::len), Some(3), "{report}");
    // Attack: the same banks' invoices evaluated again today under the second contract.
    let refused = run_status(center, "overthreshold", second).await?.expect_err("over the ceiling");
    let jobs = setup.jobs("bank-a", second, "contributor").await?;
    let detail = jobs.first().map(|j| j.detail.clone()).unwrap_or_default();
    let text = format!("{} | {detail}", refused.message());
    assert_contains(&text, &["across all contracts", "limits.dataset_lookups_per_day"]);
    Ok(())
}
