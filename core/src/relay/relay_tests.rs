use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::relay::packet::{SystemPacket, write_join, write_system, write_user};

const CH: ChannelId = 10;

/// A base instant; time is then passed in.
#[allow(clippy::disallowed_methods)]
fn base() -> Instant {
    Instant::now()
}
const TOKEN: [u8; JOIN_TOKEN_LEN] = [0x5a; JOIN_TOKEN_LEN];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn user(uid: Uid) -> [u8; PACKET_LEN] {
    let mut buf = [0u8; PACKET_LEN];
    write_user(&mut buf, uid, b"opus").expect("valid test input");
    buf
}

fn system(op: Operation, uid: Uid, ackid: u32) -> [u8; PACKET_LEN] {
    let mut buf = [0u8; PACKET_LEN];
    write_system(&mut buf, op, uid, ackid).expect("valid test input");
    buf
}

fn join(uid: Uid, token: &[u8; JOIN_TOKEN_LEN], ackid: u32) -> [u8; PACKET_LEN] {
    let mut buf = [0u8; PACKET_LEN];
    write_join(&mut buf, uid, ackid, token).expect("valid test input");
    buf
}

/// A relay with channel `CH` open and `uids` joined without token.
fn relay_with(t0: Instant, uids: &[Uid]) -> Relay {
    let mut relay = Relay::new(RelayConfig::default());
    relay
        .handle_command(
            t0,
            RelayCommand::OpenChannel {
                channel: CH,
                port: 4000,
            },
        )
        .expect("valid test input");
    for &uid in uids {
        relay
            .handle_command(
                t0,
                RelayCommand::Join {
                    channel: CH,
                    uid,
                    token: None,
                },
            )
            .expect("valid test input");
    }
    relay
}

fn forwarded(route: Route<'_>) -> Vec<SocketAddr> {
    match route {
        Route::Forward(targets) => targets.iter().copied().collect(),
        other => panic!("expected a forward, got {other:?}"),
    }
}

fn events(relay: &mut Relay) -> Vec<RelayEvent> {
    std::iter::from_fn(|| relay.poll_event()).collect()
}

#[test]
fn first_packet_binds_a_member_without_token_and_data_fans_out() {
    let t0 = base();
    let mut relay = relay_with(t0, &[1, 2, 3]);
    assert!(forwarded(relay.route(t0, CH, addr(1), &user(1))).is_empty());
    assert_eq!(
        relay.route(t0, CH, addr(2), &system(Operation::Keepalive, 2, 0)),
        Route::Accepted
    );
    assert_eq!(
        forwarded(relay.route(t0, CH, addr(3), &user(3))),
        vec![addr(1), addr(2)]
    );
    assert_eq!(
        forwarded(relay.route(t0, CH, addr(1), &user(1))),
        vec![addr(2), addr(3)]
    );
    assert_eq!(
        forwarded(relay.route(t0, CH, addr(2), &user(2))),
        vec![addr(1), addr(3)]
    );
    assert_eq!(
        events(&mut relay),
        vec![
            RelayEvent::MemberBound {
                channel: CH,
                uid: 1,
                addr: addr(1)
            },
            RelayEvent::MemberBound {
                channel: CH,
                uid: 2,
                addr: addr(2)
            },
            RelayEvent::MemberBound {
                channel: CH,
                uid: 3,
                addr: addr(3)
            },
        ]
    );
    assert_eq!(relay.member_addr(CH, 2), Some(addr(2)));
    assert_eq!(relay.drop_counters().total(), 0);
}

#[test]
fn non_members_and_unknown_channels_are_dropped_and_counted() {
    let t0 = base();
    let mut relay = relay_with(t0, &[1]);
    assert_eq!(
        relay.route(t0, CH, addr(9), &user(9)),
        Route::Drop(DropReason::NotMember)
    );
    assert_eq!(
        relay.route(t0, 99, addr(1), &user(1)),
        Route::Drop(DropReason::UnknownChannel)
    );
    assert_eq!(
        relay.route(t0, CH, addr(1), &[0u8; 100]),
        Route::Drop(DropReason::WrongSize)
    );
    let mut bad = user(1);
    bad[..8].copy_from_slice(&0x0000_0001_FFFF_FFFFu64.to_be_bytes());
    assert_eq!(
        relay.route(t0, CH, addr(1), &bad),
        Route::Drop(DropReason::InvalidUid)
    );
    let mut bad = system(Operation::Keepalive, 1, 0);
    bad[4..8].copy_from_slice(&1i32.to_be_bytes());
    assert_eq!(
        relay.route(t0, CH, addr(1), &bad),
        Route::Drop(DropReason::UnknownOperation)
    );
    let mut bad = system(Operation::Keepalive, 1, 0);
    bad[21] ^= 0x40;
    assert_eq!(
        relay.route(t0, CH, addr(1), &bad),
        Route::Drop(DropReason::BadChecksum)
    );
    let drops = relay.drop_counters();
    assert_eq!(drops.get(DropReason::NotMember), 1);
    assert_eq!(drops.get(DropReason::UnknownChannel), 1);
    assert_eq!(drops.total(), 6);
    assert_eq!(relay.member_addr(CH, 1), None, "no drop binds the member");
}

#[test]
fn packets_from_another_address_are_dropped() {
    let t0 = base();
    let mut relay = relay_with(t0, &[1, 2]);
    relay.route(t0, CH, addr(1), &user(1));
    relay.route(t0, CH, addr(2), &user(2));
    assert_eq!(
        relay.route(t0, CH, addr(66), &user(1)),
        Route::Drop(DropReason::WrongAddress)
    );
    // A member without token cannot re-bind with a JOIN either.
    assert_eq!(
        relay.route(t0, CH, addr(66), &system(Operation::Join, 1, 0)),
        Route::Drop(DropReason::WrongAddress)
    );
    assert_eq!(relay.drop_counters().get(DropReason::WrongAddress), 2);
    assert_eq!(
        forwarded(relay.route(t0, CH, addr(2), &user(2))),
        vec![addr(1)]
    );
}

#[test]
fn a_member_with_token_binds_only_with_its_join_packet() {
    let t0 = base();
    let mut relay = relay_with(t0, &[1]);
    relay
        .handle_command(
            t0,
            RelayCommand::Join {
                channel: CH,
                uid: 2,
                token: Some(TOKEN),
            },
        )
        .expect("valid test input");
    relay.route(t0, CH, addr(1), &user(1));
    events(&mut relay);
    assert_eq!(
        relay.route(t0, CH, addr(2), &user(2)),
        Route::Drop(DropReason::Unbound)
    );
    assert_eq!(
        relay.route(t0, CH, addr(2), &system(Operation::Keepalive, 2, 0)),
        Route::Drop(DropReason::Unbound)
    );
    assert_eq!(
        relay.route(t0, CH, addr(2), &system(Operation::Join, 2, 0)),
        Route::Drop(DropReason::BadToken)
    );
    assert_eq!(
        relay.route(t0, CH, addr(2), &join(2, &[1; JOIN_TOKEN_LEN], 0)),
        Route::Drop(DropReason::BadToken)
    );
    assert!(
        forwarded(relay.route(t0, CH, addr(1), &user(1))).is_empty(),
        "not bound yet"
    );
    assert_eq!(
        relay.route(t0, CH, addr(2), &join(2, &TOKEN, 0)),
        Route::Accepted
    );
    assert_eq!(
        events(&mut relay),
        vec![RelayEvent::MemberBound {
            channel: CH,
            uid: 2,
            addr: addr(2)
        }]
    );
    assert_eq!(
        forwarded(relay.route(t0, CH, addr(2), &user(2))),
        vec![addr(1)]
    );
    assert_eq!(
        forwarded(relay.route(t0, CH, addr(1), &user(1))),
        vec![addr(2)]
    );
    // Someone else knowing the uid cannot inject.
    assert_eq!(
        relay.route(t0, CH, addr(66), &user(2)),
        Route::Drop(DropReason::WrongAddress)
    );
}

#[test]
fn a_member_with_token_rebinds_after_a_nat_rebinding() {
    let t0 = base();
    let mut relay = relay_with(t0, &[1]);
    relay
        .handle_command(
            t0,
            RelayCommand::Join {
                channel: CH,
                uid: 2,
                token: Some(TOKEN),
            },
        )
        .expect("valid test input");
    relay.route(t0, CH, addr(1), &user(1));
    relay.route(t0, CH, addr(2), &join(2, &TOKEN, 0));
    events(&mut relay);
    assert_eq!(
        relay.route(t0, CH, addr(3), &join(2, &TOKEN, 0)),
        Route::Accepted
    );
    assert_eq!(
        events(&mut relay),
        vec![RelayEvent::MemberBound {
            channel: CH,
            uid: 2,
            addr: addr(3)
        }]
    );
    assert_eq!(
        relay.route(t0, CH, addr(2), &user(2)),
        Route::Drop(DropReason::WrongAddress)
    );
    assert_eq!(
        forwarded(relay.route(t0, CH, addr(1), &user(1))),
        vec![addr(3)]
    );
    // The same JOIN from the same address again binds nothing new.
    assert_eq!(
        relay.route(t0, CH, addr(3), &join(2, &TOKEN, 0)),
        Route::Accepted
    );
    assert!(events(&mut relay).is_empty());
}

#[test]
fn system_packets_with_ackid_are_acknowledged() {
    let t0 = base();
    let mut relay = relay_with(t0, &[1]);
    let Route::Reply { to, packet } =
        relay.route(t0, CH, addr(1), &system(Operation::Keepalive, 1, 77))
    else {
        panic!("expected an ACK")
    };
    assert_eq!(to, addr(1));
    let ack = SystemPacket::parse(packet).expect("valid test input");
    assert_eq!((ack.operation, ack.uid, ack.ackid), (Operation::Ack, 1, 77));
    assert_eq!(
        relay.route(t0, CH, addr(1), &system(Operation::Keepalive, 1, 0)),
        Route::Accepted
    );
    assert_eq!(
        relay.route(t0, CH, addr(1), &system(Operation::Ack, 1, 5)),
        Route::Accepted
    );
    for op in [Operation::Leave, Operation::Kill, Operation::Open] {
        assert_eq!(
            relay.route(t0, CH, addr(1), &system(op, 1, 0)),
            Route::Drop(DropReason::NotAllowed)
        );
    }
}

#[test]
fn silent_members_expire_and_active_ones_stay() {
    let t0 = base();
    let mut relay = Relay::new(RelayConfig {
        member_expiry: Duration::from_secs(60),
        sweep_interval: Duration::from_secs(1),
        ..RelayConfig::default()
    });
    relay
        .handle_command(
            t0,
            RelayCommand::OpenChannel {
                channel: CH,
                port: 1,
            },
        )
        .expect("valid test input");
    for uid in [1, 2, 3] {
        relay
            .handle_command(
                t0,
                RelayCommand::Join {
                    channel: CH,
                    uid,
                    token: None,
                },
            )
            .expect("valid test input");
    }
    assert_eq!(relay.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    relay.route(t0, CH, addr(1), &user(1));
    relay.route(t0, CH, addr(2), &user(2));
    relay.route(t0, CH, addr(3), &user(3));
    events(&mut relay);
    let t30 = t0 + Duration::from_secs(30);
    relay.route(t30, CH, addr(1), &user(1));
    relay.route(t30, CH, addr(2), &system(Operation::Keepalive, 2, 0));
    relay.handle_timeout(t30); // spurious: nothing happens
    assert!(events(&mut relay).is_empty());
    let t60 = t0 + Duration::from_secs(60);
    relay.handle_timeout(t60);
    assert_eq!(
        events(&mut relay),
        vec![RelayEvent::MemberExpired {
            channel: CH,
            uid: 3
        }]
    );
    assert_eq!(relay.member_count(CH), 2);
    assert_eq!(
        relay.route(t60, CH, addr(3), &user(3)),
        Route::Drop(DropReason::NotMember)
    );
    assert_eq!(
        forwarded(relay.route(t60, CH, addr(1), &user(1))),
        vec![addr(2)]
    );
    assert_eq!(relay.poll_timeout(), Some(t30 + Duration::from_secs(60)));
    relay.handle_timeout(t0 + Duration::from_secs(90));
    assert_eq!(
        events(&mut relay),
        vec![RelayEvent::MemberExpired {
            channel: CH,
            uid: 2
        }]
    );
    relay.handle_timeout(t0 + Duration::from_secs(200));
    assert_eq!(
        events(&mut relay),
        vec![RelayEvent::MemberExpired {
            channel: CH,
            uid: 1
        }]
    );
    assert_eq!(relay.poll_timeout(), None);
}

#[test]
fn sweeps_are_spaced_by_the_sweep_interval() {
    let t0 = base();
    let mut relay = relay_with(t0, &[1]);
    relay
        .handle_command(
            t0 + Duration::from_millis(100),
            RelayCommand::Join {
                channel: CH,
                uid: 2,
                token: None,
            },
        )
        .expect("valid test input");
    relay.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(events(&mut relay).len(), 1);
    assert_eq!(relay.poll_timeout(), Some(t0 + Duration::from_secs(61)));
}

#[test]
fn leave_and_close_forget_members() {
    let t0 = base();
    let mut relay = relay_with(t0, &[1, 2, 3]);
    for uid in [1, 2, 3] {
        relay.route(t0, CH, addr(uid as u16), &user(uid));
    }
    relay
        .handle_command(
            t0,
            RelayCommand::Leave {
                channel: CH,
                uid: 1,
            },
        )
        .expect("valid test input");
    assert_eq!(
        relay.route(t0, CH, addr(1), &user(1)),
        Route::Drop(DropReason::NotMember)
    );
    assert_eq!(
        forwarded(relay.route(t0, CH, addr(3), &user(3))),
        vec![addr(2)]
    );
    assert_eq!(
        forwarded(relay.route(t0, CH, addr(2), &user(2))),
        vec![addr(3)]
    );
    assert_eq!(
        relay.handle_command(
            t0,
            RelayCommand::Leave {
                channel: CH,
                uid: 1
            }
        ),
        Err(CommandError::NotMember {
            channel: CH,
            uid: 1
        })
    );
    relay
        .handle_command(t0, RelayCommand::CloseChannel { channel: CH })
        .expect("valid test input");
    assert!(!relay.has_channel(CH));
    assert_eq!(
        relay.route(t0, CH, addr(2), &user(2)),
        Route::Drop(DropReason::UnknownChannel)
    );
    assert_eq!(
        relay.handle_command(
            t0,
            RelayCommand::Join {
                channel: CH,
                uid: 1,
                token: None
            }
        ),
        Err(CommandError::UnknownChannel(CH))
    );
    assert_eq!(
        relay.handle_command(t0, RelayCommand::CloseChannel { channel: CH }),
        Err(CommandError::UnknownChannel(CH))
    );
}

#[test]
fn rejoin_keeps_the_binding_unless_the_token_changes() {
    let t0 = base();
    let mut relay = relay_with(t0, &[1]);
    relay.route(t0, CH, addr(1), &user(1));
    relay
        .handle_command(
            t0,
            RelayCommand::Join {
                channel: CH,
                uid: 1,
                token: None,
            },
        )
        .expect("valid test input");
    assert_eq!(relay.member_addr(CH, 1), Some(addr(1)));
    relay
        .handle_command(
            t0,
            RelayCommand::Join {
                channel: CH,
                uid: 1,
                token: Some(TOKEN),
            },
        )
        .expect("valid test input");
    assert_eq!(relay.member_addr(CH, 1), None);
    assert_eq!(
        relay.route(t0, CH, addr(1), &user(1)),
        Route::Drop(DropReason::Unbound)
    );
    assert_eq!(
        relay.handle_command(
            t0,
            RelayCommand::Join {
                channel: CH,
                uid: u64::MAX,
                token: None
            }
        ),
        Err(CommandError::InvalidUid(u64::MAX))
    );
}

#[test]
fn channels_are_independent() {
    let t0 = base();
    let mut relay = relay_with(t0, &[1, 2]);
    relay
        .handle_command(
            t0,
            RelayCommand::OpenChannel {
                channel: 11,
                port: 4001,
            },
        )
        .expect("valid test input");
    relay
        .handle_command(
            t0,
            RelayCommand::Join {
                channel: 11,
                uid: 1,
                token: None,
            },
        )
        .expect("valid test input");
    relay.route(t0, CH, addr(1), &user(1));
    relay.route(t0, CH, addr(2), &user(2));
    relay.route(t0, 11, addr(5), &user(1));
    assert_eq!(
        forwarded(relay.route(t0, CH, addr(2), &user(2))),
        vec![addr(1)]
    );
    assert!(forwarded(relay.route(t0, 11, addr(5), &user(1))).is_empty());
    assert_eq!(
        relay.route(t0, 11, addr(2), &user(2)),
        Route::Drop(DropReason::NotMember)
    );
    assert_eq!(relay.channel_port(11), Some(4001));
}

#[test]
fn large_channels_find_members_by_hash() {
    let t0 = base();
    let uids: Vec<Uid> = (1..=200).collect();
    let mut relay = relay_with(t0, &uids);
    for &uid in &uids {
        relay.route(t0, CH, addr(uid as u16), &user(uid));
    }
    relay
        .handle_command(
            t0,
            RelayCommand::Leave {
                channel: CH,
                uid: 7,
            },
        )
        .expect("member");
    assert_eq!(
        relay.route(t0, CH, addr(7), &user(7)),
        Route::Drop(DropReason::NotMember)
    );
    let to = forwarded(relay.route(t0, CH, addr(200), &user(200)));
    assert_eq!(to.len(), 198);
    assert!(!to.contains(&addr(200)) && !to.contains(&addr(7)));
    assert_eq!(relay.member_addr(CH, 150), Some(addr(150)));
}

/// An operation of the `relay_machine` model test (stands in for a fuzz target).
#[derive(Debug, Clone)]
enum Step {
    Join(u8, bool),
    Leave(u8),
    Data(u8, u8),
    Keepalive(u8, u8, u32),
    TokenJoin(u8, u8, bool),
    Garbage(Vec<u8>),
    Advance(u16),
    Close,
    Open,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..6, any::<bool>()).prop_map(|(u, t)| Step::Join(u, t)),
        (0u8..6).prop_map(Step::Leave),
        (0u8..6, 0u8..4).prop_map(|(u, a)| Step::Data(u, a)),
        (0u8..6, 0u8..4, 0u32..3).prop_map(|(u, a, k)| Step::Keepalive(u, a, k)),
        (0u8..6, 0u8..4, any::<bool>()).prop_map(|(u, a, good)| Step::TokenJoin(u, a, good)),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Step::Garbage),
        (0u16..40_000).prop_map(Step::Advance),
        Just(Step::Close),
        Just(Step::Open),
    ]
}

proptest! {
    /// Arbitrary command and packet sequences never panic, and forwarding never returns the
    /// sender nor an address twice (each uid uses its own addresses here).
    #[test]
    fn arbitrary_sequences_keep_the_invariants(steps in proptest::collection::vec(step(), 0..120)) {
        let t0 = base();
        let mut now = t0;
        let mut relay = relay_with(t0, &[]);
        for step in steps {
            match step {
                Step::Join(u, t) => {
                    let _ = relay.handle_command(now, RelayCommand::Join { channel: CH, uid: u as u64, token: t.then_some(TOKEN) });
                }
                Step::Leave(u) => { let _ = relay.handle_command(now, RelayCommand::Leave { channel: CH, uid: u as u64 }); }
                Step::Data(u, a) => {
                    let from = addr(u as u16 * 10 + a as u16);
                    if let Route::Forward(targets) = relay.route(now, CH, from, &user(u as u64)) {
                        let all: Vec<_> = targets.iter().copied().collect();
                        prop_assert!(!all.contains(&from));
                        let mut dedup = all.clone();
                        dedup.sort();
                        dedup.dedup();
                        prop_assert_eq!(dedup.len(), all.len());
                    }
                }
                Step::Keepalive(u, a, k) => { relay.route(now, CH, addr(u as u16 * 10 + a as u16), &system(Operation::Keepalive, u as u64, k)); }
                Step::TokenJoin(u, a, good) => {
                    let token = if good { TOKEN } else { [3; JOIN_TOKEN_LEN] };
                    relay.route(now, CH, addr(u as u16 * 10 + a as u16), &join(u as u64, &token, 0));
                }
                Step::Garbage(bytes) => { relay.route(now, CH, addr(9), &bytes); }
                Step::Advance(ms) => {
                    now += Duration::from_millis(ms as u64 * 3);
                    relay.handle_timeout(now);
                }
                Step::Close => { let _ = relay.handle_command(now, RelayCommand::CloseChannel { channel: CH }); }
                Step::Open => { let _ = relay.handle_command(now, RelayCommand::OpenChannel { channel: CH, port: 1 }); }
            }
            while relay.poll_event().is_some() {}
            if let Some(at) = relay.poll_timeout() {
                prop_assert!(at >= t0);
            }
        }
    }
}
