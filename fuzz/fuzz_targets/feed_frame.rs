//! Arbitrary frames into an open secure-feed connection (after a real handshake, each client
//! generation): never a panic; a frame that is not a valid client message closes with the
//! uniform error; INBOX sequences only ever continue.
#![no_main]
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use switchboard_core::feed::client::FeedClient;
use switchboard_core::feed::crypto::{self, PrivateKey};
use switchboard_core::feed::{ClientInfo, FeedConfig, FeedConn, FeedOutput, UNIFORM_ERROR};

fn keys() -> &'static (PrivateKey, PrivateKey) {
    static K: OnceLock<(PrivateKey, PrivateKey)> = OnceLock::new();
    K.get_or_init(|| {
        (
            crypto::private_key_from_pem(include_str!("../../core/src/feed/testdata/server.pem")).expect("key"),
            crypto::private_key_from_pem(include_str!("../../core/src/feed/testdata/client_a.pem")).expect("key"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&v, frames)) = data.split_first() else {
        return;
    };
    let (server_key, client_key) = keys();
    let version = [None, Some(2), Some(3), Some(5)][usize::from(v % 4)];
    let now = Instant::now();
    let mut conn = FeedConn::new(now, FeedConfig::new(Arc::new(server_key.clone())), [3; 32]);
    let mut client = FeedClient::connect("alice", client_key.clone(), &server_key.to_public_key(), version, 0, 2);
    for _ in 0..3 {
        while let Some(m) = client.outgoing.pop_front() {
            conn.handle_message(now, &m);
        }
        while let Some(o) = conn.poll_output() {
            match o {
                FeedOutput::Binary(b) => client.handle_message(&b),
                FeedOutput::LookupClient { .. } => conn.handle_client(
                    now,
                    Some(ClientInfo {
                        public_key: client_key.to_public_key(),
                        last_sequence: 10,
                        challenge: vec![1; 32],
                    }),
                ),
                _ => {}
            }
        }
    }
    assert!(conn.is_open());
    let mut last = 10;
    for frame in frames.split(|b| *b == 0xfe) {
        conn.handle_message(now, frame);
        while let Some(o) = conn.poll_output() {
            match o {
                FeedOutput::Inbox { sequence, .. } => {
                    assert_eq!(sequence, last + 1);
                    last = sequence;
                }
                FeedOutput::Close { code, reason } => {
                    assert!(code == 4001 || reason == UNIFORM_ERROR, "{code} {reason}");
                }
                _ => {}
            }
        }
    }
});
