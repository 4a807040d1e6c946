//! First run prints the admin's password and TOTP secret once; `admin login` answers with the
//! precise failure or keeps a session cookie for the later admin commands.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::Duration;

use common::{Proc, code_now, free_port, run, serve_first_run, switchboard, wait_for};

#[test]
fn first_run_credentials_and_admin_login() {
    let tmp = tempfile::tempdir().expect("tmp");
    let first = serve_first_run(
        tmp.path(),
        &["--kv-listen", "off", "--web-listen", "off"],
        "hub listening",
    );
    let (hub, data, password, secret) = (first.hub, first.data, first.password, first.totp_secret);
    let out = hub.output();
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
