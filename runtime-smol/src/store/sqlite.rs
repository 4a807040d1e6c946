//! The SQLite store (the embedded default): one file in the data dir.
//!
//! Schema versions are tracked with `PRAGMA user_version` and applied in order at open; a
//! database written by a newer version is refused. File databases use WAL journaling with
//! `synchronous = NORMAL` (a committed change survives a process crash; a power loss may lose
//! the last transactions but never corrupts the file), and every connection waits up to
//! [`BUSY_TIMEOUT`] for a lock held by another process.

use std::path::Path;
use std::time::Duration;

use super::{Store, StoreError};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use switchboard_core::hub::persist::{
    AgentRecord, CertificateRecord, Change, ChannelRecord, CommandRecord, CommandStatus,
    EventRecord, FeedClientRecord, StoredState, UserRecord,
};

/// How long a statement waits for a lock held by another connection before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema version this code writes; [`SqliteStore::open`] migrates older databases to it.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Migration `i` takes the schema from version `i` to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: agents, their data values, the command log.
    "CREATE TABLE agents (
         agent_id          TEXT PRIMARY KEY NOT NULL,
         secret_hash       TEXT NOT NULL,
         allowed_networks  TEXT NOT NULL,              -- JSON array of CIDR strings
         last_seen_unix_ms INTEGER NOT NULL DEFAULT 0
     ) STRICT;
     CREATE TABLE agent_data (
         agent_id   TEXT NOT NULL,
         name       TEXT NOT NULL,
         value_json TEXT NOT NULL,
         PRIMARY KEY (agent_id, name)
     ) STRICT, WITHOUT ROWID;
     -- AUTOINCREMENT keeps the highest id ever used in sqlite_sequence, even if old
     -- commands are pruned some day.
     CREATE TABLE commands (
         command_id       INTEGER PRIMARY KEY AUTOINCREMENT,
         agent_id         TEXT NOT NULL,                -- no foreign key: the log outlives agents
         operation        TEXT NOT NULL,
         data             TEXT NOT NULL,
         issued_by        TEXT NOT NULL,
         status           TEXT NOT NULL,
         changed          INTEGER NOT NULL,
         output           TEXT NOT NULL,
         created_unix_ms  INTEGER NOT NULL,
         finished_unix_ms INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX commands_by_agent ON commands (agent_id, command_id);
     CREATE INDEX commands_pending ON commands (command_id) WHERE status = 'pending';",
    // 2: users, channels, memberships (the KV domain).
    "CREATE TABLE users (
         uid         INTEGER PRIMARY KEY NOT NULL,
         name        TEXT NOT NULL UNIQUE,
         permissions INTEGER NOT NULL,             -- u64 bits stored as i64
         control_key TEXT NOT NULL DEFAULT ''
     ) STRICT;
     CREATE TABLE channels (
         chid  INTEGER PRIMARY KEY NOT NULL,
         owner INTEGER NOT NULL,                   -- no foreign key: channels outlive owners
         port  INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE members (
         chid INTEGER NOT NULL REFERENCES channels (chid) ON DELETE CASCADE,
         uid  INTEGER NOT NULL REFERENCES users (uid) ON DELETE CASCADE,
         PRIMARY KEY (chid, uid)
     ) STRICT, WITHOUT ROWID;",
    // 3: login credentials of users.
    "ALTER TABLE users ADD COLUMN password_hash TEXT NOT NULL DEFAULT '';
     ALTER TABLE users ADD COLUMN totp_secret TEXT NOT NULL DEFAULT '';
     ALTER TABLE users ADD COLUMN expires_unix_ms INTEGER NOT NULL DEFAULT 0;",
    // 4: certificates issued (renewal) or seen at a handshake, with their revocation.
    "CREATE TABLE certificates (
         serial            TEXT PRIMARY KEY NOT NULL,
         name              TEXT NOT NULL,
         not_after_unix_ms INTEGER NOT NULL,
         revoked_unix_ms   INTEGER NOT NULL DEFAULT 0
     ) STRICT;
     CREATE INDEX certificates_by_name ON certificates (name);",
    // 5: the ordered event log.
    "CREATE TABLE events (
         event_order INTEGER PRIMARY KEY NOT NULL,
         unix_ms     INTEGER NOT NULL,
         kind        TEXT NOT NULL,
         json        TEXT NOT NULL,
         scope       INTEGER NOT NULL               -- permission bits (u64 as i64)
     ) STRICT;
     CREATE TABLE event_log (
         id         INTEGER PRIMARY KEY CHECK (id = 1),
         last_order INTEGER NOT NULL                -- survives pruning everything
     ) STRICT;
     INSERT INTO event_log (id, last_order) VALUES (1, 0);",
    // 6: secure-feed clients.
    "CREATE TABLE feed_clients (
         client_id      TEXT PRIMARY KEY NOT NULL,
         public_key_der BLOB NOT NULL,
         user_name      TEXT NOT NULL,
         last_sequence  INTEGER NOT NULL DEFAULT 0
     ) STRICT;",
];

/// How many of the newest events [`SqliteStore::load`] hands to the hub.
pub const RECENT_EVENTS: usize = 4096;

const COMMAND_COLUMNS: &str = "command_id, agent_id, operation, data, issued_by, status, \
                               changed, output, created_unix_ms, finished_unix_ms";

/// The hub's SQLite store. One connection; not shared between threads.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    /// The file (None: in memory).
    path: Option<std::path::PathBuf>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, sets WAL journaling,
    /// `synchronous = NORMAL` and the busy timeout, and migrates the schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "SQLite refused WAL journaling");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let mut store = Self::init(conn)?;
        store.path = Some(path.to_path_buf());
        Ok(store)
    }

    /// Opens a private in-memory database (for tests and the simulator).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mut store = SqliteStore { conn, path: None };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))?)
    }

    /// Brings the schema to [`SCHEMA_VERSION`]. Idempotent; safe against another process
    /// migrating at the same time (the version is read again under the write lock).
    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: u32 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (version, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tracing::info!(to = version + 1, "migrating the database schema");
            tx.execute_batch(sql)?;
        }
        if found < SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Loads what a new hub needs: every agent, every data value, the highest command id
    /// ever used, and the commands still pending. Everything is read in one transaction and
    /// sorted (agents and data by id and name, commands by id).
    pub fn load(&self) -> Result<StoredState, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let agents = tx
            .prepare(
                "SELECT agent_id, secret_hash, allowed_networks, last_seen_unix_ms
                 FROM agents ORDER BY agent_id",
            )?
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })?
            .map(|row| {
                let (agent_id, secret_hash, networks, last_seen_unix_ms) = row?;
                let allowed_networks = serde_json::from_str(&networks).map_err(|e| {
                    StoreError::Corrupt(format!("allowed networks of {agent_id:?}: {e}"))
                })?;
                Ok(AgentRecord {
                    agent_id,
                    secret_hash,
                    allowed_networks,
                    last_seen_unix_ms,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let agent_data = tx
            .prepare("SELECT agent_id, name, value_json FROM agent_data ORDER BY agent_id, name")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let max_command_id = max_command_id(&tx)?;
        let pending_commands = tx
            .prepare(&format!(
                "SELECT {COMMAND_COLUMNS} FROM commands WHERE status = 'pending'
                 ORDER BY command_id"
            ))?
            .query_map([], command_row)?
            .map(|row| row?)
            .collect::<Result<Vec<_>, _>>()?;
        let users = tx
            .prepare(
                "SELECT uid, name, permissions, control_key, password_hash, totp_secret,
                        expires_unix_ms FROM users ORDER BY uid",
            )?
            .query_map([], |row| {
                Ok(UserRecord {
                    uid: row.get::<_, i64>(0)? as u64,
                    name: row.get(1)?,
                    permissions: row.get::<_, i64>(2)? as u64,
                    control_key: row.get(3)?,
                    password_hash: row.get(4)?,
                    totp_secret: row.get(5)?,
                    expires_unix_ms: row.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let channels = tx
            .prepare("SELECT chid, owner, port FROM channels ORDER BY chid")?
            .query_map([], |row| {
                Ok(ChannelRecord {
                    chid: row.get::<_, i64>(0)? as u64,
                    owner: row.get::<_, i64>(1)? as u64,
                    port: row.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let members = tx
            .prepare("SELECT chid, uid FROM members ORDER BY chid, uid")?
            .query_map([], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let certificates = tx
            .prepare(
                "SELECT serial, name, not_after_unix_ms, revoked_unix_ms FROM certificates \
                 ORDER BY serial",
            )?
            .query_map([], |row| {
                Ok(CertificateRecord {
                    serial: row.get(0)?,
                    name: row.get(1)?,
                    not_after_unix_ms: row.get(2)?,
                    revoked_unix_ms: row.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let last_event_order: i64 =
            tx.query_row("SELECT last_order FROM event_log WHERE id = 1", [], |r| {
                r.get(0)
            })?;
        let first_event_order: i64 = tx.query_row(
            "SELECT COALESCE(MIN(event_order), ?1) FROM events",
            [last_event_order + 1],
            |r| r.get(0),
        )?;
        let mut recent_events = tx
            .prepare(
                "SELECT event_order, unix_ms, kind, json, scope FROM events \
                 ORDER BY event_order DESC LIMIT ?1",
            )?
            .query_map([RECENT_EVENTS as i64], event_row)?
            .collect::<Result<Vec<_>, _>>()?;
        recent_events.reverse();
        let feed_clients = tx
            .prepare(
                "SELECT client_id, public_key_der, user_name, last_sequence FROM feed_clients \
                 ORDER BY client_id",
            )?
            .query_map([], |row| {
                Ok(FeedClientRecord {
                    client_id: row.get(0)?,
                    public_key_der: row.get(1)?,
                    user: row.get(2)?,
                    last_sequence: row.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        tx.finish()?;
        Ok(StoredState {
            last_event_order: last_event_order as u64,
            first_event_order: first_event_order as u64,
            recent_events,
            feed_clients,
            certificates,
            agents,
            agent_data,
            max_command_id,
            pending_commands,
            users,
            channels,
            members,
        })
    }

    /// Applies one change atomically: either all of it is stored or, on error, none.
    /// A change naming an agent or command that does not exist (except removing an agent,
    /// which is idempotent) is refused with [`StoreError::UnknownAgent`] or
    /// [`StoreError::UnknownCommand`]: the hub and the store disagree.
    pub fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        apply_in(&tx, change)?;
        tx.commit()?;
        Ok(())
    }

    /// Applies a batch of changes in one transaction (one fsync for many changes). A change the
    /// store refuses as naming an unknown agent or command wrote nothing (it is detected from a
    /// zero-row update or a failed check) and is logged and skipped; any SQLite error fails the whole
    /// batch and stores none of it.
    pub fn apply_all(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for change in changes {
            match apply_in(&tx, change) {
                Ok(()) => {}
                Err(e) if e.is_refusal() => {
                    tracing::warn!(error = %e, ?change, "change refused by the store, skipped");
                }
                Err(e) => return Err(e),
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Up to `limit` events with an order above `after`, oldest first.
    pub fn read_events(&self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        Ok(self
            .conn
            .prepare(
                "SELECT event_order, unix_ms, kind, json, scope FROM events \
                 WHERE event_order > ?1 ORDER BY event_order LIMIT ?2",
            )?
            .query_map(
                params![after as i64, i64::try_from(limit).unwrap_or(i64::MAX)],
                event_row,
            )?
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The newest `limit` commands of the log, newest first (for the CLI).
    pub fn list_commands(&self, limit: usize) -> Result<Vec<CommandRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn
            .prepare(&format!(
                "SELECT {COMMAND_COLUMNS} FROM commands ORDER BY command_id DESC LIMIT ?1"
            ))?
            .query_map([limit], command_row)?
            .map(|row| row?)
            .collect()
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<StoredState, StoreError> {
        SqliteStore::load(self)
    }
    fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        SqliteStore::apply(self, change)
    }
    fn apply_all(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        SqliteStore::apply_all(self, changes)
    }
    fn read_events(&mut self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        SqliteStore::read_events(self, after, limit)
    }
    fn list_commands(&mut self, limit: usize) -> Result<Vec<CommandRecord>, StoreError> {
        SqliteStore::list_commands(self, limit)
    }
    fn schema_version(&mut self) -> Result<u32, StoreError> {
        SqliteStore::schema_version(self)
    }
    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("sqlite {}", p.display()),
            None => "sqlite (in memory)".into(),
        }
    }
}

fn apply_in(tx: &Transaction<'_>, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::AgentRegistered(agent) => {
            let networks = serde_json::to_string(&agent.allowed_networks)
                .map_err(|e| StoreError::Corrupt(format!("allowed networks: {e}")))?;
            // An upsert, not REPLACE: REPLACE would delete the row first.
            tx.execute(
                "INSERT INTO agents (agent_id, secret_hash, allowed_networks, last_seen_unix_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (agent_id) DO UPDATE SET
                     secret_hash = excluded.secret_hash,
                     allowed_networks = excluded.allowed_networks,
                     last_seen_unix_ms = excluded.last_seen_unix_ms",
                params![
                    agent.agent_id,
                    agent.secret_hash,
                    networks,
                    agent.last_seen_unix_ms
                ],
            )?;
        }
        Change::AgentRemoved { agent_id } => {
            tx.execute("DELETE FROM agent_data WHERE agent_id = ?1", [agent_id])?;
            tx.execute("DELETE FROM agents WHERE agent_id = ?1", [agent_id])?;
        }
        Change::AgentSeen { agent_id, unix_ms } => {
            let n = tx.execute(
                "UPDATE agents SET last_seen_unix_ms = ?2 WHERE agent_id = ?1",
                params![agent_id, unix_ms],
            )?;
            if n == 0 {
                return Err(StoreError::UnknownAgent(agent_id.clone()));
            }
        }
        Change::AgentData {
            agent_id,
            name,
            value_json,
        } => {
            let known = tx
                .query_row(
                    "SELECT 1 FROM agents WHERE agent_id = ?1",
                    [agent_id],
                    |_| Ok(()),
                )
                .optional()?;
            if known.is_none() {
                return Err(StoreError::UnknownAgent(agent_id.clone()));
            }
            tx.execute(
                "INSERT INTO agent_data (agent_id, name, value_json) VALUES (?1, ?2, ?3)
                 ON CONFLICT (agent_id, name) DO UPDATE SET value_json = excluded.value_json",
                params![agent_id, name, value_json],
            )?;
        }
        Change::CommandCreated(c) => {
            // A plain INSERT: a reused command id is a bug and fails loudly.
            tx.execute(
                &format!(
                    "INSERT INTO commands ({COMMAND_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    c.command_id,
                    c.agent_id,
                    c.operation,
                    c.data,
                    c.issued_by,
                    c.status.as_str(),
                    c.changed,
                    c.output,
                    c.created_unix_ms,
                    c.finished_unix_ms
                ],
            )?;
        }
        Change::CommandFinished {
            command_id,
            status,
            changed,
            output,
            finished_unix_ms,
        } => {
            let n = tx.execute(
                "UPDATE commands SET status = ?2, changed = ?3, output = ?4, finished_unix_ms = ?5
                 WHERE command_id = ?1",
                params![
                    command_id,
                    status.as_str(),
                    changed,
                    output,
                    finished_unix_ms
                ],
            )?;
            if n == 0 {
                return Err(StoreError::UnknownCommand(*command_id));
            }
        }
        Change::UserRegistered(u) => {
            tx.execute(
                "INSERT INTO users (uid, name, permissions, control_key, password_hash, totp_secret,
                                    expires_unix_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (uid) DO UPDATE SET name = ?2, permissions = ?3, control_key = ?4,
                     password_hash = ?5, totp_secret = ?6, expires_unix_ms = ?7",
                params![
                    u.uid as i64,
                    u.name,
                    u.permissions as i64,
                    u.control_key,
                    u.password_hash,
                    u.totp_secret,
                    u.expires_unix_ms
                ],
            )?;
        }
        Change::UserRemoved { uid } => {
            tx.execute("DELETE FROM members WHERE uid = ?1", [*uid as i64])?;
            tx.execute("DELETE FROM users WHERE uid = ?1", [*uid as i64])?;
        }
        Change::ChannelCreated(c) => {
            tx.execute(
                "INSERT INTO channels (chid, owner, port) VALUES (?1, ?2, ?3)",
                params![c.chid as i64, c.owner as i64, c.port],
            )?;
        }
        Change::ChannelDeleted { chid } => {
            tx.execute("DELETE FROM members WHERE chid = ?1", [*chid as i64])?;
            tx.execute("DELETE FROM channels WHERE chid = ?1", [*chid as i64])?;
        }
        Change::MemberJoined { chid, uid } => {
            tx.execute(
                "INSERT OR IGNORE INTO members (chid, uid) VALUES (?1, ?2)",
                params![*chid as i64, *uid as i64],
            )?;
        }
        Change::MemberLeft { chid, uid } => {
            tx.execute(
                "DELETE FROM members WHERE chid = ?1 AND uid = ?2",
                params![*chid as i64, *uid as i64],
            )?;
        }
        Change::EventLogged(e) => {
            tx.execute(
                "INSERT INTO events (event_order, unix_ms, kind, json, scope) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.order as i64, e.unix_ms, e.kind, e.json, e.scope as i64],
            )?;
            tx.execute(
                "UPDATE event_log SET last_order = MAX(last_order, ?1) WHERE id = 1",
                [e.order as i64],
            )?;
        }
        Change::EventsPruned { before_order } => {
            tx.execute(
                "DELETE FROM events WHERE event_order < ?1",
                [*before_order as i64],
            )?;
        }
        Change::FeedClientSaved(c) => {
            tx.execute(
                "INSERT INTO feed_clients (client_id, public_key_der, user_name, last_sequence)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (client_id) DO UPDATE SET
                     public_key_der = excluded.public_key_der,
                     user_name = excluded.user_name,
                     last_sequence = excluded.last_sequence",
                params![c.client_id, c.public_key_der, c.user, c.last_sequence],
            )?;
        }
        Change::FeedClientRemoved { client_id } => {
            tx.execute("DELETE FROM feed_clients WHERE client_id = ?1", [client_id])?;
        }
        Change::FeedSequence {
            client_id,
            sequence,
        } => {
            tx.execute(
                "UPDATE feed_clients SET last_sequence = ?2 WHERE client_id = ?1",
                params![client_id, sequence],
            )?;
        }
        Change::Batch(changes) => {
            // All or none, also when a member is refused and the batch skipped.
            tx.execute_batch("SAVEPOINT batch")?;
            for c in changes {
                if let Err(e) = apply_in(tx, c) {
                    tx.execute_batch("ROLLBACK TO batch; RELEASE batch")?;
                    return Err(e);
                }
            }
            tx.execute_batch("RELEASE batch")?;
        }
        Change::Certificate(c) => {
            tx.execute(
                "INSERT OR REPLACE INTO certificates \
                 (serial, name, not_after_unix_ms, revoked_unix_ms) VALUES (?1, ?2, ?3, ?4)",
                params![c.serial, c.name, c.not_after_unix_ms, c.revoked_unix_ms],
            )?;
        }
    }
    Ok(())
}

fn event_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        order: row.get::<_, i64>(0)? as u64,
        unix_ms: row.get(1)?,
        kind: row.get(2)?,
        json: row.get(3)?,
        scope: row.get::<_, i64>(4)? as u64,
    })
}

/// The highest command id ever used: the AUTOINCREMENT counter, or the largest id present.
fn max_command_id(tx: &Transaction<'_>) -> Result<i64, StoreError> {
    let in_table: i64 = tx.query_row(
        "SELECT COALESCE(MAX(command_id), 0) FROM commands",
        [],
        |row| row.get(0),
    )?;
    let sequence: Option<i64> = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'commands'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(in_table.max(sequence.unwrap_or(0)))
}

/// Decodes a row of [`COMMAND_COLUMNS`]. The outer error is SQLite's, the inner one a bad
/// status name.
fn command_row(row: &Row<'_>) -> rusqlite::Result<Result<CommandRecord, StoreError>> {
    let status: String = row.get(5)?;
    let command_id: i64 = row.get(0)?;
    let Some(status) = CommandStatus::parse(&status) else {
        return Ok(Err(StoreError::Corrupt(format!(
            "command {command_id}: unknown status {status:?}"
        ))));
    };
    Ok(Ok(CommandRecord {
        command_id,
        agent_id: row.get(1)?,
        operation: row.get(2)?,
        data: row.get(3)?,
        issued_by: row.get(4)?,
        status,
        changed: row.get(6)?,
        output: row.get(7)?,
        created_unix_ms: row.get(8)?,
        finished_unix_ms: row.get(9)?,
    }))
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
