//! The secure feed's server key pair on disk: `feed-server.key` (PKCS#8 PEM, mode 0600) and
//! `feed-server.pub.pem` (SubjectPublicKeyInfo PEM, what clients are given), created on the
//! first run.

use std::io;
use std::path::Path;
use std::sync::Arc;

use switchboard_core::feed::crypto::{self, PrivateKey};

/// The private key's file name.
pub const KEY_FILE: &str = "feed-server.key";
/// The public key's file name.
pub const PUBLIC_FILE: &str = "feed-server.pub.pem";

/// Loads the key pair from `dir`, creating it (RSA 2048, OS randomness) if absent; `true`
/// when it was created now.
pub fn load_or_create(dir: &Path) -> io::Result<(Arc<PrivateKey>, bool)> {
    let key_path = dir.join(KEY_FILE);
    let public_path = dir.join(PUBLIC_FILE);
    if key_path.exists() {
        let pem = std::fs::read_to_string(&key_path)?;
        let key = crypto::private_key_from_pem(&pem).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", key_path.display()),
            )
        })?;
        if !public_path.exists() {
            write_public(&public_path, &key)?;
        }
        return Ok((Arc::new(key), false));
    }
    let key =
        crypto::generate_private_key(&mut rand::rngs::OsRng, 2048).map_err(io::Error::other)?;
    let pem = crypto::private_key_pem(&key).map_err(io::Error::other)?;
    let tmp = dir.join(format!("{KEY_FILE}.tmp"));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &key_path)?;
    write_public(&public_path, &key)?;
    Ok((Arc::new(key), true))
}

fn write_public(path: &Path, key: &PrivateKey) -> io::Result<()> {
    let pem = crypto::public_key_pem(&key.to_public_key()).map_err(io::Error::other)?;
    std::fs::write(path, pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded() {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, created) = load_or_create(dir.path()).expect("create");
        assert!(created);
        let (b, created) = load_or_create(dir.path()).expect("load");
        assert!(!created);
        assert_eq!(a.to_public_key(), b.to_public_key());
        let public = std::fs::read_to_string(dir.path().join(PUBLIC_FILE)).expect("pub");
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(crypto::public_key_from_pem(&public), Ok(a.to_public_key()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
}
