//! A second chance for a token response that missed the vend fence's deadline: rather than
//! dropping it, the response reads the user's epoch again (as the vend itself does when its
//! read grew old) and leaves only if the epoch is unchanged and the user still active. The
//! re-reads share the vend's budget (`fence::RECHECK_BUDGET`, counted from the vend's epoch
//! read), so a thread that keeps stalling still ends in a withheld response, never a late one.

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
        loop {
            if self.fence.out_of_budget(self.first_read) {
                return None;
            }
            let at = Instant::now();
            if !still_current(&*self.vault, &self.org, &self.user, self.epoch)
                .await
                .ok()?
            {
                return None;
            }
            let by = self.fence.answer_by(at);
            if Instant::now() < by {
                return Some(by);
            }
        }
    }
}

/// Whether `user`'s epoch is still `epoch` and the user active: one vault read.
pub(super) async fn still_current(
    vault: &dyn Vault,
    org: &OrgId,
    user: &UserId,
    epoch: u64,
) -> Result<bool, VaultError> {
    let now = vault.read(org, user, "_").await?;
    Ok(now.projection.is_some_and(|p| p.epoch == epoch && p.active))
}
