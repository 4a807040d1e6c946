//! The server side of one secure-feed connection: the three-step handshake, AES frames both
//! ways, sequenced INBOX messages, RPC calls, keepalive by the client's version, and one
//! uniform error for everything that fails to decrypt, verify or parse.
//!
//! The machine works on whole WebSocket binary messages (the WebSocket layer is the web
//! face's); who the client is (its public key, its last sequence, the challenge it must sign)
//! comes from the owner through [`FeedConn::handle_client`], so the hub can check the proof
//! itself.
//!
//! # Driving contract
//!
//! - [`FeedConn::new`] when the WebSocket is up; [`handle_message`](FeedConn::handle_message)
//!   for each binary message; [`handle_timeout`](FeedConn::handle_timeout) at
//!   [`poll_timeout`](FeedConn::poll_timeout).
//! - Drain [`poll_output`](FeedConn::poll_output) after every call: [`FeedOutput::Binary`]
//!   goes to the client as one binary message; [`FeedOutput::LookupClient`] is answered with
//!   [`handle_client`](FeedConn::handle_client); [`FeedOutput::Inbox`] and
//!   [`FeedOutput::Rpc`] are work for the hub (answer RPCs with
//!   [`send`](FeedConn::send) of an [`ServerMessage::RpcResponse`]); [`FeedOutput::Close`]
//!   closes the WebSocket with its code.
//! - WebSocket pings: only for clients of version >= 2 ([`FeedConn::allows_ws_ping`]); a v1
//!   client dies on one and gets a 0x00 frame every second instead.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::crypto::{self, PrivateKey, PublicKey};
use super::messages::{
    ClientKind, ClientMessage, Hello, KEY_LEN, Reply, ServerMessage, decode_signed, error_type,
};

/// The text of the one error a client gets for anything that fails to decrypt, verify or
/// parse (handshake or frame).
pub const UNIFORM_ERROR: &str = "invalid message";

/// Close codes the clients know.
pub mod close_code {
    /// A second connection with the same client id.
    pub const CONCURRENT: u16 = 4000;
    /// An INBOX sequence that does not continue the last one.
    pub const INVALID_SEQUENCE: u16 = 4001;
    /// Over the rate limit (final client).
    pub const RATE_LIMIT: u16 = 4009;
    /// The server restarts (shutdown).
    pub const RESTART: u16 = 1012;
    /// Anything that failed to decrypt, verify or parse.
    pub const POLICY: u16 = 1008;
}

/// Settings of the feed.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// The server's RSA key pair.
    pub server_key: Arc<PrivateKey>,
    /// The version the server announces to clients that send one.
    pub server_version: u32,
    /// The hello must arrive within this of the connection.
    pub hello_timeout: Duration,
    /// The signature must arrive within this of the reply.
    pub signature_timeout: Duration,
    /// The 0x00 heartbeat interval for clients without a version (they give up after 4.2 s).
    pub heartbeat: Duration,
    /// Messages per second a client may send (sustained).
    pub rate: f64,
    /// Messages a client may send at once.
    pub burst: f64,
}

impl FeedConfig {
    /// Defaults around `server_key`: version 5, 10 s deadlines, a heartbeat every second.
    pub fn new(server_key: Arc<PrivateKey>) -> Self {
        FeedConfig {
            server_key,
            server_version: 5,
            hello_timeout: Duration::from_secs(10),
            signature_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(1),
            rate: 50.0,
            burst: 100.0,
        }
    }
}

/// Who the client is, as the owner knows it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Its registered public key.
    pub public_key: PublicKey,
    /// The last INBOX sequence stored for it.
    pub last_sequence: i64,
    /// What it must sign (fresh random bytes, 32 is plenty).
    pub challenge: Vec<u8>,
}

/// What the machine asks of its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedOutput {
    /// One binary WebSocket message to the client.
    Binary(Vec<u8>),
    /// Who is `client_id`? Answer with [`FeedConn::handle_client`].
    LookupClient {
        /// The id from the hello.
        client_id: String,
    },
    /// The client signed the challenge: it holds the key registered for `client_id`.
    Authenticated {
        /// Its id.
        client_id: String,
        /// The last OUTBOX order it saw: replay what follows.
        last_seen_order: i64,
        /// The challenge it signed.
        challenge: Vec<u8>,
        /// Its signature (PSS-SHA512) over the challenge.
        signature: Vec<u8>,
        /// Its version (none for v1).
        version: Option<u32>,
    },
    /// An INBOX message, in sequence (exactly +1 on the last).
    Inbox {
        /// Its sequence.
        sequence: i64,
        /// JSON.
        json: Vec<u8>,
    },
    /// An RPC call.
    Rpc {
        /// The client's request id.
        request_id: i64,
        /// JSON.
        json: Vec<u8>,
    },
    /// Close the WebSocket with this code and reason.
    Close {
        /// Close code.
        code: u16,
        /// Reason.
        reason: String,
    },
}

#[derive(Debug)]
enum State {
    AwaitHello,
    LookingUp {
        hello: Hello,
    },
    AwaitSignature {
        hello: Hello,
        info: ClientInfo,
        server_key: [u8; KEY_LEN],
    },
    Open {
        version: Option<u32>,
        client_public: PublicKey,
        client_key: [u8; KEY_LEN],
        server_key: [u8; KEY_LEN],
        last_sequence: i64,
    },
    Closed,
}

/// One secure-feed connection, server side. See the module documentation.
#[derive(Debug)]
pub struct FeedConn {
    cfg: FeedConfig,
    state: State,
    rng: ChaCha20Rng,
    out: VecDeque<FeedOutput>,
    deadline: Option<Instant>,
    next_heartbeat: Option<Instant>,
    /// The close was emitted.
    closed: bool,
    /// The rate limit's bucket (messages) and when it was last filled.
    tokens: f64,
    filled_at: Instant,
}

impl FeedConn {
    /// A connection whose WebSocket opened at `now`; `seed` feeds its RNG (keys, IVs,
    /// blinding): 32 bytes of OS randomness in a runtime.
    pub fn new(now: Instant, cfg: FeedConfig, seed: [u8; 32]) -> Self {
        let burst = cfg.burst;
        FeedConn {
            deadline: Some(now + cfg.hello_timeout),
            cfg,
            state: State::AwaitHello,
            rng: ChaCha20Rng::from_seed(seed),
            out: VecDeque::new(),
            next_heartbeat: None,
            closed: false,
            tokens: burst,
            filled_at: now,
        }
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<FeedOutput> {
        self.out.pop_front()
    }

    /// The earliest timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline, self.next_heartbeat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the handshake is done.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The client's version, once known (`None`: v1, or not known yet).
    pub fn version(&self) -> Option<u32> {
        match &self.state {
            State::LookingUp { hello } | State::AwaitSignature { hello, .. } => hello.version,
            State::Open { version, .. } => *version,
            _ => None,
        }
    }

    /// Whether the WebSocket layer may ping this client (a v1 client dies on a ping; before
    /// the hello nobody knows).
    pub fn allows_ws_ping(&self) -> bool {
        match &self.state {
            State::LookingUp { hello } | State::AwaitSignature { hello, .. } => {
                hello.version.is_some()
            }
            State::Open { version, .. } => version.is_some(),
            _ => false,
        }
    }

    /// One binary WebSocket message from the client.
    pub fn handle_message(&mut self, now: Instant, data: &[u8]) {
        if self.closed {
            return;
        }
        if self.is_open() {
            return self.handle_frame(now, data);
        }
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Closed => {}
            State::AwaitHello => {
                let hello = crypto::oaep_decrypt(&self.cfg.server_key, &mut self.rng, data)
                    .ok()
                    .and_then(|pt| Hello::decode(&pt).ok());
                match hello {
                    Some(hello) => {
                        self.out.push_back(FeedOutput::LookupClient {
                            client_id: hello.client_id.clone(),
                        });
                        self.state = State::LookingUp { hello };
                    }
                    None => self.fail(),
                }
            }
            // Nothing may come before the reply is read: a client that talks now is broken.
            State::LookingUp { .. } => self.fail(),
            State::AwaitSignature {
                hello,
                info,
                server_key,
            } => {
                if !crypto::pss_verify(&info.public_key, &info.challenge, data) {
                    return self.fail();
                }
                self.out.push_back(FeedOutput::Authenticated {
                    client_id: hello.client_id.clone(),
                    last_seen_order: hello.last_seen_order,
                    challenge: info.challenge.clone(),
                    signature: data.to_vec(),
                    version: hello.version,
                });
                self.deadline = None;
                self.state = State::Open {
                    version: hello.version,
                    client_public: info.public_key,
                    client_key: hello.client_key,
                    server_key,
                    last_sequence: info.last_sequence,
                };
            }
            // Handled above, before the state is taken.
            State::Open { .. } => {}
        }
    }

    /// One frame of an open connection.
    fn handle_frame(&mut self, now: Instant, data: &[u8]) {
        let tokens = self.take_token(now);
        if tokens < -self.cfg.burst {
            // A whole burst over the limit (throttling ignored, or not known).
            return self.close(close_code::RATE_LIMIT, "rate limit");
        }
        let State::Open {
            version,
            client_public,
            client_key,
            last_sequence,
            ..
        } = &self.state
        else {
            return;
        };
        let (version, last_sequence) = (*version, *last_sequence);
        let Some(m) = Self::open_frame(version, client_public, client_key, data) else {
            return self.fail();
        };
        match m.kind {
            ClientKind::Inbox => {
                if m.id != last_sequence.wrapping_add(1) {
                    return self.close(
                        close_code::INVALID_SEQUENCE,
                        &format!(
                            "invalid sequence {} (expected {})",
                            m.id,
                            last_sequence.wrapping_add(1)
                        ),
                    );
                }
                if let State::Open { last_sequence, .. } = &mut self.state {
                    *last_sequence = m.id;
                }
                self.out.push_back(FeedOutput::Inbox {
                    sequence: m.id,
                    json: m.json,
                });
            }
            ClientKind::Rpc => self.out.push_back(FeedOutput::Rpc {
                request_id: m.id,
                json: m.json,
            }),
        }
        if tokens < 0.0 && version.unwrap_or(1) >= 4 {
            // The real client waits `level` milliseconds before its next INBOX: the time for
            // the bucket to hold a message again.
            let wait_ms = (-tokens / self.cfg.rate * 1000.0).ceil().max(1.0);
            let t = ServerMessage::Throttling {
                level: wait_ms.min(f64::from(i32::MAX)) as i32,
                sequence_id: m.id,
                order_id: 0,
            };
            self.send(&t);
        }
    }

    /// Takes one message's worth from the rate limit's bucket (it may go below zero: the
    /// message is still processed, the client is asked to slow down).
    fn take_token(&mut self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.filled_at).as_secs_f64();
        self.filled_at = now;
        self.tokens = (self.tokens + elapsed * self.cfg.rate).min(self.cfg.burst) - 1.0;
        self.tokens
    }

    fn open_frame(
        version: Option<u32>,
        client_public: &PublicKey,
        client_key: &[u8; KEY_LEN],
        data: &[u8],
    ) -> Option<ClientMessage> {
        let plain = crypto::open(client_key, data).ok()?;
        let signed = matches!(version, None | Some(2));
        let d = if signed {
            let (sig, d) = decode_signed(&plain).ok()?;
            if !crypto::pss_verify(client_public, d, sig) {
                return None;
            }
            d.to_vec()
        } else {
            plain
        };
        ClientMessage::decode(&d).ok()
    }

    /// The owner's answer to [`FeedOutput::LookupClient`] (`None`: no such client).
    pub fn handle_client(&mut self, now: Instant, info: Option<ClientInfo>) {
        let State::LookingUp { hello } = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        let Some(info) = info else {
            return self.fail();
        };
        let mut server_key = [0u8; KEY_LEN];
        self.rng.fill_bytes(&mut server_key);
        let reply = Reply {
            data_to_sign: info.challenge.clone(),
            last_seen_sequence: info.last_sequence,
            server_key,
            server_version: hello.version.map(|_| self.cfg.server_version),
        };
        let Ok(ct) = crypto::oaep_encrypt(&info.public_key, &mut self.rng, &reply.encode()) else {
            return self.fail();
        };
        self.out.push_back(FeedOutput::Binary(ct));
        self.deadline = Some(now + self.cfg.signature_timeout);
        if hello.version.is_none() {
            self.next_heartbeat = Some(now + self.cfg.heartbeat);
        }
        self.state = State::AwaitSignature {
            hello,
            info,
            server_key,
        };
    }

    /// Sends a server message; false (and nothing sent) if the connection is not open or the
    /// client's version does not know the message's type.
    pub fn send(&mut self, m: &ServerMessage) -> bool {
        let State::Open {
            version,
            server_key,
            ..
        } = &self.state
        else {
            return false;
        };
        let Some(plain) = m.encode(*version) else {
            return false;
        };
        let frame = crypto::seal(server_key, &mut self.rng, &plain);
        self.out.push_back(FeedOutput::Binary(frame));
        true
    }

    /// Closes with `code` (an ERROR_MESSAGE first when `code` is a protocol failure).
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.state = State::Closed;
        self.deadline = None;
        self.next_heartbeat = None;
        self.out.push_back(FeedOutput::Close {
            code,
            reason: reason.to_owned(),
        });
    }

    /// The one failure: an ERROR_MESSAGE if frames can be sent, then a close.
    fn fail(&mut self) {
        let error = ServerMessage::Error {
            error_type: error_type::INVALID_PAYLOAD,
            message: UNIFORM_ERROR.as_bytes().to_vec(),
        };
        // `fail` runs with the state already taken: restore nothing, send if we can.
        let _ = self.send(&error);
        self.close(close_code::POLICY, UNIFORM_ERROR);
    }

    /// Timers. Safe to call spuriously.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if self.deadline.is_some_and(|d| d <= now) {
            return self.close(close_code::POLICY, "handshake timed out");
        }
        if let Some(t) = self.next_heartbeat
            && t <= now
        {
            self.out.push_back(FeedOutput::Binary(vec![0]));
            self.next_heartbeat = Some(now + self.cfg.heartbeat);
        }
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
