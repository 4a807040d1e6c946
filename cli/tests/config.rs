//! The configuration file: `config check`, `config show`, `serve --config`, the data dir's
//! default file, flags overriding the file, the example the first `serve` writes.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::Duration;

use common::{Proc, free_port, run, switchboard, wait_for};

fn sb(args: &[&str]) -> (i32, String, String) {
    let mut c = switchboard();
    c.args(args);
    run(c, Duration::from_secs(60))
}

#[test]
fn check_names_the_key_and_its_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = tmp.path().join("good.toml");
    std::fs::write(
        &good,
        "[serve]\nlisten = \"127.0.0.1:1\"\nping_interval = 7\n\n[agent]\nmanager = \"h:1\"\ntail-dir = [\"/tmp\", \"/var/log\"]\nno-shell = true\n",
    )
    .expect("write");
    let (rc, out, err) = sb(&["config", "check", good.to_str().expect("utf-8")]);
    assert_eq!(rc, 0, "{out}\n{err}");
    assert!(
        out.contains("[serve]: 2 setting(s)") && out.contains("[agent]: 3 setting(s)"),
        "{out}"
    );
    for (text, want) in [
        (
            "[serve]\nlisten = \"x:1\"\nlisen = 3\n",
            ":3: unknown key \"lisen\" in [serve]",
        ),
        (
            "[serve]\n\nping-interval = \"abc\"\n",
            ":3: \"ping-interval\" in [serve]: invalid value",
        ),
        ("listen = 1\n", ":1: \"listen\" is not a command's table"),
        (
            "[agent]\nno-shell = \"yes\"\n",
            ":2: \"no-shell\" in [agent]: true or false expected",
        ),
    ] {
        let f = tmp.path().join("bad.toml");
        std::fs::write(&f, text).expect("write");
        let (rc, out, err) = sb(&["config", "check", f.to_str().expect("utf-8")]);
        assert_ne!(rc, 0, "{text:?} passed:\n{out}");
        assert!(err.contains(want), "{text:?}: wanted {want:?} in:\n{err}");
    }
}

#[test]
fn serve_takes_its_file_and_flags_override_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("hub");
    let from_file = format!("127.0.0.1:{}", free_port());
    let cfg = tmp.path().join("sb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[serve]\nlisten = \"{from_file}\"\nkv-listen = \"off\"\nweb-listen = \"off\"\nrelay = \"off\"\nping-interval = 9\n"
        ),
    )
    .expect("write");
    let start = |extra: &[&str], log: &str| {
        let _ = std::fs::remove_file(data.join("hub.addr"));
        let mut c = switchboard();
        c.args(["serve", "--config"])
            .arg(&cfg)
            .args(extra)
            .arg("--data-dir")
            .arg(&data);
        let p = Proc::spawn("serve", c, tmp.path().join(log));
        let addr = wait_for(Duration::from_secs(30), || {
            std::fs::read_to_string(data.join("hub.addr")).ok()
        })
        .unwrap_or_else(|| panic!("serve did not start:\n{}", p.tail(20)));
        (p, addr.trim().to_string())
    };
    let (p, addr) = start(&[], "a.log");
    assert_eq!(addr, from_file, "the file's listen address");
    drop(p);
    let from_flag = format!("127.0.0.1:{}", free_port());
    let (p, addr) = start(&["--listen", &from_flag], "b.log");
    assert_eq!(addr, from_flag, "the flag overrides the file");
    drop(p);
    // show: where each value comes from.
    let (rc, out, err) = sb(&[
        "config",
        "show",
        "--config",
        cfg.to_str().expect("utf-8"),
        "serve",
    ]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains("ping-interval = \"9\"  # file, line 6"),
        "{out}"
    );
    assert!(
        out.contains("event-retention = \"1000000\"  # default"),
        "{out}"
    );
    // The first serve wrote an example next to its data; it checks.
    let example = data.join("switchboard.toml.example");
    let text = std::fs::read_to_string(&example).expect("the example");
    assert!(
        text.contains("[serve]") && text.contains("# ping-interval = 30"),
        "{text}"
    );
    let (rc, out, err) = sb(&["config", "check", example.to_str().expect("utf-8")]);
    assert_eq!(rc, 0, "{out}\n{err}");
    // DATA_DIR/switchboard.toml is read without --config.
    let default_addr = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        data.join("switchboard.toml"),
        format!("[serve]\nlisten = \"{default_addr}\"\nkv-listen = \"off\"\nweb-listen = \"off\"\nrelay = \"off\"\n"),
    )
    .expect("write");
    let _ = std::fs::remove_file(data.join("hub.addr"));
    let mut c = switchboard();
    c.arg("serve").arg("--data-dir").arg(&data);
    let p = Proc::spawn("serve", c, tmp.path().join("c.log"));
    let addr = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(data.join("hub.addr")).ok()
    })
    .unwrap_or_else(|| panic!("serve did not start:\n{}", p.tail(20)));
    assert_eq!(addr.trim(), default_addr, "the data dir's switchboard.toml");
}

#[test]
fn logs_can_be_json_lines() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("hub");
    let err = std::fs::File::create(tmp.path().join("err")).expect("file");
    let mut c = switchboard();
    c.args([
        "--log-format",
        "json",
        "serve",
        "--kv-listen",
        "off",
        "--web-listen",
        "off",
    ])
    .args([
        "--relay",
        "off",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
    ])
    .arg("--data-dir")
    .arg(&data)
    .stdout(std::process::Stdio::null())
    .stderr(err);
    let mut child = c.spawn().expect("serve");
    let up = wait_for(Duration::from_secs(30), || {
        data.join("hub.addr").exists().then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(up.is_some(), "serve did not start");
    let text = std::fs::read_to_string(tmp.path().join("err")).expect("stderr");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|v| v["message"] == "hub state loaded"
            && v["level"] == "INFO"
            && v["agents"] == 0),
        "{text}"
    );
}
