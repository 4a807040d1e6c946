//! Every operation through JSON-RPC gives the answer a native session gets: two hubs from one
//! seed, the same requests, compared message by message (errors included).
#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::time::Instant;

use serde_json::{Value, json};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use super::tests::{Pair, default_hub};
use crate::hub::{ConnId, Hub, HubAction, PeerInfo};
use crate::perm::Permissions;

/// A native session (certificate "admin") on a hub of its own, for comparisons.
struct Native {
    hub: Hub,
    op: crate::session::ClientSession,
    now: Instant,
}

impl Native {
    fn new(now: Instant) -> Native {
        let mut hub = default_hub(now);
        hub.accept(
            now,
            ConnId(2),
            PeerInfo::named("10.0.0.8:1".parse().expect("addr"), "admin"),
        );
        let op =
            crate::session::ClientSession::new(now, crate::link::LinkConfig::default(), "t", 9);
        let mut n = Native { hub, op, now };
        n.pump();
        assert!(n.op.is_open());
        n
    }

    fn pump(&mut self) -> Vec<Body> {
        use crate::machine::Action;
        use crate::session::ClientEvent;
        let mut got = vec![];
        for _ in 0..8 {
            while let Some(a) = self.op.poll_action() {
                match a {
                    Action::Send(b) => self.hub.handle_input(self.now, ConnId(2), &b),
                    Action::Event(ClientEvent::Message(m)) => got.push(m),
                    _ => {}
                }
            }
            while let Some(a) = self.hub.poll_action() {
                match a {
                    HubAction::Send { bytes, .. } => self.op.handle_input(self.now, &bytes),
                    HubAction::VerifySecret {
                        ticket,
                        secret_hash,
                        secret,
                    } => self.hub.handle_verified(
                        self.now,
                        ticket,
                        secret_hash.is_some() && secret == "right",
                    ),
                    _ => {}
                }
            }
        }
        got
    }

    fn call(&mut self, mut body: Body, rid: u64) -> Body {
        crate::web::jsonrpc::set_request_id(&mut body, rid);
        self.op.send_request(body).expect("send");
        self.pump()
            .into_iter()
            .find(|m| crate::link::msg::response_id(m) == Some(rid))
            .expect("an answer")
    }
}

#[test]
fn every_operation_through_json_rpc_matches_the_native_result() {
    use crate::web::jsonrpc;
    let mut web = Pair::new(None);
    let mut native = Native::new(web.now);
    web.upgrade("/rpc", "");
    let code = web.code();
    let login = |pw: &str| {
        Body::LoginRequest(pb::LoginRequest {
            request_id: 0,
            username: "admin".into(),
            password: pw.into(),
            totp: code,
        })
    };
    let mut rid = 100;
    let mut compare = |web: &mut Pair, native: &mut Native, body: Body| -> Value {
        rid += 1;
        let n = native.call(body.clone(), rid);
        let (method, params) = jsonrpc::body_json(&body);
        let got = web.ws_call(
            &json!({"jsonrpc":"2.0","id":rid,"method":method,"params":params}).to_string(),
        );
        let answer = got
            .iter()
            .find(|v| v["id"] == json!(rid))
            .cloned()
            .expect("an answer");
        let want = match &n {
            Body::ControlError(e) => jsonrpc::control_error(json!(rid), e),
            other => jsonrpc::result(json!(rid), jsonrpc::body_json(other).1),
        };
        // Cookies are random per hub connection order: compare their shape only.
        let strip = |mut v: Value| {
            if let Some(c) = v["result"].get_mut("cookie") {
                *c = json!(c.as_str().map(str::len));
            }
            v
        };
        assert_eq!(strip(answer.clone()), strip(want), "{method}");
        answer
    };
    compare(&mut web, &mut native, login("wrong"));
    compare(&mut web, &mut native, login("right"));
    let agent = |id: &str| pb::RegisterAgentRequest {
        request_id: 0,
        agent_id: id.into(),
        secret_hash: "$argon2id$h".into(),
        allowed_networks: vec!["10.0.0.0/8".into()],
    };
    compare(
        &mut web,
        &mut native,
        Body::RegisterAgentRequest(agent("a2")),
    );
    compare(
        &mut web,
        &mut native,
        Body::RegisterAgentRequest(agent("a2")),
    );
    compare(
        &mut web,
        &mut native,
        Body::ListAgentsRequest(pb::ListAgentsRequest::default()),
    );
    compare(
        &mut web,
        &mut native,
        Body::SetAgentDataRequest(pb::SetAgentDataRequest {
            request_id: 0,
            agent_id: "a2".into(),
            name: "k".into(),
            value_json: "[1,2]".into(),
        }),
    );
    compare(
        &mut web,
        &mut native,
        Body::RunCommandRequest(pb::RunCommandRequest {
            request_id: 0,
            agent_id: "a2".into(),
            operation: "echo.Echo".into(),
            data: "{}".into(),
        }),
    );
    let eve = compare(
        &mut web,
        &mut native,
        Body::RegisterUserRequest(pb::RegisterUserRequest {
            request_id: 0,
            name: "eve".into(),
            permissions: Permissions::ADD_CHANNEL.0,
        }),
    );
    let uid: u64 = eve["result"]["uid"]
        .as_str()
        .expect("uid")
        .parse()
        .expect("uid");
    compare(
        &mut web,
        &mut native,
        Body::SetUserCredentialsRequest(pb::SetUserCredentialsRequest {
            request_id: 0,
            uid,
            password_hash: "$argon2id$e".into(),
            totp_secret: b"0123456789abcdef".to_vec().into(),
            expires_unix_ms: 0,
        }),
    );
    compare(
        &mut web,
        &mut native,
        Body::ListUsersRequest(pb::ListUsersRequest::default()),
    );
    let ch = compare(
        &mut web,
        &mut native,
        Body::CreateChannelRequest(pb::CreateChannelRequest::default()),
    );
    let chid: u64 = ch["result"]["chid"]
        .as_str()
        .expect("chid")
        .parse()
        .expect("chid");
    compare(
        &mut web,
        &mut native,
        Body::JoinChannelRequest(pb::JoinChannelRequest {
            request_id: 0,
            uid,
            chid,
        }),
    );
    compare(
        &mut web,
        &mut native,
        Body::ListChannelsRequest(pb::ListChannelsRequest::default()),
    );
    compare(
        &mut web,
        &mut native,
        Body::LeaveChannelRequest(pb::LeaveChannelRequest {
            request_id: 0,
            uid,
            chid,
        }),
    );
    compare(
        &mut web,
        &mut native,
        Body::DeleteChannelRequest(pb::DeleteChannelRequest {
            request_id: 0,
            chid,
        }),
    );
    compare(
        &mut web,
        &mut native,
        Body::DeleteChannelRequest(pb::DeleteChannelRequest {
            request_id: 0,
            chid,
        }),
    );
    compare(
        &mut web,
        &mut native,
        Body::RemoveUserRequest(pb::RemoveUserRequest { request_id: 0, uid }),
    );
    compare(
        &mut web,
        &mut native,
        Body::RemoveAgentRequest(pb::RemoveAgentRequest {
            request_id: 0,
            agent_id: "a2".into(),
        }),
    );
    compare(
        &mut web,
        &mut native,
        Body::ListCertificatesRequest(pb::ListCertificatesRequest::default()),
    );
    compare(
        &mut web,
        &mut native,
        Body::RevokeCertificateRequest(pb::RevokeCertificateRequest {
            request_id: 0,
            name: "nobody".into(),
            serial: String::new(),
        }),
    );
    compare(
        &mut web,
        &mut native,
        Body::SubscribeEventsRequest(pb::SubscribeEventsRequest {
            request_id: 0,
            from_order: 1,
        }),
    );
    compare(
        &mut web,
        &mut native,
        Body::RenewSessionRequest(pb::RenewSessionRequest {
            request_id: 0,
            cookie: "00".into(),
        }),
    );
}
