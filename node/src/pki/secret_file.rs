//! Key files on disk: written atomically with owner-only permissions, and refused on read
//! when anyone else could have read them.
//!
//! Atomic (temporary file in the same directory, flushed, then renamed over the target)
//! because a node that crashes while rotating its key must find either the old key or the
//! new one, never half of one. Owner-only from the moment the file exists (the mode is
//! given to `open`, not set afterwards), so there is no window in which the key is
//! readable by others. The read check looks at the opened file's metadata, not the path's,
//! so the file checked is the file read.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use zeroize::Zeroizing;

use super::PkiError;

/// Mode of secret files: read and write for the owner only.
const SECRET_MODE: u32 = 0o600;
/// Mode of public files (certificates, CRLs, the CA index).
const PUBLIC_MODE: u32 = 0o644;

/// Writes a secret (a private key) to `path` with mode 0600, atomically: a reader sees the
/// old content or the new, and the file is never readable by group or others.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    write_atomic(path, bytes, SECRET_MODE)
}

/// Writes a public file (certificate, CRL, CA index) to `path` with mode 0644, atomically.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    write_atomic(path, bytes, PUBLIC_MODE)
}

/// Reads a secret written by [`write_secret_file`], refusing it with
/// [`PkiError::InsecurePermissions`] if its mode gives group or others any access.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let io = |action, error| PkiError::Io { action, path: path.to_path_buf(), error };
    let mut file = File::open(path).map_err(|e| io("open", e))?;
    let metadata = file.metadata().map_err(|e| io("inspect", e))?;
    if !metadata.is_file() {
        return Err(io("read", std::io::Error::other("not a regular file")));
    }
    check_owner_only(path, &metadata)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0)));
    file.read_to_end(&mut bytes).map_err(|e| io("read", e))?;
    Ok(bytes)
}

#[cfg(unix)]
fn check_owner_only(path: &Path, metadata: &std::fs::Metadata) -> Result<(), PkiError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PkiError::InsecurePermissions { path: path.to_path_buf(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(path: &Path, _metadata: &std::fs::Metadata) -> Result<(), PkiError> {
    Err(PkiError::Io {
        action: "check the permissions of",
        path: path.to_path_buf(),
        error: std::io::Error::other("secret files are only supported on Unix file systems"),
    })
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let io = |action, target: &Path, error| PkiError::Io { action, path: target.to_path_buf(), error };
    let file_name = path
        .file_name()
        .ok_or_else(|| io("write", path, std::io::Error::other("the path does not name a file")))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".tmp-{:016x}", rand::random::<u64>()));
    let temp = dir.join(temp_name);

    let result = (|| {
        let mut file = create_new_with_mode(&temp, mode).map_err(|e| io("create", &temp, e))?;
        file.write_all(bytes).map_err(|e| io("write", &temp, e))?;
        file.sync_all().map_err(|e| io("flush", &temp, e))?;
        std::fs::rename(&temp, path).map_err(|e| io("rename a temporary file onto", path, e))
    })();
    if result.is_err() {
        // Best effort: the temporary file holds no more than the caller meant to write.
        let _ = std::fs::remove_file(&temp);
        return result;
    }
    // Make the rename itself durable; a directory that cannot be opened (some platforms)
    // is not an error, the file content is already on disk.
    if let Ok(dir_handle) = File::open(dir) {
        dir_handle.sync_all().map_err(|e| io("flush the directory", dir, e))?;
    }
    Ok(())
}

#[cfg(unix)]
fn create_new_with_mode(path: &Path, mode: u32) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    // The umask may have removed bits from `mode`; set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(file)
}

#[cfg(not(unix))]
fn create_new_with_mode(path: &Path, _mode: u32) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn secret_round_trip_has_mode_0600() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("node.key");
        write_secret_file(&path, b"first").expect("write");
        write_secret_file(&path, b"second").expect("overwrite");
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret_file(&path).expect("read").as_slice(), b"second");
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    }

    #[test]
    fn world_readable_secret_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("node.key");
        std::fs::write(&path, b"key").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_secret_file(&path).expect_err("0644 must be refused");
        assert!(matches!(err, PkiError::InsecurePermissions { mode: 0o644, .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("node.key") && message.contains("0644") && message.contains("chmod 600"));
    }

    #[test]
    fn group_readable_secret_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ca.key");
        std::fs::write(&path, b"key").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(read_secret_file(&path), Err(PkiError::InsecurePermissions { mode: 0o640, .. })));
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = read_secret_file(&dir.path().join("absent.key")).expect_err("missing");
        assert!(err.to_string().contains("absent.key"), "{err}");
    }
}
