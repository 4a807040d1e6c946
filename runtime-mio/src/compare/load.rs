//! The load side of the comparison: a generator of talkers and a receiver of every member,
//! both on the load CPU.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Poll};
use switchboard_core::relay::packet::{self, PACKET_LEN};

use super::{CompareOptions, Setup, Workload, uid};
use crate::batch::{SLOTS, SendBatch, SendCounters};
use crate::server::SendPath;
use crate::sys;

/// Drains every member socket on the load CPU and counts what arrives.
pub(super) struct Receiver {
    stop: Arc<AtomicBool>,
    delivered: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

impl Receiver {
    pub(super) fn start(
        mut poll: Poll,
        sockets: Arc<Vec<UdpSocket>>,
        cpu: usize,
    ) -> io::Result<Receiver> {
        let stop = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(AtomicU64::new(0));
        let (stop2, delivered2) = (stop.clone(), delivered.clone());
        let thread = thread::Builder::new()
            .name("loadgen-receiver".into())
            .spawn(move || {
                let _ = sys::pin_current_thread(cpu);
                let mut events = Events::with_capacity(4096);
                let mut buf = [0u8; 2048];
                while !stop2.load(Ordering::Relaxed) {
                    if poll
                        .poll(&mut events, Some(Duration::from_millis(20)))
                        .is_err()
                    {
                        continue;
                    }
                    let mut got = 0;
                    for event in events.iter() {
                        let Some(socket) = sockets.get(event.token().0) else {
                            continue;
                        };
                        while let Ok(len) = socket.recv(&mut buf) {
                            got += u64::from(len == PACKET_LEN);
                        }
                    }
                    delivered2.fetch_add(got, Ordering::Relaxed);
                }
            })?;
        Ok(Receiver {
            stop,
            delivered,
            thread,
        })
    }

    pub(super) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// The load generator of one window: talker 0 of each channel sends to `targets`.
pub(super) struct Generator {
    stop: Arc<AtomicBool>,
    offered: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

impl Generator {
    pub(super) fn start(
        opts: &CompareOptions,
        workload: Workload,
        setup: &Setup,
        targets: Vec<SocketAddr>,
    ) -> io::Result<Generator> {
        let stop = Arc::new(AtomicBool::new(false));
        let offered = Arc::new(AtomicU64::new(0));
        let (stop2, offered2) = (stop.clone(), offered.clone());
        let sockets = setup.sockets.clone();
        let members = setup.members;
        let cpu = opts.load_cpu;
        let burst = opts.burst_size.clamp(1, SLOTS);
        let interval = Duration::from_secs_f64(
            1.0 / (opts.voice_packets_per_second.max(1) as f64 * targets.len() as f64),
        );
        // One round of bursts (every talker once) carries talkers x burst input datagrams.
        let burst_period = opts.burst_output_rate.map(|rate| {
            let inputs_per_second =
                (rate as f64 / setup.members.saturating_sub(1).max(1) as f64).max(1.0);
            Duration::from_secs_f64((targets.len() * burst) as f64 / inputs_per_second)
        });
        let thread = thread::Builder::new()
            .name("loadgen-sender".into())
            .spawn(move || {
                let _ = sys::pin_current_thread(cpu);
                let talkers: Vec<(&UdpSocket, [u8; PACKET_LEN])> = (0..targets.len())
                    .map(|c| {
                        let mut data = [0u8; PACKET_LEN];
                        let _ = packet::write_user(&mut data, uid(c, 0), b"voice frame");
                        (&sockets[c * members], data)
                    })
                    .collect();
                match workload {
                    Workload::Burst => {
                        flood(&talkers, &targets, burst, burst_period, &stop2, &offered2)
                    }
                    Workload::Voice => pace(&talkers, &targets, interval, &stop2, &offered2),
                }
            })?;
        Ok(Generator {
            stop,
            offered,
            thread,
        })
    }

    pub(super) fn offered(&self) -> u64 {
        self.offered.load(Ordering::Relaxed)
    }

    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Each talker in turn sends `burst` datagrams in one GSO send (or `sendmmsg`), a round of
/// bursts every `period` (or back to back), until stopped.
fn flood(
    talkers: &[(&UdpSocket, [u8; PACKET_LEN])],
    targets: &[SocketAddr],
    burst: usize,
    period: Option<Duration>,
    stop: &AtomicBool,
    offered: &AtomicU64,
) {
    let mut batch = SendBatch::new();
    let mut mode = SendPath::detect().mode();
    let mut counters = SendCounters::default();
    let start = Instant::now();
    let mut rounds: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(period) = period {
            let due = start + period * rounds;
            let now = Instant::now();
            if now < due {
                thread::sleep(due - now);
                continue;
            }
            rounds = rounds.wrapping_add(1);
        }
        for ((socket, data), target) in talkers.iter().zip(targets) {
            for _ in 0..burst {
                batch.free_slot()[..PACKET_LEN].copy_from_slice(data);
                batch.commit_slot(PACKET_LEN, std::iter::once(target));
            }
            batch.flush(socket.as_raw_fd(), &mut mode, &mut counters);
        }
        offered.store(counters.sent, Ordering::Relaxed);
    }
}

/// Talkers send one datagram each in turn, evenly spaced by `interval`, until stopped.
fn pace(
    talkers: &[(&UdpSocket, [u8; PACKET_LEN])],
    targets: &[SocketAddr],
    interval: Duration,
    stop: &AtomicBool,
    offered: &AtomicU64,
) {
    let start = Instant::now();
    let mut k: u32 = 0;
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + interval * k;
        let now = Instant::now();
        if now < due {
            thread::sleep(due - now);
            continue;
        }
        let c = k as usize % talkers.len();
        let (socket, data) = &talkers[c];
        if socket.send_to(data, targets[c]).is_ok() {
            sent += 1;
            offered.store(sent, Ordering::Relaxed);
        }
        k = k.wrapping_add(1);
    }
}
