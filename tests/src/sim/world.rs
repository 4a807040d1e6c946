//! The world: the real hub, the simulated peers, a virtual clock and a seeded network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchboard_core::hub::{
    Change, ConnId, Hub, HubAction, HubConfig, HubEvent, PeerInfo, VerifyTicket,
};
use switchboard_core::machine::CloseReason;
use switchboard_proto::message::Message as Body;

use super::net::{NetConfig, Network, Payload};
use super::nodes::{AgentNode, OperatorNode, RawNode, drain};
use super::store::MemStore;
use super::trace::Trace;

/// Index of a node in the world.
pub type NodeId = usize;

/// A peer of the hub.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a few nodes per world: boxing buys nothing
pub enum Node {
    /// An agent.
    Agent(AgentNode),
    /// An operator.
    Operator(OperatorNode),
    /// A raw byte sender.
    Raw(RawNode),
}

/// The simulated world. Every run is a pure function of its seed.
pub struct World {
    /// The seed.
    pub seed: u64,
    /// Virtual now.
    pub now: Instant,
    /// The base instant (virtual time zero).
    pub base: Instant,
    rng: ChaCha8Rng,
    /// The hub (replaced on restart).
    pub hub: Option<Hub>,
    /// Hub configuration (kept across restarts).
    pub hub_cfg: HubConfig,
    /// Durable state.
    pub store: MemStore,
    /// The peers.
    pub nodes: Vec<Node>,
    /// The network.
    pub net: Network,
    conn_node: BTreeMap<ConnId, NodeId>,
    next_conn: u64,
    verifications: BTreeMap<(Instant, u64), (VerifyTicket, bool)>,
    /// Hub events, with when they happened.
    pub events: Vec<(Instant, HubEvent)>,
    /// The run's trace.
    pub trace: Trace,
    /// Steps taken.
    pub steps: u64,
    /// Bound on steps (the run stops by itself).
    pub max_steps: u64,
    restarts: u64,
}

impl World {
    /// A world with a hub loaded from an empty store.
    #[allow(clippy::disallowed_methods)] // virtual time zero; the world never reads the clock again
    pub fn new(seed: u64, hub_cfg: HubConfig, net: NetConfig) -> World {
        let base = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let net = Network::new(net, rng.r#gen());
        let mut w = World {
            seed,
            now: base,
            base,
            rng,
            hub: None,
            hub_cfg,
            store: MemStore::default(),
            nodes: vec![],
            net,
            conn_node: BTreeMap::new(),
            next_conn: 1,
            verifications: BTreeMap::new(),
            events: vec![],
            trace: Trace::default(),
            steps: 0,
            max_steps: 5_000_000,
            restarts: 0,
        };
        w.start_hub();
        w
    }

    /// Virtual seconds since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    fn start_hub(&mut self) {
        let seed = self.rng.r#gen();
        let mut hub = Hub::new(
            self.hub_cfg.clone(),
            seed,
            self.now,
            1_700_000_000_000 + self.elapsed().as_millis() as i64,
        );
        hub.load(self.store.state(), self.now);
        self.hub = Some(hub);
        self.trace
            .record(self.now, &format!("hub started (#{})", self.restarts));
        self.pump_hub();
    }

    /// Registers an agent with the running hub (as `admin enroll-agent` would; persisted
    /// like any registration) with a cheap argon2id hash.
    pub fn register_agent(&mut self, id: &str, secret: &str, allowed: &[&str]) {
        let hash = super::cheap_hash(secret);
        if let Some(hub) = self.hub.as_mut() {
            hub.register_agent(
                id.into(),
                hash,
                allowed.iter().map(|s| s.to_string()).collect(),
            );
        }
        self.pump_hub();
    }

    /// Restarts the hub: every connection is reset, a new hub loads the store.
    pub fn restart_hub(&mut self) {
        self.restarts += 1;
        self.trace.record(self.now, "hub restart");
        self.hub = None;
        self.verifications.clear();
        let conns: Vec<ConnId> = self.conn_node.keys().copied().collect();
        for c in conns {
            self.net.forget(c);
            self.node_transport_closed(c, "connection reset (hub restart)");
        }
        self.conn_node.clear();
        self.start_hub();
    }

    /// Adds an agent that connects now.
    pub fn spawn_agent(&mut self, id: &str, secret: &str, cert_name: Option<&str>) -> NodeId {
        let rng = ChaCha8Rng::seed_from_u64(self.rng.r#gen());
        let node = AgentNode::new(
            id,
            secret,
            cert_name.map(str::to_string),
            self.hub_cfg.link.clone(),
            rng,
            self.now,
        );
        self.nodes.push(Node::Agent(node));
        self.nodes.len() - 1
    }

    /// Adds an operator with the admin certificate, connected now.
    pub fn spawn_operator(&mut self) -> NodeId {
        let id = self.nodes.len();
        let conn = self.connect(id, Some("admin".into()));
        let op = OperatorNode::new(self.now, conn, self.hub_cfg.link.clone(), self.rng.r#gen());
        self.nodes.push(Node::Operator(op));
        self.pump_node(id);
        id
    }

    /// Adds a raw peer (certificate `cert_name`) that sends `bytes` once connected.
    pub fn spawn_raw(&mut self, cert_name: Option<&str>, bytes: &[u8]) -> NodeId {
        let id = self.nodes.len();
        let conn = self.connect(id, cert_name.map(str::to_string));
        self.nodes.push(Node::Raw(RawNode {
            conn: Some(conn),
            ..RawNode::default()
        }));
        if !bytes.is_empty() {
            self.net.send(self.now, conn, true, bytes);
        }
        id
    }

    fn connect(&mut self, node: NodeId, cert_name: Option<String>) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conn_node.insert(conn, node);
        self.net.open(self.now, conn, node);
        let addr: SocketAddr = format!("127.0.0.{}:{}", 1 + node % 200, 10_000 + conn.0 % 50_000)
            .parse()
            .expect("addr");
        self.trace
            .record(self.now, &format!("connect node {node} as {conn:?}"));
        if let Some(hub) = self.hub.as_mut() {
            hub.accept(self.now, conn, PeerInfo { addr, cert_name });
        }
        self.pump_hub();
        conn
    }

    /// The agent at `id`.
    pub fn agent(&self, id: NodeId) -> &AgentNode {
        match &self.nodes[id] {
            Node::Agent(a) => a,
            _ => panic!("node {id} is not an agent"),
        }
    }

    /// The agent at `id`, mutably.
    pub fn agent_mut(&mut self, id: NodeId) -> &mut AgentNode {
        match &mut self.nodes[id] {
            Node::Agent(a) => a,
            _ => panic!("node {id} is not an agent"),
        }
    }

    /// The operator at `id`.
    pub fn operator(&self, id: NodeId) -> &OperatorNode {
        match &self.nodes[id] {
            Node::Operator(o) => o,
            _ => panic!("node {id} is not an operator"),
        }
    }

    /// The raw peer at `id`.
    pub fn raw(&self, id: NodeId) -> &RawNode {
        match &self.nodes[id] {
            Node::Raw(r) => r,
            _ => panic!("node {id} is not a raw peer"),
        }
    }

    /// Sends a request from an operator.
    pub fn operator_send(&mut self, id: NodeId, body: Body) {
        if let Node::Operator(o) = &mut self.nodes[id] {
            let _ = o.session.send_request(body);
        }
        self.pump_node(id);
    }

    /// Cuts a node off the network (both ways) until [`heal`](Self::heal).
    pub fn partition(&mut self, node: NodeId) {
        self.trace
            .record(self.now, &format!("partition node {node}"));
        self.net.partition(node);
    }

    /// Reconnects a node to the network; held bytes flow again.
    pub fn heal(&mut self, node: NodeId) {
        self.trace.record(self.now, &format!("heal node {node}"));
        self.net.heal(self.now, node);
    }

    /// The earliest instant anything happens.
    fn next_time(&self) -> Option<Instant> {
        let mut t = self.net.next_delivery();
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        min(self.hub.as_ref().and_then(|h| h.poll_timeout()));
        min(self.verifications.keys().next().map(|(t, _)| *t));
        for n in &self.nodes {
            match n {
                Node::Agent(a) => min(a.poll_timeout()),
                Node::Operator(o) if o.closed.is_none() => min(o.session.poll_timeout()),
                _ => {}
            }
        }
        t
    }

    /// Runs until virtual time `until` (or the step bound).
    pub fn run_until(&mut self, until: Instant) {
        while self.steps < self.max_steps {
            match self.next_time() {
                Some(t) if t <= until => self.step(t),
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs until `done` holds (checked after every step) or `limit` of virtual time passed.
    /// Returns whether `done` held.
    pub fn run_until_cond(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&World) -> bool,
    ) -> bool {
        let until = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            match self.next_time() {
                Some(t) if t <= until && self.steps < self.max_steps => self.step(t),
                _ => {
                    self.now = self.now.max(until);
                    return done(self);
                }
            }
        }
    }

    fn step(&mut self, t: Instant) {
        self.steps += 1;
        self.now = self.now.max(t);
        let now = self.now;
        // 1. Network deliveries due now.
        while let Some(d) = self.net.pop_due(now) {
            match (d.to_hub, d.payload) {
                (true, Payload::Bytes(b)) => {
                    self.trace
                        .record(now, &format!("{:?} -> hub {}B", d.conn, b.len()));
                    if let Some(hub) = self.hub.as_mut() {
                        hub.handle_input(now, d.conn, &b);
                    }
                    self.pump_hub();
                }
                (true, Payload::Closed) => {
                    self.trace
                        .record(now, &format!("{:?} -> hub closed", d.conn));
                    if let Some(hub) = self.hub.as_mut() {
                        hub.handle_closed(now, d.conn);
                    }
                    self.pump_hub();
                }
                (false, Payload::Bytes(b)) => {
                    self.trace
                        .record(now, &format!("hub -> {:?} {}B", d.conn, b.len()));
                    self.node_input(d.conn, &b);
                }
                (false, Payload::Closed) => {
                    self.trace.record(now, &format!("hub closed {:?}", d.conn));
                    self.node_transport_closed(d.conn, "closed by the hub");
                }
            }
        }
        // 2. Verifications that finished.
        let due: Vec<(Instant, u64)> = self
            .verifications
            .range(..=(now, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some((ticket, ok)) = self.verifications.remove(&k) {
                if let Some(hub) = self.hub.as_mut() {
                    hub.handle_verified(now, ticket, ok);
                }
                self.pump_hub();
            }
        }
        // 3. Hub timers.
        if self
            .hub
            .as_ref()
            .and_then(|h| h.poll_timeout())
            .is_some_and(|t| t <= now)
        {
            if let Some(hub) = self.hub.as_mut() {
                hub.handle_timeout(now);
            }
            self.pump_hub();
        }
        // 4. Node timers.
        for id in 0..self.nodes.len() {
            let due = match &self.nodes[id] {
                Node::Agent(a) => a.poll_timeout().is_some_and(|t| t <= now),
                Node::Operator(o) => {
                    o.closed.is_none() && o.session.poll_timeout().is_some_and(|t| t <= now)
                }
                Node::Raw(_) => false,
            };
            if due {
                self.node_timeout(id);
            }
        }
    }

    fn node_timeout(&mut self, id: NodeId) {
        let now = self.now;
        let mut connect = false;
        match &mut self.nodes[id] {
            Node::Agent(a) => {
                if a.next_connect.is_some_and(|t| t <= now) && a.link.is_none() && !a.stopped {
                    connect = true;
                } else if !a.frozen {
                    if let Some((_, l)) = a.link.as_mut() {
                        l.handle_timeout(now);
                    }
                    a.tick_ops(now);
                }
            }
            Node::Operator(o) => o.session.handle_timeout(now),
            Node::Raw(_) => {}
        }
        if connect {
            let cert = match &self.nodes[id] {
                Node::Agent(a) => a.cert_name.clone(),
                _ => None,
            };
            let conn = self.connect(id, cert);
            let seed = self.rng.r#gen();
            if let Node::Agent(a) = &mut self.nodes[id] {
                a.start_link(now, conn, seed);
            }
        }
        self.pump_node(id);
    }

    fn node_input(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(&id) = self.conn_node.get(&conn) else {
            return;
        };
        let now = self.now;
        match &mut self.nodes[id] {
            Node::Agent(a) => {
                if a.frozen {
                    return;
                }
                match a.link.as_mut() {
                    Some((c, l)) if *c == conn => l.handle_input(now, bytes),
                    _ => return,
                }
            }
            Node::Operator(o) if o.conn == conn => o.session.handle_input(now, bytes),
            Node::Raw(r) => r.received.extend_from_slice(bytes),
            _ => return,
        }
        self.pump_node(id);
    }

    fn node_transport_closed(&mut self, conn: ConnId, why: &str) {
        let Some(id) = self.conn_node.remove(&conn) else {
            return;
        };
        let now = self.now;
        match &mut self.nodes[id] {
            Node::Agent(a) => {
                if let Some((c, l)) = a.link.as_mut()
                    && *c == conn
                {
                    l.handle_transport_closed(why);
                }
            }
            Node::Operator(o) if o.conn == conn => o.session.handle_transport_closed(why),
            Node::Raw(r) => r.closed_at = Some(now),
            _ => {}
        }
        self.pump_node(id);
    }

    /// Performs what a node's machine asks.
    fn pump_node(&mut self, id: NodeId) {
        let now = self.now;
        loop {
            let (conn, sends, close, progressed) = match &mut self.nodes[id] {
                Node::Agent(a) => {
                    let Some((conn, link)) = a.link.as_mut() else {
                        return;
                    };
                    let conn = *conn;
                    let (sends, close, events) = drain(|| link.poll_action());
                    let progressed = !events.is_empty();
                    for e in events {
                        a.on_event(now, e);
                    }
                    if let Some(r) = &close {
                        a.on_closed(now, r.clone());
                    }
                    (conn, sends, close, progressed)
                }
                Node::Operator(o) => {
                    let conn = o.conn;
                    let (sends, close, events) = drain(|| o.session.poll_action());
                    let progressed = !events.is_empty();
                    for e in events {
                        o.on_event(now, e);
                    }
                    if let Some(r) = &close {
                        o.closed = Some(r.clone());
                    }
                    (conn, sends, close, progressed)
                }
                Node::Raw(_) => return,
            };
            let any = !sends.is_empty() || close.is_some() || progressed;
            for s in sends {
                self.net.send(now, conn, true, &s);
            }
            if let Some(r) = close {
                self.trace
                    .record(now, &format!("node {id} closes {conn:?}: {r}"));
                self.net.close(now, conn, true);
                self.conn_node.remove(&conn);
                return;
            }
            if !any {
                return;
            }
        }
    }

    /// Performs what the hub asks.
    fn pump_hub(&mut self) {
        let now = self.now;
        loop {
            let Some(action) = self.hub.as_mut().and_then(|h| h.poll_action()) else {
                return;
            };
            match action {
                // Actions are performed in order: a Persist is in the store before any later
                // send that acknowledges it leaves.
                HubAction::Send { conn, bytes } => self.net.send(now, conn, false, &bytes),
                HubAction::Close { conn, reason } => {
                    self.trace
                        .record(now, &format!("hub closes {conn:?}: {reason}"));
                    self.net.close(now, conn, false);
                }
                HubAction::Persist(c) => {
                    self.trace.record(now, &format!("persist {c:?}"));
                    self.store.apply(&c);
                }
                HubAction::VerifySecret {
                    ticket,
                    secret_hash,
                    secret,
                } => {
                    let ok = secret_hash
                        .as_deref()
                        .is_some_and(|h| super::verify(h, &secret));
                    let delay = Duration::from_millis(self.rng.gen_range(1..20));
                    let seq = self.rng.r#gen();
                    self.verifications.insert((now + delay, seq), (ticket, ok));
                }
                HubAction::Relay(_) => {}
                HubAction::Event(e) => {
                    self.trace.record(now, &format!("event {e:?}"));
                    self.events.push((now, e));
                }
            }
        }
    }

    /// Command ids the hub persisted as created, in order.
    pub fn created_commands(&self) -> Vec<i64> {
        self.store
            .applied
            .iter()
            .filter_map(|c| match c {
                Change::CommandCreated(r) => Some(r.command_id),
                _ => None,
            })
            .collect()
    }

    /// Whether the hub reported `f` about some event.
    pub fn saw(&self, f: impl Fn(&HubEvent) -> bool) -> bool {
        self.events.iter().any(|(_, e)| f(e))
    }

    /// Why connections of `node` were closed by the hub, from the trace of Byes it received.
    pub fn closes_of(&self, node: NodeId) -> Vec<CloseReason> {
        match &self.nodes[node] {
            Node::Agent(a) => a.stats.close_reasons.clone(),
            Node::Operator(o) => o.closed.iter().cloned().collect(),
            Node::Raw(_) => vec![],
        }
    }

    /// Ids of connected agents, per the hub.
    pub fn hub_connected(&self) -> BTreeSet<String> {
        self.hub
            .as_ref()
            .map(|h| h.connected_agents().into_iter().collect())
            .unwrap_or_default()
    }
}
