//! A local stream (seed 000): source and sink on the same instance, the same stream machine
//! over an in-memory leg. An embedder opens one in a few lines.
#![allow(clippy::disallowed_methods)] // an example reads the clock

use std::time::Instant;

use switchboard_core::stream::local::LocalEnd;
use switchboard_core::stream::{Class, LocalStreams, OpenRequest, StreamEvent, StreamLimits};

fn main() {
    let now = Instant::now();
    let mut local = LocalStreams::new(StreamLimits::default());
    local
        .sink()
        .open(OpenRequest {
            kind: "counter".into(),
            class: Class::Lossless,
            window: 64,
            ..Default::default()
        })
        .expect("open");
    let mut next = 0u32;
    let mut got = Vec::new();
    while let Some((end, ev)) = local.poll_event(now) {
        match (end, ev) {
            // The source: accept, then produce as far as the sink's credit goes.
            (LocalEnd::Source, StreamEvent::Incoming { id, .. })
            | (LocalEnd::Source, StreamEvent::Writable { id }) => {
                let _ = local.source().accept(id, 0);
                while next < 100 {
                    let line = format!("{next}\n");
                    if local.source().send_capacity(id) < line.len() {
                        let _ = local.source().send_data(id, 0, false, line.into()); // blocked: Writable follows
                        break;
                    }
                    let _ = local.source().send_data(id, 0, false, line.into());
                    next += 1;
                }
            }
            // The sink: use the data, give the credit back.
            (LocalEnd::Sink, StreamEvent::Data { id, payload, .. }) => {
                got.extend_from_slice(&payload);
                let _ = local.sink().consume(id, payload.len());
            }
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(&got);
    println!(
        "{} lines through a 64-byte window, none lost",
        text.lines().count()
    );
    assert_eq!(text.lines().count(), 100);
}
