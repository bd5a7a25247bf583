//! Rough edges a new operator hit (issue 15): a second `serve` on a data directory in use
//! names the running process; the CLI prints a node's refusal as words, not as a gRPC
//! status dump; log files carry no terminal colour codes; every audit record says what
//! happened (a proposal, a signature, an import with its dataset and version, a run with
//! its role, a revocation), and `audit show` prints them as a table; job ids stay
//! consecutive across a restart.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_a_data_directory_in_use_names_the_running_node() -> Result<()> {
    let (dir, alliance) = alliance(&["credit-center"], true).await?;
    let node = alliance.node("credit-center")?;
    let pid = node.pid().unwrap_or(0);
    let config = node.config.display().to_string();
    let second = program().run(&["serve", "--config", &config], &dir.path().join("second.log"));
    let text = err_text(second);
    assert_contains(&text, &["a node is already running on", &format!("(pid {pid})")]);
    assert!(!text.contains("WouldBlock"), "{text}");
    // The running node was not disturbed.
    node.status().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_read_as_words_and_log_files_have_no_colour_codes() -> Result<()> {
    let (dir, alliance) = alliance(&["credit-center"], true).await?;
    let node = alliance.node("credit-center")?;
    let config = node.config.display().to_string();
    let missing = program()
        .run(&["contract", "sign", "-c", &config, "credit-center.no-such"], &dir.path().join("sign.log"));
    let text = err_text(missing);
    assert_contains(&text, &["not found:", "credit-center.no-such"]);
    for dump in ["MetadataMap", "details: []", "status: NotFound"] {
        assert!(!text.contains(dump), "{dump} in {text}");
    }
    // A contract file that does not parse is bad input, with its real line breaks.
    let bad = write(dir.path(), "bad.toml", "id = \"credit-center.x\"\nversion = \"one\"\n")?;
    let proposed = program().run(
        &["contract", "propose", "-c", &config, &bad.display().to_string()],
        &dir.path().join("propose.log"),
    );
    let text = err_text(proposed);
    assert!(text.contains("invalid input:") && !text.contains("refused:"), "{text}");
    assert!(!text.contains("\\n"), "escaped line breaks in {text}");
    let log = node_log(node);
    assert!(log.contains("serving"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in the log file");
    Ok(())
}

/// The records of `node` whose event has `kind`.
fn events<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["event"]["kind"] == kind).collect()
}

/// The one record of `node` with event `kind`; fails naming the records when there is
/// not exactly one.
fn one<'a>(records: &'a [Value], kind: &str) -> &'a Value {
    let found = events(records, kind);
    assert_eq!(found.len(), 1, "one {kind} record expected in {records:#?}");
    found[0]
}

/// Waits for the record a node writes after answering (the PSI server finishes its job
/// after the client has its report).
async fn records_once(node: &xmcredit_simulator::alliance::NodeHandle, kind: &str) -> Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = audit_records(node).await?;
        if !events(&records, kind).is_empty() {
            return Ok(records);
        }
        if Instant::now() > deadline {
            bail!("{} wrote no {kind} record: {records:#?}", node.id);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 15 item 5: propose, sign (CLI), import, a refused import, a PSI run and a
/// revocation (CLI) each leave a record whose event says so, on both nodes, with the
/// dataset and version, the contract and the roles; the chains still verify; `audit
/// show` prints a table with RFC 3339 times, and the stored JSON under `--json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audit_record_says_what_happened() -> Result<()> {
    let (dir, alliance) = alliance(&["credit-center", "bank-a"], true).await?;
    let center = alliance.node("credit-center")?;
    let bank = alliance.node("bank-a")?;
    let bank_config = bank.config.display().to_string();

    let gov_codes = codes(31, 300);
    let gov = write_gov(dir.path(), GOV_DATASET, &gov_rows(&gov_codes))?;
    import_ok(center, GOV_DATASET, &gov).await?;
    let applicants: Vec<String> = gov_codes.iter().step_by(3).cloned().chain(codes(32, 20)).collect();
    let files = write_applicants(dir.path(), "applicants", &applicants)?;
    let imported = import_ok(bank, "loan_applicants", &files).await?;
    let rows = imported["rows_accepted"].as_u64().unwrap_or(0);
    assert!(rows > 100, "{imported}");
    // A file with no row commits nothing: an import refused, naming the dataset.
    let empty = write_applicants(dir.path(), "empty", &[])?;
    let refused = bank.import("loan_applicants", &empty.0, &empty.1, false).await?;
    assert_eq!(refused["committed"], false, "{refused}");

    let id = "credit-center.audit-events";
    center.propose(&psi_contract(id, center, bank, "intersection", &[], 100, 10)).await?;
    // The operator signs through the CLI (the console's Sign goes through the same call).
    let signed =
        program().run(&["contract", "sign", "-c", &bank_config, id], &dir.path().join("sign.log"))?;
    assert!(signed.contains("active"), "{signed}");
    let report = bank.run("psi", id).await?;
    assert_eq!(report["output"], "intersection", "{report}");
    let revoked = program().run(
        &["contract", "revoke", "-c", &bank_config, id, "--reason", "credit line closed"],
        &dir.path().join("revoke.log"),
    )?;
    assert!(!revoked.is_empty());

    // bank-a: what its operator did and what it took part in.
    let records = records_once(bank, "revoke").await?;
    assert!(records.iter().all(|r| r["event"].is_object()), "every new record has an event: {records:#?}");
    let import = one(&records, "import");
    assert_eq!(
        import["event"],
        json!({"kind": "import", "dataset": "loan_applicants", "version": 1, "rows": rows})
    );
    assert_eq!(import["outcome"]["status"], "ok");
    assert!(import.get("contract").is_none() && import.get("computation").is_none(), "{import}");
    let refused = one(&records, "import_refused");
    assert_eq!(refused["event"], json!({"kind": "import_refused", "dataset": "loan_applicants"}));
    assert_eq!(refused["outcome"]["status"], "refused");
    let received = one(&records, "proposal_received");
    assert_eq!(received["event"]["from"], "credit-center");
    assert_eq!(received["contract"], id);
    let sign = one(&records, "sign");
    assert_eq!(sign["event"], json!({"kind": "sign", "automatic": false}));
    assert_eq!((sign["contract"].as_str(), sign["outcome"]["status"].as_str()), (Some(id), Some("ok")));
    let run = one(&records, "run");
    assert_eq!(
        (run["event"]["computation"].as_str(), run["event"]["role"].as_str()),
        (Some("psi"), Some("client"))
    );
    assert!(run["event"]["job"].is_u64(), "{run}");
    assert_eq!((run["contract"].as_str(), run["outcome"]["status"].as_str()), (Some(id), Some("ok")));
    let revoke = one(&records, "revoke");
    assert_eq!(revoke["event"], json!({"kind": "revoke", "reason": "credit line closed"}));
    // A revocation is the operator's action that succeeded, not a refused run.
    assert_eq!((revoke["contract"].as_str(), revoke["outcome"]["status"].as_str()), (Some(id), Some("ok")));
    let order: Vec<&str> = records.iter().filter_map(|r| r["event"]["kind"].as_str()).collect();
    assert_eq!(order, ["import", "import_refused", "proposal_received", "sign", "run", "revoke"]);

    // The credit center: its proposal, bank-a's signature reaching it, its side of the
    // run and bank-a's revocation.
    let records = records_once(center, "revocation_received").await?;
    let records =
        if events(&records, "run").is_empty() { records_once(center, "run").await? } else { records };
    let import = one(&records, "import");
    assert_eq!(import["event"], json!({"kind": "import", "dataset": GOV_DATASET, "version": 1, "rows": 300}));
    assert_eq!(one(&records, "propose")["contract"], id);
    let signature = one(&records, "signature_received");
    assert_eq!(
        signature["event"],
        json!({"kind": "signature_received", "signer": "bank-a", "from": "bank-a"})
    );
    assert_eq!(signature["contract"], id);
    let run = one(&records, "run");
    assert_eq!(
        (run["event"]["computation"].as_str(), run["event"]["role"].as_str()),
        (Some("psi"), Some("server"))
    );
    assert_eq!(run["contract"], id);
    let revocation = one(&records, "revocation_received");
    assert_eq!(
        revocation["event"],
        json!({"kind": "revocation_received", "from": "bank-a", "reason": "credit line closed"})
    );
    assert_eq!(revocation["outcome"]["status"], "ok");
    assert!(events(&records, "sign").is_empty(), "the proposer's signature is its proposal: {records:#?}");

    // The chains still verify with the events in them.
    audit_verifies(bank).await?;
    audit_verifies(center).await?;
    let verify = program().run(&["audit", "verify", "-c", &bank_config], &dir.path().join("verify.log"))?;
    assert!(verify.starts_with("audit log intact: 6 records"), "{verify}");

    // `audit show`: a table a person reads; `--json`: the stored records.
    let table = program().run(&["audit", "show", "-c", &bank_config], &dir.path().join("show.log"))?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 7, "a header and six records:\n{table}");
    assert_contains(lines[0], &["seq", "time (UTC)", "node", "event", "contract", "outcome"]);
    assert_contains(lines[4], &["bank-a", "signed the contract (operator)", id, "ok"]);
    assert_contains(lines[3], &["contract proposed by credit-center", id]);
    assert_contains(lines[1], &["imported loan_applicants v1"]);
    assert_contains(lines[6], &["revoked the contract: credit line closed", id, "ok"]);
    let time = lines[1].split_whitespace().nth(1).unwrap_or_default();
    assert!(
        time.len() == 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z') && time.starts_with("20"),
        "an RFC 3339 UTC time, not unix seconds: {time}"
    );
    let json_out =
        program().run(&["audit", "show", "-c", &bank_config, "--json"], &dir.path().join("show-json.log"))?;
    let parsed: Vec<Value> = json_out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(parsed, audit_records(bank).await?);
    Ok(())
}

/// Job ids were sled's `generate_id`, which jumps by a million after every restart: an
/// operator reading `status` saw ids 0, 1000000, ... and asked where the jobs went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_ids_are_consecutive_across_a_restart() -> Result<()> {
    let (dir, mut alliance) = alliance(&["credit-center", "bank-a"], false).await?;
    let server_codes = codes(61, 60);
    let client_codes: Vec<String> = server_codes.iter().step_by(2).cloned().chain(codes(62, 10)).collect();
    let gov = write_gov(dir.path(), GOV_DATASET, &gov_rows(&server_codes))?;
    import_ok(alliance.node("credit-center")?, GOV_DATASET, &gov).await?;
    let applicants = write_applicants(dir.path(), "applicants", &client_codes)?;
    import_ok(alliance.node("bank-a")?, "loan_applicants", &applicants).await?;
    let id = "credit-center.job-ids";
    let toml =
        psi_contract(id, alliance.node("credit-center")?, alliance.node("bank-a")?, "cardinality", &[], 1, 1);
    alliance.agree("credit-center", &toml, id, &["bank-a"]).await?;
    alliance.node("bank-a")?.run("psi", id).await?;
    alliance.node_mut("bank-a")?.stop()?;
    alliance.node_mut("bank-a")?.start().await?;
    alliance.node("bank-a")?.run("psi", id).await?;
    let mut ids: Vec<u64> = alliance.node("bank-a")?.status().await?.jobs.iter().map(|j| j.job_id).collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[1], ids[0] + 1, "job ids after a restart: {ids:?}");
    Ok(())
}
