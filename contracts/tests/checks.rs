//! The checks a node makes before it takes part: each refusal with its own assertion on
//! the error, naming the rule and the values.

mod common;

use common::*;
use xmcredit_contracts::{lookup_day, ColumnType, ContractError, DatasetSchema, OutputForm, Role, Value};

#[test]
fn my_role_must_be_in_the_contract() {
    let psi = verified(PSI);
    psi.require_role(&node("credit-center"), Role::Server).expect("server");
    psi.require_role(&node("bank-a"), Role::Client).expect("client");
    let err = psi.require_role(&node("bank-a"), Role::Server).expect_err("bank-a is the client");
    assert_eq!(
        err,
        ContractError::RoleNotHeld {
            contract: psi.id().clone(),
            node: node("bank-a"),
            role: Role::Server,
            held: vec![Role::Client]
        }
    );
    let err = psi.require_role(&node("bank-b"), Role::Client).expect_err("not a party");
    assert_eq!(err, ContractError::NotAParty { contract: psi.id().clone(), node: node("bank-b") });
}

#[test]
fn a_column_not_in_the_contract_is_refused() {
    let lookup = verified(LOOKUP);
    let cc = node("credit-center");
    lookup
        .require_columns(&cc, "gov_credit", &["credit_code", "tax_grade", "serious_dishonesty"])
        .expect("named");
    let err =
        lookup.require_columns(&cc, "gov_credit", &["tax_grade", "annual_turnover"]).expect_err("not named");
    let ContractError::ColumnNotInContract { contract, party, dataset, column, allowed } = err else {
        panic!("wrong error: {err}");
    };
    assert_eq!(
        (contract, party, dataset, column),
        (lookup.id().clone(), cc.clone(), "gov_credit".into(), "annual_turnover".into())
    );
    assert!(allowed.contains(&"tax_grade".to_string()));

    let err = lookup.require_columns(&cc, "loan_book", &[]).expect_err("another dataset");
    assert_eq!(
        err,
        ContractError::DatasetNotInContract {
            contract: lookup.id().clone(),
            party: cc,
            dataset: "loan_book".into(),
            named: Some("gov_credit".into())
        }
    );
}

#[test]
fn a_set_below_the_minimum_is_refused() {
    let psi = verified(PSI);
    psi.require_min_set_size(&node("bank-a"), 20).expect("at the minimum");
    let err = psi.require_min_set_size(&node("bank-a"), 19).expect_err("below");
    assert_eq!(
        err,
        ContractError::SetTooSmall {
            contract: psi.id().clone(),
            party: node("bank-a"),
            size: 19,
            minimum: 20
        }
    );
    let err = psi.require_min_set_size(&node("credit-center"), 999).expect_err("below");
    assert!(matches!(err, ContractError::SetTooSmall { minimum: 1000, size: 999, .. }), "{err}");
}

#[test]
fn a_querier_over_its_daily_quota_is_refused() {
    let lookup = verified(LOOKUP);
    let bank = node("bank-a");
    assert_eq!(lookup.check_lookup_quota(&bank, 0, 120), Ok(380));
    assert_eq!(lookup.check_lookup_quota(&bank, 490, 10), Ok(0));
    let err = lookup.check_lookup_quota(&bank, 490, 11).expect_err("over quota");
    assert_eq!(
        err,
        ContractError::QuotaExceeded {
            contract: lookup.id().clone(),
            querier: bank.clone(),
            used_today: 490,
            requested: 11,
            per_day: 500
        }
    );
    assert!(matches!(
        lookup.check_lookup_quota(&bank, u64::MAX, 1),
        Err(ContractError::QuotaExceeded { .. })
    ));
    let err = lookup.check_lookup_quota(&node("credit-center"), 0, 1).expect_err("not a querier");
    assert!(matches!(err, ContractError::RoleNotHeld { role: Role::Querier, .. }), "{err}");
}

#[test]
fn quota_days_start_at_midnight_in_xiamen() {
    let day = lookup_day(at("2026-03-01T00:00:00+08:00"));
    assert_eq!(lookup_day(at("2026-03-01T23:59:59+08:00")), day);
    assert_eq!(lookup_day(at("2026-02-28T23:59:59+08:00")), day - 1);
    assert_eq!(lookup_day(at("2026-03-02T00:00:00+08:00")), day + 1);
}

#[test]
fn too_few_contributors_are_refused() {
    let secagg = verified(SECAGG);
    secagg.require_contributors(3).expect("all three");
    let err = secagg.require_contributors(2).expect_err("one dropped before the start");
    assert_eq!(
        err,
        ContractError::TooFewContributors { contract: secagg.id().clone(), present: 2, minimum: 3 }
    );
}

#[test]
fn output_to_a_non_receiver_is_refused() {
    let psi = verified(PSI);
    psi.require_receiver(&node("bank-a"), OutputForm::Intersection).expect("the client receives");
    let err = psi.require_receiver(&node("credit-center"), OutputForm::Intersection).expect_err("server");
    assert_eq!(
        err,
        ContractError::NotAReceiver {
            contract: psi.id().clone(),
            node: node("credit-center"),
            receivers: vec![node("bank-a")]
        }
    );
    let err = psi.require_receiver(&node("bank-a"), OutputForm::Labels).expect_err("wrong form");
    assert_eq!(
        err,
        ContractError::WrongOutputForm {
            contract: psi.id().clone(),
            node: node("bank-a"),
            requested: OutputForm::Labels,
            allowed: OutputForm::Intersection
        }
    );
    let overthreshold = verified(OVERTHRESHOLD);
    overthreshold.require_receiver(&node("credit-center"), OutputForm::Histogram).expect("coordinator");
    assert!(overthreshold.require_receiver(&node("credit-center"), OutputForm::OwnMatches).is_err());
}

fn gov_credit_schema() -> DatasetSchema {
    let enum_of =
        |values: &[&str]| ColumnType::Enum { values: values.iter().map(|v| v.to_string()).collect() };
    DatasetSchema::new(
        "gov_credit",
        "credit_code",
        vec![
            ("tax_grade".into(), enum_of(&["A", "B", "M", "C", "D"])),
            ("insured_headcount".into(), ColumnType::Integer),
            ("utility_arrears_yuan".into(), ColumnType::Decimal { scale: 2 }),
            ("serious_dishonesty".into(), ColumnType::Bool),
            ("public_credit_grade".into(), enum_of(&["A", "B", "C", "D"])),
            ("registration_status".into(), enum_of(&["存续", "在业", "吊销", "注销"])),
            ("registered_on".into(), ColumnType::Date),
        ],
    )
    .expect("valid schema")
}

#[test]
fn the_provider_scores_its_rows_with_the_contract_scorecard() {
    let lookup = verified(LOOKUP);
    let schema = gov_credit_schema();
    let card = lookup.scorecard(&node("credit-center"), &schema).expect("schema fits");
    assert_eq!(card.bounds(), (-120, 80));
    let best = schema.parse_row(&["A", "25", "0", "否", "B", "存续", "2015-06-01"]).expect("row");
    assert_eq!(card.evaluate(&best), Ok(80));
    let worst = schema.parse_row(&["D", "3", "1520.5", "是", "C", "吊销", "2020-01-01"]).expect("row");
    assert_eq!(card.evaluate(&worst), Ok(-120));
    let middling = schema.parse_row(&["M", "10", "0.01", "false", "A", "在业", "2021-12-31"]).expect("row");
    // headcount +20, arrears -20, public grade +20, status +10.
    assert_eq!(card.evaluate(&middling), Ok(30));
    assert_eq!(card.evaluate_mask(&middling), Ok(0b110110));
}

#[test]
fn a_schema_that_lacks_what_the_contract_names_is_refused() {
    let lookup = verified(LOOKUP);
    let cc = node("credit-center");
    let full = gov_credit_schema();
    let without_tax: Vec<(String, ColumnType)> =
        full.columns().iter().filter(|(c, _)| c != "tax_grade").cloned().collect();
    let schema = DatasetSchema::new("gov_credit", "credit_code", without_tax).expect("valid");
    assert_eq!(
        lookup.require_schema(&cc, &schema).expect_err("missing column"),
        ContractError::ColumnNotInSchema { dataset: "gov_credit".into(), column: "tax_grade".into() }
    );
    let schema = DatasetSchema::new("gov_credit", "uscc", full.columns().to_vec()).expect("valid");
    assert!(matches!(lookup.require_schema(&cc, &schema), Err(ContractError::KeyColumnMismatch { .. })));
    // A rule constant that does not fit the column's type: headcount as a decimal.
    let mut columns = full.columns().to_vec();
    columns[1].1 = ColumnType::Bool;
    let schema = DatasetSchema::new("gov_credit", "credit_code", columns).expect("valid");
    let err = lookup.require_schema(&cc, &schema).expect_err("10 is not a bool");
    assert!(
        matches!(
            err,
            ContractError::RuleNotApplicable { rule: 1, .. } | ContractError::BadRuleConstant { rule: 1, .. }
        ),
        "{err}"
    );
}

#[test]
fn secagg_schemas_need_a_numeric_value_and_parseable_groups() {
    let secagg = verified(SECAGG);
    let bank = node("bank-b");
    let districts = ColumnType::Enum {
        values: ["350203", "350205", "350206", "350211", "350212", "350213"].map(String::from).to_vec(),
    };
    let good = DatasetSchema::new(
        "loan_book",
        "credit_code",
        vec![("district".into(), districts), ("outstanding_yuan".into(), ColumnType::Decimal { scale: 2 })],
    )
    .expect("valid");
    secagg.require_schema(&bank, &good).expect("fits");
    let text_value = DatasetSchema::new(
        "loan_book",
        "credit_code",
        vec![("district".into(), ColumnType::Integer), ("outstanding_yuan".into(), ColumnType::Bool)],
    )
    .expect("valid");
    assert!(matches!(
        secagg.require_schema(&bank, &text_value),
        Err(ContractError::ColumnTypeNotAllowed { .. })
    ));
    let dates = DatasetSchema::new(
        "loan_book",
        "credit_code",
        vec![("district".into(), ColumnType::Date), ("outstanding_yuan".into(), ColumnType::Integer)],
    )
    .expect("valid");
    assert!(matches!(secagg.require_schema(&bank, &dates), Err(ContractError::BadGroup { .. })));
    assert_eq!(Value::Integer(1).to_string(), "1");
}
