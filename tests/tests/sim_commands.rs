//! Command scenarios under the deterministic simulator: progress and results, cancels, data
//! requests, registration over the wire, and a hundred agents on a lossy network. Seeds as in
//! `sim_link` (`SIM_SEEDS=N`, `SIM_SEED=x`); a failure prints the replay command.

use std::time::Duration;

use serde_json::json;
use switchboard_core::hub::{Change, CommandStatus, HubConfig, HubEvent};
use switchboard_core::link::CommandStatusWire;
use switchboard_core::machine::CloseReason;
use switchboard_proto::command_result::Status;
use switchboard_proto::control_error::Code;
use switchboard_proto::message::Message as Body;
use switchboard_tests::scenario;
use switchboard_tests::sim::{NetConfig, NodeId, World};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn world(seed: u64, net: NetConfig) -> World {
    World::quick(seed, net)
}

fn echo(msg: &str) -> serde_json::Value {
    json!({ "[args]": [msg] })
}

scenario!(
    progress_and_results_reach_the_operator_and_the_log,
    8,
    |seed| {
        let mut w = world(seed, NetConfig::hostile(0.05));
        w.connected_agent("a1");
        let op = w.connected_operator();
        let id = w.start_command(op, "a1", "echo.Echo", echo("hi there"));
        let ans = w.wait_answer(op, id, SECS(10));
        assert_eq!(
            (ans.status, ans.output.as_str(), ans.done),
            (Status::Success, "hi there", false)
        );
        let started = w.now();
        let sleep = w.start_command(op, "a1", "sim.Sleep", json!({"seconds": 3}));
        let ans = w.wait_answer(op, sleep, SECS(20));
        assert_eq!((ans.status, ans.done), (Status::Success, false));
        assert!(ans.output.contains("second 3"), "{:?}", ans.output);
        assert!(
            w.now() - started >= SECS(3),
            "the result took the 3 virtual seconds"
        );
        assert_eq!(
            w.operator(op).progress(sleep),
            vec![0, 1, 2, 3],
            "progress in order, each once"
        );
        w.run_for(SECS(5));
        for c in [id, sleep] {
            assert_eq!(
                w.operator(op).answers(c).len(),
                1,
                "exactly one answer for {c}"
            );
        }
        // The log: created, then finished, with what the operator heard.
        let pos = |f: &dyn Fn(&Change) -> bool| w.store.applied.iter().position(f);
        let created = pos(&|c| matches!(c, Change::CommandCreated(r) if r.command_id == sleep));
        let finished = pos(
            &|c| matches!(c, Change::CommandFinished { command_id, .. } if *command_id == sleep),
        );
        assert!(
            created.is_some() && created < finished,
            "created {created:?}, finished {finished:?}"
        );
        let rec = &w.store.commands[&sleep];
        assert_eq!(
            (rec.status, rec.output.as_str()),
            (CommandStatus::Success, ans.output.as_str())
        );
        assert_eq!(
            (
                rec.agent_id.as_str(),
                rec.operation.as_str(),
                rec.issued_by.as_str()
            ),
            ("a1", "sim.Sleep", "admin")
        );
        assert!(rec.finished_unix_ms - rec.created_unix_ms >= 3000);
        w.assert_invariants();
    }
);

scenario!(
    cancel_answers_command_done_with_the_output_so_far,
    8,
    |seed| {
        let mut w = world(seed, NetConfig::default());
        let a = w.connected_agent("a1");
        let op = w.connected_operator();
        let id = w.start_command(op, "a1", "sim.Sleep", json!({"seconds": 30}));
        w.run_for(Duration::from_millis(2500));
        w.cancel(op, id);
        let ans = w.wait_answer(op, id, SECS(5));
        assert!(ans.done, "answered with CommandDone");
        assert_eq!(ans.status, Status::Cancelled);
        assert!(
            ans.output.contains("second 2") && !ans.output.contains("second 4"),
            "{:?}",
            ans.output
        );
        let rec = &w.store.commands[&id];
        assert_eq!(
            (rec.status, rec.output.as_str()),
            (CommandStatus::Cancelled, ans.output.as_str())
        );
        let out = w.agent(a).outcome(id).expect("the agent ended it");
        assert_eq!(
            (out.status, out.reported),
            (CommandStatusWire::Cancelled, true)
        );
        // Cancelling it again: nothing runs under that id any more.
        w.cancel(op, id);
        w.run_for(SECS(1));
        match w.operator(op).response(0) {
            Some(Body::ControlError(e)) => assert_eq!(e.code, Code::NotFound as i32),
            other => panic!("expected a ControlError, got {other:?}"),
        }
        assert_eq!(w.operator(op).answers(id).len(), 1);
        w.assert_invariants();
    }
);

scenario!(data_requests_are_answered_or_fail_never_hang, 8, |seed| {
    let mut w = world(seed, NetConfig::with_loss(0.05));
    let a = w.connected_agent("a1");
    let op = w.connected_operator();
    let rid = w.set_agent_data(op, "a1", "greeting", "\"hello\"");
    w.run_until_cond(SECS(5), |w| w.operator(op).response(rid).is_some());
    assert!(matches!(
        w.operator(op).response(rid),
        Some(Body::SetAgentDataResponse(_))
    ));
    assert_eq!(w.store.data("a1", "greeting"), Some("\"hello\""));
    // Answered from the value set above.
    let id = w.start_command(op, "a1", "data.Show", echo("greeting"));
    let ans = w.wait_answer(op, id, SECS(10));
    assert_eq!(
        (ans.status, ans.output.as_str()),
        (Status::Success, "\"hello\"")
    );
    // An unknown name, an unknown request: failed at once.
    let id = w.start_command(op, "a1", "data.Show", echo("nothing"));
    let ans = w.wait_answer(op, id, SECS(10));
    assert_eq!(ans.status, Status::Failed);
    assert!(ans.output.contains("no data named"), "{}", ans.output);
    let id = w.start_command(
        op,
        "a1",
        "sim.Request",
        json!({"name": "bogus", "data": {}}),
    );
    let ans = w.wait_answer(op, id, SECS(10));
    assert!(
        ans.status == Status::Failed && ans.output.contains("unsupported request"),
        "{ans:?}"
    );
    // Unanswered: the link is cut once the request is out; the agent gives up on it.
    let rid = w.run_command(op, "a1", "data.Show", echo("greeting"));
    assert!(
        w.run_until_cond(SECS(10), |w| w.agent(a).busy() > 0),
        "request sent"
    );
    let sent = w.now();
    w.partition(a);
    let id = w.wait_command_id(op, rid, SECS(5));
    w.run_for(SECS(8));
    assert_eq!(
        w.agent(a).busy(),
        0,
        "the operation ended instead of hanging"
    );
    let out = w.agent(a).outcome(id).expect("the agent ended it");
    assert_eq!(out.status, CommandStatusWire::Failed);
    assert!(out.output.contains("timed out"), "{out:?}");
    assert!(
        out.at - sent <= SECS(5) + Duration::from_millis(1),
        "after the request timeout"
    );
    // The operator hears it failed too, once the hub gives up on the link.
    let ans = w.wait_answer(op, id, SECS(10));
    assert_eq!(ans.status, Status::Failed);
    w.assert_invariants();
});

scenario!(registration_over_the_wire_survives_a_restart, 8, |seed| {
    let mut w = world(seed, NetConfig::with_loss(0.02));
    let op = w.connected_operator();
    let rid = w.register_agent_request(op, "late", "pw", &[]);
    w.run_until_cond(SECS(5), |w| w.operator(op).response(rid).is_some());
    assert!(matches!(
        w.operator(op).response(rid),
        Some(Body::RegisterAgentResponse(_))
    ));
    let rid = w.set_agent_data(op, "late", "motd", "{\"text\": \"kept\"}");
    w.run_until_cond(SECS(5), |w| w.operator(op).response(rid).is_some());
    let a = w.spawn_agent("late", "pw", Some("late"));
    assert!(w.run_until_cond(SECS(10), |w| w.agent(a).is_connected()));
    w.restart_hub();
    assert!(
        w.run_until_cond(SECS(30), |w| w.hub_connected().contains("late")),
        "came back"
    );
    let op = w.connected_operator();
    let id = w.start_command(op, "late", "data.Show", echo("motd"));
    let ans = w.wait_answer(op, id, SECS(10));
    assert_eq!(
        (ans.status, ans.output.as_str()),
        (Status::Success, "{\"text\": \"kept\"}")
    );
    // Removed: the link is closed and later attempts are refused.
    let rid = w.remove_agent_request(op, "late");
    w.run_for(SECS(20));
    assert!(matches!(
        w.operator(op).response(rid),
        Some(Body::RemoveAgentResponse(_))
    ));
    assert!(w.hub_connected().is_empty());
    let st = &w.agent(a).stats;
    assert!(
        st.close_reasons()
            .contains(&CloseReason::Bye("closed: agent removed".into())),
        "{st:?}"
    );
    assert!(st.auth_failures >= 1, "{st:?}");
    assert!(w.saw(|e| matches!(e, HubEvent::AuthFailed { agent_id, reason, .. } if agent_id == "late" && reason == "unknown agent")));
    w.assert_invariants();
});

scenario!(a_hundred_agents_under_ten_percent_loss, 3, |seed| {
    // The production timers (ping every 30 s, answered within 10 s): at 10% segment loss TCP
    // stalls a stream for seconds now and then (a segment lost four times in a row waits
    // 0.2 + 0.4 + 0.8 + 1.6 s), and the 5 s ping timeout of the short timers would rightly
    // close such a link; with 10 s it takes six losses in a row.
    let mut w = World::new(seed, HubConfig::default(), NetConfig::with_loss(0.10));
    let ids: Vec<String> = (0..100).map(|i| format!("agent{i:03}")).collect();
    let nodes: Vec<NodeId> = ids
        .iter()
        .map(|id| {
            w.register_agent(id, &format!("secret-{id}"), &[]);
            w.spawn_agent(id, &format!("secret-{id}"), Some(id))
        })
        .collect();
    assert!(
        w.run_until_cond(SECS(60), |w| w.hub_connected().len() == 100),
        "all connect"
    );
    let op = w.connected_operator();
    // A broadcast: one request per agent, all written at once.
    let rids: Vec<u64> = ids
        .iter()
        .map(|id| w.run_command(op, id, "echo.Echo", echo(id)))
        .collect();
    let cmds: Vec<i64> = rids
        .iter()
        .map(|r| w.wait_command_id(op, *r, SECS(60)))
        .collect();
    let all = w.run_until_cond(SECS(60), |w| {
        cmds.iter().all(|c| w.operator(op).answer(*c).is_some())
    });
    assert!(all, "every result arrived");
    w.run_for(SECS(10));
    for ((c, id), n) in cmds.iter().zip(&ids).zip(&nodes) {
        let answers = w.operator(op).answers(*c);
        assert_eq!(answers.len(), 1, "exactly one result for {c}");
        assert_eq!(
            (answers[0].status, answers[0].output.as_str()),
            (Status::Success, id.as_str())
        );
        assert_eq!(
            w.agent(*n).stats.commands,
            vec![*c],
            "{id} ran its command once"
        );
    }
    assert!(
        w.net.stats.retransmissions > 100,
        "the loss was real: {:?}",
        w.net.stats
    );
    w.assert_invariants();
});

scenario!(a_data_value_is_never_handed_over_corrupted, 4, |seed| {
    // A value as large as a SetAgentDataRequest frame allows: the agent must get it whole, or
    // a failure, never a cut JSON text marked as success.
    let mut w = world(seed, NetConfig::default());
    let a = w.connected_agent("a1");
    let op = w.connected_operator();
    let big = serde_json::Value::String("x".repeat(65_400)).to_string();
    let rid = w.set_agent_data(op, "a1", "big", &big);
    w.run_until_cond(SECS(5), |w| w.operator(op).response(rid).is_some());
    let stored = matches!(
        w.operator(op).response(rid),
        Some(Body::SetAgentDataResponse(_))
    );
    let id = w.start_command(op, "a1", "data.Show", echo("big"));
    let ans = w.wait_answer(op, id, SECS(10));
    let out = w.agent(a).outcome(id).expect("ended").clone();
    if out.status == CommandStatusWire::Success {
        assert!(stored);
        assert_eq!(out.output, big, "the value arrived whole");
        assert!(serde_json::from_str::<serde_json::Value>(&out.output).is_ok());
    }
    assert!(ans.status == Status::Success || ans.status == Status::Failed);
    if out.status == CommandStatusWire::Failed {
        if stored {
            assert!(out.output.contains("too large"), "{}", out.output);
        } else {
            // Refused up front by the hub: the value could never fit in the agent's Response.
            assert!(
                matches!(w.operator(op).response(rid), Some(Body::ControlError(e)) if e.message.contains("does not fit")),
                "{:?}",
                w.operator(op).response(rid)
            );
            assert!(out.output.contains("no data named"), "{}", out.output);
        }
    }
    w.assert_invariants();
});

scenario!(
    an_operator_that_goes_away_leaves_its_commands_running,
    8,
    |seed| {
        let mut w = world(seed, NetConfig::default());
        w.connected_agent("a1");
        let op = w.connected_operator();
        let id = w.start_command(op, "a1", "sim.Sleep", json!({"seconds": 20}));
        w.freeze(op);
        w.run_for(SECS(15));
        // The hub's keepalive closed the session; the command kept running.
        let session_gone = w
            .hub_closes
            .iter()
            .any(|(_, _, r)| *r == CloseReason::Timeout("ping"));
        assert!(session_gone, "{:?}", w.hub_closes);
        assert_eq!(w.store.commands[&id].status, CommandStatus::Pending);
        w.run_for(SECS(10));
        let rec = &w.store.commands[&id];
        assert_eq!(rec.status, CommandStatus::Success, "finished into the log");
        assert!(rec.output.contains("second 20"));
        w.thaw(op);
        w.run_for(SECS(5));
        assert!(
            w.operator(op).answer(id).is_none(),
            "nothing written to the closed session"
        );
        assert!(w.operator(op).closed.is_some());
        w.assert_invariants();
    }
);
