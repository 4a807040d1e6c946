//! Raw `mio::Poll` loop for the UDP channel relay hot path (DESIGN.md §6).
//!
//! [`RelayServer`] owns a [`switchboard_core::relay::Relay`] and one non-blocking UDP socket per
//! channel (the port comes with the hub's `OpenChannel` command). It drains each readable socket
//! until `WouldBlock` under a per-wake budget, takes membership commands through a channel and a
//! `mio::Waker` ([`RelayHandle::send`]), sends events back through a channel, and sends in
//! batches that point at the receive buffers: UDP GSO (`UDP_SEGMENT`) for the datagrams of a
//! batch that go to the same destination, `sendmmsg` for the rest. Both are probed on the
//! running kernel at start ([`SendPath::detect`]); the path in use is logged and reported in
//! [`RelayStats`]. Socket buffers are sized explicitly ([`RelayServerConfig::socket_buffer`]).
//!
//! [`RelayServer::with_control_port`] is the separate-process mode: hub commands arrive as
//! HMAC-signed system packets on a control UDP port.
//!
//! [`compare::compare_naive`] is the end-to-end loopback benchmark against a naive `std::net`
//! relay ([`naive`]), measured as BENCHMARKS.md asks.
//!
//! ```no_run
//! use switchboard_core::relay::RelayCommand;
//! use switchboard_runtime_mio::{RelayServer, RelayServerConfig};
//!
//! let (server, handle, events) = RelayServer::new(RelayServerConfig::default())?;
//! let thread = server.spawn()?;
//! handle.send(RelayCommand::OpenChannel { channel: 1, port: 40_000 })?;
//! handle.send(RelayCommand::Join { channel: 1, uid: 7, token: None })?;
//! for event in events.iter().take(1) {
//!     println!("{event:?}");
//! }
//! handle.shutdown();
//! thread.join().expect("relay thread")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
// Reading the clock is this runtime's job (clippy.toml bans it for the core).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
#![deny(unsafe_code)]

// `unsafe` lives in `sys` (the calls) and `batch` (the messages it builds point into its buffers).
#[allow(unsafe_code)]
mod batch;
pub mod compare;
pub mod naive;
mod server;
#[allow(unsafe_code)]
mod sys;

pub use batch::SendCounters;
pub use server::{
    ControlPort, RelayHandle, RelayServer, RelayServerConfig, RelayStats, RelayStopped, SendPath,
};
pub use sys::{
    clock_ticks_per_second, current_thread_id, pin_current_thread, raise_open_file_limit,
};
