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
}
