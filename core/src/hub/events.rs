//! The hub's ordered event log: every event worth following gets an ORDER (strictly
//! increasing, persisted with a timestamp before anyone hears of it), lives in a ring of recent
//! events, and is streamed to subscribers after the order they name, stored ones first, then
//! live ones. A subscription is a cursor (the last order it was given), so the switch from
//! stored to live has no gap and no repeat by construction. Events older than the ring are
//! read from storage through [`HubAction::ReadEvents`].

use std::collections::VecDeque;

use serde_json::{Value, json};
use switchboard_proto as pb;
use switchboard_proto::control_error::Code;
use switchboard_proto::message::Message as Body;

use super::{Change, Conn, ConnId, EventRecord, Hub, HubAction, HubEvent};
use crate::perm::{self, Operation, Permissions};

/// Events served to a lagging subscriber per storage read.
pub const READ_BATCH: usize = 256;

/// The log's bookkeeping in the hub.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    /// The newest order given (0 = none yet).
    pub(crate) last_order: u64,
    /// The oldest order retained.
    pub(crate) first_order: u64,
    /// The newest events, oldest first (at most `HubConfig::event_ring`).
    pub(crate) ring: VecDeque<EventRecord>,
    /// The front of the action queue is an event that has had its order already.
    pub(crate) front_ordered: bool,
}

/// A subscription: the last order its session was given (or skipped as not visible).
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) cursor: u64,
    /// A storage read is in flight.
    pub(crate) reading: bool,
}

/// Who may see an event: any of these bits (0 = every user).
fn scope_of(e: &HubEvent) -> Option<(&'static str, Value, Permissions)> {
    let agents = Permissions::MANAGE_AGENTS.union(Permissions::RUN_COMMAND);
    let users = Permissions::REGISTER_USER.union(Permissions::DELETE_USER);
    Some(match e {
        HubEvent::AgentConnected { agent_id, addr, .. } => (
            "AgentConnected",
            json!({"agentId": agent_id, "address": addr.to_string()}),
            agents,
        ),
        HubEvent::AgentDisconnected { agent_id, reason } => (
            "AgentDisconnected",
            json!({"agentId": agent_id, "reason": reason}),
            agents,
        ),
        HubEvent::CommandStarted {
            command_id,
            agent_id,
            operation,
        } => (
            "CommandStarted",
            json!({"commandId": command_id, "agentId": agent_id, "operation": operation}),
            agents,
        ),
        HubEvent::CommandProgress {
            command_id,
            current,
            total,
            message,
        } => (
            "CommandProgress",
            json!({"commandId": command_id, "current": current, "total": total, "message": message}),
            agents,
        ),
        HubEvent::CommandFinished {
            command_id,
            status,
            output,
        } => (
            "CommandFinished",
            json!({"commandId": command_id, "status": status.as_str(), "output": output}),
            agents,
        ),
        HubEvent::ChannelCreated { chid, owner, port } => (
            "ChannelCreated",
            json!({"chid": chid, "owner": owner, "port": port}),
            Permissions::NONE,
        ),
        HubEvent::ChannelDeleted { chid } => {
            ("ChannelDeleted", json!({"chid": chid}), Permissions::NONE)
        }
        HubEvent::MemberJoined { chid, uid } => (
            "MemberJoined",
            json!({"chid": chid, "uid": uid}),
            Permissions::NONE,
        ),
        HubEvent::MemberLeft { chid, uid, expired } => (
            "MemberLeft",
            json!({"chid": chid, "uid": uid, "expired": expired}),
            Permissions::NONE,
        ),
        HubEvent::AgentRegistered { agent_id } => (
            "AgentRegistered",
            json!({"agentId": agent_id}),
            Permissions::MANAGE_AGENTS,
        ),
        HubEvent::AgentRemoved { agent_id } => (
            "AgentRemoved",
            json!({"agentId": agent_id}),
            Permissions::MANAGE_AGENTS,
        ),
        HubEvent::AgentDataSet { agent_id, name } => (
            "AgentDataSet",
            json!({"agentId": agent_id, "name": name}),
            Permissions::MANAGE_AGENTS,
        ),
        HubEvent::FeedClientAdded { client_id, user } => (
            "FeedClientAdded",
            json!({"clientId": client_id, "user": user}),
            Permissions::REGISTER_USER,
        ),
        HubEvent::FeedClientRemoved { client_id } => (
            "FeedClientRemoved",
            json!({"clientId": client_id}),
            Permissions::REGISTER_USER,
        ),
        HubEvent::UserCredentialsSet { uid } => ("UserCredentialsSet", json!({"uid": uid}), users),
        HubEvent::UserRegistered { uid } => ("UserRegistered", json!({"uid": uid}), users),
        HubEvent::UserRemoved { uid } => ("UserRemoved", json!({"uid": uid}), users),
        HubEvent::LoggedIn { user, .. } => ("LoggedIn", json!({"user": user}), users),
        HubEvent::CertificateIssued {
            name,
            serial,
            not_after_unix_ms,
        } => (
            "CertificateIssued",
            json!({"name": name, "serial": serial, "notAfterUnixMs": not_after_unix_ms}),
            Permissions::MANAGE_AGENTS,
        ),
        HubEvent::CertificateRevoked { name, serial } => (
            "CertificateRevoked",
            json!({"name": name, "serial": serial}),
            Permissions::MANAGE_AGENTS,
        ),
        HubEvent::AuthFailed { .. }
        | HubEvent::SessionOpened { .. }
        | HubEvent::MemberBound { .. }
        | HubEvent::ChannelFailed { .. }
        | HubEvent::LoginFailed { .. }
        | HubEvent::ConnectionFailed { .. } => return None,
    })
}

impl Hub {
    /// Loads the log's state (at start).
    pub(crate) fn load_events(&mut self, last: u64, first: u64, recent: Vec<EventRecord>) {
        self.log.last_order = last;
        self.log.first_order = if last == 0 { 1 } else { first.max(1) };
        self.log.ring = recent.into_iter().filter(|e| e.order <= last).collect();
        while self.log.ring.len() > self.cfg.event_ring {
            self.log.ring.pop_front();
        }
    }

    /// Gives a loggable event its order: its Persist comes out first (returned), then the event
    /// (ahead of the rest of the queue), and subscribers' notices after what is queued already
    /// (a subscriber's replay may be queued: notices keep the log's order).
    pub(crate) fn order_event(&mut self, e: HubEvent) -> HubAction {
        let Some((kind, mut value, scope)) = scope_of(&e) else {
            return HubAction::Event(e);
        };
        self.log.last_order += 1;
        let order = self.log.last_order;
        if let Some(o) = value.as_object_mut() {
            o.insert("@type".into(), Value::String(kind.into()));
        }
        let rec = EventRecord {
            order,
            unix_ms: self.unix_ms(self.last_now),
            kind: kind.into(),
            json: value.to_string(),
            scope: scope.0,
        };
        self.log.ring.push_back(rec.clone());
        while self.log.ring.len() > self.cfg.event_ring {
            self.log.ring.pop_front();
        }
        let rest = std::mem::take(&mut self.out);
        self.out.push_back(HubAction::Event(e));
        self.log.front_ordered = true;
        let retained = order + 1 - self.log.first_order;
        let retention = self.cfg.event_retention.max(1);
        if retained > retention + retention / 10 {
            self.log.first_order = order + 1 - retention;
            self.out.push_back(HubAction::Persist(Change::EventsPruned {
                before_order: self.log.first_order,
            }));
        }
        self.out.extend(rest);
        // Subscribers' notices go after what is queued already: a subscriber may have notices
        // of older events queued (its replay), and a session's messages keep their order.
        let subs: Vec<ConnId> = self.subs.keys().copied().collect();
        for conn in subs {
            self.pump_sub(conn);
        }
        HubAction::Persist(Change::EventLogged(rec))
    }

    /// SubscribeEventsRequest from a session.
    pub(crate) fn subscribe(&mut self, conn: ConnId, r: pb::SubscribeEventsRequest) {
        let first = self.log.first_order;
        if r.from_order.saturating_add(1) < first {
            return self.control_error(
                conn,
                r.request_id,
                Code::Gone,
                format!(
                    "events after {} are gone: the log keeps orders {first}..={}",
                    r.from_order, self.log.last_order
                ),
            );
        }
        if r.from_order > self.log.last_order {
            return self.control_error(
                conn,
                r.request_id,
                Code::Invalid,
                format!(
                    "order {} is ahead of the log (newest {})",
                    r.from_order, self.log.last_order
                ),
            );
        }
        self.send_body(
            conn,
            Body::SubscribeEventsResponse(pb::SubscribeEventsResponse {
                request_id: r.request_id,
                last_order: self.log.last_order,
                first_order: first,
            }),
        );
        self.subs.insert(
            conn,
            Subscription {
                cursor: r.from_order,
                reading: false,
            },
        );
        self.pump_sub(conn);
    }

    /// Sends a subscriber what it has not had yet, from the ring, or asks storage for older.
    pub(crate) fn pump_sub(&mut self, conn: ConnId) {
        let Some(actor) = self.session_actor(conn) else {
            self.subs.remove(&conn);
            return;
        };
        loop {
            let Some(sub) = self.subs.get_mut(&conn) else {
                return;
            };
            if sub.reading || sub.cursor >= self.log.last_order {
                return;
            }
            let ring_first = self.log.ring.front().map_or(u64::MAX, |e| e.order);
            if sub.cursor + 1 < ring_first {
                sub.reading = true;
                let after = sub.cursor.max(self.log.first_order.saturating_sub(1));
                self.out.push_back(HubAction::ReadEvents {
                    conn,
                    after_order: after,
                    limit: READ_BATCH,
                });
                return;
            }
            let idx = (sub.cursor + 1 - ring_first) as usize;
            let Some(rec) = self.log.ring.get(idx).cloned() else {
                return;
            };
            sub.cursor = rec.order;
            self.deliver(conn, &actor, &rec);
        }
    }

    /// The answer to a [`HubAction::ReadEvents`]: stored events after the order asked for,
    /// oldest first (fewer than asked at the end of what storage holds).
    pub fn handle_events_read(&mut self, conn: ConnId, events: Vec<EventRecord>) {
        let Some(actor) = self.session_actor(conn) else {
            self.subs.remove(&conn);
            return;
        };
        let Some(sub) = self.subs.get_mut(&conn) else {
            return;
        };
        sub.reading = false;
        let ring_first = self.log.ring.front().map_or(u64::MAX, |e| e.order);
        let mut progressed = false;
        for rec in events {
            let Some(sub) = self.subs.get_mut(&conn) else {
                return;
            };
            if rec.order <= sub.cursor || rec.order >= ring_first {
                continue;
            }
            sub.cursor = rec.order;
            progressed = true;
            self.deliver(conn, &actor, &rec);
        }
        if !progressed && let Some(sub) = self.subs.get_mut(&conn) {
            // Storage has nothing more below the ring (pruned meanwhile): go on from the ring.
            sub.cursor = sub.cursor.max(ring_first.saturating_sub(1));
        }
        self.pump_sub(conn);
    }

    fn deliver(&mut self, conn: ConnId, actor: &(String, u64, Permissions), rec: &EventRecord) {
        let op = Operation::SeeEvent {
            needs_any: Permissions(rec.scope),
        };
        if perm::authorize(&actor.0, actor.1, actor.2, &op).is_err() {
            return;
        }
        self.send_body(
            conn,
            Body::EventNotice(pb::EventNotice {
                order: rec.order,
                unix_ms: rec.unix_ms,
                kind: rec.kind.clone(),
                json: rec.json.clone(),
            }),
        );
    }

    /// The user, uid and permissions a session acts with now.
    pub(crate) fn session_actor(&self, conn: ConnId) -> Option<(String, u64, Permissions)> {
        match &self.conns.get(&conn)?.conn {
            Conn::Session(s) => Some((s.user.clone(), s.uid, s.perms)),
            _ => None,
        }
    }

    /// The newest order of the log.
    pub fn last_event_order(&self) -> u64 {
        self.log.last_order
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
