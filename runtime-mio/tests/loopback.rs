//! The relay loop on real loopback sockets: members on several channels, a non-member dropped,
//! ACKs, expiry with a short period, every send path, the signed control port.
#![allow(missing_docs, clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchboard_core::relay::packet::{self, Operation, PACKET_LEN, SystemPacket};
use switchboard_core::relay::{
    CommandKey, CommandSigner, DropReason, RelayCommand, RelayConfig, RelayEvent, ReportVerifier,
};
use switchboard_runtime_mio::{
    ControlPort, RelayHandle, RelayServer, RelayServerConfig, RelayStats, SendPath,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn config(max_send_path: SendPath) -> RelayServerConfig {
    RelayServerConfig {
        relay: RelayConfig {
            member_expiry: Duration::from_millis(600),
            sweep_interval: Duration::from_millis(20),
            ..RelayConfig::default()
        },
        bind_ip: "127.0.0.1".parse().expect("ip"),
        socket_buffer: 1 << 20,
        max_send_path,
        ..RelayServerConfig::default()
    }
}

struct Member {
    uid: u64,
    socket: UdpSocket,
}

impl Member {
    fn new(uid: u64) -> Result<Member, std::io::Error> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        socket.set_recv_buffer_size(1 << 20)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let socket: UdpSocket = socket.into();
        socket.set_read_timeout(Some(Duration::from_millis(300)))?;
        Ok(Member { uid, socket })
    }

    fn send_data(&self, to: SocketAddr, tag: u8) -> std::io::Result<()> {
        let mut buf = [0u8; PACKET_LEN];
        packet::write_user(&mut buf, self.uid, &[tag; 32]).map_err(std::io::Error::other)?;
        self.socket.send_to(&buf, to).map(|_| ())
    }

    fn send_system(&self, to: SocketAddr, op: Operation, ackid: u32) -> std::io::Result<()> {
        let mut buf = [0u8; PACKET_LEN];
        packet::write_system(&mut buf, op, self.uid, ackid).map_err(std::io::Error::other)?;
        self.socket.send_to(&buf, to).map(|_| ())
    }

    /// The next datagram, or None after the read timeout.
    fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        let len = self.socket.recv(&mut buf).ok()?;
        Some(buf[..len].to_vec())
    }

    fn recv_nothing(&self) -> bool {
        let _ = self
            .socket
            .set_read_timeout(Some(Duration::from_millis(100)));
        let got = self.recv();
        let _ = self
            .socket
            .set_read_timeout(Some(Duration::from_millis(300)));
        got.is_none()
    }
}

fn channel_port(
    handle: &RelayHandle,
    channel: u64,
) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let stats = handle.stats()?;
    let port = stats
        .channels
        .iter()
        .find(|(c, _)| *c == channel)
        .map(|&(_, p)| p)
        .ok_or("channel not open")?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn wait_event(
    events: &Receiver<RelayEvent>,
    want: impl Fn(&RelayEvent) -> bool,
) -> Option<RelayEvent> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(event) if want(&event) => return Some(event),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Joins and binds `members` (each sends a keepalive, the relay reports the binding).
fn join_all(
    handle: &RelayHandle,
    events: &Receiver<RelayEvent>,
    channel: u64,
    port: SocketAddr,
    members: &[&Member],
) -> TestResult {
    for m in members {
        handle.send(RelayCommand::Join {
            channel,
            uid: m.uid,
            token: None,
        })?;
    }
    handle.stats()?; // the joins are applied once the loop answers
    for m in members {
        m.send_system(port, Operation::Keepalive, 0)?;
        let uid = m.uid;
        wait_event(
            events,
            |e| matches!(e, RelayEvent::MemberBound { uid: u, .. } if *u == uid),
        )
        .ok_or("member not bound")?;
    }
    Ok(())
}

fn scenario(path: SendPath) -> Result<RelayStats, Box<dyn std::error::Error>> {
    let (server, handle, events) = RelayServer::new(config(path))?;
    assert!(server.send_path() == server.send_path().at_most(path));
    let thread = server.spawn()?;
    handle.send(RelayCommand::OpenChannel {
        channel: 1,
        port: 0,
    })?;
    handle.send(RelayCommand::OpenChannel {
        channel: 2,
        port: 0,
    })?;
    let port1 = channel_port(&handle, 1)?;
    let port2 = channel_port(&handle, 2)?;
    let (a, b, c) = (Member::new(1)?, Member::new(2)?, Member::new(3)?);
    let (d, e) = (Member::new(4)?, Member::new(5)?);
    join_all(&handle, &events, 1, port1, &[&a, &b, &c])?;
    join_all(&handle, &events, 2, port2, &[&d, &e])?;

    // Data fans out within its channel only.
    a.send_data(port1, 0xA1)?;
    for m in [&b, &c] {
        let got = m.recv().ok_or("no forward")?;
        assert_eq!(got.len(), PACKET_LEN);
        assert_eq!(&got[..8], &1u64.to_be_bytes());
        assert_eq!(got[8], 0xA1);
    }
    d.send_data(port2, 0xD4)?;
    assert_eq!(e.recv().ok_or("no forward")?[8], 0xD4);
    assert!(
        a.recv_nothing() && d.recv_nothing(),
        "nothing back to the sender"
    );

    // A burst: every packet arrives, in order, whatever the batching.
    for i in 0..200u8 {
        b.send_data(port1, i)?;
    }
    for m in [&a, &c] {
        for i in 0..200u8 {
            let got = m
                .recv()
                .ok_or_else(|| format!("burst packet {i} lost: {:?}", handle.stats()))?;
            assert_eq!(got[8], i);
        }
    }

    // A non-member, and a member's uid from another address, are dropped.
    let stranger = Member::new(9)?;
    stranger.send_data(port1, 0x99)?;
    let spoofer = Member::new(1)?;
    spoofer.send_data(port1, 0x66)?;
    assert!(b.recv_nothing() && c.recv_nothing());

    // ACK on request.
    c.send_system(port1, Operation::Keepalive, 4242)?;
    let ack = c.recv().ok_or("no ack")?;
    let ack = SystemPacket::parse(&ack)?;
    assert_eq!(
        (ack.operation, ack.uid, ack.ackid),
        (Operation::Ack, 3, 4242)
    );

    // Expiry: a and b keep talking, c falls silent.
    let start = Instant::now();
    let expired = loop {
        a.send_system(port1, Operation::Keepalive, 0)?;
        b.send_system(port1, Operation::Keepalive, 0)?;
        if let Ok(RelayEvent::MemberExpired { channel, uid }) =
            events.recv_timeout(Duration::from_millis(50))
            && channel == 1
        {
            break uid;
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Err("no expiry".into());
        }
    };
    assert_eq!(expired, 3);
    a.send_data(port1, 0x11)?;
    assert_eq!(b.recv().ok_or("no forward after expiry")?[8], 0x11);
    assert!(c.recv_nothing(), "expired member gets nothing");

    let stats = handle.stats()?;
    assert_eq!(stats.drops.get(DropReason::NotMember), 1);
    assert_eq!(stats.drops.get(DropReason::WrongAddress), 1);
    handle.shutdown();
    thread.join().map_err(|_| "relay thread panicked")??;
    Ok(stats)
}

#[test]
fn relays_between_members_on_every_send_path() -> TestResult {
    let detected = SendPath::detect();
    eprintln!("send path on this kernel: {}", detected.name());
    for path in [
        SendPath::GsoSendmmsg,
        SendPath::Sendmmsg,
        SendPath::PerPacket,
    ] {
        let stats = scenario(path)?;
        assert_eq!(stats.send_path, detected.at_most(path));
        eprintln!(
            "{}: sent {} in {} syscalls, {} GSO messages",
            path.name(),
            stats.send.sent,
            stats.send.syscalls,
            stats.send.gso_messages
        );
        if stats.send_path != SendPath::GsoSendmmsg {
            assert_eq!(stats.send.gso_messages, 0);
        }
        assert_eq!(stats.send.errors, 0);
    }
    Ok(())
}

#[test]
fn a_taken_port_is_reported_as_channel_failed() -> TestResult {
    let taken = UdpSocket::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let (server, handle, events) = RelayServer::new(config(SendPath::GsoSendmmsg))?;
    let thread = server.spawn()?;
    handle.send(RelayCommand::OpenChannel { channel: 5, port })?;
    let failed = wait_event(&events, |e| matches!(e, RelayEvent::ChannelFailed { .. }));
    assert!(matches!(
        failed,
        Some(RelayEvent::ChannelFailed { channel: 5, .. })
    ));
    assert!(handle.stats()?.channels.is_empty());
    drop(handle);
    thread.join().map_err(|_| "relay thread panicked")??;
    Ok(())
}

#[test]
fn separate_process_mode_takes_signed_commands_only() -> TestResult {
    let key = CommandKey::new(b"a shared secret of the hub and its relays");
    let control = ControlPort {
        addr: "127.0.0.1:0".parse()?,
        key: key.clone(),
    };
    let (server, handle, events) =
        RelayServer::with_control_port(config(SendPath::GsoSendmmsg), control)?;
    let control_addr = server.control_addr().ok_or("no control port")?;
    let thread = server.spawn()?;
    let hub = UdpSocket::bind("127.0.0.1:0")?;
    hub.set_read_timeout(Some(Duration::from_secs(2)))?;
    let key_for_reports = key.clone();
    let mut signer = CommandSigner::new(key, 1);
    let mut buf = [0u8; PACKET_LEN];
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let token = [7u8; 16];
    for (i, command) in [
        RelayCommand::OpenChannel {
            channel: 3,
            port: 0,
        },
        RelayCommand::Join {
            channel: 3,
            uid: 30,
            token: Some(token),
        },
        RelayCommand::Join {
            channel: 3,
            uid: 31,
            token: None,
        },
    ]
    .into_iter()
    .enumerate()
    {
        signer.encode(&command, 100 + i as u32, unix_ms, &mut buf)?;
        hub.send_to(&buf, control_addr)?;
        let mut ack = [0u8; 1024];
        let len = hub.recv(&mut ack)?;
        assert_eq!(SystemPacket::parse(&ack[..len])?.ackid, 100 + i as u32);
    }
    // A replayed command is not applied again, but acknowledged again (the hub resends a
    // command whose ACK was lost); an unsigned one is refused.
    hub.send_to(&buf, control_addr)?;
    let mut ack = [0u8; 1024];
    let len = hub.recv(&mut ack)?;
    assert_eq!(SystemPacket::parse(&ack[..len])?.ackid, 102);
    // A new command with a used sequence (a hub restarted from 1) is refused, and not ACKed.
    CommandSigner::new(key_for_reports.clone(), 2).encode(
        &RelayCommand::Leave {
            channel: 3,
            uid: 31,
        },
        103,
        unix_ms,
        &mut buf,
    )?;
    hub.send_to(&buf, control_addr)?;
    packet::write_system(&mut buf, Operation::Kill, 0, 0)?;
    hub.send_to(&buf, control_addr)?;
    let port = channel_port(&handle, 3)?;
    let (x, y) = (Member::new(30)?, Member::new(31)?);
    let mut join = [0u8; PACKET_LEN];
    packet::write_join(&mut join, 30, 0, &token)?;
    x.socket.send_to(&join, port)?;
    y.send_system(port, Operation::Keepalive, 0)?;
    for uid in [30, 31] {
        wait_event(
            &events,
            |e| matches!(e, RelayEvent::MemberBound { uid: u, .. } if *u == uid),
        )
        .ok_or("member not bound")?;
    }
    x.send_data(port, 0x30)?;
    assert_eq!(y.recv().ok_or("no forward")?[8], 0x30);
    // The bindings were reported to the hub, signed.
    let mut reports = ReportVerifier::new(key_for_reports);
    let mut bound = Vec::new();
    for _ in 0..2 {
        let mut datagram = [0u8; 1024];
        let len = hub.recv(&mut datagram)?;
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        match reports.verify(&datagram[..len], unix_now)?.event {
            RelayEvent::MemberBound {
                channel: 3,
                uid,
                addr,
            } => bound.push((uid, addr)),
            other => return Err(format!("unexpected report {other:?}").into()),
        }
    }
    bound.sort();
    assert_eq!(
        bound,
        vec![(30, x.socket.local_addr()?), (31, y.socket.local_addr()?)]
    );
    let control = handle.stats()?.control.ok_or("no control counters")?;
    assert_eq!(control.accepted, 3);
    assert_eq!(control.replayed, 2);
    assert_eq!(control.bad_signature, 1);
    assert!(
        handle.stats()?.channels.iter().any(|&(c, _)| c == 3),
        "KILL unsigned was ignored"
    );
    handle.shutdown();
    thread.join().map_err(|_| "relay thread panicked")??;
    Ok(())
}
