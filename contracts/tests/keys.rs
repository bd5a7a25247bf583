//! Key definitions in contracts: both sides of a match name one definition, the
//! contract's canonical bytes carry it, and a node refuses a dataset keyed otherwise,
//! with both definitions in the refusal.

mod common;

use common::*;
use xmcredit_contracts::{Contract, ContractError, DatasetSchema, KeyKind};

const INVOICE: &str =
    r#"{ kind = "identifier", normalize = ["strip_spaces", "strip_hyphens"], pattern = "[0-9]{20}" }"#;
const RECEIVABLE: &str = r#"{ kind = "composite", parts = [{ column = "supplier_code", kind = "entity_code" }, { column = "invoice_no", kind = "identifier", normalize = ["strip_spaces", "strip_hyphens"], pattern = "[0-9]{20}" }] }"#;

/// The psi sample with `key_kind` lines added to the server's and the client's datasets.
fn psi_keyed(server: Option<&str>, client: Option<&str>) -> String {
    let text = sample_text(PSI);
    let mut out = String::new();
    let mut dataset = 0;
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("key = ") {
            let kind = if dataset == 0 { server } else { client };
            if let Some(kind) = kind {
                out.push_str(&format!("key_kind = {kind}\n"));
            }
            dataset += 1;
        }
    }
    out
}

fn kind(text: &str) -> KeyKind {
    toml::from_str::<toml::Value>(&format!("k = {text}"))
        .ok()
        .and_then(|v| v.get("k").cloned())
        .and_then(|v| v.try_into().ok())
        .expect("a key kind")
}

#[test]
fn a_contract_without_key_kinds_keeps_its_canonical_bytes() {
    // Absent means entity codes, and is not written out: signed samples stay valid.
    let plain = Contract::from_toml_str(&sample_text(PSI)).expect("valid");
    let explicit = Contract::from_toml_str(&psi_keyed(
        Some(r#"{ kind = "entity_code" }"#),
        Some(r#"{ kind = "entity_code" }"#),
    ))
    .expect("valid");
    assert_eq!(plain.canonical_bytes(), explicit.canonical_bytes());
}

#[test]
fn the_canonical_bytes_carry_the_key_definition() {
    let contract = Contract::from_toml_str(&psi_keyed(Some(RECEIVABLE), Some(RECEIVABLE))).expect("valid");
    let bytes = String::from_utf8(contract.canonical_bytes().expect("encodes")).expect("utf-8");
    let definition = kind(RECEIVABLE).definition();
    assert!(bytes.contains(&format!("\"key_kind\":{definition}")), "{bytes}");
    // And they decode to the same contract (canonicality check included).
    let back = Contract::from_canonical_bytes(bytes.as_bytes()).expect("canonical");
    assert_eq!(back.datasets[0].key_kind, kind(RECEIVABLE));
}

#[test]
fn psi_sides_keyed_differently_are_refused_with_both_definitions() {
    let err = Contract::from_toml_str(&psi_keyed(Some(RECEIVABLE), Some(INVOICE))).expect_err("differ");
    let ContractError::KeyDefinitionsDiffer { definition, other_definition, .. } = &err else {
        panic!("wrong error: {err}");
    };
    let both = [kind(RECEIVABLE).definition(), kind(INVOICE).definition()];
    assert!(both.contains(definition) && both.contains(other_definition) && definition != other_definition);
    let message = err.to_string();
    assert!(message.contains(&both[0]) && message.contains(&both[1]), "{message}");
    // One side left at the default is a difference too.
    assert!(matches!(
        Contract::from_toml_str(&psi_keyed(None, Some(INVOICE))),
        Err(ContractError::KeyDefinitionsDiffer { .. })
    ));
}

#[test]
fn a_lookup_needs_entity_codes() {
    let text = sample_text(LOOKUP).replacen(
        "key = \"credit_code\"\n",
        &format!("key = \"credit_code\"\nkey_kind = {INVOICE}\n"),
        1,
    );
    let err = Contract::from_toml_str(&text).expect_err("not codes");
    assert!(err.to_string().contains("needs {\"kind\":\"entity_code\"}"), "{err}");
}

/// The attack: a bank proposes a contract naming an identifier key for the server's
/// dataset, which the server keys by (supplier, invoice). The server's check refuses,
/// naming both definitions.
#[test]
fn a_dataset_keyed_otherwise_than_the_contract_names_is_refused() {
    let signed =
        signed_by_all(&Contract::from_toml_str(&psi_keyed(Some(INVOICE), Some(INVOICE))).expect("valid"));
    let verified = signed.verify(now(), &[]).expect("verifies");
    let cc = node("credit-center");
    let schema = DatasetSchema::new("a_grade_taxpayers", "credit_code", Vec::new())
        .and_then(|s| s.with_key_kind(kind(RECEIVABLE)))
        .expect("schema");
    let err = verified.require_schema(&cc, &schema).expect_err("keyed otherwise");
    assert_eq!(
        err,
        ContractError::KeyDefinitionMismatch {
            contract: verified.id().clone(),
            dataset: "a_grade_taxpayers".into(),
            contract_definition: kind(INVOICE).definition(),
            dataset_definition: kind(RECEIVABLE).definition(),
        }
    );
    let same = DatasetSchema::new("a_grade_taxpayers", "credit_code", Vec::new())
        .and_then(|s| s.with_key_kind(kind(INVOICE)))
        .expect("schema");
    verified.require_schema(&cc, &same).expect("same definition");
    // A schema at the default (entity codes) does not fit an identifier contract either.
    let codes = DatasetSchema::new("a_grade_taxpayers", "credit_code", Vec::new()).expect("schema");
    assert!(matches!(verified.require_schema(&cc, &codes), Err(ContractError::KeyDefinitionMismatch { .. })));
}

#[test]
fn schemas_declare_their_key_kind_and_old_schemas_mean_entity_codes() {
    let old: DatasetSchema =
        toml::from_str("name = \"d\"\nkey = \"credit_code\"\ncolumns = []\n").expect("parses");
    assert!(old.key_kind().is_entity_code());
    let text = format!(
        "name = \"payables\"\nkey = \"receivable\"\nkey_kind = {RECEIVABLE}\ncolumns = [{{ name = \"amount\", type = \"decimal\", scale = 2 }}]\n"
    );
    let schema: DatasetSchema = toml::from_str(&text).expect("parses");
    assert_eq!(schema.key_kind(), &kind(RECEIVABLE));
    let back: DatasetSchema =
        serde_json::from_str(&serde_json::to_string(&schema).expect("json")).expect("back");
    assert_eq!(back, schema);
    // A part column may not also be a value column.
    let clash = text.replace("name = \"amount\"", "name = \"invoice_no\"");
    let err = toml::from_str::<DatasetSchema>(&clash).expect_err("clash").to_string();
    assert!(err.contains("key part column invoice_no"), "{err}");
}
