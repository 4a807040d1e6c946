//! The web console in a real browser: Debian's headless Chromium, driven over WebDriver
//! (chromedriver), against `switchboard serve` with a real `switchboard agent`. The browser
//! logs in with password + TOTP, sees the agent in the live list, sees a channel created
//! elsewhere appear from the event feed, runs a command on the agent and reads its result,
//! opens the agent's live metrics in two tabs (one source on the agent, two sinks in
//! `switchboard stream list`; the second tab, over https and wss on the same port, resumes the
//! session by its cookie), runs a shell in the terminal view, follows a file on the agent from
//! the CLI, and sees the agent go away when it stops.
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (`scripts/test.sh` installs Debian's
//! `chromium` and `chromium-driver`); without them the test fails, unless
//! `SWITCHBOARD_SKIP_BROWSER=1` (then it says so loudly and passes).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Proc, code_now, free_port, run, serve_first_run, switchboard, wait_for};
use serde_json::{Value, json};
use switchboard_core::kv::codec::KvRequest;

/// A minimal WebDriver client (one request per connection).
struct Driver {
    port: u16,
    session: String,
}

fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("chromedriver");
    tcp.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).expect("write");
    // Read the head, then exactly Content-Length bytes (chromedriver keeps the connection).
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0usize);
            if body.len() >= len {
                return serde_json::from_str(&body[..len])
                    .unwrap_or_else(|e| panic!("webdriver answer {body:?}: {e}"));
            }
        }
        let n = tcp.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "chromedriver closed: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

impl Driver {
    fn start(port: u16) -> Driver {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run",
                         // The hub's certificate is its own CA's: tab 2 uses https/wss.
                         "--ignore-certificate-errors"]
            }
        }}});
        let v = http(port, "POST", "/session", Some(&caps));
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Driver { port, session }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        );
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        );
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn script(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }

    /// Waits until `js` returns a truthy value; returns it.
    fn until(&self, what: &str, js: &str) -> Value {
        wait_for(Duration::from_secs(30), || {
            let v = self.script(js);
            let truthy = !(v.is_null() || v == json!(false) || v == json!(""));
            truthy.then_some(v)
        })
        .unwrap_or_else(|| {
            let page = self.script("return document.body.innerText");
            panic!("browser: {what} did not happen; the page says:\n{page}")
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            http(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            )
        });
    }
}

/// `switchboard stream list` against the hub of `data`.
fn stream_list(data: &Path) -> String {
    let mut c = switchboard();
    c.arg("stream").arg("--data-dir").arg(data).arg("list");
    let (rc, out, err) = run(c, Duration::from_secs(60));
    assert_eq!(rc, 0, "stream list:\n{out}\n{err}");
    out
}

/// Saves the current tab as a PNG under the test's target directory (for a look by eye).
fn screenshot(d: &Driver, name: &str) {
    use base64::Engine as _;
    let v = d.cmd("GET", "/screenshot", None);
    let png = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("a screenshot"))
        .expect("base64");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// The console's terminal emulator (terminal.js) on byte vectors, in the page: each screen
/// as text, rows joined by `|`, trailing blanks trimmed.
fn terminal_vectors(d: &Driver) {
    let cases: &[(&str, &str)] = &[
        ("ab\r\ncd", "ab|cd|"),
        // Wrap at the last column, then scroll when the bottom line feeds.
        ("12345678x\r\ny\r\nz", "x|y|z"),
        ("hello\x1b[1;3Hxy", "hexyo||"),
        ("hello\x1b[3D\x1b[K", "he||"),
        ("hello\x1b[1;3H\x1b[1K", "   lo||"),
        ("abcdef\x1b[1;2H\x1b[2P", "adef||"),
        ("abc\x1b[1;2H\x1b[2@", "a  bc||"),
        ("a\r\nb\r\nc\x1b[2J", "||"),
        // Full-screen programs: the alternate screen restores what was there.
        ("sh$ \x1b[?1049h\x1b[Hvim\x1b[?1049lok", "sh$ ok||"),
        ("1\r\n2\r\n3\x1b[1;1H\x1b[L", "|1|2"),
        // UTF-8 split across writes.
        ("caf\u{e9}", "caf\u{e9}||"),
    ];
    for (input, want) in cases {
        let js = format!(
            "const t = new Terminal(document.createElement('pre'), 8, 3); const b = new TextEncoder().encode({}); t.write(b.subarray(0, b.length - 1)); t.write(b.subarray(b.length - 1)); return t.text().split('\\n').map((l) => l.trimEnd()).join('|');",
            serde_json::to_string(input).expect("json")
        );
        let got = d.script(&js);
        assert_eq!(got.as_str(), Some(*want), "terminal on {input:?}");
    }
}

#[test]
fn the_console_in_headless_chromium() {
    let browser =
        Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists();
    if !browser {
        if std::env::var_os("SWITCHBOARD_SKIP_BROWSER").is_some() {
            eprintln!("SKIPPED: no chromium/chromedriver and SWITCHBOARD_SKIP_BROWSER is set");
            return;
        }
        panic!(
            "/usr/bin/chromium and /usr/bin/chromedriver are needed (scripts/test.sh installs them)"
        );
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let native_port = free_port();
    let web = format!("127.0.0.1:{}", free_port());
    let kv = format!("127.0.0.1:{}", free_port());
    let native = format!("127.0.0.1:{native_port}");
    let first = serve_first_run(
        tmp.path(),
        &[
            "--listen",
            &native,
            "--kv-listen",
            &kv,
            "--web-listen",
            &web,
        ],
        "web face on",
    );
    let (hub, data, password, secret) = (first.hub, first.data, first.password, first.totp_secret);
    let admin = |args: &[&str]| {
        let mut c = switchboard();
        c.arg("admin").arg("--data-dir").arg(&data).args(args);
        let (rc, out, err) = run(c, Duration::from_secs(60));
        assert_eq!(rc, 0, "admin {args:?}:\n{out}\n{err}");
        out
    };
    let creds = tmp.path().join("a1");
    admin(&[
        "enroll-agent",
        "a1",
        "--out",
        creds.to_str().expect("utf-8"),
    ]);
    let mut a = switchboard();
    a.args(["agent", "--manager", &format!("127.0.0.1:{native_port}")])
        .args(["--id", "a1", "--server-name", "localhost", "--secret-file"])
        .arg(creds.join("secret"))
        .arg("--ca")
        .arg(creds.join("ca.pem"))
        .arg("--cert")
        .arg(creds.join("agent.pem"))
        .arg("--key")
        .arg(creds.join("agent.key"));
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    a.arg("--tail-dir").arg(&logs);
    let agent = Proc::spawn("switchboard agent", a, tmp.path().join("agent.log"));

    let wd_port = free_port();
    let mut wd = Command::new("/usr/bin/chromedriver");
    wd.arg(format!("--port={wd_port}"));
    let _chromedriver = Proc::spawn("chromedriver", wd, tmp.path().join("chromedriver.log"));
    wait_for(Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", wd_port)).ok()
    })
    .expect("chromedriver listens");
    let d = Driver::start(wd_port);
    d.go(&format!("http://{web}/"));
    d.until(
        "the console connects",
        "return document.getElementById('status').textContent === 'connected'",
    );
    d.type_into("#login-user", "admin");
    d.type_into("#login-password", "not the password");
    d.type_into("#login-totp", &format!("{:06}", code_now(&secret)));
    d.click("#login-submit");
    d.until(
        "a wrong password is reported",
        "return document.getElementById('login-error').textContent.includes('INVALID_PASSWORD')",
    );
    // A fresh code (each is single-use): wait for the next 30 s step.
    let used = code_now(&secret);
    wait_for(Duration::from_secs(35), || {
        (code_now(&secret) != used).then_some(())
    })
    .expect("next TOTP step");
    d.type_into("#login-password", &password);
    d.type_into("#login-totp", &format!("{:06}", code_now(&secret)));
    d.click("#login-submit");
    d.until(
        "login",
        "return !document.getElementById('main-view').hidden",
    );
    d.until(
        "the agent is listed as connected",
        "const li = document.querySelector('#agents li[data-agent=\"a1\"]'); return li && li.className === 'connected'",
    );
    // A channel created elsewhere (the KV control front, as the admin: uid 1) appears live.
    let mut req = bytes::BytesMut::new();
    KvRequest::Create { uid: 1 }.encode(false, &mut req);
    let mut tcp = TcpStream::connect(&kv).expect("kv");
    tcp.write_all(&req).expect("kv write");
    let mut status = [0u8; 8];
    tcp.read_exact(&mut status).expect("kv reply");
    d.until(
        "the new channel appears from the event feed",
        "return document.querySelectorAll('#channels li').length === 1",
    );
    // A command with its result.
    d.type_into("#run-agent", "a1");
    d.type_into("#run-operation", "echo.Echo");
    d.type_into("#run-data", r#"{"[args]": ["hello from the browser"]}"#);
    d.click("#run-submit");
    d.until(
        "the command's result",
        "return document.getElementById('run-state').textContent.startsWith('finished') && document.getElementById('run-output').textContent",
    );
    let output = d.script("return document.getElementById('run-output').textContent");
    assert!(
        output
            .as_str()
            .is_some_and(|o| o.ends_with("\nhello from the browser")),
        "{output}"
    );
    let state = d.script("return document.getElementById('run-state').textContent");
    assert!(
        state.as_str().is_some_and(|s| s.contains("SUCCESS")),
        "{state}"
    );
    // Streams: live metrics in two tabs of the same browser share one source on the agent.
    d.type_into("#stream-agent", "a1");
    d.type_into("#metrics-interval", "200");
    d.click("#metrics-open");
    d.until(
        "tab 1 draws the agent's metrics",
        "return Number(document.getElementById('metrics-chart').dataset.frames) >= 3 && document.getElementById('metrics-figures').textContent",
    );
    let first_tab = d.cmd("GET", "/window", None);
    let second = d.cmd("POST", "/window/new", Some(json!({"type": "tab"})));
    let second_tab = second["handle"].as_str().expect("a new tab").to_owned();
    d.cmd("POST", "/window", Some(json!({"handle": second_tab})));
    // Tab 2 over TLS (the same port): its console runs on wss.
    d.go(&format!("https://{web}/"));
    d.until(
        "tab 2 resumes the session by its cookie (no second login)",
        "return !document.getElementById('main-view').hidden",
    );
    d.type_into("#stream-agent", "a1");
    d.type_into("#metrics-interval", "200");
    d.click("#metrics-open");
    d.until(
        "tab 2 joins the same metrics",
        "return Number(document.getElementById('metrics-chart').dataset.frames) >= 3 && document.getElementById('metrics-state').textContent.includes('shared')",
    );
    let list = stream_list(&data);
    let metrics: Vec<&str> = list.lines().filter(|l| l.contains(" metrics ")).collect();
    assert_eq!(metrics.len(), 1, "one metrics source for two tabs:\n{list}");
    assert!(metrics[0].contains("2 sink(s)"), "two sinks:\n{list}");
    d.click("#streams-refresh");
    d.until(
        "the console lists the shared group",
        "const li = document.querySelector('#streams-list li[data-kind=\"metrics\"]'); return li && li.dataset.sinks === '2'",
    );
    screenshot(&d, "console-metrics.png");
    terminal_vectors(&d);
    let proto = d.script("return location.protocol");
    assert_eq!(proto, json!("https:"), "tab 2 is on TLS");
    // A shell in the terminal view of tab 2 (wss): keystrokes in, the shell's output out.
    d.click("#shell-open");
    d.until(
        "the shell opens",
        "return document.getElementById('shell-state').textContent.includes('a shell on a1')",
    );
    d.until(
        "the shell prints something (its prompt)",
        "return Number(document.getElementById('terminal').dataset.bytes) > 0",
    );
    let term = d.element("#terminal");
    d.cmd(
        "POST",
        &format!("/element/{term}/value"),
        Some(json!({"text": "echo sum-$((6*7))\u{E007}"})),
    );
    d.until(
        "the shell's answer in the terminal",
        "return document.getElementById('terminal').textContent.includes('sum-42')",
    );
    screenshot(&d, "console-shell.png");
    let list = stream_list(&data);
    assert!(
        list.lines()
            .any(|l| l.contains(" shell ") && l.contains("1 sink(s)")),
        "{list}"
    );
    d.click("#shell-close");
    d.until(
        "the shell closes",
        "return document.getElementById('shell-state').textContent === 'closed'",
    );
    wait_for(Duration::from_secs(20), || {
        (!stream_list(&data).contains(" shell ")).then_some(())
    })
    .expect("the shell stream is gone from the hub");
    // A file followed from the CLI through the same hub (native TLS), from its start.
    let app_log = logs.join("app.log");
    std::fs::write(&app_log, "line one\nline two\n").expect("write");
    let mut tail = switchboard();
    tail.arg("stream").arg("--data-dir").arg(&data).args([
        "open",
        "--agent",
        "a1",
        "tail",
        app_log.to_str().expect("utf-8"),
        "--offset",
        "0",
    ]);
    let tail = Proc::spawn("stream open tail", tail, tmp.path().join("tail.out"));
    wait_for(Duration::from_secs(20), || {
        tail.output().contains("line two").then_some(())
    })
    .unwrap_or_else(|| panic!("the tail shows the file:\n{}", tail.output()));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&app_log)
        .and_then(|mut f| f.write_all(b"line three, appended\n"))
        .expect("append");
    wait_for(Duration::from_secs(20), || {
        tail.output().contains("line three, appended").then_some(())
    })
    .unwrap_or_else(|| panic!("the tail follows the file:\n{}", tail.output()));
    assert!(stream_list(&data).contains(" tail "), "the tail is listed");
    tail.interrupt();
    // Tab 1 closes its viewer: the source stays for tab 2.
    d.cmd("POST", "/window", Some(json!({"handle": first_tab})));
    d.click("#metrics-close");
    wait_for(Duration::from_secs(20), || {
        stream_list(&data)
            .lines()
            .any(|l| l.contains(" metrics ") && l.contains("1 sink(s)"))
            .then_some(())
    })
    .expect("one sink left on the metrics source");
    d.cmd("POST", "/window", Some(json!({"handle": second_tab})));
    // The agent stops: the list follows, and the open metrics end with "source gone".
    agent.interrupt();
    d.until(
        "tab 2's metrics end with the source",
        "return document.getElementById('metrics-state').textContent.includes('SOURCE_GONE')",
    );
    d.until(
        "the agent is shown disconnected",
        "const li = document.querySelector('#agents li[data-agent=\"a1\"]'); return li && li.className === 'disconnected'",
    );
    let events = d.script("return document.getElementById('events').children.length");
    assert!(events.as_u64().is_some_and(|n| n >= 4), "{events}");
    drop(hub);
}
