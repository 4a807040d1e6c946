//! The examples of section 7 of the JSON-RPC 2.0 specification, each over `POST /rpc` and
//! over a WebSocket on `/rpc`, through a [`WebConn`] in front of a real hub. The
//! specification's `subtract`, `sum`, `update` and `get_data` are methods of this hub here
//! (`ListAgentsRequest`, `ListChannelsRequest`, `ListUsersRequest`), its `foobar` and
//! `foo.get` stay names no method has; error codes and ids are the specification's. This hub
//! takes named params only, so the positional-params call is answered -32602.
#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use serde_json::{Value, json};

use super::tests::{Pair, default_hub, login_call};

#[derive(Debug, Clone, Copy)]
enum Via {
    Post,
    Ws,
}

/// A pair logged in as admin over `via`, the hub holding two agents (a1, a2).
fn logged_in(via: Via) -> Pair {
    let now = std::time::Instant::now();
    let mut hub = default_hub(now);
    hub.register_agent("a2".into(), "$argon2id$x".into(), vec![]);
    let mut p = Pair::connect(hub, now, now);
    if let Via::Ws = via {
        p.upgrade("/rpc", "");
    }
    let login = login_call(&p, 100, "admin", "right");
    let r = exchange(&mut p, via, &login).expect("the login is answered");
    assert_eq!(r["result"]["result"], "OK", "{r}");
    p
}

/// Sends `text` as one request: the response, or `None` when nothing at all came back (a
/// POST answered 204 with no body and no Content-Length, no WebSocket message).
fn exchange(p: &mut Pair, via: Via, text: &str) -> Option<Value> {
    match via {
        Via::Post => {
            let (code, head, body) = p.post(text, "");
            assert!(!p.closed, "keep-alive: {head}");
            if code == 204 {
                assert!(body.is_empty(), "204 with a body: {body:?}");
                assert!(
                    !head.to_ascii_lowercase().contains("content-length"),
                    "{head}"
                );
                return None;
            }
            assert_eq!(code, 200, "{head}");
            assert!(head.contains("Content-Type: application/json"), "{head}");
            Some(serde_json::from_str(&body).expect("a JSON body"))
        }
        Via::Ws => {
            let mut got = p.ws_call(text);
            assert!(got.len() <= 1, "one message per request: {got:?}");
            got.pop()
        }
    }
}

/// `text` gets no response; the next call on the connection gets its own answer (over a
/// WebSocket: it is the next message that comes).
fn unanswered(p: &mut Pair, via: Via, text: &str) {
    assert_eq!(exchange(p, via, text), None, "{via:?}: answered {text}");
    let next = exchange(
        p,
        via,
        r#"{"jsonrpc":"2.0","method":"ListChannelsRequest","id":"next"}"#,
    )
    .expect("the next call is answered");
    assert_eq!(next.get("id"), Some(&json!("next")), "{via:?}: {next}");
    assert!(next["result"]["channels"].is_array(), "{via:?}: {next}");
}

/// A response object: "2.0", the id (present, even when null), and either result or error.
fn check(v: &Value, id: &Value) {
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert_eq!(v.get("id"), Some(id), "{v}");
    assert!(v.get("result").is_some() != v.get("error").is_some(), "{v}");
}

fn assert_error(v: &Value, id: Value, code: i64) {
    check(v, &id);
    assert_eq!(v["error"]["code"].as_i64(), Some(code), "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
}

fn result_of(v: &Value, id: Value) -> &Value {
    check(v, &id);
    v.get("result").expect("a result")
}

fn each_via(f: impl Fn(Via, &mut Pair)) {
    for via in [Via::Post, Via::Ws] {
        let mut p = logged_in(via);
        f(via, &mut p);
    }
}

#[test]
fn a_call_with_positional_params_is_invalid_params_here() {
    each_via(|via, p| {
        for (params, id) in [(json!([42, 23]), 1), (json!([23, 42]), 2)] {
            let call = json!({"jsonrpc": "2.0", "method": "ListAgentsRequest", "params": params, "id": id});
            let r = exchange(p, via, &call.to_string()).expect("answered");
            assert_error(&r, json!(id), -32602);
        }
    });
}

#[test]
fn a_call_with_named_params_in_any_order() {
    each_via(|via, p| {
        let r3 = exchange(
            p,
            via,
            r#"{"jsonrpc": "2.0", "method": "ListAgentsRequest", "params": {"after": "", "limit": 1}, "id": 3}"#,
        )
        .expect("answered");
        let r4 = exchange(
            p,
            via,
            r#"{"jsonrpc": "2.0", "method": "ListAgentsRequest", "params": {"limit": 1, "after": ""}, "id": 4}"#,
        )
        .expect("answered");
        let res = result_of(&r3, json!(3));
        assert_eq!(res["agents"].as_array().map(Vec::len), Some(1), "{res}");
        assert_eq!(res["agents"][0]["agentId"], "a1");
        assert_eq!(res["more"], true, "a2 is on the next page: {res}");
        assert_eq!(result_of(&r4, json!(4)), res);
    });
}

#[test]
fn notifications_are_never_answered() {
    each_via(|via, p| {
        // The specification's two: positional params (here refused as invalid params) and an
        // unknown method.
        unanswered(
            p,
            via,
            r#"{"jsonrpc": "2.0", "method": "ListChannelsRequest", "params": [1,2,3,4,5]}"#,
        );
        unanswered(p, via, r#"{"jsonrpc": "2.0", "method": "foobar"}"#);
        // And params that are not the method's message, and a call that runs.
        unanswered(
            p,
            via,
            r#"{"jsonrpc": "2.0", "method": "ListChannelsRequest", "params": {"bogus": 1}}"#,
        );
        unanswered(
            p,
            via,
            r#"{"jsonrpc": "2.0", "method": "ListUsersRequest"}"#,
        );
    });
    // A notification the hub refuses (a guest may only log in): its refusal is dropped too.
    for via in [Via::Post, Via::Ws] {
        let mut p = Pair::new(None);
        if let Via::Ws = via {
            p.upgrade("/rpc", "");
        }
        assert_eq!(
            exchange(
                &mut p,
                via,
                r#"{"jsonrpc": "2.0", "method": "ListAgentsRequest"}"#
            ),
            None
        );
        let r = exchange(
            &mut p,
            via,
            r#"{"jsonrpc": "2.0", "method": "ListAgentsRequest", "id": 7}"#,
        )
        .expect("answered");
        assert_error(&r, json!(7), -32003);
    }
}

#[test]
fn a_non_existent_method() {
    each_via(|via, p| {
        let r = exchange(
            p,
            via,
            r#"{"jsonrpc": "2.0", "method": "foobar", "id": "1"}"#,
        )
        .expect("answered");
        assert_error(&r, json!("1"), -32601);
    });
}

#[test]
fn invalid_json() {
    each_via(|via, p| {
        let r = exchange(
            p,
            via,
            r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#,
        )
        .expect("answered");
        assert_error(&r, Value::Null, -32700);
    });
}

#[test]
fn an_invalid_request_object() {
    each_via(|via, p| {
        let r = exchange(
            p,
            via,
            r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#,
        )
        .expect("answered: not a Request, so not a notification");
        assert_error(&r, Value::Null, -32600);
    });
}

#[test]
fn a_batch_with_invalid_json() {
    each_via(|via, p| {
        let r = exchange(
            p,
            via,
            r#"[
  {"jsonrpc": "2.0", "method": "ListChannelsRequest", "params": [1,2,4], "id": "1"},
  {"jsonrpc": "2.0", "method"
]"#,
        )
        .expect("answered");
        assert!(r.is_object(), "one response, not an array: {r}");
        assert_error(&r, Value::Null, -32700);
    });
}

#[test]
fn an_empty_array() {
    each_via(|via, p| {
        let r = exchange(p, via, "[]").expect("answered");
        assert!(r.is_object(), "one response, not an array: {r}");
        assert_error(&r, Value::Null, -32600);
    });
}

#[test]
fn an_invalid_batch_of_one() {
    each_via(|via, p| {
        let r = exchange(p, via, "[1]").expect("answered");
        let items = r.as_array().expect("an array");
        assert_eq!(items.len(), 1, "{r}");
        assert_error(&items[0], Value::Null, -32600);
    });
}

#[test]
fn an_invalid_batch_of_three() {
    each_via(|via, p| {
        let r = exchange(p, via, "[1,2,3]").expect("answered");
        let items = r.as_array().expect("an array");
        assert_eq!(items.len(), 3, "{r}");
        for item in items {
            assert_error(item, Value::Null, -32600);
        }
    });
}

#[test]
fn a_batch_of_calls_notifications_and_errors() {
    each_via(|via, p| {
        let r = exchange(
            p,
            via,
            r#"[
  {"jsonrpc": "2.0", "method": "ListAgentsRequest", "params": {"limit": 1}, "id": "1"},
  {"jsonrpc": "2.0", "method": "ListChannelsRequest", "params": [7]},
  {"jsonrpc": "2.0", "method": "ListUsersRequest", "params": {"afterUid": "0"}, "id": "2"},
  {"foo": "boo"},
  {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
  {"jsonrpc": "2.0", "method": "ListChannelsRequest", "id": "9"}
]"#,
        )
        .expect("answered");
        let items = r.as_array().expect("an array");
        assert_eq!(items.len(), 5, "nothing for the notification: {r}");
        assert_eq!(
            result_of(&items[0], json!("1"))["agents"][0]["agentId"],
            "a1"
        );
        let users = result_of(&items[1], json!("2"))["users"]
            .as_array()
            .expect("users");
        assert!(users.iter().any(|u| u["name"] == "carol"), "{r}");
        assert_error(&items[2], Value::Null, -32600);
        assert_error(&items[3], json!("5"), -32601);
        assert!(result_of(&items[4], json!("9"))["channels"].is_array());
    });
}

#[test]
fn a_batch_of_notifications_gets_nothing() {
    each_via(|via, p| {
        unanswered(
            p,
            via,
            r#"[
  {"jsonrpc": "2.0", "method": "ListChannelsRequest", "params": [1,2,4]},
  {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
]"#,
        );
        // With one the hub answers (dropped) and one it refuses (dropped too).
        unanswered(
            p,
            via,
            r#"[
  {"jsonrpc": "2.0", "method": "ListChannelsRequest"},
  {"jsonrpc": "2.0", "method": "DeleteChannelRequest", "params": {"chid": "999"}},
  {"jsonrpc": "2.0", "method": "ListAgentsRequest", "params": {"bogus": true}}
]"#,
        );
    });
}

#[test]
fn a_body_that_is_not_utf8_is_a_parse_error_and_the_connection_goes_on() {
    let post = |connection: &str| {
        let mut req = format!(
            "POST /rpc HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nConnection: {connection}\r\nContent-Length: 3\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(b"[\xff]");
        req
    };
    let mut p = Pair::new(None);
    p.send(&post("keep-alive"));
    let got = String::from_utf8(p.take_client()).expect("utf-8");
    let (head, body) = got.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let v: Value = serde_json::from_str(body).expect("json");
    assert_error(&v, Value::Null, -32700);
    assert!(!p.closed);
    // The next request on the connection is read and answered.
    let (code, _, body) = p.post(r#"{"jsonrpc":"2.0","method":"foobar","id":2}"#, "");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_error(&v, json!(2), -32601);
    // Connection: close is honoured.
    p.send(&post("close"));
    assert!(p.take_client().starts_with(b"HTTP/1.1 200 "));
    assert!(p.closed, "closed after the answer, as asked");
}
