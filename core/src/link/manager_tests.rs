#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::time::Duration;

use super::*;
use crate::link::FrameDecoder;

fn drain(l: &mut ManagerLink) -> (Vec<Message>, Option<CloseReason>, Vec<ManagerEvent>) {
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

fn cfg() -> LinkConfig {
    LinkConfig {
        hello_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(5),
        ping_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        ..LinkConfig::default()
    }
}

fn accepted(now: Instant) -> ManagerLink {
    let mut l = ManagerLink::new(now, cfg(), 9);
    l.handle_input(now, &frame::encode(&msg::client_hello("a1", "s")));
    let (_, _, ev) = drain(&mut l);
    assert_eq!(
        ev,
        vec![ManagerEvent::Hello {
            agent_id: "a1".into(),
            secret: "s".into()
        }]
    );
    l.accept(now).expect("accept");
    let (sent, _, _) = drain(&mut l);
    assert_eq!(sent, vec![msg::server_hello()]);
    l
}

#[test]
fn reject_says_authentication_failed_and_closes() {
    let now = Instant::now();
    let mut l = ManagerLink::new(now, cfg(), 1);
    l.handle_input(now, &frame::encode(&msg::client_hello("a1", "bad")));
    let _ = drain(&mut l);
    l.reject("authentication failed");
    let (sent, close, _) = drain(&mut l);
    assert_eq!(sent, vec![msg::bye("authentication failed")]);
    assert_eq!(
        close,
        Some(CloseReason::AuthFailed("authentication failed".into()))
    );
    assert_eq!(
        l.send_command(1, "x", "{}"),
        Err(ApiMisuse::Closed),
        "sticky"
    );
}

#[test]
fn hello_deadline_exactly() {
    let now = Instant::now();
    let mut l = ManagerLink::new(now, cfg(), 1);
    assert_eq!(l.poll_timeout(), Some(now + Duration::from_secs(10)));
    l.handle_timeout(now + Duration::from_secs(9));
    l.handle_timeout(now + Duration::from_millis(9_999));
    assert_eq!(drain(&mut l).1, None, "spurious timeouts are no-ops");
    l.handle_timeout(now + Duration::from_secs(10));
    let (sent, close, _) = drain(&mut l);
    assert_eq!(sent, vec![msg::bye("hello timed out")]);
    assert_eq!(close, Some(CloseReason::Timeout("hello")));
    // The deadline also covers an authentication that never finishes.
    let mut l = ManagerLink::new(now, cfg(), 1);
    l.handle_input(now, &frame::encode(&msg::client_hello("a1", "s")));
    l.handle_timeout(now + Duration::from_secs(10));
    assert_eq!(drain(&mut l).1, Some(CloseReason::Timeout("hello")));
}

#[test]
fn anything_but_client_hello_first_is_a_protocol_error() {
    let now = Instant::now();
    for first in [
        msg::ping(1),
        msg::result(1, Status::Success, false, ""),
        msg::server_hello(),
    ] {
        let mut l = ManagerLink::new(now, cfg(), 1);
        l.handle_input(now, &frame::encode(&first));
        let (sent, close, _) = drain(&mut l);
        assert!(matches!(close, Some(CloseReason::Protocol(_))), "{first:?}");
        assert!(
            matches!(&sent[..], [m] if matches!(&m.message, Some(Body::Bye(b)) if b.reason.contains("expected ClientHello")))
        );
    }
}

#[test]
fn oversize_length_closes_from_the_header_alone() {
    let now = Instant::now();
    let mut l = ManagerLink::new(now, cfg(), 1);
    l.handle_input(now, &[0x00, 0x01, 0x00, 0x01]);
    assert!(matches!(drain(&mut l).1, Some(CloseReason::Protocol(r)) if r.contains("maximum")));
}

#[test]
fn type_and_payload_must_agree() {
    let now = Instant::now();
    let mut l = ManagerLink::new(now, cfg(), 1);
    let mut m = msg::client_hello("a", "s");
    m.r#type = switchboard_proto::MessageType::Ping as i32;
    l.handle_input(now, &frame::encode(&m));
    assert!(matches!(drain(&mut l).1, Some(CloseReason::Protocol(_))));
}

#[test]
fn pings_both_ways_and_timeout() {
    let now = Instant::now();
    let mut l = accepted(now);
    // The agent pings: we answer with the same data.
    l.handle_input(now, &frame::encode(&msg::ping(77)));
    assert_eq!(drain(&mut l).0, vec![msg::pong(77)]);
    // We ping after the interval.
    let t = now + Duration::from_secs(5);
    assert_eq!(l.poll_timeout(), Some(t));
    l.handle_timeout(t);
    let (sent, _, _) = drain(&mut l);
    let Some(Body::Ping(p)) = sent.first().and_then(|m| m.message.clone()) else {
        panic!("{sent:?}")
    };
    // A wrong pong does not count; the right one does.
    l.handle_input(t, &frame::encode(&msg::pong(p.data.wrapping_add(1))));
    l.handle_input(t, &frame::encode(&msg::pong(p.data)));
    l.handle_timeout(t + Duration::from_secs(3));
    assert_eq!(drain(&mut l).1, None, "answered in time");
    // The next one is not answered: closed at its deadline.
    let t2 = t + Duration::from_secs(5);
    l.handle_timeout(t2);
    let _ = drain(&mut l);
    l.handle_input(t2, &frame::encode(&msg::pong(-5)));
    l.handle_timeout(t2 + Duration::from_millis(1_999));
    assert_eq!(drain(&mut l).1, None);
    l.handle_timeout(t2 + Duration::from_secs(2));
    assert_eq!(drain(&mut l).1, Some(CloseReason::Timeout("ping")));
}

#[test]
fn commands_progress_results_and_done() {
    let now = Instant::now();
    let mut l = accepted(now);
    l.send_command(7, "echo.Echo", "{}").expect("command");
    l.send_cancel(7).expect("cancel");
    assert_eq!(
        drain(&mut l).0,
        vec![msg::command(7, "echo.Echo", "{}"), msg::cancel(7)]
    );
    for m in [
        msg::progress(7, 1, 2, "half"),
        msg::result(7, Status::Failed, true, "out"),
        msg::done(8, Status::Cancelled, false, "so far"),
    ] {
        l.handle_input(now, &frame::encode(&m));
    }
    let (_, _, ev) = drain(&mut l);
    assert_eq!(
        ev,
        vec![
            ManagerEvent::Progress {
                command_id: 7,
                current: 1,
                total: 2,
                message: "half".into()
            },
            ManagerEvent::Finished {
                command_id: 7,
                status: Status::Failed,
                changed: true,
                output: "out".into(),
                done: false
            },
            ManagerEvent::Finished {
                command_id: 8,
                status: Status::Cancelled,
                changed: false,
                output: "so far".into(),
                done: true
            },
        ]
    );
}

#[test]
fn data_requests_answered_or_auto_failed_at_the_deadline() {
    let now = Instant::now();
    let mut l = accepted(now);
    l.handle_input(
        now,
        &frame::encode(&msg::request(1, "data", r#"{"name":"x"}"#)),
    );
    l.handle_input(
        now,
        &frame::encode(&msg::request(2, "data", r#"{"name":"y"}"#)),
    );
    let (_, _, ev) = drain(&mut l);
    assert_eq!(ev.len(), 2);
    l.respond(1, true, "42").expect("respond");
    assert_eq!(drain(&mut l).0, vec![msg::response(1, true, "42")]);
    assert_eq!(l.respond(1, true, "again"), Err(ApiMisuse::UnknownId(1)));
    l.handle_timeout(now + Duration::from_secs(3));
    assert_eq!(
        drain(&mut l).0,
        vec![msg::response(2, false, "request timed out")]
    );
    // A duplicate id while the first is pending is a protocol error.
    l.handle_input(now, &frame::encode(&msg::request(3, "data", "{}")));
    l.handle_input(now, &frame::encode(&msg::request(3, "data", "{}")));
    assert!(matches!(drain(&mut l).1, Some(CloseReason::Protocol(_))));
}

#[test]
fn every_split_gives_the_same_result() {
    let now = Instant::now();
    let mut wire = Vec::new();
    for m in [msg::client_hello("a1", "s"), msg::ping(3), msg::ping(4)] {
        wire.extend_from_slice(&frame::encode(&m));
    }
    let reference = {
        let mut l = ManagerLink::new(now, cfg(), 1);
        l.handle_input(now, &wire);
        drain(&mut l)
    };
    for cut in 1..wire.len() {
        let mut l = ManagerLink::new(now, cfg(), 1);
        l.handle_input(now, &wire[..cut]);
        let mut a = drain(&mut l);
        l.handle_input(now, &wire[cut..]);
        let b = drain(&mut l);
        a.0.extend(b.0);
        a.2.extend(b.2);
        assert_eq!(
            (a.0, a.2),
            (reference.0.clone(), reference.2.clone()),
            "cut at {cut}"
        );
    }
}

#[test]
fn bye_closes_and_input_after_close_is_ignored() {
    let now = Instant::now();
    let mut l = accepted(now);
    l.handle_input(now, &frame::encode(&msg::bye("leaving")));
    assert_eq!(drain(&mut l).1, Some(CloseReason::Bye("leaving".into())));
    l.handle_input(now, &frame::encode(&msg::ping(1)));
    l.handle_timeout(now + Duration::from_secs(100));
    assert!(l.poll_action().is_none());
    assert_eq!(l.close_reason(), Some(&CloseReason::Bye("leaving".into())));
}
