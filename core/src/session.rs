//! The client side of an operator session on the native protocol: SessionHello, then control
//! requests and the hub's forwarded command progress. Used by the CLI and the simulator.

use std::collections::VecDeque;
use std::time::Instant;

use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use crate::link::keepalive::{Keepalive, KeepaliveStep};
use crate::link::{FrameDecoder, LinkConfig, frame, msg};
use crate::machine::{Action, ApiMisuse, CloseReason};
use crate::perm::Permissions;
use crate::rng::{self, CoreRng};

/// What a client session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The hub welcomed us.
    Welcome {
        /// The user the session acts as.
        user: String,
        /// Its permissions.
        permissions: Permissions,
    },
    /// Any other message from the hub (responses, errors, forwarded command progress).
    Message(Body),
}

#[derive(Debug)]
enum State {
    AwaitingWelcome { deadline: Instant },
    Open { keepalive: Keepalive },
    Closed(CloseReason),
}

/// The client side of an operator session.
///
/// Driving contract as [`ManagerLink`](crate::link::ManagerLink): `handle_input`,
/// `handle_timeout` at `poll_timeout`, drain `poll_action`. Pings from the hub are answered
/// and the hub is pinged in turn.
///
/// ```no_run
/// # use std::time::Instant;
/// # use switchboard_core::session::{ClientSession, ClientEvent};
/// # use switchboard_core::link::LinkConfig;
/// # use switchboard_core::machine::Action;
/// # fn read() -> Vec<u8> { vec![] } fn write(_: &[u8]) {}
/// let mut s = ClientSession::new(Instant::now(), LinkConfig::default(), "example", 1);
/// loop {
///     while let Some(a) = s.poll_action() {
///         match a {
///             Action::Send(b) => write(&b),
///             Action::Close(r) => return println!("{r}"),
///             Action::Timer(_) => {}
///             Action::Event(ClientEvent::Welcome { user, .. }) => println!("welcome {user}"),
///             Action::Event(ClientEvent::Message(m)) => println!("{m:?}"),
///         }
///     }
///     s.handle_input(Instant::now(), &read());
/// }
/// ```
#[derive(Debug)]
pub struct ClientSession {
    cfg: LinkConfig,
    state: State,
    decoder: FrameDecoder,
    rng: CoreRng,
    out: VecDeque<Action<ClientEvent>>,
    armed: Option<Instant>,
}

impl ClientSession {
    /// A session whose transport is up at `now`; queues the SessionHello.
    pub fn new(now: Instant, cfg: LinkConfig, client_name: &str, seed: u64) -> Self {
        let mut s = ClientSession {
            state: State::AwaitingWelcome {
                deadline: now + cfg.hello_timeout,
            },
            decoder: FrameDecoder::new(cfg.max_frame),
            cfg,
            rng: rng::seeded(seed),
            out: VecDeque::new(),
            armed: None,
        };
        s.send(Body::SessionHello(pb::SessionHello {
            client: client_name.into(),
        }));
        s.rearm();
        s
    }

    /// Whether the hub welcomed the session.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// The sticky close reason, once closed.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        match &self.state {
            State::Closed(r) => Some(r),
            _ => None,
        }
    }

    /// Sends a request (any control message, or CommandCancel).
    pub fn send_request(&mut self, body: Body) -> Result<(), ApiMisuse> {
        match self.state {
            State::Open { .. } => {
                self.send(body);
                Ok(())
            }
            State::Closed(_) => Err(ApiMisuse::Closed),
            State::AwaitingWelcome { .. } => Err(ApiMisuse::NotEstablished),
        }
    }

    /// Sends one frame a [`StreamEndpoint`](crate::stream::StreamEndpoint) produced (its
    /// `Action::Send`), in order with the session's own frames.
    pub fn send_frame(&mut self, frame: bytes::Bytes) -> Result<(), ApiMisuse> {
        match self.state {
            State::Open { .. } => {
                self.out.push_back(Action::Send(frame));
                Ok(())
            }
            State::Closed(_) => Err(ApiMisuse::Closed),
            State::AwaitingWelcome { .. } => Err(ApiMisuse::NotEstablished),
        }
    }

    /// Says Bye and closes.
    pub fn close(&mut self, reason: &str) {
        if !matches!(self.state, State::Closed(_)) {
            self.send(Body::Bye(pb::Bye {
                reason: reason.into(),
            }));
            self.close_now(CloseReason::Local(reason.into()));
        }
    }

    /// Bytes from the hub.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        self.decoder.push(data);
        loop {
            let m = match self.decoder.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    self.close_now(CloseReason::Protocol(e.to_string()));
                    break;
                }
            };
            let body = match msg::body(m) {
                Ok(b) => b,
                Err(e) => {
                    self.close_now(CloseReason::Protocol(e));
                    break;
                }
            };
            match (&mut self.state, body) {
                (_, Body::Bye(b)) => {
                    self.close_now(CloseReason::Bye(b.reason));
                    break;
                }
                (State::AwaitingWelcome { .. }, Body::SessionWelcome(w)) => {
                    self.state = State::Open {
                        keepalive: Keepalive::new(
                            now,
                            self.cfg.ping_interval,
                            self.cfg.ping_timeout,
                        ),
                    };
                    self.out.push_back(Action::Event(ClientEvent::Welcome {
                        user: w.user,
                        permissions: Permissions(w.permissions),
                    }));
                }
                (State::AwaitingWelcome { .. }, other) => {
                    self.out
                        .push_back(Action::Event(ClientEvent::Message(other)));
                }
                (State::Open { .. }, Body::Ping(p)) => {
                    self.send(Body::Pong(pb::Pong { data: p.data }))
                }
                (State::Open { keepalive }, Body::Pong(p)) => {
                    keepalive.on_pong(p.data);
                }
                (State::Open { .. }, other) => self
                    .out
                    .push_back(Action::Event(ClientEvent::Message(other))),
                (State::Closed(_), _) => break,
            }
        }
        self.rearm();
    }

    /// The transport ended.
    pub fn handle_transport_closed(&mut self, why: &str) {
        if !matches!(self.state, State::Closed(_)) {
            self.close_now(CloseReason::Bye(format!("connection ended: {why}")));
        }
    }

    /// Timers. Safe to call spuriously.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::AwaitingWelcome { deadline } if now >= *deadline => {
                self.close_now(CloseReason::Timeout("session welcome"))
            }
            State::Open { keepalive } => match keepalive.poll(now, &mut self.rng) {
                KeepaliveStep::Idle => {}
                KeepaliveStep::SendPing(d) => self.send(Body::Ping(pb::Ping { data: d })),
                KeepaliveStep::TimedOut => self.close_now(CloseReason::Timeout("ping")),
            },
            _ => {}
        }
        self.rearm();
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<Action<ClientEvent>> {
        self.out.pop_front()
    }

    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::AwaitingWelcome { deadline } => Some(*deadline),
            State::Open { keepalive } => Some(keepalive.deadline()),
            State::Closed(_) => None,
        }
    }

    fn send(&mut self, body: Body) {
        self.out
            .push_back(Action::Send(frame::encode(&msg::wrap(body))));
    }

    fn close_now(&mut self, reason: CloseReason) {
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
