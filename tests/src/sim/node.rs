//! What every simulated peer has in common: how the world drives it and what it asks of the
//! world. A peer never touches the network itself; it returns [`Out`]s.

use std::time::Instant;

use switchboard_core::hub::ConnId;
use switchboard_core::machine::{Action, CloseReason};

use super::agent::AgentNode;
use super::operator::{OperatorNode, RawNode};

/// What a peer asks the world to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Open a new connection to the hub (the world answers with `connecting`).
    Connect,
    /// Write bytes on a connection.
    Send(ConnId, Vec<u8>),
    /// Close a connection (FIN after the bytes written before).
    Fin(ConnId),
    /// Give up a connection attempt (connect timeout): the socket is closed.
    Abandon(ConnId),
}

/// A peer of the hub.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a few hundred nodes at most: boxing buys nothing
pub enum Node {
    /// An agent (real [`switchboard_core::link::AgentLink`] and `Backoff`).
    Agent(AgentNode),
    /// An operator (real [`switchboard_core::session::ClientSession`]).
    Operator(OperatorNode),
    /// A peer that writes chosen bytes and records what comes back.
    Raw(RawNode),
    /// A secure-feed client (through the web face).
    Feed(super::feed::FeedNode),
}

impl Node {
    /// The name its client certificate carries.
    pub fn cert_name(&self) -> Option<String> {
        match self {
            Node::Agent(a) => a.cert_name.clone(),
            Node::Operator(o) => o.cert_name.clone(),
            Node::Raw(r) => r.cert_name.clone(),
            Node::Feed(_) => None,
        }
    }

    /// Whether it connects to the web face (no certificate; a WebConn on the hub's side).
    pub fn is_web(&self) -> bool {
        matches!(self, Node::Feed(_))
    }

    /// The certificate it presents, if the scenario models one.
    pub fn cert(&self) -> Option<&super::SimCert> {
        match self {
            Node::Agent(a) => a.cert.as_ref(),
            _ => None,
        }
    }

    /// When it next has something to do on its own.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Node::Agent(a) => a.poll_timeout(),
            Node::Operator(o) => o.poll_timeout(),
            Node::Raw(r) => r.poll_timeout(),
            Node::Feed(f) => f.poll_timeout(),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Out>) {
        match self {
            Node::Agent(a) => a.handle_timeout(now, out),
            Node::Operator(o) => o.handle_timeout(now, out),
            Node::Raw(r) => r.handle_timeout(now, out),
            Node::Feed(f) => f.handle_timeout(now, out),
        }
    }

    /// The world opened `conn` for it (after an [`Out::Connect`]).
    pub(crate) fn connecting(&mut self, now: Instant, conn: ConnId) {
        match self {
            Node::Agent(a) => a.connecting(now, conn),
            Node::Operator(o) => o.conn = Some(conn),
            Node::Raw(r) => r.conn = Some(conn),
            Node::Feed(f) => f.conn = Some(conn),
        }
    }

    pub(crate) fn established(
        &mut self,
        now: Instant,
        conn: ConnId,
        seed: u64,
        out: &mut Vec<Out>,
    ) {
        match self {
            Node::Agent(a) => a.established(now, conn, seed, out),
            Node::Operator(o) => o.established(now, conn, seed, out),
            Node::Raw(r) => r.established(now, conn, out),
            Node::Feed(f) => f.established(now, conn, seed, out),
        }
    }

    pub(crate) fn input(&mut self, now: Instant, conn: ConnId, bytes: &[u8], out: &mut Vec<Out>) {
        match self {
            Node::Agent(a) => a.input(now, conn, bytes, out),
            Node::Operator(o) => o.input(now, conn, bytes, out),
            Node::Raw(r) => r.input(conn, bytes),
            Node::Feed(f) => f.input(now, conn, bytes, out),
        }
    }

    /// The connection ended under it (FIN or reset from the hub, or refused).
    pub(crate) fn transport_closed(
        &mut self,
        now: Instant,
        conn: ConnId,
        why: &str,
        out: &mut Vec<Out>,
    ) {
        match self {
            Node::Agent(a) => a.transport_closed(now, conn, why, out),
            Node::Operator(o) => o.transport_closed(now, conn, why, out),
            Node::Raw(r) => r.transport_closed(now, conn, why),
            Node::Feed(f) => f.transport_closed(now, conn, why),
        }
    }
}

/// Drains one machine: writes become [`Out::Send`]s (those `keep` accepts: a write is one
/// frame), a close becomes an [`Out::Fin`] and is returned with the events, in order.
pub(crate) fn drain<E>(
    conn: ConnId,
    keep: impl Fn(&[u8]) -> bool,
    mut next: impl FnMut() -> Option<Action<E>>,
    out: &mut Vec<Out>,
) -> (Vec<E>, Option<CloseReason>) {
    let (mut events, mut close) = (vec![], None);
    while let Some(a) = next() {
        match a {
            Action::Send(b) if keep(&b) => out.push(Out::Send(conn, b.to_vec())),
            Action::Send(_) | Action::Timer(_) => {}
            Action::Close(r) => {
                out.push(Out::Fin(conn));
                close = Some(r);
            }
            Action::Event(e) => events.push(e),
        }
    }
    (events, close)
}
