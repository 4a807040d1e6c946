//! Local streams (seed 000): the source and the sink on the same instance. The same
//! [`StreamEndpoint`] machine on both ends, joined by an in-memory leg: nothing goes on a wire.

use std::time::Instant;

use super::{Side, StreamEndpoint, StreamEvent, StreamLimits};
use crate::machine::Action;

/// Which end of a local stream an event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalEnd {
    /// The end that opened the streams (their sink).
    Sink,
    /// The end that produces (their source).
    Source,
}

/// A sink endpoint and a source endpoint joined in memory.
///
/// Open on [`sink`](Self::sink), accept and send on [`source`](Self::source), and drain
/// [`poll_event`](Self::poll_event), which moves what each end sent to the other first.
///
/// ```
/// use std::time::Instant;
/// use switchboard_core::stream::*;
/// use switchboard_core::stream::local::LocalEnd;
///
/// let now = Instant::now();
/// let mut local = LocalStreams::new(StreamLimits::default());
/// let id = local.sink().open(OpenRequest { kind: "counter".into(), ..Default::default() }).unwrap();
/// while let Some((end, ev)) = local.poll_event(now) {
///     match (end, ev) {
///         (LocalEnd::Source, StreamEvent::Incoming { id, .. }) => {
///             local.source().accept(id, 0).unwrap();
///             local.source().send_data(id, 0, true, "1".into()).unwrap();
///         }
///         (LocalEnd::Sink, StreamEvent::Data { payload, .. }) => assert_eq!(&payload[..], b"1"),
///         _ => {}
///     }
/// }
/// # let _ = id;
/// ```
#[derive(Debug)]
pub struct LocalStreams {
    sink: StreamEndpoint,
    source: StreamEndpoint,
}

impl LocalStreams {
    /// Two joined ends with these limits.
    pub fn new(limits: StreamLimits) -> Self {
        LocalStreams {
            sink: StreamEndpoint::new(Side::Client, limits.clone()),
            source: StreamEndpoint::new(Side::Server, limits),
        }
    }

    /// The sink end (opens streams, consumes data).
    pub fn sink(&mut self) -> &mut StreamEndpoint {
        &mut self.sink
    }

    /// The source end (accepts streams, produces data).
    pub fn source(&mut self) -> &mut StreamEndpoint {
        &mut self.source
    }

    /// The next event of either end, after moving what was sent across the leg.
    pub fn poll_event(&mut self, now: Instant) -> Option<(LocalEnd, StreamEvent)> {
        loop {
            if let Some(e) = pump(&mut self.sink, &mut self.source, now) {
                return Some((LocalEnd::Sink, e));
            }
            if let Some(e) = pump(&mut self.source, &mut self.sink, now) {
                return Some((LocalEnd::Source, e));
            }
            if self.sink.is_idle() && self.source.is_idle() {
                return None;
            }
        }
    }
}

/// Moves `from`'s sends into `to` until `from` has an event for its owner.
fn pump(from: &mut StreamEndpoint, to: &mut StreamEndpoint, now: Instant) -> Option<StreamEvent> {
    while let Some(a) = from.poll_action() {
        match a {
            Action::Send(bytes) => to.handle_input(now, &bytes),
            Action::Event(e) => return Some(e),
            Action::Close(_) | Action::Timer(_) => {}
        }
    }
    None
}
