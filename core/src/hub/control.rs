//! Operator sessions in the hub: control requests, authorised by the one authorisation
//! function ([`crate::perm::authorize`]).

use std::time::Instant;

use switchboard_proto as pb;
use switchboard_proto::control_error::Code;
use switchboard_proto::message::Message as Body;

use super::domain::{Actor, DomainError};
use super::{
    ActiveCommand, Change, CommandRecord, CommandStatus, Conn, ConnId, Hub, HubAction, HubEvent,
};
use crate::link::keepalive::KeepaliveStep;
use crate::link::msg;
use crate::machine::CloseReason;
use crate::net::IpNet;
use crate::perm::{self, Operation, Permissions};

/// Most agents in one ListAgentsResponse (keeps it well inside a 64 KiB frame).
const MAX_AGENTS_PAGE: usize = 200;

/// Longest agent id accepted.
const MAX_AGENT_ID: usize = 128;

impl Hub {
    pub(crate) fn session_input(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        if let Some(Conn::Session(s)) = self.conns.get_mut(&conn).map(|e| &mut e.conn) {
            s.decoder.push(data);
        }
        loop {
            let Some(entry) = self.conns.get_mut(&conn) else {
                return;
            };
            let Conn::Session(s) = &mut entry.conn else {
                return;
            };
            let next = s.decoder.next_message();
            match next {
                Ok(None) => break,
                Ok(Some(m)) => {
                    let body = match msg::body(m) {
                        Ok(b) => b,
                        Err(e) => return self.close_conn(now, conn, CloseReason::Protocol(e)),
                    };
                    self.session_message(now, conn, body);
                }
                Err(e) => return self.close_conn(now, conn, CloseReason::Protocol(e.to_string())),
            }
        }
    }

    pub(crate) fn session_timeout(&mut self, now: Instant, conn: ConnId) {
        let Some(Conn::Session(s)) = self.conns.get_mut(&conn).map(|e| &mut e.conn) else {
            return;
        };
        match s.keepalive.poll(now, &mut self.rng) {
            KeepaliveStep::Idle => {}
            KeepaliveStep::SendPing(d) => self.send_body(conn, Body::Ping(pb::Ping { data: d })),
            KeepaliveStep::TimedOut => {
                self.out
                    .push_back(HubAction::Event(HubEvent::ConnectionFailed {
                        conn,
                        reason: CloseReason::Timeout("ping"),
                    }));
                self.out.push_back(HubAction::Close {
                    conn,
                    reason: CloseReason::Timeout("ping"),
                });
                self.forget(now, conn, "ping timed out".into());
            }
        }
    }

    pub(crate) fn session_message(&mut self, now: Instant, conn: ConnId, body: Body) {
        let Some(Conn::Session(s)) = self.conns.get_mut(&conn).map(|e| &mut e.conn) else {
            return;
        };
        let user = s.user.clone();
        let perms = s.perms;
        let uid = s.uid;
        let guest = s.guest;
        let login = matches!(
            body,
            Body::Ping(_)
                | Body::Pong(_)
                | Body::Bye(_)
                | Body::LoginRequest(_)
                | Body::RenewSessionRequest(_)
                | Body::LogoutRequest(_)
                | Body::FeedLookupRequest(_)
                | Body::FeedLoginRequest(_)
        );
        if guest && !login {
            let mut body = body;
            let request_id = msg::request_id_mut(&mut body).map_or(0, |r| *r);
            return self.control_error(
                conn,
                request_id,
                Code::Access,
                "log in first (LoginRequest with password and TOTP, or RenewSessionRequest with a cookie)".into(),
            );
        }
        if crate::stream::is_stream_message(&body) || matches!(body, Body::ListStreamsRequest(_)) {
            return self.session_stream(now, conn, body);
        }
        match body {
            Body::Ping(p) => self.send_body(conn, Body::Pong(pb::Pong { data: p.data })),
            Body::Pong(p) => {
                s.keepalive.on_pong(p.data);
            }
            Body::Bye(b) => {
                self.out.push_back(HubAction::Close {
                    conn,
                    reason: CloseReason::Bye(b.reason.clone()),
                });
                self.forget(now, conn, b.reason);
            }
            Body::ListAgentsRequest(r) => {
                if let Err(d) = perm::authorize(&user, uid, perms, &Operation::ListAgents) {
                    return self.control_error(conn, r.request_id, Code::Access, d.to_string());
                }
                let limit = match r.limit as usize {
                    0 => MAX_AGENTS_PAGE,
                    n => n.min(MAX_AGENTS_PAGE),
                };
                let range = self.agents.range::<str, _>((
                    std::ops::Bound::Excluded(r.after.as_str()),
                    std::ops::Bound::Unbounded,
                ));
                let mut agents = Vec::with_capacity(limit);
                let mut more = false;
                // A page ends at `limit` agents or when the next would not fit in a frame
                // (registration makes sure one agent always fits).
                let room = self
                    .cfg
                    .link
                    .max_frame
                    .saturating_sub(crate::link::FRAME_MARGIN);
                let mut size = 0;
                for (_, a) in range {
                    if agents.len() == limit {
                        more = true;
                        break;
                    }
                    let info = pb::AgentInfo {
                        agent_id: a.record.agent_id.clone(),
                        connected: a.conn.is_some(),
                        last_seen_unix_ms: a.record.last_seen_unix_ms,
                        address: a
                            .conn
                            .and_then(|c| self.conns.get(&c))
                            .map(|e| e.peer.addr.to_string())
                            .unwrap_or_default(),
                        allowed_networks: a.record.allowed_networks.clone(),
                    };
                    let len = listed_len(&info);
                    if !agents.is_empty() && size + len > room {
                        more = true;
                        break;
                    }
                    size += len;
                    agents.push(info);
                }
                self.send_body(
                    conn,
                    Body::ListAgentsResponse(pb::ListAgentsResponse {
                        request_id: r.request_id,
                        agents,
                        more,
                    }),
                );
            }
            Body::RegisterAgentRequest(r) => {
                if let Err(d) = perm::authorize(&user, uid, perms, &Operation::RegisterAgent) {
                    return self.control_error(conn, r.request_id, Code::Access, d.to_string());
                }
                if let Err(e) = validate_agent_id(&r.agent_id) {
                    return self.control_error(conn, r.request_id, Code::Invalid, e);
                }
                if !r.secret_hash.starts_with("$argon2") {
                    return self.control_error(
                        conn,
                        r.request_id,
                        Code::Invalid,
                        "secret_hash must be an argon2 PHC string".into(),
                    );
                }
                if let Some(bad) = r
                    .allowed_networks
                    .iter()
                    .find(|n| n.parse::<IpNet>().is_err())
                {
                    return self.control_error(
                        conn,
                        r.request_id,
                        Code::Invalid,
                        format!("invalid network {bad:?}"),
                    );
                }
                // The agent must fit in a ListAgentsResponse frame, with the longest address.
                let room = self
                    .cfg
                    .link
                    .max_frame
                    .saturating_sub(crate::link::FRAME_MARGIN);
                let listed = listed_len(&pb::AgentInfo {
                    agent_id: r.agent_id.clone(),
                    connected: true,
                    last_seen_unix_ms: i64::MAX,
                    address: LONGEST_ADDRESS.into(),
                    allowed_networks: r.allowed_networks.clone(),
                });
                if listed > room {
                    return self.control_error(
                        conn,
                        r.request_id,
                        Code::Invalid,
                        format!(
                            "too many allowed networks: the agent's listing takes {listed} bytes \
                             ({room} at most)"
                        ),
                    );
                }
                self.register_agent(r.agent_id.clone(), r.secret_hash, r.allowed_networks);
                self.send_body(
                    conn,
                    Body::RegisterAgentResponse(pb::RegisterAgentResponse {
                        request_id: r.request_id,
                        agent_id: r.agent_id,
                    }),
                );
            }
            Body::RemoveAgentRequest(r) => {
                if let Err(d) = perm::authorize(&user, uid, perms, &Operation::RemoveAgent) {
                    return self.control_error(conn, r.request_id, Code::Access, d.to_string());
                }
                let Some(agent) = self.agents.get(&r.agent_id) else {
                    return self.control_error(
                        conn,
                        r.request_id,
                        Code::NotFound,
                        format!("no agent {:?}", r.agent_id),
                    );
                };
                let live = agent.conn;
                if let Some(c) = live {
                    self.close_conn(now, c, CloseReason::Local("agent removed".into()));
                }
                self.agents.remove(&r.agent_id);
                self.out.push_back(HubAction::Persist(Change::AgentRemoved {
                    agent_id: r.agent_id.clone(),
                }));
                self.out.push_back(HubAction::Event(HubEvent::AgentRemoved {
                    agent_id: r.agent_id.clone(),
                }));
                self.send_body(
                    conn,
                    Body::RemoveAgentResponse(pb::RemoveAgentResponse {
                        request_id: r.request_id,
                        agent_id: r.agent_id,
                    }),
                );
            }
            Body::SetAgentDataRequest(r) => {
                if let Err(d) = perm::authorize(&user, uid, perms, &Operation::SetAgentData) {
                    return self.control_error(conn, r.request_id, Code::Access, d.to_string());
                }
                if serde_json::from_str::<serde_json::Value>(&r.value_json).is_err() {
                    return self.control_error(
                        conn,
                        r.request_id,
                        Code::Invalid,
                        "value_json is not JSON".into(),
                    );
                }
                // The agent fetches it in one Response frame: refuse what could never arrive.
                let room = self
                    .cfg
                    .link
                    .max_frame
                    .saturating_sub(crate::link::FRAME_MARGIN);
                if r.value_json.len() > room {
                    return self.control_error(
                        conn,
                        r.request_id,
                        Code::Invalid,
                        format!(
                            "value of {} bytes does not fit in a frame ({room} bytes at most)",
                            r.value_json.len()
                        ),
                    );
                }
                let Some(agent) = self.agents.get_mut(&r.agent_id) else {
                    return self.control_error(
                        conn,
                        r.request_id,
                        Code::NotFound,
                        format!("no agent {:?}", r.agent_id),
                    );
                };
                agent.data.insert(r.name.clone(), r.value_json.clone());
                self.out.push_back(HubAction::Persist(Change::AgentData {
                    agent_id: r.agent_id.clone(),
                    name: r.name.clone(),
                    value_json: r.value_json,
                }));
                self.out.push_back(HubAction::Event(HubEvent::AgentDataSet {
                    agent_id: r.agent_id,
                    name: r.name,
                }));
                self.send_body(
                    conn,
                    Body::SetAgentDataResponse(pb::SetAgentDataResponse {
                        request_id: r.request_id,
                    }),
                );
            }
            Body::RunCommandRequest(r) => self.run_command(now, conn, &user, uid, perms, r),
            Body::SubscribeEventsRequest(r) => {
                if let Err(d) = perm::authorize(&user, uid, perms, &Operation::SubscribeEvents) {
                    return self.control_error(conn, r.request_id, Code::Access, d.to_string());
                }
                self.subscribe(conn, r)
            }
            Body::RevokeCertificateRequest(r) => {
                self.revoke_certificate(now, conn, (&user, uid, perms), r)
            }
            Body::ListCertificatesRequest(r) => {
                self.list_certificates(conn, (&user, uid, perms), r)
            }
            Body::Cancel(c) => {
                let Some(cmd) = self.commands.get(&c.command_id) else {
                    return self.control_error(
                        conn,
                        0,
                        Code::NotFound,
                        format!("no running command {}", c.command_id),
                    );
                };
                if let Err(d) = perm::authorize(
                    &user,
                    uid,
                    perms,
                    &Operation::CancelCommand {
                        issued_by: &cmd.issued_by,
                    },
                ) {
                    return self.control_error(conn, 0, Code::Access, d.to_string());
                }
                let agent_conn = cmd.agent_conn;
                if let Some(Conn::Agent(link)) =
                    self.conns.get_mut(&agent_conn).map(|e| &mut e.conn)
                {
                    let _ = link.send_cancel(c.command_id);
                }
                self.pump_agent(now, agent_conn);
            }
            other => {
                let Err(other) = self.session_login(now, conn, uid, perms, other) else {
                    return;
                };
                let actor = Actor {
                    name: &user,
                    uid,
                    perms,
                };
                let Err(other) = self.session_domain(conn, actor, other) else {
                    return;
                };
                let Err(other) = self.session_feed(now, conn, (&user, uid, perms), other) else {
                    return;
                };
                let ty = msg::type_of(&other);
                self.close_conn(
                    now,
                    conn,
                    CloseReason::Protocol(format!("unexpected {ty:?} in a session")),
                );
            }
        }
    }

    fn run_command(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: &str,
        uid: u64,
        perms: Permissions,
        r: pb::RunCommandRequest,
    ) {
        if let Err(d) = perm::authorize(user, uid, perms, &Operation::RunCommand) {
            return self.control_error(conn, r.request_id, Code::Access, d.to_string());
        }
        let Some(agent) = self.agents.get(&r.agent_id) else {
            return self.control_error(
                conn,
                r.request_id,
                Code::NotFound,
                format!("no agent {:?}", r.agent_id),
            );
        };
        let Some(agent_conn) = agent.conn else {
            return self.control_error(
                conn,
                r.request_id,
                Code::Unavailable,
                format!("agent {:?} is not connected", r.agent_id),
            );
        };
        if r.operation.is_empty() {
            return self.control_error(
                conn,
                r.request_id,
                Code::Invalid,
                "operation is empty".into(),
            );
        }
        let data = if r.data.is_empty() {
            "{}".to_string()
        } else {
            r.data
        };
        if !serde_json::from_str::<serde_json::Value>(&data).is_ok_and(|v| v.is_object()) {
            return self.control_error(
                conn,
                r.request_id,
                Code::Invalid,
                "data must be a JSON object".into(),
            );
        }
        // The agent must accept the Command frame: refuse what could never arrive (the agent
        // would drop its link, and every command running on it, on a frame too long).
        let room = self
            .cfg
            .link
            .max_frame
            .saturating_sub(crate::link::FRAME_MARGIN);
        if r.operation.len() + data.len() > room {
            return self.control_error(
                conn,
                r.request_id,
                Code::Invalid,
                format!(
                    "a command of {} bytes does not fit in a frame ({room} bytes at most)",
                    r.operation.len() + data.len()
                ),
            );
        }
        if self.commands.len() >= self.cfg.max_active_commands {
            return self.control_error(
                conn,
                r.request_id,
                Code::Unavailable,
                "too many running commands".into(),
            );
        }
        let command_id = self.next_command_id;
        self.next_command_id += 1;
        self.out
            .push_back(HubAction::Persist(Change::CommandCreated(CommandRecord {
                command_id,
                agent_id: r.agent_id.clone(),
                operation: r.operation.clone(),
                data: data.clone(),
                issued_by: user.to_string(),
                status: CommandStatus::Pending,
                changed: false,
                output: String::new(),
                created_unix_ms: self.unix_ms(now),
                finished_unix_ms: 0,
            })));
        self.commands.insert(
            command_id,
            ActiveCommand {
                agent_conn,
                issuer: Some(conn),
                issued_by: user.to_string(),
            },
        );
        self.send_body(
            conn,
            Body::RunCommandResponse(pb::RunCommandResponse {
                request_id: r.request_id,
                command_id,
            }),
        );
        if let Some(Conn::Agent(link)) = self.conns.get_mut(&agent_conn).map(|e| &mut e.conn) {
            let _ = link.send_command(command_id, &r.operation, &data);
        }
        self.out
            .push_back(HubAction::Event(HubEvent::CommandStarted {
                command_id,
                agent_id: r.agent_id,
                operation: r.operation,
            }));
        self.pump_agent(now, agent_conn);
    }

    pub(crate) fn control_error(
        &mut self,
        conn: ConnId,
        request_id: u64,
        code: Code,
        message: String,
    ) {
        self.send_body(
            conn,
            Body::ControlError(pb::ControlError {
                request_id,
                code: code as i32,
                message,
            }),
        );
    }
}

/// The longest address a connection can show (`SocketAddr`'s Display of an IPv6 address with
/// a scope id and port).
const LONGEST_ADDRESS: &str = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535";

/// Bytes an entry of a list response takes in it (field key, length and body).
fn listed_len(entry: &impl prost::Message) -> usize {
    let body = entry.encoded_len();
    1 + prost::length_delimiter_len(body) + body
}

fn validate_agent_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_AGENT_ID {
        return Err(format!("agent id must be 1..={MAX_AGENT_ID} bytes"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("agent id may only contain ASCII letters, digits, '-', '_' and '.'".into());
    }
    Ok(())
}

/// Most users or channels in one list response.
const MAX_LIST_PAGE: usize = 200;

fn domain_code(e: &DomainError) -> Code {
    match e {
        DomainError::Server(_) => Code::Internal,
        DomainError::Param(_) => Code::NotFound,
        DomainError::Invalid(_) => Code::Conflict,
        DomainError::Access(_) => Code::Access,
        DomainError::NotImplemented(_) => Code::Invalid,
    }
}

impl Hub {
    /// Users and channels over the native protocol; gives back messages it does not handle.
    fn session_domain(&mut self, conn: ConnId, actor: Actor<'_>, body: Body) -> Result<(), Body> {
        let (rid, result): (u64, Result<Body, DomainError>) = match body {
            Body::RegisterUserRequest(r) => {
                let res = self
                    .register_user(actor, Some(&r.name), Permissions(r.permissions))
                    .map(|uid| {
                        let control_key = self.control_key(uid).unwrap_or_default().to_string();
                        Body::RegisterUserResponse(pb::RegisterUserResponse {
                            request_id: r.request_id,
                            uid,
                            control_key,
                        })
                    });
                (r.request_id, res)
            }
            Body::RemoveUserRequest(r) => (
                r.request_id,
                self.unregister_user(actor, r.uid).map(|uid| {
                    Body::RemoveUserResponse(pb::RemoveUserResponse {
                        request_id: r.request_id,
                        uid,
                    })
                }),
            ),
            Body::ListUsersRequest(r) => {
                let mut users: Vec<pb::UserInfo> = self
                    .domain
                    .users
                    .range(r.after_uid.saturating_add(1)..)
                    .take(MAX_LIST_PAGE + 1)
                    .map(|(_, u)| pb::UserInfo {
                        uid: u.uid,
                        name: u.name.clone(),
                        permissions: u.permissions,
                    })
                    .collect();
                let more = users.len() > MAX_LIST_PAGE;
                users.truncate(MAX_LIST_PAGE);
                (
                    r.request_id,
                    Ok(Body::ListUsersResponse(pb::ListUsersResponse {
                        request_id: r.request_id,
                        users,
                        more,
                    })),
                )
            }
            Body::CreateChannelRequest(r) => {
                let res = self.create_channel(actor).and_then(|chid| {
                    let port = self.channel_port(chid)?;
                    Ok(Body::CreateChannelResponse(pb::CreateChannelResponse {
                        request_id: r.request_id,
                        chid,
                        port: port.into(),
                    }))
                });
                (r.request_id, res)
            }
            Body::DeleteChannelRequest(r) => (
                r.request_id,
                self.delete_channel(actor, r.chid).map(|chid| {
                    Body::DeleteChannelResponse(pb::DeleteChannelResponse {
                        request_id: r.request_id,
                        chid,
                    })
                }),
            ),
            Body::JoinChannelRequest(r) => {
                let uid = if r.uid == 0 { actor.uid } else { r.uid };
                let res = self
                    .join_channel(actor, uid, r.chid, true)
                    .map(|(port, token)| {
                        Body::JoinChannelResponse(pb::JoinChannelResponse {
                            request_id: r.request_id,
                            port: port.into(),
                            token: token
                                .map(|t| bytes::Bytes::copy_from_slice(&t))
                                .unwrap_or_default(),
                        })
                    });
                (r.request_id, res)
            }
            Body::LeaveChannelRequest(r) => {
                let uid = if r.uid == 0 { actor.uid } else { r.uid };
                (
                    r.request_id,
                    self.leave_channel(actor, uid, r.chid).map(|_| {
                        Body::LeaveChannelResponse(pb::LeaveChannelResponse {
                            request_id: r.request_id,
                        })
                    }),
                )
            }
            Body::ListChannelsRequest(r) => {
                // A page ends at MAX_LIST_PAGE channels or when the next would not fit in a
                // frame (one channel at least).
                let room = self
                    .cfg
                    .link
                    .max_frame
                    .saturating_sub(crate::link::FRAME_MARGIN);
                let (mut channels, mut size, mut more) = (vec![], 0, false);
                for (_, c) in self.domain.channels.range(r.after_chid.saturating_add(1)..) {
                    let info = pb::ChannelInfo {
                        chid: c.record.chid,
                        owner: c.record.owner,
                        port: c.record.port.into(),
                        members: c.members.iter().copied().collect(),
                    };
                    let len = listed_len(&info);
                    if channels.len() == MAX_LIST_PAGE
                        || (!channels.is_empty() && size + len > room)
                    {
                        more = true;
                        break;
                    }
                    size += len;
                    channels.push(info);
                }
                (
                    r.request_id,
                    Ok(Body::ListChannelsResponse(pb::ListChannelsResponse {
                        request_id: r.request_id,
                        channels,
                        more,
                    })),
                )
            }
            other => return Err(other),
        };
        match result {
            Ok(body) => self.send_body(conn, body),
            Err(e) => self.control_error(conn, rid, domain_code(&e), e.to_string()),
        }
        Ok(())
    }
}
