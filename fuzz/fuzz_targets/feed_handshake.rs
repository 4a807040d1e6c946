//! Arbitrary binary messages into the secure feed's server machine before and during the
//! handshake (a real hello first when the input asks for it): never a panic, never
//! authenticated without the client's signature, and after a close nothing more.
#![no_main]
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard_core::feed::client::FeedClient;
use switchboard_core::feed::crypto;
use switchboard_core::feed::{ClientInfo, FeedConfig, FeedConn, FeedOutput};

fuzz_target!(|data: &[u8]| {
    let server_key = crypto::private_key_from_pem(include_str!("../../core/src/feed/testdata/server.pem"))
        .expect("key");
    let client_key = crypto::private_key_from_pem(include_str!("../../core/src/feed/testdata/client_a.pem"))
        .expect("key");
    let now = Instant::now();
    let public = server_key.to_public_key();
    let mut conn = FeedConn::new(now, FeedConfig::new(Arc::new(server_key)), [7; 32]);
    let mut chunks = data.split(|b| *b == 0xfe);
    if data.first() == Some(&1) {
        let version = data.get(1).map(|v| u32::from(*v % 6)).filter(|v| *v > 0);
        let mut client = FeedClient::connect("alice", client_key.clone(), &public, version, 0, 1);
        let hello = client.outgoing.pop_front().expect("hello");
        conn.handle_message(now, &hello);
        chunks.next();
    }
    let mut closed = false;
    let mut t = now;
    for chunk in chunks {
        conn.handle_message(t, chunk);
        t += Duration::from_millis(300);
        conn.handle_timeout(t);
        while let Some(o) = conn.poll_output() {
            assert!(!closed, "output after the close: {o:?}");
            match o {
                FeedOutput::LookupClient { .. } => conn.handle_client(
                    t,
                    Some(ClientInfo {
                        public_key: client_key.to_public_key(),
                        last_sequence: 0,
                        challenge: vec![0xaa; 32],
                    }),
                ),
                FeedOutput::Authenticated { .. } => panic!("authenticated without a signature"),
                FeedOutput::Close { .. } => closed = true,
                _ => {}
            }
        }
    }
});
