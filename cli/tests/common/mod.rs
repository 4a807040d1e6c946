//! Helpers of the CLI's integration tests: child processes that die with the test (with every
//! process they started), free ports, bounded waits, logs printed when a test fails.
#![allow(dead_code, clippy::disallowed_methods)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `switchboard` binary under test (plain logs: no colour codes in the log files).
pub fn switchboard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    c.env("NO_COLOR", "1");
    c
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Sends `sig` to the process group `pgid` (ignoring a group that is already gone). Only
/// called while the group leader is not yet reaped, so the id cannot belong to anyone else.
fn signal_group(pgid: u32, sig: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// The exit code (-1 for a signal) of our child `pid` if it has exited, WITHOUT reaping it
/// (waitid with WNOWAIT): until it is reaped its pid, and so its process group id, stays ours.
fn exit_code_nowait(pid: u32) -> Option<i32> {
    // SAFETY: a zeroed siginfo_t is a valid value; waitid(2) writes into it and nothing else.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
        );
        if r != 0 || info.si_pid() == 0 {
            return None;
        }
        Some(if info.si_code == libc::CLD_EXITED {
            info.si_status()
        } else {
            -1
        })
    }
}

/// A child process in its own process group, killed (the whole group, so a script's own
/// children die too) and reaped when dropped, with its output in a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    /// Spawns `cmd` in a new process group with stdout and stderr into `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).expect("log file");
        let f2 = f.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(f2))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            child,
            log,
            name: name.into(),
        }
    }

    /// Its exit code if it has exited (-1 for a signal); it stays unreaped until dropped.
    pub fn exited(&self) -> Option<i32> {
        exit_code_nowait(self.child.id())
    }

    /// Waits up to `d` for the process to exit; its exit code, or None if still running.
    pub fn wait_for_exit(&self, d: Duration) -> Option<i32> {
        wait_for(d, || self.exited())
    }

    /// Sends SIGINT to the process alone (a graceful stop, as Ctrl-C).
    pub fn interrupt(&self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
    }

    /// The log's text.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log, labelled.
    pub fn tail(&self, n: usize) -> String {
        tail_of(&self.name, &self.log, n)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so a script's traps stop what it started, then SIGKILL whatever is
        // left of the group (the leader is still unreaped here), then reap the leader.
        let pgid = self.child.id();
        if self.exited().is_none() {
            signal_group(pgid, libc::SIGTERM);
            let _ = self.wait_for_exit(Duration::from_secs(3));
        }
        signal_group(pgid, libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The last `n` lines of the file at `path`, labelled with `name`.
pub fn tail_of(name: &str, path: &Path, n: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("(cannot read: {e})"),
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    format!(
        "---- {} ({}), last {} of {} lines ----\n{}\n",
        name,
        path.display(),
        lines.len() - start,
        lines.len(),
        lines[start..].join("\n")
    )
}

/// Log files to show if the test fails: when dropped during a panic, prints the tail of each.
/// Declare it before the processes writing the logs, so that they are stopped (dropped) first
/// and the tails are complete.
#[derive(Default)]
pub struct LogsOnFailure {
    logs: Vec<(String, LogSource, usize)>,
}

enum LogSource {
    File(PathBuf),
    /// A command whose stdout is the log (e.g. a summary of another log), run on failure.
    Command(Command),
}

impl LogsOnFailure {
    /// Adds a log (it need not exist yet) whose last `lines` lines are printed on failure.
    pub fn add(&mut self, name: &str, path: impl Into<PathBuf>, lines: usize) {
        self.logs
            .push((name.into(), LogSource::File(path.into()), lines));
    }

    /// Adds a command run on failure (for at most 20 s): the last `lines` lines of its output
    /// are printed.
    pub fn add_command(&mut self, name: &str, cmd: Command, lines: usize) {
        self.logs
            .push((name.into(), LogSource::Command(cmd), lines));
    }
}

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!("\n======== the test failed: tails of its logs ========");
        for (name, source, n) in std::mem::take(&mut self.logs) {
            match source {
                LogSource::File(path) => eprintln!("{}", tail_of(&name, &path, n)),
                LogSource::Command(cmd) => {
                    let what = format!("{cmd:?}");
                    let (code, text) = match try_run(cmd, Duration::from_secs(20)) {
                        Ok((code, out, err)) => (code, format!("{out}{err}")),
                        Err(e) => (-1, format!("cannot run it: {e}")),
                    };
                    let lines: Vec<&str> = text.lines().collect();
                    let start = lines.len().saturating_sub(n);
                    eprintln!(
                        "---- {name} ({what}, exit {code}), last {} of {} lines ----\n{}\n",
                        lines.len() - start,
                        lines.len(),
                        lines[start..].join("\n")
                    );
                }
            }
        }
    }
}

/// A free TCP port on loopback (bound and released: good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `f` every 100 ms until it returns Some, for at most `d`.
pub fn wait_for<T>(d: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + d;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a command to completion with a deadline (then its process group is killed and the
/// code is -1); (exit code, stdout, stderr).
pub fn run(cmd: Command, d: Duration) -> (i32, String, String) {
    let what = format!("{cmd:?}");
    try_run(cmd, d).unwrap_or_else(|e| panic!("run {what}: {e}"))
}

/// [`run`] that returns an error instead of panicking (for use in a Drop during a panic).
pub fn try_run(mut cmd: Command, d: Duration) -> std::io::Result<(i32, String, String)> {
    // Output goes to files, not pipes: a grandchild that outlives a killed child cannot then
    // keep us waiting for the end of a pipe.
    let dir = tempfile::tempdir()?;
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .process_group(0)
        .spawn()?;
    let status = wait_for(d, || exit_code_nowait(child.id()));
    // Whatever it left running dies with it (the leader is still unreaped here).
    signal_group(child.id(), libc::SIGKILL);
    let _ = child.wait();
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let mut err = read(&err_path);
    if status.is_none() {
        err.push_str(&format!("\n(killed after {} s)", d.as_secs()));
    }
    Ok((status.unwrap_or(-1), read(&out_path), err))
}

/// A `switchboard serve` on its first run, with what it printed once.
pub struct FirstRun {
    /// The process.
    pub hub: Proc,
    /// Its data directory.
    pub data: PathBuf,
    /// The admin's password.
    pub password: String,
    /// The admin's TOTP secret.
    pub totp_secret: Vec<u8>,
    /// The same, base32 as printed.
    pub totp_base32: String,
}

/// Starts `switchboard serve` on a fresh data directory under `dir` (native front on a free
/// loopback port, the relay off, then `extra` arguments) and waits for it to print `ready`
/// and the admin's credentials.
pub fn serve_first_run(dir: &Path, extra: &[&str], ready: &str) -> FirstRun {
    let data = dir.join("hub");
    let mut c = switchboard();
    c.args(["serve", "--relay", "off"]);
    if !extra.contains(&"--listen") {
        c.args(["--listen", &format!("127.0.0.1:{}", free_port())]);
    }
    c.args(extra).arg("--data-dir").arg(&data);
    let hub = Proc::spawn("switchboard serve", c, dir.join("serve.log"));
    let out = wait_for(Duration::from_secs(30), || {
        let o = hub.output();
        (o.contains(ready) && o.contains("base32")).then_some(o)
    })
    .unwrap_or_else(|| panic!("hub did not start\n{}", hub.tail(30)));
    let password = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .expect("password printed")
        .to_string();
    let totp_base32 = out
        .lines()
        .find_map(|l| l.split("base32: ").nth(1))
        .expect("secret printed")
        .trim_end_matches(')')
        .to_string();
    let totp_secret = switchboard_core::auth::totp::base32_decode(&totp_base32).expect("base32");
    FirstRun {
        hub,
        data,
        password,
        totp_secret,
        totp_base32,
    }
}

/// The TOTP code of `secret` now.
#[allow(clippy::disallowed_types)]
pub fn code_now(secret: &[u8]) -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    switchboard_core::auth::totp::code_at(secret, now)
}
