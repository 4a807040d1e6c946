//! The deterministic simulator: a virtual clock, a seeded network of stream connections
//! ([`net`]), the REAL [`switchboard_core::hub::Hub`], and peers driving the real agent-link
//! and operator machines ([`nodes`]). A run is a pure function of its seed: the same seed
//! gives the same trace hash; a failing scenario prints its seed and the command replaying it.
//!
//! Seeds: each scenario runs `SIM_SEEDS` seeds (default 8); `SIM_SEED=x` runs exactly one.

pub mod net;
pub mod nodes;
pub mod store;
pub mod trace;
pub mod world;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub use net::NetConfig;
pub use world::{Node, NodeId, World};

/// An argon2id hash with cheap parameters (8 KiB, 1 pass) and a fixed salt: simulations only.
pub fn cheap_hash(secret: &str) -> String {
    let params = Params::new(8, 1, 1, None).expect("argon2 params");
    let salt = SaltString::from_b64("c2ltdWxhdGlvbnNhbHQ").expect("salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2")
        .to_string()
}

/// Verifies a secret against a PHC string, for real.
pub fn verify(phc: &str, secret: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// The seeds to run: `SIM_SEED` alone, else `SIM_SEEDS` (default `default`) seeds from 1.
pub fn seeds(default: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (1..=n).collect()
}

/// Runs `scenario` for every seed; on a failure, panics naming the seed and the replay command.
pub fn for_each_seed(
    test: &str,
    file: &str,
    default: u64,
    scenario: impl Fn(u64) + std::panic::RefUnwindSafe,
) {
    for seed in seeds(default) {
        let r = std::panic::catch_unwind(|| scenario(seed));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "{test} failed with seed {seed}: {msg}\nreplay: SIM_SEED={seed} cargo test -p switchboard-tests --test {file} {test}"
            );
        }
    }
}
