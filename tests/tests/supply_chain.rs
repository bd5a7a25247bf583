//! Supply-chain finance with real node processes (issue 14): dataset keys beyond entity
//! codes (identifiers with a normalization and pattern, composites of several columns),
//! receivable confirmation between a chain leader and a bank, and key definitions that
//! both sides of a contract must share.

mod common;

use anyhow::Result;
use common::*;
use xmcredit_contracts::entity_code::EntityCode;
use xmcredit_contracts::KeyKind;
use xmcredit_node::proto;
use xmcredit_simulator::alliance::NodeHandle;
use xmcredit_simulator::receivable_scenario::{self, CHAIN_LEADER, PAYABLES, PRESENTED};
use xmcredit_simulator::supply_chain::{SeededFraud, SupplyChain, RECEIVABLE_KEY_KIND};

/// An identifier key: a 20-digit e-invoice number, typed with spaces or hyphens.
const INVOICE_KEY_KIND: &str = r#"{ kind = "identifier", normalize = ["fullwidth", "strip_spaces", "strip_hyphens"], pattern = "[0-9]{20}" }"#;

fn key_kind(text: &str) -> KeyKind {
    toml::from_str::<toml::Value>(&format!("k = {text}"))
        .ok()
        .and_then(|v| v.get("k").cloned())
        .and_then(|v| v.try_into().ok())
        .expect("a key kind")
}

fn suppliers(seed: u64, n: usize) -> Vec<EntityCode> {
    codes(seed, n).iter().map(|c| EntityCode::parse(c).map(|(code, _)| code).expect("valid code")).collect()
}

/// Imports `csv` under `schema` into `node` as `dataset`, with the legacy `key_kind`
/// flag; returns the report or the refusal.
async fn import(
    node: &NodeHandle,
    dir: &std::path::Path,
    dataset: &str,
    schema: &str,
    csv: &str,
    flag: &str,
    allow_rejects: bool,
) -> Result<std::result::Result<serde_json::Value, tonic::Status>> {
    let csv_path = write(dir, &format!("{dataset}-{}.csv", rand::random::<u32>()), csv)?;
    let request = proto::ImportRequest {
        dataset: dataset.into(),
        csv_path: std::fs::canonicalize(csv_path)?.display().to_string(),
        schema_toml: schema.into(),
        key_kind: flag.into(),
        allow_rejects,
    };
    let stream = match node.admin().await?.import(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(Err(status)),
    };
    match xmcredit_simulator::alliance::final_report(stream).await {
        Ok(report) => Ok(Ok(report)),
        Err(e) => Ok(Err(tonic::Status::invalid_argument(e.to_string()))),
    }
}

fn rejected(report: &serde_json::Value) -> Vec<(u64, String)> {
    report["rejected"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (r["row"].as_u64().unwrap_or(0), r["reason"].as_str().unwrap_or_default().to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivable_confirmation_finds_every_seeded_fraud_and_nothing_else() -> Result<()> {
    let (dir, alliance) = alliance(&[CHAIN_LEADER, "bank-a"], true).await?;
    let chain = SupplyChain::generate(14, &suppliers(140, 6), 30)?;
    receivable_scenario::import(&alliance, &chain, "bank-a", &dir.path().join("data")).await?;
    let result = receivable_scenario::run(&alliance, &chain, "bank-a").await?;
    assert!(result.verified, "{}", result.detail);
    assert_eq!(result.extra["use"], "receivable-confirmation");
    // Every seeded fraud is flagged, and nothing else is (no false positive).
    let flagged: Vec<String> = serde_json::from_value(result.extra["flagged"].clone())?;
    let seeded = chain.seeded();
    assert_eq!(flagged.len(), SeededFraud::ALL.len());
    for fraud in SeededFraud::ALL {
        let key = seeded.iter().find(|(_, f)| **f == fraud).map(|(k, _)| k.clone()).expect("seeded");
        assert!(flagged.contains(&key), "{} not flagged: {}", fraud.name(), result.detail);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifier_and_composite_keys_are_checked_row_by_row_at_import() -> Result<()> {
    let (dir, alliance) = alliance(&[CHAIN_LEADER], true).await?;
    let node = alliance.node(CHAIN_LEADER)?;
    let code = &codes(141, 2);
    let invoices = format!(
        "name = \"invoices\"\nkey = \"invoice_no\"\nkey_kind = {INVOICE_KEY_KIND}\ncolumns = [{{ name = \"amount\", type = \"decimal\", scale = 2 }}]\n"
    );
    let csv = "invoice_no,amount\n\
               25350200000000000001,1.00\n\
               2535 0200 0000 0000 0002,2.00\n\
               2535020000000000003,3.00\n\
               2535-0200-0000-0000-000A,4.00\n\
               2535-0200-0000-0000-0001,5.00\n\
               ,6.00\n";
    let report = import(node, dir.path(), "invoices", &invoices, csv, "", false).await?.expect("a report");
    assert_eq!(report["committed"], false);
    assert_eq!(
        rejected(&report),
        vec![
            (1, "duplicate key: appears on lines 2, 6".to_string()),
            (3, "\"2535020000000000003\" does not match the pattern [0-9]{20}".to_string()),
            (4, "\"2535020000000000000A\" does not match the pattern [0-9]{20}".to_string()),
            (5, "duplicate key: appears on lines 2, 6".to_string()),
            (6, "empty identifier".to_string()),
        ]
    );
    assert_eq!(report["key_definition"], key_kind(INVOICE_KEY_KIND).definition());
    let report = import(node, dir.path(), "invoices", &invoices, csv, "", true).await?.expect("a report");
    assert_eq!((report["committed"].as_bool(), report["rows_accepted"].as_u64()), (Some(true), Some(1)));

    // A composite: each part named in the reason, by row.
    let payables = receivable_scenario::payables_schema();
    let bad = format!("{}X", &code[0][..17]);
    let csv = format!(
        "supplier_code,invoice_no,amount,due_date,status\n\
         {a},25350200000000000001,10.00,2026-03-01,confirmed\n\
         {bad},25350200000000000002,10.00,2026-03-01,confirmed\n\
         {a},2535020000000000003,10.00,2026-03-01,confirmed\n\
         {b},25350200000000000001,10.00,2026-03-01,confirmed\n\
         {b_lower},2535 0200 0000 0000 0001,10.00,2026-03-01,settled\n",
        a = code[0],
        b = code[1],
        b_lower = code[1].to_lowercase(),
    );
    let report = import(node, dir.path(), PAYABLES, &payables, &csv, "", false).await?.expect("a report");
    let reasons = rejected(&report);
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert_eq!(reasons[0].0, 2);
    assert!(
        reasons[0].1.starts_with("key column supplier_code: bad unified social credit code"),
        "{reasons:?}"
    );
    assert_eq!(
        reasons[1],
        (
            3,
            "key column invoice_no: \"2535020000000000003\" does not match the pattern [0-9]{20}".to_string()
        )
    );
    // The same receivable written two ways is one key: both rows refused.
    assert_eq!(reasons[2], (4, "duplicate key: appears on lines 5, 6".to_string()));
    assert_eq!(reasons[3], (5, "duplicate key: appears on lines 5, 6".to_string()));
    // With --allow-rejects only the good row is kept.
    let report = import(node, dir.path(), PAYABLES, &payables, &csv, "", true).await?.expect("a report");
    assert_eq!(report["rows_accepted"], 1);

    // The legacy flag cannot re-key a schema that declares its key kind.
    let refused = import(node, dir.path(), PAYABLES, &payables, &csv, "id", true).await?;
    let message = refused.expect_err("flag and schema disagree").message().to_string();
    assert!(message.contains("leave --key-kind out"), "{message}");
    Ok(())
}

/// The attack: a bank proposes a contract naming an invoice-number key for the chain
/// leader's ledger, which the leader keys by (supplier, invoice). The leader refuses to
/// sign, naming both definitions. And a ledger re-keyed after signing is refused at run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_naming_another_key_definition_is_refused_with_both_definitions() -> Result<()> {
    let (dir, alliance) = alliance(&[CHAIN_LEADER, "bank-a"], true).await?;
    let chain = SupplyChain::generate(15, &suppliers(150, 4), 30)?;
    receivable_scenario::import(&alliance, &chain, "bank-a", &dir.path().join("data")).await?;
    let (leader, bank) = (alliance.node(CHAIN_LEADER)?, alliance.node("bank-a")?);
    let composite = key_kind(RECEIVABLE_KEY_KIND).definition();
    let invoice = key_kind(INVOICE_KEY_KIND).definition();

    // The bank re-keys its own presented receivables by invoice number alone, then
    // proposes matching them against the leader's ledger under that key.
    let presented = receivable_scenario::presented_schema().replace(RECEIVABLE_KEY_KIND, INVOICE_KEY_KIND);
    let mut csv = String::from("receivable,amount,due_date\n");
    for r in &chain.presented {
        csv.push_str(&format!("{},{}.00,{}\n", r.invoice, r.amount_cents / 100, r.due));
    }
    import(bank, dir.path(), PRESENTED, &presented, &csv, "", false).await?.expect("imports");
    let id = "bank-a.scf-invoices-only";
    let toml = receivable_scenario::contract(
        id,
        &party(leader, &["server"]),
        &party(bank, &["client"]),
        INVOICE_KEY_KIND,
    );
    bank.propose(&toml).await?;
    let err = leader.sign(id).await.expect_err("the leader's ledger is keyed otherwise");
    let message = err.downcast_ref::<tonic::Status>().map(|s| s.message().to_string()).unwrap_or_default();
    assert!(message.contains(&composite) && message.contains(&invoice), "{message}");
    let status = run_status(bank, "psi", id).await?;
    assert!(status.is_err(), "an unsigned contract ran: {status:?}");

    // Honest setup: both keyed by (supplier, invoice), contract signed by both.
    receivable_scenario::import(&alliance, &chain, "bank-a", &dir.path().join("data2")).await?;
    let id = format!("{CHAIN_LEADER}.scf-confirm-rekeyed");
    let toml = receivable_scenario::contract(
        &id,
        &party(leader, &["server"]),
        &party(bank, &["client"]),
        RECEIVABLE_KEY_KIND,
    );
    alliance.agree(CHAIN_LEADER, &toml, &id, &["bank-a"]).await?;
    run_status(bank, "psi", &id).await?.expect("the honest run succeeds");
    // The leader re-imports its ledger keyed by invoice number alone: the next run is
    // refused by the leader's node, with both definitions in the refusal.
    let ledger = receivable_scenario::payables_schema().replace(RECEIVABLE_KEY_KIND, INVOICE_KEY_KIND);
    let mut csv = String::from("receivable,amount,due_date,status\n");
    for p in &chain.ledger {
        csv.push_str(&format!("{},{}.00,{},{}\n", p.invoice, p.amount_cents / 100, p.due, p.status));
    }
    import(leader, dir.path(), PAYABLES, &ledger, &csv, "", false).await?.expect("re-imports");
    let refused = run_status(bank, "psi", &id).await?.expect_err("re-keyed ledger");
    let message = refused.message().to_string();
    assert!(message.contains(&composite) && message.contains(&invoice), "{message}");
    Ok(())
}
