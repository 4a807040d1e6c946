//! `command.Run`: runs a process with `smol::process`, streaming its output lines as progress.

use std::ffi::{CStr, CString};
use std::future::Future;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use serde_json::Value;
use smol::process::{Child, ChildStdin, Stdio};

use super::{Args, CAPTURE_LIMIT, Ended, PROGRESS_LINE_LIMIT, Progress, Report, py_repr, send};

/// What to execute for `command.Run`.
enum Program {
    /// `sh -c` with this script.
    Shell(String),
    /// A program and its arguments, run directly.
    Direct(Vec<String>),
}

/// The arguments of `command.Run`.
pub(super) struct RunSpec {
    program: Program,
    /// `str(command)` in Python, for the title and the `wait=false` output.
    display: String,
    user: Option<String>,
    group: Option<Group>,
    cwd: Option<String>,
    stdin: Option<Vec<u8>>,
    wait: bool,
    env: Vec<(String, String)>,
    capture_stdout: bool,
    capture_stderr: bool,
}

/// A group given by name or id.
enum Group {
    Name(String),
    Id(u32),
}

impl RunSpec {
    /// Binds `command.Run`'s parameters, in RedPepper's order.
    pub(super) fn parse(args: &mut Args) -> Result<RunSpec, String> {
        let command = args.required("command")?;
        let user = args.string("user")?;
        let group = match args.take("group")? {
            None => None,
            Some(Value::String(name)) => Some(Group::Name(name)),
            Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(id) => Some(Group::Id(id)),
                None => return Err(format!("invalid group id {n}")),
            },
            Some(_) => return Err("argument 'group' must be a name or an id".to_owned()),
        };
        let shell = args.boolean("shell", true)?;
        let cwd = args.string("cwd")?;
        let stdin = args.string("stdin")?.map(String::into_bytes);
        let wait = args.boolean("wait", true)?;
        let env = match args.take("env")? {
            None => Vec::new(),
            Some(Value::Object(map)) => {
                let mut env = Vec::with_capacity(map.len());
                for (key, value) in map {
                    let value = match value {
                        Value::String(s) => s,
                        Value::Bool(true) => "True".to_owned(),
                        Value::Bool(false) => "False".to_owned(),
                        Value::Number(n) => n.to_string(),
                        _ => return Err(format!("Environment variable {key} has invalid type")),
                    };
                    env.push((key, value));
                }
                env
            }
            Some(_) => return Err("env must be a mapping of environment variables".to_owned()),
        };
        let capture_stdout = args.boolean("capture_stdout", true)?;
        let capture_stderr = args.boolean("capture_stderr", true)?;
        let encoding = args
            .string("encoding")?
            .unwrap_or_else(|| "utf-8".to_owned());
        if !matches!(
            encoding.to_ascii_lowercase().replace('_', "-").as_str(),
            "utf-8" | "utf8"
        ) {
            return Err(format!("unsupported encoding {encoding:?} (only utf-8)"));
        }
        if !wait && (capture_stdout || capture_stderr) {
            return Err("Cannot capture output if not waiting for command to finish".to_owned());
        }
        let (program, display) = match command {
            Value::String(s) if shell => (Program::Shell(s.clone()), s),
            Value::String(s) => (Program::Direct(vec![s.clone()]), s),
            Value::Array(items) => {
                let words = items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err("command list items must be strings".to_owned()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if words.is_empty() {
                    return Err("command must not be empty".to_owned());
                }
                let display = format!(
                    "[{}]",
                    words
                        .iter()
                        .map(|w| py_repr(w))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                (Program::Direct(words), display)
            }
            _ => return Err("argument 'command' must be a string or a list".to_owned()),
        };
        Ok(RunSpec {
            program,
            display,
            user,
            group,
            cwd,
            stdin,
            wait,
            env,
            capture_stdout,
            capture_stderr,
        })
    }

    /// The operation's `str()` in RedPepper.
    pub(super) fn title(&self) -> String {
        let background = if self.wait { "" } else { " &" };
        let user = self
            .user
            .as_ref()
            .map(|u| format!(" as {u}"))
            .unwrap_or_default();
        format!("Run(\"{}{background}\"{user})", self.display)
    }

    /// Builds the process: its own process group, the user's identity and HOME if asked.
    async fn command(&self) -> Result<smol::process::Command, String> {
        let mut cmd = match &self.program {
            Program::Shell(script) => {
                let mut cmd = std::process::Command::new("/bin/sh");
                cmd.arg("-c").arg(script);
                cmd
            }
            Program::Direct(words) => {
                let mut cmd = std::process::Command::new(&words[0]);
                cmd.args(&words[1..]);
                cmd
            }
        };
        cmd.process_group(0);
        let mut gid = None;
        if let Some(user) = &self.user {
            let name = user.clone();
            let (uid, user_gid, home) = smol::unblock(move || lookup_user(&name)).await?;
            cmd.uid(uid).env("HOME", home);
            gid = Some(user_gid);
        }
        match &self.group {
            Some(Group::Id(id)) => gid = Some(*id),
            Some(Group::Name(name)) => {
                let name = name.clone();
                gid = Some(smol::unblock(move || lookup_group(&name)).await?);
            }
            None => {}
        }
        if let Some(gid) = gid {
            cmd.gid(gid);
        }
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut cmd = smol::process::Command::from(cmd);
        let piped_or_inherit = |piped| {
            if piped {
                Stdio::piped()
            } else {
                Stdio::inherit()
            }
        };
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(piped_or_inherit(self.capture_stdout))
        .stderr(piped_or_inherit(self.capture_stderr))
        .kill_on_drop(self.wait);
        Ok(cmd)
    }
}

/// Runs `command.Run`, streaming its output lines as progress.
pub(super) async fn run_command(
    spec: RunSpec,
    title: String,
    progress: &async_channel::Sender<Progress>,
    cancelled: impl Future<Output = ()>,
) -> Ended {
    let mut report = Report::new(title);
    let mut child = match spec
        .command()
        .await
        .and_then(|mut c| c.spawn().map_err(|e| e.to_string()))
    {
        Ok(child) => child,
        Err(e) => return Ended::Error(e),
    };
    if !spec.wait {
        // Dropping the child leaves it running; smol reaps it when it exits.
        report.add(&format!("$ {} &", spec.display));
        return Ended::Done(report);
    }
    // Declared after `child`, so dropped (killing the group) before it.
    let mut group = GroupGuard::new(&child);
    let budget = AtomicUsize::new(CAPTURE_LIMIT);
    let truncated = AtomicBool::new(false);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let waited = {
        let stdin = feed(child.stdin.take(), spec.stdin.as_deref());
        let out = pump(
            child.stdout.take(),
            &mut stdout,
            &budget,
            &truncated,
            progress,
        );
        let err = pump(
            child.stderr.take(),
            &mut stderr,
            &budget,
            &truncated,
            progress,
        );
        let child = &mut child;
        let work = async move {
            future::zip(stdin, future::zip(out, err)).await;
            Some(child.status().await)
        };
        future::or(
            async {
                cancelled.await;
                None
            },
            work,
        )
        .await
    };
    report.changed = true;
    if spec.capture_stdout && !stdout.is_empty() {
        report.add(String::from_utf8_lossy(&stdout).trim_end());
    }
    if spec.capture_stderr && !stderr.is_empty() {
        report.add(&format!(
            "Stderr:\n{}",
            String::from_utf8_lossy(&stderr).trim_end()
        ));
    }
    if truncated.load(Ordering::Relaxed) {
        report.add(&format!(
            "(output truncated: only the first {CAPTURE_LIMIT} bytes were kept)"
        ));
    }
    match waited {
        Some(Ok(status)) => {
            group.disarm();
            if !status.success() {
                let code = status.code().or(status.signal().map(|s| -s)).unwrap_or(-1);
                report.fail(&format!("Command failed with return code {code}"));
            }
            Ended::Done(report)
        }
        Some(Err(e)) => Ended::Error(format!("Failed to wait for the command: {e}")),
        None => {
            group.kill();
            if let Err(e) = child.kill() {
                tracing::debug!("killing cancelled command: {e}");
            }
            if let Err(e) = child.status().await {
                tracing::warn!("reaping cancelled command: {e}");
            }
            Ended::Cancelled(report)
        }
    }
}

/// Kills a child's process group (SIGKILL) when cancelled or dropped before the child was reaped.
///
/// The child leads its group and stays unreaped (at worst a zombie) while the guard is armed, so
/// the group id cannot have been reused by another process.
struct GroupGuard {
    pgid: Option<libc::pid_t>,
}

impl GroupGuard {
    fn new(child: &Child) -> Self {
        GroupGuard {
            pgid: libc::pid_t::try_from(child.id()).ok().filter(|&p| p > 0),
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }

    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `data` to the child's stdin and closes it; a child that exits first is not an error.
async fn feed(stdin: Option<ChildStdin>, data: Option<&[u8]>) {
    if let (Some(mut stdin), Some(data)) = (stdin, data) {
        if let Err(e) = stdin.write_all(data).await {
            tracing::debug!("writing command stdin: {e}");
        }
        let _ = stdin.close().await;
    }
}

/// Reads one output stream to its end: keeps up to the shared `budget` of bytes in `sink` and
/// sends each line (at most [`PROGRESS_LINE_LIMIT`] bytes of it) as progress.
async fn pump(
    stream: Option<impl AsyncRead + Unpin>,
    sink: &mut Vec<u8>,
    budget: &AtomicUsize,
    truncated: &AtomicBool,
    progress: &async_channel::Sender<Progress>,
) {
    let Some(mut stream) = stream else { return };
    let mut buf = vec![0u8; 16 * 1024];
    let mut line = Vec::with_capacity(PROGRESS_LINE_LIMIT);
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!("reading command output: {e}");
                break;
            }
        };
        let chunk = &buf[..n];
        let kept = budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left - left.min(n))
            })
            .map_or(0, |left| left.min(n));
        sink.extend_from_slice(&chunk[..kept]);
        if kept < n {
            truncated.store(true, Ordering::Relaxed);
        }
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            push_capped(&mut line, &rest[..pos]);
            send(progress, 0, line_text(&line)).await;
            line.clear();
            rest = &rest[pos + 1..];
        }
        push_capped(&mut line, rest);
    }
    if !line.is_empty() {
        send(progress, 0, line_text(&line)).await;
    }
}

fn push_capped(line: &mut Vec<u8>, bytes: &[u8]) {
    let room = PROGRESS_LINE_LIMIT.saturating_sub(line.len());
    line.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// One line of output as text: lossy UTF-8, without a trailing CR, at most the line limit.
fn line_text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut text = String::from_utf8_lossy(line).into_owned();
    if text.len() > PROGRESS_LINE_LIMIT {
        let mut end = PROGRESS_LINE_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Calls a `get*nam_r` function with a growing buffer; `None` when the name is unknown.
fn lookup<T>(
    name: &str,
    mut call: impl FnMut(*const libc::c_char, &mut T, &mut [u8], &mut *mut T) -> libc::c_int,
) -> Result<Option<T>, String> {
    let cname = CString::new(name).map_err(|_| format!("invalid name {name:?}"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `T` is a C struct of integers and pointers, for which all-zero is valid.
        let mut entry: T = unsafe { std::mem::zeroed() };
        let mut found: *mut T = std::ptr::null_mut();
        match call(cname.as_ptr(), &mut entry, &mut buf, &mut found) {
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(entry)),
            rc => {
                return Err(format!(
                    "looking up {name:?}: {}",
                    std::io::Error::from_raw_os_error(rc)
                ));
            }
        }
    }
}

/// Looks up a user's uid, primary gid and home directory.
pub(super) fn lookup_user(name: &str) -> Result<(u32, u32, String), String> {
    let call = |n, e: &mut libc::passwd, b: &mut [u8], f: &mut *mut libc::passwd| {
        // SAFETY: every pointer is valid for the call and `b.len()` is the buffer's size.
        unsafe { libc::getpwnam_r(n, e, b.as_mut_ptr().cast(), b.len(), f) }
    };
    // The strings of `entry` point into the lookup's buffer, so read them inside the closure.
    let mut home = String::new();
    let entry = lookup(name, |n, e, b, f| {
        let rc = call(n, e, b, f);
        if rc == 0 && !f.is_null() && !e.pw_dir.is_null() {
            // SAFETY: on success `pw_dir` is a NUL-terminated string inside `b`, alive here.
            home = unsafe { CStr::from_ptr(e.pw_dir) }
                .to_string_lossy()
                .into_owned();
        }
        rc
    })?;
    let entry = entry.ok_or_else(|| format!("getpwnam(): name not found: '{name}'"))?;
    Ok((entry.pw_uid, entry.pw_gid, home))
}

/// Looks up a group's gid.
fn lookup_group(name: &str) -> Result<u32, String> {
    let entry = lookup(name, |n, e: &mut libc::group, b, f| {
        // SAFETY: every pointer is valid for the call and `b.len()` is the buffer's size.
        unsafe { libc::getgrnam_r(n, e, b.as_mut_ptr().cast(), b.len(), f) }
    })?;
    Ok(entry
        .ok_or_else(|| format!("getgrnam(): name not found: '{name}'"))?
        .gr_gid)
}
