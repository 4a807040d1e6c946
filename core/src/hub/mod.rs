//! The hub.
pub mod persist;
