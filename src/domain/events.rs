//! Directory events: the durable record of every change that can alter what a person may
//! use. They are written in the same transaction as the change itself (an outbox), so the
//! revocation machinery can never miss a deactivation, deletion or membership removal.

use serde::{Deserialize, Serialize};

use super::ids::{GroupId, UserId};

/// One change to the directory that entitlement and revocation logic must react to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum DirectoryEvent {
    /// A user was provisioned.
    #[serde(rename = "user.created")]
    UserCreated {
        /// The user.
        user: UserId,
        /// Whether it was created active.
        active: bool,
    },
    /// A user went from active to inactive: every token must be revoked.
    #[serde(rename = "user.deactivated")]
    UserDeactivated {
        /// The user.
        user: UserId,
    },
    /// A user went from inactive to active.
    #[serde(rename = "user.reactivated")]
    UserReactivated {
        /// The user.
        user: UserId,
    },
    /// A user's identifiers (userName, e-mail, externalId) changed.
    #[serde(rename = "user.renamed")]
    UserRenamed {
        /// The user.
        user: UserId,
    },
    /// A user was deleted: every token must be revoked.
    #[serde(rename = "user.deleted")]
    UserDeleted {
        /// The user.
        user: UserId,
    },
    /// A user joined a group: entitlements may grow.
    #[serde(rename = "group.member_added")]
    MembershipAdded {
        /// The group.
        group: GroupId,
        /// The user.
        user: UserId,
    },
    /// A user left a group: entitlements may shrink, tokens may need revoking.
    #[serde(rename = "group.member_removed")]
    MembershipRemoved {
        /// The group.
        group: GroupId,
        /// The user.
        user: UserId,
    },
    /// A group was created.
    #[serde(rename = "group.created")]
    GroupCreated {
        /// The group.
        group: GroupId,
    },
    /// A group's display name changed: grants keyed by name may now match differently.
    #[serde(rename = "group.renamed")]
    GroupRenamed {
        /// The group.
        group: GroupId,
    },
    /// A group was deleted (its members' removals are reported separately).
    #[serde(rename = "group.deleted")]
    GroupDeleted {
        /// The group.
        group: GroupId,
    },
}

impl DirectoryEvent {
    /// The stable event name, as stored and published.
    pub fn kind(&self) -> &'static str {
        match self {
            DirectoryEvent::UserCreated { .. } => "user.created",
            DirectoryEvent::UserDeactivated { .. } => "user.deactivated",
            DirectoryEvent::UserReactivated { .. } => "user.reactivated",
            DirectoryEvent::UserRenamed { .. } => "user.renamed",
            DirectoryEvent::UserDeleted { .. } => "user.deleted",
            DirectoryEvent::MembershipAdded { .. } => "group.member_added",
            DirectoryEvent::MembershipRemoved { .. } => "group.member_removed",
            DirectoryEvent::GroupCreated { .. } => "group.created",
            DirectoryEvent::GroupRenamed { .. } => "group.renamed",
            DirectoryEvent::GroupDeleted { .. } => "group.deleted",
        }
    }

    /// The user concerned, if any.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            DirectoryEvent::UserCreated { user, .. }
            | DirectoryEvent::UserDeactivated { user }
            | DirectoryEvent::UserReactivated { user }
            | DirectoryEvent::UserRenamed { user }
            | DirectoryEvent::UserDeleted { user }
            | DirectoryEvent::MembershipAdded { user, .. }
            | DirectoryEvent::MembershipRemoved { user, .. } => Some(user),
            _ => None,
        }
    }

    /// The group concerned, if any.
    pub fn group(&self) -> Option<&GroupId> {
        match self {
            DirectoryEvent::MembershipAdded { group, .. }
            | DirectoryEvent::MembershipRemoved { group, .. }
            | DirectoryEvent::GroupCreated { group }
            | DirectoryEvent::GroupRenamed { group }
            | DirectoryEvent::GroupDeleted { group } => Some(group),
            _ => None,
        }
    }

    /// True when the event can take access away, so tokens must be revoked before answering.
    pub fn revokes_access(&self) -> bool {
        matches!(
            self,
            DirectoryEvent::UserDeactivated { .. }
                | DirectoryEvent::UserDeleted { .. }
                | DirectoryEvent::MembershipRemoved { .. }
                | DirectoryEvent::GroupRenamed { .. }
                | DirectoryEvent::GroupDeleted { .. }
        )
    }
}
