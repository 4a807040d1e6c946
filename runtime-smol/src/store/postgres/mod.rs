//! The PostgreSQL store: the hub's state in a PostgreSQL database (`serve --store
//! postgres://USER@HOST:PORT/DB`).
//!
//! The sync `postgres` client on a bounded `r2d2` pool; calls block (the server runs them on
//! smol's blocking pool, as it does SQLite's). The schema is the SQLite store's, in
//! PostgreSQL's types, migrated in the database under an advisory lock (several hubs may start
//! at once); its version is in `schema_version`.
//!
//! Connection loss: an operation that cannot reach the server fails with
//! [`StoreError::Unavailable`], and the caller retries the same batch. Each batch carries a
//! number (per store instance) written in the same transaction, so a batch whose commit
//! reached the server before the connection died is recognised on the retry and not applied
//! twice.

use std::collections::HashMap;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::{Row, Statement};
use r2d2_postgres::PostgresConnectionManager;
use switchboard_core::hub::persist::{
    AgentRecord, CertificateRecord, Change, ChannelRecord, CommandRecord, CommandStatus,
    EventRecord, FeedClientRecord, StoredState, UserRecord,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{RECENT_EVENTS, Store, StoreError};

mod apply;
use apply::{Tx, apply_in, highest, raise_counters};

/// Migration `i` takes the schema from version `i` to `i + 1`. Version 1 is the SQLite store's
/// schema at its version 6 in one step.
const MIGRATIONS: &[&str] = &["CREATE TABLE agents (
         agent_id          TEXT PRIMARY KEY,
         secret_hash       TEXT NOT NULL,
         allowed_networks  TEXT NOT NULL,
         last_seen_unix_ms BIGINT NOT NULL DEFAULT 0
     );
     CREATE TABLE agent_data (
         agent_id   TEXT NOT NULL,
         name       TEXT NOT NULL,
         value_json TEXT NOT NULL,
         PRIMARY KEY (agent_id, name)
     );
     CREATE TABLE commands (
         command_id       BIGINT PRIMARY KEY,
         agent_id         TEXT NOT NULL,
         operation        TEXT NOT NULL,
         data             TEXT NOT NULL,
         issued_by        TEXT NOT NULL,
         status           TEXT NOT NULL,
         changed          BOOLEAN NOT NULL,
         output           TEXT NOT NULL,
         created_unix_ms  BIGINT NOT NULL,
         finished_unix_ms BIGINT NOT NULL
     );
     CREATE INDEX commands_by_agent ON commands (agent_id, command_id);
     CREATE INDEX commands_pending ON commands (command_id) WHERE status = 'pending';
     CREATE TABLE users (
         uid             BIGINT PRIMARY KEY,
         name            TEXT NOT NULL UNIQUE,
         permissions     BIGINT NOT NULL,
         control_key     TEXT NOT NULL DEFAULT '',
         password_hash   TEXT NOT NULL DEFAULT '',
         totp_secret     TEXT NOT NULL DEFAULT '',
         expires_unix_ms BIGINT NOT NULL DEFAULT 0
     );
     CREATE TABLE channels (
         chid  BIGINT PRIMARY KEY,
         owner BIGINT NOT NULL,
         port  INTEGER NOT NULL
     );
     CREATE TABLE members (
         chid BIGINT NOT NULL REFERENCES channels (chid) ON DELETE CASCADE,
         uid  BIGINT NOT NULL REFERENCES users (uid) ON DELETE CASCADE,
         PRIMARY KEY (chid, uid)
     );
     CREATE TABLE certificates (
         serial            TEXT PRIMARY KEY,
         name              TEXT NOT NULL,
         not_after_unix_ms BIGINT NOT NULL,
         revoked_unix_ms   BIGINT NOT NULL DEFAULT 0
     );
     CREATE INDEX certificates_by_name ON certificates (name);
     CREATE TABLE events (
         event_order BIGINT PRIMARY KEY,
         unix_ms     BIGINT NOT NULL,
         kind        TEXT NOT NULL,
         json        TEXT NOT NULL,
         scope       BIGINT NOT NULL
     );
     CREATE TABLE feed_clients (
         client_id      TEXT PRIMARY KEY,
         public_key_der BYTEA NOT NULL,
         user_name      TEXT NOT NULL,
         last_sequence  BIGINT NOT NULL DEFAULT 0
     );
     -- Highest values ever used (they survive deleting the rows that had them).
     CREATE TABLE counters (
         name  TEXT PRIMARY KEY,
         value BIGINT NOT NULL
     );
     INSERT INTO counters (name, value) VALUES ('command_id', 0), ('event_order', 0);
     -- Batches applied, by store instance and number: a retried batch is applied once.
     CREATE TABLE applied_batches (
         instance TEXT NOT NULL,
         seq      BIGINT NOT NULL,
         PRIMARY KEY (instance, seq)
     );"];

/// The schema version this code writes.
pub const PG_SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How many applied-batch numbers of this instance are kept (a retry only ever asks for the
/// last one).
const KEEP_BATCHES: i64 = 64;

/// An advisory lock key for migrations ("SWBD").
const MIGRATION_LOCK: i64 = 0x5357_4244;

/// The advisory lock a hub holds for as long as it uses the database ("SWBH"): hub instances
/// allocate ids in memory, so two of them on one database would collide. Until instances
/// share a database on purpose, the second one is refused.
const HUB_LEASE: i64 = 0x5357_4248;

const COMMAND_COLUMNS: &str = "command_id, agent_id, operation, data, issued_by, status, \
                               changed, output, created_unix_ms, finished_unix_ms";

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// A libpq-style URL or key=value string (`postgres://user@127.0.0.1:5432/switchboard`).
    pub url: String,
    /// Connections at most in the pool.
    pub pool_size: u32,
    /// How long getting a connection may take before the operation fails as unavailable.
    pub connect_timeout: Duration,
    /// A password, if not in the URL.
    pub password: Option<String>,
    /// The CA (PEM) that signed the server's certificate. With it, TLS is used when the URL
    /// asks (`sslmode=require`) or the server offers it (`prefer`, the default), and the
    /// server's certificate is verified against it for the URL's host name; without it,
    /// `sslmode=require` is an error and otherwise the connection is plain.
    pub ca_pem: Option<Vec<u8>>,
}

impl PostgresOptions {
    /// Defaults for `url`: a pool of 4, 5 s to connect.
    pub fn new(url: &str) -> Self {
        PostgresOptions {
            url: url.to_owned(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            password: None,
            ca_pem: None,
        }
    }
}

type Pool = r2d2::Pool<PostgresConnectionManager<MakeRustlsConnect>>;

/// The TLS connector for the server: rustls with the project's provider, trusting `ca_pem`
/// only (no CA: an empty trust store, used only with TLS off).
fn tls(ca_pem: Option<&[u8]>) -> Result<MakeRustlsConnect, StoreError> {
    let roots = match ca_pem {
        Some(pem) => crate::tls::root_store(pem)
            .map_err(|e| StoreError::Postgres(format!("the store's CA: {e}")))?,
        None => rustls::RootCertStore::empty(),
    };
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Postgres(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The hub's PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    /// The session holding [`HUB_LEASE`] (re-taken after the server restarts).
    lease: Option<postgres::Client>,
    tls: MakeRustlsConnect,
    /// The server was unreachable since the lease was last checked.
    lease_suspect: bool,
    /// The connection persists go through, with its prepared statements.
    writer: Option<(postgres::Client, HashMap<String, Statement>)>,
    config: postgres::Config,
    describe: String,
    /// This store's name in `applied_batches` (random per open).
    instance: String,
    /// The number of the next batch.
    next_batch: i64,
    /// A batch whose outcome is unknown (the connection died around its commit).
    in_doubt: Option<i64>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("server", &self.describe)
            .field("instance", &self.instance)
            .finish()
    }
}

fn pg_error(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        // The server is going away or not ready (class 08: connection exceptions; 57P01..03:
        // shut down by an administrator, crash recovery, cannot connect now; 53300: too many
        // connections): retry later.
        Some(db)
            if db.code().code().starts_with("08")
                || matches!(db.code().code(), "57P01" | "57P02" | "57P03" | "53300") =>
        {
            StoreError::Unavailable(format!("{} ({})", db.message(), db.code().code()))
        }
        Some(db) => StoreError::Postgres(format!("{} ({})", db.message(), db.code().code())),
        // Not an answer of the server: the connection is gone or could not be made.
        None => StoreError::Unavailable(e.to_string()),
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        pg_error(e)
    }
}

/// Where a URL points, without its password (for logs).
fn describe(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(c) => {
            let hosts: Vec<String> = c
                .get_hosts()
                .iter()
                .map(|h| match h {
                    postgres::config::Host::Tcp(s) => s.clone(),
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect();
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!(
                "postgres {}:{port}/{}",
                hosts.join(","),
                c.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "postgres (unparsable URL)".into(),
    }
}

impl PostgresStore {
    /// Connects (the pool's first connection must succeed within the timeout) and migrates
    /// the schema.
    pub fn open(opts: &PostgresOptions) -> Result<Self, StoreError> {
        let config: postgres::Config = opts
            .url
            .parse()
            .map_err(|e: postgres::Error| StoreError::Postgres(format!("bad URL: {e}")))?;
        let mut config = config;
        if opts.ca_pem.is_none() {
            if config.get_ssl_mode() == SslMode::Require {
                return Err(StoreError::Postgres(
                    "sslmode=require needs the server's CA (--store-ca FILE)".into(),
                ));
            }
            config.ssl_mode(SslMode::Disable);
        }
        let tls = tls(opts.ca_pem.as_deref())?;
        config.connect_timeout(opts.connect_timeout);
        config.application_name("switchboard");
        if let Some(pw) = &opts.password {
            config.password(pw);
        }
        let manager = PostgresConnectionManager::new(config.clone(), tls.clone());
        let pool = r2d2::Pool::builder()
            .max_size(opts.pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(opts.connect_timeout)
            .build(manager)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut store = PostgresStore {
            pool,
            lease: None,
            tls,
            lease_suspect: false,
            writer: None,
            config,
            describe: describe(&opts.url),
            instance: format!("{:016x}", crate::client::seed()),
            next_batch: 1,
            in_doubt: None,
        };
        store.migrate()?;
        store.take_lease()?;
        Ok(store)
    }

    /// Takes (or re-takes, after a lost session) the hub's lease on the database.
    fn take_lease(&mut self) -> Result<(), StoreError> {
        if !self.lease_suspect && self.lease.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        if let Some(c) = &mut self.lease
            && c.is_valid(Duration::from_secs(2)).is_ok()
        {
            self.lease_suspect = false;
            return Ok(());
        }
        self.lease = None;
        let mut c = self.config.connect(self.tls.clone())?;
        let got: bool = c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&HUB_LEASE])?
            .get(0);
        if !got {
            return Err(StoreError::Postgres(
                "another hub uses this database (one hub per database for now)".into(),
            ));
        }
        self.lease = Some(c);
        self.lease_suspect = false;
        Ok(())
    }

    fn conn(
        &self,
    ) -> Result<r2d2::PooledConnection<PostgresConnectionManager<MakeRustlsConnect>>, StoreError>
    {
        self.pool
            .get()
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 id      INTEGER PRIMARY KEY CHECK (id = 1),
                 version INTEGER NOT NULL
             );
             INSERT INTO schema_version (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING;",
        )?;
        let found: i32 = tx
            .query_one("SELECT version FROM schema_version WHERE id = 1", &[])?
            .get(0);
        let found = found.max(0) as u32;
        if found > PG_SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found,
                supported: PG_SCHEMA_VERSION,
            });
        }
        for (version, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tracing::info!(to = version + 1, "migrating the PostgreSQL schema");
            tx.batch_execute(sql)?;
        }
        if found < PG_SCHEMA_VERSION {
            tx.execute(
                "UPDATE schema_version SET version = $1 WHERE id = 1",
                &[&(PG_SCHEMA_VERSION as i32)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `f` in one transaction on the writer connection (connected, or connected again
    /// after it was lost), committing when it succeeds.
    fn write(
        &mut self,
        f: impl FnOnce(&mut Tx<'_, '_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if self.writer.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.writer = None;
        }
        if self.writer.is_none() {
            let c = self.config.connect(self.tls.clone())?;
            self.writer = Some((c, HashMap::new()));
        }
        let Some((client, cache)) = self.writer.as_mut() else {
            return Err(StoreError::Unavailable("no connection".into()));
        };
        let result: Result<(), StoreError> = (|| {
            let mut t = client.transaction()?;
            let mut tx = Tx { tx: &mut t, cache };
            f(&mut tx)?;
            t.commit()?;
            Ok(())
        })();
        if let Err(e) = &result
            && e.is_unavailable()
        {
            self.writer = None; // its statements go with it
        }
        result
    }

    fn batch_applied(&self, seq: i64) -> Result<bool, StoreError> {
        let mut c = self.conn()?;
        Ok(c.query_opt(
            "SELECT 1 FROM applied_batches WHERE instance = $1 AND seq = $2",
            &[&self.instance, &seq],
        )?
        .is_some())
    }
}

impl Store for PostgresStore {
    fn load(&mut self) -> Result<StoredState, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let agents = tx
            .query(
                "SELECT agent_id, secret_hash, allowed_networks, last_seen_unix_ms
                 FROM agents ORDER BY agent_id COLLATE \"C\"",
                &[],
            )?
            .iter()
            .map(|r| {
                let agent_id: String = r.get(0);
                let networks: String = r.get(2);
                let allowed_networks = serde_json::from_str(&networks).map_err(|e| {
                    StoreError::Corrupt(format!("allowed networks of {agent_id:?}: {e}"))
                })?;
                Ok(AgentRecord {
                    agent_id,
                    secret_hash: r.get(1),
                    allowed_networks,
                    last_seen_unix_ms: r.get(3),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let agent_data = tx
            .query(
                "SELECT agent_id, name, value_json FROM agent_data
                 ORDER BY agent_id COLLATE \"C\", name COLLATE \"C\"",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let max_command_id: i64 = tx
            .query_one(
                "SELECT GREATEST(
                     (SELECT COALESCE(MAX(command_id), 0) FROM commands),
                     (SELECT value FROM counters WHERE name = 'command_id'))",
                &[],
            )?
            .get(0);
        let pending_commands = tx
            .query(
                &format!(
                    "SELECT {COMMAND_COLUMNS} FROM commands WHERE status = 'pending'
                     ORDER BY command_id"
                ),
                &[],
            )?
            .iter()
            .map(command_row)
            .collect::<Result<Vec<_>, _>>()?;
        let users = tx
            .query(
                "SELECT uid, name, permissions, control_key, password_hash, totp_secret,
                        expires_unix_ms FROM users ORDER BY uid",
                &[],
            )?
            .iter()
            .map(|r| UserRecord {
                uid: r.get::<_, i64>(0) as u64,
                name: r.get(1),
                permissions: r.get::<_, i64>(2) as u64,
                control_key: r.get(3),
                password_hash: r.get(4),
                totp_secret: r.get(5),
                expires_unix_ms: r.get(6),
            })
            .collect();
        let channels = tx
            .query("SELECT chid, owner, port FROM channels ORDER BY chid", &[])?
            .iter()
            .map(|r| ChannelRecord {
                chid: r.get::<_, i64>(0) as u64,
                owner: r.get::<_, i64>(1) as u64,
                port: u16::try_from(r.get::<_, i32>(2)).unwrap_or(0),
            })
            .collect();
        let members = tx
            .query("SELECT chid, uid FROM members ORDER BY chid, uid", &[])?
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
            .collect();
        let certificates = tx
            .query(
                "SELECT serial, name, not_after_unix_ms, revoked_unix_ms FROM certificates
                 ORDER BY serial COLLATE \"C\"",
                &[],
            )?
            .iter()
            .map(|r| CertificateRecord {
                serial: r.get(0),
                name: r.get(1),
                not_after_unix_ms: r.get(2),
                revoked_unix_ms: r.get(3),
            })
            .collect();
        let last_event_order: i64 = tx
            .query_one("SELECT value FROM counters WHERE name = 'event_order'", &[])?
            .get(0);
        let first_event_order: i64 = tx
            .query_one(
                "SELECT COALESCE(MIN(event_order), $1) FROM events",
                &[&(last_event_order + 1)],
            )?
            .get(0);
        let mut recent_events = tx
            .query(
                "SELECT event_order, unix_ms, kind, json, scope FROM events
                 ORDER BY event_order DESC LIMIT $1",
                &[&(RECENT_EVENTS as i64)],
            )?
            .iter()
            .map(event_row)
            .collect::<Vec<_>>();
        recent_events.reverse();
        let feed_clients = tx
            .query(
                "SELECT client_id, public_key_der, user_name, last_sequence FROM feed_clients
                 ORDER BY client_id COLLATE \"C\"",
                &[],
            )?
            .iter()
            .map(|r| FeedClientRecord {
                client_id: r.get(0),
                public_key_der: r.get(1),
                user: r.get(2),
                last_sequence: r.get(3),
            })
            .collect();
        tx.commit()?;
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

    fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        self.write(|tx| {
            apply_in(tx, change)?;
            let mut top = (0, 0);
            highest(change, &mut top);
            raise_counters(tx, top)
        })
    }

    fn apply_all(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        // No write without the lease: another hub may have taken the database meanwhile.
        if let Err(e) = self.take_lease() {
            if e.is_unavailable() {
                self.lease_suspect = true;
            }
            return Err(e);
        }
        let seq = match self.in_doubt {
            // The last attempt died around its commit: if it committed, it is done.
            Some(seq) if self.batch_applied(seq)? => {
                self.in_doubt = None;
                return Ok(());
            }
            Some(seq) => seq,
            None => {
                let seq = self.next_batch;
                self.next_batch += 1;
                seq
            }
        };
        let instance = self.instance.clone();
        let result = self.write(|tx| {
            let mut top = (0, 0);
            for change in changes {
                match apply_in(tx, change) {
                    Ok(()) => highest(change, &mut top),
                    Err(e) if e.is_refusal() => {
                        tracing::warn!(error = %e, ?change, "change refused by the store, skipped");
                    }
                    Err(e) => return Err(e),
                }
            }
            raise_counters(tx, top)?;
            tx.execute(
                "INSERT INTO applied_batches (instance, seq) VALUES ($1, $2)",
                &[&instance, &seq],
            )?;
            if seq % KEEP_BATCHES == 0 {
                tx.execute(
                    "DELETE FROM applied_batches WHERE instance = $1 AND seq < $2",
                    &[&instance, &(seq - KEEP_BATCHES)],
                )?;
            }
            Ok(())
        });
        match &result {
            Err(e) if e.is_unavailable() => {
                self.in_doubt = Some(seq);
                self.lease_suspect = true;
            }
            _ => self.in_doubt = None,
        }
        result
    }

    fn read_events(&mut self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let mut c = self.conn()?;
        Ok(c.query(
            "SELECT event_order, unix_ms, kind, json, scope FROM events
             WHERE event_order > $1 ORDER BY event_order LIMIT $2",
            &[&(after as i64), &i64::try_from(limit).unwrap_or(i64::MAX)],
        )?
        .iter()
        .map(event_row)
        .collect())
    }

    fn list_commands(&mut self, limit: usize) -> Result<Vec<CommandRecord>, StoreError> {
        let mut c = self.conn()?;
        c.query(
            &format!("SELECT {COMMAND_COLUMNS} FROM commands ORDER BY command_id DESC LIMIT $1"),
            &[&i64::try_from(limit).unwrap_or(i64::MAX)],
        )?
        .iter()
        .map(command_row)
        .collect()
    }

    fn schema_version(&mut self) -> Result<u32, StoreError> {
        let mut c = self.conn()?;
        let v: i32 = c
            .query_one("SELECT version FROM schema_version WHERE id = 1", &[])?
            .get(0);
        Ok(v.max(0) as u32)
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

fn event_row(r: &Row) -> EventRecord {
    EventRecord {
        order: r.get::<_, i64>(0) as u64,
        unix_ms: r.get(1),
        kind: r.get(2),
        json: r.get(3),
        scope: r.get::<_, i64>(4) as u64,
    }
}

fn command_row(r: &Row) -> Result<CommandRecord, StoreError> {
    let command_id: i64 = r.get(0);
    let status: String = r.get(5);
    let Some(status) = CommandStatus::parse(&status) else {
        return Err(StoreError::Corrupt(format!(
            "command {command_id}: unknown status {status:?}"
        )));
    };
    Ok(CommandRecord {
        command_id,
        agent_id: r.get(1),
        operation: r.get(2),
        data: r.get(3),
        issued_by: r.get(4),
        status,
        changed: r.get(6),
        output: r.get(7),
        created_unix_ms: r.get(8),
        finished_unix_ms: r.get(9),
    })
}
