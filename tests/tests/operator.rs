//! Rough edges a new operator hit (issue 15): a second `serve` on a data directory in use
//! names the running process; the CLI prints a node's refusal as words, not as a gRPC
//! status dump; log files carry no terminal colour codes; job ids stay consecutive
//! across a restart.

mod common;

use anyhow::Result;
use common::*;

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
