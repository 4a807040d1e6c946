//! Users, channels and memberships (seed 002): the operations every front reaches, each
//! authorised by [`perm::authorize`], persisted through [`Change`]s and pushed to the relay as
//! [`RelayCommand`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use rand_core::RngCore;

use super::{Change, ChannelRecord, Hub, HubAction, HubEvent, UserRecord};
use crate::perm::{self, Operation, Permissions};
use crate::relay::{ChannelId, JOIN_TOKEN_LEN, RelayCommand, RelayEvent, Uid};

/// Why a domain operation failed; the KV wire's error codes (PROTOCOLS.md §2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The server could not do it (e.g. no free UDP port). KV code 1.
    #[error("server error: {0}")]
    Server(String),
    /// A parameter names nothing that exists or is malformed. KV code 2.
    #[error("bad parameter: {0}")]
    Param(String),
    /// The request does not fit the current state (already a member, not a member). KV code 3.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Permission denied. KV code 4.
    #[error("{0}")]
    Access(String),
    /// Unknown command. KV code 5.
    #[error("not implemented: {0}")]
    NotImplemented(String),
}

impl DomainError {
    /// The KV wire error code.
    pub fn kv_code(&self) -> i32 {
        match self {
            DomainError::Server(_) => 1,
            DomainError::Param(_) => 2,
            DomainError::Invalid(_) => 3,
            DomainError::Access(_) => 4,
            DomainError::NotImplemented(_) => 5,
        }
    }
}

/// Whether `uid` may exist: not 0 and neither 32-bit half equal to 0xFFFFFFFF.
pub fn valid_uid(uid: u64) -> bool {
    uid != 0 && (uid >> 32) != 0xFFFF_FFFF && (uid & 0xFFFF_FFFF) != 0xFFFF_FFFF
}

/// A channel with its members.
#[derive(Debug, Clone)]
pub(crate) struct ChannelState {
    pub(crate) record: ChannelRecord,
    pub(crate) members: BTreeSet<Uid>,
}

/// The users/channels part of the hub's state.
#[derive(Debug, Default)]
pub(crate) struct Domain {
    pub(crate) users: BTreeMap<Uid, UserRecord>,
    pub(crate) names: BTreeMap<String, Uid>,
    pub(crate) channels: BTreeMap<ChannelId, ChannelState>,
    pub(crate) ports_used: BTreeSet<u16>,
    pub(crate) next_uid: u64,
    pub(crate) next_chid: u64,
}

/// Who performs an operation.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// Name (for messages and command logs).
    pub name: &'a str,
    /// User id; 0 = nobody (open registration).
    pub uid: Uid,
    /// Permissions.
    pub perms: Permissions,
}

impl Hub {
    /// Loads users, channels and memberships; creates the admin user if missing.
    pub(crate) fn load_domain(
        &mut self,
        users: Vec<UserRecord>,
        channels: Vec<ChannelRecord>,
        members: Vec<(u64, u64)>,
    ) {
        let d = &mut self.domain;
        for u in users {
            d.next_uid = d.next_uid.max(u.uid);
            d.names.insert(u.name.clone(), u.uid);
            d.users.insert(u.uid, u);
        }
        for c in channels {
            d.next_chid = d.next_chid.max(c.chid);
            d.ports_used.insert(c.port);
            self.out
                .push_back(HubAction::Relay(RelayCommand::OpenChannel {
                    channel: c.chid,
                    port: c.port,
                }));
            d.channels.insert(
                c.chid,
                ChannelState {
                    record: c,
                    members: BTreeSet::new(),
                },
            );
        }
        for (chid, uid) in members {
            if let Some(c) = d.channels.get_mut(&chid)
                && d.users.contains_key(&uid)
            {
                c.members.insert(uid);
                self.out.push_back(HubAction::Relay(RelayCommand::Join {
                    channel: chid,
                    uid,
                    token: None,
                }));
            }
        }
        if !self.domain.names.contains_key(&self.cfg.admin_user) {
            let uid = self.alloc_uid();
            let name = self.cfg.admin_user.clone();
            self.add_user(UserRecord {
                uid,
                name,
                permissions: Permissions::ADMIN.0,
                ..UserRecord::default()
            });
        }
    }

    /// The actor of a user name, if it is a user.
    pub(crate) fn actor_of(&self, name: &str) -> Option<(Uid, Permissions)> {
        let uid = *self.domain.names.get(name)?;
        let u = self.domain.users.get(&uid)?;
        Some((uid, Permissions(u.permissions)))
    }

    /// The actor of a uid (the KV wire names its actor by uid). Unknown uids have no rights.
    pub fn kv_actor(&self, uid: Uid) -> (String, Permissions) {
        match self.domain.users.get(&uid) {
            Some(u) => (u.name.clone(), Permissions(u.permissions)),
            None => (String::new(), Permissions::NONE),
        }
    }

    fn alloc_uid(&mut self) -> Uid {
        loop {
            self.domain.next_uid += 1;
            let uid = self.domain.next_uid;
            if valid_uid(uid) && !self.domain.users.contains_key(&uid) {
                return uid;
            }
        }
    }

    fn add_user(&mut self, u: UserRecord) {
        self.out
            .push_back(HubAction::Persist(Change::UserRegistered(u.clone())));
        self.domain.names.insert(u.name.clone(), u.uid);
        self.domain.users.insert(u.uid, u);
    }

    fn check(actor: Actor<'_>, op: &Operation<'_>) -> Result<(), DomainError> {
        perm::authorize(actor.name, actor.uid, actor.perms, op)
            .map_err(|d| DomainError::Access(d.to_string()))
    }

    fn known_actor(&self, actor: Actor<'_>) -> Result<(), DomainError> {
        if actor.uid != 0 && !self.domain.users.contains_key(&actor.uid) {
            return Err(DomainError::Param(format!("no user {}", actor.uid)));
        }
        Ok(())
    }

    /// CMD_CREATE: a new channel owned by the actor; returns its id.
    pub fn create_channel(&mut self, actor: Actor<'_>) -> Result<ChannelId, DomainError> {
        self.known_actor(actor)?;
        Self::check(actor, &Operation::CreateChannel)?;
        let (start, count) = self.cfg.relay_ports;
        let port = (0..count)
            .map(|i| start.wrapping_add(i))
            .find(|p| !self.domain.ports_used.contains(p))
            .ok_or_else(|| DomainError::Server("no free UDP port in the relay range".into()))?;
        self.domain.next_chid += 1;
        let chid = self.domain.next_chid;
        let record = ChannelRecord {
            chid,
            owner: actor.uid,
            port,
        };
        self.out
            .push_back(HubAction::Persist(Change::ChannelCreated(record.clone())));
        self.out
            .push_back(HubAction::Relay(RelayCommand::OpenChannel {
                channel: chid,
                port,
            }));
        self.domain.ports_used.insert(port);
        self.domain.channels.insert(
            chid,
            ChannelState {
                record,
                members: BTreeSet::new(),
            },
        );
        self.out
            .push_back(HubAction::Event(HubEvent::ChannelCreated {
                chid,
                owner: actor.uid,
                port,
            }));
        Ok(chid)
    }

    /// CMD_DELETE: the owner, or a user with rm_channel; returns the channel id.
    pub fn delete_channel(
        &mut self,
        actor: Actor<'_>,
        chid: ChannelId,
    ) -> Result<ChannelId, DomainError> {
        self.known_actor(actor)?;
        let owner = self.channel(chid)?.record.owner;
        Self::check(actor, &Operation::DeleteChannel { owner })?;
        if let Some(c) = self.domain.channels.remove(&chid) {
            self.domain.ports_used.remove(&c.record.port);
        }
        self.out
            .push_back(HubAction::Persist(Change::ChannelDeleted { chid }));
        self.out
            .push_back(HubAction::Relay(RelayCommand::CloseChannel {
                channel: chid,
            }));
        self.out
            .push_back(HubAction::Event(HubEvent::ChannelDeleted { chid }));
        Ok(chid)
    }

    /// CMD_JOIN: `juid` joins `chid`; returns the channel's UDP port. With `with_token` (the
    /// native protocol) also a join token that binds the member's UDP address strongly.
    pub fn join_channel(
        &mut self,
        actor: Actor<'_>,
        juid: Uid,
        chid: ChannelId,
        with_token: bool,
    ) -> Result<(u16, Option<[u8; JOIN_TOKEN_LEN]>), DomainError> {
        self.known_actor(actor)?;
        if !self.domain.users.contains_key(&juid) {
            return Err(DomainError::Param(format!("no user {juid}")));
        }
        let port = self.channel(chid)?.record.port;
        Self::check(actor, &Operation::JoinChannel { target: juid })?;
        let token = with_token.then(|| {
            let mut t = [0u8; JOIN_TOKEN_LEN];
            self.rng.fill_bytes(&mut t);
            t
        });
        let c = self
            .domain
            .channels
            .get_mut(&chid)
            .ok_or_else(|| DomainError::Param(format!("no channel {chid}")))?;
        if !c.members.insert(juid) && token.is_none() {
            return Err(DomainError::Invalid(format!(
                "user {juid} is already in channel {chid}"
            )));
        }
        self.out
            .push_back(HubAction::Persist(Change::MemberJoined { chid, uid: juid }));
        self.out.push_back(HubAction::Relay(RelayCommand::Join {
            channel: chid,
            uid: juid,
            token,
        }));
        self.out
            .push_back(HubAction::Event(HubEvent::MemberJoined { chid, uid: juid }));
        Ok((port, token))
    }

    /// CMD_LEAVE: `luid` leaves `chid`; returns 1.
    pub fn leave_channel(
        &mut self,
        actor: Actor<'_>,
        luid: Uid,
        chid: ChannelId,
    ) -> Result<u64, DomainError> {
        self.known_actor(actor)?;
        self.channel(chid)?;
        Self::check(actor, &Operation::LeaveChannel { target: luid })?;
        let removed = self
            .domain
            .channels
            .get_mut(&chid)
            .is_some_and(|c| c.members.remove(&luid));
        if !removed {
            return Err(DomainError::Invalid(format!(
                "user {luid} is not in channel {chid}"
            )));
        }
        self.member_gone(chid, luid);
        self.out.push_back(HubAction::Relay(RelayCommand::Leave {
            channel: chid,
            uid: luid,
        }));
        Ok(1)
    }

    /// CMD_REGISTER: `auid` 0 is an open registration that ignores `perm`; otherwise the actor
    /// needs register_user and the new user gets `perm`. Returns the new uid.
    pub fn register_user(
        &mut self,
        actor: Actor<'_>,
        name: Option<&str>,
        perm: Permissions,
    ) -> Result<Uid, DomainError> {
        let perms = if actor.uid == 0 && actor.name.is_empty() {
            Permissions::NONE
        } else {
            self.known_actor(actor)?;
            Self::check(actor, &Operation::RegisterUser)?;
            perm
        };
        if let Some(n) = name {
            if n.is_empty()
                || n.len() > 64
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(DomainError::Param(
                    "user names are 1-64 ASCII letters, digits, '-', '_' or '.'".into(),
                ));
            }
            if self.domain.names.contains_key(n) {
                return Err(DomainError::Invalid(format!("user {n:?} exists")));
            }
        }
        let uid = self.alloc_uid();
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| format!("user-{uid}"));
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        self.add_user(UserRecord {
            uid,
            name,
            permissions: perms.0,
            control_key: hex::encode(key),
            ..UserRecord::default()
        });
        self.out
            .push_back(HubAction::Event(HubEvent::UserRegistered { uid }));
        Ok(uid)
    }

    /// CMD_UNREGISTER: yourself, or anyone with delete_user. Returns the removed uid.
    pub fn unregister_user(&mut self, actor: Actor<'_>, uid: Uid) -> Result<Uid, DomainError> {
        self.known_actor(actor)?;
        if !self.domain.users.contains_key(&uid) {
            return Err(DomainError::Param(format!("no user {uid}")));
        }
        Self::check(actor, &Operation::UnregisterUser { target: uid })?;
        let chans: Vec<ChannelId> = self
            .domain
            .channels
            .iter()
            .filter(|(_, c)| c.members.contains(&uid))
            .map(|(id, _)| *id)
            .collect();
        for chid in chans {
            if let Some(c) = self.domain.channels.get_mut(&chid) {
                c.members.remove(&uid);
            }
            self.out
                .push_back(HubAction::Relay(RelayCommand::Leave { channel: chid, uid }));
            self.out.push_back(HubAction::Event(HubEvent::MemberLeft {
                chid,
                uid,
                expired: false,
            }));
        }
        if let Some(u) = self.domain.users.remove(&uid) {
            self.domain.names.remove(&u.name);
        }
        self.out
            .push_back(HubAction::Persist(Change::UserRemoved { uid }));
        self.out
            .push_back(HubAction::Event(HubEvent::UserRemoved { uid }));
        Ok(uid)
    }

    /// CMD_GET_PORT.
    pub fn channel_port(&self, chid: ChannelId) -> Result<u16, DomainError> {
        Ok(self.channel(chid)?.record.port)
    }

    /// CMD_GET_CHANNELS: every channel id, ascending.
    pub fn channel_ids(&self) -> Vec<ChannelId> {
        self.domain.channels.keys().copied().collect()
    }

    /// Channels with owner, port and members.
    pub fn channels(&self) -> Vec<(ChannelRecord, Vec<Uid>)> {
        self.domain
            .channels
            .values()
            .map(|c| (c.record.clone(), c.members.iter().copied().collect()))
            .collect()
    }

    /// Users.
    pub fn users(&self) -> Vec<UserRecord> {
        self.domain.users.values().cloned().collect()
    }

    /// A user's KV control key (hex), if the user exists.
    pub fn control_key(&self, uid: Uid) -> Option<&str> {
        self.domain.users.get(&uid).map(|u| u.control_key.as_str())
    }

    /// Something the relay reported.
    pub fn handle_relay_event(&mut self, now: Instant, ev: RelayEvent) {
        self.last_now = self.last_now.max(now);
        match ev {
            RelayEvent::MemberExpired { channel, uid } => {
                let removed = self
                    .domain
                    .channels
                    .get_mut(&channel)
                    .is_some_and(|c| c.members.remove(&uid));
                if removed {
                    self.out.push_back(HubAction::Persist(Change::MemberLeft {
                        chid: channel,
                        uid,
                    }));
                    self.out.push_back(HubAction::Event(HubEvent::MemberLeft {
                        chid: channel,
                        uid,
                        expired: true,
                    }));
                }
            }
            RelayEvent::MemberBound { channel, uid, addr } => {
                self.out.push_back(HubAction::Event(HubEvent::MemberBound {
                    chid: channel,
                    uid,
                    addr,
                }));
            }
            RelayEvent::ChannelFailed { channel, error } => {
                tracing::error!(channel, %error, "relay could not open a channel");
                self.out
                    .push_back(HubAction::Event(HubEvent::ChannelFailed {
                        chid: channel,
                        error,
                    }));
            }
        }
    }

    fn member_gone(&mut self, chid: ChannelId, uid: Uid) {
        self.out
            .push_back(HubAction::Persist(Change::MemberLeft { chid, uid }));
        self.out.push_back(HubAction::Event(HubEvent::MemberLeft {
            chid,
            uid,
            expired: false,
        }));
    }

    fn channel(&self, chid: ChannelId) -> Result<&ChannelState, DomainError> {
        self.domain
            .channels
            .get(&chid)
            .ok_or_else(|| DomainError::Param(format!("no channel {chid}")))
    }
}

#[cfg(test)]
#[path = "domain_tests.rs"]
mod tests;
