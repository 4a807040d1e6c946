//! The simulated store against the real one: random sequences of hub [`Change`]s applied to
//! both [`MemStore`] and the runtime's `SqliteStore` (in memory) must be accepted, skipped or
//! refused alike, and leave the same [`StoredState`](switchboard_core::hub::StoredState) to
//! load. Seeds as in `sim_link` (`SIM_SEEDS=N`, `SIM_SEED=x`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use switchboard_core::hub::{
    AgentRecord, Change, ChannelRecord, CommandRecord, CommandStatus, UserRecord,
};
use switchboard_runtime_smol::store::{SqliteStore, StoreError};
use switchboard_tests::scenario;
use switchboard_tests::sim::{MemStore, Refusal};

const STATUSES: [CommandStatus; 4] = [
    CommandStatus::Pending,
    CommandStatus::Success,
    CommandStatus::Failed,
    CommandStatus::Cancelled,
];

/// A random change over small sets of ids, so that changes often meet (and collide).
fn random_change(rng: &mut ChaCha8Rng) -> Change {
    let agent = format!("a{}", rng.gen_range(0..4));
    let cmd = rng.gen_range(1..8i64);
    let uid = rng.gen_range(1..5u64);
    let chid = rng.gen_range(1..4u64);
    let ms = rng.gen_range(0..1_000_000i64);
    match rng.gen_range(0..12) {
        0 => Change::AgentRegistered(AgentRecord {
            agent_id: agent,
            secret_hash: format!("$argon2id$h{}", rng.gen_range(0..3)),
            allowed_networks: (0..rng.gen_range(0..3))
                .map(|i| format!("10.{i}.0.0/16"))
                .collect(),
            last_seen_unix_ms: ms,
        }),
        1 => Change::AgentRemoved { agent_id: agent },
        2 => Change::AgentSeen {
            agent_id: agent,
            unix_ms: ms,
        },
        3 => Change::AgentData {
            agent_id: agent,
            name: format!("n{}", rng.gen_range(0..3)),
            value_json: format!("{{\"v\": {ms}}}"),
        },
        4 => Change::CommandCreated(CommandRecord {
            command_id: cmd,
            agent_id: agent,
            operation: "echo.Echo".into(),
            data: "{}".into(),
            issued_by: "admin".into(),
            status: CommandStatus::Pending,
            changed: false,
            output: String::new(),
            created_unix_ms: ms,
            finished_unix_ms: 0,
        }),
        5 => Change::CommandFinished {
            command_id: cmd,
            status: STATUSES[rng.gen_range(0..4)],
            changed: rng.gen_bool(0.5),
            output: format!("out {ms}"),
            finished_unix_ms: ms,
        },
        6 => Change::UserRegistered(UserRecord {
            uid,
            name: format!("u{}", rng.gen_range(0..5)),
            permissions: rng.r#gen(),
            control_key: format!("{:x}", rng.r#gen::<u32>()),
            password_hash: String::new(),
            totp_secret: String::new(),
            expires_unix_ms: ms,
        }),
        7 => Change::UserRemoved { uid },
        8 => Change::ChannelCreated(ChannelRecord {
            chid,
            owner: uid,
            port: rng.gen_range(50_000..50_010),
        }),
        9 => Change::ChannelDeleted { chid },
        10 => Change::MemberJoined { chid, uid },
        _ => Change::MemberLeft { chid, uid },
    }
}

scenario!(the_memory_store_behaves_as_the_sqlite_store, 16, |seed| {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut mem = MemStore::default();
    let mut sql = SqliteStore::open_in_memory().expect("sqlite");
    let (mut skipped, mut fatal) = (0, 0);
    for step in 0..400 {
        let change = random_change(&mut rng);
        let real = sql.apply(&change);
        let sim = mem.try_apply(&change);
        match (&real, &sim) {
            (Ok(()), Ok(())) => {}
            (
                Err(StoreError::UnknownAgent(_) | StoreError::UnknownCommand(_)),
                Err(Refusal::Skipped(_)),
            ) => skipped += 1,
            (Err(StoreError::Sqlite(_)), Err(Refusal::Fatal(_))) => fatal += 1,
            _ => panic!("step {step}: {change:?}: SQLite says {real:?}, the simulation {sim:?}"),
        }
        let loaded = sql.load().expect("load");
        assert_eq!(
            mem.state(),
            loaded,
            "step {step}: after {change:?} the stores differ"
        );
    }
    assert!(skipped > 0 && fatal > 0, "{skipped} skipped, {fatal} fatal");
});
