//! `switchboard loadgen agents`: N real agents over TLS on loopback against a hub running as a
//! child process (so its memory is its own), held with keepalives, then a command broadcast
//! to all of them with completion percentiles; `loadgen relay`: the UDP relay against a naive
//! one; `loadgen streams`: one stream source fanned out to N sinks through the hub.

mod streams;

use std::io;
use std::process::{Child, ExitCode};
use std::time::{Duration, Instant};

use switchboard_core::link::{AgentConfig, Backoff, LinkConfig};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::agent::{AgentOptions, AgentStatus, run_agent};
use switchboard_runtime_smol::client::{AdminClient, seed};
use switchboard_runtime_smol::{secret, tls};

use crate::datadir::DataDir;

/// Arguments of `loadgen`.
#[derive(clap::Args)]
pub struct LoadgenArgs {
    #[command(subcommand)]
    what: Workload,
}

#[derive(clap::Subcommand)]
enum Workload {
    /// Connect N agents, hold them with pings, broadcast a command, report percentiles and
    /// hub memory.
    Agents {
        /// Number of agents.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Ping interval of the hub and the agents, seconds.
        #[arg(long, default_value_t = 5)]
        ping_interval: u64,
        /// Seconds to hold all agents connected (with keepalives) before the broadcast.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// TLS handshakes in flight at once while connecting.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
    },
    /// Relay CPU per output packet on loopback: the Switchboard mio relay against a naive
    /// std::net recv/send relay, in the same run, alternating windows (see BENCHMARKS.md).
    Relay {
        /// Compare against the naive relay (the only mode).
        #[arg(long)]
        compare_naive: bool,
        /// Seconds per case (all rounds of both relays).
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// Alternating rounds per case (at least 3).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Fan-outs to run.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        fanouts: Vec<usize>,
        /// Workloads: burst, voice.
        #[arg(long, value_delimiter = ',', default_value = "burst,voice")]
        workloads: Vec<String>,
        /// Flood the burst workload without pacing (capacity; most loss is then at full buffers).
        #[arg(long)]
        unpaced: bool,
    },
    /// One stream source on an agent, N sinks over TLS through the hub (one multicast
    /// group): delivered bytes/s and latency against a direct TCP echo, then the same with one
    /// sink throttled (its queue in the hub, the others' latency, the source's losses).
    Streams {
        /// Sinks.
        #[arg(long, default_value_t = 100)]
        sinks: usize,
        /// Seconds measured per case (after one second of warm-up).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Bytes per frame.
        #[arg(long, default_value_t = 4096)]
        frame_bytes: usize,
        /// The source's rate in kB/s (1000 bytes).
        #[arg(long, default_value_t = 250)]
        rate_kb: u64,
        /// Every n-th frame is a key frame.
        #[arg(long, default_value_t = 10)]
        key_every: u64,
        /// The throttled sink reads at this percentage of the rate.
        #[arg(long, default_value_t = 10)]
        throttle_percent: u64,
    },
}

/// Raises the open-file limit to its hard maximum (10,000 agents need 10,000 sockets).
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read/write the struct passed to them.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        if l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
        let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur
    }
}

struct HubChild(Child);

impl Drop for HubChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the load generator.
pub fn run(args: LoadgenArgs) -> io::Result<ExitCode> {
    match args.what {
        Workload::Agents {
            count,
            ping_interval,
            hold,
            concurrency,
        } => agents(count, ping_interval, hold, concurrency),
        Workload::Relay {
            compare_naive,
            seconds,
            rounds,
            fanouts,
            workloads,
            unpaced,
        } => {
            if !compare_naive {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "loadgen relay needs --compare-naive",
                ));
            }
            relay(seconds, rounds, fanouts, workloads, unpaced)
        }
        Workload::Streams {
            sinks,
            seconds,
            frame_bytes,
            rate_kb,
            key_every,
            throttle_percent,
        } => streams::run(streams::StreamsOptions {
            sinks,
            seconds: seconds.clamp(1.0, 300.0),
            frame_bytes,
            rate: rate_kb.saturating_mul(1000),
            key_every,
            throttle_percent,
        }),
    }
}

fn agents(count: usize, ping_interval: u64, hold: u64, concurrency: usize) -> io::Result<ExitCode> {
    let limit = raise_nofile_limit();
    if (limit as usize) < count + 64 {
        return Err(io::Error::other(format!(
            "open-file limit {limit} is too low for {count} agents"
        )));
    }
    let (dir, data, mut child) = spawn_hub("agents", ping_interval)?;
    let result = smol::block_on(drive(
        &data,
        &mut child,
        count,
        ping_interval,
        hold,
        concurrency,
    ));
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A hub as a child process (its memory its own) on a fresh data dir, native front only.
fn spawn_hub(
    what: &str,
    ping_interval: u64,
) -> io::Result<(std::path::PathBuf, DataDir, HubChild)> {
    let dir =
        std::env::temp_dir().join(format!("switchboard-loadgen-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (data, _) = DataDir::ensure(&dir.join("hub"))?;
    let child = HubChild(
        std::process::Command::new(std::env::current_exe()?)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--kv-listen",
                "off",
                "--web-listen",
                "off",
                "--ping-interval",
                &ping_interval.to_string(),
                "--data-dir",
            ])
            .arg(&data.dir)
            .env("SWITCHBOARD_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()?,
    );
    Ok((dir, data, child))
}

async fn wait_for_addr(data: &DataDir, child: &mut HubChild) -> io::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(a) = data.hub_addr(None) {
            return Ok(a);
        }
        if let Some(status) = child.0.try_wait()? {
            return Err(io::Error::other(format!("hub exited early: {status}")));
        }
        if Instant::now() > deadline {
            return Err(io::Error::other("hub did not start within 30 s"));
        }
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

async fn drive(
    data: &DataDir,
    child: &mut HubChild,
    count: usize,
    ping_interval: u64,
    hold: u64,
    concurrency: usize,
) -> io::Result<ExitCode> {
    let addr = wait_for_addr(data, child).await?;
    let pid = child.0.id();
    let mut admin = AdminClient::connect(&addr, "localhost", data.admin_tls()?).await?;
    let rss_idle = rss_kib(pid);
    println!(
        "hub pid {pid} on {addr}, RSS {:.1} MiB before agents",
        rss_idle as f64 / 1024.0
    );

    // One secret for every synthetic agent, hashed once with cheap parameters (documented:
    // this measures the link, not argon2).
    let secret_text = secret::generate_secret();
    let hash =
        secret::hash_secret(&secret_text, secret::cheap_params()).map_err(io::Error::other)?;
    let bar = indicatif::ProgressBar::new(count as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:<12} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("registering");
    let ids: Vec<String> = (0..count).map(|i| format!("load-{i:05}")).collect();
    for id in &ids {
        let rid = admin.request_id();
        let req = pb::RegisterAgentRequest {
            request_id: rid,
            agent_id: id.clone(),
            secret_hash: hash.clone(),
            allowed_networks: vec![],
        };
        admin.send(Body::RegisterAgentRequest(req)).await?;
    }
    let mut registered = 0;
    while registered < count {
        match admin.next_message().await? {
            Body::RegisterAgentResponse(_) => {
                registered += 1;
                bar.inc(1);
            }
            Body::ControlError(e) => {
                return Err(io::Error::other(format!(
                    "registration refused: {}",
                    e.message
                )));
            }
            _ => {}
        }
    }

    // Certificates and agents, connected in waves of `concurrency` handshakes.
    bar.set_position(0);
    bar.set_message("connecting");
    let ca = data.pki.ca.cert_pem().as_bytes().to_vec();
    let (status_tx, status_rx) = async_channel::unbounded::<AgentStatus>();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    let mut connected = 0usize;
    let mut disconnects = 0usize;
    for wave in ids.chunks(concurrency.max(1)) {
        for id in wave {
            let cert = data.pki.ca.issue_client(id, 30).map_err(io::Error::other)?;
            let tls = tls::client_config(&ca, cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
                .map_err(io::Error::other)?;
            let link = LinkConfig {
                ping_interval: Duration::from_secs(ping_interval),
                ..LinkConfig::default()
            };
            let opts = AgentOptions {
                manager: addr.clone(),
                server_name: "localhost".into(),
                tls,
                agent: AgentConfig {
                    agent_id: id.clone(),
                    secret: secret_text.clone(),
                    link,
                },
                backoff: Backoff::default(),
                seed: seed(),
                connect_timeout: Duration::from_secs(30),
                renewal: None,
                streams: Some(Default::default()),
            };
            tasks.push(smol::spawn(run_agent(
                opts,
                stop_rx.clone(),
                Some(status_tx.clone()),
            )));
        }
        while connected < tasks.len() {
            match status_rx.recv().await {
                Ok(AgentStatus::Connected) => {
                    connected += 1;
                    bar.inc(1);
                }
                Ok(AgentStatus::Disconnected { reason, .. }) => {
                    disconnects += 1;
                    bar.println(format!("disconnect while connecting: {reason}"));
                }
                Ok(_) => {}
                Err(_) => return Err(io::Error::other("agents stopped")),
            }
        }
    }
    let connect_time = started.elapsed();
    bar.finish_and_clear();
    let rss_connected = rss_kib(pid);
    println!(
        "{count} agents connected in {:.1} s; hub RSS {:.1} MiB ({:.1} KiB per agent)",
        connect_time.as_secs_f64(),
        rss_connected as f64 / 1024.0,
        (rss_connected.saturating_sub(rss_idle)) as f64 / count as f64
    );

    // Hold them with keepalives.
    println!("holding for {hold} s with pings every {ping_interval} s...");
    let hold_until = Instant::now() + Duration::from_secs(hold);
    while Instant::now() < hold_until {
        admin.idle(Duration::from_millis(500)).await?;
        while let Ok(st) = status_rx.try_recv() {
            if let AgentStatus::Disconnected { reason, .. } = st {
                disconnects += 1;
                println!("disconnect while holding: {reason}");
            }
        }
    }

    // Broadcast.
    let t0 = Instant::now();
    for id in &ids {
        let rid = admin.request_id();
        let req = pb::RunCommandRequest {
            request_id: rid,
            agent_id: id.clone(),
            operation: "echo.Echo".into(),
            data: r#"{"[args]": ["load"]}"#.into(),
        };
        admin.send(Body::RunCommandRequest(req)).await?;
    }
    let sent = t0.elapsed();
    let mut latencies = Vec::with_capacity(count);
    let mut failed = 0usize;
    let deadline = t0 + Duration::from_secs(120);
    while latencies.len() + failed < count {
        let m = futures_lite::future::or(async { Some(admin.next_message().await) }, async {
            async_io::Timer::at(deadline).await;
            None
        })
        .await;
        match m {
            None => break,
            Some(m) => match m? {
                Body::Result(r) if r.status == pb::command_result::Status::Success as i32 => {
                    latencies.push(t0.elapsed())
                }
                Body::Result(_) | Body::ControlError(_) => failed += 1,
                _ => {}
            },
        }
    }
    latencies.sort();
    let rss_after = rss_kib(pid);
    let p50 = percentile(&latencies, 0.50);
    let p99 = percentile(&latencies, 0.99);
    let all = latencies.last().copied().unwrap_or_default();
    println!(
        "broadcast of {count} commands (sent in {:.0} ms): {} results, {failed} failed; p50 {:.0} ms, p99 {:.0} ms, last {:.0} ms",
        sent.as_secs_f64() * 1e3,
        latencies.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        all.as_secs_f64() * 1e3
    );
    println!(
        "result: agents={count} connect_s={:.1} broadcast_p50_ms={:.0} broadcast_p99_ms={:.0} broadcast_complete_ms={:.0} hub_rss_mib={:.1} hub_kib_per_agent={:.1} disconnects={disconnects} failed={failed}",
        connect_time.as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        all.as_secs_f64() * 1e3,
        rss_after as f64 / 1024.0,
        (rss_connected.saturating_sub(rss_idle)) as f64 / count as f64,
    );
    stop_tx.close();
    let _ = admin.close().await;
    for t in tasks {
        t.cancel().await;
    }
    let ok = latencies.len() == count && disconnects == 0;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn relay(
    seconds: f64,
    rounds: usize,
    fanouts: Vec<usize>,
    workloads: Vec<String>,
    unpaced: bool,
) -> io::Result<ExitCode> {
    use switchboard_runtime_mio::compare::{CompareOptions, Progress, Workload, compare_naive};
    let workloads = workloads
        .iter()
        .map(|w| match w.as_str() {
            "burst" => Ok(Workload::Burst),
            "voice" => Ok(Workload::Voice),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown workload {other:?}"),
            )),
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut opts = CompareOptions {
        seconds_per_case: seconds.clamp(1.0, 120.0),
        rounds: rounds.max(3),
        fanouts,
        workloads,
        ..CompareOptions::default()
    };
    if unpaced {
        opts.burst_output_rate = None;
    }
    let cases = (opts.fanouts.len() * opts.workloads.len()) as u64;
    let bar = indicatif::ProgressBar::new(cases);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:<28} [{bar:30}] {pos}/{len} cases {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    println!(
        "relay comparison: {:.0} s per case, {} alternating rounds, relay on CPU {}, load on CPU {}",
        opts.seconds_per_case, opts.rounds, opts.relay_cpu, opts.load_cpu
    );
    let results = compare_naive(&opts, &mut |p| match p {
        Progress::Case {
            workload, fanout, ..
        } => bar.set_message(format!("{} fan-out {fanout}", workload.name())),
        Progress::Window { .. } => {}
        Progress::Done(r) => {
            bar.inc(1);
            bar.println(r.detail_line());
        }
    })?;
    bar.finish_and_clear();
    for r in &results {
        println!("{}", r.line());
    }
    Ok(ExitCode::SUCCESS)
}
