//! Trust that does not rest on the alliance CA (issue 9), tried as an attacker would,
//! against real node processes over real mutual TLS:
//!
//! - `ca-minted-certificate`: the CA holder mints a second certificate for bank-a;
//! - `revoked-open-connection`: a peer revoked while its connection is open;
//! - `audit-rewritten` / `audit-truncated`: someone with the store files rewrites the
//!   audit chain (re-hashing every later record) or cuts it short;
//! - probing: contract ids and Health reveal nothing to a non-party;
//! - a data directory others can read is refused by `serve`.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use xmcredit_node::config::NodeConfig;
use xmcredit_node::proto;
use xmcredit_node::service::{admin_client, peer_client};
use xmcredit_simulator::alliance::NodeHandle;
use xmcredit_simulator::trust_faults::{cut_last_two, mint_certificate, rewrite_record_one, tamper};

async fn minted_channel(minted: &NodeConfig, to: &NodeHandle) -> Result<tonic::transport::Channel> {
    let auth = xmcredit_node::server::client_auth(minted)?;
    xmcredit_node::transport::connect(&to.address, &to.id, auth, CONNECT_TIMEOUT)
        .await
        .with_context(|| format!("the minted certificate should still get a TLS connection to {}", to.id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_minted_certificate_can_neither_sign_run_nor_pose() -> Result<()> {
    let (dir, alliance) = alliance(&["credit-center", "bank-a", "bank-b"], true).await?;
    let center = alliance.node("credit-center")?;
    let bank_a = alliance.node("bank-a")?;
    let bank_b = alliance.node("bank-b")?;
    import_ok(center, GOV_DATASET, &write_gov(dir.path(), GOV_DATASET, &gov_rows(&codes(1, 200)))?).await?;
    import_ok(bank_a, "loan_applicants", &write_applicants(dir.path(), "apps", &codes(1, 60))?).await?;
    let id = "credit-center.trust-minted";
    let toml = psi_contract(id, center, bank_a, "both", &[], 10, 5);
    alliance.agree("credit-center", &toml, id, &["bank-a"]).await?;

    let minted = mint_certificate(&program(), &alliance, center, "bank-a")?;
    let real_key = bank_a.public_key.clone();
    let mismatch = |message: &str| {
        message.contains("bank-a proved identity key")
            && message.contains(&real_key)
            && message.contains("refused")
    };

    // Pose as bank-a to the credit center: the connection opens, every call is refused.
    let mut to_center = peer_client(minted_channel(&minted, center).await?);
    let health = to_center.health(proto::HealthRequest {}).await.expect_err("health refused");
    assert_eq!(health.code(), tonic::Code::PermissionDenied);
    assert!(mismatch(health.message()), "{}", health.message());
    let fetch = to_center
        .fetch_contract(proto::ContractQuery { contract_id: id.into() })
        .await
        .expect_err("the contract is not handed to the minted certificate");
    assert!(mismatch(fetch.message()), "{}", fetch.message());
    let psi = to_center
        .psi(tokio_stream::iter(vec![proto::Frame { payload: vec![1, 0x81] }]))
        .await
        .expect_err("a PSI session is refused");
    assert_eq!(psi.code(), tonic::Code::PermissionDenied, "{psi:?}");

    // Pose as bank-a to another bank.
    let mut to_bank_b = peer_client(minted_channel(&minted, bank_b).await?);
    let health = to_bank_b.health(proto::HealthRequest {}).await.expect_err("health refused");
    assert!(mismatch(health.message()), "{}", health.message());

    // Sign for or run on bank-a: the Admin service is not on bank-a's network listener.
    let mut admin = admin_client(minted_channel(&minted, bank_a).await?);
    let sign =
        admin.sign_contract(proto::ContractQuery { contract_id: id.into() }).await.expect_err("no admin");
    assert_eq!(sign.code(), tonic::Code::Unimplemented);
    let run = admin
        .run(proto::RunRequest {
            computation: "psi".into(),
            contract_id: id.into(),
            dataset: String::new(),
            values: Vec::new(),
        })
        .await
        .expect_err("no admin");
    assert_eq!(run.code(), tonic::Code::Unimplemented);

    // The refusals are audited at the credit center, and the real bank-a is unaffected.
    let log = wait_for_log(center, "proved identity key").await;
    assert!(log.contains("refused"), "{log}");
    bank_a.run("psi", id).await.context("the real bank-a still runs")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_peers_open_connection_is_closed_within_one_crl_period() -> Result<()> {
    let (_dir, alliance) = alliance(&["credit-center", "bank-a", "bank-b"], true).await?;
    let center = alliance.node("credit-center")?;
    let bank_a = alliance.node("bank-a")?;
    let bank_b = alliance.node("bank-b")?;
    // bank-a holds a connection open to the credit center and to bank-b.
    let mut to_center = peer_client(channel(bank_a, center).await?);
    let mut to_bank_b = peer_client(channel(bank_a, bank_b).await?);
    to_center.health(proto::HealthRequest {}).await?;
    to_bank_b.health(proto::HealthRequest {}).await?;

    let ca_dir = center.dir.display().to_string();
    program().run(
        &["ca", "revoke", "--data-dir", &ca_dir, "--node-id", "bank-a"],
        &center.dir.join("revoke.log"),
    )?;
    let revoked_at = Instant::now();

    // Within one CRL period (2 s in the simulator's configuration, plus slack), both
    // nodes close the open connection; bank-b learnt the CRL over gRPC from the CA node.
    let mut closed = (false, false);
    while revoked_at.elapsed() < Duration::from_secs(8) && !(closed.0 && closed.1) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        closed.0 |= to_center.health(proto::HealthRequest {}).await.is_err();
        closed.1 |= to_bank_b.health(proto::HealthRequest {}).await.is_err();
    }
    assert_eq!(closed, (true, true), "open connections of the revoked bank-a are closed");
    assert_eq!(std::fs::read(bank_b.dir.join("crl.der"))?, std::fs::read(center.dir.join("crl.der"))?);
    wait_for_log(center, "closed a live connection").await;
    wait_for_log(bank_b, "installed a newer CRL from the CA").await;
    // A new connection is refused at the handshake.
    let again = connect_as(&bank_a.config, &center.address, "credit-center").await?;
    assert!(again.is_err(), "a revoked certificate cannot reconnect");
    // The others still talk.
    peer_client(channel(bank_b, center).await?).health(proto::HealthRequest {}).await?;
    Ok(())
}

/// An alliance whose bank-a has a few audit records, then `edit` applied to bank-a's
/// stored chain (node stopped, as someone with the store files would): what plain and
/// witnessed verification say afterwards.
async fn tampered_chain(
    edit: impl FnOnce(&sled::Tree, &[xmcredit_contracts::audit::AuditRecord]) -> Result<()>,
) -> Result<(proto::AuditVerifyReply, proto::AuditVerifyReply)> {
    let (dir, mut alliance) = alliance(&["credit-center", "bank-a", "bank-b"], true).await?;
    for i in 0..4u64 {
        let files = write_applicants(dir.path(), &format!("apps{i}"), &codes(i, 20))?;
        import_ok(alliance.node("bank-a")?, "loan_applicants", &files).await?;
    }
    tamper(&mut alliance, "bank-a", edit).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_audit_chain_is_caught_by_witnesses() -> Result<()> {
    // audit-rewritten: record 1 edited and every later record re-hashed.
    let (plain, witnessed) = tampered_chain(rewrite_record_one).await?;
    assert!(plain.ok, "a fully re-hashed chain passes the local check: {}", plain.detail);
    assert!(!witnessed.ok, "{witnessed:?}");
    assert_contains(&witnessed.detail, &["disagrees with the head", "a record at or before it was changed"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_audit_chain_is_caught_by_witnesses() -> Result<()> {
    // audit-truncated: the last two records cut.
    let (plain, witnessed) = tampered_chain(cut_last_two).await?;
    assert!(plain.ok, "a cut chain passes the local check: {}", plain.detail);
    assert!(!witnessed.ok, "{witnessed:?}");
    assert!(
        witnessed.detail.contains("cut short") || witnessed.detail.contains("disagrees with the head"),
        "{}",
        witnessed.detail
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_reveals_nothing_to_a_non_party() -> Result<()> {
    let (_dir, alliance) = alliance(&["credit-center", "bank-a", "bank-b"], true).await?;
    let center = alliance.node("credit-center")?;
    let bank_a = alliance.node("bank-a")?;
    let bank_b = alliance.node("bank-b")?;
    let id = "bank-a.trust-private";
    bank_a.propose(&psi_contract(id, center, bank_a, "intersection", &[], 10, 5)).await?;
    let mut client = peer_client(channel(bank_b, center).await?);
    let someone_elses = client
        .fetch_contract(proto::ContractQuery { contract_id: id.into() })
        .await
        .expect_err("not a party");
    let unknown = client
        .fetch_contract(proto::ContractQuery { contract_id: "bank-a.trust-nonexistent".into() })
        .await
        .expect_err("unknown");
    assert_eq!(someone_elses.code(), unknown.code());
    assert_eq!(
        someone_elses.message().replace(id, "X"),
        unknown.message().replace("bank-a.trust-nonexistent", "X"),
        "the same answer for someone else's contract and for none"
    );
    // An oversized id is cut before it reaches the audit log.
    let huge = "x".repeat(100_000);
    let _ = client.fetch_contract(proto::ContractQuery { contract_id: huge }).await;
    for record in audit_records(center).await? {
        assert!(
            record.to_string().len() < 4096,
            "an audit record stays small: {} bytes",
            record.to_string().len()
        );
    }
    Ok(())
}

#[test]
fn serve_refuses_a_data_directory_others_can_read() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::Builder::new().prefix("xmcredit-perm-").tempdir()?;
    let dir = base.path().join("bank-a");
    std::fs::create_dir_all(&dir)?;
    let d = dir.display().to_string();
    program().run(
        &["init", "--data-dir", &d, "--node-id", "bank-a", "--listen", "127.0.0.1:9"],
        &base.path().join("init.log"),
    )?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let out = program().command()?.args(["serve", "--config", &format!("{d}/node.toml")]).output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_contains(&stderr, &["has mode 0755", &format!("chmod 700 {d}")]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squatted_contract_id_does_not_block_the_real_contract() -> Result<()> {
    let (dir, alliance) = alliance(&["credit-center", "bank-a", "bank-b"], false).await?;
    let center = alliance.node("credit-center")?;
    let bank_a = alliance.node("bank-a")?;
    let bank_b = alliance.node("bank-b")?;
    let real = "credit-center.xel-psi-squat";

    // Attack 1: bank-b proposes, through its own node, an id in the credit center's scope.
    let squat = psi_contract(real, center, bank_b, "intersection", &[], 10, 5);
    let refused = err_text(bank_b.propose(&squat).await);
    assert_contains(&refused, &["not in this node's scope", "bank-b."]);

    // Attack 2: bank-b bypasses its node and sends the squatting copy, signed by itself,
    // straight to the credit center.
    let document = xmcredit_contracts::Contract::from_toml_str(&squat)?;
    let mut signed = xmcredit_contracts::SignedContract::new(&document)?;
    let secrets = xmcredit_node::identity::NodeSecrets::load(&bank_b.dir)?;
    signed.sign(&bank_b.id, &secrets.identity)?;
    let signature = signed.signatures().iter().find(|(n, _)| *n == bank_b.id).map(|(_, s)| s.0.to_vec());
    let direct = peer_client(channel(bank_b, center).await?)
        .propose_contract(proto::SignedContractMsg {
            canonical: signed.canonical_bytes().to_vec(),
            signatures: vec![proto::PartySignature {
                node_id: "bank-b".into(),
                signature: signature.unwrap_or_default(),
            }],
            revocations_json: Vec::new(),
        })
        .await
        .expect_err("a copy without the scope owner's signature is refused");
    assert_contains(direct.message(), &["in credit-center's scope", "carries no signature of credit-center"]);

    // bank-b's own id in its own scope is fine, and does not collide.
    bank_b.propose(&psi_contract("bank-b.xel-psi-squat", center, bank_b, "intersection", &[], 10, 5)).await?;

    // The real contract goes through and runs.
    import_ok(center, GOV_DATASET, &write_gov(dir.path(), GOV_DATASET, &gov_rows(&codes(5, 100)))?).await?;
    import_ok(bank_a, "loan_applicants", &write_applicants(dir.path(), "apps", &codes(5, 40))?).await?;
    alliance
        .agree(
            "credit-center",
            &psi_contract(real, center, bank_a, "intersection", &[], 10, 5),
            real,
            &["bank-a"],
        )
        .await?;
    bank_a.run("psi", real).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_cannot_re_key_a_party_the_node_knows() -> Result<()> {
    // Attack: a proposer names bank-a with a key of its choosing, so that contract
    // traffic for bank-a would go to whoever holds that key.
    let (_dir, alliance) = alliance(&["credit-center", "bank-a"], true).await?;
    let center = alliance.node("credit-center")?;
    let bank_a = alliance.node("bank-a")?;
    let toml = psi_contract("credit-center.trust-rekey", center, bank_a, "intersection", &[], 10, 5);
    let other_key =
        hex::encode(xmcredit_crypto::sign::IdentityKey::from_seed(&[9; 32])?.public_key().to_bytes());
    let rekeyed = toml.replace(&bank_a.public_key, &other_key);
    assert_ne!(rekeyed, toml);
    let refused = err_text(center.propose(&rekeyed).await);
    assert_contains(&refused, &["names identity key", "for bank-a", "this node's configuration says"]);
    Ok(())
}
