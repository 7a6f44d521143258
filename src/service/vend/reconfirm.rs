//! A second chance for a token response that missed the vend fence's deadline: rather than
//! dropping it, the response reads the user's epoch again (as the vend itself does when its
//! read grew old) and leaves only if the epoch is unchanged and the user still active. The
//! re-reads share the vend's budget (`fence::RECHECK_BUDGET`, counted from the vend's epoch
//! read), so a thread that keeps stalling still ends in a withheld response, never a late one.
//! The vend's own re-reads and these go through one function, [`confirm_epoch`].

use std::sync::Arc;
use std::time::Instant;

use crate::domain::vault::{Vault, VaultError};
use crate::domain::{OrgId, UserId};
use crate::service::access::VendFence;

/// What a late token response needs to confirm that its user's epoch has not moved.
#[derive(Clone)]
pub struct Reconfirm {
    vault: Arc<dyn Vault>,
    fence: VendFence,
    org: OrgId,
    user: UserId,
    epoch: u64,
    /// The vend's epoch read: the re-read budget runs from here.
    first_read: Instant,
}

impl std::fmt::Debug for Reconfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconfirm")
            .field("org", &self.org)
            .field("user", &self.user)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Reconfirm {
    /// The check for a vend of `user` in `org` that read `epoch` at `first_read`.
    pub fn new(
        vault: Arc<dyn Vault>,
        fence: VendFence,
        org: OrgId,
        user: UserId,
        epoch: u64,
        first_read: Instant,
    ) -> Self {
        Self {
            vault,
            fence,
            org,
            user,
            epoch,
            first_read,
        }
    }

    /// A new deadline for the response when the epoch is still the one the vend read and the
    /// user still active; `None` when it moved, the vault failed, or the budget is spent.
    /// A read that itself took too long is repeated while the budget lasts.
    pub async fn confirm(self) -> Option<Instant> {
        let mut rechecks = 0;
        let confirmed = confirm_epoch(
            &*self.vault,
            self.fence,
            (&self.org, &self.user, self.epoch),
            self.first_read,
            self.first_read,
            &mut rechecks,
        )
        .await;
        match confirmed {
            Ok(Confirmed::Until(by)) => Some(by),
            Ok(Confirmed::Moved | Confirmed::OutOfBudget) | Err(_) => None,
        }
    }
}

/// What re-reading the epoch established.
pub(super) enum Confirmed {
    /// The epoch is unchanged: the answer may be written until then.
    Until(Instant),
    /// The epoch moved or the user is no longer active.
    Moved,
    /// The re-read budget, counted from the vend's first read, ran out.
    OutOfBudget,
}

/// The fence's rule, for the vend and for a late response alike: while the last confirmation
/// (`confirmed`) is older than the fence allows, `user`'s epoch is read again, each re-read
/// counted in `rechecks`, for as long as the budget from `first_read` lasts. The deadline it
/// gives always leaves at least half the fence's window for the response to be written.
pub(super) async fn confirm_epoch(
    vault: &dyn Vault,
    fence: VendFence,
    (org, user, epoch): (&OrgId, &UserId, u64),
    first_read: Instant,
    mut confirmed: Instant,
    rechecks: &mut u32,
) -> Result<Confirmed, VaultError> {
    while fence.must_recheck(confirmed) {
        if fence.out_of_budget(first_read) {
            return Ok(Confirmed::OutOfBudget);
        }
        *rechecks += 1;
        let at = Instant::now();
        let now = vault.read(org, user, "_").await?;
        if !now.projection.is_some_and(|p| p.epoch == epoch && p.active) {
            return Ok(Confirmed::Moved);
        }
        confirmed = at;
    }
    Ok(Confirmed::Until(fence.answer_by(confirmed)))
}
