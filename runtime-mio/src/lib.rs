//! Raw `mio::Poll` loop for the UDP channel relay hot path.
//!
//! The relay core (`switchboard_core::relay`) and this loop arrive with the channels work:
//! one UDP socket per channel, sockets drained to `WouldBlock` under a per-wake budget,
//! membership commands through a channel + `mio::Waker`, batched sends (GSO / `sendmmsg`).
//! See ARCHITECTURE.md.
#![forbid(unsafe_code)]
