//! Logins on a virtual clock: every Sandpolis result, TOTP replay, rate limits, cookies.
#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::time::{Duration, Instant};

use switchboard_proto as pb;
use switchboard_proto::login_response::Result as LoginResult;
use switchboard_proto::message::Message as Body;

use super::*;
use crate::hub::{ConnId, HubConfig, PeerInfo, StoredState};
use crate::link::LinkConfig;
use crate::machine::Action;
use crate::session::{ClientEvent, ClientSession};

const WALL: i64 = 1_700_000_000_000;
const SECRET: &[u8] = b"12345678901234567890";

struct Rig {
    hub: Hub,
    op: ClientSession,
    now: Instant,
    base: Instant,
    /// Whether the last password check was asked with a stored hash (false: dummy).
    last_check_had_hash: Option<bool>,
    next_rid: u64,
}

impl Rig {
    fn new() -> Rig {
        let now = Instant::now();
        let mut hub = Hub::new(HubConfig::default(), 1, now, WALL);
        hub.load(StoredState::default(), now);
        hub.accept(
            now,
            ConnId(1),
            PeerInfo {
                addr: "10.0.0.1:1".parse().expect("addr"),
                cert_name: Some("admin".into()),
                cert: None,
                web: false,
            },
        );
        let op = ClientSession::new(now, LinkConfig::default(), "t", 2);
        let mut r = Rig {
            hub,
            op,
            now,
            base: now,
            last_check_had_hash: None,
            next_rid: 1,
        };
        r.pump();
        assert!(r.op.is_open());
        r
    }

    /// Moves bytes both ways; answers password checks: the password is "right".
    fn pump(&mut self) -> Vec<Body> {
        let mut got = vec![];
        for _ in 0..4 {
            while let Some(a) = self.op.poll_action() {
                match a {
                    Action::Send(b) => self.hub.handle_input(self.now, ConnId(1), &b),
                    Action::Event(ClientEvent::Message(m)) => got.push(m),
                    _ => {}
                }
            }
            while let Some(a) = self.hub.poll_action() {
                match a {
                    HubAction::Send { bytes, .. } => self.op.handle_input(self.now, &bytes),
                    HubAction::VerifySecret {
                        ticket,
                        secret_hash,
                        secret,
                    } => {
                        self.last_check_had_hash = Some(secret_hash.is_some());
                        self.hub.handle_verified(
                            self.now,
                            ticket,
                            secret_hash.is_some() && secret == "right",
                        );
                    }
                    _ => {}
                }
            }
        }
        got
    }

    fn rid(&mut self) -> u64 {
        self.next_rid += 1;
        self.next_rid
    }

    fn send(&mut self, body: Body) -> Vec<Body> {
        self.op.send_request(body).expect("send");
        self.pump()
    }

    fn wall_secs(&self) -> u64 {
        ((WALL + (self.now - self.base).as_millis() as i64) / 1000) as u64
    }

    fn add_user(&mut self, name: &str, expires_unix_ms: i64) -> u64 {
        let rid = self.rid();
        let got = self.send(Body::RegisterUserRequest(pb::RegisterUserRequest {
            request_id: rid,
            name: name.into(),
            permissions: 64,
        }));
        let Some(Body::RegisterUserResponse(u)) = got.into_iter().next() else {
            panic!("register")
        };
        let rid = self.rid();
        let got = self.send(Body::SetUserCredentialsRequest(
            pb::SetUserCredentialsRequest {
                request_id: rid,
                uid: u.uid,
                password_hash: "$argon2id$stand-in".into(),
                totp_secret: SECRET.to_vec().into(),
                expires_unix_ms,
            },
        ));
        assert!(
            matches!(got.first(), Some(Body::SetUserCredentialsResponse(_))),
            "{got:?}"
        );
        u.uid
    }

    fn login(&mut self, user: &str, password: &str, totp: u32) -> pb::LoginResponse {
        let rid = self.rid();
        self.last_check_had_hash = None;
        let got = self.send(Body::LoginRequest(pb::LoginRequest {
            request_id: rid,
            username: user.into(),
            password: password.into(),
            totp,
        }));
        match got
            .into_iter()
            .find(|m| matches!(m, Body::LoginResponse(_)))
        {
            Some(Body::LoginResponse(r)) => r,
            other => panic!("no login response: {other:?}"),
        }
    }

    fn code(&self) -> u32 {
        totp::code_at(SECRET, self.wall_secs())
    }
}

fn result(r: &pb::LoginResponse) -> LoginResult {
    LoginResult::try_from(r.result).expect("result")
}

#[test]
fn each_sandpolis_result() {
    let mut r = Rig::new();
    r.add_user("alice", 0);
    r.add_user("old", WALL - 1);
    let code = r.code();
    assert_eq!(
        result(&r.login("nobody", "right", code)),
        LoginResult::InvalidUsername
    );
    assert_eq!(
        r.last_check_had_hash,
        Some(false),
        "an unknown user still costs a (dummy) password check"
    );
    assert_eq!(
        result(&r.login("alice", "wrong", code)),
        LoginResult::InvalidPassword
    );
    assert_eq!(r.last_check_had_hash, Some(true));
    assert_eq!(
        result(&r.login("alice", "right", code.wrapping_add(1) % 1_000_000)),
        LoginResult::InvalidToken
    );
    assert_eq!(
        result(&r.login("old", "right", code)),
        LoginResult::ExpiredUser
    );
    let ok = r.login("alice", "right", code);
    assert_eq!(result(&ok), LoginResult::Ok);
    assert_eq!(ok.cookie.len(), 64, "256 random bits, hex");
    assert_eq!(ok.expires_unix_ms, WALL + 15 * 60 * 1000);
    // The same code again is a replay.
    assert_eq!(
        result(&r.login("alice", "right", code)),
        LoginResult::InvalidToken
    );
    // The session now acts as alice (run_command only): registering users is refused.
    let rid = r.rid();
    let got = r.send(Body::RegisterUserRequest(pb::RegisterUserRequest {
        request_id: rid,
        name: "x".into(),
        permissions: 0,
    }));
    assert!(
        matches!(got.first(), Some(Body::ControlError(e)) if e.code == pb::control_error::Code::Access as i32),
        "{got:?}"
    );
}

#[test]
fn failed_logins_are_rate_limited() {
    let mut r = Rig::new();
    r.add_user("bob", 0);
    for _ in 0..MAX_FAILURES {
        assert_eq!(
            result(&r.login("bob", "wrong", 0)),
            LoginResult::InvalidPassword
        );
    }
    let code = r.code();
    assert_eq!(
        result(&r.login("bob", "right", code)),
        LoginResult::Failed,
        "limited"
    );
    assert_eq!(
        r.last_check_had_hash, None,
        "no password check while limited"
    );
    // After the window, the right credentials work again.
    r.now += FAILURE_WINDOW;
    let code = r.code();
    assert_eq!(result(&r.login("bob", "right", code)), LoginResult::Ok);
}

#[test]
fn cookies_expire_after_fifteen_minutes_unless_renewed() {
    let mut r = Rig::new();
    r.add_user("carol", 0);
    let code = r.code();
    let cookie = r.login("carol", "right", code).cookie;
    let renew = |r: &mut Rig, cookie: &str| {
        let rid = r.rid();
        let got = r.send(Body::RenewSessionRequest(pb::RenewSessionRequest {
            request_id: rid,
            cookie: cookie.into(),
        }));
        match got.into_iter().next() {
            Some(Body::RenewSessionResponse(x)) => x,
            other => panic!("{other:?}"),
        }
    };
    // Active: renewed every 10 minutes for an hour.
    for _ in 0..6 {
        r.now += Duration::from_secs(10 * 60);
        let x = renew(&mut r, &cookie);
        assert!(x.ok && x.user == "carol", "{x:?}");
    }
    // Idle for 15 minutes: gone.
    r.now += COOKIE_LIFETIME;
    assert!(!renew(&mut r, &cookie).ok);
    // Logout ends a live cookie at once.
    r.now += Duration::from_secs(60);
    let code = r.code();
    let cookie = r.login("carol", "right", code).cookie;
    let rid = r.rid();
    r.send(Body::LogoutRequest(pb::LogoutRequest {
        request_id: rid,
        cookie: cookie.clone(),
    }));
    assert!(!renew(&mut r, &cookie).ok);
}
