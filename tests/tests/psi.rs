//! Two-party PSI between real nodes (issue 5): every output form gives the answer
//! computed in the clear; every refusal (no contract, unsigned, outside its window, a
//! set below the minimum, duplicates) says why; and a real server node refuses bad
//! protocol messages on the wire (invalid or identity points, truncated, oversized,
//! replayed), then keeps serving.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use common::*;
use curve25519_dalek::ristretto::RistrettoPoint;
use rand::rngs::OsRng;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Code, Status, Streaming};
use xmcredit_contracts::Contract;
use xmcredit_crypto::{ContractId, Epoch, NodeId, SessionId};
use xmcredit_node::proto::{self, Frame};
use xmcredit_node::service::peer_client;
use xmcredit_node::transport::MAX_MESSAGE_BYTES;
use xmcredit_protocol::psi::{
    BlindedChunk, ClientConfig, ClientOutput, ClientPolicy, PsiClient, PsiMessage, PsiOutputForm,
};
use xmcredit_protocol::SessionBinding;
use xmcredit_simulator::alliance::{Alliance, NodeHandle};

/// The credit center (PSI server, 1500 government rows) and bank-a (client, 315
/// applicants, 215 of them on the list), data imported.
struct Setup {
    dir: TempDir,
    alliance: Alliance,
    server_rows: Vec<GovRow>,
    client_codes: Vec<String>,
}

impl Setup {
    async fn new() -> Result<Self> {
        let server_codes = codes(21, 1500);
        let on_list: Vec<String> = server_codes.iter().step_by(7).cloned().collect();
        let listed: BTreeSet<&String> = server_codes.iter().collect();
        let off_list: Vec<String> =
            codes(22, 120).into_iter().filter(|c| !listed.contains(c)).take(100).collect();
        let mut client_codes: Vec<String> = on_list.into_iter().chain(off_list).collect();
        // Interleave matches and non-matches, so order says nothing.
        client_codes.sort_by_key(|c| sha256(c.as_bytes()));
        Self::with(server_codes, client_codes).await
    }

    async fn with(server_codes: Vec<String>, client_codes: Vec<String>) -> Result<Self> {
        let (dir, alliance) = alliance(&["credit-center", "bank-a"], true).await?;
        let server_rows = gov_rows(&server_codes);
        let gov = write_gov(dir.path(), GOV_DATASET, &server_rows)?;
        import_ok(alliance.node("credit-center")?, GOV_DATASET, &gov).await?;
        let setup = Self { dir, alliance, server_rows, client_codes };
        setup.import_client(&setup.client_codes.clone(), "applicants").await?;
        Ok(setup)
    }

    fn center(&self) -> &NodeHandle {
        self.alliance.node("credit-center").expect("credit-center")
    }

    fn bank(&self) -> &NodeHandle {
        self.alliance.node("bank-a").expect("bank-a")
    }

    /// Imports `codes` as a new version of bank-a's applicants.
    async fn import_client(&self, codes: &[String], file: &str) -> Result<()> {
        let files = write_applicants(self.dir.path(), file, codes)?;
        import_ok(self.bank(), "loan_applicants", &files).await?;
        Ok(())
    }

    /// The contract text, proposed by the credit center and signed by bank-a.
    async fn agree(
        &self,
        id: &str,
        output: &str,
        labels: &[&str],
        min_server: u64,
        min_client: u64,
    ) -> Result<String> {
        let toml = self.contract(id, output, labels, min_server, min_client);
        self.alliance.agree("credit-center", &toml, id, &["bank-a"]).await?;
        Ok(toml)
    }

    fn contract(&self, id: &str, output: &str, labels: &[&str], min_server: u64, min_client: u64) -> String {
        psi_contract(id, self.center(), self.bank(), output, labels, min_server, min_client)
    }

    /// The plaintext answer: bank-a's codes that are on the list, sorted.
    fn expected(&self, client: &[String]) -> Vec<String> {
        let listed: BTreeSet<&String> = self.server_rows.iter().map(|r| &r.code).collect();
        let mut out: Vec<String> = client.iter().filter(|c| listed.contains(c)).cloned().collect();
        out.sort();
        out
    }

    /// The credit center's PSI server jobs for `contract`, newest first.
    async fn server_jobs(&self, contract: &str) -> Result<Vec<proto::JobSummary>> {
        Ok(self
            .center()
            .status()
            .await?
            .jobs
            .into_iter()
            .filter(|j| j.contract_id == contract && j.role == "server")
            .collect())
    }

    /// A mutual-TLS channel from bank-a to the credit center, as bank-a.
    async fn wire(&self) -> Result<tonic::transport::Channel> {
        channel(self.bank(), self.center()).await
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The epoch a contract is in now: (now - not_before) / epoch_seconds.
fn epoch_of(toml: &str) -> Result<Epoch> {
    let contract = Contract::from_toml_str(toml)?;
    Ok(Epoch((now() - contract.not_before) / contract.epoch_seconds))
}

/// A client session for `codes` under `contract` in `epoch`: the state machine and its
/// Hello bytes.
fn client_session(
    contract: &str,
    epoch: Epoch,
    form: PsiOutputForm,
    codes: &[String],
    chunk_size: u32,
) -> Result<(PsiClient, Vec<u8>, SessionBinding)> {
    let binding = SessionBinding {
        contract: ContractId::new(contract)?,
        epoch,
        session: SessionId::random(&mut OsRng),
    };
    let config = ClientConfig {
        binding: binding.clone(),
        server: NodeId::new("credit-center")?,
        form,
        chunk_size,
        policy: ClientPolicy { min_server_set_size: 1, count_noise_epsilon_milli: None },
    };
    let inputs = codes.iter().map(|c| c.as_bytes().to_vec()).collect();
    let (client, first) = PsiClient::start(config, inputs, &mut OsRng)?;
    let hello = first.into_iter().next().context("no Hello")?.bytes;
    Ok((client, hello, binding))
}

/// Opens a PSI stream and sends `first`; returns the sender for more frames and the
/// server's answer to the opening (its reply stream, or the refusal).
async fn open(
    channel: tonic::transport::Channel,
    first: Vec<Vec<u8>>,
) -> Result<(mpsc::Sender<Frame>, std::result::Result<Streaming<Frame>, Status>)> {
    let (tx, rx) = mpsc::channel(64);
    for payload in first {
        tx.send(Frame { payload }).await?;
    }
    let answer = peer_client(channel).psi(ReceiverStream::new(rx)).await.map(|r| r.into_inner());
    Ok((tx, answer))
}

/// The next reply, which must be a refusal.
async fn refusal(replies: &mut Streaming<Frame>) -> Status {
    match replies.next().await {
        Some(Ok(frame)) => {
            let kind = PsiMessage::from_bytes(&frame.payload).map(|m| m.kind().name());
            panic!("expected a refusal, got {kind:?}");
        }
        Some(Err(status)) => status,
        None => panic!("the server closed the session without saying why"),
    }
}

/// Drives `client` to the end over `replies`, sending what it produces on `tx`.
async fn drive(
    mut client: PsiClient,
    tx: mpsc::Sender<Frame>,
    mut replies: Streaming<Frame>,
) -> Result<ClientOutput> {
    let server = NodeId::new("credit-center")?;
    while !client.is_done() {
        let frame = replies.next().await.context("the server ended the session early")??;
        let (next, out) = client.handle(&server, &frame.payload)?;
        client = next;
        for message in out {
            tx.send(Frame { payload: message.bytes }).await?;
        }
    }
    drop(tx);
    assert!(replies.next().await.is_none(), "the server sends nothing after its last message");
    client.into_output().context("no output")
}

/// `n` valid blinded-looking elements (random ristretto255 points).
fn random_elements(n: usize) -> Vec<[u8; 32]> {
    (0..n).map(|_| RistrettoPoint::random(&mut OsRng).compress().to_bytes()).collect()
}

/// Hello, then the HelloAck, on a fresh stream; returns the sender and the replies.
async fn accepted_session(
    setup: &Setup,
    toml: &str,
    id: &str,
    n: usize,
) -> Result<(mpsc::Sender<Frame>, Streaming<Frame>, SessionBinding)> {
    let (_, hello, binding) =
        client_session(id, epoch_of(toml)?, PsiOutputForm::Intersection, &setup.client_codes[..n], 8192)?;
    let (tx, answer) = open(setup.wire().await?, vec![hello]).await?;
    let mut replies = answer?;
    let ack = replies.next().await.context("no HelloAck")??;
    match PsiMessage::from_bytes(&ack.payload)? {
        PsiMessage::HelloAck(ack) => assert_eq!(ack.server_set_size, setup.server_rows.len() as u64),
        other => panic!("expected HelloAck, got {}", other.kind().name()),
    }
    Ok((tx, replies, binding))
}

/// The node still answers an honest run with the right answer.
async fn still_serves(setup: &Setup, id: &str) -> Result<()> {
    let report = setup.bank().run("psi", id).await?;
    assert_eq!(report_codes(&report, "intersection"), setup.expected(&setup.client_codes));
    Ok(())
}

// ---- Output forms ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intersection_form_gives_the_plaintext_intersection() -> Result<()> {
    let setup = Setup::new().await?;
    let id = "credit-center.psi-intersection";
    setup.agree(id, "intersection", &[], 1000, 100).await?;
    let expected = setup.expected(&setup.client_codes);
    assert!(expected.len() > 150 && expected.len() < setup.client_codes.len(), "a partial overlap");

    let report = setup.bank().run("psi", id).await?;
    assert_eq!(report["output"], "intersection");
    assert_eq!(report_codes(&report, "intersection"), expected);
    assert_eq!(report["cardinality"], expected.len());
    assert_eq!(report["client_set_size"], setup.client_codes.len());
    assert_eq!(report["server_set_size"], setup.server_rows.len());
    assert_eq!(report["labels"], serde_json::Value::Null);

    // The server learned the client's set size only, and both ends saw one transcript.
    let jobs = setup.server_jobs(id).await?;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].state, "succeeded");
    assert_eq!(jobs[0].detail, format!("answered {} elements (intersection)", setup.client_codes.len()));
    let audit = audit_records(setup.center()).await?;
    let run = audit
        .iter()
        .find(|r| {
            r["contract"] == id && r["outcome"]["status"] == "ok" && r["set_sizes"]["bank-a"].is_number()
        })
        .context("the server audits the run")?;
    assert_eq!(run["transcript_digest"], report["transcript_digest"]);
    assert_eq!(run["set_sizes"]["bank-a"], setup.client_codes.len());
    assert_eq!(run["set_sizes"]["credit-center"], setup.server_rows.len());
    audit_verifies(setup.center()).await?;
    audit_verifies(setup.bank()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cardinality_form_gives_only_the_count() -> Result<()> {
    let setup = Setup::new().await?;
    let id = "credit-center.psi-cardinality";
    setup.agree(id, "cardinality", &[], 1000, 100).await?;
    let report = setup.bank().run("psi", id).await?;
    assert_eq!(report["output"], "cardinality");
    assert_eq!(report["cardinality"], setup.expected(&setup.client_codes).len());
    assert_eq!(report["intersection"], serde_json::Value::Null, "no codes in the cardinality form");
    assert_eq!(report["labels"], serde_json::Value::Null);
    let jobs = setup.server_jobs(id).await?;
    assert_eq!(jobs[0].detail, format!("answered {} elements (cardinality)", setup.client_codes.len()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_form_gives_the_intersection_to_both_parties() -> Result<()> {
    let setup = Setup::new().await?;
    let id = "credit-center.psi-both";
    setup.agree(id, "both", &[], 1000, 100).await?;
    let expected = setup.expected(&setup.client_codes);
    let report = setup.bank().run("psi", id).await?;
    assert_eq!(report_codes(&report, "intersection"), expected);
    assert_eq!(report["cardinality"], expected.len());
    // The server's record of what it learned: the same codes (by digest, so the test
    // reads no raw record off the server).
    let jobs = setup.server_jobs(id).await?;
    assert_eq!(jobs[0].state, "succeeded");
    assert_contains(
        &jobs[0].detail,
        &[
            &format!("intersection of {} in ", expected.len()),
            &format!("(sha256 of sorted codes {})", codes_digest(&expected)),
        ],
    );
    // The operator of the server gets the intersection the contract grants it, in a
    // file only the node's user can read.
    let center_dir = setup.alliance.node("credit-center")?.dir.clone();
    let outputs: Vec<std::path::PathBuf> = std::fs::read_dir(center_dir.join("outputs"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains(id))
        .collect();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let saved: Vec<String> =
        std::fs::read_to_string(&outputs[0])?.lines().skip(1).map(String::from).collect();
    assert_eq!(saved, expected);
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&outputs[0])?.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(center_dir.join("outputs"))?.permissions().mode() & 0o777, 0o700);
    }
    Ok(())
}

/// Labels of over 4 KiB each (an enum column whose values are 4096 characters): the
/// server's tag chunks shrink with the label width, so every frame stays under the
/// limit and the run gives the plaintext labels (issue 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_of_4_kib_each_fit_the_frames() -> Result<()> {
    let (dir, alliance) = alliance(&["credit-center", "bank-a"], true).await?;
    let server_codes = codes(23, 600);
    let grades: Vec<String> = ["A", "B", "M", "C", "D"].iter().map(|g| g.repeat(4096)).collect();
    let quoted: Vec<String> = grades.iter().map(|g| format!("\"{g}\"")).collect();
    let schema = format!(
        "name = \"{GOV_DATASET}\"\nkey = \"credit_code\"\ncolumns = [\n  {{ name = \"tax_grade\", type = \"enum\", values = [{}] }},\n  {{ name = \"si_headcount\", type = \"integer\" }},\n]\n",
        quoted.join(", ")
    );
    let mut csv = String::from("credit_code,tax_grade,si_headcount\n");
    for (i, code) in server_codes.iter().enumerate() {
        csv.push_str(&format!("{code},{},{}\n", grades[i % grades.len()], i * 3));
    }
    let gov = (write(dir.path(), "wide.schema.toml", &schema)?, write(dir.path(), "wide.csv", &csv)?);
    import_ok(alliance.node("credit-center")?, GOV_DATASET, &gov).await?;
    let listed: BTreeSet<&String> = server_codes.iter().collect();
    let mut client: Vec<String> = server_codes.iter().step_by(3).cloned().collect();
    client.extend(codes(24, 80).into_iter().filter(|c| !listed.contains(c)).take(50));
    import_ok(alliance.node("bank-a")?, "loan_applicants", &write_applicants(dir.path(), "apps", &client)?)
        .await?;
    let id = "credit-center.psi-wide-labels";
    let toml = psi_contract(
        id,
        alliance.node("credit-center")?,
        alliance.node("bank-a")?,
        "labels",
        &["tax_grade", "si_headcount"],
        100,
        10,
    );
    alliance.agree("credit-center", &toml, id, &["bank-a"]).await?;
    let report = alliance.node("bank-a")?.run("psi", id).await?;
    let expected: serde_json::Map<String, serde_json::Value> = server_codes
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
        .map(|(i, code)| {
            let label = serde_json::json!({
                "tax_grade": grades[i % grades.len()],
                "si_headcount": (i * 3).to_string(),
            });
            (code.clone(), label)
        })
        .collect();
    assert_eq!(expected.len(), 200);
    assert_eq!(report["labels"], serde_json::Value::Object(expected));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_form_gives_the_labels_of_matches_only() -> Result<()> {
    let setup = Setup::new().await?;
    let id = "credit-center.psi-labels";
    setup.agree(id, "labels", &["tax_grade", "si_headcount"], 1000, 100).await?;
    let report = setup.bank().run("psi", id).await?;
    let by_code: BTreeMap<&str, &GovRow> = setup.server_rows.iter().map(|r| (r.code.as_str(), r)).collect();
    let expected: serde_json::Map<String, serde_json::Value> = setup
        .expected(&setup.client_codes)
        .iter()
        .map(|code| {
            let row = by_code[code.as_str()];
            let label = serde_json::json!({
                "tax_grade": row.tax_grade,
                "si_headcount": row.si_headcount.to_string(),
            });
            (code.clone(), label)
        })
        .collect();
    assert!(expected.len() > 150);
    assert_eq!(report["labels"], serde_json::Value::Object(expected));
    assert_eq!(
        report_codes(&report, "intersection").len(),
        report["cardinality"].as_u64().unwrap_or(0) as usize
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_full_intersections() -> Result<()> {
    let setup = Setup::new().await?;
    let id = "credit-center.psi-edges";
    setup.agree(id, "intersection", &[], 1000, 100).await?;
    let listed: BTreeSet<&String> = setup.server_rows.iter().map(|r| &r.code).collect();

    // None of the applicants is on the list.
    let outside: Vec<String> = codes(23, 200).into_iter().filter(|c| !listed.contains(c)).take(150).collect();
    setup.import_client(&outside, "outside").await?;
    let report = setup.bank().run("psi", id).await?;
    assert_eq!(report["cardinality"], 0);
    assert_eq!(report["intersection"], serde_json::json!([]));
    assert_eq!(report["client_set_size"], 150);

    // Every applicant is on the list.
    let inside: Vec<String> =
        setup.server_rows.iter().skip(3).step_by(9).take(150).map(|r| r.code.clone()).collect();
    setup.import_client(&inside, "inside").await?;
    let report = setup.bank().run("psi", id).await?;
    let mut all = inside.clone();
    all.sort();
    assert_eq!(report_codes(&report, "intersection"), all);
    assert_eq!(report["cardinality"], 150);

    // And the whole list against itself.
    let everyone: Vec<String> = setup.server_rows.iter().map(|r| r.code.clone()).collect();
    setup.import_client(&everyone, "everyone").await?;
    let report = setup.bank().run("psi", id).await?;
    assert_eq!(report["cardinality"], setup.server_rows.len());
    Ok(())
}

// ---- Refusals --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_ids_are_refused_at_import() -> Result<()> {
    let (dir, alliance) = alliance(&["credit-center", "bank-a"], true).await?;
    let bank = alliance.node("bank-a")?;
    let mut applicants = codes(24, 40);
    applicants.insert(25, applicants[4].clone());
    // The same code again, lower case: still the same entity.
    applicants.push(applicants[9].to_lowercase());
    let files = write_applicants(dir.path(), "applicants", &applicants)?;
    let report = bank.import("loan_applicants", &files.0, &files.1, false).await?;
    assert_eq!(report["committed"], false, "{report}");
    let rejected: Vec<(u64, String)> = report["rejected"]
        .as_array()
        .context("rejected rows")?
        .iter()
        .map(|r| (r["row"].as_u64().unwrap_or(0), r["reason"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(
        rejected,
        vec![
            (5, "duplicate code: appears on lines 6, 27".to_string()),
            (10, "duplicate code: appears on lines 11, 43".to_string()),
            (26, "duplicate code: appears on lines 6, 27".to_string()),
            (42, "duplicate code: appears on lines 11, 43".to_string()),
        ]
    );

    // So there is nothing to run PSI on.
    let center = alliance.node("credit-center")?;
    let gov = write_gov(dir.path(), GOV_DATASET, &gov_rows(&codes(21, 100)))?;
    import_ok(center, GOV_DATASET, &gov).await?;
    let toml = psi_contract("credit-center.psi-dup", center, bank, "intersection", &[], 10, 10);
    alliance.agree("credit-center", &toml, "credit-center.psi-dup", &["bank-a"]).await?;
    let refused = run_status(bank, "psi", "credit-center.psi-dup").await?.expect_err("no dataset to run on");
    assert_eq!((refused.code(), refused.message()), (Code::NotFound, "dataset loan_applicants not found"));

    // A client state machine refuses a repeated element before it sends anything.
    let duplicate = vec![applicants[4].clone(), applicants[4].clone()];
    let error = client_session("psi-dup", Epoch(0), PsiOutputForm::Intersection, &duplicate, 16)
        .err()
        .context("a repeated element is refused")?;
    assert_contains(&error.to_string(), &["PSI client set: element 1 repeats element 0"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_a_contract_is_refused() -> Result<()> {
    let setup = Setup::new().await?;
    let refused = run_status(setup.bank(), "psi", "psi-no-such-contract").await?.expect_err("no contract");
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::NotFound, "contract psi-no-such-contract not found")
    );

    // On the wire: a Hello under a contract the server does not hold.
    let (_, hello, _) = client_session(
        "psi-no-such-contract",
        Epoch(0),
        PsiOutputForm::Intersection,
        &setup.client_codes,
        64,
    )?;
    let (_, answer) = open(setup.wire().await?, vec![hello]).await?;
    let status = answer.expect_err("the server refuses");
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "contract psi-no-such-contract not found")
    );
    assert!(setup.server_jobs("psi-no-such-contract").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_contract_is_refused() -> Result<()> {
    let setup = Setup::new().await?;
    let id = "credit-center.psi-unsigned";
    let toml = setup.contract(id, "intersection", &[], 1000, 100);
    let ack = setup.center().propose(&toml).await?;
    assert_eq!(ack.missing_signatures, vec!["bank-a".to_string()]);

    // bank-a's operator never signed: its node refuses to run.
    let refused = run_status(setup.bank(), "psi", id).await?.expect_err("unsigned");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(refused.message(), format!("contract {id} lacks the signatures of bank-a"));

    // And the server refuses a session under it.
    let (_, hello, _) =
        client_session(id, epoch_of(&toml)?, PsiOutputForm::Intersection, &setup.client_codes, 64)?;
    let (_, answer) = open(setup.wire().await?, vec![hello]).await?;
    let status = answer.expect_err("the server refuses");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), format!("contract {id} lacks the signatures of bank-a"));
    assert!(setup.server_jobs(id).await?.is_empty(), "no session ran");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_outside_its_validity_window_is_refused() -> Result<()> {
    let mut setup = Setup::new().await?;
    let id = "credit-center.psi-window";
    let toml = setup.agree(id, "intersection", &[], 1000, 100).await?;
    let contract = Contract::from_toml_str(&toml)?;
    let restart = |setup: &mut Setup, node: &str, offset: i64| -> Result<()> {
        let node = setup.alliance.node_mut(node)?;
        node.stop()?;
        node.set_env("XMCREDIT_TIME_OFFSET_SECS", &offset.to_string());
        Ok(())
    };

    // The credit center's clock is 31 days on: the contract has expired for it.
    restart(&mut setup, "credit-center", 31 * 86_400)?;
    setup.alliance.node_mut("credit-center")?.start().await?;
    let refused = run_status(setup.bank(), "psi", id).await?.expect_err("expired at the server");
    assert_contains(
        refused.message(),
        &[
            "peer credit-center answered",
            &format!("contract {id} expired at {} (unix seconds)", contract.not_after),
        ],
    );
    let state = setup.center().status().await?.contracts.into_iter().find(|c| c.contract_id == id);
    assert_eq!(state.map(|c| c.state), Some("inactive".to_string()));

    // bank-a's clock too: bank-a refuses on its own, before contacting anyone.
    restart(&mut setup, "bank-a", 31 * 86_400)?;
    setup.alliance.node_mut("bank-a")?.start().await?;
    let refused = run_status(setup.bank(), "psi", id).await?.expect_err("expired at the client");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_contains(refused.message(), &[&format!("contract {id} expired at {}", contract.not_after)]);
    assert!(!refused.message().contains("peer credit-center"), "{}", refused.message());

    // Both two hours back: not yet valid.
    for node in ["credit-center", "bank-a"] {
        restart(&mut setup, node, -7200)?;
        setup.alliance.node_mut(node)?.start().await?;
    }
    let refused = run_status(setup.bank(), "psi", id).await?.expect_err("not yet valid");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_contains(
        refused.message(),
        &[&format!("contract {id} is not valid before {}", contract.not_before)],
    );

    // Only the server two hours back: the server refuses.
    restart(&mut setup, "bank-a", 0)?;
    setup.alliance.node_mut("bank-a")?.start().await?;
    let refused = run_status(setup.bank(), "psi", id).await?.expect_err("not yet valid at the server");
    assert_contains(
        refused.message(),
        &[
            "peer credit-center answered",
            &format!("contract {id} is not valid before {}", contract.not_before),
        ],
    );
    let refusals = audit_records(setup.center())
        .await?
        .into_iter()
        .filter(|r| r["contract"] == id && r["outcome"]["status"] == "refused")
        .count();
    assert_eq!(refusals, 2, "the server audits each refused session");

    // With the clocks right again the same contract runs.
    restart(&mut setup, "credit-center", 0)?;
    setup.alliance.node_mut("credit-center")?.start().await?;
    still_serves(&setup, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_below_the_contracts_minimum_is_refused() -> Result<()> {
    let setup = Setup::new().await?;
    let small: Vec<String> = setup.client_codes[..30].to_vec();
    setup.import_client(&small, "small").await?;

    // The client's set is below its minimum: bank-a refuses to send it...
    let id = "credit-center.psi-min-client";
    let toml = setup.agree(id, "intersection", &[], 1000, 50).await?;
    let refused = run_status(setup.bank(), "psi", id).await?.expect_err("too small");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        format!("bank-a's set has 30 elements; contract {id} requires at least 50")
    );
    // ...and the server refuses a Hello announcing it.
    let (_, hello, _) = client_session(id, epoch_of(&toml)?, PsiOutputForm::Intersection, &small, 64)?;
    let (_, answer) = open(setup.wire().await?, vec![hello]).await?;
    let status = answer.expect_err("the server refuses a small client set");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), format!("bank-a's set has 30 elements; contract {id} requires at least 50"));

    // The server's own set is below its minimum: it refuses to answer.
    let id = "credit-center.psi-min-server";
    setup.agree(id, "intersection", &[], 2000, 10).await?;
    let refused = run_status(setup.bank(), "psi", id).await?.expect_err("server set too small");
    assert_contains(
        refused.message(),
        &[
            "peer credit-center answered",
            &format!("credit-center's set has 1500 elements; contract {id} requires at least 2000"),
        ],
    );
    assert!(setup.server_jobs(id).await?.is_empty(), "no session ran");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_is_enforced_by_the_server() -> Result<()> {
    let mut setup = Setup::new().await?;
    let id = "credit-center.psi-quota";
    let n = setup.client_codes.len();
    // One run of all of bank-a's applicants and one of 200 fit in a day; two full runs
    // do not.
    let per_day = n + 200;
    let toml = setup.contract(id, "intersection", &[], 1000, 100).replace(
        &format!("lookups_per_day = {{ bank-a = {} }}", xmcredit_simulator::contracts::PSI_DAILY_QUOTA),
        &format!("lookups_per_day = {{ bank-a = {per_day} }}"),
    );
    assert!(toml.contains(&format!("bank-a = {per_day} }}")), "{toml}");
    setup.alliance.agree("credit-center", &toml, id, &["bank-a"]).await?;

    let first = setup.bank().run("psi", id).await?;
    assert_eq!(report_codes(&first, "intersection"), setup.expected(&setup.client_codes));
    let quota = format!(
        "bank-a has made {n} lookups today and asks for {n} more; contract {id} allows {per_day} a day"
    );
    let second = run_status(setup.bank(), "psi", id).await?.expect_err("over the quota");
    assert_contains(second.message(), &["peer credit-center answered", &quota]);
    // The refused run did not count: the same refusal, with the same count.
    let third = run_status(setup.bank(), "psi", id).await?.expect_err("still over the quota");
    assert_contains(third.message(), &[&quota]);

    // What remains (200) can still be used, exactly.
    let rest: Vec<String> = setup.client_codes[..200].to_vec();
    setup.import_client(&rest, "rest").await?;
    let report = setup.bank().run("psi", id).await?;
    assert_eq!(report_codes(&report, "intersection"), setup.expected(&rest));
    let full = run_status(setup.bank(), "psi", id).await?.expect_err("quota used up");
    assert_contains(
        full.message(),
        &[&format!("bank-a has made {per_day} lookups today and asks for 200 more; contract {id} allows {per_day} a day")],
    );
    let jobs = setup.server_jobs(id).await?;
    assert_eq!(jobs.iter().filter(|j| j.state == "succeeded").count(), 2, "{jobs:?}");
    let refusals = audit_records(setup.center())
        .await?
        .into_iter()
        .filter(|r| {
            r["contract"] == id && r["outcome"]["reason"].as_str().is_some_and(|t| t.contains("a day"))
        })
        .count();
    // The first refusal of a kind from one peer in a minute is audited; repeats within
    // the minute are counted into a later summary record (a flood must not flood the log).
    assert!((1..=3).contains(&refusals), "refusals are audited ({refusals})");

    // The next day (both clocks a day on, so both are in the contract's next epoch) the
    // quota is fresh.
    for node in ["credit-center", "bank-a"] {
        let node = setup.alliance.node_mut(node)?;
        node.stop()?;
        node.set_env("XMCREDIT_TIME_OFFSET_SECS", "86400");
        node.start().await?;
    }
    let next_day = setup.bank().run("psi", id).await?;
    assert_eq!(report_codes(&next_day, "intersection"), setup.expected(&rest));
    Ok(())
}

// ---- The wire, against a real server node ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_an_invalid_curve_point_is_refused() -> Result<()> {
    let setup = Setup::new().await?;
    let id = "credit-center.psi-wire-point";
    let toml = setup.agree(id, "intersection", &[], 1000, 5).await?;
    let (tx, mut replies, binding) = accepted_session(&setup, &toml, id, 30).await?;
    let mut elements = random_elements(30);
    elements[7] = [0xff; 32]; // above the field prime: not a canonical encoding
    let chunk = PsiMessage::BlindedChunk(BlindedChunk { binding, seq: 0, elements }).to_bytes();
    tx.send(Frame { payload: chunk }).await?;
    let status = refusal(&mut replies).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid element from peer: element 7 of the batch: bytes are not a canonical ristretto255 encoding"
    );
    let jobs = setup.server_jobs(id).await?;
    assert_eq!(jobs[0].state, "failed");
    assert_contains(&jobs[0].detail, &["element 7"]);
    still_serves(&setup, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_the_identity_point_is_refused() -> Result<()> {
    let setup = Setup::new().await?;
    let id = "credit-center.psi-wire-identity";
    let toml = setup.agree(id, "intersection", &[], 1000, 5).await?;
    let (tx, mut replies, binding) = accepted_session(&setup, &toml, id, 30).await?;
    let mut elements = random_elements(30);
    elements[3] = [0; 32]; // the identity's encoding
    let chunk = PsiMessage::BlindedChunk(BlindedChunk { binding, seq: 0, elements }).to_bytes();
    tx.send(Frame { payload: chunk }).await?;
    let status = refusal(&mut replies).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid element from peer: element 3 of the batch: the identity element is not allowed here"
    );
    still_serves(&setup, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_a_truncated_message_is_refused() -> Result<()> {
    let setup = Setup::new().await?;
    let id = "credit-center.psi-wire-truncated";
    let toml = setup.agree(id, "intersection", &[], 1000, 5).await?;

    // A Hello cut short.
    let (_, hello, _) =
        client_session(id, epoch_of(&toml)?, PsiOutputForm::Intersection, &setup.client_codes, 64)?;
    let (_, answer) = open(setup.wire().await?, vec![hello[..hello.len() - 3].to_vec()]).await?;
    let status = answer.expect_err("a truncated Hello is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_contains(status.message(), &["malformed PSI Hello"]);

    // A blinded chunk cut short, after a valid Hello.
    let (tx, mut replies, binding) = accepted_session(&setup, &toml, id, 30).await?;
    let chunk =
        PsiMessage::BlindedChunk(BlindedChunk { binding, seq: 0, elements: random_elements(30) }).to_bytes();
    tx.send(Frame { payload: chunk[..chunk.len() - 10].to_vec() }).await?;
    let status = refusal(&mut replies).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_contains(status.message(), &["malformed PSI BlindedChunk"]);
    still_serves(&setup, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_an_oversized_message_is_refused() -> Result<()> {
    let setup = Setup::new().await?;
    let id = "credit-center.psi-wire-oversized";
    let toml = setup.agree(id, "intersection", &[], 1000, 5).await?;
    let huge = vec![0x42u8; MAX_MESSAGE_BYTES + 1];

    // A client without a size limit: the server refuses the frame before decoding it.
    let mut raw = proto::node_client::NodeClient::new(setup.wire().await?);
    let status = raw
        .psi(tokio_stream::iter(vec![Frame { payload: huge.clone() }]))
        .await
        .expect_err("the server refuses an oversized frame");
    assert!(matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted), "{status:?}");
    assert_contains(status.message(), &["message length too large", &MAX_MESSAGE_BYTES.to_string()]);

    // The same in the middle of a session, after a valid Hello: the server ends the
    // session and records why.
    let (_, hello, _) =
        client_session(id, epoch_of(&toml)?, PsiOutputForm::Intersection, &setup.client_codes[..30], 8192)?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(Frame { payload: hello }).await?;
    let mut raw = proto::node_client::NodeClient::new(setup.wire().await?);
    let mut replies = raw.psi(ReceiverStream::new(rx)).await?.into_inner();
    let ack = replies.next().await.context("no HelloAck")??;
    assert!(matches!(PsiMessage::from_bytes(&ack.payload)?, PsiMessage::HelloAck(_)));
    tx.send(Frame { payload: huge }).await?;
    let status = refusal(&mut replies).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_contains(
        status.message(),
        &[
            "frame from bank-a refused",
            "message length too large",
            &format!("the limit is: {MAX_MESSAGE_BYTES} bytes"),
        ],
    );
    let jobs = setup.server_jobs(id).await?;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].state, "failed");
    assert_contains(
        &jobs[0].detail,
        &["message length too large", &format!("the limit is: {MAX_MESSAGE_BYTES} bytes")],
    );
    still_serves(&setup, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_a_replayed_message_is_refused() -> Result<()> {
    let setup = Setup::new().await?;
    let id = "credit-center.psi-wire-replay";
    let toml = setup.agree(id, "intersection", &[], 1000, 5).await?;
    let epoch = epoch_of(&toml)?;

    // An honest session, driven by hand over the raw stream, with the answer checked.
    let (client, hello, _) = client_session(id, epoch, PsiOutputForm::Intersection, &setup.client_codes, 64)?;
    let (tx, answer) = open(setup.wire().await?, vec![hello.clone()]).await?;
    let output = drive(client, tx, answer?).await?;
    let mut got: Vec<String> =
        output.intersection.context("intersection")?.iter().map(|&i| setup.client_codes[i].clone()).collect();
    got.sort();
    assert_eq!(got, setup.expected(&setup.client_codes));

    // The captured Hello again, on a new stream: the session id was used.
    let (_, answer) = open(setup.wire().await?, vec![hello.clone()]).await?;
    let status = answer.expect_err("a replayed Hello is refused");
    assert_eq!(status.code(), Code::AlreadyExists);
    let session = match PsiMessage::from_bytes(&hello)? {
        PsiMessage::Hello(hello) => hello.binding.session,
        other => panic!("captured {}", other.kind().name()),
    };
    assert_eq!(status.message(), format!("session {session} was already used: replay refused"));

    // A chunk of one session replayed into another: bound to the wrong session.
    let (tx, replies, first) = accepted_session(&setup, &toml, id, 30).await?;
    let chunk = PsiMessage::BlindedChunk(BlindedChunk {
        binding: first.clone(),
        seq: 0,
        elements: random_elements(30),
    })
    .to_bytes();
    drop(tx);
    drop(replies);
    let (tx, mut second, binding) = accepted_session(&setup, &toml, id, 30).await?;
    tx.send(Frame { payload: chunk }).await?;
    let status = refusal(&mut second).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        format!("message bound to session {}, this run is {}", first.session, binding.session)
    );

    // A Hello for another epoch than the contract's current one.
    let (_, stale, _) =
        client_session(id, Epoch(epoch.0 + 1), PsiOutputForm::Intersection, &setup.client_codes, 64)?;
    let (_, answer) = open(setup.wire().await?, vec![stale]).await?;
    let status = answer.expect_err("a Hello for another epoch is refused");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        format!("refused: session is for epoch {}, the contract is in epoch {}", epoch.0 + 1, epoch.0)
    );
    still_serves(&setup, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluated_set_is_evicted_when_its_contract_is_revoked() -> Result<()> {
    let setup = Setup::new().await?;
    let id = "credit-center.psi-evict";
    setup.agree(id, "intersection", &[], 1000, 100).await?;
    assert_eq!(setup.center().status().await?.psi_cached_sets, 0);
    still_serves(&setup, id).await?;
    assert_eq!(
        setup.center().status().await?.psi_cached_sets,
        1,
        "the evaluated set is cached for the next run"
    );
    // The client revokes: the server learns it and drops the evaluated points and rows.
    setup
        .bank()
        .admin()
        .await?
        .revoke_contract(proto::RevokeRequest { contract_id: id.into(), reason: "test".into() })
        .await?;
    assert_eq!(setup.center().status().await?.psi_cached_sets, 0, "evicted on revocation");
    let refused = run_status(setup.bank(), "psi", id).await?.expect_err("a revoked contract does not run");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    Ok(())
}
