//! Ping/pong keepalive shared by both ends of the agent link: every `interval` send a Ping
//! with random data (0..=1,000,000, as RedPepper) and expect the Pong echoing it within
//! `timeout`. A Pong with other data does not count.

use std::time::{Duration, Instant};

use crate::rng::{self, CoreRng};

/// What the keepalive wants when its deadline is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepaliveStep {
    /// Nothing to do yet.
    Idle,
    /// Send a Ping carrying this data.
    SendPing(i32),
    /// The outstanding Ping was not answered in time.
    TimedOut,
}

#[derive(Debug)]
pub(crate) struct Keepalive {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    outstanding: Option<(i32, Instant)>,
}

impl Keepalive {
    pub(crate) fn new(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Keepalive {
            interval,
            timeout,
            next_ping: now + interval,
            outstanding: None,
        }
    }

    /// A Pong arrived. Returns whether it answered the outstanding Ping.
    pub(crate) fn on_pong(&mut self, data: i32) -> bool {
        match self.outstanding {
            Some((d, _)) if d == data => {
                self.outstanding = None;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn poll(&mut self, now: Instant, rng: &mut CoreRng) -> KeepaliveStep {
        if let Some((_, deadline)) = self.outstanding {
            if now >= deadline {
                return KeepaliveStep::TimedOut;
            }
            return KeepaliveStep::Idle;
        }
        if now >= self.next_ping {
            let data = rng::below(rng, 1_000_001) as i32;
            self.outstanding = Some((data, now + self.timeout));
            self.next_ping = now + self.interval;
            return KeepaliveStep::SendPing(data);
        }
        KeepaliveStep::Idle
    }

    /// When `poll` next has something to do.
    pub(crate) fn deadline(&self) -> Instant {
        match self.outstanding {
            Some((_, d)) => d,
            None => self.next_ping,
        }
    }
}
