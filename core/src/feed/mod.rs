//! The secure feed (seed 004, PROTOCOLS.md §3): RSA-authenticated clients over WebSocket
//! binary frames, XDR messages, AES-256-CBC frames, sequenced commands, RPC calls and the
//! hub's ordered event log. Compatible with the public Cryptology client (v1 and final).

pub mod client;
mod conn;
pub mod crypto;
pub mod messages;
pub mod xdr;
pub use conn::{ClientInfo, FeedConfig, FeedConn, FeedOutput, UNIFORM_ERROR, close_code};
