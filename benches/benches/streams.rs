//! Stream fan-out inside the hub (issue: streams, §8): one `latest` source to N sinks through
//! the hub's [`Router`], each frame written out as the hub writes it (one encoded frame per
//! sink), sinks granting their credit back as they would. Baseline, in the same run: copying
//! the same bytes into N bounded queues.
//!
//! Run: `cargo bench -p switchboard-benches --bench streams`.
#![allow(missing_docs, clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard_core::hub::ConnId;
use switchboard_core::link::{frame, msg};
use switchboard_core::stream::{Router, RouterOutput, SourceRef, StreamLimits};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;

const FRAME: usize = 4096;
const CREDIT_EVERY: u64 = 64;

fn setup(sinks: u64, now: Instant) -> Router {
    let mut r = Router::new(StreamLimits::default());
    for s in 1..=sinks {
        let open = pb::StreamOpen {
            stream_id: 2,
            kind: "metrics".into(),
            agent_id: "a".into(),
            class: pb::StreamClass::Latest as i32,
            initial_credit: 4 * 1024 * 1024,
            ..Default::default()
        };
        let source = SourceRef::Conn {
            conn: ConnId(0),
            instance: "a".into(),
        };
        r.open(now, ConnId(s), "viewer", open, source);
    }
    r.handle_message(
        now,
        ConnId(0),
        Body::StreamAccept(pb::StreamAccept {
            stream_id: 1,
            ..Default::default()
        }),
    );
    while r.poll_output().is_some() {}
    r
}

fn fanout(c: &mut Criterion) {
    let payload = Bytes::from(vec![0x5au8; FRAME]);
    let mut g = c.benchmark_group("stream_fanout");
    for sinks in [1u64, 10, 100, 1000] {
        g.throughput(Throughput::Bytes(FRAME as u64 * sinks));
        g.bench_with_input(
            BenchmarkId::new("hub_router", sinks),
            &sinks,
            |b, &sinks| {
                let now = Instant::now();
                let mut r = setup(sinks, now);
                let mut seq = 0u64;
                b.iter(|| {
                    seq += 1;
                    let d = pb::StreamData {
                        stream_id: 1,
                        sequence: seq,
                        key_frame: true,
                        channel: 0,
                        payload: payload.clone(),
                    };
                    r.handle_message(now, ConnId(0), Body::StreamData(d));
                    while let Some(o) = r.poll_output() {
                        if let RouterOutput::Send { body, .. } = o {
                            black_box(frame::encode(&msg::wrap(body)));
                        }
                    }
                    if seq.is_multiple_of(CREDIT_EVERY) {
                        for s in 1..=sinks {
                            let c = pb::StreamCredit {
                                stream_id: 2,
                                bytes: CREDIT_EVERY * FRAME as u64,
                            };
                            r.handle_message(now, ConnId(s), Body::StreamCredit(c));
                        }
                    }
                });
                assert_eq!(r.totals().0, 0, "no sink fell behind in the bench");
            },
        );
        g.bench_with_input(
            BenchmarkId::new("baseline_copy_into_bounded_queues", sinks),
            &sinks,
            |b, &sinks| {
                let mut queues: Vec<VecDeque<Vec<u8>>> =
                    (0..sinks).map(|_| VecDeque::new()).collect();
                b.iter(|| {
                    for q in queues.iter_mut() {
                        let mut v = Vec::with_capacity(FRAME + 16);
                        v.extend_from_slice(&(FRAME as u32).to_be_bytes());
                        v.extend_from_slice(&payload);
                        q.push_back(v);
                        if q.len() > 64 {
                            black_box(q.pop_front());
                        }
                    }
                });
            },
        );
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
