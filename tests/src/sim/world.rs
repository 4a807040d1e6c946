//! The world: the real hub, the simulated peers, the virtual clock, the seeded network and
//! the simulated storage. This file builds and changes a world; [`super::drive`] runs it and
//! [`super::requests`] has its operators' requests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchboard_core::hub::{Change, ConnId, Hub, HubConfig, HubEvent, PeerInfo, VerifyTicket};
use switchboard_core::machine::CloseReason;
use switchboard_proto::message::Message as Body;

use super::agent::AgentNode;
use super::check::Checker;
use super::clock::Clock;
use super::net::{NetConfig, Network};
use super::node::{Node, Out};
use super::operator::{OperatorNode, RawNode};
use super::store::MemStore;
use super::trace::Trace;
use super::{NodeId, cheap_hash};

/// The hub's side of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HubSide {
    /// The SYN has not reached the hub yet.
    Dialing,
    /// The SYN reached a live hub; the handshake runs.
    Handshake,
    /// The hub accepted it.
    Open,
    /// The hub closed it, saw it close, or died.
    Gone,
}

#[derive(Debug, Clone)]
pub(crate) struct ConnRec {
    pub(crate) node: NodeId,
    pub(crate) peer: PeerInfo,
    pub(crate) hub: HubSide,
    pub(crate) accepted: Option<Instant>,
}

/// A secret verification running "off the hub loop".
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verification {
    pub(crate) hub_generation: u64,
    pub(crate) ticket: VerifyTicket,
    pub(crate) ok: bool,
}

/// The simulated world. A run is a pure function of its seed.
pub struct World {
    /// The seed.
    pub seed: u64,
    /// Virtual time.
    pub clock: Clock,
    pub(crate) rng: ChaCha8Rng,
    /// The hub (`None` while it is down).
    pub hub: Option<Hub>,
    /// Hub configuration (kept across restarts).
    pub hub_cfg: HubConfig,
    /// Durable state.
    pub store: MemStore,
    /// The peers.
    pub nodes: Vec<Node>,
    /// The network.
    pub net: Network,
    pub(crate) conns: BTreeMap<ConnId, ConnRec>,
    pub(crate) next_conn: u64,
    pub(crate) verifications: BTreeMap<(Instant, u64), Verification>,
    pub(crate) verify_seq: u64,
    /// How long a secret verification takes: uniformly in this range.
    pub verify_delay: (Duration, Duration),
    /// Hub events, with when they happened.
    pub events: Vec<(Instant, HubEvent)>,
    /// Connections the hub closed: when, which, why.
    pub hub_closes: Vec<(Instant, ConnId, CloseReason)>,
    /// The run's trace.
    pub trace: Trace,
    /// Steps taken.
    pub steps: u64,
    /// Bound on steps: past it the run panics (a hot loop somewhere).
    pub max_steps: u64,
    pub(crate) same_instant_steps: u64,
    /// Hub starts so far (1 after `new`).
    pub hub_generation: u64,
    pub(crate) frozen: BTreeSet<NodeId>,
    pub(crate) checker: Checker,
    /// The CA of certificate scenarios.
    pub ca: super::SimCa,
    pub(crate) reads: Vec<(ConnId, Vec<switchboard_core::hub::EventRecord>)>,
    /// The web face's settings (`/feed` needs a server key); web connections use them.
    pub web_cfg: switchboard_core::web::WebConfig,
    /// The hub side of each web connection (part of the hub's process).
    pub(crate) web_conns: BTreeMap<ConnId, switchboard_core::web::WebConn>,
    pub(crate) signed: Vec<(
        switchboard_core::hub::SignTicket,
        Result<switchboard_core::hub::SignedCertificate, String>,
    )>,
}

impl World {
    /// A world whose hub (configured with `hub_cfg`) is loaded from an empty store, with
    /// links behaving as `net` by default. Virtual time is bounded by 4 hours, steps by 5
    /// million.
    pub fn new(seed: u64, hub_cfg: HubConfig, net: NetConfig) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let net = Network::new(net, rng.r#gen());
        let mut w = World {
            seed,
            clock: Clock::new(Duration::from_secs(4 * 3600)),
            rng,
            hub: None,
            hub_cfg,
            store: MemStore::default(),
            nodes: vec![],
            net,
            conns: BTreeMap::new(),
            next_conn: 1,
            verifications: BTreeMap::new(),
            verify_seq: 0,
            verify_delay: (Duration::from_millis(1), Duration::from_millis(20)),
            events: vec![],
            hub_closes: vec![],
            trace: Trace::default(),
            steps: 0,
            max_steps: 5_000_000,
            same_instant_steps: 0,
            hub_generation: 0,
            frozen: BTreeSet::new(),
            checker: Checker::default(),
            ca: super::SimCa::default(),
            signed: vec![],
            reads: vec![],
            web_cfg: switchboard_core::web::WebConfig::default(),
            web_conns: BTreeMap::new(),
        };
        w.start_hub();
        w
    }

    /// A world whose hub uses [`short_timers`](super::short_timers) and the default
    /// configuration otherwise.
    pub fn quick(seed: u64, net: NetConfig) -> World {
        let cfg = HubConfig {
            link: super::short_timers(),
            ..HubConfig::default()
        };
        World::new(seed, cfg, net)
    }

    /// Virtual now.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    pub(crate) fn record(&mut self, what: &str) {
        let at = self.clock.elapsed();
        self.trace.record(at, what);
    }

    /// Whether the hub is up.
    pub fn hub_running(&self) -> bool {
        self.hub.is_some()
    }

    /// Starts a hub loaded from the store (no-op if one runs).
    pub fn start_hub(&mut self) {
        if self.hub.is_some() {
            return;
        }
        self.hub_generation += 1;
        let seed = self.rng.r#gen();
        let now = self.now();
        let unix_ms = self.unix_ms();
        let mut hub = Hub::new(self.hub_cfg.clone(), seed, now, unix_ms);
        hub.load(self.store.state(), now);
        self.hub = Some(hub);
        self.record(&format!("hub started (#{})", self.hub_generation));
        self.pump_hub();
    }

    /// The hub process dies: every connection it had (or was accepting) is reset, pending
    /// verifications are lost, and new connections are refused until [`start_hub`](Self::start_hub).
    pub fn stop_hub(&mut self) {
        if self.hub.take().is_none() {
            return;
        }
        self.record("hub stopped");
        self.verifications.clear();
        self.web_conns.clear();
        let now = self.now();
        for (conn, rec) in self.conns.iter_mut() {
            if matches!(rec.hub, HubSide::Handshake | HubSide::Open) {
                rec.hub = HubSide::Gone;
                self.net.hub_reset(now, *conn);
            }
        }
    }

    /// Stops the hub and starts a new one loaded from the store, at once.
    pub fn restart_hub(&mut self) {
        self.stop_hub();
        self.start_hub();
    }

    /// Registers an agent with the running hub (as `admin enroll-agent` would, persisted like
    /// any registration), with a cheap argon2id hash of `secret`.
    pub fn register_agent(&mut self, id: &str, secret: &str, allowed: &[&str]) {
        let hash = cheap_hash(secret);
        let hub = self
            .hub
            .as_mut()
            .expect("register_agent needs a running hub");
        hub.register_agent(
            id.into(),
            hash,
            allowed.iter().map(|s| s.to_string()).collect(),
        );
        self.pump_hub();
    }

    fn push_node(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Adds an agent (id, secret, certificate name) that connects now.
    pub fn spawn_agent(&mut self, id: &str, secret: &str, cert_name: Option<&str>) -> NodeId {
        let rng = ChaCha8Rng::seed_from_u64(self.rng.r#gen());
        let now = self.now();
        let link = self.hub_cfg.link.clone();
        let cert = cert_name.map(str::to_string);
        let n = self.push_node(Node::Agent(AgentNode::new(
            id, secret, cert, link, rng, now,
        )));
        self.record(&format!("spawn agent {id} as node {n}"));
        n
    }

    /// Wall-clock Unix ms now (the hub's wall clock reads the same).
    pub fn unix_ms(&self) -> i64 {
        1_700_000_000_000 + self.elapsed().as_millis() as i64
    }

    /// Issues a certificate for the agent at `node` from the world's CA (as enrolment does);
    /// from then on the agent presents it and renews it over the link.
    pub fn issue_cert(&mut self, node: NodeId) -> super::SimCert {
        let (now, unix) = (self.now(), self.unix_ms());
        let Node::Agent(a) = &mut self.nodes[node] else {
            panic!("node {node} is not an agent");
        };
        let cert = self.ca.issue(&a.id, unix);
        a.set_cert(cert.clone(), now, unix);
        self.record(&format!("issue {cert:?} to node {node}"));
        cert
    }

    /// Registers agent `id` (secret `secret-<id>`), spawns it with a matching certificate and
    /// runs until it is connected (at most 60 s).
    pub fn connected_agent(&mut self, id: &str) -> NodeId {
        let secret = format!("secret-{id}");
        self.register_agent(id, &secret, &[]);
        let a = self.spawn_agent(id, &secret, Some(id));
        let up = self.run_until_cond(Duration::from_secs(60), |w| {
            w.agent(a).is_connected() && w.hub_connected().contains(id)
        });
        assert!(up, "agent {id} did not connect within 60 s");
        a
    }

    /// Adds an operator whose certificate names `cert_name`; it connects now.
    pub fn spawn_operator_as(&mut self, cert_name: Option<&str>) -> NodeId {
        let op = OperatorNode::new(cert_name.map(str::to_string), self.hub_cfg.link.clone());
        let n = self.push_node(Node::Operator(op));
        self.record(&format!("spawn operator {cert_name:?} as node {n}"));
        self.node_outs(n, vec![Out::Connect]);
        n
    }

    /// Adds an operator with the admin certificate and runs until it is welcomed.
    pub fn connected_operator(&mut self) -> NodeId {
        let op = self.spawn_operator_as(Some("admin"));
        let open = self.run_until_cond(Duration::from_secs(30), |w| w.operator(op).is_open());
        assert!(open, "operator not welcomed within 30 s");
        op
    }

    /// Adds a raw peer (certificate `cert_name`) that writes `bytes` once connected.
    pub fn spawn_raw(&mut self, cert_name: Option<&str>, bytes: &[u8]) -> NodeId {
        let script = if bytes.is_empty() {
            vec![]
        } else {
            vec![(Duration::ZERO, bytes.to_vec())]
        };
        self.spawn_raw_script(cert_name, script)
    }

    /// Adds a raw peer (certificate `cert_name`) that writes each chunk of `script` at its
    /// offset from when its connection came up.
    pub fn spawn_raw_script(
        &mut self,
        cert_name: Option<&str>,
        script: Vec<(Duration, Vec<u8>)>,
    ) -> NodeId {
        let raw = RawNode {
            cert_name: cert_name.map(str::to_string),
            script,
            ..RawNode::default()
        };
        let n = self.push_node(Node::Raw(raw));
        self.record(&format!("spawn raw peer as node {n}"));
        self.node_outs(n, vec![Out::Connect]);
        n
    }

    /// The agent at `id`.
    pub fn agent(&self, id: NodeId) -> &AgentNode {
        match &self.nodes[id] {
            Node::Agent(a) => a,
            _ => panic!("node {id} is not an agent"),
        }
    }

    /// The agent at `id`, mutably (to change its mode, stop its reconnects...).
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

    /// Cuts a node off the network (both ways) until [`heal`](Self::heal).
    pub fn partition(&mut self, node: NodeId) {
        self.record(&format!("partition node {node}"));
        self.net.partition(node);
    }

    /// Reconnects a node to the network; held bytes flow again.
    pub fn heal(&mut self, node: NodeId) {
        self.record(&format!("heal node {node}"));
        let now = self.now();
        self.net.heal(now, node);
    }

    /// Stops a node's process (SIGSTOP): it runs no timer and reads nothing; bytes to it wait.
    pub fn freeze(&mut self, node: NodeId) {
        self.record(&format!("freeze node {node}"));
        self.frozen.insert(node);
        self.net.freeze(node);
    }

    /// Lets a frozen node run again.
    pub fn thaw(&mut self, node: NodeId) {
        self.record(&format!("thaw node {node}"));
        self.frozen.remove(&node);
        let now = self.now();
        self.net.thaw(now, node);
    }

    /// Kills an agent's process: its kernel closes its connection (FIN) and it does not come
    /// back until [`revive`](Self::revive).
    pub fn kill(&mut self, node: NodeId) {
        self.record(&format!("kill node {node}"));
        let now = self.now();
        if let Some(conn) = self.agent(node).conn() {
            self.net.peer_gone(now, conn);
        }
        self.agent_mut(node).kill(now);
    }

    /// An agent's machine loses power: its connection vanishes without a FIN (the hub learns
    /// of it from its ping timeout, or when the agent comes back) and it does not come back
    /// until [`revive`](Self::revive).
    pub fn crash(&mut self, node: NodeId) {
        self.record(&format!("crash node {node}"));
        let now = self.now();
        if let Some(conn) = self.agent(node).conn() {
            self.net.peer_vanished(conn);
        }
        self.agent_mut(node).kill(now);
    }

    /// Starts a killed or crashed agent again: it connects after `boot`, with a fresh backoff.
    pub fn revive(&mut self, node: NodeId, boot: Duration) {
        self.record(&format!("revive node {node}"));
        let at = self.now() + boot;
        self.agent_mut(node).revive(at);
    }

    /// Adds a secure-feed client of `version` (its key pair `key`, the server's public key
    /// `server`); it connects now and reconnects a second after losing its connection.
    pub fn spawn_feed(
        &mut self,
        client_id: &str,
        key: switchboard_core::feed::crypto::PrivateKey,
        server: switchboard_core::feed::crypto::PublicKey,
        version: Option<u32>,
    ) -> NodeId {
        let f = super::feed::FeedNode::new(client_id, key, server, version);
        let n = self.push_node(Node::Feed(f));
        self.record(&format!(
            "spawn feed client {client_id} v{version:?} as node {n}"
        ));
        self.node_outs(n, vec![Out::Connect]);
        n
    }

    /// A feed client node.
    pub fn feed(&self, id: NodeId) -> &super::feed::FeedNode {
        match &self.nodes[id] {
            Node::Feed(f) => f,
            _ => panic!("node {id} is not a feed client"),
        }
    }

    /// A feed client node, to change.
    pub fn feed_mut(&mut self, id: NodeId) -> &mut super::feed::FeedNode {
        match &mut self.nodes[id] {
            Node::Feed(f) => f,
            _ => panic!("node {id} is not a feed client"),
        }
    }

    /// A feed client sends an INBOX payload (now if its handshake is done, else once it is).
    pub fn feed_inbox(&mut self, id: NodeId, payload: &[u8]) {
        let mut out = vec![];
        self.feed_mut(id).send_inbox(payload, &mut out);
        self.node_outs(id, out);
    }

    /// A feed client's connection is cut (both directions, no FIN): it notices by itself only
    /// through the hub's close, or not at all; here it is told at once and reconnects.
    pub fn feed_drop(&mut self, id: NodeId) {
        let now = self.now();
        let Some(conn) = self.feed(id).conn else {
            return;
        };
        self.record(&format!("feed client {id}: connection {conn:?} cut"));
        self.net.peer_gone(now, conn);
        let mut out = vec![];
        self.nodes[id].transport_closed(now, conn, "cut", &mut out);
        self.node_outs(id, out);
    }

    /// An operator's process exits: its kernel closes its connection (FIN) and it hears
    /// nothing more (operators do not reconnect: spawn another).
    pub fn hang_up(&mut self, op: NodeId) {
        self.record(&format!("operator {op} hangs up"));
        let now = self.now();
        let Node::Operator(o) = &mut self.nodes[op] else {
            panic!("node {op} is not an operator");
        };
        if let Some(conn) = o.conn {
            self.net.peer_gone(now, conn);
        }
        o.hang_up(now);
    }

    /// What the hub was told of the peer of `conn` (address, certificate).
    pub fn peer_of(&self, conn: ConnId) -> Option<&PeerInfo> {
        self.conns.get(&conn).map(|r| &r.peer)
    }

    /// When the hub accepted `conn`, if it did.
    pub fn accepted_at(&self, conn: ConnId) -> Option<Instant> {
        self.conns.get(&conn).and_then(|r| r.accepted)
    }

    /// Checks what must hold at the end of any scenario: the store refused no change (the hub
    /// and its store agree), and every command the store still calls pending is one the hub
    /// is still running.
    pub fn assert_invariants(&self) {
        assert!(
            self.store.refused.is_empty(),
            "the store refused changes: {:?}",
            self.store.refused
        );
        if let Some(hub) = &self.hub {
            let pending = self
                .store
                .commands
                .values()
                .filter(|c| c.status == switchboard_core::hub::CommandStatus::Pending)
                .count();
            assert_eq!(
                pending,
                hub.active_commands(),
                "commands pending in the store vs running in the hub"
            );
        }
    }

    /// Gives the links of `node` their own behaviour (`None`: the default again).
    pub fn set_node_net(&mut self, node: NodeId, cfg: Option<NetConfig>) {
        self.record(&format!("node {node} net {cfg:?}"));
        self.net.set_node_config(node, cfg);
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

    /// Whether the hub reported an event matching `f`.
    pub fn saw(&self, f: impl Fn(&HubEvent) -> bool) -> bool {
        self.events.iter().any(|(_, e)| f(e))
    }

    /// Ids of connected agents, per the hub.
    pub fn hub_connected(&self) -> BTreeSet<String> {
        self.hub
            .as_ref()
            .map(|h| h.connected_agents().into_iter().collect())
            .unwrap_or_default()
    }

    /// A new connection of `node`, dialing now.
    pub(crate) fn dial(&mut self, node: NodeId) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let addr: SocketAddr = format!(
            "172.16.{}.{}:{}",
            node / 250,
            1 + node % 250,
            20_000 + conn.0 % 40_000
        )
        .parse()
        .expect("address");
        let cert_name = self.nodes[node].cert_name();
        let cert = self.nodes[node].cert().map(super::SimCert::peer_cert);
        self.conns.insert(
            conn,
            ConnRec {
                node,
                peer: PeerInfo {
                    addr,
                    cert_name,
                    cert,
                    web: self.nodes[node].is_web(),
                },
                hub: HubSide::Dialing,
                accepted: None,
            },
        );
        let now = self.now();
        self.net.open(now, conn, node);
        self.record(&format!("node {node} dials {conn:?}"));
        conn
    }
}

/// A short name of a message for the trace.
pub(crate) fn body_kind(b: &Body) -> switchboard_proto::MessageType {
    switchboard_core::link::msg::type_of(b)
}
