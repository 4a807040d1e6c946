//! `tail`: follows a file from an offset, surviving rotation (the path renamed away and a new
//! file created, or the file truncated), within the directories the agent allows. Lossless.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use switchboard_core::stream::EndCode;
use switchboard_proto as pb;

use super::{CHUNK, SourceCtl, SourceMsg, send_and_wait};

/// How often an idle tail looks for growth or rotation.
const POLL: Duration = Duration::from_millis(200);

/// Where to start: `None` is the end of the file.
pub(super) type Offset = Option<u64>;

/// The canonical path of the file an open names, if the agent allows it, and its offset.
pub(super) fn check(
    open: &pb::StreamOpen,
    dirs: &[PathBuf],
) -> Result<(PathBuf, Offset), (EndCode, String)> {
    let Some(path) = open.params.get("path") else {
        return Err((EndCode::Invalid, "tail needs a path parameter".into()));
    };
    let offset = match open.params.get("offset") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            (
                EndCode::Invalid,
                format!("offset must be a byte count, not {v:?}"),
            )
        })?),
    };
    if dirs.is_empty() {
        return Err((
            EndCode::Unauthorised,
            "this agent allows no tail (start it with --tail-dir DIR)".into(),
        ));
    }
    let file = allowed(Path::new(path), dirs)?;
    Ok((file, offset))
}

/// The canonical form of `path` if it lies inside one of `dirs` (symbolic links resolved).
fn allowed(path: &Path, dirs: &[PathBuf]) -> Result<PathBuf, (EndCode, String)> {
    let real = std::fs::canonicalize(path)
        .map_err(|e| (EndCode::Invalid, format!("{}: {e}", path.display())))?;
    let inside = dirs
        .iter()
        .any(|d| std::fs::canonicalize(d).is_ok_and(|d| real.starts_with(&d)));
    if !inside {
        return Err((
            EndCode::Unauthorised,
            format!(
                "{} is outside the directories this agent allows",
                path.display()
            ),
        ));
    }
    if !real.is_file() {
        return Err((
            EndCode::Invalid,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(real)
}

struct Followed {
    file: std::fs::File,
    inode: (u64, u64),
    pos: u64,
}

fn open_at(path: &Path, offset: Offset) -> std::io::Result<Followed> {
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let pos = offset.unwrap_or(meta.len()).min(meta.len());
    file.seek(SeekFrom::Start(pos))?;
    Ok(Followed {
        file,
        inode: (meta.dev(), meta.ino()),
        pos,
    })
}

pub(super) async fn run(
    id: u64,
    path: PathBuf,
    offset: Offset,
    dirs: Vec<PathBuf>,
    out: Sender<SourceMsg>,
    ctl: Receiver<SourceCtl>,
) {
    let end = |code, reason: String| {
        let out = out.clone();
        async move {
            let _ = out.send(SourceMsg::End { id, code, reason }).await;
        }
    };
    let p = path.clone();
    let mut f = match smol::unblock(move || open_at(&p, offset)).await {
        Ok(f) => f,
        Err(e) => return end(EndCode::SourceGone, format!("{}: {e}", path.display())).await,
    };
    loop {
        if ctl.is_closed() {
            return;
        }
        // Read what is there (blocking file I/O off the executor).
        let (back, chunk) = smol::unblock(move || {
            let mut buf = vec![0u8; CHUNK];
            let n = f.file.read(&mut buf);
            (
                f,
                n.map(|n| {
                    buf.truncate(n);
                    buf
                }),
            )
        })
        .await;
        f = back;
        match chunk {
            Ok(buf) if !buf.is_empty() => {
                f.pos += buf.len() as u64;
                if !send_and_wait(&out, id, 0, Bytes::from(buf)).await {
                    return;
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => return end(EndCode::SourceGone, format!("{}: {e}", path.display())).await,
        }
        // At the end: wait, then look for rotation or truncation.
        async_io::Timer::after(POLL).await;
        match std::fs::metadata(&path) {
            Ok(m) if (m.dev(), m.ino()) != f.inode => {
                // Rotated: the old file was read to its end above; follow the new one from 0.
                if let Err((code, why)) = allowed(&path, &dirs) {
                    return end(code, why).await;
                }
                let p = path.clone();
                match smol::unblock(move || open_at(&p, Some(0))).await {
                    Ok(n) => {
                        tracing::debug!(path = %path.display(), "tail: file rotated, following the new one");
                        f = n;
                    }
                    Err(e) => {
                        return end(EndCode::SourceGone, format!("{}: {e}", path.display())).await;
                    }
                }
            }
            Ok(m) if m.len() < f.pos => {
                // Truncated in place: start again from the beginning.
                let seek = f.file.seek(SeekFrom::Start(0));
                if let Err(e) = seek {
                    return end(EndCode::SourceGone, format!("{}: {e}", path.display())).await;
                }
                f.pos = 0;
            }
            Ok(_) => {}
            Err(_) => {} // between a rename and the new file: keep the old one, look again
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &str) -> pb::StreamOpen {
        let mut o = pb::StreamOpen {
            kind: "tail".into(),
            ..Default::default()
        };
        o.params.insert("path".into(), path.into());
        o
    }

    #[test]
    fn only_files_inside_the_allowed_directories() {
        let d = tempfile::tempdir().expect("dir");
        let inside = d.path().join("a.log");
        std::fs::write(&inside, "x").expect("write");
        let dirs = vec![d.path().to_path_buf()];
        assert!(check(&open(inside.to_str().expect("utf8")), &dirs).is_ok());
        let escape = format!("{}/../../etc/passwd", d.path().display());
        assert_eq!(
            check(&open(&escape), &dirs).err().map(|e| e.0),
            Some(EndCode::Unauthorised)
        );
        // A symbolic link inside pointing outside is outside.
        let link = d.path().join("l");
        std::os::unix::fs::symlink("/etc/hostname", &link).expect("symlink");
        assert_eq!(
            check(&open(link.to_str().expect("utf8")), &dirs)
                .err()
                .map(|e| e.0),
            Some(EndCode::Unauthorised)
        );
        assert_eq!(
            check(&open(inside.to_str().expect("utf8")), &[])
                .err()
                .map(|e| e.0),
            Some(EndCode::Unauthorised)
        );
    }

    #[test]
    fn follows_growth_rotation_and_truncation_in_order() {
        let d = tempfile::tempdir().expect("dir");
        let path = d.path().join("app.log");
        std::fs::write(&path, "one\n").expect("write");
        let (out, rx) = async_channel::unbounded();
        let (_ctl, ctl_rx) = async_channel::unbounded();
        let p = std::fs::canonicalize(&path).expect("canon");
        let task = smol::spawn(run(
            1,
            p,
            Some(0),
            vec![d.path().to_path_buf()],
            out,
            ctl_rx,
        ));
        let mut got = String::new();
        smol::block_on(async {
            let step = |want: &'static str| {
                let rx = rx.clone();
                async move {
                    let mut s = String::new();
                    while !s.ends_with(want) {
                        match rx.recv().await {
                            Ok(SourceMsg::Data { payload, ready, .. }) => {
                                s.push_str(std::str::from_utf8(&payload).expect("utf8"));
                                if let Some(r) = ready {
                                    let _ = r.send(()).await;
                                }
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                    s
                }
            };
            got += &step("one\n").await;
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"two\n"))
                .expect("append");
            got += &step("two\n").await;
            std::fs::rename(&path, d.path().join("app.log.1")).expect("rotate");
            std::fs::write(&path, "three\n").expect("new file");
            got += &step("three\n").await;
            std::fs::write(&path, "4\n").expect("truncate");
            got += &step("4\n").await;
        });
        drop(task);
        assert_eq!(got, "one\ntwo\nthree\n4\n");
    }
}
