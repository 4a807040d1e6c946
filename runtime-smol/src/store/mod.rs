//! Storage of the hub's durable state ([`switchboard_core::hub::persist`]), behind one trait.
//!
//! The runtime applies the [`Change`]s the hub emits with [`Store::apply_all`] (one
//! transaction per batch) before it performs the hub's later actions, and loads a
//! [`StoredState`] into a new hub at start. Calls block: run them off the hub loop
//! (`smol::unblock`).
//!
//! Implementations: [`SqliteStore`] (the embedded default, one file in the data dir) and
//! [`PostgresStore`] (a PostgreSQL server). The simulator's in-memory store implements the
//! same trait, and [`conformance`] is one suite of checks that every implementation passes.

pub mod conformance;
mod postgres;
mod sqlite;

pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::{BUSY_TIMEOUT, RECENT_EVENTS, SCHEMA_VERSION, SqliteStore};

use switchboard_core::hub::persist::{Change, CommandRecord, EventRecord, StoredState};

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (I/O, a full disk, a lock held too long, a constraint...).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (a constraint, a bad statement...).
    #[error("postgres: {0}")]
    Postgres(String),
    /// The store cannot be reached now (connection refused or lost, server restarting): the
    /// operation may succeed later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database was written by a newer Switchboard.
    #[error("database schema version {found} is newer than this program's {supported}")]
    TooNew {
        /// The version in the database.
        found: u32,
        /// The latest version this code knows.
        supported: u32,
    },
    /// A stored value cannot be decoded.
    #[error("corrupt database: {0}")]
    Corrupt(String),
    /// A change refers to an agent that is not registered.
    #[error("unknown agent {0:?}")]
    UnknownAgent(String),
    /// A change refers to a command that does not exist.
    #[error("unknown command {0}")]
    UnknownCommand(i64),
}

impl StoreError {
    /// Whether retrying later may succeed (the store was unreachable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Whether the store refused one change as naming something it does not have (then it
    /// wrote nothing for it; [`Store::apply_all`] skips such a change).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::UnknownAgent(_) | StoreError::UnknownCommand(_)
        )
    }
}

/// A store of the hub's durable state. Calls block; one caller at a time.
///
/// The contract, checked for every implementation by [`conformance`]:
///
/// - [`apply`](Store::apply) stores one change atomically, or refuses it and writes nothing:
///   a change naming an agent or command that does not exist (removing an agent is
///   idempotent) is [`StoreError::UnknownAgent`] / [`StoreError::UnknownCommand`]; a reused
///   command or channel id, a user name of another uid, a membership of a channel or user that
///   does not exist fail as the database's constraint error. A [`Change::Batch`] is all or
///   none.
/// - [`apply_all`](Store::apply_all) stores a batch in one transaction: refusals are logged
///   and skipped, any other error stores none of the batch.
/// - [`load`](Store::load) returns everything a new hub needs, sorted (agents and data by id
///   and name, commands by id, users and channels by id, members by channel then user,
///   certificates by serial, feed clients by id), the newest [`RECENT_EVENTS`] events oldest
///   first, and the highest command id and event order ever used (also after pruning).
pub trait Store: Send + 'static {
    /// Loads what a new hub needs.
    fn load(&mut self) -> Result<StoredState, StoreError>;
    /// Applies one change atomically.
    fn apply(&mut self, change: &Change) -> Result<(), StoreError>;
    /// Applies a batch in one transaction (refusals skipped).
    fn apply_all(&mut self, changes: &[Change]) -> Result<(), StoreError>;
    /// Up to `limit` events with an order above `after`, oldest first.
    fn read_events(&mut self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError>;
    /// The newest `limit` commands of the log, newest first.
    fn list_commands(&mut self, limit: usize) -> Result<Vec<CommandRecord>, StoreError>;
    /// The schema version of the database.
    fn schema_version(&mut self) -> Result<u32, StoreError>;
    /// What it is, for logs ("sqlite /path", "postgres host:port/db").
    fn describe(&self) -> String;
    /// Everything it holds, as changes that rebuild it in an empty store (users, channels,
    /// members, agents and their data, the whole command log, certificates, feed clients,
    /// every event kept), and the highest command id and event order ever used (which
    /// outlive their rows). For `switchboard store migrate`.
    fn export(&mut self) -> Result<Export, StoreError> {
        let s = self.load()?;
        let mut changes = Vec::new();
        changes.extend(s.users.into_iter().map(Change::UserRegistered));
        changes.extend(s.channels.into_iter().map(Change::ChannelCreated));
        changes.extend(
            s.members
                .into_iter()
                .map(|(chid, uid)| Change::MemberJoined { chid, uid }),
        );
        changes.extend(s.agents.into_iter().map(Change::AgentRegistered));
        changes.extend(
            s.agent_data
                .into_iter()
                .map(|(agent_id, name, value_json)| Change::AgentData {
                    agent_id,
                    name,
                    value_json,
                }),
        );
        let mut commands = self.list_commands(usize::MAX)?;
        commands.reverse();
        changes.extend(commands.into_iter().map(Change::CommandCreated));
        changes.extend(s.certificates.into_iter().map(Change::Certificate));
        changes.extend(s.feed_clients.into_iter().map(Change::FeedClientSaved));
        let mut after = 0;
        loop {
            let page = self.read_events(after, 10_000)?;
            let Some(last) = page.last() else { break };
            after = last.order;
            changes.extend(page.into_iter().map(Change::EventLogged));
        }
        Ok(Export {
            changes,
            max_command_id: s.max_command_id,
            last_event_order: s.last_event_order,
        })
    }
}

/// Rebuilds `export` in `target`, which must be empty (no user, agent, channel, command or
/// event): in batches of 1,000 changes, each one transaction. The highest event order ever
/// used is carried over also when every event was pruned. Returns how many changes it wrote.
pub fn import(target: &mut dyn Store, export: &Export) -> Result<usize, StoreError> {
    let now = target.load()?;
    if !(now.users.is_empty()
        && now.agents.is_empty()
        && now.channels.is_empty()
        && now.max_command_id == 0
        && now.last_event_order == 0)
    {
        return Err(StoreError::Corrupt(format!(
            "{} is not empty: migrate into an empty database",
            target.describe()
        )));
    }
    let mut changes = export.changes.clone();
    let newest = changes
        .iter()
        .filter_map(|c| match c {
            Change::EventLogged(e) => Some(e.order),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    if export.last_event_order > newest {
        // Every event was pruned (pruning removes the oldest): keep the order going.
        changes.push(Change::EventLogged(
            switchboard_core::hub::persist::EventRecord {
                order: export.last_event_order,
                unix_ms: 0,
                kind: "Migrated".into(),
                json: "{}".into(),
                scope: 0,
            },
        ));
        changes.push(Change::EventsPruned {
            before_order: export.last_event_order + 1,
        });
    }
    for chunk in changes.chunks(1000) {
        target.apply_all(chunk)?;
    }
    Ok(changes.len())
}

/// A store's whole content ([`Store::export`]).
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// Changes that rebuild it, in an order an empty store accepts.
    pub changes: Vec<Change>,
    /// The highest command id ever used.
    pub max_command_id: i64,
    /// The highest event order ever used.
    pub last_event_order: u64,
}

impl Store for Box<dyn Store> {
    fn load(&mut self) -> Result<StoredState, StoreError> {
        (**self).load()
    }
    fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        (**self).apply(change)
    }
    fn apply_all(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        (**self).apply_all(changes)
    }
    fn read_events(&mut self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        (**self).read_events(after, limit)
    }
    fn list_commands(&mut self, limit: usize) -> Result<Vec<CommandRecord>, StoreError> {
        (**self).list_commands(limit)
    }
    fn schema_version(&mut self) -> Result<u32, StoreError> {
        (**self).schema_version()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn export(&mut self) -> Result<Export, StoreError> {
        (**self).export()
    }
}
