#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::time::Duration;

use super::*;
use crate::link::{DEFAULT_MAX_FRAME, FrameDecoder};

fn drain(l: &mut AgentLink) -> (Vec<Message>, Option<CloseReason>, Vec<AgentEvent>) {
    let (mut sent, mut close, mut events) = (vec![], None, vec![]);
    while let Some(a) = l.poll_action() {
        match a {
            Action::Send(b) => {
                let mut d = FrameDecoder::new(1 << 20);
                d.push(&b);
                while let Ok(Some(m)) = d.next_message() {
                    sent.push(m);
                }
            }
            Action::Close(r) => close = Some(r),
            Action::Timer(_) => {}
            Action::Event(e) => events.push(e),
        }
    }
    (sent, close, events)
}

fn cfg() -> AgentConfig {
    AgentConfig {
        agent_id: "a1".into(),
        secret: "s3cret".into(),
        link: LinkConfig {
            hello_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3),
            ..LinkConfig::default()
        },
    }
}

fn up(now: Instant) -> AgentLink {
    let mut l = AgentLink::new(now, cfg(), 4);
    assert_eq!(drain(&mut l).0, vec![msg::client_hello("a1", "s3cret")]);
    l.handle_input(now, &frame::encode(&msg::server_hello()));
    assert_eq!(drain(&mut l).2, vec![AgentEvent::Connected]);
    l
}

#[test]
fn bye_before_server_hello_is_an_auth_failure() {
    let now = Instant::now();
    let mut l = AgentLink::new(now, cfg(), 1);
    let _ = drain(&mut l);
    l.handle_input(now, &frame::encode(&msg::bye("authentication failed")));
    assert_eq!(
        drain(&mut l).1,
        Some(CloseReason::AuthFailed("authentication failed".into()))
    );
}

#[test]
fn server_hello_version_must_be_one_and_arrive_in_time() {
    let now = Instant::now();
    let mut l = AgentLink::new(now, cfg(), 1);
    let _ = drain(&mut l);
    let mut bad = msg::server_hello();
    if let Some(Body::ServerHello(h)) = bad.message.as_mut() {
        h.version = 2;
    }
    l.handle_input(now, &frame::encode(&bad));
    assert!(matches!(drain(&mut l).1, Some(CloseReason::Protocol(r)) if r.contains("version")));
    let mut l = AgentLink::new(now, cfg(), 1);
    l.handle_timeout(now + Duration::from_millis(4_999));
    assert_eq!(drain(&mut l).1, None);
    l.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(drain(&mut l).1, Some(CloseReason::Timeout("server hello")));
}

#[test]
fn commands_and_cancels_become_events() {
    let now = Instant::now();
    let mut l = up(now);
    l.handle_input(
        now,
        &frame::encode(&msg::command(
            20261122094015001,
            "echo.Echo",
            r#"{"[args]":["x"]}"#,
        )),
    );
    l.handle_input(now, &frame::encode(&msg::cancel(20261122094015001)));
    let (_, _, ev) = drain(&mut l);
    assert_eq!(
        ev,
        vec![
            AgentEvent::Command {
                command_id: 20261122094015001,
                operation: "echo.Echo".into(),
                data: r#"{"[args]":["x"]}"#.into()
            },
            AgentEvent::Cancel {
                command_id: 20261122094015001
            },
        ]
    );
    l.progress(1, 0, 1, "Running").expect("progress");
    l.result(1, Status::Success, true, "ok").expect("result");
    l.done(2, Status::Cancelled, false, "partial")
        .expect("done");
    assert_eq!(
        drain(&mut l).0,
        vec![
            msg::progress(1, 0, 1, "Running"),
            msg::result(1, Status::Success, true, "ok"),
            msg::done(2, Status::Cancelled, false, "partial")
        ]
    );
}

#[test]
fn outputs_longer_than_a_frame_are_truncated_to_fit() {
    let now = Instant::now();
    let mut l = up(now);
    let huge = "é".repeat(DEFAULT_MAX_FRAME);
    l.result(1, Status::Success, false, &huge).expect("result");
    let mut raw = Vec::new();
    while let Some(a) = l.poll_action() {
        if let Action::Send(b) = a {
            raw.extend_from_slice(&b);
        }
    }
    assert!(
        raw.len() <= 4 + DEFAULT_MAX_FRAME,
        "frame of {} bytes",
        raw.len()
    );
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    d.push(&raw);
    let Some(Body::Result(r)) = d
        .next_message()
        .expect("a valid frame")
        .and_then(|m| m.message)
    else {
        panic!()
    };
    assert!(r.output.ends_with("[output truncated]"));
}

#[test]
fn data_requests_answer_or_time_out_or_fail_on_close() {
    let now = Instant::now();
    let mut l = up(now);
    let a = l.request(now, "data", r#"{"name":"x"}"#).expect("request");
    let b = l.request(now, "data", r#"{"name":"y"}"#).expect("request");
    assert_eq!(
        drain(&mut l).0,
        vec![
            msg::request(a, "data", r#"{"name":"x"}"#),
            msg::request(b, "data", r#"{"name":"y"}"#)
        ]
    );
    l.handle_input(now, &frame::encode(&msg::response(a, true, "42")));
    assert_eq!(
        drain(&mut l).2,
        vec![AgentEvent::Response {
            request_id: a,
            result: Ok("42".into())
        }]
    );
    l.handle_timeout(now + Duration::from_secs(3));
    assert_eq!(
        drain(&mut l).2,
        vec![AgentEvent::Response {
            request_id: b,
            result: Err(RequestError::TimedOut)
        }]
    );
    // A late answer is ignored.
    l.handle_input(now, &frame::encode(&msg::response(b, true, "late")));
    assert!(drain(&mut l).2.is_empty());
    // Pending requests are answered when the link closes.
    let c = l.request(now, "data", "{}").expect("request");
    l.handle_transport_closed("EOF");
    let (_, close, ev) = drain(&mut l);
    assert!(close.is_some());
    assert_eq!(
        ev,
        vec![AgentEvent::Response {
            request_id: c,
            result: Err(RequestError::Closed)
        }]
    );
    assert_eq!(l.request(now, "data", "{}"), Err(ApiMisuse::Closed));
}

#[test]
fn ping_timeout_and_manager_pings_answered() {
    let now = Instant::now();
    let mut l = up(now);
    l.handle_input(now, &frame::encode(&msg::ping(5)));
    assert_eq!(drain(&mut l).0, vec![msg::pong(5)]);
    l.handle_timeout(now + Duration::from_secs(5));
    let (sent, _, _) = drain(&mut l);
    assert!(matches!(
        sent.first().and_then(|m| m.message.as_ref()),
        Some(Body::Ping(_))
    ));
    l.handle_timeout(now + Duration::from_secs(7));
    assert_eq!(drain(&mut l).1, Some(CloseReason::Timeout("ping")));
}

#[test]
fn manager_only_messages_from_the_manager() {
    let now = Instant::now();
    let mut l = up(now);
    l.handle_input(now, &frame::encode(&msg::client_hello("x", "y")));
    assert!(matches!(drain(&mut l).1, Some(CloseReason::Protocol(_))));
}
