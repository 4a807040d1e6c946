//! Sans-IO protocol machines of Switchboard.
pub mod hub;
