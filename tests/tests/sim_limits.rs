//! Frame limits under the deterministic simulator: whatever an operator asks for, the hub never
//! writes a frame its peer must refuse as too long. Seeds as in `sim_link` (`SIM_SEEDS=N`,
//! `SIM_SEED=x`); a failure prints the replay command.

use std::time::Duration;

use serde_json::json;
use switchboard_core::hub::HubConfig;
use switchboard_core::link::{frame, msg};
use switchboard_proto as pb;
use switchboard_proto::command_result::Status;
use switchboard_proto::control_error::Code;
use switchboard_proto::message::Message as Body;
use switchboard_tests::scenario;
use switchboard_tests::sim::{NetConfig, World};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A world whose frames are capped at 4 KiB (every machine, both ends), so that listings
/// outgrow a frame with a few dozen entries.
fn small_frames(seed: u64) -> World {
    let mut cfg = HubConfig {
        link: switchboard_tests::sim::short_timers(),
        ..HubConfig::default()
    };
    cfg.link.max_frame = 4096;
    World::new(seed, cfg, NetConfig::default())
}

/// The body length of `body` framed as a `Message`.
fn body_len(body: &Body) -> usize {
    frame::encode(&msg::wrap(body.clone())).len() - 4
}

scenario!(
    a_command_too_large_for_the_agents_frame_is_refused_not_sent,
    8,
    |seed| {
        let mut w = World::quick(seed, NetConfig::with_loss(0.01));
        let a = w.connected_agent("a");
        let op = w.connected_operator();
        let running = w.start_command(op, "a", "sim.Sleep", json!({"seconds": 10}));
        let max = w.hub_cfg.link.max_frame;
        // Requests as large as a frame allows. The Command built from each is larger: the
        // hub sends "{}" for an empty data, and a command id takes more bytes than a request
        // id of 0 and a one-letter agent id.
        let by_operation = |n: usize| {
            Body::RunCommandRequest(pb::RunCommandRequest {
                request_id: 0,
                agent_id: "a".into(),
                operation: "x".repeat(n),
                data: String::new(),
            })
        };
        let by_data = |n: usize| {
            Body::RunCommandRequest(pb::RunCommandRequest {
                request_id: 0,
                agent_id: "a".into(),
                operation: "echo.Echo".into(),
                data: json!({ "[args]": ["y".repeat(n)] }).to_string(),
            })
        };
        for (case, make) in [by_operation, by_data].iter().enumerate() {
            let n = (0..max)
                .rev()
                .find(|n| body_len(&make(*n)) <= max)
                .expect("size");
            let req = make(n);
            assert_eq!(
                body_len(&req),
                max,
                "case {case}: a request of exactly a frame"
            );
            let before = w.operator(op).inbox.len();
            w.operator_send(op, req).expect("sent");
            let answered = w.run_until_cond(SECS(5), |w| {
                w.operator(op).inbox[before..]
                    .iter()
                    .any(|(_, m)| matches!(m, Body::ControlError(_) | Body::RunCommandResponse(_)))
            });
            assert!(answered, "case {case}: the request was answered");
            w.run_for(SECS(1));
            // Either refused up front, or sent as a frame the agent accepts: never a frame
            // that makes the agent drop its link (and every command running on it).
            assert_eq!(
                w.agent(a).stats.closes,
                vec![],
                "case {case}: the agent's link was dropped"
            );
            let reply = w.operator(op).inbox[before..]
                .iter()
                .find_map(|(_, m)| match m {
                    Body::ControlError(e) => Some(Ok(e.clone())),
                    Body::RunCommandResponse(r) => Some(Err(r.command_id)),
                    _ => None,
                })
                .expect("answered");
            match reply {
                Ok(e) => {
                    assert_eq!(e.code, Code::Invalid as i32, "case {case}: {e:?}");
                    assert!(e.message.contains("frame"), "case {case}: {e:?}");
                }
                Err(id) => {
                    let ans = w.wait_answer(op, id, SECS(10));
                    assert!(ans.status != Status::Unspecified, "case {case}: {ans:?}");
                }
            }
        }
        let ans = w.wait_answer(op, running, SECS(15));
        assert_eq!(
            ans.status,
            Status::Success,
            "the running command was not disturbed"
        );
        assert_eq!(w.agent(a).stats.connects.len(), 1);
        w.assert_invariants();
    }
);

scenario!(listing_agents_pages_within_a_frame, 8, |seed| {
    let mut w = small_frames(seed);
    let op = w.connected_operator();
    // 40 agents with long ids and a few IPv6 networks each: a page of them all is larger
    // than a frame.
    let nets: Vec<String> = (0..3)
        .map(|i| format!("2001:db8:ffff:ffff:ffff:ffff:ffff:ff{i:02x}/128"))
        .collect();
    let nets: Vec<&str> = nets.iter().map(String::as_str).collect();
    let ids: Vec<String> = (0..40)
        .map(|i| format!("{i:03}{}", "a".repeat(97)))
        .collect();
    for id in &ids {
        let rid = w.register_agent_request(op, id, "pw", &nets);
        let ok = w.run_until_cond(SECS(5), |w| w.operator(op).response(rid).is_some());
        assert!(
            ok && matches!(
                w.operator(op).response(rid),
                Some(Body::RegisterAgentResponse(_))
            ),
            "{:?}",
            w.operator(op).response(rid)
        );
    }
    let mut listed = vec![];
    let mut after = String::new();
    for page in 0..200 {
        let before = w.operator(op).inbox.len();
        let req = pb::ListAgentsRequest {
            request_id: 10_000 + page,
            after: after.clone(),
            limit: 0,
        };
        w.operator_send(op, Body::ListAgentsRequest(req))
            .expect("the session is open");
        let got = w.run_until_cond(SECS(5), |w| {
            w.operator(op).inbox.len() > before || w.operator(op).closed.is_some()
        });
        assert!(
            got && w.operator(op).closed.is_none(),
            "page {page}: the session ended: {:?}",
            w.operator(op).closed
        );
        let Some(Body::ListAgentsResponse(r)) = w.operator(op).response(10_000 + page).cloned()
        else {
            panic!("page {page}: {:?}", w.operator(op).inbox.last());
        };
        listed.extend(r.agents.iter().map(|a| a.agent_id.clone()));
        match (r.more, r.agents.last()) {
            (true, Some(last)) => after = last.agent_id.clone(),
            (true, None) => panic!("page {page}: more, but an empty page"),
            (false, _) => break,
        }
    }
    assert_eq!(listed, ids, "every agent listed once, in order");
    // An agent whose listing alone could not fit in a frame is refused at registration.
    let hash = switchboard_tests::sim::cheap_hash("pw");
    let all: Vec<String> = (0..1024).map(|i| format!("2001:db8::{i:x}/128")).collect();
    let request = |n: usize| {
        Body::RegisterAgentRequest(pb::RegisterAgentRequest {
            request_id: 99_999,
            agent_id: "crowded".into(),
            secret_hash: hash.clone(),
            allowed_networks: all[..n].to_vec(),
        })
    };
    // As many networks as fit in the request frame, less a few bytes.
    let max = w.hub_cfg.link.max_frame;
    let counts: Vec<usize> = (0..all.len()).collect();
    let n = counts.partition_point(|&k| body_len(&request(k)) + 40 <= max);
    assert!(n < all.len());
    w.operator_send(op, request(n)).expect("sent");
    w.run_until_cond(SECS(5), |w| w.operator(op).response(99_999).is_some());
    match w.operator(op).response(99_999) {
        Some(Body::ControlError(e)) => {
            assert_eq!(e.code, Code::Invalid as i32, "{e:?}");
            assert!(e.message.contains("allowed networks"), "{e:?}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(w.operator(op).is_open());
    assert!(!w.store.has_agent("crowded"));
});

scenario!(listing_channels_pages_within_a_frame, 8, |seed| {
    let mut w = small_frames(seed);
    let op = w.connected_operator();
    // 60 channels of 80 members each: a page of them all is larger than a frame.
    let send = |w: &mut World, body| w.operator_send(op, body).expect("sent");
    for i in 0..80u64 {
        let name = format!("u{i}");
        let req = pb::RegisterUserRequest {
            request_id: 1_000 + i,
            name,
            permissions: 0,
        };
        send(&mut w, Body::RegisterUserRequest(req));
        if i < 60 {
            let req = pb::CreateChannelRequest {
                request_id: 5_000 + i,
            };
            send(&mut w, Body::CreateChannelRequest(req));
        }
    }
    w.run_for(SECS(2));
    let uids: Vec<u64> = (0..80)
        .map(|i| match w.operator(op).response(1_000 + i) {
            Some(Body::RegisterUserResponse(r)) => r.uid,
            other => panic!("user {i}: {other:?}"),
        })
        .collect();
    let chids: Vec<u64> = (0..60)
        .map(|i| match w.operator(op).response(5_000 + i) {
            Some(Body::CreateChannelResponse(r)) => r.chid,
            other => panic!("channel {i}: {other:?}"),
        })
        .collect();
    for chid in &chids {
        for uid in &uids {
            let req = pb::JoinChannelRequest {
                request_id: 0,
                uid: *uid,
                chid: *chid,
            };
            send(&mut w, Body::JoinChannelRequest(req));
        }
        w.run_for(Duration::from_millis(200));
    }
    w.run_for(SECS(2));
    let mut listed = vec![];
    let mut after = 0;
    for page in 0..200 {
        let rid = 10_000 + page;
        let req = pb::ListChannelsRequest {
            request_id: rid,
            after_chid: after,
        };
        send(&mut w, Body::ListChannelsRequest(req));
        w.run_until_cond(SECS(5), |w| {
            w.operator(op).response(rid).is_some() || w.operator(op).closed.is_some()
        });
        assert!(
            w.operator(op).closed.is_none(),
            "page {page}: the session ended: {:?}",
            w.operator(op).closed
        );
        let Some(Body::ListChannelsResponse(r)) = w.operator(op).response(rid).cloned() else {
            panic!("page {page}: {:?}", w.operator(op).response(rid));
        };
        for c in &r.channels {
            assert_eq!(c.members, uids, "channel {}", c.chid);
        }
        listed.extend(r.channels.iter().map(|c| c.chid));
        match (r.more, r.channels.last()) {
            (true, Some(last)) => after = last.chid,
            (true, None) => panic!("page {page}: more, but an empty page"),
            (false, _) => break,
        }
    }
    assert_eq!(listed, chids, "every channel listed once, in order");
    w.assert_invariants();
});
