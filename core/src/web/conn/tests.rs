//! A socket-free pair: a [`WebConn`] in front of a real [`Hub`], on a virtual clock. JSON-RPC
//! conformance, login and cookies, every call checked by the hub, limits and deadlines.
#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use super::*;
use crate::auth::totp;
use crate::hub::{ConnId, Hub, HubAction, HubConfig, PeerInfo, StoredState, UserRecord};
use crate::perm::Permissions;
use crate::web::ws::{WsDecoder, WsMessage};

const WALL: i64 = 1_700_000_000_000;
const SECRET: &[u8] = b"12345678901234567890";
const CONN: ConnId = ConnId(1);

pub(super) struct Pair {
    pub(super) hub: Hub,
    pub(super) web: WebConn,
    pub(super) now: Instant,
    pub(super) base: Instant,
    /// Bytes the client received.
    pub(super) client: Vec<u8>,
    pub(super) closed: bool,
    pub(super) hub_closed: bool,
}

fn user(uid: u64, name: &str, perms: Permissions) -> UserRecord {
    UserRecord {
        uid,
        name: name.into(),
        permissions: perms.0,
        password_hash: "$argon2id$stand-in".into(),
        totp_secret: hex::encode(SECRET),
        ..UserRecord::default()
    }
}

/// A hub with an admin, a user without permissions and an agent.
pub(super) fn default_hub(now: Instant) -> Hub {
    let mut hub = Hub::new(HubConfig::default(), 1, now, WALL);
    hub.load(
        StoredState {
            users: vec![
                user(1, "admin", Permissions::ADMIN),
                user(2, "carol", Permissions::NONE),
            ],
            ..StoredState::default()
        },
        now,
    );
    hub.register_agent("a1".into(), "$argon2id$x".into(), vec![]);
    hub
}

impl Pair {
    pub(super) fn new(hub: Option<Hub>) -> Pair {
        let now = Instant::now();
        let hub = hub.unwrap_or_else(|| default_hub(now));
        Pair::connect(hub, now, now)
    }

    pub(super) fn connect(mut hub: Hub, base: Instant, now: Instant) -> Pair {
        hub.accept(
            now,
            CONN,
            PeerInfo::web("10.0.0.9:4000".parse().expect("addr")),
        );
        Pair {
            hub,
            web: WebConn::new(now, WebConfig::default()),
            now,
            base,
            client: vec![],
            closed: false,
            hub_closed: false,
        }
    }

    /// Moves bytes between the two machines until both are quiet; passwords: "right".
    pub(super) fn pump(&mut self) {
        for _ in 0..16 {
            let mut moved = false;
            while let Some(o) = self.web.poll_output() {
                moved = true;
                match o {
                    WebOutput::Socket(b) => self.client.extend_from_slice(&b),
                    WebOutput::Hub(b) => self.hub.handle_input(self.now, CONN, &b),
                    WebOutput::Close => {
                        self.closed = true;
                        self.hub.handle_closed(self.now, CONN);
                    }
                }
            }
            while let Some(a) = self.hub.poll_action() {
                moved = true;
                match a {
                    HubAction::Send { conn, bytes } if conn == CONN => {
                        self.web.handle_hub(self.now, &bytes)
                    }
                    HubAction::Close { conn, reason } if conn == CONN => {
                        self.hub_closed = true;
                        self.web.handle_hub_closed(&reason.to_string());
                    }
                    HubAction::VerifySecret {
                        ticket,
                        secret_hash,
                        secret,
                    } => self.hub.handle_verified(
                        self.now,
                        ticket,
                        secret_hash.is_some() && secret == "right",
                    ),
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
    }

    pub(super) fn send(&mut self, bytes: &[u8]) {
        self.web.handle_socket(self.now, bytes);
        self.pump();
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.web.handle_timeout(self.now);
        self.hub.handle_timeout(self.now);
        self.pump();
    }

    pub(super) fn take_client(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.client)
    }

    pub(super) fn code(&self) -> u32 {
        let secs = (WALL + (self.now - self.base).as_millis() as i64) / 1000;
        totp::code_at(SECRET, secs as u64)
    }

    /// POSTs `body` to /rpc; returns the status line, headers and the body of the response.
    pub(super) fn post(&mut self, body: &str, extra: &str) -> (u16, String, String) {
        let req = format!(
            "POST /rpc HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(req.as_bytes());
        let got = String::from_utf8(self.take_client()).expect("utf-8");
        parse_response(&got)
    }

    pub(super) fn upgrade(&mut self, path: &str, extra: &str) -> String {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        self.send(req.as_bytes());
        String::from_utf8(self.take_client()).expect("utf-8")
    }

    /// Sends a text frame and returns the text frames that came back.
    pub(super) fn ws_call(&mut self, text: &str) -> Vec<Value> {
        self.send(&client_frame(0x81, text.as_bytes()));
        self.ws_texts()
    }

    pub(super) fn ws_texts(&mut self) -> Vec<Value> {
        server_messages(&self.take_client())
            .into_iter()
            .filter_map(|m| match m {
                WsMessage::Text(t) => Some(serde_json::from_str(&t).expect("json")),
                _ => None,
            })
            .collect()
    }
}

fn parse_response(got: &str) -> (u16, String, String) {
    let (head, body) = got.split_once("\r\n\r\n").expect("a response");
    let code = head[9..12].parse().expect("status");
    (code, head.to_owned(), body.to_owned())
}

/// A masked client frame.
pub(super) fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    crate::web::ws::encode_masked_frame(first, payload, [9, 8, 7, 6], &mut out);
    out
}

/// Server frames are unmasked: decode them by masking them with zeros.
pub(super) fn server_messages(bytes: &[u8]) -> Vec<WsMessage> {
    let mut masked = vec![];
    let mut rest = bytes;
    while rest.len() >= 2 {
        let (len, at) = match rest[1] & 0x7f {
            126 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&rest[2..10]);
                (u64::from_be_bytes(l) as usize, 10)
            }
            n => (n as usize, 2),
        };
        masked.push(rest[0]);
        masked.push(rest[1] | 0x80);
        masked.extend_from_slice(&rest[2..at]);
        masked.extend_from_slice(&[0, 0, 0, 0]);
        masked.extend_from_slice(&rest[at..at + len]);
        rest = &rest[at + len..];
    }
    let mut d = WsDecoder::new(64 << 20, 64 << 20);
    d.push(&masked);
    let mut out = vec![];
    while let Ok(Some(m)) = d.next_message() {
        out.push(m);
    }
    out
}

pub(super) fn login_call(p: &Pair, id: u64, user: &str, password: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "LoginRequest",
        "params": {"username": user, "password": password, "totp": p.code()}})
    .to_string()
}

#[test]
fn the_upgrade_answers_with_the_accept_key() {
    let mut p = Pair::new(None);
    let resp = p.upgrade("/rpc", "");
    assert!(
        resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{resp}"
    );
    assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    // Wrong version: 426 naming the one supported.
    let mut p = Pair::new(None);
    p.send(b"GET /rpc HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n");
    let got = String::from_utf8(p.take_client()).expect("utf-8");
    assert!(got.starts_with("HTTP/1.1 426 ") && got.contains("Sec-WebSocket-Version: 13"));
    assert!(p.closed);
}

#[test]
fn json_rpc_conformance_over_websocket() {
    let mut p = Pair::new(None);
    p.upgrade("/rpc", "");
    let code = |v: &Value| v["error"]["code"].as_i64();
    let got = p.ws_call("{not json");
    assert_eq!((code(&got[0]), &got[0]["id"]), (Some(-32700), &Value::Null));
    let got = p.ws_call(r#"{"jsonrpc":"2.0","id":1}"#);
    assert_eq!(code(&got[0]), Some(-32600));
    let got = p.ws_call(r#"{"jsonrpc":"2.0","id":"x","method":"NoSuchRequest"}"#);
    assert_eq!((code(&got[0]), &got[0]["id"]), (Some(-32601), &json!("x")));
    let got = p.ws_call(
        r#"{"jsonrpc":"2.0","id":2,"method":"ListAgentsRequest","params":{"limit":"many"}}"#,
    );
    assert_eq!(code(&got[0]), Some(-32602));
    // Not logged in yet: the hub refuses (ACCESS), it is not the translator's decision.
    let got = p.ws_call(r#"{"jsonrpc":"2.0","id":3,"method":"ListAgentsRequest"}"#);
    assert_eq!(code(&got[0]), Some(-32003), "{got:?}");
    assert!(
        got[0]["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("log in first")
    );
    // Notifications get no answer; an empty batch is invalid; a batch answers each call.
    assert!(
        p.ws_call(r#"{"jsonrpc":"2.0","method":"ListAgentsRequest"}"#)
            .is_empty()
    );
    assert_eq!(code(&p.ws_call("[]")[0]), Some(-32600));
    let login = login_call(&p, 10, "admin", "right");
    let got = p.ws_call(&login);
    assert_eq!(got[0]["id"], 10);
    assert_eq!(got[0]["result"]["result"], "OK");
    assert_eq!(got[0]["result"]["cookie"].as_str().map(str::len), Some(64));
    let batch = r#"[{"jsonrpc":"2.0","id":11,"method":"ListAgentsRequest"}, {"jsonrpc":"2.0","method":"ListAgentsRequest"}, 5, {"jsonrpc":"2.0","id":12,"method":"Nope"}, {"jsonrpc":"2.0","id":13,"method":"ListUsersRequest"}]"#;
    let got = p.ws_call(batch);
    let Value::Array(answers) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(
        answers.len(),
        4,
        "no answer for the notification: {answers:?}"
    );
    assert_eq!(answers[0]["id"], 11);
    assert_eq!(answers[0]["result"]["agents"][0]["agentId"], "a1");
    assert_eq!(code(&answers[1]), Some(-32600));
    assert_eq!(code(&answers[2]), Some(-32601));
    assert_eq!(answers[3]["id"], 13);
    assert!(answers[3]["result"]["users"].is_array(), "{answers:?}");
}

#[test]
fn results_match_the_native_answers() {
    let mut p = Pair::new(None);
    p.upgrade("/rpc", "");
    let login = login_call(&p, 1, "admin", "right");
    p.ws_call(&login);
    let got = p.ws_call(r#"{"jsonrpc":"2.0","id":2,"method":"CreateChannelRequest","params":{}}"#);
    let chid = got[0]["result"]["chid"]
        .as_str()
        .expect("chid (uint64 as a string)")
        .to_owned();
    let got = p.ws_call(r#"{"jsonrpc":"2.0","id":3,"method":"ListChannelsRequest"}"#);
    assert_eq!(got[0]["result"]["channels"][0]["chid"], json!(chid));
    // Errors of the hub keep their code by name.
    let got = p.ws_call(
        r#"{"jsonrpc":"2.0","id":4,"method":"DeleteChannelRequest","params":{"chid":"999"}}"#,
    );
    assert_eq!(got[0]["error"]["code"], -32002);
    assert_eq!(got[0]["error"]["data"]["code"], "NOT_FOUND");
    // The event feed: the channel's creation, as a notification with its event parsed.
    let got = p.ws_call(
        r#"{"jsonrpc":"2.0","id":5,"method":"SubscribeEventsRequest","params":{"fromOrder":0}}"#,
    );
    assert_eq!(got[0]["id"], 5);
    let notice = got
        .iter()
        .find(|v| v["method"] == "EventNotice" && v["params"]["kind"] == "ChannelCreated")
        .expect("ChannelCreated notice");
    assert_eq!(notice["params"]["event"]["chid"].to_string(), chid);
}

#[test]
fn a_user_without_permission_is_refused_by_the_hub() {
    let mut p = Pair::new(None);
    p.upgrade("/rpc", "");
    let login = login_call(&p, 1, "carol", "right");
    assert_eq!(p.ws_call(&login)[0]["result"]["result"], "OK");
    let got = p.ws_call(r#"{"jsonrpc":"2.0","id":2,"method":"RunCommandRequest","params":{"agentId":"a1","operation":"echo.Echo"}}"#);
    assert_eq!(got[0]["error"]["data"]["code"], "ACCESS");
    let got = p.ws_call(r#"{"jsonrpc":"2.0","id":3,"method":"LoginRequest","params":{"username":"carol","password":"wrong","totp":1}}"#);
    assert_eq!(got[0]["result"]["result"], "INVALID_PASSWORD");
}

#[test]
fn http_post_logs_in_and_the_cookie_works_as_header_and_param() {
    let mut p = Pair::new(None);
    let (code, _, body) = p.post(
        r#"{"jsonrpc":"2.0","id":1,"method":"ListAgentsRequest"}"#,
        "",
    );
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["data"]["code"], "ACCESS");
    let login = login_call(&p, 2, "admin", "right");
    let (code, head, body) = p.post(&login, "");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    let cookie = v["result"]["cookie"].as_str().expect("cookie").to_owned();
    assert!(
        head.contains(&format!("Set-Cookie: switchboard_session={cookie}; ")),
        "{head}"
    );
    assert!(head.contains("HttpOnly"));
    // A new connection: the cookie header makes its session the user's.
    let hub = std::mem::replace(&mut p.hub, Hub::new(HubConfig::default(), 2, p.now, WALL));
    let mut q = Pair::connect(hub, p.base, p.now);
    let (_, _, body) = q.post(
        r#"{"jsonrpc":"2.0","id":3,"method":"ListAgentsRequest"}"#,
        &format!("Cookie: theme=dark; switchboard_session={cookie}\r\n"),
    );
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["result"]["agents"][0]["agentId"], "a1", "{v}");
    // And again, the cookie as a param.
    let hub = std::mem::replace(&mut q.hub, Hub::new(HubConfig::default(), 3, p.now, WALL));
    let mut r = Pair::connect(hub, p.base, p.now);
    let call =
        json!({"jsonrpc":"2.0","id":4,"method":"ListAgentsRequest","params":{"cookie": cookie}});
    let (_, _, body) = r.post(&call.to_string(), "");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["result"]["agents"][0]["agentId"], "a1", "{v}");
    // A notification-only POST: 204.
    let (code, _, _) = r.post(r#"{"jsonrpc":"2.0","method":"ListAgentsRequest"}"#, "");
    assert_eq!(code, 204);
    assert!(!r.closed, "keep-alive");
}

#[test]
fn http_errors_and_limits() {
    let mut p = Pair::new(None);
    p.send(b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(
        String::from_utf8(p.take_client())
            .expect("utf-8")
            .starts_with("HTTP/1.1 404 ")
    );
    assert!(p.closed);
    let mut p = Pair::new(None);
    p.send(b"POST /rpc HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\n\r\n");
    assert!(
        String::from_utf8(p.take_client())
            .expect("utf-8")
            .starts_with("HTTP/1.1 413 ")
    );
    let mut p = Pair::new(None);
    p.send(
        b"POST /rpc HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert!(
        String::from_utf8(p.take_client())
            .expect("utf-8")
            .starts_with("HTTP/1.1 400 ")
    );
    let mut p = Pair::new(None);
    p.send(&vec![b'a'; 9000]);
    assert!(
        String::from_utf8(p.take_client())
            .expect("utf-8")
            .starts_with("HTTP/1.1 431 ")
    );
    // The console is served at /.
    let mut p = Pair::new(None);
    p.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let got = String::from_utf8(p.take_client()).expect("utf-8");
    assert!(got.starts_with("HTTP/1.1 200 ") && got.contains("<title>Switchboard console</title>"));
    assert!(got.contains("Content-Security-Policy: "));
}

#[test]
fn a_slow_request_is_answered_408_and_an_idle_one_closed() {
    let mut p = Pair::new(None);
    p.send(b"GET /rpc HTTP/1.1\r\nHost: h\r\n");
    p.advance(Duration::from_secs(9));
    assert!(!p.closed);
    p.advance(Duration::from_secs(2));
    assert!(
        String::from_utf8(p.take_client())
            .expect("utf-8")
            .starts_with("HTTP/1.1 408 ")
    );
    assert!(p.closed);
    // Nothing at all: closed without a word once the deadline passes.
    let mut p = Pair::new(None);
    p.advance(Duration::from_secs(11));
    assert!(p.closed && p.take_client().is_empty());
}

#[test]
fn oversized_frames_close_with_1009_and_pings_are_answered() {
    let mut p = Pair::new(None);
    p.upgrade("/rpc", "");
    p.send(&client_frame(0x89, b"hi"));
    assert_eq!(
        server_messages(&p.take_client()),
        vec![WsMessage::Pong(b"hi".to_vec())]
    );
    p.send(&client_frame(0x81, &vec![b' '; (1 << 20) + 1]));
    let got = server_messages(&p.take_client());
    assert!(
        matches!(&got[..], [WsMessage::Close(Some((1009, _)))]),
        "{got:?}"
    );
    assert!(p.closed);
    // A binary frame on /rpc: 1003.
    let mut p = Pair::new(None);
    p.upgrade("/rpc", "");
    p.send(&client_frame(0x82, b"\x00"));
    let got = server_messages(&p.take_client());
    assert!(
        matches!(&got[..], [WsMessage::Close(Some((1003, _)))]),
        "{got:?}"
    );
}

#[test]
fn a_silent_websocket_client_is_pinged_then_closed() {
    let mut p = Pair::new(None);
    p.upgrade("/rpc", "");
    p.advance(Duration::from_secs(31));
    let got = server_messages(&p.take_client());
    assert!(
        got.iter().any(|m| matches!(m, WsMessage::Ping(_))),
        "{got:?}"
    );
    assert!(!p.closed);
    p.advance(Duration::from_secs(31));
    let got = server_messages(&p.take_client());
    assert!(
        got.iter()
            .any(|m| matches!(m, WsMessage::Close(Some((1001, _))))),
        "{got:?}"
    );
    assert!(p.closed);
}

#[test]
fn binary_frames_carry_native_messages_on_stream() {
    use crate::link::msg;
    use prost::Message as _;
    let mut p = Pair::new(None);
    p.upgrade("/stream", "");
    let native = |body: Body| msg::wrap(body).encode_to_vec();
    p.send(&client_frame(
        0x82,
        &native(Body::SessionHello(pb::SessionHello { client: "t".into() })),
    ));
    let login = Body::LoginRequest(pb::LoginRequest {
        request_id: 7,
        username: "admin".into(),
        password: "right".into(),
        totp: p.code(),
    });
    p.send(&client_frame(0x82, &native(login)));
    let got: Vec<Body> = server_messages(&p.take_client())
        .into_iter()
        .filter_map(|m| match m {
            WsMessage::Binary(b) => pb::Message::decode(&b[..]).ok().and_then(|m| m.message),
            _ => None,
        })
        .collect();
    assert!(
        matches!(&got[0], Body::SessionWelcome(w) if w.user.is_empty()),
        "{got:?}"
    );
    assert!(
        matches!(&got[1], Body::LoginResponse(r) if r.request_id == 7 && r.result == 0),
        "{got:?}"
    );
    // Text on /stream: 1003.
    p.send(&client_frame(0x81, b"{}"));
    let got = server_messages(&p.take_client());
    assert!(
        matches!(&got[..], [WsMessage::Close(Some((1003, _)))]),
        "{got:?}"
    );
}

#[test]
fn the_end_of_the_hub_session_fails_what_is_pending() {
    let mut p = Pair::new(None);
    p.upgrade("/rpc", "");
    let login = login_call(&p, 1, "admin", "right");
    p.ws_call(&login);
    p.hub.shutdown(p.now);
    p.pump();
    let got = server_messages(&p.take_client());
    assert!(
        got.iter()
            .any(|m| matches!(m, WsMessage::Close(Some((1011, _))))),
        "{got:?}"
    );
}
