//! Runs the end-to-end comparison against the naive relay and prints one line per case.
//!
//! `cargo run --release -p switchboard-runtime-mio --example compare_naive -- [--seconds N]
//! [--workload burst|voice] [--fanout F]... [--rounds R] [--flood]
//! [--send-path gso|sendmmsg|sendmsg]` (`--flood`: unpaced bursts;
//! `VERBOSE=1`: every window)
#![allow(missing_docs)]

use switchboard_runtime_mio::SendPath;
use switchboard_runtime_mio::compare::{self, CompareOptions, Progress, Workload};

fn main() -> std::io::Result<()> {
    let mut opts = CompareOptions::default();
    let mut fanouts = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--flood" {
            opts.burst_output_rate = None;
            continue;
        }
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--seconds" => opts.seconds_per_case = value.parse().unwrap_or(opts.seconds_per_case),
            "--rounds" => opts.rounds = value.parse().unwrap_or(opts.rounds),
            "--send-path" => {
                opts.max_send_path = match value.as_str() {
                    "sendmmsg" => SendPath::Sendmmsg,
                    "sendmsg" => SendPath::PerPacket,
                    _ => SendPath::GsoSendmmsg,
                }
            }
            "--fanout" => fanouts.extend(value.parse::<usize>().ok()),
            "--workload" => {
                opts.workloads = match value.as_str() {
                    "burst" => vec![Workload::Burst],
                    "voice" => vec![Workload::Voice],
                    _ => opts.workloads,
                }
            }
            other => eprintln!("ignored argument {other}"),
        }
    }
    if !fanouts.is_empty() {
        opts.fanouts = fanouts;
    }
    let verbose = std::env::var_os("VERBOSE").is_some();
    let results = compare::compare_naive(&opts, &mut |p| match p {
        Progress::Case {
            index,
            total,
            workload,
            fanout,
        } => {
            eprintln!(
                "[{}/{}] {} fanout={}",
                index + 1,
                total,
                workload.name(),
                fanout
            )
        }
        Progress::Window {
            round,
            relay,
            window,
        } if verbose => eprintln!(
            "  round {round} {relay}: {:.0} ns/out (softirq {:.0}), {:.0} out/s, offered {}, delivered {}, rcvbuf errors {}",
            window.ns_per_out(),
            window.softirq_ns as f64 / window.sent as f64,
            window.out_per_second(),
            window.offered,
            window.delivered,
            window.rcvbuf_errors
        ),
        Progress::Window { .. } => {}
        Progress::Done(result) => eprintln!("  {}", result.detail_line()),
    })?;
    for result in &results {
        println!("{result}");
    }
    Ok(())
}
