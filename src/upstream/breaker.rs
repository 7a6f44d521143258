//! The per-upstream circuit breaker: after a run of transient failures it stops sending to
//! that upstream for a while, so callers of a dead provider fail fast instead of each waiting
//! out a timeout, and other connectors' calls are not held behind them.
//!
//! A pure state machine: time is a parameter (`now`), and the transport tells it what happened.
//! Invariants: only transient failures (5xx, timeouts, broken connections) count; any other
//! answer, a refusal included, proves the AS alive and closes the circuit. When the open period
//! ends, exactly one request (the probe) is let through; its success closes the circuit, its
//! failure opens it again; a probe that ends without an outcome (cancelled, or refused by the
//! rate budget before sending) frees the slot for the next caller.

use std::time::{Duration, Instant};

/// When the circuit opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOptions {
    /// Consecutive transient failures that open the circuit (at least 1).
    pub failures_to_open: u32,
    /// How long an open circuit refuses calls before letting a probe through.
    pub open_for: Duration,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            open_for: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// What [`Breaker::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// Send normally.
    Pass,
    /// Send: this request is the one probe of a half-open circuit.
    Probe,
    /// Do not send.
    Open,
}

/// One upstream's circuit.
#[derive(Debug, Clone)]
pub(super) struct Breaker {
    state: State,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: State::Closed { failures: 0 },
        }
    }
}

impl Breaker {
    /// Whether a request may be sent now.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed { .. } => Admit::Pass,
            State::Open { until } if now < until => Admit::Open,
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Admit::Probe
            }
            State::HalfOpen { probing: true } => Admit::Open,
        }
    }

    /// A probe ended without an outcome: the next caller may probe.
    pub fn release_probe(&mut self) {
        if self.state == (State::HalfOpen { probing: true }) {
            self.state = State::HalfOpen { probing: false };
        }
    }

    /// The AS answered (whatever it said).
    pub fn alive(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// A transient failure; `true` when it opened the circuit.
    pub fn failed(&mut self, now: Instant, opts: &BreakerOptions) -> bool {
        let open = State::Open {
            until: now + opts.open_for,
        };
        let was_open = matches!(self.state, State::Open { .. });
        self.state = match self.state {
            State::Closed { failures } if failures + 1 >= opts.failures_to_open.max(1) => open,
            State::Closed { failures } => State::Closed {
                failures: failures + 1,
            },
            State::HalfOpen { .. } => open,
            // A request sent before the circuit opened: the open period stands as it is.
            s @ State::Open { .. } => s,
        };
        !was_open && matches!(self.state, State::Open { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: BreakerOptions = BreakerOptions {
        failures_to_open: 3,
        open_for: Duration::from_secs(10),
    };

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.failed(t0, &OPTS);
        b.failed(t0, &OPTS);
        b.alive();
        b.failed(t0, &OPTS);
        b.failed(t0, &OPTS);
        assert_eq!(b.admit(t0), Admit::Pass);
        assert!(b.failed(t0, &OPTS), "this failure opens it");
        assert_eq!(b.admit(t0), Admit::Open);
        assert_eq!(b.admit(t0 + Duration::from_millis(9_999)), Admit::Open);
        assert!(!b.failed(t0, &OPTS), "already open");
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.failed(t0, &OPTS);
        }
        assert_eq!(b.admit(later), Admit::Probe);
        assert_eq!(b.admit(later), Admit::Open, "one probe at a time");
        // The probe fails: open again, for a full period from now.
        b.failed(later, &OPTS);
        assert_eq!(b.admit(later + Duration::from_secs(9)), Admit::Open);
        let again = later + Duration::from_secs(10);
        assert_eq!(b.admit(again), Admit::Probe);
        b.alive();
        assert_eq!(b.admit(again), Admit::Pass);
        assert_eq!(b.admit(again), Admit::Pass);
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.failed(t0, &OPTS);
        }
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.admit(later), Admit::Probe);
        b.release_probe();
        assert_eq!(b.admit(later), Admit::Probe);
    }

    #[test]
    fn late_failures_do_not_extend_an_open_circuit() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.failed(t0, &OPTS);
        }
        b.failed(t0 + Duration::from_secs(5), &OPTS);
        assert_eq!(b.admit(t0 + Duration::from_secs(10)), Admit::Probe);
    }
}
