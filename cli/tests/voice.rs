//! Voice channels end to end, as a KV-style client uses them: register over the KV control
//! front, create a channel, join, ask for its port, and exchange 512-byte UDP packets through
//! the relay — in the hub's process and as a separate `switchboard relay` process.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::{Proc, free_port, switchboard, wait_for};

fn kv(addr: &str, ty: i32, fields: &[u64]) -> u64 {
    let mut s = TcpStream::connect(addr).expect("kv connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut b = ty.to_be_bytes().to_vec();
    for f in fields {
        b.extend_from_slice(&f.to_be_bytes());
    }
    b.resize(4 + 32, 0); // the reference client pads the body to 32 bytes
    s.write_all(&b).expect("write");
    let mut status = [0u8; 8];
    s.read_exact(&mut status).expect("reply");
    u64::from_be_bytes(status)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn user_packet(uid: u64, text: &str) -> Vec<u8> {
    let mut p = uid.to_be_bytes().to_vec();
    p.extend_from_slice(text.as_bytes());
    p.resize(512, 0);
    p
}

/// Registers two users, makes a channel, joins both, and checks they hear each other. Returns
/// (channel, alice, bob, alice's socket, relay address).
fn exchange(kv_addr: &str) -> (u64, u64, u64, UdpSocket, String) {
    let alice = kv(kv_addr, 4, &[1, 1 | 4]); // by the admin (uid 1): add_channel + add_user
    let bob = kv(kv_addr, 4, &[0, 0]); // open registration
    assert!(alice != 0 && bob != 0);
    let chid = kv(kv_addr, 0, &[alice]);
    assert_ne!(chid, 0);
    let port = kv(kv_addr, 2, &[alice, alice, chid]) as u16;
    assert_eq!(kv(kv_addr, 2, &[alice, bob, chid]) as u16, port);
    assert_eq!(kv(kv_addr, 6, &[chid]) as u16, port);
    let relay = format!("127.0.0.1:{port}");
    let a = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let b = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("udp");
    for s in [&a, &b, &stranger] {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
    }
    // Each member's first packet binds its address; repeat a few times (UDP, and the relay
    // learns of the joins asynchronously).
    let got = wait_for(Duration::from_secs(10), || {
        b.send_to(&user_packet(bob, "bob here"), &relay).ok()?;
        a.send_to(&user_packet(alice, "alice here"), &relay).ok()?;
        let mut buf = [0u8; 1024];
        let (n, _) = b.recv_from(&mut buf).ok()?;
        (n == 512 && buf[8..18] == *b"alice here").then_some(())
    });
    assert!(got.is_some(), "bob never heard alice");
    let mut buf = [0u8; 1024];
    let mut heard_bob = false;
    for _ in 0..20 {
        b.send_to(&user_packet(bob, "bob here"), &relay)
            .expect("send");
        if let Ok((n, _)) = a.recv_from(&mut buf) {
            heard_bob |= n == 512 && buf[8..16] == *b"bob here";
        }
        if heard_bob {
            break;
        }
    }
    assert!(heard_bob, "alice never heard bob");
    // A stranger spoofing alice's uid from another address is not forwarded.
    stranger
        .send_to(&user_packet(alice, "spoofed!!!"), &relay)
        .expect("send");
    let mut spoofed = false;
    while let Ok((_, _)) = b.recv_from(&mut buf) {
        spoofed |= buf[8..18] == *b"spoofed!!!";
    }
    assert!(!spoofed, "a spoofed uid got through");
    (chid, alice, bob, a, relay)
}

/// bob goes silent; alice keeps alive. The relay expires bob (2 s in these tests) and the hub
/// hears of it: `admin channels` lists only alice.
fn bob_expires(
    hub: &Proc,
    data: &Path,
    chid: u64,
    alice: u64,
    bob: u64,
    a: &UdpSocket,
    relay: &str,
) {
    let members = || {
        let mut c = switchboard();
        c.arg("admin").arg("--data-dir").arg(data).arg("channels");
        let (_, out, _) = common::run(c, Duration::from_secs(30));
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.first() == Some(&chid.to_string().as_str()))
            .and_then(|w| w.get(3).map(|m| m.to_string()))
            .unwrap_or_default()
    };
    assert_eq!(members(), format!("{alice},{bob}"));
    let gone = wait_for(Duration::from_secs(15), || {
        let mut k = [0u8; 512];
        switchboard_core::relay::packet::write_system(
            &mut k,
            switchboard_core::relay::Operation::Keepalive,
            alice,
            0,
        )
        .ok()?;
        a.send_to(&k, relay).ok()?;
        (members() == alice.to_string()).then_some(())
    });
    assert!(
        gone.is_some(),
        "bob was not expired (members: {})\n{}",
        members(),
        hub.tail(30)
    );
}

fn serve(tmp: &Path, relay: &str) -> (Proc, String) {
    let data = tmp.join("hub");
    let first = free_udp_port();
    let mut c = switchboard();
    c.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--kv-listen",
        "127.0.0.1:0",
        "--web-listen",
        "off",
    ]);
    c.args([
        "--relay",
        relay,
        "--relay-bind",
        "127.0.0.1",
        "--member-expiry",
        "2",
        "--relay-ports",
        &format!("{first}-{first}"),
        "--data-dir",
    ]);
    c.arg(&data);
    let p = Proc::spawn("switchboard serve", c, tmp.join("serve.log"));
    let kv = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(data.join("kv.addr")).ok()
    })
    .unwrap_or_else(|| panic!("hub did not start\n{}", p.tail(30)));
    (p, kv.trim().to_string())
}

#[test]
fn voice_through_the_relay_in_the_hub_process() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (hub, kv_addr) = serve(tmp.path(), "local");
    let (chid, alice, bob, a, relay) = exchange(&kv_addr);
    bob_expires(&hub, &tmp.path().join("hub"), chid, alice, bob, &a, &relay);
    drop(hub);
}

#[test]
fn voice_through_a_separate_relay_process_fed_signed_commands() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("hub")).expect("dir");
    let control = free_udp_port();
    let mut r = switchboard();
    r.args([
        "relay",
        "--control",
        &format!("127.0.0.1:{control}"),
        "--bind",
        "127.0.0.1",
        "--member-expiry",
        "2",
        "--key-file",
    ]);
    r.arg(tmp.path().join("hub/relay.key"));
    let relay = Proc::spawn("switchboard relay", r, tmp.path().join("relay.log"));
    wait_for(Duration::from_secs(20), || {
        relay
            .output()
            .contains("taking signed commands")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("relay did not start\n{}", relay.tail(20)));
    let (hub, kv_addr) = serve(tmp.path(), &format!("127.0.0.1:{control}"));
    let (chid, alice, bob, a, relay_addr) = exchange(&kv_addr);
    // The relay's expiry reaches the hub as a signed report.
    bob_expires(
        &hub,
        &tmp.path().join("hub"),
        chid,
        alice,
        bob,
        &a,
        &relay_addr,
    );
    drop(hub);
    drop(relay);
}
