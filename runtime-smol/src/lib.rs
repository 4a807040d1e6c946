//! smol runtime for Switchboard: TCP/TLS fronts, timers, SQLite storage, the agent connector.

pub mod pki;
pub mod store;
pub mod tls;
