//! Simulated operators (the real [`ClientSession`]) and raw peers (chosen bytes).

use std::time::{Duration, Instant};

use switchboard_core::hub::ConnId;
use switchboard_core::link::LinkConfig;
use switchboard_core::link::msg::response_id;
use switchboard_core::machine::{ApiMisuse, CloseReason};
use switchboard_core::session::{ClientEvent, ClientSession};
use switchboard_proto::command_result::Status;
use switchboard_proto::message::Message as Body;

use super::node::{Out, drain};

/// The final answer of a command, as an operator heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status.
    pub status: Status,
    /// Output.
    pub output: String,
    /// True for CommandDone (the answer to a cancel), false for CommandResult.
    pub done: bool,
}

/// A simulated operator session, connected once (it does not reconnect).
#[derive(Debug)]
pub struct OperatorNode {
    /// The name its client certificate carries ("admin" by default).
    pub cert_name: Option<String>,
    pub(crate) conn: Option<ConnId>,
    session: Option<ClientSession>,
    link_cfg: LinkConfig,
    /// The user the hub welcomed it as.
    pub user: Option<String>,
    /// Everything the hub sent after the welcome, with when it arrived.
    pub inbox: Vec<(Instant, Body)>,
    /// When and why the session ended.
    pub closed: Option<(Instant, CloseReason)>,
    next_rid: u64,
    /// Its streams (as a sink, [`super::streams`]).
    pub sinks: super::streams::SimSinks,
}

impl OperatorNode {
    pub(crate) fn new(cert_name: Option<String>, link_cfg: LinkConfig) -> Self {
        OperatorNode {
            cert_name,
            conn: None,
            session: None,
            link_cfg,
            user: None,
            inbox: vec![],
            closed: None,
            next_rid: 0,
            sinks: Default::default(),
        }
    }

    /// Whether the hub welcomed it (and it is still open).
    pub fn is_open(&self) -> bool {
        self.session.as_ref().is_some_and(ClientSession::is_open)
    }

    /// A fresh request id.
    pub fn request_id(&mut self) -> u64 {
        self.next_rid += 1;
        self.next_rid
    }

    /// Sends a request (any control message, or CommandCancel); the world flushes it.
    pub(crate) fn send(&mut self, body: Body) -> Result<(), ApiMisuse> {
        match &mut self.session {
            Some(s) => s.send_request(body),
            None => Err(ApiMisuse::NotEstablished),
        }
    }

    /// The response (or ControlError) to request `rid`.
    pub fn response(&self, rid: u64) -> Option<&Body> {
        self.inbox
            .iter()
            .map(|(_, m)| m)
            .find(|m| response_id(m) == Some(rid))
    }

    /// The command id a RunCommandRequest `rid` got.
    pub fn command_id(&self, rid: u64) -> Option<i64> {
        match self.response(rid)? {
            Body::RunCommandResponse(r) => Some(r.command_id),
            _ => None,
        }
    }

    /// Every final answer (result or done) heard for command `id`, in order.
    pub fn answers(&self, id: i64) -> Vec<Answer> {
        let status = |s: i32| Status::try_from(s).unwrap_or(Status::Unspecified);
        self.inbox
            .iter()
            .filter_map(|(_, m)| match m {
                Body::Result(r) if r.command_id == id => Some(Answer {
                    status: status(r.status),
                    output: r.output.clone(),
                    done: false,
                }),
                Body::Done(d) if d.command_id == id => Some(Answer {
                    status: status(d.status),
                    output: d.output.clone(),
                    done: true,
                }),
                _ => None,
            })
            .collect()
    }

    /// The first final answer heard for command `id`.
    pub fn answer(&self, id: i64) -> Option<Answer> {
        self.answers(id).into_iter().next()
    }

    /// The `current` of every progress heard for command `id`, in order.
    pub fn progress(&self, id: i64) -> Vec<u32> {
        self.inbox
            .iter()
            .filter_map(|(_, m)| match m {
                Body::Progress(p) if p.command_id == id => Some(p.current),
                _ => None,
            })
            .collect()
    }

    /// The event notices it was sent, in the order they arrived.
    pub fn notices(&self) -> Vec<switchboard_proto::EventNotice> {
        self.inbox
            .iter()
            .filter_map(|(_, m)| match m {
                Body::EventNotice(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    /// The operator's process goes away: nothing more reaches it.
    pub(crate) fn hang_up(&mut self, now: Instant) {
        self.session = None;
        self.sinks.ended(now, "hung up");
        self.closed
            .get_or_insert((now, CloseReason::Local("hung up".into())));
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.session.as_ref().and_then(ClientSession::poll_timeout)
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Out>) {
        if let Some(s) = &mut self.session {
            s.handle_timeout(now);
        }
        self.pump(now, out);
    }

    pub(crate) fn established(
        &mut self,
        now: Instant,
        conn: ConnId,
        seed: u64,
        out: &mut Vec<Out>,
    ) {
        if self.conn != Some(conn) || self.session.is_some() {
            return;
        }
        self.session = Some(ClientSession::new(now, self.link_cfg.clone(), "sim", seed));
        self.pump(now, out);
    }

    pub(crate) fn input(&mut self, now: Instant, conn: ConnId, bytes: &[u8], out: &mut Vec<Out>) {
        if self.conn == Some(conn)
            && let Some(s) = &mut self.session
        {
            s.handle_input(now, bytes);
        }
        self.pump(now, out);
    }

    pub(crate) fn transport_closed(
        &mut self,
        now: Instant,
        conn: ConnId,
        why: &str,
        out: &mut Vec<Out>,
    ) {
        if self.conn != Some(conn) {
            return;
        }
        match &mut self.session {
            Some(s) => s.handle_transport_closed(why),
            None => self.closed = Some((now, CloseReason::Bye(format!("connect failed: {why}")))),
        }
        self.pump(now, out);
    }

    /// Flushes the session's actions.
    pub(crate) fn pump(&mut self, now: Instant, out: &mut Vec<Out>) {
        let (Some(conn), Some(s)) = (self.conn, self.session.as_mut()) else {
            return;
        };
        loop {
            let (events, close) = drain(conn, |_| true, || s.poll_action(), out);
            for e in events {
                match e {
                    ClientEvent::Welcome { user, .. } => self.user = Some(user),
                    ClientEvent::Message(m) if super::streams::SimSinks::handles(&m) => {
                        self.sinks.on_message(now, m)
                    }
                    ClientEvent::Message(m) => self.inbox.push((now, m)),
                }
            }
            if let Some(r) = close {
                self.sinks.ended(now, &r.to_string());
                self.closed = Some((now, r));
                return;
            }
            if !self.sinks.flush(now, s) {
                return;
            }
        }
    }
}

/// A peer that writes chosen bytes once connected and records what comes back.
#[derive(Debug, Default)]
pub struct RawNode {
    /// The name its client certificate carries.
    pub cert_name: Option<String>,
    /// Its connection.
    pub conn: Option<ConnId>,
    /// What it writes, and when (after its connection came up), in order.
    pub script: Vec<(Duration, Vec<u8>)>,
    /// When its connection came up.
    pub established_at: Option<Instant>,
    /// Bytes received from the hub.
    pub received: Vec<u8>,
    /// When and how the connection ended ("closed by the hub", "connection reset"...).
    pub closed: Option<(Instant, String)>,
}

impl RawNode {
    pub(crate) fn established(&mut self, now: Instant, conn: ConnId, out: &mut Vec<Out>) {
        if self.conn != Some(conn) {
            return;
        }
        self.established_at = Some(now);
        self.handle_timeout(now, out);
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let up = self.established_at?;
        if self.closed.is_some() {
            return None;
        }
        self.script.first().map(|(d, _)| up + *d)
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Out>) {
        let (Some(conn), Some(up)) = (self.conn, self.established_at) else {
            return;
        };
        while self.closed.is_none() && self.script.first().is_some_and(|(d, _)| up + *d <= now) {
            let (_, bytes) = self.script.remove(0);
            out.push(Out::Send(conn, bytes));
        }
    }

    pub(crate) fn input(&mut self, conn: ConnId, bytes: &[u8]) {
        if self.conn == Some(conn) {
            self.received.extend_from_slice(bytes);
        }
    }

    pub(crate) fn transport_closed(&mut self, now: Instant, conn: ConnId, why: &str) {
        if self.conn == Some(conn) && self.closed.is_none() {
            self.closed = Some((now, why.to_string()));
        }
    }

    /// The Byes the hub sent it.
    pub fn byes(&self) -> Vec<String> {
        super::agent::byes(&self.received)
    }
}
