//! The secure feed over real sockets (`/feed` on the web face, tungstenite carrying the
//! client machine's binary frames): both generations, heartbeats in real time, and INBOX
//! operations that run exactly once across a hub restart.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_core::feed::client::{ClientEvent, FeedClient};
use switchboard_core::feed::crypto::{self, PrivateKey};
use switchboard_core::feed::messages::ServerMessage;
use switchboard_core::hub::{Change, FeedClientRecord, UserRecord};
use switchboard_core::perm::Permissions;
use switchboard_runtime_smol::pki::Ca;
use switchboard_runtime_smol::server::{HubServer, Listeners, ServerOptions, WebFront};
use switchboard_runtime_smol::store::SqliteStore;
use switchboard_runtime_smol::tls;
use tungstenite::Message;

fn key(name: &str) -> PrivateKey {
    let pem = match name {
        "server" => include_str!("../../core/src/feed/testdata/server.pem"),
        _ => include_str!("../../core/src/feed/testdata/client_a.pem"),
    };
    crypto::private_key_from_pem(pem).expect("key")
}

struct Hub {
    web: SocketAddr,
    stop: Option<async_channel::Sender<()>>,
    runner: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Hub {
    fn stop(&mut self) {
        self.stop.take();
        if let Some(r) = self.runner.take() {
            r.join().expect("hub thread").expect("clean stop");
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(r) = self.runner.take() {
            let _ = r.join();
        }
    }
}

fn start(db: &Path, web_addr: &str) -> Hub {
    let ca = Ca::generate("feed test CA").expect("ca");
    let cert = ca.issue_server(&["localhost".into()], 30).expect("cert");
    let native_tls = tls::server_config(
        ca.cert_pem().as_bytes(),
        cert.cert_pem.as_bytes(),
        cert.key_pem.as_bytes(),
    )
    .expect("tls");
    let store = SqliteStore::open(db).expect("store");
    let server = smol::block_on(async {
        let native = async_net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let web = async_net::TcpListener::bind(web_addr).await.expect("bind");
        HubServer::start_with(
            ServerOptions::new(native_tls, 3),
            store,
            Listeners {
                native,
                kv: None,
                web: Some((web, WebFront::new(None).with_feed(Arc::new(key("server"))))),
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
        stop: Some(stop),
        runner: Some(runner),
    }
}

fn seed_store(db: &Path) {
    let mut store = SqliteStore::open(db).expect("store");
    store
        .apply(&Change::UserRegistered(UserRecord {
            uid: 2,
            name: "trader".into(),
            permissions: Permissions::ADD_CHANNEL.0,
            ..UserRecord::default()
        }))
        .expect("user");
    store
        .apply(&Change::FeedClientSaved(FeedClientRecord {
            client_id: "bot".into(),
            public_key_der: crypto::public_key_der(&key("client").to_public_key()),
            user: "trader".into(),
            last_sequence: 10,
        }))
        .expect("client");
}

/// A feed client over a real WebSocket.
struct Peer {
    ws: tungstenite::WebSocket<TcpStream>,
    client: FeedClient,
    closed: Option<u16>,
    frames_at: Vec<Instant>,
}

impl Peer {
    fn connect(addr: SocketAddr, version: Option<u32>, last_seen_order: i64) -> Peer {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let (ws, _) = tungstenite::client(format!("ws://{addr}/feed"), tcp).expect("upgrade");
        let client = FeedClient::connect(
            "bot",
            key("client"),
            &key("server").to_public_key(),
            version,
            last_seen_order,
            7,
        );
        let mut p = Peer {
            ws,
            client,
            closed: None,
            frames_at: vec![],
        };
        p.pump_for(Duration::from_millis(50));
        p.until("the handshake", |p| p.client.is_open());
        p
    }

    /// Sends what is queued and reads for `d`.
    fn pump_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            while let Some(m) = self.client.outgoing.pop_front() {
                let _ = self.ws.send(Message::binary(m));
            }
            match self.ws.read() {
                Ok(Message::Binary(b)) => {
                    self.frames_at.push(Instant::now());
                    self.client.handle_message(&b);
                }
                Ok(Message::Close(c)) => {
                    self.closed = Some(c.map_or(1005, |c| u16::from(c.code)));
                    return;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    self.closed.get_or_insert(1006);
                    return;
                }
            }
            if Instant::now() >= end {
                return;
            }
        }
    }

    fn until(&mut self, what: &str, f: impl Fn(&Peer) -> bool) {
        let end = Instant::now() + Duration::from_secs(20);
        while !f(self) {
            assert!(
                Instant::now() < end,
                "{what} did not happen: {:?}",
                self.client.events
            );
            assert!(self.closed.is_none(), "{what}: closed {:?}", self.closed);
            self.pump_for(Duration::from_millis(100));
        }
    }

    fn outbox(&self) -> Vec<(i64, String)> {
        self.client
            .events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Message(ServerMessage::Outbox { order, json, .. }) => {
                    Some((*order, String::from_utf8_lossy(json).into_owned()))
                }
                _ => None,
            })
            .collect()
    }
}

#[test]
fn both_generations_over_real_sockets_with_heartbeats_for_v1() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("hub.sqlite");
    seed_store(&db);
    let hub = start(&db, "127.0.0.1:0");
    for version in [None, Some(5)] {
        let mut p = Peer::connect(hub.web, version, 0);
        p.client
            .send_inbox(br#"{"@type": "CreateChannelRequest"}"#, None);
        p.until("the channel's event", |p| {
            p.outbox().iter().any(|(_, j)| j.contains("ChannelCreated"))
        });
        p.client.send_rpc(5, br#"{"@type": "ListChannelsRequest"}"#);
        p.until("the RPC answer", |p| {
            p.client.events.iter().any(|e| {
                matches!(
                    e,
                    ClientEvent::Message(ServerMessage::RpcResponse { request_id: 5, .. })
                )
            })
        });
        // Three seconds of silence: a v1 client gets a 0x00 frame at least every 2 s, a
        // versioned one none.
        p.frames_at.clear();
        let start = Instant::now();
        p.pump_for(Duration::from_secs(3));
        let beats = p
            .client
            .events
            .iter()
            .filter(|e| matches!(e, ClientEvent::Heartbeat))
            .count();
        if version.is_none() {
            assert!(beats >= 2, "{beats} heartbeats in 3 s");
            let mut last = start;
            for t in &p.frames_at {
                assert!(
                    *t - last <= Duration::from_millis(2_100),
                    "a gap of {:?}",
                    *t - last
                );
                last = *t;
            }
        } else {
            assert_eq!(beats, 0);
        }
        let fatal: Vec<_> = p
            .client
            .events
            .iter()
            .filter(|e| matches!(e, ClientEvent::Fatal(_)))
            .collect();
        assert!(fatal.is_empty(), "{fatal:?}");
        assert_eq!(p.closed, None);
    }
}

#[test]
fn inbox_runs_exactly_once_across_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("hub.sqlite");
    seed_store(&db);
    let mut hub = start(&db, "127.0.0.1:0");
    let addr = hub.web;
    let mut p = Peer::connect(addr, Some(5), 0);
    assert_eq!(p.client.next_sequence(), 11);
    p.client
        .send_inbox(br#"{"@type": "CreateChannelRequest"}"#, None);
    p.until("the channel's event", |p| !p.outbox().is_empty());
    let seen = p.outbox().last().map(|(o, _)| *o).expect("order");
    // The hub stops: the client is told 1012 (server restart).
    hub.stop();
    p.pump_for(Duration::from_millis(500));
    assert_eq!(p.closed, Some(1012));
    let hub = start(&db, &addr.to_string());
    // The stored sequence comes back; the same INBOX again is refused (4001), not run twice.
    let mut p = Peer::connect(hub.web, Some(5), seen);
    assert_eq!(p.client.next_sequence(), 12, "{:?}", p.client.events);
    p.client.send_rpc(1, br#"{"@type": "ListChannelsRequest"}"#);
    p.until("the listing", |p| {
        p.client
            .events
            .iter()
            .any(|e| matches!(e, ClientEvent::Message(ServerMessage::RpcResponse { .. })))
    });
    let channels = p.client.events.iter().find_map(|e| match e {
        ClientEvent::Message(ServerMessage::RpcResponse { json, .. }) => {
            serde_json::from_slice::<serde_json::Value>(json).ok()
        }
        _ => None,
    });
    assert_eq!(
        channels
            .as_ref()
            .and_then(|c| c["channels"].as_array())
            .map(Vec::len),
        Some(1),
        "{channels:?}"
    );
    p.client
        .send_inbox(br#"{"@type": "CreateChannelRequest"}"#, Some(11));
    p.pump_for(Duration::from_millis(500));
    assert_eq!(p.closed, Some(4001));
    drop(hub);
}
