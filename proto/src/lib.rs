//! Protobuf types of the Switchboard native protocol, generated at build time from
//! `switchboard.proto` with prost-build + protox (no system `protoc`).
//!
//! The agent-link messages are wire-compatible with RedPepper 0.0.5–0.0.17; see the schema for
//! the number ranges reserved for each message family.
#![allow(missing_docs, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/switchboard.rs"));

pub use message::Message as Body;
