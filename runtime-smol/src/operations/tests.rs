//! Tests of the built-in operations: real processes, a fake data requester.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// Answers every data request with a fixed result and records the requests.
struct FakeData {
    answer: Result<String, String>,
    seen: Mutex<Vec<(String, String)>>,
}

impl FakeData {
    fn new(answer: Result<&str, &str>) -> Arc<Self> {
        let answer = answer.map(str::to_owned).map_err(str::to_owned);
        Arc::new(FakeData {
            answer,
            seen: Mutex::new(Vec::new()),
        })
    }
}

impl DataRequester for FakeData {
    fn request(
        &self,
        name: String,
        kwargs_json: String,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> {
        self.seen.lock().expect("lock").push((name, kwargs_json));
        let answer = self.answer.clone();
        Box::pin(async move { answer })
    }
}

fn request(operation: &str, data_json: &str) -> OperationRequest {
    OperationRequest {
        command_id: 7,
        operation: operation.to_owned(),
        data_json: data_json.to_owned(),
    }
}

/// Runs one operation to completion (never cancelled); returns its outcome and progress messages.
fn run_with(op: &str, data_json: &str, data: Arc<dyn DataRequester>) -> (Outcome, Vec<String>) {
    smol::block_on(async {
        let (tx, rx) = async_channel::unbounded();
        let (_keep_cancel_open, cancel) = async_channel::bounded(1);
        let outcome = run_operation(request(op, data_json), tx, data, cancel).await;
        let mut messages = Vec::new();
        while let Ok(p) = rx.try_recv() {
            messages.push(p.message);
        }
        (outcome, messages)
    })
}

fn run(op: &str, data_json: &str) -> (Outcome, Vec<String>) {
    run_with(op, data_json, FakeData::new(Err("no data here")))
}

fn assert_outcome(outcome: &Outcome, status: OutcomeStatus, changed: bool, output: &str) {
    assert_eq!(outcome.status, status, "{outcome:?}");
    assert_eq!(outcome.changed, changed, "{outcome:?}");
    assert_eq!(outcome.output, output);
}

#[test]
fn echo_positional_keyword_and_reverse() {
    let (outcome, progress) = run("echo.Echo", r#"{"[args]": ["hi"]}"#);
    assert_outcome(
        &outcome,
        OutcomeStatus::Success,
        false,
        "Operation echo.Echo(\"hi\") succeeded:\nhi",
    );
    assert_eq!(progress, ["Running echo.Echo...", "Finished echo.Echo"]);

    let (outcome, _) = run("echo.Echo", r#"{"message": "hi"}"#);
    assert_eq!(outcome.output, "Operation echo.Echo(\"hi\") succeeded:\nhi");

    let expected = "Operation echo.Echo(\"héllo\" reverse) succeeded:\nolléh";
    let (outcome, _) = run("echo.Echo", r#"{"message": "héllo", "reverse": true}"#);
    assert_outcome(&outcome, OutcomeStatus::Success, false, expected);
    let (outcome, _) = run("echo.Echo", r#"{"[args]": ["héllo", true]}"#);
    assert_eq!(outcome.output, expected);
    let (outcome, _) = run("echo.Echo", r#"{"[args]": ["héllo"], "reverse": true}"#);
    assert_eq!(outcome.output, expected);
}

#[test]
fn argument_errors() {
    let cases = [
        (r#"{}"#, "missing required argument 'message'"),
        (
            r#"{"message": "x", "loud": true}"#,
            "echo.Echo() got an unexpected keyword argument 'loud'",
        ),
        (
            r#"{"[args]": ["a"], "message": "b"}"#,
            "got multiple values for argument 'message'",
        ),
        (
            r#"{"[args]": ["a", false, 3]}"#,
            "echo.Echo() takes 2 positional arguments but 3 were given",
        ),
        (r#"{"message": 5}"#, "argument 'message' must be a string"),
        (
            r#"{"message": "x", "reverse": "yes"}"#,
            "argument 'reverse' must be a boolean",
        ),
    ];
    for (data, error) in cases {
        let (outcome, progress) = run("echo.Echo", data);
        let expected =
            format!("Operation echo.Echo failed:\nFailed to execute command 'echo.Echo':\n{error}");
        assert_outcome(&outcome, OutcomeStatus::Failed, false, &expected);
        // Like the real agent: "Running" was sent, "Finished" is not.
        assert_eq!(progress, ["Running echo.Echo..."]);
    }
    let (outcome, _) = run("noop.Noop", r#"{"[args]": [1]}"#);
    assert!(
        outcome
            .output
            .ends_with("noop.Noop() takes 0 positional arguments but 1 were given")
    );
}

#[test]
fn noop_unknown_operation_and_bad_data() {
    let (outcome, progress) = run("noop.Noop", "{}");
    assert_outcome(
        &outcome,
        OutcomeStatus::Success,
        false,
        "Operation no-op succeeded:\n",
    );
    assert_eq!(progress, ["Running noop.Noop...", "Finished noop.Noop"]);

    let (outcome, _) = run("x.Y", r#"{"[args]": []}"#);
    assert_outcome(
        &outcome,
        OutcomeStatus::Failed,
        false,
        "Operation x.Y failed:\nUnknown operation \"x.Y\"",
    );

    for bad in ["not json", "", "[1, 2]", r#"{"[args]": "abc"}"#] {
        let (outcome, progress) = run("echo.Echo", bad);
        assert_outcome(
            &outcome,
            OutcomeStatus::Failed,
            false,
            "Failed to decode command data",
        );
        assert!(progress.is_empty());
    }
}

#[test]
fn trivial_conditions() {
    let (outcome, _) = run("echo.Echo", r#"{"message": "x", "if": false}"#);
    assert_outcome(
        &outcome,
        OutcomeStatus::Success,
        false,
        "Operation echo.Echo succeeded:\nCondition not met",
    );
    let (outcome, _) = run("echo.Echo", r#"{"message": "x", "if": "True"}"#);
    assert_eq!(outcome.output, "Operation echo.Echo(\"x\") succeeded:\nx");
    let (outcome, _) = run(
        "echo.Echo",
        r#"{"message": "x", "if": {"path exists": "/"}}"#,
    );
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert!(
        outcome.output.contains("unsupported condition"),
        "{}",
        outcome.output
    );
}

#[test]
fn data_show_string_object_and_error() {
    let data = FakeData::new(Ok(r#""hello world""#));
    let (outcome, progress) = run_with("data.Show", r#"{"[args]": ["greeting"]}"#, data.clone());
    assert_outcome(
        &outcome,
        OutcomeStatus::Success,
        false,
        "Operation data.Show(greeting) succeeded:\nhello world",
    );
    assert_eq!(progress, ["Running data.Show...", "Finished data.Show"]);
    let seen = data.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "data");
    let kwargs: Value = serde_json::from_str(&seen[0].1).expect("kwargs are JSON");
    assert_eq!(kwargs, serde_json::json!({"name": "greeting"}));

    let data = FakeData::new(Ok(r#"{"a": [1, 2], "b": null}"#));
    let (outcome, _) = run_with("data.Show", r#"{"name": "cfg"}"#, data);
    assert_outcome(
        &outcome,
        OutcomeStatus::Success,
        false,
        "Operation data.Show(cfg) succeeded:\n{\"a\":[1,2],\"b\":null}",
    );

    let data = FakeData::new(Err("Data not found: cfg"));
    let (outcome, _) = run_with("data.Show", r#"{"name": "cfg"}"#, data);
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert!(
        outcome.output.starts_with("Operation data.Show failed:\n"),
        "{}",
        outcome.output
    );
    assert!(
        outcome.output.contains("Data not found: cfg"),
        "{}",
        outcome.output
    );

    let data = FakeData::new(Ok("{not json"));
    let (outcome, _) = run_with("data.Show", r#"{"name": "cfg"}"#, data);
    assert_eq!(outcome.status, OutcomeStatus::Failed);
}

#[test]
fn run_success_with_stdout_and_stderr() {
    let (outcome, progress) = run(
        "command.Run",
        r#"{"[args]": ["echo hello; echo oops >&2"]}"#,
    );
    let expected =
        "Operation Run(\"echo hello; echo oops >&2\") succeeded (changed):\nhello\nStderr:\noops";
    assert_outcome(&outcome, OutcomeStatus::Success, true, expected);
    assert_eq!(
        progress.first().map(String::as_str),
        Some("Running command.Run...")
    );
    assert_eq!(
        progress.last().map(String::as_str),
        Some("Finished command.Run")
    );
    assert!(progress.iter().any(|m| m == "hello") && progress.iter().any(|m| m == "oops"));
}

#[test]
fn run_failure_exit_code_and_signal() {
    let (outcome, progress) = run("command.Run", r#"{"command": "echo partial; exit 3"}"#);
    let expected = "Operation Run(\"echo partial; exit 3\") failed (changed):\npartial\nCommand failed with return code 3";
    assert_outcome(&outcome, OutcomeStatus::Failed, true, expected);
    assert_eq!(
        progress.last().map(String::as_str),
        Some("Finished command.Run")
    );

    let (outcome, _) = run("command.Run", r#"{"command": "kill -9 $$"}"#);
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert!(
        outcome
            .output
            .ends_with("Command failed with return code -9"),
        "{}",
        outcome.output
    );
}

#[test]
fn run_list_form_and_direct_string() {
    let (outcome, _) = run(
        "command.Run",
        r#"{"command": ["printf", "%s|", "a b", "it's"]}"#,
    );
    let expected =
        "Operation Run(\"['printf', '%s|', 'a b', \"it's\"]\") succeeded (changed):\na b|it's|";
    assert_outcome(&outcome, OutcomeStatus::Success, true, expected);

    // shell=false with a string runs that program (no shell, no word splitting).
    let (outcome, _) = run("command.Run", r#"{"[args]": ["true"], "shell": false}"#);
    assert_outcome(
        &outcome,
        OutcomeStatus::Success,
        true,
        "Operation Run(\"true\") succeeded (changed):\n",
    );
    let (outcome, _) = run("command.Run", r#"{"command": "echo x", "shell": false}"#);
    assert_eq!(outcome.status, OutcomeStatus::Failed);
    assert!(
        outcome.output.starts_with(
            "Operation command.Run failed:\nFailed to execute command 'command.Run':\n"
        )
    );

    let (outcome, _) = run("command.Run", r#"{"command": []}"#);
    assert!(
        outcome.output.ends_with("command must not be empty"),
        "{}",
        outcome.output
    );
}

#[test]
fn run_stdin_env_and_cwd() {
    let (outcome, _) = run(
        "command.Run",
        r#"{"command": "cat; echo", "stdin": "from stdin"}"#,
    );
    assert!(
        outcome.output.ends_with(":\nfrom stdin"),
        "{}",
        outcome.output
    );

    let data =
        r#"{"command": "echo $A $B $C; pwd", "env": {"A": 1, "B": true, "C": "c"}, "cwd": "/tmp"}"#;
    let (outcome, _) = run("command.Run", data);
    assert!(
        outcome.output.ends_with(":\n1 True c\n/tmp"),
        "{}",
        outcome.output
    );

    let (outcome, _) = run("command.Run", r#"{"command": "true", "env": {"A": null}}"#);
    assert!(
        outcome
            .output
            .ends_with("Environment variable A has invalid type"),
        "{}",
        outcome.output
    );
}

#[test]
fn run_in_background_without_waiting() {
    let data =
        r#"{"command": "true", "wait": false, "capture_stdout": false, "capture_stderr": false}"#;
    let (outcome, _) = run("command.Run", data);
    assert_outcome(
        &outcome,
        OutcomeStatus::Success,
        false,
        "Operation Run(\"true &\") succeeded:\n$ true &",
    );

    let (outcome, _) = run("command.Run", r#"{"command": "true", "wait": false}"#);
    assert!(
        outcome
            .output
            .ends_with("Cannot capture output if not waiting for command to finish")
    );
}

#[test]
fn run_as_another_user() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let (outcome, _) = run(
        "command.Run",
        r#"{"command": "id -u; id -g; echo $HOME", "user": "nobody"}"#,
    );
    assert_eq!(outcome.status, OutcomeStatus::Success, "{}", outcome.output);
    let (uid, gid, home) = command::lookup_user("nobody").expect("nobody exists");
    let expected = format!(
        "Operation Run(\"id -u; id -g; echo $HOME\" as nobody) succeeded (changed):\n{uid}\n{gid}\n{home}"
    );
    assert_eq!(outcome.output, expected);

    let (outcome, _) = run(
        "command.Run",
        r#"{"command": "true", "user": "no-such-user-here"}"#,
    );
    assert!(
        outcome.output.contains("name not found"),
        "{}",
        outcome.output
    );
}

#[test]
fn run_streams_lines_in_order() {
    let script = "for i in 1 2 3 4 5; do echo line$i; sleep 0.02; done; printf tail";
    let (outcome, progress) = run(
        "command.Run",
        &serde_json::json!({ "command": script }).to_string(),
    );
    assert_eq!(outcome.status, OutcomeStatus::Success);
    let expected = [
        "Running command.Run...",
        "line1",
        "line2",
        "line3",
        "line4",
        "line5",
        "tail",
        "Finished command.Run",
    ];
    assert_eq!(progress, expected);
}

#[test]
fn run_caps_captured_output_and_progress_lines() {
    let script = "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo end";
    let (outcome, progress) = run(
        "command.Run",
        &serde_json::json!({ "command": script }).to_string(),
    );
    assert_eq!(outcome.status, OutcomeStatus::Success);
    assert!(
        outcome.output.len() < CAPTURE_LIMIT + 1024,
        "{}",
        outcome.output.len()
    );
    assert!(outcome.output.ends_with(&format!(
        "(output truncated: only the first {CAPTURE_LIMIT} bytes were kept)"
    )));
    assert!(progress.iter().all(|m| m.len() <= PROGRESS_LINE_LIMIT));
    assert_eq!(progress[1], "a".repeat(PROGRESS_LINE_LIMIT));
    assert_eq!(progress[2], "end");
}

/// True when `pid` is gone (or only a zombie left to an init that does not reap).
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Starts `script`, waits for its first output line, cancels it with `how`; returns the first
/// line, the outcome and the time cancellation took.
fn cancel_after_first_line(script: &str, close_instead: bool) -> (String, Outcome, Duration) {
    smol::block_on(async {
        let (tx, rx) = async_channel::unbounded();
        let (cancel_tx, cancel) = async_channel::bounded(1);
        let req = request(
            "command.Run",
            &serde_json::json!({ "command": script }).to_string(),
        );
        let task = smol::spawn(run_operation(req, tx, FakeData::new(Err("none")), cancel));
        assert_eq!(
            rx.recv().await.expect("progress").message,
            "Running command.Run..."
        );
        let first = rx
            .recv()
            .await
            .expect("first line streamed while running")
            .message;
        let started = Instant::now();
        if close_instead {
            drop(cancel_tx);
        } else {
            cancel_tx.send(()).await.expect("cancel");
        }
        let outcome = future::or(async { Some(task.await) }, async {
            smol::Timer::after(Duration::from_secs(5)).await;
            None
        })
        .await
        .expect("cancellation returns within 5 s");
        (first, outcome, started.elapsed())
    })
}

#[test]
fn cancel_kills_and_reaps_the_process() {
    let (first, outcome, took) = cancel_after_first_line("echo $$; exec sleep 30", false);
    let pid: i32 = first.parse().expect("pid line");
    assert_eq!(outcome.status, OutcomeStatus::Cancelled);
    assert!(outcome.changed);
    let expected = format!(
        "Operation Run(\"echo $$; exec sleep 30\") failed (changed):\n{pid}\nOperation cancelled"
    );
    assert_eq!(outcome.output, expected);
    assert!(took < Duration::from_secs(5));
    // Reaped by us: the pid no longer exists at all.
    // SAFETY: kill with signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    assert_eq!(rc, -1, "process {pid} still exists");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ESRCH)
    );
}

#[test]
fn closing_the_cancel_channel_kills_the_process_group() {
    let (first, outcome, _) = cancel_after_first_line("sleep 30 & echo $$ $!; wait", true);
    assert_eq!(outcome.status, OutcomeStatus::Cancelled);
    let pids: Vec<i32> = first.split(' ').map(|p| p.parse().expect("pid")).collect();
    // The background grandchild dies with the shell, so nothing holds the pipes open.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|&pid| process_gone(pid)) {
        assert!(
            Instant::now() < deadline,
            "processes {pids:?} survived cancellation"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cancel_before_completion_of_simple_operations() {
    smol::block_on(async {
        let (tx, _rx) = async_channel::unbounded();
        let (cancel_tx, cancel) = async_channel::bounded(1);
        cancel_tx.send(()).await.expect("cancel");
        let req = request("echo.Echo", r#"{"message": "hi"}"#);
        let outcome = run_operation(req, tx, FakeData::new(Err("none")), cancel).await;
        assert_outcome(
            &outcome,
            OutcomeStatus::Cancelled,
            false,
            "Operation echo.Echo failed:\nOperation cancelled",
        );
    });
}

#[test]
fn closed_progress_channel_is_ignored() {
    smol::block_on(async {
        let (tx, rx) = async_channel::unbounded();
        drop(rx);
        let (_keep, cancel) = async_channel::bounded(1);
        let req = request("command.Run", r#"{"command": "echo a; echo b"}"#);
        let outcome = run_operation(req, tx, FakeData::new(Err("none")), cancel).await;
        assert_eq!(
            outcome.output,
            "Operation Run(\"echo a; echo b\") succeeded (changed):\na\nb"
        );
    });
}

#[test]
fn operation_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (tx, _rx) = async_channel::unbounded();
    let (_keep, cancel) = async_channel::bounded(1);
    let fut = run_operation(
        request("noop.Noop", "{}"),
        tx,
        FakeData::new(Err("none")),
        cancel,
    );
    assert_send(&fut);
}

#[test]
fn python_repr_of_strings() {
    assert_eq!(py_repr("abc"), "'abc'");
    assert_eq!(py_repr("it's"), "\"it's\"");
    assert_eq!(py_repr("a'b\"c"), "'a\\'b\"c'");
    assert_eq!(py_repr("x\\y\n"), "'x\\\\y\\n'");
}
