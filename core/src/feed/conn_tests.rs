//! The server machine against the client machine of both generations, on a virtual clock:
//! handshakes (right, wrong keys, bad signature, truncated, replayed), sequences, RPC,
//! heartbeats by version, version gates, and the one uniform error.
#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::SeedableRng;

use super::*;
use crate::feed::client::{ClientEvent, FeedClient};
use crate::feed::crypto::{self, PrivateKey};

fn key(name: &str) -> crypto::PrivateKey {
    crate::feed::test_key(name)
}

struct Pair {
    server: FeedConn,
    client: FeedClient,
    now: Instant,
    /// What the server asked of its owner, other than frames.
    work: Vec<FeedOutput>,
    /// Frames the client got, with when.
    frames_at: Vec<Instant>,
    closed: Option<(u16, String)>,
    /// The registered key of "alice" (client_a unless a test says otherwise).
    registered: PrivateKey,
    last_sequence: i64,
}

impl Pair {
    fn new(version: Option<u32>) -> Pair {
        Pair::with(version, key("client_a"), key("server").to_public_key(), 0)
    }

    fn with(
        version: Option<u32>,
        client_key: PrivateKey,
        server_public: crypto::PublicKey,
        seed: u64,
    ) -> Pair {
        let now = Instant::now();
        let cfg = FeedConfig::new(Arc::new(key("server")));
        Pair {
            server: FeedConn::new(now, cfg, [seed as u8; 32]),
            client: FeedClient::connect("alice", client_key, &server_public, version, 0, seed + 1),
            now,
            work: vec![],
            frames_at: vec![],
            closed: None,
            registered: key("client_a"),
            last_sequence: 41,
        }
    }

    fn pump(&mut self) {
        for _ in 0..8 {
            while let Some(m) = self.client.outgoing.pop_front() {
                self.server.handle_message(self.now, &m);
            }
            while let Some(o) = self.server.poll_output() {
                match o {
                    FeedOutput::Binary(b) => {
                        self.frames_at.push(self.now);
                        self.client.handle_message(&b);
                    }
                    FeedOutput::LookupClient { client_id } => {
                        let info = (client_id == "alice").then(|| ClientInfo {
                            public_key: self.registered.to_public_key(),
                            last_sequence: self.last_sequence,
                            challenge: vec![0xaa; 32],
                        });
                        self.server.handle_client(self.now, info);
                    }
                    FeedOutput::Close { code, reason } => self.closed = Some((code, reason)),
                    other => self.work.push(other),
                }
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.server.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            self.server.handle_timeout(self.now);
            self.pump();
        }
        self.now = end;
    }

    fn messages(&self) -> Vec<ServerMessage> {
        self.client
            .events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Message(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    fn fatal(&self) -> Vec<String> {
        self.client
            .events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Fatal(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Feeds `hello` to the server and answers its lookup, without the client machine (which would
/// sign): returns whether a reply frame came out.
fn hello_only(p: &mut Pair, hello: &[u8], challenge: Vec<u8>) -> bool {
    p.client.outgoing.clear();
    p.server.handle_message(p.now, hello);
    let mut replied = false;
    while let Some(o) = p.server.poll_output() {
        match o {
            FeedOutput::LookupClient { client_id } => {
                let info = (client_id == "alice").then(|| ClientInfo {
                    public_key: p.registered.to_public_key(),
                    last_sequence: 0,
                    challenge: challenge.clone(),
                });
                p.server.handle_client(p.now, info);
            }
            FeedOutput::Binary(_) => replied = true,
            FeedOutput::Close { code, reason } => p.closed = Some((code, reason)),
            other => p.work.push(other),
        }
    }
    replied
}

#[test]
fn both_generations_handshake_and_run_sequenced_commands_and_calls() {
    for version in [None, Some(2), Some(3), Some(5)] {
        let mut p = Pair::new(version);
        p.pump();
        assert!(p.server.is_open() && p.client.is_open(), "v{version:?}");
        assert_eq!(
            p.client.events[0],
            ClientEvent::Ready {
                last_seen_sequence: 41,
                server_version: version.map(|_| 5)
            }
        );
        assert!(matches!(
            &p.work[0],
            FeedOutput::Authenticated { client_id, signature, version: v, .. }
                if client_id == "alice" && signature.len() == 256 && *v == version
        ));
        assert_eq!(p.server.allows_ws_ping(), version.is_some());
        p.client
            .send_inbox(br#"{"@type":"CreateChannelRequest"}"#, None);
        p.client
            .send_inbox(br#"{"@type":"ListChannelsRequest"}"#, None);
        p.client.send_rpc(7, br#"{"@type":"ListAgentsRequest"}"#);
        p.pump();
        assert_eq!(
            &p.work[1..],
            &[
                FeedOutput::Inbox {
                    sequence: 42,
                    json: br#"{"@type":"CreateChannelRequest"}"#.to_vec()
                },
                FeedOutput::Inbox {
                    sequence: 43,
                    json: br#"{"@type":"ListChannelsRequest"}"#.to_vec()
                },
                FeedOutput::Rpc {
                    request_id: 7,
                    json: br#"{"@type":"ListAgentsRequest"}"#.to_vec()
                },
            ]
        );
        let answer = ServerMessage::RpcResponse {
            request_id: 7,
            json: b"{}".to_vec(),
        };
        assert!(p.server.send(&answer));
        let event = ServerMessage::Outbox {
            order: 3,
            timestamp: 1.7e9,
            json: b"{\"x\":1}".to_vec(),
        };
        assert!(p.server.send(&event));
        p.pump();
        assert_eq!(p.messages(), vec![answer, event]);
        assert!(p.fatal().is_empty(), "{:?}", p.fatal());
        assert_eq!(p.closed, None);
    }
}

#[test]
fn sequence_gaps_and_repeats_close_with_4001() {
    for (seq, why) in [(44, "gap"), (41, "repeat"), (42 - 10, "behind")] {
        let mut p = Pair::new(Some(5));
        p.pump();
        p.client.send_inbox(b"{}", Some(seq));
        p.pump();
        let (code, reason) = p
            .closed
            .clone()
            .unwrap_or_else(|| panic!("{why}: not closed"));
        assert_eq!(code, close_code::INVALID_SEQUENCE, "{why}: {reason}");
        assert!(!p.work.iter().any(|w| matches!(w, FeedOutput::Inbox { .. })));
    }
}

fn assert_uniform(p: &Pair, what: &str) {
    assert_eq!(
        p.closed,
        Some((close_code::POLICY, UNIFORM_ERROR.to_string())),
        "{what}"
    );
    assert!(
        !p.work
            .iter()
            .any(|w| matches!(w, FeedOutput::Authenticated { .. })),
        "{what}: authenticated"
    );
}

#[test]
fn failed_handshakes_get_one_uniform_error() {
    // Hello encrypted to another server key.
    let mut p = Pair::with(Some(5), key("client_a"), key("client_b").to_public_key(), 3);
    p.pump();
    assert_uniform(&p, "wrong server key");
    // The client holds another key than the one registered: it cannot read the reply.
    let mut p = Pair::with(Some(5), key("client_b"), key("server").to_public_key(), 4);
    p.pump();
    assert!(p.closed.is_none() && !p.client.is_open());
    p.advance(Duration::from_secs(11));
    assert_eq!(p.closed.as_ref().map(|c| c.0), Some(close_code::POLICY));
    // A bad signature: the reply is read, the signature made with another key.
    let mut p = Pair::new(None);
    p.client.outgoing.clear();
    let hello = Hello {
        client_id: "alice".into(),
        last_seen_order: 0,
        client_key: [1; 32],
        version: None,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let server_public = key("server").to_public_key();
    let ct = crypto::oaep_encrypt(&server_public, &mut rng, &hello.encode()).expect("enc");
    assert!(hello_only(&mut p, &ct, vec![0xaa; 32]));
    let forged = crypto::pss_sign(&key("client_b"), &mut rng, &[0xaa; 32]).expect("sign");
    p.server.handle_message(p.now, &forged);
    p.pump();
    assert_uniform(&p, "bad signature");
    // A truncated hello, garbage, an unknown client: the same answer.
    let mut p = Pair::new(Some(5));
    let hello = p.client.outgoing.pop_front().expect("hello");
    p.server.handle_message(p.now, &hello[..100]);
    p.pump();
    assert_uniform(&p, "truncated hello");
    let mut p = Pair::new(Some(5));
    p.client.outgoing.clear();
    p.server.handle_message(p.now, &[7u8; 256]);
    p.pump();
    assert_uniform(&p, "garbage hello");
    let mut p = Pair::new(Some(5));
    p.registered = key("client_b");
    p.client.outgoing.clear();
    let h = Hello {
        client_id: "mallory".into(),
        last_seen_order: 0,
        client_key: [1; 32],
        version: Some(5),
    };
    let ct = crypto::oaep_encrypt(&server_public, &mut rng, &h.encode()).expect("enc");
    p.server.handle_message(p.now, &ct);
    p.pump();
    assert_uniform(&p, "unknown client");
}

#[test]
fn a_replayed_hello_and_signature_do_not_open_a_session() {
    // A recorded handshake: hello and signature of a real session...
    let mut first = Pair::new(Some(5));
    let hello = first.client.outgoing.front().cloned().expect("hello");
    first.pump();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let old_signature = crypto::pss_sign(&key("client_a"), &mut rng, &[0xaa; 32]).expect("sign");
    // ...replayed on a new connection whose challenge differs.
    let mut p = Pair::new(Some(5));
    assert!(hello_only(&mut p, &hello, vec![0xbb; 32]));
    p.server.handle_message(p.now, &old_signature);
    p.pump();
    assert_uniform(&p, "replayed handshake");
}

#[test]
fn frames_that_fail_get_the_uniform_error_then_a_close() {
    type Make = Box<dyn Fn(&mut Pair)>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "not AES",
            Box::new(|p: &mut Pair| p.client.send_raw(vec![1; 48])),
        ),
        (
            "short",
            Box::new(|p: &mut Pair| p.client.send_raw(vec![1; 5])),
        ),
        (
            "bad XDR",
            Box::new(|p: &mut Pair| {
                let State::Open { .. } = p.server.state else {
                    panic!()
                };
                let key = match &p.server.state {
                    State::Open { client_key, .. } => *client_key,
                    _ => unreachable!(),
                };
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
                let frame = crypto::seal(&key, &mut rng, &[0, 0, 0, 9]);
                p.client.send_raw(frame);
            }),
        ),
    ];
    for (what, make) in cases {
        let mut p = Pair::new(Some(5));
        p.pump();
        make(&mut p);
        p.pump();
        assert_eq!(
            p.closed,
            Some((close_code::POLICY, UNIFORM_ERROR.into())),
            "{what}"
        );
        let errors = p.messages();
        assert_eq!(
            errors,
            vec![ServerMessage::Error {
                error_type: error_type::INVALID_PAYLOAD,
                message: UNIFORM_ERROR.as_bytes().to_vec()
            }],
            "{what}"
        );
    }
    // A v2 client's frame whose signature is not the client's: the same.
    let mut p = Pair::new(Some(2));
    p.pump();
    p.registered = key("client_b");
    if let State::Open { client_public, .. } = &mut p.server.state {
        *client_public = key("client_b").to_public_key();
    }
    p.client.send_inbox(b"{}", None);
    p.pump();
    assert_eq!(p.closed, Some((close_code::POLICY, UNIFORM_ERROR.into())));
}

#[test]
fn heartbeats_for_v1_only_at_most_two_seconds_apart() {
    let mut p = Pair::new(None);
    p.pump();
    let open_at = p.now;
    p.advance(Duration::from_secs(30));
    let beats = p
        .client
        .events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Heartbeat))
        .count();
    assert!(beats >= 29, "{beats} heartbeats in 30 s");
    let mut last = open_at;
    for t in &p.frames_at[1..] {
        assert!(
            *t - last <= Duration::from_secs(2),
            "a gap of {:?}",
            *t - last
        );
        last = *t;
    }
    assert!(p.fatal().is_empty());
    // A versioned client never gets one (it would die on it).
    let mut p = Pair::new(Some(2));
    p.pump();
    p.advance(Duration::from_secs(30));
    assert!(p.fatal().is_empty(), "{:?}", p.fatal());
    assert_eq!(p.frames_at.len(), 1, "only the reply");
}

#[test]
fn the_signature_has_ten_seconds() {
    let mut p = Pair::new(Some(5));
    let hello = p.client.outgoing.pop_front().expect("hello");
    assert!(hello_only(&mut p, &hello, vec![0xaa; 32])); // the signature never comes
    p.advance(Duration::from_secs(9));
    assert_eq!(p.closed, None);
    p.advance(Duration::from_secs(2));
    assert_eq!(p.closed.as_ref().map(|c| c.0), Some(close_code::POLICY));
}

#[test]
fn types_above_the_client_version_are_never_sent() {
    let throttling = ServerMessage::Throttling {
        level: 1,
        sequence_id: 1,
        order_id: 1,
    };
    let broadcast = ServerMessage::Broadcast {
        json: b"{}".to_vec(),
    };
    for (version, t, b) in [
        (None, false, false),
        (Some(2), false, false),
        (Some(3), false, false),
        (Some(4), true, false),
        (Some(5), true, true),
    ] {
        let mut p = Pair::new(version);
        p.pump();
        assert_eq!(p.server.send(&throttling), t, "v{version:?}");
        assert_eq!(p.server.send(&broadcast), b, "v{version:?}");
        p.pump();
        assert!(p.fatal().is_empty(), "v{version:?}: {:?}", p.fatal());
    }
}

#[test]
fn a_flood_is_throttled_then_closed_with_4009() {
    // Over the rate every message is still processed (the real client does not send a
    // throttled message again); versions 4 and 5 are told to wait, in milliseconds. A client
    // that keeps going a whole burst past the limit is closed with 4009.
    for version in [Some(5), Some(4), Some(3), None] {
        let mut p = Pair::new(version);
        p.pump();
        for i in 0..120 {
            p.client.send_rpc(i, b"{}");
        }
        p.pump();
        let rpcs = p
            .work
            .iter()
            .filter(|w| matches!(w, FeedOutput::Rpc { .. }))
            .count();
        assert_eq!(rpcs, 120, "v{version:?}: all processed");
        let waits: Vec<i32> = p
            .messages()
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Throttling {
                    level, sequence_id, ..
                } if *sequence_id >= 100 => Some(*level),
                _ => None,
            })
            .collect();
        if version >= Some(4) {
            assert_eq!(waits.len(), 20, "v{version:?}");
            assert_eq!(waits[0], 20, "one message short: 1/50 s");
            assert_eq!(waits[19], 400);
        } else {
            assert!(waits.is_empty());
        }
        assert_eq!(p.closed, None, "v{version:?}");
        for i in 0..100 {
            p.client.send_rpc(1000 + i, b"{}");
        }
        p.pump();
        assert_eq!(
            p.closed.as_ref().map(|c| c.0),
            Some(close_code::RATE_LIMIT),
            "v{version:?}"
        );
        assert!(p.fatal().is_empty(), "v{version:?}: {:?}", p.fatal());
    }
    // A second later the bucket has refilled.
    let mut p = Pair::new(Some(5));
    p.pump();
    for i in 0..150 {
        p.client.send_rpc(i, b"{}");
    }
    p.pump();
    p.now += Duration::from_secs(2);
    p.client.send_inbox(b"{}", None);
    p.pump();
    assert!(
        p.work
            .iter()
            .any(|w| matches!(w, FeedOutput::Inbox { sequence: 42, .. }))
    );
    assert!(!p.messages().iter().any(|m| matches!(
        m,
        ServerMessage::Throttling {
            sequence_id: 42,
            ..
        }
    )));
}
