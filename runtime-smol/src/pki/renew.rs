//! The agent's side of certificate renewal: a new key and its request, and installing the
//! signed certificate durably (so that a crash at any point leaves a matching pair).
//!
//! Install protocol: write `KEY.new`, then `CERT.new` (each written to a temporary name, synced
//! and renamed, so each is whole or absent); `CERT.new` existing means the new pair is complete.
//! Then rename `KEY.new` over `KEY` and `CERT.new` over `CERT`. [`recover_renewal`] (run before
//! the files are read) finishes an install that a crash interrupted, or drops half a one.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, KeyPair};

use super::{PkiError, Result, common_name_dn, write_file};

/// A fresh private key and a certificate request for it.
pub struct KeyAndRequest {
    /// The private key, PKCS#8 PEM. Keep it secret.
    pub key_pem: String,
    /// The PKCS#10 request (DER) naming `id`, signed with the key.
    pub csr_der: Vec<u8>,
}

impl std::fmt::Debug for KeyAndRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndRequest")
            .field("key_pem", &"<secret>")
            .field("csr_der", &self.csr_der.len())
            .finish()
    }
}

/// Generates an ECDSA P-256 key and a request for a certificate naming `id`.
pub fn new_key_and_request(id: &str) -> Result<KeyAndRequest> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name_dn(id);
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndRequest {
        key_pem: key.serialize_pem(),
        csr_der: csr.der().to_vec(),
    })
}

fn pending(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|source| PkiError::Io {
        path: to.to_owned(),
        source,
    })
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(d) = fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = d.sync_all();
    }
}

/// Stores a renewed certificate and its key over `cert_path` and `key_path`, durably, before
/// the caller uses them (see the module docs for the order of writes).
pub fn install_renewed(
    cert_path: &Path,
    key_path: &Path,
    cert_pem: &str,
    key_pem: &str,
) -> Result<()> {
    let (cert_new, key_new) = (pending(cert_path), pending(key_path));
    write_file(&key_new, key_pem.as_bytes(), 0o600)?;
    write_file(&cert_new, cert_pem.as_bytes(), 0o644)?;
    sync_dir(cert_path);
    rename(&key_new, key_path)?;
    rename(&cert_new, cert_path)?;
    sync_dir(cert_path);
    Ok(())
}

/// Finishes or drops an interrupted [`install_renewed`]. Returns true if it finished one.
pub fn recover_renewal(cert_path: &Path, key_path: &Path) -> Result<bool> {
    let (cert_new, key_new) = (pending(cert_path), pending(key_path));
    if cert_new.exists() {
        if key_new.exists() {
            rename(&key_new, key_path)?;
        }
        rename(&cert_new, cert_path)?;
        sync_dir(cert_path);
        return Ok(true);
    }
    if key_new.exists() {
        fs::remove_file(&key_new).map_err(|source| PkiError::Io {
            path: key_new.clone(),
            source,
        })?;
    }
    Ok(false)
}
