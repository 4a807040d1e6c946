//! The manager side of one agent-link connection.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use switchboard_proto as pb;
use switchboard_proto::Message;
use switchboard_proto::command_result::Status;
use switchboard_proto::message::Message as Body;

use super::keepalive::{Keepalive, KeepaliveStep};
use super::{FRAME_MARGIN, FrameDecoder, LinkConfig, frame, msg};
use crate::machine::{Action, ApiMisuse, CloseReason};
use crate::rng::{self, CoreRng};

/// What the manager side reports to its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum ManagerEvent {
    /// A ClientHello arrived. The owner authenticates it and calls
    /// [`ManagerLink::accept`] or [`ManagerLink::reject`] before the hello deadline.
    Hello {
        /// The agent id it claims.
        agent_id: String,
        /// The agent secret (plaintext inside TLS).
        secret: String,
    },
    /// The agent reported progress of a command.
    Progress {
        /// Command id.
        command_id: i64,
        /// Current step.
        current: u32,
        /// Total steps.
        total: u32,
        /// Message.
        message: String,
    },
    /// The agent finished a command (`done` is true for a CommandDone after a cancel).
    Finished {
        /// Command id.
        command_id: i64,
        /// Status on the wire (unknown values map to `Unspecified`).
        status: Status,
        /// Whether the operation changed something.
        changed: bool,
        /// Output.
        output: String,
        /// True for CommandDone (answer to a cancel), false for CommandResult.
        done: bool,
    },
    /// The agent asks for data. Answer with [`ManagerLink::respond`]; after the request
    /// timeout the link answers `success: false` by itself.
    Request {
        /// Request id (echo it).
        request_id: i64,
        /// Request name, e.g. "data".
        name: String,
        /// JSON kwargs.
        data: String,
    },
    /// The agent asks for a new certificate (it sent a CSR for a new key). Answer with
    /// [`ManagerLink::respond_certificate`]. At most one is in flight per link: a second one
    /// before the answer is a protocol error.
    RenewCertificate {
        /// Request id (echo it).
        request_id: i64,
        /// The PKCS#10 request, DER. Unverified: the owner checks it.
        csr_der: Vec<u8>,
    },
    /// A stream message from an agent that announced the `streams` feature in its hello
    /// (the hub's stream router takes it).
    Stream(Body),
}

#[derive(Debug)]
enum State {
    AwaitingHello { deadline: Instant },
    Authenticating { deadline: Instant },
    Established { keepalive: Keepalive },
    Closed(CloseReason),
}

/// The manager side of an agent-link connection, from the first byte after TLS.
///
/// # Driving contract
///
/// Feed every byte that arrives with [`handle_input`](Self::handle_input), call
/// [`handle_timeout`](Self::handle_timeout) when the instant from
/// [`poll_timeout`](Self::poll_timeout) (or the last [`Action::Timer`]) is reached (spurious
/// calls are harmless), and after each of these calls drain
/// [`poll_action`](Self::poll_action) until it returns `None`: write every
/// [`Action::Send`] as one write, in order; on [`Action::Close`] flush and close. `now` must
/// never go backwards. The machine reads no clock and opens no socket.
///
/// ```no_run
/// # use std::time::Instant;
/// # use switchboard_core::link::{LinkConfig, ManagerLink, ManagerEvent};
/// # use switchboard_core::machine::Action;
/// # fn read() -> Vec<u8> { vec![] } fn write(_: &[u8]) {}
/// let mut link = ManagerLink::new(Instant::now(), LinkConfig::default(), 7);
/// loop {
///     link.handle_input(Instant::now(), &read());
///     while let Some(action) = link.poll_action() {
///         match action {
///             Action::Send(bytes) => write(&bytes),
///             Action::Close(reason) => return println!("closed: {reason}"),
///             Action::Timer(_) => {} // re-arm the timer at poll_timeout()
///             Action::Event(ManagerEvent::Hello { agent_id, secret }) => {
///                 if secret == "s3cret" { let _ = link.accept(Instant::now()); }
///                 else { link.reject("authentication failed"); }
///             }
///             Action::Event(other) => println!("{other:?}"),
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct ManagerLink {
    cfg: LinkConfig,
    state: State,
    decoder: FrameDecoder,
    rng: CoreRng,
    out: VecDeque<Action<ManagerEvent>>,
    /// Data requests the owner has not answered yet, with their deadlines.
    requests: BTreeMap<i64, Instant>,
    /// The certificate renewal the owner has not answered yet.
    renewal: Option<i64>,
    agent_id: Option<String>,
    armed: Option<Instant>,
    /// The ClientHello listed the `streams` feature.
    streams: bool,
}

impl ManagerLink {
    /// A new connection accepted at `now`; the hello deadline starts now.
    pub fn new(now: Instant, cfg: LinkConfig, seed: u64) -> Self {
        let deadline = now + cfg.hello_timeout;
        Self::with_hello_deadline(cfg, seed, deadline)
    }

    /// A connection whose hello (and its authentication) must complete by `deadline`: for an
    /// owner that accepted the connection earlier and read its first frame itself.
    pub fn with_hello_deadline(cfg: LinkConfig, seed: u64, deadline: Instant) -> Self {
        let decoder = FrameDecoder::new(cfg.max_frame);
        let mut link = ManagerLink {
            cfg,
            state: State::AwaitingHello { deadline },
            decoder,
            rng: rng::seeded(seed),
            out: VecDeque::new(),
            requests: BTreeMap::new(),
            renewal: None,
            agent_id: None,
            armed: None,
            streams: false,
        };
        link.rearm();
        link
    }

    /// The agent id, once a ClientHello arrived.
    pub fn agent_id(&self) -> Option<&str> {
        self.agent_id.as_deref()
    }

    /// True if the agent announced the `streams` feature (a Switchboard agent; a RedPepper
    /// 0.0.x agent never does).
    pub fn speaks_streams(&self) -> bool {
        self.streams
    }

    /// Whether the agent was accepted and the link is up.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established { .. })
    }

    /// The sticky close reason, once closed.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        match &self.state {
            State::Closed(r) => Some(r),
            _ => None,
        }
    }

    /// Bytes that arrived from the agent (any split).
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        self.decoder.push(data);
        loop {
            match self.decoder.next_message() {
                Ok(Some(m)) => self.handle_message(now, m),
                Ok(None) => break,
                Err(e) => {
                    self.fail(CloseReason::Protocol(e.to_string()));
                    break;
                }
            }
            if matches!(self.state, State::Closed(_)) {
                break;
            }
        }
        self.rearm();
    }

    /// A decoded message (for owners that decode frames themselves, e.g. to route the first
    /// frame of a shared port).
    pub fn handle_message(&mut self, now: Instant, m: Message) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        let body = match msg::body(m) {
            Ok(b) => b,
            Err(e) => return self.fail(CloseReason::Protocol(e)),
        };
        match (&mut self.state, body) {
            (State::AwaitingHello { deadline }, Body::ClientHello(h)) => {
                let deadline = *deadline;
                self.agent_id = Some(h.client_id.clone());
                self.streams = h.features.iter().any(|f| f == "streams");
                self.state = State::Authenticating { deadline };
                self.out.push_back(Action::Event(ManagerEvent::Hello {
                    agent_id: h.client_id,
                    secret: h.auth,
                }));
            }
            (State::AwaitingHello { .. }, other) => self.fail(CloseReason::Protocol(format!(
                "expected ClientHello, got {:?}",
                msg::type_of(&other)
            ))),
            (State::Authenticating { .. }, other) => self.fail(CloseReason::Protocol(format!(
                "{:?} before ServerHello",
                msg::type_of(&other)
            ))),
            (State::Established { .. }, Body::Bye(b)) => self.close_now(CloseReason::Bye(b.reason)),
            (State::Established { .. }, Body::Ping(p)) => self.send(&msg::pong(p.data)),
            (State::Established { keepalive }, Body::Pong(p)) => {
                if !keepalive.on_pong(p.data) {
                    tracing::debug!(data = p.data, "unexpected pong ignored");
                }
            }
            (State::Established { .. }, Body::Progress(p)) => {
                self.out.push_back(Action::Event(ManagerEvent::Progress {
                    command_id: p.command_id,
                    current: p.current,
                    total: p.total,
                    message: p.message,
                }))
            }
            (State::Established { .. }, Body::Result(r)) => {
                self.out.push_back(Action::Event(ManagerEvent::Finished {
                    command_id: r.command_id,
                    status: Status::try_from(r.status).unwrap_or(Status::Unspecified),
                    changed: r.changed,
                    output: r.output,
                    done: false,
                }))
            }
            (State::Established { .. }, Body::Done(r)) => {
                self.out.push_back(Action::Event(ManagerEvent::Finished {
                    command_id: r.command_id,
                    status: Status::try_from(r.status).unwrap_or(Status::Unspecified),
                    changed: r.changed,
                    output: r.output,
                    done: true,
                }))
            }
            (State::Established { .. }, Body::Request(r)) => {
                if self.requests.contains_key(&r.request_id) {
                    return self.fail(CloseReason::Protocol(format!(
                        "duplicate request id {}",
                        r.request_id
                    )));
                }
                if self.requests.len() >= MAX_PENDING_REQUESTS {
                    self.send(&msg::response(
                        r.request_id,
                        false,
                        "too many pending requests",
                    ));
                    return;
                }
                self.requests
                    .insert(r.request_id, now + self.cfg.request_timeout);
                self.out.push_back(Action::Event(ManagerEvent::Request {
                    request_id: r.request_id,
                    name: r.name,
                    data: r.data,
                }));
            }
            (State::Established { .. }, Body::RenewCertificateRequest(r)) => {
                if self.renewal.is_some() {
                    return self.fail(CloseReason::Protocol(
                        "a second certificate renewal before the answer".into(),
                    ));
                }
                self.renewal = Some(r.request_id);
                self.out
                    .push_back(Action::Event(ManagerEvent::RenewCertificate {
                        request_id: r.request_id,
                        csr_der: r.csr_der.to_vec(),
                    }));
            }
            (State::Established { .. }, b)
                if self.streams && crate::stream::is_stream_message(&b) =>
            {
                self.out.push_back(Action::Event(ManagerEvent::Stream(b)))
            }
            (State::Established { .. }, other) => self.fail(CloseReason::Protocol(format!(
                "unexpected {:?} from an agent",
                msg::type_of(&other)
            ))),
            (State::Closed(_), _) => {}
        }
    }

    /// Accepts the agent after its hello authenticated: sends ServerHello{version: 1} and
    /// starts the keepalive.
    pub fn accept(&mut self, now: Instant) -> Result<(), ApiMisuse> {
        match self.state {
            State::Authenticating { .. } => {}
            State::Closed(_) => return Err(ApiMisuse::Closed),
            _ => return Err(ApiMisuse::NotEstablished),
        }
        self.state = State::Established {
            keepalive: Keepalive::new(now, self.cfg.ping_interval, self.cfg.ping_timeout),
        };
        self.send(&msg::server_hello());
        self.rearm();
        Ok(())
    }

    /// Refuses the agent: Bye(reason), then close. RedPepper says "authentication failed".
    pub fn reject(&mut self, reason: &str) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        self.send(&msg::bye(reason));
        self.close_now(CloseReason::AuthFailed(reason.to_string()));
    }

    /// Sends a command to the agent.
    pub fn send_command(
        &mut self,
        command_id: i64,
        operation: &str,
        data: &str,
    ) -> Result<(), ApiMisuse> {
        self.established()?;
        self.send(&msg::command(command_id, operation, data));
        Ok(())
    }

    /// Asks the agent to cancel a command (a RedPepper 0.0.x agent ignores this).
    pub fn send_cancel(&mut self, command_id: i64) -> Result<(), ApiMisuse> {
        self.established()?;
        self.send(&msg::cancel(command_id));
        Ok(())
    }

    /// Answers a data request. Unknown (already answered or timed out) ids are an error.
    /// An error text too long for a frame is truncated; data too long for a frame is never
    /// cut (a cut JSON value is no value): the agent is told the request failed instead.
    pub fn respond(&mut self, request_id: i64, success: bool, data: &str) -> Result<(), ApiMisuse> {
        self.established()?;
        if self.requests.remove(&request_id).is_none() {
            return Err(ApiMisuse::UnknownId(request_id));
        }
        let room = self.cfg.max_frame.saturating_sub(FRAME_MARGIN);
        if success && data.len() > room {
            let why = format!("answer of {} bytes is too large for a frame", data.len());
            self.send(&msg::response(request_id, false, &why));
        } else {
            let data = msg::truncate_output(data, room);
            self.send(&msg::response(request_id, success, &data));
        }
        self.rearm();
        Ok(())
    }

    /// Answers a certificate renewal: the new certificate (PEM) and its expiry, or why not.
    pub fn respond_certificate(
        &mut self,
        request_id: i64,
        result: Result<(String, i64), String>,
    ) -> Result<(), ApiMisuse> {
        self.established()?;
        if self.renewal != Some(request_id) {
            return Err(ApiMisuse::UnknownId(request_id));
        }
        self.renewal = None;
        let body = match result {
            Ok((certificate_pem, not_after_unix_ms)) => pb::RenewCertificateResponse {
                request_id,
                success: true,
                certificate_pem,
                not_after_unix_ms,
                error: String::new(),
            },
            Err(error) => pb::RenewCertificateResponse {
                request_id,
                success: false,
                error,
                ..Default::default()
            },
        };
        self.send(&msg::wrap(Body::RenewCertificateResponse(body)));
        Ok(())
    }

    /// Says Bye and closes (shutdown, removal, replaced).
    pub fn close(&mut self, reason: CloseReason) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        self.send(&msg::bye(&reason.to_string()));
        self.close_now(reason);
    }

    /// Timers: hello deadline, keepalive, request deadlines. Safe to call spuriously.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::AwaitingHello { deadline } | State::Authenticating { deadline } => {
                if now >= *deadline {
                    self.send(&msg::bye("hello timed out"));
                    self.close_now(CloseReason::Timeout("hello"));
                }
            }
            State::Established { keepalive } => match keepalive.poll(now, &mut self.rng) {
                KeepaliveStep::Idle => {}
                KeepaliveStep::SendPing(d) => self.send(&msg::ping(d)),
                KeepaliveStep::TimedOut => self.close_now(CloseReason::Timeout("ping")),
            },
            State::Closed(_) => {}
        }
        if self.is_established() {
            let expired: Vec<i64> = self
                .requests
                .iter()
                .filter(|(_, d)| now >= **d)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                self.requests.remove(&id);
                self.send(&msg::response(id, false, "request timed out"));
            }
        }
        self.rearm();
    }

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action<ManagerEvent>> {
        self.out.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match &self.state {
            State::AwaitingHello { deadline } | State::Authenticating { deadline } => {
                Some(*deadline)
            }
            State::Established { keepalive } => Some(keepalive.deadline()),
            State::Closed(_) => return None,
        };
        let req = self.requests.values().min().copied();
        match (state, req) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn established(&self) -> Result<(), ApiMisuse> {
        match self.state {
            State::Established { .. } => Ok(()),
            State::Closed(_) => Err(ApiMisuse::Closed),
            _ => Err(ApiMisuse::NotEstablished),
        }
    }

    fn send(&mut self, m: &Message) {
        self.out.push_back(Action::Send(frame::encode(m)));
    }

    /// A protocol failure: Bye with the reason, then close.
    fn fail(&mut self, reason: CloseReason) {
        tracing::debug!(agent = ?self.agent_id, %reason, "agent link failed");
        let text = match &reason {
            CloseReason::Protocol(r) => format!("protocol error: {r}"),
            other => other.to_string(),
        };
        self.send(&msg::bye(&text));
        self.close_now(reason);
    }

    fn close_now(&mut self, reason: CloseReason) {
        self.requests.clear();
        self.renewal = None;
        self.state = State::Closed(reason.clone());
        self.out.push_back(Action::Close(reason));
        self.armed = None;
    }

    fn rearm(&mut self) {
        let t = self.poll_timeout();
        if t != self.armed {
            self.armed = t;
            if let Some(t) = t {
                self.out.push_back(Action::Timer(t));
            }
        }
    }
}

/// At most this many data requests may wait for an answer at once.
const MAX_PENDING_REQUESTS: usize = 64;

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
