//! The operator's channel: the Admin service on a Unix-domain socket inside the data
//! directory, never on the network listener (issue 9). Reaching it takes a local account
//! that can open `admin.sock` (mode 0600 in a 0700 directory); a certificate, whoever
//! issued it, gives no operator power. The server also checks the connecting process's
//! uid (SO_PEERCRED) against the owner of the data directory.

use std::future::Future;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::Uri;
use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint};

use crate::NodeError;

/// The socket's file name in the data directory.
pub const ADMIN_SOCKET: &str = "admin.sock";
/// Unix socket paths are limited to 108 bytes by the kernel (sun_path).
const MAX_SOCKET_PATH: usize = 100;

/// Where the admin socket of the node with data directory `data_dir` lives.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_SOCKET)
}

fn check_path(path: &Path) -> Result<(), NodeError> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(NodeError::Refused(format!(
            "the admin socket path {} is {} bytes; Unix sockets allow about {MAX_SOCKET_PATH}: use a shorter data directory path",
            path.display(),
            path.as_os_str().len()
        )));
    }
    Ok(())
}

/// Binds the admin socket (replacing a stale one: only one node can hold the store, so
/// a socket file left here is from a node that is gone) with mode 0600.
pub fn bind(data_dir: &Path) -> Result<UnixListener, NodeError> {
    let path = socket_path(data_dir);
    check_path(&path)?;
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(path = %path.display(), "removed a stale admin socket"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(NodeError::file(&path, e)),
    }
    let listener = UnixListener::bind(&path).map_err(|e| NodeError::file(&path, e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| NodeError::file(&path, e))?;
    Ok(listener)
}

/// Serves `router` (the Admin service) on `listener` until `shutdown`. A connection from
/// a process whose uid is neither the data directory's owner nor root is closed at once
/// and logged.
pub async fn serve(
    listener: UnixListener,
    data_dir: &Path,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let owner = std::fs::metadata(data_dir).map_err(|e| NodeError::file(data_dir, e))?.uid();
    let (streams, incoming) = mpsc::channel::<Result<UnixStream, io::Error>>(4);
    let accept = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = streams.closed() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().map(|cred| cred.uid()).ok();
                    if uid.is_some_and(|uid| uid == owner || uid == 0) {
                        let _ = streams.send(Ok(stream)).await;
                    } else {
                        tracing::warn!(?uid, owner, "refused an admin connection from another local user");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "accepting an admin connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    let result = router.serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown).await;
    accept.abort();
    result.map_err(|e| NodeError::Internal(format!("admin socket server: {e}")))
}

/// A gRPC channel to the admin socket of the node whose data directory is `data_dir`.
pub async fn connect(data_dir: &Path) -> Result<Channel, NodeError> {
    let path = socket_path(data_dir);
    check_path(&path)?;
    if !path.exists() {
        return Err(NodeError::Refused(format!(
            "no admin socket at {}: is `xmcredit-node serve` running for this data directory?",
            path.display()
        )));
    }
    // The URI is a placeholder: the connector ignores it and dials the socket.
    let endpoint = Endpoint::from_static("http://admin.local");
    endpoint.connect_with_connector(SocketConnector { path: path.clone() }).await.map_err(|e| {
        NodeError::Refused(format!("cannot reach this node's admin socket {}: {e}", path.display()))
    })
}

#[derive(Debug, Clone)]
struct SocketConnector {
    path: PathBuf,
}

impl tower::Service<Uri> for SocketConnector {
    type Response = TokioIo<UnixStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(path).await?)) })
    }
}
