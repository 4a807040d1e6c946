//! A seeded network of stream connections.
//!
//! Every connection between a peer and the hub is TCP (with TLS above it) in the real system,
//! so the emulator keeps TCP's guarantees and shows the network's faults the way TCP shows
//! them to the application:
//!
//! - bytes of one direction of one connection arrive in order and exactly once;
//! - latency and jitter delay them (never reordering within a direction: a segment cannot
//!   overtake the one before it);
//! - a lost segment is retransmitted after an RTO, so loss shows as extra delay, and the
//!   segments behind it wait (head-of-line blocking);
//! - duplicated or reordered segments are absorbed by TCP: they show as delay only;
//! - a partition holds every byte in both directions until healed (TCP keeps retransmitting);
//!   the machines' own ping timeouts notice it, as they would on a real network;
//! - bytes are delivered split at random points, so decoders see arbitrary splits.
//!
//! A close travels like data (a FIN behind the bytes sent before it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchboard_core::hub::ConnId;

use super::world::NodeId;

/// Network behaviour.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// One-way latency.
    pub latency: Duration,
    /// Up to this much extra delay per segment (order kept).
    pub jitter: Duration,
    /// Probability that a segment is lost once (and retransmitted after `rto`).
    pub loss: f64,
    /// Retransmission timeout.
    pub rto: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(5),
            loss: 0.0,
            rto: Duration::from_millis(200),
        }
    }
}

/// What a delivery carries.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Bytes.
    Bytes(Vec<u8>),
    /// The sender closed.
    Closed,
}

/// One delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Connection.
    pub conn: ConnId,
    /// Towards the hub (else towards the peer).
    pub to_hub: bool,
    /// What.
    pub payload: Payload,
}

#[derive(Debug)]
struct Link {
    node: NodeId,
    tail: [Instant; 2],
    closed: [bool; 2],
}

/// The network.
#[derive(Debug)]
pub struct Network {
    cfg: NetConfig,
    rng: ChaCha8Rng,
    links: BTreeMap<ConnId, Link>,
    queue: BTreeMap<(Instant, u64), Delivery>,
    held: Vec<Delivery>,
    partitioned: BTreeSet<NodeId>,
    seq: u64,
}

impl Network {
    /// A network with `cfg`, seeded.
    pub fn new(cfg: NetConfig, seed: u64) -> Network {
        Network {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            links: BTreeMap::new(),
            queue: BTreeMap::new(),
            held: vec![],
            partitioned: BTreeSet::new(),
            seq: 0,
        }
    }

    /// Changes the behaviour from now on.
    pub fn set_config(&mut self, cfg: NetConfig) {
        self.cfg = cfg;
    }

    pub(crate) fn open(&mut self, now: Instant, conn: ConnId, node: NodeId) {
        self.links.insert(
            conn,
            Link {
                node,
                tail: [now; 2],
                closed: [false; 2],
            },
        );
    }

    pub(crate) fn forget(&mut self, conn: ConnId) {
        self.links.remove(&conn);
        self.queue.retain(|_, d| d.conn != conn);
        self.held.retain(|d| d.conn != conn);
    }

    fn delay(&mut self) -> Duration {
        let mut d = self.cfg.latency;
        if !self.cfg.jitter.is_zero() {
            d += Duration::from_micros(self.rng.gen_range(0..=self.cfg.jitter.as_micros() as u64));
        }
        if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss.min(1.0)) {
            d += self.cfg.rto;
        }
        d
    }

    fn push(&mut self, now: Instant, conn: ConnId, to_hub: bool, payload: Payload) {
        let delay = self.delay();
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        let dir = usize::from(to_hub);
        if link.closed[dir] {
            return;
        }
        let at = (now + delay).max(link.tail[dir]);
        link.tail[dir] = at;
        if matches!(payload, Payload::Closed) {
            link.closed[dir] = true;
        }
        self.seq += 1;
        self.queue.insert(
            (at, self.seq),
            Delivery {
                conn,
                to_hub,
                payload,
            },
        );
    }

    /// Sends bytes, split at random points.
    pub(crate) fn send(&mut self, now: Instant, conn: ConnId, to_hub: bool, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = if rest.len() > 1 && self.rng.gen_bool(0.3) {
                self.rng.gen_range(1..rest.len())
            } else {
                rest.len()
            };
            let (a, b) = rest.split_at(n);
            self.push(now, conn, to_hub, Payload::Bytes(a.to_vec()));
            rest = b;
        }
    }

    /// Closes one direction after the bytes sent before.
    pub(crate) fn close(&mut self, now: Instant, conn: ConnId, to_hub: bool) {
        self.push(now, conn, to_hub, Payload::Closed);
    }

    pub(crate) fn partition(&mut self, node: NodeId) {
        self.partitioned.insert(node);
    }

    pub(crate) fn heal(&mut self, now: Instant, node: NodeId) {
        self.partitioned.remove(&node);
        let held = std::mem::take(&mut self.held);
        for d in held {
            let keep_held = self
                .links
                .get(&d.conn)
                .is_some_and(|l| self.partitioned.contains(&l.node));
            if keep_held {
                self.held.push(d);
                continue;
            }
            let delay = self.delay();
            self.seq += 1;
            let at = self.links.get(&d.conn).map_or(now + delay, |l| {
                (now + delay).max(l.tail[usize::from(d.to_hub)])
            });
            if let Some(l) = self.links.get_mut(&d.conn) {
                l.tail[usize::from(d.to_hub)] = at;
            }
            self.queue.insert((at, self.seq), d);
        }
    }

    /// The next delivery time.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(t, _)| *t)
    }

    /// The next delivery due at `now`, skipping (holding) those of partitioned peers.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Delivery> {
        loop {
            let (&key, _) = self.queue.iter().next()?;
            if key.0 > now {
                return None;
            }
            let d = self.queue.remove(&key)?;
            let Some(link) = self.links.get(&d.conn) else {
                continue;
            };
            if self.partitioned.contains(&link.node) {
                self.held.push(d);
                continue;
            }
            if matches!(d.payload, Payload::Closed) && !d.to_hub {
                // Both ways are done once the hub's FIN is delivered to the peer.
                self.links.remove(&d.conn);
            }
            return Some(d);
        }
    }
}
