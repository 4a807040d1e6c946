//! The deterministic simulator: a virtual clock ([`clock`]), a seeded network of stream
//! connections ([`net`]), simulated storage ([`store`]), the REAL
//! [`switchboard_core::hub::Hub`], and peers driving the real agent-link and operator machines
//! ([`agent`], [`operator`]), all owned by a [`World`] ([`world`], run by [`drive`];
//! operators' requests through [`requests`]).
//!
//! A run is a pure function of its seed: the same seed gives the same [`trace`] hash. Every
//! run is bounded in virtual time and in steps and stops by itself. While it runs, the world
//! checks the hub's ordering contract ([`check`]: a change is persisted before anything
//! acknowledging it leaves; nothing is written on a closed connection).
//!
//! ```no_run
//! use std::time::Duration;
//! use switchboard_core::hub::HubConfig;
//! use switchboard_tests::sim::{NetConfig, World, for_each_seed};
//!
//! for_each_seed("echo", "sim_link", 8, |seed| {
//!     let mut w = World::new(seed, HubConfig::default(), NetConfig::with_loss(0.05));
//!     w.connected_agent("a1");
//!     let op = w.connected_operator();
//!     let id = w.start_command(op, "a1", "echo.Echo", serde_json::json!({"[args]": ["hi"]}));
//!     assert_eq!(w.wait_answer(op, id, Duration::from_secs(10)).output, "hi");
//! });
//! ```
//!
//! Seeds: a scenario runs `SIM_SEEDS` seeds (its own default otherwise); `SIM_SEED=x` runs
//! exactly seed `x`. A failure panics naming the seed and the command that replays it.

pub mod agent;
pub mod certs;
pub mod check;
pub mod clock;
pub mod drive;
pub mod feed;
pub mod net;
pub mod node;
pub mod operator;
pub mod requests;
pub mod store;
pub mod streams;
pub mod trace;
pub mod world;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub use agent::{AgentMode, AgentNode, AgentStats, Outcome, byes};
pub use certs::{SimCa, SimCert};
pub use clock::Clock;
pub use net::{Dir, NetConfig, NetStats};
pub use node::Node;
pub use operator::{Answer, OperatorNode, RawNode};
pub use store::{MemStore, Refusal};
pub use world::World;

/// Index of a node in its world.
pub type NodeId = usize;

/// An argon2id PHC string of `secret` with cheap parameters (8 KiB, 1 pass, 1 lane) and a
/// fixed salt: for simulations only, so that a scenario with hundreds of agents stays fast.
pub fn cheap_hash(secret: &str) -> String {
    let params = Params::new(8, 1, 1, None).expect("argon2 params");
    let salt = SaltString::from_b64("c2ltdWxhdGlvbnNhbHQ").expect("salt");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2")
        .to_string()
}

/// Verifies `secret` against a PHC string, for real (with the parameters the string names).
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

/// Runs `scenario` for every seed of [`seeds`]; on a failure, panics naming the seed and the
/// command that replays it (`file` is the test target, `test` the test function).
pub fn for_each_seed(
    test: &str,
    file: &str,
    default: u64,
    scenario: impl Fn(u64) + std::panic::RefUnwindSafe,
) {
    for seed in seeds(default) {
        if let Err(e) = std::panic::catch_unwind(|| scenario(seed)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "{test} failed with seed {seed}: {msg}\n\
                 replay: SIM_SEED={seed} cargo test -p switchboard-tests --test {file} {test}\n\
                 (SIM_TRACE=live prints the run's trace)"
            );
        }
    }
}

/// Timers short enough to exercise in a few virtual seconds: hello 10 s, ping every 5 s
/// answered within 5 s, data requests given up after 5 s.
pub fn short_timers() -> switchboard_core::link::LinkConfig {
    use std::time::Duration;
    switchboard_core::link::LinkConfig {
        hello_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(5),
        ping_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..switchboard_core::link::LinkConfig::default()
    }
}

/// Defines a `#[test]` that runs its body for every seed of [`seeds`] (`$default` unless
/// `SIM_SEEDS` or `SIM_SEED` say otherwise) through [`for_each_seed`]; the test target named in
/// the replay command is the crate the macro is used in.
///
/// ```ignore
/// scenario!(echo_works, 8, |seed| {
///     let mut w = World::new(seed, HubConfig::default(), NetConfig::default());
///     // ...
/// });
/// ```
#[macro_export]
macro_rules! scenario {
    ($(#[$m:meta])* $name:ident, $default:expr, |$seed:ident| $body:block) => {
        $(#[$m])*
        #[test]
        fn $name() {
            let file = module_path!().split("::").next().unwrap_or("sim_link");
            $crate::sim::for_each_seed(stringify!($name), file, $default, |$seed| $body);
        }
    };
}
