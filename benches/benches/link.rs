//! Criterion benchmarks of the agent link: frame codec, and command round trips through the
//! real hub and agent machines in memory (no sockets, no TLS).
//!
//! `cargo bench -p switchboard-benches --bench link`
#![allow(missing_docs, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard_core::hub::{ConnId, Hub, HubAction, HubConfig, PeerInfo, StoredState};
use switchboard_core::link::{
    AgentConfig, AgentEvent, AgentLink, CommandStatusWire, FrameDecoder, LinkConfig, frame, msg,
};
use switchboard_core::machine::Action;
use switchboard_core::session::{ClientEvent, ClientSession};
use switchboard_proto as pb;
use switchboard_proto::command_result::Status;
use switchboard_proto::message::Message as Body;

fn frames(c: &mut Criterion) {
    let output = "x".repeat(1024);
    let cases = [
        (
            "command",
            msg::command(
                20261122094015001,
                "command.Run",
                r#"{"[args]": ["uname -a"], "cwd": "/tmp"}"#,
            ),
        ),
        (
            "result_1k",
            msg::result(20261122094015001, Status::Success, true, &output),
        ),
    ];
    let mut g = c.benchmark_group("frame");
    for (name, m) in &cases {
        let wire = frame::encode(m);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(format!("encode/{name}"), |b| {
            let mut buf = BytesMut::with_capacity(4096);
            b.iter(|| {
                buf.clear();
                frame::encode_into(black_box(m), &mut buf);
                black_box(buf.len())
            })
        });
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| {
                let mut d = FrameDecoder::new(65_536);
                d.push(black_box(&wire));
                black_box(d.next_message().ok().flatten())
            })
        });
    }
    g.finish();
}

/// A hub with one authenticated agent and one operator session, wired in memory.
struct Pair {
    now: Instant,
    hub: Hub,
    agent: AgentLink,
    op: ClientSession,
    next_rid: u64,
    results: u64,
}

const AGENT: ConnId = ConnId(1);
const OP: ConnId = ConnId(2);

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        let link = LinkConfig {
            ping_interval: Duration::from_secs(3600),
            ..LinkConfig::default()
        };
        let mut hub = Hub::new(
            HubConfig {
                link: link.clone(),
                ..HubConfig::default()
            },
            1,
            now,
            0,
        );
        hub.load(StoredState::default(), now);
        hub.register_agent("bench".into(), "$argon2id$placeholder".into(), vec![]);
        hub.accept(
            now,
            AGENT,
            PeerInfo {
                addr: "127.0.0.1:1".parse().expect("addr"),
                cert_name: Some("bench".into()),
                cert: None,
                web: false,
            },
        );
        hub.accept(
            now,
            OP,
            PeerInfo {
                addr: "127.0.0.1:2".parse().expect("addr"),
                cert_name: Some("admin".into()),
                cert: None,
                web: false,
            },
        );
        let agent = AgentLink::new(
            now,
            AgentConfig {
                agent_id: "bench".into(),
                secret: "s".into(),
                link: link.clone(),
            },
            2,
        );
        let op = ClientSession::new(now, link, "bench", 3);
        let mut p = Pair {
            now,
            hub,
            agent,
            op,
            next_rid: 1,
            results: 0,
        };
        p.settle();
        assert!(
            p.agent.is_established() && p.op.is_open(),
            "pair did not come up"
        );
        p
    }

    /// Moves bytes until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(a) = self.hub.poll_action() {
                moved = true;
                match a {
                    HubAction::Send { conn, bytes } if conn == AGENT => {
                        self.agent.handle_input(self.now, &bytes)
                    }
                    HubAction::Send { bytes, .. } => self.op.handle_input(self.now, &bytes),
                    // The bench skips argon2: it measures the link.
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
                    Action::Event(AgentEvent::Command {
                        command_id, data, ..
                    }) => {
                        let _ =
                            self.agent
                                .result(command_id, CommandStatusWire::Success, false, &data);
                    }
                    _ => {}
                }
            }
            while let Some(a) = self.op.poll_action() {
                moved = true;
                match a {
                    Action::Send(b) => self.hub.handle_input(self.now, OP, &b),
                    Action::Event(ClientEvent::Message(Body::Result(_))) => self.results += 1,
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn round_trip(&mut self) {
        let rid = self.next_rid;
        self.next_rid += 1;
        let req = pb::RunCommandRequest {
            request_id: rid,
            agent_id: "bench".into(),
            operation: "echo.Echo".into(),
            data: r#"{"[args]": ["hi"]}"#.into(),
        };
        let _ = self.op.send_request(Body::RunCommandRequest(req));
        self.settle();
    }
}

fn round_trips(c: &mut Criterion) {
    let mut g = c.benchmark_group("link");
    g.throughput(Throughput::Elements(1));
    g.bench_function("command_round_trip", |b| {
        let mut p = Pair::new();
        b.iter(|| p.round_trip());
        assert!(p.results > 0, "results came back");
    });
    g.finish();
}

criterion_group!(benches, frames, round_trips);
criterion_main!(benches);
