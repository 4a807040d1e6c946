//! One suite of checks for every [`Store`] implementation: the SQLite store, the PostgreSQL
//! store and the simulator's in-memory store run the same cases (`tests/tests/store_*.rs`).
//!
//! Each case gets a fresh, empty store from the caller's factory and panics, naming itself,
//! when the store breaks the contract written on [`Store`]. The last case is differential:
//! seeded random sequences of changes (some refused, some fatal) go into the store under test
//! and into an in-memory SQLite store, and what each answers and then loads must agree.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchboard_core::hub::persist::{
    AgentRecord, CertificateRecord, Change, ChannelRecord, CommandRecord, CommandStatus,
    EventRecord, FeedClientRecord, StoredState, UserRecord,
};

use super::{RECENT_EVENTS, SqliteStore, Store, StoreError};

/// A factory of fresh, empty stores.
pub type MakeStore<'a> = dyn FnMut() -> Box<dyn Store> + 'a;

/// One case: it panics when the store breaks the contract.
pub type Case = fn(&mut dyn Store);

/// The cases, by name.
pub const CASES: &[(&str, Case)] = &[
    ("empty", empty),
    ("agents_and_their_data", agents_and_their_data),
    ("refusals_write_nothing", refusals_write_nothing),
    ("commands", commands),
    ("users_channels_members", users_channels_members),
    ("events_and_pruning", events_and_pruning),
    ("recent_events_are_capped", recent_events_are_capped),
    ("feed_clients", feed_clients),
    ("certificates", certificates),
    ("batches_are_all_or_none", batches_are_all_or_none),
    (
        "a_fatal_change_fails_its_batch",
        a_fatal_change_fails_its_batch,
    ),
    ("schema_and_description", schema_and_description),
    ("export_rebuilds_it", export_rebuilds_it),
];

/// Runs every case (each on a fresh store from `make`), then the differential case with
/// `seeds` seeds.
pub fn run_all(make: &mut MakeStore<'_>, seeds: u64) {
    for (name, case) in CASES {
        let mut store = make();
        let what = store.describe();
        if let Err(e) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(store.as_mut())))
        {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            panic!("store conformance case {name} failed on {what}: {msg}");
        }
    }
    for seed in 0..seeds {
        let mut store = make();
        differential(store.as_mut(), seed);
    }
}

fn agent(id: &str) -> AgentRecord {
    AgentRecord {
        agent_id: id.into(),
        secret_hash: format!("$argon2id$v=19$x${id}"),
        allowed_networks: vec!["10.0.0.0/8".into(), "::1/128".into()],
        last_seen_unix_ms: 0,
    }
}

fn command(id: i64, agent_id: &str) -> CommandRecord {
    CommandRecord {
        command_id: id,
        agent_id: agent_id.into(),
        operation: "echo.Echo".into(),
        data: format!(r#"{{"n":{id}}}"#),
        issued_by: "admin".into(),
        status: CommandStatus::Pending,
        changed: false,
        output: String::new(),
        created_unix_ms: 1_700_000_000_000 + id,
        finished_unix_ms: 0,
    }
}

fn user(uid: u64, name: &str) -> UserRecord {
    UserRecord {
        uid,
        name: name.into(),
        permissions: u64::MAX - uid, // high bits set: stored as a signed 64-bit value
        control_key: format!("key-{uid}"),
        password_hash: format!("$argon2id${name}"),
        totp_secret: "00ff".into(),
        expires_unix_ms: 0,
    }
}

fn event(order: u64) -> EventRecord {
    EventRecord {
        order,
        unix_ms: 1_700_000_000_000 + order as i64,
        kind: "ChannelCreated".into(),
        json: format!(r#"{{"chid":{order}}}"#),
        scope: 1 << 63,
    }
}

fn ok(store: &mut dyn Store, change: Change) {
    if let Err(e) = store.apply(&change) {
        panic!("{change:?} refused: {e}");
    }
}

fn load(store: &mut dyn Store) -> StoredState {
    store.load().unwrap_or_else(|e| panic!("load: {e}"))
}

fn empty(store: &mut dyn Store) {
    let s = load(store);
    assert!(s.agents.is_empty() && s.users.is_empty() && s.channels.is_empty());
    assert!(s.pending_commands.is_empty() && s.recent_events.is_empty());
    assert_eq!(
        (s.max_command_id, s.last_event_order, s.first_event_order),
        (0, 0, 1)
    );
    assert!(store.read_events(0, 10).expect("read").is_empty());
    assert!(store.list_commands(10).expect("list").is_empty());
}

fn agents_and_their_data(store: &mut dyn Store) {
    for id in ["web-2", "web-1", "Zeta", "alpha"] {
        ok(store, Change::AgentRegistered(agent(id)));
    }
    ok(
        store,
        Change::AgentSeen {
            agent_id: "web-1".into(),
            unix_ms: 42,
        },
    );
    for (id, name, v) in [
        ("web-1", "b", "2"),
        ("web-1", "a", "1"),
        ("web-2", "a", "\"x\""),
    ] {
        ok(
            store,
            Change::AgentData {
                agent_id: id.into(),
                name: name.into(),
                value_json: v.into(),
            },
        );
    }
    // An upsert replaces the value.
    ok(
        store,
        Change::AgentData {
            agent_id: "web-1".into(),
            name: "a".into(),
            value_json: "10".into(),
        },
    );
    let s = load(store);
    let ids: Vec<&str> = s.agents.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(
        ids,
        ["Zeta", "alpha", "web-1", "web-2"],
        "agents sorted bytewise"
    );
    assert_eq!(s.agents[2].last_seen_unix_ms, 42);
    assert_eq!(s.agents[2].allowed_networks, agent("x").allowed_networks);
    assert_eq!(
        s.agent_data,
        vec![
            ("web-1".into(), "a".into(), "10".into()),
            ("web-1".into(), "b".into(), "2".into()),
            ("web-2".into(), "a".into(), "\"x\"".into()),
        ]
    );
    // Removing an agent removes its data; removing it again is fine.
    for _ in 0..2 {
        ok(
            store,
            Change::AgentRemoved {
                agent_id: "web-1".into(),
            },
        );
    }
    let s = load(store);
    assert_eq!(s.agents.len(), 3);
    assert_eq!(s.agent_data.len(), 1);
    // Registering again replaces the record (a new secret).
    let mut again = agent("alpha");
    again.secret_hash = "new".into();
    ok(store, Change::AgentRegistered(again));
    let s = load(store);
    assert_eq!(s.agents[1].secret_hash, "new");
}

fn refusals_write_nothing(store: &mut dyn Store) {
    let cases = [
        Change::AgentSeen {
            agent_id: "nobody".into(),
            unix_ms: 1,
        },
        Change::AgentData {
            agent_id: "nobody".into(),
            name: "n".into(),
            value_json: "1".into(),
        },
    ];
    for c in cases {
        match store.apply(&c) {
            Err(StoreError::UnknownAgent(id)) => assert_eq!(id, "nobody"),
            other => panic!("{c:?}: {other:?}"),
        }
    }
    let finished = Change::CommandFinished {
        command_id: 42,
        status: CommandStatus::Success,
        changed: false,
        output: "x".into(),
        finished_unix_ms: 1,
    };
    match store.apply(&finished) {
        Err(StoreError::UnknownCommand(42)) => {}
        other => panic!("{other:?}"),
    }
    // In a batch they are skipped, the rest stored.
    store
        .apply_all(&[
            finished.clone(),
            Change::AgentRegistered(agent("a1")),
            Change::AgentSeen {
                agent_id: "nobody".into(),
                unix_ms: 1,
            },
        ])
        .expect("refusals are skipped");
    let s = load(store);
    assert_eq!(s.agents.len(), 1);
    assert!(s.agent_data.is_empty() && s.pending_commands.is_empty());
}

fn commands(store: &mut dyn Store) {
    ok(store, Change::AgentRegistered(agent("a1")));
    for id in [3, 1, 2] {
        ok(store, Change::CommandCreated(command(id, "a1")));
    }
    ok(
        store,
        Change::CommandFinished {
            command_id: 2,
            status: CommandStatus::Failed,
            changed: true,
            output: "out\nput ünïcode".into(),
            finished_unix_ms: 99,
        },
    );
    let s = load(store);
    assert_eq!(s.max_command_id, 3);
    let pending: Vec<i64> = s.pending_commands.iter().map(|c| c.command_id).collect();
    assert_eq!(pending, [1, 3]);
    assert_eq!(s.pending_commands[0], command(1, "a1"));
    let listed = store.list_commands(2).expect("list");
    let ids: Vec<i64> = listed.iter().map(|c| c.command_id).collect();
    assert_eq!(ids, [3, 2], "newest first, limited");
    assert_eq!(listed[1].status, CommandStatus::Failed);
    assert_eq!(listed[1].output, "out\nput ünïcode");
    assert!(listed[1].changed);
    assert_eq!(listed[1].finished_unix_ms, 99);
    // A reused id is an error, not a refusal.
    let e = store
        .apply(&Change::CommandCreated(command(2, "a1")))
        .expect_err("a reused command id");
    assert!(!e.is_refusal() && !e.is_unavailable(), "{e}");
    // The command log outlives its agent.
    ok(
        store,
        Change::AgentRemoved {
            agent_id: "a1".into(),
        },
    );
    assert_eq!(load(store).pending_commands.len(), 2);
}

fn users_channels_members(store: &mut dyn Store) {
    for (uid, name) in [(7, "carol"), (2, "bob"), (u64::from(u32::MAX) + 5, "dave")] {
        ok(store, Change::UserRegistered(user(uid, name)));
    }
    for (chid, owner, port) in [(11, 2, 50_000), (10, 7, 65_535)] {
        ok(
            store,
            Change::ChannelCreated(ChannelRecord { chid, owner, port }),
        );
    }
    for (chid, uid) in [(11, 7), (10, 2), (11, 2), (11, 2)] {
        ok(store, Change::MemberJoined { chid, uid });
    }
    let s = load(store);
    let uids: Vec<u64> = s.users.iter().map(|u| u.uid).collect();
    assert_eq!(uids, [2, 7, u64::from(u32::MAX) + 5]);
    assert_eq!(s.users[0], user(2, "bob"));
    assert_eq!(
        s.channels[0],
        ChannelRecord {
            chid: 10,
            owner: 7,
            port: 65_535
        }
    );
    assert_eq!(s.members, [(10, 2), (11, 2), (11, 7)]);
    // A name that belongs to another uid is an error; an update of the same uid is not.
    let e = store
        .apply(&Change::UserRegistered(user(3, "bob")))
        .expect_err("a taken name");
    assert!(!e.is_refusal(), "{e}");
    let mut bob = user(2, "bob");
    bob.permissions = 5;
    bob.expires_unix_ms = 123;
    ok(store, Change::UserRegistered(bob.clone()));
    // A membership of a channel or user that does not exist is an error.
    for (chid, uid) in [(99, 2), (10, 99)] {
        let e = store
            .apply(&Change::MemberJoined { chid, uid })
            .expect_err("no such channel or user");
        assert!(!e.is_refusal(), "{e}");
    }
    ok(store, Change::MemberLeft { chid: 11, uid: 7 });
    ok(store, Change::ChannelDeleted { chid: 10 });
    ok(store, Change::UserRemoved { uid: 2 });
    let s = load(store);
    assert_eq!(s.users.len(), 2);
    assert_eq!(s.channels.len(), 1);
    assert!(s.members.is_empty(), "{:?}", s.members);
    // A channel id is never reused.
    let e = store
        .apply(&Change::ChannelCreated(ChannelRecord {
            chid: 11,
            owner: 1,
            port: 1,
        }))
        .expect_err("a reused channel id");
    assert!(!e.is_refusal(), "{e}");
}

fn events_and_pruning(store: &mut dyn Store) {
    let batch: Vec<Change> = (1..=10).map(|o| Change::EventLogged(event(o))).collect();
    store.apply_all(&batch).expect("events");
    ok(store, Change::EventsPruned { before_order: 6 });
    let s = load(store);
    assert_eq!((s.first_event_order, s.last_event_order), (6, 10));
    let orders: Vec<u64> = s.recent_events.iter().map(|e| e.order).collect();
    assert_eq!(orders, [6, 7, 8, 9, 10]);
    assert_eq!(s.recent_events[0], event(6));
    let read = store.read_events(7, 2).expect("read");
    assert_eq!(read, vec![event(8), event(9)]);
    // Pruning everything keeps the last order (the next event follows it).
    ok(store, Change::EventsPruned { before_order: 11 });
    let s = load(store);
    assert_eq!((s.first_event_order, s.last_event_order), (11, 10));
    assert!(s.recent_events.is_empty());
    // A reused order is an error.
    ok(store, Change::EventLogged(event(11)));
    assert!(store.apply(&Change::EventLogged(event(11))).is_err());
}

fn recent_events_are_capped(store: &mut dyn Store) {
    let n = RECENT_EVENTS as u64 + 5;
    let batch: Vec<Change> = (1..=n).map(|o| Change::EventLogged(event(o))).collect();
    store.apply_all(&batch).expect("events");
    let s = load(store);
    assert_eq!(s.recent_events.len(), RECENT_EVENTS);
    assert_eq!(s.recent_events.first().map(|e| e.order), Some(6));
    assert_eq!(s.recent_events.last().map(|e| e.order), Some(n));
    assert_eq!((s.first_event_order, s.last_event_order), (1, n));
}

fn feed_clients(store: &mut dyn Store) {
    let client = |id: &str| FeedClientRecord {
        client_id: id.into(),
        public_key_der: (0..=255u8).collect(),
        user: "admin".into(),
        last_sequence: 0,
    };
    ok(store, Change::FeedClientSaved(client("b")));
    ok(store, Change::FeedClientSaved(client("a")));
    ok(
        store,
        Change::FeedSequence {
            client_id: "b".into(),
            sequence: 77,
        },
    );
    let s = load(store);
    assert_eq!(s.feed_clients.len(), 2);
    assert_eq!(s.feed_clients[0], client("a"));
    assert_eq!(s.feed_clients[1].last_sequence, 77);
    assert_eq!(s.feed_clients[1].public_key_der.len(), 256);
    ok(
        store,
        Change::FeedClientRemoved {
            client_id: "a".into(),
        },
    );
    assert_eq!(load(store).feed_clients.len(), 1);
}

fn certificates(store: &mut dyn Store) {
    let cert = |serial: &str, revoked| CertificateRecord {
        serial: serial.into(),
        name: "agent-1".into(),
        not_after_unix_ms: 1_800_000_000_000,
        revoked_unix_ms: revoked,
    };
    ok(store, Change::Certificate(cert("0b", 0)));
    ok(store, Change::Certificate(cert("0a", 0)));
    ok(store, Change::Certificate(cert("0b", 5)));
    let s = load(store);
    assert_eq!(s.certificates, vec![cert("0a", 0), cert("0b", 5)]);
}

fn batches_are_all_or_none(store: &mut dyn Store) {
    let batch = Change::Batch(vec![
        Change::AgentRegistered(agent("x")),
        Change::AgentSeen {
            agent_id: "nobody".into(),
            unix_ms: 1,
        },
    ]);
    assert!(store.apply(&batch).expect_err("refused").is_refusal());
    assert!(load(store).agents.is_empty(), "half a batch was stored");
    store
        .apply_all(&[batch, Change::AgentRegistered(agent("y"))])
        .expect("the refused batch is skipped");
    let s = load(store);
    let ids: Vec<&str> = s.agents.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(ids, ["y"]);
    ok(
        store,
        Change::Batch(vec![
            Change::AgentRegistered(agent("z")),
            Change::AgentSeen {
                agent_id: "z".into(),
                unix_ms: 9,
            },
        ]),
    );
    assert_eq!(load(store).agents[1].last_seen_unix_ms, 9);
}

fn a_fatal_change_fails_its_batch(store: &mut dyn Store) {
    ok(
        store,
        Change::ChannelCreated(ChannelRecord {
            chid: 1,
            owner: 1,
            port: 1,
        }),
    );
    let e = store
        .apply_all(&[
            Change::UserRegistered(user(1, "u")),
            Change::ChannelCreated(ChannelRecord {
                chid: 1,
                owner: 1,
                port: 2,
            }),
        ])
        .expect_err("a reused channel id fails the batch");
    assert!(!e.is_refusal() && !e.is_unavailable(), "{e}");
    let s = load(store);
    assert!(s.users.is_empty(), "part of a failed batch was stored");
    assert_eq!(s.channels[0].port, 1);
}

fn schema_and_description(store: &mut dyn Store) {
    assert!(store.schema_version().expect("version") >= 1);
    assert!(!store.describe().is_empty());
}

fn export_rebuilds_it(store: &mut dyn Store) {
    users_channels_members(store);
    commands(store);
    feed_clients(store);
    certificates(store);
    events_and_pruning(store);
    ok(store, Change::EventsPruned { before_order: 100 });
    let export = store.export().expect("export");
    let mut copy = SqliteStore::open_in_memory().expect("copy");
    super::import(&mut copy, &export).expect("import");
    let (a, b) = (load(store), Store::load(&mut copy).expect("load the copy"));
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "the copy differs");
    assert_eq!(
        store.list_commands(100).expect("commands"),
        Store::list_commands(&mut copy, 100).expect("commands of the copy")
    );
    assert_eq!(b.last_event_order, 11);
    assert!(
        super::import(&mut copy, &export).is_err(),
        "import into a store that is not empty"
    );
}

/// A random change: mostly valid for what `live` holds, sometimes refused (unknown agent or
/// command), sometimes fatal (a reused id).
fn random_change(rng: &mut ChaCha8Rng, n: &mut u64) -> Change {
    *n += 1;
    let agent_id = format!("a{}", rng.gen_range(0..6));
    match rng.gen_range(0..14) {
        0 => Change::AgentRegistered(agent(&agent_id)),
        1 => Change::AgentRemoved { agent_id },
        2 => Change::AgentSeen {
            agent_id,
            unix_ms: rng.gen_range(0..1000),
        },
        3 => Change::AgentData {
            agent_id,
            name: format!("k{}", rng.gen_range(0..3)),
            value_json: n.to_string(),
        },
        4 => Change::CommandCreated(command(*n as i64, &agent_id)),
        5 => Change::CommandFinished {
            command_id: rng.gen_range(1..=*n as i64),
            status: CommandStatus::Success,
            changed: rng.gen_bool(0.5),
            output: format!("o{n}"),
            finished_unix_ms: *n as i64,
        },
        6 => Change::UserRegistered(user(
            rng.gen_range(1..5),
            &format!("u{}", rng.gen_range(1..6)),
        )),
        7 => Change::UserRemoved {
            uid: rng.gen_range(1..5),
        },
        8 => Change::ChannelCreated(ChannelRecord {
            chid: rng.gen_range(1..40),
            owner: 1,
            port: rng.r#gen(),
        }),
        9 => Change::MemberJoined {
            chid: rng.gen_range(1..40),
            uid: rng.gen_range(1..5),
        },
        10 => Change::MemberLeft {
            chid: rng.gen_range(1..40),
            uid: rng.gen_range(1..5),
        },
        11 => Change::EventLogged(event(*n)),
        12 => Change::EventsPruned {
            before_order: rng.gen_range(0..=*n),
        },
        _ => Change::Batch(vec![
            Change::AgentRegistered(agent(&agent_id)),
            Change::AgentSeen {
                agent_id: format!("a{}", rng.gen_range(0..8)),
                unix_ms: 1,
            },
        ]),
    }
}

fn kind(r: &Result<(), StoreError>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(e) if e.is_refusal() => "refused",
        Err(e) if e.is_unavailable() => "unavailable",
        Err(_) => "failed",
    }
}

/// Random batches into `store` and into an in-memory SQLite store: same outcomes, same state.
fn differential(store: &mut dyn Store, seed: u64) {
    let mut reference = SqliteStore::open_in_memory().expect("reference store");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = 0;
    for step in 0..120 {
        let len = rng.gen_range(1..6);
        let batch: Vec<Change> = (0..len).map(|_| random_change(&mut rng, &mut n)).collect();
        let (want, got) = if rng.gen_bool(0.3) {
            // One at a time, with its error.
            let c = &batch[0];
            (
                kind(&Store::apply(&mut reference, c)),
                kind(&store.apply(c)),
            )
        } else {
            (
                kind(&Store::apply_all(&mut reference, &batch)),
                kind(&store.apply_all(&batch)),
            )
        };
        assert_eq!(
            got,
            want,
            "seed {seed} step {step}: {} answered {got}, SQLite {want}, for {batch:?}",
            store.describe()
        );
    }
    let want = Store::load(&mut reference).expect("reference load");
    let got = store.load().expect("load");
    assert_eq!(
        format!("{got:?}"),
        format!("{want:?}"),
        "seed {seed}: the states differ"
    );
    let want = Store::read_events(&mut reference, 0, 10_000).expect("reference events");
    assert_eq!(store.read_events(0, 10_000).expect("events"), want);
    let want = Store::list_commands(&mut reference, 10_000).expect("reference commands");
    assert_eq!(store.list_commands(10_000).expect("commands"), want);
}
