//! The secure feed on a [`WebConn`] (`/feed`): the feed machine does the cryptography and the
//! framing; this bridge turns its work into native requests of the connection's hub session
//! and the hub's answers and events into feed messages.
//!
//! - The hello names a client: `FeedLookupRequest` gives its key, last sequence and a fresh
//!   challenge; the client's signature goes to the hub in `FeedLoginRequest` (the hub checks
//!   it and makes the session the client's user).
//! - Then the event log: `SubscribeEventsRequest` after the client's LAST SEEN ORDER; each
//!   `EventNotice` becomes an OUTBOX message (order, Unix seconds, the event's JSON).
//! - INBOX and RPC payloads are JSON whose `"@type"` names a hub operation (the JSON-RPC method
//!   names) with its fields in proto3 JSON. INBOX goes as `FeedInboxRequest` with its sequence
//!   (the hub stores both together); an RPC's answer comes back as RPC_RESPONSE with its id,
//!   the result or `{"error": {code, message, data}}` as in JSON-RPC.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use super::{Mode, WebConn, WebOutput};
use crate::feed::messages::{ServerMessage, error_type};
use crate::feed::{
    ClientInfo, FeedConfig, FeedConn, FeedOutput, UNIFORM_ERROR, close_code, crypto,
};
use crate::hub::FEED_REPLACED;
use crate::link::msg;
use crate::web::jsonrpc;
use crate::web::ws::{self, Opcode};

#[derive(Debug)]
enum Waiting {
    Lookup,
    Login {
        last_seen_order: i64,
    },
    Subscribe,
    Rpc(i64),
    /// The FeedInboxRequest itself (its inner operation's answer is dropped).
    Inbox(i64),
    InboxOperation,
}

/// The feed machine of a connection and the native requests in flight for it.
#[derive(Debug)]
pub(super) struct FeedBridge {
    pub(super) conn: FeedConn,
    /// Native requests in flight, with when they are given up.
    waiting: BTreeMap<u64, (Waiting, Instant)>,
}

impl FeedBridge {
    pub(super) fn new(now: Instant, cfg: FeedConfig, seed: [u8; 32]) -> Self {
        FeedBridge {
            conn: FeedConn::new(now, cfg, seed),
            waiting: BTreeMap::new(),
        }
    }
}

/// `{"@type": "ListAgentsRequest", ...fields}` as a native request.
fn operation(json: &[u8]) -> Result<Body, (i64, String)> {
    let v: Value = serde_json::from_slice(json).map_err(|e| {
        (
            jsonrpc::PARSE_ERROR,
            format!("the payload is not JSON: {e}"),
        )
    })?;
    let Value::Object(mut o) = v else {
        return Err((
            jsonrpc::INVALID_REQUEST,
            "the payload must be a JSON object".into(),
        ));
    };
    let Some(Value::String(method)) = o.remove("@type") else {
        return Err((
            jsonrpc::INVALID_REQUEST,
            "the payload needs an \"@type\"".into(),
        ));
    };
    jsonrpc::to_request(&method, &Value::Object(o)).map(|(body, _cookie)| body)
}

fn error_json(code: i64, message: &str, data: Option<Value>) -> Vec<u8> {
    let mut e = json!({"code": code, "message": message});
    if let Some(d) = data {
        e["data"] = d;
    }
    json!({ "error": e }).to_string().into_bytes()
}

impl WebConn {
    /// Performs what the feed machine asked for.
    pub(super) fn drain_feed(&mut self) {
        loop {
            let Some(out) = self.feed.as_mut().and_then(|f| f.conn.poll_output()) else {
                return;
            };
            match out {
                FeedOutput::Binary(b) => {
                    let mut f = Vec::with_capacity(b.len() + 10);
                    ws::encode_frame(Opcode::Binary, &b, &mut f);
                    self.out.push_back(WebOutput::Socket(f));
                }
                FeedOutput::LookupClient { client_id } => {
                    let rid = self.feed_request(Waiting::Lookup);
                    self.send_hub(Body::FeedLookupRequest(pb::FeedLookupRequest {
                        request_id: rid,
                        client_id,
                    }));
                }
                FeedOutput::Authenticated {
                    client_id,
                    last_seen_order,
                    signature,
                    ..
                } => {
                    let rid = self.feed_request(Waiting::Login { last_seen_order });
                    self.send_hub(Body::FeedLoginRequest(pb::FeedLoginRequest {
                        request_id: rid,
                        client_id,
                        signature: signature.into(),
                    }));
                }
                FeedOutput::Inbox { sequence, json } => {
                    // An operation that does not parse still goes, empty: the hub uses its
                    // sequence and answers INVALID.
                    let operation = operation(&json).ok().map(|mut body| {
                        let inner_rid = self.take_request_id();
                        if jsonrpc::set_request_id(&mut body, inner_rid) {
                            self.feed_request_as(inner_rid, Waiting::InboxOperation);
                        }
                        Box::new(msg::wrap(body))
                    });
                    let rid = self.feed_request(Waiting::Inbox(sequence));
                    self.send_hub(Body::FeedInboxRequest(Box::new(pb::FeedInboxRequest {
                        request_id: rid,
                        sequence,
                        operation,
                    })));
                }
                FeedOutput::Rpc { request_id, json } => match operation(&json) {
                    Ok(mut body) => {
                        let rid = self.feed_request(Waiting::Rpc(request_id));
                        if !jsonrpc::set_request_id(&mut body, rid) {
                            // No answer comes for these (CommandCancel): answer now.
                            self.waiting_remove(rid);
                            self.send_hub(body);
                            self.feed_send(ServerMessage::RpcResponse {
                                request_id,
                                json: b"{}".to_vec(),
                            });
                        } else {
                            self.send_hub(body);
                        }
                    }
                    Err((code, message)) => self.feed_send(ServerMessage::RpcResponse {
                        request_id,
                        json: error_json(code, &message, None),
                    }),
                },
                FeedOutput::Close { code, reason } => {
                    self.ws_close(code, &reason);
                    return;
                }
            }
        }
    }

    fn feed_request(&mut self, w: Waiting) -> u64 {
        let rid = self.take_request_id();
        self.feed_request_as(rid, w);
        rid
    }

    fn feed_request_as(&mut self, rid: u64, w: Waiting) {
        let deadline = self.now + self.cfg.call_timeout;
        if let Some(f) = &mut self.feed {
            f.waiting.insert(rid, (w, deadline));
        }
    }

    fn waiting_remove(&mut self, rid: u64) -> Option<Waiting> {
        self.feed
            .as_mut()
            .and_then(|f| f.waiting.remove(&rid))
            .map(|(w, _)| w)
    }

    /// The earliest deadline of a request in flight.
    pub(super) fn feed_deadline(&self) -> Option<Instant> {
        self.feed
            .as_ref()
            .and_then(|f| f.waiting.values().map(|(_, d)| *d).min())
    }

    /// Requests the hub did not answer in time: an RPC gets an error answer (every RPC is
    /// answered); a handshake step closes the connection.
    pub(super) fn feed_expire(&mut self, now: Instant) {
        let Some(f) = &mut self.feed else {
            return;
        };
        let expired: Vec<u64> = f
            .waiting
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(rid, _)| *rid)
            .collect();
        for rid in expired {
            match self.waiting_remove(rid) {
                Some(Waiting::Rpc(request_id)) => self.feed_send(ServerMessage::RpcResponse {
                    request_id,
                    json: error_json(
                        jsonrpc::INTERNAL_ERROR,
                        "the hub did not answer in time",
                        None,
                    ),
                }),
                Some(Waiting::Lookup | Waiting::Login { .. }) => {
                    self.feed_fail(close_code::POLICY, UNIFORM_ERROR)
                }
                _ => {}
            }
        }
    }

    fn feed_send(&mut self, m: ServerMessage) {
        if let Some(f) = &mut self.feed {
            f.conn.send(&m);
        }
        self.drain_feed();
    }

    fn feed_fail(&mut self, code: u16, reason: &str) {
        if let Some(f) = &mut self.feed {
            f.conn.close(code, reason);
        }
        self.drain_feed();
    }

    /// A message of the hub's session on a `/feed` connection.
    pub(super) fn feed_from_hub(&mut self, body: Body) {
        let now = self.now;
        if let Body::EventNotice(n) = &body {
            return self.feed_send(ServerMessage::Outbox {
                order: n.order as i64,
                timestamp: n.unix_ms as f64 / 1000.0,
                json: n.json.clone().into_bytes(),
            });
        }
        let Some(rid) = msg::response_id(&body).filter(|r| *r != 0) else {
            return; // command progress and the like: the feed follows the event log
        };
        let Some(waiting) = self.waiting_remove(rid) else {
            return;
        };
        match (waiting, body) {
            (Waiting::Lookup, Body::FeedLookupResponse(l)) => {
                let key = crypto::public_key_from_der(&l.public_key_der).ok();
                let info = match (l.found, key) {
                    (true, Some(public_key)) => Some(ClientInfo {
                        public_key,
                        last_sequence: l.last_sequence,
                        challenge: l.challenge.to_vec(),
                    }),
                    _ => None,
                };
                if let Some(f) = &mut self.feed {
                    f.conn.handle_client(now, info);
                }
                self.drain_feed();
            }
            (Waiting::Lookup, _) => {
                if let Some(f) = &mut self.feed {
                    f.conn.handle_client(now, None);
                }
                self.drain_feed();
            }
            (Waiting::Login { last_seen_order }, Body::FeedLoginResponse(r)) if r.ok => {
                let rid = self.feed_request(Waiting::Subscribe);
                self.send_hub(Body::SubscribeEventsRequest(pb::SubscribeEventsRequest {
                    request_id: rid,
                    from_order: last_seen_order.max(0) as u64,
                }));
            }
            (Waiting::Login { .. }, _) => self.feed_fail(close_code::POLICY, UNIFORM_ERROR),
            (Waiting::Subscribe, Body::ControlError(e)) => {
                // Older than the log keeps (or ahead of it): no gap-free resume is possible.
                self.feed_send(ServerMessage::Error {
                    error_type: error_type::UNKNOWN,
                    message: e.message.clone().into_bytes(),
                });
                self.feed_fail(close_code::POLICY, &e.message);
            }
            (Waiting::Subscribe, _) => {}
            (Waiting::Rpc(request_id), Body::ControlError(e)) => {
                let v = jsonrpc::control_error(Value::Null, &e);
                let json = json!({ "error": v["error"] }).to_string().into_bytes();
                self.feed_send(ServerMessage::RpcResponse { request_id, json });
            }
            (Waiting::Rpc(request_id), other) => {
                let json = jsonrpc::body_json(&other).1.to_string().into_bytes();
                self.feed_send(ServerMessage::RpcResponse { request_id, json });
            }
            (Waiting::Inbox(sequence), Body::ControlError(e)) => {
                use switchboard_proto::control_error::Code;
                if e.code == Code::Conflict as i32 {
                    self.feed_fail(
                        close_code::INVALID_SEQUENCE,
                        &format!("invalid sequence {sequence}"),
                    );
                } else {
                    self.feed_send(ServerMessage::Error {
                        error_type: error_type::INVALID_PAYLOAD,
                        message: e.message.into_bytes(),
                    });
                }
            }
            (Waiting::Inbox(_) | Waiting::InboxOperation, _) => {}
        }
    }

    /// The hub ended the session: the close code the clients know.
    pub(super) fn feed_ended(&mut self, reason: &str) {
        let code = if reason.contains(FEED_REPLACED) {
            close_code::CONCURRENT
        } else if reason.contains("shutting down") {
            close_code::RESTART
        } else {
            1011
        };
        if matches!(self.mode, Mode::Feed(_)) {
            self.ws_close(code, reason);
        }
    }
}
