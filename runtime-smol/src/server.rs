//! The hub server on smol: one hub task runs the sans-IO [`Hub`]; one task per connection does
//! TLS and shuttles plaintext to and from the hub over channels; SQLite writes and argon2
//! verifications run on the blocking pool (`smol::unblock`), never on the hub loop.
//!
//! Ordering guarantee: the hub task drains every action the hub produced, applies all
//! `Persist` changes (one blocking batch) and only then performs the other actions in their
//! order. Delaying a send is always safe; sending an acknowledgement before its change is
//! durable is not. If storage fails the hub stops: nothing unpersisted is acknowledged.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_channel::{Receiver, Sender};
use async_net::{TcpListener, TcpStream};
use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use futures_rustls::TlsAcceptor;
use switchboard_core::hub::{
    Change, ConnId, Hub, HubAction, HubConfig, HubEvent, PeerCert, PeerInfo, SignTicket,
    SignedCertificate, VerifyTicket,
};

use switchboard_core::kv::KvConfig;
use switchboard_core::relay::{RelayCommand, RelayEvent};

use crate::store::Store;
use crate::{pki, secret};

mod hub_loop;
mod web;

use hub_loop::{Outlets, Signer, hub_task};
pub use web::WebFront;

/// How the hub server runs.
#[derive(Clone)]
pub struct ServerOptions {
    /// The hub machine's configuration.
    pub hub: HubConfig,
    /// TLS (client certificates required).
    pub tls: Arc<rustls::ServerConfig>,
    /// Deadline of the TLS handshake of each connection.
    pub tls_handshake_timeout: Duration,
    /// Seed of the hub's RNG (ping data, ...). Take it from OS randomness in production.
    pub seed: u64,
    /// Concurrent argon2 verifications (each costs ~19 MiB).
    pub verify_workers: usize,
    /// Bytes queued for one connection before it counts as a slow consumer and is closed.
    pub conn_queue_bytes: usize,
    /// Maximum simultaneous connections; more are refused at accept.
    pub max_connections: usize,
    /// The CA that signs agents' certificate renewals; without it renewals are refused.
    pub ca: Option<Arc<pki::Ca>>,
    /// Lifetime of renewed agent certificates, in days (clamped to a year).
    pub cert_days: u32,
}

impl ServerOptions {
    /// Defaults around a TLS configuration.
    pub fn new(tls: Arc<rustls::ServerConfig>, seed: u64) -> Self {
        ServerOptions {
            hub: HubConfig::default(),
            tls,
            tls_handshake_timeout: Duration::from_secs(10),
            seed,
            verify_workers: 2,
            conn_queue_bytes: 8 << 20,
            max_connections: 50_000,
            ca: None,
            cert_days: pki::MAX_CLIENT_CERT_DAYS,
        }
    }
}

enum Input {
    Relay(RelayEvent),
    Accepted {
        conn: ConnId,
        peer: PeerInfo,
        tx: Writer,
        kv: Option<KvConfig>,
    },
    Data {
        conn: ConnId,
        bytes: Vec<u8>,
    },
    Closed {
        conn: ConnId,
    },
    Verified {
        ticket: VerifyTicket,
        ok: bool,
    },
    Signed {
        ticket: SignTicket,
        result: Result<SignedCertificate, String>,
    },
    Shutdown,
}

/// The hub's handle on one connection's writer task: an unbounded queue (no memory reserved
/// up front, which matters at 10,000 connections) whose size in bytes is capped instead.
#[derive(Clone)]
struct Writer {
    tx: Sender<Bytes>,
    queued: Arc<AtomicUsize>,
}

struct VerifyJob {
    ticket: VerifyTicket,
    hash: Option<String>,
    secret: String,
}

/// A running hub server.
pub struct HubServer {
    /// The address of the native protocol.
    pub local_addr: SocketAddr,
    /// The address of the KV control front, if it runs.
    pub kv_addr: Option<SocketAddr>,
    /// The address of the web face, if it runs.
    pub web_addr: Option<SocketAddr>,
    input: Sender<Input>,
    task: smol::Task<io::Result<()>>,
    accept_tasks: Vec<smol::Task<()>>,
}

/// The listeners of a hub.
pub struct Listeners {
    /// The native protocol (mutual TLS).
    pub native: TcpListener,
    /// The KV control front (plain TCP) and its configuration.
    pub kv: Option<(TcpListener, KvConfig)>,
    /// The web face (HTTP/WebSocket, plain and TLS on one port) and its settings.
    pub web: Option<(TcpListener, WebFront)>,
}

/// The hub's link to a UDP relay: commands out, events back.
pub struct RelayBridge {
    /// Called with each membership change, in order, after its change is persisted.
    pub commands: Box<dyn FnMut(RelayCommand) + Send>,
    /// Events from the relay (member expired, bound, channel failed).
    pub events: Receiver<RelayEvent>,
}

impl HubServer {
    /// Starts the hub on `listener` (the native protocol) with the state loaded from `store`.
    /// Hub events are also sent to `events` if given (dropped when that channel is full).
    pub fn start(
        opts: ServerOptions,
        store: impl Store,
        listener: TcpListener,
        events: Option<Sender<HubEvent>>,
    ) -> io::Result<HubServer> {
        Self::start_with(
            opts,
            store,
            Listeners {
                native: listener,
                kv: None,
                web: None,
            },
            None,
            events,
        )
    }

    /// Starts the hub with every front: the native listener, the KV control listener if given,
    /// and the bridge to the UDP relay if given.
    pub fn start_with(
        opts: ServerOptions,
        store: impl Store,
        listeners: Listeners,
        relay: Option<RelayBridge>,
        events: Option<Sender<HubEvent>>,
    ) -> io::Result<HubServer> {
        let local_addr = listeners.native.local_addr()?;
        let kv_addr = match &listeners.kv {
            Some((l, _)) => Some(l.local_addr()?),
            None => None,
        };
        let web_addr = match &listeners.web {
            Some((l, _)) => Some(l.local_addr()?),
            None => None,
        };
        let now = Instant::now();
        let mut hub = Hub::new(opts.hub.clone(), opts.seed, now, unix_ms_now());
        let mut store: Box<dyn Store> = Box::new(store);
        let state = store.load().map_err(io::Error::other)?;
        tracing::info!(
            store = %store.describe(),
            agents = state.agents.len(),
            users = state.users.len(),
            channels = state.channels.len(),
            max_command_id = state.max_command_id,
            "hub state loaded"
        );
        hub.load(state, now);
        let (input_tx, input_rx) = async_channel::bounded::<Input>(4096);
        let (verify_tx, verify_rx) = async_channel::unbounded::<VerifyJob>();
        let dummy = secret::hash_secret(&secret::generate_secret(), secret::default_params())
            .map_err(io::Error::other)?;
        for _ in 0..opts.verify_workers.max(1) {
            smol::spawn(verify_worker(
                verify_rx.clone(),
                input_tx.clone(),
                dummy.clone(),
            ))
            .detach();
        }
        let relay_commands = match relay {
            Some(RelayBridge {
                commands,
                events: relay_events,
            }) => {
                let tx = input_tx.clone();
                smol::spawn(async move {
                    while let Ok(ev) = relay_events.recv().await {
                        if tx.send(Input::Relay(ev)).await.is_err() {
                            return;
                        }
                    }
                })
                .detach();
                Some(commands)
            }
            None => None,
        };
        let outlets = Outlets {
            signer: Signer {
                ca: opts.ca.clone(),
                days: opts.cert_days,
                input: input_tx.clone(),
            },
            writers: HashMap::new(),
            verify: verify_tx,
            events,
            relay: relay_commands,
            queue_limit: opts.conn_queue_bytes,
        };
        let task = smol::spawn(hub_task(hub, store, input_rx, outlets));
        let ids = Arc::new(AtomicU64::new(1));
        let mut accept_tasks = vec![smol::spawn(accept_loop(
            listeners.native,
            Front::Native(TlsAcceptor::from(opts.tls.clone())),
            opts.clone(),
            ids.clone(),
            input_tx.clone(),
        ))];
        if let Some((l, cfg)) = listeners.kv {
            accept_tasks.push(smol::spawn(accept_loop(
                l,
                Front::Kv(cfg),
                opts.clone(),
                ids.clone(),
                input_tx.clone(),
            )));
        }
        if let Some((l, front)) = listeners.web {
            accept_tasks.push(smol::spawn(accept_loop(
                l,
                Front::Web(front),
                opts.clone(),
                ids,
                input_tx.clone(),
            )));
        }
        Ok(HubServer {
            local_addr,
            kv_addr,
            web_addr,
            input: input_tx,
            task,
            accept_tasks,
        })
    }

    /// Stops accepting, says Bye to every connection, and waits for the hub task to end.
    pub async fn shutdown(self) -> io::Result<()> {
        for t in self.accept_tasks {
            t.cancel().await;
        }
        let _ = self.input.send(Input::Shutdown).await;
        self.task.await
    }

    /// Runs until `stop` completes (then shuts down as [`shutdown`](Self::shutdown)) or the
    /// hub task ends by itself (only on a storage failure, returned as the error).
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) -> io::Result<()> {
        let HubServer {
            input,
            mut task,
            accept_tasks,
            ..
        } = self;
        let ended = async { Some((&mut task).await) }
            .or(async {
                stop.await;
                None
            })
            .await;
        match ended {
            Some(r) => r,
            None => {
                for t in accept_tasks {
                    t.cancel().await;
                }
                let _ = input.send(Input::Shutdown).await;
                task.await
            }
        }
    }
}

/// Milliseconds since the Unix epoch, from the system clock.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn verify_worker(jobs: Receiver<VerifyJob>, hub: Sender<Input>, dummy: String) {
    let dummy = Arc::new(dummy);
    while let Ok(job) = jobs.recv().await {
        let dummy = dummy.clone();
        let ok =
            smol::unblock(move || secret::verify_secret(job.hash.as_deref(), &job.secret, &dummy))
                .await;
        if hub
            .send(Input::Verified {
                ticket: job.ticket,
                ok,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Which front a listener serves.
#[derive(Clone)]
enum Front {
    /// The native protocol over mutual TLS.
    Native(TlsAcceptor),
    /// The KV control wire over plain TCP.
    Kv(KvConfig),
    /// HTTP/WebSocket, plain or TLS.
    Web(WebFront),
}

async fn accept_loop(
    listener: TcpListener,
    front: Front,
    opts: ServerOptions,
    ids: Arc<AtomicU64>,
    hub: Sender<Input>,
) {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                async_io::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        if live.load(Ordering::Relaxed) >= opts.max_connections {
            tracing::warn!(%addr, "connection limit reached, refusing");
            continue;
        }
        let conn = ConnId(ids.fetch_add(1, Ordering::Relaxed));
        let _ = tcp.set_nodelay(true);
        let live = live.clone();
        live.fetch_add(1, Ordering::Relaxed);
        let hub = hub.clone();
        let front = front.clone();
        let handshake_timeout = opts.tls_handshake_timeout;
        smol::spawn(async move {
            match front {
                Front::Native(acceptor) => {
                    native_connection(conn, tcp, addr, acceptor, handshake_timeout, hub).await
                }
                Front::Kv(cfg) => {
                    let peer = PeerInfo {
                        addr,
                        cert_name: None,
                        cert: None,
                        web: false,
                    };
                    shuttle(conn, tcp, peer, Some(cfg), hub).await
                }
                Front::Web(front) => web::web_connection(conn, tcp, addr, front, hub).await,
            }
            live.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

async fn native_connection(
    conn: ConnId,
    tcp: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    hub: Sender<Input>,
) {
    let handshake = async { Some(acceptor.accept(tcp).await) };
    let timeout = async {
        async_io::Timer::after(handshake_timeout).await;
        None
    };
    let tls = match handshake.or(timeout).await {
        Some(Ok(tls)) => tls,
        Some(Err(e)) => return tracing::info!(%addr, error = %e, "TLS handshake failed"),
        None => return tracing::info!(%addr, "TLS handshake timed out"),
    };
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| pki::peer_identity(c.as_ref()).ok());
    let peer = match identity {
        Some(id) => PeerInfo {
            addr,
            cert_name: id.common_name,
            cert: Some(PeerCert {
                serial: id.serial,
                not_after_unix_ms: id.not_after_unix.saturating_mul(1000),
            }),
            web: false,
        },
        None => PeerInfo::anonymous(addr),
    };
    shuttle(conn, tls, peer, None, hub).await
}

/// Moves bytes between a connection and the hub task until either side ends it.
async fn shuttle<S>(
    conn: ConnId,
    stream: S,
    peer: PeerInfo,
    kv: Option<KvConfig>,
    hub: Sender<Input>,
) where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let (tx, rx) = async_channel::unbounded::<Bytes>();
    let queued = Arc::new(AtomicUsize::new(0));
    let handle = Writer {
        tx,
        queued: queued.clone(),
    };
    if hub
        .send(Input::Accepted {
            conn,
            peer,
            tx: handle,
            kv,
        })
        .await
        .is_err()
    {
        return;
    }
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let write = async {
        while let Ok(frame) = rx.recv().await {
            // One write per frame: one TLS record per frame (a Python peer can stall on two
            // frames coalesced into one record).
            if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            queued.fetch_sub(frame.len(), Ordering::Relaxed);
        }
        // The hub closed the connection: flush what was queued, then close.
        let _ = writer.close().await;
    };
    let read = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if hub
                        .send(Input::Data {
                            conn,
                            bytes: buf[..n].to_vec(),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    write.or(read).await;
    let _ = hub.send(Input::Closed { conn }).await;
}
