//! The network keeps TCP's promises whatever the faults: each pipe delivers every byte once,
//! in order, after its handshake segments.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchboard_core::hub::ConnId;

use super::*;
use crate::sim::clock::Clock;

#[test]
fn every_pipe_delivers_its_bytes_once_in_order_under_faults() {
    for seed in 0..50u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut net = Network::new(NetConfig::hostile(0.2), seed);
        let clock = Clock::new(Duration::from_secs(3600));
        let mut now = clock.now();
        let conns: Vec<(ConnId, NodeId)> = (1..=4).map(|c| (ConnId(c), (c % 2) as usize)).collect();
        let mut sent: BTreeMap<(ConnId, Dir), Vec<u8>> = BTreeMap::new();
        let mut got: BTreeMap<(ConnId, Dir), Vec<u8>> = BTreeMap::new();
        let mut up: BTreeMap<(ConnId, Dir), bool> = BTreeMap::new();
        for (c, n) in &conns {
            net.open(now, *c, *n);
        }
        let mut counter = 0u8;
        for _ in 0..400 {
            now += Duration::from_millis(rng.gen_range(0..40));
            match rng.gen_range(0..20) {
                0 => net.partition(rng.gen_range(0..2)),
                1 => net.heal(now, rng.gen_range(0..2)),
                2 => net.freeze(rng.gen_range(0..2)),
                3 => net.thaw(now, rng.gen_range(0..2)),
                _ => {
                    let (c, _) = conns[rng.gen_range(0..conns.len())];
                    let dir = if rng.gen_bool(0.5) {
                        Dir::ToHub
                    } else {
                        Dir::ToPeer
                    };
                    let len = rng.gen_range(1..3000);
                    let bytes: Vec<u8> = (0..len)
                        .map(|_| {
                            counter = counter.wrapping_add(1);
                            counter
                        })
                        .collect();
                    // Stream bytes go only once the handshake let them (as the world does).
                    if up.get(&(c, dir)).copied().unwrap_or(false) {
                        sent.entry((c, dir)).or_default().extend_from_slice(&bytes);
                        net.send(now, c, dir, &bytes);
                    }
                }
            }
            while let Some(d) = net.pop_due(now) {
                match d.payload {
                    Payload::Syn => net.accept_syn(now, d.conn),
                    Payload::Established => {
                        up.insert((d.conn, Dir::ToHub), true);
                    }
                    Payload::Accept => {
                        up.insert((d.conn, Dir::ToPeer), true);
                    }
                    Payload::Bytes(b) => {
                        assert!(
                            up.contains_key(&(d.conn, Dir::ToHub)),
                            "bytes before the handshake"
                        );
                        got.entry((d.conn, d.dir))
                            .or_default()
                            .extend_from_slice(&b);
                    }
                    Payload::Fin | Payload::Reset => panic!("nothing closed"),
                }
            }
        }
        for n in 0..2 {
            net.heal(now, n);
            net.thaw(now, n);
        }
        while let Some(t) = net.next_delivery() {
            now = now.max(t);
            while let Some(d) = net.pop_due(now) {
                if let Payload::Bytes(b) = d.payload {
                    got.entry((d.conn, d.dir))
                        .or_default()
                        .extend_from_slice(&b);
                }
            }
        }
        assert_eq!(got, sent, "seed {seed}");
        assert!(
            net.stats.retransmissions > 0 && net.stats.coalesced > 0,
            "{:?}",
            net.stats
        );
    }
}

#[test]
fn a_syn_to_no_hub_is_refused_and_a_dead_hub_resets() {
    let clock = Clock::new(Duration::from_secs(60));
    let now = clock.now();
    let mut net = Network::new(NetConfig::default(), 1);
    net.open(now, ConnId(1), 0);
    let t = net.next_delivery().expect("SYN");
    let syn = net.pop_due(t).expect("due");
    assert_eq!(syn.payload, Payload::Syn);
    net.refuse(t, ConnId(1));
    let t = net.next_delivery().expect("RST");
    let rst = net.pop_due(t).expect("due");
    assert_eq!((rst.dir, rst.payload), (Dir::ToPeer, Payload::Reset));
    // Bytes in flight to the peer arrive before the reset of a hub that died.
    net.open(t, ConnId(2), 0);
    net.send(t, ConnId(2), Dir::ToPeer, b"last words");
    net.hub_reset(t, ConnId(2));
    let mut seen = vec![];
    while let Some(at) = net.next_delivery() {
        while let Some(d) = net.pop_due(at) {
            seen.push((d.dir, d.payload));
        }
    }
    assert_eq!(seen.last(), Some(&(Dir::ToPeer, Payload::Reset)));
    assert!(
        seen.iter().all(|(d, _)| *d == Dir::ToPeer),
        "the SYN died with the hub"
    );
}
