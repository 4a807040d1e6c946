//! Event log scenarios under the deterministic simulator: a subscriber that keeps losing its
//! connection (and a hub that restarts) resumes from the last order it saw and ends up with
//! every event exactly once, in order, as stored; a subscription older than retention is
//! refused with GONE. Seeds as in `sim_link` (`SIM_SEEDS=N`, `SIM_SEED=x`); a failure prints
//! the replay command.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use switchboard_core::hub::HubConfig;
use switchboard_proto::EventNotice;
use switchboard_proto::control_error::Code;
use switchboard_proto::message::Message as Body;
use switchboard_tests::scenario;
use switchboard_tests::sim::{NetConfig, NodeId, World, short_timers};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn last_order(w: &World) -> u64 {
    w.hub.as_ref().map_or(0, |h| h.last_event_order())
}

/// Moves what `sub` was sent into `seen`, checking orders only go up.
fn collect(w: &World, sub: NodeId, seen: &mut Vec<EventNotice>) {
    for n in w.operator(sub).notices() {
        if let Some(prev) = seen.last() {
            assert!(
                n.order > prev.order,
                "order {} after {} (repeat or reordering)",
                n.order,
                prev.order
            );
        }
        seen.push(n);
    }
}

/// A new admin session subscribed after `from`.
fn resubscribe(w: &mut World, from: u64) -> NodeId {
    let sub = w.connected_operator();
    match w.subscribe_events(sub, from) {
        Body::SubscribeEventsResponse(r) => assert!(r.last_order >= from),
        other => panic!("subscribe from {from}: {other:?}"),
    }
    sub
}

scenario!(
    subscribers_resume_across_disconnects_and_restarts_without_gap_or_repeat,
    8,
    |seed| {
        // A ring of 8 events: replays of anything older come from storage.
        let cfg = HubConfig {
            link: short_timers(),
            event_ring: 8,
            ..HubConfig::default()
        };
        let mut w = World::new(seed, cfg, NetConfig::with_loss(0.02));
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_e7e7);
        w.register_agent("a1", "secret-a1", &[]);
        let a = w.spawn_agent("a1", "secret-a1", Some("a1"));
        assert!(w.run_until_cond(SECS(60), |w| w.agent(a).is_connected()));
        let mut op = w.connected_operator();
        // History before anyone subscribes: well past the ring.
        for i in 0..12 {
            let id = w.start_command(op, "a1", "echo.Echo", json!({ "[args]": [i] }));
            w.wait_answer(op, id, SECS(30));
        }
        assert!(last_order(&w) > 24, "{} events", last_order(&w));
        let mut seen: Vec<EventNotice> = vec![];
        let mut sub = resubscribe(&mut w, 0);
        let mut restarts = 0;
        for round in 0..40 {
            if !w.operator(op).is_open() {
                op = w.connected_operator();
            }
            if w.agent(a).is_connected() {
                // Its events are what matters, answered or not.
                w.run_command(op, "a1", "echo.Echo", json!({ "[args]": [round] }));
            }
            w.run_for(Duration::from_millis(rng.gen_range(0..3_000)));
            match rng.gen_range(0..10) {
                0..=2 => {
                    // The subscriber goes away at a random point and comes back.
                    w.hang_up(sub);
                    collect(&w, sub, &mut seen);
                    let from = seen.last().map_or(0, |n| n.order);
                    sub = resubscribe(&mut w, from);
                }
                3 if restarts < 2 => {
                    restarts += 1;
                    collect(&w, sub, &mut seen);
                    w.restart_hub();
                    assert!(w.run_until_cond(SECS(60), |w| w.agent(a).is_connected()));
                    let from = seen.last().map_or(0, |n| n.order);
                    sub = resubscribe(&mut w, from);
                    op = w.connected_operator();
                }
                _ => {}
            }
        }
        w.run_for(SECS(5));
        let last = last_order(&w);
        let had = seen.last().map_or(0, |n| n.order);
        let caught_up = w.run_until_cond(SECS(60), |w| {
            w.operator(sub).notices().last().map_or(had, |n| n.order) == last
        });
        assert!(
            caught_up,
            "the subscriber did not reach order {last}: had {:?}, now {:?}",
            seen.iter().map(|n| n.order).collect::<Vec<_>>(),
            w.operator(sub)
                .notices()
                .iter()
                .map(|n| n.order)
                .collect::<Vec<_>>()
        );
        collect(&w, sub, &mut seen);
        // Admin sees everything: exactly the orders 1..=last, each as stored.
        let orders: Vec<u64> = seen.iter().map(|n| n.order).collect();
        assert_eq!(orders, (1..=last).collect::<Vec<_>>(), "gap or repeat");
        for n in &seen {
            let rec = &w.store.events[&n.order];
            assert_eq!(
                (n.unix_ms, n.kind.as_str(), n.json.as_str()),
                (rec.unix_ms, rec.kind.as_str(), rec.json.as_str())
            );
        }
        assert!(seen.windows(2).all(|p| p[0].unix_ms <= p[1].unix_ms));
        assert!(seen.iter().any(|n| n.kind == "CommandFinished"));
        assert!(seen.iter().any(|n| n.kind == "AgentConnected"));
        w.assert_invariants();
    }
);

scenario!(subscriptions_older_than_retention_are_refused, 4, |seed| {
    let cfg = HubConfig {
        link: short_timers(),
        event_ring: 4,
        event_retention: 20,
        ..HubConfig::default()
    };
    let mut w = World::new(seed, cfg, NetConfig::default());
    w.register_agent("a1", "secret-a1", &[]);
    let a = w.spawn_agent("a1", "secret-a1", Some("a1"));
    assert!(w.run_until_cond(SECS(60), |w| w.agent(a).is_connected()));
    let op = w.connected_operator();
    for i in 0..30 {
        let id = w.start_command(op, "a1", "echo.Echo", json!({ "[args]": [i] }));
        w.wait_answer(op, id, SECS(30));
    }
    let last = last_order(&w);
    assert!(last > 60);
    let first = *w.store.events.keys().next().expect("events kept");
    assert!(first > 1 && last + 1 - first <= 22, "kept {first}..={last}");
    let mut op = op;
    for _ in 0..2 {
        match w.subscribe_events(op, 0) {
            Body::ControlError(e) => {
                assert_eq!(e.code, Code::Gone as i32, "{e:?}");
                assert!(e.message.contains("gone"), "{e:?}");
            }
            other => panic!("{other:?}"),
        }
        match w.subscribe_events(op, last + 5) {
            Body::ControlError(e) => assert_eq!(e.code, Code::Invalid as i32, "{e:?}"),
            other => panic!("{other:?}"),
        }
        // The retention survives a restart (pruned in storage, not only in memory).
        w.restart_hub();
        assert!(w.run_until_cond(SECS(60), |w| w.agent(a).is_connected()));
        op = w.connected_operator();
    }
    let last = last_order(&w);
    let from = first + 2;
    let sub_resp = w.subscribe_events(op, from);
    assert!(matches!(sub_resp, Body::SubscribeEventsResponse(_)));
    w.run_for(SECS(2));
    let got: Vec<u64> = w.operator(op).notices().iter().map(|n| n.order).collect();
    assert!(got.len() as u64 >= last - from);
    assert_eq!(
        got[..(last - from) as usize],
        (from + 1..=last).collect::<Vec<_>>()
    );
});
