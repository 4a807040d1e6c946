//! Streams in the simulator: the real [`StreamEndpoint`] on both ends, beside the agent's
//! real `AgentLink` (a source) and the operator's real `ClientSession` (a sink).
//!
//! The simulated agent's sources (its stream kinds):
//!
//! - `sim.frames` (latest): a frame every `period_ms` (default 20) of `bytes` bytes (default
//!   1,000), every `key_every`-th (default 10) a key frame, and the next one after a resync
//!   request. A frame's first 8 bytes are its number (big-endian, from 1): a sink can tell
//!   which frames it missed.
//! - `sim.bytes` (lossless): `total` bytes (default 1 MiB) of a known pattern ([`pattern`]),
//!   sent as fast as the sink's credit allows, in chunks of at most `chunk` (default 16,384).
//!
//! A sink consumes what arrives at once (credit goes straight back), or, once told to stop
//! reading, keeps it unconsumed (its credit runs out) until told to read again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_core::link::AgentLink;
use switchboard_core::machine::Action;
use switchboard_core::session::ClientSession;
use switchboard_core::stream::{
    Class, EndCode, OpenRequest, SendOutcome, Side, StreamEndpoint, StreamEvent, StreamLimits,
    is_stream_message,
};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

/// Byte `i` of a `sim.bytes` stream.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(7).wrapping_add(i >> 8) % 251) as u8
}

/// A running source on the simulated agent.
#[derive(Debug)]
enum Source {
    Frames {
        period: Duration,
        next: Instant,
        bytes: usize,
        key_every: u64,
        seq: u64,
        resync: bool,
    },
    Bytes {
        total: u64,
        sent: u64,
        chunk: usize,
    },
}

/// What the agent's sources did, per stream.
#[derive(Debug, Default, Clone)]
pub struct SourceStats {
    /// Kind.
    pub kind: String,
    /// Frames (or chunks) sent.
    pub sent: u64,
    /// Frames the endpoint dropped for want of credit (latest).
    pub dropped: u64,
    /// Resync requests.
    pub resyncs: Vec<Instant>,
    /// `sim.frames`: when frame n (from 1) was produced, at index n - 1.
    pub sent_at: Vec<Instant>,
    /// How the stream ended.
    pub closed: Option<(Instant, EndCode, String)>,
}

/// The agent's side: an endpoint per connection and its sources.
#[derive(Debug)]
pub struct SimSources {
    ep: StreamEndpoint,
    running: BTreeMap<u64, Source>,
    /// Per stream id (ids restart with a connection: the generation keys them apart).
    pub stats: BTreeMap<(u32, u64), SourceStats>,
    generation: u32,
}

impl Default for SimSources {
    fn default() -> Self {
        SimSources {
            ep: StreamEndpoint::new(Side::Client, StreamLimits::default()),
            running: BTreeMap::new(),
            stats: BTreeMap::new(),
            generation: 0,
        }
    }
}

fn param<T: std::str::FromStr>(open: &pb::StreamOpen, name: &str, default: T) -> T {
    open.params
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl SimSources {
    /// Streams running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Stats of the streams of the current connection.
    pub fn current(&self) -> impl Iterator<Item = &SourceStats> {
        self.stats
            .iter()
            .filter(|((g, _), _)| *g == self.generation)
            .map(|(_, s)| s)
    }

    /// A new connection: a fresh endpoint.
    pub(crate) fn reset(&mut self) {
        self.ep = StreamEndpoint::new(Side::Client, StreamLimits::default());
        self.running.clear();
        self.generation += 1;
    }

    pub(crate) fn on_message(&mut self, now: Instant, body: Body) {
        let _ = self.ep.handle_message(now, body);
    }

    /// The connection ended: every stream ends (what was to be sent is gone with it).
    pub(crate) fn transport_closed(&mut self, now: Instant, why: &str) {
        self.ep.handle_transport_closed(why);
        while let Some(a) = self.ep.poll_action() {
            if let Action::Event(e) = a {
                self.on_event(now, e);
            }
        }
        self.running.clear();
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.running
            .values()
            .filter_map(|s| match s {
                Source::Frames { next, .. } => Some(*next),
                Source::Bytes { .. } => None,
            })
            .min()
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<u64> = self.running.keys().copied().collect();
        for id in ids {
            self.produce(now, id);
        }
    }

    /// Performs the endpoint's actions: frames through the link, events to the sources
    /// (which may send more). Returns whether anything happened.
    pub(crate) fn flush(&mut self, now: Instant, link: &mut AgentLink) -> bool {
        let mut any = false;
        while let Some(a) = self.ep.poll_action() {
            any = true;
            match a {
                Action::Send(f) => {
                    let _ = link.send_frame(f);
                }
                Action::Event(e) => self.on_event(now, e),
                Action::Close(_) | Action::Timer(_) => {}
            }
        }
        any
    }

    fn stat(&mut self, id: u64) -> &mut SourceStats {
        self.stats.entry((self.generation, id)).or_default()
    }

    fn on_event(&mut self, now: Instant, e: StreamEvent) {
        match e {
            StreamEvent::Incoming { id, open } => {
                let src = match open.kind.as_str() {
                    "sim.frames" if open.class == Class::Latest as i32 => Source::Frames {
                        period: Duration::from_millis(param(&open, "period_ms", 20)),
                        next: now,
                        bytes: param(&open, "bytes", 1000usize).max(8),
                        key_every: param(&open, "key_every", 10u64).max(1),
                        seq: 0,
                        resync: true,
                    },
                    "sim.bytes" if open.class == Class::Lossless as i32 => Source::Bytes {
                        total: param(&open, "total", 1u64 << 20),
                        sent: 0,
                        chunk: param(&open, "chunk", 16_384usize).max(1),
                    },
                    other => {
                        let _ = self.ep.reject(
                            id,
                            EndCode::Unsupported,
                            &format!("no source {other:?} of that class"),
                        );
                        return;
                    }
                };
                self.stat(id).kind = open.kind.clone();
                self.running.insert(id, src);
                let _ = self.ep.accept(id, 0);
                self.produce(now, id);
            }
            StreamEvent::Writable { id } => self.produce(now, id),
            StreamEvent::ResyncRequested { id } => {
                self.stat(id).resyncs.push(now);
                if let Some(Source::Frames { resync, .. }) = self.running.get_mut(&id) {
                    *resync = true;
                }
            }
            StreamEvent::Data { id, payload, .. } => {
                let _ = self.ep.consume(id, payload.len());
            }
            StreamEvent::Closed { id, code, reason } => {
                self.running.remove(&id);
                self.stat(id).closed = Some((now, code, reason));
            }
            StreamEvent::Accepted { .. } | StreamEvent::Rejected { .. } => {}
        }
    }

    fn produce(&mut self, now: Instant, id: u64) {
        let Some(src) = self.running.get_mut(&id) else {
            return;
        };
        let (mut sent, mut dropped) = (0, 0);
        let mut produced = vec![];
        match src {
            Source::Frames {
                period,
                next,
                bytes,
                key_every,
                seq,
                resync,
            } => {
                while *next <= now {
                    *next += *period;
                    *seq += 1;
                    let key = *resync || (*seq - 1).is_multiple_of(*key_every);
                    let mut b = vec![0u8; *bytes];
                    b[..8].copy_from_slice(&seq.to_be_bytes());
                    produced.push(now);
                    match self.ep.send_data(id, 0, key, Bytes::from(b)) {
                        Ok(SendOutcome::Sent) => {
                            sent += 1;
                            *resync = false;
                        }
                        Ok(_) => dropped += 1,
                        Err(_) => break,
                    }
                }
            }
            Source::Bytes {
                total,
                sent: done,
                chunk,
            } => {
                while *done < *total {
                    let room = self.ep.send_capacity(id);
                    let n = (*chunk as u64).min(*total - *done).min(room as u64) as usize;
                    if n == 0 {
                        // Blocked: this makes the endpoint say Writable when credit comes.
                        let _ = self.ep.send_data(id, 0, false, Bytes::from_static(&[0]));
                        break;
                    }
                    let b: Vec<u8> = (*done..*done + n as u64).map(pattern).collect();
                    if self.ep.send_data(id, 0, false, Bytes::from(b)).is_err() {
                        break;
                    }
                    *done += n as u64;
                    sent += 1;
                }
            }
        }
        let st = self.stat(id);
        st.sent += sent;
        st.dropped += dropped;
        st.sent_at.extend(produced);
    }
}

/// A frame (or chunk) a sink received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When.
    pub at: Instant,
    /// The hub's sequence number.
    pub sequence: u64,
    /// A key frame.
    pub key_frame: bool,
    /// The payload.
    pub payload: Bytes,
}

/// One stream of a sink.
#[derive(Debug, Default)]
pub struct SinkStream {
    /// Accepted (and whether it joined a running source).
    pub accepted: Option<bool>,
    /// Refused or closed: the code and reason.
    pub ended: Option<(Instant, EndCode, String)>,
    /// What arrived, in order.
    pub data: Vec<Received>,
    /// Bytes received and not consumed yet (while not reading).
    pub unconsumed: usize,
    /// Whether it consumes at once.
    pub reading: bool,
}

impl SinkStream {
    /// The source's frame numbers (`sim.frames`: the first 8 bytes of each frame).
    pub fn frame_numbers(&self) -> Vec<u64> {
        self.data
            .iter()
            .filter(|r| r.payload.len() >= 8)
            .map(|r| u64::from_be_bytes(r.payload[..8].try_into().unwrap_or_default()))
            .collect()
    }

    /// Every byte received, in order (`sim.bytes`).
    pub fn bytes(&self) -> Vec<u8> {
        self.data
            .iter()
            .flat_map(|r| r.payload.iter().copied())
            .collect()
    }
}

/// The operator's side: one endpoint for its session.
#[derive(Debug)]
pub struct SimSinks {
    ep: StreamEndpoint,
    /// Its streams, by id.
    pub streams: BTreeMap<u64, SinkStream>,
}

impl Default for SimSinks {
    fn default() -> Self {
        SimSinks {
            ep: StreamEndpoint::new(Side::Client, StreamLimits::default()),
            streams: BTreeMap::new(),
        }
    }
}

impl SimSinks {
    /// Opens a stream (sent at the next flush).
    pub fn open(&mut self, req: OpenRequest) -> u64 {
        let id = self.ep.open(req).expect("open a stream");
        self.streams.insert(
            id,
            SinkStream {
                reading: true,
                ..SinkStream::default()
            },
        );
        id
    }

    /// Closes a stream (NORMAL).
    pub fn close(&mut self, id: u64) {
        let _ = self.ep.close(id, EndCode::Normal, "the sink is done");
    }

    /// Stops or resumes consuming stream `id` (resuming consumes what waited).
    pub fn set_reading(&mut self, id: u64, reading: bool) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.reading = reading;
        if reading && s.unconsumed > 0 {
            let n = std::mem::take(&mut s.unconsumed);
            let _ = self.ep.consume(id, n);
        }
    }

    pub(crate) fn handles(body: &Body) -> bool {
        is_stream_message(body)
    }

    pub(crate) fn on_message(&mut self, now: Instant, body: Body) {
        let _ = self.ep.handle_message(now, body);
    }

    /// Performs the endpoint's actions: frames through the session.
    pub(crate) fn flush(&mut self, now: Instant, session: &mut ClientSession) -> bool {
        let mut any = false;
        while let Some(a) = self.ep.poll_action() {
            any = true;
            match a {
                Action::Send(f) => {
                    let _ = session.send_frame(f);
                }
                Action::Event(e) => self.on_event(now, e),
                Action::Close(_) | Action::Timer(_) => {}
            }
        }
        any
    }

    /// The session is gone: its streams end (the endpoint says why).
    pub(crate) fn ended(&mut self, now: Instant, why: &str) {
        self.ep.handle_transport_closed(why);
        while let Some(a) = self.ep.poll_action() {
            if let Action::Event(e) = a {
                self.on_event(now, e);
            }
        }
    }

    fn on_event(&mut self, now: Instant, e: StreamEvent) {
        match e {
            StreamEvent::Accepted { id, multicast } => {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.accepted = Some(multicast);
                }
            }
            StreamEvent::Rejected { id, code, reason }
            | StreamEvent::Closed { id, code, reason } => {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.ended.get_or_insert((now, code, reason));
                }
            }
            StreamEvent::Data {
                id,
                sequence,
                key_frame,
                payload,
                ..
            } => {
                let Some(s) = self.streams.get_mut(&id) else {
                    return;
                };
                let n = payload.len();
                s.data.push(Received {
                    at: now,
                    sequence,
                    key_frame,
                    payload,
                });
                if s.reading {
                    let _ = self.ep.consume(id, n);
                } else {
                    s.unconsumed += n;
                }
            }
            StreamEvent::Incoming { id, .. } => {
                let _ = self
                    .ep
                    .reject(id, EndCode::Unsupported, "an operator is no source");
            }
            StreamEvent::Writable { .. } | StreamEvent::ResyncRequested { .. } => {}
        }
    }
}

impl super::World {
    /// Registers agent `id`, spawns it with stream sources and runs until it is connected
    /// (at most 60 s).
    pub fn stream_agent(&mut self, id: &str) -> super::NodeId {
        let secret = format!("secret-{id}");
        self.register_agent(id, &secret, &[]);
        let a = self.spawn_agent(id, &secret, Some(id));
        self.agent_mut(a).sources = Some(SimSources::default());
        let up = self.run_until_cond(Duration::from_secs(60), |w| {
            w.agent(a).is_connected() && w.hub_connected().contains(id)
        });
        assert!(up, "agent {id} did not connect within 60 s");
        a
    }

    /// The stream sources of agent `node`.
    pub fn sources(&self, node: super::NodeId) -> &SimSources {
        self.agent(node)
            .sources
            .as_ref()
            .expect("an agent with stream sources")
    }

    fn with_sinks<T>(&mut self, op: super::NodeId, f: impl FnOnce(&mut SimSinks) -> T) -> T {
        let now = self.now();
        let super::Node::Operator(o) = &mut self.nodes[op] else {
            panic!("node {op} is not an operator");
        };
        let r = f(&mut o.sinks);
        let mut out = vec![];
        o.pump(now, &mut out);
        self.node_outs(op, out);
        r
    }

    /// Operator `op` opens a stream; returns its id.
    pub fn open_stream(&mut self, op: super::NodeId, req: OpenRequest) -> u64 {
        self.record(&format!("operator {op} opens stream {}", req.kind));
        self.with_sinks(op, |s| s.open(req))
    }

    /// Operator `op` closes stream `id` (NORMAL).
    pub fn close_stream(&mut self, op: super::NodeId, id: u64) {
        self.record(&format!("operator {op} closes stream {id}"));
        self.with_sinks(op, |s| s.close(id));
    }

    /// Operator `op` stops or resumes reading stream `id`.
    pub fn set_reading(&mut self, op: super::NodeId, id: u64, reading: bool) {
        self.record(&format!("operator {op} reading {id}: {reading}"));
        self.with_sinks(op, |s| s.set_reading(id, reading));
    }

    /// Stream `id` of operator `op`.
    pub fn sink(&self, op: super::NodeId, id: u64) -> &SinkStream {
        self.operator(op)
            .sinks
            .streams
            .get(&id)
            .expect("a stream the operator opened")
    }
}
