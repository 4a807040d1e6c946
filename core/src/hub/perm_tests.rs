//! Every native operation × the permission it needs: refused with ACCESS without it (all other
//! bits granted), not refused for lack of permission with it.
#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::time::Instant;

use switchboard_proto as pb;
use switchboard_proto::control_error::Code;
use switchboard_proto::message::Message as Body;

use crate::hub::{
    ChannelRecord, ConnId, Hub, HubAction, HubConfig, PeerInfo, StoredState, UserRecord,
};
use crate::link::LinkConfig;
use crate::machine::Action;
use crate::perm::Permissions;
use crate::session::{ClientEvent, ClientSession};

const ME: u64 = 2;
const OTHER: u64 = 3;

/// The answer to `req` from a session of a user holding `perms`.
fn answer(perms: Permissions, req: Body) -> Body {
    let now = Instant::now();
    let mut hub = Hub::new(HubConfig::default(), 1, now, 1_700_000_000_000);
    let user = |uid, name: &str, permissions| UserRecord {
        uid,
        name: name.into(),
        permissions,
        ..UserRecord::default()
    };
    hub.load(
        StoredState {
            users: vec![user(ME, "me", perms.0), user(OTHER, "other", 0)],
            channels: vec![ChannelRecord {
                chid: 9,
                owner: OTHER,
                port: 50_000,
            }],
            members: vec![(9, OTHER)],
            ..StoredState::default()
        },
        now,
    );
    hub.register_agent("a1".into(), "$argon2id$x".into(), vec![]);
    let peer = PeerInfo::named("10.0.0.1:1".parse().expect("addr"), "me");
    hub.accept(now, ConnId(1), peer);
    let mut op = ClientSession::new(now, LinkConfig::default(), "t", 2);
    let mut sent = false;
    for _ in 0..6 {
        if op.is_open() && !sent {
            op.send_request(req.clone()).expect("send");
            sent = true;
        }
        while let Some(a) = op.poll_action() {
            if let Action::Send(b) = a {
                hub.handle_input(now, ConnId(1), &b);
            }
        }
        while let Some(a) = hub.poll_action() {
            if let HubAction::Send { bytes, .. } = a {
                op.handle_input(now, &bytes);
            }
        }
        while let Some(a) = op.poll_action() {
            match a {
                Action::Event(ClientEvent::Message(m)) if sent => return m,
                Action::Send(b) => hub.handle_input(now, ConnId(1), &b),
                _ => {}
            }
        }
    }
    panic!("no answer to {req:?}");
}

fn is_access(b: &Body) -> bool {
    matches!(b, Body::ControlError(e) if e.code == Code::Access as i32)
}

#[test]
fn every_native_operation_needs_its_permission() {
    use Permissions as P;
    let rid = 1;
    let cases: Vec<(&str, Permissions, Body)> = vec![
        (
            "ListAgents",
            P::MANAGE_AGENTS.union(P::RUN_COMMAND),
            Body::ListAgentsRequest(pb::ListAgentsRequest {
                request_id: rid,
                ..Default::default()
            }),
        ),
        (
            "RegisterAgent",
            P::MANAGE_AGENTS,
            Body::RegisterAgentRequest(pb::RegisterAgentRequest {
                request_id: rid,
                agent_id: "a2".into(),
                secret_hash: "$argon2id$y".into(),
                allowed_networks: vec![],
            }),
        ),
        (
            "RemoveAgent",
            P::MANAGE_AGENTS,
            Body::RemoveAgentRequest(pb::RemoveAgentRequest {
                request_id: rid,
                agent_id: "a1".into(),
            }),
        ),
        (
            "SetAgentData",
            P::MANAGE_AGENTS,
            Body::SetAgentDataRequest(pb::SetAgentDataRequest {
                request_id: rid,
                agent_id: "a1".into(),
                name: "n".into(),
                value_json: "1".into(),
            }),
        ),
        (
            "RunCommand",
            P::RUN_COMMAND,
            Body::RunCommandRequest(pb::RunCommandRequest {
                request_id: rid,
                agent_id: "a1".into(),
                operation: "echo.Echo".into(),
                data: "{}".into(),
            }),
        ),
        (
            "RevokeCertificate",
            P::MANAGE_AGENTS,
            Body::RevokeCertificateRequest(pb::RevokeCertificateRequest {
                request_id: rid,
                name: "a1".into(),
                serial: String::new(),
            }),
        ),
        (
            "ListCertificates",
            P::MANAGE_AGENTS,
            Body::ListCertificatesRequest(pb::ListCertificatesRequest {
                request_id: rid,
                ..Default::default()
            }),
        ),
        (
            "CreateChannel",
            P::ADD_CHANNEL,
            Body::CreateChannelRequest(pb::CreateChannelRequest { request_id: rid }),
        ),
        (
            "DeleteChannel (another's)",
            P::RM_CHANNEL,
            Body::DeleteChannelRequest(pb::DeleteChannelRequest {
                request_id: rid,
                chid: 9,
            }),
        ),
        (
            "JoinChannel (someone else)",
            P::ADD_USER,
            Body::JoinChannelRequest(pb::JoinChannelRequest {
                request_id: rid,
                uid: OTHER,
                chid: 9,
            }),
        ),
        (
            "LeaveChannel (someone else)",
            P::KICK_USER,
            Body::LeaveChannelRequest(pb::LeaveChannelRequest {
                request_id: rid,
                uid: OTHER,
                chid: 9,
            }),
        ),
        (
            "RegisterUser",
            P::REGISTER_USER,
            Body::RegisterUserRequest(pb::RegisterUserRequest {
                request_id: rid,
                name: "new".into(),
                permissions: 0,
            }),
        ),
        (
            "RemoveUser (someone else)",
            P::DELETE_USER,
            Body::RemoveUserRequest(pb::RemoveUserRequest {
                request_id: rid,
                uid: OTHER,
            }),
        ),
        (
            "SetUserCredentials (someone else)",
            P::REGISTER_USER,
            Body::SetUserCredentialsRequest(pb::SetUserCredentialsRequest {
                request_id: rid,
                uid: OTHER,
                password_hash: "$argon2id$z".into(),
                totp_secret: vec![1; 20].into(),
                expires_unix_ms: 0,
            }),
        ),
    ];
    for (name, needed, req) in cases {
        let without = Permissions(!needed.0);
        let got = answer(without, req.clone());
        assert!(is_access(&got), "{name} without its permission: {got:?}");
        let got = answer(needed, req);
        assert!(!is_access(&got), "{name} with its permission: {got:?}");
    }
}
