//! The alliance PKI and the mutual-TLS transport, end to end: a real CA, real
//! certificates, real rustls, real tonic, on 127.0.0.1 sockets.
//!
//! Each test starts its own server on port 0 with a tiny `Node` service whose `Health`
//! answers with the *caller's* node id as the server saw it (from `peer_of`), so a test
//! can check both that a connection was made and who the server thinks it is from.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::{ClientConfig, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};
use xmcredit_crypto::sign::IdentityKey;
use xmcredit_crypto::NodeId;
use xmcredit_node::pki::tls::{client_config, server_config, TlsFiles, TlsIdentity};
use xmcredit_node::pki::{
    certificate_request, node_id_from_certificate, write_file_atomic, AllianceCa, Index, IssuedCert, NodeKey,
    PkiError,
};
use xmcredit_node::proto::node_client::NodeClient;
use xmcredit_node::proto::node_server::{Node, NodeServer};
use xmcredit_node::proto::{
    ContractAck, ContractQuery, ContractSignatureMsg, Frame, HealthReply, HealthRequest, RevocationMsg,
    SignedContractMsg,
};
use xmcredit_node::transport::{self, peer_of, ClientAuth, LocalIdentity, TransportError, MAX_MESSAGE_BYTES};

const TIMEOUT: Duration = Duration::from_secs(5);
const DAYS: u32 = 30;

// ---- A test-only Node service --------------------------------------------------------

/// Answers `Health` with the caller's node id; everything else is unimplemented.
struct EchoPeer;

type FrameStream = tokio_stream::Empty<Result<Frame, Status>>;

#[tonic::async_trait]
impl Node for EchoPeer {
    async fn health(&self, request: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        let caller = peer_of(&request)?;
        Ok(Response::new(HealthReply {
            node_id: caller.node_id.to_string(),
            version: "test".into(),
            contracts: 0,
        }))
    }

    async fn propose_contract(&self, _: Request<SignedContractMsg>) -> Result<Response<ContractAck>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn submit_signature(
        &self,
        _: Request<ContractSignatureMsg>,
    ) -> Result<Response<ContractAck>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn fetch_contract(&self, _: Request<ContractQuery>) -> Result<Response<SignedContractMsg>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn revoke_contract(&self, _: Request<RevocationMsg>) -> Result<Response<ContractAck>, Status> {
        Err(Status::unimplemented("test service"))
    }

    type PsiStream = FrameStream;

    async fn psi(&self, _: Request<Streaming<Frame>>) -> Result<Response<Self::PsiStream>, Status> {
        Err(Status::unimplemented("test service"))
    }

    type SecAggStream = FrameStream;

    async fn sec_agg(&self, _: Request<Streaming<Frame>>) -> Result<Response<Self::SecAggStream>, Status> {
        Err(Status::unimplemented("test service"))
    }

    type LookupVectorStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<xmcredit_node::proto::LookupVectorPart, Status>> + Send>,
    >;

    async fn lookup_vector(
        &self,
        _: Request<xmcredit_node::proto::LookupVectorRequest>,
    ) -> Result<Response<Self::LookupVectorStream>, Status> {
        Err(Status::unimplemented("test service"))
    }

    type LookupStream = FrameStream;

    async fn lookup(&self, _: Request<Streaming<Frame>>) -> Result<Response<Self::LookupStream>, Status> {
        Err(Status::unimplemented("test service"))
    }

    type OverthresholdStream = FrameStream;

    async fn overthreshold(
        &self,
        _: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::OverthresholdStream>, Status> {
        Err(Status::unimplemented("test service"))
    }

    type OverthresholdEvalStream = FrameStream;

    async fn overthreshold_eval(
        &self,
        _: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::OverthresholdEvalStream>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn fetch_crl(
        &self,
        _: Request<xmcredit_node::proto::CrlRequest>,
    ) -> Result<Response<xmcredit_node::proto::CrlReply>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn witness_head(
        &self,
        _: Request<xmcredit_node::proto::AuditHead>,
    ) -> Result<Response<xmcredit_node::proto::WitnessAck>, Status> {
        Err(Status::unimplemented("test service"))
    }

    async fn fetch_witnessed_heads(
        &self,
        _: Request<xmcredit_node::proto::WitnessedHeadsRequest>,
    ) -> Result<Response<xmcredit_node::proto::AuditHeads>, Status> {
        Err(Status::unimplemented("test service"))
    }
}

// ---- Fixtures ------------------------------------------------------------------------

fn id(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

/// A node's key and the certificate `ca` issued for it.
struct Member {
    key: NodeKey,
    cert: IssuedCert,
    name: NodeId,
}

/// A fixed identity key per node name (these tests are about certificates; the identity
/// proof runs on every connection all the same).
fn identity(name: &NodeId) -> LocalIdentity {
    use sha2::Digest;
    let seed: [u8; 32] = sha2::Sha256::digest(name.as_str().as_bytes()).into();
    LocalIdentity { node_id: name.clone(), key: IdentityKey::from_seed(&seed).expect("seed") }
}

fn enroll(ca: &AllianceCa, name: &str, serial: u64) -> Member {
    let key = NodeKey::generate().expect("key");
    let csr = certificate_request(&key, &id(name)).expect("csr");
    let cert = ca.issue(&csr, Some(&id(name)), DAYS, serial).expect("issue");
    Member { key, cert, name: id(name) }
}

fn server_tls(
    ca: &AllianceCa,
    member: &Member,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Arc<ServerConfig> {
    server_config(ca.cert_der().clone(), vec![member.cert.der.clone()], member.key.private_key_der(), crls)
        .expect("server config")
}

fn client_tls(trusted: &CertificateDer<'static>, member: &Member) -> ClientAuth {
    auth(
        client_config(
            trusted.clone(),
            vec![member.cert.der.clone()],
            member.key.private_key_der(),
            Vec::new(),
        )
        .expect("client config"),
        member,
    )
}

fn auth(tls: Arc<ClientConfig>, member: &Member) -> ClientAuth {
    ClientAuth { tls, local: identity(&member.name), expected_key: None, live: None }
}

struct Running {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), TransportError>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(TIMEOUT, self.task).await.expect("server stops").expect("join");
        result.expect("server ends cleanly");
    }
}

async fn start(tls: Arc<ServerConfig>, name: &str) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let service = NodeServer::new(EchoPeer)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let router = transport::server_builder(&transport::ServerLimits::default()).add_service(service);
    let task = tokio::spawn(transport::serve(listener, tls, identity(&id(name)), router, async {
        let _ = stopped.await;
    }));
    Running { address, stop, task }
}

async fn health(channel: tonic::transport::Channel) -> Result<String, Status> {
    Ok(NodeClient::new(channel).health(HealthRequest {}).await?.into_inner().node_id)
}

fn crl_der(ca: &AllianceCa, index: &mut Index) -> CertificateRevocationListDer<'static> {
    let now = SystemTime::now();
    let der = ca
        .crl(&index.revoked_serials(), index.next_crl_number(), now, now + Duration::from_secs(86_400))
        .expect("crl");
    CertificateRevocationListDer::from(der)
}

/// Collects the log lines written while installed (on this thread: use a
/// current-thread runtime so the server's tasks log here too).
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }

    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Waits (briefly) for the server's task to log a line containing all of `needles`.
    async fn wait_for(&self, needles: &[&str]) -> String {
        for _ in 0..100 {
            let text = self.text();
            if text.lines().any(|line| needles.iter().all(|needle| line.contains(needle))) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no log line with {needles:?} in:\n{}", self.text());
    }
}

// ---- (a) members of one alliance talk, and the server knows who called ---------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_one_ca_connect_and_the_server_sees_the_caller() {
    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    let center = enroll(&ca, "credit-center", 1);
    let bank = enroll(&ca, "bank-a", 2);
    let server = start(server_tls(&ca, &center, Vec::new()), "credit-center").await;

    let channel = transport::connect(
        &server.address.to_string(),
        &id("credit-center"),
        client_tls(ca.cert_der(), &bank),
        TIMEOUT,
    )
    .await
    .expect("connect");
    assert_eq!(health(channel.clone()).await.expect("health"), "bank-a");
    // The channel is reusable, and other calls reach the service (and are its to refuse).
    assert_eq!(health(channel.clone()).await.expect("second call"), "bank-a");
    let status = NodeClient::new(channel)
        .fetch_contract(ContractQuery { contract_id: "x".into() })
        .await
        .expect_err("unimplemented");
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    server.stop().await;
}

// ---- (b) a certificate from another CA is refused, and the server says why ------------

#[tokio::test(flavor = "current_thread")]
async fn client_certificate_from_another_ca_is_refused_and_logged() {
    let logs = LogBuffer::default();
    let _guard = logs.install();

    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    let rogue_ca = AllianceCa::create("rogue alliance").expect("rogue ca");
    let center = enroll(&ca, "credit-center", 1);
    let impostor = enroll(&rogue_ca, "bank-a", 1);
    let server = start(server_tls(&ca, &center, Vec::new()), "credit-center").await;

    // The impostor trusts the real CA, so only the server's check can stop it.
    let err = transport::connect(
        &server.address.to_string(),
        &id("credit-center"),
        client_tls(ca.cert_der(), &impostor),
        TIMEOUT,
    )
    .await
    .expect_err("a certificate from another CA must be refused");
    match &err {
        TransportError::Handshake { peer, reason: rustls::Error::AlertReceived(alert), .. } => {
            assert_eq!(peer.as_str(), "credit-center");
            assert_eq!(*alert, rustls::AlertDescription::UnknownCA);
        }
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
    assert!(err.to_string().contains("credit-center"), "{err}");

    let log = logs.wait_for(&["WARN", "refused a TLS connection", "127.0.0.1:", "UnknownIssuer"]).await;
    assert!(!log.contains("accepted a TLS connection"), "{log}");

    // A rogue CA that copies the alliance CA's name: found as issuer by name, refused on
    // the signature.
    let lookalike_ca = AllianceCa::create("xmcredit test alliance").expect("lookalike ca");
    let lookalike = enroll(&lookalike_ca, "bank-a", 1);
    let err = transport::connect(
        &server.address.to_string(),
        &id("credit-center"),
        client_tls(ca.cert_der(), &lookalike),
        TIMEOUT,
    )
    .await
    .expect_err("a certificate from a look-alike CA must be refused");
    assert!(
        matches!(err, TransportError::Handshake { reason: rustls::Error::AlertReceived(_), .. }),
        "{err:?}"
    );
    logs.wait_for(&["WARN", "refused a TLS connection", "BadSignature"]).await;

    // The server is still serving its real members.
    let bank = enroll(&ca, "bank-b", 2);
    let channel = transport::connect(
        &server.address.to_string(),
        &id("credit-center"),
        client_tls(ca.cert_der(), &bank),
        TIMEOUT,
    )
    .await
    .expect("a member still connects");
    assert_eq!(health(channel).await.expect("health"), "bank-b");
    server.stop().await;
}

// ---- (c) a revoked certificate is refused --------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn revoked_client_certificate_is_refused() {
    let logs = LogBuffer::default();
    let _guard = logs.install();

    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    let mut index = Index::default();
    let center = enroll(&ca, "credit-center", index.next_serial());
    index.record(&center.cert).expect("record");
    let revoked = enroll(&ca, "bank-a", index.next_serial());
    index.record(&revoked.cert).expect("record");
    let member = enroll(&ca, "bank-b", index.next_serial());
    index.record(&member.cert).expect("record");
    assert_eq!(index.revoke_node(&id("bank-a"), SystemTime::now()), vec![revoked.cert.serial]);
    let server = start(server_tls(&ca, &center, vec![crl_der(&ca, &mut index)]), "credit-center").await;

    let err = transport::connect(
        &server.address.to_string(),
        &id("credit-center"),
        client_tls(ca.cert_der(), &revoked),
        TIMEOUT,
    )
    .await
    .expect_err("a revoked certificate must be refused");
    assert!(
        matches!(
            err,
            TransportError::Handshake {
                reason: rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked),
                ..
            }
        ),
        "{err:?}"
    );
    logs.wait_for(&["WARN", "refused a TLS connection", "Revoked"]).await;

    // The CRL names one serial; the other members are unaffected.
    let channel = transport::connect(
        &server.address.to_string(),
        &id("credit-center"),
        client_tls(ca.cert_der(), &member),
        TIMEOUT,
    )
    .await
    .expect("an unrevoked member connects");
    assert_eq!(health(channel).await.expect("health"), "bank-b");
    server.stop().await;
}

// ---- (d) a server with another node's name is refused by the client -----------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_with_another_nodes_name_is_refused() {
    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    // A real member of the alliance, listening where the client expects the credit center.
    let bank_b = enroll(&ca, "bank-b", 1);
    let bank_a = enroll(&ca, "bank-a", 2);
    let server = start(server_tls(&ca, &bank_b, Vec::new()), "bank-b").await;

    let err = transport::connect(
        &server.address.to_string(),
        &id("credit-center"),
        client_tls(ca.cert_der(), &bank_a),
        TIMEOUT,
    )
    .await
    .expect_err("the client must refuse a server that is not the node it dialled");
    match &err {
        TransportError::Handshake { peer, reason: rustls::Error::InvalidCertificate(_), .. } => {
            assert_eq!(peer.as_str(), "credit-center");
        }
        other => panic!("expected a certificate refusal, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("credit-center") && message.contains("bank-b"), "{message}");

    // The same server is accepted when dialled under its own name.
    let channel = transport::connect(
        &server.address.to_string(),
        &id("bank-b"),
        client_tls(ca.cert_der(), &bank_a),
        TIMEOUT,
    )
    .await
    .expect("connect under the right name");
    assert_eq!(health(channel).await.expect("health"), "bank-a");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_server_from_another_ca() {
    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    let rogue_ca = AllianceCa::create("rogue").expect("rogue ca");
    let fake_center = enroll(&rogue_ca, "credit-center", 1);
    let bank = enroll(&ca, "bank-a", 1);
    // The fake server would even accept the bank (it trusts the real CA for clients).
    let tls = server_config(
        ca.cert_der().clone(),
        vec![fake_center.cert.der.clone()],
        fake_center.key.private_key_der(),
        Vec::new(),
    )
    .expect("server config");
    let server = start(tls, "credit-center").await;

    let err = transport::connect(
        &server.address.to_string(),
        &id("credit-center"),
        client_tls(ca.cert_der(), &bank),
        TIMEOUT,
    )
    .await
    .expect_err("a server certificate from another CA must be refused");
    assert!(
        matches!(
            err,
            TransportError::Handshake {
                reason: rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
                ..
            }
        ),
        "{err:?}"
    );
    server.stop().await;
}

// ---- (e) the CA refuses requests that do not name exactly one valid node id ---------

fn raw_request(names: Vec<String>) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.serialize_request(&key).expect("csr").pem().expect("pem")
}

#[test]
fn ca_refuses_requests_without_exactly_one_valid_node_id() {
    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");

    for bad in ["Bank_A", "bank-a.example.com", "-bank"] {
        let err = ca.issue(&raw_request(vec![bad.into()]), None, DAYS, 1).expect_err(bad);
        assert!(matches!(&err, PkiError::InvalidNodeId { value, .. } if value == bad), "{bad}: {err}");
        assert!(err.to_string().contains(bad), "{err}");
    }

    let two = ca.issue(&raw_request(vec!["bank-a".into(), "bank-b".into()]), None, DAYS, 1).expect_err("two");
    assert!(matches!(two, PkiError::SubjectAltNames { ref found, .. } if found.len() == 2), "{two}");
    let ip =
        ca.issue(&raw_request(vec!["bank-a".into(), "127.0.0.1".into()]), None, DAYS, 1).expect_err("ip");
    assert!(matches!(ip, PkiError::SubjectAltNames { .. }), "{ip}");
    assert!(ip.to_string().contains("IP:127.0.0.1"), "{ip}");
    let none = ca.issue(&raw_request(Vec::new()), None, DAYS, 1).expect_err("none");
    assert!(matches!(none, PkiError::SubjectAltNames { ref found, .. } if found.is_empty()), "{none}");

    let for_a = raw_request(vec!["bank-a".into()]);
    let wrong = ca.issue(&for_a, Some(&id("bank-b")), DAYS, 1).expect_err("expected another node");
    assert!(matches!(wrong, PkiError::UnexpectedNode { .. }), "{wrong}");
    assert!(wrong.to_string().contains("bank-a") && wrong.to_string().contains("bank-b"));

    assert!(matches!(ca.issue("not a request", None, DAYS, 1), Err(PkiError::Malformed { .. })));
    assert!(matches!(ca.issue(&for_a, None, DAYS, 0), Err(PkiError::Serial { serial: 0, .. })));
    assert!(matches!(ca.issue(&for_a, None, 0, 1), Err(PkiError::Time { .. })));
    assert!(ca.issue(&for_a, None, DAYS, 1).is_ok());
}

#[test]
fn ca_refuses_keys_outside_the_alliance_profile() {
    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let csr = rcgen::CertificateParams::new(vec!["bank-a".to_string()])
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    assert!(matches!(ca.issue(&csr, None, DAYS, 1), Err(PkiError::UnsupportedKey { .. })));
}

#[test]
fn issued_certificate_follows_the_profile() {
    use x509_parser::extensions::GeneralName;

    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    // A request asking for more than it may: the CA ignores what it does not grant.
    let key = NodeKey::generate().expect("key");
    let issued = ca
        .issue(&certificate_request(&key, &id("bank-a")).expect("csr"), None, DAYS, 0x8000_0000_0000_0001)
        .expect("issue");
    assert_eq!(issued.node_id, id("bank-a"));
    assert_eq!(node_id_from_certificate(&issued.der).expect("node id"), id("bank-a"));
    assert!(issued.pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).expect("parse");
    assert_eq!(cert.serial.to_u64_digits(), vec![0x8000_0000_0000_0001]);
    assert!(!cert.is_ca());
    let usage = cert.key_usage().expect("ku").expect("present").value;
    assert!(usage.digital_signature() && !usage.key_cert_sign() && !usage.crl_sign());
    let eku = cert.extended_key_usage().expect("eku").expect("present").value;
    assert!(eku.server_auth && eku.client_auth && !eku.any);
    let names = &cert.subject_alternative_name().expect("san").expect("present").value.general_names;
    assert!(matches!(names.as_slice(), [GeneralName::DNSName("bank-a")]));
    let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
    assert_eq!(common_name, Some("bank-a"));
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).expect("parse ca");
    assert!(ca_cert.is_ca());
    assert_eq!(cert.issuer(), ca_cert.subject());
    cert.verify_signature(Some(ca_cert.public_key())).expect("signed by the CA");
    let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, i64::from(DAYS)); // plus the few minutes of backdating
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_reloaded_from_pem_keeps_issuing_for_the_same_alliance() {
    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    let reloaded = AllianceCa::from_pem(ca.cert_pem(), &ca.key_pem()).expect("reload");
    assert_eq!(reloaded.cert_der(), ca.cert_der());

    let center = enroll(&ca, "credit-center", 1);
    let bank = enroll(&reloaded, "bank-a", 2);
    let server = start(server_tls(&ca, &center, Vec::new()), "credit-center").await;
    let channel = transport::connect(
        &server.address.to_string(),
        &id("credit-center"),
        client_tls(ca.cert_der(), &bank),
        TIMEOUT,
    )
    .await
    .expect("certificate from the reloaded CA is accepted");
    assert_eq!(health(channel).await.expect("health"), "bank-a");
    server.stop().await;

    let other = AllianceCa::create("other").expect("other");
    assert!(matches!(
        AllianceCa::from_pem(ca.cert_pem(), &other.key_pem()),
        Err(PkiError::KeyMismatch { .. })
    ));
}

// ---- (f) secret files ------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn key_files_readable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    let member = enroll(&ca, "bank-a", 1);
    let files = TlsFiles {
        ca_cert: dir.path().join("ca.crt"),
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        crls: Vec::new(),
    };
    write_file_atomic(&files.ca_cert, ca.cert_pem().as_bytes()).expect("ca cert");
    write_file_atomic(&files.cert, member.cert.pem.as_bytes()).expect("cert");
    member.key.write(&files.key).expect("key");
    let mode = std::fs::metadata(&files.key).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let identity = TlsIdentity::load(&files).expect("load");
    assert_eq!(identity.node_id(), &id("bank-a"));
    identity.server_config().expect("server config");
    identity.client_config().expect("client config");

    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = TlsIdentity::load(&files).expect_err("0644 key must be refused");
    assert!(
        matches!(&err, PkiError::InsecurePermissions { mode: 0o644, path } if *path == files.key),
        "{err}"
    );
    assert!(err.to_string().contains("tls.key") && err.to_string().contains("chmod 600"), "{err}");
    assert!(matches!(NodeKey::read(&files.key), Err(PkiError::InsecurePermissions { .. })));

    // The CA's key file gets the same treatment.
    let (ca_cert, ca_key) = (dir.path().join("ca/ca.crt"), dir.path().join("ca/ca.key"));
    std::fs::create_dir(dir.path().join("ca")).expect("ca dir");
    ca.write(&ca_cert, &ca_key).expect("write ca");
    AllianceCa::read(&ca_cert, &ca_key).expect("read ca");
    std::fs::set_permissions(&ca_key, std::fs::Permissions::from_mode(0o604)).expect("chmod");
    assert!(matches!(AllianceCa::read(&ca_cert, &ca_key), Err(PkiError::InsecurePermissions { .. })));
}

#[test]
fn crl_files_load_as_der_or_pem_and_bad_ones_name_their_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    let mut index = Index::default();
    let member = enroll(&ca, "bank-a", index.next_serial());
    index.record(&member.cert).expect("record");
    let crl = crl_der(&ca, &mut index);
    let mut files = TlsFiles {
        ca_cert: dir.path().join("ca.crt"),
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        crls: vec![dir.path().join("crl.der")],
    };
    write_file_atomic(&files.ca_cert, ca.cert_pem().as_bytes()).expect("ca cert");
    write_file_atomic(&files.cert, member.cert.pem.as_bytes()).expect("cert");
    member.key.write(&files.key).expect("key");
    write_file_atomic(&files.crls[0], &crl).expect("crl");
    TlsIdentity::load(&files).expect("DER CRL");

    let pem = format!("-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n", base64_lines(&crl));
    files.crls = vec![dir.path().join("crl.pem")];
    write_file_atomic(&files.crls[0], pem.as_bytes()).expect("crl pem");
    TlsIdentity::load(&files).expect("PEM CRL");

    files.crls = vec![dir.path().join("garbage.crl")];
    write_file_atomic(&files.crls[0], b"garbage").expect("garbage");
    let err = TlsIdentity::load(&files).expect_err("garbage CRL");
    assert!(err.to_string().contains("garbage.crl"), "{err}");

    // After revocation, the node's own certificate no longer loads.
    index.mark_revoked(member.cert.serial, SystemTime::now()).expect("revoke");
    files.crls = vec![dir.path().join("crl.der")];
    write_file_atomic(&files.crls[0], &crl_der(&ca, &mut index)).expect("crl");
    let err = TlsIdentity::load(&files).expect_err("own certificate revoked");
    assert!(
        matches!(&err, PkiError::InFile { error, .. } if matches!(**error, PkiError::OwnCertificate { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("tls.crt") && err.to_string().contains("Revoked"), "{err}");
}

/// Standard base64 in 64-character lines, for writing a PEM block in a test.
fn base64_lines(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out.as_bytes()
        .chunks(64)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn own_certificate_is_checked_when_loading() {
    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    let other_ca = AllianceCa::create("other").expect("other");
    let mut index = Index::default();
    let member = enroll(&ca, "bank-a", index.next_serial());
    index.record(&member.cert).expect("record");

    // A certificate from another CA than the one configured.
    let stranger = enroll(&other_ca, "bank-a", 1);
    let err = TlsIdentity::new(
        ca.cert_der().clone(),
        vec![stranger.cert.der.clone()],
        stranger.key.private_key_der(),
        Vec::new(),
    )
    .expect_err("not from this CA");
    assert!(matches!(err, PkiError::OwnCertificate { .. }), "{err}");

    // A certificate the node's own CRL revokes.
    index.mark_revoked(member.cert.serial, SystemTime::now()).expect("revoke");
    let crl = crl_der(&ca, &mut index);
    let err = TlsIdentity::new(
        ca.cert_der().clone(),
        vec![member.cert.der.clone()],
        member.key.private_key_der(),
        vec![crl],
    )
    .expect_err("revoked");
    assert!(err.to_string().contains("bank-a"), "{err}");

    // A key that is not the certificate's.
    let other_key = NodeKey::generate().expect("key");
    assert!(server_config(
        ca.cert_der().clone(),
        vec![member.cert.der.clone()],
        other_key.private_key_der(),
        Vec::new()
    )
    .is_err());
}

// ---- Limits and plain failures ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused_by_the_server() {
    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    let center = enroll(&ca, "credit-center", 1);
    let bank = enroll(&ca, "bank-a", 2);
    let server = start(server_tls(&ca, &center, Vec::new()), "credit-center").await;
    let channel = transport::connect(
        &server.address.to_string(),
        &id("credit-center"),
        client_tls(ca.cert_der(), &bank),
        TIMEOUT,
    )
    .await
    .expect("connect");

    // A client without limits sends 1 KiB more than the server accepts.
    let huge = SignedContractMsg {
        canonical: vec![0u8; MAX_MESSAGE_BYTES + 1024],
        signatures: Vec::new(),
        revocations_json: Vec::new(),
    };
    let status = NodeClient::new(channel.clone()).propose_contract(huge).await.expect_err("too large");
    assert_ne!(status.code(), tonic::Code::Unimplemented, "the handler must not see it: {status:?}");
    assert!(status.message().contains("too large") || status.code() == tonic::Code::OutOfRange, "{status:?}");
    // The connection survives a refused message.
    assert_eq!(health(channel).await.expect("health"), "bank-a");
    server.stop().await;
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    let bank = enroll(&ca, "bank-a", 1);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let err = transport::connect(
        &address.to_string(),
        &id("credit-center"),
        client_tls(ca.cert_der(), &bank),
        TIMEOUT,
    )
    .await
    .expect_err("nothing listens");
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&address.to_string()), "{err}");
}

#[tokio::test]
async fn silent_server_times_out() {
    let ca = AllianceCa::create("xmcredit test alliance").expect("ca");
    let bank = enroll(&ca, "bank-a", 1);
    // Accepts TCP, never speaks TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let _held = tokio::spawn(async move {
        let accepted = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(accepted);
    });
    let err = transport::connect(
        &address.to_string(),
        &id("credit-center"),
        client_tls(ca.cert_der(), &bank),
        Duration::from_millis(300),
    )
    .await
    .expect_err("timeout");
    assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
}
