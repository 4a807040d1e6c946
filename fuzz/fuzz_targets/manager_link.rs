//! Arbitrary bytes into the manager side of an agent link, before and after it accepted the
//! agent: never a panic; after Close, nothing more is sent.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard_core::link::{LinkConfig, ManagerEvent, ManagerLink, frame, msg};
use switchboard_core::machine::Action;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut link = ManagerLink::new(now, LinkConfig::default(), 1);
    let accept_first = data.first().is_some_and(|b| b & 1 == 1);
    if accept_first {
        link.handle_input(now, &frame::encode(&msg::client_hello("a", "s")));
    }
    let mut closed = false;
    let mut t = now;
    for chunk in data.chunks(7) {
        link.handle_input(t, chunk);
        t += Duration::from_millis(chunk[0] as u64 * 40);
        link.handle_timeout(t);
        while let Some(a) = link.poll_action() {
            match a {
                Action::Send(_) => assert!(!closed, "send after close"),
                Action::Close(_) => closed = true,
                Action::Event(ManagerEvent::Hello { .. }) => {
                    let _ = link.accept(t);
                }
                Action::Event(ManagerEvent::Request { request_id, .. }) => {
                    let _ = link.respond(request_id, true, "{}");
                }
                _ => {}
            }
        }
    }
});
