//! Durable state of the hub: what leaves the hub as [`Change`]s for the runtime to persist
//! (before it sends anything that acknowledges them), and what the runtime loads back at start
//! as a [`StoredState`].

use serde::{Deserialize, Serialize};

/// Final status of a command, as on the wire (`CommandResult.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandStatus {
    /// Not finished (still running, or lost when the agent went away before answering).
    Pending,
    /// The operation succeeded.
    Success,
    /// The operation failed.
    Failed,
    /// The operation was cancelled (answered with CommandDone).
    Cancelled,
}

impl CommandStatus {
    /// The stable lower-case name used in storage and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Pending => "pending",
            CommandStatus::Success => "success",
            CommandStatus::Failed => "failed",
            CommandStatus::Cancelled => "cancelled",
        }
    }

    /// Parses [`CommandStatus::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => CommandStatus::Pending,
            "success" => CommandStatus::Success,
            "failed" => CommandStatus::Failed,
            "cancelled" => CommandStatus::Cancelled,
            _ => return None,
        })
    }
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent id (also bound into its certificate).
    pub agent_id: String,
    /// argon2id PHC string of the agent secret.
    pub secret_hash: String,
    /// CIDR networks the agent may connect from; empty means anywhere.
    pub allowed_networks: Vec<String>,
    /// Unix milliseconds when the agent was last seen; 0 = never.
    pub last_seen_unix_ms: i64,
}

/// One entry of the command log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// The command id (auto-incremented by the hub).
    pub command_id: i64,
    /// The agent it runs on.
    pub agent_id: String,
    /// Operation name, e.g. "echo.Echo".
    pub operation: String,
    /// The command data JSON as sent on the wire.
    pub data: String,
    /// Who issued it (user name of the session).
    pub issued_by: String,
    /// Status; `Pending` until a result or done arrived.
    pub status: CommandStatus,
    /// The `changed` flag of the result.
    pub changed: bool,
    /// Output of the result (or the output so far for a cancelled command).
    pub output: String,
    /// Unix milliseconds of creation.
    pub created_unix_ms: i64,
    /// Unix milliseconds of completion; 0 while pending.
    pub finished_unix_ms: i64,
}

/// A durable change produced by the hub. The runtime applies it to storage (atomically, one
/// transaction per change) **before** performing any later action the hub emitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Insert or replace an agent registration (keeps its data values).
    AgentRegistered(AgentRecord),
    /// Remove an agent and its data values (its command log stays).
    AgentRemoved {
        /// The agent id.
        agent_id: String,
    },
    /// Update the last-seen time of an agent.
    AgentSeen {
        /// The agent id.
        agent_id: String,
        /// Unix milliseconds.
        unix_ms: i64,
    },
    /// Set (insert or replace) a named data value of an agent.
    AgentData {
        /// The agent id.
        agent_id: String,
        /// Value name.
        name: String,
        /// JSON value.
        value_json: String,
    },
    /// A new command was created (before it is sent to the agent).
    CommandCreated(CommandRecord),
    /// A command finished (result or done arrived, or it was lost).
    CommandFinished {
        /// The command id.
        command_id: i64,
        /// Final status.
        status: CommandStatus,
        /// The `changed` flag.
        changed: bool,
        /// Output.
        output: String,
        /// Unix milliseconds.
        finished_unix_ms: i64,
    },
}

/// Everything the runtime loads into a new hub at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredState {
    /// Registered agents.
    pub agents: Vec<AgentRecord>,
    /// Data values: (agent id, name, JSON value).
    pub agent_data: Vec<(String, String, String)>,
    /// The highest command id ever used (0 if none); new ids continue after it.
    pub max_command_id: i64,
    /// Commands still pending when the hub stopped (they are finished as failed/lost at load).
    pub pending_commands: Vec<CommandRecord>,
}
