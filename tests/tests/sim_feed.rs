//! The secure feed under the deterministic simulator: a client of each generation follows the
//! event log through the web face while its connection is cut at random points and the hub
//! restarts; every connection resumes right after the last order the client saw, and in the
//! end the client has seen every event it may see exactly once, in order. Seeds as in
//! `sim_link` (`SIM_SEEDS=N`, `SIM_SEED=x`); a failure prints the replay command.

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchboard_core::feed::FeedConfig;
use switchboard_core::feed::crypto;
use switchboard_core::hub::HubConfig;
use switchboard_core::perm::Permissions;
use switchboard_core::web::WebConfig;
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;
use switchboard_tests::scenario;
use switchboard_tests::sim::{NetConfig, World, short_timers};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn key(name: &str) -> crypto::PrivateKey {
    let pem = match name {
        "server" => include_str!("../../core/src/feed/testdata/server.pem"),
        _ => include_str!("../../core/src/feed/testdata/client_a.pem"),
    };
    crypto::private_key_from_pem(pem).expect("key")
}

scenario!(
    feed_clients_resume_across_cuts_and_restarts_without_gap_or_repeat,
    6,
    |seed| {
        let cfg = HubConfig {
            link: short_timers(),
            event_ring: 8,
            ..HubConfig::default()
        };
        let mut w = World::new(seed, cfg, NetConfig::with_loss(0.02));
        w.web_cfg = WebConfig {
            feed: Some(FeedConfig::new(Arc::new(key("server")))),
            ..WebConfig::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xfeed);
        // The client's user, and the client.
        let mut op = w.connected_operator();
        let rid = 900;
        w.operator_send(
            op,
            Body::RegisterUserRequest(pb::RegisterUserRequest {
                request_id: rid,
                name: "trader".into(),
                permissions: Permissions::ADD_CHANNEL.union(Permissions::RM_CHANNEL).0,
            }),
        )
        .expect("send");
        let Body::RegisterUserResponse(trader) = w.wait_response(op, rid) else {
            panic!("trader not registered")
        };
        w.operator_send(
            op,
            Body::FeedClientAddRequest(pb::FeedClientAddRequest {
                request_id: rid + 1,
                client_id: "bot".into(),
                public_key_der: crypto::public_key_der(&key("client").to_public_key()).into(),
                user: "trader".into(),
            }),
        )
        .expect("send");
        assert!(matches!(
            w.wait_response(op, rid + 1),
            Body::FeedClientAddResponse(_)
        ));
        let version = [None, Some(2), Some(5)][(seed % 3) as usize];
        let f = w.spawn_feed("bot", key("client"), key("server").to_public_key(), version);
        assert!(
            w.run_until_cond(SECS(30), |w| w.feed(f).is_open()),
            "handshake"
        );
        let mut restarts = 0;
        let mut chid = 0u64;
        for round in 0..40 {
            if !w.operator(op).is_open() {
                op = w.connected_operator();
            }
            match rng.gen_range(0..10) {
                0..=1 => w.feed_drop(f),
                2 if restarts < 2 => {
                    restarts += 1;
                    w.restart_hub();
                    op = w.connected_operator();
                }
                3..=5 => w.feed_inbox(f, br#"{"@type": "CreateChannelRequest"}"#),
                _ => {
                    // The operator makes events too: a channel, and its deletion.
                    let rid = 1000 + round;
                    let body = if chid == 0 {
                        Body::CreateChannelRequest(pb::CreateChannelRequest { request_id: rid })
                    } else {
                        Body::DeleteChannelRequest(pb::DeleteChannelRequest {
                            request_id: rid,
                            chid,
                        })
                    };
                    if w.operator_send(op, body).is_ok() {
                        match w.wait_response(op, rid) {
                            Body::CreateChannelResponse(r) => chid = r.chid,
                            _ => chid = 0,
                        }
                    }
                }
            }
            w.run_for(Duration::from_millis(rng.gen_range(0..2_000)));
        }
        // Everything the client may see: the channel events of the log.
        let visible: Vec<i64> = w
            .store
            .events
            .values()
            .filter(|e| e.kind.starts_with("Channel") || e.kind.starts_with("Member"))
            .map(|e| e.order as i64)
            .collect();
        let last = *visible.last().expect("events");
        let caught_up = w.run_until_cond(SECS(60), |w| w.feed(f).last_seen_order == last);
        let node = w.feed(f);
        assert!(
            caught_up,
            "v{version:?}: saw up to {} of {last}: {:?}",
            node.last_seen_order, node.sessions
        );
        let mut all: Vec<i64> = vec![];
        for (after, orders) in &node.sessions {
            assert!(
                orders.iter().all(|o| o > after),
                "v{version:?}: {orders:?} after {after}"
            );
            all.extend(orders);
        }
        assert!(
            all.windows(2).all(|p| p[0] < p[1]),
            "v{version:?}: a repeat or a reordering: {:?}",
            node.sessions
        );
        assert_eq!(all, visible, "v{version:?}: a gap");
        assert!(
            node.sessions.len() > 1,
            "the connection was cut at least once"
        );
        assert!(node.fatal.is_empty(), "v{version:?}: {:?}", node.fatal);
        if version.is_none() {
            assert_eq!(node.pings, 0);
        }
        // Exactly once, across cuts and crashes: every INBOX the hub took (its stored sequence)
        // made one channel owned by the client's user, and no channel came without one.
        let by_client = w
            .store
            .events
            .values()
            .filter(|e| {
                e.kind == "ChannelCreated" && e.json.contains(&format!("\"owner\":{}", trader.uid))
            })
            .count() as i64;
        let stored = w.store.feed_clients["bot"].last_sequence;
        assert_eq!(
            by_client, stored,
            "v{version:?}: INBOX operations and sequences"
        );
        assert!(stored > 0);
        w.assert_invariants();
    }
);
