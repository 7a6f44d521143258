//! The vend fence: closes the window between "a vend read the user's epoch" and "the vend's
//! response left", so that no token is returned after a revocation has answered.
//!
//! A revocation bumps the epoch and then waits `WINDOW`. A vend that read the epoch must send
//! its response within `WINDOW / 2` of that read, or re-read the epoch first. Both sides use
//! only local monotonic time and the same constant, so the rule holds across replicas: a vend
//! that read the old epoch has either answered before the revocation returns, or re-checks and
//! sees the new epoch.

use std::time::{Duration, Instant};

/// How long a revocation waits after bumping the epoch.
pub const WINDOW: Duration = Duration::from_millis(8);

/// How long after its first epoch read a vend may still start a re-read. A thread that keeps
/// being stalled past the window re-reads until then, and is refused (503) after it; with the
/// vault's own timeout (50 ms by default) on the last re-read this keeps every vend's answer
/// within 200 ms. A busy virtual machine stalls a thread for 40 ms and more now and then; a
/// vend caught in such a stall is answered late rather than refused.
pub const RECHECK_BUDGET: Duration = Duration::from_millis(100);

/// The fence shared by the vend path and revocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct VendFence;

impl VendFence {
    /// Called by revocation after the epoch moved.
    pub async fn wait_out(&self) {
        tokio::time::sleep(WINDOW).await;
    }

    /// True when a vend whose epoch read happened at `read_at` must re-check before answering.
    pub fn must_recheck(&self, read_at: Instant) -> bool {
        read_at.elapsed() >= WINDOW / 2
    }

    /// True when a vend whose first epoch read happened at `first_read` may not start another
    /// re-read: it has to be refused instead.
    pub fn out_of_budget(&self, first_read: Instant) -> bool {
        first_read.elapsed() >= RECHECK_BUDGET
    }

    /// The last moment a vend whose epoch read happened at `read_at` may put its response on
    /// the wire: a revocation that moved the epoch after that read answers no earlier than
    /// `read_at + WINDOW`. One millisecond is kept for the write itself.
    pub fn answer_by(&self, read_at: Instant) -> Instant {
        read_at + WINDOW - Duration::from_millis(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ago(ms: u64) -> Instant {
        Instant::now() - Duration::from_millis(ms)
    }

    #[test]
    fn a_read_older_than_half_the_window_is_rechecked() {
        let fence = VendFence;
        assert!(!fence.must_recheck(Instant::now()));
        assert!(fence.must_recheck(ago(WINDOW.as_millis() as u64 / 2)));
    }

    #[test]
    fn re_reads_stop_when_the_budget_is_spent() {
        let fence = VendFence;
        assert!(!fence.out_of_budget(ago(5)));
        assert!(!fence.out_of_budget(ago(RECHECK_BUDGET.as_millis() as u64 - 5)));
        assert!(fence.out_of_budget(ago(RECHECK_BUDGET.as_millis() as u64)));
    }

    #[test]
    fn the_answer_leaves_before_a_revocation_could_return() {
        let fence = VendFence;
        let read = Instant::now();
        assert!(fence.answer_by(read) < read + WINDOW);
        assert!(fence.answer_by(read) > read + WINDOW / 2);
    }
}
