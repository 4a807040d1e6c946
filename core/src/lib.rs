//! Sans-IO protocol machines of Switchboard.
//!
//! Nothing in this crate opens a socket, reads a clock, spawns a thread or reaches for OS
//! randomness (`clippy.toml` forbids it): every machine consumes bytes and `now`, and emits
//! [`machine::Action`]s. Runtimes (`switchboard-runtime-smol`, `switchboard-runtime-mio`, a
//! simulator, or your own event loop) move the bytes and the time.
#![forbid(unsafe_code)]

pub mod auth;
pub mod feed;
pub mod hub;
pub mod kv;
pub mod link;
pub mod machine;
pub mod net;
pub mod perm;
pub mod relay;
pub mod rng;
pub mod session;
pub mod stream;
pub mod web;
