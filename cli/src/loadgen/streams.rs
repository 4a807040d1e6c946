//! `switchboard loadgen streams`: one source on a real agent connection, N sinks on their own
//! TLS sessions, through a hub running as a child process, on loopback.
//!
//! The source is a custom kind of the agent (`loadgen.frames`, [`CustomSource`]): frames of
//! a set size at a set rate, every `key_every`-th a key frame (and the next one after a resync
//! request), each stamped with its send time and sequence. Every sink opens the same key, so
//! they form one multicast group; the agent produces once and the hub copies. A sink records
//! the latency of each frame (its arrival minus its stamp: the agent's link, the hub, the
//! sink's link), its bytes and the gaps in sequence (frames the hub dropped for it), and
//! checks that after every gap it resumes on a key frame.
//!
//! Three measurements, in one run: a direct TCP echo at the same frame size and rate (the
//! baseline: two plain loopback hops through a thread); N sinks; N sinks with one throttled
//! to a tenth of the rate (it reads its socket only that fast). A monitor asks the hub for its
//! streams every 200 ms (the largest per-sink queue) and reads the hub's RSS.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use bytes::{BufMut, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use switchboard_core::link::{AgentConfig, Backoff, LinkConfig};
use switchboard_core::machine::Action;
use switchboard_core::stream::{
    Class, EndCode, OpenRequest, Side, StreamEndpoint, StreamEvent, StreamLimits,
};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::agent::{AgentOptions, AgentStatus, run_agent};
use switchboard_runtime_smol::client::{AdminClient, seed};
use switchboard_runtime_smol::sources::{
    CustomSource, SourceContext, SourceCtl, SourceMsg, SourceOptions,
};
use switchboard_runtime_smol::{secret, tls};

use super::{HubChild, percentile, raise_nofile_limit, rss_kib, spawn_hub, wait_for_addr};
use crate::datadir::DataDir;

/// The custom kind the load source offers.
const KIND: &str = "loadgen.frames";
/// Bytes of the stamp at the head of every frame: send time (ns since the run's base) and
/// sequence.
const STAMP: usize = 16;

/// What `loadgen streams` runs.
#[derive(Debug, Clone)]
pub struct StreamsOptions {
    /// Sinks per case.
    pub sinks: usize,
    /// Seconds measured per case (after a warm-up of one second).
    pub seconds: f64,
    /// Bytes per frame.
    pub frame_bytes: usize,
    /// The source's rate, bytes per second.
    pub rate: u64,
    /// Every n-th frame is a key frame.
    pub key_every: u64,
    /// The throttled sink's share of the rate, percent.
    pub throttle_percent: u64,
}

/// What one sink saw within the measured window.
#[derive(Debug, Default, Clone)]
struct SinkStats {
    latencies_us: Vec<u32>,
    bytes: u64,
    frames: u64,
    gaps: u64,
    missed_frames: u64,
    resumed_off_key_frame: u64,
    closed: Option<String>,
}

/// The source's counters, shared with its task.
#[derive(Debug, Default)]
struct SourceCounters {
    produced: AtomicU64,
    paused: AtomicBool,
}

/// Runs `loadgen streams`.
pub fn run(o: StreamsOptions) -> io::Result<ExitCode> {
    if o.sinks == 0 || o.frame_bytes < STAMP || o.rate == 0 || o.key_every == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("need sinks >= 1, frame bytes >= {STAMP}, a rate and key-every >= 1"),
        ));
    }
    if o.frame_bytes > StreamLimits::default().max_payload {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frames of at most {} bytes",
                StreamLimits::default().max_payload
            ),
        ));
    }
    let limit = raise_nofile_limit();
    if (limit as usize) < o.sinks + 64 {
        return Err(io::Error::other(format!(
            "open-file limit {limit} is too low for {} sinks",
            o.sinks
        )));
    }
    let (dir, data, mut child) = spawn_hub("streams", 30)?;
    let result = smol::block_on(drive(&data, &mut child, &o));
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn drive(data: &DataDir, child: &mut HubChild, o: &StreamsOptions) -> io::Result<ExitCode> {
    let addr = wait_for_addr(data, child).await?;
    let pid = child.0.id();
    let mut admin = AdminClient::connect(&addr, "localhost", data.admin_tls()?).await?;
    let base = Instant::now();
    let counters = Arc::new(SourceCounters::default());
    let (stop_agent, agent_task) = start_source(data, &addr, &mut admin, base, &counters).await?;
    let frames_per_s = o.rate as f64 / o.frame_bytes as f64;
    println!(
        "hub pid {pid} on {addr}; source: {} B frames at {:.0} frames/s ({:.2} MB/s), a key frame every {}; {} sinks; {:.0} s per case",
        o.frame_bytes,
        frames_per_s,
        o.rate as f64 / 1e6,
        o.key_every,
        o.sinks,
        o.seconds
    );

    let echo = echo_baseline(o, base).await?;
    let echo_p50 = percentile_us(&echo, 0.50);
    let echo_p99 = percentile_us(&echo, 0.99);
    println!(
        "direct TCP echo (baseline): {} frames, round trip p50 {echo_p50} µs, p99 {echo_p99} µs",
        echo.len()
    );
    let even = run_case(data, &addr, &mut admin, pid, o, base, &counters, None).await?;
    even.print("all sinks at full speed", o);
    let slow = run_case(data, &addr, &mut admin, pid, o, base, &counters, Some(0)).await?;
    slow.print(
        &format!("one sink at {}% of the rate", o.throttle_percent),
        o,
    );
    stop_agent.close();
    agent_task.cancel().await;
    let _ = admin.close().await;

    let cap = StreamLimits::default().sink_queue as u64;
    let others_p99 = slow.others_percentile(0.99);
    let even_p99 = even.others_percentile(0.99);
    let ratio = others_p99 as f64 / even_p99.max(1) as f64;
    let mb_s = even.aggregate_mb_s(o.seconds);
    println!(
        "result: sinks={} aggregate_mb_s={mb_s:.1} echo_p50_us={echo_p50} echo_p99_us={echo_p99} stream_p50_us={} stream_p99_us={even_p99} added_p50_us={} p99_with_slow_sink_us={others_p99} p99_ratio={ratio:.3} slow_sink_max_queued_kib={:.0} cap_kib={} source_lost={} hub_rss_mib={:.1}",
        o.sinks,
        even.others_percentile(0.50),
        even.others_percentile(0.50).saturating_sub(echo_p50),
        slow.max_queued as f64 / 1024.0,
        cap / 1024,
        even.source_lost + slow.source_lost,
        slow.rss_kib.max(even.rss_kib) as f64 / 1024.0,
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT MET" };
    println!(
        "targets: >= 20 MB/s aggregate: {}; the others' p99 within 10% with a slow sink: {}; the slow sink's queue within its cap: {}; source never throttled: {}",
        verdict(mb_s >= 20.0),
        verdict(ratio <= 1.10),
        verdict(slow.max_queued <= cap),
        verdict(even.source_lost + slow.source_lost == 0),
    );
    Ok(ExitCode::SUCCESS)
}

/// Registers the source agent and runs it (in this process) with the custom kind.
async fn start_source(
    data: &DataDir,
    addr: &str,
    admin: &mut AdminClient,
    base: Instant,
    counters: &Arc<SourceCounters>,
) -> io::Result<(async_channel::Sender<()>, smol::Task<()>)> {
    let id = "loadgen-source";
    let secret_text = secret::generate_secret();
    let hash =
        secret::hash_secret(&secret_text, secret::cheap_params()).map_err(io::Error::other)?;
    let rid = admin.request_id();
    let req = pb::RegisterAgentRequest {
        request_id: rid,
        agent_id: id.into(),
        secret_hash: hash,
        allowed_networks: vec![],
    };
    match admin
        .call(
            rid,
            Body::RegisterAgentRequest(req),
            Duration::from_secs(30),
        )
        .await?
    {
        Body::RegisterAgentResponse(_) => {}
        other => return Err(io::Error::other(format!("registration: {other:?}"))),
    }
    let ca = data.pki.ca.cert_pem().as_bytes().to_vec();
    let cert = data.pki.ca.issue_client(id, 1).map_err(io::Error::other)?;
    let tls = tls::client_config(&ca, cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
        .map_err(io::Error::other)?;
    let mut custom = BTreeMap::new();
    let c = counters.clone();
    custom.insert(
        KIND.to_string(),
        CustomSource {
            class: Class::Latest,
            start: Arc::new(move |ctx: SourceContext| {
                let frame: usize = param(&ctx.open, "frame_bytes")?;
                let rate: u64 = param(&ctx.open, "rate")?;
                let key_every: u64 = param(&ctx.open, "key_every")?;
                Ok(smol::spawn(produce(
                    ctx,
                    frame,
                    rate,
                    key_every,
                    base,
                    c.clone(),
                )))
            }),
        },
    );
    let opts = AgentOptions {
        manager: addr.to_string(),
        server_name: "localhost".into(),
        tls,
        agent: AgentConfig {
            agent_id: id.into(),
            secret: secret_text,
            link: LinkConfig::default(),
        },
        backoff: Backoff::default(),
        seed: seed(),
        connect_timeout: Duration::from_secs(30),
        renewal: None,
        streams: Some(SourceOptions {
            shell: false,
            custom,
            ..SourceOptions::default()
        }),
    };
    let (status_tx, status_rx) = async_channel::unbounded();
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let task = smol::spawn(run_agent(opts, stop_rx, Some(status_tx)));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = async { status_rx.recv().await.ok() }
            .or(async {
                Timer::at(deadline).await;
                None
            })
            .await;
        match st {
            Some(AgentStatus::Connected) => break,
            Some(AgentStatus::Disconnected { reason, .. }) => {
                return Err(io::Error::other(format!("source agent: {reason}")));
            }
            Some(_) => {}
            None => return Err(io::Error::other("the source agent did not connect")),
        }
    }
    Ok((stop_tx, task))
}

fn param<T: std::str::FromStr>(open: &pb::StreamOpen, name: &str) -> Result<T, (EndCode, String)> {
    open.params
        .get(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            (
                EndCode::Invalid,
                format!("{name} is missing or not a number"),
            )
        })
}

/// The load source: stamped frames at `rate` bytes/s until its stream closes.
async fn produce(
    ctx: SourceContext,
    frame: usize,
    rate: u64,
    key_every: u64,
    base: Instant,
    counters: Arc<SourceCounters>,
) {
    let period = Duration::from_secs_f64(frame as f64 / rate as f64);
    let mut next = Instant::now();
    let mut seq = 0u64;
    let mut resync = true;
    loop {
        next += period;
        Timer::at(next).await;
        while let Ok(c) = ctx.ctl.try_recv() {
            if let SourceCtl::Resync = c {
                resync = true;
            }
        }
        if ctx.ctl.is_closed() {
            return;
        }
        if counters.paused.load(Ordering::Relaxed) {
            continue;
        }
        seq += 1;
        let key_frame = resync || seq % key_every == 1;
        resync = false;
        let mut b = BytesMut::with_capacity(frame);
        b.put_u64(base.elapsed().as_nanos() as u64);
        b.put_u64(seq);
        b.resize(frame, 0x5a);
        counters.produced.fetch_add(1, Ordering::Relaxed);
        let msg = SourceMsg::Data {
            id: ctx.id,
            channel: 0,
            key_frame,
            payload: b.freeze(),
            ready: None,
        };
        if ctx.out.send(msg).await.is_err() {
            return;
        }
    }
}

/// A TCP echo thread and a client at the same frame size and rate: round trips.
async fn echo_baseline(o: &StreamsOptions, base: Instant) -> io::Result<Vec<u32>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let at = listener.local_addr()?;
    let frame = o.frame_bytes;
    let server = std::thread::spawn(move || -> io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; frame];
        loop {
            if s.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            s.write_all(&buf)?;
        }
    });
    let mut c = Async::<TcpStream>::connect(at).await?;
    c.get_ref().set_nodelay(true)?;
    let period = Duration::from_secs_f64(o.frame_bytes as f64 / o.rate as f64);
    let warm = Instant::now() + Duration::from_secs(1);
    let until = warm + Duration::from_secs_f64(o.seconds);
    let mut out = Vec::new();
    let mut next = Instant::now();
    let mut buf = vec![0u8; frame];
    while Instant::now() < until {
        next += period;
        Timer::at(next).await;
        let mut b = BytesMut::with_capacity(frame);
        b.put_u64(base.elapsed().as_nanos() as u64);
        b.resize(frame, 0x5a);
        c.write_all(&b).await?;
        c.read_exact(&mut buf).await?;
        let sent = u64::from_be_bytes(buf[..8].try_into().unwrap_or_default());
        if Instant::now() >= warm {
            out.push(latency_us(base, sent));
        }
    }
    drop(c);
    let _ = server.join();
    Ok(out)
}

fn latency_us(base: Instant, sent_ns: u64) -> u32 {
    let now = base.elapsed().as_nanos() as u64;
    (now.saturating_sub(sent_ns) / 1000).min(u64::from(u32::MAX)) as u32
}

fn percentile_us(v: &[u32], p: f64) -> u32 {
    let mut d: Vec<Duration> = v
        .iter()
        .map(|u| Duration::from_micros(u64::from(*u)))
        .collect();
    d.sort();
    percentile(&d, p).as_micros() as u32
}

/// One case's figures.
struct CaseResult {
    sinks: Vec<SinkStats>,
    throttled: Option<usize>,
    max_queued: u64,
    rss_kib: u64,
    produced: u64,
    source_lost: u64,
    connect: Duration,
}

impl CaseResult {
    /// Latencies of the sinks that were not throttled.
    fn others_percentile(&self, p: f64) -> u32 {
        let all: Vec<u32> = self
            .sinks
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.throttled)
            .flat_map(|(_, s)| s.latencies_us.iter().copied())
            .collect();
        percentile_us(&all, p)
    }

    fn aggregate_mb_s(&self, seconds: f64) -> f64 {
        self.sinks.iter().map(|s| s.bytes).sum::<u64>() as f64 / seconds / 1e6
    }

    fn print(&self, name: &str, o: &StreamsOptions) {
        let others: Vec<&SinkStats> = self
            .sinks
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.throttled)
            .map(|(_, s)| s)
            .collect();
        let gaps: u64 = others.iter().map(|s| s.gaps).sum();
        let closed = self.sinks.iter().filter(|s| s.closed.is_some()).count();
        println!(
            "{name}: {} sinks connected in {:.0} ms; delivered {:.1} MB/s in all; the full-speed sinks' latency p50 {} µs, p99 {} µs, {gaps} gaps; source produced {} frames, {} lost before the hub; largest sink queue in the hub {:.0} KiB; hub RSS {:.1} MiB{}",
            self.sinks.len(),
            self.connect.as_secs_f64() * 1e3,
            self.aggregate_mb_s(o.seconds),
            self.others_percentile(0.50),
            self.others_percentile(0.99),
            self.produced,
            self.source_lost,
            self.max_queued as f64 / 1024.0,
            self.rss_kib as f64 / 1024.0,
            if closed > 0 {
                format!("; {closed} sinks closed early")
            } else {
                String::new()
            }
        );
        if let Some(t) = self.throttled.and_then(|i| self.sinks.get(i)) {
            println!(
                "  the slow sink: {:.2} MB/s, {} frames, latency p50 {} ms (it reads a backlog), {} gaps ({} frames dropped for it), {} resumed off a key frame{}",
                t.bytes as f64 / o.seconds / 1e6,
                t.frames,
                percentile_us(&t.latencies_us, 0.5) / 1000,
                t.gaps,
                t.missed_frames,
                t.resumed_off_key_frame,
                t.closed
                    .as_ref()
                    .map(|c| format!(", closed: {c}"))
                    .unwrap_or_default()
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_case(
    data: &DataDir,
    addr: &str,
    admin: &mut AdminClient,
    pid: u32,
    o: &StreamsOptions,
    base: Instant,
    counters: &Arc<SourceCounters>,
    throttled: Option<usize>,
) -> io::Result<CaseResult> {
    let tls = data.admin_tls()?;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(o.sinks);
    for _ in 0..o.sinks {
        clients.push(AdminClient::connect(addr, "localhost", tls.clone()).await?);
    }
    let connect = started.elapsed();
    counters.paused.store(false, Ordering::Relaxed);
    let produced_before = counters.produced.load(Ordering::Relaxed);
    let warm = Instant::now() + Duration::from_secs(1);
    let until = warm + Duration::from_secs_f64(o.seconds);
    let stats = Arc::new(Mutex::new(vec![SinkStats::default(); o.sinks]));
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let read_rate = (Some(i) == throttled)
            .then(|| (o.rate * o.throttle_percent.clamp(1, 100) / 100).max(1));
        tasks.push(smol::spawn(sink(
            client,
            o.clone(),
            base,
            (warm, until),
            read_rate,
            stop_rx.clone(),
            (stats.clone(), i),
        )));
    }
    // The monitor: the hub's view of the group every 200 ms.
    let mut max_queued = 0u64;
    let mut rss = 0u64;
    while Instant::now() < until {
        Timer::after(Duration::from_millis(200)).await;
        let groups = list(admin).await?;
        for g in groups.iter().filter(|g| g.kind == KIND) {
            for s in &g.sinks {
                max_queued = max_queued.max(s.queued_bytes);
            }
        }
        rss = rss.max(rss_kib(pid));
    }
    // The source stops; once the last frames are in, the hub's count must match.
    counters.paused.store(true, Ordering::Relaxed);
    Timer::after(Duration::from_millis(300)).await;
    let produced = counters.produced.load(Ordering::Relaxed) - produced_before;
    let frames_in = list(admin)
        .await?
        .iter()
        .filter(|g| g.kind == KIND)
        .map(|g| g.frames_in)
        .sum::<u64>();
    stop_tx.close();
    for t in tasks {
        t.await;
    }
    // Wait for the group to go before the next case (its source stops with its last sink).
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && list(admin).await?.iter().any(|g| g.kind == KIND) {
        Timer::after(Duration::from_millis(50)).await;
    }
    let sinks = stats.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(CaseResult {
        sinks,
        throttled,
        max_queued,
        rss_kib: rss,
        produced,
        source_lost: produced.saturating_sub(frames_in),
        connect,
    })
}

async fn list(admin: &mut AdminClient) -> io::Result<Vec<pb::StreamGroupInfo>> {
    let rid = admin.request_id();
    let body = Body::ListStreamsRequest(pb::ListStreamsRequest { request_id: rid });
    match admin.call(rid, body, Duration::from_secs(10)).await? {
        Body::ListStreamsResponse(r) => Ok(r.groups),
        other => Err(io::Error::other(format!("list streams: {other:?}"))),
    }
}

/// One sink: opens the group's key, records what arrives within the window, credits it back
/// (the throttled one no faster than `read_rate` bytes/s, reading its socket only that fast).
async fn sink(
    mut client: AdminClient,
    o: StreamsOptions,
    base: Instant,
    (warm, until): (Instant, Instant),
    read_rate: Option<u64>,
    stop: async_channel::Receiver<()>,
    (stats, index): (Arc<Mutex<Vec<SinkStats>>>, usize),
) {
    let mut ep = StreamEndpoint::new(Side::Client, StreamLimits::default());
    let mut params = BTreeMap::new();
    params.insert("frame_bytes".to_string(), o.frame_bytes.to_string());
    params.insert("rate".to_string(), o.rate.to_string());
    params.insert("key_every".to_string(), o.key_every.to_string());
    let Ok(id) = ep.open(OpenRequest {
        kind: KIND.into(),
        agent_id: "loadgen-source".into(),
        class: Class::Latest,
        key: "loadgen".into(),
        params,
        ..Default::default()
    }) else {
        return;
    };
    let mut mine = SinkStats::default();
    let mut last_seq = None::<u64>;
    'run: loop {
        while let Some(a) = ep.poll_action() {
            match a {
                Action::Send(f) => {
                    let sent = client.send_frame(f).await;
                    if sent.is_err() {
                        mine.closed = Some("the session ended".into());
                        break 'run;
                    }
                }
                Action::Event(StreamEvent::Data {
                    payload, key_frame, ..
                }) => {
                    let now = Instant::now();
                    if payload.len() >= STAMP {
                        let sent = u64::from_be_bytes(payload[..8].try_into().unwrap_or_default());
                        let seq = u64::from_be_bytes(payload[8..16].try_into().unwrap_or_default());
                        if now >= warm && now < until {
                            mine.latencies_us.push(latency_us(base, sent));
                            mine.bytes += payload.len() as u64;
                            mine.frames += 1;
                            if let Some(l) = last_seq
                                && seq > l + 1
                            {
                                mine.gaps += 1;
                                mine.missed_frames += seq - l - 1;
                                if !key_frame {
                                    mine.resumed_off_key_frame += 1;
                                }
                            }
                        }
                        last_seq = Some(seq);
                    }
                    if let Some(r) = read_rate {
                        Timer::after(Duration::from_secs_f64(payload.len() as f64 / r as f64))
                            .await;
                    }
                    let _ = ep.consume(id, payload.len());
                }
                Action::Event(StreamEvent::Closed { code, reason, .. }) => {
                    mine.closed = Some(format!(
                        "{}: {reason}",
                        switchboard_core::stream::end_text(code)
                    ));
                    break 'run;
                }
                Action::Event(StreamEvent::Rejected { code, reason, .. }) => {
                    mine.closed = Some(format!(
                        "refused ({}): {reason}",
                        switchboard_core::stream::end_text(code)
                    ));
                    break 'run;
                }
                _ => {}
            }
        }
        let m = async { Some(client.next_message().await) }
            .or(async {
                let _ = stop.recv().await;
                None
            })
            .await;
        match m {
            None => {
                let _ = ep.close(id, EndCode::Normal, "the load run is over");
                while let Some(a) = ep.poll_action() {
                    if let Action::Send(f) = a {
                        let _ = client.send_frame(f).await;
                    }
                }
                break;
            }
            Some(Ok(m)) => {
                let _ = ep.handle_message(Instant::now(), m);
            }
            Some(Err(e)) => {
                mine.closed = Some(e.to_string());
                break;
            }
        }
    }
    let _ = client.close().await;
    if let Ok(mut s) = stats.lock()
        && let Some(slot) = s.get_mut(index)
    {
        *slot = mine;
    }
}
