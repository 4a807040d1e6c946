//! An in-memory store with the SQLite store's semantics (`runtime-smol/src/store.rs`), so a
//! restarted simulated hub loads exactly what a real one would.
//!
//! As `SqliteStore::apply_all` does, a change naming an agent or a command that does not exist
//! writes nothing and is skipped; the simulator also records it in [`MemStore::refused`] (the
//! hub and its store disagree: scenarios check that this stays empty). What makes SQLite fail
//! the whole batch, and so stops the real hub, panics here ([`Refusal::Fatal`]): a reused
//! command or channel id (plain INSERTs), a user name that belongs to another uid (`name` is
//! UNIQUE), a membership in a channel or of a user that does not exist (the bundled SQLite
//! enforces foreign keys).
//! `tests/sim_store.rs` checks all of this against the real store.

use std::collections::{BTreeMap, BTreeSet};

use switchboard_runtime_smol::store::StoreError;

use switchboard_core::hub::{
    AgentRecord, Change, ChannelRecord, CommandRecord, CommandStatus, StoredState, UserRecord,
};

/// The hub's durable state, in memory.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    agents: BTreeMap<String, AgentRecord>,
    data: BTreeMap<(String, String), String>,
    /// The command log, by id.
    pub commands: BTreeMap<i64, CommandRecord>,
    users: BTreeMap<u64, UserRecord>,
    channels: BTreeMap<u64, ChannelRecord>,
    members: BTreeSet<(u64, u64)>,
    /// The event log, by order.
    pub events: BTreeMap<u64, switchboard_core::hub::EventRecord>,
    /// The newest order ever logged.
    pub last_event_order: u64,
    /// Secure-feed clients, by id.
    pub feed_clients: BTreeMap<String, switchboard_core::hub::FeedClientRecord>,
    /// Certificate records, by serial.
    pub certificates: BTreeMap<String, switchboard_core::hub::CertificateRecord>,
    max_command_id: i64,
    /// Every change applied, in order.
    pub applied: Vec<Change>,
    /// Changes the store refused (unknown agent or command), with why.
    pub refused: Vec<(Change, String)>,
}

/// Why the store did not apply a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The change names an agent or command that does not exist: SQLite writes nothing and
    /// `apply_all` skips it (the rest of the batch is stored).
    Skipped(String),
    /// SQLite fails the statement, and so the whole batch: the real hub stops.
    Fatal(String),
}

impl MemStore {
    /// Applies one change (as `SqliteStore::apply_all` does, refusals are skipped and
    /// recorded in [`refused`](Self::refused)). Panics on what would fail the real store's
    /// batch (see [`Refusal::Fatal`]): the real hub would stop there.
    pub fn apply(&mut self, change: &Change) {
        match self.try_apply(change) {
            Ok(()) => {}
            Err(Refusal::Skipped(why)) => self.refused.push((change.clone(), why)),
            Err(Refusal::Fatal(why)) => panic!("storage failed: {why}"),
        }
    }

    /// Applies one change, or says why SQLite would not (then nothing was written).
    pub fn try_apply(&mut self, change: &Change) -> Result<(), Refusal> {
        if let Change::Batch(changes) = change {
            // All or none (a savepoint in SQLite).
            let mut next = self.clone();
            for c in changes {
                next.try_apply(c)?;
            }
            next.applied.truncate(self.applied.len());
            next.applied.push(change.clone());
            *self = next;
            return Ok(());
        }
        self.check(change)?;
        self.applied.push(change.clone());
        match change {
            Change::AgentRegistered(a) => {
                self.agents.insert(a.agent_id.clone(), a.clone());
            }
            Change::AgentRemoved { agent_id } => {
                self.agents.remove(agent_id);
                self.data.retain(|(a, _), _| a != agent_id);
            }
            Change::AgentSeen { agent_id, unix_ms } => {
                if let Some(a) = self.agents.get_mut(agent_id) {
                    a.last_seen_unix_ms = *unix_ms;
                }
            }
            Change::AgentData {
                agent_id,
                name,
                value_json,
            } => {
                self.data
                    .insert((agent_id.clone(), name.clone()), value_json.clone());
            }
            Change::CommandCreated(c) => {
                self.max_command_id = self.max_command_id.max(c.command_id);
                self.commands.insert(c.command_id, c.clone());
            }
            Change::CommandFinished {
                command_id,
                status,
                changed,
                output,
                finished_unix_ms,
            } => {
                if let Some(c) = self.commands.get_mut(command_id) {
                    c.status = *status;
                    c.changed = *changed;
                    c.output = output.clone();
                    c.finished_unix_ms = *finished_unix_ms;
                }
            }
            Change::UserRegistered(u) => {
                self.users.insert(u.uid, u.clone());
            }
            Change::UserRemoved { uid } => {
                self.users.remove(uid);
                self.members.retain(|(_, u)| u != uid);
            }
            Change::ChannelCreated(c) => {
                self.channels.insert(c.chid, c.clone());
            }
            Change::ChannelDeleted { chid } => {
                self.channels.remove(chid);
                self.members.retain(|(c, _)| c != chid);
            }
            Change::MemberJoined { chid, uid } => {
                self.members.insert((*chid, *uid));
            }
            Change::MemberLeft { chid, uid } => {
                self.members.remove(&(*chid, *uid));
            }
            Change::Certificate(c) => {
                self.certificates.insert(c.serial.clone(), c.clone());
            }
            Change::EventLogged(e) => {
                assert!(
                    e.order > self.last_event_order,
                    "event order {} after {}",
                    e.order,
                    self.last_event_order
                );
                self.last_event_order = e.order;
                self.events.insert(e.order, e.clone());
            }
            Change::EventsPruned { before_order } => {
                self.events = self.events.split_off(before_order);
            }
            Change::FeedClientSaved(c) => {
                self.feed_clients.insert(c.client_id.clone(), c.clone());
            }
            Change::FeedClientRemoved { client_id } => {
                self.feed_clients.remove(client_id);
            }
            Change::FeedSequence {
                client_id,
                sequence,
            } => {
                if let Some(c) = self.feed_clients.get_mut(client_id) {
                    c.last_sequence = *sequence;
                }
            }
            Change::Batch(_) => {}
        }
        Ok(())
    }

    /// What SQLite would refuse.
    fn check(&self, change: &Change) -> Result<(), Refusal> {
        match change {
            Change::AgentSeen { agent_id, .. } | Change::AgentData { agent_id, .. }
                if !self.agents.contains_key(agent_id) =>
            {
                Err(Refusal::Skipped(format!("unknown agent {agent_id:?}")))
            }
            Change::CommandFinished { command_id, .. }
                if !self.commands.contains_key(command_id) =>
            {
                Err(Refusal::Skipped(format!("unknown command {command_id}")))
            }
            // A plain INSERT: a reused id fails.
            Change::CommandCreated(c) if self.commands.contains_key(&c.command_id) => Err(
                Refusal::Fatal(format!("command id {} reused", c.command_id)),
            ),
            Change::ChannelCreated(c) if self.channels.contains_key(&c.chid) => {
                Err(Refusal::Fatal(format!("channel id {} reused", c.chid)))
            }
            Change::EventLogged(e) if self.events.contains_key(&e.order) => {
                Err(Refusal::Fatal(format!("event order {} reused", e.order)))
            }
            // Foreign keys: the bundled SQLite enforces them.
            Change::MemberJoined { chid, uid }
                if !self.channels.contains_key(chid) || !self.users.contains_key(uid) =>
            {
                Err(Refusal::Fatal(format!(
                    "membership of uid {uid} in channel {chid}: no such channel or user"
                )))
            }
            // An upsert by uid, but `name` is UNIQUE: another user's name fails.
            Change::UserRegistered(u) => match self
                .users
                .values()
                .find(|o| o.name == u.name && o.uid != u.uid)
            {
                Some(o) => Err(Refusal::Fatal(format!(
                    "user name {:?} of uid {} already belongs to uid {}",
                    u.name, u.uid, o.uid
                ))),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Whether an agent is registered.
    pub fn has_agent(&self, agent_id: &str) -> bool {
        self.agents.contains_key(agent_id)
    }

    /// A stored data value.
    pub fn data(&self, agent_id: &str, name: &str) -> Option<&str> {
        self.data
            .get(&(agent_id.to_string(), name.to_string()))
            .map(String::as_str)
    }

    /// What a restarted hub loads.
    pub fn state(&self) -> StoredState {
        StoredState {
            agents: self.agents.values().cloned().collect(),
            agent_data: self
                .data
                .iter()
                .map(|((a, n), v)| (a.clone(), n.clone(), v.clone()))
                .collect(),
            max_command_id: self.max_command_id,
            pending_commands: self
                .commands
                .values()
                .filter(|c| c.status == CommandStatus::Pending)
                .cloned()
                .collect(),
            users: self.users.values().cloned().collect(),
            channels: self.channels.values().cloned().collect(),
            members: self.members.iter().copied().collect(),
            certificates: self.certificates.values().cloned().collect(),
            feed_clients: self.feed_clients.values().cloned().collect(),
            last_event_order: self.last_event_order,
            first_event_order: self
                .events
                .keys()
                .next()
                .copied()
                .unwrap_or(self.last_event_order + 1),
            recent_events: self
                .events
                .values()
                .rev()
                .take(4096)
                .rev()
                .cloned()
                .collect(),
        }
    }

    /// Up to `limit` stored events after `after`, oldest first.
    pub fn read_events(&self, after: u64, limit: usize) -> Vec<switchboard_core::hub::EventRecord> {
        self.events
            .range(after + 1..)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

/// The simulator's store behind the runtime's [`Store`](switchboard_runtime_smol::store::Store) trait, so that the store conformance
/// suite runs on it as on the real ones.
impl switchboard_runtime_smol::store::Store for MemStore {
    fn load(&mut self) -> Result<StoredState, StoreError> {
        Ok(self.state())
    }

    fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        self.try_apply(change).map_err(refusal_error)
    }

    fn apply_all(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        // All or none, as one transaction: work on a copy.
        let mut next = self.clone();
        for c in changes {
            match next.try_apply(c) {
                Ok(()) => {}
                Err(Refusal::Skipped(why)) => next.refused.push((c.clone(), why)),
                Err(Refusal::Fatal(why)) => return Err(StoreError::Postgres(why)),
            }
        }
        *self = next;
        Ok(())
    }

    fn read_events(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<switchboard_core::hub::EventRecord>, StoreError> {
        Ok(MemStore::read_events(self, after, limit))
    }

    fn list_commands(&mut self, limit: usize) -> Result<Vec<CommandRecord>, StoreError> {
        Ok(self.commands.values().rev().take(limit).cloned().collect())
    }

    fn schema_version(&mut self) -> Result<u32, StoreError> {
        Ok(switchboard_runtime_smol::store::SCHEMA_VERSION)
    }

    fn describe(&self) -> String {
        "the simulator's memory store".into()
    }
}

/// A refusal as the real stores report it.
fn refusal_error(r: Refusal) -> StoreError {
    match r {
        Refusal::Skipped(why) => {
            if let Some(id) = why.strip_prefix("unknown agent ") {
                StoreError::UnknownAgent(id.trim_matches('"').to_string())
            } else if let Some(n) = why.strip_prefix("unknown command ") {
                StoreError::UnknownCommand(n.trim().parse().unwrap_or(0))
            } else {
                StoreError::Corrupt(why)
            }
        }
        // What fails a real store's statement (a constraint): the same category.
        Refusal::Fatal(why) => StoreError::Postgres(why),
    }
}
