//! The hub's agent and session side, driven by hand.
#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::time::Instant;

use switchboard_proto as pb;
use switchboard_proto::command_result::Status;

use super::*;
use crate::link::{AgentConfig, AgentEvent, AgentLink, CommandStatusWire, LinkConfig};
use crate::machine::Action;
use crate::session::{ClientEvent, ClientSession};

const AGENT: ConnId = ConnId(1);
const OP: ConnId = ConnId(2);

/// What the hub did, in order, as short labels.
fn labels(
    hub: &mut Hub,
    agent: &mut AgentLink,
    op: &mut ClientSession,
    now: Instant,
) -> Vec<String> {
    let mut out = vec![];
    while let Some(a) = hub.poll_action() {
        match a {
            HubAction::Send { conn, bytes } => {
                if conn == AGENT {
                    agent.handle_input(now, &bytes);
                    out.push("send agent".into());
                } else {
                    op.handle_input(now, &bytes);
                    out.push("send operator".into());
                }
            }
            HubAction::Persist(c) => out.push(format!(
                "persist {}",
                match c {
                    Change::CommandCreated(_) => "created",
                    Change::CommandFinished { .. } => "finished",
                    Change::EventLogged(_) => "event",
                    _ => "other",
                }
            )),
            HubAction::VerifySecret { ticket, .. } => hub.handle_verified(now, ticket, true),
            HubAction::Close { .. } => out.push("close".into()),
            _ => {}
        }
    }
    out
}

fn pump_peers(
    hub: &mut Hub,
    agent: &mut AgentLink,
    op: &mut ClientSession,
    now: Instant,
) -> Vec<AgentEvent> {
    let mut events = vec![];
    while let Some(a) = agent.poll_action() {
        match a {
            Action::Send(b) => hub.handle_input(now, AGENT, &b),
            Action::Event(e) => events.push(e),
            _ => {}
        }
    }
    while let Some(a) = op.poll_action() {
        if let Action::Send(b) = a {
            hub.handle_input(now, OP, &b);
        }
    }
    events
}

fn setup() -> (Hub, AgentLink, ClientSession, Instant) {
    let now = Instant::now();
    let mut hub = Hub::new(HubConfig::default(), 1, now, 0);
    hub.load(StoredState::default(), now);
    hub.register_agent("a1".into(), "$argon2id$x".into(), vec![]);
    hub.accept(
        now,
        AGENT,
        PeerInfo {
            addr: "127.0.0.1:1".parse().expect("addr"),
            cert_name: Some("a1".into()),
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
    let mut agent = AgentLink::new(
        now,
        AgentConfig {
            agent_id: "a1".into(),
            secret: "s".into(),
            link: LinkConfig::default(),
        },
        2,
    );
    let mut op = ClientSession::new(now, LinkConfig::default(), "t", 3);
    for _ in 0..4 {
        labels(&mut hub, &mut agent, &mut op, now);
        pump_peers(&mut hub, &mut agent, &mut op, now);
    }
    assert!(agent.is_established() && op.is_open());
    (hub, agent, op, now)
}

#[test]
fn commands_are_persisted_before_they_are_acknowledged_or_sent() {
    let (mut hub, mut agent, mut op, now) = setup();
    let req = pb::RunCommandRequest {
        request_id: 1,
        agent_id: "a1".into(),
        operation: "echo.Echo".into(),
        data: "{}".into(),
    };
    op.send_request(Body::RunCommandRequest(req)).expect("send");
    pump_peers(&mut hub, &mut agent, &mut op, now);
    assert_eq!(
        labels(&mut hub, &mut agent, &mut op, now),
        vec![
            "persist created",
            "send operator",
            "persist event",
            "send agent"
        ]
    );
    let ev = pump_peers(&mut hub, &mut agent, &mut op, now);
    let Some(AgentEvent::Command { command_id, .. }) = ev.first().cloned() else {
        panic!("{ev:?}")
    };
    agent
        .result(command_id, CommandStatusWire::Success, false, "ok")
        .expect("result");
    pump_peers(&mut hub, &mut agent, &mut op, now);
    assert_eq!(
        labels(&mut hub, &mut agent, &mut op, now),
        vec!["persist finished", "send operator", "persist event"]
    );
    let mut got = None;
    while let Some(a) = op.poll_action() {
        if let Action::Event(ClientEvent::Message(Body::Result(r))) = a {
            got = Some(r);
        }
    }
    assert_eq!(
        got.map(|r| (r.command_id, r.status)),
        Some((command_id, Status::Success as i32))
    );
}

#[test]
fn a_session_for_a_certificate_that_is_not_a_user_is_refused() {
    let now = Instant::now();
    let mut hub = Hub::new(HubConfig::default(), 1, now, 0);
    hub.load(StoredState::default(), now);
    hub.accept(
        now,
        ConnId(5),
        PeerInfo {
            addr: "127.0.0.1:1".parse().expect("addr"),
            cert_name: Some("mallory".into()),
            cert: None,
            web: false,
        },
    );
    let mut s = ClientSession::new(now, LinkConfig::default(), "t", 1);
    while let Some(a) = s.poll_action() {
        if let Action::Send(b) = a {
            hub.handle_input(now, ConnId(5), &b);
        }
    }
    let mut closed = false;
    while let Some(a) = hub.poll_action() {
        closed |= matches!(
            a,
            HubAction::Close {
                conn: ConnId(5),
                reason: CloseReason::AuthFailed(_)
            }
        );
    }
    assert!(closed);
}

#[test]
fn load_finishes_pending_commands_and_continues_ids() {
    let now = Instant::now();
    let pending = CommandRecord {
        command_id: 41,
        agent_id: "a1".into(),
        operation: "x".into(),
        data: "{}".into(),
        issued_by: "admin".into(),
        status: CommandStatus::Pending,
        changed: false,
        output: String::new(),
        created_unix_ms: 1,
        finished_unix_ms: 0,
    };
    let mut hub = Hub::new(HubConfig::default(), 1, now, 0);
    hub.load(
        StoredState {
            max_command_id: 41,
            pending_commands: vec![pending],
            ..StoredState::default()
        },
        now,
    );
    let mut finished = vec![];
    while let Some(a) = hub.poll_action() {
        if let HubAction::Persist(Change::CommandFinished {
            command_id, status, ..
        }) = a
        {
            finished.push((command_id, status));
        }
    }
    assert_eq!(finished, vec![(41, CommandStatus::Failed)]);
    assert_eq!(hub.next_command_id, 42);
}

#[test]
fn data_values_too_big_for_a_frame_are_refused_up_front() {
    let (mut hub, mut agent, mut op, now) = setup();
    // Fits in the request frame (64 KiB) but not in the agent's Response with its margin.
    let big = format!("\"{}\"", "x".repeat(65_380));
    let req = pb::SetAgentDataRequest {
        request_id: 9,
        agent_id: "a1".into(),
        name: "big".into(),
        value_json: big,
    };
    op.send_request(Body::SetAgentDataRequest(req))
        .expect("send");
    pump_peers(&mut hub, &mut agent, &mut op, now);
    assert_eq!(
        labels(&mut hub, &mut agent, &mut op, now),
        vec!["send operator"],
        "nothing persisted"
    );
    let mut refused = false;
    while let Some(a) = op.poll_action() {
        if let Action::Event(ClientEvent::Message(Body::ControlError(e))) = a {
            refused = e.request_id == 9 && e.message.contains("does not fit");
        }
    }
    assert!(refused);
}
