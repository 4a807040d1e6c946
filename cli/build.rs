//! Puts the git revision into `switchboard --version`: `SWITCHBOARD_GIT_REV` is the commit's
//! 12-digit abbreviation, with `-dirty` when tracked files had uncommitted changes, or
//! `unknown` without git (a source tarball). The environment variable of the same name, when
//! set, is used as it is (for builds from a tarball that know their revision). Never fails the
//! build.
//!
//! It runs again when HEAD moves (HEAD itself, the branch it points to, packed refs; paths
//! asked of git, so a worktree, whose `.git` is a file, works too) and when a source of the
//! binary changes (which rebuilds the binary anyway), so `-dirty` follows the sources.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates whose sources make the binary, relative to the workspace root.
const SOURCES: &[&str] = &[
    "cli/src",
    "core/src",
    "proto",
    "runtime-smol/src",
    "runtime-mio/src",
    "Cargo.toml",
    "Cargo.lock",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SWITCHBOARD_GIT_REV");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    if let Some(root) = manifest.parent() {
        for s in SOURCES {
            let p = root.join(s);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    let rev = match std::env::var("SWITCHBOARD_GIT_REV") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_owned(),
        _ => git_revision(&manifest).unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=SWITCHBOARD_GIT_REV={rev}");
}

/// The output of `git args...` run in `dir`, trimmed; `None` when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
}

fn git_revision(dir: &Path) -> Option<String> {
    // Only this workspace's own repository: sources unpacked inside another one have none.
    let top = PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"])?);
    let root = dir.parent()?;
    if top.canonicalize().ok()? != root.canonicalize().ok()? {
        return None;
    }
    let hash = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    if hash.is_empty() {
        return None;
    }
    // What to watch: HEAD, the ref it names (absent when detached) and packed refs, each only
    // if it exists (cargo reruns a script at every build for a missing path).
    let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(r) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(r);
    }
    for name in watch {
        if let Some(p) = git(dir, &["rev-parse", "--git-path", &name]) {
            let p = dir.join(p); // relative paths are relative to `dir`
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    let dirty =
        git(dir, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}
