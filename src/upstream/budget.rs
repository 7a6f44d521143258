//! The per-upstream rate budget: a token bucket, so that a wave of refreshes (every user's
//! token expiring within the same minute) stays under the provider's rate limit instead of
//! earning a ban.
//!
//! A pure state machine: time is a parameter (`now`). A caller reserves its token up front and
//! is told how long to wait for it; reservations may run the bucket below zero, which orders
//! waiting callers fairly without a queue. Invariants: nobody is told to wait longer than
//! `max_wait` (they are refused instead, and reserve nothing); a 429 with `Retry-After` stops
//! the bucket until then (bounded by [`MAX_STOP`]); a 429 without it empties the bucket.

use std::time::{Duration, Instant};

/// How many calls per second one upstream may receive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetOptions {
    /// Sustained calls per second; zero, negative or not finite turns the budget off.
    pub per_second: f64,
    /// Calls that may go at once after a quiet period.
    pub burst: u32,
    /// Longest a caller waits for a token before [`super::UpstreamError::RateLimited`].
    pub max_wait: Duration,
}

impl Default for BudgetOptions {
    fn default() -> Self {
        Self {
            per_second: 20.0,
            burst: 40,
            max_wait: Duration::from_secs(2),
        }
    }
}

/// Longest stop a `Retry-After` can impose: an upstream asking for hours is misbehaving, and
/// the breaker's and the caller's own retries take over after this.
pub const MAX_STOP: Duration = Duration::from_secs(600);

/// One upstream's bucket.
#[derive(Debug, Clone)]
pub(super) struct Budget {
    tokens: f64,
    at: Instant,
    stopped_until: Option<Instant>,
}

impl Budget {
    /// A full bucket.
    pub fn new(now: Instant, opts: &BudgetOptions) -> Self {
        Self {
            tokens: f64::from(opts.burst.max(1)),
            at: now,
            stopped_until: None,
        }
    }

    /// Takes a token: `Some(wait)` to wait before sending, `None` when that would exceed
    /// `max_wait` (nothing is taken then).
    pub fn reserve(&mut self, now: Instant, opts: &BudgetOptions) -> Option<Duration> {
        let rate = opts.per_second;
        if !(rate.is_finite() && rate > 0.0) {
            return Some(Duration::ZERO);
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(opts.burst.max(1)));
        self.at = self.at.max(now);
        let stop = self
            .stopped_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        let refill = if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / rate)
        };
        let wait = stop.max(refill);
        if wait > opts.max_wait {
            return None;
        }
        self.tokens -= 1.0;
        Some(wait)
    }

    /// The upstream answered 429: stop for `retry_after` (bounded), or empty the bucket when
    /// it did not say how long.
    pub fn throttled(&mut self, now: Instant, retry_after: Option<Duration>) {
        match retry_after {
            Some(d) => {
                let until = now + d.min(MAX_STOP);
                self.stopped_until = Some(self.stopped_until.map_or(until, |u| u.max(until)));
            }
            None => self.tokens = self.tokens.min(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: BudgetOptions = BudgetOptions {
        per_second: 10.0,
        burst: 2,
        max_wait: Duration::from_millis(250),
    };

    #[test]
    fn a_burst_passes_then_callers_wait_in_turn_then_are_refused() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0, &OPTS);
        assert_eq!(b.reserve(t0, &OPTS), Some(Duration::ZERO));
        assert_eq!(b.reserve(t0, &OPTS), Some(Duration::ZERO));
        let waits: Vec<_> = (0..3).map(|_| b.reserve(t0, &OPTS)).collect();
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
        assert_eq!(
            waits.into_iter().map(ms).collect::<Vec<_>>(),
            [Some(100), Some(200), None]
        );
        // Refused callers took nothing: a tenth of a second later one more fits in the wait.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(ms(b.reserve(t1, &OPTS)), Some(200));
    }

    #[test]
    fn the_bucket_refills_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0, &OPTS);
        for _ in 0..2 {
            b.reserve(t0, &OPTS);
        }
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(b.reserve(t1, &OPTS), Some(Duration::ZERO));
        assert_eq!(b.reserve(t1, &OPTS), Some(Duration::ZERO));
        assert!(b.reserve(t1, &OPTS).unwrap() > Duration::ZERO);
    }

    #[test]
    fn retry_after_stops_the_bucket_and_is_bounded() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0, &OPTS);
        b.throttled(t0, Some(Duration::from_secs(1)));
        assert_eq!(b.reserve(t0, &OPTS), None);
        assert_eq!(
            b.reserve(t0 + Duration::from_millis(800), &OPTS),
            Some(Duration::from_millis(200))
        );
        b.throttled(t0, Some(Duration::from_secs(86_400)));
        assert_eq!(b.reserve(t0 + MAX_STOP, &OPTS), Some(Duration::ZERO));
    }

    #[test]
    fn a_429_without_retry_after_empties_the_bucket() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0, &OPTS);
        b.throttled(t0, None);
        assert_eq!(b.reserve(t0, &OPTS), Some(Duration::from_millis(100)));
    }

    #[test]
    fn a_non_positive_rate_turns_the_budget_off() {
        let off = BudgetOptions {
            per_second: 0.0,
            ..OPTS
        };
        let t0 = Instant::now();
        let mut b = Budget::new(t0, &off);
        for _ in 0..100 {
            assert_eq!(b.reserve(t0, &off), Some(Duration::ZERO));
        }
    }
}
