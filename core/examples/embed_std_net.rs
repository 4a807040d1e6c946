//! Embedding the core in a bare `std::net` loop: a manager that accepts one agent connection,
//! authenticates it, runs `echo.Echo` on it and prints the result. No async runtime, no threads.
//!
//! Plain TCP for brevity: put your own TLS in front (the machine only sees plaintext bytes).
//! Try it against the Switchboard agent in a plaintext test setup, or read it as a template:
//! `cargo run -p switchboard-core --example embed_std_net -- 127.0.0.1:9000 s3cret`
#![allow(clippy::disallowed_methods)] // an embedder's loop reads the clock; the core never does

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use switchboard_core::link::{LinkConfig, ManagerEvent, ManagerLink};
use switchboard_core::machine::Action;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    let secret = args.next().unwrap_or_else(|| "s3cret".into());
    let listener = TcpListener::bind(&addr)?;
    println!("waiting for one agent on {addr}");
    let (mut sock, peer) = listener.accept()?;
    println!("agent connected from {peer}");
    let mut link = ManagerLink::new(Instant::now(), LinkConfig::default(), 0x5eed);
    let mut buf = [0u8; 16 * 1024];
    let mut sent_command = false;
    loop {
        // 1. Perform everything the machine asks for.
        while let Some(action) = link.poll_action() {
            match action {
                Action::Send(bytes) => sock.write_all(&bytes)?,
                Action::Close(reason) => {
                    println!("closed: {reason}");
                    return Ok(());
                }
                Action::Timer(_) => {} // we ask poll_timeout() below instead
                Action::Event(ManagerEvent::Hello {
                    agent_id,
                    secret: given,
                }) => {
                    if given == secret {
                        println!("{agent_id} authenticated");
                        let _ = link.accept(Instant::now());
                    } else {
                        link.reject("authentication failed");
                    }
                }
                Action::Event(ManagerEvent::Finished {
                    command_id, output, ..
                }) => {
                    println!("command {command_id} finished:\n{output}");
                    link.close(switchboard_core::machine::CloseReason::Local("done".into()));
                }
                Action::Event(other) => println!("{other:?}"),
            }
        }
        if link.is_established() && !sent_command {
            sent_command = true;
            let _ = link.send_command(
                1,
                "echo.Echo",
                r#"{"[args]": ["hello from a std::net loop"]}"#,
            );
            continue;
        }
        // 2. Wait for bytes, at most until the machine's next deadline.
        let wait = link
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()));
        sock.set_read_timeout(Some(
            wait.unwrap_or(Duration::from_secs(60))
                .max(Duration::from_millis(1)),
        ))?;
        match sock.read(&mut buf) {
            Ok(0) => {
                println!("agent went away");
                return Ok(());
            }
            Ok(n) => link.handle_input(Instant::now(), &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
        // 3. Timers: spurious calls are fine.
        link.handle_timeout(Instant::now());
    }
}
