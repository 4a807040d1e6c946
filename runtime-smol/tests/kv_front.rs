//! The KV control front over real TCP on loopback, as a KV-style client speaks it, and the
//! state surviving a hub restart.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use switchboard_core::kv::KvConfig;
use switchboard_runtime_smol::pki::Ca;
use switchboard_runtime_smol::server::{HubServer, Listeners, ServerOptions};
use switchboard_runtime_smol::store::SqliteStore;
use switchboard_runtime_smol::tls;

fn start(db: &std::path::Path) -> HubServer {
    let ca = Ca::generate("kv test CA").expect("ca");
    let hub = ca
        .issue_server(&["localhost".into()], 30)
        .expect("hub cert");
    let tls = tls::server_config(
        ca.cert_pem().as_bytes(),
        hub.cert_pem.as_bytes(),
        hub.key_pem.as_bytes(),
    )
    .expect("tls");
    let opts = ServerOptions::new(tls, 7);
    smol::block_on(async {
        let native = async_net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let kv = async_net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let store = SqliteStore::open(db).expect("store");
        HubServer::start_with(
            opts,
            store,
            Listeners {
                native,
                kv: Some((kv, KvConfig::default())),
                web: None,
            },
            None,
            None,
        )
        .expect("start")
    })
}

/// Runs the hub's executor in the background while the test speaks blocking TCP.
fn with_hub<T>(db: &std::path::Path, f: impl FnOnce(SocketAddr) -> T) -> T {
    let server = start(db);
    let addr = server.kv_addr.expect("kv front");
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let runner = std::thread::spawn(move || {
        smol::block_on(server.run_until(async move {
            let _ = stop_rx.recv().await;
        }))
    });
    let out = f(addr);
    drop(stop_tx);
    runner
        .join()
        .expect("hub thread")
        .expect("hub ended cleanly");
    out
}

fn request(stream: &mut TcpStream, ty: i32, fields: &[u64], padded: bool) -> Vec<u8> {
    let mut b = ty.to_be_bytes().to_vec();
    for f in fields {
        b.extend_from_slice(&f.to_be_bytes());
    }
    if padded {
        b.resize(4 + 32, 0);
    }
    stream.write_all(&b).expect("write");
    let mut status = [0u8; 8];
    stream.read_exact(&mut status).expect("status");
    let mut reply = status.to_vec();
    if ty == 7 {
        // GET_CHANNELS: count, ids, then a terminating zero.
        let count = u64::from_be_bytes(status);
        let mut rest = vec![0u8; 8 * (count as usize + 1)];
        stream.read_exact(&mut rest).expect("ids");
        reply.extend(rest);
    } else if status == [0; 8] {
        let mut code = [0u8; 4];
        stream.read_exact(&mut code).expect("code");
        reply.extend(code);
    }
    reply
}

/// The reference client: one request per connection, body padded to 32 bytes.
fn one(addr: SocketAddr, ty: i32, fields: &[u64]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    request(&mut s, ty, fields, true)
}

fn value(reply: &[u8]) -> u64 {
    u64::from_be_bytes(reply[..8].try_into().expect("8 bytes"))
}

#[test]
fn kv_client_over_tcp_and_state_survives_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("hub.sqlite");
    let (alice, chid) = with_hub(&db, |addr| {
        // uid 1 is the admin the hub creates on first start.
        let alice = value(&one(addr, 4, &[1, 1 | 4]));
        assert_ne!(alice, 0);
        let bob = value(&one(addr, 4, &[0, u64::MAX])); // open registration ignores perm
        let chid = value(&one(addr, 0, &[alice]));
        assert_ne!(chid, 0, "alice has add_channel");
        assert_eq!(
            one(addr, 0, &[bob]),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4],
            "bob has no permission"
        );
        // Several exact-size requests on one connection.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let port = value(&request(&mut s, 2, &[alice, alice, chid], false));
        assert!(port >= 50_000);
        assert_eq!(value(&request(&mut s, 6, &[chid], false)), port);
        assert_eq!(
            value(&request(&mut s, 2, &[alice, bob, chid], false)),
            port,
            "alice has add_user"
        );
        assert_eq!(value(&request(&mut s, 3, &[bob, bob, chid], false)), 1);
        let chans = request(&mut s, 7, &[], false);
        assert_eq!(
            chans,
            [1u64, chid, 0]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect::<Vec<_>>()
        );
        // A request cut mid-way on another connection does not disturb this one.
        let mut cut = TcpStream::connect(addr).expect("connect");
        cut.write_all(&[0, 0, 0, 2, 0, 0]).expect("write");
        assert_eq!(value(&request(&mut s, 6, &[chid], false)), port);
        // An unknown command is answered NOT_IMPLEMENTED.
        assert_eq!(one(addr, 99, &[]), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        (alice, chid)
    });
    // After a restart: users, channels and memberships are back.
    with_hub(&db, |addr| {
        let chans = one(addr, 7, &[]);
        assert_eq!(
            chans,
            [1u64, chid, 0]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect::<Vec<_>>()
        );
        assert_ne!(value(&one(addr, 6, &[chid])), 0);
        // alice is still a member (joining again is INVALID) and still has her permissions.
        assert_eq!(
            one(addr, 2, &[alice, alice, chid]),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]
        );
        assert_ne!(value(&one(addr, 0, &[alice])), 0);
    });
    let state = SqliteStore::open(&db).expect("store").load().expect("load");
    assert!(state.members.contains(&(chid, alice)));
}
