//! Arbitrary bytes into the agent side of a link after its ServerHello: never a panic; after
//! Close nothing more is sent; every data request is answered.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard_core::link::{AgentConfig, AgentEvent, AgentLink, CommandStatusWire, LinkConfig, frame, msg};
use switchboard_core::machine::Action;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let cfg = AgentConfig { agent_id: "a".into(), secret: "s".into(), link: LinkConfig::default() };
    let mut link = AgentLink::new(now, cfg, 1);
    link.handle_input(now, &frame::encode(&msg::server_hello()));
    let _ = link.request(now, "data", "{}");
    let mut closed = false;
    let mut t = now;
    for chunk in data.chunks(9) {
        link.handle_input(t, chunk);
        t += Duration::from_millis(chunk[0] as u64 * 50);
        link.handle_timeout(t);
        while let Some(a) = link.poll_action() {
            match a {
                Action::Send(_) => assert!(!closed, "send after close"),
                Action::Close(_) => closed = true,
                Action::Event(AgentEvent::Command { command_id, .. }) => {
                    let _ = link.result(command_id, CommandStatusWire::Success, false, "ok");
                }
                Action::Event(AgentEvent::Cancel { command_id }) => {
                    let _ = link.done(command_id, CommandStatusWire::Cancelled, false, "");
                }
                _ => {}
            }
        }
    }
});
