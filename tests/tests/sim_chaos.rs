//! Random workloads under random faults: operations of every kind while links are cut, peers
//! freeze, crash or misbehave and the hub restarts. Whatever happened, once the faults stop:
//! every agent is back, no command is left pending, every command got at most one answer and
//! it matches the log. Seeds as in `sim_link` (`SIM_SEEDS=N`, `SIM_SEED=x`).

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use switchboard_core::hub::CommandStatus;
use switchboard_proto::command_result::Status;
use switchboard_tests::scenario;
use switchboard_tests::sim::{AgentMode, NetConfig, NodeId, World};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const AGENTS: usize = 8;

fn wire(s: CommandStatus) -> Status {
    match s {
        CommandStatus::Success => Status::Success,
        CommandStatus::Cancelled => Status::Cancelled,
        CommandStatus::Failed | CommandStatus::Pending => Status::Failed,
    }
}

scenario!(random_faults_never_lose_or_duplicate_an_answer, 6, |seed| {
    let mut w = World::quick(seed, NetConfig::hostile(0.03));
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc4a05);
    let names: Vec<String> = (0..AGENTS).map(|i| format!("c{i}")).collect();
    let agents: Vec<NodeId> = names.iter().map(|n| w.connected_agent(n)).collect();
    for n in &names {
        let op = w.connected_operator();
        w.set_agent_data(op, n, "v", &format!("{{\"of\": \"{n}\"}}"));
    }
    let mut ops: Vec<NodeId> = vec![w.connected_operator()];
    // (operator, request id) of every RunCommandRequest.
    let mut sent: Vec<(NodeId, u64)> = vec![];
    let mut down: BTreeMap<NodeId, &str> = BTreeMap::new();
    for _round in 0..150 {
        let op = *ops.last().expect("an operator");
        let who = rng.gen_range(0..AGENTS);
        match rng.gen_range(0..100) {
            0..=39 if w.operator(op).is_open() => {
                let (operation, data) = match rng.gen_range(0..4) {
                    0 => ("echo.Echo", json!({"[args]": ["e"]})),
                    1 => ("sim.Sleep", json!({"seconds": rng.gen_range(1..30)})),
                    2 => ("data.Show", json!({"[args]": ["v"]})),
                    _ => ("data.Show", json!({"[args]": ["missing"]})),
                };
                sent.push((op, w.run_command(op, &names[who], operation, data)));
            }
            40..=49 if w.operator(op).is_open() => {
                let ids: Vec<i64> = sent
                    .iter()
                    .filter(|(o, _)| *o == op)
                    .filter_map(|(o, r)| w.operator(*o).command_id(*r))
                    .collect();
                // One of the newest: those may still run.
                if !ids.is_empty() {
                    let from = ids.len().saturating_sub(3);
                    let id = ids[rng.gen_range(from..ids.len())];
                    w.cancel(op, id);
                }
            }
            50..=57 => {
                if down.remove(&agents[who]).is_some() {
                    w.heal(agents[who]);
                    w.thaw(agents[who]);
                    w.agent_mut(agents[who]).mode = AgentMode::Normal;
                } else {
                    match rng.gen_range(0..4) {
                        0 => w.partition(agents[who]),
                        1 => w.freeze(agents[who]),
                        2 => w.agent_mut(agents[who]).mode = AgentMode::IgnorePongs,
                        _ => w.agent_mut(agents[who]).mode = AgentMode::Mute,
                    }
                    down.insert(agents[who], "fault");
                }
            }
            58..=60 if !down.contains_key(&agents[who]) => {
                if rng.gen_bool(0.5) {
                    w.crash(agents[who]);
                } else {
                    w.kill(agents[who]);
                }
                w.revive(agents[who], SECS(rng.gen_range(0..5)));
            }
            61 => {
                w.restart_hub();
                ops.push(w.spawn_operator_as(Some("admin")));
            }
            62..=64 => {
                let bad = NetConfig::hostile(rng.gen_range(0.0..0.3));
                w.set_node_net(agents[who], Some(bad));
            }
            _ => {}
        }
        let pause = Duration::from_millis(rng.gen_range(0..3000));
        w.run_for(pause);
    }
    // The faults stop.
    for a in &agents {
        w.heal(*a);
        w.thaw(*a);
        w.set_node_net(*a, None);
        w.agent_mut(*a).mode = AgentMode::Normal;
    }
    let back = w.run_until_cond(SECS(180), |w| w.hub_connected().len() == AGENTS);
    assert!(back, "agents back: {:?}", w.hub_connected());
    w.run_for(SECS(60));
    w.assert_invariants();
    let pending: Vec<i64> = w
        .store
        .commands
        .values()
        .filter(|c| c.status == CommandStatus::Pending)
        .map(|c| c.command_id)
        .collect();
    assert!(pending.is_empty(), "commands left pending: {pending:?}");
    let mut answered = 0;
    for (op, rid) in &sent {
        let Some(id) = w.operator(*op).command_id(*rid) else {
            continue; // refused (agent not connected) or lost with its session
        };
        let answers = w.operator(*op).answers(id);
        assert!(answers.len() <= 1, "command {id}: {answers:?}");
        if let Some(a) = answers.first() {
            answered += 1;
            let rec = &w.store.commands[&id];
            assert_eq!(
                (a.status, &a.output),
                (wire(rec.status), &rec.output),
                "command {id}"
            );
        }
    }
    assert!(answered > 10, "the run did some work: {answered} answers");
});
