//! The end-to-end comparison runs and reports every case (a short smoke run: it measures
//! nothing worth quoting, and asserts no timing).
#![allow(missing_docs)]

use switchboard_runtime_mio::compare::{self, CompareOptions, Progress, Workload};

#[test]
fn compare_naive_reports_each_case() -> std::io::Result<()> {
    let opts = CompareOptions {
        seconds_per_case: 0.8,
        rounds: 1,
        fanouts: vec![2],
        workloads: vec![Workload::Burst, Workload::Voice],
        voice_channels: 8,
        ..CompareOptions::default()
    };
    let mut windows = 0;
    let results = compare::compare_naive(&opts, &mut |p| {
        if let Progress::Window { .. } = p {
            windows += 1;
        }
    })?;
    assert_eq!(windows, 4);
    assert_eq!(results.len(), 2);
    for result in &results {
        let line = result.line();
        eprintln!("{line}\n{}", result.detail_line());
        assert!(line.starts_with(&format!(
            "case={} fanout=2 switchboard_ns_per_out=",
            result.workload.name()
        )));
        let round = result.rounds[0];
        assert!(
            round.switchboard.sent > 0 && round.naive.sent > 0,
            "both relays forwarded"
        );
        assert!(round.switchboard.delivered > 0);
    }
    Ok(())
}
