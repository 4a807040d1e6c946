//! The web face's connections: plain (ws, http) and TLS (wss, https) on the same port, told
//! apart by the first byte (a TLS handshake record starts with 0x16, an HTTP request with a
//! letter). Each connection runs a [`WebConn`] on its own task, between the socket and a native
//! session of the hub: JSON work stays off the hub loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_channel::Sender;
use async_net::TcpStream;
use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};
use futures_rustls::TlsAcceptor;
use switchboard_core::hub::{ConnId, PeerInfo};
use switchboard_core::web::{WebConfig, WebConn, WebOutput};

use super::{Input, Writer};

/// The web face's settings.
#[derive(Clone)]
pub struct WebFront {
    /// TLS for wss/https (the hub's certificate, no client certificate); `None`: plain only.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Limits and deadlines.
    pub cfg: WebConfig,
    /// Connections per client address: each may do one secure-feed handshake (an RSA
    /// decryption), so this bounds the RSA work an address can cause.
    pub limiter: Arc<AddrLimiter>,
}

/// At most `max` connections per address in any `window` (fixed windows).
#[derive(Debug)]
pub struct AddrLimiter {
    max: u32,
    window: Duration,
    seen: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (Instant, u32)>>,
}

impl AddrLimiter {
    /// `max` connections per address per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        AddrLimiter {
            max,
            window,
            seen: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Whether a connection from `ip` at `now` is within the limit (and counts it).
    pub fn allow(&self, ip: std::net::IpAddr, now: Instant) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return true;
        };
        if seen.len() > 100_000 {
            let window = self.window;
            seen.retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        }
        let entry = seen.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.max
    }
}

impl WebFront {
    /// Plain and (with `tls`) TLS, default limits, no secure feed.
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        WebFront {
            tls,
            cfg: WebConfig::default(),
            limiter: Arc::new(AddrLimiter::new(60, Duration::from_secs(10))),
        }
    }

    /// Serves the secure feed at `/feed` with this server key.
    pub fn with_feed(mut self, key: Arc<switchboard_core::feed::crypto::PrivateKey>) -> Self {
        self.cfg.feed = Some(switchboard_core::feed::FeedConfig::new(key));
        self
    }
}

#[allow(clippy::disallowed_methods)] // the runtime's clock
fn now() -> Instant {
    Instant::now()
}

/// One accepted TCP connection of the web face.
pub(super) async fn web_connection(
    conn: ConnId,
    tcp: TcpStream,
    addr: SocketAddr,
    front: WebFront,
    hub: Sender<Input>,
) {
    if !front.limiter.allow(addr.ip(), now()) {
        return tracing::info!(%addr, "web: connection rate limit of the address, refused");
    }
    let deadline = front.cfg.request_timeout;
    let mut first = [0u8; 1];
    let peeked = async { Some(tcp.peek(&mut first).await) }
        .or(async {
            async_io::Timer::after(deadline).await;
            None
        })
        .await;
    match peeked {
        Some(Ok(1)) => {}
        Some(_) => return,
        None => return tracing::debug!(%addr, "web: nothing sent within the request deadline"),
    }
    match (&front.tls, first[0]) {
        (Some(tls), 0x16) => {
            let acceptor = TlsAcceptor::from(tls.clone());
            let handshake = async { Some(acceptor.accept(tcp).await) };
            let timeout = async {
                async_io::Timer::after(deadline).await;
                None
            };
            match handshake.or(timeout).await {
                Some(Ok(stream)) => serve(conn, stream, addr, front.cfg, hub).await,
                Some(Err(e)) => tracing::info!(%addr, error = %e, "web: TLS handshake failed"),
                None => tracing::info!(%addr, "web: TLS handshake timed out"),
            }
        }
        _ => serve(conn, tcp, addr, front.cfg, hub).await,
    }
}

enum Event {
    Socket(std::io::Result<usize>),
    Hub(Option<Bytes>),
    Timer,
}

async fn serve<S>(conn: ConnId, stream: S, addr: SocketAddr, cfg: WebConfig, hub: Sender<Input>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, rx) = async_channel::unbounded::<Bytes>();
    let queued = Arc::new(AtomicUsize::new(0));
    let writer_handle = Writer {
        tx,
        queued: queued.clone(),
    };
    let accepted = Input::Accepted {
        conn,
        peer: PeerInfo::web(addr),
        tx: writer_handle,
        kv: None,
    };
    if hub.send(accepted).await.is_err() {
        return;
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let mut web = WebConn::new(now(), cfg).with_feed_seed(seed);
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let mut buf = vec![0u8; 16 * 1024];
    let mut hub_open = true;
    'conn: loop {
        let wake = web.poll_timeout();
        let socket = async { Event::Socket(reader.read(&mut buf).await) };
        let from_hub = async {
            if hub_open {
                Event::Hub(rx.recv().await.ok())
            } else {
                std::future::pending().await
            }
        };
        let timer = async {
            match wake {
                Some(at) => {
                    async_io::Timer::at(at).await;
                }
                None => std::future::pending::<()>().await,
            }
            Event::Timer
        };
        let event = socket.or(from_hub).or(timer).await;
        match event {
            Event::Socket(Ok(0)) | Event::Socket(Err(_)) => break 'conn,
            Event::Socket(Ok(n)) => web.handle_socket(now(), &buf[..n]),
            Event::Hub(Some(bytes)) => {
                queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                web.handle_hub(now(), &bytes);
            }
            Event::Hub(None) => {
                hub_open = false;
                web.handle_hub_closed("closed by the hub");
            }
            Event::Timer => web.handle_timeout(now()),
        }
        while let Some(out) = web.poll_output() {
            match out {
                WebOutput::Socket(bytes) => {
                    let write = async { Some(writer.write_all(&bytes).await) };
                    // A client that does not read is not waited on forever.
                    let stalled = async {
                        async_io::Timer::after(Duration::from_secs(30)).await;
                        None
                    };
                    if !matches!(write.or(stalled).await, Some(Ok(()))) {
                        break 'conn;
                    }
                }
                WebOutput::Hub(bytes) => {
                    let data = Input::Data { conn, bytes };
                    if hub.send(data).await.is_err() {
                        break 'conn;
                    }
                }
                WebOutput::Close => {
                    let _ = writer.flush().await;
                    let _ = writer.close().await;
                    break 'conn;
                }
            }
        }
        let _ = writer.flush().await;
    }
    let _ = hub.send(Input::Closed { conn }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_per_address_and_window() {
        let l = AddrLimiter::new(3, Duration::from_secs(10));
        let t = Instant::now();
        let a: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
        let b: std::net::IpAddr = "10.0.0.2".parse().expect("ip");
        assert!((0..3).all(|_| l.allow(a, t)));
        assert!(!l.allow(a, t + Duration::from_secs(9)));
        assert!(l.allow(b, t), "another address has its own count");
        assert!(l.allow(a, t + Duration::from_secs(10)), "a new window");
    }
}
