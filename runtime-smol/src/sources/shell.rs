//! `shell`: an interactive pseudo-terminal (portable-pty). Keystrokes come in on channel 0,
//! a resize as JSON `{"cols":N,"rows":N}` on channel 1; output goes out on channel 0. The
//! process is killed when the stream closes.

use std::io::{Read, Write};

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};
use switchboard_core::stream::EndCode;
use switchboard_proto as pb;

use super::{CHUNK, SourceCtl, SourceMsg, send_and_wait};

/// A started shell: its terminal and its process (killed on drop).
pub(super) struct Pty {
    master: Box<dyn MasterPty + Send>,
    child: Option<Box<dyn Child + Send + Sync>>,
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            // Reap it off the executor.
            std::thread::spawn(move || {
                let _ = c.wait();
            });
        }
    }
}

fn size(open: &pb::StreamOpen) -> Result<PtySize, String> {
    let dim = |k: &str, d: u16| -> Result<u16, String> {
        match open.params.get(k) {
            None => Ok(d),
            Some(v) => v
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| format!("{k} must be 1 to 1000, not {v:?}")),
        }
    };
    Ok(PtySize {
        cols: dim("cols", 80)?,
        rows: dim("rows", 24)?,
        pixel_width: 0,
        pixel_height: 0,
    })
}

/// Opens a terminal and starts the shell (or `command`, through `/bin/sh -c`) in it.
pub(super) fn spawn(open: &pb::StreamOpen) -> Result<Pty, String> {
    let pair = native_pty_system()
        .openpty(size(open)?)
        .map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
    let mut cmd = match open.params.get("command") {
        Some(c) => {
            let mut b = CommandBuilder::new("/bin/sh");
            b.args(["-c", c.as_str()]);
            b
        }
        None => CommandBuilder::new(std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into())),
    };
    cmd.env("TERM", "xterm-256color");
    if let Ok(home) = std::env::var("HOME") {
        cmd.cwd(home);
    }
    let child = pair
        .slave
        .spawn_command(cmd)
        .map_err(|e| format!("cannot start the shell: {e}"))?;
    drop(pair.slave);
    Ok(Pty {
        master: pair.master,
        child: Some(child),
    })
}

pub(super) async fn run(id: u64, pty: Pty, out: Sender<SourceMsg>, ctl: Receiver<SourceCtl>) {
    let reader = pty.master.try_clone_reader();
    let writer = pty.master.take_writer();
    let (mut reader, mut writer) = match (reader, writer) {
        (Ok(r), Ok(w)) => (r, w),
        (Err(e), _) | (_, Err(e)) => {
            let _ = out
                .send(SourceMsg::End {
                    id,
                    code: EndCode::SourceGone,
                    reason: format!("terminal: {e}"),
                })
                .await;
            return;
        }
    };
    // Output: a thread reads the terminal and hands each chunk over, waiting until it went out
    // (the sink's credit), so a viewer that stops reading stops the reads, not the memory.
    let out2 = out.clone();
    let reading = std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    if !smol::block_on(send_and_wait(&out2, id, 0, chunk)) {
                        return;
                    }
                }
            }
        }
        let _ = out2.send_blocking(SourceMsg::End {
            id,
            code: EndCode::Normal,
            reason: "the shell exited".into(),
        });
    });
    // Input: keystrokes and resizes, credited back once written.
    while let Ok(c) = ctl.recv().await {
        match c {
            SourceCtl::Input {
                channel: 0,
                payload,
            } => {
                let n = payload.len();
                let (w, r) = smol::unblock(move || {
                    let r = writer.write_all(&payload).and_then(|_| writer.flush());
                    (writer, r)
                })
                .await;
                writer = w;
                if r.is_err() {
                    break;
                }
                let _ = out.send(SourceMsg::Consumed { id, bytes: n }).await;
            }
            SourceCtl::Input {
                channel: 1,
                payload,
            } => {
                let n = payload.len();
                #[derive(serde::Deserialize)]
                struct Resize {
                    cols: u16,
                    rows: u16,
                }
                match serde_json::from_slice::<Resize>(&payload) {
                    Ok(r) if r.cols > 0 && r.rows > 0 => {
                        let _ = pty.master.resize(PtySize {
                            cols: r.cols.min(1000),
                            rows: r.rows.min(1000),
                            pixel_width: 0,
                            pixel_height: 0,
                        });
                    }
                    _ => tracing::debug!(id, "shell: a control message that is not a resize"),
                }
                let _ = out.send(SourceMsg::Consumed { id, bytes: n }).await;
            }
            SourceCtl::Input { payload, .. } => {
                let _ = out
                    .send(SourceMsg::Consumed {
                        id,
                        bytes: payload.len(),
                    })
                    .await;
            }
            SourceCtl::Resync => {}
        }
    }
    drop(pty); // kills the process; the reading thread ends at EOF
    let _ = smol::unblock(move || reading.join()).await;
}
