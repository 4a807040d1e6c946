//! A simulated agent: the real [`AgentLink`] for each connection and the real [`Backoff`]
//! between them, running a few operations on virtual time.
//!
//! Operations (command `data` is JSON; `[args]` holds positional arguments):
//!
//! - `echo.Echo` — the result is the message (`[args][0]` or `message`).
//! - `sim.Sleep` `{"seconds": N}` — progress at once and every second, the result after N
//!   seconds; a cancel answers `done(.., Cancelled, ..)` with the output so far.
//! - `data.Show` — sends a `data` request for the name `[args][0]`; the result is the answer,
//!   failed on an error, a timeout or a closed connection.
//! - `sim.Request` `{"name": R, "data": D}` — the same with any request name and data.
//! - anything else fails with "unknown operation".

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use switchboard_core::hub::ConnId;
use switchboard_core::link::{
    AgentConfig, AgentEvent, AgentLink, Backoff, CertRenewal, CommandStatusWire, FrameDecoder,
    LinkConfig, RequestError, frame, msg,
};
use switchboard_core::machine::{ApiMisuse, CloseReason};
use switchboard_proto::message::Message as Body;

use super::node::{Out, drain};

/// How a simulated agent (mis)behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentMode {
    /// As a real agent.
    #[default]
    Normal,
    /// Pongs from the hub are dropped before the link sees them: the agent's own pings time
    /// out while it still answers the hub's.
    IgnorePongs,
    /// Nothing the agent writes leaves it (a hung writer): it answers no ping and sends no
    /// result, but still reads.
    Mute,
    /// It stops answering the hub's pings (its Pongs are dropped before they leave) and
    /// otherwise works: it pings the hub itself, reports progress and results. Traffic is not
    /// an answer: the hub's keepalive must still close it.
    NoPongs,
}

/// Counters of an agent's life.
#[derive(Debug, Default, Clone)]
pub struct AgentStats {
    /// Connection attempts, with when each started.
    pub attempts: Vec<Instant>,
    /// Attempts that failed before the link came up (refused, reset, timed out).
    pub connect_failures: u32,
    /// ServerHellos received, with when.
    pub connects: Vec<Instant>,
    /// Refusals (Bye before ServerHello).
    pub auth_failures: u32,
    /// Links that ended, with when and why.
    pub closes: Vec<(Instant, CloseReason)>,
    /// Every backoff delay chosen, in order.
    pub delays: Vec<Duration>,
    /// Commands received, by id, in order.
    pub commands: Vec<i64>,
    /// Cancels received, by id, in order.
    pub cancels: Vec<i64>,
    /// Certificates received by renewal and stored (before use), with when.
    pub renewals: Vec<(Instant, super::SimCert)>,
    /// Renewals that failed (refused, timed out, cut by a disconnect).
    pub renewal_failures: u32,
}

impl AgentStats {
    /// The close reasons, in order.
    pub fn close_reasons(&self) -> Vec<CloseReason> {
        self.closes.iter().map(|(_, r)| r.clone()).collect()
    }
}

/// How an operation ended on the agent's side.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Command id.
    pub command_id: i64,
    /// Operation name.
    pub operation: String,
    /// Final status.
    pub status: CommandStatusWire,
    /// Output.
    pub output: String,
    /// Whether the result could be handed to the link (false once the link closed).
    pub reported: bool,
    /// When.
    pub at: Instant,
}

#[derive(Debug)]
enum Op {
    Sleep {
        total: u32,
        done: u32,
        next: Instant,
        output: String,
    },
    Request {
        operation: String,
    },
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per agent, almost always `Up`: boxing buys nothing
enum ConnState {
    Idle,
    Connecting { conn: ConnId, deadline: Instant },
    Up { conn: ConnId, link: AgentLink },
}

/// The operations in progress and what ended.
#[derive(Debug, Default)]
struct Work {
    ops: BTreeMap<i64, Op>,
    /// Data request id -> command id.
    requests: BTreeMap<i64, i64>,
    outcomes: Vec<Outcome>,
}

/// A simulated agent.
#[derive(Debug)]
pub struct AgentNode {
    /// Agent id (sent in ClientHello).
    pub id: String,
    /// Secret it presents.
    pub secret: String,
    /// The name its certificate carries.
    pub cert_name: Option<String>,
    /// Its certificate, when the scenario models certificates (then it names the agent and
    /// is renewed over the link at two thirds of its lifetime, as the real agent does).
    pub cert: Option<super::SimCert>,
    renewal: Option<CertRenewal>,
    /// Wall clock: Unix ms at an instant.
    wall: (Instant, i64),
    /// Link limits.
    pub link_cfg: LinkConfig,
    /// Deadline of TCP connect + TLS handshake (as the real agent's `connect_timeout`).
    pub connect_timeout: Duration,
    /// How it behaves.
    pub mode: AgentMode,
    /// Whether it reconnects after a disconnect (false: it stays down).
    pub reconnect: bool,
    state: ConnState,
    backoff: Backoff,
    rng: ChaCha8Rng,
    next_connect: Option<Instant>,
    pongs: FrameDecoder,
    work: Work,
    /// Counters.
    pub stats: AgentStats,
    /// Stream sources ([`super::streams`]); `None`: the agent does not announce streams.
    pub sources: Option<super::streams::SimSources>,
}

impl AgentNode {
    pub(crate) fn new(
        id: &str,
        secret: &str,
        cert_name: Option<String>,
        link_cfg: LinkConfig,
        rng: ChaCha8Rng,
        now: Instant,
    ) -> Self {
        let max = link_cfg.max_frame;
        AgentNode {
            id: id.into(),
            secret: secret.into(),
            cert_name,
            cert: None,
            renewal: None,
            wall: (now, 0),
            link_cfg,
            connect_timeout: Duration::from_secs(10),
            mode: AgentMode::Normal,
            reconnect: true,
            state: ConnState::Idle,
            backoff: Backoff::default(),
            rng,
            next_connect: Some(now),
            pongs: FrameDecoder::new(max),
            work: Work::default(),
            stats: AgentStats::default(),
            sources: None,
        }
    }

    /// Gives the agent a certificate (renewed from then on); `now` reads `unix_ms` on the wall.
    pub(crate) fn set_cert(&mut self, cert: super::SimCert, now: Instant, unix_ms: i64) {
        self.wall = (now, unix_ms);
        self.cert_name = Some(cert.name.clone());
        self.renewal = Some(CertRenewal::new(cert.not_before_ms, cert.not_after_ms));
        self.cert = Some(cert);
    }

    fn unix_ms(&self, now: Instant) -> i64 {
        self.wall.1 + now.saturating_duration_since(self.wall.0).as_millis() as i64
    }

    fn renewal_wake(&self) -> Option<Instant> {
        let at = self.renewal.as_ref()?.next_check()?;
        let wait = at.saturating_sub(self.unix_ms(self.wall.0)).max(0) as u64;
        Some(self.wall.0 + Duration::from_millis(wait))
    }

    /// Sends a renewal request if one is due.
    fn maybe_renew(&mut self, now: Instant) {
        let unix = self.unix_ms(now);
        let ConnState::Up { link, .. } = &mut self.state else {
            return;
        };
        let Some(r) = self.renewal.as_mut() else {
            return;
        };
        if !link.is_established() || !r.is_due(unix) {
            return;
        }
        match link.request_certificate(now, super::certs::csr(&self.id)) {
            Ok(_) => r.started(),
            Err(_) => r.failed(unix),
        }
    }

    fn on_certificate(&mut self, now: Instant, result: Result<(String, i64), RequestError>) {
        let unix = self.unix_ms(now);
        let Some(r) = self.renewal.as_mut() else {
            return;
        };
        match result
            .ok()
            .and_then(|(pem, _)| super::SimCert::parse(&pem))
            .filter(|c| c.name == self.id)
        {
            Some(c) => {
                // Stored before it is used (the simulated disk is instant and never fails).
                r.renewed(c.not_before_ms, c.not_after_ms);
                self.stats.renewals.push((now, c.clone()));
                self.cert = Some(c);
            }
            None => {
                self.stats.renewal_failures += 1;
                r.failed(unix);
            }
        }
    }

    /// Whether the link is up (ServerHello received).
    pub fn is_connected(&self) -> bool {
        matches!(&self.state, ConnState::Up { link, .. } if link.is_established())
    }

    /// Its current connection, if any.
    pub fn conn(&self) -> Option<ConnId> {
        match &self.state {
            ConnState::Idle => None,
            ConnState::Connecting { conn, .. } | ConnState::Up { conn, .. } => Some(*conn),
        }
    }

    /// Operations in progress plus data requests waiting for an answer.
    pub fn busy(&self) -> usize {
        self.work.ops.len() + self.work.requests.len()
    }

    /// How the operations ended, in order.
    pub fn outcomes(&self) -> &[Outcome] {
        &self.work.outcomes
    }

    /// How command `id` ended on this agent, if it did.
    pub fn outcome(&self, command_id: i64) -> Option<&Outcome> {
        self.work
            .outcomes
            .iter()
            .find(|o| o.command_id == command_id)
    }

    /// When the next connection attempt is due.
    pub fn next_connect(&self) -> Option<Instant> {
        self.next_connect
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            ConnState::Idle => self.next_connect.filter(|_| self.reconnect),
            ConnState::Connecting { deadline, .. } => Some(*deadline),
            ConnState::Up { link, .. } => {
                let sleeps = self.work.ops.values().filter_map(|op| match op {
                    Op::Sleep { next, .. } => Some(*next),
                    Op::Request { .. } => None,
                });
                let renew = self.renewal_wake().filter(|_| link.is_established());
                let streams = self.sources.as_ref().and_then(|s| s.poll_timeout());
                link.poll_timeout()
                    .into_iter()
                    .chain(sleeps)
                    .chain(renew)
                    .chain(streams)
                    .min()
            }
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Out>) {
        match &mut self.state {
            ConnState::Idle => {
                if self.reconnect && self.next_connect.is_some_and(|t| t <= now) {
                    self.next_connect = None;
                    out.push(Out::Connect);
                }
            }
            ConnState::Connecting { conn, deadline } => {
                if *deadline <= now {
                    out.push(Out::Abandon(*conn));
                    self.connect_failed(now);
                }
            }
            ConnState::Up { link, .. } => {
                link.handle_timeout(now);
                if let Some(src) = self.sources.as_mut() {
                    src.handle_timeout(now);
                }
                self.work.tick(now, link);
                self.maybe_renew(now);
                self.pump(now, out);
            }
        }
    }

    pub(crate) fn connecting(&mut self, now: Instant, conn: ConnId) {
        self.stats.attempts.push(now);
        self.state = ConnState::Connecting {
            conn,
            deadline: now + self.connect_timeout,
        };
    }

    pub(crate) fn established(
        &mut self,
        now: Instant,
        conn: ConnId,
        seed: u64,
        out: &mut Vec<Out>,
    ) {
        if !matches!(self.state, ConnState::Connecting { conn: c, .. } if c == conn) {
            return;
        }
        let cfg = AgentConfig {
            agent_id: self.id.clone(),
            secret: self.secret.clone(),
            link: self.link_cfg.clone(),
        };
        self.pongs = FrameDecoder::new(self.link_cfg.max_frame);
        let link = match self.sources.as_mut() {
            Some(src) => {
                src.reset();
                AgentLink::with_streams(now, cfg, seed)
            }
            None => AgentLink::new(now, cfg, seed),
        };
        self.state = ConnState::Up { conn, link };
        self.pump(now, out);
    }

    pub(crate) fn input(&mut self, now: Instant, conn: ConnId, bytes: &[u8], out: &mut Vec<Out>) {
        let ConnState::Up { conn: c, link } = &mut self.state else {
            return;
        };
        if *c != conn {
            return;
        }
        if self.mode == AgentMode::IgnorePongs {
            // Re-frame what arrived without the Pongs (a broken frame goes through as is).
            self.pongs.push(bytes);
            loop {
                match self.pongs.next_message() {
                    Ok(Some(m)) if matches!(m.message, Some(Body::Pong(_))) => {}
                    Ok(Some(m)) => link.handle_input(now, &frame::encode(&m)),
                    Ok(None) => break,
                    Err(_) => {
                        link.handle_input(now, bytes);
                        break;
                    }
                }
            }
        } else {
            link.handle_input(now, bytes);
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
        match &mut self.state {
            ConnState::Connecting { conn: c, .. } if *c == conn => self.connect_failed(now),
            ConnState::Up { conn: c, link } if *c == conn => {
                link.handle_transport_closed(why);
                self.pump(now, out);
            }
            _ => {}
        }
    }

    /// The process dies: no more connections (the world closes the sockets).
    pub(crate) fn kill(&mut self, now: Instant) {
        self.reconnect = false;
        self.next_connect = None;
        self.state = ConnState::Idle;
        if let Some(src) = self.sources.as_mut() {
            src.transport_closed(now, "agent killed");
        }
        self.work.abandon(now, "agent killed");
    }

    /// The process starts again (after [`kill`](Self::kill)), with a fresh backoff, and
    /// connects at `at`.
    pub(crate) fn revive(&mut self, at: Instant) {
        self.reconnect = true;
        self.backoff = Backoff::default();
        self.next_connect = Some(at);
    }

    fn connect_failed(&mut self, now: Instant) {
        self.stats.connect_failures += 1;
        self.state = ConnState::Idle;
        self.schedule(now);
    }

    fn schedule(&mut self, now: Instant) {
        let d = self.backoff.next_delay(now, &mut self.rng);
        self.stats.delays.push(d);
        self.next_connect = Some(now + d);
    }

    /// Drains the link, handles its events (which may queue more), until it is quiet.
    fn pump(&mut self, now: Instant, out: &mut Vec<Out>) {
        loop {
            let ConnState::Up { conn, link } = &mut self.state else {
                return;
            };
            let mode = self.mode;
            let keep = |frame: &[u8]| match mode {
                AgentMode::Mute => false,
                AgentMode::NoPongs => !is_pong(frame),
                AgentMode::Normal | AgentMode::IgnorePongs => true,
            };
            let (events, close) = drain(*conn, keep, || link.poll_action(), out);
            if events.is_empty() && close.is_none() {
                if let Some(src) = self.sources.as_mut()
                    && src.flush(now, link)
                {
                    continue;
                }
                return;
            }
            for e in events {
                if e == AgentEvent::Connected {
                    self.stats.connects.push(now);
                    self.backoff.connected(now);
                }
                if let AgentEvent::Certificate { result, .. } = e {
                    self.on_certificate(now, result);
                    continue;
                }
                if let (AgentEvent::Stream(body), Some(src)) = (&e, self.sources.as_mut()) {
                    src.on_message(now, body.clone());
                    continue;
                }
                let ConnState::Up { link, .. } = &mut self.state else {
                    break;
                };
                match &e {
                    AgentEvent::Command { command_id, .. } => self.stats.commands.push(*command_id),
                    AgentEvent::Cancel { command_id } => self.stats.cancels.push(*command_id),
                    _ => {}
                }
                self.work.on_event(now, link, e);
            }
            if let Some(reason) = close {
                if matches!(reason, CloseReason::AuthFailed(_)) {
                    self.stats.auth_failures += 1;
                }
                if let Some(src) = self.sources.as_mut() {
                    src.transport_closed(now, &reason.to_string());
                }
                self.stats.closes.push((now, reason));
                self.state = ConnState::Idle;
                if let Some(r) = self.renewal.as_mut()
                    && r.next_check().is_none()
                {
                    self.stats.renewal_failures += 1;
                    r.failed(
                        self.wall.1 + now.saturating_duration_since(self.wall.0).as_millis() as i64,
                    );
                }
                self.work.abandon(now, "connection closed");
                self.schedule(now);
                return;
            }
        }
    }
}

impl Work {
    fn finish(
        &mut self,
        now: Instant,
        command_id: i64,
        operation: &str,
        status: CommandStatusWire,
        output: String,
        sent: Result<(), ApiMisuse>,
    ) {
        self.outcomes.push(Outcome {
            command_id,
            operation: operation.into(),
            status,
            output,
            reported: sent.is_ok(),
            at: now,
        });
    }

    /// The link is gone: every operation in progress ends, failed and unreported.
    fn abandon(&mut self, now: Instant, why: &str) {
        self.requests.clear();
        for (id, op) in std::mem::take(&mut self.ops) {
            let operation = match op {
                Op::Sleep { .. } => "sim.Sleep".to_string(),
                Op::Request { operation } => operation,
            };
            let status = CommandStatusWire::Failed;
            self.finish(
                now,
                id,
                &operation,
                status,
                why.into(),
                Err(ApiMisuse::Closed),
            );
        }
    }

    /// Advances the sleeps to `now`.
    fn tick(&mut self, now: Instant, link: &mut AgentLink) {
        let mut finished = vec![];
        for (id, op) in self.ops.iter_mut() {
            let Op::Sleep {
                total,
                done,
                next,
                output,
            } = op
            else {
                continue;
            };
            while *next <= now && *done < *total {
                *done += 1;
                *next += Duration::from_secs(1);
                output.push_str(&format!("second {done}\n"));
                let _ = link.progress(*id, *done, *total, &format!("slept {done}/{total}"));
            }
            if *done >= *total {
                let r = link.result(*id, CommandStatusWire::Success, false, output);
                finished.push((*id, std::mem::take(output), r));
            }
        }
        for (id, output, r) in finished {
            self.ops.remove(&id);
            self.finish(now, id, "sim.Sleep", CommandStatusWire::Success, output, r);
        }
    }

    fn on_event(&mut self, now: Instant, link: &mut AgentLink, ev: AgentEvent) {
        match ev {
            AgentEvent::Connected | AgentEvent::Certificate { .. } => {}
            // This simulated agent does not announce streams (sim::streams has its own).
            AgentEvent::Stream(_) => {}
            AgentEvent::Command {
                command_id,
                operation,
                data,
            } => self.start(now, link, command_id, operation, &data),
            AgentEvent::Cancel { command_id } => {
                let Some(op) = self.ops.remove(&command_id) else {
                    return; // finished already, or never ours: nothing to cancel
                };
                let (operation, output) = match op {
                    Op::Sleep { output, .. } => ("sim.Sleep".to_string(), output),
                    Op::Request { operation } => {
                        self.requests.retain(|_, c| *c != command_id);
                        (operation, String::new())
                    }
                };
                let r = link.done(command_id, CommandStatusWire::Cancelled, false, &output);
                let status = CommandStatusWire::Cancelled;
                self.finish(now, command_id, &operation, status, output, r);
            }
            AgentEvent::Response { request_id, result } => {
                let Some(cid) = self.requests.remove(&request_id) else {
                    return;
                };
                let Some(Op::Request { operation }) = self.ops.remove(&cid) else {
                    return;
                };
                let (status, out) = match result {
                    Ok(v) => (CommandStatusWire::Success, v),
                    Err(RequestError::Failed(t)) => (CommandStatusWire::Failed, t),
                    Err(e) => (CommandStatusWire::Failed, e.to_string()),
                };
                let r = link.result(cid, status, false, &out);
                self.finish(now, cid, &operation, status, out, r);
            }
        }
    }

    fn start(
        &mut self,
        now: Instant,
        link: &mut AgentLink,
        command_id: i64,
        operation: String,
        data: &str,
    ) {
        let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        let arg0 = v.get("[args]").and_then(|a| a.get(0)).cloned();
        let request = match operation.as_str() {
            "echo.Echo" => {
                let m = arg0
                    .or_else(|| v.get("message").cloned())
                    .and_then(|m| m.as_str().map(str::to_string))
                    .unwrap_or_default();
                let _ = link.progress(command_id, 0, 1, "Running echo.Echo...");
                let r = link.result(command_id, CommandStatusWire::Success, false, &m);
                let status = CommandStatusWire::Success;
                return self.finish(now, command_id, &operation, status, m, r);
            }
            "sim.Sleep" => {
                let total = v.get("seconds").and_then(|s| s.as_u64()).unwrap_or(1) as u32;
                let _ = link.progress(command_id, 0, total, "started");
                self.ops.insert(
                    command_id,
                    Op::Sleep {
                        total,
                        done: 0,
                        next: now + Duration::from_secs(1),
                        output: String::from("started\n"),
                    },
                );
                return;
            }
            "data.Show" => {
                let name = arg0.and_then(|n| n.as_str().map(str::to_string));
                ("data".to_string(), msg_json(name.unwrap_or_default()))
            }
            "sim.Request" => {
                let name = v.get("name").and_then(|n| n.as_str()).unwrap_or_default();
                let data = v.get("data").map(|d| d.to_string()).unwrap_or_default();
                (name.to_string(), data)
            }
            other => {
                let text = format!("unknown operation {other}");
                let r = link.result(command_id, CommandStatusWire::Failed, false, &text);
                let status = CommandStatusWire::Failed;
                return self.finish(now, command_id, &operation, status, text, r);
            }
        };
        match link.request(now, &request.0, &request.1) {
            Ok(rid) => {
                self.requests.insert(rid, command_id);
                self.ops.insert(command_id, Op::Request { operation });
            }
            Err(e) => {
                let text = e.to_string();
                let r = link.result(command_id, CommandStatusWire::Failed, false, &text);
                let status = CommandStatusWire::Failed;
                self.finish(now, command_id, &operation, status, text, r);
            }
        }
    }
}

fn msg_json(name: String) -> String {
    serde_json::json!({ "name": name }).to_string()
}

/// Whether one written frame is a Pong.
fn is_pong(frame: &[u8]) -> bool {
    let mut d = FrameDecoder::new(usize::MAX);
    d.push(frame);
    matches!(d.next_message(), Ok(Some(m)) if matches!(m.message, Some(Body::Pong(_))))
}

/// Decodes the Byes in a byte stream from the hub (for raw peers and checks).
pub fn byes(bytes: &[u8]) -> Vec<String> {
    let mut d = FrameDecoder::new(1 << 24);
    d.push(bytes);
    let mut out = vec![];
    while let Ok(Some(m)) = d.next_message() {
        if let Ok(Body::Bye(b)) = msg::body(m) {
            out.push(b.reason);
        }
    }
    out
}
