//! The server side of RFC 6455: the opening handshake's accept key, a frame decoder for
//! (masked) client frames that reassembles fragmented messages under size limits, and the
//! encoder of (unmasked) server frames. No extensions are negotiated, so RSV bits must be 0.

use base64::Engine as _;
use bytes::{Buf, BytesMut};
use sha1::{Digest, Sha1};

/// The GUID of RFC 6455 §1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Whether a `Sec-WebSocket-Key` is well formed (16 bytes, base64).
pub fn valid_key(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .is_ok_and(|k| k.len() == 16)
}

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Continuation of a fragmented message.
    Continuation = 0,
    /// UTF-8 text.
    Text = 1,
    /// Binary data.
    Binary = 2,
    /// Close.
    Close = 8,
    /// Ping.
    Ping = 9,
    /// Pong.
    Pong = 10,
}

/// A complete message (or control frame) from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping (payload at most 125 bytes).
    Ping(Vec<u8>),
    /// A pong.
    Pong(Vec<u8>),
    /// A close frame: its status code and reason, if it had them.
    Close(Option<(u16, String)>),
}

/// Why the decoder gave up: the close code to send and a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsError {
    /// Close status code (1002 protocol error, 1007 invalid data, 1009 too big).
    pub code: u16,
    /// Reason (goes into the close frame).
    pub reason: &'static str,
}

const fn protocol(reason: &'static str) -> WsError {
    WsError { code: 1002, reason }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "websocket error {}: {}", self.code, self.reason)
    }
}

impl std::error::Error for WsError {}

/// Decodes client frames. Feed bytes with [`push`](Self::push), take messages with
/// [`next_message`](Self::next_message) until `Ok(None)`; an error is sticky.
#[derive(Debug)]
pub struct WsDecoder {
    buf: BytesMut,
    max_frame: usize,
    max_message: usize,
    /// A fragmented data message being reassembled: text?, bytes so far.
    partial: Option<(bool, Vec<u8>)>,
    failed: Option<WsError>,
}

impl WsDecoder {
    /// A decoder refusing frames over `max_frame` and messages over `max_message` bytes.
    pub fn new(max_frame: usize, max_message: usize) -> Self {
        WsDecoder {
            buf: BytesMut::new(),
            max_frame,
            max_message,
            partial: None,
            failed: None,
        }
    }

    /// Bytes from the socket.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes received and not decoded yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<WsMessage>, WsError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let r = self.decode();
        if let Err(e) = r {
            self.failed = Some(e);
            self.buf.clear();
            self.partial = None;
        }
        r
    }

    fn decode(&mut self) -> Result<Option<WsMessage>, WsError> {
        loop {
            let Some((fin, opcode, payload)) = self.frame()? else {
                return Ok(None);
            };
            match opcode {
                Opcode::Ping => return Ok(Some(WsMessage::Ping(payload))),
                Opcode::Pong => return Ok(Some(WsMessage::Pong(payload))),
                Opcode::Close => return close_payload(&payload).map(|c| Some(WsMessage::Close(c))),
                Opcode::Text | Opcode::Binary => {
                    if self.partial.is_some() {
                        return Err(protocol("a new message inside a fragmented one"));
                    }
                    let text = opcode == Opcode::Text;
                    if fin {
                        return data_message(text, payload).map(Some);
                    }
                    self.partial = Some((text, payload));
                }
                Opcode::Continuation => {
                    let Some((text, mut so_far)) = self.partial.take() else {
                        return Err(protocol("a continuation without a message"));
                    };
                    if so_far.len() + payload.len() > self.max_message {
                        return Err(WsError {
                            code: 1009,
                            reason: "message too big",
                        });
                    }
                    so_far.extend_from_slice(&payload);
                    if fin {
                        return data_message(text, so_far).map(Some);
                    }
                    self.partial = Some((text, so_far));
                }
            }
        }
    }

    /// One whole frame, unmasked.
    fn frame(&mut self) -> Result<Option<(bool, Opcode, Vec<u8>)>, WsError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        if b[0] & 0x70 != 0 {
            return Err(protocol("reserved bits set"));
        }
        let opcode = match b[0] & 0x0f {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return Err(protocol("unknown opcode")),
        };
        if b[1] & 0x80 == 0 {
            return Err(protocol("client frames must be masked"));
        }
        let (len, at) = match b[1] & 0x7f {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                let n = u16::from_be_bytes([b[2], b[3]]) as u64;
                if n < 126 {
                    return Err(protocol("length not in its shortest form"));
                }
                (n, 4)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                let n = u64::from_be_bytes(l);
                if n >> 63 != 0 {
                    return Err(protocol("length with the top bit set"));
                }
                if n <= 0xffff {
                    return Err(protocol("length not in its shortest form"));
                }
                (n, 10)
            }
            n => (n as u64, 2),
        };
        let control = matches!(opcode, Opcode::Close | Opcode::Ping | Opcode::Pong);
        if control && (len > 125 || !fin) {
            return Err(protocol("control frames are short and not fragmented"));
        }
        if len > self.max_frame as u64 || (!control && len > self.max_message as u64) {
            return Err(WsError {
                code: 1009,
                reason: "frame too big",
            });
        }
        let len = len as usize;
        if b.len() < at + 4 + len {
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&b[at..at + 4]);
        self.buf.advance(at + 4);
        let mut payload = self.buf.split_to(len).to_vec();
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        Ok(Some((fin, opcode, payload)))
    }
}

fn data_message(text: bool, payload: Vec<u8>) -> Result<WsMessage, WsError> {
    if !text {
        return Ok(WsMessage::Binary(payload));
    }
    String::from_utf8(payload)
        .map(WsMessage::Text)
        .map_err(|_| WsError {
            code: 1007,
            reason: "text is not UTF-8",
        })
}

fn close_payload(p: &[u8]) -> Result<Option<(u16, String)>, WsError> {
    match p.len() {
        0 => Ok(None),
        1 => Err(protocol("a close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            // RFC 6455 §7.4 and the IANA registry (1012-1014 were added later).
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&p[2..]).map_err(|_| WsError {
                code: 1007,
                reason: "close reason is not UTF-8",
            })?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// Appends one unmasked, final server frame to `out`.
pub fn encode_frame(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode as u8);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends one final client frame, masked with `mask` (clients, tests, simulators; a real
/// client draws a fresh mask per frame). `first` is the first byte (FIN, RSV and opcode:
/// 0x81 text, 0x82 binary, 0x88 close, 0x89 ping, 0x8a pong).
pub fn encode_masked_frame(first: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push(first);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// A close frame with `code` and `reason` (cut to fit 125 bytes on a char boundary).
pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(&reason.as_bytes()[..cut]);
    encode_frame(Opcode::Close, &p, out);
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;
