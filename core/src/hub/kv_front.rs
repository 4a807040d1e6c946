//! The KV control front in the hub: each [`KvConn`] request runs through the domain operations
//! (and so through the one authorisation function), acting as the uid the request names. On a
//! front that requires signatures, the request must carry a fresh HMAC tag made with that
//! user's control key.

use std::time::Instant;

use super::domain::Actor;
use super::{Conn, ConnEntry, ConnId, Hub, HubAction, HubEvent, PeerInfo};
use crate::kv::codec::verify_tag;
use crate::kv::{KvConfig, KvConn, KvEvent, KvReply, KvRequest, Signed};
use crate::machine::{Action, CloseReason};
use crate::perm::Permissions;

/// How far a signed request's nonce (Unix ms) may be from the hub's clock.
const NONCE_WINDOW_MS: i64 = 5 * 60 * 1000;

impl Hub {
    /// A connection on the KV control port was accepted.
    pub fn accept_kv(&mut self, now: Instant, conn: ConnId, peer: PeerInfo, cfg: KvConfig) {
        self.last_now = self.last_now.max(now);
        let kv = KvConn::new(now, cfg);
        self.conns.insert(
            conn,
            ConnEntry {
                peer,
                conn: Conn::Kv(Box::new(kv)),
                timer: None,
            },
        );
        self.pump_kv(now, conn);
        self.reindex(conn);
    }

    pub(crate) fn kv_input(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        if let Some(Conn::Kv(kv)) = self.conns.get_mut(&conn).map(|e| &mut e.conn) {
            kv.handle_input(now, data);
        }
        self.pump_kv(now, conn);
    }

    pub(crate) fn kv_timeout(&mut self, now: Instant, conn: ConnId) {
        if let Some(Conn::Kv(kv)) = self.conns.get_mut(&conn).map(|e| &mut e.conn) {
            kv.handle_timeout(now);
        }
        self.pump_kv(now, conn);
    }

    fn pump_kv(&mut self, now: Instant, conn: ConnId) {
        loop {
            let Some(Conn::Kv(kv)) = self.conns.get_mut(&conn).map(|e| &mut e.conn) else {
                return;
            };
            let Some(action) = kv.poll_action() else {
                return;
            };
            match action {
                Action::Send(bytes) => self.out.push_back(HubAction::Send { conn, bytes }),
                Action::Timer(_) => {}
                Action::Close(reason) => {
                    if !matches!(reason, CloseReason::Bye(_)) {
                        self.out
                            .push_back(HubAction::Event(HubEvent::ConnectionFailed {
                                conn,
                                reason: reason.clone(),
                            }));
                    }
                    self.out.push_back(HubAction::Close { conn, reason });
                    self.forget(now, conn, "KV connection closed".into());
                    return;
                }
                Action::Event(KvEvent::Request { request, signature }) => {
                    let reply = self.kv_execute(now, request, signature);
                    if let Some(Conn::Kv(kv)) = self.conns.get_mut(&conn).map(|e| &mut e.conn) {
                        let _ = kv.reply(&reply);
                    }
                }
            }
        }
    }

    fn kv_execute(
        &mut self,
        now: Instant,
        request: KvRequest,
        signature: Option<Signed>,
    ) -> KvReply {
        let acting = request.actor();
        if let (Some(uid), Some(sig)) = (acting, signature.as_ref())
            && !self.kv_signature_ok(now, uid, sig)
        {
            tracing::info!(
                uid,
                ?request,
                "KV request with a missing, stale or bad signature refused"
            );
            return KvReply::Err(4);
        }
        let (name, perms) = match acting {
            Some(uid) => self.kv_actor(uid),
            None => (String::new(), Permissions::NONE),
        };
        let actor = |uid: u64| Actor {
            name: &name,
            uid,
            perms,
        };
        let result = match request {
            KvRequest::Create { uid } => self.create_channel(actor(uid)),
            KvRequest::Delete { uid, chid } => self.delete_channel(actor(uid), chid),
            KvRequest::Join { uid, juid, chid } => self
                .join_channel(actor(uid), juid, chid, false)
                .map(|(p, _)| u64::from(p)),
            KvRequest::Leave { uid, luid, chid } => self.leave_channel(actor(uid), luid, chid),
            KvRequest::Register { auid, perm } => {
                let a = if auid == 0 {
                    Actor {
                        name: "",
                        uid: 0,
                        perms: Permissions::NONE,
                    }
                } else {
                    actor(auid)
                };
                self.register_user(a, None, Permissions(perm))
            }
            KvRequest::Unregister { auid, uid } => self.unregister_user(actor(auid), uid),
            KvRequest::GetPort { chid } => self.channel_port(chid).map(u64::from),
            KvRequest::GetChannels => return KvReply::Channels(self.channel_ids()),
        };
        match result {
            Ok(v) => KvReply::Ok(v),
            Err(e) => {
                tracing::debug!(?request, error = %e, "KV request refused");
                KvReply::Err(e.kv_code())
            }
        }
    }

    fn kv_signature_ok(&mut self, now: Instant, uid: u64, sig: &Signed) -> bool {
        // Open registration (auid 0) has no user and no key: the tag is made with an empty key.
        let key = if uid == 0 {
            Vec::new()
        } else {
            match self.control_key(uid).and_then(|k| hex::decode(k).ok()) {
                Some(k) if !k.is_empty() => k,
                _ => return false,
            }
        };
        if !verify_tag(&key, &sig.covered, &sig.tag) {
            return false;
        }
        let wall = self.unix_ms(now);
        let nonce = sig.nonce as i64;
        if (nonce - wall).abs() > NONCE_WINDOW_MS {
            return false;
        }
        let last = self.kv_nonces.entry(uid).or_insert(0);
        if sig.nonce <= *last {
            return false; // replayed
        }
        *last = sig.nonce;
        true
    }
}
