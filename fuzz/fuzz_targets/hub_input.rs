//! Arbitrary bytes into hub connections: one as an agent (certificate matching its hello,
//! authenticated), one as an admin session, one as a KV connection. Never a panic; the hub
//! keeps its invariants (no sends to a connection after it was closed).
#![no_main]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard_core::hub::{ConnId, Hub, HubAction, HubConfig, PeerInfo, StoredState};
use switchboard_core::kv::KvConfig;
use switchboard_core::link::{frame, msg};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut hub = Hub::new(HubConfig::default(), 1, now, 0);
    hub.load(StoredState::default(), now);
    hub.register_agent("a".into(), "$argon2id$x".into(), vec![]);
    let peer = |cert: Option<&str>| PeerInfo { addr: "127.0.0.1:9".parse().expect("addr"), cert_name: cert.map(str::to_string), cert: None, web: false };
    hub.accept(now, ConnId(1), peer(Some("a")));
    hub.accept(now, ConnId(2), peer(Some("admin")));
    hub.accept_kv(now, ConnId(3), peer(None), KvConfig::default());
    hub.handle_input(now, ConnId(1), &frame::encode(&msg::client_hello("a", "s")));
    let mut closed = BTreeSet::new();
    let mut t = now;
    let drain = |hub: &mut Hub, t: Instant, closed: &mut BTreeSet<ConnId>| {
        while let Some(a) = hub.poll_action() {
            match a {
                HubAction::Send { conn, .. } => assert!(!closed.contains(&conn), "send after close on {conn:?}"),
                HubAction::Close { conn, .. } => {
                    closed.insert(conn);
                }
                HubAction::VerifySecret { ticket, .. } => hub.handle_verified(t, ticket, true),
                _ => {}
            }
        }
    };
    drain(&mut hub, t, &mut closed);
    for chunk in data.chunks(11) {
        let conn = ConnId(1 + (chunk[0] % 3) as u64);
        hub.handle_input(t, conn, &chunk[1..]);
        drain(&mut hub, t, &mut closed);
        t += Duration::from_millis(chunk[0] as u64 * 30);
        hub.handle_timeout(t);
        drain(&mut hub, t, &mut closed);
    }
});
