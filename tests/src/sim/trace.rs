//! The trace of a run: every delivery and every action, as one line each, folded into a SHA-256
//! hash that identifies the run. With `SIM_TRACE=1` the lines are also kept (and printed by
//! [`Trace::dump`]) to compare two runs by eye; `SIM_TRACE=live` prints them as they happen.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// A run's trace.
#[derive(Debug, Clone)]
pub struct Trace {
    hasher: Sha256,
    keep: bool,
    live: bool,
    /// The lines, when kept.
    pub lines: Vec<String>,
    /// Number of records.
    pub count: u64,
}

impl Default for Trace {
    fn default() -> Self {
        let mode = std::env::var("SIM_TRACE").unwrap_or_default();
        Trace {
            hasher: Sha256::new(),
            keep: !mode.is_empty(),
            live: mode == "live",
            lines: vec![],
            count: 0,
        }
    }
}

impl Trace {
    /// Records one step at virtual time `at`.
    pub fn record(&mut self, at: Duration, what: &str) {
        let line = format!("{:>11.6} {what}", at.as_secs_f64());
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        self.count += 1;
        if self.live {
            eprintln!("{line}");
        }
        if self.keep {
            self.lines.push(line);
        }
    }

    /// The hash so far, hex.
    pub fn hash(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// Prints the kept lines to stderr (nothing unless `SIM_TRACE` is set).
    pub fn dump(&self) {
        for l in &self.lines {
            eprintln!("{l}");
        }
    }
}
