//! The agent's reconnect policy: exponential backoff with jitter, pure (time and randomness
//! passed in). Every disconnect, clean or not, waits at least half the initial delay, so a
//! manager that accepts and closes at once never causes a hot loop.

use std::time::{Duration, Instant};

use crate::rng::{self, CoreRng};

/// Exponential backoff with "equal jitter": the n-th consecutive failure waits a uniformly
/// random time in `[d/2, d]` where `d = min(max, initial * 2^n)`. A connection that stayed up
/// for at least `stable_after` resets the sequence.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    stable_after: Duration,
    failures: u32,
    connected_at: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(30),
        )
    }
}

impl Backoff {
    /// A policy with the given initial and maximum delay, reset after a connection has been
    /// up for `stable_after`.
    pub fn new(initial: Duration, max: Duration, stable_after: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            stable_after,
            failures: 0,
            connected_at: None,
        }
    }

    /// The link came up (ServerHello received) at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection attempt failed or the connection ended at `now`: how long to wait
    /// before the next attempt.
    pub fn next_delay(&mut self, now: Instant, rng: &mut CoreRng) -> Duration {
        if let Some(at) = self.connected_at.take()
            && now.saturating_duration_since(at) >= self.stable_after
        {
            self.failures = 0;
        }
        let exp = self.failures.min(20);
        let d = self.initial.saturating_mul(1u32 << exp).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = d / 2;
        let span = (d - half).as_millis() as u64;
        half + Duration::from_millis(rng::below(rng, span + 1))
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a base instant for tests; time is then passed in
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let mut rng = rng::seeded(1);
        let mut b = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(30),
        );
        let now = Instant::now();
        let mut last_cap = Duration::ZERO;
        for n in 0..12 {
            let d = b.next_delay(now, &mut rng);
            let cap = Duration::from_secs(1u64 << n).min(Duration::from_secs(60));
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {n}: {d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
            assert!(cap >= last_cap);
            last_cap = cap;
        }
    }

    #[test]
    fn never_a_hot_loop_after_clean_closes() {
        let mut rng = rng::seeded(2);
        let mut b = Backoff::default();
        let mut now = Instant::now();
        for _ in 0..50 {
            b.connected(now);
            now += Duration::from_millis(10); // closed right away, cleanly
            let d = b.next_delay(now, &mut rng);
            assert!(d >= Duration::from_millis(500));
            now += d;
        }
        assert!(b.failures() == 50);
    }

    #[test]
    fn stable_connection_resets() {
        let mut rng = rng::seeded(3);
        let mut b = Backoff::default();
        let now = Instant::now();
        for _ in 0..5 {
            b.next_delay(now, &mut rng);
        }
        b.connected(now);
        let d = b.next_delay(now + Duration::from_secs(31), &mut rng);
        assert!(d <= Duration::from_secs(1));
        assert_eq!(b.failures(), 1);
    }
}
