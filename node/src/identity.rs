//! The node's long-term secrets in its data directory: the master secret every
//! per-(contract, epoch) key is derived from, and the Ed25519 identity that signs
//! contracts and key advertisements. Files are mode 0600 and refused if looser.
//!
//! Layout of a data directory:
//!
//! ```text
//! secrets/master.key     32 bytes   master secret (HKDF input for all OPRF keys)
//! secrets/identity.key   32 bytes   Ed25519 seed
//! secrets/tls.key        PEM        TLS private key
//! tls.csr                PEM        certificate request to send to the credit center
//! tls.crt                PEM        node certificate issued by the alliance CA
//! ca.crt                 PEM        the alliance CA certificate
//! crl.der                DER        the alliance revocation list (optional)
//! identity.pub           hex        Ed25519 public key, for contracts
//! ca/                               only on the CA node: CA key, cert, issuance index
//! store/                            sled database
//! ```

use std::path::{Path, PathBuf};

use xmcredit_crypto::keys::MasterSecret;
use xmcredit_crypto::sign::{IdentityKey, IdentityPublicKey};

use crate::pki::{read_secret_file, write_secret_file};
use crate::NodeError;

pub const MASTER_KEY_FILE: &str = "secrets/master.key";
pub const IDENTITY_KEY_FILE: &str = "secrets/identity.key";
pub const IDENTITY_PUB_FILE: &str = "identity.pub";
pub const TLS_KEY_FILE: &str = "secrets/tls.key";
pub const CSR_FILE: &str = "tls.csr";
pub const CERT_FILE: &str = "tls.crt";
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CRL_FILE: &str = "crl.der";
pub const CA_DIR: &str = "ca";
pub const STORE_DIR: &str = "store";

/// The node's secrets, loaded.
pub struct NodeSecrets {
    pub master: MasterSecret,
    pub identity: IdentityKey,
}

impl std::fmt::Debug for NodeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSecrets").field("identity", &self.identity.public_key()).finish_non_exhaustive()
    }
}

impl NodeSecrets {
    /// Creates fresh secrets in `data_dir`; refuses to overwrite existing ones.
    pub fn create(data_dir: &Path, rng: &mut impl rand_core::CryptoRngCore) -> Result<Self, NodeError> {
        let master_path = data_dir.join(MASTER_KEY_FILE);
        if master_path.exists() {
            return Err(NodeError::Refused(format!(
                "{} exists: this node is already initialized",
                master_path.display()
            )));
        }
        let master = MasterSecret::generate(rng);
        let identity = IdentityKey::generate(rng);
        write_secret_file(&master_path, master.expose_bytes().as_ref())?;
        write_secret_file(&data_dir.join(IDENTITY_KEY_FILE), identity.expose_seed().as_ref())?;
        let public = data_dir.join(IDENTITY_PUB_FILE);
        std::fs::write(&public, format!("{}\n", identity.public_key()))
            .map_err(|e| NodeError::file(&public, e))?;
        Ok(Self { master, identity })
    }

    /// Loads the secrets, refusing files readable by group or others.
    pub fn load(data_dir: &Path) -> Result<Self, NodeError> {
        let master_bytes = read_secret_file(&data_dir.join(MASTER_KEY_FILE))?;
        let identity_bytes = read_secret_file(&data_dir.join(IDENTITY_KEY_FILE))?;
        let master = MasterSecret::from_bytes(&master_bytes)
            .map_err(|e| NodeError::file(data_dir.join(MASTER_KEY_FILE), e))?;
        let identity = IdentityKey::from_seed(&identity_bytes)
            .map_err(|e| NodeError::file(data_dir.join(IDENTITY_KEY_FILE), e))?;
        Ok(Self { master, identity })
    }

    pub fn public_key(&self) -> IdentityPublicKey {
        self.identity.public_key()
    }
}

/// `data_dir/name`.
pub fn in_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(name)
}
