//! End-to-end loopback benchmark: the mio relay against the naive `std::net` relay
//! ([`crate::naive`]) in the same run, measured as BENCHMARKS.md asks.
//!
//! - The relay under test runs alone on one CPU (`relay_cpu`); the load generator and the
//!   receivers run on another (`load_cpu`), and so does the calling thread while it runs.
//! - The figure is **relay CPU per output packet**: the relay threads' CPU time plus the relay
//!   CPU's `ksoftirqd`, divided by the datagrams the relay sent. CPU time comes from
//!   `/proc/self/task/<tid>/schedstat` (nanoseconds; the same utime + stime as `stat` fields 14
//!   and 15, without the 10 ms tick rounding that would swamp a half-second window), falling back
//!   to `stat` when schedstat is absent.
//! - Each case alternates switchboard / naive windows for `rounds` rounds and reports the
//!   median ratio. Loss is `1 - delivered / (offered x fanout)`; `RcvbufErrors` (from
//!   `/proc/net/snmp`) counts datagrams the kernel dropped at full receive buffers (the relay's
//!   own socket under a flood, or the receivers').
//! - Workloads: **burst** (a few channels whose talkers send bursts of 32 datagrams in one GSO
//!   send: the GSO best case; paced to `burst_output_rate`, or an unpaced flood for capacity) and
//!   **voice** (many channels, one talker each at 50 packets/s, evenly paced).
//! - Bounded in time (`seconds_per_case`), loopback only.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use switchboard_core::relay::packet::{self, Operation, PACKET_LEN};
use switchboard_core::relay::{RelayCommand, RelayConfig, RelayEvent};

use crate::naive::NaiveRelay;

mod load;
mod procfs;

use crate::server::{RelayHandle, RelayServer, RelayServerConfig, SendPath};
use crate::sys;
use load::{Generator, Receiver};
use procfs::{ksoftirqd_pid, process_cpu_ns, thread_cpu_ns, udp_rcvbuf_errors};

/// The traffic of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// A few channels whose talkers flood in bursts (capacity; several packets per destination
    /// per wake-up, the GSO best case).
    Burst,
    /// Many channels of `fanout + 1` members, one talker each at `voice_packets_per_second`,
    /// evenly paced (GSO rarely applies).
    Voice,
}

impl Workload {
    /// `burst` or `voice`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Burst => "burst",
            Workload::Voice => "voice",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Wall time of one case (both relays, every round), warm-ups included.
    pub seconds_per_case: f64,
    /// Alternating switchboard/naive rounds per case (at least 3).
    pub rounds: usize,
    /// Fan-outs to run (members per channel minus one).
    pub fanouts: Vec<usize>,
    /// Workloads to run, each with every fan-out.
    pub workloads: Vec<Workload>,
    /// Channels of the burst workload.
    pub burst_channels: usize,
    /// Datagrams per generator send in the burst workload (at most 64).
    pub burst_size: usize,
    /// Output datagrams per second the burst workload aims at (its input rate is this divided
    /// by the fan-out), sent as bursts of `burst_size`. The default, 250,000, is about what the
    /// receivers absorb on one CPU, so the relay's cost is measured on packets that are
    /// delivered; `None` floods without pacing (capacity: most loss is then at the receivers'
    /// and the relay's full receive buffers, and dropping is cheaper than delivering).
    pub burst_output_rate: Option<u64>,
    /// Channels of the voice workload.
    pub voice_channels: usize,
    /// Packets per second of each voice talker.
    pub voice_packets_per_second: u32,
    /// The CPU the relay under test runs on.
    pub relay_cpu: usize,
    /// The CPU of the load generator, the receivers and the caller.
    pub load_cpu: usize,
    /// `SO_RCVBUF`/`SO_SNDBUF` of both relays' sockets.
    pub socket_buffer: usize,
    /// Best send path the switchboard relay may use.
    pub max_send_path: SendPath,
}

impl Default for CompareOptions {
    fn default() -> CompareOptions {
        let cpus = thread::available_parallelism().map_or(1, usize::from);
        CompareOptions {
            seconds_per_case: 4.0,
            rounds: 3,
            fanouts: vec![1, 4, 16],
            workloads: vec![Workload::Burst, Workload::Voice],
            burst_channels: 4,
            burst_size: 32,
            burst_output_rate: Some(250_000),
            voice_channels: 200,
            voice_packets_per_second: 50,
            relay_cpu: cpus.saturating_sub(1),
            load_cpu: 0,
            socket_buffer: 4 << 20,
            max_send_path: SendPath::GsoSendmmsg,
        }
    }
}

/// One measured window of one relay.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    /// Relay threads' CPU time, in ns.
    pub relay_cpu_ns: u64,
    /// The relay CPU's ksoftirqd CPU time, in ns.
    pub softirq_ns: u64,
    /// Datagrams the relay sent.
    pub sent: u64,
    /// Datagrams the generator offered to the relay.
    pub offered: u64,
    /// Datagrams the receivers got.
    pub delivered: u64,
    /// Kernel `RcvbufErrors` during the window.
    pub rcvbuf_errors: u64,
    /// Length of the window, in seconds.
    pub seconds: f64,
}

impl Window {
    /// Relay CPU (with its CPU's softirq thread) per datagram sent, in ns.
    pub fn ns_per_out(&self) -> f64 {
        (self.relay_cpu_ns + self.softirq_ns) as f64 / self.sent as f64
    }

    /// Datagrams sent per second.
    pub fn out_per_second(&self) -> f64 {
        self.sent as f64 / self.seconds
    }
}

/// The switchboard and naive windows of one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    /// The mio relay.
    pub switchboard: Window,
    /// The naive relay.
    pub naive: Window,
}

/// The result of one workload at one fan-out.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// Workload.
    pub workload: Workload,
    /// Fan-out.
    pub fanout: usize,
    /// Median relay CPU per output packet of the mio relay, ns.
    pub switchboard_ns_per_out: f64,
    /// Median relay CPU per output packet of the naive relay, ns.
    pub naive_ns_per_out: f64,
    /// Median over rounds of naive / switchboard (above 1: switchboard is cheaper).
    pub ratio: f64,
    /// Fraction of expected deliveries that did not arrive, switchboard.
    pub loss_switchboard: f64,
    /// Same for the naive relay.
    pub loss_naive: f64,
    /// `RcvbufErrors` during the switchboard windows.
    pub rcvbuf_errors_switchboard: u64,
    /// `RcvbufErrors` during the naive windows.
    pub rcvbuf_errors_naive: u64,
    /// The send path the switchboard relay used.
    pub send_path: SendPath,
    /// Every round.
    pub rounds: Vec<Round>,
}

impl CaseResult {
    /// The exact summary line (also what `Display` prints):
    /// `case=burst fanout=16 switchboard_ns_per_out=A naive_ns_per_out=B ratio=B/A
    /// loss_switchboard=x% loss_naive=y%`.
    pub fn line(&self) -> String {
        self.to_string()
    }

    /// A second line with throughput, kernel drops and the send path.
    pub fn detail_line(&self) -> String {
        let median_of = |f: &dyn Fn(&Round) -> f64| median(self.rounds.iter().map(f).collect());
        format!(
            "case={} fanout={} send_path={} switchboard_out_pps={:.0} naive_out_pps={:.0} \
             rcvbuf_errors_switchboard={} rcvbuf_errors_naive={} rounds={}",
            self.workload.name(),
            self.fanout,
            self.send_path.name(),
            median_of(&|r| r.switchboard.out_per_second()),
            median_of(&|r| r.naive.out_per_second()),
            self.rcvbuf_errors_switchboard,
            self.rcvbuf_errors_naive,
            self.rounds.len(),
        )
    }
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "case={} fanout={} switchboard_ns_per_out={:.0} naive_ns_per_out={:.0} ratio={:.2} \
             loss_switchboard={:.2}% loss_naive={:.2}%",
            self.workload.name(),
            self.fanout,
            self.switchboard_ns_per_out,
            self.naive_ns_per_out,
            self.ratio,
            self.loss_switchboard * 100.0,
            self.loss_naive * 100.0,
        )
    }
}

/// Progress reports of [`compare_naive`].
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A case starts (`index` counts from 0).
    Case {
        /// Its position.
        index: usize,
        /// Number of cases.
        total: usize,
        /// Workload.
        workload: Workload,
        /// Fan-out.
        fanout: usize,
    },
    /// A window was measured.
    Window {
        /// Round, from 0.
        round: usize,
        /// `switchboard` or `naive`.
        relay: &'static str,
        /// The figures.
        window: &'a Window,
    },
    /// A case is done.
    Done(&'a CaseResult),
}

/// Runs every workload at every fan-out, each comparing the mio relay with the naive relay in
/// alternating windows. The calling thread is pinned to `load_cpu` while it runs (and allowed
/// every CPU again afterwards).
pub fn compare_naive(
    opts: &CompareOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> io::Result<Vec<CaseResult>> {
    let _ = sys::raise_open_file_limit();
    sys::pin_current_thread(opts.load_cpu)?;
    let cases: Vec<(Workload, usize)> = opts
        .workloads
        .iter()
        .flat_map(|&w| opts.fanouts.iter().map(move |&f| (w, f)))
        .collect();
    let mut results = Vec::with_capacity(cases.len());
    let mut outcome = Ok(());
    for (index, &(workload, fanout)) in cases.iter().enumerate() {
        progress(Progress::Case {
            index,
            total: cases.len(),
            workload,
            fanout,
        });
        match run_case(opts, workload, fanout, progress) {
            Ok(result) => {
                progress(Progress::Done(&result));
                results.push(result);
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    let _ = sys::allow_all_cpus();
    outcome.map(|()| results)
}

/// The uid of member `m` of channel `c`.
fn uid(channel: usize, member: usize) -> u64 {
    (channel as u64 + 1) * 1000 + member as u64 + 1
}

struct Setup {
    channels: usize,
    members: usize,
    sockets: Arc<Vec<UdpSocket>>,
    switchboard_ports: Vec<SocketAddr>,
    naive_ports: Vec<SocketAddr>,
}

fn run_case(
    opts: &CompareOptions,
    workload: Workload,
    fanout: usize,
    progress: &mut dyn FnMut(Progress<'_>),
) -> io::Result<CaseResult> {
    let channels = match workload {
        Workload::Burst => opts.burst_channels,
        Workload::Voice => opts.voice_channels,
    }
    .max(1);
    let members = fanout + 1;
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let config = RelayServerConfig {
        relay: RelayConfig::default(),
        bind_ip: localhost,
        socket_buffer: opts.socket_buffer,
        pin_cpu: Some(opts.relay_cpu),
        max_send_path: opts.max_send_path,
        ..RelayServerConfig::default()
    };
    let (server, handle, events) = RelayServer::new(config)?;
    let relay_thread = server.spawn()?;
    let naive = NaiveRelay::start(
        channels,
        localhost,
        opts.socket_buffer,
        Some(opts.relay_cpu),
    )?;
    let result = (|| {
        let poll = Poll::new()?;
        let mut sockets = Vec::with_capacity(channels * members);
        for i in 0..channels * members {
            let mut socket = member_socket()?;
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)?;
            sockets.push(socket);
        }
        let setup = Setup {
            channels,
            members,
            sockets: Arc::new(sockets),
            switchboard_ports: open_and_join(&handle, channels, members)?,
            naive_ports: naive
                .ports()
                .iter()
                .map(|&p| SocketAddr::new(localhost, p))
                .collect(),
        };
        bind_members(&setup, &events)?;
        let receiver = Receiver::start(poll, setup.sockets.clone(), opts.load_cpu)?;
        let measured = measure_rounds(opts, workload, &setup, &handle, &naive, &receiver, progress);
        receiver.stop();
        let rounds = measured?;
        let send_path = handle.stats().map_err(io::Error::other)?.send_path;
        Ok(summarise(workload, fanout, send_path, rounds))
    })();
    handle.shutdown();
    let _ = relay_thread.join();
    naive.stop();
    result
}

fn member_socket() -> io::Result<UdpSocket> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    socket.set_recv_buffer_size(256 << 10)?;
    socket.set_send_buffer_size(1 << 20)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// Opens the channels on the mio relay and joins every member; returns each channel's address.
fn open_and_join(
    handle: &RelayHandle,
    channels: usize,
    members: usize,
) -> io::Result<Vec<SocketAddr>> {
    let stopped = |_| io::Error::other("the relay loop stopped");
    for c in 0..channels {
        handle
            .send(RelayCommand::OpenChannel {
                channel: c as u64,
                port: 0,
            })
            .map_err(stopped)?;
        for m in 0..members {
            handle
                .send(RelayCommand::Join {
                    channel: c as u64,
                    uid: uid(c, m),
                    token: None,
                })
                .map_err(stopped)?;
        }
    }
    let stats = handle.stats().map_err(stopped)?;
    if stats.channels.len() != channels {
        return Err(io::Error::other("the relay could not open every channel"));
    }
    Ok(stats
        .channels
        .iter()
        .map(|&(_, port)| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .collect())
}

/// Every member sends a keepalive to both relays; waits until the mio relay bound them all.
fn bind_members(setup: &Setup, events: &std::sync::mpsc::Receiver<RelayEvent>) -> io::Result<()> {
    let mut keepalive = [0u8; PACKET_LEN];
    let total = setup.channels * setup.members;
    let mut bound = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    for attempt in 0..3 {
        for c in 0..setup.channels {
            for m in 0..setup.members {
                packet::write_system(&mut keepalive, Operation::Keepalive, uid(c, m), 0)
                    .map_err(io::Error::other)?;
                let socket = &setup.sockets[c * setup.members + m];
                let _ = socket.send_to(&keepalive, setup.switchboard_ports[c]);
                let _ = socket.send_to(&keepalive, setup.naive_ports[c]);
            }
            if c % 64 == 63 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        let wait_until = Instant::now() + Duration::from_millis(500 * (attempt + 1));
        while bound < total {
            let left = wait_until
                .min(deadline)
                .saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(RelayEvent::MemberBound { .. }) => bound += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if bound == total {
            return Ok(());
        }
    }
    Err(io::Error::other(format!(
        "only {bound} of {total} members bound"
    )))
}

#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    relay_cpu_ns: u64,
    softirq_ns: u64,
    sent: u64,
    offered: u64,
    delivered: u64,
    rcvbuf_errors: u64,
}

/// Which relay a window measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Subject {
    Switchboard,
    Naive,
}

fn measure_rounds(
    opts: &CompareOptions,
    workload: Workload,
    setup: &Setup,
    handle: &RelayHandle,
    naive: &NaiveRelay,
    receiver: &Receiver,
    progress: &mut dyn FnMut(Progress<'_>),
) -> io::Result<Vec<Round>> {
    let rounds = opts.rounds.max(1);
    let per_window = (opts.seconds_per_case / (2 * rounds) as f64).max(0.2);
    let warmup = Duration::from_secs_f64((per_window * 0.25).min(0.2));
    let window = Duration::from_secs_f64(per_window) - warmup;
    let softirqd = ksoftirqd_pid(opts.relay_cpu);
    let mut out = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut pair = [Window::default(); 2];
        for (i, subject) in [Subject::Switchboard, Subject::Naive]
            .into_iter()
            .enumerate()
        {
            let targets = match subject {
                Subject::Switchboard => setup.switchboard_ports.clone(),
                Subject::Naive => setup.naive_ports.clone(),
            };
            let generator = Generator::start(opts, workload, setup, targets)?;
            thread::sleep(warmup);
            let snap = |g: &Generator| -> io::Result<Snapshot> {
                let (tids, sent) = match subject {
                    Subject::Switchboard => (
                        handle.os_thread_id().into_iter().collect::<Vec<_>>(),
                        handle.stats().map_err(io::Error::other)?.send.sent,
                    ),
                    Subject::Naive => (naive.thread_ids(), naive.sent()),
                };
                Ok(Snapshot {
                    at: Instant::now(),
                    relay_cpu_ns: tids.iter().map(|&t| thread_cpu_ns(t)).sum(),
                    softirq_ns: softirqd.map_or(0, process_cpu_ns),
                    sent,
                    offered: g.offered(),
                    delivered: receiver.delivered(),
                    rcvbuf_errors: udp_rcvbuf_errors(),
                })
            };
            let before = snap(&generator)?;
            thread::sleep(window);
            let after = snap(&generator)?;
            generator.stop();
            thread::sleep(Duration::from_millis(50));
            pair[i] = Window {
                relay_cpu_ns: after.relay_cpu_ns.saturating_sub(before.relay_cpu_ns),
                softirq_ns: after.softirq_ns.saturating_sub(before.softirq_ns),
                sent: after.sent.saturating_sub(before.sent),
                offered: after.offered.saturating_sub(before.offered),
                delivered: after.delivered.saturating_sub(before.delivered),
                rcvbuf_errors: after.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
                seconds: (after.at - before.at).as_secs_f64(),
            };
            progress(Progress::Window {
                round,
                relay: match subject {
                    Subject::Switchboard => "switchboard",
                    Subject::Naive => "naive",
                },
                window: &pair[i],
            });
        }
        out.push(Round {
            switchboard: pair[0],
            naive: pair[1],
        });
    }
    Ok(out)
}

fn summarise(
    workload: Workload,
    fanout: usize,
    send_path: SendPath,
    rounds: Vec<Round>,
) -> CaseResult {
    let loss = |w: &dyn Fn(&Round) -> Window| {
        let expected: u64 = rounds.iter().map(|r| w(r).offered * fanout as u64).sum();
        let delivered: u64 = rounds.iter().map(|r| w(r).delivered).sum();
        if expected == 0 {
            0.0
        } else {
            (1.0 - delivered as f64 / expected as f64).max(0.0)
        }
    };
    CaseResult {
        workload,
        fanout,
        switchboard_ns_per_out: median(rounds.iter().map(|r| r.switchboard.ns_per_out()).collect()),
        naive_ns_per_out: median(rounds.iter().map(|r| r.naive.ns_per_out()).collect()),
        ratio: median(
            rounds
                .iter()
                .map(|r| r.naive.ns_per_out() / r.switchboard.ns_per_out())
                .collect(),
        ),
        loss_switchboard: loss(&|r| r.switchboard),
        loss_naive: loss(&|r| r.naive),
        rcvbuf_errors_switchboard: rounds.iter().map(|r| r.switchboard.rcvbuf_errors).sum(),
        rcvbuf_errors_naive: rounds.iter().map(|r| r.naive.rcvbuf_errors).sum(),
        send_path,
        rounds,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::procfs::{thread_cpu_ns, udp_rcvbuf_errors};
    use super::*;

    #[test]
    fn the_line_has_the_agreed_shape() {
        let result = CaseResult {
            workload: Workload::Burst,
            fanout: 16,
            switchboard_ns_per_out: 1234.4,
            naive_ns_per_out: 3702.0,
            ratio: 2.999,
            loss_switchboard: 0.0123,
            loss_naive: 0.5,
            rcvbuf_errors_switchboard: 1,
            rcvbuf_errors_naive: 2,
            send_path: SendPath::GsoSendmmsg,
            rounds: Vec::new(),
        };
        assert_eq!(
            result.line(),
            "case=burst fanout=16 switchboard_ns_per_out=1234 naive_ns_per_out=3702 ratio=3.00 \
             loss_switchboard=1.23% loss_naive=50.00%"
        );
    }

    #[test]
    fn median_ignores_empty_windows() {
        assert_eq!(median(vec![3.0, f64::NAN, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn proc_readers_work_here() {
        // The kernel accounts run time at ticks and switches: burn a little first.
        let start = Instant::now();
        let tid = sys::current_thread_id();
        while thread_cpu_ns(tid) == 0 && start.elapsed() < Duration::from_secs(2) {
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        assert!(thread_cpu_ns(tid) > 0);
        let _ = udp_rcvbuf_errors();
    }
}
