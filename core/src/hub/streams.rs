//! Streams in the hub: opens authorised by the one authorisation function and routed to their
//! source (an agent that speaks streams, or the hub itself), the [`Router`] doing the rest.
//!
//! The hub is the source of one kind itself, `hub.stats` (latest class, parameter
//! `interval_ms`, default 1,000, at least 100): a JSON snapshot of the hub's figures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use super::{Conn, ConnId, Hub};
use crate::perm::{self, Operation, Permissions};
use crate::stream::{Class, EndCode, RouterOutput, SourceRef};

/// Who opens a stream, as the hub authorises it.
pub(crate) enum Opener {
    /// An operator session.
    User {
        user: String,
        uid: u64,
        perms: Permissions,
    },
    /// An agent (agents hold `open_stream` only: no shell on another agent).
    Agent(String),
}

/// The hub's own source of a `hub.stats` group.
pub(crate) struct HubSource {
    interval: Duration,
    next: Instant,
}

/// Figures of the hub's streams, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStats {
    /// Groups (one source each).
    pub groups: usize,
    /// Sinks over all groups.
    pub sinks: usize,
    /// Bytes queued in the hub for slow sinks.
    pub queued_bytes: usize,
    /// Frames dropped for slow sinks since start.
    pub dropped_frames: u64,
    /// Payload bytes delivered to sinks since start.
    pub delivered_bytes: u64,
}

impl Hub {
    /// The hub's stream groups with their sinks, as `ListStreamsRequest` answers them.
    pub fn list_streams(&self) -> Vec<pb::StreamGroupInfo> {
        self.streams.list()
    }

    /// The figures of the hub's streams.
    pub fn stream_stats(&self) -> StreamStats {
        let (dropped_frames, delivered_bytes) = self.streams.totals();
        StreamStats {
            groups: self.streams.group_count(),
            sinks: self.streams.sink_count(),
            queued_bytes: self.streams.queued_bytes(),
            dropped_frames,
            delivered_bytes,
        }
    }

    /// A stream message from an operator session (already past the guest check).
    pub(crate) fn session_stream(&mut self, now: Instant, conn: ConnId, body: Body) {
        let Some(Conn::Session(s)) = self.conns.get(&conn).map(|e| &e.conn) else {
            return;
        };
        let opener = Opener::User {
            user: s.user.clone(),
            uid: s.uid,
            perms: s.perms,
        };
        match body {
            Body::StreamOpen(o) => self.stream_open(now, conn, opener, *o),
            Body::ListStreamsRequest(r) => {
                let Opener::User { user, uid, perms } = opener else {
                    return;
                };
                if let Err(d) = perm::authorize(&user, uid, perms, &Operation::ListStreams) {
                    return self.control_error(
                        conn,
                        r.request_id,
                        pb::control_error::Code::Access,
                        d.to_string(),
                    );
                }
                let groups = self.streams.list();
                self.send_body(
                    conn,
                    Body::ListStreamsResponse(pb::ListStreamsResponse {
                        request_id: r.request_id,
                        groups,
                    }),
                );
            }
            other => {
                self.streams.handle_message(now, conn, other);
                self.pump_streams(now);
            }
        }
    }

    /// A stream message from an agent that speaks streams.
    pub(crate) fn agent_stream(&mut self, now: Instant, conn: ConnId, body: Body) {
        match body {
            Body::StreamOpen(o) => {
                let Some(Conn::Agent(link)) = self.conns.get(&conn).map(|e| &e.conn) else {
                    return;
                };
                let Some(id) = link.agent_id().map(str::to_owned) else {
                    return;
                };
                self.stream_open(now, conn, Opener::Agent(id), *o)
            }
            other => {
                self.streams.handle_message(now, conn, other);
                self.pump_streams(now);
            }
        }
    }

    fn stream_open(&mut self, now: Instant, conn: ConnId, opener: Opener, o: pb::StreamOpen) {
        let reject = |hub: &mut Hub, code: EndCode, reason: String| {
            hub.send_body(
                conn,
                Body::StreamReject(pb::StreamReject {
                    request_id: o.request_id,
                    stream_id: o.stream_id,
                    code: code as i32,
                    reason,
                }),
            );
        };
        let (label, denied) = match &opener {
            Opener::User { user, uid, perms } => (
                user.clone(),
                perm::authorize(user, *uid, *perms, &Operation::OpenStream { kind: &o.kind }).err(),
            ),
            Opener::Agent(id) => (
                format!("agent:{id}"),
                perm::authorize(
                    id,
                    0,
                    Permissions::OPEN_STREAM,
                    &Operation::OpenStream { kind: &o.kind },
                )
                .err(),
            ),
        };
        if let Some(d) = denied {
            return reject(self, EndCode::Unauthorised, d.to_string());
        }
        let source = if o.agent_id.is_empty() {
            SourceRef::Hub
        } else {
            if matches!(&opener, Opener::Agent(me) if *me == o.agent_id) {
                return reject(
                    self,
                    EndCode::Invalid,
                    "an agent's streams to itself are local streams".into(),
                );
            }
            let Some(agent) = self.agents.get(&o.agent_id) else {
                return reject(self, EndCode::NoRoute, format!("no agent {:?}", o.agent_id));
            };
            let Some(ac) = agent.conn else {
                return reject(
                    self,
                    EndCode::NoRoute,
                    format!("agent {:?} is not connected", o.agent_id),
                );
            };
            let speaks = matches!(
                self.conns.get(&ac).map(|e| &e.conn),
                Some(Conn::Agent(l)) if l.speaks_streams()
            );
            if !speaks {
                return reject(
                    self,
                    EndCode::Unsupported,
                    format!(
                        "agent {:?} does not speak streams (a RedPepper 0.0.x agent, or an older one)",
                        o.agent_id
                    ),
                );
            }
            SourceRef::Conn {
                conn: ac,
                instance: o.agent_id.clone(),
            }
        };
        self.streams.open(now, conn, &label, o, source);
        self.pump_streams(now);
    }

    /// Performs what the router asks: sends, and the hub's own sources.
    pub(crate) fn pump_streams(&mut self, now: Instant) {
        while let Some(o) = self.streams.poll_output() {
            match o {
                RouterOutput::Send { conn, body } => {
                    if self.conns.contains_key(&conn) {
                        self.send_body(conn, body);
                    }
                }
                RouterOutput::HubSourceOpened { group, open } => match hub_stats_interval(&open) {
                    Ok(interval) => {
                        self.streams.hub_accept(group);
                        self.hub_sources.insert(
                            group,
                            HubSource {
                                interval,
                                next: now,
                            },
                        );
                        self.produce_hub_stats(now, group);
                    }
                    Err(why) => self.streams.hub_reject(group, EndCode::Unsupported, &why),
                },
                RouterOutput::HubSourceResync { group } => {
                    if self.hub_sources.contains_key(&group) {
                        self.produce_hub_stats(now, group);
                    }
                }
                RouterOutput::HubSourceClosed { group } => {
                    self.hub_sources.remove(&group);
                }
            }
        }
    }

    /// Deferred router work and the hub's own sources.
    pub(crate) fn streams_timeout(&mut self, now: Instant) {
        self.streams.handle_timeout(now);
        let due: Vec<u64> = self
            .hub_sources
            .iter()
            .filter(|(_, s)| s.next <= now)
            .map(|(g, _)| *g)
            .collect();
        for g in due {
            self.produce_hub_stats(now, g);
        }
        self.pump_streams(now);
    }

    /// When the streams have work.
    pub(crate) fn streams_deadline(&self) -> Option<Instant> {
        let hub = self.hub_sources.values().map(|s| s.next).min();
        match (self.streams.poll_timeout(), hub) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn produce_hub_stats(&mut self, now: Instant, group: u64) {
        let stats = self.stream_stats();
        let snapshot = serde_json::json!({
            "unix_ms": self.unix_ms(now),
            "connections": self.conns.len(),
            "agents_connected": self.agents.values().filter(|a| a.conn.is_some()).count(),
            "active_commands": self.commands.len(),
            "stream_groups": stats.groups,
            "stream_sinks": stats.sinks,
            "stream_queued_bytes": stats.queued_bytes,
            "stream_dropped_frames": stats.dropped_frames,
        });
        if let Some(s) = self.hub_sources.get_mut(&group) {
            s.next = now + s.interval;
        }
        // Every snapshot stands alone: each is a key frame.
        self.streams
            .hub_data(now, group, true, Bytes::from(snapshot.to_string()));
    }
}

/// The interval of a `hub.stats` open, or why the hub does not produce it.
fn hub_stats_interval(open: &pb::StreamOpen) -> Result<Duration, String> {
    if open.kind != "hub.stats" {
        return Err(format!(
            "the hub produces no {:?} stream (it produces \"hub.stats\")",
            open.kind
        ));
    }
    if open.class != Class::Latest as i32 {
        return Err("hub.stats is a latest-class stream".into());
    }
    crate::stream::interval_param(open)
}

/// The hub's sources by group.
pub(crate) type HubSources = BTreeMap<u64, HubSource>;

#[cfg(test)]
#[path = "streams_tests.rs"]
mod tests;
