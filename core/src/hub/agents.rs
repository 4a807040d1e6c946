//! Agent connections in the hub: authentication, the registry, commands and data requests.

use std::time::Instant;

use switchboard_proto as pb;
use switchboard_proto::command_result::Status;
use switchboard_proto::message::Message as Body;

use super::{
    AgentEntry, AgentRecord, Change, CommandStatus, Conn, ConnId, Hub, HubAction, HubEvent,
    PendingVerify, VerifyTicket,
};
use crate::link::ManagerEvent;
use crate::machine::{Action, CloseReason};
use crate::net;

impl Hub {
    /// Drains the actions of an agent link into the hub's queue, handling its events.
    pub(crate) fn pump_agent(&mut self, now: Instant, conn: ConnId) {
        loop {
            let Some(entry) = self.conns.get_mut(&conn) else {
                return;
            };
            let Conn::Agent(link) = &mut entry.conn else {
                return;
            };
            let Some(action) = link.poll_action() else {
                return;
            };
            match action {
                Action::Send(bytes) => self.out.push_back(HubAction::Send { conn, bytes }),
                Action::Timer(_) => {} // indexed by `reindex` from poll_timeout
                Action::Close(reason) => {
                    if !matches!(reason, CloseReason::Bye(_) | CloseReason::Local(_)) {
                        self.out
                            .push_back(HubAction::Event(HubEvent::ConnectionFailed {
                                conn,
                                reason: reason.clone(),
                            }));
                    }
                    self.out.push_back(HubAction::Close {
                        conn,
                        reason: reason.clone(),
                    });
                    self.forget(now, conn, reason.to_string());
                    return;
                }
                Action::Event(ev) => self.agent_event(now, conn, ev),
            }
        }
    }

    fn agent_event(&mut self, now: Instant, conn: ConnId, ev: ManagerEvent) {
        match ev {
            ManagerEvent::Hello { agent_id, secret } => self.agent_hello(conn, agent_id, secret),
            ManagerEvent::Progress {
                command_id,
                current,
                total,
                message,
            } => {
                if !self.command_of(conn, command_id) {
                    return;
                }
                let issuer = self.commands.get(&command_id).and_then(|c| c.issuer);
                if let Some(s) = issuer {
                    self.send_body(
                        s,
                        Body::Progress(pb::CommandProgress {
                            command_id,
                            current,
                            total,
                            message: message.clone(),
                        }),
                    );
                }
                self.out
                    .push_back(HubAction::Event(HubEvent::CommandProgress {
                        command_id,
                        current,
                        total,
                        message,
                    }));
            }
            ManagerEvent::Finished {
                command_id,
                status,
                changed,
                output,
                done,
            } => {
                if !self.command_of(conn, command_id) {
                    return;
                }
                let status = match status {
                    Status::Success => CommandStatus::Success,
                    Status::Cancelled => CommandStatus::Cancelled,
                    Status::Failed | Status::Unspecified => CommandStatus::Failed,
                };
                self.finish_command(now, command_id, status, changed, output, done);
            }
            ManagerEvent::Request {
                request_id,
                name,
                data,
            } => {
                let (ok, answer) = self.answer_request(conn, &name, &data);
                if let Some(e) = self.conns.get_mut(&conn)
                    && let Conn::Agent(link) = &mut e.conn
                {
                    let _ = link.respond(request_id, ok, &answer);
                }
            }
            ManagerEvent::RenewCertificate {
                request_id,
                csr_der,
            } => self.agent_renewal(now, conn, request_id, csr_der),
            ManagerEvent::Stream(body) => self.agent_stream(now, conn, body),
        }
    }

    /// Whether `command_id` is active and runs on the agent of `conn` (an agent cannot report
    /// on another agent's commands).
    fn command_of(&self, conn: ConnId, command_id: i64) -> bool {
        let ok = self
            .commands
            .get(&command_id)
            .is_some_and(|c| c.agent_conn == conn);
        if !ok {
            tracing::debug!(
                command_id,
                ?conn,
                "report for a command this agent does not run, ignored"
            );
        }
        ok
    }

    /// Persists the end of a command, then tells its issuer.
    pub(crate) fn finish_command(
        &mut self,
        now: Instant,
        command_id: i64,
        status: CommandStatus,
        changed: bool,
        output: String,
        done: bool,
    ) {
        let Some(cmd) = self.commands.remove(&command_id) else {
            return;
        };
        self.out
            .push_back(HubAction::Persist(Change::CommandFinished {
                command_id,
                status,
                changed,
                output: output.clone(),
                finished_unix_ms: self.unix_ms(now),
            }));
        if let Some(s) = cmd.issuer {
            let wire = match status {
                CommandStatus::Success => Status::Success,
                CommandStatus::Cancelled => Status::Cancelled,
                CommandStatus::Failed | CommandStatus::Pending => Status::Failed,
            } as i32;
            let body = if done {
                Body::Done(pb::CommandDone {
                    command_id,
                    status: wire,
                    changed,
                    output: output.clone(),
                })
            } else {
                Body::Result(pb::CommandResult {
                    command_id,
                    status: wire,
                    changed,
                    output: output.clone(),
                })
            };
            self.send_body(s, body);
        }
        self.out
            .push_back(HubAction::Event(HubEvent::CommandFinished {
                command_id,
                status,
                output,
            }));
    }

    fn answer_request(&self, conn: ConnId, name: &str, data: &str) -> (bool, String) {
        let Some(agent) = self.agent_of(conn) else {
            return (false, "not authenticated".into());
        };
        match name {
            "data" => {
                let key = serde_json::from_str::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string));
                let Some(key) = key else {
                    return (false, "data request needs {\"name\": NAME}".into());
                };
                match self.agents.get(agent).and_then(|a| a.data.get(&key)) {
                    Some(v) => (true, v.clone()),
                    None => (false, format!("no data named {key:?} for agent {agent:?}")),
                }
            }
            other => (false, format!("unsupported request {other:?}")),
        }
    }

    fn agent_of(&self, conn: ConnId) -> Option<&str> {
        match &self.conns.get(&conn)?.conn {
            Conn::Agent(link) if link.is_established() => link.agent_id(),
            _ => None,
        }
    }

    fn agent_hello(&mut self, conn: ConnId, agent_id: String, secret: String) {
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        let peer = entry.peer.clone();
        let mut failure = String::new();
        if self.cfg.require_cert_match && peer.cert_name.as_deref() != Some(agent_id.as_str()) {
            failure = format!(
                "certificate names {:?}, hello says {agent_id:?}",
                peer.cert_name
            );
        }
        let hash = match self.agents.get(&agent_id) {
            None => {
                if failure.is_empty() {
                    failure = "unknown agent".into();
                }
                None
            }
            Some(a) => {
                if failure.is_empty() && !net::allowed(&a.record.allowed_networks, peer.addr.ip()) {
                    failure = format!("address {} not in the allowed networks", peer.addr.ip());
                }
                Some(a.record.secret_hash.clone())
            }
        };
        let ticket = VerifyTicket(self.next_ticket);
        self.next_ticket += 1;
        self.verifications.insert(
            ticket,
            PendingVerify {
                conn,
                agent_id,
                prechecks_ok: failure.is_empty(),
                precheck_failure: failure,
            },
        );
        // The hash is checked even when a precheck failed, so that the answer takes as long.
        self.out.push_back(HubAction::VerifySecret {
            ticket,
            secret_hash: hash,
            secret,
        });
    }

    /// The answer to a [`HubAction::VerifySecret`]. Unknown or stale tickets are ignored.
    pub fn handle_verified(&mut self, now: Instant, ticket: VerifyTicket, ok: bool) {
        self.last_now = self.last_now.max(now);
        if self.login_verified(now, ticket, ok) {
            return;
        }
        let Some(v) = self.verifications.remove(&ticket) else {
            return;
        };
        let Some(entry) = self.conns.get_mut(&v.conn) else {
            return;
        };
        let Conn::Agent(link) = &mut entry.conn else {
            return;
        };
        let addr = entry.peer.addr;
        // The agent may have been removed while its secret was being verified.
        let still_registered = self.agents.contains_key(&v.agent_id);
        if !(ok && v.prechecks_ok && still_registered) {
            let reason = if !v.prechecks_ok {
                v.precheck_failure
            } else if !still_registered {
                "agent removed during authentication".to_string()
            } else {
                "wrong secret".to_string()
            };
            self.out.push_back(HubAction::Event(HubEvent::AuthFailed {
                agent_id: v.agent_id,
                addr,
                reason,
            }));
            link.reject("authentication failed");
            self.pump_agent(now, v.conn);
            return;
        }
        // Newest connection wins: an agent that reconnects before its old connection timed out
        // must not be locked out.
        let old = self.agents.get(&v.agent_id).and_then(|a| a.conn);
        if let Some(old) = old.filter(|o| *o != v.conn) {
            self.close_conn(now, old, CloseReason::Replaced);
        }
        let unix_ms = self.unix_ms(now);
        let Some(agent) = self.agents.get_mut(&v.agent_id) else {
            return;
        };
        agent.conn = Some(v.conn);
        agent.record.last_seen_unix_ms = unix_ms;
        self.out.push_back(HubAction::Persist(Change::AgentSeen {
            agent_id: v.agent_id.clone(),
            unix_ms,
        }));
        if let Some(Conn::Agent(link)) = self.conns.get_mut(&v.conn).map(|e| &mut e.conn) {
            let _ = link.accept(now);
        }
        self.out
            .push_back(HubAction::Event(HubEvent::AgentConnected {
                agent_id: v.agent_id,
                conn: v.conn,
                addr,
            }));
        self.pump_agent(now, v.conn);
        self.reindex(v.conn);
    }

    /// An authenticated (or authenticating) agent connection is gone: its running commands can
    /// no longer report, so they end as failed (persisted, and their issuers told).
    pub(crate) fn agent_gone(&mut self, now: Instant, conn: ConnId, agent_id: &str, why: String) {
        let unix_ms = self.unix_ms(now);
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        if agent.conn != Some(conn) {
            return; // never authenticated on this connection, or already replaced
        }
        agent.conn = None;
        agent.record.last_seen_unix_ms = unix_ms;
        self.out.push_back(HubAction::Persist(Change::AgentSeen {
            agent_id: agent_id.to_string(),
            unix_ms,
        }));
        let lost: Vec<i64> = self
            .commands
            .iter()
            .filter(|(_, c)| c.agent_conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.finish_command(
                now,
                id,
                CommandStatus::Failed,
                false,
                format!("agent disconnected: {why}"),
                false,
            );
        }
        self.out
            .push_back(HubAction::Event(HubEvent::AgentDisconnected {
                agent_id: agent_id.to_string(),
                reason: why,
            }));
    }

    /// Registers (or re-registers) an agent: `secret_hash` is an argon2 PHC string. The
    /// registration is persisted; the agent's data values and last-seen time are kept. Callers
    /// validate the id (the control front does); embedders and simulations may call it directly.
    pub fn register_agent(
        &mut self,
        agent_id: String,
        secret_hash: String,
        allowed_networks: Vec<String>,
    ) {
        let last_seen = self
            .agents
            .get(&agent_id)
            .map_or(0, |a| a.record.last_seen_unix_ms);
        let record = AgentRecord {
            agent_id: agent_id.clone(),
            secret_hash,
            allowed_networks,
            last_seen_unix_ms: last_seen,
        };
        self.out
            .push_back(HubAction::Persist(Change::AgentRegistered(record.clone())));
        self.out
            .push_back(HubAction::Event(HubEvent::AgentRegistered {
                agent_id: agent_id.clone(),
            }));
        match self.agents.get_mut(&agent_id) {
            Some(a) => a.record = record,
            None => {
                self.agents.insert(
                    agent_id,
                    AgentEntry {
                        record,
                        data: std::collections::BTreeMap::new(),
                        conn: None,
                    },
                );
            }
        }
    }
}
