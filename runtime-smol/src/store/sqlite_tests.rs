use super::*;

fn agent(id: &str, networks: &[&str]) -> AgentRecord {
    AgentRecord {
        agent_id: id.to_owned(),
        secret_hash: format!("$argon2id$v=19$m=19456,t=2,p=1${id}"),
        allowed_networks: networks.iter().map(|s| (*s).to_owned()).collect(),
        last_seen_unix_ms: 0,
    }
}

fn command(id: i64, agent_id: &str) -> CommandRecord {
    CommandRecord {
        command_id: id,
        agent_id: agent_id.to_owned(),
        operation: "echo.Echo".to_owned(),
        data: format!(r#"{{"n":{id}}}"#),
        issued_by: "admin".to_owned(),
        status: CommandStatus::Pending,
        changed: false,
        output: String::new(),
        created_unix_ms: 1_700_000_000_000 + id,
        finished_unix_ms: 0,
    }
}

fn data(agent_id: &str, name: &str, value: &str) -> Change {
    Change::AgentData {
        agent_id: agent_id.to_owned(),
        name: name.to_owned(),
        value_json: value.to_owned(),
    }
}

fn finished(id: i64, status: CommandStatus) -> Change {
    Change::CommandFinished {
        command_id: id,
        status,
        changed: true,
        output: format!("output of {id}"),
        finished_unix_ms: 1_700_000_100_000 + id,
    }
}

/// One of every change kind; returns what `load` must give back afterwards.
fn apply_everything(store: &mut SqliteStore) -> StoredState {
    let changes = [
        Change::AgentRegistered(agent("web-1", &["10.0.0.0/8"])),
        Change::AgentRegistered(agent("db-1", &[])),
        Change::AgentRegistered(agent("gone", &["192.168.0.0/16", "::1/128"])),
        data("web-1", "os", r#""linux""#),
        data("web-1", "cpus", "4"),
        data("web-1", "cpus", "8"), // replaces
        data("gone", "os", r#""bsd""#),
        Change::AgentSeen {
            agent_id: "web-1".to_owned(),
            unix_ms: 1_700_000_000_123,
        },
        Change::CommandCreated(command(1, "web-1")),
        Change::CommandCreated(command(2, "gone")),
        Change::CommandCreated(command(3, "db-1")),
        Change::CommandCreated(command(4, "web-1")),
        finished(1, CommandStatus::Success),
        finished(3, CommandStatus::Cancelled),
        Change::AgentRemoved {
            agent_id: "gone".to_owned(),
        },
        // Re-registering keeps the data values.
        Change::AgentRegistered(agent("db-1", &["127.0.0.0/8"])),
        data("db-1", "role", r#"{"primary":true}"#),
        Change::AgentRegistered(agent("db-1", &["127.0.0.0/8"])),
        // Users, channels, memberships.
        Change::UserRegistered(user(1, "admin", u64::MAX)),
        Change::UserRegistered(user(2, "alice", 1)),
        Change::UserRegistered(user(3, "bob", 0)),
        Change::UserRegistered(user(2, "alice", 5)), // permissions changed
        Change::ChannelCreated(ChannelRecord {
            chid: 1,
            owner: 2,
            port: 50_000,
        }),
        Change::ChannelCreated(ChannelRecord {
            chid: 2,
            owner: 2,
            port: 50_001,
        }),
        Change::ChannelCreated(ChannelRecord {
            chid: 3,
            owner: 3,
            port: 50_002,
        }),
        Change::MemberJoined { chid: 1, uid: 2 },
        Change::MemberJoined { chid: 1, uid: 3 },
        Change::MemberJoined { chid: 2, uid: 3 },
        Change::MemberJoined { chid: 3, uid: 2 },
        Change::MemberLeft { chid: 1, uid: 2 },
        Change::ChannelDeleted { chid: 3 },
        Change::UserRemoved { uid: 3 },
        Change::Certificate(cert("0a1b", "db-1", 0)),
        Change::Certificate(cert("0c2d", "web-1", 0)),
        Change::Certificate(cert("0a1b", "db-1", 1_700_000_000_999)),
        Change::EventLogged(event(1)),
        Change::EventLogged(event(2)),
        Change::EventLogged(event(3)),
        Change::EventsPruned { before_order: 2 },
        Change::FeedClientSaved(feed("alice-bot", 0)),
        Change::FeedClientSaved(feed("gone-bot", 0)),
        Change::FeedClientRemoved {
            client_id: "gone-bot".into(),
        },
        // A batch: the command and the sequence together.
        Change::Batch(vec![
            Change::CommandCreated(command(5, "web-1")),
            Change::FeedSequence {
                client_id: "alice-bot".into(),
                sequence: 1,
            },
        ]),
    ];
    for change in &changes {
        store.apply(change).expect("apply");
    }
    let mut web = agent("web-1", &["10.0.0.0/8"]);
    web.last_seen_unix_ms = 1_700_000_000_123;
    let triple = |a: &str, n: &str, v: &str| (a.to_owned(), n.to_owned(), v.to_owned());
    StoredState {
        feed_clients: vec![feed("alice-bot", 1)],
        last_event_order: 3,
        first_event_order: 2,
        recent_events: vec![event(2), event(3)],
        certificates: vec![
            cert("0a1b", "db-1", 1_700_000_000_999),
            cert("0c2d", "web-1", 0),
        ],
        agents: vec![agent("db-1", &["127.0.0.0/8"]), web],
        agent_data: vec![
            triple("db-1", "role", r#"{"primary":true}"#),
            triple("web-1", "cpus", "8"),
            triple("web-1", "os", r#""linux""#),
        ],
        max_command_id: 5,
        pending_commands: vec![command(2, "gone"), command(4, "web-1"), command(5, "web-1")],
        users: vec![user(1, "admin", u64::MAX), user(2, "alice", 5)],
        channels: vec![
            ChannelRecord {
                chid: 1,
                owner: 2,
                port: 50_000,
            },
            ChannelRecord {
                chid: 2,
                owner: 2,
                port: 50_001,
            },
        ],
        members: vec![],
    }
}

fn user(uid: u64, name: &str, permissions: u64) -> UserRecord {
    UserRecord {
        uid,
        name: name.to_owned(),
        permissions,
        control_key: format!("key-{uid}"),
        password_hash: format!("$argon2id$placeholder-{uid}"),
        totp_secret: "3132".into(),
        expires_unix_ms: uid as i64,
    }
}

#[test]
fn every_change_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hub.db");
    let expected = {
        let mut store = SqliteStore::open(&path).expect("open");
        let expected = apply_everything(&mut store);
        assert_eq!(store.load().expect("load"), expected);
        expected
    };
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(store.load().expect("load"), expected);

    let all = store.list_commands(10).expect("list");
    let ids: Vec<i64> = all.iter().map(|c| c.command_id).collect();
    assert_eq!(ids, [5, 4, 3, 2, 1]);
    let mut done = command(1, "web-1");
    done.status = CommandStatus::Success;
    done.changed = true;
    done.output = "output of 1".to_owned();
    done.finished_unix_ms = 1_700_000_100_001;
    assert_eq!(all[4], done);
    assert_eq!(all[2].status, CommandStatus::Cancelled);
    assert_eq!(store.list_commands(2).expect("list").len(), 2);
    assert!(store.list_commands(0).expect("list").is_empty());
}

#[test]
fn a_file_database_uses_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("hub.db")).expect("open");
    let mode: String = store
        .conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .expect("pragma");
    assert_eq!(mode, "wal");
    let sync: i64 = store
        .conn
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .expect("pragma");
    assert_eq!(sync, 1, "NORMAL");
}

#[test]
fn an_empty_store_loads_empty() {
    let store = SqliteStore::open_in_memory().expect("open");
    assert_eq!(
        store.load().expect("load"),
        StoredState {
            first_event_order: 1,
            ..StoredState::default()
        }
    );
    assert!(store.list_commands(5).expect("list").is_empty());
}

#[test]
fn migration_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hub.db");
    let expected = {
        let mut store = SqliteStore::open(&path).expect("open");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        let expected = apply_everything(&mut store);
        store.migrate().expect("migrate again");
        store.migrate().expect("and again");
        expected
    };
    for _ in 0..2 {
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        assert_eq!(store.load().expect("load"), expected);
    }
    let store = SqliteStore::open(&path).expect("reopen");
    let tables: i64 = store
        .conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table'
             AND name IN ('agents', 'agent_data', 'commands')",
            [],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(tables, 3);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hub.db");
    drop(SqliteStore::open(&path).expect("open"));
    let conn = Connection::open(&path).expect("raw open");
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("pragma");
    drop(conn);
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::TooNew { found, supported })
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION
    ));
}

#[test]
fn removing_an_agent_keeps_its_commands() {
    let mut store = SqliteStore::open_in_memory().expect("open");
    store
        .apply(&Change::AgentRegistered(agent("a", &[])))
        .expect("apply");
    store.apply(&data("a", "k", "1")).expect("apply");
    store
        .apply(&Change::CommandCreated(command(7, "a")))
        .expect("apply");
    store
        .apply(&finished(7, CommandStatus::Failed))
        .expect("apply");
    store
        .apply(&Change::CommandCreated(command(8, "a")))
        .expect("apply");
    let removed = Change::AgentRemoved {
        agent_id: "a".to_owned(),
    };
    store.apply(&removed).expect("apply");
    store.apply(&removed).expect("removing twice is fine");

    let state = store.load().expect("load");
    assert!(state.agents.is_empty() && state.agent_data.is_empty());
    assert_eq!(state.max_command_id, 8);
    assert_eq!(state.pending_commands, [command(8, "a")]);
    let log = store.list_commands(10).expect("list");
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|c| c.agent_id == "a"));
    // A pending command of a removed agent can still be finished.
    store
        .apply(&finished(8, CommandStatus::Failed))
        .expect("apply");
    assert!(store.load().expect("load").pending_commands.is_empty());
}

#[test]
fn the_highest_command_id_is_never_forgotten() {
    let mut store = SqliteStore::open_in_memory().expect("open");
    for id in [3, 9, 5] {
        store
            .apply(&Change::CommandCreated(command(id, "a")))
            .expect("apply");
    }
    store
        .conn
        .execute("DELETE FROM commands WHERE command_id = 9", [])
        .expect("prune");
    assert_eq!(store.load().expect("load").max_command_id, 9);
}

#[test]
fn inconsistent_changes_are_refused_atomically() {
    let mut store = SqliteStore::open_in_memory().expect("open");
    assert!(matches!(
        store.apply(&Change::AgentSeen {
            agent_id: "nobody".to_owned(),
            unix_ms: 1
        }),
        Err(StoreError::UnknownAgent(id)) if id == "nobody"
    ));
    assert!(matches!(
        store.apply(&data("nobody", "k", "1")),
        Err(StoreError::UnknownAgent(_))
    ));
    assert!(matches!(
        store.apply(&finished(42, CommandStatus::Success)),
        Err(StoreError::UnknownCommand(42))
    ));
    store
        .apply(&Change::CommandCreated(command(1, "a")))
        .expect("apply");
    // A reused command id fails and leaves the first record untouched.
    let mut dup = command(1, "b");
    dup.operation = "other".to_owned();
    assert!(matches!(
        store.apply(&Change::CommandCreated(dup)),
        Err(StoreError::Sqlite(_))
    ));
    assert_eq!(store.list_commands(5).expect("list"), [command(1, "a")]);
    assert_eq!(
        store.load().expect("load"),
        StoredState {
            max_command_id: 1,
            pending_commands: vec![command(1, "a")],
            first_event_order: 1,
            ..StoredState::default()
        }
    );
}

#[test]
fn a_corrupt_status_is_reported() {
    let mut store = SqliteStore::open_in_memory().expect("open");
    store
        .apply(&Change::CommandCreated(command(1, "a")))
        .expect("apply");
    store
        .conn
        .execute("UPDATE commands SET status = 'weird'", [])
        .expect("update");
    assert!(matches!(
        store.list_commands(1),
        Err(StoreError::Corrupt(_))
    ));
}

fn cert(serial: &str, name: &str, revoked_unix_ms: i64) -> CertificateRecord {
    CertificateRecord {
        serial: serial.into(),
        name: name.into(),
        not_after_unix_ms: 1_800_000_000_000,
        revoked_unix_ms,
    }
}

fn event(order: u64) -> EventRecord {
    EventRecord {
        order,
        unix_ms: 1_700_000_000_000 + order as i64,
        kind: "ChannelCreated".into(),
        json: format!(r#"{{"@type":"ChannelCreated","chid":{order}}}"#),
        scope: 0,
    }
}

fn feed(id: &str, last_sequence: i64) -> FeedClientRecord {
    FeedClientRecord {
        client_id: id.into(),
        public_key_der: vec![0x30, 0x82, 1, 2],
        user: "alice".into(),
        last_sequence,
    }
}

#[test]
fn a_batch_is_all_or_nothing() {
    let mut store = SqliteStore::open_in_memory().expect("open");
    store
        .apply(&Change::FeedClientSaved(feed("bot", 0)))
        .expect("apply");
    // The second member names an unknown command: refused, and the first is not kept.
    let batch = Change::Batch(vec![
        Change::FeedSequence {
            client_id: "bot".into(),
            sequence: 7,
        },
        finished(99, CommandStatus::Success),
    ]);
    store
        .apply_all(std::slice::from_ref(&batch))
        .expect("skipped, not failed");
    assert_eq!(
        store.load().expect("load").feed_clients,
        vec![feed("bot", 0)]
    );
}

#[test]
fn the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut n = 0;
    super::super::conformance::run_all(
        &mut || {
            n += 1;
            Box::new(SqliteStore::open(&dir.path().join(format!("c{n}.sqlite"))).expect("open"))
        },
        8,
    );
}
