//! The hub's side of the secure feed: registry, challenge and proof, one live connection per
//! client, INBOX sequences stored with the operation's change.
#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::time::Instant;

use rand_core::SeedableRng;
use switchboard_proto as pb;
use switchboard_proto::control_error::Code;
use switchboard_proto::message::Message as Body;

use super::FEED_REPLACED;
use crate::feed::crypto;
use crate::hub::{Change, ConnId, Hub, HubAction, HubConfig, PeerInfo, StoredState, UserRecord};
use crate::link::{frame, msg};
use crate::perm::Permissions;

fn key(name: &str) -> crypto::PrivateKey {
    crate::feed::test_key(name)
}

struct Rig {
    hub: Hub,
    now: Instant,
    /// (conn, message) sent by the hub, and persisted changes, in order.
    log: Vec<(ConnId, Body)>,
    persisted: Vec<Change>,
    closed: Vec<(ConnId, String)>,
}

impl Rig {
    fn new() -> Rig {
        let now = Instant::now();
        let mut hub = Hub::new(HubConfig::default(), 1, now, 1_700_000_000_000);
        let user = |uid, name: &str, p: Permissions| UserRecord {
            uid,
            name: name.into(),
            permissions: p.0,
            ..UserRecord::default()
        };
        hub.load(
            StoredState {
                users: vec![
                    user(1, "admin", Permissions::ADMIN),
                    user(2, "trader", Permissions::ADD_CHANNEL),
                ],
                ..StoredState::default()
            },
            now,
        );
        let mut r = Rig {
            hub,
            now,
            log: vec![],
            persisted: vec![],
            closed: vec![],
        };
        r.open(ConnId(1), Some("admin"));
        r
    }

    fn open(&mut self, conn: ConnId, cert: Option<&str>) {
        let addr = "10.0.0.1:1".parse().expect("addr");
        let peer = match cert {
            Some(c) => PeerInfo::named(addr, c),
            None => PeerInfo::web(addr),
        };
        self.hub.accept(self.now, conn, peer);
        self.send(
            conn,
            Body::SessionHello(pb::SessionHello { client: "t".into() }),
        );
    }

    fn send(&mut self, conn: ConnId, body: Body) -> Vec<Body> {
        self.hub
            .handle_input(self.now, conn, &frame::encode(&msg::wrap(body)));
        let mut got = vec![];
        while let Some(a) = self.hub.poll_action() {
            match a {
                HubAction::Send { conn: c, bytes } => {
                    let mut d = frame::FrameDecoder::new(1 << 20);
                    d.push(&bytes);
                    while let Ok(Some(m)) = d.next_message() {
                        if let Some(b) = m.message {
                            if c == conn {
                                got.push(b.clone());
                            }
                            self.log.push((c, b));
                        }
                    }
                }
                HubAction::Persist(ch) => self.persisted.push(ch),
                HubAction::Close { conn, reason } => self.closed.push((conn, reason.to_string())),
                _ => {}
            }
        }
        got
    }

    fn add_client(&mut self) {
        let der = crypto::public_key_der(&key("client_a").to_public_key());
        let got = self.send(
            ConnId(1),
            Body::FeedClientAddRequest(pb::FeedClientAddRequest {
                request_id: 1,
                client_id: "bot".into(),
                public_key_der: der.into(),
                user: "trader".into(),
            }),
        );
        assert!(
            matches!(&got[0], Body::FeedClientAddResponse(r) if r.client.as_ref().is_some_and(|c| c.user == "trader")),
            "{got:?}"
        );
    }

    /// Looks up "bot" and signs its challenge with `signer`; the login's answer.
    fn login(&mut self, conn: ConnId, signer: &str) -> pb::FeedLoginResponse {
        let got = self.send(
            conn,
            Body::FeedLookupRequest(pb::FeedLookupRequest {
                request_id: 2,
                client_id: "bot".into(),
            }),
        );
        let Some(Body::FeedLookupResponse(l)) = got.into_iter().next() else {
            panic!("no lookup answer")
        };
        assert!(l.found && l.challenge.len() == 32);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(conn.0);
        let signature = crypto::pss_sign(&key(signer), &mut rng, &l.challenge).expect("sign");
        let got = self.send(
            conn,
            Body::FeedLoginRequest(pb::FeedLoginRequest {
                request_id: 3,
                client_id: "bot".into(),
                signature: signature.into(),
            }),
        );
        match got.into_iter().next() {
            Some(Body::FeedLoginResponse(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn inbox(&mut self, conn: ConnId, sequence: i64, op: Body) -> Vec<Body> {
        self.send(
            conn,
            Body::FeedInboxRequest(Box::new(pb::FeedInboxRequest {
                request_id: 50 + sequence as u64,
                sequence,
                operation: Some(Box::new(msg::wrap(op))),
            })),
        )
    }
}

#[test]
fn a_client_logs_in_only_with_a_signature_of_its_key() {
    let mut r = Rig::new();
    r.add_client();
    r.open(ConnId(2), None);
    let refused = r.login(ConnId(2), "client_b");
    assert!(!refused.ok && refused.error == "authentication failed");
    // Still a guest.
    let got = r.send(
        ConnId(2),
        Body::ListChannelsRequest(pb::ListChannelsRequest {
            request_id: 9,
            after_chid: 0,
        }),
    );
    assert!(matches!(&got[0], Body::ControlError(e) if e.code == Code::Access as i32));
    let ok = r.login(ConnId(2), "client_a");
    assert!(ok.ok && ok.user == "trader", "{ok:?}");
    // The challenge was for one attempt.
    let again = r.send(
        ConnId(2),
        Body::FeedLoginRequest(pb::FeedLoginRequest {
            request_id: 4,
            client_id: "bot".into(),
            signature: vec![0u8; 256].into(),
        }),
    );
    assert!(matches!(&again[0], Body::FeedLoginResponse(x) if !x.ok));
    // Registry operations need register_user.
    let got = r.send(
        ConnId(2),
        Body::FeedClientListRequest(pb::FeedClientListRequest::default()),
    );
    assert!(matches!(&got[0], Body::ControlError(e) if e.code == Code::Access as i32));
}

#[test]
fn inbox_sequences_are_stored_with_the_operation() {
    let mut r = Rig::new();
    r.add_client();
    r.open(ConnId(2), None);
    assert!(r.login(ConnId(2), "client_a").ok);
    r.persisted.clear();
    let got = r.inbox(
        ConnId(2),
        1,
        Body::CreateChannelRequest(pb::CreateChannelRequest { request_id: 77 }),
    );
    assert!(
        matches!(&got[0], Body::CreateChannelResponse(c) if c.request_id == 77),
        "{got:?}"
    );
    match &r.persisted[0] {
        Change::Batch(b) => {
            assert!(matches!(b[0], Change::ChannelCreated(_)));
            assert_eq!(
                b[1],
                Change::FeedSequence {
                    client_id: "bot".into(),
                    sequence: 1
                }
            );
        }
        other => panic!("{other:?}"),
    }
    // A repeat and a gap are refused, and store nothing.
    r.persisted.clear();
    for seq in [1, 3] {
        let got = r.inbox(
            ConnId(2),
            seq,
            Body::CreateChannelRequest(pb::CreateChannelRequest { request_id: 78 }),
        );
        assert!(
            matches!(&got[0], Body::ControlError(e) if e.code == Code::Conflict as i32),
            "{got:?}"
        );
    }
    assert!(r.persisted.is_empty());
    // A read-only operation still moves the sequence (alone, before the answer).
    let got = r.inbox(
        ConnId(2),
        2,
        Body::ListChannelsRequest(pb::ListChannelsRequest {
            request_id: 79,
            after_chid: 0,
        }),
    );
    assert!(matches!(&got[0], Body::ListChannelsResponse(_)));
    assert_eq!(
        r.persisted[0],
        Change::FeedSequence {
            client_id: "bot".into(),
            sequence: 2
        }
    );
    // Not an operation: refused.
    let got = r.inbox(
        ConnId(2),
        3,
        Body::LoginRequest(pb::LoginRequest::default()),
    );
    assert!(matches!(&got[0], Body::ControlError(e) if e.code == Code::Invalid as i32));
    // A fresh lookup hands out the stored sequence.
    r.open(ConnId(3), None);
    let got = r.send(
        ConnId(3),
        Body::FeedLookupRequest(pb::FeedLookupRequest {
            request_id: 5,
            client_id: "bot".into(),
        }),
    );
    assert!(matches!(&got[0], Body::FeedLookupResponse(l) if l.last_sequence == 3));
}

#[test]
fn a_newer_connection_replaces_the_older() {
    let mut r = Rig::new();
    r.add_client();
    r.open(ConnId(2), None);
    assert!(r.login(ConnId(2), "client_a").ok);
    r.open(ConnId(3), None);
    assert!(r.login(ConnId(3), "client_a").ok);
    assert!(
        r.closed
            .iter()
            .any(|(c, why)| *c == ConnId(2) && why.contains(FEED_REPLACED)),
        "{:?}",
        r.closed
    );
    // The newer one works.
    let got = r.inbox(
        ConnId(3),
        1,
        Body::ListChannelsRequest(pb::ListChannelsRequest {
            request_id: 1,
            after_chid: 0,
        }),
    );
    assert!(matches!(&got[0], Body::ListChannelsResponse(_)), "{got:?}");
}
