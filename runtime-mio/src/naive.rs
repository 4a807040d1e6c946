//! A naive relay to compare against: the KV prototype's design done plainly with `std::net`.
//!
//! One thread and one blocking UDP socket per channel; `recv_from`, then one `send_to` per other
//! member. Members are learned from their keepalives (any system packet), with no commands, no
//! tokens and no expiry: the least work a correct-looking relay does. Only for benchmarks.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

/// A running naive relay (stop it with [`NaiveRelay::stop`]).
#[derive(Debug)]
pub struct NaiveRelay {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    thread_ids: Arc<Mutex<Vec<i32>>>,
    sent: Arc<AtomicU64>,
    ports: Vec<u16>,
}

impl NaiveRelay {
    /// Starts `channels` channel threads on ephemeral ports of `bind_ip`, each socket with
    /// `socket_buffer` bytes of `SO_RCVBUF`/`SO_SNDBUF`, pinned to `pin_cpu` if given.
    pub fn start(
        channels: usize,
        bind_ip: IpAddr,
        socket_buffer: usize,
        pin_cpu: Option<usize>,
    ) -> io::Result<NaiveRelay> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_ids = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::with_capacity(channels);
        let mut ports = Vec::with_capacity(channels);
        for channel in 0..channels {
            let socket = Socket::new(
                Domain::for_address(SocketAddr::new(bind_ip, 0)),
                Type::DGRAM,
                Some(Protocol::UDP),
            )?;
            socket.set_recv_buffer_size(socket_buffer)?;
            socket.set_send_buffer_size(socket_buffer)?;
            socket.bind(&SocketAddr::new(bind_ip, 0).into())?;
            let socket: UdpSocket = socket.into();
            socket.set_read_timeout(Some(Duration::from_millis(100)))?;
            ports.push(socket.local_addr()?.port());
            let (stop, ids, sent) = (stop.clone(), thread_ids.clone(), sent.clone());
            let thread = thread::Builder::new()
                .name(format!("naive-relay-{channel}"))
                .spawn(move || {
                    if let Some(cpu) = pin_cpu {
                        let _ = sys::pin_current_thread(cpu);
                    }
                    if let Ok(mut ids) = ids.lock() {
                        ids.push(sys::current_thread_id());
                    }
                    serve(&socket, &stop, &sent);
                })?;
            threads.push(thread);
        }
        Ok(NaiveRelay {
            stop,
            threads,
            thread_ids,
            sent,
            ports,
        })
    }

    /// The port of each channel.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Datagrams sent so far (all channels).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Kernel thread ids of the channel threads that have started.
    pub fn thread_ids(&self) -> Vec<i32> {
        self.thread_ids
            .lock()
            .map(|ids| ids.clone())
            .unwrap_or_default()
    }

    /// Stops every thread and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn serve(socket: &UdpSocket, stop: &AtomicBool, sent: &AtomicU64) {
    let mut members: Vec<(u64, SocketAddr)> = Vec::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if len != 512 {
            continue;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&buf[..8]);
        if word[..4] == [0xff; 4] {
            word.copy_from_slice(&buf[8..16]);
            let uid = u64::from_be_bytes(word);
            match members.iter_mut().find(|(u, _)| *u == uid) {
                Some(member) => member.1 = from,
                None => members.push((uid, from)),
            }
            continue;
        }
        let uid = u64::from_be_bytes(word);
        if !members.iter().any(|&(u, a)| u == uid && a == from) {
            continue;
        }
        let mut count = 0;
        for &(u, addr) in &members {
            if u != uid && socket.send_to(&buf[..len], addr).is_ok() {
                count += 1;
            }
        }
        sent.fetch_add(count, Ordering::Relaxed);
    }
}
