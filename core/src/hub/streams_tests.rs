//! Streams through the hub, driven by hand on a virtual clock: one agent source (an
//! `AgentLink` announcing streams and a `StreamEndpoint`), operator sinks (`ClientSession`s
//! with their endpoints). A sink can be "held": what the hub sends it waits undelivered, as on
//! a link that stopped moving.
#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::hub::{ConnId, Hub, HubAction, HubConfig, PeerInfo, StoredState, UserRecord};
use crate::link::{AgentConfig, AgentEvent, AgentLink, LinkConfig};
use crate::machine::Action;
use crate::perm::Permissions;
use crate::session::{ClientEvent, ClientSession};
use crate::stream::{
    Class, EndCode, OpenRequest, SendOutcome, Side, StreamEndpoint, StreamEvent, StreamLimits,
};

const AGENT: ConnId = ConnId(1);

struct Op {
    session: ClientSession,
    ep: StreamEndpoint,
    events: Vec<StreamEvent>,
    held: Vec<Bytes>,
    hold: bool,
    /// Consume data as it arrives (credit goes back at once).
    consume: bool,
}

struct Net {
    hub: Hub,
    agent: AgentLink,
    aep: StreamEndpoint,
    agent_events: Vec<StreamEvent>,
    /// Resync requests the agent saw, with when.
    resyncs: Vec<Instant>,
    ops: BTreeMap<ConnId, Op>,
    now: Instant,
}

impl Net {
    fn new(users: &[(&str, Permissions)]) -> Net {
        let now = Instant::now();
        let mut hub = Hub::new(HubConfig::default(), 1, now, 1_700_000_000_000);
        let records = users
            .iter()
            .enumerate()
            .map(|(i, (name, p))| UserRecord {
                uid: 10 + i as u64,
                name: (*name).into(),
                permissions: p.0,
                ..UserRecord::default()
            })
            .collect();
        hub.load(
            StoredState {
                users: records,
                ..StoredState::default()
            },
            now,
        );
        hub.register_agent("a1".into(), "$argon2id$x".into(), vec![]);
        hub.accept(
            now,
            AGENT,
            PeerInfo::named("10.0.0.1:1".parse().expect("in test"), "a1"),
        );
        let cfg = AgentConfig {
            agent_id: "a1".into(),
            secret: "s".into(),
            link: LinkConfig::default(),
        };
        let mut net = Net {
            hub,
            agent: AgentLink::with_streams(now, cfg, 2),
            aep: StreamEndpoint::new(Side::Client, StreamLimits::default()),
            agent_events: vec![],
            resyncs: vec![],
            ops: BTreeMap::new(),
            now,
        };
        net.pump();
        assert!(net.agent.is_established());
        net
    }

    fn add_op(&mut self, conn: u64, user: &str) -> ConnId {
        let c = ConnId(conn);
        self.hub.accept(
            self.now,
            c,
            PeerInfo::named("10.0.0.2:1".parse().expect("in test"), user),
        );
        self.ops.insert(
            c,
            Op {
                session: ClientSession::new(self.now, LinkConfig::default(), "t", conn),
                ep: StreamEndpoint::new(Side::Client, StreamLimits::default()),
                events: vec![],
                held: vec![],
                hold: false,
                consume: true,
            },
        );
        self.pump();
        assert!(self.ops[&c].session.is_open());
        c
    }

    fn open(&mut self, c: ConnId, req: OpenRequest) -> u64 {
        let id = self
            .ops
            .get_mut(&c)
            .expect("in test")
            .ep
            .open(req)
            .expect("in test");
        self.pump();
        id
    }

    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(a) = self.hub.poll_action() {
                moved = true;
                match a {
                    HubAction::Send { conn, bytes } if conn == AGENT => {
                        self.agent.handle_input(self.now, &bytes)
                    }
                    HubAction::Send { conn, bytes } => {
                        if let Some(op) = self.ops.get_mut(&conn) {
                            if op.hold {
                                op.held.push(bytes);
                            } else {
                                op.session.handle_input(self.now, &bytes);
                            }
                        }
                    }
                    HubAction::VerifySecret { ticket, .. } => {
                        self.hub.handle_verified(self.now, ticket, true)
                    }
                    _ => {}
                }
            }
            while let Some(a) = self.agent.poll_action() {
                moved = true;
                match a {
                    Action::Send(b) => self.hub.handle_input(self.now, AGENT, &b),
                    Action::Event(AgentEvent::Stream(body)) => {
                        assert!(self.aep.handle_message(self.now, body).is_none());
                    }
                    _ => {}
                }
            }
            while let Some(a) = self.aep.poll_action() {
                moved = true;
                match a {
                    Action::Send(b) => self.agent.send_frame(b).expect("in test"),
                    Action::Event(StreamEvent::ResyncRequested { .. }) => {
                        self.resyncs.push(self.now)
                    }
                    Action::Event(e) => self.agent_events.push(e),
                    _ => {}
                }
            }
            for (&c, op) in self.ops.iter_mut() {
                while let Some(a) = op.session.poll_action() {
                    moved = true;
                    match a {
                        Action::Send(b) => self.hub.handle_input(self.now, c, &b),
                        Action::Event(ClientEvent::Message(m)) => {
                            if let Some(other) = op.ep.handle_message(self.now, m) {
                                op.events.push(StreamEvent::Closed {
                                    id: 0,
                                    code: EndCode::Normal,
                                    reason: format!("{other:?}"),
                                });
                            }
                        }
                        _ => {}
                    }
                }
                while let Some(a) = op.ep.poll_action() {
                    moved = true;
                    match a {
                        Action::Send(b) if op.session.is_open() => {
                            op.session.send_frame(b).expect("in test")
                        }
                        Action::Event(StreamEvent::Data {
                            id,
                            payload,
                            sequence,
                            key_frame,
                            channel,
                        }) => {
                            if op.consume {
                                op.ep.consume(id, payload.len()).expect("in test");
                            }
                            op.events.push(StreamEvent::Data {
                                id,
                                payload,
                                sequence,
                                key_frame,
                                channel,
                            });
                        }
                        Action::Event(e) => op.events.push(e),
                        _ => {}
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network did not settle");
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.hub.handle_timeout(self.now);
        self.agent.handle_timeout(self.now);
        for op in self.ops.values_mut() {
            op.session.handle_timeout(self.now);
        }
        self.pump();
    }

    /// The agent's pending incoming opens.
    fn incoming(&mut self) -> Vec<(u64, crate::stream::StreamEvent)> {
        let mut v = vec![];
        self.agent_events.retain(|e| match e {
            StreamEvent::Incoming { id, .. } => {
                v.push((*id, e.clone()));
                false
            }
            _ => true,
        });
        v
    }

    fn data_seqs(&self, c: ConnId) -> Vec<u64> {
        self.ops[&c]
            .events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Data { sequence, .. } => Some(*sequence),
                _ => None,
            })
            .collect()
    }

    fn release(&mut self, c: ConnId) {
        let op = self.ops.get_mut(&c).expect("in test");
        op.hold = false;
        for b in std::mem::take(&mut op.held) {
            op.session.handle_input(self.now, &b);
        }
        self.pump();
    }
}

fn metrics() -> OpenRequest {
    let mut params = BTreeMap::new();
    params.insert("interval_ms".to_string(), "1000".to_string());
    OpenRequest {
        kind: "metrics".into(),
        agent_id: "a1".into(),
        class: Class::Latest,
        params,
        ..Default::default()
    }
}

fn admin_net() -> Net {
    Net::new(&[("admin", Permissions::ADMIN)])
}

#[test]
fn a_second_sink_of_the_same_resource_shares_the_source_and_starts_from_the_cached_key_frame() {
    let mut net = admin_net();
    let a = net.add_op(10, "admin");
    let b = net.add_op(11, "admin");
    net.open(a, metrics());
    let inc = net.incoming();
    assert_eq!(inc.len(), 1);
    let (sid, StreamEvent::Incoming { open, .. }) = &inc[0] else {
        unreachable!()
    };
    assert_eq!(open.opened_by, "admin");
    assert!(
        sid % 2 == 1,
        "hub-opened ids are odd on the agent's connection"
    );
    net.aep.accept(*sid, 0).expect("in test");
    net.aep
        .send_data(*sid, 0, true, Bytes::from_static(b"{\"cpu\":1}"))
        .expect("in test");
    net.pump();
    assert_eq!(net.data_seqs(a), vec![1]);
    // The second viewer: no new source, the cached key frame at once.
    net.open(b, metrics());
    assert!(net.incoming().is_empty(), "the agent produces once");
    assert!(net.ops[&b].events.iter().any(|e| matches!(
        e,
        StreamEvent::Accepted {
            multicast: true,
            ..
        }
    )));
    assert_eq!(net.data_seqs(b), vec![1]);
    net.aep
        .send_data(*sid, 0, true, Bytes::from_static(b"{\"cpu\":2}"))
        .expect("in test");
    net.pump();
    assert_eq!(net.data_seqs(a), vec![1, 2]);
    assert_eq!(net.data_seqs(b), vec![1, 2]);
    let list = net.hub.streams.list();
    assert_eq!((list.len(), list[0].sinks.len()), (1, 2));
    // Other parameters: another group, another source.
    let mut other = metrics();
    other.params.insert("interval_ms".into(), "250".into());
    net.open(b, other);
    assert_eq!(net.incoming().len(), 1);
}

#[test]
fn a_held_sink_never_slows_the_source_or_the_others_and_recovers_with_a_key_frame() {
    let mut net = admin_net();
    let sinks: Vec<ConnId> = (0..5).map(|i| net.add_op(10 + i, "admin")).collect();
    for &s in &sinks {
        net.open(s, metrics());
    }
    let (sid, _) = net.incoming()[0].clone();
    net.aep.accept(sid, 0).expect("in test");
    net.pump();
    let slow = sinks[4];
    net.ops.get_mut(&slow).expect("in test").hold = true;
    let cap = net.hub.cfg.streams.sink_queue;
    let frame = Bytes::from(vec![7u8; 4096]);
    let started = net.now;
    let mut sent = 0;
    for i in 0..2000u64 {
        // A key frame every 10th; the source never waits.
        let out = net
            .aep
            .send_data(sid, 0, i % 10 == 0, frame.clone())
            .expect("in test");
        assert_eq!(
            out,
            SendOutcome::Sent,
            "the source was throttled at frame {i}"
        );
        sent += 1;
        net.advance(Duration::from_millis(5));
        assert!(
            net.hub.streams.queued_bytes() <= cap,
            "the slow sink's queue passed its cap"
        );
    }
    for &s in &sinks[..4] {
        assert_eq!(net.data_seqs(s).len(), sent, "a fast sink missed frames");
    }
    // Resyncs coalesced: at most one per 500 ms.
    let elapsed = net.now - started;
    let bound = (elapsed.as_millis() / 500 + 1) as usize;
    assert!(
        !net.resyncs.is_empty() && net.resyncs.len() <= bound,
        "{} resyncs",
        net.resyncs.len()
    );
    for w in net.resyncs.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(500));
    }
    // The link moves again: the slow sink resumes at a key frame.
    net.release(slow);
    for i in 0..20u64 {
        net.aep
            .send_data(sid, 0, i % 10 == 0, frame.clone())
            .expect("in test");
        net.advance(Duration::from_millis(5));
    }
    let seqs = net.data_seqs(slow);
    let last = *seqs.last().expect("in test");
    assert_eq!(last, sent as u64 + 20, "the slow sink caught up");
    let listed = net.hub.streams.list();
    assert!(listed[0].sinks.iter().any(|s| s.dropped_frames > 0));
}

#[test]
fn the_last_sink_out_stops_the_source_and_a_source_gone_closes_every_sink() {
    let mut net = admin_net();
    let a = net.add_op(10, "admin");
    let b = net.add_op(11, "admin");
    let ia = net.open(a, metrics());
    let ib = net.open(b, metrics());
    let (sid, _) = net.incoming()[0].clone();
    net.aep.accept(sid, 0).expect("in test");
    net.pump();
    net.ops
        .get_mut(&a)
        .expect("in test")
        .ep
        .close(ia, EndCode::Normal, "bye")
        .expect("in test");
    net.pump();
    assert!(
        net.agent_events
            .iter()
            .all(|e| !matches!(e, StreamEvent::Closed { .. }))
    );
    net.ops
        .get_mut(&b)
        .expect("in test")
        .ep
        .close(ib, EndCode::Normal, "bye")
        .expect("in test");
    net.pump();
    assert!(net.agent_events.iter().any(|e| matches!(
        e,
        StreamEvent::Closed {
            code: EndCode::Normal,
            ..
        }
    )));
    assert_eq!(net.hub.streams.group_count(), 0);
    // A new group, then the agent's connection drops.
    let ia = net.open(a, metrics());
    let (sid, _) = net.incoming()[0].clone();
    net.aep.accept(sid, 0).expect("in test");
    net.pump();
    net.hub.handle_closed(net.now, AGENT);
    net.pump();
    assert!(net.ops[&a].events.iter().any(
        |e| matches!(e, StreamEvent::Closed { id, code: EndCode::SourceGone, .. } if *id == ia)
    ));
    assert_eq!(net.hub.streams.group_count(), 0);
    // A sink's connection drops: it leaves; no source left behind.
    assert_eq!(net.hub.stream_stats().sinks, 0);
}

#[test]
fn lossless_credit_runs_end_to_end_and_a_sink_that_stops_reading_is_a_slow_consumer() {
    let mut net = admin_net();
    let a = net.add_op(10, "admin");
    let mut params = BTreeMap::new();
    params.insert("path".to_string(), "/var/log/x".to_string());
    let id = net.open(
        a,
        OpenRequest {
            kind: "tail".into(),
            agent_id: "a1".into(),
            class: Class::Lossless,
            window: 10_000,
            params,
            ..Default::default()
        },
    );
    let (sid, _) = net.incoming()[0].clone();
    net.aep.accept(sid, 0).expect("in test");
    net.pump();
    assert_eq!(
        net.aep.send_capacity(sid),
        10_000,
        "the sink's window, passed through"
    );
    // The sink consumes: the source keeps going, every byte in order.
    let mut total = 0usize;
    for i in 0..100u8 {
        let n = net.aep.send_capacity(sid).min(3000);
        assert!(n > 0);
        net.aep
            .send_data(sid, 0, false, Bytes::from(vec![i; n]))
            .expect("in test");
        total += n;
        net.pump();
    }
    let got: usize = net.ops[&a]
        .events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Data { payload, .. } => Some(payload.len()),
            _ => None,
        })
        .sum();
    assert_eq!(got, total);
    // Now it stops consuming: the source runs out of credit, then the hub ends the stream.
    net.ops.get_mut(&a).expect("in test").consume = false;
    while net.aep.send_capacity(sid) > 0 {
        let n = net.aep.send_capacity(sid);
        net.aep
            .send_data(sid, 0, false, Bytes::from(vec![0; n]))
            .expect("in test");
        net.pump();
    }
    assert_eq!(
        net.aep
            .send_data(sid, 0, false, Bytes::from_static(b"x"))
            .expect("in test"),
        SendOutcome::Blocked
    );
    net.advance(Duration::from_secs(29));
    assert_eq!(net.hub.streams.group_count(), 1);
    net.advance(Duration::from_secs(2));
    assert!(net.ops[&a].events.iter().any(
        |e| matches!(e, StreamEvent::Closed { id: i, code: EndCode::SlowConsumer, .. } if *i == id)
    ));
    assert!(net.agent_events.iter().any(|e| matches!(
        e,
        StreamEvent::Closed {
            code: EndCode::SlowConsumer,
            ..
        }
    )));
}

#[test]
fn opens_are_authorised_routed_or_refused_with_a_reason() {
    let mut net = Net::new(&[
        ("admin", Permissions::ADMIN),
        ("viewer", Permissions::OPEN_STREAM),
        ("nobody", Permissions::NONE),
    ]);
    let v = net.add_op(10, "viewer");
    let n = net.add_op(11, "nobody");
    let rejected = |net: &Net, c: ConnId| -> Vec<EndCode> {
        net.ops[&c]
            .events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Rejected { code, .. } => Some(*code),
                _ => None,
            })
            .collect()
    };
    net.open(n, metrics());
    assert_eq!(rejected(&net, n), vec![EndCode::Unauthorised]);
    net.open(
        v,
        OpenRequest {
            kind: "shell".into(),
            agent_id: "a1".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        rejected(&net, v),
        vec![EndCode::Unauthorised],
        "a shell needs run_command"
    );
    net.open(
        v,
        OpenRequest {
            agent_id: "nope".into(),
            ..metrics()
        },
    );
    net.open(
        v,
        OpenRequest {
            kind: "nope".into(),
            agent_id: String::new(),
            ..metrics()
        },
    );
    assert_eq!(
        rejected(&net, v),
        vec![
            EndCode::Unauthorised,
            EndCode::NoRoute,
            EndCode::Unsupported
        ]
    );
    // The source refuses a kind it does not know: the sink hears why.
    net.open(
        v,
        OpenRequest {
            kind: "desktop".into(),
            ..metrics()
        },
    );
    let (sid, _) = net.incoming()[0].clone();
    net.aep
        .reject(sid, EndCode::Unsupported, "no desktop here")
        .expect("in test");
    net.pump();
    assert_eq!(rejected(&net, v).len(), 4);
    assert!(net.incoming().is_empty());
}

#[test]
fn the_hub_is_a_source_of_its_own_figures() {
    let mut net = admin_net();
    let a = net.add_op(10, "admin");
    let mut params = BTreeMap::new();
    params.insert("interval_ms".to_string(), "200".to_string());
    net.open(
        a,
        OpenRequest {
            kind: "hub.stats".into(),
            class: Class::Latest,
            params,
            ..Default::default()
        },
    );
    for _ in 0..10 {
        net.advance(Duration::from_millis(100));
    }
    let frames = net.data_seqs(a).len();
    assert!(
        (5..=7).contains(&frames),
        "{frames} snapshots in 1 s at 200 ms"
    );
    let Some(StreamEvent::Data { payload, .. }) = net.ops[&a]
        .events
        .iter()
        .rev()
        .find(|e| matches!(e, StreamEvent::Data { .. }))
    else {
        unreachable!()
    };
    let v: serde_json::Value = serde_json::from_slice(payload).expect("in test");
    assert_eq!(v["agents_connected"], 1);
    assert_eq!(v["stream_sinks"], 1);
}

#[test]
fn a_redpepper_agent_gets_no_stream_traffic_and_the_open_is_refused() {
    let now = Instant::now();
    let mut hub = Hub::new(HubConfig::default(), 1, now, 0);
    hub.load(StoredState::default(), now);
    hub.register_agent("old".into(), "$argon2id$x".into(), vec![]);
    hub.accept(
        now,
        AGENT,
        PeerInfo::named("10.0.0.1:1".parse().expect("in test"), "old"),
    );
    let cfg = AgentConfig {
        agent_id: "old".into(),
        secret: "s".into(),
        link: LinkConfig::default(),
    };
    let mut old = AgentLink::new(now, cfg, 2); // no `streams` feature, as a 0.0.17 agent
    let op = ConnId(5);
    hub.accept(
        now,
        op,
        PeerInfo::named("10.0.0.2:1".parse().expect("in test"), "admin"),
    );
    let mut session = ClientSession::new(now, LinkConfig::default(), "t", 3);
    let mut ep = StreamEndpoint::new(Side::Client, StreamLimits::default());
    let mut to_agent = 0;
    let mut refused = None;
    for round in 0..8 {
        if round == 4 {
            ep.open(OpenRequest {
                agent_id: "old".into(),
                ..metrics()
            })
            .expect("in test");
        }
        while let Some(a) = hub.poll_action() {
            match a {
                HubAction::Send { conn, bytes } if conn == AGENT => {
                    if round >= 4 {
                        to_agent += 1;
                    }
                    old.handle_input(now, &bytes)
                }
                HubAction::Send { bytes, .. } => session.handle_input(now, &bytes),
                HubAction::VerifySecret { ticket, .. } => hub.handle_verified(now, ticket, true),
                _ => {}
            }
        }
        while let Some(a) = old.poll_action() {
            if let Action::Send(b) = a {
                hub.handle_input(now, AGENT, &b);
            }
        }
        while let Some(a) = session.poll_action() {
            match a {
                Action::Send(b) => hub.handle_input(now, op, &b),
                Action::Event(ClientEvent::Message(m)) => {
                    ep.handle_message(now, m);
                }
                _ => {}
            }
        }
        while let Some(a) = ep.poll_action() {
            match a {
                Action::Send(b) if session.is_open() => session.send_frame(b).expect("in test"),
                Action::Event(StreamEvent::Rejected { code, reason, .. }) => {
                    refused = Some((code, reason))
                }
                _ => {}
            }
        }
    }
    let (code, reason) = refused.expect("a reject");
    assert_eq!(code, EndCode::Unsupported);
    assert!(reason.contains("does not speak streams"), "{reason}");
    assert_eq!(to_agent, 0, "nothing went to the old agent");
    assert!(old.is_established());
}

#[test]
fn fifty_sinks_one_throttled_over_many_seeds() {
    use rand_core::RngCore;
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    for seed in 0..seeds {
        let mut rng = crate::rng::seeded(seed);
        let mut net = admin_net();
        let sinks: Vec<ConnId> = (0..50).map(|i| net.add_op(100 + i, "admin")).collect();
        for &s in &sinks {
            net.open(s, metrics());
        }
        let (sid, _) = net.incoming()[0].clone();
        net.aep.accept(sid, 0).expect("accept");
        net.pump();
        let slow = sinks[(rng.next_u32() % 50) as usize];
        let cap = net.hub.cfg.streams.sink_queue;
        let key_every = 5 + u64::from(rng.next_u32() % 15);
        let mut sent = 0u64;
        for i in 0..300u64 {
            // The slow sink's link moves 10% of the time.
            let moving = rng.next_u32().is_multiple_of(10);
            if moving {
                net.release(slow);
            } else {
                net.ops.get_mut(&slow).expect("slow").hold = true;
            }
            let len = 500 + (rng.next_u32() % 7500) as usize;
            let out = net
                .aep
                .send_data(
                    sid,
                    0,
                    i.is_multiple_of(key_every),
                    Bytes::from(vec![1u8; len]),
                )
                .expect("send");
            assert_eq!(
                out,
                SendOutcome::Sent,
                "seed {seed}: the source was throttled"
            );
            sent += 1;
            net.advance(Duration::from_millis(20));
            assert!(
                net.hub.streams.queued_bytes() <= cap,
                "seed {seed}: cap passed"
            );
        }
        for &s in sinks.iter().filter(|s| **s != slow) {
            assert_eq!(
                net.data_seqs(s).len() as u64,
                sent,
                "seed {seed}: a fast sink missed frames"
            );
        }
        net.release(slow);
        for i in 0..key_every + 1 {
            net.aep
                .send_data(
                    sid,
                    0,
                    (sent + i).is_multiple_of(key_every),
                    Bytes::from(vec![2u8; 1000]),
                )
                .expect("send");
            net.advance(Duration::from_millis(20));
        }
        let seqs = net.data_seqs(slow);
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: out of order"
        );
        assert_eq!(
            seqs.last().copied(),
            Some(sent + key_every + 1),
            "seed {seed}: no recovery"
        );
    }
}

#[test]
fn a_hub_shutdown_ends_every_stream_with_a_reason_and_a_new_hub_serves_again() {
    let mut net = admin_net();
    let a = net.add_op(10, "admin");
    let id = net.open(a, metrics());
    let (sid, _) = net.incoming()[0].clone();
    net.aep.accept(sid, 0).expect("accept");
    net.pump();
    net.hub.shutdown(net.now);
    net.pump();
    assert!(
        net.ops[&a].events.iter().any(
            |e| matches!(e, StreamEvent::Closed { id: i, code: EndCode::Shutdown, .. } if *i == id)
        ),
        "{:?}",
        net.ops[&a].events
    );
    assert!(net.agent_events.iter().any(|e| matches!(
        e,
        StreamEvent::Closed {
            code: EndCode::Shutdown,
            ..
        }
    )));
    assert_eq!(net.hub.stream_stats(), crate::hub::StreamStats::default());
    // After the restart (a new hub), the same open works.
    let mut net = admin_net();
    let a = net.add_op(10, "admin");
    net.open(a, metrics());
    assert_eq!(net.incoming().len(), 1);
}

#[test]
fn an_agent_opens_streams_too_within_open_stream_only() {
    let mut net = admin_net();
    let mut params = BTreeMap::new();
    params.insert("interval_ms".to_string(), "100".to_string());
    let id = net
        .aep
        .open(OpenRequest {
            kind: "hub.stats".into(),
            class: Class::Latest,
            params,
            ..Default::default()
        })
        .expect("open");
    net.pump();
    net.advance(Duration::from_millis(250));
    assert!(
        net.agent_events
            .iter()
            .any(|e| matches!(e, StreamEvent::Accepted { id: i, .. } if *i == id)),
        "{:?}",
        net.agent_events
    );
    assert!(
        net.agent_events
            .iter()
            .any(|e| matches!(e, StreamEvent::Data { id: i, .. } if *i == id))
    );
    let listed = net.hub.streams.list();
    assert_eq!(listed[0].sinks[0].sink, "agent:a1");
    // An agent holds no run_command: no shell anywhere; and no stream to itself.
    let shell = net
        .aep
        .open(OpenRequest {
            kind: "shell".into(),
            agent_id: "a2".into(),
            ..Default::default()
        })
        .expect("open");
    let own = net
        .aep
        .open(OpenRequest {
            agent_id: "a1".into(),
            ..metrics()
        })
        .expect("open");
    net.pump();
    let rejected: Vec<(u64, EndCode)> = net
        .agent_events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Rejected { id, code, .. } => Some((*id, *code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        rejected,
        vec![(shell, EndCode::Unauthorised), (own, EndCode::Invalid)]
    );
}
