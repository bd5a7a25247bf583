//! The measured observation report (issue 10): per scenario and per node, what the node
//! counted it received, sent and wrote in the scenario's jobs (`observed`, read back
//! from the node's job records through `status`), what the contract grants it
//! (`granted`, derived from the contract's roles, output form and receivers), and
//! `privacy_ok` when nothing observed exceeds what is granted.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use xmcredit_contracts::{Computation, Contract, PsiOutput, Role};
use xmcredit_crypto::NodeId;
use xmcredit_node::proto;

use crate::alliance::Alliance;

/// What a contract lets one node receive (by class) and write (by output form).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Granted {
    pub receive: BTreeSet<String>,
    pub write: BTreeSet<String>,
}

/// The classes each role's protocol messages bring it (see `node::run::observed`).
fn classes(role: Role, contract: &Contract) -> &'static [&'static str] {
    let both = matches!(contract.computation, Computation::Psi { output: PsiOutput::Both, .. });
    let labels = matches!(contract.computation, Computation::Psi { output: PsiOutput::Labels, .. });
    let overthreshold = matches!(contract.computation, Computation::Overthreshold { .. });
    let noisy = matches!(contract.computation, Computation::Psi { noise: Some(_), .. });
    match role {
        // Overthreshold: a bank gets its blinded items evaluated by each committee
        // member and, from the coordinator, the multiplicity of its own tags held by t
        // or more banks; a member sees n and blinded items; the coordinator only tags.
        Role::Contributor if overthreshold => &["evaluated_elements", "multiplicities"],
        Role::Committee => &["blinded_elements", "set_sizes_announced"],
        Role::Coordinator if overthreshold => &["tags"],
        // The client gets its own elements evaluated and the server's tags (and, in
        // the labels form, their encrypted labels); the HelloAck announces m.
        Role::Client if labels => &["evaluated_elements", "tags", "encrypted_labels", "set_sizes_announced"],
        // With count noise the server adds dummy replies (and says how many): evaluations
        // of points it chose, not of anyone's elements.
        Role::Client if noisy => &["evaluated_elements", "tags", "set_sizes_announced", "noise_dummies"],
        Role::Client => &["evaluated_elements", "tags", "set_sizes_announced"],
        // The server gets blinded elements and n; in the both form the client's match tags.
        Role::Server if both => &["blinded_elements", "set_sizes_announced", "tags"],
        Role::Server => &["blinded_elements", "set_sizes_announced"],
        // SecAgg: the coordinator relays sealed shares it cannot open, collects masked
        // vectors and revealed shares, and reconstructs the one sum.
        Role::Coordinator => {
            &["public_keys", "sealed_shares", "masked_vectors", "revealed_shares", "unmasked_outputs"]
        }
        // A contributor sees the others' public keys and the pairs sealed to it. A lookup
        // provider is also a SecAgg contributor, and answers queriers' blinded elements.
        Role::Contributor => &["public_keys", "sealed_shares"],
        Role::Provider => &["public_keys", "sealed_shares", "blinded_elements", "set_sizes_announced"],
        // A querier downloads the padded vector and gets its own elements evaluated.
        Role::Querier => &["padded_entries", "evaluated_elements"],
    }
}

/// What `node` is granted under `contract`: the union over its roles, and the output
/// form the contract's receivers give it.
pub fn granted(contract: &Contract, node: &NodeId) -> Granted {
    let mut granted = Granted::default();
    if let Some(party) = contract.party(node) {
        for role in &party.roles {
            granted.receive.extend(classes(*role, contract).iter().map(|c| c.to_string()));
        }
    }
    if let Some(receiver) = contract.receiver(node) {
        if let Ok(Value::String(form)) = serde_json::to_value(receiver.form) {
            granted.write.insert(form);
        }
    }
    granted
}

/// The counts of several jobs added up: `{"received": {...}, "sent": {...}, "written": {...}}`.
pub fn add_observed(total: &mut Value, job: &Value) {
    for side in ["received", "sent", "written"] {
        let Some(counts) = job[side].as_object() else { continue };
        let into = &mut total[side];
        if !into.is_object() {
            *into = Value::Object(Default::default());
        }
        for (class, n) in counts {
            let sum = into[class].as_u64().unwrap_or(0) + n.as_u64().unwrap_or(0);
            into[class] = Value::from(sum);
        }
    }
}

/// What exceeds the grant: a class received that is not granted, an output written that
/// is not, or more evaluations back than elements blinded, beyond the dummies of a
/// noisy cardinality (evaluations of someone else's elements). Empty when the node
/// stayed within its contract.
pub fn violations(observed: &Value, granted: &Granted) -> Vec<String> {
    let mut out = Vec::new();
    let count = |side: &str, class: &str| observed[side][class].as_u64().unwrap_or(0);
    if let Some(received) = observed["received"].as_object() {
        for (class, n) in received {
            if n.as_u64().unwrap_or(0) > 0 && !granted.receive.contains(class) {
                out.push(format!("received {n} {class}, which the contract does not grant"));
            }
        }
    }
    if let Some(written) = observed["written"].as_object() {
        for (form, n) in written {
            if !granted.write.contains(form) {
                out.push(format!("wrote {n} entries of {form}, which the contract does not grant"));
            }
        }
    }
    let (evaluated, blinded) = (count("received", "evaluated_elements"), count("sent", "blinded_elements"));
    let dummies = count("received", "noise_dummies");
    if evaluated > blinded + dummies {
        out.push(if dummies == 0 {
            format!("received {evaluated} evaluations for {blinded} elements it blinded")
        } else {
            format!(
                "received {evaluated} evaluations for {blinded} elements it blinded and {dummies} dummies"
            )
        });
    }
    out
}

/// Every node's job records (all of them) with their observations, by contract.
async fn jobs_by_contract(alliance: &Alliance) -> Result<BTreeMap<String, Vec<(String, Value)>>> {
    let mut by_contract: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for node in &alliance.nodes {
        let status = node
            .admin()
            .await?
            .status(proto::StatusRequest { jobs_limit: u32::MAX })
            .await
            .with_context(|| format!("status of {}", node.id))?
            .into_inner();
        for job in status.jobs {
            if job.observed_json.is_empty() {
                continue;
            }
            let observed: Value = serde_json::from_str(&job.observed_json)?;
            by_contract.entry(job.contract_id).or_default().push((node.id.to_string(), observed));
        }
    }
    Ok(by_contract)
}

/// The contract document a node holds.
async fn contract_of(alliance: &Alliance, node: &str, id: &str) -> Result<Contract> {
    let view = alliance
        .node(node)?
        .admin()
        .await?
        .show_contract(proto::ContractQuery { contract_id: id.to_string() })
        .await
        .with_context(|| format!("contract {id} on {node}"))?
        .into_inner();
    Ok(Contract::from_json_str(&view.document_json)?)
}

/// Every job's observations and the contracts they ran under, read from the nodes.
#[derive(Debug, Default)]
pub struct Collected {
    jobs: BTreeMap<String, Vec<(String, Value)>>,
    contracts: BTreeMap<String, Contract>,
}

/// Reads every node's job records and the contracts they name. Call it while every node
/// still runs (before faults that stop or revoke nodes).
pub async fn collect(alliance: &Alliance) -> Result<Collected> {
    let jobs = jobs_by_contract(alliance).await?;
    let mut contracts = BTreeMap::new();
    for (id, runs) in &jobs {
        if let Some((holder, _)) = runs.first() {
            contracts.insert(id.clone(), contract_of(alliance, holder, id).await?);
        }
    }
    Ok(Collected { jobs, contracts })
}

/// One scenario's observations: per node `observed`, `granted`, `privacy_ok`,
/// `violations`; and whether every node stayed within its grant.
pub fn scenario(collected: &Collected, contract_id: &str) -> Result<(Value, bool)> {
    let contract = collected
        .contracts
        .get(contract_id)
        .with_context(|| format!("no job recorded an observation under {contract_id}"))?;
    let mut per_node: BTreeMap<String, Value> = BTreeMap::new();
    for (node, observed) in collected.jobs.get(contract_id).into_iter().flatten() {
        add_observed(per_node.entry(node.clone()).or_insert_with(|| serde_json::json!({})), observed);
    }
    let mut observations = serde_json::Map::new();
    let mut ok = true;
    for (node, observed) in per_node {
        let granted = granted(contract, &NodeId::new(&node)?);
        let violations = violations(&observed, &granted);
        ok &= violations.is_empty();
        observations.insert(
            node,
            serde_json::json!({
                "observed": observed,
                "granted": granted,
                "privacy_ok": violations.is_empty(),
                "violations": violations,
            }),
        );
    }
    Ok((Value::Object(observations), ok))
}

/// Adds `observations` and `privacy_ok` to every scenario row that names its contract;
/// returns whether every node of every such scenario stayed within its grant.
pub fn annotate(collected: &Collected, rows: &mut [Value]) -> Result<bool> {
    let mut all_ok = true;
    for row in rows.iter_mut() {
        let Some(id) = row["contract"].as_str().map(str::to_string) else { continue };
        let (observations, ok) = match scenario(collected, &id) {
            Ok(found) => found,
            // A scenario whose runs were all refused before any job started (a re-run
            // refused at session open) observed nothing.
            Err(_) => (serde_json::json!({}), true),
        };
        all_ok &= ok;
        row["observations"] = observations;
        row["privacy_ok"] = Value::from(ok);
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Contract {
        let path = format!("{}/../contracts/samples/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        Contract::from_toml_str(&std::fs::read_to_string(path).expect("sample")).expect("valid sample")
    }

    fn node(id: &str) -> NodeId {
        NodeId::new(id).expect("node id")
    }

    /// What an honest intersection client records (the numbers of a demo run).
    fn honest_client() -> Value {
        serde_json::json!({
            "received": { "evaluated_elements": 2000, "tags": 2997, "set_sizes_announced": 1 },
            "sent": { "blinded_elements": 2000, "set_sizes_announced": 1 },
            "written": { "intersection": 275 },
        })
    }

    #[test]
    fn an_honest_psi_client_is_within_its_grant() {
        let contract = sample("psi-a-grade-taxpayers");
        let granted = granted(&contract, &node("bank-a"));
        assert!(granted.write.contains("intersection"));
        assert_eq!(violations(&honest_client(), &granted), Vec::<String>::new());
    }

    #[test]
    fn a_client_observing_labels_its_contract_does_not_grant_is_flagged() {
        // The over-permissive case: the server attached encrypted labels under an
        // intersection contract, and the client wrote them out.
        let contract = sample("psi-a-grade-taxpayers");
        let mut observed = honest_client();
        observed["received"]["encrypted_labels"] = Value::from(2997);
        observed["written"]["labels"] = Value::from(275);
        let found = violations(&observed, &granted(&contract, &node("bank-a")));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("encrypted_labels") && found[1].contains("labels"), "{found:?}");
    }

    #[test]
    fn a_server_that_learns_matches_outside_the_both_form_is_flagged() {
        // The intersection form grants the server n only; match tags reaching it (a
        // client reporting matches, as in the both form) exceed that.
        let contract = sample("psi-a-grade-taxpayers");
        let observed = serde_json::json!({
            "received": { "blinded_elements": 2000, "set_sizes_announced": 1, "tags": 275 },
            "sent": { "evaluated_elements": 2000, "tags": 2997 },
            "written": { "intersection": 275 },
        });
        let found = violations(&observed, &granted(&contract, &node("credit-center")));
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn evaluations_beyond_the_elements_blinded_are_flagged() {
        let contract = sample("psi-a-grade-taxpayers");
        let mut observed = honest_client();
        observed["received"]["evaluated_elements"] = Value::from(4000);
        let found = violations(&observed, &granted(&contract, &node("bank-a")));
        assert!(found.iter().any(|v| v.contains("4000 evaluations for 2000")), "{found:?}");
    }

    #[test]
    fn a_noisy_cardinality_client_may_receive_the_dummies_and_no_more() {
        let text = std::fs::read_to_string(format!(
            "{}/../contracts/samples/psi-a-grade-taxpayers.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("sample");
        let noisy = text
            .replace(
                "output = \"intersection\"",
                "output = \"cardinality\"\nnoise = { mechanism = \"discrete_laplace\", epsilon_milli = 500 }",
            )
            .replace("form = \"intersection\"", "form = \"cardinality\"");
        let contract = Contract::from_toml_str(&noisy).expect("valid");
        let granted = granted(&contract, &node("bank-a"));
        let mut observed = serde_json::json!({
            "received": { "evaluated_elements": 2120, "tags": 3117, "set_sizes_announced": 1, "noise_dummies": 120 },
            "sent": { "blinded_elements": 2000, "set_sizes_announced": 1 },
            "written": { "cardinality": 1 },
        });
        assert_eq!(violations(&observed, &granted), Vec::<String>::new());
        // Evaluations beyond the dummies, and dummies under a contract without noise.
        observed["received"]["evaluated_elements"] = Value::from(2121);
        let found = violations(&observed, &granted);
        assert!(
            found.iter().any(|v| v.contains("2121 evaluations for 2000 elements it blinded and 120 dummies")),
            "{found:?}"
        );
        let exact = super::granted(&sample("psi-a-grade-taxpayers"), &node("bank-a"));
        assert!(violations(&observed, &exact).iter().any(|v| v.contains("noise_dummies")));
    }

    #[test]
    fn a_secagg_contributor_is_granted_no_vector_and_no_sum() {
        let contract = sample("secagg-loans-by-district");
        let granted = granted(&contract, &node("bank-a"));
        assert!(granted.write.is_empty());
        let observed = serde_json::json!({
            "received": { "public_keys": 3, "sealed_shares": 2, "masked_vectors": 1, "unmasked_outputs": 1 },
            "written": { "sum": 6 },
        });
        assert_eq!(violations(&observed, &granted).len(), 3);
        let coordinator = super::granted(&contract, &node("credit-center"));
        assert!(coordinator.write.contains("sum") && coordinator.receive.contains("masked_vectors"));
    }

    #[test]
    fn the_scenario_row_says_privacy_ok_false_when_a_node_exceeds_its_grant() {
        let id = "credit-center.xel-2026-psi-a-grade";
        let contract = sample("psi-a-grade-taxpayers");
        let mut leaky = honest_client();
        leaky["received"]["encrypted_labels"] = Value::from(10);
        let server = serde_json::json!({
            "received": { "blinded_elements": 2000, "set_sizes_announced": 1 },
            "sent": { "evaluated_elements": 2000, "tags": 2997, "encrypted_labels": 10 },
        });
        let collected = Collected {
            jobs: BTreeMap::from([(
                id.to_string(),
                vec![("bank-a".into(), leaky), ("credit-center".into(), server)],
            )]),
            contracts: BTreeMap::from([(id.to_string(), contract)]),
        };
        let mut rows = vec![serde_json::json!({ "name": "leaky", "contract": id })];
        assert!(!annotate(&collected, &mut rows).expect("test value"));
        assert_eq!(rows[0]["privacy_ok"], false);
        assert_eq!(rows[0]["observations"]["bank-a"]["privacy_ok"], false);
        // Sending labels is not observing them: the server stays within its grant.
        assert_eq!(rows[0]["observations"]["credit-center"]["privacy_ok"], true);
    }

    #[test]
    fn counts_of_several_jobs_add_up() {
        let mut total = serde_json::json!({});
        add_observed(&mut total, &honest_client());
        add_observed(&mut total, &honest_client());
        assert_eq!(total["received"]["tags"], 5994);
        assert_eq!(total["written"]["intersection"], 550);
    }
}
