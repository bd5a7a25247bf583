//! Shared helpers of the integration tests: a small alliance of real node processes in a
//! temporary directory, data files written as an operator would write them, contracts
//! with the parties' real keys, TLS connections with a node's own identity, and a few
//! independent computations (SHA-256, the dataset digest) to check results against.
//!
//! Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tempfile::TempDir;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use xmcredit_contracts::entity_code::{EntityCode, EntityKind, XIAMEN_DISTRICTS};
use xmcredit_crypto::NodeId;
use xmcredit_node::config::NodeConfig;
use xmcredit_node::proto;
use xmcredit_node::transport::TransportError;
use xmcredit_simulator::alliance::{Alliance, NodeHandle, NodeProgram};
use xmcredit_simulator::contracts::PartyLine;

/// How long a test waits for one connection attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The node binary built by this package.
pub fn program() -> NodeProgram {
    NodeProgram::Binary(PathBuf::from(env!("CARGO_BIN_EXE_xmcredit-node-under-test")))
}

/// A running alliance in its own temporary directory (the first id runs the CA). The
/// directory lives as long as the returned guard; the nodes are killed when the
/// alliance is dropped.
pub async fn alliance(ids: &[&str], require_approval: bool) -> Result<(TempDir, Alliance)> {
    let dir = tempfile::Builder::new().prefix("xmcredit-test-").tempdir()?;
    let alliance = Alliance::create(program(), dir.path(), ids, require_approval).await?;
    Ok((dir, alliance))
}

// ---- Data ----------------------------------------------------------------------------

/// `n` distinct valid unified social credit codes of Xiamen entities, from `seed`.
pub fn codes(seed: u64, n: usize) -> Vec<String> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    let mut i = 0usize;
    while out.len() < n {
        let kind = if i % 3 == 0 { EntityKind::SoleProprietor } else { EntityKind::Enterprise };
        let district = XIAMEN_DISTRICTS[i % XIAMEN_DISTRICTS.len()].0;
        i += 1;
        let code = EntityCode::random(&mut rng, kind, district).expect("a valid random code");
        if seen.insert(code) {
            out.push(code.to_string());
        }
    }
    out
}

/// The check character a unified social credit code's first 17 characters require
/// (design.md: weights 3^(i-1) mod 31, check = 31 - sum mod 31, 31 read as 0).
pub fn check_character(first17: &str) -> char {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
    const WEIGHTS: [usize; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];
    let sum: usize = first17
        .bytes()
        .zip(WEIGHTS)
        .map(|(c, w)| ALPHABET.iter().position(|a| *a == c).expect("alphabet character") * w)
        .sum();
    let check = (31 - sum % 31) % 31;
    char::from(ALPHABET[check])
}

/// The schema of the banks' applicant lists (what the simulator's PSI contracts name).
pub const APPLICANTS_SCHEMA: &str =
    "name = \"loan_applicants\"\nkey = \"credit_code\"\ncolumns = [{ name = \"amount\", type = \"decimal\", scale = 2 }]\n";

/// The schema of the credit center's government list used as the PSI server set.
pub fn gov_schema(name: &str) -> String {
    format!(
        "name = \"{name}\"\nkey = \"credit_code\"\ncolumns = [\n  {{ name = \"tax_grade\", type = \"enum\", values = [\"A\", \"B\", \"M\", \"C\", \"D\"] }},\n  {{ name = \"si_headcount\", type = \"integer\" }},\n]\n"
    )
}

/// One row of a government list: code, tax grade, social-insurance headcount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovRow {
    pub code: String,
    pub tax_grade: &'static str,
    pub si_headcount: i64,
}

/// Government rows for `codes`, with grades and headcounts that vary by position.
pub fn gov_rows(codes: &[String]) -> Vec<GovRow> {
    const GRADES: [&str; 5] = ["A", "B", "M", "C", "D"];
    codes
        .iter()
        .enumerate()
        .map(|(i, code)| GovRow {
            code: code.clone(),
            tax_grade: GRADES[i % GRADES.len()],
            si_headcount: ((i * 37) % 401) as i64,
        })
        .collect()
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes an applicant list (schema and CSV) for `codes`; amounts vary by position.
pub fn write_applicants(dir: &Path, file: &str, codes: &[String]) -> Result<(PathBuf, PathBuf)> {
    let mut csv = String::from("credit_code,amount\n");
    for (i, code) in codes.iter().enumerate() {
        let _ = writeln!(csv, "{code},{}.{:02}", 1000 + i * 13, i % 100);
    }
    Ok((
        write(dir, &format!("{file}.schema.toml"), APPLICANTS_SCHEMA)?,
        write(dir, &format!("{file}.csv"), &csv)?,
    ))
}

/// Writes a government list (schema and CSV) named `name`.
pub fn write_gov(dir: &Path, name: &str, rows: &[GovRow]) -> Result<(PathBuf, PathBuf)> {
    let mut csv = String::from("credit_code,tax_grade,si_headcount\n");
    for row in rows {
        let _ = writeln!(csv, "{},{},{}", row.code, row.tax_grade, row.si_headcount);
    }
    Ok((
        write(dir, &format!("{name}.schema.toml"), &gov_schema(name))?,
        write(dir, &format!("{name}.csv"), &csv)?,
    ))
}

/// Imports and requires the import to commit; returns the report.
pub async fn import_ok(
    node: &NodeHandle,
    dataset: &str,
    files: &(PathBuf, PathBuf),
) -> Result<serde_json::Value> {
    let report = node.import(dataset, &files.0, &files.1, false).await?;
    if report["committed"] != serde_json::Value::Bool(true) {
        bail!("import of {dataset} into {} did not commit: {report}", node.id);
    }
    Ok(report)
}

/// Imports `listed` as `center`'s government list ([`GOV_DATASET`]) and `applicants` as
/// `bank`'s loan applicants: the two sides of a PSI test.
pub async fn import_list_and_applicants(
    dir: &Path,
    center: &NodeHandle,
    bank: &NodeHandle,
    listed: &[String],
    applicants: &[String],
) -> Result<()> {
    import_ok(center, GOV_DATASET, &write_gov(dir, GOV_DATASET, &gov_rows(listed))?).await?;
    import_ok(bank, "loan_applicants", &write_applicants(dir, "applicants", applicants)?).await?;
    Ok(())
}

// ---- Contracts -----------------------------------------------------------------------

/// The party line of `node` with `roles`.
pub fn party<'a>(node: &'a NodeHandle, roles: &'a [&'a str]) -> PartyLine<'a> {
    PartyLine { node: node.id.as_str(), public_key: &node.public_key, roles }
}

/// The credit center's government list the PSI contracts name.
pub const GOV_DATASET: &str = "gov_list";

/// A PSI contract between `server` (its dataset [`GOV_DATASET`]) and `client`
/// (`loan_applicants`), valid from an hour ago for 30 days, daily epochs.
pub fn psi_contract(
    id: &str,
    server: &NodeHandle,
    client: &NodeHandle,
    output: &str,
    label_columns: &[&str],
    min_server: u64,
    min_client: u64,
) -> String {
    xmcredit_simulator::contracts::psi(
        id,
        "integration test: applicants against a government list",
        &party(server, &["server"]),
        GOV_DATASET,
        &party(client, &["client"]),
        output,
        label_columns,
        min_server,
        min_client,
    )
}

// ---- Calls ---------------------------------------------------------------------------

/// Runs a computation through `node`'s admin service, keeping the gRPC status of a
/// refusal (code and message) instead of flattening it to text.
pub async fn run_status(
    node: &NodeHandle,
    computation: &str,
    contract: &str,
) -> Result<std::result::Result<serde_json::Value, tonic::Status>> {
    let request = proto::RunRequest {
        computation: computation.to_string(),
        contract_id: contract.to_string(),
        dataset: String::new(),
        values: Vec::new(),
    };
    let mut stream = match node.admin().await?.run(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(Err(status)),
    };
    while let Some(message) = stream.next().await {
        match message {
            Ok(progress) if !progress.report_json.is_empty() => {
                return Ok(Ok(serde_json::from_str(&progress.report_json)?));
            }
            Ok(_) => {}
            Err(status) => return Ok(Err(status)),
        }
    }
    bail!("the run stream of {} ended without a report", node.id)
}

/// Opens a mutual-TLS channel with `from`'s own TLS identity (its data directory) to
/// `address`, expecting the certificate there to name `expected`.
pub async fn connect_as(
    from: &Path,
    address: &str,
    expected: &str,
) -> Result<std::result::Result<Channel, TransportError>> {
    let config = NodeConfig::load(from)?;
    let auth = xmcredit_node::server::client_auth(&config)?;
    Ok(xmcredit_node::transport::connect(address, &NodeId::new(expected)?, auth.clone(), CONNECT_TIMEOUT)
        .await)
}

/// A channel from `from` to `to` that must connect.
pub async fn channel(from: &NodeHandle, to: &NodeHandle) -> Result<Channel> {
    connect_as(&from.config, &to.address, to.id.as_str())
        .await?
        .with_context(|| format!("{} connecting to {}", from.id, to.id))
}

/// The node's audit records as JSON values.
pub async fn audit_records(node: &NodeHandle) -> Result<Vec<serde_json::Value>> {
    let reply = node.admin().await?.audit_show(proto::AuditShowRequest { last: 0 }).await?.into_inner();
    reply.records_json.iter().map(|r| Ok(serde_json::from_str(r)?)).collect()
}

/// The audit chain verifies; returns the number of records.
pub async fn audit_verifies(node: &NodeHandle) -> Result<u64> {
    let reply =
        node.admin().await?.audit_verify(proto::AuditVerifyRequest { witnesses: false }).await?.into_inner();
    if !reply.ok {
        bail!("the audit log of {} does not verify: {}", node.id, reply.detail);
    }
    Ok(reply.records)
}

/// The error text of a result that must be an error.
pub fn err_text<T: std::fmt::Debug, E: std::fmt::Display>(result: std::result::Result<T, E>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts `text` contains every one of `parts`.
#[track_caller]
pub fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "expected {part:?} in:\n{text}");
    }
}

/// The codes of a report's array field, sorted.
pub fn report_codes(report: &serde_json::Value, field: &str) -> Vec<String> {
    let mut codes: Vec<String> = report[field]
        .as_array()
        .unwrap_or_else(|| panic!("report field {field} is not an array: {report}"))
        .iter()
        .map(|v| v.as_str().expect("a code").to_string())
        .collect();
    codes.sort();
    codes
}

/// The contents of a node's log file.
pub fn node_log(node: &NodeHandle) -> String {
    std::fs::read_to_string(node.dir.join("node.log")).unwrap_or_default()
}

/// Waits (up to 5 s) until `node`'s log contains `needle`; returns the log.
pub async fn wait_for_log(node: &NodeHandle, needle: &str) -> String {
    for _ in 0..50 {
        let log = node_log(node);
        if log.contains(needle) {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node_log(node)
}

// ---- Independent computations --------------------------------------------------------

/// SHA-256 from RustCrypto's `sha2` (the node uses the same crate; the digests below
/// re-derive the node's byte layouts independently, which is what they test).
pub fn sha256(message: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(message).into()
}

/// The digest of a dataset version as ARCHITECTURE.md ("Dataset blocks") defines it:
/// SHA-256 over `varint(len key) ‖ key ‖ values` for each row in key order, `values`
/// the row's value encoding ([`encode_values`]). Takes (key, encoded values) pairs.
pub fn dataset_digest(rows: &BTreeMap<String, Vec<u8>>) -> String {
    let mut message = Vec::new();
    for (key, values) in rows {
        leb128(&mut message, key.len() as u64);
        message.extend_from_slice(key.as_bytes());
        message.extend_from_slice(values);
    }
    hex::encode(sha256(&message))
}

/// LEB128: seven bits a byte, low bits first, high bit set on all bytes but the last.
pub fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A row's values as the store encodes them (ARCHITECTURE.md "Dataset blocks"), written
/// here apart from the node's code: integers, decimal units and dates (days since
/// 1970-01-01) as zigzag LEB128, an enum as LEB128 of its index in `enum_list` (the
/// schema's values of the row's one enum column), a bool as one byte.
pub fn encode_values(values: &[xmcredit_contracts::Value], enum_list: &[&str]) -> Vec<u8> {
    use xmcredit_contracts::Value;
    let zigzag = |v: i64| ((v as u64) << 1) ^ ((v >> 63) as u64);
    let mut out = Vec::new();
    for value in values {
        match value {
            Value::Integer(v) | Value::Decimal { units: v, .. } => leb128(&mut out, zigzag(*v)),
            Value::Date(d) => leb128(&mut out, zigzag(i64::from(d.days_since_epoch()))),
            Value::Enum(text) => {
                let index = enum_list.iter().position(|v| v == text).expect("enum value in the list");
                leb128(&mut out, index as u64);
            }
            Value::Bool(b) => out.push(u8::from(*b)),
        }
    }
    out
}

/// SHA-256 over the sorted codes each followed by '\n' (what the PSI server records as
/// the digest of an intersection it learned).
pub fn codes_digest(sorted: &[String]) -> String {
    let mut message = Vec::new();
    for code in sorted {
        message.extend_from_slice(code.as_bytes());
        message.push(b'\n');
    }
    hex::encode(sha256(&message))
}
