//! The one vocabulary every protocol machine speaks (DESIGN.md §3).
//!
//! A machine is fed with [`handle_input`](crate::link::ManagerLink::handle_input) (bytes that
//! arrived, any split) and `handle_timeout(now)` (safe to call spuriously), and drained with
//! `poll_action()` until it returns `None`; `poll_timeout()` tells when to call
//! `handle_timeout` next. Time is always passed in; randomness comes from a seeded RNG.

use std::fmt;
use std::time::Instant;

use bytes::Bytes;

/// What a machine asks its owner to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<E> {
    /// Write these bytes, in order, as one write (one TLS record per frame).
    Send(Bytes),
    /// Close the connection after flushing everything sent before. Nothing follows it.
    Close(CloseReason),
    /// (Re)arm this machine's single timer: call `handle_timeout` at this instant.
    Timer(Instant),
    /// Something the owner must act on.
    Event(E),
}

/// Why a connection is closed. Sticky: a machine that closed keeps reporting the same reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer said Bye (or closed after its Bye), or we said Bye on request.
    Bye(String),
    /// The peer broke the protocol: the message says how. A Bye was sent when possible.
    Protocol(String),
    /// Authentication failed (a Bye was sent).
    AuthFailed(String),
    /// A deadline passed: hello, ping, handshake.
    Timeout(&'static str),
    /// A newer connection of the same identity replaced this one.
    Replaced,
    /// The owner asked to close (shutdown, removal).
    Local(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Bye(r) => write!(f, "bye: {r}"),
            CloseReason::Protocol(r) => write!(f, "protocol error: {r}"),
            CloseReason::AuthFailed(r) => write!(f, "authentication failed: {r}"),
            CloseReason::Timeout(what) => write!(f, "{what} timed out"),
            CloseReason::Replaced => f.write_str("replaced by a newer connection"),
            CloseReason::Local(r) => write!(f, "closed: {r}"),
        }
    }
}

/// Caller misuse of a machine's API (never caused by network input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiMisuse {
    /// The connection is not (or no longer) in a state where this call makes sense.
    #[error("connection is not established")]
    NotEstablished,
    /// The connection was closed.
    #[error("connection is closed")]
    Closed,
    /// Unknown id given.
    #[error("unknown id {0}")]
    UnknownId(i64),
    /// Only one of these may be in flight at once.
    #[error("already in progress")]
    InProgress,
}
