//! The relay decision in memory (DESIGN.md §8, BENCHMARKS.md): 1,000 channels of `fanout + 1`
//! bound members, senders chosen at random (seeded), time passed in, 64 input packets per
//! iteration, caller-owned buffers. Throughput is in input packets.
//!
//! Baseline in the same run (absolute packets per second vary several-fold between machines):
//! a naive decision with the same inputs, a `HashMap<(channel, uid), member>` lookup (address
//! check, last-seen update) and a `Vec` of the other members' addresses built per packet. The
//! ratio is printed at the end.
//!
//! Run: `cargo bench -p switchboard-benches --bench relay -- relay_decision`.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use switchboard_core::relay::packet::{self, PACKET_LEN};
use switchboard_core::relay::{Relay, RelayCommand, RelayConfig, Route};

const CHANNELS: u64 = 1_000;
const PACKETS_PER_ITER: usize = 64;
/// Distinct prepared inputs cycled through (so the branch predictor cannot learn one packet).
const INPUTS: usize = 8_192;

struct Input {
    channel: u64,
    from: SocketAddr,
    packet: Box<[u8; PACKET_LEN]>,
}

fn member_addr(channel: u64, member: u64) -> SocketAddr {
    let ip = Ipv4Addr::from(0x0a00_0000 | (channel as u32));
    SocketAddr::from((ip, 10_000 + member as u16))
}

fn uid(channel: u64, member: u64) -> u64 {
    channel * 1_000 + member + 1
}

/// A relay with every member bound (each sent one packet), and random inputs.
#[allow(clippy::disallowed_methods)] // a base instant; time is then passed in
fn setup(fanout: u64) -> (Relay, Vec<Input>, Instant) {
    let t0 = Instant::now();
    let mut relay = Relay::new(RelayConfig::default());
    let members = fanout + 1;
    let mut buf = [0u8; PACKET_LEN];
    for channel in 0..CHANNELS {
        let opened = relay.handle_command(t0, RelayCommand::OpenChannel { channel, port: 0 });
        assert!(opened.is_ok());
        for m in 0..members {
            let joined = relay.handle_command(
                t0,
                RelayCommand::Join {
                    channel,
                    uid: uid(channel, m),
                    token: None,
                },
            );
            assert!(joined.is_ok());
            assert!(packet::write_user(&mut buf, uid(channel, m), b"hello").is_ok());
            relay.route(t0, channel, member_addr(channel, m), &buf);
        }
    }
    while relay.poll_event().is_some() {}
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let inputs = (0..INPUTS)
        .map(|_| {
            let channel = rng.next_u64() % CHANNELS;
            let m = rng.next_u64() % members;
            let mut packet = Box::new([0u8; PACKET_LEN]);
            let mut data = [0u8; 64];
            rng.fill_bytes(&mut data);
            assert!(packet::write_user(&mut packet, uid(channel, m), &data).is_ok());
            Input {
                channel,
                from: member_addr(channel, m),
                packet,
            }
        })
        .collect();
    (relay, inputs, t0)
}

/// The naive relay decision: hash maps and a fresh `Vec` per packet.
struct NaiveRelay {
    members: HashMap<(u64, u64), (SocketAddr, Instant)>,
    channels: HashMap<u64, Vec<(u64, SocketAddr)>>,
}

impl NaiveRelay {
    fn new(fanout: u64, t0: Instant) -> NaiveRelay {
        let mut members = HashMap::new();
        let mut channels = HashMap::new();
        for channel in 0..CHANNELS {
            let list: Vec<(u64, SocketAddr)> = (0..=fanout)
                .map(|m| (uid(channel, m), member_addr(channel, m)))
                .collect();
            for (u, a) in &list {
                members.insert((channel, *u), (*a, t0));
            }
            channels.insert(channel, list);
        }
        NaiveRelay { members, channels }
    }

    fn route(
        &mut self,
        now: Instant,
        channel: u64,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Vec<SocketAddr> {
        let Ok(packet::Packet::User(p)) = packet::parse(datagram) else {
            return Vec::new();
        };
        match self.members.get_mut(&(channel, p.uid)) {
            Some((addr, seen)) if *addr == from => *seen = now,
            _ => return Vec::new(),
        }
        self.channels
            .get(&channel)
            .map(|list| {
                list.iter()
                    .filter(|(u, _)| *u != p.uid)
                    .map(|(_, a)| *a)
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn naive_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("relay_decision_naive/fanout");
    group.throughput(Throughput::Elements(PACKETS_PER_ITER as u64));
    for fanout in FANOUTS {
        let (_, inputs, t0) = setup(fanout);
        let mut naive = NaiveRelay::new(fanout, t0);
        let mut out: Vec<SocketAddr> = Vec::with_capacity(PACKETS_PER_ITER * fanout as usize);
        let mut next = 0usize;
        let mut tick = 0u64;
        group.bench_function(fanout.to_string(), |b| {
            b.iter(|| {
                tick += 1;
                let now = t0 + Duration::from_micros(tick);
                out.clear();
                for _ in 0..PACKETS_PER_ITER {
                    let input = &inputs[next];
                    next = (next + 1) % INPUTS;
                    let targets = naive.route(now, input.channel, input.from, &input.packet[..]);
                    assert_eq!(targets.len(), fanout as usize);
                    out.extend_from_slice(&targets);
                }
                black_box(&out);
            })
        });
    }
    group.finish();
}

const FANOUTS: [u64; 4] = [1, 4, 16, 64];

/// Prints switchboard / naive from this run's estimates.
fn ratios() {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
    let base = std::path::Path::new(&dir).join("criterion");
    let mean = |group: &str, f: u64| -> Option<f64> {
        let p = base
            .join(group)
            .join(f.to_string())
            .join("new/estimates.json");
        let text = std::fs::read_to_string(p).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["mean"]["point_estimate"].as_f64()
    };
    for f in FANOUTS {
        if let (Some(s), Some(n)) = (
            mean("relay_decision_fanout", f),
            mean("relay_decision_naive_fanout", f),
        ) {
            println!(
                "relay_decision fanout={f}: switchboard {:.1} ns/packet, naive {:.1} ns/packet, naive/switchboard = {:.2}x",
                s / PACKETS_PER_ITER as f64,
                n / PACKETS_PER_ITER as f64,
                n / s
            );
        }
    }
}

fn relay_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("relay_decision/fanout");
    group.throughput(Throughput::Elements(PACKETS_PER_ITER as u64));
    for fanout in FANOUTS {
        let (mut relay, inputs, t0) = setup(fanout);
        // Caller-owned output list, as a runtime's send batch would be.
        let mut out: Vec<SocketAddr> = Vec::with_capacity(PACKETS_PER_ITER * fanout as usize);
        let mut next = 0usize;
        let mut tick = 0u64;
        group.bench_function(fanout.to_string(), |b| {
            b.iter(|| {
                tick += 1;
                let now = t0 + Duration::from_micros(tick);
                out.clear();
                for _ in 0..PACKETS_PER_ITER {
                    let input = &inputs[next];
                    next = (next + 1) % INPUTS;
                    match relay.route(now, input.channel, input.from, &input.packet[..]) {
                        Route::Forward(targets) => {
                            out.extend_from_slice(targets.before);
                            out.extend_from_slice(targets.after);
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                black_box(&out);
            })
        });
        assert_eq!(relay.drop_counters().total(), 0);
    }
    group.finish();
}

criterion_group!(benches, relay_decision, naive_decision);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
