//! Well-formedness: documents refused before anyone signs them, each naming the field.

mod common;

use common::*;
use xmcredit_contracts::{Contract, ContractError};

fn field_of(err: &ContractError) -> &str {
    match err {
        ContractError::Malformed { field, .. } => field,
        other => panic!("expected Malformed, got {other}"),
    }
}

fn refused(text: &str) -> ContractError {
    Contract::from_toml_str(text).expect_err("should be refused")
}

#[test]
fn unknown_and_missing_fields_are_named() {
    let text = sample_text(PSI);
    let err = refused(&text.replace("version = 1", "version = 1\ncolour = \"red\""));
    assert!(
        matches!(&err, ContractError::Toml { message } if message.contains("unknown field `colour`")),
        "{err}"
    );
    let err = refused(&text.replace("epoch_seconds = 604800 # keys rotate weekly\n", ""));
    assert!(matches!(&err, ContractError::Toml { message } if message.contains("epoch_seconds")), "{err}");
    let err = refused(&text.replace("output = \"intersection\"", "output = \"intersection\"\nthreshold = 2"));
    assert!(matches!(&err, ContractError::Toml { message } if message.contains("threshold")), "{err}");
    let err = refused(&text.replace("roles = [\"client\"]", "roles = [\"client\"]\nrole = \"x\""));
    assert!(
        matches!(&err, ContractError::Toml { message } if message.contains("unknown field `role`")),
        "{err}"
    );
    let err = refused(&text.replace("kind = \"psi\"", "kind = \"pir\""));
    assert!(matches!(&err, ContractError::Toml { message } if message.contains("pir")), "{err}");
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let text = sample_text(PSI);
    let cases = [
        ("version = 1", "version = 0", "version"),
        ("epoch_seconds = 604800", "epoch_seconds = 0", "epoch_seconds"),
        ("not_after = 2026-12-31T23:59:59+08:00", "not_after = 2025-12-31T23:59:59+08:00", "not_after"),
        ("purpose = \"信易贷", "purpose = \"\\u0007信易贷", "purpose"),
        ("roles = [\"client\"]", "roles = [\"client\", \"coordinator\"]", "parties[0].roles"),
        ("roles = [\"client\"]", "roles = [\"client\", \"client\"]", "parties[0].roles"),
        ("roles = [\"client\"]", "roles = [\"server\"]", "parties"),
        ("node = \"bank-a\"\nform", "node = \"bank-b\"\nform", "receivers[0].node"),
        ("form = \"intersection\"", "form = \"cardinality\"", "receivers"),
        ("form = \"intersection\"", "form = \"sum\"", "receivers[0].form"),
        ("name = \"loan_applicants\"", "name = \"loan applicants\"", "datasets[0].name"),
        ("credit-center = 1000, ", "", "limits.min_set_size"),
        ("bank-a = 20 }", "bank-a = 0 }", "limits.min_set_size.bank-a"),
        ("min_set_size = {", "output_bits = 8\nmin_set_size = {", "limits.output_bits"),
        // A PSI client without a daily quota, or a quota for the server: refused.
        ("lookups_per_day = { bank-a = 5000 }", "", "limits.lookups_per_day"),
        (
            "lookups_per_day = { bank-a = 5000 }",
            "lookups_per_day = { credit-center = 5000 }",
            "limits.lookups_per_day",
        ),
    ];
    for (from, to, field) in cases {
        assert!(text.contains(from), "{from}");
        let err = refused(&text.replacen(from, to, 1));
        assert_eq!(field_of(&err), field, "{to}: {err}");
    }
    let same_key = text.replace(
        "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394",
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
    );
    assert_eq!(field_of(&refused(&same_key)), "parties[1].public_key");
    // The identity point: a small-order key, refused by strict Ed25519.
    let bad_key = text.replace(
        "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394",
        "0100000000000000000000000000000000000000000000000000000000000000",
    );
    assert!(matches!(refused(&bad_key), ContractError::Toml { .. }));
    let local_time = text.replace("2026-01-01T00:00:00+08:00", "2026-01-01T00:00:00");
    let err = refused(&local_time);
    assert!(matches!(&err, ContractError::Toml { message } if message.contains("offset")), "{err}");
}

#[test]
fn kind_specific_rules() {
    let lookup = sample_text(LOOKUP);
    let cases = [
        ("lookups_per_day = { bank-a = 500 }", "", "limits.lookups_per_day"),
        ("output_bits = 16", "output_bits = 7", "limits.output_bits"),
        (
            "column = \"tax_grade\", comparison = \"in\", constant = [\"A\", \"B\"]",
            "column = \"turnover\", comparison = \"in\", constant = [\"A\", \"B\"]",
            "datasets[1].rules[0].column",
        ),
        (
            "comparison = \"in\", constant = [\"A\", \"B\"], points = 30",
            "comparison = \"in\", constant = \"A\", points = 30",
            "datasets[1].rules[0]",
        ),
        ("points = 30", "points = 2000000000000", "datasets[1].rules[0]"),
        ("form = \"scores\"", "form = \"sum\"", "receivers[0].form"),
    ];
    for (from, to, field) in cases {
        assert!(lookup.contains(from), "{from}");
        let err = refused(&lookup.replacen(from, to, 1));
        assert_eq!(field_of(&err), field, "{to}: {err}");
    }
    let bitmask = lookup.replace("output = \"points\"", "output = \"bitmask\"");
    Contract::from_toml_str(&bitmask).expect("six rules fit 16 bits");
    let err = refused(&bitmask.replace("output_bits = 16", "output_bits = 5"));
    assert_eq!(field_of(&err), "limits.output_bits");
    let secagg = sample_text(SECAGG);
    let cases = [
        ("threshold = 2", "threshold = 4", "computation.threshold"),
        ("min_contributors = 3", "min_contributors = 1", "limits.min_contributors"),
        ("min_contributors = 3\n", "", "limits.min_contributors"),
        ("\"350212\", \"350213\"]", "\"350212\", \"350212\"]", "computation.groups[5]"),
        ("value_column = \"outstanding_yuan\"", "value_column = \"balance\"", "datasets"),
        ("roles = [\"coordinator\"]", "roles = [\"contributor\"]", "parties"),
    ];
    for (from, to, field) in cases {
        assert!(secagg.contains(from), "{from}");
        let err = refused(&secagg.replacen(from, to, 1));
        assert_eq!(field_of(&err), field, "{to}: {err}");
    }
    let overthreshold = sample_text(OVERTHRESHOLD);
    let err = refused(&overthreshold.replacen("form = \"histogram\"", "form = \"own_matches\"", 1));
    assert_eq!(field_of(&err), "receivers[3].form");
    let err = refused(&overthreshold.replacen("threshold = 2", "threshold = 1", 1));
    assert_eq!(field_of(&err), "computation.threshold");
}

#[test]
fn overthreshold_without_quota_or_size_bound_is_refused() {
    let text = sample_text(OVERTHRESHOLD);
    let quota = "lookups_per_day = { bank-a = 200000, bank-b = 200000, bank-c = 200000 }";
    let cases = [
        // A contributor with no daily quota could test guessed ids run after run.
        (quota, "lookups_per_day = { bank-a = 200000, bank-b = 200000 }", "limits.lookups_per_day"),
        // A quota for a party that brings no set to evaluate.
        (
            quota,
            "lookups_per_day = { bank-a = 1, bank-b = 1, bank-c = 1, credit-center = 1 }",
            "limits.lookups_per_day",
        ),
        (quota, "lookups_per_day = { bank-a = 0, bank-b = 1, bank-c = 1 }", "limits.lookups_per_day.bank-a"),
        // No bound on a set: the tag length could not be derived.
        ("max_set_size = 100000\n", "", "limits.max_set_size"),
        ("max_set_size = 100000", "max_set_size = 0", "limits.max_set_size"),
        ("max_set_size = 100000", "max_set_size = 4294967297", "limits.max_set_size"),
    ];
    for (from, to, field) in cases {
        assert!(text.contains(from), "{from}");
        let err = refused(&text.replacen(from, to, 1));
        assert_eq!(field_of(&err), field, "{to}: {err}");
    }
    // Only overthreshold bounds a set this way.
    let psi = sample_text(PSI);
    let err = refused(&psi.replacen("[limits]", "[limits]\nmax_set_size = 10", 1));
    assert_eq!(field_of(&err), "limits.max_set_size");
}

#[test]
fn overthreshold_threshold_defaults_to_two_and_is_always_signed() {
    let text = sample_text(OVERTHRESHOLD).replacen("threshold = 2\n", "", 1);
    let contract = Contract::from_toml_str(&text).expect("threshold may be left out");
    let written = Contract::from_toml_str(&sample_text(OVERTHRESHOLD)).expect("sample");
    assert_eq!(contract.computation, written.computation);
    let bytes = contract.canonical_bytes().expect("canonical");
    assert!(String::from_utf8_lossy(&bytes).contains(r#""threshold":2"#));
    // Canonical bytes without it are not canonical: signers always see the number.
    let without = String::from_utf8_lossy(&bytes).replace(r#","threshold":2"#, "");
    assert!(Contract::from_canonical_bytes(without.as_bytes()).is_err());
}

#[test]
fn secagg_needs_a_threshold_of_two_and_a_sum_that_cannot_wrap() {
    let secagg = sample_text(SECAGG);
    // t = 1 would let one share unmask a contributor; the protocol needs t >= 2.
    let err = refused(&secagg.replacen("threshold = 2", "threshold = 1", 1));
    assert_eq!(field_of(&err), "computation.threshold", "{err}");
    assert!(err.to_string().contains("between 2 and the 3 contributors"), "{err}");
    let err = refused(&secagg.replacen("threshold = 2", "threshold = 0", 1));
    assert_eq!(field_of(&err), "computation.threshold", "{err}");
    // 3 contributors: 3 × (2^62 − 1) fits 64 bits, 3 × (2^63 − 1) does not.
    let bits = |b: u32| secagg.replacen("output_bits = 48", &format!("output_bits = {b}"), 1);
    Contract::from_toml_str(&bits(62)).expect("3 × (2^62 − 1) < 2^64");
    for wide in [63, 64] {
        let err = refused(&bits(wide));
        assert_eq!(field_of(&err), "limits.output_bits", "{err}");
        assert!(err.to_string().contains("could wrap"), "{err}");
    }
}

#[test]
fn hand_written_json_is_read_strictly() {
    let contract = sample(PSI);
    let json = serde_json::to_string(&contract).expect("serializes");
    assert_eq!(Contract::from_json_str(&json), Ok(contract));
    let duplicate = json.replacen("{\"id\":", "{\"version\":1,\"id\":", 1);
    assert!(matches!(Contract::from_json_str(&duplicate), Err(ContractError::NotCanonical(_))));
    let float = json.replacen("\"version\":1", "\"version\":1.0", 1);
    assert!(matches!(Contract::from_json_str(&float), Err(ContractError::NotCanonical(_))));
    let null = json.replacen("\"version\":1", "\"version\":null", 1);
    assert!(matches!(Contract::from_json_str(&null), Err(ContractError::NotCanonical(_))));
}

/// Multi-bank exposure: three banks sum their outstanding balances exactly; bank-a also
/// queries, so it brings its loan book as provider and its applicants as querier.
fn exposure_text() -> String {
    let lookup = sample_text(LOOKUP);
    let head = &lookup[..lookup.find("[computation]").expect("computation table")];
    format!(
        r#"{head}[computation]
kind = "lookup"
output = "value"
scale = 2

[[parties]]
node = "credit-center"
public_key = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
roles = ["coordinator"]

[[parties]]
node = "bank-a"
public_key = "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"
roles = ["provider", "querier"]

[[parties]]
node = "bank-b"
public_key = "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1"
roles = ["provider"]

[[datasets]]
party = "bank-a"
role = "querier"
name = "applicants"
key = "credit_code"
columns = []

[[datasets]]
party = "bank-a"
role = "provider"
name = "loans"
key = "credit_code"
columns = ["outstanding_yuan"]

[[datasets]]
party = "bank-b"
name = "loans"
key = "credit_code"
columns = ["outstanding_yuan"]

[[receivers]]
node = "bank-a"
form = "scores"

[limits]
lookups_per_day = {{ bank-a = 500 }}
output_bits = 48
"#
    )
}

#[test]
fn a_value_lookup_sums_one_column_and_a_provider_may_also_query() {
    let text = exposure_text();
    let contract = Contract::from_toml_str(&text).expect("exposure contract");
    let bank_a = xmcredit_crypto::NodeId::new("bank-a").expect("id");
    use xmcredit_contracts::Role;
    assert_eq!(contract.dataset_for(&bank_a, Role::Provider).map(|d| d.name.as_str()), Some("loans"));
    assert_eq!(contract.dataset_for(&bank_a, Role::Querier).map(|d| d.name.as_str()), Some("applicants"));
    let cases = [
        // A value provider names exactly its column, and no rules.
        (
            "columns = [\"outstanding_yuan\"]\n\n[[receivers]]",
            "columns = [\"outstanding_yuan\", \"overdue\"]\n\n[[receivers]]",
            "datasets[2].columns",
        ),
        // Two datasets for one party need a role each, and different ones.
        ("role = \"provider\"\n", "", "datasets[1].party"),
        ("role = \"provider\"\n", "role = \"querier\"\n", "datasets[1].party"),
        // A role the party does not hold.
        ("party = \"bank-b\"\n", "party = \"bank-b\"\nrole = \"querier\"\n", "datasets[2].role"),
        // Points come from rules.
        ("output = \"value\"", "output = \"points\"", "datasets[1].rules"),
        ("scale = 2", "scale = 19", "computation.scale"),
    ];
    for (from, to, field) in cases {
        assert!(text.contains(from), "{from}");
        let err = refused(&text.replacen(from, to, 1));
        assert_eq!(field_of(&err), field, "{to}: {err}");
    }
    // A scale means nothing for points.
    let points = sample_text(LOOKUP).replacen("output = \"points\"", "output = \"points\"\nscale = 2", 1);
    assert_eq!(field_of(&refused(&points)), "computation.scale");
    // A provider that also queries names both of its datasets.
    let applicants = "[[datasets]]\nparty = \"bank-a\"\nrole = \"querier\"\nname = \"applicants\"\nkey = \"credit_code\"\ncolumns = []\n\n";
    assert!(text.contains(applicants));
    let err = refused(&text.replacen(applicants, "", 1));
    assert_eq!(field_of(&err), "datasets", "{err}");
}

/// The secagg sample with `noise` declared under `[computation]`.
fn with_noise(noise: &str, bits: &str) -> String {
    sample_text(SECAGG)
        .replace("groups = [\"350203\"", &format!("noise = {noise}\ngroups = [\"350203\""))
        .replace("output_bits = 48", bits)
}

#[test]
fn secagg_noise_is_signed_canonically_and_checked() {
    let text =
        with_noise("{ mechanism = \"skellam\", variance = 1000000, sensitivity = 500 }", "output_bits = 48");
    let contract = Contract::from_toml_str(&text).expect("noise accepted");
    let bytes = contract.canonical_bytes().expect("test value");
    let json = String::from_utf8(bytes.clone()).expect("test value");
    assert!(
        json.contains(r#""noise":{"mechanism":"skellam","sensitivity":500,"variance":1000000}"#),
        "{json}"
    );
    assert_eq!(Contract::from_canonical_bytes(&bytes).expect("test value"), contract);
    // Without noise, the canonical bytes carry no `noise` key (old signatures hold).
    let plain = Contract::from_toml_str(&sample_text(SECAGG)).expect("test value");
    assert!(!String::from_utf8(plain.canonical_bytes().expect("test value"))
        .expect("test value")
        .contains("noise"));

    let cases = [
        (
            "{ mechanism = \"skellam\", variance = 0, sensitivity = 1 }",
            "output_bits = 48",
            "computation.noise.variance",
        ),
        (
            "{ mechanism = \"skellam\", variance = 1125899906842625, sensitivity = 1 }",
            "output_bits = 48",
            "computation.noise.variance",
        ),
        (
            "{ mechanism = \"skellam\", variance = 100, sensitivity = 0 }",
            "output_bits = 48",
            "computation.noise.sensitivity",
        ),
        // 3 × (2^62 − 1) fits 2^64 but not the signed range noise needs.
        (
            "{ mechanism = \"skellam\", variance = 100, sensitivity = 1 }",
            "output_bits = 62",
            "limits.output_bits",
        ),
    ];
    for (noise, bits, field) in cases {
        let err = refused(&with_noise(noise, bits));
        assert_eq!(field_of(&err), field, "{noise} {bits}: {err}");
    }
    let err = refused(&with_noise(
        "{ mechanism = \"gaussian\", variance = 100, sensitivity = 1 }",
        "output_bits = 48",
    ));
    assert!(matches!(&err, ContractError::Toml { message } if message.contains("gaussian")), "{err}");
}

/// The PSI sample as a cardinality, with `noise` declared under `[computation]`.
fn psi_cardinality_with(noise: &str) -> String {
    sample_text(PSI)
        .replace("output = \"intersection\"", &format!("output = \"cardinality\"\nnoise = {noise}"))
        .replace("form = \"intersection\"", "form = \"cardinality\"")
}

#[test]
fn psi_count_noise_is_signed_canonically_and_checked() {
    let text = psi_cardinality_with("{ mechanism = \"discrete_laplace\", epsilon_milli = 500 }");
    let contract = Contract::from_toml_str(&text).expect("noise accepted");
    let bytes = contract.canonical_bytes().expect("test value");
    let json = String::from_utf8(bytes.clone()).expect("test value");
    assert!(json.contains(r#""noise":{"epsilon_milli":500,"mechanism":"discrete_laplace"}"#), "{json}");
    assert_eq!(Contract::from_canonical_bytes(&bytes).expect("test value"), contract);
    // Without noise the canonical bytes carry no `noise` key: the golden sample's bytes
    // (and signatures) are unchanged (tests/samples.rs pins them).
    let plain = Contract::from_toml_str(&sample_text(PSI)).expect("test value");
    assert!(!String::from_utf8(plain.canonical_bytes().expect("test value"))
        .expect("utf-8")
        .contains("noise"));

    let cases = [
        ("{ mechanism = \"discrete_laplace\", epsilon_milli = 9 }", "computation.noise.epsilon_milli"),
        ("{ mechanism = \"discrete_laplace\", epsilon_milli = 10001 }", "computation.noise.epsilon_milli"),
    ];
    for (noise, field) in cases {
        let err = refused(&psi_cardinality_with(noise));
        assert_eq!(field_of(&err), field, "{noise}: {err}");
    }
    // Count noise hides nothing in a form that hands out elements.
    let intersection = sample_text(PSI).replace(
        "output = \"intersection\"",
        "output = \"intersection\"\nnoise = { mechanism = \"discrete_laplace\", epsilon_milli = 500 }",
    );
    let err = refused(&intersection);
    assert_eq!(field_of(&err), "computation.noise", "{err}");
    let err = refused(&psi_cardinality_with("{ mechanism = \"laplace\", epsilon_milli = 500 }"));
    assert!(matches!(&err, ContractError::Toml { message } if message.contains("laplace")), "{err}");
}
