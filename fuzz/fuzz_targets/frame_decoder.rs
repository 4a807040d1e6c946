//! Arbitrary bytes, split at arbitrary points, into the frame decoder: never a panic, never
//! more buffered than one maximum frame plus one input chunk, errors sticky.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_core::link::FrameDecoder;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let step = 1 + data[0] as usize % 64;
    let mut d = FrameDecoder::new(MAX);
    let mut failed = false;
    for chunk in data[1..].chunks(step) {
        d.push(chunk);
        loop {
            match d.next_message() {
                Ok(Some(_)) => assert!(!failed, "a message after an error"),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(d.buffered() <= 4 + MAX + step, "buffered {} bytes", d.buffered());
    }
});
