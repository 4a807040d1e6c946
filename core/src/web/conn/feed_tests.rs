//! The secure feed through a WebConn in front of a real hub: both client generations log in,
//! run INBOX operations and RPC calls, follow the event log and resume it; a second connection
//! of the same client closes the first with 4000; a sequence gap closes with 4001; shutdown
//! closes with 1012.
#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::tests::{client_frame, server_messages};
use super::*;
use crate::feed::client::{ClientEvent, FeedClient};
use crate::feed::crypto;
use crate::feed::messages::ServerMessage;
use crate::feed::{FeedConfig, close_code};
use crate::hub::{
    ConnId, FeedClientRecord, Hub, HubAction, HubConfig, PeerInfo, StoredState, UserRecord,
};
use crate::perm::Permissions;
use crate::web::ws::WsMessage;

fn key(name: &str) -> crypto::PrivateKey {
    crate::feed::test_key(name)
}

struct Side {
    web: WebConn,
    client: FeedClient,
    /// Close frames the client got.
    closes: Vec<Option<(u16, String)>>,
    pings: usize,
}

struct Net {
    hub: Hub,
    now: Instant,
    sides: BTreeMap<u64, Side>,
    cfg: WebConfig,
}

impl Net {
    fn new() -> Net {
        let now = Instant::now();
        let mut hub = Hub::new(HubConfig::default(), 1, now, 1_700_000_000_000);
        hub.load(
            StoredState {
                users: vec![UserRecord {
                    uid: 2,
                    name: "trader".into(),
                    permissions: Permissions::ADD_CHANNEL.0,
                    ..UserRecord::default()
                }],
                feed_clients: vec![FeedClientRecord {
                    client_id: "bot".into(),
                    public_key_der: crypto::public_key_der(&key("client_a").to_public_key()),
                    user: "trader".into(),
                    last_sequence: 10,
                }],
                ..StoredState::default()
            },
            now,
        );
        let cfg = WebConfig {
            feed: Some(FeedConfig::new(Arc::new(key("server")))),
            ..WebConfig::default()
        };
        Net {
            hub,
            now,
            sides: BTreeMap::new(),
            cfg,
        }
    }

    /// A new `/feed` connection of a client of `version` that saw `last_seen_order`.
    fn connect(&mut self, id: u64, version: Option<u32>, last_seen_order: i64) {
        let conn = ConnId(id);
        self.hub.accept(
            self.now,
            conn,
            PeerInfo::web("10.0.0.2:7".parse().expect("addr")),
        );
        let mut web = WebConn::new(self.now, self.cfg.clone()).with_feed_seed([id as u8; 32]);
        web.handle_socket(self.now, b"GET /feed HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        let client = FeedClient::connect(
            "bot",
            key("client_a"),
            &key("server").to_public_key(),
            version,
            last_seen_order,
            id,
        );
        self.sides.insert(
            id,
            Side {
                web,
                client,
                closes: vec![],
                pings: 0,
            },
        );
        self.pump();
    }

    fn pump(&mut self) {
        for _ in 0..32 {
            let mut moved = false;
            let ids: Vec<u64> = self.sides.keys().copied().collect();
            for id in ids {
                let Some(side) = self.sides.get_mut(&id) else {
                    continue;
                };
                while let Some(m) = side.client.outgoing.pop_front() {
                    moved = true;
                    side.web.handle_socket(self.now, &client_frame(0x82, &m));
                }
                while let Some(o) = side.web.poll_output() {
                    moved = true;
                    match o {
                        WebOutput::Hub(b) => self.hub.handle_input(self.now, ConnId(id), &b),
                        WebOutput::Socket(b) => {
                            if b.starts_with(b"HTTP/1.1") {
                                continue;
                            }
                            for m in server_messages(&b) {
                                match m {
                                    WsMessage::Binary(b) => side.client.handle_message(&b),
                                    WsMessage::Close(c) => side.closes.push(c),
                                    WsMessage::Ping(_) => side.pings += 1,
                                    _ => {}
                                }
                            }
                        }
                        WebOutput::Close => self.hub.handle_closed(self.now, ConnId(id)),
                    }
                }
            }
            while let Some(a) = self.hub.poll_action() {
                moved = true;
                match a {
                    HubAction::Send { conn, bytes } => {
                        if let Some(s) = self.sides.get_mut(&conn.0) {
                            s.web.handle_hub(self.now, &bytes);
                        }
                    }
                    HubAction::Close { conn, reason } => {
                        if let Some(s) = self.sides.get_mut(&conn.0) {
                            s.web.handle_hub_closed(&reason.to_string());
                        }
                    }
                    HubAction::ReadEvents { conn, .. } => self.hub.handle_events_read(conn, vec![]),
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn side(&mut self, id: u64) -> &mut Side {
        self.sides.get_mut(&id).expect("side")
    }

    fn messages(&self, id: u64) -> Vec<ServerMessage> {
        self.sides[&id]
            .client
            .events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Message(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    fn outbox_orders(&self, id: u64) -> Vec<i64> {
        self.messages(id)
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Outbox { order, .. } => Some(*order),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn both_generations_run_operations_and_follow_the_event_log() {
    for (i, version) in [None, Some(2), Some(3), Some(5)].into_iter().enumerate() {
        let mut n = Net::new();
        let id = 10 + i as u64;
        n.connect(id, version, 0);
        assert!(n.side(id).client.is_open(), "v{version:?}");
        assert_eq!(
            n.side(id).client.events[0],
            ClientEvent::Ready {
                last_seen_sequence: 10,
                server_version: version.map(|_| 5)
            }
        );
        // INBOX: a channel is created (as the client's user); its event comes as OUTBOX.
        n.side(id)
            .client
            .send_inbox(br#"{"@type": "CreateChannelRequest"}"#, None);
        n.pump();
        let created = n.messages(id).into_iter().find_map(|m| match m {
            ServerMessage::Outbox { json, .. } => Some(String::from_utf8_lossy(&json).into_owned()),
            _ => None,
        });
        assert!(
            created
                .as_deref()
                .is_some_and(|j| j.contains("ChannelCreated") && j.contains("\"owner\":2")),
            "v{version:?}: {created:?}"
        );
        // RPC: answered with its id, the result in proto3 JSON.
        n.side(id)
            .client
            .send_rpc(77, br#"{"@type": "ListChannelsRequest"}"#);
        n.side(id)
            .client
            .send_rpc(78, br#"{"@type": "NoSuchRequest"}"#);
        n.side(id)
            .client
            .send_rpc(79, br#"{"@type": "RunCommandRequest", "agentId": "a"}"#);
        n.pump();
        let answers: BTreeMap<i64, serde_json::Value> = n
            .messages(id)
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::RpcResponse { request_id, json } => {
                    Some((request_id, serde_json::from_slice(&json).expect("json")))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            answers[&77]["channels"].as_array().map(Vec::len),
            Some(1),
            "{answers:?}"
        );
        assert_eq!(answers[&78]["error"]["code"], -32601);
        assert_eq!(
            answers[&79]["error"]["data"]["code"], "ACCESS",
            "trader has no run_command"
        );
        // A payload that is not an operation: an ERROR, the sequence used, the session goes on.
        n.side(id).client.send_inbox(b"not json", None);
        n.side(id)
            .client
            .send_inbox(br#"{"@type": "ListChannelsRequest"}"#, None);
        n.pump();
        assert!(
            n.messages(id)
                .iter()
                .any(|m| matches!(m, ServerMessage::Error { .. }))
        );
        assert!(n.side(id).closes.is_empty(), "{:?}", n.side(id).closes);
        assert_eq!(n.hub_last_sequence(), 13);
        let fatal: Vec<_> = n
            .side(id)
            .client
            .events
            .iter()
            .filter(|e| matches!(e, ClientEvent::Fatal(_)))
            .collect();
        assert!(fatal.is_empty(), "v{version:?}: {fatal:?}");
    }
}

impl Net {
    fn hub_last_sequence(&mut self) -> i64 {
        // A fresh lookup tells the stored sequence.
        self.hub.accept(
            self.now,
            ConnId(999),
            PeerInfo::web("10.0.0.3:1".parse().expect("addr")),
        );
        let hello = crate::link::msg::wrap(switchboard_proto::message::Message::SessionHello(
            switchboard_proto::SessionHello { client: "t".into() },
        ));
        let lookup =
            crate::link::msg::wrap(switchboard_proto::message::Message::FeedLookupRequest(
                switchboard_proto::FeedLookupRequest {
                    request_id: 1,
                    client_id: "bot".into(),
                },
            ));
        let mut bytes = crate::link::frame::encode(&hello).to_vec();
        bytes.extend_from_slice(&crate::link::frame::encode(&lookup));
        self.hub.handle_input(self.now, ConnId(999), &bytes);
        let mut last = -1;
        while let Some(a) = self.hub.poll_action() {
            if let HubAction::Send {
                conn: ConnId(999),
                bytes,
            } = a
            {
                let mut d = crate::link::frame::FrameDecoder::new(1 << 20);
                d.push(&bytes);
                while let Ok(Some(m)) = d.next_message() {
                    if let Some(switchboard_proto::message::Message::FeedLookupResponse(l)) =
                        m.message
                    {
                        last = l.last_sequence;
                    }
                }
            }
        }
        self.hub.handle_closed(self.now, ConnId(999));
        last
    }
}

#[test]
fn a_reconnecting_client_resumes_after_its_last_order() {
    let mut n = Net::new();
    n.connect(1, Some(5), 0);
    for _ in 0..3 {
        n.side(1)
            .client
            .send_inbox(br#"{"@type": "CreateChannelRequest"}"#, None);
    }
    n.pump();
    let first = n.outbox_orders(1);
    assert_eq!(first.len(), 3, "{first:?}");
    let seen = first[1];
    // A new connection of the same client that saw only up to the second event: the first
    // connection is closed with 4000, the new one gets the third event, then live ones.
    n.connect(2, None, seen);
    assert!(
        n.side(1)
            .closes
            .iter()
            .any(|c| c.as_ref().is_some_and(|c| c.0 == close_code::CONCURRENT)),
        "{:?}",
        n.side(1).closes
    );
    assert_eq!(n.outbox_orders(2), vec![first[2]]);
    assert_eq!(
        n.side(2).client.next_sequence(),
        14,
        "the stored sequence is handed out"
    );
    n.side(2)
        .client
        .send_inbox(br#"{"@type": "CreateChannelRequest"}"#, None);
    n.pump();
    let orders = n.outbox_orders(2);
    assert_eq!(orders.len(), 2);
    assert!(orders[1] > orders[0]);
    // A gap: 4001.
    n.side(2).client.send_inbox(b"{}", Some(99));
    n.pump();
    assert!(n.side(2).closes.iter().any(|c| {
        c.as_ref()
            .is_some_and(|c| c.0 == close_code::INVALID_SEQUENCE)
    }));
}

#[test]
fn shutdown_closes_with_1012_and_v1_is_never_pinged() {
    for (version, pings) in [(None, 0), (Some(5), 1)] {
        let mut n = Net::new();
        n.connect(1, version, 0);
        n.now += std::time::Duration::from_secs(45);
        let now = n.now;
        n.side(1).web.handle_timeout(now);
        n.pump();
        // A v1 client dies on a ping; a versioned one is pinged when idle.
        assert_eq!(n.side(1).pings, pings, "v{version:?}");
        assert!(
            !n.side(1).web.is_closed(),
            "v{version:?}: {:?}",
            n.side(1).client.events
        );
        n.hub.shutdown(n.now);
        n.pump();
        assert!(
            n.side(1)
                .closes
                .iter()
                .any(|c| c.as_ref().is_some_and(|c| c.0 == close_code::RESTART)),
            "v{version:?}: {:?}",
            n.side(1).closes
        );
    }
}

#[test]
fn resume_after_disconnects_at_random_points_has_no_gap_and_no_repeat() {
    use rand_core::{RngCore, SeedableRng};
    for seed in 1..=6u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut n = Net::new();
        let mut id = 1;
        // The OUTBOX orders of each connection, and the order each resumed after.
        let mut segments: Vec<Vec<i64>> = vec![];
        let mut resumed: BTreeMap<u64, i64> = BTreeMap::new();
        let mut from = 0;
        n.connect(id, Some(5), from);
        for step in 0..40 {
            match rng.next_u32() % 5 {
                0 => {
                    // The connection drops now, with whatever was in flight.
                    let got = n.outbox_orders(id);
                    from = got.last().copied().unwrap_or(from);
                    segments.push(got);
                    n.sides.remove(&id);
                    n.hub.handle_closed(n.now, ConnId(id));
                    n.pump();
                    id += 1;
                    let version = [None, Some(2), Some(5)][(rng.next_u32() % 3) as usize];
                    n.connect(id, version, from);
                    resumed.insert(id, from);
                }
                1 if step % 2 == 0 => {
                    // Sent, and the connection drops before anything is read back.
                    n.side(id)
                        .client
                        .send_inbox(br#"{"@type": "CreateChannelRequest"}"#, None);
                    let m = n.side(id).client.outgoing.pop_front().expect("frame");
                    let now = n.now;
                    n.side(id).web.handle_socket(now, &client_frame(0x82, &m));
                }
                _ => {
                    n.side(id)
                        .client
                        .send_inbox(br#"{"@type": "CreateChannelRequest"}"#, None);
                    n.pump();
                }
            }
        }
        n.pump();
        segments.push(n.outbox_orders(id));
        // Each connection's OUTBOX starts right after what the client had seen, in order.
        let mut all: Vec<i64> = vec![];
        for (i, orders) in segments.iter().enumerate() {
            let conn = i as u64 + 1;
            let after = resumed.get(&conn).copied().unwrap_or(0);
            assert!(
                orders.iter().all(|o| *o > after),
                "seed {seed}: {orders:?} after {after}"
            );
            assert!(
                orders.windows(2).all(|w| w[0] < w[1]),
                "seed {seed}: {orders:?}"
            );
            all.extend(orders);
        }
        assert!(
            all.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: a repeat in {all:?}"
        );
        n.connect(99, Some(5), 0);
        assert_eq!(n.outbox_orders(99), all, "seed {seed}: a gap");
        assert!(all.len() > 10, "seed {seed}: {all:?}");
    }
}

#[test]
fn an_rpc_the_hub_does_not_answer_still_gets_an_answer() {
    let mut n = Net::new();
    n.connect(1, Some(5), 0);
    // The call reaches the WebConn, but its request never reaches the hub.
    n.side(1)
        .client
        .send_rpc(9, br#"{"@type": "ListChannelsRequest"}"#);
    let m = n.side(1).client.outgoing.pop_front().expect("frame");
    let now = n.now;
    n.side(1).web.handle_socket(now, &client_frame(0x82, &m));
    while n.side(1).web.poll_output().is_some() {}
    n.now += std::time::Duration::from_secs(61);
    let now = n.now;
    n.side(1).web.handle_timeout(now);
    n.pump();
    let answer = n.messages(1).into_iter().find_map(|m| match m {
        ServerMessage::RpcResponse {
            request_id: 9,
            json,
        } => serde_json::from_slice::<serde_json::Value>(&json).ok(),
        _ => None,
    });
    assert_eq!(
        answer.map(|a| a["error"]["code"].clone()),
        Some(serde_json::json!(-32603))
    );
}
