//! Interop with the REAL RedPepper 0.0.17 agent and manager (from PyPI, in a venv the test
//! installs itself with `../shared/peers/redpepper/setup.sh`):
//!
//! 1. the real agent connects to `switchboard serve`, stays connected through its pings, and
//!    runs commands issued with `switchboard admin run`;
//! 2. `switchboard agent` connects to the real manager, stays connected through its pings,
//!    and runs the commands the real manager sends.
//!
//! Both run in one test function because they share the venv. `SWITCHBOARD_SHARED` points at
//! another shared/ directory; `SWITCHBOARD_SKIP_INTEROP=1` skips (loudly).
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Proc, free_port, run, switchboard, wait_for, workspace};

fn peers_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("SWITCHBOARD_SHARED") {
        Some(s) => PathBuf::from(s).join("peers/redpepper"),
        None => workspace().join("../shared/peers/redpepper"),
    };
    dir.join("setup.sh").exists().then_some(dir)
}

fn bash(script: &Path) -> Command {
    let mut c = Command::new("bash");
    c.arg(script);
    c
}

#[test]
fn real_redpepper_0_0_17_agent_and_manager() {
    if std::env::var_os("SWITCHBOARD_SKIP_INTEROP").is_some() {
        eprintln!(
            "\n*** SWITCHBOARD_SKIP_INTEROP is set: the RedPepper interop test did NOT run ***\n"
        );
        return;
    }
    let peers = peers_dir().unwrap_or_else(|| {
        panic!(
            "the RedPepper peer scripts are missing (looked in {}/../shared/peers/redpepper and $SWITCHBOARD_SHARED); \
             set SWITCHBOARD_SKIP_INTEROP=1 to skip",
            workspace().display()
        )
    });
    let venv = workspace().join("target/interop-redpepper");
    std::fs::create_dir_all(&venv).expect("venv dir");
    let (code, out, err) = run(
        {
            let mut c = bash(&peers.join("setup.sh"));
            c.arg(&venv);
            c
        },
        Duration::from_secs(600),
    );
    assert_eq!(code, 0, "setup.sh failed:\n{out}\n{err}");

    let tmp = tempfile::tempdir().expect("tmp");
    real_agent_to_switchboard_hub(&peers, &venv, tmp.path());
    switchboard_agent_to_real_manager(&peers, &venv, tmp.path());
}

fn real_agent_to_switchboard_hub(peers: &Path, venv: &Path, tmp: &Path) {
    let data = tmp.join("hub");
    let port = free_port();
    let mut serve = switchboard();
    serve.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--kv-listen",
        "off",
        "--ping-interval",
        "2",
        "--data-dir",
    ]);
    serve.arg(&data);
    let hub = Proc::spawn("switchboard serve", serve, tmp.join("serve.log"));
    wait_for(Duration::from_secs(30), || {
        data.join("hub.addr").exists().then_some(())
    })
    .unwrap_or_else(|| panic!("hub did not start\n{}", hub.tail(30)));

    let admin = |args: &[&str]| {
        let mut c = switchboard();
        c.arg("admin").arg("--data-dir").arg(&data).args(args);
        run(c, Duration::from_secs(60))
    };
    let creds = tmp.join("agent1");
    let (code, out, err) = admin(&[
        "enroll-agent",
        "agent1",
        "--out",
        creds.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, 0, "enroll-agent failed:\n{out}\n{err}");
    let secret = std::fs::read_to_string(creds.join("secret")).expect("secret");

    let mut agent_cmd = bash(&peers.join("run-agent.sh"));
    agent_cmd.arg(venv).args(["127.0.0.1", &port.to_string()]);
    agent_cmd
        .arg(creds.join("ca.pem"))
        .arg(creds.join("agent.pem"))
        .arg(creds.join("agent.key"));
    agent_cmd
        .args(["agent1", secret.trim(), "20"])
        .env("PING_INTERVAL", "2");
    let mut agent = Proc::spawn(
        "real RedPepper 0.0.17 agent (run-agent.sh)",
        agent_cmd,
        tmp.join("run-agent.log"),
    );

    let logs = |agent: &Proc| format!("{}{}", agent.tail(60), hub.tail(40));
    wait_for(Duration::from_secs(15), || {
        let (_, out, _) = admin(&["agents"]);
        out.lines()
            .any(|l| l.starts_with("agent1") && l.contains("connected"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the real agent never showed as connected\n{}", logs(&agent)));

    let (code, out, err) = admin(&[
        "run",
        "--agent",
        "agent1",
        "echo.Echo",
        r#"{"[args]": ["hello from switchboard"]}"#,
    ]);
    assert_eq!(
        code,
        0,
        "echo.Echo on the real agent failed:\n{out}\n{err}\n{}",
        logs(&agent)
    );
    assert!(out.contains("hello from switchboard"), "output: {out}");
    let (code, out, err) = admin(&[
        "run",
        "--agent",
        "agent1",
        "command.Run",
        r#"{"[args]": ["echo ran-on-real-agent"]}"#,
    ]);
    assert_eq!(
        code,
        0,
        "command.Run on the real agent failed:\n{out}\n{err}\n{}",
        logs(&agent)
    );
    assert!(out.contains("ran-on-real-agent"), "output: {out}");
    let (code, out, _) = admin(&[
        "run",
        "--agent",
        "agent1",
        "command.Run",
        r#"{"[args]": ["exit 3"]}"#,
    ]);
    assert_ne!(code, 0, "a failing command must exit non-zero: {out}");

    let code = agent.wait_for_exit(Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "run-agent.sh says the real agent did not stay connected with its pings answered\n{}",
        logs(&agent)
    );
}

fn switchboard_agent_to_real_manager(peers: &Path, venv: &Path, tmp: &Path) {
    let pki = tmp.join("pki");
    let (code, out, err) = run(
        {
            let mut c = bash(&peers.join("gen-certs.sh"));
            c.arg(&pki).arg("agent1");
            c
        },
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "gen-certs.sh failed:\n{out}\n{err}");
    let secret_file = tmp.join("manager-secret");
    std::fs::write(&secret_file, "s3cret-agent1\n").expect("secret");
    let port = free_port();
    let commands = r#"[
        {"command": "echo.Echo", "args": ["hello from the real manager"], "kw": {}, "expect_output": "hello from the real manager"},
        {"command": "echo.Echo", "args": [], "kw": {"message": "keyword", "reverse": true}, "expect_output": "drowyek"},
        {"command": "command.Run", "args": ["echo ran-on-switchboard; uname -s"], "kw": {}, "expect_output": "ran-on-switchboard"},
        {"command": "command.Run", "args": ["exit 3"], "kw": {}, "expect_status": 2},
        {"command": "data.Show", "args": ["greeting"], "kw": {}, "expect_output": "hello-from-manager-data"}
    ]"#;
    let mut m = bash(&peers.join("run-manager.sh"));
    m.arg(venv).arg(port.to_string());
    m.arg(pki.join("ca-cert.pem"))
        .arg(pki.join("manager-cert.pem"))
        .arg(pki.join("manager-key.pem"));
    m.args(["agent1", "s3cret-agent1", "25"])
        .env("RP_COMMANDS", commands)
        .env("PING_INTERVAL", "2");
    let mut manager = Proc::spawn(
        "real RedPepper 0.0.17 manager (run-manager.sh)",
        m,
        tmp.join("run-manager.log"),
    );
    wait_for(Duration::from_secs(60), || {
        manager.output().contains("drive: READY").then_some(())
    })
    .unwrap_or_else(|| panic!("the real manager did not get ready\n{}", manager.tail(60)));

    let mut a = switchboard();
    a.args([
        "agent",
        "--manager",
        &format!("127.0.0.1:{port}"),
        "--id",
        "agent1",
        "--ping-interval",
        "2",
        "--secret-file",
    ]);
    a.arg(&secret_file).arg("--ca").arg(pki.join("ca-cert.pem"));
    a.arg("--cert")
        .arg(pki.join("agent-cert.pem"))
        .arg("--key")
        .arg(pki.join("agent-key.pem"));
    let agent = Proc::spawn("switchboard agent", a, tmp.join("switchboard-agent.log"));

    let code = manager.wait_for_exit(Duration::from_secs(90));
    assert_eq!(
        code,
        Some(0),
        "run-manager.sh says our agent failed the real manager\n{}{}",
        manager.tail(80),
        agent.tail(40)
    );
    let out = manager.output();
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("drive: RESULT OK"))
            .count(),
        5,
        "every command answered as expected\n{}",
        manager.tail(40)
    );
}
