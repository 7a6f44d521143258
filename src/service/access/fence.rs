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

    /// The last moment a vend whose epoch read happened at `read_at` may put its response on
    /// the wire: a revocation that moved the epoch after that read answers no earlier than
    /// `read_at + WINDOW`. One millisecond is kept for the write itself.
    pub fn answer_by(&self, read_at: Instant) -> Instant {
        read_at + WINDOW - Duration::from_millis(1)
    }
}
