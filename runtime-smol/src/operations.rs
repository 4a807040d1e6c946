//! The agent's built-in operations, compatible with RedPepper 0.0.17.
//!
//! A manager sends `Command { commandID, type, data }`: `type` names an operation such as
//! `echo.Echo` and `data` is JSON `{"[args]": [positional...], "keyword": value, ...}`. Positional
//! arguments bind to parameters in declaration order, keywords by name; an unknown keyword, a
//! missing required argument or a duplicated one fails the command, as it does in RedPepper.
//!
//! Operations and their parameters (defaults in brackets):
//!
//! | name | parameters |
//! | --- | --- |
//! | `echo.Echo` | `message`, `reverse` \[false\] |
//! | `command.Run` | `command`, `user`, `group`, `shell` \[true\], `cwd`, `stdin`, `wait` \[true\], `env`, `capture_stdout` \[true\], `capture_stderr` \[true\], `encoding` \[`"utf-8"`\] |
//! | `data.Show` | `name` |
//! | `noop.Noop` | none |
//!
//! Every operation also accepts RedPepper's `if` keyword in its trivial forms (`true`, `false`,
//! `"true"`, `"false"`, `null`); other conditions are refused.
//!
//! The final output has RedPepper's `str(Result)` format, `Operation {name} succeeded:\n{output}`
//! (or ` failed`, with ` (changed)` when the operation changed something), so that a real
//! RedPepper manager logs familiar text. Progress follows the real agent: `0/1 "Running {type}..."`
//! first, `1/1 "Finished {type}"` when the operation returns, and `command.Run` adds one `0/1`
//! update per line of output.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_lite::future;
use serde_json::{Map, Value};

use command::{RunSpec, run_command};

mod command;
#[cfg(test)]
mod tests;

/// Most bytes of stdout and stderr together that `command.Run` keeps for its result.
pub const CAPTURE_LIMIT: usize = 1 << 20;
/// Most bytes of one output line that `command.Run` sends as a progress message.
pub const PROGRESS_LINE_LIMIT: usize = 1024;

/// One command received from the manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRequest {
    /// The manager's command id (opaque).
    pub command_id: i64,
    /// The operation name, e.g. `echo.Echo`.
    pub operation: String,
    /// The arguments, JSON `{"[args]": [...], "keyword": value, ...}`.
    pub data_json: String,
}

/// A progress update of a running operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Steps done so far.
    pub current: u32,
    /// Steps in total.
    pub total: u32,
    /// What is happening (for `command.Run`, one line of output).
    pub message: String,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeStatus {
    /// The operation did what it was asked.
    Success,
    /// The operation, or decoding the command, failed.
    Failed,
    /// The operation was cancelled before it finished.
    Cancelled,
}

/// The final result of an operation, ready for a `CommandResult`/`CommandDone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub status: OutcomeStatus,
    /// Whether the operation changed something on the host.
    pub changed: bool,
    /// The result text in RedPepper's format (see the module documentation).
    pub output: String,
}

/// Something that can answer an agent's data request (the runtime implements it over the link).
pub trait DataRequester: Send + Sync {
    /// Sends a request named `name` with JSON keyword arguments `kwargs_json` and resolves to the
    /// answer's JSON text, or to the error text of a failed request.
    fn request(
        &self,
        name: String,
        kwargs_json: String,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
}

/// Runs the operation `req` to completion and returns its result.
///
/// Progress updates go to `progress` (a closed channel is ignored; a full bounded channel makes
/// the operation wait, so `command.Run` output is throttled rather than dropped). The operation is
/// cancelled as soon as `cancel` yields a message or is closed: a running process is killed with
/// SIGKILL (with its whole process group) and reaped, and the outcome is
/// [`OutcomeStatus::Cancelled`] with the output so far.
pub async fn run_operation(
    req: OperationRequest,
    progress: async_channel::Sender<Progress>,
    data: Arc<dyn DataRequester>,
    cancel: async_channel::Receiver<()>,
) -> Outcome {
    let Some(mut args) = Args::parse(&req.data_json) else {
        return Outcome {
            status: OutcomeStatus::Failed,
            changed: false,
            output: "Failed to decode command data".to_owned(),
        };
    };
    let op = req.operation.as_str();
    let cancelled = || async {
        // A message or a closed channel both mean "cancel".
        let _ = cancel.recv().await;
    };
    let running = send(&progress, 0, format!("Running {op}..."));
    if future::or(
        async {
            cancelled().await;
            true
        },
        async {
            running.await;
            false
        },
    )
    .await
    {
        return Report::new(op.to_owned()).cancelled();
    }
    let condition = args.keyword.remove("if");
    let parsed = match Operation::parse(op, args) {
        Ok(parsed) => parsed,
        Err(Refusal::Unknown) => return Report::failed(op, format!("Unknown operation \"{op}\"")),
        Err(Refusal::Invalid(msg)) => return Report::exec_error(op, &msg),
    };
    match condition_holds(condition.as_ref()) {
        Ok(true) => {}
        Ok(false) => {
            let mut report = Report::new(op.to_owned());
            report.add("Condition not met");
            return finish(report, &progress, op, cancelled()).await;
        }
        Err(msg) => return Report::exec_error(op, &msg),
    }
    let title = parsed.title();
    let ended = match parsed {
        Operation::Run(spec) => run_command(spec, title, &progress, cancelled()).await,
        simple => {
            let work = run_simple(simple, title.clone(), &*data);
            let stop = async {
                cancelled().await;
                Ended::Cancelled(Report::new(title))
            };
            future::or(stop, work).await
        }
    };
    match ended {
        Ended::Done(report) => finish(report, &progress, op, cancelled()).await,
        Ended::Cancelled(report) => report.cancelled(),
        Ended::Error(msg) => Report::exec_error(op, &msg),
    }
}

/// Sends the closing progress update (unless cancelled meanwhile) and formats the result.
async fn finish(
    report: Report,
    progress: &async_channel::Sender<Progress>,
    op: &str,
    cancelled: impl Future<Output = ()>,
) -> Outcome {
    future::or(send(progress, 1, format!("Finished {op}")), cancelled).await;
    report.outcome()
}

/// Sends one progress update out of 1, ignoring a closed channel.
async fn send(progress: &async_channel::Sender<Progress>, current: u32, message: String) {
    let _ = progress
        .send(Progress {
            current,
            total: 1,
            message,
        })
        .await;
}

/// RedPepper's `Result`: a title (the operation's `str()`), output lines and flags.
struct Report {
    title: String,
    output: String,
    changed: bool,
    succeeded: bool,
}

impl Report {
    fn new(title: String) -> Self {
        Report {
            title,
            output: String::new(),
            changed: false,
            succeeded: true,
        }
    }

    /// A failure report titled with the operation's type.
    fn failed(op: &str, msg: String) -> Outcome {
        let mut report = Report::new(op.to_owned());
        report.fail(&msg);
        report.outcome()
    }

    /// The report of an operation that could not be built or run (RedPepper's exception path).
    fn exec_error(op: &str, msg: &str) -> Outcome {
        Report::failed(
            op,
            format!("Failed to execute command {}:\n{msg}", py_repr(op)),
        )
    }

    fn add(&mut self, text: &str) {
        self.output.push_str(text);
        self.output.push('\n');
    }

    fn fail(&mut self, text: &str) {
        self.add(text);
        self.succeeded = false;
    }

    fn text(&self) -> String {
        format!(
            "Operation {}{}{}:\n{}",
            self.title,
            if self.succeeded {
                " succeeded"
            } else {
                " failed"
            },
            if self.changed { " (changed)" } else { "" },
            self.output.trim_end()
        )
    }

    fn outcome(self) -> Outcome {
        let status = if self.succeeded {
            OutcomeStatus::Success
        } else {
            OutcomeStatus::Failed
        };
        Outcome {
            status,
            changed: self.changed,
            output: self.text(),
        }
    }

    fn cancelled(mut self) -> Outcome {
        self.fail("Operation cancelled");
        Outcome {
            status: OutcomeStatus::Cancelled,
            changed: self.changed,
            output: self.text(),
        }
    }
}

/// How an operation's run ended.
enum Ended {
    Done(Report),
    Cancelled(Report),
    /// RedPepper would have raised an exception: the message for the exception path.
    Error(String),
}

/// Why a command was refused before running.
enum Refusal {
    Unknown,
    Invalid(String),
}

/// The arguments of a command: positional ones first, then keywords.
struct Args {
    positional: std::vec::IntoIter<Value>,
    bound: usize,
    keyword: Map<String, Value>,
}

impl Args {
    /// Decodes RedPepper's command data; `None` when it is not a JSON object with an `[args]` list.
    fn parse(data_json: &str) -> Option<Args> {
        let Value::Object(mut keyword) = serde_json::from_str(data_json).ok()? else {
            return None;
        };
        let positional = match keyword.remove("[args]") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list,
            Some(_) => return None,
        };
        Some(Args {
            positional: positional.into_iter(),
            bound: 0,
            keyword,
        })
    }

    /// Binds the next parameter, `name`; `None` when absent or JSON null.
    fn take(&mut self, name: &str) -> Result<Option<Value>, String> {
        let value = if let Some(value) = self.positional.next() {
            self.bound += 1;
            if self.keyword.contains_key(name) {
                return Err(format!("got multiple values for argument '{name}'"));
            }
            value
        } else {
            match self.keyword.remove(name) {
                Some(value) => value,
                None => return Ok(None),
            }
        };
        Ok(if value.is_null() { None } else { Some(value) })
    }

    fn required(&mut self, name: &str) -> Result<Value, String> {
        self.take(name)?
            .ok_or_else(|| format!("missing required argument '{name}'"))
    }

    fn string(&mut self, name: &str) -> Result<Option<String>, String> {
        match self.take(name)? {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("argument '{name}' must be a string")),
        }
    }

    fn boolean(&mut self, name: &str, default: bool) -> Result<bool, String> {
        match self.take(name)? {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(b),
            Some(_) => Err(format!("argument '{name}' must be a boolean")),
        }
    }

    /// Fails on arguments that no parameter took.
    fn finish(self) -> Result<(), String> {
        let extra = self.positional.len();
        if extra > 0 {
            let (bound, given) = (self.bound, self.bound + extra);
            return Err(format!(
                "takes {bound} positional arguments but {given} were given"
            ));
        }
        match self.keyword.keys().next() {
            Some(key) => Err(format!("got an unexpected keyword argument '{key}'")),
            None => Ok(()),
        }
    }
}

/// Evaluates RedPepper's `if` keyword in its trivial forms.
fn condition_holds(condition: Option<&Value>) -> Result<bool, String> {
    match condition {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("unsupported condition {other} (only true/false)")),
    }
}

/// A built operation, ready to run.
enum Operation {
    Echo { message: String, reverse: bool },
    Run(RunSpec),
    Show { name: String },
    Noop,
}

impl Operation {
    fn parse(op: &str, mut args: Args) -> Result<Operation, Refusal> {
        let parsed = match op {
            "echo.Echo" => (|| {
                let message = args.string("message")?;
                let message = message.ok_or("missing required argument 'message'")?;
                let reverse = args.boolean("reverse", false)?;
                Ok(Operation::Echo { message, reverse })
            })(),
            "command.Run" => RunSpec::parse(&mut args).map(Operation::Run),
            "data.Show" => (|| {
                let name = args
                    .string("name")?
                    .ok_or("missing required argument 'name'")?;
                Ok(Operation::Show { name })
            })(),
            "noop.Noop" => Ok(Operation::Noop),
            _ => return Err(Refusal::Unknown),
        };
        let parsed = parsed.map_err(Refusal::Invalid)?;
        args.finish()
            .map_err(|e| Refusal::Invalid(format!("{op}() {e}")))?;
        Ok(parsed)
    }

    /// The operation's `str()` in RedPepper, used as the result's title.
    fn title(&self) -> String {
        match self {
            Operation::Echo { message, reverse } => {
                format!(
                    "echo.Echo(\"{message}\"{})",
                    if *reverse { " reverse" } else { "" }
                )
            }
            Operation::Run(spec) => spec.title(),
            Operation::Show { name } => format!("data.Show({name})"),
            Operation::Noop => "no-op".to_owned(),
        }
    }
}

/// Runs `echo.Echo`, `data.Show` and `noop.Noop`.
async fn run_simple(op: Operation, title: String, data: &dyn DataRequester) -> Ended {
    let mut report = Report::new(title);
    match op {
        Operation::Echo { message, reverse } => {
            let message = if reverse {
                message.chars().rev().collect()
            } else {
                message
            };
            report.add(&message);
        }
        Operation::Show { name } => {
            let kwargs = serde_json::json!({ "name": name }).to_string();
            let answer = match data.request("data".to_owned(), kwargs).await {
                Ok(answer) => answer,
                Err(e) => return Ended::Error(format!("Data request failed: {e}")),
            };
            match serde_json::from_str::<Value>(&answer) {
                Ok(Value::String(s)) => report.add(&s),
                Ok(other) => report.add(&other.to_string()),
                Err(e) => return Ended::Error(format!("Invalid JSON in data response: {e}")),
            }
        }
        Operation::Noop | Operation::Run(_) => {}
    }
    Ended::Done(report)
}

/// Python's `repr()` of a string (single quotes unless the text has some and no double ones).
fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}
