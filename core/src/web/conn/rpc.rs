//! The JSON-RPC side of a [`WebConn`]: calls to native requests and back, notifications.

use serde_json::{Value, json};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use super::{Group, Mode, Pending, Via, WebConn, WebOutput};
use crate::link::frame;
use crate::link::msg;
use crate::web::jsonrpc::{self, Incoming};
use crate::web::ws::{self, Opcode};
use prost::Message as _;
use std::time::Instant;

impl WebConn {
    // --- JSON-RPC -> native -------------------------------------------------------------

    pub(super) fn start_session(&mut self) {
        if !self.session_started {
            self.session_started = true;
            self.send_hub(Body::SessionHello(pb::SessionHello {
                client: "switchboard-web".into(),
            }));
        }
    }

    /// Renews the session with `cookie` (once per distinct cookie): the session becomes its
    /// user before any later call is handled.
    pub(super) fn use_cookie(&mut self, cookie: String) {
        if self.cookie.as_deref() == Some(cookie.as_str()) {
            return;
        }
        self.start_session();
        let request_id = self.take_request_id();
        self.internal.insert(request_id, ());
        self.send_hub(Body::RenewSessionRequest(pb::RenewSessionRequest {
            request_id,
            cookie: cookie.clone(),
        }));
        self.cookie = Some(cookie);
    }

    pub(super) fn take_request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    pub(super) fn send_hub(&mut self, body: Body) {
        self.out
            .push_back(WebOutput::Hub(frame::encode(&msg::wrap(body)).to_vec()));
    }

    pub(super) fn rpc_text(&mut self, now: Instant, text: &str, via: Via) {
        let (calls, batch) = match jsonrpc::parse(text) {
            Ok(Incoming::Single(c)) => (vec![c], false),
            Ok(Incoming::Batch(b)) => (b, true),
            Err(resp) => {
                return self.deliver(via, resp, None);
            }
        };
        let group = self.next_group;
        self.next_group += 1;
        self.groups.insert(
            group,
            Group {
                via,
                batch,
                slots: vec![None; calls.len()],
                remaining: calls.len(),
                set_cookie: None,
            },
        );
        self.start_session();
        for (slot, call) in calls.into_iter().enumerate() {
            match call {
                Err(resp) => self.fill(group, slot, resp, None),
                Ok(c) => self.rpc_call(now, group, slot, c),
            }
        }
    }

    pub(super) fn rpc_call(&mut self, now: Instant, group: u64, slot: usize, call: jsonrpc::Call) {
        let id = call.id.clone().unwrap_or(Value::Null);
        let answer = call.id.is_some();
        let (mut body, cookie) = match jsonrpc::to_request(&call.method, &call.params) {
            Ok(x) => x,
            Err((code, message)) => {
                let e = jsonrpc::error(id, code, &message, None);
                return self.fill_or_skip(group, slot, answer, e);
            }
        };
        if matches!(body, Body::StreamOpen(_)) && matches!(self.mode, Mode::Http { .. }) {
            let e = jsonrpc::error(
                id,
                jsonrpc::INVALID_REQUEST,
                "streams need a WebSocket (/rpc or /stream): their data comes as binary frames",
                None,
            );
            return self.fill_or_skip(group, slot, answer, e);
        }
        if self.pending.len() >= self.cfg.max_pending {
            let e = jsonrpc::error(
                id,
                jsonrpc::INTERNAL_ERROR,
                "too many calls in flight",
                None,
            );
            return self.fill_or_skip(group, slot, answer, e);
        }
        if let Some(c) = cookie {
            self.use_cookie(c);
        }
        let request_id = self.take_request_id();
        if jsonrpc::set_request_id(&mut body, request_id) {
            let login = matches!(body, Body::LoginRequest(_));
            self.pending.insert(
                request_id,
                Pending {
                    group,
                    slot,
                    id: if answer { id } else { Value::Null },
                    deadline: now + self.cfg.call_timeout,
                    login,
                },
            );
            if !answer {
                // A notification: its answer is dropped, but it still holds its slot's place.
                self.mark_silent(group, slot);
            }
            self.send_hub(body);
        } else {
            // No answer comes for these (CommandCancel): an empty result once it is sent.
            self.send_hub(body);
            self.fill_or_skip(group, slot, answer, jsonrpc::result(id, json!({})));
        }
    }

    /// An answer known at once: kept for a call, dropped for a notification.
    pub(super) fn fill_or_skip(&mut self, group: u64, slot: usize, answer: bool, v: Value) {
        if !answer {
            self.mark_silent(group, slot);
        }
        self.fill(group, slot, v, None);
    }

    /// A notification's slot: counted as answered when its native answer arrives (or never
    /// needed one). Marked by a `Null` that is dropped from the output.
    pub(super) fn mark_silent(&mut self, group: u64, slot: usize) {
        if let Some(g) = self.groups.get_mut(&group) {
            g.slots[slot] = Some(Value::Null);
        }
    }

    pub(super) fn fill(&mut self, group: u64, slot: usize, v: Value, set_cookie: Option<String>) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if g.slots[slot].as_ref().is_some_and(Value::is_null) {
            // A notification's answer: dropped.
            g.remaining = g.remaining.saturating_sub(1);
        } else if g.slots[slot].is_none() {
            g.slots[slot] = Some(v);
            g.remaining = g.remaining.saturating_sub(1);
        }
        if set_cookie.is_some() {
            g.set_cookie = set_cookie;
        }
        self.maybe_emit(group);
    }

    pub(super) fn maybe_emit(&mut self, group: u64) {
        if self.groups.get(&group).is_none_or(|g| g.remaining > 0) {
            return;
        }
        let Some(g) = self.groups.remove(&group) else {
            return;
        };
        let answers: Vec<Value> = g
            .slots
            .into_iter()
            .flatten()
            .filter(|v| !v.is_null())
            .collect();
        let body = if g.batch {
            if answers.is_empty() {
                Value::Null
            } else {
                Value::Array(answers)
            }
        } else {
            answers.into_iter().next().unwrap_or(Value::Null)
        };
        self.deliver(g.via, body, g.set_cookie);
    }

    pub(super) fn deliver(&mut self, via: Via, body: Value, set_cookie: Option<String>) {
        match via {
            Via::Ws => {
                if !body.is_null() {
                    self.ws_text(&body);
                }
            }
            Via::Http { keep_alive } => {
                self.http_reply(keep_alive, &body, set_cookie.as_deref());
                // The next request waited for this one; its deadline starts anew.
                self.request_done(self.now, keep_alive);
            }
        }
    }

    // --- native -> JSON-RPC -------------------------------------------------------------

    pub(super) fn hub_frame(&mut self, frame: &[u8]) {
        if let Mode::Stream(_) = self.mode {
            let mut f = vec![];
            ws::encode_frame(Opcode::Binary, frame, &mut f);
            self.out.push_back(WebOutput::Socket(f));
            return;
        }
        let Ok(m) = pb::Message::decode(frame) else {
            return self.end_session("undecodable message from the hub");
        };
        let Some(body) = m.message else {
            return;
        };
        match &body {
            Body::SessionWelcome(_) | Body::Pong(_) => return,
            Body::Ping(p) => return self.send_hub(Body::Pong(pb::Pong { data: p.data })),
            Body::Bye(b) if matches!(self.mode, Mode::Feed(_)) => {
                let reason = b.reason.clone();
                return self.feed_ended(&reason);
            }
            Body::Bye(b) => {
                let reason = b.reason.clone();
                if matches!(self.mode, Mode::Rpc(_)) {
                    self.ws_text(&jsonrpc::notify(&body));
                }
                return self.end_session(&reason);
            }
            _ => {}
        }
        if matches!(self.mode, Mode::Feed(_)) {
            return self.feed_from_hub(body);
        }
        let rid = msg::response_id(&body).filter(|r| *r != 0);
        if let Some(rid) = rid {
            if self.internal.remove(&rid).is_some() {
                return;
            }
            if let Some(p) = self.pending.remove(&rid) {
                let mut set_cookie = None;
                let v = match &body {
                    Body::ControlError(e) => jsonrpc::control_error(p.id.clone(), e),
                    Body::StreamReject(r) => jsonrpc::stream_reject(p.id.clone(), r),
                    other => {
                        if let (true, Body::LoginResponse(l)) = (p.login, other)
                            && l.result == pb::login_response::Result::Ok as i32
                        {
                            set_cookie = Some(l.cookie.clone());
                            self.cookie = Some(l.cookie.clone());
                        }
                        jsonrpc::result(p.id.clone(), jsonrpc::body_json(other).1)
                    }
                };
                return self.fill(p.group, p.slot, v, set_cookie);
            }
        }
        if matches!(self.mode, Mode::Rpc(_)) && matches!(body, Body::StreamData(_)) {
            // Stream data is binary only: one native `Message` per binary frame.
            let mut f = Vec::with_capacity(frame.len() + 10);
            ws::encode_frame(Opcode::Binary, frame, &mut f);
            self.out.push_back(WebOutput::Socket(f));
            return;
        }
        if matches!(self.mode, Mode::Rpc(_)) {
            let text = jsonrpc::notify_text(&body);
            let mut f = Vec::with_capacity(text.len() + 10);
            ws::encode_frame(Opcode::Text, text.as_bytes(), &mut f);
            self.out.push_back(WebOutput::Socket(f));
        }
    }

    /// The hub's session is over: what is pending fails, and the client is told.
    pub(super) fn end_session(&mut self, why: &str) {
        let pending = std::mem::take(&mut self.pending);
        for (_, p) in pending {
            let e = jsonrpc::error(
                p.id,
                jsonrpc::INTERNAL_ERROR,
                &format!("the session ended: {why}"),
                None,
            );
            self.fill(p.group, p.slot, e, None);
        }
        match self.mode {
            Mode::Rpc(_) | Mode::Stream(_) => self.ws_close(1011, why),
            Mode::Feed(_) => self.feed_ended(why),
            Mode::Http { .. } => self.close(),
            Mode::Closed => {}
        }
    }
}
