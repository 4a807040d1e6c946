//! `switchboard demo`: a hub and three agents on loopback, in one process, with real TLS and
//! a real (temporary) data dir. Runs commands, follows their progress, cancels one mid-way,
//! and prints a summary. Exit 0 only when everything behaved.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use switchboard_core::hub::HubEvent;
use switchboard_core::link::{AgentConfig, Backoff, LinkConfig};
use switchboard_proto as pb;
use switchboard_proto::command_result::Status;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::agent::{AgentOptions, run_agent};
use switchboard_runtime_smol::client::{AdminClient, seed};
use switchboard_runtime_smol::server::{HubServer, ServerOptions};
use switchboard_runtime_smol::tls;

use crate::admin::{check, enroll_agent};
use crate::datadir::DataDir;

/// Arguments of `demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Keep the temporary data dir instead of deleting it.
    #[arg(long)]
    keep: bool,
}

/// Member expiry of the demo's relay (60 s in production, shortened to show it).
const VOICE_EXPIRY: Duration = Duration::from_secs(2);

/// What the demo expects of one command.
struct Expect {
    label: String,
    agent: String,
    status: Status,
    output_contains: String,
    done: bool,
}

/// What came back for one command.
#[derive(Default)]
struct Seen {
    progress: Vec<String>,
    status: Option<Status>,
    output: String,
    done: bool,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> io::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("switchboard-demo-{}", std::process::id()));
    let result = smol::block_on(demo(&dir));
    if args.keep {
        println!("data dir kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn demo(dir: &std::path::Path) -> io::Result<ExitCode> {
    let started = Instant::now();
    let (data, _) = DataDir::ensure(&dir.join("hub"))?;
    let mut opts = ServerOptions::new(data.server_tls()?, seed());
    opts.hub.link.ping_interval = Duration::from_secs(2);
    let listener = async_net::TcpListener::bind("127.0.0.1:0").await?;
    let (events_tx, events_rx) = async_channel::bounded::<HubEvent>(10_000);
    // A voice relay in this process, with a short member expiry so the demo can show it.
    let first_port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    opts.hub.relay_ports = (first_port, 1);
    let relay_cfg = switchboard_runtime_mio::RelayServerConfig {
        bind_ip: [127, 0, 0, 1].into(),
        relay: switchboard_core::relay::RelayConfig {
            member_expiry: VOICE_EXPIRY,
            sweep_interval: Duration::from_millis(250),
            ..switchboard_core::relay::RelayConfig::default()
        },
        ..switchboard_runtime_mio::RelayServerConfig::default()
    };
    let (relay, relay_handle) = crate::relay_cmd::local_with(relay_cfg)?;
    let listeners = switchboard_runtime_smol::server::Listeners {
        native: listener,
        kv: None,
        web: None,
    };
    let server =
        HubServer::start_with(opts, data.store()?, listeners, Some(relay), Some(events_tx))?;
    let addr = server.local_addr.to_string();
    println!(
        "hub listening on {addr} (mutual TLS, data dir {})",
        dir.display()
    );

    let mut admin = AdminClient::connect(&addr, "localhost", data.admin_tls()?).await?;
    println!("operator session open as {:?}", admin.user);

    // Three agents, enrolled like `switchboard admin enroll-agent` does, then started.
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let names = ["alpha", "bravo", "charlie"];
    let mut agent_tasks = Vec::new();
    for name in names {
        let creds: PathBuf = dir.join(name);
        enroll_agent(
            &mut admin,
            &data,
            name,
            &creds,
            vec!["127.0.0.0/8".into(), "::1/128".into()],
            30,
        )
        .await?;
        let read = |f: &str| std::fs::read(creds.join(f));
        let tls = tls::client_config(&read("ca.pem")?, &read("agent.pem")?, &read("agent.key")?)
            .map_err(io::Error::other)?;
        let secret = String::from_utf8_lossy(&read("secret")?).trim().to_string();
        let link = LinkConfig {
            ping_interval: Duration::from_secs(2),
            ..LinkConfig::default()
        };
        let opts = AgentOptions {
            manager: addr.clone(),
            server_name: "localhost".into(),
            tls,
            agent: AgentConfig {
                agent_id: name.into(),
                secret,
                link,
            },
            backoff: Backoff::default(),
            seed: seed(),
            connect_timeout: Duration::from_secs(5),
            renewal: None,
            streams: Some(Default::default()),
        };
        agent_tasks.push(smol::spawn(run_agent(opts, stop_rx.clone(), None)));
    }
    let mut connected = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while connected.len() < names.len() {
        let ev = futures_lite::future::or(async { events_rx.recv().await.ok() }, async {
            async_io::Timer::at(deadline).await;
            None
        })
        .await;
        match ev {
            Some(HubEvent::AgentConnected { agent_id, addr, .. }) => {
                println!("agent {agent_id} connected from {addr}");
                connected.insert(agent_id);
            }
            Some(_) => {}
            None => {
                return Err(io::Error::other(format!(
                    "only {} of 3 agents connected in time",
                    connected.len()
                )));
            }
        }
    }

    // A value for data.Show.
    let rid = admin.request_id();
    let req = pb::SetAgentDataRequest {
        request_id: rid,
        agent_id: "alpha".into(),
        name: "greeting".into(),
        value_json: "\"hello from the hub's data\"".into(),
    };
    check(
        admin
            .call(rid, Body::SetAgentDataRequest(req), Duration::from_secs(10))
            .await?,
    )?;

    // The commands.
    let mut expects: BTreeMap<i64, Expect> = BTreeMap::new();
    let plan: Vec<(&str, &str, &str, serde_json::Value, Status, &str)> = vec![
        (
            "echo",
            "alpha",
            "echo.Echo",
            serde_json::json!({"[args]": ["hello alpha"]}),
            Status::Success,
            "hello alpha",
        ),
        (
            "echo",
            "bravo",
            "echo.Echo",
            serde_json::json!({"message": "hello bravo", "reverse": true}),
            Status::Success,
            "ovarb olleh",
        ),
        (
            "echo",
            "charlie",
            "echo.Echo",
            serde_json::json!({"[args]": ["hello charlie"]}),
            Status::Success,
            "hello charlie",
        ),
        (
            "run with progress",
            "bravo",
            "command.Run",
            serde_json::json!({"[args]": ["for i in 1 2 3; do echo step $i; sleep 0.2; done"]}),
            Status::Success,
            "step 3",
        ),
        (
            "data request",
            "alpha",
            "data.Show",
            serde_json::json!({"[args]": ["greeting"]}),
            Status::Success,
            "hello from the hub's data",
        ),
        (
            "failing command",
            "charlie",
            "command.Run",
            serde_json::json!({"[args]": ["exit 3"]}),
            Status::Failed,
            "return code 3",
        ),
    ];
    for (label, agent, op, args, status, contains) in plan {
        let id = start_command(&mut admin, agent, op, &args).await?;
        expects.insert(
            id,
            Expect {
                label: label.into(),
                agent: agent.into(),
                status,
                output_contains: contains.into(),
                done: false,
            },
        );
    }
    let long = start_command(
        &mut admin,
        "charlie",
        "command.Run",
        &serde_json::json!({"[args]": ["echo started; sleep 30"]}),
    )
    .await?;
    expects.insert(
        long,
        Expect {
            label: "cancelled mid-way".into(),
            agent: "charlie".into(),
            status: Status::Cancelled,
            output_contains: "started".into(),
            done: true,
        },
    );

    // Follow everything; cancel the long one once it has reported its first output line.
    let mut seen: BTreeMap<i64, Seen> = BTreeMap::new();
    let mut cancel_sent = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.values().filter(|s| s.status.is_some()).count() < expects.len() {
        let m = futures_lite::future::or(async { Some(admin.next_message().await) }, async {
            async_io::Timer::at(deadline).await;
            None
        })
        .await;
        let Some(m) = m else { break };
        match m? {
            Body::Progress(p) => {
                let s = seen.entry(p.command_id).or_default();
                s.progress.push(p.message.clone());
                if p.command_id == long && !cancel_sent && p.message.contains("started") {
                    println!("command {long}: cancelling after its first output line");
                    admin
                        .send(Body::Cancel(pb::CommandCancel { command_id: long }))
                        .await?;
                    cancel_sent = true;
                }
            }
            Body::Result(r) => {
                let s = seen.entry(r.command_id).or_default();
                s.status = Status::try_from(r.status).ok();
                s.output = r.output;
            }
            Body::Done(d) => {
                let s = seen.entry(d.command_id).or_default();
                s.status = Status::try_from(d.status).ok();
                s.output = d.output;
                s.done = true;
            }
            other => println!("hub: {other:?}"),
        }
    }

    // Summary.
    println!();
    println!(
        "{:<6} {:<8} {:<18} {:>8}  {:<10} {:<4} result",
        "id", "agent", "what", "progress", "status", "ok"
    );
    let mut all_ok = true;
    for (id, e) in &expects {
        let s = seen.remove(id).unwrap_or_default();
        let ok =
            s.status == Some(e.status) && s.output.contains(&e.output_contains) && s.done == e.done;
        all_ok &= ok;
        let status = s.status.map(|x| x.as_str_name()).unwrap_or("NONE");
        let last = s
            .output
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        println!(
            "{:<6} {:<8} {:<18} {:>8}  {:<10} {:<4} {}",
            id,
            e.agent,
            e.label,
            s.progress.len(),
            status,
            if ok { "yes" } else { "NO" },
            last
        );
    }
    println!();

    // The voice channel.
    let voice_ok = match crate::demo_voice::run(&mut admin, &events_rx, VOICE_EXPIRY).await {
        Ok(ok) => ok,
        Err(e) => {
            println!("voice channel: {e}");
            false
        }
    };
    all_ok &= voice_ok;
    relay_handle.shutdown();

    stop_tx.close();
    for t in agent_tasks {
        t.await;
    }
    let _ = admin.close().await;
    server.run_until(async {}).await?;
    let store = data.store()?;
    let logged = store.list_commands(100).map_err(io::Error::other)?;
    let persisted = logged
        .iter()
        .filter(|c| expects.contains_key(&c.command_id) && c.status.as_str() != "pending")
        .count();
    println!(
        "command log: {persisted} of {} commands persisted with their final status",
        expects.len()
    );
    all_ok &= persisted == expects.len();
    println!(
        "demo took {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        if all_ok {
            "everything behaved"
        } else {
            "SOMETHING WENT WRONG"
        }
    );
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn start_command(
    admin: &mut AdminClient,
    agent: &str,
    op: &str,
    args: &serde_json::Value,
) -> io::Result<i64> {
    let rid = admin.request_id();
    let req = pb::RunCommandRequest {
        request_id: rid,
        agent_id: agent.into(),
        operation: op.into(),
        data: args.to_string(),
    };
    match check(
        admin
            .call(rid, Body::RunCommandRequest(req), Duration::from_secs(10))
            .await?,
    )? {
        Body::RunCommandResponse(r) => {
            println!("command {}: {op} on {agent}", r.command_id);
            Ok(r.command_id)
        }
        other => Err(io::Error::other(format!("unexpected answer {other:?}"))),
    }
}
