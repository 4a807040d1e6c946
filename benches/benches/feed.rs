//! Criterion benchmarks of the secure feed, each beside the raw cryptography it is built on,
//! measured in the same run: server handshakes vs one RSA-2048 OAEP decryption (blinded),
//! frames in and out vs AES-256-CBC on the same bytes.
//!
//! `cargo bench -p switchboard-benches --bench feed`
#![allow(missing_docs, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand_core::SeedableRng;
use switchboard_core::feed::client::FeedClient;
use switchboard_core::feed::crypto::{self, PrivateKey};
use switchboard_core::feed::messages::ServerMessage;
use switchboard_core::feed::{ClientInfo, FeedConfig, FeedConn, FeedOutput};

fn key(name: &str) -> PrivateKey {
    let pem = match name {
        "server" => include_str!("../../core/src/feed/testdata/server.pem"),
        _ => include_str!("../../core/src/feed/testdata/client_a.pem"),
    };
    crypto::private_key_from_pem(pem).expect("key")
}

const CHALLENGE: [u8; 32] = [0xaa; 32];

/// A handshake's client messages, recorded once: the hello and the signature over the fixed
/// challenge.
fn recorded(version: Option<u32>) -> (Vec<u8>, Vec<u8>) {
    let server = key("server");
    let mut client =
        FeedClient::connect("bot", key("client"), &server.to_public_key(), version, 0, 1);
    let hello = client.outgoing.pop_front().expect("hello");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let signature = crypto::pss_sign(&key("client"), &mut rng, &CHALLENGE).expect("sign");
    (hello, signature)
}

fn info() -> ClientInfo {
    ClientInfo {
        public_key: key("client").to_public_key(),
        last_sequence: 0,
        challenge: CHALLENGE.to_vec(),
    }
}

fn handshake(cfg: &FeedConfig, hello: &[u8], signature: &[u8], info: &ClientInfo) -> FeedConn {
    let now = Instant::now();
    let mut conn = FeedConn::new(now, cfg.clone(), [9; 32]);
    conn.handle_message(now, hello);
    while let Some(o) = conn.poll_output() {
        if let FeedOutput::LookupClient { .. } = o {
            conn.handle_client(now, Some(info.clone()));
        }
    }
    conn.handle_message(now, signature);
    while conn.poll_output().is_some() {}
    conn
}

fn handshakes(c: &mut Criterion) {
    let server = Arc::new(key("server"));
    let cfg = FeedConfig::new(server.clone());
    let (hello, signature) = recorded(Some(5));
    let info = info();
    let mut g = c.benchmark_group("feed");
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw/rsa2048_oaep_decrypt_blinded", |b| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        b.iter(|| black_box(crypto::oaep_decrypt(&server, &mut rng, black_box(&hello))))
    });
    g.bench_function("handshake/server_side", |b| {
        b.iter(|| {
            let conn = handshake(&cfg, &hello, &signature, &info);
            assert!(conn.is_open());
            black_box(conn)
        })
    });
    g.finish();
}

fn frames(c: &mut Criterion) {
    let server = Arc::new(key("server"));
    let cfg = FeedConfig {
        rate: 1e12,
        burst: 1e12,
        ..FeedConfig::new(server.clone())
    };
    let payload = format!(
        r#"{{"@type": "ListChannelsRequest", "pad": "{}"}}"#,
        "x".repeat(980)
    );
    let mut g = c.benchmark_group("feed");
    g.throughput(Throughput::Bytes(1024));
    // The raw AES-256-CBC of a 1 KiB frame, both ways.
    let aes_key = [7u8; 32];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let sealed = crypto::seal(&aes_key, &mut rng, &[5u8; 1024]);
    g.bench_function("raw/aes256cbc_open_1k", |b| {
        b.iter(|| black_box(crypto::open(&aes_key, black_box(&sealed))))
    });
    g.bench_function("raw/aes256cbc_seal_1k", |b| {
        b.iter(|| black_box(crypto::seal(&aes_key, &mut rng, black_box(&[5u8; 1024]))))
    });
    for (name, version) in [
        ("frame_in/v5_1k", Some(5)),
        ("frame_in/v2_signed_1k", Some(2)),
    ] {
        let (hello, _) = recorded(version);
        let mut client =
            FeedClient::connect("bot", key("client"), &server.to_public_key(), version, 0, 1);
        client.outgoing.clear();
        // The client reads the reply its hello gets, signs, and can send frames.
        let now = Instant::now();
        let mut conn = FeedConn::new(now, cfg.clone(), [9; 32]);
        conn.handle_message(now, &hello);
        while let Some(o) = conn.poll_output() {
            match o {
                FeedOutput::LookupClient { .. } => conn.handle_client(now, Some(info())),
                FeedOutput::Binary(b) => client.handle_message(&b),
                _ => {}
            }
        }
        while let Some(o) = conn.poll_output() {
            if let FeedOutput::Binary(b) = o {
                client.handle_message(&b);
            }
        }
        let signature = client.outgoing.pop_front().expect("signature");
        conn.handle_message(now, &signature);
        while conn.poll_output().is_some() {}
        assert!(conn.is_open());
        client.send_rpc(1, payload.as_bytes());
        let frame = client.outgoing.pop_front().expect("frame");
        g.bench_function(name, |b| {
            b.iter(|| {
                conn.handle_message(now, black_box(&frame));
                black_box(conn.poll_output())
            })
        });
        if version == Some(5) {
            let event = ServerMessage::Outbox {
                order: 1,
                timestamp: 1.7e9,
                json: payload.clone().into_bytes(),
            };
            g.bench_function("frame_out/outbox_1k", |b| {
                b.iter(|| {
                    conn.send(black_box(&event));
                    black_box(conn.poll_output())
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, handshakes, frames);
criterion_main!(benches);
