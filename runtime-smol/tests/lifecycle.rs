//! Lifecycles over real sockets: hub restarts (state survives, agents come back by themselves),
//! replaced connections, agents that vanish mid-command, cancellation of a real process.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{Pki, Rig, connected, echo, wait_result};
use switchboard_core::hub::{CommandStatus, HubEvent};
use switchboard_proto as pb;
use switchboard_proto::command_result::Status;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::agent::AgentStatus;
use switchboard_runtime_smol::client::AdminClient;
use switchboard_runtime_smol::store::SqliteStore;

async fn start_command(
    admin: &mut AdminClient,
    agent: &str,
    op: &str,
    args: serde_json::Value,
) -> i64 {
    let rid = admin.request_id();
    let req = pb::RunCommandRequest {
        request_id: rid,
        agent_id: agent.into(),
        operation: op.into(),
        data: args.to_string(),
    };
    match admin
        .call(rid, Body::RunCommandRequest(req), Duration::from_secs(10))
        .await
        .expect("run")
    {
        Body::RunCommandResponse(r) => r.command_id,
        other => panic!("refused: {other:?}"),
    }
}

#[test]
fn state_survives_a_restart_and_agents_come_back_by_themselves() {
    smol::block_on(async {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("hub.sqlite");
        let pki = Pki::new();
        let saved = (
            pki.ca.cert_pem().to_string(),
            pki.ca.key_pem(),
            pki.hub.clone(),
            pki.admin.clone(),
        );
        let rig = Rig::start_on(pki, db.clone()).await;
        let addr = rig.addr;
        let mut admin = rig.admin().await;
        let (cert, secret) = rig.register(&mut admin, "steady").await;
        let (_stop, status) = rig.spawn_agent("steady", &cert, &secret);
        connected(&status).await;
        echo(&mut admin, "steady", "before the restart").await;
        drop(admin);
        rig.stop().await;
        let first = SqliteStore::open(&db)
            .expect("store")
            .list_commands(10)
            .expect("log");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].status, CommandStatus::Success);

        // The agent notices and backs off; a new hub on the same database and port.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if let Ok(AgentStatus::Disconnected { .. }) = status.try_recv() {
                break;
            }
            async_io::Timer::after(Duration::from_millis(50)).await;
        }
        let pki = Pki {
            ca: switchboard_runtime_smol::pki::Ca::load(&saved.0, &saved.1).expect("ca"),
            hub: saved.2,
            admin: saved.3,
        };
        let rig = rebind(pki, db.clone(), addr).await;
        connected(&status).await;
        let mut admin = rig.admin().await;
        echo(&mut admin, "steady", "after the restart").await;
        let log = SqliteStore::open(&db)
            .expect("store")
            .list_commands(10)
            .expect("log");
        assert_eq!(log.len(), 2);
        assert!(
            log[0].command_id > first[0].command_id,
            "ids continue after the old ones"
        );
        rig.stop().await;
    });
}

/// A hub on a given address (the agents' configured manager), retrying while the port frees.
async fn rebind(pki: Pki, db: std::path::PathBuf, addr: std::net::SocketAddr) -> Rig {
    for _ in 0..50 {
        if std::net::TcpListener::bind(addr).is_ok() {
            break;
        }
        async_io::Timer::after(Duration::from_millis(100)).await;
    }
    let tls = switchboard_runtime_smol::tls::server_config(
        pki.ca.cert_pem().as_bytes(),
        pki.hub.cert_pem.as_bytes(),
        pki.hub.key_pem.as_bytes(),
    )
    .expect("tls");
    let mut opts = switchboard_runtime_smol::server::ServerOptions::new(tls, 3);
    opts.hub.link = common::link();
    let listener = async_net::TcpListener::bind(addr)
        .await
        .expect("rebind the same port");
    let (tx, events) = async_channel::bounded(10_000);
    let store = SqliteStore::open(&db).expect("store");
    let server =
        switchboard_runtime_smol::server::HubServer::start(opts, store, listener, Some(tx))
            .expect("start");
    Rig {
        addr,
        pki,
        events,
        server: Some(server),
        db,
        _dir: None,
    }
}

#[test]
fn a_second_connection_replaces_the_first() {
    smol::block_on(async {
        let rig = Rig::start().await;
        let mut admin = rig.admin().await;
        let (cert, secret) = rig.register(&mut admin, "twin").await;
        let (_a, first) = rig.spawn_agent("twin", &cert, &secret);
        connected(&first).await;
        let (_b, second) = rig.spawn_agent("twin", &cert, &secret);
        connected(&second).await;
        rig.event("replaced", |e| {
            matches!(
                e,
                HubEvent::ConnectionFailed { .. } | HubEvent::AgentDisconnected { .. }
            )
        })
        .await;
        echo(&mut admin, "twin", "the newest connection answers").await;
        rig.stop().await;
    });
}

#[test]
fn an_agent_that_vanishes_mid_command_is_reported_failed() {
    smol::block_on(async {
        let rig = Rig::start().await;
        let mut admin = rig.admin().await;
        let (cert, secret) = rig.register(&mut admin, "flaky").await;
        let (stop, status) = rig.spawn_agent("flaky", &cert, &secret);
        connected(&status).await;
        let id = start_command(
            &mut admin,
            "flaky",
            "command.Run",
            serde_json::json!({"[args]": ["sleep 30"]}),
        )
        .await;
        rig.event(
            "started",
            |e| matches!(e, HubEvent::CommandStarted { command_id, .. } if *command_id == id),
        )
        .await;
        stop.close(); // the agent goes away (Bye) with its command running
        let r = wait_result(&mut admin, id).await;
        assert_eq!(r.status, Status::Failed as i32);
        assert!(r.output.contains("agent disconnected"), "{r:?}");
        rig.stop().await;
    });
}

#[test]
fn cancel_kills_the_process_and_answers_done() {
    smol::block_on(async {
        let rig = Rig::start().await;
        let mut admin = rig.admin().await;
        let (cert, secret) = rig.register(&mut admin, "worker").await;
        let (_stop, status) = rig.spawn_agent("worker", &cert, &secret);
        connected(&status).await;
        // A sleep whose command line is unique to this test run (POSIX sh has no `exec -a`).
        let marker = format!("sleep 31.{}", std::process::id());
        let script = format!("echo started; {marker}");
        let id = start_command(
            &mut admin,
            "worker",
            "command.Run",
            serde_json::json!({"[args]": [script]}),
        )
        .await;
        // Wait for its first output line, then cancel.
        loop {
            match admin.next_message().await.expect("session") {
                Body::Progress(p) if p.command_id == id && p.message.contains("started") => break,
                _ => {}
            }
        }
        admin
            .send(Body::Cancel(pb::CommandCancel { command_id: id }))
            .await
            .expect("cancel");
        let done = wait_result(&mut admin, id).await;
        assert_eq!(done.status, Status::Cancelled as i32, "{done:?}");
        assert!(done.output.contains("started"), "output so far: {done:?}");
        let ps = std::process::Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .expect("pgrep");
        assert!(
            ps.stdout.is_empty(),
            "the process survived its cancel: {}",
            String::from_utf8_lossy(&ps.stdout)
        );
        rig.stop().await;
    });
}
