//! Arbitrary bytes into a KV control connection (plain and signed modes), answering every
//! request: never a panic, never more buffered than the configured limit.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use switchboard_core::kv::{KvConfig, KvConn, KvEvent, KvReply};
use switchboard_core::machine::Action;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let signed = data.first().is_some_and(|b| b & 1 == 1);
    let mut c = KvConn::new(now, KvConfig { require_signature: signed, ..KvConfig::default() });
    let mut closed = false;
    for chunk in data.chunks(13) {
        c.handle_input(now, chunk);
        while let Some(a) = c.poll_action() {
            match a {
                Action::Event(KvEvent::Request { .. }) => {
                    assert!(c.reply(&KvReply::Ok(1)).is_ok(), "a request must be answerable");
                }
                Action::Send(_) => assert!(!closed, "send after close"),
                Action::Close(_) => closed = true,
                Action::Timer(_) => {}
            }
        }
    }
});
