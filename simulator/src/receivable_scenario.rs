//! Scenario `receivable-confirmation` (issue 14): a bank confirms the receivables a
//! supplier presented against the chain leader's payables ledger, with PSI in the
//! labels form (the leader is the server). The bank learns amount, due date and status
//! of the presented receivables the leader holds, and the size of the ledger; nothing
//! else about the leader's other payables leaves its node. The bank's check is compared
//! with the plaintext answer and with the seeded frauds: all found, nothing else flagged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::alliance::Alliance;
use crate::contracts::{self, PartyLine};
use crate::scenarios::ScenarioResult;
use crate::supply_chain::{check_receivables, Confirmation, Findings, SupplyChain, RECEIVABLE_KEY_KIND};

/// The chain leader's node: a new kind of party, holding its payables ledger.
pub const CHAIN_LEADER: &str = "chain-leader";
/// The leader's ledger.
pub const PAYABLES: &str = "payables";
/// A bank's receivables presented for financing.
pub const PRESENTED: &str = "presented_receivables";
/// The columns the leader confirms (the PSI labels).
pub const CONFIRMED_COLUMNS: [&str; 3] = ["amount", "due_date", "status"];

/// The leader's ledger schema.
pub fn payables_schema() -> String {
    format!(
        "name = \"{PAYABLES}\"\nkey = \"receivable\"\nkey_kind = {RECEIVABLE_KEY_KIND}\ncolumns = [\n  {{ name = \"amount\", type = \"decimal\", scale = 2 }},\n  {{ name = \"due_date\", type = \"date\" }},\n  {{ name = \"status\", type = \"enum\", values = [\"confirmed\", \"settled\", \"disputed\"] }},\n]\n"
    )
}

/// The bank's presented-receivables schema: the same key definition.
pub fn presented_schema() -> String {
    format!(
        "name = \"{PRESENTED}\"\nkey = \"receivable\"\nkey_kind = {RECEIVABLE_KEY_KIND}\ncolumns = [\n  {{ name = \"amount\", type = \"decimal\", scale = 2 }},\n  {{ name = \"due_date\", type = \"date\" }},\n]\n"
    )
}

/// The confirmation contract: PSI labels, `leader` serves its ledger, `bank` queries
/// its presented receivables; both datasets keyed by `key_kind` (TOML inline table).
pub fn contract(id: &str, leader: &PartyLine<'_>, bank: &PartyLine<'_>, key_kind: &str) -> String {
    let mut text = contracts::header(
        id,
        "信用+供应链: confirm the receivables presented to the bank against the chain leader's payables",
    );
    text.push_str("[computation]\nkind = \"psi\"\noutput = \"labels\"\nlabel_columns = [\"amount\", \"due_date\", \"status\"]\n\n");
    contracts::parties(&mut text, &[leader.clone(), bank.clone()]);
    let _ = write!(
        text,
        "[[datasets]]\nparty = \"{}\"\nname = \"{PAYABLES}\"\nkey = \"receivable\"\nkey_kind = {key_kind}\ncolumns = [\"amount\", \"due_date\", \"status\"]\n\n",
        leader.node
    );
    let _ = write!(
        text,
        "[[datasets]]\nparty = \"{}\"\nname = \"{PRESENTED}\"\nkey = \"receivable\"\nkey_kind = {key_kind}\ncolumns = []\n\n",
        bank.node
    );
    let _ = write!(text, "[[receivers]]\nnode = \"{}\"\nform = \"labels\"\n\n", bank.node);
    let _ = write!(
        text,
        "[limits]\nmin_set_size = {{ {} = 50, {} = 5 }}\nlookups_per_day = {{ {} = {} }}\n",
        leader.node,
        bank.node,
        bank.node,
        contracts::PSI_DAILY_QUOTA
    );
    text
}

/// Writes and imports the leader's ledger and the bank's presented receivables.
pub async fn import(alliance: &Alliance, chain: &SupplyChain, bank: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let files = [
        (CHAIN_LEADER, PAYABLES, payables_schema(), chain.ledger_csv(), chain.ledger.len()),
        (bank, PRESENTED, presented_schema(), chain.presented_csv(), chain.presented.len()),
    ];
    for (node, name, schema, csv, rows) in files {
        let (schema_path, csv_path) =
            (dir.join(format!("{name}.schema.toml")), dir.join(format!("{node}-{name}.csv")));
        std::fs::write(&schema_path, schema)?;
        std::fs::write(&csv_path, csv)?;
        let report = alliance.node(node)?.import(name, &schema_path, &csv_path, false).await?;
        if report["committed"].as_bool() != Some(true)
            || report["rows_accepted"].as_u64() != Some(rows as u64)
        {
            bail!("{node} did not import {name} whole: {report}");
        }
    }
    Ok(())
}

/// The bank's findings from its PSI report: the decrypted labels are the leader's
/// confirmations of the receivables it holds.
pub fn findings_from_report(chain: &SupplyChain, report: &Value) -> Result<Findings> {
    let mut confirmations = BTreeMap::new();
    if let Some(labels) = report["labels"].as_object() {
        for (key, label) in labels {
            let confirmation = Confirmation::from_label(label)
                .with_context(|| format!("unreadable label of {key}: {label}"))?;
            confirmations.insert(key.clone(), confirmation);
        }
    }
    Ok(check_receivables(&chain.presented, &confirmations))
}

/// Runs the scenario: `bank` confirms the receivables it was presented (data already
/// imported with [`import`]).
pub async fn run(alliance: &Alliance, chain: &SupplyChain, bank: &str) -> Result<ScenarioResult> {
    let id = format!("{CHAIN_LEADER}.scf-confirm-{bank}");
    let leader_node = alliance.node(CHAIN_LEADER)?;
    let bank_node = alliance.node(bank)?;
    let leader =
        PartyLine { node: leader_node.id.as_str(), public_key: &leader_node.public_key, roles: &["server"] };
    let client =
        PartyLine { node: bank_node.id.as_str(), public_key: &bank_node.public_key, roles: &["client"] };
    let toml = contract(&id, &leader, &client, RECEIVABLE_KEY_KIND);
    alliance.agree(CHAIN_LEADER, &toml, &id, &[bank]).await?;
    let started = Instant::now();
    let report = bank_node.run("psi", &id).await.with_context(|| format!("running {id}"))?;
    let wall_s = started.elapsed().as_secs_f64();

    let got = findings_from_report(chain, &report)?;
    let expected = chain.expected_findings();
    let seeded = chain.seeded();
    // The labels must be the ledger's values, and only for presented receivables.
    let ledger: BTreeMap<String, Confirmation> = chain
        .ledger
        .iter()
        .map(|p| {
            (
                crate::supply_chain::receivable_key(&p.supplier, &p.invoice),
                Confirmation {
                    amount_cents: p.amount_cents,
                    due: p.due.clone(),
                    status: p.status.to_string(),
                },
            )
        })
        .collect();
    let presented: std::collections::BTreeSet<String> = chain.presented.iter().map(|r| r.key()).collect();
    let labels = report["labels"].as_object().cloned().unwrap_or_default();
    let labels_exact = labels.iter().all(|(key, label)| {
        presented.contains(key) && Confirmation::from_label(label).as_ref() == ledger.get(key)
    }) && labels.len() == presented.iter().filter(|k| ledger.contains_key(*k)).count();
    let frauds_found = got.flagged() == seeded.keys().cloned().collect();
    let server_size_ok = report["server_set_size"].as_u64() == Some(chain.ledger.len() as u64);
    let verified = got == expected && frauds_found && labels_exact && server_size_ok;

    let mut extra = BTreeMap::new();
    extra.insert("use".to_string(), Value::from("receivable-confirmation"));
    extra.insert("contract".to_string(), Value::from(id.as_str()));
    let names: BTreeMap<&str, &str> = seeded.iter().map(|(k, f)| (f.name(), k.as_str())).collect();
    extra.insert("seeded_frauds".to_string(), serde_json::json!(names));
    extra.insert("flagged".to_string(), serde_json::json!(got.flagged()));
    let mut sizes = BTreeMap::new();
    sizes.insert(CHAIN_LEADER.to_string(), chain.ledger.len() as u64);
    sizes.insert(bank.to_string(), chain.presented.len() as u64);
    Ok(ScenarioResult {
        name: format!("receivables presented to {bank} confirmed by the chain leader"),
        computation: "psi".into(),
        output: "labels".into(),
        sizes,
        verified,
        wall_s,
        bytes_total: report["bytes_sent"].as_u64().unwrap_or(0) + report["bytes_received"].as_u64().unwrap_or(0),
        detail: format!(
            "{bank} got the leader's confirmation of {} of {} presented receivables (and the ledger's size, {}); flagged {} unconfirmed, {} not payable, {} with another amount, {} with another due date; the {} seeded frauds {} and nothing else{}",
            labels.len(),
            chain.presented.len(),
            chain.ledger.len(),
            got.unconfirmed.len(),
            got.not_payable.len(),
            got.amount_differs.len(),
            got.due_differs.len(),
            seeded.len(),
            if frauds_found { "found" } else { "NOT ALL FOUND" },
            if labels_exact { "" } else { "; LABELS DIFFER FROM THE LEDGER" }
        ),
        extra,
    })
}

/// The demo's chain: twelve of the registry's enterprises supply the leader, forty
/// invoices each; a bank is presented receivables of three of them.
pub fn demo_chain(world: &crate::data::World, seed: u64) -> Result<SupplyChain> {
    let suppliers: Vec<_> = world
        .entities
        .iter()
        .filter(|e| e.kind == xmcredit_contracts::entity_code::EntityKind::Enterprise)
        .map(|e| e.code)
        .take(12)
        .collect();
    SupplyChain::generate(seed, &suppliers, 40)
}

/// Receivable confirmation on the demo's chain, `bank` presented.
pub async fn demo(
    alliance: &Alliance,
    world: &crate::data::World,
    seed: u64,
    bank: &str,
    dir: &Path,
) -> Result<ScenarioResult> {
    let chain = demo_chain(world, seed)?;
    import(alliance, &chain, bank, dir).await?;
    run(alliance, &chain, bank).await
}
