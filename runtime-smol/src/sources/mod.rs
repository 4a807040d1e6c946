//! The agent's stream sources (seed 000), each a stream kind:
//!
//! | kind | class | parameters | needs |
//! | --- | --- | --- | --- |
//! | `metrics` | latest (multicast by parameters) | `interval_ms` (default 1000, 100..=3600000) | `open_stream` |
//! | `tail` | lossless | `path` (required), `offset` (bytes from the start; default: the end) | `open_stream`; the path inside a `--tail-dir` of the agent |
//! | `shell` | lossless, both ways | `cols`, `rows` (default 80x24), `command` (default `$SHELL` or `/bin/sh`) | `open_stream` + `run_command`; the agent not started with `--no-shell` |
//!
//! An embedder adds kinds of its own with [`SourceOptions::custom`] (`switchboard loadgen
//! streams` uses one: timestamped frames at a set rate).
//!
//! A source runs as a task. Lossless sources hand over one chunk at a time and wait until the
//! connection loop says it went out (within the sink's credit): memory stays bounded whatever
//! the sink does. Dropping a [`RunningSource`] stops it (a shell's process is killed).

pub mod conn;
mod metrics;
mod shell;
mod tail;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use switchboard_core::stream::{Class, EndCode};
use switchboard_proto as pb;

/// What the agent lets its streams do.
#[derive(Clone)]
pub struct SourceOptions {
    /// Directories whose files `tail` may follow (none: `tail` is refused).
    pub tail_dirs: Vec<PathBuf>,
    /// Whether `shell` is offered.
    pub shell: bool,
    /// Kinds an embedder adds, by name (the built-in names `metrics`, `tail` and `shell`
    /// cannot be replaced).
    pub custom: BTreeMap<String, CustomSource>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            tail_dirs: Vec::new(),
            shell: true,
            custom: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for SourceOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceOptions")
            .field("tail_dirs", &self.tail_dirs)
            .field("shell", &self.shell)
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What a custom source's task gets: its stream, the open that asked for it, where to send
/// its data and where its control messages arrive.
#[derive(Debug)]
pub struct SourceContext {
    /// The stream id (in [`SourceMsg`]s).
    pub id: u64,
    /// The open (kind, key, parameters).
    pub open: pb::StreamOpen,
    /// To the connection loop. A latest source sends with `ready: None` (what finds no credit
    /// is dropped by the endpoint); a lossless one waits on `ready` before its next chunk.
    pub out: Sender<SourceMsg>,
    /// Resync requests and the sink's input.
    pub ctl: Receiver<SourceCtl>,
}

/// Starts a custom source's task, or refuses the open (code and reason go to the sink).
pub type StartSource =
    Arc<dyn Fn(SourceContext) -> Result<smol::Task<()>, (EndCode, String)> + Send + Sync>;

/// A stream kind an embedder adds to the agent.
#[derive(Clone)]
pub struct CustomSource {
    /// Its class (an open asking for the other is refused with INVALID).
    pub class: Class,
    /// Starts it for one open; dropping the task stops it.
    pub start: StartSource,
}

/// From a source task to the connection loop.
#[derive(Debug)]
pub enum SourceMsg {
    /// An event to send. `ready` (lossless) is signalled once it went out.
    Data {
        /// Stream id.
        id: u64,
        /// 0 data, 1 control.
        channel: u32,
        /// Usable alone.
        key_frame: bool,
        /// Bytes.
        payload: Bytes,
        /// Signalled when sent (lossless sources wait for it).
        ready: Option<Sender<()>>,
    },
    /// The sink's input was used (shell): give the credit back.
    Consumed {
        /// Stream id.
        id: u64,
        /// Bytes.
        bytes: usize,
    },
    /// The source ended by itself.
    End {
        /// Stream id.
        id: u64,
        /// Why.
        code: EndCode,
        /// Details.
        reason: String,
    },
}

/// From the connection loop to a source task.
#[derive(Debug)]
pub enum SourceCtl {
    /// Produce a key frame now.
    Resync,
    /// The sink's data (shell: keystrokes on channel 0, a JSON resize on channel 1).
    Input {
        /// Channel.
        channel: u32,
        /// Bytes.
        payload: Bytes,
    },
}

/// A running source: its control channel and its task (dropped: stopped).
pub struct RunningSource {
    /// Control messages to the task.
    pub ctl: Sender<SourceCtl>,
    /// Its class.
    pub class: Class,
    _task: smol::Task<()>,
}

/// Starts the source an open asks for, or says why not.
pub fn start(
    id: u64,
    open: &pb::StreamOpen,
    opts: &SourceOptions,
    out: Sender<SourceMsg>,
) -> Result<RunningSource, (EndCode, String)> {
    let custom = opts
        .custom
        .get(&open.kind)
        .filter(|_| !matches!(open.kind.as_str(), "metrics" | "tail" | "shell"));
    let class = match open.kind.as_str() {
        "metrics" => Class::Latest,
        "tail" | "shell" => Class::Lossless,
        _ if custom.is_some() => custom.map_or(Class::Latest, |c| c.class),
        other => {
            return Err((
                EndCode::Unsupported,
                format!(
                    "this agent has no {other:?} source (it has metrics, tail, shell{})",
                    opts.custom
                        .keys()
                        .map(|k| format!(", {k}"))
                        .collect::<String>()
                ),
            ));
        }
    };
    if open.class != class as i32 {
        return Err((
            EndCode::Invalid,
            format!(
                "{} is a {} stream",
                open.kind,
                class.as_str_name().to_lowercase()
            ),
        ));
    }
    let (ctl, ctl_rx) = async_channel::unbounded();
    let task = match open.kind.as_str() {
        "metrics" => {
            let interval = metrics::interval(open).map_err(|e| (EndCode::Invalid, e))?;
            smol::spawn(metrics::run(id, interval, out, ctl_rx))
        }
        "tail" => {
            let (file, offset) = tail::check(open, &opts.tail_dirs)?;
            smol::spawn(tail::run(
                id,
                file,
                offset,
                opts.tail_dirs.clone(),
                out,
                ctl_rx,
            ))
        }
        "shell" => {
            if !opts.shell {
                return Err((
                    EndCode::Unauthorised,
                    "this agent does not offer a shell (started with --no-shell)".into(),
                ));
            }
            let pty = shell::spawn(open).map_err(|e| (EndCode::Invalid, e))?;
            smol::spawn(shell::run(id, pty, out, ctl_rx))
        }
        _ if custom.is_some() => {
            let Some(c) = custom else {
                return Err((EndCode::Unsupported, "no such source".into()));
            };
            (c.start)(SourceContext {
                id,
                open: open.clone(),
                out,
                ctl: ctl_rx,
            })?
        }
        other => return Err((EndCode::Unsupported, format!("no {other:?} source"))),
    };
    Ok(RunningSource {
        ctl,
        class,
        _task: task,
    })
}

/// Sends one lossless chunk and waits until it went out (or the loop is gone: false).
pub(crate) async fn send_and_wait(
    out: &Sender<SourceMsg>,
    id: u64,
    channel: u32,
    payload: Bytes,
) -> bool {
    let (ready, done) = async_channel::bounded(1);
    let msg = SourceMsg::Data {
        id,
        channel,
        key_frame: false,
        payload,
        ready: Some(ready),
    };
    out.send(msg).await.is_ok() && done.recv().await.is_ok()
}

/// Chunks of a lossless source: at most this many bytes each.
pub(crate) const CHUNK: usize = 16 * 1024;
