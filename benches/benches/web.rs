//! Criterion benchmarks of the web face, each beside its native baseline measured in the same
//! run: JSON-RPC calls through a WebConn in front of the hub vs the same request from a native
//! session, and event notices delivered to 1,000 subscribed web sessions vs 1,000 native ones.
//! In memory (no sockets, no TLS): what is measured is the translation and the hub.
//!
//! `cargo bench -p switchboard-benches --bench web`
#![allow(missing_docs, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard_core::auth::totp;
use switchboard_core::hub::{ConnId, Hub, HubAction, HubConfig, PeerInfo, StoredState, UserRecord};
use switchboard_core::link::LinkConfig;
use switchboard_core::machine::Action;
use switchboard_core::perm::Permissions;
use switchboard_core::session::{ClientEvent, ClientSession};
use switchboard_core::web::{WebConfig, WebConn, WebOutput};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

const WALL: i64 = 1_700_000_000_000;
const SECRET: &[u8] = b"bench totp secret 01";
const ADMIN: ConnId = ConnId(1);

enum Client {
    Web(Box<WebConn>),
    Native(Box<ClientSession>),
}

/// A hub with an admin session (native, certificate) and `n` subscriber clients.
struct Rig {
    now: Instant,
    hub: Hub,
    admin: ClientSession,
    clients: Vec<Client>,
    /// Text frames (web) or messages (native) the subscribers received.
    delivered: u64,
    answers: u64,
    last_chid: u64,
}

fn masked_text(text: &str) -> Vec<u8> {
    let mut out = vec![];
    switchboard_core::web::ws::encode_masked_frame(0x81, text.as_bytes(), [0; 4], &mut out);
    out
}

const UPGRADE: &[u8] = b"GET /rpc HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

impl Rig {
    fn new(n: usize, web: bool) -> Rig {
        let now = Instant::now();
        let link = LinkConfig {
            ping_interval: Duration::from_secs(3600),
            ..LinkConfig::default()
        };
        let mut hub = Hub::new(
            HubConfig {
                link: link.clone(),
                ..HubConfig::default()
            },
            1,
            now,
            WALL,
        );
        hub.load(
            StoredState {
                users: vec![UserRecord {
                    uid: 1,
                    name: "admin".into(),
                    permissions: Permissions::ADMIN.0,
                    password_hash: "$argon2id$bench".into(),
                    totp_secret: hex_encode(SECRET),
                    ..UserRecord::default()
                }],
                ..StoredState::default()
            },
            now,
        );
        hub.accept(
            now,
            ADMIN,
            PeerInfo::named("127.0.0.1:1".parse().expect("addr"), "admin"),
        );
        let admin = ClientSession::new(now, link.clone(), "bench", 2);
        let mut rig = Rig {
            now,
            hub,
            admin,
            clients: vec![],
            delivered: 0,
            answers: 0,
            last_chid: 0,
        };
        rig.settle();
        let mut cookie = None;
        for i in 0..n {
            let conn = ConnId(10 + i as u64);
            let addr = format!("127.0.0.1:{}", 2000 + i % 60_000)
                .parse()
                .expect("addr");
            let client = if web {
                rig.hub.accept(now, conn, PeerInfo::web(addr));
                let mut w = WebConn::new(now, WebConfig::default());
                let mut head = UPGRADE.to_vec();
                if let Some(c) = &cookie {
                    head = String::from_utf8_lossy(UPGRADE)
                        .replace(
                            "\r\n\r\n",
                            &format!("\r\nCookie: switchboard_session={c}\r\n\r\n"),
                        )
                        .into_bytes();
                }
                w.handle_socket(now, &head);
                Client::Web(Box::new(w))
            } else {
                rig.hub.accept(now, conn, PeerInfo::named(addr, "admin"));
                Client::Native(Box::new(ClientSession::new(
                    now,
                    link.clone(),
                    "bench",
                    100 + i as u64,
                )))
            };
            rig.clients.push(client);
            rig.settle();
            if web && cookie.is_none() {
                let code = totp::code_at(SECRET, (WALL / 1000) as u64);
                let login = format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"LoginRequest","params":{{"username":"admin","password":"pw","totp":{code}}}}}"#
                );
                cookie = rig.web_call(i, &login);
            }
            rig.subscribe(i);
        }
        rig.delivered = 0;
        rig
    }

    /// Sends a JSON-RPC text frame on web client `i`; returns the cookie if the answer has one.
    fn web_call(&mut self, i: usize, text: &str) -> Option<String> {
        let Client::Web(w) = &mut self.clients[i] else {
            return None;
        };
        w.handle_socket(self.now, &masked_text(text));
        let got = self.settle();
        got.into_iter().find_map(|t| {
            let v: serde_json::Value = serde_json::from_str(&t).ok()?;
            v["result"]["cookie"].as_str().map(str::to_owned)
        })
    }

    fn subscribe(&mut self, i: usize) {
        let sub = pb::SubscribeEventsRequest {
            request_id: 7,
            from_order: 0,
        };
        match &mut self.clients[i] {
            Client::Web(_) => {
                self.web_call(
                    i,
                    r#"{"jsonrpc":"2.0","id":7,"method":"SubscribeEventsRequest","params":{"fromOrder":0}}"#,
                );
            }
            Client::Native(s) => {
                let _ = s.send_request(Body::SubscribeEventsRequest(sub));
                self.settle();
            }
        }
    }

    /// Moves bytes until nothing moves; returns the text frames web clients got (first 4 KiB).
    fn settle(&mut self) -> Vec<String> {
        let mut texts = vec![];
        loop {
            let mut moved = false;
            while let Some(a) = self.hub.poll_action() {
                moved = true;
                match a {
                    HubAction::Send { conn, bytes } if conn == ADMIN => {
                        self.admin.handle_input(self.now, &bytes)
                    }
                    HubAction::Send { conn, bytes } => {
                        match &mut self.clients[(conn.0 - 10) as usize] {
                            Client::Web(w) => w.handle_hub(self.now, &bytes),
                            Client::Native(s) => s.handle_input(self.now, &bytes),
                        }
                    }
                    // The bench skips argon2: it measures the web face.
                    HubAction::VerifySecret { ticket, .. } => {
                        self.hub.handle_verified(self.now, ticket, true)
                    }
                    _ => {}
                }
            }
            while let Some(a) = self.admin.poll_action() {
                moved = true;
                match a {
                    Action::Send(b) => self.hub.handle_input(self.now, ADMIN, &b),
                    Action::Event(ClientEvent::Message(m)) => {
                        self.answers += 1;
                        if let Body::CreateChannelResponse(r) = m {
                            self.last_chid = r.chid;
                        }
                    }
                    _ => {}
                }
            }
            for (i, c) in self.clients.iter_mut().enumerate() {
                let conn = ConnId(10 + i as u64);
                match c {
                    Client::Web(w) => {
                        while let Some(o) = w.poll_output() {
                            moved = true;
                            match o {
                                WebOutput::Hub(b) => self.hub.handle_input(self.now, conn, &b),
                                WebOutput::Socket(b) => {
                                    self.delivered += 1;
                                    if texts.len() < 64 && b.len() > 4 {
                                        let at = match b[1] & 0x7f {
                                            126 => 4,
                                            127 => 10,
                                            _ => 2,
                                        };
                                        let text = String::from_utf8_lossy(&b[at..]);
                                        texts.push(text.into_owned());
                                    }
                                }
                                WebOutput::Close => {}
                            }
                        }
                    }
                    Client::Native(s) => {
                        while let Some(a) = s.poll_action() {
                            moved = true;
                            match a {
                                Action::Send(b) => self.hub.handle_input(self.now, conn, &b),
                                Action::Event(ClientEvent::Message(_)) => self.delivered += 1,
                                _ => {}
                            }
                        }
                    }
                }
            }
            if !moved {
                return texts;
            }
        }
    }

    /// The admin creates and deletes a channel: two events for every subscriber.
    fn two_events(&mut self) {
        let rid = 1000 + self.answers;
        let _ = self
            .admin
            .send_request(Body::CreateChannelRequest(pb::CreateChannelRequest {
                request_id: rid,
            }));
        self.settle();
        let chid = self.last_chid;
        let _ = self
            .admin
            .send_request(Body::DeleteChannelRequest(pb::DeleteChannelRequest {
                request_id: rid + 1,
                chid,
            }));
        self.settle();
    }
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn calls(c: &mut Criterion) {
    let mut g = c.benchmark_group("web");
    g.throughput(Throughput::Elements(1));
    let mut web = Rig::new(1, true);
    let call = r#"{"jsonrpc":"2.0","id":9,"method":"ListChannelsRequest","params":{}}"#;
    g.bench_function("jsonrpc_call/list_channels", |b| {
        b.iter(|| black_box(web.web_call(0, black_box(call))))
    });
    let mut native = Rig::new(1, false);
    g.bench_function("native_call/list_channels", |b| {
        b.iter(|| {
            let _ = native
                .admin
                .send_request(Body::ListChannelsRequest(pb::ListChannelsRequest {
                    request_id: 9,
                    after_chid: 0,
                }));
            black_box(native.settle());
        })
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("events_to_1000_subscribers");
    g.throughput(Throughput::Elements(2_000));
    g.sample_size(20);
    for web in [true, false] {
        let mut rig = Rig::new(1_000, web);
        rig.two_events();
        assert_eq!(rig.delivered, 2_000, "every subscriber got both events");
        let before = rig.delivered;
        let mut rounds = 0u64;
        g.bench_function(if web { "web" } else { "native" }, |b| {
            b.iter(|| {
                rig.two_events();
                rounds += 1;
            })
        });
        assert_eq!(
            rig.delivered - before,
            2_000 * rounds,
            "every round reached everyone"
        );
    }
    g.finish();
}

criterion_group!(benches, calls, fanout);
criterion_main!(benches);
