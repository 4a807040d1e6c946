//! Streams (seed 000): a source produces events, a sink consumes them, between any two
//! instances or inside one (a local stream).
//!
//! Three pieces, all sans-IO in the core's one vocabulary (DESIGN.md §3):
//!
//! - [`StreamEndpoint`]: one end of the streams of one connection (an agent's sources, an
//!   operator's sinks). It opens, accepts and closes streams, keeps the credit of each, numbers
//!   the data and refuses what breaks the protocol.
//! - [`Router`]: the hub's part. It joins a sink leg to a source leg, fans one source out to
//!   many sinks (multicast groups keyed by source, kind and key), keeps a bounded queue per sink
//!   of a `latest` stream (dropping to the next key frame on overflow, asking the source for a
//!   fresh one at most every [`StreamLimits::resync_interval`]), and passes the credit of a
//!   `lossless` stream end to end.
//! - [`LocalStreams`]: a source and a sink on the same instance, the same machine over an
//!   in-memory leg (nothing on the wire).
//!
//! # Classes
//!
//! - **lossless** (file tail, shell): the sink grants credit in bytes of payload; the source
//!   sends only within it; the hub checks and forwards it, and holds no data of its own.
//!   Nothing is dropped. A sink that grants nothing for [`StreamLimits::stall_timeout`] while
//!   the source waits is closed with `SLOW_CONSUMER`.
//! - **latest** (metrics, anything frame-like): the hub grants the source credit from its own
//!   buffer (the source is never throttled by the slowest sink); each sink has a bounded byte
//!   queue in the hub; on overflow the hub drops that sink's queued data up to the newest key
//!   frame (or all of it, and skips to the next key frame) and asks the source for one.
//!
//! # Stream ids
//!
//! Per connection. Ids opened by the connection's client side (an agent, an operator) are even,
//! ids opened by the hub odd: the two ends of a connection never pick the same id.

mod endpoint;
pub mod local;
mod router;

pub use endpoint::{OpenRequest, SendOutcome, Side, StreamEndpoint, StreamError, StreamEvent};
pub use local::LocalStreams;
pub use router::{Router, RouterOutput, SourceRef};

use std::time::Duration;

pub use switchboard_proto::{StreamClass as Class, StreamEnd as EndCode};

/// Limits and timers of streams (defaults documented on each field).
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Credit a side grants when the opener says 0: 256 KiB.
    pub default_window: u32,
    /// Smallest credit a `latest` sink may grant (one frame must always fit): 64 KiB.
    pub min_latest_window: u32,
    /// Largest credit accepted in one grant or in total outstanding: 16 MiB.
    pub max_window: u64,
    /// Most payload bytes one StreamData may carry: 65,024 (a 64 KiB frame with room to spare).
    pub max_payload: usize,
    /// Bytes of data a `latest` sink may have queued in the hub before it skips: 256 KiB.
    pub sink_queue: usize,
    /// Credit the hub grants a `latest` source from its own buffer: 1 MiB.
    pub source_window: u32,
    /// At most one resync request per group per this: 500 ms.
    pub resync_interval: Duration,
    /// A lossless sink with no credit left for this long is closed as a slow consumer: 30 s.
    pub stall_timeout: Duration,
    /// Most streams (either end) on one connection: 64.
    pub max_per_conn: usize,
    /// Most sinks in one multicast group: 1,024.
    pub max_sinks: usize,
    /// Most parameters of one open, and the longest name or value: 32 and 1,024 bytes.
    pub max_params: usize,
    /// See `max_params`.
    pub max_param_len: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            default_window: 256 * 1024,
            min_latest_window: 64 * 1024,
            max_window: 16 * 1024 * 1024,
            max_payload: 65_024,
            sink_queue: 256 * 1024,
            source_window: 1024 * 1024,
            resync_interval: Duration::from_millis(500),
            stall_timeout: Duration::from_secs(30),
            max_per_conn: 64,
            max_sinks: 1024,
            max_params: 32,
            max_param_len: 1024,
        }
    }
}

/// True if `id` was opened by the hub side of a connection (odd ids).
pub fn opened_by_hub(id: u64) -> bool {
    id & 1 == 1
}

/// True for the message types of the streams range (100..119).
pub fn is_stream_message(body: &switchboard_proto::message::Message) -> bool {
    use switchboard_proto::message::Message as Body;
    matches!(
        body,
        Body::StreamOpen(_)
            | Body::StreamAccept(_)
            | Body::StreamReject(_)
            | Body::StreamData(_)
            | Body::StreamCredit(_)
            | Body::StreamResync(_)
            | Body::StreamClose(_)
    )
}

/// Checks the shape of an open: kind, key and parameters within the limits. The error says
/// what is wrong.
pub fn validate_open(o: &switchboard_proto::StreamOpen, l: &StreamLimits) -> Result<(), String> {
    if o.kind.is_empty() || o.kind.len() > 64 {
        return Err("kind must be 1 to 64 bytes".into());
    }
    if o.key.len() > 256 {
        return Err("key must be at most 256 bytes".into());
    }
    if o.agent_id.len() > 128 {
        return Err("agent_id must be at most 128 bytes".into());
    }
    if o.params.len() > l.max_params {
        return Err(format!("at most {} parameters", l.max_params));
    }
    if let Some((k, _)) = o
        .params
        .iter()
        .find(|(k, v)| k.len() > l.max_param_len || v.len() > l.max_param_len)
    {
        return Err(format!(
            "parameter {:?} is longer than {} bytes",
            k.chars().take(32).collect::<String>(),
            l.max_param_len
        ));
    }
    if Class::try_from(o.class).is_err() {
        return Err(format!("unknown class {}", o.class));
    }
    if u64::from(o.initial_credit) > l.max_window {
        return Err(format!("initial_credit above {} bytes", l.max_window));
    }
    Ok(())
}

/// The key a `latest` open shares a source under: the key it names, or else its parameters in
/// order (`interval_ms=1000`), so that identical requests share.
pub fn group_key(o: &switchboard_proto::StreamOpen) -> String {
    if !o.key.is_empty() {
        return o.key.clone();
    }
    o.params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The `interval_ms` parameter of a periodic source (metrics, hub.stats): 1,000 ms when
/// absent, 100 ms to one hour.
pub fn interval_param(o: &switchboard_proto::StreamOpen) -> Result<Duration, String> {
    let ms = match o.params.get("interval_ms") {
        None => 1000,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| format!("interval_ms must be a number of milliseconds, not {v:?}"))?,
    };
    if !(100..=3_600_000).contains(&ms) {
        return Err("interval_ms must be between 100 and 3600000".into());
    }
    Ok(Duration::from_millis(ms))
}

/// The text of an end code (`slow consumer`).
pub fn end_text(code: EndCode) -> &'static str {
    match code {
        EndCode::Normal => "normal",
        EndCode::SourceGone => "source gone",
        EndCode::SlowConsumer => "slow consumer",
        EndCode::NoRoute => "no route",
        EndCode::Unauthorised => "unauthorised",
        EndCode::Unsupported => "unsupported",
        EndCode::Invalid => "invalid",
        EndCode::Limit => "limit",
        EndCode::Protocol => "protocol error",
        EndCode::Shutdown => "shutdown",
        EndCode::SinkGone => "sink gone",
    }
}

#[cfg(test)]
mod endpoint_tests;
