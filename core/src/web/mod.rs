//! The web face: HTTP/1.1 and WebSocket (RFC 6455) in front of native sessions, JSON-RPC 2.0
//! over the hub's operations, binary native frames, and the embedded web console. All of it
//! sans-IO: [`WebConn`] consumes bytes and `now` and emits bytes for the client and for the
//! hub.

mod conn;
pub mod http;
pub mod jsonrpc;
mod static_files;
pub mod ws;

pub use conn::{COOKIE_NAME, WebConfig, WebConn, WebOutput};
