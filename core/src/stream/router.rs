//! The hub's part of streams: sink legs joined to source legs, multicast groups, per-sink
//! queues of `latest` streams, credit of `lossless` streams passed end to end.
//!
//! The router decides nothing about who may open what: the hub authorises an open and finds
//! its source ([`SourceRef`]) before it calls [`Router::open`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use super::{Class, EndCode, StreamLimits, end_text, group_key, validate_open};
use crate::hub::ConnId;

mod latest;
mod source;

/// Where a stream's source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// A connection (an agent) that speaks streams: the router opens a leg on it.
    Conn {
        /// Its connection.
        conn: ConnId,
        /// Its instance id (agent id), the first part of a multicast key.
        instance: String,
    },
    /// The hub itself produces it ([`RouterOutput::HubSourceOpened`]).
    Hub,
}

/// What the router asks of the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum RouterOutput {
    /// Send this stream message on `conn`.
    Send {
        /// Connection.
        conn: ConnId,
        /// Message.
        body: Body,
    },
    /// A group whose source is the hub opened: answer with [`Router::hub_accept`] or
    /// [`Router::hub_reject`], then produce with [`Router::hub_data`].
    HubSourceOpened {
        /// Group.
        group: u64,
        /// The first sink's open.
        open: pb::StreamOpen,
    },
    /// A hub-sourced group wants a key frame now.
    HubSourceResync {
        /// Group.
        group: u64,
    },
    /// A hub-sourced group ended (its last sink left): stop producing.
    HubSourceClosed {
        /// Group.
        group: u64,
    },
}

type Leg = (ConnId, u64);

#[derive(Debug, Clone)]
struct Frame {
    sequence: u64,
    key_frame: bool,
    channel: u32,
    payload: Bytes,
}

#[derive(Debug)]
struct Sink {
    label: String,
    request_id: u64,
    accepted: bool,
    /// Payload bytes the sink lets the hub send.
    credit: u64,
    queue: VecDeque<Frame>,
    queued: usize,
    awaiting_key: bool,
    bytes: u64,
    frames: u64,
    dropped: u64,
    resyncs: u64,
}

#[derive(Debug)]
struct Group {
    source: Option<Leg>,
    instance: String,
    kind: String,
    /// Multicast key (latest groups only).
    key: Option<String>,
    class: Class,
    accepted: bool,
    sinks: BTreeMap<Leg, Sink>,
    cached_key: Option<Frame>,
    /// Latest: credit the hub granted the source and has not received. Lossless: unused
    /// (the sink's credit is the source's).
    source_credit: u64,
    source_unacked: u64,
    /// Lossless: what the source lets the sink send (keystrokes).
    reverse_credit: u64,
    last_resync: Option<Instant>,
    resync_pending: bool,
    stalled_since: Option<Instant>,
    bytes_in: u64,
    frames_in: u64,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Source(u64),
    Sink(u64),
}

/// The hub's stream router.
///
/// # Driving contract
///
/// - [`open`](Self::open) for an authorised `StreamOpen` of a sink, with its source;
///   [`handle_message`](Self::handle_message) for every other stream message of a
///   connection; [`conn_closed`](Self::conn_closed) when a connection ends.
/// - [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout)
///   (deferred resyncs, stalled lossless sinks); spurious calls are fine.
/// - Drain [`poll_output`](Self::poll_output) after every call.
#[derive(Debug, Default)]
pub struct Router {
    limits: StreamLimits,
    groups: BTreeMap<u64, Group>,
    legs: BTreeMap<Leg, Role>,
    by_key: BTreeMap<(String, String, String), u64>,
    per_conn: BTreeMap<ConnId, usize>,
    next_hub_id: BTreeMap<ConnId, u64>,
    next_group: u64,
    wake: BTreeSet<(Instant, u64)>,
    out: VecDeque<RouterOutput>,
    /// Frames dropped for slow sinks, over the router's life.
    dropped_total: u64,
    /// Payload bytes delivered to sinks, over the router's life.
    delivered_total: u64,
}

impl Router {
    /// A router with these limits.
    pub fn new(limits: StreamLimits) -> Self {
        Router {
            limits,
            next_group: 1,
            ..Router::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &StreamLimits {
        &self.limits
    }

    /// Number of groups (each has one source).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Number of sinks over all groups.
    pub fn sink_count(&self) -> usize {
        self.groups.values().map(|g| g.sinks.len()).sum()
    }

    /// Bytes queued in the hub for sinks, over all groups.
    pub fn queued_bytes(&self) -> usize {
        self.groups
            .values()
            .flat_map(|g| g.sinks.values())
            .map(|s| s.queued)
            .sum()
    }

    /// Frames dropped for slow sinks and payload bytes delivered, since start.
    pub fn totals(&self) -> (u64, u64) {
        (self.dropped_total, self.delivered_total)
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<RouterOutput> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake.first().map(|(t, _)| *t)
    }

    /// A sink on `conn` opens a stream (already authorised) from `source`.
    pub fn open(
        &mut self,
        now: Instant,
        conn: ConnId,
        label: &str,
        open: pb::StreamOpen,
        source: SourceRef,
    ) {
        let id = open.stream_id;
        let reject = |r: &mut Self, code: EndCode, reason: String| {
            r.send(
                conn,
                Body::StreamReject(pb::StreamReject {
                    request_id: open.request_id,
                    stream_id: id,
                    code: code as i32,
                    reason,
                }),
            );
        };
        if id == 0 || id & 1 == 1 {
            return reject(
                self,
                EndCode::Protocol,
                format!("stream id {id}: a client opens even ids above 0"),
            );
        }
        if self.legs.contains_key(&(conn, id)) {
            return reject(self, EndCode::Protocol, format!("stream id {id} is in use"));
        }
        if let Err(e) = validate_open(&open, &self.limits) {
            return reject(self, EndCode::Invalid, e);
        }
        if self.count(conn) >= self.limits.max_per_conn {
            return reject(
                self,
                EndCode::Limit,
                format!(
                    "at most {} streams per connection",
                    self.limits.max_per_conn
                ),
            );
        }
        let class = Class::try_from(open.class).unwrap_or(Class::Lossless);
        let credit = match open.initial_credit {
            0 => u64::from(self.limits.default_window),
            n => u64::from(n),
        };
        if class == Class::Latest && credit < u64::from(self.limits.min_latest_window) {
            return reject(
                self,
                EndCode::Invalid,
                format!(
                    "a latest stream needs initial_credit of at least {} bytes",
                    self.limits.min_latest_window
                ),
            );
        }
        let instance = match &source {
            SourceRef::Conn { instance, .. } => instance.clone(),
            SourceRef::Hub => String::new(),
        };
        let sink = Sink {
            label: label.to_owned(),
            request_id: open.request_id,
            accepted: false,
            credit,
            queue: VecDeque::new(),
            queued: 0,
            awaiting_key: false,
            bytes: 0,
            frames: 0,
            dropped: 0,
            resyncs: 0,
        };
        // A latest stream joins the group already running for the same key.
        let key = (class == Class::Latest).then(|| group_key(&open));
        if let Some(k) = &key
            && let Some(&gid) = self
                .by_key
                .get(&(instance.clone(), open.kind.clone(), k.clone()))
        {
            return self.join(now, gid, (conn, id), sink);
        }
        // A new group: open its source.
        let gid = self.next_group;
        self.next_group += 1;
        let source_leg = match &source {
            SourceRef::Conn { conn: sc, .. } => {
                if self.count(*sc) >= self.limits.max_per_conn {
                    return reject(
                        self,
                        EndCode::Limit,
                        "the source has too many streams open".into(),
                    );
                }
                let next = self.next_hub_id.entry(*sc).or_insert(1);
                let sid = *next;
                *next += 2;
                Some((*sc, sid))
            }
            SourceRef::Hub => None,
        };
        let mut group = Group {
            source: source_leg,
            instance: instance.clone(),
            kind: open.kind.clone(),
            key: key.clone(),
            class,
            accepted: false,
            sinks: BTreeMap::new(),
            cached_key: None,
            source_credit: 0,
            source_unacked: 0,
            reverse_credit: 0,
            last_resync: None,
            resync_pending: false,
            stalled_since: None,
            bytes_in: 0,
            frames_in: 0,
        };
        group.sinks.insert((conn, id), sink);
        self.add_leg((conn, id), Role::Sink(gid));
        if let Some(k) = key {
            self.by_key.insert((instance, open.kind.clone(), k), gid);
        }
        let initial_credit = match class {
            Class::Latest => self.limits.source_window,
            Class::Lossless => credit as u32,
        };
        match source_leg {
            Some((sc, sid)) => {
                self.add_leg((sc, sid), Role::Source(gid));
                let fwd = pb::StreamOpen {
                    request_id: 0,
                    stream_id: sid,
                    initial_credit,
                    opened_by: label.to_owned(),
                    ..open
                };
                if class == Class::Latest {
                    group.source_credit = u64::from(initial_credit);
                }
                self.groups.insert(gid, group);
                self.send(sc, Body::StreamOpen(Box::new(fwd)));
            }
            None => {
                self.groups.insert(gid, group);
                self.out.push_back(RouterOutput::HubSourceOpened {
                    group: gid,
                    open: pb::StreamOpen {
                        opened_by: label.to_owned(),
                        ..open
                    },
                });
            }
        }
    }

    /// A stream message (not an open of a sink) that arrived on `conn`.
    pub fn handle_message(&mut self, now: Instant, conn: ConnId, body: Body) {
        let id = match &body {
            Body::StreamAccept(m) => m.stream_id,
            Body::StreamReject(m) => m.stream_id,
            Body::StreamData(m) => m.stream_id,
            Body::StreamCredit(m) => m.stream_id,
            Body::StreamResync(m) => m.stream_id,
            Body::StreamClose(m) => m.stream_id,
            Body::StreamOpen(m) => {
                // The hub is never the source of a peer's leg except through `open`.
                return self.send(
                    conn,
                    Body::StreamReject(pb::StreamReject {
                        request_id: m.request_id,
                        stream_id: m.stream_id,
                        code: EndCode::Protocol as i32,
                        reason: "opens go through the hub's routing".into(),
                    }),
                );
            }
            _ => return,
        };
        // Unknown legs: late messages after a close are dropped.
        let Some(&role) = self.legs.get(&(conn, id)) else {
            return;
        };
        match role {
            Role::Source(g) => self.on_source_message(now, g, body),
            Role::Sink(g) => self.on_sink_message(now, g, (conn, id), body),
        }
    }

    /// `conn` ended: its sources' sinks close with `SOURCE_GONE`, its sinks leave.
    pub fn conn_closed(&mut self, now: Instant, conn: ConnId) {
        let legs: Vec<(Leg, Role)> = self
            .legs
            .range((conn, 0)..=(conn, u64::MAX))
            .map(|(l, r)| (*l, *r))
            .collect();
        for (leg, role) in legs {
            match role {
                Role::Source(g) => {
                    self.drop_leg(leg);
                    if let Some(gr) = self.groups.get_mut(&g) {
                        gr.source = None;
                    }
                    self.end_group(
                        g,
                        EndCode::SourceGone,
                        "the source's connection ended",
                        None,
                    );
                }
                Role::Sink(g) => self.leave(now, g, leg, None),
            }
        }
        self.per_conn.remove(&conn);
        self.next_hub_id.remove(&conn);
    }

    /// Ends every stream (hub shutdown): sinks and sources are told `SHUTDOWN`.
    pub fn shutdown(&mut self) {
        let ids: Vec<u64> = self.groups.keys().copied().collect();
        for g in ids {
            self.end_group(
                g,
                EndCode::Shutdown,
                "the hub is shutting down",
                Some((EndCode::Shutdown, "the hub is shutting down")),
            );
        }
    }

    /// Deferred resyncs and stalled lossless sinks.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, g)) = self.wake.first() {
            if t > now {
                break;
            }
            self.wake.pop_first();
            let Some(gr) = self.groups.get_mut(&g) else {
                continue;
            };
            if gr.resync_pending
                && gr
                    .last_resync
                    .is_none_or(|l| now >= l + self.limits.resync_interval)
            {
                gr.resync_pending = false;
                self.request_resync(now, g);
            }
            let Some(gr) = self.groups.get(&g) else {
                continue;
            };
            if let Some(since) = gr.stalled_since
                && now >= since + self.limits.stall_timeout
            {
                let why = format!(
                    "{}: the sink granted no credit for {} s",
                    end_text(EndCode::SlowConsumer),
                    self.limits.stall_timeout.as_secs()
                );
                self.end_group(
                    g,
                    EndCode::SlowConsumer,
                    &why,
                    Some((EndCode::SlowConsumer, &why)),
                );
            }
        }
    }

    /// The hub, as the source of `group`, accepts it.
    pub fn hub_accept(&mut self, group: u64) {
        self.source_accepted(group, 0);
    }

    /// The hub, as the source of `group`, refuses it.
    pub fn hub_reject(&mut self, group: u64, code: EndCode, reason: &str) {
        self.source_rejected(group, code, reason);
    }

    /// The hub, as the source of `group`, produces an event.
    pub fn hub_data(&mut self, now: Instant, group: u64, key_frame: bool, payload: Bytes) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if g.source.is_some() || !g.accepted {
            return;
        }
        let sequence = g.frames_in + 1;
        self.distribute(
            now,
            group,
            Frame {
                sequence,
                key_frame,
                channel: 0,
                payload,
            },
        );
    }

    /// Every group and its sinks, for `ListStreamsResponse`.
    pub fn list(&self) -> Vec<pb::StreamGroupInfo> {
        self.groups
            .iter()
            .map(|(id, g)| pb::StreamGroupInfo {
                group: *id,
                agent_id: g.instance.clone(),
                kind: g.kind.clone(),
                key: g.key.clone().unwrap_or_default(),
                class: g.class as i32,
                sinks: g
                    .sinks
                    .values()
                    .map(|s| pb::StreamSinkInfo {
                        sink: s.label.clone(),
                        bytes: s.bytes,
                        frames: s.frames,
                        dropped_frames: s.dropped,
                        queued_bytes: s.queued as u64,
                        resyncs: s.resyncs,
                    })
                    .collect(),
                bytes_in: g.bytes_in,
                frames_in: g.frames_in,
                path: "relayed by the hub".into(),
            })
            .collect()
    }

    // --- internals ------------------------------------------------------------------------

    fn join(&mut self, now: Instant, gid: u64, leg: Leg, mut sink: Sink) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        if g.sinks.len() >= self.limits.max_sinks {
            return self.send(
                leg.0,
                Body::StreamReject(pb::StreamReject {
                    request_id: sink.request_id,
                    stream_id: leg.1,
                    code: EndCode::Limit as i32,
                    reason: format!("at most {} sinks share one source", self.limits.max_sinks),
                }),
            );
        }
        let accepted = g.accepted;
        let class = g.class;
        let cached = g.cached_key.clone();
        if accepted {
            sink.accepted = true;
            let request_id = sink.request_id;
            // A late joiner starts from the cached key frame, or waits for the next one.
            match cached {
                Some(f) => {
                    sink.queued = f.payload.len();
                    sink.queue.push_back(f);
                }
                None => sink.awaiting_key = true,
            }
            g.sinks.insert(leg, sink);
            self.add_leg(leg, Role::Sink(gid));
            self.send(
                leg.0,
                Body::StreamAccept(pb::StreamAccept {
                    request_id,
                    stream_id: leg.1,
                    initial_credit: 0,
                    multicast: true,
                    class: class as i32,
                }),
            );
            self.flush(gid, leg);
            let needs_key = self
                .groups
                .get(&gid)
                .and_then(|g| g.sinks.get(&leg))
                .is_some_and(|s| s.awaiting_key);
            if needs_key {
                self.request_resync(now, gid);
            }
        } else {
            g.sinks.insert(leg, sink);
            self.add_leg(leg, Role::Sink(gid));
        }
    }

    fn on_source_message(&mut self, now: Instant, gid: u64, body: Body) {
        match body {
            Body::StreamAccept(a) => self.source_accepted(gid, a.initial_credit),
            Body::StreamReject(r) => {
                let code = EndCode::try_from(r.code).unwrap_or(EndCode::Unsupported);
                self.source_rejected(gid, code, &r.reason)
            }
            Body::StreamData(d) => self.source_data(now, gid, d),
            Body::StreamCredit(c) => {
                // Lossless: the source lets the sink send more (keystrokes).
                let Some(g) = self.groups.get_mut(&gid) else {
                    return;
                };
                if g.class != Class::Lossless {
                    return;
                }
                g.reverse_credit = g.reverse_credit.saturating_add(c.bytes);
                let targets: Vec<Leg> = g.sinks.keys().copied().collect();
                for (conn, id) in targets {
                    self.send(
                        conn,
                        Body::StreamCredit(pb::StreamCredit {
                            stream_id: id,
                            bytes: c.bytes,
                        }),
                    );
                }
            }
            Body::StreamClose(c) => {
                let code = EndCode::try_from(c.code).unwrap_or(EndCode::Normal);
                if let Some((conn, id)) = self.groups.get_mut(&gid).and_then(|g| g.source.take()) {
                    self.drop_leg((conn, id));
                }
                let reason = if c.reason.is_empty() {
                    "the source closed the stream".to_string()
                } else {
                    c.reason
                };
                self.end_group(gid, code, &reason, None);
            }
            _ => {} // resync from a source: meaningless, ignored
        }
    }

    fn on_sink_message(&mut self, now: Instant, gid: u64, leg: Leg, body: Body) {
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        match body {
            Body::StreamCredit(c) => {
                let Some(s) = g.sinks.get_mut(&leg) else {
                    return;
                };
                s.credit = s.credit.saturating_add(c.bytes);
                if s.credit > self.limits.max_window.saturating_mul(2) {
                    return self.leave(
                        now,
                        gid,
                        leg,
                        Some((EndCode::Protocol, "credit above the largest window")),
                    );
                }
                match g.class {
                    Class::Latest => self.flush(gid, leg),
                    Class::Lossless => {
                        g.stalled_since = None;
                        if let Some((sc, sid)) = g.source {
                            self.send(
                                sc,
                                Body::StreamCredit(pb::StreamCredit {
                                    stream_id: sid,
                                    bytes: c.bytes,
                                }),
                            );
                        }
                    }
                }
            }
            Body::StreamData(d) => {
                // Only a lossless sink sends (keystrokes), within the source's credit.
                let len = d.payload.len() as u64;
                if g.class != Class::Lossless || !g.accepted || len > g.reverse_credit {
                    return self.leave(
                        now,
                        gid,
                        leg,
                        Some((EndCode::Protocol, "sink data without credit")),
                    );
                }
                g.reverse_credit -= len;
                if let Some((sc, sid)) = g.source {
                    self.send(
                        sc,
                        Body::StreamData(pb::StreamData {
                            stream_id: sid,
                            ..d
                        }),
                    );
                }
            }
            Body::StreamResync(_) if g.class == Class::Latest => {
                if let Some(s) = g.sinks.get_mut(&leg) {
                    s.resyncs += 1;
                }
                self.request_resync(now, gid);
            }
            Body::StreamClose(_) => {
                self.leave(now, gid, leg, None);
            }
            _ => {} // accept/reject from a sink: meaningless, ignored
        }
    }

    /// A sink leaves its group (closing its leg with `close` when given); the last sink out
    /// stops the source.
    fn leave(&mut self, _now: Instant, gid: u64, leg: Leg, close: Option<(EndCode, &str)>) {
        self.drop_leg(leg);
        let Some(g) = self.groups.get_mut(&gid) else {
            return;
        };
        g.sinks.remove(&leg);
        if let Some((code, why)) = close {
            self.send(
                leg.0,
                Body::StreamClose(pb::StreamClose {
                    stream_id: leg.1,
                    code: code as i32,
                    reason: why.into(),
                }),
            );
        }
        let Some(g) = self.groups.get(&gid) else {
            return;
        };
        if g.sinks.is_empty() {
            self.end_group(
                gid,
                EndCode::Normal,
                "",
                Some((EndCode::Normal, "the last sink left")),
            );
        }
    }

    /// Ends a group: every sink is closed with `code`/`reason`; the source leg (if still
    /// there) with `source_close`, or `NORMAL` when none is given.
    fn end_group(
        &mut self,
        gid: u64,
        code: EndCode,
        reason: &str,
        source_close: Option<(EndCode, &str)>,
    ) {
        let Some(mut g) = self.groups.remove(&gid) else {
            return;
        };
        self.unkey(&g);
        for (leg, s) in std::mem::take(&mut g.sinks) {
            self.drop_leg(leg);
            let body = if s.accepted {
                Body::StreamClose(pb::StreamClose {
                    stream_id: leg.1,
                    code: code as i32,
                    reason: reason.to_owned(),
                })
            } else {
                Body::StreamReject(pb::StreamReject {
                    request_id: s.request_id,
                    stream_id: leg.1,
                    code: code as i32,
                    reason: reason.to_owned(),
                })
            };
            self.send(leg.0, body);
        }
        match g.source.take() {
            Some(l) => {
                self.drop_leg(l);
                let (c, r) = source_close.unwrap_or((EndCode::Normal, "closed"));
                self.send(
                    l.0,
                    Body::StreamClose(pb::StreamClose {
                        stream_id: l.1,
                        code: c as i32,
                        reason: r.to_owned(),
                    }),
                );
            }
            None if self.is_hub_group(&g) => self
                .out
                .push_back(RouterOutput::HubSourceClosed { group: gid }),
            None => {}
        }
    }

    fn is_hub_group(&self, g: &Group) -> bool {
        g.instance.is_empty()
    }

    fn unkey(&mut self, g: &Group) {
        if let Some(k) = &g.key {
            self.by_key
                .remove(&(g.instance.clone(), g.kind.clone(), k.clone()));
        }
    }

    fn count(&self, conn: ConnId) -> usize {
        self.per_conn.get(&conn).copied().unwrap_or(0)
    }

    fn add_leg(&mut self, leg: Leg, role: Role) {
        self.legs.insert(leg, role);
        *self.per_conn.entry(leg.0).or_insert(0) += 1;
    }

    fn drop_leg(&mut self, leg: Leg) {
        if self.legs.remove(&leg).is_some()
            && let Some(n) = self.per_conn.get_mut(&leg.0)
        {
            *n = n.saturating_sub(1);
        }
    }

    fn send(&mut self, conn: ConnId, body: Body) {
        self.out.push_back(RouterOutput::Send { conn, body });
    }
}
