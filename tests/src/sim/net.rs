//! A seeded network of stream connections between the simulated peers and the hub.
//!
//! # What is modelled, and why this way
//!
//! Every connection of the real system is TCP with TLS above it. An application never sees a
//! lost, duplicated or reordered TCP segment: it sees a byte stream that arrives in order,
//! exactly once, sometimes late. The emulator therefore keeps TCP's guarantees and shows each
//! network fault the way TCP shows it to the application:
//!
//! - **Order and exactly-once.** Each direction of each connection is a FIFO pipe: bytes of
//!   one direction arrive in the order sent, once. Deliveries of different connections (and of
//!   the two directions of one connection) interleave freely.
//! - **Latency and jitter** delay a segment; a segment never overtakes the one before it in
//!   its pipe, so jitter cannot reorder a stream.
//! - **Loss** becomes a retransmission: the segment arrives one RTO later (the RTO doubles
//!   when the retransmission is lost too), and everything behind it in its pipe waits for it:
//!   head-of-line blocking.
//! - **Reordering** of segments is absorbed by the receiver's TCP, which holds the later
//!   segment until the gap is filled: the application sees the overtaken segment late (up to
//!   `reorder_gap`) and the ones behind it blocked. So it is extra delay only.
//! - **Duplication** is absorbed entirely (the receiver drops the copy): it is counted in the
//!   statistics and changes nothing the application sees. It is a knob anyway so that a
//!   scenario can state it ran under duplication, honestly, with no effect.
//! - **Partitions** stop delivery in both directions of every connection of a node until
//!   healed (TCP keeps retransmitting meanwhile). Nothing is lost: after the heal the held
//!   bytes flow, after a fresh one-way delay. Only the machines' own timers (ping, hello,
//!   request timeouts) notice a partition, as on a real network. A connection attempt from a
//!   partitioned node does not get through either; the peer gives up after its connect timeout.
//! - **Connection setup** takes the real round trips: SYN, SYN-ACK, then the TLS 1.3 handshake.
//!   The peer's side is up when the server's handshake flight arrives ([`Payload::Established`],
//!   three one-way delays after the SYN); the hub accepts the connection when the client's
//!   Finished arrives ([`Payload::Accept`], one more one-way delay), always before the peer's
//!   first bytes. A SYN that finds no hub is answered with a reset ("connection refused").
//! - **Segmentation.** Writes are cut into segments of at most `mss` bytes and, at random, at
//!   arbitrary points, so the frame decoders see every kind of split; consecutive segments of
//!   one pipe that are due at the same instant are coalesced into one read, so decoders also
//!   see several frames at once.
//! - **Closing.** A FIN travels behind the bytes sent before it. A reset (the hub process
//!   died) travels behind the bytes already in flight and drops what was on its way to the
//!   dead side.
//!
//! Everything random comes from one ChaCha RNG seeded by the world, so a run replays exactly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchboard_core::hub::ConnId;

use super::NodeId;

/// Behaviour of the links of a node (or of every node by default).
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// One-way latency.
    pub latency: Duration,
    /// Up to this much extra delay per segment, uniformly (order is kept).
    pub jitter: Duration,
    /// Probability that a segment (or its retransmission) is lost.
    pub loss: f64,
    /// Retransmission timeout of a lost segment (doubled per further loss).
    pub rto: Duration,
    /// Probability that a segment is duplicated (absorbed by TCP: no visible effect).
    pub duplicate: f64,
    /// Probability that a segment is overtaken by later ones (shows as delay, see module docs).
    pub reorder: f64,
    /// At most this much extra delay for an overtaken segment.
    pub reorder_gap: Duration,
    /// Largest segment.
    pub mss: usize,
    /// Probability of cutting a segment at a random point once more.
    pub split: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(5),
            loss: 0.0,
            rto: Duration::from_millis(200),
            duplicate: 0.0,
            reorder: 0.0,
            reorder_gap: Duration::from_millis(20),
            mss: 1448,
            split: 0.3,
        }
    }
}

impl NetConfig {
    /// The default links with segment loss `loss` (0.0..=1.0).
    pub fn with_loss(loss: f64) -> Self {
        NetConfig {
            loss,
            ..NetConfig::default()
        }
    }

    /// A bad network: loss, duplication, reordering and wide jitter.
    pub fn hostile(loss: f64) -> Self {
        NetConfig {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(30),
            loss,
            duplicate: 0.05,
            reorder: 0.05,
            reorder_gap: Duration::from_millis(50),
            ..NetConfig::default()
        }
    }
}

/// A direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dir {
    /// From the peer to the hub.
    ToHub,
    /// From the hub to the peer.
    ToPeer,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::ToHub => 0,
            Dir::ToPeer => 1,
        }
    }
}

/// What arrives at one end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// (to the hub) A SYN: a live hub answers with the handshake, a dead one with a reset.
    Syn,
    /// (to the peer) The TCP and TLS handshakes completed on the peer's side.
    Established,
    /// (to the hub) The handshake completed on the hub's side: accept the connection.
    Accept,
    /// Stream bytes.
    Bytes(Vec<u8>),
    /// The other side closed after the bytes before.
    Fin,
    /// The connection was reset (or refused, if it was never established).
    Reset,
}

/// One delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Connection.
    pub conn: ConnId,
    /// Direction.
    pub dir: Dir,
    /// What arrives.
    pub payload: Payload,
}

/// What the network did, summed over the run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetStats {
    /// Segments sent (handshake and close segments included).
    pub segments: u64,
    /// Stream bytes sent.
    pub bytes: u64,
    /// Retransmissions after a loss.
    pub retransmissions: u64,
    /// Segments duplicated (and absorbed).
    pub duplicates: u64,
    /// Segments overtaken by later ones.
    pub reordered: u64,
    /// Reads that coalesced several segments.
    pub coalesced: u64,
}

#[derive(Debug)]
struct Pipe {
    queue: VecDeque<(Instant, Payload)>,
    tail: Instant,
    closed: bool,
}

#[derive(Debug)]
struct Link {
    node: NodeId,
    pipes: [Pipe; 2],
}

/// The network: FIFO pipes per connection direction, an index of their heads by due time,
/// partitions and frozen receivers.
#[derive(Debug)]
pub struct Network {
    default: NetConfig,
    per_node: BTreeMap<NodeId, NetConfig>,
    rng: ChaCha8Rng,
    links: BTreeMap<ConnId, Link>,
    /// `(due, conn, dir)` of the head of every non-empty pipe that may deliver.
    ready: BTreeSet<(Instant, ConnId, Dir)>,
    partitioned: BTreeSet<NodeId>,
    frozen: BTreeSet<NodeId>,
    /// Counters.
    pub stats: NetStats,
}

impl Network {
    /// A network whose links behave as `cfg`, seeded.
    pub fn new(cfg: NetConfig, seed: u64) -> Network {
        Network {
            default: cfg,
            per_node: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            links: BTreeMap::new(),
            ready: BTreeSet::new(),
            partitioned: BTreeSet::new(),
            frozen: BTreeSet::new(),
            stats: NetStats::default(),
        }
    }

    /// Changes the default behaviour (segments sent from now on).
    pub fn set_config(&mut self, cfg: NetConfig) {
        self.default = cfg;
    }

    /// Gives the links of `node` their own behaviour (`None`: the default again).
    pub fn set_node_config(&mut self, node: NodeId, cfg: Option<NetConfig>) {
        match cfg {
            Some(c) => self.per_node.insert(node, c),
            None => self.per_node.remove(&node),
        };
    }

    /// Whether `node` is cut off.
    pub fn is_partitioned(&self, node: NodeId) -> bool {
        self.partitioned.contains(&node)
    }

    fn blocked(&self, node: NodeId, dir: Dir) -> bool {
        self.partitioned.contains(&node) || (dir == Dir::ToPeer && self.frozen.contains(&node))
    }

    /// One segment's trip: latency, jitter, retransmissions, reordering.
    fn one_way(&mut self, node: NodeId) -> Duration {
        let cfg = self.per_node.get(&node).unwrap_or(&self.default).clone();
        let mut d = cfg.latency;
        if !cfg.jitter.is_zero() {
            d += Duration::from_micros(self.rng.gen_range(0..=cfg.jitter.as_micros() as u64));
        }
        let mut rto = cfg.rto;
        let mut tries = 0;
        while tries < 8 && cfg.loss > 0.0 && self.rng.gen_bool(cfg.loss.min(1.0)) {
            d += rto;
            rto *= 2;
            tries += 1;
            self.stats.retransmissions += 1;
        }
        if cfg.duplicate > 0.0 && self.rng.gen_bool(cfg.duplicate.min(1.0)) {
            self.stats.duplicates += 1;
        }
        if cfg.reorder > 0.0 && self.rng.gen_bool(cfg.reorder.min(1.0)) {
            let gap = cfg.reorder_gap.as_micros() as u64;
            d += Duration::from_micros(self.rng.gen_range(0..=gap));
            self.stats.reordered += 1;
        }
        self.stats.segments += 1;
        d
    }

    /// Queues `payload` sent at `from`; returns when it will arrive (if it will).
    fn push(&mut self, from: Instant, conn: ConnId, dir: Dir, payload: Payload) -> Option<Instant> {
        let node = self.links.get(&conn)?.node;
        if self.links.get(&conn)?.pipes[dir.index()].closed {
            return None;
        }
        let d = self.one_way(node);
        let blocked = self.blocked(node, dir);
        let link = self.links.get_mut(&conn)?;
        let pipe = &mut link.pipes[dir.index()];
        let at = (from + d).max(pipe.tail);
        pipe.tail = at;
        if matches!(payload, Payload::Fin | Payload::Reset) {
            pipe.closed = true;
        }
        if pipe.queue.is_empty() && !blocked {
            self.ready.insert((at, conn, dir));
        }
        pipe.queue.push_back((at, payload));
        Some(at)
    }

    /// Removes the head index entry of a pipe (before its queue changes).
    fn unready(&mut self, conn: ConnId, dir: Dir) {
        if let Some(link) = self.links.get(&conn)
            && let Some((at, _)) = link.pipes[dir.index()].queue.front()
        {
            self.ready.remove(&(*at, conn, dir));
        }
    }

    /// Indexes the head of a pipe, no earlier than `not_before`, unless the pipe is blocked.
    fn reready(&mut self, conn: ConnId, dir: Dir, not_before: Instant) {
        let Some(node) = self.links.get(&conn).map(|l| l.node) else {
            return;
        };
        if self.blocked(node, dir) {
            return;
        }
        if let Some(link) = self.links.get_mut(&conn)
            && let Some(head) = link.pipes[dir.index()].queue.front_mut()
        {
            head.0 = head.0.max(not_before);
            let at = head.0;
            self.ready.insert((at, conn, dir));
        }
    }

    /// A peer of `node` opens `conn`: its SYN leaves now.
    pub(crate) fn open(&mut self, now: Instant, conn: ConnId, node: NodeId) {
        let pipe = || Pipe {
            queue: VecDeque::new(),
            tail: now,
            closed: false,
        };
        self.links.insert(
            conn,
            Link {
                node,
                pipes: [pipe(), pipe()],
            },
        );
        self.push(now, conn, Dir::ToHub, Payload::Syn);
    }

    /// The SYN reached a listening hub at `now`: the handshakes run (see the module docs).
    pub(crate) fn accept_syn(&mut self, now: Instant, conn: ConnId) {
        let Some(node) = self.links.get(&conn).map(|l| l.node) else {
            return;
        };
        // SYN-ACK to the peer, then the peer's ACK + TLS ClientHello back to the hub.
        let server_flight = now + self.one_way(node) + self.one_way(node);
        if let Some(est) = self.push(server_flight, conn, Dir::ToPeer, Payload::Established) {
            self.push(est, conn, Dir::ToHub, Payload::Accept);
        }
    }

    /// The SYN found no hub: the peer gets a reset.
    pub(crate) fn refuse(&mut self, now: Instant, conn: ConnId) {
        self.drop_dir(conn, Dir::ToHub);
        self.push(now, conn, Dir::ToPeer, Payload::Reset);
    }

    /// The hub process died: what was on its way to the hub is gone, the peer gets a reset
    /// behind the bytes already in flight to it.
    pub(crate) fn hub_reset(&mut self, now: Instant, conn: ConnId) {
        self.drop_dir(conn, Dir::ToHub);
        self.push(now, conn, Dir::ToPeer, Payload::Reset);
    }

    /// The peer process died: its kernel sends a FIN behind what it had sent; nobody reads
    /// what comes to it any more.
    pub(crate) fn peer_gone(&mut self, now: Instant, conn: ConnId) {
        self.drop_dir(conn, Dir::ToPeer);
        self.push(now, conn, Dir::ToHub, Payload::Fin);
    }

    /// The peer's machine lost power: nobody reads what comes to it, and nothing (not even a
    /// FIN) leaves it any more. The hub learns of it only from its own timers.
    pub(crate) fn peer_vanished(&mut self, conn: ConnId) {
        self.drop_dir(conn, Dir::ToPeer);
        self.drop_dir(conn, Dir::ToHub);
    }

    fn drop_dir(&mut self, conn: ConnId, dir: Dir) {
        self.unready(conn, dir);
        if let Some(link) = self.links.get_mut(&conn) {
            let pipe = &mut link.pipes[dir.index()];
            pipe.queue.clear();
            pipe.closed = true;
        }
    }

    /// Writes `bytes` on `conn` in direction `dir` (dropped if that side closed).
    pub(crate) fn send(&mut self, now: Instant, conn: ConnId, dir: Dir, bytes: &[u8]) {
        let Some(node) = self.links.get(&conn).map(|l| l.node) else {
            return;
        };
        let cfg = self.per_node.get(&node).unwrap_or(&self.default).clone();
        self.stats.bytes += bytes.len() as u64;
        let mut rest = bytes;
        while !rest.is_empty() {
            let mut n = rest.len().min(cfg.mss.max(1));
            if n > 1 && cfg.split > 0.0 && self.rng.gen_bool(cfg.split.min(1.0)) {
                n = self.rng.gen_range(1..n);
            }
            let (a, b) = rest.split_at(n);
            self.push(now, conn, dir, Payload::Bytes(a.to_vec()));
            rest = b;
        }
    }

    /// Closes direction `dir` of `conn` after the bytes sent before.
    pub(crate) fn fin(&mut self, now: Instant, conn: ConnId, dir: Dir) {
        self.push(now, conn, dir, Payload::Fin);
    }

    fn conns_of(&self, node: NodeId) -> Vec<ConnId> {
        self.links
            .iter()
            .filter(|(_, l)| l.node == node)
            .map(|(c, _)| *c)
            .collect()
    }

    /// Cuts `node` off: nothing of its connections moves, either way, until [`heal`](Self::heal).
    pub(crate) fn partition(&mut self, node: NodeId) {
        for conn in self.conns_of(node) {
            self.unready(conn, Dir::ToHub);
            self.unready(conn, Dir::ToPeer);
        }
        self.partitioned.insert(node);
    }

    /// Ends the partition of `node`: held segments are retransmitted and arrive after a fresh
    /// one-way delay, in order.
    pub(crate) fn heal(&mut self, now: Instant, node: NodeId) {
        if !self.partitioned.remove(&node) {
            return;
        }
        for conn in self.conns_of(node) {
            for dir in [Dir::ToHub, Dir::ToPeer] {
                let d = self.one_way(node);
                self.reready(conn, dir, now + d);
            }
        }
    }

    /// The peer process of `node` stops reading (SIGSTOP): bytes to it wait in its socket
    /// buffer (its kernel still acknowledges them).
    pub(crate) fn freeze(&mut self, node: NodeId) {
        for conn in self.conns_of(node) {
            self.unready(conn, Dir::ToPeer);
        }
        self.frozen.insert(node);
    }

    /// The peer process of `node` reads again: what waited is there at once.
    pub(crate) fn thaw(&mut self, now: Instant, node: NodeId) {
        if !self.frozen.remove(&node) {
            return;
        }
        for conn in self.conns_of(node) {
            self.reready(conn, Dir::ToPeer, now);
        }
    }

    /// When the next delivery is due.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.ready.first().map(|(t, _, _)| *t)
    }

    /// The next delivery due at `now`, if any. Stream bytes of one pipe that are due together
    /// come as one read.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Delivery> {
        let &(at, conn, dir) = self.ready.first()?;
        if at > now {
            return None;
        }
        self.ready.pop_first();
        let pipe = &mut self.links.get_mut(&conn)?.pipes[dir.index()];
        let (_, mut payload) = pipe.queue.pop_front()?;
        if let Payload::Bytes(b) = &mut payload {
            while let Some((t, Payload::Bytes(_))) = pipe.queue.front()
                && *t <= now
            {
                if let Some((_, Payload::Bytes(more))) = pipe.queue.pop_front() {
                    b.extend_from_slice(&more);
                    self.stats.coalesced += 1;
                }
            }
        }
        if let Some((t, _)) = pipe.queue.front() {
            // The pipe is not blocked: it was in `ready`.
            self.ready.insert((*t, conn, dir));
        }
        Some(Delivery { conn, dir, payload })
    }
}

#[cfg(test)]
#[path = "net_tests.rs"]
mod tests;
