//! The node's command line, used as an operator would: init, the CA, serve, import,
//! status and audit verify, with their exit codes and the lines people read.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::*;
use xmcredit_contracts::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_xmcredit-node-under-test");

/// Runs the node binary to completion.
fn node(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {BINARY} {args:?}: {e}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Asserts failure with exit code `code` and returns stderr.
#[track_caller]
fn fails(output: Output, code: i32) -> String {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
        stdout(&output),
        stderr(&output)
    );
    stderr(&output)
}

/// The serve process; SIGKILLed if the test ends without stopping it.
struct Serve(Option<Child>);

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_until_serving(config: &str, serve: &mut Serve) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(child) = serve.0.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("serve exited at start: {status}");
            }
        }
        if node(&["status", "--config", config]).status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("serve did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The words of the `loan_applicants` line of `status`.
fn dataset_line(config: &str) -> Vec<String> {
    let out = ok(node(&["status", "--config", config]));
    let line = out.lines().find(|l| l.trim_start().starts_with("loan_applicants")).unwrap_or_default();
    line.split_whitespace().map(String::from).collect()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
}

#[test]
fn an_operator_sets_up_a_node_imports_and_verifies() -> Result<()> {
    let base = tempfile::Builder::new().prefix("xmcredit-cli-").tempdir()?;
    let dir = base.path().join("bank-a");
    let d = dir.display().to_string();
    let port = xmcredit_simulator::alliance::free_port()?;
    let listen = format!("127.0.0.1:{port}");

    // init
    let out = ok(node(&["init", "--data-dir", &d, "--node-id", "bank-a", "--listen", &listen]));
    let public_key = std::fs::read_to_string(dir.join("identity.pub"))?.trim().to_string();
    assert_eq!(public_key.len(), 64, "{public_key}");
    assert_contains(
        &out,
        &[
            &format!("node bank-a initialized in {d}"),
            &format!("identity public key (for contracts): {public_key}"),
            &format!("certificate request: {d}/tls.csr (send it to the credit center)"),
            &format!("configuration: {d}/node.toml"),
        ],
    );
    #[cfg(unix)]
    for secret in ["secrets/master.key", "secrets/identity.key", "secrets/tls.key"] {
        assert_eq!(mode(&dir.join(secret)), 0o600, "{secret}");
    }
    let config = dir.join("node.toml").display().to_string();
    assert_contains(
        &std::fs::read_to_string(&config)?,
        &["node_id = \"bank-a\"", &format!("listen = \"{listen}\"")],
    );
    let again = fails(node(&["init", "--data-dir", &d, "--node-id", "bank-a"]), 1);
    assert_contains(&again, &["secrets/master.key exists: this node is already initialized"]);
    let bad_id = fails(node(&["init", "--data-dir", &format!("{d}-x"), "--node-id", "Bank A"]), 2);
    assert_contains(&bad_id, &["invalid value 'Bank A' for '--node-id <NODE_ID>'"]);

    // The CA, on this node.
    let out = ok(node(&["ca", "init", "--data-dir", &d]));
    assert_contains(
        &out,
        &[&format!("alliance CA created: {d}/ca.crt (give this certificate to every node)")],
    );
    assert!(dir.join("crl.der").exists(), "an empty CRL is written at once");
    let again = fails(node(&["ca", "init", "--data-dir", &d]), 1);
    assert_contains(&again, &["exists: the CA is already created"]);
    let csr = format!("{d}/tls.csr");
    let wrong = fails(
        node(&[
            "ca",
            "issue",
            "--data-dir",
            &d,
            "--csr",
            &csr,
            "--node-id",
            "bank-b",
            "--out",
            &format!("{d}/wrong.crt"),
        ]),
        1,
    );
    assert_contains(
        &wrong,
        &["the certificate request is for node bank-a, but the CA was told to issue for bank-b"],
    );
    assert!(!dir.join("wrong.crt").exists());
    let out = ok(node(&[
        "ca",
        "issue",
        "--data-dir",
        &d,
        "--csr",
        &csr,
        "--node-id",
        "bank-a",
        "--out",
        &format!("{d}/tls.crt"),
    ]));
    assert_contains(&out, &[&format!("issued certificate serial 1 for bank-a -> {d}/tls.crt")]);
    let index: serde_json::Value =
        serde_json::from_str(&ok(node(&["ca", "list", "--data-dir", &d, "--json"])))?;
    assert_eq!(index["issued"][0]["serial"], 1);
    assert_eq!(index["issued"][0]["node_id"], "bank-a");
    let table = ok(node(&["ca", "list", "--data-dir", &d]));
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("1 ") && row.contains("bank-a") && row.ends_with(" -"), "{table}");

    // Nothing answers yet.
    let down = fails(node(&["status", "--config", &config]), 1);
    assert_contains(
        &down,
        &[&format!("no admin socket at {d}/admin.sock: is `xmcredit-node serve` running")],
    );

    // serve
    let log = std::fs::File::create(base.path().join("serve.log"))?;
    let child = Command::new(BINARY)
        .args(["serve", "--config", &config])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let mut serve = Serve(Some(child));
    wait_until_serving(&config, &mut serve)?;
    let out = ok(node(&["status", "--config", &config]));
    assert_contains(
        &out,
        &["node bank-a\n", "peers:\n", "datasets:\n", "contracts:\n", "recent jobs:\n", "audit records: 0"],
    );

    // import: 25 applicants, some written as a branch might (lower case, padded), with a
    // column the schema does not name.
    let applicants = codes(31, 25);
    let mut csv = String::from("\u{feff}credit_code,amount,branch\n");
    let mut expected = BTreeMap::new();
    for (i, code) in applicants.iter().enumerate() {
        let written = if i % 4 == 0 { format!("  {}  ", code.to_lowercase()) } else { code.clone() };
        csv.push_str(&format!("{written},{}.{:02},xm-{}\n", 100 + i, i, i % 3));
        let units = (100 + i as i64) * 100 + i as i64;
        expected.insert(code.clone(), encode_values(&[Value::Decimal { units, scale: 2 }], &[]));
    }
    let schema = write(base.path(), "applicants.schema.toml", APPLICANTS_SCHEMA)?.display().to_string();
    let good = write(base.path(), "applicants.csv", &csv)?.display().to_string();
    // No --dataset: the schema names it.
    let out = node(&["import", "--config", &config, "--schema", &schema, "--csv", &good]);
    let ignored = stderr(&out);
    let report: serde_json::Value = serde_json::from_str(&ok(out))?;
    assert_eq!(report["committed"], true);
    assert_eq!(report["dataset"], "loan_applicants");
    assert_eq!(report["rows_accepted"], 25);
    assert_contains(&ignored, &["ignored columns (not in the schema, not imported): branch\n"]);
    // The 7 codes written in lower case and padded (rows 1, 5, ..., 25) are warnings.
    assert_eq!(report["warnings"].as_array().map(Vec::len), Some(7), "{report}");
    assert_eq!(report["warnings_total"], 7);
    assert_eq!(report["warnings"][1]["row"], 5);
    assert_contains(report["warnings"][1]["warning"].as_str().unwrap_or_default(), &["code normalized from"]);
    // A --dataset that is not the schema's name is refused.
    let other = fails(
        node(&["import", "--config", &config, "--dataset", "other", "--schema", &schema, "--csv", &good]),
        1,
    );
    assert_contains(&other, &["schema names dataset \"loan_applicants\", the request \"other\""]);
    assert_eq!(report["version"], 1);
    let digest = dataset_digest(&expected);
    assert_eq!(report["digest"], digest.as_str());

    // status shows it.
    assert_eq!(dataset_line(&config), vec!["loan_applicants", "v1", "25", "rows", &digest[..16]]);

    // A file with one bad row: exit 1, the row in the report, nothing imported.
    let bad_csv = csv.replacen(&applicants[1], &format!("{}X", &applicants[1][..17]), 1);
    let bad = write(base.path(), "bad.csv", &bad_csv)?.display().to_string();
    let out = node(&[
        "import",
        "--config",
        &config,
        "--dataset",
        "loan_applicants",
        "--schema",
        &schema,
        "--csv",
        &bad,
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out))?;
    let message = fails(out, 1);
    assert_contains(
        &message,
        &["nothing imported: 1 rows rejected; fix them or import with --allow-rejects"],
    );
    assert_eq!(report["rejected"][0]["row"], 2);
    assert_contains(
        report["rejected"][0]["reason"].as_str().unwrap_or_default(),
        &["check character is 'X'"],
    );
    assert_eq!(dataset_line(&config), vec!["loan_applicants", "v1", "25", "rows", &digest[..16]]);
    // With --allow-rejects the other 24 rows become version 2.
    let out = node(&[
        "import",
        "--config",
        &config,
        "--dataset",
        "loan_applicants",
        "--schema",
        &schema,
        "--csv",
        &bad,
        "--allow-rejects",
    ]);
    let report: serde_json::Value = serde_json::from_str(&ok(out))?;
    assert_eq!((report["version"].as_u64(), report["rows_accepted"].as_u64()), (Some(2), Some(24)));
    expected.remove(&applicants[1]);
    assert_eq!(report["digest"], dataset_digest(&expected).as_str());

    // audit verify: intact, and as many records as status counts.
    let out = ok(node(&["status", "--config", &config]));
    let records: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("audit records: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(records, 3, "two imports and one refusal are audited:\n{out}");
    let out = ok(node(&["audit", "verify", "--config", &config]));
    assert_eq!(out.trim(), format!("audit log intact: {records} records"));
    let last: serde_json::Value = serde_json::from_str(
        ok(node(&["audit", "show", "--config", &config, "--last", "1", "--json"])).trim(),
    )?;
    assert_eq!((last["seq"].as_u64(), last["outcome"]["status"].as_str()), (Some(2), Some("ok")));

    // SIGTERM: a graceful stop with exit code 0.
    let pid = serve.0.as_ref().map(Child::id).expect("serve runs").to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status()?.success());
    let status = serve.0.as_mut().expect("serve runs").wait()?;
    serve.0 = None;
    assert!(status.success(), "serve exited with {status}");
    let log = std::fs::read_to_string(base.path().join("serve.log"))?;
    assert_contains(&log, &["SIGTERM: shutting down", "stopped"]);
    let down = fails(node(&["audit", "verify", "--config", &config]), 1);
    assert_contains(&down, &["is `xmcredit-node serve` running"]);
    Ok(())
}
