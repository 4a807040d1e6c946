//! Liveness of the agent link under the deterministic simulator: an agent that talks but no
//! longer answers pings, and two agents fighting over one id. Seeds as in `sim_link`
//! (`SIM_SEEDS=N`, `SIM_SEED=x`); a failure prints the replay command.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_core::hub::{CommandStatus, ConnId, HubEvent};
use switchboard_core::machine::CloseReason;
use switchboard_proto::command_result::Status;
use switchboard_tests::scenario;
use switchboard_tests::sim::{AgentMode, NetConfig, World};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The connections the hub accepted for agent `id`, with when, in order.
fn links_of(w: &World, id: &str) -> Vec<(Instant, ConnId)> {
    w.events
        .iter()
        .filter_map(|(t, e)| match e {
            HubEvent::AgentConnected { agent_id, conn, .. } if agent_id == id => Some((*t, *conn)),
            _ => None,
        })
        .collect()
}

/// When and why the hub closed `conn`.
fn hub_close(w: &World, conn: ConnId) -> Option<(Instant, CloseReason)> {
    w.hub_closes
        .iter()
        .find(|(_, c, _)| *c == conn)
        .map(|(t, _, r)| (*t, r.clone()))
}

scenario!(
    an_agent_that_stops_answering_pings_is_closed_though_it_keeps_talking,
    8,
    |seed| {
        let mut w = World::quick(seed, NetConfig::with_loss(0.01));
        let a = w.connected_agent("a1");
        let op = w.connected_operator();
        let id = w.start_command(op, "a1", "sim.Sleep", json!({"seconds": 600}));
        w.run_for(SECS(2));
        let t0 = w.now();
        w.agent_mut(a).mode = AgentMode::NoPongs;
        let ans = w.wait_answer(op, id, SECS(20));
        // Closed by the hub's keepalive within ping_interval + ping_timeout (5 s + 5 s).
        let (_, conn) = links_of(&w, "a1")[0];
        let (closed, why) = hub_close(&w, conn).expect("the hub closed the link");
        assert_eq!(why, CloseReason::Timeout("ping"));
        assert!(closed - t0 <= SECS(10), "closed after {:?}", closed - t0);
        // ...although the agent kept talking right up to the close: progress every second
        // and its own pings, which the hub answered, so the agent saw nothing wrong.
        let progress_after = w
            .events
            .iter()
            .filter(|(t, e)| {
                *t > t0 && *t < closed && matches!(e, HubEvent::CommandProgress { command_id, .. } if *command_id == id)
            })
            .count();
        assert!(
            progress_after as u128 + 2 >= (closed - t0).as_secs() as u128,
            "{progress_after} progress reports in {:?}",
            closed - t0
        );
        // The command fails, durably, and the operator hears it.
        assert_eq!(ans.status, Status::Failed);
        assert!(ans.output.contains("ping"), "{}", ans.output);
        assert_eq!(w.store.commands[&id].status, CommandStatus::Failed);
        // Still deaf: every new link is closed the same way, and the reconnects back off.
        w.run_for(SECS(60));
        for (_, why) in &w.agent(a).stats.closes {
            assert!(
                matches!(why, CloseReason::Bye(r) if r.contains("connection ended")),
                "the agent's own keepalive was happy, it saw the hub close: {why:?}"
            );
        }
        let links = links_of(&w, "a1");
        assert!(links.len() >= 2, "it kept reconnecting: {links:?}");
        for (up, conn) in &links {
            match hub_close(&w, *conn) {
                Some((t, why)) => {
                    assert_eq!(why, CloseReason::Timeout("ping"));
                    assert!(t - *up <= SECS(10), "link {conn:?} lived {:?}", t - *up);
                }
                None => assert!(w.now() - *up <= SECS(10), "link {conn:?} still up"),
            }
        }
        assert!(
            w.agent(a).stats.attempts.len() <= 7,
            "{:?}",
            w.agent(a).stats.attempts
        );
        // Cured: it comes back and stays.
        w.agent_mut(a).mode = AgentMode::Normal;
        let back = w.run_until_cond(SECS(90), |w| w.agent(a).is_connected());
        assert!(back, "it came back");
        let n = links_of(&w, "a1").len();
        w.run_for(SECS(60));
        assert_eq!(links_of(&w, "a1").len(), n, "the cured link stays up");
        let id = w.start_command(op, "a1", "echo.Echo", json!({"[args]": ["ok"]}));
        assert_eq!(w.wait_answer(op, id, SECS(10)).output, "ok");
        w.assert_invariants();
    }
);

scenario!(
    two_agents_with_one_id_take_turns_without_a_hot_loop,
    8,
    |seed| {
        // A misconfiguration: two hosts enrolled with the same id and secret. The newest
        // connection wins, so each replaces the other; the backoff must keep this slow.
        let mut w = World::quick(seed, NetConfig::default());
        w.register_agent("twin", "pw", &[]);
        let a = w.spawn_agent("twin", "pw", Some("twin"));
        let b = w.spawn_agent("twin", "pw", Some("twin"));
        let op = w.connected_operator();
        let mut ids = vec![];
        for _ in 0..30 {
            w.run_for(SECS(10));
            if w.hub_connected().contains("twin") {
                ids.push(w.start_command(op, "twin", "echo.Echo", json!({"[args]": ["t"]})));
            }
        }
        w.run_for(SECS(10));
        let replaced = w
            .hub_closes
            .iter()
            .filter(|(_, _, r)| *r == CloseReason::Replaced)
            .count();
        assert!(replaced >= 2, "they did fight: {replaced} replacements");
        for n in [a, b] {
            let st = &w.agent(n).stats;
            // 310 s: with delays growing to a minute, a few dozen attempts at most.
            assert!(st.attempts.len() <= 30, "node {n}: {:?}", st.attempts);
            for (i, gap) in st.attempts.windows(2).enumerate() {
                assert!(
                    gap[1] - gap[0] >= Duration::from_millis(500),
                    "node {n}: attempt {} came {:?} after the one before",
                    i + 1,
                    gap[1] - gap[0]
                );
            }
        }
        // Every command ended exactly once, successfully or lost with the replaced link.
        assert!(!ids.is_empty());
        for id in &ids {
            let answers = w.operator(op).answers(*id);
            assert_eq!(answers.len(), 1, "command {id}: {answers:?}");
            let a = &answers[0];
            assert!(
                a.status == Status::Success
                    || (a.status == Status::Failed && a.output.contains("replaced")),
                "command {id}: {a:?}"
            );
        }
        w.assert_invariants();
    }
);
