//! Users, groups and memberships as the broker understands them, and what a change to them
//! means. The SCIM document of a resource is kept whole (`attributes`); the fields the broker
//! decides on (active, userName, membership) are projected out of it here, in one place.

use serde_json::Value;

use super::clock::Millis;
use super::events::DirectoryEvent;
use super::ids::{GroupId, OrgId, UserId};

/// A provisioned person.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Server-assigned id.
    pub id: UserId,
    /// Owning tenant.
    pub org: OrgId,
    /// Unique per org, compared case-insensitively.
    pub user_name: String,
    /// The IdP's own id for the user (Entra's `externalId`).
    pub external_id: Option<String>,
    /// Whether the IdP says this person may use anything at all.
    pub active: bool,
    /// Display name, when given.
    pub display_name: Option<String>,
    /// Primary (or work, or first) e-mail, lower-cased, for gateway look-ups.
    pub email: Option<String>,
    /// The canonical SCIM document (no `id`, `meta` or `groups`).
    pub attributes: Value,
    /// Incremented on every change; the SCIM ETag.
    pub version: i64,
    /// Creation time.
    pub created_ms: Millis,
    /// Last change time.
    pub modified_ms: Millis,
}

/// A group as pushed by the IdP; grants refer to it by display name or id.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Server-assigned id.
    pub id: GroupId,
    /// Owning tenant.
    pub org: OrgId,
    /// The name admins map to connectors.
    pub display_name: String,
    /// The IdP's own id for the group.
    pub external_id: Option<String>,
    /// The canonical SCIM document without `members`, `id` and `meta`.
    pub attributes: Value,
    /// Incremented on every change, including membership changes.
    pub version: i64,
    /// Creation time.
    pub created_ms: Millis,
    /// Last change time.
    pub modified_ms: Millis,
}

/// One member of a group, with the user's name for SCIM `display`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member user's id.
    pub user_id: UserId,
    /// The member's `userName`.
    pub display: String,
}

/// A group a user belongs to, as shown in the user's read-only `groups` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    /// The group's id.
    pub group_id: GroupId,
    /// The group's display name.
    pub display: String,
}

/// How a write treats a missing `active` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveDefault {
    /// Creation: a user created without `active` is active.
    Active,
    /// Replacement (PUT): a full document without `active: true` deactivates (fail closed).
    Inactive,
}

/// The fields the broker decides on, read out of a canonical SCIM user document.
pub fn user_fields(
    attrs: &Value,
    missing_active: ActiveDefault,
) -> (String, Option<String>, bool, Option<String>, Option<String>) {
    let user_name = attrs
        .get("userName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let external_id = attrs
        .get("externalId")
        .and_then(Value::as_str)
        .map(str::to_string);
    let active = match attrs.get("active") {
        Some(Value::Bool(b)) => *b,
        _ => missing_active == ActiveDefault::Active,
    };
    let display_name = attrs
        .get("displayName")
        .and_then(Value::as_str)
        .map(str::to_string);
    (
        user_name,
        external_id,
        active,
        display_name,
        primary_email(attrs),
    )
}

/// The e-mail a gateway may look a user up by: primary, else `work`, else the first.
pub fn primary_email(attrs: &Value) -> Option<String> {
    let emails = attrs.get("emails")?.as_array()?;
    let value = |e: &Value| {
        e.get("value")
            .and_then(Value::as_str)
            .map(str::to_lowercase)
    };
    emails
        .iter()
        .find(|e| e.get("primary") == Some(&Value::Bool(true)))
        .and_then(value)
        .or_else(|| {
            emails
                .iter()
                .find(|e| e.get("type").and_then(Value::as_str) == Some("work"))
                .and_then(value)
        })
        .or_else(|| emails.iter().find_map(value))
}

/// The events a user change implies: creation, deactivation, reactivation, deletion.
pub fn user_transition(old: Option<&User>, new: Option<&User>) -> Vec<DirectoryEvent> {
    match (old, new) {
        (None, Some(n)) => vec![DirectoryEvent::UserCreated {
            user: n.id.clone(),
            active: n.active,
        }],
        (Some(o), None) => vec![DirectoryEvent::UserDeleted { user: o.id.clone() }],
        (Some(o), Some(n)) => {
            let mut out = Vec::new();
            if o.active && !n.active {
                out.push(DirectoryEvent::UserDeactivated { user: n.id.clone() });
            } else if !o.active && n.active {
                out.push(DirectoryEvent::UserReactivated { user: n.id.clone() });
            }
            if o.user_name != n.user_name || o.email != n.email || o.external_id != n.external_id {
                out.push(DirectoryEvent::UserRenamed { user: n.id.clone() });
            }
            out
        }
        (None, None) => Vec::new(),
    }
}

/// The membership events between two member sets of one group.
pub fn membership_transition(
    group: &GroupId,
    old: &[UserId],
    new: &[UserId],
) -> (Vec<UserId>, Vec<UserId>, Vec<DirectoryEvent>) {
    use std::collections::HashSet;
    let old_set: HashSet<&UserId> = old.iter().collect();
    let new_set: HashSet<&UserId> = new.iter().collect();
    let mut added: Vec<UserId> = new_set.difference(&old_set).map(|u| (*u).clone()).collect();
    let mut removed: Vec<UserId> = old_set.difference(&new_set).map(|u| (*u).clone()).collect();
    added.sort();
    removed.sort();
    let mut events = Vec::with_capacity(added.len() + removed.len());
    for u in &added {
        events.push(DirectoryEvent::MembershipAdded {
            group: group.clone(),
            user: u.clone(),
        });
    }
    for u in &removed {
        events.push(DirectoryEvent::MembershipRemoved {
            group: group.clone(),
            user: u.clone(),
        });
    }
    (added, removed, events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(active: bool) -> User {
        User {
            id: UserId::new("u1"),
            org: OrgId::new("acme"),
            user_name: "ann@example.com".into(),
            external_id: None,
            active,
            display_name: None,
            email: None,
            attributes: json!({}),
            version: 1,
            created_ms: 0,
            modified_ms: 0,
        }
    }

    #[test]
    fn deactivation_and_reactivation_are_events() {
        let (a, i) = (user(true), user(false));
        assert_eq!(
            user_transition(Some(&a), Some(&i)),
            vec![DirectoryEvent::UserDeactivated {
                user: UserId::new("u1")
            }]
        );
        assert_eq!(
            user_transition(Some(&i), Some(&a)),
            vec![DirectoryEvent::UserReactivated {
                user: UserId::new("u1")
            }]
        );
        assert!(user_transition(Some(&a), Some(&a)).is_empty());
        assert_eq!(
            user_transition(Some(&a), None),
            vec![DirectoryEvent::UserDeleted {
                user: UserId::new("u1")
            }]
        );
    }

    #[test]
    fn put_without_active_deactivates() {
        let attrs = json!({"userName": "x"});
        assert!(!user_fields(&attrs, ActiveDefault::Inactive).2);
        assert!(user_fields(&attrs, ActiveDefault::Active).2);
        assert!(!user_fields(&json!({"active": false}), ActiveDefault::Active).2);
    }

    #[test]
    fn email_prefers_primary_then_work() {
        let a = json!({"emails": [{"value": "B@x"}, {"value": "W@x", "type": "work"}, {"value": "P@x", "primary": true}]});
        assert_eq!(primary_email(&a).as_deref(), Some("p@x"));
        let b = json!({"emails": [{"value": "B@x"}, {"value": "W@x", "type": "work"}]});
        assert_eq!(primary_email(&b).as_deref(), Some("w@x"));
    }

    #[test]
    fn membership_diff_reports_both_directions() {
        let g = GroupId::new("g");
        let (added, removed, ev) = membership_transition(
            &g,
            &[UserId::new("a"), UserId::new("b")],
            &[UserId::new("b"), UserId::new("c")],
        );
        assert_eq!(added, vec![UserId::new("c")]);
        assert_eq!(removed, vec![UserId::new("a")]);
        assert_eq!(ev.len(), 2);
    }
}
