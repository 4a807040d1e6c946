//! Changes into PostgreSQL: one statement or two per change, on the writer connection's
//! prepared statements; the same semantics as the SQLite store (see [`super::super::Store`]).

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Row, Statement, Transaction};
use switchboard_core::hub::persist::Change;

use super::COMMAND_COLUMNS;
use crate::store::StoreError;

/// A transaction on the writer connection with its prepared statements (prepared once per
/// connection: one round trip per statement afterwards instead of two).
pub(super) struct Tx<'a, 'b> {
    pub(super) tx: &'a mut Transaction<'b>,
    pub(super) cache: &'a mut HashMap<String, Statement>,
}

impl Tx<'_, '_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        self.cache.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub(super) fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let st = self.statement(sql)?;
        Ok(self.tx.execute(&st, params)?)
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let st = self.statement(sql)?;
        Ok(self.tx.query_opt(&st, params)?)
    }
}

/// The highest command id and event order a change stores (they feed `counters` once per
/// batch).
pub(super) fn highest(change: &Change, top: &mut (i64, i64)) {
    match change {
        Change::CommandCreated(c) => top.0 = top.0.max(c.command_id),
        Change::EventLogged(e) => top.1 = top.1.max(e.order as i64),
        Change::Batch(cs) => cs.iter().for_each(|c| highest(c, top)),
        _ => {}
    }
}

pub(super) fn raise_counters(tx: &mut Tx<'_, '_>, top: (i64, i64)) -> Result<(), StoreError> {
    if top.0 > 0 {
        tx.execute(
            "UPDATE counters SET value = GREATEST(value, $1) WHERE name = 'command_id'",
            &[&top.0],
        )?;
    }
    if top.1 > 0 {
        tx.execute(
            "UPDATE counters SET value = GREATEST(value, $1) WHERE name = 'event_order'",
            &[&top.1],
        )?;
    }
    Ok(())
}

pub(super) fn apply_in(tx: &mut Tx<'_, '_>, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::AgentRegistered(agent) => {
            let networks = serde_json::to_string(&agent.allowed_networks)
                .map_err(|e| StoreError::Corrupt(format!("allowed networks: {e}")))?;
            tx.execute(
                "INSERT INTO agents (agent_id, secret_hash, allowed_networks, last_seen_unix_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (agent_id) DO UPDATE SET
                     secret_hash = excluded.secret_hash,
                     allowed_networks = excluded.allowed_networks,
                     last_seen_unix_ms = excluded.last_seen_unix_ms",
                &[
                    &agent.agent_id,
                    &agent.secret_hash,
                    &networks,
                    &agent.last_seen_unix_ms,
                ],
            )?;
        }
        Change::AgentRemoved { agent_id } => {
            tx.execute("DELETE FROM agent_data WHERE agent_id = $1", &[agent_id])?;
            tx.execute("DELETE FROM agents WHERE agent_id = $1", &[agent_id])?;
        }
        Change::AgentSeen { agent_id, unix_ms } => {
            let n = tx.execute(
                "UPDATE agents SET last_seen_unix_ms = $2 WHERE agent_id = $1",
                &[agent_id, unix_ms],
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
            let known = tx.query_opt("SELECT 1 FROM agents WHERE agent_id = $1", &[agent_id])?;
            if known.is_none() {
                return Err(StoreError::UnknownAgent(agent_id.clone()));
            }
            tx.execute(
                "INSERT INTO agent_data (agent_id, name, value_json) VALUES ($1, $2, $3)
                 ON CONFLICT (agent_id, name) DO UPDATE SET value_json = excluded.value_json",
                &[agent_id, name, value_json],
            )?;
        }
        Change::CommandCreated(c) => {
            tx.execute(
                &format!(
                    "INSERT INTO commands ({COMMAND_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ),
                &[
                    &c.command_id,
                    &c.agent_id,
                    &c.operation,
                    &c.data,
                    &c.issued_by,
                    &c.status.as_str(),
                    &c.changed,
                    &c.output,
                    &c.created_unix_ms,
                    &c.finished_unix_ms,
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
                "UPDATE commands SET status = $2, changed = $3, output = $4, finished_unix_ms = $5
                 WHERE command_id = $1",
                &[
                    command_id,
                    &status.as_str(),
                    changed,
                    output,
                    finished_unix_ms,
                ],
            )?;
            if n == 0 {
                return Err(StoreError::UnknownCommand(*command_id));
            }
        }
        Change::UserRegistered(u) => {
            tx.execute(
                "INSERT INTO users (uid, name, permissions, control_key, password_hash,
                                    totp_secret, expires_unix_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (uid) DO UPDATE SET name = $2, permissions = $3, control_key = $4,
                     password_hash = $5, totp_secret = $6, expires_unix_ms = $7",
                &[
                    &(u.uid as i64),
                    &u.name,
                    &(u.permissions as i64),
                    &u.control_key,
                    &u.password_hash,
                    &u.totp_secret,
                    &u.expires_unix_ms,
                ],
            )?;
        }
        Change::UserRemoved { uid } => {
            tx.execute("DELETE FROM members WHERE uid = $1", &[&(*uid as i64)])?;
            tx.execute("DELETE FROM users WHERE uid = $1", &[&(*uid as i64)])?;
        }
        Change::ChannelCreated(c) => {
            tx.execute(
                "INSERT INTO channels (chid, owner, port) VALUES ($1, $2, $3)",
                &[&(c.chid as i64), &(c.owner as i64), &i32::from(c.port)],
            )?;
        }
        Change::ChannelDeleted { chid } => {
            tx.execute("DELETE FROM members WHERE chid = $1", &[&(*chid as i64)])?;
            tx.execute("DELETE FROM channels WHERE chid = $1", &[&(*chid as i64)])?;
        }
        Change::MemberJoined { chid, uid } => {
            tx.execute(
                "INSERT INTO members (chid, uid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&(*chid as i64), &(*uid as i64)],
            )?;
        }
        Change::MemberLeft { chid, uid } => {
            tx.execute(
                "DELETE FROM members WHERE chid = $1 AND uid = $2",
                &[&(*chid as i64), &(*uid as i64)],
            )?;
        }
        Change::EventLogged(e) => {
            tx.execute(
                "INSERT INTO events (event_order, unix_ms, kind, json, scope)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &(e.order as i64),
                    &e.unix_ms,
                    &e.kind,
                    &e.json,
                    &(e.scope as i64),
                ],
            )?;
        }
        Change::EventsPruned { before_order } => {
            tx.execute(
                "DELETE FROM events WHERE event_order < $1",
                &[&(*before_order as i64)],
            )?;
        }
        Change::FeedClientSaved(c) => {
            tx.execute(
                "INSERT INTO feed_clients (client_id, public_key_der, user_name, last_sequence)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (client_id) DO UPDATE SET
                     public_key_der = excluded.public_key_der,
                     user_name = excluded.user_name,
                     last_sequence = excluded.last_sequence",
                &[&c.client_id, &c.public_key_der, &c.user, &c.last_sequence],
            )?;
        }
        Change::FeedClientRemoved { client_id } => {
            tx.execute(
                "DELETE FROM feed_clients WHERE client_id = $1",
                &[client_id],
            )?;
        }
        Change::FeedSequence {
            client_id,
            sequence,
        } => {
            tx.execute(
                "UPDATE feed_clients SET last_sequence = $2 WHERE client_id = $1",
                &[client_id, sequence],
            )?;
        }
        Change::Batch(changes) => {
            // All or none: a savepoint, rolled back when dropped uncommitted.
            let mut sp = tx.tx.transaction()?;
            let mut inner = Tx {
                tx: &mut sp,
                cache: &mut *tx.cache,
            };
            for c in changes {
                apply_in(&mut inner, c)?;
            }
            sp.commit()?;
        }
        Change::Certificate(c) => {
            tx.execute(
                "INSERT INTO certificates (serial, name, not_after_unix_ms, revoked_unix_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (serial) DO UPDATE SET name = excluded.name,
                     not_after_unix_ms = excluded.not_after_unix_ms,
                     revoked_unix_ms = excluded.revoked_unix_ms",
                &[&c.serial, &c.name, &c.not_after_unix_ms, &c.revoked_unix_ms],
            )?;
        }
    }
    Ok(())
}
