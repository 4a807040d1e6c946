#![allow(clippy::disallowed_methods)] // a base instant; time is then passed in

use super::*;

fn drain(c: &mut KvConn) -> (Vec<KvRequest>, Vec<Bytes>, Option<CloseReason>) {
    let (mut reqs, mut sent, mut closed) = (vec![], vec![], None);
    while let Some(a) = c.poll_action() {
        match a {
            Action::Event(KvEvent::Request { request, .. }) => reqs.push(request),
            Action::Send(b) => sent.push(b),
            Action::Close(r) => closed = Some(r),
            Action::Timer(_) => {}
        }
    }
    (reqs, sent, closed)
}

fn wire(reqs: &[KvRequest], padded: bool) -> Vec<u8> {
    let mut b = BytesMut::new();
    for r in reqs {
        r.encode(padded, &mut b);
    }
    b.to_vec()
}

fn run(reqs: &[KvRequest], padded: bool, split: usize) -> Vec<KvRequest> {
    let now = Instant::now();
    let mut c = KvConn::new(now, KvConfig::default());
    let mut got = vec![];
    for chunk in wire(reqs, padded).chunks(split) {
        c.handle_input(now, chunk);
        loop {
            let (r, _, closed) = drain(&mut c);
            assert!(closed.is_none(), "closed: {closed:?}");
            if r.is_empty() {
                break;
            }
            got.extend(r);
            c.reply(&KvReply::Ok(1)).expect("awaiting");
        }
    }
    got
}

#[test]
fn exact_and_padded_requests_any_split() {
    let reqs = [
        KvRequest::Register { auid: 0, perm: 0 },
        KvRequest::Create { uid: 5 },
        KvRequest::GetChannels,
        KvRequest::Join {
            uid: 5,
            juid: 5,
            chid: 1,
        },
        KvRequest::GetPort { chid: 1 },
        KvRequest::Leave {
            uid: 5,
            luid: 5,
            chid: 1,
        },
        KvRequest::Delete { uid: 5, chid: 1 },
        KvRequest::Unregister { auid: 5, uid: 5 },
    ];
    for padded in [false, true] {
        for split in [1, 3, 7, 36, 1000] {
            assert_eq!(
                run(&reqs, padded, split),
                reqs,
                "padded={padded} split={split}"
            );
        }
    }
}

#[test]
fn one_request_per_connection_is_answered_without_waiting_for_padding() {
    let now = Instant::now();
    let mut c = KvConn::new(now, KvConfig::default());
    c.handle_input(now, &wire(&[KvRequest::GetPort { chid: 9 }], false));
    let (r, _, _) = drain(&mut c);
    assert_eq!(r, vec![KvRequest::GetPort { chid: 9 }]);
    c.reply(&KvReply::Ok(50_000)).expect("reply");
    let (_, sent, _) = drain(&mut c);
    assert_eq!(&sent[0][..], &50_000u64.to_be_bytes());
}

#[test]
fn unknown_command_answers_not_implemented_and_closes() {
    let now = Instant::now();
    let mut c = KvConn::new(now, KvConfig::default());
    c.handle_input(now, &[0, 0, 0, 42, 1, 2, 3]);
    let (r, sent, closed) = drain(&mut c);
    assert!(r.is_empty());
    assert_eq!(&sent[0][..], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
    assert!(matches!(closed, Some(CloseReason::Protocol(_))));
    c.handle_input(now, &[0; 8]);
    assert!(c.poll_action().is_none(), "sticky close");
}

#[test]
fn request_cut_mid_way_times_out() {
    let now = Instant::now();
    let mut c = KvConn::new(now, KvConfig::default());
    c.handle_input(now, &[0, 0, 0, 2, 0, 0]);
    let _ = drain(&mut c);
    c.handle_timeout(now + Duration::from_secs(9));
    assert!(drain(&mut c).2.is_none());
    c.handle_timeout(now + Duration::from_secs(10));
    assert_eq!(drain(&mut c).2, Some(CloseReason::Timeout("KV request")));
}

#[test]
fn a_connection_that_never_sends_is_closed() {
    let now = Instant::now();
    let mut c = KvConn::new(now, KvConfig::default());
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(10)));
    c.handle_timeout(now + Duration::from_secs(10));
    assert!(drain(&mut c).2.is_some());
}

#[test]
fn flooding_ahead_of_replies_is_refused() {
    let now = Instant::now();
    let mut c = KvConn::new(
        now,
        KvConfig {
            max_buffered: 64,
            ..KvConfig::default()
        },
    );
    c.handle_input(now, &wire(&[KvRequest::GetChannels; 20], false));
    assert!(matches!(drain(&mut c).2, Some(CloseReason::Protocol(_))));
}

#[test]
fn signed_connections_carry_the_trailer() {
    let now = Instant::now();
    let mut c = KvConn::new(
        now,
        KvConfig {
            require_signature: true,
            ..KvConfig::default()
        },
    );
    let mut b = BytesMut::new();
    KvRequest::Create { uid: 3 }.encode_signed(b"k", 77, &mut b);
    KvRequest::GetChannels.encode(false, &mut b);
    c.handle_input(now, &b);
    let mut sig = None;
    while let Some(a) = c.poll_action() {
        if let Action::Event(KvEvent::Request { request, signature }) = a {
            assert_eq!(request, KvRequest::Create { uid: 3 });
            sig = signature;
        }
    }
    let sig = sig.expect("signed request");
    assert_eq!(sig.nonce, 77);
    assert!(codec::verify_tag(b"k", &sig.covered, &sig.tag));
    c.reply(&KvReply::Ok(1)).expect("reply");
    let (r, _, _) = drain(&mut c);
    assert_eq!(r, vec![KvRequest::GetChannels]);
}
