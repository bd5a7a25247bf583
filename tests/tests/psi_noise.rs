//! PSI cardinality with noise added by the server (issue 10), between real node
//! processes: the count a bank gets stays within the declared clamp of the plaintext
//! count and the dummies cross the wire; the attacks a curious bank would try are
//! refused by the credit center (the node that would leak): asking for the exact count
//! without a noise anchor, a second run in the epoch (its fresh dummies would stand out
//! against the epoch's stable replies), a second noisy contract that would double its
//! ε, and an exact contract beside the noisy one.

mod common;

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use common::*;
use rand::rngs::OsRng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Status;
use xmcredit_contracts::Contract;
use xmcredit_crypto::count_noise::{count_noise_half, NoiseAnchor};
use xmcredit_crypto::{ContractId, Epoch, NodeId, SessionId};
use xmcredit_node::proto::Frame;
use xmcredit_node::service::peer_client;
use xmcredit_protocol::psi::{ClientConfig, ClientPolicy, PsiClient, PsiMessage, PsiOutputForm};
use xmcredit_protocol::SessionBinding;
use xmcredit_simulator::alliance::Alliance;
use xmcredit_simulator::contracts::{lookup, with_count_noise, LookupProvider};

/// ε = 1: a clamp of ±30, narrower than the 40 matches and 40 misses of the setup.
const EPSILON_MILLI: u32 = 1000;

/// A cardinality contract from the credit center's list to bank-a with count noise.
fn noisy_contract(alliance: &Alliance, id: &str, epsilon_milli: u32) -> Result<String> {
    let center = alliance.node("credit-center")?;
    let toml = psi_contract(id, center, alliance.node("bank-a")?, "cardinality", &[], 10, 5);
    let noisy = with_count_noise(&toml, epsilon_milli);
    assert!(noisy.contains("discrete_laplace"), "{noisy}");
    Ok(noisy)
}

/// The credit center with 300 government rows and bank-a with 80 applicants, 40 of
/// them on the list; returns the plaintext count too.
async fn setup(limits: &str) -> Result<(tempfile::TempDir, Alliance, u64)> {
    let dir = tempfile::Builder::new().prefix("xmcredit-psi-noise-").tempdir()?;
    let alliance =
        Alliance::create_with_limits(program(), dir.path(), &["credit-center", "bank-a"], true, limits)
            .await?;
    let listed = codes(31, 300);
    let on_list: BTreeSet<&String> = listed.iter().collect();
    let off_list = codes(32, 60).into_iter().filter(|c| !on_list.contains(c)).take(40);
    let applicants: Vec<String> = listed.iter().take(40).cloned().chain(off_list).collect();
    let exact = applicants.iter().filter(|c| on_list.contains(c)).count() as u64;
    let (center, bank) = (alliance.node("credit-center")?, alliance.node("bank-a")?);
    import_list_and_applicants(dir.path(), center, bank, &listed, &applicants).await?;
    Ok((dir, alliance, exact))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_count_is_within_its_clamp_and_a_second_run_in_the_epoch_is_refused() -> Result<()> {
    let (_dir, alliance, exact) = setup("").await?;
    assert_eq!(exact, 40);
    let id = "credit-center.psi-noisy";
    alliance.agree("credit-center", &noisy_contract(&alliance, id, EPSILON_MILLI)?, id, &["bank-a"]).await?;
    let half = u64::from(count_noise_half(EPSILON_MILLI)?);
    assert_eq!(half, 30);
    let bank = alliance.node("bank-a")?;
    let report = bank.run("psi", id).await?;
    let got = report["cardinality"].as_u64().context("a cardinality")?;
    assert!(got.abs_diff(exact) <= half, "{got} against {exact} ± {half}");
    assert!(report["intersection"].is_null(), "{report}");
    assert_eq!(report["noise"]["mechanism"], "discrete_laplace", "{report}");
    assert_eq!(report["noise"]["epsilon_milli"], EPSILON_MILLI, "{report}");
    assert_eq!(report["noise"]["dummies"].as_u64(), Some(2 * half), "{report}");
    assert_eq!(report["noise"]["bound"].as_u64(), Some(half), "{report}");
    // The dummies crossed the wire between the two processes: bank-a's job counted
    // n + 2·half evaluations for the n it blinded, and the HelloAck's dummies.
    let jobs = bank.status().await?.jobs;
    let job = jobs.iter().find(|j| j.contract_id == id && j.role == "client").context("a client job")?;
    let observed: serde_json::Value = serde_json::from_str(&job.observed_json)?;
    assert_eq!(observed["received"]["evaluated_elements"].as_u64(), Some(80 + 2 * half), "{observed}");
    assert_eq!(observed["received"]["noise_dummies"].as_u64(), Some(2 * half), "{observed}");
    assert_eq!(observed["sent"]["blinded_elements"].as_u64(), Some(80), "{observed}");
    // Attack: a second run in the epoch, whose fresh dummies would stand out against the
    // replies that repeat from the first.
    let refused = run_status(bank, "psi", id).await?.expect_err("one noisy run per epoch");
    assert_contains(
        refused.message(),
        &[
            "bank-a has had its noisy cardinality run of epoch",
            "under contract credit-center.psi-noisy",
            "one run per epoch",
        ],
    );
    Ok(())
}

/// Sends bank-a's Hello for a noisy session under contract `id` (text `toml`), its anchor
/// replaced by `anchor`, to the credit center; returns the refusal.
async fn hello_refusal(
    alliance: &Alliance,
    toml: &str,
    id: &str,
    anchor: Option<NoiseAnchor>,
) -> Result<Status> {
    let contract = Contract::from_toml_str(toml)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let binding = SessionBinding {
        contract: ContractId::new(id)?,
        epoch: Epoch((now - contract.not_before) / contract.epoch_seconds),
        session: SessionId::random(&mut OsRng),
    };
    let config = ClientConfig {
        binding,
        server: NodeId::new("credit-center")?,
        form: PsiOutputForm::Cardinality,
        chunk_size: 64,
        policy: ClientPolicy { min_server_set_size: 1, count_noise_epsilon_milli: Some(EPSILON_MILLI) },
    };
    let inputs = codes(31, 20).into_iter().map(String::into_bytes).collect();
    let (_, first) = PsiClient::start(config, inputs, &mut OsRng)?;
    let PsiMessage::Hello(mut hello) = PsiMessage::from_bytes(&first[0].bytes)? else { bail!("not a Hello") };
    hello.noise_anchor = anchor;
    let (tx, rx) = mpsc::channel(4);
    tx.send(Frame { payload: PsiMessage::Hello(hello).to_bytes() }).await?;
    let wire = channel(alliance.node("bank-a")?, alliance.node("credit-center")?).await?;
    Ok(match peer_client(wire).psi(ReceiverStream::new(rx)).await {
        Err(status) => status,
        Ok(replies) => match replies.into_inner().next().await {
            Some(Err(status)) => status,
            other => bail!("expected a refusal, got {other:?}"),
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_without_a_valid_noise_anchor_is_refused_by_the_server() -> Result<()> {
    let (_dir, alliance, _) = setup("").await?;
    let id = "credit-center.psi-noisy-anchor";
    let toml = noisy_contract(&alliance, id, EPSILON_MILLI)?;
    alliance.agree("credit-center", &toml, id, &["bank-a"]).await?;
    // Attack: bank-a leaves the anchor out, to get the exact count.
    let status = hello_refusal(&alliance, &toml, id, None).await?;
    assert_contains(status.message(), &["cardinality noise", "no noise anchor"]);
    // The refusal is on the credit center's log with its reason.
    wait_for_log(alliance.node("credit-center")?, "no noise anchor").await;
    // Attack: an anchor that is the identity (every dummy would unblind to it).
    let status = hello_refusal(&alliance, &toml, id, Some(NoiseAnchor([0; 32]))).await?;
    assert_contains(status.message(), &["noise anchor", "identity"]);
    // Neither cost bank-a its run: its honest run of the epoch is still answered.
    let report = alliance.node("bank-a")?.run("psi", id).await?;
    assert_eq!(report["noise"]["epsilon_milli"], EPSILON_MILLI, "{report}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_noisy_contract_over_the_epsilon_ceiling_is_refused_at_signing() -> Result<()> {
    // Daily epochs: 24 hours can hold two runs of each contract (either side of an
    // epoch boundary), so a contract at ε 0.6 costs 1,200 thousandths.
    let (_dir, alliance, _) = setup("dataset_epsilon_milli_per_day = 2000").await?;
    let first = "credit-center.psi-noisy-first";
    alliance.agree("credit-center", &noisy_contract(&alliance, first, 600)?, first, &["bank-a"]).await?;
    // Attack: a second noisy contract over the same list, for more runs a day.
    let second = noisy_contract(&alliance, "credit-center.psi-noisy-second", 500)?;
    let refused = err_text(alliance.node("credit-center")?.propose(&second).await);
    assert_contains(
        &refused,
        &[
            "spend ε 2200/1000 in 24 hours on dataset gov_list (this contract 1000",
            "already signed: credit-center.psi-noisy-first (1200)",
            "ceiling of 2000/1000 (limits.dataset_epsilon_milli_per_day)",
        ],
    );
    // One that fits is signed.
    let third = "credit-center.psi-noisy-third";
    alliance.agree("credit-center", &noisy_contract(&alliance, third, 400)?, third, &["bank-a"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_contract_beside_a_noisy_one_is_refused_at_signing() -> Result<()> {
    let (_dir, alliance, _) = setup("").await?;
    let center = alliance.node("credit-center")?;
    let exact = "credit-center.psi-exact";
    let exact_toml = psi_contract(exact, center, alliance.node("bank-a")?, "cardinality", &[], 10, 5);
    alliance.agree("credit-center", &exact_toml, exact, &["bank-a"]).await?;
    // Attack: the noisy count next to the exact one it was meant to replace.
    let noisy = noisy_contract(&alliance, "credit-center.psi-noisy-beside", 500)?;
    let refused = err_text(center.propose(&noisy).await);
    assert_contains(
        &refused,
        &[
            "contract credit-center.psi-noisy-beside adds noise to a count over dataset gov_list",
            "that contract credit-center.psi-exact gives the same bank exactly",
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_over_the_same_list_beside_a_noisy_count_is_refused_at_signing() -> Result<()> {
    let (_dir, alliance, _) = setup("").await?;
    let center = alliance.node("credit-center")?;
    // A rule that holds on every row: the total says which applicants are on the list.
    let id = "credit-center.lookup-on-the-list";
    let toml = lookup(
        id,
        "integration test: a lookup that answers membership",
        &[party(center, &["coordinator", "provider"]), party(alliance.node("bank-a")?, &["querier"])],
        &[LookupProvider {
            node: "credit-center",
            dataset: GOV_DATASET,
            columns: &["si_headcount"],
            rules: r#"[{ column = "si_headcount", comparison = "ge", constant = 0, points = 1 }]"#,
        }],
        &["bank-a"],
        "bitmask",
        8,
        1000,
    );
    alliance.agree("credit-center", &toml, id, &["bank-a"]).await?;
    // Attack: a noisy count over the list the lookup already answers exactly.
    let noisy = noisy_contract(&alliance, "credit-center.psi-noisy-after-lookup", 500)?;
    let refused = err_text(center.propose(&noisy).await);
    assert_contains(
        &refused,
        &[
            "contract credit-center.psi-noisy-after-lookup adds noise to a count over dataset gov_list",
            "that contract credit-center.lookup-on-the-list gives the same bank exactly",
        ],
    );
    Ok(())
}
