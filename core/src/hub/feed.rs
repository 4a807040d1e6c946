//! The hub's side of the secure feed: the client registry, the challenge a client signs to
//! become its user (checked here, whoever relays it), one live connection per client (a newer
//! one replaces the older, closed with 4000 by the web face), and INBOX operations that run
//! exactly once: the client's sequence is stored in the same transaction as the operation's
//! change.

use std::time::Instant;

use rand_core::RngCore;
use sha2::{Digest, Sha256};
use switchboard_proto as pb;
use switchboard_proto::control_error::Code;
use switchboard_proto::message::Message as Body;

use super::{Change, ConnId, FeedClientRecord, Hub, HubAction, HubEvent};
use crate::feed::crypto;
use crate::machine::CloseReason;
use crate::perm::{self, Operation, Permissions};

/// The reason a feed connection is closed when a newer one of the same client logs in (the
/// web face closes it with 4000).
pub const FEED_REPLACED: &str = "replaced by a newer connection of the same feed client";

/// Feed clients per listing page.
const PAGE: usize = 200;

fn info(r: &FeedClientRecord) -> pb::FeedClientInfo {
    pb::FeedClientInfo {
        client_id: r.client_id.clone(),
        user: r.user.clone(),
        last_sequence: r.last_sequence,
        key_sha256: hex::encode(Sha256::digest(&r.public_key_der)),
    }
}

impl Hub {
    /// Feed messages of a session; gives back what it does not handle.
    pub(crate) fn session_feed(
        &mut self,
        now: Instant,
        conn: ConnId,
        actor: (&str, u64, Permissions),
        body: Body,
    ) -> Result<(), Body> {
        let mut body = body;
        let registry = matches!(
            body,
            Body::FeedClientAddRequest(_)
                | Body::FeedClientRemoveRequest(_)
                | Body::FeedClientListRequest(_)
        );
        if registry
            && let Err(d) =
                perm::authorize(actor.0, actor.1, actor.2, &Operation::ManageFeedClients)
        {
            let request_id = crate::link::msg::request_id_mut(&mut body).map_or(0, |r| *r);
            self.control_error(conn, request_id, Code::Access, d.to_string());
            return Ok(());
        }
        match body {
            Body::FeedLookupRequest(r) => {
                let resp = match self.feed_clients.get(&r.client_id) {
                    Some(rec) => {
                        let mut challenge = vec![0u8; 32];
                        self.rng.fill_bytes(&mut challenge);
                        let resp = pb::FeedLookupResponse {
                            request_id: r.request_id,
                            found: true,
                            public_key_der: rec.public_key_der.clone().into(),
                            last_sequence: rec.last_sequence,
                            challenge: challenge.clone().into(),
                        };
                        self.feed_challenges
                            .insert(conn, (r.client_id.clone(), challenge));
                        resp
                    }
                    None => pb::FeedLookupResponse {
                        request_id: r.request_id,
                        ..Default::default()
                    },
                };
                self.send_body(conn, Body::FeedLookupResponse(resp));
            }
            Body::FeedLoginRequest(r) => self.feed_login(now, conn, r),
            Body::FeedInboxRequest(r) => self.feed_inbox(now, conn, *r),
            Body::FeedClientAddRequest(r) => {
                let bad = if r.client_id.is_empty()
                    || r.client_id.len() > crate::feed::messages::MAX_CLIENT_ID
                    || !r.client_id.bytes().all(|c| c.is_ascii_graphic())
                {
                    Some("the client id must be 1 to 256 printable ASCII characters".to_string())
                } else if let Err(e) = crypto::public_key_from_der(&r.public_key_der) {
                    Some(e)
                } else if self.actor_of(&r.user).is_none() {
                    Some(format!("no user {:?}", r.user))
                } else {
                    None
                };
                if let Some(why) = bad {
                    self.control_error(conn, r.request_id, Code::Invalid, why);
                    return Ok(());
                }
                let rec = FeedClientRecord {
                    client_id: r.client_id.clone(),
                    public_key_der: r.public_key_der.to_vec(),
                    user: r.user.clone(),
                    last_sequence: self
                        .feed_clients
                        .get(&r.client_id)
                        .map_or(0, |c| c.last_sequence),
                };
                self.out
                    .push_back(HubAction::Persist(Change::FeedClientSaved(rec.clone())));
                self.out
                    .push_back(HubAction::Event(HubEvent::FeedClientAdded {
                        client_id: rec.client_id.clone(),
                        user: rec.user.clone(),
                    }));
                let client = info(&rec);
                self.feed_clients.insert(rec.client_id.clone(), rec);
                self.send_body(
                    conn,
                    Body::FeedClientAddResponse(pb::FeedClientAddResponse {
                        request_id: r.request_id,
                        client: Some(client),
                    }),
                );
            }
            Body::FeedClientRemoveRequest(r) => {
                let removed = self.feed_clients.remove(&r.client_id).is_some();
                if removed {
                    self.out
                        .push_back(HubAction::Persist(Change::FeedClientRemoved {
                            client_id: r.client_id.clone(),
                        }));
                    self.out
                        .push_back(HubAction::Event(HubEvent::FeedClientRemoved {
                            client_id: r.client_id.clone(),
                        }));
                    if let Some(live) = self.feed_conns.remove(&r.client_id) {
                        self.close_conn(
                            now,
                            live,
                            CloseReason::Local("feed client removed".into()),
                        );
                    }
                }
                self.send_body(
                    conn,
                    Body::FeedClientRemoveResponse(pb::FeedClientRemoveResponse {
                        request_id: r.request_id,
                        removed,
                    }),
                );
            }
            Body::FeedClientListRequest(r) => {
                let mut clients: Vec<pb::FeedClientInfo> = self
                    .feed_clients
                    .range::<str, _>((
                        std::ops::Bound::Excluded(r.after.as_str()),
                        std::ops::Bound::Unbounded,
                    ))
                    .take(PAGE + 1)
                    .map(|(_, c)| info(c))
                    .collect();
                let more = clients.len() > PAGE;
                clients.truncate(PAGE);
                self.send_body(
                    conn,
                    Body::FeedClientListResponse(pb::FeedClientListResponse {
                        request_id: r.request_id,
                        clients,
                        more,
                    }),
                );
            }
            other => return Err(other),
        }
        Ok(())
    }

    fn feed_login(&mut self, now: Instant, conn: ConnId, r: pb::FeedLoginRequest) {
        let refuse = |hub: &mut Hub, error: &str| {
            hub.send_body(
                conn,
                Body::FeedLoginResponse(pb::FeedLoginResponse {
                    request_id: r.request_id,
                    ok: false,
                    error: error.into(),
                    ..Default::default()
                }),
            );
        };
        // A challenge is good for one attempt.
        let Some((client_id, challenge)) = self.feed_challenges.remove(&conn) else {
            return refuse(
                self,
                "no challenge for this session (FeedLookupRequest first)",
            );
        };
        let verified = client_id == r.client_id
            && self.feed_clients.get(&client_id).is_some_and(|rec| {
                crypto::public_key_from_der(&rec.public_key_der)
                    .is_ok_and(|key| crypto::pss_verify(&key, &challenge, &r.signature))
            });
        let user = self.feed_clients.get(&client_id).map(|c| c.user.clone());
        let uid = user
            .as_deref()
            .and_then(|u| self.actor_of(u))
            .map(|(uid, _)| uid);
        let (true, Some(user), Some(uid)) = (verified, user, uid) else {
            return refuse(self, "authentication failed");
        };
        if let Some(old) = self.feed_conns.insert(client_id.clone(), conn)
            && old != conn
        {
            self.feed_sessions.remove(&old);
            self.close_conn(now, old, CloseReason::Local(FEED_REPLACED.into()));
        }
        self.feed_sessions.insert(conn, client_id);
        self.become_user(conn, uid);
        self.send_body(
            conn,
            Body::FeedLoginResponse(pb::FeedLoginResponse {
                request_id: r.request_id,
                ok: true,
                user,
                error: String::new(),
            }),
        );
    }

    fn feed_inbox(&mut self, now: Instant, conn: ConnId, r: pb::FeedInboxRequest) {
        let Some(client_id) = self.feed_sessions.get(&conn).cloned() else {
            return self.control_error(
                conn,
                r.request_id,
                Code::Access,
                "INBOX operations need a logged-in feed client".into(),
            );
        };
        let last = self
            .feed_clients
            .get(&client_id)
            .map_or(0, |c| c.last_sequence);
        if r.sequence != last.wrapping_add(1) {
            return self.control_error(
                conn,
                r.request_id,
                Code::Conflict,
                format!("sequence {} does not follow {last}", r.sequence),
            );
        }
        // One control request (or a cancel); not the session's own messages.
        let mut op = r.operation.and_then(|m| m.message);
        let allowed = match op.as_mut() {
            Some(Body::Cancel(_)) => true,
            Some(
                Body::LoginRequest(_)
                | Body::RenewSessionRequest(_)
                | Body::LogoutRequest(_)
                | Body::FeedLookupRequest(_)
                | Body::FeedLoginRequest(_)
                | Body::FeedInboxRequest(_),
            ) => false,
            Some(b) => crate::link::msg::request_id_mut(b).is_some(),
            None => false,
        };
        if let Some(c) = self.feed_clients.get_mut(&client_id) {
            c.last_sequence = r.sequence;
        }
        let seq = Change::FeedSequence {
            client_id,
            sequence: r.sequence,
        };
        let Some(op) = op.filter(|_| allowed) else {
            // Refused, but the sequence is used: the client's next message follows it.
            self.out.push_back(HubAction::Persist(seq));
            return self.control_error(
                conn,
                r.request_id,
                Code::Invalid,
                "an INBOX operation must be one control request".into(),
            );
        };
        let mark = self.out.len();
        self.session_message(now, conn, op);
        // The operation's first change carries the sequence: one transaction, so that after a
        // crash either both are stored or neither (then the client sends it again).
        let first = self
            .out
            .iter()
            .skip(mark)
            .position(|a| matches!(a, HubAction::Persist(_)));
        match first {
            Some(i) => {
                if let Some(HubAction::Persist(c)) = self.out.get_mut(mark + i) {
                    let op_change = std::mem::replace(c, Change::Batch(vec![]));
                    *c = Change::Batch(vec![op_change, seq]);
                }
            }
            None => self.out.insert(mark, HubAction::Persist(seq)),
        }
    }

    /// Forgets what a closing connection held of the feed.
    pub(crate) fn feed_forget(&mut self, conn: ConnId) {
        self.feed_challenges.remove(&conn);
        if let Some(client) = self.feed_sessions.remove(&conn)
            && self.feed_conns.get(&client) == Some(&conn)
        {
            self.feed_conns.remove(&client);
        }
    }
}

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;
