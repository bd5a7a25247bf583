//! CSV import through a real node (issue 4): every bad row is reported with its number
//! and reason, a refused file changes nothing, `allow_rejects` imports exactly the good
//! rows, and a node killed in the middle of an import comes back with the previous
//! version current and no trace of the half-written one.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Result;
use common::*;
use tokio_stream::StreamExt;
use xmcredit_contracts::Value;
use xmcredit_node::proto;
use xmcredit_simulator::alliance::NodeHandle;

const SCHEMA: &str = r#"name = "loan_book"
key = "credit_code"
columns = [
  { name = "amount", type = "decimal", scale = 2 },
  { name = "headcount", type = "integer" },
  { name = "tax_grade", type = "enum", values = ["A", "B", "M", "C", "D"] },
]
"#;

const HEADER: &str = "credit_code,amount,headcount,tax_grade";
const GRADES: [&str; 5] = ["A", "B", "M", "C", "D"];

/// One good row of the loan book: as written in the CSV, and the values it must become.
struct GoodRow {
    written_code: String,
    code: String,
    cells: String,
    values: Vec<Value>,
}

fn good_row(code: &str, i: usize) -> GoodRow {
    let units = (i as i64) * 1001 + 7;
    let grade = GRADES[i % GRADES.len()];
    let headcount = (i as i64 * 3) % 250;
    GoodRow {
        written_code: code.to_string(),
        code: code.to_string(),
        cells: format!("{}.{:02},{headcount},{grade}", units / 100, units % 100),
        values: vec![
            Value::Decimal { units, scale: 2 },
            Value::Integer(headcount),
            Value::Enum(grade.to_string()),
        ],
    }
}

/// The rows a committed version must hold, keyed by normalized code, values encoded as
/// the store encodes them.
fn expected_rows(rows: &[&GoodRow]) -> BTreeMap<String, Vec<u8>> {
    rows.iter().map(|r| (r.code.clone(), encode_values(&r.values, &GRADES))).collect()
}

fn csv_of(rows: &[GoodRow]) -> String {
    let mut csv = format!("{HEADER}\n");
    for row in rows {
        let _ = writeln!(csv, "{},{}", row.written_code, row.cells);
    }
    csv
}

/// Imports `csv` (any path, as sent to the node) with `schema`, keeping the gRPC status
/// of a refusal.
async fn import_status(
    node: &NodeHandle,
    schema: &str,
    csv: &str,
    allow_rejects: bool,
) -> Result<std::result::Result<serde_json::Value, tonic::Status>> {
    let request = proto::ImportRequest {
        dataset: "loan_book".into(),
        csv_path: csv.into(),
        schema_toml: schema.into(),
        key_kind: String::new(),
        allow_rejects,
    };
    let mut stream = match node.admin().await?.import(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(Err(status)),
    };
    while let Some(message) = stream.next().await {
        match message {
            Ok(progress) if !progress.report_json.is_empty() => {
                return Ok(Ok(serde_json::from_str(&progress.report_json)?))
            }
            Ok(_) => {}
            Err(status) => return Ok(Err(status)),
        }
    }
    anyhow::bail!("the import stream ended without a report")
}

async fn current(node: &NodeHandle, name: &str) -> Result<Option<proto::DatasetSummary>> {
    Ok(node.status().await?.datasets.into_iter().find(|d| d.name == name))
}

/// (key, encoded values) of every row stored under `name` version `version`, read from
/// the node's sled store directly (the node must be stopped) and decoded here from the
/// block layout of ARCHITECTURE.md: `dataset_blocks` keys `name ‖ 0 ‖ version u64 ‖ 0 ‖
/// block u32`, values `0x01 ‖ varint(rows) ‖ rows`, a loan_book row being
/// `varint(len key) ‖ key` and three varints.
fn stored_rows(db: &sled::Db, name: &str, version: u64) -> Result<BTreeMap<String, Vec<u8>>> {
    fn varint(bytes: &[u8], pos: &mut usize) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *bytes.get(*pos).ok_or_else(|| anyhow::anyhow!("varint cut short"))?;
            *pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        anyhow::bail!("varint too long")
    }
    let blocks = db.open_tree("dataset_blocks")?;
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(0);
    prefix.extend_from_slice(&version.to_be_bytes());
    prefix.push(0);
    let mut out = BTreeMap::new();
    for (expected_block, entry) in blocks.scan_prefix(&prefix).enumerate() {
        let (key, block) = entry?;
        assert_eq!(key[prefix.len()..], (expected_block as u32).to_be_bytes(), "blocks numbered from 0");
        assert_eq!(block[0], 1, "block format 1");
        let mut pos = 1;
        let rows = varint(&block, &mut pos)?;
        for _ in 0..rows {
            let len = varint(&block, &mut pos)? as usize;
            let code = String::from_utf8(block[pos..pos + len].to_vec())?;
            pos += len;
            let start = pos;
            for _ in 0..3 {
                varint(&block, &mut pos)?;
            }
            out.insert(code, block[start..pos].to_vec());
        }
        assert_eq!(pos, block.len(), "no bytes after the block's last row");
    }
    Ok(out)
}

/// Every version key in `dataset_meta` for `name`, with its JSON.
fn stored_versions(db: &sled::Db, name: &str) -> Result<BTreeMap<u64, serde_json::Value>> {
    let meta = db.open_tree("dataset_meta")?;
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(0);
    let mut out = BTreeMap::new();
    for entry in meta.scan_prefix(&prefix) {
        let (key, value) = entry?;
        let version = u64::from_be_bytes(key[prefix.len()..].try_into()?);
        out.insert(version, serde_json::from_slice(&value)?);
    }
    Ok(out)
}

#[test]
fn test_helpers_match_known_answers() {
    // FIPS 180-4 examples.
    assert_eq!(
        hex::encode(sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(hex::encode(sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(
        hex::encode(sha256(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    // The check character of design.md agrees with the codes the crate generates.
    for code in codes(7, 300) {
        assert_eq!(check_character(&code[..17]), code.chars().nth(17).expect("18 characters"), "{code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_listed_and_a_strict_import_changes_nothing() -> Result<()> {
    let (dir, alliance) = alliance(&["bank-a"], true).await?;
    let node = alliance.node("bank-a")?;
    let all = codes(11, 80);

    // Version 1: forty good rows.
    let v1_rows: Vec<GoodRow> = all[..40].iter().enumerate().map(|(i, c)| good_row(c, i)).collect();
    let schema = write(dir.path(), "loan_book.schema.toml", SCHEMA)?;
    let v1_csv = write(dir.path(), "v1.csv", &csv_of(&v1_rows))?;
    let v1 = node.import("loan_book", &schema, &v1_csv, false).await?;
    assert_eq!(v1["committed"], true, "{v1}");
    assert_eq!(v1["version"], 1);
    let v1_expected = expected_rows(&v1_rows.iter().collect::<Vec<_>>());
    let v1_digest = dataset_digest(&v1_expected);
    assert_eq!(v1["digest"], v1_digest.as_str(), "the digest of version 1 is over its rows in key order");

    // Version 2 attempt: good rows mixed with one of each kind of bad row. Data rows are
    // numbered from 1 (the header is line 1, so row r is on line r + 1).
    let fresh = &all[40..];
    let mut good: Vec<GoodRow> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    let mut expected_rejections: BTreeMap<u64, String> = BTreeMap::new();
    let mut push_good = |lines: &mut Vec<String>, row: GoodRow| {
        lines.push(format!("{},{}", row.written_code, row.cells));
        good.push(row);
    };
    let mut push_bad = |lines: &mut Vec<String>, line: String, reason: String| {
        lines.push(line);
        expected_rejections.insert(lines.len() as u64, reason);
    };
    // Row 1: good.
    push_good(&mut lines, good_row(&fresh[0], 100));
    // Row 2: lower case and padded with spaces; the import normalizes it.
    let mut padded = good_row(&fresh[1], 101);
    padded.written_code = format!("  {}  ", fresh[1].to_lowercase());
    push_good(&mut lines, padded);
    // Row 3: wrong check character.
    let right = fresh[2].chars().nth(17).expect("18 characters");
    let wrong = if right == '0' { '1' } else { '0' };
    let bad_check = format!("{}{wrong}", &fresh[2][..17]);
    push_bad(
        &mut lines,
        format!("{bad_check},{}", good_row(&fresh[2], 0).cells),
        format!("check character is '{wrong}', the first 17 characters require '{right}'"),
    );
    // Row 4: good.
    push_good(&mut lines, good_row(&fresh[3], 103));
    // Row 5: a character outside the alphabet (I) at position 10.
    let bad_char = format!("{}I{}", &fresh[4][..9], &fresh[4][10..]);
    push_bad(
        &mut lines,
        format!("{bad_char},{}", good_row(&fresh[4], 0).cells),
        "character 'I' at position 10 is not in the code alphabet".into(),
    );
    // Row 6: 17 characters.
    push_bad(
        &mut lines,
        format!("{},{}", &fresh[5][..17], good_row(&fresh[5], 0).cells),
        "code has 17 characters, a unified social credit code has 18".into(),
    );
    // Rows 7 and 13: the same (valid) code twice.
    let duplicate = &fresh[6];
    let twice = "duplicate code: appears on lines 8, 14".to_string();
    push_bad(&mut lines, format!("{duplicate},{}", good_row(duplicate, 1).cells), twice.clone());
    // Row 8: good.
    push_good(&mut lines, good_row(&fresh[7], 107));
    // Row 9: headcount not an integer.
    push_bad(
        &mut lines,
        format!("{},12.50,12a,A", fresh[8]),
        "column headcount: \"12a\" is not an integer".into(),
    );
    // Row 10: a tax grade outside the enum.
    push_bad(
        &mut lines,
        format!("{},12.50,12,X", fresh[9]),
        "column tax_grade: \"X\" is not one of A, B, M, C, D".into(),
    );
    // Row 11: three decimal places in a two-place column.
    push_bad(
        &mut lines,
        format!("{},12.345,12,B", fresh[10]),
        "column amount: decimal \"12.345\" has 3 places, column allows 2".into(),
    );
    // Row 12: one cell too many.
    push_bad(
        &mut lines,
        format!("{},12.34,12,B,surplus", fresh[11]),
        "row has 5 cells, the header has 4".into(),
    );
    // Row 13: the duplicate's second occurrence.
    push_bad(&mut lines, format!("{duplicate},{}", good_row(duplicate, 2).cells), twice);
    // Row 14: one cell missing.
    push_bad(&mut lines, format!("{},12.34,12", fresh[12]), "row has 3 cells, the header has 4".into());
    // Rows 15 to 31: good.
    for (i, code) in fresh[13..30].iter().enumerate() {
        push_good(&mut lines, good_row(code, 200 + i));
    }
    assert_eq!(
        expected_rejections.keys().copied().collect::<Vec<_>>(),
        vec![3, 5, 6, 7, 9, 10, 11, 12, 13, 14]
    );
    let rows_read = lines.len() as u64;
    // A byte-order mark, as spreadsheet exports write it.
    let bad_csv = write(dir.path(), "v2.csv", &format!("\u{feff}{HEADER}\n{}\n", lines.join("\n")))?;

    // Strict: nothing is imported and the report names each bad row.
    let strict = node.import("loan_book", &schema, &bad_csv, false).await?;
    assert_eq!(strict["committed"], false, "{strict}");
    assert_eq!(strict["version"], serde_json::Value::Null);
    assert_eq!(strict["rows_read"], rows_read);
    assert_eq!(strict["rows_rejected"], expected_rejections.len() as u64);
    assert_eq!(strict["rows_accepted"], good.len() as u64);
    assert_eq!(
        strict["not_committed_reason"],
        format!("{} rows rejected; fix them or import with --allow-rejects", expected_rejections.len())
            .as_str()
    );
    let listed = strict["rejected"].as_array().expect("rejected rows");
    let listed_rows: Vec<u64> = listed.iter().map(|r| r["row"].as_u64().expect("row number")).collect();
    assert_eq!(listed_rows, expected_rejections.keys().copied().collect::<Vec<_>>(), "{strict}");
    for entry in listed {
        let row = entry["row"].as_u64().expect("row number");
        assert_eq!(entry["line"], row + 1, "the line counts the header");
        let reason = entry["reason"].as_str().expect("reason");
        let part = &expected_rejections[&row];
        assert!(reason.contains(part.as_str()), "row {row}: expected {part:?} in {reason:?}");
    }
    // The row with the bad character is reported with the key as written.
    assert_eq!(listed[1]["key"], bad_char.as_str());
    // Row 2's lower-case, padded code is accepted, with a warning naming it as written;
    // every other accepted code was written canonically.
    let warnings = strict["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{strict}");
    assert_eq!((warnings[0]["row"].as_u64(), warnings[0]["line"].as_u64()), (Some(2), Some(3)));
    assert_eq!(warnings[0]["key"], fresh[1].as_str());
    assert_eq!(
        warnings[0]["warning"],
        format!("code normalized from {:?}", format!("  {}  ", fresh[1].to_lowercase())).as_str()
    );
    let after_strict = current(node, "loan_book").await?.expect("loan_book is still there");
    assert_eq!((after_strict.version, after_strict.rows), (1, 40));
    assert_eq!(after_strict.digest, v1_digest, "version 1 stays current and unchanged");
    let refused = audit_records(node).await?;
    assert!(
        refused.iter().any(|r| r.to_string().contains("import loan_book: 10 rows rejected")),
        "the refused import is audited: {refused:?}"
    );

    // allow_rejects: exactly the good rows become version 2.
    let lenient = node.import("loan_book", &schema, &bad_csv, true).await?;
    assert_eq!(lenient["committed"], true, "{lenient}");
    assert_eq!(lenient["version"], 2);
    assert_eq!(lenient["rows_accepted"], good.len() as u64);
    assert_eq!(lenient["rows_rejected"], expected_rejections.len() as u64);
    let v2_expected = expected_rows(&good.iter().collect::<Vec<_>>());
    assert_eq!(v2_expected.len(), 21, "twenty-one distinct good codes");
    let v2_digest = dataset_digest(&v2_expected);
    assert_eq!(lenient["digest"], v2_digest.as_str());
    let v2 = current(node, "loan_book").await?.expect("loan_book");
    assert_eq!((v2.version, v2.rows, v2.digest.as_str()), (2, 21, v2_digest.as_str()));
    audit_verifies(node).await?;

    // The store holds exactly those rows under version 2, and version 1 untouched.
    let mut alliance = alliance;
    alliance.node_mut("bank-a")?.stop()?;
    let db = sled::open(alliance.node("bank-a")?.dir.join("store"))?;
    let stored_v2 = stored_rows(&db, "loan_book", 2)?;
    assert_eq!(stored_v2, v2_expected, "version 2 rows: normalized codes, parsed values");
    assert!(stored_v2.contains_key(&fresh[1]), "the lower-case, padded code is stored normalized");
    assert_eq!(stored_rows(&db, "loan_book", 1)?, v1_expected);
    assert_eq!(stored_versions(&db, "loan_book")?.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_does_not_fit_the_schema_is_refused_whole() -> Result<()> {
    let (dir, alliance) = alliance(&["bank-a"], true).await?;
    let node = alliance.node("bank-a")?;
    let all = codes(13, 30);
    let rows: Vec<GoodRow> = all.iter().enumerate().map(|(i, c)| good_row(c, i)).collect();
    let v1 = node
        .import(
            "loan_book",
            &write(dir.path(), "loan_book.schema.toml", SCHEMA)?,
            &write(dir.path(), "v1.csv", &csv_of(&rows))?,
            false,
        )
        .await?;
    assert_eq!(v1["committed"], true, "{v1}");
    let body: String = csv_of(&rows).lines().skip(1).map(|l| format!("{l}\n")).collect();
    let path = |name: &str, text: &str| -> Result<String> {
        Ok(write(dir.path(), name, text)?.display().to_string())
    };

    // No key column in the header.
    let no_key = path("no-key.csv", &format!("code,amount,headcount,tax_grade\n{body}"))?;
    let refused = import_status(node, SCHEMA, &no_key, true).await?.expect_err("no key column");
    assert_eq!(
        (refused.code(), refused.message()),
        (tonic::Code::InvalidArgument, "import: header has no key column \"credit_code\"")
    );
    // A schema column missing from the header.
    let no_column = path("no-column.csv", &format!("credit_code,amount,staff,tax_grade\n{body}"))?;
    let refused = import_status(node, SCHEMA, &no_column, true).await?.expect_err("missing column");
    assert_eq!(
        (refused.code(), refused.message()),
        (tonic::Code::InvalidArgument, "import: header has no column \"headcount\"")
    );
    // A header and no rows.
    let empty = path("empty.csv", &format!("{HEADER}\n"))?;
    let report = import_status(node, SCHEMA, &empty, true).await?.map_err(|s| anyhow::anyhow!("{s}"))?;
    assert_eq!(report["committed"], false);
    assert_eq!(report["not_committed_reason"], "no row was accepted");
    // A schema that names another dataset than the request.
    let other = SCHEMA.replace("loan_book", "other_book");
    let refused = import_status(node, &other, &empty, true).await?.expect_err("schema for another dataset");
    assert_eq!(
        (refused.code(), refused.message()),
        (tonic::Code::InvalidArgument, "schema names dataset \"other_book\", the request \"loan_book\"")
    );
    // A file that is not there.
    let missing = dir.path().join("missing.csv").display().to_string();
    let refused = import_status(node, SCHEMA, &missing, true).await?.expect_err("no such file");
    assert_contains(refused.message(), &[&missing, "No such file"]);

    // Version 1 is still the one.
    let after = current(node, "loan_book").await?.expect("loan_book");
    assert_eq!((after.version, after.rows), (1, 30));
    assert_eq!(Some(after.digest.as_str()), v1["digest"].as_str());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_import_keeps_the_previous_version() -> Result<()> {
    let (dir, mut alliance) = alliance(&["bank-a"], true).await?;
    let all = codes(12, 100_000);
    // Imports write fast now; the node pauses after each block it writes (a test hook)
    // so that the kill below lands while version 2 is still being written.
    let node = alliance.node_mut("bank-a")?;
    node.stop()?;
    node.set_env(xmcredit_node::store::IMPORT_PAUSE_VAR, "40");
    node.start().await?;

    // Version 1: 500 rows.
    let v1_rows: Vec<GoodRow> = all[..500].iter().enumerate().map(|(i, c)| good_row(c, i)).collect();
    let schema = write(dir.path(), "loan_book.schema.toml", SCHEMA)?;
    let v1_csv = write(dir.path(), "v1.csv", &csv_of(&v1_rows))?;
    let node = alliance.node("bank-a")?;
    let v1 = node.import("loan_book", &schema, &v1_csv, false).await?;
    assert_eq!(v1["committed"], true, "{v1}");
    let v1_expected = expected_rows(&v1_rows.iter().collect::<Vec<_>>());
    let v1_digest = dataset_digest(&v1_expected);
    assert_eq!(v1["digest"], v1_digest.as_str());

    // Version 2: a large file, so the import is still writing when the node dies.
    let mut big = format!("{HEADER}\n");
    for (i, code) in all.iter().enumerate() {
        let _ = writeln!(big, "{code},{}.{:02},{},{}", i % 100_000, i % 100, i % 250, GRADES[i % 5]);
    }
    let big_csv = write(dir.path(), "v2.csv", &big)?;
    drop(big);
    let mut stream = node
        .admin()
        .await?
        .import(proto::ImportRequest {
            dataset: "loan_book".into(),
            csv_path: big_csv.display().to_string(),
            schema_toml: SCHEMA.into(),
            key_kind: String::new(),
            allow_rejects: false,
        })
        .await?
        .into_inner();
    let started = Instant::now();
    // Wait until the node reports that it is writing rows of the new version.
    let mut written = 0;
    while written == 0 {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await?
            .expect("the import stream ended before writing")?;
        assert!(
            message.report_json.is_empty(),
            "the import finished before the kill: {}",
            message.report_json
        );
        if message.stage == "writing" {
            written = message.done;
            assert!(written < message.total, "still writing: {written} of {}", message.total);
        }
    }
    eprintln!("writing after {:?}: {written} rows", started.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    alliance.node_mut("bank-a")?.kill()?;
    // The call never completed: the stream ends with an error, not with a report.
    let mut finished = None;
    while let Some(message) = stream.next().await {
        match message {
            Ok(progress) if !progress.report_json.is_empty() => finished = Some(progress.report_json),
            Ok(_) => {}
            Err(status) => {
                eprintln!("import stream ended: {status}");
                break;
            }
        }
    }
    assert_eq!(finished, None, "the import was still running when the node was killed");

    // The kill left a half-written version 2 on disk: what the restart must clean up.
    {
        let db = sled::open(alliance.node("bank-a")?.dir.join("store"))?;
        let versions = stored_versions(&db, "loan_book")?;
        assert_eq!(versions.get(&2).map(|v| v["state"].clone()), Some("importing".into()), "{versions:?}");
        let partial = stored_rows(&db, "loan_book", 2)?.len();
        assert!(partial > 0 && partial < all.len(), "{partial} of {} rows written", all.len());
    }

    alliance.node_mut("bank-a")?.start().await?;
    let node = alliance.node("bank-a")?;
    let after = current(node, "loan_book").await?.expect("loan_book survives");
    assert_eq!((after.version, after.rows, after.digest.as_str()), (1, 500, v1_digest.as_str()));
    let records = audit_verifies(node).await?;
    let audit = audit_records(node).await?;
    assert_eq!(audit.len() as u64, records);
    let interrupted: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|r| r.to_string().contains("import of loan_book v2 did not finish; removed"))
        .collect();
    assert_eq!(interrupted.len(), 1, "the interruption is audited once: {audit:?}");

    // Nothing of the half import is left in the store.
    alliance.node_mut("bank-a")?.stop()?;
    {
        let db = sled::open(alliance.node("bank-a")?.dir.join("store"))?;
        assert!(stored_rows(&db, "loan_book", 2)?.is_empty(), "no row under the partial version's prefix");
        assert_eq!(stored_rows(&db, "loan_book", 1)?, v1_expected, "version 1 intact");
        let versions = stored_versions(&db, "loan_book")?;
        assert_eq!(versions.keys().copied().collect::<Vec<_>>(), vec![1, 2], "v2 kept as a tombstone");
        assert_eq!(versions[&1]["state"], "committed");
        assert_eq!(
            versions[&2]["state"], "abandoned",
            "the partial version is marked, so its number is not reused"
        );
        assert_eq!(versions[&2]["rows"], 0);
    }

    // The node goes on: the next import commits.
    alliance.node_mut("bank-a")?.start().await?;
    let node = alliance.node("bank-a")?;
    let again = node.import("loan_book", &schema, &v1_csv, false).await?;
    assert_eq!(again["committed"], true, "{again}");
    assert_eq!(again["version"], 3, "the abandoned version number is not reused");
    assert_eq!(again["digest"], v1_digest.as_str());
    Ok(())
}
