//! The relay's poll loop: one UDP socket per channel, commands through a channel + waker.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use switchboard_core::relay::control::{SIGNED_LEN, TAG_LEN};
use switchboard_core::relay::packet::{self, Operation, PACKET_LEN, SystemPacket};
use switchboard_core::relay::{
    ChannelId, CommandKey, CommandVerifier, ControlCounters, ControlError, DropCounters, Relay,
    RelayCommand, RelayConfig, RelayEvent, ReportSigner, Route,
};

use crate::batch::{SLOT_LEN, SendBatch, SendCounters, SendMode};
use crate::sys;

const WAKER: Token = Token(0);
const CONTROL: Token = Token(1);
const FIRST_CHANNEL: usize = 2;

/// Which kernel send path the relay uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPath {
    /// `sendmmsg`, merging the datagrams of a batch that go to one destination with UDP GSO.
    GsoSendmmsg,
    /// `sendmmsg`, one message per datagram.
    Sendmmsg,
    /// One `sendmsg` per datagram.
    PerPacket,
}

impl SendPath {
    /// Probes the running kernel: GSO on loopback, then `sendmmsg`.
    pub fn detect() -> SendPath {
        match (sys::probe_sendmmsg(), sys::probe_gso()) {
            (true, true) => SendPath::GsoSendmmsg,
            (true, false) => SendPath::Sendmmsg,
            (false, _) => SendPath::PerPacket,
        }
    }

    /// The best path available that does not exceed `self` (`GsoSendmmsg` > `Sendmmsg` >
    /// `PerPacket`).
    pub fn at_most(self, cap: SendPath) -> SendPath {
        use SendPath::*;
        match (self, cap) {
            (PerPacket, _) | (_, PerPacket) => PerPacket,
            (Sendmmsg, _) | (_, Sendmmsg) => Sendmmsg,
            (GsoSendmmsg, GsoSendmmsg) => GsoSendmmsg,
        }
    }

    /// A short name for logs (`gso+sendmmsg`, `sendmmsg`, `sendmsg`).
    pub fn name(self) -> &'static str {
        match self {
            SendPath::GsoSendmmsg => "gso+sendmmsg",
            SendPath::Sendmmsg => "sendmmsg",
            SendPath::PerPacket => "sendmsg",
        }
    }

    pub(crate) fn mode(self) -> SendMode {
        SendMode {
            gso: self == SendPath::GsoSendmmsg,
            sendmmsg: self != SendPath::PerPacket,
        }
    }
}

/// Settings of a [`RelayServer`].
#[derive(Debug, Clone)]
pub struct RelayServerConfig {
    /// The relay machine's settings (member expiry...).
    pub relay: RelayConfig,
    /// Address the channel sockets bind to (with each channel's port).
    pub bind_ip: IpAddr,
    /// `SO_RCVBUF` and `SO_SNDBUF` of every socket, in bytes (the kernel may cap it at
    /// `net.core.rmem_max` / `wmem_max`).
    pub socket_buffer: usize,
    /// Most datagrams read from one socket per wake-up before serving the others.
    pub budget_per_socket: usize,
    /// The best send path allowed (the detected one is used when it is lower).
    pub max_send_path: SendPath,
    /// Pin the loop's thread to this CPU.
    pub pin_cpu: Option<usize>,
}

impl Default for RelayServerConfig {
    fn default() -> RelayServerConfig {
        RelayServerConfig {
            relay: RelayConfig::default(),
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            socket_buffer: 4 << 20,
            budget_per_socket: 1024,
            max_send_path: SendPath::GsoSendmmsg,
            pin_cpu: None,
        }
    }
}

/// The control port of a relay that runs as its own process: signed hub commands arrive there.
#[derive(Debug, Clone)]
pub struct ControlPort {
    /// Where to listen.
    pub addr: SocketAddr,
    /// The key shared with the hub.
    pub key: CommandKey,
}

/// A snapshot of the relay's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayStats {
    /// The send path in use (it can drop from GSO to `sendmmsg` if the kernel refuses GSO).
    pub send_path: SendPath,
    /// Datagrams received on channel sockets.
    pub received: u64,
    /// Received datagrams forwarded to at least one member.
    pub forwarded: u64,
    /// The send side.
    pub send: SendCounters,
    /// Datagrams dropped by the relay machine, by reason.
    pub drops: DropCounters,
    /// Control-port packets (separate-process mode).
    pub control: Option<ControlCounters>,
    /// Open channels and the port each is bound to, by channel id.
    pub channels: Vec<(ChannelId, u16)>,
}

/// The relay loop stopped: the command was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the relay loop has stopped")]
pub struct RelayStopped;

enum Control {
    Command(RelayCommand),
    Stats(mpsc::Sender<RelayStats>),
    Shutdown,
}

/// Sends commands to a running [`RelayServer`] from any thread. Dropping the last handle stops
/// the loop.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    /// `None` only while being dropped.
    tx: Option<mpsc::Sender<Control>>,
    waker: Arc<Waker>,
    thread_id: Arc<AtomicI32>,
}

impl RelayHandle {
    /// Queues a membership command and wakes the loop.
    pub fn send(&self, command: RelayCommand) -> Result<(), RelayStopped> {
        self.control(Control::Command(command))
    }

    /// The loop's counters (waits for the loop to answer).
    pub fn stats(&self) -> Result<RelayStats, RelayStopped> {
        let (tx, rx) = mpsc::channel();
        self.control(Control::Stats(tx))?;
        rx.recv().map_err(|_| RelayStopped)
    }

    /// Asks the loop to stop.
    pub fn shutdown(&self) {
        let _ = self.control(Control::Shutdown);
    }

    /// The kernel thread id of the loop once it runs (for `/proc/self/task/<tid>/stat`).
    pub fn os_thread_id(&self) -> Option<i32> {
        match self.thread_id.load(Ordering::Acquire) {
            0 => None,
            tid => Some(tid),
        }
    }

    fn control(&self, control: Control) -> Result<(), RelayStopped> {
        let tx = self.tx.as_ref().ok_or(RelayStopped)?;
        tx.send(control).map_err(|_| RelayStopped)?;
        self.waker.wake().map_err(|_| RelayStopped)
    }
}

/// The longest the loop sleeps without looking at its command channel.
const IDLE_CHECK: Duration = Duration::from_millis(250);

impl Drop for RelayHandle {
    fn drop(&mut self) {
        // Drop the sender first, then wake: the loop notices when the last one is gone.
        drop(self.tx.take());
        let _ = self.waker.wake();
    }
}

struct ChannelSocket {
    channel: ChannelId,
    port: u16,
    socket: UdpSocket,
}

struct ControlSocket {
    socket: UdpSocket,
    verifier: CommandVerifier,
    /// Signs the events reported to the hub.
    reporter: ReportSigner,
    /// Where the last verified command came from: events are reported there.
    hub: Option<SocketAddr>,
    /// Tags of the last accepted commands: a replay of one of them is a retransmission (its
    /// ACK was lost) and is acknowledged again.
    recent_tags: VecDeque<[u8; TAG_LEN]>,
}

/// How many accepted command tags are remembered for re-acknowledgement.
const RECENT_TAGS: usize = 64;

/// The tag of a signed control packet (which verified, so it is 512 bytes long).
fn tag_of(datagram: &[u8]) -> [u8; TAG_LEN] {
    let mut tag = [0u8; TAG_LEN];
    if let Some(bytes) = datagram.get(SIGNED_LEN..SIGNED_LEN + TAG_LEN) {
        tag.copy_from_slice(bytes);
    }
    tag
}

/// The wall clock as time since the Unix epoch (signed packets carry it).
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Whether a socket was read until `WouldBlock`.
#[derive(PartialEq, Eq)]
enum Drain {
    Done,
    BudgetSpent,
}

/// A `mio::Poll` loop that owns a [`Relay`] and one non-blocking UDP socket per channel.
///
/// Each wake-up: apply queued commands, drain every readable socket until `WouldBlock` (at most
/// `budget_per_socket` datagrams each; a socket left unfinished is served again without waiting),
/// route each datagram and send the forwards in batches that point at the receive buffers, run
/// the relay's timer, then forward its events. Failures to open a channel's socket are reported
/// as [`RelayEvent::ChannelFailed`]. Events queue in an unbounded channel: drain it.
pub struct RelayServer {
    config: RelayServerConfig,
    poll: Poll,
    relay: Relay,
    sockets: Vec<Option<ChannelSocket>>,
    by_channel: HashMap<ChannelId, usize>,
    control: Option<ControlSocket>,
    commands: mpsc::Receiver<Control>,
    events: mpsc::Sender<RelayEvent>,
    thread_id: Arc<AtomicI32>,
    send_path: SendPath,
    mode: SendMode,
    received: u64,
    forwarded: u64,
    send: SendCounters,
}

impl RelayServer {
    /// A relay fed by a [`RelayHandle`] (the hub in the same process). Returns the server (run
    /// it with [`RelayServer::run`] or [`RelayServer::spawn`]), its handle and its events.
    pub fn new(
        config: RelayServerConfig,
    ) -> io::Result<(RelayServer, RelayHandle, mpsc::Receiver<RelayEvent>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, commands) = mpsc::channel();
        let (events, events_rx) = mpsc::channel();
        let thread_id = Arc::new(AtomicI32::new(0));
        let send_path = SendPath::detect().at_most(config.max_send_path);
        tracing::info!(send_path = send_path.name(), "relay send path");
        let server = RelayServer {
            relay: Relay::new(config.relay),
            config,
            poll,
            sockets: Vec::new(),
            by_channel: HashMap::new(),
            control: None,
            commands,
            events,
            thread_id: thread_id.clone(),
            send_path,
            mode: send_path.mode(),
            received: 0,
            forwarded: 0,
            send: SendCounters::default(),
        };
        let handle = RelayHandle {
            tx: Some(tx),
            waker,
            thread_id,
        };
        Ok((server, handle, events_rx))
    }

    /// A relay that runs as its own process: besides the handle, it listens on `control.addr`
    /// for system packets signed by the hub (`switchboard_core::relay::control`), applies the
    /// ones that verify and answers an ACK when their `ackid` is set. Refusals are counted in
    /// [`RelayStats::control`]. Its events also go, signed (`switchboard_core::relay::report`),
    /// to the address the last verified command came from.
    pub fn with_control_port(
        config: RelayServerConfig,
        control: ControlPort,
    ) -> io::Result<(RelayServer, RelayHandle, mpsc::Receiver<RelayEvent>)> {
        let (mut server, handle, events) = RelayServer::new(config)?;
        let mut socket = server.open_socket(control.addr)?;
        server
            .poll
            .registry()
            .register(&mut socket, CONTROL, Interest::READABLE)?;
        server.control = Some(ControlSocket {
            socket,
            verifier: CommandVerifier::new(control.key.clone()),
            reporter: ReportSigner::new(control.key, unix_now().as_micros() as u64),
            hub: None,
            recent_tags: VecDeque::with_capacity(RECENT_TAGS),
        });
        Ok((server, handle, events))
    }

    /// The address of the control port, in separate-process mode.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control
            .as_ref()
            .and_then(|c| c.socket.local_addr().ok())
    }

    /// The send path chosen at start.
    pub fn send_path(&self) -> SendPath {
        self.send_path
    }

    /// Runs the loop on a new thread named `switchboard-relay`.
    pub fn spawn(self) -> io::Result<thread::JoinHandle<io::Result<()>>> {
        thread::Builder::new()
            .name("switchboard-relay".into())
            .spawn(move || self.run())
    }

    /// Runs the loop on this thread until [`RelayHandle::shutdown`] or the last handle is
    /// dropped.
    pub fn run(mut self) -> io::Result<()> {
        if let Some(cpu) = self.config.pin_cpu {
            sys::pin_current_thread(cpu)?;
        }
        self.thread_id
            .store(sys::current_thread_id(), Ordering::Release);
        let mut batch = SendBatch::new();
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<Token> = Vec::with_capacity(1024);
        let mut unfinished: Vec<Token> = Vec::new();
        loop {
            // Never sleep longer than IDLE_CHECK: the command channel is also checked without
            // a wake-up, so a lost wake-up can delay a command or a stop, never block it.
            let timeout = if unfinished.is_empty() {
                Some(self.relay.poll_timeout().map_or(IDLE_CHECK, |at| {
                    at.saturating_duration_since(Instant::now()).min(IDLE_CHECK)
                }))
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            ready.clear();
            ready.append(&mut unfinished);
            ready.extend(events.iter().map(|e| e.token()));
            if !ready.contains(&WAKER) && !self.apply_controls(now) {
                return Ok(());
            }
            for &token in &ready {
                match token {
                    WAKER => {
                        if !self.apply_controls(now) {
                            return Ok(());
                        }
                    }
                    CONTROL => {
                        if self.drain_control(now) == Drain::BudgetSpent
                            && !unfinished.contains(&token)
                        {
                            unfinished.push(token);
                        }
                    }
                    Token(t) => {
                        if self.drain_channel(t - FIRST_CHANNEL, now, &mut batch)
                            == Drain::BudgetSpent
                            && !unfinished.contains(&token)
                        {
                            unfinished.push(token);
                        }
                    }
                }
            }
            self.relay.handle_timeout(now);
            while let Some(event) = self.relay.poll_event() {
                self.emit(event);
            }
        }
    }

    /// Reads one channel's socket until `WouldBlock` or the budget, routing each datagram.
    fn drain_channel(&mut self, index: usize, now: Instant, batch: &mut SendBatch) -> Drain {
        let Some(Some(cs)) = self.sockets.get(index) else {
            return Drain::Done;
        };
        let fd = cs.socket.as_raw_fd();
        let channel = cs.channel;
        let mut drain = Drain::BudgetSpent;
        for _ in 0..self.config.budget_per_socket {
            let slot = batch.free_slot();
            match cs.socket.recv_from(slot) {
                Ok((len, from)) => {
                    self.received += 1;
                    match self.relay.route(now, channel, from, &slot[..len]) {
                        Route::Forward(targets) => {
                            self.forwarded += u64::from(!targets.is_empty());
                            batch.commit_slot(len, targets.iter());
                        }
                        Route::Reply { to, packet } => {
                            batch.free_slot()[..PACKET_LEN].copy_from_slice(packet);
                            batch.commit_slot(PACKET_LEN, [to].iter());
                        }
                        Route::Accepted | Route::Drop(_) => {}
                    }
                    if batch.is_full() {
                        batch.flush(fd, &mut self.mode, &mut self.send);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drain = Drain::Done;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => tracing::debug!(channel, "relay receive failed: {e}"),
            }
        }
        if !batch.is_empty() {
            batch.flush(fd, &mut self.mode, &mut self.send);
        }
        if !self.mode.gso && self.send_path == SendPath::GsoSendmmsg {
            self.send_path = SendPath::Sendmmsg;
        }
        drain
    }

    /// Applies queued controls; false when the loop must stop.
    fn apply_controls(&mut self, now: Instant) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Control::Command(command)) => self.apply(now, command),
                Ok(Control::Stats(reply)) => {
                    let _ = reply.send(self.stats());
                }
                Ok(Control::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    /// Reads the control port until `WouldBlock` or the budget, applying verified commands.
    fn drain_control(&mut self, now: Instant) -> Drain {
        let mut buf = [0u8; SLOT_LEN];
        for _ in 0..self.config.budget_per_socket {
            let Some(control) = self.control.as_mut() else {
                return Drain::Done;
            };
            let (len, from) = match control.socket.recv_from(&mut buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drain::Done,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!("control receive failed: {e}");
                    continue;
                }
            };
            let verified = control.verifier.verify(&buf[..len], unix_now());
            let tag = tag_of(&buf[..len]);
            let acknowledge = match &verified {
                Ok(_) => {
                    if control.recent_tags.len() == RECENT_TAGS {
                        control.recent_tags.pop_front();
                    }
                    control.recent_tags.push_back(tag);
                    true
                }
                // The very packet of a command already applied: the hub resends when an ACK is
                // lost, so acknowledge it again (without applying it twice). A different packet
                // with an old sequence (a hub restarted with a low sequence) gets no ACK.
                Err(ControlError::Replayed { .. }) => control.recent_tags.contains(&tag),
                Err(_) => false,
            };
            if acknowledge
                && let Ok(sys) = SystemPacket::parse(&buf[..len])
                && sys.ackid != 0
            {
                let mut ack = [0u8; PACKET_LEN];
                if packet::write_system(&mut ack, Operation::Ack, sys.uid, sys.ackid).is_ok() {
                    let _ = control.socket.send_to(&ack, from);
                }
            }
            let verified = match verified {
                Ok(verified) => verified,
                Err(e) => {
                    tracing::debug!(%from, "control packet refused: {e}");
                    continue;
                }
            };
            control.hub = Some(from);
            self.apply(now, verified.command);
        }
        Drain::BudgetSpent
    }

    /// Hands an event to the owner, and in separate-process mode reports it to the hub as a
    /// signed packet (once: UDP, best effort).
    fn emit(&mut self, event: RelayEvent) {
        if let Some(control) = self.control.as_mut()
            && let Some(hub) = control.hub
        {
            let mut packet = [0u8; PACKET_LEN];
            let issued = u64::try_from(unix_now().as_millis()).unwrap_or(u64::MAX);
            if control.reporter.encode(&event, issued, &mut packet).is_ok()
                && let Err(e) = control.socket.send_to(&packet, hub)
            {
                tracing::debug!(%hub, "event report not sent: {e}");
            }
        }
        let _ = self.events.send(event);
    }

    fn apply(&mut self, now: Instant, command: RelayCommand) {
        let command = match command {
            RelayCommand::OpenChannel { channel, port } => match self.open_channel(channel, port) {
                Ok(bound_port) => RelayCommand::OpenChannel {
                    channel,
                    port: bound_port,
                },
                Err(e) => {
                    tracing::warn!(channel, port, "cannot open channel: {e}");
                    self.emit(RelayEvent::ChannelFailed {
                        channel,
                        error: e.to_string(),
                    });
                    return;
                }
            },
            RelayCommand::CloseChannel { channel } => {
                self.close_socket(channel);
                command
            }
            other => other,
        };
        if let Err(e) = self.relay.handle_command(now, command) {
            tracing::debug!("relay command not applied: {e}");
        }
    }

    /// Opens (or keeps) the channel's socket; returns the port it is bound to.
    fn open_channel(&mut self, channel: ChannelId, port: u16) -> io::Result<u16> {
        if let Some(&index) = self.by_channel.get(&channel)
            && let Some(Some(cs)) = self.sockets.get(index)
        {
            if cs.port == port || port == 0 {
                return Ok(cs.port);
            }
            self.close_socket(channel);
        }
        let mut socket = self.open_socket(SocketAddr::new(self.config.bind_ip, port))?;
        let bound_port = socket.local_addr()?.port();
        let index = match self.sockets.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.sockets.push(None);
                self.sockets.len() - 1
            }
        };
        self.poll.registry().register(
            &mut socket,
            Token(FIRST_CHANNEL + index),
            Interest::READABLE,
        )?;
        self.sockets[index] = Some(ChannelSocket {
            channel,
            port: bound_port,
            socket,
        });
        self.by_channel.insert(channel, index);
        tracing::debug!(channel, port = bound_port, "channel open");
        Ok(bound_port)
    }

    fn close_socket(&mut self, channel: ChannelId) {
        if let Some(index) = self.by_channel.remove(&channel)
            && let Some(mut cs) = self.sockets.get_mut(index).and_then(Option::take)
        {
            let _ = self.poll.registry().deregister(&mut cs.socket);
        }
    }

    fn open_socket(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_nonblocking(true)?;
        socket.set_recv_buffer_size(self.config.socket_buffer)?;
        socket.set_send_buffer_size(self.config.socket_buffer)?;
        socket.bind(&addr.into())?;
        Ok(UdpSocket::from_std(socket.into()))
    }

    fn stats(&self) -> RelayStats {
        let mut channels: Vec<(ChannelId, u16)> = self
            .sockets
            .iter()
            .flatten()
            .map(|cs| (cs.channel, cs.port))
            .collect();
        channels.sort_unstable();
        RelayStats {
            send_path: self.send_path,
            received: self.received,
            forwarded: self.forwarded,
            send: self.send,
            drops: *self.relay.drop_counters(),
            control: self.control.as_ref().map(|c| c.verifier.counters()),
            channels,
        }
    }
}
