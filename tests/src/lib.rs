//! Deterministic simulation of Switchboard: the real `Hub`, real agent-link and operator
//! machines, a virtual clock and a seeded network. See [`sim`].

pub mod sim;
