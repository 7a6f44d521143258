//! The shared rate budget's arithmetic, stated once: GCRA (the generic cell rate algorithm)
//! with reservations. The in-process store runs these functions; the Redis store's script
//! takes the same steps on the server's clock, so every replica draws on one budget.
//!
//! State is one number per budget, the theoretical arrival time (`tat`, microseconds): when
//! the budget would be back to full if nobody called again, minus the burst. A call reserves
//! `interval` after `max(tat, now)`, and waits for whatever part of that lies beyond `burst`
//! intervals from now. Invariants: a refused reservation changes nothing; nobody is told to
//! wait longer than `max_wait`; a stop (a 429's `Retry-After`) only ever moves `tat` later.

use std::time::Duration;

/// One budget's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Time between calls at the sustained rate.
    pub interval: Duration,
    /// Calls that may go at once after a quiet period (at least 1).
    pub burst: u32,
    /// Longest a caller may be told to wait; beyond it the call is refused.
    pub max_wait: Duration,
}

impl RateLimit {
    /// `per_second` calls a second (finite and positive, else `None`: no budget).
    pub fn per_second(per_second: f64, burst: u32, max_wait: Duration) -> Option<Self> {
        (per_second.is_finite() && per_second > 0.0).then(|| Self {
            interval: Duration::from_secs_f64(1.0 / per_second),
            burst: burst.max(1),
            max_wait,
        })
    }

    fn interval_us(&self) -> u64 {
        (self.interval.as_micros() as u64).max(1)
    }

    /// How long the state must live: until the budget is full again.
    pub fn idle_ttl(&self, tat_us: u64, now_us: u64) -> Duration {
        Duration::from_micros(tat_us.saturating_sub(now_us)) + self.interval * self.burst
    }
}

/// Reserves one call at `now_us` against the stored `tat_us` (0: none): the new `tat` to store
/// and the wait before sending, or `None` when the wait would exceed `max_wait`.
pub fn reserve(tat_us: u64, now_us: u64, limit: &RateLimit) -> Option<(u64, Duration)> {
    let t = limit.interval_us();
    let new_tat = tat_us.max(now_us) + t;
    let wait = new_tat.saturating_sub(now_us + t * u64::from(limit.burst));
    let wait = Duration::from_micros(wait);
    (wait <= limit.max_wait).then_some((new_tat, wait))
}

/// The upstream answered 429: stop until `now + stop` (the next call waits that long), or,
/// without `Retry-After`, empty the budget (the next call waits one interval).
pub fn throttle(tat_us: u64, now_us: u64, stop: Option<Duration>, limit: &RateLimit) -> u64 {
    let t = limit.interval_us();
    let burst = u64::from(limit.burst);
    let floor = match stop {
        Some(d) => now_us + d.as_micros() as u64 + t * (burst - 1),
        None => now_us + t * burst,
    };
    tat_us.max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        interval: Duration::from_millis(100),
        burst: 2,
        max_wait: Duration::from_millis(250),
    };

    /// Reserves in turn, keeping the state as a store would.
    fn waits(tat: &mut u64, now: u64, n: usize) -> Vec<Option<u128>> {
        (0..n)
            .map(|_| {
                reserve(*tat, now, &LIMIT).map(|(new, wait)| {
                    *tat = new;
                    wait.as_millis()
                })
            })
            .collect()
    }

    #[test]
    fn a_burst_passes_then_callers_wait_in_turn_then_are_refused() {
        let now = 1_000_000_000;
        let mut tat = 0;
        assert_eq!(
            waits(&mut tat, now, 5),
            [Some(0), Some(0), Some(100), Some(200), None]
        );
        // The refused caller took nothing: 100 ms later the next waits 200 ms, as the fourth
        // would have.
        assert_eq!(waits(&mut tat, now + 100_000, 1), [Some(200)]);
    }

    #[test]
    fn the_budget_refills_up_to_the_burst() {
        let mut tat = 0;
        waits(&mut tat, 5_000_000, 2);
        let later = 65_000_000;
        assert_eq!(waits(&mut tat, later, 3), [Some(0), Some(0), Some(100)]);
    }

    #[test]
    fn a_stop_holds_every_caller_and_an_empty_budget_waits_one_interval() {
        let now = 1_000_000_000;
        let tat = throttle(0, now, Some(Duration::from_millis(200)), &LIMIT);
        assert_eq!(
            reserve(tat, now, &LIMIT).map(|r| r.1.as_millis()),
            Some(200)
        );
        let long = throttle(0, now, Some(Duration::from_secs(1)), &LIMIT);
        assert_eq!(reserve(long, now, &LIMIT), None);
        let empty = throttle(0, now, None, &LIMIT);
        assert_eq!(
            reserve(empty, now, &LIMIT).map(|r| r.1.as_millis()),
            Some(100)
        );
        // A stop never moves the budget earlier.
        assert_eq!(throttle(long, now, None, &LIMIT), long);
    }

    #[test]
    fn only_a_finite_positive_rate_is_a_budget() {
        assert_eq!(RateLimit::per_second(0.0, 5, Duration::ZERO), None);
        assert_eq!(RateLimit::per_second(f64::NAN, 5, Duration::ZERO), None);
        let l = RateLimit::per_second(20.0, 0, Duration::ZERO).unwrap();
        assert_eq!((l.interval, l.burst), (Duration::from_millis(50), 1));
    }
}
