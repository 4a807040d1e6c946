//! Running a world: the event loop on virtual time, deliveries, and performing what the hub
//! and the peers ask, in order.
//!
//! Each step jumps the clock to the earliest of: the next network delivery, the next finished
//! secret verification, the hub's `poll_timeout()`, and every running peer's own deadline
//! (its machine's `poll_timeout()`, its reconnect or connect deadline, its operations'
//! timers). At that instant it delivers everything due, hands back finished verifications,
//! runs the hub's timers, then the peers' timers. Every run is bounded: past
//! [`World::max_steps`] steps, past the clock's limit, or after too many steps without time
//! moving (a machine whose deadline never moves: a hot loop), it panics.

use std::time::{Duration, Instant};

use rand::Rng;
use switchboard_core::hub::{ConnId, Hub, HubAction};

use super::net::{Delivery, Dir, Payload};
use super::node::Out;
use super::world::{HubSide, Verification, World};
use super::{NodeId, verify};

/// Steps allowed at one instant before the run is declared stuck.
const MAX_STEPS_AT_ONE_INSTANT: u64 = 100_000;

impl World {
    /// The earliest instant at which something happens, if anything will.
    pub fn next_event(&self) -> Option<Instant> {
        let hub = self.hub.as_ref().and_then(Hub::poll_timeout);
        let verify = self.verifications.keys().next().map(|(t, _)| *t);
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.frozen.contains(i))
            .filter_map(|(_, n)| n.poll_timeout());
        let web = self
            .web_conns
            .values()
            .filter_map(|w| w.poll_timeout())
            .min();
        [self.net.next_delivery(), hub, verify, web]
            .into_iter()
            .flatten()
            .chain(nodes)
            .min()
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(t) = self.next_event().filter(|t| *t <= until) {
            self.step(t);
        }
        self.clock.advance_to(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now() + d;
        self.run_until(until);
    }

    /// Runs until `done` holds (checked before every step) or `limit` of virtual time passed.
    /// Returns whether `done` held.
    pub fn run_until_cond(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&World) -> bool,
    ) -> bool {
        let until = self.now() + limit;
        loop {
            if done(self) {
                return true;
            }
            match self.next_event() {
                Some(t) if t <= until => self.step(t),
                _ => {
                    self.clock.advance_to(until);
                    return done(self);
                }
            }
        }
    }

    fn step(&mut self, t: Instant) {
        self.steps += 1;
        assert!(
            self.steps <= self.max_steps,
            "step bound of {} reached at {:?} of virtual time: a hot loop?",
            self.max_steps,
            self.elapsed()
        );
        if t <= self.now() {
            self.same_instant_steps += 1;
            assert!(
                self.same_instant_steps < MAX_STEPS_AT_ONE_INSTANT,
                "time stands still at {:?}: some deadline is due but never moves",
                self.elapsed()
            );
        } else {
            self.same_instant_steps = 0;
        }
        self.clock.advance_to(t);
        let now = self.now();
        while let Some(d) = self.net.pop_due(now) {
            self.deliver(d);
        }
        while let Some((&key, _)) = self.verifications.first_key_value() {
            if key.0 > now {
                break;
            }
            let Some(v) = self.verifications.remove(&key) else {
                break;
            };
            if v.hub_generation == self.hub_generation
                && let Some(hub) = self.hub.as_mut()
            {
                hub.handle_verified(now, v.ticket, v.ok);
                self.pump_hub();
            }
        }
        if let Some(hub) = self.hub.as_mut()
            && hub.poll_timeout().is_some_and(|t| t <= now)
        {
            hub.handle_timeout(now);
            self.pump_hub();
        }
        let due: Vec<ConnId> = self
            .web_conns
            .iter()
            .filter(|(_, w)| w.poll_timeout().is_some_and(|t| t <= now))
            .map(|(c, _)| *c)
            .collect();
        for conn in due {
            if let Some(w) = self.web_conns.get_mut(&conn) {
                w.handle_timeout(now);
            }
            self.pump_web(now, conn);
            self.pump_hub();
        }
        for id in 0..self.nodes.len() {
            if self.frozen.contains(&id) {
                continue;
            }
            if self.nodes[id].poll_timeout().is_some_and(|t| t <= now) {
                let mut out = vec![];
                self.nodes[id].handle_timeout(now, &mut out);
                self.node_outs(id, out);
            }
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.now();
        let conn = d.conn;
        let Some(rec) = self.conns.get(&conn).cloned() else {
            return;
        };
        let node = rec.node;
        let mut out = vec![];
        match (d.dir, d.payload) {
            (Dir::ToHub, Payload::Syn) => {
                if self.hub.is_some() {
                    self.record(&format!("{conn:?} SYN reaches the hub"));
                    self.set_hub_side(conn, HubSide::Handshake);
                    self.net.accept_syn(now, conn);
                } else {
                    self.record(&format!("{conn:?} SYN refused: no hub"));
                    self.net.refuse(now, conn);
                }
            }
            (Dir::ToHub, Payload::Accept) => {
                let unix = self.unix_ms();
                let expired = self.nodes[rec.node]
                    .cert()
                    .is_some_and(|c| !c.valid_at(unix));
                if rec.hub == HubSide::Handshake && expired {
                    // rustls refuses a certificate out of its validity: the hub never sees it.
                    self.record(&format!("{conn:?} TLS refuses an expired certificate"));
                    self.set_hub_side(conn, HubSide::Gone);
                    self.net.fin(now, conn, Dir::ToPeer);
                } else if rec.hub == HubSide::Handshake
                    && let Some(hub) = self.hub.as_mut()
                {
                    hub.accept(now, conn, rec.peer.clone());
                    self.set_hub_side(conn, HubSide::Open);
                    if rec.peer.web {
                        let mut seed = [0u8; 32];
                        self.rng.fill(&mut seed);
                        let web = switchboard_core::web::WebConn::new(now, self.web_cfg.clone())
                            .with_feed_seed(seed);
                        self.web_conns.insert(conn, web);
                    }
                    if let Some(r) = self.conns.get_mut(&conn) {
                        r.accepted = Some(now);
                    }
                    self.record(&format!("hub accepts {conn:?} {:?}", rec.peer));
                    self.pump_hub();
                }
            }
            (Dir::ToHub, Payload::Bytes(b)) if self.web_conns.contains_key(&conn) => {
                if rec.hub == HubSide::Open
                    && let Some(w) = self.web_conns.get_mut(&conn)
                {
                    w.handle_socket(now, &b);
                    self.record(&format!("{conn:?} -> web face {}B", b.len()));
                    self.pump_web(now, conn);
                    self.pump_hub();
                }
            }
            (Dir::ToHub, Payload::Bytes(b)) => {
                if rec.hub == HubSide::Open
                    && let Some(hub) = self.hub.as_mut()
                {
                    hub.handle_input(now, conn, &b);
                    self.record(&format!("{conn:?} -> hub {}B", b.len()));
                    self.pump_hub();
                }
            }
            (Dir::ToHub, Payload::Fin | Payload::Reset) => {
                self.record(&format!("{conn:?} -> hub FIN"));
                self.web_conns.remove(&conn);
                if rec.hub == HubSide::Open
                    && let Some(hub) = self.hub.as_mut()
                {
                    hub.handle_closed(now, conn);
                    self.checker.hub_told_closed(conn);
                    self.pump_hub();
                }
                self.set_hub_side(conn, HubSide::Gone);
            }
            (Dir::ToPeer, Payload::Established) => {
                self.record(&format!("{conn:?} established at node {node}"));
                let seed = self.rng.r#gen();
                self.nodes[node].established(now, conn, seed, &mut out);
            }
            (Dir::ToPeer, Payload::Bytes(b)) => {
                self.record(&format!("hub -> {conn:?} {}B", b.len()));
                self.nodes[node].input(now, conn, &b, &mut out);
            }
            (Dir::ToPeer, Payload::Fin) => {
                self.record(&format!("hub FIN -> {conn:?}"));
                self.nodes[node].transport_closed(now, conn, "closed by the hub", &mut out);
            }
            (Dir::ToPeer, Payload::Reset) => {
                let why = if rec.hub == HubSide::Dialing {
                    "connection refused"
                } else {
                    "connection reset"
                };
                self.record(&format!("{conn:?} {why}"));
                self.nodes[node].transport_closed(now, conn, why, &mut out);
            }
            (Dir::ToHub, Payload::Established) | (Dir::ToPeer, Payload::Syn | Payload::Accept) => {
                unreachable!("handshake segment in the wrong direction")
            }
        }
        self.node_outs(node, out);
    }

    /// Performs what a web connection's WebConn asks: bytes to the client, native bytes into
    /// the hub (whose actions the caller drains), a close.
    fn pump_web(&mut self, now: Instant, conn: ConnId) {
        while let Some(o) = self.web_conns.get_mut(&conn).and_then(|w| w.poll_output()) {
            match o {
                switchboard_core::web::WebOutput::Socket(b) => {
                    if self.conns.get(&conn).map(|r| r.hub) == Some(HubSide::Open) {
                        self.record(&format!("web face -> {conn:?} {}B", b.len()));
                        self.net.send(now, conn, Dir::ToPeer, &b);
                    }
                }
                switchboard_core::web::WebOutput::Hub(b) => {
                    if let Some(hub) = self.hub.as_mut() {
                        hub.handle_input(now, conn, &b);
                    }
                }
                switchboard_core::web::WebOutput::Close => {
                    self.record(&format!("web face closes {conn:?}"));
                    self.web_conns.remove(&conn);
                    if let Some(hub) = self.hub.as_mut() {
                        hub.handle_closed(now, conn);
                    }
                    self.checker.hub_told_closed(conn);
                    if self.conns.get(&conn).map(|r| r.hub) == Some(HubSide::Open) {
                        self.set_hub_side(conn, HubSide::Gone);
                        self.net.fin(now, conn, Dir::ToPeer);
                    }
                    return;
                }
            }
        }
    }

    fn set_hub_side(&mut self, conn: ConnId, side: HubSide) {
        if let Some(r) = self.conns.get_mut(&conn) {
            r.hub = side;
        }
    }

    /// Performs what a peer asked.
    pub(crate) fn node_outs(&mut self, node: NodeId, outs: Vec<Out>) {
        let now = self.now();
        for o in outs {
            match o {
                Out::Connect => {
                    let conn = self.dial(node);
                    self.nodes[node].connecting(now, conn);
                }
                Out::Send(conn, bytes) => {
                    let labels = self.checker.peer_sent(conn, &bytes);
                    self.record(&format!(
                        "node {node} writes {conn:?} {}B {labels:?}",
                        bytes.len()
                    ));
                    self.net.send(now, conn, Dir::ToHub, &bytes);
                }
                Out::Fin(conn) => {
                    self.record(&format!("node {node} closes {conn:?}"));
                    self.net.fin(now, conn, Dir::ToHub);
                }
                Out::Abandon(conn) => {
                    self.record(&format!("node {node} gives up {conn:?}"));
                    self.net.peer_gone(now, conn);
                }
            }
        }
    }

    /// Performs what the hub asks, in order: a Persist is in the store before any later action.
    pub(crate) fn pump_hub(&mut self) {
        let now = self.now();
        loop {
            self.pump_hub_actions(now);
            if self.signed.is_empty() && self.reads.is_empty() {
                return;
            }
            for (conn, events) in std::mem::take(&mut self.reads) {
                if let Some(hub) = self.hub.as_mut() {
                    hub.handle_events_read(conn, events);
                }
            }
            // Signing is quick and happens "off the loop": hand the answers back now.
            for (ticket, result) in std::mem::take(&mut self.signed) {
                if let Some(hub) = self.hub.as_mut() {
                    hub.handle_signed(now, ticket, result);
                }
            }
        }
    }

    fn pump_hub_actions(&mut self, now: Instant) {
        while let Some(action) = self.hub.as_mut().and_then(Hub::poll_action) {
            match action {
                HubAction::ReadEvents {
                    conn,
                    after_order,
                    limit,
                } => {
                    let events = self.store.read_events(after_order, limit);
                    self.record(&format!(
                        "read {} events after {after_order} for {conn:?}",
                        events.len()
                    ));
                    self.reads.push((conn, events));
                }
                HubAction::SignCertificate {
                    ticket,
                    name,
                    csr_der,
                } => {
                    let r = self.ca.sign(&name, &csr_der, self.unix_ms());
                    self.record(&format!("sign {ticket:?} for {name}: {r:?}"));
                    self.signed.push((ticket, r));
                }
                HubAction::Send { conn, bytes } => {
                    let labels = self
                        .checker
                        .hub_sent(conn, &bytes, &self.store)
                        .unwrap_or_else(|e| panic!("{e}"));
                    self.record(&format!("hub writes {conn:?} {}B {labels:?}", bytes.len()));
                    if let Some(w) = self.web_conns.get_mut(&conn) {
                        w.handle_hub(now, &bytes);
                        self.pump_web(now, conn);
                        continue;
                    }
                    match self.conns.get(&conn).map(|r| r.hub) {
                        Some(HubSide::Open) => self.net.send(now, conn, Dir::ToPeer, &bytes),
                        Some(_) => {} // the peer is gone: the write fails, as on a socket
                        None => panic!("the hub writes on {conn:?}, which never existed"),
                    }
                }
                HubAction::Close { conn, reason } => {
                    self.checker
                        .hub_closed(conn)
                        .unwrap_or_else(|e| panic!("{e}"));
                    self.record(&format!("hub closes {conn:?}: {reason}"));
                    self.hub_closes.push((now, conn, reason.clone()));
                    if let Some(w) = self.web_conns.get_mut(&conn) {
                        w.handle_hub_closed(&reason.to_string());
                        self.pump_web(now, conn);
                        continue;
                    }
                    if self.conns.get(&conn).map(|r| r.hub) == Some(HubSide::Open) {
                        self.set_hub_side(conn, HubSide::Gone);
                        self.net.fin(now, conn, Dir::ToPeer);
                    }
                }
                HubAction::Persist(c) => {
                    self.record(&format!("persist {c:?}"));
                    self.store.apply(&c);
                }
                HubAction::VerifySecret {
                    ticket,
                    secret_hash,
                    secret,
                } => {
                    // For real, with the hash's own (cheap) parameters; no hash: false.
                    let ok = secret_hash.as_deref().is_some_and(|h| verify(h, &secret));
                    let (lo, hi) = self.verify_delay;
                    let micros = self
                        .rng
                        .gen_range(lo.as_micros()..=hi.as_micros().max(lo.as_micros()));
                    let at = now + Duration::from_micros(micros as u64);
                    self.verify_seq += 1;
                    self.record(&format!("verify {ticket:?}: {ok} at +{micros}us"));
                    let v = Verification {
                        hub_generation: self.hub_generation,
                        ticket,
                        ok,
                    };
                    self.verifications.insert((at, self.verify_seq), v);
                }
                HubAction::Relay(cmd) => self.record(&format!("relay {cmd:?}")),
                HubAction::Event(e) => {
                    self.record(&format!("event {e:?}"));
                    self.events.push((now, e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::sim::{NetConfig, World};

    #[test]
    #[should_panic(expected = "step bound")]
    fn a_run_stops_at_its_step_bound() {
        let mut w = World::quick(1, NetConfig::default());
        w.max_steps = 5;
        w.connected_agent("a1");
    }

    #[test]
    #[should_panic(expected = "virtual time bound")]
    fn a_run_stops_at_its_time_bound() {
        let mut w = World::quick(1, NetConfig::default());
        w.clock.set_limit(Duration::from_secs(30));
        w.run_for(Duration::from_secs(31));
    }
}
