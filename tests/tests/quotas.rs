//! Quotas that cannot be multiplied (issue 10), tried as a curious bank would with real
//! node processes: a second contract over the same government dataset must not give
//! it more lookups a day, and the credit center refuses to sign one that would.

mod common;

use anyhow::Result;
use common::*;
use xmcredit_simulator::alliance::Alliance;
use xmcredit_simulator::contracts::PSI_DAILY_QUOTA;

/// A PSI contract from the credit center's government list to bank-a with `quota`.
fn contract(alliance: &Alliance, id: &str, quota: u64) -> Result<String> {
    let toml = psi_contract(
        id,
        alliance.node("credit-center")?,
        alliance.node("bank-a")?,
        "cardinality",
        &[],
        10,
        5,
    );
    let quota_line = format!("bank-a = {PSI_DAILY_QUOTA} }}");
    assert!(toml.contains(&quota_line), "{toml}");
    Ok(toml.replace(&quota_line, &format!("bank-a = {quota} }}")))
}

async fn setup(ceiling: u64) -> Result<(tempfile::TempDir, Alliance)> {
    let dir = tempfile::Builder::new().prefix("xmcredit-quota-").tempdir()?;
    let alliance = Alliance::create_with_limits(
        program(),
        dir.path(),
        &["credit-center", "bank-a"],
        true,
        &format!("dataset_lookups_per_day = {ceiling}"),
    )
    .await?;
    let center = alliance.node("credit-center")?;
    import_ok(center, GOV_DATASET, &write_gov(dir.path(), GOV_DATASET, &gov_rows(&codes(7, 300)))?).await?;
    Ok((dir, alliance))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_over_the_ceiling_is_refused_at_signing() -> Result<()> {
    let (_dir, alliance) = setup(150).await?;
    let first = "credit-center.quota-first";
    alliance.agree("credit-center", &contract(&alliance, first, 100)?, first, &["bank-a"]).await?;
    // Attack: a second contract over the same dataset, to double bank-a's lookups.
    let second = contract(&alliance, "credit-center.quota-second", 100)?;
    let refused = err_text(alliance.node("credit-center")?.propose(&second).await);
    assert_contains(
        &refused,
        &[
            "would let bank-a have 200 lookups a day over dataset gov_list",
            "already signed: credit-center.quota-first (100)",
            "ceiling of 150 (limits.dataset_lookups_per_day)",
        ],
    );
    // One that fits under the ceiling is signed.
    let third = "credit-center.quota-third";
    alliance.agree("credit-center", &contract(&alliance, third, 50)?, third, &["bank-a"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_counted_per_dataset_across_contracts() -> Result<()> {
    let (dir, mut alliance) = setup(150).await?;
    let (a, b) = ("credit-center.quota-a", "credit-center.quota-b");
    alliance.agree("credit-center", &contract(&alliance, a, 100)?, a, &["bank-a"]).await?;
    alliance.agree("credit-center", &contract(&alliance, b, 50)?, b, &["bank-a"]).await?;
    // The credit center's operator lowers the ceiling below what it signed; the
    // running count across both contracts is what holds the line.
    let center = alliance.node_mut("credit-center")?;
    center.stop()?;
    let text = std::fs::read_to_string(&center.config)?;
    std::fs::write(
        &center.config,
        text.replace("dataset_lookups_per_day = 150", "dataset_lookups_per_day = 100"),
    )?;
    center.start().await?;

    let bank = alliance.node("bank-a")?;
    import_ok(bank, "loan_applicants", &write_applicants(dir.path(), "apps80", &codes(7, 80))?).await?;
    bank.run("psi", a).await?; // 80 of contract a's 100, 80 of the dataset's 100
    import_ok(bank, "loan_applicants", &write_applicants(dir.path(), "apps40", &codes(8, 40))?).await?;
    let refused = run_status(bank, "psi", b).await?.expect_err("over the dataset ceiling");
    assert_contains(
        refused.message(),
        &["bank-a has made 80 lookups today over dataset gov_list, across all contracts, and asks for 40 more", "allows 100 a day"],
    );
    // Nothing was spent by the refusal: 20 more still fit under contract b.
    import_ok(bank, "loan_applicants", &write_applicants(dir.path(), "apps20", &codes(9, 20))?).await?;
    bank.run("psi", b).await?;
    Ok(())
}
