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

#[test]
fn tls_to_the_server_is_verified_against_its_ca() {
    use switchboard_runtime_smol::pki::Ca;
    let ca = Ca::generate("store test CA").expect("ca");
    let server = ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()], 30)
        .expect("server cert");
    let mut pg = PgCluster::start_tls(&server.cert_pem, &server.key_pem);
    let url = pg.create_db();
    let with_ca = |url: &str, pem: &str| {
        let mut o = PostgresOptions::new(url);
        o.ca_pem = Some(pem.as_bytes().to_vec());
        PostgresStore::open(&o)
    };
    // The cluster takes TLS only: with the CA it works, with and without sslmode=require.
    let mut store = with_ca(&format!("{url}?sslmode=require"), ca.cert_pem()).expect("TLS");
    switchboard_runtime_smol::store::Store::load(&mut store).expect("load over TLS");
    drop(store);
    drop(with_ca(&url, ca.cert_pem()).expect("TLS by preference"));
    // Without the CA the connection is plain, which this server refuses.
    assert!(PostgresStore::open(&PostgresOptions::new(&url)).is_err());
    let e = PostgresStore::open(&PostgresOptions::new(&format!("{url}?sslmode=require")))
        .expect_err("require without a CA");
    assert!(e.to_string().contains("needs the server's CA"), "{e}");
    // Another CA's trust: the server's certificate is refused.
    let other = Ca::generate("another CA").expect("ca");
    assert!(with_ca(&format!("{url}?sslmode=require"), other.cert_pem()).is_err());
}
