//! An operator session to a hub over TLS: the core [`ClientSession`] driven on smol. Used by
//! `switchboard admin`, the demo and the tests.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use rustls_pki_types::ServerName;
use switchboard_core::link::LinkConfig;
use switchboard_core::link::msg::response_id;
use switchboard_core::machine::Action;
use switchboard_core::perm::Permissions;
use switchboard_core::session::{ClientEvent, ClientSession};
use switchboard_proto::message::Message as Body;

/// A connected, welcomed operator session.
pub struct AdminClient {
    tls: TlsStream<TcpStream>,
    session: ClientSession,
    inbox: std::collections::VecDeque<Body>,
    next_request_id: u64,
    /// The user the hub says we are.
    pub user: String,
    /// Our permissions.
    pub permissions: Permissions,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// Runs `fut` with a deadline.
pub async fn with_timeout<T>(
    d: Duration,
    what: &str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let what = what.to_string();
    fut.or(async move {
        async_io::Timer::after(d).await;
        Err(timed_out(&what))
    })
    .await
}

impl AdminClient {
    /// Connects to `addr`, verifies the hub as `server_name`, and waits for the welcome.
    pub async fn connect(
        addr: &str,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> io::Result<AdminClient> {
        let tcp =
            with_timeout(Duration::from_secs(10), "connect", TcpStream::connect(addr)).await?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = with_timeout(
            Duration::from_secs(10),
            "TLS handshake",
            TlsConnector::from(tls).connect(name, tcp),
        )
        .await?;
        let session = ClientSession::new(
            Instant::now(),
            LinkConfig::default(),
            concat!("switchboard/", env!("CARGO_PKG_VERSION")),
            seed(),
        );
        let mut c = AdminClient {
            tls,
            session,
            inbox: Default::default(),
            next_request_id: 1,
            user: String::new(),
            permissions: Permissions::NONE,
        };
        c.flush().await?;
        loop {
            if let Some((user, perms)) = c.step().await? {
                c.user = user;
                c.permissions = perms;
                return Ok(c);
            }
        }
    }

    /// A fresh request id.
    pub fn request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    /// Sends a request without waiting for its answer.
    pub async fn send(&mut self, body: Body) -> io::Result<()> {
        self.session
            .send_request(body)
            .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e))?;
        self.flush().await.map(|_| ())
    }

    /// Sends a request carrying `request_id` and waits (up to `timeout`) for the response or
    /// ControlError with that id. Other messages that arrive meanwhile are kept for
    /// [`next_message`](Self::next_message).
    pub async fn call(
        &mut self,
        request_id: u64,
        body: Body,
        timeout: Duration,
    ) -> io::Result<Body> {
        self.send(body).await?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self
                .inbox
                .iter()
                .position(|m| response_id(m) == Some(request_id))
            {
                let m = self
                    .inbox
                    .remove(pos)
                    .ok_or_else(|| io::Error::other("inbox"))?;
                return Ok(m);
            }
            if Instant::now() >= deadline {
                return Err(timed_out("request"));
            }
            with_timeout(
                deadline.saturating_duration_since(Instant::now()),
                "request",
                async { self.step().await.map(|_| ()) },
            )
            .await?;
        }
    }

    /// The next message from the hub (answering pings meanwhile), or an error when the
    /// session closes.
    pub async fn next_message(&mut self) -> io::Result<Body> {
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Ok(m);
            }
            self.step().await?;
        }
    }

    /// Keeps the session alive (answering pings, keeping messages for
    /// [`next_message`](Self::next_message)) for `d`.
    pub async fn idle(&mut self, d: Duration) -> io::Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            let r = with_timeout(
                until.saturating_duration_since(Instant::now()),
                "idle",
                async { self.step().await.map(|_| ()) },
            )
            .await;
            match r {
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                other => other?,
            }
        }
        Ok(())
    }

    /// Writes one frame a [`StreamEndpoint`](switchboard_core::stream::StreamEndpoint)
    /// produced (its `Action::Send`).
    pub async fn send_frame(&mut self, frame: bytes::Bytes) -> io::Result<()> {
        self.session
            .send_frame(frame)
            .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e))?;
        self.flush().await.map(|_| ())
    }

    /// Says Bye and closes.
    pub async fn close(mut self) -> io::Result<()> {
        self.session.close("done");
        let _ = self.flush().await;
        let _ = self.tls.close().await;
        Ok(())
    }

    /// One read or timer step. Returns the welcome when it arrives.
    async fn step(&mut self) -> io::Result<Option<(String, Permissions)>> {
        let deadline = self.session.poll_timeout();
        let mut buf = [0u8; 16 * 1024];
        let read = async { Some(self.tls.read(&mut buf).await) };
        let timer = async {
            match deadline {
                Some(d) => async_io::Timer::at(d).await,
                None => std::future::pending().await,
            };
            None
        };
        let got = read.or(timer).await;
        let now = Instant::now();
        match got {
            Some(Ok(0)) => self.session.handle_transport_closed("EOF"),
            Some(Ok(n)) => self.session.handle_input(now, &buf[..n]),
            Some(Err(e)) => self.session.handle_transport_closed(&e.to_string()),
            None => self.session.handle_timeout(now),
        }
        self.flush().await
    }

    /// Writes queued frames and collects events; returns the welcome if it came.
    async fn flush(&mut self) -> io::Result<Option<(String, Permissions)>> {
        let mut welcome = None;
        while let Some(a) = self.session.poll_action() {
            match a {
                Action::Send(b) => {
                    self.tls.write_all(&b).await?;
                    self.tls.flush().await?;
                }
                Action::Close(reason) => {
                    let _ = self.tls.close().await;
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        reason.to_string(),
                    ));
                }
                Action::Timer(_) => {}
                Action::Event(ClientEvent::Welcome { user, permissions }) => {
                    welcome = Some((user, permissions))
                }
                Action::Event(ClientEvent::Message(m)) => self.inbox.push_back(m),
            }
        }
        Ok(welcome)
    }
}

/// A seed from OS randomness for a runtime-owned machine.
pub fn seed() -> u64 {
    use rand::RngCore;
    rand::rngs::OsRng.next_u64()
}
