//! One connection of the web face: HTTP/1.1 requests, the WebSocket upgrade, and the
//! translation between JSON-RPC (or binary frames) and the native session the hub sees.
//!
//! The hub is not told about HTTP at all: a [`WebConn`] sits between the client's socket and
//! a native session of the hub (accepted with [`PeerInfo::web`](crate::hub::PeerInfo)), so the
//! same session machine, the same authorisation function and the same event log serve every
//! front, and the JSON work happens on the connection's task, off the hub loop.
//!
//! Paths: `GET /rpc` upgraded to WebSocket: JSON-RPC 2.0 in text frames, hub notifications
//! (command progress and results, event notices) as JSON-RPC notifications; `POST /rpc`: one
//! JSON-RPC request (or batch) per HTTP request, keep-alive, one at a time; `GET /stream`
//! upgraded: binary frames, each one native `Message` (the client speaks the session protocol
//! itself, starting with `SessionHello`); `GET /` and its assets: the web console.
//!
//! # Driving contract
//!
//! - [`WebConn::new`] when the TCP (or TLS) connection is up, and `Hub::accept` with
//!   `PeerInfo::web` for the same connection.
//! - Bytes from the client: [`handle_socket`](WebConn::handle_socket); bytes the hub sends to
//!   this connection: [`handle_hub`](WebConn::handle_hub); [`handle_timeout`](WebConn::handle_timeout)
//!   at [`poll_timeout`](WebConn::poll_timeout).
//! - After each call drain [`poll_output`](WebConn::poll_output): [`WebOutput::Socket`] bytes to
//!   the client, [`WebOutput::Hub`] bytes into `Hub::handle_input`, [`WebOutput::Close`]: close
//!   the socket once what came before is written (and tell the hub the connection ended).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::{self, HttpError, RequestHead};
use super::jsonrpc;
use super::static_files;
use super::ws::{self, Opcode, WsDecoder, WsMessage};
use crate::link::frame::FrameDecoder;

/// The cookie that carries a session (`Set-Cookie` on a successful login over HTTP).
pub const COOKIE_NAME: &str = "switchboard_session";

/// Limits and deadlines of the web face.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Largest request head (request line + header fields).
    pub max_head: usize,
    /// Largest `POST` body.
    pub max_body: usize,
    /// Largest WebSocket frame from a client.
    pub max_frame: usize,
    /// Largest WebSocket message (after reassembly).
    pub max_message: usize,
    /// A request (head and body) must arrive within this from its first byte, and the first
    /// request within this of the connection.
    pub request_timeout: Duration,
    /// An idle keep-alive HTTP connection is closed after this.
    pub keep_alive: Duration,
    /// A call the hub has not answered within this gets an internal error.
    pub call_timeout: Duration,
    /// Calls in flight per connection; more are answered with an error at once.
    pub max_pending: usize,
    /// A WebSocket client silent this long is pinged; silent twice as long, closed.
    pub ws_idle: Duration,
    /// Largest native frame accepted from the hub (its `max_frame`).
    pub max_hub_frame: usize,
    /// The secure feed at `/feed` (its server key); `None`: no feed.
    pub feed: Option<crate::feed::FeedConfig>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            max_head: 8 * 1024,
            max_body: 1 << 20,
            max_frame: 1 << 20,
            max_message: 4 << 20,
            request_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(30),
            call_timeout: Duration::from_secs(60),
            max_pending: 1024,
            ws_idle: Duration::from_secs(30),
            max_hub_frame: 16 << 20,
            feed: None,
        }
    }
}

/// What a [`WebConn`] asks its runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebOutput {
    /// Bytes for the client.
    Socket(Vec<u8>),
    /// Native frames for the hub's session of this connection.
    Hub(Vec<u8>),
    /// Close the socket after writing what came before.
    Close,
}

#[derive(Debug)]
enum Mode {
    /// Reading HTTP requests (`buf` holds what came so far).
    Http {
        buf: Vec<u8>,
        /// A POST /rpc being answered: no further request is read until it is.
        busy: bool,
    },
    /// WebSocket with JSON-RPC text frames.
    Rpc(WsDecoder),
    /// WebSocket with binary native frames.
    Stream(WsDecoder),
    /// WebSocket carrying the secure feed (binary frames of its own protocol).
    Feed(WsDecoder),
    /// Closed (or closing): input is ignored.
    Closed,
}

/// Where a group of answers goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Ws,
    Http { keep_alive: bool },
}

/// The answers to one JSON-RPC request (a call or a batch).
#[derive(Debug)]
struct Group {
    via: Via,
    batch: bool,
    slots: Vec<Option<Value>>,
    remaining: usize,
    set_cookie: Option<String>,
}

#[derive(Debug)]
struct Pending {
    group: u64,
    slot: usize,
    id: Value,
    deadline: Instant,
    login: bool,
}

/// One web-face connection. See the module documentation for the driving contract.
#[derive(Debug)]
pub struct WebConn {
    cfg: WebConfig,
    mode: Mode,
    out: VecDeque<WebOutput>,
    /// The request (or keep-alive, or WebSocket idle) deadline.
    deadline: Option<Instant>,
    /// The latest `now` given.
    now: Instant,
    pinged: bool,
    hub_frames: FrameDecoder,
    /// The translator has said SessionHello to the hub.
    session_started: bool,
    /// The last cookie this session renewed with.
    cookie: Option<String>,
    next_request_id: u64,
    pending: BTreeMap<u64, Pending>,
    /// Internal requests (cookie renewals) whose answers are not passed on.
    internal: BTreeMap<u64, ()>,
    groups: BTreeMap<u64, Group>,
    next_group: u64,
    /// The secure feed of a `/feed` connection.
    feed: Option<feed::FeedBridge>,
    /// Seed of the feed's RNG (keys, IVs, blinding).
    feed_seed: [u8; 32],
}

impl WebConn {
    /// A new connection at `now`.
    pub fn new(now: Instant, cfg: WebConfig) -> Self {
        let hub_frames = FrameDecoder::new(cfg.max_hub_frame);
        WebConn {
            deadline: Some(now + cfg.request_timeout),
            cfg,
            mode: Mode::Http {
                buf: Vec::new(),
                busy: false,
            },
            out: VecDeque::new(),
            now,
            pinged: false,
            hub_frames,
            session_started: false,
            cookie: None,
            next_request_id: 1,
            pending: BTreeMap::new(),
            internal: BTreeMap::new(),
            groups: BTreeMap::new(),
            next_group: 1,
            feed: None,
            feed_seed: [0; 32],
        }
    }

    /// Seeds the secure feed's RNG (session keys, IVs, RSA blinding): 32 bytes of OS
    /// randomness in a runtime. Without it a `/feed` connection uses zeros: tests only.
    pub fn with_feed_seed(mut self, seed: [u8; 32]) -> Self {
        self.feed_seed = seed;
        self
    }

    /// The next output, in order.
    pub fn poll_output(&mut self) -> Option<WebOutput> {
        self.out.pop_front()
    }

    /// Whether the connection is closed (nothing more will be read or sent).
    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let calls = self.pending.values().map(|p| p.deadline).min();
        let feed = self.feed.as_ref().and_then(|f| f.conn.poll_timeout());
        let feed_calls = self.feed_deadline();
        [self.deadline, calls, feed, feed_calls]
            .into_iter()
            .flatten()
            .min()
    }

    /// Bytes from the client.
    pub fn handle_socket(&mut self, now: Instant, data: &[u8]) {
        self.now = self.now.max(now);
        self.pinged = false;
        match &mut self.mode {
            Mode::Closed => {}
            Mode::Http { buf, busy } => {
                if buf.is_empty() && !*busy {
                    // The first byte of a request starts its deadline.
                    self.deadline = Some(now + self.cfg.request_timeout);
                }
                if buf.len() + data.len() > self.cfg.max_head + self.cfg.max_body {
                    return self.http_fail(HttpError::PayloadTooLarge);
                }
                buf.extend_from_slice(data);
                self.http_progress(now);
            }
            Mode::Rpc(d) | Mode::Stream(d) | Mode::Feed(d) => {
                d.push(data);
                self.deadline = Some(now + self.cfg.ws_idle);
                self.ws_progress(now);
            }
        }
    }

    /// Bytes the hub sent to this connection's session.
    pub fn handle_hub(&mut self, now: Instant, data: &[u8]) {
        self.now = self.now.max(now);
        if self.is_closed() {
            return;
        }
        self.hub_frames.push(data);
        loop {
            match self.hub_frames.next_frame() {
                Ok(Some(frame)) => self.hub_frame(&frame),
                Ok(None) => return,
                Err(e) => {
                    return self.end_session(&format!("bad frame from the hub: {e}"));
                }
            }
            if self.is_closed() {
                return;
            }
        }
    }

    /// The hub closed this connection's session (after its last bytes).
    pub fn handle_hub_closed(&mut self, why: &str) {
        if !self.is_closed() {
            self.end_session(why);
        }
    }

    /// Timers. Safe to call spuriously.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for rid in expired {
            if let Some(p) = self.pending.remove(&rid) {
                let e = jsonrpc::error(
                    p.id,
                    jsonrpc::INTERNAL_ERROR,
                    "the hub did not answer in time",
                    None,
                );
                self.fill(p.group, p.slot, e, None);
            }
        }
        if let Some(f) = &mut self.feed {
            f.conn.handle_timeout(now);
            self.drain_feed();
            self.feed_expire(now);
        }
        if self.deadline.is_none_or(|d| d > now) {
            return;
        }
        if matches!(self.mode, Mode::Feed(_))
            && !self.feed.as_ref().is_some_and(|f| f.conn.allows_ws_ping())
        {
            // A v1 client dies on a ping: its 0x00 heartbeats keep the connection busy instead.
            self.deadline = None;
            return;
        }
        match &self.mode {
            Mode::Closed => {}
            Mode::Http { buf, busy } => {
                if *busy {
                    self.deadline = None; // the call deadlines run
                } else if buf.is_empty() {
                    self.close();
                } else {
                    self.http_fail(HttpError::Timeout);
                }
            }
            Mode::Rpc(_) | Mode::Stream(_) | Mode::Feed(_) => {
                if self.pinged {
                    self.ws_close(1001, "no answer to ping");
                } else {
                    self.pinged = true;
                    let mut f = vec![];
                    ws::encode_frame(Opcode::Ping, b"switchboard", &mut f);
                    self.out.push_back(WebOutput::Socket(f));
                    self.deadline = Some(now + self.cfg.ws_idle);
                }
            }
        }
    }

    // --- HTTP ---------------------------------------------------------------------------

    fn http_progress(&mut self, now: Instant) {
        loop {
            let Mode::Http { buf, busy } = &mut self.mode else {
                return;
            };
            if *busy || buf.is_empty() {
                return;
            }
            let (head, at) = match http::parse_head(buf, self.cfg.max_head) {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(e) => return self.http_fail(e),
            };
            let Ok(len) = head.content_length() else {
                return self.http_fail(HttpError::BadRequest("invalid Content-Length"));
            };
            if len > self.cfg.max_body {
                return self.http_fail(HttpError::PayloadTooLarge);
            }
            if buf.len() < at + len {
                return;
            }
            let body = buf[at..at + len].to_vec();
            buf.drain(..at + len);
            self.http_request(now, head, body);
        }
    }

    fn http_request(&mut self, now: Instant, head: RequestHead, body: Vec<u8>) {
        let keep_alive = !head.has_token("connection", "close");
        let upgrade = head.has_token("upgrade", "websocket");
        match (head.method.as_str(), head.path.as_str()) {
            ("GET", "/rpc" | "/stream" | "/feed") if upgrade => self.upgrade(now, &head),
            ("GET", "/rpc" | "/stream" | "/feed") => self.http_fail(HttpError::BadRequest(
                "a WebSocket upgrade is expected here (or POST /rpc)",
            )),
            ("POST", "/rpc") => {
                let json_type = head
                    .header("content-type")
                    .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/json"));
                if !json_type {
                    return self.http_fail(HttpError::BadRequest(
                        "Content-Type must be application/json",
                    ));
                }
                let Ok(text) = std::str::from_utf8(&body) else {
                    self.http_reply(
                        keep_alive,
                        &jsonrpc::error(
                            Value::Null,
                            jsonrpc::PARSE_ERROR,
                            "the body is not UTF-8",
                            None,
                        ),
                        None,
                    );
                    return self.request_done(now, keep_alive);
                };
                if let Some(c) = head.cookie(COOKIE_NAME) {
                    self.use_cookie(c.to_owned());
                }
                if let Mode::Http { busy, .. } = &mut self.mode {
                    *busy = true;
                }
                let text = text.to_owned();
                self.rpc_text(now, &text, Via::Http { keep_alive });
            }
            ("GET", path) => match static_files::lookup(path) {
                Some((content_type, bytes)) => {
                    let resp = http::response(
                        200,
                        "OK",
                        &[
                            ("Content-Type", content_type),
                            ("Cache-Control", "no-cache"),
                            ("X-Content-Type-Options", "nosniff"),
                            ("Content-Security-Policy", static_files::CSP),
                            (
                                "Connection",
                                if keep_alive { "keep-alive" } else { "close" },
                            ),
                        ],
                        bytes,
                    );
                    self.out.push_back(WebOutput::Socket(resp));
                    self.request_done(now, keep_alive);
                }
                None => self.http_fail(HttpError::NotFound),
            },
            (_, "/rpc" | "/stream" | "/") => self.http_fail(HttpError::MethodNotAllowed),
            _ => self.http_fail(HttpError::NotFound),
        }
    }

    fn upgrade(&mut self, now: Instant, head: &RequestHead) {
        if !head.has_token("connection", "upgrade") {
            return self.http_fail(HttpError::BadRequest("Connection: Upgrade is missing"));
        }
        if head.header("sec-websocket-version") != Some("13") {
            let resp = http::response(
                426,
                "Upgrade Required",
                &[("Sec-WebSocket-Version", "13"), ("Connection", "close")],
                b"WebSocket version 13 only\n",
            );
            self.out.push_back(WebOutput::Socket(resp));
            return self.close();
        }
        let Some(key) = head
            .header("sec-websocket-key")
            .filter(|k| ws::valid_key(k))
        else {
            return self.http_fail(HttpError::BadRequest("invalid Sec-WebSocket-Key"));
        };
        let accept = ws::accept_key(key);
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        self.out.push_back(WebOutput::Socket(resp.into_bytes()));
        let leftover = match &mut self.mode {
            Mode::Http { buf, .. } => std::mem::take(buf),
            _ => vec![],
        };
        let decoder = WsDecoder::new(self.cfg.max_frame, self.cfg.max_message);
        let cookie = head.cookie(COOKIE_NAME).map(str::to_owned);
        if head.path == "/feed" {
            let Some(cfg) = self.cfg.feed.clone() else {
                return self.http_fail(HttpError::NotFound);
            };
            self.mode = Mode::Feed(decoder);
            self.start_session();
            self.feed = Some(feed::FeedBridge::new(now, cfg, self.feed_seed));
        } else if head.path == "/stream" {
            self.mode = Mode::Stream(decoder);
        } else {
            self.mode = Mode::Rpc(decoder);
            self.start_session();
            if let Some(c) = cookie {
                self.use_cookie(c);
            }
        }
        self.deadline = Some(now + self.cfg.ws_idle);
        if !leftover.is_empty() {
            self.handle_socket(now, &leftover);
        }
    }

    fn http_fail(&mut self, e: HttpError) {
        if self.is_closed() {
            return;
        }
        self.out.push_back(WebOutput::Socket(e.response()));
        self.close();
    }

    fn http_reply(&mut self, keep_alive: bool, body: &Value, set_cookie: Option<&str>) {
        let text = body.to_string();
        let cookie_header = set_cookie
            .map(|c| format!("{COOKIE_NAME}={c}; Path=/; HttpOnly; SameSite=Strict; Max-Age=900"));
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            (
                "Connection",
                if keep_alive { "keep-alive" } else { "close" },
            ),
        ];
        if let Some(h) = &cookie_header {
            headers.push(("Set-Cookie", h.as_str()));
        }
        let resp = if body.is_null() {
            http::response(204, "No Content", &headers[1..], b"")
        } else {
            http::response(200, "OK", &headers, text.as_bytes())
        };
        self.out.push_back(WebOutput::Socket(resp));
    }

    /// A request is answered: read the next one, or close.
    fn request_done(&mut self, now: Instant, keep_alive: bool) {
        if !keep_alive {
            return self.close();
        }
        if let Mode::Http { busy, buf } = &mut self.mode {
            *busy = false;
            self.deadline = Some(
                now + if buf.is_empty() {
                    self.cfg.keep_alive
                } else {
                    self.cfg.request_timeout
                },
            );
        }
        self.http_progress(now);
    }

    // --- WebSocket ----------------------------------------------------------------------

    fn ws_progress(&mut self, now: Instant) {
        loop {
            let (msg, stream) = match &mut self.mode {
                Mode::Rpc(d) => (d.next_message(), false),
                Mode::Stream(d) => (d.next_message(), true),
                Mode::Feed(d) => {
                    let msg = d.next_message();
                    match msg {
                        Ok(Some(WsMessage::Binary(b))) => {
                            if let Some(f) = &mut self.feed {
                                f.conn.handle_message(now, &b);
                            }
                            self.drain_feed();
                            continue;
                        }
                        Ok(Some(WsMessage::Text(_))) => {
                            return self.ws_close(1003, "/feed carries binary frames");
                        }
                        other => (other, true),
                    }
                }
                _ => return,
            };
            let msg = match msg {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => return self.ws_close(e.code, e.reason),
            };
            match msg {
                WsMessage::Ping(p) => {
                    let mut f = vec![];
                    ws::encode_frame(Opcode::Pong, &p, &mut f);
                    self.out.push_back(WebOutput::Socket(f));
                }
                WsMessage::Pong(_) => {}
                WsMessage::Close(_) => return self.ws_close(1000, ""),
                WsMessage::Text(t) if !stream => self.rpc_text(now, &t, Via::Ws),
                WsMessage::Binary(b) if stream => {
                    let mut f = Vec::with_capacity(4 + b.len());
                    f.extend_from_slice(&(b.len() as u32).to_be_bytes());
                    f.extend_from_slice(&b);
                    self.out.push_back(WebOutput::Hub(f));
                }
                WsMessage::Text(_) => {
                    return self.ws_close(1003, "/stream carries binary native frames");
                }
                WsMessage::Binary(_) => {
                    return self
                        .ws_close(1003, "/rpc carries JSON-RPC text frames (binary: /stream)");
                }
            }
        }
    }

    fn ws_close(&mut self, code: u16, reason: &str) {
        if self.is_closed() {
            return;
        }
        let mut f = vec![];
        ws::encode_close(code, reason, &mut f);
        self.out.push_back(WebOutput::Socket(f));
        self.close();
    }

    fn ws_text(&mut self, v: &Value) {
        let mut f = vec![];
        ws::encode_frame(Opcode::Text, v.to_string().as_bytes(), &mut f);
        self.out.push_back(WebOutput::Socket(f));
    }

    fn close(&mut self) {
        if !self.is_closed() {
            self.mode = Mode::Closed;
            self.deadline = None;
            self.pending.clear();
            self.groups.clear();
            self.out.push_back(WebOutput::Close);
        }
    }
}

mod feed;
mod rpc;

#[cfg(test)]
mod conformance_tests;
#[cfg(test)]
mod feed_tests;
#[cfg(test)]
mod parity_tests;
#[cfg(test)]
mod tests;
