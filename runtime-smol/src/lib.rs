//! smol runtime for Switchboard: TCP/TLS fronts, timers, SQLite storage, the agent connector.
//!
//! Runtimes move bytes and time; they decide nothing. Reading the clock and OS randomness is
//! their job, so the core's `disallowed_methods` lint is lifted here.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod agent;
pub mod client;
pub mod feed_keys;
pub mod operations;
pub mod pki;
pub mod secret;
pub mod server;
pub mod sources;
pub mod store;
pub mod tls;
