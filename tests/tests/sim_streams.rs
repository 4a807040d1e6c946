//! Streams through the real hub in the simulator, over many seeds: the agent's source and the
//! operators' sinks run the real `StreamEndpoint` beside their real link machines, on the
//! seeded network (latency, jitter, split segments; loss in the lossless scenario). Seeds as
//! in `sim_link` (`SIM_SEEDS`, `SIM_SEED`).

use std::collections::BTreeMap;
use std::time::Duration;

use switchboard_core::hub::HubConfig;
use switchboard_core::stream::{Class, EndCode, OpenRequest, StreamLimits};
use switchboard_tests::scenario;
use switchboard_tests::sim::streams::pattern;
use switchboard_tests::sim::{NetConfig, NodeId, World};

fn frames(bytes: usize) -> OpenRequest {
    OpenRequest {
        kind: "sim.frames".into(),
        agent_id: "a1".into(),
        class: Class::Latest,
        key: "cam".into(),
        params: BTreeMap::from([
            ("bytes".to_string(), bytes.to_string()),
            ("period_ms".to_string(), "20".to_string()),
            ("key_every".to_string(), "10".to_string()),
        ]),
        ..OpenRequest::default()
    }
}

fn lossless(total: u64) -> OpenRequest {
    OpenRequest {
        kind: "sim.bytes".into(),
        agent_id: "a1".into(),
        class: Class::Lossless,
        params: BTreeMap::from([("total".to_string(), total.to_string())]),
        ..OpenRequest::default()
    }
}

/// The largest queue of any sink in the hub now.
fn max_sink_queue(w: &World) -> u64 {
    w.hub
        .as_ref()
        .map(|h| {
            h.list_streams()
                .iter()
                .flat_map(|g| g.sinks.iter().map(|s| s.queued_bytes))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Runs `d` in 50 ms steps, checking that no sink's queue in the hub passes `cap`.
fn run_checked(w: &mut World, d: Duration, cap: u64, worst: &mut u64) {
    let steps = (d.as_millis() / 50) as u32;
    for _ in 0..steps {
        w.run_for(Duration::from_millis(50));
        let q = max_sink_queue(w);
        *worst = (*worst).max(q);
        assert!(
            q <= cap,
            "a sink's queue in the hub is {q} bytes, above {cap}"
        );
    }
}

scenario!(
    /// 1 source -> 50 sinks; one sink reads only a tenth of the time (every seed) and, on odd
    /// seeds, another is partitioned meanwhile. The others get every frame, each key frame
    /// within 500 ms of its production; no slow sink's queue in the hub passes its cap; resync
    /// requests to the source come at most once per 500 ms (two slow sinks overflow out of
    /// phase: only coalescing keeps them apart); once recovered a slow sink sees frames in
    /// order, every gap followed by a key frame, up to the newest.
    one_source_fifty_sinks_slow_ones_isolated,
    4,
    |seed| {
        let mut w = World::new(seed, HubConfig::default(), NetConfig::default());
        let a = w.stream_agent("a1");
        let ops: Vec<NodeId> = (0..50).map(|_| w.connected_operator()).collect();
        // 8 kB frames at 50 per second: 400 kB/s per sink, so a stalled one fills its
        // credit and its queue in well under a second.
        let ids: Vec<u64> = ops.iter().map(|&o| w.open_stream(o, frames(8000))).collect();
        w.run_for(Duration::from_millis(500));
        assert_eq!(w.sources(a).running(), 1, "one source for fifty sinks");
        for (&o, &id) in ops.iter().zip(&ids) {
            assert!(w.sink(o, id).accepted.is_some(), "sink {o} not accepted");
        }
        let throttled = (seed as usize * 7) % ops.len();
        let partitioned = (seed % 2 == 1).then_some((throttled + 1 + seed as usize) % ops.len());
        let slow: Vec<usize> = std::iter::once(throttled).chain(partitioned).collect();
        let cap = StreamLimits::default().sink_queue as u64;
        let mut worst = 0;
        if let Some(p) = partitioned {
            w.partition(ops[p]);
        }
        for i in 0..30 {
            w.set_reading(ops[throttled], ids[throttled], i % 10 == 0);
            run_checked(&mut w, Duration::from_millis(200), cap, &mut worst);
            if i == 15
                && let Some(p) = partitioned
            {
                w.heal(ops[p]);
            }
        }
        w.set_reading(ops[throttled], ids[throttled], true);
        assert!(worst > 0, "no slow sink ever queued anything: not slow enough");
        run_checked(&mut w, Duration::from_secs(3), cap, &mut worst);

        let stats = w.sources(a).current().next().expect("the source").clone();
        assert_eq!(stats.dropped, 0, "the source was throttled");
        assert!(
            !stats.resyncs.is_empty(),
            "the hub asked for no key frame for the slow sinks"
        );
        let resync_gaps: Vec<Duration> = stats
            .resyncs
            .windows(2)
            .map(|p| p[1].duration_since(p[0]))
            .collect();
        // The hub sends them 500 ms apart; each arrives with its own jitter (up to 5 ms).
        assert!(
            resync_gaps.iter().all(|g| *g >= Duration::from_millis(490)),
            "resync requests closer than 500 ms: {resync_gaps:?}"
        );
        let produced = stats.sent_at.len() as u64;
        for (i, (&o, &id)) in ops.iter().zip(&ids).enumerate() {
            if slow.contains(&i) {
                continue;
            }
            let s = w.sink(o, id);
            let numbers = s.frame_numbers();
            let first = numbers[0];
            assert!(
                numbers.iter().copied().eq(first..first + numbers.len() as u64),
                "sink {o} missed or reordered frames"
            );
            assert!(
                first + numbers.len() as u64 >= produced - 5,
                "sink {o} is behind: {} of {produced}",
                numbers.len()
            );
            for r in s.data.iter().filter(|r| r.key_frame) {
                let n = u64::from_be_bytes(r.payload[..8].try_into().expect("8 bytes"));
                let sent = stats.sent_at[(n - 1) as usize];
                let late = r.at.duration_since(sent);
                assert!(
                    late <= Duration::from_millis(500),
                    "sink {o}: key frame {n} arrived {late:?} after it was made"
                );
            }
        }
        for &i in &slow {
            let s = w.sink(ops[i], ids[i]);
            let numbers = s.frame_numbers();
            assert!(
                numbers.windows(2).all(|p| p[0] < p[1]),
                "slow sink {i} got frames out of order"
            );
            let mut gaps = 0;
            for (k, p) in numbers.windows(2).enumerate() {
                if p[1] > p[0] + 1 {
                    gaps += 1;
                    assert!(
                        s.data[k + 1].key_frame,
                        "after a gap ({} -> {}) slow sink {i} resumed off a key frame",
                        p[0],
                        p[1]
                    );
                }
            }
            assert!(gaps > 0, "nothing was dropped for slow sink {i}");
            assert!(
                numbers.last().copied().unwrap_or(0) + 5 >= produced,
                "slow sink {i} did not catch up: last {:?} of {produced}",
                numbers.last()
            );
        }
        w.assert_invariants();
    }
);

scenario!(
    /// A lossless stream over a lossy network to a sink that stops reading at random: every
    /// byte arrives once, in order, and the hub keeps none of it. A sink that stops reading
    /// for good is closed as a slow consumer 30 s after its credit ran out, and so is the
    /// source's leg.
    lossless_backpressure_and_a_slow_consumer,
    4,
    |seed| {
        let mut w = World::new(seed, HubConfig::default(), NetConfig::with_loss(0.02));
        let a = w.stream_agent("a1");
        let op = w.connected_operator();
        let total = 3u64 << 20;
        let id = w.open_stream(op, lossless(total));
        let mut step = 0u64;
        let mut queued = 0;
        while (w.sink(op, id).bytes().len() as u64) < total {
            step += 1;
            assert!(step < 4000, "the transfer did not finish");
            // Reading two steps in three, pausing at a pace the seed picks.
            let reading = !(step + seed).is_multiple_of(3);
            w.set_reading(op, id, reading);
            w.run_for(Duration::from_millis(50 + (seed % 5) * 20));
            queued = queued.max(max_sink_queue(&w));
        }
        let got = w.sink(op, id).bytes();
        assert_eq!(got.len() as u64, total);
        assert!(
            got.iter().enumerate().all(|(i, b)| *b == pattern(i as u64)),
            "a byte was lost, duplicated or reordered"
        );
        assert_eq!(queued, 0, "the hub kept lossless data of its own");
        // Consumed to the end, then closed by the sink.
        w.set_reading(op, id, true);
        w.close_stream(op, id);

        // A second sink that never reads.
        let op2 = w.connected_operator();
        let id2 = w.open_stream(op2, lossless(total));
        w.set_reading(op2, id2, false);
        w.run_for(Duration::from_secs(2));
        let window = w.sink(op2, id2).bytes().len();
        assert_eq!(
            window,
            StreamLimits::default().default_window as usize,
            "the source sent more than the window"
        );
        // The hub's clock starts when it forwards the last byte of credit, a little before the
        // sink sees it arrive.
        let stalled_at = w.sink(op2, id2).data.last().expect("data").at;
        w.run_for(Duration::from_secs(35));
        let (at, code, reason) = w.sink(op2, id2).ended.clone().expect("closed");
        assert_eq!(code, EndCode::SlowConsumer, "{reason}");
        let after = at.duration_since(stalled_at);
        assert!(
            after >= Duration::from_secs(29) && after <= Duration::from_secs(32),
            "closed {after:?} after the credit ran out"
        );
        let src_closed = w
            .sources(a)
            .current()
            .filter(|s| s.closed.as_ref().is_some_and(|c| c.1 == EndCode::SlowConsumer))
            .count();
        assert_eq!(src_closed, 1, "the source's leg was not closed");
        assert!(
            w.operator(op2).is_open(),
            "the session outlives the stream"
        );
        w.assert_invariants();
    }
);

scenario!(
    /// Sinks leave (one hangs up, one closes), the source keeps serving the rest; the last
    /// sink out stops the source; a source that dies ends every sink with "source gone".
    source_and_sink_disconnects,
    4,
    |seed| {
        let mut w = World::new(seed, HubConfig::default(), NetConfig::default());
        let a = w.stream_agent("a1");
        let ops: Vec<NodeId> = (0..4).map(|_| w.connected_operator()).collect();
        let ids: Vec<u64> = ops.iter().map(|&o| w.open_stream(o, frames(500))).collect();
        w.run_for(Duration::from_secs(1));
        let sinks = |w: &World| {
            w.hub
                .as_ref()
                .map(|h| h.list_streams().iter().map(|g| g.sinks.len()).sum::<usize>())
                .unwrap_or(0)
        };
        assert_eq!(sinks(&w), 4);
        w.hang_up(ops[0]);
        w.close_stream(ops[1], ids[1]);
        w.run_for(Duration::from_secs(1));
        assert_eq!(sinks(&w), 2, "the leaving sinks are still in the group");
        assert_eq!(w.sources(a).running(), 1, "the source stopped with sinks left");
        let before = w.sink(ops[2], ids[2]).data.len();
        w.run_for(Duration::from_secs(1));
        assert!(
            w.sink(ops[2], ids[2]).data.len() >= before + 40,
            "the remaining sinks stopped getting frames"
        );
        // The last sinks out: the source is asked to stop.
        w.close_stream(ops[2], ids[2]);
        w.close_stream(ops[3], ids[3]);
        w.run_for(Duration::from_secs(1));
        assert_eq!(w.sources(a).running(), 0, "the source still runs with no sink");
        assert_eq!(sinks(&w), 0);

        // A new group; then the agent dies.
        let late: Vec<NodeId> = (0..3).map(|_| w.connected_operator()).collect();
        let lids: Vec<u64> = late.iter().map(|&o| w.open_stream(o, frames(500))).collect();
        w.run_for(Duration::from_secs(1));
        assert_eq!(w.sources(a).running(), 1);
        if seed % 2 == 0 {
            w.kill(a);
        } else {
            // No FIN: the hub learns from its keepalive.
            w.crash(a);
        }
        w.run_for(Duration::from_secs(90));
        for (&o, &id) in late.iter().zip(&lids) {
            let (_, code, reason) = w.sink(o, id).ended.clone().expect("the sink ended");
            assert_eq!(code, EndCode::SourceGone, "{reason}");
            assert!(w.operator(o).is_open(), "the session outlives the stream");
        }
        w.assert_invariants();
    }
);

scenario!(
    /// The hub dies: every stream ends on both sides with a reason; the agent reconnects to
    /// the new hub and a new open is served.
    a_hub_restart_ends_streams_and_a_reopen_works,
    4,
    |seed| {
        let mut w = World::new(seed, HubConfig::default(), NetConfig::default());
        let a = w.stream_agent("a1");
        let op = w.connected_operator();
        let id = w.open_stream(op, frames(500));
        let lid = w.open_stream(op, lossless(1 << 30));
        w.run_for(Duration::from_secs(1));
        assert!(!w.sink(op, id).data.is_empty());
        w.restart_hub();
        w.run_for(Duration::from_secs(1));
        for sid in [id, lid] {
            let (_, code, reason) = w.sink(op, sid).ended.clone().expect("ended");
            assert_eq!(code, EndCode::SourceGone);
            assert!(reason.contains("connection closed"), "{reason}");
        }
        let up = w.run_until_cond(Duration::from_secs(120), |w| {
            w.agent(a).is_connected() && w.hub_connected().contains("a1")
        });
        assert!(up, "the agent did not come back");
        assert_eq!(w.sources(a).running(), 0, "a source outlived its connection");
        let old = w.sources(a).stats.values().filter(|s| s.closed.is_some()).count();
        assert_eq!(old, 2, "the sources of the old connection did not end");
        let op2 = w.connected_operator();
        let id2 = w.open_stream(op2, frames(500));
        w.run_for(Duration::from_secs(1));
        let s = w.sink(op2, id2);
        assert!(s.accepted.is_some() && s.data.len() >= 40, "the reopen is not served");
        w.assert_invariants();
    }
);
