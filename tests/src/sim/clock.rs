//! Virtual time.
//!
//! The simulator never reads the real clock to decide anything. It needs one real [`Instant`]
//! only because the machines take `Instant`s: that base is read once per process (the single
//! allowed `Instant::now` of the crate) and every world counts virtual time from it. Traces
//! record offsets from the base, so they do not depend on when the process started.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The one real instant of the process: virtual time zero of every world.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(|| {
        #[allow(clippy::disallowed_methods)] // the only clock read: virtual time zero
        let t = Instant::now();
        t
    })
}

/// A virtual clock: starts at zero, moves only when the world jumps to the next event, never
/// backwards, and never past its bound.
#[derive(Debug, Clone)]
pub struct Clock {
    base: Instant,
    now: Instant,
    limit: Duration,
}

impl Clock {
    /// A clock at virtual time zero that refuses to go past `limit`.
    pub fn new(limit: Duration) -> Clock {
        let base = base();
        Clock {
            base,
            now: base,
            limit,
        }
    }

    /// Virtual now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time zero.
    pub fn base(&self) -> Instant {
        self.base
    }

    /// Virtual time since zero.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// The instant `since_start` after virtual time zero.
    pub fn at(&self, since_start: Duration) -> Instant {
        self.base + since_start
    }

    /// The last instant this clock may reach.
    pub fn deadline(&self) -> Instant {
        self.base + self.limit
    }

    /// The bound on virtual time.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Changes the bound on virtual time.
    pub fn set_limit(&mut self, limit: Duration) {
        self.limit = limit;
    }

    /// Moves to `t` (a `t` in the past leaves the clock where it is). Panics past the bound.
    pub(crate) fn advance_to(&mut self, t: Instant) {
        assert!(
            t <= self.deadline(),
            "virtual time bound of {:?} reached: the run must stop by itself",
            self.limit
        );
        self.now = self.now.max(t);
    }

    /// Offset of `t` from virtual zero (for traces and messages).
    pub fn offset(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.base)
    }
}
