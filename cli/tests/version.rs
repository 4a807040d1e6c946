//! `switchboard --version` names the crate's version and the git revision of the build.

use std::path::Path;
use std::process::Command;

/// What git says in this repository (`None` without git or outside a checkout of it).
fn git(args: &[&str]) -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn is_revision(token: &str) -> bool {
    let hash = token.strip_suffix("-dirty").unwrap_or(token);
    hash.len() == 12
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn version_names_the_git_revision() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--version")
        .output()
        .expect("run switchboard --version");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let line = stdout.trim_end();
    let rest = line
        .strip_prefix(concat!("switchboard ", env!("CARGO_PKG_VERSION"), " ("))
        .unwrap_or_else(|| panic!("name and version first: {line:?}"));
    let rev = rest
        .strip_suffix(')')
        .unwrap_or_else(|| panic!("the revision in parentheses: {line:?}"));
    // A revision given to the build (read at run time: cargo hands the build script's value
    // to this crate's compilation too) is printed as it is.
    if let Ok(given) = std::env::var("SWITCHBOARD_GIT_REV")
        && !given.trim().is_empty()
    {
        assert_eq!(rev, given.trim(), "{line:?}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.canonicalize().ok());
    let top =
        git(&["rev-parse", "--show-toplevel"]).and_then(|t| Path::new(&t).canonicalize().ok());
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) if top.is_some() && top == root => {
            // A checkout: the commit the binary was built from, which is HEAD (the build
            // reruns when HEAD moves), perhaps marked dirty.
            assert!(is_revision(rev), "{line:?}");
            assert_eq!(rev.strip_suffix("-dirty").unwrap_or(rev), head, "{line:?}");
        }
        _ => assert_eq!(rev, "unknown", "no git here: {line:?}"),
    }
}
