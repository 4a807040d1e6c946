//! The relay machine under a seeded, lossy UDP network on a virtual clock: loss, duplication,
//! reordering, member expiry, address changes, spoofed uids and unsigned system packets.
//! Seeds as in `sim_link` (`SIM_SEEDS`, `SIM_SEED`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchboard_core::relay::{
    DropReason, JOIN_TOKEN_LEN, Operation, PACKET_LEN, Relay, RelayCommand, RelayConfig,
    RelayEvent, Route, packet,
};
use switchboard_tests::sim::for_each_seed;

const FILE: &str = "sim_relay";
const CH: u64 = 7;

/// A datagram in flight: (from, to or None for the relay, bytes).
type Datagram = (SocketAddr, Option<SocketAddr>, Vec<u8>);

/// A datagram network: each datagram is lost, duplicated or delayed (so reordered) at random.
struct Udp {
    rng: ChaCha8Rng,
    loss: f64,
    dup: f64,
    /// (deliver at, seq) -> (from, to, bytes); `to` = None means "to the relay".
    queue: BTreeMap<(Instant, u64), Datagram>,
    seq: u64,
}

impl Udp {
    fn send(&mut self, now: Instant, from: SocketAddr, to: Option<SocketAddr>, bytes: &[u8]) {
        if self.rng.gen_bool(self.loss) {
            return;
        }
        let copies = if self.rng.gen_bool(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = Duration::from_micros(self.rng.gen_range(1_000..30_000));
            self.seq += 1;
            self.queue
                .insert((now + delay, self.seq), (from, to, bytes.to_vec()));
        }
    }
}

struct Sim {
    now: Instant,
    relay: Relay,
    udp: Udp,
    /// What each address received: (sender uid, payload tag).
    received: BTreeMap<SocketAddr, Vec<(u64, u32)>>,
    events: Vec<RelayEvent>,
}

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, (i % 250) as u8 + 1], 40_000 + i))
}

impl Sim {
    #[allow(clippy::disallowed_methods)] // virtual time zero
    fn new(seed: u64, loss: f64, dup: f64) -> Sim {
        let now = Instant::now();
        let cfg = RelayConfig {
            member_expiry: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(1),
            hash_seed: seed,
        };
        let mut relay = Relay::new(cfg);
        relay
            .handle_command(
                now,
                RelayCommand::OpenChannel {
                    channel: CH,
                    port: 50_000,
                },
            )
            .expect("open");
        Sim {
            now,
            relay,
            udp: Udp {
                rng: ChaCha8Rng::seed_from_u64(seed),
                loss,
                dup,
                queue: BTreeMap::new(),
                seq: 0,
            },
            received: BTreeMap::new(),
            events: vec![],
        }
    }

    fn user_packet(uid: u64, tag: u32) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        packet::write_user(&mut b, uid, &tag.to_be_bytes()).expect("user packet");
        b
    }

    /// Runs the network and the relay's timers until `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            let next_net = self.udp.queue.keys().next().map(|(t, _)| *t);
            let next_timer = self.relay.poll_timeout();
            let next = [next_net, next_timer].into_iter().flatten().min();
            let Some(t) = next.filter(|t| *t <= until) else {
                break;
            };
            self.now = self.now.max(t);
            if next_timer.is_some_and(|x| x <= self.now) {
                self.relay.handle_timeout(self.now);
                while let Some(e) = self.relay.poll_event() {
                    self.events.push(e);
                }
            }
            while let Some((&k, _)) = self.udp.queue.iter().next() {
                if k.0 > self.now {
                    break;
                }
                let Some((from, to, bytes)) = self.udp.queue.remove(&k) else {
                    break;
                };
                match to {
                    Some(dst) => {
                        let uid = u64::from_be_bytes(bytes[..8].try_into().expect("8"));
                        let tag = u32::from_be_bytes(bytes[8..12].try_into().expect("4"));
                        self.received.entry(dst).or_default().push((uid, tag));
                    }
                    None => {
                        let mut outs: Vec<SocketAddr> = vec![];
                        match self.relay.route(self.now, CH, from, &bytes) {
                            Route::Forward(t) => outs.extend(t.iter().copied()),
                            Route::Reply { .. } | Route::Accepted | Route::Drop(_) => {}
                        }
                        for dst in outs {
                            self.udp.send(self.now, from, Some(dst), &bytes);
                        }
                        while let Some(e) = self.relay.poll_event() {
                            self.events.push(e);
                        }
                    }
                }
            }
        }
        self.now = self.now.max(until);
    }

    fn send(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.udp.send(self.now, from, None, bytes);
    }

    fn join(&mut self, uid: u64, token: Option<[u8; JOIN_TOKEN_LEN]>) {
        self.relay
            .handle_command(
                self.now,
                RelayCommand::Join {
                    channel: CH,
                    uid,
                    token,
                },
            )
            .expect("join");
    }
}

#[test]
fn members_hear_each_other_through_loss_duplication_and_reordering() {
    for_each_seed(
        "members_hear_each_other_through_loss_duplication_and_reordering",
        FILE,
        8,
        |seed| {
            let mut s = Sim::new(seed, 0.10, 0.05);
            for uid in 1..=4 {
                s.join(uid, None);
            }
            // 50 packets/s per talker for 2 s.
            for round in 0..100u32 {
                for uid in 1..=4u64 {
                    let p = Sim::user_packet(uid, round);
                    s.send(addr(uid as u16), &p);
                }
                let t = s.now + Duration::from_millis(20);
                s.run_until(t);
            }
            s.run_until(s.now + Duration::from_secs(1));
            for uid in 1..=4u64 {
                let got = &s.received[&addr(uid as u16)];
                assert!(
                    got.iter().all(|(from, _)| *from != uid),
                    "nobody hears itself"
                );
                for other in (1..=4u64).filter(|o| *o != uid) {
                    let n = got.iter().filter(|(f, _)| *f == other).count();
                    // ~81% survive two lossy hops (plus duplicates); the first packet binds the
                    // sender, so a lost first packet costs a little more.
                    assert!(n >= 60, "{uid} heard {other} only {n} times");
                }
            }
            assert_eq!(s.relay.drop_counters().get(DropReason::NotMember), 0);
        },
    );
}

#[test]
fn silent_members_expire_after_sixty_seconds_and_keepalives_keep_them() {
    for_each_seed(
        "silent_members_expire_after_sixty_seconds_and_keepalives_keep_them",
        FILE,
        8,
        |seed| {
            let mut s = Sim::new(seed, 0.0, 0.0);
            s.join(1, None);
            s.join(2, None);
            s.send(addr(1), &Sim::user_packet(1, 0));
            s.send(addr(2), &Sim::user_packet(2, 0));
            let start = s.now;
            // Member 1 keeps alive every 20 s; member 2 goes silent.
            for _ in 0..6 {
                let mut k = [0u8; PACKET_LEN];
                packet::write_system(&mut k, Operation::Keepalive, 1, 0).expect("keepalive");
                s.send(addr(1), &k);
                s.run_until(s.now + Duration::from_secs(20));
            }
            let expired: Vec<&RelayEvent> = s
                .events
                .iter()
                .filter(|e| matches!(e, RelayEvent::MemberExpired { .. }))
                .collect();
            assert_eq!(
                expired,
                vec![&RelayEvent::MemberExpired {
                    channel: CH,
                    uid: 2
                }]
            );
            assert_eq!(s.relay.member_count(CH), 1);
            assert!(s.now - start >= Duration::from_secs(60));
        },
    );
}

#[test]
fn spoofed_uids_and_foreign_addresses_are_dropped_and_counted() {
    for_each_seed(
        "spoofed_uids_and_foreign_addresses_are_dropped_and_counted",
        FILE,
        8,
        |seed| {
            let mut s = Sim::new(seed, 0.0, 0.0);
            s.join(1, None);
            s.join(2, None);
            s.send(addr(1), &Sim::user_packet(1, 1));
            s.send(addr(2), &Sim::user_packet(2, 1));
            s.run_until(s.now + Duration::from_millis(100));
            // An attacker who knows uid 1 sends from elsewhere; a non-member sends too.
            s.send(addr(99), &Sim::user_packet(1, 666));
            s.send(addr(98), &Sim::user_packet(5, 666));
            s.run_until(s.now + Duration::from_millis(100));
            assert!(
                s.received
                    .get(&addr(2))
                    .is_none_or(|g| g.iter().all(|(_, t)| *t != 666)),
                "spoof forwarded"
            );
            assert_eq!(s.relay.drop_counters().get(DropReason::WrongAddress), 1);
            assert_eq!(s.relay.drop_counters().get(DropReason::NotMember), 1);
            // Short, long and garbage datagrams are dropped, never a panic.
            s.send(addr(1), &[0u8; 100]);
            s.send(addr(1), &[0u8; 600]);
            let mut wrong_magic = Sim::user_packet(1, 3);
            wrong_magic[..4].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
            s.send(addr(1), &wrong_magic);
            s.run_until(s.now + Duration::from_millis(100));
            assert!(s.relay.drop_counters().get(DropReason::WrongSize) >= 2);
        },
    );
}

#[test]
fn a_join_token_binds_strongly_and_allows_a_new_address() {
    for_each_seed(
        "a_join_token_binds_strongly_and_allows_a_new_address",
        FILE,
        8,
        |seed| {
            let mut s = Sim::new(seed, 0.0, 0.0);
            let token = [7u8; JOIN_TOKEN_LEN];
            s.join(1, Some(token));
            s.join(2, None);
            s.send(addr(2), &Sim::user_packet(2, 0));
            // Data before the JOIN packet does not bind a token member.
            s.send(addr(1), &Sim::user_packet(1, 1));
            s.run_until(s.now + Duration::from_millis(100));
            assert!(s.relay.member_addr(CH, 1).is_none());
            // A JOIN with the wrong token does not bind either; the right one does.
            let mut j = [0u8; PACKET_LEN];
            packet::write_join(&mut j, 1, 0, &[9u8; JOIN_TOKEN_LEN]).expect("join");
            s.send(addr(1), &j);
            s.run_until(s.now + Duration::from_millis(100));
            assert!(s.relay.member_addr(CH, 1).is_none());
            packet::write_join(&mut j, 1, 0, &token).expect("join");
            s.send(addr(1), &j);
            s.run_until(s.now + Duration::from_millis(100));
            assert_eq!(s.relay.member_addr(CH, 1), Some(addr(1)));
            // The member moves (NAT rebinding): only the token re-binds it.
            s.send(addr(50), &Sim::user_packet(1, 2));
            s.run_until(s.now + Duration::from_millis(100));
            assert_eq!(
                s.relay.member_addr(CH, 1),
                Some(addr(1)),
                "data from a new address does not move it"
            );
            s.send(addr(50), &j);
            s.run_until(s.now + Duration::from_millis(100));
            assert_eq!(s.relay.member_addr(CH, 1), Some(addr(50)));
            s.send(addr(50), &Sim::user_packet(1, 3));
            s.run_until(s.now + Duration::from_millis(100));
            assert!(s.received[&addr(2)].contains(&(1, 3)));
            assert!(
                s.events
                    .iter()
                    .any(|e| matches!(e, RelayEvent::MemberBound { uid: 1, .. }))
            );
        },
    );
}

#[test]
fn unsigned_or_badly_signed_system_commands_are_dropped() {
    for_each_seed(
        "unsigned_or_badly_signed_system_commands_are_dropped",
        FILE,
        4,
        |seed| {
            use switchboard_core::relay::{CommandKey, CommandSigner, CommandVerifier};
            let mut s = Sim::new(seed, 0.0, 0.0);
            let key = CommandKey::new(b"hub and relay share this");
            let mut verifier = CommandVerifier::new(key.clone());
            let mut signer = CommandSigner::new(key, 1);
            let mut other = CommandSigner::new(CommandKey::new(b"someone else"), 1);
            let cmd = RelayCommand::Join {
                channel: CH,
                uid: 3,
                token: None,
            };
            let mut buf = [0u8; PACKET_LEN];
            let wall = Duration::from_secs(1_700_000_000);
            // A forged command (wrong key) and an unsigned KV JOIN packet are refused.
            other
                .encode(&cmd, 0, wall.as_millis() as u64, &mut buf)
                .expect("encode");
            assert!(verifier.verify(&buf, wall).is_err());
            let mut plain = [0u8; PACKET_LEN];
            packet::write_system(&mut plain, Operation::Join, 3, 0).expect("join");
            assert!(verifier.verify(&plain, wall).is_err());
            // The hub's own signature is accepted once; a replay is refused.
            signer
                .encode(&cmd, 0, wall.as_millis() as u64, &mut buf)
                .expect("encode");
            let v = verifier.verify(&buf, wall).expect("signed by the hub");
            assert!(verifier.verify(&buf, wall).is_err(), "replay refused");
            s.relay.handle_command(s.now, v.command).expect("apply");
            assert_eq!(s.relay.member_count(CH), 1);
        },
    );
}
