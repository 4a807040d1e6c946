//! Persist batches on the SQLite store and on the PostgreSQL store, in the same run (issue:
//! the store, §5). One control operation's batch is what a command costs the store: its
//! creation and its event. Batches of 1 operation (a quiet hub) and of 32 (the hub's loop
//! batches what waits). SQLite: a file in a temp dir, WAL, `synchronous = NORMAL` (no fsync
//! per commit). PostgreSQL: a throwaway local cluster (`switchboard_tests::pg`) on loopback
//! TCP with `fsync = off`, so neither side pays a disk flush per commit: this compares the
//! stores' own costs (statements, round trips), not disks.
//!
//! Run: `cargo bench -p switchboard-benches --bench store` (needs Debian's postgresql).
#![allow(missing_docs, clippy::disallowed_methods)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard_core::hub::persist::{Change, CommandRecord, CommandStatus, EventRecord};
use switchboard_runtime_smol::store::{PostgresOptions, PostgresStore, SqliteStore, Store};
use switchboard_tests::pg::PgCluster;

fn op(n: i64) -> [Change; 2] {
    [
        Change::CommandCreated(CommandRecord {
            command_id: n,
            agent_id: "a1".into(),
            operation: "echo.Echo".into(),
            data: r#"{"[args]": ["hello"]}"#.into(),
            issued_by: "admin".into(),
            status: CommandStatus::Pending,
            changed: false,
            output: String::new(),
            created_unix_ms: 1_700_000_000_000 + n,
            finished_unix_ms: 0,
        }),
        Change::EventLogged(EventRecord {
            order: n as u64,
            unix_ms: 1_700_000_000_000 + n,
            kind: "CommandIssued".into(),
            json: format!(r#"{{"commandId":{n},"agentId":"a1"}}"#),
            scope: 1,
        }),
    ]
}

fn run(c: &mut Criterion, name: &str, store: &mut dyn Store, next: &mut i64) {
    let mut g = c.benchmark_group(format!("store_persist/{name}"));
    for ops in [1usize, 32] {
        g.throughput(Throughput::Elements(ops as u64));
        g.bench_with_input(BenchmarkId::new("ops_per_batch", ops), &ops, |b, &ops| {
            b.iter(|| {
                let batch: Vec<Change> = (0..ops)
                    .flat_map(|_| {
                        *next += 1;
                        op(*next)
                    })
                    .collect();
                store.apply_all(&batch).expect("persist");
            })
        });
    }
    g.finish();
}

fn stores(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut sqlite = SqliteStore::open(&dir.path().join("bench.sqlite")).expect("sqlite");
    let mut pg = PgCluster::start();
    let url = pg.create_db();
    let mut postgres = PostgresStore::open(&PostgresOptions::new(&url)).expect("postgres");
    let (mut a, mut b) = (0, 0);
    run(c, "sqlite", &mut sqlite, &mut a);
    run(c, "postgres", &mut postgres, &mut b);
}

criterion_group!(benches, stores);
criterion_main!(benches);
