//! JSON-RPC 2.0 over the hub's operations: the envelope (single calls, batches,
//! notifications, the standard error codes) and the mapping between method names and native
//! request messages, whose params and results are their proto3 JSON form (pbjson).
//!
//! Error codes (stable):
//!
//! | code | meaning |
//! | --- | --- |
//! | -32700 | parse error (not JSON) |
//! | -32600 | invalid request (not a JSON-RPC 2.0 call) |
//! | -32601 | method not found |
//! | -32602 | invalid params (not the method's message) |
//! | -32603 | internal error (the session ended before the answer, timeout) |
//! | -32001 | INVALID: the hub refused the request as malformed |
//! | -32002 | NOT_FOUND |
//! | -32003 | ACCESS: permission denied, or not logged in |
//! | -32004 | UNAVAILABLE |
//! | -32005 | INTERNAL |
//! | -32006 | CONFLICT |
//! | -32007 | GONE: older than the event log retains |
//!
//! A hub error's `data` is `{"code": "ACCESS"}` (the ControlError code by name).
//!
//! A call without an `id` member is a notification: it runs, and nothing answers it, whatever
//! becomes of it (an unknown method, positional or otherwise invalid params, a hub refusal),
//! inside a batch too; a request of notifications alone gets no response at all. An element
//! that is not a Request object (not an object, `jsonrpc` not `"2.0"`, a method that is not a
//! string, params neither an array nor an object, an id neither a string, a number nor null)
//! is no notification either: it is answered with -32600 and a null id (or its id, when that
//! one was readable), as in the examples of the specification.

use serde_json::{Map, Value, json};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use crate::link::msg;

/// Parse error.
pub const PARSE_ERROR: i64 = -32700;
/// Invalid request.
pub const INVALID_REQUEST: i64 = -32600;
/// Method not found.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid params.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error.
pub const INTERNAL_ERROR: i64 = -32603;

/// The methods: request message names and the JSON name of their member of `Message`.
pub const METHODS: &[(&str, &str)] = &[
    ("LoginRequest", "loginRequest"),
    ("RenewSessionRequest", "renewSessionRequest"),
    ("LogoutRequest", "logoutRequest"),
    ("ListAgentsRequest", "listAgentsRequest"),
    ("RegisterAgentRequest", "registerAgentRequest"),
    ("RemoveAgentRequest", "removeAgentRequest"),
    ("RunCommandRequest", "runCommandRequest"),
    ("CommandCancel", "cancel"),
    ("SetAgentDataRequest", "setAgentDataRequest"),
    ("RegisterUserRequest", "registerUserRequest"),
    ("RemoveUserRequest", "removeUserRequest"),
    ("ListUsersRequest", "listUsersRequest"),
    ("SetUserCredentialsRequest", "setUserCredentialsRequest"),
    ("CreateChannelRequest", "createChannelRequest"),
    ("DeleteChannelRequest", "deleteChannelRequest"),
    ("JoinChannelRequest", "joinChannelRequest"),
    ("LeaveChannelRequest", "leaveChannelRequest"),
    ("ListChannelsRequest", "listChannelsRequest"),
    ("RevokeCertificateRequest", "revokeCertificateRequest"),
    ("ListCertificatesRequest", "listCertificatesRequest"),
    ("SubscribeEventsRequest", "subscribeEventsRequest"),
    ("FeedClientAddRequest", "feedClientAddRequest"),
    ("FeedClientRemoveRequest", "feedClientRemoveRequest"),
    ("FeedClientListRequest", "feedClientListRequest"),
    ("StreamOpen", "streamOpen"),
    ("OpenStreamRequest", "streamOpen"),
    ("StreamClose", "streamClose"),
    ("CloseStreamRequest", "streamClose"),
    ("StreamCredit", "streamCredit"),
    ("StreamResync", "streamResync"),
    ("StreamData", "streamData"),
    ("ListStreamsRequest", "listStreamsRequest"),
];

/// One call of a request (or batch).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The id to answer with; `None` for a notification (no answer).
    pub id: Option<Value>,
    /// The method.
    pub method: String,
    /// The params: an object, or an array (positional params, which every method here refuses
    /// as invalid params); absent params are `{}`.
    pub params: Value,
}

/// A parsed request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// One call, or the error response for it.
    Single(Result<Call, Value>),
    /// A batch: each call, or the error response for that element.
    Batch(Vec<Result<Call, Value>>),
}

/// An error response.
pub fn error(id: Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut e = json!({"code": code, "message": message});
    if let Some(d) = data {
        e["data"] = d;
    }
    json!({"jsonrpc": "2.0", "id": id, "error": e})
}

/// A result response.
pub fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A notification from the server.
pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// Parses a request body: `Err` is the response to send at once (parse error, empty batch).
pub fn parse(text: &str) -> Result<Incoming, Value> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| error(Value::Null, PARSE_ERROR, &format!("parse error: {e}"), None))?;
    match v {
        Value::Array(items) if items.is_empty() => Err(error(
            Value::Null,
            INVALID_REQUEST,
            "invalid request: empty batch",
            None,
        )),
        Value::Array(items) => Ok(Incoming::Batch(items.into_iter().map(call).collect())),
        other => Ok(Incoming::Single(call(other))),
    }
}

fn call(v: Value) -> Result<Call, Value> {
    let Value::Object(mut o) = v else {
        return Err(error(
            Value::Null,
            INVALID_REQUEST,
            "invalid request: not an object",
            None,
        ));
    };
    let id = match o.remove("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id),
        Some(_) => {
            return Err(error(
                Value::Null,
                INVALID_REQUEST,
                "invalid request: id must be a string, a number or null",
                None,
            ));
        }
    };
    let bad = |why: &str| {
        error(
            id.clone().unwrap_or(Value::Null),
            INVALID_REQUEST,
            &format!("invalid request: {why}"),
            None,
        )
    };
    if o.get("jsonrpc") != Some(&Value::String("2.0".into())) {
        return Err(bad("jsonrpc must be \"2.0\""));
    }
    let Some(Value::String(method)) = o.remove("method") else {
        return Err(bad("method must be a string"));
    };
    // Positional (array) params make a valid Request that no method here accepts: refused
    // by `to_request` as invalid params, so that a notification carrying them stays unanswered.
    let params = match o.remove("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ (Value::Object(_) | Value::Array(_))) => p,
        Some(_) => return Err(bad("params must be an array or an object")),
    };
    Ok(Call { id, method, params })
}

/// Turns a call into the native request it names: `Err((code, message))` for an unknown method
/// or params that are not that message. `cookie` (a session cookie passed as a param) is taken
/// out of the params and returned beside the request.
pub fn to_request(method: &str, params: &Value) -> Result<(Body, Option<String>), (i64, String)> {
    let Some((_, member)) = METHODS.iter().find(|(m, _)| *m == method) else {
        return Err((METHOD_NOT_FOUND, format!("method not found: {method}")));
    };
    if !params.is_object() {
        return Err((
            INVALID_PARAMS,
            "params must be an object (named fields of the request message)".into(),
        ));
    }
    let mut params = params.clone();
    let mut cookie = None;
    if let Some(o) = params.as_object_mut() {
        // LoginRequest/RenewSessionRequest/LogoutRequest have their own fields; for every
        // other method `cookie` authenticates the call.
        if !matches!(method, "RenewSessionRequest" | "LogoutRequest") {
            match o.remove("cookie") {
                Some(Value::String(c)) => cookie = Some(c),
                Some(_) => return Err((INVALID_PARAMS, "cookie must be a string".into())),
                None => {}
            }
        }
        o.remove("requestId");
    }
    let envelope = json!({ *member: params });
    let m: pb::Message = serde_json::from_value(envelope)
        .map_err(|e| (INVALID_PARAMS, format!("invalid params for {method}: {e}")))?;
    match m.message {
        Some(body) => Ok((body, cookie)),
        None => Err((INVALID_PARAMS, format!("invalid params for {method}"))),
    }
}

/// Sets the request id of a request message (false if it has none, as `CommandCancel`).
pub fn set_request_id(body: &mut Body, id: u64) -> bool {
    match msg::request_id_mut(body) {
        Some(slot) => {
            *slot = id;
            true
        }
        None => false,
    }
}

/// The proto3 JSON of a message's body (without its `requestId`), and the name of its type.
pub fn body_json(body: &Body) -> (String, Value) {
    let v = serde_json::to_value(msg::wrap(body.clone())).unwrap_or(Value::Null);
    let Value::Object(o) = v else {
        return (String::new(), Value::Null);
    };
    let Some((member, mut inner)) = o.into_iter().find(|(k, _)| k != "type") else {
        return (String::new(), Value::Null);
    };
    if let Some(i) = inner.as_object_mut() {
        i.remove("requestId");
    }
    (type_name(&member), inner)
}

/// The message type name for a member of `Message` (`listAgentsResponse` ->
/// `ListAgentsResponse`, `progress` -> `CommandProgress`).
fn type_name(member: &str) -> String {
    match member {
        "cancel" => "CommandCancel".into(),
        "progress" => "CommandProgress".into(),
        "result" => "CommandResult".into(),
        "done" => "CommandDone".into(),
        m => {
            let mut c = m.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        }
    }
}

/// The JSON-RPC error for a hub ControlError: code `-32000 - code`, data its name.
pub fn control_error(id: Value, e: &pb::ControlError) -> Value {
    let name = pb::control_error::Code::try_from(e.code)
        .map(|c| c.as_str_name())
        .unwrap_or("UNSPECIFIED");
    error(
        id,
        -32000 - i64::from(e.code),
        &e.message,
        Some(json!({"code": name})),
    )
}

/// The JSON-RPC error for a refused stream: code `-32100 - code`, data its name.
pub fn stream_reject(id: Value, r: &pb::StreamReject) -> Value {
    let name = pb::StreamEnd::try_from(r.code)
        .map(|c| c.as_str_name())
        .unwrap_or("PROTOCOL");
    error(
        id,
        -32100 - i64::from(r.code),
        &r.reason,
        Some(json!({"code": name, "streamId": r.stream_id.to_string()})),
    )
}

/// What a server-initiated message becomes: a notification named by its type, params its JSON
/// (an `EventNotice` also carries its event parsed, as `event`).
pub fn notify(body: &Body) -> Value {
    let (name, mut params) = body_json(body);
    if let Body::EventNotice(n) = body
        && let (Some(p), Ok(event)) = (
            params.as_object_mut(),
            serde_json::from_str::<Value>(&n.json),
        )
    {
        p.insert("event".into(), event);
    }
    notification(&name, params)
}

/// [`notify`] as text, with a fast path for the most frequent notification (`EventNotice`,
/// sent to every subscriber of an event): written directly, its event spliced in as it is
/// once checked to be JSON.
pub fn notify_text(body: &Body) -> String {
    if let Body::EventNotice(n) = body
        && serde_json::from_str::<serde::de::IgnoredAny>(&n.json).is_ok()
    {
        let quote = |s: &str| Value::String(s.to_owned()).to_string();
        return format!(
            r#"{{"jsonrpc":"2.0","method":"EventNotice","params":{{"order":"{}","unixMs":"{}","kind":{},"json":{},"event":{}}}}}"#,
            n.order,
            n.unix_ms,
            quote(&n.kind),
            quote(&n.json),
            n.json
        );
    }
    notify(body).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_parse_or_answer_with_the_standard_errors() {
        let code = |r: &Value| r["error"]["code"].as_i64();
        let e = parse("{oops").expect_err("parse error");
        assert_eq!((code(&e), &e["id"]), (Some(PARSE_ERROR), &Value::Null));
        assert_eq!(
            code(&parse("[]").expect_err("empty")),
            Some(INVALID_REQUEST)
        );
        let Ok(Incoming::Single(Err(e))) = parse(r#"{"jsonrpc":"1.0","id":4,"method":"x"}"#) else {
            panic!()
        };
        assert_eq!((code(&e), &e["id"]), (Some(INVALID_REQUEST), &json!(4)));
        let Ok(Incoming::Batch(b)) = parse(
            r#"[1, {"jsonrpc":"2.0","method":"ListAgentsRequest"}, {"jsonrpc":"2.0","id":"a","method":"M","params":{"x":1}}]"#,
        ) else {
            panic!()
        };
        assert_eq!(
            code(b[0].as_ref().expect_err("not an object")),
            Some(INVALID_REQUEST)
        );
        assert_eq!(
            b[1],
            Ok(Call {
                id: None,
                method: "ListAgentsRequest".into(),
                params: json!({})
            })
        );
        assert_eq!(b[2].as_ref().map(|c| c.id.clone()), Ok(Some(json!("a"))));
        // Positional params make a valid call (a notification if it has no id), which the
        // method mapping refuses as invalid params; params of any other type are no Request.
        let Ok(Incoming::Single(Ok(c))) =
            parse(r#"{"jsonrpc":"2.0","method":"ListAgentsRequest","params":[1]}"#)
        else {
            panic!()
        };
        assert_eq!((c.id, &c.params), (None, &json!([1])));
        assert_eq!(
            to_request(&c.method, &c.params)
                .map(|_| ())
                .map_err(|e| e.0),
            Err(INVALID_PARAMS)
        );
        let Ok(Incoming::Single(Err(e))) =
            parse(r#"{"jsonrpc":"2.0","method":"ListAgentsRequest","params":"bar"}"#)
        else {
            panic!()
        };
        assert_eq!((code(&e), &e["id"]), (Some(INVALID_REQUEST), &Value::Null));
    }

    #[test]
    fn methods_map_to_requests_in_proto3_json() {
        let (body, cookie) = to_request(
            "RunCommandRequest",
            &json!({"agentId": "a1", "operation": "echo.Echo", "data": "{}", "cookie": "c0ffee"}),
        )
        .expect("request");
        assert_eq!(cookie.as_deref(), Some("c0ffee"));
        assert_eq!(
            body,
            Body::RunCommandRequest(pb::RunCommandRequest {
                request_id: 0,
                agent_id: "a1".into(),
                operation: "echo.Echo".into(),
                data: "{}".into()
            })
        );
        // 64-bit integers as strings or numbers; unknown fields refused.
        let (b, _) = to_request("SubscribeEventsRequest", &json!({"fromOrder": "12"})).expect("ok");
        assert!(matches!(b, Body::SubscribeEventsRequest(r) if r.from_order == 12));
        assert_eq!(
            to_request("ListAgentsRequest", &json!({"bogus": 1}))
                .map(|_| ())
                .map_err(|e| e.0),
            Err(INVALID_PARAMS)
        );
        assert_eq!(
            to_request("Nope", &json!({})).map(|_| ()).map_err(|e| e.0),
            Err(METHOD_NOT_FOUND)
        );
        assert_eq!(
            to_request("ServerHello", &json!({}))
                .map(|_| ())
                .map_err(|e| e.0),
            Err(METHOD_NOT_FOUND)
        );
    }

    #[test]
    fn results_and_notifications_are_proto3_json() {
        let (name, v) = body_json(&Body::LoginResponse(pb::LoginResponse {
            request_id: 9,
            result: 0,
            cookie: "ab".into(),
            expires_unix_ms: 1_700_000_000_000,
        }));
        assert_eq!(name, "LoginResponse");
        assert_eq!(
            v,
            json!({"result": "OK", "cookie": "ab", "expiresUnixMs": "1700000000000"})
        );
        let n = notify(&Body::EventNotice(pb::EventNotice {
            order: 3,
            unix_ms: 5,
            kind: "ChannelCreated".into(),
            json: r#"{"chid":1}"#.into(),
        }));
        assert_eq!(n["method"], "EventNotice");
        assert_eq!(n["params"]["order"], "3");
        assert_eq!(n["params"]["event"], json!({"chid": 1}));
        // The fast path writes the same notification.
        let body = Body::EventNotice(pb::EventNotice {
            order: 3,
            unix_ms: 5,
            kind: "Channel\"Created".into(),
            json: r#"{"chid":1,"s":"\u00e9"}"#.into(),
        });
        let fast: Value = serde_json::from_str(&notify_text(&body)).expect("json");
        assert_eq!(fast, notify(&body));
        let e = control_error(
            json!(1),
            &pb::ControlError {
                request_id: 1,
                code: pb::control_error::Code::Access as i32,
                message: "no".into(),
            },
        );
        assert_eq!(e["error"]["code"], -32003);
        assert_eq!(e["error"]["data"]["code"], "ACCESS");
    }
}
