//! First run prints the admin's password and TOTP secret once; `admin login` answers with the
//! precise failure or keeps a session cookie for the later admin commands.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Proc, free_port, run, switchboard, wait_for};
use switchboard_core::auth::totp;

fn code_now(secret: &[u8]) -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    totp::code_at(secret, now)
}

#[test]
fn first_run_credentials_and_admin_login() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("hub");
    let mut c = switchboard();
    c.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--kv-listen",
        "off",
        "--web-listen",
        "off",
        "--relay",
        "off",
        "--data-dir",
    ]);
    c.arg(&data);
    let hub = Proc::spawn("switchboard serve", c, tmp.path().join("serve.log"));
    let out = wait_for(Duration::from_secs(30), || {
        let o = hub.output();
        (o.contains("hub listening") && o.contains("base32")).then_some(o)
    })
    .unwrap_or_else(|| panic!("hub did not start\n{}", hub.tail(30)));
    let password = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .expect("password printed")
        .to_string();
    let b32 = out
        .lines()
        .find_map(|l| l.split("base32: ").nth(1))
        .expect("secret printed")
        .trim_end_matches(')')
        .to_string();
    let secret = totp::base32_decode(&b32).expect("base32");
    assert!(out.contains("otpauth://totp/Switchboard:admin?secret="));

    let login = |pw: &str, code: u32| {
        let mut c = switchboard();
        c.arg("admin").arg("--data-dir").arg(&data);
        c.args([
            "login",
            "--user",
            "admin",
            "--password",
            pw,
            "--totp",
            &code.to_string(),
        ]);
        run(c, Duration::from_secs(30))
    };
    let code = code_now(&secret);
    let (rc, _, err) = login("not the password", code);
    assert_eq!(rc, 2, "{err}");
    assert!(err.contains("INVALID_PASSWORD"), "{err}");
    let (rc, out, err) = login(&password, code);
    assert_eq!(rc, 0, "{out}\n{err}");
    assert!(data.join("session.cookie").exists());
    // The same code again is refused (single use).
    let (rc, _, err) = login(&password, code);
    assert_eq!(rc, 2);
    assert!(err.contains("INVALID_TOKEN"), "{err}");
    // Later admin commands run in the session.
    let mut c = switchboard();
    c.arg("admin").arg("--data-dir").arg(&data).arg("users");
    let (rc, out, err) = run(c, Duration::from_secs(30));
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("admin"), "{out}");
    assert!(!err.contains("expired"), "{err}");
    // A second start prints nothing again.
    drop(hub);
    let mut c = switchboard();
    c.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--kv-listen",
        "off",
        "--web-listen",
        "off",
        "--relay",
        "off",
        "--data-dir",
    ]);
    c.arg(&data);
    let hub = Proc::spawn("switchboard serve again", c, tmp.path().join("serve2.log"));
    let out = wait_for(Duration::from_secs(30), || {
        let o = hub.output();
        o.contains("hub listening").then_some(o)
    })
    .unwrap_or_else(|| panic!("hub did not restart\n{}", hub.tail(30)));
    assert!(!out.contains("password:"), "credentials are shown once");
}
