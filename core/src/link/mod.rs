//! The agent link (seed 001, RedPepper 0.0.x wire): framing, the manager-side and agent-side
//! machines, and the agent's reconnect policy.

pub mod agent;
pub mod backoff;
pub mod frame;
pub(crate) mod keepalive;
pub mod manager;
pub mod msg;
pub mod renewal;

use std::time::Duration;

pub use agent::{AgentConfig, AgentEvent, AgentLink, RequestError};
pub use backoff::Backoff;
pub use frame::{DEFAULT_MAX_FRAME, FrameDecoder, FrameError};
pub use manager::{ManagerEvent, ManagerLink};
pub use renewal::CertRenewal;
pub use switchboard_proto::command_result::Status as CommandStatusWire;

/// Timing and size limits of one link connection (either end).
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Maximum frame body size accepted (and produced: outputs are truncated to fit).
    pub max_frame: usize,
    /// Manager: the ClientHello and its authentication must complete within this.
    /// Agent: the ServerHello must arrive within this.
    pub hello_timeout: Duration,
    /// Send a Ping this often once established (RedPepper's default is 30 s).
    pub ping_interval: Duration,
    /// Close if a Ping is not answered within this.
    pub ping_timeout: Duration,
    /// Data requests are answered (agent: given up) after this.
    pub request_timeout: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            max_frame: DEFAULT_MAX_FRAME,
            hello_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Room left in a frame for fixed fields when a text field is truncated to fit.
pub(crate) const FRAME_MARGIN: usize = 256;
