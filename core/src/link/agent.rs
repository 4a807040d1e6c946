//! The agent side of one agent-link connection.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use switchboard_proto::Message;
use switchboard_proto::command_result::Status;
use switchboard_proto::message::Message as Body;

use super::keepalive::{Keepalive, KeepaliveStep};
use super::{FRAME_MARGIN, FrameDecoder, LinkConfig, frame, msg};
use crate::machine::{Action, ApiMisuse, CloseReason};
use crate::rng::{self, CoreRng};

/// Identity and limits of an agent connection.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent id sent in ClientHello.
    pub agent_id: String,
    /// The agent secret sent in ClientHello.
    pub secret: String,
    /// Timing and size limits.
    pub link: LinkConfig,
}

/// Why a data request produced no data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The manager answered `success: false` with this text.
    #[error("request failed: {0}")]
    Failed(String),
    /// No answer within the request timeout.
    #[error("request timed out")]
    TimedOut,
    /// The connection closed before the answer.
    #[error("connection closed")]
    Closed,
}

/// What the agent side reports to its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// ServerHello{version: 1} arrived: the link is up.
    Connected,
    /// Run a command (start a worker; answer with progress and result).
    Command {
        /// Command id (opaque int64).
        command_id: i64,
        /// Operation name.
        operation: String,
        /// JSON data.
        data: String,
    },
    /// Cancel a running command; answer with [`AgentLink::done`].
    Cancel {
        /// Command id.
        command_id: i64,
    },
    /// The answer to a certificate renewal asked with [`AgentLink::request_certificate`]:
    /// the new certificate (PEM) and its expiry (Unix ms), or why there is none.
    Certificate {
        /// Request id.
        request_id: i64,
        /// `(certificate_pem, not_after_unix_ms)`, or why not.
        result: Result<(String, i64), RequestError>,
    },
    /// The answer to a data request made with [`AgentLink::request`].
    Response {
        /// Request id.
        request_id: i64,
        /// The JSON data, or why there is none.
        result: Result<String, RequestError>,
    },
    /// A stream message from the hub (only on a link made with
    /// [`AgentLink::with_streams`]): hand it to the agent's
    /// [`StreamEndpoint`](crate::stream::StreamEndpoint).
    Stream(Body),
}

#[derive(Debug)]
enum State {
    AwaitingServerHello { deadline: Instant },
    Established { keepalive: Keepalive },
    Closed(CloseReason),
}

/// The agent side of an agent-link connection, from the first byte after TLS.
///
/// # Driving contract
///
/// Same as [`ManagerLink`](super::ManagerLink): `handle_input` for bytes, `handle_timeout`
/// at [`poll_timeout`](Self::poll_timeout), then drain [`poll_action`](Self::poll_action).
/// The ClientHello is queued by [`new`](Self::new): drain it right after connecting.
///
/// ```no_run
/// # use std::time::Instant;
/// # use switchboard_core::link::{AgentConfig, AgentEvent, AgentLink, CommandStatusWire, LinkConfig};
/// # use switchboard_core::machine::Action;
/// # fn read() -> Vec<u8> { vec![] } fn write(_: &[u8]) {}
/// let cfg = AgentConfig { agent_id: "agent1".into(), secret: "s3cret".into(), link: LinkConfig::default() };
/// let mut link = AgentLink::new(Instant::now(), cfg, 1);
/// loop {
///     while let Some(action) = link.poll_action() {
///         match action {
///             Action::Send(bytes) => write(&bytes),
///             Action::Close(reason) => return println!("closed: {reason}"),
///             Action::Timer(_) => {}
///             Action::Event(AgentEvent::Command { command_id, .. }) => {
///                 let _ = link.result(command_id, CommandStatusWire::Success, false, "ok");
///             }
///             Action::Event(_) => {}
///         }
///     }
///     link.handle_input(Instant::now(), &read());
/// }
/// ```
#[derive(Debug)]
pub struct AgentLink {
    cfg: LinkConfig,
    state: State,
    decoder: FrameDecoder,
    rng: CoreRng,
    out: VecDeque<Action<AgentEvent>>,
    requests: BTreeMap<i64, Instant>,
    /// The certificate renewal in flight and its deadline.
    renewal: Option<(i64, Instant)>,
    next_request_id: i64,
    armed: Option<Instant>,
    streams: bool,
}

impl AgentLink {
    /// A new connection whose TLS handshake completed at `now`; queues the ClientHello.
    pub fn new(now: Instant, cfg: AgentConfig, seed: u64) -> Self {
        Self::make(now, cfg, seed, false)
    }

    /// Like [`new`](Self::new), announcing the `streams` feature in the ClientHello: stream
    /// messages from the hub come out as [`AgentEvent::Stream`], and
    /// [`send_frame`](Self::send_frame) carries the endpoint's frames.
    pub fn with_streams(now: Instant, cfg: AgentConfig, seed: u64) -> Self {
        Self::make(now, cfg, seed, true)
    }

    fn make(now: Instant, cfg: AgentConfig, seed: u64, streams: bool) -> Self {
        let mut link = AgentLink {
            state: State::AwaitingServerHello {
                deadline: now + cfg.link.hello_timeout,
            },
            decoder: FrameDecoder::new(cfg.link.max_frame),
            cfg: cfg.link,
            rng: rng::seeded(seed),
            out: VecDeque::new(),
            requests: BTreeMap::new(),
            renewal: None,
            next_request_id: 1,
            armed: None,
            streams,
        };
        let mut hello = msg::client_hello(&cfg.agent_id, &cfg.secret);
        if let Some(Body::ClientHello(h)) = &mut hello.message
            && streams
        {
            h.features.push("streams".into());
        }
        link.send(&hello);
        link.rearm();
        link
    }

    /// Whether the ServerHello arrived.
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

    /// Bytes that arrived from the manager (any split).
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

    fn handle_message(&mut self, now: Instant, m: Message) {
        let body = match msg::body(m) {
            Ok(b) => b,
            Err(e) => return self.fail(CloseReason::Protocol(e)),
        };
        match (&mut self.state, body) {
            (State::AwaitingServerHello { .. }, Body::ServerHello(h)) => {
                if h.version != 1 {
                    return self.fail(CloseReason::Protocol(format!(
                        "unsupported server version {}",
                        h.version
                    )));
                }
                self.state = State::Established {
                    keepalive: Keepalive::new(now, self.cfg.ping_interval, self.cfg.ping_timeout),
                };
                self.out.push_back(Action::Event(AgentEvent::Connected));
            }
            (State::AwaitingServerHello { .. }, Body::Bye(b)) => {
                self.close_now(CloseReason::AuthFailed(b.reason))
            }
            (State::AwaitingServerHello { .. }, other) => self.fail(CloseReason::Protocol(
                format!("expected ServerHello, got {:?}", msg::type_of(&other)),
            )),
            (State::Established { .. }, Body::Bye(b)) => self.close_now(CloseReason::Bye(b.reason)),
            (State::Established { .. }, Body::Ping(p)) => self.send(&msg::pong(p.data)),
            (State::Established { keepalive }, Body::Pong(p)) => {
                if !keepalive.on_pong(p.data) {
                    tracing::debug!(data = p.data, "unexpected pong ignored");
                }
            }
            (State::Established { .. }, Body::Command(c)) => {
                self.out.push_back(Action::Event(AgentEvent::Command {
                    command_id: c.command_id,
                    operation: c.r#type,
                    data: c.data,
                }))
            }
            (State::Established { .. }, Body::Cancel(c)) => {
                self.out.push_back(Action::Event(AgentEvent::Cancel {
                    command_id: c.command_id,
                }))
            }
            (State::Established { .. }, Body::Response(r)) => {
                if self.requests.remove(&r.request_id).is_none() {
                    tracing::debug!(
                        id = r.request_id,
                        "response to an unknown or expired request ignored"
                    );
                    return;
                }
                let result = if r.success {
                    Ok(r.data)
                } else {
                    Err(RequestError::Failed(r.data))
                };
                self.out.push_back(Action::Event(AgentEvent::Response {
                    request_id: r.request_id,
                    result,
                }));
            }
            (State::Established { .. }, Body::RenewCertificateResponse(r)) => {
                if self.renewal.map(|(id, _)| id) != Some(r.request_id) {
                    tracing::debug!(id = r.request_id, "late certificate answer ignored");
                    return;
                }
                self.renewal = None;
                let result = if r.success {
                    Ok((r.certificate_pem, r.not_after_unix_ms))
                } else {
                    Err(RequestError::Failed(r.error))
                };
                self.out.push_back(Action::Event(AgentEvent::Certificate {
                    request_id: r.request_id,
                    result,
                }));
            }
            (State::Established { .. }, b)
                if self.streams && crate::stream::is_stream_message(&b) =>
            {
                self.out.push_back(Action::Event(AgentEvent::Stream(b)))
            }
            (State::Established { .. }, other) => self.fail(CloseReason::Protocol(format!(
                "unexpected {:?} from a manager",
                msg::type_of(&other)
            ))),
            (State::Closed(_), _) => {}
        }
    }

    /// Sends one frame a [`StreamEndpoint`](crate::stream::StreamEndpoint) produced (its
    /// `Action::Send`), in order with the link's own frames.
    pub fn send_frame(&mut self, frame: bytes::Bytes) -> Result<(), ApiMisuse> {
        self.established()?;
        self.out.push_back(Action::Send(frame));
        Ok(())
    }

    /// Reports progress of a command.
    pub fn progress(
        &mut self,
        command_id: i64,
        current: u32,
        total: u32,
        message: &str,
    ) -> Result<(), ApiMisuse> {
        self.established()?;
        let message = msg::truncate_output(message, self.text_room());
        self.send(&msg::progress(command_id, current, total, &message));
        Ok(())
    }

    /// Sends the final result of a command (output truncated to fit a frame).
    pub fn result(
        &mut self,
        command_id: i64,
        status: Status,
        changed: bool,
        output: &str,
    ) -> Result<(), ApiMisuse> {
        self.established()?;
        let output = msg::truncate_output(output, self.text_room());
        self.send(&msg::result(command_id, status, changed, &output));
        Ok(())
    }

    /// Answers a cancel with the results so far (CommandDone).
    pub fn done(
        &mut self,
        command_id: i64,
        status: Status,
        changed: bool,
        output: &str,
    ) -> Result<(), ApiMisuse> {
        self.established()?;
        let output = msg::truncate_output(output, self.text_room());
        self.send(&msg::done(command_id, status, changed, &output));
        Ok(())
    }

    /// Asks the manager for data; the answer comes as [`AgentEvent::Response`] with the
    /// returned id, or as `Err(TimedOut)` after the request timeout.
    pub fn request(&mut self, now: Instant, name: &str, data: &str) -> Result<i64, ApiMisuse> {
        self.established()?;
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.requests.insert(id, now + self.cfg.request_timeout);
        self.send(&msg::request(id, name, data));
        self.rearm();
        Ok(id)
    }

    /// Asks the manager to sign a new certificate for the key of `csr_der` (a PKCS#10 request,
    /// DER). The answer comes as [`AgentEvent::Certificate`], or as `Err(TimedOut)` after the
    /// request timeout. One renewal at a time ([`ApiMisuse::InProgress`] otherwise). The owner
    /// stores the new certificate and key durably before it uses them (for the next connection:
    /// this one keeps its certificate and its work).
    pub fn request_certificate(
        &mut self,
        now: Instant,
        csr_der: Vec<u8>,
    ) -> Result<i64, ApiMisuse> {
        self.established()?;
        if self.renewal.is_some() {
            return Err(ApiMisuse::InProgress);
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.renewal = Some((id, now + self.cfg.request_timeout));
        self.send(&msg::wrap(Body::RenewCertificateRequest(
            switchboard_proto::RenewCertificateRequest {
                request_id: id,
                csr_der: csr_der.into(),
            },
        )));
        self.rearm();
        Ok(id)
    }

    /// Says Bye and closes (agent shutdown).
    pub fn close(&mut self, reason: &str) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        self.send(&msg::bye(reason));
        self.close_now(CloseReason::Local(reason.to_string()));
    }

    /// The transport ended (EOF or error) without a Bye from this side.
    pub fn handle_transport_closed(&mut self, why: &str) {
        if !matches!(self.state, State::Closed(_)) {
            self.close_now(CloseReason::Bye(format!("connection ended: {why}")));
        }
    }

    /// Timers: ServerHello deadline, keepalive, request deadlines. Safe to call spuriously.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::AwaitingServerHello { deadline } => {
                if now >= *deadline {
                    self.close_now(CloseReason::Timeout("server hello"));
                }
            }
            State::Established { keepalive } => match keepalive.poll(now, &mut self.rng) {
                KeepaliveStep::Idle => {}
                KeepaliveStep::SendPing(d) => self.send(&msg::ping(d)),
                KeepaliveStep::TimedOut => self.close_now(CloseReason::Timeout("ping")),
            },
            State::Closed(_) => {}
        }
        let expired: Vec<i64> = self
            .requests
            .iter()
            .filter(|(_, d)| now >= **d)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.requests.remove(&id);
            self.out.push_back(Action::Event(AgentEvent::Response {
                request_id: id,
                result: Err(RequestError::TimedOut),
            }));
        }
        if let Some((id, deadline)) = self.renewal
            && now >= deadline
        {
            self.renewal = None;
            self.out.push_back(Action::Event(AgentEvent::Certificate {
                request_id: id,
                result: Err(RequestError::TimedOut),
            }));
        }
        self.rearm();
    }

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action<AgentEvent>> {
        self.out.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match &self.state {
            State::AwaitingServerHello { deadline } => *deadline,
            State::Established { keepalive } => keepalive.deadline(),
            State::Closed(_) => return None,
        };
        let t = self
            .requests
            .values()
            .min()
            .map_or(state, |r| state.min(*r));
        Some(self.renewal.map_or(t, |(_, d)| t.min(d)))
    }

    fn text_room(&self) -> usize {
        self.cfg.max_frame.saturating_sub(FRAME_MARGIN)
    }

    fn established(&self) -> Result<(), ApiMisuse> {
        match self.state {
            State::Established { .. } => Ok(()),
            State::Closed(_) => Err(ApiMisuse::Closed),
            State::AwaitingServerHello { .. } => Err(ApiMisuse::NotEstablished),
        }
    }

    fn send(&mut self, m: &Message) {
        self.out.push_back(Action::Send(frame::encode(m)));
    }

    fn fail(&mut self, reason: CloseReason) {
        let text = match &reason {
            CloseReason::Protocol(r) => format!("protocol error: {r}"),
            other => other.to_string(),
        };
        self.send(&msg::bye(&text));
        self.close_now(reason);
    }

    fn close_now(&mut self, reason: CloseReason) {
        // Every pending request is answered, never left hanging.
        let pending: Vec<i64> = std::mem::take(&mut self.requests).into_keys().collect();
        for id in pending {
            self.out.push_back(Action::Event(AgentEvent::Response {
                request_id: id,
                result: Err(RequestError::Closed),
            }));
        }
        if let Some((id, _)) = self.renewal.take() {
            self.out.push_back(Action::Event(AgentEvent::Certificate {
                request_id: id,
                result: Err(RequestError::Closed),
            }));
        }
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

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
