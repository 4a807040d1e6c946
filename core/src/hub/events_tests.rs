//! The event log in one hub: what a subscriber sees depends on its permissions; orders that
//! are gone or ahead are refused.
#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::time::Instant;

use switchboard_proto as pb;
use switchboard_proto::control_error::Code;
use switchboard_proto::message::Message as Body;

use crate::hub::{
    ConnId, EventRecord, Hub, HubAction, HubConfig, PeerInfo, StoredState, UserRecord,
};
use crate::link::LinkConfig;
use crate::machine::Action;
use crate::perm::Permissions;
use crate::session::{ClientEvent, ClientSession};

fn record(order: u64, kind: &str, scope: Permissions) -> EventRecord {
    EventRecord {
        order,
        unix_ms: 1_700_000_000_000 + order as i64,
        kind: kind.into(),
        json: format!("{{\"@type\":\"{kind}\"}}"),
        scope: scope.0,
    }
}

/// Everything a session of a user holding `perms` is sent after subscribing from `from`,
/// with a log holding orders 3..=6 (1 and 2 pruned).
fn subscribe(perms: Permissions, from: u64) -> Vec<Body> {
    let now = Instant::now();
    let mut hub = Hub::new(HubConfig::default(), 1, now, 1_700_000_000_000);
    let agents = Permissions::MANAGE_AGENTS.union(Permissions::RUN_COMMAND);
    hub.load(
        StoredState {
            users: vec![UserRecord {
                uid: 2,
                name: "me".into(),
                permissions: perms.0,
                ..UserRecord::default()
            }],
            last_event_order: 6,
            first_event_order: 3,
            recent_events: vec![
                record(3, "AgentConnected", agents),
                record(4, "ChannelCreated", Permissions::NONE),
                record(5, "CertificateIssued", Permissions::MANAGE_AGENTS),
                record(6, "MemberJoined", Permissions::NONE),
            ],
            ..StoredState::default()
        },
        now,
    );
    hub.accept(
        now,
        ConnId(1),
        PeerInfo::named("10.0.0.1:1".parse().expect("addr"), "me"),
    );
    let mut op = ClientSession::new(now, LinkConfig::default(), "t", 2);
    let mut sent = false;
    let mut got = vec![];
    for _ in 0..6 {
        if op.is_open() && !sent {
            let req = pb::SubscribeEventsRequest {
                request_id: 7,
                from_order: from,
            };
            op.send_request(Body::SubscribeEventsRequest(req))
                .expect("send");
            sent = true;
        }
        while let Some(a) = op.poll_action() {
            match a {
                Action::Event(ClientEvent::Message(m)) => got.push(m),
                Action::Send(b) => hub.handle_input(now, ConnId(1), &b),
                _ => {}
            }
        }
        while let Some(a) = hub.poll_action() {
            match a {
                HubAction::Send { bytes, .. } => op.handle_input(now, &bytes),
                HubAction::ReadEvents { .. } => panic!("the ring holds them all"),
                _ => {}
            }
        }
    }
    got
}

fn orders(got: &[Body]) -> Vec<u64> {
    got.iter()
        .filter_map(|m| match m {
            Body::EventNotice(n) => Some(n.order),
            _ => None,
        })
        .collect()
}

#[test]
fn subscribers_see_only_what_their_permissions_allow() {
    assert_eq!(orders(&subscribe(Permissions::NONE, 2)), [4, 6]);
    assert_eq!(orders(&subscribe(Permissions::RUN_COMMAND, 2)), [3, 4, 6]);
    assert_eq!(
        orders(&subscribe(Permissions::MANAGE_AGENTS, 2)),
        [3, 4, 5, 6]
    );
    assert_eq!(orders(&subscribe(Permissions::MANAGE_AGENTS, 4)), [5, 6]);
    let got = subscribe(Permissions::NONE, 2);
    assert!(matches!(
        &got[0],
        Body::SubscribeEventsResponse(r) if r.request_id == 7 && r.last_order == 6 && r.first_order == 3
    ));
    let Some(Body::EventNotice(n)) = got.get(1) else {
        panic!("{got:?}")
    };
    assert_eq!(
        (n.unix_ms, n.kind.as_str(), n.json.as_str()),
        (
            1_700_000_000_004,
            "ChannelCreated",
            "{\"@type\":\"ChannelCreated\"}"
        )
    );
}

#[test]
fn orders_gone_or_ahead_are_refused() {
    let code = |got: &[Body]| match got.first() {
        Some(Body::ControlError(e)) if e.request_id == 7 => e.code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(&subscribe(Permissions::MANAGE_AGENTS, 0)),
        Code::Gone as i32
    );
    assert_eq!(
        code(&subscribe(Permissions::MANAGE_AGENTS, 1)),
        Code::Gone as i32
    );
    assert_eq!(
        code(&subscribe(Permissions::MANAGE_AGENTS, 7)),
        Code::Invalid as i32
    );
    assert_eq!(
        orders(&subscribe(Permissions::MANAGE_AGENTS, 6)),
        Vec::<u64>::new()
    );
}

/// Drives one session of a user holding `perms` through `requests` (after subscribing from
/// the start of an empty log); returns the kinds of the event notices it was sent.
fn registry_events(perms: Permissions, requests: Vec<Body>) -> Vec<String> {
    let now = Instant::now();
    let mut hub = Hub::new(HubConfig::default(), 1, now, 1_700_000_000_000);
    hub.load(
        StoredState {
            users: vec![
                UserRecord {
                    uid: 2,
                    name: "me".into(),
                    permissions: perms.0,
                    ..UserRecord::default()
                },
                UserRecord {
                    uid: 3,
                    name: "boss".into(),
                    permissions: Permissions::ADMIN.0,
                    ..UserRecord::default()
                },
            ],
            ..StoredState::default()
        },
        now,
    );
    let mut sessions = vec![];
    for (conn, name) in [(1, "me"), (2, "boss")] {
        hub.accept(
            now,
            ConnId(conn),
            PeerInfo::named("10.0.0.1:1".parse().expect("addr"), name),
        );
        sessions.push(ClientSession::new(now, LinkConfig::default(), "t", conn));
    }
    let mut got = vec![];
    let mut subscribed = false;
    let mut pending = requests.into_iter();
    for _ in 0..40 {
        if sessions[0].is_open() && sessions[1].is_open() {
            if !subscribed {
                let req = pb::SubscribeEventsRequest {
                    request_id: 1,
                    from_order: 0,
                };
                sessions[0]
                    .send_request(Body::SubscribeEventsRequest(req))
                    .expect("send");
                subscribed = true;
            } else if let Some(r) = pending.next() {
                sessions[1].send_request(r).expect("send");
            }
        }
        for (i, s) in sessions.iter_mut().enumerate() {
            while let Some(a) = s.poll_action() {
                match a {
                    Action::Event(ClientEvent::Message(Body::EventNotice(n))) if i == 0 => {
                        got.push(n.kind)
                    }
                    Action::Send(b) => hub.handle_input(now, ConnId(i as u64 + 1), &b),
                    _ => {}
                }
            }
        }
        while let Some(a) = hub.poll_action() {
            if let HubAction::Send { conn, bytes } = a {
                sessions[(conn.0 - 1) as usize].handle_input(now, &bytes);
            }
        }
    }
    got
}

#[test]
fn registry_changes_are_events_for_those_allowed() {
    let requests = || {
        vec![
            Body::RegisterAgentRequest(pb::RegisterAgentRequest {
                request_id: 10,
                agent_id: "a1".into(),
                secret_hash: "$argon2id$x".into(),
                allowed_networks: vec![],
            }),
            Body::SetAgentDataRequest(pb::SetAgentDataRequest {
                request_id: 11,
                agent_id: "a1".into(),
                name: "greeting".into(),
                value_json: "\"hi\"".into(),
            }),
            Body::RemoveAgentRequest(pb::RemoveAgentRequest {
                request_id: 12,
                agent_id: "a1".into(),
            }),
        ]
    };
    assert_eq!(
        registry_events(Permissions::MANAGE_AGENTS, requests()),
        ["AgentRegistered", "AgentDataSet", "AgentRemoved"]
    );
    assert!(
        registry_events(Permissions::ADD_CHANNEL, requests()).is_empty(),
        "a user without manage_agents saw agent registry events"
    );
}
