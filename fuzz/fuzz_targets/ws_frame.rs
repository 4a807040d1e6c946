//! Arbitrary bytes, split at arbitrary points, into the WebSocket frame decoder: never a
//! panic, errors sticky and with a valid close code, buffering bounded by one frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_core::web::ws::{WsDecoder, WsMessage};

const FRAME: usize = 4096;
const MESSAGE: usize = 16384;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let step = 1 + data[0] as usize % 64;
    let mut d = WsDecoder::new(FRAME, MESSAGE);
    let mut failed = None;
    for chunk in data[1..].chunks(step) {
        d.push(chunk);
        loop {
            match d.next_message() {
                Ok(Some(m)) => {
                    assert!(failed.is_none(), "a message after an error");
                    match m {
                        WsMessage::Binary(b) => assert!(b.len() <= MESSAGE),
                        WsMessage::Text(t) => assert!(t.len() <= MESSAGE),
                        WsMessage::Ping(p) | WsMessage::Pong(p) => assert!(p.len() <= 125),
                        WsMessage::Close(_) => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(matches!(e.code, 1002 | 1007 | 1009));
                    if let Some(f) = failed {
                        assert_eq!(f, e, "sticky");
                    }
                    failed = Some(e);
                    break;
                }
            }
        }
        assert!(d.buffered() <= 14 + FRAME + step, "buffered {}", d.buffered());
    }
});
