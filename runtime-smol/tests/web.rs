//! The web face over real sockets: ws and wss on one port (tungstenite as the client), POST
//! /rpc, the event feed, and the limits (slow upgrade, oversized frame).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use switchboard_core::auth::totp;
use switchboard_core::hub::{Change, UserRecord};
use switchboard_core::perm::Permissions;
use switchboard_core::web::WebConfig;
use switchboard_proto as pb;
use switchboard_runtime_smol::pki::{Ca, IssuedCert};
use switchboard_runtime_smol::server::{HubServer, Listeners, ServerOptions, WebFront};
use switchboard_runtime_smol::store::SqliteStore;
use switchboard_runtime_smol::{secret, tls};
use tungstenite::Message;

const SECRET: &[u8] = b"web test totp secret";

struct Hub {
    web: SocketAddr,
    ca: Ca,
    stop: Option<async_channel::Sender<()>>,
    runner: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(r) = self.runner.take() {
            let _ = r.join();
        }
    }
}

fn user(uid: u64, name: &str, perms: Permissions) -> UserRecord {
    UserRecord {
        uid,
        name: name.into(),
        permissions: perms.0,
        password_hash: secret::hash_secret("pw", secret::cheap_params()).expect("hash"),
        totp_secret: hex::encode(SECRET),
        ..UserRecord::default()
    }
}

fn start(cfg: WebConfig) -> Hub {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::generate("web test CA").expect("ca");
    let hub: IssuedCert = ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()], 30)
        .expect("hub cert");
    let native_tls = tls::server_config(
        ca.cert_pem().as_bytes(),
        hub.cert_pem.as_bytes(),
        hub.key_pem.as_bytes(),
    )
    .expect("tls");
    let web_tls =
        tls::web_server_config(hub.cert_pem.as_bytes(), hub.key_pem.as_bytes()).expect("web tls");
    let mut store = SqliteStore::open(&dir.path().join("hub.sqlite")).expect("store");
    for u in [
        user(1, "admin", Permissions::ADMIN),
        user(2, "carol", Permissions::NONE),
        user(3, "dave", Permissions::ADMIN),
    ] {
        store.apply(&Change::UserRegistered(u)).expect("user");
    }
    let server = smol::block_on(async {
        let native = async_net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let web = async_net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        HubServer::start_with(
            ServerOptions::new(native_tls, 5),
            store,
            Listeners {
                native,
                kv: None,
                web: Some((
                    web,
                    WebFront {
                        cfg,
                        ..WebFront::new(Some(web_tls))
                    },
                )),
            },
            None,
            None,
        )
        .expect("start")
    });
    let web = server.web_addr.expect("web");
    let (stop, stop_rx) = async_channel::bounded::<()>(1);
    let runner = std::thread::spawn(move || {
        smol::block_on(server.run_until(async move {
            let _ = stop_rx.recv().await;
        }))
    });
    Hub {
        web,
        ca,
        stop: Some(stop),
        runner: Some(runner),
        _dir: dir,
    }
}

fn code() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    totp::code_at(SECRET, secs)
}

type Ws<S> = tungstenite::WebSocket<S>;

thread_local! {
    /// Notifications read while waiting for an answer.
    static NOTES: std::cell::RefCell<Vec<Value>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn call<S: Read + Write>(ws: &mut Ws<S>, id: u64, method: &str, params: Value) -> Value {
    let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::text(req.to_string())).expect("send");
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["id"] == json!(id) {
                    return v;
                }
                NOTES.with(|n| n.borrow_mut().push(v));
            }
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

fn login<S: Read + Write>(ws: &mut Ws<S>, user: &str) -> String {
    let r = call(
        ws,
        1,
        "LoginRequest",
        json!({"username": user, "password": "pw", "totp": code()}),
    );
    assert_eq!(r["result"]["result"], "OK", "{r}");
    r["result"]["cookie"].as_str().expect("cookie").to_owned()
}

fn plain_ws(addr: SocketAddr, path: &str) -> Ws<TcpStream> {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let (ws, resp) = tungstenite::client(format!("ws://{addr}{path}"), tcp).expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws
}

#[test]
fn json_rpc_over_ws_with_the_event_feed() {
    let hub = start(WebConfig::default());
    let mut ws = plain_ws(hub.web, "/rpc");
    let r = call(&mut ws, 7, "ListChannelsRequest", json!({}));
    assert_eq!(
        r["error"]["data"]["code"], "ACCESS",
        "guests only log in: {r}"
    );
    login(&mut ws, "admin");
    let created = call(&mut ws, 2, "CreateChannelRequest", json!({}));
    let chid = created["result"]["chid"].clone();
    assert!(chid.is_string(), "{created}");
    let sub = call(
        &mut ws,
        3,
        "SubscribeEventsRequest",
        json!({"fromOrder": 0}),
    );
    assert!(sub["result"]["lastOrder"].is_string(), "{sub}");
    // The stored events come, then a live one: ChannelDeleted.
    let deleted = call(&mut ws, 4, "DeleteChannelRequest", json!({"chid": chid}));
    assert!(deleted.get("result").is_some(), "{deleted}");
    let mut notes = NOTES.with(|n| std::mem::take(&mut *n.borrow_mut()));
    let kind = |v: &Value| v["params"]["kind"].as_str().unwrap_or_default().to_owned();
    while !notes.iter().any(|v| kind(v) == "ChannelDeleted") {
        if let Message::Text(t) = ws.read().expect("read") {
            notes.push(serde_json::from_str(&t).expect("json"));
        }
    }
    let kinds: Vec<String> = notes
        .iter()
        .filter(|v| v["method"] == "EventNotice")
        .map(kind)
        .collect();
    let orders: Vec<u64> = notes
        .iter()
        .filter_map(|v| v["params"]["order"].as_str()?.parse().ok())
        .collect();
    assert!(orders.windows(2).all(|w| w[0] < w[1]), "{orders:?}");
    assert!(kinds.contains(&"ChannelCreated".to_string()), "{kinds:?}");
    ws.close(None).expect("close");
}

#[test]
fn wss_on_the_same_port_with_the_hub_certificate() {
    let hub = start(WebConfig::default());
    let mut ws = wss(&hub, "/rpc");
    login(&mut ws, "dave");
    let r = call(&mut ws, 2, "ListUsersRequest", json!({}));
    let names: Vec<&str> = r["result"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert!(names.contains(&"carol"), "{r}");
}

fn http(addr: SocketAddr, req: &str) -> String {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    tcp.write_all(req.as_bytes()).expect("write");
    let mut got = String::new();
    let _ = tcp.read_to_string(&mut got);
    got
}

fn post(addr: SocketAddr, body: &str, cookie: Option<&str>) -> (String, Value) {
    let cookie = cookie
        .map(|c| format!("Cookie: switchboard_session={c}\r\n"))
        .unwrap_or_default();
    let got = http(
        addr,
        &format!(
            "POST /rpc HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{cookie}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    let (head, body) = got.split_once("\r\n\r\n").expect("response");
    (head.to_owned(), serde_json::from_str(body).expect("json"))
}

#[test]
fn post_rpc_logs_in_and_the_cookie_carries_the_session() {
    let hub = start(WebConfig::default());
    let login = json!({"jsonrpc":"2.0","id":1,"method":"LoginRequest",
        "params":{"username":"carol","password":"pw","totp":code()}});
    let (head, v) = post(hub.web, &login.to_string(), None);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let cookie = v["result"]["cookie"].as_str().expect("cookie").to_owned();
    assert!(head.contains("Set-Cookie: switchboard_session="));
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"ListChannelsRequest"}"#;
    let (_, v) = post(hub.web, list, Some(&cookie));
    assert!(v["result"].is_object(), "carol may list channels: {v}");
    let run = r#"{"jsonrpc":"2.0","id":3,"method":"RunCommandRequest","params":{"agentId":"a","operation":"echo.Echo"}}"#;
    let (_, v) = post(hub.web, run, Some(&cookie));
    assert_eq!(
        v["error"]["data"]["code"], "ACCESS",
        "carol has no run_command: {v}"
    );
    let (_, v) = post(hub.web, list, Some("00"));
    assert_eq!(
        v["error"]["data"]["code"], "ACCESS",
        "a wrong cookie is a guest: {v}"
    );
    // The console is served at /.
    let page = http(
        hub.web,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(page.starts_with("HTTP/1.1 200 ") && page.contains("Switchboard console"));
}

#[test]
fn a_slow_upgrade_and_an_oversized_frame_are_closed() {
    let hub = start(WebConfig {
        request_timeout: Duration::from_secs(1),
        max_frame: 64 * 1024,
        ..WebConfig::default()
    });
    let mut tcp = TcpStream::connect(hub.web).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tcp.write_all(b"GET /rpc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .expect("write");
    let mut got = String::new();
    let _ = tcp.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 408 "), "{got:?}");
    let mut ws = plain_ws(hub.web, "/rpc");
    ws.send(Message::text(" ".repeat(100_000))).expect("send");
    let closed = loop {
        match ws.read() {
            Ok(Message::Close(c)) => break c,
            Ok(_) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(closed.map(|c| u16::from(c.code)), Some(1009));
}

/// A wss connection to `path` of the web face, trusting the hub CA.
fn wss(hub: &Hub, path: &str) -> Ws<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in tls::parse_certs(hub.ca.cert_pem().as_bytes(), "ca").expect("ca") {
        roots.add(c).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().expect("name"))
            .expect("tls");
    let tcp = TcpStream::connect(hub.web).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let stream = rustls::StreamOwned::new(conn, tcp);
    let (ws, resp) =
        tungstenite::client(format!("wss://localhost:{}{path}", hub.web.port()), stream)
            .expect("upgrade over TLS");
    assert_eq!(resp.status(), 101);
    ws
}

#[test]
fn streams_over_json_rpc_on_wss_with_binary_data() {
    use prost::Message as _;
    let hub = start(WebConfig::default());
    let mut ws = wss(&hub, "/rpc");
    login(&mut ws, "admin");
    // The hub's own source: JSON-RPC opens it, data comes as binary native messages.
    let open = call(
        &mut ws,
        2,
        "StreamOpen",
        json!({"streamId": "2", "kind": "hub.stats", "class": "LATEST", "params": {"interval_ms": "100"}}),
    );
    assert_eq!(open["result"]["streamId"], "2", "{open}");
    let mut frames = 0;
    while frames < 3 {
        if let Message::Binary(b) = ws.read().expect("read") {
            let m = pb::Message::decode(&b[..]).expect("a native message");
            let Some(pb::message::Message::StreamData(d)) = m.message else {
                panic!("{m:?}")
            };
            assert_eq!(d.stream_id, 2);
            let v: Value = serde_json::from_slice(&d.payload).expect("json");
            assert!(v["connections"].as_u64().unwrap_or(0) >= 1, "{v}");
            frames += 1;
            let credit = call(
                &mut ws,
                10 + frames,
                "StreamCredit",
                json!({"streamId": "2", "bytes": d.payload.len().to_string()}),
            );
            assert!(credit.get("result").is_some(), "{credit}");
        }
    }
    let list = call(&mut ws, 20, "ListStreamsRequest", json!({}));
    assert_eq!(list["result"]["groups"][0]["kind"], "hub.stats", "{list}");
    // A refused open is a JSON-RPC error naming the reason.
    let bad = call(
        &mut ws,
        21,
        "OpenStreamRequest",
        json!({"streamId": "4", "kind": "desktop", "class": "LATEST"}),
    );
    assert_eq!(bad["error"]["data"]["code"], "UNSUPPORTED", "{bad}");
    let closed = call(&mut ws, 22, "CloseStreamRequest", json!({"streamId": "2"}));
    assert!(closed.get("result").is_some(), "{closed}");
    let list = call(&mut ws, 23, "ListStreamsRequest", json!({}));
    assert!(
        list["result"]["groups"]
            .as_array()
            .is_none_or(|g| g.is_empty()),
        "{list}"
    );
}

#[test]
fn a_stream_cannot_be_opened_over_post() {
    let hub = start(WebConfig::default());
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"StreamOpen","params":{"streamId":"2","kind":"hub.stats","class":"LATEST"}}"#;
    let (_, v) = post(hub.web, body, None);
    assert_eq!(v["error"]["code"], -32600, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("WebSocket"),
        "{v}"
    );
}

#[test]
fn streams_on_the_binary_stream_path_with_native_frames() {
    use prost::Message as _;
    use switchboard_core::link::msg;
    use switchboard_proto::message::Message as Body;
    let hub = start(WebConfig::default());
    let mut ws = plain_ws(hub.web, "/stream");
    let send = |ws: &mut Ws<TcpStream>, body: Body| {
        ws.send(Message::binary(msg::wrap(body).encode_to_vec()))
            .expect("send");
    };
    let next = |ws: &mut Ws<TcpStream>| -> Body {
        loop {
            if let Message::Binary(b) = ws.read().expect("read") {
                let m = pb::Message::decode(&b[..]).expect("a native message");
                if let Some(body) = m.message {
                    return body;
                }
            }
        }
    };
    send(
        &mut ws,
        Body::SessionHello(pb::SessionHello {
            client: "test".into(),
        }),
    );
    send(
        &mut ws,
        Body::LoginRequest(pb::LoginRequest {
            request_id: 1,
            username: "admin".into(),
            password: "pw".into(),
            totp: code(),
        }),
    );
    let mut open = pb::StreamOpen {
        stream_id: 2,
        kind: "hub.stats".into(),
        class: pb::StreamClass::Latest as i32,
        ..Default::default()
    };
    open.params.insert("interval_ms".into(), "100".into());
    let mut sent_open = false;
    let mut frames = 0;
    while frames < 3 {
        match next(&mut ws) {
            Body::LoginResponse(r) => {
                assert_eq!(r.result, pb::login_response::Result::Ok as i32, "{r:?}");
                send(&mut ws, Body::StreamOpen(Box::new(open.clone())));
                sent_open = true;
            }
            Body::StreamAccept(a) => assert_eq!(a.stream_id, 2),
            Body::StreamData(d) => {
                assert!(sent_open);
                let v: Value = serde_json::from_slice(&d.payload).expect("json");
                assert!(v.get("stream_sinks").is_some(), "{v}");
                frames += 1;
                send(
                    &mut ws,
                    Body::StreamCredit(pb::StreamCredit {
                        stream_id: 2,
                        bytes: d.payload.len() as u64,
                    }),
                );
            }
            Body::StreamReject(r) => panic!("refused: {r:?}"),
            _ => {}
        }
    }
    send(
        &mut ws,
        Body::StreamClose(pb::StreamClose {
            stream_id: 2,
            code: pb::StreamEnd::Normal as i32,
            reason: "done".into(),
        }),
    );
}

// --- The batch examples of the JSON-RPC 2.0 specification (section 7), over real sockets ---

/// The specification's batch examples with this hub's methods (its `sum`, `subtract` and
/// `get_data` are `ListAgentsRequest`, `ListUsersRequest`, `ListChannelsRequest` here; its
/// `notify_*` are notifications with positional params, which no method here takes).
const BATCH_INVALID_JSON: &str = r#"[
  {"jsonrpc": "2.0", "method": "ListChannelsRequest", "params": [1,2,4], "id": "1"},
  {"jsonrpc": "2.0", "method"
]"#;
const BATCH_MIXED: &str = r#"[
  {"jsonrpc": "2.0", "method": "ListAgentsRequest", "params": {"limit": 1}, "id": "1"},
  {"jsonrpc": "2.0", "method": "ListChannelsRequest", "params": [7]},
  {"jsonrpc": "2.0", "method": "ListUsersRequest", "params": {"afterUid": "0"}, "id": "2"},
  {"foo": "boo"},
  {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
  {"jsonrpc": "2.0", "method": "ListChannelsRequest", "id": "9"}
]"#;
const BATCH_NOTIFICATIONS: &str = r#"[
  {"jsonrpc": "2.0", "method": "ListChannelsRequest", "params": [1,2,4]},
  {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
]"#;

/// A call sent after each request: its answer must come next, and say the connection is fine.
const PROBE: &str = r#"{"jsonrpc":"2.0","method":"ListChannelsRequest","id":"probe"}"#;

fn check_probe(answer: &Value) {
    assert_eq!(answer.get("id"), Some(&json!("probe")), "{answer}");
    assert!(answer["result"]["channels"].is_array(), "{answer}");
}

/// A JSON-RPC client on one connection.
trait Rpc {
    /// Sends `text`, then [`PROBE`]: what answered `text` (`None`: nothing did) before the
    /// probe's answer.
    fn request(&mut self, text: &str) -> Option<Value>;
}

/// A WebSocket on /rpc: the messages before the probe's answer are the answer to `text` (for
/// a request of notifications, the probe's answer is the next message).
struct WsRpc(Ws<TcpStream>);

impl Rpc for WsRpc {
    fn request(&mut self, text: &str) -> Option<Value> {
        self.0.send(Message::text(text)).expect("send");
        self.0.send(Message::text(PROBE)).expect("send");
        let mut before = None;
        loop {
            let Message::Text(t) = self.0.read().expect("read") else {
                continue;
            };
            let v: Value = serde_json::from_str(&t).expect("json");
            if v.get("id") == Some(&json!("probe")) {
                check_probe(&v);
                return before;
            }
            assert!(before.is_none(), "two answers to one request: {v}");
            before = Some(v);
        }
    }
}

/// POST /rpc on one keep-alive connection with the session cookie.
struct PostRpc {
    tcp: TcpStream,
    cookie: String,
}

impl PostRpc {
    /// One request and its response (`None`: 204, which has no body and no Content-Length).
    fn exchange(&mut self, text: &str) -> Option<Value> {
        let req = format!(
            "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nCookie: switchboard_session={}\r\nContent-Length: {}\r\n\r\n{text}",
            self.cookie,
            text.len()
        );
        self.tcp.write_all(req.as_bytes()).expect("write");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.tcp.read_exact(&mut byte).expect("a response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).expect("utf-8");
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|n| n.trim().parse::<usize>().expect("a length"));
        if head.starts_with("HTTP/1.1 204 ") {
            assert_eq!(length, None, "no Content-Length on 204: {head}");
            return None;
        }
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        let mut body = vec![0; length.expect("Content-Length")];
        self.tcp.read_exact(&mut body).expect("the body");
        Some(serde_json::from_slice(&body).expect("json"))
    }
}

impl Rpc for PostRpc {
    fn request(&mut self, text: &str) -> Option<Value> {
        let got = self.exchange(text);
        check_probe(&self.exchange(PROBE).expect("the probe is answered"));
        got
    }
}

fn assert_error(v: &Value, id: Value, code: i64) {
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert_eq!(v.get("id"), Some(&id), "{v}");
    assert_eq!(v["error"]["code"].as_i64(), Some(code), "{v}");
    assert!(v.get("result").is_none(), "{v}");
}

fn result_of(v: &Value, id: Value) -> &Value {
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert_eq!(v.get("id"), Some(&id), "{v}");
    assert!(v.get("error").is_none(), "{v}");
    v.get("result").expect("a result")
}

fn specification_batches(rpc: &mut dyn Rpc, via: &str) {
    let r = rpc.request(BATCH_INVALID_JSON).expect("answered");
    assert!(r.is_object(), "{via}: {r}");
    assert_error(&r, Value::Null, -32700);
    let r = rpc.request("[]").expect("answered");
    assert!(r.is_object(), "{via}: {r}");
    assert_error(&r, Value::Null, -32600);
    for (text, n) in [("[1]", 1), ("[1,2,3]", 3)] {
        let r = rpc.request(text).expect("answered");
        let items = r.as_array().expect("an array");
        assert_eq!(items.len(), n, "{via}: {r}");
        for item in items {
            assert_error(item, Value::Null, -32600);
        }
    }
    let r = rpc.request(BATCH_MIXED).expect("answered");
    let items = r.as_array().expect("an array");
    assert_eq!(items.len(), 5, "{via}: nothing for the notification: {r}");
    assert!(result_of(&items[0], json!("1"))["agents"].is_array(), "{r}");
    let users = result_of(&items[1], json!("2"))["users"]
        .as_array()
        .expect("users");
    assert!(users.iter().any(|u| u["name"] == "carol"), "{r}");
    assert_error(&items[2], Value::Null, -32600);
    assert_error(&items[3], json!("5"), -32601);
    assert!(
        result_of(&items[4], json!("9"))["channels"].is_array(),
        "{r}"
    );
    assert_eq!(rpc.request(BATCH_NOTIFICATIONS), None, "{via}");
    // A lone notification with positional params, and one of an unknown method.
    let lone = r#"{"jsonrpc": "2.0", "method": "ListChannelsRequest", "params": [1,2,3,4,5]}"#;
    assert_eq!(rpc.request(lone), None, "{via}");
    let unknown = r#"{"jsonrpc": "2.0", "method": "foobar"}"#;
    assert_eq!(rpc.request(unknown), None, "{via}");
}

#[test]
fn the_specification_batches_over_ws_and_post() {
    let hub = start(WebConfig::default());
    let mut ws = plain_ws(hub.web, "/rpc");
    let cookie = login(&mut ws, "admin");
    specification_batches(&mut WsRpc(ws), "ws");
    let tcp = TcpStream::connect(hub.web).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    specification_batches(&mut PostRpc { tcp, cookie }, "POST");
}
