//! The simulated peers: agents driving the real [`AgentLink`] and [`Backoff`], operators driving
//! the real [`ClientSession`], and raw peers that send chosen bytes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use switchboard_core::hub::ConnId;
use switchboard_core::link::{
    AgentConfig, AgentEvent, AgentLink, Backoff, CommandStatusWire, LinkConfig, RequestError,
};
use switchboard_core::machine::{Action, CloseReason};
use switchboard_core::session::{ClientEvent, ClientSession};
use switchboard_proto::message::Message as Body;

/// Counters of an agent's life.
#[derive(Debug, Default, Clone)]
pub struct AgentStats {
    /// TCP connections attempted.
    pub attempts: u32,
    /// When each attempt started.
    pub attempt_times: Vec<Instant>,
    /// ServerHellos received.
    pub connects: u32,
    /// Refusals (Bye before ServerHello).
    pub auth_failures: u32,
    /// Connections that ended.
    pub disconnects: u32,
    /// The close reasons, in order.
    pub close_reasons: Vec<CloseReason>,
    /// Commands received (by id, in order).
    pub commands: Vec<i64>,
}

/// A command the simulated agent is working on.
#[derive(Debug)]
pub(crate) enum SimOp {
    /// `sim.Sleep`: progress every second, result after `total` seconds.
    Sleep {
        total: u32,
        done: u32,
        next: Instant,
        output: String,
    },
    /// `data.Show`: waiting for the answer to this request.
    Data,
}

/// A simulated agent.
#[derive(Debug)]
pub struct AgentNode {
    /// Agent id.
    pub id: String,
    /// Secret it presents.
    pub secret: String,
    /// The name its certificate carries.
    pub cert_name: Option<String>,
    /// Link limits.
    pub link_cfg: LinkConfig,
    pub(crate) link: Option<(ConnId, AgentLink)>,
    pub(crate) backoff: Backoff,
    pub(crate) rng: ChaCha8Rng,
    /// When to connect next (None while connected or stopped).
    pub next_connect: Option<Instant>,
    /// A frozen agent reads nothing and answers nothing (its pings stop too).
    pub frozen: bool,
    /// Stops reconnecting when set.
    pub stopped: bool,
    pub(crate) ops: BTreeMap<i64, SimOp>,
    pub(crate) requests: BTreeMap<i64, i64>,
    /// Counters.
    pub stats: AgentStats,
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
        AgentNode {
            id: id.into(),
            secret: secret.into(),
            cert_name,
            link_cfg,
            link: None,
            backoff: Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(60),
                Duration::from_secs(30),
            ),
            rng,
            next_connect: Some(now),
            frozen: false,
            stopped: false,
            ops: BTreeMap::new(),
            requests: BTreeMap::new(),
            stats: AgentStats::default(),
        }
    }

    /// Commands in progress plus data requests waiting for an answer.
    pub fn busy(&self) -> usize {
        self.ops.len() + self.requests.len()
    }

    /// Whether the link is up (ServerHello received).
    pub fn is_connected(&self) -> bool {
        self.link.as_ref().is_some_and(|(_, l)| l.is_established())
    }

    pub(crate) fn start_link(&mut self, now: Instant, conn: ConnId, seed: u64) {
        let cfg = AgentConfig {
            agent_id: self.id.clone(),
            secret: self.secret.clone(),
            link: self.link_cfg.clone(),
        };
        self.stats.attempts += 1;
        self.stats.attempt_times.push(now);
        self.next_connect = None;
        self.link = Some((conn, AgentLink::new(now, cfg, seed)));
    }

    /// When this agent has something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_connect;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if self.frozen {
            return t; // a frozen agent does nothing until it reconnects
        }
        consider(self.link.as_ref().and_then(|(_, l)| l.poll_timeout()));
        for op in self.ops.values() {
            if let SimOp::Sleep { next, .. } = op {
                consider(Some(*next));
            }
        }
        t
    }

    /// Advances the simulated operations; the link's own timers are driven by the world.
    pub(crate) fn tick_ops(&mut self, now: Instant) {
        let Some((_, link)) = self.link.as_mut() else {
            return;
        };
        let mut finished = vec![];
        for (id, op) in self.ops.iter_mut() {
            if let SimOp::Sleep {
                total,
                done,
                next,
                output,
            } = op
            {
                while *next <= now && *done < *total {
                    *done += 1;
                    *next += Duration::from_secs(1);
                    output.push_str(&format!("second {done}\n"));
                    let _ = link.progress(*id, *done, *total, &format!("slept {done}/{total}"));
                }
                if *done >= *total {
                    let _ = link.result(*id, CommandStatusWire::Success, false, output);
                    finished.push(*id);
                }
            }
        }
        for id in finished {
            self.ops.remove(&id);
        }
    }

    /// Handles one event of the link (the world passes them here).
    pub(crate) fn on_event(&mut self, now: Instant, ev: AgentEvent) {
        let Some((_, link)) = self.link.as_mut() else {
            return;
        };
        match ev {
            AgentEvent::Connected => {
                self.stats.connects += 1;
                self.backoff.connected(now);
            }
            AgentEvent::Command {
                command_id,
                operation,
                data,
            } => {
                self.stats.commands.push(command_id);
                let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                let arg0 = v.get("[args]").and_then(|a| a.get(0)).cloned();
                match operation.as_str() {
                    "echo.Echo" => {
                        let m = arg0
                            .or_else(|| v.get("message").cloned())
                            .and_then(|m| m.as_str().map(str::to_string));
                        let _ = link.progress(command_id, 0, 1, "Running echo.Echo...");
                        let _ = link.result(
                            command_id,
                            CommandStatusWire::Success,
                            false,
                            &m.unwrap_or_default(),
                        );
                    }
                    "sim.Sleep" => {
                        let total = v.get("seconds").and_then(|s| s.as_u64()).unwrap_or(1) as u32;
                        let _ = link.progress(command_id, 0, total, "started");
                        self.ops.insert(
                            command_id,
                            SimOp::Sleep {
                                total,
                                done: 0,
                                next: now + Duration::from_secs(1),
                                output: String::from("started\n"),
                            },
                        );
                    }
                    "data.Show" => {
                        let name = arg0
                            .and_then(|n| n.as_str().map(str::to_string))
                            .unwrap_or_default();
                        let kw = serde_json::json!({ "name": name }).to_string();
                        match link.request(now, "data", &kw) {
                            Ok(rid) => {
                                self.requests.insert(rid, command_id);
                                self.ops.insert(command_id, SimOp::Data);
                            }
                            Err(e) => {
                                let _ = link.result(
                                    command_id,
                                    CommandStatusWire::Failed,
                                    false,
                                    &e.to_string(),
                                );
                            }
                        }
                    }
                    other => {
                        let _ = link.result(
                            command_id,
                            CommandStatusWire::Failed,
                            false,
                            &format!("unknown operation {other}"),
                        );
                    }
                }
            }
            AgentEvent::Cancel { command_id } => {
                if let Some(SimOp::Sleep { output, .. }) = self.ops.remove(&command_id) {
                    let _ = link.done(command_id, CommandStatusWire::Cancelled, false, &output);
                }
            }
            AgentEvent::Response { request_id, result } => {
                if let Some(cid) = self.requests.remove(&request_id) {
                    self.ops.remove(&cid);
                    let (status, out) = match result {
                        Ok(v) => (CommandStatusWire::Success, v),
                        Err(RequestError::Failed(t)) => (CommandStatusWire::Failed, t),
                        Err(e) => (CommandStatusWire::Failed, e.to_string()),
                    };
                    let _ = link.result(cid, status, false, &out);
                }
            }
        }
    }

    /// The link closed: schedule the reconnect.
    pub(crate) fn on_closed(&mut self, now: Instant, reason: CloseReason) {
        if matches!(reason, CloseReason::AuthFailed(_)) {
            self.stats.auth_failures += 1;
        }
        self.stats.disconnects += 1;
        self.stats.close_reasons.push(reason);
        self.link = None;
        self.ops.clear();
        self.requests.clear();
        if !self.stopped {
            let d = self.backoff.next_delay(now, &mut self.rng);
            self.next_connect = Some(now + d);
        }
    }
}

/// A simulated operator session.
#[derive(Debug)]
pub struct OperatorNode {
    pub(crate) conn: ConnId,
    pub(crate) session: ClientSession,
    /// Everything the hub sent (after the welcome), with when it arrived.
    pub inbox: Vec<(Instant, Body)>,
    /// Welcomed.
    pub welcomed: bool,
    /// Closed, with why.
    pub closed: Option<CloseReason>,
    next_rid: u64,
}

impl OperatorNode {
    pub(crate) fn new(now: Instant, conn: ConnId, link: LinkConfig, seed: u64) -> Self {
        OperatorNode {
            conn,
            session: ClientSession::new(now, link, "sim", seed),
            inbox: vec![],
            welcomed: false,
            closed: None,
            next_rid: 1,
        }
    }

    /// A fresh request id.
    pub fn request_id(&mut self) -> u64 {
        self.next_rid += 1;
        self.next_rid
    }

    pub(crate) fn on_event(&mut self, now: Instant, ev: ClientEvent) {
        match ev {
            ClientEvent::Welcome { .. } => self.welcomed = true,
            ClientEvent::Message(m) => self.inbox.push((now, m)),
        }
    }
}

/// A peer that sends chosen bytes and records what comes back.
#[derive(Debug, Default)]
pub struct RawNode {
    /// Its connection.
    pub conn: Option<ConnId>,
    /// Bytes received from the hub.
    pub received: Vec<u8>,
    /// When the hub closed it.
    pub closed_at: Option<Instant>,
}

/// Drains a machine's actions into sends, a close and events.
pub(crate) fn drain<E>(
    mut next: impl FnMut() -> Option<Action<E>>,
) -> (Vec<Vec<u8>>, Option<CloseReason>, Vec<E>) {
    let (mut sends, mut close, mut events) = (vec![], None, vec![]);
    while let Some(a) = next() {
        match a {
            Action::Send(b) => sends.push(b.to_vec()),
            Action::Close(r) => close = Some(r),
            Action::Timer(_) => {}
            Action::Event(e) => events.push(e),
        }
    }
    (sends, close, events)
}
