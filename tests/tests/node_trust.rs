//! Who a node talks to (issue 4): alliance members exchange and sign contracts and see
//! each other; a certificate from another CA, a revoked certificate, a certificate for
//! another name, a node missing from the configuration and an admin call from a peer's
//! certificate are each refused, for their own stated reason.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use common::*;
use xmcredit_contracts::{Contract, SignedContract};
use xmcredit_crypto::sign::Signature;
use xmcredit_crypto::NodeId;
use xmcredit_node::pki::{AllianceCa, NodeKey};
use xmcredit_node::proto;
use xmcredit_node::service::{admin_client, peer_client};
use xmcredit_simulator::alliance::NodeHandle;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn show(node: &NodeHandle, id: &str) -> Result<proto::ContractView> {
    Ok(node.admin().await?.show_contract(proto::ContractQuery { contract_id: id.into() }).await?.into_inner())
}

/// The status line `node` shows for `peer`.
async fn peer_status(node: &NodeHandle, peer: &str) -> Result<proto::PeerStatus> {
    node.status()
        .await?
        .peers
        .into_iter()
        .find(|p| p.node_id == peer)
        .with_context(|| format!("{} does not list {peer}", node.id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sign_a_contract_and_see_each_other() -> Result<()> {
    let (_dir, alliance) = alliance(&["credit-center", "bank-a"], true).await?;
    let center = alliance.node("credit-center")?;
    let bank = alliance.node("bank-a")?;

    // Each sees the other, identified by the certificate it presented.
    for (node, other) in [(center, bank), (bank, center)] {
        let status = node.status().await?;
        assert_eq!(status.node_id, node.id.as_str());
        assert_eq!(status.peers.len(), 1, "{:?}", status.peers);
        let peer = &status.peers[0];
        assert_eq!(
            (peer.node_id.as_str(), peer.address.as_str()),
            (other.id.as_str(), other.address.as_str())
        );
        assert!(peer.reachable, "{} cannot reach {}: {}", node.id, other.id, peer.detail);
        assert_contains(&peer.detail, &[&format!("certificate names {}", other.id)]);
        // And the peer answers Health with its own id over a channel that checked it.
        let health =
            peer_client(channel(node, other).await?).health(proto::HealthRequest {}).await?.into_inner();
        assert_eq!(health.node_id, other.id.as_str());
    }

    // The credit center proposes; bank-a's operator has not approved yet.
    let id = "credit-center.trust-psi-a-grade";
    let toml = psi_contract(id, center, bank, "intersection", &[], 10, 5);
    let proposed = center.propose(&toml).await?;
    assert_eq!(proposed.state, "awaiting-signatures");
    assert_eq!(proposed.missing_signatures, vec!["bank-a".to_string()]);
    let at_bank = show(bank, id).await?;
    assert_eq!(at_bank.state, "awaiting-signatures", "the proposal reached bank-a unsigned by it");
    assert_eq!(at_bank.signed_by, vec!["credit-center".to_string()]);

    // bank-a signs; both now hold the same bytes with both signatures.
    let signed = bank.sign(id).await?;
    assert_eq!(signed.state, "active");
    assert!(signed.missing_signatures.is_empty());
    let at_center = show(center, id).await?;
    let at_bank = show(bank, id).await?;
    for view in [&at_center, &at_bank] {
        assert_eq!(view.state, "active");
        let mut signers = view.signed_by.clone();
        signers.sort();
        assert_eq!(signers, vec!["bank-a".to_string(), "credit-center".to_string()]);
    }
    assert_eq!(at_center.canonical_hex, at_bank.canonical_hex);

    // Checked independently: bank-a's copy, fetched over the peer API, is the document
    // that was written, and both signatures verify under the keys it lists.
    let copy = peer_client(channel(center, bank).await?)
        .fetch_contract(proto::ContractQuery { contract_id: id.into() })
        .await?
        .into_inner();
    assert_eq!(hex::encode(&copy.canonical), at_center.canonical_hex);
    let signatures = copy
        .signatures
        .iter()
        .map(|s| Ok((NodeId::new(s.node_id.clone())?, Signature::from_bytes(&s.signature)?)))
        .collect::<Result<Vec<_>>>()?;
    let contract = SignedContract::from_parts(copy.canonical.clone(), signatures)?;
    assert_eq!(contract.contract(), &Contract::from_toml_str(&toml)?);
    let verified = contract.verify(now(), &[])?;
    assert_eq!(verified.signatures().len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() -> Result<()> {
    let (dir, alliance) = alliance(&["credit-center", "bank-a"], true).await?;
    let center = alliance.node("credit-center")?;

    // A complete node calling itself bank-a, with its own CA.
    let rogue = dir.path().join("rogue");
    std::fs::create_dir_all(&rogue)?;
    let r = rogue.display().to_string();
    let program = program();
    program.run(
        &["init", "--data-dir", &r, "--node-id", "bank-a", "--listen", "127.0.0.1:9"],
        &rogue.join("init.log"),
    )?;
    program.run(&["ca", "init", "--data-dir", &r, "--name", "Rogue CA"], &rogue.join("ca.log"))?;
    program.run(
        &[
            "ca",
            "issue",
            "--data-dir",
            &r,
            "--csr",
            &format!("{r}/tls.csr"),
            "--out",
            &format!("{r}/tls.crt"),
        ],
        &rogue.join("issue.log"),
    )?;

    // 1. With its own trust anchor it cannot even accept the credit center's
    //    certificate: unknown issuer.
    let refused = match connect_as(&rogue.join("node.toml"), &center.address, "credit-center").await? {
        Ok(channel) => {
            let answer = peer_client(channel).health(proto::HealthRequest {}).await;
            panic!("a node of another CA got an answer: {answer:?}")
        }
        Err(e) => e.to_string(),
    };
    assert_contains(
        &refused,
        &["TLS with credit-center", "this node refused the peer's certificate", "UnknownIssuer"],
    );

    // 2. Trusting the alliance CA but presenting the rogue certificate: the credit
    //    center refuses it, and says so in its log.
    // (The alliance CA is read for its certificate only: the trust anchor to present.)
    let alliance_ca = AllianceCa::read(&center.dir.join("ca/ca.crt"), &center.dir.join("ca/ca.key"))?;
    let rogue_ca = AllianceCa::read(&rogue.join("ca/ca.crt"), &rogue.join("ca/ca.key"))?;
    let request = std::fs::read_to_string(rogue.join("tls.csr"))?;
    let bank_a = NodeId::new("bank-a")?;
    let rogue_cert = rogue_ca.issue(&request, Some(&bank_a), 30, 7)?;
    let rogue_key = NodeKey::read(&rogue.join("secrets/tls.key"))?;
    let tls = xmcredit_node::pki::tls::client_config(
        alliance_ca.cert_der().clone(),
        vec![rogue_cert.der.clone()],
        rogue_key.private_key_der(),
        Vec::new(),
    )?;
    let auth = rogue_auth(tls, &rogue)?;
    let result = xmcredit_node::transport::connect(
        &center.address,
        &NodeId::new("credit-center")?,
        auth,
        CONNECT_TIMEOUT,
    )
    .await;
    let refused = match result {
        Ok(channel) => {
            let answer = peer_client(channel).health(proto::HealthRequest {}).await;
            panic!("a certificate of another CA got an answer: {answer:?}")
        }
        Err(e) => e.to_string(),
    };
    assert_contains(&refused, &["TLS with credit-center", "refused by the peer", "UnknownCA"]);
    let log = wait_for_log(center, "UnknownIssuer").await;
    assert!(
        log.lines().any(|l| l.contains("refused a TLS connection") && l.contains("UnknownIssuer")),
        "the credit center logs the refusal with its reason:\n{log}"
    );

    // The real bank-a still gets in.
    let health = peer_client(channel(alliance.node("bank-a")?, center).await?)
        .health(proto::HealthRequest {})
        .await?
        .into_inner();
    assert_eq!(health.node_id, "credit-center");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_crl_applies_on_sighup_without_a_restart() -> Result<()> {
    let (_dir, alliance) = alliance(&["credit-center", "bank-a", "bank-b"], true).await?;
    let (center_dir, bank_a_dir) =
        (alliance.node("credit-center")?.dir.clone(), alliance.node("bank-a")?.dir.clone());
    let bank_a = alliance.node("bank-a")?;
    let bank_b = alliance.node("bank-b")?;
    let pid_before = bank_a.pid();
    assert!(
        connect_as(&bank_b.config, &bank_a.address, "bank-a").await?.is_ok(),
        "let in before the revocation"
    );

    program().run(
        &["ca", "revoke", "--data-dir", &center_dir.display().to_string(), "--node-id", "bank-b"],
        &center_dir.join("revoke.log"),
    )?;
    std::fs::copy(center_dir.join("crl.der"), bank_a_dir.join("crl.der"))?;
    // Before the signal the running node still uses the CRL it started with.
    assert!(connect_as(&bank_b.config, &bank_a.address, "bank-a").await?.is_ok(), "old CRL until reload");
    let pid = pid_before.context("bank-a runs")?;
    let status = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status()?;
    assert!(status.success());
    let log = wait_for_log(bank_a, "reloaded certificates and revocation lists").await;
    assert!(log.contains("reloaded certificates and revocation lists"), "bank-a reloaded:\n{log}");

    let refused = match connect_as(&bank_b.config, &bank_a.address, "bank-a").await? {
        Ok(channel) => {
            let answer = peer_client(channel).health(proto::HealthRequest {}).await;
            panic!("a revoked certificate got an answer after the reload: {answer:?}")
        }
        Err(e) => e.to_string(),
    };
    assert_contains(&refused, &["CertificateRevoked"]);
    assert_eq!(bank_a.pid(), pid_before, "no restart");
    // bank-a's own connections use the new CRL too: bank-b's server certificate is refused.
    let to_b = peer_status(bank_a, "bank-b").await?;
    assert!(!to_b.reachable);
    assert_contains(&to_b.detail, &["Revoked"]);
    assert!(peer_status(bank_a, "credit-center").await?.reachable);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused() -> Result<()> {
    let (_dir, mut alliance) = alliance(&["credit-center", "bank-a", "bank-b"], true).await?;
    let (center_dir, bank_a_dir) =
        (alliance.node("credit-center")?.dir.clone(), alliance.node("bank-a")?.dir.clone());

    // Before revocation bank-b is let in.
    let health = peer_client(channel(alliance.node("bank-b")?, alliance.node("bank-a")?).await?)
        .health(proto::HealthRequest {})
        .await?
        .into_inner();
    assert_eq!(health.node_id, "bank-a");

    // The CA revokes bank-b (its certificate was the third issued) and writes a CRL.
    let out = program().run(
        &["ca", "revoke", "--data-dir", &center_dir.display().to_string(), "--node-id", "bank-b"],
        &center_dir.join("revoke.log"),
    )?;
    assert_contains(&out, &["revoked serials [3] of bank-b"]);
    let again = program().run(
        &["ca", "revoke", "--data-dir", &center_dir.display().to_string(), "--node-id", "bank-b"],
        &center_dir.join("revoke-again.log"),
    );
    assert_contains(&err_text(again), &["no unrevoked certificate for bank-b"]);

    // bank-a installs the new CRL and restarts.
    std::fs::copy(center_dir.join("crl.der"), bank_a_dir.join("crl.der"))?;
    alliance.node_mut("bank-a")?.stop()?;
    alliance.node_mut("bank-a")?.start().await?;
    let bank_a = alliance.node("bank-a")?;
    let bank_b = alliance.node("bank-b")?;

    // bank-b calling bank-a: refused by bank-a's check of bank-b's certificate.
    let refused = match connect_as(&bank_b.config, &bank_a.address, "bank-a").await? {
        Ok(channel) => {
            let answer = peer_client(channel).health(proto::HealthRequest {}).await;
            panic!("a revoked certificate got an answer: {answer:?}")
        }
        Err(e) => e.to_string(),
    };
    assert_contains(&refused, &["TLS with bank-a", "refused by the peer", "CertificateRevoked"]);
    let log = wait_for_log(bank_a, "Revoked").await;
    assert!(
        log.lines().any(|l| l.contains("refused a TLS connection") && l.contains("Revoked")),
        "bank-a logs the refusal:\n{log}"
    );

    // bank-a calling bank-b: bank-a refuses the revoked server certificate; the credit
    // center (not revoked) is still reachable.
    let to_b = peer_status(bank_a, "bank-b").await?;
    assert!(!to_b.reachable);
    assert_contains(&to_b.detail, &["bank-b", "Revoked"]);
    let to_center = peer_status(bank_a, "credit-center").await?;
    assert!(to_center.reachable, "{}", to_center.detail);
    // bank-b's own view of bank-a says it was refused.
    let from_b = peer_status(bank_b, "bank-a").await?;
    assert!(!from_b.reachable);
    assert_contains(&from_b.detail, &["CertificateRevoked"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_presenting_another_nodes_name_is_refused() -> Result<()> {
    let (_dir, mut alliance) = alliance(&["credit-center", "bank-a", "bank-b"], true).await?;
    let center_address = alliance.node("credit-center")?.address.clone();

    // bank-a dials the credit center's address expecting bank-b.
    let result = connect_as(&alliance.node("bank-a")?.config, &center_address, "bank-b").await?;
    let refused = match result {
        Ok(channel) => {
            let answer = peer_client(channel).health(proto::HealthRequest {}).await;
            panic!("a certificate for another name was accepted: {answer:?}")
        }
        Err(e) => e.to_string(),
    };
    assert_contains(
        &refused,
        &[
            "TLS with bank-b",
            "this node refused the peer's certificate",
            "certificate not valid for name \"bank-b\"",
            "only valid for DnsName(\"credit-center\")",
        ],
    );

    // The same through the node: bank-a's configuration points bank-b at the credit
    // center (a wrong address, or a hijacked one). bank-a refuses to treat it as bank-b.
    let config = alliance.node("bank-a")?.config.clone();
    let text = std::fs::read_to_string(&config)?;
    let bank_b_address = alliance.node("bank-b")?.address.clone();
    let rewritten = text.replace(
        &format!("id = \"bank-b\"\naddress = \"{bank_b_address}\""),
        &format!("id = \"bank-b\"\naddress = \"{center_address}\""),
    );
    assert_ne!(rewritten, text, "the configuration lists bank-b");
    std::fs::write(&config, rewritten)?;
    alliance.node_mut("bank-a")?.stop()?;
    alliance.node_mut("bank-a")?.start().await?;
    let to_b = peer_status(alliance.node("bank-a")?, "bank-b").await?;
    assert!(!to_b.reachable);
    assert_contains(
        &to_b.detail,
        &["certificate not valid for name \"bank-b\"", "DnsName(\"credit-center\")"],
    );
    let to_center = peer_status(alliance.node("bank-a")?, "credit-center").await?;
    assert!(to_center.reachable, "{}", to_center.detail);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_missing_from_the_configuration_is_refused() -> Result<()> {
    let (_dir, mut alliance) = alliance(&["credit-center", "bank-a", "bank-c"], true).await?;
    // The credit center's operator has not (or no longer) listed bank-c as a peer.
    let config = alliance.node("credit-center")?.config.clone();
    let text = std::fs::read_to_string(&config)?;
    let bank_c = alliance.node("bank-c")?;
    let block = format!(
        "\n[[peers]]\nid = \"bank-c\"\naddress = \"{}\"\nidentity_key = \"{}\"\n",
        bank_c.address, bank_c.public_key
    );
    assert!(text.contains(&block), "{text}");
    std::fs::write(&config, text.replace(&block, ""))?;
    alliance.node_mut("credit-center")?.stop()?;
    alliance.node_mut("credit-center")?.start().await?;
    let center = alliance.node("credit-center")?;
    let bank_c = alliance.node("bank-c")?;

    // Probing: not even Health answers a certificate that is not a configured peer...
    let mut client = peer_client(channel(bank_c, center).await?);
    let health = client.health(proto::HealthRequest {}).await.expect_err("health is refused");
    assert_eq!(
        (health.code(), health.message()),
        (tonic::Code::PermissionDenied, "node bank-c is not a configured peer")
    );
    // ...and nothing else: a contract proposal from bank-c is refused, naming it.
    let id = "bank-c.trust-unknown-peer";
    let toml = psi_contract(id, center, bank_c, "intersection", &[], 10, 5);
    let ack = bank_c.propose(&toml).await?;
    assert_eq!(ack.state, "awaiting-signatures");
    assert_contains(&ack.unreached.join("; "), &["credit-center: ", "node bank-c is not a configured peer"]);
    let status = client
        .propose_contract(proto::SignedContractMsg {
            canonical: Vec::new(),
            signatures: Vec::new(),
            revocations_json: Vec::new(),
        })
        .await
        .expect_err("an unknown node's proposal is refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.message(), "node bank-c is not a configured peer");
    let psi = client
        .psi(tokio_stream::iter(vec![proto::Frame { payload: vec![1, 0x81] }]))
        .await
        .expect_err("an unknown node's PSI session is refused");
    assert_eq!(
        (psi.code(), psi.message()),
        (tonic::Code::PermissionDenied, "node bank-c is not a configured peer")
    );

    // Nothing was stored, and the refusals are audited: one record per minute for one
    // kind of refusal from one peer (a flood must not flood the log).
    let contracts = center.admin().await?.list_contracts(proto::ListContractsRequest {}).await?.into_inner();
    assert!(contracts.contracts.is_empty(), "{:?}", contracts.contracts);
    let refusals = audit_records(center)
        .await?
        .into_iter()
        .filter(|r| {
            r["outcome"]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("node bank-c is not a configured peer"))
        })
        .count();
    assert!((1..=2).contains(&refusals), "refusals are audited, coalesced per minute ({refusals})");
    audit_verifies(center).await?;

    // bank-a, which is configured, still gets its proposal through.
    let bank_a = alliance.node("bank-a")?;
    let toml = psi_contract("bank-a.trust-known-peer", center, bank_a, "intersection", &[], 10, 5);
    let ack = bank_a.propose(&toml).await?;
    assert_eq!(ack.state, "awaiting-signatures", "{ack:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_call_is_served_on_the_network_listener() -> Result<()> {
    // Attack: operate a node through its network listener, even with the node's *own*
    // certificate and identity key (what the CA holder could mint a copy of). The Admin
    // service is not there: only the Unix socket in the data directory serves it.
    let (dir, alliance) = alliance(&["credit-center", "bank-a"], true).await?;
    let center = alliance.node("credit-center")?;
    let bank = alliance.node("bank-a")?;
    for (caller, what) in [(bank, "a peer's certificate"), (center, "the node's own certificate")] {
        let mut admin = admin_client(channel(caller, center).await?);
        let status = admin.status(proto::StatusRequest::default()).await.expect_err("status is not served");
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{what}: {status:?}");
        let files = write_applicants(dir.path(), "applicants", &codes(3, 20))?;
        let import = admin
            .import(proto::ImportRequest {
                dataset: "loan_applicants".into(),
                csv_path: files.1.display().to_string(),
                schema_toml: APPLICANTS_SCHEMA.into(),
                key_kind: String::new(),
                allow_rejects: false,
            })
            .await
            .expect_err("import is not served");
        assert_eq!(import.code(), tonic::Code::Unimplemented, "{what}: {import:?}");
        let toml = psi_contract("credit-center.trust-admin", center, bank, "intersection", &[], 10, 5);
        let propose = admin
            .propose_contract(proto::ProposeRequest { contract_toml: toml })
            .await
            .expect_err("propose is not served");
        assert_eq!(propose.code(), tonic::Code::Unimplemented, "{what}: {propose:?}");
    }

    // The operator's socket works, is 0600 in a 0700 directory, and shows nothing changed.
    let own = center.status().await?;
    assert!(own.datasets.is_empty(), "{:?}", own.datasets);
    assert!(own.contracts.is_empty(), "{:?}", own.contracts);
    use std::os::unix::fs::PermissionsExt;
    let socket = center.dir.join("admin.sock");
    assert_eq!(std::fs::metadata(&socket)?.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&center.dir)?.permissions().mode() & 0o777, 0o700);
    Ok(())
}

/// A client identity for a rogue TLS configuration: the rogue's own identity key.
fn rogue_auth(
    tls: std::sync::Arc<rustls::ClientConfig>,
    rogue: &std::path::Path,
) -> Result<xmcredit_node::transport::ClientAuth> {
    let secrets = xmcredit_node::identity::NodeSecrets::load(rogue)?;
    Ok(xmcredit_node::transport::ClientAuth {
        tls,
        local: xmcredit_node::transport::LocalIdentity {
            node_id: NodeId::new("bank-a")?,
            key: secrets.identity,
        },
        expected_key: None,
        live: None,
    })
}
