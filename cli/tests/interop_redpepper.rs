//! Interop with the REAL RedPepper 0.0.17 agent and manager (from PyPI, in a venv that the
//! test installs itself with the shared `peers/redpepper/setup.sh`):
//!
//! 1. `real_agent_to_switchboard_hub`: the real agent connects to `switchboard serve`, stays
//!    connected with its pings answered for 20 s, and runs the commands issued with
//!    `switchboard admin run` (echo.Echo, command.Run ok and failing, data.Show); a stream
//!    opened on it is refused ("does not speak streams") and it goes on working.
//! 2. `switchboard_agent_to_real_manager`: `switchboard agent` connects to the real manager,
//!    stays connected with its pings answered for 30 s, and answers every command the real
//!    manager sends as the real agent would.
//!
//! The peer scripts are found in `<workspace>/../shared/peers/redpepper`, or through
//! `$SWITCHBOARD_SHARED` (the shared/ directory, or the redpepper scripts directory itself).
//! Missing scripts fail the tests; `SWITCHBOARD_SKIP_INTEROP=1` skips them (loudly). The venv
//! lives in `<target>/interop-redpepper` (setup.sh is idempotent: a few seconds once made);
//! the two tests take a file lock on it, so they run one after the other. A failing test
//! prints the tail of every log and keeps its work directory.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{LogsOnFailure, Proc, free_port, run, switchboard, wait_for, workspace};

const SCRIPTS: [&str; 4] = ["setup.sh", "gen-certs.sh", "run-agent.sh", "run-manager.sh"];

/// The shared scripts and the venv, held under an exclusive lock.
struct Peers {
    scripts: PathBuf,
    cache: PathBuf,
    _lock: std::fs::File,
}

impl Peers {
    fn script(&self, name: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(self.scripts.join(name));
        c
    }

    /// `wire-timeline.py LOG SIDE`: one line per frame of a peer's TRACE log.
    fn timeline(&self, log: &Path, side: &str) -> Command {
        let mut c = Command::new(self.cache.join("venv/bin/python"));
        c.arg(self.scripts.join("wire-timeline.py"))
            .arg(log)
            .arg(side);
        c
    }
}

fn scripts_dir() -> PathBuf {
    match std::env::var_os("SWITCHBOARD_SHARED") {
        Some(s) if Path::new(&s).join("setup.sh").exists() => PathBuf::from(s),
        Some(s) => PathBuf::from(s).join("peers/redpepper"),
        None => workspace().join("../shared/peers/redpepper"),
    }
}

/// The target directory of this build (`<target>/debug/switchboard` → `<target>`).
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_switchboard"));
    bin.ancestors()
        .nth(2)
        .map_or_else(|| workspace().join("target"), Path::to_path_buf)
}

/// Locates the scripts, takes the lock and runs setup.sh; None if the tests are skipped.
fn peers(test: &str) -> Option<Peers> {
    if std::env::var("SWITCHBOARD_SKIP_INTEROP").is_ok_and(|v| v == "1") {
        // Straight to stderr, past the test harness's capture, so that it shows in every log.
        let banner = format!(
            "\n{0}\n*** SKIPPED: {test}: SWITCHBOARD_SKIP_INTEROP=1, the interop test with the \
             REAL RedPepper 0.0.17 peers did NOT run ***\n{0}\n",
            "*".repeat(100)
        );
        let _ = std::io::stderr().write_all(banner.as_bytes());
        return None;
    }
    let scripts = scripts_dir();
    let missing: Vec<&str> = SCRIPTS
        .into_iter()
        .filter(|s| !scripts.join(s).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "the RedPepper 0.0.17 peer scripts are missing: {missing:?} not in {} \
         (set SWITCHBOARD_SHARED to the shared/ directory, or SWITCHBOARD_SKIP_INTEROP=1 to skip)",
        scripts.display()
    );
    let cache = target_dir().join("interop-redpepper");
    std::fs::create_dir_all(&cache).expect("venv cache dir");
    let lock = std::fs::File::create(cache.join(".lock")).expect("lock file");
    // A cold setup (pip from PyPI) plus the other test's run fit in well under 20 minutes.
    wait_for(Duration::from_secs(1200), || {
        // SAFETY: flock(2) on a descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        (r == 0).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{test}: timed out waiting for the lock on {}",
            cache.display()
        )
    });

    let t = Instant::now();
    let mut setup = Command::new("bash");
    setup.arg(scripts.join("setup.sh")).arg(&cache);
    let (code, out, err) = run(setup, Duration::from_secs(900));
    assert_eq!(
        code,
        0,
        "setup.sh {} failed (it needs python3 >= 3.11 with venv or pip, and PyPI):\n{out}\n{err}",
        cache.display()
    );
    eprintln!("{test}: setup.sh took {:.1} s", t.elapsed().as_secs_f64());
    Some(Peers {
        scripts,
        cache,
        _lock: lock,
    })
}

/// A temporary work directory with `venv` linked to the shared one (the peer scripts put their
/// working files beside the venv). Kept, and its path printed, if the test fails.
struct Work(Option<tempfile::TempDir>);

impl Work {
    fn new(peers: &Peers) -> Work {
        let dir = tempfile::Builder::new()
            .prefix("interop-redpepper-")
            .tempdir()
            .expect("tmp");
        std::os::unix::fs::symlink(peers.cache.join("venv"), dir.path().join("venv"))
            .expect("venv link");
        Work(Some(dir))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("work dir").path()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(d) = self.0.take()
        {
            eprintln!("work directory kept: {}", d.keep().display());
        }
    }
}

/// Waits up to `d` for `ready`, failing at once if `p` exits first.
fn wait_ready(p: &Proc, d: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    match wait_for(d, || {
        if ready() {
            Some(None)
        } else {
            p.exited().map(Some)
        }
    }) {
        Some(None) => {}
        Some(Some(code)) => panic!("{} exited with code {code} before {what}", p.name),
        None => panic!("{what}: not within {} s", d.as_secs()),
    }
}

#[test]
fn real_agent_to_switchboard_hub() {
    let Some(peers) = peers("real_agent_to_switchboard_hub") else {
        return;
    };
    let t = Instant::now();
    let work = Work::new(&peers);
    let w = work.path();
    let mut logs = LogsOnFailure::default();

    let data = w.join("hub");
    let port = free_port();
    let mut serve = switchboard();
    serve
        .args([
            "serve",
            "--kv-listen",
            "off",
            "--web-listen",
            "off",
            "--relay",
            "off",
        ])
        .args([
            "--ping-interval",
            "2",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--data-dir")
        .arg(&data);
    logs.add("switchboard serve (stdout+stderr)", w.join("serve.log"), 40);
    let hub = Proc::spawn("switchboard serve", serve, w.join("serve.log"));
    wait_ready(&hub, Duration::from_secs(30), "the hub listens", || {
        data.join("hub.addr").exists()
    });

    let admin = |args: &[&str]| {
        let mut c = switchboard();
        c.arg("admin").arg("--data-dir").arg(&data).args(args);
        run(c, Duration::from_secs(60))
    };
    let creds = w.join("agent1");
    let creds_s = creds.to_str().expect("utf-8 path");
    let (code, out, err) = admin(&["enroll-agent", "agent1", "--out", creds_s]);
    assert_eq!(code, 0, "enroll-agent failed:\n{out}\n{err}");
    let (code, out, err) = admin(&[
        "set-data",
        "--agent",
        "agent1",
        "greeting",
        "hello-from-hub",
    ]);
    assert_eq!(code, 0, "set-data failed:\n{out}\n{err}");
    let secret = std::fs::read_to_string(creds.join("secret")).expect("secret");
    // RedPepper refuses a key readable by group or others (run-agent.sh copies it with 600).
    let mode = std::fs::metadata(creds.join("agent.key"))
        .expect("agent.key")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "enroll-agent wrote agent.key with mode {mode:o}"
    );

    let mut a = peers.script("run-agent.sh");
    a.arg(w).args(["127.0.0.1", &port.to_string()]);
    a.arg(creds.join("ca.pem"))
        .arg(creds.join("agent.pem"))
        .arg(creds.join("agent.key"));
    a.args(["agent1", secret.trim(), "20"])
        .env("PING_INTERVAL", "2");
    let agent_log = w.join(format!("agent-agent1-{port}/agent.log"));
    logs.add("real agent's own log (TRACE)", &agent_log, 40);
    logs.add_command(
        "frames seen by the real agent",
        peers.timeline(&agent_log, "agent"),
        40,
    );
    logs.add("run-agent.sh", w.join("run-agent.out"), 25);
    let agent = Proc::spawn("run-agent.sh", a, w.join("run-agent.out"));

    wait_ready(
        &agent,
        Duration::from_secs(15),
        "agent1 shows as connected",
        || {
            let (_, out, _) = admin(&["agents"]);
            out.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.first() == Some(&"agent1") && cols.get(1) == Some(&"connected")
            })
        },
    );

    let cases: [(&str, &str, bool, &str); 5] = [
        (
            "echo.Echo",
            r#"{"[args]": ["hello from switchboard"]}"#,
            true,
            "hello from switchboard",
        ),
        (
            "echo.Echo",
            r#"{"message": "keyword", "reverse": true}"#,
            true,
            "drowyek",
        ),
        (
            "command.Run",
            r#"{"[args]": ["echo ran-on-real-agent"]}"#,
            true,
            "ran-on-real-agent",
        ),
        (
            "command.Run",
            r#"{"[args]": ["exit 3"]}"#,
            false,
            "return code 3",
        ),
        (
            "data.Show",
            r#"{"[args]": ["greeting"]}"#,
            true,
            "hello-from-hub",
        ),
    ];
    for (op, args, ok, want) in cases {
        let (code, out, err) = admin(&["run", "--agent", "agent1", op, args]);
        assert_eq!(
            code == 0,
            ok,
            "admin run {op} {args} on the real agent: exit {code}, expected success={ok}\n\
             stdout:\n{out}\nstderr:\n{err}"
        );
        assert!(
            out.contains(want),
            "admin run {op} {args}: output lacks {want:?}:\n{out}\n{err}"
        );
    }

    // RedPepper 0.0.17 does not speak streams: an open is refused at the hub, clearly, and
    // the agent goes on working.
    let mut open = switchboard();
    open.arg("stream")
        .arg("--data-dir")
        .arg(&data)
        .args(["open", "--agent", "agent1", "metrics"]);
    let (code, out, err) = run(open, Duration::from_secs(60));
    assert_ne!(
        code, 0,
        "a stream on the real agent was not refused:\n{out}\n{err}"
    );
    assert!(
        err.contains("does not speak streams"),
        "the refusal does not say why:\n{out}\n{err}"
    );
    let (code, out, err) = admin(&[
        "run",
        "--agent",
        "agent1",
        "echo.Echo",
        r#"{"[args]": ["still here"]}"#,
    ]);
    assert!(
        code == 0 && out.contains("still here"),
        "the real agent after a refused stream:\n{out}\n{err}"
    );

    let code = agent.wait_for_exit(Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "run-agent.sh: the real agent did not stay connected with its pings answered"
    );
    assert!(
        agent.output().contains("run-agent.sh: OK"),
        "no OK from run-agent.sh"
    );
    assert!(hub.exited().is_none(), "the hub exited");
    eprintln!(
        "real_agent_to_switchboard_hub: ok, {:.1} s after setup",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn switchboard_agent_to_real_manager() {
    let Some(peers) = peers("switchboard_agent_to_real_manager") else {
        return;
    };
    let t = Instant::now();
    let work = Work::new(&peers);
    let w = work.path();
    let mut logs = LogsOnFailure::default();

    let pki = w.join("pki");
    let mut g = peers.script("gen-certs.sh");
    g.arg(&pki).arg("agent1");
    let (code, out, err) = run(g, Duration::from_secs(60));
    assert_eq!(code, 0, "gen-certs.sh failed:\n{out}\n{err}");
    let secret_file = w.join("agent1.secret");
    std::fs::write(&secret_file, "s3cret-agent1\n").expect("secret");
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // "state" is left out: it needs state definitions, which our agent does not run.
    let commands = serde_json::json!([
        {"command": "echo.Echo", "args": ["hello from the real manager"], "kw": {},
         "expect_output": "hello from the real manager"},
        {"command": "echo.Echo", "args": [], "kw": {"message": "keyword", "reverse": true},
         "expect_output": "drowyek"},
        {"command": "command.Run", "args": ["echo ran-on-switchboard; uname -s"], "kw": {},
         "expect_output": "ran-on-switchboard"},
        {"command": "command.Run", "args": ["exit 3"], "kw": {}, "expect_status": 2,
         "expect_output": "return code 3"},
        {"command": "data.Show", "args": ["greeting"], "kw": {},
         "expect_output": "hello-from-manager-data"},
    ]);
    let n_commands = commands.as_array().map_or(0, Vec::len);
    let port = free_port();
    let mut m = peers.script("run-manager.sh");
    m.arg(w).arg(port.to_string());
    m.arg(pki.join("ca-cert.pem"))
        .arg(pki.join("manager-cert.pem"))
        .arg(pki.join("manager-key.pem"));
    m.args(["agent1", "s3cret-agent1", "30"])
        .env("RP_COMMANDS", commands.to_string())
        .env("PING_INTERVAL", "2");
    let manager_log = w.join(format!("manager-{port}/manager.log"));
    logs.add("real manager's own log (TRACE)", &manager_log, 40);
    logs.add_command(
        "frames seen by the real manager",
        peers.timeline(&manager_log, "manager"),
        40,
    );
    logs.add("run-manager.sh", w.join("run-manager.out"), 40);
    logs.add(
        "switchboard agent (stderr)",
        w.join("switchboard-agent.log"),
        40,
    );
    let manager = Proc::spawn("run-manager.sh", m, w.join("run-manager.out"));
    wait_ready(&manager, Duration::from_secs(90), "drive: READY", || {
        manager.output().contains("drive: READY")
    });

    let mut a = switchboard();
    a.args(["agent", "--manager", &format!("127.0.0.1:{port}")])
        .args(["--id", "agent1", "--ping-interval", "2", "--secret-file"])
        .arg(&secret_file)
        .arg("--ca")
        .arg(pki.join("ca-cert.pem"))
        .arg("--cert")
        .arg(pki.join("agent-cert.pem"))
        .arg("--key")
        .arg(pki.join("agent-key.pem"));
    let agent = Proc::spawn("switchboard agent", a, w.join("switchboard-agent.log"));

    // 30 s of run, then the manager's stop and log summary; the driver itself is bounded.
    let code = manager.wait_for_exit(Duration::from_secs(150));
    assert_eq!(
        code,
        Some(0),
        "run-manager.sh: our agent failed the real manager (commands, pings or connection)"
    );
    let out = manager.output();
    let ok = out
        .lines()
        .filter(|l| l.starts_with("drive: RESULT OK"))
        .count();
    assert_eq!(ok, n_commands, "not every command answered as expected");
    assert!(
        out.contains("run-manager.sh: OK"),
        "no OK from run-manager.sh"
    );

    assert!(
        agent.exited().is_none(),
        "our agent exited before it was stopped"
    );
    agent.interrupt();
    let code = agent.wait_for_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "our agent did not stop cleanly on SIGINT");
    eprintln!(
        "switchboard_agent_to_real_manager: ok, {:.1} s after setup",
        t.elapsed().as_secs_f64()
    );
}
