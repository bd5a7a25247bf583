//! gRPC between alliance nodes over mutual TLS, with the peer's node id taken from its
//! verified certificate.
//!
//! tonic's own `tls` feature is not used: it would pick its own rustls provider and hide
//! the verified certificate. Instead this module does the TLS handshake itself with the
//! configurations from [`crate::pki::tls`] and hands tonic streams that are already
//! authenticated:
//!
//! - **Server** ([`serve`]): takes a tonic router, accepts TCP, runs each handshake in its
//!   own task under a timeout (a slow or failed handshake never holds up the listener; a
//!   refusal is logged at `warn` with the address and rustls's reason), reads the client's
//!   [`NodeId`] from its certificate and gives tonic a stream whose connect info is a
//!   [`PeerIdentity`]. Handlers call [`peer_of`]. A semaphore caps the connections.
//! - **Client** ([`connect`]): dials with the expected peer's node id as the TLS server
//!   name, so rustls itself refuses a server whose certificate names another node, then
//!   waits for the server's first HTTP/2 bytes so that a server refusing *our* certificate
//!   (which TLS 1.3 reports only after the client's handshake has finished) is reported by
//!   `connect` as a typed [`TransportError::Handshake`], not by the first call.
//!
//! - **Identity** ([`identity`]): right after TLS, before HTTP/2, both sides prove
//!   possession of their Ed25519 identity key over this TLS session's exporter value.
//!   The proven key travels with every request ([`PeerIdentity::identity_key`]); a
//!   handler compares it with the key the contract or the configuration pins, so a
//!   certificate alone (a second one the CA minted for a name, say) opens no door.
//! - **Revocation** ([`live`]): every authenticated connection registers with the
//!   certificate serial of its peer, so a CRL that arrives later closes it.
//!
//! Message sizes: every service and client is built with [`MAX_MESSAGE_BYTES`] as its
//! decoding and encoding limit (tonic sets these per service, so the callers set them),
//! so an oversized message is refused by tonic before it is decoded.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::Uri;
use tonic::transport::server::{Connected, Router};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Status};
use xmcredit_crypto::NodeId;

use xmcredit_crypto::sign::{IdentityKey, IdentityPublicKey};

use crate::pki::{certificate_serial, node_id_from_certificate};

pub mod identity;
pub mod live;

use identity::Role;
pub use live::LiveConnections;
use live::Registration;

/// What this process proves about itself on every connection: its node id (the name in
/// its certificate) and its Ed25519 identity key.
#[derive(Clone)]
pub struct LocalIdentity {
    pub node_id: NodeId,
    pub key: IdentityKey,
}

impl fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIdentity").field("node_id", &self.node_id).field("key", &self.key).finish()
    }
}

/// Largest gRPC message accepted or sent (8 MiB). Protocol payloads are streamed in
/// frames; anything bigger is a peer misbehaving, refused before it is buffered whole.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// What a server lets connections cost (issue 11), from `[limits]` in the
/// configuration; [`ServerLimits::default`] holds the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Authenticated connections held at once, all peers together.
    pub max_connections: usize,
    /// Connections in their TLS handshake or identity proof at once. When full, the
    /// oldest one is dropped for the newcomer: a flood of silent TCP connections
    /// cannot hold the door shut against an honest peer whose handshake takes
    /// milliseconds.
    pub max_pending_handshakes: usize,
    /// Authenticated connections one node id may hold at once.
    pub max_connections_per_peer: usize,
    /// Concurrent HTTP/2 streams one connection may open.
    pub max_streams_per_connection: u32,
    /// TLS handshake plus identity proof must finish within this.
    pub handshake: Duration,
    /// After the identity proof, the client's HTTP/2 preface must start within this.
    pub preface: Duration,
    /// A connection that sends nothing (not even an HTTP/2 ping) for this long is
    /// closed. Our clients ping every 30 s while idle.
    pub idle: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_pending_handshakes: 128,
            max_connections_per_peer: 32,
            max_streams_per_connection: 32,
            handshake: Duration::from_secs(10),
            preface: Duration::from_secs(10),
            idle: Duration::from_secs(300),
        }
    }
}
/// HTTP/2 pings that detect a peer that vanished (a bank killed mid-protocol) instead of
/// waiting for TCP to notice.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Who is on the other end of a server connection: the node its verified certificate
/// names, the identity key it proved possession of on this TLS session, and the address
/// it connected from. Inserted by tonic into every request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node_id: NodeId,
    pub identity_key: IdentityPublicKey,
    pub remote_addr: SocketAddr,
}

/// The calling node of a request, as authenticated by mutual TLS. A request that did not
/// come through [`serve`] has none, and is refused as unauthenticated.
// `Status` is large, but it is what every tonic handler returns; `?` needs it unboxed.
#[allow(clippy::result_large_err)]
pub fn peer_of<T>(request: &Request<T>) -> Result<PeerIdentity, Status> {
    request.extensions().get::<PeerIdentity>().cloned().ok_or_else(|| {
        Status::unauthenticated(
            "no authenticated peer: the call did not arrive over the alliance's mutual TLS",
        )
    })
}

/// Why a connection or the server failed. Handshake refusals keep rustls's reason
/// (unknown CA, revoked certificate, certificate for another name, ...).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The address is not `host:port`.
    #[error("invalid address {address:?} for {peer}: {reason}")]
    Address { peer: NodeId, address: String, reason: String },
    /// TCP connection or I/O failure, before or after TLS.
    #[error("cannot connect to {peer} at {address}: {error}")]
    Connect { peer: NodeId, address: String, error: io::Error },
    /// Nothing happened within the caller's timeout.
    #[error("connecting to {peer} at {address} timed out after {timeout:?}")]
    Timeout { peer: NodeId, address: String, timeout: Duration },
    /// TLS refused, by either side. `reason` is rustls's own error: for example
    /// `invalid peer certificate: UnknownIssuer` (we refused the server's certificate) or
    /// `received fatal alert: CertificateRevoked` (the server refused ours).
    #[error("TLS with {peer} at {address} failed, {}: {reason}", refusal_side(.reason))]
    Handshake { peer: NodeId, address: String, reason: rustls::Error },
    /// The server's certificate names a node other than the one dialled. rustls's name
    /// check already prevents this; kept as a second, explicit check of the one-name rule.
    #[error("{peer} at {address} presented a certificate that does not name it: {reason}")]
    WrongPeer { peer: NodeId, address: String, reason: String },
    /// The server closed the connection after the handshake without saying why.
    #[error("{peer} at {address} closed the connection right after the TLS handshake (it refused this node's certificate or identity proof)")]
    ClosedByPeer { peer: NodeId, address: String },
    /// The server's identity proof is invalid, or proves a key other than the one pinned
    /// for that node (a certificate for the name without the node's identity key).
    #[error("{peer} at {address} failed identity: {reason}")]
    Identity { peer: NodeId, address: String, reason: String },
    /// tonic could not set up the HTTP/2 channel over the TLS stream.
    #[error("gRPC channel to {peer} at {address}: {error}")]
    Channel { peer: NodeId, address: String, error: tonic::transport::Error },
    /// The gRPC server stopped with an error.
    #[error("gRPC server failed: {error}")]
    Serve { error: tonic::transport::Error },
}

/// Which side a TLS error comes from, for the message.
fn refusal_side(reason: &rustls::Error) -> &'static str {
    match reason {
        rustls::Error::AlertReceived(_) => "refused by the peer (most often: this node's certificate)",
        rustls::Error::InvalidCertificate(_) => "this node refused the peer's certificate",
        _ => "handshake error",
    }
}

// ---- Server -------------------------------------------------------------------------

/// A tonic server builder with this module's HTTP/2 settings (keep-alive pings that
/// notice a vanished peer). Add services to it, each with its message size limits set to
/// [`MAX_MESSAGE_BYTES`], and pass the router to [`serve`].
pub fn server_builder(limits: &ServerLimits) -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(limits.max_streams_per_connection))
}

/// Serves `router` on an already-bound `listener` over mutual TLS until `shutdown`
/// completes, then lets open calls finish. Every request carries the caller's
/// [`PeerIdentity`] (see [`peer_of`]).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    local: LocalIdentity,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TransportError> {
    let live = Arc::new(LiveConnections::default());
    serve_reloadable(
        listener,
        Arc::new(ServerTls::new(tls)),
        local,
        live,
        ServerLimits::default(),
        router,
        shutdown,
    )
    .await
}

/// The server's TLS configuration, replaceable while serving: a new CRL (or a renewed
/// certificate) applies to every connection accepted after [`ServerTls::replace`],
/// without a restart. Connections already open keep the configuration they started
/// with.
#[derive(Debug)]
pub struct ServerTls(std::sync::RwLock<Arc<ServerConfig>>);

impl ServerTls {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self(std::sync::RwLock::new(config))
    }

    fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a complete configuration (writers only swap it).
        match self.0.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, config: Arc<ServerConfig>) {
        match self.0.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

/// [`serve`] with a TLS configuration that can be replaced while serving.
pub async fn serve_reloadable(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    local: LocalIdentity,
    live: Arc<LiveConnections>,
    limits: ServerLimits,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TransportError> {
    // Authenticated streams queue here for tonic; when tonic stops, the receiver is
    // dropped and the accept loop sees the channel closed.
    let (streams, incoming) = mpsc::channel::<Result<ServerStream, io::Error>>(16);
    let accept = tokio::spawn(accept_loop(listener, tls, Arc::new(local), live, limits, streams));
    let result = router.serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown).await;
    accept.abort();
    result.map_err(|error| TransportError::Serve { error })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    local: Arc<LocalIdentity>,
    live: Arc<LiveConnections>,
    limits: ServerLimits,
    streams: mpsc::Sender<Result<ServerStream, io::Error>>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_peer = Arc::new(PeerCounts::default());
    // Handshakes in progress, oldest first, so the oldest can be dropped for a newcomer.
    let mut pending: std::collections::VecDeque<tokio::task::AbortHandle> = std::collections::VecDeque::new();
    loop {
        // Take a connection slot before accepting: at the cap, new connections wait in
        // the kernel's backlog instead of costing a handshake.
        // At the cap with handshakes still pending, the oldest of those gives its slot
        // up: silent connections must not hold the slots authenticated ones need.
        if permits.available_permits() == 0 {
            pending.retain(|task| !task.is_finished());
            if let Some(oldest) = pending.pop_front() {
                oldest.abort();
            }
        }
        let permit = tokio::select! {
            () = streams.closed() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => return,
            },
        };
        let (tcp, remote_addr) = tokio::select! {
            () = streams.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a TCP connection failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        pending.retain(|task| !task.is_finished());
        if pending.len() >= limits.max_pending_handshakes {
            if let Some(oldest) = pending.pop_front() {
                oldest.abort();
                tracing::warn!(address = %remote_addr, limit = limits.max_pending_handshakes, "too many handshakes in progress: dropped the oldest for a new connection");
            }
        }
        let acceptor = TlsAcceptor::from(tls.current());
        let streams = streams.clone();
        let (local, live, per_peer) = (local.clone(), live.clone(), per_peer.clone());
        let task = tokio::spawn(async move {
            let handshake =
                authenticate(&acceptor, &local, tcp, remote_addr, &per_peer, limits.max_connections_per_peer);
            match tokio::time::timeout(limits.handshake, handshake).await.unwrap_or_else(|_elapsed| {
                Err(format!("TLS handshake and identity proof not finished within {:?}", limits.handshake))
            }) {
                Ok((tls, peer, serial, slot)) => {
                    tracing::debug!(peer = %peer.node_id, key = %peer.identity_key, address = %remote_addr, "accepted a connection");
                    let registration = live.register(peer.node_id.clone(), serial);
                    let deadline = Box::pin(tokio::time::sleep(limits.preface));
                    let stream = ServerStream {
                        tls,
                        peer,
                        registration,
                        idle: IdleTimer { deadline, idle: limits.idle, preface: true },
                        _slot: slot,
                        _permit: permit,
                    };
                    // Fails only when the server is shutting down; the connection is dropped.
                    let _ = streams.send(Ok(stream)).await;
                }
                Err(reason) => {
                    tracing::warn!(address = %remote_addr, %reason, "refused a TLS connection");
                }
            }
        });
        pending.push_back(task.abort_handle());
    }
}

/// Authenticated connections per node id.
#[derive(Debug, Default)]
struct PeerCounts(Mutex<std::collections::HashMap<NodeId, usize>>);

/// One of a peer's connection slots; returned on drop.
#[derive(Debug)]
struct PeerSlot {
    counts: Arc<PeerCounts>,
    peer: NodeId,
}

impl PeerCounts {
    fn take(self: &Arc<Self>, peer: &NodeId, limit: usize) -> Option<PeerSlot> {
        let mut counts = self.0.lock().ok()?;
        let count = counts.entry(peer.clone()).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(PeerSlot { counts: self.clone(), peer: peer.clone() })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.0.lock() {
            if let Some(count) = counts.get_mut(&self.peer) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&self.peer);
                }
            }
        }
    }
}

/// Closes a connection that stays silent: first until its HTTP/2 preface, then
/// between any two reads.
#[derive(Debug)]
struct IdleTimer {
    deadline: Pin<Box<tokio::time::Sleep>>,
    idle: Duration,
    preface: bool,
}

impl IdleTimer {
    /// Polled when a read is pending: fails once the deadline passes.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                if self.preface { "no HTTP/2 preface in time" } else { "connection idle for too long" },
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Bytes arrived: the idle clock starts again.
    fn reset(&mut self) {
        self.preface = false;
        self.deadline.as_mut().reset(tokio::time::Instant::now() + self.idle);
    }
}

/// The server half of the handshake: TLS with a client certificate (verified by rustls
/// against the CA and CRLs), the node id from that certificate, then the identity
/// proofs (the client's first, checked, then ours). Returns the stream, who the peer
/// is, its certificate serial and one of its connection slots.
async fn authenticate(
    acceptor: &TlsAcceptor,
    local: &LocalIdentity,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    per_peer: &Arc<PeerCounts>,
    per_peer_limit: usize,
) -> Result<(server::TlsStream<TcpStream>, PeerIdentity, Vec<u8>, PeerSlot), String> {
    // Latency, not throughput, matters for protocol rounds; failure only costs speed.
    let _ = tcp.set_nodelay(true);
    let mut tls = acceptor.accept(tcp).await.map_err(|error| describe_io_error(&error))?;
    let certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| "the client presented no certificate".to_string())?;
    let node_id = node_id_from_certificate(certificate).map_err(|e| e.to_string())?;
    let serial = certificate_serial(certificate).map_err(|e| e.to_string())?;
    let exporter = identity::exporter_of(tls.get_ref().1)?;
    let proof =
        identity::read_proof(&mut tls).await.map_err(|e| format!("{node_id} sent no identity proof: {e}"))?;
    let identity_key = identity::verify_proof(&proof, Role::TlsClient, &node_id, &exporter)?;
    // Over its connection limit, the peer gets no proof back: its connect fails.
    let slot = per_peer.take(&node_id, per_peer_limit).ok_or_else(|| {
        format!("{node_id} already holds its limit of connections ({per_peer_limit}, limits.max_connections_per_peer)")
    })?;
    let ours = identity::make_proof(&local.key, Role::TlsServer, &local.node_id, &exporter);
    identity::write_proof(&mut tls, &ours).await.map_err(|e| format!("sending our identity proof: {e}"))?;
    Ok((tls, PeerIdentity { node_id, identity_key, remote_addr }, serial, slot))
}

/// rustls's reason if the I/O error carries one, else the I/O error itself.
fn describe_io_error(error: &io::Error) -> String {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(alert @ rustls::Error::AlertReceived(_)) => {
            format!("the client refused the handshake (most often: this node's certificate): {alert}")
        }
        Some(tls) => tls.to_string(),
        None => error.to_string(),
    }
}

/// An authenticated server-side connection, as tonic sees it. Holds its connection slot
/// until tonic drops it.
#[derive(Debug)]
struct ServerStream {
    tls: server::TlsStream<TcpStream>,
    peer: PeerIdentity,
    registration: Registration,
    idle: IdleTimer,
    _slot: PeerSlot,
    _permit: OwnedSemaphorePermit,
}

impl Connected for ServerStream {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(Err(closed)) = this.registration.switch.check(cx) {
            return Poll::Ready(Err(closed));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.tls).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.idle.reset();
                    crate::console::metrics::METRICS.received(buf.filled().len() - before);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.idle.poll_expired(cx) {
                Poll::Ready(error) => {
                    tracing::info!(peer = %this.peer.node_id, reason = %error, "closed a silent connection");
                    Poll::Ready(Err(error))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

fn revoked_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed: the peer's certificate was revoked")
}

impl ServerStream {
    fn killed(&self) -> bool {
        self.registration.switch.is_killed()
    }
}

impl ClientStream {
    fn killed(&self) -> bool {
        self.registration.as_ref().is_some_and(|r| r.switch.is_killed())
    }
}

/// Writes go straight to the TLS stream for both stream types (unless a revocation
/// closed the connection); only reads differ.
macro_rules! write_through_tls {
    ($stream:ty) => {
        impl AsyncWrite for $stream {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                let this = self.get_mut();
                if this.killed() {
                    return Poll::Ready(Err(revoked_error()));
                }
                let written = Pin::new(&mut this.tls).poll_write(cx, buf);
                if let Poll::Ready(Ok(n)) = &written {
                    crate::console::metrics::METRICS.sent(*n);
                }
                written
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                let this = self.get_mut();
                if this.killed() {
                    return Poll::Ready(Err(revoked_error()));
                }
                let written = Pin::new(&mut this.tls).poll_write_vectored(cx, bufs);
                if let Poll::Ready(Ok(n)) = &written {
                    crate::console::metrics::METRICS.sent(*n);
                }
                written
            }

            fn is_write_vectored(&self) -> bool {
                self.tls.is_write_vectored()
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.get_mut().tls).poll_flush(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
            }
        }
    };
}

write_through_tls!(ServerStream);

// ---- Client -------------------------------------------------------------------------

/// How a client connection authenticates: our TLS configuration and identity, the key
/// the server must prove (the contract's or the configuration's pin; `None` accepts any
/// key the server proves, for tools that only need transport), and where to register
/// the connection so a revocation can close it.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub tls: Arc<ClientConfig>,
    pub local: LocalIdentity,
    pub expected_key: Option<IdentityPublicKey>,
    pub live: Option<Arc<LiveConnections>>,
}

/// Opens a gRPC channel to the node `expected_peer` at `address` (`host:port`) over
/// mutual TLS and the identity proofs. The first connection is made here, so a refusal
/// by either side comes back as a [`TransportError`] naming the peer, the address and the
/// reason; later reconnects (tonic reconnects a dropped channel on the next call) go
/// through the same checks. `timeout` bounds each connection attempt.
pub async fn connect(
    address: &str,
    expected_peer: &NodeId,
    auth: ClientAuth,
    timeout: Duration,
) -> Result<Channel, TransportError> {
    let address_error = |reason: String| TransportError::Address {
        peer: expected_peer.clone(),
        address: address.to_string(),
        reason,
    };
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .map_err(|e| address_error(e.to_string()))?
        .connect_timeout(timeout)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let server_name =
        ServerName::try_from(expected_peer.as_str().to_string()).map_err(|e| address_error(e.to_string()))?;
    let dialer = Arc::new(Dialer {
        address: address.to_string(),
        peer: expected_peer.clone(),
        server_name,
        connector: TlsConnector::from(auth.tls.clone()),
        auth,
        timeout,
    });
    let first = dialer.dial().await?;
    let connector = NodeConnector { dialer, first: Arc::new(Mutex::new(Some(first))) };
    endpoint.connect_with_connector(connector).await.map_err(|error| TransportError::Channel {
        peer: expected_peer.clone(),
        address: address.to_string(),
        error,
    })
}

/// Everything needed to open one authenticated connection to one peer.
struct Dialer {
    address: String,
    peer: NodeId,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    auth: ClientAuth,
    timeout: Duration,
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("address", &self.address)
            .field("peer", &self.peer)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    async fn dial(&self) -> Result<ClientStream, TransportError> {
        tokio::time::timeout(self.timeout, self.dial_unbounded()).await.map_err(|_elapsed| {
            TransportError::Timeout {
                peer: self.peer.clone(),
                address: self.address.clone(),
                timeout: self.timeout,
            }
        })?
    }

    async fn dial_unbounded(&self) -> Result<ClientStream, TransportError> {
        let tcp = TcpStream::connect(self.address.as_str()).await.map_err(|error| self.io_error(error))?;
        let _ = tcp.set_nodelay(true);
        let mut tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|error| self.io_error(error))?;

        let wrong_peer = |reason: String| TransportError::WrongPeer {
            peer: self.peer.clone(),
            address: self.address.clone(),
            reason,
        };
        let certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or_else(|| wrong_peer("no certificate".into()))?;
        let named = node_id_from_certificate(certificate).map_err(|e| wrong_peer(e.to_string()))?;
        if named != self.peer {
            return Err(wrong_peer(format!("it names {named}")));
        }
        let serial = certificate_serial(certificate).map_err(|e| wrong_peer(e.to_string()))?;

        // Identity proofs: ours first. In TLS 1.3 the server checks our certificate after
        // our side of the handshake is done; its verdict is either an alert (seen when
        // reading its proof) or its proof.
        let identity_error = |reason: String| TransportError::Identity {
            peer: self.peer.clone(),
            address: self.address.clone(),
            reason,
        };
        let exporter = identity::exporter_of(tls.get_ref().1).map_err(identity_error)?;
        let ours =
            identity::make_proof(&self.auth.local.key, Role::TlsClient, &self.auth.local.node_id, &exporter);
        identity::write_proof(&mut tls, &ours).await.map_err(|error| self.io_error(error))?;
        let theirs = match identity::read_proof(&mut tls).await {
            Ok(proof) => proof,
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(TransportError::ClosedByPeer {
                    peer: self.peer.clone(),
                    address: self.address.clone(),
                })
            }
            Err(error) => return Err(self.io_error(error)),
        };
        let proven = identity::verify_proof(&theirs, Role::TlsServer, &self.peer, &exporter)
            .map_err(identity_error)?;
        if let Some(expected) = &self.auth.expected_key {
            if &proven != expected {
                return Err(identity_error(format!(
                    "it proved identity key {proven}, but {expected} is pinned for {}: a certificate for the name without the node's key",
                    self.peer
                )));
            }
        }
        let registration = self.auth.live.as_ref().map(|live| live.register(self.peer.clone(), serial));
        Ok(ClientStream { tls, registration })
    }

    /// Keeps rustls's reason when the I/O error carries one.
    fn io_error(&self, error: io::Error) -> TransportError {
        let (peer, address) = (self.peer.clone(), self.address.clone());
        match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(reason) => TransportError::Handshake { peer, address, reason: reason.clone() },
            None => TransportError::Connect { peer, address, error },
        }
    }
}

/// The connector tonic calls for each (re)connection: the first call gets the
/// connection `connect` already made and checked, later calls dial afresh.
#[derive(Debug, Clone)]
struct NodeConnector {
    dialer: Arc<Dialer>,
    first: Arc<Mutex<Option<ClientStream>>>,
}

impl tower::Service<Uri> for NodeConnector {
    type Response = TokioIo<ClientStream>;
    type Error = TransportError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// The URI is ignored: a connector serves one peer, at the address it was made for.
    fn call(&mut self, _uri: Uri) -> Self::Future {
        // A poisoned lock only means another thread panicked while taking the stream;
        // dialling afresh is then correct.
        let first = self.first.lock().ok().and_then(|mut first| first.take());
        let dialer = Arc::clone(&self.dialer);
        Box::pin(async move {
            let stream = match first {
                Some(stream) => stream,
                None => dialer.dial().await?,
            };
            Ok(TokioIo::new(stream))
        })
    }
}

/// A client-side TLS stream, closed when the server's certificate is revoked.
#[derive(Debug)]
struct ClientStream {
    tls: client::TlsStream<TcpStream>,
    registration: Option<Registration>,
}

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(registration) = &this.registration {
            if let Poll::Ready(Err(closed)) = registration.switch.check(cx) {
                return Poll::Ready(Err(closed));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tls).poll_read(cx, buf);
        crate::console::metrics::METRICS.received(buf.filled().len() - before);
        read
    }
}

write_through_tls!(ClientStream);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_of_requires_an_authenticated_peer() {
        let status = peer_of(&Request::new(())).expect_err("no peer");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);

        let mut request = Request::new(());
        let node_id = NodeId::new("bank-a").expect("id");
        let remote_addr = SocketAddr::from(([127, 0, 0, 1], 7400));
        let identity_key = IdentityKey::from_seed(&[2; 32]).expect("seed").public_key();
        let peer = PeerIdentity { node_id, identity_key, remote_addr };
        request.extensions_mut().insert(peer.clone());
        assert_eq!(peer_of(&request).expect("peer"), peer);
    }

    #[test]
    fn refusals_say_which_side_refused() {
        let peer = NodeId::new("credit-center").expect("id");
        let refused_by_peer = TransportError::Handshake {
            peer: peer.clone(),
            address: "127.0.0.1:7400".into(),
            reason: rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked),
        };
        let message = refused_by_peer.to_string();
        assert!(
            message.contains("refused by the peer") && message.contains("CertificateRevoked"),
            "{message}"
        );
        let refused_by_us = TransportError::Handshake {
            peer,
            address: "127.0.0.1:7400".into(),
            reason: rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        };
        assert!(refused_by_us.to_string().contains("this node refused the peer's certificate"));
    }
}
