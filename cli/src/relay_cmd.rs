//! The UDP relay, wired to the hub: in the hub's process (a mio thread), or as a separate
//! `switchboard relay` process taking HMAC-signed system packets on a control port.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchboard_core::relay::{
    CommandKey, CommandSigner, Operation, PACKET_LEN, RelayCommand, ReportVerifier, SystemPacket,
};
use switchboard_runtime_mio::{ControlPort, RelayHandle, RelayServer, RelayServerConfig};
use switchboard_runtime_smol::server::RelayBridge;

/// The key file the hub and a separate relay share (32 random bytes, hex, mode 0600).
pub const KEY_FILE: &str = "relay.key";

/// Reads the relay key, creating it if missing.
pub fn ensure_key(dir: &Path) -> io::Result<CommandKey> {
    let path = dir.join(KEY_FILE);
    if !path.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let secret = switchboard_runtime_smol::secret::generate_secret();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => f.write_all(secret.as_bytes())?,
            // The other side created it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    read_key(&path)
}

/// Reads a relay key file.
pub fn read_key(path: &Path) -> io::Result<CommandKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let bytes = hex::decode(text.trim())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "relay key is not hex"))?;
    Ok(CommandKey::new(&bytes))
}

/// Forwards the relay's events (a std channel) into an async channel the hub task reads.
fn forward_events(
    rx: std::sync::mpsc::Receiver<switchboard_core::relay::RelayEvent>,
) -> async_channel::Receiver<switchboard_core::relay::RelayEvent> {
    let (tx, out) = async_channel::unbounded();
    std::thread::Builder::new()
        .name("relay-events".into())
        .spawn(move || {
            while let Ok(e) = rx.recv() {
                if tx.send_blocking(e).is_err() {
                    return;
                }
            }
        })
        .ok();
    out
}

/// Starts the relay loop in its own thread; returns the hub's bridge to it and its handle.
pub fn local_with(cfg: RelayServerConfig) -> io::Result<(RelayBridge, RelayHandle)> {
    let (server, handle, events) = RelayServer::new(cfg)?;
    tracing::info!(
        send_path = server.send_path().name(),
        "UDP relay starting in its own thread"
    );
    server.spawn()?;
    let commands = handle.clone();
    let bridge = RelayBridge {
        commands: Box::new(move |c| {
            if commands.send(c).is_err() {
                tracing::error!("the relay thread has stopped: membership change lost");
            }
        }),
        events: forward_events(events),
    };
    Ok((bridge, handle))
}

/// A signed command waiting for its ACK.
struct Pending {
    packet: [u8; PACKET_LEN],
    tries: u32,
    next: Instant,
}

/// The hub's bridge to a relay in another process: each command is signed, sent to the relay's
/// control port with an ackid, and sent again (the same packet; the relay refuses replays)
/// every 200 ms until acknowledged, at most 10 times.
pub fn remote(control: SocketAddr, key: CommandKey) -> io::Result<RelayBridge> {
    let socket = UdpSocket::bind(if control.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    socket.connect(control)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let pending: Arc<Mutex<BTreeMap<u32, Pending>>> = Arc::default();
    let recv_socket = socket.try_clone()?;
    let acks = pending.clone();
    // The relay reports its events (member expired or bound, channel failed) signed, to the
    // address its commands come from.
    let mut reports = ReportVerifier::new(key.clone());
    let (events_tx, events) = async_channel::unbounded();
    std::thread::Builder::new()
        .name("relay-control".into())
        .spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                if let Ok(n) = recv_socket.recv(&mut buf) {
                    match SystemPacket::parse(&buf[..n]) {
                        Ok(p) if p.operation == Operation::Ack => {
                            acks.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&p.ackid);
                        }
                        _ => match reports.verify(&buf[..n], unix_now()) {
                            Ok(r) => {
                                if events_tx.send_blocking(r.event).is_err() {
                                    return; // the hub is gone
                                }
                            }
                            Err(e) => tracing::debug!("relay packet refused: {e}"),
                        },
                    }
                }
                let now = Instant::now();
                let mut map = acks.lock().unwrap_or_else(|e| e.into_inner());
                map.retain(|ackid, p| {
                    if p.next > now {
                        return true;
                    }
                    if p.tries >= 10 {
                        tracing::warn!(ackid, "relay did not acknowledge a command after 10 tries");
                        return false;
                    }
                    p.tries += 1;
                    p.next = now + Duration::from_millis(200);
                    let _ = recv_socket.send(&p.packet);
                    true
                });
            }
        })?;
    // Sequences start at the hub's start time in µs: a relay that outlives a hub restart keeps
    // accepting the new hub's commands (it refuses sequences it has seen).
    let mut signer = CommandSigner::new(key, unix_now().as_micros() as u64);
    let mut next_ackid: u32 = 1;
    let send_socket = socket;
    let commands = Box::new(move |c: RelayCommand| {
        let ackid = next_ackid;
        next_ackid = next_ackid.wrapping_add(1).max(1);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut packet = [0u8; PACKET_LEN];
        if let Err(e) = signer.encode(&c, ackid, unix_ms, &mut packet) {
            tracing::error!(?c, "cannot encode relay command: {e}");
            return;
        }
        let _ = send_socket.send(&packet);
        pending.lock().unwrap_or_else(|e| e.into_inner()).insert(
            ackid,
            Pending {
                packet,
                tries: 1,
                next: Instant::now() + Duration::from_millis(200),
            },
        );
    });
    Ok(RelayBridge { commands, events })
}

/// Arguments of `relay`.
#[derive(clap::Args)]
pub struct RelayArgs {
    /// A configuration file (a `[serve]`, `[agent]` or `[relay]` table; flags override it). Default
    /// for serve: DATA_DIR/switchboard.toml when it exists.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Where to take the hub's signed commands (UDP).
    #[arg(long, default_value = "127.0.0.1:8090")]
    control: SocketAddr,
    /// The key shared with the hub: the hub's `DATA_DIR/relay.key` (created by whichever of
    /// the two starts first).
    #[arg(long)]
    key_file: std::path::PathBuf,
    /// Address the channel sockets bind to.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Seconds of silence after which a member is removed (seed 002: 60).
    #[arg(long, default_value_t = 60)]
    member_expiry: u64,
}

/// The relay machine's configuration with a member expiry in seconds.
pub fn relay_config(member_expiry_secs: u64) -> switchboard_core::relay::RelayConfig {
    switchboard_core::relay::RelayConfig {
        member_expiry: Duration::from_secs(member_expiry_secs.max(1)),
        ..switchboard_core::relay::RelayConfig::default()
    }
}

/// Runs a relay process until Ctrl-C.
pub fn run(args: RelayArgs) -> io::Result<ExitCode> {
    let dir = args.key_file.parent().unwrap_or(Path::new("."));
    let key = if args.key_file.file_name().is_some_and(|n| n == KEY_FILE) {
        ensure_key(dir)?
    } else {
        read_key(&args.key_file)?
    };
    let cfg = RelayServerConfig {
        bind_ip: args.bind,
        relay: relay_config(args.member_expiry),
        ..RelayServerConfig::default()
    };
    let (server, handle, events) = RelayServer::with_control_port(
        cfg,
        ControlPort {
            addr: args.control,
            key,
        },
    )?;
    println!(
        "switchboard: relay taking signed commands on {} (send path {})",
        server
            .control_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        server.send_path().name()
    );
    let join = server.spawn()?;
    std::thread::spawn(move || {
        while let Ok(e) = events.recv() {
            tracing::info!(?e, "relay event");
        }
    });
    let stopper = handle.clone();
    ctrlc::set_handler(move || stopper.shutdown()).map_err(io::Error::other)?;
    match join.join() {
        Ok(r) => r?,
        Err(_) => return Err(io::Error::other("relay thread panicked")),
    }
    Ok(ExitCode::SUCCESS)
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
