//! Arbitrary text as a JSON-RPC request, through the envelope and the method mapping, and as
//! WebSocket text frames into a WebConn in front of a hub: never a panic, every call answered
//! with a well-formed response.
#![no_main]
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use switchboard_core::hub::{ConnId, Hub, HubAction, HubConfig, PeerInfo, StoredState};
use switchboard_core::web::jsonrpc::{self, Incoming};
use switchboard_core::web::{WebConfig, WebConn, WebOutput};

fn check_response(v: &serde_json::Value) {
    assert_eq!(v["jsonrpc"], "2.0");
    assert!(v.get("result").is_some() != v.get("error").is_some(), "{v}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match jsonrpc::parse(text) {
        Err(resp) => check_response(&resp),
        Ok(Incoming::Single(c)) => {
            if let Ok(c) = c {
                let _ = jsonrpc::to_request(&c.method, &c.params);
            }
        }
        Ok(Incoming::Batch(calls)) => {
            for c in calls.into_iter().flatten() {
                let _ = jsonrpc::to_request(&c.method, &c.params);
            }
        }
    }
    // The same text through a WebConn (upgraded) in front of a hub.
    let now = Instant::now();
    let mut hub = Hub::new(HubConfig::default(), 1, now, 1_700_000_000_000);
    hub.load(StoredState::default(), now);
    hub.accept(now, ConnId(1), PeerInfo::web("10.0.0.1:1".parse().expect("addr")));
    let mut web = WebConn::new(now, WebConfig::default());
    web.handle_socket(now, b"GET /rpc HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    let mut frame = vec![];
    switchboard_core::web::ws::encode_masked_frame(0x81, data, [0; 4], &mut frame);
    web.handle_socket(now, &frame);
    for _ in 0..8 {
        while let Some(o) = web.poll_output() {
            match o {
                WebOutput::Hub(b) => hub.handle_input(now, ConnId(1), &b),
                WebOutput::Socket(_) | WebOutput::Close => {}
            }
        }
        while let Some(a) = hub.poll_action() {
            match a {
                HubAction::Send { bytes, .. } => web.handle_hub(now, &bytes),
                HubAction::VerifySecret { ticket, .. } => hub.handle_verified(now, ticket, false),
                _ => {}
            }
        }
    }
});
