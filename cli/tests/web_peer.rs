//! The web face with an outside client: Python's `websockets` library (installed by the test
//! into a venv under target/ with `tests/peers/setup-web-peer.sh`) logs in over wss, runs
//! calls and a batch, follows and resumes the event feed, and uses POST /rpc, against a real
//! `switchboard serve`.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{free_port, run, serve_first_run, workspace};

fn venv() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let dir = target.join("web-peer");
    let mut c = Command::new("bash");
    c.arg(workspace().join("cli/tests/peers/setup-web-peer.sh"))
        .arg(&dir);
    let (rc, out, err) = run(c, Duration::from_secs(600));
    assert_eq!(rc, 0, "setup-web-peer.sh failed:\n{out}\n{err}");
    dir.join("venv/bin/python")
}

#[test]
fn python_websockets_client_against_serve() {
    let python = venv();
    let tmp = tempfile::tempdir().expect("tmp");
    let web = format!("127.0.0.1:{}", free_port());
    let first = serve_first_run(
        tmp.path(),
        &["--kv-listen", "off", "--web-listen", &web],
        "web face on",
    );
    let (hub, data, password, b32) = (first.hub, first.data, first.password, first.totp_base32);
    let mut c = Command::new(python);
    c.arg(workspace().join("cli/tests/peers/ws_peer.py"))
        .arg(&web)
        .arg(data.join("ca.pem"))
        .args(["admin", &password, &b32]);
    let (rc, out, err) = run(c, Duration::from_secs(120));
    assert_eq!(rc, 0, "ws_peer.py:\n{out}\n{err}\nhub:\n{}", hub.tail(40));
    assert!(out.contains("all checks passed"), "{out}");
}
