//! `switchboard serve --store postgres://...` for real: a throwaway PostgreSQL cluster
//! (`switchboard_tests::pg`), the hub as a process, admin commands through it. What is
//! acknowledged survives kill -9 of the hub; while PostgreSQL is down the hub acknowledges
//! nothing and resumes when it is back; an unreachable store at start is a clear error.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Proc, free_port, run, serve_first_run, switchboard};
use switchboard_tests::pg::PgCluster;

fn admin(data: &Path, args: &[&str]) -> (i32, String, String) {
    let mut c = switchboard();
    c.arg("admin").arg("--data-dir").arg(data).args(args);
    run(c, Duration::from_secs(120))
}

fn users(data: &Path) -> Vec<String> {
    let (rc, out, err) = admin(data, &["users"]);
    assert_eq!(rc, 0, "admin users:\n{out}\n{err}");
    out.lines()
        .skip(1) // the header
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

fn kill9(p: &Proc) {
    if let Ok(pid) = libc::pid_t::try_from(p.child.id()) {
        // SAFETY: kill(2) on our own child; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    assert!(
        p.wait_for_exit(Duration::from_secs(10)).is_some(),
        "the hub did not die"
    );
}

/// `serve` again on `data` and `store` (the KV front on `kv`, or "off"); waits for it to listen.
fn serve_again(data: &Path, store: &str, kv: &str, log: &Path) -> Proc {
    let _ = std::fs::remove_file(data.join("hub.addr"));
    let mut c = switchboard();
    c.args([
        "serve",
        "--relay",
        "off",
        "--kv-listen",
        kv,
        "--web-listen",
        "off",
    ])
    .args(["--listen", &format!("127.0.0.1:{}", free_port())])
    .args(["--store", store])
    .arg("--data-dir")
    .arg(data);
    let p = Proc::spawn("switchboard serve (again)", c, log.to_path_buf());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.join("hub.addr").exists() {
        assert!(
            Instant::now() < deadline,
            "the hub did not start again:\n{}",
            p.tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

#[test]
fn an_unreachable_store_at_start_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let url = format!("postgres://postgres@127.0.0.1:{}/nothing", free_port());
    let mut c = switchboard();
    c.args([
        "serve",
        "--relay",
        "off",
        "--kv-listen",
        "off",
        "--web-listen",
        "off",
    ])
    .args([
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--store",
        &url,
    ])
    .arg("--data-dir")
    .arg(tmp.path().join("hub"));
    let (rc, out, err) = run(c, Duration::from_secs(60));
    assert_ne!(rc, 0, "serve started without its store:\n{out}\n{err}");
    assert!(
        err.contains("cannot open the PostgreSQL store"),
        "the error does not say what failed:\n{out}\n{err}"
    );
}

#[test]
fn serve_on_postgres_survives_kill_9_and_a_database_restart() {
    let mut pg = PgCluster::start();
    let url = pg.create_db();
    let tmp = tempfile::tempdir().expect("tmp");
    let first = serve_first_run(
        tmp.path(),
        &["--store", &url, "--kv-listen", "off", "--web-listen", "off"],
        "hub listening",
    );
    let data = first.data.clone();
    let (rc, out, err) = admin(&data, &["users", "add", "alice", "--perms", "add_channel"]);
    assert_eq!(rc, 0, "users add:\n{out}\n{err}");
    let creds = tmp.path().join("a1");
    let (rc, out, err) = admin(
        &data,
        &[
            "enroll-agent",
            "a1",
            "--out",
            creds.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(rc, 0, "enroll-agent:\n{out}\n{err}");
    assert_eq!(users(&data), ["admin", "alice"]);

    // kill -9: what was acknowledged is in PostgreSQL.
    kill9(&first.hub);
    let hub = serve_again(&data, &url, "off", &tmp.path().join("serve2.log"));
    assert_eq!(users(&data), ["admin", "alice"]);
    let (_, out, _) = admin(&data, &["agents"]);
    assert!(out.contains("a1"), "the agent registration is gone:\n{out}");

    // PostgreSQL goes away: a change waits (not acknowledged, not lost), then completes
    // when the server is back.
    pg.stop();
    let started = Instant::now();
    let waiter = std::thread::spawn({
        let data = data.clone();
        move || admin(&data, &["users", "add", "bob"])
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !waiter.is_finished(),
        "a change was acknowledged with the store down"
    );
    pg.restart();
    let (rc, out, err) = waiter.join().expect("the admin thread");
    assert_eq!(
        rc,
        0,
        "users add bob after the restart:\n{out}\n{err}\n{}",
        hub.tail(20)
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(
        hub.output().contains("the store is unreachable"),
        "the hub did not say it waited:\n{}",
        hub.tail(20)
    );
    // Once, after another kill -9.
    kill9(&hub);
    let hub = serve_again(&data, &url, "off", &tmp.path().join("serve3.log"));
    assert_eq!(users(&data), ["admin", "alice", "bob"]);
    drop(hub);
}

#[test]
fn store_migrate_copies_a_sqlite_hub_into_postgres() {
    let mut pg = PgCluster::start();
    let url = pg.create_db();
    let tmp = tempfile::tempdir().expect("tmp");
    let first = serve_first_run(
        tmp.path(),
        &["--kv-listen", "off", "--web-listen", "off"],
        "hub listening",
    );
    let data = first.data.clone();
    for name in ["alice", "bob"] {
        let (rc, out, err) = admin(&data, &["users", "add", name]);
        assert_eq!(rc, 0, "users add:\n{out}\n{err}");
    }
    let creds = tmp.path().join("a1");
    let (rc, out, err) = admin(
        &data,
        &[
            "enroll-agent",
            "a1",
            "--out",
            creds.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(rc, 0, "enroll-agent:\n{out}\n{err}");
    first.hub.interrupt();
    assert!(first.hub.wait_for_exit(Duration::from_secs(20)).is_some());

    let mut m = switchboard();
    m.args(["store", "migrate", "--from"])
        .arg(&data)
        .args(["--to", &url]);
    let (rc, out, err) = run(m, Duration::from_secs(120));
    assert_eq!(rc, 0, "store migrate:\n{out}\n{err}");
    assert!(
        out.contains("3 users") && out.contains("both load the same"),
        "{out}"
    );
    // A second migration into the same database is refused.
    let mut again = switchboard();
    again
        .args(["store", "migrate", "--from"])
        .arg(&data)
        .args(["--to", &url]);
    let (rc, out, err) = run(again, Duration::from_secs(120));
    assert_ne!(rc, 0, "migrated twice:\n{out}");
    assert!(err.contains("not empty"), "{err}");

    let hub = serve_again(&data, &url, "off", &tmp.path().join("serve-pg.log"));
    assert_eq!(users(&data), ["admin", "alice", "bob"]);
    let (_, out, _) = admin(&data, &["agents"]);
    assert!(out.contains("a1"), "{out}");
    drop(hub);
}

/// Registers users through the KV front until `stop`, recording each acknowledged uid;
/// reconnects after errors (the hub is killed and restarted under it).
fn kv_writer(
    addr: std::sync::Arc<std::sync::Mutex<String>>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::{Read, Write};
    use switchboard_core::kv::codec::KvRequest;
    let mut req = bytes::BytesMut::new();
    KvRequest::Register { auid: 1, perm: 0 }.encode(false, &mut req);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let a = addr.lock().map(|a| a.clone()).unwrap_or_default();
        let Ok(mut tcp) = std::net::TcpStream::connect(&a) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(20)));
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) || tcp.write_all(&req).is_err() {
                break;
            }
            let mut status = [0u8; 8];
            if tcp.read_exact(&mut status).is_err() {
                break; // not acknowledged: it may or may not be stored
            }
            let uid = u64::from_be_bytes(status);
            if uid == 0 {
                let mut code = [0u8; 4];
                let _ = tcp.read_exact(&mut code);
                break;
            }
            if let Ok(mut v) = acked.lock() {
                v.push(uid);
            }
        }
    }
}

#[test]
fn concurrent_writes_survive_kill_9_and_a_database_restart() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let mut pg = PgCluster::start();
    let url = pg.create_db();
    let tmp = tempfile::tempdir().expect("tmp");
    let kv = format!("127.0.0.1:{}", free_port());
    let first = serve_first_run(
        tmp.path(),
        &["--store", &url, "--kv-listen", &kv, "--web-listen", "off"],
        "hub listening",
    );
    let data = first.data.clone();
    let addr = Arc::new(Mutex::new(kv.clone()));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let (a, k, s) = (addr.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || kv_writer(a, k, s))
        })
        .collect();
    let count = || acked.lock().map(|v| v.len()).unwrap_or(0);
    let wait_for_count = |n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while count() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: only {} acknowledged",
                count()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for_count(300, "before the kill");
    kill9(&first.hub);
    let before_restart = count();
    let hub = serve_again(&data, &url, &kv, &tmp.path().join("serve2.log"));
    wait_for_count(before_restart + 300, "after the first restart");
    pg.stop();
    std::thread::sleep(Duration::from_secs(2));
    let during = count();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        count() <= during + 16,
        "writes were acknowledged with PostgreSQL down"
    );
    pg.restart();
    wait_for_count(during + 300, "after PostgreSQL came back");
    kill9(&hub);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    let acked = acked.lock().map(|v| v.clone()).unwrap_or_default();
    let hub = serve_again(&data, &url, &kv, &tmp.path().join("serve3.log"));
    let (rc, out, err) = admin(&data, &["users"]);
    assert_eq!(rc, 0, "{out}\n{err}");
    let stored: Vec<u64> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let unique: std::collections::BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(unique.len(), acked.len(), "a uid was acknowledged twice");
    let stored_set: std::collections::BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(stored_set.len(), stored.len(), "a uid is stored twice");
    let lost: Vec<&u64> = unique.difference(&stored_set).collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    eprintln!(
        "{} registrations acknowledged through two kill -9 and a PostgreSQL restart, all {} present ({} users stored)",
        acked.len(),
        unique.len(),
        stored.len()
    );
    drop(hub);
}
