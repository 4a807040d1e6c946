//! Agent-link scenarios under the deterministic simulator. Each runs over several seeds
//! (`SIM_SEEDS=N` for more, `SIM_SEED=x` for one); a failure prints the replay command.

use std::time::Duration;

use switchboard_core::hub::{CommandStatus, HubConfig, HubEvent};
use switchboard_core::link::{LinkConfig, frame, msg};
use switchboard_core::machine::CloseReason;
use switchboard_proto as pb;
use switchboard_proto::command_result::Status;
use switchboard_proto::message::Message as Body;
use switchboard_tests::sim::{NetConfig, NodeId, World, for_each_seed};

const FILE: &str = "sim_link";

fn link() -> LinkConfig {
    LinkConfig {
        hello_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(5),
        ping_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..LinkConfig::default()
    }
}

fn world(seed: u64, net: NetConfig) -> World {
    World::new(
        seed,
        HubConfig {
            link: link(),
            ..HubConfig::default()
        },
        net,
    )
}

fn connected_agent(w: &mut World, id: &str) -> NodeId {
    w.register_agent(id, &format!("secret-{id}"), &[]);
    let a = w.spawn_agent(id, &format!("secret-{id}"), Some(id));
    assert!(
        w.run_until_cond(Duration::from_secs(30), |w| w.agent(a).is_connected()),
        "{id} did not connect"
    );
    a
}

fn operator(w: &mut World) -> NodeId {
    let op = w.spawn_operator();
    assert!(
        w.run_until_cond(Duration::from_secs(10), |w| w.operator(op).welcomed),
        "operator not welcomed"
    );
    op
}

/// Sends RunCommandRequest and returns the command id.
fn run(w: &mut World, op: NodeId, agent: &str, operation: &str, data: serde_json::Value) -> i64 {
    let rid = match &mut w.nodes[op] {
        switchboard_tests::sim::Node::Operator(o) => o.request_id(),
        _ => unreachable!(),
    };
    let req = pb::RunCommandRequest {
        request_id: rid,
        agent_id: agent.into(),
        operation: operation.into(),
        data: data.to_string(),
    };
    w.operator_send(op, Body::RunCommandRequest(req));
    let mut id = None;
    w.run_until_cond(Duration::from_secs(30), |w| {
        id = w.operator(op).inbox.iter().find_map(|(_, m)| match m {
            Body::RunCommandResponse(r) if r.request_id == rid => Some(r.command_id),
            _ => None,
        });
        id.is_some()
    });
    id.unwrap_or_else(|| {
        panic!(
            "no RunCommandResponse for {operation} on {agent}: {:?}",
            w.operator(op).inbox
        )
    })
}

/// The final answer (result or done) for a command, if it came.
fn answer(w: &World, op: NodeId, id: i64) -> Option<(Status, String, bool)> {
    w.operator(op).inbox.iter().find_map(|(_, m)| match m {
        Body::Result(r) if r.command_id == id => Some((
            Status::try_from(r.status).unwrap_or(Status::Unspecified),
            r.output.clone(),
            false,
        )),
        Body::Done(d) if d.command_id == id => Some((
            Status::try_from(d.status).unwrap_or(Status::Unspecified),
            d.output.clone(),
            true,
        )),
        _ => None,
    })
}

fn wait_answer(w: &mut World, op: NodeId, id: i64, limit: Duration) -> (Status, String, bool) {
    w.run_until_cond(limit, |w| answer(w, op, id).is_some());
    answer(w, op, id).unwrap_or_else(|| panic!("no answer for command {id} within {limit:?}"))
}

fn byes(bytes: &[u8]) -> Vec<String> {
    let mut d = switchboard_core::link::FrameDecoder::new(1 << 20);
    d.push(bytes);
    let mut out = vec![];
    while let Ok(Some(m)) = d.next_message() {
        if let Ok(Body::Bye(b)) = msg::body(m) {
            out.push(b.reason);
        }
    }
    out
}

#[test]
fn auth_failures_are_refused_and_backed_off() {
    for_each_seed(
        "auth_failures_are_refused_and_backed_off",
        FILE,
        8,
        |seed| {
            let mut w = world(seed, NetConfig::default());
            w.register_agent("a1", "right", &[]);
            w.register_agent("fenced", "right", &["10.0.0.0/8"]);
            let wrong = w.spawn_agent("a1", "wrong", Some("a1"));
            let ghost = w.spawn_agent("ghost", "x", Some("ghost"));
            let mismatch = w.spawn_agent("a1", "right", Some("someone-else"));
            let fenced = w.spawn_agent("fenced", "right", Some("fenced"));
            w.run_for(Duration::from_secs(40));
            for n in [wrong, ghost, mismatch, fenced] {
                let a = w.agent(n);
                assert_eq!(a.stats.connects, 0, "node {n} must never be accepted");
                assert!(a.stats.auth_failures >= 3, "node {n}: {:?}", a.stats);
                assert!(
                    a.stats
                        .close_reasons
                        .iter()
                        .all(|r| *r == CloseReason::AuthFailed("authentication failed".into())),
                    "{:?}",
                    a.stats
                );
                // Backoff: 1, 2, 4, 8, 16 s (jittered): a handful of attempts in 40 s, never a hot loop.
                assert!(
                    a.stats.attempts <= 8,
                    "node {n}: {} attempts in 40 s",
                    a.stats.attempts
                );
                for gap in a.stats.attempt_times.windows(2) {
                    assert!(
                        gap[1] - gap[0] >= Duration::from_millis(500),
                        "attempts too close: {:?}",
                        gap[1] - gap[0]
                    );
                }
            }
            assert!(w.saw(|e| matches!(e, HubEvent::AuthFailed { agent_id, reason, .. } if agent_id == "ghost" && reason == "unknown agent")));
            assert!(w.saw(|e| matches!(e, HubEvent::AuthFailed { reason, .. } if reason.contains("certificate names"))));
            assert!(w.saw(|e| matches!(e, HubEvent::AuthFailed { reason, .. } if reason.contains("allowed networks"))));
        },
    );
}

#[test]
fn hello_timeout_closes_a_silent_peer() {
    for_each_seed("hello_timeout_closes_a_silent_peer", FILE, 8, |seed| {
        let mut w = world(seed, NetConfig::default());
        let start = w.now;
        let raw = w.spawn_raw(Some("x"), &[]);
        w.run_for(Duration::from_secs(9));
        assert!(
            w.raw(raw).closed_at.is_none(),
            "closed before the 10 s deadline"
        );
        w.run_for(Duration::from_secs(2));
        let closed = w.raw(raw).closed_at.expect("closed after the deadline");
        assert!(
            closed - start >= Duration::from_secs(10) && closed - start < Duration::from_secs(11)
        );
        assert_eq!(
            byes(&w.raw(raw).received),
            vec!["hello timed out".to_string()]
        );
    });
}

#[test]
fn partition_times_out_both_sides_and_the_agent_comes_back() {
    for_each_seed(
        "partition_times_out_both_sides_and_the_agent_comes_back",
        FILE,
        8,
        |seed| {
            let mut w = world(seed, NetConfig::default());
            let a = connected_agent(&mut w, "a1");
            w.run_for(Duration::from_secs(3));
            let cut = w.now;
            w.partition(a);
            // Both sides notice within ping_interval + ping_timeout (plus latency).
            w.run_for(Duration::from_secs(11));
            assert!(
                !w.agent(a).is_connected(),
                "agent side still thinks it is connected"
            );
            assert!(
                w.agent(a)
                    .stats
                    .close_reasons
                    .contains(&CloseReason::Timeout("ping")),
                "{:?}",
                w.agent(a).stats
            );
            let gone = w
                .events
                .iter()
                .find(|(_, e)| matches!(e, HubEvent::AgentDisconnected { .. }))
                .map(|(t, _)| *t);
            let gone = gone.expect("the hub noticed");
            assert!(
                gone - cut <= Duration::from_secs(11),
                "hub noticed after {:?}",
                gone - cut
            );
            assert!(w.hub_connected().is_empty());
            w.heal(a);
            assert!(
                w.run_until_cond(Duration::from_secs(90), |w| w.agent(a).is_connected()
                    && w.hub_connected().contains("a1"))
            );
        },
    );
}

#[test]
fn progress_and_results_reach_the_operator_and_the_log() {
    for_each_seed(
        "progress_and_results_reach_the_operator_and_the_log",
        FILE,
        8,
        |seed| {
            let mut w = world(
                seed,
                NetConfig {
                    loss: 0.05,
                    ..NetConfig::default()
                },
            );
            connected_agent(&mut w, "a1");
            let op = operator(&mut w);
            let echo = run(
                &mut w,
                op,
                "a1",
                "echo.Echo",
                serde_json::json!({"[args]": ["hi there"]}),
            );
            let (st, out, _) = wait_answer(&mut w, op, echo, Duration::from_secs(10));
            assert_eq!((st, out.as_str()), (Status::Success, "hi there"));
            let sleep = run(
                &mut w,
                op,
                "a1",
                "sim.Sleep",
                serde_json::json!({"seconds": 3}),
            );
            let (st, out, done) = wait_answer(&mut w, op, sleep, Duration::from_secs(20));
            assert_eq!((st, done), (Status::Success, false));
            assert!(out.contains("second 3"));
            let progress: Vec<u32> = w
                .operator(op)
                .inbox
                .iter()
                .filter_map(|(_, m)| match m {
                    Body::Progress(p) if p.command_id == sleep => Some(p.current),
                    _ => None,
                })
                .collect();
            assert_eq!(progress, vec![0, 1, 2, 3], "progress in order, each once");
            // The log: created, then finished, in that order, and the result arrived after it.
            let rec = &w.store.commands[&sleep];
            assert_eq!(rec.status, CommandStatus::Success);
            let created = w.store.applied.iter().position(|c| matches!(c, switchboard_core::hub::Change::CommandCreated(r) if r.command_id == sleep));
            let finished = w.store.applied.iter().position(
            |c| matches!(c, switchboard_core::hub::Change::CommandFinished { command_id, .. } if *command_id == sleep),
        );
            assert!(created < finished && created.is_some());
        },
    );
}

#[test]
fn cancel_answers_command_done_with_the_output_so_far() {
    for_each_seed(
        "cancel_answers_command_done_with_the_output_so_far",
        FILE,
        8,
        |seed| {
            let mut w = world(seed, NetConfig::default());
            connected_agent(&mut w, "a1");
            let op = operator(&mut w);
            let id = run(
                &mut w,
                op,
                "a1",
                "sim.Sleep",
                serde_json::json!({"seconds": 30}),
            );
            w.run_for(Duration::from_millis(2500));
            w.operator_send(op, Body::Cancel(pb::CommandCancel { command_id: id }));
            let (st, out, done) = wait_answer(&mut w, op, id, Duration::from_secs(5));
            assert!(done, "answered with CommandDone");
            assert_eq!(st, Status::Cancelled);
            assert!(
                out.contains("second 2") && !out.contains("second 4"),
                "output so far: {out:?}"
            );
            assert_eq!(w.store.commands[&id].status, CommandStatus::Cancelled);
        },
    );
}

#[test]
fn data_requests_are_answered_or_time_out_never_hang() {
    for_each_seed(
        "data_requests_are_answered_or_time_out_never_hang",
        FILE,
        8,
        |seed| {
            let mut w = world(seed, NetConfig::default());
            let a = connected_agent(&mut w, "a1");
            let op = operator(&mut w);
            let req = pb::SetAgentDataRequest {
                request_id: 99,
                agent_id: "a1".into(),
                name: "greeting".into(),
                value_json: "\"hello\"".into(),
            };
            w.operator_send(op, Body::SetAgentDataRequest(req));
            let id = run(
                &mut w,
                op,
                "a1",
                "data.Show",
                serde_json::json!({"[args]": ["greeting"]}),
            );
            assert_eq!(
                wait_answer(&mut w, op, id, Duration::from_secs(10)),
                (Status::Success, "\"hello\"".into(), false)
            );
            let id = run(
                &mut w,
                op,
                "a1",
                "data.Show",
                serde_json::json!({"[args]": ["nothing"]}),
            );
            let (st, out, _) = wait_answer(&mut w, op, id, Duration::from_secs(10));
            assert_eq!(st, Status::Failed);
            assert!(out.contains("no data named"), "{out}");
            // Unanswered: the request is cut off by a partition; the agent's request times out.
            let id = run(
                &mut w,
                op,
                "a1",
                "data.Show",
                serde_json::json!({"[args]": ["greeting"]}),
            );
            let _ = id;
            w.partition(a);
            w.run_for(Duration::from_secs(6));
            assert_eq!(
                w.agent(a).busy(),
                0,
                "the operation ended instead of hanging"
            );
        },
    );
}

#[test]
fn agents_reconnect_with_backoff_after_a_hub_restart() {
    for_each_seed(
        "agents_reconnect_with_backoff_after_a_hub_restart",
        FILE,
        6,
        |seed| {
            let mut w = world(seed, NetConfig::default());
            let agents: Vec<NodeId> = (0..5)
                .map(|i| connected_agent(&mut w, &format!("a{i}")))
                .collect();
            let op = operator(&mut w);
            let before = run(
                &mut w,
                op,
                "a0",
                "echo.Echo",
                serde_json::json!({"[args]": ["x"]}),
            );
            wait_answer(&mut w, op, before, Duration::from_secs(10));
            let attempts_before: Vec<u32> =
                agents.iter().map(|a| w.agent(*a).stats.attempts).collect();
            w.restart_hub();
            assert!(w.run_until_cond(Duration::from_secs(60), |w| {
                agents.iter().all(|a| w.agent(*a).is_connected())
            }));
            w.run_for(Duration::from_secs(60));
            for (i, a) in agents.iter().enumerate() {
                let extra = w.agent(*a).stats.attempts - attempts_before[i];
                assert!(
                    (1..=3).contains(&extra),
                    "agent {i}: {extra} attempts after the restart"
                );
                assert!(w.agent(*a).is_connected());
            }
            // Command ids continue after the restart.
            let op = operator(&mut w);
            let after = run(
                &mut w,
                op,
                "a1",
                "echo.Echo",
                serde_json::json!({"[args]": ["y"]}),
            );
            assert!(after > before);
            assert_eq!(
                wait_answer(&mut w, op, after, Duration::from_secs(10)).0,
                Status::Success
            );
        },
    );
}

#[test]
fn a_command_whose_agent_vanishes_fails_and_the_operator_hears_it() {
    for_each_seed(
        "a_command_whose_agent_vanishes_fails_and_the_operator_hears_it",
        FILE,
        8,
        |seed| {
            let mut w = world(seed, NetConfig::default());
            let a = connected_agent(&mut w, "a1");
            let op = operator(&mut w);
            let id = run(
                &mut w,
                op,
                "a1",
                "sim.Sleep",
                serde_json::json!({"seconds": 60}),
            );
            w.run_for(Duration::from_secs(1));
            w.agent_mut(a).frozen = true;
            w.agent_mut(a).stopped = true;
            let (st, out, _) = wait_answer(&mut w, op, id, Duration::from_secs(20));
            assert_eq!(st, Status::Failed);
            assert!(out.contains("agent disconnected"), "{out}");
            assert_eq!(w.store.commands[&id].status, CommandStatus::Failed);
        },
    );
}

#[test]
fn a_hundred_agents_under_ten_percent_loss() {
    for_each_seed("a_hundred_agents_under_ten_percent_loss", FILE, 3, |seed| {
        let mut w = world(
            seed,
            NetConfig {
                loss: 0.10,
                ..NetConfig::default()
            },
        );
        let ids: Vec<String> = (0..100).map(|i| format!("agent{i:03}")).collect();
        for id in &ids {
            w.register_agent(id, &format!("secret-{id}"), &[]);
            w.spawn_agent(id, &format!("secret-{id}"), Some(id));
        }
        assert!(
            w.run_until_cond(Duration::from_secs(60), |w| w.hub_connected().len() == 100),
            "all connect"
        );
        let op = operator(&mut w);
        let mut cmds = vec![];
        for id in &ids {
            cmds.push(run(
                &mut w,
                op,
                id,
                "echo.Echo",
                serde_json::json!({"[args]": [id]}),
            ));
        }
        w.run_until_cond(Duration::from_secs(60), |w| {
            cmds.iter().all(|c| answer(w, op, *c).is_some())
        });
        for (c, id) in cmds.iter().zip(&ids) {
            let results = w
                .operator(op)
                .inbox
                .iter()
                .filter(|(_, m)| matches!(m, Body::Result(r) if r.command_id == *c))
                .count();
            assert_eq!(results, 1, "exactly one result for {c}");
            assert_eq!(
                answer(&w, op, *c),
                Some((Status::Success, id.clone(), false))
            );
        }
    });
}

#[test]
fn bad_input_gets_a_bye_while_others_keep_working() {
    for_each_seed(
        "bad_input_gets_a_bye_while_others_keep_working",
        FILE,
        8,
        |seed| {
            let mut w = world(seed, NetConfig::default());
            connected_agent(&mut w, "good");
            let op = operator(&mut w);
            let cases: [(&[u8], &str); 3] = [
                (b"GET / HTTP/1.1\r\n\r\n", "protocol error"),
                (&[0x7f, 0xff, 0xff, 0xff], "over the maximum"),
                (&frame::encode(&msg::ping(3)), "expected ClientHello"),
            ];
            for (i, (bytes, reason)) in cases.iter().enumerate() {
                let raw = w.spawn_raw(Some("good"), bytes);
                assert!(
                    w.run_until_cond(Duration::from_secs(5), |w| w.raw(raw).closed_at.is_some()),
                    "case {i} closed"
                );
                let got = byes(&w.raw(raw).received);
                assert!(got.iter().any(|b| b.contains(reason)), "case {i}: {got:?}");
                let id = run(
                    &mut w,
                    op,
                    "good",
                    "echo.Echo",
                    serde_json::json!({"[args]": [format!("still here {i}")]}),
                );
                assert_eq!(
                    wait_answer(&mut w, op, id, Duration::from_secs(10)).0,
                    Status::Success
                );
            }
        },
    );
}

/// A busy run: agents, commands, loss, a partition and a restart.
fn busy_run(seed: u64) -> (String, u64) {
    let mut w = world(
        seed,
        NetConfig {
            loss: 0.05,
            ..NetConfig::default()
        },
    );
    let agents: Vec<NodeId> = (0..10)
        .map(|i| connected_agent(&mut w, &format!("a{i}")))
        .collect();
    let op = operator(&mut w);
    for i in 0..10 {
        run(
            &mut w,
            op,
            &format!("a{i}"),
            "sim.Sleep",
            serde_json::json!({"seconds": 2}),
        );
    }
    w.partition(agents[3]);
    w.run_for(Duration::from_secs(15));
    w.heal(agents[3]);
    w.restart_hub();
    w.run_for(Duration::from_secs(60));
    (w.trace.hash(), w.trace.count)
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let seed = switchboard_tests::sim::seeds(1)[0];
    let a = busy_run(seed);
    let b = busy_run(seed);
    assert_eq!(a, b, "seed {seed} is not deterministic");
    assert!(a.1 > 1000, "the run did something ({} steps traced)", a.1);
    let c = busy_run(seed + 1000);
    assert_ne!(a.0, c.0, "another seed should give another trace");
}
