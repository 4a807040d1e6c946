//! `switchboard stream`: open a live stream from an agent (metrics, tail, shell), or list the
//! hub's streams. Uses the admin certificate of the data dir, like `admin`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::FutureExt;
use switchboard_core::machine::Action;
use switchboard_core::stream::{
    Class, EndCode, OpenRequest, Side, StreamEndpoint, StreamEvent, StreamLimits,
};
use switchboard_proto as pb;
use switchboard_proto::message::Message as Body;
use switchboard_runtime_smol::client::AdminClient;

use crate::DataDirArg;
use crate::datadir::DataDir;

/// Arguments of `stream`.
#[derive(clap::Args)]
pub struct StreamArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The hub's address (default: the one `serve` recorded in the data dir).
    #[arg(long)]
    hub: Option<String>,
    #[command(subcommand)]
    command: StreamCommand,
}

#[derive(clap::Subcommand)]
enum StreamCommand {
    /// Open a stream and print what it carries until Ctrl-C (a shell: until Ctrl-] or exit).
    Open {
        /// The source agent (empty: the hub itself, kind hub.stats).
        #[arg(long, default_value = "")]
        agent: String,
        #[command(subcommand)]
        kind: Kind,
    },
    /// The hub's open streams: groups, sinks, bytes, drops.
    List,
}

#[derive(clap::Subcommand, Clone)]
enum Kind {
    /// CPU, memory, load, network and disk figures (latest class, shared by interval).
    Metrics {
        /// Sampling interval.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Follow a file inside the agent's --tail-dir (lossless, survives rotation).
    Tail {
        /// The file on the agent.
        path: String,
        /// Start at this byte (default: the end).
        #[arg(long)]
        offset: Option<u64>,
    },
    /// An interactive shell on the agent (needs run_command); Ctrl-] detaches.
    Shell,
    /// The hub's own figures.
    #[command(name = "hub.stats")]
    HubStats {
        /// Interval.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
}

/// Runs a stream command.
pub fn run(a: StreamArgs) -> io::Result<ExitCode> {
    let data = DataDir::open(&a.data.path())?;
    smol::block_on(async {
        let mut client = crate::admin::open_client(&data, a.hub.as_deref(), false).await?;
        match a.command {
            StreamCommand::List => list(&mut client).await,
            StreamCommand::Open { agent, kind } => open(&mut client, agent, kind).await,
        }
    })
}

async fn list(client: &mut AdminClient) -> io::Result<ExitCode> {
    let rid = client.request_id();
    let body = Body::ListStreamsRequest(pb::ListStreamsRequest { request_id: rid });
    match client.call(rid, body, Duration::from_secs(10)).await? {
        Body::ListStreamsResponse(r) => {
            if r.groups.is_empty() {
                println!("no streams");
            }
            for g in r.groups {
                let class = pb::StreamClass::try_from(g.class).map_or("?", |c| c.as_str_name());
                let source = if g.agent_id.is_empty() {
                    "hub"
                } else {
                    &g.agent_id
                };
                println!(
                    "group {:<4} {:<10} {:<12} key={:<20} {:<8} {} in {} frames, {} sink(s), {}",
                    g.group,
                    source,
                    g.kind,
                    g.key,
                    class,
                    g.bytes_in,
                    g.frames_in,
                    g.sinks.len(),
                    g.path
                );
                for s in g.sinks {
                    println!(
                        "    sink {:<16} {} bytes {} frames, {} dropped, {} queued, {} resyncs",
                        s.sink, s.bytes, s.frames, s.dropped_frames, s.queued_bytes, s.resyncs
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Body::ControlError(e) => Err(io::Error::other(e.message)),
        other => Err(io::Error::other(format!("unexpected answer {other:?}"))),
    }
}

async fn open(client: &mut AdminClient, agent: String, kind: Kind) -> io::Result<ExitCode> {
    let mut params = BTreeMap::new();
    let (name, class) = match &kind {
        Kind::Metrics { interval_ms } => {
            params.insert("interval_ms".to_string(), interval_ms.to_string());
            ("metrics", Class::Latest)
        }
        Kind::HubStats { interval_ms } => {
            params.insert("interval_ms".to_string(), interval_ms.to_string());
            ("hub.stats", Class::Latest)
        }
        Kind::Tail { path, offset } => {
            params.insert("path".to_string(), path.clone());
            if let Some(o) = offset {
                params.insert("offset".to_string(), o.to_string());
            }
            ("tail", Class::Lossless)
        }
        Kind::Shell => {
            let (cols, rows) = terminal::size();
            params.insert("cols".to_string(), cols.to_string());
            params.insert("rows".to_string(), rows.to_string());
            ("shell", Class::Lossless)
        }
    };
    let shell = matches!(kind, Kind::Shell);
    let mut ep = StreamEndpoint::new(Side::Client, StreamLimits::default());
    let id = ep
        .open(OpenRequest {
            kind: name.into(),
            agent_id: agent,
            class,
            params,
            ..Default::default()
        })
        .map_err(io::Error::other)?;
    // Keystrokes come from a thread reading stdin (raw mode while attached).
    let (keys_tx, keys_rx) = async_channel::bounded::<Vec<u8>>(16);
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        stop_tx.close();
    })
    .map_err(io::Error::other)?;
    let _raw = if shell { terminal::Raw::enter() } else { None };
    if shell {
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            loop {
                match io::Read::read(&mut io::stdin(), &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if keys_tx.send_blocking(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    let mut stdout = io::stdout();
    let mut pending_keys: Vec<u8> = Vec::new();
    let code = 'run: loop {
        while let Some(a) = ep.poll_action() {
            match a {
                Action::Send(f) => client.send_frame(f).await?,
                Action::Event(StreamEvent::Accepted { multicast, .. }) if !shell => {
                    eprintln!(
                        "stream open{}",
                        if multicast {
                            " (sharing a running source)"
                        } else {
                            ""
                        }
                    );
                }
                Action::Event(StreamEvent::Rejected { code, reason, .. }) => {
                    eprintln!(
                        "refused ({}): {reason}",
                        switchboard_core::stream::end_text(code)
                    );
                    break 'run ExitCode::FAILURE;
                }
                Action::Event(StreamEvent::Data {
                    payload, sequence, ..
                }) => {
                    if shell || name == "tail" {
                        stdout.write_all(&payload)?;
                    } else {
                        writeln!(stdout, "#{sequence} {}", String::from_utf8_lossy(&payload))?;
                    }
                    stdout.flush()?;
                    let _ = ep.consume(id, payload.len());
                }
                Action::Event(StreamEvent::Writable { .. }) => {}
                Action::Event(StreamEvent::Closed { code, reason, .. }) => {
                    if code != EndCode::Normal || !shell {
                        eprintln!(
                            "\r\nstream closed ({}): {reason}",
                            switchboard_core::stream::end_text(code)
                        );
                    }
                    break 'run if code == EndCode::Normal {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    };
                }
                _ => {}
            }
        }
        // Keystrokes within the source's credit; Ctrl-] (0x1d) detaches.
        if !pending_keys.is_empty() {
            let room = ep.send_capacity(id).min(pending_keys.len());
            if room > 0 {
                let chunk: Vec<u8> = pending_keys.drain(..room).collect();
                let _ = ep.send_data(id, 0, false, Bytes::from(chunk));
                continue;
            }
        }
        enum Wake {
            Hub(io::Result<Body>),
            Keys(Vec<u8>),
            Stop,
        }
        let wake = async { Wake::Hub(client.next_message().await) }
            .or(async {
                match keys_rx.recv().await {
                    Ok(k) => Wake::Keys(k),
                    Err(_) => std::future::pending().await,
                }
            })
            .or(async {
                let _ = stop_rx.recv().await;
                Wake::Stop
            })
            .await;
        match wake {
            Wake::Hub(Ok(m)) => {
                let _ = ep.handle_message(std::time::Instant::now(), m);
            }
            Wake::Hub(Err(e)) => return Err(e),
            Wake::Keys(k) => {
                if let Some(p) = k.iter().position(|b| *b == 0x1d) {
                    pending_keys.extend_from_slice(&k[..p]);
                    let _ = ep.close(id, EndCode::Normal, "detached");
                    while let Some(Action::Send(f)) = ep.poll_action() {
                        client.send_frame(f).await?;
                    }
                    break 'run ExitCode::SUCCESS;
                }
                pending_keys.extend_from_slice(&k);
            }
            Wake::Stop => {
                let _ = ep.close(id, EndCode::Normal, "interrupted");
                while let Some(Action::Send(f)) = ep.poll_action() {
                    client.send_frame(f).await?;
                }
                break 'run ExitCode::SUCCESS;
            }
        }
    };
    drop(_raw);
    let _ = client.idle(Duration::from_millis(100)).await;
    Ok(code)
}

/// The terminal: its size, and raw mode restored on drop.
mod terminal {
    /// Columns and rows of stdout's terminal (80x24 when not a terminal).
    pub fn size() -> (u16, u16) {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into the pointer we own.
        let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
        if ok && ws.ws_col > 0 && ws.ws_row > 0 {
            (ws.ws_col, ws.ws_row)
        } else {
            (80, 24)
        }
    }

    /// Raw mode on stdin while alive.
    pub struct Raw(libc::termios);

    impl Raw {
        /// Enters raw mode (None when stdin is not a terminal).
        pub fn enter() -> Option<Raw> {
            // SAFETY: termios is plain data; tcgetattr fills it for a valid descriptor.
            unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                    return None;
                }
                let saved = t;
                libc::cfmakeraw(&mut t);
                if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) != 0 {
                    return None;
                }
                Some(Raw(saved))
            }
        }
    }

    impl Drop for Raw {
        fn drop(&mut self) {
            // SAFETY: restores the attributes read in `enter` on the same descriptor.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
            }
        }
    }
}
