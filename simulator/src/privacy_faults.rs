//! Faults against the privacy limits (issue 10), with stable ids in the report:
//!
//! - `secagg-differencing`: the coordinator runs a per-district SecAgg contract in one
//!   epoch with every bank and in the next without the first bank, to subtract the two
//!   sums. Under `survivors = "all"` the second run must abort and unmask nothing.
//!
//! It moves every node's clock a day on (the contract's next epoch), so the demo runs
//! it after the scenarios.

use anyhow::Result;
use xmcredit_contracts::entity_code::XIAMEN_DISTRICTS;

use crate::alliance::Alliance;
use crate::contracts::PartyLine;
use crate::faults::FaultResult;
use crate::secagg_scenarios::{SecaggContract, LOANS_DATASET};

/// The guarded contract's id.
pub const DIFFERENCING: &str = "credit-center.pro-secagg-loans-by-district-guarded";

/// `secagg-differencing`, over the banks' loan books the SecAgg scenarios imported.
pub async fn secagg_differencing(alliance: &mut Alliance, banks: &[String]) -> Result<FaultResult> {
    let districts: Vec<String> = XIAMEN_DISTRICTS.iter().map(|(d, _)| d.to_string()).collect();
    let toml = {
        let party = |id: &str, roles: &'static [&'static str]| -> Result<PartyLine<'_>> {
            let node = alliance.node(id)?;
            Ok(PartyLine { node: node.id.as_str(), public_key: &node.public_key, roles })
        };
        let contract = SecaggContract {
            id: DIFFERENCING,
            purpose: "普惠金融: outstanding loans per district, only ever over every bank",
            coordinator: party("credit-center", &["coordinator"])?,
            contributors: banks.iter().map(|b| party(b, &["contributor"])).collect::<Result<_>>()?,
            threshold: 2,
            min_contributors: 2,
            dataset: LOANS_DATASET,
            value_column: "outstanding",
            group_column: "district",
            groups: districts,
            output_bits: 48,
        };
        contract.toml().replace(
            "[computation]\nkind = \"secagg\"\n",
            "[computation]\nkind = \"secagg\"\nsurvivors = \"all\"\n",
        )
    };
    let signers: Vec<&str> = banks.iter().map(String::as_str).collect();
    alliance.agree("credit-center", &toml, DIFFERENCING, &signers).await?;
    let first = alliance.node("credit-center")?.run("secagg", DIFFERENCING).await;

    // The next epoch, without the first bank.
    let absent = banks.first().cloned().unwrap_or_default();
    alliance.node_mut(&absent)?.stop()?;
    let others: Vec<String> =
        alliance.nodes.iter().map(|n| n.id.to_string()).filter(|id| *id != absent).collect();
    for id in &others {
        let node = alliance.node_mut(id)?;
        node.stop()?;
        node.set_env("XMCREDIT_TIME_OFFSET_SECS", "86400");
        node.start().await?;
    }
    let second = alliance.node("credit-center")?.run("secagg", DIFFERENCING).await;
    // Back in the alliance, on the same clock as the others.
    let node = alliance.node_mut(&absent)?;
    node.set_env("XMCREDIT_TIME_OFFSET_SECS", "86400");
    node.start().await?;

    let passed = first.is_ok() && second.as_ref().err().is_some_and(|e| format!("{e:#}").contains("aborted"));
    Ok(FaultResult {
        id: "secagg-differencing".into(),
        name: format!("the coordinator re-runs a contract a day later without {absent}, to subtract"),
        expected: "epoch 0 sums every bank; epoch 1 without one bank aborts and unmasks nothing (survivors = \"all\", enforced by every contributor)".into(),
        observed: format!(
            "epoch 0: {}; epoch 1 without {absent}: {}",
            if first.is_ok() { "sum of every bank".to_string() } else { format!("FAILED {:?}", first.err()) },
            match &second {
                Ok(_) => "A SUM WAS OUTPUT".to_string(),
                Err(e) => format!("{e:#}"),
            }
        ),
        passed,
    })
}
