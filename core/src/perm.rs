//! One permission model for every front: the KV flag set of seed 002 (bits 1..32, the seed's
//! order) extended with Switchboard's own bits from 64 upward (PROTOCOLS.md §2).

use std::fmt;

/// A set of permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Permissions(pub u64);

impl Permissions {
    /// No permission.
    pub const NONE: Permissions = Permissions(0);
    /// Create channels.
    pub const ADD_CHANNEL: Permissions = Permissions(1);
    /// Remove any channel (owners may remove their own without it).
    pub const RM_CHANNEL: Permissions = Permissions(2);
    /// Add any user to any channel.
    pub const ADD_USER: Permissions = Permissions(4);
    /// Remove any user from any channel.
    pub const KICK_USER: Permissions = Permissions(8);
    /// Register new users.
    pub const REGISTER_USER: Permissions = Permissions(16);
    /// Unregister any user.
    pub const DELETE_USER: Permissions = Permissions(32);
    /// Run commands on agents.
    pub const RUN_COMMAND: Permissions = Permissions(64);
    /// Register, remove and list agents, issue certificates.
    pub const MANAGE_AGENTS: Permissions = Permissions(128);
    /// Open streams from agents.
    pub const OPEN_STREAM: Permissions = Permissions(256);
    /// Every bit: the admin.
    pub const ADMIN: Permissions = Permissions(u64::MAX);

    /// Names and bits, in order.
    pub const NAMED: [(&'static str, Permissions); 9] = [
        ("add_channel", Self::ADD_CHANNEL),
        ("rm_channel", Self::RM_CHANNEL),
        ("add_user", Self::ADD_USER),
        ("kick_user", Self::KICK_USER),
        ("register_user", Self::REGISTER_USER),
        ("delete_user", Self::DELETE_USER),
        ("run_command", Self::RUN_COMMAND),
        ("manage_agents", Self::MANAGE_AGENTS),
        ("open_stream", Self::OPEN_STREAM),
    ];

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set.
    pub fn intersects(self, other: Permissions) -> bool {
        self.0 & other.0 != 0
    }

    /// Union.
    pub fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    /// Parses a comma-separated list of names (or "admin").
    pub fn parse_list(s: &str) -> Result<Permissions, String> {
        let mut p = Permissions::NONE;
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "admin" {
                return Ok(Permissions::ADMIN);
            }
            match Self::NAMED.iter().find(|(n, _)| *n == name) {
                Some((_, bit)) => p = p.union(*bit),
                None => return Err(format!("unknown permission {name:?}")),
            }
        }
        Ok(p)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Permissions::ADMIN {
            return f.write_str("admin");
        }
        let names: Vec<&str> = Self::NAMED
            .iter()
            .filter(|(_, b)| self.contains(*b))
            .map(|(n, _)| *n)
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// An operation that needs authorisation, with what it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation<'a> {
    /// List agents.
    ListAgents,
    /// Register or re-register an agent.
    RegisterAgent,
    /// Remove an agent.
    RemoveAgent,
    /// Set a data value of an agent.
    SetAgentData,
    /// Run a command on an agent.
    RunCommand,
    /// Cancel a command issued by `issued_by`.
    CancelCommand {
        /// Who issued the command.
        issued_by: &'a str,
    },
    /// Create a channel.
    CreateChannel,
    /// Delete a channel owned by `owner`.
    DeleteChannel {
        /// The channel's owner (uid).
        owner: u64,
    },
    /// Make `target` join a channel.
    JoinChannel {
        /// Who joins (uid).
        target: u64,
    },
    /// Make `target` leave a channel.
    LeaveChannel {
        /// Who leaves (uid).
        target: u64,
    },
    /// Register a new user with chosen permissions (open registration, auid 0, needs nothing).
    RegisterUser,
    /// Unregister `target`.
    UnregisterUser {
        /// Who is removed (uid).
        target: u64,
    },
    /// Read-only channel queries (GET_PORT, GET_CHANNELS): no permission needed.
    ListChannels,
    /// Register, list and remove secure-feed clients.
    ManageFeedClients,
    /// Follow the event log (what is seen is filtered event by event with `SeeEvent`).
    SubscribeEvents,
    /// Revoke certificates.
    RevokeCertificate,
    /// List the certificates the hub knows.
    ListCertificates,
    /// See an event of the log whose scope is `needs_any` (any of its bits; none = everyone).
    SeeEvent {
        /// The event's scope.
        needs_any: Permissions,
    },
    /// Open a stream of this kind (a shell also needs `run_command`: it runs anything).
    OpenStream {
        /// The stream kind.
        kind: &'a str,
    },
    /// List the hub's streams.
    ListStreams,
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission denied: {operation} needs {needs}")]
pub struct Denied {
    /// The operation's name.
    pub operation: &'static str,
    /// What it needs, in words.
    pub needs: &'static str,
}

/// The one authorisation function of the hub: may `user` with `perms` perform `op`?
///
/// `user` is the actor's name and `uid` its user id (0 if it has none); the seed's exceptions are
/// encoded here: owners delete their own channels, users join/leave/unregister themselves.
pub fn authorize(
    user: &str,
    uid: u64,
    perms: Permissions,
    op: &Operation<'_>,
) -> Result<(), Denied> {
    let (operation, ok, needs) = match op {
        Operation::ListAgents => (
            "ListAgents",
            perms.intersects(Permissions::MANAGE_AGENTS.union(Permissions::RUN_COMMAND)),
            "manage_agents or run_command",
        ),
        Operation::RegisterAgent => (
            "RegisterAgent",
            perms.contains(Permissions::MANAGE_AGENTS),
            "manage_agents",
        ),
        Operation::RemoveAgent => (
            "RemoveAgent",
            perms.contains(Permissions::MANAGE_AGENTS),
            "manage_agents",
        ),
        Operation::SetAgentData => (
            "SetAgentData",
            perms.contains(Permissions::MANAGE_AGENTS),
            "manage_agents",
        ),
        Operation::RunCommand => (
            "RunCommand",
            perms.contains(Permissions::RUN_COMMAND),
            "run_command",
        ),
        Operation::CancelCommand { issued_by } => (
            "CancelCommand",
            (perms.contains(Permissions::RUN_COMMAND) && *issued_by == user)
                || perms.contains(Permissions::MANAGE_AGENTS),
            "run_command (own commands) or manage_agents",
        ),
        Operation::CreateChannel => (
            "CreateChannel",
            perms.contains(Permissions::ADD_CHANNEL),
            "add_channel",
        ),
        Operation::DeleteChannel { owner } => (
            "DeleteChannel",
            (uid != 0 && *owner == uid) || perms.contains(Permissions::RM_CHANNEL),
            "rm_channel (or owning the channel)",
        ),
        Operation::JoinChannel { target } => (
            "JoinChannel",
            (uid != 0 && *target == uid) || perms.contains(Permissions::ADD_USER),
            "add_user (to add someone else)",
        ),
        Operation::LeaveChannel { target } => (
            "LeaveChannel",
            (uid != 0 && *target == uid) || perms.contains(Permissions::KICK_USER),
            "kick_user (to remove someone else)",
        ),
        Operation::RegisterUser => (
            "RegisterUser",
            perms.contains(Permissions::REGISTER_USER),
            "register_user",
        ),
        Operation::UnregisterUser { target } => (
            "UnregisterUser",
            (uid != 0 && *target == uid) || perms.contains(Permissions::DELETE_USER),
            "delete_user (to remove someone else)",
        ),
        Operation::ListChannels => ("ListChannels", true, "nothing"),
        Operation::SubscribeEvents => ("SubscribeEvents", true, "nothing"),
        Operation::ManageFeedClients => (
            "ManageFeedClients",
            perms.contains(Permissions::REGISTER_USER),
            "register_user",
        ),
        Operation::SeeEvent { needs_any } => (
            "SeeEvent",
            needs_any.0 == 0 || perms.intersects(*needs_any),
            "one of the event's permissions",
        ),
        Operation::OpenStream { kind } if *kind == "shell" => (
            "OpenStream(shell)",
            perms.contains(Permissions::OPEN_STREAM.union(Permissions::RUN_COMMAND)),
            "open_stream and run_command",
        ),
        Operation::OpenStream { .. } => (
            "OpenStream",
            perms.contains(Permissions::OPEN_STREAM),
            "open_stream",
        ),
        Operation::ListStreams => (
            "ListStreams",
            perms.contains(Permissions::OPEN_STREAM),
            "open_stream",
        ),
        Operation::RevokeCertificate => (
            "RevokeCertificate",
            perms.contains(Permissions::MANAGE_AGENTS),
            "manage_agents",
        ),
        Operation::ListCertificates => (
            "ListCertificates",
            perms.contains(Permissions::MANAGE_AGENTS),
            "manage_agents",
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(Denied { operation, needs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_refused_without_its_permission() {
        let ops = [
            Operation::ListAgents,
            Operation::RegisterAgent,
            Operation::RemoveAgent,
            Operation::SetAgentData,
            Operation::RunCommand,
            Operation::CancelCommand { issued_by: "bob" },
            Operation::RevokeCertificate,
            Operation::ListCertificates,
        ];
        for op in &ops {
            assert!(
                authorize("alice", 7, Permissions::NONE, op).is_err(),
                "{op:?}"
            );
            assert!(
                authorize("alice", 7, Permissions::ADMIN, op).is_ok(),
                "{op:?}"
            );
            assert!(
                authorize("alice", 7, Permissions::ADD_CHANNEL, op).is_err(),
                "{op:?}"
            );
        }
        assert!(
            authorize(
                "bob",
                8,
                Permissions::RUN_COMMAND,
                &Operation::CancelCommand { issued_by: "bob" }
            )
            .is_ok()
        );
        assert!(
            authorize(
                "alice",
                7,
                Permissions::RUN_COMMAND,
                &Operation::CancelCommand { issued_by: "bob" }
            )
            .is_err()
        );
        assert!(
            authorize(
                "alice",
                7,
                Permissions::RUN_COMMAND,
                &Operation::RegisterAgent
            )
            .is_err()
        );
        assert!(authorize("alice", 7, Permissions::RUN_COMMAND, &Operation::ListAgents).is_ok());
    }

    #[test]
    fn channel_operations_follow_the_seed() {
        let (me, other) = (7, 8);
        let each = [
            (Operation::CreateChannel, Permissions::ADD_CHANNEL),
            (
                Operation::DeleteChannel { owner: other },
                Permissions::RM_CHANNEL,
            ),
            (
                Operation::JoinChannel { target: other },
                Permissions::ADD_USER,
            ),
            (
                Operation::LeaveChannel { target: other },
                Permissions::KICK_USER,
            ),
            (Operation::RegisterUser, Permissions::REGISTER_USER),
            (
                Operation::UnregisterUser { target: other },
                Permissions::DELETE_USER,
            ),
        ];
        for (op, needed) in &each {
            assert!(
                authorize("me", me, Permissions::NONE, op).is_err(),
                "{op:?} without {needed}"
            );
            assert!(
                authorize("me", me, *needed, op).is_ok(),
                "{op:?} with {needed}"
            );
            // No other single bit is enough.
            for (_, bit) in Permissions::NAMED.iter().filter(|(_, b)| b != needed) {
                assert!(authorize("me", me, *bit, op).is_err(), "{op:?} with {bit}");
            }
        }
        // The seed's exceptions: owners, and acting on oneself.
        assert!(
            authorize(
                "me",
                me,
                Permissions::NONE,
                &Operation::DeleteChannel { owner: me }
            )
            .is_ok()
        );
        assert!(
            authorize(
                "me",
                me,
                Permissions::NONE,
                &Operation::JoinChannel { target: me }
            )
            .is_ok()
        );
        assert!(
            authorize(
                "me",
                me,
                Permissions::NONE,
                &Operation::LeaveChannel { target: me }
            )
            .is_ok()
        );
        assert!(
            authorize(
                "me",
                me,
                Permissions::NONE,
                &Operation::UnregisterUser { target: me }
            )
            .is_ok()
        );
        // uid 0 is nobody: it owns nothing and is nobody.
        assert!(
            authorize(
                "",
                0,
                Permissions::NONE,
                &Operation::DeleteChannel { owner: 0 }
            )
            .is_err()
        );
        assert!(authorize("", 0, Permissions::NONE, &Operation::ListChannels).is_ok());
    }

    #[test]
    fn parse_and_display() {
        let p = Permissions::parse_list("add_channel, run_command").expect("valid");
        assert_eq!(p, Permissions(1 | 64));
        assert_eq!(p.to_string(), "add_channel,run_command");
        assert_eq!(Permissions::parse_list("admin"), Ok(Permissions::ADMIN));
        assert!(Permissions::parse_list("root").is_err());
    }
}
