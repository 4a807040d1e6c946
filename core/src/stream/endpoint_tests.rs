#![allow(clippy::disallowed_methods)] // one base instant; time is then passed in

use std::time::Instant;

use bytes::Bytes;
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

use super::local::LocalEnd;
use super::*;
use crate::link::msg;
use prost::Message as _;

/// The message of one encoded frame.
pub(super) fn decode(b: &[u8]) -> Option<pb::Message> {
    pb::Message::decode(b.get(4..)?).ok()
}
use crate::machine::Action;

fn events(l: &mut LocalStreams, now: Instant) -> Vec<(LocalEnd, StreamEvent)> {
    std::iter::from_fn(|| l.poll_event(now)).collect()
}

fn open(l: &mut LocalStreams, class: Class, window: u32) -> u64 {
    l.sink()
        .open(OpenRequest {
            kind: "k".into(),
            class,
            window,
            ..Default::default()
        })
        .expect("in test")
}

#[test]
fn ids_of_the_two_ends_never_collide() {
    let mut c = StreamEndpoint::new(Side::Client, StreamLimits::default());
    let mut s = StreamEndpoint::new(Side::Server, StreamLimits::default());
    let a = c.open(OpenRequest::default()).expect("in test");
    let b = c.open(OpenRequest::default()).expect("in test");
    let x = s.open(OpenRequest::default()).expect("in test");
    assert_eq!((a % 2, b % 2, x % 2), (0, 0, 1));
    assert_ne!(a, b);
    assert!(opened_by_hub(x) && !opened_by_hub(a));
}

#[test]
fn lossless_source_sends_only_within_credit_and_resumes_on_credit() {
    let now = Instant::now();
    let mut l = LocalStreams::new(StreamLimits::default());
    let id = open(&mut l, Class::Lossless, 1000);
    let ev = events(&mut l, now);
    assert!(matches!(
        ev[0],
        (LocalEnd::Source, StreamEvent::Incoming { .. })
    ));
    l.source().accept(id, 0).expect("in test");
    assert!(matches!(
        events(&mut l, now)[0],
        (LocalEnd::Sink, StreamEvent::Accepted { .. })
    ));
    assert_eq!(l.source().send_capacity(id), 1000);
    let big = Bytes::from(vec![7u8; 600]);
    assert_eq!(
        l.source()
            .send_data(id, 0, false, big.clone())
            .expect("in test"),
        SendOutcome::Sent
    );
    assert_eq!(l.source().send_capacity(id), 400);
    assert_eq!(
        l.source()
            .send_data(id, 0, false, big.clone())
            .expect("in test"),
        SendOutcome::Blocked
    );
    let ev = events(&mut l, now);
    let (
        _,
        StreamEvent::Data {
            sequence, payload, ..
        },
    ) = &ev[0]
    else {
        panic!("{ev:?}")
    };
    assert_eq!((*sequence, payload.len()), (1, 600));
    // Credit goes back once a quarter of the window is consumed; the source hears Writable.
    l.sink().consume(id, 600).expect("in test");
    let ev = events(&mut l, now);
    assert!(
        ev.contains(&(LocalEnd::Source, StreamEvent::Writable { id })),
        "{ev:?}"
    );
    assert_eq!(l.source().send_capacity(id), 1000);
}

#[test]
fn latest_source_without_credit_drops_until_a_key_frame() {
    let now = Instant::now();
    let mut l = LocalStreams::new(StreamLimits::default());
    let id = open(&mut l, Class::Latest, 100);
    events(&mut l, now);
    l.source().accept(id, 0).expect("in test");
    events(&mut l, now);
    let f = || Bytes::from(vec![1u8; 60]);
    assert_eq!(
        l.source().send_data(id, 0, true, f()).expect("in test"),
        SendOutcome::Sent
    );
    assert_eq!(
        l.source().send_data(id, 0, false, f()).expect("in test"),
        SendOutcome::Dropped
    );
    let mut seen = events(&mut l, now);
    l.sink().consume(id, 60).expect("in test"); // credit 100 again (60 back, 40 left)
    seen.extend(events(&mut l, now));
    // Room now, but a delta after a drop is useless: dropped until a key frame.
    assert_eq!(
        l.source().send_data(id, 0, false, f()).expect("in test"),
        SendOutcome::Dropped
    );
    assert_eq!(
        l.source().send_data(id, 0, true, f()).expect("in test"),
        SendOutcome::Sent
    );
    seen.extend(events(&mut l, now));
    let seqs: Vec<u64> = seen
        .into_iter()
        .filter_map(|(_, e)| match e {
            StreamEvent::Data { sequence, .. } => Some(sequence),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![1, 4], "the sink sees the gap");
}

#[test]
fn data_beyond_credit_closes_that_stream_with_a_protocol_error() {
    let now = Instant::now();
    let mut sink = StreamEndpoint::new(Side::Client, StreamLimits::default());
    let id = sink
        .open(OpenRequest {
            window: 10,
            ..Default::default()
        })
        .expect("in test");
    while sink.poll_action().is_some() {}
    let accept = Body::StreamAccept(pb::StreamAccept {
        stream_id: id,
        ..Default::default()
    });
    assert!(sink.handle_message(now, accept).is_none());
    let data = Body::StreamData(pb::StreamData {
        stream_id: id,
        sequence: 1,
        payload: Bytes::from(vec![0u8; 11]),
        ..Default::default()
    });
    sink.handle_message(now, data);
    let out: Vec<_> = std::iter::from_fn(|| sink.poll_action()).collect();
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Event(StreamEvent::Closed {
                code: EndCode::Protocol,
                ..
            })
        )),
        "{out:?}"
    );
    assert!(sink.is_empty());
}

#[test]
fn opens_with_the_wrong_parity_or_bad_shape_are_refused() {
    let now = Instant::now();
    let mut src = StreamEndpoint::new(Side::Client, StreamLimits::default());
    // A client-side endpoint accepts only odd (hub-opened) ids.
    let bad = pb::StreamOpen {
        stream_id: 4,
        kind: "k".into(),
        ..Default::default()
    };
    src.handle_message(now, Body::StreamOpen(Box::new(bad)));
    let huge = pb::StreamOpen {
        stream_id: 5,
        kind: "x".repeat(65),
        ..Default::default()
    };
    src.handle_message(now, Body::StreamOpen(Box::new(huge)));
    let out: Vec<_> = std::iter::from_fn(|| src.poll_action()).collect();
    let codes: Vec<i32> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send(b) => {
                let m = decode(b)?;
                match msg::body(m).ok()? {
                    Body::StreamReject(r) => Some(r.code),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        vec![EndCode::Protocol as i32, EndCode::Invalid as i32]
    );
    assert!(src.is_empty());
}

#[test]
fn garbage_on_a_stream_leg_closes_it_and_every_stream() {
    let now = Instant::now();
    let mut ep = StreamEndpoint::new(Side::Client, StreamLimits::default());
    ep.open(OpenRequest::default()).expect("in test");
    while ep.poll_action().is_some() {}
    ep.handle_input(now, &[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    let out: Vec<_> = std::iter::from_fn(|| ep.poll_action()).collect();
    assert!(matches!(out.last(), Some(Action::Close(_))), "{out:?}");
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Event(StreamEvent::Closed { .. })))
    );
    assert!(ep.open(OpenRequest::default()).is_err(), "sticky");
}

#[test]
fn a_shell_like_stream_carries_data_both_ways_within_each_sides_credit() {
    let now = Instant::now();
    let mut l = LocalStreams::new(StreamLimits::default());
    let id = open(&mut l, Class::Lossless, 0);
    events(&mut l, now);
    l.source().accept(id, 8).expect("in test");
    events(&mut l, now);
    assert_eq!(l.sink().send_capacity(id), 8);
    assert_eq!(
        l.sink()
            .send_data(id, 0, false, "ls\n".into())
            .expect("in test"),
        SendOutcome::Sent
    );
    assert_eq!(
        l.sink()
            .send_data(id, 1, false, "{\"cols\":80}".into())
            .expect("in test"),
        SendOutcome::Blocked
    );
    let ev = events(&mut l, now);
    assert!(
        matches!(&ev[0], (LocalEnd::Source, StreamEvent::Data { payload, channel: 0, .. }) if &payload[..] == b"ls\n")
    );
    l.source().consume(id, 3).expect("in test");
    let ev = events(&mut l, now);
    assert!(
        ev.contains(&(LocalEnd::Sink, StreamEvent::Writable { id })),
        "{ev:?}"
    );
}
