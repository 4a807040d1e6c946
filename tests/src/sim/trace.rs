//! The trace of a run: a running hash of every step (and, with `SIM_TRACE=1`, the lines).

use std::time::Instant;

use sha2::{Digest, Sha256};

/// A run's trace.
#[derive(Default)]
pub struct Trace {
    hasher: Sha256,
    base: Option<Instant>,
    /// Lines kept when `SIM_TRACE` is set (to compare two runs by eye).
    pub lines: Vec<String>,
    /// Number of records.
    pub count: u64,
}

impl Trace {
    /// Records one step at `now`.
    pub fn record(&mut self, now: Instant, what: &str) {
        let base = *self.base.get_or_insert(now);
        let line = format!("{:>12.6} {what}", (now - base).as_secs_f64());
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        self.count += 1;
        if std::env::var_os("SIM_TRACE").is_some() {
            self.lines.push(line);
        }
    }

    /// The hash so far, hex.
    pub fn hash(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}
