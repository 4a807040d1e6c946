//! The store conformance suite (`switchboard_runtime_smol::store::conformance`) on the
//! simulator's memory store and on a real PostgreSQL server (a throwaway cluster this test
//! starts and stops). The SQLite store runs it in `runtime-smol`'s unit tests.

use switchboard_runtime_smol::store::{PostgresOptions, PostgresStore, conformance};
use switchboard_tests::pg::PgCluster;
use switchboard_tests::sim::MemStore;

#[test]
fn the_memory_store_conforms() {
    conformance::run_all(&mut || Box::new(MemStore::default()), 16);
}

#[test]
fn the_postgres_store_conforms() {
    let mut pg = PgCluster::start();
    conformance::run_all(
        &mut || {
            let url = pg.create_db();
            Box::new(PostgresStore::open(&PostgresOptions::new(&url)).expect("open the store"))
        },
        8,
    );
}

#[test]
fn a_second_hub_on_one_database_is_refused() {
    let mut pg = PgCluster::start();
    let url = pg.create_db();
    let first = PostgresStore::open(&PostgresOptions::new(&url)).expect("the first hub");
    let second = PostgresStore::open(&PostgresOptions::new(&url)).expect_err("a second hub");
    assert!(second.to_string().contains("another hub"), "{second}");
    drop(first);
    PostgresStore::open(&PostgresOptions::new(&url)).expect("free again once the first is gone");
}
