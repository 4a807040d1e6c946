//! Agent-link scenarios under the deterministic simulator: the real hub, agent links and
//! operator sessions on virtual time over a seeded network. Each runs over several seeds
//! (`SIM_SEEDS=N` for more, `SIM_SEED=x` for one); a failure prints the replay command.

use std::time::Duration;

use serde_json::json;
use switchboard_core::hub::{CommandStatus, HubEvent};
use switchboard_core::link::{frame, msg};
use switchboard_core::machine::CloseReason;
use switchboard_proto::command_result::Status;
use switchboard_proto::message::Message as Body;
use switchboard_tests::scenario;
use switchboard_tests::sim::{AgentMode, NetConfig, NodeId, World};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn echo(msg: &str) -> serde_json::Value {
    json!({ "[args]": [msg] })
}

/// When the hub reported agent `id` gone, after `since`.
fn disconnected_at(w: &World, id: &str, since: std::time::Instant) -> Option<std::time::Instant> {
    w.events.iter().find_map(|(t, e)| match e {
        HubEvent::AgentDisconnected { agent_id, .. } if agent_id == id && *t >= since => Some(*t),
        _ => None,
    })
}

/// Backoff delays within "equal jitter" bounds of a 1 s initial delay: the k-th is in
/// [2^k / 2, 2^k] seconds (capped at 60 s).
fn assert_backoff(delays: &[Duration], who: &str) {
    for (k, d) in delays.iter().enumerate() {
        let cap = SECS(1u64 << k.min(6)).min(SECS(60));
        assert!(
            *d >= cap / 2 && *d <= cap,
            "{who}: delay {k} is {d:?}, not in [{:?}, {cap:?}] ({delays:?})",
            cap / 2
        );
    }
}

fn world(seed: u64, net: NetConfig) -> World {
    World::quick(seed, net)
}

scenario!(auth_failures_are_refused_and_backed_off, 8, |seed| {
    let mut w = world(seed, NetConfig::default());
    w.register_agent("a1", "right", &[]);
    w.register_agent("fenced", "right", &["10.0.0.0/8"]);
    let wrong = w.spawn_agent("a1", "wrong", Some("a1"));
    let ghost = w.spawn_agent("ghost", "x", Some("ghost"));
    let mismatch = w.spawn_agent("a1", "right", Some("someone-else"));
    let fenced = w.spawn_agent("fenced", "right", Some("fenced"));
    w.run_for(SECS(40));
    for n in [wrong, ghost, mismatch, fenced] {
        let a = w.agent(n);
        assert!(
            a.stats.connects.is_empty(),
            "node {n} must never be accepted"
        );
        assert!(a.stats.auth_failures >= 4, "node {n}: {:?}", a.stats);
        // The peer hears the same words whatever the cause, and backs off.
        let refused = CloseReason::AuthFailed("authentication failed".into());
        assert!(
            a.stats.close_reasons().iter().all(|r| *r == refused),
            "{:?}",
            a.stats
        );
        assert_backoff(&a.stats.delays, &format!("node {n}"));
        // 1, 2, 4, 8, 16 s (jittered down to half): at most 7 attempts in 40 s.
        assert!(
            a.stats.attempts.len() <= 7,
            "node {n}: {:?}",
            a.stats.attempts
        );
        for (i, gap) in a.stats.attempts.windows(2).enumerate() {
            assert!(
                gap[1] - gap[0] >= a.stats.delays[i],
                "attempt {i} came early"
            );
        }
    }
    let failed = |id: &str, why: &str| {
        w.saw(|e| matches!(e, HubEvent::AuthFailed { agent_id, reason, .. } if agent_id == id && reason.contains(why)))
    };
    assert!(failed("a1", "wrong secret"));
    assert!(failed("ghost", "unknown agent"));
    assert!(failed("a1", "certificate names"));
    assert!(failed("fenced", "allowed networks"));
    assert!(w.hub_connected().is_empty());
    w.assert_invariants();
});

scenario!(hello_timeout_closes_a_silent_peer, 8, |seed| {
    let mut w = world(seed, NetConfig::with_loss(0.05));
    let raw = w.spawn_raw(Some("x"), &[]);
    w.run_for(SECS(30));
    let r = w.raw(raw);
    let conn = r.conn.expect("dialed");
    let accepted = w
        .accepted_at(conn)
        .expect("the hub accepted the connection");
    let (closed_at, _, reason) = w
        .hub_closes
        .iter()
        .find(|(_, c, _)| *c == conn)
        .expect("closed");
    assert_eq!(*reason, CloseReason::Timeout("hello"));
    assert_eq!(
        *closed_at - accepted,
        SECS(10),
        "closed exactly at the hello timeout"
    );
    let (heard, how) = r.closed.clone().expect("the peer saw the close");
    assert!(heard >= *closed_at && how == "closed by the hub");
    assert_eq!(r.byes(), vec!["hello timed out".to_string()]);
    assert_eq!(w.hub.as_ref().map(|h| h.connection_count()), Some(0));
});

scenario!(hello_deadline_covers_authentication, 8, |seed| {
    // A ClientHello that arrives just before the hello deadline, with a slow verification:
    // "the ClientHello and its authentication must complete within" the hello timeout.
    let mut w = world(seed, NetConfig::default());
    w.register_agent("slow", "s", &[]);
    w.verify_delay = (SECS(3), SECS(4));
    let hello = frame::encode(&msg::client_hello("slow", "s")).to_vec();
    let raw = w.spawn_raw_script(Some("slow"), vec![(Duration::from_millis(9_000), hello)]);
    w.run_for(SECS(30));
    let conn = w.raw(raw).conn.expect("dialed");
    let accepted = w.accepted_at(conn).expect("accepted");
    let (closed_at, _, reason) = w
        .hub_closes
        .iter()
        .find(|(_, c, _)| *c == conn)
        .expect("closed");
    assert_eq!(*reason, CloseReason::Timeout("hello"));
    assert!(
        *closed_at - accepted <= SECS(10),
        "closed {:?} after accept",
        *closed_at - accepted
    );
    assert!(
        !w.saw(|e| matches!(e, HubEvent::AgentConnected { .. })),
        "authenticated too late"
    );
});

scenario!(
    partition_times_out_both_sides_and_the_agent_comes_back,
    8,
    |seed| {
        let mut w = world(seed, NetConfig::default());
        let a = w.connected_agent("a1");
        w.run_for(SECS(3));
        let cut = w.now();
        w.partition(a);
        w.run_for(SECS(60));
        // Both sides notice within ping_interval + ping_timeout.
        let (agent_closed, why) = w
            .agent(a)
            .stats
            .closes
            .first()
            .cloned()
            .expect("agent closed");
        assert_eq!(why, CloseReason::Timeout("ping"));
        assert!(
            agent_closed - cut <= SECS(10),
            "agent noticed after {:?}",
            agent_closed - cut
        );
        let hub_closed = disconnected_at(&w, "a1", cut).expect("the hub noticed");
        assert!(
            hub_closed - cut <= SECS(10),
            "hub noticed after {:?}",
            hub_closed - cut
        );
        assert!(w.hub_connected().is_empty());
        // Attempts during the partition never get through, and are backed off.
        let st = &w.agent(a).stats;
        assert!(st.connect_failures >= 2, "{st:?}");
        assert!(st.attempts.len() <= 6, "{:?}", st.attempts);
        w.heal(a);
        let back = w.run_until_cond(SECS(120), |w| {
            w.agent(a).is_connected() && w.hub_connected().contains("a1")
        });
        assert!(back, "the agent came back after the heal");
        let op = w.connected_operator();
        let id = w.start_command(op, "a1", "echo.Echo", echo("after"));
        assert_eq!(w.wait_answer(op, id, SECS(10)).output, "after");
        w.assert_invariants();
    }
);

scenario!(
    agents_that_ignore_pongs_or_go_mute_are_timed_out,
    8,
    |seed| {
        let mut w = world(seed, NetConfig::default());
        let deaf = w.connected_agent("deaf");
        let mute = w.connected_agent("mute");
        w.agent_mut(deaf).mode = AgentMode::IgnorePongs;
        w.agent_mut(mute).mode = AgentMode::Mute;
        let t0 = w.now();
        w.run_for(SECS(12));
        // Ignoring pongs: the agent's own keepalive gives up and it closes the link itself.
        let (at, why) = w
            .agent(deaf)
            .stats
            .closes
            .first()
            .cloned()
            .expect("deaf agent closed");
        assert_eq!(why, CloseReason::Timeout("ping"));
        assert!(at - t0 <= SECS(10));
        assert!(disconnected_at(&w, "deaf", t0).is_some_and(|t| t - t0 <= SECS(11)));
        // Mute: the hub's pings go unanswered and the hub closes it.
        let mute_conn = w.events.iter().find_map(|(_, e)| match e {
            HubEvent::AgentConnected { agent_id, conn, .. } if agent_id == "mute" => Some(*conn),
            _ => None,
        });
        let (t, _, r) = w
            .hub_closes
            .iter()
            .find(|(_, c, _)| Some(*c) == mute_conn)
            .expect("hub closed mute");
        assert_eq!(*r, CloseReason::Timeout("ping"));
        assert!(*t - t0 <= SECS(10));
        // Back to normal: both reconnect (backed off, never a hot loop).
        w.agent_mut(deaf).mode = AgentMode::Normal;
        w.agent_mut(mute).mode = AgentMode::Normal;
        let both = w.run_until_cond(SECS(60), |w| w.hub_connected().len() == 2);
        assert!(both, "both agents came back");
        for n in [deaf, mute] {
            assert!(
                w.agent(n).stats.attempts.len() <= 4,
                "{:?}",
                w.agent(n).stats
            );
        }
        w.assert_invariants();
    }
);

scenario!(
    agents_reconnect_with_backoff_after_a_hub_restart,
    6,
    |seed| {
        let mut w = world(seed, NetConfig::default());
        let names: Vec<String> = (0..5).map(|i| format!("a{i}")).collect();
        let agents: Vec<NodeId> = names.iter().map(|n| w.connected_agent(n)).collect();
        let op = w.connected_operator();
        let before = w.start_command(op, "a0", "echo.Echo", echo("x"));
        w.wait_answer(op, before, SECS(10));
        let lost = w.start_command(op, "a1", "sim.Sleep", json!({"seconds": 600}));
        w.run_for(SECS(35)); // long enough for the links to count as stable
        let marks: Vec<(usize, usize)> = agents
            .iter()
            .map(|a| {
                (
                    w.agent(*a).stats.attempts.len(),
                    w.agent(*a).stats.delays.len(),
                )
            })
            .collect();
        w.stop_hub();
        w.run_for(SECS(45));
        w.start_hub();
        assert!(
            w.run_until_cond(SECS(70), |w| w.hub_connected().len() == 5),
            "all came back"
        );
        let mut firsts = std::collections::BTreeSet::new();
        for (i, a) in agents.iter().enumerate() {
            let st = &w.agent(*a).stats;
            let delays = &st.delays[marks[i].1..];
            assert_backoff(delays, &names[i]);
            assert!(
                delays.len() >= 4,
                "{}: refused attempts were retried: {delays:?}",
                names[i]
            );
            // 45 s down: 1 + 2 + 4 + 8 + 16 + 32 s at most 7 attempts; never a hot loop.
            let attempts = st.attempts.len() - marks[i].0;
            assert!(
                (4..=8).contains(&attempts),
                "{}: {attempts} attempts",
                names[i]
            );
            firsts.insert(
                delays
                    .iter()
                    .take(3)
                    .map(Duration::as_micros)
                    .collect::<Vec<_>>(),
            );
        }
        assert!(firsts.len() > 1, "the delays are jittered, not in lockstep");
        // The command that was running is failed by the new hub, durably.
        let rec = &w.store.commands[&lost];
        assert_eq!(rec.status, CommandStatus::Failed);
        assert!(rec.output.contains("hub restarted"), "{}", rec.output);
        // Command ids continue after the restart.
        let op = w.connected_operator();
        let after = w.start_command(op, "a1", "echo.Echo", echo("y"));
        assert!(after > lost && lost > before);
        assert_eq!(w.wait_answer(op, after, SECS(10)).status, Status::Success);
        w.assert_invariants();
    }
);

scenario!(
    a_command_whose_agent_goes_away_fails_and_the_operator_hears_it,
    8,
    |seed| {
        let mut w = world(seed, NetConfig::default());
        let killed = w.connected_agent("killed");
        let frozen = w.connected_agent("frozen");
        let crashed = w.connected_agent("crashed");
        let op = w.connected_operator();
        let ids: Vec<i64> = ["killed", "frozen", "crashed"]
            .iter()
            .map(|a| w.start_command(op, a, "sim.Sleep", json!({"seconds": 600})))
            .collect();
        w.run_for(SECS(1));
        let t0 = w.now();
        w.kill(killed);
        w.freeze(frozen);
        w.crash(crashed);
        // Killed: the FIN tells the hub at once. Frozen or crashed: its ping timeout does.
        let a = w.wait_answer(op, ids[0], SECS(20));
        assert!(
            w.now() - t0 < SECS(1),
            "a closed connection fails its commands at once"
        );
        for (i, limit) in [(1, SECS(10)), (2, SECS(10))] {
            w.wait_answer(op, ids[i], SECS(20));
            let (at, _) = w
                .operator(op)
                .inbox
                .iter()
                .find(|(_, m)| matches!(m, Body::Result(r) if r.command_id == ids[i]))
                .expect("heard");
            assert!(
                *at - t0 <= limit + Duration::from_millis(100),
                "command {i} heard after {:?}",
                *at - t0
            );
        }
        for (i, id) in ids.iter().enumerate() {
            let ans = if i == 0 {
                a.clone()
            } else {
                w.operator(op).answer(*id).expect("answer")
            };
            assert_eq!(ans.status, Status::Failed);
            assert!(ans.output.contains("agent disconnected"), "{}", ans.output);
            assert_eq!(w.store.commands[id].status, CommandStatus::Failed);
        }
        // The frozen agent wakes up to a closed link, reconnects and works again.
        w.thaw(frozen);
        assert!(
            w.run_until_cond(SECS(30), |w| w.hub_connected().contains("frozen")),
            "frozen came back"
        );
        let id = w.start_command(op, "frozen", "echo.Echo", echo("awake"));
        assert_eq!(w.wait_answer(op, id, SECS(10)).output, "awake");
        w.assert_invariants();
    }
);

scenario!(
    an_agent_back_before_its_old_link_timed_out_replaces_it,
    8,
    |seed| {
        let mut w = world(seed, NetConfig::default());
        let a = w.connected_agent("a1");
        let op = w.connected_operator();
        let old = w.start_command(op, "a1", "sim.Sleep", json!({"seconds": 600}));
        w.run_for(SECS(1));
        w.crash(a);
        w.revive(a, SECS(1));
        let t0 = w.now();
        // It reconnects before the hub's ping timeout noticed the old link: newest wins.
        assert!(
            w.run_until_cond(SECS(5), |w| w.agent(a).is_connected()),
            "reconnected"
        );
        let ans = w.wait_answer(op, old, SECS(5));
        assert!(
            w.now() - t0 < SECS(5),
            "failed on replacement, not on the ping timeout"
        );
        assert_eq!(ans.status, Status::Failed);
        assert!(ans.output.contains("replaced"), "{}", ans.output);
        assert!(
            w.hub_closes
                .iter()
                .any(|(_, _, r)| *r == CloseReason::Replaced)
        );
        let id = w.start_command(op, "a1", "echo.Echo", echo("new link"));
        assert_eq!(w.wait_answer(op, id, SECS(10)).output, "new link");
        w.assert_invariants();
    }
);

scenario!(bad_input_gets_a_bye_while_others_keep_working, 8, |seed| {
    let mut w = world(seed, NetConfig::default());
    let good = w.connected_agent("good");
    let op = w.connected_operator();
    // The last two cases send a hello and then something else: a slow verification keeps the
    // peer authenticating when the rest arrives (cut into segments, the two may arrive some
    // milliseconds apart), so that what is judged is the frame after the hello, not the wrong secret.
    w.verify_delay = (SECS(2), SECS(3));
    let mut mismatched = msg::ping(1);
    mismatched.r#type = 14; // says PONG, carries a Ping
    // A hello with a wrong secret, so that the peer is still being authenticated (and could
    // never replace the good agent) when what follows it arrives.
    let hello = frame::encode(&msg::client_hello("good", "not-the-secret")).to_vec();
    let ping = frame::encode(&msg::ping(7)).to_vec();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "protocol error",
        ),
        (vec![0x7f, 0xff, 0xff, 0xff, 1, 2, 3], "over the maximum"),
        (
            frame::encode(&msg::ping(3)).to_vec(),
            "expected ClientHello",
        ),
        (frame::encode(&mismatched).to_vec(), "does not match"),
        (
            [hello.clone(), vec![0, 0, 0, 2, 0xff, 0xff]].concat(),
            "invalid protobuf",
        ),
        ([hello, ping].concat(), "Ping before ServerHello"),
    ];
    for (i, (bytes, reason)) in cases.iter().enumerate() {
        let raw = w.spawn_raw(Some("good"), bytes);
        assert!(
            w.run_until_cond(SECS(5), |w| w.raw(raw).closed.is_some()),
            "case {i} closed"
        );
        let got = w.raw(raw).byes();
        assert_eq!(got.len(), 1, "case {i}: one Bye: {got:?}");
        assert!(got[0].contains(reason), "case {i}: {got:?}");
        let id = w.start_command(op, "good", "echo.Echo", echo(&format!("still here {i}")));
        assert_eq!(w.wait_answer(op, id, SECS(10)).status, Status::Success);
    }
    assert_eq!(
        w.agent(good).stats.connects.len(),
        1,
        "the good agent was never disturbed"
    );
    assert_eq!(w.hub.as_ref().map(|h| h.connection_count()), Some(2));
    w.assert_invariants();
});

scenario!(sessions_need_a_user_certificate, 8, |seed| {
    let mut w = world(seed, NetConfig::default());
    let stranger = w.spawn_operator_as(Some("nobody"));
    let anonymous = w.spawn_operator_as(None);
    w.run_for(SECS(5));
    for op in [stranger, anonymous] {
        let o = w.operator(op);
        assert!(o.user.is_none(), "node {op} was welcomed");
        let (_, why) = o.closed.clone().expect("refused");
        assert_eq!(why, CloseReason::Bye("authentication failed".into()));
    }
    let refused = |why: &str| {
        w.saw(|e| matches!(e, HubEvent::ConnectionFailed { reason: CloseReason::AuthFailed(r), .. } if r.contains(why)))
    };
    assert!(refused("is not a user") && refused("no client certificate"));
    let admin = w.connected_operator();
    assert_eq!(w.operator(admin).user.as_deref(), Some("admin"));
});

scenario!(
    an_agent_cannot_report_on_another_agents_command,
    8,
    |seed| {
        let mut w = world(seed, NetConfig::default());
        let victim = w.connected_agent("victim");
        w.register_agent("liar", "pw", &[]);
        let op = w.connected_operator();
        let id = w.start_command(op, "victim", "sim.Sleep", json!({"seconds": 6}));
        // An authenticated agent that claims the victim's command.
        let forged = |m| frame::encode(&m).to_vec();
        let script = vec![
            (SECS(0), forged(msg::client_hello("liar", "pw"))),
            (SECS(1), forged(msg::progress(id, 99, 99, "forged"))),
            (
                SECS(1),
                forged(msg::result(id, Status::Failed, true, "forged")),
            ),
            (
                SECS(1),
                forged(msg::done(id, Status::Cancelled, true, "forged")),
            ),
        ];
        w.spawn_raw_script(Some("liar"), script);
        w.run_for(SECS(3));
        assert!(
            w.hub_connected().contains("liar"),
            "the liar is a genuine agent"
        );
        assert!(
            w.operator(op).answer(id).is_none(),
            "a forged answer reached the operator"
        );
        assert!(!w.operator(op).progress(id).contains(&99));
        assert_eq!(w.store.commands[&id].status, CommandStatus::Pending);
        let ans = w.wait_answer(op, id, SECS(10));
        assert_eq!(
            ans.status,
            Status::Success,
            "the victim's own result counts"
        );
        assert!(!ans.output.contains("forged"));
        assert_eq!(w.agent(victim).outcome(id).map(|o| o.reported), Some(true));
        w.assert_invariants();
    }
);

/// A busy run: agents, commands, loss, a partition, a crash and a restart.
fn busy_run(seed: u64) -> (String, u64) {
    let mut w = world(seed, NetConfig::hostile(0.05));
    let agents: Vec<NodeId> = (0..10)
        .map(|i| w.connected_agent(&format!("a{i}")))
        .collect();
    let op = w.connected_operator();
    for i in 0..10 {
        w.run_command(op, &format!("a{i}"), "sim.Sleep", json!({"seconds": 2 + i}));
    }
    w.partition(agents[3]);
    w.crash(agents[4]);
    w.run_for(SECS(15));
    w.heal(agents[3]);
    w.revive(agents[4], SECS(2));
    w.restart_hub();
    w.run_for(SECS(60));
    (w.trace.hash(), w.trace.count)
}

scenario!(the_same_seed_gives_the_same_trace, 2, |seed| {
    let a = busy_run(seed);
    let b = busy_run(seed);
    assert_eq!(a, b, "seed {seed} is not deterministic");
    assert!(a.1 > 1000, "the run did something ({} records)", a.1);
    let c = busy_run(seed + 1000);
    assert_ne!(a.0, c.0, "another seed should give another trace");
});
