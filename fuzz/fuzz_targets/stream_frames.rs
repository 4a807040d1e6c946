//! Arbitrary stream frames into the stream machine (an endpoint that accepts every open and
//! sends what its credit allows) and into the hub (as an agent that speaks streams, with two
//! operator sinks on one multicast group and a lossless stream). Never a panic; no endpoint
//! holds more streams than its limit; the hub's queues never pass their caps; no send after a
//! close.
#![no_main]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_core::hub::{ConnId, Hub, HubAction, HubConfig, PeerInfo, StoredState};
use switchboard_core::link::{frame, msg};
use switchboard_core::machine::Action;
use switchboard_core::stream::{Side, StreamEndpoint, StreamEvent, StreamLimits};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

fn open(id: u64, kind: &str, class: pb::StreamClass) -> Bytes {
    let mut o = pb::StreamOpen { stream_id: id, kind: kind.into(), agent_id: "a".into(), class: class as i32, ..Default::default() };
    o.params.insert("interval_ms".into(), "1000".into());
    frame::encode(&msg::wrap(Body::StreamOpen(Box::new(o))))
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    // 1. The endpoint alone.
    let limits = StreamLimits::default();
    let mut ep = StreamEndpoint::new(Side::Client, limits.clone());
    let mut closed = false;
    for chunk in data.chunks(13) {
        ep.handle_input(now, chunk);
        while let Some(a) = ep.poll_action() {
            match a {
                Action::Send(_) => assert!(!closed, "send after close"),
                Action::Close(_) => closed = true,
                Action::Event(StreamEvent::Incoming { id, .. }) => {
                    let _ = ep.accept(id, 0);
                    let room = ep.send_capacity(id).min(100);
                    let _ = ep.send_data(id, 0, true, Bytes::from(vec![0u8; room]));
                }
                Action::Event(StreamEvent::Data { id, payload, .. }) => {
                    let _ = ep.consume(id, payload.len());
                }
                _ => {}
            }
        }
        assert!(ep.len() <= limits.max_per_conn);
    }

    // 2. The hub: an agent that speaks streams sends arbitrary frames.
    let mut hub = Hub::new(HubConfig::default(), 1, now, 0);
    hub.load(StoredState::default(), now);
    hub.register_agent("a".into(), "$argon2id$x".into(), vec![]);
    let peer = |name: &str| PeerInfo::named("127.0.0.1:9".parse().expect("addr"), name);
    hub.accept(now, ConnId(1), peer("a"));
    for s in [2, 3] {
        hub.accept(now, ConnId(s), peer("admin"));
        hub.handle_input(now, ConnId(s), &frame::encode(&msg::wrap(Body::SessionHello(pb::SessionHello::default()))));
    }
    let mut hello = msg::client_hello("a", "s");
    if let Some(Body::ClientHello(h)) = &mut hello.message {
        h.features.push("streams".into());
    }
    hub.handle_input(now, ConnId(1), &frame::encode(&hello));
    let mut gone = BTreeSet::new();
    let drain = |hub: &mut Hub, t: Instant, gone: &mut BTreeSet<ConnId>| {
        while let Some(a) = hub.poll_action() {
            match a {
                HubAction::Send { conn, .. } => assert!(!gone.contains(&conn), "send after close on {conn:?}"),
                HubAction::Close { conn, .. } => {
                    gone.insert(conn);
                }
                HubAction::VerifySecret { ticket, .. } => hub.handle_verified(t, ticket, true),
                _ => {}
            }
        }
    };
    drain(&mut hub, now, &mut gone);
    hub.handle_input(now, ConnId(2), &open(2, "metrics", pb::StreamClass::Latest));
    hub.handle_input(now, ConnId(3), &open(2, "metrics", pb::StreamClass::Latest));
    hub.handle_input(now, ConnId(3), &open(4, "tail", pb::StreamClass::Lossless));
    drain(&mut hub, now, &mut gone);
    let mut t = now;
    for chunk in data.chunks(17) {
        let conn = ConnId(1 + (chunk[0] % 3) as u64);
        hub.handle_input(t, conn, chunk);
        t += Duration::from_millis(chunk[0] as u64 * 20);
        hub.handle_timeout(t);
        drain(&mut hub, t, &mut gone);
        let s = hub.stream_stats();
        assert!(s.queued_bytes <= s.sinks * HubConfig::default().streams.sink_queue);
    }
});
