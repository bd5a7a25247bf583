//! Who may use the console: whoever holds the login token (a 256-bit random value in
//! `<data_dir>/console.token`, mode 0600, so the node's local account), for a session
//! that lives in this process only. The session cookie is HttpOnly and SameSite=Strict;
//! every POST also carries the session's CSRF token in a hidden field, compared in
//! constant time. A restart logs everyone out.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::pki::{read_secret_file, write_secret_file};
use crate::NodeError;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "xmcredit_session";
/// Sessions held at once; the oldest goes when a login would exceed it (each login is
/// someone who holds the token, so this only bounds memory).
pub const MAX_SESSIONS: usize = 64;

/// The login token, as read from its file.
pub struct LoginToken(Zeroizing<String>);

impl std::fmt::Debug for LoginToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginToken(..)")
    }
}

impl LoginToken {
    /// Reads the token file, writing a fresh token first if there is none. A file that
    /// group or others can read is refused, as for every key file.
    pub fn ensure(data_dir: &Path) -> Result<Self, NodeError> {
        let path = super::token_path(data_dir);
        if !path.exists() {
            let mut bytes = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(bytes.as_mut());
            let text = Zeroizing::new(format!("{}\n", hex::encode(bytes.as_ref())));
            write_secret_file(&path, text.as_bytes())?;
            tracing::info!(path = %path.display(), "wrote the console login token");
        }
        let bytes = read_secret_file(&path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| {
                NodeError::Refused(format!("{} is not text: delete it and restart", path.display()))
            })?
            .trim()
            .to_string();
        if text.len() < 32 {
            return Err(NodeError::Refused(format!(
                "{} holds a token of {} characters; a login token needs at least 32: delete the file and restart to get a fresh one",
                path.display(),
                text.len()
            )));
        }
        Ok(Self(Zeroizing::new(text)))
    }

    /// Whether `offered` is the token, in time independent of where they differ.
    pub fn matches(&self, offered: &str) -> bool {
        let offered = offered.trim().as_bytes();
        let expected = self.0.as_bytes();
        offered.len() == expected.len() && bool::from(offered.ct_eq(expected))
    }
}

/// A logged-in session: its CSRF token and when it ends.
#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    created: Instant,
    expires: Instant,
}

/// The sessions of this process, by session id (the cookie's value).
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Sessions {
    /// Starts a session lasting `lifetime`; returns its id.
    pub fn create(&self, lifetime: Duration) -> String {
        let id = random_hex();
        let now = Instant::now();
        let session = Session { csrf: random_hex(), created: now, expires: now + lifetime };
        let mut sessions = match self.by_id.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.created).map(|(id, _)| id.clone()) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), session);
        id
    }

    /// The live session with id `id`. Lookup is by hash map on a 256-bit random id, so
    /// its timing says nothing useful about other ids.
    pub fn get(&self, id: &str) -> Option<Session> {
        let sessions = match self.by_id.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        sessions.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut sessions) = self.by_id.lock() {
            sessions.remove(id);
        }
    }
}

impl Session {
    /// Whether a form's CSRF field is this session's token.
    pub fn csrf_matches(&self, offered: &str) -> bool {
        offered.len() == self.csrf.len() && bool::from(offered.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_written_once_owner_only_and_compared_exactly() -> Result<(), NodeError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().map_err(|e| NodeError::Internal(e.to_string()))?;
        let first = LoginToken::ensure(dir.path())?;
        let mode = std::fs::metadata(super::super::token_path(dir.path()))
            .map_err(|e| NodeError::Internal(e.to_string()))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = LoginToken::ensure(dir.path())?;
        assert!(again.matches(&first.0), "the token is kept across restarts");
        assert!(!first.matches(""));
        assert!(!first.matches(&first.0[..first.0.len() - 1]), "a prefix is not the token");
        let mut flipped = first.0.to_string();
        flipped.replace_range(0..1, if flipped.starts_with('0') { "1" } else { "0" });
        assert!(!first.matches(&flipped));
        Ok(())
    }

    #[test]
    fn a_group_readable_token_file_is_refused() -> Result<(), NodeError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().map_err(|e| NodeError::Internal(e.to_string()))?;
        let path = super::super::token_path(dir.path());
        std::fs::write(&path, "a".repeat(64)).map_err(|e| NodeError::Internal(e.to_string()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        assert!(LoginToken::ensure(dir.path()).is_err());
        Ok(())
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let header = "other=1; xmcredit_session_x=2; xmcredit_session=abc";
        assert_eq!(cookie(header, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie("xmcredit_session_x=2", SESSION_COOKIE), None);
    }
}
