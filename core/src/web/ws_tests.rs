//! The codec against tungstenite (a client of the real world) in both directions, and every
//! malformed frame refused with its close code.

use std::io::{Cursor, Read, Write};

use tungstenite::protocol::{Role, WebSocketContext, frame::coding::CloseCode};

use super::*;

/// A byte pipe for tungstenite: reads `input`, collects what it writes.
struct Duplex {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a tungstenite client writes for `msgs`.
fn client_bytes(msgs: Vec<tungstenite::Message>) -> Vec<u8> {
    let mut ctx = WebSocketContext::new(Role::Client, None);
    let mut io = Duplex {
        input: Cursor::new(vec![]),
        output: vec![],
    };
    for m in msgs {
        ctx.write(&mut io, m).expect("write");
    }
    ctx.flush(&mut io).expect("flush");
    io.output
}

fn decode_all(bytes: &[u8], chunk: usize) -> Vec<WsMessage> {
    let mut d = WsDecoder::new(1 << 20, 4 << 20);
    let mut got = vec![];
    for c in bytes.chunks(chunk) {
        d.push(c);
        while let Some(m) = d.next_message().expect("valid") {
            got.push(m);
        }
    }
    assert_eq!(d.buffered(), 0);
    got
}

#[test]
fn the_accept_key_of_rfc_6455() {
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
    assert!(!valid_key("c2hvcnQ="));
}

#[test]
fn tungstenite_client_frames_decode_in_any_split() {
    let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
    let bytes = client_bytes(vec![
        tungstenite::Message::text("héllo"),
        tungstenite::Message::binary(big.clone()),
        tungstenite::Message::binary(vec![7u8; 300]),
        tungstenite::Message::Ping(vec![1, 2, 3].into()),
        tungstenite::Message::Close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })),
    ]);
    let want = vec![
        WsMessage::Text("héllo".into()),
        WsMessage::Binary(big),
        WsMessage::Binary(vec![7u8; 300]),
        WsMessage::Ping(vec![1, 2, 3]),
        WsMessage::Close(Some((1000, "bye".into()))),
    ];
    for chunk in [1, 3, 1000, usize::MAX] {
        assert_eq!(decode_all(&bytes, chunk.min(bytes.len())), want);
    }
}

#[test]
fn server_frames_read_by_tungstenite() {
    let big = vec![9u8; 70_000];
    let mut out = vec![];
    encode_frame(Opcode::Text, "ünïcode".as_bytes(), &mut out);
    encode_frame(Opcode::Binary, &big, &mut out);
    encode_frame(Opcode::Binary, &[5u8; 200], &mut out);
    encode_frame(Opcode::Pong, b"p", &mut out);
    encode_close(4000, &"x".repeat(300), &mut out);
    let mut ctx = WebSocketContext::new(Role::Client, None);
    let mut io = Duplex {
        input: Cursor::new(out),
        output: vec![],
    };
    let mut got = vec![];
    while let Ok(m) = ctx.read(&mut io) {
        got.push(m);
    }
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0], tungstenite::Message::text("ünïcode"));
    assert_eq!(got[1], tungstenite::Message::binary(big));
    assert_eq!(got[2], tungstenite::Message::binary(vec![5u8; 200]));
    assert_eq!(got[3], tungstenite::Message::Pong(b"p".to_vec().into()));
    match &got[4] {
        tungstenite::Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 4000);
            assert_eq!(f.reason.len(), 123);
        }
        other => panic!("{other:?}"),
    }
}

/// A masked client frame (mask 1, 2, 3, 4).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    encode_masked_frame(first, payload, [1, 2, 3, 4], &mut out);
    out
}

#[test]
fn fragments_reassemble_with_control_frames_between() {
    let mut bytes = frame(0x01, b"hel");
    bytes.extend(frame(0x89, b"ping"));
    bytes.extend(frame(0x00, b"lo "));
    bytes.extend(frame(0x80, "wörld".as_bytes()));
    assert_eq!(
        decode_all(&bytes, 2),
        vec![
            WsMessage::Ping(b"ping".to_vec()),
            WsMessage::Text("hello wörld".into())
        ]
    );
}

fn error_of(bytes: &[u8], max_frame: usize, max_message: usize) -> WsError {
    let mut d = WsDecoder::new(max_frame, max_message);
    d.push(bytes);
    loop {
        match d.next_message() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("accepted {bytes:?}"),
            Err(e) => {
                assert_eq!(d.next_message(), Err(e), "sticky");
                return e;
            }
        }
    }
}

#[test]
fn malformed_frames_are_refused_with_their_close_code() {
    let unmasked = [0x81u8, 0x02, b'h', b'i'];
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (unmasked.to_vec(), 1002),
        (frame(0xC1, b"x"), 1002),        // RSV1
        (frame(0x83, b"x"), 1002),        // opcode 3
        (frame(0x09, b"x"), 1002),        // fragmented ping
        (frame(0x89, &[0u8; 126]), 1002), // long ping
        (frame(0x80, b"x"), 1002),        // continuation first
        ([frame(0x01, b"a"), frame(0x81, b"b")].concat(), 1002),
        (frame(0x81, &[0xff, 0xfe]), 1007), // not UTF-8
        (frame(0x88, &[0x03]), 1002),       // one-byte close
        (frame(0x88, &1005u16.to_be_bytes()), 1002),
        (frame(0x88, &[0x03, 0xe8, 0xff]), 1007), // reason not UTF-8
        (frame(0x82, &[0u8; 2000]), 1009),        // over max_frame
        (
            [frame(0x02, &[0u8; 900]), frame(0x80, &[0u8; 900])].concat(),
            1009,
        ),
        (vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1], 1002), // top bit of the length
        (vec![0x82, 0xfe, 0x00, 0x05], 1002),                // 16-bit length under 126
    ];
    for (bytes, code) in cases {
        assert_eq!(error_of(&bytes, 1024, 1500).code, code, "{bytes:?}");
    }
}
