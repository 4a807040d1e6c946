//! The secure feed (seed 004, PROTOCOLS.md §3): RSA-authenticated clients over WebSocket
//! binary frames, XDR messages, AES-256-CBC frames, sequenced commands, RPC calls and the
//! hub's ordered event log. Compatible with the public Cryptology client (v1 and final).

pub mod client;
mod conn;
pub mod crypto;
pub mod messages;
pub mod xdr;
pub use conn::{ClientInfo, FeedConfig, FeedConn, FeedOutput, UNIFORM_ERROR, close_code};

/// The pre-generated RSA-2048 test keys of `testdata/` ("server", "client_a", "client_b").
#[cfg(test)]
pub(crate) fn test_key(name: &str) -> crypto::PrivateKey {
    let pem = match name {
        "server" => include_str!("testdata/server.pem"),
        "client_a" => include_str!("testdata/client_a.pem"),
        _ => include_str!("testdata/client_b.pem"),
    };
    crypto::private_key_from_pem(pem).expect("test key")
}
