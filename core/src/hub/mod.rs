//! The hub: one sans-IO machine owning the domain state (agent registry, command log) and
//! every connection machine, keyed by [`ConnId`] (the quinn `Endpoint` pattern).
//!
//! The hub never touches storage: durable changes leave it as [`HubAction::Persist`], and the
//! runtime applies each one **before** performing any action that follows it (the actions that
//! acknowledge the change always come after it). Secret verification (argon2, expensive) leaves
//! as [`HubAction::VerifySecret`] and comes back through [`Hub::handle_verified`], so that it can
//! run off the hub loop.

mod agents;
mod certs;
mod control;
pub mod domain;
mod events;
mod feed;
mod io;
mod kv_front;
mod login;
pub mod persist;
mod streams;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use switchboard_proto::message::Message as Body;

use crate::link::{FrameDecoder, ManagerLink, frame, msg};
use crate::machine::CloseReason;
use crate::perm::Permissions;
use crate::rng::{self, CoreRng};
pub use domain::{Actor, DomainError};
pub use feed::FEED_REPLACED;
pub use io::{
    ConnId, HubAction, HubConfig, HubEvent, PeerCert, PeerInfo, SignTicket, SignedCertificate,
    VerifyTicket,
};
pub use persist::{
    AgentRecord, CertificateRecord, Change, ChannelRecord, CommandRecord, CommandStatus,
    EventRecord, FeedClientRecord, StoredState, UserRecord,
};
pub use streams::StreamStats;

pub(crate) struct SessionState {
    pub(crate) user: String,
    pub(crate) uid: u64,
    pub(crate) perms: Permissions,
    pub(crate) decoder: FrameDecoder,
    pub(crate) keepalive: crate::link::keepalive::Keepalive,
    /// A web session that has not logged in: only login messages are accepted.
    pub(crate) guest: bool,
}

pub(crate) enum Conn {
    /// Waiting for the first frame, which says what the peer is.
    Sniffing {
        decoder: FrameDecoder,
        deadline: Instant,
    },
    /// An agent (authenticated once `agent_id` is set in the registry entry).
    Agent(Box<ManagerLink>),
    /// An operator session.
    Session(Box<SessionState>),
    /// A KV control connection.
    Kv(Box<crate::kv::KvConn>),
}

pub(crate) struct ConnEntry {
    pub(crate) peer: PeerInfo,
    pub(crate) conn: Conn,
    /// The timer this connection is indexed under in `Hub::timers`.
    pub(crate) timer: Option<Instant>,
}

pub(crate) struct AgentEntry {
    pub(crate) record: AgentRecord,
    pub(crate) data: BTreeMap<String, String>,
    /// The authenticated connection, if connected.
    pub(crate) conn: Option<ConnId>,
}

pub(crate) struct ActiveCommand {
    pub(crate) agent_conn: ConnId,
    pub(crate) issuer: Option<ConnId>,
    pub(crate) issued_by: String,
}

pub(crate) struct PendingVerify {
    pub(crate) conn: ConnId,
    pub(crate) agent_id: String,
    /// False when a check before the hash already failed (the hash runs anyway, for timing).
    pub(crate) prechecks_ok: bool,
    pub(crate) precheck_failure: String,
}

/// The hub machine.
///
/// # Driving contract
///
/// - At start: [`Hub::new`], then [`Hub::load`] with what storage holds.
/// - For each accepted connection (after its TLS handshake): [`Hub::accept`]; for its bytes:
///   [`Hub::handle_input`]; when its transport ends: [`Hub::handle_closed`].
/// - Call [`Hub::handle_timeout`] when [`Hub::poll_timeout`] is reached (spurious calls are
///   fine), and [`Hub::handle_verified`] when a verification finishes.
/// - After every call drain [`Hub::poll_action`] until `None` and perform the actions in order:
///   a [`HubAction::Persist`] must be durable before any later action is performed.
/// - Events worth following get their ORDER in the log as they are polled: the
///   [`Change::EventLogged`] comes out first, then the [`HubAction::Event`], then what
///   subscribers are sent.
///
/// ```no_run
/// # use std::time::Instant;
/// # use switchboard_core::hub::*;
/// # fn persist(_: &Change) {} fn send(_: ConnId, _: &[u8]) {} fn close(_: ConnId) {}
/// # fn verify(_: Option<&str>, _: &str) -> bool { false }
/// let mut hub = Hub::new(HubConfig::default(), 42, Instant::now(), 1_700_000_000_000);
/// hub.load(StoredState::default(), Instant::now());
/// let peer = PeerInfo { addr: "127.0.0.1:5000".parse().unwrap(), cert_name: Some("agent1".into()), cert: None, web: false };
/// hub.accept(Instant::now(), ConnId(1), peer);
/// hub.handle_input(Instant::now(), ConnId(1), b"...bytes from the socket...");
/// while let Some(action) = hub.poll_action() {
///     match action {
///         HubAction::Persist(change) => persist(&change),
///         HubAction::Send { conn, bytes } => send(conn, &bytes),
///         HubAction::Close { conn, .. } => close(conn),
///         HubAction::VerifySecret { ticket, secret_hash, secret } => {
///             let ok = verify(secret_hash.as_deref(), &secret);
///             hub.handle_verified(Instant::now(), ticket, ok);
///         }
///         HubAction::SignCertificate { ticket, name, csr_der } => {
///             // Sign with the CA (off the loop), then hand back the certificate or why not.
///             hub.handle_signed(Instant::now(), ticket, Err(format!("no CA for {name}")));
///         }
///         HubAction::ReadEvents { conn, after_order, limit } => {
///             // Read stored events of the log (off the loop), then hand them back.
///             let _ = (after_order, limit);
///             hub.handle_events_read(conn, Vec::new());
///         }
///         HubAction::Relay(cmd) => println!("to the UDP relay: {cmd:?}"),
///         HubAction::Event(e) => println!("{e:?}"),
///     }
/// }
/// ```
pub struct Hub {
    pub(crate) cfg: HubConfig,
    pub(crate) rng: CoreRng,
    pub(crate) conns: BTreeMap<ConnId, ConnEntry>,
    pub(crate) timers: BTreeSet<(Instant, ConnId)>,
    pub(crate) agents: BTreeMap<String, AgentEntry>,
    pub(crate) commands: BTreeMap<i64, ActiveCommand>,
    pub(crate) next_command_id: i64,
    pub(crate) verifications: BTreeMap<VerifyTicket, PendingVerify>,
    pub(crate) next_ticket: u64,
    pub(crate) out: VecDeque<HubAction>,
    pub(crate) domain: domain::Domain,
    /// Last nonce of a signed KV request, per uid.
    pub(crate) kv_nonces: BTreeMap<u64, u64>,
    pub(crate) login_verifications: BTreeMap<VerifyTicket, login::PendingLogin>,
    pub(crate) cookies: BTreeMap<String, login::Cookie>,
    /// Last TOTP step accepted per uid (each code works once).
    pub(crate) totp_last_step: BTreeMap<u64, u64>,
    pub(crate) login_failures: BTreeMap<String, std::collections::VecDeque<Instant>>,
    /// Certificates issued or seen, by serial.
    pub(crate) certificates: BTreeMap<String, CertificateRecord>,
    /// Signatures asked of the runtime and not answered yet.
    pub(crate) signings: BTreeMap<SignTicket, certs::PendingSign>,
    /// When each connection last asked for a renewal (a bound against an agent that keeps
    /// asking).
    pub(crate) renewals_per_conn: BTreeMap<ConnId, Instant>,
    pub(crate) feed_clients: BTreeMap<String, FeedClientRecord>,
    /// The challenge each session was given to sign (one attempt).
    pub(crate) feed_challenges: BTreeMap<ConnId, (String, Vec<u8>)>,
    /// The live connection of each logged-in feed client.
    pub(crate) feed_conns: BTreeMap<String, ConnId>,
    /// The feed client of each such connection.
    pub(crate) feed_sessions: BTreeMap<ConnId, String>,
    pub(crate) log: events::EventLog,
    pub(crate) subs: BTreeMap<ConnId, events::Subscription>,
    /// Streams: legs, multicast groups, per-sink queues.
    pub(crate) streams: crate::stream::Router,
    /// The hub's own stream sources (`hub.stats`), by group.
    pub(crate) hub_sources: streams::HubSources,
    /// The latest `now` the hub was given (timestamps of events).
    pub(crate) last_now: Instant,
    base_instant: Instant,
    base_unix_ms: i64,
}

impl Hub {
    /// A hub whose wall clock reads `unix_ms` at `now` (wall time is derived from `now` after
    /// that, so the hub never reads a clock).
    pub fn new(cfg: HubConfig, seed: u64, now: Instant, unix_ms: i64) -> Self {
        let streams = crate::stream::Router::new(cfg.streams.clone());
        Hub {
            streams,
            hub_sources: BTreeMap::new(),
            cfg,
            rng: rng::seeded(seed),
            conns: BTreeMap::new(),
            timers: BTreeSet::new(),
            agents: BTreeMap::new(),
            commands: BTreeMap::new(),
            next_command_id: 1,
            verifications: BTreeMap::new(),
            next_ticket: 1,
            out: VecDeque::new(),
            domain: domain::Domain::default(),
            kv_nonces: BTreeMap::new(),
            login_verifications: BTreeMap::new(),
            cookies: BTreeMap::new(),
            totp_last_step: BTreeMap::new(),
            login_failures: BTreeMap::new(),
            certificates: BTreeMap::new(),
            signings: BTreeMap::new(),
            renewals_per_conn: BTreeMap::new(),
            feed_clients: BTreeMap::new(),
            feed_challenges: BTreeMap::new(),
            feed_conns: BTreeMap::new(),
            feed_sessions: BTreeMap::new(),
            log: events::EventLog::default(),
            subs: BTreeMap::new(),
            last_now: now,
            base_instant: now,
            base_unix_ms: unix_ms,
        }
    }

    /// Loads stored state (at start, before any connection). Commands that were pending when
    /// the hub stopped can no longer report: they are finished as failed (persisted).
    pub fn load(&mut self, state: StoredState, now: Instant) {
        for rec in state.agents {
            self.agents.insert(
                rec.agent_id.clone(),
                AgentEntry {
                    record: rec,
                    data: BTreeMap::new(),
                    conn: None,
                },
            );
        }
        for (agent, name, value) in state.agent_data {
            if let Some(a) = self.agents.get_mut(&agent) {
                a.data.insert(name, value);
            }
        }
        self.next_command_id = self.next_command_id.max(state.max_command_id + 1);
        self.load_domain(state.users, state.channels, state.members);
        for c in state.certificates {
            self.certificates.insert(c.serial.clone(), c);
        }
        for c in state.feed_clients {
            self.feed_clients.insert(c.client_id.clone(), c);
        }
        self.last_now = self.last_now.max(now);
        self.load_events(
            state.last_event_order,
            state.first_event_order,
            state.recent_events,
        );
        for c in state.pending_commands {
            self.out
                .push_back(HubAction::Persist(Change::CommandFinished {
                    command_id: c.command_id,
                    status: CommandStatus::Failed,
                    changed: false,
                    output: "hub restarted before the command finished".into(),
                    finished_unix_ms: self.unix_ms(now),
                }));
        }
    }

    /// Wall-clock milliseconds at `now`.
    pub fn unix_ms(&self, now: Instant) -> i64 {
        self.base_unix_ms + now.saturating_duration_since(self.base_instant).as_millis() as i64
    }

    /// A connection was accepted (TLS done, client certificate verified by the runtime).
    pub fn accept(&mut self, now: Instant, conn: ConnId, peer: PeerInfo) {
        self.last_now = self.last_now.max(now);
        let deadline = now + self.cfg.link.hello_timeout;
        let decoder = FrameDecoder::new(self.cfg.link.max_frame);
        self.conns.insert(
            conn,
            ConnEntry {
                peer,
                conn: Conn::Sniffing { decoder, deadline },
                timer: None,
            },
        );
        self.reindex(conn);
    }

    /// Bytes that arrived on `conn`.
    pub fn handle_input(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        self.last_now = self.last_now.max(now);
        let Some(entry) = self.conns.get_mut(&conn) else {
            return; // closed already: late bytes are dropped
        };
        match &mut entry.conn {
            Conn::Sniffing { decoder, .. } => {
                decoder.push(data);
                match decoder.next_message() {
                    Ok(None) => {}
                    Ok(Some(first)) => {
                        let rest = decoder.take_buffered();
                        self.route_first(now, conn, first);
                        if !rest.is_empty() {
                            self.handle_input(now, conn, &rest);
                            return;
                        }
                    }
                    Err(e) => self.sniff_failed(conn, CloseReason::Protocol(e.to_string())),
                }
            }
            Conn::Agent(link) => {
                link.handle_input(now, data);
                self.pump_agent(now, conn);
            }
            Conn::Session(_) => self.session_input(now, conn, data),
            Conn::Kv(_) => self.kv_input(now, conn, data),
        }
        self.reindex(conn);
    }

    /// The transport of `conn` ended (EOF, reset, error). Unknown ids are ignored.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.last_now = self.last_now.max(now);
        if self.conns.contains_key(&conn) {
            self.forget(now, conn, "connection ended".into());
        }
    }

    /// Timers of every connection. Safe to call spuriously.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        while let Some(&(t, conn)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if let Some(e) = self.conns.get_mut(&conn) {
                e.timer = None;
            }
            self.conn_timeout(now, conn);
            self.reindex(conn);
        }
        if self.streams_deadline().is_some_and(|t| t <= now) {
            self.streams_timeout(now);
        }
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.timers.first().map(|(t, _)| *t);
        match (conns, self.streams_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next action, in order.
    pub fn poll_action(&mut self) -> Option<HubAction> {
        let action = self.out.pop_front()?;
        let ordered = std::mem::take(&mut self.log.front_ordered);
        match action {
            // A loggable event gets its order here: its Persist goes first, then the event and
            // what subscribers are sent.
            HubAction::Event(e) if !ordered => Some(self.order_event(e)),
            other => Some(other),
        }
    }

    /// Says Bye to every connection and closes them (shutdown).
    pub fn shutdown(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        self.streams.shutdown();
        self.hub_sources.clear();
        self.pump_streams(now);
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close_conn(now, id, CloseReason::Local("server shutting down".into()));
        }
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Ids of the agents connected now.
    pub fn connected_agents(&self) -> Vec<String> {
        self.agents
            .iter()
            .filter(|(_, a)| a.conn.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Number of commands waiting for their result.
    pub fn active_commands(&self) -> usize {
        self.commands.len()
    }

    fn route_first(&mut self, now: Instant, conn: ConnId, first: switchboard_proto::Message) {
        let is_session = matches!(first.message, Some(Body::SessionHello(_)));
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        let cert_name = entry.peer.cert_name.clone();
        let web = entry.peer.web;
        if self.cert_revoked(conn) {
            return self.sniff_failed(conn, CloseReason::AuthFailed("certificate revoked".into()));
        }
        self.note_cert(conn);
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        // The hello deadline runs from the accept, not from the first frame.
        let hello_deadline = match &entry.conn {
            Conn::Sniffing { deadline, .. } => *deadline,
            _ => now + self.cfg.link.hello_timeout,
        };
        if is_session {
            let (user, uid, perms, guest) = match cert_name {
                Some(user) => {
                    let Some((uid, perms)) = self.actor_of(&user) else {
                        return self.sniff_failed(
                            conn,
                            CloseReason::AuthFailed(format!("{user:?} is not a user")),
                        );
                    };
                    (user, uid, perms, false)
                }
                None if web => (String::new(), 0, Permissions::NONE, true),
                None => {
                    return self.sniff_failed(
                        conn,
                        CloseReason::AuthFailed("no client certificate".into()),
                    );
                }
            };
            let Some(entry) = self.conns.get_mut(&conn) else {
                return;
            };
            entry.conn = Conn::Session(Box::new(SessionState {
                user: user.clone(),
                uid,
                perms,
                decoder: FrameDecoder::new(self.cfg.link.max_frame),
                keepalive: crate::link::keepalive::Keepalive::new(
                    now,
                    self.cfg.link.ping_interval,
                    self.cfg.link.ping_timeout,
                ),
                guest,
            }));
            self.send_body(
                conn,
                Body::SessionWelcome(switchboard_proto::SessionWelcome {
                    user: user.clone(),
                    permissions: perms.0,
                    version: 1,
                }),
            );
            self.out
                .push_back(HubAction::Event(HubEvent::SessionOpened { user, conn }));
        } else {
            let seed = rng::child_seed(&mut self.rng);
            let mut link =
                ManagerLink::with_hello_deadline(self.cfg.link.clone(), seed, hello_deadline);
            link.handle_message(now, first);
            if let Some(entry) = self.conns.get_mut(&conn) {
                entry.conn = Conn::Agent(Box::new(link));
            }
            self.pump_agent(now, conn);
        }
    }

    fn sniff_failed(&mut self, conn: ConnId, reason: CloseReason) {
        let text = match &reason {
            CloseReason::AuthFailed(_) => "authentication failed".to_string(),
            other => other.to_string(),
        };
        self.send_body(conn, Body::Bye(switchboard_proto::Bye { reason: text }));
        self.out
            .push_back(HubAction::Event(HubEvent::ConnectionFailed {
                conn,
                reason: reason.clone(),
            }));
        self.out.push_back(HubAction::Close { conn, reason });
        self.drop_conn(conn);
    }

    fn conn_timeout(&mut self, now: Instant, conn: ConnId) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        match &mut entry.conn {
            Conn::Sniffing { deadline, .. } => {
                if now >= *deadline {
                    self.sniff_failed(conn, CloseReason::Timeout("hello"));
                }
            }
            Conn::Agent(link) => {
                link.handle_timeout(now);
                self.pump_agent(now, conn);
            }
            Conn::Session(_) => self.session_timeout(now, conn),
            Conn::Kv(_) => self.kv_timeout(now, conn),
        }
    }

    /// Closes a connection from the hub's side (Bye + close) and forgets it.
    pub(crate) fn close_conn(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        match &mut entry.conn {
            Conn::Agent(link) => {
                link.close(reason);
                self.pump_agent(now, conn);
            }
            Conn::Kv(_) => {
                // The KV wire has no goodbye message.
                self.out.push_back(HubAction::Close {
                    conn,
                    reason: reason.clone(),
                });
                self.forget(now, conn, reason.to_string());
            }
            _ => {
                self.send_body(
                    conn,
                    Body::Bye(switchboard_proto::Bye {
                        reason: reason.to_string(),
                    }),
                );
                self.out.push_back(HubAction::Close {
                    conn,
                    reason: reason.clone(),
                });
                self.forget(now, conn, reason.to_string());
            }
        }
    }

    /// Removes a connection and everything that hangs on it.
    pub(crate) fn forget(&mut self, now: Instant, conn: ConnId, why: String) {
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        let agent_id = match &entry.conn {
            Conn::Agent(link) => link.agent_id().map(str::to_string),
            _ => None,
        };
        self.drop_conn(conn);
        self.streams.conn_closed(now, conn);
        self.pump_streams(now);
        if let Some(agent_id) = agent_id {
            self.agent_gone(now, conn, &agent_id, why);
        }
        // Sessions: their commands keep running; results go to the log only.
        for c in self.commands.values_mut() {
            if c.issuer == Some(conn) {
                c.issuer = None;
            }
        }
    }

    fn drop_conn(&mut self, conn: ConnId) {
        self.renewals_per_conn.remove(&conn);
        self.subs.remove(&conn);
        self.feed_forget(conn);
        if let Some(e) = self.conns.remove(&conn)
            && let Some(t) = e.timer
        {
            self.timers.remove(&(t, conn));
        }
    }

    /// Re-indexes the timer of `conn` after it changed.
    fn reindex(&mut self, conn: ConnId) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        let t = match &entry.conn {
            Conn::Sniffing { deadline, .. } => Some(*deadline),
            Conn::Agent(link) => link.poll_timeout(),
            Conn::Session(s) => Some(s.keepalive.deadline()),
            Conn::Kv(kv) => kv.poll_timeout(),
        };
        if t != entry.timer {
            if let Some(old) = entry.timer {
                self.timers.remove(&(old, conn));
            }
            if let Some(new) = t {
                self.timers.insert((new, conn));
            }
            entry.timer = t;
        }
    }

    pub(crate) fn send_body(&mut self, conn: ConnId, body: Body) {
        self.out.push_back(HubAction::Send {
            conn,
            bytes: frame::encode(&msg::wrap(body)),
        });
    }
}

#[cfg(test)]
mod tests;
