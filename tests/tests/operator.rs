//! Rough edges a new operator hit (issue 15): a second `serve` on a data directory in use
//! names the running process; the CLI prints a node's refusal as words, not as a gRPC
//! status dump; log files carry no terminal colour codes.

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
