//! A simulated secure-feed client: the real client machine of either generation, over a
//! WebSocket it frames itself, to the web face's `/feed` (a real WebConn on the hub's side of
//! the simulated network). It reconnects a second after losing its connection, resuming after
//! the last OUTBOX order it saw, and records what each connection delivered.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use switchboard_core::feed::client::{ClientEvent, FeedClient};
use switchboard_core::feed::crypto::{PrivateKey, PublicKey};
use switchboard_core::feed::messages::ServerMessage;
use switchboard_core::hub::ConnId;

use super::node::Out;

const UPGRADE: &str = "GET /feed HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A feed client node.
#[derive(Debug)]
pub struct FeedNode {
    /// Its id.
    pub client_id: String,
    key: PrivateKey,
    server: PublicKey,
    /// Its protocol version (None: v1).
    pub version: Option<u32>,
    pub(crate) conn: Option<ConnId>,
    client: Option<FeedClient>,
    upgraded: bool,
    buf: Vec<u8>,
    /// The OUTBOX orders each connection delivered, with the order it resumed after.
    pub sessions: Vec<(i64, Vec<i64>)>,
    /// The last OUTBOX order seen.
    pub last_seen_order: i64,
    /// Close codes it was sent, with when.
    pub closes: Vec<(Instant, Option<u16>)>,
    /// What would have killed a real client of its version.
    pub fatal: Vec<String>,
    /// WebSocket pings it got.
    pub pings: usize,
    /// INBOX payloads to send once open (sent again after a reconnect if not acknowledged
    /// by the handshake's sequence).
    pub queue: VecDeque<Vec<u8>>,
    /// Keep reconnecting.
    pub online: bool,
    reconnect_at: Option<Instant>,
}

impl FeedNode {
    pub(crate) fn new(
        client_id: &str,
        key: PrivateKey,
        server: PublicKey,
        version: Option<u32>,
    ) -> Self {
        FeedNode {
            client_id: client_id.into(),
            key,
            server,
            version,
            conn: None,
            client: None,
            upgraded: false,
            buf: vec![],
            sessions: vec![],
            last_seen_order: 0,
            closes: vec![],
            fatal: vec![],
            pings: 0,
            queue: VecDeque::new(),
            online: true,
            reconnect_at: None,
        }
    }

    /// Whether the handshake is done on the current connection.
    pub fn is_open(&self) -> bool {
        self.upgraded && self.client.as_ref().is_some_and(FeedClient::is_open)
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.reconnect_at
            .filter(|_| self.conn.is_none() && self.online)
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Out>) {
        if self.reconnect_at.is_some_and(|t| t <= now) && self.conn.is_none() && self.online {
            self.reconnect_at = None;
            out.push(Out::Connect);
        }
    }

    pub(crate) fn established(
        &mut self,
        _now: Instant,
        conn: ConnId,
        seed: u64,
        out: &mut Vec<Out>,
    ) {
        if self.conn != Some(conn) {
            return;
        }
        self.upgraded = false;
        self.buf.clear();
        self.client = Some(FeedClient::connect(
            &self.client_id,
            self.key.clone(),
            &self.server,
            self.version,
            self.last_seen_order,
            seed,
        ));
        self.sessions.push((self.last_seen_order, vec![]));
        out.push(Out::Send(conn, UPGRADE.as_bytes().to_vec()));
    }

    pub(crate) fn input(&mut self, _now: Instant, conn: ConnId, bytes: &[u8], out: &mut Vec<Out>) {
        if self.conn != Some(conn) {
            return;
        }
        self.buf.extend_from_slice(bytes);
        if !self.upgraded {
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            if !self.buf.starts_with(b"HTTP/1.1 101 ") {
                self.fatal.push("upgrade refused".into());
                out.push(Out::Fin(conn));
                return;
            }
            self.buf.drain(..end + 4);
            self.upgraded = true;
        }
        // Server frames: unmasked, whole (the web face never fragments).
        loop {
            let b = &self.buf;
            if b.len() < 2 {
                break;
            }
            let (len, at) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => {
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(l) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if b.len() < at + len {
                break;
            }
            let opcode = b[0] & 0x0f;
            let payload: Vec<u8> = b[at..at + len].to_vec();
            self.buf.drain(..at + len);
            match opcode {
                2 => self.frame(&payload),
                8 => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    self.closes.push((_now, code));
                    out.push(Out::Fin(conn));
                    return;
                }
                9 => {
                    self.pings += 1;
                    if self.version.is_none() {
                        self.fatal.push("a WebSocket ping to a v1 client".into());
                    }
                    out.push(Out::Send(conn, client_frame(0x8a, &payload)));
                }
                _ => {}
            }
        }
        self.flush(conn, out);
    }

    fn frame(&mut self, payload: &[u8]) {
        let Some(c) = &mut self.client else {
            return;
        };
        let before = c.events.len();
        c.handle_message(payload);
        let new: Vec<ClientEvent> = c.events[before..].to_vec();
        for e in new {
            match e {
                ClientEvent::Message(ServerMessage::Outbox { order, .. }) => {
                    self.last_seen_order = order;
                    if let Some(s) = self.sessions.last_mut() {
                        s.1.push(order);
                    }
                }
                ClientEvent::Fatal(f) => self.fatal.push(f),
                _ => {}
            }
        }
    }

    fn flush(&mut self, conn: ConnId, out: &mut Vec<Out>) {
        let Some(c) = &mut self.client else {
            return;
        };
        if c.is_open() {
            while let Some(p) = self.queue.pop_front() {
                c.send_inbox(&p, None);
            }
        }
        while let Some(m) = c.outgoing.pop_front() {
            out.push(Out::Send(conn, client_frame(0x82, &m)));
        }
    }

    /// Queues an INBOX payload (sent now if open).
    pub(crate) fn send_inbox(&mut self, payload: &[u8], out: &mut Vec<Out>) {
        self.queue.push_back(payload.to_vec());
        if let Some(conn) = self.conn
            && self.is_open()
        {
            self.flush(conn, out);
        }
    }

    pub(crate) fn transport_closed(&mut self, now: Instant, conn: ConnId, _why: &str) {
        if self.conn != Some(conn) {
            return;
        }
        self.conn = None;
        self.client = None;
        self.upgraded = false;
        self.reconnect_at = Some(now + Duration::from_secs(1));
    }
}

/// A masked client frame (mask 1, 2, 3, 4).
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    switchboard_core::web::ws::encode_masked_frame(first, payload, [1, 2, 3, 4], &mut out);
    out
}
