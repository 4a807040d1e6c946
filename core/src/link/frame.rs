//! The native framing: `u32` big-endian body length, then one protobuf `Message`.
//!
//! The decoder checks a frame's announced length against the configured maximum as soon as the
//! 4 length bytes are in, before any of the body is buffered, so an oversize length costs
//! nothing. The real RedPepper peers cap a frame at 65,536 bytes; so does the default here.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message as _;
use switchboard_proto::Message;

/// The default (and RedPepper's) maximum frame body size.
pub const DEFAULT_MAX_FRAME: usize = 65_536;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// A framing or decoding error of input from the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The announced body length is over the maximum.
    #[error("frame of {len} bytes is over the maximum of {max}")]
    TooLong {
        /// Announced length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The body is not a valid protobuf `Message`.
    #[error("invalid protobuf message: {0}")]
    Invalid(String),
}

/// Incremental frame decoder. Feed it any split of the byte stream with [`push`](Self::push),
/// then take frames with [`next_message`](Self::next_message) until it returns `Ok(None)`.
/// Errors are sticky: after one, every call returns it again.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: usize,
    error: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder accepting bodies of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max,
            error: None,
        }
    }

    /// Appends bytes that arrived.
    pub fn push(&mut self, data: &[u8]) {
        if self.error.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the buffered, undecoded bytes (to hand them to another decoder).
    pub fn take_buffered(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    /// The next complete frame body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max {
            let e = FrameError::TooLong { len, max: self.max };
            self.error = Some(e.clone());
            self.buf = BytesMut::new();
            return Err(e);
        }
        if self.buf.len() < HEADER_LEN + len {
            // Reserve what the frame needs so that the body arrives without reallocations.
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// The next complete, decoded message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        let Some(body) = self.next_frame()? else {
            return Ok(None);
        };
        match Message::decode(body) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                let e = FrameError::Invalid(e.to_string());
                self.error = Some(e.clone());
                self.buf = BytesMut::new();
                Err(e)
            }
        }
    }
}

/// Encodes one message as a frame (length prefix + body), ready to be written as one write.
pub fn encode(msg: &Message) -> Bytes {
    let len = msg.encoded_len();
    let mut out = BytesMut::with_capacity(HEADER_LEN + len);
    out.put_u32(len as u32);
    // Encoding into a buffer with enough capacity cannot fail.
    let _ = msg.encode(&mut out);
    out.freeze()
}

/// Appends one frame to a caller-owned buffer.
pub fn encode_into(msg: &Message, out: &mut BytesMut) {
    let len = msg.encoded_len();
    out.reserve(HEADER_LEN + len);
    out.put_u32(len as u32);
    let _ = msg.encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::msg;

    #[test]
    fn round_trip_any_split() {
        let frames: Vec<Message> = vec![
            msg::ping(42),
            msg::client_hello("agent1", "s3cret"),
            msg::command(7, "echo.Echo", r#"{"[args]": ["hi"]}"#),
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            encode_into(f, &mut wire);
        }
        for split in 1..wire.len() {
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut got = Vec::new();
            for chunk in wire.chunks(split) {
                d.push(chunk);
                while let Some(m) = d.next_message().expect("valid frames") {
                    got.push(m);
                }
            }
            assert_eq!(got, frames, "split {split}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn oversize_length_rejected_from_header_alone() {
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 4, 1]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLong {
                len: 1025,
                max: 1024
            })
        );
        // sticky
        d.push(&[0; 10]);
        assert!(d.next_frame().is_err());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn exact_maximum_accepted() {
        let mut d = FrameDecoder::new(8);
        d.push(&[0, 0, 0, 8]);
        d.push(&[0; 8]);
        assert_eq!(d.next_frame().expect("fits").map(|b| b.len()), Some(8));
    }

    #[test]
    fn garbage_body_is_an_error() {
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_message(), Err(FrameError::Invalid(_))));
    }

    #[test]
    fn redpepper_wire_bytes() {
        // Ping{data: 5} as a 0.0.17 peer writes it: type=PING(13) field 1, ping = field 14.
        let wire = encode(&msg::ping(5));
        assert_eq!(&wire[..], &[0, 0, 0, 6, 0x08, 13, 0x72, 2, 0x08, 5]);
        // ServerHello{version: 1}: type=11, server_hello = field 11.
        let wire = encode(&msg::server_hello());
        assert_eq!(&wire[..], &[0, 0, 0, 6, 0x08, 11, 0x5a, 2, 0x08, 1]);
        // Bye: type=12, field 13.
        let wire = encode(&msg::bye("x"));
        assert_eq!(&wire[..], &[0, 0, 0, 7, 0x08, 12, 0x6a, 3, 0x0a, 1, b'x']);
    }
}
