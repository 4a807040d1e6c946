//! User logins over the native protocol: username + password (argon2id, verified off the hub
//! loop) + TOTP, answered with Sandpolis' results; 15-minute session cookies that the client
//! renews while active; a failed-login limit per user name and per address.
//!
//! Every answer to a LoginRequest waits for one password verification (a dummy one for an
//! unknown user), so timing does not tell which check failed.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand_core::RngCore;
use switchboard_proto as pb;
use switchboard_proto::control_error::Code;
use switchboard_proto::login_response::Result as LoginResult;
use switchboard_proto::message::Message as Body;

use super::{Change, Conn, ConnId, Hub, HubAction, HubEvent, VerifyTicket};
use crate::auth::totp;
use crate::perm::Permissions;

/// A cookie lives this long after issue or last renewal.
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// At most this many failed logins per user name, and per address, within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Live cookies per user; the oldest goes first.
const MAX_COOKIES_PER_USER: usize = 16;

pub(crate) struct PendingLogin {
    conn: ConnId,
    request_id: u64,
    uid: Option<u64>,
    totp: u32,
    username: String,
    ip: IpAddr,
}

pub(crate) struct Cookie {
    uid: u64,
    expires: Instant,
}

impl Hub {
    /// Login messages of a session; gives back what it does not handle.
    pub(crate) fn session_login(
        &mut self,
        now: Instant,
        conn: ConnId,
        acting_uid: u64,
        perms: Permissions,
        body: Body,
    ) -> Result<(), Body> {
        match body {
            Body::LoginRequest(r) => self.login(now, conn, r),
            Body::RenewSessionRequest(r) => {
                self.expire_cookies(now);
                let resp = match self.cookies.get_mut(&r.cookie) {
                    Some(c) => {
                        c.expires = now + COOKIE_LIFETIME;
                        let uid = c.uid;
                        self.become_user(conn, uid);
                        let user = self
                            .domain
                            .users
                            .get(&uid)
                            .map(|u| u.name.clone())
                            .unwrap_or_default();
                        pb::RenewSessionResponse {
                            request_id: r.request_id,
                            ok: true,
                            expires_unix_ms: self.unix_ms(now + COOKIE_LIFETIME),
                            user,
                        }
                    }
                    None => pb::RenewSessionResponse {
                        request_id: r.request_id,
                        ok: false,
                        ..Default::default()
                    },
                };
                self.send_body(conn, Body::RenewSessionResponse(resp));
            }
            Body::LogoutRequest(r) => {
                self.cookies.remove(&r.cookie);
                // A web session goes back to being a guest; a certificate's keeps its user.
                let web = self.conns.get(&conn).is_some_and(|e| e.peer.web);
                if let (true, Some(Conn::Session(s))) =
                    (web, self.conns.get_mut(&conn).map(|e| &mut e.conn))
                {
                    s.user.clear();
                    s.uid = 0;
                    s.perms = Permissions::NONE;
                    s.guest = true;
                }
                self.subs.remove(&conn);
                self.send_body(
                    conn,
                    Body::LogoutResponse(pb::LogoutResponse {
                        request_id: r.request_id,
                    }),
                );
            }
            Body::SetUserCredentialsRequest(r) => {
                let allowed = r.uid == acting_uid || perms.contains(Permissions::REGISTER_USER);
                let error = if !allowed {
                    Some((
                        Code::Access,
                        "setting another user's credentials needs register_user".to_string(),
                    ))
                } else if !r.password_hash.starts_with("$argon2") {
                    Some((
                        Code::Invalid,
                        "password_hash must be an argon2 PHC string".into(),
                    ))
                } else if r.totp_secret.len() < 10 {
                    Some((
                        Code::Invalid,
                        "the TOTP secret must have at least 80 bits".into(),
                    ))
                } else if !self.domain.users.contains_key(&r.uid) {
                    Some((Code::NotFound, format!("no user {}", r.uid)))
                } else {
                    None
                };
                if let Some((code, message)) = error {
                    self.send_body(
                        conn,
                        Body::ControlError(pb::ControlError {
                            request_id: r.request_id,
                            code: code as i32,
                            message,
                        }),
                    );
                    return Ok(());
                }
                if let Some(u) = self.domain.users.get_mut(&r.uid) {
                    u.password_hash = r.password_hash;
                    u.totp_secret = hex::encode(&r.totp_secret);
                    u.expires_unix_ms = r.expires_unix_ms;
                    let rec = u.clone();
                    self.out
                        .push_back(HubAction::Persist(Change::UserRegistered(rec)));
                    self.out
                        .push_back(HubAction::Event(HubEvent::UserCredentialsSet {
                            uid: r.uid,
                        }));
                }
                self.send_body(
                    conn,
                    Body::SetUserCredentialsResponse(pb::SetUserCredentialsResponse {
                        request_id: r.request_id,
                    }),
                );
            }
            other => return Err(other),
        }
        Ok(())
    }

    fn login(&mut self, now: Instant, conn: ConnId, r: pb::LoginRequest) {
        let Some(ip) = self.conns.get(&conn).map(|e| e.peer.addr.ip()) else {
            return;
        };
        if self.rate_limited(now, &r.username, ip) {
            self.out.push_back(HubAction::Event(HubEvent::LoginFailed {
                user: r.username.clone(),
                reason: "rate limited".into(),
            }));
            let resp = pb::LoginResponse {
                request_id: r.request_id,
                result: LoginResult::Failed as i32,
                ..Default::default()
            };
            self.send_body(conn, Body::LoginResponse(resp));
            return;
        }
        let user = self
            .domain
            .names
            .get(&r.username)
            .and_then(|uid| self.domain.users.get(uid));
        let uid = user.map(|u| u.uid);
        let hash = user
            .map(|u| u.password_hash.clone())
            .filter(|h| !h.is_empty());
        let ticket = VerifyTicket(self.next_ticket);
        self.next_ticket += 1;
        self.login_verifications.insert(
            ticket,
            PendingLogin {
                conn,
                request_id: r.request_id,
                uid,
                totp: r.totp,
                username: r.username,
                ip,
            },
        );
        // No user or no password: the runtime verifies against a dummy hash (same time).
        self.out.push_back(HubAction::VerifySecret {
            ticket,
            secret_hash: hash,
            secret: r.password,
        });
    }

    /// The password verification of a login finished. Returns false if the ticket was not a
    /// login's.
    pub(crate) fn login_verified(&mut self, now: Instant, ticket: VerifyTicket, ok: bool) -> bool {
        let Some(p) = self.login_verifications.remove(&ticket) else {
            return false;
        };
        let wall = self.unix_ms(now);
        let result = match p.uid.and_then(|uid| self.domain.users.get(&uid)) {
            None => Err(LoginResult::InvalidUsername),
            Some(_) if !ok => Err(LoginResult::InvalidPassword),
            Some(u) if u.expires_unix_ms != 0 && wall >= u.expires_unix_ms => {
                Err(LoginResult::ExpiredUser)
            }
            Some(u) => {
                let secret = hex::decode(&u.totp_secret).unwrap_or_default();
                let last = self.totp_last_step.get(&u.uid).copied();
                match totp::verify(&secret, p.totp, (wall / 1000) as u64, last) {
                    Ok(step) if !secret.is_empty() => Ok((u.uid, step)),
                    _ => Err(LoginResult::InvalidToken),
                }
            }
        };
        let resp = match result {
            Ok((uid, step)) => {
                self.totp_last_step.insert(uid, step);
                let cookie = self.new_cookie(now, uid);
                self.become_user(p.conn, uid);
                self.out.push_back(HubAction::Event(HubEvent::LoggedIn {
                    user: p.username.clone(),
                    conn: p.conn,
                }));
                pb::LoginResponse {
                    request_id: p.request_id,
                    result: LoginResult::Ok as i32,
                    cookie,
                    expires_unix_ms: self.unix_ms(now + COOKIE_LIFETIME),
                }
            }
            Err(why) => {
                self.record_failure(now, &p.username, p.ip);
                self.out.push_back(HubAction::Event(HubEvent::LoginFailed {
                    user: p.username.clone(),
                    reason: why.as_str_name().into(),
                }));
                pb::LoginResponse {
                    request_id: p.request_id,
                    result: why as i32,
                    ..Default::default()
                }
            }
        };
        if self.conns.contains_key(&p.conn) {
            self.send_body(p.conn, Body::LoginResponse(resp));
        }
        true
    }

    fn new_cookie(&mut self, now: Instant, uid: u64) -> String {
        self.expire_cookies(now);
        let mine: Vec<(Instant, String)> = self
            .cookies
            .iter()
            .filter(|(_, c)| c.uid == uid)
            .map(|(k, c)| (c.expires, k.clone()))
            .collect();
        if mine.len() >= MAX_COOKIES_PER_USER
            && let Some((_, oldest)) = mine.into_iter().min()
        {
            self.cookies.remove(&oldest);
        }
        let mut raw = [0u8; 32];
        self.rng.fill_bytes(&mut raw);
        let cookie = hex::encode(raw);
        self.cookies.insert(
            cookie.clone(),
            Cookie {
                uid,
                expires: now + COOKIE_LIFETIME,
            },
        );
        cookie
    }

    fn expire_cookies(&mut self, now: Instant) {
        self.cookies.retain(|_, c| c.expires > now);
    }

    /// The session on `conn` acts as `uid` from now on.
    pub(crate) fn become_user(&mut self, conn: ConnId, uid: u64) {
        let Some(u) = self.domain.users.get(&uid) else {
            return;
        };
        let (name, perms) = (u.name.clone(), Permissions(u.permissions));
        if let Some(Conn::Session(s)) = self.conns.get_mut(&conn).map(|e| &mut e.conn) {
            s.user = name;
            s.uid = uid;
            s.perms = perms;
            s.guest = false;
        }
    }

    fn rate_limited(&mut self, now: Instant, user: &str, ip: IpAddr) -> bool {
        let mut limited = false;
        for key in [format!("user:{user}"), format!("ip:{ip}")] {
            if let Some(q) = self.login_failures.get_mut(&key) {
                while q
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) >= FAILURE_WINDOW)
                {
                    q.pop_front();
                }
                limited |= q.len() >= MAX_FAILURES;
            }
        }
        limited
    }

    fn record_failure(&mut self, now: Instant, user: &str, ip: IpAddr) {
        for key in [format!("user:{user}"), format!("ip:{ip}")] {
            let q = self.login_failures.entry(key).or_default();
            q.push_back(now);
            while q.len() > MAX_FAILURES {
                q.pop_front();
            }
        }
        // Bound the table: forget keys whose failures are all old.
        if self.login_failures.len() > 10_000 {
            self.login_failures.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < FAILURE_WINDOW)
            });
        }
    }
}

#[cfg(test)]
#[path = "login_tests.rs"]
mod tests;
