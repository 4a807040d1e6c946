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

/// A user of the hub (seed 002's uid with its permission flags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user id: never 0 (0 means "nobody" on the KV wire) and never with a 32-bit half
    /// equal to 0xFFFFFFFF (it would read as the system-packet magic).
    pub uid: u64,
    /// Unique name (`user-<uid>` for users registered over the nameless KV wire).
    pub name: String,
    /// Permission bits ([`crate::perm::Permissions`]).
    pub permissions: u64,
    /// Key for HMAC-signed KV control requests (hex), if the user has one.
    pub control_key: String,
    /// argon2id PHC string of the login password; empty = no password login.
    pub password_hash: String,
    /// TOTP secret (hex); empty = no TOTP (then no password login either).
    pub totp_secret: String,
    /// Unix ms after which the user may no longer log in; 0 = never.
    pub expires_unix_ms: i64,
}

/// A voice channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// The channel id.
    pub chid: u64,
    /// The user who created it (may delete it without rm_channel).
    pub owner: u64,
    /// Its UDP port.
    pub port: u16,
}

/// A certificate the hub issued (renewal) or saw at a handshake, and whether it is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// Serial number: lower-case hex of the bytes of its DER INTEGER (x509-parser's
    /// `raw_serial`), the form `switchboard certs` prints.
    pub serial: String,
    /// The agent id or user name it names (its subject CN).
    pub name: String,
    /// Unix ms after which it is no longer valid.
    pub not_after_unix_ms: i64,
    /// Unix ms of its revocation; 0 = not revoked.
    pub revoked_unix_ms: i64,
}

/// One entry of the hub's ordered event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Strictly increasing across the hub's life (never reused, also across restarts).
    pub order: u64,
    /// Unix ms when it happened.
    pub unix_ms: i64,
    /// The event type, e.g. "AgentConnected".
    pub kind: String,
    /// The event as a JSON object with `"@type"` = `kind`.
    pub json: String,
    /// Who may see it: any of these permission bits; 0 = every user.
    pub scope: u64,
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
    /// A user was registered.
    UserRegistered(UserRecord),
    /// A user was unregistered (its memberships go too; channels it owns stay).
    UserRemoved {
        /// The user id.
        uid: u64,
    },
    /// A channel was created.
    ChannelCreated(ChannelRecord),
    /// A channel was deleted (its memberships go too).
    ChannelDeleted {
        /// The channel id.
        chid: u64,
    },
    /// A user joined a channel.
    MemberJoined {
        /// Channel.
        chid: u64,
        /// User.
        uid: u64,
    },
    /// A user left a channel (or was kicked, or expired).
    MemberLeft {
        /// Channel.
        chid: u64,
        /// User.
        uid: u64,
    },
    /// Insert or replace a certificate record (issued, first seen, or revoked).
    Certificate(CertificateRecord),
    /// Append an event to the log (before anyone hears of it).
    EventLogged(EventRecord),
    /// Drop the events with an order below this (retention).
    EventsPruned {
        /// The oldest order kept.
        before_order: u64,
    },
    /// Insert or replace a secure-feed client.
    FeedClientSaved(FeedClientRecord),
    /// Remove a secure-feed client.
    FeedClientRemoved {
        /// Its id.
        client_id: String,
    },
    /// A feed client's INBOX sequence moves on (stored with the operation's own change, in a
    /// [`Change::Batch`], so that the operation runs exactly once).
    FeedSequence {
        /// The client.
        client_id: String,
        /// Its new last sequence.
        sequence: i64,
    },
    /// Several changes applied in one transaction (all or none).
    Batch(Vec<Change>),
}

/// A client of the secure feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedClientRecord {
    /// Its id (ASCII, as in its hello).
    pub client_id: String,
    /// SubjectPublicKeyInfo DER of its RSA public key.
    pub public_key_der: Vec<u8>,
    /// The hub user it acts as.
    pub user: String,
    /// The last INBOX sequence it sent (0 = none).
    pub last_sequence: i64,
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
    /// Users.
    pub users: Vec<UserRecord>,
    /// Channels.
    pub channels: Vec<ChannelRecord>,
    /// Memberships: (channel id, user id).
    pub members: Vec<(u64, u64)>,
    /// Certificates the hub issued or saw (with their revocation).
    pub certificates: Vec<CertificateRecord>,
    /// The newest order of the event log (0 = empty, ever).
    pub last_event_order: u64,
    /// The oldest order still stored (ignored when the log is empty).
    pub first_event_order: u64,
    /// The newest events (oldest first), to serve subscribers without reading storage.
    pub recent_events: Vec<EventRecord>,
    /// Secure-feed clients.
    pub feed_clients: Vec<FeedClientRecord>,
}
