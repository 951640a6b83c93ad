//! Pacing of VirusTotal requests: a quota over sliding windows (the public API allows 4 per
//! minute and 500 per day) and an exponential back-off after failures.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// At most `max` requests in any window of `length`.
#[derive(Debug)]
struct Window {
    max: usize,
    length: Duration,
    /// When the requests of the current window finished, oldest first (at most `max`).
    sent: VecDeque<Instant>,
}

/// Every window must have room for a request to go.
#[derive(Debug)]
pub struct RateLimiter {
    windows: Vec<Window>,
}

impl RateLimiter {
    /// `quotas`: (requests, window length) pairs.
    pub fn new(quotas: &[(u32, Duration)]) -> Self {
        RateLimiter {
            windows: quotas
                .iter()
                .map(|&(max, length)| Window {
                    max: max.max(1) as usize,
                    length,
                    sent: VecDeque::new(),
                })
                .collect(),
        }
    }

    /// The earliest instant (`now` or later) at which a request may go.
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        let mut ready = now;
        for w in &mut self.windows {
            while w
                .sent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= w.length)
            {
                w.sent.pop_front();
            }
            if w.sent.len() >= w.max {
                ready = ready.max(w.sent[w.sent.len() - w.max] + w.length);
            }
        }
        ready
    }

    /// Counts a request. Recorded when it finished, not when it started: the server counted
    /// it somewhere in between, so the next window's first request cannot land inside the
    /// previous window on the server's clock.
    pub fn record(&mut self, finished: Instant) {
        for w in &mut self.windows {
            w.sent.push_back(finished);
            if w.sent.len() > w.max {
                w.sent.pop_front();
            }
        }
    }
}

/// Waits after failures in a row: `initial`, doubled each time, at most `max`; a server's
/// `Retry-After` wins.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            failures: 0,
            until: None,
        }
    }

    /// Records a failure at `now`; returns how long nothing is sent.
    pub fn failed(&mut self, now: Instant, retry_after: Option<Duration>) -> Duration {
        let doubled = self
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        let wait = retry_after.unwrap_or(doubled);
        self.failures = self.failures.saturating_add(1);
        self.until = Some(now + wait);
        wait
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.until = None;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When requests may go again (`now` when not backing off).
    pub fn ready_at(&self, now: Instant) -> Instant {
        self.until.map_or(now, |u| u.max(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_window_opens_when_its_oldest_request_leaves_it() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut limiter = RateLimiter::new(&[(4, minute), (6, Duration::from_secs(3600))]);
        for i in 0..4 {
            assert_eq!(
                limiter.ready_at(t0 + Duration::from_secs(i)),
                t0 + Duration::from_secs(i)
            );
            limiter.record(t0 + Duration::from_secs(i));
        }
        assert_eq!(limiter.ready_at(t0 + Duration::from_secs(5)), t0 + minute);
        limiter.record(t0 + minute);
        limiter.record(t0 + minute + Duration::from_secs(1));
        // The hourly window (6) is now full, whatever the minute says.
        assert_eq!(
            limiter.ready_at(t0 + Duration::from_secs(200)),
            t0 + Duration::from_secs(3600)
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_honours_retry_after() {
        let now = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(10));
        let waits: Vec<u64> = (0..5).map(|_| b.failed(now, None).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 10, 10]);
        assert_eq!(b.failed(now, Some(Duration::from_secs(30))).as_secs(), 30);
        assert_eq!(b.ready_at(now), now + Duration::from_secs(30));
        b.succeeded();
        assert_eq!(b.ready_at(now), now);
        assert_eq!(b.failed(now, None).as_secs(), 2);
    }
}
