//! Agent secrets: argon2id hashing and verification, always off the hub loop.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;

/// The default argon2id cost (OWASP's minimum: 19 MiB, 2 passes, 1 lane).
pub fn default_params() -> Params {
    Params::new(19 * 1024, 2, 1, None).unwrap_or_default()
}

/// A cheap cost for synthetic load-test agents and simulations only (1 MiB, 1 pass). Never
/// use it for real secrets.
pub fn cheap_params() -> Params {
    Params::new(1024, 1, 1, None).unwrap_or_default()
}

/// Hashes `secret` with argon2id and a random salt, as a PHC string.
pub fn hash_secret(secret: &str, params: Params) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("argon2: {e}"))
}

/// A random secret for a new agent: 32 bytes of OS randomness, hex.
pub fn generate_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Verifies `secret` against a PHC string. `None` (unknown agent) spends the same effort on a
/// dummy hash and answers false, so timing does not reveal whether an agent exists.
pub fn verify_secret(phc: Option<&str>, secret: &str, dummy: &str) -> bool {
    let (phc, real) = match phc {
        Some(p) => (p, true),
        None => (dummy, false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(secret.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_secret("s3cret", cheap_params()).expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_secret(Some(&h), "s3cret", &h));
        assert!(!verify_secret(Some(&h), "wrong", &h));
        assert!(
            !verify_secret(None, "s3cret", &h),
            "unknown agent never verifies"
        );
        assert!(!verify_secret(Some("garbage"), "s3cret", &h));
        assert_eq!(generate_secret().len(), 64);
    }
}
