//! Arbitrary datagrams into the relay packet parser and the relay machine's data path:
//! never a panic; a forward never includes the sender.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard_core::relay::{Relay, RelayCommand, RelayConfig, Route, packet};

fuzz_target!(|data: &[u8]| {
    let _ = packet::parse(data);
    let now = Instant::now();
    let mut relay = Relay::new(RelayConfig { member_expiry: Duration::from_secs(60), sweep_interval: Duration::from_secs(1), hash_seed: 1 });
    let _ = relay.handle_command(now, RelayCommand::OpenChannel { channel: 1, port: 5000 });
    for uid in 1..4u64 {
        let _ = relay.handle_command(now, RelayCommand::Join { channel: 1, uid, token: None });
    }
    // Datagrams of arbitrary sizes from a few addresses, cut from the input.
    let mut t = now;
    for (i, chunk) in data.chunks(512).enumerate() {
        let from = SocketAddr::from(([10, 0, 0, (i % 3) as u8 + 1], 4000));
        t += Duration::from_millis(chunk.len() as u64 * 100);
        relay.handle_timeout(t);
        if let Route::Forward(targets) = relay.route(t, 1, from, chunk) {
            assert!(targets.iter().all(|a| *a != from), "forwarded to the sender");
        }
        while relay.poll_event().is_some() {}
    }
});
