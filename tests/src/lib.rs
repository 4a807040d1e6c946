//! Deterministic simulation of Switchboard: the real `Hub`, real agent-link and operator
//! machines, a virtual clock and a seeded network. See [`sim`]. Also [`pg`], a throwaway
//! PostgreSQL cluster for the tests that need a real server.

pub mod pg;
pub mod sim;
