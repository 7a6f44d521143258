//! Real-time scheduling for the I/O threads while the machine carries it
//! (`server.io_thread_realtime`).
//!
//! In the normal scheduling class a woken I/O thread can wait milliseconds for a CPU behind
//! whatever else runs on a shared machine, and that wait is most of a vend's tail there. In
//! `SCHED_FIFO` it runs at once. But a real-time thread also runs ahead of a Redis on the
//! same machine: near the machine's capacity Redis then answers late, each wake-up serves
//! fewer requests, and throughput falls by a third. So each I/O thread watches its own vends
//! ([`Controller`]): over each window of [`WINDOW`], the mean time a vend took inside the
//! broker. When that mean passes [`SLOW_MEAN`], the thread goes back to the normal class (at
//! its `io_thread_nice`) for a hold that starts at [`FIRST_HOLD`] and doubles, up to
//! [`MAX_HOLD`], each time a return to real time fails again at once. It returns early when
//! its load falls well below the load at which real time last failed.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long vends are gathered before their mean time is judged.
pub const WINDOW: Duration = Duration::from_millis(100);
/// A window's mean vend time above this, in real time, means the threads crowd out the work
/// they wait for (a co-located Redis): back to the normal class.
pub const SLOW_MEAN: Duration = Duration::from_micros(500);
/// Fewest vends in a window for it to be judged (fewer say nothing about the load).
const MIN_VENDS: u32 = 32;
/// The first hold in the normal class after real time failed.
pub const FIRST_HOLD: Duration = Duration::from_secs(1);
/// The longest hold.
pub const MAX_HOLD: Duration = Duration::from_secs(16);
/// Real time that fails within this was a probe into a load it cannot carry: the next hold
/// doubles. Real time that lasts longer resets the hold.
const QUICK_FAIL: Duration = Duration::from_millis(350);
/// In the normal class, a window's load below this share of the load at which real time last
/// failed sends the thread back to real time before its hold ends.
const FELL_TO: f64 = 0.75;

/// Returns from real time to the normal class, all threads (`/metrics`).
pub static BACKOFFS: AtomicU64 = AtomicU64::new(0);
/// Entries into real time, all threads (`/metrics`).
pub static ENTRIES: AtomicU64 = AtomicU64::new(0);

/// Which class a thread should be in after a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Into `SCHED_FIFO`.
    ToRealtime,
    /// Back to the normal class.
    ToNormal,
}

/// One I/O thread's choice of scheduling class, from the vends it served (pure: the caller
/// applies the switch).
#[derive(Debug, Clone)]
pub struct Controller {
    realtime: bool,
    window_start: Instant,
    sum: Duration,
    vends: u32,
    hold: Duration,
    normal_until: Instant,
    entered_realtime: Instant,
    /// Whether the current real-time spell is a return from the normal class (a probe).
    returned: bool,
    /// Vends per second of the last judged window in the normal class.
    normal_rate: f64,
    /// The load at which real time last failed (vends per second).
    failed_at: Option<f64>,
}

impl Controller {
    /// A thread that starts in real time at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            realtime: true,
            window_start: now,
            sum: Duration::ZERO,
            vends: 0,
            hold: FIRST_HOLD,
            normal_until: now,
            entered_realtime: now,
            returned: false,
            normal_rate: 0.0,
            failed_at: None,
        }
    }

    /// Whether the thread is meant to be in real time.
    pub fn realtime(&self) -> bool {
        self.realtime
    }

    /// Counts a vend that ended at `now` after `took`; at the end of a window, says whether
    /// the thread should change class.
    pub fn observe(&mut self, now: Instant, took: Duration) -> Option<Switch> {
        self.sum += took;
        self.vends += 1;
        let span = now.saturating_duration_since(self.window_start);
        if span < WINDOW {
            return None;
        }
        let (sum, vends) = (self.sum, self.vends);
        self.window_start = now;
        self.sum = Duration::ZERO;
        self.vends = 0;
        let rate = f64::from(vends) / span.as_secs_f64();
        if self.realtime {
            if vends < MIN_VENDS {
                return None;
            }
            let spell = now.saturating_duration_since(self.entered_realtime);
            if sum / vends <= SLOW_MEAN {
                if spell > QUICK_FAIL {
                    self.hold = FIRST_HOLD;
                }
                return None;
            }
            self.hold = if self.returned && spell <= QUICK_FAIL {
                (self.hold * 2).min(MAX_HOLD)
            } else {
                FIRST_HOLD
            };
            self.failed_at = Some(self.normal_rate.max(rate));
            self.realtime = false;
            self.normal_until = now + self.hold;
            return Some(Switch::ToNormal);
        }
        if vends >= MIN_VENDS {
            self.normal_rate = rate;
        }
        let fell = self.failed_at.is_some_and(|at| rate < at * FELL_TO);
        if now >= self.normal_until || fell {
            self.realtime = true;
            self.returned = true;
            self.entered_realtime = now;
            return Some(Switch::ToRealtime);
        }
        None
    }
}

thread_local! {
    /// This thread's controller and real-time priority, when it runs one.
    static HERE: RefCell<Option<(Controller, i32)>> = const { RefCell::new(None) };
}

/// Puts the calling I/O thread into `SCHED_FIFO` at `priority` and starts its controller.
pub(crate) fn start_current(priority: i32) -> io::Result<()> {
    set_fifo(priority)?;
    ENTRIES.fetch_add(1, Ordering::Relaxed);
    HERE.with(|h| *h.borrow_mut() = Some((Controller::new(Instant::now()), priority)));
    Ok(())
}

/// Counts a vend served on this thread (a no-op on threads without a controller) and applies
/// the class its controller asks for.
pub fn observe(now: Instant, took: Duration) {
    HERE.with(|h| {
        let mut h = h.borrow_mut();
        let Some((controller, priority)) = h.as_mut() else {
            return;
        };
        let applied = match controller.observe(now, took) {
            None => return,
            Some(Switch::ToNormal) => {
                BACKOFFS.fetch_add(1, Ordering::Relaxed);
                set_normal()
            }
            Some(Switch::ToRealtime) => {
                ENTRIES.fetch_add(1, Ordering::Relaxed);
                set_fifo(*priority)
            }
        };
        if let Err(e) = applied {
            tracing::warn!(error = %e, "I/O thread scheduling class not changed; controller stopped");
            *h = None;
        }
    });
}

fn set_fifo(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: plain system call on the calling thread (pid 0) with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Back to `SCHED_OTHER`; the thread keeps its nice value.
fn set_normal() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system call on the calling thread (pid 0) with a valid parameter.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_micros(100);
    const SLOW: Duration = Duration::from_millis(2);

    /// Feeds `per_window` vends of `took` for `windows` windows from `*now`; returns the
    /// switches asked for, with the window they came in.
    fn feed(
        c: &mut Controller,
        now: &mut Instant,
        windows: u32,
        per_window: u32,
        took: Duration,
    ) -> Vec<(u32, Switch)> {
        let step = WINDOW / per_window;
        let mut out = Vec::new();
        for w in 0..windows {
            for _ in 0..per_window {
                *now += step;
                if let Some(s) = c.observe(*now, took) {
                    out.push((w, s));
                }
            }
        }
        out
    }

    #[test]
    fn fast_vends_keep_real_time() {
        let mut now = Instant::now();
        let mut c = Controller::new(now);
        assert!(feed(&mut c, &mut now, 50, 2000, FAST).is_empty());
        assert!(c.realtime());
    }

    #[test]
    fn a_slow_window_goes_back_to_normal_and_returns_after_the_hold() {
        let mut now = Instant::now();
        let mut c = Controller::new(now);
        feed(&mut c, &mut now, 10, 2000, FAST);
        let s = feed(&mut c, &mut now, 1, 2000, SLOW);
        assert_eq!(s, [(0, Switch::ToNormal)]);
        assert!(!c.realtime());
        // Same load, fast again: it waits out the first hold (1 s = 10 windows).
        let s = feed(&mut c, &mut now, 12, 2000, FAST);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].1, Switch::ToRealtime);
        assert!((9..=10).contains(&s[0].0), "{s:?}");
    }

    #[test]
    fn a_probe_that_fails_at_once_doubles_the_hold() {
        let mut now = Instant::now();
        let mut c = Controller::new(now);
        // Saturated: every real-time window is slow.
        let mut holds = Vec::new();
        let mut last_normal = None;
        for _ in 0..40 * 10 {
            for s in feed(&mut c, &mut now, 1, 2000, SLOW) {
                match s.1 {
                    Switch::ToNormal => last_normal = Some(now),
                    Switch::ToRealtime => holds.push(now - last_normal.unwrap()),
                }
            }
        }
        let secs: Vec<u64> = holds.iter().map(|h| h.as_millis() as u64 / 1000).collect();
        assert_eq!(&secs[..5], [1, 2, 4, 8, 16], "{holds:?}");
        assert!(secs[5..].iter().all(|s| *s == 16), "{holds:?}");
    }

    #[test]
    fn a_load_well_below_the_failed_one_returns_before_the_hold_ends() {
        let mut now = Instant::now();
        let mut c = Controller::new(now);
        // Fail twice at 20,000 vends/s so the hold grows, with normal windows at that load.
        feed(&mut c, &mut now, 1, 2000, SLOW);
        feed(&mut c, &mut now, 11, 2000, FAST);
        assert!(c.realtime());
        feed(&mut c, &mut now, 1, 2000, SLOW);
        assert!(!c.realtime());
        // Half the load: back within a window or two, long before the 2 s hold.
        let s = feed(&mut c, &mut now, 3, 1000, FAST);
        assert_eq!(s.first().map(|s| s.1), Some(Switch::ToRealtime), "{s:?}");
        assert!(s[0].0 <= 1, "{s:?}");
    }

    #[test]
    fn a_few_vends_say_nothing() {
        let mut now = Instant::now();
        let mut c = Controller::new(now);
        assert!(feed(&mut c, &mut now, 20, 10, SLOW).is_empty());
        assert!(c.realtime());
    }

    #[test]
    fn a_thread_without_a_controller_is_left_alone() {
        std::thread::spawn(|| {
            observe(Instant::now(), SLOW);
            // SAFETY: plain system call on the calling thread.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
