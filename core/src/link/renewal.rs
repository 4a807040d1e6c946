//! When an agent renews its certificate: at two thirds of its lifetime, retried while the hub
//! cannot sign, never more often than [`MIN_RETRY_MS`]. Wall-clock Unix milliseconds, passed in.

/// Shortest wait between two renewal attempts.
pub const MIN_RETRY_MS: i64 = 60_000;
/// Longest wait between two renewal attempts.
pub const MAX_RETRY_MS: i64 = 3_600_000;

/// The renewal state of one certificate.
///
/// # Driving contract
///
/// Ask [`is_due`](Self::is_due) while connected (at least at [`next_check`](Self::next_check));
/// when it says yes, call [`started`](Self::started) and send a request; then
/// [`renewed`](Self::renewed) with the new certificate's validity once it is stored durably, or
/// [`failed`](Self::failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRenewal {
    not_before_unix_ms: i64,
    not_after_unix_ms: i64,
    next_try_unix_ms: i64,
    in_flight: bool,
}

impl CertRenewal {
    /// A certificate valid from `not_before_unix_ms` to `not_after_unix_ms`.
    pub fn new(not_before_unix_ms: i64, not_after_unix_ms: i64) -> Self {
        CertRenewal {
            not_before_unix_ms,
            not_after_unix_ms,
            next_try_unix_ms: renew_at(not_before_unix_ms, not_after_unix_ms),
            in_flight: false,
        }
    }

    /// When the current certificate should be renewed: two thirds into its lifetime.
    pub fn renew_at_unix_ms(&self) -> i64 {
        renew_at(self.not_before_unix_ms, self.not_after_unix_ms)
    }

    /// The current certificate's expiry.
    pub fn not_after_unix_ms(&self) -> i64 {
        self.not_after_unix_ms
    }

    /// The next time [`is_due`](Self::is_due) may turn true (while no request is in flight).
    pub fn next_check(&self) -> Option<i64> {
        (!self.in_flight).then_some(self.next_try_unix_ms)
    }

    /// Whether to send a renewal request now.
    pub fn is_due(&self, now_unix_ms: i64) -> bool {
        !self.in_flight && now_unix_ms >= self.next_try_unix_ms
    }

    /// A request was sent.
    pub fn started(&mut self) {
        self.in_flight = true;
    }

    /// The request failed (refused, timed out, connection lost): try again later, sooner as
    /// the expiry nears (a tenth of the time left, between [`MIN_RETRY_MS`] and
    /// [`MAX_RETRY_MS`]).
    pub fn failed(&mut self, now_unix_ms: i64) {
        self.in_flight = false;
        let left = self.not_after_unix_ms.saturating_sub(now_unix_ms);
        let wait = (left / 10).clamp(MIN_RETRY_MS, MAX_RETRY_MS);
        self.next_try_unix_ms = now_unix_ms.saturating_add(wait);
    }

    /// The new certificate is stored: schedule its own renewal.
    pub fn renewed(&mut self, not_before_unix_ms: i64, not_after_unix_ms: i64) {
        *self = CertRenewal::new(not_before_unix_ms, not_after_unix_ms);
    }
}

fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let life = not_after.saturating_sub(not_before).max(0);
    not_before.saturating_add(life / 3 * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn due_at_two_thirds_then_retries_with_a_bounded_wait() {
        let mut r = CertRenewal::new(0, 90 * DAY);
        assert_eq!(r.renew_at_unix_ms(), 60 * DAY);
        assert!(!r.is_due(60 * DAY - 1));
        assert!(r.is_due(60 * DAY));
        r.started();
        assert!(!r.is_due(61 * DAY), "one request at a time");
        assert_eq!(r.next_check(), None);
        r.failed(60 * DAY);
        assert_eq!(r.next_check(), Some(60 * DAY + MAX_RETRY_MS));
        r.started();
        r.failed(90 * DAY - 1000);
        assert_eq!(r.next_check(), Some(90 * DAY - 1000 + MIN_RETRY_MS));
        r.renewed(90 * DAY, 180 * DAY);
        assert_eq!(r.renew_at_unix_ms(), 150 * DAY);
        assert!(!r.is_due(149 * DAY));
    }
}
