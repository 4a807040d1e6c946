//! The KV control front (seed 002): a TCP connection carrying binary requests, answered one by
//! one. [`KvConn`] is the per-connection machine; the hub executes the requests.

pub mod codec;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

pub use codec::{KvReply, KvRequest};
use codec::{PADDED_BODY, SIGNATURE_LEN, decode_exact, field_count};

use crate::machine::{Action, ApiMisuse, CloseReason};

/// Limits of a KV connection.
#[derive(Debug, Clone)]
pub struct KvConfig {
    /// Close a connection that sends nothing (or only part of a request) for this long.
    pub idle_timeout: Duration,
    /// Require the HMAC signature trailer on every request that acts as a user.
    pub require_signature: bool,
    /// Bytes buffered ahead (pipelined requests) before the client counts as abusive.
    pub max_buffered: usize,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            idle_timeout: Duration::from_secs(10),
            require_signature: false,
            max_buffered: 4096,
        }
    }
}

/// A request with its signature trailer, when the connection requires one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The client's nonce (Unix milliseconds, increasing per user).
    pub nonce: u64,
    /// The bytes the tag covers.
    pub covered: Vec<u8>,
    /// The tag.
    pub tag: [u8; 32],
}

/// What a KV connection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// A request to execute; answer with [`KvConn::reply`].
    Request {
        /// The request.
        request: KvRequest,
        /// Its signature, on a connection that requires them (GET_* carry none).
        signature: Option<Signed>,
    },
}

/// How the client pads requests, learned on the first request that could be followed by
/// padding (the reference client pads each body to 32 bytes and sends one request per
/// connection). A zero type (CMD_CREATE) makes the two forms ambiguous in one case only: an
/// exact-size JOIN/LEAVE followed by an exact-size CREATE for a uid below 2^32 on the same
/// connection reads as padding. Documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Padding {
    Unknown,
    Padded,
    Exact,
}

/// One KV control connection.
///
/// Driving contract as every machine: `handle_input`, `handle_timeout` at `poll_timeout`, drain
/// `poll_action`. Requests are answered in order: after an [`KvEvent::Request`] no further
/// request is decoded until [`reply`](Self::reply) is called.
#[derive(Debug)]
pub struct KvConn {
    cfg: KvConfig,
    buf: BytesMut,
    padding: Padding,
    /// Padding bytes that may follow the last request.
    pad_after: usize,
    awaiting_reply: bool,
    deadline: Instant,
    out: VecDeque<Action<KvEvent>>,
    closed: Option<CloseReason>,
}

impl KvConn {
    /// A connection accepted at `now`.
    pub fn new(now: Instant, cfg: KvConfig) -> Self {
        let deadline = now + cfg.idle_timeout;
        let mut c = KvConn {
            cfg,
            buf: BytesMut::new(),
            padding: Padding::Unknown,
            pad_after: 0,
            awaiting_reply: false,
            deadline,
            out: VecDeque::new(),
            closed: None,
        };
        c.out.push_back(Action::Timer(deadline));
        c
    }

    /// Bytes from the client.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if self.closed.is_some() {
            return;
        }
        if self.buf.len() + data.len() > self.cfg.max_buffered {
            return self.close(CloseReason::Protocol(
                "too many bytes ahead of the replies".into(),
            ));
        }
        self.buf.extend_from_slice(data);
        self.deadline = now + self.cfg.idle_timeout;
        self.out.push_back(Action::Timer(self.deadline));
        self.decode_next();
    }

    /// Answers the request last reported.
    pub fn reply(&mut self, reply: &KvReply) -> Result<(), ApiMisuse> {
        if self.closed.is_some() {
            return Err(ApiMisuse::Closed);
        }
        if !self.awaiting_reply {
            return Err(ApiMisuse::NotEstablished);
        }
        self.awaiting_reply = false;
        let mut b = BytesMut::new();
        reply.encode(&mut b);
        self.out.push_back(Action::Send(b.freeze()));
        self.decode_next();
        Ok(())
    }

    /// The idle deadline. Safe to call spuriously.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_none() && !self.awaiting_reply && now >= self.deadline {
            let what = if self.buf.is_empty() {
                "idle connection"
            } else {
                "request"
            };
            tracing::debug!(buffered = self.buf.len(), "{what} timed out");
            self.close(CloseReason::Timeout("KV request"));
        }
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<Action<KvEvent>> {
        self.out.pop_front()
    }

    /// When to call `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            None
        } else {
            Some(self.deadline)
        }
    }

    /// The sticky close reason.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closed.as_ref()
    }

    fn close(&mut self, reason: CloseReason) {
        self.closed = Some(reason.clone());
        self.buf.clear();
        self.out.push_back(Action::Close(reason));
    }

    fn skip_padding(&mut self) -> bool {
        if self.pad_after == 0 || self.padding == Padding::Exact {
            self.pad_after = 0;
            return true;
        }
        let zeros = self
            .buf
            .iter()
            .take(self.pad_after)
            .take_while(|b| **b == 0)
            .count();
        if zeros < self.buf.len().min(self.pad_after) {
            // A non-zero byte inside the window: the next request starts right here.
            self.padding = Padding::Exact;
            self.pad_after = 0;
            return true;
        }
        if self.buf.len() < self.pad_after {
            return false; // all zero so far: wait to know
        }
        self.buf.advance(self.pad_after);
        self.pad_after = 0;
        self.padding = Padding::Padded;
        true
    }

    fn decode_next(&mut self) {
        if self.awaiting_reply || self.closed.is_some() || !self.skip_padding() {
            return;
        }
        let request = match decode_exact(&self.buf) {
            Ok(None) => return,
            Ok(Some((r, used))) => {
                let signed_len = if self.cfg.require_signature && r.actor().is_some() {
                    SIGNATURE_LEN
                } else {
                    0
                };
                if self.buf.len() < used + signed_len {
                    return;
                }
                let signature = (signed_len > 0).then(|| {
                    let covered = self.buf[..used + 8].to_vec();
                    let nonce =
                        u64::from_be_bytes(covered[used..used + 8].try_into().unwrap_or([0; 8]));
                    let mut tag = [0u8; 32];
                    tag.copy_from_slice(&self.buf[used + 8..used + SIGNATURE_LEN]);
                    Signed {
                        nonce,
                        covered,
                        tag,
                    }
                });
                self.buf.advance(used + signed_len);
                if signed_len == 0 && !self.cfg.require_signature {
                    let n = field_count(r.command_type()).unwrap_or(0);
                    self.pad_after = PADDED_BODY - 8 * n;
                }
                (r, signature)
            }
            Err(ty) => {
                // Unknown command: its size is unknown too, so the stream cannot be resynced.
                let mut b = BytesMut::new();
                KvReply::Err(5).encode(&mut b);
                self.out.push_back(Action::Send(b.freeze()));
                return self.close(CloseReason::Protocol(format!("unknown command type {ty}")));
            }
        };
        self.awaiting_reply = true;
        self.out.push_back(Action::Event(KvEvent::Request {
            request: request.0,
            signature: request.1,
        }));
    }

    /// Encoded bytes of a reply (for tests and clients).
    pub fn encode_reply(reply: &KvReply) -> Bytes {
        let mut b = BytesMut::new();
        reply.encode(&mut b);
        b.freeze()
    }
}

#[cfg(test)]
mod tests;
